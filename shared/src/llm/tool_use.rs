//! Tool use through the LLM port, the same for every provider: the tools a prompt offers, the
//! calls an answer asks for, and the rounds of calls and results a prompt carries back. Each
//! adapter maps them onto its API (OpenAI `tools`/`tool_calls`, Gemini
//! `functionDeclarations`/`functionCall`, Bedrock `toolConfig`/`toolUse`). What a tool does, and
//! whether it may run, is decided elsewhere (`shared::tools`).

use serde::{Deserialize, Serialize};

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDeclaration {
    /// Its name, `^[A-Za-z0-9_-]{1,64}$`.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema (an object) of its arguments.
    pub parameters: serde_json::Value,
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call (OpenAI's `call_…`, Bedrock's `tooluse_…`), or one made
    /// up from its position when the provider gives none (Gemini).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the model wrote them: a JSON object when it kept to the schema; a
    /// JSON string holding what it wrote when that was not JSON at all.
    pub arguments: serde_json::Value,
    /// An opaque token the provider wants back with the call (Gemini's `thoughtSignature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What a call gave, as it goes back to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The call's id ([`ToolCall::id`]).
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// The result (the API's answer, bounded), or what went wrong.
    pub content: String,
    /// Whether the call failed: the model is told so.
    pub is_error: bool,
}

/// One round of tool use after the user's turn: what the model said and asked for, then what
/// the calls gave, one result per call, in the calls' order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRound {
    /// Text the model wrote beside its calls, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The calls it asked for.
    pub calls: Vec<ToolCall>,
    /// Their results.
    pub results: Vec<ToolResult>,
}

/// `arguments` as a JSON text, as OpenAI carries them: an object as written, a string that
/// held non-JSON as that text.
pub fn arguments_text(arguments: &serde_json::Value) -> String {
    match arguments {
        serde_json::Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// A model's arguments text read as JSON, or kept as a string when it is not JSON (the
/// arguments' validation then refuses it, with a message the model can act on).
pub fn arguments_from_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_round_trip_through_text() {
        let object = json!({"order_id": "A-17", "qty": 2});
        assert_eq!(arguments_from_text(&arguments_text(&object)), object);
        assert_eq!(
            arguments_from_text("{not json"),
            json!("{not json"),
            "kept, to be refused by validation"
        );
        assert_eq!(arguments_text(&json!("{not json")), "{not json");
    }

    #[test]
    fn rounds_survive_storage() {
        let round = ToolRound {
            text: None,
            calls: vec![ToolCall {
                id: "call_1".into(),
                name: "order_status".into(),
                arguments: json!({"order_id": "A-17"}),
                signature: Some("sig".into()),
            }],
            results: vec![ToolResult {
                call_id: "call_1".into(),
                name: "order_status".into(),
                content: r#"{"status":"shipped"}"#.into(),
                is_error: false,
            }],
        };
        let stored = serde_json::to_string(&round).unwrap();
        assert_eq!(serde_json::from_str::<ToolRound>(&stored).unwrap(), round);
    }
}
