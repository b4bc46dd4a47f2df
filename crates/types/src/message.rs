//! Messages made of content blocks, and system prompt blocks.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The caller.
    User,
    /// The model.
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Author of the turn.
    pub role: Role,
    /// The turn's content, in order.
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A message with one text block.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![ContentBlock::Text(text.into())],
        }
    }

    /// The concatenation of the message's text blocks.
    pub fn joined_text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A block of message content, tagged as in the Converse API (`{"text": "..."}`, `{"toolUse": {..}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentBlock {
    /// Plain text.
    Text(String),
    /// An image, as raw bytes.
    Image(ImageBlock),
    /// A document (pdf, csv, txt …), as raw bytes.
    Document(DocumentBlock),
    /// A tool call made by the model.
    ToolUse(ToolUseBlock),
    /// The result of a tool call, sent back by the caller.
    ToolResult(ToolResultBlock),
    /// The model's reasoning ("thinking") content.
    ReasoningContent(ReasoningBlock),
    /// A prompt-cache checkpoint: the content before it may be cached by the provider.
    CachePoint(CachePoint),
}

/// A prompt-cache checkpoint (Converse `cachePoint`, Anthropic `cache_control`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePoint {
    /// The cache type; Converse defines `default`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Default for CachePoint {
    fn default() -> Self {
        Self {
            kind: "default".into(),
        }
    }
}

/// Image content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageBlock {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: String,
    /// Where the bytes are.
    pub source: BinarySource,
}

/// Document content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentBlock {
    /// `pdf`, `csv`, `doc`, `docx`, `xls`, `xlsx`, `html`, `txt` or `md`.
    pub format: String,
    /// A name for the document (shown to the model).
    pub name: String,
    /// Where the bytes are.
    pub source: BinarySource,
}

/// Binary payload of an image or document: base64 text in JSON, as in Converse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BinarySource {
    /// Base64-encoded bytes.
    Bytes(String),
}

/// A tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolUseBlock {
    /// Identifier the result must refer to.
    pub tool_use_id: String,
    /// Name of the tool.
    pub name: String,
    /// Arguments, as JSON.
    pub input: serde_json::Value,
}

/// A tool result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolResultBlock {
    /// The call this answers.
    pub tool_use_id: String,
    /// Result content.
    pub content: Vec<ToolResultContent>,
    /// `success` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Content inside a tool result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolResultContent {
    /// Text.
    Text(String),
    /// JSON.
    Json(serde_json::Value),
    /// An image.
    Image(ImageBlock),
    /// A document.
    Document(DocumentBlock),
}

/// Reasoning content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReasoningBlock {
    /// Visible reasoning text with an optional signature.
    ReasoningText {
        /// The reasoning.
        text: String,
        /// Provider signature that must be sent back unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Encrypted reasoning (base64), passed through unchanged.
    RedactedContent(String),
}

/// A block of the system prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SystemBlock {
    /// System instructions.
    Text(String),
    /// A prompt-cache checkpoint after the blocks before it.
    CachePoint(CachePoint),
}

impl SystemBlock {
    /// The block's text; `None` for a cache point.
    pub fn text(&self) -> Option<&str> {
        match self {
            SystemBlock::Text(t) => Some(t),
            SystemBlock::CachePoint(_) => None,
        }
    }
}
