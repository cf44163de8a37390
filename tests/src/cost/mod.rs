//! The cost report (`make cost`): a workload of WhatsApp conversations run through the
//! functions' real binaries under the local Lambda runtime, against the template's resources in
//! moto, with every AWS request metered ([`testkit::aws_meter`]), then priced at list prices
//! ([`prices`]) per million inbound messages ([`report`]).
//!
//! What is measured: API Gateway requests (each message and each reply's three status
//! webhooks), each function's invocations, its own time per invocation and its log bytes, every
//! AWS request by service and operation (the SQS event source's own requests included), and
//! DynamoDB's request units as AWS bills them. What is stated, not measured: the LLM's wait,
//! added to the processor's billed time for each LLM call.

pub mod prices;
pub mod report;
mod rig;
mod stand_ins;
mod users;

use std::path::PathBuf;
use std::time::Duration;

use testkit::aws_meter::Call;

pub use report::{Report, Row, price};

/// What the run does.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Users writing at the same time.
    pub users: u32,
    /// Messages each user writes, each after the reply to the previous one.
    pub turns: u32,
    /// Characters of each question.
    pub question_chars: usize,
    /// Characters of each answer.
    pub answer_chars: usize,
    /// The LLM's wait per call, added to the processor's billed duration (the stand-in answers
    /// at once).
    pub llm_wait: Duration,
}

impl Default for Workload {
    /// 50 users × 20 turns, 120-character questions, 600-character answers, a 2 s LLM.
    fn default() -> Self {
        Self {
            users: 50,
            turns: 20,
            question_chars: 120,
            answer_chars: 600,
            llm_wait: Duration::from_secs(2),
        }
    }
}

/// Where the run finds what it needs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// moto's URL.
    pub aws_endpoint: String,
    /// The directory holding the functions' binaries.
    pub binaries: PathBuf,
    /// Where the functions' logs go.
    pub log_dir: PathBuf,
}

/// What one function did during the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionUsage {
    /// The function (`webhook`, `processor`, `alerter`).
    pub name: String,
    /// Its `MemorySize` in the template, in MB.
    pub memory_mb: u64,
    /// Its own time for each invocation.
    pub run_times: Vec<Duration>,
    /// The bytes of the log lines it wrote (what CloudWatch Logs ingests).
    pub log_bytes: u64,
    /// Its log lines.
    pub log_lines: u64,
    /// Its log lines at ERROR (each would invoke the alerter); none in a clean run.
    pub error_lines: u64,
}

/// Everything the run counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    /// The workload run.
    pub workload: Workload,
    /// Inbound messages the users wrote.
    pub messages: u64,
    /// Text messages the processor sent (each gets three status webhooks).
    pub replies: u64,
    /// LLM calls.
    pub llm_calls: u64,
    /// Requests through API Gateway.
    pub api_requests: u64,
    /// Their body bytes.
    pub api_request_bytes: u64,
    /// Each function's usage, in the order webhook, processor, alerter.
    pub functions: Vec<FunctionUsage>,
    /// Every AWS request.
    pub aws_calls: Vec<Call>,
    /// Messages left on the dead-letter queue (none in a clean run).
    pub dead_letters: u64,
    /// The request body bytes the processor sent to Meta and the LLM (data transfer out to the
    /// internet).
    pub outbound_bytes: u64,
}

/// Why a run could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// Something of the stack could not be started.
    #[error("could not start the stack: {0}")]
    Start(String),
    /// The webhook answered a delivery with another status than 200.
    #[error("the webhook answered {0}")]
    Webhook(u16),
    /// A function invocation failed.
    #[error(transparent)]
    Invoke(#[from] crate::runtime::InvokeError),
    /// A user's message got no reply in time.
    #[error("user {user}'s message {turn} got no reply")]
    NoReply {
        /// The user's number in the workload.
        user: u32,
        /// The message's number in the user's conversation.
        turn: u32,
    },
}

/// Runs `workload` through the stack and returns what it used.
pub async fn measure(workload: &Workload, setup: &Setup) -> Result<Measurement, CostError> {
    rig::Rig::start(workload, setup).await?.run(workload).await
}
