//! Step 4, claim the burst: decide what each message gets, claim the message ids and read the
//! conversation's history in one store call, and end the burst early when there is nothing to
//! answer now.

use shared::clock::now_epoch_seconds;
use shared::conversation::{Claim, ClaimRequest, ConversationStore, PendingAnswer};
use shared::inbound::{ConversationKey, InboundMessage, MediaKind, Sender};
use shared::llm::InlineFile;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::privacy::mask;
use shared::whatsapp::Recipient;

use crate::plan::{self, QueuedRecord, Treatment};
use crate::reply::BurstOutcome;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use shared::conversation::Turn;

use crate::{Behaviour, CLAIM_MARGIN, Invocation, Processor, STORE_RESERVE};

/// A message of the burst that this invocation claimed, and what it gets.
#[derive(Debug, Clone)]
pub struct ClaimedMessage<'a> {
    /// The message as queued.
    pub message: &'a InboundMessage,
    /// What it gets. A step that reads media (transcribing a voice note, say) runs after the
    /// claim and turns an [`Treatment::Unsupported`] into a [`Treatment::Answer`].
    pub treatment: Treatment,
}

/// A burst whose messages this invocation holds: what the later steps answer, send and record.
#[derive(Debug)]
pub struct ClaimedBurst<'a> {
    /// The conversation.
    pub conversation: ConversationKey,
    /// The user, masked, for logs.
    pub user: String,
    /// The token the messages were claimed with.
    pub token: String,
    /// When the messages were claimed, in seconds since the epoch: the time of the user's turn.
    pub claimed_at: i64,
    /// The store's answer: the ids held now, those done before, the history, the stale ids.
    pub claim: Claim,
    /// The messages claimed now, in queue order.
    pub messages: Vec<ClaimedMessage<'a>>,
    /// Whether a record of the burst is on its last delivery: an LLM failure then gets the
    /// fallback message instead of a retry.
    pub last_delivery: bool,
    /// Who the replies go to.
    pub recipient: Recipient,
    /// The business number the messages came to, which the replies are sent from.
    pub phone_number_id: &'a str,
    /// Messages claimed now but given back for a retry: newer than those of the pending answer
    /// this burst sends (see [`Claim::pending`]), they are answered after it, on their own.
    pub deferred: Vec<String>,
    /// The images of the burst, in order, shown to the model with the user's turn (never
    /// stored).
    pub files: Vec<InlineFile>,
    /// The media lane the burst holds while its media are in memory (`media_lane.rs`).
    pub media_lane: Option<tokio::sync::OwnedSemaphorePermit>,
    /// How the burst's number behaves: the stack's behaviour with the number's settings.
    pub behaviour: Arc<Behaviour>,
    /// The agent's words of an ended handoff, folded into the history (`handoff.rs`): the record
    /// step stores them before the new turns.
    pub folded: Option<Vec<Turn>>,
    /// Set when the model called `handoff_to_human` (`tools.rs`): the answer is the handoff.
    pub handoff_asked: AtomicBool,
}

impl ClaimedBurst<'_> {
    /// The conversation as the model sees it: the stored history, then the agent's words of a
    /// handoff folded in by this burst (stored with its new turns, `record.rs`).
    pub fn history(&self) -> Cow<'_, [Turn]> {
        match &self.folded {
            None => Cow::Borrowed(&self.claim.history),
            Some(folded) => Cow::Owned([self.claim.history.as_slice(), folded].concat()),
        }
    }
}

/// How claiming a burst ended.
#[derive(Debug)]
pub enum Claimed<'a> {
    /// Some messages are this invocation's to answer.
    Ready(Box<ClaimedBurst<'a>>),
    /// Nothing is answered now: the burst's outcome, and the ids that were done before.
    Ended(BurstOutcome, Vec<String>),
}

impl<C: ConversationStore, L, W, T> Processor<C, L, W, T> {
    /// Claims the burst's messages and reads the conversation's history, in one store call.
    /// A burst of silent messages costs no store call.
    pub(crate) async fn claim<'a>(
        &self,
        burst: &[(&'a QueuedRecord, &'a InboundMessage)],
        behaviour: Arc<Behaviour>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Claimed<'a> {
        let first = burst[0].1;
        let user = mask(first.sender.id());
        let claimed_at = now_epoch_seconds();
        let treatments = treatments(&behaviour, burst, claimed_at);
        if treatments.iter().all(|t| *t == Treatment::Silent) {
            tracing::info!(event = LogEvent::NoReplyNeeded.as_str(), user = %user, messages = burst.len(), "nothing to answer");
            return Claimed::Ended(BurstOutcome::Handled, Vec::new());
        }
        let conversation = first.conversation();
        let token = claim_token(&invocation.request_id);
        let ids: Vec<String> = burst.iter().map(|(_, m)| m.id.clone()).collect();
        let request = ClaimRequest {
            conversation: &conversation,
            message_ids: &ids,
            token: &token,
            lease_until: invocation.deadline_epoch + CLAIM_MARGIN.as_secs() as i64,
            now: claimed_at,
            rate_window_seconds: behaviour.controls.rate_window_seconds(),
            budget_day: behaviour.controls.budget_day(claimed_at),
        };
        let mut claim = match self.store.claim(request).await {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(event = LogEvent::StoreFailed.as_str(), user = %user, error = %error, "could not claim messages");
                return Claimed::Ended(BurstOutcome::Retry, Vec::new());
            }
        };
        let answerable =
            self.answerable(&claim, &conversation, &token, &user, &first.sender, metrics);
        let recipient = match answerable.await {
            Ok(recipient) => recipient,
            Err(outcome) => return Claimed::Ended(outcome, claim.done),
        };
        let deferred = self
            .defer_beyond_pending(&mut claim, &conversation, &token)
            .await;
        let messages = claimed_messages(burst, treatments, &claim.claimed);
        note_too_old(&behaviour, &messages, &user, metrics);
        Claimed::Ready(Box::new(ClaimedBurst {
            deferred,
            files: Vec::new(),
            media_lane: None,
            messages,
            last_delivery: burst
                .iter()
                .any(|(r, _)| r.receive_count >= behaviour.max_receive_count),
            behaviour,
            folded: None,
            handoff_asked: AtomicBool::new(false),
            phone_number_id: &first.phone_number_id,
            recipient,
            conversation,
            user,
            token,
            claimed_at,
            claim,
        }))
    }

    /// Reads the store's answer: who the replies go to when this invocation answers now, else
    /// how the burst ends.
    async fn answerable(
        &self,
        claim: &Claim,
        conversation: &ConversationKey,
        token: &str,
        user: &str,
        sender: &Sender,
        metrics: &mut Metrics,
    ) -> Result<Recipient, BurstOutcome> {
        metrics.count("DuplicatesSkipped", claim.done.len() as u64);
        if !claim.done.is_empty() {
            tracing::info!(event = LogEvent::DuplicatesSkipped.as_str(), user = %user, count = claim.done.len(), "messages already answered");
        }
        if !claim.held_elsewhere.is_empty() {
            tracing::warn!(event = LogEvent::HeldElsewhere.as_str(), user = %user, count = claim.held_elsewhere.len(),
                "another invocation is answering some of these messages; retrying later");
            self.release(conversation, token, &claim.claimed, None)
                .await;
            return Err(BurstOutcome::Retry);
        }
        if claim.claimed.is_empty() {
            return Err(BurstOutcome::Handled);
        }
        Recipient::of(sender).ok_or_else(|| {
            tracing::error!(
                event = LogEvent::NoRecipient.as_str(),
                "message has no sender to answer"
            );
            BurstOutcome::Handled
        })
    }

    /// When the claim holds a pending answer, gives back the claimed messages it does not
    /// answer (newer ones of the same burst), so that it is sent for its own messages and the
    /// newer ones are answered after it, in order. Returns the ids given back.
    async fn defer_beyond_pending(
        &self,
        claim: &mut Claim,
        conversation: &ConversationKey,
        token: &str,
    ) -> Vec<String> {
        let Some(pending) = &claim.pending else {
            return Vec::new();
        };
        let (answered, deferred): (Vec<String>, Vec<String>) = claim
            .claimed
            .drain(..)
            .partition(|id| pending.message_ids.contains(id));
        claim.claimed = answered;
        self.release(conversation, token, &deferred, None).await;
        deferred
    }

    /// Gives back claims this invocation will not complete, so that a retry can take them at
    /// once, with `pending`, the answer it could not deliver, for that retry to send. Best
    /// effort within [`STORE_RESERVE`]: an unreleased claim lapses with its lease (and its
    /// answer is lost: the retry asks the LLM again).
    pub(crate) async fn release(
        &self,
        conversation: &ConversationKey,
        token: &str,
        ids: &[String],
        pending: Option<&PendingAnswer>,
    ) {
        if ids.is_empty() {
            return;
        }
        let release = self.store.release(conversation, token, ids, pending);
        let error = match tokio::time::timeout(STORE_RESERVE, release).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::warn!(event = LogEvent::ReleaseFailed.as_str(), error = %error, "could not release claims; they lapse with their lease");
    }
}

/// The burst's messages that were claimed now, with their treatments, in queue order.
fn claimed_messages<'a>(
    burst: &[(&'a QueuedRecord, &'a InboundMessage)],
    treatments: Vec<Treatment>,
    claimed: &[String],
) -> Vec<ClaimedMessage<'a>> {
    burst
        .iter()
        .zip(treatments)
        .filter(|((_, m), _)| claimed.contains(&m.id))
        .map(|((_, message), treatment)| ClaimedMessage { message, treatment })
        .collect()
}

fn claim_token(request_id: &str) -> String {
    format!("{request_id}:{:016x}", rand::random::<u64>())
}

/// What each message of the burst gets at `now`: [`Treatment::TooOld`] past the configured
/// age, else what its content gets.
fn treatments(
    behaviour: &Behaviour,
    burst: &[(&QueuedRecord, &InboundMessage)],
    now: i64,
) -> Vec<Treatment> {
    let max_age = behaviour.max_message_age;
    burst
        .iter()
        .map(|(_, m)| match plan::treatment(&m.content) {
            Treatment::Silent => Treatment::Silent,
            _ if plan::is_too_old(m.timestamp, now, max_age) => Treatment::TooOld,
            Treatment::Look { kind, caption, .. } if !sees(behaviour, kind) => {
                caption.map_or(Treatment::Unsupported, Treatment::Answer)
            }
            treatment => treatment,
        })
        .collect()
}

/// Whether the model is shown media of `kind`: images with `VISION`, videos with `VISION`
/// and a model that takes video (Gemini).
fn sees(behaviour: &Behaviour, kind: MediaKind) -> bool {
    match kind {
        MediaKind::Image => behaviour.vision,
        MediaKind::Video => behaviour.vision && behaviour.video,
        _ => false,
    }
}

/// Logs and counts the claimed messages that are marked done unanswered for their age.
fn note_too_old(
    behaviour: &Behaviour,
    messages: &[ClaimedMessage<'_>],
    user: &str,
    metrics: &mut Metrics,
) {
    let too_old = messages
        .iter()
        .filter(|m| m.treatment == Treatment::TooOld)
        .count();
    if too_old > 0 {
        metrics.count("MessagesTooOld", too_old as u64);
        let max_age_hours = behaviour.max_message_age.map(|a| a.as_secs() / 3600);
        tracing::warn!(event = LogEvent::MessagesTooOld.as_str(), user = %user, count = too_old, max_age_hours,
            "messages older than MAX_MESSAGE_AGE_HOURS are marked done without an answer");
    }
}
