//! Step 7, deliver the answer: each reply is split into parts WhatsApp accepts (at most 4096
//! UTF-16 units) and sent in order, each send ending [`STORE_RESERVE`] before the invocation's
//! deadline so that what went out can be recorded. A refusal for good, or a reply cut short,
//! still ends the burst (the messages are marked done, so that the user does not get a repeat).
//! An error that may pass before anything was sent, or time running out before a part could be
//! sent, retries the burst with the answer kept (see [`Undelivered`]). A send whose outcome is
//! unknown (Meta may have received it) is not repeated: the turn is recorded as sent.

use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::split::{MAX_TEXT_UTF16, split_message};
use shared::whatsapp::{MetaErrorClass, WhatsApp, WhatsAppError};
use tokio::time::Instant;

use crate::answer::Answer;
use crate::claim::ClaimedBurst;
use crate::{Invocation, Processor, STORE_RESERVE};

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

/// The reply step's word that the answer was not (wholly) delivered and the burst must be
/// retried with it: the retry sends the rest of the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undelivered {
    /// How many parts of the answer's replies (split, counted in order) the user got.
    pub parts_sent: usize,
}

/// What the user got (or may have got) of one reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentReply {
    /// The reply's text, or the parts of it that went out.
    pub text: String,
    /// Meta's ids of the WhatsApp messages this invocation sent it as (parts sent by an earlier
    /// invocation, or whose outcome is unknown, have none).
    pub sent_as: Vec<String>,
}

/// How sending a burst's replies ended.
#[derive(Debug)]
pub enum SendOutcome {
    /// Every part of every reply was sent.
    Sent {
        /// Each reply, in order.
        delivered: Vec<SentReply>,
    },
    /// Meta refused for good (outside the 24-hour window, undeliverable).
    Final(WhatsAppError),
    /// Nothing was sent and the error may pass: retry the records.
    Failed(WhatsAppError),
    /// The time left could not cover a send and the record after it: retry the records, sending
    /// the rest of the answer.
    OutOfTime {
        /// How many parts the user got.
        parts_sent: usize,
    },
    /// Some parts were sent before an error that may pass; `delivered` holds, per reply, what
    /// the user got of it.
    Partial {
        /// The error that stopped the sending.
        error: WhatsAppError,
        /// What the user got of each reply, in order, up to the one that failed.
        delivered: Vec<SentReply>,
    },
    /// A send got no answer after Meta may have received it: it is counted as delivered (in
    /// `delivered`) and nothing more is sent.
    Unknown {
        /// The error that left the outcome unknown.
        error: WhatsAppError,
        /// What the user may have got of each reply, in order, up to that send.
        delivered: Vec<SentReply>,
    },
}

impl<C, L, W: WhatsApp, T> Processor<C, L, W, T> {
    /// Sends the answer's replies to the claimed burst's user. Returns what the user got of the
    /// answer to their turn, to remember as the assistant's turn, with the ids it went out as;
    /// `Err(Undelivered)` when the burst is to be retried with this answer.
    pub(crate) async fn reply(
        &self,
        claimed: &ClaimedBurst<'_>,
        answer: &Answer,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<Option<SentReply>, Undelivered> {
        let user = &claimed.user;
        let outcome = self.send_all(claimed, answer, invocation, metrics);
        let answered = |delivered: &[SentReply]| {
            answer
                .answer_index()
                .and_then(|i| delivered.get(i).cloned())
                .filter(|a| !a.text.is_empty())
        };
        match outcome.await {
            SendOutcome::Sent { delivered } => Ok(answer.answer_index().and_then(|i| {
                Some(SentReply {
                    text: answer.replies.get(i)?.clone(),
                    sent_as: delivered.get(i)?.sent_as.clone(),
                })
            })),
            SendOutcome::Final(error) => {
                tracing::error!(event = LogEvent::ReplyUndeliverable.as_str(), user = %user, error_code = error.code(), error = %error,
                    "Meta refused the reply for good; the messages are marked done");
                Ok(None)
            }
            SendOutcome::Partial { error, delivered } => {
                tracing::error!(event = LogEvent::ReplyCutShort.as_str(), user = %user, error_code = error.code(), error = %error,
                    "part of the reply was sent and the rest failed; the messages are marked done to avoid a repeat");
                Ok(answered(&delivered))
            }
            SendOutcome::Unknown { error, delivered } => {
                tracing::error!(event = LogEvent::ReplyOutcomeUnknown.as_str(), user = %user, error = %error,
                    "a reply got no answer after Meta may have received it; it is not resent, and the messages are marked done");
                Ok(answered(&delivered))
            }
            SendOutcome::OutOfTime { parts_sent } => {
                tracing::warn!(event = LogEvent::ReplyFailed.as_str(), user = %user, parts_sent,
                    "too little time is left to send and record the reply; the rest of the same answer is sent on retry");
                Err(Undelivered { parts_sent })
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
                        "the reply could not be sent; the messages will be retried with the same answer");
                }
                Err(Undelivered {
                    parts_sent: answer.parts_sent,
                })
            }
        }
    }

    /// Sends each reply, split into parts WhatsApp accepts, in order, skipping the parts an
    /// earlier invocation sent; no send starts or runs past [`STORE_RESERVE`] before the
    /// deadline.
    async fn send_all(
        &self,
        claimed: &ClaimedBurst<'_>,
        answer: &Answer,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> SendOutcome {
        let send_deadline = invocation.deadline_before(STORE_RESERVE);
        let mut delivered: Vec<SentReply> = Vec::new();
        let mut index = 0;
        for reply in &answer.replies {
            let mut parts_sent: Vec<String> = Vec::new();
            let mut sent_as: Vec<String> = Vec::new();
            for part in split_message(reply, MAX_TEXT_UTF16) {
                index += 1;
                if index <= answer.parts_sent {
                    parts_sent.push(part);
                    continue;
                }
                if Instant::now() >= send_deadline {
                    return SendOutcome::OutOfTime {
                        parts_sent: index - 1,
                    };
                }
                match self.send_part(claimed, &part, send_deadline, metrics).await {
                    Ok(id) => sent_as.push(id),
                    Err(error) => {
                        if error.outcome_unknown() {
                            parts_sent.push(part);
                        }
                        let text = parts_sent.join("\n\n");
                        delivered.push(SentReply { text, sent_as });
                        return unsent(error, index == 1, delivered);
                    }
                }
                parts_sent.push(part);
            }
            let text = parts_sent.join("\n\n");
            delivered.push(SentReply { text, sent_as });
        }
        SendOutcome::Sent { delivered }
    }

    /// Sends one part, counting it or Meta's error code.
    async fn send_part(
        &self,
        claimed: &ClaimedBurst<'_>,
        part: &str,
        deadline: Instant,
        metrics: &mut Metrics,
    ) -> Result<String, WhatsAppError> {
        let to = &claimed.recipient;
        let result = self
            .whatsapp
            .send_text(claimed.phone_number_id, to, part, deadline)
            .await;
        match &result {
            Ok(_) => metrics.count("RepliesSent", 1),
            Err(error) => {
                if let Some(code) = error.code() {
                    metrics.count_by("MetaErrors", "ErrorCode", code.to_string(), 1);
                }
            }
        }
        result
    }
}

/// How sending ended on `error`, with `delivered` what the user got (or may have got) of each
/// reply so far.
fn unsent(error: WhatsAppError, nothing_sent: bool, delivered: Vec<SentReply>) -> SendOutcome {
    if error.outcome_unknown() {
        return SendOutcome::Unknown { error, delivered };
    }
    match (error.class().is_final(), nothing_sent) {
        (true, _) => SendOutcome::Final(error),
        (false, true) => SendOutcome::Failed(error),
        (false, false) => SendOutcome::Partial { error, delivered },
    }
}
