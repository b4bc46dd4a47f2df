//! The ASL conformance set: definitions with inputs, scripted task answers and the expected
//! result, history and (on a paused clock) elapsed time. Cases are JSON files in `tests/asl/`,
//! written from the examples and rules of the Step Functions documentation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};

use modelgate_flows::engine::ExecutionInfo;
use modelgate_flows::{Action, Definition, Failure, Run, TaskCall};
use serde_json::{json, Value};

struct Outcome {
    run: Run,
    events: Vec<modelgate_flows::HistoryEvent>,
    elapsed_ms: i64,
    calls: Vec<TaskCall>,
}

/// Run a case: tasks answer from the script of their state (in order; with no script a task
/// echoes its parameters; `{"hang": true}` never answers); the clock jumps to the next wake-up
/// whenever nothing else can happen.
fn execute(def: &Definition, input: Value, script: &BTreeMap<String, Vec<Value>>) -> Outcome {
    let info = ExecutionInfo {
        id: "arn:aws:states:us-east-1:000000000000:execution:Machine:exec-1".into(),
        name: "exec-1".into(),
        role_arn: "arn:aws:iam::000000000000:role/r".into(),
        machine_id: "arn:aws:states:us-east-1:000000000000:stateMachine:Machine".into(),
        machine_name: "Machine".into(),
        start_time: "2026-12-01T00:00:00.000Z".into(),
        token_prefix: "tok-".into(),
        seed: 42,
    };
    let start = 1_764_547_200_000i64; // 2025-12-01T00:00:00Z
    let mut now = start;
    let (mut run, mut actions) = Run::start(def, &info, input, now);
    let mut events = run.take_events();
    let mut pending: VecDeque<TaskCall> = VecDeque::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    let mut calls = Vec::new();
    for _ in 0..100_000 {
        for a in actions.drain(..) {
            match a {
                Action::Run(c) => {
                    calls.push(c.clone());
                    pending.push_back(c);
                }
                Action::Cancel(t) => pending.retain(|c| c.task != t),
            }
        }
        if run.done() {
            break;
        }
        if let Some(call) = pending.pop_front() {
            let n = used.entry(call.state.clone()).or_default();
            let answer = script
                .get(&call.state)
                .and_then(|s| s.get(*n).or(s.last()))
                .cloned();
            *n += 1;
            let result = match answer {
                None => Ok(call.params.clone()),
                Some(a) if a.get("hang").is_some() => continue,
                Some(a) if a.get("error").is_some() => Err(Failure::new(
                    a["error"].as_str().unwrap_or_default(),
                    a["cause"].as_str().unwrap_or_default(),
                )),
                Some(a) => Ok(a["ok"].clone()),
            };
            if call.token.is_some() {
                run.task_submitted(call.task, json!({}), now);
            }
            actions = run.task_done(def, call.task, result, now);
            events.extend(run.take_events());
            continue;
        }
        let wake = run
            .next_wake()
            .expect("a running execution with nothing to do never wakes");
        now = now.max(wake);
        actions = run.advance(def, now);
        events.extend(run.take_events());
    }
    Outcome {
        run,
        events,
        elapsed_ms: now - start,
        calls,
    }
}

fn check_case(file: &str, case: &Value) {
    let name = format!("{file}: {}", case["name"].as_str().unwrap_or("?"));
    let def = match Definition::from_value(&case["definition"]) {
        Ok(d) => d,
        Err(e) => {
            let want = case["expect"]["invalid"].as_str();
            assert_eq!(
                Some(e.location.as_str()),
                want,
                "{name}: the definition was refused: {e}"
            );
            return;
        }
    };
    assert!(
        case["expect"].get("invalid").is_none(),
        "{name}: the definition should have been refused"
    );
    let script: BTreeMap<String, Vec<Value>> =
        serde_json::from_value(case.get("tasks").cloned().unwrap_or(json!({}))).expect("tasks");
    let o = execute(&def, case["input"].clone(), &script);
    let expect = &case["expect"];
    assert_eq!(
        o.run.status.as_str(),
        expect["status"].as_str().unwrap_or("SUCCEEDED"),
        "{name}: status (error {:?})",
        o.run.error
    );
    if let Some(out) = expect.get("output") {
        assert_eq!(o.run.output.as_ref(), Some(out), "{name}: output");
    }
    if let Some(e) = expect.get("error") {
        assert_eq!(
            o.run.error.as_ref().map(|f| f.error.as_str()),
            e.as_str(),
            "{name}: error ({:?})",
            o.run.error
        );
    }
    if let Some(c) = expect.get("cause") {
        assert_eq!(
            o.run.error.as_ref().map(|f| f.cause.as_str()),
            c.as_str(),
            "{name}: cause"
        );
    }
    if let Some(c) = expect.get("cause_contains").and_then(Value::as_str) {
        let cause = o
            .run
            .error
            .as_ref()
            .map(|f| f.cause.clone())
            .unwrap_or_default();
        assert!(
            cause.contains(c),
            "{name}: cause {cause:?} should contain {c:?}"
        );
    }
    if let Some(ms) = expect.get("elapsed_ms") {
        assert_eq!(
            Some(o.elapsed_ms),
            ms.as_i64(),
            "{name}: elapsed time on the paused clock"
        );
    }
    if let Some(n) = expect.get("task_calls") {
        assert_eq!(Some(o.calls.len() as u64), n.as_u64(), "{name}: task calls");
    }
    if let Some(p) = expect.get("first_params") {
        assert_eq!(
            o.calls.first().map(|c| &c.params),
            Some(p),
            "{name}: parameters of the first task"
        );
    }
    // Event ids count up from 1 and every event points back to an earlier one.
    for (i, e) in o.events.iter().enumerate() {
        assert_eq!(e.id, i as u64 + 1, "{name}: event ids");
        assert!(e.previous_event_id < e.id, "{name}: previous event id");
    }
    let kinds: Vec<&str> = o.events.iter().map(|e| e.kind.as_str()).collect();
    if let Some(want) = expect.get("events").and_then(Value::as_array) {
        let want: Vec<&str> = want.iter().filter_map(Value::as_str).collect();
        assert_eq!(kinds, want, "{name}: history");
    }
    if let Some(want) = expect.get("events_include").and_then(Value::as_array) {
        for w in want.iter().filter_map(Value::as_str) {
            assert!(kinds.contains(&w), "{name}: history lacks {w}: {kinds:?}");
        }
    }
}

#[test]
fn asl_conformance_set() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asl");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/asl")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut n = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let cases: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for c in &cases {
            check_case(
                &f.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                c,
            );
            n += 1;
        }
    }
    assert!(n >= 40, "the conformance set has {n} cases");
}
