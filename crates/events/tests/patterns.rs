//! The pattern conformance set (`patterns.json`), written from EventBridge's documented rules:
//! each case is a pattern with an event and whether it matches, or a pattern that is refused.

#![allow(clippy::unwrap_used)] // a test: failing loudly is right

use modelgate_events::{Pattern, RuleSet};
use serde_json::Value;

fn cases() -> Vec<Value> {
    serde_json::from_str(include_str!("patterns.json")).unwrap()
}

#[test]
fn the_conformance_set() {
    let cases = cases();
    let mut failures = Vec::new();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let parsed = Pattern::parse(&c["pattern"].to_string());
        if c.get("invalid").is_some() {
            match parsed {
                Ok(_) => failures.push(format!("{name}: accepted an invalid pattern")),
                Err(e) => assert!(e
                    .to_string()
                    .starts_with("Event pattern is not valid. Reason: ")),
            }
            continue;
        }
        match parsed {
            Err(e) => failures.push(format!("{name}: refused: {e}")),
            Ok(p) => {
                let want = c["matches"].as_bool().unwrap();
                if p.matches(&c["event"]) != want {
                    failures.push(format!("{name}: expected matches = {want}"));
                }
            }
        }
    }
    assert!(cases.len() >= 100, "{} cases", cases.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every valid pattern of the set in one indexed rule set gives, for every event of the set,
/// the same matches as testing each pattern alone.
#[test]
fn one_rule_set_agrees_with_each_pattern_alone() {
    let cases = cases();
    let patterns: Vec<(usize, Pattern)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Pattern::from_value(&c["pattern"]).ok().map(|p| (i, p)))
        .collect();
    let set = RuleSet::new(patterns.clone());
    for c in cases.iter().filter(|c| c.get("event").is_some()) {
        let alone: Vec<usize> = patterns
            .iter()
            .filter(|(_, p)| p.matches(&c["event"]))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(set.matches(&c["event"]), alone, "{}", c["name"]);
    }
}
