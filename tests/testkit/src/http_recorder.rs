//! A local HTTP server that stands in for a third-party API (Meta's Graph API, an LLM) in tests:
//! it records every request it gets and answers what the test scripts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method, such as `POST`.
    pub method: String,
    /// The path and query, such as `/v23.0/123/messages`.
    pub path: String,
    /// The headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON. Panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }
}

/// An answer the server gives.
#[derive(Debug, Clone)]
pub struct Canned {
    /// The status.
    pub status: u16,
    /// Extra headers, such as `retry-after`.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: serde_json::Value,
    /// A body of raw bytes with its content type, sent instead of the JSON one when set.
    pub raw: Option<(String, Vec<u8>)>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Canned {
    /// An answer with `status` and the JSON `body`.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            raw: None,
            delay: Duration::ZERO,
        }
    }

    /// An answer with `status` and `bytes` of `content_type` as its body (a file, say).
    pub fn bytes(status: u16, content_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            raw: Some((content_type.to_owned(), bytes)),
            ..Self::json(status, serde_json::Value::Null)
        }
    }

    /// The same answer with a header added.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same answer, given after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = dyn Fn(&RecordedRequest) -> Canned + Send + Sync;

struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    script: Mutex<VecDeque<Canned>>,
    responder: Box<Responder>,
}

/// The running server. It stops when the test's runtime ends.
#[derive(Clone)]
pub struct RecordingServer {
    /// The base URL, such as `http://127.0.0.1:41234`, without a trailing slash.
    pub url: String,
    state: Arc<State>,
}

impl RecordingServer {
    /// Starts a server on a free loopback port. Each request is answered by the next scripted
    /// answer (see [`RecordingServer::script`]) or, when none is left, by `responder`.
    pub async fn start(
        responder: impl Fn(&RecordedRequest) -> Canned + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            responder: Box::new(responder),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a local address"));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { answer(&state, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// Queues answers given, in order, before the responder is used again.
    pub fn script(&self, answers: impl IntoIterator<Item = Canned>) {
        self.state
            .script
            .lock()
            .expect("script lock")
            .extend(answers);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// The requests received so far whose path contains `fragment`.
    pub fn requests_to(&self, fragment: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(fragment))
            .collect()
    }
}

async fn answer(
    state: &State,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = RecordedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| uri.path().to_owned()),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let canned = {
        let scripted = state.script.lock().expect("script lock").pop_front();
        scripted.unwrap_or_else(|| (state.responder)(&request))
    };
    state.requests.lock().expect("requests lock").push(request);
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    let status = StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match canned.raw {
        Some((content_type, bytes)) => (
            status,
            [(axum::http::header::CONTENT_TYPE, content_type)],
            bytes,
        )
            .into_response(),
        None => (status, axum::Json(canned.body)).into_response(),
    };
    for (name, value) in canned.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A Graph API stand-in: accepts read receipts (`{"success": true}`) and answers every sent
/// message with the id `message_id`.
pub async fn graph_api(message_id: &'static str) -> RecordingServer {
    RecordingServer::start(move |request: &RecordedRequest| {
        if request.json()["status"] == "read" {
            Canned::json(200, serde_json::json!({"success": true}))
        } else {
            Canned::json(200, serde_json::json!({"messages": [{"id": message_id}]}))
        }
    })
    .await
}

/// An OpenAI-compatible stand-in that answers every chat completion with `text`.
pub async fn openai_answering(text: &'static str) -> RecordingServer {
    RecordingServer::start(move |_: &RecordedRequest| {
        Canned::json(
            200,
            serde_json::json!({"choices": [{"message": {"role": "assistant", "content": text}}]}),
        )
    })
    .await
}
