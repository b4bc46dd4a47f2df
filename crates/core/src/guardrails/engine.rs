//! A guardrail version compiled for use, and [`Compiled::assess`]: every policy over a list
//! of texts, giving AWS's assessment (the `GuardrailAssessment` shape of ApplyGuardrail and
//! Converse traces), the masked texts, and what the gateway does (nothing, mask, block).

use std::sync::Arc;
use std::time::Instant;

use modelgate_types::{Error, ErrorKind};
use regex::Regex;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::def::{
    Action, BlockActions, GroundingType, GuardrailDef, SensitiveActions, Source, Strength,
};
use super::pii;
use super::semantic::{acts, Semantic, TopicVectors};
use super::words::{WordMatcher, WordSource};

/// What a piece of guarded content is for (ApplyGuardrail and `guardContent` qualifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// The source the answer must be grounded in.
    GroundingSource,
    /// The user's query, for relevance.
    Query,
    /// Content to guard.
    GuardContent,
}

impl Qualifier {
    /// Parse an AWS qualifier name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grounding_source" => Some(Qualifier::GroundingSource),
            "query" => Some(Qualifier::Query),
            "guard_content" => Some(Qualifier::GuardContent),
            _ => None,
        }
    }
}

/// One text to assess.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardText {
    /// The text.
    pub text: String,
    /// Its qualifiers (none: guarded content).
    pub qualifiers: Vec<Qualifier>,
}

impl GuardText {
    /// Plain content to guard.
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            qualifiers: Vec::new(),
        }
    }

    fn guarded(&self) -> bool {
        self.qualifiers.is_empty() || self.qualifiers.contains(&Qualifier::GuardContent)
    }
}

/// What the guardrail did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Nothing (detections with action NONE are still reported).
    #[default]
    Pass,
    /// Values were masked.
    Masked,
    /// The content is blocked.
    Blocked,
}

/// Whether the assessment lists every configured check or only detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Detections only (`INTERVENTIONS`, the default).
    #[default]
    Interventions,
    /// Every check, detected or not (`FULL`).
    Full,
}

/// Text units processed per policy (1 unit = up to 1,000 characters), as AWS counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    /// Denied topics.
    pub topic: u32,
    /// Content filters.
    pub content: u32,
    /// Word filters.
    pub word: u32,
    /// PII entities.
    pub sensitive: u32,
    /// Regexes (free).
    pub sensitive_free: u32,
    /// Grounding.
    pub grounding: u32,
}

impl Units {
    /// The `GuardrailUsage` JSON.
    pub fn json(&self) -> Value {
        json!({
            "topicPolicyUnits": self.topic,
            "contentPolicyUnits": self.content,
            "wordPolicyUnits": self.word,
            "sensitiveInformationPolicyUnits": self.sensitive,
            "sensitiveInformationPolicyFreeUnits": self.sensitive_free,
            "contextualGroundingPolicyUnits": self.grounding,
        })
    }
}

/// One detection that acted or was reported, for the outcome and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// `topic`, `content`, `word`, `pii`, `regex`, `grounding`.
    pub policy: &'static str,
    /// The topic name, filter type, PII type, regex name, … (never the matched text).
    pub name: String,
    /// `BLOCKED`, `ANONYMIZED` or `NONE`.
    pub action: &'static str,
}

/// The result of assessing texts.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// What the guardrail does.
    pub verdict: Verdict,
    /// The texts after masking (one per input text, same order; unguarded texts unchanged).
    pub masked: Vec<String>,
    /// Byte ranges of every sensitive value found, per input text (for stream windows).
    pub spans: Vec<Vec<(usize, usize)>>,
    /// The `GuardrailAssessment` JSON (without `invocationMetrics`, added by callers).
    pub assessment: Value,
    /// Units processed.
    pub units: Units,
    /// What fired.
    pub fired: Vec<Fired>,
    /// Characters guarded and in total.
    pub chars: (usize, usize),
    /// Time taken.
    pub latency: std::time::Duration,
    /// The message a remote guardrail gave for blocked content (else the definition's).
    pub blocked_text: Option<String>,
}

impl Assessment {
    /// Whether the guardrail intervened (masked or blocked).
    pub fn intervened(&self) -> bool {
        self.verdict != Verdict::Pass
    }

    /// AWS's `actionReason`.
    pub fn action_reason(&self) -> &'static str {
        match self.verdict {
            Verdict::Blocked => "Guardrail blocked.",
            Verdict::Masked => "Guardrail masked.",
            Verdict::Pass => "No action.",
        }
    }

    /// The assessment with its `invocationMetrics`.
    pub fn with_metrics(&self) -> Value {
        let mut a = self.assessment.clone();
        a["invocationMetrics"] = json!({
            "guardrailProcessingLatency": self.latency.as_millis() as u64,
            "usage": self.units.json(),
            "guardrailCoverage": {"textCharacters": {"guarded": self.chars.0, "total": self.chars.1}},
        });
        a
    }
}

/// A guardrail of AWS's, asked through `ApplyGuardrail` on a Bedrock endpoint.
#[derive(Debug)]
pub struct Remote {
    /// The signing endpoint.
    pub endpoint: Arc<modelgate_providers::BedrockEndpoint>,
    /// The guardrail's id or ARN there.
    pub identifier: String,
    /// Its version there.
    pub version: String,
}

fn qualifier_name(q: Qualifier) -> &'static str {
    match q {
        Qualifier::GroundingSource => "grounding_source",
        Qualifier::Query => "query",
        Qualifier::GuardContent => "guard_content",
    }
}

/// Whether any entry under `v` has `"action": action`.
fn has_action(v: &Value, action: &str) -> bool {
    match v {
        Value::Object(o) => {
            o.get("action").and_then(Value::as_str) == Some(action)
                || o.values().any(|x| has_action(x, action))
        }
        Value::Array(a) => a.iter().any(|x| has_action(x, action)),
        _ => false,
    }
}

/// What fired in an AWS assessment: (policy, name) of every entry that acted.
fn fired_of(assessment: &Value) -> Vec<Fired> {
    let mut out = Vec::new();
    let lists: [(&str, &str, &str, &str); 7] = [
        ("topicPolicy", "topics", "topic", "name"),
        ("contentPolicy", "filters", "content", "type"),
        ("wordPolicy", "customWords", "word", ""),
        ("wordPolicy", "managedWordLists", "word", "type"),
        ("sensitiveInformationPolicy", "piiEntities", "pii", "type"),
        ("sensitiveInformationPolicy", "regexes", "regex", "name"),
        ("contextualGroundingPolicy", "filters", "grounding", "type"),
    ];
    for (policy, list, name, key) in lists {
        for e in assessment[policy][list].as_array().into_iter().flatten() {
            let action = match e["action"].as_str() {
                Some("BLOCKED") => "BLOCKED",
                Some("ANONYMIZED") => "ANONYMIZED",
                _ => continue,
            };
            out.push(Fired {
                policy: name,
                name: e[key].as_str().unwrap_or("custom").to_string(),
                action,
            });
        }
    }
    out
}

/// A custom regex, compiled.
struct CompiledRegex {
    name: String,
    pattern: String,
    regex: Regex,
    actions: SensitiveActions,
}

/// A guardrail version ready to assess.
pub struct Compiled {
    /// The guardrail's id.
    pub id: String,
    /// `DRAFT` or a number.
    pub version: String,
    /// Its ARN.
    pub arn: String,
    /// The definition.
    pub def: GuardrailDef,
    pii: Vec<(String, SensitiveActions)>,
    regexes: Vec<CompiledRegex>,
    words: Option<WordMatcher>,
    word_actions: Vec<BlockActions>,
    profanity: Option<BlockActions>,
    semantic: Option<Arc<Semantic>>,
    topics: OnceCell<Vec<TopicVectors>>,
    remote: Option<Arc<Remote>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn units_for(chars: usize) -> u32 {
    chars.div_ceil(1000) as u32
}

fn action_name(a: Action, detected: bool) -> &'static str {
    match (a, detected) {
        (Action::Block, true) => "BLOCKED",
        (Action::Anonymize, true) => "ANONYMIZED",
        _ => "NONE",
    }
}

impl Compiled {
    /// Compile `def` (validated beforehand) for `id` at `version`; `semantic` serves the
    /// topic, content and grounding checks (without it those policies fail closed).
    pub fn new(
        id: &str,
        version: &str,
        arn: String,
        def: GuardrailDef,
        semantic: Option<Arc<Semantic>>,
    ) -> Result<Self, Error> {
        let sensitive = def
            .sensitive_information_policy_config
            .clone()
            .unwrap_or_default();
        let pii = sensitive
            .pii_entities_config
            .iter()
            .flatten()
            .map(|e| (e.kind.clone(), e.actions.clone()))
            .collect();
        let regexes = sensitive
            .regexes_config
            .iter()
            .flatten()
            .map(|r| {
                Regex::new(&r.pattern)
                    .map(|regex| CompiledRegex {
                        name: r.name.clone(),
                        pattern: r.pattern.clone(),
                        regex,
                        actions: r.actions.clone(),
                    })
                    .map_err(|e| Error::validation(format!("regex '{}': {e}", r.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let word_policy = def.word_policy_config.clone().unwrap_or_default();
        let custom: Vec<String> = word_policy
            .words_config
            .iter()
            .flatten()
            .map(|w| w.text.clone())
            .collect();
        let word_actions = word_policy
            .words_config
            .iter()
            .flatten()
            .map(|w| w.actions.clone())
            .collect();
        let profanity = word_policy
            .managed_word_lists_config
            .iter()
            .flatten()
            .next()
            .map(|l| l.actions.clone());
        let words = if custom.is_empty() && profanity.is_none() {
            None
        } else {
            Some(WordMatcher::new(&custom, profanity.is_some()).map_err(Error::validation)?)
        };
        Ok(Self {
            id: id.to_string(),
            version: version.to_string(),
            arn,
            def,
            pii,
            regexes,
            words,
            word_actions,
            profanity,
            semantic,
            topics: OnceCell::new(),
            remote: None,
        })
    }

    /// Delegate every assessment to `remote` (AWS's `ApplyGuardrail`).
    pub fn remote(mut self, remote: Arc<Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Whether assessments are AWS's (masking spans are then unknown: a stream window that a
    /// remote guardrail masks is blocked instead).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    async fn assess_remote(
        &self,
        remote: &Remote,
        texts: &[GuardText],
        source: Source,
        scope: Scope,
    ) -> Result<Assessment, Error> {
        let started = Instant::now();
        let content: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut text = json!({ "text": t.text });
                if !t.qualifiers.is_empty() {
                    text["qualifiers"] = json!(t
                        .qualifiers
                        .iter()
                        .map(|q| qualifier_name(*q))
                        .collect::<Vec<_>>());
                }
                json!({ "text": text })
            })
            .collect();
        let body = json!({
            "source": match source { Source::Input => "INPUT", Source::Output => "OUTPUT" },
            "content": content,
            "outputScope": match scope { Scope::Full => "FULL", Scope::Interventions => "INTERVENTIONS" },
        });
        let r = remote
            .endpoint
            .apply_guardrail(&remote.identifier, &remote.version, &body)
            .await?;
        let intervened = r["action"].as_str() == Some("GUARDRAIL_INTERVENED");
        let verdict = if !intervened {
            Verdict::Pass
        } else if has_action(&r["assessments"], "BLOCKED") {
            Verdict::Blocked
        } else {
            Verdict::Masked
        };
        let outputs: Vec<String> = r["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["text"].as_str().map(String::from))
            .collect();
        // Masked outputs come back for the guarded texts, in order.
        let mut masked: Vec<String> = texts.iter().map(|t| t.text.clone()).collect();
        if verdict == Verdict::Masked {
            let mut next = outputs.iter();
            for (m, t) in masked.iter_mut().zip(texts) {
                if t.guarded() {
                    if let Some(o) = next.next() {
                        o.clone_into(m);
                    }
                }
            }
        }
        let mut assessment = r["assessments"]
            .get(0)
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(o) = assessment.as_object_mut() {
            o.remove("invocationMetrics");
        }
        let u = &r["usage"];
        let n = |k: &str| {
            u[k].as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .unwrap_or(0)
        };
        let guarded_chars = texts
            .iter()
            .filter(|t| t.guarded())
            .map(|t| t.text.chars().count())
            .sum();
        Ok(Assessment {
            verdict,
            spans: vec![Vec::new(); texts.len()],
            fired: fired_of(&assessment),
            assessment,
            masked,
            units: Units {
                topic: n("topicPolicyUnits"),
                content: n("contentPolicyUnits"),
                word: n("wordPolicyUnits"),
                sensitive: n("sensitiveInformationPolicyUnits"),
                sensitive_free: n("sensitiveInformationPolicyFreeUnits"),
                grounding: n("contextualGroundingPolicyUnits"),
            },
            chars: (
                guarded_chars,
                texts.iter().map(|t| t.text.chars().count()).sum(),
            ),
            latency: started.elapsed(),
            blocked_text: (verdict == Verdict::Blocked)
                .then(|| outputs.first().cloned())
                .flatten(),
        })
    }

    /// Whether any policy needs the embedding model in `source`.
    pub fn needs_semantic(&self, source: Source) -> bool {
        let topics = self.def.topic_policy_config.as_ref().is_some_and(|t| {
            t.topics_config
                .iter()
                .any(|c| c.actions.action(source, Action::Block).is_some())
        });
        let filters = self.def.content_policy_config.as_ref().is_some_and(|c| {
            c.filters_config.iter().any(|f| {
                let s = match source {
                    Source::Input => f.input_strength,
                    Source::Output => f.output_strength,
                };
                s != Strength::None && f.actions.action(source, Action::Block).is_some()
            })
        });
        topics || filters
    }

    async fn topic_vectors(&self, semantic: &Semantic) -> Result<&[TopicVectors], Error> {
        let v = self
            .topics
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                for t in self
                    .def
                    .topic_policy_config
                    .iter()
                    .flat_map(|p| &p.topics_config)
                {
                    out.push(semantic.topic(&t.name, &t.definition, &t.examples).await?);
                }
                Ok::<_, Error>(out)
            })
            .await?;
        Ok(v)
    }

    /// The deterministic checks (PII, regexes, words) of one text: the masked text, the
    /// spans of sensitive values, and the assessment entries.
    fn scan(&self, text: &str, source: Source, a: &mut Parts) -> (String, Vec<(usize, usize)>) {
        struct Mask {
            start: usize,
            end: usize,
            label: String,
        }
        let mut masks: Vec<Mask> = Vec::new();
        let mut spans = Vec::new();
        if !self.pii.is_empty() {
            let wanted: Vec<(&str, Action)> = self
                .pii
                .iter()
                .filter_map(|(k, acts)| acts.action(source).map(|x| (k.as_str(), x)))
                .collect();
            let hits = pii::detect(text, &|k| wanted.iter().any(|(w, _)| *w == k));
            for h in hits {
                let Some(&(_, action)) = wanted.iter().find(|(w, _)| *w == h.kind) else {
                    continue;
                };
                spans.push((h.start, h.end));
                a.verdict(action);
                a.pii.push(json!({
                    "match": &text[h.start..h.end],
                    "type": h.kind,
                    "action": action_name(action, true),
                    "detected": true,
                }));
                a.fired.push(Fired {
                    policy: "pii",
                    name: h.kind.into(),
                    action: action_name(action, true),
                });
                if action == Action::Anonymize {
                    masks.push(Mask {
                        start: h.start,
                        end: h.end,
                        label: format!("{{{}}}", h.kind),
                    });
                }
            }
        }
        for r in &self.regexes {
            let Some(action) = r.actions.action(source) else {
                continue;
            };
            for m in r.regex.find_iter(text).filter(|m| !m.is_empty()) {
                spans.push((m.start(), m.end()));
                a.verdict(action);
                a.regexes.push(json!({
                    "name": r.name, "match": m.as_str(), "regex": r.pattern,
                    "action": action_name(action, true), "detected": true,
                }));
                a.fired.push(Fired {
                    policy: "regex",
                    name: r.name.clone(),
                    action: action_name(action, true),
                });
                if action == Action::Anonymize {
                    masks.push(Mask {
                        start: m.start(),
                        end: m.end(),
                        label: format!("{{{}}}", r.name),
                    });
                }
            }
        }
        if let Some(words) = &self.words {
            for h in words.find(text) {
                let actions = match h.source {
                    WordSource::Custom(i) => self.word_actions.get(i),
                    WordSource::Profanity => self.profanity.as_ref(),
                };
                let Some(action) = actions.and_then(|x| x.action(source, Action::Block)) else {
                    continue;
                };
                a.verdict(action);
                let m = &text[h.start..h.end];
                match h.source {
                    WordSource::Custom(_) => a.custom_words.push(json!({
                        "match": m, "action": action_name(action, true), "detected": true})),
                    WordSource::Profanity => a.managed_words.push(json!({
                        "match": m, "type": "PROFANITY", "action": action_name(action, true), "detected": true})),
                }
                a.fired.push(Fired {
                    policy: "word",
                    name: match h.source {
                        WordSource::Custom(_) => "custom".into(),
                        WordSource::Profanity => "PROFANITY".into(),
                    },
                    action: action_name(action, true),
                });
            }
        }
        // Mask from the end so earlier offsets stay valid; overlapping masks (a regex over a
        // PII value) merge into the first label.
        masks.sort_by_key(|m| m.start);
        let mut merged: Vec<Mask> = Vec::new();
        for m in masks {
            match merged.last_mut() {
                Some(last) if m.start < last.end => last.end = last.end.max(m.end),
                _ => merged.push(m),
            }
        }
        let mut out = text.to_string();
        for m in merged.iter().rev() {
            out.replace_range(m.start..m.end, &m.label);
        }
        spans.sort_unstable();
        (out, spans)
    }

    /// `text` with the deterministic masks of `source` applied (PII and regexes).
    pub fn mask(&self, text: &str, source: Source) -> String {
        self.scan(text, source, &mut Parts::default()).0
    }

    /// Assess `texts` as `source`. Semantic detector failures are errors (the caller fails
    /// closed unless configured otherwise).
    pub async fn assess(
        &self,
        texts: &[GuardText],
        source: Source,
        scope: Scope,
    ) -> Result<Assessment, Error> {
        if let Some(remote) = &self.remote {
            return self.assess_remote(remote, texts, source, scope).await;
        }
        let started = Instant::now();
        let mut parts = Parts::default();
        let mut masked = Vec::with_capacity(texts.len());
        let mut spans = Vec::with_capacity(texts.len());
        let guarded: Vec<&GuardText> = texts.iter().filter(|t| t.guarded()).collect();
        let guarded_chars: usize = guarded.iter().map(|t| t.text.chars().count()).sum();
        let total_chars: usize = texts.iter().map(|t| t.text.chars().count()).sum();
        for t in texts {
            if t.guarded() {
                let (m, s) = self.scan(&t.text, source, &mut parts);
                masked.push(m);
                spans.push(s);
            } else {
                masked.push(t.text.clone());
                spans.push(Vec::new());
            }
        }
        let mut units = Units::default();
        if !self.pii.is_empty() {
            units.sensitive = units_of(&guarded);
        }
        if !self.regexes.is_empty() {
            units.sensitive_free = units_of(&guarded);
        }
        if self.words.is_some() {
            units.word = units_of(&guarded);
        }
        // The guarded text in one piece, for the checks that read meaning (built only for
        // them: the pattern checks above read each text as it is).
        let grounding =
            source == Source::Output && self.def.contextual_grounding_policy_config.is_some();
        let joined: String = if self.needs_semantic(source) || grounding {
            guarded
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            String::new()
        };
        if self.needs_semantic(source) && !joined.trim().is_empty() {
            let semantic = self.semantic.as_deref().ok_or_else(|| {
                Error::refusal(
                    ErrorKind::ServiceUnavailable,
                    "The guardrail's topic and content checks need an embedding model, and none is served.",
                )
                .with_code("GuardrailDetectorUnavailable")
            })?;
            let embedded = semantic.embed_text(&joined).await?;
            if let Some(policy) = &self.def.topic_policy_config {
                units.topic = units_of(&guarded);
                let vectors = self.topic_vectors(semantic).await?;
                for (cfg, v) in policy.topics_config.iter().zip(vectors) {
                    let Some(action) = cfg.actions.action(source, Action::Block) else {
                        continue;
                    };
                    let score = semantic.topic_score(&embedded, v);
                    let detected = semantic.on_topic(score);
                    if detected {
                        parts.verdict(action);
                        parts.fired.push(Fired {
                            policy: "topic",
                            name: cfg.name.clone(),
                            action: action_name(action, true),
                        });
                    }
                    if detected || scope == Scope::Full {
                        parts.topics.push(json!({
                            "name": cfg.name, "type": "DENY",
                            "action": action_name(action, detected), "detected": detected,
                        }));
                    }
                }
            }
            if let Some(policy) = &self.def.content_policy_config {
                units.content = units_of(&guarded);
                for f in &policy.filters_config {
                    let strength = match source {
                        Source::Input => f.input_strength,
                        Source::Output => f.output_strength,
                    };
                    let Some(action) = f.actions.action(source, Action::Block) else {
                        continue;
                    };
                    if strength == Strength::None {
                        continue;
                    }
                    let (_, confidence) = semantic.content(&embedded, f.kind).await?;
                    let detected = acts(strength, confidence);
                    if detected {
                        parts.verdict(action);
                        parts.fired.push(Fired {
                            policy: "content",
                            name: f.kind.as_str().into(),
                            action: action_name(action, true),
                        });
                    }
                    if detected || scope == Scope::Full {
                        parts.filters.push(json!({
                            "type": f.kind.as_str(), "confidence": confidence.as_str(),
                            "filterStrength": strength.as_str(),
                            "action": action_name(action, detected), "detected": detected,
                        }));
                    }
                }
            }
        }
        if let (Source::Output, Some(policy)) =
            (source, &self.def.contextual_grounding_policy_config)
        {
            let pick = |q: Qualifier| {
                texts
                    .iter()
                    .filter(|t| t.qualifiers.contains(&q))
                    .map(|t| t.text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let (source_text, query) = (pick(Qualifier::GroundingSource), pick(Qualifier::Query));
            if !source_text.is_empty() || !query.is_empty() {
                let semantic = self.semantic.as_deref().ok_or_else(|| {
                    Error::refusal(
                        ErrorKind::ServiceUnavailable,
                        "Contextual grounding needs an embedding model, and none is served.",
                    )
                    .with_code("GuardrailDetectorUnavailable")
                })?;
                units.grounding = units_for(total_chars);
                let (g, r) = semantic.grounding(&joined, &source_text, &query).await?;
                for f in policy
                    .filters_config
                    .iter()
                    .filter(|f| f.enabled.unwrap_or(true))
                {
                    let score = match f.kind {
                        GroundingType::Grounding => g,
                        GroundingType::Relevance => r,
                    };
                    let action = f.action.unwrap_or(Action::Block);
                    let detected = score < f.threshold;
                    if detected {
                        parts.verdict(action);
                        parts.fired.push(Fired {
                            policy: "grounding",
                            name: f.kind.as_str().into(),
                            action: action_name(action, true),
                        });
                    }
                    if detected || scope == Scope::Full {
                        parts.grounding.push(json!({
                            "type": f.kind.as_str(), "threshold": f.threshold,
                            "score": (score * 100.0).round() / 100.0,
                            "action": action_name(action, detected), "detected": detected,
                        }));
                    }
                }
            }
        }
        let verdict = parts.verdict;
        Ok(Assessment {
            verdict,
            masked,
            spans,
            assessment: parts.json(),
            units,
            fired: parts.fired,
            chars: (guarded_chars, total_chars),
            latency: started.elapsed(),
            blocked_text: None,
        })
    }

    /// The message that replaces blocked content from `source`.
    pub fn blocked_message(&self, source: Source) -> &str {
        match source {
            Source::Input => &self.def.blocked_input_messaging,
            Source::Output => &self.def.blocked_outputs_messaging,
        }
    }
}

fn units_of(texts: &[&GuardText]) -> u32 {
    texts
        .iter()
        .map(|t| units_for(t.text.chars().count()))
        .sum()
}

/// Assessment entries gathered over the policies.
#[derive(Default)]
struct Parts {
    verdict: Verdict,
    topics: Vec<Value>,
    filters: Vec<Value>,
    custom_words: Vec<Value>,
    managed_words: Vec<Value>,
    pii: Vec<Value>,
    regexes: Vec<Value>,
    grounding: Vec<Value>,
    fired: Vec<Fired>,
}

impl Parts {
    fn verdict(&mut self, action: Action) {
        let v = match action {
            Action::Block => Verdict::Blocked,
            Action::Anonymize => Verdict::Masked,
            Action::None => Verdict::Pass,
        };
        self.verdict = self.verdict.max(v);
    }

    fn json(&self) -> Value {
        let mut a = serde_json::Map::new();
        if !self.topics.is_empty() {
            a.insert("topicPolicy".into(), json!({"topics": self.topics}));
        }
        if !self.filters.is_empty() {
            a.insert("contentPolicy".into(), json!({"filters": self.filters}));
        }
        if !self.custom_words.is_empty() || !self.managed_words.is_empty() {
            a.insert(
                "wordPolicy".into(),
                json!({"customWords": self.custom_words, "managedWordLists": self.managed_words}),
            );
        }
        if !self.pii.is_empty() || !self.regexes.is_empty() {
            a.insert(
                "sensitiveInformationPolicy".into(),
                json!({"piiEntities": self.pii, "regexes": self.regexes}),
            );
        }
        if !self.grounding.is_empty() {
            a.insert(
                "contextualGroundingPolicy".into(),
                json!({"filters": self.grounding}),
            );
        }
        Value::Object(a)
    }
}
