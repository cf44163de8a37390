//! Running the model's tool calls over HTTP, safely: see the module [`crate::tools`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use tokio::time::Instant;

use super::file::{HeaderSource, Tool, Tools};
use super::url::FillError;
use super::{ToolCall, ToolOutcome, idempotency_key};
use crate::log_event::LogEvent;
use crate::secrets::AppSecrets;

/// The most of a tool's answer that is read; the rest is left unread.
pub const READ_LIMIT: usize = 16 * 1024;

/// The most of a tool's answer, in bytes, that goes back to the model (then a marker).
pub const CONTENT_LIMIT: usize = 8 * 1024;

/// The most of an error answer's body that goes back to the model with the error.
const ERROR_BODY_LIMIT: usize = 1024;

/// The most of a description of invalid arguments that goes back to the model.
const PROBLEMS_LIMIT: usize = 1024;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Runs the model's tool calls.
pub trait ToolRunner: Send + Sync {
    /// Runs `call`, with `idempotency_key` sent when the tool has side effects, giving up at
    /// `deadline`. Never fails: a failure is an error outcome that tells the model why.
    fn run(
        &self,
        call: &ToolCall,
        idempotency_key: &str,
        deadline: Instant,
    ) -> impl Future<Output = ToolOutcome> + Send;

    /// Runs the calls of round `round` (from 0) of the burst whose message is `message_id`,
    /// concurrently, each with the [`idempotency_key`] of its position; the outcomes are in
    /// the calls' order.
    fn run_round(
        &self,
        calls: &[ToolCall],
        message_id: &str,
        round: u32,
        deadline: Instant,
    ) -> impl Future<Output = Vec<ToolOutcome>> + Send {
        let runs = calls.iter().enumerate().map(move |(position, call)| {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let key = idempotency_key(message_id, round, position);
            async move { self.run(call, &key, deadline).await }
        });
        futures_util::future::join_all(runs)
    }
}

/// Sets what the tools' HTTP client needs on `builder`: no redirect is followed (a redirect
/// could take a secret header to another host; reqwest follows up to 10 by default). Build the
/// client given to [`HttpTools::new`] with it, once, and reuse it.
pub fn configure_client(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.redirect(reqwest::redirect::Policy::none())
}

/// `{"error": message}`: an error result as the model reads it.
pub fn error_content(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// [`ToolRunner`] over HTTP: the tools of one version of the tools file, the app secrets for
/// their secret headers, and a client built with [`configure_client`].
pub struct HttpTools {
    client: reqwest::Client,
    tools: Arc<Tools>,
    secrets: Arc<AppSecrets>,
}

impl HttpTools {
    /// Runs `tools` with `client` (which must not follow redirects: see [`configure_client`];
    /// a redirect it followed anyway is an error result) and `secrets`. No I/O.
    pub fn new(client: reqwest::Client, tools: Arc<Tools>, secrets: Arc<AppSecrets>) -> Self {
        Self {
            client,
            tools,
            secrets,
        }
    }

    /// The tool's answer, or why there is none.
    async fn call(&self, call: &ToolCall, key: &str, deadline: Instant) -> Result<Answer, Failure> {
        let tool = self.tools.get(&call.name).ok_or(Failure::UnknownTool)?;
        let arguments = checked_arguments(tool, &call.arguments)?;
        let url = tool.url.fill(&arguments).map_err(Failure::Url)?;
        let headers = self.headers(tool, key)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::NoTime);
        }
        let timeout = tool.timeout.min(left);
        let mut request = self
            .client
            .request(tool.method.clone(), url.clone())
            .headers(headers)
            .timeout(timeout);
        if has_body(&tool.method) {
            let mut body = arguments;
            for name in tool.url.placeholders() {
                body.remove(name);
            }
            let body = serde_json::to_vec(&body).map_err(|_| Failure::Body)?;
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| sent_error(&e, timeout))?;
        read(response, &url, timeout).await
    }

    /// The tool's headers: literal ones, secret ones (marked sensitive) and, for a tool with
    /// side effects, the `Idempotency-Key`.
    fn headers(&self, tool: &Tool, key: &str) -> Result<HeaderMap, Failure> {
        let mut headers = HeaderMap::new();
        for (name, source) in &tool.headers {
            let value = match source {
                HeaderSource::Literal(value) => value.clone(),
                HeaderSource::Secret(secret) => {
                    let value = self
                        .secrets
                        .get(secret)
                        .ok_or_else(|| Failure::MissingSecret(secret.clone()))?;
                    let mut value = HeaderValue::from_str(value.expose().trim())
                        .map_err(|_| Failure::BadSecret(secret.clone()))?;
                    value.set_sensitive(true);
                    value
                }
            };
            headers.insert(name.clone(), value);
        }
        if tool.side_effects {
            let value = HeaderValue::from_str(key).map_err(|_| Failure::BadKey)?;
            headers.insert(IDEMPOTENCY_KEY, value);
        }
        Ok(headers)
    }
}

impl ToolRunner for HttpTools {
    async fn run(&self, call: &ToolCall, idempotency_key: &str, deadline: Instant) -> ToolOutcome {
        let started = Instant::now();
        let result = self.call(call, idempotency_key, deadline).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The model chose the name: logged only when it is a declared tool's.
        let tool = match self.tools.get(&call.name) {
            Some(tool) => tool.declaration.name.as_str(),
            None => "(unknown)",
        };
        let (content, is_error, status) = match result {
            Ok(answer) => {
                tracing::info!(
                    event = LogEvent::ToolCalled.as_str(),
                    tool,
                    status = answer.status,
                    elapsed_ms,
                    cut = answer.cut,
                    "tool called"
                );
                (answer.content, false, Some(answer.status))
            }
            Err(failure) => {
                let status = failure.status();
                // A key's name, not its value: which secret the operator must add.
                let secret_key = match &failure {
                    Failure::MissingSecret(key) | Failure::BadSecret(key) => Some(key.as_str()),
                    _ => None,
                };
                tracing::warn!(
                    event = LogEvent::ToolFailed.as_str(),
                    tool,
                    kind = failure.kind(),
                    status,
                    secret_key,
                    elapsed_ms,
                    "tool call failed; the model gets an error result"
                );
                (failure.content(), true, status)
            }
        };
        ToolOutcome {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content,
            is_error,
            status,
            elapsed_ms,
        }
    }
}

/// A tool's successful answer, for the model.
struct Answer {
    status: u16,
    content: String,
    cut: bool,
}

/// Why a call gave no successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// No tool has the name the model used.
    UnknownTool,
    /// The arguments do not satisfy the schema: the problems, for the model.
    InvalidArguments(String),
    /// An argument could not fill the URL.
    Url(FillError),
    /// The app secret has no value for this key.
    MissingSecret(String),
    /// The secret's value cannot be a header value.
    BadSecret(String),
    /// The idempotency key cannot be a header value.
    BadKey,
    /// The body could not be serialized.
    Body,
    /// The deadline had passed: nothing was sent.
    NoTime,
    /// No answer within the timeout.
    Timeout(Duration),
    /// No connection, or it failed.
    Transport,
    /// The tool answered with a redirect, which is not followed.
    Redirect(u16),
    /// The answer is not UTF-8 text.
    NotText(u16),
    /// An error status, with the start of the body.
    Status(u16, String),
}

impl Failure {
    /// The kind, for the logs (never the arguments or the answer).
    fn kind(&self) -> &'static str {
        match self {
            Self::UnknownTool => "unknown_tool",
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::Url(_) => "invalid_url_argument",
            Self::MissingSecret(_) => "missing_secret",
            Self::BadSecret(_) => "invalid_secret",
            Self::BadKey => "invalid_idempotency_key",
            Self::Body => "invalid_body",
            Self::NoTime => "no_time_left",
            Self::Timeout(_) => "timeout",
            Self::Transport => "transport",
            Self::Redirect(_) => "redirect",
            Self::NotText(_) => "not_text",
            Self::Status(..) => "error_status",
        }
    }

    /// The HTTP status, when the tool answered.
    fn status(&self) -> Option<u16> {
        match self {
            Self::Redirect(status) | Self::NotText(status) | Self::Status(status, _) => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The error result for the model.
    fn content(&self) -> String {
        match self {
            Self::UnknownTool => error_content("there is no tool of that name"),
            Self::InvalidArguments(problems) => {
                error_content(&format!("invalid arguments: {problems}"))
            }
            Self::Url(error) => error_content(&error.to_string()),
            Self::MissingSecret(_) | Self::BadSecret(_) | Self::BadKey | Self::Body => {
                error_content(
                    "the tool is not available right now (its configuration is incomplete)",
                )
            }
            Self::NoTime => error_content("there was no time left to call the tool"),
            Self::Timeout(timeout) => error_content(&format!(
                "the tool did not answer within {} seconds",
                timeout.as_secs_f32()
            )),
            Self::Transport => error_content("the tool could not be reached"),
            Self::Redirect(status) => error_content(&format!(
                "the tool answered with a redirect (HTTP {status}), which is not followed"
            )),
            Self::NotText(status) => error_content(&format!(
                "the tool's answer (HTTP {status}) is not UTF-8 text"
            )),
            Self::Status(status, body) => serde_json::json!({
                "error": format!("the tool answered with HTTP status {status}"),
                "status": status,
                "body": body,
            })
            .to_string(),
        }
    }
}

/// The call's arguments as an object (`null` as `{}`), checked against the tool's schema.
fn checked_arguments(
    tool: &Tool,
    arguments: &serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
    let arguments = match arguments {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        other => other.clone(),
    };
    let problems: Vec<String> = tool
        .validator
        .iter_errors(&arguments)
        .take(3)
        .map(|error| match error.instance_path().to_string() {
            path if path.is_empty() => error.to_string(),
            path => format!("{path}: {error}"),
        })
        .collect();
    if !problems.is_empty() {
        let problems = problems.join("; ");
        return Err(Failure::InvalidArguments(
            within(&problems, PROBLEMS_LIMIT).0.to_owned(),
        ));
    }
    match arguments {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(Failure::InvalidArguments(
            "the arguments must be a JSON object".into(),
        )),
    }
}

/// Whether the method carries the arguments in a JSON body.
fn has_body(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH].contains(method)
}

/// A failed send: out of time, or no connection.
fn sent_error(error: &reqwest::Error, timeout: Duration) -> Failure {
    if error.is_timeout() {
        Failure::Timeout(timeout)
    } else {
        Failure::Transport
    }
}

/// The answer's status and its body, read up to [`READ_LIMIT`], as content for the model.
async fn read(
    mut response: reqwest::Response,
    sent: &Url,
    timeout: Duration,
) -> Result<Answer, Failure> {
    let status = response.status().as_u16();
    if (300..400).contains(&status) || response.url() != sent {
        return Err(Failure::Redirect(status));
    }
    let mut body = Vec::new();
    let mut over = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| sent_error(&e, timeout))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > READ_LIMIT {
            body.truncate(READ_LIMIT);
            over = true;
            break;
        }
    }
    let text = decode(&body, over).ok_or(Failure::NotText(status))?;
    if !(200..300).contains(&status) {
        let (head, _) = within(text, ERROR_BODY_LIMIT);
        return Err(Failure::Status(status, head.to_owned()));
    }
    let (head, cut) = within(text, CONTENT_LIMIT);
    let cut = cut || over;
    let content = if cut {
        format!("{head}\n[cut: the tool's answer was longer than {CONTENT_LIMIT} bytes]")
    } else {
        head.to_owned()
    };
    Ok(Answer {
        status,
        content,
        cut,
    })
}

/// The body as text; when it was cut at the read limit, a character cut in two at its end is
/// dropped.
fn decode(body: &[u8], over: bool) -> Option<&str> {
    match std::str::from_utf8(body) {
        Ok(text) => Some(text),
        Err(error) if over && error.error_len().is_none() => {
            std::str::from_utf8(&body[..error.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

/// `text` cut to at most `max_bytes` at a character boundary, and whether it was cut.
fn within(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_boundary() {
        assert_eq!(within("short", 10), ("short", false));
        assert_eq!(within("ééé", 3), ("é", true));
    }

    #[test]
    fn a_character_cut_by_the_read_limit_is_dropped_but_bad_text_is_refused() {
        let body = "aé".as_bytes();
        assert_eq!(decode(&body[..2], true), Some("a"));
        assert_eq!(decode(&body[..2], false), None);
        assert_eq!(decode(&[0xff, b'a'], true), None);
    }

    #[test]
    fn error_results_are_json_the_model_reads() {
        let content = Failure::Status(500, "down".into()).content();
        let value: serde_json::Value = serde_json::from_str(&content).unwrap();
        assert_eq!(value["status"], 500);
        assert_eq!(value["body"], "down");
        let missing = Failure::MissingSecret("SHOP_API_KEY".into()).content();
        assert!(!missing.contains("SHOP_API_KEY"), "{missing}");
        assert_eq!(error_content("x"), r#"{"error":"x"}"#);
    }
}
