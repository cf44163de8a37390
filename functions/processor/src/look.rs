//! Step 4c, look at the claimed images: each is downloaded from Meta (`MediaSource`, JPEG, PNG
//! or WebP up to 5 MiB) and goes to the model inline with the user's turn, in which it stands as
//! `[image] <caption>`: that text is what the memory keeps, never the bytes, so only the newest
//! burst carries images. An image that can never be had (too large, a refused type) is answered
//! by its caption, or gets `UNSUPPORTED_MESSAGE` without one; a failure that may pass retries
//! the burst.

use shared::inbound::MediaKind;
use shared::llm::InlineFile;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::media::{MediaLimits, MediaSource};

use crate::claim::ClaimedBurst;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, REPLY_RESERVE};

impl<C, L, W: MediaSource, T> Processor<C, L, W, T> {
    /// Replaces each claimed image's [`Treatment::Look`] by an answer to `[image] <caption>`,
    /// with the image among the burst's files. `Err(Retry)` when one failed in a way that may
    /// pass. A burst with an answer kept from an earlier invocation is not looked at again.
    pub(crate) async fn look(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let deadline = invocation
            .deadline
            .checked_sub(REPLY_RESERVE)
            .unwrap_or(invocation.deadline);
        let limits = MediaLimits::for_kind(MediaKind::Image);
        let resumed = claimed.claim.pending.is_some();
        for message in &mut claimed.messages {
            let Treatment::Look { media_id, caption } = &message.treatment else {
                continue;
            };
            let caption = caption.clone();
            if resumed {
                message.treatment = Treatment::Silent;
                continue;
            }
            match self.whatsapp.download(media_id, &limits, deadline).await {
                Ok(media) => {
                    metrics.count("ImagesSeen", 1);
                    claimed.files.push(InlineFile {
                        mime_type: media.mime_type,
                        bytes: media.bytes,
                    });
                    message.treatment = Treatment::Answer(image_turn(caption.as_deref()));
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

/// The text an image stands as in the user's turn and the memory.
pub fn image_turn(caption: Option<&str>) -> String {
    match caption.map(str::trim).filter(|c| !c.is_empty()) {
        Some(caption) => format!("[image] {caption}"),
        None => "[image]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_stands_as_its_caption() {
        assert_eq!(image_turn(Some(" is this ripe? ")), "[image] is this ripe?");
        assert_eq!(image_turn(Some("")), "[image]");
        assert_eq!(image_turn(None), "[image]");
    }
}
