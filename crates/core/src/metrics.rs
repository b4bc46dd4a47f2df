//! Prometheus metrics, read from the one outcome of every call (an [`OutcomeSink`]) and, at
//! scrape time, from the endpoints' breaker and health state. Labels are bounded: model,
//! provider, dialect, route, operation, team, status and error category — never a request id or
//! a key id.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use modelgate_types::{ErrorKind, ErrorSource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::outcome::{Outcome, OutcomeSink};
use crate::registry::EndpointStatus;
use crate::resilience::BreakerState;
use crate::usage::PriceCatalog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    dialect: &'static str,
    route: String,
    operation: &'static str,
    model: String,
    provider: String,
    team: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    dialect: &'static str,
    operation: &'static str,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    team: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    model: String,
    team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    model: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    router: String,
    strategy: &'static str,
    rule: String,
    model: String,
    arm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardrailLabels {
    guardrail: String,
    source: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectionLabels {
    source: &'static str,
    policy: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    router: String,
    arm: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    dialect: &'static str,
    model: String,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    model: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    model: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    model: String,
    provider: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    state_machine: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    state_machine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    result: &'static str,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_seconds: Family<JobLabels, Histogram>,
    jobs_running: Gauge,
    webhooks: Family<WebhookLabels, Counter>,
    executions: Family<FlowLabels, Counter>,
    execution_seconds: Family<FlowLabels, Histogram>,
    transitions: Family<MachineLabels, Counter>,
    prices: PriceCatalog,
    requests: Family<CallLabels, Counter>,
    duration: Family<ModelLabels, Histogram>,
    ttft: Family<ModelLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    errors: Family<ErrorLabels, Counter>,
    attempts: Family<ModelLabels, Counter>,
    retries: Family<ModelLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    cache_saved: Family<CostLabels, Counter<f64, AtomicU64>>,
    cache_saved_tokens: Family<TokenLabels, Counter>,
    routing: Family<RouteLabels, Counter>,
    arm_duration: Family<ArmLabels, Histogram>,
    guardrail_actions: Family<GuardrailLabels, Counter>,
    guardrail_detections: Family<DetectionLabels, Counter>,
    guardrail_latency: Histogram,
    guardrail_hold: Histogram,
    in_flight: Gauge,
    breaker: Family<BreakerLabels, Gauge>,
    breaker_opened: Family<EndpointLabels, Counter>,
    healthy: Family<EndpointLabels, Gauge>,
    queued: Family<EndpointLabels, Gauge>,
    active: Family<EndpointLabels, Gauge>,
    slots: Family<EndpointLabels, Gauge>,
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Latency buckets in seconds: 1 ms to 2 min.
const LATENCY: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn histogram() -> Histogram {
    Histogram::new(LATENCY)
}

/// The error category of an outcome (bounded: validation, auth, throttled, timeout, upstream,
/// not_found, too_large, unavailable, internal, cancelled).
pub fn error_category(o: &Outcome) -> Option<&'static str> {
    if o.cancelled {
        return Some("cancelled");
    }
    let e = o.error.as_ref()?;
    if e.code == Some("content_filter") {
        return Some("guardrail");
    }
    Some(match e.kind {
        ErrorKind::Unauthenticated | ErrorKind::AccessDenied => "auth",
        ErrorKind::Throttling if e.source == ErrorSource::Gateway => "throttled",
        ErrorKind::Timeout => "timeout",
        _ if e.source == ErrorSource::Provider => "upstream",
        ErrorKind::Throttling => "throttled",
        ErrorKind::Validation => "validation",
        ErrorKind::NotFound => "not_found",
        ErrorKind::PayloadTooLarge => "too_large",
        ErrorKind::ServiceUnavailable => "unavailable",
        ErrorKind::ModelError => "upstream",
        ErrorKind::Internal => "internal",
    })
}

impl Metrics {
    /// Metrics pricing calls with `prices`.
    pub fn new(prices: PriceCatalog) -> Self {
        let mut registry = Registry::with_prefix("modelgate");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register("requests", "Requests by outcome", requests.clone());
        let duration =
            Family::<ModelLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from receipt to the end of the call (a stream's last byte)",
            duration.clone(),
        );
        let ttft =
            Family::<ModelLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from receipt to the first content sent",
            ttft.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by kind (input, output, cache_read, cache_write)",
            tokens.clone(),
        );
        let cost = Family::<CostLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cost_usd",
            "Cost in US dollars from the price catalog",
            cost.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Failed calls by category", errors.clone());
        let attempts = Family::<ModelLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts over every model tried",
            attempts.clone(),
        );
        let retries = Family::<ModelLabels, Counter>::default();
        registry.register(
            "retries",
            "Upstream attempts beyond the first",
            retries.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "fallbacks",
            "Calls the requested model did not answer, by reason",
            fallbacks.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Chat calls the response cache looked at, by result (hit, semantic-hit, miss, bypass, stale)",
            cache.clone(),
        );
        let cache_saved = Family::<CostLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cache_saved_usd",
            "What the calls answered from the cache would have cost, in USD",
            cache_saved.clone(),
        );
        let routing = Family::<RouteLabels, Counter>::default();
        registry.register(
            "routing_decisions",
            "Calls to virtual models by router, strategy or rule, model chosen and arm",
            routing.clone(),
        );
        let arm_duration =
            Family::<ArmLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "routing_arm_duration_seconds",
            "Call duration per router and arm (or chosen model), by outcome (ok, error), to compare arms",
            arm_duration.clone(),
        );
        let guardrail_actions = Family::<GuardrailLabels, Counter>::default();
        registry.register(
            "guardrail_actions",
            "Calls per guardrail applied, by the call's guardrail action (pass, masked, blocked) and the direction it acted on",
            guardrail_actions.clone(),
        );
        let guardrail_detections = Family::<DetectionLabels, Counter>::default();
        registry.register(
            "guardrail_detections",
            "Guardrail detections by policy (topic, content, word, pii, regex, grounding), direction and action (blocked, masked, detected)",
            guardrail_detections.clone(),
        );
        let guardrail_latency = histogram();
        registry.register(
            "guardrail_assessment_seconds",
            "Time a call spent in guardrail assessments",
            guardrail_latency.clone(),
        );
        let guardrail_hold = histogram();
        registry.register(
            "guardrail_stream_hold_seconds",
            "Synchronous stream guarding: time the first content was held before release (added time to first token)",
            guardrail_hold.clone(),
        );
        let cache_saved_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "cache_saved_tokens",
            "Tokens not spent thanks to cache hits",
            cache_saved_tokens.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        let breaker = Family::<BreakerLabels, Gauge>::default();
        registry.register(
            "breaker_state",
            "1 for each endpoint's current breaker state",
            breaker.clone(),
        );
        let breaker_opened = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "breaker_opened",
            "Times each endpoint's breaker opened",
            breaker_opened.clone(),
        );
        let healthy = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_healthy",
            "1 when the endpoint passes its health checks",
            healthy.clone(),
        );
        let queued = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "local_queue_depth",
            "Requests waiting for an embedded model's slot",
            queued.clone(),
        );
        let active = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "local_slots_in_use",
            "Embedded model slots generating now",
            active.clone(),
        );
        let slots = Family::<EndpointLabels, Gauge>::default();
        registry.register("local_slots", "Embedded model slots in all", slots.clone());
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "job_attempts",
            "Job attempts by kind (job, async_invoke, batch) and outcome (succeeded, failed, retried, dead, lease_lost)",
            jobs.clone(),
        );
        let job_seconds =
            Family::<JobLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "job_seconds",
            "Time from a job's submission to its end, by kind and outcome",
            job_seconds.clone(),
        );
        let jobs_running = Gauge::default();
        registry.register(
            "jobs_running",
            "Jobs this process is running",
            jobs_running.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by result (delivered, retry, given_up)",
            webhooks.clone(),
        );
        let executions = Family::<FlowLabels, Counter>::default();
        registry.register(
            "workflow_executions",
            "Workflow executions by state machine and status (started, succeeded, failed, timed_out, aborted)",
            executions.clone(),
        );
        let execution_seconds =
            Family::<FlowLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "workflow_execution_seconds",
            "Duration of ended workflow executions by state machine and status",
            execution_seconds.clone(),
        );
        let transitions = Family::<MachineLabels, Counter>::default();
        registry.register(
            "workflow_state_transitions",
            "States entered by workflow executions, by state machine",
            transitions.clone(),
        );
        Self {
            registry,
            executions,
            execution_seconds,
            transitions,
            jobs,
            job_seconds,
            jobs_running,
            webhooks,
            prices,
            requests,
            duration,
            ttft,
            tokens,
            cost,
            errors,
            attempts,
            retries,
            fallbacks,
            cache,
            cache_saved,
            cache_saved_tokens,
            routing,
            arm_duration,
            guardrail_actions,
            guardrail_detections,
            guardrail_latency,
            guardrail_hold,
            in_flight,
            breaker,
            breaker_opened,
            healthy,
            queued,
            active,
            slots,
            scrape: Mutex::new(()),
        }
    }

    /// A job attempt ended with `outcome`; `age` is the time since the job was submitted
    /// (observed when the job ended).
    pub fn job_attempt(&self, kind: &str, outcome: &'static str, age: Option<std::time::Duration>) {
        let labels = JobLabels {
            kind: kind.to_string(),
            outcome,
        };
        if let Some(age) = age {
            self.job_seconds
                .get_or_create(&labels)
                .observe(age.as_secs_f64());
        }
        self.jobs.get_or_create(&labels).inc();
    }

    /// A workflow execution started (`status` "started") or ended after `took`.
    pub fn execution(
        &self,
        machine: &str,
        status: &'static str,
        took: Option<std::time::Duration>,
    ) {
        let labels = FlowLabels {
            state_machine: machine.to_string(),
            status,
        };
        if let Some(t) = took {
            self.execution_seconds
                .get_or_create(&labels)
                .observe(t.as_secs_f64());
        }
        self.executions.get_or_create(&labels).inc();
    }

    /// A workflow execution entered `n` states.
    pub fn transitions(&self, machine: &str, n: u64) {
        if n > 0 {
            self.transitions
                .get_or_create(&MachineLabels {
                    state_machine: machine.to_string(),
                })
                .inc_by(n);
        }
    }

    /// A job started (`+1`) or ended (`-1`) in this process.
    pub fn job_running(&self, delta: i64) {
        self.jobs_running.inc_by(delta);
    }

    /// A webhook delivery attempt ended with `result`.
    pub fn webhook(&self, result: &'static str) {
        self.webhooks.get_or_create(&WebhookLabels { result }).inc();
    }

    /// A request started (every request ends in exactly one outcome, which ends it here).
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// The text exposition, with the endpoints' current breaker and health state.
    pub fn render(&self, endpoints: &[EndpointStatus]) -> String {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in endpoints {
            for state in ["closed", "open", "half_open"] {
                let now = match e.breaker {
                    BreakerState::Closed => "closed",
                    BreakerState::Open => "open",
                    BreakerState::HalfOpen => "half_open",
                };
                self.breaker
                    .get_or_create(&BreakerLabels {
                        model: e.model.clone(),
                        provider: e.provider.clone(),
                        state,
                    })
                    .set(i64::from(state == now));
            }
            let labels = EndpointLabels {
                model: e.model.clone(),
                provider: e.provider.clone(),
            };
            let opened = self.breaker_opened.get_or_create(&labels);
            opened.inc_by(e.times_opened.saturating_sub(opened.get()));
            self.healthy
                .get_or_create(&labels)
                .set(i64::from(e.health.healthy));
            if let Some(load) = e.load {
                let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
                self.queued.get_or_create(&labels).set(n(load.queued));
                self.active.get_or_create(&labels).set(n(load.active));
                self.slots.get_or_create(&labels).set(n(load.slots));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl OutcomeSink for Metrics {
    /// Label sets are built once per call and reused across families; the fixed vocabulary
    /// (dialect, operation, status, kind, category, reason) is static text, not allocated.
    fn record(&self, o: &Outcome) {
        self.in_flight.dec();
        let dialect = o.ctx.dialect().as_str();
        let operation = o.operation.map_or("none", |op| op.as_str());
        // Bounded labels only: the routed model's configured id (never the name a client made
        // up), and the matched route (an unmatched path is `unmatched`).
        let model = o.model_routed.clone().unwrap_or_else(|| "unrouted".into());
        let route = if o.operation.is_none() && o.status == 404 {
            "unmatched".to_string()
        } else {
            o.ctx.route().to_string()
        };
        let team = o
            .ctx
            .principal()
            .and_then(|p| p.team.clone())
            .unwrap_or_default();
        let call = CallLabels {
            dialect,
            route,
            operation,
            model,
            provider: o.provider.clone().unwrap_or_default(),
            team,
            status: o.status,
        };
        self.requests.get_or_create(&call).inc();
        let CallLabels { model, team, .. } = call;
        if let Some(category) = error_category(o) {
            self.errors
                .get_or_create(&ErrorLabels {
                    dialect,
                    model: model.clone(),
                    category,
                })
                .inc();
        }
        if o.operation.is_none() {
            return;
        }
        let labels = ModelLabels {
            dialect,
            operation,
            model,
        };
        self.duration
            .get_or_create(&labels)
            .observe(o.duration.as_secs_f64());
        if let Some(t) = o.time_to_first_token {
            self.ttft.get_or_create(&labels).observe(t.as_secs_f64());
        }
        if o.attempts > 0 {
            self.attempts
                .get_or_create(&labels)
                .inc_by(u64::from(o.attempts));
        }
        if o.attempts > 1 {
            self.retries
                .get_or_create(&labels)
                .inc_by(u64::from(o.attempts - 1));
        }
        let model = labels.model;
        if let Some(d) = &o.routing {
            let arm = d.arm.clone().unwrap_or_else(|| d.model.clone());
            self.routing
                .get_or_create(&RouteLabels {
                    router: d.router.clone(),
                    strategy: d.strategy,
                    rule: d.rule.clone().unwrap_or_default(),
                    model: d.model.clone(),
                    arm: arm.clone(),
                })
                .inc();
            self.arm_duration
                .get_or_create(&ArmLabels {
                    router: d.router.clone(),
                    arm,
                    outcome: if o.error.is_some() || o.cancelled {
                        "error"
                    } else {
                        "ok"
                    },
                })
                .observe(o.duration.as_secs_f64());
            for side in &d.side_calls {
                let usd = self.prices.cost_of(&side.model, &side.usage) as f64 / 1e9;
                if usd > 0.0 {
                    self.cost
                        .get_or_create(&CostLabels {
                            model: side.model.clone(),
                            team: team.clone(),
                        })
                        .inc_by(usd);
                }
            }
        }
        if let Some(g) = &o.guardrail {
            for name in &g.guardrails {
                self.guardrail_actions
                    .get_or_create(&GuardrailLabels {
                        guardrail: name.clone(),
                        source: g.source.map_or("", crate::guardrails::Source::as_str),
                        action: g.action(),
                    })
                    .inc();
            }
            for (source, f) in &g.fired {
                self.guardrail_detections
                    .get_or_create(&DetectionLabels {
                        source: source.as_str(),
                        policy: f.policy,
                        action: match f.action {
                            "BLOCKED" => "blocked",
                            "ANONYMIZED" => "masked",
                            _ => "detected",
                        },
                    })
                    .inc();
            }
            self.guardrail_latency.observe(g.latency.as_secs_f64());
            if let Some(h) = g.stream_hold {
                self.guardrail_hold.observe(h.as_secs_f64());
            }
        }
        if let Some(reason) = o.fallback_reason {
            self.fallbacks
                .get_or_create(&FallbackLabels {
                    model: model.clone(),
                    reason,
                })
                .inc();
        }
        if let Some(c) = &o.cache {
            self.cache
                .get_or_create(&CacheLabels {
                    model: model.clone(),
                    status: c.status.as_str(),
                })
                .inc();
            if c.saved_nanos > 0 {
                self.cache_saved
                    .get_or_create(&CostLabels {
                        model: model.clone(),
                        team: team.clone(),
                    })
                    .inc_by(c.saved_nanos as f64 / 1e9);
            }
            if let Some(u) = c.saved_usage {
                for (kind, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                    if n > 0 {
                        self.cache_saved_tokens
                            .get_or_create(&TokenLabels {
                                model: model.clone(),
                                team: team.clone(),
                                kind,
                            })
                            .inc_by(u64::from(n));
                    }
                }
            }
        }
        let Some(u) = o.usage else {
            return;
        };
        let usd = self.prices.cost(o) as f64 / 1e9;
        let mut tokens = TokenLabels {
            model,
            team,
            kind: "input",
        };
        for (kind, n) in [
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cache_read", u.cache_read_input_tokens),
            ("cache_write", u.cache_write_input_tokens),
        ] {
            if n > 0 {
                tokens.kind = kind;
                self.tokens.get_or_create(&tokens).inc_by(u64::from(n));
            }
        }
        if usd > 0.0 {
            let TokenLabels { model, team, .. } = tokens;
            self.cost
                .get_or_create(&CostLabels { model, team })
                .inc_by(usd);
        }
    }
}
