//! The deterministic core of an execution.
//!
//! A [`Run`] is everything an execution is: its threads (the top level, and one per running
//! Parallel branch or Map iteration), each at a state and a step; its variables; its status.
//! It changes only through the methods here, each given the time (`now_ms`): [`Run::start`],
//! [`Run::advance`] (the clock moved: waits, retry backoffs and timeouts may be due),
//! [`Run::task_done`], [`Run::task_submitted`], [`Run::heartbeat`] and [`Run::stop`]. Each
//! appends Step Functions history events to [`Run::events`] and returns the [`Action`]s the
//! runtime must perform (run a task, cancel one). Randomness (retry jitter, task tokens,
//! `States.UUID` aside) comes from a seed kept in the run, so the same events give the same
//! run. The runtime persists the run and its new events together after every change; a
//! restarted server loads the run and re-runs the tasks it had not recorded as done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::choice;
use crate::definition::{Definition, Kind, MapSpec, Secs, State, Text, WaitFor};
use crate::errors::{self, Failure};
use crate::jsonata;
use crate::paths::{self, apply_io_path, apply_result_path, select_or_fail, Scope};

/// The largest state input or output (256 KiB), as in Step Functions.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Ended with an output.
    Succeeded,
    /// Ended with an error.
    Failed,
    /// Ran longer than the definition's `TimeoutSeconds`.
    TimedOut,
    /// Stopped by `StopExecution`.
    Aborted,
}

impl RunStatus {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::TimedOut => "TIMED_OUT",
            Self::Aborted => "ABORTED",
        }
    }
}

/// One history event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// 1, 2, 3… in the execution.
    pub id: u64,
    /// The event before it in the same thread (0 for the first).
    pub previous_event_id: u64,
    /// When (Unix milliseconds).
    pub timestamp_ms: i64,
    /// `TaskScheduled`, `PassStateEntered`, …
    pub kind: String,
    /// The `…EventDetails` field name.
    pub details_field: String,
    /// Its value.
    pub details: Value,
}

/// A task the runtime must run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCall {
    /// The task's id in this run (results come back with it).
    pub task: u64,
    /// The state that runs it.
    pub state: String,
    /// The resource ARN as written.
    pub resource: String,
    /// Its parameters (after the payload template).
    pub params: Value,
    /// The task token, for `.waitForTaskToken` resources.
    pub token: Option<String>,
    /// `TimeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `HeartbeatSeconds`.
    pub heartbeat_seconds: Option<u64>,
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Run a task and report with [`Run::task_done`] (and, for `.waitForTaskToken`, with
    /// [`Run::task_submitted`] once the request is out).
    Run(TaskCall),
    /// Stop a task whose result is no longer wanted (timed out, its branch failed, the
    /// execution stopped).
    Cancel(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Step {
    /// About to run the state (`again`: after a retry's backoff, no new Entered event).
    Enter { again: bool },
    /// A Wait state waiting; `output` goes on when it ends.
    Wait { until_ms: i64, output: Value },
    /// A task is out.
    Task {
        call: TaskCall,
        deadline_ms: Option<i64>,
        heartbeat_due_ms: Option<i64>,
        submitted: bool,
    },
    /// Waiting before a retry.
    Backoff { until_ms: i64 },
    /// A Parallel or Map state waiting for its branches / iterations.
    Join(Box<Join>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Join {
    map: bool,
    results: Vec<Option<Value>>,
    running: Vec<u64>,
    /// Map: the iteration inputs not started yet (from `next`).
    inputs: Vec<Value>,
    items: Vec<Value>,
    next: usize,
    max: usize,
    failures: usize,
    tolerated_count: Option<usize>,
    tolerated_pct: Option<f64>,
    last_failure: Option<Failure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thread {
    parent: Option<u64>,
    index: usize,
    scope: Vec<(String, usize)>,
    state: String,
    input: Value,
    vars: Map<String, Value>,
    entered_ms: i64,
    prev_event: u64,
    retries: Vec<u32>,
    item: Option<Value>,
    step: Step,
}

/// The whole state of one execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Where it is.
    pub status: RunStatus,
    /// The output, once succeeded.
    pub output: Option<Value>,
    /// The error, once failed, timed out or aborted.
    pub error: Option<Failure>,
    /// State transitions so far.
    pub transitions: u64,
    /// The execution and state machine parts of the context object (`$$`).
    context: Value,
    threads: BTreeMap<u64, Thread>,
    next_id: u64,
    last_event: u64,
    deadline_ms: Option<i64>,
    seed: u64,
    token_prefix: String,
    /// History events not yet taken by the runtime.
    #[serde(skip)]
    pub events: Vec<HistoryEvent>,
}

/// The identity of an execution, for the context object.
#[derive(Debug, Clone)]
pub struct ExecutionInfo {
    /// The execution ARN.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The role ARN given at creation.
    pub role_arn: String,
    /// The state machine ARN.
    pub machine_id: String,
    /// The state machine name.
    pub machine_name: String,
    /// Start time, RFC 3339.
    pub start_time: String,
    /// What task tokens start with (the runtime finds the execution from it).
    pub token_prefix: String,
    /// The seed of the run's randomness.
    pub seed: u64,
}

fn details_field(kind: &str) -> String {
    let base = if kind.ends_with("StateEntered") && kind != "ExecutionStarted" {
        "stateEntered"
    } else if kind.ends_with("StateExited") {
        "stateExited"
    } else {
        ""
    };
    if !base.is_empty() {
        return format!("{base}EventDetails");
    }
    let mut c = kind.chars();
    let first = c
        .next()
        .map(|f| f.to_ascii_lowercase().to_string())
        .unwrap_or_default();
    format!("{first}{}EventDetails", c.as_str())
}

fn secs_of(s: &Secs, scope: &Scope<'_>, field: &str) -> Result<f64, Failure> {
    match s {
        Secs::Fixed(n) => Ok(*n),
        Secs::Expr(e) => {
            let states = ata_states(scope.input, scope.context);
            let v = jsonata::eval(e, &states, scope.vars)?;
            v.as_f64().filter(|n| *n >= 0.0).ok_or_else(|| {
                Failure::new(
                    jsonata::QUERY_EVALUATION_ERROR,
                    format!(
                        "The JSONata expression '{e}' of {field} must give a non-negative number, but gave {}",
                        paths::shorten(&v)
                    ),
                )
            })
        }
        Secs::Path(p) => {
            let v = select_or_fail(p, scope)?;
            v.as_f64().filter(|n| *n >= 0.0).ok_or_else(|| {
                Failure::runtime(format!(
                    "The {field}Path '{p}' must point to a non-negative number, but it was {}",
                    paths::shorten(&v)
                ))
            })
        }
    }
}

impl Run {
    /// A new execution of `def` with `input`: `ExecutionStarted`, then the first state.
    pub fn start(
        def: &Definition,
        info: &ExecutionInfo,
        input: Value,
        now_ms: i64,
    ) -> (Self, Vec<Action>) {
        let context = json!({
            "Execution": {
                "Id": info.id,
                "Input": input,
                "Name": info.name,
                "RoleArn": info.role_arn,
                "StartTime": info.start_time,
                "RedriveCount": 0,
            },
            "StateMachine": {"Id": info.machine_id, "Name": info.machine_name},
        });
        let mut run = Self {
            status: RunStatus::Running,
            output: None,
            error: None,
            transitions: 0,
            context,
            threads: BTreeMap::new(),
            next_id: 1,
            last_event: 0,
            deadline_ms: def.timeout_seconds.map(|s| {
                now_ms.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
            }),
            seed: info.seed,
            token_prefix: info.token_prefix.clone(),
            events: Vec::new(),
        };
        let started = run.event(
            0,
            now_ms,
            "ExecutionStarted",
            json!({"input": input.to_string(), "inputDetails": {"truncated": false}, "roleArn": info.role_arn}),
        );
        run.threads.insert(
            0,
            Thread {
                parent: None,
                index: 0,
                scope: Vec::new(),
                state: def.top.start_at.clone(),
                input,
                vars: Map::new(),
                entered_ms: now_ms,
                prev_event: started,
                retries: Vec::new(),
                item: None,
                step: Step::Enter { again: false },
            },
        );
        let actions = run.advance(def, now_ms);
        (run, actions)
    }

    /// The execution's input.
    pub fn input(&self) -> &Value {
        &self.context["Execution"]["Input"]
    }

    /// Whether the execution has ended.
    pub fn done(&self) -> bool {
        self.status != RunStatus::Running
    }

    /// Tasks out and not yet answered that a restarted runtime must run again (those sent
    /// for a task token only wait for it).
    pub fn pending_tasks(&self) -> Vec<TaskCall> {
        self.threads
            .values()
            .filter_map(|t| match &t.step {
                Step::Task {
                    call,
                    submitted: false,
                    ..
                } => Some(call.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether a task is out that is not only waiting for its token (the runtime holds a
    /// lease on the execution while there is).
    pub fn has_pending_tasks(&self) -> bool {
        self.threads.values().any(|t| {
            matches!(
                t.step,
                Step::Task {
                    submitted: false,
                    ..
                }
            )
        })
    }

    /// The task a token belongs to, if it is still waiting.
    pub fn task_of_token(&self, token: &str) -> Option<u64> {
        self.threads.values().find_map(|t| match &t.step {
            Step::Task { call, .. } if call.token.as_deref() == Some(token) => Some(call.task),
            _ => None,
        })
    }

    /// When the run next needs [`Run::advance`] (a wait, backoff or timeout falls due).
    pub fn next_wake(&self) -> Option<i64> {
        if self.done() {
            return None;
        }
        let mut wake = self.deadline_ms;
        let mut at = |t: i64| wake = Some(wake.map_or(t, |w: i64| w.min(t)));
        for t in self.threads.values() {
            match &t.step {
                Step::Wait { until_ms, .. } | Step::Backoff { until_ms } => at(*until_ms),
                Step::Task {
                    deadline_ms,
                    heartbeat_due_ms,
                    ..
                } => {
                    if let Some(d) = deadline_ms {
                        at(*d);
                    }
                    if let Some(h) = heartbeat_due_ms {
                        at(*h);
                    }
                }
                Step::Enter { .. } => at(0),
                Step::Join(_) => {}
            }
        }
        wake
    }

    /// Take the history events appended since the last call.
    pub fn take_events(&mut self) -> Vec<HistoryEvent> {
        std::mem::take(&mut self.events)
    }

    fn event(&mut self, prev: u64, now_ms: i64, kind: &str, details: Value) -> u64 {
        self.last_event += 1;
        self.events.push(HistoryEvent {
            id: self.last_event,
            previous_event_id: prev,
            timestamp_ms: now_ms,
            kind: kind.to_string(),
            details_field: details_field(kind),
            details,
        });
        self.last_event
    }

    fn thread_event(&mut self, tid: u64, now_ms: i64, kind: &str, details: Value) {
        let prev = self
            .threads
            .get(&tid)
            .map_or(self.last_event, |t| t.prev_event);
        let id = self.event(prev, now_ms, kind, details);
        if let Some(t) = self.threads.get_mut(&tid) {
            t.prev_event = id;
        }
    }

    fn rng(&mut self) -> fastrand::Rng {
        let rng = fastrand::Rng::with_seed(self.seed);
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        rng
    }

    /// Apply the clock: run every state that can run, fire due waits, backoffs and timeouts.
    pub fn advance(&mut self, def: &Definition, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.done() {
            return actions;
        }
        if self.deadline_ms.is_some_and(|d| d <= now_ms) {
            self.end_all(&mut actions);
            let f = Failure::new(
                errors::TIMEOUT,
                "The execution ran longer than the TimeoutSeconds of its definition.",
            );
            self.event(
                self.last_event,
                now_ms,
                "ExecutionTimedOut",
                json!({"error": f.error, "cause": f.cause}),
            );
            self.status = RunStatus::TimedOut;
            self.error = Some(f);
            return actions;
        }
        loop {
            let ready: Vec<u64> = self
                .threads
                .iter()
                .filter(|(_, t)| match &t.step {
                    Step::Enter { .. } => true,
                    Step::Wait { until_ms, .. } | Step::Backoff { until_ms } => *until_ms <= now_ms,
                    Step::Task {
                        deadline_ms,
                        heartbeat_due_ms,
                        ..
                    } => {
                        deadline_ms.is_some_and(|d| d <= now_ms)
                            || heartbeat_due_ms.is_some_and(|h| h <= now_ms)
                    }
                    Step::Join(_) => false,
                })
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() || self.done() {
                return actions;
            }
            for tid in ready {
                if self.done() {
                    return actions;
                }
                let Some(t) = self.threads.get(&tid) else {
                    continue;
                };
                match t.step.clone() {
                    Step::Enter { again } => self.enter(def, tid, again, now_ms, &mut actions),
                    Step::Wait { output, .. } => {
                        self.leave(def, tid, output, now_ms, &mut actions);
                    }
                    Step::Backoff { .. } => {
                        if let Some(t) = self.threads.get_mut(&tid) {
                            t.step = Step::Enter { again: true };
                        }
                    }
                    Step::Task {
                        call, deadline_ms, ..
                    } => {
                        actions.push(Action::Cancel(call.task));
                        let timed_out = deadline_ms.is_some_and(|d| d <= now_ms);
                        let f = if timed_out {
                            Failure::new(errors::TIMEOUT, "")
                        } else {
                            Failure::new(errors::HEARTBEAT_TIMEOUT, "")
                        };
                        self.thread_event(
                            tid,
                            now_ms,
                            "TaskTimedOut",
                            json!({"resourceType": resource_type(&call.resource), "resource": resource_name(&call.resource), "error": f.error, "cause": f.cause}),
                        );
                        self.fail_state(def, tid, f, now_ms, &mut actions);
                    }
                    Step::Join(_) => {}
                }
            }
        }
    }

    /// A task's answer: its output, or its error.
    pub fn task_done(
        &mut self,
        def: &Definition,
        task: u64,
        result: Result<Value, Failure>,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some((tid, call)) = self.threads.iter().find_map(|(id, t)| match &t.step {
            Step::Task { call, .. } if call.task == task => Some((*id, call.clone())),
            _ => None,
        }) else {
            return actions;
        };
        let (rt, rn) = (resource_type(&call.resource), resource_name(&call.resource));
        match result {
            Ok(output) => {
                let text = output.to_string();
                if text.len() > MAX_PAYLOAD {
                    let f = Failure::new(errors::DATA_LIMIT, format!("The state/task '{}' returned a result with a size exceeding the maximum number of bytes service limit.", call.state));
                    self.thread_event(tid, now_ms, "TaskFailed", json!({"resourceType": rt, "resource": rn, "error": f.error, "cause": f.cause}));
                    self.fail_state(def, tid, f, now_ms, &mut actions);
                } else {
                    self.thread_event(tid, now_ms, "TaskSucceeded", json!({"resourceType": rt, "resource": rn, "output": text, "outputDetails": {"truncated": false}}));
                    self.result(def, tid, output, now_ms, &mut actions);
                }
            }
            Err(f) => {
                self.thread_event(
                    tid,
                    now_ms,
                    "TaskFailed",
                    json!({"resourceType": rt, "resource": rn, "error": f.error, "cause": f.cause}),
                );
                self.fail_state(def, tid, f, now_ms, &mut actions);
            }
        }
        actions.extend(self.advance(def, now_ms));
        actions
    }

    /// A `.waitForTaskToken` task's request is out: from now on it only waits for its token
    /// (a restart does not send it again).
    pub fn task_submitted(&mut self, task: u64, output: Value, now_ms: i64) {
        let found = self
            .threads
            .iter_mut()
            .find_map(|(id, t)| match &mut t.step {
                Step::Task {
                    call, submitted, ..
                } if call.task == task && !*submitted => {
                    *submitted = true;
                    Some((*id, call.resource.clone()))
                }
                _ => None,
            });
        if let Some((tid, resource)) = found {
            self.thread_event(tid, now_ms, "TaskSubmitted", json!({"resourceType": resource_type(&resource), "resource": resource_name(&resource), "output": output.to_string(), "outputDetails": {"truncated": false}}));
        }
    }

    /// `SendTaskHeartbeat`: the task's heartbeat clock starts again. False if the task is
    /// not waiting.
    pub fn heartbeat(&mut self, task: u64, now_ms: i64) -> bool {
        for t in self.threads.values_mut() {
            if let Step::Task {
                call,
                heartbeat_due_ms,
                ..
            } = &mut t.step
            {
                if call.task == task {
                    if let Some(h) = call.heartbeat_seconds {
                        *heartbeat_due_ms =
                            Some(now_ms + i64::try_from(h * 1000).unwrap_or(i64::MAX));
                    }
                    return true;
                }
            }
        }
        false
    }

    /// `StopExecution`.
    pub fn stop(
        &mut self,
        error: Option<String>,
        cause: Option<String>,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.done() {
            return actions;
        }
        self.end_all(&mut actions);
        let mut d = Map::new();
        if let Some(e) = &error {
            d.insert("error".into(), Value::from(e.as_str()));
        }
        if let Some(c) = &cause {
            d.insert("cause".into(), Value::from(c.as_str()));
        }
        self.event(
            self.last_event,
            now_ms,
            "ExecutionAborted",
            Value::Object(d),
        );
        self.status = RunStatus::Aborted;
        self.error = Some(Failure::new(
            error.unwrap_or_default(),
            cause.unwrap_or_default(),
        ));
        actions
    }

    fn region(&self) -> String {
        let id = self.context["Execution"]["Id"].as_str().unwrap_or_default();
        id.split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .unwrap_or("us-east-1")
            .to_string()
    }

    fn end_all(&mut self, actions: &mut Vec<Action>) {
        for t in self.threads.values() {
            if let Step::Task { call, .. } = &t.step {
                actions.push(Action::Cancel(call.task));
            }
        }
        self.threads.clear();
    }

    fn context_for(&self, tid: u64, token: Option<&str>) -> Value {
        let mut ctx = self.context.clone();
        if let Some(t) = self.threads.get(&tid) {
            let retry: u32 = t.retries.iter().sum();
            ctx["State"] = json!({
                "Name": t.state,
                "EnteredTime": rfc3339(t.entered_ms),
                "RetryCount": retry,
            });
            if let Some(item) = &t.item {
                ctx["Map"] = json!({"Item": item});
            }
        }
        if let Some(tok) = token {
            ctx["Task"] = json!({"Token": tok});
        }
        ctx
    }

    fn enter(
        &mut self,
        def: &Definition,
        tid: u64,
        again: bool,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) {
        let Some(t) = self.threads.get(&tid) else {
            return;
        };
        let Some(state) = def.list(&t.scope).and_then(|l| l.states.get(&t.state)) else {
            let f = Failure::runtime(format!(
                "The state '{}' does not exist in the definition.",
                t.state
            ));
            self.finish_thread(def, tid, Err(f), now_ms, actions);
            return;
        };
        let name = t.state.clone();
        let raw = t.input.clone();
        if !again {
            self.transitions += 1;
            if let Some(t) = self.threads.get_mut(&tid) {
                t.entered_ms = now_ms;
                t.retries.clear();
            }
            let kind = format!("{}StateEntered", state.type_name());
            self.thread_event(tid, now_ms, &kind, json!({"name": name, "input": raw.to_string(), "inputDetails": {"truncated": false}}));
        }
        if let Err(f) = self.run_state(def, tid, state, &raw, now_ms, actions) {
            self.fail_state(def, tid, f, now_ms, actions);
        }
    }

    fn run_state(
        &mut self,
        def: &Definition,
        tid: u64,
        state: &State,
        raw: &Value,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) -> Result<(), Failure> {
        let vars = self
            .threads
            .get(&tid)
            .map(|t| t.vars.clone())
            .unwrap_or_default();
        let ctx = self.context_for(tid, None);
        let scope = Scope {
            input: raw,
            context: &ctx,
            vars: &vars,
        };
        // JSONata states take their input whole ($states.input); JSONPath ones apply InputPath.
        let effective = if state.jsonata {
            raw.clone()
        } else {
            apply_io_path(state.input_path.as_ref(), &scope)?
        };
        let escope = Scope {
            input: &effective,
            context: &ctx,
            vars: &vars,
        };
        match &state.kind {
            Kind::Pass { .. } if state.jsonata => {
                let out = self.ata_exit(
                    tid,
                    state.output.as_ref(),
                    state.assign.as_ref(),
                    &ata_states(raw, &ctx),
                    &vars,
                    raw.clone(),
                )?;
                self.leave(def, tid, out, now_ms, actions);
            }
            Kind::Pass { result } => {
                let r = match (result, &state.parameters) {
                    (Some(r), _) => r.clone(),
                    (None, Some(p)) => paths::template(p, &escope)?,
                    (None, None) => effective.clone(),
                };
                self.assign(tid, state.assign.as_ref(), &r, &ctx, &vars)?;
                let out = apply_result_path(state.result_path.as_ref(), raw, r)?;
                let out = output_path(state, &out, &ctx, &vars)?;
                self.leave(def, tid, out, now_ms, actions);
            }
            Kind::Task {
                resource,
                timeout,
                heartbeat,
            } => {
                let token = resource.ends_with(".waitForTaskToken").then(|| {
                    let mut rng = self.rng();
                    let secret: String = (0..32).map(|_| rng.alphanumeric()).collect();
                    format!("{}{secret}", self.token_prefix)
                });
                let ctx = self.context_for(tid, token.as_deref());
                let escope = Scope {
                    input: &effective,
                    context: &ctx,
                    vars: &vars,
                };
                let params = state_input(state, raw, &escope)?;
                let timeout = timeout
                    .as_ref()
                    .map(|s| secs_of(s, &escope, "TimeoutSeconds"))
                    .transpose()?;
                let heartbeat = heartbeat
                    .as_ref()
                    .map(|s| secs_of(s, &escope, "HeartbeatSeconds"))
                    .transpose()?;
                let task = self.next_id;
                self.next_id += 1;
                let call = TaskCall {
                    task,
                    state: self
                        .threads
                        .get(&tid)
                        .map(|t| t.state.clone())
                        .unwrap_or_default(),
                    resource: resource.clone(),
                    params,
                    token,
                    timeout_seconds: timeout.map(|t| t as u64),
                    heartbeat_seconds: heartbeat.map(|h| h as u64),
                };
                let mut d = json!({
                    "resourceType": resource_type(resource),
                    "resource": resource_name(resource),
                    "region": self.region(),
                    "parameters": call.params.to_string(),
                });
                if let Some(t) = call.timeout_seconds {
                    d["timeoutInSeconds"] = json!(t);
                }
                if let Some(h) = call.heartbeat_seconds {
                    d["heartbeatInSeconds"] = json!(h);
                }
                self.thread_event(tid, now_ms, "TaskScheduled", d);
                self.thread_event(tid, now_ms, "TaskStarted", json!({"resourceType": resource_type(resource), "resource": resource_name(resource)}));
                let ms = |s: u64| {
                    now_ms.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
                };
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.step = Step::Task {
                        deadline_ms: call.timeout_seconds.map(ms),
                        heartbeat_due_ms: call.heartbeat_seconds.map(ms),
                        call: call.clone(),
                        submitted: false,
                    };
                }
                actions.push(Action::Run(call));
            }
            Kind::Choice { choices, default } => {
                let states = ata_states(raw, &ctx);
                let mut next = None;
                for b in choices {
                    let taken = match &b.rule {
                        choice::Rule::Condition(c) => match jsonata::eval(c, &states, &vars)? {
                            Value::Bool(t) => t,
                            other => {
                                return Err(Failure::new(
                                    jsonata::QUERY_EVALUATION_ERROR,
                                    format!(
                                        "The Condition '{c}' must give a boolean, but gave {}",
                                        paths::shorten(&other)
                                    ),
                                ))
                            }
                        },
                        rule => choice::eval(rule, &escope)?,
                    };
                    if taken {
                        next = Some((b.next.clone(), b.assign.clone(), b.output.clone()));
                        break;
                    }
                }
                let (next, branch_assign, branch_output) = match (next, default) {
                    (Some(n), _) => n,
                    (None, Some(d)) => (d.clone(), None, None),
                    (None, None) => {
                        return Err(Failure::new(
                            "States.NoChoiceMatched",
                            format!("No Choice Rules matched and no Default is specified in the state '{}'.", state_name(self, tid)),
                        ))
                    }
                };
                let mut assign = state.assign.clone();
                if let Some(Value::Object(b)) = branch_assign {
                    let mut m = match assign {
                        Some(Value::Object(m)) => m,
                        _ => Map::new(),
                    };
                    m.extend(b);
                    assign = Some(Value::Object(m));
                }
                let out = if state.jsonata {
                    self.ata_exit(
                        tid,
                        branch_output.as_ref().or(state.output.as_ref()),
                        assign.as_ref(),
                        &states,
                        &vars,
                        raw.clone(),
                    )?
                } else {
                    self.assign(tid, assign.as_ref(), &effective, &ctx, &vars)?;
                    output_path(state, &effective, &ctx, &vars)?
                };
                self.exited(tid, state, &out, now_ms);
                self.goto(tid, next, out);
            }
            Kind::Wait(how) => {
                let until = match how {
                    WaitFor::Seconds(s) => {
                        let n = secs_of(s, &escope, "Seconds")?;
                        now_ms.saturating_add((n * 1000.0) as i64)
                    }
                    WaitFor::Timestamp(t) => match jsonata::expression(t) {
                        Some(e) => {
                            let v = jsonata::eval(e, &ata_states(raw, &ctx), &vars)?;
                            v.as_str().and_then(ts_ms).ok_or_else(|| {
                                Failure::new(
                                    jsonata::QUERY_EVALUATION_ERROR,
                                    format!("The Timestamp expression '{e}' must give an ISO-8601 timestamp, but gave {}", paths::shorten(&v)),
                                )
                            })?
                        }
                        None => ts_ms(t).unwrap_or(now_ms),
                    },
                    WaitFor::TimestampPath(p) => {
                        let v = select_or_fail(p, &escope)?;
                        v.as_str().and_then(ts_ms).ok_or_else(|| {
                            Failure::runtime(format!("The TimestampPath parameter does not reference a valid ISO-8601 extended offset date-time format string: {p} == {}", paths::shorten(&v)))
                        })?
                    }
                };
                let out = self.plain_output(tid, state, raw, &effective, &ctx, &vars)?;
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.step = Step::Wait {
                        until_ms: until,
                        output: out,
                    };
                }
            }
            Kind::Succeed => {
                let out = if state.jsonata {
                    let states = ata_states(raw, &ctx);
                    self.ata_exit(
                        tid,
                        state.output.as_ref(),
                        None,
                        &states,
                        &vars,
                        raw.clone(),
                    )?
                } else {
                    output_path(state, &effective, &ctx, &vars)?
                };
                self.exited(tid, state, &out, now_ms);
                self.finish_thread(def, tid, Ok(out), now_ms, actions);
            }
            Kind::Fail { error, cause } => {
                let text = |t: &Option<Text>, what: &str| -> Result<String, Failure> {
                    match t {
                        None => Ok(String::new()),
                        Some(Text::Lit(s)) => {
                            match jsonata::expression(s).filter(|_| state.jsonata) {
                                Some(e) => {
                                    let v = jsonata::eval(e, &ata_states(raw, &ctx), &vars)?;
                                    Ok(v.as_str().map_or_else(|| v.to_string(), String::from))
                                }
                                None => Ok(s.clone()),
                            }
                        }
                        Some(Text::Path(p)) => {
                            let v = paths::dynamic(&format!("{what}Path"), p, &scope)?;
                            v.as_str().map(String::from).ok_or_else(|| {
                                Failure::runtime(format!(
                                    "The {what}Path '{p}' must resolve to a string, but it was {}",
                                    paths::shorten(&v)
                                ))
                            })
                        }
                    }
                };
                let f = Failure::new(text(error, "Error")?, text(cause, "Cause")?);
                self.finish_thread(def, tid, Err(f), now_ms, actions);
            }
            Kind::Parallel { branches } => {
                let input = state_input(state, raw, &escope)?;
                self.thread_event(tid, now_ms, "ParallelStateStarted", json!({}));
                let mut running = Vec::new();
                let scope_base = self
                    .threads
                    .get(&tid)
                    .map(|t| t.scope.clone())
                    .unwrap_or_default();
                for (i, b) in branches.iter().enumerate() {
                    let mut sc = scope_base.clone();
                    sc.push((state_name(self, tid), i));
                    running.push(self.spawn(
                        tid,
                        i,
                        sc,
                        b.start_at.clone(),
                        input.clone(),
                        vars.clone(),
                        None,
                        now_ms,
                    ));
                }
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.step = Step::Join(Box::new(Join {
                        map: false,
                        results: vec![None; branches.len()],
                        running,
                        inputs: Vec::new(),
                        items: Vec::new(),
                        next: branches.len(),
                        max: 0,
                        failures: 0,
                        tolerated_count: None,
                        tolerated_pct: None,
                        last_failure: None,
                    }));
                }
            }
            Kind::Map(spec) => {
                self.start_map(def, tid, spec, &effective, &ctx, &vars, now_ms, actions)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_map(
        &mut self,
        def: &Definition,
        tid: u64,
        spec: &MapSpec,
        effective: &Value,
        ctx: &Value,
        vars: &Map<String, Value>,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) -> Result<(), Failure> {
        let escope = Scope {
            input: effective,
            context: ctx,
            vars,
        };
        let ata = self.state_of(def, tid).is_some_and(|(_, s)| s.jsonata);
        let items = match (&spec.items, &spec.items_path) {
            (Some(t), _) if ata => jsonata::template(t, &ata_states(effective, ctx), vars)?,
            (Some(t), _) => paths::template(t, &escope)?,
            (None, Some(p)) => select_or_fail(p, &escope)?,
            (None, None) => effective.clone(),
        };
        let Value::Array(items) = items else {
            return Err(Failure::runtime(format!(
                "Map state input must be an array, but it was {}: the ItemsPath '{}' must point to a JSON array.",
                paths::type_name(&items),
                spec.items_path.as_deref().unwrap_or("$")
            )));
        };
        let num =
            |s: &Option<Secs>, f: &str| s.as_ref().map(|s| secs_of(s, &escope, f)).transpose();
        let max = num(&spec.max_concurrency, "MaxConcurrency")?.map_or(0, |n| n as usize);
        let tolerated_count =
            num(&spec.tolerated_count, "ToleratedFailureCount")?.map(|n| n as usize);
        let tolerated_pct = num(&spec.tolerated_percentage, "ToleratedFailurePercentage")?;
        if tolerated_pct.is_some_and(|p| p > 100.0) {
            return Err(Failure::runtime(
                "ToleratedFailurePercentage must be between 0 and 100",
            ));
        }
        let mut inputs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut c = ctx.clone();
            c["Map"] = json!({"Item": {"Index": i, "Value": item}});
            let s = Scope {
                input: effective,
                context: &c,
                vars,
            };
            inputs.push(match &spec.item_selector {
                Some(sel) if ata => jsonata::template(sel, &ata_states(effective, &c), vars)?,
                Some(sel) => paths::template(sel, &s)?,
                None => item.clone(),
            });
        }
        self.thread_event(
            tid,
            now_ms,
            "MapStateStarted",
            json!({"length": items.len()}),
        );
        let n = items.len();
        if let Some(t) = self.threads.get_mut(&tid) {
            t.step = Step::Join(Box::new(Join {
                map: true,
                results: vec![None; n],
                running: Vec::new(),
                inputs,
                items,
                next: 0,
                max,
                failures: 0,
                tolerated_count,
                tolerated_pct,
                last_failure: None,
            }));
        }
        if n == 0 {
            self.join_done(def, tid, now_ms, actions);
        } else {
            self.fill_map(def, tid, now_ms);
        }
        Ok(())
    }

    /// Start Map iterations up to MaxConcurrency.
    fn fill_map(&mut self, def: &Definition, tid: u64, now_ms: i64) {
        loop {
            let Some(t) = self.threads.get(&tid) else {
                return;
            };
            let Step::Join(j) = &t.step else { return };
            if j.next >= j.inputs.len() || (j.max > 0 && j.running.len() >= j.max) {
                return;
            }
            let i = j.next;
            let input = j.inputs[i].clone();
            let item = json!({"Index": i, "Value": j.items[i]});
            let vars = t.vars.clone();
            let mut sc = t.scope.clone();
            let name = t.state.clone();
            sc.push((name.clone(), 0));
            let Some(start) = def.list(&sc).map(|l| l.start_at.clone()) else {
                return;
            };
            self.thread_event(
                tid,
                now_ms,
                "MapIterationStarted",
                json!({"name": name, "index": i}),
            );
            let child = self.spawn(tid, i, sc, start, input, vars, Some(item), now_ms);
            if let Some(Step::Join(j)) = self.threads.get_mut(&tid).map(|t| &mut t.step) {
                j.next += 1;
                j.running.push(child);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        parent: u64,
        index: usize,
        scope: Vec<(String, usize)>,
        state: String,
        input: Value,
        vars: Map<String, Value>,
        item: Option<Value>,
        now_ms: i64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let prev = self
            .threads
            .get(&parent)
            .map_or(self.last_event, |t| t.prev_event);
        self.threads.insert(
            id,
            Thread {
                parent: Some(parent),
                index,
                scope,
                state,
                input,
                vars,
                entered_ms: now_ms,
                prev_event: prev,
                retries: Vec::new(),
                item,
                step: Step::Enter { again: false },
            },
        );
        id
    }

    fn assign(
        &mut self,
        tid: u64,
        assign: Option<&Value>,
        result: &Value,
        ctx: &Value,
        vars: &Map<String, Value>,
    ) -> Result<(), Failure> {
        let Some(a) = assign else { return Ok(()) };
        let scope = Scope {
            input: result,
            context: ctx,
            vars,
        };
        let Value::Object(values) = paths::template(a, &scope)? else {
            return Err(Failure::runtime("Assign must be a JSON object"));
        };
        if let Some(t) = self.threads.get_mut(&tid) {
            for (k, v) in values {
                t.vars.insert(k, v);
            }
        }
        Ok(())
    }

    /// How a JSONata state ends: its `Output` (or `default`) and its `Assign`, both evaluated
    /// over `$states` and the old variables.
    #[allow(clippy::too_many_arguments)]
    fn ata_exit(
        &mut self,
        tid: u64,
        output: Option<&Value>,
        assign: Option<&Value>,
        states: &Value,
        vars: &Map<String, Value>,
        default: Value,
    ) -> Result<Value, Failure> {
        let out = match output {
            Some(o) => jsonata::template(o, states, vars)?,
            None => default,
        };
        if let Some(a) = assign {
            let Value::Object(values) = jsonata::template(a, states, vars)? else {
                return Err(Failure::runtime("Assign must be a JSON object"));
            };
            if let Some(t) = self.threads.get_mut(&tid) {
                t.vars.extend(values);
            }
        }
        Ok(out)
    }

    /// `…StateExited` for the state a thread leaves with `output`.
    fn exited(&mut self, tid: u64, state: &State, output: &Value, now_ms: i64) {
        let kind = format!("{}StateExited", state.type_name());
        let name = state_name(self, tid);
        self.thread_event(
            tid,
            now_ms,
            &kind,
            json!({"name": name, "output": output.to_string(), "outputDetails": {"truncated": false}}),
        );
    }

    /// The thread and the state it is at.
    fn state_of<'d>(&self, def: &'d Definition, tid: u64) -> Option<(&Thread, &'d State)> {
        let t = self.threads.get(&tid)?;
        let state = def.list(&t.scope)?.states.get(&t.state)?;
        Some((t, state))
    }

    /// The output of a state that has no result of its own (Choice, Wait): JSONPath applies
    /// `OutputPath` to the effective input, JSONata evaluates `Output` (default: the input);
    /// `Assign` either way.
    fn plain_output(
        &mut self,
        tid: u64,
        state: &State,
        raw: &Value,
        effective: &Value,
        ctx: &Value,
        vars: &Map<String, Value>,
    ) -> Result<Value, Failure> {
        if state.jsonata {
            let states = ata_states(raw, ctx);
            return self.ata_exit(
                tid,
                state.output.as_ref(),
                state.assign.as_ref(),
                &states,
                vars,
                raw.clone(),
            );
        }
        self.assign(tid, state.assign.as_ref(), effective, ctx, vars)?;
        output_path(state, effective, ctx, vars)
    }

    /// A Task, Parallel or Map state has its result: ResultSelector, ResultPath,
    /// OutputPath, Assign, then on.
    fn result(
        &mut self,
        def: &Definition,
        tid: u64,
        result: Value,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) {
        let Some((t, state)) = self.state_of(def, tid) else {
            return;
        };
        let raw = t.input.clone();
        let vars = t.vars.clone();
        let ctx = self.context_for(tid, None);
        let r = (|| {
            if state.jsonata {
                let mut states = ata_states(&raw, &ctx);
                states["result"] = result.clone();
                return self.ata_exit(
                    tid,
                    state.output.as_ref(),
                    state.assign.as_ref(),
                    &states,
                    &vars,
                    result.clone(),
                );
            }
            let r = match &state.result_selector {
                Some(sel) => paths::template(
                    sel,
                    &Scope {
                        input: &result,
                        context: &ctx,
                        vars: &vars,
                    },
                )?,
                None => result,
            };
            self.assign(tid, state.assign.as_ref(), &r, &ctx, &vars)?;
            let out = apply_result_path(state.result_path.as_ref(), &raw, r)?;
            output_path(state, &out, &ctx, &vars)
        })();
        match r {
            Ok(out) => self.leave(def, tid, out, now_ms, actions),
            Err(f) => self.fail_state(def, tid, f, now_ms, actions),
        }
    }

    /// The state is done with `output`: `…StateExited`, then the next state or the end of
    /// the thread.
    fn leave(
        &mut self,
        def: &Definition,
        tid: u64,
        output: Value,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) {
        let Some((_, state)) = self.state_of(def, tid) else {
            return;
        };
        self.exited(tid, state, &output, now_ms);
        match &state.next {
            Some(n) => self.goto(tid, n.clone(), output),
            None => self.finish_thread(def, tid, Ok(output), now_ms, actions),
        }
    }

    fn goto(&mut self, tid: u64, next: String, input: Value) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.state = next;
            t.input = input;
            t.step = Step::Enter { again: false };
        }
    }

    /// The state raised `f`: retry, catch, or end the thread with it.
    fn fail_state(
        &mut self,
        def: &Definition,
        tid: u64,
        f: Failure,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) {
        let Some((t, state)) = self.state_of(def, tid) else {
            return;
        };
        if let Some((i, r)) = state
            .retry
            .iter()
            .enumerate()
            .find(|(_, r)| f.matches(&r.error_equals))
        {
            let done = t.retries.get(i).copied().unwrap_or(0);
            if done < r.max_attempts {
                let mut delay = r.interval_seconds
                    * r.backoff_rate.powi(i32::try_from(done).unwrap_or(i32::MAX));
                if let Some(max) = r.max_delay_seconds {
                    delay = delay.min(max);
                }
                if r.full_jitter {
                    delay *= self.rng().f64();
                }
                let until = now_ms.saturating_add((delay * 1000.0) as i64);
                if let Some(t) = self.threads.get_mut(&tid) {
                    if t.retries.len() <= i {
                        t.retries.resize(i + 1, 0);
                    }
                    t.retries[i] += 1;
                    t.step = Step::Backoff { until_ms: until };
                }
                return;
            }
        }
        if let Some(c) = state.catch.iter().find(|c| f.matches(&c.error_equals)) {
            let raw = t.input.clone();
            let vars = t.vars.clone();
            let ctx = self.context_for(tid, None);
            let err = f.output();
            let r = (|| {
                if state.jsonata {
                    let mut states = ata_states(&raw, &ctx);
                    states["errorOutput"] = err.clone();
                    return self.ata_exit(
                        tid,
                        c.output.as_ref(),
                        c.assign.as_ref(),
                        &states,
                        &vars,
                        err.clone(),
                    );
                }
                self.assign(tid, c.assign.as_ref(), &err, &ctx, &vars)?;
                apply_result_path(c.result_path.as_ref(), &raw, err.clone())
            })();
            match r {
                Ok(out) => {
                    self.exited(tid, state, &out, now_ms);
                    self.goto(tid, c.next.clone(), out);
                }
                Err(e) => self.finish_thread(def, tid, Err(e), now_ms, actions),
            }
            return;
        }
        self.finish_thread(def, tid, Err(f), now_ms, actions);
    }

    /// A thread reached its end (a terminal state, or an error nobody caught).
    fn finish_thread(
        &mut self,
        def: &Definition,
        tid: u64,
        result: Result<Value, Failure>,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) {
        let Some(t) = self.threads.remove(&tid) else {
            return;
        };
        let Some(parent) = t.parent else {
            self.end_all(actions);
            match result {
                Ok(out) => {
                    self.event(
                        t.prev_event,
                        now_ms,
                        "ExecutionSucceeded",
                        json!({"output": out.to_string(), "outputDetails": {"truncated": false}}),
                    );
                    self.status = RunStatus::Succeeded;
                    self.output = Some(out);
                }
                Err(f) => {
                    self.event(
                        t.prev_event,
                        now_ms,
                        "ExecutionFailed",
                        json!({"error": f.error, "cause": f.cause}),
                    );
                    self.status = RunStatus::Failed;
                    self.error = Some(f);
                }
            }
            return;
        };
        let Some(Step::Join(j)) = self.threads.get_mut(&parent).map(|p| &mut p.step) else {
            return;
        };
        j.running.retain(|c| *c != tid);
        let map = j.map;
        match result {
            Ok(out) => {
                if let Some(slot) = j.results.get_mut(t.index) {
                    *slot = Some(out.clone());
                }
                if map {
                    self.thread_event(parent, now_ms, "MapIterationSucceeded", json!({"name": t.scope.last().map(|s| s.0.clone()).unwrap_or_default(), "index": t.index}));
                }
            }
            Err(f) => {
                let tolerated = map && {
                    j.failures += 1;
                    let total = j.results.len().max(1);
                    let by_count = j.tolerated_count.is_some_and(|c| j.failures <= c);
                    let by_pct = j
                        .tolerated_pct
                        .is_some_and(|p| (j.failures as f64) * 100.0 / (total as f64) <= p);
                    f.catchable() && (by_count || by_pct)
                };
                if map {
                    self.thread_event(parent, now_ms, "MapIterationFailed", json!({"name": t.scope.last().map(|s| s.0.clone()).unwrap_or_default(), "index": t.index}));
                }
                let Some(Step::Join(j)) = self.threads.get_mut(&parent).map(|p| &mut p.step) else {
                    return;
                };
                if tolerated {
                    if let Some(slot) = j.results.get_mut(t.index) {
                        *slot = Some(f.output());
                    }
                    j.last_failure = Some(f);
                } else {
                    // The state fails: stop the other branches / iterations.
                    let f = if map
                        && f.catchable()
                        && (j.tolerated_count.is_some() || j.tolerated_pct.is_some())
                    {
                        Failure::new(
                            errors::TOLERATED_FAILURE,
                            format!(
                                "The specified tolerated failure threshold was exceeded: {}",
                                f.cause
                            ),
                        )
                    } else {
                        f
                    };
                    self.abort_children(parent, actions);
                    let kind = if map {
                        "MapStateFailed"
                    } else {
                        "ParallelStateFailed"
                    };
                    self.thread_event(parent, now_ms, kind, json!({}));
                    self.fail_state(def, parent, f, now_ms, actions);
                    return;
                }
            }
        }
        if map {
            self.fill_map(def, parent, now_ms);
        }
        let all = match self.threads.get(&parent).map(|p| &p.step) {
            Some(Step::Join(j)) => j.running.is_empty() && j.next >= j.results.len(),
            _ => false,
        };
        if all {
            self.join_done(def, parent, now_ms, actions);
        }
    }

    fn join_done(&mut self, def: &Definition, tid: u64, now_ms: i64, actions: &mut Vec<Action>) {
        let Some(Step::Join(j)) = self.threads.get(&tid).map(|t| &t.step) else {
            return;
        };
        let results: Vec<Value> = j
            .results
            .iter()
            .map(|r| r.clone().unwrap_or(Value::Null))
            .collect();
        let kind = if j.map {
            "MapStateSucceeded"
        } else {
            "ParallelStateSucceeded"
        };
        self.thread_event(tid, now_ms, kind, json!({}));
        self.result(def, tid, Value::Array(results), now_ms, actions);
    }

    fn abort_children(&mut self, tid: u64, actions: &mut Vec<Action>) {
        let kids: Vec<u64> = self
            .threads
            .iter()
            .filter(|(_, t)| t.parent == Some(tid))
            .map(|(id, _)| *id)
            .collect();
        for k in kids {
            self.abort_children(k, actions);
            if let Some(t) = self.threads.remove(&k) {
                if let Step::Task { call, .. } = t.step {
                    actions.push(Action::Cancel(call.task));
                }
            }
        }
    }
}

fn state_name(run: &Run, tid: u64) -> String {
    run.threads
        .get(&tid)
        .map(|t| t.state.clone())
        .unwrap_or_default()
}

fn output_path(
    state: &State,
    out: &Value,
    ctx: &Value,
    vars: &Map<String, Value>,
) -> Result<Value, Failure> {
    apply_io_path(
        state.output_path.as_ref(),
        &Scope {
            input: out,
            context: ctx,
            vars,
        },
    )
}

/// The `resourceType` of a task resource in history events (`bedrock`, `aws-sdk:sesv2`).
pub fn resource_type(resource: &str) -> String {
    if let Some(rest) = resource.split(":::").nth(1) {
        return rest
            .rsplit_once(':')
            .map_or_else(|| rest.to_string(), |(t, _)| t.to_string());
    }
    resource.split(':').nth(2).unwrap_or(resource).to_string()
}

/// The `resource` of a task resource in history events (`invokeModel.waitForTaskToken`).
pub fn resource_name(resource: &str) -> String {
    if let Some(rest) = resource.split(":::").nth(1) {
        return rest
            .rsplit_once(':')
            .map_or_else(|| rest.to_string(), |(_, r)| r.to_string());
    }
    resource.rsplit(':').next().unwrap_or(resource).to_string()
}

/// RFC 3339 with milliseconds of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn ts_ms(s: &str) -> Option<i64> {
    choice::timestamp(s).and_then(|n| i64::try_from(n / 1_000_000).ok())
}

/// `$states` of a JSONata expression: the state's input and the context object.
fn ata_states(input: &Value, ctx: &Value) -> Value {
    json!({"input": input, "context": ctx})
}

/// What a Task sends or a Parallel state gives its branches: JSONata `Arguments`, JSONPath
/// `Parameters` (over the effective input), or the effective input.
fn state_input(state: &State, raw: &Value, scope: &Scope<'_>) -> Result<Value, Failure> {
    match (&state.parameters, &state.arguments) {
        (_, Some(a)) if state.jsonata => {
            jsonata::template(a, &ata_states(raw, scope.context), scope.vars)
        }
        (Some(p), _) if !state.jsonata => paths::template(p, scope),
        _ => Ok(scope.input.clone()),
    }
}
