//! Step 6c, use the business's tools: when a tools file is configured (`TOOLS_URI`), the model is
//! offered its tools; each round of calls it asks for is run (a round's calls concurrently,
//! `shared::tools`), their results go back to it, and it is asked again, up to
//! `TOOLS_MAX_ROUNDS` rounds, within the LLM's budget, until it answers in text.
//!
//! The built-in `handoff_to_human` tool is offered when the number has a handoff agent: a call
//! of it ends the model's turn, and the handoff step hands the conversation to a person.
//!
//! Exactly once: from the first round that called a side-effecting tool, the rounds (calls and
//! results) are kept with the burst's claim (`ConversationStore::keep_tool_rounds`). A retry of
//! the burst goes on from them instead of calling those tools again; and every call of a
//! side-effecting tool carries an `Idempotency-Key` derived from the burst's first message and
//! the call's place, the same on every retry, for a business API to tell a repeat. The memory
//! keeps the final answer, which says what the tools gave.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shared::conversation::{ConversationStore, ToolRounds};
use shared::llm::{
    Completion, Llm, LlmError, Prompt, ToolCall, ToolDeclaration, ToolResult, ToolRound,
};
use shared::log_event::LogEvent;
use shared::metrics::Metrics;
use shared::tools::{Offered, ToolRunner, Toolbox, error_content};
use tokio::time::Instant;

use crate::claim::ClaimedBurst;
use crate::{Behaviour, Processor, STORE_RESERVE};

/// The most calls of one round that are run; the model gets an error result for the others.
pub const MAX_CALLS_PER_ROUND: usize = 8;

/// Time kept back from the LLM's deadline, when tools run, for the model's answer after them.
pub const ANSWER_AFTER_TOOLS: Duration = Duration::from_secs(4);

impl<C: ConversationStore, L: Llm, W, T> Processor<C, L, W, T> {
    /// The rounds of tool use an earlier invocation kept for this burst, to go on from.
    pub(crate) fn resumed_rounds(&self, claimed: &ClaimedBurst<'_>) -> Vec<ToolRound> {
        let Some(kept) = &claimed.claim.tool_rounds else {
            return Vec::new();
        };
        tracing::info!(event = LogEvent::ToolRoundsResumed.as_str(), user = %claimed.user, rounds = kept.rounds.len(),
            "going on from the tool rounds an earlier invocation made; those tools are not called again");
        kept.rounds.clone()
    }

    /// The tools `behaviour`'s number offers: its own (`tools_uri`), else the stack's.
    fn toolbox_for(&self, behaviour: &Behaviour) -> Option<Arc<Toolbox>> {
        match (&behaviour.tools_uri, &self.number_documents) {
            (Some(uri), Some(documents)) => documents.toolbox(uri),
            _ => self.tools.clone(),
        }
    }

    /// The model's answer to `prompt`, offered the tools when there are, `rounds` holding the
    /// rounds of tool use made so far (kept across a second asking of the same burst).
    pub(crate) async fn converse(
        &self,
        prompt: Prompt,
        rounds: &mut Vec<ToolRound>,
        claimed: &ClaimedBurst<'_>,
        deadline: Instant,
        metrics: &mut Metrics,
    ) -> Result<Completion, LlmError> {
        let toolbox = self.toolbox_for(&claimed.behaviour);
        let offered = match &toolbox {
            Some(toolbox) => toolbox.offer(deadline).await,
            None => None,
        };
        let handoff = claimed
            .behaviour
            .handoff
            .agent_number
            .is_some()
            .then(handoff_declaration);
        if offered.is_none() && handoff.is_none() {
            return self.complete(&prompt, deadline, metrics).await;
        }
        let mut declarations = offered
            .as_ref()
            .map(|o| o.declarations.clone())
            .unwrap_or_default();
        declarations.extend(handoff);
        let max_rounds = toolbox.as_ref().map_or(0, |t| t.max_rounds());
        let mut prompt = prompt.with_tools(declarations, rounds.clone());
        loop {
            let completion = self.complete(&prompt, deadline, metrics).await?;
            if completion.tool_calls.iter().any(|c| c.name == HANDOFF_TOOL) {
                claimed.handoff_asked.store(true, Ordering::Relaxed);
                return Ok(completion);
            }
            let Some(offered) = offered
                .as_ref()
                .filter(|_| !completion.tool_calls.is_empty())
            else {
                return Ok(completion);
            };
            if prompt.rounds.len() >= max_rounds as usize {
                tracing::warn!(event = LogEvent::ToolRoundLimit.as_str(), user = %claimed.user, rounds = prompt.rounds.len(),
                    "the model still asks for tools after TOOLS_MAX_ROUNDS rounds; its text, if any, is the answer");
                return Ok(completion);
            }
            let round = self
                .run_round(
                    completion,
                    offered,
                    claimed,
                    prompt.rounds.len(),
                    deadline,
                    metrics,
                )
                .await;
            let side_effects = round
                .calls
                .iter()
                .any(|c| offered.has_side_effects(&c.name));
            prompt.rounds.push(round);
            rounds.clone_from(&prompt.rounds);
            if side_effects {
                self.keep_rounds(claimed, &prompt.rounds).await;
            }
        }
    }

    /// Runs the calls `completion` asks for as round `index`: at most [`MAX_CALLS_PER_ROUND`],
    /// concurrently, until [`ANSWER_AFTER_TOOLS`] before `deadline`.
    async fn run_round(
        &self,
        completion: Completion,
        offered: &Offered,
        claimed: &ClaimedBurst<'_>,
        index: usize,
        deadline: Instant,
        metrics: &mut Metrics,
    ) -> ToolRound {
        let calls = completion.tool_calls;
        let run = calls.get(..MAX_CALLS_PER_ROUND).unwrap_or(&calls);
        let first_message = claimed.claim.claimed.first().map_or("", String::as_str);
        let round = u32::try_from(index).unwrap_or(u32::MAX);
        let tools_deadline = deadline.checked_sub(ANSWER_AFTER_TOOLS).unwrap_or(deadline);
        let outcomes = offered
            .runner
            .run_round(run, first_message, round, tools_deadline)
            .await;
        metrics.count("ToolCalls", outcomes.len() as u64);
        metrics.count(
            "ToolErrors",
            outcomes.iter().filter(|o| o.is_error).count() as u64,
        );
        let mut results: Vec<ToolResult> = outcomes.iter().map(|o| o.to_result()).collect();
        results.extend(calls.iter().skip(run.len()).map(too_many));
        let text = completion.text;
        ToolRound {
            text: (!text.trim().is_empty()).then_some(text),
            calls,
            results,
        }
    }

    /// Keeps `rounds` with the burst's claim, best effort within [`STORE_RESERVE`]: unkept, a
    /// retry calls the tools again, with the same `Idempotency-Key`s.
    async fn keep_rounds(&self, claimed: &ClaimedBurst<'_>, rounds: &[ToolRound]) {
        let kept = ToolRounds {
            message_ids: claimed.claim.claimed.clone(),
            rounds: rounds.to_vec(),
        };
        let keep = self.store.keep_tool_rounds(&claimed.token, &kept);
        let error = match tokio::time::timeout(STORE_RESERVE, keep).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::warn!(event = LogEvent::ToolRoundsNotKept.as_str(), user = %claimed.user, error = %error,
            "the tool rounds could not be kept with the claim; a retry would call the tools again with the same Idempotency-Key");
    }
}

/// The built-in tool by which the model hands the conversation to a person, offered when the
/// number has a handoff agent (`handoff.rs`).
pub const HANDOFF_TOOL: &str = "handoff_to_human";

/// The declaration of [`HANDOFF_TOOL`].
fn handoff_declaration() -> ToolDeclaration {
    ToolDeclaration {
        name: HANDOFF_TOOL.to_owned(),
        description: "Hand this conversation to a person from the business, who will answer the \
            user on WhatsApp. Use it when the user asks for a person, or when only a person can \
            help (a complaint, a case outside what you know)."
            .to_owned(),
        parameters: serde_json::json!({"type": "object", "properties": {}}),
    }
}

/// The error result of a call beyond [`MAX_CALLS_PER_ROUND`], which is not run.
fn too_many(call: &ToolCall) -> ToolResult {
    ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: error_content(&format!(
            "not run: at most {MAX_CALLS_PER_ROUND} calls are run in one round; ask for it again"
        )),
        is_error: true,
    }
}
