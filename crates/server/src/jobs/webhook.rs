//! Webhook delivery: a signed POST of the job's final view to its callback URL, retried with
//! exponential backoff, every attempt recorded.
//!
//! Callbacks may not reach loopback, private, link-local or other internal addresses unless
//! `jobs.webhook_allow` lists them (server-side request forgery). The check runs on the
//! addresses DNS gives, inside the HTTP client's resolver, so the connection goes to an address
//! that was checked (a name that resolves differently the second time gains nothing), and
//! redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_core::jobs::{forbidden_target, sign_webhook};
use modelgate_store::{Delivery, HookNext, JobRecord};

/// Networks callbacks may reach although internal, shared with the resolver.
type Allow = Arc<Vec<ipnet::IpNet>>;

/// A resolver that drops forbidden addresses and fails when none is left.
struct GuardedResolver {
    allow: Allow,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.allow);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match forbidden_target(a.ip(), &allow) {
                    Some(why) => {
                        refused = Some(format!("{host} resolves to {} ({why})", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if ok.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(format!("callback target refused: {why}").into());
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The address a URL names literally (`http://10.0.0.1/`, `http://[::1]/`), if it does.
pub(crate) fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The guard at submit time too, so a caller hears at once that a callback cannot be
/// delivered: the URL's form, and every address its host resolves to now.
pub async fn check_target(url: &str, allow: &[ipnet::IpNet]) -> Result<(), String> {
    modelgate_core::jobs::check_callback_url(url)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("callback URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let ips: Vec<IpAddr> = match literal_ip(&parsed) {
        Some(ip) => vec![ip],
        None => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("callback host '{host}' does not resolve: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in ips {
        if let Some(why) = forbidden_target(ip, allow) {
            return Err(format!(
                "callback target {ip} is {why}; add it to jobs.webhook_allow to allow it"
            ));
        }
    }
    Ok(())
}

fn guarded(allow: Allow, timeout: Duration, agent: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow }))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(agent)
        .build()?)
}

/// An HTTP client that reaches no internal address outside `allow` (its resolver drops them)
/// and follows no redirect: for any request whose target a caller chose.
pub fn guarded_client(
    allow: Vec<ipnet::IpNet>,
    timeout: Duration,
    agent: &str,
) -> anyhow::Result<reqwest::Client> {
    guarded(Arc::new(allow), timeout, agent)
}

/// Sends webhooks.
pub struct Deliverer {
    client: reqwest::Client,
    allow: Allow,
    secret: Vec<u8>,
    max_attempts: u32,
    backoff: Duration,
}

impl Deliverer {
    /// A deliverer signing with `secret`.
    pub fn new(
        secret: Vec<u8>,
        allow: Vec<ipnet::IpNet>,
        timeout: Duration,
        max_attempts: u32,
        backoff: Duration,
    ) -> anyhow::Result<Self> {
        let allow: Allow = Arc::new(allow);
        let client = guarded(
            Arc::clone(&allow),
            timeout,
            concat!("modelgate-webhooks/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Self {
            client,
            allow,
            secret,
            max_attempts,
            backoff,
        })
    }

    /// One delivery attempt of `job`'s `payload`; what to record and what comes next.
    pub async fn deliver(&self, job: &JobRecord, payload: &[u8]) -> (Delivery, HookNext) {
        let attempt = job.hook_attempts + 1;
        let started = Instant::now();
        let now = modelgate_core::keys::now_ms();
        let url = job.callback.clone().unwrap_or_default();
        let result = self.post(&url, &job.id, attempt, payload).await;
        let (status, error) = match result {
            Ok(s) if (200..300).contains(&s) => (Some(i64::from(s)), None),
            Ok(s) => (
                Some(i64::from(s)),
                Some(format!("the receiver answered {s}")),
            ),
            Err(e) => (None, Some(e)),
        };
        let delivered = error.is_none();
        let next = if delivered {
            HookNext::Delivered
        } else if attempt >= i64::from(self.max_attempts) {
            HookNext::GiveUp
        } else {
            let delay = modelgate_core::jobs::backoff(
                self.backoff,
                Duration::from_secs(3600),
                u32::try_from(attempt).unwrap_or(u32::MAX),
                fastrand::f64(),
            );
            HookNext::RetryAt(now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
        };
        let delivery = Delivery {
            job_id: job.id.clone(),
            attempt,
            ts_ms: now,
            status,
            error,
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        };
        (delivery, next)
    }

    /// POST `payload` to `url`, signed (`modelgate-signature`), with the delivery's id and
    /// attempt number: the receiver's status, or why it could not be reached.
    pub(crate) async fn post(
        &self,
        url: &str,
        id: &str,
        attempt: i64,
        payload: &[u8],
    ) -> Result<u16, String> {
        // IP literals never reach the resolver: check them here.
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("callback URL: {e}"))?;
        if let Some(ip) = literal_ip(&parsed) {
            if let Some(why) = forbidden_target(ip, &self.allow) {
                return Err(format!("callback target refused: {ip} is {why}"));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = sign_webhook(&self.secret, now, payload);
        let response = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("modelgate-signature", signature)
            .header("modelgate-webhook-id", id)
            .header("modelgate-delivery-attempt", attempt.to_string())
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| {
                // The resolver's refusal is the most useful part of the chain.
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                msg
            })?;
        Ok(response.status().as_u16())
    }
}
