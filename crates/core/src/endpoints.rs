//! Declarative endpoints: an HTTP API in front of the models made from configuration —
//! `[[endpoints]]` in the file (live-reloaded with it). Each names a path and method, a JSON
//! Schema the request body must match (every failing field is reported), how request fields
//! become template variables, the template (inline, or a stored prompt by name and version or
//! label), the model (fixed, or chosen by a request field such as `use_case`), the answer's
//! shape, when a call goes asynchronous (a `202` with a job id), its timeout, rate limit and
//! the canned answers it degrades to when every model fails.
//!
//! This module holds the definitions and the checks that need no server; the HTTP handler is
//! the server's `endpoints` module.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use modelgate_store::{ConfigVersions, StoreError};
use modelgate_types::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::keys::LimitSpec;
use crate::prompts::PromptDef;

/// The built-in apology when an endpoint degrades and names no text for the case.
pub const DEFAULT_APOLOGY: &str =
    "We're sorry, the assistant is unavailable right now. Please try again later.";

/// One `[[endpoints]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// A name (letters, digits, `-`, `_`): in records, metrics and the OpenAPI operation id.
    pub name: String,
    /// The path served (`/generate`, `/ai/summarise`); must not shadow a built-in door.
    pub path: String,
    /// `POST` (default) or `PUT`.
    #[serde(default = "post")]
    pub method: String,
    /// What the endpoint does (in the OpenAPI document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema the request body must match (any draft; 2020-12 when it does not
    /// say). Top-level `default`s fill absent fields before the variables are read.
    #[serde(default = "any_object")]
    pub request_schema: Value,
    /// Template variable → request field (`prompt`, or a JSON pointer such as
    /// `/customer/name`). Without it, every top-level field is a variable of its own name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// An inline template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<InlineTemplate>,
    /// A stored prompt (its name or id) instead of an inline template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The stored prompt's version (`DRAFT` or a number); without it, `prompt_label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_version: Option<String>,
    /// The stored prompt's label (default `published`; an A/B split applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_label: Option<String>,
    /// The model when no choice below applies (and the prompt names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The request field whose value picks the model from `use_case_models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_field: Option<String>,
    /// Field value → model (the seeds' `use_case_models`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub use_case_models: BTreeMap<String, String>,
    /// `default`: `{model_used, response}`; `structured`: the template's response schema is
    /// asked of the model and the parsed JSON is the answer.
    #[serde(default)]
    pub response: ResponseShape,
    /// Requests whose string fields hold more characters than this are run as a job: `202`
    /// with the job id and where to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_over_chars: Option<usize>,
    /// How long a synchronous call may take (default 30 s, the seeds' API Gateway limit).
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// Rate limit of the endpoint (shared by every caller; keys' own limits apply too).
    #[serde(default, skip_serializing_if = "LimitSpec::is_empty")]
    pub rate_limit: LimitSpec,
    /// Field value (of `model_field`) → the answer given when every model fails; `default`
    /// for other values. Without any, a failure is an error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub degradation: BTreeMap<String, String>,
}

fn post() -> String {
    "POST".into()
}

fn any_object() -> Value {
    json!({"type": "object"})
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// An inline template: a system part and the user message, rendered with the variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineTemplate {
    /// The system part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The user message.
    pub user: String,
    /// Output token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The answer's JSON Schema (with `response = "structured"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
}

/// The shape of an endpoint's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseShape {
    /// `{model_used, response}`.
    #[default]
    Default,
    /// The model's JSON, checked against the template's response schema.
    Structured,
}

/// Compile a JSON Schema (checked against its meta-schema first).
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// Every way `instance` fails `schema`, as `path: reason` (the path is a JSON pointer; the
/// body itself is `/`).
pub fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().as_str();
            let path = if path.is_empty() { "/" } else { path };
            format!("{path}: {e}")
        })
        .collect()
}

/// Paths a declarative endpoint may not take: the built-in doors and the gateway's own.
const RESERVED: [&str; 11] = [
    "/v1/",
    "/hooks/",
    "/model/",
    "/admin/",
    "/guardrail",
    "/prompts",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/async-invoke",
];

/// A checked endpoint, ready to serve.
#[derive(Debug)]
pub struct Endpoint {
    /// The definition.
    pub config: EndpointConfig,
    /// The request schema, compiled.
    pub validator: jsonschema::Validator,
    /// The inline template as a prompt definition (not with a stored prompt).
    pub inline: Option<PromptDef>,
    /// The inline template's response schema, compiled.
    answer_validator: Option<jsonschema::Validator>,
}

impl EndpointConfig {
    /// Check the definition; the message names the endpoint and the key.
    pub fn check(&self) -> Result<Endpoint, String> {
        let name = &self.name;
        let key = |k: &str| format!("endpoints '{name}': key `{k}`");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "endpoints: name '{name}' must be letters, digits, '-' and '_'"
            ));
        }
        if !self.path.starts_with('/')
            || self.path.len() < 2
            || self.path.contains(['{', '}', '?', '#', '*', ' '])
        {
            return Err(format!(
                "{}: '{}' must be a fixed path starting with '/'",
                key("path"),
                self.path
            ));
        }
        if RESERVED
            .iter()
            .any(|r| self.path.starts_with(r) || r.trim_end_matches('/') == self.path)
            || self.path == "/"
        {
            return Err(format!(
                "{}: '{}' is a path of the gateway's own API",
                key("path"),
                self.path
            ));
        }
        if !["POST", "PUT"].contains(&self.method.as_str()) {
            return Err(format!("{}: must be POST or PUT", key("method")));
        }
        let validator = compile_schema(&self.request_schema)
            .map_err(|e| format!("{}: {e}", key("request_schema")))?;
        if self.request_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "{}: the body must be a JSON object (type: object)",
                key("request_schema")
            ));
        }
        let inline = match (&self.template, &self.prompt) {
            (Some(t), None) => {
                let def = t.to_prompt(name, self.variable_names())?;
                def.validate()
                    .map_err(|e| format!("{}: {}", key("template"), e.message))?;
                Some(def)
            }
            (None, Some(_)) => {
                if let Some(v) = &self.prompt_version {
                    crate::prompts::parse_version(v, "prompt_version")
                        .map_err(|e| format!("{}: {}", key("prompt_version"), e.message))?;
                }
                None
            }
            _ => {
                return Err(format!(
                    "endpoints '{name}': give exactly one of `template` and `prompt`"
                ))
            }
        };
        if self.model.is_none() && self.use_case_models.is_empty() && self.prompt.is_none() {
            return Err(format!(
                "endpoints '{name}': give `model` (or `use_case_models` with `model_field`)"
            ));
        }
        if !self.use_case_models.is_empty() && self.model_field.is_none() {
            return Err(format!(
                "{}: needs `model_field`, the request field whose value picks the model",
                key("use_case_models")
            ));
        }
        if self.response == ResponseShape::Structured
            && self
                .template
                .as_ref()
                .is_some_and(|t| t.response_schema.is_none())
        {
            return Err(format!(
                "{}: `structured` needs the template's `response_schema`",
                key("response")
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(900) {
            return Err(format!(
                "{}: must be between 1 ms and 15 min",
                key("timeout")
            ));
        }
        if self.async_over_chars == Some(0) {
            return Err(format!("{}: must be more than 0", key("async_over_chars")));
        }
        self.rate_limit
            .check()
            .map_err(|e| format!("{}: {e}", key("rate_limit")))?;
        let answer_validator = self
            .template
            .as_ref()
            .and_then(|t| t.response_schema.as_ref())
            .map(compile_schema)
            .transpose()
            .map_err(|e| format!("{}: {e}", key("template.response_schema")))?;
        Ok(Endpoint {
            config: self.clone(),
            validator,
            inline,
            answer_validator,
        })
    }

    /// The template variables: the mapping's names, or the schema's top-level properties.
    fn variable_names(&self) -> Vec<String> {
        if !self.variables.is_empty() {
            return self.variables.keys().cloned().collect();
        }
        self.request_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl InlineTemplate {
    /// The template as a prompt whose variables take any JSON value (the request schema has
    /// checked them already).
    fn to_prompt(&self, name: &str, variables: Vec<String>) -> Result<PromptDef, String> {
        let mut chat = json!({
            "messages": [{"role": "user", "content": [{"text": self.user}]}],
        });
        if let Some(s) = &self.system {
            chat["system"] = json!([{ "text": s }]);
        }
        let typed: Map<String, Value> = variables
            .iter()
            .map(|v| (v.clone(), json!({"type": "any"})))
            .collect();
        let mut text = Map::new();
        if let Some(m) = self.max_tokens {
            text.insert("maxTokens".into(), json!(m));
        }
        if let Some(t) = self.temperature {
            text.insert("temperature".into(), json!(t));
        }
        let mut def = json!({
            "name": name,
            "variants": [{
                "name": "inline", "templateType": "CHAT",
                "templateConfiguration": {"chat": chat},
                "inferenceConfiguration": {"text": text},
            }],
        });
        def["modelgate"] = json!({ "variables": typed });
        if let Some(schema) = &self.response_schema {
            def["modelgate"]["response_schema"] = schema.clone();
        }
        serde_json::from_value(def).map_err(|e| format!("endpoints '{name}': template: {e}"))
    }
}

impl Endpoint {
    /// Fill the schema's top-level defaults into `body`.
    pub fn with_defaults(&self, body: &mut Value) {
        let (Some(props), Some(obj)) = (
            self.config
                .request_schema
                .get("properties")
                .and_then(Value::as_object),
            body.as_object_mut(),
        ) else {
            return;
        };
        for (k, p) in props {
            if let (false, Some(d)) = (obj.contains_key(k), p.get("default")) {
                obj.insert(k.clone(), d.clone());
            }
        }
    }

    /// Check a request body: a 400 listing every failing field.
    pub fn check_body(&self, body: &Value) -> Result<(), Error> {
        let errors = schema_errors(&self.validator, body);
        if errors.is_empty() {
            return Ok(());
        }
        Err(Error::validation(format!(
            "The request does not match the endpoint's schema: {}",
            errors.join("; ")
        ))
        .with_code("invalid_request_body"))
    }

    /// Check a structured answer against the response schema (`schema`, a stored prompt's;
    /// the inline template's is compiled once): a 424 listing what does not match.
    pub fn check_answer(&self, answer: &Value, schema: Option<&Value>) -> Result<(), Error> {
        let compiled;
        let validator = match (&self.answer_validator, schema) {
            (Some(v), _) => v,
            (None, Some(schema)) => {
                compiled = compile_schema(schema)
                    .map_err(|e| Error::internal(format!("response schema: {e}")))?;
                &compiled
            }
            (None, None) => return Ok(()),
        };
        let errors = schema_errors(validator, answer);
        if errors.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::ModelError,
            format!(
                "The model's answer does not match the response schema: {}",
                errors.join("; ")
            ),
        ))
    }

    /// The template variables a (checked, defaulted) body gives: the mapping's, or each
    /// top-level property of the schema. For an inline template a variable whose field is
    /// absent is `null` (test it with `{% if … %}`).
    pub fn variables(&self, body: &Value) -> Map<String, Value> {
        let fields: Vec<(String, String)> = if self.config.variables.is_empty() {
            self.config
                .variable_names()
                .into_iter()
                .map(|n| (n.clone(), n))
                .collect()
        } else {
            self.config
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut out = Map::new();
        for (var, field) in fields {
            match field_of(body, &field) {
                Some(v) => {
                    out.insert(var, v.clone());
                }
                None if self.inline.is_some() => {
                    out.insert(var, Value::Null);
                }
                None => {}
            }
        }
        out
    }

    /// The value of the field that chooses the model, as text.
    pub fn case_of(&self, body: &Value) -> Option<String> {
        let field = self.config.model_field.as_deref()?;
        match field_of(body, field)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// The model for a call whose choosing field has `case`: the use case's model, else the
    /// default, else (`None`) the prompt's own.
    pub fn model_for(&self, case: Option<&str>) -> Option<String> {
        case.and_then(|c| self.config.use_case_models.get(c))
            .or(self.config.model.as_ref())
            .cloned()
    }

    /// The canned answer for `case` when every model fails; `None` when the endpoint does not
    /// degrade.
    pub fn degradation_for(&self, case: Option<&str>) -> Option<String> {
        let d = &self.config.degradation;
        if d.is_empty() {
            return None;
        }
        Some(
            case.and_then(|c| d.get(c))
                .or_else(|| d.get("default"))
                .cloned()
                .unwrap_or_else(|| DEFAULT_APOLOGY.to_string()),
        )
    }

    /// Whether the body is large enough to run as a job.
    pub fn is_async(&self, body: &Value) -> bool {
        self.config
            .async_over_chars
            .is_some_and(|limit| text_chars(body) > limit)
    }
}

/// A top-level field or a JSON pointer.
fn field_of<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    if field.starts_with('/') {
        body.pointer(field)
    } else {
        body.get(field)
    }
}

/// The characters in every string of a JSON value.
fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(m) => m.values().map(text_chars).sum(),
        _ => 0,
    }
}

/// The versioned-configuration kind the endpoints made through the admin API are stored as
/// (`{"endpoints": [...]}`, every change a new version).
pub const STORED_KIND: &str = "endpoints";

/// What is in force: the file's endpoints and the stored ones (made through the admin API),
/// by path.
#[derive(Debug, Default)]
struct Live {
    by_path: BTreeMap<String, Arc<Endpoint>>,
    file: Vec<EndpointConfig>,
    stored: Vec<EndpointConfig>,
    version: i64,
}

/// The live set of endpoints: the config file's (replaced whole when the file changes) and
/// those made through the admin API (stored as versions, so every replica serves the same and
/// a change can be looked at later).
#[derive(Default)]
pub struct Endpoints {
    live: RwLock<Arc<Live>>,
    store: Option<Arc<dyn ConfigVersions>>,
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

fn store_error(e: StoreError) -> Error {
    Error::new(
        ErrorKind::ServiceUnavailable,
        format!("The endpoint store failed: {e}"),
    )
}

impl Endpoints {
    /// Check a list of definitions into a set; names and paths must be unique.
    pub fn build(configs: &[EndpointConfig]) -> Result<BTreeMap<String, Arc<Endpoint>>, String> {
        let mut out = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for c in configs {
            let e = c.check()?;
            if !names.insert(c.name.clone()) {
                return Err(format!("endpoints: the name '{}' is used twice", c.name));
            }
            if out.insert(c.path.clone(), Arc::new(e)).is_some() {
                return Err(format!("endpoints: the path '{}' is used twice", c.path));
            }
        }
        Ok(out)
    }

    /// The file's endpoints (already checked by the config's validation); with `store`, the
    /// admin API can add more ([`Endpoints::sync`] loads them).
    pub fn new(
        configs: &[EndpointConfig],
        store: Option<Arc<dyn ConfigVersions>>,
    ) -> Result<Self, String> {
        let live = Live {
            by_path: Self::build(configs)?,
            file: configs.to_vec(),
            ..Live::default()
        };
        Ok(Self {
            live: RwLock::new(Arc::new(live)),
            store,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Arc<Live> {
        Arc::clone(
            &self
                .live
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn install(
        &self,
        file: Vec<EndpointConfig>,
        stored: Vec<EndpointConfig>,
        version: i64,
    ) -> Result<usize, String> {
        let all: Vec<EndpointConfig> = file.iter().chain(&stored).cloned().collect();
        let by_path = Self::build(&all)?;
        let n = by_path.len();
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Live {
            by_path,
            file,
            stored,
            version,
        });
        Ok(n)
    }

    /// Replace the file's endpoints (a changed config file); nothing changes when the new
    /// ones are bad or clash with stored ones.
    pub fn replace(&self, configs: &[EndpointConfig]) -> Result<usize, String> {
        let now = self.current();
        self.install(configs.to_vec(), now.stored.clone(), now.version)
    }

    /// The endpoint at `path`.
    pub fn get(&self, path: &str) -> Option<Arc<Endpoint>> {
        self.current().by_path.get(path).cloned()
    }

    /// Every endpoint, by path.
    pub fn all(&self) -> BTreeMap<String, Arc<Endpoint>> {
        self.current().by_path.clone()
    }

    /// Every definition and where it comes from (`file` or `api`), and the stored version.
    pub fn list(&self) -> (Vec<(&'static str, EndpointConfig)>, i64) {
        let now = self.current();
        let out = now
            .file
            .iter()
            .map(|c| ("file", c.clone()))
            .chain(now.stored.iter().map(|c| ("api", c.clone())))
            .collect();
        (out, now.version)
    }

    async fn latest(&self) -> Result<(Vec<EndpointConfig>, i64), Error> {
        let Some(store) = &self.store else {
            return Ok((Vec::new(), 0));
        };
        match store
            .version(STORED_KIND, None)
            .await
            .map_err(store_error)?
        {
            Some(v) => {
                let list = serde_json::from_value::<StoredDoc>(v.body)
                    .map_err(|e| Error::internal(format!("stored endpoints are unreadable: {e}")))?
                    .endpoints;
                Ok((list, v.version))
            }
            None => Ok((Vec::new(), 0)),
        }
    }

    /// Put the latest stored version in force when it is newer than the one in force (another
    /// replica's change). True when something changed.
    pub async fn sync(&self) -> Result<bool, Error> {
        let _one_at_a_time = self.changes.lock().await;
        let (stored, version) = self.latest().await?;
        let now = self.current();
        if version <= now.version {
            return Ok(false);
        }
        self.install(now.file.clone(), stored, version)
            .map_err(|e| Error::validation(format!("stored endpoints version {version}: {e}")))?;
        Ok(true)
    }

    /// Create or replace (by name) an endpoint through the admin API; `None` deletes it.
    /// Checked with the file's and the other stored endpoints before it is stored; an
    /// endpoint of the file cannot be changed this way.
    pub async fn change(
        &self,
        name: &str,
        config: Option<EndpointConfig>,
        author: &str,
    ) -> Result<i64, Error> {
        let Some(store) = &self.store else {
            return Err(Error::validation(
                "Endpoints can only be managed through the API when the gateway has a store.",
            ));
        };
        if let Some(c) = &config {
            if c.name != name {
                return Err(Error::validation(format!(
                    "The body's name '{}' is not the path's '{name}'.",
                    c.name
                )));
            }
            c.check().map_err(Error::validation)?;
        }
        let _one_at_a_time = self.changes.lock().await;
        if self.current().file.iter().any(|c| c.name == name) {
            return Err(Error::refusal(
                ErrorKind::Validation,
                format!("The endpoint '{name}' is declared in the config file; change it there."),
            )
            .with_code("conflict"));
        }
        for _ in 0..5 {
            let (mut stored, version) = self.latest().await?;
            let existed = stored.iter().any(|c| c.name == name);
            stored.retain(|c| c.name != name);
            let note = match &config {
                Some(c) => {
                    stored.push(c.clone());
                    format!("{} {name}", if existed { "replace" } else { "create" })
                }
                None if existed => format!("delete {name}"),
                None => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("No endpoint '{name}' was made through the API."),
                    ))
                }
            };
            let file = self.current().file.clone();
            let all: Vec<EndpointConfig> = file.iter().chain(&stored).cloned().collect();
            Self::build(&all).map_err(Error::validation)?;
            let body = serde_json::to_value(StoredDoc {
                endpoints: stored.clone(),
            })
            .map_err(|e| Error::internal(e.to_string()))?;
            match store
                .append_version(STORED_KIND, author, &note, &body, Some(version))
                .await
            {
                Ok(v) => {
                    self.install(file, stored, v.version)
                        .map_err(Error::validation)?;
                    return Ok(v.version);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Error::new(
            ErrorKind::Throttling,
            "The endpoints are being changed by someone else; retry.",
        ))
    }
}

/// The stored document.
#[derive(Debug, Serialize, Deserialize)]
struct StoredDoc {
    endpoints: Vec<EndpointConfig>,
}

/// The error of an endpoint that took longer than its timeout.
pub fn timed_out(endpoint: &Endpoint) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "The endpoint '{}' did not answer within {}.",
            endpoint.config.name,
            humantime::format_duration(endpoint.config.timeout)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate() -> EndpointConfig {
        toml::from_str(
            r#"
name = "generate"
path = "/generate"
request_schema = { type = "object", required = ["prompt"], additionalProperties = false, properties = { prompt = { type = "string", minLength = 1 }, use_case = { type = "string", default = "general" } } }
variables = { question = "prompt" }
template = { system = "You are a helpful assistant.", user = "{{ question }}" }
model = "m-general"
model_field = "use_case"
use_case_models = { product_question = "m-product" }
degradation = { account_inquiry = "Call 1-800-555-1234." }
async_over_chars = 10000
"#,
        )
        .unwrap()
    }

    #[test]
    fn the_seed_endpoint_checks_maps_and_degrades() {
        let e = generate().check().unwrap();
        let mut body = json!({"prompt": "What is a 401(k)?"});
        e.check_body(&body).unwrap();
        e.with_defaults(&mut body);
        assert_eq!(body["use_case"], "general");
        assert_eq!(e.case_of(&body).as_deref(), Some("general"));
        assert_eq!(e.model_for(Some("general")).as_deref(), Some("m-general"));
        assert_eq!(
            e.model_for(Some("product_question")).as_deref(),
            Some("m-product")
        );
        let vars = e.variables(&body);
        assert_eq!(vars["question"], "What is a 401(k)?");
        let r = e.inline.as_ref().unwrap().render(&vars).unwrap();
        assert_eq!(r.request.messages[0].joined_text(), "What is a 401(k)?");
        assert!(e
            .degradation_for(Some("account_inquiry"))
            .unwrap()
            .contains("1-800-555-1234"));
        assert_eq!(e.degradation_for(Some("other")).unwrap(), DEFAULT_APOLOGY);
        assert!(!e.is_async(&body));
        assert!(e.is_async(&json!({"prompt": "x".repeat(12_000)})));
    }

    #[test]
    fn every_failing_field_is_listed() {
        let e = generate().check().unwrap();
        let err = e
            .check_body(&json!({"prompt": "", "use_case": 3, "extra": true}))
            .unwrap_err();
        let m = err.message;
        assert!(m.contains("/prompt"), "{m}");
        assert!(m.contains("/use_case"), "{m}");
        assert!(m.contains("extra"), "{m}");
    }

    #[test]
    fn bad_definitions_are_refused_with_the_key() {
        let mut c = generate();
        c.template.as_mut().unwrap().user = "{{ question }} {{ missing }}".into();
        assert!(c.check().unwrap_err().contains("'missing'"));
        let mut c = generate();
        c.path = "/v1/chat/completions".into();
        assert!(c.check().unwrap_err().contains("path"));
        let mut c = generate();
        c.request_schema = json!({"type": "object", "properties": {"a": {"type": "nope"}}});
        assert!(c.check().unwrap_err().contains("request_schema"));
        let mut c = generate();
        c.model_field = None;
        assert!(c.check().unwrap_err().contains("model_field"));
        assert!(Endpoints::build(&[generate(), generate()]).is_err());
    }
}
