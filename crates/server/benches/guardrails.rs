//! What guardrails cost (one core, p50 / p90 / p99):
//!
//! - **deterministic detection on 4 KB**: all 31 PII types, three custom regexes, 100 custom
//!   words and the profanity list, one assessment of a 4 KB prompt (with a few values in it);
//! - **denied topic per request**: one topic checked with the embedded MiniLM on a short
//!   prompt (skipped when the model files are not installed);
//! - **synchronous stream guarding**: how many characters the guard holds before the first
//!   release (the added time to first token is that many characters of generation plus one
//!   assessment), and the guard's CPU per streamed kilobyte.
//!
//! `cargo bench -p modelgate-server --bench guardrails`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::report;
use modelgate_core::guardrails::def::PII_TYPES;
use modelgate_core::guardrails::layer::{StreamFilter, StreamGuard};
use modelgate_core::guardrails::semantic::{ProviderEmbed, Semantic, Thresholds};
use modelgate_core::guardrails::{
    Applied, Compiled, GuardText, GuardrailDef, Scope, Source, StreamMode, TraceMode,
};
use modelgate_core::models::{self, LOCAL_EMBED_MODEL};
use modelgate_providers::{LocalEmbedder, LocalEmbedderConfig, Provider};
use modelgate_types::{ContentBlockDelta, Role, StopReason, StreamEvent, Usage};

fn def(extra: serde_json::Value) -> GuardrailDef {
    let mut v = serde_json::json!({"name": "bench", "blockedInputMessaging": "no", "blockedOutputsMessaging": "no"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let d: GuardrailDef = serde_json::from_value(v).unwrap();
    d.validate().unwrap();
    d
}

fn deterministic() -> GuardrailDef {
    let pii: Vec<_> = PII_TYPES
        .iter()
        .map(|t| serde_json::json!({"type": t, "action": "ANONYMIZE"}))
        .collect();
    let words: Vec<_> = (0..100)
        .map(|i| serde_json::json!({"text": format!("codename{i}")}))
        .collect();
    def(serde_json::json!({
        "sensitiveInformationPolicyConfig": {"piiEntitiesConfig": pii, "regexesConfig": [
            {"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}", "action": "ANONYMIZE"},
            {"name": "TICKET", "pattern": "(?i)ticket #[0-9]{4,8}", "action": "ANONYMIZE"},
            {"name": "PROJECT", "pattern": "PRJ-[A-Z]{3}-[0-9]{2}", "action": "BLOCK"}]},
        "wordPolicyConfig": {"wordsConfig": words, "managedWordListsConfig": [{"type": "PROFANITY"}]}
    }))
}

fn text_4k() -> String {
    let para = "Our support team reviewed the account history and the recent orders placed through the web \
                shop. The customer asked whether the delivery could be moved to next week, and whether the \
                invoice could be sent again to the finance department. ";
    let mut t = String::new();
    while t.len() < 3800 {
        t.push_str(para);
    }
    t.push_str(
        "Contact jane.roe@example.com or (206) 555-0143, card 4556 7375 8689 9855, ticket #55123.",
    );
    t
}

fn percentiles(name: &str, mut times: Vec<Duration>) {
    times.sort();
    report(name, &times);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 1. Deterministic detection on 4 KB.
        let g = Compiled::new("bench", "DRAFT", "arn".into(), deterministic(), None).unwrap();
        let text = [GuardText::plain(text_4k())];
        for _ in 0..500 {
            g.assess(&text, Source::Input, Scope::Interventions).await.unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..5_000 {
            let t = Instant::now();
            let a = g.assess(&text, Source::Input, Scope::Interventions).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(a.fired.len(), 4);
        }
        percentiles(&format!("PII (31 types) + 3 regexes + 100 words + profanity on {} bytes", text[0].text.len()), times);

        // 2. A denied topic with the embedded MiniLM.
        let data = modelgate_core::config::data_dir();
        let spec = models::spec(LOCAL_EMBED_MODEL).unwrap();
        if models::is_installed(&data, spec) {
            let provider: Arc<dyn Provider> = Arc::new(
                LocalEmbedder::load(LocalEmbedderConfig {
                    model_dir: models::model_dir(&data, spec),
                    settings: Default::default(),
                })
                .unwrap(),
            );
            let semantic = Arc::new(Semantic::new(
                Arc::new(ProviderEmbed { provider, model: LOCAL_EMBED_MODEL.into() }),
                Thresholds::default(),
            ));
            let topic = def(serde_json::json!({"topicPolicyConfig": {"topicsConfig": [{
                "name": "Investment advice", "type": "DENY",
                "definition": "Recommendations or guidance on investing money in stocks, funds, bonds or crypto.",
                "examples": ["Which stocks should I buy?"]}]}}));
            let g = Compiled::new("t", "DRAFT", "arn".into(), topic, Some(semantic)).unwrap();
            let prompt = [GuardText::plain("Can you help me plan a three-day trip to Lisbon with my family in May?")];
            for _ in 0..20 {
                g.assess(&prompt, Source::Input, Scope::Interventions).await.unwrap();
            }
            let mut times = Vec::new();
            for _ in 0..300 {
                let t = Instant::now();
                g.assess(&prompt, Source::Input, Scope::Interventions).await.unwrap();
                times.push(t.elapsed());
            }
            percentiles("denied topic (MiniLM) on a 70-character prompt", times);
        } else {
            println!("denied topic: skipped (the embedded MiniLM is not installed; `modelgate models pull`)");
        }

        // 3. Synchronous stream guarding with the default windows (48 + 64 characters).
        let pii = def(serde_json::json!({"sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [
            {"type": "US_SOCIAL_SECURITY_NUMBER", "action": "BLOCK"},
            {"type": "CREDIT_DEBIT_CARD_NUMBER", "action": "ANONYMIZE"},
            {"type": "EMAIL", "action": "ANONYMIZE"}]}}));
        let compiled = Arc::new(Compiled::new("s", "DRAFT", "arn".into(), pii, None).unwrap());
        let answer = text_4k();
        let mut first_release = Vec::new();
        let mut per_kb = Vec::new();
        for _ in 0..200 {
            let mut guard = StreamGuard::standalone(
                vec![Applied {
                    guardrail: Arc::clone(&compiled),
                    stream_mode: StreamMode::Sync,
                    trace: TraceMode::Disabled,
                    selected: None,
                }],
                48,
                64,
            );
            let started = Instant::now();
            guard.push(StreamEvent::MessageStart { role: Role::Assistant, input_tokens: Some(3) }).await.unwrap();
            let mut fed = 0;
            let mut released_at = None;
            let chars: Vec<char> = answer.chars().collect();
            for piece in chars.chunks(4) {
                fed += piece.len();
                let out = guard
                    .push(StreamEvent::ContentBlockDelta {
                        index: 0,
                        delta: ContentBlockDelta::Text(piece.iter().collect()),
                    })
                    .await
                    .unwrap();
                if released_at.is_none() && !out.is_empty() {
                    released_at = Some(fed);
                }
            }
            guard.push(StreamEvent::ContentBlockStop { index: 0 }).await.unwrap();
            guard.push(StreamEvent::MessageStop { stop_reason: StopReason::EndTurn }).await.unwrap();
            guard.push(StreamEvent::Metadata { usage: Usage::new(3, 900), latency_ms: 1 }).await.unwrap();
            guard.finish(None).await.unwrap();
            per_kb.push(started.elapsed() * 1024 / u32::try_from(answer.len()).unwrap());
            first_release.push(released_at.unwrap());
        }
        println!(
            "sync stream guard: first release after {} characters (4-character deltas)",
            first_release[0]
        );
        percentiles("sync stream guard CPU per streamed KB", per_kb);
    });
}
