//! Fault injection through the real binaries: the webhook and the processor run under the local
//! Lambda Runtime API, configured as `template.yaml` configures them, against the template's
//! resources in moto. SQS is reached through a proxy that enforces SQS's character rule (moto
//! does not) and can fail sends on purpose; Meta's Graph API and the LLM are stand-ins that
//! record what they receive and can answer with any status, header or delay. Each test is one
//! class of hostile input or fault from a real deployment, and checks that nothing is lost and
//! no user gets a broken answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use local_stack::local::event_sources::sqs_event;
use local_stack::resources::{LOCAL_SECRET, Stack};
use local_stack::runtime::{LambdaFunction, http_answer, http_api_event};
use serde_json::{Value, json};
use shared::inbound::{InboundMessage, MessageContent};
use shared::meta::signature::sign;
use shared::whatsapp::split::{MAX_TEXT_UTF16, utf16_len};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};
use testkit::sqs_rules::SqsRules;

const TIMEOUT: Duration = Duration::from_secs(60);
const PHONE_NUMBER_ID: &str = "106540352242922";

/// The template's resources, the two functions' binaries and their stand-ins.
struct Rig {
    stack: Stack,
    rules: SqsRules,
    sqs: aws_sdk_sqs::Client,
    webhook: LambdaFunction,
    processor: LambdaFunction,
    llm: RecordingServer,
    meta: RecordingServer,
}

impl Rig {
    /// A rig whose LLM answers every prompt with `answer`.
    async fn answering(answer: &str) -> Self {
        let llm = llm_answering(answer).await;
        Self::with(llm, testkit::http_recorder::graph_api("wamid.reply").await).await
    }

    /// A rig over these stand-ins for the LLM and the Graph API.
    async fn with(llm: RecordingServer, meta: RecordingServer) -> Self {
        let aws = testkit::moto_config().await;
        let stack = Stack::create(
            aws.clone(),
            &testkit::unique_name("wa-faults"),
            "oncall@example.com",
        )
        .await;
        let rules = testkit::sqs_rules::enforce_sqs_rules().await;
        // The webhook reaches SQS (and Secrets Manager) through the rules proxy.
        let webhook = start(&stack, "webhook", "WebhookFunction", &rules.url, &[]).await;
        let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        let processor = start(
            &stack,
            "processor",
            "ProcessorFunction",
            &moto,
            &[
                ("LLM_BASE_URL", format!("{}/v1", llm.url)),
                ("META_API_BASE_URL", meta.url.clone()),
            ],
        )
        .await;
        Self {
            sqs: aws_sdk_sqs::Client::new(&aws),
            stack,
            rules,
            webhook,
            processor,
            llm,
            meta,
        }
    }

    /// Posts `body`, signed with the local app secret, to the webhook; returns its status.
    async fn deliver(&self, body: &[u8]) -> u16 {
        let app_secret = LOCAL_SECRET
            .iter()
            .find(|(key, _)| *key == "META_APP_SECRET")
            .map(|(_, value)| value.as_bytes())
            .unwrap_or_default();
        let headers = [
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Hub-Signature-256".to_owned(), sign(body, app_secret)),
        ];
        let event = http_api_event("POST", "/webhook", "", &headers, body);
        let answer = self
            .webhook
            .invoke(&event, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("the webhook answers: {e}"));
        http_answer(&answer).status
    }

    /// Takes every message off the inbound queue, as Lambda's event source would.
    async fn take_queued(&self) -> Vec<Message> {
        let queue_url = &self.stack.resolver.refs["InboundQueue"];
        let mut taken = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive from moto");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return taken;
            }
            for message in &messages {
                self.sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete from moto");
            }
            taken.extend(messages);
        }
    }

    /// The ids of the queued messages, left on the queue.
    async fn peek_ids(&self) -> Vec<String> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.stack.resolver.refs["InboundQueue"])
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive from moto");
        let mut ids: Vec<String> = output.messages().iter().map(|m| inbound(m).id).collect();
        ids.sort();
        ids
    }

    /// Hands `messages` to the processor's binary as one SQS event; returns its answer.
    async fn process(&self, messages: &[Message]) -> Value {
        self.processor
            .invoke(
                &sqs_event(&self.stack.resolver.refs["InboundQueue"], messages),
                TIMEOUT,
            )
            .await
            .unwrap_or_else(|e| panic!("the processor answers: {e}"))
    }

    /// The text messages the Graph API stand-in was asked to send, in order.
    fn replies(&self) -> Vec<Value> {
        self.meta
            .requests()
            .iter()
            .map(RecordedRequest::json)
            .filter(|body| body["type"] == "text")
            .collect()
    }
}

/// An OpenAI-compatible stand-in that answers every prompt with `answer`.
async fn llm_answering(answer: &str) -> RecordingServer {
    let answer = answer.to_owned();
    RecordingServer::start(move |_: &RecordedRequest| completion(&answer)).await
}

fn completion(answer: &str) -> Canned {
    Canned::json(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": answer}}]}),
    )
}

async fn start(
    stack: &Stack,
    function: &str,
    logical_id: &str,
    aws_endpoint: &str,
    overrides: &[(&str, String)],
) -> LambdaFunction {
    let log_file =
        std::env::temp_dir().join(format!("{}-{function}.log", testkit::unique_name("faults")));
    stack
        .start_function(function, logical_id, aws_endpoint, overrides, log_file)
        .await
}

fn now_seconds() -> String {
    (shared::clock::now_epoch_ms() / 1000).to_string()
}

/// A text message from `from` as Meta sends it.
fn text(from: &str, id: &str, body: &str) -> Value {
    json!({"from": from, "id": id, "timestamp": now_seconds(), "type": "text", "text": {"body": body}})
}

/// A webhook delivery of `messages` with `contacts`, to the business number.
fn delivery(contacts: Value, messages: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages",
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": contacts, "messages": messages}}]}]}),
    )
    .expect("JSON")
}

fn inbound(message: &Message) -> InboundMessage {
    serde_json::from_str(message.body().unwrap_or_default()).expect("an inbound message body")
}

fn assert_no_batch_failures(answer: &Value) {
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
}

#[tokio::test]
async fn noncharacters_in_a_text_and_a_profile_name_are_queued_and_answered() {
    let rig = Rig::answering("Noted.").await;
    let said = "odd \u{FFFE} text \u{FFFF} 😀";
    let body = delivery(
        json!([{"profile": {"name": "Ana \u{FFFF}"}, "wa_id": "15551230001"}]),
        json!([text("15551230001", "wamid.nonchar", said)]),
    );
    assert_eq!(rig.deliver(&body).await, 200);
    assert_eq!(rig.rules.refused(), 0, "no body broke SQS's character rule");

    let queued = rig.take_queued().await;
    assert_eq!(queued.len(), 1);
    let message = inbound(&queued[0]);
    assert_eq!(message.content, MessageContent::Text { body: said.into() });
    assert_eq!(message.name.as_deref(), Some("Ana \u{FFFF}"));
    assert_no_batch_failures(&rig.process(&queued).await);
    let prompt = rig.llm.requests()[0].json();
    let last = prompt["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned();
    assert_eq!(last.unwrap_or_default()["content"], said);
    assert_eq!(rig.replies().len(), 1);
}

#[tokio::test]
async fn a_lone_surrogate_escape_is_read_leniently_and_answered() {
    let rig = Rig::answering("Hi.").await;
    let body = delivery(
        json!([{"profile": {"name": "Bo"}, "wa_id": "15551230002"}]),
        json!([text("15551230002", "wamid.surrogate", "SURROGATE")]),
    );
    // serde_json writes no lone surrogate; Meta's payloads can hold one.
    let body = String::from_utf8(body)
        .expect("UTF-8")
        .replace("SURROGATE", "half \\ud83d here");
    assert_eq!(rig.deliver(body.as_bytes()).await, 200);

    let queued = rig.take_queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        inbound(&queued[0]).content,
        MessageContent::Text {
            body: "half \u{FFFD} here".into()
        }
    );
    assert_no_batch_failures(&rig.process(&queued).await);
    assert_eq!(rig.replies().len(), 1);
}

#[tokio::test]
async fn a_three_megabyte_delivery_is_accepted() {
    let rig = Rig::answering("Hi.").await;
    let mut body: Value = serde_json::from_slice(&delivery(
        json!([{"profile": {"name": "Cy"}, "wa_id": "15551230003"}]),
        json!([text("15551230003", "wamid.big", "after a big payload")]),
    ))
    .expect("JSON");
    // Meta documents payloads up to 3 MB; the padding is a field the webhook does not read.
    let three_mb = 3 * 1024 * 1024;
    body["entry"][0]["changes"][0]["value"]["padding"] = json!("");
    let rest = serde_json::to_vec(&body).expect("JSON").len();
    body["entry"][0]["changes"][0]["value"]["padding"] = json!("x".repeat(three_mb - rest));
    let body = serde_json::to_vec(&body).expect("JSON");
    assert_eq!(body.len(), three_mb);
    assert_eq!(rig.deliver(&body).await, 200);
    let queued = rig.take_queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(inbound(&queued[0]).id, "wamid.big");
}

#[tokio::test]
async fn a_message_without_from_is_attributed_to_the_changes_only_contact() {
    let rig = Rig::answering("Welcome.").await;
    let body = delivery(
        json!([{"profile": {"name": "Dee"}, "user_id": "US.4242"}]),
        json!([{"id": "wamid.nofrom", "timestamp": now_seconds(), "type": "text",
            "text": {"body": "who am I?"}}]),
    );
    assert_eq!(rig.deliver(&body).await, 200);

    let queued = rig.take_queued().await;
    assert_eq!(queued.len(), 1, "queued, not dropped as malformed");
    assert_eq!(inbound(&queued[0]).sender.id(), "US.4242");
    assert_no_batch_failures(&rig.process(&queued).await);
    let replies = rig.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["recipient"], "US.4242");
    assert_eq!(replies[0]["text"]["body"], "Welcome.");
}

#[tokio::test]
async fn a_long_answer_is_split_in_utf16_units_and_never_inside_a_cluster() {
    // 3000 emoji of 4 UTF-16 units each (2 code points each): 12 000 units, 3 messages at least.
    let clusters = ["🇫🇷", "👍🏽", "🇯🇵", "👋🏿"];
    let answer: String = (0..3000).map(|i| clusters[i % clusters.len()]).collect();
    let rig = Rig::answering(&answer).await;
    let body = delivery(
        json!([{"profile": {"name": "Eve"}, "wa_id": "15551230005"}]),
        json!([text("15551230005", "wamid.long", "send me emoji")]),
    );
    assert_eq!(rig.deliver(&body).await, 200);
    assert_no_batch_failures(&rig.process(&rig.take_queued().await).await);

    let parts: Vec<String> = rig
        .replies()
        .iter()
        .map(|r| r["text"]["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for part in &parts {
        assert!(
            utf16_len(part) <= MAX_TEXT_UTF16,
            "{} units",
            utf16_len(part)
        );
        // Whole clusters only: read two code points at a time, each pair is one of the emoji.
        let chars: Vec<char> = part.chars().collect();
        assert_eq!(chars.len() % 2, 0, "a part ends inside a cluster");
        for pair in chars.chunks(2) {
            let cluster: String = pair.iter().collect();
            assert!(
                clusters.contains(&cluster.as_str()),
                "cut inside a cluster: {cluster:?}"
            );
        }
    }
    assert_eq!(parts.concat(), answer, "nothing lost or reordered");
}

#[tokio::test]
async fn a_failed_send_batch_chunk_does_not_stop_the_others_and_meta_retries() {
    let rig = Rig::answering("Hi.").await;
    // Twelve users: two SendMessageBatch calls (10 + 2). The first call fails every attempt.
    let messages: Vec<Value> = (0..12)
        .map(|i| {
            let said = if i == 0 { "FAIL-THIS-CHUNK" } else { "hello" };
            text(&format!("1555123{i:04}"), &format!("wamid.chunk{i}"), said)
        })
        .collect();
    let body = delivery(json!([]), Value::Array(messages));
    rig.rules.fail_sends_holding(Some("FAIL-THIS-CHUNK"));
    assert_eq!(rig.deliver(&body).await, 500, "Meta must deliver again");
    assert!(rig.rules.failed() >= 1);
    // Looked at without taking them: moto forgets a deleted message's deduplication id.
    assert_eq!(
        rig.peek_ids().await,
        ["wamid.chunk10", "wamid.chunk11"],
        "the second chunk went"
    );

    // Meta's retry, once SQS is well: everything queued, the second chunk not twice.
    rig.rules.fail_sends_holding(None);
    assert_eq!(rig.deliver(&body).await, 200);
    let mut ids: Vec<String> = rig
        .take_queued()
        .await
        .iter()
        .map(|m| inbound(m).id)
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..12).map(|i| format!("wamid.chunk{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

// Classes other changes are fixing; each test states ISSUE10's expected behaviour and fails on
// the code before the fix. Un-ignore with the fix.

#[tokio::test]
async fn a_huge_retry_after_fails_no_other_conversation() {
    let llm = llm_answering("Fine.").await;
    llm.script([Canned::json(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
    )
    .with_header("retry-after", "18446744073709551615")]);
    let rig = Rig::with(llm, testkit::http_recorder::graph_api("wamid.reply").await).await;
    let body = delivery(
        json!([]),
        json!([
            text("15551230010", "wamid.ra1", "one"),
            text("15551230011", "wamid.ra2", "two")
        ]),
    );
    assert_eq!(rig.deliver(&body).await, 200);
    let queued = rig.take_queued().await;
    assert_eq!(queued.len(), 2);
    let answer = rig
        .processor
        .invoke(
            &sqs_event(&rig.stack.resolver.refs["InboundQueue"], &queued),
            TIMEOUT,
        )
        .await
        .expect("an answer for the batch, not a panic");
    let failures = answer["batchItemFailures"].as_array().map_or(0, Vec::len);
    assert!(
        failures <= 1,
        "only the throttled conversation waits: {answer}"
    );
    assert_eq!(
        rig.replies().len() + failures,
        2,
        "each conversation answered or retried"
    );
}

#[tokio::test]
async fn an_unknown_model_gets_the_fallback_text_at_once() {
    let llm = RecordingServer::start(|_: &RecordedRequest| {
        Canned::json(
            404,
            json!({"error": {"message": "The model `gpt-nope` does not exist", "type": "invalid_request_error", "code": "model_not_found"}}),
        )
    })
    .await;
    let rig = Rig::with(llm, testkit::http_recorder::graph_api("wamid.reply").await).await;
    let body = delivery(
        json!([]),
        json!([text("15551230020", "wamid.404", "hello?")]),
    );
    assert_eq!(rig.deliver(&body).await, 200);
    assert_no_batch_failures(&rig.process(&rig.take_queued().await).await);
    assert_eq!(rig.llm.requests().len(), 1, "not retried");
    assert_eq!(rig.replies().len(), 1, "the fallback text went out");
}

#[tokio::test]
async fn a_send_retried_through_sqs_sends_the_same_answer() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let llm = RecordingServer::start(move |_: &RecordedRequest| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        completion(&format!("answer number {n}"))
    })
    .await;
    let graph_down = Arc::new(AtomicBool::new(true));
    let down = Arc::clone(&graph_down);
    let meta = RecordingServer::start(move |request: &RecordedRequest| {
        if request.json()["status"] == "read" {
            Canned::json(200, json!({"success": true}))
        } else if down.load(Ordering::SeqCst) {
            Canned::json(
                500,
                json!({"error": {"message": "Service temporarily unavailable", "type": "OAuthException", "code": 2}}),
            )
        } else {
            Canned::json(200, json!({"messages": [{"id": "wamid.reply"}]}))
        }
    })
    .await;
    let rig = Rig::with(llm, meta).await;
    let body = delivery(json!([]), json!([text("15551230030", "wamid.once", "hi")]));
    assert_eq!(rig.deliver(&body).await, 200);
    let queued = rig.take_queued().await;
    let first = rig.process(&queued).await;
    assert_eq!(
        first["batchItemFailures"].as_array().map_or(0, Vec::len),
        1,
        "the record is retried: {first}"
    );
    graph_down.store(false, Ordering::SeqCst);
    assert_no_batch_failures(&rig.process(&queued).await);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the answer was bought once"
    );
    let replies = rig.replies();
    assert!(!replies.is_empty());
    for reply in replies {
        assert_eq!(reply["text"]["body"], "answer number 1");
    }
}

/// `message` with its body or FIFO group replaced.
fn altered(message: &Message, id: &str, body: Option<&str>, group: Option<&str>) -> Message {
    let mut attributes = message.attributes().cloned().unwrap_or_default();
    if let Some(group) = group {
        attributes.insert(MessageSystemAttributeName::MessageGroupId, group.to_owned());
    }
    Message::builder()
        .message_id(id)
        .receipt_handle(format!("handle-{id}"))
        .body(body.unwrap_or(message.body().unwrap_or_default()))
        .set_attributes(Some(attributes))
        .build()
}

#[tokio::test]
async fn an_unreadable_record_does_not_take_its_conversation_down() {
    let rig = Rig::answering("Still here.").await;
    let body = delivery(
        json!([]),
        json!([text("15551230040", "wamid.good", "hello")]),
    );
    assert_eq!(rig.deliver(&body).await, 200);
    let queued = rig.take_queued().await;
    assert_eq!(queued.len(), 1);
    let bad = altered(&queued[0], "sqs-bad", Some("{\"v\": 1, \"half"), None);
    let good = altered(&queued[0], "sqs-good", None, None);
    let answer = rig.process(&[bad, good]).await;
    let failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|i| i["itemIdentifier"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(!failed.contains(&"sqs-good"), "{answer}");
    assert_eq!(rig.replies().len(), 1, "the readable message was answered");
}

#[tokio::test]
async fn a_record_of_another_conversation_than_its_group_is_never_answered() {
    let rig = Rig::answering("For whom?").await;
    let body = delivery(
        json!([]),
        json!([text("15551230050", "wamid.mixed", "hello")]),
    );
    assert_eq!(rig.deliver(&body).await, 200);
    let queued = rig.take_queued().await;
    let group = format!("{PHONE_NUMBER_ID}:15559999999");
    let mixed = altered(&queued[0], "sqs-mixed", None, Some(&group));
    let _ = rig.process(&[mixed]).await;
    assert!(rig.llm.requests().is_empty(), "no answer was bought");
    assert!(rig.replies().is_empty(), "nothing was sent to either chat");
}
