//! Watched directories (`[[watch]]`): a task per location reads the directory every
//! `interval`; a file whose name matches the pattern and that has not changed for `settle`
//! becomes one `Object Created` event on the bus. The event id is a hash of the location, the
//! file's path, size and modification time, so a file is announced once — also across
//! restarts and replicas watching the same directory (the stored event is found) — and a file
//! written again is announced again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use modelgate_core::hooks::{self, WatchConfig};
use modelgate_events::Glob;
use serde_json::json;

use super::Bus;

/// Start a watcher task per location.
pub fn spawn(bus: Arc<Bus>, locations: &[WatchConfig]) {
    for w in locations {
        let Ok(glob) = Glob::parse(&w.pattern) else {
            tracing::error!(location = %w.name, pattern = %w.pattern, "watch pattern does not parse; not watched");
            continue;
        };
        let (bus, w) = (Arc::clone(&bus), w.clone());
        tokio::spawn(async move {
            let mut seen: HashSet<String> = HashSet::new();
            loop {
                if let Err(e) = scan(&bus, &w, &glob, &mut seen).await {
                    tracing::warn!(location = %w.name, error = %e, "watched directory not read");
                }
                tokio::time::sleep(w.interval).await;
            }
        });
    }
}

/// The files below `root` (recursively when asked), as paths relative to it.
fn files(root: &Path, recursive: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if kind.is_file() {
                out.push(path);
            } else if kind.is_dir() && recursive {
                dirs.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn scan(
    bus: &Bus,
    w: &WatchConfig,
    glob: &Glob,
    seen: &mut HashSet<String>,
) -> Result<(), String> {
    let (root, recursive) = (w.path.clone(), w.recursive);
    let list = tokio::task::spawn_blocking(move || files(&root, recursive))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", w.path.display()))?;
    let now = SystemTime::now();
    for rel in list {
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || !glob.matches(&name) {
            continue;
        }
        let full = w.path.join(&rel);
        let Ok(meta) = tokio::fs::metadata(&full).await else {
            continue;
        };
        let modified = meta.modified().unwrap_or(now);
        // Still being written (or just finished): wait until it has been quiet for `settle`.
        if now.duration_since(modified).unwrap_or(Duration::ZERO) < w.settle {
            continue;
        }
        let key = rel.to_string_lossy().replace('\\', "/");
        let mtime = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = hooks::event_id(
            &format!("watch:{}", w.name),
            &format!("{key}\n{}\n{mtime}", meta.len()),
        );
        if seen.contains(&id) {
            continue;
        }
        if bus
            .store
            .event(&id)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            seen.insert(id);
            continue;
        }
        let bytes = match tokio::fs::read(&full).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %full.display(), error = %e, "watched file not read");
                continue;
            }
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let etag: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut detail = json!({
            "version": "0",
            "bucket": {"name": w.name},
            "object": {"key": key, "size": meta.len(), "etag": etag},
            "path": full.to_string_lossy(),
            "reason": "PutObject",
        });
        if w.count_records {
            if let Some(n) = hooks::record_count(&name, &bytes) {
                detail["record_count"] = json!(n);
            }
        }
        let entry = modelgate_events::Entry {
            source: Some(w.source.clone()),
            detail_type: Some(w.detail_type.clone()),
            detail: Some(detail.to_string()),
            resources: vec![format!("modelgate:watch/{}/{key}", w.name)],
            time_ms: None,
        };
        let site = modelgate_events::Site {
            account: &bus.site.account,
            region: &bus.site.region,
        };
        let event = modelgate_events::envelope(&entry, &id, modelgate_core::keys::now_ms(), &site)
            .map_err(|e| e.message)?;
        bus.put(&w.owner, &w.bus, &[event], 0).await?;
        tracing::info!(location = %w.name, key = %key, event = %id, "new file announced");
        seen.insert(id);
    }
    Ok(())
}
