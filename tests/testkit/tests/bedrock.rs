//! The Bedrock Converse stand-in and its SigV4 check, against requests signed by the real AWS SDK
//! (whose clients sign every AWS call the same way) and by `aws-sigv4` directly. No moto needed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::SystemTime;

use aws_sdk_sqs::config::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::{Value, json};
use testkit::bedrock::{
    ACCESS_KEY, ConverseException, ConverseStandIn, ExpectedSigner, REGION, SECRET_KEY,
    check_sigv4, converse_answer_with, guardrail_intervened,
};
use testkit::http_recorder::{Canned, RecordingServer};

const MODEL_PATH: &str = "/model/us.amazon.nova-lite-v1%3A0/converse";

/// An SDK configuration for `endpoint` with the tests' credentials (and `session_token`).
async fn sdk_config(endpoint: &str, session_token: Option<&str>) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            session_token.map(str::to_owned),
            None,
            "test",
        ))
        .load()
        .await
}

/// A REST-JSON call whose path label the SDK percent-encodes (`:` and `@`), as Bedrock's model
/// ids are: the check recomputes the signature over the path as it arrived.
#[tokio::test]
async fn verifies_the_sdk_signature_of_a_percent_encoded_rest_path() {
    let server = RecordingServer::start(|_| Canned::json(404, json!({"message": "none"}))).await;
    let client = aws_sdk_sesv2::Client::new(&sdk_config(&server.url, None).await);
    let _ = client
        .get_email_identity()
        .email_identity("user:1@example.com")
        .send()
        .await;
    let request = server.requests().into_iter().next().expect("one request");
    assert_eq!(request.path, "/v2/email/identities/user%3A1%40example.com");
    assert_eq!(
        check_sigv4(&request, (ACCESS_KEY, SECRET_KEY), "ses", REGION),
        Ok(())
    );
    assert!(check_sigv4(&request, (ACCESS_KEY, SECRET_KEY), "bedrock", REGION).is_err());
    assert!(check_sigv4(&request, (ACCESS_KEY, "wrong"), "ses", REGION).is_err());
    assert!(check_sigv4(&request, (ACCESS_KEY, SECRET_KEY), "ses", "eu-west-1").is_err());
}

/// A JSON-body call with a session token (what a Lambda role's credentials carry): the token
/// is signed, and a changed body or token fails.
#[tokio::test]
async fn verifies_the_sdk_signature_of_a_body_with_a_session_token() {
    let server = RecordingServer::start(|_| Canned::json(200, json!({"TableNames": []}))).await;
    let client =
        aws_sdk_dynamodb::Client::new(&sdk_config(&server.url, Some("session-token-value")).await);
    client.list_tables().send().await.expect("an empty list");
    let request = server.requests().into_iter().next().expect("one request");
    let credentials = (ACCESS_KEY, SECRET_KEY);
    assert!(
        request
            .header("authorization")
            .unwrap()
            .contains("x-amz-security-token")
    );
    assert_eq!(
        check_sigv4(&request, credentials, "dynamodb", REGION),
        Ok(())
    );

    let mut tampered = request.clone();
    tampered.body.push(b' ');
    assert!(check_sigv4(&tampered, credentials, "dynamodb", REGION).is_err());
    let mut token = request.clone();
    token
        .headers
        .insert("x-amz-security-token".into(), "another-token".into());
    assert!(check_sigv4(&token, credentials, "dynamodb", REGION).is_err());
}

/// Sends a Converse request to `stand_in` signed with `secret` for `region`.
async fn converse(stand_in: &ConverseStandIn, secret: &str, region: &str) -> reqwest::Response {
    let body = json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}).to_string();
    let url = format!("{}{MODEL_PATH}", stand_in.url);
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let identity = Credentials::new(ACCESS_KEY, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// The status, `x-amzn-ErrorType` and JSON body of `response`.
async fn read(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, error_type, response.json().await.unwrap())
}

#[tokio::test]
async fn the_stand_in_answers_signed_requests_and_refuses_the_others() {
    let stand_in = ConverseStandIn::start().await;
    let (status, error_type, body) = read(converse(&stand_in, SECRET_KEY, REGION).await).await;
    assert_eq!((status, error_type), (200, None));
    assert_eq!(body["output"]["message"]["content"][0]["text"], "Hello!");
    assert_eq!(body["output"]["message"]["role"], "assistant");
    assert_eq!(body["stopReason"], "end_turn");
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 42, "outputTokens": 7, "totalTokens": 49})
    );

    let (status, error_type, body) = read(converse(&stand_in, "wrong", REGION).await).await;
    assert_eq!(status, 403);
    assert_eq!(error_type.as_deref(), Some("InvalidSignatureException"));
    assert!(body["message"].as_str().unwrap().contains("signature"));
    let (status, _, _) = read(converse(&stand_in, SECRET_KEY, "eu-west-1").await).await;
    assert_eq!(status, 403);
    let unsigned = reqwest::Client::new()
        .post(format!("{}{MODEL_PATH}", stand_in.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);

    let checks = stand_in.signature_checks();
    let results: Vec<bool> = checks.iter().map(|c| c.result.is_ok()).collect();
    assert_eq!(results, [true, false, false, false]);
    assert_eq!(checks[0].path, MODEL_PATH);
    assert_eq!(stand_in.model_ids(), vec!["us.amazon.nova-lite-v1:0"; 4]);
}

#[tokio::test]
async fn scripted_answers_and_errors_come_first_in_bedrock_shapes() {
    let stand_in = ConverseStandIn::start().await;
    stand_in.answer_with("Default");
    stand_in.script([
        ConverseException::Throttling.answer("Too many requests"),
        ConverseException::AccessDenied.coral_answer("You don't have access"),
        guardrail_intervened("Sorry, I can't help with that."),
        converse_answer_with("Cut", "max_tokens", 10, 100),
    ]);
    let (status, error_type, body) = read(converse(&stand_in, SECRET_KEY, REGION).await).await;
    assert_eq!(
        (status, error_type.as_deref()),
        (429, Some("ThrottlingException"))
    );
    assert_eq!(body, json!({"message": "Too many requests"}));
    let (status, error_type, _) = read(converse(&stand_in, SECRET_KEY, REGION).await).await;
    assert_eq!(status, 403);
    assert_eq!(
        error_type.as_deref(),
        Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazon.bedrock/")
    );
    let (_, _, body) = read(converse(&stand_in, SECRET_KEY, REGION).await).await;
    assert_eq!(body["stopReason"], "guardrail_intervened");
    let (_, _, body) = read(converse(&stand_in, SECRET_KEY, REGION).await).await;
    assert_eq!(body["stopReason"], "max_tokens");
    assert_eq!(body["usage"]["totalTokens"], 110);
    let (_, _, body) = read(converse(&stand_in, SECRET_KEY, REGION).await).await;
    assert_eq!(body["output"]["message"]["content"][0]["text"], "Default");
    stand_in.assert_all_signed();
}

#[tokio::test]
async fn every_exception_has_its_documented_status() {
    let statuses: Vec<(&str, u16)> = ConverseException::ALL
        .iter()
        .map(|e| (e.name(), e.answer("m").status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ThrottlingException", 429),
            ("ServiceUnavailableException", 503),
            ("ModelNotReadyException", 429),
            ("InternalServerException", 500),
            ("ModelTimeoutException", 408),
            ("ModelErrorException", 424),
            ("ValidationException", 400),
            ("AccessDeniedException", 403),
            ("ResourceNotFoundException", 404),
            ("ServiceQuotaExceededException", 400),
        ]
    );
}

#[tokio::test]
async fn an_unchecked_stand_in_answers_anything_on_the_converse_path_only() {
    let stand_in = ConverseStandIn::start_with(None).await;
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{}{MODEL_PATH}", stand_in.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let other = client
        .post(format!("{}/model/x/invoke", stand_in.url))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    assert!(stand_in.signature_checks().is_empty());
    // A custom signer is what the checking stand-in compares with.
    let custom = ConverseStandIn::start_with(Some(ExpectedSigner {
        region: "eu-central-1".into(),
        ..ExpectedSigner::default()
    }))
    .await;
    let (status, _, _) = read(converse(&custom, SECRET_KEY, "eu-central-1").await).await;
    assert_eq!(status, 200);
}
