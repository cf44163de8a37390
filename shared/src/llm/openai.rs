//! OpenAI's Chat Completions API (`POST {base_url}/chat/completions`), which OpenAI and most
//! self-hosted servers (Ollama, llama.cpp, vLLM) speak.

use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http;
use super::tool_use::{arguments_from_text, arguments_text};
use super::{
    Completion, DataUrlJson, InlineFile, Llm, LlmError, LlmSettings, Prompt, ToolCall,
    ToolDeclaration,
};
use crate::conversation::Role;
use crate::outbound_http::Answer;
use crate::secrets::{SecretString, Secrets};

/// OpenAI's API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

const PROVIDER: &str = "openai";

/// A chat model behind an OpenAI-compatible Chat Completions API.
pub struct OpenAiChat<S> {
    http: reqwest::Client,
    settings: LlmSettings,
    secrets: Arc<S>,
}

impl<S> OpenAiChat<S> {
    /// A client sending through `http` (one client, reused) to `settings.base_url`. The key
    /// (`LLM_API_KEY`) is read from `secrets` on each call and sent as a bearer token when
    /// present; local servers need none. Creating it does no I/O.
    pub fn new(http: reqwest::Client, settings: LlmSettings, secrets: Arc<S>) -> Self {
        Self {
            http,
            settings,
            secrets,
        }
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.settings.base_url.trim_end_matches('/')
        )
    }
}

impl<S: Secrets> Llm for OpenAiChat<S> {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, LlmError> {
        if Instant::now() >= deadline {
            return Err(LlmError::Timeout);
        }
        let secrets = http::read_secrets(&*self.secrets, deadline).await?;
        let key = self.settings.api_key(&secrets);
        let authorization = key.map(|k| http::key_header("Bearer ", k)).transpose()?;
        let url = self.url();
        let body = ChatRequest::new(&self.settings.model, prompt);
        let body = http::json_body(&body, prompt.json_size_hint())?;
        let request = || {
            let request = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            match &authorization {
                Some(value) => request.header(AUTHORIZATION, value.clone()),
                None => request,
            }
        };
        http::call(PROVIDER, &self.settings, deadline, request, |answer| {
            interpret(answer, key)
        })
        .await
    }
}

#[derive(Debug, Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<FunctionTool<'a>>,
}

#[derive(Debug, Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    /// `null` for an assistant message of tool calls alone.
    content: Option<MessageContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> ChatMessage<'a> {
    fn text(role: &'static str, text: &'a str) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(text)),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool offered to the model: `{"type": "function", "function": {...}}`.
#[derive(Debug, Serialize)]
struct FunctionTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: &'a ToolDeclaration,
}

/// A call the model made, as it goes back in the assistant's message.
#[derive(Debug, Serialize)]
struct CallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCallOut<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    arguments: String,
}

/// A message's content: its text, or (for a user turn with images) parts.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum MessageContent<'a> {
    Text(&'a str),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
    File { file: FileData<'a> },
}

#[derive(Debug, Serialize)]
struct ImageUrl<'a> {
    url: DataUrlJson<'a>,
}

/// A file other than an image (a PDF), as OpenAI's `file` content part.
#[derive(Debug, Serialize)]
struct FileData<'a> {
    filename: String,
    file_data: DataUrlJson<'a>,
}

/// The part an inline file becomes: images as `image_url`, other files (PDFs) as `file`.
fn file_part(file: &InlineFile, index: usize) -> ContentPart<'_> {
    let data_url = DataUrlJson(file);
    if file.mime_type.starts_with("image/") {
        ContentPart::ImageUrl {
            image_url: ImageUrl { url: data_url },
        }
    } else {
        ContentPart::File {
            file: FileData {
                filename: format!("document-{}.pdf", index + 1),
                file_data: data_url,
            },
        }
    }
}

impl<'a> ChatRequest<'a> {
    fn new(model: &'a str, prompt: &'a Prompt) -> Self {
        let system =
            (!prompt.system.trim().is_empty()).then(|| ChatMessage::text("system", &prompt.system));
        let last = prompt.turns.len().saturating_sub(1);
        let turns = prompt
            .turns
            .iter()
            .enumerate()
            .map(|(index, turn)| ChatMessage {
                role: match turn.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                tool_calls: Vec::new(),
                tool_call_id: None,
                content: Some(match index == last && !prompt.files.is_empty() {
                    false => MessageContent::Text(&turn.text),
                    true => MessageContent::Parts(
                        std::iter::once(ContentPart::Text { text: &turn.text })
                            .chain(
                                prompt
                                    .files
                                    .iter()
                                    .enumerate()
                                    .map(|(i, file)| file_part(file, i)),
                            )
                            .collect(),
                    ),
                }),
            });
        Self {
            model,
            messages: system
                .into_iter()
                .chain(turns)
                .chain(round_messages(prompt))
                .collect(),
            tools: prompt
                .tools
                .iter()
                .map(|function| FunctionTool {
                    kind: "function",
                    function,
                })
                .collect(),
        }
    }
}

/// The rounds of tool use after the user's turn: each an assistant message of calls, then one
/// `tool` message per result.
fn round_messages(prompt: &Prompt) -> impl Iterator<Item = ChatMessage<'_>> {
    prompt.rounds.iter().flat_map(|round| {
        let calls = ChatMessage {
            role: "assistant",
            content: round.text.as_deref().map(MessageContent::Text),
            tool_calls: round
                .calls
                .iter()
                .map(|call| CallOut {
                    id: &call.id,
                    kind: "function",
                    function: FunctionCallOut {
                        name: &call.name,
                        arguments: arguments_text(&call.arguments),
                    },
                })
                .collect(),
            tool_call_id: None,
        };
        let results = round.results.iter().map(|result| ChatMessage {
            role: "tool",
            content: Some(MessageContent::Text(&result.content)),
            tool_calls: Vec::new(),
            tool_call_id: Some(&result.call_id),
        });
        std::iter::once(calls).chain(results)
    })
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnswerMessage {
    content: Option<String>,
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<CallIn>,
}

/// A call the model asks for.
#[derive(Debug, Deserialize)]
struct CallIn {
    id: Option<String>,
    function: FunctionCallIn,
}

#[derive(Debug, Deserialize)]
struct FunctionCallIn {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// `{"error": {...}}`, or `{"error": "..."}` as some compatible servers send.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorDetail {
    Object {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        // A string at OpenAI, a number at some compatible servers.
        code: Option<serde_json::Value>,
    },
    Text(String),
}

fn interpret(answer: Answer, key: Option<&SecretString>) -> Result<Completion, LlmError> {
    let response: ChatResponse = http::read_success(answer, |body| error_message(body, key))?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::NoAnswer("the answer has no choices".to_owned()));
    };
    let finish_reason = choice.finish_reason.as_deref().unwrap_or("none");
    let (content, refused, calls) = match choice.message {
        Some(message) => (
            message.content,
            message.refusal.is_some(),
            message.tool_calls,
        ),
        None => (None, false, Vec::new()),
    };
    let tool_calls: Vec<ToolCall> = calls
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: call.id.unwrap_or_else(|| format!("call-{index}")),
            name: call.function.name,
            arguments: arguments_from_text(&call.function.arguments),
            signature: None,
        })
        .collect();
    let text = content.as_deref().map(str::trim).unwrap_or_default();
    if text.is_empty() && tool_calls.is_empty() {
        // The refusal's text is the model's words about the user's; it is not logged.
        let what = if refused {
            "the model refused"
        } else {
            "the answer is empty"
        };
        return Err(LlmError::NoAnswer(format!(
            "{what} (finish_reason {finish_reason})"
        )));
    }
    let usage = response.usage;
    Ok(Completion {
        text: text.to_owned(),
        tool_calls,
        input_tokens: usage.as_ref().and_then(|u| u.prompt_tokens),
        output_tokens: usage.as_ref().and_then(|u| u.completion_tokens),
    })
}

/// `message (type …, code …)` from an error body, or what can be said of a body of another
/// shape.
fn error_message(body: &[u8], key: Option<&SecretString>) -> String {
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) else {
        return http::unstructured_message(body, key);
    };
    let message = match error {
        ErrorDetail::Text(text) => text,
        ErrorDetail::Object {
            message,
            kind,
            code,
        } => {
            let mut message = message.unwrap_or_else(|| "no error message".to_owned());
            let details: Vec<String> = [
                kind.map(|kind| format!("type {kind}")),
                code.filter(|code| !code.is_null()).map(|code| match code {
                    serde_json::Value::String(code) => format!("code {code}"),
                    other => format!("code {other}"),
                }),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !details.is_empty() {
                message = format!("{message} ({})", details.join(", "));
            }
            message
        }
    };
    http::clean_message(&message, key)
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
            if let Err(error) = interpret(answer, Some(&key)) {
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
            let error = interpret(answer, Some(&key)).err();
            let is_status = matches!(error, Some(LlmError::Status { .. }));
            proptest::prop_assert!(is_status, "{error:?}");
            let _ = error.and_then(|e| e.refusal());
        }
    }
}
