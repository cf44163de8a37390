//! Percentiles of a sample of durations.

use std::time::Duration;

/// A sorted sample of durations.
#[derive(Debug, Clone, Default)]
pub struct Percentiles(Vec<Duration>);

impl Percentiles {
    /// The sample `durations`, sorted.
    pub fn of(mut durations: Vec<Duration>) -> Self {
        durations.sort();
        Self(durations)
    }

    /// The `p`-th percentile (nearest rank), zero for an empty sample.
    pub fn at(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// The median in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.at(50.0).as_secs_f64() * 1e3
    }

    /// The 99th percentile in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.at(99.0).as_secs_f64() * 1e3
    }

    /// The largest in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    }
}
