//! The media a user sent (voice notes, photos, documents), downloaded as Meta specifies: the
//! [`MediaSource`] port, the limits each kind is held to, and the checks on what came back. The
//! Graph API adapter is in `graph/media.rs`.
//!
//! Meta's two steps: `GET /{version}/{media-id}` with the access token gives the file's `url`,
//! `mime_type`, `sha256` and `file_size`; `GET url` with the same token gives the bytes (the URL
//! is valid for 5 minutes, the media id for 7 days). A file is read up to its kind's cap and no
//! further, its type checked against the kind's allow-list and its bytes against Meta's SHA-256.

use std::future::Future;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{MetaErrorClass, WhatsAppError};
use crate::inbound::MediaKind;

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// What a kind of media is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLimits {
    /// The most bytes read; a larger file is refused without being read whole.
    pub max_bytes: u64,
    /// The MIME types taken (without parameters, lower case).
    pub allowed_types: Vec<String>,
}

impl MediaLimits {
    /// The defaults for `kind`, near Meta's own limits: audio 16 MiB (OGG/Opus voice notes, AAC,
    /// MP3, AMR, MP4 audio), images 5 MiB (JPEG, PNG, WebP), documents 10 MiB (PDF, plain text,
    /// CSV), video 16 MiB (MP4, 3GPP), stickers 512 KiB (WebP).
    pub fn for_kind(kind: MediaKind) -> Self {
        let (max_bytes, types): (u64, &[&str]) = match kind {
            MediaKind::Audio => (
                16 * MIB,
                &[
                    "audio/ogg",
                    "audio/opus",
                    "audio/aac",
                    "audio/mpeg",
                    "audio/amr",
                    "audio/mp4",
                ],
            ),
            MediaKind::Image => (5 * MIB, &["image/jpeg", "image/png", "image/webp"]),
            MediaKind::Document => (10 * MIB, &["application/pdf", "text/plain", "text/csv"]),
            MediaKind::Video => (16 * MIB, &["video/mp4", "video/3gpp"]),
            MediaKind::Sticker => (512 * 1024, &["image/webp"]),
        };
        Self {
            max_bytes,
            allowed_types: types.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// Whether `mime_type` (parameters such as `; codecs=opus` ignored) is taken.
    pub fn allows(&self, mime_type: &str) -> bool {
        let essence = essence(mime_type);
        self.allowed_types.contains(&essence)
    }
}

/// A MIME type without its parameters, trimmed and in lower case.
pub fn essence(mime_type: &str) -> String {
    mime_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A downloaded file.
#[derive(Clone, PartialEq, Eq)]
pub struct Media {
    /// Its bytes, checked against Meta's SHA-256.
    pub bytes: Vec<u8>,
    /// Its MIME type as Meta gave it, without parameters.
    pub mime_type: String,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bytes are the user's: their size only.
        f.debug_struct("Media")
            .field("bytes", &self.bytes.len())
            .field("mime_type", &self.mime_type)
            .finish()
    }
}

/// What Meta says of a media id (`GET /{version}/{media-id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaInfo {
    /// Where the bytes are, for 5 minutes.
    pub url: String,
    /// The file's MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// The file's SHA-256, in hex.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The file's size in bytes (Meta writes it as a number or as text).
    #[serde(default, deserialize_with = "lenient_size")]
    pub file_size: Option<u64>,
}

fn lenient_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Why a file could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// A Graph API call failed (classified as any other).
    #[error(transparent)]
    Graph(#[from] WhatsAppError),
    /// The file is larger than its kind's cap.
    #[error("the file is over the {max} bytes allowed")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// The file's type is not on its kind's allow-list.
    #[error("the file's type {0:?} is not one the bot takes")]
    TypeNotAllowed(String),
    /// The bytes do not match Meta's SHA-256 (a download cut short or altered).
    #[error("the downloaded file does not match Meta's SHA-256")]
    ChecksumMismatch,
}

impl MediaError {
    /// Whether trying again cannot help: the file is too large or of a refused type, or Meta
    /// refused the call for good. The user is told; nothing is retried.
    pub fn is_final(&self) -> bool {
        match self {
            Self::TooLarge { .. } | Self::TypeNotAllowed(_) => true,
            Self::ChecksumMismatch => false,
            Self::Graph(error) => {
                let class = error.class();
                class.is_final() || class == MetaErrorClass::Other && error.code().is_some()
            }
        }
    }
}

/// Checks what Meta says of a file before any byte is read: its type and declared size.
pub fn check_info(info: &MediaInfo, limits: &MediaLimits) -> Result<String, MediaError> {
    let mime_type = essence(info.mime_type.as_deref().unwrap_or_default());
    if !limits.allows(&mime_type) {
        return Err(MediaError::TypeNotAllowed(mime_type));
    }
    if info.file_size.is_some_and(|size| size > limits.max_bytes) {
        return Err(MediaError::TooLarge {
            max: limits.max_bytes,
        });
    }
    Ok(mime_type)
}

/// Checks downloaded `bytes` against Meta's SHA-256, written in hex (any case) or base64 (Meta
/// uses both: hex in the media's details, base64 in webhooks). A file Meta gave no hash for
/// passes, and so does one whose hash is in neither form: the bytes came from Meta over TLS, and
/// refusing them would only retry for a week.
pub fn check_sha256(bytes: &[u8], expected: Option<&str>) -> Result<(), MediaError> {
    let Some(expected) = expected.map(str::trim).and_then(sha256_digest) else {
        return Ok(());
    };
    if Sha256::digest(bytes).as_slice() == expected.as_slice() {
        Ok(())
    } else {
        Err(MediaError::ChecksumMismatch)
    }
}

/// The 32 bytes of a SHA-256 digest written in hex or base64 (standard or URL-safe alphabet).
fn sha256_digest(written: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let decoded = [
        hex::decode(written).ok(),
        STANDARD.decode(written).ok(),
        URL_SAFE.decode(written).ok(),
    ];
    decoded
        .into_iter()
        .flatten()
        .find(|digest| digest.len() == 32)
}

/// Downloading the media a user sent.
pub trait MediaSource: Send + Sync {
    /// Downloads `media_id`, sent to the business number `phone_number_id` (whose access token
    /// reads it), within `limits`, retrying what can pass, never past `deadline`.
    fn download(
        &self,
        phone_number_id: &str,
        media_id: &str,
        limits: &MediaLimits,
        deadline: Instant,
    ) -> impl Future<Output = Result<Media, MediaError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(mime_type: &str, file_size: Option<u64>) -> MediaInfo {
        MediaInfo {
            url: "https://lookaside.example/x".into(),
            mime_type: Some(mime_type.into()),
            sha256: None,
            file_size,
        }
    }

    #[test]
    fn a_voice_note_passes_and_other_types_or_sizes_do_not() {
        let audio = MediaLimits::for_kind(MediaKind::Audio);
        assert_eq!(
            check_info(&info("audio/ogg; codecs=opus", Some(12_000)), &audio),
            Ok("audio/ogg".into())
        );
        assert_eq!(
            check_info(&info("application/x-msdownload", None), &audio),
            Err(MediaError::TypeNotAllowed(
                "application/x-msdownload".into()
            ))
        );
        assert_eq!(
            check_info(&info("audio/ogg", Some(16 * MIB + 1)), &audio),
            Err(MediaError::TooLarge { max: 16 * MIB })
        );
        let image = MediaLimits::for_kind(MediaKind::Image);
        assert!(image.allows(" IMAGE/JPEG "));
        assert!(!image.allows("image/svg+xml"), "no scripts in images");
        assert!(
            check_info(
                &MediaInfo {
                    mime_type: None,
                    ..info("", None)
                },
                &image
            )
            .is_err()
        );
    }

    #[test]
    fn meta_writes_the_size_as_a_number_or_as_text() {
        let read = |json: &str| serde_json::from_str::<MediaInfo>(json).unwrap().file_size;
        assert_eq!(read(r#"{"url":"u","file_size":123}"#), Some(123));
        assert_eq!(read(r#"{"url":"u","file_size":"456"}"#), Some(456));
        assert_eq!(read(r#"{"url":"u","file_size":"big"}"#), None);
        assert_eq!(read(r#"{"url":"u"}"#), None);
    }

    #[test]
    fn the_checksum_is_compared_in_any_case() {
        let bytes = b"OggS voice";
        let hash = hex::encode(Sha256::digest(bytes));
        assert_eq!(check_sha256(bytes, Some(&hash)), Ok(()));
        assert_eq!(check_sha256(bytes, Some(&hash.to_uppercase())), Ok(()));
        assert_eq!(
            check_sha256(b"cut sh", Some(&hash)),
            Err(MediaError::ChecksumMismatch)
        );
        assert_eq!(check_sha256(bytes, None), Ok(()));
    }

    #[test]
    fn the_checksum_may_be_base64_as_in_webhooks() {
        use base64::Engine;
        let bytes = b"a voice note";
        let digest = Sha256::digest(bytes);
        let standard = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(check_sha256(bytes, Some(&standard)), Ok(()));
        assert_eq!(
            check_sha256(b"another", Some(&standard)),
            Err(MediaError::ChecksumMismatch)
        );
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(digest);
        assert_eq!(check_sha256(bytes, Some(&url_safe)), Ok(()));
        // Neither form of a digest (as in some samples): nothing to compare with.
        assert_eq!(check_sha256(bytes, Some("4654+8g=")), Ok(()));
        assert_eq!(check_sha256(bytes, Some("a1b2c3d4e5f6...")), Ok(()));
    }

    #[test]
    fn what_cannot_pass_is_final_and_what_can_is_retried() {
        assert!(MediaError::TooLarge { max: 1 }.is_final());
        assert!(MediaError::TypeNotAllowed("x".into()).is_final());
        assert!(!MediaError::ChecksumMismatch.is_final());
        let api = |http_status, code| {
            MediaError::Graph(WhatsAppError::Api {
                http_status,
                code,
                message: "m".into(),
                retry_after: None,
            })
        };
        assert!(api(400, Some(100)).is_final(), "an unknown media id");
        assert!(api(404, Some(131_052)).is_final());
        assert!(!api(429, Some(130_429)).is_final());
        assert!(!api(503, None).is_final());
        assert!(!MediaError::Graph(WhatsAppError::Timeout).is_final());
    }

    #[test]
    fn a_file_is_debugged_by_its_size_only() {
        let media = Media {
            bytes: b"private".to_vec(),
            mime_type: "text/plain".into(),
        };
        assert_eq!(
            format!("{media:?}"),
            r#"Media { bytes: 7, mime_type: "text/plain" }"#
        );
    }
}
