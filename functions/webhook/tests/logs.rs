//! What the webhook writes to its logs, read back from the JSON log layer: numbers masked, no
//! message text, no secrets, failed statuses at WARN when the cause is the user's and at
//! ERROR otherwise, Business app echoes at INFO without their text. Alone in its own test binary, because
//! tracing caches per call site whether a log line is enabled, and a test that captures logs
//! races with other tests' threads reaching the same call sites first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use common::{APP_SECRET, Harness, VERIFY_TOKEN, signed_post};
use http::StatusCode;

#[tokio::test(flavor = "current_thread")]
async fn logs_mask_numbers_and_hold_no_bodies_or_secrets() {
    let (_guard, logs) = testkit::logs::capture();

    let harness = Harness::new().await;
    let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"P"},
        "contacts":[{"profile":{"name":"Ana"},"wa_id":"15551234567"}],
        "messages":[{"from":"15551234567","id":"wamid.m","type":"text","text":{"body":"my secret plans"}}],
        "statuses":[{"id":"wamid.s","status":"failed","recipient_id":"15557654321","errors":[{"code":131047,"title":"Re-engagement message"}]},
                     {"id":"wamid.p","status":"failed","recipient_id":"15557654321","errors":[{"code":131042,"title":"Payment problem"}]}]}},
        {"field":"smb_message_echoes","value":{"metadata":{"phone_number_id":"P"},
        "message_echoes":[{"from":"15550783881","to":"15559876543","id":"wamid.e","timestamp":"1795255260","type":"text","text":{"body":"a note from the owner"}}]}}]}]}"#;
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(body, APP_SECRET))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(body, "wrong"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        harness.drain().await.len(),
        4,
        "the message, both failures and the echo are queued"
    );

    let text = logs.text();
    let lines = logs.lines();
    assert!(
        text.contains("*******4567") && text.contains("*******4321"),
        "{text}"
    );
    for forbidden in [
        "15551234567",
        "15557654321",
        "15559876543",
        "my secret plans",
        "a note from the owner",
        APP_SECRET,
        VERIFY_TOKEN,
    ] {
        assert!(
            !text.contains(forbidden),
            "the logs contain {forbidden:?}: {text}"
        );
    }
    let failed = |code: i64| {
        lines
            .iter()
            .find(|l| l["fields"]["event"] == "message_failed" && l["fields"]["error_code"] == code)
            .unwrap_or_else(|| panic!("a message_failed line for {code}: {text}"))
    };
    assert_eq!(failed(131_047)["level"], "WARN", "the user's window closed");
    assert_eq!(failed(131_042)["level"], "ERROR", "the business cannot pay");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["event"] == "delivery_failure_enqueued"),
        "{text}"
    );
    let echo = lines
        .iter()
        .find(|l| l["fields"]["event"] == "business_echo_enqueued")
        .unwrap_or_else(|| panic!("a business_echo_enqueued line: {text}"));
    assert_eq!(echo["level"], "INFO");
    assert_eq!(echo["fields"]["recipient"], "*******6543");
    assert_eq!(echo["fields"]["message_id"], "wamid.e");
    let refused = lines
        .iter()
        .find(|l| l["fields"]["status"] == 401)
        .expect("a line for the refused request");
    assert_eq!(refused["level"], "WARN");
}
