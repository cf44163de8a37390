//! A loopback HTTP proxy in front of moto that records the AWS operations a client calls and can
//! hold chosen ones without answering, as a stuck service does: the connection is accepted and
//! the request read, and no answer ever comes. Pointed at by a function's `AWS_ENDPOINT_URL`, it
//! shows what the function's real binary does when one AWS service hangs while the others work.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

/// The running proxy. It stops when the test's runtime ends.
#[derive(Clone)]
pub struct AwsProxy {
    /// The proxy's URL, to use as the AWS endpoint.
    pub url: String,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Every request's operation, in arrival order.
    calls: Mutex<Vec<String>>,
    /// The operations to hold: a request whose operation contains the text is held once the
    /// count of such requests still let through is zero.
    hang: Mutex<Vec<(String, usize)>>,
}

impl AwsProxy {
    /// Starts a proxy to moto (`AWS_ENDPOINT_URL`) that forwards everything until told to hold.
    pub async fn start() -> Self {
        let upstream = std::env::var("AWS_ENDPOINT_URL")
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let state = Arc::new(State::default());
        let http = reqwest::Client::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a local address"));
        let handler_state = Arc::clone(&state);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (state, http, upstream) =
                    (Arc::clone(&handler_state), http.clone(), upstream.clone());
                async move { handle(&state, &http, &upstream, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// From now on, requests whose operation (see [`AwsProxy::calls`]) contains `operation` are
    /// held without an answer, after the next `let_through` of them are forwarded.
    pub fn hang(&self, operation: &str, let_through: usize) {
        self.state
            .hang
            .lock()
            .expect("hang lock")
            .push((operation.to_owned(), let_through));
    }

    /// From now on, every request is forwarded.
    pub fn forward_all(&self) {
        self.state.hang.lock().expect("hang lock").clear();
    }

    /// How many requests (each SDK attempt) called an operation containing `operation`, such as
    /// `DynamoDB_20120810.UpdateItem` or `GetSecretValue` (the request's `X-Amz-Target`), or
    /// `POST /v2/email/outbound-emails` (method and path, for the REST services such as SESv2).
    pub fn calls(&self, operation: &str) -> usize {
        self.state
            .calls
            .lock()
            .expect("calls lock")
            .iter()
            .filter(|call| call.contains(operation))
            .count()
    }
}

async fn handle(
    state: &State,
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("{method} {}", uri.path()), str::to_owned);
    state
        .calls
        .lock()
        .expect("calls lock")
        .push(operation.clone());
    if state.holds(&operation) {
        // As a stuck service: the client gives up by its own timeouts.
        std::future::pending::<()>().await;
    }
    crate::serial_proxy::forward(http, upstream, method, &uri, headers, body).await
}

impl State {
    /// Whether a request calling `operation` is to be held, counting it against the requests
    /// still let through.
    fn holds(&self, operation: &str) -> bool {
        let mut hang = self.hang.lock().expect("hang lock");
        let Some((_, let_through)) = hang
            .iter_mut()
            .find(|(held, _)| operation.contains(held.as_str()))
        else {
            return false;
        };
        if *let_through == 0 {
            return true;
        }
        *let_through -= 1;
        false
    }
}
