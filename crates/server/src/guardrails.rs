//! The guardrail operations of the Bedrock APIs: the control plane of the `bedrock` service
//! (`CreateGuardrail`, `GetGuardrail`, `UpdateGuardrail`, `ListGuardrails`, `DeleteGuardrail`,
//! `CreateGuardrailVersion`, so boto3's `bedrock` client works with `endpoint_url`) and the
//! runtime's `ApplyGuardrail`. Errors answer in Bedrock's dialect (`ValidationException`
//! naming the member, `ResourceNotFoundException`, `ConflictException`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use modelgate_core::guardrails::{
    GuardText, GuardrailDef, Guardrails, Qualifier, Scope, Source, Verdict,
};
use modelgate_core::CallContext;
use modelgate_types::{Error, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::errors::BedrockError;

fn respond(result: Result<Response, Error>) -> Response {
    crate::errors::respond::<BedrockError>(result)
}

fn guardrails(state: &AppState) -> Result<&std::sync::Arc<Guardrails>, Error> {
    state.gateway.guardrails().ok_or_else(|| {
        Error::new(
            ErrorKind::ServiceUnavailable,
            "This gateway runs without guardrails.",
        )
    })
}

/// The guardrail API as AWS's (`crate::auth::aws_allowed`), on the guardrail's ARN.
fn allowed(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    id: Option<&str>,
) -> Result<(), Error> {
    let resource = match (id, state.gateway.guardrails()) {
        (Some(id), Some(g)) => g.arn(Guardrails::id_of(id)),
        _ => "*".into(),
    };
    crate::auth::aws_allowed(state, ctx, action, &resource)
}

use crate::bedrock::aws_body as body_of;

fn accepted(v: Value) -> Response {
    (StatusCode::ACCEPTED, Json(v)).into_response()
}

/// `POST /guardrails` (CreateGuardrail).
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:CreateGuardrail", None)?;
            let def: GuardrailDef = body_of(&state, body)?;
            Ok(accepted(guardrails(&state)?.create(def).await?))
        }
        .await,
    )
}

/// `PUT /guardrails/{id}` (UpdateGuardrail).
pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:UpdateGuardrail", Some(&id))?;
            // The body is the definition; the id is in the path.
            let def: GuardrailDef = body_of(&state, body)?;
            if def.tags.is_some() || def.client_request_token.is_some() {
                return Err(Error::validation(
                    "UpdateGuardrail takes neither tags nor clientRequestToken.",
                ));
            }
            Ok(accepted(guardrails(&state)?.update(&id, def).await?))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "clientRequestToken")]
    _client_request_token: Option<String>,
}

/// `POST /guardrails/{id}` (CreateGuardrailVersion).
pub async fn create_version(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:CreateGuardrailVersion", Some(&id))?;
            let b: VersionBody = body_of(&state, body)?;
            Ok(accepted(
                guardrails(&state)?
                    .create_version(&id, b.description)
                    .await?,
            ))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionQuery {
    #[serde(default)]
    guardrail_version: Option<String>,
}

/// `GET /guardrails/{id}` (GetGuardrail).
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:GetGuardrail", Some(&id))?;
            let g = guardrails(&state)?
                .get(&id, q.guardrail_version.as_deref())
                .await?;
            Ok(Json(g).into_response())
        }
        .await,
    )
}

/// `DELETE /guardrails/{id}` (DeleteGuardrail).
pub async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:DeleteGuardrail", Some(&id))?;
            guardrails(&state)?
                .delete(&id, q.guardrail_version.as_deref())
                .await?;
            Ok(accepted(json!({})))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    #[serde(default)]
    guardrail_identifier: Option<String>,
    #[serde(default)]
    max_results: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
}

/// `GET /guardrails` (ListGuardrails).
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(q): Query<ListQuery>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:ListGuardrails", None)?;
            let max = match q.max_results.as_deref() {
                Some(m) => Some(m.parse::<usize>().map_err(|_| {
                    Error::validation(format!("maxResults must be a number (got '{m}')"))
                })?),
                None => None,
            };
            let out = guardrails(&state)?
                .list(
                    q.guardrail_identifier.as_deref(),
                    max,
                    q.next_token.as_deref(),
                )
                .await?;
            Ok(Json(out).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplyBody {
    source: Source,
    content: Vec<ApplyContent>,
    #[serde(default)]
    output_scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplyContent {
    #[serde(default)]
    text: Option<ApplyText>,
    #[serde(default)]
    image: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplyText {
    text: String,
    #[serde(default)]
    qualifiers: Vec<String>,
}

/// `POST /guardrail/{id}/version/{version}/apply` (ApplyGuardrail).
pub async fn apply(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path((id, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            allowed(&state, &ctx, "bedrock:ApplyGuardrail", Some(&id))?;
            let b: ApplyBody = body_of(&state, body)?;
            let scope = match b.output_scope.as_deref() {
                None | Some("INTERVENTIONS") => Scope::Interventions,
                Some("FULL") => Scope::Full,
                Some(other) => {
                    return Err(crate::errors::aws_enum(
                        other,
                        "outputScope",
                        &["INTERVENTIONS", "FULL"],
                    ))
                }
            };
            let mut texts = Vec::new();
            let mut images = 0;
            for (i, c) in b.content.into_iter().enumerate() {
                match (c.text, c.image) {
                    (Some(t), None) => {
                        let mut qualifiers = Vec::new();
                        for q in &t.qualifiers {
                            qualifiers.push(Qualifier::parse(q).ok_or_else(|| {
                                crate::errors::aws_enum(
                                    q,
                                    &format!("content.{}.member.text.qualifiers", i + 1),
                                    &["grounding_source", "query", "guard_content"],
                                )
                            })?);
                        }
                        texts.push(GuardText {
                            text: t.text,
                            qualifiers,
                        });
                    }
                    (None, Some(_)) => images += 1,
                    _ => {
                        return Err(Error::validation(format!(
                            "content.{}: exactly one of text or image",
                            i + 1
                        )))
                    }
                }
            }
            let g = guardrails(&state)?;
            let compiled = g.resolve(&id, &version).await?;
            let a = compiled.assess(&texts, b.source, scope).await?;
            let outputs: Vec<Value> = match a.verdict {
                Verdict::Blocked => vec![json!({"text": a
                    .blocked_text
                    .as_deref()
                    .unwrap_or_else(|| compiled.blocked_message(b.source))})],
                Verdict::Masked => texts
                    .iter()
                    .zip(&a.masked)
                    .filter(|(t, _)| {
                        t.qualifiers.is_empty() || t.qualifiers.contains(&Qualifier::GuardContent)
                    })
                    .map(|(_, m)| json!({"text": m}))
                    .collect(),
                Verdict::Pass => Vec::new(),
            };
            let action = if a.intervened() {
                "GUARDRAIL_INTERVENED"
            } else {
                "NONE"
            };
            let mut coverage =
                json!({"textCharacters": {"guarded": a.chars.0, "total": a.chars.1}});
            if images > 0 {
                // Images are not classified on the box; the coverage says so.
                coverage["images"] = json!({"guarded": 0, "total": images});
            }
            Ok(Json(json!({
                "usage": a.units.json(),
                "action": action,
                "actionReason": a.action_reason(),
                "outputs": outputs,
                "assessments": [a.with_metrics()],
                "guardrailCoverage": coverage,
            }))
            .into_response())
        }
        .await,
    )
}
