//! The last degraded level: the model's static text, when every model of the chain failed and
//! the response cache had no answer to serve (the cached level is [`crate::cache`]).
//!
//! It never answers a client error or a gateway refusal ([`Error::is_final`]): those go back
//! to the caller as they are.

use async_trait::async_trait;
use modelgate_types::{ChatResponse, Error, Message, Role, StopReason, Usage};

use crate::pipeline::{Answer, Call, Layer, Next};

/// The model's configured degraded-service text.
pub(crate) struct StaticAnswer;

#[async_trait]
impl Layer for StaticAnswer {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let result = next.run(call).await;
        let error = match result {
            Err(e) if !e.is_final() && call.op.is_answer() => e,
            other => return other,
        };
        let Some(entry) = call.entry.clone() else {
            return Err(error);
        };
        let Some(text) = &entry.policy.static_response else {
            return Err(error);
        };
        tracing::warn!(model = %entry.info.id, reason = ?call.served.fallback_reason, "degraded answer: static");
        call.served.served_by = "static".into();
        let response = ChatResponse {
            model: entry.info.id.clone(),
            message: Message::text(Role::Assistant, text),
            stop_reason: StopReason::EndTurn,
            usage: Usage::default(),
            latency_ms: 0,
            logprobs: None,
        };
        Ok(Answer::from_response(response, &call.op))
    }
}
