//! The WhatsApp port (Meta's Graph API as the processor uses it) and its HTTP adapter
//! ([`graph`]), the downloading of the media users send ([`media`]), plus the splitting of long
//! answers into messages WhatsApp accepts.

pub mod graph;
pub mod media;
pub mod split;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::inbound::Sender;
use crate::retry::{RetryHint, Retryable};
use crate::secrets::SecretsError;

/// Who a reply goes to: a phone number (`to`) or, for a user known only by a business-scoped
/// user id, that id (`recipient`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A phone number (`wa_id`).
    Phone(String),
    /// A business-scoped user id (`US.…`).
    UserId(String),
}

impl Recipient {
    /// Replies go to the sender's phone number when known, else to their user id.
    pub fn of(sender: &Sender) -> Option<Self> {
        match (&sender.wa_id, &sender.user_id) {
            (Some(phone), _) => Some(Self::Phone(phone.clone())),
            (None, Some(user_id)) => Some(Self::UserId(user_id.clone())),
            (None, None) => None,
        }
    }

    /// The identifier itself.
    pub fn id(&self) -> &str {
        match self {
            Self::Phone(id) | Self::UserId(id) => id,
        }
    }
}

/// How the processor reacts to a Graph API error, decided by Meta's `error.code` (as Meta's
/// error-code reference advises), not by the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaErrorClass {
    /// Throttled: 130429 (throughput), 131056 (pair rate limit), 131048 (spam rate limit),
    /// 80007 (account rate limit), 4 (too many API calls). Back off and retry within the
    /// budget, else let SQS retry.
    RateLimited,
    /// 131047: the user's last message is over 24 hours old; only a template can reach them.
    OutsideWindow,
    /// 131026: the message cannot be delivered to this user.
    Undeliverable,
    /// Final for this message: Meta refused the request itself, which would be refused again:
    /// 100 (invalid parameter), 131009 (parameter value not valid), 131051 (unsupported message
    /// type), 131052 (media download error), 131053 (media upload error).
    InvalidMessage,
    /// Final for this message: the recipient cannot be messaged from this number: 131021
    /// (recipient is the sender), 131030 (not in the test number's allowed list).
    RecipientNotAllowed,
    /// 190: the access token expired or was revoked.
    TokenExpired,
    /// The business account or number cannot send until an operator acts: 131031 (account
    /// locked), 131042 (payment problem), 368 (temporarily blocked for policy violations),
    /// 133010 (number not registered). Alert, and keep the records for a retry.
    AccountBlocked,
    /// A 5xx without a known code, or a connection failure: retry.
    Transient,
    /// Anything else: not retried now; SQS retries the record later.
    Other,
}

impl MetaErrorClass {
    /// Classifies Meta's error `code` (when there is one) and the HTTP status.
    pub fn of(code: Option<i64>, http_status: u16) -> Self {
        match code.and_then(Self::of_code) {
            Some(class) => class,
            None if http_status >= 500 => Self::Transient,
            None => Self::Other,
        }
    }

    /// The class Meta's error `code` alone decides, when it is one of the known codes (as in
    /// a log line, where the HTTP status is not at hand).
    pub fn of_code(code: i64) -> Option<Self> {
        match code {
            130_429 | 131_056 | 80_007 | 4 | 131_048 => Some(Self::RateLimited),
            131_047 => Some(Self::OutsideWindow),
            131_026 => Some(Self::Undeliverable),
            100 | 131_009 | 131_051 | 131_052 | 131_053 => Some(Self::InvalidMessage),
            131_021 | 131_030 => Some(Self::RecipientNotAllowed),
            190 => Some(Self::TokenExpired),
            131_031 | 131_042 | 368 | 133_010 => Some(Self::AccountBlocked),
            _ => None,
        }
    }

    /// Whether this message can never be delivered, so that retrying is pointless and the
    /// message is marked done.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::OutsideWindow
                | Self::Undeliverable
                | Self::InvalidMessage
                | Self::RecipientNotAllowed
        )
    }

    /// Whether an operator must act before any message can be sent (a new token, an unlocked
    /// or paid-up account): the records are kept for a retry, and on-call is alerted.
    pub fn needs_operator(self) -> bool {
        matches!(self, Self::TokenExpired | Self::AccountBlocked)
    }
}

/// Why a Graph API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhatsAppError {
    /// Meta answered with an error object.
    #[error("the Graph API answered {http_status} with error {code:?}: {message}")]
    Api {
        /// The HTTP status.
        http_status: u16,
        /// Meta's `error.code`.
        code: Option<i64>,
        /// Meta's `error.message` (and `error_data.details` when present).
        message: String,
        /// The `Retry-After` Meta sent, if any.
        retry_after: Option<Duration>,
    },
    /// The deadline had passed: nothing was sent.
    #[error("the Graph API did not answer in time")]
    Timeout,
    /// No connection could be made: nothing was sent.
    #[error("the Graph API could not be reached: {0}")]
    Transport(String),
    /// The request may have reached Meta but no answer came (a timeout, or the connection
    /// lost after it was made): whether the message went out is unknown. Never retried, so
    /// that the user cannot get it twice.
    #[error(
        "the Graph API may have received the call but did not answer (timed out: {timed_out}): {detail}"
    )]
    OutcomeUnknown {
        /// Whether the call ran out of time, rather than losing its connection.
        timed_out: bool,
        /// The causes.
        detail: String,
    },
    /// Meta answered 200 with a body of an unexpected shape.
    #[error("the Graph API's answer could not be read: {0}")]
    BadResponse(String),
    /// The access token could not be had (the secret is unreadable or has no
    /// `META_ACCESS_TOKEN`); no request was made. Not retried now: the secret must be fixed.
    #[error("the Graph API access token is not available: {0}")]
    Secrets(#[from] SecretsError),
}

impl WhatsAppError {
    /// How to react to this error.
    pub fn class(&self) -> MetaErrorClass {
        match self {
            Self::Api {
                http_status, code, ..
            } => MetaErrorClass::of(*code, *http_status),
            Self::Timeout | Self::Transport(_) | Self::OutcomeUnknown { .. } => {
                MetaErrorClass::Transient
            }
            Self::BadResponse(_) | Self::Secrets(_) => MetaErrorClass::Other,
        }
    }

    /// Whether the call may have reached Meta without an answer, so that it is unknown whether
    /// the message went out.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }

    /// Meta's error code, when it sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }
}

impl Retryable for WhatsAppError {
    /// Rate limits and transient failures are retried, after Meta's `Retry-After` when it sent
    /// one; everything else is not, nor a call whose outcome is unknown (it may have been sent).
    fn retry_hint(&self) -> RetryHint {
        match (self.class(), self) {
            (_, Self::OutcomeUnknown { .. }) => RetryHint::Never,
            (
                MetaErrorClass::RateLimited | MetaErrorClass::Transient,
                Self::Api { retry_after, .. },
            ) => RetryHint::honouring(*retry_after),
            (MetaErrorClass::RateLimited | MetaErrorClass::Transient, _) => RetryHint::Backoff,
            _ => RetryHint::Never,
        }
    }
}

/// Sending through WhatsApp.
pub trait WhatsApp: Send + Sync {
    /// Marks `message_id` read and shows the typing indicator, in one call.
    fn mark_read_and_typing(
        &self,
        phone_number_id: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<(), WhatsAppError>> + Send;

    /// Sends one text message (at most 4096 characters), retrying rate limits and transient
    /// failures, never past `deadline`. Returns the new message's id.
    fn send_text(
        &self,
        phone_number_id: &str,
        to: &Recipient,
        body: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, WhatsAppError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_meta_code_not_http_status() {
        for code in [130_429, 131_056, 80_007, 4, 131_048] {
            assert_eq!(
                MetaErrorClass::of(Some(code), 400),
                MetaErrorClass::RateLimited,
                "{code}"
            );
        }
        assert_eq!(
            MetaErrorClass::of(Some(131_047), 400),
            MetaErrorClass::OutsideWindow
        );
        assert_eq!(
            MetaErrorClass::of(Some(131_026), 400),
            MetaErrorClass::Undeliverable
        );
        assert_eq!(
            MetaErrorClass::of(Some(190), 401),
            MetaErrorClass::TokenExpired
        );
        assert_eq!(
            MetaErrorClass::of(Some(131_000), 500),
            MetaErrorClass::Transient
        );
        assert_eq!(
            MetaErrorClass::of(Some(100), 400),
            MetaErrorClass::InvalidMessage
        );
        assert_eq!(
            MetaErrorClass::of(Some(131_005), 403),
            MetaErrorClass::Other
        );
        assert_eq!(MetaErrorClass::of(None, 503), MetaErrorClass::Transient);
        assert_eq!(
            MetaErrorClass::of_code(190),
            Some(MetaErrorClass::TokenExpired)
        );
        assert_eq!(MetaErrorClass::of_code(131_000), None);
        assert!(
            MetaErrorClass::OutsideWindow.is_final() && MetaErrorClass::Undeliverable.is_final()
        );
        assert!(!MetaErrorClass::RateLimited.is_final());
    }

    #[test]
    fn classifies_meta_s_documented_codes() {
        let final_codes = [
            131_026, 131_047, 131_051, 131_052, 131_053, 100, 131_009, 131_021, 131_030,
        ];
        for code in final_codes {
            let class = MetaErrorClass::of(Some(code), 400);
            assert!(class.is_final() && !class.needs_operator(), "{code}");
        }
        for code in [190, 131_031, 131_042, 368, 133_010] {
            let class = MetaErrorClass::of(Some(code), 400);
            assert!(class.needs_operator() && !class.is_final(), "{code}");
        }
        for code in [130_429, 131_056, 131_048, 80_007, 4] {
            let class = MetaErrorClass::of(Some(code), 400);
            assert_eq!(class, MetaErrorClass::RateLimited, "{code}");
            assert!(!class.is_final() && !class.needs_operator(), "{code}");
        }
    }

    #[test]
    fn operator_action_and_final_codes_are_not_retried_now() {
        for code in [131_031, 368, 131_051, 131_030] {
            let error = WhatsAppError::Api {
                http_status: 400,
                code: Some(code),
                message: String::new(),
                retry_after: None,
            };
            assert_eq!(error.retry_hint(), RetryHint::Never, "{code}");
        }
    }

    #[test]
    fn retries_rate_limits_and_transient_failures_only() {
        let api = |code| WhatsAppError::Api {
            http_status: 400,
            code: Some(code),
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(api(130_429).retry_hint(), RetryHint::Backoff);
        assert_eq!(api(131_047).retry_hint(), RetryHint::Never);
        assert_eq!(api(190).retry_hint(), RetryHint::Never);
        assert_eq!(WhatsAppError::Timeout.retry_hint(), RetryHint::Backoff);
        assert_eq!(
            WhatsAppError::Transport("refused".into()).retry_hint(),
            RetryHint::Backoff
        );
        let unknown = WhatsAppError::OutcomeUnknown {
            timed_out: true,
            detail: "operation timed out".into(),
        };
        assert_eq!(unknown.retry_hint(), RetryHint::Never);
        assert!(unknown.outcome_unknown() && !WhatsAppError::Timeout.outcome_unknown());
        let hinted = WhatsAppError::Api {
            http_status: 400,
            code: Some(130_429),
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            hinted.retry_hint(),
            RetryHint::After(Duration::from_secs(3))
        );
        let missing = WhatsAppError::Secrets(SecretsError::MissingKey("META_ACCESS_TOKEN"));
        assert_eq!(missing.class(), MetaErrorClass::Other);
        assert_eq!(missing.retry_hint(), RetryHint::Never);
    }

    #[test]
    fn replies_go_to_the_phone_number_else_the_user_id() {
        let both = Sender {
            wa_id: Some("1555".into()),
            user_id: Some("US.1".into()),
        };
        assert_eq!(Recipient::of(&both), Some(Recipient::Phone("1555".into())));
        let user_only = Sender {
            wa_id: None,
            user_id: Some("US.1".into()),
        };
        assert_eq!(
            Recipient::of(&user_only),
            Some(Recipient::UserId("US.1".into()))
        );
    }
}
