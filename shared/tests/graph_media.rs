//! Downloading a user's media through the Graph API adapter, against a local
//! [`RecordingServer`] that serves Meta's two steps (the media id's details, then the file at
//! the URL they name), asserting on what was actually asked.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use shared::inbound::MediaKind;
use shared::retry::Backoff;
use shared::secrets::{AppSecrets, SecretString, StaticSecrets};
use shared::whatsapp::WhatsAppError;
use shared::whatsapp::graph::{GraphApi, GraphSettings};
use shared::whatsapp::media::{MediaError, MediaLimits, MediaSource};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};
use tokio::time::Instant;

const TOKEN: &str = "EAAG-media-token-7c1d";
const MEDIA_ID: &str = "1037543291543636";
const PNID: &str = "106540352242922";

/// A few bytes that start like an OGG file.
fn voice_note() -> Vec<u8> {
    let mut bytes = b"OggS\0\x02".to_vec();
    bytes.extend((0..2000u32).map(|i| (i % 251) as u8));
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stand-in serving the media id's details and the file, as `file` answers it.
async fn meta_serving(
    mime_type: &str,
    declared_sha256: String,
    file: impl Fn() -> Canned + Send + Sync + 'static,
) -> RecordingServer {
    let mime_type = mime_type.to_owned();
    let base = Arc::new(std::sync::OnceLock::<String>::new());
    let for_responder = base.clone();
    let server = RecordingServer::start(move |request: &RecordedRequest| {
        if request.path.starts_with("/v23.0/") {
            let url = format!("{}/lookaside/file?ext=1", for_responder.get().unwrap());
            Canned::json(
                200,
                json!({"messaging_product": "whatsapp", "url": url, "mime_type": mime_type,
                       "sha256": declared_sha256, "file_size": "2006", "id": MEDIA_ID}),
            )
        } else {
            file()
        }
    })
    .await;
    base.set(server.url.clone()).unwrap();
    server
}

fn graph(server: &RecordingServer) -> GraphApi<StaticSecrets> {
    let secrets = Arc::new(StaticSecrets(Arc::new(AppSecrets {
        meta_access_token: Some(SecretString::new(TOKEN)),
        ..AppSecrets::default()
    })));
    let settings = GraphSettings {
        base_url: server.url.clone(),
        api_version: "v23.0".into(),
        timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 3,
        },
    };
    GraphApi::new(reqwest::Client::new(), settings, secrets)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[tokio::test]
async fn a_voice_note_is_fetched_in_meta_two_steps_with_the_token_on_both() {
    let bytes = voice_note();
    let served = bytes.clone();
    let meta = meta_serving("audio/ogg; codecs=opus", sha256(&bytes), move || {
        Canned::bytes(200, "audio/ogg", served.clone())
    })
    .await;
    let limits = MediaLimits::for_kind(MediaKind::Audio);
    let media = graph(&meta)
        .download(PNID, MEDIA_ID, &limits, soon())
        .await
        .unwrap();
    assert_eq!(media.bytes, bytes);
    assert_eq!(media.mime_type, "audio/ogg");
    let requests = meta.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, format!("/v23.0/{MEDIA_ID}"));
    assert_eq!(requests[1].path, "/lookaside/file?ext=1");
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
}

#[tokio::test]
async fn a_file_whose_bytes_do_not_match_metas_sha256_is_fetched_again_then_refused() {
    let meta = meta_serving("audio/ogg", sha256(b"the real file"), || {
        Canned::bytes(200, "audio/ogg", b"a truncated fi".to_vec())
    })
    .await;
    let limits = MediaLimits::for_kind(MediaKind::Audio);
    let outcome = graph(&meta).download(PNID, MEDIA_ID, &limits, soon()).await;
    assert_eq!(outcome, Err(MediaError::ChecksumMismatch));
    assert!(!MediaError::ChecksumMismatch.is_final());
    assert_eq!(meta.requests().len(), 6, "three attempts of both steps");
}

#[tokio::test]
async fn a_refused_type_or_a_declared_size_over_the_cap_is_final_before_any_byte() {
    let meta = meta_serving("application/x-msdownload", String::new(), || {
        Canned::bytes(200, "application/octet-stream", vec![0; 10])
    })
    .await;
    let limits = MediaLimits::for_kind(MediaKind::Document);
    let outcome = graph(&meta).download(PNID, MEDIA_ID, &limits, soon()).await;
    assert_eq!(
        outcome,
        Err(MediaError::TypeNotAllowed(
            "application/x-msdownload".into()
        ))
    );
    assert_eq!(
        meta.requests().len(),
        1,
        "the file itself is never asked for"
    );

    let big = meta_serving("audio/ogg", String::new(), || {
        Canned::bytes(200, "audio/ogg", vec![0; 10])
    })
    .await;
    let tiny = MediaLimits {
        max_bytes: 1000,
        ..MediaLimits::for_kind(MediaKind::Audio)
    };
    let outcome = graph(&big).download(PNID, MEDIA_ID, &tiny, soon()).await;
    assert_eq!(outcome, Err(MediaError::TooLarge { max: 1000 }));
    assert_eq!(big.requests().len(), 1, "Meta said 2006 bytes");
}

#[tokio::test]
async fn a_file_larger_than_declared_is_cut_off_at_the_cap() {
    let meta = meta_serving("image/png", String::new(), || {
        Canned::bytes(200, "image/png", vec![7; 3000])
    })
    .await;
    let limits = MediaLimits {
        max_bytes: 2500,
        ..MediaLimits::for_kind(MediaKind::Image)
    };
    let outcome = graph(&meta).download(PNID, MEDIA_ID, &limits, soon()).await;
    assert_eq!(outcome, Err(MediaError::TooLarge { max: 2500 }));
    assert!(outcome.unwrap_err().is_final());
}

#[tokio::test]
async fn an_expired_url_is_retried_with_fresh_details_and_a_bad_token_is_final() {
    let bytes = voice_note();
    let served = bytes.clone();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let meta = meta_serving("audio/ogg", sha256(&bytes), move || {
        // The first URL has expired (it lives 5 minutes): 404; the next one works.
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Canned::json(404, json!({"error": "URL signature expired"}))
        } else {
            Canned::bytes(200, "audio/ogg", served.clone())
        }
    })
    .await;
    let limits = MediaLimits::for_kind(MediaKind::Audio);
    let media = graph(&meta)
        .download(PNID, MEDIA_ID, &limits, soon())
        .await
        .unwrap();
    assert_eq!(media.bytes, bytes);
    assert_eq!(meta.requests().len(), 4, "details and file, twice");

    let refused = RecordingServer::start(|_: &RecordedRequest| {
        Canned::json(
            401,
            json!({"error": {"message": "Error validating access token", "type": "OAuthException",
                "code": 190}}),
        )
    })
    .await;
    let outcome = graph(&refused)
        .download(PNID, MEDIA_ID, &limits, soon())
        .await;
    assert!(
        matches!(
            &outcome,
            Err(MediaError::Graph(WhatsAppError::Api {
                code: Some(190),
                ..
            }))
        ),
        "{outcome:?}"
    );
    assert_eq!(refused.requests().len(), 1, "not retried");
    let text = format!("{:?}", outcome.unwrap_err());
    assert!(!text.contains(TOKEN), "{text}");
}

/// Media sent to a number with its own token is read with that token, on both steps.
#[tokio::test]
async fn a_number_with_its_own_token_downloads_with_it() {
    let bytes = voice_note();
    let served = bytes.clone();
    let meta = meta_serving("audio/ogg", sha256(&bytes), move || {
        Canned::bytes(200, "audio/ogg", served.clone())
    })
    .await;
    let secrets = AppSecrets::from_json(&format!(
        r#"{{"META_ACCESS_TOKEN":"{TOKEN}","META_ACCESS_TOKEN_{PNID}":"token-of-b"}}"#
    ))
    .unwrap();
    let api = GraphApi::new(
        reqwest::Client::new(),
        GraphSettings {
            base_url: meta.url.clone(),
            api_version: "v23.0".into(),
            timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
        },
        Arc::new(StaticSecrets(Arc::new(secrets))),
    );
    let limits = MediaLimits::for_kind(MediaKind::Audio);
    api.download(PNID, MEDIA_ID, &limits, soon()).await.unwrap();
    api.download("111", MEDIA_ID, &limits, soon())
        .await
        .unwrap();
    let requests = meta.requests();
    let tokens: Vec<Option<&str>> = requests
        .iter()
        .map(|r| {
            r.header("authorization")
                .map(|h| h.trim_start_matches("Bearer "))
        })
        .collect();
    assert_eq!(
        tokens,
        vec![
            Some("token-of-b"),
            Some("token-of-b"),
            Some(TOKEN),
            Some(TOKEN)
        ]
    );
}
