//! What the processor writes to its logs while answering, read back from the JSON log layer:
//! user numbers masked; no message text, answer text or secret. Alone in its own test binary,
//! because tracing caches per call site whether a log line is enabled.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use common::{Harness, USER, event, record, unique};
use serde_json::json;
use testkit::http_recorder::Canned;

#[tokio::test(flavor = "current_thread")]
async fn logs_mask_users_and_hold_no_text_or_secrets() {
    let (_guard, logs) = testkit::logs::capture();

    let h = Harness::new("openai", &[]).await;
    h.handle(&event(vec![record(
        "s1",
        USER,
        &unique("l1"),
        "my bank pin is 4321",
        1,
    )]))
    .await;
    // A refused reply, logged at ERROR with Meta's code.
    h.meta.script([
        Canned::json(200, json!({"success": true})),
        Canned::json(
            400,
            json!({"error": {"message": "Re-engagement message", "code": 131047}}),
        ),
    ]);
    h.handle(&event(vec![record(
        "s2",
        USER,
        &unique("l2"),
        "are you there",
        1,
    )]))
    .await;

    // An unknown model: the fallback at once, and an ERROR naming the cause and the action.
    h.llm.script([Canned::json(
        404,
        json!({"error": {"message": "The model `gpt-test` does not exist", "type": "invalid_request_error", "code": "model_not_found"}}),
    )]);
    h.handle(&event(vec![record(
        "s3",
        USER,
        &unique("l3"),
        "which model are you",
        1,
    )]))
    .await;

    let text = logs.text();
    assert!(text.contains("*******4567"), "{text}");
    for forbidden in [
        USER,
        "my bank pin",
        "You said",
        "meta-token-for-tests",
        "llm-key-for-tests",
        "are you there",
        "which model are you",
    ] {
        assert!(
            !text.contains(forbidden),
            "the logs contain {forbidden:?}: {text}"
        );
    }
    let lines = logs.lines();
    let undeliverable = lines
        .iter()
        .find(|l| l["fields"]["event"] == "reply_undeliverable")
        .expect("a reply_undeliverable line");
    assert_eq!(undeliverable["level"], "ERROR");
    assert_eq!(undeliverable["fields"]["error_code"], 131047);
    let unknown_model = lines
        .iter()
        .find(|l| l["fields"]["event"] == "llm_unknown_model")
        .expect("an llm_unknown_model line");
    assert_eq!(unknown_model["level"], "ERROR");
    let message = unknown_model["fields"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("check LLM_MODEL"), "{unknown_model}");
}
