//! What a target receives: the whole event, a constant `Input`, the part `InputPath` selects,
//! or an `InputTransformer` (values picked by `InputPathsMap`, put into `InputTemplate`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;

/// The most variables an `InputPathsMap` holds.
pub const MAX_PATHS: usize = 100;

/// What a target's input is made from (at most one of the three is set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InputSpec {
    /// A constant JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// A JSONPath into the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    /// Values from the event put into a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_transformer: Option<InputTransformer>,
}

/// `InputTransformer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InputTransformer {
    /// Variable name → JSONPath.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_paths_map: BTreeMap<String, String>,
    /// The text with `<variable>` placeholders.
    pub input_template: String,
}

/// What a rule match adds to the reserved variables.
#[derive(Debug, Clone, Default)]
pub struct RuleInfo<'a> {
    /// The rule's name.
    pub name: &'a str,
    /// The rule's ARN.
    pub arn: &'a str,
    /// When the event was received (RFC 3339).
    pub ingestion_time: &'a str,
}

fn path(p: &str) -> Result<JsonPath, String> {
    JsonPath::parse(p).map_err(|e| format!("'{p}' is not a valid JSONPath: {e}"))
}

/// The value a JSONPath selects: the node when it selects one, the list when several.
fn select(p: &JsonPath, event: &Value) -> Option<Value> {
    let nodes = p.query(event).all();
    match nodes.as_slice() {
        [] => None,
        [one] => Some((*one).clone()),
        many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
    }
}

impl InputSpec {
    /// Check the spec as `PutTargets` does (EventBridge's `ValidationException` messages).
    pub fn check(&self, target_id: &str) -> Result<(), String> {
        let set = [
            self.input.is_some(),
            self.input_path.is_some(),
            self.input_transformer.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(format!(
                "Target {target_id}: only one of Input, InputPath, or InputTransformer must be provided."
            ));
        }
        if let Some(i) = &self.input {
            serde_json::from_str::<Value>(i)
                .map_err(|e| format!("Target {target_id}: Input is not valid JSON: {e}"))?;
        }
        if let Some(p) = &self.input_path {
            path(p).map_err(|e| format!("Target {target_id}: InputPath {e}"))?;
        }
        if let Some(t) = &self.input_transformer {
            t.check(target_id)?;
        }
        Ok(())
    }

    /// The input for one delivery of `event` (already checked, so errors are unusual).
    pub fn render(&self, event: &Value, rule: &RuleInfo<'_>) -> Result<Value, String> {
        if let Some(i) = &self.input {
            return serde_json::from_str(i).map_err(|e| format!("Input is not valid JSON: {e}"));
        }
        if let Some(p) = &self.input_path {
            return Ok(select(&path(p)?, event).unwrap_or(Value::Null));
        }
        if let Some(t) = &self.input_transformer {
            return t.render(event, rule);
        }
        Ok(event.clone())
    }
}

/// Whether a template is JSON-shaped (an object or a list), so its result must parse.
fn json_shaped(template: &str) -> bool {
    matches!(template.trim_start().chars().next(), Some('{' | '['))
}

impl InputTransformer {
    fn check(&self, target_id: &str) -> Result<(), String> {
        if self.input_paths_map.len() > MAX_PATHS {
            return Err(format!(
                "Target {target_id}: InputPathsMap has {} entries, at most {MAX_PATHS} are allowed.",
                self.input_paths_map.len()
            ));
        }
        for (k, p) in &self.input_paths_map {
            let ok_name = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok_name {
                return Err(format!("Target {target_id}: InputPathsMap key '{k}' is not valid (letters, digits, _ and - only)."));
            }
            if k.starts_with("aws") {
                return Err(format!(
                    "Target {target_id}: InputPathsMap key '{k}' is reserved (keys may not start with 'aws')."
                ));
            }
            path(p).map_err(|e| format!("Target {target_id}: InputPathsMap value {e}"))?;
        }
        if self.input_template.is_empty() || self.input_template.len() > 8192 {
            return Err(format!(
                "Target {target_id}: InputTemplate must have 1 to 8192 characters."
            ));
        }
        // Every variable as a sample string: a JSON template must still be JSON.
        if json_shaped(&self.input_template) {
            let sample = serde_json::json!({});
            let text = self.fill(&sample, &RuleInfo::default(), true)?;
            serde_json::from_str::<Value>(&text).map_err(|e| {
                format!("Target {target_id}: InputTemplate is not valid JSON once its placeholders are filled: {e}")
            })?;
        }
        Ok(())
    }

    fn render(&self, event: &Value, rule: &RuleInfo<'_>) -> Result<Value, String> {
        let text = self.fill(event, rule, false)?;
        if json_shaped(&self.input_template) {
            return serde_json::from_str(&text)
                .map_err(|e| format!("the input template made invalid JSON: {e}"));
        }
        // A quoted template is a JSON string; anything else is plain text.
        Ok(serde_json::from_str::<Value>(&text)
            .ok()
            .filter(Value::is_string)
            .unwrap_or(Value::String(text)))
    }

    /// The template with its placeholders replaced (`sample`: every variable as a string).
    fn fill(&self, event: &Value, rule: &RuleInfo<'_>, sample: bool) -> Result<String, String> {
        let t = &self.input_template;
        let mut out = String::with_capacity(t.len());
        let mut in_string = false;
        let mut escaped = false;
        let mut rest = t.as_str();
        while let Some(c) = rest.chars().next() {
            if c == '<' {
                if let Some(end) = rest.find('>') {
                    let name = &rest[1..end];
                    if let Some(value) = self.variable(name, event, rule, sample)? {
                        out.push_str(&insert(&value, in_string));
                        rest = &rest[end + 1..];
                        escaped = false;
                        continue;
                    }
                }
            }
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
            } else if c == '"' {
                in_string = true;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        Ok(out)
    }

    /// A placeholder's value; `None` leaves the text as it is (not a variable).
    fn variable(
        &self,
        name: &str,
        event: &Value,
        rule: &RuleInfo<'_>,
        sample: bool,
    ) -> Result<Option<Value>, String> {
        let reserved = match name {
            "aws.events.rule-name" => Some(Value::from(rule.name)),
            "aws.events.rule-arn" => Some(Value::from(rule.arn)),
            "aws.events.event.ingestion-time" => Some(Value::from(rule.ingestion_time)),
            "aws.events.event" | "aws.events.event.json" => Some(event.clone()),
            _ => None,
        };
        if reserved.is_some() {
            return Ok(if sample {
                Some(Value::from("x"))
            } else {
                reserved
            });
        }
        let Some(p) = self.input_paths_map.get(name) else {
            return Ok(None);
        };
        if sample {
            return Ok(Some(Value::from("x")));
        }
        Ok(Some(select(&path(p)?, event).unwrap_or(Value::Null)))
    }
}

/// A value as template text: inside a JSON string its text escaped, outside it its JSON.
fn insert(v: &Value, in_string: bool) -> String {
    if !in_string {
        return v.to_string();
    }
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let quoted = Value::String(text).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"source": "com.enterprise.application", "detail-type": "DocumentUploaded",
               "detail": {"document": "contract \"A\"", "pages": 3, "tags": ["x", "y"]}})
    }

    fn transformer(paths: &[(&str, &str)], template: &str) -> InputSpec {
        InputSpec {
            input_transformer: Some(InputTransformer {
                input_paths_map: paths
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                input_template: template.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inputs_of_each_kind() {
        let rule = RuleInfo {
            name: "r",
            arn: "arn:r",
            ingestion_time: "2026-12-07T00:00:00Z",
        };
        assert_eq!(
            InputSpec::default().render(&event(), &rule).unwrap(),
            event()
        );
        let constant = InputSpec {
            input: Some("{\"a\":1}".into()),
            ..Default::default()
        };
        assert_eq!(constant.render(&event(), &rule).unwrap(), json!({"a": 1}));
        let path = InputSpec {
            input_path: Some("$.detail.pages".into()),
            ..Default::default()
        };
        assert_eq!(path.render(&event(), &rule).unwrap(), json!(3));

        let t = transformer(
            &[
                ("doc", "$.detail.document"),
                ("pages", "$.detail.pages"),
                ("tags", "$.detail.tags"),
            ],
            r#"{"prompt": "Summarise <doc> (<pages> pages)", "doc": <doc>, "n": <pages>, "tags": <tags>, "rule": "<aws.events.rule-name>"}"#,
        );
        t.check("t1").unwrap();
        assert_eq!(
            t.render(&event(), &rule).unwrap(),
            json!({"prompt": "Summarise contract \"A\" (3 pages)", "doc": "contract \"A\"", "n": 3,
                   "tags": ["x", "y"], "rule": "r"})
        );
        let text = transformer(&[("pages", "$.detail.pages")], r#""It has <pages> pages""#);
        assert_eq!(
            text.render(&event(), &rule).unwrap(),
            json!("It has 3 pages")
        );
        let plain = transformer(&[("pages", "$.detail.pages")], "pages: <pages> <unknown>");
        assert_eq!(
            plain.render(&event(), &rule).unwrap(),
            json!("pages: 3 <unknown>")
        );
        let missing = transformer(&[("x", "$.detail.nothing")], r#"{"x": <x>}"#);
        assert_eq!(missing.render(&event(), &rule).unwrap(), json!({"x": null}));
    }

    #[test]
    fn bad_specs_are_refused() {
        let two = InputSpec {
            input: Some("1".into()),
            input_path: Some("$.a".into()),
            ..Default::default()
        };
        assert!(two.check("t").unwrap_err().contains("only one of"));
        let bad_input = InputSpec {
            input: Some("{".into()),
            ..Default::default()
        };
        assert!(bad_input
            .check("t")
            .unwrap_err()
            .contains("Input is not valid JSON"));
        assert!(transformer(&[("a", "detail")], "<a>").check("t").is_err());
        assert!(transformer(&[("aws-x", "$.a")], "<aws-x>")
            .check("t")
            .is_err());
        assert!(transformer(&[("a b", "$.a")], "x").check("t").is_err());
        assert!(transformer(&[("a", "$.a")], r#"{"x": <a>"#)
            .check("t")
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
