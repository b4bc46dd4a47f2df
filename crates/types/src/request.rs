//! Chat and embedding requests.

use serde::{Deserialize, Serialize};

use crate::message::{Message, SystemBlock};

/// A chat (Converse) request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model id as the caller named it (after percent-decoding).
    pub model: String,
    /// System prompt blocks.
    pub system: Vec<SystemBlock>,
    /// The conversation so far; never empty once validated.
    pub messages: Vec<Message>,
    /// Sampling and length settings.
    pub inference: InferenceConfig,
    /// Tools the model may call.
    pub tools: Option<ToolConfig>,
    /// Structured output: the answer must be JSON (and match a schema when one is given).
    pub response_format: Option<ResponseFormat>,
    /// Extended thinking: the model reasons before it answers, within a token budget.
    /// `None` leaves the model's default (no extended thinking).
    pub reasoning: Option<Reasoning>,
    /// Sampling settings beyond `inferenceConfig` (seed, log-probabilities, top-k,
    /// penalties, logit bias, parallel tool calls).
    pub generation: Generation,
    /// The end user the call is made for (OpenAI `user`, Anthropic `metadata.user_id`): sent
    /// to upstreams that take it; it does not shape the answer.
    pub end_user: Option<String>,
    /// Parameters of the caller's dialect with no canonical equivalent, forwarded unchanged
    /// to an upstream of the same dialect ([`crate::params`]).
    pub native: Option<crate::params::Native>,
}

/// Generation settings that Converse's `inferenceConfig` does not have, each in the one form
/// every dialect that has it maps to. Each provider honours, forwards, maps, drops (naming it)
/// or refuses them explicitly; the fates are listed in `docs/front-doors.md`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    /// Sampling seed: the same seed, input and settings give the same output on models that
    /// honour it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Return each generated token's log-probability with this many most likely alternatives
    /// (0 to [`Generation::MAX_TOP_LOGPROBS`]); `None` returns none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u8>,
    /// Sample only from the `k` most likely tokens (Anthropic `top_k`; Converse
    /// `additionalModelRequestFields.top_k`; the extension of vLLM, Ollama and llama.cpp's
    /// OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// OpenAI `frequency_penalty` (-2 to 2): lowers a token's odds by how often it appeared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// OpenAI `presence_penalty` (-2 to 2): lowers a token's odds once it has appeared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// OpenAI `logit_bias`: token id → bias (-100 to 100) added to its logit. Token ids are the
    /// serving model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<std::collections::BTreeMap<u32, f32>>,
    /// Whether the model may call several tools in one turn (OpenAI `parallel_tool_calls`;
    /// Anthropic's `disable_parallel_tool_use` is its negation). `None` is the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

impl Generation {
    /// Most alternatives per token, as in OpenAI's `top_logprobs`.
    pub const MAX_TOP_LOGPROBS: u8 = 20;

    /// Whether anything is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Check OpenAI's ranges; messages name the OpenAI field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::validation(m).with_code("invalid_value"));
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if v.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
                return bad(format!("{name} must be between -2 and 2"));
            }
        }
        if self.top_k == Some(0) {
            return bad("top_k must be a positive integer".into());
        }
        if let Some(bias) = &self.logit_bias {
            if bias.len() > 300 {
                return bad("logit_bias may have at most 300 entries".into());
            }
            if let Some((token, _)) = bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(*b)) {
                return bad(format!("logit_bias.{token} must be between -100 and 100"));
            }
        }
        Ok(())
    }
}

/// Extended thinking ("reasoning") settings, in the one form every dialect maps to: a token
/// budget, as in Anthropic's `thinking.budget_tokens` and Converse's
/// `additionalModelRequestFields.thinking`. OpenAI's `reasoning_effort` maps to budgets by
/// [`Reasoning::from_effort`] and back by [`Reasoning::effort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reasoning {
    /// Tokens the model may spend thinking; at least [`Reasoning::MIN_BUDGET`].
    pub budget_tokens: u32,
}

impl Reasoning {
    /// The smallest budget Anthropic's models accept, and so the smallest the gateway takes.
    pub const MIN_BUDGET: u32 = 1024;

    /// The budget for an OpenAI `reasoning_effort`: `minimal` and `low` → 1024, `medium` →
    /// 2048, `high` → 4096; `none` turns reasoning off. Any other value is a validation error
    /// naming `field`.
    pub fn from_effort(effort: &str, field: &str) -> crate::Result<Option<Reasoning>> {
        let budget_tokens = match effort {
            "none" => return Ok(None),
            "minimal" | "low" => Self::MIN_BUDGET,
            "medium" => 2048,
            "high" => 4096,
            other => {
                return Err(crate::Error::validation(format!(
                    "{field} must be one of none, minimal, low, medium, high (got '{other}')"
                )))
            }
        };
        Ok(Some(Reasoning { budget_tokens }))
    }

    /// The OpenAI `reasoning_effort` closest to this budget: up to 1024 → `low`, up to 2048 →
    /// `medium`, above → `high`.
    pub fn effort(&self) -> &'static str {
        match self.budget_tokens {
            0..=1024 => "low",
            1025..=2048 => "medium",
            _ => "high",
        }
    }

    /// Read an Anthropic-style `thinking` object (`{"type":"enabled","budget_tokens":N}` or
    /// `{"type":"disabled"}`), as both the Anthropic dialect and Converse's
    /// `additionalModelRequestFields.thinking` carry it. Errors name `field`.
    pub fn from_thinking(
        thinking: &serde_json::Value,
        field: &str,
    ) -> crate::Result<Option<Reasoning>> {
        let bad = |why: &str| crate::Error::validation(format!("{field}: {why}"));
        let obj = thinking
            .as_object()
            .ok_or_else(|| bad("must be an object"))?;
        match obj.get("type").and_then(serde_json::Value::as_str) {
            Some("disabled") => Ok(None),
            Some("enabled") => {
                let budget = obj
                    .get("budget_tokens")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| {
                        bad("budget_tokens is required and must be a positive integer")
                    })?;
                let budget_tokens =
                    u32::try_from(budget).map_err(|_| bad("budget_tokens is too large"))?;
                if budget_tokens < Self::MIN_BUDGET {
                    return Err(bad(&format!(
                        "budget_tokens must be at least {}",
                        Self::MIN_BUDGET
                    )));
                }
                if let Some(unknown) = obj.keys().find(|k| *k != "type" && *k != "budget_tokens") {
                    return Err(bad(&format!("unknown field '{unknown}'")));
                }
                Ok(Some(Reasoning { budget_tokens }))
            }
            Some(other) => Err(bad(&format!(
                "type must be 'enabled' or 'disabled' (got '{other}')"
            ))),
            None => Err(bad("type is required ('enabled' or 'disabled')")),
        }
    }

    /// The Anthropic / Converse `thinking` object for this budget.
    pub fn thinking_json(&self) -> serde_json::Value {
        serde_json::json!({"type": "enabled", "budget_tokens": self.budget_tokens})
    }
}

/// The shape the answer's text must take.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any valid JSON object (OpenAI "JSON mode").
    JsonObject,
    /// JSON that matches a JSON schema (OpenAI `json_schema`, Converse `outputConfig.textFormat`).
    JsonSchema {
        /// A name for the schema.
        name: String,
        /// What the schema describes.
        description: Option<String>,
        /// The JSON schema.
        schema: serde_json::Value,
        /// Whether the provider must follow the schema exactly (OpenAI `strict`).
        strict: bool,
    },
}

/// Sampling and length settings, as in Converse `inferenceConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceConfig {
    /// Upper bound on generated tokens; `None` means the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy and deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Generation stops before any of these strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
}

impl InferenceConfig {
    /// Check ranges; the message names the field in Converse terms.
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(0) = self.max_tokens {
            return Err(crate::Error::validation(
                "inferenceConfig.maxTokens must be a positive integer",
            ));
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) || t.is_nan() {
                return Err(crate::Error::validation(
                    "inferenceConfig.temperature must be between 0 and 2",
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(crate::Error::validation(
                    "inferenceConfig.topP must be between 0 and 1",
                ));
            }
        }
        if self.stop_sequences.len() > 4 || self.stop_sequences.iter().any(String::is_empty) {
            return Err(crate::Error::validation(
                "inferenceConfig.stopSequences takes at most 4 non-empty strings",
            ));
        }
        Ok(())
    }
}

/// Tools offered to the model, as in Converse `toolConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolConfig {
    /// The tools.
    pub tools: Vec<Tool>,
    /// How the model must choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

/// One tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Tool {
    /// A function with a JSON schema.
    ToolSpec(ToolSpec),
    /// A prompt-cache checkpoint after the tools before it.
    CachePoint(crate::message::CachePoint),
}

impl Tool {
    /// The function tool, `None` for a cache point.
    pub fn spec(&self) -> Option<&ToolSpec> {
        match self {
            Tool::ToolSpec(spec) => Some(spec),
            Tool::CachePoint(_) => None,
        }
    }
}

/// A function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolSpec {
    /// Tool name.
    pub name: String,
    /// What the tool does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `{"json": <JSON schema>}`.
    pub input_schema: serde_json::Value,
}

/// Tool choice, as in Converse (`{"auto":{}}`, `{"any":{}}`, `{"tool":{"name":..}}`), plus
/// `None` — the OpenAI and Anthropic `"none"`: the tools stay declared (the conversation may
/// hold earlier calls) but the model must answer in text. Converse has no such member, so the
/// Converse front door never reads it; each provider maps it (or refuses it) explicitly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoice {
    /// The model decides.
    Auto(serde_json::Value),
    /// The model must call some tool.
    Any(serde_json::Value),
    /// The model must call this tool.
    Tool {
        /// The tool's name.
        name: String,
    },
    /// The model must not call any tool.
    #[serde(skip_deserializing)]
    None,
}

/// An embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    /// The model id.
    pub model: String,
    /// Texts to embed.
    pub input: EmbedInput,
}

/// What to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    /// Texts, one vector each.
    Texts(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_config_ranges() {
        let ok = InferenceConfig {
            max_tokens: Some(10),
            temperature: Some(0.0),
            top_p: Some(1.0),
            stop_sequences: vec!["\n".into()],
        };
        assert!(ok.validate().is_ok());
        for bad in [
            InferenceConfig {
                max_tokens: Some(0),
                ..Default::default()
            },
            InferenceConfig {
                temperature: Some(3.0),
                ..Default::default()
            },
            InferenceConfig {
                top_p: Some(-0.1),
                ..Default::default()
            },
            InferenceConfig {
                stop_sequences: vec![String::new()],
                ..Default::default()
            },
        ] {
            assert_eq!(bad.validate().map_err(|e| e.status()), Err(400));
        }
    }

    #[test]
    fn reasoning_efforts_and_budgets_round_trip() {
        for (effort, budget) in [("low", 1024), ("medium", 2048), ("high", 4096)] {
            let r = Reasoning::from_effort(effort, "reasoning_effort")
                .unwrap()
                .unwrap();
            assert_eq!(r.budget_tokens, budget);
            assert_eq!(r.effort(), effort);
        }
        assert_eq!(Reasoning::from_effort("none", "f").unwrap(), None);
        assert_eq!(
            Reasoning {
                budget_tokens: 16000
            }
            .effort(),
            "high"
        );
        let e = Reasoning::from_effort("extreme", "reasoning_effort").unwrap_err();
        assert!(e.message.contains("reasoning_effort"), "{}", e.message);
    }

    #[test]
    fn thinking_objects() {
        let on = serde_json::json!({"type": "enabled", "budget_tokens": 2000});
        let r = Reasoning::from_thinking(&on, "thinking").unwrap().unwrap();
        assert_eq!(r.budget_tokens, 2000);
        assert_eq!(r.thinking_json(), on);
        let off = serde_json::json!({"type": "disabled"});
        assert_eq!(Reasoning::from_thinking(&off, "thinking").unwrap(), None);
        for bad in [
            serde_json::json!({"type": "enabled"}),
            serde_json::json!({"type": "enabled", "budget_tokens": 10}),
            serde_json::json!({"type": "enabled", "budget_tokens": -1}),
            serde_json::json!({"type": "enabled", "budget_tokens": 2000, "x": 1}),
            serde_json::json!({"type": "sometimes"}),
            serde_json::json!("enabled"),
        ] {
            let e = Reasoning::from_thinking(&bad, "thinking").unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.message.starts_with("thinking"), "{}", e.message);
        }
    }

    #[test]
    fn converse_json_round_trips() {
        let json = serde_json::json!({"maxTokens": 5, "temperature": 0.5, "stopSequences": ["x"]});
        let cfg: InferenceConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&cfg).unwrap(), json);
        assert!(
            serde_json::from_value::<InferenceConfig>(serde_json::json!({"bogus": 1})).is_err()
        );
    }
}
