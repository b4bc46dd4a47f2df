//! Stream events, in the order of ConverseStream.
//!
//! A well-formed stream is: `MessageStart`, then per content block an optional
//! `ContentBlockStart` (tool use only), one or more `ContentBlockDelta`, `ContentBlockStop`;
//! then `MessageStop` and finally `Metadata`. A stream that fails yields an `Err` item instead
//! of ending quietly.

use crate::message::Role;
use crate::response::{StopReason, Usage};

/// One stream event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The assistant message begins.
    MessageStart {
        /// Always `Assistant`.
        role: Role,
        /// The prompt's size in tokens, when the provider knows it before generating (dialects
        /// such as Anthropic's report it at the start of the stream).
        input_tokens: Option<u32>,
    },
    /// A content block that needs announcing (tool use) begins.
    ContentBlockStart {
        /// Index of the block in the message.
        index: u32,
        /// What the block is.
        start: ContentBlockStart,
    },
    /// A piece of a content block.
    ContentBlockDelta {
        /// Index of the block in the message.
        index: u32,
        /// The piece.
        delta: ContentBlockDelta,
    },
    /// A content block is complete.
    ContentBlockStop {
        /// Index of the block in the message.
        index: u32,
    },
    /// The message is complete.
    MessageStop {
        /// Why generation stopped.
        stop_reason: StopReason,
    },
    /// Log-probabilities of the text just sent in the content block `index` (after its
    /// `ContentBlockDelta`; only when the request asked for them).
    Logprobs {
        /// Index of the block in the message.
        index: u32,
        /// The tokens of that text, in order.
        tokens: Vec<crate::response::TokenLogprob>,
    },
    /// Final accounting.
    Metadata {
        /// Token counts.
        usage: Usage,
        /// Time spent in the model, in milliseconds.
        latency_ms: u64,
    },
}

/// The start of a tool-use block.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlockStart {
    /// A tool call begins.
    ToolUse {
        /// Call id.
        tool_use_id: String,
        /// Tool name.
        name: String,
    },
}

/// A piece of content.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlockDelta {
    /// Text.
    Text(String),
    /// A fragment of a tool call's JSON arguments.
    ToolUseInput(String),
    /// Reasoning text.
    ReasoningText(String),
    /// The signature of the reasoning block so far (Anthropic `signature_delta`, ConverseStream
    /// `reasoningContent.signature`); it comes after the reasoning text and must be sent back
    /// unchanged with the block in the next turn.
    ReasoningSignature(String),
    /// Encrypted reasoning (ConverseStream `reasoningContent.redactedContent`, Anthropic
    /// `redacted_thinking`), passed through unchanged.
    RedactedReasoning(String),
}
