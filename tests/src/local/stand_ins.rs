//! What stands in for the cloud around the functions: API Gateway in front of the webhook,
//! Meta's Graph API as the processor sends through it. Which LLM answers is [`LlmMode`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::INVOKE_TIMEOUT;
use super::bedrock::BedrockMode;
use super::simulator::Simulator;
use crate::runtime::{http_answer, http_api_event};

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
    /// Amazon Bedrock (`LLM_PROVIDER=bedrock`): the real one with AWS credentials, the offline
    /// Converse stand-in without.
    Bedrock(BedrockMode),
}

impl LlmMode {
    /// Bedrock when `LLM_PROVIDER` is `bedrock`; otherwise real when `LLM_API_KEY` (or, for a
    /// keyless local server, `LLM_BASE_URL`) is set.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("LLM_PROVIDER").is_some_and(|p| p.trim().eq_ignore_ascii_case("bedrock")) {
            return Self::Bedrock(BedrockMode::from_env());
        }
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
            Self::Bedrock(bedrock) => bedrock.describe(),
        }
    }

    /// Whether an offline stand-in answers.
    pub fn is_stand_in(&self) -> bool {
        match self {
            Self::StandIn => true,
            Self::Real { .. } => false,
            Self::Bedrock(bedrock) => bedrock.credentials.is_none(),
        }
    }

    /// The region the local stack runs in: Bedrock's, so that the processor signs for it;
    /// otherwise us-east-1.
    pub fn region(&self) -> &str {
        match self {
            Self::Bedrock(bedrock) => &bedrock.region,
            _ => super::bedrock::DEFAULT_REGION,
        }
    }
}

/// The stand-ins' routes: `/webhook` (API Gateway) and `/graph/…/messages` (the Graph API's
/// messages; its media are in [`super::media`], the offline models in [`super::offline`]).
pub(super) fn routes() -> axum::Router<Arc<Simulator>> {
    axum::Router::new()
        .route("/webhook", get(webhook_route).post(webhook_route))
        .route("/graph/{version}/{node_id}/messages", post(graph_messages))
}

/// API Gateway's HTTP API in front of the webhook function.
async fn webhook_route(
    State(simulator): State<Arc<Simulator>>,
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
    match simulator.webhook.invoke(&event, INVOKE_TIMEOUT).await {
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
/// sent message is shown in the conversation of the business number it was sent from and its
/// recipient (a user, or the handoff agent), and gets its `sent`, `delivered` and `read` status
/// webhooks, as Meta posts them.
async fn graph_messages(
    State(simulator): State<Arc<Simulator>>,
    UrlPath((_version, phone_number_id)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["status"] == "read" {
        simulator.push_in(
            "typing",
            Some(phone_number_id),
            None,
            json!({"message_id": request["message_id"]}),
        );
        return axum::Json(json!({"success": true})).into_response();
    }
    let user = request["to"]
        .as_str()
        .or_else(|| request["recipient"].as_str())
        .unwrap_or_default()
        .to_owned();
    let id = format!("wamid.OUT{:08}", simulator.last_seq());
    simulator.push_in(
        "reply",
        Some(phone_number_id.clone()),
        Some(user.clone()),
        json!({"id": id, "text": request["text"]["body"]}),
    );
    tokio::spawn(post_statuses(
        simulator,
        phone_number_id,
        id.clone(),
        user.clone(),
    ));
    axum::Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": user, "wa_id": user}], "messages": [{"id": id}]}))
        .into_response()
}

/// Posts the `sent`, `delivered` and `read` status webhooks of message `id` to `user`.
async fn post_statuses(
    simulator: Arc<Simulator>,
    phone_number_id: String,
    id: String,
    user: String,
) {
    for status in ["sent", "delivered", "read"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = shared::clock::now_epoch_seconds();
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "LOCAL-WABA", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
                "statuses": [{"id": id, "status": status, "timestamp": now.to_string(), "recipient_id": user}]}}]}]});
        let code = simulator.deliver(body.to_string().into_bytes()).await;
        simulator.push_in(
            "status",
            Some(phone_number_id.clone()),
            Some(user.clone()),
            json!({"id": id, "status": status, "webhook": code}),
        );
    }
}
