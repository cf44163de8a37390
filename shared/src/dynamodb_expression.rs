//! The pieces of DynamoDB update requests that the DynamoDB adapters (conversations, storm
//! control) build alike: an update expression with its condition and attribute-name
//! placeholders, and numbers as attribute values.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// An update's expressions and attribute-name placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expression {
    /// The `UpdateExpression`.
    pub(crate) update: String,
    /// The `ConditionExpression`, when there is one.
    pub(crate) condition: Option<String>,
    /// The `ExpressionAttributeNames`: placeholder to attribute name.
    pub(crate) names: HashMap<String, String>,
}

/// Attribute-name placeholders from `(placeholder, name)` pairs.
pub(crate) fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(placeholder, name)| ((*placeholder).to_owned(), (*name).to_owned()))
        .collect()
}

/// A number attribute value.
pub(crate) fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
