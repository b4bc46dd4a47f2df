//! Resilience settings and the small state machines the pipeline drives: retry backoff with
//! jitter, the retry budget, the circuit breaker and endpoint health.
//!
//! Each machine is deterministic: it is told the time (`tokio::time::Instant`, so tests run on a
//! paused clock) and, for jitter, a uniform sample; the gateway does the IO. Defaults are the
//! seeds' numbers (AWS SDK retry guidance, the circuit-breaker and Route 53 health-check
//! chapters) and every one is a configuration key.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// `[resilience]`: defaults for every model; a model's own tables replace them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// Retries with exponential backoff.
    pub retry: RetryConfig,
    /// Time limits.
    pub timeouts: TimeoutConfig,
    /// Circuit breaker per endpoint.
    pub breaker: BreakerConfig,
    /// Active health checks per endpoint.
    pub health: HealthConfig,
}

impl ResilienceConfig {
    /// Range checks; `at` names the table in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        self.retry.validate(&format!("{at}.retry"))?;
        self.timeouts.validate(&format!("{at}.timeouts"))?;
        self.breaker.validate(&format!("{at}.breaker"))?;
        self.health.validate(&format!("{at}.health"))
    }
}

fn check(ok: bool, at: &str, key: &str, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("key `{at}.{key}` {what}"))
    }
}

/// How the backoff is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Exactly the exponential backoff.
    None,
    /// Uniform between zero and the backoff ("full jitter").
    Full,
    /// The backoff plus up to `jitter_factor` of it.
    Bounded,
}

/// `retry`: exponential backoff with jitter, bounded by a retry budget.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retries). Default 3.
    pub max_attempts: u32,
    /// Wait before the first retry. Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Each further retry waits this many times longer. Default 2.
    pub backoff_factor: f64,
    /// No wait is longer, and a `Retry-After` longer than this is not waited for (the request
    /// falls back instead). Default `20s`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// `none`, `full` or `bounded`. Default `bounded`.
    pub jitter: Jitter,
    /// For `bounded` jitter: the largest extra wait, as a fraction of the backoff. Default 0.2.
    pub jitter_factor: f64,
    /// Retries may use at most this fraction of the model's first attempts. Default 0.2.
    pub budget_ratio: f64,
    /// Retries allowed beyond the ratio, so quiet models can still retry. Default 10.
    pub budget_burst: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            backoff_factor: 2.0,
            max_backoff: Duration::from_secs(20),
            jitter: Jitter::Bounded,
            jitter_factor: 0.2,
            budget_ratio: 0.2,
            budget_burst: 10,
        }
    }
}

impl RetryConfig {
    /// Range checks; `at` names the table in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        check(
            (1..=10).contains(&self.max_attempts),
            at,
            "max_attempts",
            "must be between 1 and 10",
        )?;
        check(
            self.backoff_factor.is_finite() && self.backoff_factor >= 1.0,
            at,
            "backoff_factor",
            "must be at least 1",
        )?;
        check(
            self.initial_backoff <= self.max_backoff,
            at,
            "initial_backoff",
            "must not exceed max_backoff",
        )?;
        check(
            (0.0..=1.0).contains(&self.jitter_factor),
            at,
            "jitter_factor",
            "must be between 0 and 1",
        )?;
        check(
            (0.0..=1.0).contains(&self.budget_ratio),
            at,
            "budget_ratio",
            "must be between 0 and 1",
        )
    }

    /// The exponential backoff before retry number `retry` (1 for the first retry), without
    /// jitter: `initial_backoff × backoff_factor^(retry-1)`, at most `max_backoff`.
    pub fn base_backoff(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_backoff.as_secs_f64() * self.backoff_factor.powi(exponent);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The wait before retry number `retry`, with jitter drawn from `sample` (uniform in
    /// `[0, 1)`), at most `max_backoff`.
    pub fn backoff(&self, retry: u32, sample: f64) -> Duration {
        let base = self.base_backoff(retry);
        let sample = sample.clamp(0.0, 1.0);
        let waited = match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(sample),
            Jitter::Bounded => base.mul_f64(1.0 + self.jitter_factor * sample),
        };
        waited.min(self.max_backoff)
    }
}

/// `timeouts`: per-request time limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// Streams: time allowed per attempt until the model's first output. A miss is retried
    /// like any upstream failure. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub first_token: Duration,
    /// Streams: longest gap allowed between two events once output started. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// The whole request, retries and fallbacks included, to the last byte. Default `120s`
    /// (long generation); short-task models do well with `30s`.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            first_token: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(120),
        }
    }
}

impl TimeoutConfig {
    /// Range checks; `at` names the table in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        for (key, d) in [
            ("first_token", self.first_token),
            ("idle", self.idle),
            ("total", self.total),
        ] {
            check(!d.is_zero(), at, key, "must be greater than 0")?;
        }
        Ok(())
    }
}

/// `breaker`: a circuit breaker per endpoint (model × provider).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Opens when at least this fraction of the window's requests failed. Default 0.5.
    pub failure_rate: f64,
    /// ... and the window holds at least this many requests. Default 10.
    pub min_requests: u32,
    /// The rolling window failures are counted over. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long it stays open before probing. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// While half-open, the fraction of requests let through as probes (the first request
    /// after the cool-down always is). Default 0.1.
    pub half_open_ratio: f64,
    /// Successful probes that close it. Default 3.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(30),
            half_open_ratio: 0.1,
            close_after: 3,
        }
    }
}

impl BreakerConfig {
    /// Range checks; `at` names the table in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        check(
            self.failure_rate > 0.0 && self.failure_rate <= 1.0,
            at,
            "failure_rate",
            "must be in (0, 1]",
        )?;
        check(
            self.half_open_ratio > 0.0 && self.half_open_ratio <= 1.0,
            at,
            "half_open_ratio",
            "must be in (0, 1]",
        )?;
        check(
            self.min_requests >= 1,
            at,
            "min_requests",
            "must be at least 1",
        )?;
        check(
            self.close_after >= 1,
            at,
            "close_after",
            "must be at least 1",
        )?;
        check(
            !self.window.is_zero(),
            at,
            "window",
            "must be greater than 0",
        )?;
        check(
            !self.cool_down.is_zero(),
            at,
            "cool_down",
            "must be greater than 0",
        )
    }
}

/// `health`: active health checks per endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Time between checks. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time a check may take. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks that take an endpoint out. Default 3.
    pub unhealthy_after: u32,
    /// Consecutive passed checks that put it back. Default 1.
    pub healthy_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            unhealthy_after: 3,
            healthy_after: 1,
        }
    }
}

impl HealthConfig {
    /// Range checks; `at` names the table in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        check(
            !self.interval.is_zero(),
            at,
            "interval",
            "must be greater than 0",
        )?;
        check(
            !self.timeout.is_zero(),
            at,
            "timeout",
            "must be greater than 0",
        )?;
        check(
            self.unhealthy_after >= 1 && self.healthy_after >= 1,
            at,
            "unhealthy_after",
            "and healthy_after must be at least 1",
        )
    }
}

/// A retry budget: every first attempt earns `budget_ratio` of a retry, every retry spends one,
/// and at most `budget_burst` are saved up. Over any stretch of traffic, retries stay below
/// `budget_ratio × requests + budget_burst`, so a failing upstream never sees a retry storm.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    balance: f64,
    ratio: f64,
    burst: f64,
}

impl RetryBudget {
    /// A full budget.
    pub fn new(config: &RetryConfig) -> Self {
        let burst = f64::from(config.budget_burst.max(1));
        Self {
            balance: burst,
            ratio: config.budget_ratio,
            burst,
        }
    }

    /// A request's first attempt.
    pub fn deposit(&mut self) {
        self.balance = (self.balance + self.ratio).min(self.burst);
    }

    /// Spend one retry; `false` when the budget is empty.
    pub fn withdraw(&mut self) -> bool {
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a breaker says about the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allow,
    /// Half-open: go ahead as a probe.
    Probe,
    /// Open (or half-open and not this one's turn): do not touch the upstream; it may be tried
    /// again after the wait.
    Reject(Duration),
}

/// The breaker's state, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests go to the fallback.
    Open,
    /// Some requests probe the upstream.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { seen: u64, successes: u32 },
}

/// A circuit breaker over a rolling window of outcomes, split into ten buckets.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    buckets: VecDeque<(Instant, u32, u32)>,
    opened: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            buckets: VecDeque::new(),
            opened: 0,
        }
    }

    /// Whether a request may go to the endpoint now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        if !self.config.enabled {
            return Admission::Allow;
        }
        if let State::Open { until } = self.state {
            if now < until {
                return Admission::Reject(until - now);
            }
            self.state = State::HalfOpen {
                seen: 0,
                successes: 0,
            };
        }
        match &mut self.state {
            State::Closed => Admission::Allow,
            State::HalfOpen { seen, .. } => {
                let every = (1.0 / self.config.half_open_ratio).round().max(1.0) as u64;
                let turn = *seen % every == 0;
                *seen += 1;
                if turn {
                    Admission::Probe
                } else {
                    Admission::Reject(Duration::ZERO)
                }
            }
            State::Open { .. } => Admission::Reject(Duration::ZERO),
        }
    }

    /// Record the outcome of an admitted request: `true` for success, `false` for a failure
    /// that says the endpoint is in trouble (the caller leaves the caller's own mistakes out).
    pub fn record(&mut self, now: Instant, success: bool) {
        if !self.config.enabled {
            return;
        }
        match &mut self.state {
            State::Open { .. } => {}
            State::HalfOpen { successes, .. } => {
                if !success {
                    self.open(now);
                } else {
                    *successes += 1;
                    if *successes >= self.config.close_after {
                        self.state = State::Closed;
                        self.buckets.clear();
                    }
                }
            }
            State::Closed => {
                self.count(now, success);
                let (ok, failed) = self.totals();
                let total = ok + failed;
                if total >= self.config.min_requests
                    && f64::from(failed) >= self.config.failure_rate * f64::from(total)
                {
                    self.open(now);
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.config.cool_down,
        };
        self.buckets.clear();
        self.opened += 1;
    }

    fn count(&mut self, now: Instant, success: bool) {
        let width = self.config.window / 10;
        while self.buckets.front().is_some_and(|(start, _, _)| {
            now.saturating_duration_since(*start) >= self.config.window
        }) {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((start, ok, failed)) if now.saturating_duration_since(*start) < width => {
                if success {
                    *ok += 1;
                } else {
                    *failed += 1;
                }
            }
            _ => self
                .buckets
                .push_back((now, u32::from(success), u32::from(!success))),
        }
    }

    fn totals(&self) -> (u32, u32) {
        self.buckets
            .iter()
            .fold((0, 0), |(o, f), (_, ok, failed)| (o + ok, f + failed))
    }

    /// The state now (an open breaker past its cool-down reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Successes and failures in the current window (closed state only).
    pub fn window_counts(&self) -> (u32, u32) {
        self.totals()
    }

    /// How many times it has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened
    }
}

/// An endpoint's health as active checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Whether requests may go to it.
    pub healthy: bool,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Passed checks in a row.
    pub consecutive_successes: u32,
    /// Checks run so far.
    pub checks: u64,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            healthy: true,
            consecutive_failures: 0,
            consecutive_successes: 0,
            checks: 0,
            last_error: None,
        }
    }
}

impl Health {
    /// Record a check; returns `Some(healthy)` when the endpoint changed state.
    pub fn record(&mut self, config: &HealthConfig, result: Result<(), String>) -> Option<bool> {
        self.checks += 1;
        let before = self.healthy;
        match result {
            Ok(()) => {
                self.consecutive_successes += 1;
                self.consecutive_failures = 0;
                if self.consecutive_successes >= config.healthy_after {
                    self.healthy = true;
                }
            }
            Err(reason) => {
                self.consecutive_failures += 1;
                self.consecutive_successes = 0;
                self.last_error = Some(reason);
                if self.consecutive_failures >= config.unhealthy_after {
                    self.healthy = false;
                }
            }
        }
        (self.healthy != before).then_some(self.healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_and_caps_at_20s() {
        let r = RetryConfig {
            jitter: Jitter::None,
            ..Default::default()
        };
        let waits: Vec<u128> = (1..=4).map(|n| r.backoff(n, 0.5).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800]);
        assert_eq!(r.backoff(20, 0.5), Duration::from_secs(20));
        assert_eq!(r.backoff(u32::MAX, 0.5), Duration::from_secs(20));
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        let bounded = RetryConfig::default();
        assert_eq!(bounded.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(bounded.backoff(1, 0.999_999).as_millis(), 119);
        let full = RetryConfig {
            jitter: Jitter::Full,
            ..Default::default()
        };
        assert_eq!(full.backoff(2, 0.0), Duration::ZERO);
        assert_eq!(full.backoff(2, 0.5), Duration::from_millis(100));
    }

    #[test]
    fn budget_limits_retries_to_a_fraction_of_traffic() {
        let mut b = RetryBudget::new(&RetryConfig::default());
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                retries += 1;
            }
        }
        // 10 saved up + 20% of 1000 requests.
        assert!((200..=210).contains(&retries), "{retries}");
    }

    #[test]
    fn breaker_opens_at_half_of_ten_then_half_opens_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for i in 0..9 {
            assert_eq!(b.admit(t0), Admission::Allow);
            b.record(t0, i % 2 == 0);
        }
        assert_eq!(
            b.state(t0),
            BreakerState::Closed,
            "9 requests are below the minimum"
        );
        b.record(t0, false);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.admit(t0), Admission::Reject(Duration::from_secs(30)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        // One in ten goes through as a probe.
        let admitted: Vec<Admission> = (0..10).map(|_| b.admit(later)).collect();
        assert_eq!(admitted[0], Admission::Probe);
        assert!(admitted[1..]
            .iter()
            .all(|a| *a == Admission::Reject(Duration::ZERO)));
        b.record(later, true);
        b.record(later, true);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        b.record(later, true);
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn failed_probe_reopens_and_old_failures_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..10 {
            b.record(t0, false);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(t1), Admission::Probe);
        b.record(t1, false);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert_eq!(b.times_opened(), 2);

        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..9 {
            b.record(t0, false);
        }
        // 31 s later the failures are out of the 30 s window: one more does not open it.
        b.record(t0 + Duration::from_secs(31), false);
        assert_eq!(b.state(t0 + Duration::from_secs(31)), BreakerState::Closed);
    }

    #[test]
    fn health_needs_three_failures_to_eject_and_one_pass_to_return() {
        let c = HealthConfig::default();
        let mut h = Health::default();
        assert_eq!(h.record(&c, Err("503".into())), None);
        assert_eq!(h.record(&c, Err("503".into())), None);
        assert_eq!(h.record(&c, Err("503".into())), Some(false));
        assert!(!h.healthy);
        assert_eq!(h.record(&c, Ok(())), Some(true));
        assert!(h.healthy);
    }
}
