//! The stack of the cost run: the template's resources in moto, the webhook and the processor's
//! real binaries under the local Lambda runtime, each reaching AWS through its own endpoint of
//! the meter, Lambda's SQS event source (also metered: its requests are on the SQS bill), and
//! the stand-ins for Meta and the LLM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use testkit::aws_meter::AwsMeter;

use super::stand_ins::StandIns;
use super::users::{self, ApiGateway};
use super::{CostError, FunctionUsage, Measurement, Setup, Workload};
use crate::local::event_sources::sqs_event;
use crate::resources::Stack;
use crate::runtime::{FunctionSpec, LambdaFunction};

/// How long one processor invocation may take.
const PROCESSOR_TIMEOUT: Duration = Duration::from_secs(60);
/// Lambda's default memory, for a function whose template gives none.
const DEFAULT_MEMORY_MB: u64 = 128;

/// The started stack.
pub(super) struct Rig {
    stack: Stack,
    meter: AwsMeter,
    stand_ins: Arc<StandIns>,
    webhook: LambdaFunction,
    processor: Arc<LambdaFunction>,
    log_dir: PathBuf,
    event_source: String,
}

impl Rig {
    /// Creates the resources and starts the functions and stand-ins.
    pub(super) async fn start(workload: &Workload, setup: &Setup) -> Result<Self, CostError> {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&setup.aws_endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "cost",
            ))
            .load()
            .await;
        let stack = Stack::create(aws, &testkit::unique_name("cost"), "oncall@example.com").await;
        let meter = AwsMeter::new(&setup.aws_endpoint);
        let (stand_ins, base_url) = StandIns::start(workload.answer_chars)
            .await
            .map_err(|e| CostError::Start(format!("stand-ins: {e}")))?;
        std::fs::create_dir_all(&setup.log_dir)
            .map_err(|e| CostError::Start(format!("{}: {e}", setup.log_dir.display())))?;
        let webhook_endpoint = meter.endpoint("webhook").await;
        let webhook = start(
            &stack,
            setup,
            ("webhook", "WebhookFunction"),
            &webhook_endpoint,
            &[],
        )
        .await?;
        let processor_env = [
            ("LLM_BASE_URL", format!("{base_url}/llm/v1")),
            ("META_API_BASE_URL", format!("{base_url}/graph")),
            // The workload sends each user's turns faster than any person would: the messages
            // are counted as deployed (one counter write per burst, in the figures), never limited.
            ("RATE_LIMIT_PER_MINUTE", "10000".to_owned()),
        ];
        let processor_endpoint = meter.endpoint("processor").await;
        let processor = start(
            &stack,
            setup,
            ("processor", "ProcessorFunction"),
            &processor_endpoint,
            &processor_env,
        )
        .await?;
        let event_source = meter.endpoint("event source").await;
        Ok(Self {
            stack,
            meter,
            stand_ins,
            webhook,
            processor: Arc::new(processor),
            log_dir: setup.log_dir.clone(),
            event_source,
        })
    }

    /// Runs the users' conversations with the event source polling, then gathers the figures.
    pub(super) async fn run(self, workload: &Workload) -> Result<Measurement, CostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let poller = tokio::spawn(poll(
            self.sqs_client(&self.event_source).await,
            self.stack.resolver.refs["InboundQueue"].clone(),
            Arc::clone(&self.processor),
            Arc::clone(&stop),
        ));
        let gateway = ApiGateway {
            webhook: &self.webhook,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        let outcome = users::converse(workload, &gateway, &self.stand_ins).await;
        // The last batch is deleted after its reply went out: let the poller finish it.
        stop.store(true, Ordering::SeqCst);
        let _ = poller.await;
        outcome?;
        let dead_letters = self.dead_letters().await;
        let count = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        Ok(Measurement {
            workload: workload.clone(),
            messages: u64::from(workload.users) * u64::from(workload.turns),
            replies: count(&self.stand_ins.texts_sent),
            llm_calls: count(&self.stand_ins.llm_calls),
            api_requests: count(&gateway.requests),
            api_request_bytes: count(&gateway.bytes),
            functions: vec![
                self.usage("webhook", "WebhookFunction", Some(&self.webhook)),
                self.usage("processor", "ProcessorFunction", Some(&self.processor)),
                // Invoked only by dead letters, ERROR lines and alarms: none in a clean run
                // (the report says so when there were).
                self.usage("alerter", "AlerterFunction", None),
            ],
            aws_calls: self.meter.calls().await,
            dead_letters,
            outbound_bytes: count(&self.stand_ins.outbound_bytes),
        })
    }

    /// What a function did: its invocations' run times, its memory and its log.
    fn usage(
        &self,
        name: &str,
        logical_id: &str,
        function: Option<&LambdaFunction>,
    ) -> FunctionUsage {
        let memory = &self.stack.template.properties(logical_id)["MemorySize"];
        let global = &self.stack.template.root["Globals"]["Function"]["MemorySize"];
        let memory_mb = [memory, global]
            .into_iter()
            .find_map(|value| self.stack.resolver.resolve(value)?.parse().ok())
            .unwrap_or(DEFAULT_MEMORY_MB);
        let log = LogVolume::of(&self.log_dir.join(format!("{name}.log")));
        FunctionUsage {
            name: name.to_owned(),
            memory_mb,
            run_times: function.map(LambdaFunction::run_times).unwrap_or_default(),
            log_bytes: log.bytes,
            log_lines: log.lines,
            error_lines: log.errors,
        }
    }

    /// The messages on the dead-letter queue, read without the meter.
    async fn dead_letters(&self) -> u64 {
        let sqs = aws_sdk_sqs::Client::new(&self.stack.aws);
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&self.stack.resolver.refs["InboundDeadLetterQueue"])
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await;
        attributes
            .ok()
            .and_then(|a| a.attributes)
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or_default()
    }

    /// An SQS client reaching moto at `endpoint`.
    async fn sqs_client(&self, endpoint: &str) -> aws_sdk_sqs::Client {
        let config = self
            .stack
            .aws
            .clone()
            .into_builder()
            .endpoint_url(endpoint)
            .build();
        aws_sdk_sqs::Client::new(&config)
    }
}

/// Starts `function`'s binary from `setup.binaries`, configured as the template configures
/// `logical_id` and then by `overrides`, reaching AWS at `aws_endpoint`; its log goes to the log
/// directory.
async fn start(
    stack: &Stack,
    setup: &Setup,
    (function, logical_id): (&str, &str),
    aws_endpoint: &str,
    overrides: &[(&str, String)],
) -> Result<LambdaFunction, CostError> {
    let mut environment = stack.environment(logical_id);
    for (key, value) in overrides {
        environment.insert((*key).to_owned(), value.clone());
    }
    for (key, value) in [
        ("AWS_ENDPOINT_URL", aws_endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_LAMBDA_LOG_LEVEL", "info"),
    ] {
        environment.insert(key.to_owned(), value.to_owned());
    }
    let log_file = setup.log_dir.join(format!("{function}.log"));
    // A fresh log per run: its bytes are the run's.
    let _ = std::fs::remove_file(&log_file);
    LambdaFunction::start(FunctionSpec {
        name: function.to_owned(),
        binary: setup.binaries.join(function),
        environment,
        log_file: Some(log_file),
    })
    .await
    .map_err(|e| CostError::Start(e.to_string()))
}

/// Lambda's SQS event source for the processor: batches of up to 10, the records that did not
/// fail deleted in one `DeleteMessageBatch`, until `stop` is set.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    processor: Arc<LambdaFunction>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = received.ok().and_then(|r| r.messages).unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let event = sqs_event(&queue_url, &messages);
        let failed: Vec<String> = match processor.invoke(&event, PROCESSOR_TIMEOUT).await {
            Ok(answer) => answer["batchItemFailures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                .collect(),
            Err(_) => messages
                .iter()
                .filter_map(|m| m.message_id.clone())
                .collect(),
        };
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| {
                !failed
                    .iter()
                    .any(|id| Some(id.as_str()) == m.message_id.as_deref())
            })
            .enumerate()
            .filter_map(|(n, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty() {
            let _ = sqs
                .delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
        }
    }
}

/// What a function's log holds.
#[derive(Debug, Default, PartialEq)]
struct LogVolume {
    /// The bytes of its lines, without their line ends.
    bytes: u64,
    lines: u64,
    /// Lines at ERROR.
    errors: u64,
}

impl LogVolume {
    fn of(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut volume = Self::default();
        for line in text.lines().filter(|line| !line.is_empty()) {
            volume.bytes += line.len() as u64;
            volume.lines += 1;
            volume.errors += u64::from(line.contains("\"level\":\"ERROR\""));
        }
        volume
    }
}
