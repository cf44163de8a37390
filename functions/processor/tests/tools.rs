//! The processor as deployed (`processor::build`) with a tools file (`TOOLS_URI`), with each
//! provider: the model's tool calls reach a recording stand-in of the business API, their results
//! go back to the model, and the answer goes to the user, exactly once. DynamoDB and Secrets
//! Manager are moto's; the LLMs (Bedrock's signatures checked) and Meta are recording stand-ins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use std::time::Duration;

use common::{Harness, SHOP_API_KEY, USER, event, failures, openai_answer, record, unique};
use serde_json::{Value, json};
use testkit::bedrock::{ConverseStandIn, converse_error};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Gemini,
    Bedrock,
}

const PROVIDERS: [Provider; 3] = [Provider::OpenAi, Provider::Gemini, Provider::Bedrock];

impl Provider {
    /// The model's answer asking for one call of `name` with `args`.
    fn call(self, name: &str, args: Value) -> Canned {
        match self {
            Self::OpenAi => Canned::json(
                200,
                json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": format!("call_{name}"), "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}}]}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}}),
            ),
            Self::Gemini => Canned::json(
                200,
                json!({"candidates": [{"finishReason": "STOP", "content": {"role": "model", "parts": [
                    {"functionCall": {"name": name, "args": args}, "thoughtSignature": "c2lnLTE="}]}}],
                "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 9, "totalTokenCount": 59}}),
            ),
            Self::Bedrock => Canned::json(
                200,
                json!({"output": {"message": {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": format!("tooluse_{name}"), "name": name, "input": args}}]}},
                "stopReason": "tool_use", "usage": {"inputTokens": 50, "outputTokens": 9, "totalTokens": 59},
                "metrics": {"latencyMs": 5}}),
            ),
        }
    }

    /// The model's answer in text.
    fn text(self, text: &str) -> Canned {
        match self {
            Self::OpenAi => Canned::json(
                200,
                json!({"id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-test",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 80, "completion_tokens": 12, "total_tokens": 92}}),
            ),
            Self::Gemini => Canned::json(
                200,
                json!({"candidates": [{"finishReason": "STOP", "content": {"role": "model", "parts": [{"text": text}]}}],
                "usageMetadata": {"promptTokenCount": 80, "candidatesTokenCount": 12, "totalTokenCount": 92}}),
            ),
            Self::Bedrock => testkit::bedrock::converse_answer(text),
        }
    }

    /// An answer of a provider that is down for now (retried by the adapter, then by the queue).
    fn unavailable(self) -> Canned {
        match self {
            Self::Bedrock => converse_error(503, "ServiceUnavailableException", "try again"),
            _ => Canned::json(
                503,
                json!({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}),
            ),
        }
    }

    /// The names of the tools a request offered.
    fn offered(self, body: &Value) -> Vec<String> {
        let (list, pointer) = match self {
            Self::OpenAi => (&body["tools"], "/function/name"),
            Self::Gemini => (&body["tools"][0]["functionDeclarations"], "/name"),
            Self::Bedrock => (&body["toolConfig"]["tools"], "/toolSpec/name"),
        };
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|tool| tool.pointer(pointer)?.as_str().map(str::to_owned))
            .collect()
    }

    /// The tool results a request carried back to the model, as (content, is error), in order.
    fn results(self, body: &Value) -> Vec<(String, bool)> {
        match self {
            Self::OpenAi => messages(body, "messages")
                .filter(|m| m["role"] == "tool")
                .map(|m| {
                    let content = m["content"].as_str().unwrap_or_default().to_owned();
                    let parsed: Value = serde_json::from_str(&content).unwrap_or_default();
                    (content, parsed.get("error").is_some())
                })
                .collect(),
            Self::Gemini => messages(body, "contents")
                .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| {
                    let response = p.get("functionResponse")?["response"].clone();
                    Some((response.to_string(), response.get("error").is_some()))
                })
                .collect(),
            Self::Bedrock => messages(body, "messages")
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .filter_map(|block| {
                    let result = block.get("toolResult")?;
                    Some((result["content"].to_string(), result["status"] == "error"))
                })
                .collect(),
        }
    }
}

fn messages<'a>(body: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    body[key].as_array().into_iter().flatten()
}

/// The shop API's stand-in: `GET /orders/{id}` (A-17 shipped; BROKEN answers 500; SLOW answers
/// after 5 s), `POST /carts/{id}/items`; 401 without the shop's key.
fn shop_answer(request: &RecordedRequest) -> Canned {
    if request.header("x-api-key") != Some(SHOP_API_KEY) {
        return Canned::json(401, json!({"error": "unknown API key"}));
    }
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/orders/A-17") => Canned::json(
            200,
            json!({"order_id": "A-17", "status": "shipped", "eta": "2026-12-08"}),
        ),
        ("GET", "/orders/BROKEN") => Canned::json(500, json!({"error": "database down"})),
        ("GET", "/orders/SLOW") => {
            Canned::json(200, json!({"status": "late"})).after(Duration::from_secs(5))
        }
        ("POST", path) if path.starts_with("/carts/") => {
            Canned::json(201, json!({"cart_id": "C-9", "items": 1}))
        }
        _ => Canned::json(404, json!({"error": "not found"})),
    }
}

/// The tools file for the shop at `shop`.
fn tools_file(shop: &str) -> String {
    json!({"tools": [
        {"name": "order_status", "description": "The status of an order, by its id.",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[A-Z0-9-]{1,20}$"}},
            "required": ["order_id"], "additionalProperties": false},
         "method": "GET", "url": format!("{shop}/orders/{{order_id}}"),
         "headers": {"X-Api-Key": {"secret": "SHOP_API_KEY"}}, "side_effects": false, "timeout_seconds": 2},
        {"name": "add_to_cart", "description": "Puts a product in the customer's cart.",
         "parameters": {"type": "object", "properties": {"cart_id": {"type": "string"}, "product_id": {"type": "string"},
            "quantity": {"type": "integer", "minimum": 1}}, "required": ["cart_id", "product_id", "quantity"]},
         "method": "POST", "url": format!("{shop}/carts/{{cart_id}}/items"),
         "headers": {"X-Api-Key": {"secret": "SHOP_API_KEY"}}, "side_effects": true, "timeout_seconds": 5}
    ]})
    .to_string()
}

/// A processor with the shop's tools file, its model at a stand-in of `provider`.
struct Shop {
    h: Harness,
    bedrock: Option<ConverseStandIn>,
    shop: RecordingServer,
}

impl Shop {
    async fn new(provider: Provider, extra: &[(&str, &str)]) -> Self {
        let shop = RecordingServer::start(shop_answer).await;
        let path = std::env::temp_dir().join(format!("{}-tools.json", unique("shop")));
        std::fs::write(&path, tools_file(&shop.url)).unwrap();
        let uri = format!("file://{}", path.display());
        let mut vars = vec![("TOOLS_URI", uri.as_str())];
        vars.extend_from_slice(extra);
        let (h, bedrock) = match provider {
            Provider::Bedrock => {
                let stand_in = ConverseStandIn::start().await;
                let model = ("LLM_MODEL", "us.amazon.nova-lite-v1:0");
                vars.push(model);
                (
                    Harness::with_bedrock(&stand_in, &vars).await,
                    Some(stand_in),
                )
            }
            Provider::OpenAi => (
                Harness::with_llm("openai", &vars, openai_answer).await,
                None,
            ),
            Provider::Gemini => (Harness::new("gemini", &vars).await, None),
        };
        Self { h, bedrock, shop }
    }

    /// Queues the model's next answers.
    fn script(&self, answers: impl IntoIterator<Item = Canned>) {
        match &self.bedrock {
            Some(stand_in) => stand_in.script(answers),
            None => self.h.llm.script(answers),
        }
    }

    /// The bodies of the model's requests, in order.
    fn llm_bodies(&self) -> Vec<Value> {
        let requests = match &self.bedrock {
            Some(stand_in) => stand_in.converse_requests(),
            None => self.h.llm.requests(),
        };
        requests.iter().map(RecordedRequest::json).collect()
    }

    /// Handles one message `text` as `id`, delivered for the `receive_count`th time.
    async fn send(&self, id: &str, text: &str, receive_count: u32) -> Vec<String> {
        let records = vec![record("sqs-1", USER, id, text, receive_count)];
        failures(&self.h.handle(&event(records)).await)
    }
}

#[tokio::test]
async fn an_order_question_is_answered_through_the_tool_with_each_provider() {
    for provider in PROVIDERS {
        let s = Shop::new(provider, &[]).await;
        s.script([
            provider.call("order_status", json!({"order_id": "A-17"})),
            provider.text("Your order A-17 has shipped; it arrives on 8 December."),
        ]);
        let failed = s.send(&unique("order"), "Where is my order A-17?", 1).await;
        assert!(failed.is_empty(), "{provider:?}: {failed:?}");

        let calls = s.shop.requests();
        assert_eq!(calls.len(), 1, "{provider:?}: one call of the shop");
        assert_eq!(
            (calls[0].method.as_str(), calls[0].path.as_str()),
            ("GET", "/orders/A-17")
        );
        assert_eq!(calls[0].header("x-api-key"), Some(SHOP_API_KEY));
        assert_eq!(
            calls[0].header("idempotency-key"),
            None,
            "read-only: no key"
        );

        let bodies = s.llm_bodies();
        assert_eq!(
            bodies.len(),
            2,
            "{provider:?}: asked, then given the result"
        );
        for body in &bodies {
            assert_eq!(
                provider.offered(body),
                ["order_status", "add_to_cart"],
                "{provider:?}"
            );
        }
        assert!(provider.results(&bodies[0]).is_empty());
        let results = provider.results(&bodies[1]);
        assert_eq!(results.len(), 1, "{provider:?}: {results:?}");
        assert!(
            results[0].0.contains("shipped") && !results[0].1,
            "{provider:?}: {results:?}"
        );
        assert_eq!(
            s.h.sent_texts(),
            ["Your order A-17 has shipped; it arrives on 8 December."],
            "{provider:?}"
        );
        let turns = s.h.turns(USER).await;
        let texts: Vec<&str> = turns
            .iter()
            .map(|t| t["t"].as_s().unwrap().as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "Where is my order A-17?",
                "Your order A-17 has shipped; it arrives on 8 December."
            ],
            "{provider:?}: the memory keeps the question and the final answer"
        );
    }
}

#[tokio::test]
async fn a_burst_retried_after_its_side_effecting_call_does_not_call_again() {
    for provider in PROVIDERS {
        let s = Shop::new(provider, &[]).await;
        let id = unique("cart");
        let args = json!({"cart_id": "C-9", "product_id": "P-1", "quantity": 1});
        // The model asks to add to the cart, the call is made, then the model is down through
        // every attempt of this invocation: the burst is retried.
        s.script([provider.call("add_to_cart", args.clone())]);
        s.script(std::iter::repeat_n(provider.unavailable(), 4));
        let failed = s.send(&id, "Add one P-1 to my cart C-9", 1).await;
        assert_eq!(failed, ["sqs-1"], "{provider:?}: retried");
        assert!(s.h.sent_texts().is_empty());
        assert!(
            s.h.claim_item(&id).await.contains_key("tool_rounds"),
            "{provider:?}: the round is kept with the claim"
        );

        // The retry goes on from the kept round: the shop is not called again.
        s.script([provider.text("Done: P-1 is in your cart C-9.")]);
        let failed = s.send(&id, "Add one P-1 to my cart C-9", 2).await;
        assert!(failed.is_empty(), "{provider:?}: {failed:?}");
        let calls = s.shop.requests();
        assert_eq!(calls.len(), 1, "{provider:?}: one cart call, ever");
        assert_eq!(calls[0].method, "POST");
        assert_eq!(calls[0].json(), json!({"product_id": "P-1", "quantity": 1}));
        let key = calls[0].header("idempotency-key").unwrap();
        assert_eq!(key, shared::tools::idempotency_key(&id, 0, 0));
        let last = s.llm_bodies().pop().unwrap();
        let results = provider.results(&last);
        assert!(
            results.len() == 1 && results[0].0.contains("C-9"),
            "{provider:?}: the kept result went back to the model: {results:?}"
        );
        assert_eq!(s.h.sent_texts(), ["Done: P-1 is in your cart C-9."]);
        assert!(!s.h.claim_item(&id).await.contains_key("tool_rounds"));

        // A redelivery of the answered message changes nothing.
        let requests = s.llm_bodies().len();
        assert!(
            s.send(&id, "Add one P-1 to my cart C-9", 3)
                .await
                .is_empty()
        );
        assert_eq!(
            (s.llm_bodies().len(), s.shop.requests().len()),
            (requests, 1)
        );
        assert_eq!(s.h.sent_texts().len(), 1, "{provider:?}");
    }
}

#[tokio::test]
async fn a_failing_slow_or_refused_call_goes_back_to_the_model_as_an_error() {
    let provider = Provider::OpenAi;
    let s = Shop::new(provider, &[]).await;
    s.script([
        provider.call("order_status", json!({"order_id": "BROKEN"})),
        provider.call("order_status", json!({"order_id": "SLOW"})),
        provider.call("order_status", json!({"order_id": "../admin"})),
        provider.text("Sorry, I cannot see that order right now."),
    ]);
    let failed = s.send(&unique("errors"), "Where are my orders?", 1).await;
    assert!(failed.is_empty(), "{failed:?}");
    let bodies = s.llm_bodies();
    assert_eq!(bodies.len(), 4);
    let results = provider.results(&bodies[3]);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results.iter().all(|(_, is_error)| *is_error), "{results:?}");
    assert!(results[0].0.contains("500"), "{results:?}");
    assert!(
        results[1].0.contains("did not answer within 2 seconds"),
        "{results:?}"
    );
    assert!(results[2].0.contains("invalid arguments"), "{results:?}");
    // The argument breaks the schema's pattern: refused before any request.
    assert_eq!(
        s.shop
            .requests()
            .iter()
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>(),
        ["/orders/BROKEN", "/orders/SLOW"]
    );
    assert_eq!(
        s.h.sent_texts(),
        ["Sorry, I cannot see that order right now."]
    );
}

#[tokio::test]
async fn the_model_gets_at_most_tools_max_rounds_rounds() {
    let provider = Provider::Gemini;
    let s = Shop::new(provider, &[("TOOLS_MAX_ROUNDS", "2")]).await;
    let ask = provider.call("order_status", json!({"order_id": "A-17"}));
    s.script([ask.clone(), ask.clone(), ask]);
    let failed = s.send(&unique("limit"), "Where is my order A-17?", 1).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(s.shop.requests().len(), 2, "two rounds of calls");
    assert_eq!(
        s.llm_bodies().len(),
        3,
        "asked after each round, then no more"
    );
    assert_eq!(s.h.sent_texts(), ["Sorry, I can't answer right now."]);
}

#[tokio::test]
async fn without_a_valid_tools_file_the_bot_answers_without_tools() {
    let provider = Provider::OpenAi;
    let path = std::env::temp_dir().join(format!("{}-tools.json", unique("bad")));
    std::fs::write(&path, r#"{"tools": [{"name": "x", "colour": "red"}]}"#).unwrap();
    let uri = format!("file://{}", path.display());
    let h = Harness::with_llm("openai", &[("TOOLS_URI", uri.as_str())], openai_answer).await;
    let records = vec![record("sqs-1", USER, &unique("bad"), "Hello", 1)];
    assert!(failures(&h.handle(&event(records)).await).is_empty());
    let bodies: Vec<Value> = h.llm.requests().iter().map(RecordedRequest::json).collect();
    assert_eq!(bodies.len(), 1);
    assert!(provider.offered(&bodies[0]).is_empty());
    assert_eq!(h.sent_texts(), ["You said: Hello"]);
}
