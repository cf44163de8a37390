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
    /// The deadline had passed before the call: nothing was sent.
    Timeout,
    /// No connection could be made (refused, unreachable, connect timeout): nothing was sent.
    /// The text names the causes, not the URL.
    Transport(String),
    /// The request may have reached the API, but no answer was read: it timed out
    /// (`timed_out`) or the connection failed once it was made. Whether the API acted on it
    /// is unknown.
    Unanswered {
        /// Whether the call ran out of time, rather than losing its connection.
        timed_out: bool,
        /// The causes, without the URL.
        detail: String,
    },
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
    // The request's timeout covers reading the body too. An error status is an answer even
    // when its body is lost: the API refused the request.
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(_) if !(200..300).contains(&status) => Default::default(),
        Err(error) => return Err(call_error(error)),
    };
    Ok(Answer {
        status,
        retry_after,
        body: body.to_vec(),
    })
}

/// A failure described by its causes, without the URL: reqwest's own message is generic
/// ("error sending request"), the cause is in the chain. Only a failure to connect (or to build
/// the request) surely sent nothing; any other may have reached the API.
pub(crate) fn call_error(error: reqwest::Error) -> CallError {
    let sent_nothing = error.is_connect() || error.is_builder();
    let timed_out = error.is_timeout();
    let detail = describe(error);
    match (sent_nothing, timed_out) {
        (true, _) => CallError::Transport(detail),
        (false, timed_out) => CallError::Unanswered { timed_out, detail },
    }
}

/// The error and its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
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

    #[tokio::test]
    async fn a_refused_connection_surely_sent_nothing() {
        // Nothing listens on the discard port: the connection is refused.
        let request = reqwest::Client::new().get("http://127.0.0.1:9/");
        let far = Instant::now() + Duration::from_secs(30);
        let result = send(request, Duration::from_secs(5), far)
            .await
            .map(|answer| answer.status);
        assert!(matches!(result, Err(CallError::Transport(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_request_that_got_no_answer_in_time_is_unanswered() {
        // A listener that accepts the connection and the request but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let request = reqwest::Client::new().post(format!("http://{address}/"));
        let far = Instant::now() + Duration::from_secs(30);
        let result = send(request, Duration::from_millis(200), far)
            .await
            .map(|answer| answer.status);
        server.abort();
        assert!(
            matches!(
                result,
                Err(CallError::Unanswered {
                    timed_out: true,
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_lost_after_the_request_is_unanswered() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            drop(socket);
        });
        let request = reqwest::Client::new().post(format!("http://{address}/"));
        let far = Instant::now() + Duration::from_secs(30);
        let result = send(request, Duration::from_secs(5), far)
            .await
            .map(|answer| answer.status);
        server.await.unwrap();
        assert!(
            matches!(
                result,
                Err(CallError::Unanswered {
                    timed_out: false,
                    ..
                })
            ),
            "{result:?}"
        );
    }
}
