//! Verification of Meta's `X-Hub-Signature-256` header.
//!
//! Meta signs the exact bytes it sends with HMAC-SHA256 keyed by the app secret and puts
//! `sha256=<hex>` in the header. The check must run over the raw body: re-serialising the
//! JSON changes escapes such as `\u00e4` and breaks the signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

const PREFIX: &str = "sha256=";
const DIGEST_LEN: usize = 32;

/// Why a signature was refused. None of the variants carries the body or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request had no `X-Hub-Signature-256` header.
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// The header is present but is not `sha256=` followed by 64 hex digits.
    #[error("the X-Hub-Signature-256 header is malformed: {0}")]
    Malformed(&'static str),
    /// The header is well formed but matches none of the configured app secrets.
    #[error("the X-Hub-Signature-256 header does not match the body")]
    Mismatch,
}

/// Computes the header value Meta would send for `body` signed with `app_secret`.
pub fn sign(body: &[u8], app_secret: &[u8]) -> String {
    let mut mac = keyed(app_secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// An HMAC-SHA256 keyed with `key`.
#[allow(
    clippy::expect_used,
    reason = "HMAC takes keys of any length: new_from_slice cannot fail"
)]
fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Checks `header` against `body` with each of `app_secrets` in turn (the current secret and,
/// during a rotation, the previous one). Each comparison runs in constant time.
pub fn verify(
    body: &[u8],
    header: Option<&str>,
    app_secrets: &[&[u8]],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let digest_hex = header
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::Malformed("it does not start with sha256="))?;
    if digest_hex.len() != DIGEST_LEN * 2 {
        return Err(SignatureError::Malformed("the digest is not 64 hex digits"));
    }
    let expected =
        hex::decode(digest_hex).map_err(|_| SignatureError::Malformed("the digest is not hex"))?;
    let matches = app_secrets.iter().any(|secret| {
        let mut mac = keyed(secret);
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";

    #[test]
    fn accepts_its_own_signature() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        assert_eq!(verify(body, Some(&sign(body, SECRET)), &[SECRET]), Ok(()));
    }

    #[test]
    fn matches_a_known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style vector.
        let header = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        assert_eq!(
            sign(b"The quick brown fox jumps over the lazy dog", b"key"),
            header
        );
        assert_eq!(
            verify(
                b"The quick brown fox jumps over the lazy dog",
                Some(header),
                &[b"key"]
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_a_wrong_secret() {
        let body = b"{}";
        assert_eq!(
            verify(body, Some(&sign(body, b"other")), &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn accepts_the_previous_secret_during_rotation() {
        let body = b"{}";
        let header = sign(body, b"old-secret");
        assert_eq!(
            verify(body, Some(&header), &[SECRET, b"old-secret"]),
            Ok(())
        );
        assert_eq!(
            verify(body, Some(&header), &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_a_missing_header() {
        assert_eq!(verify(b"{}", None, &[SECRET]), Err(SignatureError::Missing));
    }

    #[test]
    fn refuses_a_wrong_prefix() {
        let header = sign(b"{}", SECRET).replace("sha256=", "sha1=");
        assert!(matches!(
            verify(b"{}", Some(&header), &[SECRET]),
            Err(SignatureError::Malformed(_))
        ));
        let bare = sign(b"{}", SECRET).replace("sha256=", "");
        assert!(matches!(
            verify(b"{}", Some(&bare), &[SECRET]),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_non_hex_and_odd_lengths() {
        let good = sign(b"{}", SECRET);
        let non_hex = format!("sha256={}", "zz".repeat(32));
        assert!(matches!(
            verify(b"{}", Some(&non_hex), &[SECRET]),
            Err(SignatureError::Malformed(_))
        ));
        let odd = &good[..good.len() - 1];
        assert!(matches!(
            verify(b"{}", Some(odd), &[SECRET]),
            Err(SignatureError::Malformed(_))
        ));
        let long = format!("{good}00");
        assert!(matches!(
            verify(b"{}", Some(&long), &[SECRET]),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(b"{}", Some(""), &[SECRET]),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn accepts_upper_case_hex() {
        let header = sign(b"{}", SECRET);
        let upper = format!("sha256={}", header["sha256=".len()..].to_uppercase());
        assert_eq!(verify(b"{}", Some(&upper), &[SECRET]), Ok(()));
    }

    #[test]
    fn signs_an_empty_body() {
        let header = sign(b"", SECRET);
        assert_eq!(verify(b"", Some(&header), &[SECRET]), Ok(()));
        assert_eq!(
            verify(b" ", Some(&header), &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn checks_the_exact_escaped_bytes_not_the_decoded_text() {
        // Meta escapes non-ASCII as \uXXXX; the decoded form is different bytes.
        let escaped = br#"{"text":{"body":"Gr\u00fc\u00dfe \ud83d\ude00"}}"#;
        let decoded = "{\"text\":{\"body\":\"Grüße 😀\"}}".as_bytes();
        let header = sign(escaped, SECRET);
        assert_eq!(verify(escaped, Some(&header), &[SECRET]), Ok(()));
        assert_eq!(
            verify(decoded, Some(&header), &[SECRET]),
            Err(SignatureError::Mismatch)
        );
        let raw_utf8 = sign(decoded, SECRET);
        assert_eq!(verify(decoded, Some(&raw_utf8), &[SECRET]), Ok(()));
    }

    #[test]
    fn a_single_flipped_byte_fails() {
        let body = b"{\"a\":1}".to_vec();
        let header = sign(&body, SECRET);
        let mut tampered = body.clone();
        tampered[5] = b'2';
        assert_eq!(
            verify(&tampered, Some(&header), &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_secret_configured_never_matches() {
        let header = sign(b"{}", b"");
        assert_eq!(
            verify(b"{}", Some(&header), &[]),
            Err(SignatureError::Mismatch)
        );
    }
}
