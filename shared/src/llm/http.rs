//! What both providers do around their HTTP calls: retry attempts within the deadline, send
//! each through [`outbound_http`](crate::outbound_http), turn failures into [`LlmError`]s
//! without secrets in them, and log each outcome.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{Completion, LlmError, LlmSettings};
use crate::outbound_http::{self, Answer, CallError};
use crate::retry::retry;
use crate::secrets::{AppSecrets, SecretString, Secrets};

/// A provider's error message is cut to this many characters, so that a long body (an HTML
/// page from a proxy, an echo of the request) does not flood the logs.
const MAX_MESSAGE_CHARS: usize = 300;

impl From<CallError> for LlmError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Timeout => Self::Timeout,
            CallError::Transport(message) => Self::Transport(message),
            // Asking again has no effect but the cost: an unanswered call is a plain failure.
            CallError::Unanswered {
                timed_out: true, ..
            } => Self::Timeout,
            CallError::Unanswered { detail, .. } => Self::Transport(detail),
        }
    }
}

/// Who is being called, for the logs.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    /// `openai`, `gemini` or `bedrock`.
    pub provider: &'static str,
    /// The model's name.
    pub model: &'a str,
}

/// Reads the secrets, giving up at `deadline`.
pub(super) async fn read_secrets<S: Secrets>(
    secrets: &S,
    deadline: Instant,
) -> Result<Arc<AppSecrets>, LlmError> {
    match tokio::time::timeout_at(deadline, secrets.current()).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LlmError::Timeout),
    }
}

/// A header value holding `prefix` and the key, marked sensitive so that it is never shown in
/// a `Debug` of the request. Surrounding blanks are dropped, as a pasted key often ends with a
/// newline that no header may hold.
pub(super) fn key_header(prefix: &str, key: &SecretString) -> Result<HeaderValue, LlmError> {
    let mut value = HeaderValue::try_from(format!("{prefix}{}", key.expose().trim()))
        // The error would not show the key, but says nothing useful either.
        .map_err(|_| {
            LlmError::Transport("the API key has characters a header cannot hold".to_owned())
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `request` as a JSON body, serialized once for every attempt into a buffer sized by `hint`
/// (a request with files is mostly their base64: growing a buffer by doubling would hold up to
/// three times that at once).
pub(super) fn json_body<T: serde::Serialize>(
    request: &T,
    hint: usize,
) -> Result<bytes::Bytes, LlmError> {
    let mut body = Vec::with_capacity(hint);
    serde_json::to_writer(&mut body, request)
        .map_err(|e| LlmError::Transport(format!("the request could not be written: {e}")))?;
    Ok(body.into())
}

/// Calls `provider` as `settings` say, retrying transient failures, never past `deadline`: each
/// attempt sends what `request` builds and reads the answer with `read`.
pub(super) async fn call(
    provider: &'static str,
    settings: &LlmSettings,
    deadline: Instant,
    request: impl Fn() -> reqwest::RequestBuilder,
    read: impl Fn(Answer) -> Result<Completion, LlmError>,
) -> Result<Completion, LlmError> {
    let target = Target {
        provider,
        model: &settings.model,
    };
    retry(&settings.backoff, deadline, |number| {
        attempt(target, number, request(), settings.timeout, deadline, &read)
    })
    .await
}

/// Sends one attempt, interprets its answer with `interpret`, and logs the outcome with its
/// status and latency (never the prompt, the answer or the key).
async fn attempt(
    target: Target<'_>,
    number: u32,
    request: reqwest::RequestBuilder,
    timeout: Duration,
    deadline: Instant,
    interpret: impl FnOnce(Answer) -> Result<Completion, LlmError>,
) -> Result<Completion, LlmError> {
    let started = Instant::now();
    let answer = outbound_http::send(request, timeout, deadline).await;
    let status = answer.as_ref().ok().map(|a| a.status);
    let result = answer.map_err(LlmError::from).and_then(interpret);
    log_attempt(target, number, status, started, &result);
    result
}

/// Logs one attempt's outcome with its status and the time since `started` (never the prompt,
/// the answer or the key).
pub(super) fn log_attempt(
    target: Target<'_>,
    number: u32,
    status: Option<u16>,
    started: Instant,
    result: &Result<Completion, LlmError>,
) {
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(completion) => tracing::info!(
            provider = target.provider,
            model = target.model,
            attempt = number,
            status,
            latency_ms,
            input_tokens = completion.input_tokens,
            output_tokens = completion.output_tokens,
            "LLM answered"
        ),
        Err(error) => tracing::warn!(
            provider = target.provider,
            model = target.model,
            attempt = number,
            status,
            latency_ms,
            error = %error,
            "LLM attempt failed"
        ),
    }
}

/// The body of a successful answer, read as `T`. An error answer is an [`LlmError::Status`]
/// with the message `error_message` finds in its body.
pub(super) fn read_success<T: DeserializeOwned>(
    answer: Answer,
    error_message: impl FnOnce(&[u8]) -> String,
) -> Result<T, LlmError> {
    if !answer.is_success() {
        return Err(LlmError::Status {
            status: answer.status,
            message: error_message(&answer.body),
            retry_after: answer.retry_after,
        });
    }
    serde_json::from_slice(&answer.body).map_err(|e| unreadable(&e))
}

/// Why a 2xx body could not be read, without quoting it: serde's messages may quote values,
/// and those could be the user's words.
fn unreadable(error: &serde_json::Error) -> LlmError {
    LlmError::BadResponse(outbound_http::describe_json_error(error))
}

/// A provider's error message made fit for an error and a log: the key removed, should the
/// provider echo it, blanks collapsed, and cut to [`MAX_MESSAGE_CHARS`].
pub(super) fn clean_message(message: &str, key: Option<&SecretString>) -> String {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let message = outbound_http::redact(&message, key.map_or("", |k| k.expose().trim()));
    match outbound_http::excerpt(&message, MAX_MESSAGE_CHARS) {
        (kept, true) => format!("{kept}…"),
        (_, false) => message,
    }
}

/// The message for an error body that is not the provider's JSON error: its text, or its size
/// when it has none.
pub(super) fn unstructured_message(body: &[u8], key: Option<&SecretString>) -> String {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        format!("no error message ({} bytes)", body.len())
    } else {
        clean_message(&text, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaned_messages_hold_no_key_and_stay_short() {
        let key = SecretString::new("sk-secret\n");
        assert_eq!(
            clean_message("bad key  sk-secret\n given", Some(&key)),
            "bad key <redacted> given"
        );
        let long = "é".repeat(1000);
        let cleaned = clean_message(&long, None);
        assert_eq!(cleaned.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cleaned.ends_with('…'));
        assert_eq!(
            unstructured_message(b"", None),
            "no error message (0 bytes)"
        );
        assert_eq!(
            unstructured_message(b"<h1>Bad Gateway</h1>", None),
            "<h1>Bad Gateway</h1>"
        );
    }

    #[test]
    fn key_headers_are_sensitive_and_trimmed() {
        let value = key_header("Bearer ", &SecretString::new(" k1 \n")).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer k1");
        assert!(matches!(
            key_header("", &SecretString::new("a\nb")),
            Err(LlmError::Transport(m)) if !m.contains("a\nb")
        ));
    }

    #[test]
    fn unreadable_bodies_are_not_quoted() {
        let error = serde_json::from_str::<u32>(r#""my private words""#).unwrap_err();
        let LlmError::BadResponse(message) = unreadable(&error) else {
            panic!("not a BadResponse");
        };
        assert!(!message.contains("private"), "{message}");
    }
}
