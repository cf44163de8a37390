//! The local stack's example end to end: the real binaries, moto, the offline LLM stand-in, the
//! example's FAQ as the processor's knowledge and its tools file pointed at the shop stand-in.
//! A question about order A-1001 makes the stand-in model call `order_status`, the processor
//! calls the shop once with the secret's API key, the answer carries the order's status, and
//! the simulator shows the call in that user's conversation; a question the FAQ covers is
//! answered from the FAQ, which reached the system prompt. The same through Bedrock's Converse
//! (its offline stand-in, without AWS credentials).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use local_stack::local::bedrock::BedrockMode;
use local_stack::local::shop::Example;
use local_stack::local::{Event, LlmMode, LocalStack, Options};
use local_stack::runtime::binaries_dir;

const USER: &str = "15550002222";

/// The local stack with the shop example and the offline stand-in `llm`, against the moto
/// server of `tests/with-moto.sh`.
async fn start(llm: LlmMode) -> LocalStack {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("run under tests/with-moto.sh (make test)");
    let binaries = binaries_dir();
    for function in ["webhook", "processor", "alerter"] {
        assert!(
            binaries.join(function).is_file(),
            "{function} is not built in {}: run `cargo build --workspace --bins` (make test does)",
            binaries.display()
        );
    }
    let name = testkit::unique_name("tools");
    LocalStack::start(Options {
        aws_endpoint: Some(endpoint),
        moto_server: "moto_server".into(),
        moto_port: 0,
        http_port: 0,
        log_dir: binaries.join("local-stack-logs").join(&name),
        binaries,
        stack_name: name,
        llm,
        example: Example::Shop,
    })
    .await
    .unwrap()
}

/// Sends `text` as [`USER`] and returns the events up to the reply to it.
async fn ask(stack: &LocalStack, text: &str) -> Vec<Event> {
    let since = stack.events_since(0).last().map_or(0, |e| e.seq);
    assert_eq!(stack.send(USER, "Ana", text).await, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        let events = stack.events_since(since);
        let replied = events
            .iter()
            .any(|e| e.kind == "reply" && e.user.as_deref() == Some(USER));
        if replied {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no reply to {text:?}: {:?}", stack.events_since(since));
}

fn reply(events: &[Event]) -> String {
    let reply = events.iter().find(|e| e.kind == "reply").unwrap();
    reply.data["text"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_is_looked_up_once_through_the_shop_and_the_faq_answers_a_question() {
    let stack = start(LlmMode::StandIn).await;

    let events = ask(&stack, "Hi! Where is my order A-1001?").await;
    let answer = reply(&events);
    assert!(
        answer.starts_with("[offline stand-in] order_status answered: ")
            && answer.contains(r#""order_id":"A-1001""#)
            && answer.contains(r#""status":"shipped""#),
        "the answer carries the order's status: {answer}"
    );
    let calls = stack.shop_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(
        (call.tool, call.method.as_str(), call.path.as_str()),
        ("order_status", "GET", "/orders/A-1001")
    );
    assert!(call.api_key_ok, "the secret's SHOP_API_KEY was sent");
    assert_eq!((call.status, call.idempotency_key.as_deref()), (200, None));

    let tool = events
        .iter()
        .find(|e| e.kind == "tool")
        .expect("the simulator shows the tool call");
    assert_eq!(tool.user.as_deref(), Some(USER), "in Ana's conversation");
    assert_eq!(
        tool.data["text"],
        format!("🔧 order_status · 200 · {} ms", call.elapsed_ms)
    );
    let reply_seq = events.iter().find(|e| e.kind == "reply").unwrap().seq;
    assert!(tool.seq < reply_seq, "shown before the answer it led to");

    let events = ask(&stack, "How long do I have to return an item?").await;
    let answer = reply(&events);
    assert!(
        answer.contains(
            r#"From what I was given: "You may return any unused item in its original packaging within 30 days of delivery.""#
        ),
        "the FAQ reached the system prompt: {answer}"
    );
    assert!(events.iter().all(|e| e.kind != "tool"), "{events:?}");
    assert_eq!(stack.shop_calls().len(), 1, "no tool for a FAQ question");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_order_question_calls_the_shop_no_second_time() {
    let stack = start(LlmMode::StandIn).await;
    ask(&stack, "Status of A-1003, please").await;
    assert_eq!(stack.resend().await, Some(200));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls: Vec<(String, u16)> = stack
        .shop_calls()
        .into_iter()
        .map(|c| (c.path, c.status))
        .collect();
    assert_eq!(calls, [("/orders/A-1003".to_owned(), 200)]);
    let replies = stack
        .events_since(0)
        .into_iter()
        .filter(|e| e.kind == "reply")
        .count();
    assert_eq!(replies, 1, "a duplicate delivery gets no second reply");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_converse_an_order_is_looked_up_and_the_faq_answers_too() {
    let bedrock = BedrockMode::from_vars(|_| None, false);
    assert!(
        bedrock.credentials.is_none(),
        "the offline Converse stand-in"
    );
    let stack = start(LlmMode::Bedrock(bedrock)).await;

    let events = ask(&stack, "Has A-1003 arrived?").await;
    let answer = reply(&events);
    assert!(
        answer.starts_with("[offline stand-in] order_status answered: ")
            && answer.contains(r#""status":"delivered""#),
        "{answer}"
    );
    let calls = stack.shop_calls();
    let seen: Vec<(&str, &str, bool)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str(), c.api_key_ok))
        .collect();
    assert_eq!(seen, [("GET", "/orders/A-1003", true)]);
    assert!(
        events
            .iter()
            .any(|e| e.kind == "tool" && e.user.as_deref() == Some(USER))
    );

    let answer = reply(&ask(&stack, "Can I pay with PayPal?").await);
    assert!(
        answer.contains(
            r#"From what I was given: "We accept Visa, Mastercard, American Express, PayPal"#
        ),
        "{answer}"
    );
}
