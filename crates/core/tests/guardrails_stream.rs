//! The stream guard under random chunking: an answer that holds an SSN, a card number and an
//! email, cut into random pieces (1–15 characters) and guarded with random window sizes.
//! Masking must deliver exactly the masked answer; blocking must never deliver a piece of
//! either value and must end with `guardrail_intervened`. Seeds are fixed, so a failure
//! replays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use modelgate_core::guardrails::layer::{StreamFilter, StreamGuard};
use modelgate_core::guardrails::{Applied, Compiled, GuardrailDef, StreamMode, TraceMode};
use modelgate_types::{ContentBlockDelta, Role, StopReason, StreamEvent, Usage};

const SSN: &str = "517-42-8093";
const CARD: &str = "4556 7375 8689 9855";
const EMAIL: &str = "jane.roe@example.com";

fn answer() -> String {
    format!(
        "Thanks for waiting. I looked this up in our records. The customer's social security number is {SSN} \
         and the card on file is {CARD}; write to {EMAIL} for changes. Anything else I can help with today?"
    )
}

fn guardrail(action: &str) -> Applied {
    let def: GuardrailDef = serde_json::from_value(serde_json::json!({
        "name": "g", "blockedInputMessaging": "in", "blockedOutputsMessaging": "BLOCKED-OUT",
        "sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [
            {"type": "US_SOCIAL_SECURITY_NUMBER", "action": action},
            {"type": "CREDIT_DEBIT_CARD_NUMBER", "action": action},
            {"type": "EMAIL", "action": action}]}
    }))
    .unwrap();
    def.validate().unwrap();
    Applied {
        guardrail: Arc::new(Compiled::new("g", "DRAFT", "arn".into(), def, None).unwrap()),
        stream_mode: StreamMode::Sync,
        trace: TraceMode::Disabled,
        selected: None,
    }
}

fn events(text: &str, rng: &mut fastrand::Rng) -> Vec<StreamEvent> {
    let mut out = vec![StreamEvent::MessageStart {
        role: Role::Assistant,
        input_tokens: Some(5),
    }];
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let n = rng.usize(1..=15).min(chars.len() - i);
        out.push(StreamEvent::ContentBlockDelta {
            index: 0,
            delta: ContentBlockDelta::Text(chars[i..i + n].iter().collect()),
        });
        i += n;
    }
    out.push(StreamEvent::ContentBlockStop { index: 0 });
    out.push(StreamEvent::MessageStop {
        stop_reason: StopReason::EndTurn,
    });
    out.push(StreamEvent::Metadata {
        usage: Usage::new(5, 40),
        latency_ms: 1,
    });
    out
}

async fn run(guard: &mut StreamGuard, input: Vec<StreamEvent>) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for e in input {
        out.extend(guard.push(e).await.unwrap());
        if guard.stopped() {
            break;
        }
    }
    out.extend(guard.finish(None).await.unwrap());
    out
}

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ContentBlockDelta {
                delta: ContentBlockDelta::Text(t),
                ..
            } => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn stop_of(events: &[StreamEvent]) -> Vec<StopReason> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::MessageStop { stop_reason } => Some(*stop_reason),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn masking_delivers_exactly_the_masked_answer_whatever_the_chunking() {
    let expected = answer()
        .replace(SSN, "{US_SOCIAL_SECURITY_NUMBER}")
        .replace(CARD, "{CREDIT_DEBIT_CARD_NUMBER}")
        .replace(EMAIL, "{EMAIL}");
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let window = rng.usize(8..=80);
        let overlap = rng.usize(32..=96);
        let mut guard = StreamGuard::standalone(vec![guardrail("ANONYMIZE")], window, overlap);
        let out = run(&mut guard, events(&answer(), &mut rng)).await;
        assert_eq!(
            text_of(&out),
            expected,
            "seed {seed}, window {window}, overlap {overlap}"
        );
        assert_eq!(stop_of(&out), vec![StopReason::GuardrailIntervened]);
    }
}

#[tokio::test]
async fn blocking_never_delivers_a_piece_of_a_value() {
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let window = rng.usize(8..=80);
        let overlap = rng.usize(32..=96);
        let mut guard = StreamGuard::standalone(vec![guardrail("BLOCK")], window, overlap);
        let out = run(&mut guard, events(&answer(), &mut rng)).await;
        let text = text_of(&out).replace(['-', ' '], "");
        for value in [SSN, CARD] {
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            for i in 0..digits.len() - 3 {
                assert!(
                    !text.contains(&digits[i..i + 4]),
                    "seed {seed}: a piece of {value} leaked: {text}"
                );
            }
        }
        assert!(text_of(&out).ends_with("BLOCKED-OUT"), "seed {seed}");
        assert_eq!(
            stop_of(&out),
            vec![StopReason::GuardrailIntervened],
            "seed {seed}"
        );
        assert!(
            matches!(out.last(), Some(StreamEvent::Metadata { .. })),
            "seed {seed}"
        );
    }
}

#[tokio::test]
async fn clean_answers_pass_unchanged() {
    let clean = "The capital of France is Paris. It has been the capital for centuries, and it is on the Seine.";
    for seed in 0..50 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut guard = StreamGuard::standalone(vec![guardrail("BLOCK")], 16, 32);
        let out = run(&mut guard, events(clean, &mut rng)).await;
        assert_eq!(text_of(&out), clean);
        assert_eq!(stop_of(&out), vec![StopReason::EndTurn]);
    }
}

/// A guarded stream whose client goes away still records what the guardrails did, in the one
/// (cancelled) outcome of the call.
#[tokio::test(start_paused = true)]
async fn a_cancelled_guarded_stream_keeps_the_guardrail_report() {
    use futures::StreamExt;
    use modelgate_core::guardrails::{Guardrails, GuardrailsConfig};
    use modelgate_core::{
        CallContext, Gateway, ModelInfo, ModelPolicy, Outcome, OutcomeSink, ServedModel,
    };
    use modelgate_providers::Provider;
    use modelgate_testkit::scripted::{ScriptedProvider, Step};

    #[derive(Default)]
    struct Capture(std::sync::Mutex<Vec<Outcome>>);
    impl OutcomeSink for Capture {
        fn record(&self, o: &Outcome) {
            self.0.lock().unwrap().push(o.clone());
        }
    }

    let config: GuardrailsConfig = toml::from_str(
        r#"
[[define]]
id = "pii"
[define.definition]
name = "pii"
blockedInputMessaging = "no"
blockedOutputsMessaging = "no"
sensitiveInformationPolicyConfig = { piiEntitiesConfig = [{ type = "EMAIL", action = "ANONYMIZE" }] }
[[attach]]
guardrail = "pii"
models = ["m"]
"#,
    )
    .unwrap();
    let capture = Arc::new(Capture::default());
    let g = Gateway::builder()
        .sink(capture.clone())
        .guardrails(Arc::new(Guardrails::new(config, None).unwrap()))
        .build();
    let p = ScriptedProvider::new("x");
    p.set_default(Step::Stall);
    g.install(vec![ServedModel::new(
        ModelInfo {
            id: "m".into(),
            owned_by: "t".into(),
            kind: "chat",
            aliases: vec![],
            format: None,
        },
        "scripted",
        p as Arc<dyn Provider>,
        ModelPolicy::default(),
    )]);
    let request = modelgate_types::ChatRequest {
        model: "m".into(),
        messages: vec![modelgate_types::Message::text(Role::User, "hi")],
        ..Default::default()
    };
    let mut stream = g
        .converse_stream(&CallContext::internal(), request)
        .await
        .unwrap()
        .value;
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::MessageStart { .. }))
    ));
    drop(stream);
    let all = capture.0.lock().unwrap().clone();
    assert_eq!(all.len(), 1);
    assert!(all[0].cancelled);
    let report = all[0].guardrail.as_ref().expect("the guardrail report");
    assert_eq!(report.guardrails, vec!["pii:DRAFT".to_string()]);
}
