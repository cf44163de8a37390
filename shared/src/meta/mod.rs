//! What Meta's WhatsApp Cloud API sends us: webhook notifications and their signatures.

pub mod lenient_json;
pub mod notification;
pub mod signature;
