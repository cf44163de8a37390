//! Peak resident memory (`VmHWM`) of each function's release binary under its largest
//! legitimate input, each in a fresh process, against moto and the stand-ins.

use local_stack::resources::Stack;
use local_stack::runtime::{LambdaFunction, http_answer};
use serde_json::{Value, json};
use shared::inbound::MediaKind;
use tokio::sync::mpsc;

use crate::fixtures;
use crate::harness::{self, Answer, INVOKE_TIMEOUT, Latency, Reply, Setup, StandIns};
use crate::procfs;

/// Conversations in the processor's batch, one record each (the event source's batch size).
const CONVERSATIONS: usize = 10;
/// Rounds to fill each conversation's history: 20 turns (`HISTORY_MAX_MESSAGES`' default)
/// after 10, then one more with the history full.
const ROUNDS: usize = 11;

/// Measures and prints the peak RSS of the three functions.
pub async fn run(setup: &Setup) {
    let stack = harness::stack("speed-rss").await;
    println!("peak RSS (VmHWM) of each function's release binary, a fresh process per function");
    println!(
        "{:<10} {:<62} {:>9} {:>10}",
        "function", "after", "event KB", "VmHWM MiB"
    );
    webhook(setup, &stack).await;
    processor(setup, &stack).await;
    alerter(setup, &stack).await;
}

fn row(function: &str, after: &str, event: &Value, pid: u32) {
    println!(
        "{:<10} {:<62} {:>9} {:>10.1}",
        function,
        after,
        fixtures::event_bytes(event) / 1024,
        procfs::peak_rss_mib(pid)
    );
}

async fn invoke(function: &LambdaFunction, event: &Value) -> Value {
    function
        .invoke(event, INVOKE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{} failed: {e}", function.name()))
}

async fn webhook(setup: &Setup, stack: &Stack) {
    let webhook = setup.start(stack, "webhook", "WebhookFunction", &[]).await;
    let pid = harness::pid(&webhook).await;
    let cases = [
        (
            "start and the handshake (reads the secret)",
            fixtures::handshake(),
        ),
        (
            "a 2 KB text delivery",
            fixtures::signed_post(&fixtures::two_kb_delivery("RSS00000001")),
        ),
        (
            "a 3 MB delivery: 120 messages of 4,096 CJK characters",
            fixtures::signed_post(&fixtures::three_mb_delivery()),
        ),
    ];
    for (after, event) in cases {
        let status = http_answer(&invoke(&webhook, &event).await).status;
        assert_eq!(status, 200, "the webhook answered {status}");
        row("webhook", after, &event, pid);
    }
    webhook.stop().await;
}

/// 16 KiB (the most a stored turn keeps) of three-byte characters: split into two messages.
fn long_answer() -> String {
    "这是一个很长的回答。".chars().cycle().take(5_461).collect()
}

async fn processor(setup: &Setup, stack: &Stack) {
    let (stand_ins, mut replies) =
        StandIns::start(Answer::Fixed(long_answer()), Latency::default()).await;
    let processor = setup
        .start(
            stack,
            "processor",
            "ProcessorFunction",
            &stand_ins.processor_overrides(),
        )
        .await;
    let pid = harness::pid(&processor).await;
    let queue_arn = queue_arn(stack, "InboundQueue");
    for round in 0..ROUNDS {
        let records: Vec<Value> = (0..CONVERSATIONS)
            .map(|c| {
                let message = fixtures::inbound(
                    &format!("1555{c:07}"),
                    &format!("wamid.RSS{round:03}C{c:03}"),
                    &fixtures::longest_user_text(),
                );
                fixtures::sqs_record(&queue_arn, &message, 1)
            })
            .collect();
        let event = json!({ "Records": records });
        let answer = invoke(&processor, &event).await;
        let failures = answer["batchItemFailures"].as_array().map_or(0, Vec::len);
        assert_eq!(failures, 0, "round {round}: {answer}");
        assert!(
            drain(&mut replies).len() >= CONVERSATIONS,
            "every conversation got its reply"
        );
        if round == 0 {
            row(
                "processor",
                "10 conversations' first messages (12 KiB texts)",
                &event,
                pid,
            );
        }
        if round == ROUNDS - 1 {
            row(
                "processor",
                "10 conversations with 20 turns of 12-16 KiB (192 KiB cap)",
                &event,
                pid,
            );
        }
    }
    let media = MediaRound {
        processor: &processor,
        stand_ins: &stand_ins,
        queue_arn: &queue_arn,
        pid,
    };
    for (case, files) in MEDIA_CASES {
        media.run(case, files, &mut replies).await;
    }
    processor.stop().await;
}

/// A file of a media case: its kind, MIME type and size in MiB.
type MediaFile = (MediaKind, &'static str, usize);

/// The media cases, after the histories are full: what each of the ten conversations sends in
/// one batch.
const MEDIA_CASES: [(&str, &[MediaFile]); 3] = [
    (
        "10 conversations, a 5 MiB photo each (Meta's image limit)",
        &[(MediaKind::Image, "image/jpeg", 5)],
    ),
    (
        "10 conversations, a 16 MiB voice note each, transcribed",
        &[(MediaKind::Audio, "audio/ogg", 16)],
    ),
    (
        "10 conversations, an album of three 5 MiB photos each",
        &[
            (MediaKind::Image, "image/jpeg", 5),
            (MediaKind::Image, "image/png", 5),
            (MediaKind::Image, "image/webp", 5),
        ],
    ),
];

/// One batch of media messages through the processor, then its row.
struct MediaRound<'a> {
    processor: &'a LambdaFunction,
    stand_ins: &'a StandIns,
    queue_arn: &'a str,
    pid: u32,
}

impl MediaRound<'_> {
    async fn run(
        &self,
        case: &str,
        files: &[MediaFile],
        replies: &mut mpsc::UnboundedReceiver<Reply>,
    ) {
        let mut records = Vec::new();
        for c in 0..CONVERSATIONS {
            for (n, (kind, mime_type, mib)) in files.iter().enumerate() {
                let id = format!("media-{}-{c}-{n}", case.len());
                self.stand_ins
                    .put_media(&id, mime_type, noise_bytes(mib << 20, c + n));
                let message = fixtures::inbound_media(
                    &format!("1555{c:07}"),
                    &format!("wamid.{id}"),
                    *kind,
                    &id,
                    mime_type,
                );
                records.push(fixtures::sqs_record(self.queue_arn, &message, 1));
            }
        }
        let event = json!({ "Records": records });
        let answer = invoke(self.processor, &event).await;
        let failures = answer["batchItemFailures"].as_array().map_or(0, Vec::len);
        assert_eq!(failures, 0, "{case}: {answer}");
        assert!(
            drain(replies).len() >= CONVERSATIONS,
            "{case}: every conversation got its reply"
        );
        row("processor", case, &event, self.pid);
    }
}

/// `len` bytes that do not compress, different for each `seed`.
fn noise_bytes(len: usize, seed: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ seed as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn drain(replies: &mut mpsc::UnboundedReceiver<Reply>) -> Vec<Reply> {
    let mut all = Vec::new();
    while let Ok(reply) = replies.try_recv() {
        all.push(reply);
    }
    all
}

async fn alerter(setup: &Setup, stack: &Stack) {
    let alerter = setup.start(stack, "alerter", "AlerterFunction", &[]).await;
    let pid = harness::pid(&alerter).await;
    let dead_letter_arn = queue_arn(stack, "InboundDeadLetterQueue");
    let records: Vec<Value> = (0..10)
        .map(|i| {
            let message = fixtures::inbound(
                &format!("1555{i:07}"),
                &format!("wamid.DEAD{i:04}"),
                &fixtures::longest_user_text(),
            );
            fixtures::sqs_record(&dead_letter_arn, &message, 6)
        })
        .collect();
    let (logs, lines, inflated) = fixtures::logs_event_of_size(1_000_000);
    // An outage repeats one error: such lines compress so well that the alerter's bound on
    // inflating (16 MiB) is reached before Lambda's 1 MB on the event.
    let (repeated, repeated_lines, repeated_inflated) =
        fixtures::repeated_logs_event(16 * 1024 * 1024 - 64 * 1024);
    let cases = [
        (
            "10 dead letters of 4,096 CJK characters".to_owned(),
            json!({ "Records": records }),
        ),
        (
            format!(
                "a 1 MB CloudWatch Logs event: {lines} ERROR lines, {:.1} MB inflated",
                inflated as f64 / 1e6
            ),
            logs,
        ),
        (
            format!(
                "one ERROR line {repeated_lines} times: {:.1} MiB inflated (16 MiB are read at most)",
                repeated_inflated as f64 / 1_048_576.0
            ),
            repeated,
        ),
    ];
    for (after, event) in cases {
        let answer = invoke(&alerter, &event).await;
        let failures = answer["batchItemFailures"].as_array().map_or(0, Vec::len);
        assert_eq!(failures, 0, "{answer}");
        row("alerter", &after, &event, pid);
    }
    alerter.stop().await;
}

/// The ARN of the queue `logical_id` of `stack`.
pub fn queue_arn(stack: &Stack, logical_id: &str) -> String {
    let url = &stack.resolver.refs[logical_id];
    format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        url.rsplit('/').next().unwrap_or_default()
    )
}
