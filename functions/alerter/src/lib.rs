//! The alerter function: mails on-call through SES about messages that failed every retry
//! (the dead-letter queue), ERROR log lines of the webhook and processor (a CloudWatch Logs
//! subscription), and CloudWatch alarms (through SNS), with storm control.
//!
//! Nothing is lost. An alert that cannot be mailed (SES refusing or failing, storm control
//! unavailable) is kept on the alert retry queue and mailed from there later, when the queue
//! hands it back ([`retry_queue`]); its storm-control window is given back. Dead letters leave
//! their queue once they are in the archive and their alert was mailed, counted as held back,
//! or kept, so the archive holds one copy of each however often SES fails. Lambda's on-failure
//! destination puts on the same queue the log and alarm events whose invocation failed every
//! retry (a crash, a timeout, the retry queue unavailable). A permanent SES refusal is logged
//! as such, and no other mail is tried in that invocation: the rest is kept too, and the retry
//! queue's visibility timeout spaces the tries.

pub mod alert;
pub mod config;
pub mod retry_queue;
pub mod trigger;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::{Value, json};
use shared::log_event::LogEvent;
use shared::mail::{Mail, MailError, Mailer};
use shared::queue::{MessageQueue, QueueEntry, QueueError, batches, fifo_id};
use shared::storm::{StormControl, StormError, Verdict};

use alert::{Alert, Place};
pub use config::Config;
use retry_queue::{Retry, RetryRecord};
use trigger::{DeadLetter, Trigger, TriggerError};

/// Why an alert could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    /// The event could not be read.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// Storm control could not decide.
    #[error(transparent)]
    Storm(#[from] StormError),
    /// The mail could not be sent.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// Dead letters could not be archived.
    #[error("the dead letters could not be archived: {0}")]
    Archive(QueueError),
    /// Alerts that were not mailed could not be kept on the retry queue either.
    #[error("alerts that were not mailed could not be kept on the retry queue: {0}")]
    Keep(QueueError),
}

/// What happened to one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A mail went out.
    Mailed,
    /// It was counted as held back.
    Held,
}

/// What mailing a list of alerts did.
#[derive(Debug, Default)]
struct Mailing {
    mailed: usize,
    held: usize,
    /// The alerts not mailed: failed, or not tried after a permanent refusal.
    unsent: Vec<Alert>,
}

/// Gives the current time in milliseconds since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The alerter, over a mailer, storm control, the dead-letter archive and the alert retry queue.
pub struct Alerter<M, S, Q> {
    mailer: M,
    storm: S,
    archive: Q,
    retries: Q,
    config: Config,
    clock: Clock,
}

impl<M: Mailer, S: StormControl, Q: MessageQueue> Alerter<M, S, Q> {
    /// An alerter that mails through `mailer`, with `storm` deciding what to hold back, keeps
    /// dead letters in `archive` so that they can be moved back once fixed, and keeps alerts it
    /// could not mail on `retries`, the alert retry queue.
    pub fn new(mailer: M, storm: S, archive: Q, retries: Q, config: Config) -> Self {
        Self {
            mailer,
            storm,
            archive,
            retries,
            config,
            clock: Arc::new(shared::clock::now_epoch_ms),
        }
    }

    /// The same alerter reading the time from `clock`, so that tests can move past a window.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// Handles one event of any trigger. For SQS records (dead letters, the retry queue), the
    /// answer is a batch response naming the records that stay; for logs and alarms, a
    /// summary, or an error when their alerts could be neither mailed nor kept, so that Lambda
    /// retries the event and then hands it to the on-failure destination.
    pub async fn handle(&self, event: &Value) -> Result<Value, AlerterError> {
        if retry_queue::is_from(event, &self.config.alert_retry_queue_arn) {
            let records = retry_queue::read(event)
                .inspect_err(|e| tracing::error!(error = %e, "unreadable retry queue event"))?;
            return Ok(batch_response(self.retry(&records).await));
        }
        let trigger = trigger::read(event)
            .inspect_err(|e| tracing::error!(error = %e, "unreadable alerter event"))?;
        let alerts = alert::alerts(&trigger, &self.place(), (self.clock)());
        if let Trigger::DeadLetters(letters) = &trigger {
            return Ok(batch_response(self.dead_letters(letters, &alerts).await));
        }
        let mailing = self.mail(&alerts, &mut false).await;
        self.keep(&mailing.unsent)
            .await
            .map_err(AlerterError::Keep)?;
        Ok(
            json!({"alerts": alerts.len(), "mailed": mailing.mailed, "held": mailing.held,
            "kept": mailing.unsent.len()}),
        )
    }

    fn place(&self) -> Place {
        Place {
            region: self.config.region.clone(),
            archive_arn: self.config.archive_queue_arn.clone(),
            inbound_arn: self.config.inbound_queue_arn.clone(),
        }
    }

    /// Archives `letters`, then mails their `alerts` or keeps them. Returns the ids of the
    /// records that stay in the dead-letter queue: all of them when they could not be archived,
    /// or their alerts could be neither mailed nor kept; none otherwise, so that a failing SES
    /// never has them archived twice.
    async fn dead_letters(&self, letters: &[DeadLetter], alerts: &[Alert]) -> Vec<String> {
        let all = || letters.iter().map(|l| l.sqs_message_id.clone()).collect();
        // Kept first, so that nothing leaves the dead-letter queue unless it is archived.
        if let Err(error) = self.archive_letters(letters).await {
            tracing::error!(event = LogEvent::DeadLettersNotArchived.as_str(), error = %error,
                records = letters.len(), "dead letters not archived nor mailed; they stay in the queue");
            return all();
        }
        let mailing = self.mail(alerts, &mut false).await;
        match self.keep(&mailing.unsent).await {
            Ok(()) => Vec::new(),
            Err(_) => all(),
        }
    }

    /// Mails the alerts of retry records. A pending alert that still cannot be mailed stays
    /// (its record comes back after the queue's visibility timeout); the other records give
    /// way to pending alerts of what they could not mail. After a permanent SES refusal, the
    /// records left are not tried: they stay. Returns the ids of the records that stay.
    async fn retry(&self, records: &[RetryRecord]) -> Vec<String> {
        let (place, now) = (self.place(), (self.clock)());
        let mut refused = false;
        let mut stay = Vec::new();
        for record in records {
            match &record.content {
                Retry::Failed(invocation) => {
                    tracing::info!(event = LogEvent::FailedInvocationRetried.as_str(),
                    condition = %invocation.condition, request_id = invocation.request_id.as_deref().unwrap_or_default(),
                    invocations = invocation.invoke_count, "mailing the alerts of an invocation that failed every retry")
                }
                Retry::Unreadable { reason, .. } => {
                    tracing::error!(event = LogEvent::RetryRecordUnreadable.as_str(),
                    reason = %reason, sqs_message_id = %record.sqs_message_id, "a retry queue record cannot be read; mailing about it instead")
                }
                Retry::Pending(_) => {}
            }
            if refused {
                stay.push(record.sqs_message_id.clone());
                continue;
            }
            let mailing = self
                .mail(&record.content.alerts(&place, now), &mut refused)
                .await;
            let stays = match &record.content {
                Retry::Pending(_) => !mailing.unsent.is_empty(),
                _ => self.keep(&mailing.unsent).await.is_err(),
            };
            if stays {
                stay.push(record.sqs_message_id.clone());
            }
        }
        stay
    }

    /// Mails `alerts` in turn. Once SES has refused a mail for good (`refused`, which carries
    /// over between calls of one invocation), the others are not tried: they are unsent.
    async fn mail(&self, alerts: &[Alert], refused: &mut bool) -> Mailing {
        let mut mailing = Mailing::default();
        for alert in alerts {
            if *refused {
                mailing.unsent.push(alert.clone());
                continue;
            }
            match self.alert(alert).await {
                Ok(Outcome::Mailed) => mailing.mailed += 1,
                Ok(Outcome::Held) => mailing.held += 1,
                Err(AlerterError::Mail(error @ MailError::Rejected(_))) => {
                    tracing::error!(event = LogEvent::AlertMailRejected.as_str(), error = %error, fingerprint = %alert.fingerprint,
                        "SES refused the alert mail for good; it is kept, and no other mail is tried before the next retry");
                    *refused = true;
                    mailing.unsent.push(alert.clone());
                }
                Err(error) => {
                    tracing::error!(event = LogEvent::AlertMailFailed.as_str(), error = %error, fingerprint = %alert.fingerprint,
                        "alert not mailed; it is kept to be mailed later");
                    mailing.unsent.push(alert.clone());
                }
            }
        }
        mailing
    }

    /// Puts `alerts` on the retry queue as pending alerts, to be mailed later.
    async fn keep(&self, alerts: &[Alert]) -> Result<(), QueueError> {
        let entries = alerts
            .iter()
            .map(retry_queue::pending_entry)
            .collect::<Result<Vec<QueueEntry>, QueueError>>();
        let sent = match entries {
            Ok(entries) => send_all(&self.retries, &entries).await,
            Err(error) => Err(error),
        };
        match &sent {
            Ok(()) => {
                for alert in alerts {
                    tracing::warn!(event = LogEvent::AlertKept.as_str(), fingerprint = %alert.fingerprint,
                        "alert kept on the retry queue, to be mailed later");
                }
            }
            Err(error) => tracing::error!(event = LogEvent::AlertNotKept.as_str(), error = %error,
                alerts = alerts.len(), "alerts neither mailed nor kept; their event or records are retried"),
        }
        sent
    }

    /// Copies dead letters into the archive, with their FIFO group and deduplication ids, so
    /// that they can be moved back to the inbound queue once their cause is fixed.
    async fn archive_letters(&self, letters: &[DeadLetter]) -> Result<(), QueueError> {
        let entries: Vec<QueueEntry> = letters
            .iter()
            .map(|letter| QueueEntry {
                group_id: fifo_id(letter.group_id.as_deref().unwrap_or("dead-letters")),
                deduplication_id: fifo_id(
                    letter
                        .deduplication_id
                        .as_deref()
                        .unwrap_or(&letter.sqs_message_id),
                ),
                body: letter.body.clone(),
            })
            .collect();
        send_all(&self.archive, &entries).await
    }

    /// Mails `alert` unless storm control holds it back. If the mail fails, the window is given
    /// back so that a retry mails it.
    pub async fn alert(&self, alert: &Alert) -> Result<Outcome, AlerterError> {
        let now = (self.clock)() / 1000;
        match self
            .storm
            .admit(&alert.fingerprint, alert.count, now, self.config.window)
            .await?
        {
            Verdict::Hold => {
                tracing::info!(event = LogEvent::AlertHeld.as_str(), fingerprint = %alert.fingerprint, count = alert.count, "alert held back");
                Ok(Outcome::Held)
            }
            Verdict::Send {
                held_back,
                previous_mail_at,
                token,
            } => {
                let rendered =
                    alert::render(alert, &self.config.stack_name, held_back, previous_mail_at);
                let mail = Mail {
                    from: self.config.from.clone(),
                    to: self.config.recipients.clone(),
                    reply_to: self.config.reply_to.clone(),
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                };
                match self.mailer.send(&mail).await {
                    Ok(message_id) => {
                        tracing::info!(event = LogEvent::AlertMailed.as_str(), fingerprint = %alert.fingerprint, held_back, message_id = %message_id, "alert mailed");
                        Ok(Outcome::Mailed)
                    }
                    Err(error) => {
                        if let Err(give_back_error) = self
                            .storm
                            .give_back(&alert.fingerprint, &token, held_back, previous_mail_at)
                            .await
                        {
                            tracing::error!(error = %give_back_error, fingerprint = %alert.fingerprint,
                                "could not give the window back; this fingerprint stays quiet until it ends");
                        }
                        Err(error.into())
                    }
                }
            }
        }
    }
}

/// Sends `entries` to `queue` in as few calls as SQS allows, stopping at the first failure.
async fn send_all<Q: MessageQueue>(queue: &Q, entries: &[QueueEntry]) -> Result<(), QueueError> {
    for batch in batches(entries) {
        queue.send_batch(batch).await?;
    }
    Ok(())
}

/// The SQS batch response that keeps the records `stay` in their queue.
fn batch_response(stay: Vec<String>) -> Value {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = stay
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    // The response is strings in lists: serialising it cannot fail.
    serde_json::to_value(response).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests;
