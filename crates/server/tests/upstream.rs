//! Modelgate's Bedrock provider against Modelgate's own Bedrock front door with SigV4
//! verification on (the verifier that boto3 and the AWS SDK for Rust are tested against): the
//! provider's signatures, Converse / ConverseStream decoding, CountTokens and Titan embeddings
//! over a real event stream from the real embedded model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: fail loudly

mod common;

use std::sync::Arc;

use futures::StreamExt;
use modelgate_core::Config;
use modelgate_providers::{
    collect_stream, AwsCredentials, Bedrock, BedrockConfig, BedrockEndpoint, HttpSettings,
    ModelKind, Provider,
};
use modelgate_server::sigv4::Verifier;
use modelgate_types::{
    ChatRequest, EmbedInput, EmbedRequest, ErrorKind, InferenceConfig, Message, Role, StreamEvent,
};

const KEY: &str = "AKIDUPSTREAMTEST";
const SECRET: &str = "upstream-test-secret";
const CHAT: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const EMBED: &str = "amazon.titan-embed-text-v2:0";

async fn inner() -> String {
    let config = Config::parse(
        &format!(
            "[[models]]\nid = \"{CHAT}\"\nupstream_id = \"local.smollm2-135m-instruct\"\n\
             [[models]]\nid = \"{EMBED}\"\nupstream_id = \"local.all-minilm-l6-v2\"\n"
        ),
        "inner.toml",
    )
    .unwrap();
    common::serve(
        config,
        Some(Verifier::new([(KEY.to_string(), SECRET.to_string())])),
    )
    .await
}

fn provider(base: &str, secret: &str, model: &str, kind: ModelKind) -> Arc<dyn Provider> {
    let endpoint = BedrockEndpoint::new(BedrockConfig {
        name: "inner".into(),
        region: "eu-west-1".into(),
        base_url: Some(base.into()),
        credentials: AwsCredentials {
            access_key_id: KEY.into(),
            secret_access_key: secret.into(),
            session_token: None,
        },
        http: HttpSettings::default(),
    })
    .unwrap();
    Arc::new(Bedrock::new(endpoint, model.into(), kind))
}

fn question() -> ChatRequest {
    ChatRequest {
        model: "outer-name".into(),
        messages: vec![Message::text(Role::User, "What is the capital of France?")],
        inference: InferenceConfig {
            max_tokens: Some(32),
            temperature: Some(0.0),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn bedrock_provider_signs_and_decodes_against_a_real_front_door() {
    let base = inner().await;
    let chat = provider(&base, SECRET, CHAT, ModelKind::Chat);

    let whole = chat.converse(question()).await.unwrap();
    assert!(whole.message.joined_text().contains("Paris"), "{whole:?}");
    assert!(whole.usage.input_tokens > 0 && whole.usage.output_tokens > 0);
    assert_eq!(whole.model, "outer-name");

    let events: Vec<_> = chat
        .converse_stream(question())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(matches!(
        events.first(),
        Some(Ok(StreamEvent::MessageStart { .. }))
    ));
    let streamed = collect_stream("m".into(), futures::stream::iter(events).boxed())
        .await
        .unwrap();
    assert_eq!(streamed.message.joined_text(), whole.message.joined_text());
    assert_eq!(streamed.usage, whole.usage);

    let counted = chat.count_tokens(&question()).await.unwrap();
    assert_eq!(counted, whole.usage.input_tokens);

    let embed = provider(&base, SECRET, EMBED, ModelKind::Embedding);
    let vectors = embed
        .embed(EmbedRequest {
            model: "e".into(),
            input: EmbedInput::Texts(vec!["hello".into(), "world".into()]),
        })
        .await
        .unwrap();
    assert_eq!(vectors.vectors.len(), 2);
    assert_eq!(vectors.vectors[0].len(), 384);
    assert!(vectors.input_tokens > 0);

    let wrong = provider(&base, "not-the-secret", CHAT, ModelKind::Chat);
    let e = wrong.converse(question()).await.unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::AccessDenied, false));
}
