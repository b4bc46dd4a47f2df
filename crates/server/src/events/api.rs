//! The Amazon EventBridge API: the JSON 1.1 protocol (`POST /` with
//! `X-Amz-Target: AWSEvents.<Operation>`), in the shapes, limits and error names of botocore's
//! `events` model, so the boto3 `events` client works with `endpoint_url`.
//!
//! Rules belong to the caller that made them (an administrator sees all); each caller's
//! events are matched against its own rules. Buses exist by being named. Every operation is
//! checked against the caller's policies as `events:<Operation>` on the rule or bus ARN.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use modelgate_core::keys::now_ms;
use modelgate_core::CallContext;
use modelgate_events::{Entry, Pattern, MAX_PATTERN_CHARS};
use modelgate_store::{BusObject, RuleRecord, StoreError};
use serde_json::{json, Value};

use super::archive::{ARCHIVE, REPLAY};
use super::{Bus, Destination, Target, MAX_TARGETS};
use crate::app::AppState;
use crate::flows::api::{authorize_action, error_response, opt_str, str_field};
use crate::flows::ApiError;

/// The target prefix of the operations.
pub const TARGET: &str = "AWSEvents.";

/// The most entries one `PutEvents` takes.
const MAX_ENTRIES: usize = 10;

fn ok(v: Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new("ValidationException", message)
}

fn store_error(e: StoreError) -> ApiError {
    ApiError {
        code: "InternalException",
        message: format!("The event store is unavailable: {e}"),
        internal: true,
    }
}

fn owner(ctx: &CallContext) -> String {
    crate::jobs::api::owner(ctx)
}

fn is_admin(ctx: &CallContext) -> bool {
    ctx.principal().is_none_or(|p| p.admin)
}

fn bus_of(state: &AppState) -> Result<&Arc<Bus>, ApiError> {
    state.events.as_ref().ok_or_else(|| ApiError {
        code: "InternalException",
        message: "This gateway runs without an event bus (no state store).".into(),
        internal: true,
    })
}

/// `Name`-like members: 1–64 of `[.\-_A-Za-z0-9]`.
fn check_name(value: &str, member: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_A-Za-z0-9]+ and have length between 1 and 64"
        )))
    }
}

/// The bus a request names (`EventBusName`, a name or an ARN; `default` when absent).
fn bus_name(body: &Value, member: &str) -> Result<String, ApiError> {
    let Some(b) = opt_str(body, member)? else {
        return Ok("default".into());
    };
    let name = b.rsplit_once(":event-bus/").map_or(b, |(_, n)| n);
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/.-_".contains(c));
    if !ok {
        return Err(validation(format!(
            "1 validation error detected: Value '{b}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: [/\\.\\-_A-Za-z0-9]+"
        )));
    }
    Ok(name.to_string())
}

fn not_found(name: &str, bus: &str) -> ApiError {
    ApiError::new(
        "ResourceNotFoundException",
        format!("Rule {name} does not exist on EventBus {bus}."),
    )
}

fn pattern_of(text: &str) -> Result<Pattern, ApiError> {
    if text.chars().count() > MAX_PATTERN_CHARS {
        return Err(validation(format!(
            "1 validation error detected: Value at 'eventPattern' failed to satisfy constraint: Member must have length less than or equal to {MAX_PATTERN_CHARS}"
        )));
    }
    Pattern::parse(text).map_err(|e| ApiError::new("InvalidEventPatternException", e.to_string()))
}

/// `POST /` with `X-Amz-Target: AWSEvents.*` (the body already parsed to an object).
pub async fn handle(
    state: &AppState,
    ctx: &CallContext,
    headers: &HeaderMap,
    op: &str,
    body: &Value,
) -> Response {
    match dispatch(state, ctx, headers, op, body).await {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}

async fn dispatch(
    state: &AppState,
    ctx: &CallContext,
    headers: &HeaderMap,
    op: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    if op == "TestEventPattern" {
        return test_event_pattern(body);
    }
    let bus = bus_of(state)?;
    match op {
        "PutEvents" => put_events(state, ctx, bus, headers, body).await,
        "PutRule" => put_rule(state, ctx, bus, body).await,
        "DescribeRule" => describe_rule(state, ctx, bus, body).await,
        "ListRules" => list_rules(state, ctx, bus, body).await,
        "DeleteRule" => delete_rule(state, ctx, bus, body).await,
        "EnableRule" => set_state(state, ctx, bus, body, "ENABLED").await,
        "DisableRule" => set_state(state, ctx, bus, body, "DISABLED").await,
        "PutTargets" => put_targets(state, ctx, bus, body).await,
        "ListTargetsByRule" => list_targets(state, ctx, bus, body).await,
        "RemoveTargets" => remove_targets(state, ctx, bus, body).await,
        "CreateArchive" => create_archive(state, ctx, bus, body).await,
        "UpdateArchive" => update_archive(state, ctx, bus, body).await,
        "DescribeArchive" => describe_archive(state, ctx, bus, body).await,
        "ListArchives" => list_archives(state, ctx, bus, body).await,
        "DeleteArchive" => delete_archive(state, ctx, bus, body).await,
        "StartReplay" => start_replay(state, ctx, bus, body).await,
        "DescribeReplay" => describe_replay(state, ctx, bus, body).await,
        "ListReplays" => list_replays(state, ctx, bus, body).await,
        "CancelReplay" => cancel_replay(state, ctx, bus, body).await,
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("The operation 'AWSEvents.{other}' is not served by this gateway"),
        )),
    }
}

/// The required fields of an event `TestEventPattern` takes.
const EVENT_FIELDS: [&str; 7] = [
    "id",
    "account",
    "source",
    "time",
    "region",
    "resources",
    "detail-type",
];

fn test_event_pattern(body: &Value) -> Result<Value, ApiError> {
    let pattern = pattern_of(str_field(body, "EventPattern")?)?;
    let text = str_field(body, "Event")?;
    let event: Value = serde_json::from_str(text)
        .map_err(|e| validation(format!("Parameter Event is not valid. Reason: {e}")))?;
    if !event.is_object() {
        return Err(validation(
            "Parameter Event is not valid. Reason: the event must be a JSON object.",
        ));
    }
    if let Some(missing) = EVENT_FIELDS.iter().find(|f| event.get(**f).is_none()) {
        return Err(validation(format!(
            "Parameter Event is not valid. Reason: Provided Event is missing required field {missing}."
        )));
    }
    Ok(json!({"Result": pattern.matches(&event)}))
}

async fn put_events(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Value, ApiError> {
    let entries = match body.get("Entries") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_ENTRIES => a,
        Some(Value::Array(a)) => {
            return Err(validation(format!(
                "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length between 1 and {MAX_ENTRIES} (it has {})",
                a.len()
            )))
        }
        _ => return Err(validation("1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null")),
    };
    let hops = headers
        .get("x-modelgate-event-hops")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    let now = now_ms();
    let owner = owner(ctx);
    let site = modelgate_events::Site {
        account: &state.site.account,
        region: &state.site.region,
    };
    // Each entry: its result slot, and (bus, event) when it is good.
    let mut results: Vec<Value> = Vec::with_capacity(entries.len());
    let mut by_bus: Vec<(String, Vec<(usize, Value)>)> = Vec::new();
    for (i, raw) in entries.iter().enumerate() {
        let made = entry_of(raw).and_then(|(entry, bus_name)| {
            authorize_action(state, ctx, "events:PutEvents", &bus.bus_arn(&bus_name))
                .map_err(|e| (e.code, e.message))?;
            let id = modelgate_events::new_id();
            let event = modelgate_events::envelope(&entry, &id, now, &site)
                .map_err(|e| (e.code, e.message))?;
            Ok((bus_name, event))
        });
        match made {
            Ok((b, event)) => {
                results.push(json!({"EventId": event["id"]}));
                match by_bus.iter_mut().find(|(name, _)| *name == b) {
                    Some((_, list)) => list.push((i, event)),
                    None => by_bus.push((b, vec![(i, event)])),
                }
            }
            Err((code, message)) => {
                results.push(json!({"ErrorCode": code, "ErrorMessage": message}))
            }
        }
    }
    for (name, list) in by_bus {
        let events: Vec<Value> = list.iter().map(|(_, e)| e.clone()).collect();
        if let Err(e) = bus.put(&owner, &name, &events, hops).await {
            for (i, _) in &list {
                results[*i] = json!({"ErrorCode": "InternalFailure", "ErrorMessage": format!("The event could not be delivered: {e}")});
            }
        }
    }
    let failed = results
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    Ok(json!({"FailedEntryCount": failed, "Entries": results}))
}

/// An entry's members, and its bus.
fn entry_of(raw: &Value) -> Result<(Entry, String), (&'static str, String)> {
    let bad = |m: String| ("InvalidArgument", m);
    let s = |name: &str| -> Result<Option<String>, (&'static str, String)> {
        match raw.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(bad(format!(
                "Parameter {name} is not valid. Reason: it must be a string."
            ))),
        }
    };
    let resources = match raw.get("Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| r.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(
                    "Parameter Resources is not valid. Reason: it must be a list of strings."
                        .into(),
                )
            })?,
        Some(_) => {
            return Err(bad(
                "Parameter Resources is not valid. Reason: it must be a list of strings.".into(),
            ))
        }
    };
    let time_ms = match raw.get("Time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64().map(|t| (t * 1000.0) as i64),
        Some(_) => {
            return Err(bad(
                "Parameter Time is not valid. Reason: it must be a timestamp.".into(),
            ))
        }
    };
    let bus = bus_name(raw, "EventBusName").map_err(|e| (e.code, e.message))?;
    Ok((
        Entry {
            source: s("Source")?,
            detail_type: s("DetailType")?,
            detail: s("Detail")?,
            resources,
            time_ms,
        },
        bus,
    ))
}

/// The caller's rule named by `member` on the body's bus: (bus, record).
async fn find_rule(
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
    member: &str,
) -> Result<(String, RuleRecord), ApiError> {
    let name = str_field(body, member)?;
    check_name(name, member)?;
    let bus_name = bus_name(body, "EventBusName")?;
    let found = bus
        .store
        .rule(&owner(ctx), &bus_name, name)
        .await
        .map_err(store_error)?;
    let found = match found {
        Some(r) => Some(r),
        // An administrator acts on anyone's rule of that name.
        None if is_admin(ctx) => bus
            .store
            .rules(None, Some(&bus_name), Some(name), None, 100)
            .await
            .map_err(store_error)?
            .into_iter()
            .find(|r| r.name == name),
        None => None,
    };
    found
        .map(|r| (bus_name.clone(), r))
        .ok_or_else(|| not_found(name, &bus_name))
}

/// The caller's rule named by `member`, after checking `action` (`events:…`) on its ARN.
async fn rule_for(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
    member: &str,
    action: &str,
) -> Result<(String, RuleRecord), ApiError> {
    let (bus_name, r) = find_rule(ctx, bus, body, member).await?;
    authorize_action(
        state,
        ctx,
        action,
        r.body["arn"].as_str().unwrap_or_default(),
    )?;
    Ok((bus_name, r))
}

/// Save a changed rule, reading it again when another writer got there first.
async fn update_rule(
    bus: &Bus,
    mut rule: RuleRecord,
    change: impl Fn(&mut RuleRecord) -> Result<(), ApiError>,
) -> Result<RuleRecord, ApiError> {
    for _ in 0..8 {
        change(&mut rule)?;
        rule.updated_ms = now_ms();
        if bus
            .store
            .save_rule(&rule, Some(rule.version))
            .await
            .map_err(store_error)?
        {
            bus.invalidate(&rule.owner, &rule.bus);
            rule.version += 1;
            return Ok(rule);
        }
        rule = bus
            .store
            .rule(&rule.owner, &rule.bus, &rule.name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(&rule.name, &rule.bus))?;
    }
    Err(ApiError::new(
        "ConcurrentModificationException",
        "The rule changed too often while this request ran; try again.",
    ))
}

async fn put_rule(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let name = str_field(body, "Name")?;
    check_name(name, "name")?;
    let bus_name = bus_name(body, "EventBusName")?;
    let arn = bus.rule_arn(&bus_name, name);
    authorize_action(state, ctx, "events:PutRule", &arn)?;
    if opt_str(body, "ScheduleExpression")?.is_some() {
        return Err(validation(
            "ScheduleExpression is not supported by this gateway: use an event pattern (scheduled work runs as a workflow with a Wait state).",
        ));
    }
    let pattern = opt_str(body, "EventPattern")?.ok_or_else(|| {
        validation("Parameter(s) EventPattern or ScheduleExpression must be specified.")
    })?;
    pattern_of(pattern)?;
    let rule_state = match opt_str(body, "State")? {
        None | Some("ENABLED") | Some("ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS") => "ENABLED",
        Some("DISABLED") => "DISABLED",
        Some(other) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{other}' at 'state' failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED, ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS]"
            )))
        }
    };
    let description = opt_str(body, "Description")?;
    if description.is_some_and(|d| d.chars().count() > 512) {
        return Err(validation("1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 512"));
    }
    let owner = owner(ctx);
    let principal = crate::jobs::caller_ref(ctx.principal()).map_err(|e| validation(e.message))?;
    let existing = bus
        .store
        .rule(&owner, &bus_name, name)
        .await
        .map_err(store_error)?;
    let apply = |r: &mut RuleRecord| {
        r.pattern = pattern.to_string();
        r.state = rule_state.to_string();
        r.body["description"] = json!(description);
        r.body["principal"] = principal.clone();
        Ok(())
    };
    match existing {
        Some(r) => {
            update_rule(bus, r, apply).await?;
        }
        None => {
            let now = now_ms();
            let mut r = RuleRecord {
                owner: owner.clone(),
                bus: bus_name.clone(),
                name: name.to_string(),
                state: rule_state.into(),
                pattern: pattern.into(),
                version: 1,
                created_ms: now,
                updated_ms: now,
                body: json!({"arn": arn, "targets": []}),
            };
            apply(&mut r)?;
            if !bus.store.save_rule(&r, None).await.map_err(store_error)? {
                // Made meanwhile by another request: update that one.
                let r = bus
                    .store
                    .rule(&owner, &bus_name, name)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| not_found(name, &bus_name))?;
                update_rule(bus, r, apply).await?;
            }
            bus.invalidate(&owner, &bus_name);
        }
    }
    Ok(json!({"RuleArn": arn}))
}

fn rule_view(r: &RuleRecord) -> Value {
    let mut v = json!({
        "Name": r.name, "Arn": r.body["arn"], "EventPattern": r.pattern, "State": r.state,
        "EventBusName": r.bus,
    });
    if let Some(d) = r.body["description"].as_str() {
        v["Description"] = json!(d);
    }
    v
}

async fn describe_rule(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let (_, r) = rule_for(state, ctx, bus, body, "Name", "events:DescribeRule").await?;
    let mut v = rule_view(&r);
    v["CreatedBy"] = json!(state.site.account);
    Ok(v)
}

fn limit_of(body: &Value) -> Result<usize, ApiError> {
    match body.get("Limit") {
        None | Some(Value::Null) => Ok(100),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => Ok(usize::try_from(n).unwrap_or(100)),
            _ => Err(validation(
                "1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 100",
            )),
        },
    }
}

fn token_of(body: &Value) -> Result<Option<String>, ApiError> {
    opt_str(body, "NextToken")?
        .map(|t| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| validation("The NextToken is not valid."))
        })
        .transpose()
}

fn token(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

async fn list_rules(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let bus_name = bus_name(body, "EventBusName")?;
    authorize_action(state, ctx, "events:ListRules", &bus.bus_arn(&bus_name))?;
    let prefix = opt_str(body, "NamePrefix")?;
    let limit = limit_of(body)?;
    let after = token_of(body)?;
    let owner = (!is_admin(ctx)).then(|| owner(ctx));
    let mut rules = bus
        .store
        .rules(
            owner.as_deref(),
            Some(&bus_name),
            prefix,
            after.as_deref(),
            limit + 1,
        )
        .await
        .map_err(store_error)?;
    let more = rules.len() > limit;
    rules.truncate(limit);
    let mut v = json!({"Rules": rules.iter().map(rule_view).collect::<Vec<_>>()});
    if more {
        if let Some(last) = rules.last() {
            v["NextToken"] = json!(token(&last.name));
        }
    }
    Ok(v)
}

async fn delete_rule(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let (bus_name, r) = rule_for(state, ctx, bus, body, "Name", "events:DeleteRule").await?;
    if r.body["targets"].as_array().is_some_and(|t| !t.is_empty()) {
        return Err(validation("Rule can't be deleted since it has targets."));
    }
    bus.store
        .delete_rule(&r.owner, &bus_name, &r.name)
        .await
        .map_err(store_error)?;
    bus.invalidate(&r.owner, &bus_name);
    Ok(json!({}))
}

async fn set_state(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
    to: &'static str,
) -> Result<Value, ApiError> {
    let action = if to == "ENABLED" {
        "events:EnableRule"
    } else {
        "events:DisableRule"
    };
    let (_, r) = rule_for(state, ctx, bus, body, "Name", action).await?;
    update_rule(bus, r, |r| {
        r.state = to.to_string();
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

fn targets_of(r: &RuleRecord) -> Vec<Target> {
    serde_json::from_value(r.body["targets"].clone()).unwrap_or_default()
}

/// Check one target as `PutTargets` takes it.
async fn check_target(state: &AppState, raw: &Value) -> Result<Target, ApiError> {
    // HttpParameters (API destinations' headers and query) is not served: refused, not dropped.
    const KNOWN: [&str; 8] = [
        "Id",
        "Arn",
        "Input",
        "InputPath",
        "InputTransformer",
        "RetryPolicy",
        "DeadLetterConfig",
        "RoleArn",
    ];
    if let Some(obj) = raw.as_object() {
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(validation(format!(
                "Target parameter {k} is not supported by this gateway's event bus."
            )));
        }
    }
    let t: Target = serde_json::from_value(raw.clone())
        .map_err(|e| validation(format!("A target is not valid: {e}")))?;
    check_name(&t.id, "targets.member.id")?;
    if t.arn.is_empty() || t.arn.len() > 1600 {
        return Err(validation("1 validation error detected: Value at 'targets.member.arn' failed to satisfy constraint: Member must have length between 1 and 1600"));
    }
    t.input.check(&t.id).map_err(validation)?;
    if let Some(p) = &t.retry_policy {
        if p.maximum_retry_attempts
            .is_some_and(|n| !(0..=185).contains(&n))
        {
            return Err(validation(format!(
                "Target {}: MaximumRetryAttempts must be between 0 and 185.",
                t.id
            )));
        }
        if p.maximum_event_age_in_seconds
            .is_some_and(|n| !(60..=86_400).contains(&n))
        {
            return Err(validation(format!(
                "Target {}: MaximumEventAgeInSeconds must be between 60 and 86400.",
                t.id
            )));
        }
    }
    match Destination::of(&t.arn).map_err(|e| validation(format!("Target {}: {e}", t.id)))? {
        Destination::Webhook(url) => {
            let jobs = state.jobs.as_ref().ok_or_else(|| {
                validation("This gateway has no job queue to deliver webhooks through.")
            })?;
            jobs.check_callback(&url)
                .await
                .map_err(|e| validation(format!("Target {}: {}", t.id, e.message)))?;
        }
        Destination::Endpoint(path) if state.endpoints.get(&path).is_none() => {
            return Err(validation(format!(
                "Target {}: no declarative endpoint is served at {path}.",
                t.id
            )));
        }
        _ => {}
    }
    Ok(t)
}

async fn put_targets(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let (_, r) = rule_for(state, ctx, bus, body, "Rule", "events:PutTargets").await?;
    let raw = match body.get("Targets") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 100 => a,
        _ => return Err(validation("1 validation error detected: Value at 'targets' failed to satisfy constraint: Member must have length between 1 and 100")),
    };
    let mut new = Vec::with_capacity(raw.len());
    for t in raw {
        new.push(check_target(state, t).await?);
    }
    update_rule(bus, r, |r| {
        let mut targets = targets_of(r);
        for t in &new {
            match targets.iter_mut().find(|x| x.id == t.id) {
                Some(x) => *x = t.clone(),
                None => targets.push(t.clone()),
            }
        }
        if targets.len() > MAX_TARGETS {
            return Err(ApiError::new(
                "LimitExceededException",
                format!("The requested resource exceeds the maximum number allowed: a rule has at most {MAX_TARGETS} targets."),
            ));
        }
        r.body["targets"] = serde_json::to_value(&targets).unwrap_or(Value::Null);
        Ok(())
    })
    .await?;
    Ok(json!({"FailedEntryCount": 0, "FailedEntries": []}))
}

async fn list_targets(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let (_, r) = rule_for(state, ctx, bus, body, "Rule", "events:ListTargetsByRule").await?;
    let limit = limit_of(body)?;
    let after = token_of(body)?;
    let targets = targets_of(&r);
    let start = after
        .and_then(|id| targets.iter().position(|t| t.id == id).map(|i| i + 1))
        .unwrap_or(0);
    let page: Vec<&Target> = targets.iter().skip(start).take(limit).collect();
    let mut v = json!({"Targets": page});
    if start + page.len() < targets.len() {
        if let Some(last) = page.last() {
            v["NextToken"] = json!(token(&last.id));
        }
    }
    Ok(v)
}

async fn remove_targets(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let (_, r) = rule_for(state, ctx, bus, body, "Rule", "events:RemoveTargets").await?;
    let ids: Vec<String> = match body.get("Ids") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 100 => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| validation("Ids must be a list of strings."))?,
        _ => return Err(validation("1 validation error detected: Value at 'ids' failed to satisfy constraint: Member must have length between 1 and 100")),
    };
    let present: Vec<String> = targets_of(&r).into_iter().map(|t| t.id).collect();
    update_rule(bus, r, |r| {
        let targets: Vec<Target> = targets_of(r)
            .into_iter()
            .filter(|t| !ids.contains(&t.id))
            .collect();
        r.body["targets"] = serde_json::to_value(&targets).unwrap_or(Value::Null);
        Ok(())
    })
    .await?;
    let failed: Vec<Value> = ids
        .iter()
        .filter(|id| !present.contains(id))
        .map(|id| json!({"TargetId": id, "ErrorCode": "ResourceNotFoundException", "ErrorMessage": format!("Target {id} does not exist on the rule.")}))
        .collect();
    Ok(json!({"FailedEntryCount": failed.len(), "FailedEntries": failed}))
}

// Archives and replays.

/// Seconds since the epoch, as the JSON protocol writes timestamps.
fn ts(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// A timestamp member (seconds since the epoch) in Unix ms.
fn time_ms(body: &Value, name: &str) -> Result<i64, ApiError> {
    body.get(name)
        .and_then(Value::as_f64)
        .map(|t| (t * 1000.0) as i64)
        .ok_or_else(|| validation(format!("1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null")))
}

/// An archive or replay name: 1–`max` of `[.\-_A-Za-z0-9]`.
fn object_name<'a>(body: &'a Value, member: &str, max: usize) -> Result<&'a str, ApiError> {
    let name = str_field(body, member)?;
    if name.len() > max {
        return Err(validation(format!("1 validation error detected: Value '{name}' at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}")));
    }
    check_name(name, member)?;
    Ok(name)
}

fn object_arn(state: &AppState, kind: &str, name: &str) -> String {
    format!(
        "arn:aws:events:{}:{}:{kind}/{name}",
        state.site.region, state.site.account
    )
}

/// The bus an `EventSourceArn` names (`arn:aws:events:…:event-bus/NAME`).
fn bus_of_arn(arn: &str) -> Result<String, ApiError> {
    arn.rsplit_once(":event-bus/")
        .map(|(_, n)| n.to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            validation(format!(
                "Parameter EventSourceArn is not valid. Reason: '{arn}' is not an event bus ARN."
            ))
        })
}

/// The archive or replay the body names (`ArchiveName` / `ReplayName`), after checking
/// `events:<action>` on its ARN.
async fn named_object(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
    kind: &'static str,
    action: &str,
) -> Result<BusObject, ApiError> {
    let (member, max) = if kind == ARCHIVE {
        ("ArchiveName", 48)
    } else {
        ("ReplayName", 64)
    };
    let name = object_name(body, member, max)?;
    let o = find_object(bus, ctx, kind, name).await?;
    let arn = o.body["arn"].as_str().unwrap_or_default();
    authorize_action(state, ctx, &format!("events:{action}"), arn)?;
    Ok(o)
}

async fn find_object(
    bus: &Bus,
    ctx: &CallContext,
    kind: &'static str,
    name: &str,
) -> Result<BusObject, ApiError> {
    let mine = bus
        .store
        .object(kind, &owner(ctx), name)
        .await
        .map_err(store_error)?;
    let found = match mine {
        Some(o) => Some(o),
        None if is_admin(ctx) => bus
            .store
            .objects(kind, None)
            .await
            .map_err(store_error)?
            .into_iter()
            .find(|o| o.name == name),
        None => None,
    };
    let what = if kind == ARCHIVE { "Archive" } else { "Replay" };
    found.ok_or_else(|| {
        ApiError::new(
            "ResourceNotFoundException",
            format!("{what} {name} does not exist."),
        )
    })
}

fn archive_view(o: &BusObject) -> Value {
    let b = &o.body;
    let mut v = json!({
        "ArchiveName": o.name, "ArchiveArn": b["arn"], "EventSourceArn": b["source_arn"],
        "State": "ENABLED", "RetentionDays": b["retention_days"],
        "CreationTime": ts(b["created_ms"].as_i64().unwrap_or(0)),
    });
    if let Some(p) = b["pattern"].as_str() {
        v["EventPattern"] = json!(p);
    }
    if let Some(d) = b["description"].as_str() {
        v["Description"] = json!(d);
    }
    v
}

fn retention_days(body: &Value) -> Result<i64, ApiError> {
    match body.get("RetentionDays") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_i64()
            .filter(|d| *d >= 0)
            .ok_or_else(|| validation("1 validation error detected: Value at 'retentionDays' failed to satisfy constraint: Member must have value greater than or equal to 0")),
    }
}

async fn create_archive(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let name = object_name(body, "ArchiveName", 48)?;
    let arn = object_arn(state, "archive", name);
    authorize_action(state, ctx, "events:CreateArchive", &arn)?;
    let source = str_field(body, "EventSourceArn")?;
    let bus_name = bus_of_arn(source)?;
    let pattern = opt_str(body, "EventPattern")?;
    if let Some(p) = pattern {
        pattern_of(p)?;
    }
    let description = opt_str(body, "Description")?;
    let now = now_ms();
    let o = BusObject {
        kind: ARCHIVE.into(),
        owner: owner(ctx),
        name: name.to_string(),
        updated_ms: now,
        body: json!({
            "arn": arn, "source_arn": source, "bus": bus_name, "pattern": pattern,
            "description": description, "retention_days": retention_days(body)?, "created_ms": now,
        }),
    };
    if !bus.store.put_object(&o, true).await.map_err(store_error)? {
        return Err(ApiError::new(
            "ResourceAlreadyExistsException",
            format!("Archive {name} already exists."),
        ));
    }
    Ok(json!({"ArchiveArn": arn, "State": "ENABLED", "CreationTime": ts(now)}))
}

async fn update_archive(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let mut o = named_object(state, ctx, bus, body, ARCHIVE, "UpdateArchive").await?;
    if let Some(p) = opt_str(body, "EventPattern")? {
        pattern_of(p)?;
        o.body["pattern"] = json!(p);
    }
    if let Some(d) = opt_str(body, "Description")? {
        o.body["description"] = json!(d);
    }
    if body.get("RetentionDays").is_some() {
        o.body["retention_days"] = json!(retention_days(body)?);
    }
    o.updated_ms = now_ms();
    bus.store.put_object(&o, false).await.map_err(store_error)?;
    Ok(
        json!({"ArchiveArn": o.body["arn"], "State": "ENABLED", "CreationTime": ts(o.body["created_ms"].as_i64().unwrap_or(0))}),
    )
}

async fn describe_archive(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let o = named_object(state, ctx, bus, body, ARCHIVE, "DescribeArchive").await?;
    let (count, bytes) = super::archive::size(bus, &o.owner, &o.body)
        .await
        .map_err(|e| ApiError {
            code: "InternalException",
            message: e,
            internal: true,
        })?;
    let mut v = archive_view(&o);
    v["EventCount"] = json!(count);
    v["SizeBytes"] = json!(bytes);
    Ok(v)
}

/// The caller's archives or replays (everyone's for an administrator) whose names start with
/// the body's `NamePrefix`, after checking `events:<action>`.
async fn list_objects(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
    kind: &'static str,
    action: &str,
) -> Result<Vec<BusObject>, ApiError> {
    authorize_action(
        state,
        ctx,
        &format!("events:{action}"),
        &object_arn(state, kind, "*"),
    )?;
    let prefix = opt_str(body, "NamePrefix")?.unwrap_or_default();
    let owner = (!is_admin(ctx)).then(|| owner(ctx));
    let all = bus
        .store
        .objects(kind, owner.as_deref())
        .await
        .map_err(store_error)?;
    Ok(all
        .into_iter()
        .filter(|o| o.name.starts_with(prefix))
        .collect())
}

async fn list_archives(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let source = opt_str(body, "EventSourceArn")?;
    let list: Vec<Value> = list_objects(state, ctx, bus, body, ARCHIVE, "ListArchives")
        .await?
        .iter()
        .filter(|o| source.is_none_or(|s| o.body["source_arn"] == s))
        .map(archive_view)
        .collect();
    Ok(json!({"Archives": list}))
}

async fn delete_archive(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let o = named_object(state, ctx, bus, body, ARCHIVE, "DeleteArchive").await?;
    let name = o.name.as_str();
    bus.store
        .delete_object(ARCHIVE, &o.owner, name)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

fn replay_view(o: &BusObject) -> Value {
    let b = &o.body;
    let mut v = json!({
        "ReplayName": o.name, "ReplayArn": b["arn"], "EventSourceArn": b["archive_arn"],
        "State": b["state"], "Destination": b["destination"],
        "EventStartTime": ts(b["start_ms"].as_i64().unwrap_or(0)),
        "EventEndTime": ts(b["end_ms"].as_i64().unwrap_or(0)),
        "ReplayStartTime": ts(b["replay_start_ms"].as_i64().unwrap_or(0)),
    });
    for (member, key) in [
        ("EventLastReplayedTime", "last_replayed_ms"),
        ("ReplayEndTime", "replay_end_ms"),
    ] {
        if let Some(t) = b[key].as_i64() {
            v[member] = ts(t);
        }
    }
    for (member, key) in [("StateReason", "reason"), ("Description", "description")] {
        if let Some(r) = b[key].as_str() {
            v[member] = json!(r);
        }
    }
    v
}

async fn start_replay(
    state: &AppState,
    ctx: &CallContext,
    bus: &Arc<Bus>,
    body: &Value,
) -> Result<Value, ApiError> {
    let name = object_name(body, "ReplayName", 64)?;
    let arn = object_arn(state, "replay", name);
    authorize_action(state, ctx, "events:StartReplay", &arn)?;
    let source = str_field(body, "EventSourceArn")?;
    let archive_name = source
        .rsplit_once(":archive/")
        .map(|(_, n)| n)
        .ok_or_else(|| {
            validation(format!(
                "Parameter EventSourceArn is not valid. Reason: '{source}' is not an archive ARN."
            ))
        })?;
    let archive = find_object(bus, ctx, ARCHIVE, archive_name).await?;
    let (start, end) = (
        time_ms(body, "EventStartTime")?,
        time_ms(body, "EventEndTime")?,
    );
    let now = now_ms();
    if start >= end {
        return Err(validation("Parameter EventStartTime is not valid. Reason: EventStartTime must be before EventEndTime."));
    }
    if end > now {
        return Err(validation(
            "Parameter EventEndTime is not valid. Reason: EventEndTime cannot be in the future.",
        ));
    }
    let destination = body.get("Destination").filter(|d| d.is_object()).ok_or_else(|| {
        validation("1 validation error detected: Value null at 'destination' failed to satisfy constraint: Member must not be null")
    })?;
    let dest_bus = bus_of_arn(destination["Arn"].as_str().unwrap_or_default())?;
    if archive.body["bus"] != dest_bus.as_str() {
        return Err(validation("Parameter Destination.Arn is not valid. Reason: Cross event bus replay is not permitted."));
    }
    if let Some(filters) = destination.get("FilterArns") {
        let ok = filters.as_array().is_some_and(|a| {
            a.iter()
                .all(|f| f.as_str().and_then(super::archive::rule_name).is_some())
        });
        if !ok {
            return Err(validation(
                "Parameter Destination.FilterArns is not valid. Reason: each must be a rule ARN.",
            ));
        }
    }
    let o = BusObject {
        kind: REPLAY.into(),
        owner: archive.owner.clone(),
        name: name.to_string(),
        updated_ms: now,
        body: json!({
            "arn": arn, "archive": archive.name, "archive_arn": source, "bus": dest_bus,
            "start_ms": start, "end_ms": end, "destination": destination, "state": "STARTING",
            "replay_start_ms": now, "count": 0, "description": opt_str(body, "Description")?,
        }),
    };
    if !bus.store.put_object(&o, true).await.map_err(store_error)? {
        return Err(ApiError::new(
            "ResourceAlreadyExistsException",
            format!("Replay {name} already exists."),
        ));
    }
    super::archive::spawn(Arc::clone(bus), o.owner.clone(), name.to_string());
    Ok(json!({"ReplayArn": arn, "State": "STARTING", "ReplayStartTime": ts(now)}))
}

async fn describe_replay(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let o = named_object(state, ctx, bus, body, REPLAY, "DescribeReplay").await?;
    Ok(replay_view(&o))
}

async fn list_replays(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let wanted = opt_str(body, "State")?;
    let source = opt_str(body, "EventSourceArn")?;
    let list: Vec<Value> = list_objects(state, ctx, bus, body, REPLAY, "ListReplays")
        .await?
        .iter()
        .filter(|o| {
            wanted.is_none_or(|w| o.body["state"] == w)
                && source.is_none_or(|s| o.body["archive_arn"] == s)
        })
        .map(replay_view)
        .collect();
    Ok(json!({"Replays": list}))
}

async fn cancel_replay(
    state: &AppState,
    ctx: &CallContext,
    bus: &Bus,
    body: &Value,
) -> Result<Value, ApiError> {
    let mut o = named_object(state, ctx, bus, body, REPLAY, "CancelReplay").await?;
    let name = o.name.as_str();
    if !matches!(o.body["state"].as_str(), Some("STARTING" | "RUNNING")) {
        return Err(ApiError::new(
            "IllegalStatusException",
            format!(
                "Replay {name} is {} and cannot be cancelled.",
                o.body["state"].as_str().unwrap_or("ended")
            ),
        ));
    }
    o.body["state"] = json!("CANCELLING");
    o.updated_ms = now_ms();
    bus.store.put_object(&o, false).await.map_err(store_error)?;
    Ok(json!({"ReplayArn": o.body["arn"], "State": "CANCELLING"}))
}
