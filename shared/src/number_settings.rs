//! The settings of one business number (`phone_number_id`), kept in the table as the item
//! `pk = "n#<phone_number_id>"` with `settings`, JSON text, which `infra/numbers.sh` writes after
//! checking it by the same rules as [`NumberSettings::from_json`]. Every field is optional: a
//! number without an item, or a field left out, uses the stack's setting (its environment).
//! Unknown fields are refused, so that a misspelt field is an error rather than a silent default.

use serde::Deserialize;

use crate::llm::Provider;

/// The prefix of a number's settings item.
pub const NUMBER_KEY_PREFIX: &str = "n#";

/// The attribute holding the settings' JSON text.
pub const SETTINGS_ATTRIBUTE: &str = "settings";

/// The partition key of `phone_number_id`'s settings.
pub fn number_key(phone_number_id: &str) -> String {
    format!("{NUMBER_KEY_PREFIX}{phone_number_id}")
}

/// One number's settings: what it overrides of the stack's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberSettings {
    /// A label for lists and the agent's notices.
    pub name: Option<String>,
    /// `false`: the bot leaves this number's messages unanswered (they are marked done).
    pub enabled: Option<bool>,
    /// The persona.
    pub system_prompt: Option<String>,
    /// The model that answers this number.
    pub llm: Option<ModelChoice>,
    /// The business's knowledge document (`s3://bucket/key`).
    pub knowledge_uri: Option<String>,
    /// The business's tools file (`s3://bucket/key`).
    pub tools_uri: Option<String>,
    /// The WhatsApp number of the person conversations are handed to.
    pub handoff_agent_number: Option<String>,
    /// Whole messages that ask for a person.
    pub handoff_keywords: Option<Vec<String>>,
    /// Whole messages that opt out.
    pub stop_keywords: Option<Vec<String>>,
    /// Whole messages that opt in again.
    pub start_keywords: Option<Vec<String>>,
    /// Messages a user may send in a minute; 0 for no limit.
    pub rate_limit_per_minute: Option<u64>,
    /// Tokens a user's answers may take in a day; 0 for no budget.
    pub daily_token_budget: Option<u64>,
    /// The texts the bot sends, each overriding the stack's.
    #[serde(default)]
    pub texts: NumberTexts,
}

/// The model a number is answered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    /// `openai`, `gemini` or `bedrock`.
    #[serde(deserialize_with = "provider")]
    pub provider: Provider,
    /// The model's name.
    pub model: String,
    /// The API's base URL; the provider's default when absent.
    pub base_url: Option<String>,
    /// The key of the stack's secret holding the API key; `LLM_API_KEY` when absent.
    pub api_key_secret: Option<String>,
}

/// The texts a number overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberTexts {
    /// When the model stays down.
    pub fallback: Option<String>,
    /// For messages the bot cannot read.
    pub unsupported: Option<String>,
    /// When the conversation is handed to a person.
    pub handoff: Option<String>,
    /// The rate limit's notice.
    pub rate_limited: Option<String>,
    /// The opt-out's confirmation.
    pub opted_out: Option<String>,
    /// The opt-in's confirmation.
    pub opted_in: Option<String>,
    /// `/reset`'s confirmation.
    pub reset: Option<String>,
    /// The daily budget's notice.
    pub budget_reached: Option<String>,
    /// The kill switch: set, every message gets this text and no model is called.
    pub maintenance: Option<String>,
}

fn provider<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Provider, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse()
        .map_err(|_| serde::de::Error::custom("provider must be openai, gemini or bedrock"))
}

/// Why settings were refused: each problem names its field, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the number's settings are invalid: {}", .0.join("; "))]
pub struct SettingsError(pub Vec<String>);

impl NumberSettings {
    /// Reads and checks a settings document.
    pub fn from_json(text: &str) -> Result<Self, SettingsError> {
        let settings: Self = serde_json::from_str(text).map_err(|e| {
            // serde's message names the field (unknown field `x`, invalid type) but can quote a
            // value: only its first clause is kept when it quotes one.
            let message = e.to_string();
            let message = message.split(", expected").next().unwrap_or_default();
            SettingsError(vec![format!("{message} (line {})", e.line())])
        })?;
        let problems = settings.problems();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError(problems))
        }
    }

    /// What breaks the rules that `infra/numbers.sh` checks too, by field.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut text = |field: &str, value: &Option<String>, max: usize| {
            if let Some(value) = value
                && (value.trim().is_empty() || value.chars().count() > max)
            {
                problems.push(format!("{field}: must be 1 to {max} characters, not blank"));
            }
        };
        text("name", &self.name, 80);
        text("system_prompt", &self.system_prompt, 20_000);
        let t = &self.texts;
        for (field, value) in [
            ("texts.fallback", &t.fallback),
            ("texts.unsupported", &t.unsupported),
            ("texts.handoff", &t.handoff),
            ("texts.rate_limited", &t.rate_limited),
            ("texts.opted_out", &t.opted_out),
            ("texts.opted_in", &t.opted_in),
            ("texts.reset", &t.reset),
            ("texts.budget_reached", &t.budget_reached),
            ("texts.maintenance", &t.maintenance),
        ] {
            text(field, value, 1000);
        }
        self.check_forms(&mut problems);
        problems
    }

    /// The fields with a form: numbers, URIs, keywords, limits.
    fn check_forms(&self, problems: &mut Vec<String>) {
        if let Some(number) = &self.handoff_agent_number
            && (!(8..=15).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()))
        {
            problems.push("handoff_agent_number: must be 8 to 15 digits, no '+'".into());
        }
        for (field, uri) in [
            ("knowledge_uri", &self.knowledge_uri),
            ("tools_uri", &self.tools_uri),
        ] {
            if uri.as_deref().is_some_and(|u| !is_s3_uri(u)) {
                problems.push(format!("{field}: must be s3://<bucket>/<key>"));
            }
        }
        for (field, words) in [
            ("handoff_keywords", &self.handoff_keywords),
            ("stop_keywords", &self.stop_keywords),
            ("start_keywords", &self.start_keywords),
        ] {
            let bad = |w: &String| w.trim().is_empty() || w.chars().count() > 40;
            if words
                .as_ref()
                .is_some_and(|w| w.is_empty() || w.len() > 20 || w.iter().any(bad))
            {
                problems.push(format!(
                    "{field}: must list 1 to 20 words of 1 to 40 characters"
                ));
            }
        }
        if self.rate_limit_per_minute.is_some_and(|n| n > 1000) {
            problems.push("rate_limit_per_minute: must be 0 to 1000".into());
        }
        if self.daily_token_budget.is_some_and(|n| n > 1_000_000_000) {
            problems.push("daily_token_budget: must be 0 to 1000000000".into());
        }
        if let Some(choice) = &self.llm {
            choice.check(problems);
        }
    }
}

impl ModelChoice {
    fn check(&self, problems: &mut Vec<String>) {
        if self.model.trim().is_empty() || self.model.len() > 200 {
            problems.push("llm.model: must be 1 to 200 characters".into());
        }
        let http = self.provider != Provider::Bedrock;
        if let Some(url) = &self.base_url
            && (!http || !(url.starts_with("http://") || url.starts_with("https://")))
        {
            problems.push("llm.base_url: must be an http(s) URL, and not for bedrock".into());
        }
        if let Some(key) = &self.api_key_secret {
            let valid = (1..=64).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !http || !valid {
                problems.push(
                    "llm.api_key_secret: must be a secret key name ([A-Za-z0-9_], 1 to 64), and not for bedrock"
                        .into(),
                );
            }
        }
    }
}

/// Whether `uri` is `s3://<bucket>/<key>` with a plausible bucket name and a key.
fn is_s3_uri(uri: &str) -> bool {
    let Some((bucket, key)) = uri
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !key.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_optional_and_full_settings_read() {
        assert_eq!(
            NumberSettings::from_json("{}"),
            Ok(NumberSettings::default())
        );
        let full = r#"{"name":"Café Luna","enabled":true,"system_prompt":"Eres barista.",
            "llm":{"provider":"gemini","model":"gemini-2.5-flash","api_key_secret":"LUNA_KEY"},
            "knowledge_uri":"s3://my-bucket/knowledge/luna.md","tools_uri":"s3://my-bucket/tools/luna.json",
            "handoff_agent_number":"34600111222","handoff_keywords":["HUMANO"],
            "stop_keywords":["STOP"],"start_keywords":["START"],"rate_limit_per_minute":5,
            "daily_token_budget":20000,"texts":{"handoff":"Te paso con una persona.","maintenance":"Cerrado."}}"#;
        let settings = NumberSettings::from_json(full).unwrap();
        assert_eq!(settings.llm.unwrap().provider, Provider::Gemini);
        assert_eq!(settings.texts.maintenance.as_deref(), Some("Cerrado."));
        assert_eq!(settings.rate_limit_per_minute, Some(5));
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused_by_name() {
        let error = NumberSettings::from_json(r#"{"system_promt":"secret persona"}"#).unwrap_err();
        assert!(error.to_string().contains("system_promt"), "{error}");
        assert!(!error.to_string().contains("secret persona"), "{error}");
        let error = NumberSettings::from_json(r#"{"texts":{"handof":"x"}}"#).unwrap_err();
        assert!(error.to_string().contains("handof"), "{error}");
        let error = NumberSettings::from_json(r#"{"enabled":"yes"}"#).unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
        let error =
            NumberSettings::from_json(r#"{"llm":{"provider":"claude","model":"x"}}"#).unwrap_err();
        assert!(error.to_string().contains("provider"), "{error}");
    }

    #[test]
    fn forms_and_ranges_are_checked_naming_each_field() {
        let bad = r#"{"name":" ","handoff_agent_number":"+34600111222","knowledge_uri":"https://x/y",
            "handoff_keywords":[],"rate_limit_per_minute":5000,
            "llm":{"provider":"bedrock","model":"m","base_url":"https://x"},"texts":{"reset":""}}"#;
        let SettingsError(problems) = NumberSettings::from_json(bad).unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .filter_map(|p| p.split(':').next())
            .collect();
        assert_eq!(
            fields,
            vec![
                "name",
                "texts.reset",
                "handoff_agent_number",
                "knowledge_uri",
                "handoff_keywords",
                "rate_limit_per_minute",
                "llm.base_url"
            ]
        );
    }

    #[test]
    fn keys_are_per_number() {
        assert_eq!(number_key("106540352242922"), "n#106540352242922");
        assert!(is_s3_uri("s3://bucket-1.x/k"));
        assert!(!is_s3_uri("s3://Bucket/k"));
        assert!(!is_s3_uri("s3://bucket/"));
    }
}
