//! Unit tests of the webhook over in-memory fakes of the queue and the secrets. The same
//! behaviour is tested against SQS and Secrets Manager in moto's server under `tests/`.

use std::sync::{Arc, Mutex};

use lambda_http::Body;
use serde_json::Value;
use shared::meta::signature::sign;
use shared::queue_body::QueueBody;
use shared::secrets::{AppSecrets, SecretString, StaticSecrets};

use super::*;

const APP_SECRET: &str = "local-app-secret";

#[derive(Default)]
struct RecordingQueue {
    batches: Mutex<Vec<Vec<QueueEntry>>>,
    fail_with: Option<QueueError>,
    /// When set, only the call of this number (0 for the first) fails with `fail_with`.
    fail_call: Option<usize>,
    calls: Mutex<usize>,
}

impl MessageQueue for RecordingQueue {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<(), QueueError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls - 1
        };
        if let Some(error) = &self.fail_with
            && self.fail_call.is_none_or(|failing| failing == call)
        {
            return Err(error.clone());
        }
        self.batches.lock().unwrap().push(entries.to_vec());
        Ok(())
    }
}

struct UnreachableSecrets;

impl Secrets for UnreachableSecrets {
    async fn current(&self) -> Result<Arc<AppSecrets>, SecretsError> {
        Err(SecretsError::Fetch("connection refused".into()))
    }
}

fn secrets() -> StaticSecrets {
    StaticSecrets(Arc::new(AppSecrets {
        meta_app_secret: Some(SecretString::new(APP_SECRET)),
        meta_app_secret_previous: Some(SecretString::new("previous-app-secret")),
        meta_verify_token: Some(SecretString::new("local-verify-token")),
        ..AppSecrets::default()
    }))
}

fn webhook() -> Webhook<RecordingQueue, StaticSecrets> {
    Webhook::new(RecordingQueue::default(), secrets())
}

fn event(json: &str) -> Request {
    lambda_http::request::from_str(json).expect("a valid API Gateway event")
}

fn post(body: &[u8], signature: Option<&str>) -> Request {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("https://example.test/webhook");
    if let Some(signature) = signature {
        builder = builder.header("X-Hub-Signature-256", signature);
    }
    builder.body(Body::Binary(body.to_vec())).unwrap()
}

fn signed(body: &[u8]) -> Request {
    post(body, Some(&sign(body, APP_SECRET.as_bytes())))
}

fn text_of(response: &Response<Body>) -> String {
    String::from_utf8(response.body().as_ref().to_vec()).unwrap()
}

fn messages_body(count: usize) -> Vec<u8> {
    let messages: Vec<_> = (0..count)
        .map(|i| {
            serde_json::json!({"from": "15551234567", "id": format!("wamid.{i}"), "timestamp": "1700000000",
                "type": "text", "text": {"body": format!("message {i}")}})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"object": "whatsapp_business_account", "entry": [{"changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "PNID"}, "messages": messages}}]}]}))
    .unwrap()
}

fn queued_bodies(
    webhook: &Webhook<RecordingQueue, StaticSecrets>,
) -> Vec<shared::inbound::InboundMessage> {
    webhook
        .queue
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|entry| serde_json::from_str(&entry.body).unwrap())
        .collect()
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge_for_the_right_token() {
    let response = webhook()
        .handle(event(include_str!(
            "../../../events/webhook/verify-subscription.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text_of(&response), "1158201444");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
}

#[tokio::test]
async fn the_handshake_refuses_a_wrong_token_mode_or_missing_challenge() {
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=local-verify-toke&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=local-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=local-verify-token",
        "hub.mode=subscribe&hub.challenge=1",
        "",
    ] {
        let request = http::Request::builder()
            .method("GET")
            .uri("https://example.test/webhook")
            .body(Body::Empty)
            .unwrap()
            .with_query_string_parameters(
                query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split_once('=').unwrap())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        let response = webhook().handle(request).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{query}");
        assert_eq!(text_of(&response), "verification failed");
    }
}

#[tokio::test]
async fn the_signed_sample_event_is_accepted_and_queued() {
    let webhook = webhook();
    let response = webhook
        .handle(event(include_str!(
            "../../../events/webhook/text-message.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let queued = queued_bodies(&webhook);
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].content,
        shared::inbound::MessageContent::Text {
            body: "Olá! What can you do for me?".into()
        }
    );
    let batches = webhook.queue.batches.lock().unwrap();
    assert_eq!(batches[0][0].group_id, "106540352242922:15551234567");
    assert_eq!(
        batches[0][0].deduplication_id,
        "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZBRTQ0QzE5NTM2RTY4QTM3MAA="
    );
}

#[tokio::test]
async fn a_base64_encoded_body_is_decoded_before_the_signature_check() {
    let webhook = webhook();
    let response = webhook
        .handle(event(include_str!(
            "../../../events/webhook/text-message-base64.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(queued_bodies(&webhook).len(), 1);
}

/// A request as a Lambda function URL (`AuthType` NONE) delivers it: payload 2.0 with the
/// function URL's sentinels and `null` fields, lower-case headers, the body as text or base64.
fn function_url_request(
    method: &str,
    raw_query: &str,
    body: &[u8],
    signature: Option<&str>,
    base64: bool,
) -> Request {
    use base64::Engine as _;
    let host = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws";
    let mut headers = serde_json::json!({"host": host, "content-type": "application/json",
        "user-agent": "facebookexternalua", "x-forwarded-proto": "https", "x-forwarded-for": "173.252.127.1"});
    if let Some(signature) = signature {
        headers["x-hub-signature-256"] = signature.into();
    }
    let text = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let query: serde_json::Map<String, Value> = raw_query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let event = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/webhook", "rawQueryString": raw_query,
        "headers": headers,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "requestContext": {"accountId": "anonymous", "apiId": "abcdefghijklmnopqrstuvwxyz012345",
            "authentication": null, "domainName": host, "domainPrefix": "abcdefghijklmnopqrstuvwxyz012345",
            "http": {"method": method, "path": "/webhook", "protocol": "HTTP/1.1",
                "sourceIp": "173.252.127.1", "userAgent": "facebookexternalua"},
            "requestId": "9d5a4f6e-3c2b-4a1d-8e7f-6a5b4c3d2e1f", "routeKey": "$default", "stage": "$default",
            "time": "21/Nov/2026:10:00:00 +0000", "timeEpoch": 1_795_255_200_000_i64},
        "body": if body.is_empty() { Value::Null } else { Value::from(text) },
        "pathParameters": null, "isBase64Encoded": base64, "stageVariables": null,
    });
    lambda_http::request::from_str(&event.to_string()).expect("a valid function URL event")
}

#[tokio::test]
async fn the_function_url_sample_is_accepted_like_the_api_gateway_one() {
    let (through_url, through_api) = (webhook(), webhook());
    let response = through_url
        .handle(event(include_str!(
            "../../../events/webhook/function-url-text-message.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    through_api
        .handle(event(include_str!(
            "../../../events/webhook/text-message.json"
        )))
        .await;
    assert_eq!(queued_bodies(&through_url), queued_bodies(&through_api));
    assert_eq!(queued_bodies(&through_url).len(), 1);
}

#[tokio::test]
async fn a_function_url_delivers_the_same_bytes_and_signature_as_text_or_base64() {
    // Raw UTF-8 beyond ASCII: the signature is over these exact bytes, whichever encoding
    // carries them.
    let body = r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"PNID"},"messages":[{"from":"15551234567","id":"wamid.url","timestamp":"1700000000","type":"text","text":{"body":"Olá 👋 ção"}}]}}]}]}"#
        .as_bytes();
    let signature = sign(body, APP_SECRET.as_bytes());
    for base64 in [false, true] {
        let webhook = webhook();
        let response = webhook
            .handle(function_url_request(
                "POST",
                "",
                body,
                Some(&signature),
                base64,
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "base64: {base64}");
        let queued = queued_bodies(&webhook);
        assert_eq!(queued.len(), 1);
        assert_eq!(
            queued[0].content,
            shared::inbound::MessageContent::Text {
                body: "Olá 👋 ção".into()
            }
        );
        for wrong in [None, Some(sign(body, b"another-secret"))] {
            let refused = webhook
                .handle(function_url_request(
                    "POST",
                    "",
                    body,
                    wrong.as_deref(),
                    base64,
                ))
                .await;
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(queued_bodies(&webhook).len(), 1, "nothing more queued");
    }
}

#[tokio::test]
async fn the_handshake_works_through_a_function_url() {
    let webhook = webhook();
    let query = "hub.mode=subscribe&hub.verify_token=local-verify-token&hub.challenge=271828";
    let response = webhook
        .handle(function_url_request("GET", query, b"", None, false))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text_of(&response), "271828");
    let wrong = query.replace("local-verify-token", "guess");
    let response = webhook
        .handle(function_url_request("GET", &wrong, b"", None, false))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_queued() {
    let webhook = webhook();
    let response = webhook
        .handle(event(include_str!(
            "../../../events/webhook/bad-signature.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(text_of(&response), "invalid signature");
    for request in [
        post(&messages_body(1), None),
        post(&messages_body(1), Some("sha256=abc")),
        post(&messages_body(1), Some("md5=x")),
    ] {
        assert_eq!(
            webhook.handle(request).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(webhook.queue.batches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_previous_app_secret_is_accepted_during_rotation() {
    let webhook = webhook();
    let body = messages_body(1);
    let response = webhook
        .handle(post(&body, Some(&sign(&body, b"previous-app-secret"))))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn twelve_messages_go_out_in_two_batches_in_order() {
    let webhook = webhook();
    let response = webhook.handle(signed(&messages_body(12))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let sizes: Vec<_> = webhook
        .queue
        .batches
        .lock()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [10, 2]);
    let ids: Vec<_> = queued_bodies(&webhook).into_iter().map(|m| m.id).collect();
    let expected: Vec<_> = (0..12).map(|i| format!("wamid.{i}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_queue_failure_is_a_500_so_that_meta_retries() {
    for failure in [
        QueueError::Send("throttled".into()),
        QueueError::Partial(vec![shared::queue::RefusedEntry {
            index: 2,
            reason: "InternalError".into(),
        }]),
    ] {
        let webhook = Webhook::new(
            RecordingQueue {
                fail_with: Some(failure),
                ..Default::default()
            },
            secrets(),
        );
        let response = webhook.handle(signed(&messages_body(3))).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[tokio::test]
async fn unreadable_secrets_are_a_500_not_a_401() {
    let webhook = Webhook::new(RecordingQueue::default(), UnreachableSecrets);
    let body = messages_body(1);
    let response = webhook
        .handle(post(&body, Some(&sign(&body, APP_SECRET.as_bytes()))))
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let verify = webhook
        .handle(event(include_str!(
            "../../../events/webhook/verify-subscription.json"
        )))
        .await;
    assert_eq!(verify.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn signed_bytes_that_are_not_json_are_a_400() {
    let webhook = webhook();
    assert_eq!(
        webhook
            .handle(signed(b"definitely not json"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        webhook.handle(signed(b"")).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn signed_json_of_other_shapes_is_a_200_and_queues_nothing() {
    let webhook = webhook();
    for body in [
        br#"{"object":"page","entry":[]}"#.as_slice(),
        br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]}]}"#,
        br#"[]"#,
        br#""just a string""#,
    ] {
        assert_eq!(webhook.handle(signed(body)).await.status(), StatusCode::OK);
    }
    assert!(webhook.queue.batches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn statuses_are_logged_and_only_failures_of_a_users_message_queued() {
    let webhook = webhook();
    let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"P"},"statuses":[
        {"id":"wamid.d","status":"delivered","recipient_id":"15551234567"},
        {"id":"wamid.f","status":"failed","recipient_id":"15551234567","errors":[{"code":131047,"title":"Re-engagement message"}]},
        {"id":"wamid.g","status":"failed","recipient_id":"120363","recipient_type":"group","errors":[{"code":131026}]}]}}]}]}"#;
    let receipt = webhook
        .receive(body, Some(&sign(body, APP_SECRET.as_bytes())))
        .await
        .unwrap();
    assert_eq!(
        receipt,
        Receipt {
            enqueued: 0,
            failures_enqueued: 1,
            echoes_enqueued: 0,
            statuses: 3,
            skipped: 0,
            malformed: 0
        }
    );
    let batches = webhook.queue.batches.lock().unwrap();
    assert_eq!(batches.len(), 1);
    let [entry] = batches[0].as_slice() else {
        panic!("one entry: {batches:?}");
    };
    assert_eq!(entry.group_id, "P:15551234567", "the conversation's group");
    assert_eq!(entry.deduplication_id, "failed:wamid.f");
    let Ok(QueueBody::DeliveryFailure(failure)) = QueueBody::read(&entry.body) else {
        panic!("a delivery failure: {}", entry.body);
    };
    assert_eq!(
        (failure.message_id.as_str(), failure.error_code),
        ("wamid.f", Some(131_047))
    );
}

#[tokio::test]
async fn the_business_app_echo_sample_is_queued_in_the_users_conversation() {
    let webhook = webhook();
    let response = webhook
        .handle(event(include_str!(
            "../../../events/webhook/business-app-echo.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text_of(&response));
    let batches = webhook.queue.batches.lock().unwrap();
    let [entry] = batches
        .concat()
        .try_into()
        .unwrap_or_else(|b| panic!("one entry: {b:?}"));
    // The same group as the user's messages (see the text-message sample's test).
    assert_eq!(entry.group_id, "106540352242922:15551234567");
    assert_eq!(
        entry.deduplication_id,
        "echo:wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    );
    assert!(
        !entry.body.contains("Marta"),
        "no text is queued: {}",
        entry.body
    );
    assert_eq!(
        QueueBody::read(&entry.body),
        Ok(QueueBody::BusinessEcho(shared::queue_body::BusinessEcho {
            v: 1,
            phone_number_id: "106540352242922".into(),
            recipient: "15551234567".into(),
            message_id: "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into(),
            timestamp: Some(1_795_255_260),
        }))
    );
}

#[tokio::test]
async fn echoes_follow_the_deliverys_messages_and_each_goes_to_its_users_group() {
    let webhook = webhook();
    let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[
        {"field":"smb_message_echoes","value":{"metadata":{"phone_number_id":"P"},"message_echoes":[
            {"from":"15550783881","to":"+1 555 123 4567","id":"wamid.e1","timestamp":"1700000001","type":"text","text":{"body":"hi"}},
            {"from":"15550783881","to_user_id":"US.42","id":"wamid.e2","type":"image","image":{"id":"9"}},
            {"from":"15550783881","id":"wamid.nobody","type":"text"}]}},
        {"field":"messages","value":{"metadata":{"phone_number_id":"P"},"messages":[
            {"from":"15551234567","id":"wamid.m1","timestamp":"1700000000","type":"text","text":{"body":"hello"}}]}}]}]}"#;
    let receipt = webhook
        .receive(body, Some(&sign(body, APP_SECRET.as_bytes())))
        .await
        .unwrap();
    assert_eq!(
        (receipt.enqueued, receipt.echoes_enqueued, receipt.skipped),
        (1, 2, 1)
    );
    let entries: Vec<(String, String)> = webhook
        .queue
        .batches
        .lock()
        .unwrap()
        .concat()
        .into_iter()
        .map(|e| (e.group_id, e.deduplication_id))
        .collect();
    let pair = |group: &str, id: &str| (group.to_owned(), id.to_owned());
    assert_eq!(
        entries,
        [
            pair("P:15551234567", "wamid.m1"),
            pair("P:15551234567", "echo:wamid.e1"),
            pair("P:US.42", "echo:wamid.e2"),
        ]
    );
}

#[tokio::test]
async fn a_refused_echo_is_a_500_so_that_meta_delivers_it_again() {
    let webhook = Webhook::new(
        RecordingQueue {
            fail_with: Some(QueueError::Send("throttled".into())),
            ..RecordingQueue::default()
        },
        secrets(),
    );
    let response = webhook
        .handle(event(include_str!(
            "../../../events/webhook/business-app-echo.json"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

/// A second Meta app's secret (`META_APP_SECRET_<SUFFIX>`) signs deliveries as well as the
/// first app's; a secret configured nowhere does not.
#[tokio::test]
async fn a_delivery_signed_by_a_second_apps_secret_is_accepted() {
    let secrets = AppSecrets::from_json(
        r#"{"META_APP_SECRET":"local-app-secret","META_APP_SECRET_SHOP2":"second-app-secret","META_APP_SECRET_OLD":""}"#,
    )
    .unwrap();
    let webhook = Webhook::new(RecordingQueue::default(), StaticSecrets(Arc::new(secrets)));
    let body = messages_body(1);
    let by_second = post(&body, Some(&sign(&body, b"second-app-secret")));
    assert_eq!(webhook.handle(by_second).await.status(), StatusCode::OK);
    let by_stranger = post(&body, Some(&sign(&body, b"third-app-secret")));
    assert_eq!(
        webhook.handle(by_stranger).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let by_blank = post(&body, Some(&sign(&body, b"")));
    assert_eq!(
        webhook.handle(by_blank).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(queued_bodies(&webhook).len(), 1);
}

#[test]
fn only_failures_about_the_user_are_not_errors() {
    assert!(is_users_failure(Some(131_047)));
    assert!(is_users_failure(Some(131_026)));
    assert!(is_users_failure(Some(131_030)));
    assert!(!is_users_failure(Some(131_042)), "a payment problem");
    assert!(!is_users_failure(Some(190)));
    assert!(!is_users_failure(Some(1)));
    assert!(!is_users_failure(None));
}

#[tokio::test]
async fn a_body_over_four_mebibytes_is_a_413_before_anything_else() {
    let without_secrets = Webhook::new(RecordingQueue::default(), UnreachableSecrets);
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let response = without_secrets.handle(post(&body, None)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly 4 MiB is still read (and here refused only for its missing signature).
    let at_limit = webhook()
        .handle(post(&vec![b' '; MAX_BODY_BYTES], None))
        .await;
    assert_eq!(at_limit.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn other_methods_are_a_405_naming_the_allowed_ones() {
    let request = http::Request::builder()
        .method("PUT")
        .uri("/webhook")
        .body(Body::Empty)
        .unwrap();
    let response = webhook().handle(request).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET, POST");
}

#[test]
fn config_names_missing_and_invalid_variables() {
    let env = Env::from_pairs;
    assert_eq!(
        Config::from(&env(&[("SECRET_ID", "s")])),
        Err(ConfigError::Missing("QUEUE_URL"))
    );
    assert_eq!(
        Config::from(&env(&[("QUEUE_URL", "https://sqs/q.fifo")])),
        Err(ConfigError::Missing("SECRET_ID"))
    );
    assert!(matches!(
        Config::from(&env(&[("QUEUE_URL", "https://sqs/q"), ("SECRET_ID", "s")])),
        Err(ConfigError::Invalid {
            name: "QUEUE_URL",
            ..
        })
    ));
    assert!(matches!(
        Config::from(&env(&[
            ("QUEUE_URL", "https://sqs/q.fifo"),
            ("SECRET_ID", "s"),
            ("SECRETS_REFRESH_SECONDS", "soon")
        ])),
        Err(ConfigError::Invalid {
            name: "SECRETS_REFRESH_SECONDS",
            ..
        })
    ));
    let config = Config::from(&env(&[
        ("QUEUE_URL", "https://sqs/q.fifo"),
        ("SECRET_ID", "s"),
    ]))
    .unwrap();
    assert_eq!(config.secrets_refresh, DEFAULT_REFRESH);
}

const SAMPLE: &[(&str, &str)] = &[
    ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q.fifo"),
    ("SECRET_ID", "s"),
    ("SECRETS_REFRESH_SECONDS", "60"),
];

#[test]
#[allow(
    clippy::redundant_closure,
    reason = "Config::from itself is not general over the lookup's lifetime"
)]
fn variables_lists_exactly_what_the_config_reads() {
    let check =
        shared::env_config::check_declared_variables(SAMPLE, VARIABLES, |env| Config::from(env));
    assert_eq!(check, Ok(()));
}

#[tokio::test]
async fn a_three_megabyte_delivery_is_accepted() {
    // Meta documents payloads of up to 3 MB: one message and a large field we do not read.
    let mut value: serde_json::Value = serde_json::from_slice(&messages_body(1)).unwrap();
    value["entry"][0]["padding"] = serde_json::Value::String("p".repeat(3_000_000));
    let body = serde_json::to_vec(&value).unwrap();
    assert!(body.len() > 3_000_000);
    let webhook = webhook();
    assert_eq!(webhook.handle(signed(&body)).await.status(), StatusCode::OK);
    assert_eq!(queued_bodies(&webhook).len(), 1);
}

#[tokio::test]
async fn a_lone_surrogate_is_read_as_a_replacement_character_not_refused() {
    let body = messages_body(1);
    let text = String::from_utf8(body)
        .unwrap()
        .replace("message 0", r"cut \ud83d emoji");
    let webhook = webhook();
    let response = webhook.handle(signed(text.as_bytes())).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text_of(&response));
    let queued = queued_bodies(&webhook);
    assert_eq!(
        queued[0].content,
        shared::inbound::MessageContent::Text {
            body: "cut \u{FFFD} emoji".into()
        }
    );
}

#[tokio::test]
async fn texts_outside_sqs_characters_make_sqs_safe_bodies() {
    let body = String::from_utf8(messages_body(1))
        .unwrap()
        .replace("message 0", "nonchars \u{FFFE}\u{FFFF} and \\u0001 😀");
    let webhook = webhook();
    assert_eq!(
        webhook.handle(signed(body.as_bytes())).await.status(),
        StatusCode::OK
    );
    let batches = webhook.queue.batches.lock().unwrap().clone();
    let entry = &batches[0][0];
    assert!(shared::queue::is_sqs_safe(&entry.body), "{}", entry.body);
    assert!(entry.body.is_ascii());
    let queued = queued_bodies(&webhook);
    assert_eq!(
        queued[0].content,
        shared::inbound::MessageContent::Text {
            body: "nonchars \u{FFFE}\u{FFFF} and \u{0001} 😀".into()
        }
    );
}

#[tokio::test]
async fn a_failed_batch_does_not_stop_the_other_conversations() {
    // 12 users, one message each: the first call (10 users) fails, the second is still made.
    let mut value: serde_json::Value = serde_json::from_slice(&messages_body(12)).unwrap();
    for (i, message) in value["entry"][0]["changes"][0]["value"]["messages"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        message["from"] = serde_json::Value::String(format!("1555000{i:04}"));
    }
    let body = serde_json::to_vec(&value).unwrap();
    let webhook = Webhook::new(
        RecordingQueue {
            fail_with: Some(QueueError::Send("throttled".into())),
            fail_call: Some(0),
            ..Default::default()
        },
        secrets(),
    );
    let response = webhook.handle(signed(&body)).await;
    assert_eq!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "Meta must deliver again"
    );
    let ids: Vec<String> = queued_bodies(&webhook).into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["wamid.10", "wamid.11"], "the second call was made");
    assert_eq!(*webhook.queue.calls.lock().unwrap(), 2);
}

/// Property tests of the handler end to end over the in-memory fakes: whatever Meta signs, the
/// answer is 200 or 400 (never 500 while the queue works: a 500 is retried for 7 days), and
/// every queued body keeps SQS's character rule.
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn handle_signed(body: &[u8]) -> (StatusCode, Vec<QueueEntry>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let webhook = webhook();
        let status = runtime.block_on(webhook.handle(signed(body))).status();
        let queued = webhook.queue.batches.lock().unwrap().concat();
        (status, queued)
    }

    fn check(body: &[u8]) -> Result<(), TestCaseError> {
        let (status, queued) = handle_signed(body);
        prop_assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{status} for {:?}",
            String::from_utf8_lossy(body)
        );
        for entry in queued {
            prop_assert!(shared::queue::is_sqs_safe(&entry.body), "{}", entry.body);
        }
        Ok(())
    }

    /// A scalar, object or list of the kind a message's fields hold.
    fn field() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::from),
            "[0-9]{1,16}".prop_map(Value::from),
            "[\u{fffe}\u{ffff}\u{1}a😀]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(vec![
                        "body", "id", "type", "caption", "from", "name", "user_id"
                    ]),
                    inner,
                    0..4
                )
                .prop_map(|m| json!(m)),
            ]
        })
    }

    /// A message: known keys with arbitrary values, often a well-formed text message.
    fn message() -> impl Strategy<Value = Value> {
        let keys = vec![
            "from",
            "from_user_id",
            "id",
            "timestamp",
            "type",
            "text",
            "image",
            "context",
            "reaction",
            "interactive",
            "system",
            "errors",
        ];
        (
            proptest::collection::btree_map(proptest::sample::select(keys), field(), 0..6),
            any::<bool>(),
            "\\PC{0,40}",
        )
            .prop_map(|(fields, well_formed, text)| {
                let mut message = json!(fields);
                if well_formed {
                    message["from"] = json!("15551234567");
                    message["id"] = json!(format!("wamid.{}", text.len()));
                    message["type"] = json!("text");
                    message["text"] = json!({ "body": text });
                }
                message
            })
    }

    fn delivery() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(message(), 0..4),
            proptest::collection::vec(field(), 0..3),
            field(),
        )
            .prop_map(|(messages, contacts, statuses)| {
                json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
                    "field": "messages", "value": {"metadata": {"phone_number_id": "PNID"},
                    "contacts": contacts, "messages": messages, "statuses": statuses}}]}]})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_signed_bytes_get_200_or_400(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            check(&body)?;
        }

        #[test]
        fn any_signed_delivery_gets_200_or_400(delivery in delivery(), surrogate in any::<bool>()) {
            let mut text = serde_json::to_string(&delivery).expect("JSON");
            if surrogate {
                // A lone surrogate escape, which serde_json never writes, in the first string.
                let at = text.find("\"body\":\"").map(|at| at + 8).or_else(|| text.find("\":\"").map(|at| at + 3));
                if let Some(at) = at {
                    text.insert_str(at, "\\udc00");
                }
            }
            check(text.as_bytes())?;
        }
    }
}
