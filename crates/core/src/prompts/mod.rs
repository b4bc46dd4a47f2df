//! Governed prompt templates: Bedrock prompt management's resources (`CreatePrompt` & co.,
//! served to boto3's `bedrock-agent` client), a review lifecycle on their numbered versions
//! (submitted → approved → published, or rejected), labels that point at a published version
//! and can split traffic with a second one (A/B), a record of every use, and the comparison
//! of two versions on the prompt's stored example inputs.
//!
//! Versions are immutable once made (`CreatePromptVersion` snapshots the draft); the draft is
//! what an unversioned ARN runs, as on AWS. Labels live in the versioned configuration store
//! (`prompt-labels:<id>`), so every move of a label is kept and can be looked at.

pub mod compare;
mod def;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelgate_store::{
    ConfigVersions, PromptStore, RenderRecord, ReviewRecord, StoreError, VersionedRecord,
};
use modelgate_types::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use def::{
    valid_name, Example, Governance, PromptDef, Rendered, Thresholds, VariableSpec, Variant,
};

use crate::context::PromptUse;
use crate::keys::{now_ms, rfc3339_ms as iso};
use crate::outcome::{Outcome, OutcomeSink};

/// `[prompts]`: how the lifecycle is enforced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsConfig {
    /// A version must be approved (by someone other than who submitted it) before it can be
    /// published.
    pub require_approval: bool,
    /// Publishing runs the comparison of the new version against the published one on the
    /// prompt's examples, and refuses when it fails the prompt's thresholds.
    pub compare_on_publish: bool,
}

impl Default for PromptsConfig {
    fn default() -> Self {
        Self {
            require_approval: true,
            compare_on_publish: true,
        }
    }
}

/// A label: the version it points at and, for an A/B test, a second version and the share of
/// uses it gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The version used.
    pub version: i64,
    /// A second version for an A/B split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

/// The B side of an A/B split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The version.
    pub version: i64,
    /// The share of uses it gets (0–1).
    pub weight: f64,
}

/// A prompt's labels by name.
pub type Labels = BTreeMap<String, Label>;

/// The label publishing moves.
pub const PUBLISHED: &str = "published";

/// The lifecycle states a version can be put in.
const STATES: [&str; 4] = ["submitted", "approved", "rejected", "published"];

/// The prompt service.
pub struct Prompts {
    store: Arc<dyn PromptStore>,
    labels: Arc<dyn ConfigVersions>,
    region: String,
    account: String,
    config: PromptsConfig,
    versions: Mutex<HashMap<(String, i64), Arc<PromptDef>>>,
    /// Names → ids, as last read (calls through an endpoint name their prompt).
    names: Mutex<Option<(Instant, HashMap<String, String>)>>,
    /// Each prompt's labels, as last read (every endpoint call picks a version by label).
    label_cache: Mutex<HashMap<String, (Instant, Labels)>>,
    renders: tokio::sync::mpsc::Sender<RenderRecord>,
}

/// How long calls are served from names and labels as last read: a change made on another
/// replica is seen within this; this replica's own changes at once.
const FRESH: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts").finish_non_exhaustive()
    }
}

/// A parsed prompt identifier: an id, or an ARN with or without a version.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRef {
    /// The prompt id.
    pub id: String,
    /// The version an ARN names.
    pub version: Option<i64>,
}

/// Whether a model id is a prompt ARN (Converse runs the prompt then).
pub fn is_prompt_arn(model_id: &str) -> bool {
    model_id.starts_with("arn:") && model_id.contains(":prompt/")
}

fn id_ok(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Parse `promptIdentifier`: `ID`, `arn:aws:bedrock:REGION:ACCOUNT:prompt/ID` or `…:N`.
pub fn parse_identifier(s: &str) -> Result<PromptRef, Error> {
    let bad = || {
        Error::validation(format!(
            "1 validation error detected: Value '{s}' at 'promptIdentifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ([0-9a-zA-Z]{{10}})|(arn:aws:bedrock:[a-z0-9-]{{1,20}}:[0-9]{{12}}:prompt/[0-9a-zA-Z]{{10}})(?::[0-9]{{1,5}})?"
        ))
    };
    if id_ok(s) {
        return Ok(PromptRef {
            id: s.to_string(),
            version: None,
        });
    }
    let Some((head, tail)) = s.split_once(":prompt/") else {
        return Err(bad());
    };
    let parts: Vec<&str> = head.split(':').collect();
    if parts.len() != 5
        || parts[0] != "arn"
        || !parts[1].starts_with("aws")
        || parts[2] != "bedrock"
        || parts[4].len() != 12
        || !parts[4].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let (id, version) = match tail.split_once(':') {
        Some((id, v)) => {
            if v.is_empty() || v.len() > 5 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (id, Some(v.parse::<i64>().map_err(|_| bad())?))
        }
        None => (tail, None),
    };
    if !id_ok(id) {
        return Err(bad());
    }
    Ok(PromptRef {
        id: id.to_string(),
        version,
    })
}

/// Parse a `Version` (`DRAFT` or a number of up to 5 digits).
pub fn parse_version(v: &str, member: &str) -> Result<i64, Error> {
    if v == "DRAFT" {
        return Ok(0);
    }
    match v.parse::<i64>() {
        Ok(n) if (1..=99_999).contains(&n) && v.len() <= 5 => Ok(n),
        _ => Err(Error::validation(format!(
            "1 validation error detected: Value '{v}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: (DRAFT|[0-9]{{0,4}}[1-9][0-9]{{0,4}})"
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

fn not_found(identifier: &str, version: Option<i64>) -> Error {
    let what = match version {
        Some(v) if v > 0 => format!("The prompt '{identifier}' has no version {v}."),
        _ => format!("The prompt '{identifier}' does not exist."),
    };
    Error::refusal(ErrorKind::NotFound, what).with_code("ResourceNotFoundException")
}

fn conflict(message: String) -> Error {
    Error::refusal(ErrorKind::Validation, message).with_code("ConflictException")
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(m) => {
            conflict(format!("A prompt with this name already exists ({m})."))
        }
        other => Error::new(
            ErrorKind::ServiceUnavailable,
            format!("The prompt store failed: {other}"),
        ),
    }
}

/// Records queued before new ones are dropped.
const QUEUE: usize = 50_000;

/// The caller a context names (`anonymous` on an open gateway).
pub fn caller_of(ctx: &crate::CallContext) -> String {
    ctx.principal()
        .map_or_else(|| "anonymous".to_string(), |p| p.id.clone())
}

impl Prompts {
    /// The service over `store` (versions, reviews, renders) and `labels`; ARNs carry
    /// `region` and `account`. Returns it and its render writer's task.
    pub fn spawn(
        store: Arc<dyn PromptStore>,
        labels: Arc<dyn ConfigVersions>,
        region: &str,
        account: &str,
        config: PromptsConfig,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<RenderRecord>(QUEUE);
        let writer = Arc::clone(&store);
        let task = tokio::spawn(crate::usage::drain_by(rx, 200, move |batch| {
            let store = Arc::clone(&writer);
            async move { store.add_renders(&batch).await }
        }));
        let prompts = Self {
            store,
            labels,
            region: region.to_string(),
            account: account.to_string(),
            config,
            versions: Mutex::new(HashMap::new()),
            names: Mutex::new(None),
            label_cache: Mutex::new(HashMap::new()),
            renders: tx,
        };
        (Arc::new(prompts), task)
    }

    /// The settings.
    pub fn config(&self) -> &PromptsConfig {
        &self.config
    }

    /// The ARN of a prompt, or of one of its versions.
    pub fn arn(&self, id: &str, version: Option<i64>) -> String {
        let base = format!(
            "arn:aws:bedrock:{}:{}:prompt/{id}",
            self.region, self.account
        );
        match version {
            Some(v) if v > 0 => format!("{base}:{v}"),
            _ => base,
        }
    }

    fn body_of(def: &PromptDef) -> Result<Value, Error> {
        serde_json::to_value(def).map_err(|e| Error::internal(e.to_string()))
    }

    fn def_of(r: &VersionedRecord) -> Result<PromptDef, Error> {
        serde_json::from_value(r.body.clone())
            .map_err(|e| Error::internal(format!("stored prompt {} is unreadable: {e}", r.id)))
    }

    /// The response shape of Create/Get/Update/CreateVersion: the definition and its id,
    /// ARN, version and times.
    fn shape(&self, r: &VersionedRecord) -> Result<Value, Error> {
        let def = Self::def_of(r)?;
        let mut out = match serde_json::to_value(&def) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        out.remove("tags");
        out.insert("id".into(), json!(r.id));
        out.insert(
            "arn".into(),
            json!(self.arn(&r.id, Some(r.version).filter(|v| *v > 0))),
        );
        out.insert("version".into(), json!(version_name(r.version)));
        out.insert("createdAt".into(), json!(iso(r.created_ms)));
        out.insert("updatedAt".into(), json!(iso(r.updated_ms)));
        Ok(Value::Object(out))
    }

    // ---- Bedrock prompt management ----

    /// `CreatePrompt` (the draft). Nothing is stored when the definition is refused.
    pub async fn create(&self, def: PromptDef) -> Result<Value, Error> {
        def.validate()?;
        let id: String = (0..10)
            .map(|_| {
                let n = fastrand::u8(0..36);
                char::from_digit(u32::from(n), 36)
                    .unwrap_or('0')
                    .to_ascii_uppercase()
            })
            .collect();
        let r = self
            .store
            .create_prompt(&id, &def.name, &Self::body_of(&def)?)
            .await
            .map_err(store_error)?;
        *crate::registry::lock(&self.names) = None;
        self.shape(&r)
    }

    /// `UpdatePrompt` (the draft; tags are kept).
    pub async fn update(&self, identifier: &str, mut def: PromptDef) -> Result<Value, Error> {
        let at = parse_identifier(identifier)?;
        def.validate()?;
        if def.tags.is_none() {
            if let Some(old) = self.store.prompt(&at.id, 0).await.map_err(store_error)? {
                def.tags = Self::def_of(&old)?.tags;
            }
        }
        let r = self
            .store
            .update_prompt(&at.id, &def.name, &Self::body_of(&def)?)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(identifier, None))?;
        *crate::registry::lock(&self.names) = None;
        self.shape(&r)
    }

    /// `CreatePromptVersion`: the draft, frozen as the next number.
    pub async fn create_version(
        &self,
        identifier: &str,
        description: Option<String>,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<Value, Error> {
        let at = parse_identifier(identifier)?;
        let draft = self
            .store
            .prompt(&at.id, 0)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(identifier, None))?;
        let mut def = Self::def_of(&draft)?;
        if let Some(d) = description {
            if d.is_empty() || d.chars().count() > 200 {
                return Err(Error::validation(
                    "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length between 1 and 200",
                ));
            }
            def.description = Some(d);
        }
        if tags.is_some() {
            def.tags = tags;
        }
        let body = Self::body_of(&def)?;
        // Two writers may race for a number: the primary key refuses one, which tries again.
        for _ in 0..5 {
            match self.store.create_prompt_version(&at.id, &body).await {
                Ok(Some(r)) => return self.shape(&r),
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

    /// `GetPrompt`: the draft, or the version the query or the ARN names.
    pub async fn get(&self, identifier: &str, version: Option<&str>) -> Result<Value, Error> {
        let at = parse_identifier(identifier)?;
        let v = match version {
            Some(v) => parse_version(v, "promptVersion")?,
            None => at.version.unwrap_or(0),
        };
        let r = self
            .store
            .prompt(&at.id, v)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(identifier, Some(v)))?;
        self.shape(&r)
    }

    /// `ListPrompts`: every prompt's draft, or one prompt's draft and versions; paged by
    /// `maxResults` (1–1000, default 10 as on AWS) and an opaque `nextToken`.
    pub async fn list(
        &self,
        identifier: Option<&str>,
        max: Option<usize>,
        next: Option<&str>,
    ) -> Result<Value, Error> {
        let paging = crate::paging::Paging::parse(max, next, 10)?;
        let id = identifier.map(parse_identifier).transpose()?.map(|r| r.id);
        let all = self
            .store
            .list_prompts(id.as_deref())
            .await
            .map_err(store_error)?;
        if let (Some(i), true) = (identifier, all.is_empty()) {
            return Err(not_found(i, None));
        }
        let (page, next) = paging.apply(all);
        let page: Vec<Value> = page
            .iter()
            .map(|r| {
                let mut s = json!({
                    "id": r.id, "name": r.name, "version": version_name(r.version),
                    "arn": self.arn(&r.id, Some(r.version)),
                    "createdAt": iso(r.created_ms), "updatedAt": iso(r.updated_ms),
                });
                if let Some(d) = r.body.get("description") {
                    s["description"] = d.clone();
                }
                s
            })
            .collect();
        let mut out = json!({ "promptSummaries": page });
        if let Some(t) = next {
            out["nextToken"] = json!(t);
        }
        Ok(out)
    }

    /// `DeletePrompt`: one numbered version, or the prompt with every version. A version a
    /// label points at cannot be deleted (move the label first).
    pub async fn delete(&self, identifier: &str, version: Option<&str>) -> Result<Value, Error> {
        let at = parse_identifier(identifier)?;
        let v = match version {
            Some(v) => {
                if v.is_empty() || v.len() > 5 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::validation(format!(
                        "1 validation error detected: Value '{v}' at 'promptVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9]{{1,5}}"
                    )));
                }
                Some(v.parse::<i64>().unwrap_or(0))
            }
            None => None,
        };
        if let Some(n) = v {
            let labels = self.labels(&at.id).await?;
            if let Some((name, _)) = labels
                .iter()
                .find(|(_, l)| l.version == n || l.split.as_ref().is_some_and(|s| s.version == n))
            {
                return Err(conflict(format!(
                    "Version {n} of prompt '{}' is used by label '{name}'; move the label first.",
                    at.id
                )));
            }
        }
        if !self
            .store
            .delete_prompt(&at.id, v)
            .await
            .map_err(store_error)?
        {
            return Err(not_found(identifier, v));
        }
        crate::registry::lock(&self.versions)
            .retain(|(k, n), _| k != &at.id || v.is_some_and(|v| v != *n));
        *crate::registry::lock(&self.names) = None;
        let mut out = json!({ "id": at.id });
        if let Some(n) = v {
            out["version"] = json!(n.to_string());
        }
        Ok(out)
    }

    // ---- Resolving and rendering ----

    /// A prompt version's definition (numbered versions are cached: they never change).
    pub async fn definition(&self, id: &str, version: i64) -> Result<Arc<PromptDef>, Error> {
        let key = (id.to_string(), version);
        if version > 0 {
            if let Some(d) = crate::registry::lock(&self.versions).get(&key) {
                return Ok(Arc::clone(d));
            }
        }
        let r = self
            .store
            .prompt(id, version)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(id, Some(version)))?;
        let def = Arc::new(Self::def_of(&r)?);
        if version > 0 {
            crate::registry::lock(&self.versions).insert(key, Arc::clone(&def));
        }
        Ok(def)
    }

    /// The id of the prompt named `name_or_id` (a name, an id or an ARN).
    pub async fn id_of(&self, name_or_id: &str) -> Result<String, Error> {
        if let Ok(r) = parse_identifier(name_or_id) {
            return Ok(r.id);
        }
        if let Some((at, names)) = &*crate::registry::lock(&self.names) {
            if at.elapsed() < FRESH {
                return names
                    .get(name_or_id)
                    .cloned()
                    .ok_or_else(|| not_found(name_or_id, None));
            }
        }
        let names: HashMap<String, String> = self
            .store
            .list_prompts(None)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|r| (r.name, r.id))
            .collect();
        let id = names.get(name_or_id).cloned();
        *crate::registry::lock(&self.names) = Some((Instant::now(), names));
        id.ok_or_else(|| not_found(name_or_id, None))
    }

    /// A prompt's labels for serving: as last read when that was less than [`FRESH`] ago.
    async fn serving_labels(&self, id: &str) -> Result<BTreeMap<String, Label>, Error> {
        if let Some((at, labels)) = crate::registry::lock(&self.label_cache).get(id) {
            if at.elapsed() < FRESH {
                return Ok(labels.clone());
            }
        }
        let labels = self.labels(id).await?;
        crate::registry::lock(&self.label_cache)
            .insert(id.to_string(), (Instant::now(), labels.clone()));
        Ok(labels)
    }

    /// The version a label points at for one use: the A/B split picks its second version
    /// for its share of uses.
    pub async fn pick(&self, id: &str, label: &str) -> Result<i64, Error> {
        let labels = self.serving_labels(id).await?;
        let l = labels.get(label).ok_or_else(|| {
            Error::refusal(
                ErrorKind::NotFound,
                format!("The prompt '{id}' has no label '{label}' (publish a version first)."),
            )
            .with_code("ResourceNotFoundException")
        })?;
        Ok(match &l.split {
            Some(s) if fastrand::f64() < s.weight => s.version,
            _ => l.version,
        })
    }

    /// Render version `version` of prompt `id` for the call `ctx` (recorded as a use through
    /// `source` when the call ends).
    pub async fn render_for(
        &self,
        ctx: &crate::CallContext,
        id: &str,
        version: i64,
        variables: &Map<String, Value>,
        source: &str,
    ) -> Result<Rendered, Error> {
        let def = self.definition(id, version).await?;
        let rendered = def.render(variables)?;
        ctx.set_prompt_use(PromptUse {
            prompt_id: id.to_string(),
            version,
            source: source.to_string(),
        });
        Ok(rendered)
    }

    /// Record a use that did not go through the pipeline (a render-only call).
    pub fn record_render(&self, record: RenderRecord) {
        if self.renders.try_send(record).is_err() {
            tracing::warn!("prompt render records are queued beyond the limit; one was dropped");
        }
    }

    // ---- Labels ----

    fn labels_kind(id: &str) -> String {
        format!("prompt-labels:{id}")
    }

    /// A prompt's labels.
    pub async fn labels(&self, id: &str) -> Result<BTreeMap<String, Label>, Error> {
        let v = self
            .labels
            .version(&Self::labels_kind(id), None)
            .await
            .map_err(store_error)?;
        match v {
            Some(v) => serde_json::from_value(v.body)
                .map_err(|e| Error::internal(format!("stored labels of {id} are unreadable: {e}"))),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Point `label` at `version` (with an optional A/B split); `None` removes the label.
    pub async fn set_label(
        &self,
        id: &str,
        label: &str,
        value: Option<Label>,
        actor: &str,
    ) -> Result<BTreeMap<String, Label>, Error> {
        if !valid_name(label) {
            return Err(Error::validation(format!(
                "Label '{label}' must match ([0-9a-zA-Z][_-]?){{1,100}}."
            )));
        }
        if let Some(l) = &value {
            for v in std::iter::once(l.version).chain(l.split.as_ref().map(|s| s.version)) {
                if v < 1 {
                    return Err(Error::validation("A label points at a numbered version."));
                }
                self.definition(id, v).await?;
                if label == PUBLISHED && self.state(id, v).await?.as_deref() != Some("published") {
                    return Err(conflict(format!(
                        "Version {v} is not published; the '{PUBLISHED}' label moves by publishing."
                    )));
                }
            }
            if let Some(s) = &l.split {
                if !(0.0..=1.0).contains(&s.weight) {
                    return Err(Error::validation("split.weight must be between 0 and 1."));
                }
            }
        }
        // Read, change, write with the version read as the expected one: two writers never
        // both think theirs follows the same labels.
        for _ in 0..5 {
            let kind = Self::labels_kind(id);
            let current = self
                .labels
                .version(&kind, None)
                .await
                .map_err(store_error)?;
            let (mut labels, expected): (BTreeMap<String, Label>, i64) = match current {
                Some(c) => (
                    serde_json::from_value(c.body).unwrap_or_default(),
                    c.version,
                ),
                None => (BTreeMap::new(), 0),
            };
            let note = match &value {
                Some(l) => {
                    labels.insert(label.to_string(), l.clone());
                    format!("{label} → {}", l.version)
                }
                None => {
                    labels.remove(label);
                    format!("{label} removed")
                }
            };
            let body = serde_json::to_value(&labels).map_err(|e| Error::internal(e.to_string()))?;
            match self
                .labels
                .append_version(&kind, actor, &note, &body, Some(expected))
                .await
            {
                Ok(_) => {
                    crate::registry::lock(&self.label_cache).remove(id);
                    return Ok(labels);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Error::new(
            ErrorKind::Throttling,
            "The labels are being changed by someone else; retry.",
        ))
    }

    // ---- Lifecycle ----

    /// The lifecycle state of a version: its latest review step, `None` when it has none.
    pub async fn state(&self, id: &str, version: i64) -> Result<Option<String>, Error> {
        Ok(self
            .reviews(id)
            .await?
            .into_iter()
            .rev()
            .find(|r| r.version == version)
            .map(|r| r.state))
    }

    /// A prompt's review trail, oldest first.
    pub async fn reviews(&self, id: &str) -> Result<Vec<ReviewRecord>, Error> {
        self.store.reviews(id).await.map_err(store_error)
    }

    /// Move version `version` of prompt `id` into `state` (`submitted`, `approved`,
    /// `rejected`, `published`), enforcing the order and that a reviewer is not the author.
    /// Publishing moves the `published` label. Returns the review step recorded.
    pub async fn transition(
        &self,
        id: &str,
        version: i64,
        state: &str,
        actor: &str,
        note: &str,
    ) -> Result<ReviewRecord, Error> {
        if !STATES.contains(&state) {
            return Err(Error::validation(format!(
                "'{state}' is not a lifecycle step (one of {}).",
                STATES.join(", ")
            )));
        }
        if version < 1 {
            return Err(Error::validation(
                "The draft cannot be reviewed; create a version (CreatePromptVersion) first.",
            ));
        }
        self.definition(id, version).await?;
        let trail = self.reviews(id).await?;
        let mine: Vec<&ReviewRecord> = trail.iter().filter(|r| r.version == version).collect();
        let current = mine.last().map(|r| r.state.as_str());
        let submitter = mine
            .iter()
            .rev()
            .find(|r| r.state == "submitted")
            .map(|r| r.actor.as_str());
        let refuse = |why: String| Err(conflict(why));
        match (state, current) {
            ("submitted", None | Some("rejected")) => {}
            ("approved" | "rejected", Some("submitted")) => {
                if submitter == Some(actor) && actor != "anonymous" {
                    return refuse(format!(
                        "{actor} submitted version {version}; a different reviewer must {}.",
                        if state == "approved" {
                            "approve it"
                        } else {
                            "reject it"
                        }
                    ));
                }
            }
            ("published", Some("approved")) => {}
            ("published", None | Some("submitted")) if !self.config.require_approval => {}
            ("published", Some("published")) => {
                return refuse(format!("Version {version} is already published."))
            }
            (want, now) => {
                return refuse(format!(
                    "Version {version} is {}; it cannot become {want}{}.",
                    now.unwrap_or("not submitted"),
                    if want == "published" && self.config.require_approval {
                        " before it is approved"
                    } else {
                        ""
                    }
                ))
            }
        }
        let record = ReviewRecord {
            prompt_id: id.to_string(),
            version,
            state: state.to_string(),
            actor: actor.to_string(),
            note: note.to_string(),
            ts_ms: now_ms(),
        };
        if state == "published" {
            let keep_split = self
                .labels(id)
                .await?
                .remove(PUBLISHED)
                .and_then(|l| l.split);
            // The review step goes first, so the label check sees the version published.
            self.store.add_review(&record).await.map_err(store_error)?;
            self.set_label(
                id,
                PUBLISHED,
                Some(Label {
                    version,
                    split: keep_split.filter(|s| s.version != version),
                }),
                actor,
            )
            .await?;
            return Ok(record);
        }
        self.store.add_review(&record).await.map_err(store_error)?;
        Ok(record)
    }

    // ---- Audit ----

    /// A prompt's uses since `since_ms`, newest first.
    pub async fn renders(
        &self,
        id: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<RenderRecord>, Error> {
        self.store
            .renders(id, since_ms, limit)
            .await
            .map_err(store_error)
    }

    /// Per-version figures of a prompt's uses since `since_ms` (calls, errors, mean latency,
    /// tokens): what an A/B split compares.
    pub async fn stats(&self, id: &str, since_ms: i64) -> Result<Value, Error> {
        let uses = self.renders(id, since_ms, 100_000).await?;
        #[derive(Default)]
        struct Tally {
            calls: u64,
            errors: u64,
            latency: i64,
            input: i64,
            output: i64,
        }
        let mut by: BTreeMap<i64, Tally> = BTreeMap::new();
        for u in &uses {
            let t = by.entry(u.version).or_default();
            t.calls += 1;
            if u.status >= 400 {
                t.errors += 1;
            }
            t.latency += u.latency_ms;
            t.input += u.input_tokens;
            t.output += u.output_tokens;
        }
        let versions: Vec<Value> = by
            .iter()
            .map(|(v, t)| {
                let n = t.calls.max(1) as f64;
                json!({
                    "version": version_name(*v), "calls": t.calls, "errors": t.errors,
                    "error_rate": t.errors as f64 / n,
                    "mean_latency_ms": t.latency as f64 / n,
                    "mean_input_tokens": t.input as f64 / n,
                    "mean_output_tokens": t.output as f64 / n,
                })
            })
            .collect();
        Ok(json!({ "prompt_id": id, "since_ms": since_ms, "versions": versions }))
    }
}

/// The outcome sink that turns calls rendered from a prompt into render records.
pub struct RenderLog(pub Arc<Prompts>);

impl std::fmt::Debug for RenderLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenderLog")
    }
}

impl OutcomeSink for RenderLog {
    fn record(&self, o: &Outcome) {
        let Some(used) = o.ctx.prompt_use() else {
            return;
        };
        let usage = o.usage.unwrap_or_default();
        self.0.record_render(RenderRecord {
            ts_ms: now_ms(),
            prompt_id: used.prompt_id,
            version: used.version,
            caller: caller_of(&o.ctx),
            request_id: o.ctx.request_id().to_string(),
            source: used.source,
            status: i64::from(o.status),
            latency_ms: i64::try_from(o.duration.as_millis()).unwrap_or(i64::MAX),
            input_tokens: i64::from(usage.input_tokens),
            output_tokens: i64::from(usage.output_tokens),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_parse_as_aws_does() {
        assert_eq!(
            parse_identifier("ABCDE12345").unwrap(),
            PromptRef {
                id: "ABCDE12345".into(),
                version: None
            }
        );
        let r =
            parse_identifier("arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDE12345:3").unwrap();
        assert_eq!((r.id.as_str(), r.version), ("ABCDE12345", Some(3)));
        let r =
            parse_identifier("arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDE12345").unwrap();
        assert_eq!(r.version, None);
        for bad in [
            "short",
            "arn:aws:bedrock:us-east-1:1234:prompt/ABCDE12345",
            "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDE12345:",
            "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDE12345:123456",
            "arn:aws:s3:us-east-1:123456789012:prompt/ABCDE12345",
        ] {
            assert!(parse_identifier(bad).is_err(), "{bad}");
        }
        assert!(is_prompt_arn(
            "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDE12345:1"
        ));
        assert!(!is_prompt_arn("qwen2.5-0.5b-instruct"));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("DRAFT", "v").unwrap(), 0);
        assert_eq!(parse_version("12", "v").unwrap(), 12);
        assert!(parse_version("0", "v").is_err());
        assert!(parse_version("123456", "v").is_err());
    }
}
