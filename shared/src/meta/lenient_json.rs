//! Reading webhook JSON that is valid enough to carry but that serde_json refuses.
//!
//! A WhatsApp text or profile name cut inside an emoji reaches us as a lone UTF-16 surrogate
//! escape (`"\ud83d"` with no pair), and serde_json refuses the whole body. Refusing it would
//! make Meta retry the delivery for a week and the user would never be answered, so such
//! escapes are read as U+FFFD (the replacement character), as browsers do; so are bytes that
//! are not UTF-8.

use std::borrow::Cow;

use serde_json::Value;

/// Reads `bytes` as JSON; when serde_json refuses them, reads them again with invalid UTF-8 and
/// lone surrogate escapes replaced by U+FFFD. The error is the strict reading's when the
/// lenient one fails too.
pub fn from_slice_lenient(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let strict = match serde_json::from_slice(bytes) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let text = String::from_utf8_lossy(bytes);
    let repaired = repair_lone_surrogates(&text);
    if matches!((&text, &repaired), (Cow::Borrowed(_), Cow::Borrowed(_))) {
        return Err(strict);
    }
    serde_json::from_str(&repaired).map_err(|_| strict)
}

/// `text` with every `\uXXXX` escape of an unpaired surrogate inside a JSON string replaced by
/// `\ufffd`. Borrowed when there is none.
pub fn repair_lone_surrogates(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut repaired: Option<String> = None;
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (false, b'"') | (true, b'"') => in_string = !in_string,
            (true, b'\\') => {
                let (length, lone) = escape_at(bytes, i);
                if lone {
                    let out = repaired.get_or_insert_with(|| String::with_capacity(text.len()));
                    out.push_str(&text[copied..i]);
                    out.push_str("\\ufffd");
                    copied = i + length;
                }
                i += length;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    match repaired {
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(text),
    }
}

/// The escape starting at the backslash `bytes[at]`: its length in bytes (a surrogate pair is
/// one escape of 12) and whether it is a lone surrogate.
fn escape_at(bytes: &[u8], at: usize) -> (usize, bool) {
    let Some(unit) = unicode_escape(bytes, at) else {
        // `\"`, `\\`, `\n`… or a malformed escape, left for serde_json to judge.
        return (2.min(bytes.len() - at), false);
    };
    match unit {
        0xD800..=0xDBFF => match unicode_escape(bytes, at + 6) {
            Some(0xDC00..=0xDFFF) => (12, false),
            _ => (6, true),
        },
        0xDC00..=0xDFFF => (6, true),
        _ => (6, false),
    }
}

/// The code unit of a `\uXXXX` escape starting at `bytes[at]`, if there is one.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<u16> {
    let escape = bytes.get(at..at + 6)?;
    if escape[0] != b'\\' || escape[1] != b'u' {
        return None;
    }
    let hex = std::str::from_utf8(&escape[2..]).ok()?;
    u16::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let value =
            from_slice_lenient(br#"{"a":"x\ud83d","b":"\ude00y","c":"\ud83d\ud83d"}"#).unwrap();
        assert_eq!(value["a"], "x\u{FFFD}");
        assert_eq!(value["b"], "\u{FFFD}y");
        assert_eq!(value["c"], "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn pairs_and_other_escapes_are_kept() {
        let body = br#"{"t":"\ud83d\ude00 \\ud83d \" \n \u00e9","k\ud83d":1}"#;
        let value = from_slice_lenient(body).unwrap();
        assert_eq!(value["t"], "😀 \\ud83d \" \n é");
        assert_eq!(value["k\u{FFFD}"], 1, "keys are strings too");
        assert!(matches!(
            repair_lone_surrogates(r#"{"a":"\ud83d\ude00"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn invalid_utf8_is_replaced_and_non_json_still_fails() {
        let value = from_slice_lenient(b"{\"a\":\"x\xffy\"}").unwrap();
        assert_eq!(value["a"], "x\u{FFFD}y");
        assert!(from_slice_lenient(b"not json").is_err());
        assert!(
            from_slice_lenient(b"{\"a\":\"\\ud83d").is_err(),
            "cut short"
        );
        assert!(from_slice_lenient(b"").is_err());
    }

    proptest::proptest! {
        /// Any bytes: no panic; valid JSON reads the same as strictly.
        #[test]
        fn never_panics_and_agrees_with_strict_json(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let lenient = from_slice_lenient(&bytes);
            if let Ok(strict) = serde_json::from_slice::<Value>(&bytes) {
                proptest::prop_assert_eq!(lenient.ok(), Some(strict));
            }
        }

        /// Any text with surrogate escapes spliced into its strings reads leniently.
        #[test]
        fn spliced_surrogates_are_read(text in "\\PC{0,30}", unit in 0xD800u16..0xE000) {
            let json = serde_json::to_string(&text).unwrap();
            let spliced = format!("[{}\\u{unit:04x}\"]", &json[..json.len() - 1]);
            proptest::prop_assert!(from_slice_lenient(spliced.as_bytes()).is_ok(), "{}", spliced);
        }
    }
}
