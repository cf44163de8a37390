//! Step 4a, keep media within the processor's memory. One SQS batch holds up to ten
//! conversations, answered at the same time, and a burst may hold an album of photos: without a
//! bound, ten bursts of media, each held raw, then base64 in the LLM request, would need far
//! more than the function's memory. Two bounds hold it:
//! - a burst that downloads media first takes one of the processor's *media lanes* and keeps it
//!   until it is answered (or until its media are read, when none goes to the model); the
//!   number of lanes follows the function's memory ([`lanes_for_memory`]: one at 128 MB);
//!   a burst that cannot get a lane before the deadline is retried, in order;
//! - the files of one burst that go to the model inline hold at most [`MAX_INLINE_BYTES`] in
//!   all (Gemini takes at most 20 MB of request, and base64 makes a file a third larger); a file
//!   past that is refused as too large, like one over its kind's cap.

use std::sync::Arc;

use shared::llm::InlineFile;
use shared::log_event::LogEvent;
use shared::whatsapp::media::MediaLimits;
use tokio::sync::Semaphore;

use crate::claim::ClaimedBurst;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, REPLY_RESERVE};

/// The most bytes of files one burst sends the model inline.
pub const MAX_INLINE_BYTES: u64 = 12 * 1024 * 1024;

/// The memory, in MB, that one lane's burst may take at its peak (its files raw, base64 and in
/// the request, with room to spare; README "Memory" has the measured figures).
const MB_PER_LANE: u32 = 64;

/// The memory, in MB, kept for everything else (the runtime, the clients, ten conversations'
/// histories).
const MB_BESIDE_LANES: u32 = 64;

/// How many bursts may hold media at once in a function of `memory_mb` (Lambda's
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`): one at 128 MB, three at 256, seven at 512.
pub fn lanes_for_memory(memory_mb: u32) -> usize {
    let lanes = memory_mb.saturating_sub(MB_BESIDE_LANES) / MB_PER_LANE;
    usize::try_from(lanes.max(1)).unwrap_or(1)
}

/// The processor's media lanes.
#[derive(Debug, Clone)]
pub struct MediaLanes(Arc<Semaphore>);

impl MediaLanes {
    /// `count` lanes (at least one).
    pub fn new(count: usize) -> Self {
        Self(Arc::new(Semaphore::new(count.max(1))))
    }
}

/// `limits`, lowered so that a file read within them keeps `files` within [`MAX_INLINE_BYTES`].
pub fn within_inline_allowance(limits: MediaLimits, files: &[InlineFile]) -> MediaLimits {
    let held: u64 = files.iter().map(|file| file.bytes.len() as u64).sum();
    let allowance = MAX_INLINE_BYTES.saturating_sub(held);
    MediaLimits {
        max_bytes: limits.max_bytes.min(allowance),
        ..limits
    }
}

/// Whether `treatment` downloads media.
fn downloads(treatment: &Treatment) -> bool {
    matches!(
        treatment,
        Treatment::Listen { .. } | Treatment::Look { .. } | Treatment::Read { .. }
    )
}

impl<C, L, W, T> Processor<C, L, W, T> {
    /// Takes a media lane for `claimed` when it has media to download. `Err(Retry)` when no lane
    /// is free before the deadline.
    pub(crate) async fn take_media_lane(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
    ) -> Result<(), Retry> {
        if !claimed.messages.iter().any(|m| downloads(&m.treatment)) {
            return Ok(());
        }
        let deadline = invocation.deadline_before(REPLY_RESERVE);
        let lane = self.media_lanes.0.clone().acquire_owned();
        match tokio::time::timeout_at(deadline, lane).await {
            Ok(Ok(permit)) => {
                claimed.media_lane = Some(permit);
                Ok(())
            }
            // The semaphore is never closed; a closed one would mean no lane, ever: retry.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(event = LogEvent::MediaLaneBusy.as_str(), user = %claimed.user,
                    "no media lane came free in time; the messages are retried");
                Err(Retry)
            }
        }
    }
}

/// Silences the media of a burst resumed with an answer kept from an earlier invocation: that
/// answer already took them in, so nothing is downloaded again.
pub fn silence_media_of_resumed(claimed: &mut ClaimedBurst<'_>) {
    if claimed.claim.pending.is_none() {
        return;
    }
    for message in &mut claimed.messages {
        if downloads(&message.treatment) {
            message.treatment = Treatment::Silent;
        }
    }
}

/// Gives `claimed`'s media lane back once its media are read, unless some go to the model.
pub fn release_unless_inline(claimed: &mut ClaimedBurst<'_>) {
    if claimed.files.is_empty() {
        claimed.media_lane = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_follow_the_memory() {
        assert_eq!(lanes_for_memory(0), 1);
        assert_eq!(lanes_for_memory(128), 1);
        assert_eq!(lanes_for_memory(256), 3);
        assert_eq!(lanes_for_memory(512), 7);
        assert_eq!(lanes_for_memory(10_240), 159);
    }

    #[test]
    fn the_inline_allowance_shrinks_with_the_files_held() {
        let image = MediaLimits {
            max_bytes: 5 * 1024 * 1024,
            allowed_types: vec!["image/png".into()],
        };
        let file = |len: usize| InlineFile {
            mime_type: "image/png".into(),
            bytes: vec![0; len],
        };
        assert_eq!(within_inline_allowance(image.clone(), &[]), image);
        let nearly_full = [file(11 * 1024 * 1024)];
        assert_eq!(
            within_inline_allowance(image.clone(), &nearly_full).max_bytes,
            1024 * 1024
        );
        let over = [file(7 * 1024 * 1024), file(6 * 1024 * 1024)];
        assert_eq!(within_inline_allowance(image, &over).max_bytes, 0);
    }
}
