//! Routing: virtual models (a name clients use → a policy over real models), changed while
//! traffic flows.
//!
//! A router is checked in this order: its rules (route, key or team, header, query,
//! metadata, estimated input tokens, language, images, tools, keywords, regex — the first
//! rule whose conditions all hold decides), then its strategy (`first`, `weighted` with
//! optional stickiness, `least_latency`, `least_busy`, `cheapest`, `classifier`, `cascade`).
//! The decision (router, version, rule, strategy, model, arm, tier) goes into the call's
//! outcome, the invocation record, the metrics and the `x-modelgate-route` header.
//!
//! Live changes: every routing document is validated before it applies and is swapped in
//! whole (one `Arc` behind a lock, so a request sees one version from start to end); every
//! applied document is a numbered version in the store ([`ConfigVersions`]), with who stored
//! it and why; a rollback stores an old body again; a version can take a percentage of
//! traffic while it is rolled out, the rest staying on the last full version.

mod cascade;
mod classify;
pub mod config;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use async_trait::async_trait;
use modelgate_store::{ConfigVersion, ConfigVersions, StoreError};
use modelgate_types::{ContentBlock, Error, ErrorKind, Role, Usage};
use serde::Serialize;
use tokio::time::Instant;

pub use config::{
    CascadeConfig, ClassifierConfig, RouterConfig, RoutingDoc, RoutingSettings, Rule, Sticky,
    Strategy, Target, TierConfig, Validator,
};

use crate::pipeline::{Answer, Call, Layer, Models, Next};
use crate::registry::{lock, Registry};
use crate::usage::PriceCatalog;

/// The kind under which routing versions are stored.
pub const KIND: &str = "routing";

/// How one call was routed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutingDecision {
    /// The virtual model.
    pub router: String,
    /// The routing version that decided.
    pub version: i64,
    /// The strategy, or `rule` when a rule decided.
    pub strategy: &'static str,
    /// The rule that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The model chosen (for a cascade: the one that answered).
    pub model: String,
    /// The arm of a weighted split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The classifier's tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The classifier's similarity to the tier's centroid, or the cascade's last confidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Time the decision took (the classifier's embedding, mostly), milliseconds.
    pub decide_ms: f64,
    /// A cascade's steps, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cascade: Vec<CascadeStep>,
    /// Model calls the routing made itself (the classifier's embedding, rejected cascade
    /// answers, a judge): each is charged as its own usage record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub side_calls: Vec<SideCall>,
}

/// One model a cascade tried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CascadeStep {
    /// The model.
    pub model: String,
    /// The answer's confidence (0–1), when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Whether its answer was returned.
    pub accepted: bool,
    /// Why it was not (`low_confidence`, `error: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A model call made by the routing itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideCall {
    /// `classifier`, `cascade` or `judge`.
    pub purpose: &'static str,
    /// The model called.
    pub model: String,
    /// Its usage.
    pub usage: Usage,
}

impl RoutingDecision {
    /// The `x-modelgate-route` header value.
    pub fn header(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!(
            "router={}; version={}; strategy={}; model={}",
            self.router, self.version, self.strategy, self.model
        );
        if let Some(r) = &self.rule {
            let _ = write!(s, "; rule={r}");
        }
        if let Some(a) = &self.arm {
            let _ = write!(s, "; arm={a}");
        }
        if let Some(t) = &self.tier {
            let _ = write!(s, "; tier={t}");
        }
        if let Some(x) = self.score {
            let _ = write!(s, "; score={x:.3}");
        }
        if !self.cascade.is_empty() {
            let steps: Vec<&str> = self.cascade.iter().map(|c| c.model.as_str()).collect();
            let _ = write!(s, "; cascade={}", steps.join(">"));
        }
        s
    }
}

/// What the request offers the rules, read once per call from its context and body.
#[derive(Debug, Clone, Default)]
pub struct RoutingHints {
    /// The request headers routing rules name (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The raw query string, when a rule reads one.
    pub query: Option<String>,
    /// Request metadata (OpenAI `metadata`, Bedrock `requestMetadata`, Anthropic `metadata`).
    pub metadata: BTreeMap<String, String>,
    /// The end user, when the request names one.
    pub user: Option<String>,
}

/// A request body's metadata object as routing hints: string values as they are, other
/// scalars as their JSON text (objects and arrays are left out).
pub fn metadata_of(value: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    let Some(serde_json::Value::Object(map)) = value else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k.clone(), s.clone())),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                Some((k.clone(), v.to_string()))
            }
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Compiled routers.

/// A rule ready to match.
struct CompiledRule {
    name: String,
    rule: Rule,
    regex: Option<regex::Regex>,
    keywords: Option<regex::Regex>,
    languages: Vec<whatlang::Lang>,
}

/// A router ready to decide.
pub(crate) struct Router {
    pub(crate) config: RouterConfig,
    rules: Vec<CompiledRule>,
    classifier: Option<classify::Classifier>,
    validator: Option<cascade::Check>,
}

/// One routing version, compiled.
pub(crate) struct Table {
    doc: RoutingDoc,
    /// A hash of the routers (not the rollout share), so raising a rollout's share keeps
    /// everyone already on the new routers there.
    identity: String,
    routers: Vec<Arc<Router>>,
    by_name: HashMap<String, usize>,
    headers: BTreeSet<String>,
    uses_query: bool,
}

fn language(code: &str) -> Option<whatlang::Lang> {
    let code = code.trim().to_ascii_lowercase();
    whatlang::Lang::from_code(&code).or_else(|| {
        // ISO 639-1 two-letter codes, through the language's English name.
        whatlang::Lang::all()
            .iter()
            .copied()
            .find(|l| iso639_1(*l) == Some(code.as_str()))
    })
}

/// The two-letter code of the languages people route on most.
fn iso639_1(l: whatlang::Lang) -> Option<&'static str> {
    use whatlang::Lang::*;
    Some(match l {
        Eng => "en",
        Vie => "vi",
        Fra => "fr",
        Deu => "de",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Nld => "nl",
        Rus => "ru",
        Ukr => "uk",
        Pol => "pl",
        Tur => "tr",
        Ara => "ar",
        Heb => "he",
        Hin => "hi",
        Jpn => "ja",
        Kor => "ko",
        Cmn => "zh",
        Tha => "th",
        Ind => "id",
        Swe => "sv",
        Dan => "da",
        Fin => "fi",
        Ell => "el",
        Ces => "cs",
        Ron => "ro",
        Hun => "hu",
        _ => return None,
    })
}

/// Check a routing document: every name it routes to is a served model (`known`), every
/// pattern compiles, every strategy has what it needs. Messages name the field.
pub fn check(doc: &RoutingDoc, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
    Table::compile(doc.clone(), known).map(|_| ())
}

impl Table {
    fn empty() -> Self {
        Self {
            doc: RoutingDoc::default(),
            identity: String::new(),
            routers: Vec::new(),
            by_name: HashMap::new(),
            headers: BTreeSet::new(),
            uses_query: false,
        }
    }

    fn compile(doc: RoutingDoc, known: &dyn Fn(&str) -> bool) -> Result<Self, String> {
        if let Some(p) = doc.rollout_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "key `rollout_percent`: {p} is not a percentage in (0, 100]"
                ));
            }
        }
        let mut table = Self::empty();
        for (i, c) in doc.routers.iter().enumerate() {
            let at = format!("routers[{i}]");
            let router = Router::compile(c.clone(), &at, known)?;
            for name in std::iter::once(&c.name).chain(&c.aliases) {
                if name.trim().is_empty() {
                    return Err(format!("key `{at}.name`: names must not be empty"));
                }
                if known(name) {
                    return Err(format!(
                        "key `{at}.name`: '{name}' is already a served model; a virtual model needs a name of its own"
                    ));
                }
                if table.by_name.insert(name.clone(), i).is_some() {
                    return Err(format!(
                        "key `{at}.name`: the name '{name}' is used by two routers"
                    ));
                }
            }
            for r in &router.rules {
                table.headers.extend(r.rule.header.keys().cloned());
                table.uses_query |= !r.rule.query.is_empty();
            }
            table.routers.push(Arc::new(router));
        }
        let routers = serde_json::to_vec(&doc.routers).unwrap_or_default();
        table.identity = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&routers));
        table.doc = doc;
        Ok(table)
    }

    fn find(&self, name: &str) -> Option<&Arc<Router>> {
        crate::model_id::candidates(name)
            .into_iter()
            .find_map(|n| self.by_name.get(n))
            .and_then(|&i| self.routers.get(i))
    }
}

impl Router {
    fn compile(c: RouterConfig, at: &str, known: &dyn Fn(&str) -> bool) -> Result<Self, String> {
        let model = |key: &str, m: &str| -> Result<(), String> {
            if known(m) {
                Ok(())
            } else {
                Err(format!(
                    "key `{at}.{key}`: '{m}' is not a served model id or alias"
                ))
            }
        };
        for (i, t) in c.targets.iter().enumerate() {
            model(&format!("targets[{i}].model"), &t.model)?;
        }
        let mut rules = Vec::new();
        for (i, r) in c.rules.iter().enumerate() {
            let rat = format!("rules[{i}]");
            model(&format!("{rat}.model"), &r.model)?;
            let regex = r
                .regex
                .as_deref()
                .map(|p| {
                    regex::RegexBuilder::new(p)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| format!("key `{at}.{rat}.regex`: {e}"))
                })
                .transpose()?;
            let keywords = (!r.keywords.is_empty())
                .then(|| {
                    if r.keywords.iter().any(|k| k.trim().is_empty()) {
                        return Err(format!("key `{at}.{rat}.keywords`: a keyword is empty"));
                    }
                    let alternatives: Vec<String> =
                        r.keywords.iter().map(|k| regex::escape(k.trim())).collect();
                    regex::Regex::new(&format!(r"(?i)\b(?:{})\b", alternatives.join("|")))
                        .map_err(|e| format!("key `{at}.{rat}.keywords`: {e}"))
                })
                .transpose()?;
            let mut languages = Vec::new();
            for l in &r.language {
                languages.push(language(l).ok_or_else(|| {
                    format!("key `{at}.{rat}.language`: '{l}' is not a language code this gateway detects (ISO 639-1 such as `en`, `vi`, or ISO 639-3 such as `eng`)")
                })?);
            }
            for h in r.header.keys() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err()
                    || h.to_ascii_lowercase() != *h
                {
                    return Err(format!(
                        "key `{at}.{rat}.header`: '{h}' is not a lower-case header name"
                    ));
                }
            }
            if let (Some(lo), Some(hi)) = (r.min_input_tokens, r.max_input_tokens) {
                if lo > hi {
                    return Err(format!(
                        "key `{at}.{rat}`: min_input_tokens is above max_input_tokens"
                    ));
                }
            }
            rules.push(CompiledRule {
                name: r.name.clone().unwrap_or_else(|| rat.clone()),
                rule: r.clone(),
                regex,
                keywords,
                languages,
            });
        }
        let needs_targets = matches!(
            c.strategy,
            Strategy::First
                | Strategy::Weighted
                | Strategy::LeastLatency
                | Strategy::LeastBusy
                | Strategy::Cheapest
        );
        if needs_targets && c.targets.is_empty() {
            return Err(format!(
                "key `{at}.targets`: the `{}` strategy picks among targets; give at least one",
                c.strategy.as_str()
            ));
        }
        if c.strategy == Strategy::Weighted && c.targets.iter().all(|t| t.weight == 0) {
            return Err(format!("key `{at}.targets`: every weight is 0"));
        }
        if c.strategy == Strategy::Cheapest && c.latency_objective.is_none() {
            return Err(format!(
                "key `{at}.latency_objective`: the `cheapest` strategy needs a latency objective"
            ));
        }
        let classifier = match (&c.classifier, c.strategy) {
            (Some(k), _) => {
                if k.tiers.len() < 2 {
                    return Err(format!(
                        "key `{at}.classifier.tiers`: a classifier needs at least two tiers"
                    ));
                }
                if !known(&k.embedding_model) {
                    return Err(format!(
                        "key `{at}.classifier.embedding_model`: '{}' is not a served model id or alias",
                        k.embedding_model
                    ));
                }
                for (name, t) in &k.tiers {
                    model(&format!("classifier.tiers.{name}.model"), &t.model)?;
                    if t.examples.iter().all(|e| e.trim().is_empty()) {
                        return Err(format!(
                            "key `{at}.classifier.tiers.{name}.examples`: give at least one example"
                        ));
                    }
                }
                Some(classify::Classifier::new(k.clone()))
            }
            (None, Strategy::Classifier) => {
                return Err(format!(
                    "key `{at}.classifier`: the `classifier` strategy needs a classifier table"
                ))
            }
            (None, _) => None,
        };
        let validator = match (&c.cascade, c.strategy) {
            (Some(k), _) => {
                if k.models.len() < 2 {
                    return Err(format!(
                        "key `{at}.cascade.models`: a cascade needs at least two models"
                    ));
                }
                for (i, m) in k.models.iter().enumerate() {
                    model(&format!("cascade.models[{i}]"), m)?;
                }
                if !(0.0..=1.0).contains(&k.threshold) {
                    return Err(format!(
                        "key `{at}.cascade.threshold`: {} is not in [0, 1]",
                        k.threshold
                    ));
                }
                if let Validator::Judge { model: m, .. } = &k.validator {
                    model("cascade.validator.model", m)?;
                }
                Some(
                    cascade::Check::new(&k.validator)
                        .map_err(|e| format!("key `{at}.cascade.validator`: {e}"))?,
                )
            }
            (None, Strategy::Cascade) => {
                return Err(format!(
                    "key `{at}.cascade`: the `cascade` strategy needs a cascade table"
                ))
            }
            (None, _) => None,
        };
        Ok(Self {
            config: c,
            rules,
            classifier,
            validator,
        })
    }

    /// The rule that matches the call, if any.
    fn matching_rule(&self, call: &Call, hints: &RoutingHints) -> Option<&CompiledRule> {
        let mut features: Option<Features> = None;
        self.rules.iter().find(|r| {
            let f = features.get_or_insert_with(|| Features::of(call));
            r.matches(call, hints, f)
        })
    }
}

/// What content rules look at, computed once per call.
struct Features {
    text: String,
    tokens: u64,
    images: bool,
    tools: bool,
    lang: OnceLock<Option<whatlang::Lang>>,
}

impl Features {
    fn of(call: &Call) -> Self {
        let Some(r) = call.op.chat() else {
            return Self {
                text: String::new(),
                tokens: 0,
                images: false,
                tools: false,
                lang: OnceLock::new(),
            };
        };
        let text = last_user_text(r);
        // The chain's estimate counts the requested output too; rules look at the input.
        let output = u64::from(r.inference.max_tokens.unwrap_or(0));
        Self {
            text,
            tokens: crate::chain::estimate_tokens(r).saturating_sub(output),
            images: r
                .messages
                .iter()
                .flat_map(|m| &m.content)
                .any(|b| matches!(b, ContentBlock::Image(_))),
            tools: r.tools.as_ref().is_some_and(|t| !t.tools.is_empty()),
            lang: OnceLock::new(),
        }
    }

    fn language(&self) -> Option<whatlang::Lang> {
        *self
            .lang
            .get_or_init(|| whatlang::detect(&self.text).map(|i| i.lang()))
    }
}

/// The text of the last user turn (what classifiers and content rules read).
pub(crate) fn last_user_text(r: &modelgate_types::ChatRequest) -> String {
    r.messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(modelgate_types::Message::joined_text)
        .unwrap_or_default()
}

fn value_matches(want: &str, got: Option<&str>) -> bool {
    match got {
        None => false,
        Some(_) if want == "*" => true,
        Some(v) => v.eq_ignore_ascii_case(want),
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

impl CompiledRule {
    fn matches(&self, call: &Call, hints: &RoutingHints, f: &Features) -> bool {
        let r = &self.rule;
        if let Some(route) = &r.route {
            let actual = call.ctx.route();
            let ok = match route.strip_suffix('*') {
                Some(prefix) => actual.starts_with(prefix),
                None => actual == route,
            };
            if !ok {
                return false;
            }
        }
        let principal = call.ctx.principal();
        if r.key
            .as_ref()
            .is_some_and(|k| principal.map(|p| &p.id) != Some(k))
        {
            return false;
        }
        if r.team
            .as_ref()
            .is_some_and(|t| principal.and_then(|p| p.team.as_ref()) != Some(t))
        {
            return false;
        }
        let header = |name: &str| {
            hints
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if !r.header.iter().all(|(n, v)| value_matches(v, header(n))) {
            return false;
        }
        if !r
            .query
            .iter()
            .all(|(n, v)| value_matches(v, query_param(hints.query.as_deref(), n)))
        {
            return false;
        }
        if !r
            .metadata
            .iter()
            .all(|(n, v)| value_matches(v, hints.metadata.get(n).map(String::as_str)))
        {
            return false;
        }
        if r.min_input_tokens.is_some_and(|n| f.tokens < n)
            || r.max_input_tokens.is_some_and(|n| f.tokens > n)
            || r.has_images.is_some_and(|b| b != f.images)
            || r.has_tools.is_some_and(|b| b != f.tools)
        {
            return false;
        }
        if let Some(k) = &self.keywords {
            if !k.is_match(&f.text) {
                return false;
            }
        }
        if let Some(re) = &self.regex {
            if !re.is_match(&f.text) {
                return false;
            }
        }
        if !self.languages.is_empty() && !f.language().is_some_and(|l| self.languages.contains(&l))
        {
            return false;
        }
        true
    }
}

/// A number in [0, 1) from `parts`, the same every time for the same parts.
fn fraction(parts: &[&str]) -> f64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    (h.digest() >> 11) as f64 / (1u64 << 53) as f64
}

/// Who a sticky assignment is for.
fn sticky_id(call: &Call, hints: &RoutingHints, sticky: Sticky) -> Option<String> {
    let key = || {
        call.ctx
            .principal()
            .filter(|p| p.id != "anonymous")
            .map(|p| format!("key:{}", p.id))
            .or_else(|| call.ctx.source().map(|s| format!("ip:{}", s.ip())))
    };
    match sticky {
        Sticky::None => None,
        Sticky::User => hints
            .user
            .as_ref()
            .map(|u| format!("user:{u}"))
            .or_else(key),
        Sticky::Key => key(),
    }
}

// ---------------------------------------------------------------------------------------------
// The live routing state.

/// A routing version in force: the one that serves all traffic, or a candidate that serves a
/// share of it while rolled out, over the last full version.
pub(crate) struct Live {
    version: i64,
    table: Arc<Table>,
    /// While rolled out: the last full version.
    base: Option<(i64, Arc<Table>)>,
    percent: f64,
}

impl Live {
    fn empty() -> Self {
        Self {
            version: 0,
            table: Arc::new(Table::empty()),
            base: None,
            percent: 100.0,
        }
    }

    /// The version and table this call is routed by.
    fn choose(&self, call: &Call, hints: &RoutingHints) -> (i64, &Arc<Table>) {
        match &self.base {
            Some((v, base)) if self.percent < 100.0 => {
                let who = sticky_id(call, hints, Sticky::User)
                    .unwrap_or_else(|| call.ctx.request_id().to_string());
                if fraction(&["rollout", &self.table.identity, &who]) * 100.0 < self.percent {
                    (self.version, &self.table)
                } else {
                    (*v, base)
                }
            }
            _ => (self.version, &self.table),
        }
    }
}

/// Why a routing change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The document is not valid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such version.
    #[error("routing version {0} does not exist")]
    NotFound(i64),
    /// Another change landed first.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for ChangeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ChangeError::Conflict(m),
            e => ChangeError::Store(e.to_string()),
        }
    }
}

/// The live routing of one gateway: the version in force, the versions' store, and the live
/// figures the metric-based strategies read.
pub struct Routing {
    settings: RoutingSettings,
    live: RwLock<Arc<Live>>,
    store: Option<Arc<dyn ConfigVersions>>,
    /// Versions when there is no store (an embedded gateway).
    memory: Mutex<Vec<ConfigVersion>>,
    /// Names known before the models load (from the config file).
    config_names: BTreeSet<String>,
    models: OnceLock<Models>,
    prices: PriceCatalog,
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("version", &self.current().version)
            .finish_non_exhaustive()
    }
}

/// The routing in force and how it came to be, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingStatus {
    /// The version serving (its share of) traffic.
    pub version: i64,
    /// Its share of traffic, percent.
    pub rollout_percent: f64,
    /// While rolled out: the last full version, serving the rest.
    pub base_version: Option<i64>,
    /// The document of `version`.
    pub routing: RoutingDoc,
}

impl Routing {
    /// Routing with nothing routed yet. `config_names` are the model names the config file
    /// serves (used to check documents before the models have loaded); `store` keeps the
    /// versions (in memory without one).
    pub fn new(
        settings: RoutingSettings,
        store: Option<Arc<dyn ConfigVersions>>,
        config_names: BTreeSet<String>,
        prices: PriceCatalog,
    ) -> Self {
        Self {
            settings,
            live: RwLock::new(Arc::new(Live::empty())),
            store,
            memory: Mutex::new(Vec::new()),
            config_names,
            models: OnceLock::new(),
            prices,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The names a config serves: its `[[models]]` ids and aliases and, when enabled, the
    /// embedded models.
    pub fn config_names(config: &crate::Config) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = config
            .models
            .iter()
            .flat_map(|m| std::iter::once(&m.id).chain(&m.aliases))
            .cloned()
            .collect();
        if config.local.enabled {
            names.extend(crate::models::MODELS.iter().map(|s| s.id.to_string()));
        }
        names
    }

    pub(crate) fn attach(&self, models: Models) {
        let _ = self.models.set(models);
    }

    fn registry(&self) -> Option<Arc<Registry>> {
        self.models.get()?.get().cloned()
    }

    /// Whether `name` is a served model (the registry once loaded, else the config's names).
    fn known(&self, name: &str) -> bool {
        match self.registry() {
            Some(r) => r.route(name).is_ok(),
            None => self.config_names.contains(name),
        }
    }

    pub(crate) fn current(&self) -> Arc<Live> {
        Arc::clone(
            &self
                .live
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The settings.
    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    /// Check a document against the models served now.
    pub fn check(&self, doc: &RoutingDoc) -> Result<(), String> {
        check(doc, &|n| self.known(n))
    }

    /// What the HTTP layer copies from a request into the call's routing hints: the headers
    /// the rules in force read and, when one reads it, the query string. `None` when no
    /// router is in force.
    pub fn hints_of(&self, headers: &http::HeaderMap, uri: &http::Uri) -> Option<RoutingHints> {
        let live = self.current();
        if live.table.routers.is_empty() && live.base.is_none() {
            return None;
        }
        let tables = std::iter::once(&live.table).chain(live.base.as_ref().map(|(_, b)| b));
        let mut hints = RoutingHints::default();
        for t in tables {
            for name in &t.headers {
                if hints.headers.iter().any(|(n, _)| n == name) {
                    continue;
                }
                if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    hints.headers.push((name.clone(), v.to_string()));
                }
            }
            if t.uses_query && hints.query.is_none() {
                hints.query = uri.query().map(str::to_string);
            }
        }
        hints.user = headers
            .get("x-modelgate-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Some(hints)
    }

    /// The virtual models in force, for `/v1/models`.
    pub fn list(&self) -> Vec<crate::ModelInfo> {
        let live = self.current();
        let mut out: Vec<crate::ModelInfo> = Vec::new();
        let tables = std::iter::once(&live.table).chain(live.base.as_ref().map(|(_, b)| b));
        for t in tables {
            for r in &t.routers {
                if out.iter().any(|m| m.id == r.config.name) {
                    continue;
                }
                out.push(crate::ModelInfo {
                    id: r.config.name.clone(),
                    owned_by: "modelgate".into(),
                    kind: "chat",
                    aliases: r.config.aliases.clone(),
                    format: None,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// A virtual model by a name clients use, and the model its decisions start from (for
    /// front doors that need to know the model family before the call).
    pub fn resolve(&self, name: &str) -> Option<(crate::ModelInfo, String)> {
        let live = self.current();
        let r = live.table.find(name)?;
        let first = r
            .config
            .targets
            .first()
            .map(|t| t.model.clone())
            .or_else(|| r.config.rules.first().map(|x| x.model.clone()))
            .or_else(|| {
                r.config
                    .classifier
                    .as_ref()
                    .and_then(|c| c.tiers.values().next().map(|t| t.model.clone()))
            })
            .or_else(|| {
                r.config
                    .cascade
                    .as_ref()
                    .and_then(|c| c.models.first().cloned())
            })?;
        let info = crate::ModelInfo {
            id: r.config.name.clone(),
            owned_by: "modelgate".into(),
            kind: "chat",
            aliases: r.config.aliases.clone(),
            format: None,
        };
        Some((info, first))
    }

    /// The routing in force.
    pub fn status(&self) -> RoutingStatus {
        let live = self.current();
        RoutingStatus {
            version: live.version,
            rollout_percent: live.percent,
            base_version: live.base.as_ref().map(|(v, _)| *v),
            routing: live.table.doc.clone(),
        }
    }

    /// Every served model's live figures (latency, errors, load), by id.
    pub fn model_stats(&self) -> BTreeMap<String, stats::StatsSnapshot> {
        let now = Instant::now();
        let c = self.settings.stats();
        self.registry()
            .map(|r| {
                r.entries
                    .iter()
                    .map(|e| (e.info.id.clone(), e.stats.snapshot(now, c)))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn latest(&self) -> Result<Option<ConfigVersion>, StoreError> {
        match &self.store {
            Some(s) => s.version(KIND, None).await,
            None => Ok(lock(&self.memory).last().cloned()),
        }
    }

    /// Stored versions, newest first.
    pub async fn versions(&self, limit: u32) -> Result<Vec<ConfigVersion>, ChangeError> {
        Ok(match &self.store {
            Some(s) => s.versions(KIND, limit).await?,
            None => lock(&self.memory)
                .iter()
                .rev()
                .take(limit as usize)
                .cloned()
                .collect(),
        })
    }

    async fn version(&self, v: i64) -> Result<Option<ConfigVersion>, ChangeError> {
        Ok(match &self.store {
            Some(s) => s.version(KIND, Some(v)).await?,
            None => lock(&self.memory).iter().find(|x| x.version == v).cloned(),
        })
    }

    async fn append(
        &self,
        author: &str,
        note: &str,
        doc: &RoutingDoc,
        expected: Option<i64>,
    ) -> Result<ConfigVersion, ChangeError> {
        let body = serde_json::to_value(doc).map_err(|e| ChangeError::Store(e.to_string()))?;
        match &self.store {
            Some(s) => Ok(s
                .append_version(KIND, author, note, &body, expected)
                .await?),
            None => {
                let mut m = lock(&self.memory);
                let latest = m.last().map_or(0, |v| v.version);
                if expected.is_some_and(|e| e != latest) {
                    return Err(ChangeError::Conflict(format!(
                        "the latest routing version is {latest}"
                    )));
                }
                let v = ConfigVersion {
                    kind: KIND.into(),
                    version: latest + 1,
                    ts_ms: crate::keys::now_ms(),
                    author: author.into(),
                    note: note.into(),
                    body,
                };
                m.push(v.clone());
                Ok(v)
            }
        }
    }

    /// Validate `doc`, store it as the next version and put it in force. With `expected`,
    /// the change applies only on top of that version. A rollout share of 100% is stored as
    /// none (the version is fully rolled out).
    pub async fn change(
        &self,
        mut doc: RoutingDoc,
        author: &str,
        note: &str,
        expected: Option<i64>,
    ) -> Result<ConfigVersion, ChangeError> {
        if doc.rollout_percent == Some(100.0) {
            doc.rollout_percent = None;
        }
        let _one_at_a_time = self.changes.lock().await;
        let table =
            Table::compile(doc.clone(), &|n| self.known(n)).map_err(ChangeError::Invalid)?;
        let stored = self.append(author, note, &doc, expected).await?;
        self.put_in_force(stored.version, table).await?;
        tracing::info!(version = stored.version, author, note, "routing changed");
        Ok(stored)
    }

    /// Put an earlier version back in force (as a new version with its body).
    pub async fn rollback(&self, version: i64, author: &str) -> Result<ConfigVersion, ChangeError> {
        let old = self
            .version(version)
            .await?
            .ok_or(ChangeError::NotFound(version))?;
        let mut doc: RoutingDoc = serde_json::from_value(old.body)
            .map_err(|e| ChangeError::Store(format!("version {version} cannot be read: {e}")))?;
        doc.rollout_percent = None;
        self.change(doc, author, &format!("rollback to version {version}"), None)
            .await
    }

    /// Give the version in force `percent` of traffic (100 completes the rollout).
    pub async fn rollout(&self, percent: f64, author: &str) -> Result<ConfigVersion, ChangeError> {
        let latest = self.latest().await?.ok_or_else(|| {
            ChangeError::Invalid("there is no routing version to roll out".into())
        })?;
        let mut doc: RoutingDoc =
            serde_json::from_value(latest.body).map_err(|e| ChangeError::Store(e.to_string()))?;
        doc.rollout_percent = Some(percent);
        let note = format!("rollout of version {} at {percent}%", latest.version);
        self.change(doc, author, &note, Some(latest.version)).await
    }

    /// Put the stored latest version in force when it is newer than the one in force (a
    /// change made by another replica). Returns whether it changed.
    pub async fn sync(&self) -> Result<bool, ChangeError> {
        let Some(latest) = self.latest().await? else {
            return Ok(false);
        };
        if latest.version <= self.current().version {
            return Ok(false);
        }
        let _one_at_a_time = self.changes.lock().await;
        let doc: RoutingDoc =
            serde_json::from_value(latest.body).map_err(|e| ChangeError::Store(e.to_string()))?;
        let table = Table::compile(doc, &|n| self.known(n)).map_err(ChangeError::Invalid)?;
        self.put_in_force(latest.version, table).await?;
        tracing::info!(version = latest.version, author = %latest.author, "routing version from the store in force");
        Ok(true)
    }

    /// Start from the config file's routers: when they differ from the last version the file
    /// stored, they are stored as a new version (an edited file wins); otherwise the stored
    /// latest (perhaps an admin change made since) stays in force.
    pub async fn load_file(
        &self,
        doc: RoutingDoc,
        file: &str,
    ) -> Result<Option<ConfigVersion>, ChangeError> {
        let author = format!("file:{file}");
        let recent = self.versions(200).await?;
        let last_from_file = recent.iter().find(|v| v.author == author);
        let body = serde_json::to_value(&doc).map_err(|e| ChangeError::Store(e.to_string()))?;
        // A file that never had routers leaves routing made through the admin API alone.
        let unchanged = match last_from_file {
            Some(v) => v.body == body,
            None => doc.routers.is_empty(),
        };
        if unchanged {
            self.sync().await?;
            return Ok(None);
        }
        self.change(doc, &author, "config file", None)
            .await
            .map(Some)
    }

    async fn put_in_force(&self, version: i64, table: Table) -> Result<(), ChangeError> {
        let percent = table.doc.rollout_percent.unwrap_or(100.0);
        let base = if percent < 100.0 {
            self.base_for(version).await?
        } else {
            None
        };
        let live = Live {
            version,
            table: Arc::new(table),
            base,
            percent,
        };
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(live);
        Ok(())
    }

    /// The last fully rolled-out version before `version`.
    async fn base_for(&self, version: i64) -> Result<Option<(i64, Arc<Table>)>, ChangeError> {
        for v in self.versions(500).await? {
            if v.version >= version {
                continue;
            }
            let Ok(doc) = serde_json::from_value::<RoutingDoc>(v.body) else {
                continue;
            };
            if doc.rollout_percent.is_some() {
                continue;
            }
            // An older version may name a model no longer served; its routers are skipped
            // rather than failing the rollout.
            let table = Table::compile(doc, &|n| self.known(n)).unwrap_or_else(|e| {
                tracing::warn!(version = v.version, error = %e, "base routing version no longer valid; serving the rest with no routers");
                Table::empty()
            });
            return Ok(Some((v.version, Arc::new(table))));
        }
        Ok(Some((0, Arc::new(Table::empty()))))
    }
}

// ---------------------------------------------------------------------------------------------
// Deciding.

/// A candidate model with its figures.
struct Candidate<'a> {
    target: &'a Target,
    stats: stats::StatsSnapshot,
    available: bool,
}

impl Routing {
    /// The targets with their figures (the p95 only when `p95`: it sorts the window).
    fn candidates<'a>(
        &self,
        registry: &Registry,
        targets: &'a [Target],
        p95: bool,
    ) -> Vec<Candidate<'a>> {
        let now = Instant::now();
        let c = self.settings.stats();
        targets
            .iter()
            .map(|t| match registry.get(&t.model) {
                Some(e) => Candidate {
                    target: t,
                    stats: if p95 {
                        e.stats.snapshot(now, c)
                    } else {
                        e.stats.load(now, c)
                    },
                    available: e.available(),
                },
                None => Candidate {
                    target: t,
                    stats: stats::StatsSnapshot {
                        ewma_ms: f64::MAX,
                        p95_ms: None,
                        error_rate: 1.0,
                        in_flight: 0,
                        samples: 0,
                        calls: 0,
                    },
                    available: false,
                },
            })
            .collect()
    }

    /// Power of two choices over peak-EWMA cost.
    fn least_latency<'a>(cands: &[&Candidate<'a>]) -> Option<&'a Target> {
        match cands.len() {
            0 => None,
            1 => Some(cands[0].target),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (x, y) = (cands[a], cands[b]);
                Some(if y.stats.cost() < x.stats.cost() {
                    y.target
                } else {
                    x.target
                })
            }
        }
    }

    async fn decide(
        &self,
        router: &Router,
        call: &mut Call,
        hints: &RoutingHints,
    ) -> Result<RoutingDecision, Error> {
        let started = Instant::now();
        let c = &router.config;
        let mut d = RoutingDecision {
            router: c.name.clone(),
            strategy: c.strategy.as_str(),
            ..Default::default()
        };
        if let Some(rule) = router.matching_rule(call, hints) {
            d.strategy = "rule";
            d.rule = Some(rule.name.clone());
            d.model.clone_from(&rule.rule.model);
            d.decide_ms = started.elapsed().as_secs_f64() * 1e3;
            return Ok(d);
        }
        let registry = self.registry().ok_or_else(|| {
            Error::new(
                ErrorKind::ServiceUnavailable,
                "Models are still loading; retry in a moment.",
            )
        })?;
        let arm = |t: &Target| t.arm.clone().unwrap_or_else(|| t.model.clone());
        let targets = &c.targets;
        let chosen: Option<&Target> = match c.strategy {
            Strategy::First => targets.first(),
            Strategy::Weighted => {
                let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
                let u = match sticky_id(call, hints, c.sticky) {
                    Some(id) => fraction(&["arm", &c.name, &id]),
                    None => fastrand::f64(),
                };
                let mut point = u * total as f64;
                let picked = targets.iter().find(|t| {
                    point -= f64::from(t.weight);
                    point < 0.0
                });
                let picked = picked.or_else(|| targets.iter().rev().find(|t| t.weight > 0));
                d.arm = picked.map(arm);
                picked
            }
            Strategy::LeastLatency | Strategy::LeastBusy | Strategy::Cheapest => {
                let all = self.candidates(&registry, targets, c.strategy == Strategy::Cheapest);
                let up: Vec<&Candidate> = all.iter().filter(|x| x.available).collect();
                let pool: Vec<&Candidate> = if up.is_empty() {
                    all.iter().collect()
                } else {
                    up
                };
                match c.strategy {
                    Strategy::LeastBusy => {
                        let min = pool.iter().map(|x| x.stats.in_flight).min();
                        let idle: Vec<&&Candidate> = pool
                            .iter()
                            .filter(|x| Some(x.stats.in_flight) == min)
                            .collect();
                        (!idle.is_empty()).then(|| idle[fastrand::usize(..idle.len())].target)
                    }
                    Strategy::Cheapest => {
                        let objective = c
                            .latency_objective
                            .map_or(f64::MAX, |o| o.as_secs_f64() * 1e3);
                        let price = |t: &Target| {
                            self.prices
                                .price(&t.model)
                                .map_or(0.0, |p| p.input + p.output)
                        };
                        let meets: Vec<&&Candidate> = pool
                            .iter()
                            .filter(|x| {
                                x.stats.error_rate < 0.5
                                    && x.stats.p95_ms.is_none_or(|p| p <= objective)
                            })
                            .collect();
                        let best = meets.iter().min_by(|a, b| {
                            price(a.target)
                                .total_cmp(&price(b.target))
                                .then(a.stats.cost().total_cmp(&b.stats.cost()))
                        });
                        match best {
                            Some(b) => Some(b.target),
                            None => {
                                d.rule = Some("objective_missed".into());
                                Self::least_latency(&pool)
                            }
                        }
                    }
                    _ => Self::least_latency(&pool),
                }
            }
            Strategy::Classifier => None,
            Strategy::Cascade => None,
        };
        match c.strategy {
            Strategy::Classifier => {
                let classifier = router
                    .classifier
                    .as_ref()
                    .ok_or_else(|| Error::internal("classifier router without a classifier"))?;
                let text = call.op.chat().map(last_user_text).unwrap_or_default();
                match classifier.classify(&registry, &text).await {
                    Ok(k) => {
                        d.tier = Some(k.tier);
                        d.score = Some(f64::from(k.score));
                        d.model = k.model;
                        d.side_calls.push(SideCall {
                            purpose: "classifier",
                            model: k.embedding_model,
                            usage: Usage::new(k.tokens, 0),
                        });
                    }
                    Err(e) => {
                        let fallback = targets
                            .first()
                            .map(|t| t.model.clone())
                            .or_else(|| classifier.first_model());
                        tracing::warn!(router = %c.name, error = %e, "classifier failed; using the default");
                        d.rule = Some("classifier_failed".into());
                        d.model = fallback.unwrap_or_default();
                    }
                }
            }
            Strategy::Cascade => {
                d.model = c
                    .cascade
                    .as_ref()
                    .and_then(|k| k.models.first().cloned())
                    .unwrap_or_default();
            }
            _ => {
                d.model = chosen
                    .map(|t| t.model.clone())
                    .ok_or_else(|| Error::internal("the router has no target"))?;
            }
        }
        d.decide_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(d)
    }
}

/// Pipeline layer: a virtual model's name becomes the real model its router picks.
pub(crate) struct RouterLayer {
    routing: Arc<Routing>,
}

impl RouterLayer {
    pub(crate) fn new(routing: Arc<Routing>) -> Self {
        Self { routing }
    }
}

#[async_trait]
impl Layer for RouterLayer {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let live = self.routing.current();
        let name = call.op.model();
        let virtual_model = live.table.find(name).is_some()
            || live
                .base
                .as_ref()
                .is_some_and(|(_, b)| b.find(name).is_some());
        if !virtual_model {
            return next.run(call).await;
        }
        let hints = call.ctx.routing_hints();
        let (version, table) = live.choose(&*call, &hints);
        let Some(router) = table.find(call.op.model()).cloned() else {
            return next.run(call).await;
        };
        let mut decision = self.routing.decide(&router, call, &hints).await?;
        decision.version = version;
        call.op.set_model(&decision.model);
        if router.config.strategy == Strategy::Cascade
            && call.op.is_answer()
            && decision.rule.is_none()
        {
            return cascade::run(&self.routing, &router, call, next, decision).await;
        }
        call.served.routing = Some(Arc::new(decision));
        next.run(call).await
    }
}
