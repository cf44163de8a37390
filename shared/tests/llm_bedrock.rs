//! The Bedrock client (Converse through the AWS SDK) against a local server standing in for
//! `bedrock-runtime`: the request each prompt makes, usage read back, every error class, the
//! guardrail, timeouts, and the signature of each request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_bedrockruntime::config::{Credentials, SharedCredentialsProvider};
use serde_json::{Value, json};
use shared::conversation::Role;
use shared::llm::{
    BedrockChat, Guardrail, InlineFile, Llm, LlmError, LlmRefusal, LlmSettings, Prompt, PromptTurn,
};
use shared::retry::{Backoff, RetryHint, Retryable};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};
use testkit::llm_provider::{in_seconds, order_status_call, prompt, tool_prompt};

const REGION: &str = "eu-west-1";
const MODEL: &str = "eu.amazon.nova-lite-v1:0";
/// The model id as it arrives in the path: the SDK percent-encodes the `:`.
const PATH: &str = "/model/eu.amazon.nova-lite-v1%3A0/converse";

fn answer(text: &str) -> Canned {
    Canned::json(
        200,
        json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 42, "outputTokens": 7, "totalTokens": 49},
            "metrics": {"latencyMs": 5}
        }),
    )
}

fn error(status: u16, exception: &str, message: &str) -> Canned {
    Canned::json(status, json!({"message": message})).with_header("x-amzn-errortype", exception)
}

async fn server() -> RecordingServer {
    RecordingServer::start(|_| answer("Hello!")).await
}

fn settings(server: &RecordingServer, model: &str) -> LlmSettings {
    LlmSettings {
        base_url: server.url.clone(),
        model: model.to_owned(),
        timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 3,
        },
        guardrail: None,
        api_key_secret: None,
    }
}

fn aws() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDBEDROCKTEST",
            "bedrock-test-secret",
            None,
            None,
            "tests",
        )))
        .build()
}

fn chat(server: &RecordingServer) -> BedrockChat {
    BedrockChat::new(&aws(), settings(server, MODEL))
}

/// The one request the server got, checked to be a signed Converse call for `MODEL`.
fn only_request(server: &RecordingServer) -> RecordedRequest {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = requests.into_iter().next().unwrap();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", PATH)
    );
    let authorization = request.header("authorization").unwrap_or_default();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDBEDROCKTEST/")
            && authorization.contains(&format!("/{REGION}/bedrock/aws4_request")),
        "signed for bedrock in {REGION}: {authorization}"
    );
    request
}

#[tokio::test]
async fn sends_system_history_and_turn_as_converse_and_reads_usage() {
    let server = server().await;
    let completion = chat(&server)
        .complete(&prompt(), in_seconds(10))
        .await
        .unwrap();
    assert_eq!(completion.text, "Hello!");
    assert_eq!(
        (completion.input_tokens, completion.output_tokens),
        (Some(42), Some(7))
    );
    let body = only_request(&server).json();
    assert_eq!(body["system"], json!([{"text": "You are terse."}]));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Hello, how can I help?"}]},
            {"role": "user", "content": [{"text": "What is 2+2?"}]}
        ])
    );
    assert!(body.get("guardrailConfig").is_none(), "{body}");
}

#[tokio::test]
async fn a_conversation_starting_with_the_bot_is_padded_to_start_with_the_user() {
    let server = server().await;
    let turn = |role, text: &str| PromptTurn {
        role,
        text: text.to_owned(),
    };
    let prompt = Prompt::new(
        "",
        [
            turn(Role::Assistant, "Welcome!"),
            turn(Role::User, "one"),
            turn(Role::User, "two"),
        ],
    );
    chat(&server)
        .complete(&prompt, in_seconds(10))
        .await
        .unwrap();
    let body = only_request(&server).json();
    assert!(body.get("system").is_none(), "{body}");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "one\n\ntwo"}]}])
    );
}

#[tokio::test]
async fn images_and_documents_go_with_the_last_turn() {
    let server = server().await;
    let files = vec![
        InlineFile {
            mime_type: "image/png".into(),
            bytes: b"png-bytes".to_vec(),
        },
        InlineFile {
            mime_type: "application/pdf".into(),
            bytes: b"%PDF-1.4".to_vec(),
        },
    ];
    let prompt = prompt().with_files(files);
    chat(&server)
        .complete(&prompt, in_seconds(10))
        .await
        .unwrap();
    let body = only_request(&server).json();
    let content = &body["messages"][2]["content"];
    assert_eq!(content[0], json!({"text": "What is 2+2?"}));
    assert_eq!(
        content[1],
        json!({"image": {"format": "png", "source": {"bytes": "cG5nLWJ5dGVz"}}})
    );
    assert_eq!(
        content[2],
        json!({"document": {"format": "pdf", "name": "document-2", "source": {"bytes": "JVBERi0xLjQ="}}})
    );
    assert_eq!(body["messages"][0]["content"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_long_system_prompt_is_cached_for_models_that_cache() {
    let server = server().await;
    let long = "Our shop's FAQ. ".repeat(400);
    let prompt = Prompt::new(long.clone(), prompt().turns);
    chat(&server)
        .complete(&prompt, in_seconds(10))
        .await
        .unwrap();
    let llama = BedrockChat::new(&aws(), settings(&server, "meta.llama3-70b-instruct-v1:0"));
    llama.complete(&prompt, in_seconds(10)).await.unwrap();
    let systems: Vec<Value> = server
        .requests()
        .iter()
        .map(|r| r.json()["system"].clone())
        .collect();
    assert_eq!(
        systems,
        [
            json!([{"text": long}, {"cachePoint": {"type": "default"}}]),
            json!([{"text": long}])
        ]
    );
}

#[tokio::test]
async fn a_guardrail_goes_with_each_request_and_its_intervention_is_the_answer() {
    let server = server().await;
    server.script([Canned::json(
        200,
        json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "Sorry, I can't help with that."}]}},
            "stopReason": "guardrail_intervened",
            "usage": {"inputTokens": 10, "outputTokens": 0, "totalTokens": 10},
            "metrics": {"latencyMs": 5}
        }),
    )]);
    let mut settings = settings(&server, MODEL);
    settings.guardrail = Some(Guardrail {
        id: "gr0abc123".into(),
        version: "2".into(),
    });
    let completion = BedrockChat::new(&aws(), settings)
        .complete(&prompt(), in_seconds(10))
        .await
        .unwrap();
    assert_eq!(completion.text, "Sorry, I can't help with that.");
    let body = only_request(&server).json();
    assert_eq!(
        body["guardrailConfig"],
        json!({"guardrailIdentifier": "gr0abc123", "guardrailVersion": "2", "trace": "disabled"})
    );
}

#[tokio::test]
async fn transient_errors_are_retried_until_an_answer() {
    for (status, exception) in [
        (429, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
        (429, "ModelNotReadyException"),
        (500, "InternalServerException"),
        (408, "ModelTimeoutException"),
    ] {
        let server = server().await;
        server.script([error(status, exception, "try again")]);
        let completion = chat(&server).complete(&prompt(), in_seconds(10)).await;
        assert_eq!(completion.unwrap().text, "Hello!", "{exception}");
        assert_eq!(server.requests().len(), 2, "{exception}");
    }
}

#[tokio::test]
async fn a_throttled_call_gives_up_after_its_attempts() {
    let server = RecordingServer::start(|_| error(429, "ThrottlingException", "slow down")).await;
    let error = chat(&server)
        .complete(&prompt(), in_seconds(10))
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 3);
    assert_eq!(error.retry_hint(), RetryHint::Backoff, "{error}");
    assert_eq!(error.refusal(), None);
    assert!(
        error.to_string().contains("ThrottlingException: slow down"),
        "{error}"
    );
}

#[tokio::test]
async fn final_errors_are_classified_sent_once_and_say_what_to_do() {
    let cases = [
        (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            Some(LlmRefusal::AccessDenied),
            "enable eu.amazon.nova-lite-v1:0 in the Bedrock console of eu-west-1",
        ),
        (
            404,
            "ResourceNotFoundException",
            "Model not found.",
            Some(LlmRefusal::UnknownModel),
            "check LLM_MODEL",
        ),
        (
            400,
            "ValidationException",
            "Input is too long for requested model.",
            Some(LlmRefusal::ContextTooLong),
            "too long",
        ),
        (
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
            Some(LlmRefusal::InvalidRequest),
            "Malformed",
        ),
        (
            400,
            "ServiceQuotaExceededException",
            "Your request exceeds the service quotas for your account.",
            None,
            "quotas",
        ),
        (
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            None,
            "security token",
        ),
    ];
    for (status, exception, message, refusal, says) in cases {
        let server = server().await;
        server.script([error(status, exception, message)]);
        let error = chat(&server)
            .complete(&prompt(), in_seconds(10))
            .await
            .unwrap_err();
        assert_eq!(server.requests().len(), 1, "{exception}: not retried");
        assert_eq!(error.refusal(), refusal, "{exception}: {error}");
        assert_eq!(error.retry_hint(), RetryHint::Never, "{exception}");
        let shown = error.to_string();
        assert!(shown.contains(exception) && shown.contains(says), "{shown}");
    }
}

#[tokio::test]
async fn an_empty_answer_is_no_answer_and_an_overflow_is_too_long() {
    let server = server().await;
    let stopped = |reason: &str, content: Value| {
        Canned::json(
            200,
            json!({"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": reason, "usage": {"inputTokens": 1, "outputTokens": 0, "totalTokens": 1},
                "metrics": {"latencyMs": 1}}),
        )
    };
    server.script([
        stopped("content_filtered", json!([])),
        stopped(
            "model_context_window_exceeded",
            json!([{"text": "partial"}]),
        ),
    ]);
    let chat = chat(&server);
    let first = chat.complete(&prompt(), in_seconds(10)).await.unwrap_err();
    assert!(
        matches!(&first, LlmError::NoAnswer(reason) if reason.contains("content_filtered")),
        "{first:?}"
    );
    let second = chat.complete(&prompt(), in_seconds(10)).await.unwrap_err();
    assert_eq!(
        second.refusal(),
        Some(LlmRefusal::ContextTooLong),
        "{second}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_slow_model_times_out_within_the_deadline() {
    let server = RecordingServer::start(|_| answer("late").after(Duration::from_secs(30))).await;
    let mut settings = settings(&server, MODEL);
    settings.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let error = BedrockChat::new(&aws(), settings)
        .complete(&prompt(), in_seconds(2))
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::Timeout), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!((1..=3).contains(&server.requests().len()));
    let passed = tokio::time::Instant::now() - Duration::from_millis(1);
    let none = chat(&server).complete(&prompt(), passed).await.unwrap_err();
    assert!(matches!(none, LlmError::Timeout), "{none:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transport_error() {
    let server = server().await;
    let mut settings = settings(&server, MODEL);
    settings.base_url = "http://127.0.0.1:9".into();
    let error = BedrockChat::new(&aws(), settings)
        .complete(&prompt(), in_seconds(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Transport(_) | LlmError::Timeout),
        "{error:?}"
    );
    assert!(
        !error.to_string().contains("bedrock-test-secret"),
        "{error}"
    );
}

#[tokio::test]
async fn odd_answers_are_errors_not_panics() {
    let server = server().await;
    server.script([
        Canned::bytes(200, "application/json", b"{not json".to_vec()),
        Canned::bytes(200, "application/json", b"{not json".to_vec()),
        Canned::bytes(200, "application/json", b"{not json".to_vec()),
        Canned::json(
            200,
            json!({"output": {"surprise": 1}, "stopReason": "something_new"}),
        ),
        Canned::bytes(502, "text/html", b"<h1>Bad Gateway</h1>".to_vec()),
    ]);
    let chat = chat(&server);
    for _ in 0..2 {
        let result = chat.complete(&prompt(), in_seconds(10)).await;
        assert!(result.is_err(), "{result:?}");
    }
}

#[tokio::test]
async fn tools_are_offered_as_tool_config_and_tool_use_is_read_back() {
    let server = server().await;
    server.script([Canned::json(
        200,
        json!({"output": {"message": {"role": "assistant", "content": [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "order_status", "input": {"order_id": "A-17"}}}
        ]}}, "stopReason": "tool_use",
        "usage": {"inputTokens": 60, "outputTokens": 12, "totalTokens": 72}, "metrics": {"latencyMs": 5}}),
    )]);
    let completion = chat(&server)
        .complete(&tool_prompt(None), in_seconds(10))
        .await
        .unwrap();
    assert_eq!(completion.text, "Let me check.");
    assert_eq!(completion.tool_calls, [order_status_call("tooluse_1")]);
    let body = only_request(&server).json();
    assert_eq!(
        body["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "order_status",
            "description": "The status of an order, by its id.",
            "inputSchema": {"json": {"type": "object",
                "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}}]})
    );
}

#[tokio::test]
async fn a_round_goes_back_as_tool_use_then_tool_result() {
    let server = server().await;
    chat(&server)
        .complete(
            &tool_prompt(Some(order_status_call("tooluse_1"))),
            in_seconds(10),
        )
        .await
        .unwrap();
    let body = only_request(&server).json();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages[messages.len() - 2..],
        [
            json!({"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1",
                "name": "order_status", "input": {"order_id": "A-17"}}}]}),
            json!({"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1",
                "content": [{"text": "{\"status\":\"shipped\"}"}]}}]})
        ]
    );
}
