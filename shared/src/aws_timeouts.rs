//! How long the functions wait for AWS, and how often they try: every AWS client of a function
//! is built from one [`AwsTimeouts`], so that a service that hangs fails the call inside the
//! invocation's budget instead of hanging the invocation.
//!
//! The calls are in-region and small (a secret, one queue batch, one DynamoDB item, one mail):
//! they normally answer in milliseconds. The limits only cut off what is stuck:
//!
//! - `connect`: an in-region endpoint accepts a connection in milliseconds; one second catches a
//!   dead route, and the retry opens a new connection.
//! - `attempt`: one try of an operation. A try that takes longer is abandoned (its connection
//!   dropped) and retried, which every call here tolerates: the queue deduplicates by message
//!   id, the conversation store's claim and completion are idempotent for their token, storm
//!   control's window is a conditional write, and a secret read has no effect.
//! - `operation`: the whole call, retries included. This is what bounds the invocation.
//! - `max_attempts`: tries per call in the SDK's standard retry mode (which also keeps a retry
//!   quota, so that an outage does not multiply the load), with a backoff of at most
//!   [`MAX_BACKOFF`] between tries, since the budgets leave no room for the SDK's 1 s to 20 s.
//!
//! | function | Lambda timeout | connect | attempt | operation | why |
//! | --- | --- | --- | --- | --- | --- |
//! | webhook | 10 s | 1 s | 1 s | 2 s | Meta wants an answer within seconds; a secret read and a queue batch together stay under 4 s, and a 500 makes Meta deliver again |
//! | processor | 60 s | 1 s | 1 s | 3 s | the completing write comes after the reply, inside the 6 s `REPLY_RESERVE`; 3 s leaves the other half for the reply |
//! | alerter | 30 s | 1 s | 2 s | 4 s | a mail through SES takes longer than a DynamoDB write; a dead-letter invocation makes three calls, 12 s at worst |

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;

/// The first pause between two tries of a call; it doubles, with full jitter, up to
/// [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between two tries of a call.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The time limits and tries of one function's AWS calls. See the [module](self) for the
/// values and their reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    /// Limit for opening a connection (TCP and TLS).
    pub connect: Duration,
    /// Limit for one try of an operation, from sending the request to reading the response.
    pub attempt: Duration,
    /// Limit for the whole operation, every try and pause included.
    pub operation: Duration,
    /// Tries per operation, the first included.
    pub max_attempts: u32,
}

impl AwsTimeouts {
    /// The webhook's: it must answer Meta within seconds, a 500 included.
    pub const WEBHOOK: Self = Self {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(1),
        operation: Duration::from_secs(2),
        max_attempts: 3,
    };

    /// The processor's: its completing store write must end within the time it keeps back for
    /// the reply and the write (`processor::REPLY_RESERVE`, 6 s).
    pub const PROCESSOR: Self = Self {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(1),
        operation: Duration::from_secs(3),
        max_attempts: 3,
    };

    /// The alerter's: SES is slower than DynamoDB, and its 30 s leave room.
    pub const ALERTER: Self = Self {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(2),
        operation: Duration::from_secs(4),
        max_attempts: 3,
    };

    /// `loader` with these limits and tries for every client built from its configuration, and
    /// without the SDK's stalled-stream protection: its 20 s grace period can never end a call
    /// that [`AwsTimeouts::attempt`] has not ended long before, and the throughput timers it
    /// keeps on every request body cost CPU on every call.
    pub fn apply_to(&self, loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
        loader
            .timeout_config(self.timeout_config())
            .retry_config(self.retry_config())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
    }

    /// The SDK's timeout configuration for these limits.
    fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    /// The SDK's standard retry mode with these tries and a backoff that fits the budgets.
    fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(INITIAL_BACKOFF)
            .with_max_backoff(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(&str, AwsTimeouts); 3] = [
        ("webhook", AwsTimeouts::WEBHOOK),
        ("processor", AwsTimeouts::PROCESSOR),
        ("alerter", AwsTimeouts::ALERTER),
    ];

    // How they fit the template's Lambda timeouts is checked in tests/tests/aws_timeouts.rs.
    #[test]
    fn each_limit_fits_inside_the_next_and_a_retry_fits_in_the_operation() {
        for (name, timeouts) in ALL {
            assert!(timeouts.connect <= timeouts.attempt, "{name}");
            assert!(
                timeouts.attempt + MAX_BACKOFF <= timeouts.operation,
                "{name}: a stuck first try leaves room for a second"
            );
            assert!(timeouts.max_attempts >= 2, "{name}");
        }
    }

    #[test]
    fn the_sdk_configuration_carries_the_limits() {
        let timeouts = AwsTimeouts::PROCESSOR;
        let config = timeouts.timeout_config();
        assert_eq!(config.connect_timeout(), Some(timeouts.connect));
        assert_eq!(config.operation_attempt_timeout(), Some(timeouts.attempt));
        assert_eq!(config.operation_timeout(), Some(timeouts.operation));
        let retry = timeouts.retry_config();
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(retry.max_attempts(), timeouts.max_attempts);
        assert_eq!(retry.initial_backoff(), INITIAL_BACKOFF);
        assert_eq!(retry.max_backoff(), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn clients_get_the_limits_and_no_stalled_stream_protection() {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"));
        let config = AwsTimeouts::WEBHOOK.apply_to(loader).load().await;
        let protection = config.stalled_stream_protection().map(|p| p.is_enabled());
        assert_eq!(protection, Some(false));
        let operation = config.timeout_config().and_then(|t| t.operation_timeout());
        assert_eq!(operation, Some(AwsTimeouts::WEBHOOK.operation));
    }
}
