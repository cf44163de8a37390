//! A harness for the processor as deployed (`processor::build`): DynamoDB and Secrets Manager in
//! moto's server, and local HTTP servers standing in for the LLM and Meta's Graph API, which
//! record every request so that the tests assert on what was actually sent.
#![allow(dead_code)] // Each test binary includes this module and uses a different part of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use processor::{Config, DeployedProcessor, Invocation};
use serde_json::{Value, json};
use shared::env_config::Env;
use shared::secrets::SecretsManagerSecrets;
use testkit::CallCounter;
use testkit::http_recorder::{Canned, RecordedRequest, RecordingServer};

pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const USER: &str = "15551234567";
/// A second business number of the stack, with its own Graph token in the harness's secret
/// (`META_ACCESS_TOKEN_<id>`), as a number of another Meta app has.
pub const SECOND_PHONE_NUMBER_ID: &str = "209876543210987";
/// The second number's token.
pub const SECOND_NUMBER_TOKEN: &str = "meta-token-of-the-second-number";
/// The business API key the harness's secret holds, for the tools' `{"secret": "SHOP_API_KEY"}`
/// headers.
pub const SHOP_API_KEY: &str = "shop-key-for-tests";

pub struct Harness {
    pub processor: DeployedProcessor<SecretsManagerSecrets>,
    pub llm: RecordingServer,
    pub meta: RecordingServer,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub dynamodb_calls: CallCounter,
    pub table: String,
}

/// An OpenAI-compatible stand-in: answers "You said: <last user message>".
pub fn openai_answer(request: &RecordedRequest) -> Canned {
    let body = request.json();
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].clone())
        .unwrap_or_default();
    let text = format!("You said: {}", last.as_str().unwrap_or_default());
    Canned::json(
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}}),
    )
}

/// A Gemini stand-in: answers "Gemini heard: <last user text>".
pub fn gemini_answer(request: &RecordedRequest) -> Canned {
    let body = request.json();
    let last = body["contents"]
        .as_array()
        .and_then(|c| c.last())
        .map(|c| c["parts"][0]["text"].clone())
        .unwrap_or_default();
    let text = format!("Gemini heard: {}", last.as_str().unwrap_or_default());
    Canned::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 6, "totalTokenCount": 36}}),
    )
}

/// The bytes the Graph API stand-in serves for every media id: the start of an OGG file.
pub const VOICE_NOTE_BYTES: &[u8] = b"OggS\x00\x02 stand-in voice note";

/// A Graph API stand-in: accepts read receipts and sends, and serves media in Meta's two steps
/// (the media id's details, then the file at the URL they give, both with the bearer token).
pub fn meta_answer(request: &RecordedRequest) -> Canned {
    if request.method == "GET" {
        return media_answer(request);
    }
    if request.json()["status"] == "read" {
        Canned::json(200, json!({"success": true}))
    } else {
        Canned::json(
            200,
            json!({"messaging_product": "whatsapp", "contacts": [{"input": USER, "wa_id": USER}],
            "messages": [{"id": format!("wamid.out-{}", rand_suffix())}]}),
        )
    }
}

/// The bytes of a tiny JPEG the Graph API stand-in serves for media ids starting with `img`.
pub const PHOTO_BYTES: &[u8] = b"\xff\xd8\xff\xe0 stand-in photo";

/// The bytes of a tiny PDF the Graph API stand-in serves for media ids starting with `pdf`.
pub const PDF_BYTES: &[u8] = b"%PDF-1.4 stand-in menu";

/// What the stand-in serves for media `id`: a photo for `img…` ids, a PDF for `pdf…`, else a
/// voice note.
fn media_file(id: &str) -> (&'static str, &'static [u8]) {
    if id.starts_with("img") {
        ("image/jpeg", PHOTO_BYTES)
    } else if id.starts_with("pdf") {
        ("application/pdf", PDF_BYTES)
    } else {
        ("audio/ogg", VOICE_NOTE_BYTES)
    }
}

fn media_answer(request: &RecordedRequest) -> Canned {
    let token = request.header("authorization").unwrap_or_default();
    if token != "Bearer meta-token-for-tests" && token != format!("Bearer {SECOND_NUMBER_TOKEN}") {
        return Canned::json(
            401,
            json!({"error": {"message": "Invalid OAuth access token", "code": 190}}),
        );
    }
    let id = request.path.rsplit('/').next().unwrap_or_default();
    let (mime_type, bytes) = media_file(id);
    if request.path.starts_with("/lookaside/") {
        return Canned::bytes(200, mime_type, bytes.to_vec());
    }
    let host = request.header("host").unwrap_or_default();
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    Canned::json(
        200,
        json!({"messaging_product": "whatsapp", "url": format!("http://{host}/lookaside/{id}"),
            "mime_type": mime_type, "sha256": sha256, "file_size": bytes.len(), "id": id}),
    )
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

impl Harness {
    pub async fn new(provider: &str, extra: &[(&str, &str)]) -> Self {
        let answer = if provider == "gemini" {
            gemini_answer
        } else {
            openai_answer
        };
        Self::with_llm(provider, extra, answer).await
    }

    /// A harness whose LLM stand-in answers with `llm_answer`.
    pub async fn with_llm(
        provider: &str,
        extra: &[(&str, &str)],
        llm_answer: impl Fn(&RecordedRequest) -> Canned + Send + Sync + 'static,
    ) -> Self {
        let llm = RecordingServer::start(llm_answer).await;
        let llm_base = if provider == "gemini" {
            llm.url.clone()
        } else {
            format!("{}/v1", llm.url)
        };
        let model = if provider == "gemini" {
            "gemini-test"
        } else {
            "gpt-test"
        };
        let mut vars = vec![
            ("LLM_PROVIDER", provider),
            ("LLM_MODEL", model),
            ("LLM_BASE_URL", llm_base.as_str()),
        ];
        vars.extend_from_slice(extra);
        let aws = testkit::moto_config().await;
        let secret = json!({"META_APP_SECRET": "s", "META_VERIFY_TOKEN": "v", "META_ACCESS_TOKEN": "meta-token-for-tests",
            "LLM_API_KEY": "llm-key-for-tests", "SHOP_API_KEY": SHOP_API_KEY,
            format!("META_ACCESS_TOKEN_{SECOND_PHONE_NUMBER_ID}"): SECOND_NUMBER_TOKEN});
        Self::assemble(llm, &aws, &secret, &vars).await
    }

    /// A harness whose processor reaches Bedrock (`LLM_PROVIDER=bedrock`) at `stand_in`, signing
    /// with [`testkit::bedrock::ACCESS_KEY`] for [`testkit::bedrock::REGION`], as the AWS
    /// configuration it is built with says; its secret holds no `LLM_API_KEY`.
    pub async fn with_bedrock(
        stand_in: &testkit::bedrock::ConverseStandIn,
        extra: &[(&str, &str)],
    ) -> Self {
        let bedrock_aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&stand_in.url)
            .region(aws_config::Region::new(testkit::bedrock::REGION))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                testkit::bedrock::ACCESS_KEY,
                testkit::bedrock::SECRET_KEY,
                None,
                None,
                "test",
            ))
            .load()
            .await;
        let mut vars = vec![("LLM_PROVIDER", "bedrock")];
        vars.extend_from_slice(extra);
        let secret = json!({"META_APP_SECRET": "s", "META_VERIFY_TOKEN": "v", "META_ACCESS_TOKEN": "meta-token-for-tests",
            "SHOP_API_KEY": SHOP_API_KEY});
        Self::assemble(stand_in.server().clone(), &bedrock_aws, &secret, &vars).await
    }

    /// The processor over a fresh table and a secret holding `secret`, configured by `vars` over
    /// the harness's defaults, with `aws` as the AWS configuration `processor::build` gets.
    async fn assemble(
        llm: RecordingServer,
        aws: &aws_config::SdkConfig,
        secret: &Value,
        vars: &[(&str, &str)],
    ) -> Self {
        let meta = RecordingServer::start(meta_answer).await;
        let moto = testkit::moto_config().await;
        // One request at a time, so that conditional writes are atomic as in DynamoDB.
        let serialized = testkit::serial_proxy::serialized_moto_config().await;
        let (dynamodb, dynamodb_calls) = testkit::dynamodb_client_with_counter(&serialized);
        let table =
            testkit::create_table(&aws_sdk_dynamodb::Client::new(&moto), "conversations").await;
        let secrets_client = aws_sdk_secretsmanager::Client::new(&moto);
        let secret_arn =
            testkit::create_secret(&secrets_client, "processor", &secret.to_string()).await;
        let mut env: HashMap<String, String> = [
            ("TABLE_NAME", table.as_str()),
            ("SECRET_ID", secret_arn.as_str()),
            ("META_API_BASE_URL", meta.url.as_str()),
            ("SYSTEM_PROMPT", "You are a test assistant."),
            ("FALLBACK_MESSAGE", "Sorry, I can't answer right now."),
            ("LLM_TIMEOUT_SECONDS", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from(&Env::from_fn(move |name| env.get(name).cloned()))
            .expect("a valid config");
        let secrets = Arc::new(SecretsManagerSecrets::new(
            secrets_client,
            secret_arn,
            config.secrets_refresh,
        ));
        let processor = processor::build(&config, aws, dynamodb.clone(), secrets)
            .expect("the processor builds");
        Self {
            processor,
            llm,
            meta,
            dynamodb,
            dynamodb_calls,
            table,
        }
    }

    pub async fn handle(&self, event: &SqsEvent) -> SqsBatchResponse {
        self.handle_within(event, Duration::from_secs(60)).await
    }

    /// Handles `event` in an invocation with `remaining` time left.
    pub async fn handle_within(&self, event: &SqsEvent, remaining: Duration) -> SqsBatchResponse {
        self.processor
            .handle(event, &Invocation::new("test-request", remaining))
            .await
            .0
    }

    /// The texts sent to users, in order.
    pub fn sent_texts(&self) -> Vec<String> {
        self.meta
            .requests()
            .iter()
            .filter(|request| request.method == "POST")
            .map(RecordedRequest::json)
            .filter(|body| body["type"] == "text")
            .map(|body| body["text"]["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The claim item of `message_id`.
    pub async fn claim_item(&self, message_id: &str) -> HashMap<String, AttributeValue> {
        self.item(&shared::conversation::dynamodb::claim_key(message_id))
            .await
    }

    /// The stored exchanges of `user`'s conversation, oldest first: each `(expires_at, turns)`.
    pub async fn exchanges(&self, user: &str) -> Vec<(i64, Vec<StoredTurn>)> {
        let prefix = format!(
            "{}{PHONE_NUMBER_ID}:{user}#",
            shared::conversation::dynamodb::history::HISTORY_KEY_PREFIX
        );
        let items = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(pk, :prefix)")
            .expression_attribute_values(":prefix", AttributeValue::S(prefix))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        let number = |item: &HashMap<String, AttributeValue>, key: &str| -> i64 {
            item[key].as_n().unwrap().parse().unwrap()
        };
        let mut exchanges: Vec<(i64, i64, Vec<StoredTurn>)> = items
            .iter()
            .map(|item| {
                let turns = item["turns"]
                    .as_l()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_m().unwrap().clone())
                    .collect();
                (number(item, "n"), number(item, "expires_at"), turns)
            })
            .collect();
        exchanges.sort_by_key(|(n, _, _)| *n);
        exchanges
            .into_iter()
            .map(|(_, expires_at, turns)| (expires_at, turns))
            .collect()
    }

    /// The stored turns of `user`'s conversation, oldest first.
    pub async fn turns(&self, user: &str) -> Vec<StoredTurn> {
        self.exchanges(user)
            .await
            .into_iter()
            .flat_map(|(_, turns)| turns)
            .collect()
    }

    pub async fn item(&self, pk: &str) -> HashMap<String, AttributeValue> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_default()
    }

    /// The first layout's item of `user`'s conversation.
    pub async fn conversation_item(&self, user: &str) -> HashMap<String, AttributeValue> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key(
                "pk",
                AttributeValue::S(format!("conv#{PHONE_NUMBER_ID}:{user}")),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_default()
    }
}

pub fn record(
    sqs_id: &str,
    user: &str,
    message_id: &str,
    text: &str,
    receive_count: u32,
) -> SqsMessage {
    let content = json!({"type": "text", "body": text});
    content_record(sqs_id, user, message_id, content, receive_count)
}

/// A queued message of any `content` (the queue body's `content`) from `user`.
pub fn content_record(
    sqs_id: &str,
    user: &str,
    message_id: &str,
    content: Value,
    receive_count: u32,
) -> SqsMessage {
    let body = json!({"v": 1, "phone_number_id": PHONE_NUMBER_ID, "sender": {"wa_id": user}, "name": "Tester",
        "id": message_id, "timestamp": shared::clock::now_epoch_seconds() - 60, "content": content});
    let mut record = SqsMessage::default();
    record.message_id = Some(sqs_id.into());
    record.body = Some(body.to_string());
    record.attributes = HashMap::from([
        (
            "MessageGroupId".to_owned(),
            format!("{PHONE_NUMBER_ID}:{user}"),
        ),
        (
            "ApproximateReceiveCount".to_owned(),
            receive_count.to_string(),
        ),
    ]);
    record
}

/// `record` as sent to the business number `phone_number_id`: its body and its FIFO group.
pub fn to_number(mut record: SqsMessage, phone_number_id: &str) -> SqsMessage {
    let mut body: Value = serde_json::from_str(record.body.as_deref().unwrap_or_default()).unwrap();
    body["phone_number_id"] = phone_number_id.into();
    let user = body["sender"]["wa_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    record.body = Some(body.to_string());
    record.attributes.insert(
        "MessageGroupId".to_owned(),
        format!("{phone_number_id}:{user}"),
    );
    record
}

/// `event` with every body's timestamp set to a minute ago: the samples in `events/` carry fixed
/// timestamps, which `MAX_MESSAGE_AGE_HOURS` would find too old.
pub fn sent_now(mut event: SqsEvent) -> SqsEvent {
    for record in &mut event.records {
        let mut body: serde_json::Value =
            serde_json::from_str(record.body.as_deref().unwrap_or_default()).unwrap();
        body["timestamp"] = (shared::clock::now_epoch_seconds() - 60).into();
        record.body = Some(body.to_string());
    }
    event
}

pub fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

pub fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// A stored turn's attributes.
pub type StoredTurn = HashMap<String, AttributeValue>;

pub fn unique(prefix: &str) -> String {
    format!("wamid.{prefix}-{}", rand_suffix())
}
