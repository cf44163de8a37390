//! The webhook's CPU time per delivery: the release binary under the local Lambda runtime,
//! against moto, invoked one event at a time as a warm Lambda instance is; the process's CPU
//! time (user + system, from `/proc/<pid>/stat`) over many invocations, divided by their number.

use std::path::PathBuf;
use std::time::Duration;

use local_stack::runtime::{LambdaFunction, http_answer};
use serde_json::Value;
use tokio::time::Instant;

use crate::fixtures;
use crate::harness::{self, INVOKE_TIMEOUT, Setup};
use crate::procfs::{self, CpuTime};
use crate::stats::Percentiles;

/// How to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measured invocations per case.
    pub invocations: usize,
    /// Invocations before measuring (the secret's first read, connections, allocator).
    pub warmup: usize,
    /// Records a `perf` profile of the text deliveries into this file.
    pub perf: Option<PathBuf>,
}

/// Makes the `i`-th event of a case.
type EventMaker = Box<dyn Fn(usize) -> Value>;

/// One case's figures.
struct Figures {
    cpu: CpuTime,
    wall: Percentiles,
    log_bytes: u64,
}

/// Measures and prints the webhook's CPU time per invocation for a handshake, a status webhook
/// and the 2 KB text delivery.
pub async fn run(setup: &Setup, options: &Options) {
    let stack = harness::stack("speed-cpu").await;
    let webhook = setup.start(&stack, "webhook", "WebhookFunction", &[]).await;
    let pid = harness::pid(&webhook).await;
    let text = |tag: &'static str| {
        move |i: usize| fixtures::signed_post(&fixtures::two_kb_delivery(&format!("{tag}{i:08}")))
    };
    measure(&webhook, options.warmup, text("W"), setup, None).await;

    let status = |i: usize| {
        let id = format!("wamid.OUT{i:010}");
        fixtures::signed_post(&fixtures::status_delivery(&id, "delivered", "15551234567"))
    };
    let cases: [(&str, EventMaker); 3] = [
        (
            "GET handshake (no AWS call)",
            Box::new(|_| fixtures::handshake()),
        ),
        ("status webhook (no AWS call)", Box::new(status)),
        ("2 KB text (one SendMessageBatch)", Box::new(text("M"))),
    ];
    let ticks = procfs::ticks_per_second();
    println!(
        "webhook CPU per invocation: {} invocations per case after {} warm-up ones; {}",
        options.invocations,
        options.warmup,
        harness::binary(&setup.binaries, "webhook").display()
    );
    println!(
        "(CPU from /proc/{pid}/stat in 1/{ticks} s ticks: ±{:.0} µs per invocation)",
        1e6 / ticks as f64 / options.invocations as f64
    );
    println!(
        "{:<34} {:>8} {:>8} {:>9} {:>12} {:>12} {:>11}",
        "case", "user µs", "sys µs", "total µs", "wall p50 ms", "wall p99 ms", "log B/inv"
    );
    let last = cases.len() - 1;
    for (index, (name, event)) in cases.iter().enumerate() {
        let perf = if index == last {
            options.perf.as_ref()
        } else {
            None
        };
        let figures = measure(&webhook, options.invocations, event, setup, perf).await;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / options.invocations as f64;
        println!(
            "{:<34} {:>8.0} {:>8.0} {:>9.0} {:>12.2} {:>12.2} {:>11}",
            name,
            per(figures.cpu.user),
            per(figures.cpu.system),
            per(figures.cpu.total()),
            figures.wall.p50_ms(),
            figures.wall.p99_ms(),
            figures.log_bytes / options.invocations as u64
        );
    }
    webhook.stop().await;
}

/// Invokes `webhook` `count` times with `event(i)` and returns what its process used.
async fn measure(
    webhook: &LambdaFunction,
    count: usize,
    event: impl Fn(usize) -> Value,
    setup: &Setup,
    perf: Option<&PathBuf>,
) -> Figures {
    let pid = harness::pid(webhook).await;
    let events: Vec<Value> = (0..count).map(&event).collect();
    let recorder = match perf {
        Some(path) => Some(crate::perf::record(pid, path).await),
        None => None,
    };
    let log_before = setup.log_bytes("webhook");
    let before = procfs::cpu_time(pid);
    let mut wall = Vec::with_capacity(count);
    for event in &events {
        let started = Instant::now();
        let answer = webhook
            .invoke(event, INVOKE_TIMEOUT)
            .await
            .expect("the webhook answers");
        wall.push(started.elapsed());
        let status = http_answer(&answer).status;
        assert_eq!(status, 200, "the webhook answered {status}");
    }
    let cpu = procfs::cpu_time(pid).since(before);
    if let Some(recorder) = recorder {
        crate::perf::stop(recorder).await;
    }
    Figures {
        cpu,
        wall: Percentiles::of(wall),
        log_bytes: setup.log_bytes("webhook") - log_before,
    }
}
