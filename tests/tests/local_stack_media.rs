//! Media on the local stack end to end, in terminal mode: a photo, a PDF, a voice note and a
//! location go through the webhook, the Graph API stand-in's two-step media flow, the
//! processor's steps and the offline stand-ins (transcriber, LLM), whose answers name what they
//! received. The sample files are made here: a real PNG, a one-page PDF and an OGG/Opus voice
//! note of silence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test: a panic is a failed test"
)]

use std::path::Path;

mod samples;
mod terminal;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_photo_a_pdf_a_voice_note_and_a_location_each_get_an_answer_naming_them() {
    let dir = std::env::temp_dir().join(testkit::unique_name("media-samples"));
    std::fs::create_dir_all(&dir).unwrap();
    let (png, pdf, ogg) = (samples::png(), samples::pdf(), samples::ogg_opus());
    let photo = write(&dir, "photo.png", &png);
    let menu = write(&dir, "menu.pdf", &pdf);
    let voice = write(&dir, "voice.ogg", &ogg);
    let missing = dir.join("missing.png").display().to_string();

    let lines = [
        format!("/send {photo} what is in this picture?"),
        format!("/send {menu} prices?"),
        format!("/send {voice}"),
        "/location 41.1496 -8.611 Livraria Lello".to_owned(),
        format!("/send {missing}"),
    ];
    let answers = terminal::converse("media", &lines).await;
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        answers[0].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[image] what is in this picture?". I received an image (image/png, {} bytes)."#,
            png.len()
        )),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[document menu.pdf] prices?". I received a file (application/pdf, {} bytes)."#,
            pdf.len()
        )),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].starts_with(&format!(
            r#"bot> [offline stand-in] You said: "[voice note] [stand-in transcript] a voice note of {} bytes"."#,
            ogg.len()
        )),
        "{}",
        answers[2]
    );
    assert!(
        answers[3].starts_with(
            r#"bot> [offline stand-in] You said: "[location] Livraria Lello (latitude 41.149600, longitude -8.611000)"."#
        ),
        "{}",
        answers[3]
    );
    assert!(
        answers[3].contains(
            r#"I remember 3 earlier message(s); your first was: "[image] what is in this picture?""#
        ),
        "the memory keeps the media's text turns: {}",
        answers[3]
    );
    assert!(
        answers[4].starts_with("! cannot read ") && answers[4].contains("missing.png"),
        "a missing file is said so: {}",
        answers[4]
    );
}
