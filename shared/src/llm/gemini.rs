//! Google's Gemini API, natively: `POST {base_url}/v1beta/models/{model}:generateContent`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http::{self, RawAnswer, Target};
use super::{Completion, Llm, LlmError, LlmSettings, Prompt};
use crate::conversation::Role;
use crate::retry::retry;
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
        let key = secrets.require("LLM_API_KEY", &secrets.llm_api_key)?;
        let key_value = http::key_header("", key)?;
        let url = self.url();
        let body = GenerateRequest::new(prompt);
        let target = Target {
            provider: PROVIDER,
            model: &self.settings.model,
        };
        retry(&self.settings.backoff, deadline, |attempt| {
            let request = self
                .http
                .post(&url)
                .header(KEY_HEADER, key_value.clone())
                .json(&body);
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
#[serde(rename_all = "camelCase")]
struct GenerateRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    contents: Vec<Content<'a>>,
}

#[derive(Debug, Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: [Part<'a>; 1],
}

#[derive(Debug, Serialize)]
struct Part<'a> {
    text: &'a str,
}

impl<'a> GenerateRequest<'a> {
    fn new(prompt: &'a Prompt) -> Self {
        let system_instruction = (!prompt.system.trim().is_empty()).then(|| Content {
            role: None,
            parts: [Part {
                text: &prompt.system,
            }],
        });
        let contents = prompt
            .turns
            .iter()
            .map(|turn| Content {
                role: Some(match turn.role {
                    Role::User => "user",
                    Role::Assistant => "model",
                }),
                parts: [Part { text: &turn.text }],
            })
            .collect();
        Self {
            system_instruction,
            contents,
        }
    }
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
struct AnswerPart {
    text: Option<String>,
    /// A thinking model's thought summary, not part of the answer.
    #[serde(default)]
    thought: bool,
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

fn interpret(answer: RawAnswer, key: &SecretString) -> Result<Completion, LlmError> {
    if !answer.is_success() {
        return Err(LlmError::Status {
            status: answer.status,
            message: error_message(&answer.body, key),
            retry_after: answer.retry_after,
        });
    }
    let response: GenerateResponse =
        serde_json::from_slice(&answer.body).map_err(|e| http::unreadable(&e))?;
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
    let text: String = candidate
        .content
        .map(|content| content.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|part| !part.thought)
        .filter_map(|part| part.text)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        let reason = candidate.finish_reason.as_deref().unwrap_or("none");
        return Err(LlmError::NoAnswer(format!(
            "the answer is empty (finishReason {reason})"
        )));
    }
    let usage = response.usage_metadata;
    Ok(Completion {
        text: text.to_owned(),
        input_tokens: usage.as_ref().and_then(|u| u.prompt_token_count),
        output_tokens: usage.as_ref().and_then(|u| u.candidates_token_count),
    })
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

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::llm::test_support::*;
    use crate::secrets::{SecretsError, StaticSecrets};
    use crate::testkit::http_recorder::{Canned, RecordingServer};

    const PATH: &str = "/v1beta/models/test-model:generateContent";

    fn answer(text: &str) -> Canned {
        Canned::json(
            200,
            json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0
                }],
                "usageMetadata": {
                    "promptTokenCount": 42,
                    "candidatesTokenCount": 7,
                    "totalTokenCount": 49
                },
                "modelVersion": "test-model"
            }),
        )
    }

    fn error(status: u16, message: &str, code: &str) -> Canned {
        Canned::json(
            status,
            json!({"error": {"code": status, "message": message, "status": code}}),
        )
    }

    async fn server() -> RecordingServer {
        RecordingServer::start(|_| answer("Hello!")).await
    }

    fn chat(server: &RecordingServer, key: Option<&str>) -> GeminiChat<StaticSecrets> {
        chat_with(key, settings(&format!("{}/", server.url)))
    }

    fn chat_with(key: Option<&str>, settings: LlmSettings) -> GeminiChat<StaticSecrets> {
        GeminiChat::new(reqwest::Client::new(), settings, secrets(key))
    }

    #[tokio::test]
    async fn sends_the_prompt_as_contents_with_the_key_in_a_header() {
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
        assert_eq!(request.path, PATH, "no key in the URL");
        assert_eq!(request.header("x-goog-api-key"), Some(KEY));
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.json(),
            json!({
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Hi"}]},
                    {"role": "model", "parts": [{"text": "Hello, how can I help?"}]},
                    {"role": "user", "parts": [{"text": "What is 2+2?"}]}
                ]
            })
        );
    }

    #[tokio::test]
    async fn omits_an_empty_system_prompt_and_accepts_a_prefixed_model() {
        let server = server().await;
        let mut settings = settings(&server.url);
        settings.model = "models/test-model".to_owned();
        chat_with(Some(KEY), settings)
            .complete(&Prompt::new(" ", prompt().turns), in_seconds(10))
            .await
            .unwrap();
        let request = &server.requests()[0];
        assert_eq!(request.path, PATH);
        let body = request.json();
        assert!(body.get("systemInstruction").is_none(), "{body}");
        assert_eq!(body["contents"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn joins_the_parts_skips_thoughts_and_tolerates_missing_usage() {
        let server = RecordingServer::start(|_| {
            Canned::json(
                200,
                json!({"candidates": [{
                    "content": {"role": "model", "parts": [
                        {"text": "Let me think about arithmetic.", "thought": true},
                        {"text": "Two plus two "},
                        {"text": "is four.\n"}
                    ]},
                    "finishReason": "STOP"
                }]}),
            )
        })
        .await;
        let completion = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await
            .unwrap();
        assert_eq!(
            completion,
            Completion {
                text: "Two plus two is four.".into(),
                input_tokens: None,
                output_tokens: None,
            }
        );
    }

    #[tokio::test]
    async fn retries_server_errors_until_an_answer() {
        let server = server().await;
        server.script([
            error(500, "Internal error", "INTERNAL"),
            error(503, "The model is overloaded.", "UNAVAILABLE"),
        ]);
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
        server
            .script([error(429, "Resource exhausted", "RESOURCE_EXHAUSTED")
                .with_header("retry-after", "1")]);
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
        for (status, code) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
        ] {
            let server = server().await;
            server.script([error(status, "nope", code)]);
            let result = chat(&server, Some(KEY))
                .complete(&prompt(), in_seconds(10))
                .await;
            assert_eq!(
                result,
                Err(LlmError::Status {
                    status,
                    message: format!("nope ({code})"),
                    retry_after: None,
                })
            );
            assert_eq!(server.requests().len(), 1, "status {status}");
        }
    }

    #[tokio::test]
    async fn reads_an_error_body_of_another_shape() {
        let server = server().await;
        server.script([Canned::json(404, json!("Not Found"))]);
        let result = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await;
        assert_eq!(
            result,
            Err(LlmError::Status {
                status: 404,
                message: "\"Not Found\"".into(),
                retry_after: None,
            })
        );
    }

    #[tokio::test]
    async fn a_blocked_or_empty_answer_is_no_answer() {
        let server = server().await;
        server.script([
            Canned::json(
                200,
                json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}}),
            ),
            Canned::json(
                200,
                json!({"candidates": [{"finishReason": "SAFETY", "safetyRatings": []}]}),
            ),
            Canned::json(
                200,
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " "}]}, "finishReason": "MAX_TOKENS"}]}),
            ),
            Canned::json(200, json!({"candidates": []})),
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
                "the prompt was blocked (blockReason SAFETY)",
                "the answer is empty (finishReason SAFETY)",
                "the answer is empty (finishReason MAX_TOKENS)",
                "the answer has no candidates",
            ]
        );
        assert_eq!(server.requests().len(), 4, "a 200 is not retried");
    }

    #[tokio::test]
    async fn an_unexpected_body_is_a_bad_response() {
        let server =
            RecordingServer::start(|_| Canned::json(200, json!({"candidates": "Hello!"}))).await;
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
        server
            .script([error(503, "The model is overloaded.", "UNAVAILABLE")
                .with_header("retry-after", "30")]);
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
    async fn a_missing_key_fails_without_a_request() {
        let server = server().await;
        let result = chat(&server, None)
            .complete(&prompt(), in_seconds(10))
            .await;
        assert_eq!(
            result,
            Err(LlmError::Secrets(SecretsError::MissingKey("LLM_API_KEY")))
        );
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn a_secrets_failure_sends_nothing() {
        let server = server().await;
        let chat = GeminiChat::new(
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

    #[tokio::test]
    async fn a_connection_failure_is_a_transport_error_without_secrets() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chat = chat_with(Some(KEY), settings(&format!("http://127.0.0.1:{port}")));
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
        server.script([error(
            400,
            &format!("API key not valid: {KEY}. Please pass a valid API key."),
            "INVALID_ARGUMENT",
        )]);
        let result = chat(&server, Some(KEY))
            .complete(&prompt(), in_seconds(10))
            .await;
        let error = result.unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("2+2"), "{shown}");
        assert!(shown.contains("API key not valid: <redacted>."), "{shown}");
    }
}
