//! `speed`: measures the functions' release binaries, under the local Lambda runtime against
//! moto (run it through `tests/bench/speed.sh`, which builds them and starts moto). Prints
//! figures; asserts only that the functions did their work. README's "Speed and size" section
//! has the figures and how to read them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measuring tool: a failed set-up or invocation is a failed measurement"
)]

mod cold_start;
mod fixtures;
mod harness;
mod perf;
mod pipeline;
mod procfs;
mod rss;
mod stats;
mod webhook_cpu;

use std::path::PathBuf;
use std::time::Duration;

use harness::Setup;
use local_stack::runtime::binaries_dir;

const USAGE: &str = "usage: speed [--binaries DIR] [--instant-sqs] COMMAND [OPTIONS]
commands:
  webhook-cpu [--invocations N] [--warmup N] [--perf FILE]
                 the webhook's CPU time per invocation (default 1000 invocations per case, 100 warm-up)
  rss            each function's peak RSS under its largest legitimate input
  pipeline [--messages N] [--users N] [--warmup N] [--graph-ms N] [--llm-ms N]
                 webhook in → reply out, less the LLM (default 300 messages, 20 users, 20 warm-up;
                 the Graph API and LLM stand-ins answer at once unless given a latency)
  cold-start [--runs N]
                 process start → first poll for an event, per function (default 100 starts)
  all            each of the above with its defaults
--binaries DIR   the functions' binaries: DIR/<name>/bootstrap or DIR/<name>
                 (default: the `lambda` folder of this program's target folder, cargo lambda's output)
--instant-sqs    SendMessageBatch is answered at once (every entry accepted) instead of by moto,
                 which takes tens of milliseconds per call: the webhook's CPU without that wait
Needs AWS_ENDPOINT_URL pointing at a local moto server (tests/with-moto.sh).";

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let binaries = take_value(&mut args, "--binaries")
        .map(PathBuf::from)
        .unwrap_or_else(default_binaries);
    let answer_sends = take_flag(&mut args, "--instant-sqs");
    let setup = Setup {
        log_dir: std::env::temp_dir().join(format!("speed-logs-{}", std::process::id())),
        binaries,
        aws_endpoint: harness::keep_alive_front(harness::moto_url(), answer_sends).await,
    };
    let command = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let number = |args: &mut Vec<String>, name: &str, default: usize| {
        take_value(args, name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| exit(&format!("{name} needs a number")))
        })
    };
    let cpu = |args: &mut Vec<String>| webhook_cpu::Options {
        invocations: number(args, "--invocations", 1000),
        warmup: number(args, "--warmup", 100),
        perf: take_value(args, "--perf").map(PathBuf::from),
    };
    let pipe = |args: &mut Vec<String>| pipeline::Options {
        messages: number(args, "--messages", 300),
        users: number(args, "--users", 20).max(1),
        warmup: number(args, "--warmup", 20),
        latency: harness::Latency {
            graph: Duration::from_millis(number(args, "--graph-ms", 0) as u64),
            llm: Duration::from_millis(number(args, "--llm-ms", 0) as u64),
        },
    };
    match command.as_str() {
        "webhook-cpu" => webhook_cpu::run(&setup, &cpu(&mut args)).await,
        "rss" => rss::run(&setup).await,
        "pipeline" => pipeline::run(&setup, &pipe(&mut args)).await,
        "cold-start" => cold_start::run(&setup, number(&mut args, "--runs", 100)).await,
        "all" => {
            cold_start::run(&setup, 100).await;
            println!();
            webhook_cpu::run(&setup, &cpu(&mut Vec::new())).await;
            println!();
            rss::run(&setup).await;
            println!();
            pipeline::run(&setup, &pipe(&mut Vec::new())).await;
        }
        _ => exit(USAGE),
    }
    if !args.is_empty() {
        exit(&format!("unknown arguments: {args:?}\n{USAGE}"));
    }
    let _ = std::fs::remove_dir_all(&setup.log_dir);
}

/// Removes `--name` from `args` and says whether it was there.
fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != name);
    args.len() < before
}

/// Removes `--name VALUE` from `args` and returns the value.
fn take_value(args: &mut Vec<String>, name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    if at + 1 >= args.len() {
        exit(&format!("{name} needs a value"));
    }
    let value = args.remove(at + 1);
    args.remove(at);
    Some(value)
}

/// cargo lambda's output beside this program's profile folder: `<target>/lambda`.
fn default_binaries() -> PathBuf {
    let profile_dir = binaries_dir();
    profile_dir
        .parent()
        .map(|target| target.join("lambda"))
        .unwrap_or(profile_dir)
}

fn exit(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}
