//! Step 4a, the controls every conversation has, decided right after the claim and before any
//! media download or model call (they cost no LLM call):
//! - **STOP / START** (`STOP_KEYWORDS`, `START_KEYWORDS`): a message that is only a stop keyword
//!   records the opt-out (the user's record in the table) and is confirmed once
//!   (`OPTED_OUT_MESSAGE`); while opted out, nothing is sent and no model is called; a start
//!   keyword opts in again (`OPTED_IN_MESSAGE`).
//! - **`/reset`** forgets the conversation's history (`RESET_MESSAGE`).
//! - **The kill switch** (`MAINTENANCE_MESSAGE` set): every message gets that text, no model call.
//! - **The rate limit** (`RATE_LIMIT_PER_MINUTE`): the messages a user sends in a minute are
//!   counted with the claim; beyond the limit, no model call, and the burst that crosses it gets
//!   one notice (`RATE_LIMITED_MESSAGE`) for the window.
//! - **The daily token budget** (`DAILY_TOKEN_BUDGET`): the tokens of each user's answers are
//!   counted per day (UTC); once a day's count reaches the budget, no model call until the next
//!   day, and one notice (`BUDGET_REACHED_MESSAGE`) that day.
//!
//! A control's reply goes through the same reply and record steps as an answer, so it is sent
//! once per message; it is not remembered in the history.

use shared::conversation::ConversationStore;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;

use crate::answer::Answer;
use crate::claim::ClaimedBurst;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Processor, STORE_RESERVE};

/// The controls' settings and texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controls {
    /// Words that opt out, upper-case (`STOP_KEYWORDS`).
    pub stop_keywords: Vec<String>,
    /// Words that opt in again, upper-case (`START_KEYWORDS`).
    pub start_keywords: Vec<String>,
    /// The confirmation of an opt-out (`OPTED_OUT_MESSAGE`).
    pub opted_out_message: String,
    /// The confirmation of an opt-in (`OPTED_IN_MESSAGE`).
    pub opted_in_message: String,
    /// The confirmation of `/reset` (`RESET_MESSAGE`).
    pub reset_message: String,
    /// Messages a user may send in a minute before they are no longer answered; 0 for no limit
    /// (`RATE_LIMIT_PER_MINUTE`).
    pub rate_limit_per_minute: u64,
    /// The notice of the rate limit, once per minute (`RATE_LIMITED_MESSAGE`).
    pub rate_limited_message: String,
    /// The kill switch: when set, every message gets this text and no model is called
    /// (`MAINTENANCE_MESSAGE`).
    pub maintenance_message: Option<String>,
    /// The tokens (in and out) a user's answers may take in a day (UTC); 0 for no budget
    /// (`DAILY_TOKEN_BUDGET`).
    pub daily_token_budget: u64,
    /// The notice that the day's budget is spent, once a day (`BUDGET_REACHED_MESSAGE`).
    pub budget_reached_message: String,
}

/// What a message asks of the bot itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Opt out.
    Stop,
    /// Opt in again.
    Start,
    /// Forget the conversation.
    Reset,
}

/// `text` as the keywords are compared with it (the controls' and the handoff's): upper-case,
/// with the white space and closing punctuation around it ignored.
pub fn keyword_of(text: &str) -> String {
    text.trim()
        .trim_end_matches(['.', '!', '¡', '?'])
        .trim()
        .to_uppercase()
}

/// The length of the rate limit's window.
pub const RATE_WINDOW_SECONDS: i64 = 60;

impl Controls {
    /// The command `text` is, if it is only one: a keyword or `/reset`, in any case, with the
    /// white space and closing punctuation around it ignored.
    pub fn command(&self, text: &str) -> Option<Command> {
        let word = keyword_of(text);
        if word == "/RESET" {
            Some(Command::Reset)
        } else if self.stop_keywords.contains(&word) {
            Some(Command::Stop)
        } else if self.start_keywords.contains(&word) {
            Some(Command::Start)
        } else {
            None
        }
    }

    /// The day (days since the epoch, UTC) at `now` whose tokens are counted, with a budget.
    pub fn budget_day(&self, now: i64) -> Option<i64> {
        (self.daily_token_budget > 0).then(|| now.div_euclid(86_400))
    }

    /// The window the claim counts messages in: a minute with a limit, none without.
    pub fn rate_window_seconds(&self) -> i64 {
        if self.rate_limit_per_minute > 0 {
            RATE_WINDOW_SECONDS
        } else {
            0
        }
    }
}

impl Answer {
    /// A control's reply, `text`, which is not remembered.
    pub(crate) fn control(text: &str) -> Self {
        Self {
            user_turn: None,
            replies: vec![text.to_owned()],
            parts_sent: 0,
            tokens: 0,
        }
    }

    /// Nothing to send: the messages are only marked done.
    pub(crate) fn nothing() -> Self {
        Self {
            user_turn: None,
            replies: Vec::new(),
            parts_sent: 0,
            tokens: 0,
        }
    }
}

impl<C: ConversationStore, L, W, T> Processor<C, L, W, T> {
    /// The burst's answer when a control decides it (no model call), `None` when the model
    /// answers; `Err(Retry)` when the store failed to record a command.
    pub(crate) async fn control(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        metrics: &mut Metrics,
    ) -> Result<Option<Answer>, Retry> {
        if claimed.claim.pending.is_some() || !claimed.messages.iter().any(gets_a_reply) {
            return Ok(None);
        }
        let controls = &claimed.behaviour.controls;
        let standing = claimed.claim.standing;
        let command = claimed
            .messages
            .iter()
            .rev()
            .find_map(|m| match &m.treatment {
                Treatment::Answer(text) => controls.command(text),
                _ => None,
            });
        match command {
            Some(Command::Stop) => return self.opt(claimed, true, metrics).await.map(Some),
            Some(Command::Start) if standing.opted_out => {
                return self.opt(claimed, false, metrics).await.map(Some);
            }
            _ if standing.opted_out => {
                tracing::info!(event = LogEvent::UserOptedOut.as_str(), user = %claimed.user,
                    "the user opted out: nothing is sent and no model is called");
                return Ok(Some(Answer::nothing()));
            }
            Some(Command::Reset) => return self.reset(claimed).await.map(Some),
            _ => {}
        }
        if let Some(text) = &controls.maintenance_message {
            metrics.count("MaintenanceReplies", 1);
            return Ok(Some(Answer::control(text)));
        }
        if let Some(answer) = self.rate_limited(claimed, metrics) {
            return Ok(Some(answer));
        }
        Ok(self.over_budget(claimed, metrics).await)
    }

    /// The burst's answer when the user's answers took the day's budget: the notice, once a
    /// day, else nothing. A notice that cannot be noted is not sent (a later message tries
    /// again).
    async fn over_budget(
        &self,
        claimed: &ClaimedBurst<'_>,
        metrics: &mut Metrics,
    ) -> Option<Answer> {
        let controls = &claimed.behaviour.controls;
        let standing = claimed.claim.standing;
        let day = controls.budget_day(claimed.claimed_at)?;
        if standing.tokens_today < controls.daily_token_budget {
            return None;
        }
        metrics.count("MessagesOverBudget", claimed.messages.len() as u64);
        tracing::warn!(event = LogEvent::TokenBudgetReached.as_str(), user = %claimed.user,
            tokens_today = standing.tokens_today, budget = controls.daily_token_budget,
            "the user's answers took DAILY_TOKEN_BUDGET today: no model call until tomorrow (UTC)");
        if standing.budget_noticed {
            return Some(Answer::nothing());
        }
        let note = self
            .store
            .note_budget_notice(&claimed.conversation, day, claimed.claimed_at);
        match tokio::time::timeout(STORE_RESERVE, note).await {
            Ok(Ok(true)) => Some(Answer::control(&controls.budget_reached_message)),
            _ => Some(Answer::nothing()),
        }
    }

    /// Adds the tokens `answer` took to the user's count of the day, when there is a budget.
    /// Best effort: a count that cannot be written is a WARN.
    pub(crate) async fn count_tokens(&self, claimed: &ClaimedBurst<'_>, tokens: u64) {
        let Some(day) = claimed.behaviour.controls.budget_day(claimed.claimed_at) else {
            return;
        };
        if tokens == 0 {
            return;
        }
        let add = self
            .store
            .add_tokens(&claimed.conversation, day, tokens, claimed.claimed_at);
        if !matches!(tokio::time::timeout(STORE_RESERVE, add).await, Ok(Ok(()))) {
            tracing::warn!(event = LogEvent::StoreFailed.as_str(), user = %claimed.user,
                "could not count the answer's tokens against DAILY_TOKEN_BUDGET");
        }
    }

    /// Records the opt-out (`opted_out`) or the opt-in, confirming it once.
    async fn opt(
        &self,
        claimed: &ClaimedBurst<'_>,
        opted_out: bool,
        metrics: &mut Metrics,
    ) -> Result<Answer, Retry> {
        let controls = &claimed.behaviour.controls;
        if opted_out && claimed.claim.standing.opted_out {
            return Ok(Answer::nothing());
        }
        let write = self
            .store
            .set_opted_out(&claimed.conversation, opted_out, claimed.claimed_at);
        store_result(
            tokio::time::timeout(STORE_RESERVE, write).await,
            &claimed.user,
        )?;
        metrics.count(
            if opted_out {
                "UsersOptedOut"
            } else {
                "UsersOptedIn"
            },
            1,
        );
        tracing::info!(event = LogEvent::OptOutChanged.as_str(), user = %claimed.user, opted_out,
            "the user opted out or back in");
        Ok(Answer::control(if opted_out {
            &controls.opted_out_message
        } else {
            &controls.opted_in_message
        }))
    }

    /// Forgets the conversation's history (`/reset`) and confirms it.
    async fn reset(&self, claimed: &mut ClaimedBurst<'_>) -> Result<Answer, Retry> {
        let forget = self.store.forget_conversation(&claimed.conversation);
        store_result(
            tokio::time::timeout(STORE_RESERVE, forget).await,
            &claimed.user,
        )?;
        claimed.claim.history.clear();
        tracing::info!(event = LogEvent::ConversationReset.as_str(), user = %claimed.user,
            "the user reset the conversation");
        Ok(Answer::control(&claimed.behaviour.controls.reset_message))
    }

    /// The burst's answer when the user is over the rate limit: the notice for the burst that
    /// crossed it, nothing for the later ones of the window.
    fn rate_limited(&self, claimed: &ClaimedBurst<'_>, metrics: &mut Metrics) -> Option<Answer> {
        let controls = &claimed.behaviour.controls;
        let limit = controls.rate_limit_per_minute;
        let standing = claimed.claim.standing;
        if limit == 0 || standing.in_window <= limit {
            return None;
        }
        metrics.count("MessagesRateLimited", claimed.messages.len() as u64);
        let crossed = standing.in_window.saturating_sub(standing.counted) <= limit;
        tracing::warn!(event = LogEvent::RateLimited.as_str(), user = %claimed.user,
            in_window = standing.in_window, limit, notice = crossed,
            "the user is over RATE_LIMIT_PER_MINUTE: no model call");
        Some(if crossed {
            Answer::control(&controls.rate_limited_message)
        } else {
            Answer::nothing()
        })
    }
}

/// Whether a message of this treatment would get a reply (a message too old, or a reaction,
/// gets none, whatever the controls say).
fn gets_a_reply(message: &crate::claim::ClaimedMessage<'_>) -> bool {
    !matches!(message.treatment, Treatment::TooOld | Treatment::Silent)
}

/// A command's store write, as the step's outcome: a failure (or no answer in time) retries the
/// burst.
fn store_result<E: std::fmt::Display>(
    result: Result<Result<(), E>, tokio::time::error::Elapsed>,
    user: &str,
) -> Result<(), Retry> {
    let error = match result {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer in time".to_owned(),
    };
    tracing::error!(event = LogEvent::StoreFailed.as_str(), user = %user, error = %error,
        "could not record the user's command; the message will be retried");
    Err(Retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls() -> Controls {
        Controls {
            stop_keywords: vec!["STOP".into(), "BAJA".into()],
            start_keywords: vec!["START".into(), "ALTA".into()],
            opted_out_message: "bye".into(),
            opted_in_message: "hi".into(),
            reset_message: "reset".into(),
            rate_limit_per_minute: 10,
            rate_limited_message: "slow down".into(),
            maintenance_message: None,
            daily_token_budget: 0,
            budget_reached_message: "enough".into(),
        }
    }

    #[test]
    fn a_command_is_a_whole_message_in_any_case() {
        let c = controls();
        for (text, command) in [
            ("STOP", Some(Command::Stop)),
            (" stop. ", Some(Command::Stop)),
            ("Baja", Some(Command::Stop)),
            ("alta!", Some(Command::Start)),
            ("Start", Some(Command::Start)),
            ("/reset", Some(Command::Reset)),
            ("/RESET ", Some(Command::Reset)),
            ("please stop", None),
            ("stop sending me offers", None),
            ("/resetting", None),
            ("", None),
        ] {
            assert_eq!(c.command(text), command, "{text:?}");
        }
    }

    #[test]
    fn messages_are_counted_only_with_a_limit() {
        assert_eq!(controls().rate_window_seconds(), 60);
        let off = Controls {
            rate_limit_per_minute: 0,
            ..controls()
        };
        assert_eq!(off.rate_window_seconds(), 0);
        assert_eq!(off.budget_day(86_400 * 3 + 5), None);
        let budget = Controls {
            daily_token_budget: 1000,
            ..controls()
        };
        assert_eq!(budget.budget_day(86_400 * 3 + 5), Some(3));
        assert_eq!(budget.budget_day(86_400 * 3 - 1), Some(2));
    }
}
