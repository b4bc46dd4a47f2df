//! The response cache through the whole pipeline, against the in-process scripted provider:
//! hits in both forms from one stored answer, tenant scopes, what is never stored, the stale
//! level, the outcome's accounting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use modelgate_core::cache::{CacheConfig, CacheStatus, ResponseCache};
use modelgate_core::context::CacheDirectives;
use modelgate_core::usage::PriceCatalog;
use modelgate_core::{
    CallContext, Dialect, Gateway, ModelInfo, ModelPolicy, Outcome, OutcomeSink, Principal,
    ServedModel,
};
use modelgate_providers::Provider;
use modelgate_store::MemoryCache;
use modelgate_testkit::scripted::{ScriptedProvider, Step};
use modelgate_types::{
    ChatRequest, ContentBlock, ErrorKind, Message, Role, StopReason, StreamEvent, Usage,
};

#[derive(Default)]
struct Outcomes(Mutex<Vec<Outcome>>);

impl OutcomeSink for Outcomes {
    fn record(&self, o: &Outcome) {
        self.0.lock().unwrap().push(o.clone());
    }
}

fn gateway(
    config: CacheConfig,
    policy: ModelPolicy,
) -> (Gateway, Arc<ScriptedProvider>, Arc<Outcomes>) {
    let store = Arc::new(MemoryCache::new(1 << 20));
    let cache = Arc::new(ResponseCache::new(
        config,
        store,
        PriceCatalog::new(Default::default()),
    ));
    let outcomes = Arc::new(Outcomes::default());
    let g = Gateway::builder()
        .cache(Some(cache))
        .sink(outcomes.clone())
        .build();
    let p = ScriptedProvider::new("the answer");
    g.install(vec![ServedModel::new(
        ModelInfo {
            id: "m".into(),
            owned_by: "test".into(),
            kind: "chat",
            aliases: vec!["alias".into()],
            format: None,
        },
        "p",
        Arc::clone(&p) as Arc<dyn Provider>,
        policy,
    )]);
    (g, p, outcomes)
}

fn once() -> ModelPolicy {
    ModelPolicy {
        retry: modelgate_core::resilience::RetryConfig {
            max_attempts: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn on() -> CacheConfig {
    CacheConfig {
        enabled: true,
        ..Default::default()
    }
}

fn req(model: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::text(Role::User, text)],
        ..Default::default()
    }
}

fn caller(id: &str, team: Option<&str>) -> CallContext {
    let ctx = CallContext::builder(Dialect::OpenAi).build();
    let mut p = Principal::unrestricted(id, false);
    p.team = team.map(Into::into);
    ctx.set_principal(p);
    ctx
}

fn status(ctx: &CallContext) -> Option<CacheStatus> {
    ctx.served().and_then(|s| s.cache).map(|c| c.status)
}

#[tokio::test]
async fn a_stored_answer_serves_whole_and_streamed_calls_and_aliases() {
    let (g, p, outcomes) = gateway(on(), ModelPolicy::default());
    let a = caller("k1", Some("t"));
    let first = g.converse(&a, req("m", "q")).await.unwrap();
    assert_eq!(status(&a), Some(CacheStatus::Miss));
    let b = caller("k2", Some("t"));
    // Through an alias, streamed: the same entry.
    let hit = g.converse_stream(&b, req("alias", "q")).await.unwrap();
    assert_eq!(hit.served_by, "cache");
    let events: Vec<StreamEvent> = hit.value.map(|e| e.unwrap()).collect().await;
    assert_eq!(status(&b), Some(CacheStatus::Hit));
    assert_eq!(p.calls(), 1);
    let folded = modelgate_providers::collect_stream(
        "alias".into(),
        Box::pin(futures::stream::iter(events.into_iter().map(Ok))),
    )
    .await
    .unwrap();
    assert_eq!(folded.message, first.value.message);
    assert_eq!(folded.usage, first.value.usage);
    assert_eq!(folded.stop_reason, StopReason::EndTurn);
    // The hit's outcome spent nothing and says what it saved.
    let outcomes = outcomes.0.lock().unwrap();
    let last = outcomes.last().unwrap();
    assert_eq!(last.usage, Some(Usage::default()));
    let report = last.cache.as_ref().unwrap();
    assert_eq!(report.status, CacheStatus::Hit);
    assert_eq!(report.saved_usage, Some(first.value.usage));
}

#[tokio::test]
async fn scopes_keep_tenants_apart() {
    let (g, p, _) = gateway(on(), ModelPolicy::default());
    g.converse(&caller("k1", Some("red")), req("m", "q"))
        .await
        .unwrap();
    let blue = caller("k2", Some("blue"));
    g.converse(&blue, req("m", "q")).await.unwrap();
    assert_eq!(status(&blue), Some(CacheStatus::Miss));
    // A key without a team has its own scope.
    let solo = caller("k3", None);
    g.converse(&solo, req("m", "q")).await.unwrap();
    assert_eq!(status(&solo), Some(CacheStatus::Miss));
    assert_eq!(p.calls(), 3);
    let (g, p, _) = gateway(
        CacheConfig {
            scope: modelgate_core::cache::CacheScope::Key,
            ..on()
        },
        ModelPolicy::default(),
    );
    g.converse(&caller("k1", Some("red")), req("m", "q"))
        .await
        .unwrap();
    let same_team = caller("k2", Some("red"));
    g.converse(&same_team, req("m", "q")).await.unwrap();
    assert_eq!(status(&same_team), Some(CacheStatus::Miss));
    assert_eq!(p.calls(), 2);
}

#[tokio::test]
async fn truncated_failed_and_cancelled_answers_are_not_stored() {
    let (g, p, _) = gateway(on(), once());
    p.push([Step::AnswerWith("cut".into(), StopReason::MaxTokens)]);
    g.converse(&caller("k", None), req("m", "a")).await.unwrap();
    let again = caller("k", None);
    g.converse(&again, req("m", "a")).await.unwrap();
    assert_eq!(status(&again), Some(CacheStatus::Miss));

    p.push([Step::error(ErrorKind::ServiceUnavailable)]);
    assert!(g.converse(&caller("k", None), req("m", "b")).await.is_err());
    let again = caller("k", None);
    g.converse(&again, req("m", "b")).await.unwrap();
    assert_eq!(status(&again), Some(CacheStatus::Miss));

    // A stream dropped after its first event.
    let mut s = g
        .converse_stream(&caller("k", None), req("m", "c"))
        .await
        .unwrap()
        .value;
    s.next().await.unwrap().unwrap();
    drop(s);
    let again = caller("k", None);
    g.converse(&again, req("m", "c")).await.unwrap();
    assert_eq!(status(&again), Some(CacheStatus::Miss));
    assert_eq!(p.calls(), 6);
}

#[tokio::test]
async fn directives_bypass_skip_and_partition() {
    let (g, p, _) = gateway(on(), ModelPolicy::default());
    let with = |d: CacheDirectives| {
        let ctx = CallContext::builder(Dialect::OpenAi).cache(d).build();
        ctx.set_principal(Principal::unrestricted("k", false));
        ctx
    };
    g.converse(&with(CacheDirectives::default()), req("m", "q"))
        .await
        .unwrap();
    let refresh = with(CacheDirectives {
        no_cache: true,
        ..Default::default()
    });
    g.converse(&refresh, req("m", "q")).await.unwrap();
    assert_eq!(status(&refresh), Some(CacheStatus::Bypass));
    let other_ns = with(CacheDirectives {
        namespace: Some("x".into()),
        ..Default::default()
    });
    g.converse(&other_ns, req("m", "q")).await.unwrap();
    assert_eq!(status(&other_ns), Some(CacheStatus::Miss));
    let bad = with(CacheDirectives {
        invalid: Some("header x-modelgate-cache-ttl is wrong".into()),
        ..Default::default()
    });
    let e = g.converse(&bad, req("m", "q")).await.unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(p.calls(), 3);
}

#[tokio::test]
async fn the_stale_level_answers_only_for_its_own_tenant_when_the_model_failed() {
    let policy = ModelPolicy {
        fallback_cache: true,
        ..once()
    };
    // The cache itself is off: answers are stored only for the degraded level.
    let (g, p, _) = gateway(CacheConfig::default(), policy);
    let first = caller("k", Some("t"));
    g.converse(&first, req("m", "q")).await.unwrap();
    assert_eq!(status(&first), None);
    p.set_default(Step::error(ErrorKind::ServiceUnavailable));
    let stale = caller("k2", Some("t"));
    let r = g.converse(&stale, req("m", "q")).await.unwrap();
    assert_eq!(r.served_by, "cache");
    assert_eq!(status(&stale), Some(CacheStatus::Stale));
    let ContentBlock::Text(t) = &r.value.message.content[0] else {
        panic!("not text")
    };
    assert_eq!(t, "the answer");
    let e = g
        .converse(&caller("k3", Some("other")), req("m", "q"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 503);
}
