//! What Meta's WhatsApp Cloud API sends us: webhook bodies and their signatures.

pub mod signature;
pub mod webhook;
