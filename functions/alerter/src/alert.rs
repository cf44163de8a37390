//! Turning what triggered the alerter into alerts, and alerts into mails on-call can act on:
//! what happened, when (UTC), where, to whom (masked), and what to do.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use shared::clock::{format_utc, format_utc_ms};
use shared::log_event::LogEvent;
use shared::whatsapp::MetaErrorClass;

use crate::trigger::{AlarmChange, DeadLetter, LogBatch, LogEntry, Trigger};

/// Subjects are cut to this many characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// At most this many dead letters or log lines are listed in one mail; the rest are counted.
pub const MAX_ROWS: usize = 50;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Severity {
    /// Users' messages were given up on.
    Critical,
    /// A function logged an error.
    #[default]
    Error,
    /// An alarm fired.
    Alarm,
    /// An alarm is back to OK.
    Resolved,
    /// An alarm lacks data, or an unexpected notification.
    Warning,
    /// A conversation was handed to a person (mailed with the template's `HandoffMail`).
    Handoff,
}

impl Severity {
    /// The word in the subject.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "CRITICAL",
            Self::Error => "ERROR",
            Self::Alarm => "ALARM",
            Self::Resolved => "RESOLVED",
            Self::Warning => "WARNING",
            Self::Handoff => "HANDOFF",
        }
    }
}

/// One alert: one mail, unless storm control holds it back. It is kept on the retry queue as
/// JSON until it is mailed, so a field added later needs a default for the alerts kept before.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Alert {
    /// Alerts with the same fingerprint are mailed at most once per window.
    pub fingerprint: String,
    /// How many occurrences this alert stands for (dead letters, log lines, state changes).
    pub count: u64,
    /// How bad it is.
    pub severity: Severity,
    /// What happened, short: the subject's middle.
    pub what: String,
    /// The short reason: the subject's end.
    pub reason: String,
    /// When it happened (milliseconds since the epoch).
    pub when_ms: i64,
    /// Where: labelled facts such as the function and the request id.
    pub place: Vec<(String, String)>,
    /// One line on what to do.
    pub action: String,
    /// A link to the console, when there is one.
    pub link: Option<String>,
    /// The rows listed under the summary: a header and the rows' cells.
    pub table: Table,
}

/// Rows of facts listed in a mail.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Table {
    /// Column titles.
    pub columns: Vec<String>,
    /// Cells, one vector per row.
    pub rows: Vec<Vec<String>>,
    /// Rows left out for length.
    pub more: usize,
}

/// Where the functions run, for links and commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The AWS region, such as `eu-west-1`.
    pub region: String,
    /// The dead-letter archive's ARN.
    pub archive_arn: String,
    /// The inbound queue's ARN.
    pub inbound_arn: String,
}

/// Column titles, owned.
pub fn columns(titles: &[&str]) -> Vec<String> {
    titles.iter().map(|t| (*t).to_owned()).collect()
}

/// The alerts a trigger gives: one for all dead letters of an invocation, one per function and
/// kind of error for log lines, one per alarm change.
pub fn alerts(trigger: &Trigger, place: &Place, now_ms: i64) -> Vec<Alert> {
    match trigger {
        Trigger::DeadLetters(letters) if letters.is_empty() => Vec::new(),
        Trigger::DeadLetters(letters) => vec![dead_letter_alert(letters, place, now_ms)],
        Trigger::Logs(batch) => log_alerts(batch, place),
        Trigger::Alarms(changes) => changes
            .iter()
            .map(|c| alarm_alert(c, place, now_ms))
            .collect(),
    }
}

fn dead_letter_alert(letters: &[DeadLetter], place: &Place, now_ms: i64) -> Alert {
    let queue_arn = letters
        .iter()
        .map(|l| l.queue_arn.as_str())
        .find(|a| !a.is_empty())
        .unwrap_or_default();
    let queue_name = queue_arn.rsplit(':').next().unwrap_or(queue_arn);
    let region = queue_arn
        .split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .unwrap_or(&place.region);
    let count = letters.len();
    let rows: Vec<Vec<String>> = letters
        .iter()
        .take(MAX_ROWS)
        .map(|l| {
            let message = l.message.as_ref();
            vec![
                message
                    .map(|m| m.message_id.clone())
                    .unwrap_or_else(|| format!("(unreadable body, {} bytes)", l.body_bytes)),
                message.map(|m| m.user.clone()).unwrap_or_default(),
                message.map(|m| m.kind.clone()).unwrap_or_default(),
                message.and_then(|m| m.text.clone()).unwrap_or_default(),
                l.receive_count.to_string(),
                l.first_seen_ms.map(format_utc_ms).unwrap_or_default(),
                l.last_seen_ms.map(format_utc_ms).unwrap_or_default(),
            ]
        })
        .collect();
    let users: Vec<String> = {
        let mut users: Vec<String> = letters
            .iter()
            .filter_map(|l| l.message.as_ref().map(|m| m.user.clone()))
            .collect();
        users.sort();
        users.dedup();
        users
    };
    let mut place_facts = vec![("Queue".to_owned(), queue_name.to_owned())];
    if !users.is_empty() {
        place_facts.push(("Users".to_owned(), users.join(", ")));
    }
    Alert {
        fingerprint: format!("dlq:{queue_name}"),
        count: count as u64,
        severity: Severity::Critical,
        what: format!(
            "{count} message{} in the dead-letter queue",
            if count == 1 { "" } else { "s" }
        ),
        reason: "failed every retry, the users got no answer".to_owned(),
        when_ms: letters
            .iter()
            .filter_map(|l| l.last_seen_ms)
            .max()
            .unwrap_or(now_ms),
        place: place_facts,
        action: format!(
            "Find the cause in the processor's ERROR logs of that time (often the LLM or Meta was down, \
             or a secret is wrong). The messages are kept 14 days in the dead-letter archive; once the \
             cause is fixed, move them back to be answered (each is still answered once only): \
             aws sqs start-message-move-task --source-arn {} --destination-arn {}",
            place.archive_arn, place.inbound_arn
        ),
        link: sqs_link(queue_arn, region),
        table: Table {
            columns: columns(&[
                "message id",
                "user",
                "type",
                "text",
                "receives",
                "first seen",
                "last seen",
            ]),
            rows,
            more: count.saturating_sub(MAX_ROWS),
        },
    }
}

/// The kind of error a log line reports: Meta's code when there is one, else the structured
/// event, else "unstructured".
fn log_kind(entry: &LogEntry) -> String {
    match (entry.error_code, entry.event.as_deref()) {
        (Some(code), _) => format!("meta-{code}"),
        (None, Some(event)) => event.to_owned(),
        (None, None) => "unstructured".to_owned(),
    }
}

fn log_alerts(batch: &LogBatch, place: &Place) -> Vec<Alert> {
    let mut kinds: Vec<(String, Vec<&LogEntry>)> = Vec::new();
    for entry in &batch.entries {
        let kind = log_kind(entry);
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, entries)) => entries.push(entry),
            None => kinds.push((kind, vec![entry])),
        }
    }
    let function = batch.function();
    kinds
        .into_iter()
        .map(|(kind, entries)| {
            let first = entries[0];
            let reason = first
                .error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| first.message.clone());
            let mut place_facts = vec![
                ("Function".to_owned(), function.to_owned()),
                ("Log group".to_owned(), batch.log_group.clone()),
            ];
            if let Some(request_id) = &first.request_id {
                place_facts.push(("Request id".to_owned(), request_id.clone()));
            }
            let mut users: Vec<String> = entries.iter().filter_map(|e| e.user.clone()).collect();
            users.sort();
            users.dedup();
            if !users.is_empty() {
                place_facts.push(("Users".to_owned(), users.join(", ")));
            }
            let count = entries.len();
            let handoff = first.event.as_deref() == Some(LogEvent::HandoffStarted.as_str());
            Alert {
                fingerprint: format!("log:{function}:{kind}"),
                count: count as u64,
                severity: if handoff {
                    Severity::Handoff
                } else {
                    Severity::Error
                },
                what: match first.error_code {
                    _ if handoff => "a conversation was handed to a person".to_owned(),
                    Some(code) => format!("{function} error, Meta code {code}"),
                    None => format!("{function} error {kind}"),
                },
                reason: if count > 1 {
                    format!("{reason} (and {} more)", count - 1)
                } else {
                    reason
                },
                when_ms: first.timestamp_ms,
                place: place_facts,
                action: log_action(&entries),
                link: log_stream_link(&batch.log_group, &batch.log_stream, &place.region),
                table: Table {
                    columns: columns(&["time", "event", "code", "message", "error", "request id"]),
                    rows: entries
                        .iter()
                        .take(MAX_ROWS)
                        .map(|e| {
                            vec![
                                format_utc_ms(e.timestamp_ms),
                                e.event.clone().unwrap_or_default(),
                                e.error_code.map(|c| c.to_string()).unwrap_or_default(),
                                e.message.clone(),
                                e.error.clone().unwrap_or_default(),
                                e.request_id.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                    more: count.saturating_sub(MAX_ROWS),
                },
            }
        })
        .collect()
}

/// What to do about log lines of one kind, for the known causes: Meta's error code first, then
/// the event.
fn log_action(entries: &[&LogEntry]) -> String {
    let first = entries[0];
    let event = first
        .event
        .as_deref()
        .and_then(|e| e.parse::<LogEvent>().ok());
    let error = first.error.as_deref().unwrap_or_default();
    let meta = first
        .error_code
        .and_then(MetaErrorClass::of_code)
        .and_then(meta_advice);
    let llm_key_refused =
        event.is_some_and(LogEvent::is_llm) && (error.contains(" 401") || error.contains(" 403"));
    meta.or_else(|| llm_key_refused.then_some(LLM_KEY_REFUSED))
        .or_else(|| event.and_then(event_advice))
        .unwrap_or("Open the log stream below and read the lines around the request id.")
        .to_owned()
}

/// What to do about a Meta error of `class`, when its cause is known.
fn meta_advice(class: MetaErrorClass) -> Option<&'static str> {
    match class {
        MetaErrorClass::OutsideWindow => Some(
            "The user's last message is more than 24 hours old: WhatsApp only lets an approved \
            template message reach them now. Nothing to fix; the message was marked done.",
        ),
        MetaErrorClass::Undeliverable => Some(
            "Meta cannot deliver to this user (not on WhatsApp, an old app version, or they \
            blocked the business). Nothing to fix; the message was marked done.",
        ),
        MetaErrorClass::TokenExpired => Some(
            "The Meta access token expired or was revoked: create a new system-user token in Meta's \
            Business settings and put it in the secret as META_ACCESS_TOKEN. Failed messages are retried.",
        ),
        MetaErrorClass::InvalidMessage => Some(
            "Meta refused the reply as invalid (a bad parameter, or a message type or media it \
            cannot take): the message was marked done. If it repeats, check the processor's version and Meta's changelog.",
        ),
        MetaErrorClass::RecipientNotAllowed => Some(
            "Meta will not deliver to this recipient from this number (131030: a test number may only \
            message its allowed list, add the user in the app's WhatsApp settings; 131021: the user is the business \
            number itself). The message was marked done.",
        ),
        MetaErrorClass::AccountBlocked => Some(
            "The WhatsApp business account or number cannot send (131031 locked, 131042 payment \
            problem, 368 blocked for policy violations, 133010 number not registered): fix it in WhatsApp Manager. \
            Messages are retried until the queue gives up.",
        ),
        MetaErrorClass::RateLimited => Some(
            "Meta is rate-limiting this number: messages are \
            retried with backoff. If it persists, lower the processor's concurrency or ask Meta for a higher tier.",
        ),
        MetaErrorClass::Transient | MetaErrorClass::Other => None,
    }
}

/// What to do when the LLM provider answered an LLM event's call with 401 or 403.
const LLM_KEY_REFUSED: &str = "The LLM provider refused the API key: check LLM_API_KEY in the secret (and LLM_BASE_URL, LLM_MODEL).";

/// What to do about the events whose cause is known, when no Meta code says more.
pub const EVENT_ADVICE: [(LogEvent, &str); 18] = [
    (
        LogEvent::LlmFailedFinal,
        "The LLM stayed down through every retry and the user got \
        FALLBACK_MESSAGE: check the provider's status page and the processor's LLM settings.",
    ),
    (
        LogEvent::MetaTokenExpired,
        "The Meta access token expired: put a new one in the secret as META_ACCESS_TOKEN.",
    ),
    (
        LogEvent::LlmUnknownModel,
        "Unknown model: check LLM_MODEL (and LLM_PROVIDER, LLM_BASE_URL): until it is fixed every \
        user gets FALLBACK_MESSAGE at once.",
    ),
    (
        LogEvent::LlmContextTooLong,
        "Context length exceeded even with half the history dropped: the user got FALLBACK_MESSAGE. \
        Lower HISTORY_MAX_MESSAGES, shorten SYSTEM_PROMPT, or choose a model with a longer context (LLM_MODEL).",
    ),
    (
        LogEvent::LlmContentFiltered,
        "The provider's content filter refused the prompt: the user got FALLBACK_MESSAGE and the turn \
        was not remembered. Nothing to fix unless it repeats; then review SYSTEM_PROMPT and the provider's filter settings.",
    ),
    (
        LogEvent::LlmRequestRefused,
        "The LLM provider refused the request as invalid: the user got FALLBACK_MESSAGE. Read the \
        provider's message below and check LLM_PROVIDER, LLM_BASE_URL and LLM_MODEL.",
    ),
    (
        LogEvent::LlmAccessDenied,
        "Amazon Bedrock denied the model (LLM_MODEL, named in the error below with its region): \
        in the Bedrock console of that region, open the model's page and complete what it asks before first use (the \
        Anthropic use-case form, or access for an older model), and check that the processor's role grants \
        bedrock:InvokeModel on it (the template's LlmModel and BedrockInferenceProfile). Until then every user gets \
        FALLBACK_MESSAGE at once.",
    ),
    (
        LogEvent::KnowledgeUnavailable,
        "The knowledge document (KNOWLEDGE_URI, the template's KnowledgeUri) could not be read: \
        the bot answers without it. Upload it with infra/knowledge.sh, check that the object exists and is UTF-8 \
        text, and that the processor's role may read it.",
    ),
    (
        LogEvent::KnowledgeBaseFailed,
        "Amazon Bedrock Knowledge Bases refused the retrieval (KNOWLEDGE_BASE_ID, the template's \
        KnowledgeBaseId): the bot answers without its passages. Check that the knowledge base exists in the stack's \
        region with that id and has been synced, that the processor's role grants bedrock:Retrieve on it (redeploy \
        with the right KnowledgeBaseId), and, for a ValidationException, KNOWLEDGE_BASE_TOP_K.",
    ),
    (
        LogEvent::MetaAccountBlocked,
        "The WhatsApp business account or number cannot send (locked, a payment problem, blocked \
        for policy, or not registered): fix it in WhatsApp Manager. Messages are retried until the queue gives up.",
    ),
    (
        LogEvent::ReplyOutcomeUnknown,
        "A reply to WhatsApp got no answer after Meta may have received it: it was not \
        resent (a duplicate is worse), so the user may have missed it. Check Meta's status page \
        and the Graph API latency; repeated, the network path to graph.facebook.com.",
    ),
    (
        LogEvent::RepliesRepeatedlyUndelivered,
        "Several replies in a row to one user were accepted by Meta and then failed (see \
        error_code): 131047 means the bot answers after the user's 24-hour window closed (a \
        backlog: check the queue's age); 131026 that the user cannot receive messages. The \
        conversation remembers them as undelivered.",
    ),
    (
        LogEvent::HandoffStarted,
        "A user asked for a person (or the model handed them over, or someone answered from the \
        WhatsApp Business app): the agent was sent the reference on WhatsApp and answers with \
        \"#<reference> text\"; \"/bot #<reference>\" gives the conversation back. If the agent is \
        away, answer the user from the WhatsApp Business app. Mailed because HandoffMail is true.",
    ),
    (
        LogEvent::HandoffAgentNotReached,
        "A user was handed to a person but WhatsApp refused the message to the agent \
        (HANDOFF_AGENT_NUMBER or the number's handoff_agent_number; 131047: the agent has not \
        written to the business number in 24 hours). Answer the user from the WhatsApp Business \
        app, or ask the agent to write to the number once a day; the user's messages stay in the \
        conversation's history.",
    ),
    (
        LogEvent::NumberSettingsInvalid,
        "A business number's settings item (n#<phone_number_id>) is invalid, so that number is \
        answered with the stack's defaults: fix it with infra/numbers.sh put, which names every \
        wrong field.",
    ),
    (LogEvent::StoreFailed, STORE_FAILED_AFTER_REPLY),
    (LogEvent::ClaimLost, STORE_FAILED_AFTER_REPLY),
    (
        LogEvent::RecordUnreadable,
        "A queue record could not be read (a bad body, or a webhook newer \
        than the processor): deploy matching versions; the record goes to the dead-letter queue.",
    ),
];

const STORE_FAILED_AFTER_REPLY: &str = "DynamoDB failed after a reply went out: the \
    user got the answer but the conversation may miss that turn. Check the table's throttling and errors.";

fn event_advice(event: LogEvent) -> Option<&'static str> {
    EVENT_ADVICE
        .iter()
        .find(|(advised, _)| *advised == event)
        .map(|(_, advice)| *advice)
}

/// Every event the alerter has advice for: those of [`EVENT_ADVICE`], and the LLM events, whose
/// 401 or 403 says to check the key.
pub fn advised_events() -> impl Iterator<Item = LogEvent> {
    let llm = LogEvent::ALL.iter().copied().filter(|e| e.is_llm());
    llm.chain(EVENT_ADVICE.iter().map(|(event, _)| *event))
}

fn alarm_alert(change: &AlarmChange, place: &Place, now_ms: i64) -> Alert {
    let region = change.region.as_deref().unwrap_or(&place.region);
    let severity = match change.state.as_str() {
        "ALARM" => Severity::Alarm,
        "OK" => Severity::Resolved,
        _ => Severity::Warning,
    };
    let mut rows = vec![vec![
        "state".to_owned(),
        match &change.old_state {
            Some(old) => format!("{old} → {}", change.state),
            None => change.state.clone(),
        },
    ]];
    for (label, value) in [
        ("reason", Some(change.reason.clone())),
        ("metric", change.metric.clone()),
        ("condition", change.condition.clone()),
        ("changed at", change.changed_at.clone()),
        ("description", change.description.clone()),
    ] {
        if let Some(value) = value {
            rows.push(vec![label.to_owned(), value]);
        }
    }
    Alert {
        fingerprint: format!("alarm:{}:{}", change.name, change.state),
        count: 1,
        severity,
        what: format!("alarm {}", change.name),
        reason: change.reason.clone(),
        when_ms: now_ms,
        place: vec![("Alarm".to_owned(), change.name.clone()), ("Region".to_owned(), region.to_owned())],
        action: match severity {
            Severity::Resolved => "Nothing to do: the alarm is back to OK.".to_owned(),
            _ => change
                .description
                .clone()
                .map(|d| format!("{d}. Open the alarm below for its metric's graph."))
                .unwrap_or_else(|| "Open the alarm below for its metric's graph and the functions' logs of that time.".to_owned()),
        },
        link: Some(format!(
            "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{}",
            percent_encode(&change.name)
        )),
        table: Table { columns: columns(&["", ""]), rows, more: 0 },
    }
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `[<stack>] <SEVERITY> <what>: <reason>`, one line, at most [`MAX_SUBJECT_CHARS`].
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body; everything from input or logs is escaped.
    pub html: String,
}

/// Renders `alert` for the stack `stack`. `held_back` alerts of its fingerprint were held back
/// since the previous mail at `previous_mail_at`.
pub fn render(
    alert: &Alert,
    stack: &str,
    held_back: u64,
    previous_mail_at: Option<i64>,
) -> Rendered {
    let subject = one_line_cut(
        &format!(
            "[{stack}] {} {}: {}",
            alert.severity.as_str(),
            alert.what,
            alert.reason
        ),
        MAX_SUBJECT_CHARS,
    );
    let when = format_utc_ms(alert.when_ms);
    let held = (held_back > 0).then(|| match previous_mail_at {
        Some(at) => format!(
            "{held_back} more alert(s) like this were held back since the last mail at {}.",
            format_utc(at)
        ),
        None => format!("{held_back} more alert(s) like this were held back."),
    });

    let mut text = String::new();
    let _ = writeln!(
        text,
        "What happened: {}: {}",
        alert.what,
        one_line(&alert.reason)
    );
    let _ = writeln!(text, "When: {when}");
    for (label, value) in &alert.place {
        let _ = writeln!(text, "{label}: {}", one_line(value));
    }
    let _ = writeln!(text, "What to do: {}", alert.action);
    if let Some(held) = &held {
        let _ = writeln!(text, "Held back: {held}");
    }
    if let Some(link) = &alert.link {
        let _ = writeln!(text, "Link: {link}");
    }
    if !alert.table.rows.is_empty() {
        let _ = writeln!(text);
        let key_value = alert.table.columns.iter().all(|c| c.is_empty());
        for row in &alert.table.rows {
            let line = match row.as_slice() {
                [key, value] if key_value => format!("{key}: {}", one_line(value)),
                _ => alert
                    .table
                    .columns
                    .iter()
                    .zip(row)
                    .filter(|(_, cell)| !cell.is_empty())
                    .map(|(column, cell)| format!("{column}: {}", one_line(cell)))
                    .collect::<Vec<_>>()
                    .join(" | "),
            };
            let _ = writeln!(text, "- {line}");
        }
        if alert.table.more > 0 {
            let _ = writeln!(text, "- and {} more", alert.table.more);
        }
    }

    let mut html = String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
    let _ = write!(
        html,
        "<h2>{} {}</h2>",
        escape(alert.severity.as_str()),
        escape(&alert.what)
    );
    let _ = write!(
        html,
        "<p><b>What happened:</b> {}</p>",
        escape(&alert.reason)
    );
    let _ = write!(html, "<p><b>When:</b> {}</p>", escape(&when));
    for (label, value) in &alert.place {
        let _ = write!(html, "<p><b>{}:</b> {}</p>", escape(label), escape(value));
    }
    let _ = write!(html, "<p><b>What to do:</b> {}</p>", escape(&alert.action));
    if let Some(held) = &held {
        let _ = write!(html, "<p><b>Held back:</b> {}</p>", escape(held));
    }
    if let Some(link) = &alert.link {
        let _ = write!(html, "<p><a href=\"{0}\">{0}</a></p>", escape(link));
    }
    if !alert.table.rows.is_empty() {
        html.push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">");
        if alert.table.columns.iter().any(|c| !c.is_empty()) {
            html.push_str("<tr>");
            for column in &alert.table.columns {
                let _ = write!(html, "<th>{}</th>", escape(column));
            }
            html.push_str("</tr>");
        }
        for row in &alert.table.rows {
            html.push_str("<tr>");
            for cell in row {
                let _ = write!(html, "<td>{}</td>", escape(cell));
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
        if alert.table.more > 0 {
            let _ = write!(html, "<p>and {} more</p>", alert.table.more);
        }
    }
    html.push_str("</body></html>");
    Rendered {
        subject,
        text,
        html,
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Collapses line breaks and other control characters into spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn one_line_cut(text: &str, max_chars: usize) -> String {
    let line = one_line(text);
    if line.chars().count() <= max_chars {
        return line;
    }
    let cut: String = line.chars().take(max_chars - 1).collect();
    format!("{}…", cut.trim_end())
}

/// What [`percent_encode`] leaves as it is: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but unreserved characters, as UTF-8.
fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The CloudWatch console's link to a log stream (the console encodes `%` once more, as `$25`).
fn log_stream_link(group: &str, stream: &str, region: &str) -> Option<String> {
    if group.is_empty() {
        return None;
    }
    let console = |part: &str| percent_encode(part).replace('%', "$25");
    let mut link = format!(
        "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{}",
        console(group)
    );
    if !stream.is_empty() {
        let _ = write!(link, "/log-events/{}", console(stream));
    }
    Some(link)
}

fn sqs_link(queue_arn: &str, region: &str) -> Option<String> {
    let parts: Vec<&str> = queue_arn.split(':').collect();
    let [_, _, "sqs", _, account, name] = parts.as_slice() else {
        return None;
    };
    let url = format!("https://sqs.{region}.amazonaws.com/{account}/{name}");
    Some(format!(
        "https://{region}.console.aws.amazon.com/sqs/v3/home?region={region}#/queues/{}",
        percent_encode(&url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::DeadMessage;

    fn place() -> Place {
        Place {
            region: "eu-west-1".into(),
            archive_arn: "arn:aws:sqs:eu-west-1:123456789012:stack-dead-letter-archive.fifo".into(),
            inbound_arn: "arn:aws:sqs:eu-west-1:123456789012:stack-inbound.fifo".into(),
        }
    }

    fn letter(id: &str, text: &str) -> DeadLetter {
        DeadLetter {
            sqs_message_id: format!("sqs-{id}"),
            queue_arn: "arn:aws:sqs:eu-west-1:123456789012:stack-inbound-dlq.fifo".into(),
            receive_count: 5,
            first_seen_ms: Some(1_795_255_200_000),
            last_seen_ms: Some(1_795_255_500_000),
            message: Some(DeadMessage {
                message_id: id.into(),
                user: "*******4567".into(),
                kind: "text".into(),
                text: Some(text.into()),
            }),
            body_bytes: 100,
            body: "{}".into(),
            group_id: Some("P:15551234567".into()),
            deduplication_id: Some(id.into()),
        }
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_255_200), "2026-11-21 10:00:00 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
        assert_eq!(format_utc_ms(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn one_mail_lists_every_dead_letter_with_redrive_instructions() {
        let alerts = alerts(
            &Trigger::DeadLetters(vec![letter("wamid.a", "hi"), letter("wamid.b", "there")]),
            &place(),
            0,
        );
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert.fingerprint, "dlq:stack-inbound-dlq.fifo");
        assert_eq!(alert.count, 2);
        let mail = render(alert, "stack", 0, None);
        assert_eq!(
            mail.subject,
            "[stack] CRITICAL 2 messages in the dead-letter queue: failed every retry, the users got no answer"
        );
        assert!(mail.text.contains(
            "aws sqs start-message-move-task --source-arn \
             arn:aws:sqs:eu-west-1:123456789012:stack-dead-letter-archive.fifo \
             --destination-arn arn:aws:sqs:eu-west-1:123456789012:stack-inbound.fifo"
        ));
        assert!(mail.text.contains("message id: wamid.a | user: *******4567 | type: text | text: hi | receives: 5 | first seen: 2026-11-21 10:00:00 UTC"));
        assert!(mail.html.contains("<td>wamid.b</td>"));
        assert!(mail.html.contains("https://eu-west-1.console.aws.amazon.com/sqs/v3/home?region=eu-west-1#/queues/https%3A%2F%2Fsqs.eu-west-1.amazonaws.com%2F123456789012%2Fstack-inbound-dlq.fifo"));
        assert!(!mail.text.contains("Held back"));
    }

    #[test]
    fn a_handoff_is_mailed_as_a_handoff_with_what_to_do() {
        let batch = LogBatch {
            log_group: "/aws/lambda/stack-processor".into(),
            log_stream: "2026/11/22/[$LATEST]abc".into(),
            entries: vec![LogEntry {
                timestamp_ms: 1_795_255_200_000,
                level: Some("INFO".into()),
                event: Some("handoff_started".into()),
                message: "the conversation was handed to a person; the bot is paused for it".into(),
                error: None,
                error_code: None,
                request_id: Some("req-1".into()),
                user: Some("*******4567".into()),
            }],
        };
        let alerts = alerts(&Trigger::Logs(batch), &place(), 0);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].severity, Severity::Handoff);
        let mail = render(&alerts[0], "stack", 0, None);
        assert!(
            mail.subject
                .starts_with("[stack] HANDOFF a conversation was handed to a person"),
            "{}",
            mail.subject
        );
        assert!(mail.text.contains("/bot #<reference>"), "{}", mail.text);
        assert!(mail.text.contains("Users: *******4567"));
    }

    #[test]
    fn log_lines_are_grouped_by_function_and_kind_with_the_known_cause() {
        let entry = |code: Option<i64>, event: &str| LogEntry {
            timestamp_ms: 1_795_255_200_000,
            level: Some("ERROR".into()),
            event: Some(event.into()),
            message: "Meta refused the reply for good".into(),
            error: Some("the Graph API answered 400 with error Some(131047)".into()),
            error_code: code,
            request_id: Some("req-1".into()),
            user: Some("*******4567".into()),
        };
        let batch = LogBatch {
            log_group: "/aws/lambda/stack-processor".into(),
            log_stream: "2026/11/22/[$LATEST]abc".into(),
            entries: vec![
                entry(Some(131_047), "reply_undeliverable"),
                entry(Some(131_047), "reply_undeliverable"),
                entry(Some(190), "meta_token_expired"),
            ],
        };
        let alerts = alerts(&Trigger::Logs(batch), &place(), 0);
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].fingerprint, "log:stack-processor:meta-131047");
        assert_eq!(alerts[0].count, 2);
        assert!(alerts[0].action.contains("24 hours"));
        assert!(alerts[1].action.contains("META_ACCESS_TOKEN"));
        let mail = render(&alerts[0], "stack", 0, None);
        assert!(mail.subject.starts_with(
            "[stack] ERROR stack-processor error, Meta code 131047: the Graph API answered 400"
        ));
        assert!(mail.text.contains("Request id: req-1"));
        assert!(mail.text.contains("Users: *******4567"));
        assert!(mail.text.contains(
            "Link: https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/$252Faws$252Flambda$252Fstack-processor/log-events/2026$252F11$252F22$252F$255B$2524LATEST$255Dabc"
        ));
    }

    #[test]
    fn llm_refusals_and_meta_codes_get_their_action() {
        let entry = |code: Option<i64>, event: &str| LogEntry {
            timestamp_ms: 1_795_255_200_000,
            level: Some("ERROR".into()),
            event: Some(event.into()),
            message: "refused".into(),
            error: Some("the LLM provider answered 404: no such model".into()),
            error_code: code,
            request_id: None,
            user: None,
        };
        let cases = [
            (None, "llm_unknown_model", "check LLM_MODEL"),
            (None, "llm_context_too_long", "HISTORY_MAX_MESSAGES"),
            (None, "llm_content_filtered", "content filter"),
            (None, "llm_request_refused", "LLM_BASE_URL"),
            (None, "llm_access_denied", "Bedrock console of that region"),
            (None, "knowledge_unavailable", "infra/knowledge.sh"),
            (None, "knowledge_base_failed", "bedrock:Retrieve"),
            (Some(368), "meta_account_blocked", "WhatsApp Manager"),
            (Some(131_051), "reply_undeliverable", "marked done"),
            (Some(131_030), "reply_undeliverable", "allowed list"),
        ];
        for (code, event, advice) in cases {
            let batch = LogBatch {
                log_group: "/aws/lambda/stack-processor".into(),
                log_stream: "s".into(),
                entries: vec![entry(code, event)],
            };
            let alerts = alerts(&Trigger::Logs(batch), &place(), 0);
            assert!(
                alerts[0].action.contains(advice),
                "{event}: {}",
                alerts[0].action
            );
        }
    }

    #[test]
    fn an_llm_key_refusal_says_to_check_the_key() {
        let entry = LogEntry {
            event: Some("llm_failed".into()),
            error: Some("the LLM provider answered 401: invalid key".into()),
            ..LogEntry::default()
        };
        assert!(log_action(&[&entry]).contains("LLM_API_KEY"));
    }

    #[test]
    fn alarms_and_their_recovery_have_their_own_fingerprints() {
        let change = |state: &str| AlarmChange {
            name: "stack-dlq".into(),
            state: state.into(),
            old_state: Some("OK".into()),
            reason: "Threshold Crossed".into(),
            region: Some("eu-west-1".into()),
            ..AlarmChange::default()
        };
        let fired = alerts(&Trigger::Alarms(vec![change("ALARM")]), &place(), 0).remove(0);
        let resolved = alerts(&Trigger::Alarms(vec![change("OK")]), &place(), 0).remove(0);
        assert_ne!(fired.fingerprint, resolved.fingerprint);
        assert_eq!(
            render(&fired, "s", 0, None).subject,
            "[s] ALARM alarm stack-dlq: Threshold Crossed"
        );
        assert_eq!(
            render(&resolved, "s", 0, None).subject,
            "[s] RESOLVED alarm stack-dlq: Threshold Crossed"
        );
        assert!(
            render(&fired, "s", 0, None)
                .text
                .contains("#alarmsV2:alarm/stack-dlq")
        );
    }

    #[test]
    fn hostile_text_is_escaped_and_subjects_are_one_bounded_line() {
        let mut alert = alerts(
            &Trigger::DeadLetters(vec![letter("<b>id</b>", "<script>alert(1)</script>")]),
            &place(),
            0,
        )
        .remove(0);
        alert.reason = format!("line one\r\nBcc: evil@example.com {}", "x".repeat(500));
        let mail = render(&alert, "stack", 0, None);
        assert!(!mail.html.contains("<script>"));
        assert!(mail.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(mail.html.contains("&lt;b&gt;id&lt;/b&gt;"));
        assert!(!mail.subject.contains('\n') && !mail.subject.contains('\r'));
        assert!(mail.subject.chars().count() <= MAX_SUBJECT_CHARS);
        assert!(mail.subject.ends_with('…'));
    }

    #[test]
    fn the_held_back_count_is_reported() {
        let alert = alerts(&Trigger::DeadLetters(vec![letter("w", "t")]), &place(), 0).remove(0);
        let mail = render(&alert, "s", 99, Some(1_795_255_200));
        assert!(mail.text.contains("Held back: 99 more alert(s) like this were held back since the last mail at 2026-11-21 10:00:00 UTC."));
        assert!(mail.html.contains("99 more alert(s)"));
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let letters: Vec<DeadLetter> = (0..60).map(|i| letter(&format!("w{i}"), "t")).collect();
        let alert = alerts(&Trigger::DeadLetters(letters), &place(), 0).remove(0);
        assert_eq!(alert.table.rows.len(), MAX_ROWS);
        assert!(render(&alert, "s", 0, None).text.contains("- and 10 more"));
    }
}
