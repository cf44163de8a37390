//! How turns, pending answers and claims are written as DynamoDB attribute values, and read
//! back leniently: a value that cannot be read is skipped or ignored, never a panic.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::Item;
use crate::conversation::{PendingAnswer, Role, ToolRounds, Turn, Undelivered};
use crate::dynamodb_expression::number;

/// A claim's state attribute: an invocation is processing the message.
pub(super) const PROCESSING: &str = "p";
/// A claim's state attribute: the message was answered (or needs no answer).
pub(super) const DONE: &str = "d";
/// A claim's state attribute: the claim was given back, and can be taken at once.
pub(super) const RELEASED: &str = "r";

/// The attribute of a claim item that holds the [`PendingAnswer`].
pub(super) const PENDING_ATTRIBUTE: &str = "pending_answer";

/// The attribute of a claim item that holds the burst's [`ToolRounds`].
pub(super) const TOOL_ROUNDS_ATTRIBUTE: &str = "tool_rounds";

/// Reads a stored number that should be a whole number.
pub(super) fn parse_number(value: &AttributeValue) -> Option<i64> {
    let text = value.as_n().ok()?;
    text.parse::<i64>().ok().or_else(|| {
        let float = text.parse::<f64>().ok()?;
        // Whole numbers within i64's range only; `as` would saturate silently.
        (float.is_finite() && float.fract() == 0.0 && float.abs() < 9.0e18).then_some(float as i64)
    })
}

pub(super) fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().cloned().map(AttributeValue::S).collect())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A turn as a map `{r, t, at}`, with `ids` (the messages it went out as) and `u` (undelivered,
/// `{c: error code}`) when it has them.
pub(super) fn encode_turn(turn: &Turn) -> AttributeValue {
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

pub(super) fn encode_turns(turns: &[Turn]) -> AttributeValue {
    AttributeValue::L(turns.iter().map(encode_turn).collect())
}

/// Reads one stored turn, or says what is wrong with it (never quoting its text).
pub(super) fn decode_turn(value: &AttributeValue) -> Result<Turn, &'static str> {
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
pub(super) fn decode_turns(value: Option<&AttributeValue>) -> Vec<Turn> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Ok(list) = value.as_l() else {
        tracing::warn!("stored turns are not a list; they are ignored");
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

pub(super) fn encode_pending(pending: &PendingAnswer) -> AttributeValue {
    let sent = i64::try_from(pending.parts_sent).unwrap_or(i64::MAX);
    AttributeValue::M(HashMap::from([
        ("ids".to_owned(), string_list(&pending.message_ids)),
        ("replies".to_owned(), string_list(&pending.replies)),
        ("sent".to_owned(), number(sent)),
    ]))
}

/// Reads a stored pending answer; one that cannot be read is ignored (the LLM is asked again).
pub(super) fn decode_pending(value: Option<&AttributeValue>) -> Option<PendingAnswer> {
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

/// Tool rounds as a map `{ids, rounds}`, the rounds as one JSON text (calls, arguments and
/// results keep their exact shape, whatever a tool answered). `None` when they cannot be
/// written as JSON (they always can: they were read from JSON).
pub(super) fn encode_tool_rounds(rounds: &ToolRounds) -> Option<AttributeValue> {
    let json = serde_json::to_string(&rounds.rounds).ok()?;
    Some(AttributeValue::M(HashMap::from([
        ("ids".to_owned(), string_list(&rounds.message_ids)),
        ("rounds".to_owned(), AttributeValue::S(json)),
    ])))
}

/// Reads stored tool rounds; rounds that cannot be read are ignored (the model is asked
/// afresh, and a side-effecting call repeated carries the same `Idempotency-Key`).
pub(super) fn decode_tool_rounds(value: Option<&AttributeValue>) -> Option<ToolRounds> {
    let map = value?.as_m().ok()?;
    let message_ids = map
        .get("ids")?
        .as_l()
        .ok()?
        .iter()
        .map(|v| v.as_s().ok().cloned())
        .collect::<Option<Vec<String>>>()?;
    let rounds = serde_json::from_str(map.get("rounds")?.as_s().ok()?).ok()?;
    Some(ToolRounds {
        message_ids,
        rounds,
    })
}

/// What a message id's claim says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClaimState {
    /// No claim, or one given back: the message can be claimed.
    Free,
    /// An invocation holds it until `lease_until` (when readable), with `token`.
    Processing {
        /// When the lease lapses.
        lease_until: Option<i64>,
        /// The holder's token.
        token: Option<String>,
    },
    /// The message was answered.
    Done,
    /// The claim cannot be read: counted as done, so that a message is never answered twice.
    Unreadable,
}

/// Reads the state of a claim from its attributes: a claim item's own, or a marker map of the
/// first layout (the same `s`, `k`, `u` fields).
pub(super) fn claim_state(attributes: Option<&Item>) -> ClaimState {
    let Some(attributes) = attributes else {
        return ClaimState::Free;
    };
    let text = |key: &str| attributes.get(key).and_then(|v| v.as_s().ok()).cloned();
    match text("s").as_deref() {
        None if !attributes.contains_key("s") => ClaimState::Free,
        Some(RELEASED) => ClaimState::Free,
        Some(PROCESSING) => ClaimState::Processing {
            lease_until: attributes.get("u").and_then(parse_number),
            token: text("k"),
        },
        Some(DONE) => ClaimState::Done,
        _ => ClaimState::Unreadable,
    }
}

/// Where a claim leaves a message for the invocation holding `token` at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// The invocation can take (or already holds) it.
    Claimable,
    /// Another invocation holds it under a live lease.
    HeldElsewhere,
    /// It was answered (or its claim cannot be read).
    Done,
}

impl ClaimState {
    /// Judges the claim exactly as the claiming write's condition does.
    pub(super) fn standing(&self, token: &str, now: i64) -> Standing {
        match self {
            Self::Free => Standing::Claimable,
            Self::Processing {
                lease_until,
                token: holder,
            } => {
                let ours = holder.as_deref() == Some(token);
                match lease_until {
                    _ if ours => Standing::Claimable,
                    Some(until) if *until < now => Standing::Claimable,
                    Some(_) => Standing::HeldElsewhere,
                    None => {
                        tracing::warn!("a message's claim has no lease; treating it as answered");
                        Standing::Done
                    }
                }
            }
            Self::Done => Standing::Done,
            Self::Unreadable => {
                tracing::warn!("a message's claim cannot be read; treating it as answered");
                Standing::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn s(value: &str) -> AttributeValue {
        AttributeValue::S(value.into())
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
        assert_eq!(list[0].as_m().unwrap().get("r"), Some(&s("user")));
        assert_eq!(list[0].as_m().unwrap().get("at"), Some(&number(NOW)));
        assert_eq!(decode_turns(Some(&encoded)), turns);
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
            good,
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
    }

    #[test]
    fn tool_rounds_round_trip_and_garbled_ones_are_ignored() {
        let rounds = ToolRounds {
            message_ids: vec!["wamid.1".into(), "wamid.2".into()],
            rounds: vec![crate::llm::ToolRound {
                text: Some("Let me check.".into()),
                calls: vec![crate::llm::ToolCall {
                    id: "call_1".into(),
                    name: "order_status".into(),
                    arguments: serde_json::json!({"order_id": "A-17"}),
                    signature: Some("sig".into()),
                }],
                results: vec![crate::llm::ToolResult {
                    call_id: "call_1".into(),
                    name: "order_status".into(),
                    content: r#"{"status":"shipped"}"#.into(),
                    is_error: false,
                }],
            }],
        };
        let encoded = encode_tool_rounds(&rounds).unwrap();
        assert_eq!(decode_tool_rounds(Some(&encoded)), Some(rounds));
        assert_eq!(decode_tool_rounds(Some(&s("garbled"))), None);
        let bad_json = AttributeValue::M(HashMap::from([
            ("ids".to_owned(), string_list(&["wamid.1".to_owned()])),
            ("rounds".to_owned(), s("[{\"calls\": 3}]")),
        ]));
        assert_eq!(decode_tool_rounds(Some(&bad_json)), None);
        assert_eq!(decode_tool_rounds(None), None);
    }

    #[test]
    fn a_pending_answer_round_trips_and_a_garbled_one_is_ignored() {
        let pending = PendingAnswer {
            message_ids: vec!["wamid.a".into()],
            replies: vec!["Hello".into(), "More".into()],
            parts_sent: 1,
        };
        assert_eq!(
            decode_pending(Some(&encode_pending(&pending))),
            Some(pending)
        );
        assert_eq!(decode_pending(Some(&s("garbled"))), None);
        let negative = AttributeValue::M(HashMap::from([
            ("ids".to_owned(), string_list(&[])),
            ("replies".to_owned(), string_list(&[])),
            ("sent".to_owned(), number(-1)),
        ]));
        assert_eq!(decode_pending(Some(&negative)), None);
    }

    fn claim(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn claims_are_judged_as_the_condition_judges_them() {
        let held = claim(&[("s", s("p")), ("k", s("other")), ("u", number(NOW + 10))]);
        let lapsed = claim(&[("s", s("p")), ("k", s("other")), ("u", number(NOW - 1))]);
        let ours = claim(&[("s", s("p")), ("k", s("me")), ("u", number(NOW + 10))]);
        let released = claim(&[("s", s("r")), ("pending_answer", s("x"))]);
        let done = claim(&[("s", s("d")), ("k", s("other"))]);
        let no_lease = claim(&[("s", s("p")), ("k", s("other"))]);
        let garbled = claim(&[("s", number(3))]);
        let key_only = claim(&[("pk", s("id#x"))]);
        let standing = |item: Option<&Item>| claim_state(item).standing("me", NOW);
        assert_eq!(standing(None), Standing::Claimable);
        assert_eq!(standing(Some(&key_only)), Standing::Claimable);
        assert_eq!(standing(Some(&held)), Standing::HeldElsewhere);
        assert_eq!(standing(Some(&lapsed)), Standing::Claimable);
        assert_eq!(standing(Some(&ours)), Standing::Claimable);
        assert_eq!(standing(Some(&released)), Standing::Claimable);
        assert_eq!(standing(Some(&done)), Standing::Done);
        assert_eq!(standing(Some(&no_lease)), Standing::Done);
        assert_eq!(standing(Some(&garbled)), Standing::Done);
    }
}
