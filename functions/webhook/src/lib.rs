//! The webhook function: Meta's `GET` verification handshake, and `POST` deliveries whose
//! inbound messages go to the FIFO queue after the signature is checked.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET` with `hub.mode=subscribe` and the right `hub.verify_token` | 200, the `hub.challenge` as `text/plain` |
//! | `GET` otherwise | 403 |
//! | `POST` over 4 MiB | 413, before anything else (Meta sends at most 3 MB) |
//! | `POST` with a missing, malformed or wrong signature | 401, nothing queued |
//! | `POST` of signed bytes that are not JSON, even read leniently | 400 |
//! | `POST` of signed JSON | 200 once every inbound message, every `failed` status of a message to a user, and every Business app echo is queued; other statuses and shapes are logged |
//! | the queue refuses any message, or the secret cannot be read | 500, so that Meta delivers again (the other messages are queued all the same) |
//! | any other method | 405 |

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use shared::env_config::{ConfigError, Env};
use shared::log_event::LogEvent;
use shared::meta::notification::{self, Delivery, ParseError, Skipped};
use shared::meta::signature::{self, SIGNATURE_HEADER, SignatureError};
use shared::privacy::mask;
use shared::queue::{self as queue, MessageQueue, QueueEntry, QueueError};
use shared::queue_body::{BusinessEcho, DeliveryFailure};
use shared::secrets::{DEFAULT_REFRESH, Secrets, SecretsError};
use shared::whatsapp::MetaErrorClass;

/// Bodies larger than this are refused with 413 before any hashing or parsing. Meta documents
/// webhook payloads of up to 3 MB; API Gateway takes 10 MB and Lambda 6 MB, which holds 4 MiB
/// even base64-encoded.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Every environment variable [`Config::from`] reads.
pub const VARIABLES: &[&str] = &["QUEUE_URL", "SECRET_ID", "SECRETS_REFRESH_SECONDS"];

/// The webhook's configuration, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `QUEUE_URL`: the FIFO queue inbound messages go to.
    pub queue_url: String,
    /// `SECRET_ID`: the Secrets Manager secret (name or ARN) holding the app secret and verify token.
    pub secret_id: String,
    /// `SECRETS_REFRESH_SECONDS`: how long secrets are cached (default 300).
    pub secrets_refresh: Duration,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(&Env::process())
    }

    /// Reads the configuration from `env`.
    pub fn from<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let queue_url = env.required("QUEUE_URL")?;
        if !queue_url.ends_with(".fifo") {
            return Err(ConfigError::Invalid {
                name: "QUEUE_URL",
                reason: "it must be a FIFO queue (ending in .fifo)".into(),
            });
        }
        Ok(Self {
            queue_url,
            secret_id: env.required("SECRET_ID")?,
            secrets_refresh: env.seconds_or("SECRETS_REFRESH_SECONDS", DEFAULT_REFRESH)?,
        })
    }
}

/// Why a request was not accepted; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the body has {0} bytes, more than the 4 MiB allowed")]
    TooLarge(usize),
    /// The signature header is missing, malformed or wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The verification handshake's mode or token is wrong.
    #[error("the verification handshake was refused: {0}")]
    Handshake(&'static str),
    /// The signed bytes are not JSON.
    #[error(transparent)]
    NotJson(#[from] ParseError),
    /// The secrets could not be read, so nothing can be verified.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The queue did not accept every message.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The method is neither GET nor POST.
    #[error("the method {0} is not allowed")]
    Method(Method),
}

impl WebhookError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Handshake(_) => StatusCode::FORBIDDEN,
            Self::NotJson(_) => StatusCode::BAD_REQUEST,
            Self::Secrets(_) | Self::Queue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The short text sent back: it names the problem without internal detail.
    fn public_message(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "payload too large",
            Self::Signature(_) => "invalid signature",
            Self::Handshake(_) => "verification failed",
            Self::NotJson(_) => "body is not JSON",
            Self::Secrets(_) | Self::Queue(_) => "temporarily unavailable, please retry",
            Self::Method(_) => "method not allowed",
        }
    }
}

/// What a delivery contained, once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    /// Inbound messages put on the queue.
    pub enqueued: usize,
    /// Failed statuses put on the queue, for the processor to mark those replies undelivered.
    pub failures_enqueued: usize,
    /// Messages sent from the WhatsApp Business app on a business number (coexistence echoes)
    /// put on the queue, each in its user's conversation.
    pub echoes_enqueued: usize,
    /// Statuses logged.
    pub statuses: usize,
    /// Parts of the body logged and not acted on.
    pub skipped: usize,
    /// Messages that could not be queued for lack of an id or a sender.
    pub malformed: usize,
}

/// The webhook, over a queue and the secrets.
pub struct Webhook<Q, S> {
    queue: Q,
    secrets: S,
}

impl<Q: MessageQueue, S: Secrets> Webhook<Q, S> {
    /// A webhook that queues to `queue` and verifies with `secrets`.
    pub fn new(queue: Q, secrets: S) -> Self {
        Self { queue, secrets }
    }

    /// Answers one HTTP request. Every outcome, error or not, is a response.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let result = match *request.method() {
            Method::GET => self
                .verify_subscription(&request)
                .await
                .map(|challenge| text_response(StatusCode::OK, challenge)),
            Method::POST => {
                let signature = request
                    .headers()
                    .get(SIGNATURE_HEADER)
                    .map(|v| v.to_str().unwrap_or_default());
                self.receive(request.body().as_ref(), signature)
                    .await
                    .map(|_| text_response(StatusCode::OK, "ok".into()))
            }
            ref other => Err(WebhookError::Method(other.clone())),
        };
        result.unwrap_or_else(|error| {
            match error.status() {
                s if s.is_server_error() => {
                    tracing::error!(error = %error, status = s.as_u16(), "webhook request failed")
                }
                s => tracing::warn!(error = %error, status = s.as_u16(), "webhook request refused"),
            }
            let mut response = text_response(error.status(), error.public_message().into());
            if matches!(error, WebhookError::Method(_)) {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            }
            response
        })
    }

    /// Meta's subscription handshake: returns the challenge to echo when mode and token match.
    pub async fn verify_subscription(&self, request: &Request) -> Result<String, WebhookError> {
        let query = request.query_string_parameters();
        if query.first("hub.mode") != Some("subscribe") {
            return Err(WebhookError::Handshake("hub.mode is not subscribe"));
        }
        let token = query
            .first("hub.verify_token")
            .ok_or(WebhookError::Handshake("hub.verify_token is missing"))?;
        let challenge = query
            .first("hub.challenge")
            .ok_or(WebhookError::Handshake("hub.challenge is missing"))?;
        let secrets = self.secrets.current().await?;
        let expected = secrets.require("META_VERIFY_TOKEN", &secrets.meta_verify_token)?;
        if !constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) {
            return Err(WebhookError::Handshake("hub.verify_token does not match"));
        }
        tracing::info!(
            event = LogEvent::SubscriptionVerified.as_str(),
            "answered Meta's verification handshake"
        );
        Ok(challenge.to_owned())
    }

    /// Handles a `POST` body: checks its size and signature, queues its inbound messages and
    /// logs the rest. Succeeds only when every inbound message is on the queue.
    pub async fn receive(
        &self,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Receipt, WebhookError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WebhookError::TooLarge(body.len()));
        }
        let secrets = self.secrets.current().await?;
        signature::verify(body, signature_header, &secrets.webhook_signing_keys()?)?;
        let delivery = notification::parse(body)?;
        log_delivery(&delivery);
        let failures: Vec<DeliveryFailure> = delivery
            .statuses
            .iter()
            .filter_map(DeliveryFailure::of)
            .collect();
        let echoes: Vec<BusinessEcho> = delivery
            .echoes
            .iter()
            .filter_map(BusinessEcho::of)
            .collect();
        self.enqueue(&delivery, &failures, &echoes).await?;
        let receipt = Receipt {
            enqueued: delivery.messages.len(),
            failures_enqueued: failures.len(),
            echoes_enqueued: echoes.len(),
            statuses: delivery.statuses.len(),
            skipped: delivery.skipped.len(),
            malformed: delivery.malformed.len(),
        };
        tracing::info!(
            event = LogEvent::DeliveryAccepted.as_str(),
            enqueued = receipt.enqueued,
            failures_enqueued = receipt.failures_enqueued,
            echoes_enqueued = receipt.echoes_enqueued,
            statuses = receipt.statuses,
            skipped = receipt.skipped,
            malformed = receipt.malformed,
            "webhook delivery accepted"
        );
        Ok(receipt)
    }

    /// Sends the delivery's messages, then its `failures`, then its `echoes`, in
    /// `SendMessageBatch` calls, in order, so that each conversation's messages enter its FIFO
    /// group in the order Meta listed them. A failed call does not stop the others: every
    /// conversation that can be queued is, and the error makes Meta deliver again
    /// (deduplication drops what was queued).
    async fn enqueue(
        &self,
        delivery: &Delivery,
        failures: &[DeliveryFailure],
        echoes: &[BusinessEcho],
    ) -> Result<(), WebhookError> {
        let entries = queue_entries(delivery, failures, echoes)?;
        let report = queue::send_in_order(&self.queue, &entries).await;
        let (messages_accepted, others_accepted) =
            report.accepted.split_at(delivery.messages.len());
        let (failures_accepted, echoes_accepted) = others_accepted.split_at(failures.len());
        log_failures_enqueued(failures, failures_accepted);
        log_echoes_enqueued(echoes, echoes_accepted);
        for (message, accepted) in delivery.messages.iter().zip(messages_accepted) {
            let from = mask(message.sender.id());
            if *accepted {
                tracing::info!(event = LogEvent::MessageEnqueued.as_str(), message_id = %message.id,
                    message_type = message.content.kind(), from = %from, "inbound message queued");
            } else {
                tracing::warn!(event = LogEvent::MessageNotEnqueued.as_str(), message_id = %message.id, from = %from,
                    "inbound message not queued; Meta will deliver it again");
            }
        }
        match report.errors.into_iter().next() {
            None => Ok(()),
            Some(error) => Err(error.into()),
        }
    }
}

/// The queue entries of a delivery: its messages, then its `failures`, then its `echoes`.
fn queue_entries(
    delivery: &Delivery,
    failures: &[DeliveryFailure],
    echoes: &[BusinessEcho],
) -> Result<Vec<QueueEntry>, QueueError> {
    let body_error = |e: serde_json::Error| QueueError::Body(e.to_string());
    let mut entries = delivery
        .messages
        .iter()
        .map(QueueEntry::for_message)
        .collect::<Result<Vec<_>, _>>()
        .map_err(body_error)?;
    for failure in failures {
        entries.push(QueueEntry::for_delivery_failure(failure).map_err(body_error)?);
    }
    for echo in echoes {
        entries.push(QueueEntry::for_business_echo(echo).map_err(body_error)?);
    }
    Ok(entries)
}

/// Logs each echo, queued or not: who and when, never what was said.
fn log_echoes_enqueued(echoes: &[BusinessEcho], accepted: &[bool]) {
    for (echo, accepted) in echoes.iter().zip(accepted) {
        let (message_id, recipient) = (&echo.message_id, mask(&echo.recipient));
        let phone_number_id = &echo.phone_number_id;
        if *accepted {
            tracing::info!(event = LogEvent::BusinessEchoEnqueued.as_str(), message_id = %message_id,
                recipient = %recipient, phone_number_id = %phone_number_id, timestamp = echo.timestamp,
                "a message sent from the WhatsApp Business app queued for its conversation");
        } else {
            tracing::warn!(event = LogEvent::BusinessEchoNotEnqueued.as_str(), message_id = %message_id,
                recipient = %recipient, phone_number_id = %phone_number_id,
                "a message sent from the WhatsApp Business app not queued; Meta will deliver it again");
        }
    }
}

fn log_failures_enqueued(failures: &[DeliveryFailure], accepted: &[bool]) {
    for (failure, accepted) in failures.iter().zip(accepted) {
        let (message_id, recipient) = (&failure.message_id, mask(&failure.recipient));
        if *accepted {
            tracing::info!(event = LogEvent::DeliveryFailureEnqueued.as_str(), message_id = %message_id,
                recipient = %recipient, "failed status queued for its conversation");
        } else {
            tracing::warn!(event = LogEvent::DeliveryFailureNotEnqueued.as_str(), message_id = %message_id,
                recipient = %recipient, "failed status not queued; Meta will deliver it again");
        }
    }
}

/// Whether a failure with Meta's error `code` is about that one user (outside the 24-hour
/// window, undeliverable to them, not allowed), not about the business: such failures are
/// warnings, and on-call hears of them when they repeat for a user.
fn is_users_failure(code: Option<i64>) -> bool {
    code.and_then(MetaErrorClass::of_code).is_some_and(|class| {
        matches!(
            class,
            MetaErrorClass::OutsideWindow
                | MetaErrorClass::Undeliverable
                | MetaErrorClass::RecipientNotAllowed
        )
    })
}

fn log_failed_status(status: &notification::StatusUpdate) {
    let recipient = status.recipient().map(mask).unwrap_or_default();
    let error = status.errors.first().cloned().unwrap_or_default();
    let (message_id, title) = (
        &status.message_id,
        error.title.as_deref().unwrap_or("unknown"),
    );
    let details = error.details.as_deref();
    if is_users_failure(error.code) {
        tracing::warn!(event = LogEvent::MessageFailed.as_str(), message_id = %message_id, recipient = %recipient,
            phone_number_id = %status.phone_number_id, error_code = error.code, error_title = title,
            error_details = details, "Meta could not deliver a message to this user");
    } else {
        tracing::error!(event = LogEvent::MessageFailed.as_str(), message_id = %message_id, recipient = %recipient,
            phone_number_id = %status.phone_number_id, error_code = error.code, error_title = title,
            error_details = details, "Meta could not deliver a message");
    }
}

fn log_delivery(delivery: &Delivery) {
    for status in &delivery.statuses {
        let recipient = status.recipient().map(mask).unwrap_or_default();
        if status.is_failed() {
            log_failed_status(status);
        } else {
            tracing::info!(
                event = LogEvent::MessageStatus.as_str(),
                status = %status.status,
                message_id = %status.message_id,
                recipient = %recipient,
                timestamp = status.timestamp,
                "message status"
            );
        }
    }
    for error in &delivery.errors {
        tracing::error!(
            event = LogEvent::WebhookError.as_str(),
            error_code = error.code,
            error_title = error.title.as_deref().unwrap_or("unknown"),
            error_details = error.details.as_deref(),
            "Meta reported an error in a webhook"
        );
    }
    for skipped in &delivery.skipped {
        match skipped {
            Skipped::Object(object) => {
                tracing::info!(event = LogEvent::Ignored.as_str(), object = %object, "not a WhatsApp webhook; ignored")
            }
            Skipped::Field(field) => {
                tracing::info!(event = LogEvent::Ignored.as_str(), field = %field, "webhook field not handled; ignored")
            }
            Skipped::Shape(shape) => tracing::warn!(
                event = LogEvent::Ignored.as_str(),
                shape = *shape,
                "unexpected webhook shape; ignored"
            ),
        }
    }
    for malformed in &delivery.malformed {
        tracing::error!(
            event = LogEvent::MessageMalformed.as_str(),
            message_id = malformed.message_id.as_deref(),
            reason = malformed.reason,
            "inbound message cannot be queued"
        );
    }
}

fn text_response(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests;
