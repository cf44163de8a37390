//! What a record on the FIFO queue carries, written by the webhook and read by the processor:
//! an [`InboundMessage`] (a body without `kind`, as every body was before there were others), or
//! a [`DeliveryFailure`] (`"kind": "delivery_failure"`), Meta's late word that one of the bot's
//! replies did not reach its user. Both go to the group of the conversation they belong to, so
//! that the processor sees a failure in order with the user's messages.

use serde::{Deserialize, Serialize};

use crate::inbound::{ConversationKey, INBOUND_MESSAGE_VERSION, InboundMessage};
use crate::meta::notification::{MessageEcho, StatusUpdate};

/// Version of [`DeliveryFailure`] written by this build.
pub const DELIVERY_FAILURE_VERSION: u32 = 1;

/// The `kind` of a [`DeliveryFailure`] body.
const DELIVERY_FAILURE_KIND: &str = "delivery_failure";

/// A `failed` status of a message the business sent: Meta accepted the send, then could not
/// deliver it (131047 outside the 24-hour window, 131026 undeliverable, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    /// Body version, [`DELIVERY_FAILURE_VERSION`] when written by this build.
    pub v: u32,
    /// The business phone number that sent the message.
    pub phone_number_id: String,
    /// The user it went to, as conversations are keyed (phone number, else user id).
    pub recipient: String,
    /// Meta's id of the message that failed (`wamid…`).
    pub message_id: String,
    /// Meta's error code, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Meta's short error title, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_title: Option<String>,
    /// When Meta reported it, in seconds since the Unix epoch, when Meta said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl DeliveryFailure {
    /// The failure a status reports: `None` unless the status is `failed` and names a user (not
    /// a group) and a business number.
    pub fn of(status: &StatusUpdate) -> Option<Self> {
        if !status.is_failed() || status.phone_number_id.is_empty() {
            return None;
        }
        let error = status.errors.first();
        Some(Self {
            v: DELIVERY_FAILURE_VERSION,
            phone_number_id: status.phone_number_id.clone(),
            recipient: status.recipient()?.to_owned(),
            message_id: status.message_id.clone(),
            error_code: error.and_then(|e| e.code),
            error_title: error.and_then(|e| e.title.clone()),
            timestamp: status.timestamp,
        })
    }

    /// The conversation the failed message belongs to.
    pub fn conversation(&self) -> ConversationKey {
        ConversationKey::new(&self.phone_number_id, &self.recipient)
    }
}

/// Version of [`BusinessEcho`] written by this build.
pub const BUSINESS_ECHO_VERSION: u32 = 1;

/// The `kind` of a [`BusinessEcho`] body.
const BUSINESS_ECHO_KIND: &str = "business_echo";

/// A message a person sent to a user from the WhatsApp Business app on the bot's own number
/// (coexistence, Meta's `smb_message_echoes`): someone at the business took the conversation, so
/// the bot pauses for it. Only who and when are carried, never what was said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessEcho {
    /// Body version, [`BUSINESS_ECHO_VERSION`] when written by this build.
    pub v: u32,
    /// The business phone number the message was sent from.
    pub phone_number_id: String,
    /// The user it went to, as conversations are keyed (phone number, else user id).
    pub recipient: String,
    /// Meta's id of the echoed message (`wamid…`).
    pub message_id: String,
    /// When it was sent, in seconds since the Unix epoch, when Meta said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl BusinessEcho {
    /// The body an echo Meta sent is queued as: `None` when it names no business number, no
    /// message id or no user.
    pub fn of(echo: &MessageEcho) -> Option<Self> {
        if echo.phone_number_id.is_empty() || echo.message_id.is_empty() {
            return None;
        }
        Some(Self {
            v: BUSINESS_ECHO_VERSION,
            phone_number_id: echo.phone_number_id.clone(),
            recipient: echo.recipient().filter(|r| !r.is_empty())?.to_owned(),
            message_id: echo.message_id.clone(),
            timestamp: echo.timestamp,
        })
    }

    /// The conversation the echoed message belongs to.
    pub fn conversation(&self) -> ConversationKey {
        ConversationKey::new(&self.phone_number_id, &self.recipient)
    }
}

/// What one queue record carries.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueBody {
    /// A message a user sent.
    Message(InboundMessage),
    /// One of the bot's replies was not delivered.
    DeliveryFailure(DeliveryFailure),
    /// A person at the business wrote to the user from the Business app on the same number.
    BusinessEcho(BusinessEcho),
}

/// Why a record's body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON of any known kind.
    #[error("the record body cannot be read: {0}")]
    Unreadable(String),
    /// The body is of a kind this build does not know (written by a newer webhook).
    #[error("the record body is of an unknown kind {0:?}")]
    UnknownKind(String),
    /// The body was written by a newer webhook than this build reads.
    #[error("the record body has version {found}, this build reads version {reads}")]
    Version {
        /// The body's version.
        found: u32,
        /// The version this build reads.
        reads: u32,
    },
}

/// The kind of a body, read before the body itself.
#[derive(Deserialize)]
struct Kind {
    #[serde(default)]
    kind: Option<String>,
}

/// The failure as written on the queue: the fields and its `kind`.
#[derive(Serialize)]
struct Tagged<'a> {
    kind: &'static str,
    #[serde(flatten)]
    failure: &'a DeliveryFailure,
}

impl QueueBody {
    /// Reads a record's body, of a kind and version this build knows.
    pub fn read(body: &str) -> Result<Self, BodyError> {
        let unreadable = |e: serde_json::Error| BodyError::Unreadable(e.to_string());
        let kind = serde_json::from_str::<Kind>(body).map_err(unreadable)?;
        match kind.kind.as_deref() {
            None => {
                let message: InboundMessage = serde_json::from_str(body).map_err(unreadable)?;
                check_version(message.v, INBOUND_MESSAGE_VERSION)?;
                Ok(Self::Message(message))
            }
            Some(DELIVERY_FAILURE_KIND) => {
                let failure: DeliveryFailure = serde_json::from_str(body).map_err(unreadable)?;
                check_version(failure.v, DELIVERY_FAILURE_VERSION)?;
                Ok(Self::DeliveryFailure(failure))
            }
            Some(BUSINESS_ECHO_KIND) => {
                let echo: BusinessEcho = serde_json::from_str(body).map_err(unreadable)?;
                check_version(echo.v, BUSINESS_ECHO_VERSION)?;
                Ok(Self::BusinessEcho(echo))
            }
            Some(other) => Err(BodyError::UnknownKind(other.chars().take(40).collect())),
        }
    }

    /// The conversation the record belongs to.
    pub fn conversation(&self) -> ConversationKey {
        match self {
            Self::Message(message) => message.conversation(),
            Self::DeliveryFailure(failure) => failure.conversation(),
            Self::BusinessEcho(echo) => echo.conversation(),
        }
    }
}

/// The JSON value a [`DeliveryFailure`] is written as, with its `kind`.
pub fn tagged_failure(failure: &DeliveryFailure) -> impl Serialize + '_ {
    Tagged {
        kind: DELIVERY_FAILURE_KIND,
        failure,
    }
}

/// The echo as written on the queue: the fields and its `kind`.
#[derive(Serialize)]
struct TaggedEcho<'a> {
    kind: &'static str,
    #[serde(flatten)]
    echo: &'a BusinessEcho,
}

/// The JSON value a [`BusinessEcho`] is written as, with its `kind`.
pub fn tagged_echo(echo: &BusinessEcho) -> impl Serialize + '_ {
    TaggedEcho {
        kind: BUSINESS_ECHO_KIND,
        echo,
    }
}

fn check_version(found: u32, reads: u32) -> Result<(), BodyError> {
    if found == reads {
        Ok(())
    } else {
        Err(BodyError::Version { found, reads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::notification::MetaError;
    use crate::queue::QueueEntry;

    fn failed_status() -> StatusUpdate {
        StatusUpdate {
            phone_number_id: "PNID".into(),
            message_id: "wamid.out".into(),
            status: "failed".into(),
            timestamp: Some(1_700_000_000),
            recipient_id: Some("15551234567".into()),
            recipient_user_id: None,
            recipient_type: None,
            errors: vec![MetaError {
                code: Some(131_047),
                title: Some("Re-engagement message".into()),
                details: None,
            }],
        }
    }

    #[test]
    fn a_failure_goes_to_its_conversations_group_and_reads_back() {
        let failure = DeliveryFailure::of(&failed_status()).unwrap();
        assert_eq!(failure.error_code, Some(131_047));
        let entry = QueueEntry::for_delivery_failure(&failure).unwrap();
        let key = ConversationKey::new("PNID", "15551234567");
        assert_eq!(entry.group_id, crate::queue::fifo_id(key.as_str()));
        assert_ne!(entry.deduplication_id, crate::queue::fifo_id("wamid.out"));
        assert!(
            entry.body.contains(r#""kind":"delivery_failure""#),
            "{}",
            entry.body
        );
        assert_eq!(
            QueueBody::read(&entry.body),
            Ok(QueueBody::DeliveryFailure(failure))
        );
    }

    fn echo() -> MessageEcho {
        MessageEcho {
            phone_number_id: "PNID".into(),
            message_id: "wamid.echo".into(),
            to: Some("15551234567".into()),
            to_user_id: Some("US.1".into()),
            message_type: Some("text".into()),
            timestamp: Some(1_739_321_024),
        }
    }

    #[test]
    fn an_echo_goes_to_the_users_conversation_group_and_reads_back() {
        let business = BusinessEcho::of(&echo()).unwrap();
        assert_eq!(business.recipient, "15551234567");
        let entry = QueueEntry::for_business_echo(&business).unwrap();
        let message_group =
            crate::queue::fifo_id(ConversationKey::new("PNID", "15551234567").as_str());
        assert_eq!(
            entry.group_id, message_group,
            "the group of that user's messages"
        );
        assert_eq!(entry.deduplication_id, "echo:wamid.echo");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&entry.body).unwrap(),
            serde_json::json!({"kind": "business_echo", "v": 1, "phone_number_id": "PNID",
                "recipient": "15551234567", "message_id": "wamid.echo", "timestamp": 1_739_321_024})
        );
        assert_eq!(
            QueueBody::read(&entry.body),
            Ok(QueueBody::BusinessEcho(business))
        );
        let long = BusinessEcho::of(&MessageEcho {
            message_id: format!("wamid.{}", "x".repeat(130)),
            ..echo()
        })
        .unwrap();
        let entry = QueueEntry::for_business_echo(&long).unwrap();
        assert!(entry.deduplication_id.starts_with("sha256-"), "{entry:?}");
        assert_ne!(
            entry.deduplication_id,
            crate::queue::fifo_id(&long.message_id)
        );
    }

    #[test]
    fn an_echo_to_nobody_or_from_no_number_is_not_queued() {
        let by_user_id = MessageEcho { to: None, ..echo() };
        assert_eq!(BusinessEcho::of(&by_user_id).unwrap().recipient, "US.1");
        for unusable in [
            MessageEcho {
                to: None,
                to_user_id: None,
                ..echo()
            },
            MessageEcho {
                phone_number_id: String::new(),
                ..echo()
            },
            MessageEcho {
                message_id: String::new(),
                ..echo()
            },
        ] {
            assert_eq!(BusinessEcho::of(&unusable), None, "{unusable:?}");
        }
    }

    #[test]
    fn only_failed_statuses_of_a_user_are_failures() {
        let delivered = StatusUpdate {
            status: "delivered".into(),
            ..failed_status()
        };
        assert_eq!(DeliveryFailure::of(&delivered), None);
        let group = StatusUpdate {
            recipient_type: Some("group".into()),
            ..failed_status()
        };
        assert_eq!(DeliveryFailure::of(&group), None);
        let nobody = StatusUpdate {
            recipient_id: None,
            ..failed_status()
        };
        assert_eq!(DeliveryFailure::of(&nobody), None);
    }

    #[test]
    fn unknown_kinds_newer_versions_and_garbage_are_errors() {
        assert!(matches!(
            QueueBody::read(r#"{"kind":"reaction_sync","v":1}"#),
            Err(BodyError::UnknownKind(kind)) if kind == "reaction_sync"
        ));
        let newer = r#"{"kind":"delivery_failure","v":2,"phone_number_id":"P","recipient":"R","message_id":"M"}"#;
        assert_eq!(
            QueueBody::read(newer),
            Err(BodyError::Version { found: 2, reads: 1 })
        );
        assert!(matches!(
            QueueBody::read("not json"),
            Err(BodyError::Unreadable(_))
        ));
        assert!(matches!(
            QueueBody::read(r#"{"kind":7}"#),
            Err(BodyError::Unreadable(_))
        ));
    }
}
