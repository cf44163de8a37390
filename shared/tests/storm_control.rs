//! The DynamoDB storm control against moto's server (see tests/with-moto.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use shared::storm::dynamodb::{DynamoDbStormControl, KEEP_AFTER_WINDOW_SECONDS, alert_key};
use shared::storm::{StormControl, StormError, Verdict};
use testkit::CallCounter;

/// A fixed clock, so that windows and expiry are exact.
const NOW: i64 = 1_800_000_000;
/// `ALERT_WINDOW_MINUTES`' default.
const WINDOW: Duration = Duration::from_secs(15 * 60);
const WINDOW_SECONDS: i64 = 15 * 60;

const FINGERPRINT: &str = "dlq|whatsapp-processor|Timeout";

struct Fixture {
    control: Arc<DynamoDbStormControl>,
    /// Counts the control's requests.
    calls: CallCounter,
    /// An uncounted client, to read and write items behind the control's back.
    raw: aws_sdk_dynamodb::Client,
    table: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::build(false).await
    }

    /// A fixture whose control reaches moto one request at a time (see
    /// `testkit::serial_proxy`), so that each request is atomic, as it is in DynamoDB.
    async fn atomic() -> Self {
        Self::build(true).await
    }

    async fn build(atomic: bool) -> Self {
        let config = testkit::moto_config().await;
        let raw = aws_sdk_dynamodb::Client::new(&config);
        let table = testkit::create_table(&raw, "alerts").await;
        let control_config = if atomic {
            testkit::serial_proxy::serialized_moto_config().await
        } else {
            config
        };
        let (client, calls) = testkit::dynamodb_client_with_counter(&control_config);
        Self {
            control: Arc::new(DynamoDbStormControl::new(client, &table)),
            calls,
            raw,
            table,
        }
    }

    async fn admit(&self, fingerprint: &str, count: u64, now: i64) -> Verdict {
        self.control
            .admit(fingerprint, count, now, WINDOW)
            .await
            .expect("storm control answers")
    }

    async fn raw_item(&self, fingerprint: &str) -> Option<HashMap<String, AttributeValue>> {
        self.raw
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&alert_key(fingerprint)))
            .consistent_read(true)
            .send()
            .await
            .expect("read the item from moto")
            .item
    }

    async fn put_raw_item(&self, fingerprint: &str, attributes: &[(&str, AttributeValue)]) {
        self.raw
            .put_item()
            .table_name(&self.table)
            .set_item(Some(
                attributes
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), value.clone()))
                    .chain([("pk".to_owned(), s(&alert_key(fingerprint)))])
                    .collect(),
            ))
            .send()
            .await
            .expect("write the item to moto");
    }
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The verdict's held-back count and previous mail time; panics on [`Verdict::Hold`].
fn sent(verdict: &Verdict) -> (u64, Option<i64>, &str) {
    match verdict {
        Verdict::Send {
            held_back,
            previous_mail_at,
            token,
        } => (*held_back, *previous_mail_at, token.as_str()),
        Verdict::Hold => panic!("expected a Send, got {verdict:?}"),
    }
}

#[tokio::test]
async fn the_first_alert_of_a_fingerprint_is_sent_in_one_call() {
    let fx = Fixture::new().await;

    let verdict = fx.admit(FINGERPRINT, 1, NOW).await;
    let (held_back, previous_mail_at, token) = sent(&verdict);
    assert_eq!((held_back, previous_mail_at), (0, None));
    assert_eq!(token.len(), 16, "{token}");
    assert_eq!(fx.calls.count(), 1, "opening a window is one call");

    let item = fx.raw_item(FINGERPRINT).await.expect("the item exists");
    assert_eq!(item["pk"], s("alert#dlq|whatsapp-processor|Timeout"));
    assert_eq!(item["window_until"], n(NOW + WINDOW_SECONDS));
    assert_eq!(item["held"], n(0));
    assert_eq!(item["last_mail_at"], n(NOW));
    assert_eq!(item["token"], s(token));
    assert_eq!(
        item["expires_at"],
        n(NOW + WINDOW_SECONDS + KEEP_AFTER_WINDOW_SECONDS)
    );
}

#[tokio::test]
async fn a_hundred_identical_alerts_in_one_window_mail_once_and_the_next_mail_reports_99() {
    let fx = Fixture::new().await;

    let mut verdicts = Vec::new();
    for _ in 0..100 {
        verdicts.push(fx.admit(FINGERPRINT, 1, NOW).await);
    }
    let sends = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Send { .. }))
        .count();
    assert_eq!(sends, 1);
    assert!(matches!(verdicts[0], Verdict::Send { .. }), "the first one");
    assert_eq!(
        fx.calls.count(),
        1 + 99 * 2,
        "a send is one call, a hold two"
    );

    let item = fx.raw_item(FINGERPRINT).await.expect("the item exists");
    assert_eq!(item["held"], n(99));
    assert_eq!(
        item["expires_at"],
        n(NOW + WINDOW_SECONDS + KEEP_AFTER_WINDOW_SECONDS),
        "holds keep the item a week past the window's end"
    );

    let later = NOW + WINDOW_SECONDS;
    let verdict = fx.admit(FINGERPRINT, 1, later).await;
    let (held_back, previous_mail_at, token) = sent(&verdict);
    assert_eq!((held_back, previous_mail_at), (99, Some(NOW)));
    assert_eq!(fx.calls.count(), 200);

    let item = fx.raw_item(FINGERPRINT).await.expect("the item exists");
    assert_eq!(item["held"], n(0), "the count starts over");
    assert_eq!(item["window_until"], n(later + WINDOW_SECONDS));
    assert_eq!(item["last_mail_at"], n(later));
    assert_eq!(item["token"], s(token));
    assert_eq!(
        item["expires_at"],
        n(later + WINDOW_SECONDS + KEEP_AFTER_WINDOW_SECONDS)
    );

    // One second before the new window ends is still inside it.
    assert_eq!(
        fx.admit(FINGERPRINT, 1, later + WINDOW_SECONDS - 1).await,
        Verdict::Hold
    );
}

#[tokio::test]
async fn held_counts_add_up_in_alerts_not_invocations() {
    let fx = Fixture::new().await;

    sent(&fx.admit(FINGERPRINT, 3, NOW).await);
    assert_eq!(fx.admit(FINGERPRINT, 7, NOW + 1).await, Verdict::Hold);
    assert_eq!(fx.raw_item(FINGERPRINT).await.unwrap()["held"], n(7));
    assert_eq!(fx.admit(FINGERPRINT, 5, NOW + 2).await, Verdict::Hold);
    assert_eq!(fx.admit(FINGERPRINT, 0, NOW + 3).await, Verdict::Hold);

    let verdict = fx.admit(FINGERPRINT, 1, NOW + WINDOW_SECONDS).await;
    assert_eq!(sent(&verdict).0, 12);
}

#[tokio::test]
async fn different_fingerprints_do_not_hold_each_other() {
    let fx = Fixture::new().await;
    let other = "alarm|whatsapp-webhook|Errors";

    sent(&fx.admit(FINGERPRINT, 1, NOW).await);
    let (held_back, previous_mail_at, _) = sent(&fx.admit(other, 1, NOW).await);
    assert_eq!((held_back, previous_mail_at), (0, None));
    assert_eq!(fx.admit(FINGERPRINT, 1, NOW + 1).await, Verdict::Hold);
    assert_eq!(fx.admit(other, 2, NOW + 1).await, Verdict::Hold);

    assert_eq!(fx.raw_item(FINGERPRINT).await.unwrap()["held"], n(1));
    assert_eq!(fx.raw_item(other).await.unwrap()["held"], n(2));
}

#[tokio::test]
async fn a_window_given_back_after_a_failed_mail_lets_the_retry_report_everything() {
    let fx = Fixture::new().await;

    sent(&fx.admit(FINGERPRINT, 1, NOW).await);
    assert_eq!(fx.admit(FINGERPRINT, 4, NOW + 10).await, Verdict::Hold);

    // The next window's mail reports 4, but cannot be sent.
    let later = NOW + WINDOW_SECONDS;
    let verdict = fx.admit(FINGERPRINT, 1, later).await;
    let (held_back, previous_mail_at, token) = sent(&verdict);
    assert_eq!((held_back, previous_mail_at), (4, Some(NOW)));
    // Meanwhile another invocation holds 2 more.
    assert_eq!(fx.admit(FINGERPRINT, 2, later + 1).await, Verdict::Hold);

    let before = fx.calls.count();
    fx.control
        .give_back(FINGERPRINT, token, held_back, previous_mail_at)
        .await
        .unwrap();
    assert_eq!(fx.calls.count(), before + 1, "giving back is one call");
    let item = fx.raw_item(FINGERPRINT).await.unwrap();
    assert_eq!(item["window_until"], n(0));
    assert_eq!(item["held"], n(6));
    assert_eq!(item["last_mail_at"], n(NOW));
    assert!(!item.contains_key("token"), "{item:?}");

    // Giving the same window back again (a retried call) counts nothing twice.
    fx.control
        .give_back(FINGERPRINT, token, held_back, previous_mail_at)
        .await
        .unwrap();
    assert_eq!(fx.raw_item(FINGERPRINT).await.unwrap(), item);

    // The retry, at the same time, mails and reports the original 4 and the 2 held meanwhile.
    let retry = fx.admit(FINGERPRINT, 1, later).await;
    let (held_back, previous_mail_at, _) = sent(&retry);
    assert_eq!((held_back, previous_mail_at), (6, Some(NOW)));
}

#[tokio::test]
async fn giving_back_a_first_window_forgets_the_mail_time() {
    let fx = Fixture::new().await;

    let verdict = fx.admit(FINGERPRINT, 1, NOW).await;
    let (held_back, previous_mail_at, token) = sent(&verdict);
    fx.control
        .give_back(FINGERPRINT, token, held_back, previous_mail_at)
        .await
        .unwrap();
    let item = fx.raw_item(FINGERPRINT).await.unwrap();
    assert!(!item.contains_key("last_mail_at"), "{item:?}");
    assert_eq!(item["held"], n(0));

    let retry = fx.admit(FINGERPRINT, 1, NOW).await;
    let (held_back, previous_mail_at, _) = sent(&retry);
    assert_eq!((held_back, previous_mail_at), (0, None));
}

#[tokio::test]
async fn giving_back_with_a_wrong_token_changes_nothing() {
    let fx = Fixture::new().await;

    sent(&fx.admit(FINGERPRINT, 1, NOW).await);
    assert_eq!(fx.admit(FINGERPRINT, 3, NOW + 1).await, Verdict::Hold);
    let item = fx.raw_item(FINGERPRINT).await.unwrap();

    fx.control
        .give_back(FINGERPRINT, "0123456789abcdef", 50, Some(1))
        .await
        .expect("someone else's window is not an error");
    assert_eq!(fx.raw_item(FINGERPRINT).await.unwrap(), item);
    assert_eq!(fx.admit(FINGERPRINT, 1, NOW + 2).await, Verdict::Hold);

    // Nor does giving back a fingerprint that never mailed create anything.
    fx.control
        .give_back("never-seen", "0123456789abcdef", 50, None)
        .await
        .unwrap();
    assert_eq!(fx.raw_item("never-seen").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_alerts_mail_once() {
    let fx = Fixture::atomic().await;

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let control = Arc::clone(&fx.control);
            tokio::spawn(async move { control.admit(FINGERPRINT, 1, NOW, WINDOW).await })
        })
        .collect();
    let mut verdicts = Vec::new();
    for task in tasks {
        verdicts.push(
            task.await
                .expect("the task ran")
                .expect("storm control answers"),
        );
    }
    let sends = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Send { .. }))
        .count();
    let holds = verdicts.iter().filter(|v| **v == Verdict::Hold).count();
    assert_eq!((sends, holds), (1, 19), "{verdicts:?}");
    assert_eq!(fx.calls.count(), 1 + 19 * 2);

    let verdict = fx.admit(FINGERPRINT, 1, NOW + WINDOW_SECONDS).await;
    assert_eq!(sent(&verdict).0, 19);
}

#[tokio::test]
async fn a_very_long_fingerprint_is_stored_under_its_hash() {
    let fx = Fixture::new().await;
    // Longer than DynamoDB allows in a partition key (2048 bytes).
    let long = format!("log|whatsapp-processor|{}", "panic ".repeat(1000));

    sent(&fx.admit(&long, 1, NOW).await);
    assert_eq!(fx.admit(&long, 2, NOW + 1).await, Verdict::Hold);
    let item = fx.raw_item(&long).await.expect("the item exists");
    let AttributeValue::S(pk) = &item["pk"] else {
        panic!("the key is a string: {item:?}");
    };
    assert!(pk.starts_with("alert#sha256-") && pk.len() == 77, "{pk}");
    assert_eq!(item["held"], n(2));

    // A fingerprint differing in its last character has its own window.
    let sibling = format!("{long}!");
    sent(&fx.admit(&sibling, 1, NOW + 1).await);

    let verdict = fx.admit(&long, 1, NOW + WINDOW_SECONDS).await;
    assert_eq!(sent(&verdict).0, 2);
}

#[tokio::test]
async fn a_damaged_item_neither_silences_its_fingerprint_nor_panics() {
    let fx = Fixture::new().await;
    fx.put_raw_item(
        FINGERPRINT,
        &[
            ("window_until", s("forever")),
            ("held", n(4)),
            ("last_mail_at", s("yesterday")),
            ("expires_at", n(NOW + 60)),
        ],
    )
    .await;

    let verdict = fx.admit(FINGERPRINT, 1, NOW).await;
    let (held_back, previous_mail_at, _) = sent(&verdict);
    assert_eq!((held_back, previous_mail_at), (4, None));
    assert_eq!(fx.admit(FINGERPRINT, 1, NOW + 1).await, Verdict::Hold);
}

#[tokio::test]
async fn a_hold_does_not_shorten_a_longer_expiry() {
    let fx = Fixture::new().await;
    let far = NOW + 365 * 86_400;
    fx.put_raw_item(
        FINGERPRINT,
        &[
            ("window_until", n(NOW + 100)),
            ("held", n(0)),
            ("last_mail_at", n(NOW - 800)),
            ("token", s("0123456789abcdef")),
            ("expires_at", n(far)),
        ],
    )
    .await;

    assert_eq!(fx.admit(FINGERPRINT, 1, NOW).await, Verdict::Hold);
    let item = fx.raw_item(FINGERPRINT).await.unwrap();
    assert_eq!(item["expires_at"], n(far));
    assert_eq!(item["held"], n(1));
}

#[tokio::test]
async fn a_missing_table_is_reported_as_unavailable() {
    let config = testkit::moto_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let control = DynamoDbStormControl::new(client, testkit::unique_name("no-such-table"));

    let admitted = control.admit(FINGERPRINT, 1, NOW, WINDOW).await;
    assert!(
        matches!(admitted, Err(StormError::Unavailable(_))),
        "{admitted:?}"
    );
    let given_back = control.give_back(FINGERPRINT, "t", 1, None).await;
    assert!(
        matches!(given_back, Err(StormError::Unavailable(_))),
        "{given_back:?}"
    );
}
