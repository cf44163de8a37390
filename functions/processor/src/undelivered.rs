//! Step 2, take in Meta's late word on earlier replies: a `failed` status, which the
//! webhook puts in the conversation's queue group, marks the remembered reply undelivered, so
//! that the model is not told the user read it. A conversation whose replies fail
//! [`REPEATED_UNDELIVERED`] times in a row alerts on-call once.

use shared::conversation::{ConversationStore, MarkOutcome, StoreError, UndeliveredRequest};
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::privacy::mask;
use shared::queue_body::DeliveryFailure;

use crate::reply::Retry;
use crate::{Processor, STORE_RESERVE};

/// After this many undelivered replies in a row to one user, on-call is alerted (once: the
/// next failures are logged as warnings until a reply is delivered again).
pub const REPEATED_UNDELIVERED: usize = 3;

impl<C: ConversationStore, L, W, T> Processor<C, L, W, T> {
    /// Marks the reply that `failure` names undelivered. `Err(Retry)` when the store failed:
    /// the record is retried (marking again changes nothing).
    pub(crate) async fn mark_undelivered(
        &self,
        failure: &DeliveryFailure,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let conversation = failure.conversation();
        let request = UndeliveredRequest {
            conversation: &conversation,
            reply_id: &failure.message_id,
            error_code: failure.error_code,
        };
        let mark = tokio::time::timeout(STORE_RESERVE, self.store.mark_undelivered(request));
        let outcome = mark.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the store got no answer in time".into(),
            ))
        });
        let user = mask(&failure.recipient);
        let (code, message_id) = (failure.error_code, &failure.message_id);
        match outcome {
            Ok(MarkOutcome::Marked { in_a_row }) => {
                metrics.count("RepliesUndelivered", 1);
                if in_a_row == REPEATED_UNDELIVERED {
                    tracing::error!(event = LogEvent::RepliesRepeatedlyUndelivered.as_str(), user = %user, error_code = code,
                        in_a_row, "several replies in a row to this user failed after Meta accepted them");
                } else {
                    tracing::warn!(event = LogEvent::ReplyMarkedUndelivered.as_str(), user = %user, error_code = code,
                        message_id = %message_id, in_a_row, "a reply failed after Meta accepted it; it is remembered as undelivered");
                }
                Ok(())
            }
            Ok(MarkOutcome::AlreadyMarked | MarkOutcome::NotFound) => {
                tracing::info!(event = LogEvent::DeliveryFailureUnmatched.as_str(), user = %user, error_code = code,
                    message_id = %message_id, "the failed message is no remembered reply still to mark");
                Ok(())
            }
            Err(error) => {
                tracing::error!(event = LogEvent::StoreFailed.as_str(), user = %user, error = %error,
                    "could not mark a failed reply undelivered; retrying");
                Err(Retry)
            }
        }
    }
}
