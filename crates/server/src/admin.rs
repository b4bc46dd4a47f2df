//! The admin API: keys (`/admin/keys`), teams, usage, the audit log, invocation records and the
//! response cache. Every endpoint is an admin action (`modelgate:CreateKey`, …) decided by the
//! caller's policies — the `admin` role and the bootstrap admin credential may do all of them —
//! and written to the audit log.
//! Errors use the OpenAI error shape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_core::keys::{now_ms, IssuedSecret, KeyError, KeyService, Settings};
use modelgate_core::CallContext;
use modelgate_store::{
    AuditQuery, GroupBy, InvocationQuery, InvocationRecord, KeyRecord, UsageQuery, UsageRow,
};
use modelgate_types::{Error, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::admin_allowed;
use crate::errors::OpenAiError;

type AdminResult = Result<Response, OpenAiError>;

fn keys(state: &AppState) -> Result<&Arc<KeyService>, OpenAiError> {
    state.auth.keys.as_ref().ok_or_else(|| {
        OpenAiError(Error::new(
            ErrorKind::ServiceUnavailable,
            "This gateway runs without a key store.",
        ))
    })
}

fn key_error(e: KeyError) -> OpenAiError {
    OpenAiError(match e {
        KeyError::Invalid(m) => Error::validation(m),
        KeyError::NotFound(id) => {
            Error::new(ErrorKind::NotFound, format!("No key with id '{id}'."))
        }
        KeyError::Store(e) => Error::new(
            ErrorKind::ServiceUnavailable,
            format!("The key store is unavailable: {e}"),
        ),
    })
}

fn allow(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    resource: &str,
) -> Result<(), OpenAiError> {
    admin_allowed(state, ctx, &format!("modelgate:{action}"), resource).map_err(OpenAiError)
}

/// RFC 3339 of Unix ms.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time given as RFC 3339, a date, or Unix milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| format!("'{s}' is not a time (RFC 3339, YYYY-MM-DD or Unix ms)"))
}

/// A key as the admin API shows it: never its secret or hash.
pub fn key_view(k: &KeyRecord) -> Value {
    let status = modelgate_core::keys::status(k, now_ms());
    let mut v = json!({
        "id": k.id,
        "team": k.team,
        "status": status,
        "prefix": format!("{}{}…", modelgate_core::keys::SECRET_PREFIX, k.prefix),
        "access_key_id": k.access_key_id,
        "created_at": rfc3339(k.created_ms),
        "expires_at": k.expires_ms.map(rfc3339),
        "revoked_at": k.revoked_ms.map(rfc3339),
    });
    if let (Some(obj), Some(body)) = (v.as_object_mut(), k.body.as_object()) {
        for (name, value) in body {
            obj.insert(name.clone(), value.clone());
        }
    }
    v
}

/// A key just issued or rotated: its view plus the secrets, shown this once.
fn issued_view(record: &KeyRecord, issued: &IssuedSecret) -> Value {
    let mut v = key_view(record);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("key".into(), json!(issued.key));
        obj.insert("secret_access_key".into(), json!(issued.secret_access_key));
    }
    v
}

/// The body of `POST /admin/keys` and `PATCH /admin/keys/{id}`: the key's settings plus
/// `team`, `expires_in` ("30d") or `expires_at` (RFC 3339; `null` clears).
struct KeyRequest {
    team: Option<String>,
    expires: Option<Option<i64>>,
    settings: Option<Settings>,
}

fn key_request(body: Value) -> Result<KeyRequest, OpenAiError> {
    let bad = |m: String| OpenAiError(Error::validation(m));
    let Value::Object(mut map) = body else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let team = match map.remove("team") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t),
        Some(other) => return Err(bad(format!("team must be a string, not {other}"))),
    };
    let expires = match (map.remove("expires_in"), map.remove("expires_at")) {
        (Some(_), Some(_)) => return Err(bad("give expires_in or expires_at, not both".into())),
        (Some(Value::String(d)), None) => {
            let d = humantime::parse_duration(&d)
                .map_err(|e| bad(format!("expires_in '{d}' is not a duration like 30d: {e}")))?;
            Some(Some(
                now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2),
            ))
        }
        (None, Some(Value::String(t))) => Some(Some(
            parse_time(&t).map_err(|e| bad(format!("expires_at: {e}")))?,
        )),
        (None, Some(Value::Null)) => Some(None),
        (None, None) => None,
        _ => return Err(bad("expires_in and expires_at are strings".into())),
    };
    let settings = if map.is_empty() {
        None
    } else {
        Some(
            Settings::from_json(&Value::Object(map))
                .map_err(|e| bad(format!("invalid key settings: {e}")))?,
        )
    };
    Ok(KeyRequest {
        team,
        expires,
        settings,
    })
}

/// `POST /admin/keys`: create a key; its secrets are in this answer only.
pub async fn create_key(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Json(body): Json<Value>,
) -> AdminResult {
    allow(&state, &ctx, "CreateKey", "arn:modelgate:admin:::key/*")?;
    let req = key_request(body)?;
    let (record, issued) = keys(&state)?
        .create(
            req.team,
            req.settings.unwrap_or_default(),
            req.expires.flatten(),
        )
        .await
        .map_err(key_error)?;
    state.auth.close();
    let v = issued_view(&record, &issued);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Deserialize)]
pub struct ListKeys {
    team: Option<String>,
}

/// `GET /admin/keys[?team=]`
pub async fn list_keys(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(q): Query<ListKeys>,
) -> AdminResult {
    allow(&state, &ctx, "ListKeys", "arn:modelgate:admin:::key/*")?;
    let list = keys(&state)?
        .store()
        .keys(q.team.as_deref())
        .await
        .map_err(|e| key_error(e.into()))?;
    let data: Vec<Value> = list.iter().map(key_view).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// `GET /admin/keys/{id}`
pub async fn get_key(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "GetKey",
        &format!("arn:modelgate:admin:::key/{id}"),
    )?;
    let k = keys(&state)?
        .store()
        .key(&id)
        .await
        .map_err(|e| key_error(e.into()))?
        .ok_or_else(|| key_error(KeyError::NotFound(id)))?;
    Ok(Json(key_view(&k)).into_response())
}

/// `PATCH /admin/keys/{id}`: change expiry or settings.
pub async fn update_key(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "UpdateKey",
        &format!("arn:modelgate:admin:::key/{id}"),
    )?;
    let req = key_request(body)?;
    if req.team.is_some() {
        return Err(OpenAiError(Error::validation(
            "a key's team cannot change; create a key in the other team",
        )));
    }
    let k = keys(&state)?
        .update(&id, req.settings, req.expires)
        .await
        .map_err(key_error)?;
    Ok(Json(key_view(&k)).into_response())
}

/// `POST /admin/keys/{id}/rotate`: a new secret; the old one stops working.
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "RotateKey",
        &format!("arn:modelgate:admin:::key/{id}"),
    )?;
    let (record, issued) = keys(&state)?.rotate(&id).await.map_err(key_error)?;
    let v = issued_view(&record, &issued);
    Ok(Json(v).into_response())
}

/// `POST /admin/keys/{id}/revoke` and `DELETE /admin/keys/{id}`.
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "RevokeKey",
        &format!("arn:modelgate:admin:::key/{id}"),
    )?;
    let k = keys(&state)?.revoke(&id).await.map_err(key_error)?;
    Ok(Json(key_view(&k)).into_response())
}

/// `PUT /admin/teams/{id}`: a team's policies, limits, budgets and tags.
pub async fn put_team(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "PutTeam",
        &format!("arn:modelgate:admin:::team/{id}"),
    )?;
    let settings = Settings::from_json(&body)
        .map_err(|e| OpenAiError(Error::validation(format!("invalid team settings: {e}"))))?;
    keys(&state)?
        .put_team(&id, &settings)
        .await
        .map_err(key_error)?;
    Ok(Json(json!({"id": id, "settings": settings})).into_response())
}

/// `GET /admin/teams`
pub async fn list_teams(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
) -> AdminResult {
    allow(&state, &ctx, "ListTeams", "arn:modelgate:admin:::team/*")?;
    let teams = keys(&state)?
        .store()
        .teams()
        .await
        .map_err(|e| key_error(e.into()))?;
    let data: Vec<Value> = teams
        .iter()
        .map(|t| json!({"id": t.id, "updated_at": rfc3339(t.updated_ms), "settings": t.body}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

#[derive(Deserialize)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    team: Option<String>,
    key: Option<String>,
}

/// Parse usage parameters into a query: the range defaults to this UTC month so far.
pub fn usage_query(p: &UsageParams) -> Result<UsageQuery, String> {
    let now = now_ms();
    let from = match &p.from {
        Some(f) => parse_time(f)?,
        None => modelgate_core::keys::Period::Month.window(now).0,
    };
    let to = match &p.to {
        Some(t) => parse_time(t)?,
        None => now + 1,
    };
    let mut group_by = Vec::new();
    for g in p
        .group_by
        .iter()
        .flat_map(|g| g.split(','))
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        group_by.push(match g {
            "team" => GroupBy::Team,
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "day" => GroupBy::Day,
            other => {
                return Err(format!(
                    "group_by '{other}' is not one of team, key, model, day"
                ))
            }
        });
    }
    Ok(UsageQuery {
        from_ms: from,
        to_ms: to,
        group_by,
        team: p.team.clone(),
        key_id: p.key.clone(),
    })
}

impl UsageParams {
    /// Parameters from the command line.
    pub fn new(
        from: Option<String>,
        to: Option<String>,
        group_by: Option<String>,
        team: Option<String>,
        key: Option<String>,
    ) -> Self {
        Self {
            from,
            to,
            group_by,
            team,
            key,
        }
    }
}

/// One row as the API shows it: `day` as a date, cost in dollars.
pub fn usage_row_view(r: &UsageRow) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        if let Some(day) = r.day {
            obj.insert(
                "day".into(),
                json!(rfc3339(day * 86_400_000)[..10].to_string()),
            );
        }
        obj.insert("cost_usd".into(), json!(r.cost_nanos as f64 / 1e9));
    }
    v
}

/// `GET /admin/usage?from=&to=&group_by=team,key,model,day&team=&key=`
pub async fn usage(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<UsageParams>,
) -> AdminResult {
    allow(&state, &ctx, "GetUsage", "arn:modelgate:admin:::usage")?;
    let q = usage_query(&p).map_err(|e| OpenAiError(Error::validation(e)))?;
    let store = state.usage.as_ref().ok_or_else(|| {
        OpenAiError(Error::new(
            ErrorKind::ServiceUnavailable,
            "This gateway records no usage.",
        ))
    })?;
    let rows = store
        .usage_summary(&q)
        .await
        .map_err(|e| key_error(e.into()))?;
    let total = store
        .usage_summary(&UsageQuery {
            group_by: Vec::new(),
            ..q.clone()
        })
        .await
        .map_err(|e| key_error(e.into()))?;
    let groups: Vec<&str> = q
        .group_by
        .iter()
        .map(|g| match g {
            GroupBy::Team => "team",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        })
        .collect();
    Ok(Json(json!({
        "from": rfc3339(q.from_ms),
        "to": rfc3339(q.to_ms),
        "group_by": groups,
        "rows": rows.iter().map(usage_row_view).collect::<Vec<_>>(),
        "total": total.first().map(usage_row_view),
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    actor: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/audit?from=&to=&actor=&limit=`: newest first.
pub async fn audit(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<AuditParams>,
) -> AdminResult {
    allow(&state, &ctx, "GetAudit", "arn:modelgate:admin:::audit")?;
    let bad = |e: String| OpenAiError(Error::validation(e));
    let from = p
        .from
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(bad)?
        .unwrap_or(0);
    let to =
        p.to.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(bad)?
            .unwrap_or(now_ms() + 1);
    let store = state.audit_store.as_ref().ok_or_else(|| {
        OpenAiError(Error::new(
            ErrorKind::ServiceUnavailable,
            "This gateway keeps no audit log.",
        ))
    })?;
    let events = store
        .audit(&AuditQuery {
            from_ms: from,
            to_ms: to,
            actor: p.actor,
            limit: p.limit.unwrap_or(100).clamp(1, 10_000),
        })
        .await
        .map_err(|e| key_error(e.into()))?;
    let data: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("time".into(), json!(rfc3339(e.ts_ms)));
            }
            v
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// Filters of `GET /admin/invocations` (query parameters) and `modelgate logs` (flags).
#[derive(Debug, Default, Deserialize, clap::Args)]
pub struct InvocationParams {
    /// From (RFC 3339, YYYY-MM-DD or Unix ms).
    #[arg(long)]
    pub from: Option<String>,
    /// To (exclusive; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only this team.
    #[arg(long)]
    pub team: Option<String>,
    /// Only calls that asked for, were routed to or were served by this model.
    #[arg(long)]
    pub model: Option<String>,
    /// A status (429), a class (5xx), a range (400-499), `ok` or `error`.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this error category (validation, auth, throttled, timeout, upstream, …).
    #[arg(long)]
    pub error: Option<String>,
    /// Only calls slower than this many milliseconds.
    #[arg(long)]
    pub min_latency_ms: Option<f64>,
    /// Only this request.
    #[arg(long)]
    pub request_id: Option<String>,
    /// The `next_cursor` of the previous page.
    #[arg(skip)]
    pub cursor: Option<String>,
    /// Records after this id, oldest first (following new records).
    #[arg(skip)]
    pub after: Option<i64>,
    /// How many (the newest); default 100 in the API, 50 on the command line; at most 1000.
    #[arg(long, short = 'n')]
    pub limit: Option<i64>,
}

/// A status filter as an inclusive range.
fn status_range(s: &str) -> Result<(i64, i64), String> {
    let s = s.trim().to_ascii_lowercase();
    let bad =
        || format!("status '{s}' is not a status, a class (4xx), a range (400-499), ok or error");
    match s.as_str() {
        "ok" => return Ok((100, 399)),
        "error" => return Ok((400, 599)),
        _ => {}
    }
    if let Some(class) = s.strip_suffix("xx") {
        let c: i64 = class.parse().map_err(|_| bad())?;
        return if (1..=5).contains(&c) {
            Ok((c * 100, c * 100 + 99))
        } else {
            Err(bad())
        };
    }
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (i64, i64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return if a <= b { Ok((a, b)) } else { Err(bad()) };
    }
    let code: i64 = s.parse().map_err(|_| bad())?;
    Ok((code, code))
}

/// Parse invocation filters into a query (default range: everything kept).
pub fn invocation_query(p: &InvocationParams) -> Result<InvocationQuery, String> {
    let time = |t: &Option<String>| t.as_deref().map(parse_time).transpose();
    let before_id = match &p.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| format!("cursor '{c}' is not a cursor this API returned"))?,
        ),
        None => None,
    };
    if let Some(ms) = p.min_latency_ms {
        if !(ms.is_finite() && ms >= 0.0) {
            return Err("min_latency_ms must be a number of milliseconds, 0 or more".into());
        }
    }
    Ok(InvocationQuery {
        from_ms: time(&p.from)?.unwrap_or(0),
        to_ms: time(&p.to)?.unwrap_or(i64::MAX),
        key_id: p.key.clone(),
        team: p.team.clone(),
        model: p.model.clone(),
        status: p
            .status
            .as_deref()
            .map(status_range)
            .transpose()?
            .unwrap_or((0, 999)),
        error_category: p.error.clone(),
        request_id: p.request_id.clone(),
        min_latency_us: p.min_latency_ms.map_or(0, |ms| (ms * 1000.0) as i64),
        before_id,
        after_id: p.after,
        limit: p.limit.unwrap_or(100).clamp(1, 1000),
    })
}

/// A record as the API shows it: times as RFC 3339 and milliseconds, cost in dollars, bodies
/// as JSON.
pub fn invocation_view(r: &InvocationRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("time".into(), json!(rfc3339(r.ts_ms)));
        obj.insert("latency_ms".into(), json!(r.latency_us as f64 / 1000.0));
        obj.insert(
            "ttft_ms".into(),
            json!(r.ttft_us.map(|t| t as f64 / 1000.0)),
        );
        obj.insert("cost_usd".into(), json!(r.cost_nanos as f64 / 1e9));
        for field in ["request_body", "response_body"] {
            if let Some(Value::String(text)) = obj.get(field) {
                let parsed = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
                obj.insert(field.into(), parsed);
            }
        }
    }
    v
}

/// 503 for an admin call about something this gateway runs without.
fn unavailable(what: &str) -> OpenAiError {
    OpenAiError(Error::new(ErrorKind::ServiceUnavailable, what))
}

fn invocation_store(
    state: &AppState,
) -> Result<&Arc<dyn modelgate_store::InvocationStore>, OpenAiError> {
    (state.invocations.as_ref())
        .ok_or_else(|| unavailable("This gateway keeps no invocation records."))
}

/// `GET /admin/invocations?from=&to=&key=&team=&model=&status=&error=&min_latency_ms=&cursor=&limit=`:
/// newest first, one page; `next_cursor` fetches the next (older) one. With `after=<id>`,
/// the records after it, oldest first (following).
pub async fn invocations(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<InvocationParams>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "ListInvocations",
        "arn:modelgate:admin:::invocation/*",
    )?;
    let q = invocation_query(&p).map_err(|e| OpenAiError(Error::validation(e)))?;
    let records = invocation_store(&state)?
        .invocations(&q)
        .await
        .map_err(|e| key_error(e.into()))?;
    let full = i64::try_from(records.len()).unwrap_or(i64::MAX) >= q.limit;
    let next = (q.after_id.is_none() && full)
        .then(|| records.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({
        "object": "list",
        "data": records.iter().map(invocation_view).collect::<Vec<_>>(),
        "has_more": next.is_some(),
        "next_cursor": next,
    }))
    .into_response())
}

/// `GET /admin/invocations/{request_id}`: the record of one call, by the `x-request-id` its
/// answer carried.
pub async fn invocation(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(request_id): Path<String>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "GetInvocation",
        &format!("arn:modelgate:admin:::invocation/{request_id}"),
    )?;
    let records = invocation_store(&state)?
        .invocations(&InvocationQuery {
            request_id: Some(request_id.clone()),
            limit: 1,
            ..InvocationQuery::default()
        })
        .await
        .map_err(|e| key_error(e.into()))?;
    match records.first() {
        Some(r) => Ok(Json(invocation_view(r)).into_response()),
        None => Err(OpenAiError(Error::new(
            ErrorKind::NotFound,
            format!("No invocation record for request '{request_id}' (it may not be written yet, or be past retention)."),
        ))),
    }
}

/// Which cache entries an admin call is about: `namespace`, `model` (configured id), `scope`
/// (`team:<id>`, `key:<id>`, `anonymous`, `global`), `key` (the request hash of
/// `x-modelgate-cache-key`); `limit` for listing; `all=true` to flush everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheParams {
    namespace: Option<String>,
    model: Option<String>,
    scope: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    all: bool,
}

impl CacheParams {
    fn filter(&self) -> Result<modelgate_store::CacheFilter, OpenAiError> {
        let hash = self
            .key
            .as_deref()
            .map(|k| {
                (k.len() == 32)
                    .then(|| u128::from_str_radix(k, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        OpenAiError(Error::validation(
                            "key must be the 32 hex digits of an x-modelgate-cache-key header",
                        ))
                    })
            })
            .transpose()?;
        Ok(modelgate_store::CacheFilter {
            namespace: self.namespace.clone(),
            model: self.model.clone(),
            scope: self.scope.clone(),
            hash,
        })
    }
}

fn response_cache(
    state: &AppState,
) -> Result<&Arc<modelgate_core::cache::ResponseCache>, OpenAiError> {
    (state.gateway.response_cache())
        .ok_or_else(|| unavailable("This gateway runs without a response cache."))
}

/// `GET /admin/cache?namespace=&model=&scope=&key=&limit=`: the stored entries (never their
/// content): key, bytes, expiry.
pub async fn cache_entries(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<CacheParams>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "ListCacheEntries",
        "arn:modelgate:admin:::cache/*",
    )?;
    let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
    let entries = response_cache(&state)?
        .entries(&p.filter()?, limit)
        .await
        .map_err(OpenAiError)?;
    let data: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "namespace": e.key.namespace,
                "model": e.key.model,
                "scope": e.key.scope,
                "key": format!("{:032x}", e.key.hash),
                "bytes": e.bytes,
                "expires_at": rfc3339(e.expires_at_ms),
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// `DELETE /admin/cache?namespace=&model=&scope=&key=` (at least one, or `all=true` to flush
/// everything): drop the matching entries; answers how many.
pub async fn invalidate_cache(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<CacheParams>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "InvalidateCache",
        "arn:modelgate:admin:::cache/*",
    )?;
    let filter = p.filter()?;
    if filter == modelgate_store::CacheFilter::default() && !p.all {
        return Err(OpenAiError(Error::validation(
            "name what to invalidate (namespace, model, scope or key), or flush everything with all=true",
        )));
    }
    let removed = response_cache(&state)?
        .invalidate(&filter)
        .await
        .map_err(OpenAiError)?;
    Ok(Json(json!({"removed": removed})).into_response())
}

fn routing(state: &AppState) -> Result<&Arc<modelgate_core::routing::Routing>, OpenAiError> {
    (state.gateway.routing()).ok_or_else(|| unavailable("This gateway runs without routing."))
}

/// Who made a routing change: the caller's key id, JWT subject or `admin`.
fn author(ctx: &CallContext) -> String {
    ctx.principal()
        .map_or("admin", |p| p.id.as_str())
        .to_string()
}

fn change_error(e: modelgate_core::routing::ChangeError) -> OpenAiError {
    use modelgate_core::routing::ChangeError;
    OpenAiError(match e {
        ChangeError::Invalid(m) => {
            Error::validation(format!("The routing change was refused: {m}"))
                .with_code("invalid_routing")
        }
        ChangeError::NotFound(v) => Error::new(
            ErrorKind::NotFound,
            format!("Routing version {v} does not exist."),
        ),
        ChangeError::Conflict(m) => Error::new(
            ErrorKind::Validation,
            format!("Another routing change landed first: {m}. Read the routing again and retry."),
        )
        .with_code("version_conflict"),
        ChangeError::Store(m) => Error::new(ErrorKind::ServiceUnavailable, m),
    })
}

fn version_json(v: &modelgate_store::ConfigVersion) -> Value {
    json!({
        "version": v.version,
        "created_at": rfc3339(v.ts_ms),
        "author": v.author,
        "note": v.note,
        "routing": v.body,
    })
}

/// `GET /admin/routing`: the version in force, its share of traffic while rolled out, the
/// version serving the rest, and the routers.
pub async fn routing_status(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
) -> AdminResult {
    allow(&state, &ctx, "GetRouting", "arn:modelgate:admin:::routing")?;
    Ok(Json(json!(routing(&state)?.status())).into_response())
}

/// A change to the routing: the document (`routers`, optional `rollout_percent`), why, and
/// (optionally) the version it applies on top of.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingChange {
    #[serde(default)]
    routers: Vec<modelgate_core::routing::RouterConfig>,
    #[serde(default)]
    rollout_percent: Option<f64>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    expected_version: Option<i64>,
}

/// `PUT /admin/routing`: validate and put a new routing version in force (all of it at once;
/// with `rollout_percent`, for that share of traffic). An invalid document is refused with a
/// message naming the field, and the routing in force keeps serving.
pub async fn change_routing(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Json(body): Json<Value>,
) -> AdminResult {
    allow(&state, &ctx, "PutRouting", "arn:modelgate:admin:::routing")?;
    let change: RoutingChange = serde_json::from_value(body).map_err(|e| {
        OpenAiError(
            Error::validation(format!("The routing change was refused: {e}"))
                .with_code("invalid_routing"),
        )
    })?;
    let doc = modelgate_core::routing::RoutingDoc {
        routers: change.routers,
        rollout_percent: change.rollout_percent,
    };
    let author = author(&ctx);
    let v = routing(&state)?
        .change(
            doc,
            &author,
            change.note.as_deref().unwrap_or(""),
            change.expected_version,
        )
        .await
        .map_err(change_error)?;
    Ok(Json(version_json(&v)).into_response())
}

/// `?limit=`
#[derive(Debug, Deserialize)]
pub struct VersionsParams {
    limit: Option<u32>,
}

/// `GET /admin/routing/versions?limit=`: stored versions, newest first, with who stored each
/// and why.
pub async fn routing_versions(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<VersionsParams>,
) -> AdminResult {
    allow(
        &state,
        &ctx,
        "ListRoutingVersions",
        "arn:modelgate:admin:::routing",
    )?;
    let versions = routing(&state)?
        .versions(p.limit.unwrap_or(50).clamp(1, 1000))
        .await
        .map_err(change_error)?;
    let data: Vec<Value> = versions.iter().map(version_json).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// `{"version": N}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    version: i64,
}

/// `POST /admin/routing/rollback {"version": N}`: put version N back in force (stored as a new
/// version, so the history stays whole).
pub async fn rollback_routing(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Json(body): Json<Value>,
) -> AdminResult {
    allow(&state, &ctx, "PutRouting", "arn:modelgate:admin:::routing")?;
    let body: RollbackBody = serde_json::from_value(body)
        .map_err(|e| OpenAiError(Error::validation(format!("invalid rollback: {e}"))))?;
    let author = author(&ctx);
    let v = routing(&state)?
        .rollback(body.version, &author)
        .await
        .map_err(change_error)?;
    Ok(Json(version_json(&v)).into_response())
}

/// `{"percent": P}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    percent: f64,
}

/// `POST /admin/routing/rollout {"percent": P}`: give the version in force P% of traffic (100
/// completes the rollout).
pub async fn rollout_routing(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Json(body): Json<Value>,
) -> AdminResult {
    allow(&state, &ctx, "PutRouting", "arn:modelgate:admin:::routing")?;
    let body: RolloutBody = serde_json::from_value(body)
        .map_err(|e| OpenAiError(Error::validation(format!("invalid rollout: {e}"))))?;
    let author = author(&ctx);
    let v = routing(&state)?
        .rollout(body.percent, &author)
        .await
        .map_err(change_error)?;
    Ok(Json(version_json(&v)).into_response())
}

/// `GET /admin/routing/stats`: every served model's live figures (peak-EWMA and p95 latency,
/// error rate, calls in flight) as the metric-based strategies see them.
pub async fn routing_stats(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
) -> AdminResult {
    allow(&state, &ctx, "GetRouting", "arn:modelgate:admin:::routing")?;
    Ok(Json(json!({"models": routing(&state)?.model_stats()})).into_response())
}
