//! The AWS SDK for Rust (`aws-sdk-bedrockruntime`), unmodified, against the real server with
//! SigV4 verification on: Converse, ConverseStream (event order checked) and a refused wrong
//! secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: fail loudly

mod common;

use aws_credential_types::Credentials;
use aws_sdk_bedrockruntime::config::Region;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, InferenceConfiguration, Message,
};
use aws_sdk_bedrockruntime::Client;
use modelgate_core::Config;
use modelgate_server::sigv4::Verifier;

const MODEL: &str = "local.smollm2-135m-instruct";
const KEY: &str = "AKIDRUSTSDK";
const SECRET: &str = "rust-sdk-secret";

fn client(base: &str, secret: &str) -> Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .endpoint_url(base)
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::new(KEY, secret, None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

fn question() -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("What is the capital of France?".into()))
        .build()
        .unwrap()
}

fn settings() -> InferenceConfiguration {
    InferenceConfiguration::builder()
        .max_tokens(48)
        .temperature(0.0)
        .build()
}

#[tokio::test]
async fn rust_sdk_converse_and_stream_with_sigv4() {
    let base = common::serve(
        Config::default(),
        Some(Verifier::new([(KEY.to_string(), SECRET.to_string())])),
    )
    .await;
    let c = client(&base, SECRET);

    let r = c
        .converse()
        .model_id(MODEL)
        .messages(question())
        .inference_config(settings())
        .send()
        .await
        .unwrap();
    let message = r.output().unwrap().as_message().unwrap();
    let text = message.content()[0].as_text().unwrap().clone();
    assert!(text.contains("Paris"), "{text}");
    let usage = r.usage().unwrap();
    assert!(usage.input_tokens() > 0 && usage.output_tokens() > 0);
    assert_eq!(
        usage.total_tokens(),
        usage.input_tokens() + usage.output_tokens()
    );

    let mut stream = c
        .converse_stream()
        .model_id(MODEL)
        .messages(question())
        .inference_config(settings())
        .send()
        .await
        .unwrap()
        .stream;
    let mut order = Vec::new();
    let mut streamed = String::new();
    while let Some(event) = stream.recv().await.unwrap() {
        order.push(match &event {
            ConverseStreamOutput::MessageStart(_) => "messageStart",
            ConverseStreamOutput::ContentBlockStart(_) => "contentBlockStart",
            ConverseStreamOutput::ContentBlockDelta(d) => {
                if let Some(aws_sdk_bedrockruntime::types::ContentBlockDelta::Text(t)) = d.delta() {
                    streamed.push_str(t);
                }
                "contentBlockDelta"
            }
            ConverseStreamOutput::ContentBlockStop(_) => "contentBlockStop",
            ConverseStreamOutput::MessageStop(_) => "messageStop",
            ConverseStreamOutput::Metadata(m) => {
                assert_eq!(
                    m.usage().unwrap().output_tokens(),
                    usage.output_tokens(),
                    "stream and non-stream use the same tokens at temperature 0"
                );
                "metadata"
            }
            _ => "other",
        });
    }
    assert_eq!(streamed, text);
    order.dedup();
    assert_eq!(
        order,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );

    // The same call signed with the wrong secret is refused with AWS's exception.
    let err = client(&base, "not-the-secret")
        .converse()
        .model_id(MODEL)
        .messages(question())
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");
}
