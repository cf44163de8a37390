//! Starting moto's server for the local stack, and the AWS configuration that reaches it.

use std::path::Path;
use std::time::Duration;

/// Starts `moto_server` on `port` of the loopback interface and returns once it answers. The
/// server stops when the returned child is dropped.
pub(super) async fn start(moto_server: &Path, port: u16) -> Result<tokio::process::Child, String> {
    let child = tokio::process::Command::new(moto_server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "start {} (run `make local`, which installs moto): {e}",
                moto_server.display()
            )
        })?;
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/moto-api/"))
            .send()
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("moto did not start on port {port}"))
}

/// The AWS configuration for the moto server at `endpoint`, in `region`, with the local stack's
/// dummy credentials.
pub(super) async fn aws_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "local", "local", None, None, "local",
        ))
        .load()
        .await
}
