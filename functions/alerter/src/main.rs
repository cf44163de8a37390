//! The alerter Lambda's entry point: tracing, configuration, clients, then the runtime loop
//! over [`alerter::Alerter`].

// The runtime's future nests the alerter's (its three triggers and the retry queue) deeper
// than the compiler's default limit of 128 when it computes its layout.
#![recursion_limit = "256"]

use std::sync::Arc;

use alerter::{Alerter, Config};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::aws_timeouts::AwsTimeouts;
use shared::mail::SesMailer;
use shared::queue::SqsQueue;
use shared::storm::dynamodb::DynamoDbStormControl;

// One thread: an instance serves one invocation at a time, whose work is waiting on the network,
// and Lambda gives small functions a fraction of one vCPU. A multi-threaded runtime spent a third
// of the webhook's CPU handing tasks between its threads (README "Speed and size").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config =
        Config::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let aws = shared::aws_config(AwsTimeouts::ALERTER).await;
    let storm = DynamoDbStormControl::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.table_name.clone(),
    );
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let alerter = Arc::new(Alerter::new(
        SesMailer::new(aws_sdk_sesv2::Client::new(&aws)),
        storm,
        SqsQueue::new(sqs.clone(), config.archive_queue_url.clone()),
        SqsQueue::standard(sqs, config.alert_retry_queue_url.clone()),
        config,
    ));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let alerter = alerter.clone();
        async move { alerter.handle(&event.payload).await.map_err(Error::from) }
    }))
    .await
}
