//! `make local`: the whole bot on this machine, with the example shop (its FAQ and tools) unless
//! `LOCAL_EXAMPLE=none`. Prints the simulator's URL; with `--terminal`, reads messages from
//! standard input and prints the replies (and the shop's tool calls) instead. Ctrl-C (or the end of
//! the input, in terminal mode) stops everything it started.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed set-up is a failed test"
)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use local_stack::local::numbers::Number;
use local_stack::local::shop::Example;
use local_stack::local::{LlmMode, LocalStack, Location, Options, Upload};
use local_stack::runtime::binaries_dir;
use tokio::io::AsyncBufReadExt;

const USAGE: &str = "usage: local-stack [--terminal] [--port N] [--moto-port N] [--aws-endpoint URL] [--stack-name NAME]
  --terminal          read messages from standard input, print the replies; also:
                        /send PATH [caption]   send a file (a photo, a PDF, a text or CSV file, an
                                               .ogg/.opus voice note), its kind from its extension
                        /location LAT LON [name]  share a location
                        /number N              write to business number N (1: the default,
                                               2: Café Luna, with its own persona)
                        /resend                re-deliver the last message
  --port N            the simulator's port (default 8787; 0 for any)
  --moto-port N       the port of the moto server it starts (default 5005)
  --aws-endpoint URL  use this running moto server instead of starting one
  --stack-name NAME   the stack's name, which resource names derive from (default local)
environment: MOTO_SERVER (path to moto_server), LLM_API_KEY / LLM_BASE_URL / LLM_PROVIDER / LLM_MODEL;
  LLM_PROVIDER=bedrock: real Bedrock with AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE or
  ~/.aws/credentials) in AWS_REGION (default us-east-1), else an offline Converse stand-in;
  GUARDRAIL_ID / GUARDRAIL_VERSION passed on;
  LOCAL_EXAMPLE=shop (default): the example shop of infra/examples/shop/ (its FAQ as the knowledge,
  its tools against a local stand-in of its API); LOCAL_EXAMPLE=none: no knowledge, no tools";

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
        example: Example::from_env().unwrap_or_else(|e| exit(&e)),
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
    let example = options.example.describe();
    let logs = options.log_dir.clone();
    let stack = match LocalStack::start(options).await {
        Ok(stack) => stack,
        Err(error) => exit(&error),
    };
    eprintln!("local-stack: {llm}");
    eprintln!("local-stack: {example}");
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
    let mut number = local_stack::local::PHONE_NUMBER_ID.to_owned();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line { Ok(Some(line)) => line, _ => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(choice) = text.strip_prefix("/number") {
            match choose_number(stack, choice) {
                Ok(chosen) => {
                    println!("(writing to {} · {})", chosen.name, chosen.id);
                    number.clone_from(&chosen.id);
                }
                Err(error) => println!("! {error}"),
            }
            continue;
        }
        let (status, wait) = match command(stack, &number, USER, text).await {
            Ok(sent) => sent,
            Err(error) => {
                println!("! {error}");
                continue;
            }
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
                if event.kind == "tool" {
                    println!("{}", event.data["text"].as_str().unwrap_or_default());
                }
                if event.kind == "reply" {
                    let text = event.data["text"].as_str().unwrap_or_default();
                    // A message to someone else (the handoff agent) is shown as such.
                    match event.user.as_deref() {
                        Some(to) if to != USER => println!("bot → +{to}> {text}"),
                        _ => println!("bot> {text}"),
                    }
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

/// The business number `/number N` names: the Nth of the stack's numbers (from 1), or one's
/// `phone_number_id`.
fn choose_number<'s>(stack: &'s LocalStack, choice: &str) -> Result<&'s Number, String> {
    let numbers = stack.numbers();
    let choice = choice.trim();
    let found = match choice.parse::<usize>() {
        Ok(n) if (1..=numbers.len()).contains(&n) => numbers.get(n - 1),
        _ => numbers.iter().find(|n| n.id == choice),
    };
    found.ok_or_else(|| {
        let known: Vec<String> = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{} {} ({})", i + 1, n.name, n.id))
            .collect();
        format!("/number N: one of {}", known.join(", "))
    })
}

/// Does what one line of input says, writing to business `number`; returns the webhook's
/// status and how long to wait for a reply, or what is wrong with the line.
async fn command(
    stack: &LocalStack,
    number: &str,
    user: &str,
    line: &str,
) -> Result<(u16, Duration), String> {
    const NAME: &str = "Terminal user";
    let reply_wait = Duration::from_secs(90);
    if line == "/resend" {
        return Ok((stack.resend().await.unwrap_or(0), Duration::from_secs(3)));
    }
    if let Some(rest) = line.strip_prefix("/send ") {
        let upload = upload(rest)?;
        let status = stack
            .send_file(number, user, NAME, upload)
            .await
            .map_err(|e| e.to_string())?;
        return Ok((status, reply_wait));
    }
    if let Some(rest) = line.strip_prefix("/location ") {
        let status = stack
            .send_location(number, user, NAME, location(rest)?)
            .await;
        return Ok((status, reply_wait));
    }
    Ok((stack.send_to(number, user, NAME, line).await, reply_wait))
}

/// The file `/send PATH [caption]` names, read.
fn upload(arguments: &str) -> Result<Upload, String> {
    let (path, caption) = match arguments.trim().split_once(char::is_whitespace) {
        Some((path, caption)) => (path, Some(caption.trim().to_owned())),
        None => (arguments.trim(), None),
    };
    let path = PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mime_type = mime_type(&extension).ok_or_else(|| {
        format!(
            "{}: unknown kind of file (.png .jpg .webp .pdf .txt .csv .ogg .opus .mp3 .m4a .mp4)",
            path.display()
        )
    })?;
    Ok(Upload {
        bytes: bytes.into(),
        mime_type: mime_type.to_owned(),
        filename: path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_owned(),
        caption: caption.filter(|c| !c.is_empty()),
        voice: matches!(extension.as_str(), "ogg" | "opus"),
    })
}

/// The MIME type WhatsApp gives a file with this extension.
fn mime_type(extension: &str) -> Option<&'static str> {
    Some(match extension {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "ogg" | "opus" => "audio/ogg; codecs=opus",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// The location `/location LAT LON [name]` names.
fn location(arguments: &str) -> Result<Location, String> {
    let mut words = arguments.split_whitespace();
    let mut degrees = |what: &str, limit: f64| {
        words
            .next()
            .and_then(|w| w.parse::<f64>().ok())
            .filter(|d| d.abs() <= limit)
            .ok_or_else(|| format!("/location needs a {what} in degrees: /location LAT LON [name]"))
    };
    let latitude = degrees("latitude", 90.0)?;
    let longitude = degrees("longitude", 180.0)?;
    let name = words.collect::<Vec<_>>().join(" ");
    Ok(Location {
        latitude,
        longitude,
        name: (!name.is_empty()).then_some(name),
    })
}

fn exit(message: &str) -> ! {
    eprintln!("local-stack: {message}\n{USAGE}");
    std::process::exit(2)
}
