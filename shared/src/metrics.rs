//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines: CloudWatch turns each such JSON
//! line into metric data points, with no API call and no extra latency.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The CloudWatch unit of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count of things.
    Count,
    /// A duration in milliseconds.
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// A metric's name and, when it has one, its extra dimension's name and value.
type MetricKey = (&'static str, Option<(&'static str, String)>);

/// A metric's unit and its recorded values (a counter keeps one running total).
type Series = (Unit, Vec<f64>);

/// The metrics of one EMF line: name, unit and values.
type LineMetrics<'a> = Vec<(&'a str, Unit, &'a [f64])>;

/// Metrics gathered during one invocation, written as EMF lines at its end.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    values: BTreeMap<MetricKey, Series>,
}

impl Metrics {
    /// Adds `value` to the counter `name`.
    pub fn count(&mut self, name: &'static str, value: u64) {
        self.record(name, None, Unit::Count, value as f64);
    }

    /// Adds `value` to the counter `name` for one value of an extra dimension, such as Meta's
    /// error code.
    pub fn count_by(
        &mut self,
        name: &'static str,
        dimension: &'static str,
        dimension_value: String,
        value: u64,
    ) {
        self.record(
            name,
            Some((dimension, dimension_value)),
            Unit::Count,
            value as f64,
        );
    }

    /// Adds `value`, a fractional amount such as DynamoDB's capacity units, to the counter
    /// `name`.
    pub fn add(&mut self, name: &'static str, value: f64) {
        self.record(name, None, Unit::Count, value);
    }

    /// Records one observation of a duration.
    pub fn duration_ms(&mut self, name: &'static str, millis: u64) {
        self.record(name, None, Unit::Milliseconds, millis as f64);
    }

    fn record(
        &mut self,
        name: &'static str,
        dimension: Option<(&'static str, String)>,
        unit: Unit,
        value: f64,
    ) {
        let (_, values) = self
            .values
            .entry((name, dimension))
            .or_insert((unit, Vec::new()));
        match (unit, values.first_mut()) {
            (Unit::Count, Some(total)) => *total += value,
            _ => values.push(value),
        }
    }

    /// Adds everything `other` recorded to these metrics.
    pub fn merge(&mut self, other: Metrics) {
        for ((name, dimension), (unit, values)) in other.values {
            for value in values {
                self.record(name, dimension.clone(), unit, value);
            }
        }
    }

    /// The value of a counter without an extra dimension (for tests and logs).
    pub fn counter(&self, name: &str) -> u64 {
        self.values
            .iter()
            .filter(|((n, d), _)| *n == name && d.is_none())
            .map(|(_, (_, v))| v.iter().sum::<f64>() as u64)
            .sum()
    }

    /// The EMF lines: one for the metrics without an extra dimension, one per extra dimension
    /// value. Each carries the `Service` dimension (the function's name).
    pub fn render(&self, namespace: &str, service: &str, timestamp_ms: u64) -> Vec<String> {
        let mut groups: BTreeMap<Option<(&str, &str)>, LineMetrics<'_>> = BTreeMap::new();
        for ((name, dimension), (unit, values)) in &self.values {
            let key = dimension.as_ref().map(|(d, v)| (*d, v.as_str()));
            groups.entry(key).or_default().push((name, *unit, values));
        }
        groups
            .into_iter()
            .map(|(dimension, metrics)| {
                let mut dimensions = vec!["Service"];
                let mut line = Map::new();
                line.insert("Service".into(), json!(service));
                if let Some((name, value)) = dimension {
                    dimensions.push(name);
                    line.insert(name.into(), json!(value));
                }
                let definitions: Vec<Value> = metrics
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
                    .collect();
                for (name, _, values) in &metrics {
                    let value = match values {
                        [single] => json!(single),
                        many => json!(many),
                    };
                    line.insert((*name).into(), value);
                }
                line.insert(
                    "_aws".into(),
                    json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [
                        {"Namespace": namespace, "Dimensions": [dimensions], "Metrics": definitions}
                    ]}),
                );
                Value::Object(line).to_string()
            })
            .collect()
    }

    /// Writes the EMF lines to standard output, where Lambda hands them to CloudWatch.
    pub fn emit(&self, namespace: &str, service: &str) {
        let now_ms = u64::try_from(crate::clock::now_epoch_ms()).unwrap_or_default();
        for line in self.render(namespace, service, now_ms) {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_durations_and_dimensions_as_emf() {
        let mut metrics = Metrics::default();
        metrics.count("RepliesSent", 1);
        metrics.count("RepliesSent", 2);
        metrics.duration_ms("LlmLatency", 120);
        metrics.duration_ms("LlmLatency", 80);
        metrics.count_by("MetaErrors", "ErrorCode", "131047".into(), 1);
        assert_eq!(metrics.counter("RepliesSent"), 3);
        let mut other = Metrics::default();
        other.count("RepliesSent", 4);
        other.duration_ms("LlmLatency", 10);
        metrics.merge(other);
        assert_eq!(metrics.counter("RepliesSent"), 7);

        let lines: Vec<Value> = metrics
            .render("WhatsAppAssistant", "processor", 1_700_000_000_000)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let main = &lines[0];
        assert_eq!(main["Service"], "processor");
        assert_eq!(main["RepliesSent"], 7.0);
        assert_eq!(main["LlmLatency"], json!([120.0, 80.0, 10.0]));
        let directive = &main["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(main["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(directive["Namespace"], "WhatsAppAssistant");
        assert_eq!(directive["Dimensions"], json!([["Service"]]));
        assert!(
            directive["Metrics"]
                .as_array()
                .unwrap()
                .contains(&json!({"Name": "LlmLatency", "Unit": "Milliseconds"}))
        );

        let by_code = &lines[1];
        assert_eq!(by_code["ErrorCode"], "131047");
        assert_eq!(by_code["MetaErrors"], 1.0);
        assert_eq!(
            by_code["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Service", "ErrorCode"]])
        );
    }

    #[test]
    fn renders_nothing_when_nothing_was_recorded() {
        assert!(Metrics::default().render("N", "s", 0).is_empty());
    }
}
