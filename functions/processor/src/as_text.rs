//! What the model reads for messages that carry data rather than prose: a shared location, contact
//! cards, an order, a flow's answers. Each becomes a short, bracketed text turn (`[location] …`)
//! that the model can answer and the memory can keep, bounded in length.

use serde_json::Value;
use shared::inbound::{ContactCard, MessageContent, OrderItem};

/// The longest text a data message becomes, in characters.
pub const MAX_DATA_TEXT_CHARS: usize = 2000;

/// The text turn a data message becomes; `None` for other messages.
pub fn as_text(content: &MessageContent) -> Option<String> {
    let text = match content {
        MessageContent::Location {
            latitude,
            longitude,
            name,
            address,
        } => location(*latitude, *longitude, name.as_deref(), address.as_deref()),
        MessageContent::Contacts { names, cards } => contacts(names, cards),
        MessageContent::Order {
            text,
            items,
            item_count,
        } => order(items, *item_count, text.as_deref()),
        MessageContent::FlowReply {
            body,
            response_json,
        } => flow_reply(body.as_deref(), response_json),
        _ => return None,
    };
    Some(bounded(text))
}

fn location(latitude: f64, longitude: f64, name: Option<&str>, address: Option<&str>) -> String {
    let place: Vec<&str> = [name, address]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let coordinates = format!("latitude {latitude:.6}, longitude {longitude:.6}");
    match place.is_empty() {
        true => format!("[location] {coordinates}"),
        false => format!("[location] {} ({coordinates})", place.join(", ")),
    }
}

fn contacts(names: &[String], cards: &[ContactCard]) -> String {
    let listed: Vec<String> = if cards.is_empty() {
        names.to_vec()
    } else {
        cards
            .iter()
            .map(|card| match card.phones.is_empty() {
                true => card.name.clone(),
                false => format!("{}: {}", card.name, card.phones.join(", ")),
            })
            .collect()
    };
    match listed.is_empty() {
        true => "[contact card without a name]".to_owned(),
        false => format!("[contacts] {}", listed.join("; ")),
    }
}

fn order(items: &[OrderItem], item_count: usize, note: Option<&str>) -> String {
    let mut text = if items.is_empty() {
        format!("[order] {item_count} products")
    } else {
        let lines: Vec<String> = items.iter().map(order_line).collect();
        format!("[order] {}", lines.join("; "))
    };
    if let Some(note) = note.filter(|n| !n.trim().is_empty()) {
        text.push_str(&format!(" — note: {}", note.trim()));
    }
    text
}

fn order_line(item: &OrderItem) -> String {
    let quantity = item.quantity.as_deref().unwrap_or("1");
    let price = match (&item.item_price, &item.currency) {
        (Some(price), Some(currency)) => format!(" at {price} {currency}"),
        (Some(price), None) => format!(" at {price}"),
        _ => String::new(),
    };
    format!("{quantity} × {}{price}", item.product_retailer_id)
}

/// A flow's answers as `field: value` pairs; the flow's own token is left out.
fn flow_reply(body: Option<&str>, response_json: &str) -> String {
    let fields = match serde_json::from_str::<Value>(response_json) {
        Ok(Value::Object(map)) => map
            .iter()
            .filter(|(key, _)| key.as_str() != "flow_token")
            .map(|(key, value)| match value {
                Value::String(text) => format!("{key}: {text}"),
                other => format!("{key}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => response_json.to_owned(),
    };
    match body.filter(|b| !b.trim().is_empty()) {
        Some(body) => format!("[form reply: {}] {fields}", body.trim()),
        None => format!("[form reply] {fields}"),
    }
}

/// `text` cut to [`MAX_DATA_TEXT_CHARS`] characters, marked when cut.
fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_DATA_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_reads_as_its_place_and_coordinates() {
        let place = MessageContent::Location {
            latitude: 38.722_252,
            longitude: -9.139_337,
            name: Some("Café A Brasileira".into()),
            address: Some("Rua Garrett 120, Lisboa".into()),
        };
        assert_eq!(
            as_text(&place).unwrap(),
            "[location] Café A Brasileira, Rua Garrett 120, Lisboa (latitude 38.722252, longitude -9.139337)"
        );
        let pin = MessageContent::Location {
            latitude: 1.5,
            longitude: 2.0,
            name: None,
            address: Some(String::new()),
        };
        assert_eq!(
            as_text(&pin).unwrap(),
            "[location] latitude 1.500000, longitude 2.000000"
        );
    }

    #[test]
    fn contacts_read_as_names_and_numbers() {
        let cards = MessageContent::Contacts {
            names: vec!["Ana".into(), "Bo".into()],
            cards: vec![
                ContactCard {
                    name: "Ana".into(),
                    phones: vec!["+34 600 000 000".into()],
                },
                ContactCard {
                    name: "Bo".into(),
                    phones: vec![],
                },
            ],
        };
        assert_eq!(
            as_text(&cards).unwrap(),
            "[contacts] Ana: +34 600 000 000; Bo"
        );
        let old_body = MessageContent::Contacts {
            names: vec!["Ana".into()],
            cards: vec![],
        };
        assert_eq!(as_text(&old_body).unwrap(), "[contacts] Ana");
        let nameless = MessageContent::Contacts {
            names: vec![],
            cards: vec![],
        };
        assert_eq!(as_text(&nameless).unwrap(), "[contact card without a name]");
    }

    #[test]
    fn an_order_reads_as_its_lines_and_note() {
        let order = MessageContent::Order {
            item_count: 2,
            text: Some("gift wrap please".into()),
            items: vec![
                OrderItem {
                    product_retailer_id: "SKU-1".into(),
                    quantity: Some("2".into()),
                    item_price: Some("9.90".into()),
                    currency: Some("EUR".into()),
                },
                OrderItem {
                    product_retailer_id: "SKU-2".into(),
                    ..OrderItem::default()
                },
            ],
        };
        assert_eq!(
            as_text(&order).unwrap(),
            "[order] 2 × SKU-1 at 9.90 EUR; 1 × SKU-2 — note: gift wrap please"
        );
        let old_body = MessageContent::Order {
            item_count: 3,
            text: None,
            items: vec![],
        };
        assert_eq!(as_text(&old_body).unwrap(), "[order] 3 products");
    }

    #[test]
    fn a_flow_reply_reads_as_its_fields_without_the_token() {
        let reply = MessageContent::FlowReply {
            body: Some("Sent".into()),
            response_json: r#"{"flow_token":"secret","date":"2026-12-24","guests":4}"#.into(),
        };
        assert_eq!(
            as_text(&reply).unwrap(),
            "[form reply: Sent] date: 2026-12-24; guests: 4"
        );
        let garbled = MessageContent::FlowReply {
            body: None,
            response_json: "not json".into(),
        };
        assert_eq!(as_text(&garbled).unwrap(), "[form reply] not json");
    }

    #[test]
    fn long_data_is_bounded_and_prose_is_not_data() {
        let many = MessageContent::Contacts {
            names: (0..1000).map(|i| format!("Contact {i}")).collect(),
            cards: vec![],
        };
        let text = as_text(&many).unwrap();
        assert_eq!(text.chars().count(), MAX_DATA_TEXT_CHARS + 1);
        assert!(text.ends_with('…'));
        assert_eq!(as_text(&MessageContent::Text { body: "hi".into() }), None);
    }
}
