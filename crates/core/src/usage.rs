//! Usage and cost: every model call's outcome becomes a usage record (tokens, cost, latency,
//! status, caller, model requested and served, route), priced from the catalog, queued in
//! memory and written to the store in batches off the hot path. The same writer adds each
//! call's cost to the caller's budget totals and notifies a soft budget's webhook once per
//! period when it is spent.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use modelgate_store::{Counters, SpendScope, StoreError, UsageRecord, UsageStore};
use serde::{Deserialize, Serialize};

use crate::access::{budget_key, spend};
use crate::keys::{now_ms, BudgetMode};
use crate::outcome::{Outcome, OutcomeSink};

/// Prices of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the prompt cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Input tokens written to the prompt cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

impl Price {
    const fn new(input: f64, output: f64) -> Self {
        Self {
            input,
            output,
            cache_read: None,
            cache_write: None,
        }
    }

    const fn cached(input: f64, output: f64, read: f64, write: f64) -> Self {
        Self {
            input,
            output,
            cache_read: Some(read),
            cache_write: Some(write),
        }
    }

    /// The cost of `usage` in nano-dollars (a million tokens at $1 is 10⁹ nano-dollars, so a
    /// token at $1/M is exactly 1000).
    pub fn cost_nanos(&self, usage: &modelgate_types::Usage) -> i64 {
        let per_token = |usd_per_million: f64| usd_per_million * 1000.0;
        let fresh_input = f64::from(usage.input_tokens);
        let total = fresh_input * per_token(self.input)
            + f64::from(usage.output_tokens) * per_token(self.output)
            + f64::from(usage.cache_read_input_tokens)
                * per_token(self.cache_read.unwrap_or(self.input))
            + f64::from(usage.cache_write_input_tokens)
                * per_token(self.cache_write.unwrap_or(self.input));
        total.round() as i64
    }
}

/// Shipped list prices (USD per million tokens, on-demand, as published by the providers);
/// matched against the model that served a call, with `*` wildcards, first match wins, and
/// overridden by `[prices]` in the configuration. The embedded models cost nothing.
const DEFAULT_PRICES: &[(&str, Price)] = &[
    // Anthropic, on Bedrock and direct.
    ("*claude-3-opus*", Price::cached(15.0, 75.0, 1.5, 18.75)),
    ("*claude-opus-4*", Price::cached(15.0, 75.0, 1.5, 18.75)),
    ("*claude-3-sonnet*", Price::new(3.0, 15.0)),
    ("*claude-3-5-sonnet*", Price::cached(3.0, 15.0, 0.3, 3.75)),
    ("*claude-3-7-sonnet*", Price::cached(3.0, 15.0, 0.3, 3.75)),
    ("*claude-sonnet-4*", Price::cached(3.0, 15.0, 0.3, 3.75)),
    ("*claude-3-haiku*", Price::cached(0.25, 1.25, 0.03, 0.3)),
    ("*claude-3-5-haiku*", Price::cached(0.8, 4.0, 0.08, 1.0)),
    ("*claude-haiku-4*", Price::cached(1.0, 5.0, 0.1, 1.25)),
    ("*claude-instant*", Price::new(0.8, 2.4)),
    // Amazon.
    ("*amazon.nova-micro*", Price::new(0.035, 0.14)),
    ("*amazon.nova-lite*", Price::new(0.06, 0.24)),
    ("*amazon.nova-pro*", Price::new(0.8, 3.2)),
    ("amazon.titan-text-express*", Price::new(0.2, 0.6)),
    ("amazon.titan-text-lite*", Price::new(0.15, 0.2)),
    ("amazon.titan-text-premier*", Price::new(0.5, 1.5)),
    ("amazon.titan-embed-text-v1*", Price::new(0.1, 0.0)),
    ("amazon.titan-embed-text-v2*", Price::new(0.02, 0.0)),
    // Meta, Mistral and Cohere on Bedrock.
    ("*meta.llama3-8b*", Price::new(0.3, 0.6)),
    ("*meta.llama3-70b*", Price::new(2.65, 3.5)),
    ("*meta.llama3-1-8b*", Price::new(0.22, 0.22)),
    ("*meta.llama3-1-70b*", Price::new(0.72, 0.72)),
    ("mistral.mistral-7b*", Price::new(0.15, 0.2)),
    ("mistral.mixtral-8x7b*", Price::new(0.45, 0.7)),
    ("mistral.mistral-large*", Price::new(4.0, 12.0)),
    ("cohere.command-r-plus*", Price::new(3.0, 15.0)),
    ("cohere.command-r*", Price::new(0.5, 1.5)),
    ("cohere.embed*", Price::new(0.1, 0.0)),
    // OpenAI.
    ("gpt-4o-mini*", Price::cached(0.15, 0.6, 0.075, 0.15)),
    ("gpt-4o*", Price::cached(2.5, 10.0, 1.25, 2.5)),
    ("gpt-4.1-nano*", Price::cached(0.1, 0.4, 0.025, 0.1)),
    ("gpt-4.1-mini*", Price::cached(0.4, 1.6, 0.1, 0.4)),
    ("gpt-4.1*", Price::cached(2.0, 8.0, 0.5, 2.0)),
    ("gpt-4-turbo*", Price::new(10.0, 30.0)),
    ("gpt-3.5-turbo*", Price::new(0.5, 1.5)),
    ("o3-mini*", Price::cached(1.1, 4.4, 0.55, 1.1)),
    ("o4-mini*", Price::cached(1.1, 4.4, 0.275, 1.1)),
    ("text-embedding-3-small*", Price::new(0.02, 0.0)),
    ("text-embedding-3-large*", Price::new(0.13, 0.0)),
    ("text-embedding-ada-002*", Price::new(0.1, 0.0)),
];

/// Model prices: configured ones first, then the shipped list; unknown models cost nothing
/// (and are counted in tokens all the same).
#[derive(Debug, Clone, Default)]
pub struct PriceCatalog {
    configured: Arc<BTreeMap<String, Price>>,
    /// Prices already looked up (the pattern scan runs once per model name), bounded because a
    /// failed call is priced by the name the client gave.
    seen: Arc<std::sync::RwLock<std::collections::HashMap<String, Option<Price>>>>,
}

/// Model names whose price is remembered.
const SEEN: usize = 4096;

impl PriceCatalog {
    /// The shipped prices, overridden by `configured` (model id or `*` pattern → price).
    pub fn new(configured: BTreeMap<String, Price>) -> Self {
        Self {
            configured: Arc::new(configured),
            seen: Arc::default(),
        }
    }

    /// The price of `model`.
    pub fn price(&self, model: &str) -> Option<Price> {
        let seen = |s: &Self| {
            s.seen
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(model)
                .copied()
        };
        if let Some(p) = seen(self) {
            return p;
        }
        let price = self.look_up(model);
        let mut seen = self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() < SEEN {
            seen.insert(model.to_string(), price);
        }
        price
    }

    fn look_up(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.configured.get(model) {
            return Some(*p);
        }
        self.configured
            .iter()
            .find(|(pat, _)| crate::policy::wildcard(pat, model, true))
            .map(|(_, p)| *p)
            .or_else(|| {
                DEFAULT_PRICES
                    .iter()
                    .find(|(pat, _)| crate::policy::wildcard(pat, model, true))
                    .map(|(_, p)| *p)
            })
    }
}

impl PriceCatalog {
    /// The cost of a call in nano-dollars: its usage at the price of the model that served it
    /// (or, when none did, the one asked for).
    pub fn cost(&self, o: &Outcome) -> i64 {
        let model = o
            .model_served
            .as_deref()
            .or(o.model_requested.as_deref())
            .unwrap_or_default();
        self.cost_of(model, &o.usage.unwrap_or_default())
    }

    /// The cost of `usage` at `model`'s price, in nano-dollars (0 for an unpriced model).
    pub fn cost_of(&self, model: &str, usage: &modelgate_types::Usage) -> i64 {
        self.price(model).map_or(0, |p| p.cost_nanos(usage))
    }
}

/// Write what arrives on `rx` in batches (up to 500 at a time, at least every 200 ms). A batch
/// the store refuses is kept and retried with backoff, and the queue behind it waits (bounded
/// by the channel), so nothing accepted is lost while the store is down.
pub(crate) async fn drain<T, F, Fut>(rx: tokio::sync::mpsc::Receiver<T>, write: F)
where
    T: Send + Sync + 'static,
    F: FnMut(Arc<Vec<T>>) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    drain_by(rx, 500, write).await;
}

/// [`drain`] with batches of at most `max` (smaller batches hold a shared core for less time).
pub(crate) async fn drain_by<T, F, Fut>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
    max: usize,
    mut write: F,
) where
    T: Send + Sync + 'static,
    F: FnMut(Arc<Vec<T>>) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        // Shared, not copied, between the attempts of a batch the store refuses.
        let batch = Arc::new(batch);
        let mut wait = Duration::from_millis(100);
        while let Err(e) = write(Arc::clone(&batch)).await {
            tracing::warn!(error = %e, queued = batch.len(), "cannot write records; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// The usage sink: outcome → priced record → queue → store; and budget totals, which are
/// settled at once (not after the batch is written) so that a hard budget is overshot by no
/// more than the calls already in flight when it ran out.
pub struct UsageRecorder {
    prices: PriceCatalog,
    tx: tokio::sync::mpsc::Sender<UsageRecord>,
    store: Arc<dyn UsageStore>,
    counters: Arc<dyn Counters>,
    http: reqwest::Client,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsageRecorder")
    }
}

/// A budget a call's cost counts against.
#[derive(Debug, Clone)]
struct BudgetHit {
    scope: SpendScope,
    budget: crate::keys::BudgetSpec,
}

/// Records queued while the store is slow or down before new ones are dropped (with a
/// warning): about 100 MB at most.
const QUEUE: usize = 200_000;

impl UsageRecorder {
    /// A recorder writing into `store`, settling budgets in `counters`. Returns the sink and
    /// the writer task (which ends once every sender is gone and the queue is written).
    pub fn spawn(
        prices: PriceCatalog,
        store: Arc<dyn UsageStore>,
        counters: Arc<dyn Counters>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<UsageRecord>(QUEUE);
        let writer = Arc::clone(&store);
        let task = tokio::spawn(drain(rx, move |batch| {
            let store = Arc::clone(&writer);
            async move { store.append_usage(&batch).await }
        }));
        let recorder = Self {
            prices,
            tx,
            store,
            counters,
            http: reqwest::Client::new(),
        };
        (Arc::new(recorder), task)
    }
}

/// Add a call's cost to a budget's total; notify a soft budget's webhook when it is crossed.
async fn settle(
    counters: &dyn Counters,
    store: &dyn UsageStore,
    http: &reqwest::Client,
    record: &UsageRecord,
    hit: &BudgetHit,
) {
    if record.cost_nanos == 0 {
        return;
    }
    // Settled before the record is written, so a total seeded from the store now does not
    // count this call yet.
    let total = spend(
        counters,
        Some(store),
        &hit.scope,
        &hit.budget,
        record.cost_nanos,
    )
    .await;
    let Ok((total, _)) = total else {
        tracing::warn!("cannot update a budget total; the store will re-seed it");
        return;
    };
    let limit = hit.budget.limit_nanos();
    if hit.budget.mode != BudgetMode::Soft || total < limit || total - record.cost_nanos >= limit {
        return;
    }
    let Some(url) = &hit.budget.webhook else {
        return;
    };
    let (key, start, end) = budget_key(&hit.scope, &hit.budget, now_ms());
    let ttl = Duration::from_millis(u64::try_from(end - now_ms()).unwrap_or(0) + 60_000);
    // Once per period, across replicas.
    if counters
        .add(&format!("{key}:notified"), 1, ttl, 0)
        .await
        .ok()
        != Some(1)
    {
        return;
    }
    let (kind, id) = match &hit.scope {
        SpendScope::Key(k) => ("key", k.as_str()),
        SpendScope::Team(t) => ("team", t.as_str()),
    };
    let body = serde_json::json!({
        "type": "budget.exceeded",
        "budget": hit.budget.name,
        kind: id,
        "limit_usd": hit.budget.limit_usd,
        "spent_usd": total as f64 / 1e9,
        "period_start_ms": start,
        "period_end_ms": end,
    });
    if let Err(e) = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
    {
        tracing::warn!(error = %e, budget = %hit.budget.name, "budget webhook failed");
    }
}

impl OutcomeSink for UsageRecorder {
    fn record(&self, o: &Outcome) {
        let Some(operation) = o.operation else {
            return;
        };
        let usage = o.usage.unwrap_or_default();
        let served = o.model_served.clone();
        let cost = self.prices.cost(o);
        let principal = o.ctx.principal();
        let record = UsageRecord {
            ts_ms: now_ms(),
            request_id: o.ctx.request_id().to_string(),
            key_id: principal.map(|p| p.id.clone()),
            team: principal.and_then(|p| p.team.clone()),
            model_requested: o.model_requested.clone().unwrap_or_default(),
            model_served: served,
            provider: o.provider.clone(),
            route: o.ctx.route().to_string(),
            operation: operation.as_str().to_string(),
            status: i64::from(o.status),
            input_tokens: i64::from(usage.input_tokens),
            output_tokens: i64::from(usage.output_tokens),
            cache_read_tokens: i64::from(usage.cache_read_input_tokens),
            cache_write_tokens: i64::from(usage.cache_write_input_tokens),
            cost_nanos: cost,
            latency_ms: i64::try_from(o.duration.as_millis()).unwrap_or(i64::MAX),
            streamed: o.streamed,
            cancelled: o.cancelled,
        };
        // Model calls the routing made itself (a classifier's embedding, a cascade's rejected
        // answer, a judge) are charged as their own records of the same request.
        let side = o.routing.iter().flat_map(|d| &d.side_calls).map(|s| {
            let cost = self.prices.cost_of(&s.model, &s.usage);
            UsageRecord {
                model_served: Some(s.model.clone()),
                provider: None,
                operation: format!("routing.{}", s.purpose),
                input_tokens: i64::from(s.usage.input_tokens),
                output_tokens: i64::from(s.usage.output_tokens),
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_nanos: cost,
                latency_ms: 0,
                streamed: false,
                cancelled: false,
                ..record.clone()
            }
        });
        let side: Vec<UsageRecord> = side.collect();
        let budgets: Vec<BudgetHit> = principal
            .map(|p| {
                p.grants
                    .budgets
                    .iter()
                    .map(|(scope, budget)| BudgetHit {
                        scope: scope.clone(),
                        budget: budget.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let total_nanos = record.cost_nanos + side.iter().map(|r| r.cost_nanos).sum::<i64>();
        if !budgets.is_empty() && total_nanos > 0 {
            let (counters, store, http) = (
                Arc::clone(&self.counters),
                Arc::clone(&self.store),
                self.http.clone(),
            );
            let record = UsageRecord {
                cost_nanos: total_nanos,
                ..record.clone()
            };
            crate::access::run_soon(async move {
                for hit in budgets {
                    settle(&*counters, &*store, &http, &record, &hit).await;
                }
            });
        }
        let records = std::iter::once(record).chain(side);
        for r in records {
            if self.tx.try_send(r).is_err() {
                tracing::warn!("usage queue full; a usage record was dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_match_versioned_ids_and_config_wins() {
        let catalog = PriceCatalog::new(BTreeMap::from([(
            "anthropic.claude-3-haiku*".to_string(),
            Price::new(1.0, 2.0),
        )]));
        let sonnet = catalog
            .price("anthropic.claude-3-sonnet-20240229-v1:0")
            .unwrap();
        assert_eq!((sonnet.input, sonnet.output), (3.0, 15.0));
        assert_eq!(
            catalog.price("us.anthropic.claude-3-sonnet-20240229-v1:0"),
            Some(sonnet)
        );
        assert_eq!(
            catalog
                .price("anthropic.claude-3-haiku-20240307-v1:0")
                .unwrap()
                .input,
            1.0
        );
        assert!(catalog.price("smollm2-135m-instruct").is_none());
        let mut u = modelgate_types::Usage::new(1_000, 100);
        u.cache_read_input_tokens = 10;
        // 1000 × $3/M + 100 × $15/M + 10 × $3/M = $0.00453.
        assert_eq!(sonnet.cost_nanos(&u), 4_530_000);
    }
}
