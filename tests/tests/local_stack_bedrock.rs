//! `LLM_PROVIDER=bedrock` on the local stack without AWS credentials, in terminal mode: the
//! processor's binary signs its Converse requests with the local stack's dummy credentials for
//! the region the stack runs in (here eu-west-3, to show the region is followed), and the
//! offline Converse stand-in, which refuses any request not signed so, answers with what it
//! was given: the text, the photo's bytes, the remembered history.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

mod samples;
mod terminal;

#[tokio::test]
async fn the_offline_converse_stand_in_answers_signed_requests_with_memory_and_a_photo() {
    let dir = std::env::temp_dir().join(testkit::unique_name("bedrock-samples"));
    std::fs::create_dir_all(&dir).unwrap();
    let png = samples::png();
    let photo = dir.join("photo.png");
    std::fs::write(&photo, &png).unwrap();
    let no_file = dir.join("no-credentials").display().to_string();

    let lines = [
        "My name is Ana".to_owned(),
        format!("/send {} what is in this picture?", photo.display()),
        "What is my name?".to_owned(),
    ];
    let env = [
        ("LLM_PROVIDER", Some("bedrock")),
        ("AWS_REGION", Some("eu-west-3")),
        ("AWS_DEFAULT_REGION", None),
        // No credentials anywhere: the offline stand-in answers.
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
        ("AWS_SESSION_TOKEN", None),
        ("AWS_PROFILE", None),
        ("AWS_SHARED_CREDENTIALS_FILE", Some(no_file.as_str())),
        ("HOME", Some(no_file.as_str())),
    ];
    let answers = terminal::converse_with("bedrock", &lines, &env).await;
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        answers[0],
        r#"bot> [offline stand-in] You said: "My name is Ana"."#
    );
    assert!(
        answers[1].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[image] what is in this picture?". I received an image (png, {} bytes)."#,
            png.len()
        )),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].contains(r#"I remember 2 earlier message(s); your first was: "My name is Ana""#),
        "{}",
        answers[2]
    );
}
