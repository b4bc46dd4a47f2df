//! Guardrails: Bedrock-compatible content safety, run on the box.
//!
//! - [`def`]: the definitions, in the shapes of botocore's `bedrock` model, and their limits.
//! - [`pii`], [`words`], [`semantic`]: the detectors (patterns with checksums, Aho-Corasick
//!   word lists, MiniLM similarity).
//! - [`engine`]: a guardrail version compiled, and its assessment of texts.
//! - [`layer`]: the pipeline layer that guards prompts and answers, streams included.
//! - [`Guardrails`] (here): the guardrails declared in the config file and those created
//!   through the API (stored in the [`modelgate_store::GuardrailStore`]), their versions,
//!   and which guardrails attach to which calls.

pub mod def;
pub mod engine;
pub mod layer;
pub mod pii;
pub mod semantic;
pub mod words;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelgate_store::{GuardrailRecord, GuardrailStore, StoreError};
use modelgate_types::{Error, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub use def::{GuardrailDef, Source};
pub use engine::{Assessment, Compiled, GuardText, Qualifier, Scope, Verdict};
pub use semantic::{Embed, Semantic, Thresholds};

use crate::context::CallContext;

/// `[guardrails]`: settings, guardrails declared in the file, and attachments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailsConfig {
    /// The embedding model of the topic, prompt-attack, content and grounding checks.
    pub embedding_model: String,
    /// Let a call through when a detector fails (default: refuse it, fail closed).
    pub fail_open: bool,
    /// Synchronous stream guarding: characters checked per window.
    pub stream_window_chars: usize,
    /// Synchronous stream guarding: characters held back after each window, so a value that
    /// crosses a window boundary is seen whole before any of it is released.
    pub stream_overlap_chars: usize,
    /// Let callers add a guardrail with the `x-modelgate-guardrail: id[:version]` header (it
    /// can only add checks, never remove attached ones).
    pub allow_header: bool,
    /// How long a draft stays compiled before it is read again (numbered versions never
    /// change).
    #[serde(with = "humantime_serde")]
    pub draft_ttl: Duration,
    /// The ARN prefix's region and account.
    pub region: String,
    /// The account in ARNs.
    pub account: String,
    /// Similarity thresholds of the semantic checks.
    pub thresholds: Thresholds,
    /// Guardrails declared here (read-only through the API).
    pub define: Vec<DeclaredGuardrail>,
    /// Which guardrails apply to which calls, whatever the caller asks.
    pub attach: Vec<Attachment>,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        Self {
            embedding_model: crate::models::LOCAL_EMBED_MODEL.to_string(),
            fail_open: false,
            stream_window_chars: 48,
            stream_overlap_chars: 64,
            allow_header: true,
            draft_ttl: Duration::from_secs(5),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            thresholds: Thresholds::default(),
            define: Vec::new(),
            attach: Vec::new(),
        }
    }
}

/// `[[guardrails.define]]`: a guardrail in the config file — a definition checked on the box,
/// or a guardrail of AWS's that Modelgate asks through `ApplyGuardrail`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredGuardrail {
    /// Its id (lowercase letters and digits), as callers name it.
    pub id: String,
    /// The definition, in `CreateGuardrail`'s shape (for a remote guardrail: optional, its
    /// name and blocked messages are used when AWS gives none).
    #[serde(default)]
    pub definition: Option<GuardrailDef>,
    /// Delegate to a real Bedrock guardrail.
    #[serde(default)]
    pub remote: Option<RemoteGuardrail>,
}

/// A guardrail of AWS's: `ApplyGuardrail` on a `[[providers]]` entry of type `bedrock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteGuardrail {
    /// The provider (its region, endpoint and credentials).
    pub provider: String,
    /// The guardrail's id or ARN on AWS.
    pub identifier: String,
    /// Its version there.
    #[serde(default = "draft")]
    pub version: String,
}

impl DeclaredGuardrail {
    /// The definition used on the box (a remote guardrail's is a stand-in with its messages).
    fn def(&self) -> GuardrailDef {
        self.definition.clone().unwrap_or_else(|| GuardrailDef {
            name: self.id.clone(),
            blocked_input_messaging: "Sorry, the model cannot answer this request.".into(),
            blocked_outputs_messaging: "Sorry, the model cannot answer this request.".into(),
            ..GuardrailDef::default()
        })
    }
}

/// `[[guardrails.attach]]`: a guardrail applied to every call that matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The guardrail id.
    pub guardrail: String,
    /// `DRAFT` (default) or a version number.
    #[serde(default = "draft")]
    pub version: String,
    /// Model names (as the caller named them; `*` wildcards); empty: any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Routes (`/v1/chat/completions`, `/model/*`); empty: any.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Key ids; empty: any.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Teams; empty: any.
    #[serde(default)]
    pub teams: Vec<String>,
    /// How streams are guarded.
    #[serde(default)]
    pub stream_mode: StreamMode,
}

fn draft() -> String {
    "DRAFT".into()
}

/// How a stream is guarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// Hold each window until it passes: nothing blocked or unmasked ever reaches the client.
    #[default]
    Sync,
    /// Release at once, check behind, stop the stream at the first violation (no masking).
    Async,
}

/// Whether and how much of the assessment goes back to the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceMode {
    /// No trace.
    #[default]
    Disabled,
    /// Detections.
    Enabled,
    /// Every check.
    Full,
}

impl TraceMode {
    /// Parse Converse's `trace` (`enabled`, `disabled`, `enabled_full`) or InvokeModel's
    /// header (`ENABLED`, `DISABLED`, `ENABLED_FULL`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "enabled" => Some(TraceMode::Enabled),
            "disabled" => Some(TraceMode::Disabled),
            "enabled_full" => Some(TraceMode::Full),
            _ => None,
        }
    }
}

/// The guardrail a request asks for (Converse `guardrailConfig`, InvokeModel headers, the
/// `x-modelgate-guardrail` header), and what it says about guarded content.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailRequest {
    /// The guardrail id or ARN.
    pub identifier: String,
    /// `DRAFT` or a number.
    pub version: String,
    /// What goes back to the caller.
    pub trace: TraceMode,
    /// How a stream is guarded.
    pub stream_mode: StreamMode,
    /// With `guardContent` blocks: only those are guarded (with where they are in the
    /// request, and their qualifiers).
    pub selected: Option<Vec<(layer::Location, GuardText)>>,
}

/// One guardrail applied to a call.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The compiled version.
    pub guardrail: Arc<Compiled>,
    /// How streams are guarded.
    pub stream_mode: StreamMode,
    /// What goes back to the caller.
    pub trace: TraceMode,
    /// Only these texts are guarded on input, when set.
    pub selected: Option<Vec<(layer::Location, GuardText)>>,
}

struct Cached {
    compiled: Arc<Compiled>,
    at: Instant,
}

/// The guardrails of the gateway: definitions, versions, compiled forms, attachments.
pub struct Guardrails {
    config: GuardrailsConfig,
    store: Option<Arc<dyn GuardrailStore>>,
    semantic: Mutex<Option<Arc<Semantic>>>,
    cache: Mutex<HashMap<(String, i64), Cached>>,
    remotes: HashMap<String, Arc<engine::Remote>>,
}

impl std::fmt::Debug for Guardrails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrails").finish_non_exhaustive()
    }
}

/// The `ResourceNotFoundException` of an unknown guardrail or version.
fn not_found(identifier: &str, version: Option<&str>) -> Error {
    let what = match version {
        Some(v) => format!("The guardrail '{identifier}' has no version '{v}'."),
        None => format!("The guardrail '{identifier}' does not exist."),
    };
    Error::refusal(ErrorKind::NotFound, what).with_code("ResourceNotFoundException")
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(m) => Error::refusal(
            ErrorKind::Validation,
            format!("A guardrail with this name already exists ({m})."),
        )
        .with_code("ConflictException"),
        other => Error::new(
            ErrorKind::ServiceUnavailable,
            format!("The guardrail store failed: {other}"),
        ),
    }
}

/// Parse a version: `DRAFT` → 0, `1`… → n.
pub fn parse_version(v: &str) -> Result<i64, Error> {
    if v == "DRAFT" {
        return Ok(0);
    }
    match v.parse::<i64>() {
        Ok(n) if (1..=99_999_999).contains(&n) && !v.starts_with('0') => Ok(n),
        _ => Err(Error::validation(format!(
            "1 validation error detected: Value '{v}' at 'guardrailVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: (([1-9][0-9]{{0,7}})|(DRAFT))"
        ))),
    }
}

fn version_name(v: i64) -> String {
    if v == 0 {
        "DRAFT".into()
    } else {
        v.to_string()
    }
}

use crate::keys::rfc3339_ms as iso;

impl Guardrails {
    /// The guardrails of `config`, stored in `store` when there is one. Declared guardrails
    /// are validated here: a bad one stops start-up with a message naming it.
    pub fn new(
        config: GuardrailsConfig,
        store: Option<Arc<dyn GuardrailStore>>,
    ) -> Result<Self, String> {
        for d in &config.define {
            if d.id.is_empty()
                || !d
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return Err(format!(
                    "guardrails.define: id '{}' must be lowercase letters and digits",
                    d.id
                ));
            }
            match (&d.definition, &d.remote) {
                (Some(def), _) => def
                    .validate()
                    .map_err(|e| format!("guardrails.define '{}': {}", d.id, e.message))?,
                (None, Some(_)) => {}
                (None, None) => {
                    return Err(format!(
                        "guardrails.define '{}': give a definition or a remote guardrail",
                        d.id
                    ))
                }
            }
        }
        for a in &config.attach {
            if !config.define.iter().any(|d| d.id == a.guardrail) && store.is_none() {
                return Err(format!(
                    "guardrails.attach: no guardrail '{}' is declared",
                    a.guardrail
                ));
            }
            parse_version(&a.version)
                .map_err(|e| format!("guardrails.attach '{}': {}", a.guardrail, e.message))?;
            if a.stream_mode == StreamMode::Async {
                if let Some(d) = config.define.iter().find(|d| d.id == a.guardrail) {
                    if d.def().masks(Source::Output) {
                        return Err(format!(
                            "guardrails.attach '{}': stream_mode async cannot mask; use sync",
                            a.guardrail
                        ));
                    }
                }
            }
        }
        // Compile the PII patterns now when the file declares guardrails, so the first call does
        // not pay for it; a gateway without any compiles them on first use.
        if !config.define.is_empty() {
            pii::warm();
        }
        Ok(Self {
            config,
            store,
            semantic: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            remotes: HashMap::new(),
        })
    }

    /// Connect the remote guardrails to their Bedrock providers (named in `config`).
    pub fn connect_remotes(mut self, config: &crate::Config) -> Result<Self, String> {
        for d in &self.config.define {
            if let Some(r) = &d.remote {
                let endpoint = crate::upstream::bedrock_endpoint(config, &r.provider)
                    .map_err(|e| format!("guardrails.define '{}': {}", d.id, e.message))?;
                self.remotes.insert(
                    d.id.clone(),
                    Arc::new(engine::Remote {
                        endpoint,
                        identifier: r.identifier.clone(),
                        version: r.version.clone(),
                    }),
                );
            }
        }
        Ok(self)
    }

    /// The settings.
    pub fn config(&self) -> &GuardrailsConfig {
        &self.config
    }

    /// Give the semantic checks their embedding model (once the models have loaded).
    pub fn set_embedder(&self, embed: Arc<dyn Embed>) {
        *crate::registry::lock(&self.semantic) =
            Some(Arc::new(Semantic::new(embed, self.config.thresholds)));
        crate::registry::lock(&self.cache).clear();
    }

    /// Embed with the served model named by `embedding_model` (looked up per call, so the
    /// checks work as soon as the models have loaded).
    pub(crate) fn attach(&self, models: crate::pipeline::Models) {
        if crate::registry::lock(&self.semantic).is_none() {
            self.set_embedder(Arc::new(RegistryEmbed {
                models,
                model: self.config.embedding_model.clone(),
            }));
        }
    }

    fn semantic(&self) -> Option<Arc<Semantic>> {
        crate::registry::lock(&self.semantic).clone()
    }

    /// The ARN of guardrail `id`.
    pub fn arn(&self, id: &str) -> String {
        format!(
            "arn:aws:bedrock:{}:{}:guardrail/{id}",
            self.config.region, self.config.account
        )
    }

    /// The id in an identifier (an id or an ARN).
    pub fn id_of(identifier: &str) -> &str {
        identifier
            .rsplit_once(":guardrail/")
            .map_or(identifier, |(_, id)| id)
    }

    fn declared(&self, id: &str) -> Option<&DeclaredGuardrail> {
        self.config.define.iter().find(|d| d.id == id)
    }

    fn store(&self) -> Result<&Arc<dyn GuardrailStore>, Error> {
        self.store.as_ref().ok_or_else(|| {
            Error::refusal(
                ErrorKind::Validation,
                "Guardrails can only be managed through the API when the gateway has a store.",
            )
        })
    }

    /// A guardrail version, compiled (cached; drafts are read again after `draft_ttl`).
    pub async fn resolve(&self, identifier: &str, version: &str) -> Result<Arc<Compiled>, Error> {
        let id = Self::id_of(identifier);
        let v = parse_version(version)?;
        let key = (id.to_string(), v);
        if let Some(c) = crate::registry::lock(&self.cache).get(&key) {
            if v > 0 || c.at.elapsed() < self.config.draft_ttl {
                return Ok(Arc::clone(&c.compiled));
            }
        }
        let def = if let Some(d) = self.declared(id) {
            // A declared guardrail has its draft and a version 1, both the file's definition.
            if v > 1 {
                return Err(not_found(identifier, Some(version)));
            }
            d.def()
        } else {
            let Some(store) = &self.store else {
                return Err(not_found(identifier, None));
            };
            let record = store.guardrail(id, v).await.map_err(store_error)?;
            let Some(record) = record else {
                let exists = v > 0 && store.guardrail(id, 0).await.map_err(store_error)?.is_some();
                return Err(not_found(identifier, exists.then_some(version)));
            };
            serde_json::from_value(record.body)
                .map_err(|e| Error::internal(format!("stored guardrail {id} is unreadable: {e}")))?
        };
        let mut compiled = Compiled::new(id, &version_name(v), self.arn(id), def, self.semantic())?;
        if let Some(remote) = self.remotes.get(id) {
            compiled = compiled.remote(Arc::clone(remote));
        }
        let compiled = Arc::new(compiled);
        crate::registry::lock(&self.cache).insert(
            key,
            Cached {
                compiled: Arc::clone(&compiled),
                at: Instant::now(),
            },
        );
        Ok(compiled)
    }

    /// The guardrails a call gets: those attached to it by the config, then the one it asks
    /// for (a guardrail named twice applies once).
    pub async fn for_call(
        &self,
        ctx: &CallContext,
        model: &str,
        asked: Option<GuardrailRequest>,
    ) -> Result<Vec<Applied>, Error> {
        let mut out: Vec<Applied> = Vec::new();
        let principal = ctx.principal();
        for a in &self.config.attach {
            let any = |list: &[String], value: Option<&str>| {
                list.is_empty()
                    || value
                        .is_some_and(|v| list.iter().any(|p| crate::policy::wildcard(p, v, false)))
            };
            if any(&a.models, Some(model))
                && any(&a.routes, Some(ctx.route()))
                && any(&a.keys, principal.map(|p| p.id.as_str()))
                && any(&a.teams, principal.and_then(|p| p.team.as_deref()))
            {
                out.push(Applied {
                    guardrail: self.resolve(&a.guardrail, &a.version).await?,
                    stream_mode: a.stream_mode,
                    trace: TraceMode::Disabled,
                    selected: None,
                });
            }
        }
        if let Some(r) = asked {
            let g = self.resolve(&r.identifier, &r.version).await?;
            if r.stream_mode == StreamMode::Async && g.def.masks(Source::Output) {
                return Err(Error::refusal(
                    ErrorKind::Validation,
                    "The guardrail masks sensitive information, which asynchronous stream processing cannot do; use streamProcessingMode sync.",
                ));
            }
            match out
                .iter_mut()
                .find(|x| x.guardrail.id == g.id && x.guardrail.version == g.version)
            {
                Some(existing) => {
                    existing.trace = r.trace;
                    existing.selected = r.selected;
                    existing.stream_mode = r.stream_mode;
                }
                None => out.push(Applied {
                    guardrail: g,
                    stream_mode: r.stream_mode,
                    trace: r.trace,
                    selected: r.selected,
                }),
            }
        }
        Ok(out)
    }

    /// Whether any guardrail is attached by the config (so the layer runs for every call).
    pub fn any_attached(&self) -> bool {
        !self.config.attach.is_empty()
    }

    // ---- The control-plane API (CreateGuardrail & co.) ----

    /// `CreateGuardrail`.
    pub async fn create(&self, def: GuardrailDef) -> Result<Value, Error> {
        def.validate()?;
        let store = self.store()?;
        if self.config.define.iter().any(|d| d.def().name == def.name) {
            return Err(store_error(StoreError::Conflict(def.name.clone())));
        }
        let id: String = (0..12)
            .map(|_| {
                let n = fastrand::u8(0..36);
                char::from_digit(u32::from(n), 36).unwrap_or('0')
            })
            .collect();
        let body = serde_json::to_value(&def).map_err(|e| Error::internal(e.to_string()))?;
        let r = store
            .create_guardrail(&id, &def.name, &body)
            .await
            .map_err(store_error)?;
        Ok(json!({
            "guardrailId": r.id, "guardrailArn": self.arn(&r.id), "version": "DRAFT",
            "createdAt": iso(r.created_ms),
        }))
    }

    fn read_only(&self, id: &str) -> Result<(), Error> {
        if self.declared(id).is_some() {
            return Err(Error::refusal(
                ErrorKind::Validation,
                format!("The guardrail '{id}' is declared in the config file and cannot be changed through the API."),
            )
            .with_code("ConflictException"));
        }
        Ok(())
    }

    /// `UpdateGuardrail` (the draft).
    pub async fn update(&self, identifier: &str, def: GuardrailDef) -> Result<Value, Error> {
        let id = Self::id_of(identifier);
        self.read_only(id)?;
        def.validate()?;
        let body = serde_json::to_value(&def).map_err(|e| Error::internal(e.to_string()))?;
        let r = self
            .store()?
            .update_guardrail(id, &def.name, &body)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(identifier, None))?;
        crate::registry::lock(&self.cache).remove(&(id.to_string(), 0));
        Ok(json!({
            "guardrailId": r.id, "guardrailArn": self.arn(&r.id), "version": "DRAFT",
            "updatedAt": iso(r.updated_ms),
        }))
    }

    /// `CreateGuardrailVersion`.
    pub async fn create_version(
        &self,
        identifier: &str,
        description: Option<String>,
    ) -> Result<Value, Error> {
        let id = Self::id_of(identifier);
        self.read_only(id)?;
        let store = self.store()?;
        let draft = store
            .guardrail(id, 0)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(identifier, None))?;
        let mut body = draft.body;
        if let Some(d) = description {
            if d.is_empty() || d.chars().count() > 200 {
                return Err(Error::validation(
                    "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length between 1 and 200",
                ));
            }
            body["description"] = json!(d);
        }
        if let Some(o) = body.as_object_mut() {
            o.remove("clientRequestToken");
        }
        // Two writers may race for a number: the primary key refuses one, which tries again.
        for _ in 0..5 {
            match store.create_guardrail_version(id, &body).await {
                Ok(Some(r)) => {
                    return Ok(json!({"guardrailId": r.id, "version": r.version.to_string()}))
                }
                Ok(None) => return Err(not_found(identifier, None)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Error::new(
            ErrorKind::Throttling,
            "Too many versions are being created at once; retry.",
        ))
    }

    fn get_json(
        &self,
        id: &str,
        version: &str,
        def: &GuardrailDef,
        created_ms: i64,
        updated_ms: i64,
    ) -> Value {
        let mut out = def.to_get();
        out.insert("guardrailId".into(), json!(id));
        out.insert("guardrailArn".into(), json!(self.arn(id)));
        out.insert("version".into(), json!(version));
        out.insert("status".into(), json!("READY"));
        out.insert("createdAt".into(), json!(iso(created_ms)));
        out.insert("updatedAt".into(), json!(iso(updated_ms)));
        Value::Object(out)
    }

    /// `GetGuardrail` (the draft unless `version` names one).
    pub async fn get(&self, identifier: &str, version: Option<&str>) -> Result<Value, Error> {
        let id = Self::id_of(identifier);
        let v = parse_version(version.unwrap_or("DRAFT"))?;
        if let Some(d) = self.declared(id) {
            if v > 1 {
                return Err(not_found(identifier, version));
            }
            let now = crate::keys::now_ms();
            return Ok(self.get_json(id, &version_name(v), &d.def(), now, now));
        }
        let Some(store) = &self.store else {
            return Err(not_found(identifier, None));
        };
        let Some(r) = store.guardrail(id, v).await.map_err(store_error)? else {
            let exists = v > 0 && store.guardrail(id, 0).await.map_err(store_error)?.is_some();
            return Err(not_found(
                identifier,
                exists.then_some(version.unwrap_or("DRAFT")),
            ));
        };
        let def: GuardrailDef = serde_json::from_value(r.body.clone())
            .map_err(|e| Error::internal(format!("stored guardrail {id} is unreadable: {e}")))?;
        Ok(self.get_json(id, &version_name(v), &def, r.created_ms, r.updated_ms))
    }

    fn summary(&self, r: &GuardrailRecord) -> Value {
        let mut s = json!({
            "id": r.id, "arn": self.arn(&r.id), "status": "READY", "name": r.name,
            "version": version_name(r.version), "createdAt": iso(r.created_ms), "updatedAt": iso(r.updated_ms),
        });
        if let Some(d) = r.body.get("description") {
            s["description"] = d.clone();
        }
        s
    }

    /// `ListGuardrails`: every guardrail's draft, or one guardrail's draft and versions;
    /// paged by `maxResults` (1–1000, default 100) and an opaque `nextToken`.
    pub async fn list(
        &self,
        identifier: Option<&str>,
        max: Option<usize>,
        next: Option<&str>,
    ) -> Result<Value, Error> {
        let paging = crate::paging::Paging::parse(max, next, 100)?;
        let id = identifier.map(Self::id_of);
        let now = crate::keys::now_ms();
        let mut all: Vec<Value> = Vec::new();
        for d in &self.config.define {
            if id.is_none_or(|i| i == d.id) {
                let def = d.def();
                let record = GuardrailRecord {
                    id: d.id.clone(),
                    version: 0,
                    name: def.name.clone(),
                    created_ms: now,
                    updated_ms: now,
                    body: serde_json::to_value(&def).unwrap_or_default(),
                };
                all.push(self.summary(&record));
                if id.is_some() {
                    all.push(self.summary(&GuardrailRecord {
                        version: 1,
                        ..record
                    }));
                }
            }
        }
        if let Some(store) = &self.store {
            all.extend(
                store
                    .list_guardrails(id)
                    .await
                    .map_err(store_error)?
                    .iter()
                    .map(|r| self.summary(r)),
            );
        }
        if let (Some(i), true) = (identifier, all.is_empty()) {
            return Err(not_found(i, None));
        }
        let (page, next) = paging.apply(all);
        let mut out = json!({ "guardrails": page });
        if let Some(t) = next {
            out["nextToken"] = json!(t);
        }
        Ok(out)
    }

    /// `DeleteGuardrail`: one numbered version, or the guardrail with all its versions.
    pub async fn delete(&self, identifier: &str, version: Option<&str>) -> Result<(), Error> {
        let id = Self::id_of(identifier);
        self.read_only(id)?;
        let v = match version {
            Some(v) => {
                let n = parse_version(v)?;
                if n == 0 {
                    return Err(Error::validation(
                        "1 validation error detected: Value 'DRAFT' at 'guardrailVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: [1-9][0-9]{0,7}",
                    ));
                }
                Some(n)
            }
            None => None,
        };
        let deleted = self
            .store()?
            .delete_guardrail(id, v)
            .await
            .map_err(store_error)?;
        if !deleted {
            return Err(not_found(identifier, version));
        }
        crate::registry::lock(&self.cache)
            .retain(|(k, n), _| k != id || v.is_some_and(|v| v != *n));
        Ok(())
    }
}

/// Embeddings from a served model of the registry.
struct RegistryEmbed {
    models: crate::pipeline::Models,
    model: String,
}

#[async_trait::async_trait]
impl Embed for RegistryEmbed {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        let unavailable = |m: String| {
            Error::refusal(ErrorKind::ServiceUnavailable, m)
                .with_code("GuardrailDetectorUnavailable")
        };
        let registry = self.models.get().ok_or_else(|| {
            unavailable("Models are still loading; the guardrail cannot check yet.".into())
        })?;
        let entry = registry.get(&self.model).ok_or_else(|| {
            unavailable(format!(
                "The guardrails' embedding model '{}' is not served.",
                self.model
            ))
        })?;
        let endpoint = entry.pick()?;
        semantic::embed_with(endpoint.provider.as_ref(), &entry.info.id, texts).await
    }
}
