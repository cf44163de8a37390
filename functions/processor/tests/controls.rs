//! The controls every conversation has, through the processor as deployed (`processor::build`):
//! DynamoDB in moto (one request at a time, so that its conditional writes are atomic), the LLM
//! and Meta as recording stand-ins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use common::{Harness, USER, event, failures, record, unique};

/// Sends `text` from `user` as a new message; asserts it was handled without a retry.
async fn say(h: &Harness, user: &str, text: &str) {
    let response = h
        .handle(&event(vec![record("sqs", user, &unique("c"), text, 1)]))
        .await;
    assert!(failures(&response).is_empty(), "{text}: {response:?}");
}

#[tokio::test]
async fn stop_silences_the_bot_in_the_table_until_start() {
    let h = Harness::new("openai", &[]).await;
    say(&h, USER, "Hi").await;
    say(&h, USER, "STOP").await;
    say(&h, USER, "Are you there?").await;
    say(&h, USER, "/reset").await;
    assert_eq!(
        h.sent_texts(),
        [
            "You said: Hi",
            "You won't get any more messages from us. Send START if you want to talk again."
        ]
    );
    assert_eq!(h.llm.requests().len(), 1, "no model call while opted out");
    let record = h
        .item(&shared::conversation::dynamodb::standing::opt_out_key(
            &shared::inbound::ConversationKey::new(common::PHONE_NUMBER_ID, USER),
        ))
        .await;
    assert_eq!(
        record.get("opted_out").and_then(|v| v.as_bool().ok()),
        Some(&true)
    );

    say(&h, USER, "alta").await;
    say(&h, USER, "Hello again").await;
    let sent = h.sent_texts();
    assert_eq!(
        sent[2..],
        ["Welcome back! How can I help you?", "You said: Hello again"]
    );
}

#[tokio::test]
async fn reset_forgets_what_the_model_was_told() {
    let h = Harness::new("gemini", &[]).await;
    say(&h, USER, "My name is Ana").await;
    say(&h, USER, "/reset").await;
    say(&h, USER, "What is my name?").await;
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    let contents = requests[1].json()["contents"].as_array().unwrap().len();
    assert_eq!(contents, 1, "only the new question reaches the model");
    assert_eq!(
        h.sent_texts()[1],
        "Done: I've forgotten our conversation. What can I do for you?"
    );
}

#[tokio::test]
async fn fifteen_messages_in_a_minute_get_ten_answers_and_one_notice() {
    let h = Harness::new("openai", &[("RATE_LIMIT_PER_MINUTE", "10")]).await;
    for n in 0..15 {
        say(&h, USER, &format!("message {n}")).await;
    }
    // A minute may have turned during the loop: then the count started again in the new one.
    let answered = h.llm.requests().len();
    let notices = h
        .sent_texts()
        .iter()
        .filter(|t| t.starts_with("You're sending messages faster"))
        .count();
    assert!(
        (answered, notices) == (10, 1) || (answered > 10 && notices <= 1),
        "{answered} answered, {notices} notices"
    );
    assert_eq!(h.sent_texts().len(), answered + notices);
    // Another user has their own window.
    say(&h, "15559876543", "hi").await;
    assert_eq!(h.llm.requests().len(), answered + 1);
}

#[tokio::test]
async fn the_kill_switch_answers_without_the_model() {
    let h = Harness::new(
        "openai",
        &[(
            "MAINTENANCE_MESSAGE",
            "We are updating the assistant; back at 10:00.",
        )],
    )
    .await;
    say(&h, USER, "Hi").await;
    assert_eq!(
        h.sent_texts(),
        ["We are updating the assistant; back at 10:00."]
    );
    assert!(h.llm.requests().is_empty());
}

#[tokio::test]
async fn a_spent_daily_budget_gets_one_notice_and_no_model_call() {
    // The stand-in reports 49 tokens per answer (42 in, 7 out).
    let h = Harness::new("openai", &[("DAILY_TOKEN_BUDGET", "100")]).await;
    for n in 0..5 {
        say(&h, USER, &format!("question {n}")).await;
    }
    assert_eq!(h.llm.requests().len(), 3, "49, 98, then 147 ≥ 100");
    let sent = h.sent_texts();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(
        sent[3],
        "We've talked a lot today! I'll be glad to answer again tomorrow."
    );
    let day = shared::clock::now_epoch_seconds().div_euclid(86_400);
    let count = h
        .item(&shared::conversation::dynamodb::standing::budget_key(
            &shared::inbound::ConversationKey::new(common::PHONE_NUMBER_ID, USER),
            day,
        ))
        .await;
    assert_eq!(
        count
            .get("n")
            .and_then(|n| n.as_n().ok())
            .map(String::as_str),
        Some("147")
    );
}
