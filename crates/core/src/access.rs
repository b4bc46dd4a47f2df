//! The gateway's first policy layers: authorisation (IAM-grammar policies on the action, the
//! model and the request's parameters) and limits (requests per second with burst, tokens per
//! minute, calls in flight, budgets). Both read the caller from the call context — the
//! authentication middleware of the server fills it — and refuse with [`Error::refusal`], so a
//! refusal never reaches a breaker or a fallback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use modelgate_store::{AuditEvent, Counters, Rate, SpendScope, UsageStore};
use modelgate_types::{ContentBlock, Error, ErrorKind, SystemBlock};

use crate::context::CallContext;
use crate::keys::{now_ms, BudgetMode, BudgetSpec, LimitSpec, ResolvedKey, ResolvedTeam};
use crate::pipeline::{Answer, Call, Layer, Next, Operation};
use crate::policy::{self, Policy};

/// What a caller may do. Made once per key (and cached with it), shared by its calls.
#[derive(Debug, Default)]
pub struct Grants {
    /// Skip the policy check: the anonymous caller of an open loopback gateway, the bootstrap
    /// admin credential, the static `[[auth.sigv4]]` credentials.
    pub unrestricted: bool,
    /// Tags (`aws:PrincipalTag/…`).
    pub tags: BTreeMap<String, String>,
    /// Every policy that applies.
    pub policies: Vec<Arc<Policy>>,
    /// Rate limits, each with the counter scope it is kept under (`key:<id>`, `team:<id>`).
    pub limits: Vec<(String, LimitSpec)>,
    /// Budgets, with whose spend they count.
    pub budgets: Vec<(SpendScope, BudgetSpec)>,
}

impl Grants {
    /// The grants of a resolved key: its own and its team's policies, limits and budgets.
    pub fn of_key(key: &ResolvedKey) -> Self {
        let mut grants = Self::default();
        if let Some(team) = &key.team {
            grants.add_team(team);
        }
        let s = &key.settings;
        grants.policies.extend(key.policies.iter().cloned());
        if !s.limits.is_empty() {
            grants
                .limits
                .push((format!("key:{}", key.record.id), s.limits));
        }
        for b in &s.budgets {
            grants
                .budgets
                .push((SpendScope::Key(key.record.id.clone()), b.clone()));
        }
        // A key's own tags win over its team's.
        grants.tags.extend(s.tags.clone());
        grants
    }

    /// Add what a caller gets from its team: policies, limits, budgets, tags.
    pub fn add_team(&mut self, team: &ResolvedTeam) {
        let s = &team.settings;
        self.policies.extend(team.policies.iter().cloned());
        if !s.limits.is_empty() {
            self.limits.push((format!("team:{}", team.id), s.limits));
        }
        for b in &s.budgets {
            self.budgets
                .push((SpendScope::Team(team.id.clone()), b.clone()));
        }
        self.tags.extend(s.tags.clone());
    }

    /// Full access (see [`Grants::unrestricted`]).
    pub fn unrestricted() -> Self {
        Self {
            unrestricted: true,
            ..Self::default()
        }
    }
}

/// The IAM actions a call counts as: the AWS action first, then the operation's own name, so
/// that both `bedrock:InvokeModel` and `bedrock:Converse*` statements apply to a Converse call.
pub fn actions(op: &Operation) -> Vec<String> {
    let names: &[&str] = match op {
        Operation::Converse(_) => &["bedrock:InvokeModel", "bedrock:Converse"],
        Operation::ConverseStream(_) => &[
            "bedrock:InvokeModelWithResponseStream",
            "bedrock:ConverseStream",
        ],
        Operation::Embed(_) => &["bedrock:InvokeModel", "bedrock:Embed"],
        Operation::CountTokens(_) => &["bedrock:CountTokens"],
    };
    names.iter().map(|s| (*s).to_string()).collect()
}

/// Where the gateway says it is, for ARNs and `aws:` condition keys.
#[derive(Debug, Clone)]
pub struct Site {
    /// The region in model ARNs (`aws:RequestedRegion`).
    pub region: String,
    /// The account id (`aws:PrincipalAccount`, `aws:ResourceAccount`, `${AWS::AccountId}`).
    pub account: String,
}

impl Default for Site {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        }
    }
}

impl Site {
    /// The ARN of a model (a model named by its ARN keeps it).
    pub fn model_arn(&self, model: &str) -> String {
        if model.starts_with("arn:") {
            model.to_string()
        } else {
            format!("arn:aws:bedrock:{}::foundation-model/{model}", self.region)
        }
    }
}

/// The condition keys of a call on the model `model_id` (the served model's configured id,
/// whatever alias or AWS form the client used).
pub fn request_for(
    ctx: &CallContext,
    op: &Operation,
    model_id: &str,
    site: &Site,
) -> policy::Request {
    let mut r = policy::Request {
        actions: actions(op),
        resource: site.model_arn(model_id),
        context: Default::default(),
    };
    r = common_context(r, ctx, site);
    if let Some(chat) = op.chat() {
        if let Some(m) = chat.inference.max_tokens {
            r = r.with("bedrock:MaxTokens", m.to_string());
        }
        if let Some(t) = chat.inference.temperature {
            r = r.with("bedrock:Temperature", t.to_string());
        }
        if let Some(p) = chat.inference.top_p {
            r = r.with("bedrock:TopP", p.to_string());
        }
    }
    r
}

/// Condition keys every request has: who, from where, when, through which door.
pub fn common_context(mut r: policy::Request, ctx: &CallContext, site: &Site) -> policy::Request {
    if let Some(src) = ctx.source() {
        r = r.with("aws:SourceIp", src.ip().to_string());
    }
    r = r
        .with("aws:PrincipalAccount", site.account.clone())
        .with("aws:ResourceAccount", site.account.clone())
        .with("aws:RequestedRegion", site.region.clone())
        .with("aws:SecureTransport", "false")
        .with("modelgate:Dialect", ctx.dialect().as_str())
        .with("modelgate:Route", ctx.route());
    if let Some(p) = ctx.principal() {
        r = r
            .with("aws:userid", p.id.clone())
            .with("modelgate:KeyId", p.id.clone());
        if let Some(team) = &p.team {
            r = r.with("modelgate:Team", team.clone());
        }
        for (k, v) in &p.grants.tags {
            r = r.with(&format!("aws:PrincipalTag/{k}"), v.clone());
        }
    }
    r
}

/// Decide `request` for the caller of `ctx`, write the decision to the audit log, and refuse
/// in AWS's words when it is a deny.
pub fn authorize(ctx: &CallContext, request: &policy::Request, audit: &Audit) -> Result<(), Error> {
    let Some(p) = ctx.principal() else {
        return Ok(());
    };
    if p.grants.unrestricted {
        return Ok(());
    }
    let d = policy::evaluate(
        p.grants.policies.iter().map(AsRef::as_ref),
        request,
        SystemTime::now(),
    );
    let action = request.actions.first().cloned().unwrap_or_default();
    if !d.allowed || audit.allows {
        audit.record(AuditEvent {
            ts_ms: now_ms(),
            actor: p.id.clone(),
            action: action.clone(),
            resource: request.resource.clone(),
            decision: if d.allowed { "allow" } else { "deny" }.into(),
            statement: d.statement.clone(),
            source_ip: ctx.source().map(|s| s.ip().to_string()),
            request_id: Some(ctx.request_id().to_string()),
            detail: serde_json::Value::Null,
        });
    }
    if d.allowed {
        return Ok(());
    }
    let because = match &d.statement {
        Some(s) => format!("with an explicit deny in statement '{s}'"),
        None => format!("because no identity-based policy allows the {action} action"),
    };
    Err(Error::refusal(
        ErrorKind::AccessDenied,
        format!(
            "User: {} is not authorized to perform: {action} on resource: {} {because}",
            p.id, request.resource
        ),
    ))
}

/// The audit log's writer: events are queued and written off the hot path.
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<tokio::sync::mpsc::Sender<AuditEvent>>,
    /// Whether model calls that policies allow are written too (denials always are).
    allows: bool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

impl Audit {
    /// A writer into `store`, batching events; returns it and its task.
    pub fn spawn(
        store: Arc<dyn modelgate_store::AuditStore>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        Self::spawn_with(store, true)
    }

    /// A writer into `store` that writes allowed model calls only when `allows` (denials,
    /// refused authentications and admin actions are always written).
    pub fn spawn_with(
        store: Arc<dyn modelgate_store::AuditStore>,
        allows: bool,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
        let task = tokio::spawn(crate::usage::drain(rx, move |batch| {
            let store = Arc::clone(&store);
            async move { store.append_audit(&batch).await }
        }));
        (
            Self {
                tx: Some(tx),
                allows,
            },
            task,
        )
    }

    /// Queue one event (dropped, with a warning, when the queue is full).
    pub fn record(&self, event: AuditEvent) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                tracing::warn!("audit queue full; an audit event was dropped");
            }
        }
    }
}

/// Layer: authorise the call against the caller's policies.
pub struct Authorize {
    site: Site,
    audit: Audit,
    /// The served models, so that an alias or another id form cannot dodge a policy written
    /// for the model's id (set when the pipeline is built).
    pub(crate) models: std::sync::OnceLock<crate::pipeline::Models>,
}

impl Authorize {
    /// Authorise with model ARNs of `site`, writing decisions to `audit`.
    pub fn new(site: Site, audit: Audit) -> Self {
        Self {
            site,
            audit,
            models: std::sync::OnceLock::new(),
        }
    }

    /// The configured id of the model a client named (itself when nothing serves it: the
    /// route layer refuses it later, and a policy may still deny it first).
    fn model_id(&self, name: &str) -> String {
        self.models
            .get()
            .and_then(|m| m.get())
            .and_then(|registry| registry.route(name).ok())
            .map_or_else(|| name.to_string(), |entry| entry.info.id.clone())
    }
}

#[async_trait]
impl Layer for Authorize {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        if call.ctx.principal().is_some_and(|p| !p.grants.unrestricted) {
            let model = self.model_id(call.op.model());
            let request = request_for(&call.ctx, &call.op, &model, &self.site);
            authorize(&call.ctx, &request, &self.audit)?;
        }
        next.run(call).await
    }
}

/// Limits that apply to everyone, per model and per route, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct SharedLimits {
    /// The whole gateway.
    pub global: LimitSpec,
    /// Per requested model name.
    pub models: BTreeMap<String, LimitSpec>,
    /// Per route (`/v1/chat/completions`, `/model/{model_id}/converse`, …).
    pub routes: BTreeMap<String, LimitSpec>,
}

/// Layer: rate limits, tokens per minute, concurrency and hard budgets.
pub struct Limits {
    /// Shared counters (in-process or Redis).
    pub counters: Arc<dyn Counters>,
    /// Durable spend, to seed budget totals.
    pub usage: Option<Arc<dyn UsageStore>>,
    /// Global, model and route limits.
    pub shared: SharedLimits,
}

/// The most a concurrency slot is held if its replica dies.
const SLOT_LEASE: Duration = Duration::from_secs(15 * 60);

fn rps_rate(spec: &LimitSpec) -> Option<Rate> {
    spec.rps.map(|rps| Rate {
        per_period: u64::from(rps),
        period: Duration::from_secs(1),
        burst: u64::from(spec.burst.unwrap_or(rps.saturating_mul(2)).max(1)),
    })
}

fn tpm_rate(spec: &LimitSpec) -> Option<Rate> {
    spec.tpm.map(|tpm| Rate {
        per_period: tpm,
        period: Duration::from_secs(60),
        burst: tpm,
    })
}

/// Tokens a call will probably use: its text at ~4 characters a token, plus the answer's cap.
fn estimate_tokens(op: &Operation) -> i64 {
    let Some(chat) = op.chat() else {
        return match op {
            Operation::Embed(r) => {
                let modelgate_types::EmbedInput::Texts(texts) = &r.input;
                i64::try_from(texts.iter().map(|t| t.len() / 4 + 1).sum::<usize>())
                    .unwrap_or(i64::MAX)
            }
            _ => 1,
        };
    };
    let mut chars = 0usize;
    for s in &chat.system {
        if let SystemBlock::Text(t) = s {
            chars += t.len();
        }
    }
    for m in &chat.messages {
        for b in &m.content {
            if let ContentBlock::Text(t) = b {
                chars += t.len();
            }
        }
    }
    let output = if matches!(op, Operation::CountTokens(_)) {
        0
    } else {
        chat.inference.max_tokens.unwrap_or(1024).min(8192)
    };
    i64::try_from(chars / 4 + 1).unwrap_or(i64::MAX) + i64::from(output)
}

fn throttled(what: String, wait: Duration) -> Error {
    let secs = wait.as_secs_f64().ceil().max(1.0);
    Error::refusal(
        ErrorKind::Throttling,
        format!("Rate limit exceeded: {what}. Retry in {secs:.0}s."),
    )
    .with_code("rate_limit_exceeded")
    .with_retry_after(Some(Duration::from_secs_f64(secs)))
}

/// The counter key of a budget's spend in its current period.
pub fn budget_key(scope: &SpendScope, budget: &BudgetSpec, now_ms: i64) -> (String, i64, i64) {
    let (start, end) = budget.period.window(now_ms);
    let who = match scope {
        SpendScope::Key(k) => format!("key:{k}"),
        SpendScope::Team(t) => format!("team:{t}"),
    };
    (format!("spend:{who}:{}:{start}", budget.name), start, end)
}

/// The spend of a budget's period so far: the shared total, seeded from the usage records.
pub async fn spend(
    counters: &dyn Counters,
    usage: Option<&dyn UsageStore>,
    scope: &SpendScope,
    budget: &BudgetSpec,
    amount: i64,
) -> Result<(i64, i64), modelgate_store::StoreError> {
    let now = now_ms();
    let (key, start, end) = budget_key(scope, budget, now);
    let current = counters.get(&key).await?;
    if let (0, Some(v)) = (amount, current) {
        return Ok((v, end));
    }
    let seed = match (current, usage) {
        (None, Some(u)) => u.spend_since(scope, start).await?,
        _ => 0,
    };
    let ttl = Duration::from_millis(u64::try_from(end - now).unwrap_or(0) + 60_000);
    Ok((counters.add(&key, amount, ttl, seed).await?, end))
}

fn unavailable(e: &modelgate_store::StoreError) -> Error {
    Error::refusal(
        ErrorKind::ServiceUnavailable,
        format!("The limits store is unavailable, so the call cannot be admitted: {e}"),
    )
}

impl Limits {
    /// Every limit that applies to the call, with its counter scope.
    fn applicable(&self, call: &Call) -> Vec<(String, LimitSpec)> {
        let mut out = Vec::new();
        if !self.shared.global.is_empty() {
            out.push(("global".to_string(), self.shared.global));
        }
        if let Some(l) = self.shared.models.get(call.op.model()) {
            out.push((format!("model:{}", call.op.model()), *l));
        }
        if let Some(l) = self
            .shared
            .routes
            .get(call.ctx.route())
            .copied()
            .or_else(|| call.ctx.route_limit())
        {
            out.push((format!("route:{}", call.ctx.route()), l));
        }
        if let Some(p) = call.ctx.principal() {
            out.extend(p.grants.limits.iter().cloned());
        }
        out
    }

    async fn admit(&self, call: &mut Call) -> Result<(), Error> {
        let limits = self.applicable(call);
        let budgets = call
            .ctx
            .principal()
            .is_some_and(|p| !p.grants.budgets.is_empty());
        if limits.is_empty() && !budgets {
            return Ok(());
        }
        let c = &*self.counters;
        // Requests per second: take one from each bucket; on a refusal, give back the ones
        // already taken so a refused call costs nothing.
        let mut taken: Vec<(String, Rate)> = Vec::new();
        let mut refusal = None;
        for (scope, spec) in &limits {
            if let Some(rate) = rps_rate(spec) {
                let key = format!("rl:{scope}:rps");
                let a = c
                    .take(&key, rate, 1, false)
                    .await
                    .map_err(|e| unavailable(&e))?;
                if !a.allowed {
                    refusal = Some(throttled(
                        format!("{} requests per second for {scope}", rate.per_period),
                        a.retry_after,
                    ));
                    break;
                }
                taken.push((key, rate));
            }
        }
        // Tokens per minute, taken at the estimate now and settled from the real usage.
        let estimate = if limits.iter().any(|(_, l)| l.tpm.is_some()) {
            estimate_tokens(&call.op)
        } else {
            0
        };
        let mut tokens: Vec<(String, Rate)> = Vec::new();
        if refusal.is_none() {
            for (scope, spec) in &limits {
                if let Some(rate) = tpm_rate(spec) {
                    let key = format!("rl:{scope}:tpm");
                    let a = c
                        .take(
                            &key,
                            rate,
                            estimate.min(i64::try_from(rate.per_period).unwrap_or(i64::MAX)),
                            false,
                        )
                        .await
                        .map_err(|e| unavailable(&e))?;
                    if !a.allowed {
                        refusal = Some(throttled(
                            format!("{} tokens per minute for {scope}", rate.per_period),
                            a.retry_after,
                        ));
                        break;
                    }
                    tokens.push((key, rate));
                }
            }
        }
        // Budgets: a hard budget that is spent refuses the call.
        if refusal.is_none() {
            if let Some(p) = call.ctx.principal() {
                for (scope, budget) in &p.grants.budgets {
                    if budget.mode != BudgetMode::Hard {
                        continue;
                    }
                    let (spent, end) = spend(c, self.usage.as_deref(), scope, budget, 0)
                        .await
                        .map_err(|e| unavailable(&e))?;
                    if spent >= budget.limit_nanos() {
                        let who = match scope {
                            SpendScope::Key(k) => format!("key '{k}'"),
                            SpendScope::Team(t) => format!("team '{t}'"),
                        };
                        let wait =
                            Duration::from_millis(u64::try_from(end - now_ms()).unwrap_or(0));
                        refusal = Some(
                            Error::refusal(
                                ErrorKind::Throttling,
                                format!(
                                    "Budget '{}' of {who} is exhausted: ${:.6} spent of ${:.2} this period; it resets in {}.",
                                    budget.name,
                                    spent as f64 / 1e9,
                                    budget.limit_usd,
                                    humantime::format_duration(Duration::from_secs(wait.as_secs()))
                                ),
                            )
                            .with_code("budget_exceeded")
                            .with_retry_after(Some(wait.max(Duration::from_secs(1)))),
                        );
                        break;
                    }
                }
            }
        }
        // Calls in flight.
        let mut slots: Vec<String> = Vec::new();
        if refusal.is_none() {
            for (scope, spec) in &limits {
                if let Some(max) = spec.concurrent {
                    let key = format!("rl:{scope}:conc");
                    if c.enter(&key, max, SLOT_LEASE)
                        .await
                        .map_err(|e| unavailable(&e))?
                    {
                        slots.push(key);
                    } else {
                        refusal = Some(throttled(
                            format!("{max} concurrent calls for {scope}"),
                            Duration::from_secs(1),
                        ));
                        break;
                    }
                }
            }
        }
        if let Some(e) = refusal {
            let counters = Arc::clone(&self.counters);
            give_back(counters, taken, tokens, estimate, slots).await;
            return Err(e);
        }
        // When the call ends: free the slots and settle the token buckets from the real usage.
        if !slots.is_empty() || !tokens.is_empty() {
            let counters = Arc::clone(&self.counters);
            call.recorder().on_finish(Box::new(move |f| {
                let used = f.outcome.usage.map_or(0, |u| {
                    i64::from(u.input_tokens) + i64::from(u.output_tokens)
                });
                run_soon(async move {
                    for key in slots {
                        let _ = counters.leave(&key).await;
                    }
                    for (key, rate) in tokens {
                        let _ = counters.take(&key, rate, used - estimate, true).await;
                    }
                });
            }));
        }
        Ok(())
    }
}

/// Run `work` now if it can finish without waiting (in-process counters), else on a task (a
/// round trip to Redis): a finished call frees its slot at once, whatever the runtime.
pub(crate) fn run_soon(work: impl std::future::Future<Output = ()> + Send + 'static) {
    use futures::FutureExt as _;
    let mut work = Box::pin(work);
    if (&mut work).now_or_never().is_none() {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(work);
        }
    }
}

/// Undo what a refused admission took.
async fn give_back(
    counters: Arc<dyn Counters>,
    taken: Vec<(String, Rate)>,
    tokens: Vec<(String, Rate)>,
    estimate: i64,
    slots: Vec<String>,
) {
    for (key, rate) in taken {
        let _ = counters.take(&key, rate, -1, true).await;
    }
    for (key, rate) in tokens {
        let _ = counters.take(&key, rate, -estimate, true).await;
    }
    for key in slots {
        let _ = counters.leave(&key).await;
    }
}

#[async_trait]
impl Layer for Limits {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        self.admit(call).await?;
        next.run(call).await
    }
}
