//! The `cascade` strategy: ask the models in order, smallest first, and return the first
//! answer whose confidence reaches the threshold. Earlier models are asked for a whole
//! answer (a streaming caller gets the accepted answer replayed as a stream, or the last
//! model's own stream); their answers never enter the response cache, and every rejected
//! answer is charged as a side call of the routing.
//!
//! Confidence comes from a validator: a clean end (the default), well-formed JSON (with
//! required keys), a regular expression, or a judge model's 0–10 rating. An answer cut by
//! `max_tokens` or filtered has confidence 0 whatever the validator. (Token log-probabilities
//! would be a better signal; the canonical answer does not carry them yet.)

use std::sync::Arc;

use modelgate_types::{
    ChatRequest, ChatResponse, ErrorSource, InferenceConfig, Message, Role, StopReason, SystemBlock,
};

use super::{CascadeStep, Router, Routing, RoutingDecision, SideCall, Validator};
use crate::pipeline::{Answer, Call, Next, Operation};
use crate::registry::Registry;
use modelgate_types::Error;

/// A validator ready to score answers.
pub(crate) enum Check {
    Complete,
    Json(Vec<String>),
    Regex(regex::Regex),
    Judge { model: String, prompt: String },
}

const JUDGE_PROMPT: &str = "You grade answers. Given a question and an answer, rate from 0 to 10 how correct, complete and on-topic the answer is. Reply with the number only.";

impl Check {
    pub(crate) fn new(v: &Validator) -> Result<Self, String> {
        Ok(match v {
            Validator::Complete => Check::Complete,
            Validator::Json { required } => Check::Json(required.clone()),
            Validator::Regex { pattern } => Check::Regex(
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Validator::Judge { model, prompt } => Check::Judge {
                model: model.clone(),
                prompt: prompt.clone().unwrap_or_else(|| JUDGE_PROMPT.to_string()),
            },
        })
    }

    /// The answer's confidence, 0–1; a judge's usage goes to `side_calls`.
    async fn confidence(
        &self,
        registry: Option<&Arc<Registry>>,
        request: Option<&ChatRequest>,
        answer: &ChatResponse,
        side_calls: &mut Vec<SideCall>,
    ) -> f64 {
        let clean = matches!(
            answer.stop_reason,
            StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse
        );
        if !clean {
            return 0.0;
        }
        let text = answer.message.joined_text();
        match self {
            Check::Complete => 1.0,
            Check::Json(required) => {
                let trimmed = text
                    .trim()
                    .trim_start_matches("```json")
                    .trim_start_matches("```")
                    .trim_end_matches("```")
                    .trim();
                match serde_json::from_str::<serde_json::Value>(trimmed) {
                    Ok(v) if required.iter().all(|k| v.get(k).is_some()) => 1.0,
                    _ => 0.0,
                }
            }
            Check::Regex(re) => {
                if re.is_match(&text) {
                    1.0
                } else {
                    0.0
                }
            }
            Check::Judge { model, prompt } => {
                let Some(entry) = registry.and_then(|r| r.get(model)) else {
                    return 0.0;
                };
                let Ok(endpoint) = entry.pick() else {
                    return 0.0;
                };
                let question = request.map(super::last_user_text).unwrap_or_default();
                let judge = ChatRequest {
                    model: entry.info.id.clone(),
                    system: vec![SystemBlock::Text(prompt.clone())],
                    messages: vec![Message::text(
                        Role::User,
                        format!("Question:\n{question}\n\nAnswer:\n{text}\n\nRating (0-10):"),
                    )],
                    inference: InferenceConfig {
                        max_tokens: Some(8),
                        temperature: Some(0.0),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match endpoint.provider.converse(judge).await {
                    Ok(r) => {
                        side_calls.push(SideCall {
                            purpose: "judge",
                            model: entry.info.id.clone(),
                            usage: r.usage,
                        });
                        rating(&r.message.joined_text())
                    }
                    Err(e) => {
                        tracing::warn!(judge = %model, error = %e, "cascade judge failed; escalating");
                        0.0
                    }
                }
            }
        }
    }
}

/// The first number in a judge's reply, as a fraction of 10.
fn rating(reply: &str) -> f64 {
    let number: String = reply
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .trim_end_matches('.')
        .parse::<f64>()
        .map_or(0.0, |n| (n / 10.0).clamp(0.0, 1.0))
}

/// Run the cascade of `router` for `call` (see the module docs).
pub(crate) async fn run(
    routing: &Routing,
    router: &Router,
    call: &mut Call,
    next: Next<'_>,
    mut decision: RoutingDecision,
) -> Result<Answer, Error> {
    let (Some(cascade), Some(check)) = (&router.config.cascade, &router.validator) else {
        return Err(Error::internal("cascade router without a cascade"));
    };
    let original = call.op.clone();
    let registry = routing.registry();
    let n = cascade.models.len();
    for (i, model) in cascade.models.iter().enumerate() {
        let mut op = original.clone();
        op.set_model(model);
        decision.model.clone_from(model);
        if i + 1 == n {
            decision.cascade.push(CascadeStep {
                model: model.clone(),
                confidence: None,
                accepted: true,
                reason: None,
            });
            call.op = op;
            call.skip_cache = false;
            call.served.routing = Some(Arc::new(decision));
            return next.run(call).await;
        }
        if let Operation::ConverseStream(r) = op {
            op = Operation::Converse(r);
        }
        call.op = op;
        call.skip_cache = true;
        call.served.routing = Some(Arc::new(decision.clone()));
        let step = |confidence, accepted, reason: Option<String>| CascadeStep {
            model: model.clone(),
            confidence,
            accepted,
            reason,
        };
        match next.run(call).await {
            Ok(Answer::Response(answer)) => {
                let confidence = check
                    .confidence(
                        registry.as_ref(),
                        original.chat(),
                        &answer,
                        &mut decision.side_calls,
                    )
                    .await;
                decision.score = Some(confidence);
                if confidence >= cascade.threshold {
                    decision.cascade.push(step(Some(confidence), true, None));
                    call.skip_cache = false;
                    call.served.routing = Some(Arc::new(decision));
                    return Ok(Answer::from_response(answer, &original));
                }
                decision
                    .cascade
                    .push(step(Some(confidence), false, Some("low_confidence".into())));
                decision.side_calls.push(SideCall {
                    purpose: "cascade",
                    model: model.clone(),
                    usage: answer.usage,
                });
            }
            Ok(other) => return Ok(other),
            // The gateway's refusals and the caller's own mistakes are not the model's
            // weakness: a larger model would refuse them too.
            Err(e) if e.is_final() || (e.source == ErrorSource::Client && !e.retryable) => {
                return Err(e)
            }
            Err(e) => {
                decision.cascade.push(step(
                    None,
                    false,
                    Some(format!("error: {}", e.kind.as_str())),
                ));
            }
        }
    }
    Err(Error::internal("the cascade has no models"))
}

#[cfg(test)]
mod tests {
    use super::rating;

    #[test]
    fn judge_ratings_are_read_as_fractions_of_ten() {
        assert_eq!(rating("8"), 0.8);
        assert_eq!(rating("Rating: 10."), 1.0);
        assert_eq!(rating(" 7.5/10"), 0.75);
        assert_eq!(rating("no idea"), 0.0);
        assert_eq!(rating("42"), 1.0);
    }
}
