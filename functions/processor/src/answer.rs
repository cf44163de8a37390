//! Step 6, get the answer: one LLM call for the user's turn, leaving [`REPLY_RESERVE`] of the
//! invocation for the reply, with a best-effort "read + typing" signal sent at the same time (it
//! never holds the answer back: see [`TYPING_GRACE`]). A prompt too long for the
//! model is sent once more at once, with the oldest half of the history dropped. When the LLM
//! gives no answer, or stays down through the last delivery, the user gets the fallback message;
//! when the provider refuses the request for good (400/404/413/422: too long, filtered, unknown
//! model; Bedrock's access denied), the user gets it at once and the refused turn is not remembered, so that it is not
//! sent again with the next message; otherwise an LLM failure retries the burst.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shared::conversation::{ConversationStore, Role, Turn};
use shared::handoff::{HandoffCause, HandoffStore};
use shared::inbound::InboundMessage;
use shared::llm::{Completion, Llm, LlmError, LlmRefusal, Prompt, ToolRound};
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::WhatsApp;
use tokio::time::Instant;

use crate::claim::ClaimedBurst;
use crate::prompt::{self, Input};
use crate::reply::Retry;
use crate::{Invocation, Processor, REPLY_RESERVE};

/// How long the reply waits, once the LLM has answered, for a "read + typing" call still under
/// way: long enough for a call that is about to end (so that the indicator does not arrive
/// after the reply), too short for the user to notice. A slower call is abandoned with a WARN.
pub const TYPING_GRACE: Duration = Duration::from_millis(100);

/// The model's side of a burst: the user's turn to remember and the replies to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The user's turn, when the burst had text.
    pub user_turn: Option<Turn>,
    /// The replies, in order: the answer (or the fallback) when there is a user turn, then the
    /// unsupported-message reply when a message gets it.
    pub replies: Vec<String>,
    /// How many parts of the replies (split, counted in order) an earlier invocation already
    /// sent: those are not sent again.
    pub parts_sent: usize,
    /// The tokens (in and out) the model's calls for this answer took, as the providers
    /// reported them: counted against `DAILY_TOKEN_BUDGET`.
    pub tokens: u64,
}

impl Answer {
    /// Where the answer to the user's turn is among the replies: first, when there is one.
    pub fn answer_index(&self) -> Option<usize> {
        self.user_turn.as_ref().map(|_| 0)
    }
}

impl<C: ConversationStore + HandoffStore, L: Llm, W: WhatsApp, T> Processor<C, L, W, T> {
    /// Answers the claimed burst's `input`. `Err(Retry)` when the LLM failed and the burst is
    /// to be retried.
    pub(crate) async fn answer(
        &self,
        claimed: &ClaimedBurst<'_>,
        input: Input<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Answer, Retry> {
        if let Some(resumed) = resumed_answer(claimed, &input) {
            return Ok(resumed);
        }
        let mut replies: Vec<String> = Vec::new();
        let mut user_turn = None;
        let tokens_before = tokens_used(metrics);
        if let Some(user_text) = input.user_text {
            if input.coalesced > 0 {
                metrics.count("MessagesCoalesced", input.coalesced);
            }
            let ask = self.ask_within_context(claimed, &user_text, invocation, metrics);
            let result = match input.last_answered {
                Some(message) => self.with_typing(ask, message, invocation).await,
                None => ask.await,
            };
            let (mut reply, remembered) = self.answer_or_fallback(result, claimed)?;
            if claimed.handoff_asked.load(Ordering::Relaxed) {
                self.hand_off(claimed, HandoffCause::Model, invocation, metrics)
                    .await?;
                reply.clone_from(&claimed.behaviour.handoff.message);
            }
            replies.push(reply);
            user_turn = remembered.then(|| Turn::new(Role::User, user_text, claimed.claimed_at));
        }
        if input.unsupported {
            replies.push(claimed.behaviour.unsupported_message.clone());
        }
        if input.not_heard {
            replies.push(claimed.behaviour.voice_note_failed_message.clone());
        }
        Ok(Answer {
            user_turn,
            replies,
            parts_sent: 0,
            tokens: tokens_used(metrics).saturating_sub(tokens_before),
        })
    }

    /// Runs `ask` (the LLM call) and, at the same time, marks `message` read with the typing
    /// indicator, so that the user waits for one round trip fewer. The typing call is best
    /// effort: its failure is a WARN, it ends by the LLM's deadline, and once the LLM has
    /// answered it gets at most [`TYPING_GRACE`] more.
    async fn with_typing<R>(
        &self,
        ask: impl Future<Output = R>,
        message: &InboundMessage,
        invocation: &Invocation,
    ) -> R {
        let typing = self.show_typing(message, invocation.deadline_before(REPLY_RESERVE));
        tokio::pin!(ask, typing);
        tokio::select! {
            answer = &mut ask => {
                if tokio::time::timeout(TYPING_GRACE, typing).await.is_err() {
                    tracing::warn!(event = LogEvent::TypingFailed.as_str(), error = "still under way when the LLM answered",
                        "could not mark read / show typing");
                }
                answer
            }
            () = &mut typing => ask.await,
        }
    }

    /// Marks `message` read and shows the typing indicator, giving up at `deadline`. Best effort.
    async fn show_typing(&self, message: &InboundMessage, deadline: Instant) {
        let call = self
            .whatsapp
            .mark_read_and_typing(&message.phone_number_id, &message.id);
        let error = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "the LLM's deadline passed".to_owned(),
        };
        tracing::warn!(event = LogEvent::TypingFailed.as_str(), error = %error, "could not mark read / show typing");
    }

    /// Asks the LLM, the user's turn grounded in the knowledge base's passages when one is
    /// configured (looked up once, `retrieve.rs`), the tools offered when there are (`tools.rs`);
    /// when the provider says the prompt is too long, asks once more at once with the oldest half
    /// of the history (at least one turn) dropped, going on from the tool rounds already made.
    async fn ask_within_context(
        &self,
        claimed: &ClaimedBurst<'_>,
        user_text: &str,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<String, LlmError> {
        let history = claimed.history();
        let history = history.as_ref();
        let llm_deadline = invocation.deadline_before(REPLY_RESERVE);
        // What the model gets as the user's turn; the memory keeps `user_text` (see `answer`).
        let model_text = self
            .with_passages(user_text, llm_deadline, &claimed.user, metrics)
            .await;
        let mut rounds = self.resumed_rounds(claimed);
        let result = self
            .ask(
                claimed,
                history,
                &model_text,
                &mut rounds,
                llm_deadline,
                metrics,
            )
            .await;
        match result {
            Err(error)
                if error.refusal() == Some(LlmRefusal::ContextTooLong) && !history.is_empty() =>
            {
                let shorter = history.get(history.len().div_ceil(2)..).unwrap_or_default();
                tracing::warn!(event = LogEvent::LlmHistoryTrimmed.as_str(), error = %error,
                    turns_before = history.len(), turns_after = shorter.len(),
                    "the prompt is too long for the model; asking again with the oldest history dropped");
                self.ask(
                    claimed,
                    shorter,
                    &model_text,
                    &mut rounds,
                    llm_deadline,
                    metrics,
                )
                .await
            }
            result => result,
        }
    }

    /// Asks the LLM with `history` and the user's turn, until `deadline`.
    async fn ask(
        &self,
        claimed: &ClaimedBurst<'_>,
        history: &[Turn],
        user_text: &str,
        rounds: &mut Vec<ToolRound>,
        deadline: Instant,
        metrics: &mut Metrics,
    ) -> Result<String, LlmError> {
        let system = self.system_prompt(&claimed.behaviour, deadline).await;
        let mut prompt =
            prompt::prompt(&system, history, user_text).with_files(claimed.files.clone());
        prompt.model.clone_from(&claimed.behaviour.llm);
        let completion = self
            .converse(prompt, rounds, claimed, deadline, metrics)
            .await?;
        if claimed.handoff_asked.load(Ordering::Relaxed) {
            return Ok(completion.text);
        }
        final_text(completion)
    }

    /// The reply to the user's turn, and whether the turn is remembered: the LLM's answer; the
    /// fallback message when the LLM gave no answer, refused the request for good (the turn
    /// then forgotten) or this is the last delivery; `Err(Retry)` when the LLM failed before
    /// that.
    fn answer_or_fallback(
        &self,
        result: Result<String, LlmError>,
        claimed: &ClaimedBurst<'_>,
    ) -> Result<(String, bool), Retry> {
        let user = &claimed.user;
        let fallback = || claimed.behaviour.fallback_message.clone();
        match result {
            Ok(answer) => Ok((answer, true)),
            Err(LlmError::NoAnswer(reason)) => {
                tracing::warn!(event = LogEvent::LlmNoAnswer.as_str(), user = %user, reason = %reason, "the LLM gave no answer; sending the fallback");
                Ok((fallback(), true))
            }
            Err(error) => match error.refusal() {
                Some(refusal) => {
                    log_refusal(refusal, user, &error);
                    Ok((fallback(), false))
                }
                None if claimed.last_delivery => {
                    tracing::error!(event = LogEvent::LlmFailedFinal.as_str(), user = %user, error = %error,
                        "the LLM stayed down through the last delivery; the user gets the fallback message");
                    Ok((fallback(), true))
                }
                None => {
                    tracing::warn!(event = LogEvent::LlmFailed.as_str(), user = %user, error = %error, "the LLM failed; the messages will be retried");
                    Err(Retry)
                }
            },
        }
    }
}

impl<C, L: Llm, W, T> Processor<C, L, W, T> {
    /// One LLM call for `prompt`, until `deadline`, counted in `metrics`.
    pub(crate) async fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
        metrics: &mut Metrics,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let result = self.llm.complete(prompt, deadline).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        metrics.duration_ms("LlmLatency", latency_ms);
        match &result {
            Ok(completion) => {
                metrics.count("LlmTokensIn", completion.input_tokens.unwrap_or_default());
                metrics.count("LlmTokensOut", completion.output_tokens.unwrap_or_default());
            }
            Err(_) => metrics.count("LlmErrors", 1),
        }
        result
    }
}

/// The tokens the LLM calls counted in `metrics` took so far (`complete` counts them).
fn tokens_used(metrics: &Metrics) -> u64 {
    metrics
        .counter("LlmTokensIn")
        .saturating_add(metrics.counter("LlmTokensOut"))
}

/// The answer's text. Tool calls are run by `tools.rs`: an answer that still holds only calls
/// (no tools offered, or `TOOLS_MAX_ROUNDS` reached) is no answer, so that the user gets the
/// fallback, never an empty reply.
fn final_text(completion: Completion) -> Result<String, LlmError> {
    if completion.text.trim().is_empty() {
        return Err(LlmError::NoAnswer(format!(
            "the model asked for {} tool call(s) instead of answering",
            completion.tool_calls.len()
        )));
    }
    Ok(completion.text)
}

/// Logs, as an ERROR naming its cause and what to do, that the provider refused the request for
/// good and the user gets the fallback message.
fn log_refusal(refusal: LlmRefusal, user: &str, error: &LlmError) {
    match refusal {
        LlmRefusal::ContextTooLong => {
            tracing::error!(event = LogEvent::LlmContextTooLong.as_str(), user = %user, error = %error,
            "context length exceeded even with the oldest history dropped: the user gets the fallback message; lower HISTORY_MAX_MESSAGES or choose a model with a longer context (LLM_MODEL)")
        }
        LlmRefusal::ContentFiltered => {
            tracing::error!(event = LogEvent::LlmContentFiltered.as_str(), user = %user, error = %error,
            "the provider's content filter refused the prompt: the user gets the fallback message and the turn is not remembered")
        }
        LlmRefusal::UnknownModel => {
            tracing::error!(event = LogEvent::LlmUnknownModel.as_str(), user = %user, error = %error,
            "unknown model: check LLM_MODEL (and LLM_PROVIDER, LLM_BASE_URL); the user gets the fallback message")
        }
        LlmRefusal::InvalidRequest => {
            tracing::error!(event = LogEvent::LlmRequestRefused.as_str(), user = %user, error = %error,
            "the provider refused the request as invalid: check the LLM settings (LLM_PROVIDER, LLM_BASE_URL, LLM_MODEL); the user gets the fallback message")
        }
        LlmRefusal::AccessDenied => {
            tracing::error!(event = LogEvent::LlmAccessDenied.as_str(), user = %user, error = %error,
            "the model may not be used: enable LLM_MODEL in the Bedrock console of the function's region and check the role's bedrock:InvokeModel grant; the user gets the fallback message")
        }
    }
}

/// The answer an earlier invocation got for these very messages and could not deliver, when
/// the claim returned one: sent again instead of asking the LLM, so that the user never gets
/// two different answers.
fn resumed_answer(claimed: &ClaimedBurst<'_>, input: &Input<'_>) -> Option<Answer> {
    let pending = claimed.claim.pending.as_ref()?;
    tracing::info!(event = LogEvent::AnswerResumed.as_str(), user = %claimed.user, parts_sent = pending.parts_sent,
        "sending the answer an earlier invocation could not deliver; the LLM is not asked again");
    Some(Answer {
        user_turn: input
            .user_text
            .clone()
            .map(|text| Turn::new(Role::User, text, claimed.claimed_at)),
        replies: pending.replies.clone(),
        parts_sent: pending.parts_sent,
        tokens: 0,
    })
}
