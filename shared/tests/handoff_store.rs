//! The DynamoDB handoff store against moto (one request at a time, so that conditional writes
//! are atomic, as in DynamoDB): opening once, references, the agent's turns kept once per
//! message, ending once, and forgetting only what ended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use aws_sdk_dynamodb::types::AttributeValue;
use shared::conversation::dynamodb::DynamoDbConversationStore;
use shared::conversation::{ClaimRequest, ConversationStore, HistoryPolicy};
use shared::handoff::{
    AgentTurn, HandoffCause, HandoffStore, OpenHandoff, handoff_key, reference_key,
};
use shared::inbound::ConversationKey;

const NUMBER: &str = "106540352242922";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    store: DynamoDbConversationStore,
    raw: aws_sdk_dynamodb::Client,
    table: String,
    conversation: ConversationKey,
}

impl Fixture {
    async fn new() -> Self {
        let config = testkit::serial_proxy::serialized_moto_config().await;
        let raw = aws_sdk_dynamodb::Client::new(&config);
        let table = testkit::create_table(&raw, "handoffs").await;
        Self {
            store: DynamoDbConversationStore::new(raw.clone(), &table, HistoryPolicy::new(20, 14)),
            raw,
            table,
            conversation: ConversationKey::new(NUMBER, "15551234567"),
        }
    }

    fn open(&self, message_id: &'static str, now: i64) -> OpenHandoff<'_> {
        OpenHandoff {
            conversation: &self.conversation,
            phone_number_id: NUMBER,
            agent: "15559990000",
            by: HandoffCause::User,
            message_id,
            now,
        }
    }

    async fn item(&self, pk: &str) -> Option<std::collections::HashMap<String, AttributeValue>> {
        self.raw
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }
}

#[tokio::test]
async fn a_handoff_opens_once_keeps_each_agent_turn_once_and_ends_once() {
    let fx = Fixture::new().await;
    let (handoff, new) = fx
        .store
        .open_handoff(fx.open("wamid.A", NOW))
        .await
        .unwrap();
    assert!(new);
    assert_eq!(handoff.reference.len(), 4);
    assert_eq!(handoff.opened_by, "wamid.A");
    let (again, new) = fx
        .store
        .open_handoff(fx.open("wamid.B", NOW + 5))
        .await
        .unwrap();
    assert!(!new, "an open handoff stays the same one");
    assert_eq!(
        (again.reference.as_str(), again.opened_by.as_str()),
        (handoff.reference.as_str(), "wamid.A")
    );
    assert_eq!(again.last_agent_at, NOW + 5, "the agent's time is renewed");

    let (found, _) = fx
        .store
        .find_handoff(NUMBER, &handoff.reference)
        .await
        .unwrap()
        .expect("the reference names the conversation");
    assert_eq!(found, fx.conversation);
    assert!(
        fx.store
            .find_handoff(NUMBER, "0000")
            .await
            .unwrap()
            .is_none()
    );

    for _ in 0..2 {
        let turn = AgentTurn {
            text: "It ships today".into(),
            at: NOW + 60,
        };
        fx.store
            .add_agent_turn(&fx.conversation, "wamid.agent1", turn)
            .await
            .unwrap();
    }
    let (_, kept) = fx
        .store
        .find_handoff(NUMBER, &handoff.reference)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.turns.len(),
        1,
        "a redelivered agent message is kept once"
    );
    assert_eq!(kept.last_agent_at, NOW + 60);

    // An open handoff is not forgotten.
    fx.store.forget_handoff(&fx.conversation).await.unwrap();
    assert!(fx.item(&handoff_key(&fx.conversation)).await.is_some());

    for _ in 0..2 {
        fx.store
            .end_handoff(&fx.conversation, NUMBER, &handoff.reference, NOW + 120)
            .await
            .unwrap();
    }
    assert!(
        fx.store
            .find_handoff(NUMBER, &handoff.reference)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        fx.item(&reference_key(NUMBER, &handoff.reference))
            .await
            .is_none(),
        "the reference is freed"
    );
    let ended = fx.item(&handoff_key(&fx.conversation)).await.unwrap();
    assert_eq!(
        ended["ended_at"].as_n().unwrap(),
        &(NOW + 120).to_string(),
        "ended once"
    );

    // The claim reads the ended handoff with the history, its turns still to fold.
    let claim = fx
        .store
        .claim(ClaimRequest {
            conversation: &fx.conversation,
            message_ids: &["wamid.C".to_owned()],
            token: "t",
            lease_until: NOW + 60,
            now: NOW + 130,
            rate_window_seconds: 0,
            budget_day: None,
        })
        .await
        .unwrap();
    let read = claim.handoff.expect("read with the claim");
    assert_eq!((read.ended_at, read.turns.len()), (Some(NOW + 120), 1));

    fx.store.forget_handoff(&fx.conversation).await.unwrap();
    assert!(fx.item(&handoff_key(&fx.conversation)).await.is_none());
}
