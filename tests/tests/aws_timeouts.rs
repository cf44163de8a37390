//! The functions' AWS time limits (`shared::aws_timeouts`) fit the Lambda timeouts that
//! `template.yaml` gives them, so that a hanging AWS service fails a call instead of the whole
//! invocation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::time::Duration;

use local_stack::Template;
use shared::aws_timeouts::AwsTimeouts;

/// The function's `Timeout` in the template.
fn lambda_timeout(template: &Template, function: &str) -> Duration {
    let seconds = template.properties(function)["Timeout"]
        .as_u64()
        .unwrap_or_else(|| panic!("{function} has a Timeout in seconds"));
    Duration::from_secs(seconds)
}

#[test]
fn the_webhook_answers_within_its_timeout_when_aws_hangs() {
    // A delivery reads the secret (when the cache is due) and sends one queue batch per ten
    // messages; Meta sends one message per delivery as a rule.
    let worst = AwsTimeouts::WEBHOOK.operation * 2;
    assert!(
        worst <= Duration::from_secs(4),
        "Meta wants an answer within seconds"
    );
    assert!(worst * 2 <= lambda_timeout(&Template::load(), "WebhookFunction"));
}

#[test]
fn the_processors_completing_write_ends_within_the_time_kept_for_the_reply() {
    let timeouts = AwsTimeouts::PROCESSOR;
    // After the LLM, REPLY_RESERVE is left for the reply and the completing write.
    assert!(timeouts.operation * 2 <= processor::REPLY_RESERVE);
    // Before it: the claim and a secrets read.
    let before_the_llm = timeouts.operation * 2;
    assert!(
        before_the_llm + processor::REPLY_RESERVE * 2
            <= lambda_timeout(&Template::load(), "ProcessorFunction")
    );
}

#[test]
fn the_alerter_mails_a_dead_letter_batch_within_its_timeout_when_aws_hangs() {
    // Storm control's write, the archive batch and the mail.
    let worst = AwsTimeouts::ALERTER.operation * 3;
    assert!(worst * 2 <= lambda_timeout(&Template::load(), "AlerterFunction"));
}
