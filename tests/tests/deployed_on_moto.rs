//! The template's own queues, table and secret, created in moto's server from their properties
//! in `template.yaml`, and the functions configured from the environment the template gives
//! them: a signed delivery goes through the webhook, the queue and the processor, and a dead
//! letter through the alerter, and an alert SES refuses onto the retry queue. If template and
//! code drift apart, this fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use local_stack::resources::Stack;
use serde_json::json;
use shared::env_config::Env;
use shared::mail::SesMailer;
use shared::queue::SqsQueue;
use shared::secrets::SecretsManagerSecrets;
use shared::storm::dynamodb::DynamoDbStormControl;
use testkit::http_recorder;

fn env(map: BTreeMap<String, String>) -> Env<impl Fn(&str) -> Option<String>> {
    Env::from_fn(move |name| map.get(name).cloned())
}

/// Reads the queue's messages as Lambda's SQS event source hands them to the processor.
async fn receive_as_event(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> SqsEvent {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let mut event = SqsEvent::default();
    event.records = output
        .messages()
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record.attributes = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect::<HashMap<_, _>>()
                })
                .unwrap_or_default();
            record
        })
        .collect();
    event
}

#[tokio::test]
async fn a_signed_delivery_goes_through_the_templates_resources_to_a_reply() {
    let aws = testkit::moto_config().await;
    let alert_email = format!("{}@example.com", testkit::unique_name("oncall"));
    let stack = Stack::create(aws, &testkit::unique_name("wa-drift"), &alert_email).await;

    // The webhook, configured exactly as the template configures it.
    let webhook_env = stack.environment("WebhookFunction");
    let webhook_config =
        webhook::Config::from(&env(webhook_env)).expect("the template configures the webhook");
    let sqs = aws_sdk_sqs::Client::new(&stack.aws);
    let webhook = webhook::Webhook::new(
        SqsQueue::new(sqs.clone(), &webhook_config.queue_url),
        SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(&stack.aws),
            &webhook_config.secret_id,
            webhook_config.secrets_refresh,
        ),
    );
    let request =
        lambda_http::request::from_str(include_str!("../../events/webhook/text-message.json"))
            .unwrap();
    assert_eq!(webhook.handle(request).await.status(), 200);

    // The processor, configured by the template, but for the two endpoints it reaches on the
    // internet, which stand-ins replace here.
    let llm = http_recorder::openai_answering("I can chat with you!").await;
    let meta = http_recorder::graph_api("wamid.reply").await;
    let mut processor_env = stack.environment("ProcessorFunction");
    assert_eq!(processor_env["MAX_MESSAGE_AGE_HOURS"], "24");
    for (name, stand_in) in [
        ("LLM_BASE_URL", format!("{}/v1", llm.url)),
        ("META_API_BASE_URL", meta.url.clone()),
        // The signed sample's timestamp is fixed, so it grows older every day; the age limit
        // itself is tested in the processor's own tests.
        ("MAX_MESSAGE_AGE_HOURS", "0".to_owned()),
    ] {
        processor_env.insert(name.to_owned(), stand_in);
    }
    let processor_config = processor::Config::from(&env(processor_env))
        .expect("the template configures the processor");
    let processor = processor::build(
        &processor_config,
        &stack.aws,
        aws_sdk_dynamodb::Client::new(&stack.aws),
        stack.secrets(&processor_config.secret_id),
    )
    .unwrap();

    let event = receive_as_event(&sqs, &stack.resolver.refs["InboundQueue"]).await;
    assert_eq!(
        event.records.len(),
        1,
        "the webhook queued the message on the template's FIFO queue"
    );
    assert_eq!(
        event.records[0].attributes["MessageGroupId"],
        "106540352242922:15551234567"
    );
    let (response, metrics) = processor
        .handle(
            &event,
            &processor::Invocation::new("drift", Duration::from_secs(60)),
        )
        .await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert_eq!(metrics.counter("RepliesSent"), 1);

    let prompt = llm.requests()[0].json();
    assert_eq!(prompt["model"], "gpt-4o-mini");
    assert_eq!(
        prompt["messages"].as_array().unwrap().last().unwrap()["content"],
        "Olá! What can you do for me?"
    );
    let reply = meta
        .requests_to("/v26.0/106540352242922/messages")
        .into_iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "text");
    let reply = reply.expect("a reply was sent");
    assert_eq!(reply["to"], "15551234567");
    assert_eq!(reply["text"]["body"], "I can chat with you!");
    assert_eq!(
        meta.requests()[0].header("authorization"),
        Some("Bearer local-access-token")
    );
}

type DeployedAlerter = alerter::Alerter<SesMailer, DynamoDbStormControl, SqsQueue>;

/// The alerter as `main.rs` builds it, configured as the template configures it, with these
/// variables changed.
fn deployed_alerter(stack: &Stack, changed: &[(&str, &str)]) -> DeployedAlerter {
    let mut alerter_env = stack.environment("AlerterFunction");
    // Lambda sets AWS_REGION itself.
    alerter_env.insert("AWS_REGION".to_owned(), "us-east-1".to_owned());
    for (name, value) in changed {
        alerter_env.insert((*name).to_owned(), (*value).to_owned());
    }
    let config =
        alerter::Config::from(&env(alerter_env)).expect("the template configures the alerter");
    let sqs = aws_sdk_sqs::Client::new(&stack.aws);
    alerter::Alerter::new(
        SesMailer::new(aws_sdk_sesv2::Client::new(&stack.aws)),
        DynamoDbStormControl::new(
            aws_sdk_dynamodb::Client::new(&stack.aws),
            config.table_name.clone(),
        ),
        SqsQueue::new(sqs.clone(), config.archive_queue_url.clone()),
        SqsQueue::standard(sqs, config.alert_retry_queue_url.clone()),
        config,
    )
}

#[tokio::test]
async fn a_dead_letter_is_mailed_by_the_alerter_the_template_configures() {
    let aws = testkit::moto_config().await;
    let alert_email = format!("{}@example.com", testkit::unique_name("oncall"));
    let stack = Stack::create(aws, &testkit::unique_name("wa-drift"), &alert_email).await;
    let alerter = deployed_alerter(&stack, &[]);
    let ses = aws_sdk_sesv2::Client::new(&stack.aws);
    let from = stack.environment("AlerterFunction")["ERROR_FROM_EMAIL"].clone();
    testkit::mail::verify_sender(&ses, &from).await;
    let recipient = alert_email;
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../events/alerter/dead-letter.json")).unwrap();
    let response = alerter.handle(&event).await.unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));
    let mails = testkit::mail::sent_mails_to(&recipient).await;
    assert_eq!(mails.len(), 1);
    // The dead letter is kept in the template's archive, with its FIFO ids, to be moved back.
    let archived = testkit::drain(
        &aws_sdk_sqs::Client::new(&stack.aws),
        &stack.resolver.refs["DeadLetterArchiveQueue"],
    )
    .await;
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].group_id, "106540352242922:15551234567");
    assert!(
        mails[0]
            .text
            .contains(&stack.resolver.attributes["DeadLetterArchiveQueue.Arn"])
    );
    assert!(
        mails[0].subject.starts_with(&format!(
            "[{}] CRITICAL",
            stack.resolver.refs["AWS::StackName"]
        )),
        "{}",
        mails[0].subject
    );
}

#[tokio::test]
async fn an_alert_ses_refuses_waits_on_the_templates_retry_queue() {
    let aws = testkit::moto_config().await;
    let alert_email = format!("{}@example.com", testkit::unique_name("oncall"));
    let stack = Stack::create(aws, &testkit::unique_name("wa-retry"), &alert_email).await;
    // A sender SES has not verified: the mail is refused.
    let sender = format!("{}@example.net", testkit::unique_name("unverified"));
    let alerter = deployed_alerter(&stack, &[("ERROR_FROM_EMAIL", &sender)]);
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../events/alerter/dead-letter.json")).unwrap();
    let response = alerter.handle(&event).await.unwrap();
    assert_eq!(
        response["batchItemFailures"],
        json!([]),
        "archived, kept: they leave"
    );
    assert!(testkit::mail::sent_mails_to(&alert_email).await.is_empty());
    // The template's queue took the pending alert (a standard queue: no FIFO ids), and holds
    // it back for its delay before the alerter sees it again.
    let attributes = aws_sdk_sqs::Client::new(&stack.aws)
        .get_queue_attributes()
        .queue_url(&stack.resolver.refs["AlertRetryQueue"])
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let count = |name: &str| {
        attributes[&aws_sdk_sqs::types::QueueAttributeName::from(name)]
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(count("ApproximateNumberOfMessagesDelayed"), 1);
    assert_eq!(count("ApproximateNumberOfMessages"), 0);
    let archived = testkit::drain(
        &aws_sdk_sqs::Client::new(&stack.aws),
        &stack.resolver.refs["DeadLetterArchiveQueue"],
    )
    .await;
    assert_eq!(archived.len(), 1);
}
