//! Step 4, deliver the answer: each reply is split into parts WhatsApp accepts (at most 4096
//! UTF-16 units) and sent in order. A refusal for good, or a reply cut short, still ends the burst
//! (the messages are marked done, so that the user does not get a repeat); an error that may
//! pass before anything was sent retries the burst.

use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::split::{MAX_TEXT_UTF16, split_message};
use shared::whatsapp::{MetaErrorClass, Recipient, WhatsApp, WhatsAppError};

use crate::answer::Answer;
use crate::claim::ClaimedBurst;
use crate::{Invocation, Processor};

/// How a conversation's burst ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstOutcome {
    /// Everything was handled (answered, skipped or finally undeliverable): no record fails.
    Handled,
    /// The burst must be retried: its records fail, from the first that was not already done.
    Retry,
}

/// A step's word that the burst must be retried; the step has logged why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry;

/// How sending a burst's replies ended.
#[derive(Debug)]
pub enum SendOutcome {
    /// Every part of every reply was sent.
    Sent,
    /// Meta refused for good (outside the 24-hour window, undeliverable).
    Final(WhatsAppError),
    /// Nothing was sent and the error may pass: retry the records.
    Failed(WhatsAppError),
    /// Some parts were sent before an error that may pass; `delivered` holds, per reply, what
    /// the user got of it.
    Partial {
        /// The error that stopped the sending.
        error: WhatsAppError,
        /// What the user got of each reply, in order, up to the one that failed.
        delivered: Vec<String>,
    },
}

impl<C, L, W: WhatsApp> Processor<C, L, W> {
    /// Sends the answer's replies to the claimed burst's user. Returns what the user got of the
    /// answer to their turn, to remember as the assistant's turn; `Err(Retry)` when nothing was
    /// sent and the error may pass.
    pub(crate) async fn reply(
        &self,
        claimed: &ClaimedBurst<'_>,
        answer: &Answer,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Option<String>, Retry> {
        let user = &claimed.user;
        let outcome = self.send_all(
            claimed.phone_number_id,
            &claimed.recipient,
            &answer.replies,
            invocation,
            metrics,
        );
        match outcome.await {
            SendOutcome::Sent => Ok(answer
                .answer_index()
                .and_then(|i| answer.replies.get(i).cloned())),
            SendOutcome::Final(error) => {
                tracing::error!(event = LogEvent::ReplyUndeliverable.as_str(), user = %user, error_code = error.code(), error = %error,
                    "Meta refused the reply for good; the messages are marked done");
                Ok(None)
            }
            SendOutcome::Partial { error, delivered } => {
                tracing::error!(event = LogEvent::ReplyCutShort.as_str(), user = %user, error_code = error.code(), error = %error,
                    "part of the reply was sent and the rest failed; the messages are marked done to avoid a repeat");
                Ok(answer
                    .answer_index()
                    .and_then(|i| delivered.get(i).cloned())
                    .filter(|a| !a.is_empty()))
            }
            SendOutcome::Failed(error) => {
                if error.class() == MetaErrorClass::TokenExpired {
                    tracing::error!(event = LogEvent::MetaTokenExpired.as_str(), error_code = error.code(), error = %error,
                        "the Meta access token expired or was revoked: rotate META_ACCESS_TOKEN");
                } else if error.class() == MetaErrorClass::AccountBlocked {
                    tracing::error!(event = LogEvent::MetaAccountBlocked.as_str(), user = %user, error_code = error.code(), error = %error,
                        "the WhatsApp business account or number cannot send: fix it in WhatsApp Manager; the messages will be retried");
                } else {
                    tracing::error!(event = LogEvent::ReplyFailed.as_str(), user = %user, error_code = error.code(), error = %error,
                        "the reply could not be sent; the messages will be retried");
                }
                Err(Retry)
            }
        }
    }

    /// Sends each reply, split into parts WhatsApp accepts, in order.
    async fn send_all(
        &self,
        phone_number_id: &str,
        to: &Recipient,
        replies: &[String],
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> SendOutcome {
        let mut delivered: Vec<String> = Vec::new();
        for reply in replies {
            let mut parts_sent: Vec<String> = Vec::new();
            for part in split_message(reply, MAX_TEXT_UTF16) {
                match self
                    .whatsapp
                    .send_text(phone_number_id, to, &part, invocation.deadline)
                    .await
                {
                    Ok(_) => {
                        metrics.count("RepliesSent", 1);
                        parts_sent.push(part);
                    }
                    Err(error) => {
                        if let Some(code) = error.code() {
                            metrics.count_by("MetaErrors", "ErrorCode", code.to_string(), 1);
                        }
                        let nothing_sent = delivered.is_empty() && parts_sent.is_empty();
                        delivered.push(parts_sent.join("\n\n"));
                        return match (error.class().is_final(), nothing_sent) {
                            (true, _) => SendOutcome::Final(error),
                            (false, true) => SendOutcome::Failed(error),
                            (false, false) => SendOutcome::Partial { error, delivered },
                        };
                    }
                }
            }
            delivered.push(parts_sent.join("\n\n"));
        }
        SendOutcome::Sent
    }
}
