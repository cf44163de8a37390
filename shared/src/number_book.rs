//! The settings of each business number, as a function sees them: read from the table on a
//! number's first message and kept [`REFRESH`] before being read again, so that a change made
//! with `infra/numbers.sh` reaches every container within a minute at one read per number and
//! container a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::time::Instant;

use crate::log_event::LogEvent;
use crate::number_settings::{NumberSettings, SETTINGS_ATTRIBUTE, SettingsError, number_key};

/// How long a number's settings are used before they are read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Why a number's settings could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not read the number's settings: {0}")]
pub struct NumberBookError(pub String);

/// Where the settings documents are kept.
pub trait NumberSource: Send + Sync {
    /// The settings document (JSON text) of `phone_number_id`, `None` when it has none.
    fn fetch(
        &self,
        phone_number_id: &str,
    ) -> impl Future<Output = Result<Option<String>, NumberBookError>> + Send;
}

/// The settings items of the stack's DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoDbNumbers {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoDbNumbers {
    /// The settings kept in `table_name`.
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String) -> Self {
        Self { client, table_name }
    }
}

impl NumberSource for DynamoDbNumbers {
    async fn fetch(&self, phone_number_id: &str) -> Result<Option<String>, NumberBookError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(number_key(phone_number_id)))
            .projection_expression("#s")
            .expression_attribute_names("#s", SETTINGS_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| NumberBookError(DisplayErrorContext(e).to_string()))?;
        Ok(output
            .item
            .and_then(|item| item.get(SETTINGS_ATTRIBUTE)?.as_s().ok().cloned()))
    }
}

/// Each number's settings, cached.
pub struct NumberBook<S> {
    source: S,
    report_invalid: fn(&str, &SettingsError),
    cache: Mutex<HashMap<String, (Instant, Arc<NumberSettings>)>>,
}

impl<S: NumberSource> NumberBook<S> {
    /// Settings read from `source`; an invalid document is reported to `report_invalid` (the
    /// function logs it), once per read.
    pub fn new(source: S, report_invalid: fn(&str, &SettingsError)) -> Self {
        Self {
            source,
            report_invalid,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `phone_number_id`'s settings: the defaults (all `None`) when it has none, or when its
    /// document is invalid (an ERROR names the fields; `infra/numbers.sh` refuses such a
    /// document, so it was written by hand). An error when the table cannot be read and nothing
    /// was read before; a stale copy when something was.
    pub async fn settings(
        &self,
        phone_number_id: &str,
    ) -> Result<Arc<NumberSettings>, NumberBookError> {
        let cached = self.cached(phone_number_id);
        if let Some((read_at, settings)) = &cached
            && read_at.elapsed() < REFRESH
        {
            return Ok(settings.clone());
        }
        let document = match self.source.fetch(phone_number_id).await {
            Ok(document) => document,
            Err(error) => {
                return match cached {
                    Some((_, settings)) => {
                        tracing::warn!(event = LogEvent::StoreFailed.as_str(), error = %error,
                            "could not read the number's settings again; the last ones are used");
                        Ok(settings)
                    }
                    None => Err(error),
                };
            }
        };
        let settings = Arc::new(self.read_document(phone_number_id, document.as_deref()));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                phone_number_id.to_owned(),
                (Instant::now(), settings.clone()),
            );
        }
        Ok(settings)
    }

    /// The settings a document holds; the defaults, reported, when it is invalid.
    fn read_document(&self, phone_number_id: &str, document: Option<&str>) -> NumberSettings {
        let Some(document) = document else {
            return NumberSettings::default();
        };
        NumberSettings::from_json(document).unwrap_or_else(|error| {
            (self.report_invalid)(phone_number_id, &error);
            NumberSettings::default()
        })
    }

    fn cached(&self, phone_number_id: &str) -> Option<(Instant, Arc<NumberSettings>)> {
        let cache = self.cache.lock().ok()?;
        cache.get(phone_number_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counted {
        reads: AtomicUsize,
        document: Result<Option<String>, NumberBookError>,
    }

    impl NumberSource for Counted {
        async fn fetch(&self, _: &str) -> Result<Option<String>, NumberBookError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.document.clone()
        }
    }

    fn book(document: Result<Option<String>, NumberBookError>) -> NumberBook<Counted> {
        NumberBook::new(
            Counted {
                reads: AtomicUsize::new(0),
                document,
            },
            |_, _| {},
        )
    }

    #[tokio::test(start_paused = true)]
    async fn settings_are_read_once_a_minute() {
        let book = book(Ok(Some(r#"{"name":"Luna"}"#.into())));
        for _ in 0..3 {
            let settings = book.settings("1").await.unwrap();
            assert_eq!(settings.name.as_deref(), Some("Luna"));
        }
        assert_eq!(book.source.reads.load(Ordering::SeqCst), 1);
        tokio::time::advance(REFRESH).await;
        book.settings("1").await.unwrap();
        book.settings("2").await.unwrap();
        assert_eq!(book.source.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn none_or_invalid_settings_are_the_defaults_and_a_failed_first_read_is_an_error() {
        assert_eq!(
            *book(Ok(None)).settings("1").await.unwrap(),
            NumberSettings::default()
        );
        let invalid = book(Ok(Some(r#"{"nmae":"x"}"#.into())));
        assert_eq!(
            *invalid.settings("1").await.unwrap(),
            NumberSettings::default()
        );
        let down = book(Err(NumberBookError("down".into())));
        assert!(down.settings("1").await.is_err());
    }
}
