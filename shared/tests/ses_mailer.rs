//! The SES mailer against moto's server (see tests/with-moto.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use shared::mail::{Mail, MailError, Mailer, SesMailer};
use testkit::mail::{sent_mails, sent_mails_to, verify_sender};

/// An address no other test uses, so that its mails can be told apart in the shared server.
fn unique_address(prefix: &str) -> String {
    format!("{}@example.com", testkit::unique_name(prefix))
}

async fn client() -> aws_sdk_sesv2::Client {
    aws_sdk_sesv2::Client::new(&testkit::moto_config().await)
}

#[tokio::test]
async fn sends_a_raw_mail_that_reads_back_exactly() {
    let client = client().await;
    let from = unique_address("alerts");
    verify_sender(&client, &from).await;
    let to = unique_address("ops");
    let also_to = unique_address("oncall");
    let mail = Mail {
        from: from.clone(),
        to: vec![to.clone(), also_to.clone()],
        reply_to: Some(unique_address("support")),
        subject: "⚠️ Processor: 3 errors in « conversation » 42 — <script>".into(),
        text: "Three errors.\r\nThe first:\n\tpanicked at 'é'\n".into(),
        html: format!(
            "<p>Three errors.</p>\r\n<pre>{}</pre><script>alert(1)</script>\n",
            "x".repeat(5_000)
        ),
    };

    let id = SesMailer::new(client).send(&mail).await.expect("sent");
    assert!(!id.is_empty());

    assert_eq!(sent_mails_to(&to).await, vec![mail.clone()]);
    let stored: Vec<_> = sent_mails()
        .await
        .into_iter()
        .filter(|m| m.destinations.contains(&to))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].source, from);
    assert_eq!(stored[0].destinations, vec![to, also_to]);
}

#[tokio::test]
async fn a_mail_without_reply_to_has_none() {
    let client = client().await;
    let from = unique_address("alerts");
    verify_sender(&client, &from).await;
    let to = unique_address("ops");
    let mail = Mail {
        from,
        to: vec![to.clone()],
        reply_to: None,
        subject: "Disk full".into(),
        text: "text".into(),
        html: "<p>html</p>".into(),
    };
    let mailer = SesMailer::new(client);
    mailer.send(&mail).await.expect("sent");
    let second = Mail {
        subject: "Disk still full".into(),
        ..mail.clone()
    };
    mailer.send(&second).await.expect("sent");

    let received = sent_mails_to(&to).await;
    let subjects: Vec<&str> = received.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["Disk full", "Disk still full"],
        "in sending order"
    );
    assert!(received.iter().all(|m| m.reply_to.is_none()));
}

#[tokio::test]
async fn an_unverified_sender_is_rejected_and_nothing_is_sent() {
    let to = unique_address("ops");
    let mail = Mail {
        from: unique_address("unverified"),
        to: vec![to.clone()],
        reply_to: None,
        subject: "Never sent".into(),
        text: "text".into(),
        html: "<p>html</p>".into(),
    };

    let error = SesMailer::new(client().await)
        .send(&mail)
        .await
        .expect_err("moto refuses an unverified sender");

    match &error {
        MailError::Rejected(text) => assert!(text.contains("MessageRejected"), "{text}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("Verify the sender ERROR_FROM_EMAIL"),
        "the error names the fix: {message}"
    );
    assert_eq!(sent_mails_to(&to).await, vec![]);
}
