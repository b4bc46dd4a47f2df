//! The limits layer through the whole pipeline, with the in-process scripted provider:
//! per-model, per-route and per-key limits, a refused call that never reaches the provider and
//! gives back what it took, a concurrency slot held until a stream's last event, tokens per
//! minute settled from the real usage, and the authorisation layer in front.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use modelgate_core::access::{Audit, Authorize, Grants, Limits, SharedLimits, Site};
use modelgate_core::keys::LimitSpec;
use modelgate_core::pipeline::PolicyLayers;
use modelgate_core::policy::Policy;
use modelgate_core::{
    CallContext, Dialect, Gateway, ModelInfo, ModelPolicy, Principal, ServedModel,
};
use modelgate_providers::Provider;
use modelgate_store::MemoryCounters;
use modelgate_testkit::scripted::ScriptedProvider;
use modelgate_types::{ChatRequest, ErrorKind, ErrorSource, InferenceConfig, Message, Role};

fn served(id: &str, p: &Arc<ScriptedProvider>) -> ServedModel {
    ServedModel::new(
        ModelInfo {
            id: id.into(),
            owned_by: "test".into(),
            kind: "chat",
            aliases: Vec::new(),
            format: None,
        },
        "scripted",
        Arc::clone(p) as Arc<dyn Provider>,
        ModelPolicy::default(),
    )
}

fn gateway(shared: SharedLimits, models: &[(&str, &Arc<ScriptedProvider>)]) -> Gateway {
    let g = Gateway::builder()
        .cache(None)
        .policy(PolicyLayers {
            authorize: Arc::new(Authorize::new(Site::default(), Audit::default())),
            limits: Arc::new(Limits {
                counters: Arc::new(MemoryCounters::default()),
                usage: None,
                shared,
            }),
        })
        .build();
    g.install(models.iter().map(|(id, p)| served(id, p)).collect());
    g
}

fn req(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::text(Role::User, "hi")],
        ..Default::default()
    }
}

fn ctx(route: &str) -> CallContext {
    CallContext::builder(Dialect::OpenAi)
        .route("POST", route)
        .build()
}

fn limit(rps: u32, burst: u32) -> LimitSpec {
    LimitSpec {
        rps: Some(rps),
        burst: Some(burst),
        ..LimitSpec::default()
    }
}

#[tokio::test]
async fn a_model_limit_refuses_without_calling_the_model_and_other_models_are_free() {
    let a = ScriptedProvider::new("a");
    let b = ScriptedProvider::new("b");
    let g = gateway(
        SharedLimits {
            models: BTreeMap::from([("a".to_string(), limit(1, 2))]),
            ..SharedLimits::default()
        },
        &[("a", &a), ("b", &b)],
    );
    let route = "/v1/chat/completions";
    assert!(g.converse(&ctx(route), req("a")).await.is_ok());
    assert!(g.converse(&ctx(route), req("a")).await.is_ok());
    let e = g.converse(&ctx(route), req("a")).await.unwrap_err();
    assert_eq!(
        (e.kind, e.source),
        (ErrorKind::Throttling, ErrorSource::Gateway)
    );
    assert!(
        e.retry_after.is_some() && e.message.contains("model:a"),
        "{e:?}"
    );
    assert_eq!(a.calls(), 2, "a refused call never reaches the model");
    for _ in 0..5 {
        assert!(g.converse(&ctx(route), req("b")).await.is_ok());
    }
}

#[tokio::test]
async fn a_route_limit_and_a_refusal_that_gives_back_what_it_took() {
    let m = ScriptedProvider::new("ok");
    // The global limit admits 3; the route limit admits 1.
    let g = gateway(
        SharedLimits {
            global: limit(1, 3),
            routes: BTreeMap::from([("/v1/embeddings".to_string(), limit(1, 1))]),
            ..SharedLimits::default()
        },
        &[("m", &m)],
    );
    assert!(g.converse(&ctx("/v1/embeddings"), req("m")).await.is_ok());
    // Refused by the route: the unit it took from the global bucket goes back…
    assert!(g.converse(&ctx("/v1/embeddings"), req("m")).await.is_err());
    assert!(g.converse(&ctx("/v1/embeddings"), req("m")).await.is_err());
    // …so the global bucket still holds two.
    assert!(g
        .converse(&ctx("/v1/chat/completions"), req("m"))
        .await
        .is_ok());
    assert!(g
        .converse(&ctx("/v1/chat/completions"), req("m"))
        .await
        .is_ok());
    let e = g
        .converse(&ctx("/v1/chat/completions"), req("m"))
        .await
        .unwrap_err();
    assert!(e.message.contains("global"), "{e:?}");
}

fn keyed(ctx: &CallContext, id: &str, limits: LimitSpec, policies: Vec<Arc<Policy>>) {
    ctx.set_principal(Principal {
        id: id.into(),
        team: None,
        admin: false,
        grants: Arc::new(Grants {
            policies,
            limits: vec![(format!("key:{id}"), limits)],
            ..Grants::default()
        }),
    });
}

fn allow_all() -> Vec<Arc<Policy>> {
    vec![Arc::new(
        Policy::parse(&serde_json::json!({"Effect": "Allow", "Action": "*", "Resource": "*"}))
            .unwrap(),
    )]
}

#[tokio::test]
async fn a_concurrency_slot_is_held_until_the_stream_ends() {
    let m = ScriptedProvider::new("streamed answer");
    let g = gateway(SharedLimits::default(), &[("m", &m)]);
    let conc = LimitSpec {
        concurrent: Some(1),
        ..LimitSpec::default()
    };
    let c1 = ctx("/v1/chat/completions");
    keyed(&c1, "k", conc, allow_all());
    let mut stream = g.converse_stream(&c1, req("m")).await.unwrap().value;
    let first = stream.next().await;
    assert!(first.is_some());
    let c2 = ctx("/v1/chat/completions");
    keyed(&c2, "k", conc, allow_all());
    let e = g.converse(&c2, req("m")).await.unwrap_err();
    assert!(e.message.contains("concurrent"), "{e:?}");
    // Another key has its own slots.
    let other = ctx("/v1/chat/completions");
    keyed(&other, "other", conc, allow_all());
    assert!(g.converse(&other, req("m")).await.is_ok());
    while stream.next().await.is_some() {}
    drop(stream);
    let c3 = ctx("/v1/chat/completions");
    keyed(&c3, "k", conc, allow_all());
    assert!(g.converse(&c3, req("m")).await.is_ok());
    // A client that goes away mid-stream frees its slot too.
    let c4 = ctx("/v1/chat/completions");
    keyed(&c4, "k", conc, allow_all());
    let mut s = g.converse_stream(&c4, req("m")).await.unwrap().value;
    let _ = s.next().await;
    drop(s);
    let c5 = ctx("/v1/chat/completions");
    keyed(&c5, "k", conc, allow_all());
    assert!(g.converse(&c5, req("m")).await.is_ok());
}

#[tokio::test]
async fn tokens_per_minute_are_settled_from_the_real_usage() {
    // Each call is estimated at 1 + 60 tokens but uses 15 (10 in, 5 out). With 100 tokens a
    // minute and nothing settled, one call would fit (61 + 61 > 100); settled after each call,
    // a call fits while 15 × calls so far + 61 ≤ 100: three.
    let m = ScriptedProvider::new("ok");
    let g = gateway(SharedLimits::default(), &[("m", &m)]);
    let tpm = LimitSpec {
        tpm: Some(100),
        ..LimitSpec::default()
    };
    let mut admitted = 0;
    for _ in 0..10 {
        let c = ctx("/v1/chat/completions");
        keyed(&c, "t", tpm, allow_all());
        let r = ChatRequest {
            inference: InferenceConfig {
                max_tokens: Some(60),
                ..Default::default()
            },
            ..req("m")
        };
        if g.converse(&c, r).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "settled from the real usage after each call");
}

#[tokio::test]
async fn authorisation_refuses_before_anything_else_and_names_the_action() {
    let m = ScriptedProvider::new("ok");
    let g = gateway(SharedLimits::default(), &[("m", &m)]);
    let c = ctx("/v1/chat/completions");
    let deny_stream = vec![Arc::new(
        Policy::parse(&serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": "*"}
        ]}))
        .unwrap(),
    )];
    keyed(&c, "k", LimitSpec::default(), deny_stream.clone());
    assert!(g.converse(&c, req("m")).await.is_ok());
    let c = ctx("/v1/chat/completions");
    keyed(&c, "k", LimitSpec::default(), deny_stream);
    let e = match g.converse_stream(&c, req("m")).await {
        Err(e) => e,
        Ok(_) => panic!("a stream is another action"),
    };
    assert_eq!(
        (e.kind, e.source),
        (ErrorKind::AccessDenied, ErrorSource::Gateway)
    );
    assert!(
        e.message.contains("bedrock:InvokeModelWithResponseStream"),
        "{e:?}"
    );
    assert_eq!(m.calls(), 1);
}

#[tokio::test]
async fn an_alias_cannot_dodge_a_policy_written_for_the_model_id() {
    let m = ScriptedProvider::new("ok");
    let mut model = served("anthropic.claude-3-haiku-20240307-v1:0", &m);
    model.info.aliases = vec!["cheap".into()];
    let g = Gateway::builder()
        .cache(None)
        .policy(PolicyLayers {
            authorize: Arc::new(Authorize::new(Site::default(), Audit::default())),
            limits: Arc::new(Limits {
                counters: Arc::new(MemoryCounters::default()),
                usage: None,
                shared: SharedLimits::default(),
            }),
        })
        .build();
    g.install(vec![model]);
    let no_haiku = Arc::new(
        Policy::parse(&serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "NoHaiku", "Effect": "Deny", "Action": "*", "Resource": "*claude-3-haiku*"}
        ]}))
        .unwrap(),
    );
    for name in [
        "cheap",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-3-haiku-20240307-v1:0",
    ] {
        let c = ctx("/v1/chat/completions");
        keyed(&c, "k", LimitSpec::default(), vec![Arc::clone(&no_haiku)]);
        let e = g.converse(&c, req(name)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AccessDenied, "{name}: {e:?}");
        assert!(e.message.contains("NoHaiku"), "{e:?}");
    }
    assert_eq!(m.calls(), 0);
}

#[tokio::test]
async fn allowed_calls_can_be_left_out_of_the_audit_log_but_denials_never_are() {
    use modelgate_store::{AuditQuery, AuditStore, SqliteStore};
    let dir = std::env::temp_dir().join(format!("mg-audit-{}", uuid::Uuid::new_v4().simple()));
    let store = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
    for (allows, want) in [(true, vec!["deny", "allow"]), (false, vec!["deny"])] {
        let (audit, task) = Audit::spawn_with(store.clone(), allows);
        let m = ScriptedProvider::new("ok");
        let g = Gateway::builder()
            .cache(None)
            .policy(PolicyLayers {
                authorize: Arc::new(Authorize::new(Site::default(), audit)),
                limits: Arc::new(Limits {
                    counters: Arc::new(MemoryCounters::default()),
                    usage: None,
                    shared: SharedLimits::default(),
                }),
            })
            .build();
        g.install(vec![served("m", &m)]);
        let only_whole = vec![Arc::new(
            Policy::parse(&serde_json::json!({"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": "*"}))
                .unwrap(),
        )];
        let actor = format!("k-{allows}");
        let c = ctx("/v1/chat/completions");
        keyed(&c, &actor, LimitSpec::default(), only_whole.clone());
        assert!(g.converse(&c, req("m")).await.is_ok());
        let c = ctx("/v1/chat/completions");
        keyed(&c, &actor, LimitSpec::default(), only_whole);
        assert!(g.converse_stream(&c, req("m")).await.is_err());
        // The writer ends once every sender (held by the gateway's layer) is gone.
        drop(g);
        task.await.unwrap();
        let events = store
            .audit(&AuditQuery {
                from_ms: 0,
                to_ms: i64::MAX,
                actor: Some(actor),
                limit: 10,
            })
            .await
            .unwrap();
        let decisions: Vec<&str> = events.iter().map(|e| e.decision.as_str()).collect();
        assert_eq!(decisions, want, "audit_allows = {allows}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
