//! Step 4d, read the claimed documents: each is downloaded from Meta (`MediaSource`: PDF, plain
//! text or CSV, up to 10 MiB). A PDF goes to the model inline with the user's turn (with
//! `VISION=true`: models that see read PDFs natively); plain text and CSV join the user's turn as
//! text, cut to [`MAX_DOCUMENT_CHARS`]. The turn holds `[document <name>] <caption>` in the
//! document's place, and the memory keeps that text (and a text document's words), never a PDF's
//! bytes. A document of another type, or one that can never be had, is answered by its caption,
//! or gets `UNSUPPORTED_MESSAGE` without one; a failure that may pass retries the burst.

use shared::inbound::MediaKind;
use shared::llm::InlineFile;
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::whatsapp::media::{Media, MediaLimits, MediaSource};

use crate::claim::ClaimedBurst;
use crate::media_lane::within_inline_allowance;
use crate::plan::Treatment;
use crate::reply::Retry;
use crate::{Invocation, Processor, REPLY_RESERVE};

/// The most characters of a text document that join the user's turn.
pub const MAX_DOCUMENT_CHARS: usize = 20_000;

impl<C, L, W: MediaSource, T> Processor<C, L, W, T> {
    /// Replaces each claimed document's [`Treatment::Read`] by what the model reads of it.
    /// `Err(Retry)` when one failed in a way that may pass.
    pub(crate) async fn read(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<(), Retry> {
        let deadline = invocation.deadline_before(REPLY_RESERVE);
        for message in &mut claimed.messages {
            let Treatment::Read {
                media_id,
                caption,
                filename,
            } = &message.treatment
            else {
                continue;
            };
            let (caption, filename) = (caption.clone(), filename.clone());
            let heading = document_heading(filename.as_deref(), caption.as_deref());
            let limits =
                within_inline_allowance(MediaLimits::for_kind(MediaKind::Document), &claimed.files);
            message.treatment = match self
                .whatsapp
                .download(claimed.phone_number_id, media_id, &limits, deadline)
                .await
            {
                Ok(media) => {
                    metrics.count("DocumentsRead", 1);
                    self.document(media, heading, caption, &mut claimed.files)
                }
                Err(error) if error.is_final() => {
                    tracing::warn!(event = LogEvent::DocumentNotRead.as_str(), user = %claimed.user, error = %error,
                        "a document cannot be had; its caption alone is answered");
                    caption.map_or(Treatment::Unsupported, Treatment::Answer)
                }
                Err(error) => {
                    tracing::warn!(event = LogEvent::DocumentFailed.as_str(), user = %claimed.user, error = %error,
                        "a document could not be downloaded for now; the messages are retried");
                    return Err(Retry);
                }
            };
        }
        Ok(())
    }

    /// What a downloaded document becomes: a PDF among `files` (when the model sees files), text
    /// in the turn, or its caption.
    fn document(
        &self,
        media: Media,
        heading: String,
        caption: Option<String>,
        files: &mut Vec<InlineFile>,
    ) -> Treatment {
        match media.mime_type.as_str() {
            "text/plain" | "text/csv" => {
                let text = String::from_utf8_lossy(&media.bytes);
                Treatment::Answer(format!("{heading}\n{}", bounded(text.trim())))
            }
            "application/pdf" if self.behaviour.vision => {
                files.push(InlineFile {
                    mime_type: media.mime_type,
                    bytes: media.bytes,
                });
                Treatment::Answer(heading)
            }
            _ => caption.map_or(Treatment::Unsupported, Treatment::Answer),
        }
    }
}

/// The text a document stands as: `[document <name>] <caption>`.
pub fn document_heading(filename: Option<&str>, caption: Option<&str>) -> String {
    let name = filename
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| format!("[document {n}]"))
        .unwrap_or_else(|| "[document]".to_owned());
    match caption.map(str::trim).filter(|c| !c.is_empty()) {
        Some(caption) => format!("{name} {caption}"),
        None => name,
    }
}

/// `text` cut to [`MAX_DOCUMENT_CHARS`] characters, marked when cut.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_DOCUMENT_CHARS) {
        Some((cut, _)) => format!("{}… [cut: the document is longer]", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_stands_as_its_name_and_caption() {
        assert_eq!(
            document_heading(Some("menu.pdf"), Some("prices?")),
            "[document menu.pdf] prices?"
        );
        assert_eq!(document_heading(None, None), "[document]");
        assert_eq!(document_heading(Some(" "), Some(" ")), "[document]");
    }

    #[test]
    fn long_text_is_cut_and_said_so() {
        let long = "é".repeat(MAX_DOCUMENT_CHARS + 5);
        let cut = bounded(&long);
        assert!(cut.ends_with("[cut: the document is longer]"));
        assert_eq!(
            cut.chars().filter(|c| *c == 'é').count(),
            MAX_DOCUMENT_CHARS
        );
        assert_eq!(bounded("short"), "short");
    }
}
