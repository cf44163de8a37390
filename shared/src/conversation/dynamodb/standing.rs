//! A user's standing in the table (read with the claim, see [`crate::conversation::Claim`]): the
//! opt-out record, read with the history, `pk = "u#<conversation key>"` with
//! `opted_out` and `at` (no expiry: it is what keeps the bot silent), deleted when the user opts
//! in again; and the rate window counters, `pk = "r#<conversation key>#<window number>"` with
//! `n` (messages counted in the window) and `expires_at` one window after it ends; and the daily
//! token counts, `pk = "b#<conversation key>#<day>"` with `n` (tokens), `noticed` (the user was
//! told the budget is spent) and `expires_at` two days later.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};

use super::Item;
use super::codec::parse_number;
use super::{DynamoDbConversationStore, unavailable};
use crate::conversation::{ClaimRequest, StoreError};
use crate::dynamodb_expression::number;
use crate::inbound::ConversationKey;

/// The prefix of a user's opt-out record.
pub const OPT_OUT_KEY_PREFIX: &str = "u#";

/// The prefix of a rate window's counter.
pub const RATE_KEY_PREFIX: &str = "r#";

/// The partition key of `conversation`'s opt-out record.
pub fn opt_out_key(conversation: &ConversationKey) -> String {
    format!("{OPT_OUT_KEY_PREFIX}{}", conversation.as_str())
}

/// The partition key of `conversation`'s counter for the window holding `now`.
fn rate_key(conversation: &ConversationKey, now: i64, window_seconds: i64) -> String {
    let window = now.div_euclid(window_seconds.max(1));
    format!("{RATE_KEY_PREFIX}{}#{window}", conversation.as_str())
}

/// The prefix of a day's token count.
pub const BUDGET_KEY_PREFIX: &str = "b#";

/// The partition key of `conversation`'s token count of `day`.
pub fn budget_key(conversation: &ConversationKey, day: i64) -> String {
    format!("{BUDGET_KEY_PREFIX}{}#{day}", conversation.as_str())
}

/// A day's token count and whether its notice went out, from its item.
pub(super) fn budget_of(item: &Item) -> (u64, bool) {
    let tokens = item
        .get("n")
        .and_then(parse_number)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let noticed = item
        .get("noticed")
        .is_some_and(|value| value.as_bool().is_ok_and(|noticed| *noticed));
    (tokens, noticed)
}

/// Whether an opt-out record says the user opted out.
pub(super) fn says_opted_out(item: &Item) -> bool {
    item.get("opted_out")
        .is_some_and(|value| value.as_bool().is_ok_and(|opted| *opted))
}

impl DynamoDbConversationStore {
    /// Adds the burst's messages to its window's counter; the count after it. Nothing is
    /// counted (0) without a window.
    pub(super) async fn count(
        &self,
        request: &ClaimRequest<'_>,
        messages: u64,
    ) -> Result<u64, StoreError> {
        if request.rate_window_seconds <= 0 || messages == 0 {
            return Ok(0);
        }
        let window = request.rate_window_seconds;
        let expires = request.now.saturating_add(2 * window);
        let output = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key(
                "pk",
                AttributeValue::S(rate_key(request.conversation, request.now, window)),
            )
            .update_expression("ADD #n :n SET #exp = :exp")
            .expression_attribute_names("#n", "n")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":n", number(i64::try_from(messages).unwrap_or(i64::MAX)))
            .expression_attribute_values(":exp", number(expires))
            .return_values(ReturnValue::UpdatedNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable)?;
        self.meter(output.consumed_capacity(), true);
        let counted = output
            .attributes
            .as_ref()
            .and_then(|a| a.get("n"))
            .and_then(parse_number);
        Ok(counted
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(messages))
    }

    /// Adds `tokens` to `day`'s count.
    pub(super) async fn add_day_tokens(
        &self,
        conversation: &ConversationKey,
        day: i64,
        tokens: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(budget_key(conversation, day)))
            .update_expression("ADD #n :n SET #exp = :exp")
            .expression_attribute_names("#n", "n")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":n", number(i64::try_from(tokens).unwrap_or(i64::MAX)))
            .expression_attribute_values(":exp", number(now.saturating_add(2 * 86_400)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable)?;
        self.meter(output.consumed_capacity(), true);
        Ok(())
    }

    /// Sets `day`'s `noticed` unless it was set; `true` when this call set it.
    pub(super) async fn note_notice(
        &self,
        conversation: &ConversationKey,
        day: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(budget_key(conversation, day)))
            .update_expression("SET #noticed = :yes, #exp = :exp")
            .condition_expression("attribute_not_exists(#noticed)")
            .expression_attribute_names("#noticed", "noticed")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":exp", number(now.saturating_add(2 * 86_400)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter(output.consumed_capacity(), true);
                Ok(true)
            }
            Err(error) if super::is_refused(&error) => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Writes (opting out) or deletes (opting in) the user's opt-out record.
    pub(super) async fn write_opt_out(
        &self,
        conversation: &ConversationKey,
        opted_out: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = AttributeValue::S(opt_out_key(conversation));
        let consumed = if opted_out {
            let output = self
                .client
                .put_item()
                .table_name(&self.table_name)
                .item("pk", key)
                .item("opted_out", AttributeValue::Bool(true))
                .item("at", number(now))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable)?;
            output.consumed_capacity
        } else {
            let output = self
                .client
                .delete_item()
                .table_name(&self.table_name)
                .key("pk", key)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable)?;
            output.consumed_capacity
        };
        self.meter(consumed.as_ref(), true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_window_has_its_own_counter() {
        let conversation = ConversationKey::new("106540352242922", "15551234567");
        let key = |now| rate_key(&conversation, now, 60);
        assert_eq!(key(120), key(179));
        assert_ne!(key(179), key(180));
        assert!(key(120).starts_with("r#106540352242922:15551234567#"));
        assert_eq!(opt_out_key(&conversation), "u#106540352242922:15551234567");
    }
}
