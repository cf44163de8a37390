//! `perf record` of a running function, for the profile behind the CPU figures.

use std::path::Path;

/// Starts `perf record` (call graphs, 10 kHz) on process `pid`, writing to `output`.
pub async fn record(pid: u32, output: &Path) -> tokio::process::Child {
    let child = tokio::process::Command::new("perf")
        .args(["record", "-F", "10000", "-g", "-p", &pid.to_string(), "-o"])
        .arg(output)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("perf (linux-perf) is installed");
    // perf needs a moment to attach before the measured invocations start.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    child
}

/// Stops `perf record` as Ctrl-C would, so that it writes its file, and waits for it.
pub async fn stop(mut recorder: tokio::process::Child) {
    if let Some(pid) = recorder.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await;
    }
    let _ = recorder.wait().await;
}
