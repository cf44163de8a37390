//! The local stack end to end, in terminal mode: the real binaries, moto, the offline LLM
//! stand-in. Three messages from one user get three replies, the third showing that the first
//! was remembered; a duplicate delivery gets no second reply. `/number` switches the business
//! number written to, each keeping its own conversation.
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

#[tokio::test]
async fn number_picks_the_business_number_written_to_each_with_its_own_conversation() {
    let lines = [
        "My name is Ana",
        "/number 2",
        "Hola",
        "/number 9",
        "/number 106540352242922",
        "Hello again",
    ];
    let answers = terminal::converse("terminal-numbers", &lines.map(String::from)).await;

    assert_eq!(answers[1], "(writing to Café Luna · 106540352242923)");
    // Café Luna's conversation with the same user is another one: nothing of the first is
    // remembered there.
    assert!(
        answers[2].starts_with(r#"bot> [offline stand-in] You said: "Hola"."#)
            && !answers[2].contains("remember"),
        "{}",
        answers[2]
    );
    assert_eq!(
        answers[3],
        "! /number N: one of 1 Bluebell Home (106540352242922), 2 Café Luna (106540352242923)"
    );
    assert_eq!(answers[4], "(writing to Bluebell Home · 106540352242922)");
    assert_eq!(
        answers[5],
        r#"bot> [offline stand-in] You said: "Hello again". I remember 1 earlier message(s); your first was: "My name is Ana"."#
    );
}
