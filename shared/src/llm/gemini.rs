//! Google's Gemini API, natively: `POST {base_url}/v1beta/models/{model}:generateContent`.

use std::sync::Arc;

use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http;
use super::{Completion, Llm, LlmError, LlmSettings, Prompt, ToolCall, ToolDeclaration};
use crate::conversation::Role;
use crate::outbound_http::Answer;
use crate::secrets::SecretsError;
use crate::secrets::{SecretString, Secrets};

/// Google's Gemini API.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

const PROVIDER: &str = "gemini";

/// The header that carries Gemini's API key (kept out of the URL, where logs would see it).
const KEY_HEADER: &str = "x-goog-api-key";

/// A Gemini model.
pub struct GeminiChat<S> {
    http: reqwest::Client,
    settings: LlmSettings,
    secrets: Arc<S>,
}

impl<S> GeminiChat<S> {
    /// A client sending through `http` (one client, reused) to `settings.base_url`. The key
    /// (`LLM_API_KEY`, required) is read from `secrets` on each call. `settings.model` may be
    /// given as `gemini-2.5-flash` or `models/gemini-2.5-flash`. Creating it does no I/O.
    pub fn new(http: reqwest::Client, settings: LlmSettings, secrets: Arc<S>) -> Self {
        Self {
            http,
            settings,
            secrets,
        }
    }

    fn url(&self) -> String {
        let model = self.settings.model.trim();
        let model = model.strip_prefix("models/").unwrap_or(model);
        format!(
            "{}/v1beta/models/{model}:generateContent",
            self.settings.base_url.trim_end_matches('/')
        )
    }
}

impl<S: Secrets> Llm for GeminiChat<S> {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, LlmError> {
        if Instant::now() >= deadline {
            return Err(LlmError::Timeout);
        }
        let secrets = http::read_secrets(&*self.secrets, deadline).await?;
        let key = self.settings.api_key(&secrets).ok_or({
            LlmError::Secrets(match &self.settings.api_key_secret {
                Some(_) => SecretsError::MissingKey("the key llm.api_key_secret names"),
                None => SecretsError::MissingKey("LLM_API_KEY"),
            })
        })?;
        let key_value = http::key_header("", key)?;
        let url = self.url();
        let body = http::json_body(&GenerateRequest::new(prompt), prompt.json_size_hint())?;
        let request = || {
            self.http
                .post(&url)
                .header(KEY_HEADER, key_value.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        http::call(PROVIDER, &self.settings, deadline, request, |answer| {
            interpret(answer, key)
        })
        .await
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tools<'a>>,
}

/// The tools offered: `{"functionDeclarations": [...]}`, each with its JSON Schema as
/// `parametersJsonSchema` (`parameters` takes only an OpenAPI subset).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tools<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    description: &'a str,
    parameters_json_schema: &'a serde_json::Value,
}

#[derive(Debug, Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

/// A part of a turn: text, or a file inline (Gemini's `inline_data`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    InlineData {
        inline_data: InlineData<'a>,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCallOut<'a>,
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<&'a str>,
    },
    FunctionResponse {
        #[serde(rename = "functionResponse")]
        function_response: FunctionResponse<'a>,
    },
}

#[derive(Debug, Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    args: &'a serde_json::Value,
}

/// A call's result: `{"name", "response": {"content": ...}}`, or `{"error": ...}` when it failed.
#[derive(Debug, Serialize)]
struct FunctionResponse<'a> {
    name: &'a str,
    response: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct InlineData<'a> {
    mime_type: &'a str,
    data: super::Base64Json<'a>,
}

impl<'a> GenerateRequest<'a> {
    fn new(prompt: &'a Prompt) -> Self {
        let system_instruction = (!prompt.system.trim().is_empty()).then(|| Content {
            role: None,
            parts: vec![Part::Text {
                text: &prompt.system,
            }],
        });
        let last = prompt.turns.len().saturating_sub(1);
        let contents: Vec<Content<'a>> = prompt
            .turns
            .iter()
            .enumerate()
            .map(|(index, turn)| {
                let mut parts = vec![Part::Text { text: &turn.text }];
                if index == last {
                    parts.extend(prompt.files.iter().map(|file| Part::InlineData {
                        inline_data: InlineData {
                            mime_type: &file.mime_type,
                            data: super::Base64Json(&file.bytes),
                        },
                    }));
                }
                Content {
                    role: Some(match turn.role {
                        Role::User => "user",
                        Role::Assistant => "model",
                    }),
                    parts,
                }
            })
            .collect();
        let tools = if prompt.tools.is_empty() {
            Vec::new()
        } else {
            vec![Tools {
                function_declarations: prompt.tools.iter().map(declaration).collect(),
            }]
        };
        Self {
            system_instruction,
            contents: contents.into_iter().chain(round_contents(prompt)).collect(),
            tools,
        }
    }
}

fn declaration(tool: &ToolDeclaration) -> FunctionDeclaration<'_> {
    FunctionDeclaration {
        name: &tool.name,
        description: &tool.description,
        parameters_json_schema: &tool.parameters,
    }
}

/// The rounds of tool use after the user's turn: the model's calls, then the user's side with
/// one function response per call.
fn round_contents(prompt: &Prompt) -> impl Iterator<Item = Content<'_>> {
    prompt.rounds.iter().flat_map(|round| {
        let said = round.text.as_deref().map(|text| Part::Text { text });
        let calls = round.calls.iter().map(|call| Part::FunctionCall {
            function_call: FunctionCallOut {
                name: &call.name,
                args: &call.arguments,
            },
            thought_signature: call.signature.as_deref(),
        });
        let results = round.results.iter().map(|result| {
            let key = if result.is_error { "error" } else { "content" };
            Part::FunctionResponse {
                function_response: FunctionResponse {
                    name: &result.name,
                    response: serde_json::json!({ key: result.content }),
                },
            }
        });
        [
            Content {
                role: Some("model"),
                parts: said.into_iter().chain(calls).collect(),
            },
            Content {
                role: Some("user"),
                parts: results.collect(),
            },
        ]
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<AnswerPart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerPart {
    text: Option<String>,
    /// A thinking model's thought summary, not part of the answer.
    #[serde(default)]
    thought: bool,
    function_call: Option<FunctionCallIn>,
    thought_signature: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FunctionCallIn {
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    status: Option<String>,
}

fn interpret(answer: Answer, key: &SecretString) -> Result<Completion, LlmError> {
    let response: GenerateResponse = http::read_success(answer, |body| error_message(body, key))?;
    if let Some(reason) = response.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(LlmError::NoAnswer(format!(
            "the prompt was blocked (blockReason {reason})"
        )));
    }
    let Some(candidate) = response.candidates.into_iter().next() else {
        return Err(LlmError::NoAnswer(
            "the answer has no candidates".to_owned(),
        ));
    };
    let parts: Vec<AnswerPart> = candidate
        .content
        .map(|content| content.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|part| !part.thought)
        .collect();
    let tool_calls = tool_calls(&parts);
    let text: String = parts.into_iter().filter_map(|part| part.text).collect();
    let text = text.trim();
    if text.is_empty() && tool_calls.is_empty() {
        let reason = candidate.finish_reason.as_deref().unwrap_or("none");
        return Err(LlmError::NoAnswer(format!(
            "the answer is empty (finishReason {reason})"
        )));
    }
    let usage = response.usage_metadata;
    Ok(Completion {
        text: text.to_owned(),
        tool_calls,
        input_tokens: usage.as_ref().and_then(|u| u.prompt_token_count),
        output_tokens: usage.as_ref().and_then(|u| u.candidates_token_count),
    })
}

/// The calls the answer's parts ask for, each with the thought signature of its part; an id
/// made from its position when Gemini gives none.
fn tool_calls(parts: &[AnswerPart]) -> Vec<ToolCall> {
    parts
        .iter()
        .filter_map(|part| Some((part.function_call.as_ref()?, part)))
        .enumerate()
        .map(|(index, (call, part))| ToolCall {
            id: call.id.clone().unwrap_or_else(|| format!("call-{index}")),
            name: call.name.clone(),
            arguments: call.args.clone(),
            signature: part.thought_signature.clone(),
        })
        .collect()
}

/// `message (STATUS)` from an error body, or what can be said of a body of another shape.
fn error_message(body: &[u8], key: &SecretString) -> String {
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) else {
        return http::unstructured_message(body, Some(key));
    };
    let message = error
        .message
        .unwrap_or_else(|| "no error message".to_owned());
    let message = match error.status {
        Some(status) => format!("{message} ({status})"),
        None => message,
    };
    http::clean_message(&message, Some(key))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    proptest::proptest! {
        /// Whatever the provider (or a proxy) answers, with any status, body and `Retry-After`,
        /// the answer is read without panicking, and an error's classification does not panic
        /// either.
        #[test]
        fn any_answer_reads_without_panicking(
            status in 0u16..1000,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            seconds in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let key = SecretString::new("sk-test");
            let answer = Answer {
                status,
                retry_after: seconds.map(Duration::from_secs),
                body,
            };
            if let Err(error) = interpret(answer, &key) {
                let _ = error.refusal();
                let _ = error.to_string();
            }
        }

        /// Any error message in the provider's shape is read and classified without panicking.
        #[test]
        fn any_error_object_reads_without_panicking(
            status in 400u16..600,
            code in "\\PC{0,40}",
            message in "\\PC{0,400}",
        ) {
            let key = SecretString::new("sk-test");
            let body = serde_json::json!({"error": {"code": code, "status": code, "message": message}});
            let answer = Answer {
                status,
                retry_after: None,
                body: body.to_string().into_bytes(),
            };
            let error = interpret(answer, &key).err();
            let is_status = matches!(error, Some(LlmError::Status { .. }));
            proptest::prop_assert!(is_status, "{error:?}");
            let _ = error.and_then(|e| e.refusal());
        }
    }
}
