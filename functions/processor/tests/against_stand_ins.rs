//! The processor as deployed (`processor::build`): DynamoDB and Secrets Manager in moto's server,
//! and local HTTP servers standing in for the LLM and Meta's Graph API, which record every
//! request so that the tests assert on what was actually sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use std::collections::HashMap;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use serde_json::{Value, json};
use testkit::http_recorder::{Canned, RecordedRequest};

#[tokio::test]
async fn the_sample_event_is_answered_through_the_openai_api_and_the_graph_api() {
    let h = Harness::new("openai", &[]).await;
    let sample: SqsEvent = sent_now(
        serde_json::from_str(include_str!("../../../events/processor/text-message.json")).unwrap(),
    );
    let response = h.handle(&sample).await;
    assert!(failures(&response).is_empty());

    let llm_requests = h.llm.requests();
    assert_eq!(llm_requests.len(), 1);
    assert_eq!(llm_requests[0].method, "POST");
    assert_eq!(llm_requests[0].path, "/v1/chat/completions");
    assert_eq!(
        llm_requests[0].header("authorization"),
        Some("Bearer llm-key-for-tests")
    );
    let body = llm_requests[0].json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "You are a test assistant."},
               {"role": "user", "content": "Olá! What can you do for me?"}])
    );

    let meta_requests = h.meta.requests();
    assert_eq!(meta_requests.len(), 2, "read + typing, then the reply");
    for request in &meta_requests {
        assert_eq!(request.path, format!("/v26.0/{PHONE_NUMBER_ID}/messages"));
        assert_eq!(
            request.header("authorization"),
            Some("Bearer meta-token-for-tests")
        );
    }
    let typing = meta_requests[0].json();
    assert_eq!(typing["status"], "read");
    assert_eq!(
        typing["message_id"],
        "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZBRTQ0QzE5NTM2RTY4QTM3MAA="
    );
    assert_eq!(typing["typing_indicator"]["type"], "text");
    let reply = meta_requests[1].json();
    assert_eq!(reply["messaging_product"], "whatsapp");
    assert_eq!(reply["to"], USER);
    assert_eq!(reply["type"], "text");
    assert_eq!(
        reply["text"]["body"],
        "You said: Olá! What can you do for me?"
    );
}

/// One stack, two business numbers: every Graph call made for the second number (read and
/// typing, media, the reply) carries that number's own token, the first number's the default.
#[tokio::test]
async fn each_number_is_answered_with_its_own_access_token() {
    let h = Harness::with_llm("openai", &[], |request: &RecordedRequest| {
        if request.path.ends_with("/audio/transcriptions") {
            Canned::json(200, json!({"text": "Are you open?"}))
        } else {
            openai_answer(request)
        }
    })
    .await;
    let voice = content_record(
        "s2",
        USER,
        &unique("b-voice"),
        json!({"type": "media", "kind": "audio", "media_id": "voice-1",
               "mime_type": "audio/ogg; codecs=opus", "voice": true}),
        1,
    );
    let response = h
        .handle(&event(vec![
            to_number(
                record("s1", USER, &unique("b"), "Hi B", 1),
                SECOND_PHONE_NUMBER_ID,
            ),
            to_number(voice, SECOND_PHONE_NUMBER_ID),
            record("s3", "15557654321", &unique("a"), "Hi A", 1),
        ]))
        .await;
    assert!(failures(&response).is_empty(), "{response:?}");
    let calls: Vec<(String, Option<String>)> = h
        .meta
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.header("authorization").map(str::to_owned)))
        .collect();
    let second = format!("Bearer {SECOND_NUMBER_TOKEN}");
    let default = "Bearer meta-token-for-tests".to_owned();
    let to_second: Vec<_> = calls
        .iter()
        .filter(|(_, token)| token.as_ref() == Some(&second))
        .collect();
    let to_first: Vec<_> = calls
        .iter()
        .filter(|(_, token)| token.as_ref() == Some(&default))
        .collect();
    assert_eq!(to_second.len() + to_first.len(), calls.len(), "{calls:?}");
    let messages_path = |number: &str| format!("/v26.0/{number}/messages");
    assert_eq!(
        to_second
            .iter()
            .filter(|(path, _)| *path == messages_path(SECOND_PHONE_NUMBER_ID))
            .count(),
        2,
        "B's read and typing, then B's reply: {calls:?}"
    );
    assert!(
        to_second.iter().any(|(path, _)| path.contains("voice-1")),
        "B's voice note is downloaded with B's token: {calls:?}"
    );
    assert_eq!(
        to_first,
        vec![&(messages_path(PHONE_NUMBER_ID), Some(default.clone())); 2],
        "A's read and typing, then A's reply: {calls:?}"
    );
}

#[tokio::test]
async fn gemini_gets_its_native_request_and_its_answer_is_sent() {
    let h = Harness::new("gemini", &[]).await;
    h.handle(&event(vec![record(
        "s1",
        USER,
        &unique("g1"),
        "My name is Ana",
        1,
    )]))
    .await;
    h.handle(&event(vec![record(
        "s2",
        USER,
        &unique("g2"),
        "What is my name?",
        1,
    )]))
    .await;

    let requests = h.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].path,
        "/v1beta/models/gemini-test:generateContent"
    );
    assert_eq!(
        requests[1].header("x-goog-api-key"),
        Some("llm-key-for-tests")
    );
    assert_eq!(requests[1].header("authorization"), None);
    let body = requests[1].json();
    assert_eq!(
        body["systemInstruction"]["parts"][0]["text"],
        "You are a test assistant."
    );
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "My name is Ana"}]},
               {"role": "model", "parts": [{"text": "Gemini heard: My name is Ana"}]},
               {"role": "user", "parts": [{"text": "What is my name?"}]}])
    );
    assert_eq!(
        h.sent_texts(),
        [
            "Gemini heard: My name is Ana",
            "Gemini heard: What is my name?"
        ]
    );
}

#[tokio::test]
async fn the_second_turn_carries_the_history() {
    let h = Harness::new("openai", &[]).await;
    h.handle(&event(vec![record(
        "s1",
        USER,
        &unique("h1"),
        "I live in Porto",
        1,
    )]))
    .await;
    h.handle(&event(vec![record(
        "s2",
        USER,
        &unique("h2"),
        "Where do I live?",
        1,
    )]))
    .await;
    let second = h.llm.requests()[1].json();
    let roles_and_texts: Vec<(String, String)> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles_and_texts,
        [
            ("system".into(), "You are a test assistant.".into()),
            ("user".into(), "I live in Porto".into()),
            ("assistant".into(), "You said: I live in Porto".into()),
            ("user".into(), "Where do I live?".into()),
        ]
    );
}

#[tokio::test]
async fn redeliveries_re_enqueued_ids_and_racing_invocations_each_give_one_reply() {
    let h = Harness::new("openai", &[]).await;
    let id = unique("dup");
    let first = event(vec![record("s1", USER, &id, "hello once", 1)]);
    h.handle(&first).await;
    // The same SQS record again, then the same Meta id re-enqueued later as a new record.
    assert!(failures(&h.handle(&first).await).is_empty());
    assert!(
        failures(
            &h.handle(&event(vec![record("s9", USER, &id, "hello once", 1)]))
                .await
        )
        .is_empty()
    );
    assert_eq!(h.llm.requests().len(), 1);
    assert_eq!(h.sent_texts(), ["You said: hello once"]);

    // Two invocations racing on one new id: one answers, the other backs off.
    let raced = event(vec![record(
        "r1",
        USER,
        &unique("race"),
        "only one answer",
        1,
    )]);
    let (a, b) = tokio::join!(h.handle(&raced), h.handle(&raced));
    assert_eq!(h.llm.requests().len(), 2);
    assert_eq!(h.sent_texts().len(), 2);
    assert_eq!(
        failures(&a).len() + failures(&b).len(),
        1,
        "the loser's record is retried later"
    );
    // Its retry finds the message done.
    assert!(failures(&h.handle(&raced).await).is_empty());
    assert_eq!(h.sent_texts().len(), 2);
}

#[tokio::test]
async fn a_burst_of_three_is_one_llm_call_one_reply_and_two_dynamodb_round_trips() {
    let h = Harness::new("openai", &[]).await;
    let burst: SqsEvent = sent_now(
        serde_json::from_str(include_str!("../../../events/processor/burst.json")).unwrap(),
    );
    // The number's settings are read at most once a minute per container, by an earlier
    // message (here another user's): the burst's own cost follows.
    let warm = record("w", "15550009999", &unique("warm"), "hello", 1);
    assert!(failures(&h.handle(&event(vec![warm])).await).is_empty());
    let before = h.dynamodb_calls.round_trips();
    let response = h.handle(&burst).await;
    assert!(failures(&response).is_empty());
    assert_eq!(
        h.dynamodb_calls.round_trips() - before,
        2,
        "claims + read, then the exchange + done marks"
    );
    assert_eq!(h.llm.requests().len(), 2);
    let last = h.llm.requests()[1].json()["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["content"],
        "Hi\nI'm planning a trip to Lisbon\nWhat should I see in two days?"
    );
    assert_eq!(h.sent_texts().len(), 2);
}

#[tokio::test]
async fn llm_500_500_200_gives_one_reply() {
    let h = Harness::new("openai", &[]).await;
    let down = Canned::json(
        500,
        json!({"error": {"message": "internal", "type": "server_error"}}),
    );
    h.llm.script([down.clone(), down]);
    let response = h
        .handle(&event(vec![record(
            "s1",
            USER,
            &unique("r"),
            "still there?",
            1,
        )]))
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(h.llm.requests().len(), 3);
    assert_eq!(h.sent_texts(), ["You said: still there?"]);
}

#[tokio::test]
async fn llm_down_fails_the_record_and_the_last_receive_sends_the_fallback() {
    let h = Harness::new("openai", &[("MAX_RECEIVE_COUNT", "3")]).await;
    let down = Canned::json(503, json!({"error": {"message": "overloaded"}}));
    h.llm.script(std::iter::repeat_n(down, 8));
    let id = unique("down");
    let response = h
        .handle(&event(vec![record("s1", USER, &id, "anyone?", 1)]))
        .await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(h.sent_texts().is_empty());
    let response = h
        .handle(&event(vec![record("s1", USER, &id, "anyone?", 3)]))
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(h.sent_texts(), ["Sorry, I can't answer right now."]);
}

#[tokio::test]
async fn a_meta_rate_limit_is_retried_and_131047_is_not() {
    let h = Harness::new("openai", &[]).await;
    let rate_limited = Canned::json(
        400,
        json!({"error": {"message": "Rate limit hit", "type": "OAuthException", "code": 130429}}),
    );
    h.meta
        .script([Canned::json(200, json!({"success": true})), rate_limited]);
    let response = h
        .handle(&event(vec![record("s1", USER, &unique("rl"), "hi", 1)]))
        .await;
    assert!(failures(&response).is_empty());
    let sends: Vec<_> = h
        .meta
        .requests()
        .into_iter()
        .filter(|r| r.json()["type"] == "text")
        .collect();
    assert_eq!(sends.len(), 2, "one rate-limited attempt, one success");

    let outside = Canned::json(
        400,
        json!({"error": {"message": "Re-engagement message", "code": 131047,
        "error_data": {"details": "More than 24 hours have passed"}}}),
    );
    h.meta
        .script([Canned::json(200, json!({"success": true})), outside]);
    let id = unique("window");
    let response = h
        .handle(&event(vec![record("s2", USER, &id, "late", 1)]))
        .await;
    assert!(failures(&response).is_empty(), "131047 is final: no retry");
    let sends_after: Vec<_> = h
        .meta
        .requests()
        .into_iter()
        .filter(|r| r.json()["type"] == "text")
        .collect();
    assert_eq!(sends_after.len(), 3, "exactly one attempt for the 131047");
    // Marked done: a redelivery does nothing.
    h.handle(&event(vec![record("s2", USER, &id, "late", 2)]))
        .await;
    assert_eq!(h.llm.requests().len(), 2);
}

#[tokio::test]
async fn a_5000_character_answer_becomes_two_messages_in_order() {
    let h = Harness::new("openai", &[]).await;
    let long = format!(
        "{}\n\n{}",
        "First part. ".repeat(250).trim_end(),
        "Second part. ".repeat(150).trim_end()
    );
    assert!(long.chars().count() > 4096 && long.chars().count() < 8192);
    h.llm.script([Canned::json(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": long}}]}),
    )]);
    h.handle(&event(vec![record(
        "s1",
        USER,
        &unique("long"),
        "tell me everything",
        1,
    )]))
    .await;
    let sent = h.sent_texts();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[0].starts_with("First part.") && sent[1].starts_with("Second part."),
        "{sent:?}"
    );
    assert!(sent.iter().all(|s| s.chars().count() <= 4096));
}

#[tokio::test]
async fn history_is_bounded_carries_the_ttl_and_expired_history_is_ignored() {
    let h = Harness::new(
        "openai",
        &[("HISTORY_MAX_MESSAGES", "4"), ("CONTEXT_TTL_DAYS", "2")],
    )
    .await;
    let ids: Vec<String> = (0..3).map(|n| unique(&format!("b{n}"))).collect();
    for (n, id) in ids.iter().enumerate() {
        h.handle(&event(vec![record(
            &format!("s{n}"),
            USER,
            id,
            &format!("message {n}"),
            1,
        )]))
        .await;
    }
    let exchanges = h.exchanges(USER).await;
    let turns = h.turns(USER).await;
    assert_eq!(turns.len(), 4, "bounded to HISTORY_MAX_MESSAGES");
    assert_eq!(turns[0]["t"].as_s().unwrap(), "message 1");
    let now = (rand_suffix() / 1_000_000_000) as i64;
    // Turns last CONTEXT_TTL_DAYS (2); message ids Meta's 7 days of redelivery and a day.
    for (expires_at, _) in &exchanges {
        assert!(
            (expires_at - (now + 2 * 86_400)).abs() < 120,
            "the turns expire 2 days from now: {expires_at}"
        );
    }
    let claim = h.claim_item(&ids[2]).await;
    let claim_expiry: i64 = claim["expires_at"].as_n().unwrap().parse().unwrap();
    assert!(
        (claim_expiry - (now + 8 * 86_400)).abs() < 120,
        "the message id is remembered 8 days: {claim_expiry}"
    );

    // A conversation whose turns are older than the TTL (DynamoDB has not deleted it yet).
    let old = now - 3 * 86_400;
    let stale_turn = |role: &str, text: &str| {
        AttributeValue::M(HashMap::from([
            ("r".to_owned(), AttributeValue::S(role.into())),
            ("t".to_owned(), AttributeValue::S(text.into())),
            ("at".to_owned(), AttributeValue::N(old.to_string())),
        ]))
    };
    h.dynamodb
        .put_item()
        .table_name(&h.table)
        .item(
            "pk",
            AttributeValue::S(format!("conv#{PHONE_NUMBER_ID}:15550009999")),
        )
        .item(
            "turns",
            AttributeValue::L(vec![
                stale_turn("user", "secret from long ago"),
                stale_turn("assistant", "noted"),
            ]),
        )
        .item(
            "expires_at",
            AttributeValue::N((old + 2 * 86_400).to_string()),
        )
        .send()
        .await
        .unwrap();
    h.handle(&event(vec![record(
        "x1",
        "15550009999",
        &unique("fresh"),
        "hello again",
        1,
    )]))
    .await;
    let last = h.llm.requests().last().unwrap().json();
    assert_eq!(
        last["messages"].as_array().unwrap().len(),
        2,
        "system + the new message only: {last}"
    );
}

#[tokio::test]
async fn two_users_interleaved_keep_their_order_and_one_failure_does_not_fail_the_other() {
    // Ana's LLM call fails, not retried within the invocation but through the queue (a refused
    // key, 401: a 400 is now final and answered with the fallback); Bo's succeeds. Both run in
    // one batch.
    let h = Harness::with_llm("openai", &[], |request: &RecordedRequest| {
        if String::from_utf8_lossy(&request.body).contains("please fail") {
            Canned::json(401, json!({"error": {"message": "invalid key"}}))
        } else {
            openai_answer(request)
        }
    })
    .await;
    let (ana, bo) = ("15550001111", "15550002222");
    let batch = event(vec![
        record("a1", ana, &unique("a1"), "please fail", 1),
        record("b1", bo, &unique("b1"), "bo first", 1),
        record("a2", ana, &unique("a2"), "ana second", 1),
        record("b2", bo, &unique("b2"), "bo second", 1),
    ]);
    let response = h.handle(&batch).await;
    assert_eq!(
        failures(&response),
        ["a1", "a2"],
        "Ana's records fail together, in order; Bo's do not"
    );
    let sends: Vec<Value> = h
        .meta
        .requests()
        .iter()
        .map(RecordedRequest::json)
        .filter(|b| b["type"] == "text")
        .collect();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["to"], bo);
    assert_eq!(sends[0]["text"]["body"], "You said: bo first\nbo second");
}

/// How many Graph API requests sent a reply (refused ones included).
fn reply_sends(h: &Harness) -> usize {
    h.meta
        .requests()
        .into_iter()
        .filter(|r| r.json()["type"] == "text")
        .count()
}

#[tokio::test]
async fn a_prompt_too_long_is_sent_again_at_once_with_a_shorter_history_and_answered() {
    let h = Harness::new("openai", &[]).await;
    for (i, text) in ["one", "two"].into_iter().enumerate() {
        h.handle(&event(vec![record(
            &format!("s{i}"),
            USER,
            &unique("c"),
            text,
            1,
        )]))
        .await;
    }
    h.llm.script([Canned::json(
        400,
        json!({"error": {"message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error", "code": "context_length_exceeded"}}),
    )]);
    let response = h
        .handle(&event(vec![record("s9", USER, &unique("c"), "three", 1)]))
        .await;
    assert!(failures(&response).is_empty());
    let requests = h.llm.requests();
    assert_eq!(
        requests.len(),
        4,
        "two answers, then the refusal and one retry"
    );
    let count = |r: &RecordedRequest| r.json()["messages"].as_array().map_or(0, Vec::len);
    assert_eq!(
        count(&requests[2]),
        6,
        "system + 4 history turns + the user's"
    );
    assert_eq!(
        requests[3].json()["messages"],
        json!([{"role": "system", "content": "You are a test assistant."},
               {"role": "user", "content": "two"},
               {"role": "assistant", "content": "You said: two"},
               {"role": "user", "content": "three"}])
    );
    assert_eq!(
        h.sent_texts().last().map(String::as_str),
        Some("You said: three")
    );
}

#[tokio::test]
async fn an_unknown_model_sends_the_fallback_on_the_first_receive_without_a_queue_retry() {
    let h = Harness::new("gemini", &[]).await;
    h.llm.script([Canned::json(
        404,
        json!({"error": {"code": 404, "status": "NOT_FOUND",
            "message": "models/gemini-test is not found for API version v1beta"}}),
    )]);
    let response = h
        .handle(&event(vec![record("s1", USER, &unique("m"), "hello?", 1)]))
        .await;
    assert!(failures(&response).is_empty(), "no SQS retry");
    assert_eq!(h.llm.requests().len(), 1, "a 404 is not retried");
    assert_eq!(h.sent_texts(), ["Sorry, I can't answer right now."]);
    let item = h.conversation_item(USER).await;
    assert!(
        !format!("{item:?}").contains("hello?"),
        "the refused turn is not remembered: {item:?}"
    );
}

#[tokio::test]
async fn a_message_meta_refuses_with_131051_is_done_and_the_next_one_is_answered() {
    let h = Harness::new("openai", &[]).await;
    h.meta.script([
        Canned::json(200, json!({"success": true})),
        Canned::json(
            400,
            json!({"error": {"message": "Unsupported message type", "code": 131051}}),
        ),
    ]);
    let id = unique("u");
    let response = h
        .handle(&event(vec![record("s1", USER, &id, "hi", 1)]))
        .await;
    assert!(failures(&response).is_empty(), "131051 is final");
    assert_eq!(reply_sends(&h), 1);
    h.handle(&event(vec![record("s1", USER, &id, "hi", 2)]))
        .await;
    assert_eq!(h.llm.requests().len(), 1, "marked done: not answered again");
    let response = h
        .handle(&event(vec![record("s2", USER, &unique("u"), "again", 1)]))
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(
        h.sent_texts().last().map(String::as_str),
        Some("You said: hi\n\nagain")
    );
    assert_eq!(reply_sends(&h), 2, "the refused send, then the answer");
}

#[tokio::test]
async fn a_retry_after_of_u64_max_from_the_llm_or_meta_ends_the_retries_without_panicking() {
    const HUGE: &str = "18446744073709551615";
    let h = Harness::new("openai", &[]).await;
    h.llm.script([
        Canned::json(503, json!({"error": {"message": "overloaded"}}))
            .with_header("retry-after", HUGE),
    ]);
    let response = h
        .handle(&event(vec![record("s1", USER, &unique("h"), "hi", 1)]))
        .await;
    assert_eq!(failures(&response), ["s1"], "retried through the queue");
    assert_eq!(
        h.llm.requests().len(),
        1,
        "no wait for a retry past the deadline"
    );

    h.meta.script([
        Canned::json(200, json!({"success": true})),
        Canned::json(
            429,
            json!({"error": {"message": "Rate limit hit", "code": 130429}}),
        )
        .with_header("retry-after", HUGE),
    ]);
    let response = h
        .handle(&event(vec![record("s2", USER, &unique("h"), "hi", 1)]))
        .await;
    assert_eq!(failures(&response), ["s2"], "retried through the queue");
    assert_eq!(reply_sends(&h), 1, "no wait for a retry past the deadline");
}

#[tokio::test]
async fn a_failed_send_is_retried_with_the_same_answer_and_one_llm_request() {
    let h = Harness::new("openai", &[]).await;
    let down = Canned::json(500, json!({"error": {"message": "internal"}}));
    // Read + typing, then every attempt of the send fails.
    h.meta.script([
        Canned::json(200, json!({"success": true})),
        down.clone(),
        down.clone(),
        down.clone(),
        down,
    ]);
    let id = unique("once");
    let response = h
        .handle(&event(vec![record("s1", USER, &id, "hello once", 1)]))
        .await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(h.claim_item(&id).await.contains_key("pending_answer"));

    // The LLM stand-in would answer again; the retry must send the kept answer instead.
    let response = h
        .handle(&event(vec![record("s1", USER, &id, "hello once", 2)]))
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(h.llm.requests().len(), 1);
    let delivered: Vec<String> = h
        .meta
        .requests()
        .iter()
        .map(RecordedRequest::json)
        .filter(|body| body["type"] == "text")
        .map(|body| body["text"]["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        delivered.len(),
        5,
        "four failed attempts, then the retry's send"
    );
    assert!(
        delivered.iter().all(|text| text == "You said: hello once"),
        "{delivered:?}"
    );
    let item = h.claim_item(&id).await;
    assert!(
        !item.contains_key("pending_answer"),
        "cleared when completed"
    );
}

#[tokio::test]
async fn a_send_that_times_out_after_meta_received_it_is_not_resent() {
    let h = Harness::new("openai", &[]).await;
    // Meta takes the send but answers too late: the invocation's send budget runs out first.
    h.meta.script([
        Canned::json(200, json!({"success": true})),
        meta_answer_for_send().after(std::time::Duration::from_secs(30)),
    ]);
    let id = unique("late");
    let batch = event(vec![record("s1", USER, &id, "are you there?", 1)]);
    // 7 s: the LLM gets one second, the send runs until 2 s before the deadline.
    let remaining = std::time::Duration::from_secs(7);
    let response = h.handle_within(&batch, remaining).await;
    assert!(failures(&response).is_empty(), "marked done, not retried");
    assert_eq!(h.sent_texts(), ["You said: are you there?"], "one attempt");

    let redelivered = event(vec![record("s1", USER, &id, "are you there?", 2)]);
    let response = h.handle(&redelivered).await;
    assert!(failures(&response).is_empty());
    assert_eq!(h.sent_texts().len(), 1, "the user got one answer");
    assert_eq!(h.llm.requests().len(), 1);
    assert_eq!(
        h.turns(USER).await.len(),
        2,
        "the turn is remembered as sent"
    );
}

/// What Meta answers to a sent text.
fn meta_answer_for_send() -> Canned {
    Canned::json(
        200,
        json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.late"}]}),
    )
}

#[tokio::test]
async fn an_unreadable_record_fails_alone_and_the_conversation_goes_on() {
    let h = Harness::new("openai", &[]).await;
    let user = format!("1555{}", rand_suffix() % 1_000_000);
    let mut newer = record("s1", &user, &unique("newer"), "from a newer webhook", 1);
    newer.body = newer.body.map(|b| b.replace("\"v\":1", "\"v\":2"));
    let mut stray = record("s2", &user, &unique("stray"), "not this chat's", 1);
    stray.attributes.insert(
        "MessageGroupId".to_owned(),
        format!("{PHONE_NUMBER_ID}:15550000000"),
    );
    let batch = event(vec![
        newer,
        stray,
        record("s3", &user, &unique("later"), "still there?", 1),
    ]);
    let response = h.handle(&batch).await;
    assert_eq!(failures(&response), ["s1", "s2"]);
    let sends: Vec<Value> = h
        .meta
        .requests()
        .iter()
        .map(RecordedRequest::json)
        .filter(|b| b["type"] == "text")
        .collect();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["to"], user.as_str());
    assert_eq!(sends[0]["text"]["body"], "You said: still there?");
}

#[tokio::test]
async fn a_message_older_than_max_message_age_is_marked_done_without_an_llm_call() {
    let h = Harness::new("openai", &[("MAX_MESSAGE_AGE_HOURS", "24")]).await;
    let user = format!("1556{}", rand_suffix() % 1_000_000);
    let id = unique("replayed");
    let mut old = record("s1", &user, &id, "sent during the outage", 1);
    old.body = old.body.map(|b| {
        let mut body: Value = serde_json::from_str(&b).unwrap();
        body["timestamp"] = (shared::clock::now_epoch_seconds() - 25 * 3600).into();
        body.to_string()
    });
    let batch = event(vec![old]);
    assert!(failures(&h.handle(&batch).await).is_empty());
    assert!(h.llm.requests().is_empty());
    assert!(h.meta.requests().is_empty(), "not even read + typing");
    let claim = h.claim_item(&id).await;
    assert_eq!(claim["s"].as_s().unwrap(), "d", "marked done");
    assert!(h.turns(&user).await.is_empty());
    assert!(failures(&h.handle(&batch).await).is_empty());
    assert!(h.llm.requests().is_empty() && h.meta.requests().is_empty());
}

#[tokio::test]
async fn a_voice_note_is_downloaded_transcribed_and_answered_with_the_text_after_it() {
    // The LLM stand-in speaks OpenAI's API, transcriptions included (TRANSCRIPTION_BASE_URL
    // defaults to LLM_BASE_URL).
    let h = Harness::with_llm("openai", &[], |request: &RecordedRequest| {
        if request.path.ends_with("/audio/transcriptions") {
            Canned::json(200, json!({"text": "Do you open on Sundays?"}))
        } else {
            openai_answer(request)
        }
    })
    .await;
    let mut voice = record("s1", USER, &unique("voice"), "", 1);
    voice.body = voice.body.map(|b| {
        let mut body: Value = serde_json::from_str(&b).unwrap();
        body["content"] = json!({"type": "media", "kind": "audio", "media_id": "1037543291543636",
            "mime_type": "audio/ogg; codecs=opus", "voice": true});
        body.to_string()
    });
    let text = record("s2", USER, &unique("after"), "and on holidays?", 1);
    let response = h.handle(&event(vec![voice, text])).await;
    assert!(failures(&response).is_empty(), "{response:?}");

    let media: Vec<RecordedRequest> = h
        .meta
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(media.len(), 2, "the media id's details, then the file");
    assert!(
        media[0].path.ends_with("/1037543291543636"),
        "{}",
        media[0].path
    );
    assert!(media[1].path.starts_with("/lookaside/"));
    let transcription = h.llm.requests_to("/audio/transcriptions");
    assert_eq!(transcription.len(), 1);
    let form = String::from_utf8_lossy(&transcription[0].body);
    assert!(form.contains(r#"filename="voice-note.ogg""#), "{form}");
    assert!(
        form.contains("stand-in voice note"),
        "the downloaded bytes are sent"
    );
    assert_eq!(
        transcription[0].header("authorization"),
        Some("Bearer llm-key-for-tests")
    );
    let chats = h.llm.requests_to("/chat/completions");
    assert_eq!(chats.len(), 1, "one LLM call for the burst");
    let last = chats[0].json()["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["content"],
        "[voice note] Do you open on Sundays?\nand on holidays?"
    );
    assert_eq!(
        h.sent_texts(),
        ["You said: [voice note] Do you open on Sundays?\nand on holidays?"]
    );
}

#[tokio::test]
async fn a_photo_goes_to_the_model_as_a_data_url_with_its_caption() {
    let h = Harness::new("openai", &[]).await;
    let mut photo = record("s1", USER, &unique("photo"), "", 1);
    photo.body = photo.body.map(|b| {
        let mut body: Value = serde_json::from_str(&b).unwrap();
        body["content"] = json!({"type": "media", "kind": "image", "media_id": "img-9",
            "mime_type": "image/jpeg", "caption": "is this ripe?"});
        body.to_string()
    });
    let response = h.handle(&event(vec![photo])).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    let chats = h.llm.requests_to("/chat/completions");
    assert_eq!(chats.len(), 1);
    let last = chats[0].json()["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["content"][0],
        json!({"type": "text", "text": "[image] is this ripe?"})
    );
    let url = last["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(PHOTO_BYTES);
    assert_eq!(url, format!("data:image/jpeg;base64,{expected}"));
    let stored = h.turns(USER).await;
    assert_eq!(
        stored[0]["t"].as_s().unwrap(),
        "[image] is this ripe?",
        "no bytes stored"
    );
}

/// A burst of everything a user sends besides text: a voice note, a captioned photo, a PDF, a
/// location, then a question about them all.
fn mixed_burst(user: &str) -> SqsEvent {
    let contents = [
        json!({"type": "media", "kind": "audio", "media_id": "voice-1",
            "mime_type": "audio/ogg; codecs=opus", "voice": true}),
        json!({"type": "media", "kind": "image", "media_id": "img-2",
            "mime_type": "image/jpeg", "caption": "and this one?"}),
        json!({"type": "media", "kind": "document", "media_id": "pdf-3",
            "mime_type": "application/pdf", "filename": "menu.pdf"}),
        json!({"type": "location", "latitude": 38.7223, "longitude": -9.1393,
            "name": "Cais do Sodré"}),
        json!({"type": "text", "body": "which is cheaper?"}),
    ];
    let records = contents
        .into_iter()
        .enumerate()
        .map(|(n, content)| {
            content_record(
                &format!("s{n}"),
                user,
                &unique(&format!("mix{n}")),
                content,
                1,
            )
        })
        .collect();
    event(records)
}

/// The lines of the burst's user turn, as the model got them (`text`), and as the memory keeps
/// them.
fn assert_mixed_turn(text: &str, voice_note: &str, h_turn: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], voice_note, "{text}");
    assert_eq!(lines[1], "[image] and this one?");
    assert_eq!(lines[2], "[document menu.pdf]");
    assert!(
        lines[3].contains("Cais do Sodré") && lines[3].contains("38.7223"),
        "{text}"
    );
    assert_eq!(lines[4], "which is cheaper?");
    assert_eq!(h_turn, text, "the memory keeps the text, never the bytes");
}

#[tokio::test]
async fn gemini_hears_sees_and_reads_a_mixed_burst_in_one_call() {
    let h = Harness::new("gemini", &[]).await;
    let response = h.handle(&mixed_burst(USER)).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert!(
        h.llm.requests_to("/audio/transcriptions").is_empty(),
        "Gemini hears the voice note itself"
    );
    let calls = h.llm.requests();
    assert_eq!(calls.len(), 1, "one LLM call for the burst");
    let body = calls[0].json();
    let parts = body["contents"].as_array().unwrap().last().unwrap()["parts"].clone();
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let inline: Vec<Value> = parts.as_array().unwrap()[1..].to_vec();
    assert_eq!(
        inline,
        [
            json!({"inline_data": {"mime_type": "audio/ogg", "data": b64(VOICE_NOTE_BYTES)}}),
            json!({"inline_data": {"mime_type": "image/jpeg", "data": b64(PHOTO_BYTES)}}),
            json!({"inline_data": {"mime_type": "application/pdf", "data": b64(PDF_BYTES)}}),
        ]
    );
    let text = parts[0]["text"].as_str().unwrap();
    let stored = h.turns(USER).await;
    assert_mixed_turn(text, "[voice note]", stored[0]["t"].as_s().unwrap());
    assert_eq!(h.sent_texts().len(), 1, "one answer");
}

#[tokio::test]
async fn openai_gets_a_mixed_burst_as_a_transcript_a_data_url_and_a_file_in_one_call() {
    let h = Harness::with_llm("openai", &[], |request: &RecordedRequest| {
        if request.path.ends_with("/audio/transcriptions") {
            Canned::json(200, json!({"text": "Is the fish fresh?"}))
        } else {
            openai_answer(request)
        }
    })
    .await;
    let response = h.handle(&mixed_burst(USER)).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(h.llm.requests_to("/audio/transcriptions").len(), 1);
    let chats = h.llm.requests_to("/chat/completions");
    assert_eq!(chats.len(), 1, "one LLM call for the burst");
    let messages = chats[0].json()["messages"].clone();
    let parts = messages.as_array().unwrap().last().unwrap()["content"].clone();
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/jpeg;base64,{}", b64(PHOTO_BYTES))
    );
    assert_eq!(parts[2]["type"], "file");
    assert_eq!(
        parts[2]["file"]["file_data"],
        format!("data:application/pdf;base64,{}", b64(PDF_BYTES))
    );
    assert_eq!(
        parts.as_array().unwrap().len(),
        3,
        "no audio part: it was transcribed"
    );
    let text = parts[0]["text"].as_str().unwrap();
    let stored = h.turns(USER).await;
    let voice_note = "[voice note] Is the fish fresh?";
    assert_mixed_turn(text, voice_note, stored[0]["t"].as_s().unwrap());
}

#[tokio::test]
async fn the_answer_is_grounded_in_the_knowledge_document_in_s3_with_each_provider() {
    let aws = testkit::moto_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("kb-{}", rand_suffix());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let faq = "# Tienda Sol FAQ\n\nShipping: free over 50 EUR, 2-3 days.\n\nReturns: 30 days.";
    s3.put_object()
        .bucket(&bucket)
        .key("faq.md")
        .body(faq.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let uri = format!("s3://{bucket}/faq.md");
    for provider in ["openai", "gemini"] {
        let h = Harness::new(provider, &[("KNOWLEDGE_URI", uri.as_str())]).await;
        for (n, text) in ["How much is shipping?", "And returns?"].iter().enumerate() {
            let id = unique(&format!("kb{n}"));
            let response = h
                .handle(&event(vec![record("s", USER, &id, text, 1)]))
                .await;
            assert!(failures(&response).is_empty(), "{provider}: {response:?}");
        }
        let requests = h.llm.requests();
        assert_eq!(requests.len(), 2, "{provider}");
        for request in &requests {
            let body = request.json();
            let system = if provider == "gemini" {
                body["systemInstruction"]["parts"][0]["text"].clone()
            } else {
                body["messages"][0]["content"].clone()
            };
            let system = system.as_str().unwrap();
            assert!(
                system.starts_with("You are a test assistant.\n\n")
                    && system.ends_with(&format!("<knowledge>\n{faq}\n</knowledge>")),
                "{provider}: the persona, then the knowledge: {system}"
            );
        }
        assert_eq!(
            requests[0].json()["messages"][0],
            requests[1].json()["messages"][0],
            "{provider}: the same prefix each time, so that the provider's cache applies"
        );
    }
}
