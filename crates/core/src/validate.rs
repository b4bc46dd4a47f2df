//! Layer 1: validation of the canonical request, whatever dialect it came in. Dialect-specific
//! rules (OpenAI's `n`, Anthropic's `max_tokens`) are the front doors' own, before this.

use async_trait::async_trait;
use modelgate_types::{ChatRequest, ContentBlock, Error, Role};

use crate::pipeline::{Answer, Call, Layer, Next, Operation};

/// Refuses malformed requests before anything else looks at them.
pub(crate) struct Validate;

#[async_trait]
impl Layer for Validate {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        match &call.op {
            Operation::Converse(r) | Operation::ConverseStream(r) | Operation::CountTokens(r) => {
                validate_chat(r)?;
            }
            Operation::Embed(r) => {
                if r.model.is_empty() {
                    return Err(Error::validation("A model id is required."));
                }
            }
        }
        next.run(call).await
    }
}

/// Checks every chat request passes, whatever the dialect it came in.
pub fn validate_chat(request: &ChatRequest) -> Result<(), Error> {
    if request.model.is_empty() {
        return Err(Error::validation("A model id is required."));
    }
    // A conversation may start with the assistant (the OpenAI API accepts it; the Bedrock
    // front door refuses it as Bedrock does; upstreams that need a user turn first get one).
    if request.messages.is_empty() {
        return Err(Error::validation(
            "The conversation must contain at least one message.",
        ));
    }
    for (i, m) in request.messages.iter().enumerate() {
        if m.content.is_empty() {
            return Err(Error::validation(format!(
                "messages[{i}] has no content; each message needs at least one content block."
            )));
        }
        if m.content
            .iter()
            .all(|b| matches!(b, ContentBlock::Text(t) if t.trim().is_empty()))
            && !(i + 1 == request.messages.len() && m.role == Role::Assistant)
        {
            return Err(Error::validation(format!(
                "messages[{i}] has only blank text; text content must not be blank."
            )));
        }
    }
    request.inference.validate()?;
    request.generation.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{InferenceConfig, Message};

    fn req(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages,
            ..Default::default()
        }
    }

    #[test]
    fn validation_rules() {
        assert!(validate_chat(&req(vec![Message::text(Role::User, "hi")])).is_ok());
        assert_eq!(validate_chat(&req(vec![])).unwrap_err().status(), 400);
        assert!(validate_chat(&req(vec![
            Message::text(Role::Assistant, "Hello, how can I help?"),
            Message::text(Role::User, "hi"),
        ]))
        .is_ok());
        assert_eq!(
            validate_chat(&req(vec![Message::text(Role::User, "  ")]))
                .unwrap_err()
                .status(),
            400
        );
        let mut r = req(vec![Message::text(Role::User, "hi")]);
        r.inference = InferenceConfig {
            max_tokens: Some(0),
            ..Default::default()
        };
        assert!(validate_chat(&r).unwrap_err().message.contains("maxTokens"));
    }
}
