//! Model-native request and response bodies (Bedrock InvokeModel), mapped to and from the
//! canonical types so any provider can serve any format.
//!
//! The format of a call is decided, in order, by the served model's `format` setting, by the
//! family in the id the caller used (`anthropic.…`, `amazon.titan-text-…`, `meta.…`, …), by the
//! family of the served model's id, and last by the body's tell-tale keys
//! (`anthropic_version`, `inputText`, `texts`, `max_gen_len`). Families: `anthropic`,
//! `text` (Claude text completions, Titan Text, Llama, Mistral) and `embed` (Titan Embeddings,
//! Cohere Embed).

pub mod anthropic;
pub mod embed;
pub mod prompt;
pub mod text;

use modelgate_core::config::NativeFormat;
use modelgate_core::{model_id, ModelInfo};
use modelgate_types::{ChatRequest, ChatResponse, EmbedRequest, Error, StreamEvent, Usage};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use embed::EmbedShape;

/// A ValidationException about the body.
pub fn invalid(message: impl Into<String>) -> Error {
    Error::validation(format!(
        "Malformed input request: {}, please reformat your input and try again.",
        message.into()
    ))
}

/// A positive token limit, or a ValidationException naming `field`.
pub fn positive(field: &str, n: Option<i64>) -> Result<Option<u32>, Error> {
    match n {
        None => Ok(None),
        Some(n) if n >= 1 => u32::try_from(n)
            .map(Some)
            .map_err(|_| invalid(format!("{field}: {n} is too large"))),
        Some(n) => Err(invalid(format!(
            "{field}: must be a positive integer, got {n}"
        ))),
    }
}

/// Deserialize a body into its family's typed shape; a mismatch names the member.
pub fn typed<T: DeserializeOwned>(body: Value) -> Result<T, Error> {
    serde_json::from_value(body).map_err(|e| invalid(e.to_string()))
}

/// `amazon-bedrock-invocationMetrics`, which Bedrock adds to the last chunk of a stream.
pub fn metrics_json(usage: &Usage, latency_ms: u64, first_byte_ms: Option<u64>) -> Value {
    json!({
        "inputTokenCount": usage.input_tokens,
        "outputTokenCount": usage.output_tokens,
        "invocationLatency": latency_ms,
        "firstByteLatency": first_byte_ms.unwrap_or(latency_ms),
    })
}

fn by_family(id: &str, body: &Value) -> Option<NativeFormat> {
    let (family, rest) = model_id::family(id)?;
    Some(match family {
        "anthropic" if body.get("prompt").is_some() && body.get("messages").is_none() => {
            NativeFormat::AnthropicText
        }
        "anthropic" => NativeFormat::AnthropicMessages,
        "amazon" if rest.starts_with("titan-embed") => NativeFormat::TitanEmbed,
        "amazon" if rest.starts_with("titan-text") || rest.starts_with("titan-tg1") => {
            NativeFormat::TitanText
        }
        "meta" => NativeFormat::Llama,
        "mistral" => NativeFormat::Mistral,
        "cohere" if rest.starts_with("embed") => NativeFormat::CohereEmbed,
        _ => return None,
    })
}

fn by_body(model: &ModelInfo, body: &Value) -> Option<NativeFormat> {
    let has = |k: &str| body.get(k).is_some();
    if has("anthropic_version") {
        Some(if has("messages") {
            NativeFormat::AnthropicMessages
        } else {
            NativeFormat::AnthropicText
        })
    } else if has("inputText") {
        Some(if model.kind == "embedding" {
            NativeFormat::TitanEmbed
        } else {
            NativeFormat::TitanText
        })
    } else if has("texts") {
        Some(NativeFormat::CohereEmbed)
    } else if has("max_gen_len") {
        Some(NativeFormat::Llama)
    } else {
        None
    }
}

/// The body format of a call to `requested`, served by `model`.
pub fn detect(requested: &str, model: &ModelInfo, body: &Value) -> Result<NativeFormat, Error> {
    model
        .format
        .or_else(|| by_family(requested, body))
        .or_else(|| by_family(&model.id, body))
        .or_else(|| by_body(model, body))
        .ok_or_else(|| {
            Error::validation(format!(
                "Cannot tell which request body format the model '{requested}' takes: its id names no known model family. Set `format` on the model in the configuration, or use Converse."
            ))
        })
}

/// What an InvokeModel body asks for.
pub enum Invocation {
    /// Generate text.
    Chat(Box<ChatRequest>),
    /// Embed texts; the shape says how to answer.
    Embed(EmbedRequest, EmbedShape),
}

/// Parse a body of `format` for `model`. An empty body is an empty JSON object.
pub fn parse(format: NativeFormat, model: String, body: Value) -> Result<Invocation, Error> {
    match format {
        NativeFormat::AnthropicMessages => {
            let b: anthropic::MessagesBody = typed(body)?;
            if b.model.is_some() || b.stream.is_some() || b.cache.is_some() {
                return Err(invalid(
                    "extraneous key [model/stream/cache] is not permitted; the model is named in the URL",
                ));
            }
            if let Some(key) = b.unknown_member() {
                return Err(invalid(format!("extraneous key [{key}] is not permitted")));
            }
            match b.anthropic_version.as_deref() {
                Some(v) if v.starts_with("bedrock-") => {}
                Some(v) => {
                    return Err(invalid(format!(
                        "anthropic_version: '{v}' is not supported; use bedrock-2023-05-31"
                    )))
                }
                None => return Err(invalid("anthropic_version: field required")),
            }
            b.into_canonical(model)
                .map(|r| Invocation::Chat(Box::new(r)))
        }
        NativeFormat::TitanEmbed | NativeFormat::CohereEmbed => {
            embed::parse(format, model, body).map(|(r, s)| Invocation::Embed(r, s))
        }
        _ => text::parse(format, model, body).map(|r| Invocation::Chat(Box::new(r))),
    }
}

/// The non-streamed answer body of a chat-family call.
pub fn chat_response(format: NativeFormat, model: &str, r: &ChatResponse) -> Value {
    match format {
        NativeFormat::AnthropicMessages => {
            anthropic::response_json(&anthropic::message_id("msg_bdrk_"), model, r)
        }
        _ => text::response(format, r),
    }
}

/// Turns canonical stream events into the chunks of a format's response stream.
pub enum Chunker {
    /// Anthropic Messages events.
    Anthropic(anthropic::StreamMapper),
    /// One of the text families.
    Text(text::TextChunker),
}

impl Chunker {
    /// A chunker for `format`.
    pub fn new(format: NativeFormat, model: &str) -> Self {
        match format {
            NativeFormat::AnthropicMessages => Self::Anthropic(anthropic::StreamMapper::new(
                anthropic::message_id("msg_bdrk_"),
                model.to_string(),
                true,
            )),
            _ => Self::Text(text::TextChunker::new(format)),
        }
    }

    /// The chunks one canonical event turns into.
    pub fn map(&mut self, event: &StreamEvent) -> Vec<Value> {
        match self {
            Self::Anthropic(m) => m.map(event),
            Self::Text(t) => t.map(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, kind: &'static str, format: Option<NativeFormat>) -> ModelInfo {
        ModelInfo {
            id: id.into(),
            owned_by: "x".into(),
            kind,
            aliases: Vec::new(),
            format,
        }
    }

    #[test]
    fn detection_order() {
        let chat = info("local.smollm2-135m-instruct", "chat", None);
        let body = json!({"prompt": "hi"});
        let d = |id: &str, m: &ModelInfo, b: &Value| detect(id, m, b).ok();
        assert_eq!(
            d("anthropic.claude-v2:1", &chat, &body),
            Some(NativeFormat::AnthropicText)
        );
        assert_eq!(
            d(
                "us.anthropic.claude-3-haiku-20240307-v1:0",
                &chat,
                &json!({"messages": []})
            ),
            Some(NativeFormat::AnthropicMessages)
        );
        assert_eq!(
            d("meta.llama3-8b-instruct-v1:0", &chat, &body),
            Some(NativeFormat::Llama)
        );
        assert_eq!(
            d("mistral.mistral-7b-instruct-v0:2", &chat, &body),
            Some(NativeFormat::Mistral)
        );
        assert_eq!(
            d("amazon.titan-text-express-v1", &chat, &body),
            Some(NativeFormat::TitanText)
        );
        assert_eq!(
            d("amazon.titan-embed-text-v2:0", &chat, &body),
            Some(NativeFormat::TitanEmbed)
        );
        assert_eq!(
            d("cohere.embed-english-v3", &chat, &body),
            Some(NativeFormat::CohereEmbed)
        );
        // No family in the id: the body decides, else a clear error.
        assert_eq!(
            d(
                "local.smollm2-135m-instruct",
                &chat,
                &json!({"inputText": "x"})
            ),
            Some(NativeFormat::TitanText)
        );
        let embed = info("local.all-minilm-l6-v2", "embedding", None);
        assert_eq!(
            d("local.all-minilm-l6-v2", &embed, &json!({"inputText": "x"})),
            Some(NativeFormat::TitanEmbed)
        );
        assert!(detect("local.smollm2-135m-instruct", &chat, &body).is_err());
        // A configured format wins over the id.
        let configured = info("meta.llama3", "chat", Some(NativeFormat::Mistral));
        assert_eq!(
            d("meta.llama3", &configured, &body),
            Some(NativeFormat::Mistral)
        );
    }

    #[test]
    fn bedrock_anthropic_needs_version_and_no_model() {
        let ok = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]});
        assert!(parse(NativeFormat::AnthropicMessages, "m".into(), ok.clone()).is_ok());
        for (key, value) in [
            ("anthropic_version", Value::Null),
            ("anthropic_version", json!("2023-06-01")),
            ("model", json!("claude")),
            ("stream", json!(true)),
        ] {
            let mut b = ok.clone();
            if value.is_null() {
                b.as_object_mut().unwrap().remove(key);
            } else {
                b[key] = value;
            }
            assert!(
                parse(NativeFormat::AnthropicMessages, "m".into(), b).is_err(),
                "{key}"
            );
        }
    }
}

/// Property tests: random and truncated input never panics and always yields a 400-class
/// error (or a valid request).
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const FORMATS: [NativeFormat; 7] = [
        NativeFormat::AnthropicMessages,
        NativeFormat::AnthropicText,
        NativeFormat::TitanText,
        NativeFormat::TitanEmbed,
        NativeFormat::Llama,
        NativeFormat::Mistral,
        NativeFormat::CohereEmbed,
    ];

    /// Arbitrary JSON, biased towards the keys the families read.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("messages".to_string()),
            Just("max_tokens".to_string()),
            Just("anthropic_version".to_string()),
            Just("prompt".to_string()),
            Just("inputText".to_string()),
            Just("texts".to_string()),
            Just("input_type".to_string()),
            Just("content".to_string()),
            Just("role".to_string()),
            Just("type".to_string()),
            Just("textGenerationConfig".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,20}".prop_map(Value::from),
            Just(json!("bedrock-2023-05-31")),
            Just(json!("\n\nHuman: hi\n\nAssistant:")),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// One valid body per family.
    pub fn valid_bodies() -> Vec<(NativeFormat, Value)> {
        vec![
            (
                NativeFormat::AnthropicMessages,
                json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
            ),
            (
                NativeFormat::AnthropicText,
                json!({"prompt": "\n\nHuman: hi\n\nAssistant:", "max_tokens_to_sample": 5}),
            ),
            (
                NativeFormat::TitanText,
                json!({"inputText": "hi", "textGenerationConfig": {"maxTokenCount": 5}}),
            ),
            (NativeFormat::TitanEmbed, json!({"inputText": "hi"})),
            (
                NativeFormat::Llama,
                json!({"prompt": "[INST] hi [/INST]", "max_gen_len": 5}),
            ),
            (
                NativeFormat::Mistral,
                json!({"prompt": "<s>[INST] hi [/INST]", "max_tokens": 5}),
            ),
            (
                NativeFormat::CohereEmbed,
                json!({"texts": ["hi"], "input_type": "search_query"}),
            ),
        ]
    }

    fn check(format: NativeFormat, body: Value) -> Result<(), TestCaseError> {
        if let Err(e) = parse(format, "m".into(), body) {
            prop_assert_eq!(e.status(), 400);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_json_never_panics(body in json_value(), f in 0usize..7) {
            check(FORMATS[f], body)?;
        }

        #[test]
        fn raw_prompts_never_panic(prompt in "(\\[INST\\]|\\[/INST\\]|<<SYS>>|<</SYS>>|<s>|</s>|<\\|start_header_id\\|>|<\\|end_header_id\\|>|<\\|eot_id\\|>|\n\nHuman:|\n\nAssistant:|[a-zé ]{0,5}){0,12}") {
            let c = prompt::parse(&prompt);
            prop_assert!(c.messages.iter().all(|m| !m.content.is_empty()));
            let _ = prompt::human_assistant(&prompt);
        }
    }
}
