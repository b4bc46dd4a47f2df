//! The comparison of two prompt versions on the prompt's stored example inputs: each example
//! rendered with both versions and sent to the model, then latency, tokens, the similarity of
//! the two answers (normalised Levenshtein) and, when the prompt has a response schema,
//! whether each answer is JSON that matches it. The new version passes when it meets the
//! thresholds of its `modelgate.thresholds`.

use std::future::Future;
use std::time::{Duration, Instant};

use modelgate_types::{ChatRequest, ChatResponse, Error};
use serde::Serialize;
use serde_json::Value;

use super::{PromptDef, Thresholds};

/// One version's answer to one example.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Wall time of the call.
    pub latency_ms: f64,
    /// Input tokens.
    pub input_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// The answer's text.
    pub text: String,
    /// Why the call failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the answer matches the response schema (`None`: the prompt has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_valid: Option<bool>,
}

impl Run {
    fn failed(&self) -> bool {
        self.error.is_some() || self.schema_valid == Some(false)
    }
}

/// One example's row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The example's label (or its number).
    pub example: String,
    /// The old version's answer.
    pub old: Run,
    /// The new version's answer.
    pub new: Run,
    /// How alike the two answers are (0–1).
    pub similarity: f64,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The version compared against.
    pub old_version: i64,
    /// The version under test.
    pub new_version: i64,
    /// One row per example.
    pub rows: Vec<Row>,
    /// Mean similarity of the answers.
    pub mean_similarity: f64,
    /// The new version's mean latency over the old one's.
    pub latency_ratio: f64,
    /// The share of examples the new version failed.
    pub error_rate: f64,
    /// The thresholds applied (the new version's).
    pub thresholds: Thresholds,
    /// What failed them (empty: passed).
    pub failures: Vec<String>,
    /// Whether the new version passed.
    pub passed: bool,
}

async fn run<F, Fut>(
    def: &PromptDef,
    version: i64,
    vars: &serde_json::Map<String, Value>,
    call: &F,
) -> Run
where
    F: Fn(i64, ChatRequest) -> Fut,
    Fut: Future<Output = Result<ChatResponse, Error>>,
{
    let started = Instant::now();
    let rendered = match def.render(vars) {
        Ok(r) => r,
        Err(e) => return errored(started.elapsed(), &e.message),
    };
    match call(version, rendered.request).await {
        Ok(answer) => {
            let text = answer.message.joined_text();
            let schema_valid = rendered.response_schema.as_ref().map(|schema| {
                let Ok(json) = serde_json::from_str::<Value>(text.trim()) else {
                    return false;
                };
                crate::endpoints::compile_schema(schema).is_ok_and(|v| v.is_valid(&json))
            });
            Run {
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                input_tokens: answer.usage.input_tokens,
                output_tokens: answer.usage.output_tokens,
                text,
                error: None,
                schema_valid,
            }
        }
        Err(e) => errored(started.elapsed(), &e.message),
    }
}

fn errored(took: Duration, why: &str) -> Run {
    Run {
        latency_ms: took.as_secs_f64() * 1000.0,
        input_tokens: 0,
        output_tokens: 0,
        text: String::new(),
        error: Some(why.to_string()),
        schema_valid: None,
    }
}

/// Compare version `new_v` (`new`) against `old_v` (`old`) on the new version's examples
/// (the old one's when it has none), calling the model through `call` (given the version a
/// request was rendered from).
pub async fn compare<F, Fut>(
    old: &PromptDef,
    old_v: i64,
    new: &PromptDef,
    new_v: i64,
    call: F,
) -> Report
where
    F: Fn(i64, ChatRequest) -> Fut,
    Fut: Future<Output = Result<ChatResponse, Error>>,
{
    let governance = new.modelgate.clone().unwrap_or_default();
    let examples = if governance.examples.is_empty() {
        old.modelgate
            .as_ref()
            .map(|g| g.examples.clone())
            .unwrap_or_default()
    } else {
        governance.examples.clone()
    };
    let thresholds = governance.thresholds.clone();
    let mut rows = Vec::new();
    for (i, ex) in examples.iter().enumerate() {
        let old_run = run(old, old_v, &ex.variables, &call).await;
        let new_run = run(new, new_v, &ex.variables, &call).await;
        let similarity = strsim::normalized_levenshtein(&old_run.text, &new_run.text);
        rows.push(Row {
            example: ex.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
            old: old_run,
            new: new_run,
            similarity,
        });
    }
    let n = rows.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let mean_similarity = if rows.is_empty() {
        1.0
    } else {
        mean(&|r| r.similarity)
    };
    let old_latency = mean(&|r| r.old.latency_ms);
    let latency_ratio = if old_latency > 0.0 {
        mean(&|r| r.new.latency_ms) / old_latency
    } else {
        1.0
    };
    let error_rate = rows.iter().filter(|r| r.new.failed()).count() as f64 / n;
    let mut failures = Vec::new();
    if rows.is_empty() {
        failures.push("the prompt has no examples (modelgate.examples) to compare on".into());
    }
    if let Some(min) = thresholds.min_similarity {
        if mean_similarity < min {
            failures.push(format!(
                "mean similarity {mean_similarity:.3} is below {min}"
            ));
        }
    }
    if let Some(max) = thresholds.max_latency_ratio {
        if latency_ratio > max {
            failures.push(format!("latency ratio {latency_ratio:.2} is above {max}"));
        }
    }
    if error_rate > thresholds.max_error_rate {
        failures.push(format!(
            "error rate {error_rate:.2} is above {}",
            thresholds.max_error_rate
        ));
    }
    if thresholds.require_schema_valid && rows.iter().any(|r| r.new.schema_valid == Some(false)) {
        failures.push("an answer does not match the response schema".into());
    }
    Report {
        old_version: old_v,
        new_version: new_v,
        passed: failures.is_empty(),
        rows,
        mean_similarity,
        latency_ratio,
        error_rate,
        thresholds,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{Message, Role, StopReason, Usage};
    use serde_json::json;

    fn prompt(text: &str, thresholds: Value) -> PromptDef {
        serde_json::from_value(json!({
            "name": "p", "variants": [{"name": "v", "templateType": "TEXT", "modelId": "m",
              "templateConfiguration": {"text": {"text": text, "inputVariables": [{"name": "q"}]}}}],
            "modelgate": {"examples": [{"name": "a", "variables": {"q": "one"}}, {"variables": {"q": "two"}}],
                          "thresholds": thresholds}
        }))
        .unwrap()
    }

    async fn echo(_version: i64, r: ChatRequest) -> Result<ChatResponse, Error> {
        let text = r.messages[0].joined_text();
        if text.contains("two") && text.starts_with("Broken") {
            return Err(Error::validation("boom"));
        }
        Ok(ChatResponse {
            model: r.model,
            message: Message::text(Role::Assistant, text),
            stop_reason: StopReason::EndTurn,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 2,
                ..Usage::default()
            },
            latency_ms: 1,
            logprobs: None,
        })
    }

    #[tokio::test]
    async fn similar_versions_pass_and_broken_ones_fail() {
        let old = prompt("Answer {{q}}", json!({"min_similarity": 0.5}));
        let new = prompt("Answer: {{q}}", json!({"min_similarity": 0.5}));
        let r = compare(&old, 1, &new, 2, echo).await;
        assert_eq!(r.rows.len(), 2);
        assert!(r.passed, "{:?}", r.failures);
        assert!(r.mean_similarity > 0.8);
        let broken = prompt("Broken {{q}}", json!({"min_similarity": 0.95}));
        let r = compare(&old, 1, &broken, 3, echo).await;
        assert!(!r.passed);
        assert!(
            r.failures.iter().any(|f| f.contains("error rate")),
            "{:?}",
            r.failures
        );
        assert!(
            r.failures.iter().any(|f| f.contains("similarity")),
            "{:?}",
            r.failures
        );
    }
}
