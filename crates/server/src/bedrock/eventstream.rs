//! AWS event-stream framing (`application/vnd.amazon.eventstream`) of Bedrock's streaming
//! operations, written with `aws-smithy-eventstream`.
//!
//! Each event is one message with `:message-type=event`, `:event-type=<member>` and a JSON
//! payload. A failure after the stream started is an exception message
//! (`:message-type=exception`, `:exception-type=<member>`), which the AWS SDKs raise — never a
//! silent clean end — and nothing follows it.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message as EventMessage};
use axum::body::Bytes;
use modelgate_providers::ChatStream;
use modelgate_types::{ContentBlockDelta, ContentBlockStart, Error, ErrorKind, StreamEvent};
use serde_json::{json, Value};

/// One event to frame: the member name and its JSON payload.
pub type Event = (&'static str, Value);

/// Which operation's stream is framed; they differ in the exception members they define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// ConverseStream (no `modelTimeoutException` member).
    ConverseStream,
    /// InvokeModelWithResponseStream.
    InvokeWithResponseStream,
}

/// The media type of AWS event-stream bodies.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Frame a canonical stream: `to_events` turns each canonical event into zero or more events;
/// an error becomes an exception message that ends the stream.
pub fn body<F>(
    operation: Operation,
    events: ChatStream,
    mut to_events: F,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send
where
    F: FnMut(&StreamEvent) -> Vec<Event> + Send + 'static,
{
    let encode = move |event: &StreamEvent| {
        let framed: Result<Vec<Bytes>, String> = to_events(event)
            .iter()
            .map(|(name, payload)| encode_event(name, payload))
            .collect();
        match framed {
            Ok(frames) => Bytes::from(frames.concat()),
            // A payload the framing cannot carry (over the 16 MB message limit): the client
            // gets an exception rather than a silently missing event.
            Err(e) => exception_bytes(operation, &Error::internal(e)),
        }
    };
    crate::streaming::encode(events, encode, move |e| exception_bytes(operation, e), None)
}

fn exception_bytes(operation: Operation, e: &Error) -> Bytes {
    encode_exception(operation, e).unwrap_or_else(|_| Bytes::new())
}

/// The ConverseStream member name and JSON payload of a canonical event.
pub fn converse_event(event: &StreamEvent) -> Vec<Event> {
    let event = match event {
        StreamEvent::MessageStart { role, .. } => ("messageStart", json!({ "role": role })),
        StreamEvent::ContentBlockStart { index, start } => {
            let ContentBlockStart::ToolUse { tool_use_id, name } = start;
            (
                "contentBlockStart",
                json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}),
            )
        }
        StreamEvent::ContentBlockDelta { index, delta } => {
            let delta = match delta {
                ContentBlockDelta::Text(t) => json!({ "text": t }),
                ContentBlockDelta::ToolUseInput(i) => json!({"toolUse": {"input": i}}),
                ContentBlockDelta::ReasoningText(t) => json!({"reasoningContent": {"text": t}}),
                ContentBlockDelta::ReasoningSignature(s) => {
                    json!({"reasoningContent": {"signature": s}})
                }
                ContentBlockDelta::RedactedReasoning(d) => {
                    json!({"reasoningContent": {"redactedContent": d}})
                }
            };
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": delta}),
            )
        }
        StreamEvent::ContentBlockStop { index } => {
            ("contentBlockStop", json!({ "contentBlockIndex": index }))
        }
        StreamEvent::MessageStop { stop_reason } => {
            ("messageStop", json!({ "stopReason": stop_reason }))
        }
        StreamEvent::Metadata { usage, latency_ms } => (
            "metadata",
            json!({"usage": usage, "metrics": {"latencyMs": latency_ms}}),
        ),
        // ConverseStream has no log-probabilities (and Converse requests cannot ask for them).
        StreamEvent::Logprobs { .. } => return Vec::new(),
    };
    vec![event]
}

/// An InvokeModelWithResponseStream `chunk` event: the native chunk JSON, base64-encoded.
pub fn chunk_event(native: &Value) -> Event {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.encode(native.to_string());
    ("chunk", json!({ "bytes": bytes }))
}

/// The exception member (shared by ConverseStream and InvokeModelWithResponseStream) for an
/// error that ends a started stream.
fn stream_exception(operation: Operation, kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Timeout if operation == Operation::InvokeWithResponseStream => {
            "modelTimeoutException"
        }
        ErrorKind::Validation | ErrorKind::PayloadTooLarge => "validationException",
        ErrorKind::Throttling => "throttlingException",
        ErrorKind::ServiceUnavailable => "serviceUnavailableException",
        ErrorKind::Internal => "internalServerException",
        ErrorKind::ModelError
        | ErrorKind::Timeout
        | ErrorKind::NotFound
        | ErrorKind::Unauthenticated
        | ErrorKind::AccessDenied => "modelStreamErrorException",
    }
}

fn frame(headers: [(&'static str, &'static str); 3], payload: &Value) -> Result<Bytes, String> {
    let message = EventMessage::new_from_parts(
        headers
            .into_iter()
            .map(|(name, value)| Header::new(name, HeaderValue::String(value.into())))
            .collect(),
        Bytes::from(payload.to_string()),
    );
    let mut out = Vec::with_capacity(96 + message.payload().len());
    write_message_to(&message, &mut out).map_err(|e| format!("event-stream framing: {e}"))?;
    Ok(Bytes::from(out))
}

fn encode_event(name: &'static str, payload: &Value) -> Result<Bytes, String> {
    frame(
        [
            (":event-type", name),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

fn encode_exception(operation: Operation, error: &Error) -> Result<Bytes, String> {
    frame(
        [
            (":exception-type", stream_exception(operation, error.kind)),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &json!({ "message": error.message }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use modelgate_types::{Role, StopReason, Usage};

    /// Decode every message of a framed body: (message type, member name, JSON payload).
    pub fn decode_all(mut bytes: &[u8]) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let m = aws_smithy_eventstream::frame::read_message_from(&mut bytes).unwrap();
            let h = |n: &str| {
                m.headers()
                    .iter()
                    .find(|h| h.name().as_str() == n)
                    .map(|h| h.value().as_string().unwrap().as_str().to_string())
                    .unwrap_or_default()
            };
            let kind = h(":message-type");
            let name = if kind == "event" {
                h(":event-type")
            } else {
                h(":exception-type")
            };
            out.push((kind, name, serde_json::from_slice(m.payload()).unwrap()));
        }
        out
    }

    async fn framed(events: Vec<Result<StreamEvent, Error>>) -> Vec<(String, String, Value)> {
        let body: Vec<Bytes> = body(
            Operation::ConverseStream,
            futures::stream::iter(events).boxed(),
            converse_event,
        )
        .map(|r| r.unwrap())
        .collect()
        .await;
        decode_all(&body.concat())
    }

    #[tokio::test]
    async fn stream_frames_decode_in_order_and_errors_become_exceptions() {
        let frames = framed(vec![
            Ok(StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: None,
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 0,
                delta: ContentBlockDelta::Text("Pa".into()),
            }),
            Ok(StreamEvent::ContentBlockStart {
                index: 1,
                start: ContentBlockStart::ToolUse {
                    tool_use_id: "t1".into(),
                    name: "f".into(),
                },
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 1,
                delta: ContentBlockDelta::ToolUseInput("{\"a\":".into()),
            }),
            Err(Error::new(ErrorKind::Throttling, "slow down")),
            Ok(StreamEvent::ContentBlockStop { index: 1 }),
        ])
        .await;
        let names: Vec<&str> = frames.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockStart",
                "contentBlockDelta",
                "throttlingException"
            ]
        );
        assert_eq!(
            frames[1].2,
            json!({"contentBlockIndex": 0, "delta": {"text": "Pa"}})
        );
        assert_eq!(
            frames[2].2,
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}})
        );
        assert_eq!(
            frames[3].2,
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}})
        );
        assert_eq!(frames[4].0, "exception");
        assert_eq!(frames[4].2, json!({"message": "slow down"}));
    }

    #[tokio::test]
    async fn clean_stream_ends_with_metadata() {
        let frames = framed(vec![
            Ok(StreamEvent::MessageStop {
                stop_reason: StopReason::EndTurn,
            }),
            Ok(StreamEvent::Metadata {
                usage: Usage::new(1, 2),
                latency_ms: 3,
            }),
        ])
        .await;
        assert_eq!(frames[1].1, "metadata");
        assert_eq!(frames[1].2["usage"]["totalTokens"], 3);
    }

    #[test]
    fn timeout_member_exists_only_for_invoke_streams() {
        assert_eq!(
            stream_exception(Operation::ConverseStream, ErrorKind::Timeout),
            "modelStreamErrorException"
        );
        assert_eq!(
            stream_exception(Operation::InvokeWithResponseStream, ErrorKind::Timeout),
            "modelTimeoutException"
        );
    }

    #[test]
    fn chunk_payload_is_base64_json() {
        use base64::Engine as _;
        let (name, payload) = chunk_event(&json!({"generation": "hi"}));
        assert_eq!(name, "chunk");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(payload["bytes"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            json!({"generation": "hi"})
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn event() -> impl Strategy<Value = StreamEvent> {
            prop_oneof![
                ".{0,40}".prop_map(|t| StreamEvent::ContentBlockDelta {
                    index: 0,
                    delta: ContentBlockDelta::Text(t)
                }),
                (any::<u32>(), ".{0,40}").prop_map(|(i, t)| StreamEvent::ContentBlockDelta {
                    index: i,
                    delta: ContentBlockDelta::ToolUseInput(t)
                }),
                (any::<u32>(), "[a-z]{1,8}").prop_map(|(i, n)| StreamEvent::ContentBlockStart {
                    index: i,
                    start: ContentBlockStart::ToolUse {
                        tool_use_id: format!("t{i}"),
                        name: n
                    }
                }),
                any::<u32>().prop_map(|i| StreamEvent::ContentBlockStop { index: i }),
                (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(a, b, l)| {
                    StreamEvent::Metadata {
                        usage: Usage::new(a, b),
                        latency_ms: l,
                    }
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every framed event decodes back to exactly its payload, in order.
            #[test]
            fn frames_round_trip(events in prop::collection::vec(event(), 0..12)) {
                let expected: Vec<Event> = events.iter().flat_map(converse_event).collect();
                let mut bytes = Vec::new();
                for (name, payload) in &expected {
                    bytes.extend_from_slice(&encode_event(name, payload).unwrap());
                }
                let decoded = decode_all(&bytes);
                prop_assert_eq!(decoded.len(), expected.len());
                for ((kind, name, payload), (want_name, want_payload)) in decoded.iter().zip(&expected) {
                    prop_assert_eq!(kind, "event");
                    prop_assert_eq!(name, want_name);
                    prop_assert_eq!(payload, want_payload);
                }
            }

            /// A truncated or corrupted frame is an error for the decoder, never a panic or a
            /// silently accepted message.
            #[test]
            fn damaged_frames_are_rejected(text in ".{0,64}", cut in 0usize..200, flip in 0usize..200) {
                let whole = encode_event("contentBlockDelta", &json!({"delta": {"text": text}})).unwrap();
                let cut = cut % whole.len();
                let mut truncated: &[u8] = &whole[..cut];
                prop_assert!(aws_smithy_eventstream::frame::read_message_from(&mut truncated).is_err());
                let mut corrupted = whole.to_vec();
                let at = flip % corrupted.len();
                corrupted[at] ^= 0x5a;
                let mut slice: &[u8] = &corrupted;
                prop_assert!(aws_smithy_eventstream::frame::read_message_from(&mut slice).is_err());
            }
        }
    }
}
