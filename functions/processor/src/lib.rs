//! The processor function: reads inbound messages from the FIFO queue, answers each
//! conversation's new messages with one LLM call and one reply, exactly once, and remembers the
//! conversation.
//!
//! Per SQS batch:
//! 1. Records are grouped by conversation (FIFO group) in queue order; conversations run
//!    concurrently, each conversation's records in order.
//! 2. A conversation's records form one burst. Its message ids are claimed and its history read
//!    in one store call; ids already answered are skipped, ids another invocation holds are
//!    retried later.
//! 3. The burst's texts get one LLM call (after a best-effort "read + typing" signal) and one
//!    reply, split into several WhatsApp messages when it is over 4096 UTF-16 units; media and
//!    other kinds the bot cannot read get `UNSUPPORTED_MESSAGE`; reactions, edits and system
//!    notices get nothing.
//! 4. The new turns are stored and the ids marked done in a second store call.
//!
//! Failures are reported as batch item failures: the failing record and every later record of
//! its conversation, so that order is kept; other conversations are unaffected.

pub mod config;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use shared::clock::{now_epoch_ms, now_epoch_seconds};
use shared::conversation::dynamodb::DynamoDbConversationStore;
use shared::conversation::{
    ClaimRequest, CompleteRequest, ConversationStore, HistoryPolicy, Role, StoreError, Turn,
};
use shared::inbound::InboundMessage;
use shared::llm::{ChatModel, Llm, LlmError, LlmSettings, Prompt, PromptTurn};
use shared::metrics::Metrics;
use shared::privacy::mask;
use shared::retry::Backoff;
use shared::secrets::Secrets;
use shared::whatsapp::graph::{GraphApi, GraphSettings};
use shared::whatsapp::split::{MAX_TEXT_UTF16, split_message};
use shared::whatsapp::{MetaErrorClass, Recipient, WhatsApp, WhatsAppError};
use tokio::time::Instant;

pub use config::Config;
use plan::{QueuedRecord, Treatment};

/// Time kept back from the invocation's deadline for sending the reply and storing the turns
/// after the LLM answers.
pub const REPLY_RESERVE: Duration = Duration::from_secs(6);

/// How long after the invocation's deadline a claim lapses, so that a retry can take over the
/// messages of an invocation that crashed.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// What the processor says and how it behaves, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// The persona (`SYSTEM_PROMPT`).
    pub system_prompt: String,
    /// Sent when the LLM stays down on a message's last delivery (`FALLBACK_MESSAGE`).
    pub fallback_message: String,
    /// Sent for messages the bot cannot read (`UNSUPPORTED_MESSAGE`).
    pub unsupported_message: String,
    /// The queue's redrive maximum (`MAX_RECEIVE_COUNT`): a record received this many times is
    /// on its last delivery.
    pub max_receive_count: u32,
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

/// The processor as deployed: DynamoDB, the configured LLM provider and Meta's Graph API.
pub type DeployedProcessor<S> = Processor<DynamoDbConversationStore, ChatModel<S>, GraphApi<S>>;

/// Builds the processor that `config` describes, over `dynamodb` and `secrets`. No network I/O:
/// secrets are read on first use.
pub fn build<S: Secrets>(
    config: &Config,
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: Arc<S>,
) -> Result<DeployedProcessor<S>, reqwest::Error> {
    // One HTTP client, reused by both APIs and across invocations; timeouts are set per request.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let store = DynamoDbConversationStore::new(
        dynamodb,
        config.table_name.clone(),
        HistoryPolicy::new(config.history_max_messages, config.context_ttl_days),
    );
    let settings = LlmSettings {
        base_url: config.llm_base_url.clone(),
        model: config.llm_model.clone(),
        timeout: config.llm_timeout,
        backoff: Backoff::default(),
    };
    let llm = ChatModel::new(config.llm_provider, http.clone(), settings, secrets.clone());
    let graph = GraphApi::new(
        http,
        GraphSettings {
            base_url: config.meta_api_base_url.clone(),
            api_version: config.meta_api_version.clone(),
            timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
        },
        secrets,
    );
    let behaviour = Behaviour {
        system_prompt: config.system_prompt.clone(),
        fallback_message: config.fallback_message.clone(),
        unsupported_message: config.unsupported_message.clone(),
        max_receive_count: config.max_receive_count,
    };
    Ok(Processor::new(store, llm, graph, behaviour))
}

/// The processor, over its four ports.
pub struct Processor<C, L, W> {
    store: C,
    llm: L,
    whatsapp: W,
    behaviour: Behaviour,
}

/// How a conversation's burst ended.
enum BurstOutcome {
    /// Everything was handled (answered, skipped or finally undeliverable): no record fails.
    Handled,
    /// The burst must be retried: its records fail, from the first that was not already done.
    Retry,
}

impl<C: ConversationStore, L: Llm, W: WhatsApp> Processor<C, L, W> {
    /// A processor over the given store, model and WhatsApp client.
    pub fn new(store: C, llm: L, whatsapp: W, behaviour: Behaviour) -> Self {
        Self {
            store,
            llm,
            whatsapp,
            behaviour,
        }
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
        (response, metrics)
    }

    /// Handles one conversation's records; returns the SQS ids of the records to retry.
    async fn handle_conversation(
        &self,
        records: &[QueuedRecord],
        invocation: &Invocation,
    ) -> (Vec<String>, Metrics) {
        let mut metrics = Metrics::default();
        // Records after an unreadable one must wait for it, to keep order; it goes to the DLQ.
        let readable = records.iter().take_while(|r| r.message.is_ok()).count();
        let mut failed: Vec<String> = Vec::new();
        if let Some(bad) = records.get(readable) {
            if let Err(error) = &bad.message {
                tracing::error!(event = "record_unreadable", sqs_message_id = %bad.sqs_message_id, error = %error,
                    "queue record cannot be processed; it and the conversation's later records are retried");
            }
            failed.extend(records[readable..].iter().map(|r| r.sqs_message_id.clone()));
        }
        let burst: Vec<(&QueuedRecord, &InboundMessage)> = records[..readable]
            .iter()
            .filter_map(|r| r.message.as_ref().ok().map(|m| (r, m)))
            .collect();
        if !burst.is_empty() {
            metrics.count("MessagesHandled", burst.len() as u64);
            let (outcome, done) = self.handle_burst(&burst, invocation, &mut metrics).await;
            if let BurstOutcome::Retry = outcome {
                let retry_from = burst
                    .iter()
                    .position(|(_, m)| !done.contains(&m.id))
                    .unwrap_or(burst.len());
                let retried: Vec<String> = burst[retry_from..]
                    .iter()
                    .map(|(r, _)| r.sqs_message_id.clone())
                    .collect();
                failed.splice(0..0, retried);
            }
        }
        (failed, metrics)
    }

    /// Handles one conversation's readable records as one burst. Returns the outcome and the
    /// message ids that were already done before this invocation.
    async fn handle_burst(
        &self,
        burst: &[(&QueuedRecord, &InboundMessage)],
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> (BurstOutcome, Vec<String>) {
        let first = burst[0].1;
        let conversation = first.conversation();
        let user = mask(first.sender.id());
        let treatments: Vec<Treatment> = burst
            .iter()
            .map(|(_, m)| plan::treatment(&m.content))
            .collect();
        if treatments.iter().all(|t| *t == Treatment::Silent) {
            tracing::info!(event = "no_reply_needed", user = %user, messages = burst.len(), "nothing to answer");
            return (BurstOutcome::Handled, Vec::new());
        }

        let ids: Vec<String> = burst.iter().map(|(_, m)| m.id.clone()).collect();
        let token = claim_token(&invocation.request_id);
        let now = now_epoch_seconds();
        let lease_until = invocation.deadline_epoch + CLAIM_MARGIN.as_secs() as i64;
        let claim = match self
            .store
            .claim(ClaimRequest {
                conversation: &conversation,
                message_ids: &ids,
                token: &token,
                lease_until,
                now,
            })
            .await
        {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(event = "store_failed", user = %user, error = %error, "could not claim messages");
                return (BurstOutcome::Retry, Vec::new());
            }
        };
        metrics.count("DuplicatesSkipped", claim.done.len() as u64);
        if !claim.done.is_empty() {
            tracing::info!(event = "duplicates_skipped", user = %user, count = claim.done.len(), "messages already answered");
        }
        if !claim.held_elsewhere.is_empty() {
            tracing::warn!(event = "held_elsewhere", user = %user, count = claim.held_elsewhere.len(),
                "another invocation is answering some of these messages; retrying later");
            self.release(&conversation, &token, &claim.claimed).await;
            return (BurstOutcome::Retry, claim.done);
        }
        if claim.claimed.is_empty() {
            return (BurstOutcome::Handled, claim.done);
        }

        // Only the messages claimed now are answered.
        let claimed: Vec<(&InboundMessage, &Treatment)> = burst
            .iter()
            .zip(&treatments)
            .filter(|((_, m), _)| claim.claimed.contains(&m.id))
            .map(|((_, m), t)| (*m, t))
            .collect();
        let texts: Vec<&str> = claimed
            .iter()
            .filter_map(|(_, t)| match t {
                Treatment::Answer(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let unsupported = claimed.iter().any(|(_, t)| **t == Treatment::Unsupported);
        let last_delivery = burst
            .iter()
            .any(|(r, _)| r.receive_count >= self.behaviour.max_receive_count);
        let Some(recipient) = Recipient::of(&first.sender) else {
            tracing::error!(event = "no_recipient", "message has no sender to answer");
            return (BurstOutcome::Handled, claim.done);
        };

        // The answer goes first: if a later part fails, what the user got of it is remembered.
        let mut replies: Vec<String> = Vec::new();
        let mut user_turn = None;
        if !texts.is_empty() {
            if texts.len() > 1 {
                metrics.count("MessagesCoalesced", texts.len() as u64 - 1);
            }
            let user_text = texts.join("\n");
            let last_answered = claimed
                .iter()
                .rev()
                .find(|(_, t)| matches!(t, Treatment::Answer(_)));
            if let Some((message, _)) = last_answered
                && let Err(error) = self
                    .whatsapp
                    .mark_read_and_typing(&message.phone_number_id, &message.id)
                    .await
            {
                tracing::warn!(event = "typing_failed", error = %error, "could not mark read / show typing");
            }
            match self
                .answer(&claim.history, &user_text, invocation, metrics)
                .await
            {
                Ok(answer) => replies.push(answer),
                Err(LlmError::NoAnswer(reason)) => {
                    tracing::warn!(event = "llm_no_answer", user = %user, reason = %reason, "the LLM gave no answer; sending the fallback");
                    replies.push(self.behaviour.fallback_message.clone());
                }
                Err(error) if last_delivery => {
                    tracing::error!(event = "llm_failed_final", user = %user, error = %error,
                        "the LLM stayed down through the last delivery; the user gets the fallback message");
                    replies.push(self.behaviour.fallback_message.clone());
                }
                Err(error) => {
                    tracing::warn!(event = "llm_failed", user = %user, error = %error, "the LLM failed; the messages will be retried");
                    self.release(&conversation, &token, &claim.claimed).await;
                    return (BurstOutcome::Retry, claim.done);
                }
            }
            user_turn = Some(Turn {
                role: Role::User,
                text: user_text,
                at: now,
            });
        }
        if unsupported {
            replies.push(self.behaviour.unsupported_message.clone());
        }

        let phone_number_id = &first.phone_number_id;
        let delivery = self
            .send_all(phone_number_id, &recipient, &replies, invocation, metrics)
            .await;
        let answer_index = user_turn.as_ref().map(|_| 0);
        let (sent_answer, outcome) = match delivery {
            Delivery::Sent => (
                answer_index.and_then(|i| replies.get(i).cloned()),
                BurstOutcome::Handled,
            ),
            Delivery::Final(error) => {
                tracing::error!(event = "reply_undeliverable", user = %user, error_code = error.code(), error = %error,
                    "Meta refused the reply for good; the messages are marked done");
                (None, BurstOutcome::Handled)
            }
            Delivery::Partial { error, delivered } => {
                tracing::error!(event = "reply_cut_short", user = %user, error_code = error.code(), error = %error,
                    "part of the reply was sent and the rest failed; the messages are marked done to avoid a repeat");
                let answer = answer_index
                    .and_then(|i| delivered.get(i).cloned())
                    .filter(|a| !a.is_empty());
                (answer, BurstOutcome::Handled)
            }
            Delivery::Failed(error) => {
                let class = error.class();
                if class == MetaErrorClass::TokenExpired {
                    tracing::error!(event = "meta_token_expired", error_code = error.code(), error = %error,
                        "the Meta access token expired or was revoked: rotate META_ACCESS_TOKEN");
                } else {
                    tracing::error!(event = "reply_failed", user = %user, error_code = error.code(), error = %error,
                        "the reply could not be sent; the messages will be retried");
                }
                self.release(&conversation, &token, &claim.claimed).await;
                return (BurstOutcome::Retry, claim.done);
            }
        };

        let mut new_turns: Vec<Turn> = user_turn.into_iter().collect();
        if let Some(answer) = sent_answer {
            new_turns.push(Turn {
                role: Role::Assistant,
                text: answer,
                at: now_epoch_seconds(),
            });
        }
        let complete = CompleteRequest {
            conversation: &conversation,
            token: &token,
            message_ids: &claim.claimed,
            history: claim.history.clone(),
            new_turns,
            stale_ids: claim.stale_ids.clone(),
            now: now_epoch_seconds(),
        };
        if let Err(error) = self.store.complete(complete).await {
            // The reply went out: retrying the records would answer twice. Keep them handled.
            let event = if error == StoreError::ClaimLost {
                "claim_lost"
            } else {
                "store_failed"
            };
            tracing::error!(event, user = %user, error = %error,
                "the reply was sent but the conversation could not be stored");
        }
        tracing::info!(event = "burst_handled", user = %user, messages = claimed.len(), replies = replies.len(), "conversation answered");
        (outcome, claim.done)
    }

    /// Asks the LLM, leaving [`REPLY_RESERVE`] of the invocation for the reply.
    async fn answer(
        &self,
        history: &[Turn],
        user_text: &str,
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Result<String, LlmError> {
        let turns = history
            .iter()
            .map(|t| PromptTurn {
                role: t.role,
                text: t.text.clone(),
            })
            .chain(std::iter::once(PromptTurn {
                role: Role::User,
                text: user_text.to_owned(),
            }));
        let prompt = Prompt::new(self.behaviour.system_prompt.clone(), turns);
        let started = Instant::now();
        let llm_deadline = invocation
            .deadline
            .checked_sub(REPLY_RESERVE)
            .unwrap_or(invocation.deadline);
        let result = self.llm.complete(&prompt, llm_deadline).await;
        metrics.duration_ms("LlmLatency", started.elapsed().as_millis() as u64);
        match &result {
            Ok(completion) => {
                metrics.count("LlmTokensIn", completion.input_tokens.unwrap_or_default());
                metrics.count("LlmTokensOut", completion.output_tokens.unwrap_or_default());
            }
            Err(_) => metrics.count("LlmErrors", 1),
        }
        result.map(|completion| completion.text)
    }

    /// Sends each reply, split into parts WhatsApp accepts, in order.
    async fn send_all(
        &self,
        phone_number_id: &str,
        to: &Recipient,
        replies: &[String],
        invocation: &Invocation,
        metrics: &mut Metrics,
    ) -> Delivery {
        let mut delivered: Vec<String> = Vec::new();
        for reply in replies {
            let mut parts_sent: Vec<String> = Vec::new();
            for part in split_message(reply, MAX_TEXT_UTF16) {
                match self
                    .whatsapp
                    .send_text(phone_number_id, to, &part, invocation.deadline)
                    .await
                {
                    Ok(_) => {
                        metrics.count("RepliesSent", 1);
                        parts_sent.push(part);
                    }
                    Err(error) => {
                        if let Some(code) = error.code() {
                            metrics.count_by("MetaErrors", "ErrorCode", code.to_string(), 1);
                        }
                        let nothing_sent = delivered.is_empty() && parts_sent.is_empty();
                        delivered.push(parts_sent.join("\n\n"));
                        return match (error.class().is_final(), nothing_sent) {
                            (true, _) => Delivery::Final(error),
                            (false, true) => Delivery::Failed(error),
                            (false, false) => Delivery::Partial { error, delivered },
                        };
                    }
                }
            }
            delivered.push(parts_sent.join("\n\n"));
        }
        Delivery::Sent
    }

    /// Gives back claims this invocation will not complete, so that a retry can take them at
    /// once. Best effort: an unreleased claim lapses with its lease.
    async fn release(
        &self,
        conversation: &shared::inbound::ConversationKey,
        token: &str,
        ids: &[String],
    ) {
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.store.release(conversation, token, ids).await {
            tracing::warn!(event = "release_failed", error = %error, "could not release claims; they lapse with their lease");
        }
    }
}

/// How sending a burst's replies ended.
enum Delivery {
    /// Every part of every reply was sent.
    Sent,
    /// Meta refused for good (outside the 24-hour window, undeliverable).
    Final(WhatsAppError),
    /// Nothing was sent and the error may pass: retry the records.
    Failed(WhatsAppError),
    /// Some parts were sent before an error that may pass; `delivered` holds, per reply, what
    /// the user got of it.
    Partial {
        error: WhatsAppError,
        delivered: Vec<String>,
    },
}

fn claim_token(request_id: &str) -> String {
    format!("{request_id}:{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests;
