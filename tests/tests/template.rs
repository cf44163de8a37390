//! Static checks of `template.yaml` against the code: every variable a function reads is set
//! for it (and nothing else), every reference points at something, and each function's role
//! grants exactly what that function uses, on its own resources only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};

use local_stack::{PSEUDO_PARAMETERS, Resolver, Template, chosen, intrinsic, references, scalar};
use serde_norway::Value;

/// Variables Lambda sets itself; a template must not set them.
const SET_BY_LAMBDA: [&str; 2] = ["AWS_REGION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"];

struct Function {
    logical_id: &'static str,
    binary: &'static str,
    variables: &'static [&'static str],
    /// The actions the function's code calls, each on the one resource it calls it on.
    grants: &'static [(&'static str, &'static str)],
}

const FUNCTIONS: [Function; 3] = [
    Function {
        logical_id: "WebhookFunction",
        binary: "webhook",
        variables: webhook::VARIABLES,
        grants: &[
            ("logs:CreateLogStream", "WebhookLogGroup"),
            ("logs:PutLogEvents", "WebhookLogGroup"),
            // SqsQueue::send_batch (SendMessageBatch is authorised by SendMessage).
            ("sqs:SendMessage", "InboundQueue"),
            // SecretsManagerSecrets::current.
            ("secretsmanager:GetSecretValue", "AppSecret"),
        ],
    },
    Function {
        logical_id: "ProcessorFunction",
        binary: "processor",
        variables: processor::config::VARIABLES,
        grants: &[
            ("logs:CreateLogStream", "ProcessorLogGroup"),
            ("logs:PutLogEvents", "ProcessorLogGroup"),
            // The SQS event source mapping, on the function's behalf.
            ("sqs:ReceiveMessage", "InboundQueue"),
            ("sqs:DeleteMessage", "InboundQueue"),
            ("sqs:GetQueueAttributes", "InboundQueue"),
            // DynamoDbConversationStore: UpdateItem (claim, complete, release, counters),
            // BatchGetItem (the history and the user's records), PutItem (exchanges, opt-out),
            // DeleteItem (reset, move, opt-in), GetItem (a refused claim read back).
            // tests/tests/cost_report.rs checks these against what the processor really calls.
            ("dynamodb:BatchGetItem", "Table"),
            ("dynamodb:DeleteItem", "Table"),
            ("dynamodb:GetItem", "Table"),
            ("dynamodb:PutItem", "Table"),
            ("dynamodb:UpdateItem", "Table"),
            ("secretsmanager:GetSecretValue", "AppSecret"),
            // The numbers' own knowledge documents and tools files, under numbers/.
            ("s3:GetObject", "KnowledgeBucket"),
        ],
    },
    Function {
        logical_id: "AlerterFunction",
        binary: "alerter",
        variables: alerter::config::VARIABLES,
        grants: &[
            ("logs:CreateLogStream", "AlerterLogGroup"),
            ("logs:PutLogEvents", "AlerterLogGroup"),
            ("sqs:ReceiveMessage", "InboundDeadLetterQueue"),
            ("sqs:DeleteMessage", "InboundDeadLetterQueue"),
            ("sqs:GetQueueAttributes", "InboundDeadLetterQueue"),
            // SqsQueue::send_batch into the archive, before a dead letter is mailed.
            ("sqs:SendMessage", "DeadLetterArchiveQueue"),
            // The SQS event source mapping of the retry queue, on the function's behalf.
            ("sqs:ReceiveMessage", "AlertRetryQueue"),
            ("sqs:DeleteMessage", "AlertRetryQueue"),
            ("sqs:GetQueueAttributes", "AlertRetryQueue"),
            // SqsQueue::send_batch of pending alerts, and Lambda's on-failure records, which
            // Lambda sends with the function's role.
            ("sqs:SendMessage", "AlertRetryQueue"),
            // DynamoDbStormControl: UpdateItem only.
            ("dynamodb:UpdateItem", "Table"),
            // SesMailer: SESv2 SendEmail with raw content, on the sender's identity.
            ("ses:SendEmail", "AlertFromEmail"),
            ("ses:SendRawEmail", "AlertFromEmail"),
        ],
    },
];

#[test]
fn every_variable_a_function_reads_is_set_and_nothing_else() {
    let template = Template::load();
    for function in &FUNCTIONS {
        let set: BTreeSet<String> = template
            .environment(function.logical_id)
            .into_keys()
            .collect();
        let read: BTreeSet<String> = function
            .variables
            .iter()
            .filter(|v| !SET_BY_LAMBDA.contains(v))
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            set, read,
            "{}: the variables set (left) differ from those read (right)",
            function.logical_id
        );
        for name in SET_BY_LAMBDA {
            assert!(
                !set.contains(name),
                "{}: {name} is reserved by Lambda",
                function.logical_id
            );
        }
    }
}

#[test]
fn every_reference_points_at_something() {
    let template = Template::load();
    let parameters = template.names("Parameters");
    let resources = template.names("Resources");
    let conditions = template.names("Conditions");
    let mut checked = 0;
    for section in ["Resources", "Outputs", "Conditions", "Globals"] {
        for (function, name) in references(&template.root[section]) {
            let known = match function.as_str() {
                "If" => conditions.contains(&name),
                "GetAtt" => resources.contains(&name),
                _ => {
                    parameters.contains(&name)
                        || resources.contains(&name)
                        || PSEUDO_PARAMETERS.contains(&name.as_str())
                }
            };
            assert!(known, "{section}: {function} {name} points at nothing");
            checked += 1;
        }
    }
    assert!(
        checked > 50,
        "only {checked} references found: is the walk broken?"
    );
}

#[test]
fn every_parameter_is_used() {
    let template = Template::load();
    let used: BTreeSet<String> = ["Resources", "Conditions", "Globals", "Outputs"]
        .into_iter()
        .flat_map(|section| references(&template.root[section]))
        .map(|(_, name)| name)
        .collect();
    for parameter in template.names("Parameters") {
        assert!(
            used.contains(&parameter),
            "the parameter {parameter} is never used"
        );
    }
}

/// The resource types that can receive Meta's webhooks.
const FRONT_DOOR_TYPES: [&str; 3] = [
    "AWS::Serverless::HttpApi",
    "AWS::ApiGatewayV2::Api",
    "AWS::Lambda::Url",
];

/// How the template resolves when deployed with its defaults and `parameters`, with made-up
/// physical ids for the front doors and the webhook.
fn deployment(template: &Template, parameters: &[(&str, &str)]) -> Resolver {
    let mut resolver = Resolver::default();
    for name in template.names("Parameters") {
        if let Some(default) = template.parameter_default(&name) {
            resolver.refs.insert(name, default);
        }
    }
    for (name, value) in [
        ("AWS::Region", "us-east-1"),
        ("AWS::URLSuffix", "amazonaws.com"),
        ("AWS::AccountId", "123456789012"),
        ("AWS::Partition", "aws"),
        ("AWS::StackName", "wa"),
        ("HttpApi", "abc123"),
        ("WebhookFunction", "wa-webhook"),
    ]
    .into_iter()
    .chain(parameters.iter().copied())
    {
        resolver.refs.insert(name.to_owned(), value.to_owned());
    }
    resolver.attributes.insert(
        "KnowledgeBucket.Arn".to_owned(),
        "arn:aws:s3:::wa-knowledgebucket-1a2b3c".to_owned(),
    );
    resolver.attributes.insert(
        "WebhookFunctionUrl.FunctionUrl".to_owned(),
        "https://xyz789.lambda-url.us-east-1.on.aws/".to_owned(),
    );
    resolver.evaluate_conditions(template);
    resolver
}

/// What a deployment grants on the webhook function: (action, principal, the grant's limit).
fn webhook_grants(template: &Template, resolver: &Resolver) -> BTreeSet<Grant> {
    let existing = template.existing_resources(&resolver.conditions);
    template
        .resources_of_type("AWS::Lambda::Permission")
        .into_iter()
        .filter(|p| existing.contains(p))
        .filter_map(|permission| {
            let properties =
                chosen(template.properties(&permission), &resolver.conditions).unwrap();
            let function = resolver.resolve(&properties["FunctionName"])?;
            (function == "wa-webhook").then(|| {
                let limit = ["SourceArn", "FunctionUrlAuthType", "InvokedViaFunctionUrl"]
                    .iter()
                    .filter_map(|key| {
                        let value = resolver.resolve(properties.get(*key)?)?;
                        Some(format!("{key}={value}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let text = |key: &str| resolver.resolve(&properties[key]).unwrap_or_default();
                (text("Action"), text("Principal"), limit)
            })
        })
        .collect()
}

type Grant = (String, String, String);

/// What a deployment with front door `door` must have: the front door's logical id, the
/// `WebhookUrl` it gives under [`deployment`]'s made-up ids, and the grants on the webhook.
fn expected_front_door(door: &str) -> (&'static str, &'static str, BTreeSet<Grant>) {
    let grant = |action: &str, principal: &str, limit: &str| -> Grant {
        (action.to_owned(), principal.to_owned(), limit.to_owned())
    };
    let api_arn = "SourceArn=arn:aws:execute-api:us-east-1:123456789012:abc123/*";
    match door {
        "ApiGateway" => (
            "HttpApi",
            "https://abc123.execute-api.us-east-1.amazonaws.com/webhook",
            BTreeSet::from([
                grant(
                    "lambda:InvokeFunction",
                    "apigateway.amazonaws.com",
                    &format!("{api_arn}/GET/webhook"),
                ),
                grant(
                    "lambda:InvokeFunction",
                    "apigateway.amazonaws.com",
                    &format!("{api_arn}/POST/webhook"),
                ),
            ]),
        ),
        _ => (
            "WebhookFunctionUrl",
            "https://xyz789.lambda-url.us-east-1.on.aws/webhook",
            // Public, but only through the URL: "*" may never invoke the function directly.
            BTreeSet::from([
                grant("lambda:InvokeFunctionUrl", "*", "FunctionUrlAuthType=NONE"),
                grant("lambda:InvokeFunction", "*", "InvokedViaFunctionUrl=true"),
            ]),
        ),
    }
}

#[test]
fn each_front_door_deploys_alone_and_the_webhook_url_points_at_it() {
    let template = Template::load();
    let doors = template.allowed_values("WebhookFrontDoor");
    assert_eq!(doors, ["ApiGateway", "FunctionUrl"]);
    assert_eq!(
        template.parameter_default("WebhookFrontDoor").as_deref(),
        Some("ApiGateway"),
        "API Gateway stays the default"
    );
    for door in &doors {
        let resolver = deployment(&template, &[("WebhookFrontDoor", door)]);
        let existing = template.existing_resources(&resolver.conditions);
        let front_doors: Vec<&String> = existing
            .iter()
            .filter(|r| FRONT_DOOR_TYPES.contains(&template.resource(r)["Type"].as_str().unwrap()))
            .collect();
        let url = chosen(
            &template.root["Outputs"]["WebhookUrl"]["Value"],
            &resolver.conditions,
        )
        .and_then(|value| resolver.resolve(&value));
        let (front_door, expected_url, expected_grants) = expected_front_door(door);
        assert_eq!(front_doors, [front_door], "{door}");
        assert_eq!(url.as_deref(), Some(expected_url), "{door}");
        assert_eq!(
            webhook_grants(&template, &resolver),
            expected_grants,
            "{door}"
        );
    }
    let url = template.properties("WebhookFunctionUrl");
    assert_eq!(
        url["AuthType"].as_str(),
        Some("NONE"),
        "Meta signs; the webhook checks"
    );
    assert_eq!(
        references(&url["TargetFunctionArn"]),
        [("GetAtt".to_owned(), "WebhookFunction".to_owned())]
    );
}

/// The API's routes: GET and POST /webhook, proxied to the webhook as payload 2.0, which the
/// webhook reads.
#[test]
fn the_api_routes_get_and_post_webhook_to_the_webhook() {
    let template = Template::load();
    let paths = template.properties("HttpApi")["DefinitionBody"]["paths"]
        .as_mapping()
        .unwrap();
    assert_eq!(
        paths.keys().filter_map(Value::as_str).collect::<Vec<_>>(),
        ["/webhook"]
    );
    let methods = paths.values().next().unwrap().as_mapping().unwrap();
    assert_eq!(
        methods.keys().filter_map(Value::as_str).collect::<Vec<_>>(),
        ["get", "post"]
    );
    for integration in methods
        .values()
        .map(|m| &m["x-amazon-apigateway-integration"])
    {
        assert_eq!(integration["type"].as_str(), Some("aws_proxy"));
        assert_eq!(integration["payloadFormatVersion"].as_str(), Some("2.0"));
        assert_eq!(
            references(&integration["uri"]),
            [
                ("Sub".to_owned(), "AWS::Partition".to_owned()),
                ("Sub".to_owned(), "AWS::Region".to_owned()),
                ("Sub".to_owned(), "WebhookFunction".to_owned())
            ]
        );
    }
}

#[test]
fn under_each_front_door_every_reference_in_effect_points_at_a_resource_that_exists() {
    let template = Template::load();
    let resources = template.names("Resources");
    for door in template.allowed_values("WebhookFrontDoor") {
        for reserved in ["0", "50"] {
            let resolver = deployment(
                &template,
                &[
                    ("WebhookFrontDoor", &door),
                    ("WebhookReservedConcurrency", reserved),
                ],
            );
            let existing = template.existing_resources(&resolver.conditions);
            let outputs = template.root["Outputs"].as_mapping().unwrap();
            let in_effect = existing
                .iter()
                .map(|name| (name.clone(), template.resource(name)))
                .chain(outputs.iter().map(|(k, v)| (format!("output {k:?}"), v)));
            let mut checked = 0;
            for (name, value) in in_effect {
                let value = chosen(value, &resolver.conditions).unwrap();
                for (_, target) in references(&value) {
                    if resources.contains(&target) {
                        assert!(
                            existing.contains(&target),
                            "{door}: {name} refers to {target}, which is not deployed"
                        );
                        checked += 1;
                    }
                }
            }
            assert!(checked > 40, "{door}: only {checked} references checked");
        }
    }
}

#[test]
fn the_webhook_5xx_alarm_watches_the_front_door_that_exists() {
    let template = Template::load();
    for (door, expected) in [
        (
            "ApiGateway",
            ("AWS/ApiGateway", "5xx", vec!["ApiId", "Stage"]),
        ),
        (
            "FunctionUrl",
            ("AWS/Lambda", "Url5xxCount", vec!["FunctionName"]),
        ),
    ] {
        let resolver = deployment(&template, &[("WebhookFrontDoor", door)]);
        assert!(
            template
                .existing_resources(&resolver.conditions)
                .contains("WebhookServerErrorAlarm")
        );
        let alarm = chosen(
            template.properties("WebhookServerErrorAlarm"),
            &resolver.conditions,
        )
        .unwrap();
        let text = |key: &str| resolver.resolve(&alarm[key]).unwrap_or_default();
        let dimensions: Vec<&str> = alarm["Dimensions"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|d| d["Name"].as_str())
            .collect();
        assert_eq!(
            (
                text("Namespace").as_str(),
                text("MetricName").as_str(),
                dimensions
            ),
            expected,
            "{door}"
        );
        // The same alarm whatever the door: a change of door updates it in place.
        assert_eq!(text("AlarmName"), "wa-webhook-5xx");
    }
}

#[test]
fn a_function_url_webhook_has_reserved_concurrency_and_api_gateway_throttles() {
    let template = Template::load();
    let reserved = |parameters: &[(&str, &str)]| {
        let resolver = deployment(&template, parameters);
        chosen(template.properties("WebhookFunction"), &resolver.conditions)
            .unwrap()
            .get("ReservedConcurrentExecutions")
            .and_then(|value| resolver.resolve(value))
    };
    let default = template
        .parameter_default("WebhookReservedConcurrency")
        .unwrap();
    assert_eq!(
        reserved(&[("WebhookFrontDoor", "FunctionUrl")]),
        Some(default.clone())
    );
    assert_eq!(
        reserved(&[
            ("WebhookFrontDoor", "FunctionUrl"),
            ("WebhookReservedConcurrency", "0")
        ]),
        None,
        "0 reserves nothing (ReservedConcurrentExecutions 0 would stop the webhook)"
    );
    assert_eq!(reserved(&[("WebhookFrontDoor", "ApiGateway")]), None);
    // Lambda keeps at least 100 of the account's default 1,000 unreserved.
    let default: u32 = default.parse().unwrap();
    assert!((1..=900).contains(&default), "{default}");

    // Meta's default throughput is 80 messages/s per business number, and each answered message
    // brings about four requests (the message, then sent, delivered and read): the webhook must
    // not be the bottleneck, and must stay within API Gateway's account limits.
    let number = |name: &str, key: &str| -> u32 {
        scalar(&template.root["Parameters"][name][key])
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} has a {key}"))
    };
    let (rate, burst) = (
        number("WebhookRateLimit", "Default"),
        number("WebhookBurstLimit", "Default"),
    );
    assert!(
        rate >= 4 * 80,
        "{rate} requests/s throttles Meta's default throughput"
    );
    assert!(burst >= rate, "{burst} < {rate}");
    assert!(number("WebhookRateLimit", "MaxValue") <= 10_000);
    assert!(number("WebhookBurstLimit", "MaxValue") <= 5_000);
    let api = template.properties("HttpApi");
    assert_eq!(
        references(&api["DefaultRouteSettings"]["ThrottlingRateLimit"]),
        [("Ref".to_owned(), "WebhookRateLimit".to_owned())]
    );
    assert_eq!(
        references(&api["DefaultRouteSettings"]["ThrottlingBurstLimit"]),
        [("Ref".to_owned(), "WebhookBurstLimit".to_owned())]
    );
}

/// The statements of the inline policies of a role as deployed under `conditions` (statements
/// under a false condition left out), as (actions, resource references).
fn statements(
    template: &Template,
    role: &str,
    conditions: &BTreeMap<String, bool>,
) -> Vec<(Vec<String>, Vec<Value>)> {
    let properties = chosen(template.properties(role), conditions).expect("the role's properties");
    assert!(
        properties.get("ManagedPolicyArns").is_none(),
        "{role} must not attach managed policies"
    );
    let mut found = Vec::new();
    for policy in properties["Policies"]
        .as_sequence()
        .expect("inline policies")
    {
        for statement in policy["PolicyDocument"]["Statement"]
            .as_sequence()
            .expect("statements")
        {
            assert_eq!(
                statement["Effect"].as_str(),
                Some("Allow"),
                "{role}: only Allow statements"
            );
            assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none());
            let actions = match &statement["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Sequence(list) => list.iter().filter_map(scalar).collect(),
                other => panic!("{role}: unexpected Action {other:?}"),
            };
            let resources = match &statement["Resource"] {
                Value::Sequence(list) => list.clone(),
                other => vec![other.clone()],
            };
            found.push((actions, resources));
        }
    }
    found
}

#[test]
fn each_role_grants_exactly_what_its_function_uses_on_its_own_resources() {
    let template = Template::load();
    for function in &FUNCTIONS {
        let properties = template.properties(function.logical_id);
        assert!(
            properties.get("Policies").is_none(),
            "{}: SAM policies would widen the role",
            function.logical_id
        );
        let role = match intrinsic(&properties["Role"]) {
            Some((f, Value::String(arg))) if f == "GetAtt" => {
                arg.trim_end_matches(".Arn").to_owned()
            }
            other => panic!(
                "{}: Role must be !GetAtt <Role>.Arn, got {other:?}",
                function.logical_id
            ),
        };
        // With the defaults (LlmProvider=openai): the Bedrock grants have tests of their own.
        let conditions = deployment(&template, &[]).conditions;
        let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (actions, resources) in statements(&template, &role, &conditions) {
            for resource in &resources {
                assert!(
                    scalar(resource).as_deref() != Some("*"),
                    "{role}: Resource \"*\""
                );
                let targets: BTreeSet<String> = references(resource)
                    .into_iter()
                    .map(|(_, n)| n)
                    .filter(|n| !PSEUDO_PARAMETERS.contains(&n.as_str()))
                    .collect();
                assert!(
                    !targets.is_empty(),
                    "{role}: a resource names no template resource: {resource:?}"
                );
                for action in &actions {
                    assert!(!action.contains('*'), "{role}: wildcard action {action}");
                    granted
                        .entry(action.clone())
                        .or_default()
                        .extend(targets.iter().cloned());
                }
            }
        }
        let expected: BTreeMap<String, BTreeSet<String>> =
            function
                .grants
                .iter()
                .fold(BTreeMap::new(), |mut map, (action, target)| {
                    map.entry(action.to_string())
                        .or_default()
                        .insert(target.to_string());
                    map
                });
        assert_eq!(
            granted, expected,
            "{role} grants (left) differ from what {} uses (right)",
            function.logical_id
        );
    }
}

#[test]
fn functions_build_from_the_workspace_with_cargo_lambda() {
    let template = Template::load();
    let globals = &template.root["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Handler"].as_str(), Some("bootstrap"));
    // Graviton by default; the parameter lets CI's `sam build` build for x86_64.
    let architecture = references(&globals["Architectures"][0]);
    assert_eq!(
        architecture.first().map(|r| r.1.as_str()),
        Some("Architecture")
    );
    assert_eq!(
        template.parameter_default("Architecture").as_deref(),
        Some("arm64")
    );
    assert_eq!(globals["CodeUri"].as_str(), Some("."));
    assert_eq!(globals["LoggingConfig"]["LogFormat"].as_str(), Some("JSON"));
    let declared: BTreeSet<String> = template
        .resources_of_type("AWS::Serverless::Function")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.logical_id.to_owned()).collect();
    assert_eq!(declared, expected);
    let manifest_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for function in &FUNCTIONS {
        let metadata = &template.resource(function.logical_id)["Metadata"];
        assert_eq!(metadata["BuildMethod"].as_str(), Some("rust-cargolambda"));
        assert_eq!(
            metadata["BuildProperties"]["Binary"].as_str(),
            Some(function.binary)
        );
        let manifest = std::fs::read_to_string(
            manifest_dir.join(format!("../functions/{}/Cargo.toml", function.binary)),
        )
        .expect("the function's crate exists");
        assert!(
            manifest.contains(&format!("name = \"{}\"", function.binary)),
            "{} builds a binary of that name",
            function.binary
        );
        // Each function logs to its own log group, with a retention.
        let group =
            references(&template.properties(function.logical_id)["LoggingConfig"]["LogGroup"]);
        let group = &group.first().expect("a LogGroup reference").1;
        assert!(
            template.properties(group).get("RetentionInDays").is_some(),
            "{group} has a retention"
        );
    }
}

#[test]
fn queues_and_table_are_configured_as_the_code_expects() {
    let template = Template::load();
    let queue = template.properties("InboundQueue");
    let dlq = template.properties("InboundDeadLetterQueue");
    assert_eq!(queue["FifoQueue"].as_bool(), Some(true));
    assert_eq!(dlq["FifoQueue"].as_bool(), Some(true));
    assert_eq!(
        queue["ContentBasedDeduplication"].as_bool(),
        Some(false),
        "the webhook sets deduplication ids"
    );
    assert_eq!(queue["SqsManagedSseEnabled"].as_bool(), Some(true));
    assert_eq!(dlq["SqsManagedSseEnabled"].as_bool(), Some(true));
    assert_eq!(dlq["MessageRetentionPeriod"].as_u64(), Some(14 * 86_400));

    let timeout = |f: &str| {
        template.properties(f)["Timeout"]
            .as_u64()
            .expect("a timeout")
    };
    assert!(queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout("ProcessorFunction"));
    assert!(dlq["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout("AlerterFunction"));

    let max_receive = queue["RedrivePolicy"]["maxReceiveCount"]
        .as_u64()
        .expect("a redrive policy");
    assert_eq!(max_receive, 5);
    let processor_env = template.environment("ProcessorFunction");
    assert_eq!(
        scalar(&processor_env["MAX_RECEIVE_COUNT"]),
        Some(max_receive.to_string())
    );

    let event = &template.properties("ProcessorFunction")["Events"]["Inbound"]["Properties"];
    assert_eq!(event["BatchSize"].as_u64(), Some(10));
    assert_eq!(
        event["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert!(event["ScalingConfig"].get("MaximumConcurrency").is_some());

    let table = template.properties("Table");
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(table["KeySchema"][0]["AttributeName"].as_str(), Some("pk"));
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["SSESpecification"]["SSEEnabled"].as_bool(),
        Some(true)
    );
}

#[test]
fn the_secret_holds_placeholders_only() {
    let template = Template::load();
    let generate = &template.properties("AppSecret")["GenerateSecretString"];
    let placeholder: serde_json::Value = serde_json::from_str(
        generate["SecretStringTemplate"]
            .as_str()
            .expect("a template"),
    )
    .expect("JSON");
    let keys: BTreeSet<&str> = placeholder
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["META_APP_SECRET", "META_ACCESS_TOKEN", "LLM_API_KEY"])
    );
    assert!(
        placeholder
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == "REPLACE_ME")
    );
    assert_eq!(
        generate["GenerateStringKey"].as_str(),
        Some("META_VERIFY_TOKEN")
    );
}

#[test]
fn the_alerter_hears_every_trigger_and_alarms_reach_it() {
    let template = Template::load();
    let events = &template.properties("AlerterFunction")["Events"];
    let kinds: BTreeSet<&str> = events
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(|e| e["Type"].as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["SQS", "CloudWatchLogs", "SNS"]));
    let filtered: BTreeSet<String> = events
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"].as_str() == Some("CloudWatchLogs"))
        .flat_map(|e| {
            let pattern = |parameters: &[(&str, &str)]| {
                deployment(&template, parameters).resolve(&e["Properties"]["FilterPattern"])
            };
            assert_eq!(pattern(&[]).as_deref(), Some(r#"{ $.level = "ERROR" }"#));
            let with_handoffs = pattern(&[("HandoffMail", "true")]).unwrap();
            assert!(
                with_handoffs == r#"{ $.level = "ERROR" }"#
                    || with_handoffs
                        == r#"{ ($.level = "ERROR") || ($.fields.event = "handoff_started") }"#,
                "{with_handoffs}"
            );
            references(&e["Properties"]["LogGroupName"])
                .into_iter()
                .map(|(_, n)| n)
        })
        .collect();
    assert_eq!(
        filtered,
        BTreeSet::from(["ProcessorLogGroup".to_owned(), "WebhookLogGroup".to_owned()])
    );
    let alarms = template.resources_of_type("AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 5, "{alarms:?}");
    for alarm in alarms {
        let actions = references(&template.properties(&alarm)["AlarmActions"]);
        assert_eq!(
            actions,
            [("Ref".to_owned(), "AlarmTopic".to_owned())],
            "{alarm} notifies the alarm topic"
        );
    }
}

#[test]
fn alerts_that_fail_are_kept_on_the_retry_queue_and_come_back_later() {
    let template = Template::load();
    let queue = template.properties("AlertRetryQueue");
    assert!(
        queue.get("FifoQueue").is_none(),
        "Lambda's destinations take standard queues only"
    );
    assert_eq!(queue["MessageRetentionPeriod"].as_u64(), Some(14 * 86_400));
    assert_eq!(queue["SqsManagedSseEnabled"].as_bool(), Some(true));
    let timeout = template.properties("AlerterFunction")["Timeout"]
        .as_u64()
        .expect("a timeout");
    let visibility = queue["VisibilityTimeout"]
        .as_u64()
        .expect("a visibility timeout");
    assert!(
        visibility >= 6 * timeout && visibility >= 300,
        "a failing alert comes back after minutes, not in a loop: {visibility} s"
    );
    assert!(queue["DelaySeconds"].as_u64().is_some_and(|d| d >= 60));

    let alerter = template.properties("AlerterFunction");
    let invoke = &alerter["EventInvokeConfig"];
    let retries = invoke["MaximumRetryAttempts"]
        .as_u64()
        .expect("bounded retries");
    assert!(retries <= 2, "{retries}");
    assert!(invoke["MaximumEventAgeInSeconds"].as_u64().is_some());
    let on_failure = &invoke["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"].as_str(), Some("SQS"));
    assert_eq!(
        references(&on_failure["Destination"]),
        [("GetAtt".to_owned(), "AlertRetryQueue".to_owned())]
    );

    // The alerter reads the queue's records, and tells them from dead letters by its ARN.
    let source = &alerter["Events"]["AlertRetries"];
    assert_eq!(source["Type"].as_str(), Some("SQS"));
    assert_eq!(
        references(&source["Properties"]["Queue"]),
        [("GetAtt".to_owned(), "AlertRetryQueue".to_owned())]
    );
    assert_eq!(
        source["Properties"]["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    let env = template.environment("AlerterFunction");
    assert_eq!(
        references(&env["ALERT_RETRY_QUEUE_ARN"]),
        [("GetAtt".to_owned(), "AlertRetryQueue".to_owned())]
    );
    assert_eq!(
        references(&env["ALERT_RETRY_QUEUE_URL"]),
        [("Ref".to_owned(), "AlertRetryQueue".to_owned())]
    );
}

/// The model each provider answers with when `LlmModel` is left empty, as the processor's
/// configuration fills it in (bedrock's comes from the template, behind the inference profile).
const DEFAULT_MODELS: [(&str, &str); 3] = [
    ("openai", "gpt-4o-mini"),
    ("gemini", "gemini-2.5-flash"),
    ("bedrock", "us.amazon.nova-lite-v1:0"),
];

#[test]
fn each_provider_gets_its_own_model_with_the_templates_defaults() {
    // A stack deployed with LlmProvider=gemini and the other defaults once sent gpt-4o-mini to
    // Gemini, and every message waited for the fallback.
    let template = Template::load();
    let model = template.parameter_default("LlmModel").unwrap_or_default();
    assert_eq!(model, "", "LlmModel must default to empty");
    let providers = template.allowed_values("LlmProvider");
    assert_eq!(
        providers,
        DEFAULT_MODELS.map(|(provider, _)| provider),
        "each provider has its expected default below"
    );
    for (provider, expected) in DEFAULT_MODELS {
        let env = processor_environment(&template, &[("LlmProvider", provider)]);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let config = processor::Config::from(&shared::env_config::Env::from_pairs(&pairs))
            .unwrap_or_else(|e| {
                panic!("{provider}: the defaults make no valid configuration: {e}")
            });
        assert_eq!(config.llm_model, expected, "{provider}");
    }
}

/// The processor's environment as deployed with the template's defaults and `parameters`: the
/// variables that resolve, with made-up names for the table and the secret.
fn processor_environment(
    template: &Template,
    parameters: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut resolver = deployment(template, parameters);
    resolver.refs.insert("Table".to_owned(), "t".to_owned());
    resolver.refs.insert("AppSecret".to_owned(), "s".to_owned());
    let variables = chosen(
        &template.properties("ProcessorFunction")["Environment"]["Variables"],
        &resolver.conditions,
    )
    .unwrap();
    variables
        .as_mapping()
        .unwrap()
        .iter()
        .filter_map(|(name, value)| Some((scalar(name)?, resolver.resolve(value)?)))
        .collect()
}

#[test]
fn bedrock_calls_the_default_model_through_the_profile_and_the_guardrail_is_passed_on() {
    let template = Template::load();
    assert_eq!(
        template.parameter_default("LlmProvider").as_deref(),
        Some("openai"),
        "an upgraded stack keeps its provider; Bedrock needs model access enabled first"
    );
    assert_eq!(
        template
            .parameter_default("BedrockInferenceProfile")
            .as_deref(),
        Some("us")
    );
    let model = |parameters: &[(&str, &str)]| {
        let env = processor_environment(&template, parameters);
        env.get("LLM_MODEL").cloned().unwrap_or_default()
    };
    assert_eq!(
        model(&[("LlmProvider", "bedrock")]),
        "us.amazon.nova-lite-v1:0"
    );
    assert_eq!(
        model(&[
            ("LlmProvider", "bedrock"),
            ("BedrockInferenceProfile", "none"),
            ("LlmModel", "anthropic.claude-x")
        ]),
        "anthropic.claude-x"
    );
    assert_eq!(
        model(&[
            ("LlmProvider", "bedrock"),
            ("BedrockInferenceProfile", "none")
        ]),
        "amazon.nova-lite-v1:0"
    );
    assert_eq!(
        model(&[
            ("LlmProvider", "bedrock"),
            ("BedrockInferenceProfile", "eu"),
            ("LlmModel", "anthropic.claude-x")
        ]),
        "eu.anthropic.claude-x"
    );
    // The profile is Bedrock's alone: the other providers get LlmModel as it is.
    for provider in ["openai", "gemini"] {
        assert_eq!(model(&[("LlmProvider", provider)]), "", "{provider}");
        assert_eq!(
            model(&[("LlmProvider", provider), ("LlmModel", "some-model")]),
            "some-model",
            "{provider}"
        );
    }

    let guardrail = |parameters: &[(&str, &str)]| {
        let env = processor_environment(&template, parameters);
        (
            env.get("GUARDRAIL_ID").cloned(),
            env.get("GUARDRAIL_VERSION").cloned(),
        )
    };
    assert_eq!(
        guardrail(&[("LlmProvider", "bedrock")]),
        (Some(String::new()), Some("DRAFT".to_owned()))
    );
    assert_eq!(
        guardrail(&[
            ("LlmProvider", "bedrock"),
            ("GuardrailId", "a1b2c3d4e5f6"),
            ("GuardrailVersion", "3")
        ]),
        (Some("a1b2c3d4e5f6".to_owned()), Some("3".to_owned()))
    );
}

/// A Bedrock grant of the processor's role as deployed: its actions, its resources and its
/// condition (`operator key=value`), resolved.
type BedrockGrant = (Vec<String>, BTreeSet<String>, Option<String>);

/// The statements of the processor's role that grant Bedrock actions, as deployed with the
/// template's defaults and `parameters`.
fn bedrock_grants(template: &Template, parameters: &[(&str, &str)]) -> BTreeSet<BedrockGrant> {
    service_grants(template, parameters, "bedrock:")
}

/// The statements of the processor's role that grant actions of the service whose actions start
/// with `prefix`, as deployed with the template's defaults and `parameters`.
fn service_grants(
    template: &Template,
    parameters: &[(&str, &str)],
    prefix: &str,
) -> BTreeSet<BedrockGrant> {
    let resolver = deployment(template, parameters);
    let role = chosen(template.properties("ProcessorRole"), &resolver.conditions).unwrap();
    let mut grants = BTreeSet::new();
    for policy in role["Policies"].as_sequence().unwrap() {
        for statement in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            let actions: Vec<String> = match &statement["Action"] {
                Value::Sequence(list) => list.iter().filter_map(scalar).collect(),
                other => scalar(other).into_iter().collect(),
            };
            if !actions.iter().any(|a| a.starts_with(prefix)) {
                continue;
            }
            let resources: BTreeSet<String> = match &statement["Resource"] {
                Value::Sequence(list) => list.iter().collect::<Vec<_>>(),
                other => vec![other],
            }
            .into_iter()
            .map(|r| {
                resolver
                    .resolve(r)
                    .unwrap_or_else(|| panic!("{parameters:?}: {r:?} does not resolve"))
            })
            .collect();
            let condition = statement.get("Condition").map(|condition| {
                let mut parts = Vec::new();
                for (operator, keys) in condition.as_mapping().unwrap() {
                    for (key, value) in keys.as_mapping().unwrap() {
                        let value = resolver.resolve(value).expect("the condition resolves");
                        parts.push(format!(
                            "{} {}={value}",
                            scalar(operator).unwrap(),
                            scalar(key).unwrap()
                        ));
                    }
                }
                parts.join(" ")
            });
            grants.insert((actions, resources, condition));
        }
    }
    grants
}

fn grant(actions: &[&str], resources: &[&str], condition: Option<&str>) -> BedrockGrant {
    (
        actions.iter().map(|a| a.to_string()).collect(),
        resources.iter().map(|r| r.to_string()).collect(),
        condition.map(str::to_owned),
    )
}

const PROFILE_ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0";

#[test]
fn without_bedrock_the_processor_has_no_bedrock_grant() {
    let template = Template::load();
    for parameters in [
        &[][..],
        &[("LlmProvider", "gemini")],
        &[("LlmProvider", "openai"), ("GuardrailId", "a1b2c3d4e5f6")],
    ] {
        assert_eq!(
            bedrock_grants(&template, parameters),
            BTreeSet::new(),
            "{parameters:?}"
        );
    }
}

#[test]
fn through_a_profile_the_processor_may_call_the_profile_and_its_model_only_through_it() {
    let template = Template::load();
    let invoke = ["bedrock:InvokeModel"];
    assert_eq!(
        bedrock_grants(&template, &[("LlmProvider", "bedrock")]),
        BTreeSet::from([
            grant(&invoke, &[PROFILE_ARN], None),
            grant(
                &invoke,
                &["arn:aws:bedrock:*::foundation-model/amazon.nova-lite-v1:0"],
                Some(&format!(
                    "StringEquals bedrock:InferenceProfileArn={PROFILE_ARN}"
                )),
            ),
        ])
    );
    // A global profile may route to any commercial region, whose model ARN has no region.
    let global =
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-x";
    assert_eq!(
        bedrock_grants(
            &template,
            &[
                ("LlmProvider", "bedrock"),
                ("BedrockInferenceProfile", "global"),
                ("LlmModel", "anthropic.claude-x")
            ]
        ),
        BTreeSet::from([
            grant(&invoke, &[global], None),
            grant(
                &invoke,
                &[
                    "arn:aws:bedrock:*::foundation-model/anthropic.claude-x",
                    "arn:aws:bedrock:::foundation-model/anthropic.claude-x",
                ],
                Some(&format!(
                    "StringEquals bedrock:InferenceProfileArn={global}"
                )),
            ),
        ])
    );
}

#[test]
fn without_a_profile_the_processor_may_call_the_model_in_its_region_only() {
    let template = Template::load();
    let model = "anthropic.claude-haiku-4-5-20251001-v1:0";
    assert_eq!(
        bedrock_grants(
            &template,
            &[
                ("LlmProvider", "bedrock"),
                ("BedrockInferenceProfile", "none"),
                ("LlmModel", model)
            ]
        ),
        BTreeSet::from([grant(
            &["bedrock:InvokeModel"],
            &[format!("arn:aws:bedrock:us-east-1::foundation-model/{model}").as_str()],
            None
        )])
    );
}

#[test]
fn a_guardrail_is_granted_on_exactly_that_guardrail() {
    let template = Template::load();
    let without = bedrock_grants(&template, &[("LlmProvider", "bedrock")]);
    let with = bedrock_grants(
        &template,
        &[
            ("LlmProvider", "bedrock"),
            ("GuardrailId", "a1b2c3d4e5f6"),
            ("GuardrailVersion", "2"),
        ],
    );
    let added: BTreeSet<BedrockGrant> = with.difference(&without).cloned().collect();
    assert_eq!(
        added,
        BTreeSet::from([grant(
            &["bedrock:ApplyGuardrail"],
            &["arn:aws:bedrock:us-east-1:123456789012:guardrail/a1b2c3d4e5f6"],
            None
        )])
    );
    assert!(without.is_subset(&with));
    assert!(
        without
            .iter()
            .all(|(actions, _, _)| !actions.iter().any(|a| a == "bedrock:ApplyGuardrail"))
    );
}

/// Under every profile, with the default model or another, the role grants what the processor
/// calls (the model id in LLM_MODEL, a profile's or a model's), and nothing with a wildcard
/// but the region of a model reached through a profile.
#[test]
fn under_every_profile_the_role_grants_what_the_processor_calls_and_no_wildcard() {
    let template = Template::load();
    let profiles = template.allowed_values("BedrockInferenceProfile");
    for profile in ["none", "us", "eu", "apac", "global"] {
        assert!(profiles.iter().any(|p| p == profile), "{profile}");
    }
    for profile in &profiles {
        for model in ["", "anthropic.claude-haiku-4-5-20251001-v1:0"] {
            let parameters = [
                ("LlmProvider", "bedrock"),
                ("BedrockInferenceProfile", profile.as_str()),
                ("LlmModel", model),
                ("GuardrailId", "a1b2c3d4e5f6"),
            ];
            let called = processor_environment(&template, &parameters)["LLM_MODEL"].clone();
            let target = if profile == "none" {
                format!("arn:aws:bedrock:us-east-1::foundation-model/{called}")
            } else {
                assert!(called.starts_with(&format!("{profile}.")), "{called}");
                format!("arn:aws:bedrock:us-east-1:123456789012:inference-profile/{called}")
            };
            let grants = bedrock_grants(&template, &parameters);
            assert!(
                grants.iter().any(|(actions, resources, condition)| {
                    actions == &["bedrock:InvokeModel"]
                        && resources.contains(&target)
                        && condition.is_none()
                }),
                "{parameters:?}: {target} is not granted in {grants:#?}"
            );
            for (actions, resources, condition) in &grants {
                assert!(actions.iter().all(|a| !a.contains('*')), "{actions:?}");
                for resource in resources {
                    let (head, name) = resource.rsplit_once('/').expect("a resource name");
                    assert!(!name.contains('*') && !name.is_empty(), "{resource}");
                    if head.contains('*') {
                        // Only a model's region, and only through the profile.
                        assert_eq!(head, "arn:aws:bedrock:*::foundation-model", "{resource}");
                        assert_eq!(
                            condition.as_deref(),
                            Some(format!("StringEquals bedrock:InferenceProfileArn={target}"))
                                .as_deref()
                        );
                    }
                }
            }
        }
    }
}

/// The processor's S3 grants with the template's defaults: `GetObject` on the stack's bucket's
/// `numbers/` prefix alone, where the numbers' own documents go (`infra/numbers.sh`).
fn number_documents_grants(template: &Template) -> BTreeSet<BedrockGrant> {
    let grants = service_grants(template, &[], "s3:");
    assert_eq!(grants.len(), 1, "{grants:?}");
    for (actions, resources, condition) in &grants {
        assert_eq!(actions, &["s3:GetObject"]);
        assert!(condition.is_none());
        assert!(
            resources.len() == 1 && resources.iter().all(|r| r.ends_with("/numbers/*")),
            "{resources:?}"
        );
    }
    grants
}

#[test]
fn the_knowledge_document_is_read_on_exactly_that_object_and_passed_on() {
    let template = Template::load();
    let numbers = number_documents_grants(&template);
    let uri = "s3://shop-kb/faq/v2.md";
    assert_eq!(
        service_grants(&template, &[("KnowledgeUri", uri)], "s3:"),
        BTreeSet::from([grant(
            &["s3:GetObject"],
            &["arn:aws:s3:::shop-kb/faq/v2.md"],
            None
        )])
        .union(&numbers)
        .cloned()
        .collect()
    );
    let env = processor_environment(&template, &[("KnowledgeUri", uri)]);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = processor::Config::from(&shared::env_config::Env::from_pairs(&pairs)).unwrap();
    assert_eq!(
        config.knowledge_uri,
        Some(shared::knowledge::DocumentUri::S3 {
            bucket: "shop-kb".into(),
            key: "faq/v2.md".into()
        })
    );
    assert_eq!(config.knowledge_max_tokens, 8000);
}

#[test]
fn the_tools_file_is_read_on_exactly_that_object_and_passed_on() {
    let template = Template::load();
    let knowledge = ("KnowledgeUri", "s3://shop-kb/faq.md");
    let tools = ("ToolsUri", "s3://shop-kb/tools/v3.json");
    assert_eq!(
        service_grants(&template, &[knowledge, tools], "s3:"),
        BTreeSet::from([
            grant(&["s3:GetObject"], &["arn:aws:s3:::shop-kb/faq.md"], None),
            grant(
                &["s3:GetObject"],
                &["arn:aws:s3:::shop-kb/tools/v3.json"],
                None
            ),
        ])
        .union(&number_documents_grants(&template))
        .cloned()
        .collect(),
        "each object on its own, nothing else in the bucket"
    );
    let env = processor_environment(&template, &[tools, ("ToolsMaxRounds", "4")]);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = processor::Config::from(&shared::env_config::Env::from_pairs(&pairs)).unwrap();
    assert_eq!(
        config.tools_uri,
        Some(shared::knowledge::DocumentUri::S3 {
            bucket: "shop-kb".into(),
            key: "tools/v3.json".into()
        })
    );
    assert_eq!(config.tools_max_rounds, 4);
    let none = processor_environment(&template, &[]);
    let pairs: Vec<(&str, &str)> = none.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = processor::Config::from(&shared::env_config::Env::from_pairs(&pairs)).unwrap();
    assert_eq!((config.tools_uri, config.tools_max_rounds), (None, 3));
}

#[test]
fn the_rate_limit_the_token_budget_and_the_kill_switch_reach_the_processor() {
    let template = Template::load();
    let config = |parameters: &[(&str, &str)]| {
        let env = processor_environment(&template, parameters);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        processor::Config::from(&shared::env_config::Env::from_pairs(&pairs))
            .unwrap()
            .controls
    };
    let defaults = config(&[]);
    assert_eq!(
        (defaults.rate_limit_per_minute, defaults.maintenance_message),
        (10, None)
    );
    assert_eq!(defaults.daily_token_budget, 0);
    let set = config(&[
        ("RateLimitPerMinute", "0"),
        ("MaintenanceMessage", "Back at 10:00."),
        ("DailyTokenBudget", "200000"),
    ]);
    assert_eq!(set.daily_token_budget, 200_000);
    assert_eq!(set.rate_limit_per_minute, 0);
    assert_eq!(set.maintenance_message.as_deref(), Some("Back at 10:00."));
}

#[test]
fn the_knowledge_base_is_queried_on_exactly_that_one_and_passed_on() {
    let template = Template::load();
    let retrieve = |parameters: &[(&str, &str)]| -> BTreeSet<BedrockGrant> {
        service_grants(&template, parameters, "bedrock:")
            .into_iter()
            .filter(|(actions, _, _)| actions.iter().any(|a| a == "bedrock:Retrieve"))
            .collect()
    };
    assert_eq!(
        retrieve(&[]),
        BTreeSet::new(),
        "no knowledge base, no grant"
    );
    assert_eq!(
        service_grants(&template, &[], "bedrock:"),
        BTreeSet::new(),
        "nor any other Bedrock grant with the default provider"
    );
    let only = BTreeSet::from([grant(
        &["bedrock:Retrieve"],
        &["arn:aws:bedrock:us-east-1:123456789012:knowledge-base/KB12345678"],
        None,
    )]);
    let parameters = [("KnowledgeBaseId", "KB12345678")];
    assert_eq!(
        service_grants(&template, &parameters, "bedrock:"),
        only,
        "with OpenAI, Retrieve alone"
    );
    // With Bedrock as the provider, the InvokeModel grants come beside it, unchanged.
    let with_bedrock = [
        ("KnowledgeBaseId", "KB12345678"),
        ("LlmProvider", "bedrock"),
    ];
    assert_eq!(retrieve(&with_bedrock), only);
    let others: BTreeSet<BedrockGrant> = service_grants(&template, &with_bedrock, "bedrock:")
        .into_iter()
        .filter(|grant| !only.contains(grant))
        .collect();
    assert_eq!(
        others,
        service_grants(&template, &[("LlmProvider", "bedrock")], "bedrock:")
    );
    assert!(
        others
            .iter()
            .all(|(actions, _, _)| actions == &["bedrock:InvokeModel"])
    );

    let env = processor_environment(
        &template,
        &[
            ("KnowledgeBaseId", "KB12345678"),
            ("KnowledgeBaseTopK", "8"),
        ],
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = processor::Config::from(&shared::env_config::Env::from_pairs(&pairs)).unwrap();
    assert_eq!(config.knowledge_base_id.as_deref(), Some("KB12345678"));
    assert_eq!(config.knowledge_base_top_k, 8);
    let defaults = processor_environment(&template, &[]);
    let pairs: Vec<(&str, &str)> = defaults
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = processor::Config::from(&shared::env_config::Env::from_pairs(&pairs)).unwrap();
    assert_eq!(
        (config.knowledge_base_id, config.knowledge_base_top_k),
        (None, 5)
    );
}
