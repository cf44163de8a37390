//! The local stack end to end, in terminal mode: the real binaries, moto, the offline LLM
//! stand-in. Three messages from one user get three replies, the third showing that the first
//! was remembered; a duplicate delivery gets no second reply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Reads lines until one that starts a reply or says there was none.
async fn next_answer(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("bot> ") || line == "(no reply)" || line.starts_with("! ") {
                return line;
            }
        }
        "(the local stack stopped)".to_owned()
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap_or_else(|_| "(timed out)".to_owned())
}

#[tokio::test]
async fn three_messages_three_replies_with_memory_and_no_reply_to_a_duplicate() {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("run under tests/with-moto.sh (make test)");
    let stack_name = testkit::unique_name("terminal");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-stack"))
        .args([
            "--terminal",
            "--port",
            "0",
            "--aws-endpoint",
            &endpoint,
            "--stack-name",
            &stack_name,
        ])
        .env_remove("LLM_API_KEY")
        .env_remove("LLM_BASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the local stack starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut answers = Vec::new();
    for message in [
        "My name is Ana",
        "I live in Porto",
        "What is my name?",
        "/resend",
    ] {
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        answers.push(next_answer(&mut lines).await);
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the local stack stops at the end of its input: {status:?}"
    );

    assert_eq!(
        answers[0],
        r#"bot> [offline stand-in] You said: "My name is Ana"."#
    );
    assert_eq!(
        answers[1],
        r#"bot> [offline stand-in] You said: "I live in Porto". I remember 1 earlier message(s); your first was: "My name is Ana"."#
    );
    assert!(
        answers[2].contains(r#"your first was: "My name is Ana""#),
        "{}",
        answers[2]
    );
    assert_eq!(
        answers[3], "(no reply)",
        "a duplicate delivery gets no second reply"
    );
}
