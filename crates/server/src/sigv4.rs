//! SigV4 verification for Bedrock front-door callers (boto3, the AWS SDKs, the AWS CLI).
//!
//! The `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header is
//! parsed; the request is re-signed with `aws-sigv4` over exactly the headers the caller
//! signed, the raw (still percent-encoded) path double-encoded as SigV4 prescribes for
//! non-S3 services, the body's SHA-256 and the caller's own `x-amz-date`; the two signatures
//! are compared in constant time. `x-amz-date` must be within 15 minutes of the server clock.
//! Failures answer as AWS does: 403 with `MissingAuthenticationTokenException`,
//! `UnrecognizedClientException`, `IncompleteSignatureException` or
//! `InvalidSignatureException`. Secrets never reach logs.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_types::date_time::{DateTime, Format};
use axum::http::{HeaderMap, Method, Uri};
use modelgate_types::{Error, ErrorKind};
use subtle::ConstantTimeEq;

/// How far a signature's time may be from the server clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The service name Bedrock Runtime requests are signed for.
const SERVICE: &str = "bedrock";

/// Verifies SigV4 signatures against the configured access keys.
pub struct Verifier {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Verifier")
            .field("access_keys", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn denied(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unauthenticated, message).with_code(code)
}

/// The parts of an `Authorization` header.
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, Error> {
    let incomplete = |what: &str| {
        denied(
            "IncompleteSignatureException",
            format!("Authorization header requires '{what}' parameter. Authorization={value}"),
        )
    };
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            "Authorization header must use the AWS4-HMAC-SHA256 algorithm.",
        )
    })?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    let mut scope = credential.split('/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(denied(
            "IncompleteSignatureException",
            format!("Credential should be scoped to a valid region and service: {credential}"),
        ));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.split(';').filter(|h| !h.is_empty()).collect(),
        signature,
    })
}

/// `20261121T120000Z` → a time.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        value.get(0..4)?,
        value.get(4..6)?,
        value.get(6..8)?,
        value.get(9..11)?,
        value.get(11..13)?,
        value.get(13..15)?
    );
    let t = DateTime::from_str(&rfc3339, Format::DateTime).ok()?;
    SystemTime::try_from(t).ok()
}

impl Verifier {
    /// A verifier for `(access key id, secret)` pairs.
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            secrets: keys.into_iter().collect(),
        }
    }

    /// The secret of a configured access key.
    pub fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
    }

    /// Check a request's signature against the configured keys; `now` is the server clock.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Error> {
        verify_with(
            |ak| self.secret(ak).map(str::to_string),
            method,
            uri,
            headers,
            body,
            now,
        )
    }
}

/// The access key id a SigV4 `Authorization` header names, if it is one.
pub fn access_key_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    parse_authorization(value).ok().map(|a| a.access_key)
}

/// Check a request's signature with the secret `secret_of` gives for its access key id
/// (`None`: an unknown key).
pub fn verify_with(
    secret_of: impl FnOnce(&str) -> Option<String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Error> {
    let Some(auth) = headers.get("authorization") else {
        return Err(denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = auth.to_str().map_err(|_| {
        denied(
            "IncompleteSignatureException",
            "The Authorization header is not valid text.",
        )
    })?;
    let auth = parse_authorization(auth)?;
    let Some(secret) = secret_of(auth.access_key) else {
        return Err(denied(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    // Bedrock's operations are signed for `bedrock`, Step Functions' and EventBridge's (AWS
    // JSON calls to `/` naming their target) for `states` and `events`.
    let service = match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some(t) if t.starts_with("AWSStepFunctions.") => "states",
        Some(t) if t.starts_with("AWSEvents.") => "events",
        _ => SERVICE,
    };
    if auth.service != service {
        return Err(denied(
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{service}'."),
        ));
    }
    let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                denied(
                    "IncompleteSignatureException",
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
                )
            })?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            format!("X-Amz-Date '{amz_date}' is not in the form yyyyMMddTHHmmssZ."),
        )
    })?;
    if !amz_date.starts_with(auth.date) {
        return Err(denied(
                "InvalidSignatureException",
                format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'", auth.date, &amz_date[..8.min(amz_date.len())]),
            ));
    }
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(denied(
                "InvalidSignatureException",
                format!("Signature expired: {amz_date} is now earlier or later than the server time by more than 15 minutes."),
            ));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(denied(
            "InvalidSignatureException",
            "'Host' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }

    // Re-sign over exactly the signed headers. The signer adds x-amz-date, the session
    // token and (when asked) x-amz-content-sha256 itself.
    let mut signed_values: Vec<(&str, String)> = Vec::new();
    for name in &auth.signed_headers {
        if matches!(
            *name,
            "x-amz-date" | "x-amz-security-token" | "x-amz-content-sha256"
        ) {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(denied(
                "InvalidSignatureException",
                format!("The signed header '{name}' is missing from the request."),
            ));
        }
        signed_values.push((name, values.join(",")));
    }
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .filter(|_| auth.signed_headers.contains(&"x-amz-security-token"))
        .map(str::to_string);
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    if auth.signed_headers.contains(&"x-amz-content-sha256") {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let identity = Credentials::new(auth.access_key, secret, token, None, "modelgate").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|e| Error::internal(format!("sigv4 parameters: {e}")))?
        .into();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let signable = SignableRequest::new(
        method.as_str(),
        path_and_query,
        signed_values.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| {
        denied(
            "InvalidSignatureException",
            format!("The request cannot be verified: {e}"),
        )
    })?;
    let expected = sign(signable, &params).map_err(|e| {
        denied(
            "InvalidSignatureException",
            format!("The request cannot be verified: {e}"),
        )
    })?;
    if bool::from(
        expected
            .signature()
            .as_bytes()
            .ct_eq(auth.signature.as_bytes()),
    ) {
        Ok(())
    } else {
        Err(denied(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";

    /// Sign like an AWS SDK client does: every header it sends except user-agent.
    fn client_request(secret: &str, at: SystemTime, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let identity = Credentials::new("AKIDTEST", secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("bedrock")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            PATH,
            headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let (new_headers, _) = instructions.into_parts();
        for h in new_headers {
            headers.insert(
                axum::http::HeaderName::from_bytes(h.name().as_bytes()).unwrap(),
                HeaderValue::from_str(h.value()).unwrap(),
            );
        }
        // Unsigned headers a proxy may add or change do not matter.
        headers.insert("user-agent", HeaderValue::from_static("Boto3/1.44"));
        headers
    }

    fn verify(
        v: &Verifier,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Error> {
        v.verify(&Method::POST, &PATH.parse().unwrap(), headers, body, now)
    }

    fn code(r: Result<(), Error>) -> String {
        r.unwrap_err().code.unwrap_or_default().to_string()
    }

    #[test]
    fn accepts_a_good_signature_and_rejects_every_kind_of_bad_one() {
        let v = Verifier::new([("AKIDTEST".to_string(), "s3cret".to_string())]);
        let now = SystemTime::now();
        let body = br#"{"messages":[]}"#;
        let good = client_request("s3cret", now, body);
        assert!(verify(&v, &good, body, now).is_ok());
        // Wrong secret, tampered body, changed signed header.
        assert_eq!(
            code(verify(&v, &client_request("wrong", now, body), body, now)),
            "InvalidSignatureException"
        );
        assert_eq!(
            code(verify(&v, &good, b"{}", now)),
            "InvalidSignatureException"
        );
        let mut tampered = good.clone();
        tampered.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            code(verify(&v, &tampered, body, now)),
            "InvalidSignatureException"
        );
        // Clock skew beyond 15 minutes either way.
        let old = now - Duration::from_secs(16 * 60);
        assert!(verify(&v, &client_request("s3cret", old, body), body, now)
            .unwrap_err()
            .message
            .contains("Signature expired"));
        let within = now - Duration::from_secs(14 * 60);
        assert!(verify(&v, &client_request("s3cret", within, body), body, now).is_ok());
        // Unknown key, no header, garbage header.
        let other = Verifier::new([("AKIDOTHER".to_string(), "s3cret".to_string())]);
        assert_eq!(
            code(verify(&other, &good, body, now)),
            "UnrecognizedClientException"
        );
        assert_eq!(
            code(verify(&v, &HeaderMap::new(), body, now)),
            "MissingAuthenticationTokenException"
        );
        let mut garbage = good.clone();
        garbage.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"),
        );
        assert_eq!(
            code(verify(&v, &garbage, body, now)),
            "IncompleteSignatureException"
        );
        // Unauthenticated, which the Bedrock dialect renders as 403 like AWS.
        assert_eq!(verify(&v, &garbage, body, now).unwrap_err().status(), 401);
    }

    #[test]
    fn amz_date_parsing() {
        let t = parse_amz_date("20261121T120000Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_795_262_400
        );
        for bad in [
            "2026-11-21T12:00:00Z",
            "20261121T1200Z",
            "20261321T120000Z",
            "",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }
}
