//! `LLM_PROVIDER=bedrock` through the processor's real binary under the local Lambda runtime,
//! configured as `template.yaml` configures it, against the template's resources in moto: a
//! queued message is answered through a Converse stand-in that checks each request's SigV4
//! signature, with no `LLM_API_KEY` in the secret at all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use local_stack::local::event_sources::sqs_event;
use local_stack::resources::{LOCAL_SECRET, Stack};
use serde_json::{Value, json};
use testkit::bedrock::{ConverseStandIn, ExpectedSigner};
use testkit::http_recorder::RecordedRequest;

const PHONE_NUMBER_ID: &str = "106540352242922";
const USER: &str = "15551234567";

/// The secret as a Bedrock deployment holds it: Meta's values and nothing for an LLM.
async fn secret_without_llm_key(stack: &Stack) {
    let mut secret = json!({});
    for (key, value) in LOCAL_SECRET.iter().filter(|(key, _)| *key != "LLM_API_KEY") {
        secret[key] = json!(value);
    }
    aws_sdk_secretsmanager::Client::new(&stack.aws)
        .put_secret_value()
        .secret_id(&stack.resolver.refs["AppSecret"])
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap();
}

/// Queues a text message from [`USER`] as the webhook queues it.
async fn queue_text(sqs: &aws_sdk_sqs::Client, queue_url: &str, text: &str) {
    let id = testkit::unique_name("wamid.bedrock");
    let body = json!({"v": 1, "phone_number_id": PHONE_NUMBER_ID, "sender": {"wa_id": USER},
        "name": "Tester", "id": id, "timestamp": shared::clock::now_epoch_seconds() - 60,
        "content": {"type": "text", "body": text}});
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(body.to_string())
        .message_group_id(format!("{PHONE_NUMBER_ID}:{USER}"))
        .message_deduplication_id(id)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_processor_binary_answers_through_bedrock_with_no_llm_key_in_the_secret() {
    let aws = testkit::moto_config().await;
    let stack = Stack::create(
        aws.clone(),
        &testkit::unique_name("wa-bedrock"),
        "oncall@example.com",
    )
    .await;
    secret_without_llm_key(&stack).await;
    // The credentials the binary signs with: the ones start_function gives it.
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "testing".to_owned());
    let stand_in = ConverseStandIn::start_with(Some(ExpectedSigner {
        access_key: var("AWS_ACCESS_KEY_ID"),
        secret_key: var("AWS_SECRET_ACCESS_KEY"),
        region: "us-east-1".to_owned(),
    }))
    .await;
    stand_in.answer_with("Bedrock says hi");
    let meta = testkit::http_recorder::graph_api("wamid.reply").await;
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let log =
        std::env::temp_dir().join(format!("{}.log", testkit::unique_name("bedrock-processor")));
    let processor = stack
        .start_function(
            "processor",
            "ProcessorFunction",
            &moto,
            &[
                ("LLM_PROVIDER", "bedrock".to_owned()),
                ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", stand_in.url.clone()),
                ("META_API_BASE_URL", meta.url.clone()),
            ],
            log.clone(),
        )
        .await;

    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = &stack.resolver.refs["InboundQueue"];
    queue_text(&sqs, queue_url, "Hello Bedrock").await;
    let messages = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let answer = processor
        .invoke(&sqs_event(queue_url, &messages), Duration::from_secs(60))
        .await
        .expect("the processor answers");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        answer["batchItemFailures"],
        json!([]),
        "{answer}\n{log_text}"
    );

    let replies: Vec<Value> = meta
        .requests()
        .iter()
        .map(RecordedRequest::json)
        .filter(|body| body["type"] == "text")
        .collect();
    assert_eq!(replies.len(), 1, "{log_text}");
    assert_eq!(replies[0]["to"], USER);
    assert_eq!(replies[0]["text"]["body"], "Bedrock says hi");

    stand_in.assert_all_signed();
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path, "/model/us.amazon.nova-lite-v1%3A0/converse",
        "the default model, through the region's inference profile"
    );
    assert!(
        requests[0].header("x-amz-security-token").is_some(),
        "the role's session token is signed along"
    );
    let body = requests[0].json();
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "Hello Bedrock"}]}])
    );
    assert!(
        !log_text.contains("LLM_API_KEY"),
        "no complaint about a missing key: {log_text}"
    );
    assert!(
        !log_text.contains("Hello Bedrock"),
        "no message text in the logs"
    );
}
