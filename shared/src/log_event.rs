//! The names of the structured log events the functions write (the `event` field of a JSON log
//! line), in one place: the functions log them with [`LogEvent::as_str`], and the alerter, which
//! reads the webhook's and the processor's ERROR lines, parses them back with `str::parse`. The
//! names are part of the logs' contract with whoever reads them: never rename one.

use std::fmt;
use std::str::FromStr;

/// Defines [`LogEvent`], [`LogEvent::ALL`] and [`LogEvent::as_str`] from one list, so that the
/// three cannot disagree.
macro_rules! log_events {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// A structured log event: the `event` field of a log line.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum LogEvent {
            $($(#[doc = $doc])* $variant,)*
        }

        impl LogEvent {
            /// Every event, in the order declared.
            pub const ALL: &[LogEvent] = &[$(Self::$variant,)*];

            /// The name written in the `event` field.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

log_events! {
    // The webhook.
    /// INFO: Meta's verification handshake was answered.
    SubscriptionVerified = "subscription_verified",
    /// INFO: a signed delivery was accepted, its inbound messages queued.
    DeliveryAccepted = "delivery_accepted",
    /// INFO: an inbound message went to the queue.
    MessageEnqueued = "message_enqueued",
    /// WARN: the queue refused an inbound message; Meta delivers it again.
    MessageNotEnqueued = "message_not_enqueued",
    /// WARN or ERROR: Meta reports that a message the bot sent could not be delivered: WARN
    /// when the cause is the user's (outside the 24-hour window, undeliverable to them), ERROR
    /// otherwise.
    MessageFailed = "message_failed",
    /// INFO: a failed status of a message to a user went to the queue, for the processor to
    /// mark that reply undelivered.
    DeliveryFailureEnqueued = "delivery_failure_enqueued",
    /// WARN: the queue refused a failed status; Meta delivers it again.
    DeliveryFailureNotEnqueued = "delivery_failure_not_enqueued",
    /// INFO: Meta reports a sent message's status (sent, delivered, read).
    MessageStatus = "message_status",
    /// ERROR: Meta reports an error in a webhook.
    WebhookError = "webhook_error",
    /// INFO or WARN: a delivery, field or shape the webhook does not handle.
    Ignored = "ignored",
    /// ERROR: an inbound message cannot be queued.
    MessageMalformed = "message_malformed",

    // The processor.
    /// ERROR: a queue record cannot be read; it goes to the dead-letter queue.
    RecordUnreadable = "record_unreadable",
    /// INFO: a burst had nothing to answer (reactions, edits, system notices).
    NoReplyNeeded = "no_reply_needed",
    /// ERROR: the conversation store failed (claiming, or storing after the reply went out).
    StoreFailed = "store_failed",
    /// INFO: messages already answered were skipped.
    DuplicatesSkipped = "duplicates_skipped",
    /// WARN: another invocation holds some of the burst's messages; retried later.
    HeldElsewhere = "held_elsewhere",
    /// ERROR: a message has no sender to answer.
    NoRecipient = "no_recipient",
    /// WARN: the "read + typing" signal failed.
    TypingFailed = "typing_failed",
    /// WARN: the LLM gave no answer; the user gets the fallback message.
    LlmNoAnswer = "llm_no_answer",
    /// ERROR: the LLM stayed down through the last delivery; the user gets the fallback message.
    LlmFailedFinal = "llm_failed_final",
    /// WARN: the LLM failed; the messages are retried.
    LlmFailed = "llm_failed",
    /// ERROR: Meta refused the reply for good; the messages are marked done.
    ReplyUndeliverable = "reply_undeliverable",
    /// ERROR: part of the reply was sent and the rest failed; the messages are marked done.
    ReplyCutShort = "reply_cut_short",
    /// ERROR: a send got no answer after the request may have reached Meta; it is not resent,
    /// the turn is recorded as sent and the messages are marked done.
    ReplyOutcomeUnknown = "reply_outcome_unknown",
    /// INFO: a retry sends the answer an earlier invocation got from the LLM but could not
    /// deliver, without asking the LLM again.
    AnswerResumed = "answer_resumed",
    /// ERROR: the Meta access token expired or was revoked.
    MetaTokenExpired = "meta_token_expired",
    /// ERROR: the reply could not be sent; the messages are retried.
    ReplyFailed = "reply_failed",
    /// ERROR: the reply went out but another invocation took the claim, so the turns were not
    /// stored.
    ClaimLost = "claim_lost",
    /// INFO: a burst was answered.
    BurstHandled = "burst_handled",
    /// WARN: claims could not be released; they lapse with their lease.
    ReleaseFailed = "release_failed",
    /// WARN: the prompt was too long for the model; it is sent again at once with the oldest
    /// half of the history dropped.
    LlmHistoryTrimmed = "llm_history_trimmed",
    /// ERROR: the prompt was too long even with the oldest history dropped; the user gets the
    /// fallback message and the turn is not remembered.
    LlmContextTooLong = "llm_context_too_long",
    /// ERROR: the provider's content filter refused the prompt; the user gets the fallback
    /// message and the turn is not remembered.
    LlmContentFiltered = "llm_content_filtered",
    /// ERROR: the provider does not know the configured model; the user gets the fallback
    /// message and the turn is not remembered.
    LlmUnknownModel = "llm_unknown_model",
    /// ERROR: the provider refused the request as invalid; the user gets the fallback message
    /// and the turn is not remembered.
    LlmRequestRefused = "llm_request_refused",
    /// ERROR: Meta's business account or number cannot send until an operator acts (locked,
    /// payment, policy block, not registered); the messages are retried.
    MetaAccountBlocked = "meta_account_blocked",
    /// WARN: messages older than `MAX_MESSAGE_AGE_HOURS` were marked done without an answer.
    MessagesTooOld = "messages_too_old",
    /// INFO: a user changed their user id; their conversation was moved to the new id.
    UserIdChanged = "user_id_changed",
    /// WARN: Meta reported a reply failed after accepting it; the remembered turn is marked
    /// undelivered, so that the model does not take it as read.
    ReplyMarkedUndelivered = "reply_marked_undelivered",
    /// ERROR: several replies in a row to one user failed after Meta accepted them.
    RepliesRepeatedlyUndelivered = "replies_repeatedly_undelivered",
    /// INFO: a failed status names no remembered reply (expired, or not the bot's); nothing
    /// to mark.
    DeliveryFailureUnmatched = "delivery_failure_unmatched",
    /// ERROR: a voice note can never be heard (too large, of a refused type, refused by the
    /// transcription provider); the user is asked to type it.
    VoiceNoteNotHeard = "voice_note_not_heard",
    /// WARN: a burst with media found no free media lane (the processor's bound on media in
    /// memory) before its deadline; the messages are retried.
    MediaLaneBusy = "media_lane_busy",
    /// WARN: a voice note could not be downloaded or transcribed for now; the messages are
    /// retried.
    VoiceNoteFailed = "voice_note_failed",
    /// WARN: an image can never be had (too large, of a refused type); its caption alone is
    /// answered.
    ImageNotSeen = "image_not_seen",
    /// WARN: an image could not be downloaded for now; the messages are retried.
    ImageFailed = "image_failed",
    /// WARN: a document can never be had (too large, of a refused type); its caption alone is
    /// answered.
    DocumentNotRead = "document_not_read",
    /// WARN: a document could not be downloaded for now; the messages are retried.
    DocumentFailed = "document_failed",

    // The alerter.
    /// INFO: storm control held an alert back.
    AlertHeld = "alert_held",
    /// INFO: an alert was mailed.
    AlertMailed = "alert_mailed",
    /// ERROR: SES refused an alert mail for good (an unverified sender, the sandbox, a paused
    /// account); the alert is kept, and no other mail is tried in that invocation.
    AlertMailRejected = "alert_mail_rejected",
    /// ERROR: an alert could not be mailed for now (SES failing, storm control unavailable); it
    /// is kept.
    AlertMailFailed = "alert_mail_failed",
    /// WARN: an alert was put on the alert retry queue, to be mailed later.
    AlertKept = "alert_kept",
    /// ERROR: alerts could be neither mailed nor kept; their event or records are retried.
    AlertNotKept = "alert_not_kept",
    /// ERROR: dead letters could not be archived; they stay in their queue.
    DeadLettersNotArchived = "dead_letters_not_archived",
    /// INFO: Lambda's record of an invocation that failed every retry is handled again.
    FailedInvocationRetried = "failed_invocation_retried",
    /// ERROR: a record of the alert retry queue cannot be read; an alert about it is mailed.
    RetryRecordUnreadable = "retry_record_unreadable",
    /// ERROR: the model may not be used (Bedrock's model access not enabled in the region, or the
    /// role lacks `bedrock:InvokeModel`); the user gets the fallback message and the turn is not
    /// remembered.
    LlmAccessDenied = "llm_access_denied",
    /// INFO: the knowledge document was read (first use, or a new version).
    KnowledgeLoaded = "knowledge_loaded",
    /// WARN: the knowledge document is over its budget (`KNOWLEDGE_MAX_TOKENS`); its end is
    /// left out of the prompt.
    KnowledgeTruncated = "knowledge_truncated",
    /// WARN: the knowledge document could not be checked for a change; the cached version is
    /// used.
    KnowledgeRefreshFailed = "knowledge_refresh_failed",
    /// ERROR: the knowledge document could not be read (missing, denied, not text); the bot
    /// answers without it.
    KnowledgeUnavailable = "knowledge_unavailable",
    /// INFO: the tools file was read and is valid (first use, or a new version).
    ToolsLoaded = "tools_loaded",
    /// ERROR: the tools file is not valid (the reason names the tool and the field); the bot
    /// answers without tools, or with the last valid version it had.
    ToolsFileInvalid = "tools_file_invalid",
    /// WARN: the tools file could not be checked for a change; the cached tools are used.
    ToolsRefreshFailed = "tools_refresh_failed",
    /// ERROR: the tools file could not be read (missing, denied, not text); the bot answers
    /// without tools.
    ToolsUnavailable = "tools_unavailable",
    /// INFO: a tool answered with a success status (its name, status and time; never its
    /// arguments or answer).
    ToolCalled = "tool_called",
    /// WARN: a tool call ended in an error result for the model (unknown tool, invalid
    /// arguments, missing secret, timeout, error status); its name and the kind of failure.
    ToolFailed = "tool_failed",
    /// WARN: the knowledge base (`KNOWLEDGE_BASE_ID`) failed for now (throttled, down, too slow);
    /// the model is asked without passages.
    KnowledgeBaseSkipped = "knowledge_base_skipped",
    /// ERROR: the knowledge base may not be queried or does not exist (or refused the query); the
    /// model is asked without passages until someone acts.
    KnowledgeBaseFailed = "knowledge_base_failed",
    /// INFO: a retried burst goes on from the tool rounds an earlier invocation kept with its
    /// claim; those tools are not called again.
    ToolRoundsResumed = "tool_rounds_resumed",
    /// WARN: the tool rounds of a burst could not be kept with its claim; a retry would call
    /// its side-effecting tools again, with the same `Idempotency-Key`.
    ToolRoundsNotKept = "tool_rounds_not_kept",
    /// WARN: the model still asked for tools after `TOOLS_MAX_ROUNDS` rounds; its text (or the
    /// fallback message) is the answer.
    ToolRoundLimit = "tool_round_limit",
    /// INFO: a message of a user who opted out (STOP) is marked done: nothing is sent, no model
    /// is called.
    UserOptedOut = "user_opted_out",
    /// INFO: a user opted out (a stop keyword) or back in (a start keyword).
    OptOutChanged = "opt_out_changed",
    /// INFO: a user reset the conversation (`/reset`); its history is forgotten.
    ConversationReset = "conversation_reset",
    /// WARN: a user is over `RATE_LIMIT_PER_MINUTE`: no model call; one notice per minute.
    RateLimited = "rate_limited",
    /// WARN: a user's answers took `DAILY_TOKEN_BUDGET` today: no model call until tomorrow
    /// (UTC); one notice that day.
    TokenBudgetReached = "token_budget_reached",
    /// ERROR: a number's settings item is invalid (written by hand, not by `infra/numbers.sh`);
    /// the stack's defaults are used for that number until it is fixed.
    NumberSettingsInvalid = "number_settings_invalid",
    /// INFO: a message to a number whose settings say `"enabled": false` is marked done
    /// unanswered.
    NumberDisabled = "number_disabled",
    /// INFO: a conversation was handed to a person (a keyword, the model's tool, or a person
    /// answering from the WhatsApp Business app); the bot is paused for it.
    HandoffStarted = "handoff_started",
    /// INFO: a message was relayed between a user and the agent during a handoff.
    HandoffRelayed = "handoff_relayed",
    /// INFO: the bot took a conversation back (`/bot #ref` or `HANDOFF_IDLE_HOURS` without the
    /// agent writing).
    HandoffEnded = "handoff_ended",
    /// WARN: the agent wrote to the bot's number without a reference of an open handoff.
    HandoffReferenceUnknown = "handoff_reference_unknown",
    /// ERROR: the agent could not be told of a handoff or sent a user's message (their
    /// WhatsApp window may be closed): on-call is mailed so that someone answers the user.
    HandoffAgentNotReached = "handoff_agent_not_reached",
    /// INFO: a message a person sent from the WhatsApp Business app on the bot's number
    /// (coexistence) went to the queue, in that user's conversation (never its text).
    BusinessEchoEnqueued = "business_echo_enqueued",
    /// WARN: the queue refused a business app echo; Meta delivers it again.
    BusinessEchoNotEnqueued = "business_echo_not_enqueued",
}

impl LogEvent {
    /// Whether the event is about the LLM call (its name starts with `llm_`).
    pub fn is_llm(self) -> bool {
        self.as_str().starts_with("llm_")
    }
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`LogEvent`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no log event is named {0:?}")]
pub struct UnknownLogEvent(pub String);

impl FromStr for LogEvent {
    type Err = UnknownLogEvent;

    /// The event named `name`, exactly as [`LogEvent::as_str`] writes it.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|event| event.as_str() == name)
            .ok_or_else(|| UnknownLogEvent(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_snake_case_and_parse_back() {
        let names: HashSet<&str> = LogEvent::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), LogEvent::ALL.len());
        for event in LogEvent::ALL {
            let name = event.as_str();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert_eq!(name.parse::<LogEvent>(), Ok(*event));
            assert_eq!(event.to_string(), name);
        }
    }

    #[test]
    fn names_are_the_ones_the_logs_have_always_had() {
        let names: Vec<&str> = LogEvent::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "subscription_verified",
                "delivery_accepted",
                "message_enqueued",
                "message_not_enqueued",
                "message_failed",
                "delivery_failure_enqueued",
                "delivery_failure_not_enqueued",
                "message_status",
                "webhook_error",
                "ignored",
                "message_malformed",
                "record_unreadable",
                "no_reply_needed",
                "store_failed",
                "duplicates_skipped",
                "held_elsewhere",
                "no_recipient",
                "typing_failed",
                "llm_no_answer",
                "llm_failed_final",
                "llm_failed",
                "reply_undeliverable",
                "reply_cut_short",
                "reply_outcome_unknown",
                "answer_resumed",
                "meta_token_expired",
                "reply_failed",
                "claim_lost",
                "burst_handled",
                "release_failed",
                "llm_history_trimmed",
                "llm_context_too_long",
                "llm_content_filtered",
                "llm_unknown_model",
                "llm_request_refused",
                "meta_account_blocked",
                "messages_too_old",
                "user_id_changed",
                "reply_marked_undelivered",
                "replies_repeatedly_undelivered",
                "delivery_failure_unmatched",
                "voice_note_not_heard",
                "media_lane_busy",
                "voice_note_failed",
                "image_not_seen",
                "image_failed",
                "document_not_read",
                "document_failed",
                "alert_held",
                "alert_mailed",
                "alert_mail_rejected",
                "alert_mail_failed",
                "alert_kept",
                "alert_not_kept",
                "dead_letters_not_archived",
                "failed_invocation_retried",
                "retry_record_unreadable",
                "llm_access_denied",
                "knowledge_loaded",
                "knowledge_truncated",
                "knowledge_refresh_failed",
                "knowledge_unavailable",
                "tools_loaded",
                "tools_file_invalid",
                "tools_refresh_failed",
                "tools_unavailable",
                "tool_called",
                "tool_failed",
                "knowledge_base_skipped",
                "knowledge_base_failed",
                "tool_rounds_resumed",
                "tool_rounds_not_kept",
                "tool_round_limit",
                "user_opted_out",
                "opt_out_changed",
                "conversation_reset",
                "rate_limited",
                "token_budget_reached",
                "number_settings_invalid",
                "number_disabled",
                "handoff_started",
                "handoff_relayed",
                "handoff_ended",
                "handoff_reference_unknown",
                "handoff_agent_not_reached",
                "business_echo_enqueued",
                "business_echo_not_enqueued",
            ]
        );
    }

    #[test]
    fn unknown_names_and_other_spellings_do_not_parse() {
        for name in ["", "unstructured", "LLM_FAILED", "llm_failed ", "LlmFailed"] {
            assert_eq!(
                name.parse::<LogEvent>(),
                Err(UnknownLogEvent(name.to_owned()))
            );
        }
    }

    #[test]
    fn llm_events_are_told_by_their_prefix() {
        let llm: Vec<LogEvent> = LogEvent::ALL
            .iter()
            .copied()
            .filter(|e| e.is_llm())
            .collect();
        assert_eq!(
            llm,
            [
                LogEvent::LlmNoAnswer,
                LogEvent::LlmFailedFinal,
                LogEvent::LlmFailed,
                LogEvent::LlmHistoryTrimmed,
                LogEvent::LlmContextTooLong,
                LogEvent::LlmContentFiltered,
                LogEvent::LlmUnknownModel,
                LogEvent::LlmRequestRefused,
                LogEvent::LlmAccessDenied,
            ]
        );
    }
}
