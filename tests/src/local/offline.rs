//! The offline stand-ins for the models, used when no real model is configured: an LLM
//! (OpenAI's chat completions, and Bedrock's Converse for `LLM_PROVIDER=bedrock`) whose answer
//! shows what it was given, and a transcriber (OpenAI's `/audio/transcriptions`) whose
//! transcript says what it heard. They mark their answers as a stand-in's.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

/// The largest request the stand-ins read, as the real services take them: a burst's 12 MiB of
/// inline files in base64, or a 16 MiB voice note in a form (axum's default is 2 MB).
pub const MODEL_REQUEST_LIMIT: usize = 32 * 1024 * 1024;

/// The stand-ins' routes: `/llm/v1/chat/completions` and
/// `/transcription/v1/audio/transcriptions`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/llm/v1/chat/completions", post(llm_stand_in))
        .route(
            "/transcription/v1/audio/transcriptions",
            post(transcription_stand_in),
        )
        .layer(DefaultBodyLimit::max(MODEL_REQUEST_LIMIT))
}

/// The offline Converse stand-in's route, `POST /bedrock/model/{model-id}/converse`: each
/// request must be SigV4-signed with the local stack's dummy credentials for service `bedrock`
/// and `region`, as Bedrock checks its callers' (403 `InvalidSignatureException` otherwise).
pub(super) fn bedrock_routes<S: Clone + Send + Sync + 'static>(region: String) -> axum::Router<S> {
    let path = format!(
        "{}/model/{{model_id}}/converse",
        super::bedrock::STAND_IN_PATH
    );
    axum::Router::new()
        .route(
            &path,
            post(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let region = region.clone();
                    async move { converse_stand_in(&region, method, uri, headers, body) }
                },
            ),
        )
        .layer(DefaultBodyLimit::max(MODEL_REQUEST_LIMIT))
}

/// What the offline stand-ins say, given the text of each user turn and the files of the last.
fn stand_in_answer(texts: &[String], files: &str) -> String {
    let last = texts.last().map(String::as_str).unwrap_or_default();
    let mut answer = format!("[offline stand-in] You said: \"{last}\".{files}");
    if texts.len() > 1 {
        answer.push_str(&format!(
            " I remember {} earlier message(s); your first was: \"{}\".",
            texts.len() - 1,
            texts[0]
        ));
    }
    answer
}

/// The offline LLM stand-in: a deterministic answer that shows what the model was given (the
/// text, the files that came with it), so that memory, bursts and media can be seen without an
/// account.
async fn llm_stand_in(body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let user_turns: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    let texts: Vec<String> = user_turns
        .iter()
        .map(|m| turn_text(&m["content"]))
        .collect();
    let files = user_turns
        .last()
        .map(|m| files_received(&m["content"]))
        .unwrap_or_default();
    let answer = stand_in_answer(&texts, &files);
    axum::Json(json!({"id": "local-stand-in", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0}}))
    .into_response()
}

/// The text of a turn: its content when that is text, else its text parts joined.
fn turn_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// " I received …" for the image and file parts of a turn; empty without any.
fn files_received(content: &Value) -> String {
    let Some(parts) = content.as_array() else {
        return String::new();
    };
    let files: Vec<String> = parts
        .iter()
        .filter_map(|part| match part["type"].as_str() {
            Some("image_url") => Some(describe("an image", &part["image_url"]["url"])),
            Some("file") => Some(describe("a file", &part["file"]["file_data"])),
            _ => None,
        })
        .collect();
    match files.is_empty() {
        true => String::new(),
        false => format!(" I received {}.", files.join(" and ")),
    }
}

/// `an image (image/png, 68 bytes)` for a `data:` URL.
fn describe(what: &str, data_url: &Value) -> String {
    let url = data_url.as_str().unwrap_or_default();
    let (header, data) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
        .unwrap_or(("", ""));
    let mime_type = header.split(';').next().unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(bytes) => format!("{what} ({mime_type}, {} bytes)", bytes.len()),
        Err(_) => format!("{what} ({mime_type}, not valid base64)"),
    }
}

/// The offline Converse stand-in: checks the signature, then answers as the LLM stand-in does,
/// reading Converse's content blocks (`text`, `image`, `document`).
fn converse_stand_in(
    region: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = testkit::http_recorder::RecordedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), ToString::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect::<BTreeMap<_, _>>(),
        body: body.to_vec(),
    };
    let (access_key, secret_key) = super::bedrock::LOCAL_CREDENTIALS;
    if let Err(reason) =
        testkit::bedrock::check_sigv4(&request, (access_key, secret_key), "bedrock", region)
    {
        return (
            StatusCode::FORBIDDEN,
            [("x-amzn-ErrorType", "InvalidSignatureException")],
            axum::Json(json!({"message": format!("The request signature we calculated does not match: {reason}")})),
        )
            .into_response();
    }
    let converse: Value = serde_json::from_slice(&body).unwrap_or_default();
    let messages = converse["messages"].as_array().cloned().unwrap_or_default();
    let user_turns: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    let texts: Vec<String> = user_turns
        .iter()
        .map(|m| converse_text(&m["content"]))
        .collect();
    let files = user_turns
        .last()
        .map(|m| converse_files(&m["content"]))
        .unwrap_or_default();
    axum::Json(json!({
        "output": {"message": {"role": "assistant", "content": [{"text": stand_in_answer(&texts, &files)}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
        "metrics": {"latencyMs": 0},
    }))
    .into_response()
}

/// The text blocks of a Converse turn, joined.
fn converse_text(content: &Value) -> String {
    let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
    blocks
        .iter()
        .filter_map(|block| block["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// " I received …" for the image and document blocks of a Converse turn; empty without any.
fn converse_files(content: &Value) -> String {
    let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
    let size = |block: &Value| match base64::engine::general_purpose::STANDARD
        .decode(block["source"]["bytes"].as_str().unwrap_or_default())
    {
        Ok(bytes) => format!("{} bytes", bytes.len()),
        Err(_) => "not valid base64".to_owned(),
    };
    let files: Vec<String> = blocks
        .iter()
        .filter_map(|block| {
            let (what, file) = match (block.get("image"), block.get("document")) {
                (Some(image), _) => ("an image", image),
                (None, Some(document)) => ("a document", document),
                (None, None) => return None,
            };
            let format = file["format"].as_str().unwrap_or("?");
            Some(format!("{what} ({format}, {})", size(file)))
        })
        .collect();
    match files.is_empty() {
        true => String::new(),
        false => format!(" I received {}.", files.join(" and ")),
    }
}

/// The offline transcription stand-in: reads the multipart form as OpenAI's endpoint does and
/// answers with a transcript that says it is a stand-in's, and how many bytes it heard.
async fn transcription_stand_in(mut form: Multipart) -> Response {
    let mut audio_bytes = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let is_file = field.name() == Some("file");
                match field.bytes().await {
                    Ok(bytes) if is_file => audio_bytes = Some(bytes.len()),
                    Ok(_) => {}
                    Err(error) => return bad_request(&error.to_string()),
                }
            }
            Ok(None) => break,
            Err(error) => return bad_request(&error.to_string()),
        }
    }
    match audio_bytes {
        Some(size) => axum::Json(
            json!({"text": format!("[stand-in transcript] a voice note of {size} bytes")}),
        )
        .into_response(),
        None => bad_request("the form has no `file` part"),
    }
}

/// OpenAI's error answer.
fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_of_a_turn_are_named_with_their_type_and_size() {
        let content = json!([
            {"type": "text", "text": "[image] what is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC"}},
            {"type": "file", "file": {"filename": "document-2.pdf", "file_data": "data:application/pdf;base64,JVBERg=="}}
        ]);
        assert_eq!(turn_text(&content), "[image] what is it?");
        assert_eq!(
            files_received(&content),
            " I received an image (image/png, 3 bytes) and a file (application/pdf, 4 bytes)."
        );
        assert_eq!(files_received(&json!("plain text")), "");
        assert_eq!(turn_text(&json!("plain text")), "plain text");
    }

    #[test]
    fn the_blocks_of_a_converse_turn_are_read_as_the_chat_parts_are() {
        let content = json!([
            {"text": "[image] what is it?"},
            {"image": {"format": "png", "source": {"bytes": "AAEC"}}},
            {"document": {"format": "pdf", "name": "document-1", "source": {"bytes": "JVBERg=="}}},
            {"cachePoint": {"type": "default"}}
        ]);
        assert_eq!(converse_text(&content), "[image] what is it?");
        assert_eq!(
            converse_files(&content),
            " I received an image (png, 3 bytes) and a document (pdf, 4 bytes)."
        );
        assert_eq!(converse_files(&json!([{"text": "hi"}])), "");
        assert_eq!(
            stand_in_answer(&["Hi".into(), "Again".into()], ""),
            "[offline stand-in] You said: \"Again\". I remember 1 earlier message(s); your first was: \"Hi\"."
        );
    }
}
