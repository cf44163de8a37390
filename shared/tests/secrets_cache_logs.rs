//! The secrets cache's log lines: one WARN for a run of failed refreshes served from the cache,
//! naming the error and never the value, and one INFO when a refresh succeeds again.
//!
//! This test has a binary of its own: tracing caches each call site's interest process-wide, so
//! a capture that shares a binary with other tests can miss lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use shared::secrets::{FIRST_RETRY_PAUSE, RefreshingCache, SecretsError};

#[tokio::test(start_paused = true)]
async fn a_run_of_failed_refreshes_warns_once_without_the_value() {
    let (_guard, logs) = testkit::logs::capture();
    let cache = RefreshingCache::new(Duration::ZERO, Duration::from_secs(3));
    let fetched = cache
        .get_or_fetch(|| async { Ok::<_, SecretsError>("hunter2".to_owned()) })
        .await
        .unwrap();
    let failing = || async { Err(SecretsError::Fetch("connection reset".to_owned())) };
    let mut pause = FIRST_RETRY_PAUSE;
    for _ in 0..3 {
        let served = cache.get_or_fetch(failing).await.unwrap();
        assert_eq!(served, fetched);
        tokio::time::advance(pause).await;
        pause *= 2;
    }
    cache
        .get_or_fetch(|| async { Ok("rotated".to_owned()) })
        .await
        .unwrap();

    assert!(!logs.text().contains("hunter2"), "{}", logs.text());
    let lines = logs.lines();
    let warnings: Vec<_> = lines.iter().filter(|l| l["level"] == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{lines:?}");
    let warning = &warnings[0]["fields"];
    assert!(
        warning["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection reset")),
        "{warning}"
    );
    assert_eq!(warning["retry_in_ms"], 1000);
    let recovered: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "INFO" && l["fields"]["failures"] == 3)
        .collect();
    assert_eq!(recovered.len(), 1, "{lines:?}");
}
