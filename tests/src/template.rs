//! Reading `template.yaml`: its resources, the references between them, and
//! the values its intrinsic functions resolve to once resources exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_norway::Value;

/// Pseudo parameters CloudFormation provides.
pub const PSEUDO_PARAMETERS: [&str; 7] = [
    "AWS::AccountId",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackName",
    "AWS::URLSuffix",
    "AWS::StackId",
];

/// The parsed template.
pub struct Template {
    /// The whole document.
    pub root: Value,
}

impl Template {
    /// Reads `template.yaml` at the workspace root.
    pub fn load() -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let root = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        Self { root }
    }

    /// The names of a top-level section's entries (`Parameters`, `Resources`, `Conditions`…).
    pub fn names(&self, section: &str) -> BTreeSet<String> {
        self.root
            .get(section)
            .and_then(Value::as_mapping)
            .map(|m| {
                m.keys()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A resource by logical id. Panics when there is none.
    pub fn resource(&self, name: &str) -> &Value {
        self.root["Resources"]
            .get(name)
            .unwrap_or_else(|| panic!("the template has no resource {name}"))
    }

    /// A resource's properties.
    pub fn properties(&self, name: &str) -> &Value {
        &self.resource(name)["Properties"]
    }

    /// The logical ids of resources of `kind`, such as `AWS::Serverless::Function`.
    pub fn resources_of_type(&self, kind: &str) -> Vec<String> {
        self.root["Resources"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r["Type"].as_str() == Some(kind))
                    .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A function's environment variables, as written.
    pub fn environment(&self, function: &str) -> BTreeMap<String, Value> {
        self.properties(function)["Environment"]["Variables"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A parameter's default, as text.
    pub fn parameter_default(&self, name: &str) -> Option<String> {
        scalar(self.root["Parameters"].get(name)?.get("Default")?)
    }

    /// A parameter's allowed values, as text (empty when it lists none).
    pub fn allowed_values(&self, name: &str) -> Vec<String> {
        self.root["Parameters"]
            .get(name)
            .and_then(|p| p.get("AllowedValues"))
            .and_then(Value::as_sequence)
            .map(|values| values.iter().filter_map(scalar).collect())
            .unwrap_or_default()
    }

    /// The logical ids of the resources CloudFormation creates under `conditions`: those without
    /// a `Condition`, and those whose condition is true. A condition missing from `conditions`
    /// counts as false.
    pub fn existing_resources(&self, conditions: &BTreeMap<String, bool>) -> BTreeSet<String> {
        self.root["Resources"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| {
                        r.get("Condition")
                            .and_then(Value::as_str)
                            .is_none_or(|c| conditions.get(c).copied().unwrap_or(false))
                    })
                    .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `value` as CloudFormation deploys it under `conditions`: every `Fn::If` replaced by the
/// branch its condition chooses, and every `Ref AWS::NoValue` left out (`None` when `value`
/// itself is left out). Other intrinsic functions are kept, their arguments chosen likewise.
pub fn chosen(value: &Value, conditions: &BTreeMap<String, bool>) -> Option<Value> {
    if let Some((function, argument)) = intrinsic(value) {
        match function.as_str() {
            "If" => {
                let parts = argument.as_sequence()?;
                let condition = parts.first().and_then(Value::as_str)?;
                let pick = if conditions.get(condition).copied()? {
                    1
                } else {
                    2
                };
                return chosen(parts.get(pick)?, conditions);
            }
            "Ref" if argument.as_str() == Some("AWS::NoValue") => return None,
            _ => {}
        }
    }
    match value {
        Value::Mapping(map) => Some(Value::Mapping(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), chosen(v, conditions)?)))
                .collect(),
        )),
        Value::Sequence(items) => Some(Value::Sequence(
            items.iter().filter_map(|v| chosen(v, conditions)).collect(),
        )),
        Value::Tagged(tagged) => Some(Value::Tagged(Box::new(serde_norway::value::TaggedValue {
            tag: tagged.tag.clone(),
            value: chosen(&tagged.value, conditions)?,
        }))),
        other => Some(other.clone()),
    }
}

/// The intrinsic function a value calls, as (name, argument), for both the short (`!Ref x`) and
/// the long (`{"Ref": x}`) forms.
pub fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_owned(),
            &tagged.value,
        )),
        Value::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key.starts_with("Fn::") || key == "Condition")
                .then(|| (key.trim_start_matches("Fn::").to_owned(), argument))
        }
        _ => None,
    }
}

/// A scalar as text.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Every name a value refers to through `Ref`, `GetAtt`, `Sub` (`${Name}`, `${Name.Attr}`, but
/// not its own variables or `${!Literal}`) and `If` (its condition), with the function used.
pub fn references(value: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    collect_references(value, &BTreeSet::new(), &mut found);
    found
}

fn collect_references(value: &Value, local: &BTreeSet<String>, found: &mut Vec<(String, String)>) {
    if let Some((function, argument)) = intrinsic(value) {
        match function.as_str() {
            "Ref" => {
                if let Some(name) = argument.as_str() {
                    found.push(("Ref".into(), name.to_owned()));
                }
            }
            "GetAtt" => {
                let target = match argument {
                    Value::String(s) => s.split('.').next().map(str::to_owned),
                    Value::Sequence(parts) => {
                        parts.first().and_then(Value::as_str).map(str::to_owned)
                    }
                    _ => None,
                };
                found.extend(target.map(|t| ("GetAtt".into(), t)));
            }
            "Sub" => {
                let (text, variables) = match argument {
                    Value::Sequence(parts) => (parts.first().and_then(Value::as_str), parts.get(1)),
                    other => (other.as_str(), None),
                };
                let mut scope = local.clone();
                if let Some(Value::Mapping(vars)) = variables {
                    for (name, expression) in vars {
                        scope.extend(name.as_str().map(str::to_owned));
                        collect_references(expression, local, found);
                    }
                }
                for name in sub_variables(text.unwrap_or_default()) {
                    let base = name.split('.').next().unwrap_or(&name).to_owned();
                    if !scope.contains(&base) {
                        found.push(("Sub".into(), base));
                    }
                }
            }
            "If" => {
                if let Some(condition) = argument
                    .as_sequence()
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                {
                    found.push(("If".into(), condition.to_owned()));
                }
                if let Some(branches) = argument.as_sequence() {
                    for branch in branches.iter().skip(1) {
                        collect_references(branch, local, found);
                    }
                }
            }
            _ => collect_references(argument, local, found),
        }
        return;
    }
    match value {
        Value::Mapping(map) => map
            .values()
            .for_each(|v| collect_references(v, local, found)),
        Value::Sequence(items) => items
            .iter()
            .for_each(|v| collect_references(v, local, found)),
        _ => {}
    }
}

/// The `${...}` variables of a `Sub` string, without `${!Literal}` escapes.
pub fn sub_variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            names.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    names
}

/// What intrinsic functions resolve to: parameters, `Ref` of resources (their physical ids),
/// `GetAtt` attributes, and the pseudo parameters.
#[derive(Debug, Default, Clone)]
pub struct Resolver {
    /// Values of `Ref` (parameters, resources, pseudo parameters).
    pub refs: BTreeMap<String, String>,
    /// Values of `GetAtt`, keyed `Resource.Attribute`.
    pub attributes: BTreeMap<String, String>,
    /// Conditions' values.
    pub conditions: BTreeMap<String, bool>,
    /// The template's `Mappings` that `FindInMap` reads, keyed (map, top-level key, second-level
    /// key).
    pub mappings: BTreeMap<(String, String, String), String>,
}

impl Resolver {
    /// Resolves `value` to text; `None` for `AWS::NoValue` or what cannot be resolved.
    pub fn resolve(&self, value: &Value) -> Option<String> {
        let Some((function, argument)) = intrinsic(value) else {
            return scalar(value);
        };
        match function.as_str() {
            "Ref" => {
                let name = argument.as_str()?;
                if name == "AWS::NoValue" {
                    None
                } else {
                    self.refs.get(name).cloned()
                }
            }
            "GetAtt" => {
                let key = match argument {
                    Value::String(s) => s.clone(),
                    Value::Sequence(parts) => parts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("."),
                    _ => return None,
                };
                self.attributes.get(&key).cloned()
            }
            "Sub" => {
                let (text, variables) = match argument {
                    Value::Sequence(parts) => (parts.first()?.as_str()?, parts.get(1)),
                    other => (other.as_str()?, None),
                };
                let mut out = text.to_owned();
                for name in sub_variables(text) {
                    let local = variables
                        .and_then(|v| v.get(name.as_str()))
                        .and_then(|e| self.resolve(e));
                    let value = local
                        .or_else(|| self.refs.get(&name).cloned())
                        .or_else(|| self.attributes.get(&name).cloned())?;
                    out = out.replace(&format!("${{{name}}}"), &value);
                }
                Some(out)
            }
            "If" => {
                let parts = argument.as_sequence()?;
                let condition = *self.conditions.get(parts.first()?.as_str()?)?;
                self.resolve(parts.get(if condition { 1 } else { 2 })?)
            }
            "FindInMap" => {
                let parts = argument.as_sequence()?;
                let key: Option<Vec<String>> =
                    parts.iter().map(|part| self.resolve(part)).collect();
                let [map, top, second] = <[String; 3]>::try_from(key?).ok()?;
                self.mappings.get(&(map, top, second)).cloned()
            }
            "Select" => {
                let parts = argument.as_sequence()?;
                let index: usize = scalar(parts.first()?)?.parse().ok()?;
                let list = self.resolve_list(parts.get(1)?)?;
                list.get(index).cloned()
            }
            _ => None,
        }
    }

    /// Takes `template`'s `Mappings` into [`Resolver::mappings`], then evaluates every condition
    /// of its `Conditions` section against the parameters and pseudo parameters in
    /// [`Resolver::refs`], into [`Resolver::conditions`]. A condition that cannot be evaluated
    /// (an unknown function or value) is left out.
    pub fn evaluate_conditions(&mut self, template: &Template) {
        self.read_mappings(template);
        let Some(definitions) = template.root["Conditions"].as_mapping() else {
            return;
        };
        // Conditions may name one another in any order: evaluate until nothing more can be.
        loop {
            let mut progress = false;
            for (name, definition) in definitions {
                let Some(name) = name.as_str() else { continue };
                if self.conditions.contains_key(name) {
                    continue;
                }
                if let Some(value) = self.condition(definition) {
                    self.conditions.insert(name.to_owned(), value);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// Takes `template`'s `Mappings` (their scalar values) into [`Resolver::mappings`].
    pub fn read_mappings(&mut self, template: &Template) {
        let Some(maps) = template.root.get("Mappings").and_then(Value::as_mapping) else {
            return;
        };
        for (map, tops) in maps {
            for (top, seconds) in tops.as_mapping().into_iter().flatten() {
                for (second, value) in seconds.as_mapping().into_iter().flatten() {
                    if let (Some(map), Some(top), Some(second), Some(value)) =
                        (scalar(map), scalar(top), scalar(second), scalar(value))
                    {
                        self.mappings.insert((map, top, second), value);
                    }
                }
            }
        }
    }

    /// The value of a condition function (`Equals`, `Not`, `And`, `Or`, `Condition`).
    pub fn condition(&self, value: &Value) -> Option<bool> {
        let (function, argument) = intrinsic(value)?;
        let all = |items: &Value| -> Option<Vec<bool>> {
            items
                .as_sequence()?
                .iter()
                .map(|c| self.condition(c))
                .collect()
        };
        match function.as_str() {
            "Equals" => {
                let parts = argument.as_sequence()?;
                Some(self.resolve(parts.first()?)? == self.resolve(parts.get(1)?)?)
            }
            "Not" => Some(!self.condition(argument.as_sequence()?.first()?)?),
            "And" => Some(all(argument)?.into_iter().all(|c| c)),
            "Or" => Some(all(argument)?.into_iter().any(|c| c)),
            "Condition" => self.conditions.get(argument.as_str()?).copied(),
            _ => None,
        }
    }

    fn resolve_list(&self, value: &Value) -> Option<Vec<String>> {
        match intrinsic(value) {
            Some((function, argument)) if function == "Split" => {
                let parts = argument.as_sequence()?;
                let separator = parts.first()?.as_str()?;
                Some(
                    self.resolve(parts.get(1)?)?
                        .split(separator)
                        .map(str::to_owned)
                        .collect(),
                )
            }
            _ => value
                .as_sequence()
                .map(|items| items.iter().filter_map(|i| self.resolve(i)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_in_every_form() {
        let value: Value = serde_norway::from_str(
            r#"
            a: !Ref Param
            b: !GetAtt Queue.Arn
            c: !Sub "arn:${AWS::Partition}:x:${Table.Arn}/${!Literal}"
            d: !Sub ["${Local}-${Other}", {Local: !Ref Inner}]
            e: !If [Cond, !Ref Yes, !Ref AWS::NoValue]
            f: {"Fn::GetAtt": ["Role", "Arn"]}
            "#,
        )
        .unwrap();
        let names: BTreeSet<String> = references(&value).into_iter().map(|(_, n)| n).collect();
        let expected: BTreeSet<String> = [
            "Param",
            "Queue",
            "AWS::Partition",
            "Table",
            "Inner",
            "Other",
            "Cond",
            "Yes",
            "AWS::NoValue",
            "Role",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn resolves_intrinsics() {
        let mut resolver = Resolver::default();
        resolver
            .refs
            .insert("From".into(), "alerts@example.com".into());
        resolver
            .refs
            .insert("AWS::Region".into(), "us-east-1".into());
        resolver
            .attributes
            .insert("Queue.Arn".into(), "arn:q".into());
        resolver.conditions.insert("HasX".into(), false);
        let value: Value = serde_norway::from_str(
            r#"
            - !Sub ["identity/${Domain}@${AWS::Region}", {Domain: !Select [1, !Split ["@", !Ref From]]}]
            - !GetAtt Queue.Arn
            - !If [HasX, yes, !Ref AWS::NoValue]
            - 25
            "#,
        )
        .unwrap();
        let items = value.as_sequence().unwrap();
        assert_eq!(
            resolver.resolve(&items[0]).as_deref(),
            Some("identity/example.com@us-east-1")
        );
        assert_eq!(resolver.resolve(&items[1]).as_deref(), Some("arn:q"));
        assert_eq!(resolver.resolve(&items[2]), None);
        assert_eq!(resolver.resolve(&items[3]).as_deref(), Some("25"));
    }

    #[test]
    fn finds_in_maps_read_from_the_template() {
        let template = Template {
            root: serde_norway::from_str(
                r#"
                Mappings:
                  Models:
                    Defaults: {Chat: "amazon.nova-lite-v1:0"}
                    us-east-1: {Chat: east}
                Conditions:
                  HasModel: !Not [!Equals [!Ref Model, ""]]
                "#,
            )
            .unwrap(),
        };
        let mut resolver = Resolver::default();
        resolver.refs.insert("Model".into(), String::new());
        resolver
            .refs
            .insert("AWS::Region".into(), "us-east-1".into());
        resolver.evaluate_conditions(&template);
        let value: Value = serde_norway::from_str(
            r#"
            - !Sub ["us.${M}", {M: !If [HasModel, !Ref Model, !FindInMap [Models, Defaults, Chat]]}]
            - {"Fn::FindInMap": [Models, !Ref "AWS::Region", Chat]}
            - !FindInMap [Models, Defaults, Missing]
            - !FindInMap [Models, Defaults]
            "#,
        )
        .unwrap();
        let items = value.as_sequence().unwrap();
        assert_eq!(
            resolver.resolve(&items[0]).as_deref(),
            Some("us.amazon.nova-lite-v1:0")
        );
        assert_eq!(resolver.resolve(&items[1]).as_deref(), Some("east"));
        assert_eq!(resolver.resolve(&items[2]), None);
        assert_eq!(resolver.resolve(&items[3]), None);
    }

    #[test]
    fn evaluates_conditions_and_chooses_branches() {
        let template = Template {
            root: serde_norway::from_str(
                r#"
                Conditions:
                  Both: !And [!Condition IsA, !Not [!Equals [!Ref Count, "0"]]]
                  IsA: !Equals [!Ref Door, A]
                  Either: {"Fn::Or": [{"Condition": "IsA"}, {"Fn::Equals": [!Ref Door, B]}]}
                  Unknown: !Equals [!Ref Missing, x]
                Resources:
                  Always: {Type: X}
                  OnlyA: {Type: X, Condition: IsA}
                  OnlyB: {Type: X, Condition: Unknown}
                "#,
            )
            .unwrap(),
        };
        let mut resolver = Resolver::default();
        resolver.refs.insert("Door".into(), "A".into());
        resolver.refs.insert("Count".into(), "5".into());
        resolver.evaluate_conditions(&template);
        let expected = BTreeMap::from([
            ("Both".to_owned(), true),
            ("IsA".to_owned(), true),
            ("Either".to_owned(), true),
        ]);
        assert_eq!(resolver.conditions, expected);
        assert_eq!(
            template.existing_resources(&resolver.conditions),
            BTreeSet::from(["Always".to_owned(), "OnlyA".to_owned()])
        );

        let value: Value = serde_norway::from_str(
            r#"
            a: !If [IsA, !Ref Yes, !Ref No]
            b: !If [Both, !Ref AWS::NoValue, kept]
            c: [!Sub "${X}", !If [IsA, !Ref AWS::NoValue, dropped]]
            "#,
        )
        .unwrap();
        let chosen = chosen(&value, &resolver.conditions).unwrap();
        let names: Vec<String> = references(&chosen).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["Yes", "X"]);
        assert!(chosen.get("b").is_none());
        assert_eq!(chosen["c"].as_sequence().map(Vec::len), Some(1));
    }
}
