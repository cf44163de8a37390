//! `HttpTools` against a recording stand-in of a shop's API: what reaches the API (method, path,
//! query, body, headers), what the model gets back (answers, error results, cut answers), and
//! what never leaves (invalid arguments, unknown tools, missing secrets, redirects).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shared::secrets::AppSecrets;
use shared::tools::{
    CONTENT_LIMIT, HttpTools, ToolCall, ToolOutcome, ToolRunner, Tools, configure_client,
    idempotency_key, parse_tools,
};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};
use tokio::time::Instant;

const SECRET: &str = "shop-secret-1";

/// The shop's tools, all pointing at `base`.
fn shop_tools(base: &str) -> Tools {
    let file = json!({"tools": [
        {
            "name": "order_status",
            "description": "The status of an order.",
            "parameters": {"type": "object", "additionalProperties": false,
                "properties": {"order_id": {"type": "string", "maxLength": 40},
                               "lang": {"type": "string", "enum": ["en", "fr"]}},
                "required": ["order_id", "lang"]},
            "method": "GET",
            "url": format!("{base}/orders/{{order_id}}?lang={{lang}}"),
            "headers": {"Accept": "application/json", "X-Api-Key": {"secret": "SHOP_API_KEY"}},
            "side_effects": false,
            "timeout_seconds": 5
        },
        {
            "name": "add_to_cart",
            "description": "Adds an item to the cart.",
            "parameters": {"type": "object",
                "properties": {"cart_id": {"type": "string"}, "sku": {"type": "string"},
                               "quantity": {"type": "integer", "minimum": 1}},
                "required": ["cart_id", "sku", "quantity"]},
            "method": "POST",
            "url": format!("{base}/carts/{{cart_id}}/items"),
            "headers": {"X-Api-Key": {"secret": "SHOP_API_KEY"}},
            "side_effects": true
        },
        {
            "name": "loyalty_points",
            "description": "A customer's points.",
            "parameters": {"type": "object", "properties": {}},
            "method": "GET",
            "url": format!("{base}/points"),
            "headers": {"Authorization": {"secret": "LOYALTY_TOKEN"}},
            "side_effects": false
        }
    ]});
    parse_tools(&file.to_string()).unwrap()
}

async fn shop() -> (RecordingServer, HttpTools) {
    let server = RecordingServer::start(|_: &RecordedRequest| {
        Canned::json(200, json!({"status": "shipped"}))
    })
    .await;
    let client = configure_client(reqwest::Client::builder())
        .build()
        .unwrap();
    let secrets = AppSecrets::default().with_key("SHOP_API_KEY", SECRET);
    let tools = HttpTools::new(client, Arc::new(shop_tools(&server.url)), Arc::new(secrets));
    (server, tools)
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: "call_1".into(),
        name: name.into(),
        arguments,
        signature: None,
    }
}

fn in_seconds(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

fn error_of(outcome: &ToolOutcome) -> String {
    assert!(outcome.is_error, "{outcome:?}");
    let content: Value = serde_json::from_str(&outcome.content).unwrap();
    content["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_get_fills_the_url_encoded_and_sends_the_secret_header() {
    let (server, tools) = shop().await;
    let arguments = json!({"order_id": "A 17/../../admin?x=1", "lang": "en"});
    let outcome = tools
        .run(&call("order_status", arguments), "unused", in_seconds(10))
        .await;
    assert!(!outcome.is_error, "{outcome:?}");
    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.call_id, "call_1");
    assert_eq!(
        serde_json::from_str::<Value>(&outcome.content).unwrap(),
        json!({"status": "shipped"})
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        "/orders/A%2017%2F..%2F..%2Fadmin%3Fx%3D1?lang=en"
    );
    assert!(request.body.is_empty());
    assert_eq!(request.header("x-api-key"), Some(SECRET));
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(request.header("idempotency-key"), None);
}

#[tokio::test]
async fn a_post_sends_the_other_arguments_as_json_with_a_stable_idempotency_key() {
    let (server, tools) = shop().await;
    let arguments = json!({"cart_id": "c/1", "sku": "SHOE-42", "quantity": 2});
    let key = idempotency_key("wamid.ABC", 0, 0);
    for _ in 0..2 {
        let outcome = tools
            .run(
                &call("add_to_cart", arguments.clone()),
                &key,
                in_seconds(10),
            )
            .await;
        assert!(!outcome.is_error, "{outcome:?}");
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/carts/c%2F1/items");
        assert_eq!(request.json(), json!({"sku": "SHOE-42", "quantity": 2}));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("x-api-key"), Some(SECRET));
        assert_eq!(request.header("idempotency-key"), Some(key.as_str()));
    }
    assert_eq!(
        key,
        idempotency_key("wamid.ABC", 0, 0),
        "the same on a retry"
    );
}

#[tokio::test]
async fn invalid_arguments_unknown_tools_and_missing_secrets_send_nothing() {
    let (server, tools) = shop().await;
    let cases = [
        (call("order_status", json!({"lang": "en"})), "order_id"),
        (
            call("order_status", json!({"order_id": 17, "lang": "en"})),
            "/order_id",
        ),
        (
            call("order_status", json!({"order_id": "A", "lang": "de"})),
            "/lang",
        ),
        (
            call(
                "order_status",
                json!({"order_id": "A", "lang": "en", "host": "x"}),
            ),
            "host",
        ),
        (call("order_status", json!("A-17")), "invalid arguments"),
        (
            call(
                "add_to_cart",
                json!({"cart_id": "c", "sku": "s", "quantity": 0}),
            ),
            "/quantity",
        ),
        (
            call("order_status", json!({"order_id": "..", "lang": "en"})),
            "`order_id`",
        ),
        (call("delete_everything", json!({})), "no tool of that name"),
        (call("loyalty_points", json!({})), "not available right now"),
    ];
    for (call, expected) in cases {
        let outcome = tools.run(&call, "k", in_seconds(10)).await;
        let error = error_of(&outcome);
        assert!(error.contains(expected), "{call:?}: {error}");
        assert_eq!(outcome.status, None);
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[tokio::test]
async fn an_error_status_goes_back_to_the_model_with_its_status() {
    let (server, tools) = shop().await;
    server.script([Canned::json(500, json!({"message": "database down"}))]);
    let arguments = json!({"order_id": "A-17", "lang": "en"});
    let outcome = tools
        .run(&call("order_status", arguments), "k", in_seconds(10))
        .await;
    assert_eq!(outcome.status, Some(500));
    assert!(error_of(&outcome).contains("HTTP status 500"));
    let content: Value = serde_json::from_str(&outcome.content).unwrap();
    assert!(content["body"].as_str().unwrap().contains("database down"));
}

#[tokio::test]
async fn no_answer_before_the_deadline_is_a_timeout_result() {
    let (server, tools) = shop().await;
    server.script([Canned::json(200, json!({})).after(Duration::from_secs(3))]);
    let arguments = json!({"order_id": "A-17", "lang": "en"});
    let started = Instant::now();
    // The tool allows 5 s; the deadline leaves 300 ms.
    let deadline = Instant::now() + Duration::from_millis(300);
    let outcome = tools
        .run(&call("order_status", arguments.clone()), "k", deadline)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        error_of(&outcome).contains("did not answer within"),
        "{outcome:?}"
    );
    assert_eq!(outcome.status, None);
    // With the deadline passed, nothing more is sent.
    let outcome = tools
        .run(&call("order_status", arguments), "k", Instant::now())
        .await;
    assert!(error_of(&outcome).contains("no time left"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_long_answer_is_cut_and_a_binary_one_refused() {
    let (server, tools) = shop().await;
    let long = "é".repeat(20_000);
    server.script([
        Canned::bytes(200, "text/plain", long.into_bytes()),
        Canned::bytes(200, "application/octet-stream", vec![0xff, 0xfe, 0x00]),
    ]);
    let arguments = json!({"order_id": "A-17", "lang": "en"});
    let outcome = tools
        .run(
            &call("order_status", arguments.clone()),
            "k",
            in_seconds(10),
        )
        .await;
    assert!(!outcome.is_error);
    let (kept, marker) = outcome.content.split_once('\n').unwrap();
    assert!(kept.len() <= CONTENT_LIMIT && kept.len() > CONTENT_LIMIT - 2);
    assert!(kept.chars().all(|c| c == 'é'));
    assert!(marker.starts_with("[cut:"), "{marker}");
    let outcome = tools
        .run(&call("order_status", arguments), "k", in_seconds(10))
        .await;
    assert!(error_of(&outcome).contains("not UTF-8"));
    assert_eq!(outcome.status, Some(200));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (server, tools) = shop().await;
    let elsewhere =
        RecordingServer::start(|_: &RecordedRequest| Canned::json(200, json!({}))).await;
    server
        .script([Canned::json(302, json!({}))
            .with_header("location", &format!("{}/steal", elsewhere.url))]);
    let arguments = json!({"order_id": "A-17", "lang": "en"});
    let outcome = tools
        .run(&call("order_status", arguments), "k", in_seconds(10))
        .await;
    assert!(error_of(&outcome).contains("redirect"));
    assert_eq!(outcome.status, Some(302));
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn a_round_runs_its_calls_concurrently_with_a_key_per_position() {
    let (server, tools) = shop().await;
    let slow = Canned::json(200, json!({"added": true})).after(Duration::from_millis(600));
    server.script([slow.clone(), slow.clone(), slow]);
    let calls: Vec<ToolCall> = ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, sku)| ToolCall {
            id: format!("call_{i}"),
            name: "add_to_cart".into(),
            arguments: json!({"cart_id": "c1", "sku": sku, "quantity": 1}),
            signature: None,
        })
        .collect();
    let started = Instant::now();
    let outcomes = tools
        .run_round(&calls, "wamid.XYZ", 1, in_seconds(10))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let ids: Vec<&str> = outcomes.iter().map(|o| o.call_id.as_str()).collect();
    assert_eq!(ids, ["call_0", "call_1", "call_2"]);
    assert!(
        outcomes
            .iter()
            .all(|o| !o.is_error && o.status == Some(200))
    );
    let mut sent: Vec<(String, String)> = server
        .requests()
        .iter()
        .map(|r| {
            let sku = r.json()["sku"].as_str().unwrap().to_owned();
            (sku, r.header("idempotency-key").unwrap().to_owned())
        })
        .collect();
    sent.sort();
    let expected: Vec<(String, String)> = ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, sku)| (sku.to_string(), idempotency_key("wamid.XYZ", 1, i as u32)))
        .collect();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn the_catalog_reads_a_tools_file_and_keeps_the_last_valid_version() {
    let path = std::env::temp_dir().join(format!("tools-{}.json", std::process::id()));
    let valid = json!({"tools": [{"name": "ping", "description": "d",
        "parameters": {"type": "object"}, "method": "GET",
        "url": "https://shop.example/ping", "side_effects": false}]});
    std::fs::write(&path, valid.to_string()).unwrap();
    let catalog = shared::tools::ToolsCatalog::new(
        shared::knowledge::FileDocument::new(path.clone()),
        Duration::ZERO,
    );
    let tools = catalog.current(in_seconds(5)).await.unwrap();
    assert_eq!(tools.declarations()[0].name, "ping");
    // A longer, invalid version: the valid one stays.
    std::fs::write(
        &path,
        r#"{"tools": [{"name": "ping", "verb": "GET"}], "x": 1}"#,
    )
    .unwrap();
    let tools = catalog.current(in_seconds(5)).await.unwrap();
    assert_eq!(tools.len(), 1);
    std::fs::remove_file(&path).unwrap();
}
