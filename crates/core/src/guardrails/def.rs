//! Guardrail definitions in the shapes of botocore's `bedrock` service model:
//! `CreateGuardrail` / `UpdateGuardrail` bodies are parsed into [`GuardrailDef`] (the same
//! struct reads a `[[guardrails]]` table of the config file), checked against the model's
//! limits by [`GuardrailDef::validate`], and turned into a `GetGuardrail` answer by
//! [`GuardrailDef::to_get`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use modelgate_types::Error;

/// The PII entity types of `GuardrailPiiEntityType` (31).
pub const PII_TYPES: [&str; 31] = [
    "ADDRESS",
    "AGE",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "CA_HEALTH_NUMBER",
    "CA_SOCIAL_INSURANCE_NUMBER",
    "CREDIT_DEBIT_CARD_CVV",
    "CREDIT_DEBIT_CARD_EXPIRY",
    "CREDIT_DEBIT_CARD_NUMBER",
    "DRIVER_ID",
    "EMAIL",
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
    "IP_ADDRESS",
    "LICENSE_PLATE",
    "MAC_ADDRESS",
    "NAME",
    "PASSWORD",
    "PHONE",
    "PIN",
    "SWIFT_CODE",
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
    "UK_NATIONAL_INSURANCE_NUMBER",
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER",
    "URL",
    "USERNAME",
    "US_BANK_ACCOUNT_NUMBER",
    "US_BANK_ROUTING_NUMBER",
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
    "US_PASSPORT_NUMBER",
    "US_SOCIAL_SECURITY_NUMBER",
    "VEHICLE_IDENTIFICATION_NUMBER",
];

/// The content filter types.
pub const FILTER_TYPES: [&str; 6] = [
    "SEXUAL",
    "VIOLENCE",
    "HATE",
    "INSULTS",
    "MISCONDUCT",
    "PROMPT_ATTACK",
];

/// A guardrail as `CreateGuardrail` takes it (and `UpdateGuardrail`, which adds the id in
/// the path).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardrailDef {
    /// 1–50 of `[0-9a-zA-Z-_]`, unique among guardrails.
    pub name: String,
    /// Up to 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Denied topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_policy_config: Option<TopicPolicy>,
    /// Content filters (and prompt attacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_policy_config: Option<ContentPolicy>,
    /// Custom words and the managed profanity list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_policy_config: Option<WordPolicy>,
    /// PII entities and custom regexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_information_policy_config: Option<SensitivePolicy>,
    /// Grounding and relevance thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contextual_grounding_policy_config: Option<GroundingPolicy>,
    /// Automated reasoning policies: accepted and kept, not evaluated (they need AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated_reasoning_policy_config: Option<Value>,
    /// Cross-region inference profile: accepted and kept, meaningless on one gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_region_config: Option<Value>,
    /// What a blocked prompt is answered with (1–500 characters).
    pub blocked_input_messaging: String,
    /// What replaces a blocked answer (1–500 characters).
    pub blocked_outputs_messaging: String,
    /// Accepted and kept (the store is not encrypted per guardrail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Tags (`CreateGuardrail` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// Idempotency token (`CreateGuardrail` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Denied topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicPolicy {
    /// 1–30 topics.
    pub topics_config: Vec<TopicConfig>,
    /// `CLASSIC` or `STANDARD`: kept, the detector is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_config: Option<Value>,
}

/// One denied topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicConfig {
    /// 1–100 of `[0-9a-zA-Z-_ !?.]`.
    pub name: String,
    /// What the topic is (1–200 characters).
    pub definition: String,
    /// Up to 5 example prompts (1–100 characters each).
    #[serde(default)]
    pub examples: Vec<String>,
    /// `DENY`.
    #[serde(rename = "type")]
    pub kind: TopicType,
    #[serde(flatten)]
    /// Actions per direction.
    pub actions: BlockActions,
}

/// `DENY`, the one topic type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum TopicType {
    /// A denied topic.
    #[serde(rename = "DENY")]
    Deny,
}

/// `inputAction` / `outputAction` (BLOCK or NONE) and `inputEnabled` / `outputEnabled`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockActions {
    /// What is done when the prompt matches (default BLOCK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_action: Option<Action>,
    /// What is done when the answer matches (default BLOCK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_action: Option<Action>,
    /// Whether prompts are checked (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_enabled: Option<bool>,
    /// Whether answers are checked (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_enabled: Option<bool>,
}

/// What a policy does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Refuse the prompt, replace the answer.
    Block,
    /// Mask the match (`{EMAIL}`); sensitive information only.
    Anonymize,
    /// Detect and report, do nothing.
    None,
}

/// Which way content flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Source {
    /// The prompt.
    Input,
    /// The model's answer.
    Output,
}

impl Source {
    /// `input` or `output` (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Input => "input",
            Source::Output => "output",
        }
    }
}

impl BlockActions {
    /// The action for `source`, or `None` when the direction is disabled.
    pub fn action(&self, source: Source, default: Action) -> Option<Action> {
        let (action, enabled) = match source {
            Source::Input => (self.input_action, self.input_enabled),
            Source::Output => (self.output_action, self.output_enabled),
        };
        enabled.unwrap_or(true).then(|| action.unwrap_or(default))
    }
}

/// Content filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentPolicy {
    /// 1–6 filters, one per type.
    pub filters_config: Vec<ContentFilterConfig>,
    /// Kept, not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_config: Option<Value>,
}

/// A content filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentFilterConfig {
    /// SEXUAL, VIOLENCE, HATE, INSULTS, MISCONDUCT or PROMPT_ATTACK.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// How strict on prompts.
    pub input_strength: Strength,
    /// How strict on answers (NONE for PROMPT_ATTACK).
    pub output_strength: Strength,
    /// TEXT and/or IMAGE; images are not classified on the box (docs say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_modalities: Option<Vec<Modality>>,
    /// TEXT and/or IMAGE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<Modality>>,
    #[serde(flatten)]
    /// Actions per direction.
    pub actions: BlockActions,
}

/// A content filter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterType {
    /// Sexual content.
    Sexual,
    /// Violence.
    Violence,
    /// Hate.
    Hate,
    /// Insults.
    Insults,
    /// Crime and wrongdoing.
    Misconduct,
    /// Jailbreaks and prompt injection.
    PromptAttack,
}

impl FilterType {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterType::Sexual => "SEXUAL",
            FilterType::Violence => "VIOLENCE",
            FilterType::Hate => "HATE",
            FilterType::Insults => "INSULTS",
            FilterType::Misconduct => "MISCONDUCT",
            FilterType::PromptAttack => "PROMPT_ATTACK",
        }
    }
}

/// A filter strength, and a detection's confidence bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strength {
    /// Off / no confidence.
    None,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

impl Strength {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strength::None => "NONE",
            Strength::Low => "LOW",
            Strength::Medium => "MEDIUM",
            Strength::High => "HIGH",
        }
    }
}

/// TEXT or IMAGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Modality {
    /// Text.
    Text,
    /// Images.
    Image,
}

/// Custom words and managed lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WordPolicy {
    /// 1–10,000 words or phrases (1–100 characters each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words_config: Option<Vec<WordConfig>>,
    /// `PROFANITY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_word_lists_config: Option<Vec<ManagedWordsConfig>>,
}

/// A custom word or phrase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WordConfig {
    /// The word or phrase.
    pub text: String,
    #[serde(flatten)]
    /// Actions per direction.
    pub actions: BlockActions,
}

/// A managed word list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedWordsConfig {
    /// `PROFANITY`.
    #[serde(rename = "type")]
    pub kind: ManagedList,
    #[serde(flatten)]
    /// Actions per direction.
    pub actions: BlockActions,
}

/// The managed word lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagedList {
    /// Profanity (a list shipped with Modelgate).
    #[serde(rename = "PROFANITY")]
    Profanity,
}

/// PII entities and regexes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SensitivePolicy {
    /// PII entity types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_entities_config: Option<Vec<PiiEntityConfig>>,
    /// Custom regexes (1–30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexes_config: Option<Vec<RegexConfig>>,
}

/// `action` plus the per-direction overrides of a sensitive-information entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveActions {
    /// BLOCK, ANONYMIZE or NONE, both directions unless overridden.
    pub action: Action,
    /// The prompt's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_action: Option<Action>,
    /// The answer's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_action: Option<Action>,
    /// Whether prompts are checked (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_enabled: Option<bool>,
    /// Whether answers are checked (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_enabled: Option<bool>,
}

impl SensitiveActions {
    /// The action for `source`, or `None` when the direction is disabled.
    pub fn action(&self, source: Source) -> Option<Action> {
        let (action, enabled) = match source {
            Source::Input => (self.input_action, self.input_enabled),
            Source::Output => (self.output_action, self.output_enabled),
        };
        enabled
            .unwrap_or(true)
            .then(|| action.unwrap_or(self.action))
    }
}

/// A PII entity type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PiiEntityConfig {
    /// One of [`PII_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    /// Actions.
    pub actions: SensitiveActions,
}

/// A custom regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexConfig {
    /// 1–100 characters.
    pub name: String,
    /// Up to 1,000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// 1–500 characters, `regex` crate syntax (linear time: no look-around or backreferences).
    pub pattern: String,
    #[serde(flatten)]
    /// Actions.
    pub actions: SensitiveActions,
}

/// Contextual grounding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroundingPolicy {
    /// GROUNDING and/or RELEVANCE.
    pub filters_config: Vec<GroundingFilterConfig>,
    /// Kept, not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_config: Option<Value>,
}

/// A grounding or relevance threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroundingFilterConfig {
    /// GROUNDING or RELEVANCE.
    #[serde(rename = "type")]
    pub kind: GroundingType,
    /// Answers scoring below it are blocked (0 ≤ t < 1).
    pub threshold: f64,
    /// BLOCK (default) or NONE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// GROUNDING or RELEVANCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GroundingType {
    /// The answer is supported by the source.
    Grounding,
    /// The answer addresses the query.
    Relevance,
}

impl GroundingType {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroundingType::Grounding => "GROUNDING",
            GroundingType::Relevance => "RELEVANCE",
        }
    }
}

/// A `ValidationException` in AWS's words, naming the member.
fn invalid(field: &str, value: impl std::fmt::Display, constraint: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
    ))
}

fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), Error> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(invalid(
            field,
            value,
            &format!("Member must have length between {min} and {max}"),
        ));
    }
    Ok(())
}

fn check_chars(
    field: &str,
    value: &str,
    ok: impl Fn(char) -> bool,
    pattern: &str,
) -> Result<(), Error> {
    if !value.chars().all(ok) {
        return Err(invalid(
            field,
            value,
            &format!("Member must satisfy regular expression pattern: {pattern}"),
        ));
    }
    Ok(())
}

fn check_count(field: &str, n: usize, min: usize, max: usize) -> Result<(), Error> {
    if n < min || n > max {
        return Err(invalid(
            field,
            format!("[{n} items]"),
            &format!("Member must have length between {min} and {max}"),
        ));
    }
    Ok(())
}

impl GuardrailDef {
    /// Check the limits botocore's model sets (lengths, counts, patterns, enums that serde
    /// could not check) and that every regex compiles; the error names the member.
    pub fn validate(&self) -> Result<(), Error> {
        check_len("name", &self.name, 1, 50)?;
        check_chars(
            "name",
            &self.name,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
            "[0-9a-zA-Z-_]+",
        )?;
        if let Some(d) = &self.description {
            check_len("description", d, 1, 200)?;
        }
        check_len(
            "blockedInputMessaging",
            &self.blocked_input_messaging,
            1,
            500,
        )?;
        check_len(
            "blockedOutputsMessaging",
            &self.blocked_outputs_messaging,
            1,
            500,
        )?;
        if let Some(t) = &self.topic_policy_config {
            check_count(
                "topicPolicyConfig.topicsConfig",
                t.topics_config.len(),
                1,
                30,
            )?;
            for (i, topic) in t.topics_config.iter().enumerate() {
                let f = format!("topicPolicyConfig.topicsConfig.{}.member", i + 1);
                check_len(&format!("{f}.name"), &topic.name, 1, 100)?;
                check_chars(
                    &format!("{f}.name"),
                    &topic.name,
                    |c| c.is_ascii_alphanumeric() || "-_ !?.".contains(c),
                    "[0-9a-zA-Z-_ !?.]+",
                )?;
                check_len(&format!("{f}.definition"), &topic.definition, 1, 200)?;
                check_count(&format!("{f}.examples"), topic.examples.len(), 0, 5)?;
                for (j, e) in topic.examples.iter().enumerate() {
                    check_len(&format!("{f}.examples.{}.member", j + 1), e, 1, 100)?;
                }
                no_anonymize(&f, &topic.actions)?;
            }
        }
        if let Some(c) = &self.content_policy_config {
            check_count(
                "contentPolicyConfig.filtersConfig",
                c.filters_config.len(),
                1,
                6,
            )?;
            let mut seen = std::collections::HashSet::new();
            for (i, filter) in c.filters_config.iter().enumerate() {
                let f = format!("contentPolicyConfig.filtersConfig.{}.member", i + 1);
                if !seen.insert(filter.kind) {
                    return Err(invalid(
                        &format!("{f}.type"),
                        filter.kind.as_str(),
                        "each filter type may appear once",
                    ));
                }
                if filter.kind == FilterType::PromptAttack
                    && filter.output_strength != Strength::None
                {
                    return Err(invalid(
                        &format!("{f}.outputStrength"),
                        filter.output_strength.as_str(),
                        "PROMPT_ATTACK applies to prompts only; its outputStrength must be NONE",
                    ));
                }
                no_anonymize(&f, &filter.actions)?;
            }
        }
        if let Some(w) = &self.word_policy_config {
            if let Some(words) = &w.words_config {
                check_count("wordPolicyConfig.wordsConfig", words.len(), 1, 10_000)?;
                for (i, word) in words.iter().enumerate() {
                    let f = format!("wordPolicyConfig.wordsConfig.{}.member", i + 1);
                    check_len(&format!("{f}.text"), &word.text, 1, 100)?;
                    if word.text.trim().is_empty() {
                        return Err(invalid(
                            &format!("{f}.text"),
                            &word.text,
                            "Member must not be blank",
                        ));
                    }
                    no_anonymize(&f, &word.actions)?;
                }
            }
            for (i, list) in w.managed_word_lists_config.iter().flatten().enumerate() {
                no_anonymize(
                    &format!("wordPolicyConfig.managedWordListsConfig.{}.member", i + 1),
                    &list.actions,
                )?;
            }
        }
        if let Some(s) = &self.sensitive_information_policy_config {
            if let Some(pii) = &s.pii_entities_config {
                check_count(
                    "sensitiveInformationPolicyConfig.piiEntitiesConfig",
                    pii.len(),
                    1,
                    31,
                )?;
                let mut seen = std::collections::HashSet::new();
                for (i, e) in pii.iter().enumerate() {
                    let f = format!(
                        "sensitiveInformationPolicyConfig.piiEntitiesConfig.{}.member.type",
                        i + 1
                    );
                    if !PII_TYPES.contains(&e.kind.as_str()) {
                        return Err(invalid(
                            &f,
                            &e.kind,
                            &format!(
                                "Member must satisfy enum value set: [{}]",
                                PII_TYPES.join(", ")
                            ),
                        ));
                    }
                    if !seen.insert(e.kind.as_str()) {
                        return Err(invalid(&f, &e.kind, "each PII type may appear once"));
                    }
                }
            }
            if let Some(regexes) = &s.regexes_config {
                check_count(
                    "sensitiveInformationPolicyConfig.regexesConfig",
                    regexes.len(),
                    1,
                    30,
                )?;
                for (i, r) in regexes.iter().enumerate() {
                    let f = format!(
                        "sensitiveInformationPolicyConfig.regexesConfig.{}.member",
                        i + 1
                    );
                    check_len(&format!("{f}.name"), &r.name, 1, 100)?;
                    if let Some(d) = &r.description {
                        check_len(&format!("{f}.description"), d, 1, 1000)?;
                    }
                    check_len(&format!("{f}.pattern"), &r.pattern, 1, 500)?;
                    if let Err(e) = regex::Regex::new(&r.pattern) {
                        return Err(invalid(
                            &format!("{f}.pattern"),
                            &r.pattern,
                            &format!(
                                "Member must be a valid regular expression ({})",
                                first_line(&e.to_string())
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(g) = &self.contextual_grounding_policy_config {
            check_count(
                "contextualGroundingPolicyConfig.filtersConfig",
                g.filters_config.len(),
                1,
                2,
            )?;
            for (i, filter) in g.filters_config.iter().enumerate() {
                let f = format!(
                    "contextualGroundingPolicyConfig.filtersConfig.{}.member.threshold",
                    i + 1
                );
                if !(0.0..1.0).contains(&filter.threshold) {
                    return Err(invalid(
                        &f,
                        filter.threshold,
                        "Member must be at least 0 and less than 1",
                    ));
                }
                if filter.action == Some(Action::Anonymize) {
                    return Err(invalid(
                        &format!(
                            "contextualGroundingPolicyConfig.filtersConfig.{}.member.action",
                            i + 1
                        ),
                        "ANONYMIZE",
                        "Member must satisfy enum value set: [BLOCK, NONE]",
                    ));
                }
            }
        }
        if let Some(tags) = &self.tags {
            check_count("tags", tags.len(), 0, 200)?;
        }
        if let Some(t) = &self.client_request_token {
            check_len("clientRequestToken", t, 1, 256)?;
        }
        Ok(())
    }

    /// Whether any sensitive-information entry masks in `source`.
    pub fn masks(&self, source: Source) -> bool {
        self.sensitive_information_policy_config
            .as_ref()
            .is_some_and(|s| {
                s.pii_entities_config
                    .iter()
                    .flatten()
                    .map(|e| &e.actions)
                    .chain(s.regexes_config.iter().flatten().map(|r| &r.actions))
                    .any(|a| a.action(source) == Some(Action::Anonymize))
            })
    }

    /// The `GetGuardrail` members that describe the policies (`topicPolicy`,
    /// `contentPolicy`, …): the config shapes under their read names.
    pub fn to_get(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        out.insert("name".into(), json!(self.name));
        if let Some(d) = &self.description {
            out.insert("description".into(), json!(d));
        }
        if let Some(t) = &self.topic_policy_config {
            let mut p = json!({ "topics": value(&t.topics_config) });
            if let Some(tier) = &t.tier_config {
                p["tier"] = tier.clone();
            }
            out.insert("topicPolicy".into(), p);
        }
        if let Some(c) = &self.content_policy_config {
            let mut p = json!({ "filters": value(&c.filters_config) });
            if let Some(tier) = &c.tier_config {
                p["tier"] = tier.clone();
            }
            out.insert("contentPolicy".into(), p);
        }
        if let Some(w) = &self.word_policy_config {
            let mut p = serde_json::Map::new();
            if let Some(words) = &w.words_config {
                p.insert("words".into(), value(words));
            }
            if let Some(lists) = &w.managed_word_lists_config {
                p.insert("managedWordLists".into(), value(lists));
            }
            out.insert("wordPolicy".into(), Value::Object(p));
        }
        if let Some(s) = &self.sensitive_information_policy_config {
            let mut p = serde_json::Map::new();
            if let Some(pii) = &s.pii_entities_config {
                p.insert("piiEntities".into(), value(pii));
            }
            p.insert(
                "regexes".into(),
                s.regexes_config.as_ref().map_or(json!([]), value),
            );
            out.insert("sensitiveInformationPolicy".into(), Value::Object(p));
        }
        if let Some(g) = &self.contextual_grounding_policy_config {
            let mut p = json!({ "filters": value(&g.filters_config) });
            if let Some(tier) = &g.tier_config {
                p["tier"] = tier.clone();
            }
            out.insert("contextualGroundingPolicy".into(), p);
        }
        if let Some(a) = &self.automated_reasoning_policy_config {
            out.insert("automatedReasoningPolicy".into(), a.clone());
        }
        out.insert(
            "blockedInputMessaging".into(),
            json!(self.blocked_input_messaging),
        );
        out.insert(
            "blockedOutputsMessaging".into(),
            json!(self.blocked_outputs_messaging),
        );
        out
    }
}

/// A serialisable value as JSON (the shapes here always serialise).
fn value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn no_anonymize(field: &str, actions: &BlockActions) -> Result<(), Error> {
    for (name, a) in [
        ("inputAction", actions.input_action),
        ("outputAction", actions.output_action),
    ] {
        if a == Some(Action::Anonymize) {
            return Err(invalid(
                &format!("{field}.{name}"),
                "ANONYMIZE",
                "Member must satisfy enum value set: [BLOCK, NONE]",
            ));
        }
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(extra: Value) -> Result<GuardrailDef, serde_json::Error> {
        let mut v =
            json!({"name": "g", "blockedInputMessaging": "no", "blockedOutputsMessaging": "no"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v)
    }

    #[test]
    fn limits_name_the_member() {
        let bad = def(
            json!({"sensitiveInformationPolicyConfig": {"regexesConfig": [
            {"name": "r", "pattern": "(unclosed", "action": "BLOCK"}]}}),
        )
        .map(|d| d.validate());
        let msg = format!("{bad:?}");
        assert!(
            msg.contains("sensitiveInformationPolicyConfig.regexesConfig.1.member.pattern"),
            "{msg}"
        );
        let bad = def(
            json!({"sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [
            {"type": "SHOE_SIZE", "action": "BLOCK"}]}}),
        )
        .map(|d| d.validate());
        assert!(format!("{bad:?}").contains("piiEntitiesConfig.1.member.type"));
        let bad = def(json!({"name": "has space"})).map(|d| d.validate());
        assert!(format!("{bad:?}").contains("'name'"));
        let ok = def(json!({"topicPolicyConfig": {"topicsConfig": [
            {"name": "Investment advice", "definition": "Advice on investing money.", "type": "DENY"}]}}));
        assert!(ok.is_ok_and(|d| d.validate().is_ok()));
    }

    #[test]
    fn get_shape_renames_the_policies() {
        let d = def(json!({"wordPolicyConfig": {"wordsConfig": [{"text": "foo"}]},
            "sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"}]}}))
        .ok()
        .map(|d| d.to_get());
        let g = Value::Object(d.unwrap_or_default());
        assert_eq!(g["wordPolicy"]["words"][0]["text"], "foo");
        assert_eq!(
            g["sensitiveInformationPolicy"]["piiEntities"][0]["action"],
            "ANONYMIZE"
        );
        assert_eq!(g["sensitiveInformationPolicy"]["regexes"], json!([]));
    }
}
