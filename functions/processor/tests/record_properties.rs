//! Property tests of the queue body reader: a record body is whatever sat on the queue (a
//! webhook of another version, a message moved back by hand, a truncated copy). Reading a
//! batch must never panic, must keep one record per SQS record, and must read back any body
//! the webhook writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use processor::plan::read_records;
use proptest::prelude::*;
use shared::inbound::{InboundMessage, MessageContent, Sender};
use shared::queue::QueueEntry;
use shared::queue_body::QueueBody;

fn record(id: usize, body: Option<String>, attributes: HashMap<String, String>) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(format!("sqs-{id}"));
    record.body = body;
    record.attributes = attributes;
    record
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// A body as the webhook writes it, for `text` from `from`.
fn written_body(from: &str, text: &str) -> String {
    let message = InboundMessage {
        v: shared::inbound::INBOUND_MESSAGE_VERSION,
        phone_number_id: "PNID".into(),
        display_phone_number: None,
        sender: Sender {
            wa_id: Some(from.into()),
            user_id: None,
        },
        name: None,
        id: "wamid.p".into(),
        timestamp: 1_700_000_000,
        context: None,
        content: MessageContent::Text { body: text.into() },
    };
    QueueEntry::for_message(&message)
        .expect("a queue body")
        .body
}

fn attributes() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(
        prop_oneof![
            Just("MessageGroupId".to_owned()),
            Just("ApproximateReceiveCount".to_owned()),
            "\\PC{0,12}",
        ],
        "\\PC{0,24}",
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any bodies and attributes: no panic, one record each, in order.
    #[test]
    fn any_body_is_read_without_panic(
        records in proptest::collection::vec((proptest::option::of("[\\s\\S]{0,200}"), attributes()), 0..10)
    ) {
        let counts: Vec<u32> = records
            .iter()
            .map(|(_, a)| a.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1))
            .collect();
        let read = read_records(&event(
            records.into_iter().enumerate().map(|(i, (body, a))| record(i, body, a)).collect(),
        ));
        prop_assert_eq!(read.len(), counts.len());
        for (i, (read, count)) in read.iter().zip(counts).enumerate() {
            prop_assert_eq!(&read.sqs_message_id, &format!("sqs-{i}"));
            prop_assert_eq!(read.receive_count, count);
        }
    }

    /// A body the webhook wrote, whatever its text, reads back; cut short anywhere, it is an
    /// error of that record, not a panic.
    #[test]
    fn written_bodies_read_back_and_truncated_ones_fail_alone(
        text in "[\\s\\S]{0,120}",
        from in "[0-9]{6,15}",
        cut in any::<proptest::sample::Index>(),
    ) {
        let body = written_body(&from, &text);
        let truncated = body[..cut.index(body.len())].to_owned();
        let records = read_records(&event(vec![
            record(0, Some(body), HashMap::new()),
            record(1, Some(truncated), HashMap::new()),
        ]));
        let Ok(QueueBody::Message(message)) = &records[0].body else {
            panic!("the written body reads back as a message: {:?}", records[0].body);
        };
        prop_assert_eq!(&message.content, &MessageContent::Text { body: text });
        prop_assert_eq!(&records[0].group, &format!("PNID:{from}"));
        prop_assert!(records[1].body.is_err());
    }
}
