//! What every measurement starts from: the template's resources in moto, the functions' release
//! binaries under the local Lambda runtime, and stand-ins for Meta's Graph API and the LLM that
//! note when they were called.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use local_stack::local::MODEL_REQUEST_LIMIT;
use local_stack::resources::Stack;
use local_stack::runtime::{FunctionSpec, LambdaFunction};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long one invocation may take.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The URL of the moto server `tests/with-moto.sh` started (`AWS_ENDPOINT_URL`).
pub fn moto_url() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| e.starts_with("http://127.0.0.1") || e.starts_with("http://localhost"))
        .map(|e| e.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| {
            eprintln!("speed: run it under tests/with-moto.sh (AWS_ENDPOINT_URL must point at a local moto)");
            std::process::exit(2)
        })
}

/// The configuration that reaches moto directly, for this program's own calls.
pub async fn aws() -> aws_config::SdkConfig {
    let endpoint = moto_url();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "local", "local", None, None, "local",
        ))
        .load()
        .await
}

/// A keep-alive front for moto, whose server answers HTTP/1.0 and closes every connection: a
/// function would otherwise open a TCP connection per AWS call, which it does not do against
/// AWS (the SDK keeps its connections), and its CPU figures would count that. Returns the URL to
/// give the functions as `AWS_ENDPOINT_URL`.
///
/// With `answer_sends`, it answers `SendMessageBatch` itself at once (every entry accepted)
/// instead of forwarding it: moto takes tens of milliseconds per call as its queue fills, SQS a
/// few, and this shows whether the wait costs the function CPU.
pub async fn keep_alive_front(moto: String, answer_sends: bool) -> String {
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (http, moto) = (http.clone(), moto.clone());
            async move {
                let target = headers.get("x-amz-target").and_then(|t| t.to_str().ok());
                if answer_sends && target == Some("AmazonSQS.SendMessageBatch") {
                    return accept_batch(&body);
                }
                forward(&http, &moto, method, uri, headers, body).await
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// SQS's answer to a `SendMessageBatch` of `body` that accepts every entry.
fn accept_batch(body: &[u8]) -> Response {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let accepted: Vec<Value> = request["Entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    json!({"Id": e["Id"], "MessageId": "00000000-0000-0000-0000-000000000000",
                    "MD5OfMessageBody": "00000000000000000000000000000000", "SequenceNumber": "1"})
                })
                .collect()
        })
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        json!({"Successful": accepted, "Failed": []}).to_string(),
    )
        .into_response()
}

async fn forward(
    http: &reqwest::Client,
    moto: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http.request(method, format!("{moto}{path}")).body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONNECTION {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = answer.headers().clone();
            headers.remove(header::CONNECTION);
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::TRANSFER_ENCODING);
            let body = answer.bytes().await.unwrap_or_default();
            (status, headers, body).into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// The template's resources created in moto under the stack name `name`, with a verified SES
/// sender for the alerter.
pub async fn stack(name: &str) -> Stack {
    let aws = aws().await;
    let stack = Stack::create(aws.clone(), name, "oncall@example.com").await;
    aws_sdk_sesv2::Client::new(&aws)
        .create_email_identity()
        .email_identity("alerts@example.com")
        .send()
        .await
        .expect("moto verifies the SES sender");
    stack
}

/// Where the functions' binaries are: `<dir>/<name>/bootstrap` (cargo-lambda's layout) or
/// `<dir>/<name>`.
pub fn binary(dir: &Path, name: &str) -> PathBuf {
    let bootstrap = dir.join(name).join("bootstrap");
    if bootstrap.is_file() {
        bootstrap
    } else {
        dir.join(name)
    }
}

/// What the measurements are run with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Where the binaries are (see [`binary`]).
    pub binaries: PathBuf,
    /// Where the functions' logs go.
    pub log_dir: PathBuf,
    /// The functions' `AWS_ENDPOINT_URL`: moto, through [`keep_alive_front`].
    pub aws_endpoint: String,
}

impl Setup {
    /// Starts function `name` (`webhook`, `processor`, `alerter`) with the environment the
    /// template gives `logical_id` in `stack`, pointed at moto, plus `overrides`.
    pub async fn start(
        &self,
        stack: &Stack,
        name: &str,
        logical_id: &str,
        overrides: &[(&str, String)],
    ) -> LambdaFunction {
        let mut environment: BTreeMap<String, String> = stack.environment(logical_id);
        environment.extend(aws_environment(&self.aws_endpoint));
        for (key, value) in overrides {
            environment.insert((*key).to_owned(), value.clone());
        }
        std::fs::create_dir_all(&self.log_dir).expect("the log folder");
        let log_file = self.log_dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log_file);
        LambdaFunction::start(FunctionSpec {
            name: name.to_owned(),
            binary: binary(&self.binaries, name),
            environment,
            log_file: Some(log_file),
        })
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"))
    }

    /// The size of function `name`'s log so far.
    pub fn log_bytes(&self, name: &str) -> u64 {
        std::fs::metadata(self.log_dir.join(format!("{name}.log")))
            .map(|m| m.len())
            .unwrap_or_default()
    }
}

/// What Lambda and the template give every function besides its own variables, with AWS at
/// `endpoint`.
pub fn aws_environment(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_LAMBDA_LOG_LEVEL", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The process id of a running function.
pub async fn pid(function: &LambdaFunction) -> u32 {
    function.pid().await.expect("the function is running")
}

/// A reply the Graph API stand-in received.
#[derive(Debug, Clone)]
pub struct Reply {
    /// When it arrived.
    pub at: Instant,
    /// Its text.
    pub text: String,
}

/// A call the LLM stand-in answered.
#[derive(Debug, Clone)]
pub struct LlmCall {
    /// The last user turn it was given.
    pub user_text: String,
    /// How long it took to answer, from reading the request to writing the response, its
    /// simulated latency included.
    pub took: Duration,
}

/// How the LLM stand-in answers: the same text every time, or `[#n]` (the marker of the
/// user's last message) and the padding.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This text.
    Fixed(String),
    /// The marker of the user's text, then this padding.
    EchoMarker(String),
}

/// How long the stand-ins take to answer, as the real services would.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Each Graph API call (read + typing, a reply).
    pub graph: Duration,
    /// Each LLM call.
    pub llm: Duration,
}

struct StandInState {
    base_url: String,
    /// The media the Graph stand-in serves, by media id: MIME type and bytes.
    media: Mutex<HashMap<String, (String, Bytes)>>,
    answer: Answer,
    latency: Latency,
    replies: mpsc::UnboundedSender<Reply>,
    llm_calls: Mutex<Vec<LlmCall>>,
    sent: Mutex<u64>,
}

/// The Graph API and LLM stand-ins, served on loopback.
pub struct StandIns {
    /// `http://127.0.0.1:<port>`: the Graph API under `/graph`, the LLM under `/llm/v1`.
    pub base_url: String,
    state: Arc<StandInState>,
}

impl StandIns {
    /// Serves the stand-ins; the replies sent through the Graph API come out of the receiver.
    pub async fn start(answer: Answer, latency: Latency) -> (Self, mpsc::UnboundedReceiver<Reply>) {
        let (replies, received) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("its address"));
        let state = Arc::new(StandInState {
            base_url: base_url.clone(),
            media: Mutex::default(),
            answer,
            latency,
            replies,
            llm_calls: Mutex::default(),
            sent: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/graph/{version}/{phone_number_id}/messages", post(graph))
            .route("/llm/v1/chat/completions", post(llm))
            .route("/graph/{version}/{media_id}", get(media_info))
            .route("/media/{media_id}", get(media_bytes))
            .route("/transcription/v1/audio/transcriptions", post(transcribe))
            .layer(DefaultBodyLimit::max(MODEL_REQUEST_LIMIT))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (Self { base_url, state }, received)
    }

    /// The processor's environment that points it at these stand-ins.
    pub fn processor_overrides(&self) -> Vec<(&'static str, String)> {
        vec![
            ("META_API_BASE_URL", format!("{}/graph", self.base_url)),
            ("LLM_BASE_URL", format!("{}/llm/v1", self.base_url)),
            (
                "TRANSCRIPTION_BASE_URL",
                format!("{}/transcription/v1", self.base_url),
            ),
            // The measurements send a user's messages faster than any person would: counted as
            // deployed (one counter write per burst), never limited.
            ("RATE_LIMIT_PER_MINUTE", "10000".to_owned()),
        ]
    }

    /// Serves `bytes` of `mime_type` as media `media_id`, through Meta's two steps.
    pub fn put_media(&self, media_id: &str, mime_type: &str, bytes: Vec<u8>) {
        let mut media = self.state.media.lock().expect("media");
        media.insert(media_id.to_owned(), (mime_type.to_owned(), bytes.into()));
    }

    /// The LLM calls answered so far, taken out.
    pub fn take_llm_calls(&self) -> Vec<LlmCall> {
        std::mem::take(&mut *self.state.llm_calls.lock().expect("llm calls"))
    }
}

async fn graph(State(state): State<Arc<StandInState>>, body: Bytes) -> Response {
    let at = Instant::now();
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    tokio::time::sleep(state.latency.graph).await;
    if request["status"] == "read" {
        return axum::Json(json!({"success": true})).into_response();
    }
    let text = request["text"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let to = request["to"].clone();
    let number = {
        let mut sent = state.sent.lock().expect("sent");
        *sent += 1;
        *sent
    };
    let _ = state.replies.send(Reply { at, text });
    axum::Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.OUT{number:010}")}]}),
    )
    .into_response()
}

/// Meta's first step: the media's URL, type, size and SHA-256.
async fn media_info(
    State(state): State<Arc<StandInState>>,
    UrlPath((_version, media_id)): UrlPath<(String, String)>,
) -> Response {
    let media = state.media.lock().expect("media");
    let Some((mime_type, bytes)) = media.get(&media_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let sha256 = hex::encode(Sha256::digest(bytes));
    axum::Json(json!({"messaging_product": "whatsapp", "id": media_id, "mime_type": mime_type,
        "sha256": sha256, "file_size": bytes.len(), "url": format!("{}/media/{media_id}", state.base_url)}))
    .into_response()
}

/// Meta's second step: the bytes.
async fn media_bytes(
    State(state): State<Arc<StandInState>>,
    UrlPath(media_id): UrlPath<String>,
) -> Response {
    let media = state.media.lock().expect("media");
    match media.get(&media_id) {
        Some((mime_type, bytes)) => {
            ([(header::CONTENT_TYPE, mime_type.clone())], bytes.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An OpenAI-compatible transcription server: reads the upload whole, answers a fixed text.
async fn transcribe(body: Bytes) -> Response {
    axum::Json(json!({"text": format!("a voice note of {} bytes uploaded", body.len())}))
        .into_response()
}

async fn llm(State(state): State<Arc<StandInState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let user_text = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let answer = match &state.answer {
        Answer::Fixed(text) => text.clone(),
        Answer::EchoMarker(padding) => format!("{} {padding}", marker(&user_text).unwrap_or("")),
    };
    tokio::time::sleep(state.latency.llm).await;
    let response = axum::Json(json!({"id": "speed", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 100}}))
    .into_response();
    state.llm_calls.lock().expect("llm calls").push(LlmCall {
        user_text,
        took: started.elapsed(),
    });
    response
}

/// The `[#n]` marker in `text`, if any.
pub fn marker(text: &str) -> Option<&str> {
    let start = text.find("[#")?;
    let end = start + text[start..].find(']')?;
    Some(&text[start..=end])
}
