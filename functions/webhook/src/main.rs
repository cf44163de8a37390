//! The webhook Lambda's entry point: tracing, configuration, clients, then the runtime loop
//! over [`webhook::Webhook`].

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Error, Request, run, service_fn};
use shared::aws_timeouts::AwsTimeouts;
use shared::queue::SqsQueue;
use shared::secrets::SecretsManagerSecrets;
use webhook::{Config, Webhook};

// One thread: an instance serves one invocation at a time, whose work is waiting on the network,
// and Lambda gives small functions a fraction of one vCPU. A multi-threaded runtime spent a third
// of the webhook's CPU handing tasks between its threads (README "Speed and size").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config =
        Config::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let aws = shared::aws_config(AwsTimeouts::WEBHOOK).await;
    let webhook = Arc::new(Webhook::new(
        SqsQueue::new(aws_sdk_sqs::Client::new(&aws), config.queue_url),
        SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(&aws),
            config.secret_id,
            config.secrets_refresh,
        ),
    ));
    run(service_fn(move |request: Request| {
        let webhook = webhook.clone();
        async move { Ok::<_, Infallible>(webhook.handle(request).await) }
    }))
    .await
}
