//! Archives and replays (EventBridge's `CreateArchive` … `CancelReplay`).
//!
//! Every event put is stored already, so an archive is a named view over a bus's stored
//! events: those received from its creation on that match its pattern, kept for its
//! `RetentionDays` (the purge spares them; 0 is for ever). A replay puts the archived events
//! of a time range on the bus again — with new ids and a `replay-name` member, to every rule
//! or only to the rules of `FilterArns` — in a task that records its progress on the replay
//! and stops between pages when cancelled. Replayed events are stored like any other and are
//! never part of an archive or a later replay.

use std::sync::Arc;

use modelgate_core::keys::now_ms;
use modelgate_events::Pattern;
use modelgate_store::{BusEvent, BusEventQuery};
use serde_json::{json, Value};

use super::Bus;

/// The kind of archives in the store.
pub const ARCHIVE: &str = "archive";
/// The kind of replays in the store.
pub const REPLAY: &str = "replay";

/// Events read per page by replays and archive counts.
const PAGE: usize = 500;

/// A rule's name from its ARN (`…:rule/NAME` or `…:rule/BUS/NAME`).
pub fn rule_name(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":rule/")?;
    rest.rsplit('/').next()
}

/// What an archive holds so far: (events, bytes).
pub async fn size(bus: &Bus, owner: &str, archive: &Value) -> Result<(u64, u64), String> {
    let pattern = pattern_of(archive)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut after = None;
    loop {
        let since = archive["created_ms"].as_i64().unwrap_or(0);
        let page = page(bus, owner, archive, since, None, after.clone()).await?;
        for e in &page {
            if archived(&pattern, &e.event) {
                count += 1;
                bytes += e.event.to_string().len() as u64;
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some((last.ts_ms, last.id.clone())),
            _ => return Ok((count, bytes)),
        }
    }
}

/// One page of an archive's bus's stored events (oldest first) received in `[since, until)`.
async fn page(
    bus: &Bus,
    owner: &str,
    archive: &Value,
    since: i64,
    until: Option<i64>,
    after: Option<(i64, String)>,
) -> Result<Vec<BusEvent>, String> {
    bus.store
        .events(&BusEventQuery {
            owner: Some(owner.to_string()),
            bus: archive["bus"].as_str().map(str::to_string),
            since_ms: Some(since),
            until_ms: until,
            after,
            limit: PAGE,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

fn pattern_of(archive: &Value) -> Result<Option<Pattern>, String> {
    archive["pattern"]
        .as_str()
        .map(|p| Pattern::parse(p).map_err(|e| e.to_string()))
        .transpose()
}

/// Whether a stored event belongs to an archive with this pattern (replayed events never do).
fn archived(pattern: &Option<Pattern>, event: &Value) -> bool {
    event.get("replay-name").is_none() && pattern.as_ref().is_none_or(|p| p.matches(event))
}

/// Change a replay's stored record: read it again, apply `f`, write it back (so a cancel
/// written meanwhile is kept); the record as written.
async fn update(
    bus: &Bus,
    owner: &str,
    name: &str,
    f: impl FnOnce(&mut Value),
) -> Result<Value, String> {
    let mut o = bus
        .store
        .object(REPLAY, owner, name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the replay {name} no longer exists"))?;
    f(&mut o.body);
    o.updated_ms = now_ms();
    bus.store
        .put_object(&o, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(o.body)
}

/// Run a replay (its record says what) to its end, in the background.
pub fn spawn(bus: Arc<Bus>, owner: String, name: String) {
    tokio::spawn(async move {
        if let Err(e) = run(&bus, &owner, &name).await {
            tracing::warn!(replay = %name, error = %e, "replay failed");
            let failed = update(&bus, &owner, &name, |r| {
                r["state"] = json!("FAILED");
                r["reason"] = json!(e);
                r["replay_end_ms"] = json!(now_ms());
            });
            if let Err(e) = failed.await {
                tracing::warn!(replay = %name, error = %e, "cannot record the replay's failure");
            }
        }
    });
}

async fn run(bus: &Bus, owner: &str, name: &str) -> Result<(), String> {
    let replay = update(bus, owner, name, |r| r["state"] = json!("RUNNING")).await?;
    let archive_name = replay["archive"].as_str().unwrap_or_default();
    let archive = bus
        .store
        .object(ARCHIVE, owner, archive_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the archive {archive_name} no longer exists"))?
        .body;
    let pattern = pattern_of(&archive)?;
    let target_bus = replay["bus"].as_str().unwrap_or("default").to_string();
    let only: Option<Vec<String>> = replay["destination"]["FilterArns"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().and_then(rule_name).map(str::to_string))
            .collect()
    });
    let since = replay["start_ms"]
        .as_i64()
        .unwrap_or(0)
        .max(archive["created_ms"].as_i64().unwrap_or(0));
    let mut after: Option<(i64, String)> = None;
    loop {
        let until = replay["end_ms"].as_i64();
        let page = page(bus, owner, &archive, since, until, after.clone()).await?;
        let Some(last) = page.last() else { break };
        let events: Vec<Value> = page
            .iter()
            .filter(|e| archived(&pattern, &e.event))
            .map(|e| {
                let mut ev = e.event.clone();
                ev["id"] = json!(modelgate_events::new_id());
                ev["replay-name"] = json!(name);
                ev
            })
            .collect();
        if !events.is_empty() {
            bus.put_to(owner, &target_bus, &events, 0, only.as_deref())
                .await?;
        }
        let n = events.len() as u64;
        let now = update(bus, owner, name, |r| {
            r["count"] = json!(r["count"].as_u64().unwrap_or(0) + n);
            r["last_replayed_ms"] = json!(last.ts_ms);
        })
        .await?;
        // Cancelled meanwhile: stop between pages.
        if now["state"] == "CANCELLING" {
            update(bus, owner, name, |r| {
                r["state"] = json!("CANCELLED");
                r["replay_end_ms"] = json!(now_ms());
            })
            .await?;
            return Ok(());
        }
        if page.len() < PAGE {
            break;
        }
        after = Some((last.ts_ms, last.id.clone()));
    }
    update(bus, owner, name, |r| {
        r["state"] = json!(if r["state"] == "CANCELLING" {
            "CANCELLED"
        } else {
            "COMPLETED"
        });
        r["replay_end_ms"] = json!(now_ms());
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_from_arns() {
        assert_eq!(
            rule_name("arn:aws:events:us-east-1:0:rule/docs"),
            Some("docs")
        );
        assert_eq!(
            rule_name("arn:aws:events:us-east-1:0:rule/audit/all"),
            Some("all")
        );
        assert_eq!(rule_name("arn:aws:events:us-east-1:0:event-bus/x"), None);
    }
}
