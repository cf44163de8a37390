//! Unit tests of the alerter over in-memory fakes of the mailer and storm control. The same
//! behaviour runs against SES and DynamoDB in moto under `tests/`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;

#[derive(Default)]
struct FakeMailer {
    sent: Mutex<Vec<Mail>>,
    fail: bool,
}

impl Mailer for FakeMailer {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        if self.fail {
            return Err(MailError::Rejected("sender not verified".into()));
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

/// Records what it archives; fails every batch when `fail` is set.
#[derive(Default)]
struct FakeArchive {
    archived: Mutex<Vec<shared::queue::QueueEntry>>,
    fail: bool,
}

impl MessageQueue for FakeArchive {
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
    }
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
    let alerter = Alerter::new(
        FakeMailer::default(),
        FakeStorm::default(),
        FakeArchive::default(),
        config(),
    );
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
}

#[tokio::test]
async fn a_held_batch_leaves_the_queue_counted_and_the_next_mail_reports_it() {
    let now = Arc::new(Mutex::new(1_800_000_000_000i64));
    let clock_now = now.clone();
    let alerter = Alerter::new(
        FakeMailer::default(),
        FakeStorm::default(),
        FakeArchive::default(),
        config(),
    )
    .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
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
async fn a_mail_failure_keeps_the_dead_letters_and_gives_the_window_back() {
    let alerter = Alerter::new(
        FakeMailer {
            fail: true,
            ..Default::default()
        },
        FakeStorm::default(),
        FakeArchive::default(),
        config(),
    );
    let response = alerter.handle(&dead_letters()).await.unwrap();
    assert_eq!(failures(&response), ["m1", "m2"]);
    assert_eq!(*alerter.storm.given_back.lock().unwrap(), ["dlq:dlq.fifo"]);
    // The retry, once SES works, is mailed at once.
    let alerter = Alerter {
        mailer: FakeMailer::default(),
        ..alerter
    };
    assert!(failures(&alerter.handle(&dead_letters()).await.unwrap()).is_empty());
    assert_eq!(alerter.mailer.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_log_or_alarm_that_cannot_be_mailed_fails_the_invocation() {
    let alerter = Alerter::new(
        FakeMailer {
            fail: true,
            ..Default::default()
        },
        FakeStorm::default(),
        FakeArchive::default(),
        config(),
    );
    let alarm = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json!({"AlarmName": "a", "NewStateValue": "ALARM"}).to_string()}}]});
    assert!(matches!(
        alerter.handle(&alarm).await,
        Err(AlerterError::Mail(_))
    ));
}

#[tokio::test]
async fn an_unknown_event_is_an_error() {
    let alerter = Alerter::new(
        FakeMailer::default(),
        FakeStorm::default(),
        FakeArchive::default(),
        config(),
    );
    assert!(matches!(
        alerter
            .handle(&json!({"detail-type": "Scheduled Event"}))
            .await,
        Err(AlerterError::Trigger(_))
    ));
}

#[tokio::test]
async fn dead_letters_are_archived_with_their_fifo_ids_before_the_mail() {
    let alerter = Alerter::new(
        FakeMailer::default(),
        FakeStorm::default(),
        FakeArchive::default(),
        config(),
    );
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
    let archive = FakeArchive {
        fail: true,
        ..Default::default()
    };
    let alerter = Alerter::new(
        FakeMailer::default(),
        FakeStorm::default(),
        archive,
        config(),
    );
    let response = alerter.handle(&dead_letters()).await.unwrap();
    assert_eq!(failures(&response), ["m1", "m2"]);
    assert!(alerter.mailer.sent.lock().unwrap().is_empty());
}
