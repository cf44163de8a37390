//! Every sample in `events/` goes through its function's real binary under the local Lambda
//! Runtime API, configured as `template.yaml` configures it, against the template's resources in
//! moto and local stand-ins for Meta and the LLM; each answer is checked. So the samples that
//! `sam local invoke` uses cannot rot, and neither can the binaries' wiring (`main.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use local_stack::resources::Stack;
use local_stack::runtime::{
    FunctionSpec, InvokeError, LambdaFunction, binaries_dir, function_url_event, http_answer,
    http_api_event,
};
use serde_json::{Value, json};
use testkit::http_recorder;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The retry queue of the local stack (`make local`, stack `local`), which the retry queue's
/// sample names so that `sam local invoke` with `events/env.json` reads it as such.
const LOCAL_RETRY_QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:local-alert-retry";

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// What a sample's answer must be.
enum Expect {
    /// An HTTP answer with this status and, when given, this body.
    Http(u16, Option<&'static str>),
    /// An SQS batch response with no failures.
    NoBatchFailures,
    /// Any successful answer.
    Success,
}

fn expectations() -> BTreeMap<&'static str, Expect> {
    BTreeMap::from([
        (
            "webhook/verify-subscription.json",
            Expect::Http(200, Some("1158201444")),
        ),
        ("webhook/text-message.json", Expect::Http(200, None)),
        ("webhook/business-app-echo.json", Expect::Http(200, None)),
        ("webhook/text-message-base64.json", Expect::Http(200, None)),
        (
            "webhook/function-url-text-message.json",
            Expect::Http(200, None),
        ),
        (
            "webhook/bad-signature.json",
            Expect::Http(401, Some("invalid signature")),
        ),
        ("processor/text-message.json", Expect::NoBatchFailures),
        ("processor/burst.json", Expect::NoBatchFailures),
        ("processor/business-echo.json", Expect::NoBatchFailures),
        ("alerter/dead-letter.json", Expect::NoBatchFailures),
        ("alerter/error-log.json", Expect::Success),
        ("alerter/alarm.json", Expect::Success),
        (
            "alerter/on-failure-destination.json",
            Expect::NoBatchFailures,
        ),
    ])
}

/// The samples on disk, as `<function>/<file>`, without `env.json` (for `sam local invoke`).
fn samples() -> Vec<String> {
    let mut found = Vec::new();
    for function in ["webhook", "processor", "alerter"] {
        let Ok(entries) = std::fs::read_dir(events_dir().join(function)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                found.push(format!("{function}/{name}"));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_sample_has_an_expectation() {
    let expected: Vec<String> = expectations().into_keys().map(str::to_owned).collect();
    assert_eq!(
        samples(),
        expected,
        "add the new sample's expected answer to this test"
    );
}

async fn start(
    stack: &Stack,
    function: &str,
    logical_id: &str,
    overrides: &[(&str, String)],
) -> LambdaFunction {
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let log_file =
        std::env::temp_dir().join(format!("{}-{function}.log", testkit::unique_name("events")));
    stack
        .start_function(function, logical_id, &moto, overrides, log_file)
        .await
}

fn check(sample: &str, expect: &Expect, answer: Result<Value, InvokeError>) {
    let answer = answer.unwrap_or_else(|e| panic!("{sample}: {e}"));
    match expect {
        Expect::Http(status, body) => {
            let http = http_answer(&answer);
            assert_eq!(http.status, *status, "{sample}: {answer}");
            if let Some(body) = body {
                assert_eq!(String::from_utf8_lossy(&http.body), *body, "{sample}");
            }
        }
        Expect::NoBatchFailures => {
            assert_eq!(answer["batchItemFailures"], json!([]), "{sample}: {answer}")
        }
        Expect::Success => {}
    }
}

#[tokio::test]
async fn every_sample_runs_through_its_functions_binary() {
    let aws = testkit::moto_config().await;
    let oncall = format!("{}@example.com", testkit::unique_name("oncall"));
    let stack = Stack::create(aws.clone(), &testkit::unique_name("wa-events"), &oncall).await;
    testkit::mail::verify_sender(&aws_sdk_sesv2::Client::new(&aws), "alerts@example.com").await;
    let llm = http_recorder::openai_answering("Hello from the stand-in.").await;
    let meta = http_recorder::graph_api("wamid.sent").await;

    let functions = [
        start(&stack, "webhook", "WebhookFunction", &[]).await,
        start(
            &stack,
            "processor",
            "ProcessorFunction",
            &[
                ("LLM_BASE_URL", format!("{}/v1", llm.url)),
                ("META_API_BASE_URL", meta.url.clone()),
                // The samples carry fixed timestamps, which the 24-hour default finds too old.
                ("MAX_MESSAGE_AGE_HOURS", "0".to_owned()),
            ],
        )
        .await,
        start(&stack, "alerter", "AlerterFunction", &[]).await,
    ];
    let mut ran = 0;
    for (sample, expect) in expectations() {
        let function = sample.split('/').next().unwrap_or_default();
        let runner = functions
            .iter()
            .find(|f| f.name() == function)
            .expect("a function for each folder");
        // The stack here has a name of its own, and so has its retry queue.
        let text = std::fs::read_to_string(events_dir().join(sample))
            .unwrap()
            .replace(
                LOCAL_RETRY_QUEUE_ARN,
                &stack.resolver.attributes["AlertRetryQueue.Arn"],
            );
        let event: Value = serde_json::from_str(&text).unwrap();
        check(sample, &expect, runner.invoke(&event, TIMEOUT).await);
        ran += 1;
    }
    assert_eq!(ran, 13);

    // The processor's samples were answered through the stand-ins: one reply per burst.
    let replies: Vec<Value> = meta
        .requests()
        .iter()
        .map(http_recorder::RecordedRequest::json)
        .filter(|b| b["type"] == "text")
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(llm.requests().len(), 2);
    // The business app echo paused the bot for its user's conversation.
    let paused = aws_sdk_dynamodb::Client::new(&aws)
        .get_item()
        .table_name(&stack.resolver.refs["Table"])
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("ho#106540352242922:15557654321".to_owned()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_default();
    assert_eq!(
        paused
            .get("by")
            .and_then(|b| b.as_s().ok())
            .map(String::as_str),
        Some("echo"),
        "{paused:?}"
    );
    // The webhook's signed samples reached the template's queue.
    let queued = testkit::drain(
        &aws_sdk_sqs::Client::new(&aws),
        &stack.resolver.refs["InboundQueue"],
    )
    .await;
    let kinds: Vec<Option<String>> = queued
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_str(&m.body).unwrap();
            body["kind"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(
        kinds,
        [Some("business_echo".to_owned()), None],
        "the Business app echo (its sample runs first, by name), then one message (the base64 \
         and function URL samples carry the same message id: deduplicated)"
    );
    // The alerter's samples were mailed, the failed invocation's alarm too.
    let mails = testkit::mail::sent_mails_to(&oncall).await;
    assert_eq!(
        mails.len(),
        4,
        "{:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    for function in &functions {
        function.stop().await;
    }
}

/// A signed delivery of one text message beyond ASCII, with id `id`.
fn delivery(id: &str) -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"PNID"}},"messages":[{{"from":"15551234567","id":"{id}","timestamp":"1700000000","type":"text","text":{{"body":"Olá 👋"}}}}]}}}}]}}]}}"#
    )
    .into_bytes()
}

/// The signature header Meta would send with `body`, signed with the local app secret.
fn signed(body: &[u8]) -> Vec<(String, String)> {
    vec![(
        "X-Hub-Signature-256".to_owned(),
        shared::meta::signature::sign(body, b"local-app-secret"),
    )]
}

/// The webhook's binary answers a Lambda function URL's events (the `FunctionUrl` front door)
/// exactly as API Gateway's: the same signed bytes, as text or base64, reach the same queue, and
/// the handshake and a bad signature get the same answers.
#[tokio::test]
async fn the_webhook_binary_answers_a_function_url_as_it_answers_api_gateway() {
    let aws = testkit::moto_config().await;
    let stack = Stack::create(
        aws.clone(),
        &testkit::unique_name("wa-url"),
        "o@example.com",
    )
    .await;
    let webhook = start(&stack, "webhook", "WebhookFunction", &[]).await;
    let mut sent = Vec::new();
    for (shape, base64) in [("api", false), ("url", false), ("url", true)] {
        let id = format!("wamid.{shape}.{base64}");
        let body = delivery(&id);
        let event = |headers: &[(String, String)]| match shape {
            "api" => http_api_event("POST", "/webhook", "", headers, &body),
            _ => function_url_event("POST", "/webhook", "", headers, &body, base64),
        };
        let answer = http_answer(
            &webhook
                .invoke(&event(&signed(&body)), TIMEOUT)
                .await
                .unwrap(),
        );
        assert_eq!(answer.status, 200, "{id}: {answer:?}");
        let refused = http_answer(&webhook.invoke(&event(&[]), TIMEOUT).await.unwrap());
        assert_eq!(
            (refused.status, refused.body.as_slice()),
            (401, b"invalid signature".as_slice()),
            "{id}"
        );
        sent.push(id);
    }
    let query = "hub.mode=subscribe&hub.verify_token=local-verify-token&hub.challenge=31415";
    let handshake = function_url_event("GET", "/webhook", query, &[], b"", false);
    let answer = http_answer(&webhook.invoke(&handshake, TIMEOUT).await.unwrap());
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (200, b"31415".as_slice())
    );

    let queued = testkit::drain(
        &aws_sdk_sqs::Client::new(&aws),
        &stack.resolver.refs["InboundQueue"],
    )
    .await;
    let mut ids: Vec<String> = queued
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_str(&m.body).unwrap();
            assert_eq!(body["content"]["body"], "Olá 👋", "{body}");
            body["id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);
    webhook.stop().await;
}

#[tokio::test]
async fn a_function_without_its_configuration_stops_naming_the_variable() {
    let binary = binaries_dir().join("webhook");
    assert!(binary.is_file(), "{} is not built", binary.display());
    let log_file =
        std::env::temp_dir().join(format!("{}-webhook.log", testkit::unique_name("init")));
    let function = LambdaFunction::start(FunctionSpec {
        name: "webhook".into(),
        binary,
        environment: BTreeMap::new(),
        log_file: Some(log_file.clone()),
    })
    .await
    .unwrap();
    let event: Value = serde_json::from_str(include_str!(
        "../../events/webhook/verify-subscription.json"
    ))
    .unwrap();
    let message = match function.invoke(&event, TIMEOUT).await {
        Err(InvokeError::Init(message)) => message,
        Err(InvokeError::Exited(_)) => std::fs::read_to_string(&log_file).unwrap_or_default(),
        other => panic!("expected the function to stop at start, got {other:?}"),
    };
    assert!(
        message.contains("the environment variable QUEUE_URL is required but not set"),
        "{message}"
    );
}

/// `events/env.json` (for `sam local invoke --env-vars`) points each function at the local
/// stack started with its defaults (`make local`: stack `local`, moto on 5005, the simulator on
/// 8787), as seen from SAM's Docker container.
#[tokio::test]
async fn env_json_configures_each_function_as_the_local_stack_does() {
    let env_json: Value = serde_json::from_str(include_str!("../../events/env.json")).unwrap();
    let host = "http://host.docker.internal";
    // The template's environment for the `local` stack, with the local stack's endpoints.
    let aws = testkit::moto_config().await;
    let stack = Stack::create(aws, &testkit::unique_name("envjson"), "oncall@example.com").await;
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let stack_name = stack.resolver.refs["AWS::StackName"].clone();
    // Secrets Manager takes a secret's name as well as its ARN; env.json uses the stable name.
    let secret_arn = stack.resolver.refs["AppSecret"].clone();
    let secret_name = stack
        .resolver
        .resolve(&stack.template.properties("AppSecret")["Name"])
        .unwrap();
    for (logical_id, overrides) in [
        ("WebhookFunction", vec![]),
        (
            "ProcessorFunction",
            vec![
                ("LLM_BASE_URL", format!("{host}:8787/llm/v1")),
                ("META_API_BASE_URL", format!("{host}:8787/graph")),
                (
                    "TRANSCRIPTION_BASE_URL",
                    format!("{host}:8787/transcription/v1"),
                ),
            ],
        ),
        ("AlerterFunction", vec![]),
    ] {
        let mut expected: BTreeMap<String, String> = stack
            .environment(logical_id)
            .into_iter()
            .map(|(k, v)| {
                // Resource names derive from the stack's name; the endpoint is moto's, from Docker.
                let v = v
                    .replace(&secret_arn, &secret_name)
                    .replace(&stack_name, "local")
                    .replace(&moto, &format!("{host}:5005"));
                let v = v.replace(
                    &format!("http://localhost:{}", moto.rsplit(':').next().unwrap()),
                    &format!("{host}:5005"),
                );
                (k, v)
            })
            .collect();
        for (key, value) in overrides {
            expected.insert(key.to_owned(), value);
        }
        for (key, value) in [
            ("AWS_ENDPOINT_URL", format!("{host}:5005")),
            ("AWS_ACCESS_KEY_ID", "local".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ] {
            expected.insert(key.to_owned(), value);
        }
        let actual: BTreeMap<String, String> = env_json[logical_id]
            .as_object()
            .unwrap_or_else(|| panic!("env.json has no {logical_id}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        assert_eq!(actual, expected, "{logical_id}");
    }
}
