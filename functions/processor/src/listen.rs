//! Step 4b, hear the claimed voice notes: each is downloaded from Meta (`MediaSource`) and
//! transcribed (`Transcriber`), and becomes an answer to its transcript, marked `[voice note]`,
//! in its place among the burst's messages. A note that can never be heard (too large, of a
//! refused type, refused by the provider) gets `VOICE_NOTE_FAILED_MESSAGE` and an ERROR; a
//! failure that may pass retries the burst. Both calls end [`REPLY_RESERVE`] before the
//! deadline, as the LLM's does. With Gemini and no transcription server of its own, a voice note
//! goes to the model as audio instead (Gemini hears it), standing as `[voice note]`.

use shared::inbound::MediaKind;
use shared::llm::InlineFile;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::transcription::{Audio, Transcriber};
use shared::whatsapp::media::{MediaLimits, MediaSource, essence};
use tokio::time::Instant;

use crate::claim::ClaimedBurst;
use crate::media_lane::within_inline_allowance;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, REPLY_RESERVE};

/// Why a voice note was not heard.
enum NotHeard {
    /// It never will be: the user is told.
    Final(String),
    /// It may be on a retry.
    ForNow(String),
}

impl<C, L, W: MediaSource, T: Transcriber> Processor<C, L, W, T> {
    /// Replaces each claimed voice note's [`Treatment::Listen`] by its transcript, or by
    /// [`Treatment::NotHeard`]. `Err(Retry)` when one failed in a way that may pass.
    pub(crate) async fn listen(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let deadline = invocation.deadline_before(REPLY_RESERVE);
        let user = claimed.user.clone();
        let number = claimed.phone_number_id;
        for message in &mut claimed.messages {
            let Treatment::Listen {
                media_id,
                mime_type,
            } = &message.treatment
            else {
                continue;
            };
            let heard = match claimed.behaviour.audio_inline {
                true => {
                    self.hand_over(number, media_id, deadline, &mut claimed.files)
                        .await
                }
                false => self.hear(number, media_id, mime_type, deadline).await,
            };
            message.treatment = match heard {
                Ok(transcript) => {
                    metrics.count("VoiceNotesHeard", 1);
                    Treatment::Answer(voice_note_turn(&transcript))
                }
                Err(NotHeard::Final(cause)) => {
                    metrics.count("VoiceNotesNotHeard", 1);
                    tracing::error!(event = LogEvent::VoiceNoteNotHeard.as_str(), user = %user, cause = %cause,
                        "a voice note cannot be heard; the user is asked to type it");
                    Treatment::NotHeard
                }
                Err(NotHeard::ForNow(cause)) => {
                    tracing::warn!(event = LogEvent::VoiceNoteFailed.as_str(), user = %user, cause = %cause,
                        "a voice note could not be heard for now; the messages are retried");
                    return Err(Retry);
                }
            };
        }
        Ok(())
    }

    /// Downloads one voice note and hands it to the model inline (Gemini hears audio): the
    /// turn and the memory then hold `[voice note]` alone.
    async fn hand_over(
        &self,
        phone_number_id: &str,
        media_id: &str,
        deadline: Instant,
        files: &mut Vec<InlineFile>,
    ) -> Result<String, NotHeard> {
        let limits = within_inline_allowance(MediaLimits::for_kind(MediaKind::Audio), files);
        let media = self
            .whatsapp
            .download(phone_number_id, media_id, &limits, deadline)
            .await
            .map_err(|e| classify(e.is_final(), e.to_string()))?;
        files.push(InlineFile {
            mime_type: media.mime_type,
            bytes: media.bytes,
        });
        Ok(String::new())
    }

    /// Downloads and transcribes one voice note.
    async fn hear(
        &self,
        phone_number_id: &str,
        media_id: &str,
        mime_type: &str,
        deadline: Instant,
    ) -> Result<String, NotHeard> {
        let limits = MediaLimits::for_kind(MediaKind::Audio);
        let media = self
            .whatsapp
            .download(phone_number_id, media_id, &limits, deadline)
            .await
            .map_err(|e| classify(e.is_final(), e.to_string()))?;
        let mime_type = if media.mime_type.is_empty() {
            essence(mime_type)
        } else {
            media.mime_type.clone()
        };
        let audio = Audio {
            bytes: &media.bytes,
            mime_type: &mime_type,
        };
        self.transcriber
            .transcribe(audio, deadline)
            .await
            .map_err(|e| classify(e.is_final(), e.to_string()))
    }
}

fn classify(is_final: bool, cause: String) -> NotHeard {
    if is_final {
        NotHeard::Final(cause)
    } else {
        NotHeard::ForNow(cause)
    }
}

/// The user's turn a transcript becomes: marked as a voice note, so that the model and the
/// memory know how it came; `[voice note]` alone when the model hears the audio itself.
pub fn voice_note_turn(transcript: &str) -> String {
    match transcript.trim() {
        "" => "[voice note]".to_owned(),
        text => format!("[voice note] {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_is_marked_as_a_voice_note() {
        assert_eq!(
            voice_note_turn(" Hola, ¿abren hoy? "),
            "[voice note] Hola, ¿abren hoy?"
        );
        assert_eq!(voice_note_turn("  "), "[voice note]");
    }
}
