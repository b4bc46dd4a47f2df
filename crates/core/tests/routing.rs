//! Routing through the whole pipeline, against in-process scripted models whose call counts
//! say which one served: rules, weighted and sticky splits, the metric-based strategies on a
//! paused clock, cascades, and live changes (validation, atomic swap under load, rollback,
//! gradual rollout).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use modelgate_core::routing::{ChangeError, Routing, RoutingDoc, RoutingHints, RoutingSettings};
use modelgate_core::usage::{Price, PriceCatalog};
use modelgate_core::{
    CallContext, Dialect, Gateway, ModelInfo, ModelPolicy, Outcome, OutcomeSink, Principal,
    ServedModel,
};
use modelgate_providers::Provider;
use modelgate_testkit::scripted::{ScriptedProvider, Step};
use modelgate_types::{ChatRequest, ContentBlock, Message, Role, StopReason, StreamEvent};

#[derive(Default)]
struct Outcomes(Mutex<Vec<Outcome>>);

impl OutcomeSink for Outcomes {
    fn record(&self, o: &Outcome) {
        self.0.lock().unwrap().push(o.clone());
    }
}

impl Outcomes {
    fn last(&self) -> Outcome {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

struct Fixture {
    gateway: Arc<Gateway>,
    routing: Arc<Routing>,
    models: BTreeMap<&'static str, Arc<ScriptedProvider>>,
    outcomes: Arc<Outcomes>,
}

const MODELS: [&str; 5] = ["small", "medium", "large", "candidate", "judge"];

fn once() -> ModelPolicy {
    ModelPolicy {
        retry: modelgate_core::resilience::RetryConfig {
            max_attempts: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn fixture(settings: RoutingSettings, prices: BTreeMap<String, Price>) -> Fixture {
    let routing = Arc::new(Routing::new(
        settings,
        None,
        BTreeSet::new(),
        PriceCatalog::new(prices),
    ));
    let outcomes = Arc::new(Outcomes::default());
    let gateway = Arc::new(
        Gateway::builder()
            .cache(None)
            .routing(Arc::clone(&routing))
            .sink(outcomes.clone())
            .build(),
    );
    let mut models = BTreeMap::new();
    let mut served = Vec::new();
    for id in MODELS {
        let p = ScriptedProvider::new(&format!("answer from {id}"));
        served.push(ServedModel::new(
            ModelInfo {
                id: id.into(),
                owned_by: "test".into(),
                kind: "chat",
                aliases: vec![],
                format: None,
            },
            "p",
            Arc::clone(&p) as Arc<dyn Provider>,
            once(),
        ));
        models.insert(id, p);
    }
    gateway.install(served);
    Fixture {
        gateway,
        routing,
        models,
        outcomes,
    }
}

fn price(input: f64, output: f64) -> Price {
    Price {
        input,
        output,
        cache_read: None,
        cache_write: None,
    }
}

fn doc(toml_text: &str) -> RoutingDoc {
    toml::from_str(toml_text).unwrap()
}

fn req(model: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::text(Role::User, text)],
        ..Default::default()
    }
}

fn ctx(hints: RoutingHints) -> CallContext {
    CallContext::builder(Dialect::OpenAi)
        .route("POST", "/v1/chat/completions")
        .routing(hints)
        .build()
}

impl Fixture {
    async fn apply(&self, text: &str) {
        self.routing
            .change(doc(text), "test", "", None)
            .await
            .unwrap();
    }

    fn calls(&self) -> BTreeMap<&'static str, usize> {
        self.models.iter().map(|(k, p)| (*k, p.calls())).collect()
    }

    /// Which model answered (from the answer's text, which each scripted model signs).
    async fn ask(&self, ctx: &CallContext, model: &str, text: &str) -> String {
        let served = self.gateway.converse(ctx, req(model, text)).await.unwrap();
        let answer = served.value.message.joined_text();
        answer.trim_start_matches("answer from ").to_string()
    }
}

fn hints() -> RoutingHints {
    RoutingHints::default()
}

#[tokio::test]
async fn rules_route_by_header_metadata_caller_route_size_content_and_language() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    f.apply(
        r#"
[[routers]]
name = "support-bot"
targets = [{ model = "small" }]

[[routers.rules]]
name = "wants-quality"
header = { "x-model-preference" = "quality" }
model = "large"

[[routers.rules]]
name = "complex"
metadata = { complexity = "high" }
model = "large"

[[routers.rules]]
name = "vip"
team = "vip"
model = "medium"

[[routers.rules]]
name = "long"
min_input_tokens = 200
model = "large"

[[routers.rules]]
name = "with-image"
has_images = true
model = "medium"

[[routers.rules]]
name = "billing"
keywords = ["refund", "invoice"]
model = "medium"

[[routers.rules]]
name = "proof"
regex = "(?i)\\bprove\\b"
model = "large"

[[routers.rules]]
name = "vietnamese"
language = ["vi"]
model = "candidate"

[[routers.rules]]
name = "query"
query = { tier = "large" }
model = "large"

[[routers.rules]]
name = "messages-door"
route = "/v1/messages"
model = "candidate"
"#,
    )
    .await;
    let plain = ctx(hints());
    assert_eq!(f.ask(&plain, "support-bot", "hello there").await, "small");
    let d = f.outcomes.last().routing.unwrap();
    assert_eq!((d.strategy, d.rule.as_deref()), ("first", None));
    assert_eq!(d.model, "small");

    let header = ctx(RoutingHints {
        headers: vec![("x-model-preference".into(), "Quality".into())],
        ..hints()
    });
    assert_eq!(f.ask(&header, "support-bot", "hello").await, "large");
    let d = f.outcomes.last().routing.unwrap();
    assert_eq!(
        (d.strategy, d.rule.as_deref()),
        ("rule", Some("wants-quality"))
    );

    let meta = ctx(RoutingHints {
        metadata: [("complexity".to_string(), "high".to_string())].into(),
        ..hints()
    });
    assert_eq!(f.ask(&meta, "support-bot", "hello").await, "large");

    let vip = ctx(hints());
    vip.set_principal(Principal {
        team: Some("vip".into()),
        ..Principal::unrestricted("key-1", false)
    });
    assert_eq!(f.ask(&vip, "support-bot", "hello").await, "medium");

    let long = "word ".repeat(400);
    assert_eq!(f.ask(&plain, "support-bot", &long).await, "large");
    assert_eq!(
        f.ask(&plain, "support-bot", "I need a REFUND for my order")
            .await,
        "medium"
    );
    assert_eq!(
        f.ask(&plain, "support-bot", "refunding is not a keyword")
            .await,
        "small",
        "keywords match whole words"
    );
    assert_eq!(
        f.ask(&plain, "support-bot", "Please prove that the sum is even")
            .await,
        "large"
    );
    assert_eq!(
        f.ask(
            &plain,
            "support-bot",
            "Xin chào, tôi muốn hỏi về đơn hàng của tôi đã được giao chưa vậy?"
        )
        .await,
        "candidate"
    );
    let q = ctx(RoutingHints {
        query: Some("a=1&tier=large".into()),
        ..hints()
    });
    assert_eq!(f.ask(&q, "support-bot", "hi").await, "large");
    let anthropic_door = CallContext::builder(Dialect::Anthropic)
        .route("POST", "/v1/messages")
        .build();
    assert_eq!(
        f.ask(&anthropic_door, "support-bot", "hi").await,
        "candidate"
    );

    let mut with_image = req("support-bot", "what is this?");
    with_image.messages[0]
        .content
        .push(ContentBlock::Image(modelgate_types::ImageBlock {
            format: "png".into(),
            source: modelgate_types::BinarySource::Bytes("AQID".into()),
        }));
    let served = f.gateway.converse(&plain, with_image).await.unwrap();
    assert_eq!(served.served_by, "medium");

    // Real model names pass through untouched.
    assert_eq!(f.ask(&plain, "medium", "hello").await, "medium");
    assert!(f.outcomes.last().routing.is_none());
    // The virtual model is listed and resolvable.
    assert!(f.gateway.list().iter().any(|m| m.id == "support-bot"));
    assert_eq!(f.gateway.resolve("support-bot").unwrap().id, "support-bot");
}

#[tokio::test]
async fn a_ten_percent_canary_lands_in_the_binomial_interval_and_sticky_users_stay_put() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    f.apply(
        r#"
[[routers]]
name = "bot"
strategy = "weighted"
sticky = "user"
targets = [{ model = "small", weight = 90, arm = "control" }, { model = "candidate", weight = 10, arm = "canary" }]
"#,
    )
    .await;
    // 2,000 users, one request each: the canary's share is binomial(2000, 0.1); its 99%
    // interval is 200 ± 2.576·√(2000·0.1·0.9) = [166, 234].
    let mut arms: BTreeMap<String, String> = BTreeMap::new();
    for u in 0..2000 {
        let c = ctx(RoutingHints {
            user: Some(format!("user-{u}")),
            ..hints()
        });
        let model = f.ask(&c, "bot", "hi").await;
        let d = f.outcomes.last().routing.unwrap();
        assert_eq!(
            d.arm.as_deref(),
            Some(if model == "candidate" {
                "canary"
            } else {
                "control"
            })
        );
        arms.insert(format!("user-{u}"), model);
    }
    let canary = f.calls()["candidate"];
    assert!((166..=234).contains(&canary), "canary got {canary} of 2000");
    // The same users again: each lands on the arm it had.
    for u in (0..2000).step_by(7) {
        let c = ctx(RoutingHints {
            user: Some(format!("user-{u}")),
            ..hints()
        });
        assert_eq!(f.ask(&c, "bot", "again").await, arms[&format!("user-{u}")]);
    }
    // Without stickiness every request is drawn afresh; the split still holds (checked at
    // 99.99%, so this random case does not flake: 200 ± 3.89·13.4).
    f.apply(
        r#"
[[routers]]
name = "bot"
strategy = "weighted"
targets = [{ model = "small", weight = 9 }, { model = "candidate", weight = 1 }]
"#,
    )
    .await;
    let before = f.calls()["candidate"];
    let one_user = ctx(RoutingHints {
        user: Some("same".into()),
        ..hints()
    });
    for _ in 0..2000 {
        f.ask(&one_user, "bot", "hi").await;
    }
    let canary = f.calls()["candidate"] - before;
    assert!((148..=252).contains(&canary), "canary got {canary} of 2000");
}

#[tokio::test(start_paused = true)]
async fn least_latency_leaves_a_slow_model_and_comes_back_when_it_recovers() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    f.apply(
        r#"
[[routers]]
name = "lb"
strategy = "least_latency"
targets = [{ model = "small" }, { model = "medium" }]
"#,
    )
    .await;
    let fast = |id: &str| {
        Step::Slow(
            Duration::from_millis(20),
            Box::new(Step::Answer(format!("answer from {id}"))),
        )
    };
    let slow = |id: &str| {
        Step::Slow(
            Duration::from_millis(800),
            Box::new(Step::Answer(format!("answer from {id}"))),
        )
    };
    f.models["small"].set_default(fast("small"));
    f.models["medium"].set_default(fast("medium"));
    let c = ctx(hints());
    for _ in 0..40 {
        f.ask(&c, "lb", "hi").await;
    }
    let both = f.calls();
    assert!(both["small"] >= 10 && both["medium"] >= 10, "{both:?}");
    // medium turns slow: within a bounded number of requests it gets (almost) none.
    f.models["medium"].set_default(slow("medium"));
    let mut first_slow = 0;
    for i in 0..100 {
        if f.ask(&c, "lb", "hi").await == "medium" && first_slow == 0 {
            first_slow = i + 1;
        }
    }
    let during = f.calls();
    let slow_share = during["medium"] - both["medium"];
    assert!(
        slow_share <= 3,
        "the slow model still got {slow_share} of 100"
    );
    // It recovers; once its estimate has decayed it is tried again and keeps its share.
    f.models["medium"].set_default(fast("medium"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    for _ in 0..100 {
        f.ask(&c, "lb", "hi").await;
    }
    let after = f.calls();
    let back = after["medium"] - during["medium"];
    assert!(back >= 20, "the recovered model got {back} of 100");
    let stats = f.routing.model_stats();
    assert!(stats["medium"].calls > 0 && stats["small"].p95_ms.is_some());
}

#[tokio::test(start_paused = true)]
async fn least_busy_prefers_the_idle_model_and_cheapest_keeps_the_objective() {
    let mut prices = BTreeMap::new();
    prices.insert("small".to_string(), price(0.1, 0.4));
    prices.insert("large".to_string(), price(3.0, 15.0));
    let f = fixture(RoutingSettings::default(), prices);
    f.apply(
        r#"
[[routers]]
name = "busy"
strategy = "least_busy"
targets = [{ model = "small" }, { model = "large" }]

[[routers]]
name = "thrifty"
strategy = "cheapest"
latency_objective = "500ms"
targets = [{ model = "large" }, { model = "small" }]
"#,
    )
    .await;
    // One long call holds `small`; the next calls all go to `large`.
    f.models["small"].push([Step::Slow(
        Duration::from_secs(30),
        Box::new(Step::Answer("answer from small".into())),
    )]);
    let g = Arc::clone(&f.gateway);
    let held = tokio::spawn(async move {
        let c = ctx(RoutingHints::default());
        g.converse(&c, req("small", "long"))
            .await
            .unwrap()
            .served_by
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let c = ctx(hints());
    for _ in 0..5 {
        assert_eq!(f.ask(&c, "busy", "quick").await, "large");
    }
    assert_eq!(held.await.unwrap(), "small");
    // Both idle again: both get traffic.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(f.ask(&c, "busy", "quick").await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Cheapest: small is cheaper and fast, so it serves (once the held call's 30 s has left
    // the p95 window).
    tokio::time::sleep(Duration::from_secs(61)).await;
    let before = f.calls();
    for _ in 0..10 {
        assert_eq!(f.ask(&c, "thrifty", "hi").await, "small");
    }
    // small turns slow (p95 over the objective): large serves, though dearer.
    f.models["small"].push((0..3).map(|_| {
        Step::Slow(
            Duration::from_secs(2),
            Box::new(Step::Answer("answer from small".into())),
        )
    }));
    for _ in 0..3 {
        f.ask(&c, "thrifty", "hi").await;
    }
    for _ in 0..10 {
        assert_eq!(f.ask(&c, "thrifty", "hi").await, "large");
    }
    assert!(f.calls()["large"] >= before["large"] + 10);
}

#[tokio::test]
async fn a_cascade_escalates_on_low_confidence_and_records_both_calls() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    f.apply(
        r#"
[[routers]]
name = "json-cascade"
strategy = "cascade"
[routers.cascade]
models = ["small", "large"]
threshold = 0.8
validator = { kind = "json", required = ["answer"] }

[[routers]]
name = "judged"
strategy = "cascade"
[routers.cascade]
models = ["small", "large"]
validator = { kind = "judge", model = "judge" }
"#,
    )
    .await;
    let c = ctx(hints());
    // small answers prose: not JSON, so large is asked.
    assert_eq!(f.ask(&c, "json-cascade", "give json").await, "large");
    let o = f.outcomes.last();
    let d = o.routing.clone().unwrap();
    assert_eq!(d.cascade.len(), 2);
    assert_eq!(
        (d.cascade[0].accepted, d.cascade[0].confidence),
        (false, Some(0.0))
    );
    assert!(d.cascade[1].accepted);
    assert_eq!(d.side_calls.len(), 1);
    assert_eq!(
        (d.side_calls[0].purpose, d.side_calls[0].model.as_str()),
        ("cascade", "small")
    );
    assert_eq!(d.side_calls[0].usage.output_tokens, 5);
    assert_eq!(o.model_served.as_deref(), Some("large"));
    // small answers valid JSON: it is accepted, large is not called.
    f.models["small"].push([Step::Answer(r#"{"answer": 42}"#.into())]);
    let before = f.calls()["large"];
    let served = f
        .gateway
        .converse(&c, req("json-cascade", "give json"))
        .await
        .unwrap();
    assert_eq!(served.served_by, "small");
    assert_eq!(f.calls()["large"], before);
    let d = f.outcomes.last().routing.unwrap();
    assert_eq!(d.cascade.len(), 1);
    assert!(d.side_calls.is_empty());
    // An answer cut by max_tokens is never accepted.
    f.models["small"].push([Step::AnswerWith(
        r#"{"answer": 4"#.into(),
        StopReason::MaxTokens,
    )]);
    assert_eq!(f.ask(&c, "json-cascade", "give json").await, "large");

    // Streamed: an accepted small answer is replayed as a stream; otherwise large streams.
    f.models["small"].push([Step::Answer(r#"{"answer": 1}"#.into())]);
    let s = f
        .gateway
        .converse_stream(&c, req("json-cascade", "json please"))
        .await
        .unwrap();
    assert_eq!(s.served_by, "small");
    let text = collect(s.value).await;
    assert_eq!(text, r#"{"answer": 1}"#);
    let s = f
        .gateway
        .converse_stream(&c, req("json-cascade", "json please"))
        .await
        .unwrap();
    assert_eq!(s.served_by, "large");
    assert_eq!(collect(s.value).await, "answer from large");
    let o = f.outcomes.last();
    assert!(o.streamed);
    assert_eq!(o.routing.unwrap().cascade.len(), 2);

    // A judge's rating decides, and the judge's call is charged too.
    f.models["judge"].push([Step::Answer("9".into())]);
    assert_eq!(f.ask(&c, "judged", "what is 2+2?").await, "small");
    let d = f.outcomes.last().routing.unwrap();
    assert_eq!(d.score, Some(0.9));
    assert_eq!(d.side_calls.len(), 1);
    assert_eq!(d.side_calls[0].purpose, "judge");
    f.models["judge"].push([Step::Answer("3".into())]);
    assert_eq!(f.ask(&c, "judged", "what is 2+2?").await, "large");
    let d = f.outcomes.last().routing.unwrap();
    assert_eq!(d.side_calls.len(), 2, "{:?}", d.side_calls);
}

async fn collect(mut s: modelgate_providers::ChatStream) -> String {
    let mut text = String::new();
    while let Some(e) = s.next().await {
        if let StreamEvent::ContentBlockDelta {
            delta: modelgate_types::ContentBlockDelta::Text(t),
            ..
        } = e.unwrap()
        {
            text.push_str(&t);
        }
    }
    text
}

#[tokio::test]
async fn invalid_changes_are_refused_naming_the_problem_and_versions_roll_back() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    f.apply(
        r#"
[[routers]]
name = "bot"
targets = [{ model = "small" }]
"#,
    )
    .await;
    let bad = [
        (
            r#"[[routers]]
name = "bot"
targets = [{ model = "no-such-model" }]"#,
            "routers[0].targets[0].model",
        ),
        (
            r#"[[routers]]
name = "bot"
strategy = "cheapest"
targets = [{ model = "small" }]"#,
            "latency_objective",
        ),
        (
            r#"[[routers]]
name = "bot"
targets = [{ model = "small" }]
[[routers.rules]]
model = "large"
regex = "(unclosed"
"#,
            "routers[0].rules[0].regex",
        ),
        (
            r#"[[routers]]
name = "small"
targets = [{ model = "large" }]"#,
            "already a served model",
        ),
        (
            r#"[[routers]]
name = "bot"
targets = [{ model = "small" }]
[[routers.rules]]
model = "large"
language = ["klingon"]
"#,
            "language",
        ),
        (
            r#"[[routers]]
name = "bot"
strategy = "classifier"
targets = [{ model = "small" }]"#,
            "classifier",
        ),
    ];
    for (text, needle) in bad {
        let e = f
            .routing
            .change(doc(text), "test", "", None)
            .await
            .unwrap_err();
        let ChangeError::Invalid(message) = e else {
            panic!("{e:?}")
        };
        assert!(message.contains(needle), "{message} does not name {needle}");
        assert_eq!(f.routing.status().version, 1);
    }
    let c = ctx(hints());
    assert_eq!(f.ask(&c, "bot", "hi").await, "small");
    f.apply(
        r#"
[[routers]]
name = "bot"
targets = [{ model = "large" }]
"#,
    )
    .await;
    assert_eq!(f.ask(&c, "bot", "hi").await, "large");
    assert_eq!(f.outcomes.last().routing.unwrap().version, 2);
    let v = f.routing.rollback(1, "alice").await.unwrap();
    assert_eq!((v.version, v.author.as_str()), (3, "alice"));
    assert_eq!(v.note, "rollback to version 1");
    assert_eq!(f.ask(&c, "bot", "hi").await, "small");
    assert!(matches!(
        f.routing.rollback(42, "alice").await,
        Err(ChangeError::NotFound(42))
    ));
    // Optimistic concurrency: a change made on top of an old version is refused.
    let stale = f
        .routing
        .change(doc("routers = []"), "bob", "", Some(1))
        .await;
    assert!(matches!(stale, Err(ChangeError::Conflict(_))), "{stale:?}");
    let versions = f.routing.versions(10).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
}

#[tokio::test]
async fn a_new_version_can_take_a_growing_share_of_traffic() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    f.apply(
        r#"
[[routers]]
name = "bot"
targets = [{ model = "small" }]
"#,
    )
    .await;
    f.apply(
        r#"
rollout_percent = 20.0
[[routers]]
name = "bot"
targets = [{ model = "large" }]
"#,
    )
    .await;
    let status = f.routing.status();
    assert_eq!(
        (status.version, status.base_version, status.rollout_percent),
        (2, Some(1), 20.0)
    );
    let (at20, seen20) = share(&f).await;
    assert!((70..=130).contains(&at20), "{at20} of 500 at 20%");
    f.routing.rollout(60.0, "test").await.unwrap();
    let (at60, seen60) = share(&f).await;
    assert!((260..=340).contains(&at60), "{at60} of 500 at 60%");
    // Users already on the new version stay on it as the share grows.
    let moved_back = seen20
        .iter()
        .filter(|(u, m)| *m == "large" && seen60[*u] != "large")
        .count();
    assert_eq!(moved_back, 0);
    for bad in [0.0, -5.0, 150.0] {
        assert!(matches!(
            f.routing.rollout(bad, "test").await,
            Err(ChangeError::Invalid(m)) if m.contains("rollout_percent")
        ));
    }
    f.routing.rollout(100.0, "test").await.unwrap();
    let (all, _) = share(&f).await;
    assert_eq!(all, 500);
    assert_eq!(f.routing.status().base_version, None);
}

/// The routed share of 500 sticky users, and where each went; every call is decided by one
/// version.
async fn share(f: &Fixture) -> (usize, BTreeMap<u32, String>) {
    let candidate = f.routing.status().version;
    let mut large = 0;
    let mut seen = BTreeMap::new();
    for u in 0..500 {
        let c = ctx(RoutingHints {
            user: Some(format!("u{u}")),
            ..hints()
        });
        let m = f.ask(&c, "bot", "hi").await;
        let v = f.outcomes.last().routing.unwrap().version;
        assert_eq!(
            v,
            if m == "large" { candidate } else { 1 },
            "one version decides a call"
        );
        large += usize::from(m == "large");
        seen.insert(u, m);
    }
    (large, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_under_load_fail_no_call_and_each_call_sees_one_version() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    let a = r#"
[[routers]]
name = "bot"
targets = [{ model = "small" }]
[[routers.rules]]
keywords = ["urgent"]
model = "medium"
"#;
    let b = r#"
[[routers]]
name = "bot"
targets = [{ model = "large" }]
[[routers.rules]]
keywords = ["urgent"]
model = "candidate"
"#;
    f.apply(a).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (g, stop) = (Arc::clone(&f.gateway), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = if n.is_multiple_of(2) {
                    "urgent help"
                } else {
                    "hello"
                };
                let c = ctx(RoutingHints::default());
                let served = g
                    .converse(&c, req("bot", text))
                    .await
                    .unwrap_or_else(|e| panic!("worker {w}: {e}"));
                let d = c.served().unwrap().routing.unwrap();
                // Version parity says which document decided: odd = a, even = b.
                let expect = match (d.version % 2 == 1, n.is_multiple_of(2)) {
                    (true, true) => "medium",
                    (true, false) => "small",
                    (false, true) => "candidate",
                    (false, false) => "large",
                };
                assert_eq!(served.served_by, expect, "version {} mixed", d.version);
                n += 1;
                // The scripted model answers without ever waiting: let the timer run.
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    for i in 0..60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        f.apply(if i % 2 == 0 { b } else { a }).await;
        // An invalid change in between changes nothing.
        assert!(f
            .routing
            .change(doc("[[routers]]\nname = \"bot\""), "t", "", None)
            .await
            .is_err());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 100, "only {total} calls ran");
    assert_eq!(f.routing.status().version, 61);
}

#[tokio::test]
async fn the_config_file_wins_only_when_it_changed() {
    let f = fixture(RoutingSettings::default(), BTreeMap::new());
    let file = doc(r#"
[[routers]]
name = "bot"
targets = [{ model = "small" }]
"#);
    let v = f.routing.load_file(file.clone(), "a.toml").await.unwrap();
    assert_eq!(
        v.map(|v| (v.version, v.author)),
        Some((1, "file:a.toml".into()))
    );
    // The same file again (a restart, a touch): nothing new.
    assert!(f
        .routing
        .load_file(file.clone(), "a.toml")
        .await
        .unwrap()
        .is_none());
    // An admin change, then the unchanged file is read again: the admin change stays.
    f.apply(
        r#"
[[routers]]
name = "bot"
targets = [{ model = "large" }]
"#,
    )
    .await;
    assert!(f
        .routing
        .load_file(file.clone(), "a.toml")
        .await
        .unwrap()
        .is_none());
    assert_eq!(f.routing.status().version, 2);
    let c = ctx(hints());
    assert_eq!(f.ask(&c, "bot", "hi").await, "large");
    // An edited file wins.
    let edited = doc(r#"
[[routers]]
name = "bot"
targets = [{ model = "medium" }]
"#);
    let v = f
        .routing
        .load_file(edited, "a.toml")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.version, 3);
    assert_eq!(f.ask(&c, "bot", "hi").await, "medium");
    // A file that never had routers leaves the admin API's routing alone.
    let g = fixture(RoutingSettings::default(), BTreeMap::new());
    g.apply(
        r#"
[[routers]]
name = "bot"
targets = [{ model = "large" }]
"#,
    )
    .await;
    assert!(g
        .routing
        .load_file(RoutingDoc::default(), "b.toml")
        .await
        .unwrap()
        .is_none());
    assert_eq!(g.ask(&c, "bot", "hi").await, "large");
}

#[tokio::test(start_paused = true)]
async fn least_latency_balance_moves_traffic_between_one_models_endpoints() {
    let a = ScriptedProvider::new("east");
    let b = ScriptedProvider::new("west");
    let g = Gateway::builder().cache(None).build();
    let policy = ModelPolicy {
        balance: modelgate_core::registry::Balance::LeastLatency,
        ..once()
    };
    g.install(vec![ServedModel {
        info: ModelInfo {
            id: "multi".into(),
            owned_by: "test".into(),
            kind: "chat",
            aliases: vec![],
            format: None,
        },
        endpoints: vec![
            ("east".into(), Arc::clone(&a) as Arc<dyn Provider>),
            ("west".into(), Arc::clone(&b) as Arc<dyn Provider>),
        ],
        policy,
    }]);
    let step = |ms: u64, text: &str| {
        Step::Slow(
            Duration::from_millis(ms),
            Box::new(Step::Answer(text.into())),
        )
    };
    a.set_default(step(20, "east"));
    b.set_default(step(20, "west"));
    let c = ctx(hints());
    for _ in 0..40 {
        g.converse(&c, req("multi", "hi")).await.unwrap();
    }
    assert!(
        a.calls() >= 5 && b.calls() >= 5,
        "{} / {}",
        a.calls(),
        b.calls()
    );
    b.set_default(step(900, "west"));
    let before = b.calls();
    for _ in 0..100 {
        g.converse(&c, req("multi", "hi")).await.unwrap();
    }
    assert!(
        b.calls() - before <= 3,
        "the slow endpoint got {}",
        b.calls() - before
    );
    b.set_default(step(20, "west"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = b.calls();
    for _ in 0..100 {
        g.converse(&c, req("multi", "hi")).await.unwrap();
    }
    assert!(
        b.calls() - before >= 20,
        "the recovered endpoint got {}",
        b.calls() - before
    );
    let status = g.endpoint_status();
    assert!(status.iter().all(|s| s.latency.calls > 0));
}
