//! The template's stateful resources (queues, table, secret) created in moto's server from their
//! properties in `template.yaml`, and the environment the template gives each function, resolved
//! against them. The local stack and the stack tests both start from here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use serde_norway::Value;
use shared::secrets::SecretsManagerSecrets;

use crate::template::{Resolver, Template, scalar};

/// The secret's values in a local stack: the documented local values, never real ones. The
/// last is the example shop's API key, which its tools send (`{"secret": "SHOP_API_KEY"}`) and
/// its stand-in wants.
pub const LOCAL_SECRET: [(&str, &str); 5] = [
    ("META_APP_SECRET", "local-app-secret"),
    ("META_VERIFY_TOKEN", "local-verify-token"),
    ("META_ACCESS_TOKEN", "local-access-token"),
    ("LLM_API_KEY", ""),
    ("SHOP_API_KEY", "local-shop-api-key"),
];

/// The template's resources, created.
pub struct Stack {
    /// The template.
    pub template: Template,
    /// How its intrinsic functions resolve against the created resources.
    pub resolver: Resolver,
    /// The AWS configuration the resources were created with.
    pub aws: aws_config::SdkConfig,
}

impl Stack {
    /// Creates the template's stateful resources in moto and returns how the template's
    /// intrinsic functions resolve against them.
    pub async fn create(aws: aws_config::SdkConfig, stack_name: &str, alert_email: &str) -> Self {
        let template = Template::load();
        let region = aws
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let mut resolver = Resolver::default();
        for name in template.names("Parameters") {
            if let Some(default) = template.parameter_default(&name) {
                resolver.refs.insert(name, default);
            }
        }
        for (name, value) in [
            ("AlertEmail", alert_email.to_owned()),
            ("AlertFromEmail", "alerts@example.com".to_owned()),
            ("AWS::StackName", stack_name.to_owned()),
            ("AWS::Region", region),
            ("AWS::AccountId", "123456789012".to_owned()),
            ("AWS::Partition", "aws".to_owned()),
            ("AWS::URLSuffix", "amazonaws.com".to_owned()),
        ] {
            resolver.refs.insert(name.to_owned(), value);
        }
        resolver.evaluate_conditions(&template);

        let mut stack = Self {
            template,
            resolver,
            aws,
        };
        // Each queue after the one its redrive policy refers to.
        stack.create_queue("DeadLetterArchiveQueue").await;
        stack.create_queue("InboundDeadLetterQueue").await;
        stack.create_queue("InboundQueue").await;
        stack.create_queue("AlertRetryQueue").await;
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
        let name = format!("{}-table", self.resolver.refs["AWS::StackName"]);
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
            format!(
                "arn:aws:dynamodb:{}:123456789012:table/{name}",
                self.resolver.refs["AWS::Region"]
            ),
        );
    }

    async fn create_secret(&mut self) {
        let properties = self.template.properties("AppSecret").clone();
        let generate = &properties["GenerateSecretString"];
        // The placeholders, as deployed, then the values put-secret.sh would store.
        let mut value: serde_json::Value =
            serde_json::from_str(generate["SecretStringTemplate"].as_str().unwrap()).unwrap();
        assert_eq!(
            generate["GenerateStringKey"].as_str(),
            Some("META_VERIFY_TOKEN")
        );
        for (key, local) in LOCAL_SECRET {
            value[key] = json!(local);
        }
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

    /// Starts `function`'s built binary under the local Lambda runtime, configured as the
    /// template configures `logical_id` and then by `overrides`, reaching AWS at `aws_endpoint`
    /// with the test's credentials (or dummy ones); its log goes to `log_file`.
    pub async fn start_function(
        &self,
        function: &str,
        logical_id: &str,
        aws_endpoint: &str,
        overrides: &[(&str, String)],
        log_file: std::path::PathBuf,
    ) -> crate::runtime::LambdaFunction {
        let binary = crate::runtime::binaries_dir().join(function);
        assert!(
            binary.is_file(),
            "{} is not built: run the tests with `cargo test --workspace` (or `make test`), which builds the functions",
            binary.display()
        );
        let mut environment = self.environment(logical_id);
        for (key, value) in overrides {
            environment.insert((*key).to_owned(), value.clone());
        }
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            let value = std::env::var(key).unwrap_or_else(|_| "testing".to_owned());
            environment.insert(key.to_owned(), value);
        }
        environment.insert("AWS_ENDPOINT_URL".to_owned(), aws_endpoint.to_owned());
        environment.insert("AWS_REGION".to_owned(), "us-east-1".to_owned());
        crate::runtime::LambdaFunction::start(crate::runtime::FunctionSpec {
            name: function.to_owned(),
            binary,
            environment,
            log_file: Some(log_file),
        })
        .await
        .expect("the function's process starts")
    }

    /// The environment the template gives a function, resolved.
    pub fn environment(&self, function: &str) -> BTreeMap<String, String> {
        self.template
            .environment(function)
            .into_iter()
            .filter_map(|(name, value)| Some((name, self.resolver.resolve(&value)?)))
            .collect()
    }

    /// The secret, read through Secrets Manager as the functions read it.
    pub fn secrets(&self, secret_id: &str) -> Arc<SecretsManagerSecrets> {
        Arc::new(SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(&self.aws),
            secret_id,
            Duration::from_secs(300),
        ))
    }
}
