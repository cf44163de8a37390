//! The application's secrets, kept in one Secrets Manager secret as a JSON object, read on first
//! use and cached with a refresh so that a rotation takes effect without a redeploy. A refresh
//! that fails or hangs serves the cached value, and a failed read is not repeated on every call
//! (see [`RefreshingCache`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The prefix of the keys holding another Meta app's secret (`META_APP_SECRET_SHOP2`), each
/// accepted as a webhook signing key.
pub const APP_SECRET_PREFIX: &str = "META_APP_SECRET_";

/// The prefix of the keys holding one business number's Graph API token
/// (`META_ACCESS_TOKEN_<phone_number_id>`).
pub const ACCESS_TOKEN_PREFIX: &str = "META_ACCESS_TOKEN_";

/// How long secrets are cached before they are read again, unless configured otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// A secret value. Its `Debug` never shows it, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// The keys of the application's secret. Every key is optional when read, so that each function
/// asks only for what it uses and a missing key is named when it is needed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AppSecrets {
    /// `META_APP_SECRET`: the Meta app secret that signs webhooks.
    #[serde(rename = "META_APP_SECRET", default)]
    pub meta_app_secret: Option<SecretString>,
    /// `META_APP_SECRET_PREVIOUS`: the app secret before a rotation, accepted until removed.
    #[serde(rename = "META_APP_SECRET_PREVIOUS", default)]
    pub meta_app_secret_previous: Option<SecretString>,
    /// `META_VERIFY_TOKEN`: the token Meta echoes in the subscription handshake.
    #[serde(rename = "META_VERIFY_TOKEN", default)]
    pub meta_verify_token: Option<SecretString>,
    /// `META_ACCESS_TOKEN`: the Graph API bearer token.
    #[serde(rename = "META_ACCESS_TOKEN", default)]
    pub meta_access_token: Option<SecretString>,
    /// `LLM_API_KEY`: the LLM provider's API key.
    #[serde(rename = "LLM_API_KEY", default)]
    pub llm_api_key: Option<SecretString>,
    /// `TRANSCRIPTION_API_KEY`: the transcription provider's key, when it is not the LLM's.
    #[serde(rename = "TRANSCRIPTION_API_KEY", default)]
    pub transcription_api_key: Option<SecretString>,
    /// Every key of the secret whose value is a non-blank string, the ones above included: what
    /// a tool's `{"secret": "KEY"}` header reads (see [`AppSecrets::get`]). Filled by
    /// [`AppSecrets::from_json`]; its `Debug` shows the keys, never the values.
    #[serde(skip)]
    pub keys: BTreeMap<String, SecretString>,
}

impl AppSecrets {
    /// Reads the secret's JSON text.
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        // serde_json's message can quote the value it could not use; only its kind and place
        // are kept, so that the error (which is logged) never holds part of a secret.
        let mut secrets: Self = serde_json::from_str(text).map_err(|e| {
            SecretsError::NotJson(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        // A blank value is treated as absent, so that a placeholder "" is not used as a key.
        for field in [
            &mut secrets.meta_app_secret,
            &mut secrets.meta_app_secret_previous,
            &mut secrets.meta_verify_token,
            &mut secrets.meta_access_token,
            &mut secrets.llm_api_key,
            &mut secrets.transcription_api_key,
        ] {
            if field.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
                *field = None;
            }
        }
        // The same text, already known to be an object, read again for its other keys; a
        // value that is not a string (a number, say) is left out rather than refused.
        let all: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(text).unwrap_or_default();
        secrets.keys = all
            .into_iter()
            .filter_map(|(key, value)| match value {
                serde_json::Value::String(value) if !value.trim().is_empty() => {
                    Some((key, SecretString::new(value)))
                }
                _ => None,
            })
            .collect();
        Ok(secrets)
    }

    /// The value of any key of the secret (`{"secret": "KEY"}` in a tool's headers), or `None`
    /// when it is absent, blank or not a string.
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.keys.get(key)
    }

    /// The same secrets with `key` set to `value` (tests and local runs).
    pub fn with_key(mut self, key: &str, value: &str) -> Self {
        self.keys.insert(key.to_owned(), SecretString::new(value));
        self
    }

    /// The value of a key that the caller cannot work without, or [`SecretsError::MissingKey`].
    pub fn require<'a>(
        &'a self,
        key: &'static str,
        value: &'a Option<SecretString>,
    ) -> Result<&'a SecretString, SecretsError> {
        value.as_ref().ok_or(SecretsError::MissingKey(key))
    }

    /// The app secrets that may have signed a webhook: the current one, the previous one, then
    /// every other Meta app's (`META_APP_SECRET_<SUFFIX>`, such as `META_APP_SECRET_SHOP2`, in
    /// key order), when one stack serves numbers of several apps. Blank values are left out;
    /// `META_APP_SECRET` is required.
    pub fn webhook_signing_keys(&self) -> Result<Vec<&[u8]>, SecretsError> {
        let current = self.require("META_APP_SECRET", &self.meta_app_secret)?;
        let other_apps = self
            .keys
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(APP_SECRET_PREFIX)
                    .is_some_and(|suffix| !suffix.is_empty() && suffix != "PREVIOUS")
            })
            .map(|(_, value)| value);
        Ok(std::iter::once(current)
            .chain(self.meta_app_secret_previous.as_ref())
            .chain(other_apps)
            .map(|s| s.expose().as_bytes())
            .collect())
    }

    /// The Graph API token for calls made as the business number `phone_number_id`: its own
    /// `META_ACCESS_TOKEN_<phone_number_id>` when the secret has one (a number of another Meta
    /// app, or of another business), else `META_ACCESS_TOKEN`.
    pub fn access_token_for(&self, phone_number_id: &str) -> Result<&SecretString, SecretsError> {
        if !phone_number_id.is_empty()
            && let Some(token) = self.get(&format!("{ACCESS_TOKEN_PREFIX}{phone_number_id}"))
        {
            return Ok(token);
        }
        self.require("META_ACCESS_TOKEN", &self.meta_access_token)
    }
}

/// Why the secrets could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// Secrets Manager could not be reached or refused the request.
    #[error("could not read the secret from Secrets Manager: {0}")]
    Fetch(String),
    /// The secret has no string value (a binary secret, say).
    #[error("the secret has no string value")]
    NoString,
    /// The secret's value is not a JSON object of strings.
    #[error("the secret's value is not a JSON object of strings: {0}")]
    NotJson(String),
    /// Secrets Manager did not answer within the fetch timeout.
    #[error("Secrets Manager did not answer within {0:?}")]
    TimedOut(Duration),
    /// A key this function needs is absent or blank.
    #[error("the secret has no value for the key {0}")]
    MissingKey(&'static str),
}

/// The application's secrets, as a function sees them.
pub trait Secrets: Send + Sync {
    /// The current secrets: cached, and read again once the cache is older than its refresh age.
    fn current(&self) -> impl Future<Output = Result<Arc<AppSecrets>, SecretsError>> + Send;
}

/// Secrets that never change, for tests and for local runs.
#[derive(Debug, Clone)]
pub struct StaticSecrets(pub Arc<AppSecrets>);

impl Secrets for StaticSecrets {
    async fn current(&self) -> Result<Arc<AppSecrets>, SecretsError> {
        Ok(self.0.clone())
    }
}

/// Bound of a secrets fetch when the Secrets Manager client has no operation timeout of its
/// own (the functions' clients have one: see [`crate::aws_timeouts`]).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause after a first failed fetch before the next one; it doubles with each failure in a
/// row, up to [`MAX_RETRY_PAUSE`].
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause between two failed fetches.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// A value cached for `refresh`, then fetched again.
///
/// - A fetch that fails, or takes longer than the fetch timeout, serves the cached value when
///   there is one (with one WARN per run of failures, naming the error, never the value), and
///   returns the error when there is none.
/// - After a failed fetch, no fetch is made for a pause ([`FIRST_RETRY_PAUSE`], doubling up to
///   [`MAX_RETRY_PAUSE`]): meanwhile callers get the cached value, or the last error.
/// - One fetch at a time: callers that arrive during a fetch wait for its outcome instead of
///   fetching too.
pub struct RefreshingCache<T> {
    refresh: Duration,
    fetch_timeout: Duration,
    state: Mutex<CacheState<T>>,
}

/// What a [`RefreshingCache`] knows.
struct CacheState<T> {
    /// The last value fetched, and when.
    value: Option<(Arc<T>, Instant)>,
    /// The failures since the last successful fetch, when the last one failed.
    failure: Option<FetchFailure>,
}

/// A run of failed fetches.
struct FetchFailure {
    /// Failed fetches in a row.
    count: u32,
    /// No fetch before this.
    retry_at: Instant,
    /// The last error, returned during the pause when nothing is cached.
    error: SecretsError,
}

impl<T> RefreshingCache<T> {
    /// An empty cache whose values are fetched again after `refresh`, each fetch bounded by
    /// `fetch_timeout`.
    pub fn new(refresh: Duration, fetch_timeout: Duration) -> Self {
        Self {
            refresh,
            fetch_timeout,
            state: Mutex::new(CacheState {
                value: None,
                failure: None,
            }),
        }
    }

    /// The cached value, or the result of `fetch` when there is none or it is too old (see the
    /// type's documentation for failures).
    pub async fn get_or_fetch<F, Fut>(&self, fetch: F) -> Result<Arc<T>, SecretsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, SecretsError>>,
    {
        // Held across the fetch, so that concurrent callers share it.
        let mut state = self.state.lock().await;
        if let Some((value, fetched_at)) = &state.value
            && fetched_at.elapsed() < self.refresh
        {
            return Ok(value.clone());
        }
        if let Some(failure) = &state.failure
            && Instant::now() < failure.retry_at
        {
            return state.cached_or(failure.error.clone());
        }
        let fetched = tokio::time::timeout(self.fetch_timeout, fetch())
            .await
            .unwrap_or(Err(SecretsError::TimedOut(self.fetch_timeout)));
        match fetched {
            Ok(value) => {
                if let Some(failure) = state.failure.take() {
                    tracing::info!(failures = failure.count, "the secrets could be read again");
                }
                let value = Arc::new(value);
                state.value = Some((value.clone(), Instant::now()));
                Ok(value)
            }
            Err(error) => {
                let count = state.failure.as_ref().map_or(0, |f| f.count) + 1;
                let pause = retry_pause(count);
                if count == 1 && state.value.is_some() {
                    tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64,
                        "could not refresh the secrets; serving the cached value");
                }
                state.failure = Some(FetchFailure {
                    count,
                    retry_at: Instant::now() + pause,
                    error: error.clone(),
                });
                state.cached_or(error)
            }
        }
    }
}

impl<T> CacheState<T> {
    fn cached_or(&self, error: SecretsError) -> Result<Arc<T>, SecretsError> {
        self.value
            .as_ref()
            .map(|(value, _)| value.clone())
            .ok_or(error)
    }
}

/// The pause after `failures` failed fetches in a row.
fn retry_pause(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_PAUSE
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_PAUSE)
}

/// [`Secrets`] read from AWS Secrets Manager.
pub struct SecretsManagerSecrets {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cache: RefreshingCache<AppSecrets>,
}

impl SecretsManagerSecrets {
    /// Reads the secret `secret_id` (name or ARN) through `client` on first use, then every
    /// `refresh`; each read is bounded by the client's operation timeout, or
    /// [`DEFAULT_FETCH_TIMEOUT`] when it has none. Creating it does no network I/O.
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
        refresh: Duration,
    ) -> Self {
        let fetch_timeout = client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_timeout())
            .unwrap_or(DEFAULT_FETCH_TIMEOUT);
        Self {
            client,
            secret_id: secret_id.into(),
            cache: RefreshingCache::new(refresh, fetch_timeout),
        }
    }

    async fn fetch(&self) -> Result<AppSecrets, SecretsError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                SecretsError::Fetch(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        AppSecrets::from_json(output.secret_string().ok_or(SecretsError::NoString)?)
    }
}

impl Secrets for SecretsManagerSecrets {
    async fn current(&self) -> Result<Arc<AppSecrets>, SecretsError> {
        self.cache.get_or_fetch(|| self.fetch()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn reads_the_documented_keys_and_treats_blank_as_absent() {
        let secrets = AppSecrets::from_json(
            r#"{"META_APP_SECRET":"s","META_VERIFY_TOKEN":"v","META_ACCESS_TOKEN":"","LLM_API_KEY":"k","OTHER":"x"}"#,
        )
        .unwrap();
        assert_eq!(secrets.meta_app_secret, Some(SecretString::new("s")));
        assert_eq!(secrets.meta_access_token, None);
        assert_eq!(
            secrets.webhook_signing_keys().unwrap(),
            vec![b"s".as_slice()]
        );
    }

    #[test]
    fn the_previous_app_secret_is_a_second_signing_key() {
        let secrets =
            AppSecrets::from_json(r#"{"META_APP_SECRET":"new","META_APP_SECRET_PREVIOUS":"old"}"#)
                .unwrap();
        assert_eq!(
            secrets.webhook_signing_keys().unwrap(),
            vec![b"new".as_slice(), b"old".as_slice()]
        );
    }

    #[test]
    fn every_other_apps_secret_is_a_signing_key_and_blank_ones_are_not() {
        let secrets = AppSecrets::from_json(
            r#"{"META_APP_SECRET":"first","META_APP_SECRET_PREVIOUS":"old",
                "META_APP_SECRET_SHOP2":"second","META_APP_SECRET_SHOP3":"  ",
                "META_APP_SECRET_":"no-suffix","META_APP_SECRETS":"other-key",
                "META_ACCESS_TOKEN":"token"}"#,
        )
        .unwrap();
        assert_eq!(
            secrets.webhook_signing_keys().unwrap(),
            vec![b"first".as_slice(), b"old".as_slice(), b"second".as_slice()]
        );
    }

    #[test]
    fn a_delivery_signed_by_the_second_app_is_accepted_and_by_none_refused() {
        use crate::meta::signature::{SignatureError, sign, verify};
        let secrets = AppSecrets::from_json(
            r#"{"META_APP_SECRET":"first","META_APP_SECRET_SHOP2":"second","META_APP_SECRET_BLANK":""}"#,
        )
        .unwrap();
        let keys = secrets.webhook_signing_keys().unwrap();
        let body = br#"{"object":"whatsapp_business_account"}"#;
        assert_eq!(verify(body, Some(&sign(body, b"second")), &keys), Ok(()));
        assert_eq!(verify(body, Some(&sign(body, b"first")), &keys), Ok(()));
        assert_eq!(
            verify(body, Some(&sign(body, b"third")), &keys),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(body, Some(&sign(body, b"")), &keys),
            Err(SignatureError::Mismatch),
            "a blank secret is never a key"
        );
    }

    #[test]
    fn a_number_uses_its_own_token_else_the_default() {
        let secrets = AppSecrets::from_json(
            r#"{"META_ACCESS_TOKEN":"default","META_ACCESS_TOKEN_222":"token-b","META_ACCESS_TOKEN_333":" "}"#,
        )
        .unwrap();
        let token = |id: &str| secrets.access_token_for(id).map(SecretString::expose);
        assert_eq!(token("222"), Ok("token-b"));
        assert_eq!(token("111"), Ok("default"));
        assert_eq!(token("333"), Ok("default"), "a blank token is absent");
        assert_eq!(token(""), Ok("default"));
        let only_b = AppSecrets::from_json(r#"{"META_ACCESS_TOKEN_222":"token-b"}"#).unwrap();
        assert_eq!(
            only_b.access_token_for("222").map(SecretString::expose),
            Ok("token-b")
        );
        assert_eq!(
            only_b.access_token_for("111"),
            Err(SecretsError::MissingKey("META_ACCESS_TOKEN"))
        );
    }

    #[test]
    fn a_missing_key_is_named() {
        let secrets = AppSecrets::from_json("{}").unwrap();
        assert_eq!(
            secrets.webhook_signing_keys(),
            Err(SecretsError::MissingKey("META_APP_SECRET"))
        );
        assert!(matches!(
            AppSecrets::from_json("[1]"),
            Err(SecretsError::NotJson(_))
        ));
        assert!(matches!(
            AppSecrets::from_json(r#"{"META_APP_SECRET": 5}"#),
            Err(SecretsError::NotJson(_))
        ));
    }

    #[test]
    fn any_string_key_can_be_read_by_name() {
        let secrets = AppSecrets::from_json(
            r#"{"LLM_API_KEY":"k","SHOP_API_KEY":"shop-1","BLANK":" ","PORT":8080}"#,
        )
        .unwrap();
        assert_eq!(
            secrets.get("SHOP_API_KEY"),
            Some(&SecretString::new("shop-1"))
        );
        assert_eq!(secrets.get("LLM_API_KEY"), Some(&SecretString::new("k")));
        assert_eq!(secrets.get("BLANK"), None);
        assert_eq!(secrets.get("PORT"), None);
        assert_eq!(secrets.get("ABSENT"), None);
        assert!(!format!("{secrets:?}").contains("shop-1"));
        let added = AppSecrets::default().with_key("K", "v");
        assert_eq!(added.get("K").map(SecretString::expose), Some("v"));
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let secrets = AppSecrets::from_json(r#"{"META_APP_SECRET":"hunter2"}"#).unwrap();
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }

    #[test]
    fn a_malformed_secret_is_described_without_its_value() {
        for text in [r#""hunter2""#, r#"{"META_APP_SECRET": 31337}"#, "hunter2"] {
            let error = AppSecrets::from_json(text).unwrap_err();
            assert!(matches!(error, SecretsError::NotJson(_)), "{text}");
            let shown = error.to_string();
            assert!(
                !shown.contains("hunter2") && !shown.contains("31337"),
                "{shown}"
            );
            assert!(shown.contains("line 1 column"), "{shown}");
        }
    }

    const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

    fn cache(refresh: Duration) -> RefreshingCache<usize> {
        RefreshingCache::new(refresh, FETCH_TIMEOUT)
    }

    fn down() -> SecretsError {
        SecretsError::Fetch("down".to_owned())
    }

    /// A fetch that counts its calls and answers with the count so far, or fails.
    struct Fetcher {
        calls: AtomicUsize,
        fails: std::sync::atomic::AtomicBool,
    }

    impl Fetcher {
        fn new() -> Self {
            Self {
                calls: AtomicUsize::new(0),
                fails: std::sync::atomic::AtomicBool::new(false),
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn fail(&self, fails: bool) {
            self.fails.store(fails, Ordering::SeqCst);
        }

        async fn fetch(&self) -> Result<usize, SecretsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fails.load(Ordering::SeqCst) {
                Err(down())
            } else {
                Ok(n)
            }
        }

        async fn get(&self, cache: &RefreshingCache<usize>) -> Result<usize, SecretsError> {
            cache.get_or_fetch(|| self.fetch()).await.map(|v| *v)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn caches_until_the_refresh_age_then_fetches_again() {
        let cache = cache(Duration::from_secs(300));
        let fetcher = Fetcher::new();
        assert_eq!(fetcher.get(&cache).await, Ok(0));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(fetcher.get(&cache).await, Ok(0));
        assert_eq!(fetcher.calls(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(fetcher.get(&cache).await, Ok(1));
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_refresh_serves_the_cached_value_and_with_none_the_error() {
        let cache = cache(Duration::ZERO);
        let fetcher = Fetcher::new();
        fetcher.fail(true);
        assert_eq!(fetcher.get(&cache).await, Err(down()));
        tokio::time::advance(FIRST_RETRY_PAUSE).await;
        fetcher.fail(false);
        assert_eq!(fetcher.get(&cache).await, Ok(1));
        fetcher.fail(true);
        assert_eq!(fetcher.get(&cache).await, Ok(1));
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_refresh_serves_the_cached_value_once_the_fetch_timeout_is_up() {
        let cache = cache(Duration::from_secs(300));
        assert_eq!(*cache.get_or_fetch(|| async { Ok(7) }).await.unwrap(), 7);
        tokio::time::advance(Duration::from_secs(300)).await;
        let started = Instant::now();
        let served = cache.get_or_fetch(std::future::pending).await;
        assert_eq!(served.map(|v| *v), Ok(7));
        assert_eq!(started.elapsed(), FETCH_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_first_fetch_is_a_timeout_error() {
        let cache = cache(Duration::from_secs(300));
        let started = Instant::now();
        let result = cache.get_or_fetch(std::future::pending).await;
        assert_eq!(result.unwrap_err(), SecretsError::TimedOut(FETCH_TIMEOUT));
        assert_eq!(started.elapsed(), FETCH_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_no_fetch_is_made_until_a_pause_that_grows() {
        for cached in [false, true] {
            let cache = cache(Duration::ZERO);
            let fetcher = Fetcher::new();
            if cached {
                assert_eq!(fetcher.get(&cache).await, Ok(0));
            }
            fetcher.fail(true);
            let before = fetcher.calls();
            let expected = if cached { Ok(0) } else { Err(down()) };
            assert_eq!(fetcher.get(&cache).await, expected);
            // Pauses of 1 s, then 2 s, then 4 s: no fetch until each is over.
            for (failures, pause) in [(1, 1), (2, 2), (3, 4)] {
                assert_eq!(fetcher.calls(), before + failures, "cached: {cached}");
                tokio::time::advance(Duration::from_secs(pause) - Duration::from_millis(1)).await;
                assert_eq!(fetcher.get(&cache).await, expected);
                assert_eq!(fetcher.calls(), before + failures, "cached: {cached}");
                tokio::time::advance(Duration::from_millis(1)).await;
                assert_eq!(fetcher.get(&cache).await, expected);
            }
            // A success ends the run: the next failure pauses 1 s again.
            tokio::time::advance(Duration::from_secs(8)).await;
            fetcher.fail(false);
            let fresh = fetcher.get(&cache).await.unwrap();
            fetcher.fail(true);
            assert_eq!(fetcher.get(&cache).await, Ok(fresh));
            tokio::time::advance(FIRST_RETRY_PAUSE).await;
            let calls = fetcher.calls();
            assert_eq!(fetcher.get(&cache).await, Ok(fresh));
            assert_eq!(fetcher.calls(), calls + 1, "cached: {cached}");
        }
    }

    #[test]
    fn the_pause_doubles_up_to_its_maximum() {
        let pauses: Vec<u64> = [1, 2, 3, 5, 6, 7, 1000]
            .map(|n| retry_pause(n).as_secs())
            .to_vec();
        assert_eq!(pauses, [1, 2, 4, 16, 30, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let cache = cache(Duration::from_secs(300));
        let calls = AtomicUsize::new(0);
        let slow_fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(42)
        };
        let results =
            futures_util::future::join_all((0..10).map(|_| cache.get_or_fetch(slow_fetch))).await;
        assert!(results.iter().all(|r| r.as_deref() == Ok(&42)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_during_a_hanging_refresh_share_it_and_get_the_cached_value() {
        let cache = cache(Duration::from_secs(300));
        cache.get_or_fetch(|| async { Ok(5) }).await.unwrap();
        tokio::time::advance(Duration::from_secs(300)).await;
        let calls = AtomicUsize::new(0);
        let hanging_fetch = || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending()
        };
        let started = Instant::now();
        let results =
            futures_util::future::join_all((0..10).map(|_| cache.get_or_fetch(hanging_fetch)))
                .await;
        assert!(results.iter().all(|r| r.as_deref() == Ok(&5)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), FETCH_TIMEOUT);
    }
}
