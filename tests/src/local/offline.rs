//! The offline stand-ins for the models, used when no real model is configured: an LLM
//! (OpenAI's chat completions, and Bedrock's Converse for `LLM_PROVIDER=bedrock`) whose answer
//! shows what it was given, and a transcriber (OpenAI's `/audio/transcriptions`) whose
//! transcript says what it heard. They mark their answers as a stand-in's.
//!
//! With the local example ([`super::shop`]) the LLM stand-in also shows the flow a real model
//! would take: offered the `order_status` tool, it calls it for an order number (such as
//! `A-1001`) in the user's last turn, then answers with what the tool gave; asked a question
//! that a line of the knowledge in its system prompt covers, it quotes that line.

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

/// The tool the stand-ins call for an order number.
const ORDER_TOOL: &str = "order_status";

/// What the offline stand-ins say, given the text of each user turn, the files of the last and
/// the system prompt.
fn stand_in_answer(texts: &[String], files: &str, system: &str) -> String {
    let last = texts.last().map(String::as_str).unwrap_or_default();
    let mut answer = format!("[offline stand-in] You said: \"{last}\".{files}");
    answer.push_str(&knowledge_quote(system, last));
    if texts.len() > 1 {
        answer.push_str(&format!(
            " I remember {} earlier message(s); your first was: \"{}\".",
            texts.len() - 1,
            texts[0]
        ));
    }
    answer.push_str(&persona_named(system));
    answer
}

/// How the processor's built-in persona (`SYSTEM_PROMPT` unset) begins.
const BUILT_IN_PERSONA: &str = "You are a helpful assistant chatting on WhatsApp.";

/// The longest opening of a persona that the stand-ins repeat, in characters.
const PERSONA_SHOWN_CHARS: usize = 100;

/// ` Persona: "…"` with the first sentence of the persona `system` begins with (cut to
/// [`PERSONA_SHOWN_CHARS`]), so that which number's persona answered can be seen; empty for the
/// built-in persona or none.
fn persona_named(system: &str) -> String {
    let system = system.trim_start();
    if system.is_empty() || system.starts_with(BUILT_IN_PERSONA) {
        return String::new();
    }
    let line = system.lines().next().unwrap_or_default();
    let end = line
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?')
                && line[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map_or(line.len(), |(i, c)| i + c.len_utf8());
    let sentence: String = line[..end]
        .trim()
        .chars()
        .take(PERSONA_SHOWN_CHARS)
        .collect();
    format!(" Persona: \"{sentence}\"")
}

/// The offline LLM stand-in: a deterministic answer that shows what the model was given (the
/// text, the files that came with it), so that memory, bursts and media can be seen without an
/// account.
async fn llm_stand_in(body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    if let Some(step) = chat_tool_step(&request["tools"], &messages) {
        return chat_completion(&request["model"], step);
    }
    let system: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| turn_text(&m["content"]))
        .collect();
    let user_turns: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    let texts: Vec<String> = user_turns
        .iter()
        .map(|m| turn_text(&m["content"]))
        .collect();
    let files = user_turns
        .last()
        .map(|m| files_received(&m["content"]))
        .unwrap_or_default();
    let answer = stand_in_answer(&texts, &files, &system.join("\n"));
    chat_completion(&request["model"], Step::Answer(answer))
}

/// What the stand-in does with a turn beyond answering it.
#[derive(Debug, PartialEq)]
enum Step {
    /// Call [`ORDER_TOOL`] for this order number.
    CallOrderStatus(String),
    /// Answer in text.
    Answer(String),
}

/// A chat completion of `step`, as OpenAI answers.
fn chat_completion(model: &Value, step: Step) -> Response {
    let (message, finish_reason) = match step {
        Step::Answer(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Step::CallOrderStatus(order_id) => {
            let arguments = json!({ "order_id": order_id }).to_string();
            let call = json!({"id": "call_stand_in_1", "type": "function",
                "function": {"name": ORDER_TOOL, "arguments": arguments}});
            (
                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                "tool_calls",
            )
        }
    };
    axum::Json(
        json!({"id": "local-stand-in", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0}}),
    )
    .into_response()
}

/// The tool step of a chat request, if it has one: after tool results (the last messages), an
/// answer with what they gave; for a user's turn naming an order when [`ORDER_TOOL`] is
/// offered, a call of it.
fn chat_tool_step(tools: &Value, messages: &[Value]) -> Option<Step> {
    let last = messages.last()?;
    if last["role"] == "tool" {
        let mut results: Vec<(String, String)> = messages
            .iter()
            .rev()
            .take_while(|m| m["role"] == "tool")
            .map(|m| {
                let name = messages
                    .iter()
                    .filter_map(|m| m["tool_calls"].as_array())
                    .flatten()
                    .find(|call| call["id"] == m["tool_call_id"])
                    .and_then(|call| call["function"]["name"].as_str());
                (
                    name.unwrap_or("a tool").to_owned(),
                    turn_text(&m["content"]),
                )
            })
            .collect();
        results.reverse();
        return Some(Step::Answer(results_answer(&results)));
    }
    let offered = tools
        .as_array()?
        .iter()
        .any(|tool| tool["function"]["name"] == ORDER_TOOL);
    match last["role"] == "user" && offered {
        true => order_number(&turn_text(&last["content"])).map(Step::CallOrderStatus),
        false => None,
    }
}

/// The stand-in's answer from tool results (each a tool's name and what it gave).
fn results_answer(results: &[(String, String)]) -> String {
    let said: Vec<String> = results
        .iter()
        .map(|(name, content)| format!("{name} answered: {content}"))
        .collect();
    format!("[offline stand-in] {}", said.join(" "))
}

/// The first order number (a letter, a dash and 3 to 8 digits, such as `A-1001`) in `text`,
/// upper-cased.
fn order_number(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|word| {
            let bytes = word.as_bytes();
            bytes.len() >= 5
                && bytes.len() <= 10
                && bytes[0].is_ascii_alphabetic()
                && bytes[1] == b'-'
                && bytes[2..].iter().all(u8::is_ascii_digit)
        })
        .map(str::to_ascii_uppercase)
}

/// Words too common to tell what a question is about.
const COMMON_WORDS: [&str; 40] = [
    "what", "when", "where", "which", "while", "your", "with", "have", "does", "that", "this",
    "from", "about", "there", "their", "would", "could", "should", "will", "much", "many", "long",
    "they", "them", "then", "than", "been", "were", "into", "like", "just", "some", "only", "also",
    "more", "most", "very", "here", "tell", "please",
];

/// The words of `text` that may tell what it is about: lower-cased, of 4 letters or more, not
/// [`COMMON_WORDS`].
fn keywords(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 4 && !COMMON_WORDS.contains(&w.as_str()))
        .collect()
}

/// ` From what I was given: "…"` with the line of the `<knowledge>` in `system` that shares
/// the most keywords with `question` (a word matching another that starts with it: `return`,
/// `returns`), when `question` asks something (holds `?`) and a line shares any; else empty.
fn knowledge_quote(system: &str, question: &str) -> String {
    let knowledge = system
        .split_once("<knowledge>")
        .and_then(|(_, rest)| rest.split_once("</knowledge>"))
        .map(|(knowledge, _)| knowledge);
    let (Some(knowledge), true) = (knowledge, question.contains('?')) else {
        return String::new();
    };
    let asked = keywords(question);
    let score = |line: &str| {
        let words = keywords(line);
        asked
            .iter()
            .filter(|a| words.iter().any(|w| w.starts_with(*a) || a.starts_with(w)))
            .count()
    };
    let best = knowledge
        .lines()
        .map(|line| line.trim().trim_start_matches("- "))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| (score(line), line))
        .fold(
            (0, ""),
            |best, line| if line.0 > best.0 { line } else { best },
        );
    match best {
        (0, _) => String::new(),
        (_, line) => format!(" From what I was given: \"{line}\""),
    }
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
    if let Some(step) = converse_tool_step(&converse["toolConfig"], &messages) {
        return converse_answer(step);
    }
    let system = converse_text(&converse["system"]);
    let user_turns: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    let texts: Vec<String> = user_turns
        .iter()
        .map(|m| converse_text(&m["content"]))
        .collect();
    let files = user_turns
        .last()
        .map(|m| converse_files(&m["content"]))
        .unwrap_or_default();
    converse_answer(Step::Answer(stand_in_answer(&texts, &files, &system)))
}

/// Converse's answer of `step`.
fn converse_answer(step: Step) -> Response {
    let (content, stop_reason) = match step {
        Step::Answer(text) => (json!([{ "text": text }]), "end_turn"),
        Step::CallOrderStatus(order_id) => (
            json!([{"toolUse": {"toolUseId": "tooluse_stand_in_1", "name": ORDER_TOOL,
                "input": {"order_id": order_id}}}]),
            "tool_use",
        ),
    };
    axum::Json(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
        "metrics": {"latencyMs": 0},
    }))
    .into_response()
}

/// [`chat_tool_step`] for Converse, whose tool results are `toolResult` blocks of the last
/// (user) message, and whose calls are `toolUse` blocks of the assistant's.
fn converse_tool_step(tool_config: &Value, messages: &[Value]) -> Option<Step> {
    let last = messages.last().filter(|m| m["role"] == "user")?;
    let blocks = last["content"].as_array()?;
    let results: Vec<(String, String)> = blocks
        .iter()
        .filter_map(|block| block.get("toolResult"))
        .map(|result| {
            let name = messages
                .iter()
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .filter_map(|block| block.get("toolUse"))
                .find(|call| call["toolUseId"] == result["toolUseId"])
                .and_then(|call| call["name"].as_str());
            (
                name.unwrap_or("a tool").to_owned(),
                result_text(&result["content"]),
            )
        })
        .collect();
    if !results.is_empty() {
        return Some(Step::Answer(results_answer(&results)));
    }
    let offered = tool_config["tools"]
        .as_array()?
        .iter()
        .any(|tool| tool["toolSpec"]["name"] == ORDER_TOOL);
    offered
        .then(|| order_number(&converse_text(&last["content"])))
        .flatten()
        .map(Step::CallOrderStatus)
}

/// A Converse tool result's content: its text blocks, and its JSON blocks written out.
fn result_text(content: &Value) -> String {
    let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
    blocks
        .iter()
        .filter_map(|block| match (&block["text"], &block["json"]) {
            (Value::String(text), _) => Some(text.clone()),
            (_, Value::Null) => None,
            (_, json) => Some(json.to_string()),
        })
        .collect::<Vec<_>>()
        .join(" ")
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
            stand_in_answer(&["Hi".into(), "Again".into()], "", ""),
            "[offline stand-in] You said: \"Again\". I remember 1 earlier message(s); your first was: \"Hi\"."
        );
    }

    const SYSTEM: &str = "Be kind.\n\n<knowledge>\n# Shop\n## Returns\n- Returning a faulty item \
        is free.\n- You may return any unused item within 30 days.\n</knowledge>";

    #[test]
    fn a_question_the_knowledge_covers_gets_its_best_line_quoted() {
        assert_eq!(
            knowledge_quote(SYSTEM, "How long do I have to return an unused item?"),
            " From what I was given: \"You may return any unused item within 30 days.\""
        );
        assert_eq!(
            stand_in_answer(&["Are returns free?".into()], "", SYSTEM),
            "[offline stand-in] You said: \"Are returns free?\". From what I was given: \"Returning a faulty item is free.\" Persona: \"Be kind.\""
        );
        // Not a question, nothing in common, or no knowledge: nothing is added.
        assert_eq!(knowledge_quote(SYSTEM, "I want to return an item"), "");
        assert_eq!(knowledge_quote(SYSTEM, "What is my name?"), "");
        assert_eq!(
            knowledge_quote("Be kind. Returns are free.", "Returns?"),
            ""
        );
        assert_eq!(knowledge_quote("<knowledge>", "Returns?"), "");
    }

    #[test]
    fn a_persona_other_than_the_built_in_one_is_named_by_its_first_sentence() {
        assert!(processor::config::DEFAULT_SYSTEM_PROMPT.starts_with(BUILT_IN_PERSONA));
        assert_eq!(persona_named(processor::config::DEFAULT_SYSTEM_PROMPT), "");
        assert_eq!(persona_named(""), "");
        let cafe = format!(
            "{}\n\n<knowledge>\nx\n</knowledge>",
            super::super::numbers::CAFE_PERSONA
        );
        assert_eq!(
            persona_named(&cafe),
            " Persona: \"Eres el barista de Café Luna, una cafetería de especialidad.\""
        );
        assert_eq!(
            stand_in_answer(&["hola".into()], "", &cafe),
            "[offline stand-in] You said: \"hola\". Persona: \"Eres el barista de Café Luna, una cafetería de especialidad.\""
        );
        // A version number is not the end of a sentence; a long first line is cut.
        assert_eq!(
            persona_named("Answer about v1.2 only! Then more."),
            " Persona: \"Answer about v1.2 only!\""
        );
        assert_eq!(
            persona_named(&"a".repeat(300)).len(),
            12 + PERSONA_SHOWN_CHARS
        );
    }

    fn tools() -> Value {
        json!([{"type": "function", "function": {"name": "order_status", "parameters": {}}}])
    }

    #[test]
    fn an_order_number_is_looked_up_when_the_tool_is_offered() {
        let ask = |text: &str| vec![json!({"role": "user", "content": text})];
        assert_eq!(
            chat_tool_step(&tools(), &ask("Where is my order a-1001?")),
            Some(Step::CallOrderStatus("A-1001".into()))
        );
        assert_eq!(chat_tool_step(&tools(), &ask("Where is my order?")), None);
        assert_eq!(chat_tool_step(&Value::Null, &ask("Order A-1001?")), None);
        assert_eq!(chat_tool_step(&json!([]), &ask("Order A-1001?")), None);
        assert_eq!(order_number("A-12, B-123456789, AB-1234"), None);
        assert_eq!(order_number("(Z-987)"), Some("Z-987".into()));
    }

    #[test]
    fn tool_results_are_answered_with_what_they_gave() {
        let messages = vec![
            json!({"role": "user", "content": "Where is A-1001?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "order_status", "arguments": "{}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "{\"status\":\"shipped\"}"}),
        ];
        assert_eq!(
            chat_tool_step(&tools(), &messages),
            Some(Step::Answer(
                "[offline stand-in] order_status answered: {\"status\":\"shipped\"}".into()
            ))
        );
    }

    #[test]
    fn converse_tool_use_and_results_are_read_from_their_blocks() {
        let config = json!({"tools": [{"toolSpec": {"name": "order_status"}}]});
        let ask = vec![json!({"role": "user", "content": [{"text": "Order A-1003, please"}]})];
        assert_eq!(
            converse_tool_step(&config, &ask),
            Some(Step::CallOrderStatus("A-1003".into()))
        );
        assert_eq!(converse_tool_step(&json!({}), &ask), None);
        let mut answered = ask.clone();
        answered.push(json!({"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "t1", "name": "order_status", "input": {}}}]}));
        answered.push(
            json!({"role": "user", "content": [{"toolResult": {"toolUseId": "t1",
            "content": [{"text": "{\"status\":\"delivered\"}"}]}}]}),
        );
        assert_eq!(
            converse_tool_step(&config, &answered),
            Some(Step::Answer(
                "[offline stand-in] order_status answered: {\"status\":\"delivered\"}".into()
            ))
        );
        assert_eq!(result_text(&json!([{"json": {"a": 1}}])), "{\"a\":1}");
    }
}
