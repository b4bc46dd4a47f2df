//! Asynchronous work: the `[jobs]` settings, retry backoff, webhook signatures and the guard
//! that keeps callbacks off private networks. The queue itself is `modelgate_store::JobQueue`;
//! the workers and front doors are in the server.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// `[jobs]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run the workers in this process (a replica can serve the API only).
    pub workers: bool,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// Jobs of one model run at once by this process (so a batch does not take every slot of
    /// a model that interactive callers also use; the model's own rate limits still apply).
    pub per_model_concurrency: usize,
    /// How long a received job is hidden from other workers; the worker heartbeats every
    /// third of it while the job runs, so a dead worker's jobs come back after at most this.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Receives before a job goes to the dead-letter queue.
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt, with jitter, up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long one model call of a job may take.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Where the built-in object store keeps `s3://bucket/key` objects (default:
    /// `<data dir>/objects`).
    pub objects_dir: Option<std::path::PathBuf>,
    /// `[jobs.object_store]`: the built-in store, or an S3-compatible service.
    pub object_store: ObjectStoreConfig,
    /// The bucket uploaded files (`/v1/files`) and batch output files are kept in.
    pub files_bucket: String,
    /// Largest file `POST /v1/files` accepts.
    pub max_file_bytes: u64,
    /// Most requests in one batch.
    pub max_batch_requests: usize,
    /// A batch's completion window: requests that have not run when it ends are not run
    /// (the batch `expired`). OpenAI and Anthropic both promise 24 hours.
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
    /// Synchronous requests whose input is longer than this many characters become jobs
    /// (`202` with the job id) on the routes in `async_routes`; 0: never.
    pub async_over_chars: usize,
    /// Routes (`POST /v1/chat/completions`…, the path) where `async_over_chars` applies.
    pub async_routes: Vec<String>,
    /// Models whose large calls become jobs on any model route.
    pub async_models: Vec<String>,
    /// Webhooks: the environment variable holding the signing secret (callbacks are refused
    /// without one).
    pub webhook_secret_env: Option<String>,
    /// Delivery attempts before a webhook is given up.
    pub webhook_max_attempts: u32,
    /// First redelivery delay (doubled each attempt).
    #[serde(with = "humantime_serde")]
    pub webhook_backoff: Duration,
    /// How long a receiver may take to answer.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Networks callbacks may reach although they are private, loopback or link-local
    /// (CIDRs, e.g. `127.0.0.1/32`).
    pub webhook_allow: Vec<IpNet>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: true,
            concurrency: 16,
            per_model_concurrency: 4,
            visibility_timeout: Duration::from_secs(600),
            max_attempts: 3,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            call_timeout: Duration::from_secs(300),
            objects_dir: None,
            object_store: ObjectStoreConfig::default(),
            files_bucket: "modelgate-files".into(),
            max_file_bytes: 200 * 1024 * 1024,
            max_batch_requests: 50_000,
            batch_window: Duration::from_secs(24 * 3600),
            async_over_chars: 0,
            async_routes: Vec::new(),
            async_models: Vec::new(),
            webhook_secret_env: None,
            webhook_max_attempts: 8,
            webhook_backoff: Duration::from_secs(1),
            webhook_timeout: Duration::from_secs(10),
            webhook_allow: Vec::new(),
        }
    }
}

/// Which object store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreKind {
    /// Files under `jobs.objects_dir`.
    #[default]
    Local,
    /// An S3-compatible service.
    S3,
}

/// `[jobs.object_store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// `local` (default) or `s3`.
    #[serde(rename = "type")]
    pub kind: ObjectStoreKind,
    /// The service's URL (MinIO, Ceph…); AWS S3 itself without one.
    pub endpoint: Option<String>,
    /// The signing region.
    pub region: String,
    /// Environment variable holding the access key id.
    pub access_key_id_env: Option<String>,
    /// Environment variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// Address buckets as `bucket.host` rather than `host/bucket`.
    pub virtual_hosted_style: bool,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self {
            kind: ObjectStoreKind::Local,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id_env: None,
            secret_access_key_env: None,
            allow_http: false,
            virtual_hosted_style: false,
        }
    }
}

impl JobsConfig {
    /// Check the settings, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.object_store.kind == ObjectStoreKind::S3
            && (self.object_store.access_key_id_env.is_none()
                || self.object_store.secret_access_key_env.is_none())
        {
            return Err("jobs.object_store: type = \"s3\" needs access_key_id_env and secret_access_key_env".into());
        }
        if self.concurrency == 0 || self.per_model_concurrency == 0 {
            return Err(
                "jobs.concurrency and jobs.per_model_concurrency must be at least 1".into(),
            );
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err("jobs.max_attempts must be 1 to 100".into());
        }
        if self.visibility_timeout < Duration::from_secs(1) {
            return Err("jobs.visibility_timeout must be at least 1s".into());
        }
        if self.webhook_max_attempts == 0 {
            return Err("jobs.webhook_max_attempts must be at least 1".into());
        }
        if self.backoff_base > self.backoff_max {
            return Err("jobs.backoff_base must not exceed jobs.backoff_max".into());
        }
        Ok(())
    }
}

/// The delay before retry `attempt` (1 = the first retry): `base · 2^(attempt−1)`, capped,
/// with "equal jitter" (half fixed, half random) so retries of many jobs spread out.
pub fn backoff(base: Duration, max: Duration, attempt: u32, random: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped / 2 + capped.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// The signature header of a webhook delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`. Receivers recompute it and compare in constant time, and refuse a
/// timestamp more than five minutes old (replays).
pub fn sign_webhook(secret: &[u8], unix_secs: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix_secs.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_secs},v1={hex}")
}

/// Whether a webhook signature header is right for `body` and not older than `tolerance`
/// at `now_secs` (what a Rust receiver runs; `docs/jobs.md` shows the Python one).
pub fn verify_webhook(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance: Duration,
) -> bool {
    crate::hooks::timestamped(secret, header, body, now_secs, tolerance)
}

/// Why an address may not be a callback target: loopback, private, link-local, shared
/// (carrier-grade NAT), unspecified, multicast, broadcast or documentation ranges — unless an
/// allowed network contains it.
pub fn forbidden_target(ip: IpAddr, allow: &[IpNet]) -> Option<&'static str> {
    if allow.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared address space")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some("multicast or reserved")
            } else if v4.is_documentation() {
                Some("documentation")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast or reserved")
            } else {
                None
            }
        }
    }
}

/// Check a callback URL's form: `http` or `https`, with a host, no credentials.
pub fn check_callback_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("callback URL '{url}' is not an absolute http(s) URL"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "callback URL scheme '{scheme}' is not http or https"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("callback URL '{url}' has no host"));
    }
    if authority.contains('@') {
        return Err("callback URLs may not carry credentials".into());
    }
    if url.len() > 2048 {
        return Err("callback URL is longer than 2048 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let (b, m) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(b, m, 1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(b, m, 3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(b, m, 30, 1.0), m);
        assert!(backoff(b, m, 30, 0.0) >= m / 2);
    }

    #[test]
    fn signatures_verify_and_refuse_tampering_and_replays() {
        let body = br#"{"id":"job_1"}"#;
        let h = sign_webhook(b"whsec", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        let tol = Duration::from_secs(300);
        assert!(verify_webhook(b"whsec", &h, body, 1_700_000_100, tol));
        assert!(!verify_webhook(b"other", &h, body, 1_700_000_100, tol));
        assert!(!verify_webhook(b"whsec", &h, b"{}", 1_700_000_100, tol));
        assert!(!verify_webhook(b"whsec", &h, body, 1_700_001_000, tol));
        assert!(!verify_webhook(b"whsec", "t=1,v1=zz", body, 1, tol));
    }

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(forbidden_target(ip(bad), &[]).is_some(), "{bad}");
        }
        assert!(forbidden_target(ip("93.184.216.34"), &[]).is_none());
        assert!(forbidden_target(ip("2606:2800:220:1::1"), &[]).is_none());
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap_or_else(|_| IpNet::default())];
        assert!(forbidden_target(ip("127.0.0.1"), &allow).is_none());
        assert!(forbidden_target(ip("127.0.0.2"), &allow).is_some());
    }

    #[test]
    fn callback_urls_must_be_plain_http() {
        assert!(check_callback_url("https://example.com/hook").is_ok());
        assert!(check_callback_url("ftp://example.com").is_err());
        assert!(check_callback_url("https://user:pw@example.com").is_err());
        assert!(check_callback_url("example.com").is_err());
    }
}
