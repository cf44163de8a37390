//! The Graph API adapter's log lines: the recipient masked, Meta's codes present, and never the
//! access token, the full number or the message text.
//!
//! This test has a binary of its own on purpose. A subscriber installed with `set_default` only
//! sees its own thread, and tracing caches each log call site's interest process-wide: when
//! tests in other threads reach the adapter's call sites first, tracing can cache them as
//! disabled, and this test would miss lines at random.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared::retry::Backoff;
use shared::secrets::{AppSecrets, SecretString, StaticSecrets};
use shared::whatsapp::graph::{GraphApi, GraphSettings};
use shared::whatsapp::{Recipient, WhatsApp};
use testkit::http_recorder::{Canned, RecordingServer};
use tokio::time::Instant;

const TOKEN: &str = "EAAG-log-test-token-51d7";
const USER_PHONE: &str = "15551234567";
const SECRET_TEXT: &str = "the secret plans for Tuesday";

fn meta_error(code: i64, message: &str) -> Canned {
    Canned::json(
        400,
        json!({"error": {"message": message, "type": "OAuthException", "code": code,
                         "fbtrace_id": "AbCdEf123"}}),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn logs_mask_the_recipient_and_hold_no_token_or_text() {
    let (_guard, logs) = testkit::logs::capture();

    let server = RecordingServer::start(|_| {
        Canned::json(
            200,
            json!({"contacts": [{"input": USER_PHONE, "wa_id": USER_PHONE}],
                   "messages": [{"id": "wamid.SENT"}]}),
        )
    })
    .await;
    let settings = GraphSettings {
        base_url: server.url.clone(),
        api_version: "v23.0".into(),
        timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 3,
        },
    };
    let secrets = StaticSecrets(Arc::new(AppSecrets {
        meta_access_token: Some(SecretString::new(TOKEN)),
        ..AppSecrets::default()
    }));
    let api = GraphApi::new(reqwest::Client::new(), settings, Arc::new(secrets));
    let to = Recipient::Phone(USER_PHONE.into());
    let deadline = Instant::now() + Duration::from_secs(30);

    server.script([meta_error(130_429, "Rate limit hit")]);
    api.send_text("106540352242922", &to, SECRET_TEXT, deadline)
        .await
        .unwrap();
    server.script([meta_error(131_047, "Re-engagement message")]);
    api.send_text("106540352242922", &to, SECRET_TEXT, deadline)
        .await
        .unwrap_err();
    api.mark_read_and_typing("106540352242922", "wamid.IN")
        .await
        .unwrap_err();

    let text = logs.text();
    let ours: Vec<serde_json::Value> = logs
        .lines()
        .into_iter()
        .filter(|line| line["target"] == "shared::whatsapp::graph")
        .collect();
    let with_code = |code: i64| {
        ours.iter()
            .any(|line| line["fields"]["meta_code"] == code && line["level"] == "WARN")
    };
    assert!(with_code(130_429) && with_code(131_047), "{text}");
    assert!(
        ours.iter()
            .any(|line| line["fields"]["message"] == "sent a text message"
                && line["fields"]["to"] == "*******4567"),
        "{text}"
    );
    assert!(
        ours.iter()
            .any(|line| line["fields"]["fbtrace_id"] == "AbCdEf123"
                && line["fields"]["http_status"] == 400),
        "{text}"
    );
    for forbidden in [USER_PHONE, SECRET_TEXT, TOKEN] {
        assert!(
            !text.contains(forbidden),
            "the logs contain {forbidden:?}: {text}"
        );
    }
}
