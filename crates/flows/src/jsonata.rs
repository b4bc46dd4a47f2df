//! The JSONata query language (`"QueryLanguage": "JSONata"`): `{% expression %}` strings
//! anywhere in `Arguments`, `Output`, `Assign`, `Items`, `ItemSelector` and the fields that
//! take a value (`Seconds`, `Timestamp`, `TimeoutSeconds`, a Choice rule's `Condition`, a Fail
//! state's `Error` and `Cause` …), evaluated by `seuil` with the reserved variable `$states`
//! (`input`, `result`, `errorOutput`, `context`) and the workflow's variables bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Number, Value};

use crate::errors::Failure;

/// The error of an expression that fails to evaluate.
pub const QUERY_EVALUATION_ERROR: &str = "States.QueryEvaluationError";

/// The expression inside `{% … %}`, if `s` is one.
pub fn expression(s: &str) -> Option<&str> {
    let t = s.trim();
    t.strip_prefix("{%")
        .and_then(|r| r.strip_suffix("%}"))
        .map(str::trim)
}

type Cache = Mutex<HashMap<String, Arc<seuil::Seuil>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compile an expression (cached: definitions are evaluated again and again).
pub fn compile(expr: &str) -> Result<Arc<seuil::Seuil>, String> {
    if let Some(c) = cache().lock().ok().and_then(|m| m.get(expr).cloned()) {
        return Ok(c);
    }
    let compiled = Arc::new(seuil::Seuil::compile(expr).map_err(|e| e.to_string())?);
    if let Ok(mut m) = cache().lock() {
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(expr.to_string(), Arc::clone(&compiled));
    }
    Ok(compiled)
}

/// Check every `{% %}` string of a template compiles; the message names the field.
pub fn check_template(v: &Value, at: &str) -> Result<(), String> {
    match v {
        Value::String(s) => match expression(s) {
            Some(e) => compile(e).map(|_| ()).map_err(|why| {
                format!("{at}: the JSONata expression '{e}' does not compile: {why}")
            }),
            None if s.contains("{%") => Err(format!(
                "{at}: a JSONata expression must be the whole string, as \"{{% … %}}\""
            )),
            None => Ok(()),
        },
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_template(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m
            .iter()
            .try_for_each(|(k, x)| check_template(x, &format!("{at}/{k}"))),
        _ => Ok(()),
    }
}

/// JSONata numbers are doubles: give whole ones back as integers, as Step Functions does.
fn integral(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                Value::Number(Number::from(f as i64))
            }
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(integral).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

/// Evaluate one expression over `$states` and the variables.
pub fn eval(expr: &str, states: &Value, vars: &Map<String, Value>) -> Result<Value, Failure> {
    let compiled = compile(expr).map_err(|why| {
        Failure::new(
            QUERY_EVALUATION_ERROR,
            format!("The JSONata expression '{expr}' does not compile: {why}"),
        )
    })?;
    let mut bindings = vars.clone();
    bindings.insert("states".into(), states.clone());
    let input = states.get("input").cloned().unwrap_or(Value::Null);
    compiled
        .evaluate_with_config_and_bindings(&input, &seuil::EvalConfig::default(), Some(&bindings))
        .map(integral)
        .map_err(|e| {
            Failure::new(
                QUERY_EVALUATION_ERROR,
                format!("An error occurred while evaluating the JSONata expression '{expr}': {e}"),
            )
        })
}

/// Evaluate a template: every `{% %}` string is replaced by its value.
pub fn template(t: &Value, states: &Value, vars: &Map<String, Value>) -> Result<Value, Failure> {
    match t {
        Value::String(s) => match expression(s) {
            Some(e) => eval(e, states, vars),
            None => Ok(t.clone()),
        },
        Value::Array(a) => Ok(Value::Array(
            a.iter()
                .map(|x| template(x, states, vars))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k.clone(), template(v, states, vars)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_see_states_and_variables() {
        let states = json!({"input": {"n": 5, "items": [1, 2, 3]}, "context": {"Execution": {"Name": "e1"}}});
        let mut vars = Map::new();
        vars.insert("prefix".into(), json!("item-"));
        let t = json!({
            "next": "{% $states.input.n + 1 %}",
            "sum": "{% $sum($states.input.items) %}",
            "name": "{% $prefix & $states.context.Execution.Name %}",
            "fixed": "text",
            "list": ["{% $count($states.input.items) %}"]
        });
        assert_eq!(
            template(&t, &states, &vars),
            Ok(json!({"next": 6, "sum": 6, "name": "item-e1", "fixed": "text", "list": [3]}))
        );
        let e = eval("$undefinedFunction(1)", &states, &vars).unwrap_err();
        assert_eq!(e.error, "States.QueryEvaluationError");
        assert!(check_template(&json!({"a": "{% ((( %}"}), "/States/X/Output").is_err());
        assert!(check_template(&json!({"a": "x {% 1 %}"}), "/States/X/Output").is_err());
    }
}
