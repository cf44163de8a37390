//! The LLM port and its three providers: OpenAI-compatible Chat Completions ([`openai`]),
//! Gemini's native `generateContent` ([`gemini`]) and Amazon Bedrock's Converse ([`bedrock`]).

pub mod bedrock;
pub mod gemini;
pub mod openai;
pub mod tool_use;

mod http;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::conversation::Role;
use crate::retry::{Backoff, RetryHint, Retryable};
use crate::secrets::{AppSecrets, SecretString, Secrets, SecretsError};

pub use crate::number_settings::ModelChoice;
pub use bedrock::{BedrockChat, Guardrail};
pub use gemini::GeminiChat;
pub use openai::OpenAiChat;
pub use tool_use::{ToolCall, ToolDeclaration, ToolResult, ToolRound};

/// One message of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTurn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
}

/// A file that goes to the model inline with the user's last turn: an image the user sent.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// Its MIME type, such as `image/jpeg`.
    pub mime_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for InlineFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes are the user's: their size only.
        f.debug_struct("InlineFile")
            .field("mime_type", &self.mime_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// What is sent to the model: the persona and the conversation, ending with the user's turn.
/// Consecutive turns of one role are already merged (see [`Prompt::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The system prompt (`SYSTEM_PROMPT`).
    pub system: String,
    /// The conversation, oldest first, alternating roles, the last one the user's.
    pub turns: Vec<PromptTurn>,
    /// Files that go with the last (user's) turn, in order: only the newest burst carries any.
    pub files: Vec<InlineFile>,
    /// The tools the model may call; none: it answers in text.
    pub tools: Vec<ToolDeclaration>,
    /// The rounds of tool use so far after the last (user's) turn, oldest first.
    pub rounds: Vec<ToolRound>,
    /// The model the business number chose, when not the stack's (`NumberSettings::llm`).
    pub model: Option<ModelChoice>,
}

impl Prompt {
    /// Builds a prompt from the system prompt and the turns in order, merging consecutive turns of
    /// one role (separated by a blank line) and dropping leading assistant turns, as providers
    /// such as Gemini require the conversation to alternate and to start with the user.
    pub fn new(system: impl Into<String>, turns: impl IntoIterator<Item = PromptTurn>) -> Self {
        let mut merged: Vec<PromptTurn> = Vec::new();
        for turn in turns {
            if turn.text.trim().is_empty() {
                continue;
            }
            match merged.last_mut() {
                Some(last) if last.role == turn.role => {
                    last.text.push_str("\n\n");
                    last.text.push_str(&turn.text);
                }
                None if turn.role == Role::Assistant => {}
                _ => merged.push(turn),
            }
        }
        Self {
            system: system.into(),
            turns: merged,
            files: Vec::new(),
            tools: Vec::new(),
            rounds: Vec::new(),
            model: None,
        }
    }

    /// The same prompt with `files` going to the model with its last turn.
    pub fn with_files(mut self, files: Vec<InlineFile>) -> Self {
        self.files = files;
        self
    }

    /// The same prompt offering `tools`, with the `rounds` of tool use so far.
    pub fn with_tools(mut self, tools: Vec<ToolDeclaration>, rounds: Vec<ToolRound>) -> Self {
        self.tools = tools;
        self.rounds = rounds;
        self
    }

    /// About how many bytes the prompt takes in a JSON request: its files in base64, its text,
    /// and room for the rest.
    pub fn json_size_hint(&self) -> usize {
        let files: usize = self.files.iter().map(|f| f.bytes.len() / 3 * 4 + 64).sum();
        let text: usize = self.turns.iter().map(|t| t.text.len() + 32).sum();
        let tools: usize = self
            .tools
            .iter()
            .map(|t| t.description.len() + t.parameters.to_string().len() + 64)
            .sum();
        let rounds: usize = self
            .rounds
            .iter()
            .flat_map(|r| &r.results)
            .map(|r| r.content.len() + 256)
            .sum();
        files + text + tools + rounds + self.system.len() + 1024
    }
}

/// `bytes` as a JSON string of standard base64, as both providers take inline files. Written
/// straight into the request as it is serialized: a 5 MiB photo never also lives as a 6.7 MiB
/// `String`.
#[derive(Debug, Clone, Copy)]
pub struct Base64Json<'a>(pub &'a [u8]);

impl serde::Serialize for Base64Json<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::display::Base64Display;
        use base64::engine::general_purpose::STANDARD;
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// `file` as a JSON string holding a `data:` URL (`data:<type>;base64,…`), written straight
/// into the request like [`Base64Json`].
#[derive(Debug, Clone, Copy)]
pub struct DataUrlJson<'a>(pub &'a InlineFile);

impl serde::Serialize for DataUrlJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::display::Base64Display;
        use base64::engine::general_purpose::STANDARD;
        let data = Base64Display::new(&self.0.bytes, &STANDARD);
        serializer.collect_str(&format_args!("data:{};base64,{data}", self.0.mime_type))
    }
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer's text: never empty, unless the model asks for tool calls instead.
    pub text: String,
    /// The tool calls the model asks for before it answers; none for a final answer.
    pub tool_calls: Vec<ToolCall>,
    /// Prompt tokens, when the provider reported them.
    pub input_tokens: Option<u64>,
    /// Answer tokens, when the provider reported them.
    pub output_tokens: Option<u64>,
}

/// Why the model gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with an error status.
    #[error("the LLM provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
        /// The `Retry-After` the provider sent, if any.
        retry_after: Option<Duration>,
    },
    /// No answer within the time allowed.
    #[error("the LLM provider did not answer in time")]
    Timeout,
    /// The connection failed.
    #[error("the LLM provider could not be reached: {0}")]
    Transport(String),
    /// The provider answered 200 with no usable text (an empty choice, or a blocked answer).
    #[error("the LLM gave no answer: {0}")]
    NoAnswer(String),
    /// The provider answered 200 with a body of an unexpected shape.
    #[error("the LLM provider's answer could not be read: {0}")]
    BadResponse(String),
    /// The API key could not be read (Secrets Manager failed, or the key is missing).
    #[error("the API key could not be read: {0}")]
    Secrets(#[from] SecretsError),
    /// A provider that names its errors (Amazon Bedrock) answered with one, classified by the
    /// adapter that read it.
    #[error("the LLM provider answered {code}: {message}")]
    Service {
        /// The provider's name for the error, such as `ThrottlingException`.
        code: String,
        /// The provider's message, and what to do when the adapter knows.
        message: String,
        /// Whether the same request may pass when sent again in a moment.
        transient: bool,
        /// Why the request was refused for good, when it was.
        refusal: Option<LlmRefusal>,
    },
}

/// Why the provider refused a request for good (a 400, 404, 413 or 422): the same request would
/// be refused again, so it is neither retried now nor later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LlmRefusal {
    /// The prompt is longer than the model's context window (OpenAI's
    /// `context_length_exceeded`, Gemini's "exceeds the maximum number of tokens"); a shorter
    /// history may pass.
    ContextTooLong,
    /// The provider's content filter refused the prompt (`content_filter`,
    /// `content_policy_violation`, a safety block).
    ContentFiltered,
    /// The model does not exist, or this key may not use it (OpenAI's `model_not_found`,
    /// Gemini's `NOT_FOUND`, any 404).
    UnknownModel,
    /// Any other request the provider refused as invalid.
    InvalidRequest,
    /// The model may not be used from here: Bedrock's model access is not enabled in this
    /// region, or the function's role lacks the permission.
    AccessDenied,
}

/// Words in an error message (lowercased) that say the prompt is too long.
const CONTEXT_TOO_LONG: &[&str] = &[
    "context_length_exceeded",
    "context length",
    "context window",
    "context size",
    "exceed_context_size",
    "maximum number of tokens",
    "too many tokens",
    "input token count",
    "prompt is too long",
    "input is too long",
    "too many input tokens",
];

/// Words in an error message (lowercased) that say a content filter refused the prompt.
const CONTENT_FILTERED: &[&str] = &[
    "content_filter",
    "content_policy",
    "content management policy",
    "safety",
];

/// Words in an error message (lowercased) that say the model is unknown.
const UNKNOWN_MODEL: &[&str] = &[
    "model_not_found",
    "unknown model",
    "invalid model",
    "model not found",
    "model identifier is invalid",
    "inference profile",
];

/// Words in an error message (lowercased) that say the key was refused: Gemini answers a bad
/// key with 400 `INVALID_ARGUMENT` ("API key not valid"). Like a 401, such a refusal may pass
/// once the key is fixed, so it is not final.
const KEY_REFUSED: &[&str] = &["api key", "api_key"];

impl LlmError {
    /// Why the provider refused the request for good, when it did: a 400, 404, 413 or 422,
    /// classified by the provider's error code and message (which [`LlmError::Status`] holds).
    /// A refused key, even as a 400, is not a refusal for good.
    pub fn refusal(&self) -> Option<LlmRefusal> {
        match self {
            Self::Status {
                status, message, ..
            } => refusal_of_status(*status, message),
            Self::Service { refusal, .. } => *refusal,
            _ => None,
        }
    }

    /// Why a request was refused as invalid, from the provider's message: too long, filtered,
    /// an unknown model, or another invalid request.
    pub fn invalid_request_refusal(message: &str) -> LlmRefusal {
        let message = message.to_lowercase();
        let says = |words: &[&str]| words.iter().any(|word| message.contains(word));
        if says(CONTEXT_TOO_LONG) {
            LlmRefusal::ContextTooLong
        } else if says(CONTENT_FILTERED) {
            LlmRefusal::ContentFiltered
        } else if says(UNKNOWN_MODEL) {
            LlmRefusal::UnknownModel
        } else {
            LlmRefusal::InvalidRequest
        }
    }
}

/// [`LlmError::refusal`] of an HTTP error status and its message.
fn refusal_of_status(status: u16, message: &str) -> Option<LlmRefusal> {
    if !matches!(status, 400 | 404 | 413 | 422) {
        return None;
    }
    let message = message.to_lowercase();
    let says = |words: &[&str]| words.iter().any(|word| message.contains(word));
    if says(KEY_REFUSED) {
        return None;
    }
    Some(match LlmError::invalid_request_refusal(&message) {
        _ if status == 413 => LlmRefusal::ContextTooLong,
        LlmRefusal::InvalidRequest if status == 404 => LlmRefusal::UnknownModel,
        refusal => refusal,
    })
}

impl Retryable for LlmError {
    /// 429, 5xx, timeouts and connection failures are retried; 400, 401, 403 and other answers
    /// are not, since the same request would fail the same way. Neither is a failure to read
    /// the API key: the secrets cache has its own refresh.
    fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Status {
                status,
                retry_after,
                ..
            } if *status == 429 || *status >= 500 => RetryHint::honouring(*retry_after),
            Self::Timeout | Self::Transport(_) => RetryHint::Backoff,
            Self::Service {
                transient: true, ..
            } => RetryHint::Backoff,
            _ => RetryHint::Never,
        }
    }
}

/// A chat model.
pub trait Llm: Send + Sync {
    /// Answers `prompt`, retrying transient failures, never past `deadline`.
    fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> impl Future<Output = Result<Completion, LlmError>> + Send;
}

/// How to reach a provider, shared by [`OpenAiChat`], [`GeminiChat`] and [`BedrockChat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmSettings {
    /// The API's base URL, such as [`openai::DEFAULT_BASE_URL`] or a local OpenAI-compatible
    /// server's (`http://127.0.0.1:11434/v1`). A trailing `/` is ignored. For Bedrock, empty
    /// for the AWS SDK's endpoint (the region's, or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
    pub base_url: String,
    /// The model's name, such as `gpt-4o-mini` or `gemini-2.5-flash`.
    pub model: String,
    /// The longest one attempt may take, the answer's body included. An attempt never runs past
    /// the caller's deadline either.
    pub timeout: Duration,
    /// How failed attempts are retried.
    pub backoff: Backoff,
    /// The Bedrock guardrail every request goes through, if any; the other providers have none.
    pub guardrail: Option<Guardrail>,
    /// The key of the secret that holds the API key, when it is not `LLM_API_KEY` (a number
    /// answered by another provider's account, see [`ModelChoice`]).
    pub api_key_secret: Option<String>,
}

impl LlmSettings {
    /// The API key these settings name, from `secrets`: `LLM_API_KEY`, or the key a number's
    /// settings name.
    pub fn api_key<'a>(&self, secrets: &'a AppSecrets) -> Option<&'a SecretString> {
        match &self.api_key_secret {
            Some(key) => secrets.get(key),
            None => secrets.llm_api_key.as_ref(),
        }
    }
}

/// Which API a [`ChatModel`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI's Chat Completions, or any server compatible with it (Ollama, llama.cpp, vLLM…).
    OpenAi,
    /// Google's Gemini API (`generateContent`).
    Gemini,
    /// Amazon Bedrock's Converse API, through the AWS SDK and the function's role: no key.
    Bedrock,
}

impl Provider {
    /// Every provider, in the order their names are listed in messages.
    pub const ALL: [Self; 3] = [Self::OpenAi, Self::Gemini, Self::Bedrock];

    /// The name used in configuration: `openai`, `gemini` or `bedrock`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
        }
    }

    /// The provider's public API, used when no base URL is configured; none for Bedrock, whose
    /// endpoint the AWS SDK finds from the region.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::OpenAi => Some(openai::DEFAULT_BASE_URL),
            Self::Gemini => Some(gemini::DEFAULT_BASE_URL),
            Self::Bedrock => None,
        }
    }

    /// Whether the provider needs `LLM_API_KEY` from the secret.
    pub fn needs_api_key(self) -> bool {
        self != Self::Bedrock
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A provider name that is not one of [`Provider::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown LLM provider {0:?}: expected one of openai, gemini, bedrock")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    /// Reads `openai`, `gemini` or `bedrock`, in any case, ignoring surrounding blanks.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let trimmed = value.trim();
        Self::ALL
            .into_iter()
            .find(|provider| provider.name().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| UnknownProvider(value.to_owned()))
    }
}

/// The configured chat model, whichever provider serves it.
pub enum ChatModel<S> {
    /// OpenAI's Chat Completions or a compatible server.
    OpenAi(OpenAiChat<S>),
    /// Google's Gemini API.
    Gemini(GeminiChat<S>),
    /// Amazon Bedrock's Converse API.
    Bedrock(BedrockChat),
}

impl<S> ChatModel<S> {
    /// A client for `provider`: the HTTP providers send through `http` (one client, reused) with
    /// the API key read from `secrets` on each call; Bedrock through an AWS SDK client built from
    /// `aws` (the function's credentials and region). No I/O.
    pub fn new(
        provider: Provider,
        http: reqwest::Client,
        aws: &aws_config::SdkConfig,
        settings: LlmSettings,
        secrets: std::sync::Arc<S>,
    ) -> Self {
        match provider {
            Provider::OpenAi => Self::OpenAi(OpenAiChat::new(http, settings, secrets)),
            Provider::Gemini => Self::Gemini(GeminiChat::new(http, settings, secrets)),
            Provider::Bedrock => Self::Bedrock(BedrockChat::new(aws, settings)),
        }
    }

    /// Which provider this is.
    pub fn provider(&self) -> Provider {
        match self {
            Self::OpenAi(_) => Provider::OpenAi,
            Self::Gemini(_) => Provider::Gemini,
            Self::Bedrock(_) => Provider::Bedrock,
        }
    }
}

impl<S: Secrets> Llm for ChatModel<S> {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, LlmError> {
        match self {
            Self::OpenAi(model) => model.complete(prompt, deadline).await,
            Self::Gemini(model) => model.complete(prompt, deadline).await,
            Self::Bedrock(model) => model.complete(prompt, deadline).await,
        }
    }
}

/// The stack's chat model, and the models business numbers chose (`"llm"` in their settings),
/// each built on its first prompt and reused: a prompt whose [`Prompt::model`] names one goes to
/// it, any other to the stack's.
pub struct ChatModels<S> {
    stack: ChatModel<S>,
    http: reqwest::Client,
    aws: aws_config::SdkConfig,
    settings: LlmSettings,
    secrets: std::sync::Arc<S>,
    chosen: std::sync::Mutex<std::collections::HashMap<ModelChoice, std::sync::Arc<ChatModel<S>>>>,
}

impl<S> ChatModels<S> {
    /// The stack's model (`provider`, `settings`), and the means to build the ones numbers
    /// choose: the same client, AWS configuration, timeouts, retries and secret. No I/O.
    pub fn new(
        provider: Provider,
        http: reqwest::Client,
        aws: &aws_config::SdkConfig,
        settings: LlmSettings,
        secrets: std::sync::Arc<S>,
    ) -> Self {
        let stack = ChatModel::new(
            provider,
            http.clone(),
            aws,
            settings.clone(),
            secrets.clone(),
        );
        Self {
            stack,
            http,
            aws: aws.clone(),
            settings,
            secrets,
            chosen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The model `choice` names, built on first use.
    fn chosen(&self, choice: &ModelChoice) -> std::sync::Arc<ChatModel<S>> {
        let mut chosen = match self.chosen.lock() {
            Ok(chosen) => chosen,
            Err(poisoned) => poisoned.into_inner(),
        };
        chosen
            .entry(choice.clone())
            .or_insert_with(|| {
                let settings = LlmSettings {
                    base_url: choice
                        .base_url
                        .clone()
                        .or_else(|| choice.provider.default_base_url().map(str::to_owned))
                        .unwrap_or_default(),
                    model: choice.model.clone(),
                    api_key_secret: choice.api_key_secret.clone(),
                    ..self.settings.clone()
                };
                std::sync::Arc::new(ChatModel::new(
                    choice.provider,
                    self.http.clone(),
                    &self.aws,
                    settings,
                    self.secrets.clone(),
                ))
            })
            .clone()
    }
}

impl<S: Secrets> Llm for ChatModels<S> {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, LlmError> {
        match &prompt.model {
            None => self.stack.complete(prompt, deadline).await,
            Some(choice) => self.chosen(choice).complete(prompt, deadline).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, text: &str) -> PromptTurn {
        PromptTurn {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn merges_consecutive_turns_and_starts_with_the_user() {
        let prompt = Prompt::new(
            "be kind",
            [
                turn(Role::Assistant, "orphan answer"),
                turn(Role::User, "a"),
                turn(Role::User, "b"),
                turn(Role::Assistant, "c"),
                turn(Role::User, "  "),
                turn(Role::User, "d"),
            ],
        );
        assert_eq!(
            prompt.turns,
            vec![
                turn(Role::User, "a\n\nb"),
                turn(Role::Assistant, "c"),
                turn(Role::User, "d")
            ]
        );
    }

    #[test]
    fn retries_only_what_can_succeed_later() {
        let status = |status| LlmError::Status {
            status,
            message: String::new(),
            retry_after: None,
        };
        for retried in [429, 500, 502, 503] {
            assert_eq!(
                status(retried).retry_hint(),
                RetryHint::Backoff,
                "{retried}"
            );
        }
        for final_status in [400, 401, 403, 404] {
            assert_eq!(
                status(final_status).retry_hint(),
                RetryHint::Never,
                "{final_status}"
            );
        }
        assert_eq!(LlmError::Timeout.retry_hint(), RetryHint::Backoff);
        assert_eq!(
            LlmError::Transport("refused".into()).retry_hint(),
            RetryHint::Backoff
        );
        assert_eq!(
            LlmError::NoAnswer("blocked".into()).retry_hint(),
            RetryHint::Never
        );
        let hinted = LlmError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            hinted.retry_hint(),
            RetryHint::After(Duration::from_secs(3))
        );
    }

    #[test]
    fn tells_why_a_request_was_refused_for_good() {
        let status = |status, message: &str| LlmError::Status {
            status,
            message: message.to_owned(),
            retry_after: None,
        };
        let cases = [
            (
                400,
                "Too long (type invalid_request_error, code context_length_exceeded)",
                Some(LlmRefusal::ContextTooLong),
            ),
            (
                400,
                "This model's maximum context length is 8192 tokens.",
                Some(LlmRefusal::ContextTooLong),
            ),
            (
                400,
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576). (INVALID_ARGUMENT)",
                Some(LlmRefusal::ContextTooLong),
            ),
            (
                400,
                "the request exceeds the available context size (type exceed_context_size_error)",
                Some(LlmRefusal::ContextTooLong),
            ),
            (413, "Payload Too Large", Some(LlmRefusal::ContextTooLong)),
            (
                400,
                "filtered (code content_filter)",
                Some(LlmRefusal::ContentFiltered),
            ),
            (
                400,
                "rejected (code content_policy_violation)",
                Some(LlmRefusal::ContentFiltered),
            ),
            (
                404,
                "The model `gpt-9` does not exist (type invalid_request_error, code model_not_found)",
                Some(LlmRefusal::UnknownModel),
            ),
            (
                404,
                "models/gemini-9 is not found for API version v1beta (NOT_FOUND)",
                Some(LlmRefusal::UnknownModel),
            ),
            (400, "unknown model 'x'", Some(LlmRefusal::UnknownModel)),
            (
                422,
                "messages: field required",
                Some(LlmRefusal::InvalidRequest),
            ),
            (
                400,
                "Invalid JSON payload (INVALID_ARGUMENT)",
                Some(LlmRefusal::InvalidRequest),
            ),
            (
                400,
                "API key not valid. Please pass a valid API key. (INVALID_ARGUMENT)",
                None,
            ),
            (401, "invalid key", None),
            (403, "model_not_found", None),
            (429, "context length", None),
            (500, "model_not_found", None),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                status(code, message).refusal(),
                expected,
                "{code} {message}"
            );
        }
        assert_eq!(LlmError::Timeout.refusal(), None);
        assert_eq!(LlmError::NoAnswer("blocked".into()).refusal(), None);
    }

    #[test]
    fn named_service_errors_carry_their_own_classification() {
        let service = |transient, refusal| LlmError::Service {
            code: "SomeException".into(),
            message: "m".into(),
            transient,
            refusal,
        };
        assert_eq!(service(true, None).retry_hint(), RetryHint::Backoff);
        assert_eq!(service(true, None).refusal(), None);
        assert_eq!(service(false, None).retry_hint(), RetryHint::Never);
        let denied = service(false, Some(LlmRefusal::AccessDenied));
        assert_eq!(denied.refusal(), Some(LlmRefusal::AccessDenied));
        assert_eq!(denied.retry_hint(), RetryHint::Never);
        assert!(denied.to_string().contains("SomeException: m"));
        let cases = [
            (
                "Input is too long for requested model.",
                LlmRefusal::ContextTooLong,
            ),
            (
                "Invocation of model ID x with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
                LlmRefusal::UnknownModel,
            ),
            (
                "The provided model identifier is invalid.",
                LlmRefusal::UnknownModel,
            ),
            (
                "Malformed input request: extraneous key [x]",
                LlmRefusal::InvalidRequest,
            ),
        ];
        for (message, refusal) in cases {
            assert_eq!(
                LlmError::invalid_request_refusal(message),
                refusal,
                "{message}"
            );
        }
    }

    #[test]
    fn reads_provider_names_in_any_case() {
        assert_eq!("openai".parse(), Ok(Provider::OpenAi));
        assert_eq!(" Gemini ".parse(), Ok(Provider::Gemini));
        assert_eq!("OPENAI".parse(), Ok(Provider::OpenAi));
        let error = "anthropic".parse::<Provider>().unwrap_err().to_string();
        assert!(error.contains("anthropic"), "{error}");
        assert!(error.contains("openai, gemini, bedrock"), "{error}");
        assert_eq!("Bedrock".parse(), Ok(Provider::Bedrock));
        for provider in Provider::ALL {
            assert_eq!(provider.to_string().parse(), Ok(provider));
        }
        assert_eq!(
            Provider::OpenAi.default_base_url(),
            Some("https://api.openai.com/v1")
        );
        assert_eq!(
            Provider::Gemini.default_base_url(),
            Some("https://generativelanguage.googleapis.com")
        );
        assert_eq!(Provider::Bedrock.default_base_url(), None);
        assert!(!Provider::Bedrock.needs_api_key() && Provider::Gemini.needs_api_key());
    }

    #[test]
    fn a_secrets_failure_is_not_retried() {
        let error = LlmError::Secrets(SecretsError::MissingKey("LLM_API_KEY"));
        assert_eq!(error.retry_hint(), RetryHint::Never);
        assert!(error.to_string().contains("LLM_API_KEY"));
    }
}
