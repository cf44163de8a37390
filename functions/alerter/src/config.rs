//! The alerter's configuration, read once at start from environment variables.

use std::time::Duration;

use shared::env_config::{ConfigError, Env};

/// Every environment variable [`Config::from`] reads. `AWS_REGION` is set by Lambda itself.
pub const VARIABLES: &[&str] = &[
    "ERROR_LOG_EMAIL",
    "ERROR_FROM_EMAIL",
    "REPLY_TO_EMAIL",
    "TABLE_NAME",
    "ALERT_WINDOW_MINUTES",
    "STACK_NAME",
    "ARCHIVE_QUEUE_URL",
    "ARCHIVE_QUEUE_ARN",
    "INBOUND_QUEUE_ARN",
    "ALERT_RETRY_QUEUE_URL",
    "ALERT_RETRY_QUEUE_ARN",
    "AWS_REGION",
];

/// The alerter's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `ERROR_LOG_EMAIL`: the recipients, comma-separated.
    pub recipients: Vec<String>,
    /// `ERROR_FROM_EMAIL`: the sender, verified in SES.
    pub from: String,
    /// `REPLY_TO_EMAIL` (optional): where replies go.
    pub reply_to: Option<String>,
    /// `TABLE_NAME`: the DynamoDB table that keeps the storm-control windows.
    pub table_name: String,
    /// `ALERT_WINDOW_MINUTES` (default 15, 1 to 1440): one mail per fingerprint per window.
    pub window: Duration,
    /// `STACK_NAME`: the stack, in subjects.
    pub stack_name: String,
    /// `AWS_REGION` (set by Lambda): the region, for console links.
    pub region: String,
    /// `ARCHIVE_QUEUE_URL`: where mailed dead letters are kept, to be moved back once fixed.
    pub archive_queue_url: String,
    /// `ARCHIVE_QUEUE_ARN`: the archive's ARN, for the redrive command in mails.
    pub archive_queue_arn: String,
    /// `INBOUND_QUEUE_ARN`: where dead letters go back to, for the redrive command in mails.
    pub inbound_queue_arn: String,
    /// `ALERT_RETRY_QUEUE_URL`: where alerts not mailed yet are kept, to be mailed later.
    pub alert_retry_queue_url: String,
    /// `ALERT_RETRY_QUEUE_ARN`: the retry queue's ARN, which tells its records from dead letters.
    pub alert_retry_queue_arn: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(&Env::process())
    }

    /// Reads the configuration from `env`.
    pub fn from<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let recipients: Vec<String> = env
            .required("ERROR_LOG_EMAIL")?
            .split(',')
            .map(|a| a.trim().to_owned())
            .collect();
        if recipients.iter().any(|a| !is_address(a)) {
            return Err(invalid(
                "ERROR_LOG_EMAIL",
                "it must be one or more e-mail addresses, separated by commas",
            ));
        }
        let from = env.required("ERROR_FROM_EMAIL")?;
        if !is_address(&from) {
            return Err(invalid("ERROR_FROM_EMAIL", "it must be an e-mail address"));
        }
        let reply_to = env.optional("REPLY_TO_EMAIL");
        if reply_to.as_deref().is_some_and(|a| !is_address(a)) {
            return Err(invalid("REPLY_TO_EMAIL", "it must be an e-mail address"));
        }
        let minutes: u64 = env.parsed_or("ALERT_WINDOW_MINUTES", 15)?;
        if !(1..=1440).contains(&minutes) {
            return Err(invalid(
                "ALERT_WINDOW_MINUTES",
                "it must be between 1 and 1440",
            ));
        }
        Ok(Self {
            recipients,
            from,
            reply_to,
            table_name: env.required("TABLE_NAME")?,
            window: Duration::from_secs(minutes * 60),
            stack_name: env.required("STACK_NAME")?,
            region: env
                .optional("AWS_REGION")
                .unwrap_or_else(|| "us-east-1".to_owned()),
            archive_queue_url: env.required("ARCHIVE_QUEUE_URL")?,
            archive_queue_arn: env.required("ARCHIVE_QUEUE_ARN")?,
            inbound_queue_arn: env.required("INBOUND_QUEUE_ARN")?,
            alert_retry_queue_url: env.required("ALERT_RETRY_QUEUE_URL")?,
            alert_retry_queue_arn: env.required("ALERT_RETRY_QUEUE_ARN")?,
        })
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// Whether `address` is a plain e-mail address (`local@domain.tld`), with nothing that could
/// break a mail header.
pub fn is_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from(&Env::from_pairs(pairs))
    }

    const SAMPLE: &[(&str, &str)] = &BASE;

    #[test]
    fn variables_lists_exactly_what_the_config_reads() {
        let check = shared::env_config::check_declared_variables(SAMPLE, VARIABLES, |env| {
            Config::from(env)
        });
        assert_eq!(check, Ok(()));
    }

    const BASE: [(&str, &str); 9] = [
        ("ERROR_LOG_EMAIL", "oncall@example.com, lead@example.org"),
        ("ERROR_FROM_EMAIL", "alerts@example.com"),
        ("TABLE_NAME", "t"),
        ("STACK_NAME", "wa"),
        (
            "ARCHIVE_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/1/wa-dead-letter-archive.fifo",
        ),
        (
            "ARCHIVE_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:1:wa-dead-letter-archive.fifo",
        ),
        (
            "INBOUND_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:1:wa-inbound.fifo",
        ),
        (
            "ALERT_RETRY_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/1/wa-alert-retry",
        ),
        (
            "ALERT_RETRY_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:1:wa-alert-retry",
        ),
    ];

    #[test]
    fn reads_recipients_and_defaults() {
        let config = config(&BASE).unwrap();
        assert_eq!(
            config.recipients,
            ["oncall@example.com", "lead@example.org"]
        );
        assert_eq!(config.window, Duration::from_secs(900));
        assert_eq!(config.reply_to, None);
    }

    #[test]
    fn invalid_addresses_fail_naming_the_variable() {
        for (name, value) in [
            ("ERROR_LOG_EMAIL", "oncall@example.com,"),
            ("ERROR_LOG_EMAIL", "not an address"),
            ("ERROR_FROM_EMAIL", "alerts@localhost"),
            ("ERROR_FROM_EMAIL", "Alerts <alerts@example.com>"),
            ("REPLY_TO_EMAIL", "a@b.c\r\nBcc: x@y.z"),
            ("ALERT_WINDOW_MINUTES", "0"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            let result = config(&pairs);
            assert!(
                matches!(&result, Err(ConfigError::Invalid { name: n, .. }) if *n == name),
                "{name}={value:?}: {result:?}"
            );
        }
        assert_eq!(
            config(&BASE[1..]),
            Err(ConfigError::Missing("ERROR_LOG_EMAIL"))
        );
    }

    #[test]
    fn recognises_addresses() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "x_y@example-mail.com",
        ] {
            assert!(is_address(good), "{good}");
        }
        for bad in [
            "",
            "@b.co",
            "a@",
            "a@b",
            "a@@b.co",
            "a b@c.de",
            "a@-b.co",
            ".a@b.co",
            "a..b@c.de",
            "é@b.co",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
    }
}
