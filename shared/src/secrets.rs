//! The application's secrets, kept in one Secrets Manager secret as a JSON object, read on first
//! use and cached with a refresh so that a rotation takes effect without a redeploy.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

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
}

impl AppSecrets {
    /// Reads the secret's JSON text.
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        let mut secrets: Self =
            serde_json::from_str(text).map_err(|e| SecretsError::NotJson(e.to_string()))?;
        // A blank value is treated as absent, so that a placeholder "" is not used as a key.
        for field in [
            &mut secrets.meta_app_secret,
            &mut secrets.meta_app_secret_previous,
            &mut secrets.meta_verify_token,
            &mut secrets.meta_access_token,
            &mut secrets.llm_api_key,
        ] {
            if field.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
                *field = None;
            }
        }
        Ok(secrets)
    }

    /// The value of a key that the caller cannot work without, or [`SecretsError::MissingKey`].
    pub fn require<'a>(
        &'a self,
        key: &'static str,
        value: &'a Option<SecretString>,
    ) -> Result<&'a SecretString, SecretsError> {
        value.as_ref().ok_or(SecretsError::MissingKey(key))
    }

    /// The app secrets that may have signed a webhook: the current one, then the previous one.
    pub fn webhook_signing_keys(&self) -> Result<Vec<&[u8]>, SecretsError> {
        let current = self.require("META_APP_SECRET", &self.meta_app_secret)?;
        Ok(std::iter::once(current)
            .chain(self.meta_app_secret_previous.as_ref())
            .map(|s| s.expose().as_bytes())
            .collect())
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

/// A value cached for `refresh`, then fetched again. While one caller fetches, others wait for
/// its result instead of fetching too. If a refresh fails, the stale value is served (with a
/// warning) rather than failing requests that the old value can still serve.
pub struct RefreshingCache<T> {
    refresh: Duration,
    state: Mutex<Option<(Arc<T>, Instant)>>,
}

impl<T> RefreshingCache<T> {
    /// An empty cache whose values are fetched again after `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            state: Mutex::new(None),
        }
    }

    /// The cached value, or the result of `fetch` when there is none or it is too old.
    pub async fn get_or_fetch<F, Fut, E>(&self, fetch: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let mut state = self.state.lock().await;
        if let Some((value, fetched_at)) = state.as_ref()
            && fetched_at.elapsed() < self.refresh
        {
            return Ok(value.clone());
        }
        match fetch().await {
            Ok(value) => {
                let value = Arc::new(value);
                *state = Some((value.clone(), Instant::now()));
                Ok(value)
            }
            Err(error) => match state.as_ref() {
                Some((stale, _)) => {
                    tracing::warn!(error = %error, "refresh failed; serving the cached value");
                    Ok(stale.clone())
                }
                None => Err(error),
            },
        }
    }
}

/// [`Secrets`] read from AWS Secrets Manager.
pub struct SecretsManagerSecrets {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cache: RefreshingCache<AppSecrets>,
}

impl SecretsManagerSecrets {
    /// Reads the secret `secret_id` (name or ARN) through `client` on first use, then every
    /// `refresh`. Creating it does no network I/O.
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
        refresh: Duration,
    ) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            cache: RefreshingCache::new(refresh),
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
    fn debug_output_never_shows_a_secret() {
        let secrets = AppSecrets::from_json(r#"{"META_APP_SECRET":"hunter2"}"#).unwrap();
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }

    #[tokio::test(start_paused = true)]
    async fn caches_until_the_refresh_age_then_fetches_again() {
        let cache = RefreshingCache::new(Duration::from_secs(300));
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(n)
        };
        assert_eq!(*cache.get_or_fetch(fetch).await.unwrap(), 0);
        assert_eq!(*cache.get_or_fetch(fetch).await.unwrap(), 0);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // The cache measures age with std's Instant, which the paused tokio clock does not move.
        *cache.state.lock().await = Some((Arc::new(0), Instant::now() - Duration::from_secs(301)));
        assert_eq!(*cache.get_or_fetch(fetch).await.unwrap(), 1);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn serves_the_stale_value_when_a_refresh_fails_and_errors_when_there_is_none() {
        let cache: RefreshingCache<u32> = RefreshingCache::new(Duration::ZERO);
        let failing = || async { Err::<u32, _>("down".to_owned()) };
        assert_eq!(cache.get_or_fetch(failing).await.unwrap_err(), "down");
        cache
            .get_or_fetch(|| async { Ok::<_, String>(7) })
            .await
            .unwrap();
        assert_eq!(*cache.get_or_fetch(failing).await.unwrap(), 7);
    }
}
