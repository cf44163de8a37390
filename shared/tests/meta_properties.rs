//! Property tests of what reads Meta's webhook before anything else does: the signature check
//! and the delivery parser. Both face any bytes from the internet; neither may panic, and the
//! parser must read any JSON (Meta retries a refused delivery for 7 days).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use shared::meta::notification::parse;
use shared::meta::signature::{SignatureError, sign, verify};

const SECRET: &[u8] = b"app-secret";

/// Field names the parser looks for, so that generated objects reach its deeper branches.
const KEYS: &[&str] = &[
    "object",
    "entry",
    "changes",
    "field",
    "value",
    "messages",
    "statuses",
    "contacts",
    "metadata",
    "phone_number_id",
    "display_phone_number",
    "from",
    "from_user_id",
    "user_id",
    "wa_id",
    "id",
    "timestamp",
    "type",
    "text",
    "body",
    "profile",
    "name",
    "context",
    "image",
    "caption",
    "errors",
    "code",
    "status",
    "recipient_id",
    "system",
    "interactive",
    "button",
    "reaction",
    "location",
    "emoji",
    "message_id",
];

/// Any JSON value, its object keys mostly drawn from [`KEYS`].
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::from),
        Just(Value::from("whatsapp_business_account")),
        Just(Value::from("messages")),
        Just(Value::from("text")),
    ];
    let key = prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A delivery shaped as Meta sends one, its change's value and messages arbitrary.
fn whatsapp_shaped() -> impl Strategy<Value = Value> {
    (
        any_json(),
        proptest::collection::vec(any_json(), 0..4),
        any_json(),
    )
        .prop_map(|(value, messages, contacts)| {
            let mut value = if value.is_object() { value } else { json!({}) };
            value["messages"] = Value::Array(messages);
            value["contacts"] = contacts;
            json!({"object": "whatsapp_business_account",
                "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any bytes: no panic.
    #[test]
    fn the_parser_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
    }

    /// Any JSON value is a delivery (maybe an empty one), never an error.
    #[test]
    fn the_parser_reads_any_json(value in any_json()) {
        let bytes = serde_json::to_vec(&value).expect("JSON");
        prop_assert!(parse(&bytes).is_ok(), "{}", value);
    }

    /// Any JSON in the shape of a delivery is read, whatever its messages hold.
    #[test]
    fn the_parser_reads_any_whatsapp_shaped_json(value in whatsapp_shaped()) {
        let bytes = serde_json::to_vec(&value).expect("JSON");
        prop_assert!(parse(&bytes).is_ok(), "{}", value);
    }

    /// Any header and body: no panic, and no forged header passes.
    #[test]
    fn the_signature_check_never_panics(header in proptest::option::of("\\PC{0,80}"),
        body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let result = verify(&body, header.as_deref(), &[SECRET]);
        // Only the right digest passes, in either case of its hex digits.
        let digest = header
            .as_deref()
            .and_then(|h| h.trim().strip_prefix("sha256="))
            .map(str::to_ascii_lowercase);
        prop_assert_eq!(result.is_ok(), digest.as_deref() == sign(&body, SECRET).strip_prefix("sha256="));
    }

    /// Signed with the key, a body verifies; changed in any one byte, it does not.
    #[test]
    fn a_signed_body_verifies_and_any_one_byte_change_does_not(
        body in proptest::collection::vec(any::<u8>(), 1..300),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let header = sign(&body, SECRET);
        prop_assert_eq!(verify(&body, Some(&header), &[SECRET]), Ok(()));
        let mut changed = body.clone();
        changed[at.index(body.len())] ^= flip;
        prop_assert_eq!(verify(&changed, Some(&header), &[SECRET]), Err(SignatureError::Mismatch));
    }

    /// A signature changed in one digit of its digest does not verify.
    #[test]
    fn any_one_digit_change_of_the_digest_does_not_verify(
        body in proptest::collection::vec(any::<u8>(), 0..100),
        at in any::<proptest::sample::Index>(),
        step in 1u8..16,
    ) {
        let header = sign(&body, SECRET);
        let digits = "0123456789abcdef";
        let position = "sha256=".len() + at.index(64);
        let old = digits.find(&header[position..=position]).expect("a lower-case hex digit");
        let new = (old + usize::from(step)) % 16;
        let forged = format!("{}{}{}", &header[..position], &digits[new..=new], &header[position + 1..]);
        prop_assert_eq!(verify(&body, Some(&forged), &[SECRET]), Err(SignatureError::Mismatch));
    }
}
