//! The current time as AWS, Meta and Lambda count it: since the Unix epoch.

/// Milliseconds since the Unix epoch (0 for a system clock set before it).
pub fn now_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn now_epoch_seconds() -> i64 {
    now_epoch_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree_and_are_after_2025() {
        let (ms, s) = (now_epoch_ms(), now_epoch_seconds());
        assert!(ms > 1_735_689_600_000, "{ms}");
        assert!((ms / 1000 - s).abs() <= 1);
    }
}
