//! Choice rules (JSONPath query language): a data test (`Variable` + one comparison
//! operator) or `And` / `Or` / `Not` of rules. A value of the wrong type makes a comparison
//! false; a `Variable` that finds nothing is a `States.Runtime` error (except for
//! `IsPresent`).

use serde_json::Value;

use crate::errors::Failure;
use crate::paths::{Path, Scope};

/// A parsed rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// All must hold.
    And(Vec<Rule>),
    /// One must hold.
    Or(Vec<Rule>),
    /// Must not hold.
    Not(Box<Rule>),
    /// A JSONata `Condition` (evaluated by the engine).
    Condition(String),
    /// `Variable` compared by `op` with a literal or the value of a path.
    Test {
        /// The value tested.
        variable: String,
        /// The operator (`NumericGreaterThan`, …, without `Path`).
        op: Op,
        /// The operand: a literal, or a path when the operator ended in `Path`.
        operand: Operand,
    },
}

/// Literal or path operand.
#[derive(Debug, Clone)]
pub enum Operand {
    /// A literal.
    Lit(Value),
    /// The value of a path.
    Path(String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    StringEquals,
    StringLessThan,
    StringGreaterThan,
    StringLessThanEquals,
    StringGreaterThanEquals,
    StringMatches,
    NumericEquals,
    NumericLessThan,
    NumericGreaterThan,
    NumericLessThanEquals,
    NumericGreaterThanEquals,
    BooleanEquals,
    TimestampEquals,
    TimestampLessThan,
    TimestampGreaterThan,
    TimestampLessThanEquals,
    TimestampGreaterThanEquals,
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

const OPS: &[(&str, Op)] = &[
    ("StringEquals", Op::StringEquals),
    ("StringLessThan", Op::StringLessThan),
    ("StringGreaterThan", Op::StringGreaterThan),
    ("StringLessThanEquals", Op::StringLessThanEquals),
    ("StringGreaterThanEquals", Op::StringGreaterThanEquals),
    ("StringMatches", Op::StringMatches),
    ("NumericEquals", Op::NumericEquals),
    ("NumericLessThan", Op::NumericLessThan),
    ("NumericGreaterThan", Op::NumericGreaterThan),
    ("NumericLessThanEquals", Op::NumericLessThanEquals),
    ("NumericGreaterThanEquals", Op::NumericGreaterThanEquals),
    ("BooleanEquals", Op::BooleanEquals),
    ("TimestampEquals", Op::TimestampEquals),
    ("TimestampLessThan", Op::TimestampLessThan),
    ("TimestampGreaterThan", Op::TimestampGreaterThan),
    ("TimestampLessThanEquals", Op::TimestampLessThanEquals),
    ("TimestampGreaterThanEquals", Op::TimestampGreaterThanEquals),
    ("IsNull", Op::IsNull),
    ("IsPresent", Op::IsPresent),
    ("IsNumeric", Op::IsNumeric),
    ("IsString", Op::IsString),
    ("IsBoolean", Op::IsBoolean),
    ("IsTimestamp", Op::IsTimestamp),
];

/// Fields a rule may have besides its operator.
const RULE_FIELDS: &[&str] = &["Variable", "Next", "Comment", "Assign", "Output"];

/// Parse a rule (`top` rules carry `Next`). Errors name the field.
pub fn parse(v: &Value, at: &str) -> Result<Rule, String> {
    let Some(m) = v.as_object() else {
        return Err(format!("{at}: a choice rule must be an object"));
    };
    for (key, kind) in [("And", 0), ("Or", 1)] {
        if let Some(list) = m.get(key) {
            let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
                return Err(format!("{at}.{key}: must be a non-empty array of rules"));
            };
            let rules = list
                .iter()
                .enumerate()
                .map(|(i, r)| parse(r, &format!("{at}.{key}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if kind == 0 {
                Rule::And(rules)
            } else {
                Rule::Or(rules)
            });
        }
    }
    if let Some(inner) = m.get("Not") {
        return Ok(Rule::Not(Box::new(parse(inner, &format!("{at}.Not"))?)));
    }
    let Some(variable) = m.get("Variable").and_then(Value::as_str) else {
        return Err(format!(
            "{at}: a choice rule needs a 'Variable' with a comparison operator, or 'And', 'Or' or 'Not'"
        ));
    };
    Path::parse(variable).map_err(|e| format!("{at}.Variable: {e}"))?;
    let mut found = None;
    for (k, val) in m {
        if RULE_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let (base, is_path) = match k.strip_suffix("Path") {
            Some(b) => (b, true),
            None => (k.as_str(), false),
        };
        let Some((_, op)) = OPS.iter().find(|(n, _)| *n == base) else {
            return Err(format!(
                "{at}: '{k}' is not a choice rule field or comparison operator"
            ));
        };
        if found.is_some() {
            return Err(format!(
                "{at}: a choice rule has exactly one comparison operator"
            ));
        }
        let operand = if is_path {
            let Some(p) = val.as_str() else {
                return Err(format!("{at}.{k}: must be a path"));
            };
            Path::parse(p).map_err(|e| format!("{at}.{k}: {e}"))?;
            Operand::Path(p.to_string())
        } else {
            let ok = match op {
                Op::StringEquals
                | Op::StringLessThan
                | Op::StringGreaterThan
                | Op::StringLessThanEquals
                | Op::StringGreaterThanEquals
                | Op::StringMatches => val.is_string(),
                Op::NumericEquals
                | Op::NumericLessThan
                | Op::NumericGreaterThan
                | Op::NumericLessThanEquals
                | Op::NumericGreaterThanEquals => val.is_number(),
                Op::TimestampEquals
                | Op::TimestampLessThan
                | Op::TimestampGreaterThan
                | Op::TimestampLessThanEquals
                | Op::TimestampGreaterThanEquals => {
                    val.as_str().is_some_and(|s| timestamp(s).is_some())
                }
                _ => val.is_boolean(),
            };
            if !ok {
                return Err(format!(
                    "{at}.{k}: the value {val} has the wrong type for {base}"
                ));
            }
            Operand::Lit(val.clone())
        };
        found = Some((*op, operand));
    }
    let Some((op, operand)) = found else {
        return Err(format!(
            "{at}: a choice rule with a Variable needs a comparison operator"
        ));
    };
    Ok(Rule::Test {
        variable: variable.to_string(),
        op,
        operand,
    })
}

/// An RFC 3339 timestamp as nanoseconds since the epoch.
pub fn timestamp(s: &str) -> Option<i128> {
    if !s.contains('T') {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt().map(i128::from))
}

fn string_matches(pattern: &str, s: &str) -> bool {
    // `*` matches any run of characters; `\*` a literal star; `\\` a backslash.
    let mut parts: Vec<(String, bool)> = vec![(String::new(), false)];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(last) = parts.last_mut() {
                        last.0.push(n);
                    }
                }
            }
            '*' => parts.push((String::new(), true)),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.0.push(c);
                }
            }
        }
    }
    let mut rest = s;
    let n = parts.len();
    for (i, (lit, after_star)) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(lit.as_str()) else {
                return false;
            };
            rest = r;
        } else if i == n - 1 && *after_star {
            return rest.ends_with(lit.as_str());
        } else {
            let Some(pos) = rest.find(lit.as_str()) else {
                return false;
            };
            rest = &rest[pos + lit.len()..];
        }
    }
    rest.is_empty()
}

/// Evaluate a rule.
pub fn eval(rule: &Rule, scope: &Scope<'_>) -> Result<bool, Failure> {
    match rule {
        Rule::And(rules) => {
            for r in rules {
                if !eval(r, scope)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Rule::Or(rules) => {
            for r in rules {
                if eval(r, scope)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Rule::Not(r) => Ok(!eval(r, scope)?),
        Rule::Condition(c) => Err(Failure::runtime(format!(
            "The JSONata condition '{c}' cannot be evaluated by the JSONPath query language"
        ))),
        Rule::Test {
            variable,
            op,
            operand,
        } => {
            let path = Path::parse(variable).map_err(Failure::runtime)?;
            let value = path.eval(scope);
            if *op == Op::IsPresent {
                return Ok(value.is_some() == (operand_lit(operand) == Some(&Value::Bool(true))));
            }
            let Some(value) = value else {
                return Err(Failure::runtime(format!(
                    "Invalid path '{variable}': The choice state's condition path references an invalid value."
                )));
            };
            let rhs = match operand {
                Operand::Lit(v) => v.clone(),
                Operand::Path(p) => Path::parse(p)
                    .map_err(Failure::runtime)?
                    .eval(scope)
                    .ok_or_else(|| {
                        Failure::runtime(format!(
                            "Invalid path '{p}': The choice state's condition path references an invalid value."
                        ))
                    })?,
            };
            Ok(test(*op, &value, &rhs))
        }
    }
}

fn operand_lit(o: &Operand) -> Option<&Value> {
    match o {
        Operand::Lit(v) => Some(v),
        Operand::Path(_) => None,
    }
}

fn test(op: Op, v: &Value, rhs: &Value) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let want = rhs.as_bool() == Some(true);
    let ord = |o: Option<std::cmp::Ordering>, accept: &[std::cmp::Ordering]| {
        o.is_some_and(|o| accept.contains(&o))
    };
    let strs = || match (v, rhs) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let nums = || match (v.as_f64(), rhs.as_f64()) {
        (Some(a), Some(b)) if v.is_number() && rhs.is_number() => a.partial_cmp(&b),
        _ => None,
    };
    let times = || match (
        v.as_str().and_then(timestamp),
        rhs.as_str().and_then(timestamp),
    ) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => None,
    };
    match op {
        Op::StringEquals => ord(strs(), &[Equal]),
        Op::StringLessThan => ord(strs(), &[Less]),
        Op::StringGreaterThan => ord(strs(), &[Greater]),
        Op::StringLessThanEquals => ord(strs(), &[Less, Equal]),
        Op::StringGreaterThanEquals => ord(strs(), &[Greater, Equal]),
        Op::StringMatches => match (v, rhs) {
            (Value::String(s), Value::String(p)) => string_matches(p, s),
            _ => false,
        },
        Op::NumericEquals => ord(nums(), &[Equal]),
        Op::NumericLessThan => ord(nums(), &[Less]),
        Op::NumericGreaterThan => ord(nums(), &[Greater]),
        Op::NumericLessThanEquals => ord(nums(), &[Less, Equal]),
        Op::NumericGreaterThanEquals => ord(nums(), &[Greater, Equal]),
        Op::BooleanEquals => matches!((v, rhs), (Value::Bool(a), Value::Bool(b)) if a == b),
        Op::TimestampEquals => ord(times(), &[Equal]),
        Op::TimestampLessThan => ord(times(), &[Less]),
        Op::TimestampGreaterThan => ord(times(), &[Greater]),
        Op::TimestampLessThanEquals => ord(times(), &[Less, Equal]),
        Op::TimestampGreaterThanEquals => ord(times(), &[Greater, Equal]),
        Op::IsNull => v.is_null() == want,
        Op::IsPresent => want,
        Op::IsNumeric => v.is_number() == want,
        Op::IsString => v.is_string() == want,
        Op::IsBoolean => v.is_boolean() == want,
        Op::IsTimestamp => v.as_str().and_then(timestamp).is_some() == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn check(rule: Value, input: Value) -> Result<bool, Failure> {
        let r = parse(&rule, "Choices[0]").map_err(Failure::runtime)?;
        let ctx = json!({});
        let vars = Map::new();
        eval(
            &r,
            &Scope {
                input: &input,
                context: &ctx,
                vars: &vars,
            },
        )
    }

    #[test]
    fn every_operator() {
        let i = json!({"s": "b", "n": 5, "t": true, "ts": "2026-01-01T00:00:00Z", "z": null, "other": "b", "m": 5.0});
        let cases = [
            (json!({"Variable": "$.s", "StringEquals": "b"}), true),
            (
                json!({"Variable": "$.s", "StringEqualsPath": "$.other"}),
                true,
            ),
            (json!({"Variable": "$.s", "StringLessThan": "c"}), true),
            (json!({"Variable": "$.s", "StringGreaterThan": "a"}), true),
            (
                json!({"Variable": "$.s", "StringLessThanEquals": "b"}),
                true,
            ),
            (
                json!({"Variable": "$.s", "StringGreaterThanEquals": "c"}),
                false,
            ),
            (json!({"Variable": "$.s", "StringMatches": "*"}), true),
            (
                json!({"Variable": "$.ts", "StringMatches": "2026-*Z"}),
                true,
            ),
            (json!({"Variable": "$.ts", "StringMatches": "2025*"}), false),
            (json!({"Variable": "$.n", "NumericEquals": 5}), true),
            (json!({"Variable": "$.n", "NumericEqualsPath": "$.m"}), true),
            (json!({"Variable": "$.n", "NumericLessThan": 5}), false),
            (json!({"Variable": "$.n", "NumericGreaterThan": 4.5}), true),
            (json!({"Variable": "$.n", "NumericLessThanEquals": 5}), true),
            (
                json!({"Variable": "$.n", "NumericGreaterThanEquals": 6}),
                false,
            ),
            (json!({"Variable": "$.t", "BooleanEquals": true}), true),
            (
                json!({"Variable": "$.ts", "TimestampEquals": "2026-01-01T01:00:00+01:00"}),
                true,
            ),
            (
                json!({"Variable": "$.ts", "TimestampLessThan": "2026-01-02T00:00:00Z"}),
                true,
            ),
            (
                json!({"Variable": "$.ts", "TimestampGreaterThan": "2026-01-02T00:00:00Z"}),
                false,
            ),
            (
                json!({"Variable": "$.ts", "TimestampLessThanEquals": "2026-01-01T00:00:00Z"}),
                true,
            ),
            (
                json!({"Variable": "$.ts", "TimestampGreaterThanEquals": "2027-01-01T00:00:00Z"}),
                false,
            ),
            (json!({"Variable": "$.z", "IsNull": true}), true),
            (json!({"Variable": "$.nope", "IsPresent": false}), true),
            (json!({"Variable": "$.n", "IsPresent": true}), true),
            (json!({"Variable": "$.n", "IsNumeric": true}), true),
            (json!({"Variable": "$.s", "IsString": true}), true),
            (json!({"Variable": "$.t", "IsBoolean": false}), false),
            (json!({"Variable": "$.ts", "IsTimestamp": true}), true),
            (json!({"Variable": "$.s", "IsTimestamp": true}), false),
            // A type mismatch is false, not an error.
            (json!({"Variable": "$.s", "NumericEquals": 5}), false),
            (json!({"Variable": "$.n", "StringEquals": "5"}), false),
            (
                json!({"And": [{"Variable": "$.n", "NumericGreaterThan": 1}, {"Variable": "$.s", "StringEquals": "b"}]}),
                true,
            ),
            (
                json!({"Or": [{"Variable": "$.n", "NumericGreaterThan": 10}, {"Variable": "$.s", "StringEquals": "x"}]}),
                false,
            ),
            (
                json!({"Not": {"Variable": "$.s", "StringEquals": "x"}}),
                true,
            ),
        ];
        for (rule, want) in cases {
            assert_eq!(check(rule.clone(), i.clone()), Ok(want), "{rule}");
        }
    }

    #[test]
    fn matches_escapes_and_missing_variables() {
        assert!(string_matches("log-*.txt", "log-2026.txt"));
        assert!(!string_matches("log-*.txt", "log-2026.txt.gz"));
        assert!(string_matches("a\\*b", "a*b"));
        assert!(!string_matches("a\\*b", "axb"));
        assert!(string_matches("*a*b*", "xxaxxbxx"));
        let e = check(
            json!({"Variable": "$.nope", "StringEquals": "x"}),
            json!({}),
        )
        .unwrap_err();
        assert_eq!(e.error, "States.Runtime");
        assert!(parse(
            &json!({"Variable": "$.x", "NumericEquals": "5"}),
            "Choices[0]"
        )
        .is_err());
        assert!(parse(&json!({"Variable": "$.x", "Bogus": 1}), "Choices[0]").is_err());
    }
}
