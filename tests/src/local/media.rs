//! Media on the local stack: the files simulator users send, kept in memory, and the Graph API's
//! two-step media flow that the processor downloads them through, as Meta serves it:
//! - `GET /graph/{version}/{media-id}` with the access token gives the file's `url`,
//!   `mime_type`, `sha256` (hex, as the processor's adapter checks it), `file_size` and `id`;
//! - `GET url` with the same token gives the bytes, for [`URL_LIFETIME`]; after that the URL
//!   answers 404 and a fresh one must be asked for.
//!
//! A call without the token answers 401 as Meta does (OAuth error code 190); an unknown media id
//! answers 400 (code 100), which the processor takes as final.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::inbound::MediaKind;
use shared::whatsapp::media::{MediaLimits, essence};

use crate::resources::LOCAL_SECRET;

/// How long a media URL answers, as Meta's do.
pub const URL_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How many files are kept; the oldest goes first.
const MAX_FILES: usize = 32;

/// The most bytes one file may have: the largest cap the processor holds any kind to, so that
/// the processor's own limits decide what it takes.
pub fn max_file_bytes() -> u64 {
    [
        MediaKind::Audio,
        MediaKind::Image,
        MediaKind::Document,
        MediaKind::Video,
        MediaKind::Sticker,
    ]
    .into_iter()
    .map(|kind| MediaLimits::for_kind(kind).max_bytes)
    .max()
    .unwrap_or(16 * 1024 * 1024)
}

/// Why a file was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// The file is larger than any kind of media the processor takes.
    #[error("the file has {size} bytes; the most is {max}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The most taken.
        max: u64,
    },
}

/// A file a user sent, as kept.
#[derive(Clone)]
struct StoredFile {
    bytes: Bytes,
    mime_type: String,
}

/// What the webhook message of a stored file says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMedia {
    /// The media id.
    pub id: String,
    /// The SHA-256 in base64, as Meta's webhooks carry it.
    pub sha256_base64: String,
}

/// The files simulator users sent, and the short-lived URLs they are served at.
pub struct MediaStore {
    base_url: String,
    url_lifetime: Duration,
    files: Mutex<(HashMap<String, StoredFile>, VecDeque<String>)>,
    urls: Mutex<HashMap<String, (String, Instant)>>,
    counter: AtomicU64,
}

impl MediaStore {
    /// A store whose file URLs start with `base_url` and answer for `url_lifetime`.
    pub fn new(base_url: String, url_lifetime: Duration) -> Self {
        Self {
            base_url,
            url_lifetime,
            files: Mutex::new((HashMap::new(), VecDeque::new())),
            urls: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Keeps `bytes` of type `mime_type`; returns the new media id and the file's hash.
    pub fn store(&self, bytes: Bytes, mime_type: &str) -> Result<StoredMedia, UploadError> {
        let size = bytes.len() as u64;
        if size == 0 {
            return Err(UploadError::Empty);
        }
        let max = max_file_bytes();
        if size > max {
            return Err(UploadError::TooLarge { size, max });
        }
        let id = format!("{}", 9_100_000_000_000 + self.next());
        let sha256_base64 =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
        let file = StoredFile {
            bytes,
            mime_type: mime_type.to_owned(),
        };
        let mut files = self.files.lock().expect("media lock");
        let (by_id, order) = &mut *files;
        by_id.insert(id.clone(), file);
        order.push_back(id.clone());
        while order.len() > MAX_FILES {
            if let Some(oldest) = order.pop_front() {
                by_id.remove(&oldest);
            }
        }
        Ok(StoredMedia { id, sha256_base64 })
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn file(&self, id: &str) -> Option<StoredFile> {
        self.files.lock().expect("media lock").0.get(id).cloned()
    }

    /// A fresh URL for media `id`, answering for the store's URL lifetime.
    fn url_for(&self, id: &str) -> String {
        let now = Instant::now();
        let seed = format!("{id}:{}:{:?}", self.next(), std::time::SystemTime::now());
        let token = hex::encode(Sha256::digest(seed.as_bytes()));
        let mut urls = self.urls.lock().expect("media lock");
        urls.retain(|_, (_, expires)| *expires > now);
        urls.insert(token.clone(), (id.to_owned(), now + self.url_lifetime));
        format!("{}/graph-media/{token}", self.base_url)
    }

    /// The media id a URL token stands for, while it answers.
    fn resolve(&self, token: &str) -> Option<String> {
        let urls = self.urls.lock().expect("media lock");
        let (id, expires) = urls.get(token)?;
        (Instant::now() < *expires).then(|| id.clone())
    }
}

/// The kind of media a file of type `mime_type` is sent as.
pub fn kind_of(mime_type: &str) -> MediaKind {
    let essence = essence(mime_type);
    match essence.split('/').next().unwrap_or_default() {
        "image" => MediaKind::Image,
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        _ => MediaKind::Document,
    }
}

/// The media routes: the media id's details and the file.
pub fn routes() -> axum::Router<Arc<MediaStore>> {
    axum::Router::new()
        // Named as in the messages route: a Graph node is a phone number or a media file.
        .route("/graph/{version}/{node_id}", get(media_info))
        .route("/graph-media/{token}", get(media_file))
}

/// Whether the request carries the local access token.
fn authorised(headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", LOCAL_SECRET[2].1);
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

/// Meta's error answer.
fn meta_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "fbtrace_id": "LOCAL"}});
    (status, axum::Json(body)).into_response()
}

fn unauthorised() -> Response {
    meta_error(
        StatusCode::UNAUTHORIZED,
        190,
        "Invalid OAuth access token - Cannot parse access token",
    )
}

async fn media_info(
    State(store): State<Arc<MediaStore>>,
    UrlPath((_version, media_id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let Some(file) = store.file(&media_id) else {
        return meta_error(
            StatusCode::BAD_REQUEST,
            100,
            "Unsupported get request. Object with ID does not exist",
        );
    };
    let info: Value = json!({"messaging_product": "whatsapp", "url": store.url_for(&media_id),
        "mime_type": file.mime_type, "sha256": hex::encode(Sha256::digest(&file.bytes)),
        "file_size": file.bytes.len(), "id": media_id});
    axum::Json(info).into_response()
}

async fn media_file(
    State(store): State<Arc<MediaStore>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let Some(file) = store.resolve(&token).and_then(|id| store.file(&id)) else {
        // Meta's URLs answer 404 once expired: a fresh one is asked for.
        return (StatusCode::NOT_FOUND, "the media URL has expired").into_response();
    };
    ([(header::CONTENT_TYPE, file.mime_type)], file.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::retry::Backoff;
    use shared::secrets::{AppSecrets, SecretString, StaticSecrets};
    use shared::whatsapp::graph::{GraphApi, GraphSettings};
    use shared::whatsapp::media::{MediaError, MediaSource};
    use shared::whatsapp::{MetaErrorClass, WhatsAppError};

    const PNG_BYTES: &[u8] = b"\x89PNG\r\n\x1a\n not really a picture";

    /// The media routes served on a free port, with URLs that answer for `url_lifetime`.
    async fn serve(url_lifetime: Duration) -> (String, Arc<MediaStore>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let store = Arc::new(MediaStore::new(base_url.clone(), url_lifetime));
        let app = routes().with_state(store.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base_url, store)
    }

    fn graph(base_url: &str, token: &str) -> GraphApi<StaticSecrets> {
        let secrets = Arc::new(StaticSecrets(Arc::new(AppSecrets {
            meta_access_token: Some(SecretString::new(token)),
            ..AppSecrets::default()
        })));
        let settings = GraphSettings {
            base_url: format!("{base_url}/graph"),
            api_version: "v23.0".into(),
            timeout: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(20),
                max_attempts: 3,
            },
        };
        GraphApi::new(reqwest::Client::new(), settings, secrets)
    }

    async fn download(api: &GraphApi<StaticSecrets>, id: &str) -> Result<Vec<u8>, MediaError> {
        let limits = MediaLimits::for_kind(MediaKind::Image);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        api.download("PNID", id, &limits, deadline)
            .await
            .map(|m| m.bytes)
    }

    #[tokio::test]
    async fn the_processor_downloads_a_file_in_two_steps_with_the_token() {
        let (base_url, store) = serve(URL_LIFETIME).await;
        let stored = store
            .store(Bytes::from_static(PNG_BYTES), "image/png")
            .unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(PNG_BYTES));
        assert_eq!(stored.sha256_base64, expected, "webhooks carry base64");

        let api = graph(&base_url, LOCAL_SECRET[2].1);
        assert_eq!(download(&api, &stored.id).await.unwrap(), PNG_BYTES);

        let client = reqwest::Client::new();
        let info_url = format!("{base_url}/graph/v23.0/{}", stored.id);
        let unauthorised = client.get(&info_url).send().await.unwrap();
        assert_eq!(unauthorised.status(), 401);
        let info: Value = client
            .get(&info_url)
            .bearer_auth(LOCAL_SECRET[2].1)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["sha256"], hex::encode(Sha256::digest(PNG_BYTES)));
        assert_eq!(info["file_size"], PNG_BYTES.len());
        let file_url = info["url"].as_str().unwrap();
        assert_eq!(client.get(file_url).send().await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn a_wrong_token_is_meta_s_token_error_and_an_unknown_id_is_final() {
        let (base_url, store) = serve(URL_LIFETIME).await;
        let stored = store
            .store(Bytes::from_static(PNG_BYTES), "image/png")
            .unwrap();

        let wrong = download(&graph(&base_url, "not-the-token"), &stored.id).await;
        assert!(
            matches!(
                &wrong,
                Err(MediaError::Graph(WhatsAppError::Api {
                    http_status: 401,
                    code: Some(190),
                    ..
                }))
            ),
            "{wrong:?}"
        );
        // The operator's to fix: the processor keeps the messages for a retry.
        let MediaError::Graph(error) = wrong.unwrap_err() else {
            unreachable!()
        };
        assert_eq!(error.class(), MetaErrorClass::TokenExpired);
        let unknown = download(&graph(&base_url, LOCAL_SECRET[2].1), "404404").await;
        assert!(
            matches!(
                &unknown,
                Err(MediaError::Graph(WhatsAppError::Api {
                    http_status: 400,
                    code: Some(100),
                    ..
                }))
            ),
            "{unknown:?}"
        );
        assert!(unknown.unwrap_err().is_final());
    }

    #[tokio::test]
    async fn an_expired_url_answers_404_which_is_retried_with_a_fresh_url_a_bounded_number_of_times()
     {
        let (base_url, store) = serve(Duration::ZERO).await;
        let stored = store
            .store(Bytes::from_static(PNG_BYTES), "image/png")
            .unwrap();
        let expired = download(&graph(&base_url, LOCAL_SECRET[2].1), &stored.id).await;
        match expired {
            Err(MediaError::Graph(WhatsAppError::Transport(detail))) => {
                assert!(detail.contains("404"), "{detail}")
            }
            other => panic!("an expired URL is a failure to reach Meta: {other:?}"),
        }
        // The URLs handed out are forgotten once expired.
        assert!(store.urls.lock().unwrap().len() <= 1);
    }

    #[test]
    fn files_are_bounded_and_sent_as_their_kind() {
        let store = MediaStore::new("http://x".into(), URL_LIFETIME);
        assert_eq!(
            store.store(Bytes::new(), "image/png"),
            Err(UploadError::Empty)
        );
        let big = Bytes::from(vec![0u8; usize::try_from(max_file_bytes()).unwrap() + 1]);
        assert!(matches!(
            store.store(big, "video/mp4"),
            Err(UploadError::TooLarge { .. })
        ));
        for _ in 0..MAX_FILES + 3 {
            store.store(Bytes::from_static(b"x"), "text/plain").unwrap();
        }
        assert_eq!(store.files.lock().unwrap().0.len(), MAX_FILES);
        assert_eq!(kind_of("audio/ogg; codecs=opus"), MediaKind::Audio);
        assert_eq!(kind_of("IMAGE/PNG"), MediaKind::Image);
        assert_eq!(kind_of("application/pdf"), MediaKind::Document);
        assert_eq!(kind_of("text/csv"), MediaKind::Document);
    }
}
