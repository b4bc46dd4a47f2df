//! Each dialect's vocabulary, written once: stop reasons, tool choice, image media types and
//! `data:` URLs, both directions. The front doors, the providers and the test kit's mock
//! upstream all use these tables, so the three can never disagree.
//!
//! Where a dialect has fewer words than the canonical types, the table says which canonical
//! value each wire word reads as, and which word each canonical value is written as (OpenAI
//! writes both `end_turn` and `stop_sequence` as `"stop"`, and reads `"stop"` as `end_turn`).

use crate::request::ToolChoice;
use crate::response::{StopReason, TokenLogprob, TopLogprob};
use serde_json::{json, Value};

/// Every canonical stop reason.
pub const STOP_REASONS: [StopReason; 7] = [
    StopReason::EndTurn,
    StopReason::ToolUse,
    StopReason::MaxTokens,
    StopReason::StopSequence,
    StopReason::GuardrailIntervened,
    StopReason::ContentFiltered,
    StopReason::ModelContextWindowExceeded,
];

/// The OpenAI Chat Completions vocabulary.
pub mod openai {
    use super::*;

    /// `finish_reason` of a canonical stop reason.
    pub fn finish_reason(reason: StopReason) -> &'static str {
        match reason {
            StopReason::EndTurn | StopReason::StopSequence => "stop",
            StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
            StopReason::ToolUse => "tool_calls",
            StopReason::GuardrailIntervened | StopReason::ContentFiltered => "content_filter",
        }
    }

    /// The canonical stop reason of a `finish_reason` (`None` or an unknown word: the model
    /// finished its turn).
    pub fn stop_reason(finish: Option<&str>) -> StopReason {
        match finish {
            Some("length") => StopReason::MaxTokens,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            Some("content_filter") => StopReason::ContentFiltered,
            _ => StopReason::EndTurn,
        }
    }

    /// The wire `tool_choice` of a canonical one.
    pub fn tool_choice(choice: &ToolChoice) -> Value {
        match choice {
            ToolChoice::Auto(_) => json!("auto"),
            ToolChoice::Any(_) => json!("required"),
            ToolChoice::None => json!("none"),
            ToolChoice::Tool { name } => json!({"type": "function", "function": {"name": name}}),
        }
    }

    /// The `logprobs.content` array of Chat Completions (and the Responses API's `logprobs`).
    pub fn logprobs(tokens: &[TokenLogprob]) -> Value {
        Value::Array(
            tokens
                .iter()
                .map(|t| {
                    json!({
                        "token": t.token,
                        "logprob": t.logprob,
                        "bytes": t.bytes,
                        "top_logprobs": t.top.iter().map(|a| json!({
                            "token": a.token, "logprob": a.logprob, "bytes": a.bytes,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    /// Read a `logprobs.content` array; entries that are not token objects are skipped.
    pub fn parse_logprobs(content: &Value) -> Vec<TokenLogprob> {
        fn one(v: &Value) -> Option<(String, f32, Vec<u8>)> {
            let token = v.get("token")?.as_str()?.to_string();
            let logprob = v.get("logprob")?.as_f64()? as f32;
            let bytes = match v.get("bytes").and_then(Value::as_array) {
                Some(b) => b
                    .iter()
                    .filter_map(|x| x.as_u64().map(|x| x as u8))
                    .collect(),
                None => token.as_bytes().to_vec(),
            };
            Some((token, logprob, bytes))
        }
        content
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let (token, logprob, bytes) = one(v)?;
                let top = v
                    .get("top_logprobs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(one)
                    .map(|(token, logprob, bytes)| TopLogprob {
                        token,
                        logprob,
                        bytes,
                    })
                    .collect();
                Some(TokenLogprob {
                    token,
                    logprob,
                    bytes,
                    top,
                })
            })
            .collect()
    }

    /// The canonical tool choice of a wire `tool_choice`; the error names what is wrong.
    pub fn parse_tool_choice(value: &Value) -> Result<ToolChoice, String> {
        match value {
            Value::String(s) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto(json!({}))),
                "required" => Ok(ToolChoice::Any(json!({}))),
                "none" => Ok(ToolChoice::None),
                other => Err(format!(
                    "tool_choice: unknown value '{other}'; expected auto, required, none or an object naming a function"
                )),
            },
            v => v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .map(|name| ToolChoice::Tool { name: name.into() })
                .ok_or_else(|| "tool_choice.function.name is required".to_string()),
        }
    }
}

/// The Anthropic Messages vocabulary.
pub mod anthropic {
    use super::*;

    /// `stop_reason` of a canonical stop reason.
    pub fn stop_reason_name(reason: StopReason) -> &'static str {
        match reason {
            StopReason::EndTurn => "end_turn",
            StopReason::ToolUse => "tool_use",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::GuardrailIntervened | StopReason::ContentFiltered => "refusal",
            StopReason::ModelContextWindowExceeded => "model_context_window_exceeded",
        }
    }

    /// The canonical stop reason of a `stop_reason` (`None`, `pause_turn` or an unknown word:
    /// the model finished its turn).
    pub fn stop_reason(name: Option<&str>) -> StopReason {
        match name {
            Some("max_tokens") => StopReason::MaxTokens,
            Some("stop_sequence") => StopReason::StopSequence,
            Some("tool_use") => StopReason::ToolUse,
            Some("refusal") => StopReason::ContentFiltered,
            Some("model_context_window_exceeded") => StopReason::ModelContextWindowExceeded,
            _ => StopReason::EndTurn,
        }
    }

    /// The wire `tool_choice` of a canonical one.
    pub fn tool_choice(choice: &ToolChoice) -> Value {
        match choice {
            ToolChoice::Auto(_) => json!({"type": "auto"}),
            ToolChoice::Any(_) => json!({"type": "any"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Tool { name } => json!({"type": "tool", "name": name}),
        }
    }

    /// The canonical tool choice of a wire `{"type": …}` object.
    pub fn parse_tool_choice(kind: &str, name: Option<&str>) -> Result<ToolChoice, String> {
        match (kind, name) {
            ("auto", _) => Ok(ToolChoice::Auto(json!({}))),
            ("any", _) => Ok(ToolChoice::Any(json!({}))),
            ("none", _) => Ok(ToolChoice::None),
            ("tool", Some(name)) => Ok(ToolChoice::Tool { name: name.into() }),
            ("tool", None) => Err("tool_choice.name: Field required".into()),
            (other, _) => Err(format!(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not '{other}'"
            )),
        }
    }
}

/// Image media types and `data:` URLs. Canonical image blocks carry Converse's format names
/// (`png`, `jpeg`, `gif`, `webp`).
pub mod media {
    /// The media type of a canonical image format.
    pub fn image_media_type(format: &str) -> Option<&'static str> {
        match format {
            "png" => Some("image/png"),
            "jpeg" | "jpg" => Some("image/jpeg"),
            "gif" => Some("image/gif"),
            "webp" => Some("image/webp"),
            _ => None,
        }
    }

    /// The canonical image format of a media type.
    pub fn image_format(media_type: &str) -> Option<&'static str> {
        match media_type.to_ascii_lowercase().as_str() {
            "image/png" => Some("png"),
            "image/jpeg" | "image/jpg" => Some("jpeg"),
            "image/gif" => Some("gif"),
            "image/webp" => Some("webp"),
            _ => None,
        }
    }

    /// A base64 `data:` URL of an image in `format`.
    pub fn data_url(format: &str, base64: &str) -> String {
        let media = image_media_type(format).unwrap_or("application/octet-stream");
        format!("data:{media};base64,{base64}")
    }

    /// The canonical format and the base64 data of an image `data:` URL; the error says what
    /// the URL should look like. Remote URLs are refused: the gateway fetches nothing on a
    /// caller's behalf.
    pub fn parse_data_url(url: &str) -> Result<(&'static str, &str), String> {
        let Some(rest) = url.strip_prefix("data:") else {
            return Err("image_url must be a base64 data URL (data:image/png;base64,...); remote URLs are not fetched".into());
        };
        let Some((media, data)) = rest.split_once(";base64,") else {
            return Err(
                "image_url data URL must be base64-encoded (data:image/png;base64,...)".into(),
            );
        };
        let format = image_format(media).ok_or_else(|| {
            format!("image_url media type '{media}' is not supported; use image/png, image/jpeg, image/gif or image/webp")
        })?;
        Ok((format, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a dialect can say: the canonical value each one reads back as.
    fn openai_class(s: StopReason) -> StopReason {
        match s {
            StopReason::StopSequence => StopReason::EndTurn,
            StopReason::ModelContextWindowExceeded => StopReason::MaxTokens,
            StopReason::GuardrailIntervened => StopReason::ContentFiltered,
            other => other,
        }
    }

    #[test]
    fn stop_reasons_round_trip_in_every_dialect() {
        for s in STOP_REASONS {
            assert_eq!(
                openai::stop_reason(Some(openai::finish_reason(s))),
                openai_class(s),
                "{s:?}"
            );
            let anthropic_class = match s {
                StopReason::GuardrailIntervened => StopReason::ContentFiltered,
                other => other,
            };
            assert_eq!(
                anthropic::stop_reason(Some(anthropic::stop_reason_name(s))),
                anthropic_class,
                "{s:?}"
            );
            // Converse: the canonical names are the wire names.
            let wire = serde_json::to_value(s).unwrap();
            assert_eq!(serde_json::from_value::<StopReason>(wire).unwrap(), s);
        }
        // And every wire word reads back as itself.
        for w in ["stop", "length", "tool_calls", "content_filter"] {
            assert_eq!(openai::finish_reason(openai::stop_reason(Some(w))), w);
        }
        for w in [
            "end_turn",
            "tool_use",
            "max_tokens",
            "stop_sequence",
            "refusal",
            "model_context_window_exceeded",
        ] {
            assert_eq!(
                anthropic::stop_reason_name(anthropic::stop_reason(Some(w))),
                w
            );
        }
    }

    fn tool_choice() -> impl Strategy<Value = ToolChoice> {
        prop_oneof![
            Just(ToolChoice::Auto(json!({}))),
            Just(ToolChoice::Any(json!({}))),
            Just(ToolChoice::None),
            "[a-zA-Z0-9_-]{1,64}".prop_map(|name| ToolChoice::Tool { name }),
        ]
    }

    proptest! {
        #[test]
        fn tool_choice_round_trips(choice in tool_choice()) {
            prop_assert_eq!(openai::parse_tool_choice(&openai::tool_choice(&choice)).unwrap(), choice.clone());
            let wire = anthropic::tool_choice(&choice);
            let back = anthropic::parse_tool_choice(
                wire["type"].as_str().unwrap(),
                wire.get("name").and_then(Value::as_str),
            ).unwrap();
            prop_assert_eq!(back, choice);
        }

        #[test]
        fn data_urls_round_trip(format in prop_oneof![Just("png"), Just("jpeg"), Just("gif"), Just("webp")],
                                data in "[A-Za-z0-9+/]{0,64}={0,2}") {
            let url = media::data_url(format, &data);
            prop_assert_eq!(media::parse_data_url(&url).unwrap(), (format, data.as_str()));
            prop_assert_eq!(media::image_format(media::image_media_type(format).unwrap()), Some(format));
        }
    }

    #[test]
    fn bad_choices_and_urls_are_refused() {
        assert!(openai::parse_tool_choice(&json!("sometimes")).is_err());
        assert!(openai::parse_tool_choice(&json!({"type": "function"})).is_err());
        assert!(anthropic::parse_tool_choice("tool", None).is_err());
        assert!(anthropic::parse_tool_choice("maybe", None).is_err());
        assert!(media::parse_data_url("https://example.com/cat.png").is_err());
        assert!(media::parse_data_url("data:image/png,raw").is_err());
        assert!(media::parse_data_url("data:image/tiff;base64,AAAA").is_err());
    }
}
