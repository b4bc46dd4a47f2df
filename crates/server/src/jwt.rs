//! JWTs from an OIDC issuer (identity federation): signing keys fetched from the issuer's JWKS
//! and cached (fetched again every `refresh`, and at once — at most every 30 seconds — when a
//! token names a key id not seen yet); issuer, audience, expiry and not-before checked with a
//! small leeway; only asymmetric algorithms accepted. The token's team and role claims map onto
//! the gateway's teams (their policies, limits and budgets) and roles (their policies).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use modelgate_core::access::Grants;
use modelgate_core::config::JwtConfig;
use modelgate_core::keys::KeyService;
use modelgate_core::Principal;
use modelgate_types::{Error, ErrorKind};
use serde_json::Value;
use tokio::sync::Mutex;

/// The shortest time between two fetches triggered by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(30);

/// Verifies JWTs of one issuer.
pub struct JwtVerifier {
    config: JwtConfig,
    http: reqwest::Client,
    keys: Mutex<Cache>,
}

struct Cache {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

fn refused(message: impl Into<String>) -> Error {
    Error::refusal(ErrorKind::Unauthenticated, message).with_code("invalid_token")
}

/// Whether a bearer token looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("ey")
}

impl JwtVerifier {
    /// A verifier for `config`.
    pub fn new(config: JwtConfig) -> Self {
        Self {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            keys: Mutex::new(Cache {
                set: None,
                fetched: None,
            }),
        }
    }

    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(u) = &self.config.jwks_url {
            return Ok(u.clone());
        }
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc: Value = self
            .http
            .get(&discovery)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("OIDC discovery at {discovery} failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("OIDC discovery at {discovery}: {e}"))?;
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{discovery} has no jwks_uri"))
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let url = self.jwks_url().await?;
        self.http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("cannot fetch the issuer's keys from {url}: {e}"))?
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("the issuer's keys at {url} are not a JWKS: {e}"))
    }

    /// The decoding key for `kid`, fetching the key set when it is stale or lacks `kid`.
    async fn key(&self, kid: Option<&str>) -> Result<(DecodingKey, Option<Algorithm>), Error> {
        let mut cache = self.keys.lock().await;
        let stale = cache
            .fetched
            .is_none_or(|t| t.elapsed() >= self.config.refresh);
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None => set.keys.first().cloned(),
        };
        let missing = cache.set.as_ref().and_then(find).is_none();
        let may_refetch = cache.fetched.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        if stale || (missing && may_refetch) {
            match self.fetch().await {
                Ok(set) => {
                    cache.set = Some(set);
                    cache.fetched = Some(Instant::now());
                }
                Err(e) if cache.set.is_none() => {
                    return Err(Error::refusal(
                        ErrorKind::ServiceUnavailable,
                        format!("Cannot verify the token: {e}"),
                    ))
                }
                Err(e) => tracing::warn!(error = %e, "keeping the cached JWKS"),
            }
        }
        let jwk =
            cache.set.as_ref().and_then(find).ok_or_else(|| {
                refused("The token's signing key is not one of the issuer's keys.")
            })?;
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| refused(format!("Unusable signing key: {e}")))?;
        Ok((key, alg))
    }

    /// Verify `token` and map its claims onto a principal.
    pub async fn verify(
        &self,
        token: &str,
        keys: Option<&Arc<KeyService>>,
    ) -> Result<Principal, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("Malformed token: {e}")))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(refused("Symmetric (HS*) tokens are not accepted."));
        }
        let (key, alg) = self.key(header.kid.as_deref()).await?;
        if alg.is_some_and(|a| a != header.alg) {
            return Err(refused(
                "The token's algorithm does not match its signing key.",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<BTreeMap<String, Value>>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                refused(match e.kind() {
                    K::ExpiredSignature => "The token has expired.".to_string(),
                    K::ImmatureSignature => "The token is not valid yet.".to_string(),
                    K::InvalidIssuer => "The token's issuer is not trusted.".to_string(),
                    K::InvalidAudience => "The token is not meant for this gateway.".to_string(),
                    K::InvalidSignature => "The token's signature is invalid.".to_string(),
                    other => format!("Invalid token: {other:?}"),
                })
            })?;
        let claims = data.claims;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let team = claims
            .get(&self.config.team_claim)
            .and_then(Value::as_str)
            .map(str::to_string);
        let roles: Vec<String> = match claims.get(&self.config.role_claim) {
            Some(Value::String(r)) => r.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(rs)) => rs
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut grants = Grants::default();
        if let Some(keys) = keys {
            grants.policies = keys.role_policies(roles.iter().map(String::as_str));
            if let Some(t) = &team {
                let resolved = keys.team(t).await.map_err(|e| {
                    Error::refusal(
                        ErrorKind::ServiceUnavailable,
                        format!("The team store is unavailable: {e}"),
                    )
                })?;
                if let Some(resolved) = resolved {
                    grants.add_team(&resolved);
                }
            }
        }
        for r in &roles {
            grants
                .tags
                .entry("role".into())
                .or_insert_with(|| r.clone());
        }
        Ok(Principal {
            id: format!("jwt:{sub}"),
            team,
            admin: false,
            grants: Arc::new(grants),
        })
    }
}
