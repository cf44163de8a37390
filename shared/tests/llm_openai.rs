//! The OpenAI-compatible client against a local server standing in for the API: the cases every
//! provider passes, and what is particular to Chat Completions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use serde_json::{Value, json};
use shared::llm::{Completion, InlineFile, Llm, LlmRefusal, Prompt, Provider};
use testkit::http_recorder::{Canned, RecordingServer};
use testkit::llm_provider::{
    KEY, ProviderFixture, ask, chat, in_seconds, order_status_call, prompt, server, tool_prompt,
};

struct OpenAi;

impl ProviderFixture for OpenAi {
    const PROVIDER: Provider = Provider::OpenAi;
    const BASE_PATH: &'static str = "/v1/";
    const PATH: &'static str = "/v1/chat/completions";
    const KEY_HEADER: (&'static str, &'static str) = ("authorization", "Bearer sk-test-123");

    fn answer(text: &str) -> Canned {
        Canned::json(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
            }),
        )
    }

    fn error(status: u16, message: &str) -> Canned {
        Canned::json(
            status,
            json!({"error": {"message": message, "type": "invalid_request_error", "code": null}}),
        )
    }

    fn shown_error(_status: u16, message: &str) -> String {
        format!("{message} (type invalid_request_error)")
    }

    fn request_body() -> Value {
        json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": "What is 2+2?"}
            ]
        })
    }

    fn odd_errors() -> Vec<(Canned, &'static str)> {
        vec![
            (
                Canned::json(404, json!({"error": "model 'x' not found"})),
                "model 'x' not found",
            ),
            (
                Canned::json(400, json!("<html>Bad Request</html>")),
                "\"<html>Bad Request</html>\"",
            ),
            (
                Canned::json(
                    400,
                    json!({"error": {"message": "Too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}),
                ),
                "Too long (type invalid_request_error, code context_length_exceeded)",
            ),
            (
                Canned::json(400, json!({"error": {"code": 400}})),
                "no error message (code 400)",
            ),
        ]
    }

    fn refusals() -> Vec<(Canned, LlmRefusal)> {
        let error = |status, message: &str, code: &str| {
            Canned::json(
                status,
                json!({"error": {"message": message, "type": "invalid_request_error", "code": code}}),
            )
        };
        vec![
            (
                error(
                    400,
                    "This model's maximum context length is 8192 tokens.",
                    "context_length_exceeded",
                ),
                LlmRefusal::ContextTooLong,
            ),
            (
                error(400, "The response was filtered.", "content_filter"),
                LlmRefusal::ContentFiltered,
            ),
            (
                error(404, "The model `gpt-9` does not exist", "model_not_found"),
                LlmRefusal::UnknownModel,
            ),
            (
                error(422, "messages: field required", "invalid_value"),
                LlmRefusal::InvalidRequest,
            ),
        ]
    }

    fn no_answers() -> Vec<(Value, &'static str)> {
        vec![
            (
                json!({"choices": [{"message": {"content": null}, "finish_reason": "length"}]}),
                "the answer is empty (finish_reason length)",
            ),
            (
                json!({"choices": [{"message": {"content": "  "}, "finish_reason": "stop"}]}),
                "the answer is empty (finish_reason stop)",
            ),
            (
                json!({"choices": [{"message": {"content": null, "refusal": "I can't"}, "finish_reason": "stop"}]}),
                "the model refused (finish_reason stop)",
            ),
            (json!({"choices": []}), "the answer has no choices"),
        ]
    }

    fn misshapen_answer() -> Value {
        json!({"choices": "Hello!"})
    }
}

testkit::llm_provider_cases!(OpenAi);

#[tokio::test]
async fn omits_an_empty_system_prompt_and_a_missing_key() {
    let server = server::<OpenAi>().await;
    let prompt = Prompt::new("", prompt().turns);
    chat::<OpenAi>(&server, None)
        .complete(&prompt, in_seconds(10))
        .await
        .unwrap();
    let request = &server.requests()[0];
    assert_eq!(request.header("authorization"), None);
    let body = request.json();
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
    assert_eq!(body["messages"][0]["role"], "user");
}

#[tokio::test]
async fn reads_an_answer_without_usage_and_trims_it() {
    let server = RecordingServer::start(|_| {
        Canned::json(
            200,
            json!({"choices": [{"message": {"content": "\n  Four.  "}, "finish_reason": "stop"}]}),
        )
    })
    .await;
    let completion = ask(&chat::<OpenAi>(&server, Some(KEY))).await.unwrap();
    assert_eq!(
        completion,
        Completion {
            tool_calls: Vec::new(),
            text: "Four.".into(),
            input_tokens: None,
            output_tokens: None,
        }
    );
}

#[tokio::test]
async fn an_image_goes_with_the_last_user_turn_as_a_data_url() {
    let server = server::<OpenAi>().await;
    let file = InlineFile {
        mime_type: "image/png".into(),
        bytes: b"\x89PNG\r\n".to_vec(),
    };
    let with_image = prompt().with_files(vec![file]);
    chat::<OpenAi>(&server, Some("sk-test-123"))
        .complete(&with_image, in_seconds(10))
        .await
        .unwrap();
    let body = server.requests()[0].json();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"], "Hi", "earlier turns stay text");
    assert_eq!(
        messages.last().unwrap()["content"],
        json!([
            {"type": "text", "text": "What is 2+2?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}
        ])
    );
}

#[tokio::test]
async fn a_pdf_goes_as_a_file_part() {
    let server = server::<OpenAi>().await;
    let file = InlineFile {
        mime_type: "application/pdf".into(),
        bytes: b"%PDF-1.4".to_vec(),
    };
    chat::<OpenAi>(&server, Some("sk-test-123"))
        .complete(&prompt().with_files(vec![file]), in_seconds(10))
        .await
        .unwrap();
    let body = server.requests()[0].json();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["content"][1],
        json!({"type": "file", "file": {"filename": "document-1.pdf",
            "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}})
    );
}

#[tokio::test]
async fn tools_are_offered_and_the_calls_read_back() {
    let server = server::<OpenAi>().await;
    server.script([Canned::json(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "order_status", "arguments": "{\"order_id\":\"A-17\"}"}}
        ]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 50, "completion_tokens": 9}}),
    )]);
    let completion = chat::<OpenAi>(&server, Some(KEY))
        .complete(&tool_prompt(None), in_seconds(10))
        .await
        .unwrap();
    assert_eq!(completion.text, "");
    assert_eq!(completion.tool_calls, [order_status_call("call_abc")]);
    let body = server.requests()[0].json();
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "order_status", "description": "The status of an order, by its id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"]}}}])
    );
}

#[tokio::test]
async fn a_round_goes_back_as_the_calls_and_their_tool_messages() {
    let server = server::<OpenAi>().await;
    let completion = chat::<OpenAi>(&server, Some(KEY))
        .complete(
            &tool_prompt(Some(order_status_call("call_abc"))),
            in_seconds(10),
        )
        .await
        .unwrap();
    assert_eq!(completion.text, "Hello!");
    let body = server.requests()[0].json();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages[messages.len() - 2..],
        [
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc",
                "type": "function", "function": {"name": "order_status",
                "arguments": "{\"order_id\":\"A-17\"}"}}]}),
            json!({"role": "tool", "content": "{\"status\":\"shipped\"}", "tool_call_id": "call_abc"})
        ]
    );
    assert_eq!(messages[messages.len() - 3]["content"], "What is 2+2?");
    assert!(
        server.requests().len() == 1 && body["messages"][0].get("tool_calls").is_none(),
        "plain messages carry no tool fields"
    );
}
