//! Pricing a [`Measurement`]: one row per service (Lambda per function), in US dollars per
//! million inbound messages, and the total.

use std::collections::BTreeMap;
use std::fmt;

use testkit::aws_meter::Call;

use super::prices::Prices;
use super::{FunctionUsage, Measurement};

/// SQS bills each 64 KB chunk of a request's payload as one request.
const SQS_CHUNK_BYTES: u64 = 64 * 1024;
/// CloudWatch Logs bills per GB of 2^30 bytes.
const GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The service (and, for Lambda's compute, the function).
    pub service: String,
    /// What was used per inbound message.
    pub per_message: String,
    /// Its price per million inbound messages, in US dollars.
    pub usd_per_million: f64,
}

/// The priced measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// One row per service.
    pub rows: Vec<Row>,
    /// The sum of the rows.
    pub total_usd_per_million: f64,
    /// The total with the Lambda function URL front door (`WebhookFrontDoor=FunctionUrl`), which
    /// has no per-request charge: the API Gateway row left out.
    pub total_with_function_url: f64,
    /// DynamoDB write request units per inbound message that got a reply.
    pub write_units_per_answered: f64,
    /// DynamoDB read request units per inbound message that got a reply.
    pub read_units_per_answered: f64,
    /// Each AWS operation's requests per inbound message, by caller, service and operation.
    pub calls_per_message: BTreeMap<(String, String, String), f64>,
    /// What the figures rest on, and what the run saw that a clean run does not.
    pub notes: Vec<String>,
    /// The prices' sources, one line each.
    pub sources: Vec<String>,
}

/// Prices `measurement` at `prices`.
pub fn price(measurement: &Measurement, prices: &Prices) -> Report {
    let messages = measurement.messages.max(1) as f64;
    let per_million = |usd: f64| usd / messages * 1e6;
    let per_message = |count: f64| count / messages;
    let calls = &measurement.aws_calls;
    let mut rows = vec![Row {
        service: "API Gateway (HTTP API)".into(),
        per_message: format!(
            "{:.2} requests",
            per_message(measurement.api_requests as f64)
        ),
        usd_per_million: per_million(
            measurement.api_requests as f64 * prices.http_api_request.each(),
        ),
    }];
    rows.push(lambda_requests(
        measurement,
        prices,
        per_message,
        per_million,
    ));
    for function in &measurement.functions {
        rows.push(lambda_compute(
            measurement,
            function,
            prices,
            per_message,
            per_million,
        ));
    }
    rows.push(sqs(calls, prices, per_message, per_million));
    rows.push(dynamodb(calls, prices, per_message, per_million));
    let log_bytes: u64 = measurement.functions.iter().map(|f| f.log_bytes).sum();
    let by_function: Vec<String> = measurement
        .functions
        .iter()
        .map(|f| format!("{} {:.0} B", f.name, per_message(f.log_bytes as f64)))
        .collect();
    rows.push(Row {
        service: "CloudWatch Logs".into(),
        per_message: by_function.join(", "),
        usd_per_million: per_million(log_bytes as f64 / GB * prices.logs_ingested_gb.each()),
    });
    rows.push(simple(
        calls,
        "secretsmanager",
        "Secrets Manager",
        prices.secrets_manager_call.each(),
        per_message,
        per_million,
    ));
    rows.push(simple(
        calls,
        "ses",
        "SES",
        prices.ses_email.each(),
        per_message,
        per_million,
    ));
    let answered = measurement.replies.min(measurement.messages).max(1) as f64;
    let units =
        |pick: fn(&Call) -> f64| calls.iter().map(pick).fold(0.0, |sum, n| sum + n) / answered;
    let total_usd_per_million = rows.iter().fold(0.0, |sum, row| sum + row.usd_per_million);
    let api_gateway = rows.first().map_or(0.0, |row| row.usd_per_million);
    Report {
        total_usd_per_million,
        total_with_function_url: total_usd_per_million - api_gateway,
        rows,
        write_units_per_answered: units(|c| c.write_units),
        read_units_per_answered: units(|c| c.read_units),
        calls_per_message: calls_per_message(calls, messages),
        notes: notes(measurement),
        sources: prices.all().iter().map(ToString::to_string).collect(),
    }
}

/// Lambda's request charge, for every function's invocations.
fn lambda_requests(
    measurement: &Measurement,
    prices: &Prices,
    per_message: impl Fn(f64) -> f64,
    per_million: impl Fn(f64) -> f64,
) -> Row {
    let invocations: usize = measurement
        .functions
        .iter()
        .map(|f| f.run_times.len())
        .sum();
    let by_function: Vec<String> = measurement
        .functions
        .iter()
        .map(|f| format!("{} {:.3}", f.name, per_message(f.run_times.len() as f64)))
        .collect();
    Row {
        service: "Lambda requests".into(),
        per_message: format!("{} invocations", by_function.join(", ")),
        usd_per_million: per_million(invocations as f64 * prices.lambda_request.each()),
    }
}

/// A function's compute: its invocations' own time, each rounded up to the millisecond, plus
/// for the processor the LLM's stated wait per call, at the function's memory.
fn lambda_compute(
    measurement: &Measurement,
    function: &FunctionUsage,
    prices: &Prices,
    per_message: impl Fn(f64) -> f64,
    per_million: impl Fn(f64) -> f64,
) -> Row {
    let own_ms: u128 = function
        .run_times
        .iter()
        .map(|ran| ran.as_micros().div_ceil(1000))
        .sum();
    let wait_ms = if function.name == "processor" {
        measurement.llm_calls as f64 * measurement.workload.llm_wait.as_secs_f64() * 1000.0
    } else {
        0.0
    };
    let gb_seconds = (own_ms as f64 + wait_ms) / 1000.0 * function.memory_mb as f64 / 1024.0;
    let mut used = format!("{:.1} ms own", per_message(own_ms as f64));
    if wait_ms > 0.0 {
        used.push_str(&format!(" + {:.0} ms LLM wait", per_message(wait_ms)));
    }
    Row {
        service: format!(
            "Lambda compute: {} ({} MB)",
            function.name, function.memory_mb
        ),
        per_message: used,
        usd_per_million: per_million(gb_seconds * prices.lambda_arm64_gb_second.each()),
    }
}

/// SQS: every request but the empty receives of idle polling (a fixed monthly cost, not a
/// per-message one), each 64 KB chunk one request, at the FIFO or standard price by its queue.
fn sqs(
    calls: &[Call],
    prices: &Prices,
    per_message: impl Fn(f64) -> f64,
    per_million: impl Fn(f64) -> f64,
) -> Row {
    let mut usd = 0.0;
    let mut by_operation: BTreeMap<&str, f64> = BTreeMap::new();
    for call in calls
        .iter()
        .filter(|c| c.service == "sqs" && !is_empty_receive(c))
    {
        let chunks = call
            .request_bytes
            .max(call.response_bytes)
            .div_ceil(SQS_CHUNK_BYTES)
            .max(1);
        let price = if call.resource.ends_with(".fifo") {
            prices.sqs_fifo_request.each()
        } else {
            prices.sqs_standard_request.each()
        };
        usd += chunks as f64 * price;
        *by_operation.entry(call.operation.as_str()).or_default() += chunks as f64;
    }
    Row {
        service: "SQS".into(),
        per_message: listed(&by_operation, &per_message, "requests"),
        usd_per_million: per_million(usd),
    }
}

/// DynamoDB: its read and write request units, as metered.
fn dynamodb(
    calls: &[Call],
    prices: &Prices,
    per_message: impl Fn(f64) -> f64,
    per_million: impl Fn(f64) -> f64,
) -> Row {
    let dynamodb: Vec<&Call> = calls.iter().filter(|c| c.service == "dynamodb").collect();
    let write_units = dynamodb.iter().fold(0.0, |sum, c| sum + c.write_units);
    let read_units = dynamodb.iter().fold(0.0, |sum, c| sum + c.read_units);
    let mut by_operation: BTreeMap<&str, f64> = BTreeMap::new();
    for call in &dynamodb {
        *by_operation.entry(call.operation.as_str()).or_default() += 1.0;
    }
    Row {
        service: "DynamoDB (on-demand)".into(),
        per_message: format!(
            "{:.2} WRU, {:.2} RRU ({})",
            per_message(write_units),
            per_message(read_units),
            listed(&by_operation, &per_message, "calls")
        ),
        usd_per_million: per_million(
            write_units * prices.dynamodb_write_unit.each()
                + read_units * prices.dynamodb_read_unit.each(),
        ),
    }
}

/// A service billed per request: every request of `service` at `usd` each.
fn simple(
    calls: &[Call],
    service: &str,
    label: &str,
    usd: f64,
    per_message: impl Fn(f64) -> f64,
    per_million: impl Fn(f64) -> f64,
) -> Row {
    let mut by_operation: BTreeMap<&str, f64> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.service == service) {
        *by_operation.entry(call.operation.as_str()).or_default() += 1.0;
    }
    let count = by_operation.values().fold(0.0, |sum, n| sum + n);
    Row {
        service: label.into(),
        per_message: listed(&by_operation, &per_message, "calls"),
        usd_per_million: per_million(count * usd),
    }
}

/// "A 1.000, B 0.250 requests", or "no requests".
fn listed(counts: &BTreeMap<&str, f64>, per_message: &impl Fn(f64) -> f64, what: &str) -> String {
    if counts.is_empty() {
        return format!("no {what}");
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(operation, count)| format!("{operation} {:.3}", per_message(*count)))
        .collect();
    format!("{} {what}", parts.join(", "))
}

fn is_empty_receive(call: &Call) -> bool {
    call.operation == "ReceiveMessage" && call.messages_received == 0
}

/// Requests per inbound message by caller, service and operation (empty receives apart).
fn calls_per_message(calls: &[Call], messages: f64) -> BTreeMap<(String, String, String), f64> {
    let mut counts = BTreeMap::new();
    for call in calls {
        let operation = if is_empty_receive(call) {
            format!("{} (empty)", call.operation)
        } else {
            call.operation.clone()
        };
        *counts
            .entry((call.caller.clone(), call.service.clone(), operation))
            .or_insert(0.0) += 1.0 / messages;
    }
    counts
}

/// What the figures rest on, and anything of the run a clean run does not have.
fn notes(measurement: &Measurement) -> Vec<String> {
    let workload = &measurement.workload;
    let mut notes = vec![format!(
        "{} inbound messages ({} users x {} turns, {}-character questions), {} replies \
         ({}-character answers), {} LLM calls of a stated {:.1} s each",
        measurement.messages,
        workload.users,
        workload.turns,
        workload.question_chars,
        measurement.replies,
        workload.answer_chars,
        measurement.llm_calls,
        workload.llm_wait.as_secs_f64(),
    )];
    notes.push(format!(
        "{:.1} KB per message sent to Meta and the LLM (data transfer out to the internet: \
         $0.09 per GB after 100 GB a month free; not priced)",
        measurement.outbound_bytes as f64 / measurement.messages.max(1) as f64 / 1024.0
    ));
    for function in measurement
        .functions
        .iter()
        .filter(|f| !f.run_times.is_empty())
    {
        let invocations = function.run_times.len() as f64;
        let own: f64 = function.run_times.iter().map(|d| d.as_secs_f64()).sum();
        let waited: f64 = measurement
            .aws_calls
            .iter()
            .filter(|call| call.caller == function.name)
            .map(|call| call.waited.as_secs_f64())
            .sum();
        notes.push(format!(
            "{}: {:.1} ms own time per invocation, of which {:.1} ms waiting on AWS requests \
             (moto and the meter; summed over requests, which overlap within a batch)",
            function.name,
            own / invocations * 1000.0,
            waited / invocations * 1000.0,
        ));
    }
    let errors: u64 = measurement.functions.iter().map(|f| f.error_lines).sum();
    if errors > 0 {
        notes.push(format!(
            "NOT CLEAN: {errors} ERROR log lines (each would invoke the alerter, not priced); \
             the functions' logs say why (under too much load, moto answers slower than the \
             functions' AWS time limits)"
        ));
    }
    if measurement.dead_letters > 0 {
        notes.push(format!(
            "NOT CLEAN: {} messages reached the dead-letter queue",
            measurement.dead_letters
        ));
    }
    if measurement.replies < measurement.messages {
        notes.push("NOT CLEAN: fewer replies than messages: some were not answered".into());
    }
    notes
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| service | per inbound message | USD per million messages |"
        )?;
        writeln!(f, "| --- | --- | ---: |")?;
        for row in &self.rows {
            writeln!(
                f,
                "| {} | {} | {:.2} |",
                row.service, row.per_message, row.usd_per_million
            )?;
        }
        writeln!(f, "| **total** | | **{:.2}** |", self.total_usd_per_million)?;
        writeln!(
            f,
            "| total with the function URL front door (no API Gateway) | | {:.2} |",
            self.total_with_function_url
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "DynamoDB per answered message: {:.2} write units, {:.2} read units.",
            self.write_units_per_answered, self.read_units_per_answered
        )?;
        for note in &self.notes {
            writeln!(f, "Run: {note}.")?;
        }
        writeln!(f, "\nAWS requests per inbound message, by caller:")?;
        for ((caller, service, operation), count) in &self.calls_per_message {
            writeln!(f, "  {caller:<13} {service:<15} {operation:<26} {count:.3}")?;
        }
        writeln!(f, "\nList prices (us-east-1, tests/src/cost/prices.rs):")?;
        for source in &self.sources {
            writeln!(f, "  {source}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cost::Workload;
    use crate::cost::prices::LIST_PRICES;

    fn call(service: &str, operation: &str, resource: &str) -> Call {
        Call {
            caller: "test".into(),
            service: service.into(),
            operation: operation.into(),
            resource: resource.into(),
            request_bytes: 1000,
            response_bytes: 100,
            status: 200,
            ..Call::default()
        }
    }

    fn function(name: &str, memory_mb: u64, run_ms: &[u64], log_bytes: u64) -> FunctionUsage {
        FunctionUsage {
            name: name.into(),
            memory_mb,
            run_times: run_ms
                .iter()
                .map(|ms| Duration::from_micros(ms * 1000 - 500))
                .collect(),
            log_bytes,
            ..FunctionUsage::default()
        }
    }

    /// Ten messages, each answered once, through a stack whose every figure is known.
    fn measurement() -> Measurement {
        let fifo = "http://127.0.0.1/123/q-inbound.fifo";
        let mut big_send = call("sqs", "SendMessageBatch", fifo);
        big_send.request_bytes = 100 * 1024;
        let empty_receive = call("sqs", "ReceiveMessage", fifo);
        let mut receive = call("sqs", "ReceiveMessage", fifo);
        receive.messages_received = 10;
        let mut claim = call("dynamodb", "UpdateItem", "table");
        claim.write_units = 3.0;
        let mut read = call("dynamodb", "GetItem", "table");
        read.read_units = 0.5;
        let mut calls = vec![
            big_send,
            receive,
            call("sqs", "SendMessage", "http://127.0.0.1/123/q-retry"),
        ];
        calls.extend(std::iter::repeat_n(empty_receive, 5));
        calls.extend(std::iter::repeat_n(claim, 10));
        calls.push(read);
        calls.push(call("secretsmanager", "GetSecretValue", "secret"));
        Measurement {
            workload: Workload {
                users: 2,
                turns: 5,
                ..Workload::default()
            },
            messages: 10,
            replies: 10,
            llm_calls: 10,
            api_requests: 40,
            api_request_bytes: 40_000,
            functions: vec![
                function("webhook", 256, &[2; 40], 1 << 20),
                function("processor", 512, &[10; 10], 1 << 20),
                function("alerter", 256, &[], 0),
            ],
            aws_calls: calls,
            dead_letters: 0,
            outbound_bytes: 0,
        }
    }

    fn row<'a>(report: &'a Report, service: &str) -> &'a Row {
        report
            .rows
            .iter()
            .find(|row| row.service.starts_with(service))
            .unwrap_or_else(|| panic!("no row {service}: {report}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn prices_each_service_per_million_messages() {
        let report = price(&measurement(), &LIST_PRICES);
        // 4 requests a message at $1 per million.
        assert!(close(row(&report, "API Gateway").usd_per_million, 4.0));
        // 50 invocations for 10 messages at $0.20 per million.
        assert!(close(row(&report, "Lambda requests").usd_per_million, 1.0));
        // The webhook: 40 × 2 ms (each rounded up) at 0.25 GB, per message and per million.
        let webhook = 40.0 * 0.002 * 0.25 * 0.000_013_333_4 / 10.0 * 1e6;
        assert!(close(
            row(&report, "Lambda compute: webhook").usd_per_million,
            webhook
        ));
        // The processor: 10 × (10 ms own + 2 s of LLM) at 0.5 GB.
        let processor = 10.0 * 2.010 * 0.5 * 0.000_013_333_4 / 10.0 * 1e6;
        assert!(close(
            row(&report, "Lambda compute: processor").usd_per_million,
            processor
        ));
        assert_eq!(row(&report, "Lambda compute: alerter").usd_per_million, 0.0);
        // SQS: the 100 KB send is two FIFO requests, the receive one, the empty receives
        // none, the standard queue's send one at the standard price.
        let sqs = (3.0 * 0.50 + 0.40) / 10.0;
        assert!(close(row(&report, "SQS").usd_per_million, sqs));
        // DynamoDB: 30 write units and half a read unit.
        let dynamodb = (30.0 * 0.625 + 0.5 * 0.125) / 10.0;
        assert!(close(row(&report, "DynamoDB").usd_per_million, dynamodb));
        assert!(close(report.write_units_per_answered, 3.0));
        // Logs: 2 MiB for 10 messages.
        let logs = 2.0 / 1024.0 * 0.50 / 10.0 * 1e6;
        assert!(close(row(&report, "CloudWatch Logs").usd_per_million, logs));
        assert!(close(row(&report, "Secrets Manager").usd_per_million, 0.5));
        assert_eq!(row(&report, "SES").usd_per_million, 0.0);
        let sum = report
            .rows
            .iter()
            .map(|row| row.usd_per_million)
            .sum::<f64>();
        assert!(close(report.total_usd_per_million, sum));
        let api_gateway = row(&report, "API Gateway").usd_per_million;
        assert!(close(report.total_with_function_url, sum - api_gateway));
    }

    #[test]
    fn the_table_shows_every_row_and_the_total() {
        let report = price(&measurement(), &LIST_PRICES);
        let table = report.to_string();
        for row in &report.rows {
            assert!(table.contains(&format!("| {} |", row.service)), "{table}");
        }
        assert!(table.contains(&format!(
            "| **total** | | **{:.2}** |",
            report.total_usd_per_million
        )));
        assert!(table.contains("ReceiveMessage (empty)"), "{table}");
        assert!(!table.contains("-0.00"), "{table}");
    }

    #[test]
    fn says_what_a_clean_run_does_not_have() {
        let mut unclean = measurement();
        unclean.functions[1].error_lines = 2;
        unclean.dead_letters = 1;
        unclean.replies = 9;
        let notes = price(&unclean, &LIST_PRICES).notes.join("\n");
        assert!(notes.contains("2 ERROR log lines"), "{notes}");
        assert!(
            notes.contains("1 messages reached the dead-letter queue"),
            "{notes}"
        );
        assert!(notes.contains("fewer replies than messages"), "{notes}");
    }
}
