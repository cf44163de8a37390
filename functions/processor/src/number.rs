//! Step 3a, the number's behaviour: one stack serves several business numbers, each with its
//! settings item in the table (`n#<phone_number_id>`, written by `infra/numbers.sh`; see
//! `shared::number_settings`). A burst is answered with the stack's behaviour (its environment)
//! overridden by what the number's settings say: persona, model, texts, keywords, limits, the
//! handoff agent, whether it is enabled. A number without settings is answered as the stack.

use std::sync::Arc;

use shared::llm::Provider;
use shared::log_event::LogEvent;
use shared::number_book::{DynamoDbNumbers, NumberBook};
use shared::number_settings::{NumberSettings, SettingsError};

use crate::reply::Retry;
use crate::{Behaviour, Processor};

/// Where the numbers' settings are read from, as deployed.
pub type Numbers = NumberBook<DynamoDbNumbers>;

impl Behaviour {
    /// This behaviour with what `settings` override.
    pub fn for_number(&self, settings: &NumberSettings) -> Self {
        let mut behaviour = self.clone();
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                value.clone_into(target);
            }
        };
        set_option(&mut behaviour.name, &settings.name);
        behaviour.enabled = settings.enabled.unwrap_or(self.enabled);
        set(&mut behaviour.system_prompt, &settings.system_prompt);
        if let Some(choice) = &settings.llm {
            behaviour.video = choice.provider == Provider::Gemini;
            behaviour.llm = Some(choice.clone());
        }
        let texts = &settings.texts;
        set(&mut behaviour.fallback_message, &texts.fallback);
        set(&mut behaviour.unsupported_message, &texts.unsupported);
        let controls = &mut behaviour.controls;
        set(&mut controls.opted_out_message, &texts.opted_out);
        set(&mut controls.opted_in_message, &texts.opted_in);
        set(&mut controls.reset_message, &texts.reset);
        set(&mut controls.rate_limited_message, &texts.rate_limited);
        set(&mut controls.budget_reached_message, &texts.budget_reached);
        set_option(&mut controls.maintenance_message, &texts.maintenance);
        set_keywords(&mut controls.stop_keywords, &settings.stop_keywords);
        set_keywords(&mut controls.start_keywords, &settings.start_keywords);
        if let Some(limit) = settings.rate_limit_per_minute {
            controls.rate_limit_per_minute = limit;
        }
        if let Some(budget) = settings.daily_token_budget {
            controls.daily_token_budget = budget;
        }
        // `infra/numbers.sh` and `NumberSettings::from_json` checked their form.
        if let Some(uri) = settings
            .knowledge_uri
            .as_deref()
            .and_then(|u| u.parse().ok())
        {
            behaviour.knowledge_uri = Some(uri);
        }
        if let Some(uri) = settings.tools_uri.as_deref().and_then(|u| u.parse().ok()) {
            behaviour.tools_uri = Some(uri);
        }
        let handoff = &mut behaviour.handoff;
        set(&mut handoff.message, &texts.handoff);
        set_option(&mut handoff.agent_number, &settings.handoff_agent_number);
        set_keywords(&mut handoff.keywords, &settings.handoff_keywords);
        behaviour
    }
}

/// `target` set to `value` when there is one.
fn set_option(target: &mut Option<String>, value: &Option<String>) {
    if value.is_some() {
        target.clone_from(value);
    }
}

/// `target` set to `keywords`, upper-case as the controls compare them, when there are some.
fn set_keywords(target: &mut Vec<String>, keywords: &Option<Vec<String>>) {
    if let Some(keywords) = keywords {
        *target = keywords.iter().map(|k| k.trim().to_uppercase()).collect();
    }
}

/// Logs that `phone_number_id`'s settings item is invalid (written by hand: `infra/numbers.sh`
/// refuses such a document); its number is answered with the stack's defaults until it is fixed.
pub fn report_invalid(phone_number_id: &str, error: &SettingsError) {
    tracing::error!(event = LogEvent::NumberSettingsInvalid.as_str(), phone_number_id, error = %error,
        "the number's settings are invalid; the stack's defaults are used until they are fixed (infra/numbers.sh put)");
}

impl<C, L, W, T> Processor<C, L, W, T> {
    /// The behaviour for messages to `phone_number_id`: the stack's, overridden by the number's
    /// settings when the table holds some. `Err(Retry)` when they cannot be read and were never
    /// read before (answering a shop's customer in another shop's voice is worse than a retry).
    pub(crate) async fn behaviour_for(
        &self,
        phone_number_id: &str,
    ) -> Result<Arc<Behaviour>, Retry> {
        let Some(numbers) = &self.numbers else {
            return Ok(self.behaviour.clone());
        };
        match numbers.settings(phone_number_id).await {
            Ok(settings) if *settings == NumberSettings::default() => Ok(self.behaviour.clone()),
            Ok(settings) => Ok(Arc::new(self.behaviour.for_number(&settings))),
            Err(error) => {
                tracing::error!(event = LogEvent::StoreFailed.as_str(), phone_number_id, error = %error,
                    "could not read the number's settings; the messages will be retried");
                Err(Retry)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::number_settings::ModelChoice;

    use super::*;

    #[test]
    fn a_number_overrides_only_what_its_settings_say() {
        let stack = crate::tests::behaviour();
        let settings = NumberSettings::from_json(
            r#"{"name": "Café Luna", "system_prompt": "Eres la barista.",
                "llm": {"provider": "gemini", "model": "gemini-2.5-flash"},
                "stop_keywords": ["basta"], "rate_limit_per_minute": 3,
                "handoff_agent_number": "34600111222",
                "texts": {"fallback": "Vuelve luego.", "maintenance": "Cerrado.", "handoff": "Te paso."}}"#,
        )
        .expect("valid settings");
        let number = stack.for_number(&settings);
        assert_eq!(number.name.as_deref(), Some("Café Luna"));
        assert_eq!(number.system_prompt, "Eres la barista.");
        assert_eq!(
            number.llm,
            Some(ModelChoice {
                provider: Provider::Gemini,
                model: "gemini-2.5-flash".into(),
                base_url: None,
                api_key_secret: None,
            })
        );
        assert!(number.video, "a Gemini number takes video inline");
        assert_eq!(number.fallback_message, "Vuelve luego.");
        assert_eq!(number.controls.stop_keywords, ["BASTA"]);
        assert_eq!(
            number.controls.start_keywords,
            stack.controls.start_keywords
        );
        assert_eq!(number.controls.rate_limit_per_minute, 3);
        assert_eq!(
            number.controls.maintenance_message.as_deref(),
            Some("Cerrado.")
        );
        assert_eq!(number.handoff.agent_number.as_deref(), Some("34600111222"));
        assert_eq!(number.handoff.message, "Te paso.");
        assert_eq!(number.unsupported_message, stack.unsupported_message);
        assert!(number.enabled);
        assert_eq!(stack.for_number(&NumberSettings::default()), stack);
    }
}
