//! The configuration file: one TOML document, every key optional, unknown keys rejected.
//!
//! Loading is parse (serde, `deny_unknown_fields`) then validate (pure, no IO); a failure is one
//! message naming the file, the key and the reason. With no file the defaults below serve the
//! embedded models on `127.0.0.1:8080`. `docs/configuration.md` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use modelgate_providers::{LocalEmbedderSettings, LocalLlamaSettings};
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The embedded (in-process) models.
    pub local: LocalConfig,
    /// `[[providers]]`: upstream APIs (OpenAI-compatible, Anthropic, Bedrock).
    pub providers: Vec<ProviderConfig>,
    /// `[[models]]`: names clients use, mapped onto served models.
    pub models: Vec<ModelConfig>,
    /// `[auth]`: how callers prove who they are.
    pub auth: AuthConfig,
    /// `[resilience]`: retries, timeouts, circuit breakers and health checks for every model
    /// (a model's own `retry` / `timeouts` / `breaker` / `health` tables replace these).
    pub resilience: crate::resilience::ResilienceConfig,
    /// `[store]`: where keys, usage and audit records and counters live.
    pub store: StoreConfig,
    /// `[limits]`: rate limits that apply to every caller (global, per model, per route).
    pub limits: LimitsConfig,
    /// `[prices."<model or pattern>"]`: USD per million tokens, overriding the shipped list.
    pub prices: std::collections::BTreeMap<String, crate::usage::Price>,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[invocations]`: the per-call records, their retention and body capture.
    pub invocations: crate::invocations::InvocationsConfig,
    /// `[alerts]`: in-process alert rules and their webhooks.
    pub alerts: crate::alerts::AlertsConfig,
    /// `[traces]`: OpenTelemetry export.
    pub traces: crate::traces::TracesConfig,
    /// `[cache]`: the response cache.
    pub cache: crate::cache::CacheConfig,
    /// `[routing]`: live routing changes and the metric-based strategies' figures.
    pub routing: crate::routing::RoutingSettings,
    /// `[[routers]]`: virtual models, each a routing policy over served models.
    pub routers: Vec<crate::routing::RouterConfig>,
    /// `[guardrails]`: settings, guardrails declared in the file (`[[guardrails.define]]`)
    /// and the calls they attach to (`[[guardrails.attach]]`).
    pub guardrails: crate::guardrails::GuardrailsConfig,
    /// `[jobs]`: asynchronous invocation, batches, the queue's workers and webhooks.
    pub jobs: crate::jobs::JobsConfig,
    /// `[workflows]`: Step Functions-compatible state machines.
    pub workflows: crate::workflows::WorkflowsConfig,
    /// `[prompts]`: the review lifecycle of stored prompt templates.
    pub prompts: crate::prompts::PromptsConfig,
    /// `[[endpoints]]`: declarative HTTP endpoints in front of the models.
    pub endpoints: Vec<crate::endpoints::EndpointConfig>,
    /// `[[hooks]]`: inbound webhooks that put events on the bus.
    pub hooks: Vec<crate::hooks::HookConfig>,
    /// `[[watch]]`: directories whose new files become events on the bus.
    pub watch: Vec<crate::hooks::WatchConfig>,
    /// `[responses]`: stored Responses API responses.
    pub responses: ResponsesConfig,
    /// `[events]`: how long events put on the bus are kept.
    pub events: RetentionConfig,
}

/// How long records of one kind are kept (`[responses]`, `[events]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How long a record is kept. Default 30 days (as OpenAI keeps stored responses).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often records past the retention period are deleted. Default hourly.
    #[serde(with = "humantime_serde")]
    pub purge_every: Duration,
}

/// `[responses]`: how long stored Responses API responses are kept.
pub type ResponsesConfig = RetentionConfig;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            purge_every: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// The routing document of the `[[routers]]` tables.
    pub fn routing_doc(&self) -> crate::routing::RoutingDoc {
        crate::routing::RoutingDoc {
            routers: self.routers.clone(),
            rollout_percent: None,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Require a credential allowed `modelgate:GetMetrics` (the admin credential, the `admin`
    /// role) for `GET /metrics`; by default it is open like the health probes.
    pub protected: bool,
}

/// `[store]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite file (default `<data dir>/state.db`), used unless `postgres_url` is set.
    pub sqlite_path: Option<PathBuf>,
    /// PostgreSQL for keys, usage and audit records, shared by every replica
    /// (`postgres://user@host:5432/db`). Read from `postgres_url_env` when that is set.
    pub postgres_url: Option<String>,
    /// Environment variable holding the PostgreSQL URL (it may carry a password).
    pub postgres_url_env: Option<String>,
    /// Redis for rate-limit, concurrency and budget counters shared by every replica
    /// (`redis://host:6379`); without it counters are in-process.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several gateways can share one server).
    pub redis_prefix: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The whole gateway.
    pub global: crate::keys::LimitSpec,
    /// `[limits.models."<model>"]`: per model name as clients send it.
    pub models: std::collections::BTreeMap<String, crate::keys::LimitSpec>,
    /// `[limits.routes."<route>"]`: per route (`/v1/chat/completions`,
    /// `/model/{model_id}/converse`, …).
    pub routes: std::collections::BTreeMap<String, crate::keys::LimitSpec>,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `[[auth.sigv4]]`: static AWS credentials that Bedrock front-door callers sign requests
    /// with (SigV4, service `bedrock`), with full access. Keys issued through `/admin/keys`
    /// carry their own SigV4 pairs.
    pub sigv4: Vec<SigV4Credential>,
    /// `auto` (default): callers must authenticate, except that a gateway listening on a
    /// loopback address with no keys and no admin key serves anyone (local use); `required`:
    /// always authenticate; `none`: never authenticate (refused on a non-loopback address
    /// unless set explicitly).
    pub mode: AuthMode,
    /// Environment variable holding the bootstrap admin credential (a bearer token with full
    /// access, for creating the first keys).
    pub admin_key_env: Option<String>,
    /// Environment variable holding the server secret that keys are hashed with (all replicas
    /// need the same); without it a random secret is made once in `<data dir>/server.secret`.
    pub secret_env: Option<String>,
    /// How long a resolved key is cached (revocations reach other replicas within this time).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The region in model ARNs that policies match (`arn:aws:bedrock:<region>::foundation-model/…`).
    pub region: String,
    /// The account id of `aws:PrincipalAccount` / `aws:ResourceAccount` / `${AWS::AccountId}`.
    pub account_id: String,
    /// `[auth.roles]`: named roles and their IAM-grammar policies (`admin` and `invoke` are
    /// built in). Keys and JWT callers that carry a role get its policies.
    pub roles: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    /// `[auth.jwt]`: accept JWTs from an OIDC issuer (identity federation).
    pub jwt: Option<JwtConfig>,
    /// Write every allowed model call's policy decision to the audit log (one row per call);
    /// with `false` only denials, refused authentications and admin actions are written.
    pub audit_allows: bool,
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The issuer (`iss`) tokens must carry.
    pub issuer: String,
    /// The audience (`aud`) tokens must carry.
    pub audience: String,
    /// Where the signing keys are (a JWKS document); default: the issuer's OpenID
    /// configuration's `jwks_uri`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim holding the caller's team.
    #[serde(default = "default_team_claim")]
    pub team_claim: String,
    /// The claim holding the caller's roles (a string or a list).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// How often the keys are fetched again (a token with an unknown `kid` also triggers a
    /// fetch, at most every 30 seconds).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

fn default_team_claim() -> String {
    "team".into()
}
fn default_role_claim() -> String {
    "roles".into()
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(600)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            sigv4: Vec::new(),
            mode: AuthMode::Auto,
            admin_key_env: None,
            secret_env: None,
            cache_ttl: Duration::from_secs(10),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            roles: std::collections::BTreeMap::new(),
            jwt: None,
            audit_allows: true,
        }
    }
}

/// Whether callers must authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Required, except on loopback with no credentials configured.
    #[default]
    Auto,
    /// Always required.
    Required,
    /// Never (explicitly open).
    None,
}

/// `[[auth.sigv4]]`: one access key. The secret comes from the environment or a file, never
/// from the configuration text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4Credential {
    /// The access key id callers send (`aws_access_key_id`).
    pub access_key_id: String,
    /// Environment variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// File holding the secret access key (surrounding whitespace ignored).
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
}

impl SigV4Credential {
    /// Read the secret from where the configuration points.
    pub fn secret(&self) -> Result<String, String> {
        read_secret(
            self.secret_access_key_env.as_deref(),
            self.secret_access_key_file.as_deref(),
            &format!("the secret of access key {}", self.access_key_id),
        )?
        .ok_or_else(|| {
            format!(
                "access key {}: set exactly one of secret_access_key_env or secret_access_key_file",
                self.access_key_id
            )
        })
    }
}

/// A secret from an environment variable or a file (surrounding whitespace ignored);
/// `Ok(None)` when neither is given. `what` names the secret in messages.
pub fn read_secret(
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<String>, String> {
    let secret = match (env, file) {
        (None, None) => return Ok(None),
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("the environment variable {var} ({what}) is not set"))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {} ({what}): {e}", path.display()))?
            .trim()
            .to_string(),
        (Some(_), Some(_)) => {
            return Err(format!(
                "{what}: set an environment variable or a file, not both"
            ))
        }
    };
    if secret.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(Some(secret))
}

/// The keys every `[[providers]]` entry has, whatever its type, written once: each provider
/// type's struct is generated with them plus its own keys, so a key that belongs to another
/// type is an unknown field of this one (`deny_unknown_fields`), not a runtime check.
macro_rules! provider_config {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The name `[[models]]` entries use in `provider`.
            pub name: String,
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Time allowed to connect. Default `10s`.
            #[serde(default = "default_connect_timeout", with = "humantime_serde")]
            pub connect_timeout: Duration,
            /// Time allowed until the response headers (a stream's first byte). Default `60s`.
            #[serde(default = "default_minute", with = "humantime_serde")]
            pub response_timeout: Duration,
            /// Longest gap allowed between two reads of a body (stalled streams). Default `60s`.
            #[serde(default = "default_minute", with = "humantime_serde")]
            pub read_timeout: Duration,
            /// Idle connections kept per host. Default 1024: at least the gateway's own
            /// concurrency, so that under load connections are reused rather than closed and
            /// reopened (16 cost a third of the throughput at 128 concurrent requests).
            #[serde(default = "default_pool_size")]
            pub pool_max_idle_per_host: usize,
            /// How long an idle connection is kept. Default `90s`.
            #[serde(default = "default_pool_idle", with = "humantime_serde")]
            pub pool_idle_timeout: Duration,
            /// Use HTTP/2 without negotiation on plain-HTTP upstreams (h2c). Over TLS HTTP/2 is
            /// negotiated anyway. Default `false`.
            #[serde(default)]
            pub http2_prior_knowledge: bool,
            /// Extra headers sent with every request.
            #[serde(default)]
            pub headers: std::collections::BTreeMap<String, String>,
            /// Largest whole response body read from the upstream (a JSON answer), in bytes. A
            /// larger one fails the call with an error naming this key. Default 33554432 (32 MiB).
            #[serde(default = "default_max_response_bytes")]
            pub max_response_bytes: usize,
            /// Largest single streamed event (one server-sent event, one AWS event-stream
            /// message), in bytes. Default 1048576 (1 MiB).
            #[serde(default = "default_max_event_bytes")]
            pub max_event_bytes: usize,
            /// Most of an upstream error body read for its message, in bytes; the rest is
            /// discarded. Default 65536 (64 KiB).
            #[serde(default = "default_max_error_body_bytes")]
            pub max_error_body_bytes: usize,
        }

        impl $name {
            fn connection(&self) -> Connection<'_> {
                Connection {
                    name: &self.name,
                    connect_timeout: self.connect_timeout,
                    response_timeout: self.response_timeout,
                    read_timeout: self.read_timeout,
                    pool_max_idle_per_host: self.pool_max_idle_per_host,
                    pool_idle_timeout: self.pool_idle_timeout,
                    http2_prior_knowledge: self.http2_prior_knowledge,
                    headers: &self.headers,
                    max_response_bytes: self.max_response_bytes,
                    max_event_bytes: self.max_event_bytes,
                    max_error_body_bytes: self.max_error_body_bytes,
                }
            }
        }
    };
}

provider_config! {
    /// `type = "openai"`: any OpenAI-compatible chat completions / embeddings server.
    OpenAiProviderConfig {
        /// Required, with the version path (`https://api.openai.com/v1`,
        /// `http://127.0.0.1:8000/v1`; Azure: `https://{resource}.openai.azure.com/openai`).
        base_url: String,
        /// Environment variable holding the API key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// File holding the API key.
        #[serde(default)]
        api_key_file: Option<PathBuf>,
        /// Azure OpenAI's `api-version`; switches to Azure's deployment URLs and `api-key`
        /// header (`upstream_id` is the deployment name).
        #[serde(default)]
        api_version: Option<String>,
    }
}

provider_config! {
    /// `type = "anthropic"`: the Anthropic Messages API.
    AnthropicProviderConfig {
        /// Default `https://api.anthropic.com`.
        #[serde(default)]
        base_url: Option<String>,
        /// Environment variable holding the API key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// File holding the API key.
        #[serde(default)]
        api_key_file: Option<PathBuf>,
        /// The `anthropic-version` header. Default `2023-06-01`.
        #[serde(default)]
        anthropic_version: Option<String>,
    }
}

provider_config! {
    /// `type = "bedrock"`: AWS Bedrock Runtime, signed with SigV4.
    BedrockProviderConfig {
        /// Required: the AWS region requests are signed for.
        region: String,
        /// Default `https://bedrock-runtime.{region}.amazonaws.com`.
        #[serde(default)]
        base_url: Option<String>,
        /// A profile of the shared credentials file; without it the standard
        /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` variables are used.
        #[serde(default)]
        profile: Option<String>,
    }
}

/// `[[providers]]`: one upstream API, by `type`. Secrets come from the environment or a file,
/// never from the configuration text.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// An OpenAI-compatible server.
    Openai(OpenAiProviderConfig),
    /// The Anthropic Messages API.
    Anthropic(AnthropicProviderConfig),
    /// AWS Bedrock Runtime.
    Bedrock(BedrockProviderConfig),
}

/// The keys every provider type shares.
struct Connection<'a> {
    name: &'a str,
    connect_timeout: Duration,
    response_timeout: Duration,
    read_timeout: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    http2_prior_knowledge: bool,
    headers: &'a std::collections::BTreeMap<String, String>,
    max_response_bytes: usize,
    max_event_bytes: usize,
    max_error_body_bytes: usize,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_minute() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_size() -> usize {
    modelgate_providers::DEFAULT_POOL_MAX_IDLE_PER_HOST
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(90)
}
fn default_max_response_bytes() -> usize {
    modelgate_providers::DEFAULT_MAX_RESPONSE_BYTES
}
fn default_max_event_bytes() -> usize {
    modelgate_providers::DEFAULT_MAX_EVENT_BYTES
}
fn default_max_error_body_bytes() -> usize {
    modelgate_providers::DEFAULT_MAX_ERROR_BODY_BYTES
}

/// Upstream API types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    /// An OpenAI-compatible chat completions / embeddings server.
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// AWS Bedrock Runtime.
    Bedrock,
}

impl ProviderConfig {
    fn connection(&self) -> Connection<'_> {
        match self {
            ProviderConfig::Openai(p) => p.connection(),
            ProviderConfig::Anthropic(p) => p.connection(),
            ProviderConfig::Bedrock(p) => p.connection(),
        }
    }

    /// The name `[[models]]` entries use.
    pub fn name(&self) -> &str {
        self.connection().name
    }

    /// The provider's type.
    pub fn kind(&self) -> ProviderType {
        match self {
            ProviderConfig::Openai(_) => ProviderType::Openai,
            ProviderConfig::Anthropic(_) => ProviderType::Anthropic,
            ProviderConfig::Bedrock(_) => ProviderType::Bedrock,
        }
    }

    /// The connection settings.
    pub fn http(&self) -> modelgate_providers::HttpSettings {
        let c = self.connection();
        modelgate_providers::HttpSettings {
            connect_timeout: c.connect_timeout,
            response_timeout: c.response_timeout,
            read_timeout: c.read_timeout,
            pool_max_idle_per_host: c.pool_max_idle_per_host,
            pool_idle_timeout: c.pool_idle_timeout,
            http2_prior_knowledge: c.http2_prior_knowledge,
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_response_bytes: c.max_response_bytes,
            max_event_bytes: c.max_event_bytes,
            max_error_body_bytes: c.max_error_body_bytes,
        }
    }

    /// The API key, read from where the configuration points (`openai`, `anthropic`).
    pub fn api_key(&self) -> Result<Option<String>, String> {
        let (env, file) = match self {
            ProviderConfig::Openai(p) => (p.api_key_env.as_deref(), p.api_key_file.as_deref()),
            ProviderConfig::Anthropic(p) => (p.api_key_env.as_deref(), p.api_key_file.as_deref()),
            ProviderConfig::Bedrock(_) => (None, None),
        };
        read_secret(
            env,
            file,
            &format!("the API key of provider '{}'", self.name()),
        )
    }

    fn validate(&self, i: usize) -> Result<(), String> {
        let key = |k: &str| format!("key `providers[{i}].{k}`");
        let name = self.name();
        if name.trim().is_empty() || name == "local" {
            return Err(format!(
                "{}: must not be empty or `local` (the embedded models' name)",
                key("name")
            ));
        }
        let (base_url, key_sources) = match self {
            ProviderConfig::Openai(p) => (
                Some(p.base_url.as_str()),
                p.api_key_env.is_some() && p.api_key_file.is_some(),
            ),
            ProviderConfig::Anthropic(p) => (
                p.base_url.as_deref(),
                p.api_key_env.is_some() && p.api_key_file.is_some(),
            ),
            ProviderConfig::Bedrock(p) => {
                if p.region.trim().is_empty() {
                    return Err(format!("{} must not be empty", key("region")));
                }
                (p.base_url.as_deref(), false)
            }
        };
        if key_sources {
            return Err(format!(
                "key `providers[{i}]`: set api_key_env or api_key_file, not both"
            ));
        }
        if let Some(url) = base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "{}: '{url}' must start with http:// or https://",
                    key("base_url")
                ));
            }
        }
        let c = self.connection();
        for (k, n) in [
            ("max_response_bytes", c.max_response_bytes),
            ("max_event_bytes", c.max_event_bytes),
            ("max_error_body_bytes", c.max_error_body_bytes),
        ] {
            if n < 1024 {
                return Err(format!("{} must be at least 1024", key(k)));
            }
        }
        if c.pool_max_idle_per_host == 0 {
            return Err(format!(
                "{} must be at least 1",
                key("pool_max_idle_per_host")
            ));
        }
        for (k, d) in [
            ("connect_timeout", c.connect_timeout),
            ("response_timeout", c.response_timeout),
            ("read_timeout", c.read_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{} must be greater than 0", key(k)));
            }
        }
        Ok(())
    }
}

/// `[[models]]`: a name clients use (plus aliases) for a model a provider serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients send, e.g. `anthropic.claude-3-haiku-20240307-v1:0`. Its cross-region
    /// profile ids (`us.…`) and ARNs resolve to it too.
    pub id: String,
    /// More names for the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Who serves it: `local` (the embedded models, the default) or the `name` of a
    /// `[[providers]]` entry.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Several `[[providers]]` serving the same `upstream_id` (two vLLM servers, two regions,
    /// two API keys): requests are balanced over the healthy ones. Replaces `provider`.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Models to try, in order, when this one fails after its retries, its circuit breakers are
    /// open, its endpoints are unhealthy or the input does not fit its context window.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Also fall back when the model refuses on content-policy grounds. Default `false`.
    #[serde(default)]
    pub fallback_on_content_policy: bool,
    /// Store this model's successful answers in the response cache (even with `[cache]` off)
    /// and keep them `cache.stale_for` past their TTL, to serve the last good answer to the
    /// same request, from the same caller, when every model of the chain failed. Default
    /// `false`.
    #[serde(default)]
    pub fallback_cache: bool,
    /// Serve this model from the response cache (`true`) or never (`false`), whatever
    /// `[cache] enabled` says. Default: `[cache] enabled`.
    #[serde(default)]
    pub cache: Option<bool>,
    /// How requests are spread over the model's endpoints (`providers = [...]`):
    /// `round_robin` (default) or `least_latency` (power of two choices over each endpoint's
    /// peak-EWMA latency × calls in flight).
    #[serde(default)]
    pub balance: crate::registry::Balance,
    /// How long this model's answers are served from the cache (replaces `[cache] ttl`).
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<std::time::Duration>,
    /// When a client leaves mid-stream, keep reading this model's stream (its events
    /// discarded, until it ends or the total timeout) so that the call's usage record carries
    /// the provider's final token counts instead of the tally so far. Costs the upstream
    /// tokens of the rest of the answer. Default `false`.
    #[serde(default)]
    pub finish_cancelled_streams: bool,
    /// The degraded-service answer given when everything else failed, e.g. "Our assistant is
    /// busy; please try again in a few minutes." Without it the caller gets the last error.
    #[serde(default)]
    pub static_response: Option<String>,
    /// Retry policy for this model; replaces `[resilience.retry]` as a whole.
    #[serde(default)]
    pub retry: Option<crate::resilience::RetryConfig>,
    /// Timeouts for this model; replace `[resilience.timeouts]` as a whole.
    #[serde(default)]
    pub timeouts: Option<crate::resilience::TimeoutConfig>,
    /// Circuit breaker for this model's endpoints; replaces `[resilience.breaker]` as a whole.
    #[serde(default)]
    pub breaker: Option<crate::resilience::BreakerConfig>,
    /// Health checks of this model's endpoints; replace `[resilience.health]` as a whole.
    #[serde(default)]
    pub health: Option<crate::resilience::HealthConfig>,
    /// The model's id at the provider; for `local`, `local.smollm2-135m-instruct` or
    /// `local.all-minilm-l6-v2`; for Azure OpenAI, the deployment name.
    pub upstream_id: String,
    /// `chat` (default) or `embedding`. For `local` models it follows from `upstream_id`.
    #[serde(default)]
    pub kind: Option<ModelKindConfig>,
    /// The model's context window in tokens, when known (informational today; used by
    /// context-window fallback).
    #[serde(default)]
    pub context_window: Option<u32>,
    /// The InvokeModel body format this model speaks, when its id does not tell
    /// (ids such as `anthropic.…` or `amazon.titan-text-…` do).
    #[serde(default)]
    pub format: Option<NativeFormat>,
}

fn default_provider() -> String {
    "local".into()
}

impl ModelConfig {
    /// The providers serving this model: `providers` when set, else `provider`.
    pub fn provider_names(&self) -> Vec<&str> {
        if self.providers.is_empty() {
            vec![self.provider.as_str()]
        } else {
            self.providers.iter().map(String::as_str).collect()
        }
    }
}

/// What a configured model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKindConfig {
    /// Chat / Converse.
    Chat,
    /// Embeddings.
    Embedding,
}

/// The model-native request / response body families of Bedrock's InvokeModel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NativeFormat {
    /// Anthropic Messages (`anthropic_version`, `messages`, `max_tokens`).
    AnthropicMessages,
    /// Anthropic text completions (`prompt` with `\n\nHuman:` turns, `max_tokens_to_sample`).
    AnthropicText,
    /// Amazon Titan Text (`inputText`, `textGenerationConfig`).
    TitanText,
    /// Amazon Titan Embeddings (`inputText` → `embedding`).
    TitanEmbed,
    /// Meta Llama (`prompt`, `max_gen_len` → `generation`).
    Llama,
    /// Mistral (`prompt`, `max_tokens` → `outputs[].text`).
    Mistral,
    /// Cohere Embed (`texts`, `input_type` → `embeddings`).
    CohereEmbed,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger gets 413. Default 20 MiB.
    pub max_body_bytes: usize,
    /// How long in-flight requests and streams may take to finish after SIGTERM/SIGINT.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 20 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json` (one object per line).
    /// Default `auto`; `MODELGATE_LOG_FORMAT` overrides it.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `modelgate=debug,info`. `RUST_LOG` overrides it.
    /// Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text when standard error is a terminal, JSON otherwise (a container, a service).
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[local]`: the embedded models.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Serve the embedded models. Default `true`.
    pub enabled: bool,
    /// Download missing model files when `serve` starts. Default `true`.
    pub auto_pull: bool,
    /// `[local.chat]`: SmolLM2-135M-Instruct via llama.cpp.
    pub chat: LocalLlamaSettings,
    /// `[local.embeddings]`: all-MiniLM-L6-v2 via candle.
    pub embeddings: LocalEmbedderSettings,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_pull: true,
            chat: LocalLlamaSettings::default(),
            embeddings: LocalEmbedderSettings::default(),
        }
    }
}

/// A configuration that cannot be used; the message names file, key and reason.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {file}: {reason}")]
pub struct ConfigError {
    /// The file (or `<defaults>`).
    pub file: String,
    /// What is wrong, naming the key.
    pub reason: String,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parse and validate TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.into(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        config.validate().map_err(|reason| ConfigError {
            file: file.into(),
            reason,
        })?;
        Ok(config)
    }

    /// Cross-field checks. Pure: no IO.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.max_body_bytes == 0 {
            return Err("key `server.max_body_bytes` must be greater than 0".into());
        }
        self.local.chat.validate()?;
        self.local.embeddings.validate()?;
        self.alerts
            .validate()
            .map_err(|e| format!("[alerts]: {e}"))?;
        self.traces.validate()?;
        self.cache.validate()?;
        self.jobs.validate()?;
        self.workflows.validate()?;
        self.routing.validate()?;
        crate::endpoints::Endpoints::build(&self.endpoints)?;
        for (i, h) in self.hooks.iter().enumerate() {
            h.validate(i)?;
            if self.hooks[..i].iter().any(|o| o.name == h.name) {
                return Err(format!("key `hooks[{i}].name`: '{}' is used twice", h.name));
            }
        }
        for (i, w) in self.watch.iter().enumerate() {
            w.validate(i)?;
            if self.watch[..i].iter().any(|o| o.name == w.name) {
                return Err(format!("key `watch[{i}].name`: '{}' is used twice", w.name));
            }
        }
        if self.cache.backend == crate::cache::CacheBackend::Redis && self.store.redis_url.is_none()
        {
            return Err("key `cache.backend` is `redis` but `store.redis_url` is not set".into());
        }
        for (section, r) in [("responses", &self.responses), ("events", &self.events)] {
            if r.retention.is_zero() || r.purge_every.is_zero() {
                return Err(format!(
                    "keys `{section}.retention` and `{section}.purge_every` must be longer than 0"
                ));
            }
        }
        if self.invocations.retention.is_zero() {
            return Err("key `invocations.retention` must be longer than 0".into());
        }
        for (i, c) in self.auth.sigv4.iter().enumerate() {
            if c.access_key_id.trim().is_empty() {
                return Err(format!(
                    "key `auth.sigv4[{i}].access_key_id` must not be empty"
                ));
            }
            if c.secret_access_key_env.is_some() == c.secret_access_key_file.is_some() {
                return Err(format!(
                    "key `auth.sigv4[{i}]`: set exactly one of secret_access_key_env or secret_access_key_file"
                ));
            }
        }
        let limits = std::iter::once(("limits.global".to_string(), &self.limits.global))
            .chain(
                self.limits
                    .models
                    .iter()
                    .map(|(k, v)| (format!("limits.models.\"{k}\""), v)),
            )
            .chain(
                self.limits
                    .routes
                    .iter()
                    .map(|(k, v)| (format!("limits.routes.\"{k}\""), v)),
            );
        for (key, spec) in limits {
            spec.check().map_err(|e| format!("key `{key}`: {e}"))?;
        }
        for (model, p) in &self.prices {
            let ok = [Some(p.input), Some(p.output), p.cache_read, p.cache_write]
                .into_iter()
                .flatten()
                .all(|v| v.is_finite() && v >= 0.0);
            if !ok {
                return Err(format!(
                    "key `prices.\"{model}\"`: prices must be numbers of dollars per million tokens, 0 or more"
                ));
            }
        }
        for (role, docs) in &self.auth.roles {
            for (i, doc) in docs.iter().enumerate() {
                crate::policy::Policy::parse(doc)
                    .map_err(|e| format!("key `auth.roles.{role}[{i}]`: {e}"))?;
            }
        }
        if let Some(j) = &self.auth.jwt {
            if j.issuer.trim().is_empty() || j.audience.trim().is_empty() {
                return Err("key `auth.jwt`: issuer and audience must not be empty".into());
            }
        }
        if self.store.postgres_url.is_some() && self.store.postgres_url_env.is_some() {
            return Err("key `store`: set postgres_url or postgres_url_env, not both".into());
        }
        let mut providers = std::collections::BTreeMap::new();
        for (i, p) in self.providers.iter().enumerate() {
            p.validate(i)?;
            if providers.insert(p.name(), p.kind()).is_some() {
                return Err(format!(
                    "key `providers[{i}].name`: the name '{}' is used twice",
                    p.name()
                ));
            }
        }
        self.resilience.validate("resilience")?;
        let mut names = std::collections::BTreeSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if !m.providers.is_empty() && m.provider != "local" {
                return Err(format!(
                    "key `models[{i}]`: set provider or providers, not both"
                ));
            }
            let is_local = m.provider_names() == ["local"];
            if !is_local {
                for name in m.provider_names() {
                    let Some(kind) = providers.get(name) else {
                        let mut known: Vec<&str> = vec!["local"];
                        known.extend(providers.keys());
                        return Err(format!(
                            "key `models[{i}].provider`: unknown provider '{name}' (one of {})",
                            known.join(", ")
                        ));
                    };
                    if *kind == ProviderType::Anthropic
                        && m.kind == Some(ModelKindConfig::Embedding)
                    {
                        return Err(format!(
                            "key `models[{i}].kind`: the Anthropic API serves no embedding models"
                        ));
                    }
                }
                if m.upstream_id.trim().is_empty() {
                    return Err(format!("key `models[{i}].upstream_id` must not be empty"));
                }
            } else if !self.local.enabled {
                return Err(format!(
                    "key `models[{i}].provider`: `local` models need `local.enabled = true`"
                ));
            } else if m.kind.is_some() {
                return Err(format!(
                    "key `models[{i}].kind`: a local model's kind follows from its upstream_id"
                ));
            }
            if is_local && !crate::models::MODELS.iter().any(|s| s.id == m.upstream_id) {
                let known: Vec<&str> = crate::models::MODELS.iter().map(|s| s.id).collect();
                return Err(format!(
                    "key `models[{i}].upstream_id`: '{}' is not an embedded model (one of {})",
                    m.upstream_id,
                    known.join(", ")
                ));
            }
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                if name.trim().is_empty() {
                    return Err(format!(
                        "key `models[{i}]`: ids and aliases must not be empty"
                    ));
                }
                if !names.insert(name.as_str())
                    || crate::models::MODELS.iter().any(|s| s.id == name)
                {
                    return Err(format!(
                        "key `models[{i}]`: the name '{name}' is used twice; every id and alias must be unique"
                    ));
                }
            }
            let at = |k: &str| format!("models[{i}].{k}");
            if let Some(r) = &m.retry {
                r.validate(&at("retry"))?;
            }
            if let Some(t) = &m.timeouts {
                t.validate(&at("timeouts"))?;
            }
            if let Some(b) = &m.breaker {
                b.validate(&at("breaker"))?;
            }
            if let Some(h) = &m.health {
                h.validate(&at("health"))?;
            }
        }
        // What each served name does, so a fallback of another kind is refused here rather
        // than skipped on every request.
        let kind_of = |name: &str| -> Option<ModelKindConfig> {
            if let Some(m) = self
                .models
                .iter()
                .find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
            {
                return Some(match m.provider_names().as_slice() {
                    ["local"] if m.upstream_id == crate::models::LOCAL_EMBED_MODEL => {
                        ModelKindConfig::Embedding
                    }
                    ["local"] => ModelKindConfig::Chat,
                    _ => m.kind.unwrap_or(ModelKindConfig::Chat),
                });
            }
            match name {
                crate::models::LOCAL_EMBED_MODEL => Some(ModelKindConfig::Embedding),
                crate::models::LOCAL_CHAT_MODEL => Some(ModelKindConfig::Chat),
                _ => None,
            }
        };
        for (i, m) in self.models.iter().enumerate() {
            for f in &m.fallbacks {
                let known = names.contains(f.as_str())
                    || (self.local.enabled && crate::models::MODELS.iter().any(|s| s.id == f));
                if !known {
                    return Err(format!(
                        "key `models[{i}].fallbacks`: '{f}' is not a served model id or alias"
                    ));
                }
                if *f == m.id || m.aliases.contains(f) {
                    return Err(format!(
                        "key `models[{i}].fallbacks`: a model cannot fall back to itself"
                    ));
                }
                let (own, theirs) = (kind_of(&m.id), kind_of(f));
                if own != theirs {
                    let name = |k: Option<ModelKindConfig>| match k {
                        Some(ModelKindConfig::Embedding) => "an embedding model",
                        _ => "a chat model",
                    };
                    return Err(format!(
                        "key `models[{i}].fallbacks`: '{f}' is {}, but '{}' is {}; a model falls back only to a model of its own kind",
                        name(theirs),
                        m.id,
                        name(own)
                    ));
                }
            }
        }
        let names = crate::routing::Routing::config_names(self);
        crate::routing::check(&self.routing_doc(), &|n| names.contains(n))?;
        Ok(())
    }
}

/// Where models and state live: `$MODELGATE_HOME`, else `~/.local/share/modelgate`.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("MODELGATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("modelgate");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/modelgate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert!(c.local.enabled);
        assert_eq!(c.local.chat.parallel, 4);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            max_body_bytes = 1024
            shutdown_grace = "5s"
            [log]
            format = "json"
            level = "debug"
            [local]
            auto_pull = false
            [local.chat]
            parallel = 2
            context_size = 2048
            [local.embeddings]
            batch_size = 8
            "#,
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.local.chat.parallel, 2);
        assert_eq!(c.local.embeddings.batch_size, 8);
    }

    #[test]
    fn models_map_names_onto_served_models() {
        let c = Config::parse(
            r#"
            [[models]]
            id = "anthropic.claude-3-haiku-20240307-v1:0"
            aliases = ["claude-haiku"]
            upstream_id = "local.smollm2-135m-instruct"
            [[models]]
            id = "my-embedder"
            upstream_id = "local.all-minilm-l6-v2"
            format = "titan-embed"
            "#,
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[0].provider, "local");
        assert_eq!(c.models[1].format, Some(NativeFormat::TitanEmbed));
        for (bad, key) in [
            ("[[models]]\nid = \"a\"\nupstream_id = \"nope\"\n", "upstream_id"),
            ("[[models]]\nid = \"a\"\nprovider = \"x\"\nupstream_id = \"local.all-minilm-l6-v2\"\n", "provider"),
            ("[[models]]\nid = \"a\"\naliases = [\"a\"]\nupstream_id = \"local.all-minilm-l6-v2\"\n", "used twice"),
            ("[[models]]\nid = \"a\"\nupstream_id = \"local.all-minilm-l6-v2\"\nformat = \"gpt\"\n", "format"),
        ] {
            let e = Config::parse(bad, "gw.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn provider_keys_belong_to_their_type() {
        let ok = Config::parse(
            "[[providers]]\nname = \"b\"\ntype = \"bedrock\"\nregion = \"eu-west-1\"\nmax_event_bytes = 4096\n",
            "gw.toml",
        )
        .unwrap();
        assert_eq!(ok.providers[0].kind(), ProviderType::Bedrock);
        assert_eq!(ok.providers[0].http().max_event_bytes, 4096);
        for (text, expected) in [
            // A key of another type is an unknown field of this one.
            (
                "type = \"openai\"\nbase_url = \"http://x/v1\"\nregion = \"eu-west-1\"",
                "unknown field `region`",
            ),
            (
                "type = \"anthropic\"\napi_version = \"2024-02-01\"",
                "unknown field `api_version`",
            ),
            (
                "type = \"bedrock\"\nregion = \"eu-west-1\"\napi_key_env = \"K\"",
                "unknown field `api_key_env`",
            ),
            // Required keys of the type.
            ("type = \"openai\"", "missing field `base_url`"),
            ("type = \"bedrock\"", "missing field `region`"),
            ("type = \"grpc\"", "unknown variant `grpc`"),
            (
                "type = \"openai\"\nbase_url = \"ftp://x\"",
                "providers[0].base_url",
            ),
            (
                "type = \"anthropic\"\nmax_event_bytes = 10",
                "providers[0].max_event_bytes",
            ),
        ] {
            let e = Config::parse(&format!("[[providers]]\nname = \"p\"\n{text}\n"), "gw.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(e.contains("gw.toml"), "{e}");
        }
    }

    #[test]
    fn fallbacks_must_be_of_the_same_kind() {
        let e = Config::parse(
            "[[models]]\nid = \"chat\"\nupstream_id = \"local.smollm2-135m-instruct\"\nfallbacks = [\"local.all-minilm-l6-v2\"]\n",
            "gw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("models[0].fallbacks") && e.contains("embedding model"),
            "{e}"
        );
        let e = Config::parse(
            "[[providers]]\nname = \"o\"\ntype = \"openai\"\nbase_url = \"http://x/v1\"\n\
             [[models]]\nid = \"e1\"\nprovider = \"o\"\nkind = \"embedding\"\nupstream_id = \"u\"\nfallbacks = [\"c1\"]\n\
             [[models]]\nid = \"c1\"\nprovider = \"o\"\nupstream_id = \"u\"\n",
            "gw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'c1' is a chat model"), "{e}");
        Config::parse(
            "[[models]]\nid = \"e1\"\nupstream_id = \"local.all-minilm-l6-v2\"\nfallbacks = [\"local.all-minilm-l6-v2\"]\n",
            "gw.toml",
        )
        .unwrap();
    }

    #[test]
    fn sigv4_credentials_need_one_secret_source() {
        let c = Config::parse(
            "[[auth.sigv4]]\naccess_key_id = \"AKID\"\nsecret_access_key_env = \"MG_TEST_SECRET_UNSET\"\n",
            "x.toml",
        )
        .unwrap();
        assert!(c.auth.sigv4[0]
            .secret()
            .unwrap_err()
            .contains("MG_TEST_SECRET_UNSET"));
        let e = Config::parse("[[auth.sigv4]]\naccess_key_id = \"AKID\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("auth.sigv4[0]"), "{e}");
        // A secret written into the file itself is refused (unknown key).
        let e = Config::parse(
            "[[auth.sigv4]]\naccess_key_id = \"AKID\"\nsecret_access_key = \"x\"\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("secret_access_key"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = Config::parse("[server]\nlisten_addr = \"x\"\n", "gw.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("gw.toml"), "{msg}");
        assert!(msg.contains("listen_addr"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_values_are_rejected_with_key() {
        let e = Config::parse("[local.chat]\nparallel = 0\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("local.chat.parallel"), "{e}");
        let e = Config::parse("[server]\nshutdown_grace = \"soon\"\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("shutdown_grace"), "{e}");
        let e = Config::parse("[local.chat]\ncontext_size = 100000\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("local.chat.context_size"), "{e}");
    }

    #[test]
    fn resilience_defaults_model_tables_and_fallbacks() {
        let c = Config::parse(
            r#"
            [resilience.retry]
            max_attempts = 5
            [resilience.breaker]
            cool_down = "1m"

            [[providers]]
            name = "a"
            type = "openai"
            base_url = "http://127.0.0.1:1/v1"
            [[providers]]
            name = "b"
            type = "openai"
            base_url = "http://127.0.0.1:2/v1"

            [[models]]
            id = "pair"
            providers = ["a", "b"]
            upstream_id = "m"
            fallbacks = ["solo"]
            static_response = "busy"
            [models.timeouts]
            total = "30s"

            [[models]]
            id = "solo"
            provider = "a"
            upstream_id = "m"
            "#,
            "gw.toml",
        )
        .unwrap();
        assert_eq!(c.resilience.retry.max_attempts, 5);
        assert_eq!(
            c.resilience.retry.initial_backoff,
            Duration::from_millis(100)
        );
        assert_eq!(c.resilience.breaker.cool_down, Duration::from_secs(60));
        assert_eq!(c.models[0].provider_names(), ["a", "b"]);
        let p = crate::ModelPolicy::for_model(&c.resilience, &c.models[0]);
        assert_eq!(p.timeouts.total, Duration::from_secs(30));
        assert_eq!(p.timeouts.first_token, Duration::from_secs(30));
        assert_eq!(
            p.retry.max_attempts, 5,
            "no retry table: the [resilience] one"
        );
        assert_eq!(p.fallbacks, ["solo"]);

        let bad = |text: &str, key: &str| {
            let e = Config::parse(text, "gw.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        bad(
            "[resilience.retry]\nmax_attempts = 0\n",
            "resilience.retry.max_attempts",
        );
        bad(
            "[resilience.breaker]\nfailure_rate = 2.0\n",
            "resilience.breaker.failure_rate",
        );
        bad(
            "[resilience.timeouts]\ntotal = \"0s\"\n",
            "resilience.timeouts.total",
        );
        bad(
            "[resilience.retry]\ninitial_backoff = \"30s\"\n",
            "initial_backoff",
        );
        bad("[resilience]\nretries = 3\n", "retries");
        let upstream =
            "[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"http://x/v1\"\n";
        bad(
            &format!("{upstream}[[models]]\nid = \"m\"\nupstream_id = \"u\"\nprovider = \"a\"\nproviders = [\"a\"]\n"),
            "not both",
        );
        bad(
            &format!("{upstream}[[models]]\nid = \"m\"\nupstream_id = \"u\"\nproviders = [\"a\", \"zz\"]\n"),
            "unknown provider 'zz'",
        );
        bad(
            &format!("{upstream}[[models]]\nid = \"m\"\nupstream_id = \"u\"\nprovider = \"a\"\nfallbacks = [\"nope\"]\n"),
            "models[0].fallbacks",
        );
        bad(
            &format!("{upstream}[[models]]\nid = \"m\"\nupstream_id = \"u\"\nprovider = \"a\"\nfallbacks = [\"m\"]\n"),
            "itself",
        );
        bad(
            &format!("{upstream}[[models]]\nid = \"m\"\nupstream_id = \"u\"\nprovider = \"a\"\n[models.retry]\nbackoff_factor = 0.5\n"),
            "models[0].retry.backoff_factor",
        );
    }
}
