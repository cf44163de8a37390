//! The outside world of the cost run: Meta's Graph API, which tells each user's conversation
//! when its reply went out, and an LLM that answers at once with a fixed-length text (its real
//! wait is a stated input of the report, not slept).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The stand-ins' shared state.
pub(super) struct StandIns {
    /// The answer the LLM gives to every prompt.
    answer: String,
    /// Where each user's replies are announced (the reply's WhatsApp message id).
    replies: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    /// LLM calls answered.
    pub(super) llm_calls: AtomicU64,
    /// Text messages sent to users.
    pub(super) texts_sent: AtomicU64,
    /// Read receipts (with the typing indicator) received.
    pub(super) read_receipts: AtomicU64,
    /// The body bytes of every request to Meta and the LLM: what leaves AWS for the internet.
    pub(super) outbound_bytes: AtomicU64,
}

impl StandIns {
    /// Starts the stand-ins on a loopback port; returns them and their base URL, under which
    /// `/graph` is the Graph API and `/llm/v1` the LLM.
    pub(super) async fn start(answer_chars: usize) -> std::io::Result<(Arc<Self>, String)> {
        let state = Arc::new(Self {
            answer: answer_text(answer_chars),
            replies: Mutex::new(HashMap::new()),
            llm_calls: AtomicU64::new(0),
            texts_sent: AtomicU64::new(0),
            read_receipts: AtomicU64::new(0),
            outbound_bytes: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/graph/{version}/{phone_number_id}/messages", post(graph))
            .route("/llm/v1/chat/completions", post(llm))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((state, url))
    }

    /// The replies to `user`, as they go out.
    pub(super) fn replies_to(&self, user: &str) -> mpsc::UnboundedReceiver<String> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.replies
            .lock()
            .expect("replies lock")
            .insert(user.to_owned(), sender);
        receiver
    }
}

/// Meta's Graph API: a read receipt is acknowledged; a text message gets an id, which is
/// announced to its user's conversation.
async fn graph(
    State(state): State<Arc<StandIns>>,
    UrlPath((_version, _phone_number_id)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    state
        .outbound_bytes
        .fetch_add(body.len() as u64, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["status"] == "read" {
        state.read_receipts.fetch_add(1, Ordering::SeqCst);
        return axum::Json(json!({"success": true})).into_response();
    }
    let number = state.texts_sent.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("wamid.COSTOUT{number:08}");
    let user = request["to"]
        .as_str()
        .or_else(|| request["recipient"].as_str())
        .unwrap_or_default();
    if let Some(replies) = state.replies.lock().expect("replies lock").get(user) {
        let _ = replies.send(id.clone());
    }
    axum::Json(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": user, "wa_id": user}], "messages": [{"id": id}]}))
    .into_response()
}

/// An OpenAI-compatible LLM that answers every prompt with the same text, at once.
async fn llm(State(state): State<Arc<StandIns>>, body: Bytes) -> Response {
    state.llm_calls.fetch_add(1, Ordering::SeqCst);
    state
        .outbound_bytes
        .fetch_add(body.len() as u64, Ordering::SeqCst);
    axum::Json(
        json!({"id": "cost-stand-in", "object": "chat.completion", "model": "stand-in",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": state.answer},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0}}),
    )
    .into_response()
}

/// A plain answer of `chars` characters, in sentences, as a model writes.
pub(super) fn answer_text(chars: usize) -> String {
    const SENTENCE: &str = "Here is a considered answer that covers what you asked, with the detail \
        that matters and a suggestion for what to do next. ";
    SENTENCE
        .chars()
        .cycle()
        .take(chars)
        .collect::<String>()
        .trim_end()
        .to_owned()
        + "."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_the_length_asked() {
        for chars in [10, 600, 1000] {
            let answer = answer_text(chars);
            assert!(
                answer.chars().count().abs_diff(chars) <= 1,
                "{chars}: {answer}"
            );
        }
    }
}
