//! The webhook and processor binaries as one pipeline for black-box tests: both run under the
//! local Lambda Runtime API, configured as `template.yaml` configures them, against the
//! template's resources in moto; Meta's Graph API and the LLM are recording stand-ins. A test
//! posts signed deliveries to the webhook, takes what it queued and hands it to the processor as
//! Lambda's event source would, then checks what the stand-ins received and the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::Message;
use serde_json::{Value, json};
use shared::log_event::LogEvent;
use shared::meta::signature::sign;
use testkit::http_recorder::{RecordedRequest, RecordingServer};

use crate::local::event_sources::sqs_event;
use crate::resources::{LOCAL_SECRET, Stack};
use crate::runtime::{LambdaFunction, http_answer, http_api_event};

/// How long an invocation may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The webhook and the processor over one stack, with their stand-ins.
pub struct Pipeline {
    /// The template's resources in moto.
    pub stack: Stack,
    /// SQS in moto.
    pub sqs: aws_sdk_sqs::Client,
    /// The webhook's binary.
    pub webhook: LambdaFunction,
    /// The processor's binary.
    pub processor: LambdaFunction,
    /// The processor's log file.
    pub processor_log: PathBuf,
    /// The LLM stand-in.
    pub llm: RecordingServer,
    /// The Graph API stand-in.
    pub meta: RecordingServer,
}

/// Where the functions reach AWS, and what the processor is given beyond the template.
#[derive(Debug, Default)]
pub struct Endpoints {
    /// Where the webhook reaches AWS: moto itself when `None` (a proxy enforcing SQS's rules,
    /// say).
    pub webhook_aws: Option<String>,
    /// Where the processor reaches AWS: moto itself when `None`.
    pub processor_aws: Option<String>,
    /// Variables set over the template's for the processor.
    pub processor_env: Vec<(&'static str, String)>,
}

impl Pipeline {
    /// A new stack named after `name`, its two functions started as `endpoints` says, with the
    /// LLM and the Graph API at these stand-ins.
    pub async fn start(
        name: &str,
        llm: RecordingServer,
        meta: RecordingServer,
        endpoints: Endpoints,
    ) -> Self {
        let aws = testkit::moto_config().await;
        let stack = Stack::create(
            aws.clone(),
            &testkit::unique_name(name),
            "oncall@example.com",
        )
        .await;
        let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        let webhook_aws = endpoints.webhook_aws.unwrap_or_else(|| moto.clone());
        let (webhook, _) =
            start_function(&stack, "webhook", "WebhookFunction", &webhook_aws, &[]).await;
        let mut env = vec![
            ("LLM_BASE_URL", format!("{}/v1", llm.url)),
            ("META_API_BASE_URL", meta.url.clone()),
        ];
        env.extend(endpoints.processor_env);
        let processor_aws = endpoints.processor_aws.unwrap_or(moto);
        let (processor, processor_log) = start_function(
            &stack,
            "processor",
            "ProcessorFunction",
            &processor_aws,
            &env,
        )
        .await;
        Self {
            sqs: aws_sdk_sqs::Client::new(&aws),
            stack,
            webhook,
            processor,
            processor_log,
            llm,
            meta,
        }
    }

    /// Posts `body`, signed with the local app secret, to the webhook; returns its status.
    pub async fn deliver(&self, body: &[u8]) -> u16 {
        deliver_to(&self.webhook, body).await
    }

    /// Takes every message off the inbound queue, as Lambda's event source would.
    pub async fn take_queued(&self) -> Vec<Message> {
        testkit::take_all(&self.sqs, &self.stack.resolver.refs["InboundQueue"]).await
    }

    /// Hands `messages` to the processor's binary as one SQS event; returns its answer.
    pub async fn process(&self, messages: &[Message]) -> Value {
        self.process_within(messages, TIMEOUT).await
    }

    /// Hands `messages` to the processor's binary as one SQS event with `deadline` to run (the
    /// invocation's deadline is that far off, as Lambda's is its timeout); returns its answer.
    pub async fn process_within(&self, messages: &[Message], deadline: Duration) -> Value {
        self.processor
            .invoke(
                &sqs_event(&self.stack.resolver.refs["InboundQueue"], messages),
                deadline,
            )
            .await
            .unwrap_or_else(|e| panic!("the processor answers before its deadline: {e}"))
    }

    /// The text messages the Graph API stand-in was asked to send, in order.
    pub fn replies(&self) -> Vec<Value> {
        self.meta
            .requests()
            .iter()
            .map(RecordedRequest::json)
            .filter(|body| body["type"] == "text")
            .collect()
    }

    /// The processor's log lines of `event`.
    pub fn logged(&self, event: LogEvent) -> Vec<Value> {
        log_lines(&self.processor_log)
            .into_iter()
            .filter(|line| line["fields"]["event"] == event.as_str())
            .collect()
    }

    /// The total of the processor's metric `name` over its Embedded Metric Format lines.
    pub fn metric(&self, name: &str) -> f64 {
        log_lines(&self.processor_log)
            .iter()
            .filter(|line| line.get("_aws").is_some())
            .filter_map(|line| line[name].as_f64())
            .sum()
    }

    /// Every item in the stack's table.
    pub async fn stored(&self) -> Vec<HashMap<String, AttributeValue>> {
        aws_sdk_dynamodb::Client::new(&self.stack.aws)
            .scan()
            .table_name(&self.stack.resolver.refs["Table"])
            .send()
            .await
            .expect("scan the table in moto")
            .items
            .unwrap_or_default()
    }

    /// The item whose key is `pk`, if there is one.
    pub async fn item(&self, pk: &str) -> Option<HashMap<String, AttributeValue>> {
        aws_sdk_dynamodb::Client::new(&self.stack.aws)
            .get_item()
            .table_name(&self.stack.resolver.refs["Table"])
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("read the table in moto")
            .item
    }
}

/// Starts `function`'s binary as the template configures `logical_id`, reaching AWS at
/// `aws_endpoint`, with `overrides`; returns it and its log file.
pub async fn start_function(
    stack: &Stack,
    function: &str,
    logical_id: &str,
    aws_endpoint: &str,
    overrides: &[(&str, String)],
) -> (LambdaFunction, PathBuf) {
    let log_file = std::env::temp_dir().join(format!(
        "{}-{function}.log",
        testkit::unique_name("pipeline")
    ));
    let started = stack
        .start_function(
            function,
            logical_id,
            aws_endpoint,
            overrides,
            log_file.clone(),
        )
        .await;
    (started, log_file)
}

/// Posts `body`, signed with the local app secret, to `webhook`; returns its status.
pub async fn deliver_to(webhook: &LambdaFunction, body: &[u8]) -> u16 {
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
    let answer = webhook
        .invoke(&event, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("the webhook answers: {e}"));
    http_answer(&answer).status
}

/// The JSON lines of a function's log file (its metrics lines included).
pub fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The ids a batch response reports as failed.
pub fn failed_ids(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .map(|failures| {
            failures
                .iter()
                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Now, in seconds since the epoch, as Meta writes timestamps.
pub fn now_seconds() -> String {
    (shared::clock::now_epoch_ms() / 1000).to_string()
}

/// A text message from `from` as Meta sends it, sent now.
pub fn text(from: &str, id: &str, body: &str) -> Value {
    text_sent_at(from, id, body, &now_seconds())
}

/// A text message from `from` sent at `timestamp` (seconds since the epoch, as Meta writes it).
pub fn text_sent_at(from: &str, id: &str, body: &str, timestamp: &str) -> Value {
    json!({"from": from, "id": id, "timestamp": timestamp, "type": "text", "text": {"body": body}})
}

/// A webhook delivery of `messages` with `contacts`, to the business number `phone_number_id`.
pub fn delivery_to(phone_number_id: &str, contacts: Value, messages: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages",
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "contacts": contacts, "messages": messages}}]}]}),
    )
    .expect("JSON")
}
