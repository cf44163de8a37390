//! The alerter function: mails on-call through SES about messages that failed every retry
//! (the dead-letter queue), ERROR log lines of the webhook and processor (a CloudWatch Logs
//! subscription), and CloudWatch alarms (through SNS), with storm control.
//!
//! Nothing is lost: a dead-lettered record leaves the dead-letter queue only once a mail about
//! it was sent, or it was counted into a held-back total that the next mail of its kind
//! reports. When SES fails, the storm-control window is given back and the records are reported
//! as batch item failures (they stay); log and alarm events fail the invocation, so that Lambda
//! retries them.

pub mod alert;
pub mod config;
pub mod trigger;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::{Value, json};
use shared::log_event::LogEvent;
use shared::mail::{Mail, MailError, Mailer};
use shared::queue::{MAX_BATCH, MessageQueue, QueueEntry, QueueError, fifo_id};
use shared::storm::{StormControl, StormError, Verdict};

use alert::{Alert, Place};
pub use config::Config;
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
    Archive(#[from] QueueError),
}

/// What happened to one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A mail went out.
    Mailed,
    /// It was counted as held back.
    Held,
}

/// Gives the current time in milliseconds since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The alerter, over a mailer, storm control and the dead-letter archive.
pub struct Alerter<M, S, Q> {
    mailer: M,
    storm: S,
    archive: Q,
    config: Config,
    clock: Clock,
}

impl<M: Mailer, S: StormControl, Q: MessageQueue> Alerter<M, S, Q> {
    /// An alerter that mails through `mailer`, with `storm` deciding what to hold back, and
    /// keeps dead letters in `archive` so that they can be moved back once fixed.
    pub fn new(mailer: M, storm: S, archive: Q, config: Config) -> Self {
        Self {
            mailer,
            storm,
            archive,
            config,
            clock: Arc::new(shared::clock::now_epoch_ms),
        }
    }

    /// The same alerter reading the time from `clock`, so that tests can move past a window.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// Handles one event of any of the three triggers. For dead letters, the answer is an SQS
    /// batch response; for logs and alarms, a summary, or an error so that Lambda retries.
    pub async fn handle(&self, event: &Value) -> Result<Value, AlerterError> {
        let trigger = trigger::read(event)
            .inspect_err(|e| tracing::error!(error = %e, "unreadable alerter event"))?;
        let place = Place {
            region: self.config.region.clone(),
            archive_arn: self.config.archive_queue_arn.clone(),
            inbound_arn: self.config.inbound_queue_arn.clone(),
        };
        let alerts = alert::alerts(&trigger, &place, (self.clock)());
        if let Trigger::DeadLetters(letters) = &trigger {
            let mut response = SqsBatchResponse::default();
            // Kept first, so that nothing leaves the dead-letter queue unless it is archived.
            let archived = self.archive_letters(letters).await;
            for alert in &alerts {
                let outcome = match &archived {
                    Ok(()) => self.alert(alert).await.map(|_| ()),
                    Err(error) => Err(AlerterError::Archive(error.clone())),
                };
                if let Err(error) = outcome {
                    tracing::error!(error = %error, records = letters.len(), "dead letters not mailed; they stay in the queue");
                    response.batch_item_failures = letters
                        .iter()
                        .map(|l| {
                            let mut failure = BatchItemFailure::default();
                            failure.item_identifier = l.sqs_message_id.clone();
                            failure
                        })
                        .collect();
                }
            }
            return Ok(serde_json::to_value(response).unwrap_or_else(|_| json!({})));
        }
        let (mut mailed, mut held, mut failure) = (0, 0, None);
        for alert in &alerts {
            match self.alert(alert).await {
                Ok(Outcome::Mailed) => mailed += 1,
                Ok(Outcome::Held) => held += 1,
                Err(error) => {
                    tracing::error!(error = %error, fingerprint = %alert.fingerprint, "alert not mailed; the event will be retried");
                    failure = Some(error);
                }
            }
        }
        // Alerts that were mailed are held back on the retry (their window is open), so a
        // retry does not mail them twice.
        match failure {
            Some(error) => Err(error),
            None => Ok(json!({"alerts": alerts.len(), "mailed": mailed, "held": held})),
        }
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
        for batch in entries.chunks(MAX_BATCH) {
            self.archive.send_batch(batch).await?;
        }
        Ok(())
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

#[cfg(test)]
mod tests;
