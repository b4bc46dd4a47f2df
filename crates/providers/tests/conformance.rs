//! Provider conformance: one generic test set that every upstream provider must pass against
//! the test kit's mock upstream — chat, streams split at awkward byte boundaries, tool calls
//! (whole and streamed), multi-turn tool results, JSON output, embeddings where supported,
//! every error class mapped to the right canonical error, bad credentials, malformed bodies,
//! streams cut short, and time limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use modelgate_providers::{
    collect_stream, Anthropic, AnthropicConfig, AnthropicEndpoint, AwsCredentials, Bedrock,
    BedrockConfig, BedrockEndpoint, HttpSettings, ModelKind, OpenAi, OpenAiConfig, OpenAiEndpoint,
    Provider,
};
use modelgate_testkit::{Block, MockUpstream, Reply, Stop};
use modelgate_types::{
    ChatRequest, ContentBlock, EmbedInput, EmbedRequest, ErrorKind, Message, Reasoning,
    ReasoningBlock, ResponseFormat, Role, StopReason, StreamEvent, Tool, ToolConfig,
    ToolResultBlock, ToolResultContent, ToolSpec, ToolUseBlock,
};
use serde_json::{json, Value};

const KEY: &str = "AKIDCONFORMANCE";

/// How to build one provider type against the mock, and where its wire format puts things.
struct Harness {
    make: fn(&str, &str, HttpSettings, ModelKind) -> Arc<dyn Provider>,
    embeddings: bool,
    json_object: bool,
    /// Whether the recorded upstream body carries the tool result "21 degrees" for call `c1`.
    has_tool_result: fn(&Value) -> bool,
    /// Whether the recorded upstream body carries the JSON schema.
    has_schema: fn(&Value) -> bool,
    /// The recorded upstream body's form of a 2048-token reasoning budget.
    reasoning_sent: fn(&Value) -> bool,
    /// Whether the dialect carries reasoning signatures and redacted reasoning.
    signed_reasoning: bool,
}

fn openai() -> Harness {
    Harness {
        make: |url, key, http, kind| {
            let e = OpenAiEndpoint::new(OpenAiConfig {
                name: "oa".into(),
                base_url: format!("{url}/v1"),
                api_key: Some(key.into()),
                azure_api_version: None,
                http,
            })
            .unwrap();
            Arc::new(OpenAi::new(e, "gpt-mock".into(), kind))
        },
        embeddings: true,
        json_object: true,
        has_tool_result: |b| {
            b["messages"].as_array().unwrap().iter().any(|m| {
                m["role"] == "tool" && m["tool_call_id"] == "c1" && m["content"] == "21 degrees"
            })
        },
        has_schema: |b| {
            b.pointer("/response_format/json_schema/schema/required/0") == Some(&json!("city"))
        },
        reasoning_sent: |b| b["reasoning_effort"] == "medium",
        signed_reasoning: false,
    }
}

/// Azure OpenAI: the same wire format behind deployment URLs, `api-version` and the `api-key`
/// header.
fn azure() -> Harness {
    Harness {
        make: |url, key, http, kind| {
            let e = OpenAiEndpoint::new(OpenAiConfig {
                name: "az".into(),
                base_url: format!("{url}/openai"),
                api_key: Some(key.into()),
                azure_api_version: Some("2024-10-21".into()),
                http,
            })
            .unwrap();
            Arc::new(OpenAi::new(e, "my-deployment".into(), kind))
        },
        ..openai()
    }
}

fn anthropic() -> Harness {
    Harness {
        make: |url, key, http, _| {
            let e = AnthropicEndpoint::new(AnthropicConfig {
                name: "an".into(),
                base_url: url.into(),
                api_key: Some(key.into()),
                version: "2023-06-01".into(),
                http,
            })
            .unwrap();
            Arc::new(Anthropic::new(e, "claude-mock".into()))
        },
        embeddings: false,
        json_object: false,
        has_tool_result: |b| {
            b.pointer("/messages/2/content/0/type") == Some(&json!("tool_result"))
                && b.pointer("/messages/2/content/0/content/0/text") == Some(&json!("21 degrees"))
        },
        has_schema: |b| {
            b.pointer("/output_config/format/schema/required/0") == Some(&json!("city"))
        },
        reasoning_sent: |b| {
            b["thinking"] == json!({"type": "enabled", "budget_tokens": 2048})
                && b["max_tokens"].as_u64() > Some(2048)
        },
        signed_reasoning: true,
    }
}

fn bedrock() -> Harness {
    Harness {
        make: |url, key, http, kind| {
            let e = BedrockEndpoint::new(BedrockConfig {
                name: "br".into(),
                region: "us-east-1".into(),
                base_url: Some(url.into()),
                credentials: AwsCredentials {
                    access_key_id: key.into(),
                    secret_access_key: "secret".into(),
                    session_token: None,
                },
                http,
            })
            .unwrap();
            Arc::new(Bedrock::new(e, "anthropic.claude-mock-v1:0".into(), kind))
        },
        embeddings: true,
        json_object: false,
        has_tool_result: |b| {
            b.pointer("/messages/2/content/0/toolResult/content/0/text")
                == Some(&json!("21 degrees"))
        },
        has_schema: |b| {
            b.pointer("/outputConfig/textFormat/structure/jsonSchema/schema")
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("city"))
        },
        reasoning_sent: |b| {
            b.pointer("/additionalModelRequestFields/thinking")
                == Some(&json!({"type": "enabled", "budget_tokens": 2048}))
        },
        signed_reasoning: true,
    }
}

async fn setup(h: &Harness, http: HttpSettings) -> (MockUpstream, Arc<dyn Provider>) {
    let mock = MockUpstream::start().await.unwrap();
    mock.require_key(KEY);
    let provider = (h.make)(&mock.url(), KEY, http, ModelKind::Chat);
    (mock, provider)
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        model: "client-name".into(),
        messages: vec![Message::text(Role::User, text)],
        ..Default::default()
    }
}

fn with_tools(mut r: ChatRequest) -> ChatRequest {
    r.tools = Some(ToolConfig {
        tools: vec![Tool::ToolSpec(ToolSpec {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            input_schema: json!({"json": {"type": "object", "properties": {"city": {"type": "string"}}}}),
        })],
        tool_choice: None,
    });
    r
}

async fn events(
    p: &Arc<dyn Provider>,
    r: ChatRequest,
) -> Vec<Result<StreamEvent, modelgate_types::Error>> {
    p.converse_stream(r).await.unwrap().collect().await
}

async fn chat_text(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(Reply::text("Hello there").usage(12, 3));
    let r = p.converse(ask("hi")).await.unwrap();
    assert_eq!(
        r.message.content,
        vec![ContentBlock::Text("Hello there".into())]
    );
    assert_eq!(
        (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage.total_tokens
        ),
        (12, 3, 15)
    );
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.model, "client-name");
    assert_eq!(mock.calls(), 1);
}

async fn stream_split_anywhere(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    let text = "Héllo wörld — ünïcode split at every byte 🌍!";
    mock.push(Reply::text(text).usage(7, 9).split(3).pieces(2));
    let items = events(&p, ask("hi")).await;
    assert!(matches!(
        items.first(),
        Some(Ok(StreamEvent::MessageStart { .. }))
    ));
    assert!(matches!(
        items.last(),
        Some(Ok(StreamEvent::Metadata { .. }))
    ));
    let r = collect_stream("m".into(), futures::stream::iter(items).boxed())
        .await
        .unwrap();
    assert_eq!(r.message.joined_text(), text);
    assert_eq!(r.usage.output_tokens, 9);
}

fn weather_call() -> Reply {
    Reply::tool_call(
        Some("Checking."),
        "call_1",
        "get_weather",
        json!({"city": "Paris", "unit": "°C"}),
    )
}

fn assert_weather_call(content: &[ContentBlock]) {
    assert_eq!(content[0], ContentBlock::Text("Checking.".into()));
    assert_eq!(
        content[1],
        ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: "call_1".into(),
            name: "get_weather".into(),
            input: json!({"city": "Paris", "unit": "°C"}),
        })
    );
}

async fn tool_call_sync(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(weather_call());
    let r = p.converse(with_tools(ask("weather?"))).await.unwrap();
    assert_weather_call(&r.message.content);
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    let body = mock.last().unwrap().body;
    assert!(
        body.to_string().contains("get_weather"),
        "tools were sent: {body}"
    );
}

async fn tool_call_streamed(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(weather_call().split(5).pieces(1));
    let items = events(&p, with_tools(ask("weather?"))).await;
    let start = items
        .iter()
        .position(|e| matches!(e, Ok(StreamEvent::ContentBlockStart { .. })))
        .expect("a tool-use block start");
    let first_input = items
        .iter()
        .position(|e| {
            matches!(
                e,
                Ok(StreamEvent::ContentBlockDelta {
                    delta: modelgate_types::ContentBlockDelta::ToolUseInput(_),
                    ..
                })
            )
        })
        .unwrap();
    assert!(start < first_input);
    let r = collect_stream("m".into(), futures::stream::iter(items).boxed())
        .await
        .unwrap();
    assert_weather_call(&r.message.content);
    assert_eq!(r.stop_reason, StopReason::ToolUse);
}

async fn multi_turn_tool_result(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(Reply::text("It is 21 degrees."));
    let mut r = with_tools(ask("weather in Paris?"));
    r.messages.push(Message {
        role: Role::Assistant,
        content: vec![ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: "c1".into(),
            name: "get_weather".into(),
            input: json!({"city": "Paris"}),
        })],
    });
    r.messages.push(Message {
        role: Role::User,
        content: vec![ContentBlock::ToolResult(ToolResultBlock {
            tool_use_id: "c1".into(),
            content: vec![ToolResultContent::Text("21 degrees".into())],
            status: None,
        })],
    });
    let answer = p.converse(r).await.unwrap();
    assert_eq!(answer.message.joined_text(), "It is 21 degrees.");
    let body = mock.last().unwrap().body;
    assert!((h.has_tool_result)(&body), "tool result translated: {body}");
}

async fn json_output(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(Reply::text("{\"city\":\"Paris\"}"));
    let mut r = ask("city?");
    r.response_format = Some(ResponseFormat::JsonSchema {
        name: "city".into(),
        description: None,
        schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        strict: true,
    });
    let answer = p.converse(r).await.unwrap();
    let v: Value = serde_json::from_str(&answer.message.joined_text()).unwrap();
    assert_eq!(v["city"], "Paris");
    assert!((h.has_schema)(&mock.last().unwrap().body));
    let mut r = ask("city?");
    r.response_format = Some(ResponseFormat::JsonObject);
    let result = p.converse(r).await;
    if h.json_object {
        result.unwrap();
    } else {
        assert_eq!(result.unwrap_err().kind, ErrorKind::Validation);
        assert_eq!(
            mock.calls(),
            1,
            "a refused parameter never reaches the upstream"
        );
    }
}

async fn embeddings(h: Harness) {
    let mock = MockUpstream::start().await.unwrap();
    let p = (h.make)(
        &mock.url(),
        KEY,
        HttpSettings::default(),
        ModelKind::Embedding,
    );
    let request = EmbedRequest {
        model: "e".into(),
        input: EmbedInput::Texts(vec!["one two".into(), "three".into()]),
    };
    if !h.embeddings {
        // A provider without embeddings refuses them with a clear 400 and never calls out.
        assert!(!p.capabilities().embeddings);
        let e = p.embed(request).await.unwrap_err();
        assert_eq!((e.kind, e.status()), (ErrorKind::Validation, 400), "{e:?}");
        assert!(
            e.message.contains("does not support embeddings"),
            "{}",
            e.message
        );
        assert_eq!(mock.calls(), 0);
        return;
    }
    assert!(p.capabilities().embeddings && !p.capabilities().chat);
    let r = p.embed(request).await.unwrap();
    assert_eq!(r.vectors.len(), 2);
    assert_eq!(r.vectors[0].len(), 8);
    assert_ne!(r.vectors[0], r.vectors[1], "vectors stay in input order");
    assert_eq!(r.input_tokens, 3);
}

async fn errors_are_classified(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    for (status, kind, retryable) in [
        (400, ErrorKind::Validation, false),
        (404, ErrorKind::NotFound, false),
        (429, ErrorKind::Throttling, true),
        (500, ErrorKind::Internal, true),
        (503, ErrorKind::ServiceUnavailable, true),
    ] {
        mock.push(Reply::status(status, "scripted").retry_after("2"));
        let e = p.converse(ask("hi")).await.unwrap_err();
        assert_eq!(
            (e.kind, e.retryable),
            (kind, retryable),
            "HTTP {status}: {e}"
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        // The same classification when the failure answers a stream request.
        mock.push(Reply::status(status, "scripted"));
        let e = p.converse_stream(ask("hi")).await.err().unwrap();
        assert_eq!(e.kind, kind);
    }
    assert_eq!(mock.calls(), 10);
}

async fn bad_credentials(h: Harness) {
    let mock = MockUpstream::start().await.unwrap();
    mock.require_key(KEY);
    let p = (h.make)(
        &mock.url(),
        "AKIDWRONG",
        HttpSettings::default(),
        ModelKind::Chat,
    );
    let e = p.converse(ask("hi")).await.unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::AccessDenied, false));
    assert!(e.message.contains("credentials"), "{e}");
}

async fn malformed_bodies(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(Reply::malformed());
    assert_eq!(
        p.converse(ask("hi")).await.unwrap_err().kind,
        ErrorKind::ModelError
    );
    mock.push(Reply::malformed());
    let items = events(&p, ask("hi")).await;
    assert!(
        items.last().unwrap().is_err(),
        "a malformed stream ends with an error"
    );
}

async fn stream_cut_short(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    mock.push(Reply::text("a long answer that never finishes").cut_after(4));
    let items = events(&p, ask("hi")).await;
    let e = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(
        (e.kind, e.retryable),
        (ErrorKind::ServiceUnavailable, true),
        "{e}"
    );
    assert!(!items
        .iter()
        .any(|e| matches!(e, Ok(StreamEvent::MessageStop { .. }))));
}

async fn time_limits(h: Harness) {
    let http = HttpSettings {
        response_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        ..HttpSettings::default()
    };
    let (mock, p) = setup(&h, http).await;
    mock.push(Reply::text("late").first_byte_delay(Duration::from_secs(2)));
    let e = p.converse(ask("hi")).await.unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::Timeout, true));
    mock.push(Reply::text("a stalled stream").chunk_delay(Duration::from_secs(2)));
    let items = events(&p, ask("hi")).await;
    let e = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
}

/// The active health check passes against a live upstream, fails when it answers 503 or not at
/// all, and is not counted as a model call.
/// Extended thinking: the budget reaches the upstream in its dialect, and reasoning comes back
/// with its signature (and redacted reasoning whole) from a whole answer and from a stream split
/// at awkward bytes alike, so a client can send it back in the next turn.
async fn reasoning(h: Harness) {
    let (mock, p) = setup(&h, HttpSettings::default()).await;
    let reply = || {
        Reply::answer(
            vec![
                Block::Thinking {
                    text: "Six times seven… is 42.".into(),
                    signature: Some("EqQBCkYIBxgCKkD+sig/==".into()),
                },
                Block::RedactedThinking("ZW5jcnlwdGVkIHJlYXNvbmluZw==".into()),
                Block::Text("42".into()),
            ],
            Stop::EndTurn,
        )
    };
    let mut request = ask("6 × 7?");
    request.reasoning = Some(Reasoning {
        budget_tokens: 2048,
    });
    mock.push(reply());
    let whole = p.converse(request.clone()).await.unwrap();
    let body = mock.last().unwrap().body;
    assert!(
        (h.reasoning_sent)(&body),
        "reasoning budget not sent: {body}"
    );
    let mut expected = vec![ContentBlock::ReasoningContent(
        ReasoningBlock::ReasoningText {
            text: "Six times seven… is 42.".into(),
            signature: h
                .signed_reasoning
                .then(|| "EqQBCkYIBxgCKkD+sig/==".to_string()),
        },
    )];
    if h.signed_reasoning {
        expected.push(ContentBlock::ReasoningContent(
            ReasoningBlock::RedactedContent("ZW5jcnlwdGVkIHJlYXNvbmluZw==".into()),
        ));
    }
    expected.push(ContentBlock::Text("42".into()));
    assert_eq!(whole.message.content, expected);

    mock.push(reply().split(3).pieces(2));
    let items = events(&p, request).await;
    let streamed = collect_stream("m".into(), futures::stream::iter(items).boxed())
        .await
        .unwrap();
    assert_eq!(streamed.message.content, expected);
    assert!((h.reasoning_sent)(&mock.last().unwrap().body));
}

async fn health_checks(h: Harness) {
    let (mock, provider) = setup(&h, HttpSettings::default()).await;
    provider.health_check().await.unwrap();
    mock.set_healthy(false);
    let e = provider.health_check().await.unwrap_err();
    assert_eq!(e.status(), 503, "{e}");
    assert_eq!((mock.health_checks(), mock.calls()), (2, 0));
    let dead = (h.make)(
        "http://127.0.0.1:9",
        KEY,
        HttpSettings::default(),
        ModelKind::Chat,
    );
    assert!(dead.health_check().await.is_err());
}

macro_rules! conformance {
    ($provider:ident) => {
        mod $provider {
            use super::*;
            #[tokio::test]
            async fn chat() {
                chat_text(super::$provider()).await
            }
            #[tokio::test]
            async fn stream_split_at_awkward_bytes() {
                stream_split_anywhere(super::$provider()).await
            }
            #[tokio::test]
            async fn tools_sync() {
                tool_call_sync(super::$provider()).await
            }
            #[tokio::test]
            async fn tools_streamed() {
                tool_call_streamed(super::$provider()).await
            }
            #[tokio::test]
            async fn multi_turn_with_tool_results() {
                multi_turn_tool_result(super::$provider()).await
            }
            #[tokio::test]
            async fn json_mode() {
                json_output(super::$provider()).await
            }
            #[tokio::test]
            async fn embed() {
                embeddings(super::$provider()).await
            }
            #[tokio::test]
            async fn error_classes() {
                errors_are_classified(super::$provider()).await
            }
            #[tokio::test]
            async fn wrong_credentials() {
                bad_credentials(super::$provider()).await
            }
            #[tokio::test]
            async fn malformed() {
                malformed_bodies(super::$provider()).await
            }
            #[tokio::test]
            async fn cut_mid_stream() {
                stream_cut_short(super::$provider()).await
            }
            #[tokio::test]
            async fn timeouts() {
                time_limits(super::$provider()).await
            }
            #[tokio::test]
            async fn extended_thinking() {
                reasoning(super::$provider()).await
            }
            #[tokio::test]
            async fn health() {
                health_checks(super::$provider()).await
            }
        }
    };
}

conformance!(openai);
conformance!(azure);
conformance!(anthropic);
conformance!(bedrock);

#[tokio::test]
async fn azure_calls_deployment_urls_with_the_api_key_header() {
    let (mock, provider) = setup(&azure(), HttpSettings::default()).await;
    collect_stream(
        "m".into(),
        provider.converse_stream(ask("hi")).await.unwrap(),
    )
    .await
    .unwrap();
    provider.health_check().await.unwrap();
    let r = mock.last().unwrap();
    assert_eq!(
        r.path,
        "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(r.header("api-key"), Some(KEY));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(mock.health_checks(), 1);
}
