//! Step 3, before the claim, follow a user's change of id: a `user_changed_user_id` system
//! notice moves the conversation's memory and deduplication from the user's previous
//! business-scoped id to the new one, so that the user's next message continues their conversation instead of
//! starting a stranger's.

use shared::clock::now_epoch_seconds;
use shared::conversation::{ConversationStore, MoveRequest};
use shared::inbound::InboundMessage;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::privacy::mask;

use crate::Processor;
use crate::plan::{self, QueuedRecord};
use crate::reply::Retry;

impl<C: ConversationStore, L, W, T> Processor<C, L, W, T> {
    /// Moves the conversation of each id-change notice of the burst to the user's new id.
    /// Moving is idempotent, so a redelivered notice needs no claim. `Err(Retry)` when the
    /// store failed: the burst is retried.
    pub(crate) async fn follow_id_changes(
        &self,
        burst: &[(&QueuedRecord, &InboundMessage)],
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        for (_, message) in burst {
            let Some((from, to)) = plan::id_change(message) else {
                continue;
            };
            let request = MoveRequest {
                from: &from,
                to: &to,
                now: now_epoch_seconds(),
            };
            let (previous, new) = (mask(from.as_str()), mask(to.as_str()));
            match self.store.move_conversation(request).await {
                Ok(moved) => {
                    metrics.count("UserIdsChanged", 1);
                    tracing::info!(event = LogEvent::UserIdChanged.as_str(), previous = %previous, new = %new,
                        turns = moved.turns, message_ids = moved.message_ids,
                        "the user changed their user id; the conversation follows");
                }
                Err(error) => {
                    tracing::error!(event = LogEvent::StoreFailed.as_str(), previous = %previous, new = %new, error = %error,
                        "could not move the conversation to the user's new id; retrying");
                    return Err(Retry);
                }
            }
        }
        Ok(())
    }
}
