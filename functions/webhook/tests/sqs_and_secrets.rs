//! The webhook against SQS and Secrets Manager in moto's server (see tests/with-moto.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod common;

use std::time::Duration;

use common::{APP_SECRET, Harness, signed_post};
use http::StatusCode;
use serde_json::json;
use shared::inbound::{InboundMessage, MessageContent};

fn text(from: &str, id: &str, body: &str) -> serde_json::Value {
    json!({"from": from, "id": id, "timestamp": "1795255200", "type": "text", "text": {"body": body}})
}

fn delivery(messages: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "messages": messages}}]}]}))
    .unwrap()
}

fn parse(body: &str) -> InboundMessage {
    serde_json::from_str(body).expect("the queue body is an InboundMessage")
}

#[tokio::test]
async fn a_signed_sample_event_lands_on_the_queue_with_group_and_dedup_ids() {
    let harness = Harness::new().await;
    let request =
        lambda_http::request::from_str(include_str!("../../../events/webhook/text-message.json"))
            .unwrap();
    let response = harness.webhook.handle(request).await;
    assert_eq!(response.status(), StatusCode::OK);

    let queued = harness.drain().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].group_id, "106540352242922:15551234567");
    assert_eq!(
        queued[0].deduplication_id,
        "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZBRTQ0QzE5NTM2RTY4QTM3MAA="
    );
    let message = parse(&queued[0].body);
    assert_eq!(message.v, 1);
    assert_eq!(message.name.as_deref(), Some("Ana Lima"));
    assert_eq!(message.timestamp, 1_795_255_200);
    assert_eq!(
        message.content,
        MessageContent::Text {
            body: "Olá! What can you do for me?".into()
        }
    );
}

/// A message sent from the WhatsApp Business app on the bot's number (coexistence) lands in
/// the group of that user's conversation, after the user's message, as a `business_echo` body
/// without its text; Meta's redelivery of it is deduplicated.
#[tokio::test]
async fn a_business_app_echo_lands_in_the_users_group_after_their_message() {
    let harness = Harness::new().await;
    let message =
        lambda_http::request::from_str(include_str!("../../../events/webhook/text-message.json"))
            .unwrap();
    assert_eq!(
        harness.webhook.handle(message).await.status(),
        StatusCode::OK
    );
    for _ in 0..2 {
        let echo = lambda_http::request::from_str(include_str!(
            "../../../events/webhook/business-app-echo.json"
        ))
        .unwrap();
        assert_eq!(harness.webhook.handle(echo).await.status(), StatusCode::OK);
    }

    let queued = harness.drain().await;
    assert_eq!(
        queued.len(),
        2,
        "the redelivered echo is deduplicated: {queued:?}"
    );
    assert!(
        queued
            .iter()
            .all(|m| m.group_id == "106540352242922:15551234567")
    );
    let echo_id = "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";
    assert_eq!(queued[1].deduplication_id, format!("echo:{echo_id}"));
    let body: serde_json::Value = serde_json::from_str(&queued[1].body).unwrap();
    assert_eq!(
        body,
        json!({"kind": "business_echo", "v": 1, "phone_number_id": "106540352242922",
            "recipient": "15551234567", "message_id": echo_id, "timestamp": 1_795_255_260})
    );
    assert!(matches!(
        shared::queue_body::QueueBody::read(&queued[0].body),
        Ok(shared::queue_body::QueueBody::Message(_))
    ));
}

#[tokio::test]
async fn each_conversation_keeps_its_order_and_redeliveries_are_deduplicated() {
    let harness = Harness::new().await;
    let body = delivery(vec![
        text("15550000001", "wamid.a1", "a1"),
        text("15550000002", "wamid.b1", "b1"),
        text("15550000001", "wamid.a2", "a2"),
        text("15550000002", "wamid.b2", "b2"),
        text("15550000001", "wamid.a3", "a3"),
    ]);
    // Meta delivers the same body again, as it does when it misses our 200.
    for _ in 0..2 {
        assert_eq!(
            harness
                .webhook
                .handle(signed_post(&body, APP_SECRET))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let queued = harness.drain().await;
    let of_group = |group: &str| -> Vec<String> {
        queued
            .iter()
            .filter(|m| m.group_id == group)
            .map(|m| parse(&m.body).id)
            .collect()
    };
    assert_eq!(
        queued.len(),
        5,
        "the second delivery must be deduplicated: {queued:?}"
    );
    assert_eq!(
        of_group("106540352242922:15550000001"),
        ["wamid.a1", "wamid.a2", "wamid.a3"]
    );
    assert_eq!(
        of_group("106540352242922:15550000002"),
        ["wamid.b1", "wamid.b2"]
    );
}

#[tokio::test]
async fn a_delivery_of_twelve_messages_is_queued_whole_and_in_order() {
    let harness = Harness::new().await;
    let messages = (0..12)
        .map(|i| text("15550000001", &format!("wamid.m{i:02}"), &format!("m{i}")))
        .collect();
    let response = harness
        .webhook
        .handle(signed_post(&delivery(messages), APP_SECRET))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<_> = harness
        .drain()
        .await
        .iter()
        .map(|m| parse(&m.body).id)
        .collect();
    let expected: Vec<_> = (0..12).map(|i| format!("wamid.m{i:02}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_queue_that_fails_gives_a_500_and_a_retry_then_succeeds() {
    let harness = Harness::new().await;
    let missing_queue = format!(
        "{}-missing.fifo",
        harness.queue_url.trim_end_matches(".fifo")
    );
    let broken = Harness::webhook_for(
        &harness.sqs,
        &harness.secrets_client,
        &missing_queue,
        &harness.secret_arn,
        Duration::from_secs(300),
    );
    let body = delivery(vec![text("15550000001", "wamid.retry", "hello")]);
    assert_eq!(
        broken.handle(signed_post(&body, APP_SECRET)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(harness.drain().await.is_empty());
    // Meta's redelivery, once the queue is back, is accepted.
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(&body, APP_SECRET))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(harness.drain().await.len(), 1);
}

#[tokio::test]
async fn a_rotated_app_secret_takes_effect_and_the_previous_one_is_still_accepted() {
    let harness = Harness::with_refresh(Duration::ZERO).await;
    let body = delivery(vec![text("15550000001", "wamid.r1", "before")]);
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(&body, APP_SECRET))
            .await
            .status(),
        StatusCode::OK
    );

    harness
        .secrets_client
        .put_secret_value()
        .secret_id(&harness.secret_arn)
        .secret_string(
            json!({"META_APP_SECRET": "rotated-app-secret", "META_APP_SECRET_PREVIOUS": APP_SECRET,
                "META_VERIFY_TOKEN": "local-verify-token"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let after = delivery(vec![text("15550000001", "wamid.r2", "after")]);
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(&after, "rotated-app-secret"))
            .await
            .status(),
        StatusCode::OK
    );
    let late = delivery(vec![text("15550000001", "wamid.r3", "late")]);
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(&late, APP_SECRET))
            .await
            .status(),
        StatusCode::OK
    );
    let forged = delivery(vec![text("15550000001", "wamid.r4", "forged")]);
    assert_eq!(
        harness
            .webhook
            .handle(signed_post(&forged, "guess"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(harness.drain().await.len(), 3);
}

#[tokio::test]
async fn a_missing_secret_is_a_500_and_nothing_is_queued() {
    let harness = Harness::new().await;
    let lost = Harness::webhook_for(
        &harness.sqs,
        &harness.secrets_client,
        &harness.queue_url,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist",
        Duration::from_secs(300),
    );
    let body = delivery(vec![text("15550000001", "wamid.s1", "hi")]);
    assert_eq!(
        lost.handle(signed_post(&body, APP_SECRET)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(harness.drain().await.is_empty());
}

#[tokio::test]
async fn the_handshake_reads_the_verify_token_from_secrets_manager() {
    let harness = Harness::new().await;
    let request = lambda_http::request::from_str(include_str!(
        "../../../events/webhook/verify-subscription.json"
    ))
    .unwrap();
    let response = harness.webhook.handle(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_ref(), b"1158201444");
}

#[tokio::test]
async fn bodies_keep_sqs_character_rules_that_moto_does_not_enforce() {
    // Moto stores any body; SQS refuses one with a character outside its set. Through this
    // proxy, moto refuses as SQS does.
    let rules = testkit::sqs_rules::enforce_sqs_rules().await;
    let harness = Harness::new().await;
    let sqs = aws_sdk_sqs::Client::new(&rules.config().await);
    let raw = shared::queue::QueueEntry {
        group_id: "g".into(),
        deduplication_id: "raw".into(),
        body: "not for SQS \u{FFFF}".into(),
    };
    let refused = shared::queue::MessageQueue::send_batch(
        &shared::queue::SqsQueue::new(sqs.clone(), &harness.queue_url),
        &[raw],
    )
    .await;
    assert!(refused.is_err(), "the proxy refuses as SQS does");
    assert_eq!(rules.refused(), 1);

    // Noncharacters are legal JSON and reach us in texts and names: the delivery is queued.
    let webhook = Harness::webhook_for(
        &sqs,
        &harness.secrets_client,
        &harness.queue_url,
        &harness.secret_arn,
        Duration::from_secs(300),
    );
    let text_with_nonchars = "hi \u{FFFE}\u{FFFF} 😀";
    let body = delivery(vec![text(
        "15551234567",
        "wamid.nonchar",
        text_with_nonchars,
    )]);
    let response = webhook.handle(signed_post(&body, APP_SECRET)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(rules.refused(), 1, "the webhook's body was not refused");
    let queued = harness.drain().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        parse(&queued[0].body).content,
        MessageContent::Text {
            body: text_with_nonchars.into()
        }
    );
}
