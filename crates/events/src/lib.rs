//! The event bus's pure parts, with no IO: EventBridge event patterns ([`pattern`]), what a
//! target receives ([`transform`]) and the event envelope `PutEvents` builds ([`envelope`]).

pub mod pattern;
pub mod transform;

pub use pattern::{Glob, InvalidPattern, Pattern, RuleSet};
pub use transform::{InputSpec, InputTransformer, RuleInfo};

use serde_json::{json, Value};

/// The largest event `PutEvents` takes, in EventBridge's accounting (256 KB).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The longest event pattern (`PutRule`, `TestEventPattern`).
pub const MAX_PATTERN_CHARS: usize = 4096;

/// One `PutEvents` entry as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// `Source`.
    pub source: Option<String>,
    /// `DetailType`.
    pub detail_type: Option<String>,
    /// `Detail` (JSON object text).
    pub detail: Option<String>,
    /// `Resources`.
    pub resources: Vec<String>,
    /// `Time` (seconds since the epoch), else now.
    pub time_ms: Option<i64>,
}

/// Why an entry was refused: the per-entry `ErrorCode` and `ErrorMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// `ErrorCode`.
    pub code: &'static str,
    /// `ErrorMessage`.
    pub message: String,
}

fn entry_error(message: impl Into<String>) -> EntryError {
    EntryError {
        code: "InvalidArgument",
        message: message.into(),
    }
}

/// The entry's size as EventBridge counts it: the time (14 bytes when given), the source,
/// detail type, detail and resources in UTF-8 bytes.
pub fn entry_size(e: &Entry) -> usize {
    let mut n = if e.time_ms.is_some() { 14 } else { 0 };
    n += e.source.as_deref().map_or(0, str::len);
    n += e.detail_type.as_deref().map_or(0, str::len);
    n += e.detail.as_deref().map_or(0, str::len);
    n += e.resources.iter().map(String::len).sum::<usize>();
    n
}

/// RFC 3339 at second precision, as events carry their time.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Where events are put: account and region for the envelope and ARNs.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    /// `account`.
    pub account: &'a str,
    /// `region`.
    pub region: &'a str,
}

/// Check an entry and make its event: `{version, id, detail-type, source, account, time,
/// region, resources, detail}`.
pub fn envelope(e: &Entry, id: &str, now_ms: i64, site: &Site<'_>) -> Result<Value, EntryError> {
    let source = e
        .source
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            entry_error("Parameter Source is not valid. Reason: Source is a required argument.")
        })?;
    let detail_type = e
        .detail_type
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            entry_error(
                "Parameter DetailType is not valid. Reason: DetailType is a required argument.",
            )
        })?;
    let detail_text = e.detail.as_deref().ok_or_else(|| {
        entry_error("Parameter Detail is not valid. Reason: Detail is a required argument.")
    })?;
    let detail: Value = serde_json::from_str(detail_text)
        .map_err(|err| entry_error(format!("Parameter Detail is not valid. Reason: {err}")))?;
    if !detail.is_object() {
        return Err(entry_error(
            "Parameter Detail is not valid. Reason: Detail must be a JSON object.",
        ));
    }
    if entry_size(e) > MAX_EVENT_BYTES {
        return Err(EntryError {
            code: "ValidationException",
            message: format!(
                "The entry is {} bytes; an event can be at most {MAX_EVENT_BYTES} bytes.",
                entry_size(e)
            ),
        });
    }
    Ok(json!({
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": source,
        "account": site.account,
        "time": rfc3339(e.time_ms.unwrap_or(now_ms)),
        "region": site.region,
        "resources": e.resources,
        "detail": detail,
    }))
}

/// A new event id (a UUID, as EventBridge's are).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_refusals() {
        let site = Site {
            account: "000000000000",
            region: "us-east-1",
        };
        let e = Entry {
            source: Some("com.enterprise.application".into()),
            detail_type: Some("DocumentUploaded".into()),
            detail: Some(r#"{"document":"c.pdf"}"#.into()),
            resources: vec!["arn:x".into()],
            time_ms: Some(1_796_601_600_000),
        };
        let v = envelope(&e, "id-1", 0, &site).unwrap();
        assert_eq!(v["time"], "2026-12-07T00:00:00Z");
        assert_eq!(v["detail"]["document"], "c.pdf");
        assert_eq!(v["resources"][0], "arn:x");
        let no_source = Entry {
            source: None,
            ..e.clone()
        };
        assert!(envelope(&no_source, "i", 0, &site)
            .unwrap_err()
            .message
            .contains("Source"));
        let list = Entry {
            detail: Some("[1]".into()),
            ..e.clone()
        };
        assert!(envelope(&list, "i", 0, &site)
            .unwrap_err()
            .message
            .contains("JSON object"));
        let big = Entry {
            detail: Some(format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_EVENT_BYTES))),
            ..e
        };
        assert_eq!(
            envelope(&big, "i", 0, &site).unwrap_err().code,
            "ValidationException"
        );
    }
}
