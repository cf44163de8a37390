//! A conversation with the local stack in terminal mode (`local-stack --terminal`) against the
//! moto server of `tests/with-moto.sh`, with the offline stand-ins: lines in, answers out.
#![allow(dead_code)] // Each test binary includes this module and uses a different part of it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Starts the local stack in terminal mode on a stack named after `name`, writes each of `lines`
/// after the answer to the one before, and returns the answers (`bot> …`, `(no reply)` or
/// `! …`), once the stack has stopped cleanly at the end of its input.
pub async fn converse(name: &str, lines: &[String]) -> Vec<String> {
    converse_with(name, lines, &[]).await
}

/// [`converse`] with the local stack's environment changed by `env` (a `None` value removes
/// the variable).
pub async fn converse_with(
    name: &str,
    lines: &[String],
    env: &[(&str, Option<&str>)],
) -> Vec<String> {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("run under tests/with-moto.sh (make test)");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-stack"));
    command
        .args(["--terminal", "--port", "0", "--aws-endpoint", &endpoint])
        .args(["--stack-name", &testkit::unique_name(name)])
        .env_remove("LLM_API_KEY")
        .env_remove("LLM_BASE_URL")
        .env_remove("LLM_PROVIDER");
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the local stack starts");
    let mut stdin = child.stdin.take().expect("its input");
    let mut output = BufReader::new(child.stdout.take().expect("its output")).lines();
    let mut answers = Vec::new();
    for line in lines {
        let written = stdin.write_all(format!("{line}\n").as_bytes()).await;
        written
            .and(stdin.flush().await)
            .expect("the local stack reads");
        answers.push(next_answer(&mut output).await);
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the local stack stops at the end of its input: {status:?}"
    );
    answers
}

/// Reads lines until one that starts a reply, says there was none, reports an error, or names
/// the business number now written to (`/number`).
async fn next_answer(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("bot> ")
                || line == "(no reply)"
                || line.starts_with("! ")
                || line.starts_with("(writing to ")
            {
                return line;
            }
        }
        "(the local stack stopped)".to_owned()
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap_or_else(|_| "(timed out)".to_owned())
}
