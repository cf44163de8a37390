//! Several business numbers and the handoff to a person, through the processor as deployed
//! (`processor::build`): DynamoDB in moto (one request at a time, so that its conditional writes
//! are atomic), the LLM and Meta as recording stand-ins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    Harness, PHONE_NUMBER_ID, SECOND_PHONE_NUMBER_ID, USER, event, failures, openai_answer, record,
    to_number, unique,
};
use serde_json::{Value, json};
use shared::handoff::handoff_key;
use shared::inbound::ConversationKey;
use testkit::http_recorder::{Canned, RecordedRequest};

const AGENT: &str = "15559990000";

/// Sends `text` from `user` as a new message; asserts it was handled without a retry.
async fn say(h: &Harness, user: &str, text: &str) -> String {
    let id = unique("h");
    let response = h
        .handle(&event(vec![record("sqs", user, &id, text, 1)]))
        .await;
    assert!(failures(&response).is_empty(), "{text}: {response:?}");
    id
}

/// What Meta was asked to send, in order: `(to, text)`.
fn sent(h: &Harness) -> Vec<(String, String)> {
    h.meta
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(RecordedRequest::json)
        .filter(|body| body["type"] == "text")
        .map(|body| {
            (
                body["to"].as_str().unwrap_or_default().to_owned(),
                body["text"]["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Writes `settings` as `phone_number_id`'s settings item, as `infra/numbers.sh put` does.
async fn put_settings(h: &Harness, phone_number_id: &str, settings: Value) {
    h.dynamodb
        .put_item()
        .table_name(&h.table)
        .item(
            "pk",
            AttributeValue::S(shared::number_settings::number_key(phone_number_id)),
        )
        .item("settings", AttributeValue::S(settings.to_string()))
        .send()
        .await
        .unwrap();
}

/// The reference the agent's notice names.
fn reference_in(notice: &str) -> String {
    let start = notice.find('#').expect("a reference");
    notice[start + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

#[tokio::test]
async fn two_numbers_answer_in_their_own_voices_models_and_texts() {
    let h = Harness::new("openai", &[]).await;
    put_settings(
        &h,
        SECOND_PHONE_NUMBER_ID,
        json!({"name": "Café Luna", "system_prompt": "Eres la barista de Café Luna.",
               "llm": {"provider": "openai", "model": "luna-model", "base_url": format!("{}/v1", h.llm.url)},
               "texts": {"opted_out": "Adiós."}}),
    )
    .await;
    say(&h, USER, "Hi").await;
    let to_second = to_number(
        record("sqs", USER, &unique("n"), "Hola", 1),
        SECOND_PHONE_NUMBER_ID,
    );
    assert!(failures(&h.handle(&event(vec![to_second])).await).is_empty());
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (requests[0].json(), requests[1].json());
    assert_eq!(first["messages"][0]["content"], "You are a test assistant.");
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(
        second["messages"][0]["content"],
        "Eres la barista de Café Luna."
    );
    assert_eq!(second["model"], "luna-model");
    let stop = to_number(
        record("sqs", USER, &unique("n"), "STOP", 1),
        SECOND_PHONE_NUMBER_ID,
    );
    assert!(failures(&h.handle(&event(vec![stop])).await).is_empty());
    assert_eq!(sent(&h).last().unwrap().1, "Adiós.");
    let paths: Vec<String> = h.meta.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p.contains(SECOND_PHONE_NUMBER_ID)),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_number_switched_off_or_in_maintenance_costs_no_model_call() {
    let h = Harness::new("openai", &[]).await;
    put_settings(&h, PHONE_NUMBER_ID, json!({"enabled": false})).await;
    put_settings(
        &h,
        SECOND_PHONE_NUMBER_ID,
        json!({"texts": {"maintenance": "Cerrado por inventario."}}),
    )
    .await;
    let id = say(&h, USER, "Hi").await;
    let to_second = to_number(
        record("sqs", USER, &unique("n"), "Hola", 1),
        SECOND_PHONE_NUMBER_ID,
    );
    assert!(failures(&h.handle(&event(vec![to_second])).await).is_empty());
    assert!(h.llm.requests().is_empty());
    assert_eq!(
        sent(&h),
        [(USER.to_owned(), "Cerrado por inventario.".to_owned())]
    );
    let claim = h.claim_item(&id).await;
    assert_eq!(
        claim["s"].as_s().unwrap(),
        "d",
        "the disabled number's message is marked done"
    );
    assert_eq!(
        claim["c"].as_s().unwrap(),
        &format!("{PHONE_NUMBER_ID}:{USER}"),
        "claims name their conversation, for infra/user-data.sh"
    );
}

#[tokio::test]
async fn a_keyword_hands_off_the_agent_is_notified_once_and_relays_go_both_ways() {
    let h = Harness::new("openai", &[("HANDOFF_AGENT_NUMBER", AGENT)]).await;
    say(&h, USER, "Where is my order?").await;
    let asked = unique("h");
    let humano = record("sqs", USER, &asked, "humano", 1);
    assert!(failures(&h.handle(&event(vec![humano.clone()])).await).is_empty());
    // Meta delivers the same message again: no second notice, no second answer.
    assert!(failures(&h.handle(&event(vec![humano])).await).is_empty());
    let messages = sent(&h);
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1].0, AGENT);
    let notice = &messages[1].1;
    assert!(
        notice.contains("Tester") && notice.contains("Where is my order?"),
        "{notice}"
    );
    assert!(
        !notice.contains(USER),
        "the user's number is masked: {notice}"
    );
    assert_eq!(
        messages[2],
        (
            USER.to_owned(),
            processor::config::DEFAULT_HANDOFF_MESSAGE.to_owned()
        )
    );
    let reference = reference_in(notice);

    say(&h, USER, "It was due on Monday").await;
    assert_eq!(
        h.llm.requests().len(),
        1,
        "no model call while a person has the conversation"
    );
    assert_eq!(
        sent(&h)[3],
        (
            AGENT.to_owned(),
            format!("#{reference} Tester: It was due on Monday")
        )
    );
    say(&h, AGENT, &format!("#{reference} It ships today, sorry!")).await;
    assert_eq!(
        sent(&h)[4],
        (USER.to_owned(), "It ships today, sorry!".to_owned())
    );
    say(&h, AGENT, "hello?").await;
    assert!(
        sent(&h)[5].1.contains("#4821 your message"),
        "the agent is told how to write"
    );
    say(&h, AGENT, &format!("/bot #{reference}")).await;
    assert_eq!(
        sent(&h)[6],
        (
            AGENT.to_owned(),
            format!("#{reference} is back with the bot.")
        )
    );

    say(&h, USER, "Thanks!").await;
    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    let prompt = requests[1].json()["messages"].to_string();
    assert!(
        prompt.contains("It ships today, sorry!"),
        "the bot knows what the agent said: {prompt}"
    );
    assert!(
        prompt.contains("It was due on Monday"),
        "and what the user told the agent: {prompt}"
    );
    assert_eq!(
        sent(&h)[7],
        (USER.to_owned(), "You said: Thanks!".to_owned())
    );
    let handoff = h
        .item(&handoff_key(&ConversationKey::new(PHONE_NUMBER_ID, USER)))
        .await;
    assert!(
        handoff.is_empty(),
        "the ended handoff is forgotten once folded: {handoff:?}"
    );
}

#[tokio::test]
async fn the_model_hands_off_with_its_tool() {
    let h = Harness::with_llm("openai", &[("HANDOFF_AGENT_NUMBER", AGENT)], |request| {
        let body = request.json();
        let offered = body["tools"].to_string();
        if !offered.contains("handoff_to_human") {
            return openai_answer(request);
        }
        Canned::json(
            200,
            json!({"id": "c", "object": "chat.completion", "model": "gpt-test",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "handoff_to_human", "arguments": "{}"}}]}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
        )
    })
    .await;
    say(&h, USER, "I want to complain about a refund").await;
    let messages = sent(&h);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0].0, AGENT);
    assert!(messages[0].1.contains("asks for a person"));
    assert_eq!(
        messages[1],
        (
            USER.to_owned(),
            processor::config::DEFAULT_HANDOFF_MESSAGE.to_owned()
        )
    );
    let handoff = h
        .item(&handoff_key(&ConversationKey::new(PHONE_NUMBER_ID, USER)))
        .await;
    assert_eq!(handoff["by"].as_s().unwrap(), "model");
}

#[tokio::test]
async fn idle_time_gives_the_conversation_back_to_the_bot() {
    let h = Harness::new(
        "openai",
        &[("HANDOFF_AGENT_NUMBER", AGENT), ("HANDOFF_IDLE_HOURS", "1")],
    )
    .await;
    say(&h, USER, "agent").await;
    let key = handoff_key(&ConversationKey::new(PHONE_NUMBER_ID, USER));
    // Two hours pass without the agent writing.
    let two_hours_ago = shared::clock::now_epoch_seconds() - 7200;
    h.dynamodb
        .update_item()
        .table_name(&h.table)
        .key("pk", AttributeValue::S(key.clone()))
        .update_expression("SET last_agent_at = :t")
        .expression_attribute_values(":t", AttributeValue::N(two_hours_ago.to_string()))
        .send()
        .await
        .unwrap();
    say(&h, USER, "Anyone there?").await;
    assert_eq!(h.llm.requests().len(), 1, "the bot answers again");
    assert_eq!(
        sent(&h).last().unwrap(),
        &(USER.to_owned(), "You said: Anyone there?".to_owned())
    );
    assert!(h.item(&key).await.is_empty());
}

#[tokio::test]
async fn a_business_app_echo_pauses_the_bot_for_that_conversation() {
    let h = Harness::new("openai", &[]).await;
    let echo = shared::queue_body::BusinessEcho {
        v: shared::queue_body::BUSINESS_ECHO_VERSION,
        phone_number_id: PHONE_NUMBER_ID.into(),
        recipient: USER.into(),
        message_id: unique("echo"),
        timestamp: Some(shared::clock::now_epoch_seconds() - 5),
    };
    let mut echo_record = record("sqs-echo", USER, "unused", "unused", 1);
    echo_record.body =
        Some(serde_json::to_string(&shared::queue_body::tagged_echo(&echo)).unwrap());
    assert!(failures(&h.handle(&event(vec![echo_record])).await).is_empty());
    say(&h, USER, "Thanks, and the invoice?").await;
    assert!(
        h.llm.requests().is_empty(),
        "a person is answering from the app"
    );
    assert!(
        sent(&h).is_empty(),
        "nothing is relayed: the person sees it in the app"
    );
    let handoff = h
        .item(&handoff_key(&ConversationKey::new(PHONE_NUMBER_ID, USER)))
        .await;
    assert_eq!(handoff["by"].as_s().unwrap(), "echo");
    assert!(
        !h.turns(USER).await.is_empty(),
        "the user's message is kept in memory"
    );
    // Another user of the same number is answered as usual.
    say(&h, "15550001111", "Hi").await;
    assert_eq!(h.llm.requests().len(), 1);
}

#[tokio::test]
async fn a_number_is_grounded_in_its_own_knowledge_document() {
    let h = Harness::new("openai", &[]).await;
    let aws = testkit::moto_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("numbers-{}", common::rand_suffix());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let faq = "# Café Luna\n\nOpen 8:00 to 20:00. Oat milk at no extra cost.";
    s3.put_object()
        .bucket(&bucket)
        .key("numbers/luna.md")
        .body(faq.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    put_settings(
        &h,
        SECOND_PHONE_NUMBER_ID,
        json!({"knowledge_uri": format!("s3://{bucket}/numbers/luna.md")}),
    )
    .await;
    say(&h, USER, "When do you open?").await;
    let to_second = to_number(
        record("sqs", USER, &unique("n"), "When do you open?", 1),
        SECOND_PHONE_NUMBER_ID,
    );
    assert!(failures(&h.handle(&event(vec![to_second])).await).is_empty());
    let requests = h.llm.requests();
    let system = |n: usize| {
        requests[n].json()["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        system(0),
        "You are a test assistant.",
        "the first number has no document"
    );
    assert!(
        system(1).ends_with(&format!("<knowledge>\n{faq}\n</knowledge>")),
        "{}",
        system(1)
    );
}
