//! Amazon Bedrock's Converse API, through the AWS SDK: the function's role signs each request
//! (SigV4), so no key is stored anywhere. `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` (or
//! `AWS_ENDPOINT_URL`) sends it elsewhere, as for every AWS client here; a non-empty
//! [`LlmSettings::base_url`] does the same for this client alone.
//!
//! The model is a model id (`amazon.nova-lite-v1:0`) or a cross-region inference profile id
//! (`us.amazon.nova-lite-v1:0`); Converse takes both as `modelId`. The SDK's own retries are off:
//! attempts are retried here, like the other providers', within the caller's deadline.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ConversationRole, DocumentBlock, DocumentFormat,
    DocumentSource, GuardrailConfiguration, ImageBlock, ImageFormat, ImageSource, Message,
    StopReason, SystemContentBlock, Tool, ToolConfiguration, ToolInputSchema, ToolResultBlock,
    ToolResultContentBlock, ToolResultStatus, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document as Json, Number};
use tokio::time::Instant;

use super::http::{self, Target};
use super::{
    Completion, InlineFile, Llm, LlmError, LlmRefusal, LlmSettings, Prompt, ToolCall,
    ToolDeclaration, ToolRound,
};
use crate::conversation::Role;
use crate::retry::retry;
use crate::whatsapp::media::essence;

const PROVIDER: &str = "bedrock";

/// The model used when none is configured: Amazon Nova Lite, fast and cheap, reading text,
/// images and documents. See [`default_model`].
pub const DEFAULT_MODEL: &str = "amazon.nova-lite-v1:0";

/// The prefixes of Bedrock's system-defined cross-region inference profiles.
const PROFILE_PREFIXES: &[&str] = &["us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"];

/// A system prompt shorter than this (about 1,024 tokens, the smallest cache checkpoint any
/// model takes) gets no cache point: there would be nothing to cache.
const MIN_CACHED_SYSTEM_BYTES: usize = 4096;

/// The default model id for a function in `region`: [`DEFAULT_MODEL`] through its geography's
/// cross-region inference profile (`us.`, `eu.`, `apac.`), which Nova Lite needs in most
/// regions; the model id alone elsewhere.
pub fn default_model(region: Option<&str>) -> String {
    let prefix = match region.and_then(|r| r.split('-').next()) {
        Some("us") => "us.",
        Some("eu") => "eu.",
        Some("ap") => "apac.",
        _ => "",
    };
    format!("{prefix}{DEFAULT_MODEL}")
}

/// The foundation model behind `model`: the id without its inference profile prefix or ARN.
pub fn foundation_model(model: &str) -> &str {
    let id = model.rsplit('/').next().unwrap_or(model);
    match id.split_once('.') {
        Some((prefix, rest)) if PROFILE_PREFIXES.contains(&prefix) => rest,
        _ => id,
    }
}

/// Whether Bedrock caches prompts for `model` (Amazon Nova, and Claude from 3.5 Haiku and 3.7
/// Sonnet on); a cache point sent to another model is refused as invalid.
pub fn caches_prompts(model: &str) -> bool {
    const CACHING: &[&str] = &[
        "amazon.nova-",
        "anthropic.claude-3-5-haiku",
        "anthropic.claude-3-7-sonnet",
        "anthropic.claude-sonnet-4",
        "anthropic.claude-opus-4",
        "anthropic.claude-haiku-4",
    ];
    let id = foundation_model(model);
    CACHING.iter().any(|prefix| id.starts_with(prefix))
}

/// A Bedrock guardrail that every request goes through. Its intervention is the answer the user
/// gets (the guardrail's blocked message), never a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrail {
    /// `GUARDRAIL_ID`: the guardrail's id or ARN.
    pub id: String,
    /// `GUARDRAIL_VERSION`: a version number, or `DRAFT`.
    pub version: String,
}

/// A model on Amazon Bedrock.
pub struct BedrockChat {
    client: Client,
    settings: LlmSettings,
    /// The client's region, for the errors that say where to act.
    region: String,
}

impl BedrockChat {
    /// A client of Converse built from `aws` (credentials, region, endpoint), without the SDK's
    /// retries and with [`LlmSettings::timeout`] per attempt. No I/O.
    pub fn new(aws: &SdkConfig, settings: LlmSettings) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(settings.timeout)
            .disable_operation_timeout()
            .build();
        let mut config = aws_sdk_bedrockruntime::config::Builder::from(aws)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        let base_url = settings.base_url.trim().trim_end_matches('/');
        if !base_url.is_empty() {
            config = config.endpoint_url(base_url);
        }
        let region = aws
            .region()
            .map_or_else(|| "(no region)".to_owned(), ToString::to_string);
        Self {
            client: Client::from_conf(config.build()),
            settings,
            region,
        }
    }

    /// The request for `prompt`, ready to send (and to send again).
    fn request(
        &self,
        prompt: &Prompt,
    ) -> Result<
        aws_sdk_bedrockruntime::operation::converse::builders::ConverseFluentBuilder,
        LlmError,
    > {
        let model = self.settings.model.trim();
        let mut request = self
            .client
            .converse()
            .model_id(model)
            .set_system(system(&prompt.system, caches_prompts(model))?)
            .set_messages(Some(messages(prompt)?))
            .set_tool_config(tool_config(&prompt.tools)?);
        if let Some(guardrail) = &self.settings.guardrail {
            let config = GuardrailConfiguration::builder()
                .guardrail_identifier(&guardrail.id)
                .guardrail_version(&guardrail.version)
                .build();
            request = request.guardrail_config(config);
        }
        Ok(request)
    }

    /// Sends one attempt, giving up at `deadline`, and logs its outcome.
    async fn attempt(
        &self,
        number: u32,
        request: aws_sdk_bedrockruntime::operation::converse::builders::ConverseFluentBuilder,
        deadline: Instant,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let (status, result) = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => (None, Err(LlmError::Timeout)),
            Ok(Ok(output)) => (Some(200), read_output(output)),
            Ok(Err(error)) => {
                let status = error.raw_response().map(|r| r.status().as_u16());
                (status, Err(self.classify(error)))
            }
        };
        let target = Target {
            provider: PROVIDER,
            model: &self.settings.model,
        };
        http::log_attempt(target, number, status, started, &result);
        result
    }

    /// The [`LlmError`] for a failed call, saying what to do when the fix is known.
    fn classify(&self, error: SdkError<ConverseError>) -> LlmError {
        let service = match error {
            SdkError::ServiceError(service) => service.into_err(),
            SdkError::TimeoutError(_) => return LlmError::Timeout,
            SdkError::DispatchFailure(failure) if failure.is_timeout() => return LlmError::Timeout,
            other => {
                let detail = aws_sdk_bedrockruntime::error::DisplayErrorContext(&other);
                return LlmError::Transport(http::clean_message(&detail.to_string(), None));
            }
        };
        let code = service.code().unwrap_or("UnknownError").to_owned();
        let message = http::clean_message(service.message().unwrap_or("no message"), None);
        let model = self.settings.model.trim();
        let (transient, refusal, advice) = match &service {
            ConverseError::ThrottlingException(_)
            | ConverseError::ServiceUnavailableException(_)
            | ConverseError::ModelNotReadyException(_)
            | ConverseError::ModelTimeoutException(_)
            | ConverseError::ModelErrorException(_)
            | ConverseError::InternalServerException(_) => (true, None, String::new()),
            ConverseError::AccessDeniedException(_) => (
                false,
                Some(LlmRefusal::AccessDenied),
                format!(
                    " (enable {model} in the Bedrock console of {}, completing what its page \
                     asks before first use, and check the processor role's bedrock:InvokeModel grant)",
                    self.region
                ),
            ),
            ConverseError::ResourceNotFoundException(_) => (
                false,
                Some(LlmRefusal::UnknownModel),
                format!(" (check LLM_MODEL: {model} in {})", self.region),
            ),
            ConverseError::ValidationException(_) => (
                false,
                Some(LlmError::invalid_request_refusal(&message)),
                String::new(),
            ),
            _ => (false, None, String::new()),
        };
        LlmError::Service {
            code,
            message: format!("{message}{advice}"),
            transient,
            refusal,
        }
    }
}

impl Llm for BedrockChat {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, LlmError> {
        if Instant::now() >= deadline {
            return Err(LlmError::Timeout);
        }
        let request = self.request(prompt)?;
        retry(&self.settings.backoff, deadline, |number| {
            self.attempt(number, request.clone(), deadline)
        })
        .await
    }
}

/// Converse's `system`: the system prompt, then a cache point when `cache` and the prompt is long
/// enough to be cached; none for an empty prompt.
fn system(text: &str, cache: bool) -> Result<Option<Vec<SystemContentBlock>>, LlmError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut blocks = vec![SystemContentBlock::Text(text.to_owned())];
    if cache && text.len() >= MIN_CACHED_SYSTEM_BYTES {
        let point = CachePointBlock::builder()
            .r#type(CachePointType::Default)
            .build()
            .map_err(unbuildable)?;
        blocks.push(SystemContentBlock::CachePoint(point));
    }
    Ok(Some(blocks))
}

/// Converse's `messages`: the prompt's turns (already alternating and starting with the user's,
/// as Converse requires), the files after the text of the last one, then the rounds of tool use.
fn messages(prompt: &Prompt) -> Result<Vec<Message>, LlmError> {
    let mut messages = turn_messages(prompt)?;
    for round in &prompt.rounds {
        messages.extend(round_messages(round)?);
    }
    Ok(messages)
}

/// The prompt's turns as Converse's messages.
fn turn_messages(prompt: &Prompt) -> Result<Vec<Message>, LlmError> {
    let last = prompt.turns.len().saturating_sub(1);
    prompt
        .turns
        .iter()
        .enumerate()
        .map(|(index, turn)| {
            let mut content = vec![ContentBlock::Text(turn.text.clone())];
            if index == last {
                for (number, file) in prompt.files.iter().enumerate() {
                    content.push(file_block(file, number + 1)?);
                }
            }
            Message::builder()
                .role(match turn.role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                })
                .set_content(Some(content))
                .build()
                .map_err(unbuildable)
        })
        .collect()
}

/// A round of tool use: the assistant's `toolUse` blocks, then the user's `toolResult` blocks.
fn round_messages(round: &ToolRound) -> Result<[Message; 2], LlmError> {
    let mut said: Vec<ContentBlock> = round.text.iter().cloned().map(ContentBlock::Text).collect();
    for call in &round.calls {
        let block = ToolUseBlock::builder()
            .tool_use_id(&call.id)
            .name(&call.name)
            .input(to_document(&call.arguments))
            .build()
            .map_err(unbuildable)?;
        said.push(ContentBlock::ToolUse(block));
    }
    let mut results = Vec::new();
    for result in &round.results {
        let block = ToolResultBlock::builder()
            .tool_use_id(&result.call_id)
            .content(ToolResultContentBlock::Text(result.content.clone()))
            .set_status(result.is_error.then_some(ToolResultStatus::Error))
            .build()
            .map_err(unbuildable)?;
        results.push(ContentBlock::ToolResult(block));
    }
    let message = |role, content| {
        Message::builder()
            .role(role)
            .set_content(Some(content))
            .build()
            .map_err(unbuildable)
    };
    Ok([
        message(ConversationRole::Assistant, said)?,
        message(ConversationRole::User, results)?,
    ])
}

/// Converse's `toolConfig` for the tools offered; none without tools.
fn tool_config(tools: &[ToolDeclaration]) -> Result<Option<ToolConfiguration>, LlmError> {
    if tools.is_empty() {
        return Ok(None);
    }
    let mut specifications = Vec::new();
    for tool in tools {
        let specification = ToolSpecification::builder()
            .name(&tool.name)
            .description(&tool.description)
            .input_schema(ToolInputSchema::Json(to_document(&tool.parameters)))
            .build()
            .map_err(unbuildable)?;
        specifications.push(Tool::ToolSpec(specification));
    }
    ToolConfiguration::builder()
        .set_tools(Some(specifications))
        .build()
        .map(Some)
        .map_err(unbuildable)
}

/// A JSON value as the SDK's document.
fn to_document(value: &serde_json::Value) -> Json {
    use serde_json::Value;
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) => Json::Number(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Number::PosInt(u),
            (None, Some(i)) => Number::NegInt(i),
            _ => Number::Float(n.as_f64().unwrap_or_default()),
        }),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(items) => Json::Array(items.iter().map(to_document).collect()),
        Value::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_document(v)))
                .collect(),
        ),
    }
}

/// The SDK's document as a JSON value (a float JSON cannot hold becomes `null`).
fn from_document(document: &Json) -> serde_json::Value {
    use serde_json::Value;
    match document {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(Number::PosInt(u)) => Value::from(*u),
        Json::Number(Number::NegInt(i)) => Value::from(*i),
        Json::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(from_document).collect()),
        Json::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_document(v)))
                .collect(),
        ),
    }
}

/// A file as Converse's image or document block (`number` names documents, which must have
/// distinct names); a file of another type as a note saying it was left out.
fn file_block(file: &InlineFile, number: usize) -> Result<ContentBlock, LlmError> {
    let bytes = || Blob::new(file.bytes.clone());
    if let Some(format) = image_format(&file.mime_type) {
        let image = ImageBlock::builder()
            .format(format)
            .source(ImageSource::Bytes(bytes()))
            .build()
            .map_err(unbuildable)?;
        return Ok(ContentBlock::Image(image));
    }
    if let Some(format) = document_format(&file.mime_type) {
        let document = DocumentBlock::builder()
            .format(format)
            .name(format!("document-{number}"))
            .source(DocumentSource::Bytes(bytes()))
            .build()
            .map_err(unbuildable)?;
        return Ok(ContentBlock::Document(document));
    }
    Ok(ContentBlock::Text(format!(
        "[A file of type {} was left out: this model cannot read it.]",
        file.mime_type
    )))
}

/// Converse's format for an image of `mime_type`, when it takes it.
fn image_format(mime_type: &str) -> Option<ImageFormat> {
    match essence(mime_type).as_str() {
        "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::Webp),
        _ => None,
    }
}

/// Converse's format for a document of `mime_type`, when it takes it.
fn document_format(mime_type: &str) -> Option<DocumentFormat> {
    match essence(mime_type).as_str() {
        "application/pdf" => Some(DocumentFormat::Pdf),
        "text/csv" => Some(DocumentFormat::Csv),
        "text/plain" => Some(DocumentFormat::Txt),
        "text/markdown" => Some(DocumentFormat::Md),
        "text/html" => Some(DocumentFormat::Html),
        "application/msword" => Some(DocumentFormat::Doc),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            Some(DocumentFormat::Docx)
        }
        "application/vnd.ms-excel" => Some(DocumentFormat::Xls),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
            Some(DocumentFormat::Xlsx)
        }
        _ => None,
    }
}

/// The answer in Converse's output. A guardrail's intervention is an answer (its blocked
/// message); a prompt longer than the context window is a refusal, as from the other providers.
fn read_output(output: ConverseOutput) -> Result<Completion, LlmError> {
    let blocks = output
        .output()
        .and_then(|o| o.as_message().ok())
        .map(Message::content)
        .unwrap_or_default();
    let text: String = blocks
        .iter()
        .filter_map(|block| block.as_text().ok())
        .map(String::as_str)
        .collect();
    let tool_calls: Vec<ToolCall> = blocks
        .iter()
        .filter_map(|block| block.as_tool_use().ok())
        .map(|used| ToolCall {
            id: used.tool_use_id().to_owned(),
            name: used.name().to_owned(),
            arguments: from_document(used.input()),
            signature: None,
        })
        .collect();
    let stop = output.stop_reason();
    if *stop == StopReason::ModelContextWindowExceeded {
        return Err(LlmError::Service {
            code: "ModelContextWindowExceeded".to_owned(),
            message: "the prompt exceeds the model's context window".to_owned(),
            transient: false,
            refusal: Some(LlmRefusal::ContextTooLong),
        });
    }
    let text = text.trim();
    if text.is_empty() && tool_calls.is_empty() {
        return Err(LlmError::NoAnswer(format!(
            "the answer is empty (stopReason {})",
            stop.as_str()
        )));
    }
    if *stop == StopReason::GuardrailIntervened {
        tracing::info!(
            provider = PROVIDER,
            "the guardrail intervened: its message is the answer"
        );
    }
    let usage = output.usage();
    let tokens = |count: i32| u64::try_from(count).ok();
    Ok(Completion {
        text: text.to_owned(),
        tool_calls,
        input_tokens: usage.and_then(|u| tokens(u.input_tokens())),
        output_tokens: usage.and_then(|u| tokens(u.output_tokens())),
    })
}

/// A request part the SDK would not build (a required field missing): a defect here, reported
/// as a failure that is not retried.
fn unbuildable(error: aws_sdk_bedrockruntime::error::BuildError) -> LlmError {
    LlmError::BadResponse(format!("the Bedrock request could not be built: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_goes_through_the_regions_geography() {
        assert_eq!(default_model(Some("us-east-1")), "us.amazon.nova-lite-v1:0");
        assert_eq!(default_model(Some("eu-west-1")), "eu.amazon.nova-lite-v1:0");
        assert_eq!(
            default_model(Some("ap-northeast-1")),
            "apac.amazon.nova-lite-v1:0"
        );
        assert_eq!(default_model(Some("sa-east-1")), "amazon.nova-lite-v1:0");
        assert_eq!(default_model(None), "amazon.nova-lite-v1:0");
    }

    #[test]
    fn tells_the_foundation_model_and_whether_it_caches() {
        assert_eq!(
            foundation_model("eu.amazon.nova-lite-v1:0"),
            "amazon.nova-lite-v1:0"
        );
        assert_eq!(
            foundation_model("global.anthropic.claude-haiku-4-5-20251001-v1:0"),
            "anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        assert_eq!(foundation_model("meta.llama3-8b"), "meta.llama3-8b");
        assert_eq!(
            foundation_model(
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.amazon.nova-pro-v1:0"
            ),
            "amazon.nova-pro-v1:0"
        );
        assert!(caches_prompts("us.amazon.nova-lite-v1:0"));
        assert!(caches_prompts("anthropic.claude-sonnet-4-20250514-v1:0"));
        assert!(!caches_prompts("meta.llama3-70b-instruct-v1:0"));
        assert!(!caches_prompts("anthropic.claude-3-haiku-20240307-v1:0"));
    }

    #[test]
    fn only_a_long_system_prompt_of_a_caching_model_gets_a_cache_point() {
        let long = "x".repeat(MIN_CACHED_SYSTEM_BYTES);
        let blocks = system(&long, true).unwrap().unwrap();
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].is_cache_point());
        assert_eq!(system(&long, false).unwrap().unwrap().len(), 1);
        assert_eq!(system("be kind", true).unwrap().unwrap().len(), 1);
        assert_eq!(system("  ", true).unwrap(), None);
    }

    #[test]
    fn files_become_images_documents_or_a_note() {
        let file = |mime: &str| InlineFile {
            mime_type: mime.to_owned(),
            bytes: vec![1, 2, 3],
        };
        assert!(file_block(&file("image/JPEG"), 1).unwrap().is_image());
        let ContentBlock::Document(document) = file_block(&file("application/pdf"), 2).unwrap()
        else {
            panic!("not a document");
        };
        assert_eq!(document.name(), "document-2");
        assert_eq!(document.format(), &DocumentFormat::Pdf);
        let ContentBlock::Text(note) = file_block(&file("audio/ogg; codecs=opus"), 1).unwrap()
        else {
            panic!("not a note");
        };
        assert!(note.contains("audio/ogg"), "{note}");
    }
}
