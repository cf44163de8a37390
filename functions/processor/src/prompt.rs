//! Step 5, turn the claimed messages into the model's input: the texts that get an answer become
//! one user turn, which follows the conversation's history in the prompt.

use shared::conversation::{Role, Turn};
use shared::inbound::InboundMessage;
use shared::llm::{Prompt, PromptTurn};

use crate::claim::ClaimedMessage;
use crate::plan::Treatment;

/// What the claimed messages ask of the model and of the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Input<'a> {
    /// The user's turn: the texts of the messages that get an answer, in order, one per line;
    /// `None` when no message does.
    pub user_text: Option<String>,
    /// How many of those texts were joined onto the first.
    pub coalesced: u64,
    /// The last message that gets an answer: it is marked read, with the typing indicator.
    pub last_answered: Option<&'a InboundMessage>,
    /// Whether a message gets the unsupported-message reply.
    pub unsupported: bool,
    /// Whether a voice note could not be heard, so that the user is asked to type it.
    pub not_heard: bool,
}

impl<'a> Input<'a> {
    /// The input the claimed `messages` give, from their treatments.
    pub fn of(messages: &[ClaimedMessage<'a>]) -> Self {
        let texts: Vec<&str> = messages
            .iter()
            .filter_map(|m| match &m.treatment {
                Treatment::Answer(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        Self {
            user_text: (!texts.is_empty()).then(|| texts.join("\n")),
            coalesced: texts.len().saturating_sub(1) as u64,
            last_answered: messages
                .iter()
                .rev()
                .find(|m| matches!(m.treatment, Treatment::Answer(_)))
                .map(|m| m.message),
            unsupported: messages
                .iter()
                .any(|m| m.treatment == Treatment::Unsupported),
            not_heard: messages.iter().any(|m| m.treatment == Treatment::NotHeard),
        }
    }
}

/// Put before a remembered reply that Meta reported undelivered, so that the model knows the
/// user never saw it.
pub const UNDELIVERED_NOTE: &str =
    "[Not delivered: WhatsApp could not deliver this reply, so the user never saw it.]";

/// The prompt for `user_text`: the persona `system`, the conversation's `history` (a reply that
/// was not delivered marked with [`UNDELIVERED_NOTE`]), then the user's turn.
pub fn prompt(system: &str, history: &[Turn], user_text: &str) -> Prompt {
    let turns = history
        .iter()
        .map(|t| PromptTurn {
            role: t.role,
            text: match t.undelivered {
                Some(_) => format!("{UNDELIVERED_NOTE}\n{}", t.text),
                None => t.text.clone(),
            },
        })
        .chain(std::iter::once(PromptTurn {
            role: Role::User,
            text: user_text.to_owned(),
        }));
    Prompt::new(system.to_owned(), turns)
}

/// A prompt's turns as (role, text) pairs, for tests to compare.
#[cfg(test)]
pub(crate) fn roles_and_texts(prompt: &Prompt) -> Vec<(Role, &str)> {
    prompt
        .turns
        .iter()
        .map(|t| (t.role, t.text.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::conversation::Undelivered;

    fn message(id: &str) -> InboundMessage {
        serde_json::from_value(serde_json::json!({"v": 1, "phone_number_id": "P",
            "sender": {"wa_id": "1555"}, "id": id, "timestamp": 1,
            "content": {"type": "text", "body": "x"}}))
        .unwrap()
    }

    #[test]
    fn answered_texts_become_one_turn_and_the_last_of_them_gets_the_typing_indicator() {
        let (a, b, c, d) = (message("a"), message("b"), message("c"), message("d"));
        let claimed = |message, treatment| ClaimedMessage { message, treatment };
        let messages = [
            claimed(&a, Treatment::Answer("Hi".into())),
            claimed(&b, Treatment::Unsupported),
            claimed(&c, Treatment::Answer("help".into())),
            claimed(&d, Treatment::Silent),
        ];
        let input = Input::of(&messages);
        assert_eq!(input.user_text.as_deref(), Some("Hi\nhelp"));
        assert_eq!(input.coalesced, 1);
        assert_eq!(input.last_answered.map(|m| m.id.as_str()), Some("c"));
        assert!(input.unsupported);
    }

    #[test]
    fn a_burst_without_text_has_no_user_turn() {
        let a = message("a");
        let input = Input::of(&[ClaimedMessage {
            message: &a,
            treatment: Treatment::Unsupported,
        }]);
        assert_eq!(
            input,
            Input {
                user_text: None,
                coalesced: 0,
                last_answered: None,
                unsupported: true,
                not_heard: false
            }
        );
    }

    #[test]
    fn the_prompt_is_the_history_then_the_users_turn() {
        let history = [
            Turn::new(Role::User, "My name is Ana", 1),
            Turn::new(Role::Assistant, "Hello Ana", 2),
        ];
        let prompt = prompt("Be kind.", &history, "What is my name?");
        assert_eq!(prompt.system, "Be kind.");
        assert_eq!(
            roles_and_texts(&prompt),
            [
                (Role::User, "My name is Ana"),
                (Role::Assistant, "Hello Ana"),
                (Role::User, "What is my name?")
            ]
        );
    }

    #[test]
    fn a_reply_that_was_not_delivered_is_shown_as_such() {
        let history = [
            Turn::new(Role::User, "Price?", 1),
            Turn {
                undelivered: Some(Undelivered {
                    error_code: Some(131_026),
                }),
                ..Turn::new(Role::Assistant, "It costs 5 euros.", 2)
            },
        ];
        let prompt = prompt("Be kind.", &history, "Hello?");
        assert_eq!(
            roles_and_texts(&prompt)[1],
            (
                Role::Assistant,
                format!("{UNDELIVERED_NOTE}\nIt costs 5 euros.").as_str()
            )
        );
    }
}
