//! In-process alerts: rules over the calls' outcomes (error rate, p99 latency, a token burst
//! against a rolling baseline, spend rate) and the endpoints' breakers, evaluated every few
//! seconds, each firing a webhook with its evidence — once per incident: a rule that fired
//! stays quiet for its cool-down, and an incident that flaps inside it sends nothing more.
//!
//! The same conditions ship as Prometheus alerting rules (`deploy/prometheus`) for operators
//! who use Alertmanager; these need nothing but the gateway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::outcome::{Outcome, OutcomeSink};
use crate::registry::{lock, EndpointStatus};
use crate::resilience::BreakerState;
use crate::usage::PriceCatalog;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The share of calls that failed with one of `categories` (threshold: 0–1).
    ErrorRate,
    /// The 99th percentile of call latency (threshold: milliseconds).
    P99Latency,
    /// Tokens in the window against the average window over `baseline` before it
    /// (threshold: a multiple, e.g. 3).
    TokenBurst,
    /// Spend in the window, as US dollars per hour (threshold: USD/hour).
    SpendRate,
    /// Any matching endpoint's circuit breaker is open (no threshold).
    BreakerOpen,
}

/// `[[alerts.rules]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// A name, sent with the alert.
    pub name: String,
    /// What is watched.
    pub kind: AlertKind,
    /// The value at or above which the rule fires.
    #[serde(default)]
    pub threshold: f64,
    /// The window the value is computed over. Default 5 minutes.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Fewest calls in the window for a rate or percentile to count (default 20); for a
    /// token burst, fewest tokens.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Error categories counted by `error_rate` (default: upstream, timeout, unavailable,
    /// internal — failures of the models, not of the callers).
    #[serde(default = "default_categories")]
    pub categories: Vec<String>,
    /// Only calls routed to models matching this pattern (`*` wildcards); all by default.
    #[serde(default)]
    pub model: Option<String>,
    /// Where the alert is POSTed (JSON).
    pub webhook: String,
    /// After firing, stay quiet this long. Default 15 minutes.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// The history a token burst is measured against. Default 1 hour.
    #[serde(default = "default_baseline", with = "humantime_serde")]
    pub baseline: Duration,
    /// Also POST when the condition clears.
    #[serde(default)]
    pub send_resolved: bool,
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_min_requests() -> u64 {
    20
}
fn default_categories() -> Vec<String> {
    ["upstream", "timeout", "unavailable", "internal"]
        .map(String::from)
        .to_vec()
}
fn default_cooldown() -> Duration {
    Duration::from_secs(900)
}
fn default_baseline() -> Duration {
    Duration::from_secs(3600)
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often the rules are evaluated. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    /// The rules.
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluate_every: Duration::from_secs(10),
            rules: Vec::new(),
        }
    }
}

impl AlertsConfig {
    /// Check the rules (called when the configuration is loaded).
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.rules {
            let bad = |m: &str| Err(format!("alert '{}': {m}", r.name));
            if r.window.is_zero() {
                return bad("window must be longer than 0");
            }
            if !(r.webhook.starts_with("http://") || r.webhook.starts_with("https://")) {
                return bad("webhook must be an http:// or https:// URL");
            }
            match r.kind {
                AlertKind::ErrorRate if !(r.threshold > 0.0 && r.threshold <= 1.0) => {
                    return bad("an error_rate threshold is a fraction in (0, 1]");
                }
                AlertKind::P99Latency | AlertKind::TokenBurst | AlertKind::SpendRate
                    if !(r.threshold > 0.0 && r.threshold.is_finite()) =>
                {
                    return bad("threshold must be a positive number");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What one second of matching calls added up to.
#[derive(Debug, Default)]
struct Bucket {
    second: u64,
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
    tokens: u64,
    cost_nanos: i64,
    /// Latencies in µs (kept only by latency rules).
    latencies: Vec<u64>,
    /// A few failed request ids, as evidence.
    failed: Vec<String>,
}

/// One rule and what it has seen.
struct RuleState {
    rule: AlertRule,
    buckets: VecDeque<Bucket>,
    firing: bool,
    /// When the last firing alert was sent.
    sent_at: Option<Instant>,
    /// Whether this incident's alert was sent (so its resolution is too).
    sent_this_incident: bool,
}

/// An alert as POSTed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertEvent {
    /// The rule's name.
    pub alert: String,
    /// What it watches.
    pub kind: AlertKind,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The value the rule computed.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// Unix ms when it was sent.
    pub at_ms: i64,
    /// The figures behind the value.
    pub evidence: serde_json::Value,
}

/// Sends an alert (a webhook POST, or a test's capture).
pub type Notify = Arc<dyn Fn(String, AlertEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// Reads the endpoints' breaker states.
pub type Endpoints = Arc<dyn Fn() -> Vec<EndpointStatus> + Send + Sync>;

/// The alert engine: an outcome sink plus the evaluation loop.
pub struct Alerts {
    rules: Mutex<Vec<RuleState>>,
    prices: PriceCatalog,
    start: Instant,
    endpoints: std::sync::OnceLock<Endpoints>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Alerts")
    }
}

/// POST the alert as JSON, retrying twice on failure.
pub fn webhook() -> Notify {
    let http = reqwest::Client::new();
    Arc::new(move |url, event| {
        let http = http.clone();
        Box::pin(async move {
            for attempt in 0..3u32 {
                let sent = http
                    .post(&url)
                    .timeout(Duration::from_secs(10))
                    .json(&event)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(alert = %event.alert, status = %r.status(), "alert webhook refused")
                    }
                    Err(e) => {
                        tracing::warn!(alert = %event.alert, error = %e, "alert webhook failed")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        })
    })
}

impl Alerts {
    /// An engine for `config`'s rules, pricing calls with `prices`.
    pub fn new(config: &AlertsConfig, prices: PriceCatalog) -> Arc<Self> {
        Arc::new(Self {
            rules: Mutex::new(
                config
                    .rules
                    .iter()
                    .map(|rule| RuleState {
                        rule: rule.clone(),
                        buckets: VecDeque::new(),
                        firing: false,
                        sent_at: None,
                        sent_this_incident: false,
                    })
                    .collect(),
            ),
            prices,
            start: Instant::now(),
            endpoints: std::sync::OnceLock::new(),
        })
    }

    /// Where breaker states are read from (the gateway, once built).
    pub fn watch_endpoints(&self, endpoints: Endpoints) {
        let _ = self.endpoints.set(endpoints);
    }

    /// Evaluate every `every` and send what fires with `notify`, until the engine is dropped.
    pub fn spawn(self: &Arc<Self>, every: Duration, notify: Notify) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(alerts) = weak.upgrade() else {
                    return;
                };
                for (url, event) in alerts.evaluate() {
                    tracing::warn!(alert = %event.alert, status = event.status, value = event.value, "alert");
                    tokio::spawn(notify(url, event));
                }
            }
        })
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Evaluate every rule now; the alerts to send (webhook URL and event).
    pub fn evaluate(&self) -> Vec<(String, AlertEvent)> {
        let now = Instant::now();
        let second = self.second(now);
        let endpoints = self.endpoints.get().map(|f| f()).unwrap_or_default();
        let mut out = Vec::new();
        for state in lock(&self.rules).iter_mut() {
            let horizon = keep_seconds(&state.rule);
            while state
                .buckets
                .front()
                .is_some_and(|b| b.second + horizon <= second)
            {
                state.buckets.pop_front();
            }
            let (value, evidence, firing) = judge(&state.rule, &state.buckets, second, &endpoints);
            let event = |status| AlertEvent {
                alert: state.rule.name.clone(),
                kind: state.rule.kind,
                status,
                value,
                threshold: state.rule.threshold,
                window_seconds: state.rule.window.as_secs(),
                at_ms: crate::keys::now_ms(),
                evidence: evidence.clone(),
            };
            if firing && !state.firing {
                state.firing = true;
                let quiet = state
                    .sent_at
                    .is_some_and(|t| now.saturating_duration_since(t) < state.rule.cooldown);
                state.sent_this_incident = !quiet;
                if !quiet {
                    state.sent_at = Some(now);
                    out.push((state.rule.webhook.clone(), event("firing")));
                }
            } else if !firing && state.firing {
                state.firing = false;
                if state.rule.send_resolved && state.sent_this_incident {
                    out.push((state.rule.webhook.clone(), event("resolved")));
                }
            }
        }
        out
    }
}

/// Seconds of history a rule needs.
fn keep_seconds(rule: &AlertRule) -> u64 {
    let window = rule.window.as_secs().max(1);
    if rule.kind == AlertKind::TokenBurst {
        window + rule.baseline.as_secs()
    } else {
        window
    }
}

/// The rule's value over its window, the evidence, and whether it fires.
fn judge(
    rule: &AlertRule,
    buckets: &VecDeque<Bucket>,
    second: u64,
    endpoints: &[EndpointStatus],
) -> (f64, serde_json::Value, bool) {
    let window = rule.window.as_secs().max(1);
    let in_window = |b: &&Bucket| b.second + window > second;
    let recent: Vec<&Bucket> = buckets.iter().filter(in_window).collect();
    let requests: u64 = recent.iter().map(|b| b.requests).sum();
    match rule.kind {
        AlertKind::ErrorRate => {
            let mut by_category: BTreeMap<&str, u64> = BTreeMap::new();
            for b in &recent {
                for (c, n) in &b.errors {
                    *by_category.entry(c).or_default() += n;
                }
            }
            let errors: u64 = by_category
                .iter()
                .filter(|(c, _)| rule.categories.iter().any(|x| x == *c))
                .map(|(_, n)| n)
                .sum();
            let rate = if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            };
            let failed: Vec<&String> = recent
                .iter()
                .flat_map(|b| &b.failed)
                .rev()
                .take(5)
                .collect();
            (
                rate,
                serde_json::json!({"requests": requests, "errors": errors, "by_category": by_category, "recent_failed_request_ids": failed}),
                requests >= rule.min_requests && rate >= rule.threshold,
            )
        }
        AlertKind::P99Latency => {
            let mut all: Vec<u64> = recent
                .iter()
                .flat_map(|b| b.latencies.iter().copied())
                .collect();
            all.sort_unstable();
            let p99 = if all.is_empty() {
                0.0
            } else {
                // Nearest rank.
                let rank = ((all.len() as f64) * 0.99).ceil() as usize;
                all[rank.clamp(1, all.len()) - 1] as f64 / 1000.0
            };
            (
                p99,
                serde_json::json!({"requests": requests, "p99_ms": p99, "max_ms": all.last().map(|m| *m as f64 / 1000.0)}),
                requests >= rule.min_requests && p99 >= rule.threshold,
            )
        }
        AlertKind::TokenBurst => {
            let tokens: u64 = recent.iter().map(|b| b.tokens).sum();
            let before: u64 = buckets
                .iter()
                .filter(|b| b.second + window <= second)
                .map(|b| b.tokens)
                .sum();
            // The history before the window that has been seen (the engine may be younger
            // than the baseline); less than one whole window of it is no baseline at all.
            let history = second.saturating_sub(window).min(rule.baseline.as_secs());
            let baseline_windows = history as f64 / window as f64;
            let per_window = if history >= window {
                before as f64 / baseline_windows
            } else {
                f64::NAN
            };
            let ratio = tokens as f64 / per_window.max(rule.min_requests.max(1) as f64);
            (
                ratio,
                serde_json::json!({"tokens": tokens, "baseline_tokens_per_window": per_window.is_finite().then_some(per_window), "requests": requests}),
                per_window.is_finite() && tokens >= rule.min_requests && ratio >= rule.threshold,
            )
        }
        AlertKind::SpendRate => {
            let cost: i64 = recent.iter().map(|b| b.cost_nanos).sum();
            let per_hour = cost as f64 / 1e9 * 3600.0 / window as f64;
            (
                per_hour,
                serde_json::json!({"cost_usd": cost as f64 / 1e9, "requests": requests}),
                per_hour >= rule.threshold,
            )
        }
        AlertKind::BreakerOpen => {
            let open: Vec<serde_json::Value> = endpoints
                .iter()
                .filter(|e| e.breaker == BreakerState::Open)
                .filter(|e| {
                    rule.model
                        .as_deref()
                        .is_none_or(|p| crate::policy::wildcard(p, &e.model, true))
                })
                .map(|e| serde_json::json!({"model": e.model, "provider": e.provider, "failures": e.window_failures}))
                .collect();
            (
                open.len() as f64,
                serde_json::json!({"open": open}),
                !open.is_empty(),
            )
        }
    }
}

impl OutcomeSink for Alerts {
    fn record(&self, o: &Outcome) {
        if o.operation.is_none() {
            return;
        }
        let second = self.second(Instant::now());
        let category = crate::metrics::error_category(o);
        let usage = o.usage.unwrap_or_default();
        let tokens = u64::from(usage.input_tokens) + u64::from(usage.output_tokens);
        let mut cost = None;
        for state in lock(&self.rules).iter_mut() {
            if state.rule.kind == AlertKind::BreakerOpen {
                continue;
            }
            if let Some(pattern) = &state.rule.model {
                let model = o.model_routed.as_deref().or(o.model_requested.as_deref());
                if !model.is_some_and(|m| crate::policy::wildcard(pattern, m, true)) {
                    continue;
                }
            }
            if state.buckets.back().is_none_or(|b| b.second != second) {
                state.buckets.push_back(Bucket {
                    second,
                    ..Bucket::default()
                });
            }
            let Some(b) = state.buckets.back_mut() else {
                continue;
            };
            b.requests += 1;
            b.tokens += tokens;
            if let Some(c) = category {
                *b.errors.entry(c).or_default() += 1;
                if b.failed.len() < 5 {
                    b.failed.push(o.ctx.request_id().to_string());
                }
            }
            match state.rule.kind {
                AlertKind::P99Latency => {
                    b.latencies
                        .push(u64::try_from(o.duration.as_micros()).unwrap_or(u64::MAX));
                }
                AlertKind::SpendRate => {
                    b.cost_nanos += *cost.get_or_insert_with(|| self.prices.cost(o));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CallContext;
    use crate::outcome::{ErrorInfo, OperationKind};
    use modelgate_types::{ErrorKind, ErrorSource, Usage};

    fn rule(kind: AlertKind, threshold: f64) -> AlertRule {
        AlertRule {
            name: "r".into(),
            kind,
            threshold,
            window: Duration::from_secs(60),
            min_requests: 10,
            categories: default_categories(),
            model: None,
            webhook: "http://127.0.0.1:9/hook".into(),
            cooldown: Duration::from_secs(600),
            baseline: Duration::from_secs(600),
            send_resolved: true,
        }
    }

    fn outcome(failed: bool, latency_ms: u64, tokens: u32) -> Outcome {
        let mut o = Outcome::for_context(&CallContext::internal());
        o.operation = Some(OperationKind::Converse);
        o.model_routed = Some("main".into());
        o.duration = Duration::from_millis(latency_ms);
        o.usage = Some(Usage::new(tokens, 0));
        if failed {
            o.status = 502;
            o.error = Some(ErrorInfo {
                kind: ErrorKind::ServiceUnavailable,
                source: ErrorSource::Provider,
                code: None,
            });
        }
        o
    }

    fn engine(rules: Vec<AlertRule>) -> Arc<Alerts> {
        Alerts::new(
            &AlertsConfig {
                evaluate_every: Duration::from_secs(1),
                rules,
            },
            PriceCatalog::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_upstream_errors_fires_once_and_normal_traffic_never() {
        let a = engine(vec![rule(AlertKind::ErrorRate, 0.5)]);
        // Normal traffic, with the odd failure, for ten minutes: nothing.
        for i in 0..600 {
            a.record(&outcome(i % 50 == 0, 20, 10));
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(
                a.evaluate().is_empty(),
                "fired under normal traffic at {i}s"
            );
        }
        // A burst of upstream errors for five minutes, flapping near the threshold: one alert.
        let mut sent = Vec::new();
        for i in 0..300 {
            for _ in 0..3 {
                a.record(&outcome(true, 20, 10));
            }
            a.record(&outcome(i % 40 < 20, 20, 10));
            tokio::time::advance(Duration::from_secs(1)).await;
            sent.extend(a.evaluate());
        }
        let firing: Vec<_> = sent.iter().filter(|(_, e)| e.status == "firing").collect();
        assert_eq!(firing.len(), 1, "{sent:?}");
        let e = &firing[0].1;
        assert!(e.value >= 0.5);
        assert!(e.evidence["by_category"]["upstream"].as_u64().unwrap() > 0);
        assert_eq!(
            e.evidence["recent_failed_request_ids"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        // Recovery: resolved once.
        let mut after = Vec::new();
        for _ in 0..120 {
            a.record(&outcome(false, 20, 10));
            tokio::time::advance(Duration::from_secs(1)).await;
            after.extend(a.evaluate());
        }
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1.status, "resolved");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_incident_inside_the_cool_down_is_quiet_and_after_it_fires() {
        let mut r = rule(AlertKind::ErrorRate, 0.5);
        r.send_resolved = false;
        r.window = Duration::from_secs(10);
        let a = engine(vec![r]);
        let incident = |a: &Arc<Alerts>| {
            for _ in 0..20 {
                a.record(&outcome(true, 5, 1));
            }
        };
        incident(&a);
        assert_eq!(a.evaluate().len(), 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(a.evaluate().is_empty()); // cleared
        incident(&a);
        assert!(a.evaluate().is_empty(), "inside the cool-down");
        tokio::time::advance(Duration::from_secs(700)).await;
        assert!(a.evaluate().is_empty());
        incident(&a);
        assert_eq!(a.evaluate().len(), 1, "a new incident after the cool-down");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_tokens_and_spend_rules() {
        let mut tokens = rule(AlertKind::TokenBurst, 3.0);
        tokens.min_requests = 100;
        let a = engine(vec![rule(AlertKind::P99Latency, 500.0), tokens]);
        // Ten minutes at 100 tokens a second and 100 ms: the baseline.
        for _ in 0..600 {
            a.record(&outcome(false, 100, 100));
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(a.evaluate().is_empty());
        }
        // A minute at 5× the tokens, one call in twenty slow.
        let mut sent = Vec::new();
        for i in 0..60 {
            for j in 0..5 {
                a.record(&outcome(
                    false,
                    if (i * 5 + j) % 20 == 0 { 900 } else { 100 },
                    100,
                ));
            }
            tokio::time::advance(Duration::from_secs(1)).await;
            sent.extend(a.evaluate());
        }
        let kinds: Vec<AlertKind> = sent.iter().map(|(_, e)| e.kind).collect();
        assert!(kinds.contains(&AlertKind::P99Latency), "{sent:?}");
        assert!(kinds.contains(&AlertKind::TokenBurst), "{sent:?}");
        assert_eq!(sent.len(), 2);

        let mut prices = BTreeMap::new();
        prices.insert(
            "main".to_string(),
            crate::usage::Price {
                input: 1000.0,
                output: 0.0,
                cache_read: None,
                cache_write: None,
            },
        );
        let spend = Alerts::new(
            &AlertsConfig {
                evaluate_every: Duration::from_secs(1),
                rules: vec![rule(AlertKind::SpendRate, 10.0)],
            },
            PriceCatalog::new(prices),
        );
        // 1000 tokens at $1000/M = $1 a call; 1 call in the 60 s window = $60/h.
        let mut o = outcome(false, 10, 1000);
        o.model_served = Some("main".into());
        spend.record(&o);
        let fired = spend.evaluate();
        assert_eq!(fired.len(), 1);
        assert!((fired[0].1.value - 60.0).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fires_for_its_model_only() {
        let mut r = rule(AlertKind::BreakerOpen, 0.0);
        r.model = Some("main*".into());
        let a = engine(vec![r]);
        let state = Arc::new(Mutex::new(BreakerState::Closed));
        let s = state.clone();
        a.watch_endpoints(Arc::new(move || {
            let status = |model: &str, breaker| EndpointStatus {
                model: model.into(),
                provider: "up".into(),
                breaker,
                window_successes: 0,
                window_failures: 7,
                times_opened: 1,
                health: crate::resilience::Health::default(),
                latency: crate::routing::stats::StatsSnapshot::default(),
                load: None,
            };
            vec![
                status("main", *lock(&s)),
                status("other", BreakerState::Open),
            ]
        }));
        assert!(a.evaluate().is_empty(), "another model's open breaker");
        *lock(&state) = BreakerState::Open;
        let fired = a.evaluate();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].1.evidence["open"][0]["model"], "main");
        assert!(a.evaluate().is_empty(), "still open: no second alert");
        *lock(&state) = BreakerState::Closed;
        assert_eq!(a.evaluate()[0].1.status, "resolved");
    }

    #[test]
    fn rules_are_checked() {
        let mut r = rule(AlertKind::ErrorRate, 5.0);
        let c = |r: &AlertRule| {
            AlertsConfig {
                evaluate_every: Duration::from_secs(1),
                rules: vec![r.clone()],
            }
            .validate()
        };
        assert!(c(&r).unwrap_err().contains("fraction"));
        r.threshold = 0.2;
        assert!(c(&r).is_ok());
        r.webhook = "ftp://x".into();
        assert!(c(&r).unwrap_err().contains("webhook"));
    }
}
