//! What the alerter logs when SES refuses its mails for good, against moto's server (its own test
//! binary: see `testkit::logs`): one ERROR line of its own event, whose error says how to
//! fix it, and the alert kept.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use alerter::{Alerter, Config};
use serde_json::Value;
use shared::env_config::Env;
use shared::log_event::LogEvent;
use shared::mail::SesMailer;
use shared::queue::SqsQueue;
use shared::storm::dynamodb::DynamoDbStormControl;
use testkit::logs;

#[tokio::test]
async fn a_refusal_is_logged_at_error_with_its_own_event_and_the_fix() {
    let aws = testkit::moto_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let table = testkit::create_table(&dynamodb, "alerts").await;
    let archive_url = testkit::create_fifo_queue(&sqs, "archive").await;
    let retry_url = sqs
        .create_queue()
        .queue_name(testkit::unique_name("alert-retry"))
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url
        .expect("a queue URL");
    // A sender SES has not verified.
    let sender = format!("{}@example.net", testkit::unique_name("unverified"));
    let env = Env::from_pairs(&[
        ("ERROR_LOG_EMAIL", "oncall@example.com"),
        ("ERROR_FROM_EMAIL", &sender),
        ("TABLE_NAME", &table),
        ("STACK_NAME", "wa-test"),
        ("ARCHIVE_QUEUE_URL", &archive_url),
        (
            "ARCHIVE_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:123456789012:archive.fifo",
        ),
        (
            "INBOUND_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:123456789012:inbound.fifo",
        ),
        ("ALERT_RETRY_QUEUE_URL", &retry_url),
        (
            "ALERT_RETRY_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:123456789012:alert-retry",
        ),
    ]);
    let alerter = Alerter::new(
        SesMailer::new(aws_sdk_sesv2::Client::new(&aws)),
        DynamoDbStormControl::new(dynamodb, table),
        SqsQueue::new(sqs.clone(), archive_url),
        SqsQueue::standard(sqs, retry_url),
        Config::from(&env).expect("a valid config"),
    );
    let event: Value =
        serde_json::from_str(include_str!("../../../events/alerter/alarm.json")).unwrap();

    let (_guard, captured) = logs::capture();
    let summary = alerter.handle(&event).await.expect("the alert is kept");
    assert_eq!(summary["kept"], 1, "{summary}");

    let lines = captured.lines();
    let of = |event: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["fields"]["event"] == event)
            .collect()
    };
    let refused = of(LogEvent::AlertMailRejected.as_str());
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert_eq!(refused[0]["level"], "ERROR");
    let error = refused[0]["fields"]["error"].as_str().unwrap_or_default();
    for expected in [
        "SES refused the mail for good",
        "MessageRejected",
        "Verify the sender ERROR_FROM_EMAIL",
        "request production access",
    ] {
        assert!(error.contains(expected), "{error}");
    }
    assert!(of(LogEvent::AlertMailFailed.as_str()).is_empty());
    let kept = of(LogEvent::AlertKept.as_str());
    assert_eq!(kept.len(), 1, "{lines:#?}");
    assert_eq!(kept[0]["level"], "WARN");
}
