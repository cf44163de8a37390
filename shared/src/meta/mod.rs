//! What Meta's WhatsApp Cloud API sends us: webhook bodies and their signatures.

pub mod lenient_json;
pub mod signature;
pub mod webhook;
