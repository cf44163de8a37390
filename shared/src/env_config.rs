//! Reading a function's configuration from environment variables, with errors that name the
//! variable. Each function has its own `Config` built on these helpers.

use std::str::FromStr;
use std::time::Duration;

/// A configuration variable that is missing or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set, or is empty.
    #[error("the environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A variable is set to a value that cannot be used.
    #[error("the environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with its value (never the value itself, which may be sensitive).
        reason: String,
    },
}

/// Where configuration comes from: the process environment, or a map in tests.
pub struct Env<F>(F);

impl Env<fn(&str) -> Option<String>> {
    /// Reads the process environment.
    pub fn process() -> Self {
        Env(|name| std::env::var(name).ok())
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Reads variables through `lookup`, for tests.
    pub fn from_fn(lookup: F) -> Self {
        Env(lookup)
    }

    /// The variable's value, or `None` when it is unset or blank.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The variable's value, or [`ConfigError::Missing`].
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// The variable parsed as `T`, or `default` when unset.
    pub fn parsed_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }

    /// The variable as a whole number of seconds, or `default` when unset.
    pub fn seconds_or(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let seconds: u64 = self.parsed_or(name, default.as_secs())?;
        Ok(Duration::from_secs(seconds))
    }
}

/// A variable lookup as a trait object.
pub type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

impl Env<Lookup<'static>> {
    /// An environment holding exactly `pairs`, for tests and local runs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env(Box::new(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }))
    }
}

/// The names of every variable `read` looks up when the environment holds `values`, for tests
/// that a configuration declares exactly the variables it reads.
pub fn variables_read<T>(
    values: &[(&str, &str)],
    read: impl FnOnce(&Env<Lookup<'_>>) -> T,
) -> std::collections::BTreeSet<String> {
    let names = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let lookup: Lookup<'_> = Box::new(|name: &str| {
        names.borrow_mut().insert(name.to_owned());
        values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    });
    read(&Env::from_fn(lookup));
    names.into_inner()
}

/// Checks that a configuration reads exactly the variables it `declares` (its `VARIABLES`),
/// when read by `read` from an environment holding `sample`: an error names the variables read
/// but not declared, and those declared but not read, or the sample's own error.
pub fn check_declared_variables<T, E: std::fmt::Display>(
    sample: &[(&str, &str)],
    declared: &[&str],
    read: impl FnOnce(&Env<Lookup<'_>>) -> Result<T, E>,
) -> Result<(), String> {
    let mut outcome = Ok(());
    let names = variables_read(sample, |env| {
        if let Err(error) = read(env) {
            outcome = Err(format!("the sample configuration is invalid: {error}"));
        }
    });
    outcome?;
    let declared: std::collections::BTreeSet<String> =
        declared.iter().map(|v| (*v).to_owned()).collect();
    if names == declared {
        return Ok(());
    }
    Err(format!(
        "read but not declared: {:?}; declared but not read: {:?}",
        names.difference(&declared).collect::<Vec<_>>(),
        declared.difference(&names).collect::<Vec<_>>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<Lookup<'static>> {
        Env::from_pairs(pairs)
    }

    #[test]
    fn a_missing_or_blank_required_variable_is_named() {
        let e = env(&[("BLANK", "  ")]);
        assert_eq!(e.required("ABSENT"), Err(ConfigError::Missing("ABSENT")));
        assert_eq!(e.required("BLANK"), Err(ConfigError::Missing("BLANK")));
        assert_eq!(
            e.required("ABSENT").unwrap_err().to_string(),
            "the environment variable ABSENT is required but not set"
        );
    }

    #[test]
    fn records_the_variables_a_reader_looks_up() {
        let read = variables_read(&[("A", "1")], |env| (env.optional("A"), env.required("B")));
        assert_eq!(read, ["A".to_owned(), "B".to_owned()].into_iter().collect());
    }

    #[test]
    fn parses_numbers_and_names_the_bad_one() {
        let e = env(&[("N", "12"), ("BAD", "twelve")]);
        assert_eq!(e.parsed_or("N", 3u32), Ok(12));
        assert_eq!(e.parsed_or("UNSET", 3u32), Ok(3));
        let err = e.parsed_or("BAD", 3u32).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { name: "BAD", .. }),
            "{err:?}"
        );
        assert_eq!(
            e.seconds_or("N", Duration::ZERO),
            Ok(Duration::from_secs(12))
        );
    }

    #[test]
    fn declared_variables_are_checked_both_ways() {
        let read = |env: &Env<Lookup<'_>>| env.required("A").map(|_| env.optional("B"));
        assert_eq!(
            check_declared_variables(&[("A", "1")], &["A", "B"], read),
            Ok(())
        );
        let missing = check_declared_variables(&[("A", "1")], &["A"], read).unwrap_err();
        assert!(
            missing.contains(r#"read but not declared: ["B"]"#),
            "{missing}"
        );
        let extra = check_declared_variables(&[("A", "1")], &["A", "B", "C"], read).unwrap_err();
        assert!(extra.contains(r#"declared but not read: ["C"]"#), "{extra}");
        let invalid = check_declared_variables(&[], &["A", "B"], read).unwrap_err();
        assert!(invalid.contains("invalid"), "{invalid}");
    }
}
