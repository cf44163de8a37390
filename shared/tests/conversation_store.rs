//! The DynamoDB conversation store against moto's server (see tests/with-moto.sh): claims of
//! their own per message id, the history in a ring of exchange slots, and the first layout's
//! items still honoured.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::HashMap;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::AttributeValue;
use shared::conversation::dynamodb::history::HISTORY_KEY_PREFIX;
use shared::conversation::dynamodb::{
    CONVERSATION_KEY_PREFIX, DynamoDbConversationStore, claim_key,
};
use shared::conversation::{
    Claim, ClaimRequest, CompleteRequest, ConversationStore, HistoryPolicy, MarkOutcome,
    MoveRequest, Moved, PendingAnswer, Role, StoreError, ToolRounds, Turn, Undelivered,
    UndeliveredRequest, UserStanding,
};
use shared::inbound::ConversationKey;
use testkit::CallCounter;

/// A fixed clock, so that leases and expiry are exact.
const NOW: i64 = 1_800_000_000;
const LEASE: i64 = 60;

struct Fixture {
    store: DynamoDbConversationStore,
    /// Counts the store's requests.
    calls: CallCounter,
    /// An uncounted client, to read and write items behind the store's back.
    raw: aws_sdk_dynamodb::Client,
    table: String,
    conversation: ConversationKey,
}

impl Fixture {
    async fn new(policy: HistoryPolicy) -> Self {
        Self::build(policy, false, testkit::moto_config().await).await
    }

    /// A fixture whose store reaches moto one request at a time (see `testkit::serial_proxy`),
    /// so that a conditional write is atomic, as it is in DynamoDB.
    async fn atomic(policy: HistoryPolicy) -> Self {
        Self::build(
            policy,
            false,
            testkit::serial_proxy::serialized_moto_config().await,
        )
        .await
    }

    /// A fixture whose store never gets the item back with a refused claim.
    async fn without_item_on_refusal(policy: HistoryPolicy) -> Self {
        Self::build(policy, true, testkit::moto_config().await).await
    }

    async fn build(
        policy: HistoryPolicy,
        without_item_on_refusal: bool,
        config: aws_config::SdkConfig,
    ) -> Self {
        let raw = aws_sdk_dynamodb::Client::new(&config);
        let table = testkit::create_table(&raw, "conversations").await;
        let (mut client, calls) = testkit::dynamodb_client_with_counter(&config);
        if without_item_on_refusal {
            client = aws_sdk_dynamodb::Client::from_conf(
                client
                    .config()
                    .to_builder()
                    .interceptor(WithoutItemOnRefusal)
                    .build(),
            );
        }
        Self {
            store: DynamoDbConversationStore::new(client, &table, policy),
            calls,
            raw,
            table,
            conversation: ConversationKey::new("106540352242922", "15551234567"),
        }
    }

    async fn claim(&self, ids: &[String], token: &str, now: i64) -> Result<Claim, StoreError> {
        self.store
            .claim(ClaimRequest {
                conversation: &self.conversation,
                message_ids: ids,
                token,
                lease_until: now + LEASE,
                now,
                rate_window_seconds: 0,
                budget_day: None,
            })
            .await
    }

    async fn complete(
        &self,
        ids: &[String],
        token: &str,
        claim: &Claim,
        new_turns: Vec<Turn>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.store
            .complete(CompleteRequest {
                conversation: &self.conversation,
                token,
                message_ids: ids,
                history: claim.history.clone(),
                history_seq: claim.history_seq,
                new_turns,
                now,
            })
            .await
    }

    /// The first layout's item of the fixture's conversation.
    fn legacy_pk(&self) -> String {
        format!("{CONVERSATION_KEY_PREFIX}{}", self.conversation.as_str())
    }

    /// The history slot `slot` of the fixture's conversation.
    fn slot_pk(&self, slot: usize) -> String {
        format!("{HISTORY_KEY_PREFIX}{}#{slot}", self.conversation.as_str())
    }

    async fn raw(&self, pk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.raw
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("read the item from moto")
            .item
    }

    /// Every item of the table.
    async fn all_items(&self) -> Vec<HashMap<String, AttributeValue>> {
        self.raw
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .expect("scan moto")
            .items
            .unwrap_or_default()
    }

    async fn put_raw(&self, pk: &str, attributes: Vec<(&str, AttributeValue)>) {
        self.raw
            .put_item()
            .table_name(&self.table)
            .set_item(Some(
                attributes
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .chain([("pk".to_owned(), AttributeValue::S(pk.to_owned()))])
                    .collect(),
            ))
            .send()
            .await
            .expect("write the item to moto");
    }
}

/// Drops `ReturnValuesOnConditionCheckFailure` from the store's requests, as if DynamoDB
/// returned no item with a refused write, so that the store's fallback read is exercised.
#[derive(Debug)]
struct WithoutItemOnRefusal;

impl Intercept for WithoutItemOnRefusal {
    fn name(&self) -> &'static str {
        "WithoutItemOnRefusal"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let Some(bytes) = request.body().bytes() else {
            return Ok(());
        };
        let mut body: serde_json::Value = serde_json::from_slice(bytes)?;
        let removed = body
            .as_object_mut()
            .and_then(|fields| fields.remove("ReturnValuesOnConditionCheckFailure"));
        if removed.is_some() {
            let bytes = serde_json::to_vec(&body)?;
            request
                .headers_mut()
                .insert("content-length", bytes.len().to_string());
            *request.body_mut() = bytes.into();
        }
        Ok(())
    }
}

fn ids(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn turn(role: Role, text: &str, at: i64) -> Turn {
    Turn::new(role, text, at)
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn map(pairs: &[(&str, AttributeValue)]) -> AttributeValue {
    AttributeValue::M(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn stored_turn(role: &str, text: &str, at: i64) -> AttributeValue {
    map(&[("r", s(role)), ("t", s(text)), ("at", n(at))])
}

fn marker(state: &str, token: &str, lease: Option<i64>) -> AttributeValue {
    let mut pairs = vec![("s", s(state)), ("k", s(token)), ("at", n(NOW - 100))];
    if let Some(lease) = lease {
        pairs.push(("u", n(lease)));
    }
    map(&pairs)
}

/// A claim item's state and token.
fn state(item: &HashMap<String, AttributeValue>) -> (String, String) {
    let text = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    (text("s"), text("k"))
}

/// DynamoDB's size of an item, as its billing counts it (names and values in bytes, numbers
/// and containers approximated from above).
fn item_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    fn value_bytes(value: &AttributeValue) -> usize {
        match value {
            AttributeValue::S(text) => text.len(),
            AttributeValue::N(number) => number.len().div_ceil(2) + 1,
            AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
            AttributeValue::M(map) => {
                3 + map
                    .iter()
                    .map(|(k, v)| 1 + k.len() + value_bytes(v))
                    .sum::<usize>()
            }
            _ => 8,
        }
    }
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn texts(turns: &[Turn]) -> Vec<&str> {
    turns.iter().map(|t| t.text.as_str()).collect()
}

#[tokio::test]
async fn a_new_burst_is_claimed_in_one_round_trip_and_completed_in_one_more() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let burst = ids(&["wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZB=", "wamid.second=="]);

    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    assert_eq!(claim.claimed, burst);
    assert!(claim.done.is_empty() && claim.held_elsewhere.is_empty());
    assert!(claim.history.is_empty());
    assert_eq!(claim.history_seq, 0);
    assert_eq!(
        fx.calls.count(),
        3,
        "one claiming write per id and one history read"
    );
    assert_eq!(fx.calls.round_trips(), 1, "made in parallel");

    let new_turns = vec![
        turn(Role::User, "Olá! 👋", NOW - 5),
        turn(Role::User, "Are you there?", NOW - 1),
        turn(Role::Assistant, "Yes, how can I help?", NOW),
    ];
    fx.complete(&burst, "inv-1", &claim, new_turns.clone(), NOW)
        .await
        .unwrap();
    assert_eq!(fx.calls.count(), 6, "the exchange and a done mark per id");
    assert_eq!(fx.calls.round_trips(), 2, "made in parallel");

    let slot = fx.raw(&fx.slot_pk(1)).await.expect("exchange 1 in slot 1");
    assert_eq!(slot["n"], n(1));
    assert_eq!(
        slot["turns"],
        AttributeValue::L(vec![
            stored_turn("user", "Olá! 👋", NOW - 5),
            stored_turn("user", "Are you there?", NOW - 1),
            stored_turn("assistant", "Yes, how can I help?", NOW),
        ])
    );
    assert_eq!(slot["expires_at"], n(NOW + 14 * 86_400));
    for id in &burst {
        let claim_item = fx.raw(&claim_key(id)).await.unwrap();
        assert_eq!(state(&claim_item), ("d".into(), "inv-1".into()));
        assert_eq!(claim_item["expires_at"], n(NOW + 8 * 86_400));
        assert!(!claim_item.contains_key("u"), "no lease once done");
    }

    // A redelivery of the same burst is recognised as answered, and the history is there.
    let again = fx.claim(&burst, "inv-2", NOW + 30).await.unwrap();
    assert_eq!(again.done, burst);
    assert!(again.claimed.is_empty() && again.held_elsewhere.is_empty());
    assert_eq!(again.history, new_turns);
    assert_eq!(again.history_seq, 1);
    assert_eq!(
        fx.calls.count(),
        9,
        "a refused claim returns the claim: one call per id, and the read"
    );
}

#[tokio::test]
async fn a_burst_mixing_answered_and_new_ids_claims_only_the_new_ones() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let old = ids(&["wamid.old"]);
    let claim = fx.claim(&old, "inv-1", NOW).await.unwrap();
    fx.complete(
        &old,
        "inv-1",
        &claim,
        vec![turn(Role::User, "first", NOW)],
        NOW,
    )
    .await
    .unwrap();

    let burst = ids(&["wamid.old", "wamid.new"]);
    let claim = fx.claim(&burst, "inv-2", NOW + 10).await.unwrap();
    assert_eq!(claim.claimed, ids(&["wamid.new"]));
    assert_eq!(claim.done, ids(&["wamid.old"]));
    assert!(claim.held_elsewhere.is_empty());
    assert_eq!(texts(&claim.history), ["first"]);
    let old_claim = fx.raw(&claim_key("wamid.old")).await.unwrap();
    assert_eq!(
        state(&old_claim),
        ("d".into(), "inv-1".into()),
        "left as answered"
    );
    let new_claim = fx.raw(&claim_key("wamid.new")).await.unwrap();
    assert_eq!(state(&new_claim), ("p".into(), "inv-2".into()));
    assert_eq!(new_claim["u"], n(NOW + 10 + LEASE));
}

#[tokio::test]
async fn without_the_claim_on_refusal_the_store_reads_it_consistently() {
    let fx = Fixture::without_item_on_refusal(HistoryPolicy::new(20, 14)).await;
    let old = ids(&["wamid.old"]);
    let claim = fx.claim(&old, "inv-1", NOW).await.unwrap();
    fx.complete(
        &old,
        "inv-1",
        &claim,
        vec![turn(Role::User, "first", NOW)],
        NOW,
    )
    .await
    .unwrap();
    let before = fx.calls.count();
    let redelivery = fx.claim(&old, "inv-2", NOW + 1).await.unwrap();
    assert_eq!(redelivery.done, old);
    assert_eq!(texts(&redelivery.history), ["first"]);
    assert_eq!(
        fx.calls.count() - before,
        3,
        "refused write, a read of the claim, the history"
    );
}

#[tokio::test]
async fn of_two_racing_claims_exactly_one_wins() {
    let fx = Fixture::atomic(HistoryPolicy::new(20, 14)).await;
    for round in 0..10 {
        let burst = vec![format!("wamid.race{round}")];
        let (a, b) = tokio::join!(
            fx.claim(&burst, "inv-a", NOW),
            fx.claim(&burst, "inv-b", NOW)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let (winner, loser) = if a.claimed.is_empty() { (b, a) } else { (a, b) };
        assert_eq!(winner.claimed, burst, "round {round}");
        assert!(winner.held_elsewhere.is_empty() && winner.done.is_empty());
        assert!(loser.claimed.is_empty(), "round {round}: both won");
        assert_eq!(loser.held_elsewhere, burst, "round {round}");
    }
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_and_the_first_claimant_loses_its_write() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let burst = ids(&["wamid.slow"]);
    let first = fx.claim(&burst, "inv-slow", NOW).await.unwrap();
    assert_eq!(first.claimed, burst);

    // Up to and including the lease's last second, the claim is held.
    let early = fx.claim(&burst, "inv-next", NOW + LEASE).await.unwrap();
    assert_eq!(early.held_elsewhere, burst);
    assert!(early.claimed.is_empty());

    // Claiming again with the holder's own token keeps the claim (a retried call).
    let retried = fx.claim(&burst, "inv-slow", NOW + 1).await.unwrap();
    assert_eq!(retried.claimed, burst);

    // The retried claim renewed the lease to NOW + 1 + LEASE; after it, the claim is free.
    let takeover = fx.claim(&burst, "inv-next", NOW + LEASE + 2).await.unwrap();
    assert_eq!(takeover.claimed, burst);

    let lost = fx
        .complete(&burst, "inv-slow", &first, Vec::new(), NOW + LEASE + 3)
        .await;
    assert_eq!(lost, Err(StoreError::ClaimLost));

    fx.complete(
        &burst,
        "inv-next",
        &takeover,
        vec![turn(Role::Assistant, "answer", NOW + LEASE + 4)],
        NOW + LEASE + 4,
    )
    .await
    .unwrap();
    let claim_item = fx.raw(&claim_key("wamid.slow")).await.unwrap();
    assert_eq!(state(&claim_item), ("d".into(), "inv-next".into()));

    // An answered id stays answered, even for the token that answered it.
    let replay = fx.claim(&burst, "inv-next", NOW + LEASE + 5).await.unwrap();
    assert_eq!(replay.done, burst);
    assert!(replay.claimed.is_empty());
    assert_eq!(texts(&replay.history), ["answer"]);
}

#[tokio::test]
async fn the_history_wraps_around_its_slots_and_expired_turns_are_left_out() {
    let policy = HistoryPolicy::new(4, 1);
    let fx = Fixture::new(policy).await;
    for i in 0..5 {
        let burst = vec![format!("wamid.m{i}")];
        let now = NOW + i * 100;
        let claim = fx.claim(&burst, &format!("inv-{i}"), now).await.unwrap();
        assert_eq!(claim.claimed, burst);
        assert_eq!(claim.history_seq, i as u64);
        assert!(claim.history.len() <= 4);
        let new_turns = vec![
            turn(Role::User, &format!("q{i}"), now),
            turn(Role::Assistant, &format!("a{i}"), now),
        ];
        fx.complete(&burst, &format!("inv-{i}"), &claim, new_turns, now)
            .await
            .unwrap();
    }
    let claim = fx
        .claim(&ids(&["wamid.m5"]), "inv-5", NOW + 500)
        .await
        .unwrap();
    assert_eq!(texts(&claim.history), ["q3", "a3", "q4", "a4"]);
    let history_items = fx
        .all_items()
        .await
        .into_iter()
        .filter(|item| item["pk"].as_s().unwrap().starts_with(HISTORY_KEY_PREFIX))
        .count();
    assert_eq!(history_items, 2, "4 turns: two exchange slots, reused");

    // Turns older than the TTL are ignored when read, even though their item is still there.
    let later = fx
        .claim(&ids(&["wamid.m6"]), "inv-6", NOW + 350 + 86_400)
        .await
        .unwrap();
    assert_eq!(texts(&later.history), ["q4", "a4"]);
}

#[tokio::test]
async fn stored_turns_that_expired_or_cannot_be_read_are_skipped() {
    let fx = Fixture::new(HistoryPolicy::new(20, 1)).await;
    let slot = fx.slot_pk(1);
    fx.put_raw(
        &slot,
        vec![
            ("n", n(1)),
            (
                "turns",
                AttributeValue::L(vec![
                    stored_turn("user", "expired", NOW - 86_400),
                    s("garbled"),
                    map(&[("r", s("robot")), ("t", s("who?")), ("at", n(NOW - 9))]),
                    stored_turn("user", "fresh", NOW - 10),
                ]),
            ),
        ],
    )
    .await;
    fx.put_raw(&fx.slot_pk(2), vec![("n", s("not a number"))])
        .await;
    let burst = ids(&["wamid.next"]);
    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    assert_eq!(claim.claimed, burst);
    assert_eq!(claim.history, vec![turn(Role::User, "fresh", NOW - 10)]);
    assert_eq!(
        claim.history_seq, 1,
        "an exchange without a number is skipped"
    );
}

#[tokio::test]
async fn an_answered_message_writes_small_items_whatever_the_past() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let answer = "An answer of six hundred characters. ".repeat(16);
    let mut sizes = Vec::new();
    for i in 0..30 {
        let burst = vec![format!("wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZB{i:04}")];
        let token = format!("inv-{i:02}");
        let claim = fx.claim(&burst, &token, NOW + i).await.unwrap();
        let new_turns = vec![
            turn(
                Role::User,
                &"A question of about 120 characters. ".repeat(3),
                NOW + i,
            ),
            Turn {
                sent_as: ids(&["wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"]),
                ..turn(Role::Assistant, &answer, NOW + i)
            },
        ];
        fx.complete(&burst, &token, &claim, new_turns, NOW + i)
            .await
            .unwrap();
        let slot = fx.raw(&fx.slot_pk((i as usize + 1) % 10)).await.unwrap();
        let claim_item = fx.raw(&claim_key(&burst[0])).await.unwrap();
        sizes.push((item_bytes(&slot), item_bytes(&claim_item)));
    }
    // A write unit is 1 KB: an exchange of a ~120-character question and a ~600-character
    // answer is one unit, a claim one unit, however many messages came before.
    for (exchange, claim) in &sizes {
        assert!(*exchange <= 1024, "{sizes:?}");
        assert!(*claim <= 1024, "{sizes:?}");
    }
    assert_eq!(sizes[0], sizes[29], "the 30th costs what the first did");
}

#[tokio::test]
async fn nothing_to_claim_or_complete_costs_no_call() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    assert_eq!(fx.claim(&[], "inv-1", NOW).await.unwrap(), Claim::default());
    fx.complete(&[], "inv-1", &Claim::default(), vec![], NOW)
        .await
        .unwrap();
    assert_eq!(fx.calls.count(), 0);
}

#[tokio::test]
async fn a_missing_table_is_reported_unavailable() {
    let config = testkit::moto_config().await;
    let store = DynamoDbConversationStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        "no-such-table",
        HistoryPolicy::new(20, 14),
    );
    let conversation = ConversationKey::new("1", "2");
    let outcome = store
        .claim(ClaimRequest {
            conversation: &conversation,
            message_ids: &ids(&["wamid.x"]),
            token: "inv-1",
            lease_until: NOW + LEASE,
            now: NOW,
            rate_window_seconds: 0,
            budget_day: None,
        })
        .await;
    assert!(
        matches!(&outcome, Err(StoreError::Unavailable(m)) if m.contains("ResourceNotFound")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_released_claim_can_be_taken_at_once_but_only_its_holder_releases_it() {
    let f = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let ids = vec!["wamid.release".to_owned()];
    assert_eq!(f.claim(&ids, "first", NOW).await.unwrap().claimed, ids);

    // Another token cannot release it, so it is still held.
    f.store
        .release(&f.conversation, "intruder", &ids, None)
        .await
        .unwrap();
    assert_eq!(
        f.claim(&ids, "second", NOW).await.unwrap().held_elsewhere,
        ids
    );

    // Its holder gives it back: the next invocation takes it before the lease lapses.
    let before = f.calls.count();
    f.store
        .release(&f.conversation, "first", &ids, None)
        .await
        .unwrap();
    assert_eq!(f.calls.count() - before, 1);
    assert_eq!(f.claim(&ids, "second", NOW).await.unwrap().claimed, ids);
    // The first holder's late complete is refused.
    let claim = Claim::default();
    assert_eq!(
        f.complete(&ids, "first", &claim, Vec::new(), NOW).await,
        Err(StoreError::ClaimLost)
    );
}

#[tokio::test]
async fn a_released_pending_answer_comes_back_with_its_messages_until_they_are_completed() {
    let f = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let ids = vec!["wamid.p1".to_owned(), "wamid.p2".to_owned()];
    f.claim(&ids, "first", NOW).await.unwrap();
    let pending = PendingAnswer {
        message_ids: ids.clone(),
        replies: vec!["the answer".to_owned()],
        parts_sent: 0,
    };
    let kept = || async {
        f.raw(&claim_key("wamid.p1"))
            .await
            .is_some_and(|item| item.contains_key("pending_answer"))
    };
    // An intruder cannot leave an answer behind.
    f.store
        .release(&f.conversation, "intruder", &ids, Some(&pending))
        .await
        .unwrap();
    assert!(!kept().await);

    f.store
        .release(&f.conversation, "first", &ids, Some(&pending))
        .await
        .unwrap();
    assert!(kept().await, "kept with the first message's claim");

    // A claim of only some of its messages does not get it.
    let partial = f.claim(&ids[..1], "second", NOW).await.unwrap();
    assert_eq!(partial.pending, None);
    f.store
        .release(&f.conversation, "second", &ids[..1], None)
        .await
        .unwrap();

    // The retry of all of them, and a newer message with them, does.
    let mut with_newer = ids.clone();
    with_newer.push("wamid.p3".to_owned());
    let claim = f.claim(&with_newer, "third", NOW).await.unwrap();
    assert_eq!(claim.claimed, with_newer);
    assert_eq!(claim.pending.as_ref(), Some(&pending));

    // The completing write clears it.
    f.complete(&ids, "third", &claim, Vec::new(), NOW)
        .await
        .unwrap();
    assert!(!kept().await);
}

#[tokio::test]
async fn tool_rounds_stay_with_the_claim_through_a_lapsed_lease_until_completed() {
    let f = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let ids = vec!["wamid.t1".to_owned(), "wamid.t2".to_owned()];
    f.claim(&ids, "first", NOW).await.unwrap();
    let rounds = ToolRounds {
        message_ids: ids.clone(),
        rounds: vec![shared::llm::ToolRound {
            text: None,
            calls: vec![shared::llm::ToolCall {
                id: "call_1".into(),
                name: "add_to_cart".into(),
                arguments: serde_json::json!({"product_id": "P-1", "quantity": 2}),
                signature: None,
            }],
            results: vec![shared::llm::ToolResult {
                call_id: "call_1".into(),
                name: "add_to_cart".into(),
                content: r#"{"cart":"C-9","items":2}"#.into(),
                is_error: false,
            }],
        }],
    };
    // Only the holder keeps rounds.
    assert_eq!(
        f.store.keep_tool_rounds("intruder", &rounds).await,
        Err(StoreError::ClaimLost)
    );
    f.store.keep_tool_rounds("first", &rounds).await.unwrap();
    let kept = || async {
        f.raw(&claim_key("wamid.t1"))
            .await
            .is_some_and(|item| item.contains_key("tool_rounds"))
    };
    assert!(kept().await, "kept with the first message's claim");

    // The invocation crashed: once its lease lapsed, the retry takes the claim and the rounds.
    let later = NOW + LEASE + 1;
    let claim = f.claim(&ids, "second", later).await.unwrap();
    assert_eq!(claim.claimed, ids);
    assert_eq!(claim.tool_rounds.as_ref(), Some(&rounds));

    // Released and claimed again, they are still there; a claim of only some messages does not
    // get them.
    f.store
        .release(&f.conversation, "second", &ids, None)
        .await
        .unwrap();
    let partial = f.claim(&ids[1..], "third", later).await.unwrap();
    assert_eq!(partial.tool_rounds, None);
    f.store
        .release(&f.conversation, "third", &ids[1..], None)
        .await
        .unwrap();
    let claim = f.claim(&ids, "fourth", later).await.unwrap();
    assert_eq!(claim.tool_rounds.as_ref(), Some(&rounds));

    // The completing write clears them.
    f.complete(&ids, "fourth", &claim, Vec::new(), later)
        .await
        .unwrap();
    assert!(!kept().await);
}

#[tokio::test]
async fn the_claim_reads_the_opt_out_and_counts_the_rate_window_in_the_same_round_trip() {
    let f = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let claim = |ids: Vec<String>, now: i64| {
        let f = &f;
        async move {
            f.store
                .claim(ClaimRequest {
                    conversation: &f.conversation,
                    message_ids: &ids,
                    token: "inv",
                    lease_until: now + LEASE,
                    now,
                    rate_window_seconds: 60,
                    budget_day: None,
                })
                .await
                .unwrap()
        }
    };
    let first = claim(ids(&["wamid.r1", "wamid.r2"]), NOW).await;
    assert_eq!(
        first.standing,
        UserStanding {
            opted_out: false,
            in_window: 2,
            counted: 2,
            tokens_today: 0,
            budget_noticed: false,
        }
    );
    let before = f.calls.count();
    let second = claim(ids(&["wamid.r3"]), NOW + 1).await;
    let per_claim = f.calls.count() - before;
    assert_eq!((second.standing.in_window, second.standing.counted), (3, 1));
    // The next minute has its own window.
    let window = NOW - NOW.rem_euclid(60) + 60;
    let next = claim(ids(&["wamid.r4"]), window).await;
    assert_eq!(next.standing.in_window, 1);

    f.store
        .set_opted_out(&f.conversation, true, NOW)
        .await
        .unwrap();
    let before = f.calls.count();
    let opted = claim(ids(&["wamid.r5"]), window + 1).await;
    assert!(opted.standing.opted_out);
    assert_eq!(
        f.calls.count() - before,
        per_claim,
        "the opt-out is read with the history: no request more"
    );
    f.store
        .set_opted_out(&f.conversation, false, NOW)
        .await
        .unwrap();
    assert!(
        !claim(ids(&["wamid.r6"]), window + 2)
            .await
            .standing
            .opted_out
    );
    assert!(
        f.raw(&shared::conversation::dynamodb::standing::opt_out_key(
            &f.conversation
        ))
        .await
        .is_none(),
        "opting in again keeps nothing"
    );
}

#[tokio::test]
async fn a_day_s_tokens_are_read_with_the_claim_and_its_notice_noted_once() {
    let f = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let day = NOW.div_euclid(86_400);
    f.store
        .add_tokens(&f.conversation, day, 700, NOW)
        .await
        .unwrap();
    f.store
        .add_tokens(&f.conversation, day, 350, NOW)
        .await
        .unwrap();
    f.store
        .add_tokens(&f.conversation, day - 1, 5000, NOW)
        .await
        .unwrap();
    let claim = |id: &str, budget_day| {
        let f = &f;
        let ids = ids(&[id]);
        async move {
            f.store
                .claim(ClaimRequest {
                    conversation: &f.conversation,
                    message_ids: &ids,
                    token: "inv",
                    lease_until: NOW + LEASE,
                    now: NOW,
                    rate_window_seconds: 0,
                    budget_day,
                })
                .await
                .unwrap()
                .standing
        }
    };
    let standing = claim("wamid.b1", Some(day)).await;
    assert_eq!(
        (standing.tokens_today, standing.budget_noticed),
        (1050, false)
    );
    assert_eq!(
        claim("wamid.b2", None).await.tokens_today,
        0,
        "no budget, nothing read"
    );
    assert!(
        f.store
            .note_budget_notice(&f.conversation, day, NOW)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .note_budget_notice(&f.conversation, day, NOW)
            .await
            .unwrap()
    );
    assert!(claim("wamid.b3", Some(day)).await.budget_noticed);
}

#[tokio::test]
async fn forgetting_a_conversation_leaves_its_ids_answered() {
    let f = Fixture::new(HistoryPolicy::new(20, 14)).await;
    answer_in(&f, &f.conversation, "wamid.f1", "remember me", NOW).await;
    assert_eq!(
        claim_in(&f, &f.conversation, "wamid.f2", NOW)
            .await
            .history
            .len(),
        2
    );
    f.store.forget_conversation(&f.conversation).await.unwrap();
    f.store.forget_conversation(&f.conversation).await.unwrap();
    assert!(
        claim_in(&f, &f.conversation, "wamid.f3", NOW)
            .await
            .history
            .is_empty()
    );
    assert_eq!(
        claim_in(&f, &f.conversation, "wamid.f1", NOW).await.done,
        ids(&["wamid.f1"])
    );
}

/// Answers `text` in `conversation` as message `id` at `now`: a claim and a completion.
async fn answer_in(fx: &Fixture, conversation: &ConversationKey, id: &str, text: &str, now: i64) {
    let message_ids = ids(&[id]);
    let claim = fx
        .store
        .claim(ClaimRequest {
            conversation,
            message_ids: &message_ids,
            token: "inv",
            lease_until: now + LEASE,
            now,
            rate_window_seconds: 0,
            budget_day: None,
        })
        .await
        .unwrap();
    assert_eq!(claim.claimed, message_ids);
    fx.store
        .complete(CompleteRequest {
            conversation,
            token: "inv",
            message_ids: &message_ids,
            history: claim.history.clone(),
            history_seq: claim.history_seq,
            new_turns: vec![
                turn(Role::User, text, now),
                turn(Role::Assistant, "ok", now),
            ],
            now,
        })
        .await
        .unwrap();
}

async fn claim_in(fx: &Fixture, conversation: &ConversationKey, id: &str, now: i64) -> Claim {
    fx.store
        .claim(ClaimRequest {
            conversation,
            message_ids: &ids(&[id]),
            token: "later",
            lease_until: now + LEASE,
            now,
            rate_window_seconds: 0,
            budget_day: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_changed_user_id_takes_the_turns_along_and_ids_stay_answered() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let old = ConversationKey::new("106540352242922", "US.old");
    let new = ConversationKey::new("106540352242922", "US.new");
    answer_in(&fx, &old, "wamid.1", "My name is Ana", NOW - 60).await;
    let request = MoveRequest {
        from: &old,
        to: &new,
        now: NOW,
    };

    let moved = fx.store.move_conversation(request).await.unwrap();
    assert_eq!(
        moved,
        Moved {
            turns: 2,
            message_ids: 0
        },
        "message ids are claims of their own: nothing to copy"
    );
    let claim = claim_in(&fx, &new, "wamid.1", NOW).await;
    assert_eq!(
        claim.done,
        ids(&["wamid.1"]),
        "deduplication holds under the new id"
    );
    assert_eq!(texts(&claim.history), ["My name is Ana", "ok"]);
    let under_old = claim_in(&fx, &old, "wamid.1", NOW).await;
    assert_eq!(under_old.done, ids(&["wamid.1"]));
    assert!(
        under_old.history.is_empty(),
        "the old conversation's turns are gone"
    );

    assert_eq!(
        fx.store.move_conversation(request).await.unwrap(),
        Moved::default(),
        "moving again changes nothing"
    );
    let claim = claim_in(&fx, &new, "wamid.2", NOW).await;
    assert_eq!(texts(&claim.history), ["My name is Ana", "ok"]);
}

#[tokio::test]
async fn a_move_into_an_existing_conversation_merges_in_time_order() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let old = ConversationKey::new("106540352242922", "US.a");
    let new = ConversationKey::new("106540352242922", "US.b");
    answer_in(&fx, &old, "wamid.old", "first, old id", NOW - 300).await;
    answer_in(&fx, &new, "wamid.new", "then, new id", NOW - 100).await;
    let moved = fx
        .store
        .move_conversation(MoveRequest {
            from: &old,
            to: &new,
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(moved.turns, 2);
    let claim = claim_in(&fx, &new, "wamid.next", NOW).await;
    assert_eq!(
        texts(&claim.history),
        ["first, old id", "ok", "then, new id", "ok"]
    );
    for id in ["wamid.old", "wamid.new"] {
        assert_eq!(claim_in(&fx, &new, id, NOW).await.done, ids(&[id]));
    }
}

#[tokio::test]
async fn moving_from_a_conversation_that_does_not_exist_writes_nothing() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let old = ConversationKey::new("106540352242922", "US.nobody");
    let new = ConversationKey::new("106540352242922", "US.someone");
    let moved = fx
        .store
        .move_conversation(MoveRequest {
            from: &old,
            to: &new,
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(moved, Moved::default());
    assert!(fx.all_items().await.is_empty());
}

#[tokio::test]
async fn an_item_of_the_first_layout_keeps_its_turns_answered_ids_and_live_claims() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    fx.put_raw(
        &fx.legacy_pk(),
        vec![
            (
                "turns",
                AttributeValue::L(vec![
                    stored_turn("user", "before the upgrade", NOW - 50),
                    stored_turn("assistant", "old answer", NOW - 49),
                ]),
            ),
            ("c#wamid.answered", marker("d", "inv-0", None)),
            ("c#wamid.busy", marker("p", "inv-old", Some(NOW + 60))),
            ("c#wamid.crashed", marker("p", "inv-old", Some(NOW - 1))),
            ("expires_at", n(NOW + 86_400)),
        ],
    )
    .await;

    let burst = ids(&["wamid.answered", "wamid.busy", "wamid.crashed", "wamid.new"]);
    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    assert_eq!(claim.done, ids(&["wamid.answered"]));
    assert_eq!(claim.held_elsewhere, ids(&["wamid.busy"]));
    assert_eq!(claim.claimed, ids(&["wamid.crashed", "wamid.new"]));
    assert_eq!(texts(&claim.history), ["before the upgrade", "old answer"]);
    let carried = fx.raw(&claim_key("wamid.answered")).await.unwrap();
    assert_eq!(
        state(&carried).0,
        "d",
        "the answered id has a claim of its own now"
    );
    let busy = fx.raw(&claim_key("wamid.busy")).await.unwrap();
    assert_eq!(
        state(&busy).0,
        "r",
        "the claim of an id held the old way is given back"
    );

    let claimed = claim.claimed.clone();
    fx.complete(
        &claimed,
        "inv-1",
        &claim,
        vec![
            turn(Role::User, "after", NOW),
            turn(Role::Assistant, "new answer", NOW),
        ],
        NOW,
    )
    .await
    .unwrap();
    let next = fx
        .claim(&ids(&["wamid.next"]), "inv-2", NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        texts(&next.history),
        ["before the upgrade", "old answer", "after", "new answer"]
    );
    let legacy = fx.raw(&fx.legacy_pk()).await.unwrap();
    assert_eq!(
        legacy.len(),
        6,
        "the first layout's item is never written: {legacy:?}"
    );
}

#[tokio::test]
async fn a_move_from_the_first_layout_carries_its_answered_ids_over() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let new = ConversationKey::new("106540352242922", "US.new");
    fx.put_raw(
        &fx.legacy_pk(),
        vec![
            (
                "turns",
                AttributeValue::L(vec![stored_turn("user", "hola", NOW - 5)]),
            ),
            ("c#wamid.a", marker("d", "inv-0", None)),
        ],
    )
    .await;
    let request = MoveRequest {
        from: &fx.conversation,
        to: &new,
        now: NOW,
    };
    let moved = fx.store.move_conversation(request).await.unwrap();
    assert_eq!(
        moved,
        Moved {
            turns: 1,
            message_ids: 1
        }
    );
    assert_eq!(
        claim_in(&fx, &new, "wamid.a", NOW).await.done,
        ids(&["wamid.a"])
    );
    assert_eq!(
        texts(&claim_in(&fx, &new, "wamid.b", NOW).await.history),
        ["hola"]
    );
    let legacy = fx.raw(&fx.legacy_pk()).await.unwrap();
    assert!(!legacy.contains_key("turns"), "its turns moved away");
    assert!(
        legacy.contains_key("c#wamid.a"),
        "its markers stay until it expires"
    );
}

#[tokio::test]
async fn a_late_failure_marks_the_reply_it_names_and_only_once() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let burst = ids(&["wamid.in1"]);
    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    let reply = Turn {
        sent_as: ids(&["wamid.out1", "wamid.out2"]),
        ..turn(Role::Assistant, "Here is the answer", NOW)
    };
    let new_turns = vec![turn(Role::User, "Question?", NOW - 1), reply.clone()];
    fx.complete(&burst, "inv-1", &claim, new_turns, NOW)
        .await
        .unwrap();
    let mark = |reply_id: &'static str| {
        fx.store.mark_undelivered(UndeliveredRequest {
            conversation: &fx.conversation,
            reply_id,
            error_code: Some(131_047),
        })
    };
    let before = fx.calls.count();
    assert_eq!(
        mark("wamid.out2").await.unwrap(),
        MarkOutcome::Marked { in_a_row: 1 }
    );
    assert_eq!(
        fx.calls.count() - before,
        2,
        "a read and a conditional write"
    );
    assert_eq!(
        mark("wamid.out1").await.unwrap(),
        MarkOutcome::AlreadyMarked
    );
    assert_eq!(mark("wamid.unknown").await.unwrap(), MarkOutcome::NotFound);

    let again = fx
        .claim(&ids(&["wamid.in2"]), "inv-2", NOW + 5)
        .await
        .unwrap();
    assert_eq!(again.history.len(), 2);
    assert_eq!(again.history[0], turn(Role::User, "Question?", NOW - 1));
    assert_eq!(
        again.history[1],
        Turn {
            undelivered: Some(Undelivered {
                error_code: Some(131_047)
            }),
            ..reply
        }
    );
}

#[tokio::test]
async fn a_late_failure_in_a_conversation_that_does_not_exist_writes_nothing() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let outcome = fx
        .store
        .mark_undelivered(UndeliveredRequest {
            conversation: &fx.conversation,
            reply_id: "wamid.out",
            error_code: None,
        })
        .await
        .unwrap();
    assert_eq!(outcome, MarkOutcome::NotFound);
    assert!(fx.all_items().await.is_empty());
}
