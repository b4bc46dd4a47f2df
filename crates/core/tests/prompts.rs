//! The prompt service over the embedded store: the Bedrock API's answers, the review
//! lifecycle's rules, labels and A/B picks, and nothing stored when a definition is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use modelgate_core::prompts::{Label, PromptDef, Prompts, PromptsConfig, Split, PUBLISHED};
use modelgate_store::SqliteStore;
use modelgate_types::ErrorKind;
use serde_json::json;

async fn service(config: PromptsConfig) -> Arc<Prompts> {
    let dir = std::env::temp_dir().join(format!(
        "mg-prompts-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let store = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
    Prompts::spawn(store.clone(), store, "us-east-1", "123456789012", config).0
}

fn def(text: &str) -> PromptDef {
    serde_json::from_value(json!({
        "name": "support-reply",
        "variants": [{"name": "v", "templateType": "TEXT", "modelId": "m",
            "templateConfiguration": {"text": {"text": text,
                "inputVariables": [{"name": "customer_name"}, {"name": "issue"}]}}}]
    }))
    .unwrap()
}

#[tokio::test]
async fn the_bedrock_shapes_and_refusals() {
    let p = service(PromptsConfig::default()).await;
    let created = p
        .create(def("Hi {{customer_name}}: {{issue}}"))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 10);
    assert_eq!(created["version"], "DRAFT");
    assert_eq!(
        created["arn"],
        format!("arn:aws:bedrock:us-east-1:123456789012:prompt/{id}")
    );
    // A template using an undeclared variable is refused, and nothing is stored.
    let e = p
        .create(def("{{customer_name}} {{order}}"))
        .await
        .unwrap_err();
    assert!(e.message.contains("'order'"), "{}", e.message);
    assert_eq!(
        p.list(None, None, None).await.unwrap()["promptSummaries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The same name twice is a conflict.
    let e = p.create(def("x {{issue}}")).await.unwrap_err();
    assert_eq!(e.code, Some("ConflictException"));
    let v1 = p.create_version(&id, None, None).await.unwrap();
    assert_eq!(v1["version"], "1");
    assert!(v1["arn"].as_str().unwrap().ends_with(":1"));
    let arn = v1["arn"].as_str().unwrap();
    assert_eq!(p.get(arn, None).await.unwrap()["version"], "1");
    let e = p.get(&id, Some("7")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let listed = p.list(Some(&id), Some(1), None).await.unwrap();
    assert_eq!(listed["promptSummaries"].as_array().unwrap().len(), 1);
    assert_eq!(listed["nextToken"], "1");
    assert!(p.get("not-an-id", None).await.is_err());
}

#[tokio::test]
async fn the_lifecycle_enforces_order_and_a_second_reviewer() {
    let p = service(PromptsConfig::default()).await;
    let id = p
        .create(def("Hi {{customer_name}}: {{issue}}"))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.create_version(&id, None, None).await.unwrap();
    let refused = |r: Result<_, modelgate_types::Error>| r.unwrap_err().code;
    assert_eq!(
        refused(p.transition(&id, 1, "published", "admin", "").await),
        Some("ConflictException")
    );
    assert!(p.transition(&id, 0, "submitted", "ann", "").await.is_err());
    p.transition(&id, 1, "submitted", "ann", "please")
        .await
        .unwrap();
    let e = p
        .transition(&id, 1, "approved", "ann", "")
        .await
        .unwrap_err();
    assert!(e.message.contains("different reviewer"), "{}", e.message);
    p.transition(&id, 1, "rejected", "bob", "typo")
        .await
        .unwrap();
    p.transition(&id, 1, "submitted", "ann", "fixed")
        .await
        .unwrap();
    p.transition(&id, 1, "approved", "bob", "ok").await.unwrap();
    p.transition(&id, 1, "published", "admin", "")
        .await
        .unwrap();
    assert_eq!(p.labels(&id).await.unwrap()[PUBLISHED].version, 1);
    assert_eq!(p.state(&id, 1).await.unwrap().as_deref(), Some("published"));
    let trail: Vec<String> = p
        .reviews(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{}:{}", r.state, r.actor))
        .collect();
    assert_eq!(
        trail,
        [
            "submitted:ann",
            "rejected:bob",
            "submitted:ann",
            "approved:bob",
            "published:admin"
        ]
    );
    // A version a label uses cannot be deleted.
    assert!(p.delete(&id, Some("1")).await.is_err());
}

#[tokio::test]
async fn labels_split_uses_between_versions() {
    let p = service(PromptsConfig {
        require_approval: false,
        compare_on_publish: false,
    })
    .await;
    let id = p
        .create(def("A {{customer_name}} {{issue}}"))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.create_version(&id, None, None).await.unwrap();
    p.create_version(&id, None, None).await.unwrap();
    assert_eq!(
        p.pick(&id, PUBLISHED).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Without approval required, publishing straight away works; a label to an unpublished
    // version named `published` does not.
    p.transition(&id, 1, "published", "admin", "")
        .await
        .unwrap();
    let split = Label {
        version: 1,
        split: Some(Split {
            version: 2,
            weight: 0.3,
        }),
    };
    p.set_label(&id, "canary", Some(split.clone()), "admin")
        .await
        .unwrap();
    assert!(p
        .set_label(
            &id,
            PUBLISHED,
            Some(Label {
                version: 2,
                split: None
            }),
            "admin"
        )
        .await
        .is_err());
    let mut twos = 0;
    for _ in 0..2000 {
        if p.pick(&id, "canary").await.unwrap() == 2 {
            twos += 1;
        }
    }
    assert!(
        (450..750).contains(&twos),
        "{twos} of 2000 went to version 2"
    );
    p.set_label(&id, "canary", None, "admin").await.unwrap();
    assert!(!p.labels(&id).await.unwrap().contains_key("canary"));
}
