//! [`HandoffStore`] on the conversations' table: `pk = "ho#<conversation key>"` with `ref`,
//! `agent`, `since`, `last_agent_at`, `ended_at` (once handed back), `by`, `opened_by`, `turns`
//! (`{text, at}`, the agent's words), `ids` (the agent's message ids already kept) and
//! `expires_at`; and `pk = "hr#<phone_number_id>#<reference>"` with `conv` and `expires_at`.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use rand::Rng;

use super::codec::parse_number;
use super::{DynamoDbConversationStore, Item, is_refused, unavailable};
use crate::conversation::{StoreError, truncate_bytes};
use crate::dynamodb_expression::number;
use crate::handoff::{
    AgentTurn, HANDOFF_MEMORY_SECONDS, Handoff, HandoffStore, OpenHandoff, handoff_key,
    reference_key,
};
use crate::inbound::ConversationKey;

/// How many references are tried before giving up (there are 9000 per number).
const REFERENCE_TRIES: usize = 8;

/// The most bytes of one agent turn kept for the bot's memory.
const MAX_AGENT_TURN_BYTES: usize = 2000;

/// A handoff from its item; `None` when it lacks what every handoff has.
pub(super) fn decode_handoff(item: &Item) -> Option<Handoff> {
    let text = |name: &str| item.get(name)?.as_s().ok().cloned();
    let time = |name: &str| item.get(name).and_then(parse_number);
    let turns = match item.get("turns") {
        Some(AttributeValue::L(turns)) => turns
            .iter()
            .filter_map(|turn| {
                let turn = turn.as_m().ok()?;
                Some(AgentTurn {
                    text: turn.get("text")?.as_s().ok()?.clone(),
                    at: turn.get("at").and_then(parse_number)?,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let since = time("since")?;
    Some(Handoff {
        reference: text("ref")?,
        agent: text("agent")?,
        since,
        last_agent_at: time("last_agent_at").unwrap_or(since),
        ended_at: time("ended_at"),
        by: text("by").unwrap_or_default(),
        opened_by: text("opened_by").unwrap_or_default(),
        turns,
    })
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

impl DynamoDbConversationStore {
    /// Takes a free reference of the number for `conversation`: one no other conversation holds,
    /// or whose item expired.
    async fn take_reference(&self, request: &OpenHandoff<'_>) -> Result<String, StoreError> {
        for _ in 0..REFERENCE_TRIES {
            let reference = rand::rng().random_range(1000..=9999).to_string();
            let result = self
                .client
                .put_item()
                .table_name(&self.table_name)
                .item("pk", s(&reference_key(request.phone_number_id, &reference)))
                .item("conv", s(request.conversation.as_str()))
                .item("expires_at", number(request.now + HANDOFF_MEMORY_SECONDS))
                .condition_expression(
                    "attribute_not_exists(pk) OR conv = :conv OR expires_at < :now",
                )
                .expression_attribute_values(":conv", s(request.conversation.as_str()))
                .expression_attribute_values(":now", number(request.now))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match result {
                Ok(output) => {
                    self.meter(output.consumed_capacity(), true);
                    return Ok(reference);
                }
                Err(error) if is_refused(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        Err(StoreError::Unavailable(
            "no free handoff reference after several tries".into(),
        ))
    }

    /// Deletes the item `pk` when `condition` holds (with `value` as its placeholder's, when
    /// it has one); a delete its condition refuses is no error: the item is not this one's to
    /// delete, or is gone already.
    async fn delete_unless_refused(
        &self,
        pk: &str,
        condition: &str,
        value: Option<(&str, AttributeValue)>,
    ) -> Result<(), StoreError> {
        let values = value.map(|(name, value)| [(name.to_owned(), value)].into());
        let result = self
            .client
            .delete_item()
            .table_name(&self.table_name)
            .key("pk", s(pk))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter(output.consumed_capacity(), true);
                Ok(())
            }
            Err(error) if is_refused(&error) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Renews an open handoff's agent time; `false` when there is no open one.
    async fn renew_handoff(
        &self,
        conversation: &ConversationKey,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", s(&handoff_key(conversation)))
            .update_expression("SET last_agent_at = :now, expires_at = :exp")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(ended_at)")
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":exp", number(now + HANDOFF_MEMORY_SECONDS))
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
}

impl HandoffStore for DynamoDbConversationStore {
    async fn open_handoff(&self, request: OpenHandoff<'_>) -> Result<(Handoff, bool), StoreError> {
        if self
            .renew_handoff(request.conversation, request.now)
            .await?
        {
            let item = self.get(&handoff_key(request.conversation)).await?;
            if let Some(handoff) = item.as_ref().and_then(decode_handoff) {
                return Ok((handoff, false));
            }
        }
        let reference = self.take_reference(&request).await?;
        let handoff = Handoff {
            reference,
            agent: request.agent.to_owned(),
            since: request.now,
            last_agent_at: request.now,
            ended_at: None,
            by: request.by.as_str().to_owned(),
            opened_by: request.message_id.to_owned(),
            turns: Vec::new(),
        };
        let output = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .item("pk", s(&handoff_key(request.conversation)))
            .item("ref", s(&handoff.reference))
            .item("agent", s(&handoff.agent))
            .item("since", number(handoff.since))
            .item("last_agent_at", number(handoff.last_agent_at))
            .item("by", s(&handoff.by))
            .item("opened_by", s(&handoff.opened_by))
            .item("expires_at", number(request.now + HANDOFF_MEMORY_SECONDS))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable)?;
        self.meter(output.consumed_capacity(), true);
        Ok((handoff, true))
    }

    async fn find_handoff(
        &self,
        phone_number_id: &str,
        reference: &str,
    ) -> Result<Option<(ConversationKey, Handoff)>, StoreError> {
        let Some(item) = self.get(&reference_key(phone_number_id, reference)).await? else {
            return Ok(None);
        };
        let Some(conv) = item.get("conv").and_then(|c| c.as_s().ok()) else {
            return Ok(None);
        };
        let Some((number, user)) = conv.split_once(':') else {
            return Ok(None);
        };
        let conversation = ConversationKey::new(number, user);
        let handoff = self.get(&handoff_key(&conversation)).await?;
        Ok(handoff
            .as_ref()
            .and_then(decode_handoff)
            .filter(|h| h.reference == reference && h.ended_at.is_none())
            .map(|h| (conversation, h)))
    }

    async fn add_agent_turn(
        &self,
        conversation: &ConversationKey,
        message_id: &str,
        turn: AgentTurn,
    ) -> Result<(), StoreError> {
        let kept = AttributeValue::M(
            [
                (
                    "text".to_owned(),
                    s(&truncate_bytes(&turn.text, MAX_AGENT_TURN_BYTES)),
                ),
                ("at".to_owned(), number(turn.at)),
            ]
            .into(),
        );
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", s(&handoff_key(conversation)))
            .update_expression(
                "SET turns = list_append(if_not_exists(turns, :none), :turn), \
                 ids = list_append(if_not_exists(ids, :none), :ids), \
                 last_agent_at = :at, expires_at = :exp",
            )
            .condition_expression("attribute_exists(pk) AND NOT contains(ids, :id)")
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":turn", AttributeValue::L(vec![kept]))
            .expression_attribute_values(":ids", AttributeValue::L(vec![s(message_id)]))
            .expression_attribute_values(":id", s(message_id))
            .expression_attribute_values(":at", number(turn.at))
            .expression_attribute_values(":exp", number(turn.at + HANDOFF_MEMORY_SECONDS))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter(output.consumed_capacity(), true);
                Ok(())
            }
            // Kept by an earlier delivery of the same message.
            Err(error) if is_refused(&error) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn end_handoff(
        &self,
        conversation: &ConversationKey,
        phone_number_id: &str,
        reference: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let ended = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", s(&handoff_key(conversation)))
            .update_expression("SET ended_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(ended_at)")
            .expression_attribute_values(":now", number(now))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match ended {
            Ok(output) => self.meter(output.consumed_capacity(), true),
            // Ended already (a retry of the same `/bot`, or idle time noticed twice).
            Err(error) if is_refused(&error) => {}
            Err(error) => return Err(unavailable(error)),
        }
        self.delete_unless_refused(
            &reference_key(phone_number_id, reference),
            "conv = :conv",
            Some((":conv", s(conversation.as_str()))),
        )
        .await
    }

    async fn forget_handoff(&self, conversation: &ConversationKey) -> Result<(), StoreError> {
        self.delete_unless_refused(
            &handoff_key(conversation),
            "attribute_exists(ended_at)",
            None,
        )
        .await
    }
}
