//! The FIFO queue between the webhook and the processor.

use std::future::Future;

use sha2::{Digest, Sha256};

use crate::inbound::InboundMessage;

/// The most entries one `SendMessageBatch` call accepts.
pub const MAX_BATCH: usize = 10;

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
            body: serde_json::to_string(message)?,
        })
    }
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
    #[error("the queue refused {} of the batch's entries: {}", .0.len(), .0.join("; "))]
    Partial(Vec<String>),
    /// A body could not be written.
    #[error("a queue body could not be serialised: {0}")]
    Body(String),
}

/// The queue that carries inbound messages to the processor.
pub trait MessageQueue: Send + Sync {
    /// Sends up to [`MAX_BATCH`] entries in one call. Succeeds only when every entry was accepted.
    fn send_batch(
        &self,
        entries: &[QueueEntry],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// [`MessageQueue`] on an SQS FIFO queue.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    /// The queue at `queue_url`, reached through `client`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
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
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_group_id(&entry.group_id)
                    .message_deduplication_id(&entry.deduplication_id)
                    .message_body(&entry.body)
                    .build()
                    .map_err(|e| QueueError::Send(e.to_string()))
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
        let failed: Vec<String> = output
            .failed()
            .iter()
            .map(|f| {
                format!(
                    "entry {}: {} {}",
                    f.id(),
                    f.code(),
                    f.message().unwrap_or_default()
                )
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
}
