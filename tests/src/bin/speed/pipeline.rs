//! The pipeline's own overhead, as the user waits for it: from the signed delivery posted to the
//! webhook to the reply arriving at the Graph API stand-in, minus the time the LLM stand-in took
//! to answer. One message at a time (each waits for its reply), through the release binaries,
//! moto's SQS, DynamoDB and Secrets Manager, and this program's SQS poller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use local_stack::local::event_sources::sqs_event;
use local_stack::runtime::{LambdaFunction, http_answer};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::fixtures;
use crate::harness::{self, Answer, INVOKE_TIMEOUT, Latency, Reply, Setup, StandIns, marker};
use crate::procfs;
use crate::stats::Percentiles;

/// How to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measured messages.
    pub messages: usize,
    /// Users they come from, in turn.
    pub users: usize,
    /// Messages before measuring (first secret reads, connections).
    pub warmup: usize,
    /// How long the stand-ins take, as Meta and the LLM would.
    pub latency: Latency,
}

/// When the event source invoked the processor with a message, by its marker.
type Invoked = Arc<Mutex<HashMap<String, Instant>>>;

/// The legs of one message's trip.
#[derive(Default)]
struct Legs {
    total: Vec<Duration>,
    webhook: Vec<Duration>,
    queue: Vec<Duration>,
    processor: Vec<Duration>,
    llm: Vec<Duration>,
}

/// Measures and prints the pipeline's overhead per message.
pub async fn run(setup: &Setup, options: &Options) {
    let stack = harness::stack("speed-pipeline").await;
    // About 600 characters, a typical answer.
    let padding = fixtures::user_text(590);
    let (stand_ins, mut replies) =
        StandIns::start(Answer::EchoMarker(padding), options.latency).await;
    let webhook = setup.start(&stack, "webhook", "WebhookFunction", &[]).await;
    let processor = Arc::new(
        setup
            .start(
                &stack,
                "processor",
                "ProcessorFunction",
                &stand_ins.processor_overrides(),
            )
            .await,
    );
    let invoked: Invoked = Arc::default();
    let queue_url = stack.resolver.refs["InboundQueue"].clone();
    let poller = tokio::spawn(poll(
        aws_sdk_sqs::Client::new(&stack.aws),
        queue_url,
        processor.clone(),
        invoked.clone(),
    ));

    let mut legs = Legs::default();
    let pids = [harness::pid(&webhook).await, harness::pid(&processor).await];
    let mut cpu_before = pids.map(procfs::cpu_time);
    for i in 0..options.warmup + options.messages {
        if i == options.warmup {
            cpu_before = pids.map(procfs::cpu_time);
        }
        let trip = trip(i, options, &webhook, &mut replies, &stand_ins, &invoked).await;
        if i >= options.warmup {
            let (total, webhook, queue, processor, llm) = trip;
            legs.total.push(total);
            legs.webhook.push(webhook);
            legs.queue.push(queue);
            legs.processor.push(processor);
            legs.llm.push(llm);
        }
    }
    let cpu = [0, 1].map(|f| procfs::cpu_time(pids[f]).since(cpu_before[f]));
    poller.abort();
    print(&legs, options);
    for (name, used) in ["webhook", "processor"].iter().zip(cpu) {
        println!(
            "{name} CPU per message: {:.0} µs (user + system, /proc/<pid>/stat)",
            used.total().as_secs_f64() * 1e6 / options.messages as f64
        );
    }
}

/// One message from user `i % users`, through to its reply: (overhead, webhook invocation,
/// webhook answered → processor invoked, processor invoked → reply less the LLM, the LLM).
async fn trip(
    i: usize,
    options: &Options,
    webhook: &LambdaFunction,
    replies: &mut mpsc::UnboundedReceiver<Reply>,
    stand_ins: &StandIns,
    invoked: &Invoked,
) -> (Duration, Duration, Duration, Duration, Duration) {
    let user = format!("1555{:07}", i % options.users);
    let tag = format!("[#{i}]");
    // A question of about 120 characters.
    let text = format!("{tag} {}", fixtures::user_text(112));
    let body = fixtures::text_delivery(&[(user, format!("wamid.PIPE{i:08}"), text)]);
    let event = fixtures::signed_post(&body);
    let sent = Instant::now();
    let answer = webhook
        .invoke(&event, INVOKE_TIMEOUT)
        .await
        .expect("the webhook answers");
    let accepted = Instant::now();
    assert_eq!(http_answer(&answer).status, 200);
    let reply = loop {
        let reply = tokio::time::timeout(Duration::from_secs(30), replies.recv())
            .await
            .unwrap_or_else(|_| panic!("no reply to message {i} within 30 s"))
            .expect("the stand-ins run");
        if marker(&reply.text) == Some(tag.as_str()) {
            break reply;
        }
    };
    let llm: Duration = stand_ins
        .take_llm_calls()
        .iter()
        .filter(|call| call.user_text.contains(&tag))
        .map(|call| call.took)
        .sum();
    let started = invoked
        .lock()
        .expect("invoked")
        .remove(&tag)
        .expect("the poller saw the message");
    let total = reply.at - sent - llm;
    (
        total,
        accepted - sent,
        started.saturating_duration_since(accepted),
        reply.at - started - llm,
        llm,
    )
}

/// Lambda's SQS event source, played: batches of up to 10 into the processor, as soon as they
/// are there (moto's long poll answers when a message arrives), the handled ones deleted.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    processor: Arc<LambdaFunction>,
    invoked: Invoked,
) {
    loop {
        let Ok(output) = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
        else {
            continue;
        };
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let now = Instant::now();
        for message in &messages {
            if let Some(tag) = message.body().and_then(marker) {
                invoked.lock().expect("invoked").insert(tag.to_owned(), now);
            }
        }
        let answer = processor
            .invoke(&sqs_event(&queue_url, &messages), INVOKE_TIMEOUT)
            .await
            .expect("the processor answers");
        assert_eq!(
            answer["batchItemFailures"].as_array().map_or(0, Vec::len),
            0,
            "{answer}"
        );
        for message in &messages {
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

fn print(legs: &Legs, options: &Options) {
    println!(
        "pipeline: {} messages of about 120 characters from {} users, one at a time, after {} warm-up ones; answers of about 600",
        options.messages, options.users, options.warmup
    );
    println!(
        "stand-ins answer after: Graph API {} ms per call, LLM {} ms",
        options.latency.graph.as_millis(),
        options.latency.llm.as_millis()
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8} {:>8}",
        "leg (ms)", "p50", "p90", "p99", "max"
    );
    let rows = [
        (
            "overhead: webhook in → reply out, less the LLM",
            &legs.total,
        ),
        ("  webhook invocation (signature, queue)", &legs.webhook),
        ("  queue: webhook answered → processor invoked", &legs.queue),
        (
            "  processor invoked → reply out, less the LLM",
            &legs.processor,
        ),
        ("the LLM stand-in itself (subtracted)", &legs.llm),
    ];
    for (name, sample) in rows {
        let p = Percentiles::of(sample.clone());
        println!(
            "{:<52} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name,
            p.p50_ms(),
            p.at(90.0).as_secs_f64() * 1e3,
            p.p99_ms(),
            p.max_ms()
        );
    }
}
