//! The users of the cost run: each writes its turns one after the other, waits for the reply to
//! each, and has Meta post the reply's `sent`, `delivered` and `read` statuses, as a WhatsApp
//! user's phone does. Every delivery goes through API Gateway to the webhook, signed as Meta
//! signs it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shared::meta::signature::sign;

use super::stand_ins::StandIns;
use super::{CostError, Workload};
use crate::resources::LOCAL_SECRET;
use crate::runtime::{LambdaFunction, http_answer, http_api_event};

/// The business number the users write to.
const PHONE_NUMBER_ID: &str = "106540352242922";
/// How long a user waits for a reply before the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one webhook invocation may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// The statuses Meta posts for every reply that reaches and is read by its user.
const STATUSES: [&str; 3] = ["sent", "delivered", "read"];

/// API Gateway in front of the webhook: invokes it with each delivery and counts the requests.
pub(super) struct ApiGateway<'a> {
    pub(super) webhook: &'a LambdaFunction,
    /// Requests made.
    pub(super) requests: AtomicU64,
    /// Their body bytes.
    pub(super) bytes: AtomicU64,
}

impl ApiGateway<'_> {
    /// Posts `body`, signed with the local app secret, to `/webhook`; fails unless the webhook
    /// answers 200.
    async fn deliver(&self, body: &Value) -> Result<(), CostError> {
        let body = body.to_string().into_bytes();
        let secret = LOCAL_SECRET[0].1.as_bytes();
        let headers = [
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-hub-signature-256".to_owned(), sign(&body, secret)),
        ];
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
        let event = http_api_event("POST", "/webhook", "", &headers, &body);
        let answer = self.webhook.invoke(&event, WEBHOOK_TIMEOUT).await?;
        match http_answer(&answer).status {
            200 => Ok(()),
            status => Err(CostError::Webhook(status)),
        }
    }
}

/// Runs every user's conversation at once; returns when each has its last reply read.
pub(super) async fn converse(
    workload: &Workload,
    gateway: &ApiGateway<'_>,
    stand_ins: &StandIns,
) -> Result<(), CostError> {
    let conversations = (0..workload.users).map(|user| async move {
        let number = format!("1555{:07}", user + 1);
        let mut replies = stand_ins.replies_to(&number);
        for turn in 0..workload.turns {
            let id = format!("wamid.COSTIN{user:05}T{turn:05}");
            let text = question_text(workload.question_chars, user, turn);
            gateway.deliver(&message(&number, &id, &text)).await?;
            let reply = tokio::time::timeout(REPLY_TIMEOUT, replies.recv())
                .await
                .ok()
                .flatten()
                .ok_or(CostError::NoReply { user, turn })?;
            for status in STATUSES {
                gateway
                    .deliver(&status_update(&number, &reply, status))
                    .await?;
            }
        }
        Ok::<(), CostError>(())
    });
    futures_util::future::try_join_all(conversations).await?;
    Ok(())
}

/// A user's question of about `chars` characters.
pub(super) fn question_text(chars: usize, user: u32, turn: u32) -> String {
    let opening = format!("User {user}, question {turn}: ");
    let filler = "could you explain how this works and what I should do about it today? ";
    opening
        .chars()
        .chain(filler.chars().cycle())
        .take(chars.max(opening.len()))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// A webhook body carrying one text message from `user`, as Meta posts it.
fn message(user: &str, id: &str, text: &str) -> Value {
    let now = shared::clock::now_epoch_seconds().to_string();
    envelope(json!({
        "contacts": [{"profile": {"name": "Cost user"}, "wa_id": user}],
        "messages": [{"from": user, "id": id, "timestamp": now, "type": "text",
            "text": {"body": text}}]
    }))
}

/// A webhook body carrying the status of message `id` sent to `user`, as Meta posts it.
fn status_update(user: &str, id: &str, status: &str) -> Value {
    let now = shared::clock::now_epoch_seconds().to_string();
    envelope(json!({
        "statuses": [{"id": id, "status": status, "timestamp": now, "recipient_id": user,
            "conversation": {"id": "COSTCONVERSATION", "origin": {"type": "service"}},
            "pricing": {"billable": false, "pricing_model": "PMP", "category": "service"}}]
    }))
}

/// Meta's envelope around a change's `value` fields.
fn envelope(fields: Value) -> Value {
    let mut value = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID}});
    if let (Some(value), Some(fields)) = (value.as_object_mut(), fields.as_object()) {
        value.extend(fields.clone());
    }
    json!({"object": "whatsapp_business_account",
        "entry": [{"id": "COST-WABA", "changes": [{"field": "messages", "value": value}]}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_have_the_length_asked_and_bodies_meta_s_shape() {
        let question = question_text(120, 7, 3);
        assert!(question.starts_with("User 7, question 3: "));
        assert!(question.len().abs_diff(120) <= 1, "{question}");
        let body = message("15550000001", "wamid.X", &question);
        let value = &body["entry"][0]["changes"][0]["value"];
        assert_eq!(value["metadata"]["phone_number_id"], PHONE_NUMBER_ID);
        assert_eq!(value["messages"][0]["text"]["body"], question.as_str());
        let status = status_update("15550000001", "wamid.OUT", "read");
        let value = &status["entry"][0]["changes"][0]["value"];
        assert_eq!(value["statuses"][0]["status"], "read");
        assert!(value.get("messages").is_none());
    }
}
