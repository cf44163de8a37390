//! The contract between the log lines the functions write and the alerter that reads them,
//! checked on the functions' sources: every event the alerter has advice for is logged by the
//! webhook or the processor (whose ERROR lines the alerter receives), every [`LogEvent`] is
//! logged by some function, and no function writes an event name as a literal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::path::{Path, PathBuf};

use alerter::alert::advised_events;
use shared::log_event::LogEvent;

/// The modules of the shared library that log on the processor's behalf (only the processor
/// runs them): their lines count as the processor's.
const PROCESSOR_SHARED_MODULES: &[&str] = &["knowledge.rs", "tools"];

/// The non-test Rust source of a function crate: its `src/` files but `tests.rs`, each cut at
/// its `#[cfg(test)]` module, without comment lines; for the processor, with the shared modules
/// it alone runs.
fn source_of(function: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let src = root.join(function).join("src");
    let mut files = rust_files(&src);
    if function == "processor" {
        let shared = root.join("..").join("shared").join("src");
        for module in PROCESSOR_SHARED_MODULES {
            let path = shared.join(module);
            files.extend(if path.is_dir() {
                rust_files(&path)
            } else {
                vec![path]
            });
        }
    }
    let mut source = String::new();
    for path in files {
        if path.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            source.push_str(line);
            source.push('\n');
        }
    }
    assert!(
        source.contains("tracing::"),
        "no logging found in {}",
        src.display()
    );
    source
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Whether `source` logs `event`: names it as `LogEvent::<Variant>.as_str()`, the way the
/// functions write the `event` field (the alerter's advice table names events without it).
fn logs(source: &str, event: LogEvent) -> bool {
    source.contains(&format!("LogEvent::{event:?}.as_str()"))
}

#[test]
fn every_event_the_alerter_advises_on_is_logged_by_the_webhook_or_the_processor() {
    let emitters = [source_of("webhook"), source_of("processor")];
    let unlogged: Vec<LogEvent> = advised_events()
        .filter(|event| !emitters.iter().any(|source| logs(source, *event)))
        .collect();
    assert!(
        unlogged.is_empty(),
        "the alerter has advice for events no function it watches logs: {unlogged:?}"
    );
}

#[test]
fn every_log_event_is_logged_by_some_function() {
    let functions = [
        source_of("webhook"),
        source_of("processor"),
        source_of("alerter"),
    ];
    let unlogged: Vec<LogEvent> = LogEvent::ALL
        .iter()
        .copied()
        .filter(|event| !functions.iter().any(|source| logs(source, *event)))
        .collect();
    assert!(unlogged.is_empty(), "no function logs {unlogged:?}");
}

#[test]
fn no_function_writes_an_event_name_literally() {
    for function in ["webhook", "processor", "alerter"] {
        let source = source_of(function);
        let literals: Vec<&str> = source
            .lines()
            .filter(|line| line.contains("event = \"") || line.contains("event: \""))
            .collect();
        assert!(
            literals.is_empty(),
            "{function} names events outside LogEvent: {literals:?}"
        );
    }
}

#[test]
fn the_check_tells_logging_an_event_from_naming_it() {
    let source = "tracing::error!(event = LogEvent::LlmFailedFinal.as_str());\n\
        const ADVICE: [LogEvent; 1] = [LogEvent::LlmFailed];";
    assert!(logs(source, LogEvent::LlmFailedFinal));
    assert!(!logs(source, LogEvent::LlmFailed));
}
