//! Parsing and validating an Amazon States Language definition.
//!
//! Everything that can be checked before an execution starts is checked here, and an error
//! names the state and the field (`/States/Classify/Next`), with the codes
//! `ValidateStateMachineDefinition` reports (`SCHEMA_VALIDATION_FAILED`,
//! `MISSING_TRANSITION_TARGET`, `INVALID_JSON_DESCRIPTION`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::choice::{self, Rule};
use crate::paths::{check_template, Path};

/// A definition problem, as `ValidateStateMachineDefinition` reports one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} at {location}")]
pub struct DefinitionError {
    /// `SCHEMA_VALIDATION_FAILED`, `MISSING_TRANSITION_TARGET`, `INVALID_JSON_DESCRIPTION`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where (`/States/Name/Field`).
    pub location: String,
}

fn schema(location: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        code: "SCHEMA_VALIDATION_FAILED",
        message: message.into(),
        location: location.into(),
    }
}

/// A number of seconds, fixed or read from a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Secs {
    /// Fixed.
    Fixed(f64),
    /// From the state input.
    Path(String),
    /// A JSONata expression.
    Expr(String),
}

/// A string, fixed or from a path (or an intrinsic function).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// Fixed.
    Lit(String),
    /// From a path or intrinsic function.
    Path(String),
}

/// A Retry rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrier {
    /// Errors it applies to.
    pub error_equals: Vec<String>,
    /// Seconds before the first retry (default 1).
    pub interval_seconds: f64,
    /// Retries at most (default 3; 0 never retries).
    pub max_attempts: u32,
    /// Interval multiplier per retry (default 2.0).
    pub backoff_rate: f64,
    /// Cap on the interval.
    pub max_delay_seconds: Option<f64>,
    /// `FULL` jitter: a random delay between 0 and the interval.
    pub full_jitter: bool,
}

/// A Catch rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Catcher {
    /// Errors it applies to.
    pub error_equals: Vec<String>,
    /// The state to go to.
    pub next: String,
    /// Where the error output goes in the state's input (default `$`).
    pub result_path: Option<Option<String>>,
    /// Variables to assign.
    pub assign: Option<Value>,
    /// JSONata: the state's output (default: the error output).
    pub output: Option<Value>,
}

/// How a Wait state waits.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    /// Seconds (fixed or from a path).
    Seconds(Secs),
    /// Until a timestamp.
    Timestamp(String),
    /// Until the timestamp a path gives.
    TimestampPath(String),
}

/// A Choice branch.
#[derive(Debug, Clone)]
pub struct Branch {
    /// The rule.
    pub rule: Rule,
    /// Where it goes.
    pub next: String,
    /// Variables to assign when taken.
    pub assign: Option<Value>,
    /// JSONata: the state's output when taken.
    pub output: Option<Value>,
}

/// What a state does.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Passes its input (or `Result`) on.
    Pass {
        /// A fixed result.
        result: Option<Value>,
    },
    /// Runs a resource.
    Task {
        /// The resource ARN.
        resource: String,
        /// `TimeoutSeconds` / `TimeoutSecondsPath`.
        timeout: Option<Secs>,
        /// `HeartbeatSeconds` / `HeartbeatSecondsPath`.
        heartbeat: Option<Secs>,
    },
    /// Picks the next state.
    Choice {
        /// Rules in order.
        choices: Vec<Branch>,
        /// When none matches.
        default: Option<String>,
    },
    /// Waits.
    Wait(WaitFor),
    /// Ends the execution (or branch) successfully.
    Succeed,
    /// Ends it with an error.
    Fail {
        /// `Error` (or `ErrorPath`).
        error: Option<Text>,
        /// `Cause` (or `CausePath`).
        cause: Option<Text>,
    },
    /// Runs branches at once.
    Parallel {
        /// The branches.
        branches: Vec<StateList>,
    },
    /// Runs the processor for each item.
    Map(Box<MapSpec>),
}

/// A Map state's fields.
#[derive(Debug, Clone)]
pub struct MapSpec {
    /// The processor.
    pub processor: StateList,
    /// Where the items are (default `$`).
    pub items_path: Option<String>,
    /// Fixed items (or a template).
    pub items: Option<Value>,
    /// Shapes each item (`ItemSelector`, or the old `Parameters`).
    pub item_selector: Option<Value>,
    /// Iterations at once (0: no limit).
    pub max_concurrency: Option<Secs>,
    /// Failed iterations tolerated.
    pub tolerated_count: Option<Secs>,
    /// Failed iterations tolerated, in percent.
    pub tolerated_percentage: Option<Secs>,
}

/// One state.
#[derive(Debug, Clone)]
pub struct State {
    /// Whether it uses the JSONata query language.
    pub jsonata: bool,
    /// JSONata: what a Task or Parallel state sends (default: its input).
    pub arguments: Option<Value>,
    /// JSONata: the state's output.
    pub output: Option<Value>,
    /// What it does.
    pub kind: Kind,
    /// The next state (none when it ends its list).
    pub next: Option<String>,
    /// `InputPath` (`Some(None)`: null).
    pub input_path: Option<Option<String>>,
    /// `OutputPath`.
    pub output_path: Option<Option<String>>,
    /// `ResultPath`.
    pub result_path: Option<Option<String>>,
    /// `Parameters`.
    pub parameters: Option<Value>,
    /// `ResultSelector`.
    pub result_selector: Option<Value>,
    /// `Retry`.
    pub retry: Vec<Retrier>,
    /// `Catch`.
    pub catch: Vec<Catcher>,
    /// `Assign`.
    pub assign: Option<Value>,
}

impl State {
    /// The `…StateEntered` / `…StateExited` prefix of its history events.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Pass { .. } => "Pass",
            Kind::Task { .. } => "Task",
            Kind::Choice { .. } => "Choice",
            Kind::Wait(_) => "Wait",
            Kind::Succeed => "Succeed",
            Kind::Fail { .. } => "Fail",
            Kind::Parallel { .. } => "Parallel",
            Kind::Map(_) => "Map",
        }
    }
}

/// `StartAt` and `States`: the top level, a Parallel branch or a Map processor.
#[derive(Debug, Clone)]
pub struct StateList {
    /// The first state.
    pub start_at: String,
    /// The states by name.
    pub states: BTreeMap<String, State>,
}

/// A parsed, valid definition.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The states.
    pub top: StateList,
    /// `TimeoutSeconds` of the whole execution.
    pub timeout_seconds: Option<u64>,
    /// `Comment`.
    pub comment: Option<String>,
}

const COMMON: &[&str] = &["Type", "Comment", "QueryLanguage"];

fn allowed(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pass" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "ResultPath",
            "Parameters",
            "Result",
            "Assign",
            "Output",
        ],
        "Task" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "ResultPath",
            "Parameters",
            "ResultSelector",
            "Retry",
            "Catch",
            "Resource",
            "TimeoutSeconds",
            "TimeoutSecondsPath",
            "HeartbeatSeconds",
            "HeartbeatSecondsPath",
            "Credentials",
            "Assign",
            "Arguments",
            "Output",
        ],
        "Choice" => &[
            "InputPath",
            "OutputPath",
            "Choices",
            "Default",
            "Assign",
            "Output",
        ],
        "Wait" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Seconds",
            "SecondsPath",
            "Timestamp",
            "TimestampPath",
            "Assign",
            "Output",
        ],
        "Succeed" => &["InputPath", "OutputPath", "Output"],
        "Fail" => &["Error", "ErrorPath", "Cause", "CausePath"],
        "Parallel" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "ResultPath",
            "Parameters",
            "ResultSelector",
            "Retry",
            "Catch",
            "Branches",
            "Assign",
            "Arguments",
            "Output",
        ],
        "Map" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "ResultPath",
            "Parameters",
            "ResultSelector",
            "Retry",
            "Catch",
            "ItemsPath",
            "Items",
            "ItemSelector",
            "ItemProcessor",
            "Iterator",
            "MaxConcurrency",
            "MaxConcurrencyPath",
            "ToleratedFailureCount",
            "ToleratedFailureCountPath",
            "ToleratedFailurePercentage",
            "ToleratedFailurePercentagePath",
            "ItemReader",
            "ResultWriter",
            "ItemBatcher",
            "Label",
            "Assign",
            "Output",
        ],
        _ => return None,
    })
}

impl Definition {
    /// Parse and validate definition text.
    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        let v: Value = serde_json::from_str(text).map_err(|e| DefinitionError {
            code: "INVALID_JSON_DESCRIPTION",
            message: format!("The definition is not valid JSON: {e}"),
            location: "/".into(),
        })?;
        Self::from_value(&v)
    }

    /// Validate a parsed JSON definition.
    pub fn from_value(v: &Value) -> Result<Self, DefinitionError> {
        let Some(m) = v.as_object() else {
            return Err(schema("/", "The definition must be a JSON object"));
        };
        for k in m.keys() {
            if ![
                "StartAt",
                "States",
                "Comment",
                "Version",
                "TimeoutSeconds",
                "QueryLanguage",
            ]
            .contains(&k.as_str())
            {
                return Err(schema(
                    format!("/{k}"),
                    format!("Field '{k}' is not supported at the top level"),
                ));
            }
        }
        let jsonata = language(m, "", false)?;
        let top = state_list(m, "", jsonata)?;
        let timeout_seconds = match m.get("TimeoutSeconds") {
            None => None,
            Some(t) => Some(t.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                schema(
                    "/TimeoutSeconds",
                    "TimeoutSeconds must be a positive integer",
                )
            })?),
        };
        if let Some(ver) = m.get("Version") {
            if ver.as_str() != Some("1.0") {
                return Err(schema("/Version", "Version must be \"1.0\""));
            }
        }
        Ok(Self {
            top,
            timeout_seconds,
            comment: m.get("Comment").and_then(Value::as_str).map(String::from),
        })
    }

    /// The state list at a scope (see [`crate::engine`]): the top level, or a branch or
    /// processor of a Parallel or Map state, by the path of (state, branch) pairs to it.
    pub fn list(&self, scope: &[(String, usize)]) -> Option<&StateList> {
        let mut list = &self.top;
        for (state, branch) in scope {
            list = match &list.states.get(state)?.kind {
                Kind::Parallel { branches } => branches.get(*branch)?,
                Kind::Map(spec) => &spec.processor,
                _ => return None,
            };
        }
        Some(list)
    }
}

/// The query language of a state (or the machine): its own `QueryLanguage`, else `inherited`.
/// A JSONata machine cannot hold JSONPath states.
fn language(m: &Map<String, Value>, at: &str, inherited: bool) -> Result<bool, DefinitionError> {
    match m.get("QueryLanguage").map(|v| v.as_str()) {
        None => Ok(inherited),
        Some(Some("JSONata")) => Ok(true),
        Some(Some("JSONPath")) if inherited => Err(schema(
            format!("{at}/QueryLanguage"),
            "A state of a JSONata state machine cannot use JSONPath",
        )),
        Some(Some("JSONPath")) => Ok(false),
        Some(_) => Err(schema(
            format!("{at}/QueryLanguage"),
            "QueryLanguage must be JSONPath or JSONata",
        )),
    }
}

/// Fields of the JSONPath data flow, which JSONata states replace with `Arguments` and
/// `Output`.
const JSONPATH_ONLY: &[&str] = &[
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "ResultSelector",
    "Result",
    "ItemsPath",
    "SecondsPath",
    "TimestampPath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "ErrorPath",
    "CausePath",
    "MaxConcurrencyPath",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
];

/// Fields only JSONata states have.
const JSONATA_ONLY: &[&str] = &["Arguments", "Output"];

fn state_list(
    m: &Map<String, Value>,
    at: &str,
    jsonata: bool,
) -> Result<StateList, DefinitionError> {
    let Some(start_at) = m.get("StartAt").and_then(Value::as_str) else {
        return Err(schema(
            format!("{at}/StartAt"),
            "StartAt is required and must be a string",
        ));
    };
    let Some(raw) = m
        .get("States")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return Err(schema(
            format!("{at}/States"),
            "States is required and must be a non-empty object",
        ));
    };
    let mut states = BTreeMap::new();
    for (name, s) in raw {
        if name.is_empty() || name.chars().count() > 80 {
            return Err(schema(
                format!("{at}/States/{name}"),
                "A state name must have 1 to 80 characters",
            ));
        }
        states.insert(
            name.clone(),
            state(s, &format!("{at}/States/{name}"), jsonata)?,
        );
    }
    if !states.contains_key(start_at) {
        return Err(DefinitionError {
            code: "MISSING_TRANSITION_TARGET",
            message: format!("Missing 'StartAt' target: {start_at}"),
            location: format!("{at}/StartAt"),
        });
    }
    // Every transition lands on a state of this list, and every state is reachable.
    let mut seen = BTreeSet::new();
    let mut todo = vec![start_at.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(s) = states.get(&name) else { continue };
        let mut targets: Vec<(&str, String)> = Vec::new();
        if let Some(n) = &s.next {
            targets.push((n, format!("{at}/States/{name}/Next")));
        }
        for (i, c) in s.catch.iter().enumerate() {
            targets.push((&c.next, format!("{at}/States/{name}/Catch[{i}]/Next")));
        }
        if let Kind::Choice { choices, default } = &s.kind {
            for (i, b) in choices.iter().enumerate() {
                targets.push((&b.next, format!("{at}/States/{name}/Choices[{i}]/Next")));
            }
            if let Some(d) = default {
                targets.push((d, format!("{at}/States/{name}/Default")));
            }
        }
        for (t, loc) in targets {
            if !states.contains_key(t) {
                return Err(DefinitionError {
                    code: "MISSING_TRANSITION_TARGET",
                    message: format!("Missing 'Next' target: {t}"),
                    location: loc,
                });
            }
            todo.push(t.to_string());
        }
    }
    if let Some(lost) = states.keys().find(|k| !seen.contains(*k)) {
        return Err(schema(
            format!("{at}/States/{lost}"),
            format!("State '{lost}' is not reachable"),
        ));
    }
    Ok(StateList {
        start_at: start_at.to_string(),
        states,
    })
}

fn opt_path(
    m: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<Option<String>>, DefinitionError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            let p = Path::parse(s).map_err(|e| schema(format!("{at}/{key}"), e))?;
            if key == "ResultPath" && !(p.is_reference() && p.root == crate::paths::Root::Input) {
                return Err(schema(format!("{at}/{key}"), format!("The value for the field '{key}' must be a valid reference path on the input ('$…')")));
            }
            Ok(Some(Some(s.clone())))
        }
        Some(_) => Err(schema(
            format!("{at}/{key}"),
            format!("{key} must be a path string or null"),
        )),
    }
}

fn template(m: &Map<String, Value>, key: &str, at: &str) -> Result<Option<Value>, DefinitionError> {
    match m.get(key) {
        None => Ok(None),
        Some(t) => {
            check_template(t).map_err(|e| schema(format!("{at}/{key}"), e))?;
            Ok(Some(t.clone()))
        }
    }
}

/// A JSONata template field: its `{% %}` expressions must compile.
fn ata_template(
    m: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<Value>, DefinitionError> {
    let Some(t) = m.get(key) else {
        return Ok(None);
    };
    let loc = format!("{at}/{key}");
    crate::jsonata::check_template(t, &loc).map_err(|e| schema(loc, e))?;
    Ok(Some(t.clone()))
}

/// A template field in the state's query language.
fn any_template(
    m: &Map<String, Value>,
    key: &str,
    at: &str,
    jsonata: bool,
) -> Result<Option<Value>, DefinitionError> {
    if jsonata {
        ata_template(m, key, at)
    } else {
        template(m, key, at)
    }
}

fn secs(
    m: &Map<String, Value>,
    key: &str,
    at: &str,
    allow_zero: bool,
) -> Result<Option<Secs>, DefinitionError> {
    let path_key = format!("{key}Path");
    if let Some(e) = m
        .get(key)
        .and_then(Value::as_str)
        .and_then(crate::jsonata::expression)
    {
        crate::jsonata::compile(e).map_err(|why| {
            schema(
                format!("{at}/{key}"),
                format!("the JSONata expression '{e}' does not compile: {why}"),
            )
        })?;
        return Ok(Some(Secs::Expr(e.to_string())));
    }
    match (m.get(key), m.get(&path_key)) {
        (Some(_), Some(_)) => Err(schema(
            format!("{at}/{key}"),
            format!("{key} and {path_key} cannot both be set"),
        )),
        (Some(v), None) => {
            let n = v
                .as_f64()
                .filter(|n| *n >= 0.0 && (allow_zero || *n > 0.0) && n.fract() == 0.0);
            n.map(|n| Some(Secs::Fixed(n))).ok_or_else(|| {
                schema(
                    format!("{at}/{key}"),
                    format!(
                        "{key} must be a {} integer",
                        if allow_zero {
                            "non-negative"
                        } else {
                            "positive"
                        }
                    ),
                )
            })
        }
        (None, Some(v)) => {
            let s = v.as_str().ok_or_else(|| {
                schema(
                    format!("{at}/{path_key}"),
                    format!("{path_key} must be a path"),
                )
            })?;
            Path::parse(s).map_err(|e| schema(format!("{at}/{path_key}"), e))?;
            Ok(Some(Secs::Path(s.to_string())))
        }
        (None, None) => Ok(None),
    }
}

/// One Retry or Catch rule: where it is, its fields, its error names.
type ErrorRule<'a> = (String, &'a Map<String, Value>, Vec<String>);

/// The rules of a `Retry` or `Catch` list (`what`: "retrier", "catcher"): each an object
/// with only `fields`, and its `ErrorEquals` — non-empty, `States.ALL` alone in it and in the
/// last rule only. Yields each rule's location, object and error names.
fn rules<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    what: &str,
    fields: &[&str],
    at: &str,
) -> Result<Vec<ErrorRule<'a>>, DefinitionError> {
    let Some(list) = m.get(key) else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(schema(
            format!("{at}/{key}"),
            format!("{key} must be an array"),
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let at = format!("{at}/{key}[{i}]");
        let Some(r) = r.as_object() else {
            return Err(schema(at, format!("A {what} must be an object")));
        };
        if let Some(k) = r.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(schema(
                format!("{at}/{k}"),
                format!("Field '{k}' is not supported in a {what}"),
            ));
        }
        let v = r.get("ErrorEquals");
        let names: Vec<String> = v
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let loc = format!("{at}/ErrorEquals");
        if names.is_empty() || v.and_then(Value::as_array).map(Vec::len) != Some(names.len()) {
            return Err(schema(
                loc,
                "ErrorEquals must be a non-empty array of error names",
            ));
        }
        if names.iter().any(|e| e == crate::errors::ALL) {
            if names.len() > 1 {
                return Err(schema(
                    loc,
                    "States.ALL must appear alone in its ErrorEquals",
                ));
            }
            if i + 1 < list.len() {
                return Err(schema(
                    loc,
                    format!("A {what} with States.ALL must be the last one"),
                ));
            }
        }
        out.push((at, r, names));
    }
    Ok(out)
}

fn state(v: &Value, at: &str, inherited: bool) -> Result<State, DefinitionError> {
    let Some(m) = v.as_object() else {
        return Err(schema(at, "A state must be a JSON object"));
    };
    let Some(kind) = m.get("Type").and_then(Value::as_str) else {
        return Err(schema(format!("{at}/Type"), "Type is required"));
    };
    let Some(fields) = allowed(kind) else {
        return Err(schema(format!("{at}/Type"), format!("'{kind}' is not a state type (Task, Pass, Choice, Wait, Succeed, Fail, Parallel, Map)")));
    };
    for k in m.keys() {
        if !COMMON.contains(&k.as_str()) && !fields.contains(&k.as_str()) {
            return Err(schema(
                format!("{at}/{k}"),
                format!("Field '{k}' is not supported by {kind} states"),
            ));
        }
    }
    let jsonata = language(m, at, inherited)?;
    for k in m.keys() {
        if jsonata && JSONPATH_ONLY.contains(&k.as_str()) {
            return Err(schema(format!("{at}/{k}"), format!("Field '{k}' belongs to the JSONPath query language; a JSONata state uses Arguments, Output and {{% %}} expressions")));
        }
        if !jsonata && JSONATA_ONLY.contains(&k.as_str()) {
            return Err(schema(format!("{at}/{k}"), format!("Field '{k}' belongs to the JSONata query language (set \"QueryLanguage\": \"JSONata\")")));
        }
    }
    let tpl = |key: &str| any_template(m, key, at, jsonata);
    let next = m
        .get("Next")
        .map(|n| {
            n.as_str()
                .map(String::from)
                .ok_or_else(|| schema(format!("{at}/Next"), "Next must be a state name"))
        })
        .transpose()?;
    let end = match m.get("End") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(schema(format!("{at}/End"), "End must be a boolean")),
    };
    let transitions = fields.contains(&"Next");
    if transitions {
        match (next.is_some(), end) {
            (true, true) => return Err(schema(at, "A state cannot have both Next and End")),
            (false, false) => return Err(schema(at, "A state must have either Next or End: true")),
            _ => {}
        }
    }
    let mut retry = Vec::new();
    let retry_fields = &[
        "ErrorEquals",
        "IntervalSeconds",
        "MaxAttempts",
        "BackoffRate",
        "MaxDelaySeconds",
        "JitterStrategy",
        "Comment",
    ];
    for (at, r, error_equals) in rules(m, "Retry", "retrier", retry_fields, at)? {
        let num = |k: &str, d: f64, min: f64| -> Result<f64, DefinitionError> {
            match r.get(k) {
                None => Ok(d),
                Some(v) => v.as_f64().filter(|n| *n >= min).ok_or_else(|| {
                    schema(
                        format!("{at}/{k}"),
                        format!("{k} must be a number of at least {min}"),
                    )
                }),
            }
        };
        let interval = num("IntervalSeconds", 1.0, 1.0)?;
        let max_attempts = num("MaxAttempts", 3.0, 0.0)?;
        let backoff = num("BackoffRate", 2.0, 1.0)?;
        let max_delay = r
            .get("MaxDelaySeconds")
            .map(|_| num("MaxDelaySeconds", 0.0, 1.0))
            .transpose()?;
        let jitter = match r.get("JitterStrategy").map(Value::as_str) {
            None | Some(Some("NONE")) => false,
            Some(Some("FULL")) => true,
            _ => {
                return Err(schema(
                    format!("{at}/JitterStrategy"),
                    "JitterStrategy must be FULL or NONE",
                ))
            }
        };
        retry.push(Retrier {
            error_equals,
            interval_seconds: interval,
            max_attempts: u32::try_from(max_attempts as u64).unwrap_or(99_999_999),
            backoff_rate: backoff,
            max_delay_seconds: max_delay,
            full_jitter: jitter,
        });
    }
    let mut catch = Vec::new();
    let catch_fields = &[
        "ErrorEquals",
        "Next",
        "ResultPath",
        "Comment",
        "Assign",
        "Output",
    ];
    for (at, c, errors) in rules(m, "Catch", "catcher", catch_fields, at)? {
        for k in ["ResultPath", "Output"] {
            if c.contains_key(k) && (jsonata == (k == "ResultPath")) {
                return Err(schema(
                    format!("{at}/{k}"),
                    format!("Field '{k}' of a catcher belongs to the other query language"),
                ));
            }
        }
        catch.push(Catcher {
            error_equals: errors,
            next: c
                .get("Next")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| schema(format!("{at}/Next"), "Next is required in a catcher"))?,
            result_path: opt_path(c, "ResultPath", &at)?,
            assign: any_template(c, "Assign", &at, jsonata)?,
            output: ata_template(c, "Output", &at)?,
        });
    }
    let kind_data = match kind {
        "Pass" => Kind::Pass {
            result: m.get("Result").cloned(),
        },
        "Task" => {
            let Some(resource) = m
                .get("Resource")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            else {
                return Err(schema(
                    format!("{at}/Resource"),
                    "Resource is required and must be a URI string",
                ));
            };
            Kind::Task {
                resource: resource.to_string(),
                timeout: secs(m, "TimeoutSeconds", at, false)?,
                heartbeat: secs(m, "HeartbeatSeconds", at, false)?,
            }
        }
        "Choice" => {
            let Some(list) = m
                .get("Choices")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
            else {
                return Err(schema(
                    format!("{at}/Choices"),
                    "Choices is required and must be a non-empty array",
                ));
            };
            let mut choices = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let loc = format!("{at}/Choices[{i}]");
                let rule = if jsonata {
                    let Some(cond) = c
                        .get("Condition")
                        .and_then(Value::as_str)
                        .and_then(crate::jsonata::expression)
                    else {
                        return Err(schema(
                            format!("{loc}/Condition"),
                            "A JSONata choice rule needs a Condition, a {% %} expression",
                        ));
                    };
                    crate::jsonata::compile(cond).map_err(|why| {
                        schema(
                            format!("{loc}/Condition"),
                            format!("the JSONata expression '{cond}' does not compile: {why}"),
                        )
                    })?;
                    if let Some(k) = c.as_object().and_then(|o| {
                        o.keys().find(|k| {
                            !["Condition", "Next", "Comment", "Assign", "Output"]
                                .contains(&k.as_str())
                        })
                    }) {
                        return Err(schema(
                            format!("{loc}/{k}"),
                            format!("Field '{k}' is not supported in a JSONata choice rule"),
                        ));
                    }
                    Rule::Condition(cond.to_string())
                } else {
                    choice::parse(c, &loc).map_err(|e| schema(loc.clone(), e))?
                };
                let Some(next) = c.get("Next").and_then(Value::as_str) else {
                    return Err(schema(format!("{loc}/Next"), "A choice rule needs Next"));
                };
                let Some(c) = c.as_object() else {
                    return Err(schema(loc, "A choice rule must be an object"));
                };
                if !jsonata && c.contains_key("Output") {
                    return Err(schema(
                        format!("{loc}/Output"),
                        "Output belongs to the JSONata query language",
                    ));
                }
                choices.push(Branch {
                    rule,
                    next: next.to_string(),
                    assign: any_template(c, "Assign", &loc, jsonata)?,
                    output: ata_template(c, "Output", &loc)?,
                });
            }
            Kind::Choice {
                choices,
                default: m.get("Default").and_then(Value::as_str).map(String::from),
            }
        }
        "Wait" => {
            let ways = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
                .iter()
                .filter(|k| m.contains_key(**k))
                .count();
            if ways != 1 {
                return Err(schema(at, "A Wait state needs exactly one of Seconds, SecondsPath, Timestamp and TimestampPath"));
            }
            if let Some(s) = secs(m, "Seconds", at, true)? {
                Kind::Wait(WaitFor::Seconds(s))
            } else if let Some(t) = m.get("Timestamp") {
                let t = t
                    .as_str()
                    .filter(|t| {
                        choice::timestamp(t).is_some()
                            || (jsonata && crate::jsonata::expression(t).is_some())
                    })
                    .ok_or_else(|| {
                        schema(
                            format!("{at}/Timestamp"),
                            "Timestamp must be an RFC 3339 timestamp (2026-01-01T00:00:00Z)",
                        )
                    })?;
                Kind::Wait(WaitFor::Timestamp(t.to_string()))
            } else {
                let p = m
                    .get("TimestampPath")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        schema(
                            format!("{at}/TimestampPath"),
                            "TimestampPath must be a path",
                        )
                    })?;
                Path::parse(p).map_err(|e| schema(format!("{at}/TimestampPath"), e))?;
                Kind::Wait(WaitFor::TimestampPath(p.to_string()))
            }
        }
        "Succeed" => Kind::Succeed,
        "Fail" => {
            let pair = |k: &str| -> Result<Option<Text>, DefinitionError> {
                let pk = format!("{k}Path");
                match (m.get(k), m.get(&pk)) {
                    (Some(_), Some(_)) => Err(schema(
                        format!("{at}/{k}"),
                        format!("{k} and {pk} cannot both be set"),
                    )),
                    (Some(v), None) => v
                        .as_str()
                        .map(|s| Some(Text::Lit(s.to_string())))
                        .ok_or_else(|| {
                            schema(format!("{at}/{k}"), format!("{k} must be a string"))
                        }),
                    (None, Some(v)) => {
                        let p = v.as_str().ok_or_else(|| {
                            schema(format!("{at}/{pk}"), format!("{pk} must be a path"))
                        })?;
                        if !p.starts_with("States.") {
                            Path::parse(p).map_err(|e| schema(format!("{at}/{pk}"), e))?;
                        }
                        Ok(Some(Text::Path(p.to_string())))
                    }
                    (None, None) => Ok(None),
                }
            };
            Kind::Fail {
                error: pair("Error")?,
                cause: pair("Cause")?,
            }
        }
        "Parallel" => {
            let Some(list) = m
                .get("Branches")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
            else {
                return Err(schema(
                    format!("{at}/Branches"),
                    "Branches is required and must be a non-empty array",
                ));
            };
            let mut branches = Vec::new();
            for (i, b) in list.iter().enumerate() {
                let loc = format!("{at}/Branches[{i}]");
                let bm = b.as_object().ok_or_else(|| {
                    schema(
                        loc.clone(),
                        "A branch must be an object with StartAt and States",
                    )
                })?;
                branches.push(state_list(bm, &loc, jsonata)?);
            }
            Kind::Parallel { branches }
        }
        "Map" => {
            let (key, proc) = match (m.get("ItemProcessor"), m.get("Iterator")) {
                (Some(p), None) => ("ItemProcessor", p),
                (None, Some(p)) => ("Iterator", p),
                _ => {
                    return Err(schema(
                        at,
                        "A Map state needs exactly one of ItemProcessor and Iterator",
                    ))
                }
            };
            let loc = format!("{at}/{key}");
            let pm = proc.as_object().ok_or_else(|| {
                schema(
                    loc.clone(),
                    "The item processor must be an object with StartAt and States",
                )
            })?;
            if let Some(cfg) = pm.get("ProcessorConfig") {
                if cfg
                    .get("Mode")
                    .and_then(Value::as_str)
                    .is_some_and(|mode| mode != "INLINE")
                {
                    return Err(schema(format!("{loc}/ProcessorConfig/Mode"), "Only INLINE Map states run here; DISTRIBUTED mode (S3 item readers, child executions) is not supported"));
                }
            }
            let mut inner = pm.clone();
            inner.remove("ProcessorConfig");
            for k in ["ItemReader", "ResultWriter", "ItemBatcher"] {
                if m.contains_key(k) {
                    return Err(schema(
                        format!("{at}/{k}"),
                        format!("{k} belongs to DISTRIBUTED Map states, which are not supported"),
                    ));
                }
            }
            if m.contains_key("ItemSelector") && m.contains_key("Parameters") {
                return Err(schema(
                    format!("{at}/Parameters"),
                    "A Map state takes ItemSelector or Parameters, not both",
                ));
            }
            let items_path = match m.get("ItemsPath") {
                None => None,
                Some(v) => {
                    let p = v.as_str().ok_or_else(|| {
                        schema(format!("{at}/ItemsPath"), "ItemsPath must be a path")
                    })?;
                    Path::parse(p).map_err(|e| schema(format!("{at}/ItemsPath"), e))?;
                    Some(p.to_string())
                }
            };
            Kind::Map(Box::new(MapSpec {
                processor: state_list(&inner, &loc, jsonata)?,
                items_path,
                items: tpl("Items")?,
                item_selector: match tpl("ItemSelector")? {
                    Some(s) => Some(s),
                    None if jsonata => None,
                    None => template(m, "Parameters", at)?,
                },
                max_concurrency: secs(m, "MaxConcurrency", at, true)?,
                tolerated_count: secs(m, "ToleratedFailureCount", at, true)?,
                tolerated_percentage: secs(m, "ToleratedFailurePercentage", at, true)?,
            }))
        }
        _ => {
            return Err(schema(
                format!("{at}/Type"),
                format!("'{kind}' is not a state type"),
            ))
        }
    };
    let is_map = matches!(kind_data, Kind::Map(_));
    Ok(State {
        jsonata,
        arguments: tpl("Arguments")?,
        output: tpl("Output")?,
        kind: kind_data,
        next,
        input_path: opt_path(m, "InputPath", at)?,
        output_path: opt_path(m, "OutputPath", at)?,
        result_path: opt_path(m, "ResultPath", at)?,
        parameters: if is_map {
            None
        } else {
            template(m, "Parameters", at)?
        },
        result_selector: template(m, "ResultSelector", at)?,
        retry,
        catch,
        assign: tpl("Assign")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(def: &str) -> DefinitionError {
        match Definition::parse(def) {
            Ok(_) => DefinitionError {
                code: "OK",
                message: String::new(),
                location: String::new(),
            },
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_the_state_and_field() {
        let e = err(r#"{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"B"}}}"#);
        assert_eq!(
            (e.code, e.location.as_str()),
            ("MISSING_TRANSITION_TARGET", "/States/A/Next")
        );
        let e = err(r#"{"StartAt":"A","States":{"A":{"Type":"Pass"}}}"#);
        assert_eq!(
            (e.code, e.location.as_str()),
            ("SCHEMA_VALIDATION_FAILED", "/States/A")
        );
        let e = err(r#"{"StartAt":"A","States":{"A":{"Type":"Pass","End":true,"Seconds":3}}}"#);
        assert_eq!(e.location, "/States/A/Seconds");
        let e = err(r#"{"StartAt":"A","States":{"A":{"Type":"Task","End":true}}}"#);
        assert_eq!(e.location, "/States/A/Resource");
        let e = err(
            r#"{"StartAt":"A","States":{"A":{"Type":"Pass","End":true},"B":{"Type":"Succeed"}}}"#,
        );
        assert!(e.message.contains("not reachable"), "{e}");
        let e =
            err(r#"{"StartAt":"A","States":{"A":{"Type":"Pass","End":true,"ResultPath":"$[*]"}}}"#);
        assert_eq!(e.location, "/States/A/ResultPath");
        let e = err(
            r#"{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"x","End":true,"Retry":[{"ErrorEquals":["States.ALL"]},{"ErrorEquals":["X"]}]}}}"#,
        );
        assert_eq!(e.location, "/States/A/Retry[0]/ErrorEquals");
        let e = err(
            r#"{"StartAt":"P","States":{"P":{"Type":"Parallel","End":true,"Branches":[{"StartAt":"X","States":{"X":{"Type":"Pass","Next":"Y"}}}]}}}"#,
        );
        assert_eq!(e.location, "/States/P/Branches[0]/States/X/Next");
        let e = err("{not json");
        assert_eq!(e.code, "INVALID_JSON_DESCRIPTION");
    }
}
