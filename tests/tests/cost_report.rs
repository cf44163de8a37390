//! The cost report's code on a small workload (3 users × 3 turns) through the real binaries
//! against moto: the figures that must hold whatever the timings, the store's design or the
//! prices.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use local_stack::cost::prices::LIST_PRICES;
use local_stack::cost::{Measurement, Setup, Workload, measure, price};
use local_stack::runtime::binaries_dir;

/// DynamoDB's write operations.
const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

async fn small_run() -> Measurement {
    // Fails with instructions unless moto's server is there.
    testkit::moto_config().await;
    let setup = Setup {
        aws_endpoint: std::env::var("AWS_ENDPOINT_URL").unwrap(),
        binaries: binaries_dir(),
        log_dir: std::env::temp_dir().join(testkit::unique_name("cost-logs")),
    };
    let workload = Workload {
        users: 3,
        turns: 3,
        ..Workload::default()
    };
    measure(&workload, &setup)
        .await
        .unwrap_or_else(|e| panic!("the workload runs: {e}"))
}

/// The DynamoDB actions the processor's role is granted in template.yaml (statement
/// `Conversations`).
fn processor_dynamodb_grants() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let statements = &template["Resources"]["ProcessorRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"];
    let conversations = statements
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["Sid"].as_str() == Some("Conversations"))
        .expect("the Conversations statement");
    conversations["Action"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// The requests `caller` made of `service`'s `operation`, empty receives included.
fn requests(run: &Measurement, caller: &str, service: &str, operation: &str) -> usize {
    run.aws_calls
        .iter()
        .filter(|c| c.caller == caller && c.service == service && c.operation == operation)
        .count()
}

#[tokio::test]
async fn a_small_workload_is_counted_and_priced_as_it_ran() {
    let run = small_run().await;
    // Moto does not check IAM: every DynamoDB action the processor called is granted to it.
    let granted = processor_dynamodb_grants();
    for call in run.aws_calls.iter().filter(|c| c.caller == "processor") {
        if call.service == "dynamodb" {
            let action = format!("dynamodb:{}", call.operation);
            assert!(
                granted.contains(&action),
                "{action} is not granted: {granted:?}"
            );
        }
    }
    assert!(
        run.aws_calls
            .iter()
            .any(|c| c.caller == "processor" && c.service == "dynamodb"),
        "the processor's DynamoDB calls were seen"
    );
    // Every message answered once, in one text (600 characters), from one LLM call each (a
    // user writes again only after the reply, so nothing is coalesced).
    assert_eq!(
        (run.messages, run.replies, run.llm_calls),
        (9, 9, 9),
        "{run:?}"
    );
    assert_eq!((run.dead_letters, run.functions[1].error_lines), (0, 0));
    // Every prompt and reply left for the internet.
    assert!(
        run.outbound_bytes > run.messages * 600,
        "{} bytes",
        run.outbound_bytes
    );
    // API Gateway: each message and the three statuses of each reply, each one webhook run.
    assert_eq!(run.api_requests, run.messages + 3 * run.replies);
    let [webhook, processor, alerter] = &run.functions[..] else {
        panic!("three functions: {:?}", run.functions);
    };
    assert_eq!(webhook.run_times.len() as u64, run.api_requests);
    assert!(webhook.log_bytes > 0 && processor.log_bytes > 0);
    assert!(alerter.run_times.is_empty());
    // SQS: at least one send per message, none for statuses beyond that; the event source
    // deletes each batch it handed to the processor.
    let sends = requests(&run, "webhook", "sqs", "SendMessageBatch")
        + requests(&run, "webhook", "sqs", "SendMessage");
    assert!(sends as u64 >= run.messages, "{sends} sends");
    let batches = processor.run_times.len();
    assert!((1..=9).contains(&batches), "{batches} processor runs");
    assert_eq!(
        requests(&run, "event source", "sqs", "DeleteMessageBatch"),
        batches
    );
    // DynamoDB: every processor write billed at least a unit; at least one per message.
    let writes: Vec<_> = run
        .aws_calls
        .iter()
        .filter(|c| c.service == "dynamodb" && WRITES.contains(&c.operation.as_str()))
        .collect();
    assert!(
        writes
            .iter()
            .all(|c| c.caller == "processor" && c.write_units >= 1.0)
    );
    assert!(writes.len() as u64 >= run.messages);
}

#[tokio::test]
async fn the_report_lists_every_service_and_adds_up() {
    let run = small_run().await;
    let report = price(&run, &LIST_PRICES);
    for service in [
        "API Gateway (HTTP API)",
        "Lambda requests",
        "Lambda compute: webhook",
        "Lambda compute: processor",
        "Lambda compute: alerter",
        "SQS",
        "DynamoDB",
        "CloudWatch Logs",
        "Secrets Manager",
        "SES",
    ] {
        assert!(
            report
                .rows
                .iter()
                .any(|row| row.service.starts_with(service)),
            "no {service} row:\n{report}"
        );
    }
    let sum: f64 = report.rows.iter().map(|row| row.usd_per_million).sum();
    assert!(
        (report.total_usd_per_million - sum).abs() < 1e-9,
        "{report}"
    );
    // Four API Gateway requests a message at $1 per million: $4.
    let api = &report.rows[0];
    assert!((api.usd_per_million - 4.0).abs() < 1e-9, "{report}");
    // The processor is billed at least the LLM's stated wait at its memory.
    let processor = report
        .rows
        .iter()
        .find(|row| row.service.starts_with("Lambda compute: processor"))
        .unwrap();
    let memory_gb = run.functions[1].memory_mb as f64 / 1024.0;
    let llm_only = 2.0 * memory_gb * LIST_PRICES.lambda_arm64_gb_second.each() * 1e6;
    assert!(processor.usd_per_million >= llm_only, "{report}");
    assert!(report.write_units_per_answered >= 1.0, "{report}");
}
