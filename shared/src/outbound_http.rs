//! One HTTP call to an outside API (an LLM provider, Meta's Graph API), made the same way by
//! every adapter: bounded by the per-call timeout and the caller's deadline, the whole answer
//! read, and failures described without the URL, a secret, or a quote of the body.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use tokio::time::Instant;

use crate::retry::parse_retry_after;

/// What replaces a secret in text that came from outside.
const REDACTED: &str = "<redacted>";

/// What the API answered, before the adapter interprets it.
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, when there was a readable one.
    pub retry_after: Option<Duration>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is a success.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why no answer could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No answer within the timeout, or the deadline had passed.
    Timeout,
    /// The connection failed; the text names the causes, not the URL.
    Transport(String),
}

/// Sends `request` with a timeout of `timeout` or the time left before `deadline`, whichever is
/// shorter, and reads the status, `Retry-After` and the whole body within it. Nothing is sent
/// once the deadline has passed.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    deadline: Instant,
) -> Result<Answer, CallError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(CallError::Timeout);
    }
    let response = request
        .timeout(timeout.min(left))
        .send()
        .await
        .map_err(call_error)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    // The request's timeout covers reading the body too.
    let body = response.bytes().await.map_err(call_error)?;
    Ok(Answer {
        status,
        retry_after,
        body: body.to_vec(),
    })
}

/// A timeout, or a transport failure described by its causes, without the URL: reqwest's own
/// message is generic ("error sending request"), the cause is in the chain.
fn call_error(error: reqwest::Error) -> CallError {
    if error.is_timeout() {
        return CallError::Timeout;
    }
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    CallError::Transport(message)
}

/// `text` with every occurrence of `secret` replaced, should an API echo it. An empty secret
/// leaves the text as it is.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, REDACTED)
    }
}

/// `text` cut to its first `max_chars` characters, and whether anything was cut.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

/// Why a body is not the expected JSON, without quoting it: serde's messages may quote values,
/// and those could be the user's words or phone number.
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        error.classify(),
        error.line(),
        error.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_occurrence_of_a_secret() {
        assert_eq!(
            redact("key sk-1, again sk-1.", "sk-1"),
            "key <redacted>, again <redacted>."
        );
        assert_eq!(redact("nothing to hide", "sk-1"), "nothing to hide");
        assert_eq!(redact("an empty secret", ""), "an empty secret");
    }

    #[test]
    fn excerpts_cut_at_a_character_boundary() {
        assert_eq!(excerpt("short", 10), ("short", false));
        assert_eq!(excerpt("exactly", 7), ("exactly", false));
        assert_eq!(excerpt("éèêë", 2), ("éè", true));
        assert_eq!(excerpt("", 0), ("", false));
    }

    #[test]
    fn a_bad_body_is_described_without_quoting_it() {
        let error = serde_json::from_str::<Vec<u32>>(r#"["15551234567"]"#).unwrap_err();
        assert!(error.to_string().contains("15551234567"), "serde quotes it");
        let described = describe_json_error(&error);
        assert!(!described.contains("15551234567"), "{described}");
        assert!(described.contains("line 1"), "{described}");
    }

    #[tokio::test]
    async fn sends_nothing_once_the_deadline_has_passed() {
        // Nothing listens on the discard port; a request would fail as Transport, not Timeout.
        let request = reqwest::Client::new().get("http://127.0.0.1:9/");
        let result = send(request, Duration::from_secs(5), Instant::now()).await;
        assert!(matches!(result, Err(CallError::Timeout)));
    }
}
