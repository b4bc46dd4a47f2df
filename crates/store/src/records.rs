//! The records the stores keep.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An API key. The secret itself is never stored: only a keyed hash of it, the short prefix
/// it is looked up by, and the id of its SigV4 access key (whose secret is derived from the
/// server secret, never stored either).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable id (`key_…`), shown in lists, usage and audit.
    pub id: String,
    /// The lookup prefix of the current secret (unique).
    pub prefix: String,
    /// The keyed hash (HMAC-SHA-256, hex) of the current secret.
    pub hash: String,
    /// The SigV4 access key id of the current secret (unique).
    pub access_key_id: String,
    /// The team the key belongs to.
    pub team: Option<String>,
    /// When it was created.
    pub created_ms: i64,
    /// When it stops working.
    pub expires_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
    /// Everything else (name, roles, tags, metadata, policies, limits, budgets) as JSON; the
    /// gateway owns its shape.
    pub body: serde_json::Value,
}

/// A team: its settings (policies, limits, budgets) as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    /// Team id.
    pub id: String,
    /// When it was created or last changed.
    pub updated_ms: i64,
    /// Settings; the gateway owns their shape.
    pub body: serde_json::Value,
}

/// What one call used and cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// When the call ended.
    pub ts_ms: i64,
    /// The request id.
    pub request_id: String,
    /// The caller's key (or JWT subject).
    pub key_id: Option<String>,
    /// The caller's team.
    pub team: Option<String>,
    /// The model the client named.
    pub model_requested: String,
    /// The model that answered.
    pub model_served: Option<String>,
    /// The provider endpoint that answered.
    pub provider: Option<String>,
    /// The HTTP route.
    pub route: String,
    /// The pipeline operation (`converse`, `converse_stream`, `embed`, `count_tokens`).
    pub operation: String,
    /// The final HTTP status (499 for a client that went away).
    pub status: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: i64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: i64,
    /// Cost in nano-dollars.
    pub cost_nanos: i64,
    /// Time from receipt to the end of the call.
    pub latency_ms: i64,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Whether the client went away first.
    pub cancelled: bool,
}

/// A dimension usage can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The caller's team.
    Team,
    /// The caller's key.
    Key,
    /// The model the client named.
    Model,
    /// The UTC day (`day` is the Unix day number).
    Day,
}

/// Which usage to total.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// From (inclusive), Unix ms.
    pub from_ms: i64,
    /// To (exclusive), Unix ms.
    pub to_ms: i64,
    /// Dimensions to group by (none: one grand total).
    pub group_by: Vec<GroupBy>,
    /// Only this team.
    pub team: Option<String>,
    /// Only this key.
    pub key_id: Option<String>,
}

/// Totals of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The team, when grouped by team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The key, when grouped by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The model, when grouped by model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The Unix day number, when grouped by day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<i64>,
    /// Calls.
    pub requests: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cache-read input tokens.
    pub cache_read_tokens: i64,
    /// Cache-write input tokens.
    pub cache_write_tokens: i64,
    /// Cost in nano-dollars.
    pub cost_nanos: i64,
}

/// Whose spend to total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendScope {
    /// One key.
    Key(String),
    /// One team.
    Team(String),
}

/// One audit event: an admin action or an access decision. Never holds prompt content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When.
    pub ts_ms: i64,
    /// Who (key id, JWT subject, or `anonymous`).
    pub actor: String,
    /// What was attempted (`bedrock:InvokeModel`, `modelgate:CreateKey`, …).
    pub action: String,
    /// On what (a model ARN, a key id).
    pub resource: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// The policy statement that decided, when one did.
    pub statement: Option<String>,
    /// Source IP address.
    pub source_ip: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Extra detail (no secrets, no prompts).
    pub detail: serde_json::Value,
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// From (inclusive), Unix ms.
    pub from_ms: i64,
    /// To (exclusive), Unix ms.
    pub to_ms: i64,
    /// Only this actor.
    pub actor: Option<String>,
    /// At most this many (newest first).
    pub limit: i64,
}

/// The record of one call, for troubleshooting and forensics: who called, from where, what was
/// asked and how, what happened (status, error category, attempts, fallback), what it used and
/// cost, how long it took — and, when capture is enabled for it, the request and response
/// bodies with personal data masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Assigned by the store (increasing); 0 before the record is written.
    pub id: i64,
    /// When the call was received.
    pub ts_ms: i64,
    /// The request id.
    pub request_id: String,
    /// The W3C trace id of the call.
    pub trace_id: Option<String>,
    /// The caller's key (or JWT subject).
    pub key_id: Option<String>,
    /// The caller's team.
    pub team: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The API dialect (`openai`, `anthropic`, `bedrock`).
    pub dialect: String,
    /// The HTTP method and route.
    pub route: String,
    /// The pipeline operation, when the call reached the pipeline.
    pub operation: Option<String>,
    /// The model the client named.
    pub model_requested: Option<String>,
    /// The configured model the name was routed to.
    pub model_routed: Option<String>,
    /// The model that answered.
    pub model_served: Option<String>,
    /// The provider endpoint that answered.
    pub provider: Option<String>,
    /// The final HTTP status (499: the client went away).
    pub status: i64,
    /// The error category (`validation`, `auth`, `throttled`, `timeout`, `upstream`, …).
    pub error_category: Option<String>,
    /// The machine-readable error code.
    pub error_code: Option<String>,
    /// Upstream attempts, over every model tried.
    pub attempts: i64,
    /// Why the requested model did not answer.
    pub fallback_reason: Option<String>,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: i64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: i64,
    /// Cost in nano-dollars.
    pub cost_nanos: i64,
    /// Time from receipt to the end of the call, in microseconds.
    pub latency_us: i64,
    /// Time from receipt to the first content, in microseconds.
    pub ttft_us: Option<i64>,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Whether the client went away first.
    pub cancelled: bool,
    /// The request's settings (max tokens, temperature, tools, …): never content.
    pub params: serde_json::Value,
    /// The request body (canonical form, masked), when captured.
    pub request_body: Option<String>,
    /// The response body (canonical form, masked), when captured.
    pub response_body: Option<String>,
    /// How a virtual model was routed (router, version, rule, model, arm, tier, cascade).
    #[serde(default)]
    pub routing: Option<serde_json::Value>,
}

/// Which invocation records to read. Newest first, or — with `after_id`, for following new
/// records — oldest first.
#[derive(Debug, Clone)]
pub struct InvocationQuery {
    /// From (inclusive), Unix ms.
    pub from_ms: i64,
    /// To (exclusive), Unix ms.
    pub to_ms: i64,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this team.
    pub team: Option<String>,
    /// Only calls that asked for or were served by this model.
    pub model: Option<String>,
    /// Only statuses in this range (inclusive).
    pub status: (i64, i64),
    /// Only this error category.
    pub error_category: Option<String>,
    /// Only this request.
    pub request_id: Option<String>,
    /// Only calls that took at least this long (µs).
    pub min_latency_us: i64,
    /// Paging backwards: only records with a smaller id (newest first).
    pub before_id: Option<i64>,
    /// Following: only records with a larger id, oldest first.
    pub after_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

impl Default for InvocationQuery {
    fn default() -> Self {
        Self {
            from_ms: 0,
            to_ms: i64::MAX,
            key_id: None,
            team: None,
            model: None,
            status: (0, 999),
            error_category: None,
            request_id: None,
            min_latency_us: 0,
            before_id: None,
            after_id: None,
            limit: 100,
        }
    }
}

/// A GCRA rate: `per_period` units every `period`, with room for `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per period.
    pub per_period: u64,
    /// The period.
    pub period: Duration,
    /// Units that may be taken at once (at least 1).
    pub burst: u64,
}

impl Rate {
    /// Nanoseconds between two units at the steady rate.
    pub fn emission_ns(&self) -> u64 {
        let period = u64::try_from(self.period.as_nanos()).unwrap_or(u64::MAX);
        (period / self.per_period.max(1)).max(1)
    }

    /// How far ahead of now the theoretical arrival time may run (burst − 1 intervals).
    pub fn tolerance_ns(&self) -> u64 {
        self.emission_ns()
            .saturating_mul(self.burst.max(1).saturating_sub(1))
    }
}

/// What a rate limit said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Whether the units were taken.
    pub allowed: bool,
    /// When refused: how long until the same request would be allowed.
    pub retry_after: Duration,
    /// Units that could still be taken now.
    pub remaining: u64,
}

/// The GCRA step both counter backends run (the Redis one as a Lua script with the same
/// arithmetic): given the stored theoretical arrival time `tat` (ns, 0 when none), decide and
/// return the admission and the new `tat`.
pub fn gcra(rate: Rate, tat: u64, now: u64, cost: i64, force: bool) -> (Admission, u64) {
    let emission = rate.emission_ns();
    let tolerance = rate.tolerance_ns();
    let tat = tat.max(now);
    let increment = emission.saturating_mul(cost.unsigned_abs());
    let new_tat = if cost < 0 {
        tat.saturating_sub(increment).max(now)
    } else {
        tat.saturating_add(increment)
    };
    // The earliest moment this request fits: new_tat − (tolerance + emission) ≤ now.
    let allow_at = new_tat.saturating_sub(tolerance.saturating_add(emission));
    let remaining =
        |t: u64| (tolerance + emission).saturating_sub(t.saturating_sub(now)) / emission;
    if force || cost <= 0 || allow_at <= now {
        (
            Admission {
                allowed: true,
                retry_after: Duration::ZERO,
                remaining: remaining(new_tat),
            },
            new_tat,
        )
    } else {
        (
            Admission {
                allowed: false,
                retry_after: Duration::from_nanos(allow_at - now),
                remaining: remaining(tat),
            },
            tat,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_lets_a_burst_through_then_the_steady_rate() {
        let rate = Rate {
            per_period: 10,
            period: Duration::from_secs(1),
            burst: 20,
        };
        let mut tat = 0;
        let now = 1_000_000_000_000;
        let mut allowed = 0;
        for _ in 0..30 {
            let (a, t) = gcra(rate, tat, now, 1, false);
            tat = t;
            if a.allowed {
                allowed += 1;
            } else {
                assert!(a.retry_after > Duration::ZERO);
                assert!(a.retry_after <= Duration::from_millis(100));
            }
        }
        assert_eq!(allowed, 20);
        // 100 ms later exactly one more unit fits.
        let (a, t) = gcra(rate, tat, now + 100_000_000, 1, false);
        assert!(a.allowed);
        let (b, _) = gcra(rate, t, now + 100_000_000, 1, false);
        assert!(!b.allowed);
    }

    #[test]
    fn forced_and_negative_costs_settle_the_bucket() {
        let rate = Rate {
            per_period: 100,
            period: Duration::from_secs(60),
            burst: 100,
        };
        let now = 5_000_000_000;
        let (a, tat) = gcra(rate, 0, now, 80, false);
        assert!(a.allowed);
        let (a, tat2) = gcra(rate, tat, now, 50, false);
        assert!(!a.allowed);
        assert_eq!(tat2, tat);
        let (a, tat) = gcra(rate, tat, now, 50, true);
        assert!(a.allowed && a.remaining == 0);
        let (_, tat) = gcra(rate, tat, now, -60, true);
        let (a, _) = gcra(rate, tat, now, 30, false);
        assert!(a.allowed);
    }
}
