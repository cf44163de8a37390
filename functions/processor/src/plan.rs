//! The pure part of processing: reading SQS records, grouping them by conversation in queue
//! order, and deciding what each kind of message gets.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shared::inbound::{ConversationKey, InboundMessage, MediaKind, MessageContent};
use shared::queue::fifo_id;
use shared::queue_body::{BodyError, QueueBody};

use crate::as_text::as_text;

/// One SQS record, read.
#[derive(Debug, Clone)]
pub struct QueuedRecord {
    /// The SQS message id, which a batch item failure names.
    pub sqs_message_id: String,
    /// How many times SQS has handed this record out, this time included.
    pub receive_count: u32,
    /// The FIFO group: records of one group must be handled in order.
    pub group: String,
    /// What the record carries, or why its body could not be read.
    pub body: Result<QueueBody, RecordError>,
}

/// Why a record's body cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The body is not of a kind and version this processor reads.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The body names another conversation than the record's FIFO group: answering it would
    /// write into a chat the queue did not put it in.
    #[error("the record body names a different conversation than its queue group")]
    WrongGroup,
}

/// Reads every record of an SQS event, in the order SQS delivered them.
pub fn read_records(event: &SqsEvent) -> Vec<QueuedRecord> {
    event.records.iter().map(read_record).collect()
}

fn read_record(record: &SqsMessage) -> QueuedRecord {
    let attribute = |name: &str| record.attributes.get(name).cloned();
    let body =
        QueueBody::read(record.body.as_deref().unwrap_or_default()).map_err(RecordError::from);
    let group = attribute("MessageGroupId");
    let body = match (body, &group) {
        (Ok(body), Some(group)) if fifo_id(body.conversation().as_str()) != *group => {
            Err(RecordError::WrongGroup)
        }
        (body, _) => body,
    };
    let group = group
        .or_else(|| {
            body.as_ref()
                .ok()
                .map(|b| fifo_id(b.conversation().as_str()))
        })
        .unwrap_or_default();
    QueuedRecord {
        sqs_message_id: record.message_id.clone().unwrap_or_default(),
        receive_count: attribute("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        group,
        body,
    }
}

/// Splits records into one list per FIFO group, each in queue order, the groups in the order of
/// their first record.
pub fn group_by_conversation(records: Vec<QueuedRecord>) -> Vec<Vec<QueuedRecord>> {
    let mut groups: Vec<Vec<QueuedRecord>> = Vec::new();
    for record in records {
        match groups.iter_mut().find(|g| g[0].group == record.group) {
            Some(group) => group.push(record),
            None => groups.push(vec![record]),
        }
    }
    groups
}

/// The kind of system notice Meta sends when a user's business-scoped user id changes.
pub const USER_CHANGED_USER_ID: &str = "user_changed_user_id";

/// The conversations a `user_changed_user_id` notice moves the memory between: from the one
/// under the user's previous business-scoped id (the notice's `previous_user_id`, else the
/// sender's user id) to the one under the new id (`user_id`). `None` for any other message.
pub fn id_change(message: &InboundMessage) -> Option<(ConversationKey, ConversationKey)> {
    let MessageContent::System {
        kind: Some(kind),
        user_id: Some(new),
        previous_user_id,
        ..
    } = &message.content
    else {
        return None;
    };
    let previous = previous_user_id
        .as_deref()
        .or(message.sender.user_id.as_deref())?;
    let phone_number_id = &message.phone_number_id;
    (kind == USER_CHANGED_USER_ID && !new.is_empty() && !previous.is_empty() && previous != new)
        .then(|| {
            (
                ConversationKey::new(phone_number_id, previous),
                ConversationKey::new(phone_number_id, new),
            )
        })
}

/// What a message gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    /// An answer from the LLM to this text.
    Answer(String),
    /// The short reply that says what the bot can read (`UNSUPPORTED_MESSAGE`).
    Unsupported,
    /// No reply: reactions, edits of old messages, deletions, system notices, blank text.
    Silent,
    /// No reply, but claimed and marked done: a message sent longer ago than the configured
    /// age (`MAX_MESSAGE_AGE_HOURS`), replayed after an outage. Meta would refuse the reply.
    TooOld,
    /// A voice note or audio file, to be downloaded and transcribed (`listen.rs`): it becomes an
    /// [`Treatment::Answer`] of its transcript, or [`Treatment::NotHeard`].
    Listen {
        /// Meta's media id.
        media_id: String,
        /// The MIME type Meta reported.
        mime_type: String,
    },
    /// A voice note that could not be heard for good (too large, of a refused type, refused by
    /// the transcription provider): the user is asked to type it (`VOICE_NOTE_FAILED_MESSAGE`).
    NotHeard,
    /// A document, to be downloaded and read (`read.rs`): a PDF goes to the model, plain text
    /// and CSV become text; other types, and PDFs with `VISION=false`, are their caption alone.
    Read {
        /// Meta's media id.
        media_id: String,
        /// The caption the user wrote, when there is one.
        caption: Option<String>,
        /// The document's file name, when Meta gave it.
        filename: Option<String>,
    },
    /// An image (or a video, for Gemini), to be downloaded and shown to the model with its
    /// caption (`look.rs`); when the model cannot see it, its caption alone is answered.
    Look {
        /// An image or a video.
        kind: MediaKind,
        /// Meta's media id.
        media_id: String,
        /// The caption the user wrote, when there is one.
        caption: Option<String>,
    },
}

/// Whether a message sent at `sent_at` is older than `max_age` at `now` (seconds since the
/// epoch); never when there is no limit. A timestamp in the future is not old.
pub fn is_too_old(sent_at: i64, now: i64, max_age: Option<Duration>) -> bool {
    max_age.is_some_and(|max| {
        now.saturating_sub(sent_at) > i64::try_from(max.as_secs()).unwrap_or(i64::MAX)
    })
}

/// Decides what a message gets: text is the user's turn; button, list and quick replies use their
/// title or text; an image is looked at with its caption; a video or document caption is used
/// as text; a location, contact
/// cards, an order or a flow's answers are read as text (`as_text.rs`); reactions, stickers,
/// edits, deletions and system notices get no reply; anything else gets the unsupported-message
/// reply.
pub fn treatment(content: &MessageContent) -> Treatment {
    let answer = |text: &str| {
        if text.trim().is_empty() {
            Treatment::Silent
        } else {
            Treatment::Answer(text.trim().to_owned())
        }
    };
    match content {
        MessageContent::Text { body } => answer(body),
        MessageContent::ButtonReply { title, .. } | MessageContent::ListReply { title, .. } => {
            answer(title)
        }
        MessageContent::QuickReply { text, payload } => answer(if text.trim().is_empty() {
            payload
        } else {
            text
        }),
        MessageContent::Media {
            kind: kind @ (MediaKind::Image | MediaKind::Video),
            media_id: Some(media_id),
            caption,
            ..
        } => Treatment::Look {
            kind: *kind,
            media_id: media_id.clone(),
            caption: caption
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        },
        MessageContent::Media {
            kind: MediaKind::Document,
            media_id: Some(media_id),
            caption,
            filename,
            ..
        } => Treatment::Read {
            media_id: media_id.clone(),
            caption: caption
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            filename: filename.clone(),
        },
        MessageContent::Media {
            kind: MediaKind::Image | MediaKind::Video | MediaKind::Document,
            caption: Some(caption),
            ..
        } if !caption.trim().is_empty() => answer(caption),
        MessageContent::Media {
            kind: MediaKind::Audio,
            media_id: Some(media_id),
            mime_type,
            ..
        } => Treatment::Listen {
            media_id: media_id.clone(),
            mime_type: mime_type.clone().unwrap_or_default(),
        },
        MessageContent::Location { .. }
        | MessageContent::Contacts { .. }
        | MessageContent::Order { .. }
        | MessageContent::FlowReply { .. } => {
            as_text(content).map_or(Treatment::Unsupported, Treatment::Answer)
        }
        MessageContent::Reaction { .. }
        | MessageContent::Media {
            kind: MediaKind::Sticker,
            ..
        }
        | MessageContent::Edit { .. }
        | MessageContent::Revoke { .. }
        | MessageContent::System { .. } => Treatment::Silent,
        MessageContent::Media { .. } | MessageContent::Unsupported { .. } => Treatment::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn record(id: &str, group: &str, body: &str, receive_count: &str) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.body = Some(body.into());
        message.attributes = HashMap::from([
            ("MessageGroupId".to_owned(), group.to_owned()),
            (
                "ApproximateReceiveCount".to_owned(),
                receive_count.to_owned(),
            ),
        ]);
        message
    }

    fn text_body(id: &str, text: &str) -> String {
        serde_json::json!({"v": 1, "phone_number_id": "P", "sender": {"wa_id": "1555"}, "id": id,
            "timestamp": 1, "content": {"type": "text", "body": text}})
        .to_string()
    }

    #[test]
    fn reads_bodies_receive_counts_and_groups() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("s1", "P:1555", &text_body("w1", "hi"), "3"),
            record("s2", "P:1555", "not json", "1"),
            record(
                "s3",
                "P:1555",
                &text_body("w3", "x").replace("\"v\":1", "\"v\":9"),
                "1",
            ),
        ];
        let records = read_records(&event);
        assert_eq!(records[0].receive_count, 3);
        assert_eq!(records[0].group, "P:1555");
        assert!(
            matches!(&records[0].body, Ok(QueueBody::Message(m)) if m.id == "w1"),
            "{:?}",
            records[0].body
        );
        assert!(matches!(
            records[1].body,
            Err(RecordError::Body(BodyError::Unreadable(_)))
        ));
        assert_eq!(
            records[2].body,
            Err(RecordError::Body(BodyError::Version { found: 9, reads: 1 }))
        );
    }

    #[test]
    fn a_body_of_another_conversation_than_its_group_is_an_error_of_that_record() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("s1", "P:1555", &text_body("w1", "hi"), "1"),
            record("s2", "P:1999", &text_body("w2", "not yours"), "1"),
        ];
        let mut missing_group = record("s3", "", &text_body("w3", "hi"), "1");
        missing_group.attributes.remove("MessageGroupId");
        event.records.push(missing_group);
        let records = read_records(&event);
        assert!(records[0].body.is_ok());
        assert_eq!(records[1].body, Err(RecordError::WrongGroup));
        assert_eq!(
            records[1].group, "P:1999",
            "it stays in the group SQS put it in"
        );
        assert!(records[2].body.is_ok());
        assert_eq!(records[2].group, "P:1555");
    }

    #[test]
    fn a_message_is_too_old_past_the_limit_only() {
        let day = Some(Duration::from_secs(86_400));
        let now = 1_800_000_000;
        assert!(!is_too_old(now - 86_400, now, day));
        assert!(is_too_old(now - 86_401, now, day));
        assert!(!is_too_old(now + 60, now, day), "a clock ahead of ours");
        assert!(!is_too_old(0, now, None));
        assert!(is_too_old(i64::MIN, now, day), "no overflow");
        assert!(!is_too_old(i64::MAX, now, Some(Duration::MAX)));
    }

    #[test]
    fn a_user_id_change_names_the_conversations_to_move_between() {
        let notice = |sender: serde_json::Value, system: serde_json::Value| -> InboundMessage {
            serde_json::from_value(serde_json::json!({"v": 1, "phone_number_id": "P",
                "sender": sender, "id": "w", "timestamp": 1,
                "content": {"type": "system", "kind": "user_changed_user_id", "user_id": system["new"],
                    "previous_user_id": system["old"]}}))
            .unwrap()
        };
        let keys = |pair: Option<(ConversationKey, ConversationKey)>| {
            pair.map(|(a, b)| (a.as_str().to_owned(), b.as_str().to_owned()))
        };
        let old_and_new = serde_json::json!({"old": "US.old", "new": "US.new"});
        assert_eq!(
            keys(id_change(&notice(
                serde_json::json!({"user_id": "US.x"}),
                old_and_new.clone()
            ))),
            Some(("P:US.old".to_owned(), "P:US.new".to_owned()))
        );
        let only_new = serde_json::json!({"new": "US.new"});
        assert_eq!(
            keys(id_change(&notice(
                serde_json::json!({"user_id": "US.old"}),
                only_new.clone()
            ))),
            Some(("P:US.old".to_owned(), "P:US.new".to_owned())),
            "the sender's user id is the previous one when the notice does not say"
        );
        assert_eq!(
            id_change(&notice(serde_json::json!({"user_id": "US.new"}), only_new)),
            None
        );
        assert_eq!(
            id_change(&notice(
                serde_json::json!({"wa_id": "1555"}),
                serde_json::json!({"new": "US.new"})
            )),
            None
        );
        let mut other = notice(serde_json::json!({"user_id": "US.x"}), old_and_new);
        if let MessageContent::System { kind, .. } = &mut other.content {
            *kind = Some("user_changed_number".into());
        }
        assert_eq!(id_change(&other), None);
    }

    #[test]
    fn groups_keep_queue_order() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("a1", "A", &text_body("a1", "1"), "1"),
            record("b1", "B", &text_body("b1", "1"), "1"),
            record("a2", "A", &text_body("a2", "2"), "1"),
        ];
        let groups = group_by_conversation(read_records(&event));
        let ids: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.sqs_message_id.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a1", "a2"], vec!["b1"]]);
    }

    #[test]
    fn decides_what_each_kind_of_message_gets() {
        let media = |kind, caption: Option<&str>| MessageContent::Media {
            kind,
            media_id: None,
            mime_type: None,
            caption: caption.map(str::to_owned),
            filename: None,
            voice: false,
        };
        assert_eq!(
            treatment(&MessageContent::Text {
                body: " hi ".into()
            }),
            Treatment::Answer("hi".into())
        );
        assert_eq!(
            treatment(&MessageContent::Text { body: "  ".into() }),
            Treatment::Silent
        );
        assert_eq!(
            treatment(&MessageContent::ButtonReply {
                id: "b".into(),
                title: "Yes".into()
            }),
            Treatment::Answer("Yes".into())
        );
        assert_eq!(
            treatment(&MessageContent::ListReply {
                id: "r".into(),
                title: "Row".into(),
                description: None
            }),
            Treatment::Answer("Row".into())
        );
        assert_eq!(
            treatment(&MessageContent::QuickReply {
                payload: "P".into(),
                text: "Stop".into()
            }),
            Treatment::Answer("Stop".into())
        );
        assert_eq!(
            treatment(&media(MediaKind::Image, Some("what is this?"))),
            Treatment::Answer("what is this?".into())
        );
        assert_eq!(
            treatment(&media(MediaKind::Document, Some("summarise"))),
            Treatment::Answer("summarise".into())
        );
        assert_eq!(
            treatment(&media(MediaKind::Image, None)),
            Treatment::Unsupported
        );
        assert_eq!(
            treatment(&media(MediaKind::Audio, None)),
            Treatment::Unsupported,
            "audio without a media id cannot be heard"
        );
        let voice_note = MessageContent::Media {
            kind: MediaKind::Audio,
            media_id: Some("1037".into()),
            mime_type: Some("audio/ogg; codecs=opus".into()),
            caption: None,
            filename: None,
            voice: true,
        };
        assert_eq!(
            treatment(&voice_note),
            Treatment::Listen {
                media_id: "1037".into(),
                mime_type: "audio/ogg; codecs=opus".into()
            }
        );
        let photo = MessageContent::Media {
            kind: MediaKind::Image,
            media_id: Some("img-1".into()),
            mime_type: Some("image/jpeg".into()),
            caption: Some(" what is this? ".into()),
            filename: None,
            voice: false,
        };
        assert_eq!(
            treatment(&photo),
            Treatment::Look {
                kind: MediaKind::Image,
                media_id: "img-1".into(),
                caption: Some("what is this?".into())
            }
        );
        assert_eq!(
            treatment(&media(MediaKind::Sticker, None)),
            Treatment::Silent
        );
        assert_eq!(
            treatment(&MessageContent::Location {
                latitude: 0.0,
                longitude: 0.0,
                name: Some("Home".into()),
                address: None
            }),
            Treatment::Answer("[location] Home (latitude 0.000000, longitude 0.000000)".into())
        );
        assert_eq!(
            treatment(&MessageContent::Contacts {
                names: vec!["Ana".into()],
                cards: vec![]
            }),
            Treatment::Answer("[contacts] Ana".into())
        );
        assert_eq!(
            treatment(&MessageContent::Unsupported {
                message_type: "unsupported".into(),
                error_code: Some(131051)
            }),
            Treatment::Unsupported
        );
        assert_eq!(
            treatment(&MessageContent::Reaction {
                message_id: "m".into(),
                emoji: None
            }),
            Treatment::Silent
        );
        assert_eq!(
            treatment(&MessageContent::Edit {
                original_message_id: "o".into(),
                text: Some("x".into())
            }),
            Treatment::Silent
        );
        assert_eq!(
            treatment(&MessageContent::Revoke {
                original_message_id: "o".into()
            }),
            Treatment::Silent
        );
        assert_eq!(
            treatment(&MessageContent::System {
                body: None,
                kind: None,
                user_id: None,
                previous_user_id: None,
            }),
            Treatment::Silent
        );
    }
}
