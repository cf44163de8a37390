//! The tools file (`TOOLS_URI`), read and checked as a whole: a file with one bad tool is
//! refused, with a reason that names the tool and the field.
//!
//! ```json
//! {"tools": [{
//!   "name": "order_status",
//!   "description": "The status of an order, by its number.",
//!   "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
//!                  "required": ["order_id"], "additionalProperties": false},
//!   "method": "GET",
//!   "url": "https://shop.example/orders/{order_id}",
//!   "headers": {"Accept": "application/json", "X-Api-Key": {"secret": "SHOP_API_KEY"}},
//!   "side_effects": false,
//!   "timeout_seconds": 5
//! }]}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::ToolDeclaration;
use super::url::UrlTemplate;

/// The most tools a file may declare: each is sent to the model with every message.
pub const MAX_TOOLS: usize = 32;

/// A tool's timeout when the file gives none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// The longest timeout a tool may have: the model and the reply need the rest of the time.
pub const MAX_TIMEOUT_SECONDS: u64 = 30;

/// Headers the adapter sets itself, or that would let a file break the request's framing.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "idempotency-key",
];

/// Why a tools file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolsError {
    /// The file is not a JSON object `{"tools": [...]}` (or has another top-level field).
    #[error("the tools file is not {{\"tools\": [...]}}: {0}")]
    NotToolsFile(String),
    /// The file declares more than [`MAX_TOOLS`] tools.
    #[error("the tools file declares {0} tools; at most {MAX_TOOLS} are allowed")]
    TooMany(usize),
    /// One tool is not valid.
    #[error("tool #{index} {name}: {reason}")]
    Tool {
        /// Its position in the file, from 0.
        index: usize,
        /// Its name quoted, or `(unnamed)`.
        name: String,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// A header value: written in the file, or read from the app secret at call time.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum HeaderSource {
    /// The value as written.
    Literal(HeaderValue),
    /// The value of this key of the app secret.
    Secret(String),
}

/// A tool as the file declares it, checked.
pub struct Tool {
    pub(crate) declaration: ToolDeclaration,
    pub(crate) method: Method,
    pub(crate) url: UrlTemplate,
    pub(crate) headers: Vec<(HeaderName, HeaderSource)>,
    pub(crate) side_effects: bool,
    pub(crate) timeout: Duration,
    pub(crate) validator: jsonschema::Validator,
}

impl Tool {
    /// What the model is told about it.
    pub fn declaration(&self) -> &ToolDeclaration {
        &self.declaration
    }

    /// Whether calling it changes something (an order, a cart): its calls then carry an
    /// `Idempotency-Key`.
    pub fn side_effects(&self) -> bool {
        self.side_effects
    }

    /// Its timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Its HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The scheme, host and port its calls go to: the only place its secrets are sent.
    pub fn origin(&self) -> &str {
        self.url.origin()
    }
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Tool")
            .field("name", &self.declaration.name)
            .field("method", &self.method)
            .field("origin", &self.url.origin())
            .field("headers", &headers)
            .field("side_effects", &self.side_effects)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The tools of a valid file, in the file's order.
#[derive(Debug, Default)]
pub struct Tools {
    tools: Vec<Tool>,
}

impl Tools {
    /// What the model is offered: each tool's name, description and parameters.
    pub fn declarations(&self) -> Vec<ToolDeclaration> {
        self.tools.iter().map(|t| t.declaration.clone()).collect()
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.declaration.name == name)
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Every tool, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tools: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    description: String,
    parameters: serde_json::Value,
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, serde_json::Value>,
    side_effects: bool,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

/// Reads and checks a tools file (see the module's documentation for its format).
pub fn parse_tools(text: &str) -> Result<Tools, ToolsError> {
    let file: RawFile =
        serde_json::from_str(text).map_err(|e| ToolsError::NotToolsFile(e.to_string()))?;
    if file.tools.len() > MAX_TOOLS {
        return Err(ToolsError::TooMany(file.tools.len()));
    }
    let mut tools: Vec<Tool> = Vec::with_capacity(file.tools.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, value) in file.tools.into_iter().enumerate() {
        let name = match value.get("name").and_then(serde_json::Value::as_str) {
            Some(name) => format!("{name:?}"),
            None => "(unnamed)".to_owned(),
        };
        let error = |reason: String| ToolsError::Tool {
            index,
            name: name.clone(),
            reason,
        };
        let raw: RawTool = serde_json::from_value(value).map_err(|e| error(e.to_string()))?;
        if let Some(first) = seen.insert(raw.name.clone(), index) {
            return Err(error(format!("the name is already used by tool #{first}")));
        }
        tools.push(check_tool(raw).map_err(error)?);
    }
    Ok(Tools { tools })
}

/// A tool from its raw fields, or what is wrong with them.
fn check_tool(raw: RawTool) -> Result<Tool, String> {
    check_name(&raw.name)?;
    let method = match raw.method.as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            return Err(format!(
                "method {other:?} is not one of GET, POST, PUT, PATCH, DELETE"
            ));
        }
    };
    let validator = check_parameters(&raw.parameters)?;
    let properties = raw.parameters.get("properties");
    let url = UrlTemplate::parse(&raw.url, |name| {
        properties.and_then(|p| p.get(name)).is_some()
    })
    .map_err(|reason| format!("url: {reason}"))?;
    let timeout_seconds = raw.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout_seconds) {
        return Err(format!(
            "timeout_seconds {timeout_seconds} is not between 1 and {MAX_TIMEOUT_SECONDS}"
        ));
    }
    let headers = raw
        .headers
        .iter()
        .map(|(name, value)| check_header(name, value))
        .collect::<Result<Vec<_>, _>>()?;
    for (at, (name, _)) in headers.iter().enumerate() {
        if headers[..at].iter().any(|(earlier, _)| earlier == name) {
            return Err(format!("headers: {:?} is declared twice", name.as_str()));
        }
    }
    Ok(Tool {
        declaration: ToolDeclaration {
            name: raw.name,
            description: raw.description,
            parameters: raw.parameters,
        },
        method,
        url,
        headers,
        side_effects: raw.side_effects,
        timeout: Duration::from_secs(timeout_seconds),
        validator,
    })
}

/// `^[A-Za-z0-9_-]{1,64}$`: what every provider accepts as a function's name.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if (1..=64).contains(&name.len()) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err("name must be 1 to 64 letters, digits, `_` or `-`".into())
    }
}

/// The parameters' schema compiled: it must be an object schema (`"type": "object"`).
fn check_parameters(parameters: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    if parameters.get("type").and_then(serde_json::Value::as_str) != Some("object") {
        return Err(r#"parameters must be a JSON Schema with "type": "object""#.into());
    }
    if let Some(properties) = parameters.get("properties")
        && !properties.is_object()
    {
        return Err("parameters.properties must be an object".into());
    }
    jsonschema::validator_for(parameters)
        .map_err(|e| format!("parameters is not a valid JSON Schema: {e}"))
}

/// A header's name and value source, checked.
fn check_header(
    name: &str,
    value: &serde_json::Value,
) -> Result<(HeaderName, HeaderSource), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
    if RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(format!(
            "headers: {name:?} is set by the adapter and may not be declared"
        ));
    }
    let source = match value {
        serde_json::Value::String(text) => HeaderValue::from_str(text)
            .map(HeaderSource::Literal)
            .map_err(|_| {
            format!("headers: the value of {name:?} is not a valid header value")
        })?,
        serde_json::Value::Object(fields) => match (fields.len(), fields.get("secret")) {
            (1, Some(serde_json::Value::String(key))) if !key.trim().is_empty() => {
                HeaderSource::Secret(key.clone())
            }
            _ => {
                return Err(format!(
                    r#"headers: the value of {name:?} must be a string or {{"secret": "KEY"}}"#
                ));
            }
        },
        _ => {
            return Err(format!(
                r#"headers: the value of {name:?} must be a string or {{"secret": "KEY"}}"#
            ));
        }
    };
    Ok((header, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn tool() -> Value {
        json!({
            "name": "order_status",
            "description": "The status of an order.",
            "parameters": {"type": "object",
                "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
            "method": "GET",
            "url": "https://shop.example/orders/{order_id}",
            "headers": {"Accept": "application/json", "X-Api-Key": {"secret": "SHOP_API_KEY"}},
            "side_effects": false,
            "timeout_seconds": 5
        })
    }

    fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut tool = tool();
        if let Some(fields) = tool.as_object_mut() {
            change(fields);
        }
        tool
    }

    fn parse(tools: Vec<Value>) -> Result<Tools, ToolsError> {
        parse_tools(&json!({ "tools": tools }).to_string())
    }

    fn reason(tools: Vec<Value>) -> String {
        parse(tools).unwrap_err().to_string()
    }

    #[test]
    fn reads_a_valid_file() {
        let tools = parse(vec![
            tool(),
            with(|t| {
                t.insert("name".into(), json!("add_to_cart"));
                t.insert("method".into(), json!("POST"));
                t.insert("side_effects".into(), json!(true));
                t.remove("timeout_seconds");
                t.remove("headers");
            }),
        ])
        .unwrap();
        assert_eq!(tools.len(), 2);
        let status = tools.get("order_status").unwrap();
        assert_eq!(status.timeout(), Duration::from_secs(5));
        assert!(!status.side_effects());
        assert_eq!(status.origin(), "https://shop.example");
        assert_eq!(status.headers.len(), 2);
        assert!(status.headers.contains(&(
            HeaderName::from_static("x-api-key"),
            HeaderSource::Secret("SHOP_API_KEY".into())
        )));
        let cart = tools.get("add_to_cart").unwrap();
        assert_eq!(cart.method(), &Method::POST);
        assert_eq!(cart.timeout(), Duration::from_secs(DEFAULT_TIMEOUT_SECONDS));
        assert!(cart.side_effects());
        let declarations = tools.declarations();
        assert_eq!(declarations[0].name, "order_status");
        assert_eq!(declarations[0].parameters, tool()["parameters"]);
        assert!(parse(vec![]).unwrap().is_empty());
    }

    #[test]
    fn an_unknown_field_is_named_with_its_tool() {
        let error = reason(vec![
            tool(),
            with(|t| {
                t.insert("name".into(), json!("search"));
                t.insert("retries".into(), json!(3));
            }),
        ]);
        assert!(
            error.starts_with(r#"tool #1 "search": unknown field `retries`"#),
            "{error}"
        );
        let error = parse_tools(r#"{"tools": [], "version": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `version`"), "{error}");
        let error = reason(vec![with(|t| {
            t.remove("name");
        })]);
        assert!(
            error.starts_with("tool #0 (unnamed): missing field `name`"),
            "{error}"
        );
    }

    #[test]
    fn each_rule_is_checked_and_explained() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with(|t| {
                    t.insert("name".into(), json!("order status"));
                }),
                "name must be",
            ),
            (
                with(|t| {
                    t.insert("name".into(), json!("x".repeat(65)));
                }),
                "name must be",
            ),
            (
                with(|t| {
                    t.insert("method".into(), json!("get"));
                }),
                "method \"get\"",
            ),
            (
                with(|t| {
                    t.insert("method".into(), json!("HEAD"));
                }),
                "method \"HEAD\"",
            ),
            (
                with(|t| {
                    t.insert("url".into(), json!("http://shop.example/o/{order_id}"));
                }),
                "url: the url must be https",
            ),
            (
                with(|t| {
                    t.insert("url".into(), json!("https://{order_id}.shop.example/"));
                }),
                "url: the url's host has a placeholder",
            ),
            (
                with(|t| {
                    t.insert("url".into(), json!("https://shop.example/{sku}"));
                }),
                "{sku} names no property",
            ),
            (
                with(|t| {
                    t.insert("timeout_seconds".into(), json!(0));
                }),
                "timeout_seconds 0",
            ),
            (
                with(|t| {
                    t.insert("timeout_seconds".into(), json!(31));
                }),
                "timeout_seconds 31",
            ),
            (
                with(|t| {
                    t.insert("parameters".into(), json!({"type": "string"}));
                }),
                "\"type\": \"object\"",
            ),
            (
                with(|t| {
                    t.insert("parameters".into(), json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}));
                }),
                "not a valid JSON Schema",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"Bad Name": "x"}));
                }),
                "not a valid header name",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"X-A": "line\nbreak"}));
                }),
                "not a valid header value",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"Host": "evil.example"}));
                }),
                "set by the adapter",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"Idempotency-Key": "k"}));
                }),
                "set by the adapter",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"X-A": {"secret": ""}}));
                }),
                "must be a string or",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"X-A": {"secret": "K", "x": 1}}));
                }),
                "must be a string or",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"X-A": 5}));
                }),
                "must be a string or",
            ),
            (
                with(|t| {
                    t.insert("headers".into(), json!({"X-A": "1", "x-a": "2"}));
                }),
                "declared twice",
            ),
            (
                with(|t| {
                    t.insert("side_effects".into(), json!("no"));
                }),
                "invalid type",
            ),
        ];
        for (tool, expected) in cases {
            let error = reason(vec![tool.clone()]);
            assert!(error.starts_with("tool #0 "), "{error}");
            assert!(error.contains(expected), "{tool}: {error}");
        }
    }

    #[test]
    fn names_are_unique_and_tools_are_few() {
        let error = reason(vec![tool(), tool()]);
        assert_eq!(
            error,
            r#"tool #1 "order_status": the name is already used by tool #0"#
        );
        let many: Vec<Value> = (0..=MAX_TOOLS)
            .map(|i| {
                with(|t| {
                    t.insert("name".into(), json!(format!("t{i}")));
                })
            })
            .collect();
        assert_eq!(parse(many).unwrap_err(), ToolsError::TooMany(MAX_TOOLS + 1));
        assert!(matches!(
            parse_tools("[]"),
            Err(ToolsError::NotToolsFile(_))
        ));
    }
}
