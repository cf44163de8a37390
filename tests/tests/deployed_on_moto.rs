//! The template's own queues, table and secret, created in moto's server from their properties
//! in `template.yaml`, and the functions configured from the environment the template gives
//! them: a signed delivery goes through the webhook, the queue and the processor, and a dead
//! letter through the alerter. If template and code drift apart, this fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::json;
use serde_norway::Value;
use shared::env_config::Env;
use shared::mail::SesMailer;
use shared::queue::SqsQueue;
use shared::secrets::SecretsManagerSecrets;
use shared::storm::dynamodb::DynamoDbStormControl;
use shared::testkit::{
    self,
    http_recorder::{Canned, RecordedRequest, RecordingServer},
};
use stack_tests::{Resolver, Template, scalar};

const APP_SECRET: &str = "local-app-secret";

struct Stack {
    template: Template,
    resolver: Resolver,
    aws: aws_config::SdkConfig,
}

impl Stack {
    /// Creates the template's stateful resources in moto and returns how the template's
    /// intrinsic functions resolve against them.
    async fn create() -> Self {
        let template = Template::load();
        let aws = testkit::moto_config().await;
        let stack_name = testkit::unique_name("wa-drift");
        let mut resolver = Resolver::default();
        for name in template.names("Parameters") {
            if let Some(default) = template.parameter_default(&name) {
                resolver.refs.insert(name, default);
            }
        }
        for (name, value) in [
            (
                "AlertEmail",
                format!("{}@example.com", testkit::unique_name("oncall")),
            ),
            ("AlertFromEmail", "alerts@example.com".to_owned()),
            ("AWS::StackName", stack_name),
            ("AWS::Region", "us-east-1".to_owned()),
            ("AWS::AccountId", "123456789012".to_owned()),
            ("AWS::Partition", "aws".to_owned()),
            ("AWS::URLSuffix", "amazonaws.com".to_owned()),
        ] {
            resolver.refs.insert(name.to_owned(), value);
        }
        resolver.conditions.insert(
            "HasReplyTo".to_owned(),
            !resolver.refs["AlertReplyToEmail"].is_empty(),
        );

        let mut stack = Self {
            template,
            resolver,
            aws,
        };
        // The dead-letter queue first: the inbound queue's redrive policy refers to it.
        stack.create_queue("InboundDeadLetterQueue").await;
        stack.create_queue("InboundQueue").await;
        stack.create_table().await;
        stack.create_secret().await;
        stack
    }

    async fn create_queue(&mut self, logical_id: &str) {
        let sqs = aws_sdk_sqs::Client::new(&self.aws);
        let properties = self.template.properties(logical_id).clone();
        let name = self
            .resolver
            .resolve(&properties["QueueName"])
            .expect("the queue's name resolves");
        let mut request = sqs.create_queue().queue_name(&name);
        for (key, value) in properties.as_mapping().expect("properties") {
            let key = key.as_str().expect("a property name");
            if key == "QueueName" {
                continue;
            }
            let value = match value {
                Value::Mapping(map) => {
                    let resolved: serde_json::Map<String, serde_json::Value> = map
                        .iter()
                        .map(|(k, v)| {
                            let text = self.resolver.resolve(v).expect("the property resolves");
                            let json = text
                                .parse::<u64>()
                                .map(serde_json::Value::from)
                                .unwrap_or(serde_json::Value::from(text));
                            (k.as_str().unwrap_or_default().to_owned(), json)
                        })
                        .collect();
                    serde_json::Value::Object(resolved).to_string()
                }
                other => self.resolver.resolve(other).expect("the property resolves"),
            };
            request = request.attributes(QueueAttributeName::from(key), value);
        }
        let url = request
            .send()
            .await
            .expect("moto creates the queue as the template describes it")
            .queue_url
            .unwrap();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        self.resolver.refs.insert(logical_id.to_owned(), url);
        self.resolver
            .attributes
            .insert(format!("{logical_id}.Arn"), arn);
        self.resolver
            .attributes
            .insert(format!("{logical_id}.QueueName"), name);
    }

    async fn create_table(&mut self) {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.aws);
        let properties = self.template.properties("Table").clone();
        let name = testkit::unique_name("wa-drift-table");
        let text = |v: &Value| scalar(v).expect("a scalar");
        let mut request = dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::from(text(&properties["BillingMode"]).as_str()));
        for definition in properties["AttributeDefinitions"].as_sequence().unwrap() {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(text(&definition["AttributeName"]))
                    .attribute_type(ScalarAttributeType::from(
                        text(&definition["AttributeType"]).as_str(),
                    ))
                    .build()
                    .unwrap(),
            );
        }
        for key in properties["KeySchema"].as_sequence().unwrap() {
            request = request.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(text(&key["AttributeName"]))
                    .key_type(KeyType::from(text(&key["KeyType"]).as_str()))
                    .build()
                    .unwrap(),
            );
        }
        request
            .send()
            .await
            .expect("moto creates the table as the template describes it");
        let ttl = &properties["TimeToLiveSpecification"];
        dynamodb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(text(&ttl["AttributeName"]))
                    .enabled(ttl["Enabled"].as_bool().unwrap())
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        self.resolver.refs.insert("Table".to_owned(), name.clone());
        self.resolver.attributes.insert(
            "Table.Arn".to_owned(),
            format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}"),
        );
    }

    async fn create_secret(&mut self) {
        let properties = self.template.properties("AppSecret").clone();
        let generate = &properties["GenerateSecretString"];
        // The placeholders, as deployed, then the values put-secret.sh would store.
        let mut value: serde_json::Value =
            serde_json::from_str(generate["SecretStringTemplate"].as_str().unwrap()).unwrap();
        value[generate["GenerateStringKey"].as_str().unwrap()] = json!("generated-verify-token");
        value["META_APP_SECRET"] = json!(APP_SECRET);
        value["META_ACCESS_TOKEN"] = json!("meta-token");
        value["LLM_API_KEY"] = json!("llm-key");
        let arn = aws_sdk_secretsmanager::Client::new(&self.aws)
            .create_secret()
            .name(self.resolver.resolve(&properties["Name"]).unwrap())
            .secret_string(value.to_string())
            .send()
            .await
            .unwrap()
            .arn
            .unwrap();
        self.resolver.refs.insert("AppSecret".to_owned(), arn);
    }

    /// The environment the template gives a function, resolved.
    fn environment(&self, function: &str) -> BTreeMap<String, String> {
        self.template
            .environment(function)
            .into_iter()
            .filter_map(|(name, value)| Some((name, self.resolver.resolve(&value)?)))
            .collect()
    }

    fn secrets(&self, secret_id: &str) -> Arc<SecretsManagerSecrets> {
        Arc::new(SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(&self.aws),
            secret_id,
            Duration::from_secs(300),
        ))
    }
}

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
    let stack = Stack::create().await;

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
    let llm = RecordingServer::start(|_: &RecordedRequest| {
        Canned::json(200, json!({"choices": [{"message": {"role": "assistant", "content": "I can chat with you!"}}]}))
    })
    .await;
    let meta = RecordingServer::start(|request: &RecordedRequest| {
        if request.json()["status"] == "read" {
            Canned::json(200, json!({"success": true}))
        } else {
            Canned::json(200, json!({"messages": [{"id": "wamid.reply"}]}))
        }
    })
    .await;
    let mut processor_env = stack.environment("ProcessorFunction");
    for (name, stand_in) in [
        ("LLM_BASE_URL", format!("{}/v1", llm.url)),
        ("META_API_BASE_URL", meta.url.clone()),
    ] {
        processor_env.insert(name.to_owned(), stand_in);
    }
    let processor_config = processor::Config::from(&env(processor_env))
        .expect("the template configures the processor");
    let processor = processor::build(
        &processor_config,
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
        Some("Bearer meta-token")
    );
}

#[tokio::test]
async fn a_dead_letter_is_mailed_by_the_alerter_the_template_configures() {
    let stack = Stack::create().await;
    let mut alerter_env = stack.environment("AlerterFunction");
    // Lambda sets AWS_REGION itself.
    alerter_env.insert("AWS_REGION".to_owned(), "us-east-1".to_owned());
    let config =
        alerter::Config::from(&env(alerter_env)).expect("the template configures the alerter");
    let ses = aws_sdk_sesv2::Client::new(&stack.aws);
    testkit::mail::verify_sender(&ses, &config.from).await;
    let recipient = config.recipients[0].clone();
    let alerter = alerter::Alerter::new(
        SesMailer::new(ses),
        DynamoDbStormControl::new(
            aws_sdk_dynamodb::Client::new(&stack.aws),
            config.table_name.clone(),
        ),
        config,
    );
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../events/alerter/dead-letter.json")).unwrap();
    let response = alerter.handle(&event).await.unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));
    let mails = testkit::mail::sent_mails_to(&recipient).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].subject.starts_with(&format!(
            "[{}] CRITICAL",
            stack.resolver.refs["AWS::StackName"]
        )),
        "{}",
        mails[0].subject
    );
}
