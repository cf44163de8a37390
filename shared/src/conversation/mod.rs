//! A conversation's memory and the exactly-once claim of its messages: the
//! [`ConversationStore`] port, the pure rules that bound what is kept, and the DynamoDB adapter.
//!
//! Each message id has a claim of its own, and a conversation's history is kept apart from the
//! claims, one exchange (a user's turn and the answer) per write. Claiming a burst of message ids
//! and reading the history happen together (one round trip of parallel calls); storing the new
//! exchange and marking the ids done is a second. So an answered burst costs two round trips and
//! writes that do not grow with the conversation's past, and a message id that was claimed or
//! answered is never answered again (until its claim lease expires, for a claim whose invocation
//! crashed).

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::inbound::ConversationKey;
use crate::llm::ToolRound;

pub mod dynamodb;

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The WhatsApp user.
    User,
    /// The assistant (the LLM's answer, as sent).
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// When, in seconds since the Unix epoch.
    pub at: i64,
    /// For an assistant turn, Meta's ids (`wamid…`) of the WhatsApp messages it went out as, so
    /// that a late `failed` status can be traced back to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_as: Vec<String>,
    /// Set when Meta reported, after accepting the send, that the reply never reached the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undelivered: Option<Undelivered>,
}

impl Turn {
    /// A turn that `role` said at `at`, with no delivery record.
    pub fn new(role: Role, text: impl Into<String>, at: i64) -> Self {
        Self {
            role,
            text: text.into(),
            at,
            sent_as: Vec::new(),
            undelivered: None,
        }
    }
}

/// Why a reply that Meta accepted did not reach the user, from its late `failed` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undelivered {
    /// Meta's error code (131047: outside the 24-hour window; 131026: undeliverable), when
    /// Meta gave one.
    pub error_code: Option<i64>,
}

/// What marking a reply undelivered found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOutcome {
    /// The turn is now marked; `in_a_row` assistant turns, counted back from the newest, are
    /// marked undelivered (this one included).
    Marked {
        /// Consecutive undelivered replies at the end of the conversation.
        in_a_row: usize,
    },
    /// The turn was already marked (Meta reported more than one failure, or redelivered one).
    AlreadyMarked,
    /// No remembered turn went out as that message: it expired, or it was not the bot's reply.
    NotFound,
}

/// Marks the assistant turn that went out as `reply_id` undelivered, in `turns`.
pub fn mark_undelivered(
    turns: &mut [Turn],
    reply_id: &str,
    error_code: Option<i64>,
) -> MarkOutcome {
    let Some(turn) = turns
        .iter_mut()
        .find(|t| t.role == Role::Assistant && t.sent_as.iter().any(|id| id == reply_id))
    else {
        return MarkOutcome::NotFound;
    };
    if turn.undelivered.is_some() {
        return MarkOutcome::AlreadyMarked;
    }
    turn.undelivered = Some(Undelivered { error_code });
    MarkOutcome::Marked {
        in_a_row: undelivered_in_a_row(turns),
    }
}

/// How many of the newest assistant turns, counted back until one that was delivered, are
/// marked undelivered.
pub fn undelivered_in_a_row(turns: &[Turn]) -> usize {
    turns
        .iter()
        .rev()
        .filter(|t| t.role == Role::Assistant)
        .take_while(|t| t.undelivered.is_some())
        .count()
}

/// Meta redelivers a webhook for up to 7 days: message ids are remembered at least that long.
pub const MIN_ID_MEMORY_SECONDS: i64 = 7 * 86_400;

/// How long a message id's claim is kept: Meta's 7 days of redelivery and a day of margin,
/// whatever the conversation's TTL.
pub const CLAIM_MEMORY_SECONDS: i64 = MIN_ID_MEMORY_SECONDS + 86_400;

/// What is kept of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// At most this many turns are kept (`HISTORY_MAX_MESSAGES`).
    pub max_turns: usize,
    /// Turns older than this many seconds are ignored and dropped (`CONTEXT_TTL_DAYS`).
    pub ttl_seconds: i64,
    /// A turn's text is cut to this many bytes before it is stored.
    pub max_turn_bytes: usize,
    /// The kept turns' texts add up to at most this many bytes, so that an item stays well under
    /// DynamoDB's 400 KB.
    pub max_total_bytes: usize,
}

impl HistoryPolicy {
    /// The policy for `max_turns` turns kept `ttl_days` days, with the default size bounds
    /// (16 KiB per turn, 192 KiB in all).
    pub fn new(max_turns: usize, ttl_days: u32) -> Self {
        Self {
            max_turns,
            ttl_seconds: i64::from(ttl_days) * 86_400,
            max_turn_bytes: 16 * 1024,
            max_total_bytes: 192 * 1024,
        }
    }

    /// The turns still alive at `now`: DynamoDB deletes expired items up to days late, so expiry
    /// is checked on every read.
    pub fn live(&self, turns: Vec<Turn>, now: i64) -> Vec<Turn> {
        turns
            .into_iter()
            .filter(|t| t.at + self.ttl_seconds > now)
            .collect()
    }

    /// The turns to store: the live `history` followed by `new_turns` (each cut to
    /// `max_turn_bytes`), keeping the newest within `max_turns` and `max_total_bytes`.
    pub fn retain(&self, history: Vec<Turn>, new_turns: Vec<Turn>, now: i64) -> Vec<Turn> {
        let mut turns: Vec<Turn> = self
            .live(history, now)
            .into_iter()
            .chain(new_turns.into_iter().map(|t| Turn {
                text: truncate_bytes(&t.text, self.max_turn_bytes),
                ..t
            }))
            .collect();
        let excess = turns.len().saturating_sub(self.max_turns);
        turns.drain(..excess);
        let mut total: usize = turns.iter().map(|t| t.text.len()).sum();
        let mut drop = 0;
        while total > self.max_total_bytes && drop < turns.len() {
            total -= turns[drop].text.len();
            drop += 1;
        }
        turns.drain(..drop);
        turns
    }

    /// The turns of two conversations as one: the live turns of both in time order, a turn
    /// found in both kept once, bounded as [`HistoryPolicy::retain`] bounds them. Merging the
    /// same turns again gives the same turns.
    pub fn merge(&self, first: Vec<Turn>, second: Vec<Turn>, now: i64) -> Vec<Turn> {
        let mut turns = self.live(first, now);
        for turn in self.live(second, now) {
            if !turns.contains(&turn) {
                turns.push(turn);
            }
        }
        turns.sort_by_key(|t| t.at);
        self.retain(turns, Vec::new(), now)
    }

    /// When turns written at `now` expire (the DynamoDB TTL attribute of history items).
    pub fn turns_expire_at(&self, now: i64) -> i64 {
        now.saturating_add(self.ttl_seconds)
    }

    /// How many exchanges (a user's turn and the answer to it) the history keeps, each stored
    /// on its own: enough for `max_turns` turns.
    pub fn max_exchanges(&self) -> usize {
        self.max_turns.div_ceil(2).max(1)
    }
}

/// `turns`, in order, cut into exchanges: each starts at a user's turn that follows an answer
/// (or at the first turn), so that an exchange is the user's turns and the answers to them.
pub fn exchanges(turns: Vec<Turn>) -> Vec<Vec<Turn>> {
    let mut exchanges: Vec<Vec<Turn>> = Vec::new();
    for turn in turns {
        let starts = match exchanges.last().and_then(|e| e.last()) {
            None => true,
            Some(previous) => turn.role == Role::User && previous.role == Role::Assistant,
        };
        if starts {
            exchanges.push(vec![turn]);
        } else if let Some(current) = exchanges.last_mut() {
            current.push(turn);
        }
    }
    exchanges
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut with `…`.
pub fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let cut = (0..=budget)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", text[..cut].trim_end())
}

/// A request to claim message ids of one conversation for one invocation.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The conversation.
    pub conversation: &'a ConversationKey,
    /// The ids to claim, in order.
    pub message_ids: &'a [String],
    /// Identifies this invocation's claim (the Lambda request id and a random part).
    pub token: &'a str,
    /// The claim lapses at this time (seconds since the epoch), so that a crashed invocation's
    /// claim can be taken over: the invocation's deadline plus a margin.
    pub lease_until: i64,
    /// The current time, in seconds since the epoch.
    pub now: i64,
    /// The rate window's length in seconds in which the burst's messages are counted (60 for a
    /// per-minute limit); 0 counts nothing.
    pub rate_window_seconds: i64,
    /// The day (days since the epoch) whose token count is read with the claim, when a daily
    /// token budget is on.
    pub budget_day: Option<i64>,
}

/// The outcome of a claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Ids this invocation now holds, in request order.
    pub claimed: Vec<String>,
    /// Ids already answered: skip them.
    pub done: Vec<String>,
    /// Ids another invocation holds under a live lease: retry them later.
    pub held_elsewhere: Vec<String>,
    /// The conversation's live turns (expired ones already left out).
    pub history: Vec<Turn>,
    /// How many exchanges the conversation has stored so far, as read with the history: pass it
    /// on to [`CompleteRequest::history_seq`], so that the new exchange is stored after them.
    pub history_seq: u64,
    /// The answer an earlier invocation got for some of the claimed messages and released
    /// undelivered, when every message it answers is among [`Claim::claimed`]: send it instead
    /// of asking the LLM again.
    pub pending: Option<PendingAnswer>,
    /// The tool rounds an earlier invocation made for some of the claimed messages before it
    /// gave them up, when every message they answer is among [`Claim::claimed`]: carried on
    /// instead of calling the tools again.
    pub tool_rounds: Option<ToolRounds>,
    /// The user's standing, read in the same round trip: opted out or not, and how many messages
    /// they sent in the current rate window (this burst's counted).
    pub standing: UserStanding,
    /// The conversation's handoff to a person, read with the history: open, or ended with the
    /// agent's words not yet in the history.
    pub handoff: Option<crate::handoff::Handoff>,
}

/// The rounds of tool use made for a burst (its calls and their results), kept with the claim
/// of its first message from the moment a side-effecting tool was called, so that a retry of
/// the burst goes on from them instead of calling the tools again. The completing write clears
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolRounds {
    /// The message ids they were made for, in queue order.
    pub message_ids: Vec<String>,
    /// The rounds, in order.
    pub rounds: Vec<ToolRound>,
}

/// An answer the LLM gave that was not (wholly) delivered, kept with the released claims of
/// the messages it answers, so that the retry sends the same answer (never a second, different
/// one) and does not pay for the LLM twice. The completing write clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingAnswer {
    /// The message ids it answers, in queue order.
    pub message_ids: Vec<String>,
    /// The replies to send, in order, each before it is split into WhatsApp messages.
    pub replies: Vec<String>,
    /// How many of the split parts (counted across the replies, in order) were already sent.
    pub parts_sent: usize,
}

/// A request to store new turns and mark claimed ids done, in one write.
#[derive(Debug, Clone)]
pub struct CompleteRequest<'a> {
    /// The conversation.
    pub conversation: &'a ConversationKey,
    /// The token the ids were claimed with; the write fails if the claim was lost.
    pub token: &'a str,
    /// The ids to mark done.
    pub message_ids: &'a [String],
    /// The history returned by the claim.
    pub history: Vec<Turn>,
    /// [`Claim::history_seq`], as the claim returned it.
    pub history_seq: u64,
    /// The turns to append (none when nothing was answered).
    pub new_turns: Vec<Turn>,
    /// The current time, in seconds since the epoch.
    pub now: i64,
}

/// A request to mark a remembered reply undelivered: Meta reported it `failed` after the send.
#[derive(Debug, Clone, Copy)]
pub struct UndeliveredRequest<'a> {
    /// The conversation the reply went to.
    pub conversation: &'a ConversationKey,
    /// Meta's id of the message that failed.
    pub reply_id: &'a str,
    /// Meta's error code, when it gave one.
    pub error_code: Option<i64>,
}

/// A request to move a conversation's memory to another key: the user's id changed.
#[derive(Debug, Clone, Copy)]
pub struct MoveRequest<'a> {
    /// The conversation under the user's previous id.
    pub from: &'a ConversationKey,
    /// The conversation under the user's new id.
    pub to: &'a ConversationKey,
    /// The current time, in seconds since the epoch.
    pub now: i64,
}

/// What a move carried over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// How many live turns of the previous conversation were moved.
    pub turns: usize,
    /// How many answered message ids were copied that the new conversation did not know.
    pub message_ids: usize,
}

/// What the store knows of a user, read when a burst is claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserStanding {
    /// Whether the user opted out (STOP): nothing is sent to them until they opt in again.
    pub opted_out: bool,
    /// How many messages the user sent in the current window, this burst's included (0 when
    /// nothing is counted).
    pub in_window: u64,
    /// How many of those this claim counted (the burst's messages; 0 when nothing is counted).
    pub counted: u64,
    /// The tokens the user's answers took on [`ClaimRequest::budget_day`] (0 without a budget).
    pub tokens_today: u64,
    /// Whether the user was already told that day's budget is spent.
    pub budget_noticed: bool,
}

/// The capacity a store's calls consumed, as DynamoDB reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConsumedCapacity {
    /// Read units.
    pub read_units: f64,
    /// Write units.
    pub write_units: f64,
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB could not be reached, throttled, or refused the call.
    #[error("the conversation store is unavailable: {0}")]
    Unavailable(String),
    /// This invocation's claim was taken over (its lease lapsed): the write was not made.
    #[error("the claim on these messages was lost to another invocation")]
    ClaimLost,
    /// The stored item does not have the expected shape.
    #[error("the stored conversation is malformed: {0}")]
    Corrupt(String),
}

/// Where conversations and message claims are kept.
pub trait ConversationStore: Send + Sync {
    /// Claims the ids that are neither done nor held under a live lease, and returns the
    /// conversation's live history and the remembered ids that can be forgotten. One round trip
    /// when no id was seen before, or when none can be claimed.
    fn claim(
        &self,
        request: ClaimRequest<'_>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Appends `new_turns` to the history (bounded by the store's [`HistoryPolicy`]) and marks
    /// the ids done, on condition that this invocation still holds them; marking them done also
    /// clears the [`PendingAnswer`].
    fn complete(
        &self,
        request: CompleteRequest<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the memory of `request.from` to `request.to` (the user changed their id): the
    /// live turns are merged into the new conversation's, the answered message ids copied to
    /// it, and the turns removed from the previous one. The previous conversation keeps its
    /// message ids until it expires, so that a redelivery under the previous id is not answered
    /// twice either. Moving again, or from a conversation that does not exist, changes nothing.
    fn move_conversation(
        &self,
        request: MoveRequest<'_>,
    ) -> impl Future<Output = Result<Moved, StoreError>> + Send;

    /// Marks the assistant turn that went out as `request.reply_id` undelivered, so that the
    /// model is not told the user read it. Marking twice changes nothing.
    fn mark_undelivered(
        &self,
        request: UndeliveredRequest<'_>,
    ) -> impl Future<Output = Result<MarkOutcome, StoreError>> + Send;

    /// Gives back claims on `message_ids` held with `token` that will not be completed (the LLM
    /// or Meta failed), so that a retry can take them at once instead of waiting for the lease.
    /// `pending`, the answer that could not be delivered, is kept in the same write, for the
    /// claim that takes its messages again (see [`Claim::pending`]).
    fn release(
        &self,
        conversation: &ConversationKey,
        token: &str,
        message_ids: &[String],
        pending: Option<&PendingAnswer>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps `rounds` with the claim of their first message, on condition that `token` still
    /// holds it (else [`StoreError::ClaimLost`]), replacing the rounds kept before: what the
    /// next [`Claim::tool_rounds`] of these messages returns until they are done.
    fn keep_tool_rounds(
        &self,
        token: &str,
        rounds: &ToolRounds,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that the user opted out (`true`, STOP) or in again (`false`, START). Setting the
    /// same value again changes nothing.
    fn set_opted_out(
        &self,
        conversation: &ConversationKey,
        opted_out: bool,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds `tokens` to the user's count for `day` (days since the epoch), kept two days.
    fn add_tokens(
        &self,
        conversation: &ConversationKey,
        day: i64,
        tokens: u64,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notes that the user was told `day`'s budget is spent; `true` when this call noted it
    /// first (so that the notice goes out once a day).
    fn note_budget_notice(
        &self,
        conversation: &ConversationKey,
        day: i64,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Forgets the conversation's history (`/reset`); the answered message ids stay known, so
    /// that a redelivery is still not answered again. Forgetting twice changes nothing.
    fn forget_conversation(
        &self,
        conversation: &ConversationKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The capacity consumed since the last call, for metrics; nothing for a store that does not
    /// meter.
    fn take_consumed(&self) -> ConsumedCapacity {
        ConsumedCapacity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, text: &str, at: i64) -> Turn {
        Turn::new(role, text, at)
    }

    fn reply(text: &str, at: i64, ids: &[&str]) -> Turn {
        Turn {
            sent_as: ids.iter().map(|id| (*id).to_owned()).collect(),
            ..Turn::new(Role::Assistant, text, at)
        }
    }

    #[test]
    fn marks_the_reply_that_went_out_as_the_failed_message() {
        let mut turns = vec![
            turn(Role::User, "hi", 1),
            reply("hello", 2, &["wamid.a"]),
            turn(Role::User, "more", 3),
            reply("long answer", 4, &["wamid.b", "wamid.c"]),
        ];
        assert_eq!(
            mark_undelivered(&mut turns, "wamid.c", Some(131_026)),
            MarkOutcome::Marked { in_a_row: 1 }
        );
        assert_eq!(
            turns[3].undelivered,
            Some(Undelivered {
                error_code: Some(131_026)
            })
        );
        assert_eq!(turns[1].undelivered, None);
        assert_eq!(
            mark_undelivered(&mut turns, "wamid.b", Some(131_026)),
            MarkOutcome::AlreadyMarked
        );
        assert_eq!(
            mark_undelivered(&mut turns, "wamid.a", None),
            MarkOutcome::Marked { in_a_row: 2 }
        );
        assert_eq!(
            mark_undelivered(&mut turns, "wamid.unknown", None),
            MarkOutcome::NotFound
        );
    }

    #[test]
    fn counts_undelivered_replies_back_to_the_last_delivered_one() {
        let failed = |text: &str, at| Turn {
            undelivered: Some(Undelivered { error_code: None }),
            ..reply(text, at, &[])
        };
        let turns = vec![
            failed("old failure", 1),
            reply("delivered", 2, &[]),
            failed("a", 3),
            turn(Role::User, "between", 4),
            failed("b", 5),
        ];
        assert_eq!(undelivered_in_a_row(&turns), 2);
        assert_eq!(undelivered_in_a_row(&turns[..2]), 0);
        assert_eq!(undelivered_in_a_row(&[]), 0);
    }

    #[test]
    fn keeps_the_newest_turns_up_to_the_limit() {
        let policy = HistoryPolicy::new(3, 14);
        let history = vec![
            turn(Role::User, "1", 10),
            turn(Role::Assistant, "2", 11),
            turn(Role::User, "3", 12),
        ];
        let kept = policy.retain(history, vec![turn(Role::Assistant, "4", 13)], 13);
        let texts: Vec<_> = kept.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["2", "3", "4"]);
    }

    #[test]
    fn drops_expired_turns_on_read_and_write() {
        let policy = HistoryPolicy::new(20, 1);
        let now = 1_000_000;
        let history = vec![
            turn(Role::User, "old", now - 86_400),
            turn(Role::User, "fresh", now - 86_399),
        ];
        assert_eq!(
            policy.live(history.clone(), now),
            vec![turn(Role::User, "fresh", now - 86_399)]
        );
        assert_eq!(policy.retain(history, vec![], now).len(), 1);
        assert_eq!(policy.turns_expire_at(now), now + 86_400);
        assert_eq!(HistoryPolicy::new(20, 1).max_exchanges(), 10);
        assert_eq!(HistoryPolicy::new(3, 1).max_exchanges(), 2);
    }

    #[test]
    fn bounds_each_turn_and_the_total_size() {
        let policy = HistoryPolicy {
            max_turns: 100,
            ttl_seconds: 1_000,
            max_turn_bytes: 10,
            max_total_bytes: 25,
        };
        let kept = policy.retain(
            vec![
                turn(Role::User, "aaaaaaaaaa", 1),
                turn(Role::Assistant, "bbbbbbbbbb", 2),
            ],
            vec![turn(Role::User, "a very long message indeed", 3)],
            3,
        );
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[1].text, "a very…");
        assert!(kept.iter().map(|t| t.text.len()).sum::<usize>() <= 25);
    }

    #[test]
    fn merging_keeps_time_order_drops_repeats_and_is_bounded() {
        let policy = HistoryPolicy::new(4, 1);
        let now = 1_000_000;
        let old = vec![
            turn(Role::User, "expired", now - 90_000),
            turn(Role::User, "a", now - 30),
            turn(Role::Assistant, "b", now - 20),
        ];
        let new = vec![
            turn(Role::User, "c", now - 25),
            turn(Role::Assistant, "b", now - 20),
            turn(Role::User, "d", now - 10),
            turn(Role::Assistant, "e", now - 5),
        ];
        let merged = policy.merge(new.clone(), old.clone(), now);
        let texts: Vec<&str> = merged.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["c", "b", "d", "e"], "the newest 4, b once");
        assert_eq!(policy.merge(merged.clone(), old, now), merged);
    }

    #[test]
    fn turns_are_cut_into_exchanges_at_each_new_question() {
        let turns = vec![
            turn(Role::Assistant, "a0", 0),
            turn(Role::User, "q1", 1),
            turn(Role::User, "q1b", 2),
            turn(Role::Assistant, "a1", 3),
            turn(Role::User, "q2", 4),
            turn(Role::Assistant, "a2", 5),
            turn(Role::Assistant, "a2b", 6),
        ];
        let cut = exchanges(turns.clone());
        let texts: Vec<Vec<&str>> = cut
            .iter()
            .map(|e| e.iter().map(|t| t.text.as_str()).collect())
            .collect();
        assert_eq!(
            texts,
            [vec!["a0"], vec!["q1", "q1b", "a1"], vec!["q2", "a2", "a2b"]]
        );
        assert_eq!(exchanges(turns).concat().len(), 7);
        assert!(exchanges(Vec::new()).is_empty());
    }

    #[test]
    fn truncates_at_character_boundaries() {
        assert_eq!(truncate_bytes("héllo", 100), "héllo");
        let cut = truncate_bytes("ééééé", 6);
        assert_eq!(cut, "é…");
        assert!(cut.len() <= 6);
    }
}
