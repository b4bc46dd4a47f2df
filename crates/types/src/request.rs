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

/// Tool choice, as in Converse (`{"auto":{}}`, `{"any":{}}`, `{"tool":{"name":..}}`).
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
    fn converse_json_round_trips() {
        let json = serde_json::json!({"maxTokens": 5, "temperature": 0.5, "stopSequences": ["x"]});
        let cfg: InferenceConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&cfg).unwrap(), json);
        assert!(
            serde_json::from_value::<InferenceConfig>(serde_json::json!({"bogus": 1})).is_err()
        );
    }
}
