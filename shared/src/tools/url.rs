//! A tool's URL template: a fixed scheme, host and port, then a path and query with `{argument}`
//! placeholders, each filled with the argument percent-encoded as one path segment or one query
//! value. What an argument holds (`/`, `?`, `#`, `&`, `..`, `@`) can never change the host, the
//! path's other segments or the query's other parameters.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;

/// Everything but RFC 3986's unreserved characters is encoded: the result is one path segment,
/// or one query value, whatever the argument holds.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The hosts for which plain `http` is allowed: the local stack and tests.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// A piece of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text kept as written (the origin, `/`, `?`, `=`…).
    Literal(String),
    /// A placeholder: the argument it names.
    Placeholder(String),
}

/// A validated URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlTemplate {
    parts: Vec<Part>,
    host: String,
}

/// Why an argument could not fill the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FillError {
    /// The argument a placeholder names was not given.
    #[error("the argument `{0}` is needed for the URL")]
    Missing(String),
    /// The argument is an object or an array.
    #[error("the argument `{0}` must be a string, a number or a boolean")]
    NotScalar(String),
    /// The argument would have changed the URL's path (`.` or `..` as a whole segment).
    #[error("the argument `{0}` may not be `.` or `..`")]
    ChangesPath(String),
    /// The filled URL would not be the one the arguments make (a safety net: not expected).
    #[error("the arguments do not make a valid URL")]
    Invalid,
}

impl UrlTemplate {
    /// Parses and checks `template`: `https` (or `http` for a loopback host), no placeholder,
    /// user or password in the host part, no fragment, every placeholder a name for which
    /// `is_parameter` is true, and written in the normal form that URL parsing keeps as is.
    pub(crate) fn parse(
        template: &str,
        is_parameter: impl Fn(&str) -> bool,
    ) -> Result<Self, String> {
        let parts = split(template)?;
        let authority_end = template
            .find("://")
            .map(|at| at + 3)
            .and_then(|start| {
                template[start..]
                    .find(['/', '?', '#'])
                    .map(|end| start + end)
                    .or(Some(template.len()))
            })
            .ok_or("the url has no scheme (https://…)")?;
        if template[..authority_end].contains(['{', '}']) {
            return Err("the url's host has a placeholder; only its path and query may".into());
        }
        if template.contains('#') {
            return Err("the url has a fragment (#…)".into());
        }
        for part in &parts {
            if let Part::Placeholder(name) = part
                && !is_parameter(name)
            {
                return Err(format!(
                    "the url's placeholder {{{name}}} names no property of the parameters"
                ));
            }
        }
        let sample = fill_parts(&parts, |_| Ok::<_, String>("x".to_owned()))?;
        let url = Url::parse(&sample).map_err(|e| format!("the url is not valid: {e}"))?;
        check_origin(&url)?;
        if url.as_str() != sample {
            return Err(format!(
                "the url is not in normal form: parsed, it reads {} (placeholders as x)",
                url.as_str()
            ));
        }
        let host = origin_of(&url);
        Ok(Self { parts, host })
    }

    /// The scheme, host and port, such as `https://shop.example:8443`.
    pub(crate) fn origin(&self) -> &str {
        &self.host
    }

    /// The names of the arguments the URL uses.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The URL with each placeholder filled with its argument from `arguments`, encoded.
    pub(crate) fn fill(
        &self,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Url, FillError> {
        let built = fill_parts(&self.parts, |name| {
            let text = match arguments.get(name) {
                None | Some(serde_json::Value::Null) => {
                    return Err(FillError::Missing(name.to_owned()));
                }
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    value.to_string()
                }
                Some(_) => return Err(FillError::NotScalar(name.to_owned())),
            };
            // `.` and `..` are unreserved: encoded or not, URL parsing would resolve them as
            // a path's dot segments.
            if text == "." || text == ".." {
                return Err(FillError::ChangesPath(name.to_owned()));
            }
            Ok(utf8_percent_encode(&text, COMPONENT).to_string())
        })?;
        // Anything that parsing would still change is refused, so that the request goes
        // exactly where the template and the encoded arguments say.
        match Url::parse(&built) {
            Ok(url) if url.as_str() == built && origin_of(&url) == self.host => Ok(url),
            _ => Err(FillError::Invalid),
        }
    }
}

/// The template cut into literal text and placeholders.
fn split(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("the url has a `}` without its `{`".into());
        }
        let close = rest[open + 1..]
            .find(['{', '}'])
            .filter(|at| rest[open + 1 + at..].starts_with('}'))
            .ok_or("the url has a `{` without its `}`")?;
        let name = &rest[open + 1..open + 1 + close];
        if name.is_empty() {
            return Err("the url has an empty placeholder {}".into());
        }
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_owned()));
        }
        parts.push(Part::Placeholder(name.to_owned()));
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_owned()));
    }
    Ok(parts)
}

/// The template's text with each placeholder replaced by what `value` makes of its name.
fn fill_parts<E>(
    parts: &[Part],
    mut value: impl FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    let mut built = String::new();
    for part in parts {
        match part {
            Part::Literal(text) => built.push_str(text),
            Part::Placeholder(name) => built.push_str(&value(name)?),
        }
    }
    Ok(built)
}

/// `https`, or `http` to a loopback host; no user or password.
fn check_origin(url: &Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if LOOPBACK_HOSTS.contains(&host) => {}
        "http" => {
            return Err(format!(
                "the url must be https (plain http only for {})",
                LOOPBACK_HOSTS.join(", ")
            ));
        }
        other => return Err(format!("the url's scheme {other:?} is not https")),
    }
    if host.is_empty() {
        return Err("the url has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the url has a user or password; put credentials in a secret header".into());
    }
    Ok(())
}

/// `scheme://host[:port]`.
fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(text: &str) -> Result<UrlTemplate, String> {
        UrlTemplate::parse(text, |name| ["id", "q", "page", "sku"].contains(&name))
    }

    fn fill(text: &str, arguments: serde_json::Value) -> Result<String, FillError> {
        let arguments = arguments.as_object().cloned().unwrap_or_default();
        template(text)
            .unwrap()
            .fill(&arguments)
            .map(|url| url.to_string())
    }

    #[test]
    fn fills_path_segments_and_query_values_encoded() {
        let url = "https://shop.example/orders/{id}/items?q={q}&page={page}";
        assert_eq!(
            fill(url, json!({"id": "A-17", "q": "red shoes", "page": 2})),
            Ok("https://shop.example/orders/A-17/items?q=red%20shoes&page=2".into())
        );
        assert_eq!(
            fill(url, json!({"id": "../../admin?x=1#f", "q": "a&b=c", "page": true})),
            Ok("https://shop.example/orders/..%2F..%2Fadmin%3Fx%3D1%23f/items?q=a%26b%3Dc&page=true"
                .into())
        );
        assert_eq!(
            fill(
                "https://shop.example/p/{sku}",
                json!({"sku": "é/@evil.example"})
            ),
            Ok("https://shop.example/p/%C3%A9%2F%40evil.example".into())
        );
    }

    #[test]
    fn an_argument_that_would_change_the_path_is_refused() {
        for value in [".", "..", "%2e%2e"] {
            let filled = fill("https://shop.example/orders/{id}", json!({"id": value}));
            if value.starts_with('%') {
                // The `%` itself is encoded: the segment is the text `%2e%2e`, not a dot one.
                assert_eq!(filled, Ok("https://shop.example/orders/%252e%252e".into()));
            } else {
                assert_eq!(filled, Err(FillError::ChangesPath("id".into())), "{value}");
            }
        }
    }

    #[test]
    fn missing_and_structured_arguments_are_refused() {
        let url = "https://shop.example/orders/{id}";
        assert_eq!(fill(url, json!({})), Err(FillError::Missing("id".into())));
        assert_eq!(
            fill(url, json!({"id": null})),
            Err(FillError::Missing("id".into()))
        );
        assert_eq!(
            fill(url, json!({"id": [1]})),
            Err(FillError::NotScalar("id".into()))
        );
    }

    #[test]
    fn the_host_is_fixed_https_or_loopback_http() {
        assert!(template("https://shop.example:8443/x/{id}").is_ok());
        assert!(template("http://127.0.0.1:3000/orders/{id}").is_ok());
        assert!(template("http://localhost:3000/orders").is_ok());
        assert!(template("http://[::1]:3000/orders").is_ok());
        assert_eq!(
            template("https://shop.example:8443/x").unwrap().origin(),
            "https://shop.example:8443"
        );
        for (bad, why) in [
            ("https://{id}.example/x", "host has a placeholder"),
            ("https://shop.example:{id}/x", "host has a placeholder"),
            ("http://shop.example/x", "must be https"),
            ("ftp://shop.example/x", "not https"),
            ("shop.example/x", "no scheme"),
            ("https://user:pw@shop.example/x", "user or password"),
            ("https://shop.example/x#{id}", "fragment"),
            ("https://shop.example/x/{nope}", "{nope} names no property"),
            ("https://shop.example/x/{id", "without its `}`"),
            ("https://shop.example/x/id}", "without its `{`"),
            ("https://shop.example/x/{}", "empty placeholder"),
            ("https://shop.example/a/../b", "normal form"),
            ("https://shop.example/a b", "normal form"),
            ("HTTPS://Shop.Example/a", "normal form"),
            ("https://shop.example", "normal form"),
        ] {
            let error = template(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
