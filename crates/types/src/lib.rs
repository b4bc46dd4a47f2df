//! Canonical, Converse-shaped types shared by every front door and provider.
//!
//! Front doors map their dialect (OpenAI, Bedrock, Anthropic) onto these types once; providers
//! map them onto their wire format once (hub and spoke: N + M converters, never N × M). The
//! types serialise to exactly the JSON shapes of the Bedrock Converse API (camelCase fields,
//! externally tagged content blocks), so the Converse front door needs no second copy of them.
//! This crate does no IO.

pub mod error;
pub mod message;
pub mod params;
pub mod request;
pub mod response;
pub mod stream;
pub mod vocab;

pub use error::{Error, ErrorKind, ErrorSource};
pub use message::{
    BinarySource, CachePoint, ContentBlock, DocumentBlock, ImageBlock, Message, ReasoningBlock,
    Role, SystemBlock, ToolResultBlock, ToolResultContent, ToolUseBlock,
};
pub use request::{
    ChatRequest, EmbedInput, EmbedRequest, Generation, InferenceConfig, Reasoning, ResponseFormat,
    Tool, ToolChoice, ToolConfig, ToolSpec,
};
pub use response::{ChatResponse, EmbedResponse, StopReason, TokenLogprob, TopLogprob, Usage};
pub use stream::{ContentBlockDelta, ContentBlockStart, StreamEvent};

/// Result alias used across Modelgate crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;
