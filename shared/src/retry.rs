//! Retrying a call with exponential backoff and full jitter, within a deadline (the Lambda
//! invocation's remaining time), honouring the server's `Retry-After` hint.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How a failed call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay ceiling before the first retry; it doubles with each attempt.
    pub initial: Duration,
    /// The delay ceiling is never more than this.
    pub max: Duration,
    /// Calls in all, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
            max_attempts: 4,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0 for the first): a random duration up to
    /// `initial × 2^retry`, capped at `max` ("full jitter").
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// Whether, and after how long, a failed call is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Retrying cannot help (a 400, a bad key).
    Never,
    /// Retry after the [`Backoff`]'s delay.
    Backoff,
    /// Retry after the delay the server asked for (its `Retry-After`).
    After(Duration),
}

impl RetryHint {
    /// A retry after the server's `retry_after` when it sent one, else after the backoff.
    pub fn honouring(retry_after: Option<Duration>) -> Self {
        retry_after.map_or(Self::Backoff, Self::After)
    }
}

/// Whether an error is worth another attempt.
pub trait Retryable {
    /// Whether to retry, and when.
    fn retry_hint(&self) -> RetryHint;
}

/// Runs `call` until it succeeds, fails for good, runs out of attempts, or the next attempt
/// could not start before `deadline`. Returns the last error in the last three cases.
pub async fn retry<T, E, F, Fut>(backoff: &Backoff, deadline: Instant, mut call: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        let error = match call(attempt).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let hint = error.retry_hint();
        if hint == RetryHint::Never || attempt + 1 >= backoff.max_attempts {
            return Err(error);
        }
        let delay = match hint {
            RetryHint::After(delay) => delay,
            RetryHint::Never | RetryHint::Backoff => backoff.delay(attempt),
        };
        let delay = delay.min(MAX_RETRY_DELAY);
        // A delay past what an `Instant` can hold is past any deadline.
        let starts_in_time = Instant::now()
            .checked_add(delay)
            .is_some_and(|start| start < deadline);
        if !starts_in_time {
            tracing::warn!(error = %error, attempt, "no time left for another attempt");
            return Err(error);
        }
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(error = %error, attempt, delay_ms, "retrying");
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The longest wait a retry is ever given, whatever a server asks: more than any invocation
/// lasts (Lambda's limit is 15 minutes), so that a longer `Retry-After` simply ends the retries,
/// and small enough that adding it to an `Instant` cannot overflow.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` header: a number of seconds or an HTTP date, clamped to
/// [`MAX_RETRY_DELAY`] (a server may send any number).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let when = httpdate::parse_http_date(value).ok()?;
            when.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Failure(RetryHint);

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failure")
        }
    }

    impl Retryable for Failure {
        fn retry_hint(&self) -> RetryHint {
            self.0
        }
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: 4,
        }
    }

    #[test]
    fn delays_grow_exponentially_under_a_cap() {
        let b = backoff();
        for _ in 0..200 {
            assert!(b.delay(0) <= Duration::from_millis(100));
            assert!(b.delay(3) <= Duration::from_millis(800));
            assert!(b.delay(30) <= Duration::from_secs(2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_until_success() {
        let calls = Cell::new(0);
        let result = retry(&backoff(), Instant::now() + Duration::from_secs(60), |_| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(Failure(RetryHint::Backoff))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_a_final_failure() {
        let calls = Cell::new(0);
        let result: Result<(), _> =
            retry(&backoff(), Instant::now() + Duration::from_secs(60), |_| {
                calls.set(calls.get() + 1);
                async { Err(Failure(RetryHint::Never)) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_the_last_attempt() {
        let calls = Cell::new(0);
        let _: Result<(), _> = retry(&backoff(), Instant::now() + Duration::from_secs(60), |_| {
            calls.set(calls.get() + 1);
            async { Err(Failure(RetryHint::Backoff)) }
        })
        .await;
        assert_eq!(calls.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_and_gives_up_when_it_passes_the_deadline() {
        let start = Instant::now();
        let calls = Cell::new(0);
        let result = retry(&backoff(), start + Duration::from_secs(60), |_| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n == 1 {
                    Err(Failure(RetryHint::After(Duration::from_secs(7))))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_ok());
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "waited {:?}",
            start.elapsed()
        );

        let calls = Cell::new(0);
        let result: Result<(), _> =
            retry(&backoff(), Instant::now() + Duration::from_secs(5), |_| {
                calls.set(calls.get() + 1);
                async { Err(Failure(RetryHint::After(Duration::from_secs(30)))) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(
            calls.get(),
            1,
            "a retry that cannot start before the deadline is not made"
        );
    }

    #[test]
    fn a_retry_after_is_honoured_when_sent() {
        assert_eq!(RetryHint::honouring(None), RetryHint::Backoff);
        assert_eq!(
            RetryHint::honouring(Some(Duration::from_secs(3))),
            RetryHint::After(Duration::from_secs(3))
        );
    }

    #[test]
    fn reads_retry_after_in_seconds_and_as_a_date() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn huge_retry_afters_are_clamped() {
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(MAX_RETRY_DELAY)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_DELAY)
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("99999999999999999999999"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_any_instant_ends_the_retries_without_panicking() {
        let calls = Cell::new(0);
        let result: Result<(), _> =
            retry(&backoff(), Instant::now() + Duration::from_secs(60), |_| {
                calls.set(calls.get() + 1);
                async { Err(Failure(RetryHint::After(Duration::MAX))) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }

    proptest::proptest! {
        #[test]
        fn any_retry_after_value_reads_to_a_bounded_delay(value in "\\PC*") {
            if let Some(delay) = parse_retry_after(&value) {
                proptest::prop_assert!(delay <= MAX_RETRY_DELAY);
            }
        }

        #[test]
        fn any_number_of_seconds_reads_to_a_bounded_delay(seconds: u64) {
            let delay = parse_retry_after(&seconds.to_string());
            proptest::prop_assert_eq!(
                delay,
                Some(Duration::from_secs(seconds).min(MAX_RETRY_DELAY))
            );
        }

        #[test]
        fn any_retry_after_ends_in_time_without_panicking(seconds: u64, nanos in 0u32..1_000_000_000) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a current-thread runtime builds");
            let hint = RetryHint::After(Duration::new(seconds, nanos));
            let calls = Cell::new(0);
            let deadline_in = Duration::from_secs(60);
            let elapsed = runtime.block_on(async {
                let start = Instant::now();
                let _: Result<(), _> = retry(&backoff(), start + deadline_in, |_| {
                    calls.set(calls.get() + 1);
                    async move { Err(Failure(hint)) }
                })
                .await;
                start.elapsed()
            });
            proptest::prop_assert!(calls.get() >= 1 && calls.get() <= 4);
            proptest::prop_assert!(elapsed <= deadline_in);
        }

        #[test]
        fn backoff_delays_stay_under_their_cap(retry_number: u32) {
            proptest::prop_assert!(backoff().delay(retry_number) <= Duration::from_secs(2));
        }
    }
}
