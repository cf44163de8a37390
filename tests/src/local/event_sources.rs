//! Lambda's SQS event sources, played locally: a queue polled into a function in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{Value, json};

use super::INVOKE_TIMEOUT;
use super::simulator::{Conversation, Simulator};
use crate::runtime::LambdaFunction;

/// Plays Lambda's SQS event source: batches of up to 10 into `function`, deleting the records
/// that did not fail; failed ones stay until their visibility timeout, and moto moves a record
/// to the dead-letter queue after the redrive policy's maximum receives. A failed invocation is
/// shown in the simulator's feed; while one runs, the simulator knows whose messages it handles.
pub(super) async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    function: Arc<LambdaFunction>,
    simulator: Arc<Simulator>,
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
        simulator.set_in_flight(function.name(), senders(&messages));
        let invoked = function
            .invoke(&sqs_event(&queue_url, &messages), INVOKE_TIMEOUT)
            .await;
        simulator.set_in_flight(function.name(), Vec::new());
        let failed = match invoked {
            Ok(answer) => batch_item_failures(&answer),
            Err(error) => {
                let text = format!("{} failed: {error}", function.name());
                simulator.push("notice", None, json!({ "text": text }));
                messages
                    .iter()
                    .filter_map(|m| m.message_id.clone())
                    .collect()
            }
        };
        delete_all_but(&sqs, &queue_url, &messages, &failed).await;
    }
}

/// The conversations of `messages` (inbound messages' business number and `sender`), each
/// once.
fn senders(messages: &[Message]) -> Vec<Conversation> {
    let mut conversations: Vec<Conversation> = Vec::new();
    for message in messages {
        let body: Value =
            serde_json::from_str(message.body().unwrap_or_default()).unwrap_or_default();
        let sender = &body["sender"];
        let user = sender["wa_id"]
            .as_str()
            .or_else(|| sender["user_id"].as_str());
        let Some(user) = user else { continue };
        let conversation = Conversation {
            number: body["phone_number_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            user: user.to_owned(),
        };
        if !conversations.contains(&conversation) {
            conversations.push(conversation);
        }
    }
    conversations
}

/// The SQS event Lambda would give a function for `messages` from `queue_url`.
pub fn sqs_event(queue_url: &str, messages: &[Message]) -> Value {
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
    json!({ "Records": records })
}

/// The message ids a function's answer reports as failed.
fn batch_item_failures(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|i| i["itemIdentifier"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes every message of `messages` whose id is not in `failed`.
async fn delete_all_but(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[Message],
    failed: &[String],
) {
    for message in messages {
        if failed
            .iter()
            .any(|id| Some(id.as_str()) == message.message_id.as_deref())
        {
            continue;
        }
        if let Some(handle) = message.receipt_handle() {
            let _ = sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await;
        }
    }
}
