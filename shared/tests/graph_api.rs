//! The Graph API adapter against a local [`RecordingServer`] standing in for the Graph API,
//! asserting on what was actually sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared::retry::Backoff;
use shared::secrets::{AppSecrets, SecretString, SecretsError, StaticSecrets};
use shared::whatsapp::graph::{GraphApi, GraphSettings};
use shared::whatsapp::{MetaErrorClass, Recipient, WhatsApp, WhatsAppError};
use testkit::http_recorder::{Canned, RecordingServer};
use tokio::time::Instant;

const TOKEN: &str = "EAAG-test-token-9f3b2c";
const PHONE_NUMBER_ID: &str = "106540352242922";
const USER_PHONE: &str = "15551234567";

fn secrets(token: Option<&str>) -> Arc<StaticSecrets> {
    Arc::new(StaticSecrets(Arc::new(AppSecrets {
        meta_access_token: token.map(SecretString::new),
        ..AppSecrets::default()
    })))
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        max_attempts: 4,
    }
}

fn settings(server: &RecordingServer) -> GraphSettings {
    GraphSettings {
        // A trailing slash, as a configuration might have it.
        base_url: format!("{}/", server.url),
        api_version: "v23.0".into(),
        timeout: Duration::from_secs(5),
        backoff: backoff(),
    }
}

fn sent() -> Canned {
    Canned::json(
        200,
        json!({"messaging_product": "whatsapp",
               "contacts": [{"input": USER_PHONE, "wa_id": USER_PHONE}],
               "messages": [{"id": "wamid.SENT"}]}),
    )
}

fn meta_error(status: u16, code: i64, message: &str) -> Canned {
    Canned::json(
        status,
        json!({"error": {"message": message, "type": "OAuthException", "code": code,
                         "error_data": {"messaging_product": "whatsapp",
                                        "details": format!("details of {code}")},
                         "fbtrace_id": "AbCdEf123"}}),
    )
}

/// A server answering every request with `default` unless scripted otherwise, and a
/// client for it.
async fn start(default: Canned) -> (RecordingServer, GraphApi<StaticSecrets>) {
    let server = RecordingServer::start(move |_| default.clone()).await;
    let api = GraphApi::new(
        reqwest::Client::new(),
        settings(&server),
        secrets(Some(TOKEN)),
    );
    (server, api)
}

fn in_a_minute() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn phone() -> Recipient {
    Recipient::Phone(USER_PHONE.into())
}

/// Sends "Hi" to the test user, before `deadline`.
async fn send_hi(
    api: &GraphApi<StaticSecrets>,
    deadline: Instant,
) -> Result<String, WhatsAppError> {
    api.send_text(PHONE_NUMBER_ID, &phone(), "Hi", deadline)
        .await
}

/// The body of the one request `server` got, after checking that it was a messages call.
fn only_messages_call(server: &RecordingServer) -> serde_json::Value {
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    request.json()
}

#[tokio::test]
async fn sends_a_text_to_a_phone_number() {
    let (server, api) = start(sent()).await;
    let id = api
        .send_text(PHONE_NUMBER_ID, &phone(), "Hello *there*", in_a_minute())
        .await
        .unwrap();
    assert_eq!(id, "wamid.SENT");
    assert_eq!(
        only_messages_call(&server),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "to": USER_PHONE, "type": "text",
               "text": {"preview_url": false, "body": "Hello *there*"}})
    );
}

#[tokio::test]
async fn sends_a_text_to_a_business_scoped_user_id() {
    let (server, api) = start(sent()).await;
    let to = Recipient::UserId("US.13491208655302741918".into());
    api.send_text(PHONE_NUMBER_ID, &to, "Hi", in_a_minute())
        .await
        .unwrap();
    assert_eq!(
        only_messages_call(&server),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "recipient": "US.13491208655302741918", "type": "text",
               "text": {"preview_url": false, "body": "Hi"}})
    );
}

#[tokio::test]
async fn marks_read_with_the_typing_indicator() {
    let (server, api) = start(Canned::json(200, json!({"success": true}))).await;
    api.mark_read_and_typing(PHONE_NUMBER_ID, "wamid.IN")
        .await
        .unwrap();
    assert_eq!(
        only_messages_call(&server),
        json!({"messaging_product": "whatsapp", "status": "read",
               "message_id": "wamid.IN", "typing_indicator": {"type": "text"}})
    );
}

#[tokio::test]
async fn marking_read_is_tried_once() {
    let (server, api) = start(meta_error(400, 130_429, "rate limit hit")).await;
    let error = api
        .mark_read_and_typing(PHONE_NUMBER_ID, "wamid.IN")
        .await
        .unwrap_err();
    assert_eq!(error.class(), MetaErrorClass::RateLimited);
    assert_eq!(server.requests().len(), 1, "best effort: no retry");

    let (server, api) = start(Canned::json(200, json!({"success": false}))).await;
    let error = api
        .mark_read_and_typing(PHONE_NUMBER_ID, "wamid.IN")
        .await
        .unwrap_err();
    assert!(matches!(error, WhatsAppError::BadResponse(_)), "{error:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_a_rate_limit_sent_as_http_400() {
    let (server, api) = start(sent()).await;
    server.script([meta_error(400, 130_429, "(#130429) Rate limit hit")]);
    let id = send_hi(&api, in_a_minute()).await.unwrap();
    assert_eq!(id, "wamid.SENT");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same message again");
}

#[tokio::test]
async fn retries_server_errors_until_success() {
    let (server, api) = start(sent()).await;
    // The first is not even Meta's error object: a proxy's answer, say.
    server.script([
        Canned::json(500, json!("upstream failure")),
        meta_error(500, 2, "Service temporarily unavailable"),
    ]);
    let id = send_hi(&api, in_a_minute()).await.unwrap();
    assert_eq!(id, "wamid.SENT");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn gives_up_after_the_last_attempt() {
    let (server, api) = start(meta_error(400, 131_056, "pair rate limit")).await;
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert_eq!(error.class(), MetaErrorClass::RateLimited);
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn does_not_retry_outside_the_24_hour_window() {
    let (server, api) = start(meta_error(400, 131_047, "Re-engagement message")).await;
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(error.class(), MetaErrorClass::OutsideWindow);
    assert_eq!(
        error,
        WhatsAppError::Api {
            http_status: 400,
            code: Some(131_047),
            message: "Re-engagement message (details of 131047)".into(),
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn does_not_retry_an_undeliverable_message() {
    let (server, api) = start(meta_error(400, 131_026, "Message undeliverable")).await;
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(error.class(), MetaErrorClass::Undeliverable);
}

#[tokio::test]
async fn does_not_retry_an_expired_token() {
    let (server, api) = start(meta_error(
        401,
        190,
        "Error validating access token: Session has expired",
    ))
    .await;
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(error.class(), MetaErrorClass::TokenExpired);
    assert_eq!(error.code(), Some(190));
}

#[tokio::test]
async fn does_not_retry_an_answer_without_a_message_id() {
    // The message may have gone out; sending it again could duplicate it.
    let (server, api) = start(Canned::json(200, json!({"messages": []}))).await;
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    // Meta answered 200: to the processor, the text may have gone out and is not resent.
    assert!(error.outcome_unknown(), "{error:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn waits_as_long_as_retry_after_says() {
    let (server, api) = start(sent()).await;
    server.script([meta_error(400, 130_429, "Rate limit hit").with_header("retry-after", "1")]);
    let start = std::time::Instant::now();
    send_hi(&api, in_a_minute()).await.unwrap();
    assert_eq!(server.requests().len(), 2);
    // The backoff alone would wait at most 50 ms.
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "retried after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn gives_up_when_retry_after_passes_the_deadline() {
    let (server, api) =
        start(meta_error(400, 130_429, "Rate limit hit").with_header("retry-after", "30")).await;
    let error = send_hi(&api, Instant::now() + Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(error.class(), MetaErrorClass::RateLimited);
    assert!(
        matches!(error, WhatsAppError::Api { retry_after: Some(d), .. } if d == Duration::from_secs(30)),
        "{error:?}"
    );
}

#[tokio::test]
async fn makes_no_request_past_the_deadline() {
    let (server, api) = start(sent()).await;
    let past = Instant::now() - Duration::from_millis(1);
    let error = send_hi(&api, past).await.unwrap_err();
    assert_eq!(error, WhatsAppError::Timeout);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn an_attempt_waits_no_longer_than_the_deadline() {
    let (server, api) = start(sent().after(Duration::from_secs(3))).await;
    let start = std::time::Instant::now();
    let error = send_hi(&api, Instant::now() + Duration::from_millis(300))
        .await
        .unwrap_err();
    // The request went out: whether Meta sent the message is unknown.
    assert!(
        matches!(
            error,
            WhatsAppError::OutcomeUnknown {
                timed_out: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_not_resent() {
    let server = RecordingServer::start(|_| sent()).await;
    let settings = GraphSettings {
        timeout: Duration::from_millis(200),
        ..settings(&server)
    };
    let api = GraphApi::new(reqwest::Client::new(), settings, secrets(Some(TOKEN)));
    server.script([sent().after(Duration::from_secs(2))]);
    // Meta may have sent the first: a second attempt could give the user the text twice.
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert!(error.outcome_unknown(), "{error:?}");
    assert_eq!(error.class(), MetaErrorClass::Transient);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_connection_failure_is_transient() {
    // A port that was free a moment ago: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut settings = GraphSettings::new("v23.0");
    settings.base_url = url;
    settings.backoff = Backoff {
        max_attempts: 2,
        ..backoff()
    };
    let api = GraphApi::new(reqwest::Client::new(), settings, secrets(Some(TOKEN)));
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert!(matches!(error, WhatsAppError::Transport(_)), "{error:?}");
    assert_eq!(error.class(), MetaErrorClass::Transient);
}

#[tokio::test]
async fn makes_no_request_without_an_access_token() {
    let server = RecordingServer::start(|_| sent()).await;
    let api = GraphApi::new(reqwest::Client::new(), settings(&server), secrets(None));
    let missing = WhatsAppError::Secrets(SecretsError::MissingKey("META_ACCESS_TOKEN"));
    assert_eq!(send_hi(&api, in_a_minute()).await.unwrap_err(), missing);
    assert_eq!(
        api.mark_read_and_typing(PHONE_NUMBER_ID, "wamid.IN")
            .await
            .unwrap_err(),
        missing
    );
    assert_eq!(missing.class(), MetaErrorClass::Other);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_token_never_shows_in_errors_or_debug_output() {
    // Meta's message quotes the token it could not parse.
    let (_server, api) = start(meta_error(
        401,
        190,
        &format!("Malformed access token {TOKEN}"),
    ))
    .await;
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert_eq!(error.class(), MetaErrorClass::TokenExpired);
    for text in [error.to_string(), format!("{error:?}"), format!("{api:?}")] {
        assert!(!text.contains(TOKEN), "{text}");
    }
}

#[tokio::test]
async fn a_retry_after_of_u64_max_ends_the_retries_without_panicking() {
    let limited = meta_error(429, 130_429, "Rate limit hit")
        .with_header("retry-after", "18446744073709551615");
    let (server, api) = start(limited).await;
    let started = Instant::now();
    let error = send_hi(&api, in_a_minute()).await.unwrap_err();
    assert_eq!(error.class(), MetaErrorClass::RateLimited);
    assert_eq!(server.requests().len(), 1, "no retry past the deadline");
    assert!(started.elapsed() < Duration::from_secs(30), "no wait");
}

#[tokio::test]
async fn meta_s_final_codes_are_sent_once_and_classified() {
    for (code, class) in [
        (131_051, MetaErrorClass::InvalidMessage),
        (100, MetaErrorClass::InvalidMessage),
        (131_030, MetaErrorClass::RecipientNotAllowed),
        (368, MetaErrorClass::AccountBlocked),
    ] {
        let (server, api) = start(meta_error(400, code, "refused")).await;
        let error = send_hi(&api, in_a_minute()).await.unwrap_err();
        assert_eq!(error.class(), class, "{code}");
        assert_eq!(server.requests().len(), 1, "{code}: not retried now");
    }
}

/// Every call made for a number with its own `META_ACCESS_TOKEN_<phone_number_id>` carries that
/// token; calls for other numbers carry `META_ACCESS_TOKEN`.
#[tokio::test]
async fn each_number_calls_with_its_own_token_else_the_default() {
    let server = RecordingServer::start(|request| {
        if request.json()["status"] == "read" {
            Canned::json(200, json!({"success": true}))
        } else {
            sent()
        }
    })
    .await;
    let secrets = AppSecrets::from_json(
        r#"{"META_ACCESS_TOKEN":"token-a","META_ACCESS_TOKEN_222":"token-b"}"#,
    )
    .unwrap();
    let api = GraphApi::new(
        reqwest::Client::new(),
        settings(&server),
        Arc::new(StaticSecrets(Arc::new(secrets))),
    );
    api.send_text("222", &phone(), "from B", in_a_minute())
        .await
        .unwrap();
    api.mark_read_and_typing("222", "wamid.IN").await.unwrap();
    api.send_text("111", &phone(), "from A", in_a_minute())
        .await
        .unwrap();
    api.mark_read_and_typing("111", "wamid.IN2").await.unwrap();
    let calls: Vec<(String, Option<String>)> = server
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.header("authorization").map(str::to_owned)))
        .collect();
    let call = |number: &str, token: &str| {
        (
            format!("/v23.0/{number}/messages"),
            Some(format!("Bearer {token}")),
        )
    };
    assert_eq!(
        calls,
        vec![
            call("222", "token-b"),
            call("222", "token-b"),
            call("111", "token-a"),
            call("111", "token-a"),
        ]
    );
}
