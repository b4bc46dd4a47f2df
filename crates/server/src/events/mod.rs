//! The event bus: rules with EventBridge event patterns, targets, and delivery through the
//! durable job queue.
//!
//! `PutEvents` matches each event against its owner's enabled rules on the bus (one indexed
//! [`RuleSet`] per owner and bus, rebuilt when a rule changes here and at most
//! [`RULES_TTL`] after another replica changed one), renders each matched target's input and
//! enqueues one job per delivery (kind [`KIND`]). The job is an in-process request through the
//! gateway's own router — a Converse call, a prompt, a declarative endpoint, a Step Functions
//! `StartExecution`, a `PutEvents` to another bus — or a signed webhook, run as the rule's
//! owner, so every pipeline layer applies. The job queue gives each delivery its retries
//! (the target's `RetryPolicy`) and its dead-letter queue. Every event is stored with the
//! rules it matched and the job of each delivery.

pub mod api;
pub mod archive;
pub mod cli;
pub mod hooks;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelgate_events::{InputSpec, Pattern, RuleInfo, RuleSet};
use modelgate_store::{BusEvent, EventStore, NewJob, RuleRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::jobs::Jobs;

/// The job kind of an event delivery.
pub const KIND: &str = "event";

/// How long a replica trusts its compiled rules before reading them again.
pub const RULES_TTL: Duration = Duration::from_secs(1);

/// The most targets a rule may have (EventBridge's limit).
pub const MAX_TARGETS: usize = 5;

/// How many bus-to-bus hops an event may take (loops end here).
pub const MAX_HOPS: u32 = 4;

/// EventBridge's default retry policy: 185 retries within 24 hours.
const DEFAULT_RETRIES: i64 = 185;
const DEFAULT_MAX_AGE_S: i64 = 86_400;

/// A target as `PutTargets` takes it (the members this gateway uses; others are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Target {
    /// `Id`.
    pub id: String,
    /// `Arn`: what is called (see [`Destination`]).
    pub arn: String,
    /// `Input`, `InputPath`, `InputTransformer`.
    #[serde(flatten)]
    pub input: InputSpec,
    /// `RetryPolicy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// `DeadLetterConfig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_config: Option<DeadLetterConfig>,
    /// `RoleArn` (kept; deliveries run as the rule's owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// `RetryPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryPolicy {
    /// 0 … 185.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_retry_attempts: Option<i64>,
    /// 60 … 86,400.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_event_age_in_seconds: Option<i64>,
}

/// `DeadLetterConfig`: the name deliveries that used their retries are listed under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterConfig {
    /// `Arn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
}

/// What a target's ARN calls.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// A model, through Converse (`arn:aws:bedrock:…:foundation-model/ID`, `modelgate:model/ID`).
    Model(String),
    /// A stored prompt, through Converse with `promptVariables` (`arn:aws:bedrock:…:prompt/ID`).
    Prompt(String),
    /// A declarative endpoint (`modelgate:endpoint/PATH`).
    Endpoint(String),
    /// A workflow (`arn:aws:states:…:stateMachine:NAME`): `StartExecution`.
    Machine(String),
    /// Another bus (`arn:aws:events:…:event-bus/NAME`).
    Bus(String),
    /// A webhook (`https://…`): signed, SSRF-guarded.
    Webhook(String),
}

impl Destination {
    /// What an ARN names.
    pub fn of(arn: &str) -> Result<Destination, String> {
        if arn.starts_with("https://") || arn.starts_with("http://") {
            return Ok(Destination::Webhook(arn.to_string()));
        }
        if let Some(id) = arn.strip_prefix("modelgate:model/") {
            return Ok(Destination::Model(id.to_string()));
        }
        if let Some(path) = arn.strip_prefix("modelgate:endpoint/") {
            return Ok(Destination::Endpoint(format!(
                "/{}",
                path.trim_start_matches('/')
            )));
        }
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if let ["arn", _, service, _, _, resource] = parts.as_slice() {
            match *service {
                "bedrock" => {
                    if resource.starts_with("prompt/") {
                        return Ok(Destination::Prompt(arn.to_string()));
                    }
                    for kind in ["foundation-model/", "inference-profile/", "custom-model/"] {
                        if let Some(id) = resource.strip_prefix(kind) {
                            return Ok(Destination::Model(id.to_string()));
                        }
                    }
                }
                "states" if resource.starts_with("stateMachine:") => {
                    return Ok(Destination::Machine(arn.to_string()))
                }
                "events" => {
                    if let Some(name) = resource.strip_prefix("event-bus/") {
                        return Ok(Destination::Bus(name.to_string()));
                    }
                }
                _ => {}
            }
        }
        Err(format!(
            "'{arn}' is not a target this gateway delivers to: use a model (arn:aws:bedrock:REGION:ACCOUNT:foundation-model/ID or modelgate:model/ID), a prompt (arn:aws:bedrock:REGION:ACCOUNT:prompt/ID), a declarative endpoint (modelgate:endpoint/PATH), a state machine (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME), an event bus (arn:aws:events:REGION:ACCOUNT:event-bus/NAME) or an https:// webhook"
        ))
    }
}

/// A text for a model: a string as it is, anything else as its JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The request a delivery sends: a router path with its body and headers, or a webhook URL.
fn delivery_request(
    dest: &Destination,
    input: &Value,
    event: &Value,
    name: &str,
    hops: u32,
) -> (Value, Option<String>) {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let routed = |path: String, body: Value, headers: Value| json!({"method": "POST", "path": path, "body": body, "headers": headers});
    match dest {
        Destination::Model(id) => {
            let body = if input.get("messages").is_some() {
                input.clone()
            } else {
                json!({"messages": [{"role": "user", "content": [{"text": text_of(input)}]}]})
            };
            (
                routed(format!("/model/{}/converse", enc(id)), body, json!({})),
                Some(id.clone()),
            )
        }
        Destination::Prompt(arn) => {
            let vars: serde_json::Map<String, Value> = match input {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), json!({"text": text_of(v)})))
                    .collect(),
                other => [("input".to_string(), json!({"text": text_of(other)}))]
                    .into_iter()
                    .collect(),
            };
            let body = json!({"promptVariables": vars});
            (
                routed(format!("/model/{}/converse", enc(arn)), body, json!({})),
                None,
            )
        }
        Destination::Endpoint(path) => (routed(path.clone(), input.clone(), json!({})), None),
        Destination::Machine(arn) => {
            let body = json!({"stateMachineArn": arn, "input": input.to_string(), "name": name});
            let headers = json!({"x-amz-target": "AWSStepFunctions.StartExecution"});
            (routed("/".into(), body, headers), None)
        }
        Destination::Bus(bus) => {
            let entry = json!({
                "Source": event["source"], "DetailType": event["detail-type"],
                "Detail": event["detail"].to_string(), "Resources": event["resources"],
                "EventBusName": bus,
            });
            let headers = json!({
                "x-amz-target": "AWSEvents.PutEvents",
                "x-modelgate-event-hops": (hops + 1).to_string(),
            });
            (
                routed("/".into(), json!({"Entries": [entry]}), headers),
                None,
            )
        }
        Destination::Webhook(url) => (json!({"method": "POST", "url": url, "body": input}), None),
    }
}

/// A rule ready to deliver.
#[derive(Debug)]
struct LiveRule {
    name: String,
    arn: String,
    principal: Value,
    targets: Vec<Target>,
}

/// An owner's enabled rules on one bus, indexed.
#[derive(Debug)]
struct Compiled {
    set: RuleSet<usize>,
    rules: Vec<LiveRule>,
}

/// Compiled rules by (owner, bus), with when they were read.
type CompiledCache = HashMap<(String, String), (Instant, Arc<Compiled>)>;

/// The event bus service.
pub struct Bus {
    /// Rules and events.
    pub store: Arc<dyn EventStore>,
    /// Where deliveries go.
    pub jobs: Arc<Jobs>,
    /// ARN region and account.
    pub site: modelgate_core::access::Site,
    /// Inbound webhook receivers (`[[hooks]]`).
    pub hooks: Vec<hooks::Receiver>,
    compiled: Mutex<CompiledCache>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

/// One delivery made for an event: which rule and target, and the job (or why none).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The rule.
    pub rule: String,
    /// The target's id.
    pub target: String,
    /// The job that delivers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What the target was sent (the rendered input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Why there is no job (the input could not be rendered, a bus loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Bus {
    /// The service over `store`, delivering through `jobs`.
    pub fn new(
        store: Arc<dyn EventStore>,
        jobs: Arc<Jobs>,
        site: modelgate_core::access::Site,
    ) -> Self {
        Self {
            store,
            jobs,
            site,
            hooks: Vec::new(),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// With these inbound webhook receivers.
    pub fn with_hooks(mut self, hooks: Vec<hooks::Receiver>) -> Self {
        self.hooks = hooks;
        self
    }

    /// A rule's ARN.
    pub fn rule_arn(&self, bus: &str, name: &str) -> String {
        let s = &self.site;
        if bus == "default" {
            format!("arn:aws:events:{}:{}:rule/{name}", s.region, s.account)
        } else {
            format!(
                "arn:aws:events:{}:{}:rule/{bus}/{name}",
                s.region, s.account
            )
        }
    }

    /// A bus's ARN.
    pub fn bus_arn(&self, bus: &str) -> String {
        format!(
            "arn:aws:events:{}:{}:event-bus/{bus}",
            self.site.region, self.site.account
        )
    }

    /// Forget the compiled rules of an owner's bus (a rule changed here).
    pub fn invalidate(&self, owner: &str, bus: &str) {
        if let Ok(mut c) = self.compiled.lock() {
            c.remove(&(owner.to_string(), bus.to_string()));
        }
    }

    async fn rules_of(&self, owner: &str, bus: &str) -> Result<Arc<Compiled>, String> {
        let key = (owner.to_string(), bus.to_string());
        if let Ok(c) = self.compiled.lock() {
            if let Some((at, compiled)) = c.get(&key) {
                if at.elapsed() < RULES_TTL {
                    return Ok(Arc::clone(compiled));
                }
            }
        }
        let records = self
            .store
            .rules(Some(owner), Some(bus), None, None, 100_000)
            .await
            .map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        let mut patterns = Vec::new();
        for r in records.into_iter().filter(|r| r.state == "ENABLED") {
            // Stored patterns were checked when saved.
            let Ok(p) = Pattern::parse(&r.pattern) else {
                tracing::warn!(rule = %r.name, "a stored event pattern no longer parses; the rule is skipped");
                continue;
            };
            patterns.push((rules.len(), p));
            rules.push(live(&r));
        }
        let compiled = Arc::new(Compiled {
            set: RuleSet::new(patterns),
            rules,
        });
        if let Ok(mut c) = self.compiled.lock() {
            c.insert(key, (Instant::now(), Arc::clone(&compiled)));
        }
        Ok(compiled)
    }

    /// Match events (already checked and enveloped) and start their deliveries; each event is
    /// stored with what it started. `hops`: how many buses the events have passed through.
    pub async fn put(
        &self,
        owner: &str,
        bus: &str,
        events: &[Value],
        hops: u32,
    ) -> Result<Vec<Vec<Delivery>>, String> {
        self.put_to(owner, bus, events, hops, None).await
    }

    /// [`Bus::put`], delivering only to the rules named in `only` when given (a replay's
    /// `FilterArns`).
    pub async fn put_to(
        &self,
        owner: &str,
        bus: &str,
        events: &[Value],
        hops: u32,
        only: Option<&[String]>,
    ) -> Result<Vec<Vec<Delivery>>, String> {
        let compiled = self.rules_of(owner, bus).await?;
        let now = modelgate_core::keys::now_ms();
        let mut jobs = Vec::new();
        // (event, delivery) of each job, in order.
        let mut slots: Vec<(usize, usize)> = Vec::new();
        let mut all: Vec<Vec<Delivery>> = Vec::with_capacity(events.len());
        for event in events {
            let id = event["id"].as_str().unwrap_or_default();
            let mut deliveries = Vec::new();
            for r in compiled.set.matches(event) {
                let rule = &compiled.rules[r];
                if only.is_some_and(|names| !names.contains(&rule.name)) {
                    continue;
                }
                let info = RuleInfo {
                    name: &rule.name,
                    arn: &rule.arn,
                    ingestion_time: event["time"].as_str().unwrap_or_default(),
                };
                for t in &rule.targets {
                    let mut d = Delivery {
                        rule: rule.name.clone(),
                        target: t.id.clone(),
                        job: None,
                        input: None,
                        error: None,
                    };
                    let made = Destination::of(&t.arn).and_then(|dest| {
                        if matches!(dest, Destination::Bus(_)) && hops >= MAX_HOPS {
                            return Err(format!(
                                "the event has passed through {hops} buses; it is not sent to another (a loop?)"
                            ));
                        }
                        let input = t.input.render(event, &info)?;
                        Ok((dest, input))
                    });
                    match made {
                        Err(e) => d.error = Some(e),
                        Ok((dest, input)) => {
                            let job = new_job(id, rule, t, &dest, &input, event, hops, now);
                            d.input = Some(input);
                            slots.push((all.len(), deliveries.len()));
                            jobs.push(job);
                        }
                    }
                    deliveries.push(d);
                }
            }
            all.push(deliveries);
        }
        if !jobs.is_empty() {
            let made = self
                .jobs
                .enqueue(&jobs)
                .await
                .map_err(|e| e.message.clone())?;
            // The job each delivery has: the one made now, or — for a delivery already
            // enqueued (a repeated webhook, racing copies of an event) — the one there.
            for ((e, d), (job, _)) in slots.into_iter().zip(made) {
                all[e][d].job = Some(job.id);
            }
        }
        for (event, deliveries) in events.iter().zip(&all) {
            let record = BusEvent {
                id: event["id"].as_str().unwrap_or_default().to_string(),
                owner: owner.to_string(),
                bus: bus.to_string(),
                ts_ms: now,
                source: event["source"].as_str().unwrap_or_default().to_string(),
                detail_type: event["detail-type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                event: event.clone(),
                deliveries: serde_json::to_value(deliveries).unwrap_or(Value::Null),
            };
            if let Err(e) = self.store.record_event(&record).await {
                // The deliveries are queued already: they run; only the record is missing.
                tracing::warn!(event = %record.id, error = %e, "cannot store the event");
            }
        }
        Ok(all)
    }
}

/// Delete stored events past `[events] retention`, every `purge_every` — except what an
/// archive keeps longer (its `RetentionDays`, 0 for ever, from its creation on).
pub fn spawn_purge(store: Arc<dyn EventStore>, config: modelgate_core::config::RetentionConfig) {
    modelgate_core::retention::spawn_purge(
        "bus events",
        config.retention,
        config.purge_every,
        move |cut| {
            let store = Arc::clone(&store);
            async move {
                let now = modelgate_core::keys::now_ms();
                let keep: Vec<(String, String, i64)> = store
                    .objects(archive::ARCHIVE, None)
                    .await?
                    .into_iter()
                    .filter_map(|a| {
                        let created = a.body["created_ms"].as_i64()?;
                        let days = a.body["retention_days"].as_i64().unwrap_or(0);
                        let from = if days == 0 {
                            created
                        } else {
                            created.max(now - days * 86_400_000)
                        };
                        let bus = a.body["bus"].as_str()?.to_string();
                        (from < cut).then_some((a.owner, bus, from))
                    })
                    .collect();
                store.purge_events(cut, &keep).await
            }
        },
    );
}

fn live(r: &RuleRecord) -> LiveRule {
    LiveRule {
        name: r.name.clone(),
        arn: r.body["arn"].as_str().unwrap_or_default().to_string(),
        principal: r.body["principal"].clone(),
        targets: serde_json::from_value(r.body["targets"].clone()).unwrap_or_default(),
    }
}

/// A Step Functions execution name for a delivery: the same for every attempt (so a repeated
/// delivery finds the execution it started), at most 80 characters.
fn execution_name(event_id: &str, target: &str) -> String {
    let name: String = format!("{event_id}-{target}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    name.chars().take(80).collect()
}

#[allow(clippy::too_many_arguments)]
fn new_job(
    event_id: &str,
    rule: &LiveRule,
    t: &Target,
    dest: &Destination,
    input: &Value,
    event: &Value,
    hops: u32,
    now: i64,
) -> NewJob {
    let name = execution_name(event_id, &t.id);
    let (mut request, model) = delivery_request(dest, input, event, &name, hops);
    request["principal"] = rule.principal.clone();
    let retries = t
        .retry_policy
        .and_then(|p| p.maximum_retry_attempts)
        .unwrap_or(DEFAULT_RETRIES);
    let max_age_s = t
        .retry_policy
        .and_then(|p| p.maximum_event_age_in_seconds)
        .unwrap_or(DEFAULT_MAX_AGE_S);
    let dlq = t.dead_letter_config.as_ref().and_then(|d| d.arn.clone());
    NewJob {
        id: crate::jobs::new_id("evd_"),
        kind: KIND.into(),
        owner: rule.principal["id"]
            .as_str()
            .unwrap_or("anonymous")
            .to_string(),
        team: None,
        batch_id: None,
        idem_key: Some(format!("{event_id}/{}/{}", rule.name, t.id)),
        model,
        priority: 5,
        max_receives: retries + 1,
        request,
        callback: None,
        meta: json!({
            "event_id": event_id, "rule": rule.name, "target": t.id, "target_arn": t.arn,
            "dead_letter": dlq, "expires_ms": now + max_age_s * 1000,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same event put twice (a repeated webhook, racing copies): the second put finds the
    /// job the first made, and its stored deliveries name that job, not one never made.
    #[tokio::test]
    async fn a_repeated_event_names_the_job_already_there() {
        let dir = std::env::temp_dir().join(format!("mg-events-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(
            modelgate_store::SqliteStore::open(&dir.join("state.db"))
                .await
                .unwrap(),
        );
        let jobs = Arc::new(Jobs::new(
            store.clone(),
            store.clone(),
            crate::jobs::objects::Objects::new(dir.join("objects")),
            modelgate_core::jobs::JobsConfig::default(),
            None,
            Default::default(),
            None,
        ));
        let bus = Bus::new(store.clone(), jobs, Default::default());
        let rule = RuleRecord {
            owner: "o".into(),
            bus: "default".into(),
            name: "r".into(),
            state: "ENABLED".into(),
            pattern: r#"{"source": ["s"]}"#.into(),
            version: 1,
            created_ms: 0,
            updated_ms: 0,
            body: json!({"arn": "arn:r", "principal": {"kind": "unrestricted", "id": "o", "admin": false},
                         "targets": [{"Id": "t", "Arn": "modelgate:model/m"}]}),
        };
        assert!(store.save_rule(&rule, None).await.unwrap());
        let event = json!({"id": "e-1", "source": "s", "detail-type": "d", "detail": {}, "resources": [], "time": "x"});
        let first = bus
            .put("o", "default", std::slice::from_ref(&event), 0)
            .await
            .unwrap();
        let again = bus
            .put("o", "default", std::slice::from_ref(&event), 0)
            .await
            .unwrap();
        let job = first[0][0].job.clone().unwrap();
        assert_eq!(again[0][0].job.as_deref(), Some(job.as_str()));
        assert!(modelgate_store::JobQueue::job(store.as_ref(), &job)
            .await
            .unwrap()
            .is_some());
        let stored = store.event("e-1").await.unwrap().unwrap();
        assert_eq!(stored.deliveries[0]["job"], job.as_str());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn destinations_from_arns() {
        let d = |a: &str| Destination::of(a);
        assert_eq!(
            d("arn:aws:bedrock:us-east-1:000000000000:foundation-model/local-chat"),
            Ok(Destination::Model("local-chat".into()))
        );
        assert_eq!(d("modelgate:model/m"), Ok(Destination::Model("m".into())));
        assert_eq!(
            d("modelgate:endpoint/contracts/review"),
            Ok(Destination::Endpoint("/contracts/review".into()))
        );
        assert!(matches!(
            d("arn:aws:bedrock:us-east-1:000000000000:prompt/ABC:2"),
            Ok(Destination::Prompt(_))
        ));
        assert!(matches!(
            d("arn:aws:states:us-east-1:000000000000:stateMachine:flow"),
            Ok(Destination::Machine(_))
        ));
        assert_eq!(
            d("arn:aws:events:us-east-1:000000000000:event-bus/audit"),
            Ok(Destination::Bus("audit".into()))
        );
        assert!(matches!(
            d("https://hooks.example.com/x"),
            Ok(Destination::Webhook(_))
        ));
        assert!(d("arn:aws:sqs:us-east-1:000000000000:queue").is_err());
    }

    #[test]
    fn requests_per_destination() {
        let event = json!({"source": "s", "detail-type": "D", "detail": {"a": 1}, "resources": []});
        let (r, model) = delivery_request(
            &Destination::Model("m/x".into()),
            &json!("hello"),
            &event,
            "n",
            0,
        );
        assert_eq!(r["path"], "/model/m%2Fx/converse");
        assert_eq!(r["body"]["messages"][0]["content"][0]["text"], "hello");
        assert_eq!(model.as_deref(), Some("m/x"));
        let (r, _) = delivery_request(
            &Destination::Prompt("arn:p".into()),
            &json!({"doc": "c.pdf", "pages": 3}),
            &event,
            "n",
            0,
        );
        assert_eq!(r["body"]["promptVariables"]["pages"]["text"], "3");
        let (r, _) = delivery_request(&Destination::Bus("b".into()), &json!({}), &event, "n", 1);
        assert_eq!(r["headers"]["x-modelgate-event-hops"], "2");
        assert_eq!(r["body"]["Entries"][0]["Detail"], "{\"a\":1}");
        let (r, _) = delivery_request(
            &Destination::Machine("arn:m".into()),
            &json!({"k": 1}),
            &event,
            "n",
            0,
        );
        assert_eq!(
            (r["path"].as_str(), r["body"]["input"].as_str()),
            (Some("/"), Some("{\"k\":1}"))
        );
        assert!(execution_name(&"e".repeat(70), &"t".repeat(60)).len() <= 80);
    }
}

/// `GET /admin/events` filters.
#[derive(Debug, Default, Deserialize)]
pub struct EventParams {
    /// Only this owner's events.
    pub owner: Option<String>,
    /// Only this bus.
    pub bus: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this detail type.
    pub detail_type: Option<String>,
    /// Received at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Received before (Unix ms).
    pub until_ms: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
}

/// An event as the admin API shows it: its deliveries with their jobs' states.
async fn event_view(jobs: &Jobs, e: &BusEvent) -> Value {
    let mut deliveries = Vec::new();
    for d in e.deliveries.as_array().into_iter().flatten() {
        let mut v = d.clone();
        if let Some(id) = d["job"].as_str() {
            match jobs.queue.job(id).await {
                Ok(Some(j)) => {
                    v["state"] = json!(j.state.as_str());
                    v["attempts"] = json!(j.receives);
                    v["status"] = j
                        .result
                        .as_ref()
                        .map_or(Value::Null, |r| r["status"].clone());
                    v["last_error"] = json!(j.last_error);
                    v["dead_letter"] = j.meta["dead_letter"].clone();
                }
                Ok(None) => v["state"] = json!("unknown"),
                Err(err) => v["state"] = json!(format!("unreadable: {err}")),
            }
        }
        deliveries.push(v);
    }
    json!({
        "id": e.id, "owner": e.owner, "bus": e.bus, "received_ms": e.ts_ms, "source": e.source,
        "detail_type": e.detail_type, "event": e.event, "deliveries": deliveries,
    })
}

/// `GET /admin/events`: stored events, oldest first, with each delivery's outcome.
pub async fn admin_list(
    axum::extract::State(state): axum::extract::State<crate::app::AppState>,
    axum::extract::Extension(ctx): axum::extract::Extension<modelgate_core::CallContext>,
    axum::extract::Query(p): axum::extract::Query<EventParams>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let result = async {
        crate::auth::admin_allowed(
            &state,
            &ctx,
            "modelgate:ListEvents",
            "arn:modelgate:admin:::events",
        )?;
        let bus = state.events.as_ref().ok_or_else(|| {
            modelgate_types::Error::new(
                modelgate_types::ErrorKind::ServiceUnavailable,
                "This gateway runs without an event bus (no state store).",
            )
        })?;
        let after = p.after.as_deref().and_then(|a| {
            let (ts, id) = a.split_once(':')?;
            Some((ts.parse().ok()?, id.to_string()))
        });
        let limit = p.limit.unwrap_or(100).clamp(1, 1000);
        let q = modelgate_store::BusEventQuery {
            owner: p.owner.clone(),
            bus: p.bus.clone(),
            source: p.source.clone(),
            detail_type: p.detail_type.clone(),
            since_ms: p.since_ms,
            until_ms: p.until_ms,
            after,
            limit,
        };
        let events = bus
            .store
            .events(&q)
            .await
            .map_err(crate::jobs::store_error)?;
        let mut views = Vec::with_capacity(events.len());
        for e in &events {
            views.push(event_view(&bus.jobs, e).await);
        }
        let next = (events.len() == limit)
            .then(|| events.last().map(|e| format!("{}:{}", e.ts_ms, e.id)))
            .flatten();
        Ok(axum::Json(json!({"events": views, "next": next})).into_response())
    };
    crate::errors::respond::<crate::errors::OpenAiError>(result.await)
}
