//! The current time as AWS, Meta and Lambda count it: since the Unix epoch; and times written
//! for people and mail headers, always in UTC (the one place that uses a calendar, `chrono`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a system clock set before it).
pub fn now_epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn now_epoch_seconds() -> i64 {
    now_epoch_ms() / 1000
}

/// Seconds since the epoch as `YYYY-MM-DD hh:mm:ss UTC`, as alerts show times.
pub fn format_utc(seconds: i64) -> String {
    format_seconds(seconds, "%Y-%m-%d %H:%M:%S UTC")
}

/// Milliseconds since the epoch as `YYYY-MM-DD hh:mm:ss UTC`, the fraction dropped.
pub fn format_utc_ms(millis: i64) -> String {
    format_utc(millis.div_euclid(1000))
}

/// `time` as an RFC 5322 date in UTC, such as `Thu, 01 Jan 1970 00:00:00 +0000`. Times before
/// the epoch are written as the epoch.
pub fn rfc2822_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    format_seconds(seconds, "%a, %d %b %Y %H:%M:%S +0000")
}

/// `seconds` in the `chrono` strftime `pattern`, in UTC; a time beyond the calendar's range
/// (about 262,000 years either side) as a plain count, so that no input can panic.
fn format_seconds(seconds: i64, pattern: &str) -> String {
    match chrono::DateTime::from_timestamp(seconds, 0) {
        Some(time) => time.format(pattern).to_string(),
        None => format!("{seconds} s after the epoch"),
    }
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

    #[test]
    fn times_out_of_the_calendar_are_written_as_counts() {
        assert_eq!(
            format_utc(i64::MAX),
            format!("{} s after the epoch", i64::MAX)
        );
        assert_eq!(
            format_utc_ms(i64::MIN),
            "-9223372036854776 s after the epoch"
        );
        assert_eq!(format_utc(-62_135_596_800), "0001-01-01 00:00:00 UTC");
    }
}
