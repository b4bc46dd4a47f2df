//! API keys: their secrets, their settings, and the service that creates, rotates, revokes
//! and resolves them.
//!
//! A key's secret (`mg_` + 43 base64url characters, 256 random bits) is shown once, at
//! creation or rotation. The store keeps only its first 12 characters after `mg_` (the lookup
//! prefix) and an HMAC-SHA-256 of the whole secret under the server secret. Each key also has
//! a SigV4 access key pair for AWS SDK callers: the access key id is stored, and the secret
//! access key is derived from the server secret and the access key id, so it is never stored
//! either. Resolved keys are cached for a few seconds so the hot path does not touch the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use modelgate_store::{KeyRecord, KeyStore, StoreError, TeamRecord};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{Policy, PolicyError};

/// The prefix of every secret Modelgate issues.
pub const SECRET_PREFIX: &str = "mg_";
/// Characters of the secret (after `mg_`) used to look it up.
const LOOKUP_LEN: usize = 12;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 with milliseconds (`2026-12-01T02:04:33.123Z`) of Unix milliseconds, as AWS's
/// JSON APIs write timestamps.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Rate limits of a key, a team, a model, a route or the whole gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Requests per second (steady rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    /// Requests allowed at once above the steady rate (default: 2× `rps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Tokens (input + output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
}

impl LimitSpec {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.rps.is_none() && self.tpm.is_none() && self.concurrent.is_none()
    }

    /// Check the numbers (zero rates make no sense; a burst below the rate is refused).
    pub fn check(&self) -> Result<(), String> {
        if self.rps == Some(0) || self.tpm == Some(0) || self.concurrent == Some(0) {
            return Err("limits must be at least 1 (leave a limit out for none)".into());
        }
        if self.burst.is_some() && self.rps.is_none() {
            return Err("limits.burst needs limits.rps".into());
        }
        if self.burst == Some(0) {
            return Err("limits.burst must be at least 1".into());
        }
        Ok(())
    }
}

/// How long a budget's period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
    /// Fixed windows of this length, aligned to the Unix epoch.
    Every(Duration),
}

impl Period {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "day" | "daily" => Ok(Period::Day),
            "month" | "monthly" => Ok(Period::Month),
            other => match humantime::parse_duration(other) {
                Ok(d) if d >= Duration::from_secs(60) => Ok(Period::Every(d)),
                Ok(_) => Err(format!(
                    "budget period '{other}' is shorter than one minute"
                )),
                Err(e) => Err(format!(
                    "budget period '{other}' is not day, month or a duration like 7d: {e}"
                )),
            },
        }
    }

    /// The start and end (Unix ms) of the period holding `now_ms`.
    pub fn window(&self, now_ms: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000;
        match self {
            Period::Day => {
                let start = now_ms.div_euclid(DAY) * DAY;
                (start, start + DAY)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY));
                let start = days_from_civil(y, m, 1) * DAY;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm, 1) * DAY)
            }
            Period::Every(d) => {
                let len = i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
                let start = now_ms.div_euclid(len) * len;
                (start, start.saturating_add(len))
            }
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Period::Day => s.serialize_str("day"),
            Period::Month => s.serialize_str("month"),
            Period::Every(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's civil calendar algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A spending limit over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Its name (in errors and notifications).
    pub name: String,
    /// The limit in US dollars.
    pub limit_usd: f64,
    /// The period it resets after.
    pub period: Period,
    /// `hard` blocks calls once spent; `soft` only notifies.
    #[serde(default = "hard")]
    pub mode: BudgetMode,
    /// Where a soft budget's notification is POSTed (once per period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

fn hard() -> BudgetMode {
    BudgetMode::Hard
}

/// Whether a budget blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMode {
    /// Calls are refused once the budget is spent.
    Hard,
    /// A webhook is notified once when the budget is spent.
    Soft,
}

impl BudgetSpec {
    /// The limit in nano-dollars.
    pub fn limit_nanos(&self) -> i64 {
        (self.limit_usd * 1e9).round() as i64
    }
}

/// What a key or a team carries besides its secret: who it is and what it may do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Roles (`admin` may use the admin API; `invoke` may call any model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Tags, readable by policies as `aws:PrincipalTag/<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Free-form metadata (never interpreted).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, Value>,
    /// IAM-grammar policy documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Value>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "LimitSpec::is_empty")]
    pub limits: LimitSpec,
    /// Budgets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetSpec>,
}

impl Settings {
    /// Read settings from stored JSON.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }

    /// Parse the policies and check every number, so that nothing malformed is ever saved.
    pub fn check(&self) -> Result<Vec<Arc<Policy>>, String> {
        self.limits.check()?;
        for (i, b) in self.budgets.iter().enumerate() {
            if !(b.limit_usd.is_finite() && b.limit_usd > 0.0) {
                return Err(format!(
                    "budgets[{i}] ('{}'): limit_usd must be above 0",
                    b.name
                ));
            }
            if b.mode == BudgetMode::Soft && b.webhook.is_none() {
                return Err(format!(
                    "budgets[{i}] ('{}'): a soft budget needs a webhook to notify",
                    b.name
                ));
            }
        }
        for r in &self.roles {
            if r.is_empty() {
                return Err("roles must not be empty strings".into());
            }
        }
        self.policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Policy::parse(p)
                    .map(Arc::new)
                    .map_err(|PolicyError(m)| format!("policies[{i}]: {m}"))
            })
            .collect()
    }
}

/// The policy every new key gets when none is given: call any model, nothing else.
pub fn default_invoke_policy() -> Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "InvokeAnyModel",
            "Effect": "Allow",
            "Action": [
                "bedrock:InvokeModel",
                "bedrock:InvokeModelWithResponseStream",
                "bedrock:Converse*",
                "bedrock:CountTokens"
            ],
            "Resource": "*"
        }]
    })
}

/// The policy of the `admin` role: everything.
pub fn admin_policy() -> Value {
    serde_json::json!({"Statement": [{"Sid": "AdminRole", "Effect": "Allow", "Action": "*", "Resource": "*"}]})
}

/// The built-in roles: `admin` (everything) and `invoke` (call any model).
fn builtin_roles() -> HashMap<String, Vec<Arc<Policy>>> {
    let mut roles = HashMap::new();
    for (name, doc) in [
        ("admin", admin_policy()),
        ("invoke", default_invoke_policy()),
    ] {
        if let Ok(p) = Policy::parse(&doc) {
            roles.insert(name.to_string(), vec![Arc::new(p)]);
        }
    }
    roles
}

/// A key as resolved for a call: its record, settings, team settings, and parsed policies.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The stored record.
    pub record: KeyRecord,
    /// The key's settings.
    pub settings: Settings,
    /// The key's team, when it has one that exists.
    pub team: Option<Arc<ResolvedTeam>>,
    /// The key's own policies and its roles' (the team's are on the team).
    pub policies: Vec<Arc<Policy>>,
}

impl ResolvedKey {
    /// Why the key cannot be used now, if it cannot.
    pub fn unusable(&self, now_ms: i64) -> Option<&'static str> {
        match status(&self.record, now_ms) {
            "revoked" => Some("The API key has been revoked."),
            "expired" => Some("The API key has expired."),
            _ => None,
        }
    }
}

/// A key's status at `now_ms`: `active`, `revoked` or `expired`.
pub fn status(record: &KeyRecord, now_ms: i64) -> &'static str {
    if record.revoked_ms.is_some() {
        "revoked"
    } else if record.expires_ms.is_some_and(|e| e <= now_ms) {
        "expired"
    } else {
        "active"
    }
}

/// A team as resolved for calls: its settings and parsed policies.
#[derive(Debug)]
pub struct ResolvedTeam {
    /// The team id.
    pub id: String,
    /// Its settings.
    pub settings: Settings,
    /// Its policies, parsed.
    pub policies: Vec<Arc<Policy>>,
}

/// What a newly issued (or rotated) key's holder is shown, once.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedSecret {
    /// The bearer secret (`Authorization: Bearer …`, `x-api-key: …`).
    pub key: String,
    /// The SigV4 access key id (AWS SDKs).
    pub access_key_id: String,
    /// The SigV4 secret access key.
    pub secret_access_key: String,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request is wrong (bad settings, unknown key).
    #[error("{0}")]
    Invalid(String),
    /// No such key.
    #[error("no key with id '{0}'")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cached lookups: prefix or `ak:<access key id>` → the key (or none) and when it was read.
type KeyCache = Cached<ResolvedKey>;

/// Lookups by name: the thing (or none) and when it was read.
type Cached<T> = HashMap<String, (Option<Arc<T>>, Instant)>;

/// Creates, rotates, revokes and resolves keys.
pub struct KeyService {
    store: Arc<dyn KeyStore>,
    mac: hmac::Key,
    rng: SystemRandom,
    ttl: Duration,
    cache: Mutex<KeyCache>,
    teams: Mutex<Cached<ResolvedTeam>>,
    roles: HashMap<String, Vec<Arc<Policy>>>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Most cached lookups (found or not) kept at once.
const CACHE_ENTRIES: usize = 10_000;

impl KeyService {
    /// A service over `store`, hashing with `server_secret`, caching lookups for `ttl`.
    pub fn new(store: Arc<dyn KeyStore>, server_secret: &[u8], ttl: Duration) -> Self {
        Self {
            store,
            mac: hmac::Key::new(hmac::HMAC_SHA256, server_secret),
            rng: SystemRandom::new(),
            ttl,
            cache: Mutex::new(HashMap::new()),
            teams: Mutex::new(HashMap::new()),
            roles: builtin_roles(),
        }
    }

    /// Add configured roles (`[auth.roles]`), checked when the configuration was loaded.
    pub fn with_roles(
        mut self,
        roles: &std::collections::BTreeMap<String, Vec<Value>>,
    ) -> Result<Self, PolicyError> {
        for (name, docs) in roles {
            let policies = docs
                .iter()
                .map(|d| Policy::parse(d).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            self.roles.insert(name.clone(), policies);
        }
        Ok(self)
    }

    /// The policies of `roles` (unknown roles give none).
    pub fn role_policies<'a>(&self, roles: impl IntoIterator<Item = &'a str>) -> Vec<Arc<Policy>> {
        roles
            .into_iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .cloned()
            .collect()
    }

    /// A team, if it exists; cached like keys (a key's and a JWT caller's team alike).
    pub async fn team(&self, id: &str) -> Result<Option<Arc<ResolvedTeam>>, KeyError> {
        if let Some((hit, at)) = lock(&self.teams).get(id) {
            if at.elapsed() < self.ttl {
                return Ok(hit.clone());
            }
        }
        let resolved = match self.store.team(id).await? {
            Some(t) => {
                let corrupt = |e: String| StoreError::Corrupt(format!("team {id}: {e}"));
                let settings = Settings::from_json(&t.body).map_err(corrupt)?;
                let policies = settings.check().map_err(corrupt)?;
                Some(Arc::new(ResolvedTeam {
                    id: id.to_string(),
                    settings,
                    policies,
                }))
            }
            None => None,
        };
        let mut teams = lock(&self.teams);
        if teams.len() >= CACHE_ENTRIES {
            teams.clear();
        }
        teams.insert(id.to_string(), (resolved.clone(), Instant::now()));
        Ok(resolved)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    fn random(&self, n: usize) -> Result<Vec<u8>, KeyError> {
        let mut buf = vec![0u8; n];
        self.rng
            .fill(&mut buf)
            .map_err(|_| KeyError::Invalid("the system random source failed".into()))?;
        Ok(buf)
    }

    fn hash(&self, secret: &str) -> String {
        hex(hmac::sign(&self.mac, secret.as_bytes()).as_ref())
    }

    /// The SigV4 secret access key of `access_key_id` (derived, never stored).
    pub fn sigv4_secret(&self, access_key_id: &str) -> String {
        let tag = hmac::sign(&self.mac, format!("sigv4\0{access_key_id}").as_bytes());
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&tag.as_ref()[..30])
    }

    /// A fresh secret, its lookup prefix, hash and access key id.
    fn fresh(&self) -> Result<(IssuedSecret, String, String), KeyError> {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.random(32)?);
        let key = format!("{SECRET_PREFIX}{body}");
        let prefix = body[..LOOKUP_LEN].to_string();
        const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let access_key_id: String = std::iter::once("AKMG".to_string())
            .chain(
                self.random(16)?
                    .iter()
                    .map(|b| char::from(B32[usize::from(b % 32)]).to_string()),
            )
            .collect();
        let hash = self.hash(&key);
        let secret_access_key = self.sigv4_secret(&access_key_id);
        Ok((
            IssuedSecret {
                key,
                access_key_id,
                secret_access_key,
            },
            prefix,
            hash,
        ))
    }

    /// Create a key. Without policies or roles it gets [`default_invoke_policy`].
    pub async fn create(
        &self,
        team: Option<String>,
        mut settings: Settings,
        expires_ms: Option<i64>,
    ) -> Result<(KeyRecord, IssuedSecret), KeyError> {
        if settings.policies.is_empty() && settings.roles.is_empty() {
            settings.policies.push(default_invoke_policy());
        }
        settings.check().map_err(KeyError::Invalid)?;
        if let Some(t) = &team {
            if t.is_empty() {
                return Err(KeyError::Invalid("team must not be empty".into()));
            }
        }
        let (issued, prefix, hash) = self.fresh()?;
        let id = format!("key_{}", hex(&self.random(8)?));
        let record = KeyRecord {
            id,
            prefix,
            hash,
            access_key_id: issued.access_key_id.clone(),
            team,
            created_ms: now_ms(),
            expires_ms,
            revoked_ms: None,
            body: serde_json::to_value(&settings).map_err(|e| KeyError::Invalid(e.to_string()))?,
        };
        self.store.insert_key(&record).await?;
        Ok((record, issued))
    }

    async fn existing(&self, id: &str) -> Result<KeyRecord, KeyError> {
        self.store
            .key(id)
            .await?
            .ok_or_else(|| KeyError::NotFound(id.to_string()))
    }

    /// Replace a key's secret: the old one stops working at once (on other replicas, within
    /// the cache time).
    pub async fn rotate(&self, id: &str) -> Result<(KeyRecord, IssuedSecret), KeyError> {
        let mut record = self.existing(id).await?;
        if record.revoked_ms.is_some() {
            return Err(KeyError::Invalid(format!("key '{id}' is revoked")));
        }
        let old = (record.prefix.clone(), record.access_key_id.clone());
        let (issued, prefix, hash) = self.fresh()?;
        record.prefix = prefix;
        record.hash = hash;
        record.access_key_id = issued.access_key_id.clone();
        self.store.update_key(&record).await?;
        self.forget(&old.0, &old.1);
        Ok((record, issued))
    }

    /// Revoke a key (for good).
    pub async fn revoke(&self, id: &str) -> Result<KeyRecord, KeyError> {
        let mut record = self.existing(id).await?;
        record.revoked_ms.get_or_insert_with(now_ms);
        self.store.update_key(&record).await?;
        self.forget(&record.prefix, &record.access_key_id);
        Ok(record)
    }

    /// Change a key's expiry or settings.
    pub async fn update(
        &self,
        id: &str,
        settings: Option<Settings>,
        expires_ms: Option<Option<i64>>,
    ) -> Result<KeyRecord, KeyError> {
        let mut record = self.existing(id).await?;
        if let Some(s) = settings {
            s.check().map_err(KeyError::Invalid)?;
            record.body = serde_json::to_value(&s).map_err(|e| KeyError::Invalid(e.to_string()))?;
        }
        if let Some(e) = expires_ms {
            record.expires_ms = e;
        }
        self.store.update_key(&record).await?;
        self.forget(&record.prefix, &record.access_key_id);
        Ok(record)
    }

    /// Save a team's settings (checked first).
    pub async fn put_team(&self, id: &str, settings: &Settings) -> Result<(), KeyError> {
        if id.is_empty() || id.len() > 128 {
            return Err(KeyError::Invalid("a team id is 1 to 128 characters".into()));
        }
        settings.check().map_err(KeyError::Invalid)?;
        self.store
            .put_team(&TeamRecord {
                id: id.to_string(),
                updated_ms: now_ms(),
                body: serde_json::to_value(settings)
                    .map_err(|e| KeyError::Invalid(e.to_string()))?,
            })
            .await?;
        // Keys carry their team's settings: forget both.
        lock(&self.teams).remove(id);
        self.lock().clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        lock(&self.cache)
    }

    /// Drop the cached lookups of a key (by its secret's prefix and its access key id).
    fn forget(&self, prefix: &str, access_key_id: &str) {
        let mut cache = self.lock();
        cache.remove(prefix);
        cache.remove(&format!("ak:{access_key_id}"));
    }

    /// The key a bearer secret belongs to, if the secret is right (compared in constant time
    /// through its keyed hash). Revoked and expired keys are returned too; the caller decides.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Arc<ResolvedKey>>, KeyError> {
        let Some(body) = secret.strip_prefix(SECRET_PREFIX) else {
            return Ok(None);
        };
        let Some(prefix) = body.get(..LOOKUP_LEN) else {
            return Ok(None);
        };
        let Some(key) = self.lookup(prefix, Lookup::Prefix).await? else {
            return Ok(None);
        };
        let given = hmac::sign(&self.mac, secret.as_bytes());
        let stored = unhex(&key.record.hash);
        let ok = bool::from(subtle::ConstantTimeEq::ct_eq(
            stored.as_slice(),
            given.as_ref(),
        ));
        Ok(ok.then_some(key))
    }

    /// The key of a SigV4 access key id.
    pub async fn by_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Option<Arc<ResolvedKey>>, KeyError> {
        self.lookup(access_key_id, Lookup::AccessKey).await
    }

    /// The key with this id (a job runs as the key that submitted it).
    pub async fn by_id(&self, id: &str) -> Result<Option<Arc<ResolvedKey>>, KeyError> {
        self.lookup(id, Lookup::Id).await
    }

    async fn lookup(&self, id: &str, how: Lookup) -> Result<Option<Arc<ResolvedKey>>, KeyError> {
        let cache_key = match how {
            Lookup::Prefix => id.to_string(),
            Lookup::AccessKey => format!("ak:{id}"),
            Lookup::Id => format!("id:{id}"),
        };
        if let Some((hit, at)) = self.lock().get(&cache_key) {
            if at.elapsed() < self.ttl {
                return Ok(hit.clone());
            }
        }
        let record = match how {
            Lookup::Prefix => self.store.key_by_prefix(id).await?,
            Lookup::AccessKey => self.store.key_by_access_key(id).await?,
            Lookup::Id => self.store.key(id).await?,
        };
        let resolved = match record {
            Some(record) => Some(Arc::new(self.resolve(record).await?)),
            None => None,
        };
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(cache_key, (resolved.clone(), Instant::now()));
        Ok(resolved)
    }

    async fn resolve(&self, record: KeyRecord) -> Result<ResolvedKey, KeyError> {
        let settings = Settings::from_json(&record.body)
            .map_err(|e| StoreError::Corrupt(format!("key {}: {e}", record.id)))?;
        let team = match &record.team {
            Some(t) => self.team(t).await?,
            None => None,
        };
        let mut policies = settings
            .check()
            .map_err(|e| StoreError::Corrupt(format!("key {}: {e}", record.id)))?;
        policies.extend(self.role_policies(settings.roles.iter().map(String::as_str)));
        Ok(ResolvedKey {
            record,
            settings,
            team,
            policies,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy)]
enum Lookup {
    Prefix,
    AccessKey,
    Id,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_cover_the_calendar() {
        // 2024-02-15T12:00:00Z
        let t = 1_708_000_000_000;
        let (s, e) = Period::Month.window(t);
        assert_eq!((s, e), (1_706_745_600_000, 1_709_251_200_000)); // Feb 1 → Mar 1 (leap year)
        let (s, e) = Period::Day.window(t);
        assert_eq!(e - s, 86_400_000);
        assert!(s <= t && t < e);
        let (s, e) = Period::parse("6h").unwrap().window(t);
        assert_eq!(e - s, 6 * 3_600_000);
        assert!(Period::parse("5s").is_err());
        assert!(Period::parse("fortnightly").is_err());
        let (s, e) = Period::Month.window(1_733_011_200_000); // 2024-12-01
        assert_eq!((s, e), (1_733_011_200_000, 1_735_689_600_000));
    }

    #[test]
    fn settings_are_checked_before_saving() {
        let bad = Settings {
            policies: vec![
                serde_json::json!({"Statement": [{"Effect": "Allow", "Action": "bedrock:InvokeModel", "Condition": {"NumericLessThen": {"bedrock:MaxTokens": "1"}}}]}),
            ],
            ..Settings::default()
        };
        let e = bad.check().unwrap_err();
        assert!(
            e.contains("policies[0]") && e.contains("NumericLessThen"),
            "{e}"
        );
        let bad = Settings {
            limits: LimitSpec {
                rps: Some(0),
                ..LimitSpec::default()
            },
            ..Settings::default()
        };
        assert!(bad.check().is_err());
        let e = Settings::from_json(
            &serde_json::json!({"budgets": [{"name": "b", "limit_usd": 1, "period": "fortnight"}]}),
        )
        .unwrap_err();
        assert!(e.contains("fortnight"), "{e}");
    }
}
