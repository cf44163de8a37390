//! Step 4a, the agent's messages: when the number's handoff agent writes to the bot's number,
//! the bot does not answer them; it reads what they ask (`shared::handoff::agent_command`):
//! - `#4821 text` sends `text` to the user of that handoff and keeps it, so that the bot knows
//!   it when it takes the conversation back;
//! - `/bot #4821` gives that conversation back to the bot;
//! - anything else gets a short help text.
//!
//! The agent gets a line back only when something did not go as asked (an unknown reference, a
//! message WhatsApp refused) and when a conversation goes back to the bot. Each message is taken
//! once: its claim makes a retry skip it, and its turn is kept once per message id.

use shared::clock::now_epoch_seconds;
use shared::conversation::ConversationStore;
use shared::handoff::{AgentCommand, AgentTurn, HandoffStore, agent_command, recipient_of};
use shared::inbound::ConversationKey;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::WhatsApp;

use crate::answer::Answer;
use crate::claim::ClaimedBurst;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, STORE_RESERVE};

/// What the agent is told when a message is not a command.
pub const AGENT_HELP: &str = "To answer a customer, start with their reference: \"#4821 your message\". \"/bot #4821\" gives the conversation back to the bot.";

impl<C: ConversationStore + HandoffStore, L, W: WhatsApp, T> Processor<C, L, W, T> {
    /// The burst's answer when it comes from the number's handoff agent; `None` otherwise.
    pub(crate) async fn agent_messages(
        &self,
        claimed: &ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Option<Answer>, Retry> {
        let agent = claimed.behaviour.handoff.agent_number.as_deref();
        if agent.is_none() || agent != Some(claimed.recipient.id()) {
            return Ok(None);
        }
        let mut lines = Vec::new();
        for message in &claimed.messages {
            let line = match &message.treatment {
                Treatment::Answer(text) => {
                    self.agent_command(claimed, &message.message.id, text, invocation, metrics)
                        .await?
                }
                Treatment::Silent | Treatment::TooOld => None,
                _ => Some("Only text can be relayed; send the customer media from the WhatsApp Business app.".to_owned()),
            };
            lines.extend(line);
        }
        Ok(Some(if lines.is_empty() {
            Answer::nothing()
        } else {
            Answer::control(&lines.join("\n"))
        }))
    }

    /// Does what one agent message asks; the line to tell the agent, if any.
    async fn agent_command(
        &self,
        claimed: &ClaimedBurst<'_>,
        message_id: &str,
        text: &str,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Option<String>, Retry> {
        let (reference, relay) = match agent_command(text) {
            AgentCommand::Relay { reference, text } => (reference, Some(text)),
            AgentCommand::Resume { reference } => (reference, None),
            AgentCommand::Unclear => return Ok(Some(AGENT_HELP.to_owned())),
        };
        let find = self.store.find_handoff(claimed.phone_number_id, reference);
        let (conversation, _) = match tokio::time::timeout(STORE_RESERVE, find).await {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => {
                tracing::warn!(
                    event = LogEvent::HandoffReferenceUnknown.as_str(),
                    reference,
                    "the agent wrote a reference no open handoff holds"
                );
                return Ok(Some(format!("#{reference} is not an open conversation.")));
            }
            _ => {
                tracing::error!(
                    event = LogEvent::StoreFailed.as_str(),
                    "could not look up a handoff reference; the agent's message will be retried"
                );
                return Err(Retry);
            }
        };
        let outcome = match relay {
            None => self.give_back(claimed, &conversation, reference).await?,
            Some(text) => {
                let relay = Relay {
                    conversation: &conversation,
                    reference,
                    message_id,
                    text,
                };
                self.relay_to_user(claimed, relay, invocation, metrics)
                    .await
            }
        };
        Ok(outcome)
    }

    /// Gives `reference`'s conversation back to the bot (`/bot #ref`); the agent is told.
    async fn give_back(
        &self,
        claimed: &ClaimedBurst<'_>,
        conversation: &ConversationKey,
        reference: &str,
    ) -> Result<Option<String>, Retry> {
        let end = self.store.end_handoff(
            conversation,
            claimed.phone_number_id,
            reference,
            now_epoch_seconds(),
        );
        if !matches!(tokio::time::timeout(STORE_RESERVE, end).await, Ok(Ok(()))) {
            tracing::error!(
                event = LogEvent::StoreFailed.as_str(),
                "could not end a handoff; the agent's message will be retried"
            );
            return Err(Retry);
        }
        tracing::info!(
            event = LogEvent::HandoffEnded.as_str(),
            reference,
            reason = "agent",
            "the bot took the conversation back: the agent said /bot"
        );
        Ok(Some(format!("#{reference} is back with the bot.")))
    }

    /// Sends the agent's words to the user of the handoff and keeps them (once per message id);
    /// the line to tell the agent when WhatsApp refused them.
    async fn relay_to_user(
        &self,
        claimed: &ClaimedBurst<'_>,
        relay: Relay<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Option<String> {
        let reference = relay.reference;
        let Some(user) = recipient_of(relay.conversation) else {
            return Some(format!("#{reference} is not an open conversation."));
        };
        let deadline = invocation.deadline_before(STORE_RESERVE);
        let sent = self
            .whatsapp
            .send_text(claimed.phone_number_id, &user, relay.text, deadline)
            .await;
        if let Err(error) = &sent
            && !error.outcome_unknown()
        {
            tracing::warn!(event = LogEvent::HandoffRelayed.as_str(), reference, error_code = error.code(), error = %error,
                "the agent's message could not be sent to the user; the agent is told");
            return Some(format!(
                "#{reference}: WhatsApp did not take your message ({error})."
            ));
        }
        metrics.count("HandoffRelays", 1);
        tracing::info!(
            event = LogEvent::HandoffRelayed.as_str(),
            reference,
            to = "user",
            "the agent's message was relayed to the user"
        );
        let turn = AgentTurn {
            text: relay.text.to_owned(),
            at: now_epoch_seconds(),
        };
        let keep = self
            .store
            .add_agent_turn(relay.conversation, relay.message_id, turn);
        if !matches!(tokio::time::timeout(STORE_RESERVE, keep).await, Ok(Ok(()))) {
            tracing::warn!(
                event = LogEvent::StoreFailed.as_str(),
                reference,
                "could not keep the agent's message; the bot will not know it"
            );
        }
        None
    }
}

/// An agent's message to relay to a user.
struct Relay<'a> {
    conversation: &'a ConversationKey,
    reference: &'a str,
    message_id: &'a str,
    text: &'a str,
}
