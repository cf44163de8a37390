//! Step 4c, look at the claimed images (and videos, for a model that takes them: Gemini's):
//! each is downloaded from Meta (`MediaSource`; images JPEG, PNG or WebP up to 5 MiB, videos MP4
//! or 3GPP up to 12 MiB) and goes to the model inline with the user's turn, in which it stands
//! as `[image] <caption>` (`[video] …`): that text is what the memory keeps, never the bytes, so only the newest
//! burst carries images. An image that can never be had (too large, a refused type) is answered
//! by its caption, or gets `UNSUPPORTED_MESSAGE` without one; a failure that may pass retries
//! the burst.

use shared::inbound::MediaKind;
use shared::llm::InlineFile;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::media::{MediaLimits, MediaSource};

use crate::claim::ClaimedBurst;
use crate::media_lane::within_inline_allowance;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, REPLY_RESERVE};

impl<C, L, W: MediaSource, T> Processor<C, L, W, T> {
    /// Replaces each claimed image's [`Treatment::Look`] by an answer to `[image] <caption>`,
    /// with the image among the burst's files. `Err(Retry)` when one failed in a way that may
    /// pass.
    pub(crate) async fn look(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let deadline = invocation.deadline_before(REPLY_RESERVE);
        for message in &mut claimed.messages {
            let Treatment::Look {
                kind,
                media_id,
                caption,
            } = &message.treatment
            else {
                continue;
            };
            let kind = *kind;
            let limits = within_inline_allowance(limits_for(kind), &claimed.files);
            let caption = caption.clone();
            match self
                .whatsapp
                .download(claimed.phone_number_id, media_id, &limits, deadline)
                .await
            {
                Ok(media) => {
                    metrics.count("ImagesSeen", 1);
                    claimed.files.push(InlineFile {
                        mime_type: media.mime_type,
                        bytes: media.bytes,
                    });
                    message.treatment = Treatment::Answer(media_turn(kind, caption.as_deref()));
                }
                Err(error) if error.is_final() => {
                    tracing::warn!(event = LogEvent::ImageNotSeen.as_str(), user = %claimed.user, error = %error,
                        "an image cannot be had; its caption alone is answered");
                    message.treatment = caption.map_or(Treatment::Unsupported, Treatment::Answer);
                }
                Err(error) => {
                    tracing::warn!(event = LogEvent::ImageFailed.as_str(), user = %claimed.user, error = %error,
                        "an image could not be downloaded for now; the messages are retried");
                    return Err(Retry);
                }
            }
        }
        Ok(())
    }
}

/// The most bytes of a video sent inline: Gemini takes at most 20 MB of request, and base64
/// makes a file a third larger.
pub const MAX_INLINE_VIDEO_BYTES: u64 = 12 * 1024 * 1024;

/// What media of `kind` is held to: images as Meta's defaults, videos to what goes inline.
fn limits_for(kind: MediaKind) -> MediaLimits {
    let limits = MediaLimits::for_kind(kind);
    match kind {
        MediaKind::Video => MediaLimits {
            max_bytes: MAX_INLINE_VIDEO_BYTES,
            ..limits
        },
        _ => limits,
    }
}

/// The text an image (or a video) stands as in the user's turn and the memory.
pub fn media_turn(kind: MediaKind, caption: Option<&str>) -> String {
    let label = match kind {
        MediaKind::Video => "[video]",
        _ => "[image]",
    };
    match caption.map(str::trim).filter(|c| !c.is_empty()) {
        Some(caption) => format!("{label} {caption}"),
        None => label.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_stands_as_its_caption() {
        assert_eq!(
            media_turn(MediaKind::Image, Some(" is this ripe? ")),
            "[image] is this ripe?"
        );
        assert_eq!(media_turn(MediaKind::Image, Some("")), "[image]");
        assert_eq!(media_turn(MediaKind::Video, None), "[video]");
        assert_eq!(
            limits_for(MediaKind::Video).max_bytes,
            MAX_INLINE_VIDEO_BYTES
        );
    }
}
