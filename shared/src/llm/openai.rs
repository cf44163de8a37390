//! OpenAI's Chat Completions API (`POST {base_url}/chat/completions`), which OpenAI and most
//! self-hosted servers (Ollama, llama.cpp, vLLM) speak.

use std::sync::Arc;

use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http::{self, RawAnswer, Target};
use super::{Completion, Llm, LlmError, LlmSettings, Prompt};
use crate::conversation::Role;
use crate::retry::retry;
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
        let key = secrets.llm_api_key.as_ref();
        let authorization = key.map(|k| http::key_header("Bearer ", k)).transpose()?;
        let url = self.url();
        let body = ChatRequest::new(&self.settings.model, prompt);
        let target = Target {
            provider: PROVIDER,
            model: &self.settings.model,
        };
        retry(&self.settings.backoff, deadline, |attempt| {
            let mut request = self.http.post(&url).json(&body);
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value.clone());
            }
            http::attempt(
                target,
                attempt,
                request,
                self.settings.timeout,
                deadline,
                |answer| interpret(answer, key),
            )
        })
        .await
    }
}

#[derive(Debug, Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatMessage<'a>>,
}

#[derive(Debug, Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl<'a> ChatRequest<'a> {
    fn new(model: &'a str, prompt: &'a Prompt) -> Self {
        let system = (!prompt.system.trim().is_empty()).then(|| ChatMessage {
            role: "system",
            content: &prompt.system,
        });
        let turns = prompt.turns.iter().map(|turn| ChatMessage {
            role: match turn.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &turn.text,
        });
        Self {
            model,
            messages: system.into_iter().chain(turns).collect(),
        }
    }
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

fn interpret(answer: RawAnswer, key: Option<&SecretString>) -> Result<Completion, LlmError> {
    if !answer.is_success() {
        return Err(LlmError::Status {
            status: answer.status,
            message: error_message(&answer.body, key),
            retry_after: answer.retry_after,
        });
    }
    let response: ChatResponse =
        serde_json::from_slice(&answer.body).map_err(|e| http::unreadable(&e))?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::NoAnswer("the answer has no choices".to_owned()));
    };
    let finish_reason = choice.finish_reason.as_deref().unwrap_or("none");
    let (content, refused) = match choice.message {
        Some(message) => (message.content, message.refusal.is_some()),
        None => (None, false),
    };
    let text = content.as_deref().map(str::trim).unwrap_or_default();
    if text.is_empty() {
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

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::llm::test_support::*;
    use crate::secrets::{SecretsError, StaticSecrets};
    use crate::testkit::http_recorder::{Canned, RecordingServer};

    fn answer(text: &str) -> Canned {
        Canned::json(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
            }),
        )
    }

    fn error(status: u16, message: &str) -> Canned {
        Canned::json(
            status,
            json!({"error": {"message": message, "type": "invalid_request_error", "code": null}}),
        )
    }

    async fn server() -> RecordingServer {
        RecordingServer::start(|_| answer("Hello!")).await
    }

    /// A client of `server` under `/v1/`, the trailing slash as a user might configure it.
    fn chat(server: &RecordingServer, key: Option<&str>) -> OpenAiChat<StaticSecrets> {
        chat_with(key, settings(&format!("{}/v1/", server.url)))
    }

    fn chat_with(key: Option<&str>, settings: LlmSettings) -> OpenAiChat<StaticSecrets> {
        OpenAiChat::new(reqwest::Client::new(), settings, secrets(key))
    }

    #[tokio::test]
    async fn sends_the_prompt_as_chat_messages_with_the_key() {
        let server = server().await;
        let completion = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await
            .unwrap();
        assert_eq!(
            completion,
            Completion {
                text: "Hello!".into(),
                input_tokens: Some(42),
                output_tokens: Some(7),
            }
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer sk-test-123"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.json(),
            json!({
                "model": "test-model",
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello, how can I help?"},
                    {"role": "user", "content": "What is 2+2?"}
                ]
            })
        );
    }

    #[tokio::test]
    async fn omits_an_empty_system_prompt_and_a_missing_key() {
        let server = server().await;
        let prompt = Prompt::new("", prompt().turns);
        chat(&server, None)
            .complete(&prompt, in_seconds(10))
            .await
            .unwrap();
        let request = &server.requests()[0];
        assert_eq!(request.header("authorization"), None);
        let body = request.json();
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["messages"][0]["role"], "user");
    }

    #[tokio::test]
    async fn reads_an_answer_without_usage_and_trims_it() {
        let server = RecordingServer::start(|_| {
            Canned::json(
                200,
                json!({"choices": [{"message": {"content": "\n  Four.  "}, "finish_reason": "stop"}]}),
            )
        })
        .await;
        let completion = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await
            .unwrap();
        assert_eq!(completion.text, "Four.");
        assert_eq!(completion.input_tokens, None);
        assert_eq!(completion.output_tokens, None);
    }

    #[tokio::test]
    async fn retries_server_errors_until_an_answer() {
        let server = server().await;
        server.script([error(500, "boom"), error(502, "bad gateway")]);
        let completion = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await
            .unwrap();
        assert_eq!(completion.text, "Hello!");
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn waits_as_long_as_retry_after_asks() {
        let server = server().await;
        server.script([error(429, "Rate limit reached").with_header("retry-after", "1")]);
        let started = Instant::now();
        let completion = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await
            .unwrap();
        assert_eq!(completion.text, "Hello!");
        assert_eq!(server.requests().len(), 2);
        // The test backoff is milliseconds; only Retry-After explains a full second.
        assert!(started.elapsed() >= Duration::from_millis(950));
    }

    #[tokio::test]
    async fn does_not_retry_what_would_fail_again() {
        for status in [400, 401, 403] {
            let server = server().await;
            server.script([error(status, "nope")]);
            let result = chat(&server, Some(KEY))
                .complete(&prompt(), in_seconds(10))
                .await;
            assert_eq!(
                result,
                Err(LlmError::Status {
                    status,
                    message: "nope (type invalid_request_error)".into(),
                    retry_after: None,
                })
            );
            assert_eq!(server.requests().len(), 1, "status {status}");
        }
    }

    #[tokio::test]
    async fn reads_error_bodies_of_other_shapes() {
        let server = server().await;
        server.script([
            Canned::json(404, json!({"error": "model 'x' not found"})),
            Canned::json(400, json!("<html>Bad Request</html>")),
            Canned::json(
                400,
                json!({"error": {"message": "Too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}),
            ),
            Canned::json(400, json!({"error": {"code": 400}})),
        ]);
        let chat = chat(&server, Some(KEY));
        let mut messages = Vec::new();
        for _ in 0..4 {
            match chat.complete(&prompt(), in_seconds(10)).await {
                Err(LlmError::Status { message, .. }) => messages.push(message),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            messages,
            [
                "model 'x' not found",
                "\"<html>Bad Request</html>\"",
                "Too long (type invalid_request_error, code context_length_exceeded)",
                "no error message (code 400)",
            ]
        );
    }

    #[tokio::test]
    async fn an_empty_or_refused_answer_is_no_answer() {
        let server = server().await;
        server.script([
            Canned::json(
                200,
                json!({"choices": [{"message": {"content": null}, "finish_reason": "length"}]}),
            ),
            Canned::json(
                200,
                json!({"choices": [{"message": {"content": "  "}, "finish_reason": "stop"}]}),
            ),
            Canned::json(
                200,
                json!({"choices": [{"message": {"content": null, "refusal": "I can't"}, "finish_reason": "stop"}]}),
            ),
            Canned::json(200, json!({"choices": []})),
        ]);
        let chat = chat(&server, Some(KEY));
        let mut reasons = Vec::new();
        for _ in 0..4 {
            match chat.complete(&prompt(), in_seconds(10)).await {
                Err(LlmError::NoAnswer(reason)) => reasons.push(reason),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            reasons,
            [
                "the answer is empty (finish_reason length)",
                "the answer is empty (finish_reason stop)",
                "the model refused (finish_reason stop)",
                "the answer has no choices",
            ]
        );
        assert_eq!(server.requests().len(), 4, "a 200 is not retried");
    }

    #[tokio::test]
    async fn an_unexpected_body_is_a_bad_response() {
        let server =
            RecordingServer::start(|_| Canned::json(200, json!({"choices": "Hello!"}))).await;
        let result = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await;
        assert!(
            matches!(&result, Err(LlmError::BadResponse(m)) if !m.contains("Hello")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn times_out_each_attempt_and_gives_up_before_the_deadline() {
        let server = RecordingServer::start(|_| answer("late").after(Duration::from_secs(5))).await;
        let mut settings = settings(&server.url);
        settings.timeout = Duration::from_millis(100);
        let deadline = in_seconds(4);
        let result = chat_with(Some(KEY), settings)
            .complete(&prompt(), deadline)
            .await;
        assert_eq!(result, Err(LlmError::Timeout));
        assert_eq!(server.requests().len(), 3, "every attempt was made");
        assert!(Instant::now() < deadline);
    }

    #[tokio::test]
    async fn an_attempt_never_outlives_the_deadline() {
        let server =
            RecordingServer::start(|_| answer("late").after(Duration::from_secs(30))).await;
        let mut settings = settings(&server.url);
        settings.timeout = Duration::from_secs(60);
        let started = Instant::now();
        let result = chat_with(Some(KEY), settings)
            .complete(&prompt(), started + Duration::from_millis(300))
            .await;
        assert_eq!(result, Err(LlmError::Timeout));
        // Bounded by the 300 ms deadline, not by the 60 s timeout or the 30 s server.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn makes_no_request_once_the_deadline_has_passed() {
        let server = server().await;
        let result = chat(&server, Some(KEY))
            .complete(&prompt(), Instant::now())
            .await;
        assert_eq!(result, Err(LlmError::Timeout));
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn makes_no_retry_that_could_not_start_before_the_deadline() {
        let server = server().await;
        server.script([error(503, "overloaded").with_header("retry-after", "30")]);
        let result = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(5))
            .await;
        assert!(
            matches!(
                result,
                Err(LlmError::Status {
                    status: 503,
                    retry_after: Some(d),
                    ..
                }) if d == Duration::from_secs(30)
            ),
            "{result:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_connection_failure_is_a_transport_error_without_secrets() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chat = chat_with(Some(KEY), settings(&format!("http://127.0.0.1:{port}/v1")));
        let result = chat.complete(&prompt(), in_seconds(10)).await;
        let Err(LlmError::Transport(message)) = &result else {
            panic!("unexpected {result:?}");
        };
        assert!(!message.contains(KEY), "{message}");
        assert!(!message.contains("2+2"), "{message}");
    }

    #[tokio::test]
    async fn errors_never_show_the_key_or_the_prompt() {
        let server = server().await;
        server.script([error(401, &format!("Incorrect API key provided: {KEY}."))]);
        let result = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await;
        let error = result.unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("2+2"), "{shown}");
        assert!(shown.contains("Incorrect API key provided: <redacted>."));
    }

    #[tokio::test]
    async fn a_secrets_failure_sends_nothing() {
        let server = server().await;
        let chat = OpenAiChat::new(
            reqwest::Client::new(),
            settings(&server.url),
            Arc::new(FailingSecrets),
        );
        let result = chat.complete(&prompt(), in_seconds(10)).await;
        assert!(
            matches!(result, Err(LlmError::Secrets(SecretsError::Fetch(_)))),
            "{result:?}"
        );
        assert!(server.requests().is_empty());
    }
}
