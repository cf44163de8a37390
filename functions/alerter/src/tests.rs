//! Unit tests of the alerter over in-memory fakes of the mailer and storm control. The same
//! behaviour runs against SES and DynamoDB in moto under `tests/`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;

/// Sends into a list, or fails every mail with `fail`; counts the attempts.
#[derive(Default)]
struct FakeMailer {
    sent: Mutex<Vec<Mail>>,
    attempts: Mutex<usize>,
    fail: Option<MailError>,
}

impl FakeMailer {
    fn failing(error: MailError) -> Self {
        Self {
            fail: Some(error),
            ..Self::default()
        }
    }

    fn refusing() -> Self {
        Self::failing(MailError::Rejected(
            "MessageRejected: sender not verified".into(),
        ))
    }

    fn attempts(&self) -> usize {
        *self.attempts.lock().unwrap()
    }
}

impl Mailer for FakeMailer {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        *self.attempts.lock().unwrap() += 1;
        if let Some(error) = &self.fail {
            return Err(error.clone());
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(mail.clone());
        Ok(format!("mail-{}", sent.len()))
    }
}

/// One window per fingerprint, held counts, and a record of the windows given back.
#[derive(Default)]
struct FakeStorm {
    windows: Mutex<HashMap<String, (i64, u64)>>,
    given_back: Mutex<Vec<String>>,
}

impl StormControl for FakeStorm {
    async fn admit(
        &self,
        fingerprint: &str,
        count: u64,
        now: i64,
        window: Duration,
    ) -> Result<Verdict, StormError> {
        let mut windows = self.windows.lock().unwrap();
        match windows.get_mut(fingerprint) {
            Some((until, held)) if *until > now => {
                *held += count;
                Ok(Verdict::Hold)
            }
            entry => {
                let held_back = entry.map(|(_, held)| *held).unwrap_or(0);
                windows.insert(fingerprint.to_owned(), (now + window.as_secs() as i64, 0));
                Ok(Verdict::Send {
                    held_back,
                    previous_mail_at: None,
                    token: "t".into(),
                })
            }
        }
    }

    async fn give_back(
        &self,
        fingerprint: &str,
        _token: &str,
        held_back: u64,
        _: Option<i64>,
    ) -> Result<(), StormError> {
        self.windows
            .lock()
            .unwrap()
            .insert(fingerprint.to_owned(), (0, held_back));
        self.given_back.lock().unwrap().push(fingerprint.to_owned());
        Ok(())
    }
}

/// A queue (the archive or the retry queue) that records what it is sent; fails every batch
/// when `fail` is set.
#[derive(Default)]
struct FakeQueue {
    archived: Mutex<Vec<shared::queue::QueueEntry>>,
    fail: bool,
}

impl FakeQueue {
    fn failing() -> Self {
        Self {
            fail: true,
            ..Self::default()
        }
    }

    /// The pending alerts sent, read back as the retry queue hands them out.
    fn pending(&self) -> Vec<Alert> {
        self.archived
            .lock()
            .unwrap()
            .iter()
            .map(|entry| {
                let event = retry_event(std::slice::from_ref(&entry.body));
                match retry_queue::read(&event).unwrap().remove(0).content {
                    Retry::Pending(alert) => *alert,
                    other => panic!("not a pending alert: {other:?}"),
                }
            })
            .collect()
    }

    fn bodies(&self) -> Vec<String> {
        let entries = self.archived.lock().unwrap();
        entries.iter().map(|e| e.body.clone()).collect()
    }
}

impl MessageQueue for FakeQueue {
    async fn send_batch(&self, entries: &[shared::queue::QueueEntry]) -> Result<(), QueueError> {
        if self.fail {
            return Err(QueueError::Send("archive unavailable".into()));
        }
        self.archived.lock().unwrap().extend_from_slice(entries);
        Ok(())
    }
}

fn config() -> Config {
    Config {
        recipients: vec!["oncall@example.com".into()],
        from: "alerts@example.com".into(),
        reply_to: Some("team@example.com".into()),
        table_name: "t".into(),
        window: Duration::from_secs(900),
        stack_name: "wa".into(),
        region: "eu-west-1".into(),
        archive_queue_url: "https://sqs/archive.fifo".into(),
        archive_queue_arn: "arn:aws:sqs:eu-west-1:1:archive.fifo".into(),
        inbound_queue_arn: "arn:aws:sqs:eu-west-1:1:inbound.fifo".into(),
        alert_retry_queue_url: "https://sqs/wa-alert-retry".into(),
        alert_retry_queue_arn: RETRY_ARN.into(),
    }
}

pub(crate) const RETRY_ARN: &str = "arn:aws:sqs:eu-west-1:1:wa-alert-retry";

type TestAlerter = Alerter<FakeMailer, FakeStorm, FakeQueue>;

fn alerter(mailer: FakeMailer) -> TestAlerter {
    Alerter::new(
        mailer,
        FakeStorm::default(),
        FakeQueue::default(),
        FakeQueue::default(),
        config(),
    )
}

/// The alerter with `mailer` instead, over the same storm control and queues.
fn with_mailer(alerter: TestAlerter, mailer: FakeMailer) -> TestAlerter {
    Alerter { mailer, ..alerter }
}

/// An SQS event of the retry queue with records `r0`, `r1`… of these bodies.
pub(crate) fn retry_event(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"messageId": format!("r{i}"), "eventSource": "aws:sqs",
                "eventSourceARN": RETRY_ARN, "body": body})
        })
        .collect();
    json!({ "Records": records })
}

/// Lambda's on-failure record of an invocation with `payload`.
fn destination(payload: &Value) -> String {
    json!({"version": "1.0", "timestamp": "2026-11-21T10:00:00.000Z",
        "requestContext": {"requestId": "req-1", "condition": "RetriesExhausted", "approximateInvokeCount": 3,
            "functionArn": "arn:aws:lambda:eu-west-1:1:function:wa-alerter:$LATEST"},
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "timed out"}})
    .to_string()
}

fn alarm(name: &str) -> Value {
    let message =
        json!({"AlarmName": name, "NewStateValue": "ALARM", "NewStateReason": "Threshold Crossed"});
    json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": message.to_string()}}]})
}

/// One SNS event with two alarms, so two alerts.
fn two_alarms() -> Value {
    let mut event = alarm("wa-dead-letters");
    let second = alarm("wa-queue-backlog")["Records"][0].clone();
    event["Records"].as_array_mut().unwrap().push(second);
    event
}

fn dead_letters() -> Value {
    json!({"Records": [
        {"messageId": "m1", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:dlq.fifo", "body": "{}"},
        {"messageId": "m2", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:dlq.fifo", "body": "{}"}
    ]})
}

fn failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|i| i["itemIdentifier"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn dead_letters_are_mailed_once_and_leave_the_queue() {
    let alerter = alerter(FakeMailer::default());
    let response = alerter.handle(&dead_letters()).await.unwrap();
    assert!(failures(&response).is_empty());
    let sent = alerter.mailer.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, ["oncall@example.com"]);
    assert_eq!(sent[0].reply_to.as_deref(), Some("team@example.com"));
    assert!(
        sent[0]
            .subject
            .starts_with("[wa] CRITICAL 2 messages in the dead-letter queue")
    );
    assert!(alerter.retries.bodies().is_empty(), "nothing to keep");
}

#[tokio::test]
async fn a_held_batch_leaves_the_queue_counted_and_the_next_mail_reports_it() {
    let now = Arc::new(Mutex::new(1_800_000_000_000i64));
    let clock_now = now.clone();
    let alerter =
        alerter(FakeMailer::default()).with_clock(Arc::new(move || *clock_now.lock().unwrap()));
    alerter.handle(&dead_letters()).await.unwrap();
    let held = alerter.handle(&dead_letters()).await.unwrap();
    assert!(
        failures(&held).is_empty(),
        "counted records leave the queue"
    );
    assert_eq!(alerter.mailer.sent.lock().unwrap().len(), 1);
    *now.lock().unwrap() += 901_000;
    alerter.handle(&dead_letters()).await.unwrap();
    let sent = alerter.mailer.sent.lock().unwrap();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1]
            .text
            .contains("2 more alert(s) like this were held back"),
        "{}",
        sent[1].text
    );
}

#[tokio::test]
async fn a_mail_failure_lets_archived_dead_letters_go_and_keeps_their_alert_to_mail_later() {
    let alerter = alerter(FakeMailer::refusing());
    let response = alerter.handle(&dead_letters()).await.unwrap();
    assert!(
        failures(&response).is_empty(),
        "archived, and their alert kept: the records leave, never to be archived twice"
    );
    assert_eq!(alerter.archive.bodies().len(), 2);
    assert_eq!(*alerter.storm.given_back.lock().unwrap(), ["dlq:dlq.fifo"]);
    let pending = alerter.retries.bodies();
    assert_eq!(pending.len(), 1);

    // The pending alert comes back while SES still refuses: it stays, and nothing is added.
    let retry = retry_event(&pending);
    assert_eq!(failures(&alerter.handle(&retry).await.unwrap()), ["r0"]);
    assert_eq!(alerter.retries.bodies().len(), 1);
    assert_eq!(alerter.archive.bodies().len(), 2, "a retry only mails");

    // Once SES works, it is mailed at once (the window was given back), and leaves.
    let alerter = with_mailer(alerter, FakeMailer::default());
    assert!(failures(&alerter.handle(&retry).await.unwrap()).is_empty());
    let sent = alerter.mailer.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .subject
            .starts_with("[wa] CRITICAL 2 messages in the dead-letter queue")
    );
    assert_eq!(alerter.archive.bodies().len(), 2);
    assert_eq!(alerter.retries.bodies().len(), 1);
}

#[tokio::test]
async fn dead_letters_whose_alert_can_be_neither_mailed_nor_kept_stay() {
    let alerter = Alerter::new(
        FakeMailer::refusing(),
        FakeStorm::default(),
        FakeQueue::default(),
        FakeQueue::failing(),
        config(),
    );
    let response = alerter.handle(&dead_letters()).await.unwrap();
    assert_eq!(failures(&response), ["m1", "m2"]);
}

#[tokio::test]
async fn a_log_or_alarm_that_cannot_be_mailed_is_kept_and_fails_only_when_it_cannot_be() {
    let alerter = alerter(FakeMailer::failing(MailError::Unavailable(
        "throttled".into(),
    )));
    let summary = alerter.handle(&alarm("wa-dead-letters")).await.unwrap();
    assert_eq!(summary["kept"], 1, "{summary}");
    let pending = alerter.retries.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].fingerprint, "alarm:wa-dead-letters:ALARM");

    let alerter = Alerter {
        retries: FakeQueue::failing(),
        ..alerter
    };
    // Lambda then retries the event, and hands it to the on-failure destination.
    assert!(matches!(
        alerter.handle(&alarm("wa-queue-backlog")).await,
        Err(AlerterError::Keep(_))
    ));
}

#[tokio::test]
async fn a_permanent_refusal_stops_the_other_mails_but_an_outage_does_not() {
    let refused = alerter(FakeMailer::refusing());
    let summary = refused.handle(&two_alarms()).await.unwrap();
    assert_eq!(
        refused.mailer.attempts(),
        1,
        "no mail is tried after a refusal"
    );
    assert_eq!(summary["kept"], 2);
    let kept: Vec<String> = refused
        .retries
        .pending()
        .into_iter()
        .map(|a| a.fingerprint)
        .collect();
    assert_eq!(
        kept,
        [
            "alarm:wa-dead-letters:ALARM",
            "alarm:wa-queue-backlog:ALARM"
        ]
    );
    assert_eq!(
        *refused.storm.given_back.lock().unwrap(),
        ["alarm:wa-dead-letters:ALARM"],
        "the untried alert's window was never taken"
    );

    let unavailable = alerter(FakeMailer::failing(MailError::Unavailable("5xx".into())));
    unavailable.handle(&two_alarms()).await.unwrap();
    assert_eq!(unavailable.mailer.attempts(), 2);
    assert_eq!(unavailable.retries.pending().len(), 2);
}

#[tokio::test]
async fn lambdas_record_of_a_failed_invocation_is_mailed() {
    let alerter = alerter(FakeMailer::default());
    let event = retry_event(&[destination(&alarm("wa-dead-letters"))]);
    let response = alerter.handle(&event).await.unwrap();
    assert!(failures(&response).is_empty());
    let sent = alerter.mailer.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .subject
            .starts_with("[wa] ALARM alarm wa-dead-letters"),
        "{}",
        sent[0].subject
    );
    assert!(
        alerter.archive.bodies().is_empty(),
        "it is not a dead letter"
    );
}

#[tokio::test]
async fn lambdas_record_that_cannot_be_mailed_gives_way_to_pending_alerts() {
    let alerter = alerter(FakeMailer::failing(MailError::Unavailable("5xx".into())));
    let event = retry_event(&[destination(&two_alarms())]);
    let response = alerter.handle(&event).await.unwrap();
    assert!(failures(&response).is_empty(), "the record leaves");
    assert_eq!(alerter.retries.pending().len(), 2);

    // Unless they cannot be kept: then the record itself stays.
    let alerter = Alerter {
        retries: FakeQueue::failing(),
        ..alerter
    };
    assert_eq!(failures(&alerter.handle(&event).await.unwrap()), ["r0"]);
}

#[tokio::test]
async fn after_a_refusal_the_other_retry_records_are_not_tried_and_stay() {
    let alerter = alerter(FakeMailer::refusing());
    alerter.handle(&two_alarms()).await.unwrap();
    let pending = alerter.retries.bodies();
    let event = retry_event(&[
        pending[0].clone(),
        destination(&alarm("wa-throttles")),
        pending[1].clone(),
    ]);
    let response = alerter.handle(&event).await.unwrap();
    assert_eq!(failures(&response), ["r0", "r1", "r2"]);
    assert_eq!(alerter.mailer.attempts(), 2, "one per invocation");
    assert_eq!(alerter.retries.bodies().len(), 2, "nothing was added");

    let alerter = with_mailer(alerter, FakeMailer::default());
    assert!(failures(&alerter.handle(&event).await.unwrap()).is_empty());
    assert_eq!(alerter.mailer.sent.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn an_unreadable_retry_record_is_mailed_about_not_dropped_unseen() {
    let alerter = alerter(FakeMailer::default());
    let event = retry_event(&[destination(&json!({"detail-type": "Scheduled Event"}))]);
    assert!(failures(&alerter.handle(&event).await.unwrap()).is_empty());
    let sent = alerter.mailer.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .subject
            .starts_with("[wa] WARNING an alert could not be read back"),
        "{}",
        sent[0].subject
    );
    assert!(
        sent[0].text.contains("Request id: req-1"),
        "{}",
        sent[0].text
    );
}

#[tokio::test]
async fn an_unknown_event_is_an_error() {
    let alerter = alerter(FakeMailer::default());
    assert!(matches!(
        alerter
            .handle(&json!({"detail-type": "Scheduled Event"}))
            .await,
        Err(AlerterError::Trigger(_))
    ));
}

#[tokio::test]
async fn dead_letters_are_archived_with_their_fifo_ids_before_the_mail() {
    let alerter = alerter(FakeMailer::default());
    let event = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": "{\"v\":1}",
        "attributes": {"MessageGroupId": "P:1555", "MessageDeduplicationId": "wamid.1"}}]});
    alerter.handle(&event).await.unwrap();
    let archived = alerter.archive.archived.lock().unwrap();
    assert_eq!(archived.len(), 1);
    assert_eq!(
        (
            archived[0].group_id.as_str(),
            archived[0].deduplication_id.as_str()
        ),
        ("P:1555", "wamid.1")
    );
    assert_eq!(archived[0].body, "{\"v\":1}");
    let sent = alerter.mailer.sent.lock().unwrap();
    assert!(sent[0].text.contains(
        "aws sqs start-message-move-task --source-arn arn:aws:sqs:eu-west-1:1:archive.fifo --destination-arn arn:aws:sqs:eu-west-1:1:inbound.fifo"
    ));
}

#[tokio::test]
async fn an_archive_failure_keeps_the_dead_letters_and_mails_nothing() {
    let alerter = Alerter::new(
        FakeMailer::default(),
        FakeStorm::default(),
        FakeQueue::failing(),
        FakeQueue::default(),
        config(),
    );
    let response = alerter.handle(&dead_letters()).await.unwrap();
    assert_eq!(failures(&response), ["m1", "m2"]);
    assert!(alerter.mailer.sent.lock().unwrap().is_empty());
    assert!(alerter.retries.bodies().is_empty());
}
