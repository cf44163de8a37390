//! `make cost`: runs a workload of WhatsApp conversations through the functions' real binaries
//! against moto (`AWS_ENDPOINT_URL`, as `tests/with-moto.sh` sets it) and prints what it costs
//! per million inbound messages at AWS list prices. See README "Cost".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed set-up is a failed run"
)]

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use local_stack::cost::prices::LIST_PRICES;
use local_stack::cost::{Setup, Workload, measure, report};
use local_stack::runtime::binaries_dir;

const USAGE: &str = "usage: cost [--users N] [--turns N] [--question-chars N] [--answer-chars N] [--llm-wait-ms N] [--binaries DIR|release|debug]
  --users N           users writing at the same time (default 50)
  --turns N           messages per user, each after the reply to the last (default 20)
  --question-chars N  characters per question (default 120)
  --answer-chars N    characters per answer (default 600)
  --llm-wait-ms N     the LLM's wait per call, added to the processor's billed time (default 2000)
  --binaries DIR      the functions' binaries: a directory, or release/debug under the target
                      directory (default: beside this program)
environment: AWS_ENDPOINT_URL (moto's URL; tests/with-moto.sh sets it)";

#[tokio::main]
async fn main() {
    let (workload, binaries) = parse_args(std::env::args().skip(1));
    let Some(aws_endpoint) = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| e.starts_with("http://127.") || e.starts_with("http://localhost"))
    else {
        exit("AWS_ENDPOINT_URL must point at a local moto server: run `make cost`");
    };
    let setup = Setup {
        aws_endpoint,
        log_dir: binaries.join("cost-logs"),
        binaries,
    };
    eprintln!(
        "cost: {} users x {} turns through {} (logs in {})",
        workload.users,
        workload.turns,
        setup.binaries.display(),
        setup.log_dir.display()
    );
    let started = std::time::Instant::now();
    let measurement = match measure(&workload, &setup).await {
        Ok(measurement) => measurement,
        Err(error) => exit(&error.to_string()),
    };
    eprintln!("cost: ran in {:.1} s", started.elapsed().as_secs_f64());
    print!("{}", report::price(&measurement, &LIST_PRICES));
}

/// The workload and the binaries' directory the arguments ask for.
fn parse_args(mut args: impl Iterator<Item = String>) -> (Workload, PathBuf) {
    let mut workload = Workload::default();
    let mut binaries = binaries_dir();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| exit(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--users" => workload.users = number(&arg, &value("--users")),
            "--turns" => workload.turns = number(&arg, &value("--turns")),
            "--question-chars" => workload.question_chars = number(&arg, &value(&arg)),
            "--answer-chars" => workload.answer_chars = number(&arg, &value(&arg)),
            "--llm-wait-ms" => {
                workload.llm_wait = Duration::from_millis(number(&arg, &value(&arg)));
            }
            "--binaries" => {
                binaries = match value("--binaries").as_str() {
                    profile @ ("release" | "debug") => binaries_dir()
                        .parent()
                        .map(|target| target.join(profile))
                        .unwrap_or_default(),
                    dir => PathBuf::from(dir),
                };
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => exit(&format!("unknown argument {other}")),
        }
    }
    if workload.users == 0 || workload.turns == 0 {
        exit("--users and --turns must be at least 1");
    }
    (workload, binaries)
}

fn number<T: FromStr>(name: &str, text: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| exit(&format!("{name} needs a number, not {text:?}")))
}

fn exit(message: &str) -> ! {
    eprintln!("cost: {message}\n{USAGE}");
    std::process::exit(2)
}
