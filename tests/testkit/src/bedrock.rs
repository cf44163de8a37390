//! A stand-in for Amazon Bedrock's Converse API (`POST /model/{modelId}/converse`), built on
//! [`RecordingServer`]: it answers with Converse's JSON shapes, scripted answers first, and checks
//! that every request is SigV4-signed by the expected credentials for service `bedrock` and the
//! expected region, answering 403 as AWS does when it is not. It also stands in for Bedrock
//! Knowledge Bases' `Retrieve` (`POST /knowledgebases/{id}/retrieve`, bedrock-agent-runtime, also
//! signed for `bedrock`), so that one AWS endpoint serves a processor using both.
//!
//! [`check_sigv4`] is the check itself, usable on any recorded request: it parses the
//! `Authorization` header and recomputes the signature over what arrived on the wire (method,
//! path, query, the signed headers, the body) with the `aws-sigv4` crate.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::config::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::http_recorder::{Canned, RecordedRequest, RecordingServer};

/// The access key the tests' Bedrock clients sign with.
pub const ACCESS_KEY: &str = "AKIDBEDROCKTEST";
/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "bedrock-test-secret-key";
/// The region the tests' Bedrock clients use.
pub const REGION: &str = "us-east-1";
/// The SigV4 signing name of Bedrock's runtime API.
pub const SERVICE: &str = "bedrock";
/// The prefix of the `Authorization` header of a SigV4 signature.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A successful Converse answer saying `text`, stopped at `end_turn`, with 42 input tokens and
/// 7 output tokens.
pub fn converse_answer(text: &str) -> Canned {
    converse_answer_with(text, "end_turn", 42, 7)
}

/// A successful Converse answer saying `text` with the given stop reason and token counts.
pub fn converse_answer_with(
    text: &str,
    stop_reason: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Canned {
    Canned::json(
        200,
        json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop_reason,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": 5},
        }),
    )
}

/// A successful `Retrieve` answer with one result per `(text, s3 uri)`, best first (scores
/// falling from 0.9).
pub fn retrieve_answer(passages: &[(&str, Option<&str>)]) -> Canned {
    let results: Vec<serde_json::Value> = passages
        .iter()
        .enumerate()
        .map(|(index, (text, uri))| {
            let mut result = json!({
                "content": {"text": text, "type": "TEXT"},
                "score": 0.9 - 0.1 * index as f64,
            });
            if let Some(uri) = uri {
                result["location"] = json!({"type": "S3", "s3Location": {"uri": uri}});
            }
            result
        })
        .collect();
    Canned::json(200, json!({"retrievalResults": results}))
}

/// The knowledge base id of a `Retrieve` path (`/knowledgebases/{id}/retrieve`).
pub fn retrieve_knowledge_base_id(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let id = path
        .strip_prefix("/knowledgebases/")?
        .strip_suffix("/retrieve")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

/// A guardrail's intervention: its canned `text`, stop reason `guardrail_intervened`.
pub fn guardrail_intervened(text: &str) -> Canned {
    converse_answer_with(text, "guardrail_intervened", 42, 0)
}

/// An error answer as Bedrock gives it: `status`, the exception's name in `x-amzn-ErrorType`
/// and `{"message": ...}` as the body.
pub fn converse_error(status: u16, exception: &str, message: &str) -> Canned {
    Canned::json(status, json!({"message": message})).with_header("x-amzn-ErrorType", exception)
}

/// The errors Converse documents, each with the status Bedrock gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConverseException {
    /// 429, too many requests: retried.
    Throttling,
    /// 503: retried.
    ServiceUnavailable,
    /// 429, the model is being loaded: retried.
    ModelNotReady,
    /// 500.
    InternalServer,
    /// 408, the model took too long.
    ModelTimeout,
    /// 424, the model failed.
    ModelError,
    /// 400, a bad request (context too long, bad input).
    Validation,
    /// 403, model access not enabled or the role lacks it.
    AccessDenied,
    /// 404, no such model.
    ResourceNotFound,
    /// 400, over a quota.
    ServiceQuotaExceeded,
}

impl ConverseException {
    /// Every exception.
    pub const ALL: [Self; 10] = [
        Self::Throttling,
        Self::ServiceUnavailable,
        Self::ModelNotReady,
        Self::InternalServer,
        Self::ModelTimeout,
        Self::ModelError,
        Self::Validation,
        Self::AccessDenied,
        Self::ResourceNotFound,
        Self::ServiceQuotaExceeded,
    ];

    /// The name in `x-amzn-ErrorType`, such as `ThrottlingException`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Throttling => "ThrottlingException",
            Self::ServiceUnavailable => "ServiceUnavailableException",
            Self::ModelNotReady => "ModelNotReadyException",
            Self::InternalServer => "InternalServerException",
            Self::ModelTimeout => "ModelTimeoutException",
            Self::ModelError => "ModelErrorException",
            Self::Validation => "ValidationException",
            Self::AccessDenied => "AccessDeniedException",
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::ServiceQuotaExceeded => "ServiceQuotaExceededException",
        }
    }

    /// The HTTP status Bedrock answers it with.
    pub fn status(self) -> u16 {
        match self {
            Self::Throttling | Self::ModelNotReady => 429,
            Self::ServiceUnavailable => 503,
            Self::InternalServer => 500,
            Self::ModelTimeout => 408,
            Self::ModelError => 424,
            Self::Validation | Self::ServiceQuotaExceeded => 400,
            Self::AccessDenied => 403,
            Self::ResourceNotFound => 404,
        }
    }

    /// The answer carrying this exception and `message`.
    pub fn answer(self, message: &str) -> Canned {
        converse_error(self.status(), self.name(), message)
    }

    /// The same answer with the error type in its long form, as some AWS front ends send it
    /// (`ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`).
    pub fn coral_answer(self, message: &str) -> Canned {
        let long = format!(
            "{}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            self.name()
        );
        converse_error(self.status(), &long, message)
    }
}

/// The credentials and region a [`ConverseStandIn`] expects requests to be signed for.
#[derive(Debug, Clone)]
pub struct ExpectedSigner {
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
    /// The region.
    pub region: String,
}

impl Default for ExpectedSigner {
    fn default() -> Self {
        Self {
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            region: REGION.to_owned(),
        }
    }
}

/// The result of checking one request: its path and whether its signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The request's path, as it arrived.
    pub path: String,
    /// `Ok` when the signature verified, else why not.
    pub result: Result<(), String>,
}

struct StandInState {
    script: Mutex<VecDeque<Canned>>,
    retrieve_script: Mutex<VecDeque<Canned>>,
    default_text: Mutex<String>,
    signer: Option<ExpectedSigner>,
    checks: Mutex<Vec<SignatureCheck>>,
}

/// A running Converse stand-in. It stops when the test's runtime ends.
#[derive(Clone)]
pub struct ConverseStandIn {
    /// The base URL, such as `http://127.0.0.1:41234`: the bedrock-runtime endpoint to use.
    pub url: String,
    server: RecordingServer,
    state: Arc<StandInState>,
}

impl ConverseStandIn {
    /// A stand-in answering "Hello!" to requests signed with [`ACCESS_KEY`] and [`SECRET_KEY`]
    /// for [`REGION`].
    pub async fn start() -> Self {
        Self::start_with(Some(ExpectedSigner::default())).await
    }

    /// A stand-in checking signatures against `signer`, or not at all with `None`.
    pub async fn start_with(signer: Option<ExpectedSigner>) -> Self {
        let state = Arc::new(StandInState {
            script: Mutex::new(VecDeque::new()),
            retrieve_script: Mutex::new(VecDeque::new()),
            default_text: Mutex::new("Hello!".to_owned()),
            signer,
            checks: Mutex::new(Vec::new()),
        });
        let responder_state = state.clone();
        let server = RecordingServer::start(move |request: &RecordedRequest| {
            respond(&responder_state, request)
        })
        .await;
        Self {
            url: server.url.clone(),
            server,
            state,
        }
    }

    /// Answers `text` from now on when no scripted answer is left.
    pub fn answer_with(&self, text: &str) {
        *self.state.default_text.lock().expect("text lock") = text.to_owned();
    }

    /// Queues answers given, in order, to the next correctly signed Converse requests.
    pub fn script(&self, answers: impl IntoIterator<Item = Canned>) {
        self.state
            .script
            .lock()
            .expect("script lock")
            .extend(answers);
    }

    /// Queues answers given, in order, to the next correctly signed `Retrieve` requests; without
    /// one, a `Retrieve` finds nothing.
    pub fn script_retrieve(&self, answers: impl IntoIterator<Item = Canned>) {
        self.state
            .retrieve_script
            .lock()
            .expect("retrieve script lock")
            .extend(answers);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// The Converse requests received so far, in order.
    pub fn converse_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| converse_model_id(&r.path).is_some())
            .collect()
    }

    /// The `Retrieve` requests received so far, in order.
    pub fn retrieve_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| retrieve_knowledge_base_id(&r.path).is_some())
            .collect()
    }

    /// The recording server underneath, for harnesses that hold a [`RecordingServer`] as their
    /// LLM (script answers on the stand-in, not on it: its own script skips the signature check).
    pub fn server(&self) -> &RecordingServer {
        &self.server
    }

    /// The model ids of the Converse requests received so far, percent-decoded.
    pub fn model_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| converse_model_id(&r.path))
            .collect()
    }

    /// The signature check of every request received so far (none without an expected signer).
    pub fn signature_checks(&self) -> Vec<SignatureCheck> {
        self.state.checks.lock().expect("checks lock").clone()
    }

    /// Panics unless every request so far was correctly signed (and there was one at least).
    pub fn assert_all_signed(&self) {
        let checks = self.signature_checks();
        assert!(!checks.is_empty(), "no request was checked");
        for check in checks {
            assert_eq!(check.result, Ok(()), "the signature of {}", check.path);
        }
    }
}

/// The model id of a Converse path (`/model/{id}/converse`), percent-decoded.
pub fn converse_model_id(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let encoded = path.strip_prefix("/model/")?.strip_suffix("/converse")?;
    if encoded.is_empty() || encoded.contains('/') {
        return None;
    }
    Some(percent_decode_str(encoded).decode_utf8_lossy().into_owned())
}

/// How the stand-in answers `request`: a signature failure, an unknown operation, the next
/// scripted answer, or the default text.
fn respond(state: &StandInState, request: &RecordedRequest) -> Canned {
    if let Some(signer) = &state.signer {
        let result = check_sigv4(
            request,
            (&signer.access_key, &signer.secret_key),
            SERVICE,
            &signer.region,
        );
        state
            .checks
            .lock()
            .expect("checks lock")
            .push(SignatureCheck {
                path: request.path.clone(),
                result: result.clone(),
            });
        if let Err(reason) = result {
            return signature_refusal(&reason);
        }
    }
    if request.method == "POST" && retrieve_knowledge_base_id(&request.path).is_some() {
        let scripted = state
            .retrieve_script
            .lock()
            .expect("retrieve script lock")
            .pop_front();
        return scripted.unwrap_or_else(|| retrieve_answer(&[]));
    }
    if request.method != "POST" || converse_model_id(&request.path).is_none() {
        return converse_error(404, "UnknownOperationException", "no such operation");
    }
    let scripted = state.script.lock().expect("script lock").pop_front();
    scripted.unwrap_or_else(|| converse_answer(&state.default_text.lock().expect("text lock")))
}

/// AWS's 403 for a request that is not signed by a known key, or whose signature does not match.
fn signature_refusal(reason: &str) -> Canned {
    if reason.starts_with("access key") {
        converse_error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    } else {
        converse_error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )
    }
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AK/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
fn parse_authorization(header: &str) -> Result<Authorization<'_>, String> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| format!("not a {ALGORITHM} authorization"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("malformed authorization part {part:?}"))?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            other => return Err(format!("unknown authorization part {other:?}")),
        }
    }
    let missing = |name: &str| format!("no {name} in the authorization");
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(format!("malformed credential scope {credential:?}"));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed_headers
            .ok_or_else(|| missing("SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| missing("Signature"))?,
    })
}

/// Checks that `request` carries a valid SigV4 signature by `credentials` (access key, secret
/// key) for `service` in `region`: the credential scope names them, the scope's date is the
/// `x-amz-date` header's, `host` and `x-amz-date` are signed, and the signature recomputed over
/// the recorded method, path, query, signed headers and body is the one sent.
pub fn check_sigv4(
    request: &RecordedRequest,
    credentials: (&str, &str),
    service: &str,
    region: &str,
) -> Result<(), String> {
    let header = request
        .header("authorization")
        .ok_or("no authorization header")?;
    let auth = parse_authorization(header)?;
    let (access_key, secret_key) = credentials;
    if auth.access_key != access_key {
        return Err(format!(
            "access key {:?} is not the expected one",
            auth.access_key
        ));
    }
    if auth.service != service {
        return Err(format!(
            "signed for service {:?}, not {service:?}",
            auth.service
        ));
    }
    if auth.region != region {
        return Err(format!(
            "signed for region {:?}, not {region:?}",
            auth.region
        ));
    }
    let amz_date = request.header("x-amz-date").ok_or("no x-amz-date header")?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(format!(
            "the scope's date {:?} is not x-amz-date's {amz_date:?}",
            auth.date
        ));
    }
    let time = parse_amz_date(amz_date).ok_or_else(|| format!("bad x-amz-date {amz_date:?}"))?;
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    let expected = recompute_signature(request, &auth, secret_key, time)?;
    if expected == auth.signature {
        Ok(())
    } else {
        Err("the signature does not match the request".to_owned())
    }
}

/// The signature of `request`'s signed parts, computed afresh with `secret_key`.
fn recompute_signature(
    request: &RecordedRequest,
    auth: &Authorization<'_>,
    secret_key: &str,
    time: SystemTime,
) -> Result<String, String> {
    let mut headers = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = request
            .header(name)
            .ok_or_else(|| format!("signed header {name} is missing"))?;
        headers.push((*name, value));
    }
    let host = request.header("host").ok_or("no host header")?;
    let uri = format!("http://{host}{}", request.path);
    let session_token = request
        .header("x-amz-security-token")
        .filter(|_| auth.signed_headers.contains(&"x-amz-security-token"))
        .map(str::to_owned);
    let identity =
        Credentials::new(auth.access_key, secret_key, session_token, None, "check").into();
    let mut settings = SigningSettings::default();
    // Exactly the headers the sender signed, whatever they are.
    settings.excluded_headers = None;
    if auth.signed_headers.contains(&"x-amz-content-sha256") {
        settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        &request.method,
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(&request.body),
    )
    .map_err(|e| format!("unsignable request: {e}"))?;
    let output = sign(signable, &params).map_err(|e| format!("signing: {e}"))?;
    Ok(output.signature().to_owned())
}

/// Parses an `x-amz-date` (`20240102T030405Z`).
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let bytes = value.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = value.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const HOST: &str = "127.0.0.1:8080";
    const PATH: &str = "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse";
    const BODY: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#;

    /// A request signed by `aws-sigv4` itself, as an SDK would send it.
    fn signed(path: &str, secret: &str, region: &str, service: &str) -> RecordedRequest {
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let identity = Credentials::new(ACCESS_KEY, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", HOST),
            ("content-type", "application/json"),
            ("user-agent", "aws-sdk-rust/test"),
        ];
        let uri = format!("http://{HOST}{path}");
        let signable =
            SignableRequest::new("POST", &uri, headers.into_iter(), SignableBody::Bytes(BODY))
                .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut recorded: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in instructions.headers() {
            recorded.insert(name.to_lowercase(), value.to_owned());
        }
        RecordedRequest {
            method: "POST".to_owned(),
            path: path.to_owned(),
            headers: recorded,
            body: BODY.to_vec(),
        }
    }

    fn check(request: &RecordedRequest) -> Result<(), String> {
        check_sigv4(request, (ACCESS_KEY, SECRET_KEY), SERVICE, REGION)
    }

    fn good() -> RecordedRequest {
        signed(PATH, SECRET_KEY, REGION, SERVICE)
    }

    #[test]
    fn a_correct_signature_verifies() {
        let request = good();
        assert!(
            request
                .header("authorization")
                .unwrap()
                .contains("Credential=AKIDBEDROCKTEST/20231114/us-east-1/bedrock/aws4_request")
        );
        assert_eq!(check(&request), Ok(()));
        // Also with a query string, and with an unsigned header changed on the way.
        let mut with_query = signed(&format!("{PATH}?a=1&b=x%3Ay"), SECRET_KEY, REGION, SERVICE);
        with_query
            .headers
            .insert("user-agent".to_owned(), "a proxy's".to_owned());
        assert_eq!(check(&with_query), Ok(()));
    }

    #[test]
    fn a_wrong_secret_region_service_or_key_fails() {
        let wrong_secret = signed(PATH, "another-secret", REGION, SERVICE);
        assert_eq!(
            check(&wrong_secret),
            Err("the signature does not match the request".to_owned())
        );
        let wrong_region = signed(PATH, SECRET_KEY, "eu-west-1", SERVICE);
        assert!(check(&wrong_region).unwrap_err().contains("region"));
        let wrong_service = signed(PATH, SECRET_KEY, REGION, "sagemaker");
        assert!(check(&wrong_service).unwrap_err().contains("service"));
        let result = check_sigv4(&good(), ("AKIDOTHER", SECRET_KEY), SERVICE, REGION);
        assert!(result.unwrap_err().starts_with("access key"));
        // The stand-in's checks against the other region, service or secret fail too.
        assert!(check_sigv4(&good(), (ACCESS_KEY, SECRET_KEY), SERVICE, "eu-west-1").is_err());
        assert!(check_sigv4(&good(), (ACCESS_KEY, SECRET_KEY), "s3", REGION).is_err());
        assert!(check_sigv4(&good(), (ACCESS_KEY, "nope"), SERVICE, REGION).is_err());
    }

    #[test]
    fn a_tampered_body_path_header_or_date_fails() {
        let mismatch = Err("the signature does not match the request".to_owned());
        let mut body = good();
        body.body = br#"{"messages":[{"role":"user","content":[{"text":"Ho"}]}]}"#.to_vec();
        assert_eq!(check(&body), mismatch);

        let mut path = good();
        path.path = "/model/us.anthropic.claude-3-5-haiku-20241022-v1:0/converse".to_owned();
        assert_eq!(
            check(&path),
            mismatch,
            "the encoding is part of the signature"
        );
        let mut model = good();
        model.path = "/model/amazon.nova-pro-v1%3A0/converse".to_owned();
        assert_eq!(check(&model), mismatch);

        let mut header = good();
        header
            .headers
            .insert("content-type".to_owned(), "text/plain".to_owned());
        assert_eq!(check(&header), mismatch);

        let mut date = good();
        date.headers
            .insert("x-amz-date".to_owned(), "20231114T221321Z".to_owned());
        assert_eq!(check(&date), mismatch);
        date.headers
            .insert("x-amz-date".to_owned(), "20231115T000000Z".to_owned());
        assert!(check(&date).unwrap_err().contains("date"));

        let mut method = good();
        method.method = "PUT".to_owned();
        assert_eq!(check(&method), mismatch);
    }

    #[test]
    fn malformed_or_missing_authorizations_fail_without_panicking() {
        let with_authorization = |value: &str| {
            let mut request = good();
            request
                .headers
                .insert("authorization".to_owned(), value.to_owned());
            check(&request)
        };
        for value in [
            "",
            "Bearer abc",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=AKIDBEDROCKTEST/20231114/us-east-1/bedrock",
            "AWS4-HMAC-SHA256 Credential=AKIDBEDROCKTEST/20231114/us-east-1/bedrock/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKIDBEDROCKTEST/20231114/us-east-1/bedrock/aws4_request, SignedHeaders=x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDBEDROCKTEST/20231114/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date;x-missing, Signature=00",
            "AWS4-HMAC-SHA256 Nonsense",
        ] {
            assert!(with_authorization(value).is_err(), "{value:?}");
        }
        let mut unsigned = good();
        unsigned.headers.remove("authorization");
        assert_eq!(check(&unsigned), Err("no authorization header".to_owned()));
        let mut undated = good();
        undated.headers.remove("x-amz-date");
        assert!(check(&undated).is_err());
    }

    #[test]
    fn amz_dates_parse_to_their_instant() {
        assert_eq!(
            parse_amz_date("20231114T221320Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_amz_date("20240229T120000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_208_000))
        );
        for bad in [
            "",
            "20231114",
            "2023111xT221320Z",
            "20231314T221320Z",
            "20231114T221320",
            "+0231114T221320Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn knowledge_base_ids_are_read_from_retrieve_paths() {
        assert_eq!(
            retrieve_knowledge_base_id("/knowledgebases/KB12345678/retrieve").as_deref(),
            Some("KB12345678")
        );
        for other in [
            "/knowledgebases//retrieve",
            "/knowledgebases/a/b/retrieve",
            "/knowledgebases/KB1/retrieveAndGenerate",
            PATH,
        ] {
            assert_eq!(retrieve_knowledge_base_id(other), None, "{other}");
        }
    }

    #[test]
    fn model_ids_are_read_from_converse_paths() {
        assert_eq!(
            converse_model_id(PATH).as_deref(),
            Some("us.anthropic.claude-3-5-haiku-20241022-v1:0")
        );
        assert_eq!(
            converse_model_id(
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse?q=1"
            )
            .as_deref(),
            Some("arn:aws:bedrock:us-east-1:1:inference-profile/x")
        );
        for other in [
            "/model//converse",
            "/model/a/b/converse",
            "/model/a/invoke",
            "/converse",
        ] {
            assert_eq!(converse_model_id(other), None, "{other}");
        }
    }
}
