//! Several business numbers, the human handoff and the opt-out, black-box: signed deliveries go
//! through the webhook's binary, what it queued through the processor's binary, both configured
//! as `template.yaml` configures them, against the template's resources in moto; the LLM and
//! Meta's Graph API are recording stand-ins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use aws_sdk_dynamodb::types::AttributeValue;
use local_stack::pipeline::{Endpoints, Pipeline, delivery_to, failed_ids, text};
use serde_json::{Value, json};
use shared::handoff::handoff_key;
use shared::inbound::ConversationKey;
use testkit::http_recorder;

const FIRST: &str = "106540352242922";
const CAFE: &str = "106540352242923";
const ANA: &str = "15551230001";
const AGENT: &str = "15559990000";

/// Writes `text` from `from` to the business number `to` through both binaries; asserts that
/// the webhook took it and the processor retried nothing.
async fn say(pipeline: &Pipeline, to: &str, from: &str, words: &str) {
    let id = testkit::unique_name("wamid.pipe");
    let contacts = json!([{"profile": {"name": "Ana"}, "wa_id": from}]);
    let body = delivery_to(to, contacts, json!([text(from, &id, words)]));
    assert_eq!(pipeline.deliver(&body).await, 200);
    let queued = pipeline.take_queued().await;
    assert_eq!(queued.len(), 1, "{words}");
    let answer = pipeline.process(&queued).await;
    assert!(failed_ids(&answer).is_empty(), "{words}: {answer}");
}

/// What the processor sent through which number: `(phone_number_id in the path, to, text)`.
fn sent(pipeline: &Pipeline) -> Vec<(String, String, String)> {
    pipeline
        .meta
        .requests()
        .iter()
        .filter(|r| r.json()["type"] == "text")
        .map(|r| {
            let body = r.json();
            let number = if r.path.contains(CAFE) { CAFE } else { FIRST };
            (
                number.to_owned(),
                body["to"].as_str().unwrap_or_default().to_owned(),
                body["text"]["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Writes `settings` as `phone_number_id`'s settings item, as `infra/numbers.sh put` does.
async fn put_settings(pipeline: &Pipeline, phone_number_id: &str, settings: &Value) {
    aws_sdk_dynamodb::Client::new(&pipeline.stack.aws)
        .put_item()
        .table_name(&pipeline.stack.resolver.refs["Table"])
        .item("pk", AttributeValue::S(format!("n#{phone_number_id}")))
        .item("settings", AttributeValue::S(settings.to_string()))
        .send()
        .await
        .unwrap();
}

fn system_prompt(request: &Value) -> String {
    request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn two_numbers_a_handoff_both_ways_and_an_opt_out_through_the_binaries() {
    let llm = http_recorder::openai_answering("Claro que sí.").await;
    let meta = http_recorder::graph_api("wamid.reply").await;
    let endpoints = Endpoints {
        processor_env: vec![("HANDOFF_AGENT_NUMBER", AGENT.to_owned())],
        ..Endpoints::default()
    };
    let pipeline = Pipeline::start("wa-numbers", llm, meta, endpoints).await;
    let settings = json!({"name": "Café Luna", "system_prompt": "Eres la barista de Café Luna.",
        "texts": {"handoff": "Te paso con Marta."}});
    put_settings(&pipeline, CAFE, &settings).await;

    // Each number answers in its own voice, from its own number.
    say(&pipeline, FIRST, ANA, "Hi").await;
    say(&pipeline, CAFE, ANA, "Hola").await;
    let requests = pipeline.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_ne!(
        system_prompt(&requests[0].json()),
        "Eres la barista de Café Luna."
    );
    assert_eq!(
        system_prompt(&requests[1].json()),
        "Eres la barista de Café Luna."
    );
    assert_eq!(sent(&pipeline)[1].0, CAFE);

    // Ana asks Café Luna for a person: the handoff text to her, one notice to the agent.
    say(&pipeline, CAFE, ANA, "Humano").await;
    let messages = sent(&pipeline);
    assert_eq!(messages.len(), 4, "{messages:?}");
    let (number, to, notice) = &messages[2];
    assert_eq!((number.as_str(), to.as_str()), (CAFE, AGENT));
    assert!(
        notice.contains("Ana") && notice.contains("Café Luna") && !notice.contains(ANA),
        "{notice}"
    );
    assert_eq!(
        messages[3],
        (CAFE.into(), ANA.into(), "Te paso con Marta.".into())
    );
    let start = notice.find('#').unwrap() + 1;
    let reference: String = notice[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();

    // While handed off: Ana's words go to the agent, the agent's to Ana, and no model is asked.
    say(&pipeline, CAFE, ANA, "¿Dónde está mi pedido?").await;
    say(
        &pipeline,
        CAFE,
        AGENT,
        &format!("#{reference} Sale hoy, perdona."),
    )
    .await;
    let messages = sent(&pipeline);
    assert_eq!(
        messages[4],
        (
            CAFE.into(),
            AGENT.into(),
            format!("#{reference} Ana: ¿Dónde está mi pedido?")
        )
    );
    assert_eq!(
        messages[5],
        (CAFE.into(), ANA.into(), "Sale hoy, perdona.".into())
    );
    assert_eq!(pipeline.llm.requests().len(), 2);

    // The agent gives the conversation back; the bot knows what was said.
    say(&pipeline, CAFE, AGENT, &format!("/bot #{reference}")).await;
    assert_eq!(
        sent(&pipeline)[6],
        (
            CAFE.into(),
            AGENT.into(),
            format!("#{reference} is back with the bot.")
        )
    );
    say(&pipeline, CAFE, ANA, "Gracias").await;
    let requests = pipeline.llm.requests();
    assert_eq!(requests.len(), 3);
    let prompt = requests[2].json()["messages"].to_string();
    assert!(
        prompt.contains("Sale hoy, perdona.") && prompt.contains("¿Dónde está mi pedido?"),
        "{prompt}"
    );
    let handoff = handoff_key(&ConversationKey::new(CAFE, ANA));
    assert!(
        pipeline.item(&handoff).await.is_none(),
        "the ended handoff is folded and forgotten"
    );

    // STOP, then silence without a model call, then START.
    say(&pipeline, CAFE, ANA, "STOP").await;
    say(&pipeline, CAFE, ANA, "¿Hola?").await;
    say(&pipeline, CAFE, ANA, "START").await;
    let messages = sent(&pipeline);
    assert_eq!(messages.len(), 10, "{messages:?}");
    assert!(
        messages[8].2.contains("START"),
        "the opt-out is confirmed: {:?}",
        messages[8]
    );
    assert_eq!(messages[9].1, ANA, "the opt-in is confirmed");
    assert_eq!(
        pipeline.llm.requests().len(),
        3,
        "no model call while opted out"
    );
}

#[tokio::test]
async fn a_numbers_kill_switch_reset_and_the_rate_limit_through_the_binaries() {
    let llm = http_recorder::openai_answering("Claro que sí.").await;
    let meta = http_recorder::graph_api("wamid.reply").await;
    let pipeline = Pipeline::start("wa-controls", llm, meta, Endpoints::default()).await;
    put_settings(
        &pipeline,
        CAFE,
        &json!({"texts": {"maintenance": "Cerrado por inventario."}}),
    )
    .await;

    // Café Luna's kill switch answers without the model; the other number is unaffected.
    say(&pipeline, CAFE, ANA, "Hola").await;
    assert_eq!(
        sent(&pipeline),
        [(CAFE.into(), ANA.into(), "Cerrado por inventario.".into())]
    );
    assert!(pipeline.llm.requests().is_empty());

    // /reset forgets: the next question reaches the model alone.
    say(&pipeline, FIRST, ANA, "My name is Ana").await;
    say(&pipeline, FIRST, ANA, "/reset").await;
    say(&pipeline, FIRST, ANA, "What is my name?").await;
    let requests = pipeline.llm.requests();
    assert_eq!(requests.len(), 2);
    let turns = requests[1].json()["messages"].as_array().unwrap().len();
    assert_eq!(turns, 2, "the persona and the new question only");

    // 15 messages in a minute (the template's RATE_LIMIT_PER_MINUTE is 10): ten answers and one
    // notice; a minute may turn during the loop, starting the count again.
    let bob = "15551230002";
    for n in 0..15 {
        say(&pipeline, FIRST, bob, &format!("message {n}")).await;
    }
    let answered = pipeline.llm.requests().len() - 2;
    let notices = sent(&pipeline)
        .iter()
        .filter(|(_, to, text)| to == bob && text.starts_with("You're sending messages faster"))
        .count();
    assert!(
        (answered, notices) == (10, 1) || (answered > 10 && notices <= 1),
        "{answered} answered, {notices} notices"
    );
}
