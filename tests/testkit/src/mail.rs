//! Mail in tests: verifying a sender in moto's SES, reading back the raw messages moto stored,
//! and parsing the MIME that [`shared::mail::to_mime`] writes.

use base64::Engine as _;
use shared::mail::Mail;

/// Creates the email identity `address` in moto, which marks it verified at once, so that
/// mails from it are accepted.
pub async fn verify_sender(client: &aws_sdk_sesv2::Client, address: &str) {
    client
        .create_email_identity()
        .email_identity(address)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create the email identity {address} in moto: {}",
                aws_sdk_sesv2::error::DisplayErrorContext(e)
            )
        });
}

/// A raw mail as moto's SES stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    /// The envelope sender (`FromEmailAddress`).
    pub source: String,
    /// The recipients, each once, in the order moto lists them first.
    pub destinations: Vec<String>,
    /// The raw MIME message.
    pub raw: String,
}

/// Moto's dump of every model. Moto answers 500 when a model changes between its check that an
/// attribute can be written as JSON and the writing (another test adding a DynamoDB item to a
/// table that was empty, say), so a 500 is asked again a few times.
async fn moto_data(url: &str) -> serde_json::Value {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let answer = reqwest::get(url).await.and_then(|r| r.error_for_status());
        match answer {
            Ok(answer) => {
                return answer
                    .json()
                    .await
                    .unwrap_or_else(|e| panic!("GET {url}: the body is not JSON: {e}"));
            }
            Err(e) if attempts < 20 && e.status().is_some_and(|s| s.is_server_error()) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("GET {url}: {e}"),
        }
    }
}

/// Every raw mail moto's SES has stored since the server started, from every test, in sending
/// order. Reads moto's internal `GET /moto-api/data.json` at `AWS_ENDPOINT_URL`.
pub async fn sent_mails() -> Vec<SentMail> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| e.starts_with("http://127.") || e.starts_with("http://localhost"))
        .unwrap_or_else(|| {
            panic!("AWS_ENDPOINT_URL must point at a local moto server; run tests/with-moto.sh")
        });
    let url = format!("{}/moto-api/data.json", endpoint.trim_end_matches('/'));
    let data = moto_data(&url).await;
    let Some(messages) = data["ses"]["RawMessage"].as_array() else {
        panic!("moto's data.json has no list at [\"ses\"][\"RawMessage\"]: {data}");
    };
    messages
        .iter()
        .map(|message| {
            let text = |key: &str| {
                message[key].as_str().map(str::to_owned).unwrap_or_else(|| {
                    panic!("a RawMessage in moto's data.json has no string {key:?}: {message}")
                })
            };
            let Some(listed) = message["destinations"].as_array() else {
                panic!("a RawMessage in moto's data.json has no list \"destinations\": {message}");
            };
            // moto lists each recipient once for the envelope and once for the To header.
            let mut destinations: Vec<String> = Vec::new();
            for destination in listed {
                let Some(destination) = destination.as_str() else {
                    panic!("a destination in moto's data.json is not a string: {message}");
                };
                if !destinations.iter().any(|d| d == destination) {
                    destinations.push(destination.to_owned());
                }
            }
            SentMail {
                source: text("source"),
                destinations,
                raw: text("raw_data"),
            }
        })
        .collect()
}

/// The mails addressed to `recipient`, in sending order, parsed. Moto's mails are shared by
/// every test that runs against the server: give each test its own recipient address.
pub async fn sent_mails_to(recipient: &str) -> Vec<Mail> {
    sent_mails()
        .await
        .into_iter()
        .filter(|mail| mail.destinations.iter().any(|d| d == recipient))
        .map(|mail| parse_mime(&mail.raw))
        .collect()
}

/// Reads back the [`Mail`] that [`shared::mail::to_mime`] wrote: CRLF lines, folded headers, RFC 2047
/// `B` encoded words in the subject, `multipart/alternative` with base64 `text/plain` and
/// `text/html` parts. Panics, saying why, on anything else.
pub fn parse_mime(raw: &str) -> Mail {
    let (head, body) = split_head(raw, "the message");
    let headers = parse_headers(head);
    let header = |name: &str| -> Option<&str> {
        let mut found = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = found.next();
        assert!(
            found.next().is_none(),
            "more than one {name} header:\n{head}"
        );
        first
    };
    let required = |name: &str| header(name).unwrap_or_else(|| panic!("no {name} header:\n{head}"));

    assert_eq!(header("MIME-Version"), Some("1.0"), "MIME-Version:\n{head}");
    let content_type = required("Content-Type");
    let boundary = multipart_boundary(content_type);

    let mut text = None;
    let mut html = None;
    for part in split_parts(body, &boundary) {
        let (part_head, part_body) = split_head(part, "a part");
        let part_headers = parse_headers(part_head);
        let part_header = |name: &str| {
            part_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
                .unwrap_or_else(|| panic!("a part has no {name} header:\n{part_head}"))
        };
        assert_eq!(
            part_header("Content-Transfer-Encoding"),
            "base64",
            "only base64 parts are understood"
        );
        let content_type = part_header("Content-Type");
        let slot = match content_type.replace(' ', "").as_str() {
            "text/plain;charset=utf-8" => &mut text,
            "text/html;charset=utf-8" => &mut html,
            other => panic!("unexpected part type {other:?}"),
        };
        assert!(slot.is_none(), "two {content_type} parts");
        *slot = Some(decode_base64_text(part_body));
    }

    Mail {
        from: required("From").to_owned(),
        to: header("To")
            .map(|to| to.split(',').map(|a| a.trim().to_owned()).collect())
            .unwrap_or_default(),
        reply_to: header("Reply-To").map(str::to_owned),
        subject: decode_rfc2047(required("Subject")),
        text: text.unwrap_or_else(|| panic!("no text/plain part")),
        html: html.unwrap_or_else(|| panic!("no text/html part")),
    }
}

/// Splits at the first empty line: the headers, then the body. A part may be headers alone
/// (an empty body): the CRLF before the next delimiter ends them.
fn split_head<'a>(raw: &'a str, what: &str) -> (&'a str, &'a str) {
    if let Some(body) = raw.strip_prefix("\r\n") {
        return ("", body);
    }
    if let Some(split) = raw.split_once("\r\n\r\n") {
        return split;
    }
    match raw.strip_suffix("\r\n") {
        Some(head) => (head, ""),
        None => panic!("{what} has no CRLF CRLF between headers and body:\n{raw:?}"),
    }
}

/// The headers as (name, value) pairs, continuation lines unfolded (the CRLF removed, the
/// whitespace kept) and the whitespace after the colon dropped.
fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(
            !line.contains('\r') && !line.contains('\n'),
            "a bare CR or LF in the header line {line:?}"
        );
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = headers.last_mut() else {
                panic!("the headers start with a continuation line: {line:?}");
            };
            value.push_str(line);
        } else {
            let Some((name, value)) = line.split_once(':') else {
                panic!("a header line without a colon: {line:?}");
            };
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
                "a malformed header name in {line:?}"
            );
            headers.push((
                name.to_owned(),
                value.trim_start_matches([' ', '\t']).to_owned(),
            ));
        }
    }
    headers
}

/// The boundary of a `multipart/alternative` content type, quoted or not.
fn multipart_boundary(content_type: &str) -> String {
    let mut params = content_type.split(';').map(str::trim);
    let kind = params.next().unwrap_or_default();
    assert!(
        kind.eq_ignore_ascii_case("multipart/alternative"),
        "the message is not multipart/alternative: {content_type}"
    );
    params
        .find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
}

/// The body parts between the delimiter lines, without the CRLF before each delimiter.
fn split_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let open = format!("--{boundary}");
    let delimiter = format!("\r\n{open}");
    // The first delimiter may open the body, without a CRLF before it.
    let start = if body.starts_with(&open) {
        0
    } else {
        body.find(&delimiter)
            .map(|i| i + 2)
            .unwrap_or_else(|| panic!("no delimiter line {open}"))
    };
    let mut pieces: Vec<&str> = body[start + open.len()..].split(&delimiter).collect();
    let Some(last) = pieces.pop() else {
        unreachable!("split yields at least one piece")
    };
    assert!(
        last.starts_with("--"),
        "the multipart body does not end with {open}--"
    );
    pieces
        .into_iter()
        .map(|piece| {
            // After the boundary: optional transport padding, then the CRLF ending its line.
            let Some((padding, part)) = piece.split_once("\r\n") else {
                panic!("a delimiter line is not followed by CRLF: {piece:?}");
            };
            assert!(
                padding.trim_matches([' ', '\t']).is_empty(),
                "text after a delimiter: {padding:?}"
            );
            part
        })
        .collect()
}

/// Decodes a base64 body (lines of at most 76 characters) into UTF-8 text.
fn decode_base64_text(body: &str) -> String {
    let mut encoded = String::with_capacity(body.len());
    for line in body.split("\r\n") {
        assert!(
            line.len() <= 76,
            "a base64 line of {} characters",
            line.len()
        );
        encoded.push_str(line);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .unwrap_or_else(|e| panic!("a part is not valid base64: {e}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("a part is not UTF-8: {e}"))
}

/// Decodes RFC 2047 `=?UTF-8?B?…?=` encoded words in an unstructured header value. Whitespace
/// between two adjacent encoded words is dropped; the bytes of adjacent words are joined before
/// they are read as UTF-8, so a character split across words comes back whole.
pub fn decode_rfc2047(value: &str) -> String {
    let mut decoded = String::new();
    let mut pending: Vec<u8> = Vec::new(); // Bytes of a run of adjacent encoded words.
    let mut whitespace = String::new(); // Whitespace seen since the last word.
    let flush = |decoded: &mut String, pending: &mut Vec<u8>| {
        if !pending.is_empty() {
            let text = String::from_utf8(std::mem::take(pending))
                .unwrap_or_else(|e| panic!("encoded words that are not UTF-8: {e}"));
            decoded.push_str(&text);
        }
    };
    for (index, token) in value.split([' ', '\t']).enumerate() {
        if index > 0 {
            whitespace.push(' ');
        }
        if token.is_empty() {
            continue;
        }
        if let Some(bytes) = encoded_word(token) {
            if pending.is_empty() {
                decoded.push_str(&whitespace);
            }
            pending.extend(bytes);
        } else {
            flush(&mut decoded, &mut pending);
            decoded.push_str(&whitespace);
            decoded.push_str(token);
        }
        whitespace.clear();
    }
    flush(&mut decoded, &mut pending);
    decoded.push_str(&whitespace);
    decoded
}

/// The bytes of one `=?charset?B?…?=` encoded word, or `None` when `token` is not one.
fn encoded_word(token: &str) -> Option<Vec<u8>> {
    let inner = token.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut fields = inner.split('?');
    let (charset, encoding, text) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    assert!(
        charset.eq_ignore_ascii_case("UTF-8"),
        "an encoded word in {charset}, not UTF-8: {token}"
    );
    assert!(
        encoding.eq_ignore_ascii_case("B"),
        "a {encoding}-encoded word, only B is understood: {token}"
    );
    assert!(
        token.len() <= 75,
        "an encoded word over 75 characters: {token}"
    );
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("the encoded word {token} is not base64: {e}")),
    )
}
