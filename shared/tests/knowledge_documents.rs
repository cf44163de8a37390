//! The knowledge document's two adapters against the real thing: S3 in moto's server (ETag,
//! conditional reads, missing objects) and a local file; and the cache over S3.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use shared::knowledge::{
    DocumentSource, DocumentStore, DocumentUri, Fetched, Knowledge, KnowledgeError,
};
use tokio::time::Instant;

async fn bucket_with(
    key: &str,
    body: &[u8],
) -> (aws_config::SdkConfig, aws_sdk_s3::Client, String) {
    let aws = testkit::moto_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let bucket = testkit::unique_name("kb").to_lowercase().replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    put(&s3, &bucket, key, body).await;
    (aws, s3, bucket)
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap();
}

fn store(aws: &aws_config::SdkConfig, uri: &str) -> DocumentStore {
    DocumentStore::new(&uri.parse::<DocumentUri>().unwrap(), aws)
}

#[tokio::test]
async fn an_s3_document_is_read_then_checked_by_its_etag() {
    let (aws, s3, bucket) = bucket_with("faq.md", b"# FAQ\nOpen 9-5.").await;
    let document = store(&aws, &format!("s3://{bucket}/faq.md"));
    let Fetched::Changed(first) = document.fetch(None).await.unwrap() else {
        panic!("a first read gives the document");
    };
    assert_eq!(first.text, "# FAQ\nOpen 9-5.");
    assert!(!first.etag.is_empty());
    assert_eq!(
        document.fetch(Some(&first.etag)).await.unwrap(),
        Fetched::Unchanged
    );
    put(
        &s3,
        &bucket,
        "faq.md",
        "# FAQ\nOpen 9-6, ¡también sábados!".as_bytes(),
    )
    .await;
    let Fetched::Changed(second) = document.fetch(Some(&first.etag)).await.unwrap() else {
        panic!("a new version is read");
    };
    assert_eq!(second.text, "# FAQ\nOpen 9-6, ¡también sábados!");
    assert_ne!(second.etag, first.etag);
}

#[tokio::test]
async fn a_missing_or_binary_s3_document_is_a_clear_error() {
    let (aws, s3, bucket) = bucket_with("faq.md", b"x").await;
    let missing = store(&aws, &format!("s3://{bucket}/nope.md"))
        .fetch(None)
        .await;
    assert!(
        matches!(&missing, Err(KnowledgeError::NotFound(place)) if place.ends_with("/nope.md")),
        "{missing:?}"
    );
    put(&s3, &bucket, "photo.jpg", &[0xff, 0xd8, 0xff, 0xe0]).await;
    let binary = store(&aws, &format!("s3://{bucket}/photo.jpg"))
        .fetch(None)
        .await;
    assert_eq!(binary, Err(KnowledgeError::NotText));
}

#[tokio::test]
async fn a_file_document_changes_version_when_rewritten() {
    let aws = aws_config::SdkConfig::builder().build();
    let path = std::env::temp_dir().join(testkit::unique_name("faq.md"));
    std::fs::write(&path, "v1").unwrap();
    let document = store(&aws, &format!("file://{}", path.display()));
    let Fetched::Changed(first) = document.fetch(None).await.unwrap() else {
        panic!("a first read gives the document");
    };
    assert_eq!(first.text, "v1");
    assert_eq!(
        document.fetch(Some(&first.etag)).await.unwrap(),
        Fetched::Unchanged
    );
    std::fs::write(&path, "version 2").unwrap();
    let Fetched::Changed(second) = document.fetch(Some(&first.etag)).await.unwrap() else {
        panic!("a new version is read");
    };
    assert_eq!(second.text, "version 2");
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        document.fetch(Some(&second.etag)).await,
        Err(KnowledgeError::NotFound(_))
    ));
}

#[tokio::test]
async fn the_cache_serves_the_new_version_after_the_refresh_interval() {
    let (aws, s3, bucket) = bucket_with("faq.md", b"old answer").await;
    let knowledge = Knowledge::new(
        store(&aws, &format!("s3://{bucket}/faq.md")),
        Duration::from_millis(300),
        1000,
    );
    let deadline = || Instant::now() + Duration::from_secs(5);
    assert_eq!(
        knowledge.current(deadline()).await.as_deref(),
        Some("old answer")
    );
    put(&s3, &bucket, "faq.md", b"new answer").await;
    assert_eq!(
        knowledge.current(deadline()).await.as_deref(),
        Some("old answer"),
        "within the refresh interval the cached version serves"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        knowledge.current(deadline()).await.as_deref(),
        Some("new answer")
    );
}
