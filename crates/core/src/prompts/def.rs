//! A prompt template: botocore's `bedrock-agent` `CreatePrompt` shape (one variant, TEXT or
//! CHAT, `{{variable}}` placeholders, a model and inference settings, tools), plus
//! Modelgate's governance fields under `modelgate` (typed variables, a response JSON schema,
//! stored example inputs and the thresholds a new version must meet against the last).
//!
//! Templates are rendered with `minijinja` — AWS's `{{name}}` placeholders are its expression
//! syntax, and authors may use its filters and conditions too — with strict undefined: a
//! variable that is not given is an error naming it, and a template that uses a variable it
//! does not declare is refused when saved.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};
use modelgate_types::{
    ChatRequest, Error, InferenceConfig, Message, ResponseFormat, Role, SystemBlock, ToolConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `CreatePrompt` / `UpdatePrompt`'s body (and a stored version's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptDef {
    /// The prompt's name (`([0-9a-zA-Z][_-]?){1,100}`).
    pub name: String,
    /// What the prompt is for (1–200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Accepted and kept (the store encrypts nothing per prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_encryption_key_arn: Option<String>,
    /// The variant used (the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_variant: Option<String>,
    /// At most one variant, as AWS allows.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// Idempotency token (not stored).
    #[serde(default, skip_serializing)]
    pub client_token: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Modelgate's governance fields (not in AWS's shape; boto3 callers leave them out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modelgate: Option<Governance>,
}

/// `PromptVariant`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Variant {
    /// The variant's name.
    pub name: String,
    /// `TEXT` or `CHAT`.
    pub template_type: String,
    /// The template.
    pub template_configuration: TemplateConfiguration,
    /// The model the prompt runs on (a caller may not change it through Converse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Inference settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_configuration: Option<InferenceConfiguration>,
    /// Key/value metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<Value>>,
    /// Model-specific request fields (kept; passed through as Converse's are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_model_request_fields: Option<Value>,
    /// An agent resource (refused: Modelgate has no agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_ai_resource: Option<Value>,
}

/// `PromptTemplateConfiguration`: exactly one of `text` and `chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateConfiguration {
    /// A single text prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextTemplate>,
    /// System blocks, messages and tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatTemplate>,
}

/// `TextPromptTemplateConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextTemplate {
    /// The template text.
    pub text: String,
    /// A prompt-cache checkpoint (kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_point: Option<Value>,
    /// The variables the text uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_variables: Option<Vec<InputVariable>>,
}

/// `ChatPromptTemplateConfiguration` (messages and system blocks in Converse's shapes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatTemplate {
    /// The conversation.
    pub messages: Vec<Value>,
    /// System blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Vec<Value>>,
    /// The variables the template uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_variables: Option<Vec<InputVariable>>,
    /// Tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_configuration: Option<Value>,
}

/// `PromptInputVariable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputVariable {
    /// The variable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `PromptInferenceConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceConfiguration {
    /// Text models' settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextInference>,
}

/// `PromptModelInferenceConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextInference {
    /// 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Output token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// At most 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
}

/// Modelgate's governance of a prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Governance {
    /// Typed variables (those only named in `inputVariables` are strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, VariableSpec>,
    /// The answer must be JSON matching this schema (asked of the model as structured output
    /// and checked when the answer arrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    /// Example inputs the comparison of two versions runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
    /// What a new version must meet against the one it replaces.
    #[serde(default)]
    pub thresholds: Thresholds,
}

/// One typed variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    /// `string` (default), `number`, `integer`, `boolean`, `array`, `object` or `any`.
    #[serde(default = "string_type", rename = "type")]
    pub kind: String,
    /// What it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Used when the caller gives none (a variable with a default is optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

fn string_type() -> String {
    "string".into()
}

/// A stored example input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// A label for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The variables.
    pub variables: Map<String, Value>,
}

/// The thresholds of a version comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Lowest mean similarity of the new outputs to the old ones (0–1, normalised
    /// Levenshtein); `None`: not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_similarity: Option<f64>,
    /// Highest ratio of the new version's mean latency to the old one's; `None`: not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_ratio: Option<f64>,
    /// Highest share of examples the new version may fail (errors, invalid JSON).
    pub max_error_rate: f64,
    /// Every answer must match the response schema (when there is one).
    pub require_schema_valid: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_similarity: None,
            max_latency_ratio: None,
            max_error_rate: 0.0,
            require_schema_valid: true,
        }
    }
}

/// A name AWS accepts for prompts, variants and variables: `([0-9a-zA-Z][_-]?){1,100}`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() {
        return false;
    }
    let mut units = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            return false;
        }
        units += 1;
        i += 1;
        if i < b.len() && (b[i] == b'_' || b[i] == b'-') {
            i += 1;
        }
    }
    units <= 100
}

fn invalid(member: &str, why: impl std::fmt::Display) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value at '{member}' failed to satisfy constraint: {why}"
    ))
}

/// A strict environment: an undefined variable is an error.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// The variables a template text uses (not counting minijinja's globals).
fn used_variables(
    env: &Environment<'_>,
    text: &str,
    member: &str,
) -> Result<BTreeSet<String>, Error> {
    let t = env
        .template_from_str(text)
        .map_err(|e| invalid(member, format!("the template does not parse: {e}")))?;
    let globals: BTreeSet<&str> = env.globals().map(|(k, _)| k).collect();
    Ok(t.undeclared_variables(false)
        .into_iter()
        .filter(|v| !globals.contains(v.as_str()))
        .collect())
}

/// Apply `f` to every `text` member of a JSON value.
fn each_text(
    v: &mut Value,
    f: &mut dyn FnMut(&mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                match child {
                    Value::String(s) if k == "text" => f(s)?,
                    other => each_text(other, f)?,
                }
            }
        }
        Value::Array(a) => {
            for c in a {
                each_text(c, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A rendered prompt: the request to send (its `model` is the variant's model, or empty when
/// the prompt names none) and the schema the answer must match.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The request.
    pub request: ChatRequest,
    /// The response schema, when the prompt has one.
    pub response_schema: Option<Value>,
}

impl PromptDef {
    /// The variant in use.
    pub fn variant(&self) -> Option<&Variant> {
        self.variants.first()
    }

    /// The variables the prompt declares: `inputVariables` (strings) and the typed ones.
    pub fn declared(&self) -> BTreeMap<String, VariableSpec> {
        let mut out = BTreeMap::new();
        if let Some(v) = self.variant() {
            let listed = match (
                &v.template_configuration.text,
                &v.template_configuration.chat,
            ) {
                (Some(t), _) => t.input_variables.clone(),
                (None, Some(c)) => c.input_variables.clone(),
                _ => None,
            };
            for name in listed
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.name)
            {
                out.insert(
                    name,
                    VariableSpec {
                        kind: string_type(),
                        description: None,
                        default: None,
                    },
                );
            }
        }
        if let Some(g) = &self.modelgate {
            for (k, spec) in &g.variables {
                out.insert(k.clone(), spec.clone());
            }
        }
        out
    }

    /// Check the definition against botocore's limits and the templates against their
    /// declared variables. Nothing is stored when this fails.
    pub fn validate(&self) -> Result<(), Error> {
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                "Member must satisfy regular expression pattern: ([0-9a-zA-Z][_-]?){1,100}",
            ));
        }
        if let Some(d) = &self.description {
            if d.is_empty() || d.chars().count() > 200 {
                return Err(invalid(
                    "description",
                    "Member must have length between 1 and 200",
                ));
            }
        }
        if self.variants.len() > 1 {
            return Err(invalid(
                "variants",
                "Member must have length less than or equal to 1",
            ));
        }
        if let (Some(d), Some(v)) = (&self.default_variant, self.variant()) {
            if d != &v.name {
                return Err(Error::validation(format!(
                    "defaultVariant '{d}' is not one of the prompt's variants."
                )));
            }
        }
        let declared = self.declared();
        for (name, spec) in &declared {
            if !valid_name(name) {
                return Err(invalid("inputVariables.name", format!("'{name}' must satisfy regular expression pattern: ([0-9a-zA-Z][_-]?){{1,100}}")));
            }
            if ![
                "string", "number", "integer", "boolean", "array", "object", "any",
            ]
            .contains(&spec.kind.as_str())
            {
                return Err(Error::validation(format!(
                    "modelgate.variables.{name}.type: '{}' is not one of string, number, integer, boolean, array, object, any",
                    spec.kind
                )));
            }
            if let Some(d) = &spec.default {
                check_type(name, &spec.kind, d)?;
            }
        }
        if declared.len() > 20 {
            return Err(invalid(
                "inputVariables",
                "Member must have length less than or equal to 20",
            ));
        }
        if let Some(g) = &self.modelgate {
            if let Some(schema) = &g.response_schema {
                crate::endpoints::compile_schema(schema)
                    .map_err(|e| Error::validation(format!("modelgate.response_schema: {e}")))?;
            }
            for (i, ex) in g.examples.iter().enumerate() {
                self.bind(&ex.variables).map_err(|e| {
                    Error::validation(format!("modelgate.examples[{i}]: {}", e.message))
                })?;
            }
        }
        let Some(v) = self.variant() else {
            return Ok(());
        };
        if !valid_name(&v.name) {
            return Err(invalid(
                "variants.1.member.name",
                "Member must satisfy regular expression pattern: ([0-9a-zA-Z][_-]?){1,100}",
            ));
        }
        if v.gen_ai_resource.is_some() {
            return Err(Error::validation(
                "genAiResource: Modelgate has no agents; a prompt variant runs on a model (modelId).",
            ));
        }
        if let Some(TextInference {
            temperature,
            top_p,
            stop_sequences,
            ..
        }) = v
            .inference_configuration
            .as_ref()
            .and_then(|i| i.text.as_ref())
        {
            for (member, value) in [("temperature", temperature), ("topP", top_p)] {
                if value.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
                    return Err(invalid(
                        &format!("variants.1.member.inferenceConfiguration.text.{member}"),
                        "Member must be between 0 and 1",
                    ));
                }
            }
            if stop_sequences.as_ref().is_some_and(|s| s.len() > 4) {
                return Err(invalid(
                    "variants.1.member.inferenceConfiguration.text.stopSequences",
                    "Member must have length less than or equal to 4",
                ));
            }
        }
        let env = environment();
        let mut used = BTreeSet::new();
        let c = &v.template_configuration;
        match (v.template_type.as_str(), &c.text, &c.chat) {
            ("TEXT", Some(t), None) => {
                if t.text.is_empty() {
                    return Err(invalid("templateConfiguration.text.text", "Member must have length greater than or equal to 1"));
                }
                used.extend(used_variables(&env, &t.text, "templateConfiguration.text.text")?);
            }
            ("CHAT", None, Some(chat)) => {
                let mut parts = Value::Array(chat.messages.clone());
                if let Some(s) = &chat.system {
                    parts = Value::Array(vec![parts, Value::Array(s.clone())]);
                }
                each_text(&mut parts, &mut |s| {
                    used.extend(used_variables(&env, s, "templateConfiguration.chat")?);
                    Ok(())
                })?;
                // The shapes must be Converse's.
                serde_json::from_value::<Vec<Message>>(Value::Array(chat.messages.clone()))
                    .map_err(|e| Error::validation(format!("templateConfiguration.chat.messages: {e}")))?;
                if let Some(s) = &chat.system {
                    serde_json::from_value::<Vec<SystemBlock>>(Value::Array(s.clone()))
                        .map_err(|e| Error::validation(format!("templateConfiguration.chat.system: {e}")))?;
                }
                if let Some(t) = &chat.tool_configuration {
                    serde_json::from_value::<ToolConfig>(t.clone()).map_err(|e| {
                        Error::validation(format!("templateConfiguration.chat.toolConfiguration: {e}"))
                    })?;
                }
            }
            (kind, _, _) => {
                return Err(Error::validation(format!(
                    "templateType {kind}: a TEXT variant needs templateConfiguration.text and a CHAT variant templateConfiguration.chat (exactly one)"
                )))
            }
        }
        let undeclared: Vec<&String> = used.iter().filter(|u| !declared.contains_key(*u)).collect();
        if !undeclared.is_empty() {
            return Err(Error::validation(format!(
                "The template uses undeclared variable(s) {}; declare them in inputVariables (or modelgate.variables).",
                undeclared
                    .iter()
                    .map(|u| format!("'{u}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// The values to render with: each given value checked against its declared type,
    /// defaults filled in, a missing or unknown variable refused by name.
    pub fn bind(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
        let declared = self.declared();
        let unknown: Vec<&String> = given
            .keys()
            .filter(|k| !declared.contains_key(*k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::validation(format!(
                "Unknown prompt variable(s) {}; the prompt declares {}.",
                unknown
                    .iter()
                    .map(|u| format!("'{u}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared
                        .keys()
                        .map(|k| format!("'{k}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        let mut out = Map::new();
        for (name, spec) in &declared {
            let value = match (given.get(name), &spec.default) {
                (Some(v), _) => coerce(name, &spec.kind, v)?,
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return Err(Error::validation(format!(
                        "Missing value for prompt variable '{name}'."
                    )))
                }
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// Render with `given` variables into a request for `model` (the variant's model when
    /// `None`).
    pub fn render(&self, given: &Map<String, Value>) -> Result<Rendered, Error> {
        let vars = Value::Object(self.bind(given)?);
        let variant = self.variant().ok_or_else(|| {
            Error::validation(format!(
                "The prompt '{}' has no variant to render.",
                self.name
            ))
        })?;
        let env = environment();
        let render = |text: &str| -> Result<String, Error> {
            env.render_str(text, &vars).map_err(|e| {
                Error::validation(format!("The prompt '{}' does not render: {e}", self.name))
            })
        };
        let c = &variant.template_configuration;
        let (system, messages, tools) = match (&c.text, &c.chat) {
            (Some(t), _) => (
                Vec::new(),
                vec![Message::text(Role::User, render(&t.text)?)],
                None,
            ),
            (None, Some(chat)) => {
                let mut messages = Value::Array(chat.messages.clone());
                each_text(&mut messages, &mut |s| {
                    *s = render(s)?;
                    Ok(())
                })?;
                let mut system = Value::Array(chat.system.clone().unwrap_or_default());
                each_text(&mut system, &mut |s| {
                    *s = render(s)?;
                    Ok(())
                })?;
                let parse = |what: &str, e: serde_json::Error| {
                    Error::validation(format!(
                        "The prompt's {what} do not parse after rendering: {e}"
                    ))
                };
                (
                    serde_json::from_value(system).map_err(|e| parse("system blocks", e))?,
                    serde_json::from_value(messages).map_err(|e| parse("messages", e))?,
                    chat.tool_configuration
                        .clone()
                        .map(serde_json::from_value::<ToolConfig>)
                        .transpose()
                        .map_err(|e| parse("tools", e))?,
                )
            }
            (None, None) => return Err(Error::validation("The prompt variant has no template.")),
        };
        let text = variant
            .inference_configuration
            .as_ref()
            .and_then(|i| i.text.clone());
        let inference = InferenceConfig {
            max_tokens: text.as_ref().and_then(|t| t.max_tokens),
            temperature: text.as_ref().and_then(|t| t.temperature),
            top_p: text.as_ref().and_then(|t| t.top_p),
            stop_sequences: text.and_then(|t| t.stop_sequences).unwrap_or_default(),
        };
        let response_schema = self
            .modelgate
            .as_ref()
            .and_then(|g| g.response_schema.clone());
        let response_format = response_schema
            .as_ref()
            .map(|schema| ResponseFormat::JsonSchema {
                name: self.name.clone(),
                description: self.description.clone(),
                schema: schema.clone(),
                strict: true,
            });
        Ok(Rendered {
            request: ChatRequest {
                model: variant.model_id.clone().unwrap_or_default(),
                system,
                messages,
                inference,
                tools,
                response_format,
                reasoning: None,
                generation: Default::default(),
                end_user: None,
                native: None,
            },
            response_schema,
        })
    }
}

/// A value of the declared type; text (AWS's `promptVariables` are all text) is parsed when
/// the type is not a string.
fn coerce(name: &str, kind: &str, v: &Value) -> Result<Value, Error> {
    if let (Value::String(s), true) = (v, kind != "string") {
        if let Ok(parsed) = serde_json::from_str::<Value>(s) {
            if check_type(name, kind, &parsed).is_ok() {
                return Ok(parsed);
            }
        }
    }
    check_type(name, kind, v)?;
    Ok(v.clone())
}

fn check_type(name: &str, kind: &str, v: &Value) -> Result<(), Error> {
    let ok = match kind {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "any" => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "Prompt variable '{name}' must be of type {kind}."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat_prompt() -> PromptDef {
        serde_json::from_value(json!({
            "name": "support-reply",
            "variants": [{
                "name": "v", "templateType": "CHAT", "modelId": "qwen",
                "templateConfiguration": {"chat": {
                    "system": [{"text": "You help {{ customer_name }}."}],
                    "messages": [{"role": "user", "content": [{"text": "Issue: {{issue}}{% if urgent %} (urgent){% endif %}"}]}],
                    "inputVariables": [{"name": "customer_name"}, {"name": "issue"}]
                }},
                "inferenceConfiguration": {"text": {"temperature": 0.2, "maxTokens": 64}}
            }],
            "modelgate": {"variables": {"urgent": {"type": "boolean", "default": false}}}
        }))
        .unwrap()
    }

    #[test]
    fn chat_prompt_renders_with_typed_defaults() {
        let p = chat_prompt();
        p.validate().unwrap();
        let vars = json!({"customer_name": "Ana", "issue": "refund", "urgent": "true"});
        let r = p.render(vars.as_object().unwrap()).unwrap();
        assert_eq!(r.request.model, "qwen");
        assert_eq!(r.request.system[0].text(), Some("You help Ana."));
        assert_eq!(
            r.request.messages[0].joined_text(),
            "Issue: refund (urgent)"
        );
        assert_eq!(r.request.inference.max_tokens, Some(64));
        let r = p
            .render(
                json!({"customer_name": "Ana", "issue": "x"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(r.request.messages[0].joined_text(), "Issue: x");
    }

    #[test]
    fn missing_unknown_and_mistyped_variables_are_named() {
        let p = chat_prompt();
        let e = p
            .render(json!({"customer_name": "Ana"}).as_object().unwrap())
            .unwrap_err();
        assert!(e.message.contains("'issue'"), "{}", e.message);
        let e = p
            .render(
                json!({"customer_name": "A", "issue": "b", "colour": "red"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap_err();
        assert!(e.message.contains("'colour'"), "{}", e.message);
        let e = p
            .render(
                json!({"customer_name": "A", "issue": "b", "urgent": 3})
                    .as_object()
                    .unwrap(),
            )
            .unwrap_err();
        assert!(e.message.contains("boolean"), "{}", e.message);
    }

    #[test]
    fn undeclared_variables_and_bad_templates_are_refused_at_save() {
        let mut p = chat_prompt();
        p.variants[0]
            .template_configuration
            .chat
            .as_mut()
            .unwrap()
            .messages =
            vec![json!({"role": "user", "content": [{"text": "{{ issue }} {{ order_id }}"}]})];
        let e = p.validate().unwrap_err();
        assert!(e.message.contains("'order_id'"), "{}", e.message);
        p.variants[0]
            .template_configuration
            .chat
            .as_mut()
            .unwrap()
            .messages = vec![json!({"role": "user", "content": [{"text": "{{ issue "}]})];
        assert!(p.validate().unwrap_err().message.contains("does not parse"));
        let mut p = chat_prompt();
        p.name = "bad name".into();
        assert!(p.validate().is_err());
        let mut p = chat_prompt();
        p.variants[0].template_type = "TEXT".into();
        assert!(p.validate().is_err());
    }

    #[test]
    fn names_follow_aws_pattern() {
        assert!(valid_name("a"));
        assert!(valid_name("support-reply_v2"));
        assert!(!valid_name("-a"));
        assert!(!valid_name("a--b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(101)));
    }

    #[test]
    fn text_prompt_renders_one_user_message() {
        let p: PromptDef = serde_json::from_value(json!({
            "name": "t", "variants": [{"name": "v", "templateType": "TEXT",
            "templateConfiguration": {"text": {"text": "Summarise {{topic}}", "inputVariables": [{"name": "topic"}]}}}]
        }))
        .unwrap();
        p.validate().unwrap();
        let r = p
            .render(json!({"topic": "tides"}).as_object().unwrap())
            .unwrap();
        assert_eq!(r.request.messages[0].joined_text(), "Summarise tides");
        assert_eq!(r.request.model, "");
    }
}
