//! The JSONPath side of the data flow between states, with AWS's rules.
//!
//! A path starts at the state's input (`$`), the context object (`$$`) or a variable
//! (`$name`). A *reference path* (`$.a.b[0]`, `$['a b']`) names one value; any other JSONPath
//! (wildcards, filters, slices, `..`) is evaluated by `serde_json_path` and yields the array of
//! what it matched. `ResultPath` must be a reference path.

use serde_json::{Map, Value};
use serde_json_path::JsonPath;

use crate::errors::Failure;
use crate::intrinsics;

/// What a path starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `$`: the input being processed.
    Input,
    /// `$$`: the context object.
    Context,
    /// `$name`: a workflow variable.
    Var(String),
}

/// One step of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A field.
    Field(String),
    /// An array index.
    Index(usize),
}

/// A parsed path.
#[derive(Debug, Clone)]
pub struct Path {
    /// Where it starts.
    pub root: Root,
    /// Its steps when it is a reference path.
    pub segs: Option<Vec<Seg>>,
    query: Option<JsonPath>,
    text: String,
}

impl Path {
    /// Parse a path (`$`, `$.a`, `$$.Execution.Id`, `$var.field`, `$.items[?(@.x > 1)]`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (root, rest) = split_root(text)?;
        if let Some(segs) = reference(rest) {
            return Ok(Self {
                root,
                segs: Some(segs),
                query: None,
                text: text.to_string(),
            });
        }
        let query = JsonPath::parse(&format!("${rest}"))
            .map_err(|e| format!("'{text}' is not a valid JSONPath: {e}"))?;
        Ok(Self {
            root,
            segs: None,
            query: Some(query),
            text: text.to_string(),
        })
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it names one value (a reference path).
    pub fn is_reference(&self) -> bool {
        self.segs.is_some()
    }

    /// What it selects in `data` (the value at its root): `None` when a reference path finds
    /// nothing; an array of the matches for any other path.
    pub fn select(&self, data: &Value) -> Option<Value> {
        match (&self.segs, &self.query) {
            (Some(segs), _) => get(data, segs).cloned(),
            (None, Some(q)) => Some(Value::Array(
                q.query(data).all().into_iter().cloned().collect(),
            )),
            (None, None) => None,
        }
    }

    /// Evaluate against a scope: `None` when nothing is found.
    pub fn eval(&self, scope: &Scope<'_>) -> Option<Value> {
        match &self.root {
            Root::Input => self.select(scope.input),
            Root::Context => self.select(scope.context),
            Root::Var(name) => scope.vars.get(name).and_then(|v| self.select(v)),
        }
    }
}

/// What paths are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `$`.
    pub input: &'a Value,
    /// `$$`.
    pub context: &'a Value,
    /// The variables in scope.
    pub vars: &'a Map<String, Value>,
}

fn split_root(text: &str) -> Result<(Root, &str), String> {
    if let Some(rest) = text.strip_prefix("$$") {
        return Ok((Root::Context, rest));
    }
    let Some(rest) = text.strip_prefix('$') else {
        return Err(format!("'{text}' is not a path: a path starts with '$'"));
    };
    let name_len = rest
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return Ok((Root::Input, rest));
    }
    Ok((Root::Var(rest[..name_len].to_string()), &rest[name_len..]))
}

/// Parse the steps of a reference path (after its root), or `None` if it is not one.
fn reference(mut rest: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() || name.contains(['*', '(', ')', '@', '?', ',', ':', ' ']) {
                return None;
            }
            segs.push(Seg::Field(name.to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            if let Ok(i) = inner.parse::<usize>() {
                segs.push(Seg::Index(i));
            } else if inner.len() >= 2
                && ((inner.starts_with('\'') && inner.ends_with('\''))
                    || (inner.starts_with('"') && inner.ends_with('"')))
            {
                let name = &inner[1..inner.len() - 1];
                if name.contains(['\'', '"']) {
                    return None;
                }
                segs.push(Seg::Field(name.to_string()));
            } else {
                return None;
            }
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(segs)
}

fn get<'a>(mut v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for s in segs {
        v = match (s, v) {
            (Seg::Field(f), Value::Object(m)) => m.get(f)?,
            (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// AWS's way of writing a path in messages: `$['a']['b'][0]`.
pub fn bracketed(segs: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in segs {
        match seg {
            Seg::Field(f) => s.push_str(&format!("['{f}']")),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Apply `InputPath` / `OutputPath`: `None` (the field is null) gives `{}`, a missing
/// field gives `$`.
pub fn apply_io_path(path: Option<&Option<String>>, scope: &Scope<'_>) -> Result<Value, Failure> {
    match path {
        None => Ok(scope.input.clone()),
        Some(None) => Ok(Value::Object(Map::new())),
        Some(Some(p)) => select_or_fail(p, scope),
    }
}

/// A path's value, or AWS's runtime error for a path that finds nothing.
pub fn select_or_fail(text: &str, scope: &Scope<'_>) -> Result<Value, Failure> {
    let path = Path::parse(text).map_err(Failure::runtime)?;
    path.eval(scope).ok_or_else(|| {
        let shown = path
            .segs
            .as_deref()
            .map_or_else(|| text.to_string(), bracketed);
        Failure::runtime(format!(
            "Invalid path '{text}' : No results for path: {shown}"
        ))
    })
}

/// Apply `ResultPath` (a reference path): put `result` into `input` at the path. `None`
/// (the field is null) keeps the input; a missing field replaces the input with the result.
pub fn apply_result_path(
    path: Option<&Option<String>>,
    input: &Value,
    result: Value,
) -> Result<Value, Failure> {
    let text = match path {
        None => return Ok(result),
        Some(None) => return Ok(input.clone()),
        Some(Some(p)) => p,
    };
    let parsed = Path::parse(text).map_err(Failure::runtime)?;
    let segs = match (&parsed.root, &parsed.segs) {
        (Root::Input, Some(segs)) => segs,
        _ => {
            return Err(Failure::runtime(format!(
            "Invalid ResultPath '{text}': a ResultPath must be a reference path on the input ($)"
        )))
        }
    };
    if segs.is_empty() {
        return Ok(result);
    }
    let mut out = input.clone();
    let fail = || {
        Failure::runtime(format!(
            "Unable to apply ReferencePath {text} to input {}",
            shorten(input)
        ))
    };
    let mut cur = &mut out;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match seg {
            Seg::Field(f) => {
                let Value::Object(m) = cur else {
                    return Err(fail());
                };
                if last {
                    m.insert(f.clone(), result);
                    return Ok(out);
                }
                cur = m
                    .entry(f.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            Seg::Index(idx) => {
                let Value::Array(a) = cur else {
                    return Err(fail());
                };
                let Some(slot) = a.get_mut(*idx) else {
                    return Err(fail());
                };
                if last {
                    *slot = result;
                    return Ok(out);
                }
                cur = slot;
            }
        }
    }
    Ok(out)
}

/// JSON text of a value, cut for error messages.
pub fn shorten(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 256 {
        let mut end = 256;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// Evaluate a payload template (`Parameters`, `ResultSelector`, `ItemSelector`, a Pass
/// `Parameters`, `Assign` in JSONPath mode): fields whose name ends in `.$` take the value
/// of their path or intrinsic function (and lose the suffix); the rest are copied.
pub fn template(t: &Value, scope: &Scope<'_>) -> Result<Value, Failure> {
    match t {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                if let Some(name) = k.strip_suffix(".$") {
                    let Some(expr) = v.as_str() else {
                        return Err(Failure::runtime(format!(
                            "The value for the field '{k}' must be a STRING that contains a JSONPath or an intrinsic function"
                        )));
                    };
                    out.insert(name.to_string(), dynamic(k, expr, scope)?);
                } else {
                    out.insert(k.clone(), template(v, scope)?);
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => Ok(Value::Array(
            a.iter()
                .map(|v| template(v, scope))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

/// The value of a `.$` field: a path or an intrinsic function.
pub fn dynamic(field: &str, expr: &str, scope: &Scope<'_>) -> Result<Value, Failure> {
    let expr = expr.trim();
    if expr.starts_with("States.") {
        return intrinsics::evaluate(expr, scope);
    }
    let path = Path::parse(expr).map_err(Failure::runtime)?;
    path.eval(scope).ok_or_else(|| {
        let data = match path.root {
            Root::Input => scope.input,
            Root::Context => scope.context,
            Root::Var(_) => &Value::Null,
        };
        Failure::runtime(format!(
            "The JSONPath '{expr}' specified for the field '{field}' could not be found in the input '{}'",
            shorten(data)
        ))
    })
}

/// Check a payload template's `.$` fields at definition time: each must be a path or an
/// intrinsic function that parses. The message names the field.
pub fn check_template(t: &Value) -> Result<(), String> {
    match t {
        Value::Object(m) => {
            for (k, v) in m {
                if k.ends_with(".$") {
                    let Some(expr) = v.as_str() else {
                        return Err(format!(
                            "The value for the field '{k}' must be a STRING that contains a JSONPath but was an {}",
                            type_name(v)
                        ));
                    };
                    let expr = expr.trim();
                    if expr.starts_with("States.") {
                        intrinsics::parse(expr)
                            .map_err(|e| format!("The value for the field '{k}' must be a valid intrinsic function: {e}"))?;
                    } else {
                        Path::parse(expr).map_err(|e| {
                            format!("The value for the field '{k}' must be a valid JSONPath or a valid intrinsic function call: {e}")
                        })?;
                    }
                } else {
                    check_template(v)?;
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(check_template),
        _ => Ok(()),
    }
}

/// The JSON type name of a value as AWS writes it in messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "BOOLEAN",
        Value::Number(_) => "NUMBER",
        Value::String(_) => "STRING",
        Value::Array(_) => "ARRAY",
        Value::Object(_) => "OBJECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope<'a>(input: &'a Value, ctx: &'a Value, vars: &'a Map<String, Value>) -> Scope<'a> {
        Scope {
            input,
            context: ctx,
            vars,
        }
    }

    #[test]
    fn reference_and_query_paths() {
        let input = json!({"a": {"b": [10, 20]}, "items": [{"x": 1}, {"x": 5}], "c d": 3});
        let ctx = json!({"Execution": {"Id": "e1"}});
        let mut vars = Map::new();
        vars.insert("v".into(), json!({"k": "val"}));
        let s = scope(&input, &ctx, &vars);
        let p = |t: &str| Path::parse(t).map(|p| p.eval(&s));
        assert_eq!(p("$.a.b[1]"), Ok(Some(json!(20))));
        assert_eq!(p("$['c d']"), Ok(Some(json!(3))));
        assert_eq!(p("$$.Execution.Id"), Ok(Some(json!("e1"))));
        assert_eq!(p("$v.k"), Ok(Some(json!("val"))));
        assert_eq!(p("$.missing"), Ok(None));
        assert_eq!(p("$.items[?@.x > 2]"), Ok(Some(json!([{"x": 5}]))));
        assert_eq!(p("$.items[*].x"), Ok(Some(json!([1, 5]))));
        assert!(Path::parse("a.b").is_err());
    }

    #[test]
    fn result_path_rules() {
        let input = json!({"a": 1});
        assert_eq!(apply_result_path(None, &input, json!(2)), Ok(json!(2)));
        assert_eq!(
            apply_result_path(Some(&None), &input, json!(2)),
            Ok(input.clone())
        );
        let p = Some("$.r.s".to_string());
        assert_eq!(
            apply_result_path(Some(&p), &input, json!(2)),
            Ok(json!({"a": 1, "r": {"s": 2}}))
        );
        let bad = Some("$.a.b".to_string());
        let e = apply_result_path(Some(&bad), &input, json!(2)).unwrap_err();
        assert_eq!(e.error, "States.Runtime");
        assert!(
            e.cause.contains("Unable to apply ReferencePath $.a.b"),
            "{}",
            e.cause
        );
    }

    #[test]
    fn templates_and_missing_fields() {
        let input = json!({"name": "Ann", "n": 2});
        let ctx = json!({});
        let vars = Map::new();
        let s = scope(&input, &ctx, &vars);
        let t = json!({"greeting.$": "States.Format('Hi {}', $.name)", "fixed": {"n.$": "$.n"}, "list": [1]});
        assert_eq!(
            template(&t, &s),
            Ok(json!({"greeting": "Hi Ann", "fixed": {"n": 2}, "list": [1]}))
        );
        let e = template(&json!({"x.$": "$.nope"}), &s).unwrap_err();
        assert_eq!(e.error, "States.Runtime");
        assert_eq!(
            e.cause,
            "The JSONPath '$.nope' specified for the field 'x.$' could not be found in the input '{\"n\":2,\"name\":\"Ann\"}'"
        );
        assert!(check_template(&json!({"x.$": 3})).is_err());
        assert!(check_template(&json!({"x.$": "States.Nope("})).is_err());
    }
}
