//! The FIFO queue between the webhook and the processor.

use std::collections::HashSet;
use std::future::Future;
use std::io;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::inbound::InboundMessage;
use crate::queue_body::{BusinessEcho, DeliveryFailure, tagged_echo, tagged_failure};

/// The most entries one `SendMessageBatch` call accepts.
pub const MAX_BATCH: usize = 10;

/// The most bytes of bodies one `SendMessageBatch` call carries: SQS's long-standing 256 KiB
/// limit for a batch (the 1 MiB limit of 2025 is not in every region and emulator).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One message to put on the FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Messages of one group are delivered in the order they were sent: one group per conversation.
    pub group_id: String,
    /// SQS drops a second message with the same id within five minutes: Meta's message id.
    pub deduplication_id: String,
    /// The JSON body.
    pub body: String,
}

impl QueueEntry {
    /// The entry for an inbound message: grouped by conversation, deduplicated by message id.
    pub fn for_message(message: &InboundMessage) -> Result<Self, serde_json::Error> {
        Ok(Self {
            group_id: fifo_id(message.conversation().as_str()),
            deduplication_id: fifo_id(&message.id),
            body: ascii_json(message)?,
        })
    }

    /// The entry for a late delivery failure: in its conversation's group, so that it is seen
    /// in order with the user's messages, deduplicated by the failed message's id.
    pub fn for_delivery_failure(failure: &DeliveryFailure) -> Result<Self, serde_json::Error> {
        Ok(Self {
            group_id: fifo_id(failure.conversation().as_str()),
            deduplication_id: fifo_id(&format!("failed:{}", failure.message_id)),
            body: ascii_json(&tagged_failure(failure))?,
        })
    }

    /// The entry for a message a person sent from the WhatsApp Business app: in the group of
    /// that user's conversation, so that it is seen in order with the user's messages,
    /// deduplicated by `echo:<message id>`.
    pub fn for_business_echo(echo: &BusinessEcho) -> Result<Self, serde_json::Error> {
        Ok(Self {
            group_id: fifo_id(echo.conversation().as_str()),
            deduplication_id: fifo_id(&format!("echo:{}", echo.message_id)),
            body: ascii_json(&tagged_echo(echo))?,
        })
    }
}

/// Whether SQS accepts `c` in a message body. SQS documents the set `#x9 | #xA | #xD |
/// #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF` and refuses the whole request otherwise;
/// U+FFFE and U+FFFF, legal in JSON and in WhatsApp texts, are outside it.
pub fn is_sqs_body_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether SQS accepts `body` as a message body (see [`is_sqs_body_char`]).
pub fn is_sqs_safe(body: &str) -> bool {
    body.chars().all(is_sqs_body_char)
}

/// `value` as JSON in printable ASCII only: every other character is written as a `\uXXXX`
/// escape (a surrogate pair above U+FFFF), which JSON readers turn back into the same text.
/// Such a body is always within SQS's character set, whatever the user wrote.
pub fn ascii_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut bytes = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, AsciiFormatter);
    value.serialize(&mut serializer)?;
    // Only ASCII was written; the conversion cannot fail, but is not assumed.
    String::from_utf8(bytes).map_err(|e| serde_json::Error::io(io::Error::other(e)))
}

/// serde_json's compact output with every non-ASCII character escaped. serde_json already
/// escapes the control characters; DEL (U+007F) is within SQS's set.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut plain_from = 0;
        for (index, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[plain_from..index])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            plain_from = index + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }
}

/// Cuts `entries` into `SendMessageBatch` calls, in order: at most [`MAX_BATCH`] entries and
/// [`MAX_BATCH_BYTES`] of bodies each (an entry larger than that goes alone, for SQS to judge).
pub fn batches(entries: &[QueueEntry]) -> Vec<&[QueueEntry]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, entry) in entries.iter().enumerate() {
        let full = index - start == MAX_BATCH || bytes + entry.body.len() > MAX_BATCH_BYTES;
        if full && index > start {
            batches.push(&entries[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += entry.body.len();
    }
    if start < entries.len() {
        batches.push(&entries[start..]);
    }
    batches
}

/// What [`send_in_order`] did.
#[derive(Debug, Default)]
pub struct SendReport {
    /// Per entry, whether the queue accepted it.
    pub accepted: Vec<bool>,
    /// The errors of the calls that failed, in order.
    pub errors: Vec<QueueError>,
}

/// Sends `entries` in [`batches`], all of them even when a call fails, except the later
/// entries of a group one of whose entries was refused: those wait for the sender's retry, so
/// that the group's order is kept.
pub async fn send_in_order<Q: MessageQueue>(queue: &Q, entries: &[QueueEntry]) -> SendReport {
    let mut report = SendReport {
        accepted: vec![false; entries.len()],
        errors: Vec::new(),
    };
    let mut held: HashSet<&str> = HashSet::new();
    let mut offset = 0;
    for batch in batches(entries) {
        let sendable: Vec<usize> = (offset..offset + batch.len())
            .filter(|&i| !held.contains(entries[i].group_id.as_str()))
            .collect();
        offset += batch.len();
        if sendable.is_empty() {
            continue;
        }
        let call: Vec<QueueEntry> = sendable.iter().map(|&i| entries[i].clone()).collect();
        let refused: Vec<usize> = match queue.send_batch(&call).await {
            Ok(()) => Vec::new(),
            Err(QueueError::Partial(refused)) => {
                let indexes = refused.iter().map(|r| r.index).collect();
                report.errors.push(QueueError::Partial(refused));
                indexes
            }
            Err(error) => {
                report.errors.push(error);
                (0..call.len()).collect()
            }
        };
        for (position, &entry) in sendable.iter().enumerate() {
            if refused.contains(&position) {
                held.insert(entries[entry].group_id.as_str());
            } else {
                report.accepted[entry] = true;
            }
        }
    }
    report
}

/// Makes a value usable as a FIFO group or deduplication id: at most 128 characters, each
/// alphanumeric or ASCII punctuation. Values that already are come back unchanged; others are
/// replaced by a SHA-256 digest, which keeps equal values equal and different values apart.
pub fn fifo_id(value: &str) -> String {
    let usable = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b.is_ascii_punctuation());
    if usable {
        value.to_owned()
    } else {
        format!("sha256-{}", hex::encode(Sha256::digest(value.as_bytes())))
    }
}

/// Why messages were not enqueued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The call to the queue failed as a whole.
    #[error("the queue refused the batch: {0}")]
    Send(String),
    /// The queue accepted some entries and refused others.
    #[error("the queue refused {} of the batch's entries: {}", .0.len(), RefusedEntry::list(.0))]
    Partial(Vec<RefusedEntry>),
    /// A body could not be written.
    #[error("a queue body could not be serialised: {0}")]
    Body(String),
}

/// An entry of a batch that the queue refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEntry {
    /// Its position in the batch.
    pub index: usize,
    /// The queue's code and message.
    pub reason: String,
}

impl RefusedEntry {
    fn list(refused: &[Self]) -> String {
        refused
            .iter()
            .map(|r| format!("entry {}: {}", r.index, r.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A queue messages are sent to: the one that carries inbound messages to the processor, and
/// the alerter's archive and retry queue.
pub trait MessageQueue: Send + Sync {
    /// Sends up to [`MAX_BATCH`] entries in one call. Succeeds only when every entry was accepted.
    fn send_batch(
        &self,
        entries: &[QueueEntry],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// [`MessageQueue`] on an SQS queue: a FIFO queue ([`SqsQueue::new`]) or a standard one
/// ([`SqsQueue::standard`]).
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
}

impl SqsQueue {
    /// The FIFO queue at `queue_url`, reached through `client`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            fifo: true,
        }
    }

    /// The standard (not FIFO) queue at `queue_url`: entries are sent without their group and
    /// deduplication ids, which only FIFO queues take.
    pub fn standard(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            fifo: false,
            ..Self::new(client, queue_url)
        }
    }
}

impl MessageQueue for SqsQueue {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let request_entries = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let builder = SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&entry.body);
                let builder = if self.fifo {
                    builder
                        .message_group_id(&entry.group_id)
                        .message_deduplication_id(&entry.deduplication_id)
                } else {
                    builder
                };
                builder.build().map_err(|e| QueueError::Send(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(request_entries))
            .send()
            .await
            .map_err(|e| {
                QueueError::Send(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        let failed: Vec<RefusedEntry> = output
            .failed()
            .iter()
            .map(|f| RefusedEntry {
                // Entries are sent with their position as id.
                index: f.id().parse().unwrap_or(usize::MAX),
                reason: format!("{} {}", f.code(), f.message().unwrap_or_default()),
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(QueueError::Partial(failed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_usable_ids_and_digests_the_rest() {
        assert_eq!(
            fifo_id("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="),
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
        );
        assert_eq!(fifo_id("123:US.42"), "123:US.42");
        let spaced = fifo_id("has space");
        assert!(
            spaced.starts_with("sha256-") && spaced.len() == 71,
            "{spaced}"
        );
        assert_eq!(fifo_id("has space"), spaced);
        assert_ne!(fifo_id("has space "), spaced);
        assert!(fifo_id(&"x".repeat(129)).starts_with("sha256-"));
        assert!(fifo_id("ünïcode").starts_with("sha256-"));
        assert!(fifo_id("").starts_with("sha256-"));
    }

    #[test]
    fn sqs_character_set_is_the_documented_one() {
        for allowed in [
            '\t',
            '\n',
            '\r',
            ' ',
            '~',
            '\u{7F}',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{10000}',
            '\u{10FFFF}',
            '😀',
        ] {
            assert!(is_sqs_body_char(allowed), "{allowed:?}");
        }
        for refused in ['\u{0}', '\u{8}', '\u{B}', '\u{1F}', '\u{FFFE}', '\u{FFFF}'] {
            assert!(!is_sqs_body_char(refused), "{refused:?}");
        }
    }

    #[test]
    fn ascii_json_is_sqs_safe_and_reads_back_the_same() {
        let nasty =
            "a\u{0}b\u{1F}\u{7F} é 中 😀 \u{FFFE}\u{FFFF}\u{FFFD}\u{E000}\u{10FFFF} \"\\ </script>";
        let body = ascii_json(nasty).unwrap();
        assert!(body.is_ascii(), "{body}");
        assert!(is_sqs_safe(&body), "{body}");
        assert!(!is_sqs_safe(nasty), "the text itself is outside SQS's set");
        assert_eq!(serde_json::from_str::<String>(&body).unwrap(), nasty);
        assert!(body.contains(r"\ufffe\uffff"), "{body}");
        assert!(body.contains(r"\ud83d\ude00"), "a surrogate pair: {body}");
        assert_eq!(ascii_json("plain").unwrap(), r#""plain""#);
    }

    fn entry(group: &str, body_bytes: usize) -> QueueEntry {
        QueueEntry {
            group_id: group.to_owned(),
            deduplication_id: format!("{group}-{body_bytes}"),
            body: "x".repeat(body_bytes),
        }
    }

    #[test]
    fn batches_hold_ten_entries_and_256_kib_at_most() {
        let many: Vec<QueueEntry> = (0..23).map(|i| entry("g", i)).collect();
        let sizes: Vec<usize> = batches(&many).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        let large: Vec<QueueEntry> = (0..5).map(|_| entry("g", 100 * 1024)).collect();
        let sizes: Vec<usize> = batches(&large).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let huge = vec![entry("g", 300 * 1024), entry("g", 1)];
        let sizes: Vec<usize> = batches(&huge).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1]);
        assert!(batches(&[]).is_empty());
    }

    /// A queue whose calls fail as scripted, recording what it was sent.
    struct ScriptedQueue {
        outcomes: std::sync::Mutex<Vec<Result<(), QueueError>>>,
        sent: std::sync::Mutex<Vec<Vec<String>>>,
    }

    impl MessageQueue for ScriptedQueue {
        async fn send_batch(&self, entries: &[QueueEntry]) -> Result<(), QueueError> {
            let ids = entries.iter().map(|e| e.deduplication_id.clone()).collect();
            self.sent.lock().unwrap().push(ids);
            let mut outcomes = self.outcomes.lock().unwrap();
            if outcomes.is_empty() {
                Ok(())
            } else {
                outcomes.remove(0)
            }
        }
    }

    #[tokio::test]
    async fn a_failed_call_does_not_stop_the_others_but_holds_its_groups() {
        // 12 entries: a's 0..=9 in the first call, then b-10 and a-11 in the second.
        let mut entries: Vec<QueueEntry> = (0..10)
            .map(|i| QueueEntry {
                deduplication_id: format!("{}-{i}", if i == 3 { "b" } else { "a" }),
                ..entry(if i == 3 { "b" } else { "a" }, 1)
            })
            .collect();
        entries.push(QueueEntry {
            deduplication_id: "c-10".into(),
            ..entry("c", 1)
        });
        entries.push(QueueEntry {
            deduplication_id: "b-11".into(),
            ..entry("b", 1)
        });
        entries.push(QueueEntry {
            deduplication_id: "a-12".into(),
            ..entry("a", 1)
        });
        let queue = ScriptedQueue {
            outcomes: std::sync::Mutex::new(vec![Err(QueueError::Partial(vec![RefusedEntry {
                index: 3,
                reason: "InternalError".into(),
            }]))]),
            sent: std::sync::Mutex::default(),
        };
        let report = send_in_order(&queue, &entries).await;
        let sent = queue.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "the second call is made: {sent:?}");
        assert_eq!(
            sent[1],
            vec!["c-10", "a-12"],
            "b's later message waits for the retry"
        );
        assert_eq!(report.errors.len(), 1);
        let accepted: Vec<usize> = (0..entries.len()).filter(|&i| report.accepted[i]).collect();
        assert_eq!(accepted, vec![0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 12]);

        let queue = ScriptedQueue {
            outcomes: std::sync::Mutex::new(vec![Err(QueueError::Send("throttled".into()))]),
            sent: std::sync::Mutex::default(),
        };
        let report = send_in_order(&queue, &entries).await;
        assert_eq!(
            queue.sent.lock().unwrap()[1],
            vec!["c-10"],
            "a and b are held after a failed call"
        );
        assert_eq!(report.accepted.iter().filter(|a| **a).count(), 1);
    }

    proptest::proptest! {
        /// Whatever the user writes, the queue body is within SQS's set and reads back equal.
        #[test]
        fn any_text_makes_an_sqs_safe_body(text in "[\\s\\S]{0,200}", name in proptest::option::of("\\PC{0,40}")) {
            let message = InboundMessage {
                v: crate::inbound::INBOUND_MESSAGE_VERSION,
                phone_number_id: "123".into(),
                display_phone_number: None,
                sender: crate::inbound::Sender { wa_id: Some("15551234567".into()), user_id: None },
                name,
                id: "wamid.1".into(),
                timestamp: 1,
                context: None,
                content: crate::inbound::MessageContent::Text { body: text },
            };
            let entry = QueueEntry::for_message(&message).unwrap();
            proptest::prop_assert!(is_sqs_safe(&entry.body));
            let back: InboundMessage = serde_json::from_str(&entry.body).unwrap();
            proptest::prop_assert_eq!(back, message);
        }
    }
}
