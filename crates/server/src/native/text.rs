//! The single-string text families of InvokeModel: Anthropic text completions, Amazon Titan
//! Text, Meta Llama and Mistral. Each takes a prompt plus sampling settings and answers with
//! generated text; their streams are one JSON chunk per text delta plus a final chunk with the
//! stop reason, token counts and `amazon-bedrock-invocationMetrics`.

use std::time::Instant;

use modelgate_core::config::NativeFormat;
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlockDelta, Error, InferenceConfig, Message, Role,
    StopReason, StreamEvent, Usage,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use super::anthropic::elapsed_ms;
use super::{invalid, metrics_json, positive, prompt, typed};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaudeText {
    prompt: String,
    max_tokens_to_sample: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    anthropic_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TitanText {
    input_text: String,
    #[serde(default)]
    text_generation_config: Option<TitanConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TitanConfig {
    #[serde(default)]
    max_token_count: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Llama {
    prompt: String,
    #[serde(default)]
    max_gen_len: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default, rename = "images")]
    _images: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mistral {
    prompt: String,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    stop: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
}

fn request(
    model: String,
    conversation: prompt::Conversation,
    inference: InferenceConfig,
    top_k: Option<u32>,
) -> ChatRequest {
    ChatRequest {
        model,
        system: conversation.system,
        messages: conversation.messages,
        inference,
        tools: None,
        response_format: None,
        reasoning: None,
        generation: modelgate_types::Generation {
            top_k,
            ..Default::default()
        },
        end_user: None,
        native: None,
    }
}

/// Parse a text-family body into a canonical request.
pub fn parse(format: NativeFormat, model: String, body: Value) -> Result<ChatRequest, Error> {
    match format {
        NativeFormat::AnthropicText => {
            let b: ClaudeText = typed(body)?;
            let _ = b.anthropic_version;
            let Some(max) = b.max_tokens_to_sample else {
                return Err(invalid("max_tokens_to_sample: field required"));
            };
            let conversation = prompt::human_assistant(&b.prompt).ok_or_else(|| {
                invalid("prompt must start with \"\\n\\nHuman:\" turn after an optional system prompt, and end with \"\\n\\nAssistant:\" turn")
            })?;
            Ok(request(
                model,
                conversation,
                InferenceConfig {
                    max_tokens: positive("max_tokens_to_sample", Some(max))?,
                    temperature: b.temperature,
                    top_p: b.top_p,
                    stop_sequences: b.stop_sequences.unwrap_or_default(),
                },
                b.top_k,
            ))
        }
        NativeFormat::TitanText => {
            let b: TitanText = typed(body)?;
            let c = b.text_generation_config.unwrap_or_default();
            if b.input_text.trim().is_empty() {
                return Err(invalid("inputText: must not be blank"));
            }
            Ok(request(
                model,
                prompt::Conversation {
                    system: Vec::new(),
                    messages: vec![Message::text(Role::User, b.input_text.trim())],
                },
                InferenceConfig {
                    max_tokens: positive("textGenerationConfig.maxTokenCount", c.max_token_count)?,
                    temperature: c.temperature,
                    top_p: c.top_p,
                    stop_sequences: c.stop_sequences.unwrap_or_default(),
                },
                None,
            ))
        }
        NativeFormat::Llama => {
            let b: Llama = typed(body)?;
            Ok(request(
                model,
                prompt::parse(&b.prompt),
                InferenceConfig {
                    max_tokens: positive("max_gen_len", b.max_gen_len)?,
                    temperature: b.temperature,
                    top_p: b.top_p,
                    stop_sequences: Vec::new(),
                },
                None,
            ))
        }
        _ => {
            let b: Mistral = typed(body)?;
            Ok(request(
                model,
                prompt::parse(&b.prompt),
                InferenceConfig {
                    max_tokens: positive("max_tokens", b.max_tokens)?,
                    temperature: b.temperature,
                    top_p: b.top_p,
                    stop_sequences: b.stop.unwrap_or_default(),
                },
                b.top_k,
            ))
        }
    }
}

/// How a finished generation ended, for the final chunk or the whole response.
pub struct Finish {
    pub stop: StopReason,
    pub usage: Usage,
    pub latency_ms: u64,
    pub first_byte_ms: Option<u64>,
}

fn titan_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "LENGTH",
        StopReason::StopSequence => "STOP_CRITERIA_MET",
        StopReason::GuardrailIntervened | StopReason::ContentFiltered => "CONTENT_FILTERED",
        _ => "FINISH",
    }
}

fn length_or_stop(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

/// Claude text completions report a natural end as the `\n\nHuman:` stop sequence.
fn claude_reason(stop: StopReason) -> (&'static str, Value) {
    match stop {
        StopReason::MaxTokens => ("max_tokens", Value::Null),
        StopReason::StopSequence => ("stop_sequence", Value::Null),
        _ => ("stop_sequence", json!("\n\nHuman:")),
    }
}

/// The non-streamed response body.
pub fn response(format: NativeFormat, r: &ChatResponse) -> Value {
    let text = r.message.joined_text();
    let u = &r.usage;
    match format {
        NativeFormat::AnthropicText => {
            let (reason, stop) = claude_reason(r.stop_reason);
            json!({"type": "completion", "completion": text, "stop_reason": reason, "stop": stop})
        }
        NativeFormat::TitanText => json!({
            "inputTextTokenCount": u.input_tokens,
            "results": [{
                "tokenCount": u.output_tokens,
                "outputText": text,
                "completionReason": titan_reason(r.stop_reason),
            }],
        }),
        NativeFormat::Llama => json!({
            "generation": text,
            "prompt_token_count": u.input_tokens,
            "generation_token_count": u.output_tokens,
            "stop_reason": length_or_stop(r.stop_reason),
        }),
        _ => json!({"outputs": [{"text": text, "stop_reason": length_or_stop(r.stop_reason)}]}),
    }
}

/// One stream chunk: `text`, and on the last chunk how the generation ended.
fn chunk(format: NativeFormat, text: &str, end: Option<&Finish>) -> Value {
    let mut v = match (format, end) {
        (NativeFormat::AnthropicText, None) => {
            json!({"completion": text, "stop_reason": null, "stop": null})
        }
        (NativeFormat::AnthropicText, Some(f)) => {
            let (reason, stop) = claude_reason(f.stop);
            json!({"completion": text, "stop_reason": reason, "stop": stop})
        }
        (NativeFormat::TitanText, None) => json!({
            "outputText": text, "index": 0, "totalOutputTextTokenCount": null,
            "completionReason": null, "inputTextTokenCount": null,
        }),
        (NativeFormat::TitanText, Some(f)) => json!({
            "outputText": text, "index": 0, "totalOutputTextTokenCount": f.usage.output_tokens,
            "completionReason": titan_reason(f.stop), "inputTextTokenCount": f.usage.input_tokens,
        }),
        (NativeFormat::Llama, None) => json!({
            "generation": text, "prompt_token_count": null, "generation_token_count": null,
            "stop_reason": null,
        }),
        (NativeFormat::Llama, Some(f)) => json!({
            "generation": text, "prompt_token_count": f.usage.input_tokens,
            "generation_token_count": f.usage.output_tokens,
            "stop_reason": length_or_stop(f.stop),
        }),
        (_, None) => json!({"outputs": [{"text": text, "stop_reason": null}]}),
        (_, Some(f)) => json!({"outputs": [{"text": text, "stop_reason": length_or_stop(f.stop)}]}),
    };
    if let (Some(f), Some(obj)) = (end, v.as_object_mut()) {
        obj.insert(
            "amazon-bedrock-invocationMetrics".into(),
            metrics_json(&f.usage, f.latency_ms, f.first_byte_ms),
        );
    }
    v
}

/// Turns canonical stream events into a text family's chunks.
pub struct TextChunker {
    format: NativeFormat,
    started: Instant,
    first_byte_ms: Option<u64>,
    stop: StopReason,
}

impl TextChunker {
    pub fn new(format: NativeFormat) -> Self {
        Self {
            format,
            started: Instant::now(),
            first_byte_ms: None,
            stop: StopReason::EndTurn,
        }
    }

    /// The chunks for one canonical event (zero or one).
    pub fn map(&mut self, event: &StreamEvent) -> Vec<Value> {
        match event {
            StreamEvent::ContentBlockDelta {
                delta: ContentBlockDelta::Text(t),
                ..
            } if !t.is_empty() => {
                self.first_byte_ms
                    .get_or_insert_with(|| elapsed_ms(self.started));
                vec![chunk(self.format, t, None)]
            }
            StreamEvent::MessageStop { stop_reason } => {
                self.stop = *stop_reason;
                Vec::new()
            }
            StreamEvent::Metadata { usage, .. } => vec![chunk(
                self.format,
                "",
                Some(&Finish {
                    stop: self.stop,
                    usage: *usage,
                    latency_ms: elapsed_ms(self.started),
                    first_byte_ms: self.first_byte_ms,
                }),
            )],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(text: &str, stop: StopReason) -> ChatResponse {
        ChatResponse {
            model: "m".into(),
            message: Message::text(Role::Assistant, text),
            stop_reason: stop,
            usage: Usage::new(10, 4),
            latency_ms: 3,
            logprobs: None,
        }
    }

    #[test]
    fn parses_each_family() {
        let r = parse(
            NativeFormat::AnthropicText,
            "m".into(),
            json!({"prompt": "\n\nHuman: Hi\n\nAssistant:", "max_tokens_to_sample": 20, "stop_sequences": ["\n\nHuman:"]}),
        )
        .unwrap();
        assert_eq!(r.messages, vec![Message::text(Role::User, "Hi")]);
        assert_eq!(r.inference.max_tokens, Some(20));
        let r = parse(
            NativeFormat::TitanText,
            "m".into(),
            json!({"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 9, "temperature": 0, "topP": 1, "stopSequences": ["|"]}}),
        )
        .unwrap();
        assert_eq!(r.inference.max_tokens, Some(9));
        assert_eq!(r.inference.stop_sequences, vec!["|".to_string()]);
        let r = parse(
            NativeFormat::Llama,
            "m".into(),
            json!({"prompt": "[INST] Hi [/INST]", "max_gen_len": 5}),
        )
        .unwrap();
        assert_eq!(r.messages, vec![Message::text(Role::User, "Hi")]);
        let r = parse(
            NativeFormat::Mistral,
            "m".into(),
            json!({"prompt": "<s>[INST] Hi [/INST]", "max_tokens": 5, "stop": ["."], "top_k": 50}),
        )
        .unwrap();
        assert_eq!(r.inference.stop_sequences, vec![".".to_string()]);
    }

    #[test]
    fn rejects_bad_family_bodies() {
        for (format, body) in [
            (
                NativeFormat::AnthropicText,
                json!({"prompt": "Hi", "max_tokens_to_sample": 5}),
            ),
            (
                NativeFormat::AnthropicText,
                json!({"prompt": "\n\nHuman: Hi\n\nAssistant:"}),
            ),
            (
                NativeFormat::TitanText,
                json!({"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": -1}}),
            ),
            (NativeFormat::TitanText, json!({"inputText": "   "})),
            (
                NativeFormat::Llama,
                json!({"prompt": "Hi", "max_tokens": 5}),
            ),
            (NativeFormat::Mistral, json!({"prompt": 5})),
            (NativeFormat::Mistral, json!({})),
        ] {
            let e = parse(format, "m".into(), body.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
        }
    }

    #[test]
    fn responses_have_each_family_shape() {
        let r = resp("Paris", StopReason::EndTurn);
        assert_eq!(
            response(NativeFormat::TitanText, &r),
            json!({"inputTextTokenCount": 10, "results": [{"tokenCount": 4, "outputText": "Paris", "completionReason": "FINISH"}]})
        );
        assert_eq!(
            response(NativeFormat::Llama, &resp("P", StopReason::MaxTokens)),
            json!({"generation": "P", "prompt_token_count": 10, "generation_token_count": 4, "stop_reason": "length"})
        );
        assert_eq!(
            response(NativeFormat::Mistral, &r),
            json!({"outputs": [{"text": "Paris", "stop_reason": "stop"}]})
        );
        assert_eq!(
            response(NativeFormat::AnthropicText, &r)["stop"],
            json!("\n\nHuman:")
        );
    }

    #[test]
    fn stream_ends_with_metrics_chunk() {
        let mut c = TextChunker::new(NativeFormat::Llama);
        let mut out = c.map(&StreamEvent::ContentBlockDelta {
            index: 0,
            delta: ContentBlockDelta::Text("Pa".into()),
        });
        out.extend(c.map(&StreamEvent::ContentBlockStop { index: 0 }));
        out.extend(c.map(&StreamEvent::MessageStop {
            stop_reason: StopReason::MaxTokens,
        }));
        out.extend(c.map(&StreamEvent::Metadata {
            usage: Usage::new(3, 1),
            latency_ms: 1,
        }));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["generation"], "Pa");
        assert_eq!(out[1]["stop_reason"], "length");
        assert_eq!(
            out[1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
            3
        );
    }
}
