//! Sending mail: the [`Mailer`] port and its Amazon SES (v2) adapter. Mails go out as raw MIME
//! (`multipart/alternative` with a text and an HTML part), built by [`to_mime`].

use std::future::Future;

use crate::clock::rfc2822_date;

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The sender address (`ERROR_FROM_EMAIL`), verified in SES.
    pub from: String,
    /// The recipients (`ERROR_LOG_EMAIL`).
    pub to: Vec<String>,
    /// Where replies go (`REPLY_TO_EMAIL`), when set.
    pub reply_to: Option<String>,
    /// The subject, one line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// Why a mail was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// SES refused the mail for good: sending it again fails the same way until someone fixes
    /// the account or an identity (an unverified sender, or recipient in the sandbox, a sending
    /// paused or an account suspended, a refused request).
    #[error(
        "SES refused the mail for good ({0}). Verify the sender ERROR_FROM_EMAIL (or its domain) in SES, \
         in the stack's region; while the account is in the SES sandbox, verify every ERROR_LOG_EMAIL \
         recipient too or request production access (infra/verify-ses-sender.sh --status says which); \
         a paused or suspended account must be reinstated in the SES console. Mails wait until then"
    )]
    Rejected(String),
    /// SES could not be reached or failed for now (throttling, an outage): a later try may pass.
    #[error("SES is unavailable: {0}")]
    Unavailable(String),
}

/// Sends mail.
pub trait Mailer: Send + Sync {
    /// Sends `mail`; returns the provider's message id.
    fn send(&self, mail: &Mail) -> impl Future<Output = Result<String, MailError>> + Send;
}

/// The length header lines are kept to where they can be folded (RFC 5322's recommendation).
const FOLD_AT: usize = 78;
/// The longest base64 body line (RFC 2045 §6.8).
const BASE64_LINE: usize = 76;
/// The most UTF-8 bytes in one RFC 2047 encoded word: 42 bytes are 56 base64 characters, so
/// that `=?UTF-8?B?…?=` is 68 characters and `Subject: ` plus one word still fits in 78.
const ENCODED_WORD_BYTES: usize = 42;
/// An address is cut to this many bytes in the headers (never in the SES envelope), so that no
/// header line can exceed RFC 5322's 998 characters. Real addresses are at most 320 characters.
const MAX_ADDRESS_BYTES: usize = 900;

// Written here rather than with `mail-builder`, which was weighed: its 0.4 line lets a CR or LF
// in a subject or address start a new header, and 2.x needs Rust 1.89 (the workspace is 1.88),
// turns the bodies' bare LF and CR into CRLF (7bit or quoted-printable: bodies no longer come
// back byte for byte), writes a subject that looks like an encoded word as is (readers then
// show another text), lets a long address make a header line of thousands of characters, and
// always adds a Message-ID. Fixing that around it would leave no less code than this.
/// Builds the raw MIME message for `mail`, dated `message_date`: `multipart/alternative` with a
/// `text/plain` then a `text/html` part, both UTF-8 in base64, CRLF line endings throughout.
///
/// Header injection is impossible: control characters (CR and LF among them) in the subject
/// and addresses become spaces. A subject that is not short plain ASCII is written as RFC 2047
/// encoded words, folded, so that it comes back exactly. Header lines stay under 998
/// characters whatever the input. The `Message-ID` is left for SES to set.
pub fn to_mime(mail: &Mail, message_date: std::time::SystemTime) -> Vec<u8> {
    let boundary = format!("=_alt.{:032x}", rand::random::<u128>());
    let mut out = String::with_capacity(mail.text.len() * 4 / 3 + mail.html.len() * 4 / 3 + 1024);

    out.push_str("From: ");
    out.push_str(&header_address(&mail.from));
    out.push_str("\r\n");
    let to: Vec<String> = mail.to.iter().map(|a| header_address(a)).collect();
    if !to.is_empty() {
        push_address_list(&mut out, "To", &to);
    }
    if let Some(reply_to) = reply_to(mail) {
        out.push_str("Reply-To: ");
        out.push_str(&header_address(reply_to));
        out.push_str("\r\n");
    }
    push_subject(&mut out, &mail.subject);
    out.push_str("Date: ");
    out.push_str(&rfc2822_date(message_date));
    out.push_str("\r\nMIME-Version: 1.0\r\n");
    out.push_str("Content-Type: multipart/alternative; boundary=\"");
    out.push_str(&boundary);
    out.push_str("\"\r\n\r\n");

    for (subtype, body) in [("plain", &mail.text), ("html", &mail.html)] {
        out.push_str("--");
        out.push_str(&boundary);
        out.push_str("\r\nContent-Type: text/");
        out.push_str(subtype);
        out.push_str("; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        push_base64_lines(&mut out, body.as_bytes());
    }
    out.push_str("--");
    out.push_str(&boundary);
    out.push_str("--\r\n");
    out.into_bytes()
}

/// The reply-to address, unless it is absent or blank.
fn reply_to(mail: &Mail) -> Option<&str> {
    mail.reply_to.as_deref().filter(|r| !r.trim().is_empty())
}

/// Replaces every control character (CR, LF, tab, DEL, C1) and Unicode line or paragraph
/// separator with a space, so that a value cannot end its header line.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// An address as written in a header: on one line, trimmed, and cut to [`MAX_ADDRESS_BYTES`].
fn header_address(address: &str) -> String {
    let mut address = one_line(address).trim().to_owned();
    if address.len() > MAX_ADDRESS_BYTES {
        let mut end = MAX_ADDRESS_BYTES;
        while !address.is_char_boundary(end) {
            end -= 1;
        }
        address.truncate(end);
    }
    address
}

/// Writes `name: a, b, …`, folding before an address that would take the line past 78.
fn push_address_list(out: &mut String, name: &str, addresses: &[String]) {
    out.push_str(name);
    out.push_str(": ");
    let mut line = name.len() + 2;
    for (index, address) in addresses.iter().enumerate() {
        if index > 0 {
            if line + 2 + address.len() + 1 > FOLD_AT {
                out.push_str(",\r\n ");
                line = 1;
            } else {
                out.push_str(", ");
                line += 2;
            }
        }
        out.push_str(address);
        line += address.len();
    }
    out.push_str("\r\n");
}

/// Writes the `Subject` header: as is when it is short, printable ASCII that no reader could
/// take for an encoded word or trim; otherwise as folded RFC 2047 `B` encoded words, each at
/// most [`ENCODED_WORD_BYTES`] of UTF-8 cut at character boundaries.
fn push_subject(out: &mut String, subject: &str) {
    let subject = one_line(subject);
    let plain = subject.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !subject.contains("=?")
        && !subject.contains("  ")
        && subject.trim() == subject
        && "Subject: ".len() + subject.len() <= FOLD_AT;
    out.push_str("Subject:");
    if plain {
        if !subject.is_empty() {
            out.push(' ');
            out.push_str(&subject);
        }
        out.push_str("\r\n");
        return;
    }
    let mut rest = subject.as_str();
    let mut first = true;
    while !rest.is_empty() {
        let mut end = rest.len().min(ENCODED_WORD_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (word, tail) = rest.split_at(end);
        out.push_str(if first { " " } else { "\r\n " });
        first = false;
        out.push_str("=?UTF-8?B?");
        out.push_str(&base64_encode(word.as_bytes()));
        out.push_str("?=");
        rest = tail;
    }
    out.push_str("\r\n");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes `bytes` in base64, [`BASE64_LINE`] characters a line, each line ended by CRLF.
fn push_base64_lines(out: &mut String, bytes: &[u8]) {
    let encoded = base64_encode(bytes);
    // Base64 is ASCII, so every index is a character boundary.
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(BASE64_LINE));
        out.push_str(line);
        out.push_str("\r\n");
        rest = tail;
    }
}

/// [`Mailer`] on Amazon SES (v2): `SendEmail` with the raw MIME message from [`to_mime`].
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

impl SesMailer {
    /// Sends through `client`. Creating it does no network I/O.
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        Self { client }
    }
}

impl Mailer for SesMailer {
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        use aws_sdk_sesv2::primitives::Blob;
        use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};

        let raw = RawMessage::builder()
            .data(Blob::new(to_mime(mail, std::time::SystemTime::now())))
            .build()
            // Only a message without data fails to build, and the data is set.
            .map_err(|e| MailError::Unavailable(format!("could not build the raw message: {e}")))?;
        let output = self
            .client
            .send_email()
            .from_email_address(&mail.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(mail.to.clone()))
                    .build(),
            )
            .set_reply_to_addresses(reply_to(mail).map(|r| vec![r.to_owned()]))
            .content(EmailContent::builder().raw(raw).build())
            .send()
            .await
            .map_err(|error| {
                let rejected = error.as_service_error().is_some_and(is_rejection);
                let text = aws_sdk_sesv2::error::DisplayErrorContext(error).to_string();
                if rejected {
                    MailError::Rejected(text)
                } else {
                    MailError::Unavailable(text)
                }
            })?;
        match output.message_id() {
            Some(id) => Ok(id.to_owned()),
            None => {
                // SES accepted the mail: reporting a failure would only get it sent twice.
                tracing::warn!("SES accepted the mail but returned no message id");
                Ok(String::new())
            }
        }
    }
}

/// Whether SES refused this mail for good (sending it again would fail again), as opposed to
/// failing for now (throttling, an outage). `AccessDeniedException` is not one of `SendEmail`'s
/// modelled errors but comes back when IAM does not let the function send as the sender, or (in
/// the sandbox) to a recipient's identity: also for good.
fn is_rejection(error: &aws_sdk_sesv2::operation::send_email::SendEmailError) -> bool {
    use aws_sdk_sesv2::error::ProvideErrorMetadata;
    use aws_sdk_sesv2::operation::send_email::SendEmailError as E;
    matches!(
        error,
        E::MessageRejected(_)
            | E::MailFromDomainNotVerifiedException(_)
            | E::AccountSuspendedException(_)
            | E::SendingPausedException(_)
            | E::BadRequestException(_)
            | E::NotFoundException(_)
    ) || matches!(error.code(), Some("AccessDeniedException" | "AccessDenied"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// RFC 5322's limit on a line, CRLF excluded.
    const MAX_LINE: usize = 998;

    fn mail() -> Mail {
        Mail {
            from: "alerts@example.com".into(),
            to: vec!["ops@example.com".into(), "oncall@example.org".into()],
            reply_to: Some("support@example.com".into()),
            subject: "Processor errors".into(),
            text: "Three errors.\nSee the logs.".into(),
            html: "<p>Three errors.</p>".into(),
        }
    }

    fn mime(mail: &Mail) -> String {
        let date = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        String::from_utf8(to_mime(mail, date)).expect("the MIME text is UTF-8")
    }

    /// The header section's lines, unfolded.
    fn headers(mime: &str) -> Vec<String> {
        let (head, _) = mime
            .split_once("\r\n\r\n")
            .expect("a blank line ends the headers");
        let mut headers: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match headers.last_mut() {
                Some(last) if line.starts_with(' ') => last.push_str(line),
                _ => headers.push(line.to_owned()),
            }
        }
        headers
    }

    fn boundary(mime: &str) -> String {
        let content_type = headers(mime)
            .into_iter()
            .find(|h| h.starts_with("Content-Type: multipart/alternative; boundary=\""))
            .expect("a multipart/alternative content type");
        content_type
            .split('"')
            .nth(1)
            .expect("a quoted boundary")
            .to_owned()
    }

    /// Checks the line rules: CRLF only, no line over 998, and base64 lines of at most 76
    /// characters made of the base64 alphabet only (so the boundary cannot be among them).
    fn assert_well_formed(mime: &str) {
        assert!(mime.ends_with("\r\n"));
        let lines: Vec<&str> = mime.strip_suffix("\r\n").unwrap().split("\r\n").collect();
        for line in &lines {
            assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
            assert!(line.len() <= MAX_LINE, "a line of {} bytes", line.len());
        }
        let boundary = boundary(mime);
        let delimiter = format!("--{boundary}");
        let delimiters: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with(&delimiter))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(delimiters.len(), 3, "two parts and a close delimiter");
        assert_eq!(lines[delimiters[2]], format!("{delimiter}--"));
        for window in delimiters.windows(2) {
            let part = &lines[window[0] + 1..window[1]];
            let blank = part
                .iter()
                .position(|l| l.is_empty())
                .expect("part headers end");
            assert!(part[..blank].contains(&"Content-Transfer-Encoding: base64"));
            for line in &part[blank + 1..] {
                assert!(line.len() <= 76, "a base64 line of {}", line.len());
                assert!(
                    line.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
                    "not base64: {line:?}"
                );
                assert!(!line.contains(&boundary));
            }
        }
    }

    #[test]
    fn writes_the_headers_and_two_base64_parts_with_crlf_lines() {
        let mime = mime(&mail());
        let headers = headers(&mime);
        let boundary = boundary(&mime);
        assert_eq!(
            headers,
            [
                "From: alerts@example.com".to_owned(),
                "To: ops@example.com, oncall@example.org".to_owned(),
                "Reply-To: support@example.com".to_owned(),
                "Subject: Processor errors".to_owned(),
                "Date: Tue, 14 Nov 2023 22:13:20 +0000".to_owned(),
                "MIME-Version: 1.0".to_owned(),
                format!("Content-Type: multipart/alternative; boundary=\"{boundary}\""),
            ]
        );
        // Characters outside the base64 alphabet keep the boundary out of the parts.
        assert!(
            boundary.contains('_') && boundary.contains('.'),
            "{boundary}"
        );
        assert!(!headers.iter().any(|h| h.starts_with("Message-ID")));
        let plain = mime
            .find("Content-Type: text/plain; charset=UTF-8\r\n")
            .unwrap();
        let html = mime
            .find("Content-Type: text/html; charset=UTF-8\r\n")
            .unwrap();
        assert!(plain < html, "the text part comes first");
        assert_well_formed(&mime);
    }

    #[test]
    fn each_message_has_its_own_boundary() {
        assert_ne!(boundary(&mime(&mail())), boundary(&mime(&mail())));
    }

    #[test]
    fn reply_to_is_written_only_when_set() {
        for reply_to in [None, Some(String::new()), Some("  ".into())] {
            let mime = mime(&Mail { reply_to, ..mail() });
            assert!(!headers(&mime).iter().any(|h| h.starts_with("Reply-To")));
        }
    }

    #[test]
    fn no_control_character_in_a_header_can_start_a_new_header() {
        let mime = mime(&Mail {
            from: "alerts@example.com\r\nBcc: evil@example.com".into(),
            to: vec!["ops@example.com\nBcc: evil@example.com".into()],
            reply_to: Some("r@example.com\rBcc: evil@example.com".into()),
            subject: "Alert\r\nBcc: evil@example.com".into(),
            ..mail()
        });
        let headers = headers(&mime);
        assert!(
            !headers
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("bcc")),
            "{headers:#?}"
        );
        assert_eq!(headers.len(), 7, "{headers:#?}");
        assert_eq!(
            headers[0],
            "From: alerts@example.com  Bcc: evil@example.com"
        );
        assert_well_formed(&mime);
    }

    #[test]
    fn a_short_ascii_subject_is_plain_and_anything_else_is_encoded() {
        let subject = |s: &str| {
            headers(&mime(&Mail {
                subject: s.into(),
                ..mail()
            }))[3]
                .clone()
        };
        assert_eq!(subject("Disk full"), "Subject: Disk full");
        assert_eq!(subject(""), "Subject:");
        for encoded in [
            "Café",
            "=?UTF-8?B?SGk=?=",
            " leading space",
            "two  spaces",
            &"x".repeat(70),
        ] {
            let header = subject(encoded);
            assert!(header.starts_with("Subject: =?UTF-8?B?"), "{header}");
        }
    }

    #[test]
    fn encoded_words_are_short_and_folded() {
        let mime = mime(&Mail {
            subject: "é".repeat(200),
            ..mail()
        });
        let (head, _) = mime.split_once("\r\n\r\n").unwrap();
        let subject_lines: Vec<&str> = head
            .split("\r\n")
            .skip_while(|l| !l.starts_with("Subject:"))
            .take_while(|l| l.starts_with("Subject:") || l.starts_with(' '))
            .collect();
        assert!(subject_lines.len() > 5);
        for line in subject_lines {
            assert!(line.len() <= 78, "{line}");
            let word = line.trim_start_matches("Subject:").trim_start();
            assert!(word.starts_with("=?UTF-8?B?") && word.ends_with("?="));
            assert!(word.len() <= 75);
        }
    }

    #[test]
    fn a_huge_address_list_is_folded_and_a_huge_address_is_cut() {
        let mime = mime(&Mail {
            to: (0..200).map(|i| format!("person{i}@example.com")).collect(),
            from: format!("{}@example.com", "é".repeat(2_000)),
            ..mail()
        });
        assert_well_formed(&mime);
        let to = headers(&mime)
            .into_iter()
            .find(|h| h.starts_with("To: "))
            .unwrap();
        assert_eq!(to.matches('@').count(), 200);
    }

    #[test]
    fn dates_are_rfc_5322_in_utc() {
        let at = |seconds: u64| rfc2822_date(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(at(4_133_980_799), "Fri, 31 Dec 2100 23:59:59 +0000");
        assert_eq!(at(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 +0000");
        assert_eq!(
            rfc2822_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        // httpdate writes the same fields, with the obsolete zone name GMT.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..5_000 {
            // Up to 9999-12-31, the last date httpdate writes.
            let seconds = rng.random_range(0..253_402_300_800);
            let time = UNIX_EPOCH + Duration::from_secs(seconds);
            let expected = httpdate::fmt_http_date(time).replace(" GMT", " +0000");
            assert_eq!(rfc2822_date(time), expected);
        }
    }

    #[test]
    fn permanent_ses_refusals_are_rejections_and_the_rest_is_unavailability() {
        use aws_sdk_sesv2::operation::send_email::SendEmailError as E;
        use aws_sdk_sesv2::types::error as errors;
        assert!(is_rejection(&E::MessageRejected(
            errors::MessageRejected::builder().build()
        )));
        assert!(is_rejection(&E::MailFromDomainNotVerifiedException(
            errors::MailFromDomainNotVerifiedException::builder().build()
        )));
        assert!(is_rejection(&E::AccountSuspendedException(
            errors::AccountSuspendedException::builder().build()
        )));
        assert!(is_rejection(&E::SendingPausedException(
            errors::SendingPausedException::builder().build()
        )));
        assert!(is_rejection(&E::BadRequestException(
            errors::BadRequestException::builder().build()
        )));
        assert!(is_rejection(&E::NotFoundException(
            errors::NotFoundException::builder().build()
        )));
        assert!(!is_rejection(&E::TooManyRequestsException(
            errors::TooManyRequestsException::builder().build()
        )));
        assert!(!is_rejection(&E::LimitExceededException(
            errors::LimitExceededException::builder().build()
        )));
        let generic = |code: &str| {
            E::generic(
                aws_sdk_sesv2::error::ErrorMetadata::builder()
                    .code(code)
                    .build(),
            )
        };
        assert!(!is_rejection(&generic("ServiceUnavailable")));
        assert!(!is_rejection(&generic("InternalFailure")));
        assert!(is_rejection(&generic("AccessDeniedException")));
    }

    #[test]
    fn a_rejection_says_how_to_fix_it_and_an_outage_does_not() {
        let rejected =
            MailError::Rejected("MessageRejected: Email address is not verified.".into())
                .to_string();
        for fix in [
            "MessageRejected: Email address is not verified.",
            "Verify the sender ERROR_FROM_EMAIL",
            "every ERROR_LOG_EMAIL recipient",
            "request production access",
            "infra/verify-ses-sender.sh --status",
        ] {
            assert!(rejected.contains(fix), "{rejected}");
        }
        let unavailable = MailError::Unavailable("throttled".into()).to_string();
        assert_eq!(unavailable, "SES is unavailable: throttled");
    }
}
