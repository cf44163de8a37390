//! A conversation's history as stored: one item per exchange in a ring of
//! [`HistoryPolicy::max_exchanges`] slots, `pk = "h#<conversation key>#<slot>"`, each holding
//! the exchange's sequence number `n` (1 for the first), its `turns` and `expires_at`. Exchange
//! `n` goes to slot `n mod slots`, replacing the one that many exchanges older, so that storing
//! an exchange writes only that exchange, whatever the conversation's past. All slots (and the
//! first layout's item, and the user's opt-out record) are read with one `BatchGetItem`.

use aws_sdk_dynamodb::types::AttributeValue;

use super::Item;
use super::codec::{decode_turns, parse_number};
use super::legacy::LegacyItem;
use crate::conversation::{HistoryPolicy, Turn};
use crate::inbound::ConversationKey;

/// The prefix of a history slot's partition key.
pub const HISTORY_KEY_PREFIX: &str = "h#";

/// The partition key of `conversation`'s history slot `slot`.
pub(super) fn slot_key(conversation: &ConversationKey, slot: usize) -> String {
    format!("{HISTORY_KEY_PREFIX}{}#{slot}", conversation.as_str())
}

/// The slot exchange `seq` is stored in, among `slots`.
pub(super) fn slot_of(seq: u64, slots: usize) -> usize {
    let slots = u64::try_from(slots.max(1)).unwrap_or(1);
    usize::try_from(seq % slots).unwrap_or(0)
}

/// One stored exchange.
#[derive(Debug, Clone)]
pub(super) struct StoredExchange {
    /// Its slot.
    pub(super) slot: usize,
    /// Its sequence number.
    pub(super) seq: u64,
    /// Its turns, as read (unreadable ones skipped).
    pub(super) turns: Vec<Turn>,
    /// Its turns as stored, for a write conditional on them.
    pub(super) raw_turns: AttributeValue,
}

/// A conversation's history as read: its stored exchanges, oldest first, and its first-layout
/// item when there is one.
#[derive(Debug, Clone, Default)]
pub(super) struct History {
    pub(super) exchanges: Vec<StoredExchange>,
    pub(super) legacy: Option<LegacyItem>,
    /// Whether the user's opt-out record, read with the history, says they opted out.
    pub(super) opted_out: bool,
    /// The day's token count and whether its notice went out, when it was read with the history.
    pub(super) budget: (u64, bool),
    /// The conversation's handoff item, when it has one.
    pub(super) handoff: Option<Item>,
}

impl History {
    /// Builds the history of `conversation` from the items a read returned.
    pub(super) fn from_items(
        conversation: &ConversationKey,
        slots: usize,
        items: Vec<Item>,
    ) -> Self {
        let mut history = Self::default();
        let legacy_pk = super::legacy::legacy_key(conversation);
        let opt_out_pk = AttributeValue::S(super::standing::opt_out_key(conversation));
        let handoff_pk = AttributeValue::S(crate::handoff::handoff_key(conversation));
        let budget_prefix = format!(
            "{}{}#",
            super::standing::BUDGET_KEY_PREFIX,
            conversation.as_str()
        );
        for item in items {
            if item.get("pk") == Some(&legacy_pk) {
                history.legacy = Some(LegacyItem(item));
                continue;
            }
            if item.get("pk") == Some(&handoff_pk) {
                history.handoff = Some(item);
                continue;
            }
            if item.get("pk") == Some(&opt_out_pk) {
                history.opted_out = super::standing::says_opted_out(&item);
                continue;
            }
            let pk = item.get("pk").and_then(|pk| pk.as_s().ok());
            if pk.is_some_and(|pk| pk.starts_with(&budget_prefix)) {
                history.budget = super::standing::budget_of(&item);
                continue;
            }
            let slot = (0..slots).find(|slot| {
                item.get("pk").and_then(|pk| pk.as_s().ok()) == Some(&slot_key(conversation, *slot))
            });
            let seq = item.get("n").and_then(parse_number);
            if let (Some(slot), Some(seq)) = (slot, seq.and_then(|n| u64::try_from(n).ok())) {
                let raw_turns = item
                    .get("turns")
                    .cloned()
                    .unwrap_or(AttributeValue::L(Vec::new()));
                let turns = decode_turns(Some(&raw_turns));
                history.exchanges.push(StoredExchange {
                    slot,
                    seq,
                    turns,
                    raw_turns,
                });
            }
        }
        history.exchanges.sort_by_key(|e| e.seq);
        history
    }

    /// How many exchanges were stored: the newest sequence number.
    pub(super) fn seq(&self) -> u64 {
        self.exchanges.iter().map(|e| e.seq).max().unwrap_or(0)
    }

    /// The live turns, oldest first (the first layout's before the exchanges), bounded by
    /// `policy`.
    pub(super) fn turns(&self, policy: &HistoryPolicy, now: i64) -> Vec<Turn> {
        let stored: Vec<Turn> = self
            .legacy
            .iter()
            .flat_map(LegacyItem::turns)
            .chain(
                self.exchanges
                    .iter()
                    .flat_map(|exchange| exchange.turns.iter().cloned()),
            )
            .collect();
        policy.retain(stored, Vec::new(), now)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::codec::encode_turns;
    use super::*;
    use crate::conversation::Role;
    use crate::dynamodb_expression::number;

    fn key() -> ConversationKey {
        ConversationKey::new("P", "U")
    }

    fn exchange(slot: usize, seq: i64, texts: &[&str]) -> Item {
        let turns: Vec<Turn> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Turn::new(Role::User, *t, seq * 10 + i as i64))
            .collect();
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(slot_key(&key(), slot))),
            ("n".to_owned(), number(seq)),
            ("turns".to_owned(), encode_turns(&turns)),
        ])
    }

    #[test]
    fn exchanges_are_read_in_sequence_order_whatever_their_slot() {
        let items = vec![
            exchange(1, 4, &["d"]),
            exchange(2, 2, &["b"]),
            exchange(0, 3, &["c"]),
            HashMap::from([("pk".to_owned(), AttributeValue::S("h#elsewhere#0".into()))]),
        ];
        let history = History::from_items(&key(), 3, items);
        assert_eq!(history.seq(), 4);
        let policy = HistoryPolicy::new(20, 1);
        let texts: Vec<String> = history
            .turns(&policy, 45)
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(texts, ["b", "c", "d"]);
        assert_eq!(slot_of(4, 3), 1);
        assert_eq!(slot_of(3, 0), 0, "no slots is one slot");
        assert_eq!(History::default().seq(), 0);
    }
}
