//! AWS that hangs or drops connections, between the functions' clients and moto's server (see
//! tests/with-moto.sh): a call fails by its operation timeout instead of hanging, and a secret
//! read once is served from the cache.
//!
//! The clients have the functions' own timeouts (`AwsTimeouts::apply_to`, as `shared::aws_config`
//! applies them), and reach moto through a loopback TCP proxy that forwards, holds connections
//! without answering, or closes them at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use shared::aws_timeouts::AwsTimeouts;
use shared::queue::{MessageQueue, QueueEntry, QueueError, SqsQueue};
use shared::secrets::{Secrets, SecretsManagerSecrets};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards bytes both ways to moto.
    Forward,
    /// Accepts and holds connections without reading or answering, as a stuck service does.
    Hang,
    /// Closes connections as soon as they are accepted.
    Close,
}

/// A loopback TCP proxy to moto whose [`Mode`] a test switches. Switching closes the
/// connections it holds, so that a pooled connection does not keep forwarding.
struct Proxy {
    url: String,
    mode: watch::Sender<Mode>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start() -> Self {
        let upstream = std::env::var("AWS_ENDPOINT_URL").expect("moto_config checked it");
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a local address"));
        let (mode, _) = watch::channel(Mode::Forward);
        let connections = Arc::new(AtomicUsize::new(0));
        let (modes, count) = (mode.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(client, upstream.clone(), modes.subscribe()));
            }
        });
        Self {
            url,
            mode,
            connections,
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// One connection, treated as the proxy's mode says until the mode changes.
async fn serve(mut client: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Forward => {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = mode.changed() => {}
            }
        }
        Mode::Hang => {
            let _ = mode.changed().await;
        }
        Mode::Close => {}
    }
}

/// The AWS configuration a function builds with `timeouts`, reaching moto through `proxy`.
async fn config_through(proxy: &Proxy, timeouts: AwsTimeouts) -> aws_config::SdkConfig {
    // Panics unless AWS_ENDPOINT_URL is a local moto server, which the proxy forwards to; the
    // credentials and region are tests/with-moto.sh's.
    testkit::moto_config().await;
    timeouts
        .apply_to(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .endpoint_url(&proxy.url)
        .load()
        .await
}

/// Runs `call`, failing the test if it is still running after three operation timeouts.
async fn bounded<F: Future>(timeouts: AwsTimeouts, call: F) -> F::Output {
    tokio::time::timeout(timeouts.operation * 3, call)
        .await
        .expect("the call ended by its operation timeout instead of hanging")
}

#[tokio::test]
async fn a_dynamodb_call_through_a_hanging_service_fails_by_its_timeout() {
    let timeouts = AwsTimeouts::PROCESSOR;
    let table = testkit::create_table(
        &aws_sdk_dynamodb::Client::new(&testkit::moto_config().await),
        "t",
    )
    .await;
    let proxy = Proxy::start().await;
    let client = aws_sdk_dynamodb::Client::new(&config_through(&proxy, timeouts).await);
    let read = || {
        client
            .get_item()
            .table_name(&table)
            .key("pk", AttributeValue::S("conv#x".into()))
            .send()
    };
    bounded(timeouts, read())
        .await
        .expect("the proxy forwards to moto");

    proxy.set(Mode::Hang);
    let before = proxy.connections();
    let error = bounded(timeouts, read()).await.unwrap_err();
    assert!(
        matches!(error, SdkError::TimeoutError(_)),
        "a timeout, not {error:?}"
    );
    assert!(
        proxy.connections() >= before + 2,
        "the stuck try was abandoned and tried again"
    );
}

#[tokio::test]
async fn a_dynamodb_call_whose_connections_are_closed_fails_without_waiting_out_the_timeout() {
    let timeouts = AwsTimeouts::PROCESSOR;
    let proxy = Proxy::start().await;
    proxy.set(Mode::Close);
    let client = aws_sdk_dynamodb::Client::new(&config_through(&proxy, timeouts).await);
    let error = bounded(timeouts, client.list_tables().send())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SdkError::DispatchFailure(_)),
        "a connection failure, not {error:?}"
    );
    assert!(
        proxy.connections() >= timeouts.max_attempts as usize,
        "every try was made"
    );
}

#[tokio::test]
async fn a_queue_batch_through_a_hanging_service_fails_by_the_webhooks_timeout() {
    let timeouts = AwsTimeouts::WEBHOOK;
    let queue_url = testkit::create_fifo_queue(
        &aws_sdk_sqs::Client::new(&testkit::moto_config().await),
        "q",
    )
    .await;
    let proxy = Proxy::start().await;
    proxy.set(Mode::Hang);
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&config_through(&proxy, timeouts).await),
        queue_url,
    );
    let entry = QueueEntry {
        group_id: "g".into(),
        deduplication_id: "d".into(),
        body: "{}".into(),
    };
    let result = bounded(timeouts, queue.send_batch(&[entry])).await;
    let Err(QueueError::Send(reason)) = result else {
        panic!("the batch fails as a whole: {result:?}");
    };
    assert!(reason.to_lowercase().contains("timeout"), "{reason}");
}

#[tokio::test]
async fn a_secret_read_once_is_served_from_the_cache_when_the_service_hangs_or_drops() {
    let timeouts = AwsTimeouts::WEBHOOK;
    let direct = aws_sdk_secretsmanager::Client::new(&testkit::moto_config().await);
    let arn = testkit::create_secret(&direct, "app", r#"{"META_APP_SECRET":"s3cr3t"}"#).await;
    for failure in [Mode::Hang, Mode::Close] {
        let proxy = Proxy::start().await;
        let client = aws_sdk_secretsmanager::Client::new(&config_through(&proxy, timeouts).await);
        // Refreshed on every use, so that each call below would read again if it could.
        let secrets = SecretsManagerSecrets::new(client, &arn, Duration::ZERO);
        let first = bounded(timeouts, secrets.current()).await.expect("read");
        assert_eq!(
            first.meta_app_secret.as_ref().map(|s| s.expose()),
            Some("s3cr3t")
        );

        proxy.set(failure);
        let served = bounded(timeouts, secrets.current()).await;
        assert!(
            served.is_ok_and(|s| Arc::ptr_eq(&s, &first)),
            "{failure:?}: the cached value"
        );
        // Within the pause after the failure, the cache does not try again.
        let connections = proxy.connections();
        let again = bounded(timeouts, secrets.current()).await;
        assert!(again.is_ok_and(|s| Arc::ptr_eq(&s, &first)), "{failure:?}");
        assert_eq!(
            proxy.connections(),
            connections,
            "{failure:?}: no new fetch"
        );
    }
}
