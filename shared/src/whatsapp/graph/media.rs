//! [`MediaSource`] over the Graph API: the media id's details, then the file itself, each with
//! the access token of the number the media was sent to, retried like other Graph calls. A download is a read, safe to repeat: one
//! that got no answer is retried, unlike a send.

use reqwest::Url;
use tokio::time::Instant;

use super::{GraphApi, api_error, call_error};
use crate::outbound_http;
use crate::retry::{self, RetryHint, Retryable};
use crate::secrets::{SecretString, Secrets};
use crate::whatsapp::WhatsAppError;
use crate::whatsapp::media::{
    Media, MediaError, MediaInfo, MediaLimits, MediaSource, check_info, check_sha256,
};

/// The most bytes of an error answer read.
const MAX_ERROR_BODY: u64 = 64 * 1024;

impl<S: Secrets> MediaSource for GraphApi<S> {
    async fn download(
        &self,
        phone_number_id: &str,
        media_id: &str,
        limits: &MediaLimits,
        deadline: Instant,
    ) -> Result<Media, MediaError> {
        let token = self.access_token(phone_number_id).await?;
        let info_url = self.graph_url(&[media_id])?;
        let (token, info_url) = (&token, &info_url);
        let outcome: Result<Media, MediaError> =
            retry::retry(&self.settings.backoff, deadline, |_attempt| async move {
                let info = self.media_info(info_url, token, deadline).await?;
                let mime_type = check_info(&info, limits)?;
                let bytes = self
                    .file(&info.url, token, limits.max_bytes, deadline)
                    .await?;
                check_sha256(&bytes, info.sha256.as_deref())?;
                Ok(Media { bytes, mime_type })
            })
            .await;
        match &outcome {
            Ok(media) => {
                tracing::info!(bytes = media.bytes.len(), mime_type = %media.mime_type, "downloaded a media file")
            }
            Err(error) => {
                tracing::warn!(error = %error, final_error = error.is_final(), "a media file could not be downloaded")
            }
        }
        outcome
    }
}

impl<S> GraphApi<S> {
    /// What Meta says of the media id.
    async fn media_info(
        &self,
        url: &Url,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<MediaInfo, MediaError> {
        let request = self.http.get(url.clone()).bearer_auth(token.expose());
        let answer = outbound_http::send(request, self.settings.timeout, deadline)
            .await
            .map_err(|e| read_error(call_error(e, token)))?;
        if !answer.is_success() {
            let failure = api_error(answer.status, answer.retry_after, &answer.body, token);
            return Err(failure.error.into());
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            MediaError::Graph(WhatsAppError::BadResponse(
                outbound_http::describe_json_error(&e),
            ))
        })
    }

    /// The file at Meta's `url`, read up to `max_bytes` and no further.
    async fn file(
        &self,
        url: &str,
        token: &SecretString,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, MediaError> {
        let url = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| {
                WhatsAppError::BadResponse("the media URL is not an http(s) URL".into())
            })?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WhatsAppError::Timeout.into());
        }
        let mut response = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .timeout(self.settings.timeout.min(left))
            .send()
            .await
            .map_err(|e| read_error(call_error(outbound_http::call_error(e), token)))?;
        let status = response.status().as_u16();
        if matches!(status, 404 | 410) {
            // The URL lives 5 minutes: the next attempt asks Meta for a fresh one.
            return Err(
                WhatsAppError::Transport(format!("the media URL answered {status}")).into(),
            );
        }
        if !response.status().is_success() {
            let body = read_capped(&mut response, MAX_ERROR_BODY, token)
                .await
                .unwrap_or_default();
            return Err(api_error(status, None, &body, token).error.into());
        }
        if response
            .content_length()
            .is_some_and(|length| length > max_bytes)
        {
            return Err(MediaError::TooLarge { max: max_bytes });
        }
        read_capped(&mut response, max_bytes, token).await
    }
}

/// The body of `response`, refused as too large once it passes `max_bytes`. Read into a buffer
/// of the announced length (within the cap), so that a large file is not copied as it grows.
async fn read_capped(
    response: &mut reqwest::Response,
    max_bytes: u64,
    token: &SecretString,
) -> Result<Vec<u8>, MediaError> {
    let announced = response.content_length().unwrap_or(0).min(max_bytes);
    let mut bytes = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| read_error(call_error(outbound_http::call_error(e), token)))?;
        let Some(chunk) = chunk else {
            return Ok(bytes);
        };
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(MediaError::TooLarge { max: max_bytes });
        }
        bytes.extend_from_slice(&chunk);
    }
}

/// A read that got no answer is safe to repeat: it counts as a failure to reach Meta.
fn read_error(error: WhatsAppError) -> MediaError {
    match error {
        WhatsAppError::OutcomeUnknown { detail, .. } => WhatsAppError::Transport(detail).into(),
        other => other.into(),
    }
}

impl Retryable for MediaError {
    /// A checksum that does not match is tried again (a download cut short); Graph errors as
    /// other Graph calls; a file too large or of a refused type never.
    fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Graph(error) => error.retry_hint(),
            Self::ChecksumMismatch => RetryHint::Backoff,
            Self::TooLarge { .. } | Self::TypeNotAllowed(_) => RetryHint::Never,
        }
    }
}
