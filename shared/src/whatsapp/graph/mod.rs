//! The [`WhatsApp`] port over Meta's Graph API: `POST /{version}/{phone_number_id}/messages`,
//! used both to mark a message read with the typing indicator and to send a text.
//!
//! Errors keep Meta's `error.code`, by which [`super::MetaErrorClass`] decides what is retried.
//! Logs name the recipient only masked, and never hold the access token or a message's text.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

mod media;

use super::{Recipient, WhatsApp, WhatsAppError};
use crate::outbound_http::{self, CallError};
use crate::privacy::mask;
use crate::retry::{self, Backoff};
use crate::secrets::{SecretString, Secrets};

/// Where the Graph API lives.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";

/// The time allowed for one call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Marking read is best effort, so it never waits longer than this, whatever the settings say.
const MARK_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest piece of a non-JSON error body kept in an error message.
const ERROR_SNIPPET_CHARS: usize = 200;

/// How [`GraphApi`] reaches the Graph API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSettings {
    /// The API's root, [`DEFAULT_BASE_URL`] in production (a local server in tests). A trailing
    /// `/` is ignored.
    pub base_url: String,
    /// The Graph API version in the path, such as `v23.0`.
    pub api_version: String,
    /// The time allowed for one HTTP call (marking read never takes more than 5 s).
    pub timeout: Duration,
    /// How sending a text is retried.
    pub backoff: Backoff,
}

impl GraphSettings {
    /// Settings for `api_version` on [`DEFAULT_BASE_URL`], with [`DEFAULT_TIMEOUT`] and the
    /// default [`Backoff`].
    pub fn new(api_version: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: api_version.into(),
            timeout: DEFAULT_TIMEOUT,
            backoff: Backoff::default(),
        }
    }
}

/// The [`WhatsApp`] port over Meta's Graph API, authenticated with the token of the business
/// number a call is made for (`META_ACCESS_TOKEN_<phone_number_id>`, else `META_ACCESS_TOKEN`)
/// from the application's secrets (read on each call, so that a rotated token is picked up).
pub struct GraphApi<S> {
    http: reqwest::Client,
    settings: GraphSettings,
    secrets: Arc<S>,
}

impl<S> GraphApi<S> {
    /// A client that sends through `http` (meant to be shared by all calls) as `settings` say,
    /// with the access token from `secrets`. Does no I/O.
    pub fn new(http: reqwest::Client, settings: GraphSettings, secrets: Arc<S>) -> Self {
        Self {
            http,
            settings,
            secrets,
        }
    }
}

impl<S> fmt::Debug for GraphApi<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secrets are left out whatever their own Debug does.
        f.debug_struct("GraphApi")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S: Secrets> GraphApi<S> {
    /// The access token of the business number `phone_number_id` (see
    /// [`crate::secrets::AppSecrets::access_token_for`]), or why there is none.
    async fn access_token(&self, phone_number_id: &str) -> Result<SecretString, WhatsAppError> {
        let secrets = self.secrets.current().await?;
        Ok(secrets.access_token_for(phone_number_id)?.clone())
    }
}

impl<S> GraphApi<S> {
    /// `{base_url}/{api_version}/{phone_number_id}/messages`, each segment percent-encoded so
    /// that an id cannot change the path.
    fn messages_url(&self, phone_number_id: &str) -> Result<Url, WhatsAppError> {
        self.graph_url(&[phone_number_id, "messages"])
    }

    /// `{base_url}/{api_version}/{segments…}`, each segment percent-encoded.
    fn graph_url(&self, segments: &[&str]) -> Result<Url, WhatsAppError> {
        let invalid = || {
            WhatsAppError::Transport(format!(
                "the Graph API base URL {:?} is not a valid http(s) URL",
                self.settings.base_url
            ))
        };
        let mut url = Url::parse(&self.settings.base_url).map_err(|_| invalid())?;
        url.path_segments_mut()
            .map_err(|()| invalid())?
            .pop_if_empty()
            .push(self.settings.api_version.trim_matches('/'))
            .extend(segments);
        Ok(url)
    }

    /// The timeout of the one mark-read attempt.
    fn mark_read_timeout(&self) -> Duration {
        self.settings.timeout.min(MARK_READ_TIMEOUT)
    }

    /// Posts `body` once, within the call's timeout and deadline, and reads the answer as `A`,
    /// or as Meta's error object when the status is not a success.
    async fn post<B, A>(&self, call: &Call<'_>, body: &B) -> Result<A, WhatsAppError>
    where
        B: Serialize + ?Sized,
        A: DeserializeOwned,
    {
        let outcome = self.post_unlogged(call, body).await;
        match &outcome {
            Ok(_) => tracing::debug!(
                call = call.name,
                to = call.masked_to,
                attempt = call.attempt,
                "the Graph API accepted the call"
            ),
            Err(failure) => tracing::warn!(
                call = call.name,
                to = call.masked_to,
                attempt = call.attempt,
                http_status = failure.http_status,
                meta_code = failure.error.code(),
                meta_subcode = failure.subcode,
                meta_type = failure.kind.as_deref(),
                fbtrace_id = failure.fbtrace_id.as_deref(),
                error = %failure.error,
                "the Graph API call failed"
            ),
        }
        outcome.map_err(|failure| failure.error)
    }

    async fn post_unlogged<B, A>(&self, call: &Call<'_>, body: &B) -> Result<A, Failure>
    where
        B: Serialize + ?Sized,
        A: DeserializeOwned,
    {
        let request = self
            .http
            .post(call.url.clone())
            .bearer_auth(call.token.expose())
            .json(body);
        let answer = outbound_http::send(request, call.timeout, call.deadline)
            .await
            .map_err(|e| Failure::from(call_error(e, call.token)))?;
        if !answer.is_success() {
            return Err(api_error(
                answer.status,
                answer.retry_after,
                &answer.body,
                call.token,
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            let message = outbound_http::describe_json_error(&e);
            let mut failure = Failure::from(WhatsAppError::BadResponse(message));
            failure.http_status = Some(answer.status);
            failure
        })
    }
}

impl<S: Secrets> WhatsApp for GraphApi<S> {
    async fn mark_read_and_typing(
        &self,
        phone_number_id: &str,
        message_id: &str,
    ) -> Result<(), WhatsAppError> {
        let token = self.access_token(phone_number_id).await?;
        let url = self.messages_url(phone_number_id)?;
        // Best effort: one attempt, whose own timeout is its deadline.
        let timeout = self.mark_read_timeout();
        let call = Call {
            name: "mark_read_and_typing",
            url: &url,
            token: &token,
            masked_to: None,
            attempt: 0,
            timeout,
            deadline: Instant::now() + timeout,
        };
        let body = MarkReadRequest {
            messaging_product: "whatsapp",
            status: "read",
            message_id,
            typing_indicator: TypingIndicator { kind: "text" },
        };
        let answer: SuccessResponse = self.post(&call, &body).await?;
        if answer.success {
            Ok(())
        } else {
            Err(WhatsAppError::BadResponse(
                "the answer to marking read did not report success".to_owned(),
            ))
        }
    }

    async fn send_text(
        &self,
        phone_number_id: &str,
        to: &Recipient,
        body: &str,
        deadline: Instant,
    ) -> Result<String, WhatsAppError> {
        let masked_to = mask(to.id());
        let outcome = async {
            if Instant::now() >= deadline {
                return Err(WhatsAppError::Timeout);
            }
            let token = self.access_token(phone_number_id).await?;
            let url = self.messages_url(phone_number_id)?;
            let request = SendTextRequest::new(to, body);
            let (url, token, request, masked_to) = (&url, &token, &request, masked_to.as_str());
            retry::retry(&self.settings.backoff, deadline, |attempt| async move {
                let call = Call {
                    name: "send_text",
                    url,
                    token,
                    masked_to: Some(masked_to),
                    attempt,
                    timeout: self.settings.timeout,
                    deadline,
                };
                // Meta accepted the message when it answered with a success: an answer that
                // cannot be read must not make the text go out twice.
                let answer: SendTextResponse = self
                    .post(&call, request)
                    .await
                    .map_err(accepted_unreadable)?;
                answer.message_id().ok_or_else(|| {
                    accepted_unreadable(WhatsAppError::BadResponse(
                        "the answer holds no message id".to_owned(),
                    ))
                })
            })
            .await
        }
        .await;
        match &outcome {
            Ok(message_id) => {
                tracing::info!(to = %masked_to, message_id = %message_id, "sent a text message");
            }
            Err(error) => tracing::warn!(
                to = %masked_to,
                class = ?error.class(),
                meta_code = error.code(),
                error = %error,
                "could not send a text message"
            ),
        }
        outcome
    }
}

/// What one HTTP call is, for the request and its log lines.
struct Call<'a> {
    name: &'static str,
    url: &'a Url,
    token: &'a SecretString,
    masked_to: Option<&'a str>,
    attempt: u32,
    /// The longest the call may take; it never runs past `deadline` either.
    timeout: Duration,
    deadline: Instant,
}

/// A failed call, with what Meta said beyond what [`WhatsAppError`] keeps, for the logs.
struct Failure {
    error: WhatsAppError,
    http_status: Option<u16>,
    subcode: Option<i64>,
    kind: Option<String>,
    fbtrace_id: Option<String>,
}

impl From<WhatsAppError> for Failure {
    fn from(error: WhatsAppError) -> Self {
        let http_status = match &error {
            WhatsAppError::Api { http_status, .. } => Some(*http_status),
            _ => None,
        };
        Self {
            error,
            http_status,
            subcode: None,
            kind: None,
            fbtrace_id: None,
        }
    }
}

/// The body that marks a message read and shows the typing indicator.
#[derive(Debug, Serialize)]
struct MarkReadRequest<'a> {
    messaging_product: &'static str,
    status: &'static str,
    message_id: &'a str,
    typing_indicator: TypingIndicator,
}

#[derive(Debug, Serialize)]
struct TypingIndicator {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The body that sends a text: to a phone number (`to`) or a user id (`recipient`). No `Debug`,
/// so that the user's text cannot end up in a log line by accident.
#[derive(Serialize)]
struct SendTextRequest<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    text: TextContent<'a>,
}

impl<'a> SendTextRequest<'a> {
    fn new(to: &'a Recipient, body: &'a str) -> Self {
        let (phone, user_id) = match to {
            Recipient::Phone(phone) => (Some(phone.as_str()), None),
            Recipient::UserId(user_id) => (None, Some(user_id.as_str())),
        };
        Self {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: phone,
            recipient: user_id,
            kind: "text",
            text: TextContent {
                preview_url: false,
                body,
            },
        }
    }
}

#[derive(Serialize)]
struct TextContent<'a> {
    preview_url: bool,
    body: &'a str,
}

/// `{"success": true}`.
#[derive(Debug, Deserialize)]
struct SuccessResponse {
    #[serde(default)]
    success: bool,
}

/// `{"messages": [{"id": "wamid…"}]}` (beside `contacts`, which is not read).
#[derive(Debug, Deserialize)]
struct SendTextResponse {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Debug, Deserialize)]
struct SentMessage {
    #[serde(default)]
    id: String,
}

impl SendTextResponse {
    fn message_id(self) -> Option<String> {
        self.messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .filter(|id| !id.trim().is_empty())
    }
}

/// `{"error": {…}}`, every field optional so that a partial object still yields its code.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: GraphErrorBody,
}

/// The object under `error` in a Graph API error answer.
#[derive(Debug, Deserialize)]
struct GraphErrorBody {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<i64>,
    error_subcode: Option<i64>,
    error_data: Option<ErrorData>,
    fbtrace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorData {
    details: Option<String>,
}

/// Reads an error answer: Meta's error object when the body is one, else a short excerpt of
/// whatever came back (a proxy's HTML page, say) with no code.
fn api_error(
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    token: &SecretString,
) -> Failure {
    let (code, message, details) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => {
            let details = error.error_data.and_then(|d| d.details);
            let message = error
                .message
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| format!("HTTP {http_status} without an error message"));
            let message = match details.as_deref().map(str::trim) {
                Some(details) if !details.is_empty() && details != message => {
                    format!("{message} ({details})")
                }
                _ => message,
            };
            (
                error.code,
                message,
                Some((error.error_subcode, error.kind, error.fbtrace_id)),
            )
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let (excerpt, _) = outbound_http::excerpt(text.trim(), ERROR_SNIPPET_CHARS);
            let message = if excerpt.is_empty() {
                format!("HTTP {http_status} with an empty body")
            } else {
                format!("HTTP {http_status} with a body that is not a Graph API error: {excerpt}")
            };
            (None, message, None)
        }
    };
    let (subcode, kind, fbtrace_id) = details.unwrap_or_default();
    Failure {
        error: WhatsAppError::Api {
            http_status,
            code,
            message: outbound_http::redact(&message, token.expose()),
            retry_after,
        },
        http_status: Some(http_status),
        subcode,
        kind,
        fbtrace_id,
    }
}

/// A success answer to a send that cannot be read: Meta took the message, so the send's
/// outcome counts as unknown (never resent), not as a failure.
fn accepted_unreadable(error: WhatsAppError) -> WhatsAppError {
    match error {
        WhatsAppError::BadResponse(detail) => WhatsAppError::OutcomeUnknown {
            timed_out: false,
            detail: format!("Meta accepted the call but its answer cannot be read: {detail}"),
        },
        other => other,
    }
}

/// A failure to reach the API or to read its answer, the access token removed should it show.
fn call_error(error: CallError, token: &SecretString) -> WhatsAppError {
    match error {
        CallError::Timeout => WhatsAppError::Timeout,
        CallError::Transport(text) => {
            WhatsAppError::Transport(outbound_http::redact(&text, token.expose()))
        }
        CallError::Unanswered { timed_out, detail } => WhatsAppError::OutcomeUnknown {
            timed_out,
            detail: outbound_http::redact(&detail, token.expose()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::MetaErrorClass;
    use serde_json::json;

    fn token() -> SecretString {
        SecretString::new("EAAtoken")
    }

    fn api(base_url: &str, timeout: Duration) -> GraphApi<()> {
        let mut settings = GraphSettings::new("v23.0");
        settings.base_url = base_url.to_owned();
        settings.timeout = timeout;
        GraphApi::new(reqwest::Client::new(), settings, Arc::new(()))
    }

    #[test]
    fn builds_the_messages_url_with_version_and_phone_number_id() {
        let url = |base: &str, id: &str| {
            api(base, DEFAULT_TIMEOUT)
                .messages_url(id)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("https://graph.facebook.com", "123"),
            "https://graph.facebook.com/v23.0/123/messages"
        );
        assert_eq!(
            url("https://graph.facebook.com/", "123"),
            "https://graph.facebook.com/v23.0/123/messages"
        );
        assert_eq!(
            url("http://127.0.0.1:9/meta/", "123"),
            "http://127.0.0.1:9/meta/v23.0/123/messages"
        );
        assert_eq!(
            url("https://graph.facebook.com", "1/../x"),
            "https://graph.facebook.com/v23.0/1%2F..%2Fx/messages",
            "an id cannot change the path"
        );
        assert!(matches!(
            api("not a url", DEFAULT_TIMEOUT).messages_url("1"),
            Err(WhatsAppError::Transport(_))
        ));
    }

    #[test]
    fn marking_read_waits_at_most_five_seconds() {
        let short = Duration::from_secs(2);
        assert_eq!(api(DEFAULT_BASE_URL, short).mark_read_timeout(), short);
        assert_eq!(
            api(DEFAULT_BASE_URL, Duration::from_secs(30)).mark_read_timeout(),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn default_settings_point_at_graph_facebook_com() {
        let settings = GraphSettings::new("v23.0");
        assert_eq!(settings.base_url, "https://graph.facebook.com");
        assert_eq!(settings.api_version, "v23.0");
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.backoff, Backoff::default());
    }

    #[test]
    fn request_bodies_have_meta_s_shape() {
        let body = serde_json::to_value(SendTextRequest::new(
            &Recipient::Phone("15551234567".into()),
            "hi",
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "15551234567", "type": "text",
                   "text": {"preview_url": false, "body": "hi"}})
        );
        let body = serde_json::to_value(SendTextRequest::new(
            &Recipient::UserId("US.1".into()),
            "hi",
        ))
        .unwrap();
        assert_eq!(body["recipient"], "US.1");
        assert!(body.get("to").is_none());
    }

    #[test]
    fn reads_meta_s_error_object() {
        let body = json!({"error": {
            "message": "(#131047) Re-engagement message",
            "type": "OAuthException",
            "code": 131047,
            "error_subcode": 2494010,
            "error_data": {"messaging_product": "whatsapp",
                           "details": "Message failed to send because more than 24 hours have passed"},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"
        }});
        let failure = api_error(
            400,
            Some(Duration::from_secs(3)),
            body.to_string().as_bytes(),
            &token(),
        );
        assert_eq!(
            failure.error,
            WhatsAppError::Api {
                http_status: 400,
                code: Some(131_047),
                message: "(#131047) Re-engagement message (Message failed to send because more \
                          than 24 hours have passed)"
                    .into(),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        assert_eq!(failure.error.class(), MetaErrorClass::OutsideWindow);
        assert_eq!(failure.subcode, Some(2_494_010));
        assert_eq!(failure.kind.as_deref(), Some("OAuthException"));
        assert_eq!(
            failure.fbtrace_id.as_deref(),
            Some("Az8or2yhqkZfEZ-_4Qn_Bam")
        );
    }

    #[test]
    fn tolerates_error_bodies_that_are_not_meta_s() {
        let failure = api_error(502, None, b"<html>Bad Gateway</html>", &token());
        let WhatsAppError::Api { code, message, .. } = &failure.error else {
            panic!("{:?}", failure.error);
        };
        assert_eq!(*code, None);
        assert!(message.contains("Bad Gateway"), "{message}");
        assert_eq!(failure.error.class(), MetaErrorClass::Transient);

        let failure = api_error(400, None, b"", &token());
        assert_eq!(failure.error.code(), None);
        assert_eq!(failure.error.class(), MetaErrorClass::Other);

        let long = "x".repeat(10_000);
        let failure = api_error(500, None, long.as_bytes(), &token());
        assert!(failure.error.to_string().len() < 400);

        // A partial error object still yields its code.
        let failure = api_error(400, None, br#"{"error": {"code": 130429}}"#, &token());
        assert_eq!(failure.error.class(), MetaErrorClass::RateLimited);
    }

    proptest::proptest! {
        /// Whatever Meta (or a proxy) answers, the error is read without panicking, and its
        /// class follows the code read.
        #[test]
        fn any_error_body_reads_without_panicking(
            status in 0u16..1000,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            seconds in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let retry_after = seconds.map(Duration::from_secs);
            let failure = api_error(status, retry_after, &body, &token());
            let class = failure.error.class();
            proptest::prop_assert_eq!(class, MetaErrorClass::of(failure.error.code(), status));
            let _ = failure.error.to_string();
        }

        /// An error object with any code and message is read with that code.
        #[test]
        fn any_error_object_keeps_its_code(code: i64, message in "\\PC{0,100}") {
            let body = serde_json::json!({"error": {"code": code, "message": message}});
            let failure = api_error(400, None, body.to_string().as_bytes(), &token());
            proptest::prop_assert_eq!(failure.error.code(), Some(code));
        }
    }

    #[test]
    fn an_echoed_token_is_redacted() {
        let body = json!({"error": {"message": "Malformed access token EAAtoken", "code": 190}});
        let failure = api_error(401, None, body.to_string().as_bytes(), &token());
        assert!(!failure.error.to_string().contains("EAAtoken"));
        assert!(!format!("{:?}", failure.error).contains("EAAtoken"));
        let failure = api_error(502, None, b"proxy saw Bearer EAAtoken", &token());
        assert!(!failure.error.to_string().contains("EAAtoken"));
    }

    #[test]
    fn reads_the_message_id() {
        let answer: SendTextResponse = serde_json::from_value(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": "15551234567", "wa_id": "15551234567"}],
            "messages": [{"id": "wamid.HBgL"}]
        }))
        .unwrap();
        assert_eq!(answer.message_id().as_deref(), Some("wamid.HBgL"));
        for body in [
            json!({}),
            json!({"messages": []}),
            json!({"messages": [{"id": ""}]}),
        ] {
            let answer: SendTextResponse = serde_json::from_value(body).unwrap();
            assert_eq!(answer.message_id(), None);
        }
    }
}
