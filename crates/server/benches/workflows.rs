//! Workflow state transitions per second: Pass / Choice chains, no tasks, so the figure is the
//! engine and its persistence alone.
//!
//! - **engine**: a 1,000-state chain run by the deterministic core in memory (no store);
//! - **durable, one long chain**: the same chain started through the workflow service on
//!   SQLite (a temporary file, WAL): the execution row, its run and its 2,000+ history events
//!   written in one transaction;
//! - **durable, many short executions**: 1,000 executions of a 20-state chain, one after
//!   another (a transaction each).
//!
//! Runs on a current-thread runtime, so one core does all of it (pin the process with
//! `taskset -c 0` to be sure). `cargo bench -p modelgate-server --bench workflows`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

use std::sync::Arc;
use std::time::Instant;

use modelgate_core::workflows::WorkflowsConfig;
use modelgate_flows::engine::ExecutionInfo;
use modelgate_flows::{Definition, Run};
use modelgate_server::flows::Flows;
use modelgate_store::SqliteStore;
use serde_json::{json, Map, Value};

/// `n` states, alternately a Pass that counts and a Choice that checks the count.
fn chain(n: usize) -> String {
    let mut states = Map::new();
    for i in 0..n {
        let next = (i + 1 < n).then(|| format!("S{}", i + 1));
        let state = if i % 2 == 0 {
            let mut s = json!({"Type": "Pass", "Parameters": {"i.$": "States.MathAdd($.i, 1)"}});
            match &next {
                Some(nx) => s["Next"] = Value::from(nx.as_str()),
                None => s["End"] = Value::Bool(true),
            }
            s
        } else {
            match &next {
                Some(nx) => json!({"Type": "Choice", "Choices": [
                    {"Variable": "$.i", "NumericGreaterThanEquals": 0, "Next": nx}], "Default": nx}),
                None => json!({"Type": "Succeed"}),
            }
        };
        states.insert(format!("S{i}"), state);
    }
    json!({"StartAt": "S0", "States": states}).to_string()
}

fn info(i: usize) -> ExecutionInfo {
    ExecutionInfo {
        id: format!("arn:aws:states:us-east-1:000000000000:execution:bench:e{i}"),
        name: format!("e{i}"),
        role_arn: "arn:aws:iam::000000000000:role/bench".into(),
        machine_id: "arn:aws:states:us-east-1:000000000000:stateMachine:bench".into(),
        machine_name: "bench".into(),
        start_time: "2026-12-01T00:00:00.000Z".into(),
        token_prefix: "t.".into(),
        seed: 1,
    }
}

fn per_second(label: &str, transitions: u64, secs: f64) {
    println!(
        "{label}: {transitions} transitions in {secs:.3} s = {:.0} transitions/s",
        transitions as f64 / secs
    );
}

async fn durable(flows: &Arc<Flows>, text: &str, runs: usize, tag: &str) -> (u64, f64) {
    let started = Instant::now();
    let mut transitions = 0;
    for i in 0..runs {
        let (rec, _) = flows
            .start(
                "arn:aws:states:us-east-1:000000000000:stateMachine:bench",
                "bench",
                text,
                "arn:aws:iam::000000000000:role/bench",
                "bench",
                &format!("{tag}-{i}"),
                r#"{"i": 0}"#,
                json!({"principal": {"kind": "unrestricted", "id": "bench", "admin": false}}),
            )
            .await
            .unwrap();
        assert_eq!(rec.status, "SUCCEEDED");
        let run: Run = serde_json::from_value(rec.run).unwrap();
        transitions += run.transitions;
    }
    (transitions, started.elapsed().as_secs_f64())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let long = chain(1000);
    let def = Definition::parse(&long).unwrap();
    // Engine alone.
    let started = Instant::now();
    let mut transitions = 0;
    for i in 0..50 {
        let (run, _) = Run::start(&def, &info(i), json!({"i": 0}), 0);
        assert!(run.done());
        transitions += run.transitions;
    }
    per_second(
        "engine (in memory, 1,000-state chain ×50)",
        transitions,
        started.elapsed().as_secs_f64(),
    );

    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("mg-bench-flows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
        let flows = Arc::new(
            Flows::new(
                store,
                WorkflowsConfig::default(),
                modelgate_core::access::Site::default(),
                None,
                "bench".into(),
                None,
            )
            .unwrap(),
        );
        let (t, s) = durable(&flows, &long, 20, "long").await;
        per_second("durable on SQLite (1,000-state chain ×20)", t, s);
        let short = chain(20);
        let (t, s) = durable(&flows, &short, 1000, "short").await;
        per_second("durable on SQLite (20-state chain ×1,000 executions)", t, s);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
