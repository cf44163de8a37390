//! Structured JSON logs, one object per line, as CloudWatch and the alerter read them.

use tracing_subscriber::EnvFilter;

/// The crates whose log level the configuration sets. Dependencies stay at WARN whatever the
/// level: the AWS SDK logs whole request bodies (with phone numbers and message text) at TRACE.
const OUR_CRATES: [&str; 4] = ["shared", "webhook", "processor", "alerter"];

/// The filter for `level` (`error`, `warn`, `info`, `debug` or `trace`; INFO when unknown):
/// that level for this project's crates, WARN for everything else.
pub fn filter(level: &str) -> EnvFilter {
    let level = match level.trim().to_lowercase().as_str() {
        l @ ("error" | "warn" | "info" | "debug" | "trace") => l.to_owned(),
        _ => "info".to_owned(),
    };
    let directives: Vec<String> = std::iter::once("warn".to_owned())
        .chain(OUR_CRATES.iter().map(|c| format!("{c}={level}")))
        .collect();
    EnvFilter::new(directives.join(","))
}

/// Installs a JSON subscriber on standard output. The level comes from `AWS_LAMBDA_LOG_LEVEL`
/// (set by Lambda's logging configuration) and is INFO otherwise; see [`filter`]. A developer's
/// `RUST_LOG` is used as given instead.
pub fn init() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(directives).unwrap_or_else(|_| filter("info")),
        Err(_) => filter(&std::env::var("AWS_LAMBDA_LOG_LEVEL").unwrap_or_default()),
    };
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn sets_our_crates_level_and_keeps_dependencies_at_warn() {
        let directives = |level| {
            let mut d: Vec<String> = filter(level)
                .to_string()
                .split(',')
                .map(str::to_owned)
                .collect();
            d.sort();
            d
        };
        assert_eq!(
            directives("DEBUG"),
            [
                "alerter=debug",
                "processor=debug",
                "shared=debug",
                "warn",
                "webhook=debug"
            ]
        );
        assert!(filter("verbose").to_string().contains("shared=info"));
    }
}
