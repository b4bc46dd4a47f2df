//! The AWS Step Functions API: the JSON 1.0 protocol (`POST /` with
//! `X-Amz-Target: AWSStepFunctions.<Operation>`), in the shapes and error names of botocore's
//! `stepfunctions` model, so the boto3 `stepfunctions` client works with `endpoint_url`.
//!
//! State machines and executions belong to the key that made them; other keys do not see
//! them (an administrator sees all). Every operation is checked against the caller's policies
//! as `states:<Operation>` on the machine or execution ARN.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use modelgate_core::keys::now_ms;
use modelgate_core::CallContext;
use modelgate_flows::{Definition, Failure, Run};
use modelgate_store::{ExecutionQuery, ExecutionRecord, MachineRecord, StoreError};
use serde_json::{json, Value};

use super::{ApiError, Applied, Flows};
use crate::app::AppState;

/// The target prefix of the operations.
pub const TARGET: &str = "AWSStepFunctions.";

pub(crate) fn error_response(e: &ApiError) -> Response {
    let status = if e.internal {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    crate::errors::aws_json_error(status, e.code, &e.message)
}

fn ok(v: Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    r
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new("ValidationException", message)
}

/// Seconds since the epoch, as the JSON protocol writes timestamps.
fn ts(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// The caller's name for ownership.
fn owner(ctx: &CallContext) -> String {
    crate::jobs::api::owner(ctx)
}

fn is_admin(ctx: &CallContext) -> bool {
    ctx.principal().is_none_or(|p| p.admin)
}

fn visible(ctx: &CallContext, record_owner: &str) -> bool {
    is_admin(ctx) || record_owner == owner(ctx)
}

fn authorize(
    state: &AppState,
    ctx: &CallContext,
    op: &str,
    resource: &str,
) -> Result<(), ApiError> {
    authorize_action(state, ctx, &format!("states:{op}"), resource)
}

/// Check an AWS JSON-protocol action (`states:StartExecution`, `events:PutRule`) on a resource
/// against the caller's policies.
pub(crate) fn authorize_action(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    resource: &str,
) -> Result<(), ApiError> {
    let request = modelgate_core::policy::Request {
        actions: vec![action.to_string()],
        resource: resource.to_string(),
        context: Default::default(),
    };
    let request = modelgate_core::access::common_context(request, ctx, &state.site);
    modelgate_core::access::authorize(ctx, &request, &state.auth.audit)
        .map_err(|e| ApiError::new("AccessDeniedException", e.message))
}

pub(crate) fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(validation(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
        ))),
        Some(_) => Err(ApiError::new("SerializationException", format!("'{name}' must be a string"))),
    }
}

pub(crate) fn opt_str<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(
            "SerializationException",
            format!("'{name}' must be a string"),
        )),
    }
}

/// Names of machines and executions: 1–80 characters, none of AWS's forbidden ones.
fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let bad = name.is_empty()
        || name.chars().count() > 80
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c));
    if bad {
        return Err(ApiError::new("InvalidName", format!("Invalid Name: '{name}' ({what} names have 1 to 80 characters, without whitespace or any of < > {{ }} [ ] ? * \" # % \\ ^ | ~ ` $ & , ; : /)")));
    }
    Ok(())
}

fn flows_of(state: &AppState) -> Result<&Arc<Flows>, ApiError> {
    state.flows.as_ref().ok_or_else(|| ApiError {
        code: "ServiceUnavailable",
        message:
            "This gateway runs without workflows (no state store, or workflows.enabled = false)."
                .into(),
        internal: true,
    })
}

/// `POST /` with an `X-Amz-Target` header.
pub async fn handle(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let events_op = target.strip_prefix(crate::events::api::TARGET);
    let Some(op) = target.strip_prefix(TARGET).or(events_op) else {
        return error_response(&ApiError::new(
            "UnknownOperationException",
            format!("The operation '{target}' is not served by this gateway"),
        ));
    };
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return error_response(&ApiError::new(
                    "SerializationException",
                    "The request body must be a JSON object",
                ))
            }
            Err(e) => {
                return error_response(&ApiError::new(
                    "SerializationException",
                    format!("The request body is not JSON: {e}"),
                ))
            }
        }
    };
    if events_op.is_some() {
        return crate::events::api::handle(&state, &ctx, &headers, op, &body).await;
    }
    match dispatch(&state, &ctx, op, &body).await {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}

async fn dispatch(
    state: &AppState,
    ctx: &CallContext,
    op: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let flows = flows_of(state)?;
    match op {
        "CreateStateMachine" => create_machine(state, ctx, flows, body).await,
        "UpdateStateMachine" => update_machine(state, ctx, flows, body).await,
        "DescribeStateMachine" => describe_machine(state, ctx, flows, body).await,
        "ListStateMachines" => list_machines(state, ctx, flows, body).await,
        "DeleteStateMachine" => delete_machine(state, ctx, flows, body).await,
        "StartExecution" => start_execution(state, ctx, flows, body, false).await,
        "StartSyncExecution" => start_execution(state, ctx, flows, body, true).await,
        "DescribeExecution" => describe_execution(state, ctx, flows, body).await,
        "ListExecutions" => list_executions(state, ctx, flows, body).await,
        "StopExecution" => stop_execution(state, ctx, flows, body).await,
        "GetExecutionHistory" => history(state, ctx, flows, body).await,
        "SendTaskSuccess" | "SendTaskFailure" | "SendTaskHeartbeat" => {
            task_answer(state, ctx, flows, op, body).await
        }
        "ValidateStateMachineDefinition" => validate(body),
        "TestState" => test_state(state, ctx, flows, body).await,
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("The operation 'AWSStepFunctions.{other}' is not served by this gateway"),
        )),
    }
}

/// Parse a definition and check that every task resource runs here.
fn check_definition(flows: &Flows, text: &str) -> Result<Arc<Definition>, ApiError> {
    let def = flows.definition(text)?;
    let mut bad = None;
    walk_resources(&def.top, &mut |r| {
        if bad.is_none() {
            if let Err(e) = super::tasks::supported(r) {
                bad = Some(e);
            }
        }
    });
    match bad {
        Some(e) => Err(ApiError::new(
            "InvalidDefinition",
            format!("Invalid State Machine Definition: 'SCHEMA_VALIDATION_FAILED: {e}'"),
        )),
        None => Ok(def),
    }
}

fn walk_resources(list: &modelgate_flows::definition::StateList, f: &mut dyn FnMut(&str)) {
    use modelgate_flows::definition::Kind;
    for s in list.states.values() {
        match &s.kind {
            Kind::Task { resource, .. } => f(resource),
            Kind::Parallel { branches } => branches.iter().for_each(|b| walk_resources(b, f)),
            Kind::Map(m) => walk_resources(&m.processor, f),
            _ => {}
        }
    }
}

fn machine_type(body: &Value) -> Result<String, ApiError> {
    match opt_str(body, "type")? {
        None => Ok("STANDARD".into()),
        Some(t @ ("STANDARD" | "EXPRESS")) => Ok(t.to_string()),
        Some(t) => Err(validation(format!(
            "1 validation error detected: Value '{t}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [STANDARD, EXPRESS]"
        ))),
    }
}

fn revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A Step Functions ARN of the resource type `kind`, or `InvalidArn`.
fn check_arn(arn: &str, kind: &str) -> Result<(), ApiError> {
    if arn.starts_with("arn:aws:states:") && arn.contains(&format!(":{kind}:")) {
        return Ok(());
    }
    Err(ApiError::new(
        "InvalidArn",
        format!("Invalid Arn: 'Resource type not valid in this context: {arn}'"),
    ))
}

async fn machine_for(
    ctx: &CallContext,
    flows: &Flows,
    arn: &str,
) -> Result<MachineRecord, ApiError> {
    check_arn(arn, "stateMachine")?;
    flows
        .store
        .machine(arn)
        .await?
        .filter(|m| visible(ctx, &m.owner))
        .ok_or_else(|| {
            ApiError::new(
                "StateMachineDoesNotExist",
                format!("State Machine Does Not Exist: '{arn}'"),
            )
        })
}

async fn execution_for(
    ctx: &CallContext,
    flows: &Flows,
    arn: &str,
) -> Result<ExecutionRecord, ApiError> {
    check_arn(arn, "execution")?;
    flows
        .store
        .execution(arn)
        .await?
        .filter(|e| visible(ctx, &e.owner))
        .ok_or_else(|| {
            ApiError::new(
                "ExecutionDoesNotExist",
                format!("Execution Does Not Exist: '{arn}'"),
            )
        })
}

fn machine_body(body: &Value) -> Value {
    let mut b = json!({});
    for k in [
        "loggingConfiguration",
        "tracingConfiguration",
        "tags",
        "versionDescription",
        "encryptionConfiguration",
    ] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            b[k] = v.clone();
        }
    }
    b
}

async fn create_machine(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let name = str_field(body, "name")?;
    check_name(name, "state machine")?;
    let definition = str_field(body, "definition")?;
    let role = str_field(body, "roleArn")?;
    let kind = machine_type(body)?;
    let arn = flows.machine_arn(name);
    authorize(state, ctx, "CreateStateMachine", &arn)?;
    check_definition(flows, definition)?;
    let now = now_ms();
    let m = MachineRecord {
        arn: arn.clone(),
        owner: owner(ctx),
        name: name.to_string(),
        kind,
        definition: definition.to_string(),
        role_arn: role.to_string(),
        created_ms: now,
        updated_ms: now,
        revision: revision(),
        body: machine_body(body),
    };
    match flows.store.create_machine(&m).await {
        Ok(()) => Ok(json!({"stateMachineArn": arn, "creationDate": ts(now)})),
        Err(StoreError::Conflict(_)) => {
            // The same machine again is idempotent, as in Step Functions.
            if let Some(old) = flows.store.machine(&arn).await? {
                if old.owner == m.owner
                    && old.definition == m.definition
                    && old.role_arn == m.role_arn
                    && old.kind == m.kind
                {
                    return Ok(json!({"stateMachineArn": arn, "creationDate": ts(old.created_ms)}));
                }
            }
            Err(ApiError::new(
                "StateMachineAlreadyExists",
                format!("State Machine Already Exists: '{arn}'"),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn update_machine(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "stateMachineArn")?;
    authorize(state, ctx, "UpdateStateMachine", arn)?;
    let mut m = machine_for(ctx, flows, arn).await?;
    let definition = opt_str(body, "definition")?;
    let role = opt_str(body, "roleArn")?;
    if definition.is_none()
        && role.is_none()
        && body.get("loggingConfiguration").is_none()
        && body.get("tracingConfiguration").is_none()
    {
        return Err(ApiError::new("MissingRequiredParameter", "Either the definition, the roleArn, the loggingConfiguration or the tracingConfiguration must be specified"));
    }
    if let Some(d) = definition {
        check_definition(flows, d)?;
        m.definition = d.to_string();
    }
    if let Some(r) = role {
        m.role_arn = r.to_string();
    }
    for k in [
        "loggingConfiguration",
        "tracingConfiguration",
        "encryptionConfiguration",
    ] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            m.body[k] = v.clone();
        }
    }
    m.updated_ms = now_ms();
    m.revision = revision();
    if !flows.store.update_machine(&m).await? {
        return Err(ApiError::new(
            "StateMachineDoesNotExist",
            format!("State Machine Does Not Exist: '{arn}'"),
        ));
    }
    Ok(json!({"updateDate": ts(m.updated_ms), "revisionId": m.revision}))
}

async fn describe_machine(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "stateMachineArn")?;
    authorize(state, ctx, "DescribeStateMachine", arn)?;
    let m = machine_for(ctx, flows, arn).await?;
    let mut out = json!({
        "stateMachineArn": m.arn,
        "name": m.name,
        "status": "ACTIVE",
        "definition": m.definition,
        "roleArn": m.role_arn,
        "type": m.kind,
        "creationDate": ts(m.created_ms),
        "revisionId": m.revision,
        "loggingConfiguration": m.body.get("loggingConfiguration").cloned().unwrap_or_else(|| json!({"level": "OFF", "includeExecutionData": false})),
    });
    if let Some(t) = m.body.get("tracingConfiguration") {
        out["tracingConfiguration"] = t.clone();
    }
    Ok(out)
}

fn page_size(body: &Value, default: usize, max: usize) -> Result<usize, ApiError> {
    match body.get("maxResults") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(0) => Ok(default),
            Some(n) if usize::try_from(n).is_ok_and(|n| n <= max) => Ok(usize::try_from(n).unwrap_or(default)),
            _ => Err(validation(format!(
                "1 validation error detected: Value '{v}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {max}"
            ))),
        },
    }
}

fn encode_token(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn decode_token(body: &Value) -> Result<Option<Value>, ApiError> {
    let Some(t) = opt_str(body, "nextToken")? else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                "InvalidToken",
                "Invalid Token: the nextToken is not one this API gave",
            )
        })
}

async fn list_machines(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    authorize(state, ctx, "ListStateMachines", &flows.machine_arn("*"))?;
    let limit = page_size(body, 100, 1000)?;
    let from = decode_token(body)?.and_then(|v| v.as_u64()).unwrap_or(0);
    let own = owner(ctx);
    let all = flows
        .store
        .machines((!is_admin(ctx)).then_some(own.as_str()))
        .await?;
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(all.len());
    let page: Vec<Value> = all[start..]
        .iter()
        .take(limit)
        .map(|m| json!({"stateMachineArn": m.arn, "name": m.name, "type": m.kind, "creationDate": ts(m.created_ms)}))
        .collect();
    let mut out = json!({"stateMachines": page});
    if start + limit < all.len() {
        out["nextToken"] = Value::from(encode_token(&json!(start + limit)));
    }
    Ok(out)
}

async fn delete_machine(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "stateMachineArn")?;
    authorize(state, ctx, "DeleteStateMachine", arn)?;
    // Deleting what is not there succeeds (Step Functions' DeleteStateMachine is idempotent);
    // executions already running go on with the definition they started with.
    if let Ok(m) = machine_for(ctx, flows, arn).await {
        flows.store.delete_machine(&m.arn).await?;
    }
    Ok(json!({}))
}

async fn start_execution(
    state: &AppState,
    ctx: &CallContext,
    flows: &Arc<Flows>,
    body: &Value,
    sync: bool,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "stateMachineArn")?;
    let op = if sync {
        "StartSyncExecution"
    } else {
        "StartExecution"
    };
    authorize(state, ctx, op, arn)?;
    let m = machine_for(ctx, flows, arn).await?;
    if sync && m.kind != "EXPRESS" {
        return Err(ApiError::new("StateMachineTypeNotSupported", "This operation is not supported by this type of state machine (StartSyncExecution runs EXPRESS state machines)"));
    }
    let name = match opt_str(body, "name")? {
        Some(n) => {
            check_name(n, "execution")?;
            n.to_string()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let input = opt_str(body, "input")?.unwrap_or("{}");
    let principal = crate::jobs::caller_ref(ctx.principal())
        .map_err(|e| ApiError::new("AccessDeniedException", e.message))?;
    let own = owner(ctx);
    let meta = Flows::meta(principal, &own, None, opt_str(body, "traceHeader")?);
    let (rec, _) = flows
        .start(
            &m.arn,
            &m.name,
            &m.definition,
            &m.role_arn,
            &own,
            &name,
            input,
            meta,
        )
        .await?;
    if !sync {
        return Ok(json!({"executionArn": rec.arn, "startDate": ts(rec.start_ms)}));
    }
    // Wait for the end (Express executions last at most five minutes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut rec = rec;
    while rec.status == "RUNNING" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(r) = flows.store.execution(&rec.arn).await? {
            rec = r;
        }
    }
    // DescribeExecution's view, in StartSyncExecution's terms: SUCCEEDED, FAILED or TIMED_OUT
    // (still running at the deadline), always a stop date, billing details.
    let stop = rec.stop_ms.unwrap_or_else(now_ms);
    let mut out = execution_view(&rec);
    if let Some(o) = out.as_object_mut() {
        o.remove("redriveCount");
        o.remove("redriveStatus");
    }
    out["status"] = Value::from(match rec.status.as_str() {
        "RUNNING" | "TIMED_OUT" => "TIMED_OUT",
        "SUCCEEDED" => "SUCCEEDED",
        _ => "FAILED",
    });
    out["stopDate"] = ts(stop);
    out["billingDetails"] =
        json!({"billedMemoryUsedInMB": 0, "billedDurationInMilliseconds": stop - rec.start_ms});
    Ok(out)
}

fn execution_view(e: &ExecutionRecord) -> Value {
    let mut out = json!({
        "executionArn": e.arn,
        "stateMachineArn": e.machine_arn,
        "name": e.name,
        "status": e.status,
        "startDate": ts(e.start_ms),
        "input": e.input,
        "inputDetails": {"included": true},
        "redriveCount": 0,
        "redriveStatus": "NOT_REDRIVABLE",
    });
    if let Some(s) = e.stop_ms {
        out["stopDate"] = ts(s);
    }
    if let Some(o) = &e.output {
        out["output"] = Value::from(o.as_str());
        out["outputDetails"] = json!({"included": true});
    }
    if let Some(x) = &e.error {
        out["error"] = Value::from(x.as_str());
    }
    if let Some(c) = &e.cause {
        out["cause"] = Value::from(c.as_str());
    }
    if let Some(t) = e.meta.get("traceHeader").and_then(Value::as_str) {
        out["traceHeader"] = Value::from(t);
    }
    out
}

async fn describe_execution(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "executionArn")?;
    authorize(state, ctx, "DescribeExecution", arn)?;
    let e = execution_for(ctx, flows, arn).await?;
    Ok(execution_view(&e))
}

async fn list_executions(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "stateMachineArn")?;
    authorize(state, ctx, "ListExecutions", arn)?;
    let m = machine_for(ctx, flows, arn).await?;
    let status = match opt_str(body, "statusFilter")? {
        None => None,
        Some(s @ ("RUNNING" | "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED" | "PENDING_REDRIVE")) => Some(s.to_string()),
        Some(s) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{s}' at 'statusFilter' failed to satisfy constraint: Member must satisfy enum value set: [RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE]"
            )))
        }
    };
    let limit = page_size(body, 100, 1000)?;
    let before =
        decode_token(body)?.and_then(|v| Some((v[0].as_i64()?, v[1].as_str()?.to_string())));
    let q = ExecutionQuery {
        machine_arn: Some(m.arn.clone()),
        owner: (!is_admin(ctx)).then(|| owner(ctx)),
        status,
        before,
        limit: limit + 1,
    };
    let mut rows = flows.store.executions(&q).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let list: Vec<Value> = rows
        .iter()
        .map(|e| {
            let mut v = json!({
                "executionArn": e.arn,
                "stateMachineArn": e.machine_arn,
                "name": e.name,
                "status": e.status,
                "startDate": ts(e.start_ms),
            });
            if let Some(s) = e.stop_ms {
                v["stopDate"] = ts(s);
            }
            v
        })
        .collect();
    let mut out = json!({"executions": list});
    if more {
        if let Some(last) = rows.last() {
            out["nextToken"] = Value::from(encode_token(&json!([last.start_ms, last.arn])));
        }
    }
    Ok(out)
}

async fn stop_execution(
    state: &AppState,
    ctx: &CallContext,
    flows: &Arc<Flows>,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "executionArn")?;
    authorize(state, ctx, "StopExecution", arn)?;
    execution_for(ctx, flows, arn).await?;
    let error = opt_str(body, "error")?.map(String::from);
    let cause = opt_str(body, "cause")?.map(String::from);
    flows
        .apply(arn, |_, run, now| {
            run.stop(error.clone(), cause.clone(), now)
        })
        .await?;
    let e = execution_for(ctx, flows, arn).await?;
    Ok(json!({"stopDate": ts(e.stop_ms.unwrap_or_else(now_ms))}))
}

/// A history event in the API's shape.
pub fn event_view(e: &modelgate_store::EventRecord, include_data: bool) -> Value {
    let mut details = e.details.clone();
    if !include_data {
        if let Value::Object(m) = &mut details {
            for k in ["input", "output", "parameters"] {
                m.remove(k);
            }
        }
    }
    let mut v = json!({
        "timestamp": ts(e.ts_ms),
        "type": e.kind,
        "id": e.id,
        "previousEventId": e.previous_id,
    });
    // Events such as ParallelStateStarted carry no details.
    if details.as_object().is_none_or(|m| !m.is_empty()) {
        v[e.field.as_str()] = details;
    }
    v
}

async fn history(
    state: &AppState,
    ctx: &CallContext,
    flows: &Flows,
    body: &Value,
) -> Result<Value, ApiError> {
    let arn = str_field(body, "executionArn")?;
    authorize(state, ctx, "GetExecutionHistory", arn)?;
    execution_for(ctx, flows, arn).await?;
    let limit = page_size(body, 100, 1000)?;
    let reverse = body["reverseOrder"].as_bool().unwrap_or(false);
    let include = body["includeExecutionData"].as_bool().unwrap_or(true);
    let after = decode_token(body)?.and_then(|v| v.as_i64()).unwrap_or(0);
    let mut rows = flows.store.history(arn, after, reverse, limit + 1).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let events: Vec<Value> = rows.iter().map(|e| event_view(e, include)).collect();
    let mut out = json!({"events": events});
    if more {
        if let Some(last) = rows.last() {
            out["nextToken"] = Value::from(encode_token(&json!(last.id)));
        }
    }
    Ok(out)
}

async fn task_answer(
    state: &AppState,
    ctx: &CallContext,
    flows: &Arc<Flows>,
    op: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let token = str_field(body, "taskToken")?;
    if token.is_empty() || token.len() > 2048 {
        return Err(validation("1 validation error detected: Value at 'taskToken' failed to satisfy constraint: Member must have length between 1 and 2048"));
    }
    let (rec, task) = flows.find_token(token).await?;
    authorize(state, ctx, op, &rec.arn)?;
    match op {
        "SendTaskSuccess" => {
            let output = str_field(body, "output")?;
            let value: Value = serde_json::from_str(output).map_err(|e| {
                ApiError::new(
                    "InvalidOutput",
                    format!("Invalid Output: the output is not JSON: {e}"),
                )
            })?;
            answer(flows, &rec.arn, task, Ok(value)).await
        }
        "SendTaskFailure" => {
            let f = Failure::new(
                opt_str(body, "error")?.unwrap_or_default(),
                opt_str(body, "cause")?.unwrap_or_default(),
            );
            answer(flows, &rec.arn, task, Err(f)).await
        }
        _ => {
            let found = std::sync::atomic::AtomicBool::new(false);
            flows
                .apply(&rec.arn, |def, run, now| {
                    found.store(
                        run.heartbeat(task, now),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    run.advance(def, now)
                })
                .await?;
            if !found.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ApiError::new(
                    "TaskTimedOut",
                    "Task Timed Out: the task is no longer waiting",
                ));
            }
            Ok(json!({}))
        }
    }
}

async fn answer(
    flows: &Arc<Flows>,
    arn: &str,
    task: u64,
    result: Result<Value, Failure>,
) -> Result<Value, ApiError> {
    match flows
        .apply(arn, |def, run, now| {
            run.task_done(def, task, result.clone(), now)
        })
        .await?
    {
        Applied::Saved(_) => Ok(json!({})),
        Applied::NotRunning => Err(ApiError::new(
            "TaskTimedOut",
            "Task Timed Out: the execution of this task has ended",
        )),
    }
}

fn validate(body: &Value) -> Result<Value, ApiError> {
    let definition = str_field(body, "definition")?;
    Ok(match Definition::parse(definition) {
        Ok(_) => json!({"result": "OK", "diagnostics": [], "truncated": false}),
        Err(e) => json!({
            "result": "FAIL",
            "diagnostics": [{"severity": "ERROR", "code": e.code, "message": e.message, "location": e.location}],
            "truncated": false,
        }),
    })
}

/// `TestState`: run one state on an input, for real (a Task calls its resource) or with a
/// `mock` result, and say where it would go next.
async fn test_state(
    state: &AppState,
    ctx: &CallContext,
    flows: &Arc<Flows>,
    body: &Value,
) -> Result<Value, ApiError> {
    authorize(state, ctx, "TestState", "*")?;
    let text = str_field(body, "definition")?;
    let def_json: Value = serde_json::from_str(text).map_err(|e| {
        ApiError::new(
            "InvalidDefinition",
            format!("Invalid State Machine Definition: 'INVALID_JSON_DESCRIPTION: {e}'"),
        )
    })?;
    // A state alone, or a whole machine with `stateName`.
    let (name, mut st) = match (def_json.get("States"), opt_str(body, "stateName")?) {
        (Some(states), Some(n)) => (
            n.to_string(),
            states
                .get(n)
                .cloned()
                .ok_or_else(|| validation(format!("The state '{n}' is not in the definition")))?,
        ),
        (Some(_), None) => {
            return Err(validation(
                "stateName is required when the definition is a whole state machine",
            ))
        }
        (None, _) => ("TestState".to_string(), def_json.clone()),
    };
    let Some(obj) = st.as_object_mut() else {
        return Err(ApiError::new(
            "InvalidDefinition",
            "Invalid State Machine Definition: a state must be an object",
        ));
    };
    let retry = obj.remove("Retry");
    let next = obj.get("Next").and_then(Value::as_str).map(String::from);
    let mut targets: Vec<String> = next.iter().cloned().collect();
    for list in ["Catch", "Choices"] {
        if let Some(a) = obj.get(list).and_then(Value::as_array) {
            targets.extend(
                a.iter()
                    .filter_map(|c| c["Next"].as_str().map(String::from)),
            );
        }
    }
    if let Some(d) = obj.get("Default").and_then(Value::as_str) {
        targets.push(d.to_string());
    }
    let mut states = serde_json::Map::new();
    for t in &targets {
        if t != &name {
            states.insert(t.clone(), json!({"Type": "Succeed"}));
        }
    }
    states.insert(name.clone(), st.clone());
    let machine = json!({"StartAt": name, "States": states});
    let def = Definition::from_value(&machine).map_err(|e| {
        ApiError::new(
            "InvalidDefinition",
            format!(
                "Invalid State Machine Definition: '{}: {} at {}'",
                e.code, e.message, e.location
            ),
        )
    })?;
    let input: Value = match opt_str(body, "input")? {
        Some(i) => serde_json::from_str(i).map_err(|e| {
            ApiError::new(
                "InvalidExecutionInput",
                format!("Invalid execution input: {e}"),
            )
        })?,
        None => json!({}),
    };
    let execution_name = uuid::Uuid::new_v4().to_string();
    let info = flows.execution_info(
        &flows.machine_arn("TestState"),
        "TestState",
        &execution_name,
        opt_str(body, "roleArn")?.unwrap_or_default(),
        now_ms(),
    );
    let arn = info.id.clone();
    let principal = crate::jobs::caller_ref(ctx.principal())
        .map_err(|e| ApiError::new("AccessDeniedException", e.message))?;
    let env = super::tasks::TaskEnv {
        arn: arn.clone(),
        owner: owner(ctx),
        meta: Flows::meta(principal, &owner(ctx), None, None),
    };
    let (mut run, mut actions) = Run::start(&def, &info, input.clone(), now_ms());
    let mut events = run.take_events();
    let mut failed_task: Option<Failure> = None;
    for _ in 0..4 {
        let Some(modelgate_flows::Action::Run(call)) = actions.first().cloned() else {
            break;
        };
        let result = match body.get("mock") {
            Some(m) if m.get("result").is_some() => {
                serde_json::from_str(m["result"].as_str().unwrap_or("null")).map_err(|e| {
                    Failure::new("States.Runtime", format!("mock.result is not JSON: {e}"))
                })
            }
            Some(m) if m.get("errorOutput").is_some() => Err(Failure::new(
                m["errorOutput"]["error"].as_str().unwrap_or_default(),
                m["errorOutput"]["cause"].as_str().unwrap_or_default(),
            )),
            _ => match super::tasks::run(flows, &env, &call).await {
                Ok(super::tasks::Outcome::Done(v) | super::tasks::Outcome::Submitted(v)) => Ok(v),
                Ok(super::tasks::Outcome::Pending) => Ok(Value::Null),
                Err(f) => Err(f),
            },
        };
        if let Err(f) = &result {
            failed_task = Some(f.clone());
        }
        actions = run.task_done(&def, call.task, result, now_ms());
        events.extend(run.take_events());
    }
    // Where it went: the first state entered after it.
    let mut next_state = None;
    for e in &events {
        if e.kind.ends_with("StateEntered") && e.details["name"].as_str() != Some(name.as_str()) {
            next_state = e.details["name"].as_str().map(String::from);
            break;
        }
    }
    let mut out = json!({});
    let retriable = failed_task.as_ref().is_some_and(|f| {
        retry.as_ref().and_then(Value::as_array).is_some_and(|rs| {
            rs.iter().any(|r| {
                let names: Vec<String> = r["ErrorEquals"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                f.matches(&names)
            })
        })
    });
    match (&run.error, &failed_task) {
        (_, Some(f)) if retriable => {
            out["status"] = json!("RETRIABLE");
            out["error"] = json!(f.error);
            out["cause"] = json!(f.cause);
        }
        (Some(f), _) => {
            out["status"] = json!("FAILED");
            out["error"] = json!(f.error);
            out["cause"] = json!(f.cause);
        }
        (None, Some(f)) => {
            out["status"] = json!("CAUGHT_ERROR");
            out["error"] = json!(f.error);
            out["cause"] = json!(f.cause);
            out["output"] = json!(run.output.as_ref().map(Value::to_string));
        }
        (None, None) => {
            out["status"] = json!("SUCCEEDED");
            out["output"] = json!(run.output.as_ref().map(Value::to_string));
        }
    }
    if let Some(n) = next_state {
        out["nextState"] = json!(n);
    }
    let mut inspection = json!({"input": input.to_string()});
    for e in &events {
        match e.kind.as_str() {
            "TaskScheduled" => inspection["afterParameters"] = e.details["parameters"].clone(),
            "TaskSucceeded" => inspection["result"] = e.details["output"].clone(),
            _ => {}
        }
    }
    if body["inspectionLevel"]
        .as_str()
        .is_some_and(|l| l != "INFO")
        || body.get("inspectionLevel").is_none()
    {
        out["inspectionData"] = inspection;
    }
    Ok(out)
}
