//! Telling the alerter's three triggers apart by the event's shape, and reading each:
//! dead-lettered SQS records, CloudWatch Logs subscription data, SNS alarm notifications.
//!
//! SQS records are read with `aws_lambda_events`' [`SqsEvent`]. The other two are read here,
//! because that crate's types refuse events this function must still mail about: its
//! `LogsEvent` decoder fails on invalid UTF-8 in a log line (replaced here), on a payload
//! without `owner` or `subscriptionFilters`, and inflates without a bound; its `SnsEvent`
//! requires every envelope field (`Type`, `MessageId`, a well-formed `Timestamp`, the
//! signature fields…) and its `CloudWatchAlarmPayload` a string `AlarmDescription` and a full
//! `Trigger`, none of which an alert needs.

use std::io::Read;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use shared::inbound::{InboundMessage, MessageContent};
use shared::privacy::mask;

/// What invoked the alerter.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Records of the processor queue's dead-letter queue.
    DeadLetters(Vec<DeadLetter>),
    /// Log lines a subscription filter passed on.
    Logs(LogBatch),
    /// CloudWatch alarm state changes, through SNS.
    Alarms(Vec<AlarmChange>),
}

/// Why an event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The event is none of the three shapes.
    #[error("the event is not an SQS, CloudWatch Logs or SNS event")]
    Unknown,
    /// The `awslogs.data` payload is not base64 of gzip of JSON.
    #[error("the CloudWatch Logs payload cannot be read: {0}")]
    LogsPayload(String),
    /// The event has SQS records of an unexpected shape.
    #[error("the SQS records cannot be read: {0}")]
    SqsRecords(String),
}

/// A message that failed every retry and landed in the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The SQS message id (what a batch item failure names).
    pub sqs_message_id: String,
    /// The dead-letter queue's ARN, for the redrive instructions.
    pub queue_arn: String,
    /// How many times the message was received, the dead-letter queue included.
    pub receive_count: u32,
    /// When the message was first enqueued (milliseconds since the epoch).
    pub first_seen_ms: Option<i64>,
    /// When it was last received, from the dead-letter queue (milliseconds since the epoch).
    pub last_seen_ms: Option<i64>,
    /// What the record carries, when its body is an inbound message.
    pub message: Option<DeadMessage>,
    /// The body's size in bytes.
    pub body_bytes: usize,
    /// The body, to archive as it was.
    pub body: String,
    /// The FIFO group id the record was sent with.
    pub group_id: Option<String>,
    /// The FIFO deduplication id the record was sent with.
    pub deduplication_id: Option<String>,
}

/// The readable part of a dead-lettered inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadMessage {
    /// Meta's message id.
    pub message_id: String,
    /// The user, masked.
    pub user: String,
    /// The kind of message.
    pub kind: String,
    /// The text (or caption, or reply title), cut to [`EXCERPT_CHARS`].
    pub text: Option<String>,
}

/// Text taken from messages and logs is cut to this many characters.
pub const EXCERPT_CHARS: usize = 300;

/// Log lines of one log stream.
#[derive(Debug, Clone, PartialEq)]
pub struct LogBatch {
    /// The log group, such as `/aws/lambda/my-stack-processor`.
    pub log_group: String,
    /// The log stream.
    pub log_stream: String,
    /// The lines.
    pub entries: Vec<LogEntry>,
}

impl LogBatch {
    /// The function the log group belongs to.
    pub fn function(&self) -> &str {
        self.log_group
            .strip_prefix("/aws/lambda/")
            .unwrap_or(&self.log_group)
    }
}

/// One log line, read from our JSON log format when it is JSON, else as plain text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogEntry {
    /// When it was logged (milliseconds since the epoch).
    pub timestamp_ms: i64,
    /// `ERROR`, `WARN`…, when known.
    pub level: Option<String>,
    /// The structured `event` field, such as `reply_undeliverable`.
    pub event: Option<String>,
    /// The log message, cut to [`EXCERPT_CHARS`].
    pub message: String,
    /// The `error` field, cut to [`EXCERPT_CHARS`].
    pub error: Option<String>,
    /// Meta's error code, from the `error_code` field.
    pub error_code: Option<i64>,
    /// The Lambda request id.
    pub request_id: Option<String>,
    /// The user concerned, as our logs carry it (masked).
    pub user: Option<String>,
}

/// A CloudWatch alarm's change of state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlarmChange {
    /// The alarm's name.
    pub name: String,
    /// The alarm's description.
    pub description: Option<String>,
    /// The new state: `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// The previous state.
    pub old_state: Option<String>,
    /// CloudWatch's explanation.
    pub reason: String,
    /// When the state changed, as CloudWatch wrote it.
    pub changed_at: Option<String>,
    /// The region code, from the alarm's ARN.
    pub region: Option<String>,
    /// The metric, as `Namespace/MetricName`.
    pub metric: Option<String>,
    /// The condition, such as `Sum GreaterThanThreshold 0 for 1 × 60 s`.
    pub condition: Option<String>,
}

/// Reads an alerter event.
pub fn read(event: &Value) -> Result<Trigger, TriggerError> {
    if let Some(data) = event
        .get("awslogs")
        .and_then(|a| a.get("data"))
        .and_then(Value::as_str)
    {
        return read_logs(data).map(Trigger::Logs);
    }
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or(TriggerError::Unknown)?;
    let source = records
        .first()
        .and_then(|r| r.get("eventSource").or_else(|| r.get("EventSource")))
        .and_then(Value::as_str);
    match source {
        Some("aws:sqs") => {
            let sqs = SqsEvent::deserialize(event)
                .map_err(|e| TriggerError::SqsRecords(e.to_string()))?;
            Ok(Trigger::DeadLetters(
                sqs.records.iter().map(read_dead_letter).collect(),
            ))
        }
        Some("aws:sns") => Ok(Trigger::Alarms(
            records.iter().filter_map(read_alarm).collect(),
        )),
        _ => Err(TriggerError::Unknown),
    }
}

fn read_dead_letter(record: &SqsMessage) -> DeadLetter {
    let attribute = |name: &str| record.attributes.get(name).map(String::as_str);
    let body = record.body.as_deref().unwrap_or_default();
    DeadLetter {
        sqs_message_id: record.message_id.clone().unwrap_or_default(),
        queue_arn: record.event_source_arn.clone().unwrap_or_default(),
        receive_count: attribute("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        first_seen_ms: attribute("SentTimestamp").and_then(|t| t.parse().ok()),
        last_seen_ms: attribute("ApproximateFirstReceiveTimestamp").and_then(|t| t.parse().ok()),
        message: serde_json::from_str::<InboundMessage>(body)
            .ok()
            .map(|m| DeadMessage {
                message_id: m.id.clone(),
                user: mask(m.sender.id()),
                kind: m.content.kind().to_owned(),
                text: content_text(&m.content).map(|t| excerpt(&t)),
            }),
        body_bytes: body.len(),
        body: body.to_owned(),
        group_id: attribute("MessageGroupId").map(str::to_owned),
        deduplication_id: attribute("MessageDeduplicationId").map(str::to_owned),
    }
}

fn content_text(content: &MessageContent) -> Option<String> {
    match content {
        MessageContent::Text { body } => Some(body.clone()),
        MessageContent::ButtonReply { title, .. } | MessageContent::ListReply { title, .. } => {
            Some(title.clone())
        }
        MessageContent::QuickReply { text, .. } => Some(text.clone()),
        MessageContent::Media { caption, .. } => caption.clone(),
        MessageContent::Edit { text, .. } => text.clone(),
        _ => None,
    }
}

fn read_logs(data: &str) -> Result<LogBatch, TriggerError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| TriggerError::LogsPayload(format!("not base64: {e}")))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .take(16 * 1024 * 1024)
        .read_to_end(&mut bytes)
        .map_err(|e| TriggerError::LogsPayload(format!("not gzip: {e}")))?;
    // Log lines may hold invalid UTF-8; it must not cost the alert.
    let text = String::from_utf8_lossy(&bytes);
    let payload: Value = serde_json::from_str(&text)
        .map_err(|e| TriggerError::LogsPayload(format!("not JSON: {e}")))?;
    let entries = if payload.get("messageType").and_then(Value::as_str) == Some("CONTROL_MESSAGE") {
        Vec::new()
    } else {
        payload
            .get("logEvents")
            .and_then(Value::as_array)
            .map(|events| events.iter().map(read_log_event).collect())
            .unwrap_or_default()
    };
    Ok(LogBatch {
        log_group: str_at(&payload, "logGroup").unwrap_or_default(),
        log_stream: str_at(&payload, "logStream").unwrap_or_default(),
        entries,
    })
}

fn read_log_event(event: &Value) -> LogEntry {
    let timestamp_ms = event
        .get("timestamp")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let raw = event
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Ok(line) = serde_json::from_str::<Value>(raw.trim()) else {
        return LogEntry {
            timestamp_ms,
            message: excerpt(raw.trim()),
            ..LogEntry::default()
        };
    };
    let fields = line.get("fields").unwrap_or(&line);
    let text = |v: Option<&Value>| {
        v.map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    LogEntry {
        timestamp_ms,
        level: str_at(&line, "level"),
        event: str_at(fields, "event"),
        message: excerpt(&text(fields.get("message")).unwrap_or_default()),
        error: text(fields.get("error")).map(|e| excerpt(&e)),
        error_code: fields
            .get("error_code")
            .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok())),
        user: ["user", "recipient", "from"]
            .iter()
            .find_map(|key| str_at(fields, key)),
        request_id: str_at(&line, "requestId")
            .or_else(|| line.get("span").and_then(|s| str_at(s, "requestId")))
            .or_else(|| str_at(fields, "requestId")),
    }
}

fn read_alarm(record: &Value) -> Option<AlarmChange> {
    let message = record.get("Sns")?.get("Message")?.as_str()?;
    let Ok(alarm) = serde_json::from_str::<Value>(message) else {
        // Not an alarm: still worth a mail, with the text as the reason.
        return Some(AlarmChange {
            name: str_at(record.get("Sns")?, "Subject")
                .unwrap_or_else(|| "SNS notification".into()),
            state: "NOTIFICATION".into(),
            reason: excerpt(message),
            ..AlarmChange::default()
        });
    };
    let trigger = alarm.get("Trigger");
    let metric = trigger.and_then(|t| {
        let name = str_at(t, "MetricName")?;
        Some(match str_at(t, "Namespace") {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name,
        })
    });
    let condition = trigger.map(|t| {
        let number = |key: &str| {
            t.get(key)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into())
        };
        format!(
            "{} {} {} for {} × {} s",
            str_at(t, "Statistic")
                .or_else(|| str_at(t, "ExtendedStatistic"))
                .unwrap_or_else(|| "value".into()),
            str_at(t, "ComparisonOperator").unwrap_or_default(),
            number("Threshold"),
            number("EvaluationPeriods"),
            number("Period"),
        )
    });
    Some(AlarmChange {
        name: str_at(&alarm, "AlarmName").unwrap_or_else(|| "unnamed alarm".into()),
        description: str_at(&alarm, "AlarmDescription").filter(|d| !d.is_empty()),
        state: str_at(&alarm, "NewStateValue").unwrap_or_else(|| "UNKNOWN".into()),
        old_state: str_at(&alarm, "OldStateValue"),
        reason: excerpt(&str_at(&alarm, "NewStateReason").unwrap_or_default()),
        changed_at: str_at(&alarm, "StateChangeTime"),
        region: str_at(&alarm, "AlarmArn").and_then(|arn| arn.split(':').nth(3).map(str::to_owned)),
        metric,
        condition,
    })
}

fn str_at(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Cuts `text` to [`EXCERPT_CHARS`] characters, marking a cut with `…`.
pub fn excerpt(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_owned();
    }
    let cut: String = text.chars().take(EXCERPT_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    pub(crate) fn awslogs(payload: &Value) -> Value {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(payload.to_string().as_bytes()).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        json!({"awslogs": {"data": data}})
    }

    #[test]
    fn reads_dead_letters_with_their_message() {
        let body = json!({"v": 1, "phone_number_id": "P", "sender": {"wa_id": "15551234567"}, "id": "wamid.1",
            "timestamp": 1, "content": {"type": "text", "body": "hello there"}});
        let event = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-west-1:123:dlq.fifo", "body": body.to_string(),
            "attributes": {"ApproximateReceiveCount": "6", "SentTimestamp": "1700000000000",
                           "ApproximateFirstReceiveTimestamp": "1700000300000"}},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": "garbage"}]});
        let Trigger::DeadLetters(letters) = read(&event).unwrap() else {
            panic!("not dead letters")
        };
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].receive_count, 6);
        assert_eq!(letters[0].first_seen_ms, Some(1_700_000_000_000));
        assert_eq!(
            letters[0].message,
            Some(DeadMessage {
                message_id: "wamid.1".into(),
                user: "*******4567".into(),
                kind: "text".into(),
                text: Some("hello there".into())
            })
        );
        assert_eq!(letters[1].message, None);
        assert_eq!(letters[1].body_bytes, 7);
    }

    #[test]
    fn reads_our_json_log_lines_and_plain_ones() {
        let line = json!({"timestamp": "2026-11-22T10:00:00Z", "level": "ERROR",
            "fields": {"message": "Meta refused the reply for good", "event": "reply_undeliverable",
                       "error_code": 131047, "error": "the Graph API answered 400"},
            "span": {"requestId": "req-1", "name": "Lambda runtime invoke"}});
        let event = awslogs(
            &json!({"messageType": "DATA_MESSAGE", "logGroup": "/aws/lambda/stack-processor",
            "logStream": "2026/11/22/[$LATEST]abc", "logEvents": [
                {"id": "1", "timestamp": 1_795_255_200_000i64, "message": line.to_string()},
                {"id": "2", "timestamp": 1_795_255_201_000i64, "message": "thread 'main' panicked at src/main.rs"}]}),
        );
        let Trigger::Logs(batch) = read(&event).unwrap() else {
            panic!("not logs")
        };
        assert_eq!(batch.function(), "stack-processor");
        assert_eq!(
            batch.entries[0].event.as_deref(),
            Some("reply_undeliverable")
        );
        assert_eq!(batch.entries[0].error_code, Some(131_047));
        assert_eq!(batch.entries[0].request_id.as_deref(), Some("req-1"));
        assert_eq!(batch.entries[0].level.as_deref(), Some("ERROR"));
        assert_eq!(
            batch.entries[1].message,
            "thread 'main' panicked at src/main.rs"
        );
        assert_eq!(batch.entries[1].event, None);
    }

    #[test]
    fn control_messages_carry_no_entries_and_bad_payloads_are_errors() {
        let control = awslogs(
            &json!({"messageType": "CONTROL_MESSAGE", "logGroup": "", "logStream": "", "logEvents": [
            {"id": "", "timestamp": 0, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}),
        );
        let Trigger::Logs(batch) = read(&control).unwrap() else {
            panic!("not logs")
        };
        assert!(batch.entries.is_empty());
        assert!(matches!(
            read(&json!({"awslogs": {"data": "%%%"}})),
            Err(TriggerError::LogsPayload(_))
        ));
        assert!(matches!(
            read(&json!({"awslogs": {"data": "aGVsbG8="}})),
            Err(TriggerError::LogsPayload(_))
        ));
    }

    #[test]
    fn invalid_utf8_in_a_log_payload_is_replaced_not_fatal() {
        let mut raw = br#"{"messageType":"DATA_MESSAGE","logGroup":"/aws/lambda/f","logStream":"s","logEvents":[{"id":"1","timestamp":1,"message":"bad "#.to_vec();
        raw.extend_from_slice(&[0xff, 0xfe]);
        raw.extend_from_slice(br#" bytes"}]}"#);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&raw).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        let Trigger::Logs(batch) = read(&json!({"awslogs": {"data": data}})).unwrap() else {
            panic!("not logs")
        };
        assert_eq!(batch.entries[0].message, "bad \u{fffd}\u{fffd} bytes");
    }

    #[test]
    fn reads_alarm_notifications() {
        let alarm = json!({"AlarmName": "stack-dlq-not-empty", "AlarmDescription": "Messages in the DLQ",
            "NewStateValue": "ALARM", "OldStateValue": "OK", "NewStateReason": "Threshold Crossed: 1 datapoint [3.0]",
            "StateChangeTime": "2026-11-22T10:00:00.000+0000",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:stack-dlq-not-empty",
            "Trigger": {"MetricName": "ApproximateNumberOfMessagesVisible", "Namespace": "AWS/SQS",
                "Statistic": "MAXIMUM", "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0.0,
                "EvaluationPeriods": 1, "Period": 60}});
        let event = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": alarm.to_string(), "Subject": "ALARM"}}]});
        let Trigger::Alarms(alarms) = read(&event).unwrap() else {
            panic!("not alarms")
        };
        let a = &alarms[0];
        assert_eq!(
            (a.name.as_str(), a.state.as_str()),
            ("stack-dlq-not-empty", "ALARM")
        );
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            a.metric.as_deref(),
            Some("AWS/SQS/ApproximateNumberOfMessagesVisible")
        );
        assert_eq!(
            a.condition.as_deref(),
            Some("MAXIMUM GreaterThanThreshold 0.0 for 1 × 60 s")
        );
    }

    #[test]
    fn other_events_are_unknown() {
        assert_eq!(read(&json!({"hello": "world"})), Err(TriggerError::Unknown));
        assert_eq!(
            read(&json!({"Records": [{"eventSource": "aws:s3"}]})),
            Err(TriggerError::Unknown)
        );
        assert_eq!(read(&json!({"Records": []})), Err(TriggerError::Unknown));
    }

    #[test]
    fn sqs_records_of_another_shape_are_an_error() {
        let event = json!({"Records": [{"eventSource": "aws:sqs", "body": 5}]});
        assert!(matches!(read(&event), Err(TriggerError::SqsRecords(_))));
    }

    #[test]
    fn excerpts_are_bounded_in_characters() {
        let long = "é".repeat(10_000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS);
        assert!(cut.ends_with('…'));
    }
}
