//! The MIME that `to_mime` writes, read back by the test kit's parser: every field comes back
//! exactly, and nothing in a field can break out of its header.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use rand::{Rng, SeedableRng};
use shared::mail::{Mail, to_mime};
use testkit::mail::parse_mime;

fn round_trip(mail: &Mail) -> Mail {
    let mime = to_mime(mail, std::time::SystemTime::now());
    parse_mime(std::str::from_utf8(&mime).expect("the MIME text is UTF-8"))
}

fn mail() -> Mail {
    Mail {
        from: "alerts@example.com".into(),
        to: vec!["ops@example.com".into(), "oncall@example.org".into()],
        reply_to: Some("support@example.com".into()),
        subject: "Processor errors".into(),
        text: "Three errors.\r\nSee the logs.\n".into(),
        html: "<p>Three errors.</p>".into(),
    }
}

#[test]
fn every_field_comes_back() {
    let mail = mail();
    assert_eq!(round_trip(&mail), mail);
    let without = Mail {
        reply_to: None,
        subject: String::new(),
        text: String::new(),
        html: String::new(),
        ..mail
    };
    assert_eq!(round_trip(&without), without);
}

#[test]
fn an_injected_header_stays_in_the_subject() {
    let parsed = round_trip(&Mail {
        subject: "Alert\r\nBcc: evil@example.com".into(),
        ..mail()
    });
    assert_eq!(parsed.subject, "Alert  Bcc: evil@example.com");
}

#[test]
fn a_long_non_ascii_subject_comes_back_exactly() {
    let subject: String = "Échec ⚠️ naïve café 🔥🚨 日本語 — ñ "
        .chars()
        .cycle()
        .take(200)
        .collect();
    assert_eq!(subject.chars().count(), 200);
    assert_eq!(
        round_trip(&Mail {
            subject: subject.clone(),
            ..mail()
        })
        .subject,
        subject
    );
}

#[test]
fn subjects_that_look_encoded_or_have_odd_spaces_come_back_exactly() {
    for subject in [
        "=?UTF-8?B?SGk=?=",
        "  two leading, two trailing  ",
        "a  b\u{a0}c",
        &"x".repeat(500),
    ] {
        let parsed = round_trip(&Mail {
            subject: subject.into(),
            ..mail()
        });
        assert_eq!(parsed.subject, subject);
    }
}

#[test]
fn random_subjects_come_back_on_one_line() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let alphabet: Vec<char> = "ab =?_\r\n\t\u{0}\u{7f}\u{85}\u{2028}é€😀"
        .chars()
        .collect();
    for _ in 0..500 {
        let length = rng.random_range(0..120);
        let subject: String = (0..length)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let parsed = round_trip(&Mail {
            subject: subject.clone(),
            ..mail()
        });
        let on_one_line: String = subject
            .chars()
            .map(|c| {
                let breaks_the_line = c.is_control() || c == '\u{2028}' || c == '\u{2029}';
                if breaks_the_line { ' ' } else { c }
            })
            .collect();
        assert_eq!(parsed.subject, on_one_line, "{subject:?}");
    }
}

#[test]
fn a_large_html_body_with_a_very_long_line_comes_back_byte_for_byte() {
    let long_line: String = "<b>é</b>x<script>alert(1)</script>\u{1f525}"
        .chars()
        .cycle()
        .take(20_000)
        .collect();
    let mut html = format!("<html><body>\r\n<p>{long_line}</p>\n");
    let mut index = 0;
    while html.len() < 100_000 {
        html.push_str(&format!("<div>line {index}\r</div>\n"));
        index += 1;
    }
    let mime = to_mime(
        &Mail {
            html: html.clone(),
            text: long_line.clone(),
            ..mail()
        },
        std::time::SystemTime::now(),
    );
    let parsed = parse_mime(std::str::from_utf8(&mime).unwrap());
    assert_eq!(parsed.html.as_bytes(), html.as_bytes());
    assert_eq!(parsed.text, long_line);
    assert!(
        std::str::from_utf8(&mime)
            .unwrap()
            .lines()
            .all(|l| l.len() <= 998)
    );
}
