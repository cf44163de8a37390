//! The processor's configuration, read once at start from environment variables.

use std::time::Duration;

use shared::env_config::{ConfigError, Env};
use shared::knowledge::DocumentUri;
use shared::llm::{Guardrail, Provider};
use shared::secrets::DEFAULT_REFRESH;
use shared::whatsapp::graph::DEFAULT_BASE_URL as META_DEFAULT_BASE_URL;

use crate::controls::Controls;
use crate::handoff::HandoffSettings;

/// The Graph API version used unless `META_API_VERSION` says otherwise.
pub const DEFAULT_META_API_VERSION: &str = "v26.0";
/// The persona used unless `SYSTEM_PROMPT` says otherwise.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant chatting on WhatsApp. Answer in the user's language, \
briefly and clearly, in plain text without Markdown tables or headings.";
/// Sent when the LLM stays down, unless `FALLBACK_MESSAGE` says otherwise.
pub const DEFAULT_FALLBACK_MESSAGE: &str =
    "Sorry, I can't answer right now. Please try again in a little while.";
/// Sent for messages the bot cannot read, unless `UNSUPPORTED_MESSAGE` says otherwise.
pub const DEFAULT_UNSUPPORTED_MESSAGE: &str = "Sorry, I can't open that kind of message. I can read \
text, voice notes, photos, PDF and text documents, locations and contacts.";

/// The confirmation of an opt-out unless `OPTED_OUT_MESSAGE` says otherwise.
pub const DEFAULT_OPTED_OUT_MESSAGE: &str =
    "You won't get any more messages from us. Send START if you want to talk again.";

/// The confirmation of an opt-in unless `OPTED_IN_MESSAGE` says otherwise.
pub const DEFAULT_OPTED_IN_MESSAGE: &str = "Welcome back! How can I help you?";

/// The confirmation of `/reset` unless `RESET_MESSAGE` says otherwise.
pub const DEFAULT_RESET_MESSAGE: &str =
    "Done: I've forgotten our conversation. What can I do for you?";

/// The daily budget's notice unless `BUDGET_REACHED_MESSAGE` says otherwise.
pub const DEFAULT_BUDGET_REACHED_MESSAGE: &str =
    "We've talked a lot today! I'll be glad to answer again tomorrow.";

/// The rate limit's notice unless `RATE_LIMITED_MESSAGE` says otherwise.
pub const DEFAULT_RATE_LIMITED_MESSAGE: &str =
    "You're sending messages faster than I can answer. Please wait a minute, then write again.";

/// Sent when a voice note cannot be heard, unless `VOICE_NOTE_FAILED_MESSAGE` says otherwise.
pub const DEFAULT_VOICE_NOTE_FAILED_MESSAGE: &str =
    "Sorry, I couldn't listen to that voice note. Could you type it?";
/// The transcription model unless `TRANSCRIPTION_MODEL` says otherwise (OpenAI's; Groq's is
/// `whisper-large-v3-turbo`).
pub const DEFAULT_TRANSCRIPTION_MODEL: &str = "whisper-1";

/// The words that ask for a person unless `HANDOFF_KEYWORDS` says otherwise.
pub const DEFAULT_HANDOFF_KEYWORDS: &str = "HUMANO,AGENTE,PERSONA,ASESOR,HUMAN,AGENT";
/// What the user is told when the conversation goes to a person, unless `HANDOFF_MESSAGE` says
/// otherwise.
pub const DEFAULT_HANDOFF_MESSAGE: &str =
    "I'm passing you to a person from our team; they will write to you here shortly.";

/// Every environment variable [`Config::from`] reads.
pub const VARIABLES: &[&str] = &[
    "TABLE_NAME",
    "SECRET_ID",
    "SECRETS_REFRESH_SECONDS",
    "LLM_PROVIDER",
    "LLM_MODEL",
    "LLM_BASE_URL",
    "LLM_TIMEOUT_SECONDS",
    "SYSTEM_PROMPT",
    "META_API_BASE_URL",
    "META_API_VERSION",
    "HISTORY_MAX_MESSAGES",
    "CONTEXT_TTL_DAYS",
    "FALLBACK_MESSAGE",
    "UNSUPPORTED_MESSAGE",
    "MAX_RECEIVE_COUNT",
    "MAX_MESSAGE_AGE_HOURS",
    "METRICS_NAMESPACE",
    "TRANSCRIPTION_BASE_URL",
    "TRANSCRIPTION_MODEL",
    "VOICE_NOTE_FAILED_MESSAGE",
    "VISION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_REGION",
    "GUARDRAIL_ID",
    "GUARDRAIL_VERSION",
    "KNOWLEDGE_URI",
    "KNOWLEDGE_MAX_TOKENS",
    "KNOWLEDGE_REFRESH_SECONDS",
    "KNOWLEDGE_BASE_ID",
    "KNOWLEDGE_BASE_TOP_K",
    "TOOLS_URI",
    "TOOLS_MAX_ROUNDS",
    "STOP_KEYWORDS",
    "START_KEYWORDS",
    "OPTED_OUT_MESSAGE",
    "OPTED_IN_MESSAGE",
    "RESET_MESSAGE",
    "RATE_LIMIT_PER_MINUTE",
    "RATE_LIMITED_MESSAGE",
    "MAINTENANCE_MESSAGE",
    "DAILY_TOKEN_BUDGET",
    "BUDGET_REACHED_MESSAGE",
    "HANDOFF_AGENT_NUMBER",
    "HANDOFF_KEYWORDS",
    "HANDOFF_MESSAGE",
    "HANDOFF_IDLE_HOURS",
    "NUMBER_SETTINGS",
];

/// The processor's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `TABLE_NAME`: the DynamoDB table for conversations and claims.
    pub table_name: String,
    /// `SECRET_ID`: the Secrets Manager secret holding `META_ACCESS_TOKEN` and `LLM_API_KEY`.
    pub secret_id: String,
    /// `SECRETS_REFRESH_SECONDS` (default 300): how long secrets are cached.
    pub secrets_refresh: Duration,
    /// `LLM_PROVIDER`: `openai` (any OpenAI-compatible server), `gemini` or `bedrock`.
    pub llm_provider: Provider,
    /// `LLM_MODEL` (default `gpt-4o-mini` for openai, `gemini-2.5-flash` for gemini, Amazon Nova
    /// Lite through the region's inference profile for bedrock: see
    /// [`shared::llm::bedrock::default_model`]).
    pub llm_model: String,
    /// `LLM_BASE_URL` (default: the provider's public endpoint; for bedrock, empty: the AWS
    /// SDK's endpoint for the region, or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
    pub llm_base_url: String,
    /// `GUARDRAIL_ID` and `GUARDRAIL_VERSION` (default `DRAFT`): the Bedrock guardrail every
    /// request goes through; `None` without an id.
    pub llm_guardrail: Option<Guardrail>,
    /// `LLM_TIMEOUT_SECONDS` (default 25): the limit of one LLM call.
    pub llm_timeout: Duration,
    /// `SYSTEM_PROMPT`: the persona.
    pub system_prompt: String,
    /// `META_API_BASE_URL` (default `https://graph.facebook.com`).
    pub meta_api_base_url: String,
    /// `META_API_VERSION` (default [`DEFAULT_META_API_VERSION`]).
    pub meta_api_version: String,
    /// `HISTORY_MAX_MESSAGES` (default 20, 2 to 200): turns kept per conversation.
    pub history_max_messages: usize,
    /// `CONTEXT_TTL_DAYS` (default 14, 1 to 365): how long a conversation is remembered.
    pub context_ttl_days: u32,
    /// `FALLBACK_MESSAGE`: sent when the LLM stays down on a message's last delivery.
    pub fallback_message: String,
    /// `UNSUPPORTED_MESSAGE`: sent for messages the bot cannot read.
    pub unsupported_message: String,
    /// `MAX_RECEIVE_COUNT` (default 5): the queue's redrive maximum.
    pub max_receive_count: u32,
    /// `MAX_MESSAGE_AGE_HOURS` (default 24, 0 for no limit, at most 8760): a message sent longer
    /// ago than this is marked done without an answer (Meta would refuse a reply outside its
    /// 24-hour window anyway); `None` for no limit.
    pub max_message_age: Option<Duration>,
    /// `METRICS_NAMESPACE` (default `WhatsAppAssistant`): the CloudWatch namespace of the metrics.
    pub metrics_namespace: String,
    /// `TRANSCRIPTION_BASE_URL`: the OpenAI-compatible server voice notes are transcribed by
    /// (default: `LLM_BASE_URL` with `LLM_PROVIDER=openai`, else OpenAI's).
    pub transcription_base_url: String,
    /// `TRANSCRIPTION_MODEL` (default [`DEFAULT_TRANSCRIPTION_MODEL`]).
    pub transcription_model: String,
    /// `VOICE_NOTE_FAILED_MESSAGE`: sent when a voice note cannot be heard.
    pub voice_note_failed_message: String,
    /// `VISION` (default `true`): whether the model sees the images users send.
    pub vision: bool,
    /// Whether voice notes go to the model as audio instead of being transcribed: with
    /// `LLM_PROVIDER=gemini` (which hears audio natively) and no `TRANSCRIPTION_BASE_URL`.
    pub audio_inline: bool,
    /// `KNOWLEDGE_URI` (`s3://bucket/key` or `file://path`; none by default): the business's
    /// knowledge document, put in the system prompt.
    pub knowledge_uri: Option<DocumentUri>,
    /// `KNOWLEDGE_MAX_TOKENS` (default 8000, 100 to 200000): the knowledge's budget in the prompt,
    /// at about 4 bytes a token; the document's end beyond it is left out.
    pub knowledge_max_tokens: usize,
    /// `KNOWLEDGE_REFRESH_SECONDS` (default 300): how long the knowledge (and the tools file) is
    /// used before it is checked for a new version.
    pub knowledge_refresh: Duration,
    /// `TOOLS_URI` (`s3://bucket/key` or `file://path`; none by default): the tools file, the
    /// business's HTTP APIs the model may call.
    pub tools_uri: Option<DocumentUri>,
    /// `TOOLS_MAX_ROUNDS` (default 3, 1 to 5): how many rounds of tool calls one answer may make.
    pub tools_max_rounds: u32,
    /// The controls every conversation has: `STOP_KEYWORDS` (default `STOP,BAJA`),
    /// `START_KEYWORDS` (`START,ALTA`), `OPTED_OUT_MESSAGE`, `OPTED_IN_MESSAGE`, `RESET_MESSAGE`,
    /// `RATE_LIMIT_PER_MINUTE` (default 10, 0 for none), `RATE_LIMITED_MESSAGE`,
    /// `MAINTENANCE_MESSAGE` (the kill switch: set, every message gets it and no model is called),
    /// `DAILY_TOKEN_BUDGET` (default 0, none), `BUDGET_REACHED_MESSAGE`.
    pub controls: Controls,
    /// The handoff to a person: `HANDOFF_AGENT_NUMBER` (none by default: no handoff),
    /// `HANDOFF_KEYWORDS` (default `HUMANO,AGENTE,PERSONA,ASESOR,HUMAN,AGENT`), `HANDOFF_MESSAGE`,
    /// `HANDOFF_IDLE_HOURS` (default 12, 1 to 720).
    pub handoff: HandoffSettings,
    /// `NUMBER_SETTINGS` (default `true`): whether each business number's settings item is read
    /// from the table (`infra/numbers.sh`); `false` answers every number as the stack.
    pub number_settings: bool,
    /// `KNOWLEDGE_BASE_ID` (none by default): the Amazon Bedrock knowledge base each user's turn
    /// is sent to (`Retrieve`), its passages going to the model with the turn.
    pub knowledge_base_id: Option<String>,
    /// `KNOWLEDGE_BASE_TOP_K` (default 5, 1 to 20): how many passages a turn asks for.
    pub knowledge_base_top_k: u32,
    /// Lambda's `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` in MB (128 when unset): how many bursts may
    /// hold media at once (`media_lane.rs`).
    pub memory_mb: u32,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(&Env::process())
    }

    /// Reads the configuration from `env`.
    pub fn from<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let llm_provider: Provider = env.parsed_or("LLM_PROVIDER", Provider::OpenAi)?;
        // Lambda's region: Bedrock's default model goes through its geography's profile.
        let region = env.optional("AWS_REGION");
        let history_max_messages: usize = env.parsed_or("HISTORY_MAX_MESSAGES", 20)?;
        if !(2..=200).contains(&history_max_messages) {
            return Err(invalid(
                "HISTORY_MAX_MESSAGES",
                "it must be between 2 and 200",
            ));
        }
        let context_ttl_days: u32 = env.parsed_or("CONTEXT_TTL_DAYS", 14)?;
        if !(1..=365).contains(&context_ttl_days) {
            return Err(invalid("CONTEXT_TTL_DAYS", "it must be between 1 and 365"));
        }
        let max_receive_count: u32 = env.parsed_or("MAX_RECEIVE_COUNT", 5)?;
        if max_receive_count == 0 {
            return Err(invalid("MAX_RECEIVE_COUNT", "it must be at least 1"));
        }
        let max_message_age_hours: u64 = env.parsed_or("MAX_MESSAGE_AGE_HOURS", 24)?;
        if max_message_age_hours > 8760 {
            return Err(invalid(
                "MAX_MESSAGE_AGE_HOURS",
                "it must be between 0 (no limit) and 8760",
            ));
        }
        let llm_timeout = env.seconds_or("LLM_TIMEOUT_SECONDS", Duration::from_secs(25))?;
        if llm_timeout.is_zero() {
            return Err(invalid("LLM_TIMEOUT_SECONDS", "it must be at least 1"));
        }
        let meta_api_version = env
            .optional("META_API_VERSION")
            .unwrap_or_else(|| DEFAULT_META_API_VERSION.into());
        if !is_api_version(&meta_api_version) {
            return Err(invalid("META_API_VERSION", "it must look like v26.0"));
        }
        Ok(Self {
            table_name: env.required("TABLE_NAME")?,
            secret_id: env.required("SECRET_ID")?,
            secrets_refresh: env.seconds_or("SECRETS_REFRESH_SECONDS", DEFAULT_REFRESH)?,
            llm_model: env
                .optional("LLM_MODEL")
                .unwrap_or_else(|| default_model(llm_provider, region.as_deref())),
            llm_base_url: llm_base_url(env, llm_provider)?,
            llm_guardrail: guardrail(env)?,
            llm_provider,
            llm_timeout,
            system_prompt: env
                .optional("SYSTEM_PROMPT")
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
            meta_api_base_url: url(env, "META_API_BASE_URL", META_DEFAULT_BASE_URL)?,
            meta_api_version,
            history_max_messages,
            context_ttl_days,
            fallback_message: env
                .optional("FALLBACK_MESSAGE")
                .unwrap_or_else(|| DEFAULT_FALLBACK_MESSAGE.into()),
            unsupported_message: env
                .optional("UNSUPPORTED_MESSAGE")
                .unwrap_or_else(|| DEFAULT_UNSUPPORTED_MESSAGE.into()),
            max_receive_count,
            max_message_age: (max_message_age_hours > 0)
                .then(|| Duration::from_secs(max_message_age_hours * 3600)),
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "WhatsAppAssistant".into()),
            transcription_base_url: url(
                env,
                "TRANSCRIPTION_BASE_URL",
                &transcription_default_url(env, llm_provider)?,
            )?,
            transcription_model: env
                .optional("TRANSCRIPTION_MODEL")
                .unwrap_or_else(|| DEFAULT_TRANSCRIPTION_MODEL.into()),
            voice_note_failed_message: env
                .optional("VOICE_NOTE_FAILED_MESSAGE")
                .unwrap_or_else(|| DEFAULT_VOICE_NOTE_FAILED_MESSAGE.into()),
            vision: env.parsed_or("VISION", true)?,
            audio_inline: llm_provider == Provider::Gemini
                && env.optional("TRANSCRIPTION_BASE_URL").is_none(),
            memory_mb: env.parsed_or("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 128)?,
            knowledge_uri: document_uri(env, "KNOWLEDGE_URI")?,
            tools_uri: document_uri(env, "TOOLS_URI")?,
            controls: controls(env)?,
            handoff: handoff(env)?,
            number_settings: env.parsed_or("NUMBER_SETTINGS", true)?,
            tools_max_rounds: tools_max_rounds(env)?,
            knowledge_max_tokens: knowledge_max_tokens(env)?,
            knowledge_refresh: env
                .seconds_or("KNOWLEDGE_REFRESH_SECONDS", Duration::from_secs(300))?,
            knowledge_base_id: knowledge_base_id(env)?,
            knowledge_base_top_k: knowledge_base_top_k(env)?,
        })
    }
}

/// The controls' settings and texts, with their defaults.
fn controls<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Controls, ConfigError> {
    let text = |name, default: &str| env.optional(name).unwrap_or_else(|| default.to_owned());
    let rate_limit_per_minute: u64 = env.parsed_or("RATE_LIMIT_PER_MINUTE", 10)?;
    if rate_limit_per_minute > 10_000 {
        return Err(invalid(
            "RATE_LIMIT_PER_MINUTE",
            "it must be at most 10000 (0 for no limit)",
        ));
    }
    Ok(Controls {
        stop_keywords: keywords(env, "STOP_KEYWORDS", "STOP,BAJA")?,
        start_keywords: keywords(env, "START_KEYWORDS", "START,ALTA")?,
        opted_out_message: text("OPTED_OUT_MESSAGE", DEFAULT_OPTED_OUT_MESSAGE),
        opted_in_message: text("OPTED_IN_MESSAGE", DEFAULT_OPTED_IN_MESSAGE),
        reset_message: text("RESET_MESSAGE", DEFAULT_RESET_MESSAGE),
        rate_limit_per_minute,
        rate_limited_message: text("RATE_LIMITED_MESSAGE", DEFAULT_RATE_LIMITED_MESSAGE),
        maintenance_message: env.optional("MAINTENANCE_MESSAGE"),
        daily_token_budget: env.parsed_or("DAILY_TOKEN_BUDGET", 0)?,
        budget_reached_message: text("BUDGET_REACHED_MESSAGE", DEFAULT_BUDGET_REACHED_MESSAGE),
    })
}

/// The handoff's settings, with their defaults.
fn handoff<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<HandoffSettings, ConfigError> {
    let agent_number = env.optional("HANDOFF_AGENT_NUMBER");
    if let Some(number) = &agent_number
        && (!(8..=15).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(
            "HANDOFF_AGENT_NUMBER",
            "it must be the agent's WhatsApp number, 8 to 15 digits, without '+'",
        ));
    }
    let idle_hours: u64 = env.parsed_or("HANDOFF_IDLE_HOURS", 12)?;
    if !(1..=720).contains(&idle_hours) {
        return Err(invalid(
            "HANDOFF_IDLE_HOURS",
            "it must be between 1 and 720",
        ));
    }
    Ok(HandoffSettings {
        agent_number,
        keywords: keywords(env, "HANDOFF_KEYWORDS", DEFAULT_HANDOFF_KEYWORDS)?,
        message: env
            .optional("HANDOFF_MESSAGE")
            .unwrap_or_else(|| DEFAULT_HANDOFF_MESSAGE.into()),
        idle: Duration::from_secs(idle_hours * 3600),
    })
}

/// A comma-separated list of keywords, upper-cased; each a single word.
fn keywords<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    name: &'static str,
    default: &str,
) -> Result<Vec<String>, ConfigError> {
    let list = env.optional(name).unwrap_or_else(|| default.to_owned());
    let words: Vec<String> = list
        .split(',')
        .map(|word| word.trim().to_uppercase())
        .filter(|word| !word.is_empty())
        .collect();
    if words.is_empty() || words.iter().any(|w| w.contains(char::is_whitespace)) {
        return Err(invalid(name, "it must be single words separated by commas"));
    }
    Ok(words)
}

/// A document's `s3://` or `file://` URI from the variable `name`, when set.
fn document_uri<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    name: &'static str,
) -> Result<Option<DocumentUri>, ConfigError> {
    env.optional(name)
        .map(|uri| uri.parse())
        .transpose()
        .map_err(|e: shared::knowledge::BadDocumentUri| invalid(name, &e.to_string()))
}

/// `TOOLS_MAX_ROUNDS`, within its bounds.
fn tools_max_rounds<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<u32, ConfigError> {
    let rounds: u32 = env.parsed_or("TOOLS_MAX_ROUNDS", 3)?;
    if (1..=5).contains(&rounds) {
        Ok(rounds)
    } else {
        Err(invalid("TOOLS_MAX_ROUNDS", "it must be between 1 and 5"))
    }
}

/// `KNOWLEDGE_MAX_TOKENS`, within its bounds.
fn knowledge_max_tokens<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<usize, ConfigError> {
    let tokens: usize = env.parsed_or("KNOWLEDGE_MAX_TOKENS", 8000)?;
    if (100..=200_000).contains(&tokens) {
        Ok(tokens)
    } else {
        Err(invalid(
            "KNOWLEDGE_MAX_TOKENS",
            "it must be between 100 and 200000",
        ))
    }
}

/// `KNOWLEDGE_BASE_ID`: a knowledge base id is 1 to 10 letters and digits.
fn knowledge_base_id<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<String>, ConfigError> {
    match env.optional("KNOWLEDGE_BASE_ID") {
        Some(id) if id.len() > 10 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Err(invalid(
                "KNOWLEDGE_BASE_ID",
                "it must be a knowledge base id: up to 10 letters and digits",
            ))
        }
        id => Ok(id),
    }
}

/// `KNOWLEDGE_BASE_TOP_K`, within its bounds.
fn knowledge_base_top_k<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<u32, ConfigError> {
    let top_k: u32 = env.parsed_or("KNOWLEDGE_BASE_TOP_K", 5)?;
    if (1..=shared::knowledge_base::MAX_TOP_K).contains(&top_k) {
        Ok(top_k)
    } else {
        Err(invalid(
            "KNOWLEDGE_BASE_TOP_K",
            "it must be between 1 and 20",
        ))
    }
}

/// The model used unless `LLM_MODEL` says otherwise.
fn default_model(provider: Provider, region: Option<&str>) -> String {
    match provider {
        Provider::OpenAi => "gpt-4o-mini".to_owned(),
        Provider::Gemini => "gemini-2.5-flash".to_owned(),
        Provider::Bedrock => shared::llm::bedrock::default_model(region),
    }
}

/// `LLM_BASE_URL`, or the provider's public endpoint; empty for Bedrock without one.
fn llm_base_url<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    provider: Provider,
) -> Result<String, ConfigError> {
    match provider.default_base_url() {
        Some(default) => url(env, "LLM_BASE_URL", default),
        None if env.optional("LLM_BASE_URL").is_some() => url(env, "LLM_BASE_URL", ""),
        None => Ok(String::new()),
    }
}

/// The Bedrock guardrail of `GUARDRAIL_ID` and `GUARDRAIL_VERSION` (`DRAFT` or a number).
fn guardrail<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<Guardrail>, ConfigError> {
    let version = env
        .optional("GUARDRAIL_VERSION")
        .unwrap_or_else(|| "DRAFT".to_owned());
    if version != "DRAFT" && !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "GUARDRAIL_VERSION",
            "it must be DRAFT or a version number",
        ));
    }
    Ok(env.optional("GUARDRAIL_ID").map(|id| Guardrail {
        id: id.trim().to_owned(),
        version,
    }))
}

/// Where voice notes go unless `TRANSCRIPTION_BASE_URL` says otherwise: the chat server when it
/// speaks OpenAI's API (OpenAI, Groq, a local server), else OpenAI's.
fn transcription_default_url<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    provider: Provider,
) -> Result<String, ConfigError> {
    match provider {
        Provider::OpenAi => llm_base_url(env, provider),
        Provider::Gemini | Provider::Bedrock => {
            Ok(shared::llm::openai::DEFAULT_BASE_URL.to_owned())
        }
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn url<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    name: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let value = env.optional(name).unwrap_or_else(|| default.to_owned());
    if value.starts_with("https://") || value.starts_with("http://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(name, "it must be an http:// or https:// URL"))
    }
}

fn is_api_version(value: &str) -> bool {
    value
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from(&Env::from_pairs(pairs))
    }

    const REQUIRED: [(&str, &str); 2] = [("TABLE_NAME", "t"), ("SECRET_ID", "s")];

    const SAMPLE: &[(&str, &str)] = &[("TABLE_NAME", "t"), ("SECRET_ID", "s")];

    #[test]
    fn variables_lists_exactly_what_the_config_reads() {
        let check = shared::env_config::check_declared_variables(SAMPLE, VARIABLES, |env| {
            Config::from(env)
        });
        assert_eq!(check, Ok(()));
    }

    #[test]
    fn defaults_are_sane() {
        let config = config(&REQUIRED).unwrap();
        assert_eq!(config.llm_provider, Provider::OpenAi);
        assert_eq!(config.llm_model, "gpt-4o-mini");
        assert_eq!(config.llm_base_url, "https://api.openai.com/v1");
        assert_eq!(config.meta_api_base_url, "https://graph.facebook.com");
        assert_eq!(config.meta_api_version, DEFAULT_META_API_VERSION);
        assert_eq!(
            (
                config.history_max_messages,
                config.context_ttl_days,
                config.max_receive_count
            ),
            (20, 14, 5)
        );
        assert_eq!(config.max_message_age, Some(Duration::from_secs(24 * 3600)));
        let unlimited = super::Config::from(&Env::from_pairs(&[
            REQUIRED[0],
            REQUIRED[1],
            ("MAX_MESSAGE_AGE_HOURS", "0"),
        ]))
        .unwrap();
        assert_eq!(unlimited.max_message_age, None);
    }

    #[test]
    fn gemini_gets_its_own_defaults() {
        let config = config(&[REQUIRED[0], REQUIRED[1], ("LLM_PROVIDER", "Gemini")]).unwrap();
        assert_eq!(config.llm_provider, Provider::Gemini);
        assert_eq!(config.llm_model, "gemini-2.5-flash");
        assert_eq!(
            config.llm_base_url,
            "https://generativelanguage.googleapis.com"
        );
        assert!(config.audio_inline, "Gemini hears voice notes itself");
        let whisper = super::Config::from(&Env::from_pairs(&[
            REQUIRED[0],
            REQUIRED[1],
            ("LLM_PROVIDER", "gemini"),
            ("TRANSCRIPTION_BASE_URL", "https://api.groq.com/openai/v1"),
        ]))
        .unwrap();
        assert!(!whisper.audio_inline);
        assert_eq!(
            whisper.transcription_base_url,
            "https://api.groq.com/openai/v1"
        );
    }

    #[test]
    fn bedrock_needs_no_url_and_takes_a_guardrail() {
        let config = config(&[
            REQUIRED[0],
            REQUIRED[1],
            ("LLM_PROVIDER", "bedrock"),
            ("AWS_REGION", "eu-central-1"),
            ("GUARDRAIL_ID", "gr123abc"),
        ])
        .unwrap();
        assert_eq!(config.llm_provider, Provider::Bedrock);
        assert_eq!(config.llm_model, "eu.amazon.nova-lite-v1:0");
        assert_eq!(config.llm_base_url, "");
        assert_eq!(
            config.llm_guardrail,
            Some(Guardrail {
                id: "gr123abc".into(),
                version: "DRAFT".into()
            })
        );
        assert_eq!(config.transcription_base_url, "https://api.openai.com/v1");
        assert!(!config.audio_inline);
        let pinned = super::Config::from(&Env::from_pairs(&[
            REQUIRED[0],
            REQUIRED[1],
            ("LLM_PROVIDER", "bedrock"),
            ("LLM_MODEL", "anthropic.claude-haiku-4-5-20251001-v1:0"),
            ("LLM_BASE_URL", "http://127.0.0.1:9000/"),
            ("GUARDRAIL_ID", "g"),
            ("GUARDRAIL_VERSION", "3"),
        ]))
        .unwrap();
        assert_eq!(pinned.llm_model, "anthropic.claude-haiku-4-5-20251001-v1:0");
        assert_eq!(pinned.llm_base_url, "http://127.0.0.1:9000");
        assert_eq!(pinned.llm_guardrail.map(|g| g.version), Some("3".into()));
        assert_eq!(
            super::Config::from(&Env::from_pairs(&REQUIRED))
                .unwrap()
                .llm_guardrail,
            None
        );
    }

    #[test]
    fn voice_notes_go_to_the_chat_server_by_default() {
        let local = config(&[
            REQUIRED[0],
            REQUIRED[1],
            ("LLM_BASE_URL", "http://127.0.0.1:11434/v1"),
        ])
        .unwrap();
        assert_eq!(local.transcription_base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(local.transcription_model, DEFAULT_TRANSCRIPTION_MODEL);
        assert!(!local.audio_inline && local.vision);
    }

    #[test]
    fn names_the_missing_or_invalid_variable() {
        assert_eq!(
            config(&[("SECRET_ID", "s")]),
            Err(ConfigError::Missing("TABLE_NAME"))
        );
        assert_eq!(
            config(&[("TABLE_NAME", "t")]),
            Err(ConfigError::Missing("SECRET_ID"))
        );
        for (name, value) in [
            ("LLM_PROVIDER", "anthropic"),
            ("HISTORY_MAX_MESSAGES", "1"),
            ("HISTORY_MAX_MESSAGES", "lots"),
            ("CONTEXT_TTL_DAYS", "0"),
            ("MAX_RECEIVE_COUNT", "0"),
            ("MAX_MESSAGE_AGE_HOURS", "8761"),
            ("MAX_MESSAGE_AGE_HOURS", "-1"),
            ("LLM_TIMEOUT_SECONDS", "0"),
            ("META_API_VERSION", "26"),
            ("META_API_BASE_URL", "graph.facebook.com"),
            ("LLM_BASE_URL", "localhost:11434"),
            ("GUARDRAIL_VERSION", "latest"),
            ("KNOWLEDGE_URI", "https://example.com/faq.md"),
            ("KNOWLEDGE_MAX_TOKENS", "50"),
            ("KNOWLEDGE_BASE_ID", "kb-123"),
            ("KNOWLEDGE_BASE_ID", "ABCDEFGHIJK"),
            ("KNOWLEDGE_BASE_TOP_K", "0"),
            ("KNOWLEDGE_BASE_TOP_K", "21"),
            ("KNOWLEDGE_BASE_TOP_K", "five"),
            ("TOOLS_URI", "https://shop.example/tools.json"),
            ("TOOLS_MAX_ROUNDS", "0"),
            ("TOOLS_MAX_ROUNDS", "6"),
            ("RATE_LIMIT_PER_MINUTE", "10001"),
            ("DAILY_TOKEN_BUDGET", "-1"),
            ("STOP_KEYWORDS", "STOP, PLEASE STOP"),
            ("START_KEYWORDS", " , "),
        ] {
            let result = config(&[REQUIRED[0], REQUIRED[1], (name, value)]);
            assert!(
                matches!(&result, Err(ConfigError::Invalid { name: n, .. }) if *n == name),
                "{name}={value} gave {result:?}"
            );
        }
    }

    #[test]
    fn a_knowledge_base_is_optional_with_five_passages_by_default() {
        let none = config(&REQUIRED).unwrap();
        assert_eq!(
            (none.knowledge_base_id, none.knowledge_base_top_k),
            (None, 5)
        );
        let set = config(&[
            REQUIRED[0],
            REQUIRED[1],
            ("KNOWLEDGE_BASE_ID", " KB12345678 "),
            ("KNOWLEDGE_BASE_TOP_K", "20"),
        ])
        .unwrap();
        assert_eq!(set.knowledge_base_id.as_deref(), Some("KB12345678"));
        assert_eq!(set.knowledge_base_top_k, 20);
        let empty = config(&[REQUIRED[0], REQUIRED[1], ("KNOWLEDGE_BASE_ID", "")]).unwrap();
        assert_eq!(
            empty.knowledge_base_id, None,
            "the template's empty default"
        );
    }

    #[test]
    fn tools_are_optional_with_three_rounds_by_default() {
        let none = config(&REQUIRED).unwrap();
        assert_eq!((none.tools_uri, none.tools_max_rounds), (None, 3));
        let set = config(&[
            REQUIRED[0],
            REQUIRED[1],
            ("TOOLS_URI", "s3://shop-bucket/tools.json"),
            ("TOOLS_MAX_ROUNDS", "5"),
        ])
        .unwrap();
        assert_eq!(
            set.tools_uri,
            Some("s3://shop-bucket/tools.json".parse().unwrap())
        );
        assert_eq!(set.tools_max_rounds, 5);
        let empty = config(&[REQUIRED[0], REQUIRED[1], ("TOOLS_URI", "")]).unwrap();
        assert_eq!(empty.tools_uri, None, "the template's empty default");
    }

    #[test]
    fn trims_a_trailing_slash_from_urls() {
        let config = config(&[
            REQUIRED[0],
            REQUIRED[1],
            ("LLM_BASE_URL", "http://127.0.0.1:11434/v1/"),
        ])
        .unwrap();
        assert_eq!(config.llm_base_url, "http://127.0.0.1:11434/v1");
    }
}
