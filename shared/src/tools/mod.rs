//! Tools: the business's HTTP APIs, declared in a tools file (`TOOLS_URI`), that the model may
//! call. This module is the provider-independent core: the file's format and its checks
//! ([`parse_tools`]), the file read and cached like the knowledge document ([`ToolsCatalog`]),
//! and the safe execution of a call ([`ToolRunner`], with its HTTP adapter [`HttpTools`]).
//!
//! Safe by construction: the model chooses a tool by name and gives its arguments, nothing
//! else. The host, the method and the headers are the file's; the arguments are checked
//! against the tool's JSON Schema before any request, and reach the URL only percent-encoded
//! as one path segment or one query value. Secrets are read by key from the app secret and sent
//! only to the tool's own host, redirects are not followed. Every failure becomes an error
//! result the model can read, never an error of the invocation.
//!
//! Exactly once: a side-effecting tool's call carries an `Idempotency-Key` derived from the
//! message, the round and the call's position ([`idempotency_key`]), the same on every retry of
//! the burst; [`ToolCall`] and [`ToolOutcome`] round-trip through JSON so that the processor
//! can store them with the burst's claim and reuse them.
//!
//! Arguments are validated with the `jsonschema` crate (built without its default features:
//! no HTTP or file resolution of `$ref`, no TLS stack of its own; its MSRV is below the
//! workspace's): the whole of JSON Schema, as the providers document it for function
//! parameters, rather than a home-made subset that a file could silently exceed.

mod catalog;
mod file;
mod http;
mod toolbox;
mod url;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use catalog::ToolsCatalog;
pub use file::{
    DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, MAX_TOOLS, Tool, Tools, ToolsError, parse_tools,
};
pub use http::{CONTENT_LIMIT, HttpTools, READ_LIMIT, ToolRunner, configure_client, error_content};
pub use toolbox::{Offered, Toolbox};

pub use crate::llm::tool_use::{ToolCall, ToolDeclaration};

/// What a call gave, as it goes back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutcome {
    /// The [`ToolCall::id`] it answers.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// The tool's answer, or `{"error": "…"}`, at most [`CONTENT_LIMIT`] bytes and a marker.
    pub content: String,
    /// Whether the call failed (the content then says why).
    pub is_error: bool,
    /// The HTTP status, when the tool answered.
    pub status: Option<u16>,
    /// How long the call took, in milliseconds.
    pub elapsed_ms: u64,
}

impl ToolOutcome {
    /// The outcome as the model gets it back.
    pub fn to_result(&self) -> crate::llm::ToolResult {
        crate::llm::ToolResult {
            call_id: self.call_id.clone(),
            name: self.name.clone(),
            content: self.content.clone(),
            is_error: self.is_error,
        }
    }
}

/// The `Idempotency-Key` of the call at `position` (from 0) in round `round` of the burst whose
/// message is `message_id`: the first 32 hex digits of SHA-256 of `message_id/round/position`.
/// It depends on nothing else, so it is the same on every retry of the burst, and the business
/// API can tell a repeated call from a new one.
pub fn idempotency_key(message_id: &str, round: u32, position: u32) -> String {
    let digest = Sha256::digest(format!("{message_id}/{round}/{position}").as_bytes());
    let mut key = hex::encode(digest);
    key.truncate(32);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_is_stable_and_tells_calls_apart() {
        let key = idempotency_key("wamid.HBgL", 0, 1);
        assert_eq!(key, idempotency_key("wamid.HBgL", 0, 1));
        assert_eq!(key.len(), 32);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        // Written out once, so that a change of derivation (which would break exactly-once
        // across a deployment) shows.
        let full = hex::encode(Sha256::digest(b"wamid.HBgL/0/1"));
        assert_eq!(key, full[..32]);
        let others = [
            idempotency_key("wamid.HBgL", 0, 0),
            idempotency_key("wamid.HBgL", 1, 1),
            idempotency_key("wamid.other", 0, 1),
            idempotency_key("wamid.HBgL/0", 1, 0),
        ];
        assert!(others.iter().all(|other| *other != key));
    }

    #[test]
    fn calls_and_outcomes_round_trip_through_json() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "order_status".into(),
            arguments: serde_json::json!({"order_id": "A-17"}),
            signature: None,
        };
        let outcome = ToolOutcome {
            call_id: "call_1".into(),
            name: "order_status".into(),
            content: r#"{"status":"shipped"}"#.into(),
            is_error: false,
            status: Some(200),
            elapsed_ms: 42,
        };
        let text = serde_json::to_string(&(call.clone(), outcome.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<(ToolCall, ToolOutcome)>(&text).unwrap(),
            (call, outcome)
        );
    }
}
