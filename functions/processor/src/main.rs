//! The processor Lambda's entry point: tracing, configuration, clients, then the runtime loop
//! over [`processor::Processor`].

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use processor::{Config, Invocation};
use shared::aws_timeouts::AwsTimeouts;
use shared::secrets::SecretsManagerSecrets;

// One thread: an instance serves one invocation at a time, whose work is waiting on the network,
// and Lambda gives small functions a fraction of one vCPU. A multi-threaded runtime spent a third
// of the webhook's CPU handing tasks between its threads (README "Speed and size").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config =
        Config::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let aws = shared::aws_config(AwsTimeouts::PROCESSOR).await;
    let secrets = Arc::new(SecretsManagerSecrets::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        config.secret_id.clone(),
        config.secrets_refresh,
    ));
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let processor = Arc::new(processor::build(&config, &aws, dynamodb, secrets)?);
    let namespace = Arc::new(config.metrics_namespace.clone());
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (processor, namespace) = (processor.clone(), namespace.clone());
        async move {
            let invocation = Invocation::from_context(&event.context);
            let (response, metrics) = processor.handle(&event.payload, &invocation).await;
            metrics.emit(&namespace, "processor");
            Ok::<_, Error>(response)
        }
    }))
    .await
}
