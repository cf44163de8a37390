//! Structured JSON logs, one object per line, as CloudWatch and the alerter read them.

use tracing_subscriber::EnvFilter;

/// Installs a JSON subscriber on standard output. The level comes from `AWS_LAMBDA_LOG_LEVEL`
/// (set by Lambda's logging configuration) or `RUST_LOG`, and is INFO otherwise.
pub fn init() {
    let directive = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned())
        .to_lowercase();
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
