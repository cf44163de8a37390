//! The body the webhook puts on the queue for each inbound WhatsApp message, and that the
//! processor reads back. It is versioned (`v`) so that both sides can be deployed apart.

use serde::{Deserialize, Serialize};

/// Version of [`InboundMessage`] written by this build.
pub const INBOUND_MESSAGE_VERSION: u32 = 1;

/// One message a WhatsApp user sent to one of the business's phone numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Body version, [`INBOUND_MESSAGE_VERSION`] when written by this build.
    pub v: u32,
    /// The business phone number the user wrote to (`metadata.phone_number_id`).
    pub phone_number_id: String,
    /// The business number as users see it, when Meta sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    /// Who wrote.
    pub sender: Sender,
    /// The user's WhatsApp profile name, when Meta sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Meta's message id (`wamid…`), unique per message and stable across redeliveries.
    pub id: String,
    /// When the user sent it, in seconds since the Unix epoch.
    pub timestamp: i64,
    /// Reply and forwarding context, when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<MessageContext>,
    /// What the message says or carries.
    pub content: MessageContent,
}

impl InboundMessage {
    /// The conversation this message belongs to: one per business number and user.
    pub fn conversation(&self) -> ConversationKey {
        ConversationKey::new(&self.phone_number_id, self.sender.id())
    }
}

/// The user who sent a message. Meta identifies users by phone number (`wa_id`) and, for users
/// who hide their number behind a username, by a business-scoped user id (`US.…`) only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The user's phone number (`from`), absent for users known only by their user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    /// The business-scoped user id (`from_user_id`), when Meta sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Sender {
    /// The identifier replies are addressed to and conversations are keyed by: the phone number
    /// when known, else the business-scoped user id.
    pub fn id(&self) -> &str {
        self.wa_id
            .as_deref()
            .or(self.user_id.as_deref())
            .unwrap_or_default()
    }
}

/// Identifies one conversation: a business phone number and one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey(String);

impl ConversationKey {
    /// Builds the key of the conversation between `phone_number_id` and `user`.
    pub fn new(phone_number_id: &str, user: &str) -> Self {
        Self(format!("{phone_number_id}:{user}"))
    }

    /// The key as text, `<phone_number_id>:<user>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reply and forwarding context of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageContext {
    /// The message this one replies to, when it is a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Whether the user forwarded this message from elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
}

/// The kind of media a media message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A video clip.
    Video,
    /// An audio file or, with `voice`, a voice note.
    Audio,
    /// A file such as a PDF.
    Document,
    /// A sticker.
    Sticker,
}

impl MediaKind {
    /// The `type` Meta uses for this media kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }
}

/// What an inbound message carries, one variant per kind of message Meta delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// Plain text.
    Text {
        /// What the user wrote.
        body: String,
    },
    /// A tap on a reply button of an interactive message.
    ButtonReply {
        /// The button's id, as the business set it.
        id: String,
        /// The button's title, as the user saw it.
        title: String,
    },
    /// A choice from an interactive list.
    ListReply {
        /// The row's id, as the business set it.
        id: String,
        /// The row's title, as the user saw it.
        title: String,
        /// The row's description, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// A tap on a quick-reply button of a template message.
    QuickReply {
        /// The button's payload, as the business set it.
        payload: String,
        /// The button's text, as the user saw it.
        text: String,
    },
    /// The answer to a WhatsApp Flow.
    FlowReply {
        /// The text shown in the chat, such as "Sent".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The flow's answers, as the JSON text Meta sent.
        response_json: String,
    },
    /// An image, video, audio, document or sticker.
    Media {
        /// Which kind of media.
        kind: MediaKind,
        /// Meta's media id, to download it through the Graph API.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// The MIME type Meta reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        /// The caption the user wrote under an image, video or document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// A document's file name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// Whether an audio message is a voice note.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        voice: bool,
    },
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// The place's name, for a chosen place.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The place's address, for a chosen place.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// One or more shared contact cards.
    Contacts {
        /// The formatted names of the contacts.
        names: Vec<String>,
        /// The cards with their phone numbers (bodies written before cards were kept have
        /// none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cards: Vec<ContactCard>,
    },
    /// A reaction to an earlier message; no emoji means the reaction was removed.
    Reaction {
        /// The message reacted to.
        message_id: String,
        /// The emoji, absent or empty when the reaction was removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
    },
    /// An order from the business's catalog.
    Order {
        /// How many different products were ordered.
        item_count: usize,
        /// The note the user added.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The ordered products (bodies written before items were kept have none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        items: Vec<OrderItem>,
    },
    /// The user edited an earlier message.
    Edit {
        /// The message that was edited.
        original_message_id: String,
        /// The new text or caption, when the edit carries one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// The user deleted an earlier message.
    Revoke {
        /// The message that was deleted.
        original_message_id: String,
    },
    /// A system notice, such as a user changing their number.
    System {
        /// Meta's text for the notice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// Meta's kind of notice, such as `user_changed_number` or `user_changed_user_id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// For `user_changed_user_id`: the user's new business-scoped user id
        /// (`system.user_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        /// For `user_changed_user_id`: the user's previous business-scoped user id
        /// (`system.previous_user_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_user_id: Option<String>,
    },
    /// Anything Meta marks unsupported or that this build does not know, including a known type
    /// whose details were missing.
    Unsupported {
        /// The `type` Meta sent.
        message_type: String,
        /// Meta's error code for it, such as 131051, when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_code: Option<i64>,
    },
}

/// A shared contact card: the name and the phone numbers on it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactCard {
    /// The contact's formatted name.
    pub name: String,
    /// The phone numbers on the card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
}

/// One product of an order, its fields as Meta wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderItem {
    /// The product's id in the business's catalog.
    pub product_retailer_id: String,
    /// How many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
    /// The unit price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_price: Option<String>,
    /// The price's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl MessageContent {
    /// A short name for the kind of content, for logs and metrics.
    pub fn kind(&self) -> &str {
        match self {
            Self::Text { .. } => "text",
            Self::ButtonReply { .. } => "button_reply",
            Self::ListReply { .. } => "list_reply",
            Self::QuickReply { .. } => "quick_reply",
            Self::FlowReply { .. } => "flow_reply",
            Self::Media { kind, .. } => kind.as_str(),
            Self::Location { .. } => "location",
            Self::Contacts { .. } => "contacts",
            Self::Reaction { .. } => "reaction",
            Self::Order { .. } => "order",
            Self::Edit { .. } => "edit",
            Self::Revoke { .. } => "revoke",
            Self::System { .. } => "system",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InboundMessage {
        InboundMessage {
            v: INBOUND_MESSAGE_VERSION,
            phone_number_id: "106540352242922".into(),
            display_phone_number: Some("15550783881".into()),
            sender: Sender {
                wa_id: Some("15551234567".into()),
                user_id: None,
            },
            name: Some("Ana".into()),
            id: "wamid.ABC=".into(),
            timestamp: 1_700_000_000,
            context: None,
            content: MessageContent::Text {
                body: "Olá 👋".into(),
            },
        }
    }

    #[test]
    fn round_trips_through_json() {
        let message = sample();
        let json = serde_json::to_string(&message).unwrap();
        assert!(json.contains(r#""v":1"#), "{json}");
        assert!(
            json.contains(r#""content":{"type":"text","body":"Olá 👋"}"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<InboundMessage>(&json).unwrap(),
            message
        );
    }

    #[test]
    fn the_conversation_is_the_business_number_and_the_user() {
        assert_eq!(
            sample().conversation().as_str(),
            "106540352242922:15551234567"
        );
        let mut by_user_id = sample();
        by_user_id.sender = Sender {
            wa_id: None,
            user_id: Some("US.1349".into()),
        };
        assert_eq!(
            by_user_id.conversation().as_str(),
            "106540352242922:US.1349"
        );
    }

    #[test]
    fn a_system_notice_written_before_the_user_id_fields_still_reads() {
        let old = r#"{"type":"system","body":"changed","kind":"user_changed_number"}"#;
        assert_eq!(
            serde_json::from_str::<MessageContent>(old).unwrap(),
            MessageContent::System {
                body: Some("changed".into()),
                kind: Some("user_changed_number".into()),
                user_id: None,
                previous_user_id: None,
            }
        );
        let changed = MessageContent::System {
            body: None,
            kind: Some("user_changed_user_id".into()),
            user_id: Some("US.new".into()),
            previous_user_id: Some("US.old".into()),
        };
        let json = serde_json::to_string(&changed).unwrap();
        assert_eq!(
            serde_json::from_str::<MessageContent>(&json).unwrap(),
            changed
        );
    }

    #[test]
    fn prefers_the_phone_number_when_both_ids_are_known() {
        let sender = Sender {
            wa_id: Some("15551234567".into()),
            user_id: Some("US.1".into()),
        };
        assert_eq!(sender.id(), "15551234567");
    }
}
