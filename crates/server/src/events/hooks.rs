//! Inbound webhooks: `POST /hooks/{name}` checks the sender's signature (`[[hooks]]`), turns
//! the payload into an event on the bus and answers `202` at once; the rules' targets run
//! later as jobs. A delivery the sender repeats (the same delivery id) is recognised and
//! starts nothing a second time. A bad signature gets `401` and nothing is stored.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_core::hooks::{self, HookConfig};
use serde_json::{json, Value};

use crate::app::AppState;

/// A configured receiver and its secret.
#[derive(Clone)]
pub struct Receiver {
    /// Its configuration.
    pub config: HookConfig,
    /// The secret (or token) its senders sign with.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// The receivers `[[hooks]]` describes, with their secrets read from the environment.
pub fn receivers(configs: &[HookConfig]) -> anyhow::Result<Vec<Receiver>> {
    configs
        .iter()
        .map(|c| {
            let secret = std::env::var(&c.secret_env)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("hooks '{}': {} is not set", c.name, c.secret_env)
                })?;
            Ok(Receiver {
                config: c.clone(),
                secret: secret.into_bytes(),
            })
        })
        .collect()
}

struct View<'a>(&'a HeaderMap);

impl hooks::Headers for View<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

/// `POST /hooks/{name}`.
pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(bus) = state.events.as_ref() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "This gateway runs without an event bus.",
        );
    };
    let Some(r) = bus.hooks.iter().find(|r| r.config.name == name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            &format!("No webhook receiver is named '{name}'."),
        );
    };
    let hook = &r.config;
    let now_ms = modelgate_core::keys::now_ms();
    let now = u64::try_from(now_ms / 1000).unwrap_or(0);
    if let Err(why) = hooks::verify(hook, &r.secret, &View(&headers), &body, now) {
        tracing::warn!(hook = %name, reason = why, "webhook refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("Webhook refused: {why}."),
        );
    }
    let delivery = headers
        .get(hook.delivery_header())
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let id = match delivery {
        Some(d) => hooks::event_id(&name, d),
        None => modelgate_events::new_id(),
    };
    match bus.store.event(&id).await {
        Ok(Some(_)) => {
            return (
                StatusCode::ACCEPTED,
                Json(json!({"EventId": id, "duplicate": true})),
            )
                .into_response()
        }
        Ok(None) => {}
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The event store is unavailable: {e}"),
            )
        }
    }
    let detail = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({"payload": other}),
        Err(_) => json!({"payload": String::from_utf8_lossy(&body)}),
    };
    let detail_type = hook
        .detail_type_header
        .as_deref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(&hook.detail_type);
    let entry = modelgate_events::Entry {
        source: Some(hook.source.clone()),
        detail_type: Some(detail_type.to_string()),
        detail: Some(detail.to_string()),
        resources: vec![format!("modelgate:hook/{name}")],
        time_ms: None,
    };
    let site = modelgate_events::Site {
        account: &state.site.account,
        region: &state.site.region,
    };
    let event = match modelgate_events::envelope(&entry, &id, now_ms, &site) {
        Ok(e) => e,
        Err(e) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, &e.message),
    };
    match bus.put(&hook.owner, &hook.bus, &[event], 0).await {
        Ok(_) => (StatusCode::ACCEPTED, Json(json!({"EventId": id}))).into_response(),
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The event could not be put: {e}"),
        ),
    }
}
