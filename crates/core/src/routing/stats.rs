//! Live figures per served model for the metric-based strategies: peak-EWMA latency, a p95
//! over a sliding window, an error-rate EWMA and calls in flight. The chain reports every
//! upstream attempt here; the router reads them.
//!
//! Peak EWMA (as in Finagle and tower's `PeakEwma`): a sample above the estimate replaces it
//! at once, a lower one pulls it down gently, and the estimate decays towards zero while the
//! model gets no traffic — so a model that was slow is tried again after a while, and comes
//! back into use once it answers fast again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::registry::lock;

/// How the figures move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsConfig {
    /// Time constant of the latency and error-rate decay.
    pub decay: Duration,
    /// Samples older than this leave the p95 window.
    pub window: Duration,
    /// A failed attempt counts as at least this slow, so a model that fails fast does not
    /// attract traffic.
    pub error_penalty: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            window: Duration::from_secs(60),
            error_penalty: Duration::from_secs(2),
        }
    }
}

/// Samples kept for the p95.
const WINDOW_SAMPLES: usize = 256;

/// One model's live figures.
#[derive(Debug, Default)]
pub struct ModelStats {
    in_flight: AtomicU32,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Peak-EWMA latency, seconds, as of `stamp`.
    ewma: f64,
    /// Error-rate EWMA (0–1), as of `stamp`.
    errors: f64,
    stamp: Option<Instant>,
    /// (when, seconds) of recent attempts.
    recent: VecDeque<(Instant, f64)>,
    calls: u64,
}

/// What the admin API and the router see of a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Peak-EWMA latency now (decayed), milliseconds.
    pub ewma_ms: f64,
    /// 95th percentile of the window's attempts, milliseconds (`None` without samples).
    pub p95_ms: Option<f64>,
    /// Error-rate EWMA now (decayed), 0–1.
    pub error_rate: f64,
    /// Attempts in flight.
    pub in_flight: u32,
    /// Attempts in the window.
    pub samples: usize,
    /// Attempts ever.
    pub calls: u64,
}

/// An attempt in flight; report how it ended with [`InFlight::end`] (dropping it counts it
/// as neither).
pub struct InFlight<'a> {
    stats: &'a ModelStats,
    start: Instant,
    config: StatsConfig,
}

impl InFlight<'_> {
    /// The attempt ended, well or not.
    pub fn end(self, ok: bool) {
        let mut secs = self.start.elapsed().as_secs_f64();
        if !ok {
            secs = secs.max(self.config.error_penalty.as_secs_f64());
        }
        self.stats.observe(Instant::now(), secs, ok, self.config);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Inner {
    /// What is left of the figures recorded at `stamp` by `now` (0 before any sample).
    fn weight(&self, now: Instant, decay: Duration) -> f64 {
        self.stamp.map_or(0.0, |t| {
            let elapsed = now.saturating_duration_since(t).as_secs_f64();
            (-elapsed / decay.as_secs_f64().max(1e-3)).exp()
        })
    }
}

impl ModelStats {
    /// An attempt starts.
    pub fn begin(&self, config: StatsConfig) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: self,
            start: Instant::now(),
            config,
        }
    }

    /// Record one attempt of `secs` that ended at `now`.
    pub fn observe(&self, now: Instant, secs: f64, ok: bool, config: StatsConfig) {
        let mut s = lock(&self.inner);
        let w = s.weight(now, config.decay);
        s.ewma = if secs > s.ewma * w {
            secs
        } else {
            s.ewma * w + secs * (1.0 - w)
        };
        // Errors: at least a tenth of the weight goes to the newest attempt.
        let ew = w.min(0.9);
        s.errors = s.errors * ew + if ok { 0.0 } else { 1.0 - ew };
        s.stamp = Some(now);
        s.calls += 1;
        s.recent.push_back((now, secs));
        while s.recent.len() > WINDOW_SAMPLES {
            s.recent.pop_front();
        }
    }

    /// The decayed latency and error rate and the calls in flight now, without the p95 (what
    /// least-latency and least-busy read on every call: no sorting).
    pub fn load(&self, now: Instant, config: StatsConfig) -> StatsSnapshot {
        let s = lock(&self.inner);
        let w = s.weight(now, config.decay);
        StatsSnapshot {
            ewma_ms: s.ewma * w * 1e3,
            p95_ms: None,
            error_rate: s.errors * w,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            samples: s.recent.len(),
            calls: s.calls,
        }
    }

    /// The figures now, the p95 of the window included.
    pub fn snapshot(&self, now: Instant, config: StatsConfig) -> StatsSnapshot {
        let mut snap = self.load(now, config);
        let mut s = lock(&self.inner);
        while s
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > config.window)
        {
            s.recent.pop_front();
        }
        let mut window: Vec<f64> = s.recent.iter().map(|(_, v)| *v).collect();
        window.sort_by(f64::total_cmp);
        snap.p95_ms = (!window.is_empty()).then(|| {
            let rank = ((window.len() as f64) * 0.95).ceil() as usize;
            window[rank.clamp(1, window.len()) - 1] * 1e3
        });
        snap.samples = window.len();
        snap
    }
}

impl StatsSnapshot {
    /// The load-balancing cost: decayed latency times (calls in flight + 1), as tower's
    /// `PeakEwma` (a model never tried costs nothing, so it gets tried).
    pub fn cost(&self) -> f64 {
        self.ewma_ms * f64::from(self.in_flight + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peak_jumps_up_decays_down_and_errors_count_as_slow() {
        let c = StatsConfig {
            decay: Duration::from_secs(10),
            ..Default::default()
        };
        let s = ModelStats::default();
        let t0 = Instant::now();
        s.observe(t0, 0.1, true, c);
        assert!((s.snapshot(t0, c).ewma_ms - 100.0).abs() < 1e-6);
        // A slow sample replaces the estimate at once.
        s.observe(t0, 2.0, true, c);
        assert!((s.snapshot(t0, c).ewma_ms - 2000.0).abs() < 1e-6);
        // Idle for one time constant: about a third is left.
        let later = t0 + Duration::from_secs(10);
        let snap = s.snapshot(later, c);
        assert!(
            (snap.ewma_ms - 2000.0 / std::f64::consts::E).abs() < 1.0,
            "{snap:?}"
        );
        assert_eq!(snap.p95_ms, Some(2000.0));
        // A fast sample after a while pulls it down (by the weight the idle time gives it:
        // 2000·e⁻¹ + 100·(1 − e⁻¹) ≈ 799 ms).
        s.observe(later, 0.1, true, c);
        let pulled = s.snapshot(later, c).ewma_ms;
        assert!((pulled - 799.0).abs() < 1.0, "{pulled}");
        // Failures raise the error rate.
        for _ in 0..10 {
            s.observe(later, 2.0, false, c);
        }
        assert!(s.snapshot(later, c).error_rate > 0.6);
        let guard = s.begin(c);
        assert_eq!(s.snapshot(later, c).in_flight, 1);
        drop(guard);
        assert_eq!(s.snapshot(later, c).in_flight, 0);
        // The window forgets old samples.
        let much_later = later + Duration::from_secs(120);
        assert_eq!(s.snapshot(much_later, c).p95_ms, None);
    }
}
