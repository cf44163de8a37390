//! The tools file as the processor uses it: read where `TOOLS_URI` says (S3 or a file, like the
//! knowledge document), on first use, checked for a change (its ETag) at most every refresh
//! interval, and parsed. A file that is not valid is an ERROR (`tools_file_invalid`, with the
//! reason): the bot answers without tools, or with the last valid version it had.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::file::{Tools, parse_tools};
use crate::knowledge::{CachedDocument, DocumentSource, Found};
use crate::log_event::LogEvent;

/// The tools file, read from `source`, cached and parsed.
pub struct ToolsCatalog<D> {
    document: CachedDocument<D, Arc<Tools>>,
}

impl<D: DocumentSource> ToolsCatalog<D> {
    /// The tools file read from `source`, checked every `refresh`. No I/O.
    pub fn new(source: D, refresh: Duration) -> Self {
        Self {
            document: CachedDocument::new(source, refresh),
        }
    }

    /// The tools to offer, read or checked again when the cached version is older than the
    /// refresh interval, giving up at `deadline`. `None` when no valid version has been read:
    /// the bot then answers without tools (an ERROR says why). An invalid version is not read
    /// again while it is unchanged.
    pub async fn current(&self, deadline: Instant) -> Option<Arc<Tools>> {
        self.document
            .current(deadline, |found, kept| match found {
                Found::Changed(text) => admit(text, kept),
                Found::Failed { error, had_version: true } => {
                    tracing::warn!(event = LogEvent::ToolsRefreshFailed.as_str(), error = %error,
                        "the tools file could not be checked; using the cached version");
                    None
                }
                Found::Failed { error, had_version: false } => {
                    tracing::error!(event = LogEvent::ToolsUnavailable.as_str(), error = %error,
                        "the tools file could not be read; answering without tools (check TOOLS_URI)");
                    None
                }
            })
            .await
    }
}

/// Parses a new version of the file: valid, it replaces the tools; invalid, it is logged and
/// the last valid tools (`kept`, if any) stay.
fn admit(text: &str, kept: Option<&Arc<Tools>>) -> Option<Arc<Tools>> {
    match parse_tools(text) {
        Ok(tools) => {
            tracing::info!(
                event = LogEvent::ToolsLoaded.as_str(),
                tools = tools.len(),
                "tools file loaded"
            );
            Some(Arc::new(tools))
        }
        Err(error) => {
            let kept = kept.map_or(0, |tools| tools.len());
            tracing::error!(event = LogEvent::ToolsFileInvalid.as_str(), reason = %error,
                kept_tools = kept,
                "the tools file is not valid; the last valid version (if any) stays in use until it is fixed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::scripted::{Scripted, changed};
    use crate::knowledge::{Fetched, KnowledgeError, RETRY_AFTER_FAILURE};

    fn file(names: &[&str]) -> String {
        let tools: Vec<serde_json::Value> = names
            .iter()
            .map(|name| {
                serde_json::json!({"name": name, "description": "d",
                    "parameters": {"type": "object"}, "method": "GET",
                    "url": "https://shop.example/x", "side_effects": false})
            })
            .collect();
        serde_json::json!({ "tools": tools }).to_string()
    }

    fn names(tools: Option<Arc<Tools>>) -> Option<Vec<String>> {
        tools.map(|t| t.declarations().into_iter().map(|d| d.name).collect())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(9)
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_last_valid_tools_when_a_new_version_is_invalid() {
        let source = Scripted::default();
        *source.answers.lock().unwrap() = vec![
            changed(&file(&["a"]), "e1"),
            Ok(Fetched::Unchanged),
            changed(r#"{"tools": [{"name": "b", "colour": "red"}]}"#, "e2"),
            Err(KnowledgeError::Read("down".into())),
            changed(&file(&["c", "d"]), "e3"),
        ];
        let catalog = ToolsCatalog::new(source, Duration::from_secs(60));
        let a = Some(vec!["a".to_owned()]);
        assert_eq!(names(catalog.current(soon()).await), a);
        assert_eq!(names(catalog.current(soon()).await), a, "cached");
        for expected in [a.clone(), a.clone(), a.clone()] {
            tokio::time::advance(Duration::from_secs(61)).await;
            assert_eq!(names(catalog.current(soon()).await), expected);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            names(catalog.current(soon()).await),
            Some(vec!["c".to_owned(), "d".to_owned()])
        );
        let seen = catalog.document.source().etags_seen.lock().unwrap().clone();
        let etag = |e: &str| Some(e.to_owned());
        // The invalid version is not read again while it is unchanged.
        assert_eq!(seen, [None, etag("e1"), etag("e1"), etag("e2"), etag("e2")]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_first_version_means_no_tools_until_fixed() {
        let source = Scripted::default();
        *source.answers.lock().unwrap() = vec![
            changed("not json", "e1"),
            Ok(Fetched::Unchanged),
            changed(&file(&["a"]), "e2"),
        ];
        let catalog = ToolsCatalog::new(source, Duration::from_secs(60));
        assert!(catalog.current(soon()).await.is_none());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(catalog.current(soon()).await.is_none());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            names(catalog.current(soon()).await),
            Some(vec!["a".to_owned()])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_first_read_is_retried_after_a_pause() {
        let source = Scripted::default();
        *source.answers.lock().unwrap() = vec![
            Err(KnowledgeError::NotFound("s3://b/tools.json".into())),
            changed(&file(&["a"]), "e1"),
        ];
        let catalog = ToolsCatalog::new(source, Duration::from_secs(300));
        assert!(catalog.current(soon()).await.is_none());
        assert!(
            catalog.current(soon()).await.is_none(),
            "not retried at once"
        );
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        assert!(catalog.current(soon()).await.is_some());
        assert_eq!(
            catalog.document.source().etags_seen.lock().unwrap().len(),
            2
        );
    }
}
