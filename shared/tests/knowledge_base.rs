//! The Knowledge Bases client (`Retrieve` through the AWS SDK) against a local server standing in
//! for bedrock-agent-runtime's `POST /knowledgebases/{id}/retrieve`: the request (query, top-k),
//! its SigV4 signature, the passages read back, every error class, and the timeouts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_bedrockagentruntime::config::{Credentials, SharedCredentialsProvider};
use serde_json::json;
use shared::knowledge_base::{
    BedrockKnowledgeBase, KnowledgeBaseSettings, MAX_QUERY_CHARS, Passage, PassageRetriever,
    RetrievalError,
};
use shared::retry::Backoff;
use testkit::bedrock::{ConverseException, SECRET_KEY, check_sigv4, retrieve_answer};
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};
use tokio::time::Instant;

const REGION: &str = "eu-west-1";
const ACCESS_KEY: &str = testkit::bedrock::ACCESS_KEY;
const KB_ID: &str = "KB12345678";
const PATH: &str = "/knowledgebases/KB12345678/retrieve";

async fn server() -> RecordingServer {
    RecordingServer::start(|_| retrieve_answer(&[])).await
}

fn aws(server: &RecordingServer) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&server.url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "tests",
        )))
        .build()
}

fn settings(top_k: u32, attempt_timeout: Duration) -> KnowledgeBaseSettings {
    KnowledgeBaseSettings {
        knowledge_base_id: KB_ID.to_owned(),
        top_k,
        attempt_timeout,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 3,
        },
    }
}

fn knowledge_base(server: &RecordingServer) -> BedrockKnowledgeBase {
    BedrockKnowledgeBase::new(&aws(server), settings(5, Duration::from_secs(2)))
}

fn in_seconds(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// Every request the server got, each checked to be a `Retrieve` of `KB_ID` signed for
/// `bedrock` in `REGION` by the test's credentials.
fn retrieve_requests(server: &RecordingServer) -> Vec<RecordedRequest> {
    let requests = server.requests();
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", PATH)
        );
        assert_eq!(
            check_sigv4(request, (ACCESS_KEY, SECRET_KEY), "bedrock", REGION),
            Ok(()),
            "signed for bedrock in {REGION}"
        );
    }
    requests
}

#[tokio::test]
async fn sends_the_turn_and_top_k_and_reads_the_passages_back() {
    let server = server().await;
    server.script([retrieve_answer(&[
        (
            "Returns are accepted within 30 days.",
            Some("s3://docs/returns.md"),
        ),
        ("We ship to every EU country.", None),
    ])]);
    let knowledge_base =
        BedrockKnowledgeBase::new(&aws(&server), settings(7, Duration::from_secs(2)));
    assert_eq!(knowledge_base.id(), KB_ID);

    let passages = knowledge_base
        .retrieve("  Can I return my shoes?\n", in_seconds(5))
        .await
        .unwrap();

    assert_eq!(
        passages,
        [
            Passage {
                text: "Returns are accepted within 30 days.".into(),
                source: Some("s3://docs/returns.md".into()),
                score: Some(0.9),
            },
            Passage {
                text: "We ship to every EU country.".into(),
                source: None,
                score: Some(0.8),
            },
        ]
    );
    let requests = retrieve_requests(&server);
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].json(),
        json!({
            "retrievalQuery": {"type": "TEXT", "text": "Can I return my shoes?"},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 7}}
        })
    );
}

#[tokio::test]
async fn a_long_turn_is_cut_to_its_end_and_empty_results_are_left_out() {
    let server = server().await;
    server.script([Canned::json(
        200,
        json!({"retrievalResults": [
            {"content": {"text": "   "}},
            {"content": {"text": "kept"}, "location": {"type": "WEB", "webLocation": {"url": "https://shop.example/faq"}}},
            {"location": {"type": "S3", "s3Location": {"uri": "s3://b/no-content"}}}
        ]}),
    )]);
    let turn = format!(
        "{}{}",
        "early words ".repeat(200),
        "é".repeat(MAX_QUERY_CHARS)
    );

    let passages = knowledge_base(&server)
        .retrieve(&turn, in_seconds(5))
        .await
        .unwrap();

    assert_eq!(passages.len(), 1);
    assert_eq!(passages[0].text, "kept");
    assert_eq!(
        passages[0].source.as_deref(),
        Some("https://shop.example/faq")
    );
    let body = retrieve_requests(&server)[0].json();
    let query = body["retrievalQuery"]["text"].as_str().unwrap();
    assert_eq!(query.chars().count(), MAX_QUERY_CHARS);
    assert!(query.chars().all(|c| c == 'é'), "the turn's last words");
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_deadline() {
    for (failure, code) in [
        (ConverseException::Throttling, "ThrottlingException"),
        (ConverseException::InternalServer, "InternalServerException"),
        // Not a named Retrieve exception: told by its 503.
        (
            ConverseException::ServiceUnavailable,
            "ServiceUnavailableException",
        ),
    ] {
        let server = server().await;
        server.script([
            failure.answer("slow down"),
            retrieve_answer(&[("After the wait", None)]),
        ]);
        let passages = knowledge_base(&server)
            .retrieve("hours?", in_seconds(5))
            .await
            .unwrap();
        assert_eq!(passages[0].text, "After the wait", "{code}");
        assert_eq!(retrieve_requests(&server).len(), 2, "{code}: one retry");
    }
    // A failure that lasts ends with the last attempt's error.
    let server = server().await;
    server.script((0..3).map(|_| ConverseException::Throttling.answer("slow down")));
    let error = knowledge_base(&server)
        .retrieve("hours?", in_seconds(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RetrievalError::Unavailable { code, .. } if code == "ThrottlingException"),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(retrieve_requests(&server).len(), 3, "max_attempts");
}

/// What a test expects of an error.
type Expected = fn(&RetrievalError) -> bool;

#[tokio::test]
async fn access_denied_missing_or_invalid_is_final() {
    let cases: [(Canned, Expected); 3] = [
        (
            ConverseException::AccessDenied.answer("not authorized to perform bedrock:Retrieve"),
            |e| matches!(e, RetrievalError::Denied { code, message } if code == "AccessDeniedException" && message.contains("bedrock:Retrieve")),
        ),
        (
            ConverseException::ResourceNotFound.answer("no knowledge base KB12345678"),
            |e| matches!(e, RetrievalError::NotFound { code, .. } if code == "ResourceNotFoundException"),
        ),
        (
            ConverseException::Validation.answer("numberOfResults too large"),
            |e| matches!(e, RetrievalError::Refused { code, .. } if code == "ValidationException"),
        ),
    ];
    for (answer, expected) in cases {
        let server = server().await;
        server.script([answer]);
        let error = knowledge_base(&server)
            .retrieve("hours?", in_seconds(5))
            .await
            .unwrap_err();
        assert!(expected(&error), "{error:?}");
        assert!(!error.is_transient(), "{error:?}");
        assert_eq!(retrieve_requests(&server).len(), 1, "no retry: {error:?}");
    }
}

#[tokio::test]
async fn a_slow_knowledge_base_times_out_by_the_deadline() {
    let slow = RecordingServer::start(|_| {
        retrieve_answer(&[("too late", None)]).after(Duration::from_secs(3))
    })
    .await;
    let impatient = BedrockKnowledgeBase::new(&aws(&slow), settings(5, Duration::from_millis(300)));
    let started = Instant::now();
    let error = impatient
        .retrieve("hours?", Instant::now() + Duration::from_millis(800))
        .await
        .unwrap_err();
    assert_eq!(error, RetrievalError::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let attempts = retrieve_requests(&slow).len();
    assert!(
        (2..=3).contains(&attempts),
        "timeouts are retried: {attempts}"
    );

    // A deadline already past sends nothing.
    let idle = server().await;
    let error = knowledge_base(&idle)
        .retrieve("hours?", Instant::now())
        .await
        .unwrap_err();
    assert_eq!(error, RetrievalError::Timeout);
    assert!(idle.requests().is_empty());
}
