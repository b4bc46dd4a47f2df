//! Asynchronous work: jobs submitted through any door (`/v1/jobs`, Bedrock `StartAsyncInvoke`,
//! the OpenAI and Anthropic batch APIs) go into the durable queue (`modelgate_store::JobQueue`)
//! and are run by the workers here.
//!
//! A job is a stored HTTP request (method, path, body, a few headers) and the principal that
//! submitted it. A worker runs it by sending the request through the gateway's own router, in
//! process, as that principal: every door's translation and every pipeline layer (policies,
//! limits, guardrails, cache, routing, usage) applies to a job exactly as to a synchronous call.
//! Delivery is at least once; result recording exactly once (the lease, see the store).

pub mod api;
pub mod batches;
pub mod bedrock;
pub mod cli;
pub mod objects;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use modelgate_core::jobs::{backoff, JobsConfig};
use modelgate_core::keys::KeyService;
use modelgate_core::Principal;
use modelgate_store::{BatchStore, JobEnd, JobQueue, JobRecord, NewJob, Requeued};
use modelgate_types::{Error, ErrorKind};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use objects::Objects;

/// Marks a request the job workers send through the router: it runs as this principal
/// (request extensions cannot come from the network, so no client can claim one).
#[derive(Clone)]
pub struct JobRun {
    /// Who submitted the job.
    pub principal: Principal,
    /// The job.
    pub job_id: String,
}

/// What an in-process call gave.
pub(crate) enum InProcess {
    /// The router answered: status, headers, body (JSON, or the text as a JSON string).
    Answer(u16, axum::http::HeaderMap, Value),
    /// The request could not be made (a bad stored header or path).
    Unusable(String),
}

/// Send a POST through the gateway's own router, in process, as `principal` (the
/// [`JobRun`] extension): every door and pipeline layer applies as to a call from outside.
/// `Err` is a failure to get an answer at all (worth retrying).
pub(crate) async fn call_router(
    router: Router,
    principal: Principal,
    work_id: &str,
    path: &str,
    body: &Value,
    headers: &[(String, String)],
) -> Result<InProcess, String> {
    let mut builder = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut request = match builder.body(Body::from(bytes)) {
        Ok(r) => r,
        Err(e) => return Ok(InProcess::Unusable(format!("the request is unusable: {e}"))),
    };
    request.extensions_mut().insert(JobRun {
        principal,
        job_id: work_id.to_string(),
    });
    let response = router.oneshot(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 256 * 1024 * 1024)
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(InProcess::Answer(status, headers, body))
}

/// Paths a job may call: the model operations of every door (no streams).
pub fn runnable_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/messages"
    ) || (path.starts_with("/model/") && (path.ends_with("/invoke") || path.ends_with("/converse")))
}

/// The job service: queue, batch metadata, object store, workers.
pub struct Jobs {
    /// The queue.
    pub queue: Arc<dyn JobQueue>,
    /// Batch and file metadata.
    pub batches: Arc<dyn BatchStore>,
    /// Where outputs and uploaded files go.
    pub objects: Objects,
    /// `[jobs]`.
    pub config: JobsConfig,
    /// The webhook sender (none without a signing secret).
    pub webhooks: Option<webhook::Deliverer>,
    /// ARN region and account.
    pub site: modelgate_core::access::Site,
    keys: Option<Arc<KeyService>>,
    router: OnceLock<Router>,
    metrics: OnceLock<Arc<modelgate_core::metrics::Metrics>>,
    recorder: OnceLock<tokio::sync::mpsc::Sender<Completion>>,
    wake: tokio::sync::Notify,
    running: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// Make a stored principal (see [`principal_ref`]) again: an API key is read again, so a
/// revoked or expired key's work fails.
pub(crate) async fn resolve_principal(
    keys: Option<&Arc<KeyService>>,
    p: &Value,
) -> Result<Principal, String> {
    let id = p["id"].as_str().unwrap_or_default();
    match p["kind"].as_str() {
        Some("unrestricted") => Ok(Principal::unrestricted(
            id,
            p["admin"].as_bool().unwrap_or(false),
        )),
        Some("key") => {
            let keys = keys.ok_or("this gateway has no key store to find the caller's key in")?;
            let key = keys
                .by_id(id)
                .await
                .map_err(|e| format!("the key store is unavailable: {e}"))?
                .ok_or_else(|| format!("the key {id} that submitted the work no longer exists"))?;
            if let Some(why) = key.unusable(modelgate_core::keys::now_ms()) {
                return Err(format!("the key {id} that submitted the work is {why}"));
            }
            Ok(crate::auth::principal_of(&key))
        }
        _ => Err("the stored principal is unreadable".into()),
    }
}

/// The stored principal of a caller: its reference, or the anonymous caller of an open
/// gateway.
pub(crate) fn caller_ref(principal: Option<&Principal>) -> Result<Value, Error> {
    match principal {
        Some(p) => principal_ref(p),
        None => Ok(json!({"kind": "unrestricted", "id": "anonymous", "admin": false})),
    }
}

/// A stored principal: enough to make the principal again when the job runs.
pub(crate) fn principal_ref(p: &Principal) -> Result<Value, Error> {
    if p.grants.unrestricted {
        return Ok(json!({"kind": "unrestricted", "id": p.id, "admin": p.admin}));
    }
    if p.id.starts_with("jwt:") {
        return Err(Error::refusal(
            ErrorKind::AccessDenied,
            "Asynchronous jobs run as an API key or SigV4 credentials; a JWT caller's grants end with its token, so it cannot submit jobs.",
        ));
    }
    Ok(json!({"kind": "key", "id": p.id}))
}

impl Jobs {
    /// The service over `queue` and `batches`.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        batches: Arc<dyn BatchStore>,
        objects: Objects,
        config: JobsConfig,
        webhooks: Option<webhook::Deliverer>,
        site: modelgate_core::access::Site,
        keys: Option<Arc<KeyService>>,
    ) -> Self {
        Self {
            queue,
            batches,
            objects,
            config,
            webhooks,
            site,
            keys,
            router: OnceLock::new(),
            metrics: OnceLock::new(),
            recorder: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Give the workers the router they send jobs through (once, after it is built).
    pub fn set_router(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// Count job attempts and webhook deliveries in these metrics.
    pub fn set_metrics(&self, metrics: Arc<modelgate_core::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn count(&self, job: &JobRecord, outcome: &'static str, ended: bool) {
        if let Some(m) = self.metrics.get() {
            let age = ended.then(|| {
                let ms = modelgate_core::keys::now_ms().saturating_sub(job.created_ms);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            });
            m.job_attempt(&job.kind, outcome, age);
        }
    }

    /// The stored request of a job: what to send, as whom.
    pub fn request(
        principal: Option<&Principal>,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<Value, Error> {
        let principal = caller_ref(principal)?;
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
            .collect();
        Ok(
            json!({"method": "POST", "path": path, "body": body, "headers": headers, "principal": principal}),
        )
    }

    /// Enqueue jobs and wake the workers; each comes back with whether it was created.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<(JobRecord, bool)>, Error> {
        let made = self.queue.enqueue(jobs).await.map_err(store_error)?;
        self.wake.notify_one();
        Ok(made)
    }

    /// Check a callback URL at submit time (and that webhooks can be signed).
    pub async fn check_callback(&self, url: &str) -> Result<(), Error> {
        if self.webhooks.is_none() {
            return Err(Error::validation(
                "This gateway cannot sign webhooks: set jobs.webhook_secret_env to the variable holding the signing secret.",
            ));
        }
        webhook::check_target(url, &self.config.webhook_allow)
            .await
            .map_err(Error::validation)
    }

    /// The principal a job runs as.
    async fn principal_of(&self, job: &JobRecord) -> Result<Principal, String> {
        resolve_principal(self.keys.as_ref(), &job.request["principal"]).await
    }

    /// Send a job's request through the router as its principal: the answer's status and body.
    async fn replay(&self, job: &JobRecord) -> Result<(u16, Value), Attempt> {
        let router = self
            .router
            .get()
            .ok_or_else(|| Attempt::Retry("the server is still starting".into()))?
            .clone();
        let principal = self.principal_of(job).await.map_err(Attempt::Fail)?;
        let r = &job.request;
        if let Some(url) = r["url"].as_str() {
            // A webhook (an event target): signed, through the guarded client.
            let hooks = self.webhooks.as_ref().ok_or_else(|| {
                Attempt::Fail("this gateway cannot sign webhooks (jobs.webhook_secret_env)".into())
            })?;
            let payload = serde_json::to_vec(&r["body"]).unwrap_or_default();
            return match hooks.post(url, &job.id, job.receives, &payload).await {
                Ok(status) => Ok((status, Value::Null)),
                Err(why) => Err(Attempt::Retry(why)),
            };
        }
        let path = r["path"].as_str().unwrap_or_default();
        let mut headers: Vec<(String, String)> = vec![("x-modelgate-job".into(), job.id.clone())];
        if let Some(h) = r["headers"].as_object() {
            headers.extend(
                h.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))),
            );
        }
        let call = call_router(router, principal, &job.id, path, &r["body"], &headers);
        match tokio::time::timeout(self.config.call_timeout, call).await {
            Ok(Ok(InProcess::Answer(status, _, body))) => Ok((status, body)),
            Ok(Ok(InProcess::Unusable(why))) => Err(Attempt::Fail(why)),
            Ok(Err(why)) => Err(Attempt::Retry(why)),
            Err(_) => Err(Attempt::Retry(format!(
                "the model call took longer than jobs.call_timeout ({}s)",
                self.config.call_timeout.as_secs()
            ))),
        }
    }

    /// Run one received job to its end (or its next attempt).
    async fn run(self: &Arc<Self>, job: JobRecord) {
        if let Some(m) = self.metrics.get() {
            m.job_running(1);
        }
        self.attempt(&job).await;
        if let Some(m) = self.metrics.get() {
            m.job_running(-1);
        }
    }

    async fn attempt(self: &Arc<Self>, job: &JobRecord) {
        let job = job.clone();
        let lease = job.lease();
        // Heartbeats keep the lease while the call runs; a lost lease (cancelled, or the
        // job given to another worker after a stall) stops the call.
        let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel::<()>();
        let beat = {
            let this = Arc::clone(self);
            let id = job.id.clone();
            tokio::spawn(async move {
                let vis = this.config.visibility_timeout;
                loop {
                    tokio::time::sleep(vis / 3).await;
                    match this.queue.heartbeat(&id, lease, vis).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = lost_tx.send(());
                            return;
                        }
                        Err(e) => tracing::warn!(job = %id, error = %e, "job heartbeat failed"),
                    }
                }
            })
        };
        let expired = job.kind == crate::events::KIND
            && job.meta["expires_ms"]
                .as_i64()
                .is_some_and(|t| modelgate_core::keys::now_ms() > t);
        let outcome = if expired {
            Some(Err(Attempt::Fail(
                "the event is older than its target's MaximumEventAgeInSeconds".into(),
            )))
        } else {
            tokio::select! {
                r = self.replay(&job) => Some(r),
                _ = &mut lost_rx => None,
            }
        };
        beat.abort();
        let Some(outcome) = outcome else {
            tracing::info!(job = %job.id, "job lease lost (cancelled or taken over); its call was stopped");
            self.count(&job, "lease_lost", false);
            return;
        };
        let attempt = match outcome {
            Ok((status, body)) => classify(status, body),
            Err(a) => a,
        };
        let attempt = match attempt {
            Attempt::Done(status, body) => match self.finish(&job, &body).await {
                Ok(()) => Attempt::Done(status, body),
                Err(e) => Attempt::Retry(e),
            },
            other => other,
        };
        let record = |end: JobEnd, outcome: &'static str| {
            let this = Arc::clone(self);
            let job = job.clone();
            async move {
                let recorded = this.complete(&job.id, lease, end).await?;
                this.count(
                    &job,
                    if recorded { outcome } else { "lease_lost" },
                    recorded,
                );
                Ok(())
            }
        };
        let result = match attempt {
            Attempt::Done(status, body) => {
                let end = JobEnd::Succeeded(json!({"status": status, "body": body}));
                record(end, "succeeded").await
            }
            // An event delivery that cannot succeed goes to the dead-letter queue at once
            // (EventBridge's rule for errors retrying would not change).
            Attempt::Rejected(status, body, message) if job.kind == crate::events::KIND => {
                let end = JobEnd::Dead(json!({"status": status, "body": body}), message);
                record(end, "dead").await
            }
            Attempt::Fail(message) if job.kind == crate::events::KIND => {
                let end = JobEnd::Dead(json!({"status": 0, "body": null}), message);
                record(end, "dead").await
            }
            Attempt::Rejected(status, body, message) => {
                let end = JobEnd::Failed(json!({"status": status, "body": body}), message);
                record(end, "failed").await
            }
            Attempt::Fail(message) => {
                let end = JobEnd::Failed(json!({"status": 0, "body": null}), message);
                record(end, "failed").await
            }
            Attempt::Retry(message) => {
                let refund = message.starts_with(BUSY);
                let attempts = u32::try_from(job.receives).unwrap_or(u32::MAX);
                let delay = backoff(
                    self.config.backoff_base,
                    self.config.backoff_max,
                    attempts,
                    fastrand::f64(),
                );
                let message = message.trim_start_matches(BUSY).to_string();
                match self
                    .queue
                    .retry(&job.id, lease, &message, delay, refund)
                    .await
                {
                    Ok(Requeued::Dead) => {
                        tracing::warn!(job = %job.id, error = %message, "job dead-lettered after its last attempt");
                        self.count(&job, "dead", true);
                        Ok(())
                    }
                    Ok(Requeued::Queued) => {
                        self.count(&job, "retried", false);
                        Ok(())
                    }
                    Ok(Requeued::LeaseLost) => {
                        self.count(&job, "lease_lost", false);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            // The lease runs out and another worker runs the job again.
            tracing::warn!(job = %job.id, error = %e, "cannot record the job's outcome");
        }
    }

    /// What a job does with a successful answer before it is recorded: async invocations
    /// write theirs where `outputDataConfig` says.
    async fn finish(&self, job: &JobRecord, body: &Value) -> Result<(), String> {
        if job.kind == bedrock::KIND {
            if let Some(uri) = job.meta["outputUri"].as_str() {
                let bytes = serde_json::to_vec(body).unwrap_or_default();
                self.objects
                    .put(&format!("{uri}/output.json"), &bytes)
                    .await
                    .map_err(|e| format!("cannot write the output to {uri}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Record a job's end: through the recorder (group commit) when it runs, else directly.
    async fn complete(
        &self,
        id: &str,
        lease: i64,
        end: JobEnd,
    ) -> Result<bool, modelgate_store::StoreError> {
        let Some(tx) = self.recorder.get() else {
            return self.queue.complete(id, lease, &end).await;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let c = Completion {
            id: id.to_string(),
            lease,
            end,
            reply,
        };
        if tx.send(c).await.is_err() {
            return Err(modelgate_store::StoreError::Unavailable(
                "the result recorder stopped".into(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(modelgate_store::StoreError::Unavailable(
                "the result recorder stopped".into(),
            ))
        })
    }

    /// Group commit: results that arrive while one write runs are written together, in one
    /// transaction, by the next (nothing waits when the queue is quiet).
    async fn record_loop(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<Completion>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 500 {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let ends: Vec<(String, i64, JobEnd)> = batch
                .iter()
                .map(|c| (c.id.clone(), c.lease, c.end.clone()))
                .collect();
            match self.queue.complete_many(&ends).await {
                Ok(done) => {
                    for (c, recorded) in batch.into_iter().zip(done) {
                        let _ = c.reply.send(Ok(recorded));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for c in batch {
                        let _ = c.reply.send(Err(modelgate_store::StoreError::Unavailable(
                            message.clone(),
                        )));
                    }
                }
            }
        }
    }

    /// Start the workers, the lease sweeper, the webhook sender and the batch finaliser.
    pub fn start(self: &Arc<Self>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        if self.recorder.set(tx).is_ok() {
            tokio::spawn(Arc::clone(self).record_loop(rx));
        }
        if self.config.workers {
            tokio::spawn(Arc::clone(self).receive_loop());
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.queue.requeue_expired().await {
                    tracing::warn!(error = %e, "cannot requeue jobs whose lease ran out");
                }
                batches::finalise(&this).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        if self.webhooks.is_some() {
            tokio::spawn(Arc::clone(self).hook_loop());
        }
    }

    async fn receive_loop(self: Arc<Self>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency));
        loop {
            // Wait for a free slot, then take as many jobs as there are free slots.
            let Ok(first) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let free = slots.available_permits() + 1;
            let skip: Vec<String> = self
                .running
                .lock()
                .map(|r| {
                    r.iter()
                        .filter(|(_, n)| **n >= self.config.per_model_concurrency)
                        .map(|(m, _)| m.clone())
                        .collect()
                })
                .unwrap_or_default();
            // At most one model's room per receive, so few jobs ever go back.
            let max = free.min(self.config.per_model_concurrency).max(1);
            let received = self
                .queue
                .receive(
                    u32::try_from(max).unwrap_or(u32::MAX),
                    self.config.visibility_timeout,
                    &skip,
                )
                .await;
            let jobs = match received {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot receive jobs");
                    drop(first);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if jobs.is_empty() {
                drop(first);
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            let mut permit = Some(first);
            for job in jobs {
                let model = job.model.clone().unwrap_or_default();
                // A receive may bring more of one model than it has room for: those go back.
                let room = self.running.lock().is_ok_and(|mut r| {
                    let n = r.entry(model.clone()).or_default();
                    if *n >= self.config.per_model_concurrency {
                        false
                    } else {
                        *n += 1;
                        true
                    }
                });
                if !room {
                    if let Err(e) = self.queue.release(&job.id, job.lease()).await {
                        tracing::warn!(job = %job.id, error = %e, "cannot put a job back; its lease will run out");
                    }
                    continue;
                }
                let p = match permit.take() {
                    Some(p) => p,
                    None => match Arc::clone(&slots).acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let this = Arc::clone(&self);
                tokio::spawn(async move {
                    this.run(job).await;
                    if let Ok(mut r) = this.running.lock() {
                        if let Some(n) = r.get_mut(&model) {
                            *n -= 1;
                            if *n == 0 {
                                r.remove(&model);
                            }
                        }
                    }
                    drop(p);
                });
            }
        }
    }

    async fn hook_loop(self: Arc<Self>) {
        let Some(d) = &self.webhooks else { return };
        let lease = self.config.webhook_timeout * 2 + Duration::from_secs(5);
        loop {
            let due = match self.queue.due_hooks(16, lease).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due webhooks");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            let queue = &self.queue;
            let metrics = self.metrics.get();
            let sends = due.into_iter().map(|job| async move {
                let payload = serde_json::to_vec(&api::view(&job)).unwrap_or_default();
                let (delivery, next) = d.deliver(&job, &payload).await;
                if let Some(m) = metrics {
                    m.webhook(match next {
                        modelgate_store::HookNext::Delivered => "delivered",
                        modelgate_store::HookNext::RetryAt(_) => "retry",
                        modelgate_store::HookNext::GiveUp => "given_up",
                    });
                }
                if let Err(e) = queue.record_delivery(&delivery, next).await {
                    tracing::warn!(job = %job.id, error = %e, "cannot record a webhook delivery");
                }
            });
            futures::future::join_all(sends).await;
        }
    }
}

/// The prefix of a retry message that does not use up an attempt (the caller's or model's
/// rate limit: the job waits its turn).
const BUSY: &str = "busy: ";

/// A result on its way to the recorder.
struct Completion {
    id: String,
    lease: i64,
    end: JobEnd,
    reply: tokio::sync::oneshot::Sender<Result<bool, modelgate_store::StoreError>>,
}

/// How one attempt ended.
enum Attempt {
    /// A 2xx answer.
    Done(u16, Value),
    /// A 4xx answer that retrying would not change.
    Rejected(u16, Value, String),
    /// The job cannot run (its key was revoked…).
    Fail(String),
    /// Worth another attempt (5xx, timeouts; throttled, with [`BUSY`], without using one up).
    Retry(String),
}

/// The error message of an answer in any dialect.
fn message_of(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["message"].as_str())
        .or_else(|| body["Message"].as_str())
        .or_else(|| body.as_str())
        .unwrap_or("no message")
        .chars()
        .take(2000)
        .collect()
}

fn classify(status: u16, body: Value) -> Attempt {
    match status {
        200..=299 => Attempt::Done(status, body),
        429 => Attempt::Retry(format!("{BUSY}{status}: {}", message_of(&body))),
        408 | 500..=599 => Attempt::Retry(format!("{status}: {}", message_of(&body))),
        _ => {
            let message = format!("{status}: {}", message_of(&body));
            Attempt::Rejected(status, body, message)
        }
    }
}

/// A storage failure as the caller's error.
pub fn store_error(e: modelgate_store::StoreError) -> Error {
    Error::new(
        ErrorKind::ServiceUnavailable,
        format!("The job store is unavailable: {e}"),
    )
}

/// A new id: `prefix` and 24 lowercase hex characters.
pub fn new_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &u[..24])
}
