//! Unit tests of the processor's orchestration over in-memory fakes of its ports. The same
//! behaviours run against DynamoDB in moto and local HTTP stand-ins for the LLM and Meta in
//! `tests/`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::conversation::{
    Claim, ClaimRequest, CompleteRequest, HistoryPolicy, MarkOutcome, MoveRequest, Moved,
    PendingAnswer, ToolRounds, UndeliveredRequest, UserStanding, mark_undelivered,
};
use shared::handoff::{AgentTurn, Handoff, OpenHandoff};
use shared::inbound::ConversationKey;
use shared::llm::Completion;
use shared::transcription::{Audio, TranscriptionError};
use shared::whatsapp::media::{Media, MediaError, MediaLimits};

use super::*;

impl<C: ConversationStore + HandoffStore, L: Llm, W: WhatsApp + MediaSource, T: Transcriber>
    Processor<C, L, W, T>
{
    /// Handles a batch of `records` in an invocation with a minute left.
    async fn run(&self, records: Vec<SqsMessage>) -> (SqsBatchResponse, Metrics) {
        self.handle(&event(records), &invocation()).await
    }
}

#[derive(Default)]
struct FakeStoreState {
    turns: HashMap<String, Vec<Turn>>,
    /// Per message id: (done, token, lease_until).
    claims: HashMap<String, (bool, String, i64)>,
    /// The answer kept with released claims.
    pending: Option<PendingAnswer>,
    /// The tool rounds kept with the claims.
    tool_rounds: Option<ToolRounds>,
    /// The conversations whose users opted out.
    opted_out: HashSet<String>,
    /// Messages counted per conversation (one window for the whole test).
    counted: HashMap<String, u64>,
    /// Tokens counted per conversation (one day for the whole test), and whether noticed.
    tokens: HashMap<String, (u64, bool)>,
    /// Handoffs per conversation, and the conversation of each reference.
    handoffs: HashMap<String, Handoff>,
    references: HashMap<String, String>,
    calls: usize,
}

#[derive(Default)]
struct FakeStore(Mutex<FakeStoreState>);

impl FakeStore {
    fn calls(&self) -> usize {
        self.0.lock().unwrap().calls
    }

    fn turns(&self, conversation: &str) -> Vec<Turn> {
        self.0
            .lock()
            .unwrap()
            .turns
            .get(conversation)
            .cloned()
            .unwrap_or_default()
    }
}

impl HandoffStore for FakeStore {
    async fn open_handoff(&self, request: OpenHandoff<'_>) -> Result<(Handoff, bool), StoreError> {
        let mut state = self.0.lock().unwrap();
        let key = request.conversation.as_str().to_owned();
        if let Some(open) = state
            .handoffs
            .get_mut(&key)
            .filter(|h| h.ended_at.is_none())
        {
            open.last_agent_at = request.now;
            return Ok((open.clone(), false));
        }
        let reference = (1000 + state.references.len()).to_string();
        state.references.insert(
            format!("{}#{reference}", request.phone_number_id),
            key.clone(),
        );
        let handoff = Handoff {
            reference,
            agent: request.agent.to_owned(),
            since: request.now,
            last_agent_at: request.now,
            ended_at: None,
            by: request.by.as_str().to_owned(),
            opened_by: request.message_id.to_owned(),
            turns: Vec::new(),
        };
        state.handoffs.insert(key, handoff.clone());
        Ok((handoff, true))
    }

    async fn find_handoff(
        &self,
        phone_number_id: &str,
        reference: &str,
    ) -> Result<Option<(ConversationKey, Handoff)>, StoreError> {
        let state = self.0.lock().unwrap();
        let Some(conv) = state
            .references
            .get(&format!("{phone_number_id}#{reference}"))
        else {
            return Ok(None);
        };
        let (number, user) = conv.split_once(':').unwrap();
        Ok(state
            .handoffs
            .get(conv)
            .filter(|h| h.ended_at.is_none())
            .map(|h| (ConversationKey::new(number, user), h.clone())))
    }

    async fn add_agent_turn(
        &self,
        conversation: &ConversationKey,
        _message_id: &str,
        turn: AgentTurn,
    ) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        if let Some(handoff) = state.handoffs.get_mut(conversation.as_str()) {
            handoff.last_agent_at = turn.at;
            handoff.turns.push(turn);
        }
        Ok(())
    }

    async fn end_handoff(
        &self,
        conversation: &ConversationKey,
        phone_number_id: &str,
        reference: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state
            .references
            .remove(&format!("{phone_number_id}#{reference}"));
        if let Some(handoff) = state.handoffs.get_mut(conversation.as_str()) {
            handoff.ended_at.get_or_insert(now);
        }
        Ok(())
    }

    async fn forget_handoff(&self, conversation: &ConversationKey) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        if state
            .handoffs
            .get(conversation.as_str())
            .is_some_and(|h| h.ended_at.is_some())
        {
            state.handoffs.remove(conversation.as_str());
        }
        Ok(())
    }
}

impl ConversationStore for FakeStore {
    async fn claim(&self, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let mut claim = Claim::default();
        for id in request.message_ids {
            match state.claims.get(id) {
                Some((true, _, _)) => claim.done.push(id.clone()),
                Some((false, token, lease)) if token != request.token && *lease >= request.now => {
                    claim.held_elsewhere.push(id.clone())
                }
                _ => {
                    state.claims.insert(
                        id.clone(),
                        (false, request.token.to_owned(), request.lease_until),
                    );
                    claim.claimed.push(id.clone());
                }
            }
        }
        claim.pending = state
            .pending
            .clone()
            .filter(|p| p.message_ids.iter().all(|id| claim.claimed.contains(id)));
        claim.tool_rounds = state
            .tool_rounds
            .clone()
            .filter(|r| r.message_ids.iter().all(|id| claim.claimed.contains(id)));
        claim.history = state
            .turns
            .get(request.conversation.as_str())
            .cloned()
            .unwrap_or_default();
        let key = request.conversation.as_str().to_owned();
        let counted = if request.rate_window_seconds > 0 {
            request.message_ids.len() as u64
        } else {
            0
        };
        *state.counted.entry(key.clone()).or_default() += counted;
        let (tokens_today, budget_noticed) = match request.budget_day {
            Some(_) => state.tokens.get(&key).copied().unwrap_or_default(),
            None => (0, false),
        };
        claim.handoff = state.handoffs.get(&key).cloned();
        claim.standing = UserStanding {
            opted_out: state.opted_out.contains(&key),
            in_window: state.counted.get(&key).copied().unwrap_or_default(),
            counted,
            tokens_today,
            budget_noticed,
        };
        Ok(claim)
    }

    async fn complete(&self, request: CompleteRequest<'_>) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        for id in request.message_ids {
            match state.claims.get(id) {
                Some((false, token, _)) if token == request.token => {}
                _ => return Err(StoreError::ClaimLost),
            }
        }
        for id in request.message_ids {
            state
                .claims
                .insert(id.clone(), (true, request.token.to_owned(), 0));
        }
        state.pending = None;
        state.tool_rounds = None;
        let policy = HistoryPolicy::new(6, 14);
        let turns = policy.retain(request.history, request.new_turns, request.now);
        state
            .turns
            .insert(request.conversation.as_str().to_owned(), turns);
        Ok(())
    }

    async fn move_conversation(&self, request: MoveRequest<'_>) -> Result<Moved, StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let moved = state
            .turns
            .remove(request.from.as_str())
            .unwrap_or_default();
        let kept = state.turns.remove(request.to.as_str()).unwrap_or_default();
        let policy = HistoryPolicy::new(6, 14);
        let turns = policy.merge(kept, moved.clone(), request.now);
        state.turns.insert(request.to.as_str().to_owned(), turns);
        // Message ids are global in this fake: they stay known under both keys.
        Ok(Moved {
            turns: moved.len(),
            message_ids: 0,
        })
    }

    async fn mark_undelivered(
        &self,
        request: UndeliveredRequest<'_>,
    ) -> Result<MarkOutcome, StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let Some(turns) = state.turns.get_mut(request.conversation.as_str()) else {
            return Ok(MarkOutcome::NotFound);
        };
        Ok(mark_undelivered(
            turns,
            request.reply_id,
            request.error_code,
        ))
    }

    async fn release(
        &self,
        _: &ConversationKey,
        token: &str,
        message_ids: &[String],
        pending: Option<&PendingAnswer>,
    ) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let held = |id: &String| matches!(state.claims.get(id), Some((false, t, _)) if t == token);
        if !message_ids.iter().all(held) {
            return Ok(());
        }
        for id in message_ids {
            state.claims.remove(id);
        }
        if let Some(pending) = pending {
            state.pending = Some(pending.clone());
        }
        Ok(())
    }

    async fn set_opted_out(
        &self,
        conversation: &ConversationKey,
        opted_out: bool,
        _: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let key = conversation.as_str().to_owned();
        if opted_out {
            state.opted_out.insert(key);
        } else {
            state.opted_out.remove(&key);
        }
        Ok(())
    }

    async fn add_tokens(
        &self,
        conversation: &ConversationKey,
        _: i64,
        tokens: u64,
        _: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let key = conversation.as_str().to_owned();
        state.tokens.entry(key).or_default().0 += tokens;
        Ok(())
    }

    async fn note_budget_notice(
        &self,
        conversation: &ConversationKey,
        _: i64,
        _: i64,
    ) -> Result<bool, StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let entry = state
            .tokens
            .entry(conversation.as_str().to_owned())
            .or_default();
        let first = !entry.1;
        entry.1 = true;
        Ok(first)
    }

    async fn forget_conversation(&self, conversation: &ConversationKey) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        state.turns.remove(conversation.as_str());
        Ok(())
    }

    async fn keep_tool_rounds(&self, token: &str, rounds: &ToolRounds) -> Result<(), StoreError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let first = rounds.message_ids.first();
        match first.and_then(|id| state.claims.get(id)) {
            Some((false, held, _)) if held == token => {}
            _ => return Err(StoreError::ClaimLost),
        }
        state.tool_rounds = Some(rounds.clone());
        Ok(())
    }
}

/// Answers from a script, then by echoing the user's last turn; records every prompt.
#[derive(Default)]
struct FakeLlm {
    script: Mutex<VecDeque<Result<Completion, LlmError>>>,
    prompts: Mutex<Vec<Prompt>>,
}

impl FakeLlm {
    fn scripted(results: Vec<Result<Completion, LlmError>>) -> Self {
        Self {
            script: Mutex::new(results.into()),
            ..Default::default()
        }
    }

    fn prompts(&self) -> Vec<Prompt> {
        self.prompts.lock().unwrap().clone()
    }
}

fn completion(text: &str) -> Completion {
    Completion {
        tool_calls: Vec::new(),
        text: text.into(),
        input_tokens: Some(10),
        output_tokens: Some(5),
    }
}

impl Llm for FakeLlm {
    async fn complete(&self, prompt: &Prompt, _deadline: Instant) -> Result<Completion, LlmError> {
        self.prompts.lock().unwrap().push(prompt.clone());
        if let Some(result) = self.script.lock().unwrap().pop_front() {
            return result;
        }
        let last = prompt
            .turns
            .last()
            .map(|t| t.text.clone())
            .unwrap_or_default();
        Ok(completion(&format!("echo: {last}")))
    }
}

/// Records what is sent; fails sends from a script.
#[derive(Default)]
struct FakeWhatsApp {
    failures: Mutex<VecDeque<Option<WhatsAppError>>>,
    sent: Mutex<Vec<(String, Recipient, String)>>,
    typing: Mutex<Vec<String>>,
    downloads: Mutex<Vec<String>>,
    media_failures: Mutex<VecDeque<MediaError>>,
}

impl FakeWhatsApp {
    fn failing(failures: Vec<Option<WhatsAppError>>) -> Self {
        Self {
            failures: Mutex::new(failures.into()),
            ..Default::default()
        }
    }

    fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, text)| text.clone())
            .collect()
    }
}

impl WhatsApp for FakeWhatsApp {
    async fn mark_read_and_typing(
        &self,
        _phone_number_id: &str,
        message_id: &str,
    ) -> Result<(), WhatsAppError> {
        self.typing.lock().unwrap().push(message_id.to_owned());
        Ok(())
    }

    async fn send_text(
        &self,
        phone_number_id: &str,
        to: &Recipient,
        body: &str,
        _deadline: Instant,
    ) -> Result<String, WhatsAppError> {
        if let Some(Some(error)) = self.failures.lock().unwrap().pop_front() {
            return Err(error);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push((phone_number_id.to_owned(), to.clone(), body.to_owned()));
        Ok(format!("wamid.out{}", sent.len()))
    }
}

fn meta_error(code: i64) -> WhatsAppError {
    WhatsAppError::Api {
        http_status: 400,
        code: Some(code),
        message: "scripted".into(),
        retry_after: None,
    }
}

/// Serves every media id as a few bytes of OGG, unless scripted to fail.
impl MediaSource for FakeWhatsApp {
    async fn download(
        &self,
        _phone_number_id: &str,
        media_id: &str,
        _limits: &MediaLimits,
        _deadline: Instant,
    ) -> Result<Media, MediaError> {
        self.downloads.lock().unwrap().push(media_id.to_owned());
        if let Some(error) = self.media_failures.lock().unwrap().pop_front() {
            return Err(error);
        }
        let mime_type = match media_id.split('-').next() {
            Some("img") => "image/jpeg",
            Some("pdf") => "application/pdf",
            Some("txt") => "text/plain",
            Some("zip") => "application/zip",
            Some("vid") => "video/mp4",
            _ => "audio/ogg",
        };
        Ok(Media {
            bytes: format!("OggS {media_id}").into_bytes(),
            mime_type: mime_type.into(),
        })
    }
}

/// Transcribes from a script, then says how many bytes it heard.
#[derive(Default)]
struct FakeTranscriber {
    script: Mutex<VecDeque<Result<String, TranscriptionError>>>,
    heard: Mutex<Vec<String>>,
}

impl Transcriber for FakeTranscriber {
    async fn transcribe(
        &self,
        audio: Audio<'_>,
        _deadline: Instant,
    ) -> Result<String, TranscriptionError> {
        self.heard
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(audio.bytes).into_owned());
        if let Some(result) = self.script.lock().unwrap().pop_front() {
            return result;
        }
        Ok(format!("a note of {} bytes", audio.bytes.len()))
    }
}

pub(crate) fn behaviour() -> Behaviour {
    Behaviour {
        name: None,
        enabled: true,
        llm: None,
        handoff: handoff::HandoffSettings {
            agent_number: None,
            keywords: vec!["HUMANO".into(), "HUMAN".into()],
            message: "A person will write to you.".into(),
            idle: Duration::from_secs(12 * 3600),
        },
        knowledge_uri: None,
        tools_uri: None,
        system_prompt: "You are kind.".into(),
        fallback_message: "Sorry, try later.".into(),
        unsupported_message: "I only read text.".into(),
        voice_note_failed_message: "Please type it.".into(),
        vision: true,
        video: false,
        audio_inline: false,
        max_receive_count: 5,
        max_message_age: Some(Duration::from_secs(24 * 3600)),
        media_lanes: 1,
        controls: Controls {
            stop_keywords: vec!["STOP".into(), "BAJA".into()],
            start_keywords: vec!["START".into(), "ALTA".into()],
            opted_out_message: "You are unsubscribed.".into(),
            opted_in_message: "Welcome back.".into(),
            reset_message: "Forgotten.".into(),
            rate_limit_per_minute: 0,
            rate_limited_message: "Slow down.".into(),
            maintenance_message: None,
            daily_token_budget: 0,
            budget_reached_message: "Enough for today.".into(),
        },
    }
}

type TestProcessor = Processor<FakeStore, FakeLlm, FakeWhatsApp, FakeTranscriber>;

fn processor(llm: FakeLlm, whatsapp: FakeWhatsApp) -> TestProcessor {
    Processor::new(
        FakeStore::default(),
        llm,
        whatsapp,
        FakeTranscriber::default(),
        behaviour(),
    )
}

fn invocation() -> Invocation {
    Invocation::new("req-1", Duration::from_secs(60))
}

fn content_record(
    sqs_id: &str,
    user: &str,
    message_id: &str,
    content: serde_json::Value,
    receive_count: u32,
) -> SqsMessage {
    // Sent a minute ago: within MAX_MESSAGE_AGE_HOURS.
    let body = serde_json::json!({"v": 1, "phone_number_id": "PNID", "sender": {"wa_id": user}, "id": message_id,
        "timestamp": now_epoch_seconds() - 60, "content": content});
    let mut record = SqsMessage::default();
    record.message_id = Some(sqs_id.into());
    record.body = Some(body.to_string());
    record.attributes = HashMap::from([
        ("MessageGroupId".to_owned(), format!("PNID:{user}")),
        (
            "ApproximateReceiveCount".to_owned(),
            receive_count.to_string(),
        ),
    ]);
    record
}

fn text_record(sqs_id: &str, user: &str, message_id: &str, text: &str) -> SqsMessage {
    content_record(
        sqs_id,
        user,
        message_id,
        serde_json::json!({"type": "text", "body": text}),
        1,
    )
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn a_second_message_is_answered_with_the_first_turn_in_the_prompt() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let (first, _) = p
        .run(vec![text_record("s1", "1555", "w1", "My name is Ana")])
        .await;
    assert!(failures(&first).is_empty());
    let (second, _) = p
        .run(vec![text_record("s2", "1555", "w2", "What is my name?")])
        .await;
    assert!(failures(&second).is_empty());

    let prompts = p.llm.prompts();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[1].system, "You are kind.");
    assert_eq!(
        crate::prompt::roles_and_texts(&prompts[1]),
        [
            (Role::User, "My name is Ana"),
            (Role::Assistant, "echo: My name is Ana"),
            (Role::User, "What is my name?")
        ]
    );
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: My name is Ana", "echo: What is my name?"]
    );
    let sent = p.whatsapp.sent.lock().unwrap();
    assert_eq!(
        (sent[0].0.as_str(), &sent[0].1),
        ("PNID", &Recipient::Phone("1555".into()))
    );
    assert_eq!(p.store.turns("PNID:1555").len(), 4);
}

#[tokio::test]
async fn a_duplicate_record_gets_no_second_llm_call_or_reply() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let batch = event(vec![text_record("s1", "1555", "w1", "hello")]);
    p.handle(&batch, &invocation()).await;
    let (response, metrics) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.llm.prompts().len(), 1);
    assert_eq!(p.whatsapp.texts().len(), 1);
    assert_eq!(metrics.counter("DuplicatesSkipped"), 1);
}

#[tokio::test]
async fn a_burst_gets_one_llm_call_one_reply_and_two_store_calls() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let batch = event(vec![
        text_record("s1", "1555", "w1", "Hi"),
        text_record("s2", "1555", "w2", "I need help"),
        text_record("s3", "1555", "w3", "with my order"),
    ]);
    let (response, metrics) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.llm.prompts().len(), 1);
    assert_eq!(
        p.llm.prompts()[0].turns.last().unwrap().text,
        "Hi\nI need help\nwith my order"
    );
    assert_eq!(p.whatsapp.texts(), ["echo: Hi\nI need help\nwith my order"]);
    assert_eq!(*p.whatsapp.typing.lock().unwrap(), ["w3"]);
    assert_eq!(p.store.calls(), 2, "claim + read, then write");
    assert_eq!(metrics.counter("MessagesCoalesced"), 2);
    assert_eq!(metrics.counter("MessagesHandled"), 3);
    assert_eq!(metrics.counter("RepliesSent"), 1);
    assert_eq!(metrics.counter("LlmTokensIn"), 10);
}

#[tokio::test]
async fn an_llm_outage_fails_the_records_until_the_last_delivery_sends_the_fallback() {
    let down = || {
        Err(LlmError::Status {
            status: 503,
            message: "overloaded".into(),
            retry_after: None,
        })
    };
    let p = processor(
        FakeLlm::scripted(vec![down(), down()]),
        FakeWhatsApp::default(),
    );
    let record = |count| {
        content_record(
            "s1",
            "1555",
            "w1",
            serde_json::json!({"type": "text", "body": "hi"}),
            count,
        )
    };

    let (response, _) = p.run(vec![record(1)]).await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(p.whatsapp.texts().is_empty());

    // The released claim lets the redelivery in at once; on the last receive the user hears back.
    let (response, _) = p.run(vec![record(5)]).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["Sorry, try later."]);
    let (again, _) = p.run(vec![record(5)]).await;
    assert!(failures(&again).is_empty());
    assert_eq!(
        p.whatsapp.texts().len(),
        1,
        "a message answered with the fallback is done"
    );
}

#[tokio::test]
async fn outside_the_24_hour_window_is_final_and_marked_done() {
    let p = processor(
        FakeLlm::default(),
        FakeWhatsApp::failing(vec![Some(meta_error(131_047))]),
    );
    let batch = event(vec![text_record("s1", "1555", "w1", "hi")]);
    let (response, metrics) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty());
    let (redelivered, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&redelivered).is_empty());
    assert!(p.whatsapp.texts().is_empty());
    assert_eq!(p.llm.prompts().len(), 1);
    let lines = metrics.render("NS", "processor", 0);
    assert!(
        lines.iter().any(|l| l.contains("\"ErrorCode\":\"131047\"")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_expired_token_fails_the_record() {
    let p = processor(
        FakeLlm::default(),
        FakeWhatsApp::failing(vec![Some(meta_error(190))]),
    );
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "hi")]).await;
    assert_eq!(failures(&response), ["s1"]);
}

#[tokio::test]
async fn a_long_answer_is_sent_as_several_messages_in_order() {
    let answer = format!("{}\n\n{}", "a".repeat(3000), "b".repeat(2000));
    let p = processor(
        FakeLlm::scripted(vec![Ok(completion(&answer))]),
        FakeWhatsApp::default(),
    );
    let (response, metrics) = p
        .run(vec![text_record("s1", "1555", "w1", "long please")])
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["a".repeat(3000), "b".repeat(2000)]);
    assert_eq!(metrics.counter("RepliesSent"), 2);
}

#[tokio::test]
async fn a_reply_cut_short_is_remembered_as_delivered_and_not_repeated() {
    let answer = format!("{}\n\n{}", "a".repeat(3000), "b".repeat(2000));
    let p = processor(
        FakeLlm::scripted(vec![Ok(completion(&answer))]),
        FakeWhatsApp::failing(vec![None, Some(meta_error(130_429))]),
    );
    let batch = event(vec![text_record("s1", "1555", "w1", "long please")]);
    let (response, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["a".repeat(3000)]);
    let turns = p.store.turns("PNID:1555");
    assert_eq!(turns.last().unwrap().text, "a".repeat(3000));
    p.handle(&batch, &invocation()).await;
    assert_eq!(p.whatsapp.texts().len(), 1);
}

#[tokio::test]
async fn conversations_keep_their_own_order_and_fail_alone() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let mut unreadable = text_record("b2", "2222", "wb2", "x");
    unreadable.body = Some("garbage".into());
    let batch = event(vec![
        text_record("a1", "1111", "wa1", "ana 1"),
        text_record("b1", "2222", "wb1", "bo 1"),
        text_record("a2", "1111", "wa2", "ana 2"),
        unreadable,
        text_record("b3", "2222", "wb3", "bo 3"),
    ]);
    let (response, _) = p.handle(&batch, &invocation()).await;
    // Bo's unreadable record fails alone, for the dead-letter queue; the rest is answered.
    assert_eq!(failures(&response), ["b2"]);
    let mut texts = p.whatsapp.texts();
    texts.sort();
    assert_eq!(texts, ["echo: ana 1\nana 2", "echo: bo 1\nbo 3"]);
}

#[tokio::test]
async fn an_unreadable_record_fails_alone_on_every_delivery_and_later_messages_are_answered() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let mut newer = content_record(
        "s1",
        "1555",
        "w1",
        serde_json::json!({"type": "text", "body": "x"}),
        5,
    );
    newer.body = newer.body.map(|b| b.replace("\"v\":1", "\"v\":2"));
    let (response, _) = p
        .run(vec![
            newer.clone(),
            text_record("s2", "1555", "w2", "still there?"),
        ])
        .await;
    assert_eq!(
        failures(&response),
        ["s1"],
        "on its last delivery too: the DLQ takes it"
    );
    assert_eq!(p.whatsapp.texts(), ["echo: still there?"]);
    let (again, _) = p.run(vec![newer]).await;
    assert_eq!(failures(&again), ["s1"]);
    assert_eq!(p.llm.prompts().len(), 1);
}

#[tokio::test]
async fn a_body_naming_another_conversation_than_its_group_is_never_answered() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let mut stray = text_record("s1", "2222", "w1", "for someone else");
    stray
        .attributes
        .insert("MessageGroupId".to_owned(), "PNID:1555".to_owned());
    let (response, _) = p
        .run(vec![stray, text_record("s2", "1555", "w2", "hi")])
        .await;
    assert_eq!(failures(&response), ["s1"]);
    let sent = p.whatsapp.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, Recipient::Phone("1555".into()));
    assert_eq!(sent[0].2, "echo: hi");
}

#[tokio::test]
async fn one_conversations_llm_failure_does_not_fail_another() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let llm_down = FakeLlm::scripted(vec![Err(LlmError::Status {
        status: 500,
        message: "x".into(),
        retry_after: None,
    })]);
    let p = Processor { llm: llm_down, ..p };
    // Only one LLM failure is scripted: exactly one of the two conversations fails, wholly.
    let batch = event(vec![
        text_record("a1", "1111", "wa1", "ana 1"),
        text_record("b1", "2222", "wb1", "bo 1"),
        text_record("a2", "1111", "wa2", "ana 2"),
    ]);
    let (response, _) = p.handle(&batch, &invocation()).await;
    let failed = failures(&response);
    assert!(failed == ["a1", "a2"] || failed == ["b1"], "{failed:?}");
    assert_eq!(p.whatsapp.texts().len(), 1);
}

#[tokio::test]
async fn unsupported_messages_get_the_unsupported_reply_and_silent_ones_nothing() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let location = serde_json::json!({"type": "media", "kind": "video"});
    let reaction = serde_json::json!({"type": "reaction", "message_id": "wamid.x", "emoji": "👍"});
    let (response, _) = p
        .run(vec![content_record("s1", "1555", "w1", location, 1)])
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["I only read text."]);
    assert!(p.llm.prompts().is_empty());
    let calls_before = p.store.calls();
    p.run(vec![content_record("s2", "1555", "w2", reaction, 1)])
        .await;
    assert_eq!(p.whatsapp.texts().len(), 1);
    assert_eq!(
        p.store.calls(),
        calls_before,
        "a reaction alone costs no store call"
    );
}

#[tokio::test]
async fn a_caption_is_answered_and_a_mixed_burst_gets_the_answer_first() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let image = serde_json::json!({"type": "media", "kind": "image", "caption": "what is this?"});
    let video = serde_json::json!({"type": "media", "kind": "video"});
    let batch = event(vec![
        content_record("s1", "1555", "w1", video, 1),
        content_record("s2", "1555", "w2", image, 1),
    ]);
    p.handle(&batch, &invocation()).await;
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: what is this?", "I only read text."]
    );
}

#[tokio::test]
async fn a_location_contacts_and_text_in_one_burst_are_one_turn_and_stickers_are_silent() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let location = serde_json::json!({"type": "location", "latitude": 38.7, "longitude": -9.1,
        "name": "Shop"});
    let contacts = serde_json::json!({"type": "contacts", "names": ["Ana"],
        "cards": [{"name": "Ana", "phones": ["+34 600"]}]});
    let sticker = serde_json::json!({"type": "media", "kind": "sticker"});
    let (response, _) = p
        .run(vec![
            content_record("s1", "1555", "w1", location, 1),
            content_record("s2", "1555", "w2", contacts, 1),
            text_record("s3", "1555", "w3", "is this open?"),
            content_record("s4", "1555", "w4", sticker, 1),
        ])
        .await;
    assert!(failures(&response).is_empty());
    let prompts = p.llm.prompts();
    assert_eq!(prompts.len(), 1, "one LLM call for the burst");
    let user_turn = &prompts[0].turns.last().unwrap().text;
    assert_eq!(
        user_turn,
        "[location] Shop (latitude 38.700000, longitude -9.100000)\n[contacts] Ana: +34 600\nis this open?"
    );
    assert_eq!(
        p.whatsapp.texts().len(),
        1,
        "one reply, no unsupported notice"
    );
    let silent = serde_json::json!({"type": "media", "kind": "sticker"});
    p.run(vec![content_record("s5", "1555", "w5", silent, 1)])
        .await;
    assert_eq!(p.whatsapp.texts().len(), 1, "a sticker alone gets no reply");
}

#[tokio::test]
async fn messages_held_by_another_invocation_are_retried_without_an_llm_call() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let conversation = ConversationKey::new("PNID", "1555");
    let ids = vec!["w1".to_owned()];
    let now = now_epoch_seconds();
    p.store
        .claim(ClaimRequest {
            conversation: &conversation,
            message_ids: &ids,
            token: "other",
            lease_until: now + 600,
            now,
            rate_window_seconds: 0,
            budget_day: None,
        })
        .await
        .unwrap();
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "hi")]).await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(p.llm.prompts().is_empty());
}

#[tokio::test]
async fn a_user_known_only_by_user_id_is_answered_by_recipient() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let mut record = text_record("s1", "US.42", "w1", "hi");
    record.body = Some(
        serde_json::json!({"v": 1, "phone_number_id": "PNID", "sender": {"user_id": "US.42"}, "id": "w1",
            "timestamp": now_epoch_seconds(), "content": {"type": "text", "body": "hi"}})
        .to_string(),
    );
    p.run(vec![record]).await;
    assert_eq!(
        p.whatsapp.sent.lock().unwrap()[0].1,
        Recipient::UserId("US.42".into())
    );
}

fn refused(status: u16, message: &str) -> Result<Completion, LlmError> {
    Err(LlmError::Status {
        status,
        message: message.into(),
        retry_after: None,
    })
}

#[tokio::test]
async fn a_prompt_too_long_is_asked_again_at_once_with_the_oldest_history_dropped() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    for (i, text) in ["one", "two"].into_iter().enumerate() {
        let record = text_record(&format!("s{i}"), "1555", &format!("w{i}"), text);
        p.run(vec![record]).await;
    }
    assert_eq!(p.store.turns("PNID:1555").len(), 4);
    let too_long = "Too long (type invalid_request_error, code context_length_exceeded)";
    let p = Processor {
        llm: FakeLlm::scripted(vec![refused(400, too_long)]),
        ..p
    };
    let (response, metrics) = p.run(vec![text_record("s9", "1555", "w9", "three")]).await;
    assert!(failures(&response).is_empty());
    let prompts = p.llm.prompts();
    assert_eq!(prompts.len(), 2, "one retry, at once");
    assert_eq!(prompts[0].turns.len(), 5);
    let kept: Vec<&str> = prompts[1].turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(kept, ["two", "echo: two", "three"]);
    assert_eq!(p.whatsapp.texts().last().unwrap(), "echo: three");
    assert_eq!(metrics.counter("LlmErrors"), 1);
}

#[tokio::test]
async fn a_prompt_too_long_even_without_history_gets_the_fallback_at_once() {
    let too_long = "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576). (INVALID_ARGUMENT)";
    let p = processor(
        FakeLlm::scripted(vec![refused(400, too_long)]),
        FakeWhatsApp::default(),
    );
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "huge")]).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.llm.prompts().len(), 1, "no history to drop: no retry");
    assert_eq!(p.whatsapp.texts(), ["Sorry, try later."]);
    assert!(p.store.turns("PNID:1555").is_empty());
}

#[tokio::test]
async fn an_unknown_model_gets_the_fallback_on_the_first_receive_and_the_turn_is_forgotten() {
    let p = processor(
        FakeLlm::scripted(vec![refused(
            404,
            "The model `gpt-9` does not exist (type invalid_request_error, code model_not_found)",
        )]),
        FakeWhatsApp::default(),
    );
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "first")]).await;
    assert!(failures(&response).is_empty(), "no SQS retry");
    assert_eq!(p.whatsapp.texts(), ["Sorry, try later."]);
    assert_eq!(p.llm.prompts().len(), 1);
    assert!(p.store.turns("PNID:1555").is_empty());

    // Once the model is fixed, the next message is answered without the refused turn.
    p.run(vec![text_record("s2", "1555", "w2", "second")]).await;
    let prompts = p.llm.prompts();
    let turns: Vec<&str> = prompts[1].turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(turns, ["second"]);
    assert_eq!(p.whatsapp.texts().last().unwrap(), "echo: second");
}

#[tokio::test]
async fn a_content_filter_refusal_gets_the_fallback_at_once() {
    for (status, message) in [
        (400, "filtered (code content_filter)"),
        (422, "messages: field required"),
    ] {
        let p = processor(
            FakeLlm::scripted(vec![refused(status, message)]),
            FakeWhatsApp::default(),
        );
        let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "hi")]).await;
        assert!(failures(&response).is_empty(), "{status}");
        assert_eq!(p.whatsapp.texts(), ["Sorry, try later."], "{status}");
        assert!(p.store.turns("PNID:1555").is_empty(), "{status}");
    }
}

#[tokio::test]
async fn an_answer_of_tool_calls_alone_gets_the_fallback_never_an_empty_reply() {
    let mut calls_only = completion("");
    calls_only.tool_calls = vec![shared::llm::ToolCall {
        id: "call_1".into(),
        name: "order_status".into(),
        arguments: serde_json::json!({"order_id": "A-17"}),
        signature: None,
    }];
    let p = processor(
        FakeLlm::scripted(vec![Ok(calls_only)]),
        FakeWhatsApp::default(),
    );
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "hi")]).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["Sorry, try later."]);
}

#[tokio::test]
async fn a_refused_key_is_still_retried_through_the_queue() {
    for (status, message) in [
        (401, "invalid key"),
        (
            400,
            "API key not valid. Please pass a valid API key. (INVALID_ARGUMENT)",
        ),
    ] {
        let p = processor(
            FakeLlm::scripted(vec![refused(status, message)]),
            FakeWhatsApp::default(),
        );
        let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "hi")]).await;
        assert_eq!(failures(&response), ["s1"], "{status}");
        assert!(p.whatsapp.texts().is_empty(), "{status}");
    }
}

#[tokio::test]
async fn a_message_meta_refuses_for_good_is_done_and_the_next_one_is_answered() {
    for code in [131_051, 131_026, 100, 131_030] {
        let p = processor(
            FakeLlm::default(),
            FakeWhatsApp::failing(vec![Some(meta_error(code))]),
        );
        let first = event(vec![text_record("s1", "1555", "w1", "hi")]);
        let (response, _) = p.handle(&first, &invocation()).await;
        assert!(failures(&response).is_empty(), "{code}");
        let (redelivered, _) = p.handle(&first, &invocation()).await;
        assert!(failures(&redelivered).is_empty(), "{code}");
        assert_eq!(p.llm.prompts().len(), 1, "{code}: done, not asked again");
        let (next, _) = p
            .run(vec![text_record("s2", "1555", "w2", "still there?")])
            .await;
        assert!(failures(&next).is_empty(), "{code}");
        // The undelivered answer is not remembered; the user's two turns read as one.
        assert_eq!(p.whatsapp.texts(), ["echo: hi\n\nstill there?"], "{code}");
    }
}

#[tokio::test]
async fn an_account_meta_blocks_keeps_the_records_for_a_retry() {
    for code in [131_031, 131_042, 368, 133_010] {
        let p = processor(
            FakeLlm::default(),
            FakeWhatsApp::failing(vec![Some(meta_error(code))]),
        );
        let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "hi")]).await;
        assert_eq!(failures(&response), ["s1"], "{code}");
    }
}

fn transient_error() -> WhatsAppError {
    WhatsAppError::Api {
        http_status: 500,
        code: None,
        message: "scripted".into(),
        retry_after: None,
    }
}

fn unknown_outcome() -> WhatsAppError {
    WhatsAppError::OutcomeUnknown {
        timed_out: true,
        detail: "scripted".into(),
    }
}

#[tokio::test]
async fn a_send_that_failed_is_retried_with_the_same_answer_and_no_second_llm_call() {
    let p = processor(
        FakeLlm::scripted(vec![Ok(completion("the first answer"))]),
        FakeWhatsApp::failing(vec![Some(transient_error())]),
    );
    let batch = event(vec![text_record("s1", "1555", "w1", "hi")]);
    let (response, _) = p.handle(&batch, &invocation()).await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(p.whatsapp.texts().is_empty());

    // The LLM would answer differently now ("echo: hi"): the retry must not ask it.
    let (retried, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&retried).is_empty());
    assert_eq!(p.whatsapp.texts(), ["the first answer"]);
    assert_eq!(p.llm.prompts().len(), 1);
    let turns = p.store.turns("PNID:1555");
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1].text, "the first answer");
    assert!(p.store.0.lock().unwrap().pending.is_none(), "completed");

    let (redelivered, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&redelivered).is_empty());
    assert_eq!(p.whatsapp.texts().len(), 1);
}

#[tokio::test]
async fn a_send_whose_outcome_is_unknown_is_not_repeated_and_is_remembered_as_sent() {
    let answer = format!("{}\n\n{}", "a".repeat(3000), "b".repeat(2000));
    let p = processor(
        FakeLlm::scripted(vec![Ok(completion(&answer))]),
        FakeWhatsApp::failing(vec![Some(unknown_outcome())]),
    );
    let batch = event(vec![text_record("s1", "1555", "w1", "long please")]);
    let (response, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty(), "marked done");
    // Meta may have sent the first part: neither it nor the second is sent (again).
    assert!(p.whatsapp.texts().is_empty());
    let turns = p.store.turns("PNID:1555");
    assert_eq!(turns.last().unwrap().role, Role::Assistant);
    assert_eq!(turns.last().unwrap().text, "a".repeat(3000));

    let (redelivered, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&redelivered).is_empty());
    assert!(p.whatsapp.texts().is_empty());
    assert_eq!(p.llm.prompts().len(), 1);
}

#[tokio::test]
async fn no_send_starts_that_could_not_be_recorded_and_the_retry_sends_the_same_answer() {
    let p = processor(
        FakeLlm::scripted(vec![Ok(completion("the first answer"))]),
        FakeWhatsApp::default(),
    );
    let batch = event(vec![text_record("s1", "1555", "w1", "hi")]);
    let short = Invocation::new("req-short", STORE_RESERVE / 2);
    let (response, _) = p.handle(&batch, &short).await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(p.whatsapp.texts().is_empty());

    let (retried, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&retried).is_empty());
    assert_eq!(p.whatsapp.texts(), ["the first answer"]);
    assert_eq!(p.llm.prompts().len(), 1);
}

#[tokio::test]
async fn a_resumed_answer_sends_only_the_parts_not_yet_sent() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let answer = format!("{}\n\n{}", "a".repeat(3000), "b".repeat(2000));
    let conversation = ConversationKey::new("PNID", "1555");
    let ids = vec!["w1".to_owned()];
    let now = now_epoch_seconds();
    let request = ClaimRequest {
        conversation: &conversation,
        message_ids: &ids,
        token: "earlier",
        lease_until: now + 600,
        now,
        rate_window_seconds: 0,
        budget_day: None,
    };
    p.store.claim(request).await.unwrap();
    let pending = PendingAnswer {
        message_ids: ids.clone(),
        replies: vec![answer.clone()],
        parts_sent: 1,
    };
    p.store
        .release(&conversation, "earlier", &ids, Some(&pending))
        .await
        .unwrap();
    let batch = event(vec![text_record("s1", "1555", "w1", "long please")]);
    let (response, _) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["b".repeat(2000)]);
    assert!(p.llm.prompts().is_empty());
    assert_eq!(p.store.turns("PNID:1555").last().unwrap().text, answer);
}

#[tokio::test]
async fn a_newer_message_waits_for_the_pending_answer_and_is_answered_after_it() {
    let p = processor(
        FakeLlm::scripted(vec![Ok(completion("the first answer"))]),
        FakeWhatsApp::failing(vec![Some(transient_error())]),
    );
    let first = text_record("s1", "1555", "w1", "one");
    let (response, _) = p.run(vec![first.clone()]).await;
    assert_eq!(failures(&response), ["s1"]);

    // The retry comes with a newer message: the pending answer goes out for the first alone.
    let second = text_record("s2", "1555", "w2", "two");
    let both = event(vec![first, second.clone()]);
    let (retried, _) = p.handle(&both, &invocation()).await;
    assert_eq!(failures(&retried), ["s2"]);
    assert_eq!(p.whatsapp.texts(), ["the first answer"]);

    let (next, _) = p.run(vec![second]).await;
    assert!(failures(&next).is_empty());
    assert_eq!(p.whatsapp.texts(), ["the first answer", "echo: two"]);
    let prompts = p.llm.prompts();
    assert_eq!(prompts.len(), 2);
    let texts: Vec<&str> = prompts[1].turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["one", "the first answer", "two"]);
}

fn sent_hours_ago(mut record: SqsMessage, hours: i64) -> SqsMessage {
    let mut body: serde_json::Value =
        serde_json::from_str(record.body.as_deref().unwrap_or_default()).unwrap();
    body["timestamp"] = (now_epoch_seconds() - hours * 3600).into();
    record.body = Some(body.to_string());
    record
}

#[tokio::test]
async fn a_message_older_than_the_limit_is_marked_done_without_an_llm_call() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let old = sent_hours_ago(
        text_record("s1", "1555", "w1", "replayed after an outage"),
        25,
    );
    let (response, metrics) = p.run(vec![old.clone()]).await;
    assert!(failures(&response).is_empty());
    assert!(p.llm.prompts().is_empty());
    assert!(p.whatsapp.texts().is_empty());
    assert!(p.whatsapp.typing.lock().unwrap().is_empty());
    assert_eq!(metrics.counter("MessagesTooOld"), 1);
    assert!(p.store.turns("PNID:1555").is_empty(), "no turn is stored");
    assert!(
        matches!(
            p.store.0.lock().unwrap().claims.get("w1"),
            Some((true, _, _))
        ),
        "claimed and marked done"
    );
    let (again, metrics) = p.run(vec![old]).await;
    assert!(failures(&again).is_empty());
    assert_eq!(metrics.counter("DuplicatesSkipped"), 1);
    assert_eq!(metrics.counter("MessagesTooOld"), 0, "counted once");
}

#[tokio::test]
async fn in_a_burst_only_the_fresh_messages_are_answered() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let batch = event(vec![
        sent_hours_ago(text_record("s1", "1555", "w1", "yesterday's question"), 30),
        sent_hours_ago(text_record("s2", "1555", "w2", "recent question"), 23),
    ]);
    let (response, metrics) = p.handle(&batch, &invocation()).await;
    assert!(failures(&response).is_empty());
    assert_eq!(p.whatsapp.texts(), ["echo: recent question"]);
    assert_eq!(metrics.counter("MessagesTooOld"), 1);
    let claims = &p.store.0.lock().unwrap().claims;
    assert!(matches!(claims.get("w1"), Some((true, _, _))));
    assert!(matches!(claims.get("w2"), Some((true, _, _))));
}

#[tokio::test]
async fn without_an_age_limit_an_old_message_is_answered() {
    let p = Processor::new(
        FakeStore::default(),
        FakeLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        Behaviour {
            max_message_age: None,
            ..behaviour()
        },
    );
    let old = sent_hours_ago(text_record("s1", "1555", "w1", "hello"), 24 * 30);
    p.run(vec![old]).await;
    assert_eq!(p.whatsapp.texts(), ["echo: hello"]);
}

fn user_id_record(
    sqs_id: &str,
    user_id: &str,
    message_id: &str,
    content: serde_json::Value,
) -> SqsMessage {
    let mut record = content_record(sqs_id, user_id, message_id, content, 1);
    let mut body: serde_json::Value =
        serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
    body["sender"] = serde_json::json!({"user_id": user_id});
    record.body = Some(body.to_string());
    record
}

#[tokio::test]
async fn a_user_id_change_carries_the_conversation_over_to_the_new_id() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let text = |body: &str| serde_json::json!({"type": "text", "body": body});
    p.run(vec![user_id_record(
        "s1",
        "US.old",
        "w1",
        text("My name is Ana"),
    )])
    .await;
    let notice = serde_json::json!({"type": "system", "kind": "user_changed_user_id",
        "user_id": "US.new", "previous_user_id": "US.old"});
    let (response, metrics) = p
        .run(vec![user_id_record("s2", "US.old", "w2", notice)])
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!(metrics.counter("UserIdsChanged"), 1);
    assert!(p.store.turns("PNID:US.old").is_empty());
    p.run(vec![user_id_record(
        "s3",
        "US.new",
        "w3",
        text("What is my name?"),
    )])
    .await;
    let prompts = p.llm.prompts();
    let texts: Vec<&str> = prompts[1].turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(
        texts,
        ["My name is Ana", "echo: My name is Ana", "What is my name?"]
    );
    assert_eq!(
        p.whatsapp.sent.lock().unwrap()[1].1,
        Recipient::UserId("US.new".into())
    );
    assert_eq!(
        p.whatsapp.texts().len(),
        2,
        "the notice itself gets no reply"
    );
}

fn failure_record(sqs_id: &str, user: &str, reply_id: &str, code: i64) -> SqsMessage {
    let failure = shared::queue_body::DeliveryFailure {
        v: shared::queue_body::DELIVERY_FAILURE_VERSION,
        phone_number_id: "PNID".into(),
        recipient: user.into(),
        message_id: reply_id.into(),
        error_code: Some(code),
        error_title: None,
        timestamp: Some(now_epoch_seconds()),
    };
    let entry = shared::queue::QueueEntry::for_delivery_failure(&failure).unwrap();
    let mut record = SqsMessage::default();
    record.message_id = Some(sqs_id.into());
    record.body = Some(entry.body);
    record.attributes = HashMap::from([
        ("MessageGroupId".to_owned(), entry.group_id),
        ("ApproximateReceiveCount".to_owned(), "1".to_owned()),
    ]);
    record
}

#[tokio::test]
async fn a_late_failure_marks_the_reply_and_the_model_is_told_the_user_never_saw_it() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    p.run(vec![text_record("s1", "1555", "m1", "Price?")]).await;
    let turns = p.store.turns("PNID:1555");
    assert_eq!(turns[1].sent_as, ["wamid.out1"], "the reply's id is kept");

    let (response, metrics) = p
        .run(vec![
            failure_record("f1", "1555", "wamid.out1", 131_026),
            text_record("s2", "1555", "m2", "Hello?"),
        ])
        .await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(metrics.counter("RepliesUndelivered"), 1);
    let turns = p.store.turns("PNID:1555");
    assert_eq!(
        turns[1].undelivered,
        Some(shared::conversation::Undelivered {
            error_code: Some(131_026)
        })
    );
    assert_eq!(turns[3].sent_as, ["wamid.out2"]);
    assert_eq!(turns[3].undelivered, None);
    let prompts = p.llm.prompts();
    let shown = &prompts[1].turns[1].text;
    assert!(
        shown.starts_with(prompt::UNDELIVERED_NOTE) && shown.ends_with("echo: Price?"),
        "{shown}"
    );
    assert_eq!(p.whatsapp.texts().len(), 2, "a failure is never answered");
}

#[tokio::test]
async fn a_failure_of_no_remembered_reply_or_told_twice_changes_nothing() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    p.run(vec![text_record("s1", "1555", "m1", "Hi")]).await;
    let (response, metrics) = p
        .run(vec![
            failure_record("f1", "1555", "wamid.elsewhere", 131_047),
            failure_record("f2", "1999", "wamid.out1", 131_047),
            failure_record("f3", "1555", "wamid.out1", 131_047),
            failure_record("f4", "1555", "wamid.out1", 131_047),
        ])
        .await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(metrics.counter("RepliesUndelivered"), 1, "marked once");
    assert!(p.store.turns("PNID:1999").is_empty());
    assert!(p.llm.prompts().len() == 1 && p.whatsapp.texts().len() == 1);
}

fn voice_note_record(sqs_id: &str, user: &str, message_id: &str, media_id: &str) -> SqsMessage {
    content_record(
        sqs_id,
        user,
        message_id,
        serde_json::json!({"type": "media", "kind": "audio", "media_id": media_id,
            "mime_type": "audio/ogg; codecs=opus", "voice": true}),
        1,
    )
}

#[tokio::test]
async fn a_voice_note_and_two_texts_are_one_turn_with_the_transcript_in_its_place() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let (response, metrics) = p
        .run(vec![
            voice_note_record("s1", "1555", "w1", "media-1"),
            text_record("s2", "1555", "w2", "and for 8pm"),
            text_record("s3", "1555", "w3", "thanks"),
        ])
        .await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(*p.whatsapp.downloads.lock().unwrap(), ["media-1"]);
    assert_eq!(*p.transcriber.heard.lock().unwrap(), ["OggS media-1"]);
    let prompts = p.llm.prompts();
    assert_eq!(prompts.len(), 1);
    assert_eq!(
        prompts[0].turns.last().unwrap().text,
        "[voice note] a note of 12 bytes\nand for 8pm\nthanks"
    );
    assert_eq!(metrics.counter("VoiceNotesHeard"), 1);
    let turns = p.store.turns("PNID:1555");
    assert!(
        turns[0].text.starts_with("[voice note]"),
        "the memory keeps the transcript"
    );
    assert_eq!(p.whatsapp.texts().len(), 1);
}

#[tokio::test]
async fn a_voice_note_that_can_never_be_heard_asks_the_user_to_type_it() {
    let whatsapp = FakeWhatsApp::default();
    whatsapp
        .media_failures
        .lock()
        .unwrap()
        .push_back(MediaError::TooLarge { max: 16 });
    let p = processor(FakeLlm::default(), whatsapp);
    let (response, metrics) = p
        .run(vec![voice_note_record("s1", "1555", "w1", "media-big")])
        .await;
    assert!(failures(&response).is_empty(), "final: not retried");
    assert_eq!(p.whatsapp.texts(), ["Please type it."]);
    assert!(p.llm.prompts().is_empty());
    assert_eq!(metrics.counter("VoiceNotesNotHeard"), 1);
    let (again, _) = p
        .run(vec![voice_note_record("s1", "1555", "w1", "media-big")])
        .await;
    assert!(failures(&again).is_empty());
    assert_eq!(p.whatsapp.texts().len(), 1, "a redelivery is done");
}

#[tokio::test]
async fn a_transcription_that_may_pass_retries_the_burst_and_is_heard_then() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    p.transcriber
        .script
        .lock()
        .unwrap()
        .push_back(Err(TranscriptionError::Timeout));
    let record = voice_note_record("s1", "1555", "w1", "media-1");
    let (response, _) = p.run(vec![record.clone()]).await;
    assert_eq!(failures(&response), ["s1"]);
    assert!(p.whatsapp.texts().is_empty() && p.llm.prompts().is_empty());
    let (retried, _) = p.run(vec![record]).await;
    assert!(failures(&retried).is_empty());
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: [voice note] a note of 12 bytes"]
    );
}

fn photo_record(
    sqs_id: &str,
    message_id: &str,
    media_id: &str,
    caption: Option<&str>,
) -> SqsMessage {
    content_record(
        sqs_id,
        "1555",
        message_id,
        serde_json::json!({"type": "media", "kind": "image", "media_id": media_id,
            "mime_type": "image/jpeg", "caption": caption}),
        1,
    )
}

#[tokio::test]
async fn a_photo_goes_to_the_model_with_the_turn_and_the_memory_keeps_its_caption_only() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    let (response, metrics) = p
        .run(vec![
            photo_record("s1", "w1", "img-1", Some("is this ripe?")),
            text_record("s2", "1555", "w2", "for tomorrow"),
        ])
        .await;
    assert!(failures(&response).is_empty(), "{response:?}");
    let prompts = p.llm.prompts();
    assert_eq!(
        prompts[0].turns.last().unwrap().text,
        "[image] is this ripe?\nfor tomorrow"
    );
    assert_eq!(prompts[0].files.len(), 1);
    assert_eq!(prompts[0].files[0].mime_type, "image/jpeg");
    assert_eq!(prompts[0].files[0].bytes, b"OggS img-1");
    assert_eq!(metrics.counter("ImagesSeen"), 1);
    assert_eq!(
        p.store.turns("PNID:1555")[0].text,
        "[image] is this ripe?\nfor tomorrow"
    );

    p.run(vec![text_record("s3", "1555", "w3", "and the price?")])
        .await;
    assert!(
        p.llm.prompts()[1].files.is_empty(),
        "only the newest burst carries images"
    );
}

#[tokio::test]
async fn without_vision_a_photo_is_its_caption_and_without_one_unsupported() {
    let p = Processor::new(
        FakeStore::default(),
        FakeLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        Behaviour {
            vision: false,
            ..behaviour()
        },
    );
    p.run(vec![photo_record(
        "s1",
        "w1",
        "img-1",
        Some("what is this?"),
    )])
    .await;
    p.run(vec![photo_record("s2", "w2", "img-2", None)]).await;
    assert!(p.whatsapp.downloads.lock().unwrap().is_empty());
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: what is this?", "I only read text."]
    );
}

#[tokio::test]
async fn an_image_too_large_is_answered_by_its_caption() {
    let whatsapp = FakeWhatsApp::default();
    whatsapp
        .media_failures
        .lock()
        .unwrap()
        .push_back(MediaError::TooLarge { max: 5 });
    let p = processor(FakeLlm::default(), whatsapp);
    let (response, _) = p
        .run(vec![photo_record("s1", "w1", "img-big", Some("and this?"))])
        .await;
    assert!(failures(&response).is_empty());
    assert!(p.llm.prompts()[0].files.is_empty());
    assert_eq!(p.whatsapp.texts(), ["echo: and this?"]);
}

fn document_record(
    sqs_id: &str,
    message_id: &str,
    media_id: &str,
    caption: Option<&str>,
) -> SqsMessage {
    content_record(
        sqs_id,
        "1555",
        message_id,
        serde_json::json!({"type": "media", "kind": "document", "media_id": media_id,
            "filename": "menu.pdf", "caption": caption}),
        1,
    )
}

#[tokio::test]
async fn a_pdf_goes_to_the_model_and_a_text_file_joins_the_turn() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    p.run(vec![
        document_record("s1", "w1", "pdf-1", Some("prices?")),
        document_record("s2", "w2", "txt-1", None),
    ])
    .await;
    let prompts = p.llm.prompts();
    assert_eq!(
        prompts[0].turns.last().unwrap().text,
        "[document menu.pdf] prices?\n[document menu.pdf]\nOggS txt-1"
    );
    assert_eq!(prompts[0].files.len(), 1);
    assert_eq!(prompts[0].files[0].mime_type, "application/pdf");
}

#[tokio::test]
async fn a_document_of_another_type_is_its_caption_or_unsupported() {
    let p = processor(FakeLlm::default(), FakeWhatsApp::default());
    p.run(vec![document_record(
        "s1",
        "w1",
        "zip-1",
        Some("see attached"),
    )])
    .await;
    p.run(vec![document_record("s2", "w2", "zip-2", None)])
        .await;
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: see attached", "I only read text."]
    );
}

#[tokio::test]
async fn a_video_goes_to_a_model_that_takes_video_and_is_its_caption_otherwise() {
    let video = |id: &str, media: &str| {
        content_record(
            id,
            "1555",
            id,
            serde_json::json!({"type": "media", "kind": "video", "media_id": media,
                "caption": "what happens here?"}),
            1,
        )
    };
    let openai = processor(FakeLlm::default(), FakeWhatsApp::default());
    openai.run(vec![video("w1", "vid-1")]).await;
    assert!(openai.whatsapp.downloads.lock().unwrap().is_empty());
    assert_eq!(openai.whatsapp.texts(), ["echo: what happens here?"]);

    let gemini = Processor::new(
        FakeStore::default(),
        FakeLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        Behaviour {
            video: true,
            ..behaviour()
        },
    );
    gemini.run(vec![video("w2", "vid-2")]).await;
    let prompts = gemini.llm.prompts();
    assert_eq!(
        prompts[0].turns.last().unwrap().text,
        "[video] what happens here?"
    );
    assert_eq!(prompts[0].files[0].mime_type, "video/mp4");
}

#[tokio::test]
async fn with_gemini_a_voice_note_goes_to_the_model_as_audio_without_a_transcription() {
    let p = Processor::new(
        FakeStore::default(),
        FakeLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        Behaviour {
            audio_inline: true,
            ..behaviour()
        },
    );
    p.run(vec![voice_note_record("s1", "1555", "w1", "media-1")])
        .await;
    assert!(
        p.transcriber.heard.lock().unwrap().is_empty(),
        "no transcription call"
    );
    let prompts = p.llm.prompts();
    assert_eq!(prompts[0].turns.last().unwrap().text, "[voice note]");
    assert_eq!(prompts[0].files[0].mime_type, "audio/ogg");
}

/// The LLM's side of a gate: records that it was called, then answers at once.
struct GatedLlm(tokio::sync::watch::Sender<bool>);

impl Llm for GatedLlm {
    async fn complete(&self, _: &Prompt, _: Instant) -> Result<Completion, LlmError> {
        self.0.send_replace(true);
        Ok(completion("the answer"))
    }
}

/// A "read + typing" call that ends only once the LLM has been called (or after a minute of the
/// paused test clock, reporting a timeout); records whether it saw the LLM called.
struct GatedWhatsApp {
    llm_called: tokio::sync::watch::Receiver<bool>,
    typing_saw_llm: Mutex<Vec<bool>>,
    sent: Mutex<Vec<String>>,
}

impl WhatsApp for GatedWhatsApp {
    async fn mark_read_and_typing(&self, _: &str, _: &str) -> Result<(), WhatsAppError> {
        let mut called = self.llm_called.clone();
        let wait = called.wait_for(|called| *called);
        let saw = matches!(
            tokio::time::timeout(Duration::from_secs(60), wait).await,
            Ok(Ok(_))
        );
        self.typing_saw_llm.lock().unwrap().push(saw);
        if saw {
            Ok(())
        } else {
            Err(WhatsAppError::Timeout)
        }
    }

    async fn send_text(
        &self,
        _: &str,
        _: &Recipient,
        body: &str,
        _: Instant,
    ) -> Result<String, WhatsAppError> {
        self.sent.lock().unwrap().push(body.to_owned());
        Ok("wamid.out1".into())
    }
}

/// These tests send text only: a download is a test error.
impl MediaSource for GatedWhatsApp {
    async fn download(
        &self,
        _: &str,
        _: &str,
        _: &MediaLimits,
        _: Instant,
    ) -> Result<Media, MediaError> {
        Err(MediaError::ChecksumMismatch)
    }
}

// The clock is paused so that an implementation that waits for the typing call before calling
// the LLM fails at once (the gate's minute passes instantly) instead of hanging.
#[tokio::test(start_paused = true)]
async fn the_typing_call_runs_while_the_llm_is_asked() {
    let (gate, llm_called) = tokio::sync::watch::channel(false);
    let whatsapp = GatedWhatsApp {
        llm_called,
        typing_saw_llm: Mutex::default(),
        sent: Mutex::default(),
    };
    let p = Processor::new(
        FakeStore::default(),
        GatedLlm(gate),
        whatsapp,
        FakeTranscriber::default(),
        behaviour(),
    );
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "Hello")]).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(
        *p.whatsapp.typing_saw_llm.lock().unwrap(),
        [true],
        "the typing call was under way when the LLM was called"
    );
    assert_eq!(*p.whatsapp.sent.lock().unwrap(), ["the answer"]);
}

#[tokio::test(start_paused = true)]
async fn a_typing_call_that_hangs_holds_the_answer_back_no_longer_than_the_grace() {
    let (gate, _) = tokio::sync::watch::channel(false);
    // This gate never opens: the typing call would wait a minute.
    let (_never, llm_called) = tokio::sync::watch::channel(false);
    let whatsapp = GatedWhatsApp {
        llm_called,
        typing_saw_llm: Mutex::default(),
        sent: Mutex::default(),
    };
    let p = Processor::new(
        FakeStore::default(),
        GatedLlm(gate),
        whatsapp,
        FakeTranscriber::default(),
        behaviour(),
    );
    let started = Instant::now();
    let (response, _) = p.run(vec![text_record("s1", "1555", "w1", "Hello")]).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(*p.whatsapp.sent.lock().unwrap(), ["the answer"]);
    assert!(
        p.whatsapp.typing_saw_llm.lock().unwrap().is_empty(),
        "the typing call was abandoned, not awaited"
    );
    assert_eq!(
        started.elapsed(),
        crate::answer::TYPING_GRACE,
        "on the paused clock, the answer waited exactly the grace"
    );
}

#[test]
fn the_http_client_trusts_the_compiled_in_roots() {
    assert!(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() > 100);
    let client = crate::with_root_certificates(reqwest::Client::builder()).build();
    assert!(client.is_ok(), "every compiled-in root parses: {client:?}");
}

/// An LLM that takes a second to answer and records how many calls carrying files were under
/// way at once.
#[derive(Default)]
struct SlowLlm {
    with_files_now: std::sync::atomic::AtomicUsize,
    most_with_files: std::sync::atomic::AtomicUsize,
}

impl Llm for SlowLlm {
    async fn complete(&self, prompt: &Prompt, _: Instant) -> Result<Completion, LlmError> {
        use std::sync::atomic::Ordering::SeqCst;
        let with_files = !prompt.files.is_empty();
        if with_files {
            let now = self.with_files_now.fetch_add(1, SeqCst) + 1;
            self.most_with_files.fetch_max(now, SeqCst);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if with_files {
            self.with_files_now.fetch_sub(1, SeqCst);
        }
        Ok(completion("seen"))
    }
}

async fn most_bursts_with_media_at_once(lanes: usize) -> usize {
    let p = Processor::new(
        FakeStore::default(),
        SlowLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        Behaviour {
            media_lanes: lanes,
            ..behaviour()
        },
    );
    let photo = |n: usize| {
        let content = serde_json::json!({"type": "media", "kind": "image",
            "media_id": format!("img-{n}"), "mime_type": "image/jpeg", "caption": "what is it?"});
        content_record(
            &format!("s{n}"),
            &format!("1555{n}"),
            &format!("w{n}"),
            content,
            1,
        )
    };
    let texts = (3..5).map(|n| {
        text_record(
            &format!("s{n}"),
            &format!("1555{n}"),
            &format!("w{n}"),
            "hi",
        )
    });
    let records = vec![photo(1), photo(2)].into_iter().chain(texts).collect();
    let (response, _) = p.run(records).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    assert_eq!(p.whatsapp.texts().len(), 4, "every conversation answered");
    p.llm
        .most_with_files
        .load(std::sync::atomic::Ordering::SeqCst)
}

// On the paused clock the slow LLM's second passes at once; a burst waiting for the lane waits
// for the other's answer.
#[tokio::test(start_paused = true)]
async fn bursts_with_media_take_turns_for_the_lanes_while_texts_go_on() {
    assert_eq!(most_bursts_with_media_at_once(1).await, 1);
    assert_eq!(most_bursts_with_media_at_once(2).await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_burst_that_gets_no_media_lane_before_its_deadline_is_retried_and_downloads_nothing() {
    let p = Processor::new(
        FakeStore::default(),
        SlowLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        behaviour(),
    );
    let photo = |n: usize| {
        let content = serde_json::json!({"type": "media", "kind": "image",
            "media_id": format!("img-{n}"), "mime_type": "image/jpeg"});
        content_record(
            &format!("s{n}"),
            &format!("1555{n}"),
            &format!("w{n}"),
            content,
            1,
        )
    };
    // The LLM's one second is more than the invocation has before the reply reserve.
    let short = Invocation::new("req-1", crate::REPLY_RESERVE + Duration::from_millis(500));
    let (response, _) = p.handle(&event(vec![photo(1), photo(2)]), &short).await;
    assert_eq!(failures(&response).len(), 1, "{response:?}");
    assert_eq!(*p.whatsapp.downloads.lock().unwrap(), ["img-1"]);
}

#[tokio::test]
async fn a_voice_note_whose_answer_is_kept_is_not_downloaded_or_heard_again_on_the_retry() {
    let p = processor(
        FakeLlm::default(),
        FakeWhatsApp::failing(vec![Some(transient_error())]),
    );
    let voice = voice_note_record("s1", "1555", "w1", "media-1");
    let (response, _) = p.run(vec![voice.clone()]).await;
    assert_eq!(failures(&response), ["s1"], "the reply failed: retried");

    let (retried, _) = p.run(vec![voice]).await;
    assert!(failures(&retried).is_empty(), "{retried:?}");
    assert_eq!(*p.whatsapp.downloads.lock().unwrap(), ["media-1"]);
    assert_eq!(*p.transcriber.heard.lock().unwrap(), ["OggS media-1"]);
    assert_eq!(p.llm.prompts().len(), 1, "the answer was bought once");
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: [voice note] a note of 12 bytes"]
    );
}

/// A processor whose controls are `controls` over the test's defaults.
fn controlled(controls: impl FnOnce(&mut Controls)) -> TestProcessor {
    let mut behaviour = behaviour();
    controls(&mut behaviour.controls);
    Processor::new(
        FakeStore::default(),
        FakeLlm::default(),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        behaviour,
    )
}

#[tokio::test]
async fn stop_is_confirmed_once_then_nothing_is_sent_until_start() {
    let p = controlled(|_| {});
    p.run(vec![text_record("s1", "1555", "w1", "Hi")]).await;
    p.run(vec![text_record("s2", "1555", "w2", "STOP")]).await;
    p.run(vec![text_record("s3", "1555", "w3", "are you there?")])
        .await;
    p.run(vec![text_record("s4", "1555", "w4", "baja")]).await;
    assert_eq!(
        p.whatsapp.texts(),
        ["echo: Hi", "You are unsubscribed."],
        "confirmed once, then silence"
    );
    assert_eq!(p.llm.prompts().len(), 1, "no model call while opted out");
    // Another user is unaffected.
    p.run(vec![text_record("s5", "1666", "w5", "Hello")]).await;
    assert_eq!(p.whatsapp.texts().last().unwrap(), "echo: Hello");

    p.run(vec![text_record("s6", "1555", "w6", "Start!")]).await;
    p.run(vec![text_record("s7", "1555", "w7", "back again")])
        .await;
    let texts = p.whatsapp.texts();
    assert_eq!(
        texts[texts.len() - 2..],
        ["Welcome back.", "echo: back again"]
    );
    // The commands are not remembered; the conversation goes on from before the STOP.
    let turns = p.store.turns("PNID:1555");
    let remembered: Vec<&str> = turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(
        remembered,
        ["Hi", "echo: Hi", "back again", "echo: back again"]
    );
}

#[tokio::test]
async fn reset_forgets_the_conversation_and_is_confirmed() {
    let p = controlled(|_| {});
    p.run(vec![text_record("s1", "1555", "w1", "My name is Ana")])
        .await;
    p.run(vec![text_record("s2", "1555", "w2", "/reset")]).await;
    p.run(vec![text_record("s3", "1555", "w3", "What is my name?")])
        .await;
    assert_eq!(
        p.whatsapp.texts(),
        [
            "echo: My name is Ana",
            "Forgotten.",
            "echo: What is my name?"
        ]
    );
    let prompts = p.llm.prompts();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[1].turns.len(), 1, "nothing of before the reset");
    // A redelivery of the reset is not answered again.
    p.run(vec![text_record("s2", "1555", "w2", "/reset")]).await;
    assert_eq!(p.whatsapp.texts().len(), 3);
}

#[tokio::test]
async fn beyond_the_rate_limit_one_notice_and_no_model_call() {
    let p = controlled(|c| c.rate_limit_per_minute = 10);
    for n in 0..15 {
        let id = format!("w{n}");
        p.run(vec![text_record(&format!("s{n}"), "1555", &id, "hi")])
            .await;
    }
    assert_eq!(p.llm.prompts().len(), 10);
    let texts = p.whatsapp.texts();
    assert_eq!(texts.len(), 11, "ten answers and one notice: {texts:?}");
    assert_eq!(texts[10], "Slow down.");
    // Another user has their own window.
    p.run(vec![text_record("t1", "1666", "x1", "hi")]).await;
    assert_eq!(p.llm.prompts().len(), 11);
}

#[tokio::test]
async fn the_kill_switch_answers_with_the_maintenance_text_but_stop_still_works() {
    let p = controlled(|c| c.maintenance_message = Some("Back soon.".into()));
    p.run(vec![text_record("s1", "1555", "w1", "Hi")]).await;
    p.run(vec![text_record("s2", "1555", "w2", "stop")]).await;
    p.run(vec![text_record("s3", "1555", "w3", "Hi?")]).await;
    assert_eq!(p.whatsapp.texts(), ["Back soon.", "You are unsubscribed."]);
    assert!(p.llm.prompts().is_empty());
}

#[tokio::test]
async fn once_the_day_s_tokens_reach_the_budget_one_notice_and_no_model_call() {
    let mut behaviour = behaviour();
    behaviour.controls.daily_token_budget = 100;
    // Each answer takes 40 tokens.
    let answers = (0..5)
        .map(|n| {
            Ok(Completion {
                input_tokens: Some(30),
                output_tokens: Some(10),
                ..completion(&format!("answer {n}"))
            })
        })
        .collect();
    let p = Processor::new(
        FakeStore::default(),
        FakeLlm::scripted(answers),
        FakeWhatsApp::default(),
        FakeTranscriber::default(),
        behaviour,
    );
    for n in 0..5 {
        let id = format!("w{n}");
        p.run(vec![text_record(&format!("s{n}"), "1555", &id, "hi")])
            .await;
    }
    assert_eq!(p.llm.prompts().len(), 3, "40, 80, then 120 ≥ 100");
    assert_eq!(
        p.whatsapp.texts(),
        ["answer 0", "answer 1", "answer 2", "Enough for today."]
    );
    // Another user has their own budget.
    p.run(vec![text_record("t1", "1666", "x1", "hi")]).await;
    assert_eq!(p.llm.prompts().len(), 4);
}
