//! The inputs the measurements send: Meta deliveries signed as Meta signs them, SQS batches as
//! Lambda hands them to the processor and the alerter, and a CloudWatch Logs subscription event.

use std::io::Write;

use base64::Engine;
use local_stack::local::PHONE_NUMBER_ID;
use local_stack::resources::LOCAL_SECRET;
use local_stack::runtime::http_api_event;
use serde_json::{Value, json};
use shared::inbound::{INBOUND_MESSAGE_VERSION, InboundMessage, MediaKind, MessageContent, Sender};
use shared::meta::signature::sign;
use shared::queue::QueueEntry;

/// A text as users write it, French with an accent and an emoji, `chars` characters long.
pub fn user_text(chars: usize) -> String {
    "Bonjour, je voudrais réserver une table pour deux 😀 ce soir, vers vingt heures. "
        .chars()
        .cycle()
        .take(chars)
        .collect()
}

/// The longest text WhatsApp takes (4,096 UTF-16 units), in the characters that weigh most in
/// UTF-8 for their count (three bytes each): 12 KiB.
pub fn longest_user_text() -> String {
    "中文长消息测试".chars().cycle().take(4_096).collect()
}

/// `json` with every non-ASCII character as a `\uXXXX` escape, as Meta writes its bodies.
pub fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A Meta delivery of one text message per `(from, id, text)`, each user in `contacts`.
pub fn text_delivery(messages: &[(String, String, String)]) -> Vec<u8> {
    let now = shared::clock::now_epoch_seconds().to_string();
    let contacts: Vec<Value> = messages
        .iter()
        .map(|(from, _, _)| json!({"profile": {"name": "Ana Benchmark"}, "wa_id": from}))
        .collect();
    let bodies: Vec<Value> = messages
        .iter()
        .map(|(from, id, text)| json!({"from": from, "id": id, "timestamp": now, "type": "text", "text": {"body": text}}))
        .collect();
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": contacts, "messages": bodies}}]}]});
    escape_non_ascii(&body.to_string()).into_bytes()
}

/// The 2 KB delivery of one text message the webhook's CPU figure is measured with, message
/// id `wamid.<id>`.
pub fn two_kb_delivery(id: &str) -> Vec<u8> {
    let from = "15551234567".to_owned();
    let id = format!("wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUFE{id}");
    let shell = text_delivery(&[(from.clone(), id.clone(), String::new())]).len();
    // The text escapes to about 1.2 bytes per character.
    let text = user_text((2_048 - shell) * 10 / 12);
    text_delivery(&[(from, id, text)])
}

/// About 3 MB (Meta's largest body): 120 messages of the longest text, each escaped to about
/// 24.6 KB, from as many users.
pub fn three_mb_delivery() -> Vec<u8> {
    let messages: Vec<(String, String, String)> = (0..120)
        .map(|i| {
            (
                format!("1555{i:07}"),
                format!("wamid.LARGE{i:08}"),
                longest_user_text(),
            )
        })
        .collect();
    text_delivery(&messages)
}

/// A status webhook (`sent`, `delivered`, `read`) of message `id` to `recipient`.
pub fn status_delivery(id: &str, status: &str, recipient: &str) -> Vec<u8> {
    let now = shared::clock::now_epoch_seconds().to_string();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [{"id": id, "status": status, "timestamp": now, "recipient_id": recipient,
                "conversation": {"id": "CONVERSATION", "origin": {"type": "service"}},
                "pricing": {"billable": true, "pricing_model": "PMP", "category": "service"}}]}}]}]})
    .to_string()
    .into_bytes()
}

/// The API Gateway event of a `POST /webhook` of `body`, signed with the local app secret.
pub fn signed_post(body: &[u8]) -> Value {
    let signature = sign(body, LOCAL_SECRET[0].1.as_bytes());
    http_api_event(
        "POST",
        "/webhook",
        "",
        &[
            ("content-type".into(), "application/json".into()),
            ("user-agent".into(), "facebookexternalua".into()),
            ("x-hub-signature-256".into(), signature),
        ],
        body,
    )
}

/// The API Gateway event of Meta's verification handshake with the local verify token.
pub fn handshake() -> Value {
    let query = format!(
        "hub.mode=subscribe&hub.verify_token={}&hub.challenge=1158201444",
        LOCAL_SECRET[1].1
    );
    http_api_event("GET", "/webhook", &query, &[], b"")
}

/// An inbound media message from `user` (a voice note for audio), as the webhook queues it.
pub fn inbound_media(
    user: &str,
    id: &str,
    kind: MediaKind,
    media_id: &str,
    mime_type: &str,
) -> InboundMessage {
    InboundMessage {
        content: MessageContent::Media {
            kind,
            media_id: Some(media_id.into()),
            mime_type: Some(mime_type.into()),
            caption: Some("what is this?".into()),
            filename: None,
            voice: kind == MediaKind::Audio,
        },
        ..inbound(user, id, "")
    }
}

/// An inbound text message from `user`, as the webhook queues it.
pub fn inbound(user: &str, id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        v: INBOUND_MESSAGE_VERSION,
        phone_number_id: PHONE_NUMBER_ID.into(),
        display_phone_number: Some("15550783881".into()),
        sender: Sender {
            wa_id: Some(user.into()),
            user_id: None,
        },
        name: Some("Ana Benchmark".into()),
        id: id.into(),
        timestamp: shared::clock::now_epoch_seconds(),
        context: None,
        content: MessageContent::Text { body: text.into() },
    }
}

/// An SQS record of `queue_arn` carrying `message`'s queue body, received `receive_count` times.
pub fn sqs_record(queue_arn: &str, message: &InboundMessage, receive_count: u32) -> Value {
    let entry = QueueEntry::for_message(message).expect("a queue body");
    let now_ms = shared::clock::now_epoch_ms().to_string();
    json!({"messageId": format!("sqs-{}", message.id), "receiptHandle": format!("handle-{}", message.id),
        "body": entry.body, "md5OfBody": "", "messageAttributes": {},
        "attributes": {"MessageGroupId": entry.group_id, "MessageDeduplicationId": entry.deduplication_id,
            "ApproximateReceiveCount": receive_count.to_string(), "SentTimestamp": now_ms,
            "ApproximateFirstReceiveTimestamp": now_ms, "SenderId": "AIDA", "SequenceNumber": "1"},
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1"})
}

/// A CloudWatch Logs subscription event of `lines` ERROR lines of the processor, as Lambda
/// hands it over (`awslogs.data`: base64 of gzip of JSON), and the size of that JSON. With
/// `repeated`, every line is the same error (an outage), which compresses far better.
pub fn logs_event(lines: usize, repeated: bool) -> (Value, usize) {
    let noise = |i: usize| if repeated { 0 } else { noise(i) };
    let events: Vec<Value> = (0..lines)
        .map(|i| {
            // Request and trace ids are random, as in real lines: they are what compresses least.
            let line = json!({"timestamp": format!("2026-11-21T10:{:02}:{:02}.{:06}Z", i / 60 % 60, i % 60, noise(i) % 1_000_000),
                "level": "ERROR",
                "fields": {"event": "reply_failed", "user": format!("***{:04}", noise(i + 1) % 10_000), "error_code": 131_000 + i % 97,
                    "error": format!("the Graph API answered 500 with error Some({}): fbtrace_id {:016x}{:016x}, retry later", 131_000 + i % 97, noise(i + 2), noise(i + 3)),
                    "message": "the reply could not be sent"},
                "span": {"requestId": format!("{:016x}{:016x}", noise(i + 4), noise(i + 5)),
                    "xrayTraceId": format!("Root=1-{:08x}-{:016x}", noise(i + 6) as u32, noise(i + 7)), "name": "Lambda runtime invoke"}});
            json!({"id": format!("{i:056}"), "timestamp": 1_795_255_200_000_i64 + i as i64, "message": line.to_string()})
        })
        .collect();
    let payload = json!({"messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "/aws/lambda/speed-processor", "logStream": "2026/11/21/[$LATEST]0123456789abcdef",
        "subscriptionFilters": ["speed-ProcessorErrors"], "logEvents": events});
    let inflated = payload.to_string();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(inflated.as_bytes()).expect("gzip in memory");
    let compressed = gzip.finish().expect("gzip in memory");
    let data = base64::engine::general_purpose::STANDARD.encode(compressed);
    (json!({"awslogs": {"data": data}}), inflated.len())
}

/// The CloudWatch Logs subscription event of as many ERROR lines as fit in `bytes` (Lambda takes
/// at most 1 MB for an asynchronous invocation), with the number of lines and their inflated
/// size.
pub fn logs_event_of_size(bytes: usize) -> (Value, usize, usize) {
    let sample = 1_000;
    let per_line = event_bytes(&logs_event(sample, false).0) as f64 / sample as f64;
    let mut lines = (bytes as f64 / per_line) as usize;
    loop {
        let (event, inflated) = logs_event(lines, false);
        if event_bytes(&event) <= bytes {
            return (event, lines, inflated);
        }
        lines = lines * 99 / 100;
    }
}

/// The CloudWatch Logs subscription event of the same ERROR line repeated until the lines
/// inflate to about `inflated_bytes`, with the number of lines.
pub fn repeated_logs_event(inflated_bytes: usize) -> (Value, usize, usize) {
    let sample = 1_000;
    let per_line = logs_event(sample, true).1 as f64 / sample as f64;
    let lines = (inflated_bytes as f64 / per_line) as usize;
    let (event, inflated) = logs_event(lines, true);
    (event, lines, inflated)
}

/// A reproducible pseudo-random number for `i` (splitmix64).
fn noise(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The size in bytes of `event` as Lambda would hand it over.
pub fn event_bytes(event: &Value) -> usize {
    event.to_string().len()
}
