#![allow(dead_code)] // Each test binary includes this module and uses a different part of it.

//! Set-up shared by the webhook's integration tests: a webhook wired to a real queue and a real
//! secret in moto's server.

use lambda_http::{Body, Request};
use shared::meta::signature::sign;
use shared::queue::SqsQueue;
use shared::secrets::SecretsManagerSecrets;
use std::time::Duration;
use webhook::Webhook;

pub const APP_SECRET: &str = "local-app-secret";
pub const VERIFY_TOKEN: &str = "local-verify-token";

/// A webhook over a fresh FIFO queue and a fresh secret in moto.
pub struct Harness {
    pub sqs: aws_sdk_sqs::Client,
    pub secrets_client: aws_sdk_secretsmanager::Client,
    pub queue_url: String,
    pub secret_arn: String,
    pub webhook: Webhook<SqsQueue, SecretsManagerSecrets>,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_refresh(Duration::from_secs(300)).await
    }

    pub async fn with_refresh(refresh: Duration) -> Self {
        let config = testkit::moto_config().await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let secrets_client = aws_sdk_secretsmanager::Client::new(&config);
        let queue_url = testkit::create_fifo_queue(&sqs, "inbound").await;
        let secret_arn = testkit::create_secret(
            &secrets_client,
            "app",
            &serde_json::json!({"META_APP_SECRET": APP_SECRET, "META_VERIFY_TOKEN": VERIFY_TOKEN,
                "META_ACCESS_TOKEN": "unused", "LLM_API_KEY": "unused"})
            .to_string(),
        )
        .await;
        let webhook = Self::webhook_for(&sqs, &secrets_client, &queue_url, &secret_arn, refresh);
        Self {
            sqs,
            secrets_client,
            queue_url,
            secret_arn,
            webhook,
        }
    }

    pub fn webhook_for(
        sqs: &aws_sdk_sqs::Client,
        secrets_client: &aws_sdk_secretsmanager::Client,
        queue_url: &str,
        secret_arn: &str,
        refresh: Duration,
    ) -> Webhook<SqsQueue, SecretsManagerSecrets> {
        Webhook::new(
            SqsQueue::new(sqs.clone(), queue_url),
            SecretsManagerSecrets::new(secrets_client.clone(), secret_arn, refresh),
        )
    }

    pub async fn drain(&self) -> Vec<testkit::ReceivedMessage> {
        testkit::drain(&self.sqs, &self.queue_url).await
    }
}

/// A POST of `body` signed with `secret`, as API Gateway hands it to the function.
pub fn signed_post(body: &[u8], secret: &str) -> Request {
    http::Request::builder()
        .method("POST")
        .uri("https://example.test/webhook")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(body, secret.as_bytes()))
        .body(Body::Binary(body.to_vec()))
        .expect("a valid request")
}
