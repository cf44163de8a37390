//! The alerter Lambda's entry point: tracing, configuration, clients, then the runtime loop
//! over [`alerter::Alerter`].

use std::sync::Arc;

use alerter::{Alerter, Config};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::aws_timeouts::AwsTimeouts;
use shared::mail::SesMailer;
use shared::queue::SqsQueue;
use shared::storm::dynamodb::DynamoDbStormControl;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config =
        Config::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let aws = shared::aws_config(AwsTimeouts::ALERTER).await;
    let storm = DynamoDbStormControl::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.table_name.clone(),
    );
    let alerter = Arc::new(Alerter::new(
        SesMailer::new(aws_sdk_sesv2::Client::new(&aws)),
        storm,
        SqsQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.archive_queue_url.clone(),
        ),
        config,
    ));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let alerter = alerter.clone();
        async move { alerter.handle(&event.payload).await.map_err(Error::from) }
    }))
    .await
}
