//! `make local`: the whole bot on this machine. Prints the simulator's URL; with `--terminal`,
//! reads messages from standard input and prints the replies instead. Ctrl-C (or the end of
//! the input, in terminal mode) stops everything it started.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed set-up is a failed test"
)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use local_stack::local::{LlmMode, LocalStack, Options};
use local_stack::runtime::binaries_dir;
use tokio::io::AsyncBufReadExt;

const USAGE: &str = "usage: local-stack [--terminal] [--port N] [--moto-port N] [--aws-endpoint URL] [--stack-name NAME]
  --terminal          read messages from standard input, print the replies (/resend re-delivers the last one)
  --port N            the simulator's port (default 8787; 0 for any)
  --moto-port N       the port of the moto server it starts (default 5005)
  --aws-endpoint URL  use this running moto server instead of starting one
  --stack-name NAME   the stack's name, which resource names derive from (default local)
environment: MOTO_SERVER (path to moto_server), LLM_API_KEY / LLM_BASE_URL / LLM_PROVIDER / LLM_MODEL";

#[tokio::main]
async fn main() {
    let mut terminal = false;
    let mut options = Options {
        aws_endpoint: None,
        moto_server: PathBuf::from(
            std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into()),
        ),
        moto_port: 5005,
        http_port: 8787,
        binaries: binaries_dir(),
        log_dir: binaries_dir().join("local-stack-logs"),
        stack_name: "local".into(),
        llm: LlmMode::from_env(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| exit(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--terminal" => terminal = true,
            "--port" => {
                options.http_port = value("--port")
                    .parse()
                    .unwrap_or_else(|_| exit("--port needs a number"))
            }
            "--moto-port" => {
                options.moto_port = value("--moto-port")
                    .parse()
                    .unwrap_or_else(|_| exit("--moto-port needs a number"))
            }
            "--aws-endpoint" => options.aws_endpoint = Some(value("--aws-endpoint")),
            "--stack-name" => options.stack_name = value("--stack-name"),
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => exit(&format!("unknown argument {other}")),
        }
    }
    let llm = options.llm.describe();
    let logs = options.log_dir.clone();
    let stack = match LocalStack::start(options).await {
        Ok(stack) => stack,
        Err(error) => exit(&error),
    };
    eprintln!("local-stack: {llm}");
    eprintln!("local-stack: the functions' logs are in {}", logs.display());
    if terminal {
        run_terminal(&stack).await;
    } else {
        println!(
            "WhatsApp simulator: {}/  (webhook: {}/webhook). Ctrl-C stops everything.",
            stack.url, stack.url
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("local-stack: stopping");
}

async fn run_terminal(stack: &LocalStack) {
    const USER: &str = "15550001111";
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut since = stack.events_since(0).last().map(|e| e.seq).unwrap_or(0);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line { Ok(Some(line)) => line, _ => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let (status, wait) = if text == "/resend" {
            (stack.resend().await.unwrap_or(0), Duration::from_secs(3))
        } else {
            (
                stack.send(USER, "Terminal user", text).await,
                Duration::from_secs(90),
            )
        };
        if status != 200 {
            println!("! the webhook answered {status}");
            continue;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut answered = false;
        while tokio::time::Instant::now() < deadline {
            for event in stack.events_since(since) {
                since = since.max(event.seq);
                if event.kind == "reply" {
                    println!("bot> {}", event.data["text"].as_str().unwrap_or_default());
                    answered = true;
                }
            }
            if answered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !answered {
            println!("(no reply)");
        }
        let _ = std::io::stdout().flush();
    }
}

fn exit(message: &str) -> ! {
    eprintln!("local-stack: {message}\n{USAGE}");
    std::process::exit(2)
}
