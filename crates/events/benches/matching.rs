//! Events matched per second against 1,000 rules on one bus.
//!
//! The rules are a realistic mix: 600 that name a source and a detail type (the seed's
//! `com.enterprise.application` + `DocumentUploaded` shape, each with its own source), 200
//! that add a numeric range or a prefix on the detail, 100 with an `$or`, and 100 with no
//! exact value at all (prefix / wildcard / anything-but only), which every event is tested
//! against. The events: a third match one rule, a third match several, a third none.
//! Single thread. `cargo bench -p modelgate-events --bench matching`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::time::Instant;

use modelgate_events::{Pattern, RuleSet};
use serde_json::{json, Value};

fn rules() -> Vec<(usize, Pattern)> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let p = match i {
            0..=599 => {
                json!({"source": [format!("com.enterprise.app{i}")], "detail-type": ["DocumentUploaded", "CustomerInteraction"]})
            }
            600..=699 => {
                json!({"source": [format!("com.enterprise.app{}", i - 600)], "detail": {"pages": [{"numeric": [">", i - 600, "<=", 1000]}]}})
            }
            700..=799 => {
                json!({"detail-type": [format!("Kind{i}")], "detail": {"region": [{"prefix": "ap-"}]}})
            }
            800..=899 => {
                json!({"$or": [{"source": [format!("com.partner.p{i}")]}, {"detail": {"customer": [format!("c{i}")]}}]})
            }
            _ => {
                json!({"detail": {"key": [{"wildcard": format!("uploads/{i}/*.csv")}], "state": [{"anything-but": "deleted"}]}})
            }
        };
        out.push((i, Pattern::from_value(&p).unwrap()));
    }
    out
}

fn event(n: usize) -> Value {
    let app = n % 900;
    json!({
        "version": "0", "id": format!("e{n}"), "account": "000000000000", "region": "us-east-1",
        "time": "2026-12-07T00:00:00Z", "resources": ["arn:aws:s3:::docs"],
        "source": match n % 3 { 0 => format!("com.enterprise.app{app}"), 1 => format!("com.partner.p{}", 800 + n % 100), _ => "com.other".to_string() },
        "detail-type": if n.is_multiple_of(2) { "DocumentUploaded" } else { "Other" },
        "detail": {"pages": n % 50, "region": "ap-southeast-1", "customer": format!("c{}", n % 1000),
                   "key": format!("uploads/{}/q3.csv", 900 + n % 100), "state": "new",
                   "text": "a paragraph of the document that no pattern names, as real events carry"}
    })
}

fn main() {
    let started = Instant::now();
    let set = RuleSet::new(rules());
    println!("compiled 1,000 rules in {:?}", started.elapsed());
    let events: Vec<Value> = (0..10_000).map(event).collect();
    for e in events.iter().take(1_000) {
        std::hint::black_box(set.matches(e)); // warm up
    }
    for round in 0..3 {
        let started = Instant::now();
        let mut matched = 0usize;
        for e in &events {
            matched += set.matches(e).len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "round {round}: {} events in {secs:.3} s = {:.0} events/s ({:.2} µs each), {matched} matches",
            events.len(),
            events.len() as f64 / secs,
            secs * 1e6 / events.len() as f64
        );
    }
    // The share of walking the JSON: the same events against an empty set.
    let empty: RuleSet<usize> = RuleSet::new(Vec::new());
    let started = Instant::now();
    for e in &events {
        std::hint::black_box(empty.matches(e));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "walking the event alone (no rules, nothing kept): {:.2} µs per event",
        secs * 1e6 / events.len() as f64
    );
    // Against testing every rule alone (no index), for scale.
    let alone = rules();
    let started = Instant::now();
    let mut n = 0usize;
    for e in events.iter().take(1_000) {
        n += alone.iter().filter(|(_, p)| p.matches(e)).count();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "without the index: {:.0} events/s ({n} matches in 1,000 events)",
        1_000.0 / secs
    );
}
