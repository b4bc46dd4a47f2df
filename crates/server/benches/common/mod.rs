//! Shared by the in-process benchmarks: an instant model and percentiles.

use std::sync::Arc;
use std::time::Duration;

use modelgate_core::{ModelInfo, ModelPolicy, ServedModel};
use modelgate_providers::Provider;
use modelgate_testkit::scripted::ScriptedProvider;

/// A chat model served as `id` that answers "ok" at once.
#[allow(dead_code)] // not every benchmark serves models
pub fn instant_model(id: &str) -> ServedModel {
    ServedModel::new(
        ModelInfo {
            id: id.into(),
            owned_by: "bench".into(),
            kind: "chat",
            aliases: Vec::new(),
            format: None,
        },
        "scripted",
        ScriptedProvider::new("ok") as Arc<dyn Provider>,
        ModelPolicy::default(),
    )
}

/// The `p` quantile (0–1) of sorted `times`, in µs.
pub fn pct(times: &[Duration], p: f64) -> f64 {
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i].as_secs_f64() * 1e6
}

/// Print p50 / p90 / p99 of sorted `times` under `name`.
#[allow(dead_code)] // the overhead benchmarks print their own tables
pub fn report(name: &str, times: &[Duration]) {
    println!(
        "{name}: p50 {:.1} µs p90 {:.1} p99 {:.1}",
        pct(times, 0.5),
        pct(times, 0.9),
        pct(times, 0.99)
    );
}
