//! Workflows: Step Functions-compatible state machines, run by the gateway.
//!
//! The engine (`modelgate_flows`) is deterministic: given an event it changes the run and
//! says which tasks to run. This module is its runtime. Every change to an execution is one
//! step: load the execution from the store, apply the event, save the run and its new
//! history events together (a versioned save, so two replicas cannot both apply), then start
//! the tasks the engine asked for. Tasks run here, in process ([`tasks`]); a task's answer is
//! the next event. Waits, retry backoffs and timeouts are wake-up times in the store that a
//! poller applies when due; task leases let another replica (or this one, restarted) run the
//! tasks of an execution whose replica died. A task whose answer was saved never runs again;
//! one that was running at a crash runs again (at least once).

pub mod api;
pub mod cli;
pub mod email;
pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use modelgate_core::keys::{now_ms, KeyService};
use modelgate_core::workflows::WorkflowsConfig;
use modelgate_flows::engine::ExecutionInfo;
use modelgate_flows::{Action, Definition, Failure, HistoryEvent, Run, RunStatus, TaskCall};
use modelgate_store::{EventRecord, ExecutionChange, ExecutionRecord, ExecutionStore, StoreError};
use serde_json::{json, Value};

/// Definitions parsed, by text (a run loads its definition on every step).
const DEFINITION_CACHE: usize = 512;

/// What a step did.
#[derive(Debug)]
pub enum Applied {
    /// The execution is not running (ended, or unknown).
    NotRunning,
    /// Saved; the execution as it is now.
    Saved(Box<ExecutionRecord>),
}

/// A refusal of the API, with its Step Functions error name.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// `StateMachineDoesNotExist`, `InvalidDefinition`, …
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// A server-side failure (500) rather than the caller's (400).
    pub internal: bool,
}

impl ApiError {
    /// A 400 with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            internal: false,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self {
            code: "ServiceUnavailable",
            message: format!("The workflow store is unavailable: {e}"),
            internal: true,
        }
    }
}

/// The workflow service.
pub struct Flows {
    /// Machines, executions, history, documents.
    pub store: Arc<dyn ExecutionStore>,
    /// `[workflows]`.
    pub config: WorkflowsConfig,
    /// ARN region and account.
    pub site: modelgate_core::access::Site,
    /// This replica's id (its leases carry it).
    pub me: String,
    keys: Option<Arc<KeyService>>,
    router: OnceLock<Router>,
    metrics: OnceLock<Arc<modelgate_core::metrics::Metrics>>,
    http: reqwest::Client,
    mailer: Option<email::Mailer>,
    webhooks: Option<crate::jobs::webhook::Deliverer>,
    definitions: Mutex<HashMap<String, Arc<Definition>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    running: Mutex<HashMap<(String, u64), tokio::task::AbortHandle>>,
    slots: Arc<tokio::sync::Semaphore>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// A history event as the store keeps it.
fn record(e: HistoryEvent) -> EventRecord {
    EventRecord {
        id: i64::try_from(e.id).unwrap_or(i64::MAX),
        previous_id: i64::try_from(e.previous_event_id).unwrap_or(0),
        ts_ms: e.timestamp_ms,
        kind: e.kind,
        field: e.details_field,
        details: e.details,
    }
}

/// `STATUS` → the metrics label.
fn status_label(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::TimedOut => "timed_out",
        RunStatus::Aborted => "aborted",
    }
}

/// The state machine name of an execution ARN (`…:execution:<machine>:<name>`).
pub fn machine_name_of(execution_arn: &str) -> &str {
    let parts: Vec<&str> = execution_arn.split(':').collect();
    parts.get(6).copied().unwrap_or_default()
}

impl Flows {
    /// The service over `store`.
    pub fn new(
        store: Arc<dyn ExecutionStore>,
        config: WorkflowsConfig,
        site: modelgate_core::access::Site,
        keys: Option<Arc<KeyService>>,
        me: String,
        webhooks: Option<crate::jobs::webhook::Deliverer>,
    ) -> anyhow::Result<Self> {
        let http = crate::jobs::webhook::guarded_client(
            config.http_allow.clone(),
            Duration::from_secs(300),
            concat!("modelgate-workflows/", env!("CARGO_PKG_VERSION")),
        )?;
        let mailer = config.smtp.as_ref().map(email::Mailer::new).transpose()?;
        let slots = Arc::new(tokio::sync::Semaphore::new(config.max_running_tasks));
        Ok(Self {
            store,
            config,
            site,
            me,
            keys,
            router: OnceLock::new(),
            metrics: OnceLock::new(),
            http,
            mailer,
            webhooks,
            definitions: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            slots,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Give model tasks the router they call through (once it is built).
    pub fn set_router(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// Count executions and transitions in these metrics.
    pub fn set_metrics(&self, metrics: Arc<modelgate_core::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The parsed definition of `text` (cached).
    pub fn definition(&self, text: &str) -> Result<Arc<Definition>, ApiError> {
        if let Some(d) = self
            .definitions
            .lock()
            .ok()
            .and_then(|m| m.get(text).cloned())
        {
            return Ok(d);
        }
        let d = Arc::new(Definition::parse(text).map_err(|e| {
            ApiError::new(
                "InvalidDefinition",
                format!(
                    "Invalid State Machine Definition: '{}: {} at {}'",
                    e.code, e.message, e.location
                ),
            )
        })?);
        if let Ok(mut m) = self.definitions.lock() {
            if m.len() >= DEFINITION_CACHE {
                m.clear();
            }
            m.insert(text.to_string(), Arc::clone(&d));
        }
        Ok(d)
    }

    /// A state machine ARN.
    pub fn machine_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:states:{}:{}:stateMachine:{name}",
            self.site.region, self.site.account
        )
    }

    /// An execution ARN.
    pub fn execution_arn(&self, machine_name: &str, name: &str) -> String {
        format!(
            "arn:aws:states:{}:{}:execution:{machine_name}:{name}",
            self.site.region, self.site.account
        )
    }

    /// The identity a new execution starts with (its context object, task-token prefix and
    /// random seed).
    pub fn execution_info(
        &self,
        machine_arn: &str,
        machine_name: &str,
        name: &str,
        role_arn: &str,
        now: i64,
    ) -> ExecutionInfo {
        let arn = self.execution_arn(machine_name, name);
        ExecutionInfo {
            token_prefix: tasks::token_prefix(&arn),
            id: arn,
            name: name.to_string(),
            role_arn: role_arn.to_string(),
            machine_id: machine_arn.to_string(),
            machine_name: machine_name.to_string(),
            start_time: modelgate_core::keys::rfc3339_ms(now),
            seed: fastrand::u64(..),
        }
    }

    fn lock_of(&self, arn: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() > 10_000 {
            m.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(m.entry(arn.to_string()).or_default())
    }

    /// What an execution row becomes for `run` (`value`: the run as JSON) at `now`.
    fn change(&self, run: &Run, value: Value, now: i64) -> ExecutionChange {
        ExecutionChange {
            status: run.status.as_str().to_string(),
            output: run.output.as_ref().map(Value::to_string),
            error: run.error.as_ref().map(|f| f.error.clone()),
            cause: run.error.as_ref().map(|f| f.cause.clone()),
            stop_ms: run.done().then_some(now),
            run: value,
            wake_ms: run.next_wake(),
            lease: self.lease(run, now),
        }
    }

    fn lease(&self, run: &Run, now: i64) -> Option<(String, i64)> {
        let ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        // Token waits keep no lease: nothing runs for them (their request was sent).
        run.has_pending_tasks().then(|| (self.me.clone(), now + ms))
    }

    /// Start an execution of a state machine. `meta` carries the principal, owner and parent.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        self: &Arc<Self>,
        machine_arn: &str,
        machine_name: &str,
        definition_text: &str,
        role_arn: &str,
        owner: &str,
        name: &str,
        input_text: &str,
        meta: Value,
    ) -> Result<(ExecutionRecord, bool), ApiError> {
        let def = self.definition(definition_text)?;
        let input: Value = serde_json::from_str(input_text).map_err(|e| {
            ApiError::new(
                "InvalidExecutionInput",
                format!("Invalid execution input: {e}"),
            )
        })?;
        if input_text.len() > modelgate_flows::engine::MAX_PAYLOAD {
            return Err(ApiError::new(
                "InvalidExecutionInput",
                "The execution input is larger than 262144 bytes",
            ));
        }
        let now = now_ms();
        let info = self.execution_info(machine_arn, machine_name, name, role_arn, now);
        let arn = info.id.clone();
        let (mut run, actions) = Run::start(&def, &info, input, now);
        let events: Vec<EventRecord> = run.take_events().into_iter().map(record).collect();
        let c = self.change(&run, serde_json::to_value(&run).unwrap_or(Value::Null), now);
        let (lease_owner, lease_until_ms) = c.lease.unzip();
        let e = ExecutionRecord {
            arn: arn.clone(),
            machine_arn: machine_arn.to_string(),
            owner: owner.to_string(),
            name: name.to_string(),
            status: c.status,
            input: input_text.to_string(),
            output: c.output,
            error: c.error,
            cause: c.cause,
            start_ms: now,
            stop_ms: c.stop_ms,
            version: 0,
            wake_ms: c.wake_ms,
            lease_owner,
            lease_until_ms,
            definition: definition_text.to_string(),
            run: c.run,
            meta,
        };
        match self.store.create_execution(&e, &events).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                let existing = self.store.execution(&arn).await?.ok_or_else(|| {
                    ApiError::new(
                        "ExecutionAlreadyExists",
                        format!("Execution Already Exists: '{arn}'"),
                    )
                })?;
                // The same name and input while it runs: the same answer (StartExecution is
                // idempotent); otherwise the name is taken.
                let same_input = serde_json::from_str::<Value>(&existing.input).ok()
                    == serde_json::from_str::<Value>(input_text).ok();
                if existing.status == "RUNNING" && same_input {
                    return Ok((existing, false));
                }
                return Err(ApiError::new(
                    "ExecutionAlreadyExists",
                    format!("Execution Already Exists: '{arn}'"),
                ));
            }
            Err(other) => return Err(other.into()),
        }
        if let Some(m) = self.metrics.get() {
            m.execution(machine_name, "started", None);
            m.transitions(machine_name, run.transitions);
            if run.done() {
                m.execution(machine_name, status_label(run.status), Some(Duration::ZERO));
            }
        }
        self.dispatch(&e, actions);
        if run.done() {
            self.ended(&e).await;
        }
        self.wake.notify_one();
        Ok((e, true))
    }

    /// Apply an event to a running execution: load, `f`, save (again on a lost race), then
    /// start the tasks `f` asked for.
    pub async fn apply<F>(self: &Arc<Self>, arn: &str, f: F) -> Result<Applied, ApiError>
    where
        F: Fn(&Definition, &mut Run, i64) -> Vec<Action>,
    {
        let lock = self.lock_of(arn);
        let _held = lock.lock().await;
        for _ in 0..8 {
            let Some(mut rec) = self.store.execution(arn).await? else {
                return Ok(Applied::NotRunning);
            };
            if rec.status != "RUNNING" {
                return Ok(Applied::NotRunning);
            }
            let def = self.definition(&rec.definition)?;
            let mut run: Run = serde_json::from_value(rec.run.clone()).map_err(|e| ApiError {
                code: "ServiceUnavailable",
                message: format!("The stored execution {arn} cannot be read: {e}"),
                internal: true,
            })?;
            let before = run.transitions;
            let now = now_ms();
            let mut actions = f(&def, &mut run, now);
            let mut events: Vec<EventRecord> = run.take_events().into_iter().map(record).collect();
            let mut value = serde_json::to_value(&run).unwrap_or(Value::Null);
            if events.is_empty() && actions.is_empty() && value == rec.run {
                return Ok(Applied::Saved(Box::new(rec)));
            }
            let last = events.last().map_or(0, |e| e.id);
            if u64::try_from(last).unwrap_or(0) > self.config.max_history_events && !run.done() {
                actions.extend(run.stop(
                    Some(modelgate_flows::errors::RUNTIME.into()),
                    Some(format!(
                        "The execution reached the limit of {} history events.",
                        self.config.max_history_events
                    )),
                    now,
                ));
                events.extend(run.take_events().into_iter().map(record));
                value = serde_json::to_value(&run).unwrap_or(Value::Null);
            }
            let change = self.change(&run, value, now);
            if !self
                .store
                .save_execution(arn, rec.version, &change, &events)
                .await?
            {
                continue;
            }
            rec.version += 1;
            rec.status = change.status;
            rec.output = change.output;
            rec.error = change.error;
            rec.cause = change.cause;
            rec.stop_ms = change.stop_ms;
            rec.wake_ms = change.wake_ms;
            rec.run = change.run;
            (rec.lease_owner, rec.lease_until_ms) = change.lease.unzip();
            let machine = machine_name_of(arn).to_string();
            if let Some(m) = self.metrics.get() {
                m.transitions(&machine, run.transitions.saturating_sub(before));
                if run.done() {
                    let took =
                        Duration::from_millis(u64::try_from(now - rec.start_ms).unwrap_or(0));
                    m.execution(&machine, status_label(run.status), Some(took));
                }
            }
            self.dispatch(&rec, actions);
            if run.done() {
                self.ended(&rec).await;
            }
            return Ok(Applied::Saved(Box::new(rec)));
        }
        Err(ApiError {
            code: "ServiceUnavailable",
            message: format!(
                "The execution {arn} is changing too often to apply the event; try again."
            ),
            internal: true,
        })
    }

    /// Start and stop tasks as the engine asked.
    fn dispatch(self: &Arc<Self>, rec: &ExecutionRecord, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Run(call) => self.spawn_task(rec, call),
                Action::Cancel(task) => {
                    let handle = self
                        .running
                        .lock()
                        .ok()
                        .and_then(|mut m| m.remove(&(rec.arn.clone(), task)));
                    if let Some(h) = handle {
                        h.abort();
                    }
                }
            }
        }
    }

    fn spawn_task(self: &Arc<Self>, rec: &ExecutionRecord, call: TaskCall) {
        let key = (rec.arn.clone(), call.task);
        if self.running.lock().is_ok_and(|m| m.contains_key(&key)) {
            return;
        }
        let this = Arc::clone(self);
        let env = tasks::TaskEnv {
            arn: rec.arn.clone(),
            owner: rec.owner.clone(),
            meta: rec.meta.clone(),
        };
        let arn = rec.arn.clone();
        let task = call.task;
        let handle = tokio::spawn(async move {
            let permit = Arc::clone(&this.slots).acquire_owned().await;
            let limit = call
                .timeout_seconds
                .map_or(this.config.default_task_timeout, Duration::from_secs)
                .min(this.config.default_task_timeout);
            let waits_for_token = call.token.is_some();
            let outcome = match tokio::time::timeout(limit, tasks::run(&this, &env, &call)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::new(
                    modelgate_flows::errors::TIMEOUT,
                    format!("The task ran longer than {}s.", limit.as_secs()),
                )),
            };
            drop(permit);
            if let Ok(mut m) = this.running.lock() {
                m.remove(&(arn.clone(), task));
            }
            let result = match outcome {
                Ok(tasks::Outcome::Done(v)) => Some(Ok(v)),
                Ok(tasks::Outcome::Submitted(v)) if waits_for_token => {
                    let r = this
                        .apply(&arn, |_, run, now| {
                            run.task_submitted(task, v.clone(), now);
                            Vec::new()
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(execution = %arn, error = %e.message, "cannot record a submitted task");
                    }
                    None
                }
                Ok(tasks::Outcome::Submitted(v)) => Some(Ok(v)),
                Ok(tasks::Outcome::Pending) => None,
                Err(f) => Some(Err(f)),
            };
            if let Some(result) = result {
                this.task_result(&arn, task, result).await;
            }
        });
        if let Ok(mut m) = self.running.lock() {
            m.insert(key, handle.abort_handle());
        }
    }

    /// Feed a task's answer back (retried while the store is unavailable: the lease keeps
    /// the execution ours meanwhile).
    pub async fn task_result(
        self: &Arc<Self>,
        arn: &str,
        task: u64,
        result: Result<Value, Failure>,
    ) {
        for attempt in 0..20u32 {
            match self
                .apply(arn, |def, run, now| {
                    run.task_done(def, task, result.clone(), now)
                })
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(execution = %arn, error = %e.message, attempt, "cannot record a task's result; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
                }
            }
        }
    }

    /// An execution ended: tell its parent (`startExecution.sync`).
    async fn ended(self: &Arc<Self>, rec: &ExecutionRecord) {
        let Some(parent) = rec.meta.get("parent").and_then(Value::as_object) else {
            return;
        };
        let (Some(p_arn), Some(task)) = (
            parent.get("execution").and_then(Value::as_str),
            parent.get("task").and_then(Value::as_u64),
        ) else {
            return;
        };
        let result = tasks::child_result(
            rec,
            parent.get("v2").and_then(Value::as_bool).unwrap_or(false),
        );
        tokio::spawn(Self::deliver(
            Arc::clone(self),
            p_arn.to_string(),
            task,
            result,
        ));
    }

    /// [`Flows::task_result`] as a boxed future: an execution's end starts its parent's next
    /// step, which may end the parent and so on; the box keeps that cycle out of the types.
    fn deliver(
        this: Arc<Self>,
        arn: String,
        task: u64,
        result: Result<Value, Failure>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { this.task_result(&arn, task, result).await })
    }

    /// Bring running executions back after a restart and keep them going: apply due
    /// wake-ups, renew this replica's leases, take over executions whose replica died.
    pub fn spawn_runner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // A restarted replica (same id) takes its executions back at once.
            match this.store.leased_to(&this.me).await {
                Ok(arns) => {
                    for arn in arns {
                        this.resume(&arn).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list this replica's executions"),
            }
            let lease_ms = i64::try_from(this.config.lease.as_millis()).unwrap_or(i64::MAX);
            let mut last_renew = 0i64;
            loop {
                let now = now_ms();
                if now - last_renew >= lease_ms / 3 {
                    last_renew = now;
                    if let Err(e) = this.store.renew_leases(&this.me, now + lease_ms).await {
                        tracing::warn!(error = %e, "cannot renew workflow leases");
                    }
                    match this.store.claim_orphans(&this.me, now, lease_ms, 256).await {
                        Ok(arns) => {
                            for arn in arns {
                                tracing::info!(execution = %arn, "taking over an execution whose replica stopped");
                                this.resume(&arn).await;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot claim orphaned executions"),
                    }
                }
                match this.store.due_executions(now, 512).await {
                    Ok(arns) => {
                        for arn in arns {
                            let r = this
                                .apply(&arn, |def, run, now| run.advance(def, now))
                                .await;
                            if let Err(e) = r {
                                tracing::warn!(execution = %arn, error = %e.message, "cannot advance an execution");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list due executions"),
                }
                tokio::select! {
                    () = tokio::time::sleep(this.config.poll) => {}
                    () = this.wake.notified() => {}
                }
            }
        })
    }

    /// Run again the tasks of an execution that were out when its replica stopped.
    async fn resume(self: &Arc<Self>, arn: &str) {
        let rec = match self.store.execution(arn).await {
            Ok(Some(r)) if r.status == "RUNNING" => r,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(execution = %arn, error = %e, "cannot load an execution to resume");
                return;
            }
        };
        let Ok(run) = serde_json::from_value::<Run>(rec.run.clone()) else {
            tracing::warn!(execution = %arn, "a stored execution cannot be read; not resumed");
            return;
        };
        let actions = run.pending_tasks().into_iter().map(Action::Run).collect();
        self.dispatch(&rec, actions);
    }

    /// The execution and task a task token belongs to.
    pub async fn find_token(&self, token: &str) -> Result<(ExecutionRecord, u64), ApiError> {
        let arn = tasks::execution_of_token(token).ok_or_else(|| {
            ApiError::new("InvalidToken", "Invalid Token: the task token is malformed")
        })?;
        let missing = || {
            ApiError::new(
                "TaskDoesNotExist",
                "Task Does Not Exist: the task token matches no waiting task",
            )
        };
        let rec = self.store.execution(&arn).await?.ok_or_else(missing)?;
        if rec.status != "RUNNING" {
            return Err(ApiError::new(
                "TaskTimedOut",
                "Task Timed Out: the execution of this task has ended",
            ));
        }
        let run: Run = serde_json::from_value(rec.run.clone()).map_err(|_| missing())?;
        let task = run.task_of_token(token).ok_or_else(missing)?;
        Ok((rec, task))
    }

    /// A JSON document with the execution's principal, for `meta`.
    pub fn meta(
        principal: Value,
        owner: &str,
        parent: Option<Value>,
        trace: Option<&str>,
    ) -> Value {
        let mut m = json!({"principal": principal, "owner": owner});
        if let Some(p) = parent {
            m["parent"] = p;
        }
        if let Some(t) = trace {
            m["traceHeader"] = Value::from(t);
        }
        m
    }

    /// The principal a stored execution's tasks run as.
    pub async fn principal_of(&self, meta: &Value) -> Result<modelgate_core::Principal, String> {
        crate::jobs::resolve_principal(self.keys.as_ref(), &meta["principal"]).await
    }
}
