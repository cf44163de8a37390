//! The first layout, one item per conversation (`pk = "conv#<conversation key>"`) holding its
//! `turns`, a marker map per message id in an attribute `"c#<message id>"` (`{s, k, u, at}`, as
//! a claim item's fields) and a `pending_answer`. Such items are read, never written again
//! except to forget their turns when a user's id changes: their turns stay part of the history,
//! their answered ids are honoured, and the items expire with their TTL.

use aws_sdk_dynamodb::types::AttributeValue;

use super::Item;
use super::codec::{ClaimState, PENDING_ATTRIBUTE, claim_state, decode_pending, decode_turns};
use crate::conversation::{PendingAnswer, Turn};
use crate::inbound::ConversationKey;

/// The prefix of a first-layout conversation item's partition key.
pub const CONVERSATION_KEY_PREFIX: &str = "conv#";

/// The prefix of the attribute that holds a message id's marker in a first-layout item.
pub const MARKER_PREFIX: &str = "c#";

/// The key of `conversation`'s first-layout item.
pub(super) fn legacy_key(conversation: &ConversationKey) -> AttributeValue {
    AttributeValue::S(format!(
        "{CONVERSATION_KEY_PREFIX}{}",
        conversation.as_str()
    ))
}

/// A first-layout conversation item, as read.
#[derive(Debug, Clone, Default)]
pub(super) struct LegacyItem(pub(super) Item);

impl LegacyItem {
    /// Its turns (unreadable ones skipped).
    pub(super) fn turns(&self) -> Vec<Turn> {
        decode_turns(self.0.get("turns"))
    }

    /// The stored turns as they are, for a write conditional on them.
    pub(super) fn raw_turns(&self) -> Option<&AttributeValue> {
        self.0.get("turns")
    }

    /// What its marker for `message_id` says (free when it has none).
    pub(super) fn marker(&self, message_id: &str) -> ClaimState {
        let marker = self
            .0
            .get(&format!("{MARKER_PREFIX}{message_id}"))
            .map(|value| value.as_m().cloned().unwrap_or_default());
        match marker {
            // A marker that is not a map has no `s`: unreadable, so counted as answered.
            Some(map) if map.is_empty() => ClaimState::Unreadable,
            other => claim_state(other.as_ref()),
        }
    }

    /// The answer it keeps for a retry.
    pub(super) fn pending(&self) -> Option<PendingAnswer> {
        decode_pending(self.0.get(PENDING_ATTRIBUTE))
    }

    /// The message ids it remembers as answered.
    pub(super) fn answered_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .0
            .keys()
            .filter_map(|name| name.strip_prefix(MARKER_PREFIX))
            .filter(|id| self.marker(id) == ClaimState::Done)
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::dynamodb_expression::number;

    fn s(value: &str) -> AttributeValue {
        AttributeValue::S(value.into())
    }

    fn marker(pairs: &[(&str, AttributeValue)]) -> AttributeValue {
        AttributeValue::M(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn reads_markers_as_claims_and_lists_the_answered_ids() {
        let item = LegacyItem(HashMap::from([
            ("pk".to_owned(), s("conv#1:2")),
            ("c#a".to_owned(), marker(&[("s", s("d")), ("k", s("t"))])),
            (
                "c#b".to_owned(),
                marker(&[("s", s("p")), ("k", s("t")), ("u", number(10))]),
            ),
            ("c#c".to_owned(), s("garbled")),
        ]));
        assert_eq!(item.marker("a"), ClaimState::Done);
        assert!(matches!(item.marker("b"), ClaimState::Processing { .. }));
        assert_eq!(item.marker("c"), ClaimState::Unreadable);
        assert_eq!(item.marker("absent"), ClaimState::Free);
        assert_eq!(item.answered_ids(), ["a"]);
    }
}
