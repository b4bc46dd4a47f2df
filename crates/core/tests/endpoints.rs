//! Endpoints made through the admin API are stored as versions and reach every replica that
//! shares the store; bad changes leave everything as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use modelgate_core::endpoints::{EndpointConfig, Endpoints};
use modelgate_store::SqliteStore;
use serde_json::json;

fn endpoint(name: &str, path: &str, user: &str) -> EndpointConfig {
    serde_json::from_value(json!({
        "name": name, "path": path, "model": "m",
        "request_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "template": {"user": user},
    }))
    .unwrap()
}

#[tokio::test]
async fn api_endpoints_reach_every_replica_and_bad_changes_change_nothing() {
    let dir = std::env::temp_dir().join(format!(
        "mg-endpoints-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let store = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
    let file = [endpoint("generate", "/generate", "{{ q }}")];
    let a = Endpoints::new(&file, Some(store.clone())).unwrap();
    let b = Endpoints::new(&file, Some(store)).unwrap();

    let v = a
        .change("faq", Some(endpoint("faq", "/faq", "FAQ {{ q }}")), "admin")
        .await
        .unwrap();
    assert_eq!(v, 1);
    assert!(a.get("/faq").is_some());
    assert!(b.get("/faq").is_none());
    assert!(b.sync().await.unwrap());
    assert!(b.get("/faq").is_some());
    assert!(!b.sync().await.unwrap());

    // Refused: a template with an undeclared variable, a file endpoint's name or path, a
    // body whose name is not the path's.
    assert!(a
        .change("faq", Some(endpoint("faq", "/faq", "{{ nope }}")), "admin")
        .await
        .is_err());
    assert!(a
        .change(
            "generate",
            Some(endpoint("generate", "/g2", "{{ q }}")),
            "admin"
        )
        .await
        .is_err());
    assert!(a
        .change(
            "other",
            Some(endpoint("other", "/generate", "{{ q }}")),
            "admin"
        )
        .await
        .is_err());
    assert!(a
        .change("x", Some(endpoint("y", "/y", "{{ q }}")), "admin")
        .await
        .is_err());
    assert_eq!(a.list().1, 1);

    // The file changes under the stored endpoints; a file that would clash is refused.
    assert!(a
        .replace(&[endpoint("faq-file", "/faq", "{{ q }}")])
        .is_err());
    assert_eq!(a.replace(&[]).unwrap(), 1);

    assert_eq!(a.change("faq", None, "admin").await.unwrap(), 2);
    assert!(b.sync().await.unwrap());
    assert!(b.get("/faq").is_none());
    assert!(a.change("faq", None, "admin").await.is_err());
}
