//! [`StormControl`] on a DynamoDB table whose partition key is `pk` (a string) and whose TTL
//! attribute is `expires_at` (seconds since the epoch): the conversation table, where alert
//! items sit beside the conversations under their own key prefix.
//!
//! A fingerprint is one item, `pk = "alert#<fingerprint>"` (see [`alert_key`]), holding:
//! - `window_until`: when the open window ends (`0` once a window was given back);
//! - `held`: the alerts held back since the last mail;
//! - `last_mail_at`: when the last mail went out;
//! - `token`: identifies the open window, so that only its opener can give it back;
//! - `expires_at`: the window's end plus [`KEEP_AFTER_WINDOW_SECONDS`], so that held counts
//!   survive a quiet period but forgotten fingerprints disappear.
//!
//! Admitting is one conditional `UpdateItem` that opens a window if none is open and returns the
//! item as it was (whose `held` and `last_mail_at` the mail reports). When a window is open, a
//! second, unconditional `UpdateItem` adds the alerts to `held`. Giving a window back is one
//! `UpdateItem` conditional on the window's token, which it removes, so that a window is given
//! back (and its held-back count put back) once only, even when the call is retried.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;

use crate::dynamodb_expression::{Expression, names, number};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use sha2::{Digest, Sha256};

use super::{StormControl, StormError, Verdict};

/// The prefix of an alert item's partition key.
pub const ALERT_KEY_PREFIX: &str = "alert#";

/// The longest fingerprint (in bytes) kept as is in its item's key; longer ones are hashed.
pub const MAX_PLAIN_FINGERPRINT_BYTES: usize = 512;

/// What follows [`ALERT_KEY_PREFIX`] in the key of a hashed fingerprint, before the hash.
const HASHED_MARKER: &str = "sha256-";

/// How long an alert item outlives its window's end (7 days, in seconds), so that the count of
/// alerts held back in a window survives a quiet period until the fingerprint's next mail.
pub const KEEP_AFTER_WINDOW_SECONDS: i64 = 7 * 24 * 60 * 60;

/// A stored item: attribute names and values.
type Item = HashMap<String, AttributeValue>;

/// [`StormControl`] on a DynamoDB table.
pub struct DynamoDbStormControl {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoDbStormControl {
    /// Storm control in the table `table_name`, reached through `client`. Creating it does no
    /// network I/O.
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table_name: table_name.into(),
        }
    }

    /// The conditional write that opens a window; the item as it was, or, when a window is
    /// open, [`Opening::Refused`] with the item as it was when DynamoDB returned it.
    async fn open_window(
        &self,
        key: &str,
        token: &str,
        now: i64,
        window_until: i64,
    ) -> Result<Opening, StormError> {
        let expression = admit_expression();
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(":until", number(window_until))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()))
            .expression_attribute_values(":exp", number(expires_at(window_until)))
            .expression_attribute_values(":number", AttributeValue::S("N".to_owned()))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Opening::Opened(output.attributes.unwrap_or_default())),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refused)) => {
                    Ok(Opening::Refused(refused.item().cloned()))
                }
                _ => Err(unavailable(error)),
            },
        }
    }

    /// Counts `count` alerts as held back in the open window, keeping the item at least until
    /// `expires_at`.
    async fn hold(&self, key: &str, count: u64, expires_at: i64) -> Result<(), StormError> {
        let expression = hold_expression();
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression(expression.update)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(":count", unsigned(count))
            .expression_attribute_values(":exp", number(expires_at))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// The outcome of the conditional write that opens a window.
enum Opening {
    /// The window was opened; the item as it was before (empty when there was none).
    Opened(Item),
    /// A window is open; the item as it was, when DynamoDB returned it.
    Refused(Option<Item>),
}

impl StormControl for DynamoDbStormControl {
    async fn admit(
        &self,
        fingerprint: &str,
        count: u64,
        now: i64,
        window: Duration,
    ) -> Result<Verdict, StormError> {
        let key = alert_key(fingerprint);
        let token = new_token();
        let window_until = now.saturating_add(window_seconds(window));
        match self.open_window(&key, &token, now, window_until).await? {
            Opening::Opened(old) => {
                let previous = Previous::read(&old, &key);
                Ok(Verdict::Send {
                    held_back: previous.held,
                    previous_mail_at: previous.last_mail_at,
                    token,
                })
            }
            Opening::Refused(old) => {
                let keep_until = hold_expires_at(window_until, old.as_ref());
                self.hold(&key, count, keep_until).await?;
                Ok(Verdict::Hold)
            }
        }
    }

    async fn give_back(
        &self,
        fingerprint: &str,
        token: &str,
        held_back: u64,
        previous_mail_at: Option<i64>,
    ) -> Result<(), StormError> {
        let key = alert_key(fingerprint);
        let expression = give_back_expression(previous_mail_at.is_some());
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key.clone()))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":held_back", unsigned(held_back))
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()));
        if let Some(previous) = previous_mail_at {
            update = update.expression_attribute_values(":previous", number(previous));
        }
        match update.send().await {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                // Another window was opened since (or this one was already given back): there
                // is nothing of ours left to give back.
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    tracing::warn!(
                        key = %key,
                        "the alert window to give back is no longer this mail's; nothing given back"
                    );
                    Ok(())
                }
                _ => Err(unavailable(error)),
            },
        }
    }
}

fn unavailable(error: impl std::error::Error) -> StormError {
    StormError::Unavailable(DisplayErrorContext(error).to_string())
}

/// The partition key of a fingerprint's item: [`ALERT_KEY_PREFIX`] and the fingerprint, or,
/// when the fingerprint is longer than [`MAX_PLAIN_FINGERPRINT_BYTES`] (or could be mistaken
/// for a hashed one), [`ALERT_KEY_PREFIX`], `sha256-` and the hex SHA-256 of the fingerprint.
pub fn alert_key(fingerprint: &str) -> String {
    if fingerprint.len() > MAX_PLAIN_FINGERPRINT_BYTES || fingerprint.starts_with(HASHED_MARKER) {
        let digest = Sha256::digest(fingerprint.as_bytes());
        format!("{ALERT_KEY_PREFIX}{HASHED_MARKER}{}", hex::encode(digest))
    } else {
        format!("{ALERT_KEY_PREFIX}{fingerprint}")
    }
}

/// A window's length in whole seconds, a started second counting as a whole one.
fn window_seconds(window: Duration) -> i64 {
    let seconds = window
        .as_secs()
        .saturating_add(u64::from(window.subsec_nanos() > 0));
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// When the item of a window ending at `window_until` may expire.
fn expires_at(window_until: i64) -> i64 {
    window_until.saturating_add(KEEP_AFTER_WINDOW_SECONDS)
}

/// The expiry a held alert writes: at least the open window's end (as the refused write saw
/// it) and the end of the window this alert would have opened, plus
/// [`KEEP_AFTER_WINDOW_SECONDS`], and never earlier than the expiry the refused write saw.
fn hold_expires_at(would_open_until: i64, old: Option<&Item>) -> i64 {
    let old = old.map(|item| {
        (
            read_number(item, WINDOW_UNTIL).and_then(|n| i64::try_from(n).ok()),
            read_number(item, EXPIRES_AT).and_then(|n| i64::try_from(n).ok()),
        )
    });
    let (open_until, old_expiry) = old.unwrap_or_default();
    let window_end = open_until.map_or(would_open_until, |until| until.max(would_open_until));
    expires_at(window_end).max(old_expiry.unwrap_or(i64::MIN))
}

/// A new window's token: 16 random hex characters.
fn new_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn unsigned(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

const WINDOW_UNTIL: &str = "window_until";
const HELD: &str = "held";
const LAST_MAIL_AT: &str = "last_mail_at";
const TOKEN: &str = "token";
const EXPIRES_AT: &str = "expires_at";

/// Reads a stored whole number; `None` (with a warning) when the attribute is there but is not
/// a whole number.
fn read_number(item: &Item, name: &str) -> Option<i128> {
    let value = item.get(name)?;
    let parsed = value.as_n().ok().and_then(|text| parse_whole(text));
    if parsed.is_none() {
        tracing::warn!(
            attribute = name,
            "a stored alert attribute is not a whole number; ignoring it"
        );
    }
    parsed
}

/// Parses a DynamoDB number that should be whole (`"42"`, `"42.0"`, `"4.2E1"`).
fn parse_whole(text: &str) -> Option<i128> {
    text.parse::<i128>().ok().or_else(|| {
        let float = text.parse::<f64>().ok()?;
        // Whole numbers well within i128's range only; `as` would saturate silently.
        (float.is_finite() && float.fract() == 0.0 && float.abs() < 1.0e38).then_some(float as i128)
    })
}

/// What a mail reports from the item as it was before its window opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Previous {
    held: u64,
    last_mail_at: Option<i64>,
}

impl Previous {
    /// Reads `old` (the item `key` before the window opened); what cannot be read counts as no
    /// alerts held back and no previous mail, with a warning.
    fn read(old: &Item, key: &str) -> Self {
        let held = read_number(old, HELD).map_or(0, |held| {
            u64::try_from(held).unwrap_or_else(|_| {
                tracing::warn!(
                    key,
                    "the stored held-back count is out of range; reporting 0"
                );
                0
            })
        });
        let last_mail_at = read_number(old, LAST_MAIL_AT).and_then(|at| {
            let at = i64::try_from(at).ok();
            if at.is_none() {
                tracing::warn!(key, "the stored time of the last mail is out of range");
            }
            at
        });
        Self { held, last_mail_at }
    }
}

/// Opens a window until `:until` at `:now` with `:token`, resetting the held-back count to
/// `:zero` and setting the expiry `:exp`, on condition that no window is open at `:now`. A
/// `window_until` that is not a number (`:number` is `"N"`) counts as no window, so that a
/// damaged item cannot silence its fingerprint. (The type test comes before the comparison
/// because moto, unlike DynamoDB, fails on comparing a string with a number.)
fn admit_expression() -> Expression {
    Expression {
        update: "SET #until = :until, #held = :zero, #last = :now, #token = :token, #exp = :exp"
            .to_owned(),
        condition: Some(
            "attribute_not_exists(#until) OR NOT attribute_type(#until, :number) OR #until <= :now"
                .to_owned(),
        ),
        names: names(&[
            ("#until", WINDOW_UNTIL),
            ("#held", HELD),
            ("#last", LAST_MAIL_AT),
            ("#token", TOKEN),
            ("#exp", EXPIRES_AT),
        ]),
    }
}

/// Adds `:count` to the held-back count and sets the expiry `:exp`, unconditionally.
fn hold_expression() -> Expression {
    Expression {
        update: "ADD #held :count SET #exp = :exp".to_owned(),
        condition: None,
        names: names(&[("#held", HELD), ("#exp", EXPIRES_AT)]),
    }
}

/// Closes the window (`:zero`), puts back the previous mail's time (`:previous`, or removes it
/// when there was none) and the held-back count (`:held_back`, added to what others held
/// meanwhile), and removes the token so that the window is given back once only; on condition
/// that the window is still `:token`'s.
fn give_back_expression(has_previous_mail: bool) -> Expression {
    let update = if has_previous_mail {
        "SET #until = :zero, #last = :previous ADD #held :held_back REMOVE #token"
    } else {
        "SET #until = :zero ADD #held :held_back REMOVE #token, #last"
    };
    Expression {
        update: update.to_owned(),
        condition: Some("#token = :token".to_owned()),
        names: names(&[
            ("#until", WINDOW_UNTIL),
            ("#held", HELD),
            ("#last", LAST_MAIL_AT),
            ("#token", TOKEN),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn n(text: &str) -> AttributeValue {
        AttributeValue::N(text.to_owned())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }

    /// Every `#name` in the expressions, so that each is checked against the placeholders
    /// (DynamoDB refuses both undefined and unused ones).
    fn placeholders_used(expression: &Expression) -> Vec<String> {
        let text = format!(
            "{} {}",
            expression.update,
            expression.condition.as_deref().unwrap_or_default()
        );
        let mut found: Vec<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '#' || c == '_'))
            .filter(|word| word.starts_with('#'))
            .map(str::to_owned)
            .collect();
        found.sort();
        found.dedup();
        found
    }

    fn defined(expression: &Expression) -> Vec<String> {
        let mut names: Vec<String> = expression.names.keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn short_fingerprints_are_kept_in_the_key() {
        assert_eq!(
            alert_key("dlq|processor|Timeout"),
            "alert#dlq|processor|Timeout"
        );
        let longest = "x".repeat(MAX_PLAIN_FINGERPRINT_BYTES);
        assert_eq!(alert_key(&longest), format!("alert#{longest}"));
        assert_eq!(alert_key(""), "alert#");
    }

    #[test]
    fn long_fingerprints_are_hashed_by_bytes() {
        // 171 three-byte characters: 513 bytes but only 171 characters.
        let long = "€".repeat(171);
        let key = alert_key(&long);
        let expected = hex::encode(Sha256::digest(long.as_bytes()));
        assert_eq!(key, format!("alert#sha256-{expected}"));
        assert_eq!(key.len(), "alert#sha256-".len() + 64);
        assert_ne!(alert_key(&format!("{long}!")), key);
    }

    #[test]
    fn a_fingerprint_shaped_like_a_hashed_key_is_hashed_too() {
        let long = "y".repeat(MAX_PLAIN_FINGERPRINT_BYTES + 1);
        let hashed = alert_key(&long);
        let lookalike = hashed.trim_start_matches(ALERT_KEY_PREFIX);
        assert_ne!(alert_key(lookalike), hashed);
        assert!(alert_key(lookalike).starts_with("alert#sha256-"));
    }

    #[test]
    fn windows_round_up_to_whole_seconds_and_saturate() {
        assert_eq!(window_seconds(Duration::from_secs(900)), 900);
        assert_eq!(window_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(window_seconds(Duration::ZERO), 0);
        assert_eq!(window_seconds(Duration::MAX), i64::MAX);
        assert_eq!(expires_at(NOW), NOW + 7 * 24 * 3600);
        assert_eq!(expires_at(i64::MAX - 1), i64::MAX);
    }

    #[test]
    fn a_hold_never_shortens_the_expiry() {
        let would_open = NOW + 900;
        assert_eq!(hold_expires_at(would_open, None), expires_at(would_open));
        // Another invocation's clock ran ahead: its window ends later than ours would.
        let ahead = item(&[
            (WINDOW_UNTIL, number(NOW + 1000)),
            (EXPIRES_AT, number(expires_at(NOW + 1000))),
        ]);
        assert_eq!(
            hold_expires_at(would_open, Some(&ahead)),
            expires_at(NOW + 1000)
        );
        // A longer expiry than the window needs is kept.
        let kept = item(&[(WINDOW_UNTIL, number(NOW)), (EXPIRES_AT, number(NOW * 2))]);
        assert_eq!(hold_expires_at(would_open, Some(&kept)), NOW * 2);
        // Unreadable values are ignored.
        let garbled = item(&[
            (WINDOW_UNTIL, AttributeValue::S("soon".into())),
            (EXPIRES_AT, n("1e300")),
        ]);
        assert_eq!(
            hold_expires_at(would_open, Some(&garbled)),
            expires_at(would_open)
        );
    }

    #[test]
    fn reads_what_the_previous_mail_left() {
        let old = item(&[
            (HELD, n("99")),
            (LAST_MAIL_AT, number(NOW)),
            (TOKEN, AttributeValue::S("abc".into())),
        ]);
        assert_eq!(
            Previous::read(&old, "k"),
            Previous {
                held: 99,
                last_mail_at: Some(NOW)
            }
        );
        assert_eq!(Previous::read(&Item::new(), "k"), Previous::default());
    }

    #[test]
    fn unreadable_numbers_count_as_nothing_and_nothing_panics() {
        let garbled = item(&[
            (HELD, AttributeValue::S("many".into())),
            (LAST_MAIL_AT, n("yesterday")),
        ]);
        assert_eq!(Previous::read(&garbled, "k"), Previous::default());
        let out_of_range = item(&[(HELD, n("-3")), (LAST_MAIL_AT, n("1e30"))]);
        assert_eq!(Previous::read(&out_of_range, "k"), Previous::default());
        let floats = item(&[(HELD, n("7.0")), (LAST_MAIL_AT, n("1.8E9"))]);
        assert_eq!(
            Previous::read(&floats, "k"),
            Previous {
                held: 7,
                last_mail_at: Some(1_800_000_000)
            }
        );
        assert_eq!(parse_whole("2.5"), None);
        assert_eq!(parse_whole("NaN"), None);
        assert_eq!(parse_whole("1e300"), None);
        assert_eq!(
            parse_whole("99999999999999999999999999999999999999"),
            Some(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }

    #[test]
    fn tokens_are_16_hex_characters_and_differ() {
        let token = new_token();
        assert_eq!(token.len(), 16, "{token}");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn admit_opens_a_window_only_when_none_is_open() {
        let expression = admit_expression();
        assert_eq!(
            expression.update,
            "SET #until = :until, #held = :zero, #last = :now, #token = :token, #exp = :exp"
        );
        assert_eq!(
            expression.condition.as_deref(),
            Some(
                "attribute_not_exists(#until) OR NOT attribute_type(#until, :number) \
                 OR #until <= :now"
            )
        );
        assert_eq!(expression.names["#until"], "window_until");
        assert_eq!(expression.names["#exp"], "expires_at");
        assert_eq!(placeholders_used(&expression), defined(&expression));
    }

    #[test]
    fn hold_adds_to_the_count_unconditionally() {
        let expression = hold_expression();
        assert_eq!(expression.update, "ADD #held :count SET #exp = :exp");
        assert_eq!(expression.condition, None);
        assert_eq!(placeholders_used(&expression), defined(&expression));
    }

    #[test]
    fn give_back_closes_the_window_once_only() {
        let with = give_back_expression(true);
        assert_eq!(
            with.update,
            "SET #until = :zero, #last = :previous ADD #held :held_back REMOVE #token"
        );
        assert_eq!(with.condition.as_deref(), Some("#token = :token"));
        assert_eq!(placeholders_used(&with), defined(&with));

        let without = give_back_expression(false);
        assert_eq!(
            without.update,
            "SET #until = :zero ADD #held :held_back REMOVE #token, #last"
        );
        assert_eq!(placeholders_used(&without), defined(&without));
        assert_eq!(without.names["#last"], "last_mail_at");
    }
}
