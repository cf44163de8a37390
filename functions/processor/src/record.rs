//! Step 8, record the turns: the user's turn and what the user got of the answer are appended to
//! the history, and the claimed ids marked done, in the burst's second store call.

use shared::clock::now_epoch_seconds;
use shared::conversation::{CompleteRequest, ConversationStore, Role, StoreError, Turn};
use shared::log_event::LogEvent;

use crate::claim::ClaimedBurst;
use crate::reply::SentReply;
use crate::{Processor, STORE_RESERVE};

impl<C: ConversationStore, L, W, T> Processor<C, L, W, T> {
    /// Stores the burst's new turns, `user_turn` and `sent_answer` (the assistant's, with the
    /// ids of the messages it went out as, so that a late failure can mark it), and marks the
    /// claimed messages done, within [`STORE_RESERVE`]. A failure is logged, not retried:
    /// the reply went out, and retrying the records would answer twice.
    pub(crate) async fn record(
        &self,
        claimed: &ClaimedBurst<'_>,
        user_turn: Option<Turn>,
        sent_answer: Option<SentReply>,
    ) {
        let mut new_turns: Vec<Turn> = claimed.folded.clone().unwrap_or_default();
        new_turns.extend(user_turn);
        if let Some(answer) = sent_answer {
            new_turns.push(Turn {
                sent_as: answer.sent_as,
                ..Turn::new(Role::Assistant, answer.text, now_epoch_seconds())
            });
        }
        let complete = CompleteRequest {
            conversation: &claimed.conversation,
            token: &claimed.token,
            message_ids: &claimed.claim.claimed,
            history: claimed.claim.history.clone(),
            new_turns,
            history_seq: claimed.claim.history_seq,
            now: now_epoch_seconds(),
        };
        let write = tokio::time::timeout(STORE_RESERVE, self.store.complete(complete));
        let result = write.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the write got no answer in time".to_owned(),
            ))
        });
        if let Err(error) = result {
            let event = if error == StoreError::ClaimLost {
                LogEvent::ClaimLost.as_str()
            } else {
                LogEvent::StoreFailed.as_str()
            };
            tracing::error!(event, user = %claimed.user, error = %error,
                "the reply was sent but the conversation could not be stored");
        }
    }
}
