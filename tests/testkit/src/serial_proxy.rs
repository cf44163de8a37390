//! A loopback proxy in front of moto that forwards one request at a time. Moto's threaded server
//! does not make a conditional write atomic (two concurrent writes can both pass the condition),
//! which DynamoDB guarantees for each item; through the proxy, race tests see DynamoDB's
//! guarantee while their clients' requests still interleave freely.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The AWS configuration for moto's server, reached through a proxy that forwards one request at
/// a time. The proxy runs on the calling test's runtime.
pub async fn serialized_moto_config() -> aws_config::SdkConfig {
    let direct = crate::moto_config().await;
    let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let proxy = one_at_a_time(upstream.trim_end_matches('/').to_owned()).await;
    direct.into_builder().endpoint_url(proxy).build()
}

/// Starts a loopback proxy to `upstream` (moto) that forwards one request at a time, and returns
/// its URL. Moto's threaded server does not make a conditional write atomic (two concurrent
/// writes can both pass the condition), which DynamoDB guarantees for each item; the proxy
/// restores that guarantee, while the clients' requests still interleave freely.
pub async fn one_at_a_time(upstream: String) -> String {
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let http = reqwest::Client::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a local address"));
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (gate, http, upstream) = (Arc::clone(&gate), http.clone(), upstream.clone());
            async move {
                let _turn = gate.lock().await;
                forward(&http, &upstream, method, &uri, headers, body).await
            }
        },
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// An upstream answer, read whole.
pub(crate) struct Upstream {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl IntoResponse for Upstream {
    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

pub(crate) async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match send(http, upstream, method, uri, headers, body).await {
        Ok(answer) => answer.into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, error).into_response(),
    }
}

/// Sends a request on to `upstream` and reads its whole answer.
pub(crate) async fn send(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Upstream, String> {
    headers.remove("host");
    headers.remove("content-length");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = http
        .request(method, format!("{upstream}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = answer.status();
    let mut headers = answer.headers().clone();
    headers.remove("content-length");
    headers.remove("transfer-encoding");
    headers.remove("connection");
    let body = answer.bytes().await.map_err(|error| error.to_string())?;
    Ok(Upstream {
        status,
        headers,
        body,
    })
}
