//! The LLM port and its two providers: OpenAI-compatible Chat Completions ([`openai`]) and
//! Gemini's native `generateContent` ([`gemini`]).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::conversation::Role;
use crate::retry::Retryable;

/// One message of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTurn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
}

/// What is sent to the model: the persona and the conversation, ending with the user's turn.
/// Consecutive turns of one role are already merged (see [`Prompt::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The system prompt (`SYSTEM_PROMPT`).
    pub system: String,
    /// The conversation, oldest first, alternating roles, the last one the user's.
    pub turns: Vec<PromptTurn>,
}

impl Prompt {
    /// Builds a prompt from the system prompt and the turns in order, merging consecutive turns of
    /// one role (separated by a blank line) and dropping leading assistant turns, as providers
    /// such as Gemini require the conversation to alternate and to start with the user.
    pub fn new(system: impl Into<String>, turns: impl IntoIterator<Item = PromptTurn>) -> Self {
        let mut merged: Vec<PromptTurn> = Vec::new();
        for turn in turns {
            if turn.text.trim().is_empty() {
                continue;
            }
            match merged.last_mut() {
                Some(last) if last.role == turn.role => {
                    last.text.push_str("\n\n");
                    last.text.push_str(&turn.text);
                }
                None if turn.role == Role::Assistant => {}
                _ => merged.push(turn),
            }
        }
        Self {
            system: system.into(),
            turns: merged,
        }
    }
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer's text, never empty.
    pub text: String,
    /// Prompt tokens, when the provider reported them.
    pub input_tokens: Option<u64>,
    /// Answer tokens, when the provider reported them.
    pub output_tokens: Option<u64>,
}

/// Why the model gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with an error status.
    #[error("the LLM provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
        /// The `Retry-After` the provider sent, if any.
        retry_after: Option<Duration>,
    },
    /// No answer within the time allowed.
    #[error("the LLM provider did not answer in time")]
    Timeout,
    /// The connection failed.
    #[error("the LLM provider could not be reached: {0}")]
    Transport(String),
    /// The provider answered 200 with no usable text (an empty choice, or a blocked answer).
    #[error("the LLM gave no answer: {0}")]
    NoAnswer(String),
    /// The provider answered 200 with a body of an unexpected shape.
    #[error("the LLM provider's answer could not be read: {0}")]
    BadResponse(String),
}

impl Retryable for LlmError {
    /// 429, 5xx, timeouts and connection failures are retried; 400, 401, 403 and other answers
    /// are not, since the same request would fail the same way.
    fn retry_hint(&self) -> Option<Option<Duration>> {
        match self {
            Self::Status {
                status,
                retry_after,
                ..
            } if *status == 429 || *status >= 500 => Some(*retry_after),
            Self::Timeout | Self::Transport(_) => Some(None),
            _ => None,
        }
    }
}

/// A chat model.
pub trait Llm: Send + Sync {
    /// Answers `prompt`, retrying transient failures, never past `deadline`.
    fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> impl Future<Output = Result<Completion, LlmError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, text: &str) -> PromptTurn {
        PromptTurn {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn merges_consecutive_turns_and_starts_with_the_user() {
        let prompt = Prompt::new(
            "be kind",
            [
                turn(Role::Assistant, "orphan answer"),
                turn(Role::User, "a"),
                turn(Role::User, "b"),
                turn(Role::Assistant, "c"),
                turn(Role::User, "  "),
                turn(Role::User, "d"),
            ],
        );
        assert_eq!(
            prompt.turns,
            vec![
                turn(Role::User, "a\n\nb"),
                turn(Role::Assistant, "c"),
                turn(Role::User, "d")
            ]
        );
    }

    #[test]
    fn retries_only_what_can_succeed_later() {
        let status = |status| LlmError::Status {
            status,
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(status(429).retry_hint(), Some(None));
        assert_eq!(status(503).retry_hint(), Some(None));
        for final_status in [400, 401, 403, 404] {
            assert_eq!(status(final_status).retry_hint(), None, "{final_status}");
        }
        assert_eq!(LlmError::Timeout.retry_hint(), Some(None));
        assert_eq!(LlmError::NoAnswer("blocked".into()).retry_hint(), None);
        let hinted = LlmError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(hinted.retry_hint(), Some(Some(Duration::from_secs(3))));
    }
}
