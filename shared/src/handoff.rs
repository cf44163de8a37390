//! Human handoff: a conversation handed to a person, who answers from their own WhatsApp (the
//! number's agent) or from the WhatsApp Business app on the bot's number (coexistence). While a
//! conversation is handed off the bot does not answer it; the agent's words are kept so that the
//! bot knows what was said when it takes the conversation back.
//!
//! In the table: `pk = "ho#<conversation key>"` holds the [`Handoff`]; `pk =
//! "hr#<phone_number_id>#<reference>"` maps the short reference the agent writes (`#4821`) to the
//! conversation.

use std::future::Future;

use crate::conversation::StoreError;
use crate::inbound::ConversationKey;
use crate::whatsapp::Recipient;

/// The prefix of a conversation's handoff item.
pub const HANDOFF_KEY_PREFIX: &str = "ho#";

/// The prefix of a reference's item.
pub const REFERENCE_KEY_PREFIX: &str = "hr#";

/// The agent of a conversation paused by a person answering from the WhatsApp Business app.
pub const BUSINESS_APP_AGENT: &str = "business_app";

/// How long handoff items are kept after their last write, in seconds (30 days).
pub const HANDOFF_MEMORY_SECONDS: i64 = 30 * 86_400;

/// The partition key of `conversation`'s handoff.
pub fn handoff_key(conversation: &ConversationKey) -> String {
    format!("{HANDOFF_KEY_PREFIX}{}", conversation.as_str())
}

/// The partition key of `reference` on `phone_number_id`.
pub fn reference_key(phone_number_id: &str, reference: &str) -> String {
    format!("{REFERENCE_KEY_PREFIX}{phone_number_id}#{reference}")
}

/// Who a conversation's messages go to, from its key (`<phone_number_id>:<user>`): a phone
/// number when the user part is digits, else a business-scoped user id.
pub fn recipient_of(conversation: &ConversationKey) -> Option<Recipient> {
    let (_, user) = conversation.as_str().split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some(if user.bytes().all(|b| b.is_ascii_digit()) {
        Recipient::Phone(user.to_owned())
    } else {
        Recipient::UserId(user.to_owned())
    })
}

/// What started a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffCause {
    /// The user asked with a keyword.
    User,
    /// The model called `handoff_to_human`.
    Model,
    /// A person answered from the WhatsApp Business app on the bot's number.
    Echo,
}

impl HandoffCause {
    /// The name stored in the item's `by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Model => "model",
            Self::Echo => "echo",
        }
    }
}

/// Something the agent said to the user, kept until the bot takes the conversation back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTurn {
    /// The text relayed to the user.
    pub text: String,
    /// When, in seconds since the epoch.
    pub at: i64,
}

/// A conversation handed to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The short reference the agent writes, four digits.
    pub reference: String,
    /// The agent's WhatsApp number, or [`BUSINESS_APP_AGENT`].
    pub agent: String,
    /// When it started.
    pub since: i64,
    /// When the agent last wrote (`since` until they do): the idle time counts from it.
    pub last_agent_at: i64,
    /// When the bot took the conversation back, if it did.
    pub ended_at: Option<i64>,
    /// What started it (`user`, `model`, `echo`).
    pub by: String,
    /// The message id that started it, so that a retry of that message is not taken for a
    /// message to relay.
    pub opened_by: String,
    /// What the agent said, not yet folded into the conversation's history.
    pub turns: Vec<AgentTurn>,
}

impl Handoff {
    /// Whether the bot is paused for the conversation at `now`: started, not ended, and the
    /// agent wrote within `idle_seconds`.
    pub fn is_open(&self, now: i64, idle_seconds: i64) -> bool {
        self.ended_at.is_none() && now.saturating_sub(self.last_agent_at) < idle_seconds
    }
}

/// A request to hand a conversation to a person.
#[derive(Debug, Clone, Copy)]
pub struct OpenHandoff<'a> {
    /// The conversation.
    pub conversation: &'a ConversationKey,
    /// The business number it is with.
    pub phone_number_id: &'a str,
    /// The agent's number, or [`BUSINESS_APP_AGENT`].
    pub agent: &'a str,
    /// What started it.
    pub by: HandoffCause,
    /// The message that started it.
    pub message_id: &'a str,
    /// The current time, in seconds since the epoch.
    pub now: i64,
}

/// Where handoffs are kept.
pub trait HandoffStore: Send + Sync {
    /// Hands the conversation to a person, giving it a reference no open handoff of the number
    /// holds. When the conversation is already handed off, it stays so (its agent's time
    /// renewed) and that handoff is returned: `(handoff, false)`.
    fn open_handoff(
        &self,
        request: OpenHandoff<'_>,
    ) -> impl Future<Output = Result<(Handoff, bool), StoreError>> + Send;

    /// The conversation an open reference of `phone_number_id` names, with its handoff.
    fn find_handoff(
        &self,
        phone_number_id: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<(ConversationKey, Handoff)>, StoreError>> + Send;

    /// Keeps what the agent said (once per `message_id`) and renews the agent's time.
    fn add_agent_turn(
        &self,
        conversation: &ConversationKey,
        message_id: &str,
        turn: AgentTurn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives the conversation back to the bot at `now`, freeing its reference. The agent's turns
    /// stay until [`HandoffStore::forget_handoff`].
    fn end_handoff(
        &self,
        conversation: &ConversationKey,
        phone_number_id: &str,
        reference: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets an ended handoff once its turns are in the history.
    fn forget_handoff(
        &self,
        conversation: &ConversationKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What the agent's message asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand<'a> {
    /// `#4821 text`: send `text` to the conversation of that reference.
    Relay {
        /// The reference, without `#`.
        reference: &'a str,
        /// What to send.
        text: &'a str,
    },
    /// `/bot #4821`: give that conversation back to the bot.
    Resume {
        /// The reference, without `#`.
        reference: &'a str,
    },
    /// Anything else: the agent is told how to write.
    Unclear,
}

/// Reads the agent's message `text`.
pub fn agent_command(text: &str) -> AgentCommand<'_> {
    let text = text.trim();
    if let Some(rest) = text
        .strip_prefix("/bot")
        .or_else(|| text.strip_prefix("/BOT"))
    {
        return match reference_at_start(rest.trim_start()) {
            Some((reference, rest)) if rest.trim().is_empty() => AgentCommand::Resume { reference },
            _ => AgentCommand::Unclear,
        };
    }
    match reference_at_start(text) {
        Some((reference, rest)) if !rest.trim().is_empty() => AgentCommand::Relay {
            reference,
            text: rest.trim(),
        },
        _ => AgentCommand::Unclear,
    }
}

/// The reference (`#` and digits) at the start of `text`, and what follows it.
fn reference_at_start(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix('#')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=8).contains(&digits) {
        return None;
    }
    let (reference, after) = rest.split_at(digits);
    if !after.is_empty() && !after.starts_with(char::is_whitespace) {
        return None;
    }
    Some((reference, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agents_commands() {
        assert_eq!(
            agent_command("#4821 Hola, soy Ana"),
            AgentCommand::Relay {
                reference: "4821",
                text: "Hola, soy Ana"
            }
        );
        assert_eq!(
            agent_command("  #4821\nline two "),
            AgentCommand::Relay {
                reference: "4821",
                text: "line two"
            }
        );
        assert_eq!(
            agent_command("/bot #4821"),
            AgentCommand::Resume { reference: "4821" }
        );
        assert_eq!(
            agent_command("/BOT #4821 "),
            AgentCommand::Resume { reference: "4821" }
        );
        for unclear in [
            "#4821",
            "#48a1 hi",
            "hello #4821",
            "/bot",
            "/bot #4821 now",
            "#123456789 too long",
            "",
        ] {
            assert_eq!(agent_command(unclear), AgentCommand::Unclear, "{unclear:?}");
        }
    }

    #[test]
    fn replies_go_to_the_user_of_the_conversation_key() {
        let phone = ConversationKey::new("1065", "34600111222");
        assert_eq!(
            recipient_of(&phone),
            Some(Recipient::Phone("34600111222".into()))
        );
        let user_id = ConversationKey::new("1065", "US.13491208655302741918");
        assert_eq!(
            recipient_of(&user_id),
            Some(Recipient::UserId("US.13491208655302741918".into()))
        );
    }

    #[test]
    fn a_handoff_is_open_until_ended_or_idle() {
        let handoff = Handoff {
            reference: "4821".into(),
            agent: "34600111222".into(),
            since: 1000,
            last_agent_at: 2000,
            ended_at: None,
            by: "user".into(),
            opened_by: "wamid.A".into(),
            turns: Vec::new(),
        };
        assert!(handoff.is_open(2000 + 3599, 3600));
        assert!(!handoff.is_open(2000 + 3600, 3600));
        let ended = Handoff {
            ended_at: Some(2100),
            ..handoff
        };
        assert!(!ended.is_open(2100, 3600));
    }
}
