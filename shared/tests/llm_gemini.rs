//! The Gemini client against a local server standing in for the API: the cases every provider
//! passes, and what is particular to `generateContent`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use serde_json::{Value, json};
use shared::llm::{Completion, InlineFile, Llm, LlmError, LlmRefusal, Prompt, Provider};
use shared::secrets::SecretsError;
use testkit::http_recorder::{Canned, RecordingServer};
use testkit::llm_provider::{
    KEY, ProviderFixture, ask, chat, chat_with, in_seconds, order_status_call, prompt, secrets,
    server, settings, tool_prompt,
};

struct Gemini;

/// The status name Gemini gives beside an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl ProviderFixture for Gemini {
    const PROVIDER: Provider = Provider::Gemini;
    const BASE_PATH: &'static str = "/";
    const PATH: &'static str = "/v1beta/models/test-model:generateContent";
    const KEY_HEADER: (&'static str, &'static str) = ("x-goog-api-key", KEY);

    fn answer(text: &str) -> Canned {
        Canned::json(
            200,
            json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0
                }],
                "usageMetadata": {
                    "promptTokenCount": 42,
                    "candidatesTokenCount": 7,
                    "totalTokenCount": 49
                },
                "modelVersion": "test-model"
            }),
        )
    }

    fn error(status: u16, message: &str) -> Canned {
        Canned::json(
            status,
            json!({"error": {"code": status, "message": message, "status": status_name(status)}}),
        )
    }

    fn shown_error(status: u16, message: &str) -> String {
        format!("{message} ({})", status_name(status))
    }

    fn request_body() -> Value {
        json!({
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hello, how can I help?"}]},
                {"role": "user", "parts": [{"text": "What is 2+2?"}]}
            ]
        })
    }

    fn odd_errors() -> Vec<(Canned, &'static str)> {
        vec![(Canned::json(404, json!("Not Found")), "\"Not Found\"")]
    }

    fn refusals() -> Vec<(Canned, LlmRefusal)> {
        let error = |status: u16, message: &str, state: &str| {
            Canned::json(
                status,
                json!({"error": {"code": status, "message": message, "status": state}}),
            )
        };
        vec![
            (
                error(
                    400,
                    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                    "INVALID_ARGUMENT",
                ),
                LlmRefusal::ContextTooLong,
            ),
            (
                error(
                    404,
                    "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.",
                    "NOT_FOUND",
                ),
                LlmRefusal::UnknownModel,
            ),
            (
                error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"),
                LlmRefusal::InvalidRequest,
            ),
        ]
    }

    fn no_answers() -> Vec<(Value, &'static str)> {
        vec![
            (
                json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}}),
                "the prompt was blocked (blockReason SAFETY)",
            ),
            (
                json!({"candidates": [{"finishReason": "SAFETY", "safetyRatings": []}]}),
                "the answer is empty (finishReason SAFETY)",
            ),
            (
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " "}]}, "finishReason": "MAX_TOKENS"}]}),
                "the answer is empty (finishReason MAX_TOKENS)",
            ),
            (json!({"candidates": []}), "the answer has no candidates"),
        ]
    }

    fn misshapen_answer() -> Value {
        json!({"candidates": "Hello!"})
    }
}

testkit::llm_provider_cases!(Gemini);

#[tokio::test]
async fn omits_an_empty_system_prompt_and_accepts_a_prefixed_model() {
    let server = server::<Gemini>().await;
    let mut settings = settings(&server.url);
    settings.model = "models/test-model".to_owned();
    chat_with::<Gemini, _>(settings, secrets(Some(KEY)))
        .complete(&Prompt::new(" ", prompt().turns), in_seconds(10))
        .await
        .unwrap();
    let request = &server.requests()[0];
    assert_eq!(request.path, Gemini::PATH);
    let body = request.json();
    assert!(body.get("systemInstruction").is_none(), "{body}");
    assert_eq!(body["contents"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn joins_the_parts_skips_thoughts_and_tolerates_missing_usage() {
    let server = RecordingServer::start(|_| {
        Canned::json(
            200,
            json!({"candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "Let me think about arithmetic.", "thought": true},
                    {"text": "Two plus two "},
                    {"text": "is four.\n"}
                ]},
                "finishReason": "STOP"
            }]}),
        )
    })
    .await;
    let completion = ask(&chat::<Gemini>(&server, Some(KEY))).await.unwrap();
    assert_eq!(
        completion,
        Completion {
            tool_calls: Vec::new(),
            text: "Two plus two is four.".into(),
            input_tokens: None,
            output_tokens: None,
        }
    );
}

#[tokio::test]
async fn a_missing_key_fails_without_a_request() {
    let server = server::<Gemini>().await;
    let result = ask(&chat::<Gemini>(&server, None)).await;
    assert_eq!(
        result,
        Err(LlmError::Secrets(SecretsError::MissingKey("LLM_API_KEY")))
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn an_image_goes_with_the_last_user_turn_as_inline_data() {
    let server = server::<Gemini>().await;
    let file = InlineFile {
        mime_type: "image/jpeg".into(),
        bytes: b"\xff\xd8\xff".to_vec(),
    };
    chat::<Gemini>(&server, Some(KEY))
        .complete(&prompt().with_files(vec![file]), in_seconds(10))
        .await
        .unwrap();
    let body = server.requests()[0].json();
    let contents = body["contents"].as_array().unwrap();
    assert_eq!(contents[0]["parts"], json!([{"text": "Hi"}]));
    assert_eq!(
        contents.last().unwrap()["parts"],
        json!([
            {"text": "What is 2+2?"},
            {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/"}}
        ])
    );
}

#[tokio::test]
async fn tools_are_offered_and_the_calls_read_back_with_their_signature() {
    let server = server::<Gemini>().await;
    server.script([Canned::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "order_status", "args": {"order_id": "A-17"}},
             "thoughtSignature": "c2lnbmF0dXJl"}
        ]}, "finishReason": "STOP"}]}),
    )]);
    let completion = chat::<Gemini>(&server, Some(KEY))
        .complete(&tool_prompt(None), in_seconds(10))
        .await
        .unwrap();
    let mut expected = order_status_call("call-0");
    expected.signature = Some("c2lnbmF0dXJl".to_owned());
    assert_eq!(completion.tool_calls, [expected]);
    let body = server.requests()[0].json();
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [{"name": "order_status",
            "description": "The status of an order, by its id.",
            "parametersJsonSchema": {"type": "object",
                "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}]}])
    );
}

#[tokio::test]
async fn a_round_goes_back_as_the_model_call_and_the_function_response() {
    let server = server::<Gemini>().await;
    let mut call = order_status_call("call-0");
    call.signature = Some("c2ln".to_owned());
    chat::<Gemini>(&server, Some(KEY))
        .complete(&tool_prompt(Some(call)), in_seconds(10))
        .await
        .unwrap();
    let body = server.requests()[0].json();
    let contents = body["contents"].as_array().unwrap();
    assert_eq!(
        contents[contents.len() - 2..],
        [
            json!({"role": "model", "parts": [{"functionCall": {"name": "order_status",
                "args": {"order_id": "A-17"}}, "thoughtSignature": "c2ln"}]}),
            json!({"role": "user", "parts": [{"functionResponse": {"name": "order_status",
                "response": {"content": "{\"status\":\"shipped\"}"}}}]})
        ]
    );
}
