//! Media on the local stack end to end, in terminal mode: a photo, a PDF, a voice note and a
//! location go through the webhook, the Graph API stand-in's two-step media flow, the
//! processor's steps and the offline stand-ins (transcriber, LLM), whose answers name what they
//! received. The sample files are made here: a real PNG, a one-page PDF and an OGG/Opus voice
//! note of silence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod samples;

/// Reads lines until one that starts a reply, says there was none, or reports an error.
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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_photo_a_pdf_a_voice_note_and_a_location_each_get_an_answer_naming_them() {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("run under tests/with-moto.sh (make test)");
    let dir = std::env::temp_dir().join(testkit::unique_name("media-samples"));
    std::fs::create_dir_all(&dir).unwrap();
    let (png, pdf, ogg) = (samples::png(), samples::pdf(), samples::ogg_opus());
    let photo = write(&dir, "photo.png", &png);
    let menu = write(&dir, "menu.pdf", &pdf);
    let voice = write(&dir, "voice.ogg", &ogg);
    let missing = dir.join("missing.png").display().to_string();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-stack"))
        .args(["--terminal", "--port", "0", "--aws-endpoint", &endpoint])
        .args(["--stack-name", &testkit::unique_name("media")])
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
    for line in [
        format!("/send {photo} what is in this picture?"),
        format!("/send {menu} prices?"),
        format!("/send {voice}"),
        "/location 41.1496 -8.611 Livraria Lello".to_owned(),
        format!("/send {missing}"),
    ] {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        answers.push(next_answer(&mut lines).await);
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(matches!(status, Ok(Ok(s)) if s.success()), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        answers[0].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[image] what is in this picture?". I received an image (image/png, {} bytes)."#,
            png.len()
        )),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[document menu.pdf] prices?". I received a file (application/pdf, {} bytes)."#,
            pdf.len()
        )),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[voice note] [stand-in transcript] a voice note of {} bytes"."#,
            ogg.len()
        )),
        "{}",
        answers[2]
    );
    assert!(
        answers[3].starts_with(
            r#"bot> [offline stand-in] You said: "[location] Livraria Lello (latitude 41.149600, longitude -8.611000)"."#
        ),
        "{}",
        answers[3]
    );
    assert!(
        answers[3].contains(
            r#"I remember 3 earlier message(s); your first was: "[image] what is in this picture?""#
        ),
        "the memory keeps the media's text turns: {}",
        answers[3]
    );
    assert!(
        answers[4].starts_with("! cannot read ") && answers[4].contains("missing.png"),
        "a missing file is said so: {}",
        answers[4]
    );
}
