//! Step 4b, the handoff to a person, for a user's burst (the agent's own messages are
//! `agent.rs`):
//! - a conversation handed off is paused: the user's messages are relayed to the agent (when the
//!   agent is a number; a person answering from the WhatsApp Business app sees them there) and
//!   kept in the history, and the model is not called;
//! - a handoff ended (`/bot #ref`) or idle for `HANDOFF_IDLE_HOURS` gives the conversation back:
//!   the agent's words are folded into the history, so that the bot knows what was said;
//! - a message that is only a handoff keyword (`HANDOFF_KEYWORDS`), or the model's
//!   `handoff_to_human` call, hands the conversation to the number's agent: the user gets the
//!   handoff text, the agent a notice with the user's name, masked number, the reference and the
//!   last turns. A notice that cannot be sent is an ERROR (`handoff_agent_not_reached`), which
//!   mails on-call, so that someone answers the user.
//!
//! The user's messages and the handoff text go through the reply and record steps, once per
//! message; a retry of the message that opened a handoff does not notify the agent again.

use std::time::Duration;

use shared::clock::now_epoch_seconds;
use shared::conversation::{ConversationStore, Role, Turn};
use shared::handoff::{BUSINESS_APP_AGENT, Handoff, HandoffCause, HandoffStore, OpenHandoff};
use shared::inbound::{ConversationKey, MediaKind};
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::privacy::mask;
use shared::queue_body::BusinessEcho;
use shared::whatsapp::{Recipient, WhatsApp};

use crate::answer::Answer;
use crate::claim::ClaimedBurst;
use crate::controls::keyword_of;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, STORE_RESERVE};

/// The handoff's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffSettings {
    /// The agent's WhatsApp number; none, no handoff (`HANDOFF_AGENT_NUMBER`).
    pub agent_number: Option<String>,
    /// Whole messages that ask for a person, upper-case (`HANDOFF_KEYWORDS`).
    pub keywords: Vec<String>,
    /// What the user is told (`HANDOFF_MESSAGE`).
    pub message: String,
    /// How long a handoff lasts without the agent writing (`HANDOFF_IDLE_HOURS`).
    pub idle: Duration,
}

impl HandoffSettings {
    /// The idle time in seconds.
    pub fn idle_seconds(&self) -> i64 {
        i64::try_from(self.idle.as_secs()).unwrap_or(i64::MAX)
    }

    /// Whether `text` is only a handoff keyword (any case, closing punctuation ignored).
    pub fn asks_for_a_person(&self, text: &str) -> bool {
        self.keywords.contains(&keyword_of(text))
    }
}

/// How many of the last turns the agent's notice shows.
const NOTICE_TURNS: usize = 6;

/// The most characters of one turn the agent's notice shows.
const NOTICE_TURN_CHARS: usize = 300;

impl<C: ConversationStore + HandoffStore, L, W: WhatsApp, T> Processor<C, L, W, T> {
    /// The burst's answer when a handoff decides it; `None` when the bot answers. Folds the
    /// agent's words of an ended handoff into the history first.
    pub(crate) async fn handoff(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Option<Answer>, Retry> {
        if claimed.claim.pending.is_some() {
            return Ok(None);
        }
        let behaviour = claimed.behaviour.clone();
        let settings = &behaviour.handoff;
        let now = claimed.claimed_at;
        if let Some(handoff) = claimed.claim.handoff.clone() {
            let opened_now = claimed.claim.claimed.contains(&handoff.opened_by);
            if handoff.ended_at.is_none() && opened_now && handoff.by != HandoffCause::Echo.as_str()
            {
                // A retry of the message that opened it: the same answer, no second notice.
                return Ok(Some(Answer::control(&settings.message)));
            }
            if handoff.is_open(now, settings.idle_seconds()) {
                return self
                    .relay_to_agent(claimed, &handoff, invocation, metrics)
                    .await
                    .map(Some);
            }
            self.fold(claimed, &handoff).await?;
        }
        let asked = claimed.messages.iter().any(|m| match &m.treatment {
            Treatment::Answer(text) => settings.asks_for_a_person(text),
            _ => false,
        });
        if !asked || settings.agent_number.is_none() {
            return Ok(None);
        }
        self.hand_off(claimed, HandoffCause::User, invocation, metrics)
            .await?;
        Ok(Some(Answer::control(&settings.message)))
    }

    /// Hands the conversation to the number's agent and notifies them (once: not when a retry
    /// finds it handed off already); the user's answer is the handoff text.
    pub(crate) async fn hand_off(
        &self,
        claimed: &ClaimedBurst<'_>,
        by: HandoffCause,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let behaviour = claimed.behaviour.clone();
        let agent = behaviour
            .handoff
            .agent_number
            .as_deref()
            .unwrap_or_default();
        let first_id = claimed.claim.claimed.first().cloned().unwrap_or_default();
        let open = self.store.open_handoff(OpenHandoff {
            conversation: &claimed.conversation,
            phone_number_id: claimed.phone_number_id,
            agent,
            by,
            message_id: &first_id,
            now: claimed.claimed_at,
        });
        let (handoff, new) = match tokio::time::timeout(STORE_RESERVE, open).await {
            Ok(Ok(opened)) => opened,
            _ => {
                tracing::error!(event = LogEvent::StoreFailed.as_str(), user = %claimed.user,
                    "could not record the handoff; the messages will be retried");
                return Err(Retry);
            }
        };
        metrics.count("Handoffs", 1);
        tracing::info!(event = LogEvent::HandoffStarted.as_str(), user = %claimed.user, by = by.as_str(),
            reference = %handoff.reference, "the conversation was handed to a person; the bot is paused for it");
        if new {
            let notice = self.notice(claimed, &handoff);
            self.send_to_agent(claimed, agent, &notice, invocation)
                .await;
        }
        Ok(())
    }

    /// Relays the user's messages to the agent; they are kept in the history, and nothing is
    /// sent to the user.
    async fn relay_to_agent(
        &self,
        claimed: &ClaimedBurst<'_>,
        handoff: &Handoff,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Answer, Retry> {
        let texts: Vec<String> = claimed
            .messages
            .iter()
            .filter_map(|m| relayed_text(&m.treatment))
            .collect();
        let user_turn = (!texts.is_empty())
            .then(|| Turn::new(Role::User, texts.join("\n"), claimed.claimed_at));
        if handoff.agent != BUSINESS_APP_AGENT && !texts.is_empty() {
            let name = claimed
                .messages
                .first()
                .and_then(|m| m.message.name.clone());
            let from = name.unwrap_or_else(|| mask(claimed.recipient.id()));
            let relay = format!("#{} {from}: {}", handoff.reference, texts.join("\n"));
            self.send_to_agent(claimed, &handoff.agent, &relay, invocation)
                .await;
            metrics.count("HandoffRelays", 1);
            tracing::info!(event = LogEvent::HandoffRelayed.as_str(), user = %claimed.user, to = "agent",
                reference = %handoff.reference, "a user's message was relayed to the agent");
        }
        Ok(Answer {
            user_turn,
            ..Answer::nothing()
        })
    }

    /// Sends `text` to the agent, best effort within the invocation: a failure is an ERROR that
    /// mails on-call (the agent's 24-hour window may be closed).
    pub(crate) async fn send_to_agent(
        &self,
        claimed: &ClaimedBurst<'_>,
        agent: &str,
        text: &str,
        invocation: &Invocation,
    ) {
        let to = Recipient::Phone(agent.to_owned());
        let deadline = invocation.deadline_before(STORE_RESERVE);
        let sent = self
            .whatsapp
            .send_text(claimed.phone_number_id, &to, text, deadline)
            .await;
        if let Err(error) = sent
            && !error.outcome_unknown()
        {
            tracing::error!(event = LogEvent::HandoffAgentNotReached.as_str(), user = %claimed.user,
                agent = %mask(agent), error_code = error.code(), error = %error,
                "the handoff agent could not be reached (their WhatsApp window may be closed: they must write to the business number once a day); someone must answer the user");
        }
    }

    /// The agent's notice of a new handoff: who, the reference, the last turns, how to answer.
    fn notice(&self, claimed: &ClaimedBurst<'_>, handoff: &Handoff) -> String {
        let behaviour = &claimed.behaviour;
        let number = behaviour.name.as_deref().unwrap_or(claimed.phone_number_id);
        let name = claimed
            .messages
            .first()
            .and_then(|m| m.message.name.clone())
            .unwrap_or_default();
        let mut lines = vec![format!(
            "#{reference} {name} ({masked}) asks for a person on {number}.",
            reference = handoff.reference,
            masked = mask(claimed.recipient.id()),
        )];
        let history = claimed.history();
        for turn in history
            .iter()
            .skip(history.len().saturating_sub(NOTICE_TURNS))
        {
            let who = if turn.role == Role::User {
                "User"
            } else {
                "Bot"
            };
            let text: String = turn.text.chars().take(NOTICE_TURN_CHARS).collect();
            lines.push(format!("{who}: {text}"));
        }
        lines.push(format!(
            "Answer with \"#{r} your message\"; \"/bot #{r}\" gives the conversation back to the bot.",
            r = handoff.reference
        ));
        lines.join("\n")
    }

    /// Gives the conversation back to the bot when its handoff ended or went idle: the agent's
    /// words are folded in after the history (the model sees them now; the record step stores
    /// them), and the handoff is forgotten after the record.
    async fn fold(&self, claimed: &mut ClaimedBurst<'_>, handoff: &Handoff) -> Result<(), Retry> {
        if handoff.ended_at.is_none() {
            let end = self.store.end_handoff(
                &claimed.conversation,
                claimed.phone_number_id,
                &handoff.reference,
                now_epoch_seconds(),
            );
            if !matches!(tokio::time::timeout(STORE_RESERVE, end).await, Ok(Ok(()))) {
                tracing::error!(event = LogEvent::StoreFailed.as_str(), user = %claimed.user,
                    "could not end an idle handoff; the messages will be retried");
                return Err(Retry);
            }
            tracing::info!(event = LogEvent::HandoffEnded.as_str(), user = %claimed.user, reference = %handoff.reference,
                reason = "idle", "the bot took the conversation back: HANDOFF_IDLE_HOURS without the agent writing");
        }
        let folded: Vec<Turn> = handoff
            .turns
            .iter()
            .map(|t| {
                Turn::new(
                    Role::Assistant,
                    format!("[a person from the business] {}", t.text),
                    t.at,
                )
            })
            .collect();
        claimed.folded = Some(folded);
        Ok(())
    }

    /// Forgets a handoff whose turns the record step stored. Best effort: a WARN.
    pub(crate) async fn forget_folded(&self, claimed: &ClaimedBurst<'_>) {
        if claimed.folded.is_none() {
            return;
        }
        let forget = self.store.forget_handoff(&claimed.conversation);
        if !matches!(
            tokio::time::timeout(STORE_RESERVE, forget).await,
            Ok(Ok(()))
        ) {
            tracing::warn!(event = LogEvent::StoreFailed.as_str(), user = %claimed.user,
                "could not forget an ended handoff; its agent turns may be remembered twice");
        }
    }
}

impl<C: HandoffStore, L, W, T> Processor<C, L, W, T> {
    /// Pauses the bot for the conversation a person answered from the WhatsApp Business app on
    /// the bot's number (a coexistence echo), or renews that pause. An echo older than the idle
    /// time (a replay) changes nothing. `Err(Retry)` when the store failed.
    pub(crate) async fn pause_for_echo(
        &self,
        echo: &BusinessEcho,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let now = now_epoch_seconds();
        let idle = self.behaviour.handoff.idle_seconds();
        if echo
            .timestamp
            .is_some_and(|at| now.saturating_sub(at) >= idle)
        {
            return Ok(());
        }
        let conversation = ConversationKey::new(&echo.phone_number_id, &echo.recipient);
        let message_id = format!("echo:{}", echo.message_id);
        let open = self.store.open_handoff(OpenHandoff {
            conversation: &conversation,
            phone_number_id: &echo.phone_number_id,
            agent: BUSINESS_APP_AGENT,
            by: HandoffCause::Echo,
            message_id: &message_id,
            now,
        });
        let user = mask(&echo.recipient);
        match tokio::time::timeout(STORE_RESERVE, open).await {
            Ok(Ok((handoff, new))) => {
                if new {
                    metrics.count("Handoffs", 1);
                    tracing::info!(event = LogEvent::HandoffStarted.as_str(), user = %user, by = "echo", reference = %handoff.reference,
                        "a person answered from the WhatsApp Business app; the bot is paused for the conversation");
                }
                Ok(())
            }
            _ => {
                tracing::error!(event = LogEvent::StoreFailed.as_str(), user = %user,
                    "could not pause the bot for a business app echo; the record will be retried");
                Err(Retry)
            }
        }
    }
}

/// What of a message is relayed to the agent: its text, or what kind of message it was with
/// its caption (media are not forwarded).
fn relayed_text(treatment: &Treatment) -> Option<String> {
    let not_relayed = |what: &str, caption: Option<&String>| match caption {
        Some(caption) => format!("[{what}, not relayed] {caption}"),
        None => format!("[{what}, not relayed]"),
    };
    Some(match treatment {
        Treatment::Answer(text) => text.clone(),
        Treatment::Silent | Treatment::TooOld => return None,
        Treatment::Listen { .. } | Treatment::NotHeard => not_relayed("a voice note", None),
        Treatment::Look {
            kind: MediaKind::Video,
            caption,
            ..
        } => not_relayed("a video", caption.as_ref()),
        Treatment::Look { caption, .. } => not_relayed("a photo", caption.as_ref()),
        Treatment::Read { caption, .. } => not_relayed("a document", caption.as_ref()),
        Treatment::Unsupported => not_relayed("a message the bot cannot read", None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyword_is_a_whole_message_in_any_case() {
        let settings = HandoffSettings {
            agent_number: Some("34600111222".into()),
            keywords: vec!["HUMANO".into(), "AGENT".into()],
            message: "ok".into(),
            idle: Duration::from_secs(3600),
        };
        for (text, asks) in [
            ("humano", true),
            (" Humano! ", true),
            ("agent?", true),
            ("quiero un humano", false),
            ("agents", false),
            ("", false),
        ] {
            assert_eq!(settings.asks_for_a_person(text), asks, "{text:?}");
        }
        assert_eq!(settings.idle_seconds(), 3600);
    }

    #[test]
    fn media_is_named_not_relayed() {
        assert_eq!(
            relayed_text(&Treatment::Answer("hola".into())).as_deref(),
            Some("hola")
        );
        assert_eq!(relayed_text(&Treatment::Silent), None);
        assert!(relayed_text(&Treatment::NotHeard).is_some_and(|t| t.contains("voice note")));
        assert!(relayed_text(&Treatment::Unsupported).is_some());
        let photo = Treatment::Look {
            kind: MediaKind::Image,
            media_id: "m1".into(),
            caption: Some("mira esto".into()),
        };
        assert_eq!(
            relayed_text(&photo).as_deref(),
            Some("[a photo, not relayed] mira esto")
        );
    }
}
