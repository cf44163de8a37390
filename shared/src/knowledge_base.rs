//! Retrieval from Amazon Bedrock Knowledge Bases, for corpora too large for the prompt: the
//! user's turn is sent to the knowledge base's `Retrieve` API and the top passages it finds go to
//! the model with that turn (`passages_block`). The engine (chunking, embeddings, the vector
//! store) is Bedrock's; nothing here indexes anything.
//!
//! The client signs with the function's role (SigV4, signing name `bedrock`);
//! `AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME` (or `AWS_ENDPOINT_URL`) sends it elsewhere. The
//! SDK's own retries are off: attempts are retried here, each with its own timeout, within the
//! caller's deadline, as the LLM calls are.

use std::future::Future;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockagentruntime::Client;
use aws_sdk_bedrockagentruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockagentruntime::operation::retrieve::{RetrieveError, RetrieveOutput};
use aws_sdk_bedrockagentruntime::types::{
    KnowledgeBaseQuery, KnowledgeBaseRetrievalConfiguration, KnowledgeBaseRetrievalResult,
    KnowledgeBaseVectorSearchConfiguration, RetrievalResultLocation,
};
use tokio::time::Instant;

use crate::outbound_http::excerpt;
use crate::retry::{Backoff, RetryHint, Retryable, retry};

/// The longest query `Retrieve` takes, in characters: a longer turn is cut to its end, the
/// user's latest words.
pub const MAX_QUERY_CHARS: usize = 1000;

/// The most passages one query may ask for (`KNOWLEDGE_BASE_TOP_K`'s upper bound).
pub const MAX_TOP_K: u32 = 20;

/// The most bytes of one passage's text that reach the model; a longer chunk is cut.
pub const MAX_PASSAGE_BYTES: usize = 3000;

/// The most bytes of a passage's source location that reach the model.
const MAX_SOURCE_BYTES: usize = 300;

/// The most characters of an error message kept in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// A passage the knowledge base found for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// The chunk's text, at most [`MAX_PASSAGE_BYTES`].
    pub text: String,
    /// Where it comes from (an `s3://` URI, a web page's URL), when the knowledge base says.
    pub source: Option<String>,
    /// Its relevance score, when the knowledge base gives one.
    pub score: Option<f64>,
}

/// Why a query found no passages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetrievalError {
    /// No answer before the attempt's timeout or the deadline.
    #[error("the knowledge base did not answer in time")]
    Timeout,
    /// The request did not reach the service, or its answer was lost.
    #[error("the knowledge base could not be reached: {0}")]
    Transport(String),
    /// The service failed for now (throttled, an internal error, its vector store down).
    #[error("the knowledge base failed for now ({code}): {message}")]
    Unavailable {
        /// The exception's name, such as `ThrottlingException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The role may not query the knowledge base.
    #[error("the knowledge base may not be queried ({code}): {message}")]
    Denied {
        /// The exception's name.
        code: String,
        /// The service's message.
        message: String,
    },
    /// There is no such knowledge base in the region.
    #[error("the knowledge base does not exist ({code}): {message}")]
    NotFound {
        /// The exception's name.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The service refused the request itself (a validation error, a conflict).
    #[error("the knowledge base refused the query ({code}): {message}")]
    Refused {
        /// The exception's name.
        code: String,
        /// The service's message.
        message: String,
    },
}

impl RetrievalError {
    /// Whether the failure may pass by itself (retried; a WARN when it lasts), rather than
    /// needing someone to act (an ERROR).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Transport(_) | Self::Unavailable { .. }
        )
    }
}

impl Retryable for RetrievalError {
    fn retry_hint(&self) -> RetryHint {
        if self.is_transient() {
            RetryHint::Backoff
        } else {
            RetryHint::Never
        }
    }
}

/// Finds the passages relevant to a query.
pub trait PassageRetriever: Send + Sync {
    /// The passages for `query`, best first, retrying transient failures, never past
    /// `deadline`.
    fn retrieve(
        &self,
        query: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Passage>, RetrievalError>> + Send;
}

/// How the knowledge base is queried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeBaseSettings {
    /// `KNOWLEDGE_BASE_ID`: the knowledge base's id.
    pub knowledge_base_id: String,
    /// `KNOWLEDGE_BASE_TOP_K`: how many passages to ask for (1 to [`MAX_TOP_K`]).
    pub top_k: u32,
    /// The limit of one attempt.
    pub attempt_timeout: Duration,
    /// How failed attempts are retried.
    pub backoff: Backoff,
}

/// An Amazon Bedrock knowledge base, queried with `Retrieve`.
pub struct BedrockKnowledgeBase {
    client: Client,
    settings: KnowledgeBaseSettings,
}

impl BedrockKnowledgeBase {
    /// A client of the knowledge base built from `aws` (credentials, region, endpoint), without
    /// the SDK's retries and with the settings' timeout per attempt. No I/O.
    pub fn new(aws: &SdkConfig, settings: KnowledgeBaseSettings) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.attempt_timeout.min(Duration::from_secs(5)))
            .operation_attempt_timeout(settings.attempt_timeout)
            .disable_operation_timeout()
            .build();
        let config = aws_sdk_bedrockagentruntime::config::Builder::from(aws)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        Self {
            client: Client::from_conf(config.build()),
            settings,
        }
    }

    /// The knowledge base's id.
    pub fn id(&self) -> &str {
        &self.settings.knowledge_base_id
    }

    /// Sends one attempt for `query`, giving up at `deadline`.
    async fn attempt(
        &self,
        number: u32,
        query: &str,
        deadline: Instant,
    ) -> Result<Vec<Passage>, RetrievalError> {
        let started = Instant::now();
        let search = KnowledgeBaseVectorSearchConfiguration::builder()
            .number_of_results(i32::try_from(self.settings.top_k.clamp(1, MAX_TOP_K)).unwrap_or(5))
            .build();
        let request = self
            .client
            .retrieve()
            .knowledge_base_id(&self.settings.knowledge_base_id)
            .retrieval_query(KnowledgeBaseQuery::builder().text(query).build())
            .retrieval_configuration(
                KnowledgeBaseRetrievalConfiguration::builder()
                    .vector_search_configuration(search)
                    .build(),
            );
        let result = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => Err(RetrievalError::Timeout),
            Ok(Ok(output)) => Ok(read_output(output)),
            Ok(Err(error)) => Err(classify(error)),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(passages) => tracing::debug!(
                attempt = number,
                latency_ms,
                passages = passages.len(),
                "knowledge base answered"
            ),
            Err(error) => tracing::debug!(attempt = number, latency_ms, error = %error,
                "knowledge base attempt failed"),
        }
        result
    }
}

impl PassageRetriever for BedrockKnowledgeBase {
    async fn retrieve(
        &self,
        query: &str,
        deadline: Instant,
    ) -> Result<Vec<Passage>, RetrievalError> {
        if Instant::now() >= deadline {
            return Err(RetrievalError::Timeout);
        }
        let query = query_text(query);
        retry(&self.settings.backoff, deadline, |number| {
            self.attempt(number, query, deadline)
        })
        .await
    }
}

/// The query for a user's turn: the turn trimmed, cut to its last [`MAX_QUERY_CHARS`]
/// characters (the latest words of a burst matter most).
pub fn query_text(turn: &str) -> &str {
    let turn = turn.trim();
    match turn.char_indices().rev().nth(MAX_QUERY_CHARS - 1) {
        Some((start, _)) => &turn[start..],
        None => turn,
    }
}

/// The [`RetrievalError`] for a failed call.
fn classify(error: SdkError<RetrieveError>) -> RetrievalError {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let service = match error {
        SdkError::ServiceError(service) => service.into_err(),
        SdkError::TimeoutError(_) => return RetrievalError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            return RetrievalError::Timeout;
        }
        other => {
            let detail = aws_sdk_bedrockagentruntime::error::DisplayErrorContext(&other);
            return RetrievalError::Transport(clean(&detail.to_string()));
        }
    };
    let code = service.code().unwrap_or("UnknownError").to_owned();
    let message = clean(service.message().unwrap_or("no message"));
    match &service {
        RetrieveError::ThrottlingException(_)
        | RetrieveError::InternalServerException(_)
        | RetrieveError::BadGatewayException(_)
        | RetrieveError::DependencyFailedException(_)
        | RetrieveError::ServiceQuotaExceededException(_) => {
            RetrievalError::Unavailable { code, message }
        }
        RetrieveError::AccessDeniedException(_) => RetrievalError::Denied { code, message },
        RetrieveError::ResourceNotFoundException(_) => RetrievalError::NotFound { code, message },
        RetrieveError::ValidationException(_) | RetrieveError::ConflictException(_) => {
            RetrievalError::Refused { code, message }
        }
        // An exception this SDK does not name: a 5xx or 429 (ServiceUnavailableException) may
        // pass; anything else is refused.
        _ if status.is_some_and(|s| s == 429 || s >= 500) => {
            RetrievalError::Unavailable { code, message }
        }
        _ => RetrievalError::Refused { code, message },
    }
}

/// A service's message made fit for an error and a log: blanks collapsed, cut short.
fn clean(message: &str) -> String {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match excerpt(&message, MAX_MESSAGE_CHARS) {
        (kept, true) => format!("{kept}…"),
        (_, false) => message,
    }
}

/// The passages of `Retrieve`'s answer, in its order (best first), each bounded; results
/// without text are left out.
fn read_output(output: RetrieveOutput) -> Vec<Passage> {
    output
        .retrieval_results()
        .iter()
        .filter_map(passage)
        .collect()
}

/// One result as a passage, when it has text.
fn passage(result: &KnowledgeBaseRetrievalResult) -> Option<Passage> {
    let text = result.content()?.text().trim();
    if text.is_empty() {
        return None;
    }
    Some(Passage {
        text: cut(text, MAX_PASSAGE_BYTES),
        source: result
            .location()
            .and_then(source)
            .map(|s| cut(s.trim(), MAX_SOURCE_BYTES))
            .filter(|s| !s.is_empty()),
        score: result.score(),
    })
}

/// The URI or URL of a result's location, whichever kind it is.
fn source(location: &RetrievalResultLocation) -> Option<&str> {
    location
        .s3_location()
        .and_then(|l| l.uri())
        .or_else(|| location.web_location().and_then(|l| l.url()))
        .or_else(|| location.confluence_location().and_then(|l| l.url()))
        .or_else(|| location.salesforce_location().and_then(|l| l.url()))
        .or_else(|| location.share_point_location().and_then(|l| l.url()))
        .or_else(|| location.kendra_document_location().and_then(|l| l.uri()))
        .or_else(|| location.one_drive_location().and_then(|l| l.url()))
        .or_else(|| location.google_drive_location().and_then(|l| l.url()))
        .or_else(|| location.custom_document_location().and_then(|l| l.id()))
}

/// `text` cut to at most `max_bytes` (at a character boundary, `…` marking the cut).
fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let ellipsis = '…'.len_utf8();
    let mut end = max_bytes.saturating_sub(ellipsis);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text[..end].trim_end())
}

/// The passages as one block of text for the model, at most `max_bytes`: each numbered, with
/// its source when known, in the order given (best first). A passage that does not fit whole is
/// cut to the room left, when that room is worth it, and the rest are left out. Empty without
/// passages.
pub fn passages_block(passages: &[Passage], max_bytes: usize) -> String {
    /// Less room than this left for a passage's text is not worth a cut passage.
    const MIN_USEFUL_BYTES: usize = 80;
    let mut block = String::new();
    for (index, passage) in passages.iter().enumerate() {
        let separator = if block.is_empty() { "" } else { "\n\n" };
        let header = match &passage.source {
            Some(source) => format!("[{}] (source: {source})\n", index + 1),
            None => format!("[{}]\n", index + 1),
        };
        let room = max_bytes.saturating_sub(block.len() + separator.len() + header.len());
        let text = passage.text.trim();
        if text.len() <= room {
            block.push_str(separator);
            block.push_str(&header);
            block.push_str(text);
            continue;
        }
        if room >= MIN_USEFUL_BYTES {
            block.push_str(separator);
            block.push_str(&header);
            block.push_str(&cut(text, room));
        }
        break;
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str, source: Option<&str>) -> Passage {
        Passage {
            text: text.to_owned(),
            source: source.map(str::to_owned),
            score: None,
        }
    }

    #[test]
    fn passages_are_numbered_with_their_source() {
        let block = passages_block(
            &[
                passage("Returns within 30 days.", Some("s3://docs/returns.md")),
                passage("  We ship to the EU.\n", None),
            ],
            10_000,
        );
        assert_eq!(
            block,
            "[1] (source: s3://docs/returns.md)\nReturns within 30 days.\n\n[2]\nWe ship to the EU."
        );
        assert_eq!(passages_block(&[], 10_000), "");
    }

    #[test]
    fn the_block_stays_within_its_budget() {
        let passages: Vec<Passage> = (0..10)
            .map(|i| passage(&format!("{i}{}", "é".repeat(150)), Some("s3://b/k")))
            .collect();
        for max in [0, 50, 100, 301, 700, 1000, 2999, 100_000] {
            let block = passages_block(&passages, max);
            assert!(block.len() <= max, "{max}: {} bytes", block.len());
        }
        // Three whole passages take 976 bytes: a fourth gets the 99 left, cut.
        let block = passages_block(&passages, 1100);
        assert!(block.starts_with("[1] (source: s3://b/k)\n0é"), "{block}");
        assert!(block.contains("\n3é") && !block.contains("[5]"), "{block}");
        assert!(block.ends_with('…'), "the last one is cut: {block}");
        let whole = passages_block(&passages, 1000);
        assert!(whole.contains("[3]") && !whole.contains("[4]") && !whole.ends_with('…'));
        assert_eq!(
            passages_block(&passages, 50),
            "",
            "no room for a useful passage"
        );
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "ü".repeat(2000);
        let cut_text = cut(&long, MAX_PASSAGE_BYTES);
        assert!(cut_text.len() <= MAX_PASSAGE_BYTES && cut_text.ends_with('…'));
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 4), "a…");
    }

    #[test]
    fn the_query_is_the_turns_end_within_the_limit() {
        assert_eq!(query_text("  where is my order?\n"), "where is my order?");
        let long = format!("{}{}", "a".repeat(5), "é".repeat(MAX_QUERY_CHARS));
        let query = query_text(&long);
        assert_eq!(query.chars().count(), MAX_QUERY_CHARS);
        assert!(query.chars().all(|c| c == 'é'));
        let exact = "x".repeat(MAX_QUERY_CHARS);
        assert_eq!(query_text(&exact), exact);
    }

    #[test]
    fn transient_failures_are_retried_and_the_others_are_not() {
        let service = |code: &str| (code.to_owned(), "m".to_owned());
        let (code, message) = service("ThrottlingException");
        assert_eq!(
            RetrievalError::Unavailable { code, message }.retry_hint(),
            RetryHint::Backoff
        );
        assert_eq!(RetrievalError::Timeout.retry_hint(), RetryHint::Backoff);
        assert!(RetrievalError::Transport("reset".into()).is_transient());
        let (code, message) = service("AccessDeniedException");
        assert_eq!(
            RetrievalError::Denied { code, message }.retry_hint(),
            RetryHint::Never
        );
        let (code, message) = service("ResourceNotFoundException");
        assert!(!RetrievalError::NotFound { code, message }.is_transient());
        let (code, message) = service("ValidationException");
        assert!(!RetrievalError::Refused { code, message }.is_transient());
    }
}
