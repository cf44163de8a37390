//! Benchmarks of the webhook's pure hot paths, per delivery: the signature check, reading the
//! notification, and writing each message's queue body. `cargo bench -p shared` runs them
//! (README, "Speed and size", has the figures); `cargo test` does not build them.
#![allow(
    clippy::expect_used,
    reason = "a benchmark's fixed inputs: a failure is a broken benchmark"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::meta::{notification, signature};
use shared::queue::{QueueEntry, ascii_json};

const SECRET: &[u8] = b"benchmark-app-secret";

/// A text as users write it, with the non-ASCII characters Meta escapes (`\u00e9`, an emoji as a
/// surrogate pair), about `bytes` long once escaped.
fn escaped_text(bytes: usize) -> String {
    let phrase = r"Bonjour, je voudrais r\u00e9server une table pour deux \ud83d\ude00 ce soir. ";
    phrase.repeat(bytes / phrase.len() + 1)[..bytes]
        .trim_end_matches('\\')
        .to_owned()
}

/// One message of a Meta delivery, as JSON, with a text of about `text_bytes`.
fn message_json(index: usize, text_bytes: usize) -> String {
    let text = escaped_text(text_bytes);
    let text = text.trim_end_matches(|c| c != ' '); // never cut inside an escape
    format!(
        r#"{{"from":"1555{index:07}","id":"wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUFERjg0NDEzNDdF{index:08}","timestamp":"1795255200","type":"text","text":{{"body":"{text}"}}}}"#
    )
}

/// A Meta delivery of `messages` text messages of about `text_bytes` each, from as many users.
fn delivery(messages: usize, text_bytes: usize) -> Vec<u8> {
    let contacts: Vec<String> = (0..messages)
        .map(|i| format!(r#"{{"profile":{{"name":"User {i}"}},"wa_id":"1555{i:07}"}}"#))
        .collect();
    let bodies: Vec<String> = (0..messages).map(|i| message_json(i, text_bytes)).collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{}],"messages":[{}]}},"field":"messages"}}]}}]}}"#,
        contacts.join(","),
        bodies.join(",")
    )
    .into_bytes()
}

/// The 2 KB delivery of one text message that the webhook CPU figure is measured with.
fn two_kb() -> Vec<u8> {
    let body = delivery(1, 1_600);
    assert!(
        (1_900..=2_100).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    body
}

/// About 3 MB, Meta's largest: 700 messages of about 4,300 bytes (a text of about 4,100).
fn three_mb() -> Vec<u8> {
    let body = delivery(700, 4_090);
    assert!(
        (2_900_000..=3_100_000).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    body
}

fn signature_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature_verify");
    for (name, body) in [("2KB", two_kb()), ("3MB", three_mb())] {
        let header = signature::sign(&body, SECRET);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| signature::verify(black_box(&body), Some(&header), &[SECRET]))
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("notification_parse");
    for (name, body) in [("2KB", two_kb()), ("3MB", three_mb())] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| notification::parse(black_box(&body))));
    }
    group.finish();
}

fn queue_body(c: &mut Criterion) {
    let delivery = notification::parse(&two_kb()).expect("the fixture is a delivery");
    let message = &delivery.messages[0];
    let mut group = c.benchmark_group("queue_body");
    group.bench_function("for_message_2KB", |b| {
        b.iter(|| QueueEntry::for_message(black_box(message)))
    });
    group.bench_function("ascii_json_2KB", |b| {
        b.iter(|| ascii_json(black_box(message)))
    });
    group.finish();
}

criterion_group!(hot_paths, signature_check, parse, queue_body);
criterion_main!(hot_paths);
