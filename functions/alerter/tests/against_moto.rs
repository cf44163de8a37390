//! The alerter as deployed (SES mailer, DynamoDB storm control) against moto's server: mails are
//! read back from the emulator and asserted on subject, recipients and both bodies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alerter::{Alerter, Config};
use base64::Engine;
use serde_json::{Value, json};
use shared::env_config::Env;
use shared::mail::{Mail, SesMailer};
use shared::queue::SqsQueue;
use shared::storm::dynamodb::DynamoDbStormControl;

const SENDER: &str = "alerts@example.com";
const START_MS: i64 = 1_795_255_200_000;

struct Harness {
    alerter: Alerter<SesMailer, DynamoDbStormControl, SqsQueue>,
    archive_url: String,
    recipient: String,
    now: Arc<Mutex<i64>>,
}

impl Harness {
    async fn new() -> Self {
        Self::with_sender(SENDER).await
    }

    async fn with_sender(sender: &str) -> Self {
        let aws = testkit::moto_config().await;
        let ses = aws_sdk_sesv2::Client::new(&aws);
        testkit::mail::verify_sender(&ses, SENDER).await;
        let table = testkit::create_table(&aws_sdk_dynamodb::Client::new(&aws), "alerts").await;
        Self::over(
            ses,
            aws_sdk_dynamodb::Client::new(&aws),
            table,
            sender,
            &format!("{}@example.com", testkit::unique_name("oncall")),
        )
        .await
    }

    async fn over(
        ses: aws_sdk_sesv2::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        table: String,
        sender: &str,
        recipient: &str,
    ) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&testkit::moto_config().await);
        let archive_url = testkit::create_fifo_queue(&sqs, "archive").await;
        let archive_arn = format!(
            "arn:aws:sqs:us-east-1:123456789012:{}",
            archive_url.rsplit('/').next().unwrap_or_default()
        );
        let vars = [
            ("ERROR_LOG_EMAIL", recipient.to_owned()),
            ("ERROR_FROM_EMAIL", sender.to_owned()),
            ("REPLY_TO_EMAIL", "team@example.com".to_owned()),
            ("TABLE_NAME", table.clone()),
            ("STACK_NAME", "wa-test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("ARCHIVE_QUEUE_URL", archive_url.clone()),
            ("ARCHIVE_QUEUE_ARN", archive_arn),
            (
                "INBOUND_QUEUE_ARN",
                "arn:aws:sqs:us-east-1:123456789012:wa-test-inbound.fifo".to_owned(),
            ),
        ];
        let config = Config::from(&Env::from_fn(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }))
        .expect("a valid config");
        let now = Arc::new(Mutex::new(START_MS));
        let clock_now = now.clone();
        let alerter = Alerter::new(
            SesMailer::new(ses),
            DynamoDbStormControl::new(dynamodb, table),
            SqsQueue::new(sqs, &archive_url),
            config,
        )
        .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
        Self {
            alerter,
            archive_url,
            recipient: recipient.to_owned(),
            now,
        }
    }

    async fn mails(&self) -> Vec<Mail> {
        testkit::mail::sent_mails_to(&self.recipient).await
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by.as_millis() as i64;
    }
}

fn sample(text: &str) -> Value {
    serde_json::from_str(text).expect("a valid sample event")
}

fn failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|i| i["itemIdentifier"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn awslogs(payload: &[u8]) -> Value {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(payload).unwrap();
    json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap())}})
}

#[tokio::test]
async fn a_dead_letter_is_mailed_with_what_when_who_and_how_to_redrive() {
    let h = Harness::new().await;
    let response = h
        .alerter
        .handle(&sample(include_str!(
            "../../../events/alerter/dead-letter.json"
        )))
        .await
        .unwrap();
    assert!(
        failures(&response).is_empty(),
        "a mailed record leaves the dead-letter queue"
    );

    let mails = h.mails().await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, SENDER);
    assert_eq!(mail.to, vec![h.recipient.clone()]);
    assert_eq!(mail.reply_to.as_deref(), Some("team@example.com"));
    assert_eq!(
        mail.subject,
        "[wa-test] CRITICAL 1 message in the dead-letter queue: failed every retry, the users got no answer"
    );
    for expected in [
        "When: 2026-11-21 10:15:00 UTC",
        "Queue: whatsapp-assistant-inbound-dlq.fifo",
        "Users: *******4567",
        "aws sqs start-message-move-task --source-arn arn:aws:sqs:us-east-1:123456789012:archive-",
        "message id: wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZBRTQ0QzE5NTM2RTY4QTM3MAA= | user: *******4567 | type: text | text: Olá! What can you do for me? | receives: 6 | first seen: 2026-11-21 10:00:00 UTC | last seen: 2026-11-21 10:15:00 UTC",
    ] {
        assert!(
            mail.text.contains(expected),
            "the text lacks {expected:?}:\n{}",
            mail.text
        );
    }
    assert!(!mail.text.contains("15551234567"));
    assert!(
        mail.html.contains("<td>Olá! What can you do for me?</td>"),
        "{}",
        mail.html
    );
    assert!(mail.html.contains("<td>*******4567</td>"));
    // Kept in the archive, with its FIFO ids, to be moved back once the cause is fixed.
    let sqs = aws_sdk_sqs::Client::new(&testkit::moto_config().await);
    let archived = testkit::drain(&sqs, &h.archive_url).await;
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].group_id, "106540352242922:15551234567");
    assert_eq!(
        archived[0].deduplication_id,
        "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZBRTQ0QzE5NTM2RTY4QTM3MAA="
    );
}

#[tokio::test]
async fn an_error_log_line_is_mailed_with_its_request_id_link_and_known_cause() {
    let h = Harness::new().await;
    h.alerter
        .handle(&sample(include_str!(
            "../../../events/alerter/error-log.json"
        )))
        .await
        .unwrap();
    let mails = h.mails().await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(
        mail.subject.starts_with("[wa-test] ERROR whatsapp-assistant-processor error, Meta code 131047: the Graph API answered 400"),
        "{}",
        mail.subject
    );
    assert!(mail.subject.chars().count() <= 200);
    for expected in [
        "When: 2026-11-21 10:00:03 UTC",
        "Function: whatsapp-assistant-processor",
        "Request id: 8f5e3c2a-4b1d-4e7f-9a6b-2c3d4e5f6a7b",
        "Users: *******4567",
        "only lets an approved template message reach them",
        "Link: https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/$252Faws$252Flambda$252Fwhatsapp-assistant-processor/log-events/",
    ] {
        assert!(
            mail.text.contains(expected),
            "the text lacks {expected:?}:\n{}",
            mail.text
        );
    }
    assert!(
        mail.html
            .contains("Request id:</b> 8f5e3c2a-4b1d-4e7f-9a6b-2c3d4e5f6a7b"),
        "{}",
        mail.html
    );
}

#[tokio::test]
async fn an_alarm_is_mailed_and_its_recovery_too() {
    let h = Harness::new().await;
    let alarm = include_str!("../../../events/alerter/alarm.json");
    h.alerter.handle(&sample(alarm)).await.unwrap();
    // Back to OK: another state, another fingerprint, another mail.
    let resolved = alarm.replace(
        r#"\"NewStateValue\": \"ALARM\""#,
        r#"\"NewStateValue\": \"OK\""#,
    );
    assert_ne!(
        resolved, alarm,
        "the sample holds the state as escaped JSON"
    );
    h.alerter.handle(&sample(&resolved)).await.unwrap();

    let mails = h.mails().await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails[0].subject.starts_with(
            "[wa-test] ALARM alarm whatsapp-assistant-dlq-not-empty: Threshold Crossed"
        ),
        "{}",
        mails[0].subject
    );
    assert!(
        mails[0]
            .text
            .contains("metric: AWS/SQS/ApproximateNumberOfMessagesVisible"),
        "{}",
        mails[0].text
    );
    assert!(
        mails[0]
            .text
            .contains("condition: MAXIMUM GreaterThanThreshold 0.0 for 1 × 60 s")
    );
    assert!(
        mails[0]
            .text
            .contains("#alarmsV2:alarm/whatsapp-assistant-dlq-not-empty")
    );
    assert!(
        mails[0]
            .html
            .contains("Messages reached the dead-letter queue")
    );
    assert!(
        mails[1]
            .subject
            .starts_with("[wa-test] RESOLVED alarm whatsapp-assistant-dlq-not-empty")
    );
    assert!(mails[1].text.contains("Nothing to do"));
}

#[tokio::test]
async fn a_hundred_identical_errors_give_one_mail_and_the_next_reports_99_held_back() {
    let h = Harness::new().await;
    let event = sample(include_str!("../../../events/alerter/error-log.json"));
    for _ in 0..100 {
        h.alerter.handle(&event).await.unwrap();
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(h.mails().await.len(), 1);
    h.advance(Duration::from_secs(15 * 60));
    h.alerter.handle(&event).await.unwrap();
    let mails = h.mails().await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1].text.contains("Held back: 99 more alert(s) like this were held back since the last mail at 2026-11-21 10:00:00 UTC."),
        "{}",
        mails[1].text
    );
    assert!(mails[1].html.contains("99 more alert(s)"));
}

#[tokio::test]
async fn an_ses_failure_leaves_the_dead_letters_failed_and_the_retry_mails_them() {
    let aws = testkit::moto_config().await;
    let table = testkit::create_table(&aws_sdk_dynamodb::Client::new(&aws), "alerts").await;
    let recipient = format!("{}@example.com", testkit::unique_name("oncall"));
    let ses = aws_sdk_sesv2::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    // A sender SES has not verified: SES refuses the mail.
    let broken = Harness::over(
        ses.clone(),
        dynamodb.clone(),
        table.clone(),
        "unverified@example.net",
        &recipient,
    )
    .await;
    let event = sample(include_str!("../../../events/alerter/dead-letter.json"));
    let response = broken.alerter.handle(&event).await.unwrap();
    assert_eq!(
        failures(&response),
        ["0e3a7c55-1111-4c1b-9d55-6d5f0a0c0001"]
    );
    assert!(broken.mails().await.is_empty());

    // Fixed: the redelivered records are mailed at once (the window was given back).
    testkit::mail::verify_sender(&ses, SENDER).await;
    let fixed = Harness::over(ses, dynamodb, table, SENDER, &recipient).await;
    let response = fixed.alerter.handle(&event).await.unwrap();
    assert!(failures(&response).is_empty());
    assert_eq!(fixed.mails().await.len(), 1);
}

#[tokio::test]
async fn hostile_strings_are_escaped_and_bounded() {
    let h = Harness::new().await;
    let script = "<script>alert('x')</script>";
    let long_line = "A".repeat(20_000);
    let body = json!({"v": 1, "phone_number_id": "P", "sender": {"wa_id": "15551234567"}, "id": format!("wamid.{script}"),
        "timestamp": 1, "content": {"type": "text", "body": format!("{script} {long_line}")}});
    let dead_letter = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:1:dlq.fifo", "body": body.to_string(), "attributes": {}}]});
    h.alerter.handle(&dead_letter).await.unwrap();

    let line = json!({"level": "ERROR", "fields": {"message": format!("boom {script}\r\nBcc: evil@example.com {long_line}"),
        "event": "hostile"}}).to_string();
    let mut payload = format!(
        r#"{{"messageType":"DATA_MESSAGE","logGroup":"/aws/lambda/wa-test-webhook","logStream":"s","logEvents":[{{"id":"1","timestamp":{START_MS},"message":{}}}]}}"#,
        serde_json::to_string(&line).unwrap()
    )
    .into_bytes();
    // Invalid UTF-8 inside the log payload.
    let at = payload.windows(4).position(|w| w == b"boom").unwrap();
    payload.splice(at..at, [0xff, 0xfe, b' ']);
    h.alerter.handle(&awslogs(&payload)).await.unwrap();

    let mails = h.mails().await;
    assert_eq!(mails.len(), 2);
    for mail in &mails {
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(
            mail.html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
        );
        assert!(mail.subject.chars().count() <= 200, "{}", mail.subject);
        assert!(!mail.subject.contains('\n'));
        assert!(
            mail.html.len() < 20_000 && mail.text.len() < 20_000,
            "bodies are bounded"
        );
    }
    assert!(
        mails[1].text.contains('\u{fffd}'),
        "invalid UTF-8 is replaced: {}",
        mails[1].text
    );
    assert!(mails[1].subject.contains("boom"));
}
