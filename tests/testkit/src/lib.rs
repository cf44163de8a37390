//! Helpers for the workspace's tests: set-up against moto's server (started by the project's
//! test script, which exports `AWS_ENDPOINT_URL`), local HTTP servers that stand in for Meta and
//! the LLMs, log capture, and mail read-back. A dev-dependency only: it depends on `shared`, so
//! `shared`'s own tests that use it are integration tests (`shared/tests/`), which link the same
//! copy of `shared` as this crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed set-up is a failed test"
)]

pub mod aws_meter;
pub mod aws_proxy;
pub mod bedrock;
pub mod dynamodb_units;
pub mod http_recorder;
pub mod llm_provider;
pub mod logs;
pub mod mail;
pub mod serial_proxy;
pub mod sqs_rules;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

/// The AWS configuration for moto's server. Panics with instructions when the server is not
/// configured, so that a test run without it fails loudly instead of reaching real AWS.
pub async fn moto_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| !e.is_empty());
    let Some(endpoint) =
        endpoint.filter(|e| e.starts_with("http://127.") || e.starts_with("http://localhost"))
    else {
        panic!(
            "AWS_ENDPOINT_URL must point at a local moto server (http://127.0.0.1:PORT). \
             Run the tests with `make test`, which starts one."
        );
    };
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// A name no other test in this run uses, for queues, tables and secrets in the shared server.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a FIFO queue (without content-based deduplication, as the template does) and
/// returns its URL.
pub async fn create_fifo_queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    sqs.create_queue()
        .queue_name(format!("{}.fifo", unique_name(prefix)))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .send()
        .await
        .expect("create the FIFO queue in moto")
        .queue_url()
        .expect("moto returns the queue URL")
        .to_owned()
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The body.
    pub body: String,
    /// The FIFO group id.
    pub group_id: String,
    /// The FIFO deduplication id.
    pub deduplication_id: String,
}

/// Reads and deletes every message on the queue, in the order the queue hands them out.
pub async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<ReceivedMessage> {
    take_all(sqs, queue_url)
        .await
        .iter()
        .map(|message| {
            let attribute = |name: MessageSystemAttributeName| {
                message
                    .attributes()
                    .and_then(|a| a.get(&name))
                    .cloned()
                    .unwrap_or_default()
            };
            ReceivedMessage {
                body: message.body().unwrap_or_default().to_owned(),
                group_id: attribute(MessageSystemAttributeName::MessageGroupId),
                deduplication_id: attribute(MessageSystemAttributeName::MessageDeduplicationId),
            }
        })
        .collect()
}

/// Takes every message off the queue, with its system attributes, as Lambda's SQS event source
/// would: each is received and deleted, in the order the queue hands them out.
pub async fn take_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Vec<aws_sdk_sqs::types::Message> {
    let mut taken = Vec::new();
    loop {
        let output = sqs
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
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete from moto");
        }
        taken.extend(messages);
    }
}

/// Creates a secret holding `value` and returns its ARN.
pub async fn create_secret(
    client: &aws_sdk_secretsmanager::Client,
    prefix: &str,
    value: &str,
) -> String {
    client
        .create_secret()
        .name(unique_name(prefix))
        .secret_string(value)
        .send()
        .await
        .expect("create the secret in moto")
        .arn()
        .expect("moto returns the ARN")
        .to_owned()
}

/// Creates a table shaped like the conversation table (partition key `pk`, a string; on-demand
/// billing; TTL on `expires_at`) and returns its name.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("a complete attribute definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("a complete key schema element"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the table in moto");
    client
        .update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()
                .expect("a complete TTL specification"),
        )
        .send()
        .await
        .expect("enable TTL in moto");
    name
}

/// Counts the HTTP requests an SDK client sends (each attempt, retries included), and the round
/// trips they took: a request sent while none of the client's is in flight starts a new round
/// trip, one sent while others are (calls made in parallel) joins theirs.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Calls>);

#[derive(Debug, Default)]
struct Calls {
    sent: AtomicUsize,
    in_flight: AtomicUsize,
    round_trips: AtomicUsize,
}

impl CallCounter {
    /// The requests sent so far.
    pub fn count(&self) -> usize {
        self.0.sent.load(Ordering::SeqCst)
    }

    /// The round trips so far.
    pub fn round_trips(&self) -> usize {
        self.0.round_trips.load(Ordering::SeqCst)
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.sent.fetch_add(1, Ordering::SeqCst);
        if self.0.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.0.round_trips.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let _ = self
            .0
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        Ok(())
    }
}

/// A DynamoDB client for `config` whose requests are counted by the returned [`CallCounter`].
pub fn dynamodb_client_with_counter(
    config: &aws_config::SdkConfig,
) -> (aws_sdk_dynamodb::Client, CallCounter) {
    let counter = CallCounter::default();
    let client_config = aws_sdk_dynamodb::config::Builder::from(config)
        .interceptor(counter.clone())
        .build();
    (aws_sdk_dynamodb::Client::from_conf(client_config), counter)
}
