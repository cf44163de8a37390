//! What DynamoDB bills, computed as AWS documents it: the size of an item in its JSON wire form
//! ("DynamoDB item sizes and formats", `CapacityUnitCalculations.html`) and the read and write
//! request units an on-demand table is charged for it ("DynamoDB read and write operations",
//! `read-write-operations.html`). moto answers `ReturnConsumedCapacity` with fixed figures that
//! ignore the item's size; [`crate::aws_meter`] uses these rules instead.

use base64::Engine;
use serde_json::{Map, Value};

/// The bytes one write request unit covers: "a standard write request unit can write an item up
/// to 1 KB".
pub const WRITE_UNIT_BYTES: u64 = 1024;
/// The bytes one read request unit covers (strongly consistent): "up to 4 KB".
pub const READ_UNIT_BYTES: u64 = 4096;
/// The overhead of a list or a map, whatever it holds.
const DOCUMENT_OVERHEAD: u64 = 3;
/// The overhead of each element of a list or a map.
const ELEMENT_OVERHEAD: u64 = 1;

/// How a read is made, which sets what each 4 KB costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Eventually consistent (DynamoDB's default): half a unit per 4 KB.
    Eventual,
    /// Strongly consistent (`ConsistentRead: true`): one unit per 4 KB.
    Strong,
    /// Part of `TransactGetItems`: two units per 4 KB.
    Transactional,
}

impl Consistency {
    /// The units one 4 KB block costs.
    fn units_per_block(self) -> f64 {
        match self {
            Self::Eventual => 0.5,
            Self::Strong => 1.0,
            Self::Transactional => 2.0,
        }
    }
}

/// The size in bytes of an item given as DynamoDB's JSON wire form (`{"name": {"S": "…"}, …}`):
/// the UTF-8 bytes of each attribute name plus the size of its value.
pub fn item_size(item: &Map<String, Value>) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

/// The size in bytes of one typed value (`{"S": "…"}`, `{"N": "…"}`, `{"L": […]}` …), its
/// attribute name not included:
/// - a string: its UTF-8 bytes; a binary: its raw bytes (not the base64 text);
/// - a number: 1 byte per two significant digits (leading and trailing zeros trimmed), plus 1;
/// - a Boolean or a null: 1 byte;
/// - a set: the sum of its elements' sizes;
/// - a list or a map: 3 bytes, plus for each element 1 byte and its size (a map element's
///   size includes its name).
///
/// A value of no known type counts 0 bytes.
pub fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|typed| typed.iter().next()) else {
        return 0;
    };
    let strings = |set: &Vec<Value>, size: fn(&str) -> u64| -> u64 {
        set.iter().filter_map(Value::as_str).map(size).sum()
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(text)) => text.len() as u64,
        ("N", Value::String(number)) => number_size(number),
        ("B", Value::String(encoded)) => binary_size(encoded),
        ("BOOL" | "NULL", _) => 1,
        ("SS", Value::Array(set)) => strings(set, |s| s.len() as u64),
        ("NS", Value::Array(set)) => strings(set, number_size),
        ("BS", Value::Array(set)) => strings(set, binary_size),
        ("L", Value::Array(list)) => {
            let elements: u64 = list.iter().map(|v| ELEMENT_OVERHEAD + value_size(v)).sum();
            DOCUMENT_OVERHEAD + elements
        }
        ("M", Value::Object(map)) => {
            let elements: u64 = map
                .iter()
                .map(|(name, v)| ELEMENT_OVERHEAD + name.len() as u64 + value_size(v))
                .sum();
            DOCUMENT_OVERHEAD + elements
        }
        _ => 0,
    }
}

/// The size of a number as AWS documents it: 1 byte per two significant digits, plus 1 byte,
/// after leading and trailing zeros are trimmed (so zero is 1 byte). AWS calls the rule
/// approximate: DynamoDB's encoding pairs digits from the decimal point, so a number such as
/// `1.5` may take a byte more than this says.
pub fn number_size(number: &str) -> u64 {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    (significant.len() as u64).div_ceil(2) + 1
}

/// The raw length of a base64-encoded binary value (its text length when it is not base64).
fn binary_size(encoded: &str) -> u64 {
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_or(encoded.len(), |raw| raw.len()) as u64
}

/// The write request units of one item written (put, updated or deleted, or a conditional write
/// whose condition failed): its size rounded up to the next 1 KB, the larger of its size before
/// and after the write, at least one unit; doubled in a transaction.
pub fn write_units(size_before: u64, size_after: u64, transactional: bool) -> f64 {
    let blocks = size_before
        .max(size_after)
        .div_ceil(WRITE_UNIT_BYTES)
        .max(1);
    blocks as f64 * if transactional { 2.0 } else { 1.0 }
}

/// The read request units of one read of `size` bytes (an item read by its key, or the summed
/// items of one `Query` or `Scan` page): rounded up to the next 4 KB, at least one block (an item
/// that does not exist costs as much as a small one), priced by `consistency`.
pub fn read_units(size: u64, consistency: Consistency) -> f64 {
    let blocks = size.div_ceil(READ_UNIT_BYTES).max(1);
    blocks as f64 * consistency.units_per_block()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn strings_and_binaries_count_their_bytes_and_names() {
        // A string: name bytes + UTF-8 bytes ("é" is two bytes, "😀" four).
        assert_eq!(item_size(&item(json!({"pk": {"S": "abc"}}))), 2 + 3);
        assert_eq!(item_size(&item(json!({"né": {"S": "é😀"}}))), 3 + 6);
        // A binary: its raw bytes, not the base64 text ("AAECAw==" is 4 bytes).
        assert_eq!(item_size(&item(json!({"b": {"B": "AAECAw=="}}))), 1 + 4);
    }

    #[test]
    fn numbers_count_a_byte_per_two_significant_digits_plus_one() {
        assert_eq!(number_size("0"), 1);
        assert_eq!(number_size("7"), 2);
        assert_eq!(number_size("12"), 2);
        assert_eq!(number_size("123"), 3);
        // Leading and trailing zeros are trimmed; sign and point are not digits.
        assert_eq!(number_size("1000000"), 2);
        assert_eq!(number_size("-0.000125"), 3);
        assert_eq!(number_size("1.5E+3"), 2);
        // A Unix time of today: 10 significant digits.
        assert_eq!(number_size("1764806400"), 5);
        // The 38 digits DynamoDB allows.
        assert_eq!(number_size(&"9".repeat(38)), 20);
        assert_eq!(item_size(&item(json!({"n": {"N": "42"}}))), 1 + 2);
    }

    #[test]
    fn booleans_nulls_and_sets() {
        assert_eq!(item_size(&item(json!({"ok": {"BOOL": true}}))), 2 + 1);
        assert_eq!(item_size(&item(json!({"none": {"NULL": true}}))), 4 + 1);
        // Sets: the sum of their elements, no overhead.
        assert_eq!(value_size(&json!({"SS": ["pizza", "burger"]})), 11);
        assert_eq!(value_size(&json!({"NS": ["1", "100", "12345"]})), 2 + 2 + 4);
        assert_eq!(value_size(&json!({"BS": ["AAE=", "AA=="]})), 2 + 1);
    }

    #[test]
    fn lists_and_maps_carry_three_bytes_and_one_per_element() {
        // Empty: name + 3 bytes.
        assert_eq!(item_size(&item(json!({"l": {"L": []}}))), 1 + 3);
        assert_eq!(item_size(&item(json!({"m": {"M": {}}}))), 1 + 3);
        // A list of two strings: 3 + (1 + 1) + (1 + 2).
        assert_eq!(
            value_size(&json!({"L": [{"S": "a"}, {"S": "bc"}]})),
            3 + 2 + 3
        );
        // A map element counts its name too: 3 + (1 + "k" + "v").
        assert_eq!(value_size(&json!({"M": {"k": {"S": "v"}}})), 3 + 1 + 1 + 1);
        // Nested: a list holding a map holding a number.
        let nested = json!({"L": [{"M": {"at": {"N": "5"}}}]});
        assert_eq!(value_size(&nested), 3 + 1 + (3 + 1 + 2 + 2));
    }

    #[test]
    fn an_item_is_the_sum_of_its_attributes() {
        let conversation = item(json!({
            "pk": {"S": "conv#106540352242922:15550001111"},
            "expires_at": {"N": "1764806400"},
            "turns": {"L": [{"M": {"role": {"S": "user"}, "text": {"S": "hello"}}}]}
        }));
        let turns = 3 + 1 + (3 + (1 + 4 + 4) + (1 + 4 + 5));
        assert_eq!(item_size(&conversation), (2 + 32) + (10 + 5) + (5 + turns));
    }

    #[test]
    fn writes_bill_the_larger_size_per_started_kilobyte() {
        // At least one unit, even for an item that does not exist (a failed condition on
        // nothing, or a delete of nothing).
        assert_eq!(write_units(0, 0, false), 1.0);
        assert_eq!(write_units(0, 1024, false), 1.0);
        assert_eq!(write_units(0, 1025, false), 2.0);
        // An update is billed for the larger of the item before and after: shrinking a 21.7 KB
        // item to 1 KB still costs 22 units.
        assert_eq!(write_units(22_221, 1000, false), 22.0);
        // A 1.5 KB item takes two units; in a transaction, four.
        assert_eq!(write_units(1536, 1536, false), 2.0);
        assert_eq!(write_units(1536, 1536, true), 4.0);
    }

    #[test]
    fn reads_follow_the_documented_examples() {
        // "Reading a 3,500-byte item consumes the same throughput as reading a 4 KB item."
        assert_eq!(read_units(3500, Consistency::Strong), 1.0);
        // "A strongly consistent read request of an 8 KB item requires two read request units,
        // an eventually consistent read of an 8 KB item requires one, and a transactional read
        // of an 8 KB item requires four."
        assert_eq!(read_units(8192, Consistency::Strong), 2.0);
        assert_eq!(read_units(8192, Consistency::Eventual), 1.0);
        assert_eq!(read_units(8192, Consistency::Transactional), 4.0);
        // "If you read a 10 KB item, DynamoDB rounds the item size to 12 KB."
        assert_eq!(read_units(10 * 1024, Consistency::Strong), 3.0);
        // "BatchGetItem reads a 1.5 KB item and a 6.5 KB item: 12 KB (4 KB + 8 KB)", each item
        // rounded on its own.
        let batch = read_units(1536, Consistency::Strong) + read_units(6656, Consistency::Strong);
        assert_eq!(batch, 3.0);
        // An item that does not exist still costs the minimum.
        assert_eq!(read_units(0, Consistency::Eventual), 0.5);
    }
}
