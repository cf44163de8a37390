//! Every Meta-shaped webhook body in `../shared/fixtures/meta-webhooks/` (beside the checkout),
//! signed here, must be accepted with 200: its inbound messages, its failed statuses of
//! messages to a user, and its Business app echoes land on the queue (in moto's server); other
//! statuses and shapes do not.
//! The folder is handed to CI; a clone without it skips this test and says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use std::path::PathBuf;

use common::{APP_SECRET, Harness, signed_post};
use http::StatusCode;
use serde_json::Value;
use shared::queue_body::QueueBody;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/meta-webhooks")
}

/// The ids of inbound messages a body carries, read straight from the JSON: every
/// `entry[].changes[]` with `field: "messages"` and its `value.messages[].id`.
fn expected_message_ids(body: &Value) -> Vec<String> {
    let array = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    array(body, "entry")
        .iter()
        .flat_map(|entry| array(entry, "changes"))
        .filter(|change| change.get("field").and_then(Value::as_str) == Some("messages"))
        .flat_map(|change| array(&change["value"], "messages"))
        .map(|message| {
            message["id"]
                .as_str()
                .expect("fixture messages have ids")
                .to_owned()
        })
        .collect()
}

/// The ids of the fixture's failed statuses of messages to one user, which go to the queue for
/// the processor to mark those replies undelivered.
fn expected_failure_ids(body: &Value) -> Vec<String> {
    let array = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    array(body, "entry")
        .iter()
        .flat_map(|entry| array(entry, "changes"))
        .filter(|change| change.get("field").and_then(Value::as_str) == Some("messages"))
        .flat_map(|change| array(&change["value"], "statuses"))
        .filter(|status| {
            let to_a_user = ["recipient_id", "recipient_user_id"]
                .iter()
                .any(|k| status[*k].as_str().is_some_and(|id| !id.is_empty()));
            status["status"] == "failed" && to_a_user && status["recipient_type"] != "group"
        })
        .map(|status| status["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The ids of the fixture's Business app echoes (`smb_message_echoes`) that name a user.
fn expected_echo_ids(body: &Value) -> Vec<String> {
    let array = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    array(body, "entry")
        .iter()
        .flat_map(|entry| array(entry, "changes"))
        .filter(|change| change.get("field").and_then(Value::as_str) == Some("smb_message_echoes"))
        .flat_map(|change| array(&change["value"], "message_echoes"))
        .filter(|echo| {
            ["to", "to_user_id"]
                .iter()
                .any(|k| echo[*k].as_str().is_some_and(|id| !id.trim().is_empty()))
        })
        .map(|echo| echo["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn every_meta_fixture_is_accepted_and_only_messages_failures_and_echoes_are_queued() {
    let dir = fixtures_dir();
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: {} is not there (it is handed to CI, not part of a clone)",
            dir.display()
        );
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());

    let (mut cases, mut queued_total, mut quiet_cases, mut failures_total, mut echoes_total) =
        (0, 0, 0, 0, 0);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let cases_in_file: serde_json::Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for (case, body) in cases_in_file {
            // A queue per case: several fixtures reuse message ids, which FIFO deduplication would merge.
            let harness = Harness::new().await;
            let raw = serde_json::to_vec(&body).unwrap();
            let response = harness.webhook.handle(signed_post(&raw, APP_SECRET)).await;
            assert_eq!(response.status(), StatusCode::OK, "{name} / {case}");

            let (mut queued, mut failures, mut echoes) = (Vec::new(), Vec::new(), Vec::new());
            for record in harness.drain().await {
                match QueueBody::read(&record.body).unwrap() {
                    QueueBody::Message(message) => queued.push(message.id),
                    QueueBody::DeliveryFailure(failure) => failures.push(failure.message_id),
                    QueueBody::BusinessEcho(echo) => echoes.push(echo.message_id),
                }
            }
            assert_eq!(queued, expected_message_ids(&body), "{name} / {case}");
            assert_eq!(failures, expected_failure_ids(&body), "{name} / {case}");
            assert_eq!(echoes, expected_echo_ids(&body), "{name} / {case}");
            failures_total += failures.len();
            echoes_total += echoes.len();
            cases += 1;
            queued_total += queued.len();
            quiet_cases += usize::from(queued.is_empty());
        }
    }
    eprintln!(
        "{cases} fixture cases accepted; {queued_total} messages, {failures_total} failed statuses and {echoes_total} echoes queued; {quiet_cases} cases queued no message"
    );
    assert!(queued_total > 0 && quiet_cases > 0);
}
