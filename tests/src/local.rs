//! The local stack: the functions' real binaries under the local Lambda runtime, against the
//! template's resources in moto, with this process playing API Gateway, the SQS event sources,
//! Meta's Graph API and (without an `LLM_API_KEY`) an offline stand-in for the LLM.
//!
//! One HTTP server carries it all:
//! - `GET|POST /webhook`: API Gateway in front of the webhook function;
//! - `POST /graph/{version}/{phone_number_id}/messages`: Meta's Graph API, as the processor uses it;
//! - `POST /llm/v1/chat/completions`: the offline LLM stand-in (OpenAI-compatible);
//! - `POST /api/send`, `GET /api/events`: what a WhatsApp user does and sees, for the simulator
//!   page and the terminal mode.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::meta::signature::sign;

use crate::resources::{LOCAL_SECRET, Stack};
use crate::runtime::{FunctionSpec, LambdaFunction, http_answer, http_api_event};

/// The business phone number the simulator's users write to.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// How long one function invocation may take locally.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Which LLM answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmMode {
    /// The offline stand-in: deterministic answers, no account needed.
    StandIn,
    /// A real provider, from `LLM_PROVIDER`, `LLM_MODEL`, `LLM_BASE_URL` and `LLM_API_KEY`.
    Real {
        /// `openai` or `gemini`.
        provider: String,
        /// The model, when set.
        model: Option<String>,
        /// The base URL, when set.
        base_url: Option<String>,
        /// The key.
        api_key: String,
    },
}

impl LlmMode {
    /// Real when `LLM_API_KEY` (or, for a keyless local server, `LLM_BASE_URL`) is set.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (var("LLM_API_KEY"), var("LLM_BASE_URL")) {
            (None, None) => Self::StandIn,
            (api_key, base_url) => Self::Real {
                provider: var("LLM_PROVIDER").unwrap_or_else(|| "openai".into()),
                model: var("LLM_MODEL"),
                base_url,
                api_key: api_key.unwrap_or_default(),
            },
        }
    }

    /// One line saying who answers.
    pub fn describe(&self) -> String {
        match self {
            Self::StandIn => {
                "the offline LLM stand-in answers (set LLM_API_KEY, or LLM_BASE_URL for a local \
                              OpenAI-compatible server, for a real model)"
                    .to_owned()
            }
            Self::Real {
                provider,
                model,
                base_url,
                ..
            } => format!(
                "a real LLM answers: {provider} {} {}",
                model.as_deref().unwrap_or("(default model)"),
                base_url.as_deref().unwrap_or("(default endpoint)")
            ),
        }
    }
}

/// Something a simulator user sees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Its position in the feed.
    pub seq: u64,
    /// `reply`, `typing`, `status`, `sent`, `mail` or `notice`.
    pub kind: String,
    /// The user concerned (phone number), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The details.
    pub data: Value,
}

struct Shared {
    webhook: LambdaFunction,
    events: Mutex<Vec<Event>>,
    seq: AtomicU64,
    client: reqwest::Client,
    base_url: String,
    last_delivery: Mutex<Option<Vec<u8>>>,
    llm: LlmMode,
}

impl Shared {
    fn push(&self, kind: &str, user: Option<String>, data: Value) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.events.lock().expect("events lock").push(Event {
            seq,
            kind: kind.to_owned(),
            user,
            data,
        });
    }

    /// Posts a Meta-shaped body to the webhook, signed as Meta signs it.
    async fn deliver(&self, body: Vec<u8>) -> u16 {
        let signature = sign(&body, LOCAL_SECRET[0].1.as_bytes());
        let event = http_api_event(
            "POST",
            "/webhook",
            "",
            &[
                ("content-type".into(), "application/json".into()),
                ("x-hub-signature-256".into(), signature),
            ],
            &body,
        );
        match self.webhook.invoke(&event, INVOKE_TIMEOUT).await {
            Ok(answer) => http_answer(&answer).status,
            Err(error) => {
                eprintln!("local-stack: the webhook failed: {error}");
                502
            }
        }
    }
}

/// A running local stack. Dropping it stops the functions (and the moto server it started).
pub struct LocalStack {
    /// The simulator's URL.
    pub url: String,
    shared: Arc<Shared>,
    _functions: Vec<Arc<LambdaFunction>>,
    _moto: Option<tokio::process::Child>,
}

/// How to start the local stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// An already running moto server to use; otherwise one is started.
    pub aws_endpoint: Option<String>,
    /// Where `moto_server` is, to start one.
    pub moto_server: PathBuf,
    /// The moto port to start it on.
    pub moto_port: u16,
    /// The simulator's port (0 for any).
    pub http_port: u16,
    /// Where the functions' binaries are.
    pub binaries: PathBuf,
    /// Where the functions' logs go.
    pub log_dir: PathBuf,
    /// The stack name (resource names derive from it).
    pub stack_name: String,
    /// Which LLM answers.
    pub llm: LlmMode,
}

impl LocalStack {
    /// Starts everything and returns once the simulator answers.
    pub async fn start(options: Options) -> Result<Self, String> {
        std::fs::create_dir_all(&options.log_dir)
            .map_err(|e| format!("create {}: {e}", options.log_dir.display()))?;
        let (endpoint, moto) = match &options.aws_endpoint {
            Some(endpoint) => (endpoint.clone(), None),
            None => {
                let child = start_moto(&options).await?;
                (
                    format!("http://127.0.0.1:{}", options.moto_port),
                    Some(child),
                )
            }
        };
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "local", "local", None, None, "local",
            ))
            .load()
            .await;
        let stack = Stack::create(aws.clone(), &options.stack_name, "oncall@example.com").await;
        let ses = aws_sdk_sesv2::Client::new(&aws);
        ses.create_email_identity()
            .email_identity("alerts@example.com")
            .send()
            .await
            .map_err(|e| format!("SES: {e}"))?;
        if let LlmMode::Real { api_key, .. } = &options.llm {
            let mut secret: Value = json!({});
            for (key, value) in LOCAL_SECRET {
                secret[key] = json!(value);
            }
            secret["LLM_API_KEY"] = json!(api_key);
            aws_sdk_secretsmanager::Client::new(&aws)
                .put_secret_value()
                .secret_id(&stack.resolver.refs["AppSecret"])
                .secret_string(secret.to_string())
                .send()
                .await
                .map_err(|e| format!("Secrets Manager: {e}"))?;
        }

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.http_port))
            .await
            .map_err(|e| format!("bind port {}: {e}", options.http_port))?;
        let base_url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );

        let aws_env = [
            ("AWS_ENDPOINT_URL", endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "local".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
        ];
        let mut processor_overrides = vec![("META_API_BASE_URL", format!("{base_url}/graph"))];
        match &options.llm {
            LlmMode::StandIn => {
                processor_overrides.push(("LLM_BASE_URL", format!("{base_url}/llm/v1")))
            }
            LlmMode::Real {
                provider,
                model,
                base_url: llm_base,
                ..
            } => {
                processor_overrides.push(("LLM_PROVIDER", provider.clone()));
                if let Some(model) = model {
                    processor_overrides.push(("LLM_MODEL", model.clone()));
                }
                if let Some(llm_base) = llm_base {
                    processor_overrides.push(("LLM_BASE_URL", llm_base.clone()));
                }
            }
        }
        let start_function = |name: &str, logical_id: &str, overrides: &[(&str, String)]| {
            let mut environment: BTreeMap<String, String> = stack.environment(logical_id);
            for (key, value) in aws_env.iter().chain(overrides.iter()) {
                environment.insert((*key).to_owned(), value.clone());
            }
            FunctionSpec {
                name: name.to_owned(),
                binary: options.binaries.join(name),
                environment,
                log_file: Some(options.log_dir.join(format!("{name}.log"))),
            }
        };
        let webhook = LambdaFunction::start(start_function("webhook", "WebhookFunction", &[]))
            .await
            .map_err(|e| e.to_string())?;
        let processor = Arc::new(
            LambdaFunction::start(start_function(
                "processor",
                "ProcessorFunction",
                &processor_overrides,
            ))
            .await
            .map_err(|e| e.to_string())?,
        );
        let alerter = Arc::new(
            LambdaFunction::start(start_function("alerter", "AlerterFunction", &[]))
                .await
                .map_err(|e| e.to_string())?,
        );

        let shared = Arc::new(Shared {
            webhook,
            events: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            client: reqwest::Client::new(),
            base_url: base_url.clone(),
            last_delivery: Mutex::new(None),
            llm: options.llm.clone(),
        });
        let app = axum::Router::new()
            .route("/", get(page))
            .route("/webhook", get(webhook_route).post(webhook_route))
            .route(
                "/graph/{version}/{phone_number_id}/messages",
                post(graph_messages),
            )
            .route("/llm/v1/chat/completions", post(llm_stand_in))
            .route("/api/send", post(api_send))
            .route("/api/resend", post(api_resend))
            .route("/api/events", get(api_events))
            .route("/api/info", get(api_info))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let sqs = aws_sdk_sqs::Client::new(&aws);
        let max_receive: u32 =
            stack.template.properties("InboundQueue")["RedrivePolicy"]["maxReceiveCount"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(5);
        tokio::spawn(poll(
            sqs.clone(),
            stack.resolver.refs["InboundQueue"].clone(),
            processor.clone(),
            shared.clone(),
        ));
        tokio::spawn(poll(
            sqs.clone(),
            stack.resolver.refs["InboundDeadLetterQueue"].clone(),
            alerter.clone(),
            shared.clone(),
        ));
        tokio::spawn(watch_mails(endpoint.clone(), shared.clone()));
        shared.push(
            "notice",
            None,
            json!({"text": format!("Local stack up: {}; dead letters after {max_receive} receives.", options.llm.describe())}),
        );
        Ok(Self {
            url: base_url,
            shared,
            _functions: vec![processor, alerter],
            _moto: moto,
        })
    }

    /// Sends `text` as `user` (named `name`) would from WhatsApp; returns the webhook's status.
    pub async fn send(&self, user: &str, name: &str, text: &str) -> u16 {
        send_as_user(&self.shared, user, name, text).await
    }

    /// Delivers the last webhook body again, as Meta does when it misses an answer.
    pub async fn resend(&self) -> Option<u16> {
        let body = self
            .shared
            .last_delivery
            .lock()
            .expect("delivery lock")
            .clone()?;
        Some(self.shared.deliver(body).await)
    }

    /// The events after `since`.
    pub fn events_since(&self, since: u64) -> Vec<Event> {
        self.shared
            .events
            .lock()
            .expect("events lock")
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }
}

async fn start_moto(options: &Options) -> Result<tokio::process::Child, String> {
    let child = tokio::process::Command::new(&options.moto_server)
        .args(["-H", "127.0.0.1", "-p", &options.moto_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "start {} (run `make local`, which installs moto): {e}",
                options.moto_server.display()
            )
        })?;
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{}/moto-api/", options.moto_port))
            .send()
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("moto did not start on port {}", options.moto_port))
}

/// Plays Lambda's SQS event source: batches of up to 10 into `function`, deleting the records
/// that did not fail; failed ones stay until their visibility timeout, and moto moves a record
/// to the dead-letter queue after the redrive policy's maximum receives.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    function: Arc<LambdaFunction>,
    shared: Arc<Shared>,
) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(error) => {
                eprintln!("local-stack: receiving from {queue_url} failed: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let arn = format!(
            "arn:aws:sqs:us-east-1:123456789012:{}",
            queue_url.rsplit('/').next().unwrap_or_default()
        );
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: HashMap<String, String> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
                    .unwrap_or_default();
                json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": attributes, "messageAttributes": {}, "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"})
            })
            .collect();
        let failed: Vec<String> = match function
            .invoke(&json!({"Records": records}), INVOKE_TIMEOUT)
            .await
        {
            Ok(answer) => answer["batchItemFailures"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|i| i["itemIdentifier"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Err(error) => {
                shared.push(
                    "notice",
                    None,
                    json!({"text": format!("{} failed: {error}", function.name())}),
                );
                messages
                    .iter()
                    .filter_map(|m| m.message_id.clone())
                    .collect()
            }
        };
        for message in &messages {
            if failed
                .iter()
                .any(|id| Some(id.as_str()) == message.message_id.as_deref())
            {
                continue;
            }
            if let Some(handle) = message.receipt_handle() {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await;
            }
        }
    }
}

/// Lists the alert mails the alerter sends through SES (read back from moto).
async fn watch_mails(endpoint: String, shared: Arc<Shared>) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(response) = shared
            .client
            .get(format!("{endpoint}/moto-api/data.json"))
            .send()
            .await
        else {
            continue;
        };
        let Ok(data) = response.json::<Value>().await else {
            continue;
        };
        let mails = data["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for mail in mails.iter().skip(seen) {
            let raw = mail["raw_data"].as_str().unwrap_or_default();
            let subject = raw
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .map(decode_subject)
                .unwrap_or_default();
            shared.push(
                "mail",
                None,
                json!({"subject": subject, "to": mail["destinations"]}),
            );
        }
        seen = mails.len();
    }
}

fn decode_subject(header: &str) -> String {
    let header = header.trim();
    match header
        .strip_prefix("=?UTF-8?B?")
        .and_then(|h| h.split("?=").next())
    {
        Some(encoded) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| header.to_owned())
        }
        None => header.to_owned(),
    }
}

async fn send_as_user(shared: &Shared, user: &str, name: &str, text: &str) -> u16 {
    let now = shared::clock::now_epoch_seconds();
    let id = format!("wamid.LOCAL{now}{:06}", shared.seq.load(Ordering::SeqCst));
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "LOCAL-WABA", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": name}, "wa_id": user}],
            "messages": [{"from": user, "id": id, "timestamp": now.to_string(), "type": "text", "text": {"body": text}}]}}]}]});
    // Meta escapes non-ASCII characters in the bodies it signs.
    let body = escape_non_ascii(&body.to_string()).into_bytes();
    *shared.last_delivery.lock().expect("delivery lock") = Some(body.clone());
    shared.push(
        "sent",
        Some(user.to_owned()),
        json!({"id": id, "text": text}),
    );
    shared.deliver(body).await
}

fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

async fn webhook_route(
    State(shared): State<Arc<Shared>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let event = http_api_event(
        method.as_str(),
        "/webhook",
        query.as_deref().unwrap_or_default(),
        &headers,
        &body,
    );
    match shared.webhook.invoke(&event, INVOKE_TIMEOUT).await {
        Ok(answer) => {
            let answer = http_answer(&answer);
            (
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
                answer.body,
            )
                .into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// Meta's Graph API as the processor uses it: read receipts with typing, and text messages. A
/// sent message gets its `sent`, `delivered` and `read` status webhooks, as Meta posts them.
async fn graph_messages(
    State(shared): State<Arc<Shared>>,
    UrlPath((_version, phone_number_id)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["status"] == "read" {
        shared.push("typing", None, json!({"message_id": request["message_id"]}));
        return axum::Json(json!({"success": true})).into_response();
    }
    let user = request["to"]
        .as_str()
        .or_else(|| request["recipient"].as_str())
        .unwrap_or_default()
        .to_owned();
    let id = format!("wamid.OUT{:08}", shared.seq.load(Ordering::SeqCst));
    shared.push(
        "reply",
        Some(user.clone()),
        json!({"id": id, "text": request["text"]["body"]}),
    );
    let shared_for_statuses = shared.clone();
    let (status_id, status_user) = (id.clone(), user.clone());
    tokio::spawn(async move {
        for status in ["sent", "delivered", "read"] {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = shared::clock::now_epoch_seconds();
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "LOCAL-WABA", "changes": [{"field": "messages",
                "value": {"messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
                    "statuses": [{"id": status_id, "status": status, "timestamp": now.to_string(), "recipient_id": status_user}]}}]}]});
            let code = shared_for_statuses
                .deliver(body.to_string().into_bytes())
                .await;
            shared_for_statuses.push(
                "status",
                Some(status_user.clone()),
                json!({"id": status_id, "status": status, "webhook": code}),
            );
        }
    });
    axum::Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": user, "wa_id": user}], "messages": [{"id": id}]}))
        .into_response()
}

/// The offline LLM stand-in: a deterministic answer that shows what the model was given, so
/// that memory and bursts can be seen without an account.
async fn llm_stand_in(body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let user_turns: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    let last = user_turns.last().copied().unwrap_or_default();
    let mut answer = format!("[offline stand-in] You said: \"{last}\".");
    if user_turns.len() > 1 {
        answer.push_str(&format!(
            " I remember {} earlier message(s); your first was: \"{}\".",
            user_turns.len() - 1,
            user_turns[0]
        ));
    }
    axum::Json(json!({"id": "local-stand-in", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0}}))
    .into_response()
}

#[derive(Deserialize)]
struct SendRequest {
    user: String,
    #[serde(default)]
    name: String,
    text: String,
}

async fn api_send(
    State(shared): State<Arc<Shared>>,
    axum::Json(request): axum::Json<SendRequest>,
) -> Response {
    let digits: String = request.user.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 || request.text.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": "a phone number of 6 or more digits and a text are needed"}),
            ),
        )
            .into_response();
    }
    let name = if request.name.trim().is_empty() {
        "Local user"
    } else {
        request.name.trim()
    };
    let status = send_as_user(&shared, &digits, name, &request.text).await;
    axum::Json(json!({"webhook_status": status})).into_response()
}

async fn api_resend(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.last_delivery.lock().expect("delivery lock").clone();
    match body {
        Some(body) => {
            axum::Json(json!({"webhook_status": shared.deliver(body).await})).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "nothing was delivered yet"})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn api_events(State(shared): State<Arc<Shared>>, Query(since): Query<Since>) -> Response {
    let events: Vec<Event> = shared
        .events
        .lock()
        .expect("events lock")
        .iter()
        .filter(|e| e.seq > since.since)
        .cloned()
        .collect();
    axum::Json(events).into_response()
}

async fn api_info(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(
        json!({"llm": shared.llm.describe(), "stand_in": shared.llm == LlmMode::StandIn,
        "webhook_url": format!("{}/webhook", shared.base_url)}),
    )
    .into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("simulator.html"))
}
