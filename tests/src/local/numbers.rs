//! The business numbers the local stack serves: each one's settings item (`n#<phone_number_id>`,
//! as the settings contract of issue 15 describes it), written into the table at start, so that
//! the simulator can write to two numbers with different personas, and play their handoff
//! agent's phone.

use serde_json::{Value, json};

use super::shop::Example;
use super::{AGENT_NUMBER, PHONE_NUMBER_ID, SECOND_NUMBER_ID};

/// The default number's display phone number, in the webhooks' `metadata`.
pub const DEFAULT_DISPLAY_NUMBER: &str = "15550000000";

/// The second number's persona: a barista who answers in Spanish.
pub const CAFE_PERSONA: &str = "Eres el barista de Café Luna, una cafetería de especialidad. \
Respondes siempre en español, con calidez y brevedad, sobre nuestros cafés, el horario y los \
pedidos para llevar.";

/// One business number of the local stack.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Number {
    /// Its `phone_number_id`.
    pub id: String,
    /// Its name, from its settings.
    pub name: String,
    /// Its display phone number, in the webhooks' `metadata`.
    pub display: String,
    /// Its settings, as written into its item.
    #[serde(skip)]
    pub settings: Value,
}

impl Number {
    fn new(id: &str, display: &str, settings: Value) -> Self {
        Self {
            id: id.to_owned(),
            display: display.to_owned(),
            name: settings["name"].as_str().unwrap_or(id).to_owned(),
            settings,
        }
    }
}

/// The numbers seeded at start: [`PHONE_NUMBER_ID`] first (the default, with the stack's
/// defaults but for its name and handoff agent), then [`SECOND_NUMBER_ID`] (Café Luna, its own
/// persona and handoff text).
pub fn seeded(example: Example) -> Vec<Number> {
    let first_name = match example {
        Example::Shop => "Bluebell Home",
        Example::None => "Local assistant",
    };
    vec![
        Number::new(
            PHONE_NUMBER_ID,
            DEFAULT_DISPLAY_NUMBER,
            json!({"name": first_name, "handoff_agent_number": AGENT_NUMBER}),
        ),
        Number::new(
            SECOND_NUMBER_ID,
            "15550000002",
            json!({"name": "Café Luna", "system_prompt": CAFE_PERSONA,
                "handoff_agent_number": AGENT_NUMBER,
                "texts": {"handoff": "Te paso con una persona del equipo de Café Luna; te escribirá por aquí."}}),
        ),
    ]
}

/// Writes each number's settings item into `table`: `pk` `n#<id>`, `settings` (the JSON,
/// compact) and `updated_at` (epoch seconds), with no expiry.
pub(super) async fn seed(
    aws: &aws_config::SdkConfig,
    table: &str,
    numbers: &[Number],
) -> Result<(), String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let now = shared::clock::now_epoch_seconds().to_string();
    for number in numbers {
        dynamodb
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(format!("n#{}", number.id)))
            .item("settings", AttributeValue::S(number.settings.to_string()))
            .item("updated_at", AttributeValue::N(now.clone()))
            .send()
            .await
            .map_err(|e| format!("DynamoDB: the settings of number {}: {e}", number.id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of the settings contract (SETTINGS.md), which refuses any other.
    const FIELDS: [&str; 13] = [
        "name",
        "enabled",
        "system_prompt",
        "llm",
        "knowledge_uri",
        "tools_uri",
        "handoff_agent_number",
        "handoff_keywords",
        "stop_keywords",
        "start_keywords",
        "rate_limit_per_minute",
        "daily_token_budget",
        "texts",
    ];
    const TEXTS: [&str; 9] = [
        "fallback",
        "unsupported",
        "handoff",
        "rate_limited",
        "opted_out",
        "opted_in",
        "reset",
        "budget_reached",
        "maintenance",
    ];

    #[test]
    fn the_seeded_settings_keep_to_the_contract() {
        for example in [Example::Shop, Example::None] {
            let numbers = seeded(example);
            assert_eq!(numbers[0].id, PHONE_NUMBER_ID, "the default comes first");
            for number in &numbers {
                let settings = number.settings.as_object().unwrap();
                for (field, value) in settings {
                    assert!(FIELDS.contains(&field.as_str()), "{field}");
                    if let Some(text) = value.as_str() {
                        assert!(!text.trim().is_empty(), "{field} is not blank");
                    }
                }
                let name = number.name.chars().count();
                assert!((1..=80).contains(&name), "{}", number.name);
                let agent = settings["handoff_agent_number"].as_str().unwrap();
                assert!(
                    (8..=15).contains(&agent.len()) && agent.bytes().all(|b| b.is_ascii_digit())
                );
                for (key, text) in settings
                    .get("texts")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let length = text.as_str().unwrap().chars().count();
                    assert!(TEXTS.contains(&key.as_str()) && (1..=1000).contains(&length));
                }
                assert!(number.id.len() <= 20 && number.id.bytes().all(|b| b.is_ascii_digit()));
            }
            // The first number keeps the stack's persona, so its answers are unchanged.
            assert_eq!(numbers[0].settings.get("system_prompt"), None);
            assert_eq!(numbers[1].settings["system_prompt"], CAFE_PERSONA);
        }
    }
}
