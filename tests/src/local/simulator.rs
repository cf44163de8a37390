//! The WhatsApp simulator: what its users do (write to one of the business numbers,
//! re-deliver) and see (replies, typing, statuses, the example's tool calls, alert mails,
//! notices), and the phone of the numbers' handoff agent ([`AGENT_NUMBER`]: what the bot sends
//! it, what it writes back), served as a page and a small JSON API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::inbound::MediaKind;
use shared::meta::signature::sign;

use super::media::{MediaStore, URL_LIFETIME, UploadError, kind_of, max_file_bytes};
use super::numbers::DEFAULT_DISPLAY_NUMBER;
use super::numbers::Number;
use super::shop::{Example, ShopCall};
use super::stand_ins::LlmMode;
use super::{AGENT_NUMBER, INVOKE_TIMEOUT, PHONE_NUMBER_ID};
use crate::resources::LOCAL_SECRET;
use crate::runtime::{LambdaFunction, http_answer, http_api_event};

/// A conversation: a business number (`phone_number_id`) and a user (phone number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Conversation {
    /// The business number.
    pub(super) number: String,
    /// The user.
    pub(super) user: String,
}

/// A message the simulator delivered to the webhook, as `GET /api/deliveries` lists it.
#[derive(Debug, Clone, serde::Serialize)]
struct Delivery {
    /// The message's id.
    id: String,
    /// Its sender (`from`).
    from: String,
    /// The business number it was sent to.
    phone_number_id: String,
    /// Its `type` (`text`, `image`…).
    r#type: String,
    /// The webhook's HTTP status.
    webhook_status: u16,
}

/// Something a simulator user sees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Its position in the feed.
    pub seq: u64,
    /// `reply`, `typing`, `status`, `sent`, `tool`, `mail` or `notice`.
    pub kind: String,
    /// The user concerned (phone number), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The business number concerned (its `phone_number_id`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// The details.
    pub data: Value,
}

/// The simulator's state, shared by every route, stand-in and event source.
pub(super) struct Simulator {
    /// The webhook function, which deliveries go to.
    pub(super) webhook: LambdaFunction,
    events: Mutex<Vec<Event>>,
    seq: AtomicU64,
    client: reqwest::Client,
    base_url: String,
    last_delivery: Mutex<Option<Vec<u8>>>,
    llm: LlmMode,
    example: Example,
    /// The conversations whose messages each function is handling, by the function's name.
    in_flight: Mutex<HashMap<String, Vec<Conversation>>>,
    /// The business numbers users can write to, the default first.
    numbers: Vec<Number>,
    /// The messages delivered to the webhook, in order.
    deliveries: Mutex<Vec<Delivery>>,
    /// The files users sent, served through the Graph API's media flow.
    pub(super) media: Arc<MediaStore>,
}

impl Simulator {
    /// The state of a simulator served at `base_url`, delivering to `webhook`, whose users
    /// write to `numbers`.
    pub(super) fn new(
        webhook: LambdaFunction,
        base_url: String,
        llm: LlmMode,
        example: Example,
        numbers: Vec<Number>,
    ) -> Self {
        let base_url_for_media = base_url.clone();
        Self {
            webhook,
            events: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            client: reqwest::Client::new(),
            base_url,
            last_delivery: Mutex::new(None),
            llm,
            example,
            in_flight: Mutex::new(HashMap::new()),
            media: Arc::new(MediaStore::new(base_url_for_media, URL_LIFETIME)),
            numbers,
            deliveries: Mutex::new(Vec::new()),
        }
    }

    /// The business numbers users can write to, the default first.
    pub(super) fn numbers(&self) -> &[Number] {
        &self.numbers
    }

    /// Adds an event concerning no business number to the feed.
    pub(super) fn push(&self, kind: &str, user: Option<String>, data: Value) {
        self.push_in(kind, None, user, data);
    }

    /// Adds an event to the feed, concerning business `number` and `user` when given.
    pub(super) fn push_in(
        &self,
        kind: &str,
        number: Option<String>,
        user: Option<String>,
        data: Value,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.events.lock().expect("events lock").push(Event {
            seq,
            kind: kind.to_owned(),
            user,
            number,
            data,
        });
    }

    /// Notes that `function` is handling messages of `conversations` (none once it is done).
    pub(super) fn set_in_flight(&self, function: &str, conversations: Vec<Conversation>) {
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        match conversations.is_empty() {
            true => in_flight.remove(function),
            false => in_flight.insert(function.to_owned(), conversations),
        };
    }

    /// The conversations whose messages `function` is handling.
    pub(super) fn in_flight(&self, function: &str) -> Vec<Conversation> {
        let in_flight = self.in_flight.lock().expect("in-flight lock");
        in_flight.get(function).cloned().unwrap_or_default()
    }

    /// Shows a call of the example's shop in `conversations`, those whose messages were being
    /// answered when it was made: `tool`, with its name, status and time, their users and
    /// (`conversations`) their numbers and users.
    pub(super) fn push_tool_call(&self, call: &ShopCall, conversations: Vec<Conversation>) {
        let (number, user) = match conversations.as_slice() {
            [one] => (Some(one.number.clone()), Some(one.user.clone())),
            _ => (None, None),
        };
        let users: Vec<&str> = conversations.iter().map(|c| c.user.as_str()).collect();
        let pairs: Vec<Value> = conversations
            .iter()
            .map(|c| json!({"number": c.number, "user": c.user}))
            .collect();
        self.push_in(
            "tool",
            number,
            user,
            json!({"text": call.summary(), "tool": call.tool, "status": call.status,
                "elapsed_ms": call.elapsed_ms, "time_ms": call.time_ms, "replayed": call.replayed,
                "users": users, "conversations": pairs}),
        );
    }

    /// The position of the last event in the feed.
    pub(super) fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// The events after `since`.
    pub(super) fn events_since(&self, since: u64) -> Vec<Event> {
        self.events
            .lock()
            .expect("events lock")
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }

    /// The last webhook body sent as a user, if any.
    pub(super) fn last_delivery(&self) -> Option<Vec<u8>> {
        self.last_delivery.lock().expect("delivery lock").clone()
    }

    /// Posts a Meta-shaped body to the webhook, signed as Meta signs it.
    pub(super) async fn deliver(&self, body: Vec<u8>) -> u16 {
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

    /// Sends `text` as `user` (named `name`) would from WhatsApp to business `number`; returns
    /// the webhook's status.
    pub(super) async fn send_as_user(
        &self,
        number: &str,
        user: &str,
        name: &str,
        text: &str,
    ) -> u16 {
        let message = json!({"type": "text", "text": {"body": text}});
        self.send_message(number, user, name, message, json!({"text": text}))
            .await
    }

    /// Sends a file as `user` would to business `number`: it is kept in the media store, and
    /// the webhook gets an `image`, `audio` (a voice note when `upload.voice`) or `document`
    /// message naming it. Returns the webhook's status, or why the file was not taken.
    pub(super) async fn send_file_as_user(
        &self,
        number: &str,
        user: &str,
        name: &str,
        upload: Upload,
    ) -> Result<u16, UploadError> {
        let kind = kind_of(&upload.mime_type);
        let size = upload.bytes.len();
        let stored = self.media.store(upload.bytes.clone(), &upload.mime_type)?;
        let mut details = json!({"id": stored.id, "mime_type": upload.mime_type,
            "sha256": stored.sha256_base64});
        match kind {
            MediaKind::Audio => details["voice"] = json!(upload.voice),
            MediaKind::Document => details["filename"] = json!(upload.filename),
            _ => {}
        }
        // Meta's audio messages carry no caption.
        let caption = upload.caption.as_deref().filter(|c| !c.trim().is_empty());
        if let Some(caption) = caption.filter(|_| kind != MediaKind::Audio) {
            details["caption"] = json!(caption);
        }
        let type_name = kind.as_str();
        let message = json!({"type": type_name, type_name: details});
        let shown = json!({"text": describe_upload(kind, &upload, size),
            "media": {"kind": type_name, "id": stored.id, "mime_type": upload.mime_type, "bytes": size}});
        Ok(self.send_message(number, user, name, message, shown).await)
    }

    /// Sends a shared location as `user` would to business `number`; returns the webhook's
    /// status.
    pub(super) async fn send_location_as_user(
        &self,
        number: &str,
        user: &str,
        name: &str,
        location: Location,
    ) -> u16 {
        let shown = format!(
            "📍 {} ({}, {})",
            location.name.as_deref().unwrap_or("a location"),
            location.latitude,
            location.longitude
        );
        let mut details = json!({"latitude": location.latitude, "longitude": location.longitude});
        if let Some(place) = location.name {
            details["name"] = json!(place);
        }
        let message = json!({"type": "location", "location": details});
        self.send_message(number, user, name, message, json!({"text": shown}))
            .await
    }

    /// Sends one message from `user` (named `name`) to business `number` in Meta's webhook
    /// shape: `message` holds its `type` and details; `shown` is what the feed shows of it.
    async fn send_message(
        &self,
        number: &str,
        user: &str,
        name: &str,
        message: Value,
        shown: Value,
    ) -> u16 {
        let now = shared::clock::now_epoch_seconds();
        let id = format!("wamid.LOCAL{now}{:06}", self.last_seq());
        let r#type = message["type"].as_str().unwrap_or_default().to_owned();
        let mut message = message;
        message["from"] = json!(user);
        message["id"] = json!(id);
        message["timestamp"] = json!(now.to_string());
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "LOCAL-WABA", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": self.display_number(number), "phone_number_id": number},
                "contacts": [{"profile": {"name": name}, "wa_id": user}],
                "messages": [message]}}]}]});
        // Meta escapes non-ASCII characters in the bodies it signs.
        let body = escape_non_ascii(&body.to_string()).into_bytes();
        *self.last_delivery.lock().expect("delivery lock") = Some(body.clone());
        let mut shown = shown;
        shown["id"] = json!(id);
        self.push_in(
            "sent",
            Some(number.to_owned()),
            Some(user.to_owned()),
            shown,
        );
        let webhook_status = self.deliver(body).await;
        self.deliveries
            .lock()
            .expect("deliveries lock")
            .push(Delivery {
                id,
                from: user.to_owned(),
                phone_number_id: number.to_owned(),
                r#type,
                webhook_status,
            });
        webhook_status
    }

    /// The display phone number of business `number` (the default's for one not seeded).
    fn display_number(&self, number: &str) -> &str {
        self.numbers
            .iter()
            .find(|n| n.id == number)
            .map_or(DEFAULT_DISPLAY_NUMBER, |n| n.display.as_str())
    }

    /// The business number `wanted` names (a `phone_number_id`; none for the default), if it is
    /// one of [`Self::numbers`].
    fn number(&self, wanted: Option<&str>) -> Option<&str> {
        let wanted = wanted.map(str::trim).filter(|w| !w.is_empty());
        let wanted = wanted.unwrap_or(PHONE_NUMBER_ID);
        self.numbers
            .iter()
            .find(|n| n.id == wanted)
            .map(|n| n.id.as_str())
    }
}

/// A file a user sends.
pub struct Upload {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its MIME type.
    pub mime_type: String,
    /// Its name (documents carry it).
    pub filename: String,
    /// The caption written under it (images and documents).
    pub caption: Option<String>,
    /// Whether audio is a voice note recorded in WhatsApp.
    pub voice: bool,
}

/// A location a user shares.
pub struct Location {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// The place's name, for a chosen place.
    pub name: Option<String>,
}

/// What the feed shows of a file sent: `📎 image photo.png (68 bytes) — caption`.
fn describe_upload(kind: MediaKind, upload: &Upload, size: usize) -> String {
    let what = match (kind, upload.voice) {
        (MediaKind::Audio, true) => "🎤 voice note".to_owned(),
        _ => format!("📎 {} {}", kind.as_str(), upload.filename),
    };
    match upload.caption.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(caption) if kind != MediaKind::Audio => format!("{what} ({size} bytes) — {caption}"),
        _ => format!("{what} ({size} bytes)"),
    }
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

/// The simulator's routes: the page (`/`) and what it calls (`/api/…`).
pub(super) fn routes() -> axum::Router<Arc<Simulator>> {
    axum::Router::new()
        .route("/", get(page))
        .route("/api/send", post(api_send))
        .route(
            "/api/media",
            post(api_media).layer(DefaultBodyLimit::max(body_limit())),
        )
        .route("/api/resend", post(api_resend))
        .route("/api/events", get(api_events))
        .route("/api/deliveries", get(api_deliveries))
        .route("/api/info", get(api_info))
}

/// Lists the alert mails the alerter sends through SES (read back from moto at `endpoint`).
pub(super) async fn watch_mails(endpoint: String, simulator: Arc<Simulator>) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(response) = simulator
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
            simulator.push(
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

/// A text sent from the page: by `user` (a simulated user, or the agent as
/// [`AGENT_NUMBER`]) to business `number` (the default when absent).
#[derive(Deserialize)]
struct SendRequest {
    user: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    number: Option<String>,
    text: String,
}

async fn api_send(
    State(simulator): State<Arc<Simulator>>,
    axum::Json(request): axum::Json<SendRequest>,
) -> Response {
    let digits: String = request.user.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 || request.text.trim().is_empty() {
        return bad_request("a phone number of 6 or more digits and a text are needed");
    }
    let Some(number) = simulator.number(request.number.as_deref()) else {
        return bad_request(UNKNOWN_NUMBER);
    };
    let name = user_name(&request.name);
    let status = simulator
        .send_as_user(number, &digits, name, &request.text)
        .await;
    axum::Json(json!({"webhook_status": status})).into_response()
}

/// Why a business number is refused.
const UNKNOWN_NUMBER: &str = "not one of the local stack's business numbers (GET /api/info)";

/// The most bytes `/api/media` reads: a file one byte over the cap still gets its plain refusal.
fn body_limit() -> usize {
    usize::try_from(max_file_bytes() + 1).unwrap_or(usize::MAX)
}

#[derive(Deserialize)]
struct MediaRequest {
    user: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    filename: String,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    voice: bool,
    #[serde(default)]
    number: Option<String>,
}

/// A file sent from the page: its bytes are the body, its type the `content-type`, the rest in
/// the query (`user`, `name`, `filename`, `caption`, `voice`, `number`).
async fn api_media(
    State(simulator): State<Arc<Simulator>>,
    Query(request): Query<MediaRequest>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let digits: String = request.user.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return bad_request("a phone number of 6 or more digits is needed");
    }
    let Some(number) = simulator.number(request.number.as_deref()) else {
        return bad_request(UNKNOWN_NUMBER);
    };
    let mime_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let upload = Upload {
        bytes: body,
        mime_type,
        filename: request.filename,
        caption: request.caption,
        voice: request.voice,
    };
    let name = user_name(&request.name);
    match simulator
        .send_file_as_user(number, &digits, name, upload)
        .await
    {
        Ok(status) => axum::Json(json!({"webhook_status": status})).into_response(),
        Err(error) => bad_request(&error.to_string()),
    }
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

/// The name a user goes by: the one given, else "Local user".
fn user_name(name: &str) -> &str {
    match name.trim() {
        "" => "Local user",
        name => name,
    }
}

async fn api_resend(State(simulator): State<Arc<Simulator>>) -> Response {
    match simulator.last_delivery() {
        Some(body) => {
            axum::Json(json!({"webhook_status": simulator.deliver(body).await})).into_response()
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

async fn api_events(
    State(simulator): State<Arc<Simulator>>,
    Query(since): Query<Since>,
) -> Response {
    axum::Json(simulator.events_since(since.since)).into_response()
}

/// The messages delivered to the webhook so far: id, sender, business number, type and the
/// webhook's status.
async fn api_deliveries(State(simulator): State<Arc<Simulator>>) -> Response {
    let deliveries = simulator
        .deliveries
        .lock()
        .expect("deliveries lock")
        .clone();
    axum::Json(deliveries).into_response()
}

async fn api_info(State(simulator): State<Arc<Simulator>>) -> Response {
    axum::Json(
        json!({"llm": simulator.llm.describe(), "stand_in": simulator.llm.is_stand_in(),
        "example": simulator.example == Example::Shop,
        "webhook_url": format!("{}/webhook", simulator.base_url),
        "numbers": simulator.numbers, "agent_number": AGENT_NUMBER}),
    )
    .into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../simulator.html"))
}
