//! Authorisation policies in the IAM JSON grammar, evaluated as IAM does: an explicit `Deny`
//! wins, then any `Allow`, and with neither the call is denied. Every decision names the
//! statement that made it.
//!
//! Supported: `Effect`; `Action` / `NotAction` (case-insensitive, `*` and `?` wildcards);
//! `Resource` / `NotResource` (case-sensitive wildcards); `Condition` with the String*,
//! Numeric*, Date*, Bool, IpAddress / NotIpAddress, Null operators, the `…IfExists` suffix and
//! the `ForAnyValue:` / `ForAllValues:` set prefixes. Condition key names are
//! case-insensitive. A policy is parsed and checked when it is saved, so a malformed statement,
//! an unknown operator or a bad value is refused with a message naming the statement and the
//! field.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
    /// The document as given (for listing and storage).
    pub source: Value,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    sid: String,
    allow: bool,
    action: Match,
    resource: Match,
    conditions: Vec<Condition>,
}

/// A list of patterns, or its negation (`NotAction`, `NotResource`).
#[derive(Debug, Clone, PartialEq)]
struct Match {
    patterns: Vec<String>,
    negated: bool,
    ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    op: Op,
    if_exists: bool,
    set: SetMode,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetMode {
    Single,
    AnyValue,
    AllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    Null,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Op::StringEquals,
            "StringNotEquals" => Op::StringNotEquals,
            "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
            "StringLike" => Op::StringLike,
            "StringNotLike" => Op::StringNotLike,
            "NumericEquals" => Op::NumericEquals,
            "NumericNotEquals" => Op::NumericNotEquals,
            "NumericLessThan" => Op::NumericLessThan,
            "NumericLessThanEquals" => Op::NumericLessThanEquals,
            "NumericGreaterThan" => Op::NumericGreaterThan,
            "NumericGreaterThanEquals" => Op::NumericGreaterThanEquals,
            "DateEquals" => Op::DateEquals,
            "DateNotEquals" => Op::DateNotEquals,
            "DateLessThan" => Op::DateLessThan,
            "DateLessThanEquals" => Op::DateLessThanEquals,
            "DateGreaterThan" => Op::DateGreaterThan,
            "DateGreaterThanEquals" => Op::DateGreaterThanEquals,
            "Bool" => Op::Bool,
            "IpAddress" => Op::IpAddress,
            "NotIpAddress" => Op::NotIpAddress,
            "Null" => Op::Null,
            _ => return None,
        })
    }

    /// Negated operators match when the value equals none of the listed values, and are true
    /// when the key is missing.
    fn negated(self) -> bool {
        matches!(
            self,
            Op::StringNotEquals
                | Op::StringNotEqualsIgnoreCase
                | Op::StringNotLike
                | Op::NumericNotEquals
                | Op::DateNotEquals
                | Op::NotIpAddress
        )
    }

    /// The positive operator a negated one is the complement of.
    fn positive(self) -> Self {
        match self {
            Op::StringNotEquals => Op::StringEquals,
            Op::StringNotEqualsIgnoreCase => Op::StringEqualsIgnoreCase,
            Op::StringNotLike => Op::StringLike,
            Op::NumericNotEquals => Op::NumericEquals,
            Op::DateNotEquals => Op::DateEquals,
            Op::NotIpAddress => Op::IpAddress,
            other => other,
        }
    }
}

/// Why a policy cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// What a request asks and the facts its conditions can test.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The actions the call counts as (the IAM action first, then the operation's own name).
    pub actions: Vec<String>,
    /// The resource (a model ARN, an admin resource).
    pub resource: String,
    /// Condition keys (lower-case) and their values.
    pub context: HashMap<String, Vec<String>>,
}

impl Request {
    /// Add a condition key (names are case-insensitive).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.context
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value.into());
        self
    }
}

/// The result of evaluating policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the call may go ahead.
    pub allowed: bool,
    /// The statement that decided (`Sid`, or `policy[i].Statement[j]`); `None` when nothing
    /// matched (the implicit deny).
    pub statement: Option<String>,
}

/// Evaluate `policies` for `request` at time `now`: an explicit deny wins, then an allow.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    request: &Request,
    now: SystemTime,
) -> Decision {
    let mut allow = None;
    for policy in policies {
        for s in &policy.statements {
            if !s.applies(request, now) {
                continue;
            }
            if !s.allow {
                return Decision {
                    allowed: false,
                    statement: Some(s.sid.clone()),
                };
            }
            allow.get_or_insert_with(|| s.sid.clone());
        }
    }
    Decision {
        allowed: allow.is_some(),
        statement: allow,
    }
}

impl Statement {
    fn applies(&self, request: &Request, now: SystemTime) -> bool {
        let action = self.action.matches_any(&request.actions, &request.context);
        let resource = self
            .resource
            .matches_any(std::slice::from_ref(&request.resource), &request.context);
        action
            && resource
            && self
                .conditions
                .iter()
                .all(|c| c.holds(&request.context, now))
    }
}

/// Replace policy variables (`${aws:PrincipalTag/team}`, `${modelgate:KeyId}`, and
/// CloudFormation's `${AWS::AccountId}`) with their values from the request context; a
/// variable with no value leaves the pattern unmatched.
fn substitute<'a>(
    pattern: &'a str,
    context: &HashMap<String, Vec<String>>,
) -> Option<std::borrow::Cow<'a, str>> {
    if !pattern.contains("${") {
        return Some(std::borrow::Cow::Borrowed(pattern));
    }
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let name = rest[start + 2..end].to_ascii_lowercase();
        let name = if name == "aws::accountid" {
            "aws:principalaccount".to_string()
        } else {
            name
        };
        match name.as_str() {
            "*" | "?" | "$" => out.push_str(&name),
            _ => out.push_str(context.get(&name)?.first()?),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(std::borrow::Cow::Owned(out))
}

impl Match {
    fn matches_any(&self, values: &[String], context: &HashMap<String, Vec<String>>) -> bool {
        let hit = values.iter().any(|v| {
            self.patterns
                .iter()
                .any(|p| substitute(p, context).is_some_and(|p| wildcard(&p, v, self.ignore_case)))
        });
        hit != self.negated
    }
}

/// IAM wildcard match: `*` any run of characters, `?` any one character.
pub fn wildcard(pattern: &str, value: &str, ignore_case: bool) -> bool {
    // ASCII (model ids, ARNs, routes — nearly every case) is matched on bytes without
    // allocating: this runs several times per call (policies, prices).
    if pattern.is_ascii() && value.is_ascii() {
        let eq = |a: &u8, b: &u8| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        return glob(pattern.as_bytes(), value.as_bytes(), b'*', b'?', eq);
    }
    let eq = |a: &char, b: &char| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    glob(&p, &v, '*', '?', eq)
}

/// Glob matching with backtracking to the last `*` (linear in practice).
fn glob<T: Copy + PartialEq>(
    p: &[T],
    v: &[T],
    star: T,
    one: T,
    eq: impl Fn(&T, &T) -> bool,
) -> bool {
    let (mut pi, mut vi) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == one || (p[pi] != star && eq(&p[pi], &v[vi]))) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == star {
            back = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = back {
            pi = sp + 1;
            vi = sv + 1;
            back = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == star)
}

fn parse_date(s: &str) -> Option<f64> {
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(&full))
        .ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}

fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Condition {
    /// One context value against the listed values, for a positive operator.
    fn one(&self, op: Op, value: &str, context: &HashMap<String, Vec<String>>) -> bool {
        let num = |a: &str| a.trim().parse::<f64>().ok();
        self.values.iter().any(|want| {
            let Some(want) = substitute(want, context) else {
                return false;
            };
            let want = want.as_ref();
            match op {
                Op::StringEquals => value == want,
                Op::StringEqualsIgnoreCase => value.eq_ignore_ascii_case(want),
                Op::StringLike => wildcard(want, value, false),
                Op::NumericEquals
                | Op::NumericLessThan
                | Op::NumericLessThanEquals
                | Op::NumericGreaterThan
                | Op::NumericGreaterThanEquals => match (num(value), num(want)) {
                    (Some(a), Some(b)) => compare(op, a, b),
                    _ => false,
                },
                Op::DateEquals
                | Op::DateLessThan
                | Op::DateLessThanEquals
                | Op::DateGreaterThan
                | Op::DateGreaterThanEquals => match (parse_date(value), parse_date(want)) {
                    (Some(a), Some(b)) => compare(op, a, b),
                    _ => false,
                },
                Op::Bool => value.eq_ignore_ascii_case(want),
                Op::IpAddress => match (value.parse::<IpAddr>(), parse_cidr(want)) {
                    (Ok(ip), Some(net)) => net.contains(&ip),
                    _ => false,
                },
                _ => false,
            }
        })
    }

    fn holds(&self, context: &HashMap<String, Vec<String>>, now: SystemTime) -> bool {
        let current;
        let values: Option<&Vec<String>> = match self.key.as_str() {
            "aws:currenttime" => {
                current = vec![humantime::format_rfc3339_seconds(now).to_string()];
                Some(&current)
            }
            "aws:epochtime" => {
                current = vec![now
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .to_string()];
                Some(&current)
            }
            key => context.get(key).filter(|v| !v.is_empty()),
        };
        if self.op == Op::Null {
            let want_null = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return values.is_none() == want_null;
        }
        let Some(values) = values else {
            return match self.set {
                SetMode::AllValues => true,
                SetMode::AnyValue => false,
                SetMode::Single => self.if_exists || self.op.negated(),
            };
        };
        let positive = self.op.positive();
        let test = |v: &String| {
            let hit = self.one(positive, v, context);
            if self.op.negated() {
                !hit
            } else {
                hit
            }
        };
        match self.set {
            SetMode::AllValues => values.iter().all(test),
            SetMode::AnyValue | SetMode::Single => values.iter().any(test),
        }
    }
}

fn compare(op: Op, a: f64, b: f64) -> bool {
    match op {
        Op::NumericEquals | Op::DateEquals => a == b,
        Op::NumericLessThan | Op::DateLessThan => a < b,
        Op::NumericLessThanEquals | Op::DateLessThanEquals => a <= b,
        Op::NumericGreaterThan | Op::DateGreaterThan => a > b,
        Op::NumericGreaterThanEquals | Op::DateGreaterThanEquals => a >= b,
        _ => false,
    }
}

/// A string or a list of strings (IAM allows both for `Action`, `Resource` and condition
/// values; numbers and booleans are taken as their text).
fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "{what} must be a string or a list of strings, not {other}"
        )),
    };
    match v {
        Value::Array(items) if items.is_empty() => Err(format!("{what} must not be empty")),
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn check_pattern(p: &str, what: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(format!("{what} has an empty pattern"));
    }
    if p.contains("**") {
        return Err(format!("{what} pattern '{p}' has a doubled wildcard '**'"));
    }
    Ok(())
}

impl Policy {
    /// Parse and check a policy document. Errors name the statement and the field.
    pub fn parse(doc: &Value) -> Result<Self, PolicyError> {
        let obj = doc
            .as_object()
            .ok_or_else(|| PolicyError("a policy must be a JSON object".into()))?;
        // A bare statement (as the seeds write their least-privilege example) is a policy of
        // one statement.
        if obj.contains_key("Effect") {
            return Ok(Self {
                statements: vec![Statement::parse(doc, 0)?],
                source: doc.clone(),
            });
        }
        for k in obj.keys() {
            if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
                return Err(PolicyError(format!(
                    "unknown policy field '{k}' (expected Version, Id, Statement)"
                )));
            }
        }
        if let Some(v) = obj.get("Version") {
            if !matches!(v.as_str(), Some("2012-10-17" | "2008-10-17")) {
                return Err(PolicyError(format!(
                    "policy Version must be \"2012-10-17\", not {v}"
                )));
            }
        }
        let statements = match obj.get("Statement") {
            Some(Value::Array(s)) if !s.is_empty() => s.clone(),
            Some(s @ Value::Object(_)) => vec![s.clone()],
            _ => {
                return Err(PolicyError(
                    "a policy needs a non-empty 'Statement' (an object or a list)".into(),
                ))
            }
        };
        let statements = statements
            .iter()
            .enumerate()
            .map(|(i, s)| Statement::parse(s, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            statements,
            source: doc.clone(),
        })
    }
}

impl Statement {
    fn parse(v: &Value, index: usize) -> Result<Self, PolicyError> {
        let obj = v
            .as_object()
            .ok_or_else(|| PolicyError(format!("Statement[{index}] must be an object")))?;
        let sid = obj
            .get("Sid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("Statement[{index}]"), str::to_string);
        let err = |field: &str, msg: String| {
            PolicyError(format!("statement '{sid}', field {field}: {msg}"))
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "Sid"
                    | "Effect"
                    | "Action"
                    | "NotAction"
                    | "Resource"
                    | "NotResource"
                    | "Condition"
                    | "Principal"
                    | "NotPrincipal"
            ) {
                return Err(err(k, "unknown field".into()));
            }
        }
        let allow = match obj.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            other => {
                return Err(err(
                    "Effect",
                    format!("must be \"Allow\" or \"Deny\", not {other:?}"),
                ))
            }
        };
        let pick = |pos: &str, neg: &str, ignore_case: bool| -> Result<Match, PolicyError> {
            let (field, negated) = match (obj.get(pos), obj.get(neg)) {
                (Some(_), Some(_)) => {
                    return Err(err(pos, format!("give {pos} or {neg}, not both")))
                }
                (Some(v), None) => ((pos, v), false),
                (None, Some(v)) => ((neg, v), true),
                (None, None) => return Err(err(pos, format!("one of {pos} or {neg} is required"))),
            };
            let patterns = strings(field.1, field.0).map_err(|m| err(field.0, m))?;
            for p in &patterns {
                check_pattern(p, field.0).map_err(|m| err(field.0, m))?;
                if field.0.ends_with("Action") && p != "*" && !p.contains(':') {
                    return Err(err(
                        field.0,
                        format!("action '{p}' must be service:Action (e.g. bedrock:InvokeModel)"),
                    ));
                }
            }
            Ok(Match {
                patterns,
                negated,
                ignore_case,
            })
        };
        let action = pick("Action", "NotAction", true)?;
        let resource = match (obj.get("Resource"), obj.get("NotResource")) {
            (None, None) => Match {
                patterns: vec!["*".into()],
                negated: false,
                ignore_case: false,
            },
            _ => pick("Resource", "NotResource", false)?,
        };
        let mut conditions = Vec::new();
        if let Some(c) = obj.get("Condition") {
            let ops = c
                .as_object()
                .ok_or_else(|| err("Condition", "must be an object".into()))?;
            for (name, keys) in ops {
                conditions.extend(Condition::parse(name, keys).map_err(|m| err("Condition", m))?);
            }
        }
        Ok(Self {
            sid,
            allow,
            action,
            resource,
            conditions,
        })
    }
}

impl Condition {
    fn parse(name: &str, keys: &Value) -> Result<Vec<Self>, String> {
        let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (SetMode::AnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (SetMode::AllValues, r)
        } else {
            (SetMode::Single, name)
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let op = Op::parse(base).ok_or_else(|| format!("unknown condition operator '{name}'"))?;
        if op == Op::Null && (if_exists || set != SetMode::Single) {
            return Err(format!("condition operator '{name}' is not valid"));
        }
        let keys = keys
            .as_object()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("operator '{name}' must map condition keys to values"))?;
        keys.iter()
            .map(|(key, values)| {
                let values = strings(values, &format!("{name}.{key}"))?;
                for v in &values {
                    let ok = match op {
                        Op::NumericEquals
                        | Op::NumericNotEquals
                        | Op::NumericLessThan
                        | Op::NumericLessThanEquals
                        | Op::NumericGreaterThan
                        | Op::NumericGreaterThanEquals => v.trim().parse::<f64>().is_ok(),
                        Op::DateEquals
                        | Op::DateNotEquals
                        | Op::DateLessThan
                        | Op::DateLessThanEquals
                        | Op::DateGreaterThan
                        | Op::DateGreaterThanEquals => parse_date(v).is_some(),
                        Op::Bool | Op::Null => {
                            v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
                        }
                        Op::IpAddress | Op::NotIpAddress => parse_cidr(v).is_some(),
                        _ => true,
                    };
                    if !ok {
                        return Err(format!(
                            "{name}.{key}: '{v}' is not a valid value for {base}"
                        ));
                    }
                }
                Ok(Condition {
                    op,
                    if_exists,
                    set,
                    key: key.to_ascii_lowercase(),
                    values,
                })
            })
            .collect()
    }
}
