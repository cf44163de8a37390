//! [`ConversationStore`] on a DynamoDB table whose partition key is `pk` (a string) and whose
//! TTL attribute is `expires_at` (seconds since the epoch).
//!
//! A conversation is one item, `pk = "conv#<conversation key>"`, holding:
//! - `turns`: a list of maps `{r: "user" | "assistant", t: text, at: seconds}`, an assistant
//!   turn also with `ids: [wamid]` (the WhatsApp messages it went out as) and, once Meta
//!   reported it failed, `u: {c: error code}`;
//! - `expires_at`: pushed forward on every claim and every completion;
//! - one marker per message id, in the top-level attribute `"c#<message id>"`: a map
//!   `{s: "p" | "d", k: token, u: lease until (for "p"), at: seconds}`, where `"p"` means an
//!   invocation is processing the message and `"d"` that it was answered;
//! - `pending_answer`, while an answer the LLM gave is not delivered: a map
//!   `{ids: [message id], replies: [text], sent: parts already sent}`, written with the release of
//!   its claims and removed by the next completion.
//!
//! Claiming is one conditional `UpdateItem` that writes a processing marker for every id and
//! returns the whole item. When some id is already done or held, the refused write returns the
//! item as it was (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), from which each id is
//! classified, and the ids still claimable are claimed in a second write. Completing is one
//! `UpdateItem` conditional on every claim still being this invocation's.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};

use crate::dynamodb_expression::{Expression, names, number};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{
    Claim, ClaimRequest, CompleteRequest, ConversationStore, HistoryPolicy, MarkOutcome,
    MoveRequest, Moved, PendingAnswer, Role, StoreError, Turn, Undelivered, UndeliveredRequest,
    mark_undelivered,
};
use crate::inbound::ConversationKey;

/// The prefix of a conversation item's partition key.
pub const CONVERSATION_KEY_PREFIX: &str = "conv#";

/// The prefix of the attribute that holds a message id's claim marker.
pub const MARKER_PREFIX: &str = "c#";

/// How many message ids a conversation remembers at most; older markers are forgotten.
pub const MAX_REMEMBERED_IDS: usize = 256;

/// How many forgotten markers one completing write removes at most, to keep its expression
/// well under DynamoDB's 4 KB limit; the rest are removed by later writes.
pub const MAX_STALE_PER_WRITE: usize = 100;

/// The attribute that holds the [`PendingAnswer`].
const PENDING_ATTRIBUTE: &str = "pending_answer";

/// How many conditional writes one claim makes before it gives up on a contended item.
const MAX_CLAIM_ROUNDS: usize = 3;

/// A stored item: attribute names and values.
type Item = HashMap<String, AttributeValue>;

/// [`ConversationStore`] on a DynamoDB table.
pub struct DynamoDbConversationStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    policy: HistoryPolicy,
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
        }
    }

    /// One conditional write claiming `ids`.
    async fn try_claim(
        &self,
        request: &ClaimRequest<'_>,
        ids: &[String],
    ) -> Result<Attempt, StoreError> {
        let expression = claim_expression(ids);
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(request.conversation))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(
                ":claim",
                processing_marker(request.token, request.lease_until, request.now),
            )
            .expression_attribute_values(":p", AttributeValue::S(PROCESSING.into()))
            .expression_attribute_values(":now", number(request.now))
            .expression_attribute_values(":token", AttributeValue::S(request.token.into()))
            .expression_attribute_values(":exp", number(self.policy.expires_at(request.now)))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Attempt::Claimed(output.attributes.unwrap_or_default())),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refused)) => {
                    Ok(Attempt::Refused(refused.item().cloned()))
                }
                _ => Err(unavailable(error)),
            },
        }
    }

    /// Writes the merged `turns` and copies `markers` into the new conversation's item, on
    /// condition that its turns are still `seen_turns` (none when it had none).
    async fn write_merged(
        &self,
        request: &MoveRequest<'_>,
        seen_turns: Option<&AttributeValue>,
        turns: &[Turn],
        markers: &[(String, AttributeValue)],
    ) -> Result<(), StoreError> {
        let mut chunks = markers.chunks(MAX_STALE_PER_WRITE);
        let first = chunks.next().unwrap_or_default();
        let expression = merge_expression(first, seen_turns.is_some());
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(request.to))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(":turns", encode_turns(turns))
            .expression_attribute_values(":exp", number(self.policy.expires_at(request.now)));
        if let Some(seen) = seen_turns {
            update = update.expression_attribute_values(":seen", seen.clone());
        }
        for (index, (_, marker)) in first.iter().enumerate() {
            update = update.expression_attribute_values(format!(":m{index}"), marker.clone());
        }
        update.send().await.map_err(changed_or_unavailable)?;
        for chunk in chunks {
            self.copy_markers(request.to, chunk).await?;
        }
        Ok(())
    }

    /// Copies `markers` into the item of `conversation`, leaving any it already has.
    async fn copy_markers(
        &self,
        conversation: &ConversationKey,
        markers: &[(String, AttributeValue)],
    ) -> Result<(), StoreError> {
        let mut names = HashMap::new();
        let sets = marker_sets(markers, &mut names);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(conversation))
            .update_expression(format!("SET {}", sets.join(", ")))
            .set_expression_attribute_names(Some(names));
        for (index, (_, marker)) in markers.iter().enumerate() {
            update = update.expression_attribute_values(format!(":m{index}"), marker.clone());
        }
        update.send().await.map_err(unavailable)?;
        Ok(())
    }

    /// Removes the turns of the previous conversation, on condition that they are still `seen`;
    /// its message markers stay until the item expires.
    async fn forget_turns(
        &self,
        conversation: &ConversationKey,
        seen: &AttributeValue,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(conversation))
            .update_expression("REMOVE #turns")
            .condition_expression("#turns = :seen")
            .expression_attribute_names("#turns", "turns")
            .expression_attribute_values(":seen", seen.clone())
            .send()
            .await
            .map_err(changed_or_unavailable)?;
        Ok(())
    }

    /// The conversation's item as it is now (empty when there is none).
    async fn read(&self, conversation: &ConversationKey) -> Result<Item, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", item_key(conversation))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item.unwrap_or_default())
    }
}

/// The outcome of one conditional claiming write.
enum Attempt {
    /// Every id was claimed; the item as written.
    Claimed(Item),
    /// Some id could not be claimed; the item as it was, when DynamoDB returned it.
    Refused(Option<Item>),
}

impl ConversationStore for DynamoDbConversationStore {
    async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let ids = unique(request.message_ids);
        if ids.is_empty() {
            return Ok(Claim::default());
        }
        let mut pending = ids.clone();
        let mut done = Vec::new();
        let mut held_elsewhere = Vec::new();
        for _ in 0..MAX_CLAIM_ROUNDS {
            let item = match self.try_claim(&request, &pending).await? {
                Attempt::Claimed(item) => {
                    let statuses = Statuses {
                        claimed: pending,
                        done,
                        held_elsewhere,
                    };
                    return Ok(assemble(&ids, statuses, &item, &self.policy, request.now));
                }
                Attempt::Refused(Some(item)) => item,
                Attempt::Refused(None) => self.read(request.conversation).await?,
            };
            let statuses = classify(&item, &pending, request.token, request.now);
            done.extend(statuses.done);
            held_elsewhere.extend(statuses.held_elsewhere);
            if statuses.claimed.is_empty() {
                let statuses = Statuses {
                    claimed: Vec::new(),
                    done,
                    held_elsewhere,
                };
                return Ok(assemble(&ids, statuses, &item, &self.policy, request.now));
            }
            pending = statuses.claimed;
        }
        Err(StoreError::Unavailable(format!(
            "contention: the claim was refused {MAX_CLAIM_ROUNDS} times in a row"
        )))
    }

    async fn complete(&self, request: CompleteRequest<'_>) -> Result<(), StoreError> {
        let ids = unique(request.message_ids);
        if ids.is_empty() && request.new_turns.is_empty() {
            return Ok(());
        }
        let stale: Vec<String> = unique(&request.stale_ids)
            .into_iter()
            .filter(|id| !ids.contains(id))
            .take(MAX_STALE_PER_WRITE)
            .collect();
        let turns = self
            .policy
            .retain(request.history, request.new_turns, request.now);
        let expression = complete_expression(&ids, &stale);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(request.conversation))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(":turns", encode_turns(&turns))
            .expression_attribute_values(":exp", number(self.policy.expires_at(request.now)));
        if !ids.is_empty() {
            update = update
                .expression_attribute_values(":done", done_marker(request.token, request.now))
                .expression_attribute_values(":token", AttributeValue::S(request.token.into()));
        }
        match update.send().await {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    Err(StoreError::ClaimLost)
                }
                _ => Err(unavailable(error)),
            },
        }
    }

    async fn move_conversation(&self, request: MoveRequest<'_>) -> Result<Moved, StoreError> {
        if request.from == request.to {
            return Ok(Moved::default());
        }
        let old = self.read(request.from).await?;
        if old.is_empty() {
            return Ok(Moved::default());
        }
        let new = self.read(request.to).await?;
        let moved_turns = self
            .policy
            .live(decode_turns(old.get("turns")), request.now);
        let turns = self.policy.merge(
            decode_turns(new.get("turns")),
            moved_turns.clone(),
            request.now,
        );
        let markers = markers_to_copy(&old, &new);
        self.write_merged(&request, new.get("turns"), &turns, &markers)
            .await?;
        if let Some(seen) = old.get("turns") {
            self.forget_turns(request.from, seen).await?;
        }
        Ok(Moved {
            turns: moved_turns.len(),
            message_ids: markers.len(),
        })
    }

    async fn mark_undelivered(
        &self,
        request: UndeliveredRequest<'_>,
    ) -> Result<MarkOutcome, StoreError> {
        let item = self.read(request.conversation).await?;
        let Some(seen) = item.get("turns") else {
            return Ok(MarkOutcome::NotFound);
        };
        let Some((list, outcome)) = marked_turns(seen, request.reply_id, request.error_code) else {
            return Ok(MarkOutcome::NotFound);
        };
        if !matches!(outcome, MarkOutcome::Marked { .. }) {
            return Ok(outcome);
        }
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(request.conversation))
            .update_expression("SET #turns = :turns")
            .condition_expression("#turns = :seen")
            .expression_attribute_names("#turns", "turns")
            .expression_attribute_values(":turns", AttributeValue::L(list))
            .expression_attribute_values(":seen", seen.clone())
            .send()
            .await
            .map_err(changed_or_unavailable)?;
        Ok(outcome)
    }

    async fn release(
        &self,
        conversation: &ConversationKey,
        token: &str,
        message_ids: &[String],
        pending: Option<&PendingAnswer>,
    ) -> Result<(), StoreError> {
        let ids = unique(message_ids);
        if ids.is_empty() {
            return Ok(());
        }
        let expression = release_expression(&ids, pending.is_some());
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", item_key(conversation))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .expression_attribute_values(":p", AttributeValue::S(PROCESSING.into()))
            .expression_attribute_values(":token", AttributeValue::S(token.into()));
        if let Some(pending) = pending {
            update = update.expression_attribute_values(":pending", encode_pending(pending));
        }
        let result = update.send().await;
        match result {
            Ok(_) => Ok(()),
            // Some claim is no longer held with this token (taken over, or done): release
            // nothing; whatever is still ours lapses with its lease.
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(unavailable(error)),
            },
        }
    }
}

fn unavailable(error: impl std::error::Error) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(error).to_string())
}

/// A conditional write refused because the item changed since it was read is a failure the
/// caller retries, as any other.
fn changed_or_unavailable<R: std::fmt::Debug>(error: SdkError<UpdateItemError, R>) -> StoreError {
    match error.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
            StoreError::Unavailable("the conversation changed while it was being written".into())
        }
        _ => unavailable(error),
    }
}

/// The stored `turns` with the one that went out as `reply_id` marked undelivered, every other
/// stored value kept as it is (even one that cannot be read); `None` when they are not a list.
fn marked_turns(
    turns: &AttributeValue,
    reply_id: &str,
    error_code: Option<i64>,
) -> Option<(Vec<AttributeValue>, MarkOutcome)> {
    let mut list = turns.as_l().ok()?.clone();
    let mut decoded: Vec<(usize, Turn)> = list
        .iter()
        .enumerate()
        .filter_map(|(index, value)| decode_turn(value).ok().map(|turn| (index, turn)))
        .collect();
    let mut readable: Vec<Turn> = decoded.iter().map(|(_, turn)| turn.clone()).collect();
    let outcome = mark_undelivered(&mut readable, reply_id, error_code);
    for ((index, before), after) in decoded.iter_mut().zip(&readable) {
        if before != after {
            list[*index] = encode_turn(after);
        }
    }
    Some((list, outcome))
}

/// The previous conversation's answered-message markers that the new one lacks, newest first,
/// at most [`MAX_REMEMBERED_IDS`].
fn markers_to_copy(old: &Item, new: &Item) -> Vec<(String, AttributeValue)> {
    let mut done: Vec<(&String, &AttributeValue, Option<i64>)> = old
        .iter()
        .filter(|(name, _)| name.starts_with(MARKER_PREFIX) && !new.contains_key(*name))
        .map(|(name, value)| (name, value, parse_marker(value)))
        .filter(|(_, _, marker)| marker.state == MarkerState::Done)
        .map(|(name, value, marker)| (name, value, marker.at))
        .collect();
    done.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
    done.truncate(MAX_REMEMBERED_IDS);
    done.into_iter()
        .map(|(name, value, _)| (name.clone(), value.clone()))
        .collect()
}

/// `SET` clauses writing each of `markers` (as `:m<index>`) unless the item has it already,
/// with their name placeholders added to `names`.
fn marker_sets(
    markers: &[(String, AttributeValue)],
    names: &mut HashMap<String, String>,
) -> Vec<String> {
    markers
        .iter()
        .enumerate()
        .map(|(index, (name, _))| {
            let placeholder = format!("#m{index}");
            names.insert(placeholder.clone(), name.clone());
            format!("{placeholder} = if_not_exists({placeholder}, :m{index})")
        })
        .collect()
}

/// Sets the merged turns (`:turns`), the expiry (`:exp`) and the copied `markers`, on condition
/// that the turns are still those read (`:seen`), or that there were none.
fn merge_expression(markers: &[(String, AttributeValue)], had_turns: bool) -> Expression {
    let mut names = names(&[("#turns", "turns"), ("#exp", "expires_at")]);
    let mut sets = vec!["#turns = :turns".to_owned(), "#exp = :exp".to_owned()];
    sets.extend(marker_sets(markers, &mut names));
    let condition = if had_turns {
        "#turns = :seen"
    } else {
        "attribute_not_exists(#turns)"
    };
    Expression {
        update: format!("SET {}", sets.join(", ")),
        condition: Some(condition.to_owned()),
        names,
    }
}

/// The partition key of a conversation's item.
fn item_key(conversation: &ConversationKey) -> AttributeValue {
    AttributeValue::S(format!(
        "{CONVERSATION_KEY_PREFIX}{}",
        conversation.as_str()
    ))
}

/// The attribute that holds a message id's marker.
fn marker_attribute(message_id: &str) -> String {
    format!("{MARKER_PREFIX}{message_id}")
}

/// Reads a stored number that should be a whole number of seconds.
fn parse_number(value: &AttributeValue) -> Option<i64> {
    let text = value.as_n().ok()?;
    text.parse::<i64>().ok().or_else(|| {
        let float = text.parse::<f64>().ok()?;
        // Whole numbers within i64's range only; `as` would saturate silently.
        (float.is_finite() && float.fract() == 0.0 && float.abs() < 9.0e18).then_some(float as i64)
    })
}

/// `ids` without repeats, in their first order (one attribute path may appear only once in an
/// update expression).
fn unique(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

const PROCESSING: &str = "p";
const DONE: &str = "d";

fn processing_marker(token: &str, lease_until: i64, now: i64) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("s".to_owned(), AttributeValue::S(PROCESSING.into())),
        ("k".to_owned(), AttributeValue::S(token.into())),
        ("u".to_owned(), number(lease_until)),
        ("at".to_owned(), number(now)),
    ]))
}

fn done_marker(token: &str, now: i64) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("s".to_owned(), AttributeValue::S(DONE.into())),
        ("k".to_owned(), AttributeValue::S(token.into())),
        ("at".to_owned(), number(now)),
    ]))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn encode_turn(turn: &Turn) -> AttributeValue {
    let mut map = HashMap::from([
        (
            "r".to_owned(),
            AttributeValue::S(role_name(turn.role).into()),
        ),
        ("t".to_owned(), AttributeValue::S(turn.text.clone())),
        ("at".to_owned(), number(turn.at)),
    ]);
    if !turn.sent_as.is_empty() {
        map.insert("ids".to_owned(), string_list(&turn.sent_as));
    }
    if let Some(undelivered) = turn.undelivered {
        let code = undelivered.error_code.map(|c| ("c".to_owned(), number(c)));
        map.insert(
            "u".to_owned(),
            AttributeValue::M(code.into_iter().collect()),
        );
    }
    AttributeValue::M(map)
}

fn encode_turns(turns: &[Turn]) -> AttributeValue {
    AttributeValue::L(turns.iter().map(encode_turn).collect())
}

/// Reads one stored turn, or says what is wrong with it (never quoting its text).
fn decode_turn(value: &AttributeValue) -> Result<Turn, &'static str> {
    let map = value.as_m().map_err(|_| "not a map")?;
    let role = match map.get("r").and_then(|r| r.as_s().ok()).map(String::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(_) => return Err("unknown role"),
        None => return Err("no role"),
    };
    let text = map
        .get("t")
        .and_then(|t| t.as_s().ok())
        .ok_or("no text")?
        .clone();
    let at = map.get("at").and_then(parse_number).ok_or("no time")?;
    let sent_as = map
        .get("ids")
        .and_then(|ids| ids.as_l().ok())
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_s().ok().cloned())
                .collect()
        })
        .unwrap_or_default();
    let undelivered = map.get("u").map(|u| Undelivered {
        error_code: u
            .as_m()
            .ok()
            .and_then(|u| u.get("c"))
            .and_then(parse_number),
    });
    Ok(Turn {
        sent_as,
        undelivered,
        ..Turn::new(role, text, at)
    })
}

/// Reads the stored turns, skipping (with a warning) any that cannot be read.
fn decode_turns(value: Option<&AttributeValue>) -> Vec<Turn> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Ok(list) = value.as_l() else {
        tracing::warn!("the stored turns are not a list; the history is ignored");
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(index, value)| match decode_turn(value) {
            Ok(turn) => Some(turn),
            Err(reason) => {
                tracing::warn!(index, reason, "skipping a stored turn that cannot be read");
                None
            }
        })
        .collect()
}

/// What a message id's marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MarkerState {
    /// An invocation is processing the message, until its lease (when readable).
    Processing { lease_until: Option<i64> },
    /// The message was answered.
    Done,
    /// The marker cannot be read.
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    state: MarkerState,
    token: Option<String>,
    at: Option<i64>,
}

fn parse_marker(value: &AttributeValue) -> Marker {
    let Ok(map) = value.as_m() else {
        return Marker {
            state: MarkerState::Unreadable,
            token: None,
            at: None,
        };
    };
    let state = match map.get("s").and_then(|s| s.as_s().ok()).map(String::as_str) {
        Some(PROCESSING) => MarkerState::Processing {
            lease_until: map.get("u").and_then(parse_number),
        },
        Some(DONE) => MarkerState::Done,
        _ => MarkerState::Unreadable,
    };
    Marker {
        state,
        token: map.get("k").and_then(|k| k.as_s().ok()).cloned(),
        at: map.get("at").and_then(parse_number),
    }
}

impl Marker {
    /// Whether the marker is another invocation's claim that has not lapsed at `now`.
    fn is_live_lease(&self, now: i64) -> bool {
        matches!(self.state, MarkerState::Processing { lease_until: Some(u) } if u >= now)
    }
}

/// The message ids' markers in an item.
fn markers(item: &Item) -> impl Iterator<Item = (&str, Marker)> {
    item.iter().filter_map(|(name, value)| {
        name.strip_prefix(MARKER_PREFIX)
            .map(|id| (id, parse_marker(value)))
    })
}

/// Where a claim leaves each message id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Statuses {
    /// Claimed, or (from [`classify`]) claimable.
    claimed: Vec<String>,
    done: Vec<String>,
    held_elsewhere: Vec<String>,
}

/// Sorts `ids` by what the item's markers say, exactly as the claim's condition judges them: an
/// id is claimable when it has no marker, or a processing marker whose lease lapsed before
/// `now` or that is `token`'s own. An unreadable marker counts as done, so that a message is
/// never answered twice.
fn classify(item: &Item, ids: &[String], token: &str, now: i64) -> Statuses {
    let mut statuses = Statuses::default();
    for id in ids {
        let Some(marker) = item.get(&marker_attribute(id)).map(parse_marker) else {
            statuses.claimed.push(id.clone());
            continue;
        };
        let ours = marker.token.as_deref() == Some(token);
        match marker.state {
            MarkerState::Processing { lease_until }
                if ours || lease_until.is_some_and(|u| u < now) =>
            {
                statuses.claimed.push(id.clone());
            }
            MarkerState::Processing {
                lease_until: Some(_),
            } => statuses.held_elsewhere.push(id.clone()),
            MarkerState::Done => statuses.done.push(id.clone()),
            MarkerState::Processing { lease_until: None } | MarkerState::Unreadable => {
                tracing::warn!("a message's claim marker cannot be read; treating it as answered");
                statuses.done.push(id.clone());
            }
        }
    }
    statuses
}

/// The ids of the markers that can be forgotten, oldest first: those written
/// [`HistoryPolicy::id_memory_seconds`] or more before `now` (or undated), and those beyond the newest [`MAX_REMEMBERED_IDS`]. The
/// `requested` ids and live leases are always kept.
fn stale_ids(item: &Item, requested: &[String], now: i64, policy: &HistoryPolicy) -> Vec<String> {
    let requested: HashSet<&str> = requested.iter().map(String::as_str).collect();
    let mut all: Vec<(&str, Marker)> = markers(item).collect();
    // Newest first; undated markers last; ties in id order so that the outcome is stable.
    all.sort_by(|(a_id, a), (b_id, b)| b.at.cmp(&a.at).then_with(|| a_id.cmp(b_id)));
    let mut stale: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(rank, (id, marker))| {
            let expired = marker
                .at
                .is_none_or(|at| at.saturating_add(policy.id_memory_seconds()) <= now);
            (expired || *rank >= MAX_REMEMBERED_IDS)
                && !requested.contains(id)
                && !marker.is_live_lease(now)
        })
        .map(|(_, (id, _))| (*id).to_owned())
        .collect();
    stale.reverse();
    stale.truncate(MAX_STALE_PER_WRITE);
    stale
}

/// The claim's outcome, each list in the order of `ids`.
fn assemble(
    ids: &[String],
    statuses: Statuses,
    item: &Item,
    policy: &HistoryPolicy,
    now: i64,
) -> Claim {
    let in_order = |subset: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| subset.contains(id))
            .cloned()
            .collect()
    };
    Claim {
        pending: pending_for(item, &statuses.claimed),
        claimed: in_order(&statuses.claimed),
        done: in_order(&statuses.done),
        held_elsewhere: in_order(&statuses.held_elsewhere),
        history: policy.live(decode_turns(item.get("turns")), now),
        stale_ids: stale_ids(item, ids, now, policy),
    }
}

/// Sets a processing marker (`:claim`) for each of `ids` (not empty) and the expiry (`:exp`),
/// on condition that each id is unclaimed, its lease lapsed before `:now`, or it is held by
/// `:token`. Message ids contain `.`, `=` and the like, so they are always name placeholders.
fn claim_expression(ids: &[String]) -> Expression {
    let mut names = names(&[
        ("#s", "s"),
        ("#u", "u"),
        ("#k", "k"),
        ("#exp", "expires_at"),
    ]);
    let mut sets = Vec::with_capacity(ids.len() + 1);
    let mut conditions = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let c = format!("#c{index}");
        sets.push(format!("{c} = :claim"));
        conditions.push(format!(
            "(attribute_not_exists({c}) OR ({c}.#s = :p AND ({c}.#u < :now OR {c}.#k = :token)))"
        ));
        names.insert(c, marker_attribute(id));
    }
    sets.push("#exp = :exp".to_owned());
    Expression {
        update: format!("SET {}", sets.join(", ")),
        condition: Some(conditions.join(" AND ")),
        names,
    }
}

/// Sets the turns (`:turns`), the expiry (`:exp`) and a done marker (`:done`) for each of `ids`,
/// and removes the `stale` ids' markers (which must not be among `ids`), on condition that each
/// of `ids` is still held by `:token`.
fn complete_expression(ids: &[String], stale: &[String]) -> Expression {
    let mut names = names(&[
        ("#turns", "turns"),
        ("#exp", "expires_at"),
        ("#pending", PENDING_ATTRIBUTE),
    ]);
    let mut sets = vec!["#turns = :turns".to_owned(), "#exp = :exp".to_owned()];
    let mut conditions = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let c = format!("#c{index}");
        sets.push(format!("{c} = :done"));
        conditions.push(format!("{c}.#k = :token"));
        names.insert(c, marker_attribute(id));
    }
    if !ids.is_empty() {
        names.insert("#k".to_owned(), "k".to_owned());
    }
    let mut removes = Vec::with_capacity(stale.len() + 1);
    removes.push("#pending".to_owned());
    for (index, id) in stale.iter().enumerate() {
        let r = format!("#r{index}");
        removes.push(r.clone());
        names.insert(r, marker_attribute(id));
    }
    let update = format!("SET {} REMOVE {}", sets.join(", "), removes.join(", "));
    Expression {
        update,
        condition: (!conditions.is_empty()).then(|| conditions.join(" AND ")),
        names,
    }
}

/// Removes the markers of `ids`, and sets the pending answer (`:pending`) when `with_pending`,
/// on condition that each is still being processed under the caller's token.
fn release_expression(ids: &[String], with_pending: bool) -> Expression {
    let mut names = names(&[("#s", "s"), ("#k", "k")]);
    let mut removes = Vec::with_capacity(ids.len());
    let mut conditions = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let c = format!("#c{index}");
        removes.push(c.clone());
        conditions.push(format!("{c}.#s = :p AND {c}.#k = :token"));
        names.insert(c, marker_attribute(id));
    }
    let mut update = format!("REMOVE {}", removes.join(", "));
    if with_pending {
        update.push_str(" SET #pending = :pending");
        names.insert("#pending".to_owned(), PENDING_ATTRIBUTE.to_owned());
    }
    Expression {
        update,
        condition: Some(conditions.join(" AND ")),
        names,
    }
}

fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().cloned().map(AttributeValue::S).collect())
}

fn encode_pending(pending: &PendingAnswer) -> AttributeValue {
    let sent = i64::try_from(pending.parts_sent).unwrap_or(i64::MAX);
    AttributeValue::M(HashMap::from([
        ("ids".to_owned(), string_list(&pending.message_ids)),
        ("replies".to_owned(), string_list(&pending.replies)),
        ("sent".to_owned(), number(sent)),
    ]))
}

/// Reads the stored pending answer; one that cannot be read is ignored (the LLM is asked again).
fn decode_pending(value: Option<&AttributeValue>) -> Option<PendingAnswer> {
    let map = value?.as_m().ok()?;
    let strings = |key: &str| -> Option<Vec<String>> {
        map.get(key)?
            .as_l()
            .ok()?
            .iter()
            .map(|v| v.as_s().ok().cloned())
            .collect()
    };
    let parts_sent = map.get("sent").and_then(parse_number)?;
    Some(PendingAnswer {
        message_ids: strings("ids")?,
        replies: strings("replies")?,
        parts_sent: usize::try_from(parts_sent).ok()?,
    })
}

/// The item's pending answer, when every message it answers was `claimed` now.
fn pending_for(item: &Item, claimed: &[String]) -> Option<PendingAnswer> {
    decode_pending(item.get(PENDING_ATTRIBUTE)).filter(|pending| {
        !pending.message_ids.is_empty() && pending.message_ids.iter().all(|id| claimed.contains(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn s(value: &str) -> AttributeValue {
        AttributeValue::S(value.into())
    }

    fn ids(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn item(markers: Vec<(&str, AttributeValue)>) -> Item {
        markers
            .into_iter()
            .map(|(id, value)| (marker_attribute(id), value))
            .chain([("pk".to_owned(), s("conv#1:2"))])
            .collect()
    }

    #[test]
    fn turns_round_trip() {
        let turns = vec![
            Turn::new(Role::User, "Olá 👋", NOW),
            Turn {
                sent_as: vec!["wamid.1".into(), "wamid.2".into()],
                undelivered: Some(Undelivered {
                    error_code: Some(131_047),
                }),
                ..Turn::new(Role::Assistant, String::new(), NOW + 1)
            },
            Turn {
                undelivered: Some(Undelivered { error_code: None }),
                ..Turn::new(Role::Assistant, "no code", NOW + 2)
            },
        ];
        let encoded = encode_turns(&turns);
        let AttributeValue::L(list) = &encoded else {
            panic!("turns are a list: {encoded:?}");
        };
        assert_eq!(
            list[0].as_m().unwrap().get("r"),
            Some(&s("user")),
            "{encoded:?}"
        );
        assert_eq!(list[0].as_m().unwrap().get("at"), Some(&number(NOW)));
        assert_eq!(decode_turns(Some(&encoded)), turns);
    }

    #[test]
    fn marking_a_reply_keeps_every_other_stored_value_as_it_was() {
        let reply = Turn {
            sent_as: vec!["wamid.r".into()],
            ..Turn::new(Role::Assistant, "answer", NOW)
        };
        let unreadable = s("not a turn");
        let stored = AttributeValue::L(vec![
            unreadable.clone(),
            encode_turn(&Turn::new(Role::User, "q", NOW - 1)),
            encode_turn(&reply),
        ]);
        let (list, outcome) = marked_turns(&stored, "wamid.r", Some(131_026)).unwrap();
        assert_eq!(outcome, MarkOutcome::Marked { in_a_row: 1 });
        assert_eq!(list[0], unreadable);
        assert_eq!(list[1], stored.as_l().unwrap()[1]);
        assert_eq!(
            decode_turn(&list[2]).unwrap().undelivered,
            Some(Undelivered {
                error_code: Some(131_026)
            })
        );
        let (_, outcome) = marked_turns(&stored, "wamid.other", None).unwrap();
        assert_eq!(outcome, MarkOutcome::NotFound);
        assert!(marked_turns(&s("not a list"), "wamid.r", None).is_none());
    }

    #[test]
    fn unreadable_turns_are_skipped_and_nothing_panics() {
        let good = encode_turn(&Turn::new(Role::User, "kept", 5));
        let mut unknown_role = good.as_m().unwrap().clone();
        unknown_role.insert("r".into(), s("system"));
        let mut text_not_a_string = good.as_m().unwrap().clone();
        text_not_a_string.insert("t".into(), number(3));
        let mut bad_time = good.as_m().unwrap().clone();
        bad_time.insert("at".into(), AttributeValue::N("soon".into()));
        let mut float_time = good.as_m().unwrap().clone();
        float_time.insert("at".into(), AttributeValue::N("6.0".into()));
        let stored = AttributeValue::L(vec![
            good.clone(),
            s("not a map"),
            AttributeValue::M(unknown_role),
            AttributeValue::M(text_not_a_string),
            AttributeValue::M(bad_time),
            AttributeValue::M(float_time),
        ]);
        let turns = decode_turns(Some(&stored));
        assert_eq!(turns.len(), 2, "{turns:?}");
        assert_eq!(turns[1].at, 6);
        assert_eq!(decode_turns(Some(&s("not a list"))), vec![]);
        assert_eq!(decode_turns(None), vec![]);
        assert_eq!(parse_number(&AttributeValue::N("1e300".into())), None);
    }

    #[test]
    fn classifies_ids_as_the_condition_does() {
        let stored = item(vec![
            ("done", done_marker("other", NOW - 10)),
            ("held", processing_marker("other", NOW, NOW - 10)),
            ("lapsed", processing_marker("other", NOW - 1, NOW - 100)),
            ("ours", processing_marker("me", NOW + 60, NOW - 10)),
            ("done-by-us", done_marker("me", NOW - 10)),
            ("garbled", s("??")),
            (
                "no-lease",
                AttributeValue::M(HashMap::from([("s".into(), s("p"))])),
            ),
        ]);
        let requested = ids(&[
            "new",
            "done",
            "held",
            "lapsed",
            "ours",
            "done-by-us",
            "garbled",
            "no-lease",
        ]);
        let statuses = classify(&stored, &requested, "me", NOW);
        assert_eq!(statuses.claimed, ids(&["new", "lapsed", "ours"]));
        assert_eq!(
            statuses.done,
            ids(&["done", "done-by-us", "garbled", "no-lease"])
        );
        assert_eq!(statuses.held_elsewhere, ids(&["held"]));
    }

    #[test]
    fn forgets_expired_and_excess_markers_but_never_requested_ids_or_live_leases() {
        // Turns last a day; message ids Meta's 7 days of redelivery.
        let policy = HistoryPolicy::new(20, 1);
        let ttl = policy.id_memory_seconds();
        assert_eq!(ttl, 7 * 86_400);
        let mut markers = vec![
            ("expired", done_marker("t", NOW - ttl)),
            ("fresh-enough", done_marker("t", NOW - ttl + 1)),
            ("requested-old", done_marker("t", NOW - ttl - 5)),
            ("live-old", processing_marker("t", NOW, NOW - ttl - 5)),
            (
                "undated",
                AttributeValue::M(HashMap::from([("s".into(), s("d"))])),
            ),
        ];
        let recent: Vec<String> = (0..MAX_REMEMBERED_IDS)
            .map(|i| format!("recent{i:03}"))
            .collect();
        for (i, id) in recent.iter().enumerate() {
            markers.push((id.as_str(), done_marker("t", NOW - 1000 + i as i64)));
        }
        let stored = item(markers);
        let stale = stale_ids(&stored, &ids(&["requested-old"]), NOW, &policy);
        // 256 recent markers are the newest; the next (fresh-enough) is beyond them.
        assert_eq!(stale, ids(&["undated", "expired", "fresh-enough"]));

        let few = item(vec![
            ("expired", done_marker("t", NOW - ttl)),
            ("fresh-enough", done_marker("t", NOW - ttl + 1)),
        ]);
        assert_eq!(stale_ids(&few, &[], NOW, &policy), ids(&["expired"]));
        let two_days_old = item(vec![("two-days", done_marker("t", NOW - 2 * 86_400))]);
        assert!(
            stale_ids(&two_days_old, &[], NOW, &policy).is_empty(),
            "an id is remembered longer than the turns"
        );
    }

    #[test]
    fn claim_expression_uses_placeholders_for_every_id() {
        let expression = claim_expression(&ids(&["wamid.A=", "wamid.B="]));
        assert_eq!(
            expression.update,
            "SET #c0 = :claim, #c1 = :claim, #exp = :exp"
        );
        assert_eq!(
            expression.condition.as_deref(),
            Some(
                "(attribute_not_exists(#c0) OR (#c0.#s = :p AND (#c0.#u < :now OR #c0.#k = :token))) \
                 AND (attribute_not_exists(#c1) OR (#c1.#s = :p AND (#c1.#u < :now OR #c1.#k = :token)))"
            )
        );
        assert_eq!(expression.names["#c0"], "c#wamid.A=");
        assert_eq!(expression.names["#c1"], "c#wamid.B=");
        assert_eq!(expression.names["#exp"], "expires_at");
    }

    #[test]
    fn complete_expression_marks_done_and_forgets_stale_ids() {
        let expression = complete_expression(&ids(&["a"]), &ids(&["old1", "old2"]));
        assert_eq!(
            expression.update,
            "SET #turns = :turns, #exp = :exp, #c0 = :done REMOVE #pending, #r0, #r1"
        );
        assert_eq!(expression.names["#pending"], "pending_answer");
        assert_eq!(expression.condition.as_deref(), Some("#c0.#k = :token"));
        assert_eq!(expression.names["#r1"], "c#old2");
        assert_eq!(expression.names["#k"], "k");

        let turns_only = complete_expression(&[], &[]);
        assert_eq!(
            turns_only.update,
            "SET #turns = :turns, #exp = :exp REMOVE #pending"
        );
        assert_eq!(turns_only.condition, None);
        assert!(
            !turns_only.names.contains_key("#k"),
            "unused names are refused"
        );
    }

    #[test]
    fn release_removes_only_markers_still_processing_under_the_token() {
        let expression = release_expression(&ids(&["a", "b"]), false);
        assert_eq!(expression.update, "REMOVE #c0, #c1");
        assert!(!expression.names.contains_key("#pending"));
        assert_eq!(
            expression.condition.as_deref(),
            Some("#c0.#s = :p AND #c0.#k = :token AND #c1.#s = :p AND #c1.#k = :token")
        );
        assert_eq!(expression.names["#c1"], "c#b");

        let with_pending = release_expression(&ids(&["a"]), true);
        assert_eq!(with_pending.update, "REMOVE #c0 SET #pending = :pending");
        assert_eq!(with_pending.names["#pending"], "pending_answer");
    }

    #[test]
    fn a_pending_answer_round_trips_and_is_given_only_with_all_its_ids() {
        let pending = PendingAnswer {
            message_ids: ids(&["a", "b"]),
            replies: ids(&["the answer", "unsupported"]),
            parts_sent: 1,
        };
        let stored: Item =
            HashMap::from([(PENDING_ATTRIBUTE.to_owned(), encode_pending(&pending))]);
        assert_eq!(
            decode_pending(stored.get(PENDING_ATTRIBUTE)),
            Some(pending.clone())
        );
        assert_eq!(pending_for(&stored, &ids(&["a", "b", "c"])), Some(pending));
        assert_eq!(pending_for(&stored, &ids(&["a", "c"])), None);
        assert_eq!(decode_pending(Some(&s("garbled"))), None);
        let mut negative = encode_pending(&PendingAnswer::default())
            .as_m()
            .unwrap()
            .clone();
        negative.insert("sent".into(), number(-1));
        assert_eq!(decode_pending(Some(&AttributeValue::M(negative))), None);
    }

    #[test]
    fn repeated_ids_are_claimed_once() {
        assert_eq!(unique(&ids(&["a", "b", "a"])), ids(&["a", "b"]));
    }

    #[test]
    fn assembles_lists_in_request_order() {
        let policy = HistoryPolicy::new(20, 1);
        let statuses = Statuses {
            claimed: ids(&["c", "a"]),
            done: ids(&["b"]),
            held_elsewhere: vec![],
        };
        let claim = assemble(&ids(&["a", "b", "c"]), statuses, &Item::new(), &policy, NOW);
        assert_eq!(claim.claimed, ids(&["a", "c"]));
        assert_eq!(claim.done, ids(&["b"]));
        assert!(claim.history.is_empty() && claim.stale_ids.is_empty());
    }
}
