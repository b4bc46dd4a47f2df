//! Dialect-native parameters: what a caller sent that has no canonical equivalent.
//!
//! Each front door keeps such parameters as they were named and sent ([`Native`]). An upstream
//! of the same dialect gets them unchanged ([`Native::merge_into`]); any other provider cannot
//! take them, and each one's fate there is fixed here ([`Native::foreign_fate`]): dropped and
//! named in `x-modelgate-dropped-params`, kept by the gateway only (metadata that routing
//! reads), or refused with a 400 before any upstream call. Parameters a dialect does not define
//! at all are refused the way that API refuses them, unless the upstream speaks that dialect
//! (OpenAI-compatible servers define their own extensions).

use serde_json::{Map, Value};

/// An upstream API dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// OpenAI Chat Completions (and the servers that speak it: vLLM, Ollama, llama.cpp…).
    OpenAi,
    /// The Anthropic Messages API.
    Anthropic,
    /// The Bedrock Runtime Converse API.
    Bedrock,
}

impl Wire {
    /// How the dialect is named in messages.
    pub fn name(self) -> &'static str {
        match self {
            Wire::OpenAi => "OpenAI",
            Wire::Anthropic => "Anthropic",
            Wire::Bedrock => "Bedrock Converse",
        }
    }

    /// The dialect's parameters with no canonical form, and their fate elsewhere.
    fn table(self) -> &'static [(&'static str, Foreign)] {
        match self {
            Wire::OpenAi => OPENAI,
            Wire::Anthropic => ANTHROPIC,
            Wire::Bedrock => BEDROCK,
        }
    }

    /// Whether the dialect defines the parameter at `path` (dotted, as
    /// [`NativeParam::path`]); members it does not define are its API's "unknown" ones.
    pub fn defines(self, path: &str) -> bool {
        self.table().iter().any(|(name, _)| *name == path)
    }
}

/// One parameter: a top-level member, or a member of a top-level object (`parent`), as in
/// Converse's `additionalModelRequestFields.top_k` or Anthropic's `output_config.effort`.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeParam {
    /// The object the member belongs to; `None` for a top-level member.
    pub parent: Option<&'static str>,
    /// The member's name.
    pub name: String,
    /// Its value, as sent.
    pub value: Value,
}

impl NativeParam {
    /// A top-level member.
    pub fn top(name: impl Into<String>, value: Value) -> Self {
        Self {
            parent: None,
            name: name.into(),
            value,
        }
    }

    /// A member of the top-level object `parent`.
    pub fn under(parent: &'static str, name: impl Into<String>, value: Value) -> Self {
        Self {
            parent: Some(parent),
            name: name.into(),
            value,
        }
    }

    /// The dotted path, as error messages and `x-modelgate-dropped-params` name it.
    pub fn path(&self) -> String {
        match self.parent {
            Some(p) => format!("{p}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// What happens to a native parameter on a provider of another dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Left out; the answer names it in `x-modelgate-dropped-params`.
    Dropped,
    /// Read by the gateway itself (routing, records) and not sent; nothing to report.
    Kept,
    /// The call is refused with this reason (the parameter asks for something no other
    /// provider can do).
    Refused(String),
}

/// A request's native parameters and the dialect they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    /// The caller's dialect.
    pub wire: Wire,
    /// The parameters, in the order they came.
    pub params: Vec<NativeParam>,
}

impl Native {
    /// `None` when there are no parameters.
    pub fn new(wire: Wire, params: Vec<NativeParam>) -> Option<Self> {
        (!params.is_empty()).then_some(Self { wire, params })
    }

    /// Put the parameters into an upstream body of the same dialect. Members the canonical
    /// translation already wrote win (they came from the same request).
    pub fn merge_into(&self, body: &mut Value) {
        let Some(body) = body.as_object_mut() else {
            return;
        };
        for p in &self.params {
            let target: &mut Map<String, Value> = match p.parent {
                None => body,
                Some(parent) => {
                    let slot = body
                        .entry(parent)
                        .or_insert_with(|| Value::Object(Map::new()));
                    match slot.as_object_mut() {
                        Some(obj) => obj,
                        None => continue,
                    }
                }
            };
            target
                .entry(p.name.clone())
                .or_insert_with(|| p.value.clone());
        }
    }

    /// The fate of `param` of this dialect on a provider that speaks another (or none).
    pub fn foreign_fate(&self, param: &NativeParam) -> Fate {
        let path = param.path();
        let matches = |name: &str| match name.strip_suffix(".*") {
            Some(parent) => param.parent == Some(parent),
            None => name == path,
        };
        match self.wire.table().iter().find(|(name, _)| matches(name)) {
            Some((_, Foreign::Drop)) => Fate::Dropped,
            Some((_, Foreign::Keep)) => Fate::Kept,
            Some((_, Foreign::Refuse(why))) => Fate::Refused(format!(
                "The parameter '{path}' {why}; only an {} upstream can honour it.",
                self.wire.name()
            )),
            None => Fate::Refused(match self.wire {
                Wire::OpenAi => format!("Unrecognized request argument supplied: {path}"),
                Wire::Anthropic => format!("{path}: Extra inputs are not permitted"),
                Wire::Bedrock => format!("Unknown parameter '{path}'"),
            }),
        }
    }
}

/// How a known native parameter fares on another dialect's provider.
enum Foreign {
    Drop,
    Keep,
    Refuse(&'static str),
}

/// OpenAI Chat Completions parameters with no canonical form (the chat door parses the rest).
const OPENAI: &[(&str, Foreign)] = &[
    ("store", Foreign::Drop),
    ("service_tier", Foreign::Drop),
    ("prediction", Foreign::Drop),
    ("prompt_cache_key", Foreign::Drop),
    ("prompt_cache_retention", Foreign::Drop),
    ("safety_identifier", Foreign::Drop),
    ("verbosity", Foreign::Drop),
    ("metadata", Foreign::Keep),
    (
        "modalities",
        Foreign::Refuse("asks for output other than text"),
    ),
    ("audio", Foreign::Refuse("asks for audio output")),
    (
        "web_search_options",
        Foreign::Refuse("asks the model to search the web"),
    ),
    (
        "functions",
        Foreign::Refuse("is the deprecated form of 'tools'; send 'tools'"),
    ),
    (
        "function_call",
        Foreign::Refuse("is the deprecated form of 'tool_choice'; send 'tool_choice'"),
    ),
];

/// Anthropic Messages parameters with no canonical form.
const ANTHROPIC: &[(&str, Foreign)] = &[
    ("service_tier", Foreign::Drop),
    ("cache_control", Foreign::Drop),
    ("context_management", Foreign::Drop),
    ("inference_geo", Foreign::Drop),
    ("speed", Foreign::Drop),
    ("diagnostics", Foreign::Drop),
    ("user_profile_id", Foreign::Drop),
    ("workspace_id", Foreign::Drop),
    ("output_config.effort", Foreign::Drop),
    (
        "container",
        Foreign::Refuse("names a code-execution container"),
    ),
    (
        "mcp_servers",
        Foreign::Refuse("asks the model to call MCP servers"),
    ),
];

/// Converse parameters with no canonical form. `additionalModelRequestFields` are the model's
/// own settings: another provider's model has no use for them.
const BEDROCK: &[(&str, Foreign)] = &[
    ("additionalModelRequestFields.*", Foreign::Drop),
    ("additionalModelResponseFieldPaths", Foreign::Drop),
    ("performanceConfig", Foreign::Drop),
    ("serviceTier", Foreign::Drop),
    ("outputConfig.effort", Foreign::Drop),
    ("requestMetadata", Foreign::Keep),
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_fills_without_overwriting() {
        let native = Native::new(
            Wire::Bedrock,
            vec![
                NativeParam::under("additionalModelRequestFields", "top_k", json!(5)),
                NativeParam::under("additionalModelRequestFields", "thinking", json!("x")),
                NativeParam::top("serviceTier", json!({"type": "priority"})),
            ],
        )
        .unwrap();
        let mut body = json!({"additionalModelRequestFields": {"thinking": {"type": "enabled"}}});
        native.merge_into(&mut body);
        assert_eq!(
            body,
            json!({
                "additionalModelRequestFields": {"thinking": {"type": "enabled"}, "top_k": 5},
                "serviceTier": {"type": "priority"}
            })
        );
    }

    #[test]
    fn foreign_fates_follow_the_tables() {
        let openai = Native::new(Wire::OpenAi, vec![NativeParam::top("x", json!(1))]).unwrap();
        let fate = |n: &Native, p: NativeParam| n.foreign_fate(&p);
        assert_eq!(
            fate(&openai, NativeParam::top("store", json!(true))),
            Fate::Dropped
        );
        assert_eq!(
            fate(&openai, NativeParam::top("metadata", json!({}))),
            Fate::Kept
        );
        assert!(
            matches!(fate(&openai, NativeParam::top("audio", json!({}))), Fate::Refused(m) if m.contains("'audio'"))
        );
        assert!(
            matches!(fate(&openai, NativeParam::top("tempurature", json!(1))), Fate::Refused(m) if m == "Unrecognized request argument supplied: tempurature")
        );
        let bedrock = Native {
            wire: Wire::Bedrock,
            ..openai.clone()
        };
        let extra = NativeParam::under("additionalModelRequestFields", "anthropic_beta", json!([]));
        assert_eq!(fate(&bedrock, extra), Fate::Dropped);
        assert!(matches!(
            fate(&bedrock, NativeParam::top("bogus", json!(1))),
            Fate::Refused(_)
        ));
        let anthropic = Native {
            wire: Wire::Anthropic,
            ..openai
        };
        let effort = NativeParam::under("output_config", "effort", json!("low"));
        assert_eq!(effort.path(), "output_config.effort");
        assert_eq!(fate(&anthropic, effort), Fate::Dropped);
    }
}
