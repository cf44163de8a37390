//! [`ConversationStore`] on a DynamoDB table whose partition key is `pk` (a string) and whose
//! TTL attribute is `expires_at` (seconds since the epoch). Three kinds of item:
//!
//! - a **claim** per message id, `pk = "id#<message id>"`: `s` (`"p"` an invocation is
//!   processing it, `"d"` it was answered, `"r"` the claim was given back), `k` (the claiming
//!   invocation's token), `u` (the lease, for `"p"`), `at`, `pending_answer` (the undelivered
//!   answer of a given-back burst, `{ids, replies, sent}`, on its first message's claim),
//!   `tool_rounds` (the tool calls and results of a burst, `{ids, rounds}` with the rounds as
//!   JSON, on its first message's claim, from its first side-effecting call until it is done), and
//!   `expires_at` ([`CLAIM_MEMORY_SECONDS`] after the last write: Meta's 7 days of redelivery
//!   and a day);
//! - the **history**, one item per exchange in a ring of slots (see [`history`]);
//! - the first layout's conversation item (see [`legacy`]), read and honoured until it expires;
//! - a user's opt-out record and rate window counters (see [`standing`]);
//! - a conversation's handoff to a person and its reference (see `handoff`).
//!
//! Claiming is, in one round trip, one conditional `UpdateItem` per message id (returning the
//! claim as it was) and one `BatchGetItem` of the history. Completing is, in one round trip,
//! one `PutItem` of the new exchange and one conditional `UpdateItem` per message id marking it
//! done. Every write is of a small item, so an answered message costs the same few write units
//! whatever the conversation's length or past.

mod codec;
mod handoff;
pub mod history;
pub mod legacy;
pub mod standing;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure,
};
use futures_util::future::join_all;

use self::codec::{
    DONE, PENDING_ATTRIBUTE, PROCESSING, RELEASED, Standing, TOOL_ROUNDS_ATTRIBUTE, claim_state,
    decode_pending, decode_tool_rounds, decode_turn, encode_pending, encode_tool_rounds,
    encode_turn, encode_turns,
};
use self::history::{History, slot_key, slot_of};
use self::legacy::{LegacyItem, legacy_key};
use super::{
    CLAIM_MEMORY_SECONDS, Claim, ClaimRequest, CompleteRequest, ConsumedCapacity,
    ConversationStore, HistoryPolicy, MarkOutcome, MoveRequest, Moved, PendingAnswer, StoreError,
    ToolRounds, Turn, UndeliveredRequest, UserStanding, exchanges, mark_undelivered,
    truncate_bytes, undelivered_in_a_row,
};
use crate::dynamodb_expression::number;
use crate::inbound::ConversationKey;

pub use self::legacy::{CONVERSATION_KEY_PREFIX, MARKER_PREFIX};

/// The prefix of a message id's claim item.
pub const CLAIM_KEY_PREFIX: &str = "id#";

/// How many conditional writes one message's claim makes before it gives up on a contended
/// claim.
const MAX_CLAIM_ROUNDS: usize = 3;

/// How many times keys DynamoDB left unprocessed in a `BatchGetItem` are asked for again.
const MAX_BATCH_ROUNDS: u32 = 4;

/// The most keys one `BatchGetItem` takes.
const MAX_BATCH_KEYS: usize = 100;

/// A stored item: attribute names and values.
type Item = HashMap<String, AttributeValue>;

/// The partition key of `message_id`'s claim.
pub fn claim_key(message_id: &str) -> String {
    format!("{CLAIM_KEY_PREFIX}{message_id}")
}

/// [`ConversationStore`] on a DynamoDB table.
pub struct DynamoDbConversationStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    policy: HistoryPolicy,
    consumed: Mutex<ConsumedCapacity>,
}

/// What one message's claiming write found.
enum ClaimOne {
    /// The claim is now this invocation's; the claim item as it was before.
    Taken(Item),
    /// Another invocation holds it under a live lease.
    HeldElsewhere,
    /// It was answered.
    Done,
}

impl DynamoDbConversationStore {
    /// The store in the table `table_name`, reached through `client`, keeping what `policy`
    /// allows. Creating it does no network I/O.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table_name: impl Into<String>,
        policy: HistoryPolicy,
    ) -> Self {
        Self {
            client,
            table_name: table_name.into(),
            policy,
            consumed: Mutex::new(ConsumedCapacity::default()),
        }
    }

    /// Adds what a call consumed to the running total.
    fn meter(&self, capacity: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>, write: bool) {
        let units = capacity.and_then(|c| c.capacity_units()).unwrap_or(0.0);
        if let Ok(mut consumed) = self.consumed.lock() {
            if write {
                consumed.write_units += units;
            } else {
                consumed.read_units += units;
            }
        }
    }

    /// Claims `message_id` for `request`'s invocation, unless it is done or held elsewhere.
    async fn claim_one(
        &self,
        message_id: &str,
        request: &ClaimRequest<'_>,
    ) -> Result<ClaimOne, StoreError> {
        for _ in 0..MAX_CLAIM_ROUNDS {
            let result = self
                .client
                .update_item()
                .table_name(&self.table_name)
                .key("pk", AttributeValue::S(claim_key(message_id)))
                .update_expression("SET #s = :p, #k = :token, #u = :lease, #at = :now, #exp = :exp, #c = :c")
                .condition_expression(
                    "attribute_not_exists(pk) OR #s = :r OR (#s = :p AND (#u < :now OR #k = :token))",
                )
                .set_expression_attribute_names(Some(claim_names(&["#s", "#k", "#u", "#at", "#exp", "#c"])))
                .expression_attribute_values(":p", s(PROCESSING))
                .expression_attribute_values(":c", s(request.conversation.as_str()))
                .expression_attribute_values(":r", s(RELEASED))
                .expression_attribute_values(":token", s(request.token))
                .expression_attribute_values(":lease", number(request.lease_until))
                .expression_attribute_values(":now", number(request.now))
                .expression_attribute_values(":exp", number(claim_expiry(request.now)))
                .return_values(ReturnValue::AllOld)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let refused = match result {
                Ok(output) => {
                    self.meter(output.consumed_capacity(), true);
                    return Ok(ClaimOne::Taken(output.attributes.unwrap_or_default()));
                }
                Err(error) => match error.as_service_error() {
                    Some(UpdateError::ConditionalCheckFailedException(refused)) => {
                        refused.item().cloned()
                    }
                    _ => return Err(unavailable(error)),
                },
            };
            let refused = match refused {
                Some(item) => item,
                None => self.get(&claim_key(message_id)).await?.unwrap_or_default(),
            };
            match claim_state(Some(&refused)).standing(request.token, request.now) {
                Standing::Done => return Ok(ClaimOne::Done),
                Standing::HeldElsewhere => return Ok(ClaimOne::HeldElsewhere),
                Standing::Claimable => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "contention: the claim was refused {MAX_CLAIM_ROUNDS} times in a row"
        )))
    }

    /// Marks `message_id` answered, on condition that `token` still holds it.
    async fn finish_one(&self, message_id: &str, token: &str, now: i64) -> Result<(), StoreError> {
        let written = self
            .update_held(
                message_id,
                token,
                "SET #s = :d, #at = :now, #exp = :exp REMOVE #u, #pending, #rounds",
                &["#at", "#exp", "#u", "#pending", "#rounds"],
                vec![
                    (":d", s(DONE)),
                    (":now", number(now)),
                    (":exp", number(claim_expiry(now))),
                ],
            )
            .await?;
        if written {
            Ok(())
        } else {
            Err(StoreError::ClaimLost)
        }
    }

    /// Gives back `message_id`'s claim if `token` holds it, keeping `pending` on it when given
    /// (and any pending answer it already had). A claim no longer held with `token` is left as
    /// it is: taken over, or done, whatever is still ours lapses with its lease.
    async fn give_back(
        &self,
        message_id: &str,
        token: &str,
        pending: Option<&PendingAnswer>,
    ) -> Result<(), StoreError> {
        let (update, names): (&str, &[&str]) = match pending {
            Some(_) => (
                "SET #s = :r, #pending = :pending REMOVE #u",
                &["#u", "#pending"],
            ),
            None => ("SET #s = :r REMOVE #u", &["#u"]),
        };
        let values = pending
            .map(|p| (":pending", encode_pending(p)))
            .into_iter()
            .chain([(":r", s(RELEASED))])
            .collect();
        self.update_held(message_id, token, update, names, values)
            .await
            .map(|_| ())
    }

    /// Applies `update` (using the placeholders `names` besides `#s` and `#k`, and `values`
    /// besides `:p` and `:token`) to `message_id`'s claim, on condition that `token` holds it.
    /// `Ok(false)` when the condition refused it.
    async fn update_held(
        &self,
        message_id: &str,
        token: &str,
        update: &str,
        names: &[&str],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let names: Vec<&str> = ["#s", "#k"].iter().chain(names).copied().collect();
        let values = values
            .into_iter()
            .chain([(":p", s(PROCESSING)), (":token", s(token))])
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(claim_key(message_id)))
            .update_expression(update)
            .condition_expression("#s = :p AND #k = :token")
            .set_expression_attribute_names(Some(claim_names(&names)))
            .set_expression_attribute_values(Some(values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter(output.consumed_capacity(), true);
                Ok(true)
            }
            Err(error) if is_refused(&error) => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Reads one item, consistently.
    async fn get(&self, pk: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable)?;
        self.meter(output.consumed_capacity(), false);
        Ok(output.item)
    }

    /// Reads `conversation`'s history: every slot and the first layout's item, consistently.
    async fn read_history(&self, conversation: &ConversationKey) -> Result<History, StoreError> {
        self.read_history_with(conversation, None).await
    }

    /// Reads the history, the opt-out record and, with `budget_day`, that day's token count, in
    /// one `BatchGetItem` (more than 100 keys take more).
    async fn read_history_with(
        &self,
        conversation: &ConversationKey,
        budget_day: Option<i64>,
    ) -> Result<History, StoreError> {
        let slots = self.policy.max_exchanges();
        let mut keys: Vec<AttributeValue> = (0..slots)
            .map(|slot| AttributeValue::S(slot_key(conversation, slot)))
            .collect();
        keys.push(legacy_key(conversation));
        keys.push(AttributeValue::S(standing::opt_out_key(conversation)));
        keys.push(AttributeValue::S(crate::handoff::handoff_key(conversation)));
        if let Some(day) = budget_day {
            keys.push(AttributeValue::S(standing::budget_key(conversation, day)));
        }
        let chunks = keys
            .chunks(MAX_BATCH_KEYS)
            .map(|chunk| self.batch_get(chunk));
        let mut items = Vec::new();
        for chunk in join_all(chunks).await {
            items.extend(chunk?);
        }
        Ok(History::from_items(conversation, slots, items))
    }

    /// Reads the items of `keys` (at most [`MAX_BATCH_KEYS`]) consistently, asking again for
    /// those DynamoDB leaves unprocessed.
    async fn batch_get(&self, keys: &[AttributeValue]) -> Result<Vec<Item>, StoreError> {
        let mut pending: Vec<Item> = keys
            .iter()
            .map(|key| HashMap::from([("pk".to_owned(), key.clone())]))
            .collect();
        let mut items = Vec::new();
        for round in 0..MAX_BATCH_ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(20 << round)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending.clone()))
                .consistent_read(true)
                .build()
                .map_err(unavailable)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table_name, request)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable)?;
            for capacity in output.consumed_capacity() {
                self.meter(Some(capacity), false);
            }
            let mut responses = output.responses.unwrap_or_default();
            items.extend(responses.remove(&self.table_name).unwrap_or_default());
            pending = output
                .unprocessed_keys
                .and_then(|mut unprocessed| unprocessed.remove(&self.table_name))
                .map(|keys| keys.keys)
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(items);
            }
        }
        Err(StoreError::Unavailable(
            "DynamoDB left part of the history unread".into(),
        ))
    }

    /// Stores `turns` as exchange `seq` of `conversation`, unless a newer exchange took its
    /// slot meanwhile.
    async fn write_exchange(
        &self,
        conversation: &ConversationKey,
        seq: u64,
        turns: &[Turn],
        now: i64,
    ) -> Result<(), StoreError> {
        let turns: Vec<Turn> = turns
            .iter()
            .map(|t| Turn {
                text: truncate_bytes(&t.text, self.policy.max_turn_bytes),
                ..t.clone()
            })
            .collect();
        let slot = slot_of(seq, self.policy.max_exchanges());
        let seq_value = number(i64::try_from(seq).unwrap_or(i64::MAX));
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .item("pk", AttributeValue::S(slot_key(conversation, slot)))
            .item("n", seq_value.clone())
            .item("turns", encode_turns(&turns))
            .item("expires_at", number(self.policy.turns_expire_at(now)))
            .condition_expression("attribute_not_exists(#n) OR #n < :n")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":n", seq_value)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter(output.consumed_capacity(), true);
                Ok(())
            }
            Err(error) if is_refused(&error) => {
                tracing::warn!(
                    seq,
                    "a newer exchange was stored meanwhile; this one is not kept"
                );
                Ok(())
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Replaces the turns of the stored exchange in `slot` with `turns`, on condition that they
    /// are still `seen`.
    async fn rewrite_exchange_turns(
        &self,
        conversation: &ConversationKey,
        slot: usize,
        seen: &AttributeValue,
        turns: AttributeValue,
    ) -> Result<(), StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(slot_key(conversation, slot)))
            .update_expression("SET #turns = :turns")
            .condition_expression("#turns = :seen")
            .expression_attribute_names("#turns", "turns")
            .expression_attribute_values(":turns", turns)
            .expression_attribute_values(":seen", seen.clone())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(changed_or_unavailable)?;
        self.meter(output.consumed_capacity(), true);
        Ok(())
    }

    /// Deletes one item.
    async fn delete(&self, pk: String) -> Result<(), StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(pk))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable)?;
        self.meter(output.consumed_capacity(), true);
        Ok(())
    }

    /// Writes a done claim for each of `ids` that has no claim yet; returns how many it wrote.
    async fn remember_answered(&self, ids: &[String], now: i64) -> Result<usize, StoreError> {
        let writes = ids.iter().map(|id| {
            self.client
                .put_item()
                .table_name(&self.table_name)
                .item("pk", AttributeValue::S(claim_key(id)))
                .item("s", s(DONE))
                .item("at", number(now))
                .item("expires_at", number(claim_expiry(now)))
                .condition_expression("attribute_not_exists(pk)")
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
        });
        let mut written = 0;
        for result in join_all(writes).await {
            match result {
                Ok(output) => {
                    self.meter(output.consumed_capacity(), true);
                    written += 1;
                }
                Err(error) if is_refused(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        Ok(written)
    }
}

impl ConversationStore for DynamoDbConversationStore {
    async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let ids = unique(request.message_ids);
        if ids.is_empty() {
            return Ok(Claim::default());
        }
        let claims = join_all(ids.iter().map(|id| self.claim_one(id, &request)));
        let messages = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        let (claims, history, standing) = tokio::join!(
            claims,
            self.read_history_with(request.conversation, request.budget_day),
            self.count(&request, messages)
        );
        let mut sorted = Sorted::default();
        let mut failure = None;
        for (id, result) in ids.iter().zip(claims) {
            match result {
                Ok(ClaimOne::Taken(before)) => sorted.claimed.push((id.clone(), before)),
                Ok(ClaimOne::HeldElsewhere) => sorted.held_elsewhere.push(id.clone()),
                Ok(ClaimOne::Done) => sorted.done.push(id.clone()),
                Err(error) => failure = Some(error),
            }
        }
        let (history, in_window) = match (history, standing, failure) {
            (Ok(history), Ok(in_window), None) => (history, in_window),
            (history, standing, failure) => {
                self.release_all(&sorted.claimed_ids(), request.token).await;
                return Err(failure
                    .or(history.err())
                    .or(standing.err())
                    .unwrap_or(StoreError::Unavailable("the claim failed".into())));
            }
        };
        if let Some(legacy) = &history.legacy {
            self.honour_legacy(legacy, &mut sorted, &request).await;
        }
        let standing = UserStanding {
            opted_out: history.opted_out,
            in_window,
            counted: if in_window > 0 { messages } else { 0 },
            tokens_today: history.budget.0,
            budget_noticed: history.budget.1,
        };
        let claim = sorted.into_claim(&ids, &history, &self.policy, request.now);
        Ok(Claim {
            standing,
            handoff: history.handoff.as_ref().and_then(handoff::decode_handoff),
            ..claim
        })
    }

    async fn complete(&self, request: CompleteRequest<'_>) -> Result<(), StoreError> {
        let ids = unique(request.message_ids);
        if ids.is_empty() && request.new_turns.is_empty() {
            return Ok(());
        }
        let exchange = async {
            if request.new_turns.is_empty() {
                return Ok(());
            }
            let seq = request.history_seq.saturating_add(1);
            self.write_exchange(request.conversation, seq, &request.new_turns, request.now)
                .await
        };
        let done = join_all(
            ids.iter()
                .map(|id| self.finish_one(id, request.token, request.now)),
        );
        let (exchange, done) = tokio::join!(exchange, done);
        let done: Result<Vec<()>, StoreError> = done.into_iter().collect();
        done.and(exchange)
    }

    async fn mark_undelivered(
        &self,
        request: UndeliveredRequest<'_>,
    ) -> Result<MarkOutcome, StoreError> {
        let history = self.read_history(request.conversation).await?;
        let mut all: Vec<Turn> = history
            .exchanges
            .iter()
            .flat_map(|e| e.turns.clone())
            .collect();
        let outcome = mark_undelivered(&mut all, request.reply_id, request.error_code);
        let MarkOutcome::Marked { .. } = outcome else {
            return Ok(outcome);
        };
        for exchange in &history.exchanges {
            let Some(list) = marked_list(&exchange.raw_turns, request.reply_id, request.error_code)
            else {
                continue;
            };
            self.rewrite_exchange_turns(
                request.conversation,
                exchange.slot,
                &exchange.raw_turns,
                AttributeValue::L(list),
            )
            .await?;
            return Ok(MarkOutcome::Marked {
                in_a_row: undelivered_in_a_row(&all),
            });
        }
        Ok(MarkOutcome::NotFound)
    }

    async fn move_conversation(&self, request: MoveRequest<'_>) -> Result<Moved, StoreError> {
        if request.from == request.to {
            return Ok(Moved::default());
        }
        let (old, new) = tokio::join!(
            self.read_history(request.from),
            self.read_history(request.to)
        );
        let (old, new) = (old?, new?);
        let answered = old
            .legacy
            .as_ref()
            .map(LegacyItem::answered_ids)
            .unwrap_or_default();
        let message_ids = self.remember_answered(&answered, request.now).await?;
        let moved = self
            .policy
            .live(old.turns(&self.policy, request.now), request.now);
        if !moved.is_empty() {
            let merged = self.policy.merge(
                new.turns(&self.policy, request.now),
                moved.clone(),
                request.now,
            );
            self.replace_history(request.to, &new, merged, request.now)
                .await?;
            self.forget_history(request.from, &old).await?;
        }
        Ok(Moved {
            turns: moved.len(),
            message_ids,
        })
    }

    async fn release(
        &self,
        _conversation: &ConversationKey,
        token: &str,
        message_ids: &[String],
        pending: Option<&PendingAnswer>,
    ) -> Result<(), StoreError> {
        let ids = unique(message_ids);
        let releases = ids
            .iter()
            .enumerate()
            .map(|(index, id)| self.give_back(id, token, pending.filter(|_| index == 0)));
        join_all(releases).await.into_iter().collect()
    }

    async fn keep_tool_rounds(&self, token: &str, rounds: &ToolRounds) -> Result<(), StoreError> {
        let (Some(first), Some(encoded)) = (rounds.message_ids.first(), encode_tool_rounds(rounds))
        else {
            return Ok(());
        };
        let update = "SET #rounds = :rounds";
        let values = vec![(":rounds", encoded)];
        match self
            .update_held(first, token, update, &["#rounds"], values)
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::ClaimLost),
        }
    }

    async fn set_opted_out(
        &self,
        conversation: &ConversationKey,
        opted_out: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write_opt_out(conversation, opted_out, now).await
    }

    async fn add_tokens(
        &self,
        conversation: &ConversationKey,
        day: i64,
        tokens: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.add_day_tokens(conversation, day, tokens, now).await
    }

    async fn note_budget_notice(
        &self,
        conversation: &ConversationKey,
        day: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.note_notice(conversation, day, now).await
    }

    async fn forget_conversation(&self, conversation: &ConversationKey) -> Result<(), StoreError> {
        let history = self.read_history(conversation).await?;
        self.forget_history(conversation, &history).await
    }

    fn take_consumed(&self) -> ConsumedCapacity {
        self.consumed
            .lock()
            .map(|mut consumed| std::mem::take(&mut *consumed))
            .unwrap_or_default()
    }
}

impl DynamoDbConversationStore {
    /// Gives back, best effort, claims this invocation took and will not complete.
    async fn release_all(&self, ids: &[String], token: &str) {
        for result in join_all(ids.iter().map(|id| self.give_back(id, token, None))).await {
            if let Err(error) = result {
                tracing::warn!(error = %error, "a claim could not be given back; it lapses with its lease");
            }
        }
    }

    /// Applies what the first layout's item says of the ids just claimed: an id it remembers
    /// as answered is done (and its new claim marked so), one it shows held under a live lease
    /// is held elsewhere (and its new claim given back).
    async fn honour_legacy(
        &self,
        legacy: &LegacyItem,
        sorted: &mut Sorted,
        request: &ClaimRequest<'_>,
    ) {
        let claimed = std::mem::take(&mut sorted.claimed);
        for (id, before) in claimed {
            match legacy.marker(&id).standing(request.token, request.now) {
                Standing::Claimable => sorted.claimed.push((id, before)),
                Standing::Done => {
                    if let Err(error) = self.finish_one(&id, request.token, request.now).await {
                        tracing::warn!(error = %error, "could not carry an answered id over to its own claim");
                    }
                    sorted.done.push(id);
                }
                Standing::HeldElsewhere => {
                    self.release_all(std::slice::from_ref(&id), request.token)
                        .await;
                    sorted.held_elsewhere.push(id);
                }
            }
        }
        if sorted.pending.is_none() {
            sorted.pending = legacy.pending();
        }
    }

    /// Stores `turns` as `to`'s whole history, after the exchanges it had (`current`): the
    /// newest exchanges that fit in the slots, the slots left over emptied.
    async fn replace_history(
        &self,
        to: &ConversationKey,
        current: &History,
        turns: Vec<Turn>,
        now: i64,
    ) -> Result<(), StoreError> {
        let slots = self.policy.max_exchanges();
        let mut all = exchanges(turns);
        let keep_from = all.len().saturating_sub(slots);
        let kept = all.split_off(keep_from);
        let base = current.seq();
        let written: HashSet<usize> = (1..=kept.len() as u64)
            .map(|i| slot_of(base + i, slots))
            .collect();
        let writes = kept
            .iter()
            .enumerate()
            .map(|(i, turns)| self.write_exchange(to, base + 1 + i as u64, turns, now));
        let stale = current
            .exchanges
            .iter()
            .filter(|e| !written.contains(&e.slot))
            .map(|e| self.delete(slot_key(to, e.slot)));
        let (writes, deletes) = tokio::join!(join_all(writes), join_all(stale));
        writes.into_iter().chain(deletes).collect()
    }

    /// Removes `from`'s history: its exchanges, and the turns of its first-layout item (whose
    /// message markers stay until it expires).
    async fn forget_history(
        &self,
        from: &ConversationKey,
        history: &History,
    ) -> Result<(), StoreError> {
        let deletes = history
            .exchanges
            .iter()
            .map(|e| self.delete(slot_key(from, e.slot)));
        let results: Result<Vec<()>, StoreError> = join_all(deletes).await.into_iter().collect();
        results?;
        let Some(seen) = history.legacy.as_ref().and_then(LegacyItem::raw_turns) else {
            return Ok(());
        };
        let output = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", legacy_key(from))
            .update_expression("REMOVE #turns")
            .condition_expression("#turns = :seen")
            .expression_attribute_names("#turns", "turns")
            .expression_attribute_values(":seen", seen.clone())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(changed_or_unavailable)?;
        self.meter(output.consumed_capacity(), true);
        Ok(())
    }
}

/// The claim's outcome while it is assembled.
#[derive(Default)]
struct Sorted {
    /// Ids claimed, with their claim items as they were.
    claimed: Vec<(String, Item)>,
    done: Vec<String>,
    held_elsewhere: Vec<String>,
    /// A pending answer found in the first layout's item.
    pending: Option<PendingAnswer>,
}

impl Sorted {
    fn claimed_ids(&self) -> Vec<String> {
        self.claimed.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The claim, each list in the order of `ids`; the pending answer one of the claimed ids
    /// kept, when every message it answers was claimed now.
    fn into_claim(
        self,
        ids: &[String],
        history: &History,
        policy: &HistoryPolicy,
        now: i64,
    ) -> Claim {
        let claimed = self.claimed_ids();
        let in_order = |subset: &[String]| -> Vec<String> {
            ids.iter()
                .filter(|id| subset.contains(id))
                .cloned()
                .collect()
        };
        let pending = self
            .claimed
            .iter()
            .filter_map(|(_, before)| decode_pending(before.get(PENDING_ATTRIBUTE)))
            .chain(self.pending)
            .find(|pending| {
                !pending.message_ids.is_empty()
                    && pending.message_ids.iter().all(|id| claimed.contains(id))
            });
        let tool_rounds = self
            .claimed
            .iter()
            .filter_map(|(_, before)| decode_tool_rounds(before.get(TOOL_ROUNDS_ATTRIBUTE)))
            .find(|rounds| {
                !rounds.message_ids.is_empty()
                    && rounds.message_ids.iter().all(|id| claimed.contains(id))
            });
        Claim {
            claimed: in_order(&claimed),
            done: in_order(&self.done),
            held_elsewhere: in_order(&self.held_elsewhere),
            history: history.turns(policy, now),
            history_seq: history.seq(),
            pending,
            tool_rounds,
            standing: UserStanding::default(),
            handoff: None,
        }
    }
}

/// The placeholders of the claim attributes an expression `uses` (`s`, `k`, `u`, `at`,
/// `pending_answer` and `tool_rounds` go through placeholders, some being DynamoDB reserved words; DynamoDB
/// refuses a placeholder an expression does not use).
fn claim_names(uses: &[&str]) -> HashMap<String, String> {
    [
        ("#s", "s"),
        ("#k", "k"),
        ("#u", "u"),
        ("#at", "at"),
        ("#exp", "expires_at"),
        // The conversation, so that a user's claims can be found (`infra/user-data.sh`).
        ("#c", "c"),
        ("#pending", PENDING_ATTRIBUTE),
        ("#rounds", TOOL_ROUNDS_ATTRIBUTE),
    ]
    .into_iter()
    .filter(|(placeholder, _)| uses.contains(placeholder))
    .map(|(placeholder, name)| (placeholder.to_owned(), name.to_owned()))
    .collect()
}

/// When a claim written at `now` expires.
fn claim_expiry(now: i64) -> i64 {
    now.saturating_add(CLAIM_MEMORY_SECONDS)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

type UpdateError = aws_sdk_dynamodb::operation::update_item::UpdateItemError;

fn unavailable(error: impl std::error::Error) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(error).to_string())
}

/// Whether a conditional write (an update, a put or a delete) was refused by its condition.
pub(super) fn is_refused<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        == Some("ConditionalCheckFailedException")
}

/// A conditional write refused because the item changed since it was read is a failure the
/// caller retries, as any other.
fn changed_or_unavailable<R: std::fmt::Debug>(error: SdkError<UpdateError, R>) -> StoreError {
    match error.as_service_error() {
        Some(UpdateError::ConditionalCheckFailedException(_)) => {
            StoreError::Unavailable("the conversation changed while it was being written".into())
        }
        _ => unavailable(error),
    }
}

/// `ids` without repeats, in their first order.
fn unique(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// The stored `turns` with the one that went out as `reply_id` marked undelivered, every other
/// stored value kept as it is (even one that cannot be read); `None` when no turn there went
/// out as `reply_id` still unmarked.
fn marked_list(
    turns: &AttributeValue,
    reply_id: &str,
    error_code: Option<i64>,
) -> Option<Vec<AttributeValue>> {
    let mut list = turns.as_l().ok()?.clone();
    for value in &mut list {
        let Ok(mut turn) = decode_turn(value) else {
            continue;
        };
        let mut one = [turn.clone()];
        if let MarkOutcome::Marked { .. } = mark_undelivered(&mut one, reply_id, error_code) {
            [turn] = one;
            *value = encode_turn(&turn);
            return Some(list);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Role, Undelivered};

    #[test]
    fn marking_a_reply_keeps_every_other_stored_value_as_it_was() {
        let reply = Turn {
            sent_as: vec!["wamid.r".into()],
            ..Turn::new(Role::Assistant, "answer", 5)
        };
        let unreadable = s("not a turn");
        let stored = AttributeValue::L(vec![
            unreadable.clone(),
            encode_turn(&Turn::new(Role::User, "q", 4)),
            encode_turn(&reply),
        ]);
        let list = marked_list(&stored, "wamid.r", Some(131_026)).unwrap();
        assert_eq!(list[0], unreadable);
        assert_eq!(list[1], stored.as_l().unwrap()[1]);
        assert_eq!(
            decode_turn(&list[2]).unwrap().undelivered,
            Some(Undelivered {
                error_code: Some(131_026)
            })
        );
        assert!(marked_list(&stored, "wamid.other", None).is_none());
        let again = AttributeValue::L(list);
        assert!(
            marked_list(&again, "wamid.r", None).is_none(),
            "already marked"
        );
        assert!(marked_list(&s("not a list"), "wamid.r", None).is_none());
    }

    #[test]
    fn claims_outlive_metas_redelivery_and_ids_are_their_own_keys() {
        assert_eq!(claim_expiry(100), 100 + 8 * 86_400);
        assert_eq!(claim_key("wamid.X="), "id#wamid.X=");
        assert_eq!(unique(&["a".into(), "b".into(), "a".into()]), ["a", "b"]);
    }
}
