//! The library the WhatsApp assistant's Lambda functions share.
//!
//! The pure core (Meta's webhook shapes and signature, the queue body, history bounds, prompts,
//! answer splitting, retry policy, metrics, masking) has no I/O. Each capability that touches
//! AWS or HTTP sits behind a small trait ([`queue::MessageQueue`], [`secrets::Secrets`],
//! [`conversation::ConversationStore`], [`llm::Llm`], [`whatsapp::WhatsApp`], [`mail::Mailer`],
//! [`storm::StormControl`], [`tools::ToolRunner`], [`knowledge_base::PassageRetriever`]) with one
//! adapter, so that the functions' logic is testable.

pub mod aws_timeouts;
pub mod clock;
pub mod conversation;
mod dynamodb_expression;
pub mod env_config;
pub mod handoff;
pub mod inbound;
pub mod knowledge;
pub mod knowledge_base;
pub mod llm;
pub mod log_event;
pub mod mail;
pub mod meta;
pub mod metrics;
pub mod number_book;
pub mod number_settings;
mod outbound_http;
pub mod privacy;
pub mod queue;
pub mod queue_body;
pub mod retry;
pub mod secrets;
pub mod storm;
pub mod telemetry;
pub mod tools;
pub mod transcription;
pub mod whatsapp;

/// Loads the AWS configuration from the environment, with `timeouts` for every client built
/// from it. `AWS_ENDPOINT_URL` points every client at a local emulator. Loading reads no
/// network: credentials are resolved on first use.
pub async fn aws_config(timeouts: aws_timeouts::AwsTimeouts) -> aws_config::SdkConfig {
    timeouts
        .apply_to(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .load()
        .await
}
