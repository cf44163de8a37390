//! A loopback proxy in front of moto that enforces a rule of SQS that moto does not: a message
//! body may only hold the characters `#x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD |
//! #x10000–#x10FFFF`. AWS refuses a `SendMessage` or `SendMessageBatch` request that breaks it
//! with `InvalidMessageContents`; moto stores such a body. Through this proxy, a test sees what
//! AWS would do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::queue::is_sqs_safe;

/// The proxy's address and how many requests it refused.
#[derive(Clone)]
pub struct SqsRules {
    /// The proxy's URL, to use as the SQS endpoint.
    pub url: String,
    refused: Arc<AtomicUsize>,
    faults: Arc<Faults>,
}

/// Faults injected on purpose, besides SQS's own rules.
#[derive(Default)]
struct Faults {
    /// Sends holding a message body that contains this text fail with a server error.
    marker: Mutex<Option<String>>,
    failed: AtomicUsize,
}

impl SqsRules {
    /// From now on, every send (`SendMessage`, `SendMessageBatch`) one of whose message bodies
    /// contains `marker` fails with SQS's `InternalError` (500), as often as it is tried; `None`
    /// stops the fault.
    pub fn fail_sends_holding(&self, marker: Option<&str>) {
        *self.faults.marker.lock().expect("faults lock") = marker.map(str::to_owned);
    }

    /// How many send requests failed by [`SqsRules::fail_sends_holding`] (each SDK attempt).
    pub fn failed(&self) -> usize {
        self.faults.failed.load(Ordering::SeqCst)
    }

    /// How many requests were refused for their characters.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// The AWS configuration for moto's server, reached through this proxy.
    pub async fn config(&self) -> aws_config::SdkConfig {
        crate::moto_config()
            .await
            .into_builder()
            .endpoint_url(&self.url)
            .build()
    }
}

/// Starts a proxy to moto (`AWS_ENDPOINT_URL`) that refuses, as SQS does, message bodies with
/// characters outside SQS's set. It runs on the calling test's runtime.
pub async fn enforce_sqs_rules() -> SqsRules {
    let upstream = std::env::var("AWS_ENDPOINT_URL")
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let refused = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a local address"));
    let counter = Arc::clone(&refused);
    let faults = Arc::new(Faults::default());
    let injected = Arc::clone(&faults);
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (http, upstream, counter) = (http.clone(), upstream.clone(), Arc::clone(&counter));
            let injected = Arc::clone(&injected);
            async move {
                let bodies = message_bodies(&headers, &body);
                if bodies.iter().any(|text| !is_sqs_safe(text)) {
                    counter.fetch_add(1, Ordering::SeqCst);
                    return invalid_message_contents();
                }
                let marker = injected.marker.lock().expect("faults lock").clone();
                if let Some(marker) = marker
                    && bodies.iter().any(|text| text.contains(&marker))
                {
                    injected.failed.fetch_add(1, Ordering::SeqCst);
                    return internal_error();
                }
                crate::serial_proxy::forward(&http, &upstream, method, &uri, headers, body).await
            }
        },
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    SqsRules {
        url,
        refused,
        faults,
    }
}

/// The message bodies of an SQS send (JSON protocol); none for any other request.
fn message_bodies(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let bodies: Vec<&Value> = match target {
        "AmazonSQS.SendMessage" => vec![&request["MessageBody"]],
        "AmazonSQS.SendMessageBatch" => request["Entries"]
            .as_array()
            .map(|entries| entries.iter().map(|e| &e["MessageBody"]).collect())
            .unwrap_or_default(),
        _ => return Vec::new(),
    };
    bodies
        .into_iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// SQS's answer (JSON protocol) when it fails on its side.
fn internal_error() -> Response {
    let body = serde_json::json!({
        "__type": "com.amazonaws.sqs#InternalError",
        "message": "We encountered an internal error. Please try again."
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        "application/x-amz-json-1.0"
            .parse()
            .expect("a header value"),
    );
    (StatusCode::INTERNAL_SERVER_ERROR, headers, body.to_string()).into_response()
}

/// SQS's answer (JSON protocol) to a body with characters outside its set.
fn invalid_message_contents() -> Response {
    let body = serde_json::json!({
        "__type": "com.amazonaws.sqs#InvalidMessageContents",
        "message": "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        "application/x-amz-json-1.0"
            .parse()
            .expect("a header value"),
    );
    headers.insert(
        "x-amzn-query-error",
        "AWS.SimpleQueueService.InvalidMessageContents;Sender"
            .parse()
            .expect("a header value"),
    );
    (StatusCode::BAD_REQUEST, headers, body.to_string()).into_response()
}
