//! Voice notes to text: the [`Transcriber`] port and its adapter for the OpenAI-compatible
//! `POST {base_url}/audio/transcriptions` (multipart: the file and the model), which OpenAI,
//! Groq and local whisper.cpp / faster-whisper servers speak. Voice notes are sent as
//! `voice-note.ogg`, `audio/ogg`: some servers refuse the `.opus` name WhatsApp uses.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use tokio::time::Instant;

use crate::outbound_http::{self, CallError};
use crate::retry::{Backoff, RetryHint, Retryable, retry};
use crate::secrets::{Secrets, SecretsError};

/// The most characters of a provider's error message kept.
const MAX_MESSAGE_CHARS: usize = 300;

/// Audio to transcribe.
#[derive(Clone, Copy)]
pub struct Audio<'a> {
    /// The file's bytes.
    pub bytes: &'a [u8],
    /// Its MIME type, without parameters (`audio/ogg` for voice notes).
    pub mime_type: &'a str,
}

/// Why audio could not be transcribed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscriptionError {
    /// The provider answered with an error status.
    #[error("the transcription provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's error message, cut short.
        message: String,
        /// The `Retry-After` the provider sent, if any.
        retry_after: Option<Duration>,
    },
    /// No answer within the time allowed.
    #[error("the transcription provider did not answer in time")]
    Timeout,
    /// The connection failed.
    #[error("the transcription provider could not be reached: {0}")]
    Transport(String),
    /// The provider answered 200 with a body of an unexpected shape.
    #[error("the transcription could not be read: {0}")]
    BadResponse(String),
    /// The API key could not be read.
    #[error("the transcription API key could not be read: {0}")]
    Secrets(#[from] SecretsError),
}

impl TranscriptionError {
    /// Whether the same audio would be refused again (a 4xx other than 408 and 429): the user is
    /// told instead of the message being retried.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

impl Retryable for TranscriptionError {
    fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Status {
                status,
                retry_after,
                ..
            } if *status == 429 || *status == 408 || *status >= 500 => {
                RetryHint::honouring(*retry_after)
            }
            Self::Timeout | Self::Transport(_) => RetryHint::Backoff,
            _ => RetryHint::Never,
        }
    }
}

impl From<CallError> for TranscriptionError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Timeout
            | CallError::Unanswered {
                timed_out: true, ..
            } => Self::Timeout,
            CallError::Transport(detail) | CallError::Unanswered { detail, .. } => {
                Self::Transport(detail)
            }
        }
    }
}

/// Turning speech into text.
pub trait Transcriber: Send + Sync {
    /// The text spoken in `audio`, retrying transient failures, never past `deadline`.
    fn transcribe(
        &self,
        audio: Audio<'_>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, TranscriptionError>> + Send;
}

/// How [`OpenAiTranscriber`] reaches its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptionSettings {
    /// The API's base URL (`https://api.openai.com/v1`, `https://api.groq.com/openai/v1`, a local
    /// server's); a trailing `/` is ignored.
    pub base_url: String,
    /// The model, such as `whisper-1` or `whisper-large-v3-turbo`.
    pub model: String,
    /// The longest one attempt may take.
    pub timeout: Duration,
    /// How failed attempts are retried.
    pub backoff: Backoff,
}

/// [`Transcriber`] over an OpenAI-compatible `/audio/transcriptions` endpoint, with the key
/// `TRANSCRIPTION_API_KEY` from the secrets, else `LLM_API_KEY` (none for a local server).
pub struct OpenAiTranscriber<S> {
    http: reqwest::Client,
    settings: TranscriptionSettings,
    secrets: Arc<S>,
}

impl<S> OpenAiTranscriber<S> {
    /// A transcriber sending through `http` as `settings` say. Does no I/O.
    pub fn new(http: reqwest::Client, settings: TranscriptionSettings, secrets: Arc<S>) -> Self {
        Self {
            http,
            settings,
            secrets,
        }
    }
}

/// The file name audio is sent under: voice notes (and any OGG) as `.ogg`.
pub fn file_name(mime_type: &str) -> &'static str {
    match mime_type {
        "audio/ogg" | "audio/opus" => "voice-note.ogg",
        "audio/mpeg" => "audio.mp3",
        "audio/mp4" | "audio/aac" => "audio.m4a",
        "audio/amr" => "audio.amr",
        _ => "audio.ogg",
    }
}

#[derive(Deserialize)]
struct TranscriptionResponse {
    text: Option<String>,
}

impl<S: Secrets> Transcriber for OpenAiTranscriber<S> {
    async fn transcribe(
        &self,
        audio: Audio<'_>,
        deadline: Instant,
    ) -> Result<String, TranscriptionError> {
        let secrets = tokio::time::timeout_at(deadline, self.secrets.current())
            .await
            .map_err(|_| TranscriptionError::Timeout)??;
        let key = secrets
            .transcription_api_key
            .as_ref()
            .or(secrets.llm_api_key.as_ref());
        let url = format!(
            "{}/audio/transcriptions",
            self.settings.base_url.trim_end_matches('/')
        );
        // Voice notes are OGG/Opus whatever WhatsApp calls them; servers know `audio/ogg`.
        let sent_type = if audio.mime_type == "audio/opus" {
            "audio/ogg"
        } else {
            audio.mime_type
        };
        retry(&self.settings.backoff, deadline, |_attempt| async {
            let part = Part::bytes(audio.bytes.to_vec())
                .file_name(file_name(audio.mime_type))
                .mime_str(sent_type)
                .map_err(|_| {
                    TranscriptionError::BadResponse("the audio's type is not a MIME type".into())
                })?;
            let form = Form::new()
                .part("file", part)
                .text("model", self.settings.model.clone())
                .text("response_format", "json");
            let mut request = self.http.post(&url).multipart(form);
            if let Some(key) = key {
                let mut value = reqwest::header::HeaderValue::try_from(format!(
                    "Bearer {}",
                    key.expose().trim()
                ))
                .map_err(|_| {
                    TranscriptionError::Transport(
                        "the API key has characters a header cannot hold".into(),
                    )
                })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            let answer = outbound_http::send(request, self.settings.timeout, deadline).await?;
            let secret = key.map(|k| k.expose()).unwrap_or_default();
            if !answer.is_success() {
                let text = outbound_http::redact(&String::from_utf8_lossy(&answer.body), secret);
                let (message, _) = outbound_http::excerpt(&text, MAX_MESSAGE_CHARS);
                return Err(TranscriptionError::Status {
                    status: answer.status,
                    message: message.to_owned(),
                    retry_after: answer.retry_after,
                });
            }
            let parsed: TranscriptionResponse =
                serde_json::from_slice(&answer.body).map_err(|e| {
                    TranscriptionError::BadResponse(outbound_http::describe_json_error(&e))
                })?;
            Ok(parsed.text.unwrap_or_default().trim().to_owned())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_notes_go_as_ogg_files() {
        assert_eq!(file_name("audio/ogg"), "voice-note.ogg");
        assert_eq!(file_name("audio/opus"), "voice-note.ogg");
        assert_eq!(file_name("audio/mpeg"), "audio.mp3");
    }

    #[test]
    fn refusals_are_final_and_throttling_is_retried() {
        let status = |status| TranscriptionError::Status {
            status,
            message: "m".into(),
            retry_after: None,
        };
        assert!(status(400).is_final());
        assert!(status(413).is_final());
        assert!(!status(429).is_final());
        assert_eq!(status(429).retry_hint(), RetryHint::Backoff);
        assert_eq!(status(503).retry_hint(), RetryHint::Backoff);
        assert_eq!(status(401).retry_hint(), RetryHint::Never);
        assert!(!TranscriptionError::Timeout.is_final());
        assert_eq!(TranscriptionError::Timeout.retry_hint(), RetryHint::Backoff);
    }
}
