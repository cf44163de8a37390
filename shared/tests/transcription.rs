//! The OpenAI-compatible transcription adapter against a local [`RecordingServer`], asserting
//! on the multipart request actually sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared::retry::Backoff;
use shared::secrets::{AppSecrets, SecretString, StaticSecrets};
use shared::transcription::{
    Audio, OpenAiTranscriber, Transcriber, TranscriptionError, TranscriptionSettings,
};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};
use tokio::time::Instant;

const OGG: &[u8] = b"OggS\x00\x02 a voice note";

fn transcriber(
    server: &RecordingServer,
    llm_key: Option<&str>,
    transcription_key: Option<&str>,
) -> OpenAiTranscriber<StaticSecrets> {
    let secrets = Arc::new(StaticSecrets(Arc::new(AppSecrets {
        llm_api_key: llm_key.map(SecretString::new),
        transcription_api_key: transcription_key.map(SecretString::new),
        ..AppSecrets::default()
    })));
    let settings = TranscriptionSettings {
        base_url: format!("{}/v1/", server.url),
        model: "whisper-large-v3-turbo".into(),
        timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 3,
        },
    };
    OpenAiTranscriber::new(reqwest::Client::new(), settings, secrets)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn voice_note() -> Audio<'static> {
    Audio {
        bytes: OGG,
        mime_type: "audio/ogg",
    }
}

#[tokio::test]
async fn a_voice_note_goes_as_an_ogg_file_with_the_model_and_the_llm_key() {
    let server = RecordingServer::start(|_: &RecordedRequest| {
        Canned::json(
            200,
            json!({"text": "  I would like to book a table for two.  "}),
        )
    })
    .await;
    let text = transcriber(&server, Some("sk-llm"), None)
        .transcribe(voice_note(), soon())
        .await
        .unwrap();
    assert_eq!(text, "I would like to book a table for two.");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v1/audio/transcriptions");
    assert_eq!(request.header("authorization"), Some("Bearer sk-llm"));
    assert!(
        request
            .header("content-type")
            .is_some_and(|t| t.starts_with("multipart/form-data; boundary=")),
        "{:?}",
        request.header("content-type")
    );
    let body = String::from_utf8_lossy(&request.body);
    assert!(
        body.contains(r#"name="file"; filename="voice-note.ogg""#),
        "{body}"
    );
    assert!(body.contains("Content-Type: audio/ogg"), "{body}");
    assert!(body.contains("OggS"), "the file's bytes");
    assert!(
        body.contains("name=\"model\"\r\n\r\nwhisper-large-v3-turbo"),
        "{body}"
    );
}

#[tokio::test]
async fn its_own_key_wins_and_throttling_is_retried() {
    let server =
        RecordingServer::start(|_: &RecordedRequest| Canned::json(200, json!({"text": "hola"})))
            .await;
    server.script([Canned::json(
        429,
        json!({"error": {"message": "slow down"}}),
    )]);
    let text = transcriber(&server, Some("sk-llm"), Some("gsk-groq"))
        .transcribe(
            Audio {
                bytes: OGG,
                mime_type: "audio/opus",
            },
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(text, "hola");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the 429 was retried");
    assert_eq!(requests[1].header("authorization"), Some("Bearer gsk-groq"));
    assert!(String::from_utf8_lossy(&requests[1].body).contains("Content-Type: audio/ogg"));
}

#[tokio::test]
async fn a_refusal_is_final_and_a_local_server_needs_no_key() {
    let server = RecordingServer::start(|_: &RecordedRequest| {
        Canned::json(
            400,
            json!({"error": {"message": "Audio file is too short"}}),
        )
    })
    .await;
    let outcome = transcriber(&server, None, None)
        .transcribe(voice_note(), soon())
        .await;
    assert!(
        matches!(&outcome, Err(e @ TranscriptionError::Status { status: 400, .. }) if e.is_final()),
        "{outcome:?}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "not retried");
    assert_eq!(requests[0].header("authorization"), None);
}
