//! A local Lambda Runtime API: runs a function's real binary (the one `cargo lambda build`
//! packages as `bootstrap`) as Lambda would, and invokes it with events.
//!
//! The emulator serves `GET /2018-06-01/runtime/invocation/next`,
//! `POST /2018-06-01/runtime/invocation/{id}/response`, `…/{id}/error` and
//! `POST /2018-06-01/runtime/init/error` on a loopback port, starts the binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it, and hands it one event at a time, as one Lambda
//! instance does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const API: &str = "/2018-06-01/runtime";

/// Why an invocation gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The handler returned an error (Lambda's "function error").
    #[error("the function failed: {error_type}: {message}")]
    Function {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        message: String,
    },
    /// The function reported an initialisation error (a bad configuration, say).
    #[error("the function failed to start: {0}")]
    Init(String),
    /// No answer within the timeout.
    #[error("the function did not answer within {0:?}")]
    Timeout(Duration),
    /// The process exited.
    #[error("the function's process exited: {0}")]
    Exited(String),
    /// The answer is not JSON.
    #[error("the function's answer is not JSON: {0}")]
    BadResponse(String),
}

enum Outcome {
    Response(Bytes),
    Error { error_type: String, message: String },
}

struct Pending {
    request_id: String,
    event: Vec<u8>,
    deadline_ms: u64,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    function_arn: String,
    queued: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    /// When each invocation in flight was handed to the function.
    started: Mutex<HashMap<String, Instant>>,
    /// How long each finished invocation ran in the function, in the order they finished.
    run_times: Mutex<Vec<Duration>>,
}

/// A function's process under the emulator. The process is killed when this is dropped.
pub struct LambdaFunction {
    name: String,
    queue: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    child: tokio::sync::Mutex<tokio::process::Child>,
    invocations: AtomicU64,
}

/// How to start a function.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// The binary.
    pub binary: PathBuf,
    /// Its environment, besides what Lambda sets.
    pub environment: BTreeMap<String, String>,
    /// Where its standard output and error go; discarded when `None`.
    pub log_file: Option<PathBuf>,
}

impl LambdaFunction {
    /// Starts the emulator on a free loopback port and the function's process against it.
    pub async fn start(spec: FunctionSpec) -> std::io::Result<Self> {
        let (queue, queued) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            function_arn: format!(
                "arn:aws:lambda:us-east-1:123456789012:function:{}",
                spec.name
            ),
            queued: tokio::sync::Mutex::new(queued),
            in_flight: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            started: Mutex::new(HashMap::new()),
            run_times: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = axum::Router::new()
            .route(&format!("{API}/invocation/next"), get(next))
            .route(&format!("{API}/invocation/{{id}}/response"), post(respond))
            .route(&format!("{API}/invocation/{{id}}/error"), post(fail))
            .route(&format!("{API}/init/error"), post(init_error))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let (stdout, stderr) = match &spec.log_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = tokio::process::Command::new(&spec.binary)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME" || k == "TMPDIR"))
            // The template's MemorySize of every function, unless the environment says otherwise.
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .envs(&spec.environment)
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("start {}: {e}", spec.binary.display()))
            })?;
        Ok(Self {
            name: spec.name,
            queue,
            shared,
            child: tokio::sync::Mutex::new(child),
            invocations: AtomicU64::new(0),
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Invokes the function with `event` and waits up to `timeout` for its answer.
    pub async fn invoke(&self, event: &Value, timeout: Duration) -> Result<Value, InvokeError> {
        if let Some(error) = self.init_error() {
            return Err(InvokeError::Init(error));
        }
        let number = self.invocations.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("local-{}-{number:08}", self.name);
        let now_ms = u64::try_from(shared::clock::now_epoch_ms()).unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request_id,
            event: serde_json::to_vec(event).unwrap_or_default(),
            deadline_ms: now_ms + timeout.as_millis() as u64,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| InvokeError::Exited("the emulator stopped".into()))?;

        let exited = async {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(error) = self.init_error() {
                    return InvokeError::Init(error);
                }
                match self.child.lock().await.try_wait() {
                    Ok(Some(status)) => return InvokeError::Exited(status.to_string()),
                    Ok(None) => {}
                    Err(error) => return InvokeError::Exited(error.to_string()),
                }
            }
        };
        tokio::select! {
            outcome = answer => match outcome {
                Ok(Outcome::Response(body)) if body.is_empty() => Ok(Value::Null),
                Ok(Outcome::Response(body)) => serde_json::from_slice(&body)
                    .map_err(|e| InvokeError::BadResponse(format!("{e}: {}", String::from_utf8_lossy(&body)))),
                Ok(Outcome::Error { error_type, message }) => Err(InvokeError::Function { error_type, message }),
                Err(_) => Err(InvokeError::Exited("the invocation was dropped".into())),
            },
            error = exited => Err(error),
            () = tokio::time::sleep(timeout) => Err(InvokeError::Timeout(timeout)),
        }
    }

    /// How long each finished invocation ran in the function, in the order they finished: from
    /// the event handed to it to its answer (or error), which is what Lambda bills as duration.
    pub fn run_times(&self) -> Vec<Duration> {
        self.shared
            .run_times
            .lock()
            .expect("run times lock")
            .clone()
    }

    /// The initialisation error the function reported, if it did.
    fn init_error(&self) -> Option<String> {
        self.shared
            .init_error
            .lock()
            .expect("init error lock")
            .clone()
    }

    /// The process id of the function's process, while it runs (for reading `/proc`).
    pub async fn pid(&self) -> Option<u32> {
        self.child.lock().await.id()
    }

    /// Stops the function's process.
    pub async fn stop(&self) {
        let mut child = self.child.lock().await;
        let _ = child.kill().await;
    }
}

impl Shared {
    /// Records how long invocation `id` ran, now that the function answered it.
    fn finished(&self, id: &str) {
        let started = self.started.lock().expect("started lock").remove(id);
        if let Some(started) = started {
            let ran = started.elapsed();
            self.run_times.lock().expect("run times lock").push(ran);
        }
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let pending = { shared.queued.lock().await.recv().await };
    let Some(pending) = pending else {
        return (StatusCode::GONE, "the emulator is stopping").into_response();
    };
    shared
        .in_flight
        .lock()
        .expect("in-flight lock")
        .insert(pending.request_id.clone(), pending.reply);
    shared
        .started
        .lock()
        .expect("started lock")
        .insert(pending.request_id.clone(), Instant::now());
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", pending.request_id.clone());
    set(
        "lambda-runtime-deadline-ms",
        pending.deadline_ms.to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        shared.function_arn.clone(),
    );
    set(
        "lambda-runtime-trace-id",
        format!("Root=1-00000000-{:024x};Sampled=0", pending.deadline_ms),
    );
    set("content-type", "application/json".to_owned());
    (StatusCode::OK, headers, pending.event).into_response()
}

async fn respond(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    shared.finished(&id);
    match shared.in_flight.lock().expect("in-flight lock").remove(&id) {
        Some(reply) => {
            let _ = reply.send(Outcome::Response(body));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn fail(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let error: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    shared.finished(&id);
    match shared.in_flight.lock().expect("in-flight lock").remove(&id) {
        Some(reply) => {
            let _ = reply.send(Outcome::Error {
                error_type: text("errorType"),
                message: text("errorMessage"),
            });
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let error: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let message = error
        .get("errorMessage")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    *shared.init_error.lock().expect("init error lock") = Some(message);
    StatusCode::ACCEPTED
}

/// An API Gateway HTTP API (payload 2.0) event for a request, as the webhook receives it.
pub fn http_api_event(
    method: &str,
    path: &str,
    raw_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Value {
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_lowercase(), Value::from(v.clone())))
        .collect();
    let query: serde_json::Map<String, Value> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), Value::from(percent_decode(v)))
        })
        .collect();
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "local", "domainName": "localhost", "domainPrefix": "local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "local"},
            "requestId": "local", "routeKey": format!("{method} {path}"), "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0
        },
        "isBase64Encoded": encoded,
    });
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !body.is_empty() {
        event["body"] = Value::from(body);
    }
    event
}

/// The id of the local stack's function URL, as Lambda would generate it.
pub const LOCAL_FUNCTION_URL_ID: &str = "localfunctionurl0000000000000000";

/// A Lambda function URL event for a request, as the webhook receives it behind the
/// `FunctionUrl` front door: payload 2.0 like [`http_api_event`], with the function URL's
/// sentinels (`routeKey` and `stage` `$default`, `accountId` `anonymous` under `AuthType` NONE),
/// its host, and the fields Lambda sends as `null`. A body that is not UTF-8 is base64-encoded,
/// and so is any body when `force_base64` is set.
pub fn function_url_event(
    method: &str,
    path: &str,
    raw_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    force_base64: bool,
) -> Value {
    let mut event = http_api_event(method, path, raw_query, headers, body);
    if force_base64 && !body.is_empty() {
        event["body"] = Value::from(base64::engine::general_purpose::STANDARD.encode(body));
        event["isBase64Encoded"] = Value::from(true);
    }
    let host = format!("{LOCAL_FUNCTION_URL_ID}.lambda-url.us-east-1.on.aws");
    event["routeKey"] = Value::from("$default");
    event["headers"]["host"] = Value::from(host.clone());
    event["headers"]["x-forwarded-proto"] = Value::from("https");
    event["pathParameters"] = Value::Null;
    event["stageVariables"] = Value::Null;
    let context = &mut event["requestContext"];
    context["accountId"] = Value::from("anonymous");
    context["apiId"] = Value::from(LOCAL_FUNCTION_URL_ID);
    context["authentication"] = Value::Null;
    context["domainName"] = Value::from(host);
    context["domainPrefix"] = Value::from(LOCAL_FUNCTION_URL_ID);
    context["routeKey"] = Value::from("$default");
    event
}

/// An HTTP answer read from an API Gateway (payload 2.0) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads the response a function gave API Gateway.
pub fn http_answer(response: &Value) -> HttpAnswer {
    let body = response
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let body = if response
        .get("isBase64Encoded")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    HttpAnswer {
        status: response
            .get("statusCode")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(502),
        headers: response
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        body,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory holding the workspace's built binaries: next to the running test or program.
pub fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test binaries live in `target/<profile>/deps`; the functions' binaries one level up.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_http_api_events_and_reads_answers() {
        let event = http_api_event(
            "GET",
            "/webhook",
            "hub.mode=subscribe&hub.challenge=a%20b",
            &[("X-Hub-Signature-256".into(), "sha256=00".into())],
            b"",
        );
        assert_eq!(event["queryStringParameters"]["hub.challenge"], "a b");
        assert_eq!(event["headers"]["x-hub-signature-256"], "sha256=00");
        assert!(event.get("body").is_none());
        let binary = http_api_event("POST", "/webhook", "", &[], &[0xff, 0x00]);
        assert_eq!(binary["isBase64Encoded"], true);
        assert_eq!(binary["body"], "/wA=");

        let answer = http_answer(
            &json!({"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "ok"}),
        );
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, b"ok".as_slice())
        );
        let url = function_url_event("POST", "/webhook", "", &[], b"hi", true);
        assert_eq!(
            (&url["body"], &url["isBase64Encoded"]),
            (&json!("aGk="), &json!(true))
        );
        assert_eq!(url["routeKey"], "$default");
        assert_eq!(url["requestContext"]["routeKey"], "$default");
        assert_eq!(url["requestContext"]["http"]["method"], "POST");
        assert!(
            url["headers"]["host"]
                .as_str()
                .unwrap()
                .ends_with(".lambda-url.us-east-1.on.aws")
        );
        assert_eq!(
            function_url_event("POST", "/webhook", "", &[], b"hi", false)["body"],
            "hi"
        );
        let encoded =
            http_answer(&json!({"statusCode": 401, "body": "aGk=", "isBase64Encoded": true}));
        assert_eq!(encoded.body, b"hi");
        assert_eq!(percent_decode("a%2Fb+c%zz%"), "a/b c%zz%");
    }
}
