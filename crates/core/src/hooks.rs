//! Inbound webhooks (`[[hooks]]`): receivers at `POST /hooks/{name}` that check the sender's
//! signature and put the payload on the event bus as an event; and watched directories
//! (`[[watch]]`), whose new files become `Object Created` events.
//!
//! The common signature conventions are built in: GitHub (`X-Hub-Signature-256:
//! sha256=HEX` over the body), Stripe (`Stripe-Signature: t=TS,v1=HEX` over `TS.body`, with a
//! tolerance), Standard Webhooks / Svix (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,BASE64` over `id.ts.body`, a `whsec_` base64 secret), Modelgate's own (`modelgate-
//! signature`, what its job and event webhooks send), a plain HMAC-SHA256 of the body in a
//! header of your choice (hex or base64, with or without `sha256=`), and a shared token.
//! Every comparison is constant-time. Pure: no IO.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

/// How a sender proves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// `X-Hub-Signature-256: sha256=HEX(HMAC-SHA256(secret, body))`.
    Github,
    /// `Stripe-Signature: t=TS,v1=HEX(HMAC-SHA256(secret, "TS.body"))`.
    Stripe,
    /// Standard Webhooks: `webhook-signature: v1,BASE64(HMAC-SHA256(key, "id.ts.body"))`.
    StandardWebhooks,
    /// `modelgate-signature: t=TS,v1=HEX(…)` (as Modelgate's own webhooks sign).
    Modelgate,
    /// `HMAC-SHA256(secret, body)` in `signature_header`, hex or base64, `sha256=` optional.
    HmacSha256,
    /// The secret itself in `signature_header` (GitLab's `X-Gitlab-Token` style).
    Token,
}

/// One `[[hooks]]` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Served at `POST /hooks/{name}`.
    pub name: String,
    /// How the sender signs.
    pub scheme: Scheme,
    /// The environment variable holding the secret (or token).
    pub secret_env: String,
    /// The header holding the signature (`hmac-sha256`, `token`; the others know theirs).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// How old a timestamped signature may be (Stripe, Standard Webhooks, Modelgate).
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// The events' `source`.
    pub source: String,
    /// The events' `detail-type`, unless `detail_type_header` names a header that has one.
    #[serde(default = "default_detail_type")]
    pub detail_type: String,
    /// A header whose value is the detail type (`X-GitHub-Event`).
    #[serde(default)]
    pub detail_type_header: Option<String>,
    /// A header with the sender's delivery id, for idempotency (default per scheme: GitHub's
    /// `X-GitHub-Delivery`, `webhook-id`, else `Idempotency-Key`).
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// The bus the events go to.
    #[serde(default = "default_bus")]
    pub bus: String,
    /// Whose rules the events are matched against (a key id; `anonymous` for rules made
    /// without a key).
    #[serde(default = "default_owner")]
    pub owner: String,
}

/// One `[[watch]]` directory: new files whose name matches `pattern` become events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The location's name (the events' `bucket.name`).
    pub name: String,
    /// The directory.
    pub path: std::path::PathBuf,
    /// A wildcard on the file name (`*.csv`).
    #[serde(default = "default_watch_pattern")]
    pub pattern: String,
    /// Also files in subdirectories (the key is the path below `path`).
    #[serde(default)]
    pub recursive: bool,
    /// The events' `source`.
    #[serde(default = "default_watch_source")]
    pub source: String,
    /// The events' `detail-type`.
    #[serde(default = "default_object_created")]
    pub detail_type: String,
    /// The bus the events go to.
    #[serde(default = "default_bus")]
    pub bus: String,
    /// Whose rules match the events.
    #[serde(default = "default_owner")]
    pub owner: String,
    /// How often the directory is read.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long a file must be unchanged before it counts as written.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub settle: Duration,
    /// Count the records of `.csv`, `.tsv` (rows after the header) and `.jsonl` / `.ndjson`
    /// (lines) files into the event's `record_count`.
    #[serde(default = "default_true")]
    pub count_records: bool,
}

fn default_watch_pattern() -> String {
    "*".into()
}

fn default_watch_source() -> String {
    "modelgate.watch".into()
}

fn default_object_created() -> String {
    "Object Created".into()
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_true() -> bool {
    true
}

impl WatchConfig {
    /// Check one location (`i`: its place in the list, for messages).
    pub fn validate(&self, i: usize) -> Result<(), String> {
        if self.name.is_empty() || self.source.is_empty() || self.detail_type.is_empty() {
            return Err(format!(
                "keys `watch[{i}].name`, `.source` and `.detail_type` must not be empty"
            ));
        }
        if self.interval.is_zero() {
            return Err(format!("key `watch[{i}].interval` must be longer than 0"));
        }
        if self.pattern.contains("**") {
            return Err(format!(
                "key `watch[{i}].pattern`: '{}' has consecutive wildcards",
                self.pattern
            ));
        }
        Ok(())
    }
}

/// The records of a file's contents: rows after the header of a CSV / TSV (a newline inside
/// double quotes is part of a field), non-empty lines of JSON Lines; none for other kinds.
pub fn record_count(name: &str, bytes: &[u8]) -> Option<u64> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match ext.as_str() {
        "csv" | "tsv" => {
            let mut rows = 0u64;
            let mut quoted = false;
            let mut filled = false;
            for &b in bytes {
                match b {
                    b'"' => {
                        quoted = !quoted;
                        filled = true;
                    }
                    b'\n' if !quoted => {
                        rows += u64::from(filled);
                        filled = false;
                    }
                    b'\r' => {}
                    _ => filled = true,
                }
            }
            rows += u64::from(filled);
            Some(rows.saturating_sub(1))
        }
        "jsonl" | "ndjson" => Some(
            bytes
                .split(|b| *b == b'\n')
                .filter(|l| l.iter().any(|c| !c.is_ascii_whitespace()))
                .count() as u64,
        ),
        _ => None,
    }
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_detail_type() -> String {
    "Webhook".into()
}

fn default_bus() -> String {
    "default".into()
}

fn default_owner() -> String {
    "anonymous".into()
}

impl HookConfig {
    /// Check one receiver (`i`: its place in the list, for messages).
    pub fn validate(&self, i: usize) -> Result<(), String> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return Err(format!(
                "key `hooks[{i}].name`: '{}' must be 1 to 64 letters, digits, - or _",
                self.name
            ));
        }
        if matches!(self.scheme, Scheme::HmacSha256 | Scheme::Token)
            && self.signature_header.is_none()
        {
            return Err(format!(
                "key `hooks[{i}].signature_header` is required for scheme {:?}",
                self.scheme
            ));
        }
        if self.source.is_empty() || self.secret_env.is_empty() {
            return Err(format!(
                "keys `hooks[{i}].source` and `hooks[{i}].secret_env` must not be empty"
            ));
        }
        Ok(())
    }

    /// The header with the sender's delivery id.
    pub fn delivery_header(&self) -> &str {
        if let Some(h) = &self.delivery_id_header {
            return h;
        }
        match self.scheme {
            Scheme::Github => "x-github-delivery",
            Scheme::StandardWebhooks => "webhook-id",
            Scheme::Modelgate => "modelgate-webhook-id",
            _ => "idempotency-key",
        }
    }
}

/// A request's headers, by lower-case name.
pub trait Headers {
    /// The value of `name`.
    fn get(&self, name: &str) -> Option<&str>;
}

fn hmac(secret: &[u8], parts: &[&[u8]]) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `t=TS,v1=HEX` (Stripe, Modelgate): any `v1` right for `TS.body`, `TS` within tolerance.
pub(crate) fn timestamped(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => sigs.extend(unhex(v)),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > tolerance.as_secs() {
        return false;
    }
    let tag = hmac(secret, &[t.to_string().as_bytes(), b".", body]);
    sigs.iter().any(|s| same(s, tag.as_ref()))
}

/// Whether the request is signed by the holder of `secret`; `now`: Unix seconds.
pub fn verify(
    hook: &HookConfig,
    secret: &[u8],
    headers: &dyn Headers,
    body: &[u8],
    now: u64,
) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).ok_or("the signature header is missing");
    let ok = match hook.scheme {
        Scheme::Github => {
            let v = header("x-hub-signature-256")?;
            let given = v.strip_prefix("sha256=").and_then(unhex);
            given.is_some_and(|g| same(&g, hmac(secret, &[body]).as_ref()))
        }
        Scheme::Stripe => timestamped(
            secret,
            header("stripe-signature")?,
            body,
            now,
            hook.tolerance,
        ),
        Scheme::Modelgate => timestamped(
            secret,
            header("modelgate-signature")?,
            body,
            now,
            hook.tolerance,
        ),
        Scheme::StandardWebhooks => {
            let id = header("webhook-id")?;
            let ts = header("webhook-timestamp")?;
            let sigs = header("webhook-signature")?;
            let fresh = ts
                .parse::<u64>()
                .is_ok_and(|t| now.abs_diff(t) <= hook.tolerance.as_secs());
            let key = std::str::from_utf8(secret)
                .ok()
                .map(|s| s.strip_prefix("whsec_").unwrap_or(s))
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or("the secret is not a whsec_ base64 key")?;
            let tag = hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            fresh
                && sigs.split(' ').any(|s| {
                    s.strip_prefix("v1,")
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .is_some_and(|g| same(&g, tag.as_ref()))
                })
        }
        Scheme::HmacSha256 => {
            let name = hook.signature_header.as_deref().unwrap_or_default();
            let v = header(name)?;
            let v = v.strip_prefix("sha256=").unwrap_or(v);
            let tag = hmac(secret, &[body]);
            let given =
                unhex(v).or_else(|| base64::engine::general_purpose::STANDARD.decode(v).ok());
            given.is_some_and(|g| same(&g, tag.as_ref()))
        }
        Scheme::Token => {
            let name = hook.signature_header.as_deref().unwrap_or_default();
            same(header(name)?.as_bytes(), secret)
        }
    };
    if ok {
        Ok(())
    } else {
        Err("the signature does not match")
    }
}

/// The event id of a delivery: the same for every retry of it, so a repeat is recognised.
pub fn event_id(hook: &str, delivery: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{hook}\n{delivery}").as_bytes(),
    );
    let b = d.as_ref();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct H(HashMap<&'static str, String>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }

    fn hook(scheme: Scheme, header: Option<&str>) -> HookConfig {
        HookConfig {
            name: "h".into(),
            scheme,
            secret_env: "X".into(),
            signature_header: header.map(str::to_string),
            tolerance: Duration::from_secs(300),
            source: "s".into(),
            detail_type: "Webhook".into(),
            detail_type_header: None,
            delivery_id_header: None,
            bus: "default".into(),
            owner: "anonymous".into(),
        }
    }

    fn hexed(t: &ring::hmac::Tag) -> String {
        t.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn every_scheme_accepts_its_signature_and_refuses_a_wrong_one() {
        let body = br#"{"action":"opened"}"#;
        let secret = b"s3cret";
        let now = 1_800_000_000u64;
        let gh = H([(
            "x-hub-signature-256",
            format!("sha256={}", hexed(&hmac(secret, &[body]))),
        )]
        .into());
        assert!(verify(&hook(Scheme::Github, None), secret, &gh, body, now).is_ok());
        assert!(verify(&hook(Scheme::Github, None), secret, &gh, b"{}", now).is_err());
        assert!(verify(&hook(Scheme::Github, None), b"other", &gh, body, now).is_err());

        let t = now.to_string();
        let st = H([(
            "stripe-signature",
            format!(
                "t={t},v1={}",
                hexed(&hmac(secret, &[t.as_bytes(), b".", body]))
            ),
        )]
        .into());
        assert!(verify(&hook(Scheme::Stripe, None), secret, &st, body, now).is_ok());
        assert!(
            verify(&hook(Scheme::Stripe, None), secret, &st, body, now + 301).is_err(),
            "too old"
        );
        let mg = H([(
            "modelgate-signature",
            crate::jobs::sign_webhook(secret, now, body),
        )]
        .into());
        assert!(verify(&hook(Scheme::Modelgate, None), secret, &mg, body, now).is_ok());

        let key = b"0123456789abcdef";
        let whsec = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let sig = base64::engine::general_purpose::STANDARD
            .encode(hmac(key, &[b"msg_1.", t.as_bytes(), b".", body]).as_ref());
        let sw = H([
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", t.clone()),
            ("webhook-signature", format!("v1,bogus v1,{sig}")),
        ]
        .into());
        assert!(verify(
            &hook(Scheme::StandardWebhooks, None),
            whsec.as_bytes(),
            &sw,
            body,
            now
        )
        .is_ok());
        assert!(verify(
            &hook(Scheme::StandardWebhooks, None),
            whsec.as_bytes(),
            &sw,
            b"x",
            now
        )
        .is_err());

        let hm = H([(
            "x-signature",
            base64::engine::general_purpose::STANDARD.encode(hmac(secret, &[body]).as_ref()),
        )]
        .into());
        assert!(verify(
            &hook(Scheme::HmacSha256, Some("x-signature")),
            secret,
            &hm,
            body,
            now
        )
        .is_ok());
        let tok = H([("x-gitlab-token", "s3cret".into())].into());
        assert!(verify(
            &hook(Scheme::Token, Some("x-gitlab-token")),
            secret,
            &tok,
            body,
            now
        )
        .is_ok());
        assert!(verify(
            &hook(Scheme::Token, Some("x-gitlab-token")),
            b"s3cre",
            &tok,
            body,
            now
        )
        .is_err());
        assert_eq!(
            verify(
                &hook(Scheme::Github, None),
                secret,
                &H(HashMap::new()),
                body,
                now
            ),
            Err("the signature header is missing")
        );
    }

    #[test]
    fn records_are_counted_by_kind() {
        assert_eq!(record_count("a.csv", b"id,name\n1,a\n2,b\n"), Some(2));
        assert_eq!(
            record_count("a.CSV", b"id,name\r\n1,a\r\n2,b"),
            Some(2),
            "no final newline"
        );
        assert_eq!(
            record_count("a.csv", b"id,note\n1,\"two\nlines\"\n2,x\n\n"),
            Some(2),
            "quoted newline, blank line"
        );
        assert_eq!(record_count("a.csv", b""), Some(0));
        assert_eq!(record_count("a.jsonl", b"{}\n{}\n  \n{}"), Some(3));
        assert_eq!(record_count("a.txt", b"x\ny"), None);
        assert_eq!(record_count("noext", b"x"), None);
    }

    #[test]
    fn event_ids_are_stable_per_delivery() {
        assert_eq!(event_id("gh", "d1"), event_id("gh", "d1"));
        assert_ne!(event_id("gh", "d1"), event_id("gh", "d2"));
        assert_ne!(event_id("gh", "d1"), event_id("other", "d1"));
        assert_eq!(event_id("gh", "d1").len(), 36);
    }
}
