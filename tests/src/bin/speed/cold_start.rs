//! Each function's cold start as far as its own code goes: from the process's start to its first
//! request for an event (`GET /2018-06-01/runtime/invocation/next`), with the environment the
//! template gives it. No event is ever handed out: the process is stopped once it has asked.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::harness::{self, Setup};
use crate::stats::Percentiles;

const NEXT: &[u8] = b"GET /2018-06-01/runtime/invocation/next";

/// This program's variables a function is started with: the system's, and where TLS roots are
/// (`SSL_CERT_FILE`, `SSL_CERT_DIR`: the processor's HTTP client reads the system's roots at
/// start, and their number weighs in its start-up).
const PASSED_THROUGH: [&str; 5] = ["PATH", "HOME", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR"];

/// Starts each function `runs` times (after one start that is not counted, to warm the page
/// cache) and prints the median, 99th percentile and largest start-up time.
pub async fn run(setup: &Setup, runs: usize) {
    let stack = harness::stack("speed-cold").await;
    println!(
        "cold start: process start → first poll of the Runtime API's next-invocation endpoint, {runs} starts per function"
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8}",
        "function", "p50 ms", "p99 ms", "max ms", "min ms"
    );
    for (name, logical_id) in [
        ("webhook", "WebhookFunction"),
        ("processor", "ProcessorFunction"),
        ("alerter", "AlerterFunction"),
    ] {
        let mut environment = stack.environment(logical_id);
        environment.extend(harness::aws_environment(&setup.aws_endpoint));
        let binary = harness::binary(&setup.binaries, name);
        let mut times = Vec::with_capacity(runs);
        for run in 0..=runs {
            let took = start_once(&binary, &environment).await;
            if run > 0 {
                times.push(took);
            }
        }
        let p = Percentiles::of(times.clone());
        println!(
            "{:<10} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            p.p50_ms(),
            p.p99_ms(),
            p.max_ms(),
            p.at(0.0).as_secs_f64() * 1e3
        );
    }
}

/// Starts `binary` once against a Runtime API stand-in and returns how long it took to ask for
/// its first event.
async fn start_once(
    binary: &std::path::Path,
    environment: &std::collections::BTreeMap<String, String>,
) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| PASSED_THROUGH.contains(&k.as_str())))
        .envs(environment)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "speed")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let polled = tokio::time::timeout(Duration::from_secs(10), first_poll(&listener))
        .await
        .unwrap_or_else(|_| panic!("{} never asked for an event", binary.display()));
    let _ = child.kill().await;
    polled - started
}

/// When the first request for the next event arrived.
async fn first_poll(listener: &TcpListener) -> Instant {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let mut head = vec![0u8; NEXT.len()];
        if socket.read_exact(&mut head).await.is_ok() && head == NEXT {
            return Instant::now();
        }
    }
}
