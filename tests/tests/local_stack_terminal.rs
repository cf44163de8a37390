//! The local stack end to end, in terminal mode: the real binaries, moto, the offline LLM
//! stand-in. Three messages from one user get three replies, the third showing that the first
//! was remembered; a duplicate delivery gets no second reply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod terminal;

#[tokio::test]
async fn three_messages_three_replies_with_memory_and_no_reply_to_a_duplicate() {
    let lines = [
        "My name is Ana",
        "I live in Porto",
        "What is my name?",
        "/resend",
    ];
    let answers = terminal::converse("terminal", &lines.map(String::from)).await;

    assert_eq!(
        answers[0],
        r#"bot> [offline stand-in] You said: "My name is Ana"."#
    );
    assert_eq!(
        answers[1],
        r#"bot> [offline stand-in] You said: "I live in Porto". I remember 1 earlier message(s); your first was: "My name is Ana"."#
    );
    assert!(
        answers[2].contains(r#"your first was: "My name is Ana""#),
        "{}",
        answers[2]
    );
    assert_eq!(
        answers[3], "(no reply)",
        "a duplicate delivery gets no second reply"
    );
}
