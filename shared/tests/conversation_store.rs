//! The DynamoDB conversation store against moto's server (see tests/with-moto.sh).
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
use shared::conversation::dynamodb::DynamoDbConversationStore;
use shared::conversation::{
    Claim, ClaimRequest, CompleteRequest, ConversationStore, HistoryPolicy, MarkOutcome,
    MoveRequest, Moved, PendingAnswer, Role, StoreError, Turn, Undelivered, UndeliveredRequest,
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
                new_turns,
                stale_ids: claim.stale_ids.clone(),
                now,
            })
            .await
    }

    fn pk(&self) -> AttributeValue {
        AttributeValue::S(format!("conv#{}", self.conversation.as_str()))
    }

    async fn raw_item(&self) -> HashMap<String, AttributeValue> {
        self.raw_item_opt()
            .await
            .expect("the conversation's item exists")
    }

    async fn raw_item_opt(&self) -> Option<HashMap<String, AttributeValue>> {
        self.raw
            .get_item()
            .table_name(&self.table)
            .key("pk", self.pk())
            .consistent_read(true)
            .send()
            .await
            .expect("read the item from moto")
            .item
    }

    async fn put_raw_item(&self, attributes: Vec<(String, AttributeValue)>) {
        self.raw
            .put_item()
            .table_name(&self.table)
            .item("pk", self.pk())
            .set_item(Some(
                attributes
                    .into_iter()
                    .chain([("pk".to_owned(), self.pk())])
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

fn done(token: &str, at: i64) -> AttributeValue {
    map(&[("s", s("d")), ("k", s(token)), ("at", n(at))])
}

fn texts(turns: &[Turn]) -> Vec<&str> {
    turns.iter().map(|t| t.text.as_str()).collect()
}

#[tokio::test]
async fn a_new_burst_is_claimed_in_one_call_and_completed_in_one_more() {
    let fx = Fixture::new(HistoryPolicy::new(20, 14)).await;
    let burst = ids(&["wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZB=", "wamid.second=="]);

    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    assert_eq!(claim.claimed, burst);
    assert!(claim.done.is_empty() && claim.held_elsewhere.is_empty());
    assert!(claim.history.is_empty() && claim.stale_ids.is_empty());
    assert_eq!(fx.calls.count(), 1, "the common path claims in one call");

    let new_turns = vec![
        turn(Role::User, "Olá! 👋", NOW - 5),
        turn(Role::User, "Are you there?", NOW - 1),
        turn(Role::Assistant, "Yes, how can I help?", NOW),
    ];
    fx.complete(&burst, "inv-1", &claim, new_turns.clone(), NOW)
        .await
        .unwrap();
    assert_eq!(fx.calls.count(), 2, "completing is one call");

    let item = fx.raw_item().await;
    assert_eq!(
        item["turns"],
        AttributeValue::L(vec![
            stored_turn("user", "Olá! 👋", NOW - 5),
            stored_turn("user", "Are you there?", NOW - 1),
            stored_turn("assistant", "Yes, how can I help?", NOW),
        ])
    );
    assert_eq!(item["expires_at"], n(NOW + 14 * 86_400));
    for id in &burst {
        assert_eq!(item[&format!("c#{id}")], done("inv-1", NOW), "{item:?}");
    }

    // A redelivery of the same burst is recognised as answered, and the history is there.
    let again = fx.claim(&burst, "inv-2", NOW + 30).await.unwrap();
    assert_eq!(again.done, burst);
    assert!(again.claimed.is_empty() && again.held_elsewhere.is_empty());
    assert_eq!(again.history, new_turns);
    assert_eq!(
        fx.calls.count(),
        3,
        "a refused claim returns the item: one call"
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
    let before = fx.calls.count();

    let burst = ids(&["wamid.old", "wamid.new"]);
    let claim = fx.claim(&burst, "inv-2", NOW + 10).await.unwrap();
    assert_eq!(claim.claimed, ids(&["wamid.new"]));
    assert_eq!(claim.done, ids(&["wamid.old"]));
    assert!(claim.held_elsewhere.is_empty());
    assert_eq!(texts(&claim.history), ["first"]);
    assert_eq!(
        fx.calls.count() - before,
        2,
        "refused write, then a write for the new id"
    );

    let item = fx.raw_item().await;
    assert_eq!(item["c#wamid.old"], done("inv-1", NOW), "left as answered");
    assert_eq!(
        item["c#wamid.new"],
        map(&[
            ("s", s("p")),
            ("k", s("inv-2")),
            ("u", n(NOW + 10 + LEASE)),
            ("at", n(NOW + 10)),
        ])
    );
}

#[tokio::test]
async fn without_the_item_on_refusal_the_store_reads_it_consistently() {
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
    assert_eq!(fx.calls.count(), 2);

    let redelivery = fx.claim(&old, "inv-2", NOW + 1).await.unwrap();
    assert_eq!(redelivery.done, old);
    assert_eq!(texts(&redelivery.history), ["first"]);
    assert_eq!(fx.calls.count(), 4, "refused write, then a read");

    let burst = ids(&["wamid.old", "wamid.new"]);
    let claim = fx.claim(&burst, "inv-3", NOW + 2).await.unwrap();
    assert_eq!(claim.claimed, ids(&["wamid.new"]));
    assert_eq!(claim.done, old);
    assert_eq!(texts(&claim.history), ["first"]);
    assert_eq!(
        fx.calls.count(),
        7,
        "refused write, read, write for the new id"
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
        .complete(
            &burst,
            "inv-slow",
            &first,
            vec![turn(Role::Assistant, "late answer", NOW + LEASE + 3)],
            NOW + LEASE + 3,
        )
        .await;
    assert_eq!(lost, Err(StoreError::ClaimLost));
    let item = fx.raw_item().await;
    assert!(
        !item.contains_key("turns"),
        "the lost write stored nothing: {item:?}"
    );

    fx.complete(
        &burst,
        "inv-next",
        &takeover,
        vec![turn(Role::Assistant, "answer", NOW + LEASE + 4)],
        NOW + LEASE + 4,
    )
    .await
    .unwrap();
    let item = fx.raw_item().await;
    assert_eq!(item["c#wamid.slow"], done("inv-next", NOW + LEASE + 4));

    // An answered id stays answered, even for the token that answered it.
    let replay = fx.claim(&burst, "inv-next", NOW + LEASE + 5).await.unwrap();
    assert_eq!(replay.done, burst);
    assert!(replay.claimed.is_empty());
}

#[tokio::test]
async fn the_history_is_bounded_and_expired_turns_are_left_out() {
    let policy = HistoryPolicy::new(4, 1);
    let fx = Fixture::new(policy).await;
    for i in 0..5 {
        let burst = vec![format!("wamid.m{i}")];
        let now = NOW + i * 100;
        let claim = fx.claim(&burst, &format!("inv-{i}"), now).await.unwrap();
        assert_eq!(claim.claimed, burst);
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
    // The item lasts Meta's 7 days of redelivery although turns last one day.
    assert_eq!(fx.raw_item().await["expires_at"], n(NOW + 500 + 7 * 86_400));

    // Turns older than the TTL are ignored when read, even though the item is still there.
    let later = fx
        .claim(&ids(&["wamid.m6"]), "inv-6", NOW + 350 + 86_400)
        .await
        .unwrap();
    assert_eq!(texts(&later.history), ["q4", "a4"]);
}

#[tokio::test]
async fn stored_turns_that_expired_or_cannot_be_read_are_skipped() {
    let policy = HistoryPolicy::new(20, 1);
    let fx = Fixture::new(policy).await;
    fx.put_raw_item(vec![
        (
            "turns".to_owned(),
            AttributeValue::L(vec![
                stored_turn("user", "expired", NOW - 86_400),
                s("garbled"),
                map(&[("r", s("robot")), ("t", s("who?")), ("at", n(NOW - 9))]),
                stored_turn("user", "fresh", NOW - 10),
            ]),
        ),
        ("expires_at".to_owned(), n(NOW + 5)),
    ])
    .await;

    let burst = ids(&["wamid.next"]);
    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    assert_eq!(claim.claimed, burst);
    assert_eq!(claim.history, vec![turn(Role::User, "fresh", NOW - 10)]);
    assert_eq!(
        fx.raw_item().await["expires_at"],
        n(NOW + 7 * 86_400),
        "a claim pushes the expiry forward"
    );

    fx.complete(
        &burst,
        "inv-1",
        &claim,
        vec![turn(Role::Assistant, "reply", NOW)],
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        fx.raw_item().await["turns"],
        AttributeValue::L(vec![
            stored_turn("user", "fresh", NOW - 10),
            stored_turn("assistant", "reply", NOW),
        ])
    );
}

#[tokio::test]
async fn forgotten_markers_are_removed_by_the_completing_write() {
    let policy = HistoryPolicy::new(20, 1);
    let fx = Fixture::new(policy).await;
    let mut attributes = vec![
        // Older than Meta's 7 days of redelivery (turns last 1 day, ids at least 7).
        ("c#old".to_owned(), done("inv-0", NOW - 7 * 86_400 - 1)),
        (
            "c#live".to_owned(),
            map(&[
                ("s", s("p")),
                ("k", s("inv-elsewhere")),
                ("u", n(NOW + 100)),
                ("at", n(NOW - 86_400 - 1)),
            ]),
        ),
        ("expires_at".to_owned(), n(NOW + 10)),
    ];
    for i in 0..257 {
        attributes.push((format!("c#recent{i:03}"), done("inv-0", NOW - 1000 + i)));
    }
    fx.put_raw_item(attributes).await;

    let burst = ids(&["wamid.new"]);
    let claim = fx.claim(&burst, "inv-1", NOW).await.unwrap();
    assert_eq!(claim.claimed, burst);
    // 260 markers: the new one and 255 recent ones are the newest 256; `old` has expired;
    // `live` is another invocation's live claim and is kept.
    assert_eq!(claim.stale_ids, ids(&["old", "recent000", "recent001"]));

    let before = fx.calls.count();
    fx.complete(&burst, "inv-1", &claim, vec![], NOW)
        .await
        .unwrap();
    assert_eq!(fx.calls.count() - before, 1);
    let item = fx.raw_item().await;
    for gone in ["c#old", "c#recent000", "c#recent001"] {
        assert!(!item.contains_key(gone), "{gone} was kept");
    }
    for kept in ["c#live", "c#recent002", "c#recent256"] {
        assert!(item.contains_key(kept), "{kept} was removed");
    }
    assert_eq!(item["c#wamid.new"], done("inv-1", NOW));
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
    // An intruder cannot leave an answer behind.
    f.store
        .release(&f.conversation, "intruder", &ids, Some(&pending))
        .await
        .unwrap();
    assert!(!f.raw_item().await.contains_key("pending_answer"));

    let before = f.calls.count();
    f.store
        .release(&f.conversation, "first", &ids, Some(&pending))
        .await
        .unwrap();
    assert_eq!(f.calls.count() - before, 1, "kept in the releasing write");

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
    assert!(!f.raw_item().await.contains_key("pending_answer"));
    let released = f.claim(&with_newer, "fourth", NOW).await.unwrap();
    assert_eq!(released.pending, None);
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
            new_turns: vec![
                turn(Role::User, text, now),
                turn(Role::Assistant, "ok", now),
            ],
            stale_ids: claim.stale_ids.clone(),
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
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_changed_user_id_takes_the_turns_and_the_answered_ids_along() {
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
            message_ids: 1
        }
    );
    let claim = claim_in(&fx, &new, "wamid.1", NOW).await;
    assert_eq!(claim.done, ids(&["wamid.1"]), "deduplication moved along");
    assert_eq!(texts(&claim.history), ["My name is Ana", "ok"]);
    let under_old = claim_in(&fx, &old, "wamid.1", NOW).await;
    assert_eq!(
        under_old.done,
        ids(&["wamid.1"]),
        "a redelivery under the old id stays answered"
    );
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
    assert_eq!(
        moved,
        Moved {
            turns: 2,
            message_ids: 1
        }
    );
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
    let item = fx
        .raw
        .get_item()
        .table_name(&fx.table)
        .key("pk", AttributeValue::S(format!("conv#{}", new.as_str())))
        .send()
        .await
        .unwrap();
    assert!(item.item.is_none());
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
    assert!(fx.raw_item_opt().await.is_none());
}
