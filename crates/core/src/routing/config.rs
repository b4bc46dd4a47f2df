//! The routing document: `[routing]` settings and the `[[routers]]` (virtual models) of the
//! config file, which the admin API also accepts as JSON in the same shape.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[routing]`: how live routing changes are picked up, and how the metric-based strategies
/// weigh what they see.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// How often the config file is checked for changes to `[[routers]]` (0: never).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// How often the stored routing version is checked (changes made through another
    /// replica's admin API).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Time constant of the latency and error-rate averages.
    #[serde(with = "humantime_serde")]
    pub decay: Duration,
    /// The window of the p95 latency.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A failed attempt counts as at least this slow.
    #[serde(with = "humantime_serde")]
    pub error_penalty: Duration,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        let stats = super::stats::StatsConfig::default();
        Self {
            watch_interval: Duration::from_secs(2),
            sync_interval: Duration::from_secs(2),
            decay: stats.decay,
            window: stats.window,
            error_penalty: stats.error_penalty,
        }
    }
}

impl RoutingSettings {
    /// The figures the metric-based strategies keep.
    pub fn stats(&self) -> super::stats::StatsConfig {
        super::stats::StatsConfig {
            decay: self.decay,
            window: self.window,
            error_penalty: self.error_penalty,
        }
    }

    /// Range checks; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, d) in [
            ("decay", self.decay),
            ("window", self.window),
            ("sync_interval", self.sync_interval),
        ] {
            if d.is_zero() {
                return Err(format!("key `routing.{key}` must be longer than 0"));
            }
        }
        Ok(())
    }
}

/// The routing document: every virtual model, and how much traffic this version takes while
/// it is rolled out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingDoc {
    /// The virtual models.
    #[serde(default)]
    pub routers: Vec<RouterConfig>,
    /// Percent of traffic this version serves while it is rolled out (the rest stays on the
    /// last fully rolled-out version); 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<f64>,
}

/// One virtual model: a name clients use and the policy that picks a real model for each
/// request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The name clients use (also a Bedrock or OpenAI model id, if you like).
    pub name: String,
    /// More names for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// What `/v1/models` says about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How a model is picked when no rule matches.
    #[serde(default)]
    pub strategy: Strategy,
    /// The models the strategy picks from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Rules checked in order before the strategy; the first that matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Keep each user (or key) on one arm of a weighted split.
    #[serde(default)]
    pub sticky: Sticky,
    /// `cheapest`: the p95 latency a model must keep to be picked.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency_objective: Option<Duration>,
    /// `classifier`: tiers and their labelled examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierConfig>,
    /// `cascade`: models tried in order and the confidence check between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeConfig>,
}

/// How a router picks when no rule matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The first target (a static default).
    #[default]
    First,
    /// A weighted random split (canary, A/B), sticky per user or key when asked.
    Weighted,
    /// Power of two choices over peak-EWMA latency × calls in flight.
    LeastLatency,
    /// The target with the fewest calls in flight.
    LeastBusy,
    /// The cheapest target whose p95 latency meets `latency_objective`.
    Cheapest,
    /// A nearest-centroid classifier over embeddings sorts requests into tiers.
    Classifier,
    /// A small model first; a larger one when the answer's confidence is too low.
    Cascade,
}

impl Strategy {
    /// The name in headers, metrics and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::First => "first",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least_latency",
            Strategy::LeastBusy => "least_busy",
            Strategy::Cheapest => "cheapest",
            Strategy::Classifier => "classifier",
            Strategy::Cascade => "cascade",
        }
    }
}

/// Who stays on one arm of a weighted split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// Every request is drawn afresh.
    #[default]
    None,
    /// The end user: the request's `user` (OpenAI), `metadata.user_id` (Anthropic),
    /// `requestMetadata.user` (Bedrock) or the `x-modelgate-user` header; else the key.
    User,
    /// The API key (or other principal).
    Key,
}

/// A model a strategy may pick.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A served model id or alias.
    pub model: String,
    /// Share of a weighted split (relative).
    #[serde(default = "one")]
    pub weight: u32,
    /// The arm's name in headers, metrics and records (default: the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

fn one() -> u32 {
    1
}

/// A static or content rule: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name in headers and records (default: `rules[i]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where matching requests go.
    pub model: String,
    /// The front door's route (`/v1/chat/completions`, `/model/{modelId}/converse`…); a
    /// trailing `*` matches a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Request headers and the value each must have (`*`: present).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, String>,
    /// Query parameters and the value each must have (`*`: present).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Request metadata fields (OpenAI `metadata`, Bedrock `requestMetadata`) and values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The caller's key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The caller's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// At least this many input tokens (estimated: four bytes a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_input_tokens: Option<u64>,
    /// At most this many input tokens (estimated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    /// Images present (or absent with `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_images: Option<bool>,
    /// Tools declared (or not, with `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_tools: Option<bool>,
    /// The last user message's language is one of these (ISO 639-1 or 639-3 codes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub language: Vec<String>,
    /// The last user message contains one of these words (case-insensitive, whole words).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// The last user message matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The `classifier` strategy's tiers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The embedding model (any served embedding model).
    #[serde(default = "default_embedding_model")]
    pub embedding_model: String,
    /// Tier name → where its requests go and labelled examples of it.
    pub tiers: BTreeMap<String, TierConfig>,
}

fn default_embedding_model() -> String {
    crate::models::LOCAL_EMBED_MODEL.to_string()
}

/// One tier of the classifier.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Where this tier's requests go.
    pub model: String,
    /// Requests of this tier (their mean embedding is the tier's centroid).
    pub examples: Vec<String>,
}

/// The `cascade` strategy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// Models tried in order, smallest first.
    pub models: Vec<String>,
    /// Escalate when the answer's confidence is below this (0–1).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// How an answer's confidence is judged.
    #[serde(default)]
    pub validator: Validator,
}

fn default_threshold() -> f64 {
    0.8
}

/// How a cascade judges an answer. Every validator gives 0 to an answer that did not end
/// cleanly (cut by `max_tokens`, filtered).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validator {
    /// 1 when the answer ended cleanly.
    #[default]
    Complete,
    /// 1 when the answer is a JSON value (an object with these keys, when given).
    Json {
        /// Keys the object must have.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        required: Vec<String>,
    },
    /// 1 when the answer matches the pattern.
    Regex {
        /// The regular expression.
        pattern: String,
    },
    /// A model rates the answer from 0 to 10; the confidence is the rating / 10.
    Judge {
        /// The judging model (a served model id or alias).
        model: String,
        /// What the judge is told before the question and the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
}
