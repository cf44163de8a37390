//! The alert retry queue: a standard SQS queue that keeps alerts until they are mailed. Its
//! records come back to the alerter through an SQS event source, and are of two kinds, told
//! apart by their body:
//!
//! - the alerter's own pending alerts, `{"pendingAlert": <Alert>}`: alerts it could not mail
//!   (SES refusing or failing, storm control unavailable). An alert about dead letters is kept
//!   only once they are in the archive, so its retry only mails;
//! - Lambda's on-failure destination records of log and alarm events whose invocation failed
//!   every retry (a crash, a timeout, the retry queue itself unavailable), with the event in
//!   `requestPayload`.
//!
//! A record that cannot be read is not dropped unseen: it becomes an alert of its own.

use aws_lambda_events::event::sqs::SqsEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::queue::{QueueEntry, QueueError, ascii_json, fifo_id};

use crate::alert::{self, Alert, Place, Severity};
use crate::trigger::{self, Trigger, TriggerError, excerpt};

/// The most bytes of a pending alert's body, under SQS's 256 KiB for a message.
pub const MAX_PENDING_BYTES: usize = 250 * 1024;

/// One record of the retry queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRecord {
    /// The SQS message id (what a batch item failure names).
    pub sqs_message_id: String,
    /// What it carries.
    pub content: Retry,
}

/// What a retry record carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    /// An alert the alerter could not mail.
    Pending(Box<Alert>),
    /// Lambda's record of a log or alarm event whose invocation failed every retry.
    Failed(FailedInvocation),
    /// A record that cannot be read, and why.
    Unreadable {
        /// Why it cannot be read.
        reason: String,
        /// The failed invocation's request id, when the record is Lambda's.
        request_id: Option<String>,
    },
}

/// Lambda's on-failure record of an asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedInvocation {
    /// Why Lambda gave up: `RetriesExhausted`, `EventAgeExceeded`…
    pub condition: String,
    /// The failed invocation's request id, to find its logs.
    pub request_id: Option<String>,
    /// How many times Lambda invoked the function with the event.
    pub invoke_count: u64,
    /// The event the invocation was given.
    pub trigger: Trigger,
}

/// A pending alert's body, as written.
#[derive(Serialize)]
struct PendingBody<'a> {
    #[serde(rename = "pendingAlert")]
    pending_alert: &'a Alert,
}

/// A pending alert's body, as read.
#[derive(Deserialize)]
struct PendingRecord {
    #[serde(rename = "pendingAlert")]
    pending_alert: Alert,
}

impl Retry {
    /// The alerts the record stands for.
    pub fn alerts(&self, place: &Place, now_ms: i64) -> Vec<Alert> {
        match self {
            Self::Pending(alert) => vec![(**alert).clone()],
            Self::Failed(invocation) => alert::alerts(&invocation.trigger, place, now_ms),
            Self::Unreadable { reason, request_id } => {
                vec![unreadable_alert(reason, request_id.as_deref(), now_ms)]
            }
        }
    }
}

/// Whether every record of `event` comes from the queue `queue_arn`: the retry queue's ARN.
pub fn is_from(event: &Value, queue_arn: &str) -> bool {
    let records = event.get("Records").and_then(Value::as_array);
    !queue_arn.is_empty()
        && records.is_some_and(|records| {
            !records.is_empty()
                && records
                    .iter()
                    .all(|r| r.get("eventSourceARN").and_then(Value::as_str) == Some(queue_arn))
        })
}

/// Reads an SQS event of the retry queue.
pub fn read(event: &Value) -> Result<Vec<RetryRecord>, TriggerError> {
    let sqs = SqsEvent::deserialize(event).map_err(|e| TriggerError::SqsRecords(e.to_string()))?;
    Ok(sqs
        .records
        .iter()
        .map(|record| RetryRecord {
            sqs_message_id: record.message_id.clone().unwrap_or_default(),
            content: read_body(record.body.as_deref().unwrap_or_default()),
        })
        .collect())
}

fn read_body(body: &str) -> Retry {
    let unreadable =
        |reason: String, request_id: Option<String>| Retry::Unreadable { reason, request_id };
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return unreadable("a retry record that is not JSON".into(), None);
    };
    if value.get("pendingAlert").is_some() {
        return match PendingRecord::deserialize(&value) {
            Ok(record) => Retry::Pending(Box::new(record.pending_alert)),
            Err(e) => unreadable(format!("a pending alert of another shape: {e}"), None),
        };
    }
    let Some(context) = value.get("requestContext") else {
        return unreadable(
            "a retry record that is neither a pending alert nor Lambda's record of a failed invocation"
                .into(),
            None,
        );
    };
    let condition = str_at(context, "condition").unwrap_or_else(|| "unknown".into());
    let request_id = str_at(context, "requestId");
    let payload = value.get("requestPayload").filter(|p| !p.is_null());
    let Some(payload) = payload else {
        // Lambda leaves the event out of a record that would be too large for the queue.
        return unreadable(
            format!("Lambda's record of a failed invocation ({condition}) without its event"),
            request_id,
        );
    };
    match trigger::read(payload) {
        Ok(trigger @ (Trigger::Logs(_) | Trigger::Alarms(_))) => Retry::Failed(FailedInvocation {
            condition,
            request_id,
            invoke_count: context
                .get("approximateInvokeCount")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            trigger,
        }),
        // Lambda invokes for SQS synchronously: such a record was not Lambda's.
        Ok(Trigger::DeadLetters(_)) => unreadable(
            format!("Lambda's record of a failed invocation ({condition}) of an SQS event"),
            request_id,
        ),
        Err(e) => unreadable(
            format!(
                "Lambda's record of a failed invocation ({condition}) of an event that cannot be read: {e}"
            ),
            request_id,
        ),
    }
}

/// The entry that keeps `alert` on the retry queue until it is mailed. The body is JSON in
/// ASCII, which SQS always takes; rows are left out (and counted as more) until it fits in
/// [`MAX_PENDING_BYTES`].
pub fn pending_entry(alert: &Alert) -> Result<QueueEntry, QueueError> {
    let mut alert = alert.clone();
    loop {
        let body = ascii_json(&PendingBody {
            pending_alert: &alert,
        })
        .map_err(|e| QueueError::Body(e.to_string()))?;
        if body.len() <= MAX_PENDING_BYTES || alert.table.rows.is_empty() {
            // A standard queue takes neither id; they say what the entry is if it is logged.
            return Ok(QueueEntry {
                group_id: "pending-alerts".to_owned(),
                deduplication_id: fifo_id(&alert.fingerprint),
                body,
            });
        }
        let kept = alert.table.rows.len() / 2;
        alert.table.more += alert.table.rows.len() - kept;
        alert.table.rows.truncate(kept);
    }
}

/// The alert about a retry record that cannot be read, so that it is not dropped unseen.
fn unreadable_alert(reason: &str, request_id: Option<&str>, now_ms: i64) -> Alert {
    let mut place = vec![("Queue".to_owned(), "the alert retry queue".to_owned())];
    if let Some(request_id) = request_id {
        place.push(("Request id".to_owned(), request_id.to_owned()));
    }
    Alert {
        fingerprint: "retry:unreadable".to_owned(),
        count: 1,
        severity: Severity::Warning,
        what: "an alert could not be read back".to_owned(),
        reason: excerpt(reason),
        when_ms: now_ms,
        place,
        action: "A record kept to be mailed later could not be read, so it is dropped: read the \
                 alerter's logs of that time (the request id, when there is one, is the failed \
                 invocation's) for what it was about."
            .to_owned(),
        link: None,
        table: alert::Table::default(),
    }
}

fn str_at(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::tests::{RETRY_ARN, retry_event as event};

    fn place() -> Place {
        Place {
            region: "eu-west-1".into(),
            archive_arn: "arn:aws:sqs:eu-west-1:1:archive.fifo".into(),
            inbound_arn: "arn:aws:sqs:eu-west-1:1:inbound.fifo".into(),
        }
    }

    fn alarm_event() -> Value {
        let alarm = json!({"AlarmName": "wa-dead-letters", "NewStateValue": "ALARM",
            "NewStateReason": "Threshold Crossed"});
        json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": alarm.to_string()}}]})
    }

    fn destination(payload: Option<Value>) -> String {
        let mut record = json!({"version": "1.0", "timestamp": "2026-11-21T10:00:00.000Z",
            "requestContext": {"requestId": "req-1", "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
                "functionArn": "arn:aws:lambda:eu-west-1:1:function:wa-alerter:$LATEST"},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "timed out"}});
        if let Some(payload) = payload {
            record["requestPayload"] = payload;
        }
        record.to_string()
    }

    fn only(event: &Value) -> Retry {
        let mut records = read(event).unwrap();
        assert_eq!(records.len(), 1);
        records.remove(0).content
    }

    #[test]
    fn records_are_the_retry_queues_by_their_source_only() {
        let from_retry = event(&["{}".to_owned()]);
        assert!(is_from(&from_retry, RETRY_ARN));
        assert!(!is_from(&from_retry, ""));
        assert!(!is_from(&from_retry, "arn:aws:sqs:eu-west-1:1:dlq.fifo"));
        let mixed = json!({"Records": [from_retry["Records"][0].clone(),
            {"eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:dlq.fifo"}]});
        assert!(!is_from(&mixed, RETRY_ARN));
        assert!(!is_from(&json!({"Records": []}), RETRY_ARN));
        assert!(!is_from(&json!({"awslogs": {"data": ""}}), RETRY_ARN));
    }

    #[test]
    fn a_pending_alert_reads_back_as_it_was_kept() {
        let alert = alert::alerts(&trigger::read(&alarm_event()).unwrap(), &place(), 5).remove(0);
        let entry = pending_entry(&alert).unwrap();
        assert!(entry.body.is_ascii());
        assert_eq!(
            only(&event(&[entry.body])),
            Retry::Pending(Box::new(alert.clone()))
        );
    }

    #[test]
    fn a_pending_alert_too_large_for_sqs_keeps_fewer_rows_and_counts_the_rest() {
        let mut alert =
            alert::alerts(&trigger::read(&alarm_event()).unwrap(), &place(), 5).remove(0);
        // Astral characters: 4 bytes of UTF-8, 12 of escaped JSON each.
        alert.table.rows = (0..50).map(|_| vec!["😀".repeat(300); 6]).collect();
        alert.table.more = 7;
        let entry = pending_entry(&alert).unwrap();
        assert!(
            entry.body.len() <= MAX_PENDING_BYTES,
            "{}",
            entry.body.len()
        );
        let Retry::Pending(kept) = only(&event(&[entry.body])) else {
            panic!("not a pending alert")
        };
        assert!(!kept.table.rows.is_empty() && kept.table.rows.len() < 50);
        assert_eq!(kept.table.rows.len() + kept.table.more, 57);
    }

    #[test]
    fn an_older_pending_alert_without_newer_fields_still_reads() {
        let body = json!({"pendingAlert": {"fingerprint": "log:f:k", "what": "f error",
            "severity": "Critical"}})
        .to_string();
        let Retry::Pending(alert) = only(&event(&[body])) else {
            panic!("not a pending alert")
        };
        assert_eq!(alert.fingerprint, "log:f:k");
        assert_eq!(alert.severity, Severity::Critical);
        assert!(alert.table.rows.is_empty());
    }

    #[test]
    fn lambdas_record_gives_back_the_event_that_failed() {
        let Retry::Failed(invocation) = only(&event(&[destination(Some(alarm_event()))])) else {
            panic!("not a failed invocation")
        };
        assert_eq!(invocation.condition, "RetriesExhausted");
        assert_eq!(invocation.request_id.as_deref(), Some("req-1"));
        assert_eq!(invocation.invoke_count, 3);
        let Trigger::Alarms(alarms) = &invocation.trigger else {
            panic!("not alarms")
        };
        assert_eq!(alarms[0].name, "wa-dead-letters");
        let alerts = Retry::Failed(invocation).alerts(&place(), 0);
        assert_eq!(alerts[0].fingerprint, "alarm:wa-dead-letters:ALARM");
    }

    #[test]
    fn what_cannot_be_read_becomes_an_alert_naming_why() {
        let sqs_payload =
            json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": "{}"}]});
        for (body, why, request_id) in [
            ("not json".to_owned(), "not JSON", None),
            (
                json!({"hello": 1}).to_string(),
                "neither a pending alert",
                None,
            ),
            (
                json!({"pendingAlert": 5}).to_string(),
                "another shape",
                None,
            ),
            (
                destination(None),
                "(RetriesExhausted) without its event",
                Some("req-1"),
            ),
            (
                destination(Some(json!({"x": 1}))),
                "cannot be read",
                Some("req-1"),
            ),
            (
                destination(Some(sqs_payload.clone())),
                "of an SQS event",
                Some("req-1"),
            ),
        ] {
            let content = only(&event(std::slice::from_ref(&body)));
            let Retry::Unreadable {
                reason,
                request_id: id,
            } = &content
            else {
                panic!("{body}: {content:?}")
            };
            assert!(reason.contains(why), "{body}: {reason}");
            assert_eq!(id.as_deref(), request_id, "{body}");
            let alerts = content.alerts(&place(), 1_795_255_200_000);
            assert_eq!(alerts.len(), 1);
            assert_eq!(alerts[0].fingerprint, "retry:unreadable");
            assert_eq!(alerts[0].reason, *reason);
            let mail = alert::render(&alerts[0], "wa", 0, None);
            assert!(
                mail.subject
                    .starts_with("[wa] WARNING an alert could not be read back")
            );
        }
    }
}
