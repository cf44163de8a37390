//! Every Meta-shaped webhook body in `../shared/fixtures/meta-webhooks/` (beside the checkout),
//! signed here, must be accepted with 200: its inbound messages land on the queue (in moto's
//! server), and statuses and other shapes do not. The folder is handed to CI; a clone without it
//! skips this test and says so.
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
use shared::inbound::InboundMessage;

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

#[tokio::test]
async fn every_meta_fixture_is_accepted_and_only_messages_are_queued() {
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

    let (mut cases, mut queued_total, mut quiet_cases) = (0, 0, 0);
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

            let queued: Vec<InboundMessage> = harness
                .drain()
                .await
                .iter()
                .map(|m| serde_json::from_str(&m.body).unwrap())
                .collect();
            let queued_ids: Vec<_> = queued.iter().map(|m| m.id.clone()).collect();
            assert_eq!(queued_ids, expected_message_ids(&body), "{name} / {case}");
            cases += 1;
            queued_total += queued.len();
            quiet_cases += usize::from(queued.is_empty());
        }
    }
    eprintln!(
        "{cases} fixture cases accepted; {queued_total} messages queued; {quiet_cases} cases queued nothing"
    );
    assert!(queued_total > 0 && quiet_cases > 0);
}
