//! Parsing of the webhook notifications (the bodies) that Meta's WhatsApp Cloud API posts.
//!
//! A body is `{"object": "whatsapp_business_account", "entry": [{"changes": [{"field", "value"}]}]}`.
//! Two fields carry what this product acts on: `messages` (inbound `messages[]` and delivery
//! `statuses[]`) and `smb_message_echoes` (`message_echoes[]`: what a person at the business
//! sent from the WhatsApp Business app on the same number, under coexistence). Everything else
//! (calls, template and account updates…) is reported as skipped so that the caller can log it
//! and still answer 200.
//!
//! Parsing is lenient on purpose: each entry, change, message and status is read on its own, so
//! that one element of an unexpected shape never costs the others. A message is only refused
//! when it has no id or no sender, because then it can be neither deduplicated nor answered.

use serde::Deserialize;
use serde_json::Value;

use crate::inbound::{
    ContactCard, INBOUND_MESSAGE_VERSION, InboundMessage, MediaKind, MessageContent,
    MessageContext, OrderItem, Sender,
};

/// The `object` of WhatsApp Business Account webhooks.
pub const WHATSAPP_OBJECT: &str = "whatsapp_business_account";

/// The field of the changes that echo messages sent from the WhatsApp Business app.
pub const ECHOES_FIELD: &str = "smb_message_echoes";

/// Why a body could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The (correctly signed) bytes are not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// Everything one webhook delivery carries, sorted by what the webhook does with it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delivery {
    /// Inbound user messages, in the order Meta listed them: these go to the queue.
    pub messages: Vec<InboundMessage>,
    /// Delivery statuses of messages the business sent: these are logged.
    pub statuses: Vec<StatusUpdate>,
    /// Errors Meta reported for the whole change (`value.errors`): these are logged.
    pub errors: Vec<MetaError>,
    /// Parts of the body that carry nothing to act on, with the reason: these are logged.
    pub skipped: Vec<Skipped>,
    /// Messages that cannot be queued because an id or the sender is missing: logged at ERROR.
    pub malformed: Vec<MalformedMessage>,
    /// Messages sent by a person from the WhatsApp Business app on a business number, in the
    /// order Meta listed them: these go to the queue, each in its user's conversation.
    pub echoes: Vec<MessageEcho>,
}

/// A message a person at the business sent from the WhatsApp Business app (or a linked device)
/// on a number that Cloud API also serves (coexistence). What it said is not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEcho {
    /// The business number it was sent from (`metadata.phone_number_id`).
    pub phone_number_id: String,
    /// Its id (`wamid…`).
    pub message_id: String,
    /// The user's phone number (`to`), digits only when Meta wrote it as `+1 650…`.
    pub to: Option<String>,
    /// The user's business-scoped user id (`to_user_id`, `US.…`), when Meta sent one.
    pub to_user_id: Option<String>,
    /// Its type, as Meta spells it (`text`, `image`, `edit`, `revoke`…).
    pub message_type: Option<String>,
    /// When it was sent, in seconds since the Unix epoch.
    pub timestamp: Option<i64>,
}

impl MessageEcho {
    /// The user it went to, as conversations are keyed: the phone number, else the
    /// business-scoped user id.
    pub fn recipient(&self) -> Option<&str> {
        self.to.as_deref().or(self.to_user_id.as_deref())
    }
}

/// A delivery status (`sent`, `delivered`, `read`, `played`, `failed`) of an outgoing message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The business phone number that sent the message.
    pub phone_number_id: String,
    /// The outgoing message's id.
    pub message_id: String,
    /// The status, as Meta spells it.
    pub status: String,
    /// When the status changed, in seconds since the Unix epoch.
    pub timestamp: Option<i64>,
    /// The recipient's phone number (or, before 2026, their only id).
    pub recipient_id: Option<String>,
    /// The recipient's business-scoped user id (`US.…`), when Meta sent one.
    pub recipient_user_id: Option<String>,
    /// `group` for a message sent to a group chat; absent or `individual` otherwise.
    pub recipient_type: Option<String>,
    /// Why the message failed, for `failed`.
    pub errors: Vec<MetaError>,
}

impl StatusUpdate {
    /// Whether Meta reports that the message could not be delivered.
    pub fn is_failed(&self) -> bool {
        self.status == "failed"
    }

    /// The user the message went to, as conversations are keyed: the phone number when Meta
    /// sent it, else the business-scoped user id. `None` for a group message.
    pub fn recipient(&self) -> Option<&str> {
        if self.recipient_type.as_deref() == Some("group") {
            return None;
        }
        self.recipient_id
            .as_deref()
            .or(self.recipient_user_id.as_deref())
            .filter(|id| !id.is_empty())
    }
}

/// An error object as Meta puts it in webhooks: `{code, title, message, error_data.details}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetaError {
    /// Meta's numeric error code, such as 131047.
    pub code: Option<i64>,
    /// A short title.
    pub title: Option<String>,
    /// Meta's longer explanation, when it sent one.
    pub details: Option<String>,
}

/// A part of a delivery that carries nothing to queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Skipped {
    /// The body is JSON, but not a WhatsApp Business Account webhook.
    Object(String),
    /// A change of a field this product does not act on, such as `calls` or `account_update`.
    Field(String),
    /// An entry or change whose shape is not the documented one.
    Shape(&'static str),
}

/// An inbound message that cannot be queued.
#[derive(Debug, Clone, PartialEq)]
pub struct MalformedMessage {
    /// The message id, when there was one.
    pub message_id: Option<String>,
    /// What is missing.
    pub reason: &'static str,
}

/// Reads a webhook body. Fails only when the bytes are not JSON; any JSON is a [`Delivery`].
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let root: Value = super::lenient_json::from_slice_lenient(body)?;
    let mut delivery = Delivery::default();
    match root.get("object").and_then(Value::as_str) {
        Some(WHATSAPP_OBJECT) => {}
        Some(other) => {
            delivery.skipped.push(Skipped::Object(other.to_owned()));
            return Ok(delivery);
        }
        None => {
            delivery.skipped.push(Skipped::Shape("no object"));
            return Ok(delivery);
        }
    }
    let Some(entries) = root.get("entry").and_then(Value::as_array) else {
        delivery.skipped.push(Skipped::Shape("no entry list"));
        return Ok(delivery);
    };
    for entry in entries {
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            delivery
                .skipped
                .push(Skipped::Shape("an entry without a changes list"));
            continue;
        };
        for change in changes {
            match change.get("field").and_then(Value::as_str) {
                Some("messages") => match change.get("value") {
                    Some(value) if value.is_object() => read_messages_value(value, &mut delivery),
                    _ => delivery
                        .skipped
                        .push(Skipped::Shape("a messages change without a value")),
                },
                Some(ECHOES_FIELD) => match change.get("value") {
                    Some(value) if value.is_object() => read_echoes_value(value, &mut delivery),
                    _ => delivery
                        .skipped
                        .push(Skipped::Shape("an echoes change without a value")),
                },
                Some(field) => delivery.skipped.push(Skipped::Field(field.to_owned())),
                None => delivery
                    .skipped
                    .push(Skipped::Shape("a change without a field")),
            }
        }
    }
    Ok(delivery)
}

fn read_messages_value(value: &Value, delivery: &mut Delivery) {
    let metadata = value.get("metadata");
    let phone_number_id = metadata.and_then(|m| str_field(m, "phone_number_id"));
    let display_phone_number = metadata.and_then(|m| str_field(m, "display_phone_number"));
    let contacts: Vec<Contact> = list(value, "contacts")
        .iter()
        .filter_map(|c| Contact::deserialize(c).ok())
        .collect();

    for raw in list(value, "messages") {
        let Some(phone_number_id) = phone_number_id.clone() else {
            delivery.malformed.push(MalformedMessage {
                message_id: str_field(raw, "id"),
                reason: "metadata.phone_number_id is missing",
            });
            continue;
        };
        match read_message(
            raw,
            phone_number_id,
            display_phone_number.clone(),
            &contacts,
        ) {
            Ok(message) => delivery.messages.push(message),
            Err(malformed) => delivery.malformed.push(malformed),
        }
    }
    for raw in list(value, "statuses") {
        match read_status(raw, phone_number_id.as_deref().unwrap_or_default()) {
            Some(status) => delivery.statuses.push(status),
            None => delivery
                .skipped
                .push(Skipped::Shape("a status without id or status")),
        }
    }
    delivery
        .errors
        .extend(list(value, "errors").iter().map(read_error));
}

/// The `message_echoes[]` of an `smb_message_echoes` change; an echo without an id, a user or
/// a business number is skipped as a shape.
fn read_echoes_value(value: &Value, delivery: &mut Delivery) {
    let phone_number_id = value
        .get("metadata")
        .and_then(|m| str_field(m, "phone_number_id"))
        .filter(|id| !id.is_empty());
    for raw in list(value, "message_echoes") {
        let non_empty = |key: &str| str_field(raw, key).filter(|s| !s.trim().is_empty());
        let echo = MessageEcho {
            phone_number_id: phone_number_id.clone().unwrap_or_default(),
            message_id: non_empty("id").unwrap_or_default(),
            to: non_empty("to").map(|to| user_phone_number(&to)),
            to_user_id: non_empty("to_user_id"),
            message_type: non_empty("type"),
            timestamp: raw.get("timestamp").and_then(epoch_seconds),
        };
        if echo.phone_number_id.is_empty() || echo.message_id.is_empty() {
            delivery
                .skipped
                .push(Skipped::Shape("an echo without an id or a business number"));
        } else if echo.recipient().is_none() {
            delivery
                .skipped
                .push(Skipped::Shape("an echo without a user"));
        } else {
            delivery.echoes.push(echo);
        }
    }
}

/// A user's phone number as conversations are keyed (`wa_id`: digits only): an echo's `to` is
/// the number as the business typed it, such as `+1 650-555-1234`. Anything else is kept as is.
fn user_phone_number(to: &str) -> String {
    let to = to.trim();
    let digits: String = to.chars().filter(char::is_ascii_digit).collect();
    let formatting = |c: char| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.');
    if !digits.is_empty() && to.chars().all(formatting) {
        digits
    } else {
        to.to_owned()
    }
}

fn read_message(
    raw: &Value,
    phone_number_id: String,
    display_phone_number: Option<String>,
    contacts: &[Contact],
) -> Result<InboundMessage, MalformedMessage> {
    let id = str_field(raw, "id");
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(MalformedMessage {
            message_id: None,
            reason: "the message has no id",
        });
    };
    let Some(sender) = read_sender(raw, contacts) else {
        return Err(MalformedMessage {
            message_id: Some(id),
            reason: "the message has neither from nor from_user_id, and the change no single contact",
        });
    };
    let name = contact_name(contacts, &sender);
    let message_type = str_field(raw, "type").unwrap_or_else(|| "unknown".to_owned());
    Ok(InboundMessage {
        v: INBOUND_MESSAGE_VERSION,
        phone_number_id,
        display_phone_number,
        name,
        id,
        timestamp: raw
            .get("timestamp")
            .and_then(epoch_seconds)
            .unwrap_or_default(),
        context: raw.get("context").and_then(read_context),
        content: read_content(&message_type, raw),
        sender,
    })
}

/// Who sent a message: its `from` and `from_user_id`; or, for a message with neither (some
/// payloads of the username era carry the sender only in the change's `contacts`), the
/// change's one contact.
fn read_sender(raw: &Value, contacts: &[Contact]) -> Option<Sender> {
    let non_empty = |value: Option<String>| value.filter(|s| !s.is_empty());
    let own = Sender {
        wa_id: non_empty(str_field(raw, "from")),
        user_id: non_empty(str_field(raw, "from_user_id")),
    };
    if own.wa_id.is_some() || own.user_id.is_some() {
        return Some(own);
    }
    let [only] = contacts else {
        return None;
    };
    let sender = Sender {
        wa_id: non_empty(only.wa_id.clone()),
        user_id: non_empty(only.user_id.clone()),
    };
    (sender.wa_id.is_some() || sender.user_id.is_some()).then_some(sender)
}

fn read_context(context: &Value) -> Option<MessageContext> {
    let forwarded = [
        context.get("forwarded"),
        context.get("frequently_forwarded"),
    ]
    .into_iter()
    .any(|flag| flag.and_then(Value::as_bool).unwrap_or(false));
    let reply_to = str_field(context, "id");
    (forwarded || reply_to.is_some()).then_some(MessageContext {
        reply_to,
        forwarded,
    })
}

fn contact_name(contacts: &[Contact], sender: &Sender) -> Option<String> {
    let matching = contacts.iter().find(|c| {
        (c.wa_id.is_some() && c.wa_id == sender.wa_id)
            || (c.user_id.is_some() && c.user_id == sender.user_id)
    });
    let contact = match (matching, contacts) {
        (Some(contact), _) => contact,
        (None, [only]) => only,
        (None, _) => return None,
    };
    contact
        .profile
        .as_ref()?
        .name
        .clone()
        .filter(|n| !n.is_empty())
}

/// Reads the type-specific part of a message. A known type whose details are missing or of an
/// unexpected shape becomes [`MessageContent::Unsupported`] rather than an error.
fn read_content(message_type: &str, raw: &Value) -> MessageContent {
    let details = raw.get(message_type);
    let parsed = match message_type {
        "text" => details
            .and_then(|d| str_field(d, "body"))
            .map(|body| MessageContent::Text { body }),
        "interactive" => details.and_then(read_interactive),
        "button" => details.map(|d| MessageContent::QuickReply {
            payload: str_field(d, "payload").unwrap_or_default(),
            text: str_field(d, "text").unwrap_or_default(),
        }),
        "image" | "video" | "audio" | "document" | "sticker" => {
            details.map(|d| read_media(message_type, d))
        }
        "location" => details.and_then(|d| {
            Some(MessageContent::Location {
                latitude: d.get("latitude")?.as_f64()?,
                longitude: d.get("longitude")?.as_f64()?,
                name: str_field(d, "name"),
                address: str_field(d, "address"),
            })
        }),
        "contacts" => details.and_then(Value::as_array).map(|cards| {
            let cards: Vec<ContactCard> = cards.iter().filter_map(read_contact_card).collect();
            MessageContent::Contacts {
                names: cards.iter().map(|card| card.name.clone()).collect(),
                cards,
            }
        }),
        "reaction" => details.and_then(|d| {
            Some(MessageContent::Reaction {
                message_id: str_field(d, "message_id")?,
                emoji: str_field(d, "emoji").filter(|e| !e.is_empty()),
            })
        }),
        "order" => details.map(|d| MessageContent::Order {
            item_count: list(d, "product_items").len(),
            text: str_field(d, "text").filter(|t| !t.is_empty()),
            items: list(d, "product_items")
                .iter()
                .filter_map(read_order_item)
                .collect(),
        }),
        "edit" => details.and_then(|d| {
            Some(MessageContent::Edit {
                original_message_id: str_field(d, "original_message_id")?,
                text: d.get("message").and_then(edited_text),
            })
        }),
        "revoke" => details.and_then(|d| {
            Some(MessageContent::Revoke {
                original_message_id: str_field(d, "original_message_id")?,
            })
        }),
        "system" => details.map(|d| MessageContent::System {
            body: str_field(d, "body"),
            kind: str_field(d, "type"),
            user_id: str_field(d, "user_id"),
            previous_user_id: str_field(d, "previous_user_id"),
        }),
        _ => None,
    };
    parsed.unwrap_or_else(|| MessageContent::Unsupported {
        message_type: message_type.to_owned(),
        error_code: list(raw, "errors")
            .first()
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64),
    })
}

fn read_interactive(details: &Value) -> Option<MessageContent> {
    let kind = str_field(details, "type")?;
    let reply = details.get(kind.as_str())?;
    match kind.as_str() {
        "button_reply" => Some(MessageContent::ButtonReply {
            id: str_field(reply, "id").unwrap_or_default(),
            title: str_field(reply, "title")?,
        }),
        "list_reply" => Some(MessageContent::ListReply {
            id: str_field(reply, "id").unwrap_or_default(),
            title: str_field(reply, "title")?,
            description: str_field(reply, "description"),
        }),
        "nfm_reply" => Some(MessageContent::FlowReply {
            body: str_field(reply, "body"),
            response_json: str_field(reply, "response_json").unwrap_or_default(),
        }),
        _ => None,
    }
}

fn read_media(message_type: &str, details: &Value) -> MessageContent {
    let kind = match message_type {
        "image" => MediaKind::Image,
        "video" => MediaKind::Video,
        "audio" => MediaKind::Audio,
        "document" => MediaKind::Document,
        _ => MediaKind::Sticker,
    };
    MessageContent::Media {
        kind,
        media_id: str_field(details, "id"),
        mime_type: str_field(details, "mime_type"),
        caption: str_field(details, "caption").filter(|c| !c.is_empty()),
        filename: str_field(details, "filename"),
        voice: details
            .get("voice")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// The text of an edited message: its new body, or the new caption of edited media.
fn edited_text(message: &Value) -> Option<String> {
    let kind = str_field(message, "type")?;
    let details = message.get(kind.as_str())?;
    str_field(details, "body").or_else(|| str_field(details, "caption"))
}

/// A contact card with a formatted name; its phone numbers as written.
fn read_contact_card(card: &Value) -> Option<ContactCard> {
    let name = card
        .get("name")
        .and_then(|n| str_field(n, "formatted_name"))?;
    let phones = list(card, "phones")
        .iter()
        .filter_map(|phone| str_field(phone, "phone").or_else(|| str_field(phone, "wa_id")))
        .collect();
    Some(ContactCard { name, phones })
}

/// An ordered product; numbers Meta may send as numbers or as text are kept as text.
fn read_order_item(item: &Value) -> Option<OrderItem> {
    let text = |key: &str| -> Option<String> {
        match item.get(key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    };
    Some(OrderItem {
        product_retailer_id: text("product_retailer_id")?,
        quantity: text("quantity"),
        item_price: text("item_price"),
        currency: text("currency"),
    })
}

fn read_status(raw: &Value, phone_number_id: &str) -> Option<StatusUpdate> {
    Some(StatusUpdate {
        phone_number_id: phone_number_id.to_owned(),
        message_id: str_field(raw, "id")?,
        status: str_field(raw, "status")?,
        timestamp: raw.get("timestamp").and_then(epoch_seconds),
        recipient_id: str_field(raw, "recipient_id"),
        recipient_user_id: str_field(raw, "recipient_user_id"),
        recipient_type: str_field(raw, "recipient_type"),
        errors: list(raw, "errors").iter().map(read_error).collect(),
    })
}

fn read_error(raw: &Value) -> MetaError {
    MetaError {
        code: raw.get("code").and_then(Value::as_i64),
        title: str_field(raw, "title").or_else(|| str_field(raw, "message")),
        details: raw.get("error_data").and_then(|d| str_field(d, "details")),
    }
}

#[derive(Deserialize)]
struct Contact {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Meta sends timestamps as strings of seconds ("1697043223"), and sometimes as numbers.
fn epoch_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]
        }))
        .unwrap()
    }

    fn one_message(message: Value) -> InboundMessage {
        let delivery = parse(&body(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "15551234567"}],
            "messages": [message]
        })))
        .unwrap();
        assert!(delivery.malformed.is_empty(), "{:?}", delivery.malformed);
        assert_eq!(delivery.messages.len(), 1);
        delivery.messages.into_iter().next().unwrap()
    }

    fn content(message: Value) -> MessageContent {
        one_message(message).content
    }

    #[test]
    fn reads_a_text_message_with_its_envelope() {
        let message = one_message(json!({
            "from": "15551234567", "id": "wamid.1", "timestamp": "1697043223",
            "type": "text", "text": {"body": "hello"}
        }));
        assert_eq!(message.phone_number_id, "PNID");
        assert_eq!(message.display_phone_number.as_deref(), Some("15550001111"));
        assert_eq!(message.sender.wa_id.as_deref(), Some("15551234567"));
        assert_eq!(message.name.as_deref(), Some("Ana"));
        assert_eq!(message.id, "wamid.1");
        assert_eq!(message.timestamp, 1_697_043_223);
        assert_eq!(message.context, None);
        assert_eq!(
            message.content,
            MessageContent::Text {
                body: "hello".into()
            }
        );
    }

    #[test]
    fn reads_button_list_and_quick_replies_by_their_titles() {
        let button = content(json!({"from": "1", "id": "w", "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}}}));
        assert_eq!(
            button,
            MessageContent::ButtonReply {
                id: "yes".into(),
                title: "Yes please".into()
            }
        );
        let list_reply = content(json!({"from": "1", "id": "w", "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": "r1", "title": "Row", "description": "D"}}}));
        assert_eq!(
            list_reply,
            MessageContent::ListReply {
                id: "r1".into(),
                title: "Row".into(),
                description: Some("D".into())
            }
        );
        let quick = content(
            json!({"from": "1", "id": "w", "type": "button", "button": {"payload": "P", "text": "Stop"}}),
        );
        assert_eq!(
            quick,
            MessageContent::QuickReply {
                payload: "P".into(),
                text: "Stop".into()
            }
        );
    }

    #[test]
    fn reads_media_with_caption_and_voice_flag() {
        let image = content(json!({"from": "1", "id": "w", "type": "image",
            "image": {"id": "m1", "mime_type": "image/jpeg", "caption": "what is this?"}}));
        assert_eq!(
            image,
            MessageContent::Media {
                kind: MediaKind::Image,
                media_id: Some("m1".into()),
                mime_type: Some("image/jpeg".into()),
                caption: Some("what is this?".into()),
                filename: None,
                voice: false
            }
        );
        let voice = content(
            json!({"from": "1", "id": "w", "type": "audio", "audio": {"id": "m2", "voice": true}}),
        );
        assert!(matches!(
            voice,
            MessageContent::Media {
                kind: MediaKind::Audio,
                voice: true,
                ..
            }
        ));
    }

    #[test]
    fn reads_reactions_and_removed_reactions() {
        let added = content(json!({"from": "1", "id": "w", "type": "reaction",
            "reaction": {"message_id": "wamid.x", "emoji": "👍"}}));
        assert_eq!(
            added,
            MessageContent::Reaction {
                message_id: "wamid.x".into(),
                emoji: Some("👍".into())
            }
        );
        let removed = content(json!({"from": "1", "id": "w", "type": "reaction",
            "reaction": {"message_id": "wamid.x", "emoji": ""}}));
        assert_eq!(
            removed,
            MessageContent::Reaction {
                message_id: "wamid.x".into(),
                emoji: None
            }
        );
    }

    #[test]
    fn reads_location_contacts_order_edit_revoke_and_system() {
        let location = content(json!({"from": "1", "id": "w", "type": "location",
            "location": {"latitude": 1.5, "longitude": -2.0, "name": "Home"}}));
        assert_eq!(
            location,
            MessageContent::Location {
                latitude: 1.5,
                longitude: -2.0,
                name: Some("Home".into()),
                address: None
            }
        );
        let contacts = content(json!({"from": "1", "id": "w", "type": "contacts",
            "contacts": [{"name": {"formatted_name": "A B"},
                          "phones": [{"phone": "+1 555 0100", "type": "CELL"}, {"wa_id": "15550101"}, {}]},
                         {"name": {"first_name": "C"}}]}));
        assert_eq!(
            contacts,
            MessageContent::Contacts {
                names: vec!["A B".into()],
                cards: vec![ContactCard {
                    name: "A B".into(),
                    phones: vec!["+1 555 0100".into(), "15550101".into()]
                }]
            }
        );
        let order = content(json!({"from": "1", "id": "w", "type": "order",
            "order": {"text": "", "product_items": [{}, {"product_retailer_id": "SKU-1",
                "quantity": 2, "item_price": "9.90", "currency": "EUR"}]}}));
        assert_eq!(
            order,
            MessageContent::Order {
                item_count: 2,
                text: None,
                items: vec![OrderItem {
                    product_retailer_id: "SKU-1".into(),
                    quantity: Some("2".into()),
                    item_price: Some("9.90".into()),
                    currency: Some("EUR".into())
                }]
            }
        );
        let edit = content(
            json!({"from": "1", "id": "w", "type": "edit", "edit": {"original_message_id": "o",
            "message": {"type": "image", "image": {"caption": "new caption"}}}}),
        );
        assert_eq!(
            edit,
            MessageContent::Edit {
                original_message_id: "o".into(),
                text: Some("new caption".into())
            }
        );
        let revoke = content(
            json!({"from": "1", "id": "w", "type": "revoke", "revoke": {"original_message_id": "o"}}),
        );
        assert_eq!(
            revoke,
            MessageContent::Revoke {
                original_message_id: "o".into()
            }
        );
        let system = content(json!({"from": "1", "id": "w", "type": "system",
            "system": {"body": "changed", "type": "user_changed_number"}}));
        assert_eq!(
            system,
            MessageContent::System {
                body: Some("changed".into()),
                kind: Some("user_changed_number".into()),
                user_id: None,
                previous_user_id: None,
            }
        );
        let changed_id = content(
            json!({"from_user_id": "US.old", "id": "w", "type": "system",
            "system": {"body": "User changed", "type": "user_changed_user_id",
                "user_id": "US.new", "previous_user_id": "US.old"}}),
        );
        assert_eq!(
            changed_id,
            MessageContent::System {
                body: Some("User changed".into()),
                kind: Some("user_changed_user_id".into()),
                user_id: Some("US.new".into()),
                previous_user_id: Some("US.old".into()),
            }
        );
    }

    #[test]
    fn unknown_and_incomplete_types_become_unsupported() {
        let unsupported = content(json!({"from": "1", "id": "w", "type": "unsupported",
            "errors": [{"code": 131051, "title": "Message type unknown"}]}));
        assert_eq!(
            unsupported,
            MessageContent::Unsupported {
                message_type: "unsupported".into(),
                error_code: Some(131051)
            }
        );
        let bare_interactive = content(json!({"from": "1", "id": "w", "type": "interactive"}));
        assert_eq!(
            bare_interactive,
            MessageContent::Unsupported {
                message_type: "interactive".into(),
                error_code: None
            }
        );
        let future = content(json!({"from": "1", "id": "w", "type": "hologram", "hologram": {}}));
        assert_eq!(
            future,
            MessageContent::Unsupported {
                message_type: "hologram".into(),
                error_code: None
            }
        );
        let untyped = content(json!({"from": "1", "id": "w"}));
        assert_eq!(
            untyped,
            MessageContent::Unsupported {
                message_type: "unknown".into(),
                error_code: None
            }
        );
    }

    #[test]
    fn reads_reply_and_forward_context() {
        let reply = one_message(
            json!({"from": "1", "id": "w", "type": "text", "text": {"body": "x"},
            "context": {"from": "2", "id": "wamid.orig"}}),
        );
        assert_eq!(
            reply.context,
            Some(MessageContext {
                reply_to: Some("wamid.orig".into()),
                forwarded: false
            })
        );
        let forwarded = one_message(
            json!({"from": "1", "id": "w", "type": "text", "text": {"body": "x"},
            "context": {"frequently_forwarded": true}}),
        );
        assert_eq!(
            forwarded.context,
            Some(MessageContext {
                reply_to: None,
                forwarded: true
            })
        );
    }

    #[test]
    fn a_user_known_only_by_user_id_is_a_sender() {
        let message = one_message(
            json!({"from_user_id": "US.42", "id": "w", "type": "text", "text": {"body": "x"}}),
        );
        assert_eq!(
            message.sender,
            Sender {
                wa_id: None,
                user_id: Some("US.42".into())
            }
        );
        assert_eq!(message.conversation().as_str(), "PNID:US.42");
    }

    #[test]
    fn takes_the_name_of_the_matching_contact() {
        let delivery = parse(&body(json!({
            "metadata": {"phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "1"}, {"profile": {"name": "Bo"}, "wa_id": "2"}],
            "messages": [
                {"from": "2", "id": "a", "type": "text", "text": {"body": "x"}},
                {"from": "3", "id": "b", "type": "text", "text": {"body": "y"}}
            ]
        })))
        .unwrap();
        assert_eq!(delivery.messages[0].name.as_deref(), Some("Bo"));
        assert_eq!(delivery.messages[1].name, None);
    }

    #[test]
    fn messages_without_id_or_sender_are_malformed_and_others_survive() {
        let delivery = parse(&body(json!({
            "metadata": {"phone_number_id": "PNID"},
            "messages": [
                {"from": "1", "type": "text", "text": {"body": "no id"}},
                {"id": "w2", "type": "text", "text": {"body": "no sender"}},
                {"from": "1", "id": "w3", "type": "text", "text": {"body": "fine"}}
            ]
        })))
        .unwrap();
        assert_eq!(delivery.messages.len(), 1);
        assert_eq!(delivery.messages[0].id, "w3");
        assert_eq!(delivery.malformed.len(), 2);
        assert_eq!(delivery.malformed[1].message_id.as_deref(), Some("w2"));
    }

    #[test]
    fn a_message_without_from_is_attributed_to_the_changes_only_contact() {
        // Some payloads of the username era carry the sender only in `contacts`.
        let delivery = parse(&body(json!({
            "metadata": {"phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ana"}, "user_id": "US.42"}],
            "messages": [{"id": "w1", "type": "text", "text": {"body": "hola"}}]
        })))
        .unwrap();
        assert!(delivery.malformed.is_empty(), "{:?}", delivery.malformed);
        let message = &delivery.messages[0];
        assert_eq!(
            message.sender,
            Sender {
                wa_id: None,
                user_id: Some("US.42".into())
            }
        );
        assert_eq!(message.name.as_deref(), Some("Ana"));
        assert_eq!(message.conversation().as_str(), "PNID:US.42");

        // With two contacts nobody can tell who wrote: malformed, as before.
        let ambiguous = parse(&body(json!({
            "metadata": {"phone_number_id": "PNID"},
            "contacts": [{"user_id": "US.1"}, {"user_id": "US.2"}],
            "messages": [{"id": "w1", "type": "text", "text": {"body": "?"}}]
        })))
        .unwrap();
        assert!(ambiguous.messages.is_empty());
        assert_eq!(ambiguous.malformed.len(), 1);
    }

    #[test]
    fn a_status_names_its_recipient_by_phone_then_user_id_and_never_a_group() {
        let delivery = parse(&body(json!({
            "metadata": {"phone_number_id": "PNID"},
            "statuses": [
                {"id": "wamid.u", "status": "failed", "recipient_user_id": "US.1"},
                {"id": "wamid.b", "status": "failed", "recipient_id": "15551234567", "recipient_user_id": "US.2"},
                {"id": "wamid.g", "status": "failed", "recipient_id": "120363", "recipient_type": "group",
                 "recipient_participant_id": "15551234567"},
                {"id": "wamid.n", "status": "failed", "recipient_id": ""}
            ]
        })))
        .unwrap();
        let recipients: Vec<Option<&str>> = delivery
            .statuses
            .iter()
            .map(StatusUpdate::recipient)
            .collect();
        assert_eq!(recipients, [Some("US.1"), Some("15551234567"), None, None]);
    }

    #[test]
    fn reads_statuses_with_their_errors() {
        let delivery = parse(&body(json!({
            "metadata": {"phone_number_id": "PNID"},
            "statuses": [
                {"id": "wamid.s", "status": "delivered", "timestamp": "1700000000", "recipient_id": "15551234567"},
                {"id": "wamid.f", "status": "failed", "timestamp": 1700000001, "recipient_id": "15551234567",
                 "errors": [{"code": 131047, "title": "Re-engagement message",
                             "error_data": {"details": "more than 24 hours"}}]}
            ]
        })))
        .unwrap();
        assert!(delivery.messages.is_empty());
        assert_eq!(delivery.statuses.len(), 2);
        assert!(!delivery.statuses[0].is_failed());
        let failed = &delivery.statuses[1];
        assert!(failed.is_failed());
        assert_eq!(failed.recipient(), Some("15551234567"));
        assert_eq!(failed.timestamp, Some(1_700_000_001));
        assert_eq!(
            failed.errors,
            vec![MetaError {
                code: Some(131047),
                title: Some("Re-engagement message".into()),
                details: Some("more than 24 hours".into())
            }]
        );
    }

    #[test]
    fn other_fields_and_objects_are_skipped() {
        let calls = serde_json::to_vec(&json!({"object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "calls", "value": {"statuses": [{"id": "wacid", "status": "RINGING"}]}}]}]}))
        .unwrap();
        let delivery = parse(&calls).unwrap();
        assert!(delivery.statuses.is_empty());
        assert_eq!(delivery.skipped, vec![Skipped::Field("calls".into())]);

        let page = parse(br#"{"object":"page","entry":[]}"#).unwrap();
        assert_eq!(page.skipped, vec![Skipped::Object("page".into())]);
        assert_eq!(
            parse(b"[1,2]").unwrap().skipped,
            vec![Skipped::Shape("no object")]
        );
        assert_eq!(
            parse(b"{}").unwrap().skipped,
            vec![Skipped::Shape("no object")]
        );
    }

    #[test]
    fn refuses_bytes_that_are_not_json() {
        assert!(matches!(parse(b"not json"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse(b""), Err(ParseError::NotJson(_))));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(ParseError::NotJson(_))));
    }

    #[test]
    fn decodes_meta_escapes_into_the_text() {
        let delivery = parse(
            br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","type":"text","text":{"body":"Gr\u00fc\u00dfe \ud83d\ude00"}}]}}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            delivery.messages[0].content,
            MessageContent::Text {
                body: "Grüße 😀".into()
            }
        );
    }

    #[test]
    fn keeps_the_order_of_messages_across_entries_and_changes() {
        let raw = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [
            {"changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "P"},
                "messages": [{"from": "1", "id": "a", "type": "text", "text": {"body": "1"}},
                             {"from": "1", "id": "b", "type": "text", "text": {"body": "2"}}]}}]},
            {"changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "P"},
                "messages": [{"from": "1", "id": "c", "type": "text", "text": {"body": "3"}}]}}]}
        ]}))
        .unwrap();
        let ids: Vec<_> = parse(&raw)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    /// An `smb_message_echoes` delivery as Meta documents it: a text and an image sent from the
    /// Business app, one to a `+`-written number, one to a user known by user id only.
    fn echoes_body() -> Vec<u8> {
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{
            "id": "102290129340398",
            "changes": [{"field": "smb_message_echoes", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "message_echoes": [
                    {"from": "15550783881", "to": "+1 650-555-1234",
                     "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
                     "timestamp": "1739321024", "type": "text",
                     "text": {"body": "Here's the info you requested!"}},
                    {"from": "15550783881", "to_user_id": "US.13491208655302741918",
                     "id": "wamid.echo2", "timestamp": 1739321030, "type": "image",
                     "image": {"id": "1479537139650973", "caption": "our menu"}}
                ]}}]}]}))
        .unwrap()
    }

    #[test]
    fn reads_business_app_echoes_without_their_content() {
        let delivery = parse(&echoes_body()).unwrap();
        assert!(delivery.messages.is_empty() && delivery.skipped.is_empty());
        assert_eq!(
            delivery.echoes,
            vec![
                MessageEcho {
                    phone_number_id: "106540352242922".into(),
                    message_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
                        .into(),
                    to: Some("16505551234".into()),
                    to_user_id: None,
                    message_type: Some("text".into()),
                    timestamp: Some(1_739_321_024),
                },
                MessageEcho {
                    phone_number_id: "106540352242922".into(),
                    message_id: "wamid.echo2".into(),
                    to: None,
                    to_user_id: Some("US.13491208655302741918".into()),
                    message_type: Some("image".into()),
                    timestamp: Some(1_739_321_030),
                },
            ]
        );
        assert_eq!(delivery.echoes[0].recipient(), Some("16505551234"));
        assert_eq!(
            delivery.echoes[1].recipient(),
            Some("US.13491208655302741918")
        );
        assert!(!format!("{:?}", delivery.echoes).contains("info you requested"));
    }

    #[test]
    fn an_echo_prefers_the_phone_number_and_keeps_an_id_that_is_not_one() {
        assert_eq!(user_phone_number("16505551234"), "16505551234");
        assert_eq!(user_phone_number(" +44 (20) 7946.0958 "), "442079460958");
        assert_eq!(user_phone_number("US.1349"), "US.1349");
        assert_eq!(user_phone_number("+"), "+");
        let raw = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{
            "changes": [{"field": "smb_message_echoes", "value": {"metadata": {"phone_number_id": "P"},
                "message_echoes": [{"to": "15551234567", "to_user_id": "US.1", "id": "w", "type": "revoke",
                    "revoke": {"original_message_id": "w0"}}]}}]}]}))
        .unwrap();
        assert_eq!(
            parse(&raw).unwrap().echoes[0].recipient(),
            Some("15551234567")
        );
    }

    #[test]
    fn echoes_of_an_unexpected_shape_are_skipped_one_by_one() {
        let raw = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [
            {"changes": [
                {"field": "smb_message_echoes", "value": {"metadata": {"phone_number_id": "P"},
                    "message_echoes": [
                        {"to": "1", "type": "text"},
                        {"id": "no-user", "to": " ", "type": "text"},
                        {"id": "good", "to": "15551234567"},
                        "not an object"
                    ]}},
                {"field": "smb_message_echoes", "value": {
                    "message_echoes": [{"id": "no-number", "to": "1"}]}},
                {"field": "smb_message_echoes", "value": "text"},
                {"field": "smb_message_echoes", "value": {"metadata": {"phone_number_id": "P"},
                    "message_echoes": {"id": "not-a-list"}}}
            ]}
        ]}))
        .unwrap();
        let delivery = parse(&raw).unwrap();
        let ids: Vec<&str> = delivery
            .echoes
            .iter()
            .map(|e| e.message_id.as_str())
            .collect();
        assert_eq!(ids, ["good"]);
        assert_eq!(delivery.echoes[0].timestamp, None);
        assert_eq!(
            delivery.skipped,
            vec![
                Skipped::Shape("an echo without an id or a business number"),
                Skipped::Shape("an echo without a user"),
                Skipped::Shape("an echo without an id or a business number"),
                Skipped::Shape("an echo without an id or a business number"),
                Skipped::Shape("an echoes change without a value"),
            ]
        );
    }
}
