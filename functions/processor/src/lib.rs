//! The processor function: reads inbound messages from the FIFO queue, answers each
//! conversation's new messages with one LLM call and one reply, exactly once, and remembers the
//! conversation.
//!
//! Per SQS batch (`Processor::handle`, in this file):
//! 1. Records are read and grouped by conversation (FIFO group) in queue order (`plan.rs`);
//!    conversations run concurrently, each conversation's records in order. A record that
//!    cannot be read fails alone.
//! 2. Late delivery failures first (`undelivered.rs`): a `failed` status of an earlier reply,
//!    which the webhook queues in the conversation's group, marks the remembered reply
//!    undelivered, so that the model is not told the user read it.
//!    Business app echoes (`handoff.rs`): a person answering from the WhatsApp Business app on
//!    the bot's number pauses the bot for that conversation.
//! 3. The conversation's messages form one burst, which `Processor::handle_burst` takes through
//!    the steps below, in order. The number's behaviour (`number.rs`): the stack's settings
//!    overridden by the number's settings item, with its own knowledge and tools
//!    (`number_documents.rs`). Follow id changes (`identity.rs`): a `user_changed_user_id`
//!    notice moves the memory and the deduplication of the conversation under the user's
//!    previous id to the new one.
//! 4. Claim the burst (`claim.rs`): what each message gets is decided (`plan.rs`: an answer;
//!    `UNSUPPORTED_MESSAGE` for media and other kinds the bot cannot read; nothing for
//!    reactions, edits and system notices, which cost no claim; nothing for a message
//!    older than `MAX_MESSAGE_AGE_HOURS`, which is claimed and marked done with no turn, so
//!    that no redelivery answers it); the message ids are claimed and the history read in one
//!    store call; ids already answered are skipped, ids another invocation holds are retried
//!    later.
//!    A number that is not enabled leaves the burst unanswered. Messages from the number's
//!    handoff agent are theirs (`agent.rs`): relayed to a user, or handing a conversation back.
//!    Then the controls (`controls.rs`): STOP/START opt-out, `/reset`, the kill switch and the
//!    rate limit answer without media or a model call when they apply (the opt-out and the
//!    rate window are read with the claim). Then the handoff (`handoff.rs`): a conversation with
//!    a person is relayed instead of answered, one given back has the person's words folded into
//!    its history, and a handoff keyword hands it to the number's agent.
//!    Then hear the claimed voice notes (`listen.rs`): each is downloaded from Meta and
//!    transcribed, and its transcript (`[voice note] …`) is what the model and the memory see;
//!    look at the images (`look.rs`): each is downloaded and goes to the model with the user's
//!    turn, which (and the memory) holds `[image] caption` in its place; and read the
//!    documents (`read.rs`): a PDF goes to the model the same way, plain text and CSV as text.
//! 5. Turn the claimed messages into the model's input (`prompt.rs`): their texts become one
//!    user turn after the history; a reply remembered as undelivered is shown to the model as
//!    such. A step that changes what a message gets by reading its media (transcribing a voice
//!    note, downloading an image) goes between the claim and this one.
//! 6. Get the answer (`answer.rs`): the persona grounded in the business's knowledge document
//!    when one is configured (`ground.rs`), the user's turn with the passages a Bedrock knowledge
//!    base finds for it when one is configured (`retrieve.rs`; the memory keeps the user's words
//!    only), then the LLM call, with a best-effort "read + typing" signal beside it; when a
//!    tools file is configured (`tools.rs`), the model may call the business's HTTP APIs, in up to
//!    `TOOLS_MAX_ROUNDS` rounds, the rounds kept with the claim from the first side-effecting
//!    call so that a retry never calls again; the fallback message when the LLM stays down on a
//!    message's last delivery.
//! 7. Deliver it (`reply.rs`): the answer, then `UNSUPPORTED_MESSAGE` when due, each split into
//!    several WhatsApp messages when over 4096 UTF-16 units.
//! 8. Record the turns (`record.rs`): the new turns, the answer with the ids of the WhatsApp
//!    messages it went out as, are stored and the ids marked done in a second store call.
//!
//! Budgets: the LLM runs until [`REPLY_RESERVE`] before the deadline, each send until
//! [`STORE_RESERVE`] before it (no send starts later), and each store write after the LLM
//! answered gets [`STORE_RESERVE`] of its own, so that a reply that went out is recorded.
//!
//! An answer is bought once: when the reply cannot be sent for now (an error that may pass
//! before anything went out, or too little time left to send and record), the claims are
//! released with the answer kept (`PendingAnswer`), and the retry's claim gets it back: the
//! retry sends the rest of that answer without asking the LLM; newer messages claimed with it are
//! given back and retried after it, to keep order. A send whose outcome is unknown (Meta may
//! have received it: a timeout once connected, a connection lost mid-call) is never resent:
//! nothing more is sent, the turn is recorded as sent, the messages are marked done and
//! `reply_outcome_unknown` is logged at ERROR. A duplicate, or a second different answer, is
//! worse than the rare lost reply.
//!
//! Failures are reported as batch item failures: when a burst is retried, its records from the
//! first that was not done, so that order is kept; other conversations are unaffected. A record
//! that cannot be read (a bad body, a newer version, a body naming another conversation than
//! its FIFO group) fails alone: the conversation's other records are answered, and it reaches
//! the dead-letter queue after the redrive count. A step that gives up on a burst releases its
//! claims, so that the retry can take them at once.

mod agent;
mod answer;
pub mod as_text;
mod claim;
pub mod config;
pub mod controls;
mod ground;
pub mod handoff;
mod identity;
mod listen;
mod look;
pub mod media_lane;
pub mod number;
pub mod number_documents;
pub mod plan;
mod prompt;
mod read;
mod record;
mod reply;
mod retrieve;
pub mod tools;
mod undelivered;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use shared::clock::now_epoch_ms;
use shared::conversation::dynamodb::DynamoDbConversationStore;
use shared::conversation::{ConversationStore, HistoryPolicy, PendingAnswer};
use shared::handoff::HandoffStore;
use shared::inbound::InboundMessage;
use shared::knowledge::{DocumentStore, DocumentUri, Knowledge};
use shared::knowledge_base::{BedrockKnowledgeBase, KnowledgeBaseSettings};
use shared::llm::{ChatModels, Llm, LlmSettings, ModelChoice};
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::number_book::DynamoDbNumbers;
use shared::queue_body::{BusinessEcho, DeliveryFailure, QueueBody};
use shared::retry::Backoff;
use shared::secrets::Secrets;
use shared::tools::{Toolbox, configure_client};
use shared::transcription::{OpenAiTranscriber, Transcriber, TranscriptionSettings};
use shared::whatsapp::WhatsApp;
use shared::whatsapp::graph::{GraphApi, GraphSettings};
use shared::whatsapp::media::MediaSource;
use tokio::time::Instant;

use claim::{Claimed, ClaimedBurst};
pub use config::Config;
pub use controls::Controls;
use media_lane::MediaLanes;
use plan::QueuedRecord;
use prompt::Input;
use reply::BurstOutcome;

// The unit tests (`use super::*`) take the ports' types from here.
#[cfg(test)]
use shared::{
    clock::now_epoch_seconds,
    conversation::{Role, StoreError, Turn},
    llm::{LlmError, Prompt},
    whatsapp::{Recipient, WhatsAppError},
};

/// About how many bytes of text make one token, for the knowledge's budget.
const BYTES_PER_TOKEN: usize = 4;

/// Time kept back from the invocation's deadline for sending the reply and storing the turns
/// after the LLM answers.
pub const REPLY_RESERVE: Duration = Duration::from_secs(6);

/// Time kept back from the invocation's deadline for the store write after the reply: no send
/// starts or runs later than this before the deadline, and each store write after the LLM
/// answered (the record, a release) is given at most this long.
pub const STORE_RESERVE: Duration = Duration::from_secs(2);

/// How long after the invocation's deadline a claim lapses, so that a retry can take over the
/// messages of an invocation that crashed.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// What the processor says and how it behaves, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// The business number's name (its settings' `name`), for the agent's notices.
    pub name: Option<String>,
    /// Whether the number is answered (its settings' `enabled`; the stack's is `true`).
    pub enabled: bool,
    /// The model the number chose (its settings' `llm`); `None` for the stack's.
    pub llm: Option<ModelChoice>,
    /// The handoff to a person (`handoff.rs`).
    pub handoff: handoff::HandoffSettings,
    /// The number's own knowledge document (its settings' `knowledge_uri`); `None` for the
    /// stack's (`number_documents.rs`).
    pub knowledge_uri: Option<DocumentUri>,
    /// The number's own tools file (its settings' `tools_uri`); `None` for the stack's.
    pub tools_uri: Option<DocumentUri>,
    /// The persona (`SYSTEM_PROMPT`).
    pub system_prompt: String,
    /// Sent when the LLM stays down on a message's last delivery (`FALLBACK_MESSAGE`).
    pub fallback_message: String,
    /// Sent for messages the bot cannot read (`UNSUPPORTED_MESSAGE`).
    pub unsupported_message: String,
    /// Sent when a voice note cannot be heard (`VOICE_NOTE_FAILED_MESSAGE`).
    pub voice_note_failed_message: String,
    /// Whether the model can see images (`VISION`): they go to it with their captions; without,
    /// a caption alone is answered.
    pub vision: bool,
    /// Whether the model takes video inline (Gemini's do): videos then go to it as images do.
    pub video: bool,
    /// Whether voice notes go to the model as audio (Gemini hears them) instead of being
    /// transcribed.
    pub audio_inline: bool,
    /// The queue's redrive maximum (`MAX_RECEIVE_COUNT`): a record received this many times is
    /// on its last delivery.
    pub max_receive_count: u32,
    /// Messages sent longer ago than this are marked done unanswered (`MAX_MESSAGE_AGE_HOURS`);
    /// `None` for no limit.
    pub max_message_age: Option<Duration>,
    /// How many bursts may hold media at once (`media_lane.rs`).
    pub media_lanes: usize,
    /// The controls every conversation has: opt-out, reset, the kill switch, the rate limit
    /// (`controls.rs`).
    pub controls: Controls,
}

/// The invocation being served.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Lambda's request id, part of every claim token.
    pub request_id: String,
    /// When the invocation must be done.
    pub deadline: Instant,
    /// The same deadline in seconds since the Unix epoch, for claim leases.
    pub deadline_epoch: i64,
}

impl Invocation {
    /// The deadline with `reserve` kept back from it: when a step that must leave `reserve` for
    /// the steps after it has to end.
    pub fn deadline_before(&self, reserve: Duration) -> Instant {
        self.deadline.checked_sub(reserve).unwrap_or(self.deadline)
    }

    /// The invocation described by Lambda's context.
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        let deadline_ms = i64::try_from(context.deadline).unwrap_or(i64::MAX);
        let remaining_ms = deadline_ms.saturating_sub(now_epoch_ms()).max(0);
        Self::new(
            &context.request_id,
            Duration::from_millis(remaining_ms.unsigned_abs()),
        )
    }

    /// An invocation with `remaining` time left.
    pub fn new(request_id: &str, remaining: Duration) -> Self {
        Self {
            request_id: request_id.to_owned(),
            deadline: Instant::now() + remaining,
            deadline_epoch: (now_epoch_ms()
                + i64::try_from(remaining.as_millis()).unwrap_or(i64::MAX / 2))
                / 1000,
        }
    }
}

/// The processor as deployed: DynamoDB, the configured LLM provider, Meta's Graph API and an
/// OpenAI-compatible transcription endpoint.
pub type DeployedProcessor<S> =
    Processor<DynamoDbConversationStore, ChatModels<S>, GraphApi<S>, OpenAiTranscriber<S>>;

/// Trusts Mozilla's root certificates, compiled in (`webpki-root-certs`): reading the system's
/// store at every cold start cost milliseconds (README "Cold start"). With `SSL_CERT_FILE` set,
/// the system's store instead, for a model server behind a private certificate authority.
fn with_root_certificates(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    if std::env::var_os("SSL_CERT_FILE").is_some() {
        return builder;
    }
    let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok());
    builder.tls_certs_only(roots)
}

/// Builds the processor that `config` describes, over `dynamodb` and `secrets`, with Bedrock's
/// client (when it is the provider) from `aws`. No network I/O: secrets are read on first use.
pub fn build<S: Secrets + 'static>(
    config: &Config,
    aws: &aws_config::SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: Arc<S>,
) -> Result<DeployedProcessor<S>, reqwest::Error> {
    // One HTTP client, reused by both APIs and across invocations; timeouts are set per request.
    let http = with_root_certificates(reqwest::Client::builder())
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let store = DynamoDbConversationStore::new(
        dynamodb.clone(),
        config.table_name.clone(),
        HistoryPolicy::new(config.history_max_messages, config.context_ttl_days),
    );
    let settings = LlmSettings {
        base_url: config.llm_base_url.clone(),
        model: config.llm_model.clone(),
        timeout: config.llm_timeout,
        backoff: Backoff::default(),
        guardrail: config.llm_guardrail.clone(),
        api_key_secret: None,
    };
    let llm = ChatModels::new(
        config.llm_provider,
        http.clone(),
        aws,
        settings,
        secrets.clone(),
    );
    let transcriber = OpenAiTranscriber::new(
        http.clone(),
        TranscriptionSettings {
            base_url: config.transcription_base_url.clone(),
            model: config.transcription_model.clone(),
            timeout: config.llm_timeout,
            backoff: Backoff::default(),
        },
        secrets.clone(),
    );
    let graph = GraphApi::new(
        http,
        GraphSettings {
            base_url: config.meta_api_base_url.clone(),
            api_version: config.meta_api_version.clone(),
            timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
        },
        secrets.clone(),
    );
    let behaviour = Behaviour {
        name: None,
        enabled: true,
        llm: None,
        handoff: config.handoff.clone(),
        knowledge_uri: None,
        tools_uri: None,
        system_prompt: config.system_prompt.clone(),
        fallback_message: config.fallback_message.clone(),
        unsupported_message: config.unsupported_message.clone(),
        voice_note_failed_message: config.voice_note_failed_message.clone(),
        vision: config.vision,
        video: config.llm_provider == shared::llm::Provider::Gemini,
        audio_inline: config.audio_inline,
        max_receive_count: config.max_receive_count,
        max_message_age: config.max_message_age,
        media_lanes: media_lane::lanes_for_memory(config.memory_mb),
        controls: config.controls.clone(),
    };
    let mut processor = Processor::new(store, llm, graph, transcriber, behaviour);
    if config.number_settings {
        processor = processor.with_numbers(number::Numbers::new(
            DynamoDbNumbers::new(dynamodb, config.table_name.clone()),
            number::report_invalid,
        ));
    }
    ground(processor, config, aws, secrets)
}

/// `processor` with what grounds it in the business, as `config` says: the knowledge document,
/// the Bedrock knowledge base, the tools (with their own HTTP client, which follows no redirect).
fn ground<S: Secrets + 'static>(
    mut processor: DeployedProcessor<S>,
    config: &Config,
    aws: &aws_config::SdkConfig,
    secrets: Arc<S>,
) -> Result<DeployedProcessor<S>, reqwest::Error> {
    if let Some(uri) = &config.knowledge_uri {
        processor = processor.with_knowledge(Knowledge::new(
            DocumentStore::new(uri, aws),
            config.knowledge_refresh,
            config.knowledge_max_tokens.saturating_mul(BYTES_PER_TOKEN),
        ));
    }
    if let Some(id) = &config.knowledge_base_id {
        processor = processor.with_knowledge_base(BedrockKnowledgeBase::new(
            aws,
            KnowledgeBaseSettings {
                knowledge_base_id: id.clone(),
                top_k: config.knowledge_base_top_k,
                attempt_timeout: KNOWLEDGE_BASE_ATTEMPT_TIMEOUT,
                backoff: Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(1),
                    max_attempts: 3,
                },
            },
        ));
    }
    if let Some(uri) = &config.tools_uri {
        processor = processor.with_tools(Toolbox::new(
            DocumentStore::new(uri, aws),
            config.knowledge_refresh,
            tools_client()?,
            secrets.clone(),
            config.tools_max_rounds,
        ));
    }
    if config.number_settings {
        let (refresh, rounds) = (config.knowledge_refresh, config.tools_max_rounds);
        let make_toolbox: number_documents::MakeToolbox = Box::new(move |source| {
            // Built when a number's tools file is first used; a client that cannot be built
            // (no TLS roots) is the default one, which the tools' calls then report.
            let client = tools_client().unwrap_or_default();
            Toolbox::new(source, refresh, client, secrets.clone(), rounds)
        });
        processor = processor.with_number_documents(number_documents::NumberDocuments::new(
            aws,
            config.knowledge_refresh,
            config.knowledge_max_tokens.saturating_mul(BYTES_PER_TOKEN),
            make_toolbox,
        ));
    }
    Ok(processor)
}

/// The HTTP client of the business's tools, which follows no redirect.
fn tools_client() -> Result<reqwest::Client, reqwest::Error> {
    configure_client(with_root_certificates(reqwest::Client::builder()))
        .connect_timeout(Duration::from_secs(5))
        .build()
}

/// The limit of one `Retrieve` attempt; all of them end within `retrieve::RETRIEVAL_BUDGET`.
const KNOWLEDGE_BASE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The processor, over its ports: the store, the model, WhatsApp (sending, and the media users
/// send) and the transcriber; and the business's knowledge document and knowledge base, when
/// there are.
pub struct Processor<C, L, W, T> {
    store: C,
    llm: L,
    whatsapp: W,
    transcriber: T,
    behaviour: Arc<Behaviour>,
    numbers: Option<number::Numbers>,
    media_lanes: MediaLanes,
    knowledge: Option<Arc<Knowledge<DocumentStore>>>,
    knowledge_base: Option<BedrockKnowledgeBase>,
    tools: Option<Arc<Toolbox>>,
    number_documents: Option<number_documents::NumberDocuments>,
}

impl<C: ConversationStore + HandoffStore, L: Llm, W: WhatsApp + MediaSource, T: Transcriber>
    Processor<C, L, W, T>
{
    /// A processor over the given store, model, WhatsApp client and transcriber.
    pub fn new(store: C, llm: L, whatsapp: W, transcriber: T, behaviour: Behaviour) -> Self {
        Self {
            store,
            llm,
            whatsapp,
            transcriber,
            media_lanes: MediaLanes::new(behaviour.media_lanes),
            knowledge: None,
            knowledge_base: None,
            tools: None,
            number_documents: None,
            numbers: None,
            behaviour: Arc::new(behaviour),
        }
    }

    /// The same processor, answering each number with its settings from `numbers`
    /// (`number.rs`).
    pub fn with_numbers(mut self, numbers: number::Numbers) -> Self {
        self.numbers = Some(numbers);
        self
    }

    /// The same processor, grounding the model's answers in `knowledge` (`ground.rs`).
    pub fn with_knowledge(mut self, knowledge: Knowledge<DocumentStore>) -> Self {
        self.knowledge = Some(Arc::new(knowledge));
        self
    }

    /// The same processor, giving the model the passages `knowledge_base` finds for each user's
    /// turn (`retrieve.rs`).
    pub fn with_knowledge_base(mut self, knowledge_base: BedrockKnowledgeBase) -> Self {
        self.knowledge_base = Some(knowledge_base);
        self
    }

    /// The same processor, offering the model the tools of `toolbox` (`tools.rs`).
    pub fn with_tools(mut self, toolbox: Toolbox) -> Self {
        self.tools = Some(Arc::new(toolbox));
        self
    }

    /// The same processor, grounding a number whose settings name their own knowledge document
    /// or tools file in those (`number_documents.rs`).
    pub fn with_number_documents(mut self, documents: number_documents::NumberDocuments) -> Self {
        self.number_documents = Some(documents);
        self
    }

    /// Handles one SQS batch. Returns the records to retry and the invocation's metrics.
    pub async fn handle(
        &self,
        event: &SqsEvent,
        invocation: &Invocation,
    ) -> (SqsBatchResponse, Metrics) {
        let groups = plan::group_by_conversation(plan::read_records(event));
        let results = join_all(
            groups
                .iter()
                .map(|records| self.handle_conversation(records, invocation)),
        )
        .await;
        let mut response = SqsBatchResponse::default();
        let mut metrics = Metrics::default();
        for (failed, conversation_metrics) in results {
            metrics.merge(conversation_metrics);
            response
                .batch_item_failures
                .extend(failed.into_iter().map(|id| {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    failure
                }));
        }
        metrics.count("RecordsFailed", response.batch_item_failures.len() as u64);
        let consumed = self.store.take_consumed();
        metrics.add("DynamoDbReadUnits", consumed.read_units);
        metrics.add("DynamoDbWriteUnits", consumed.write_units);
        (response, metrics)
    }

    /// Handles one conversation's records; returns the SQS ids of the records to retry, in queue
    /// order. A record that cannot be read fails alone (it reaches the dead-letter queue after
    /// the redrive count); late delivery failures are taken in first, each on its own; the
    /// conversation's messages are answered as one burst.
    async fn handle_conversation(
        &self,
        records: &[QueuedRecord],
        invocation: &Invocation,
    ) -> (Vec<String>, Metrics) {
        let mut metrics = Metrics::default();
        let mut failed: Vec<&str> = Vec::new();
        let (burst, failures, echoes) = partition(records, &mut failed);
        for (record, failure) in failures {
            if self.mark_undelivered(failure, &mut metrics).await.is_err() {
                failed.push(&record.sqs_message_id);
            }
        }
        for (record, echo) in echoes {
            if self.pause_for_echo(echo, &mut metrics).await.is_err() {
                failed.push(&record.sqs_message_id);
            }
        }
        if !burst.is_empty() {
            metrics.count("MessagesHandled", burst.len() as u64);
            let (outcome, done) = self.handle_burst(&burst, invocation, &mut metrics).await;
            if let BurstOutcome::Retry = outcome {
                let retry_from = burst
                    .iter()
                    .position(|(_, m)| !done.contains(&m.id))
                    .unwrap_or(burst.len());
                failed.extend(
                    burst[retry_from..]
                        .iter()
                        .map(|(r, _)| r.sqs_message_id.as_str()),
                );
            }
        }
        let failed = records
            .iter()
            .filter(|r| failed.contains(&r.sqs_message_id.as_str()))
            .map(|r| r.sqs_message_id.clone())
            .collect();
        (failed, metrics)
    }

    /// Handles one conversation's readable records as one burst, step by step. Returns the
    /// outcome and the message ids that were already done before this invocation.
    async fn handle_burst(
        &self,
        burst: &[(&QueuedRecord, &InboundMessage)],
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> (BurstOutcome, Vec<String>) {
        if self.follow_id_changes(burst, metrics).await.is_err() {
            return (BurstOutcome::Retry, Vec::new());
        }
        let Ok(behaviour) = self.behaviour_for(&burst[0].1.phone_number_id).await else {
            return (BurstOutcome::Retry, Vec::new());
        };
        let mut claimed = match self.claim(burst, behaviour, invocation, metrics).await {
            Claimed::Ready(claimed) => *claimed,
            Claimed::Ended(outcome, done) => return (outcome, done),
        };
        let Ok(answer) = self.get_answer(&mut claimed, invocation, metrics).await else {
            return self.retry(claimed).await;
        };
        let sent_answer = match self.reply(&claimed, &answer, invocation, metrics).await {
            Ok(sent_answer) => sent_answer,
            Err(undelivered) => {
                let pending = PendingAnswer {
                    message_ids: claimed.claim.claimed.clone(),
                    replies: answer.replies,
                    parts_sent: undelivered.parts_sent,
                };
                // Bought now, sent by the retry: counted once, here.
                self.count_tokens(&claimed, answer.tokens).await;
                return self.retry_with(claimed, Some(pending)).await;
            }
        };
        let count = self.count_tokens(&claimed, answer.tokens);
        let record = self.record(&claimed, answer.user_turn, sent_answer);
        tokio::join!(count, record);
        self.forget_folded(&claimed).await;
        tracing::info!(event = LogEvent::BurstHandled.as_str(), user = %claimed.user, messages = claimed.messages.len(),
            replies = answer.replies.len(), "conversation answered");
        answered(claimed)
    }

    /// The claimed burst's answer: a control's (`controls.rs`), or, after the media steps, the
    /// model's. `Err(Retry)` when a step failed in a way that may pass.
    async fn get_answer(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<answer::Answer, reply::Retry> {
        if !claimed.behaviour.enabled {
            tracing::info!(event = LogEvent::NumberDisabled.as_str(), user = %claimed.user,
                "the number's settings say enabled: false; the messages are marked done unanswered");
            return Ok(answer::Answer::nothing());
        }
        if let Some(answer) = self.agent_messages(claimed, invocation, metrics).await? {
            return Ok(answer);
        }
        if let Some(answer) = self.control(claimed, metrics).await? {
            return Ok(answer);
        }
        if let Some(answer) = self.handoff(claimed, invocation, metrics).await? {
            return Ok(answer);
        }
        self.take_in_media(claimed, invocation, metrics).await?;
        let input = Input::of(&claimed.messages);
        self.answer(claimed, input, invocation, metrics).await
    }

    /// Gives up on a claimed burst for now: releases its claims so that the retry can take them
    /// at once.
    async fn retry(&self, claimed: ClaimedBurst<'_>) -> (BurstOutcome, Vec<String>) {
        self.retry_with(claimed, None).await
    }

    /// Gives up on a claimed burst for now, keeping `pending`, the answer to send on retry.
    async fn retry_with(
        &self,
        claimed: ClaimedBurst<'_>,
        pending: Option<PendingAnswer>,
    ) -> (BurstOutcome, Vec<String>) {
        let (conversation, token) = (&claimed.conversation, &claimed.token);
        self.release(
            conversation,
            token,
            &claimed.claim.claimed,
            pending.as_ref(),
        )
        .await;
        (BurstOutcome::Retry, claimed.claim.done)
    }
}

/// A conversation's readable records, in queue order: its messages (the burst), its late
/// delivery failures and its business app echoes. The SQS ids of records that cannot be read go
/// to `failed`, logged.
#[allow(
    clippy::type_complexity,
    reason = "three lists of pairs, named at the call"
)]
fn partition<'a>(
    records: &'a [QueuedRecord],
    failed: &mut Vec<&'a str>,
) -> (
    Vec<(&'a QueuedRecord, &'a InboundMessage)>,
    Vec<(&'a QueuedRecord, &'a DeliveryFailure)>,
    Vec<(&'a QueuedRecord, &'a BusinessEcho)>,
) {
    let (mut burst, mut failures, mut echoes) = (Vec::new(), Vec::new(), Vec::new());
    for record in records {
        match &record.body {
            Ok(QueueBody::Message(message)) => burst.push((record, message)),
            Ok(QueueBody::DeliveryFailure(failure)) => failures.push((record, failure)),
            Ok(QueueBody::BusinessEcho(echo)) => echoes.push((record, echo)),
            Err(error) => {
                tracing::error!(event = LogEvent::RecordUnreadable.as_str(), sqs_message_id = %record.sqs_message_id,
                    receive_count = record.receive_count, error = %error,
                    "queue record cannot be processed; it is retried alone and then dead-lettered");
                failed.push(&record.sqs_message_id);
            }
        }
    }
    (burst, failures, echoes)
}

impl<C, L, W: MediaSource, T: Transcriber> Processor<C, L, W, T> {
    /// The media steps, in order: a media lane, voice notes, images, documents. `Err(Retry)`
    /// when one failed in a way that may pass.
    async fn take_in_media(
        &self,
        claimed: &mut ClaimedBurst<'_>,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<(), reply::Retry> {
        media_lane::silence_media_of_resumed(claimed);
        self.take_media_lane(claimed, invocation).await?;
        self.listen(claimed, invocation, metrics).await?;
        self.look(claimed, invocation, metrics).await?;
        self.read(claimed, invocation, metrics).await?;
        media_lane::release_unless_inline(claimed);
        Ok(())
    }
}

/// How an answered burst ends: handled, unless some of its messages were deferred behind a
/// pending answer; then those are retried (the answered ones count as done).
fn answered(claimed: ClaimedBurst<'_>) -> (BurstOutcome, Vec<String>) {
    let mut done = claimed.claim.done;
    if claimed.deferred.is_empty() {
        return (BurstOutcome::Handled, done);
    }
    done.extend(claimed.claim.claimed);
    (BurstOutcome::Retry, done)
}

#[cfg(test)]
mod tests;
