//! Retention: records older than a configured age are deleted by one background task per kind
//! (invocation records, stored responses, bus events).

use std::future::Future;
use std::time::Duration;

/// Every `every` (at least a second), call `purge` with the cut-off (Unix ms: now minus
/// `retention`) and log how many `what` went.
pub fn spawn_purge<F, Fut, E>(what: &'static str, retention: Duration, every: Duration, purge: F)
where
    F: Fn(i64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, E>> + Send,
    E: std::fmt::Display,
{
    let every = every.max(Duration::from_secs(1));
    let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        loop {
            match purge(crate::keys::now_ms().saturating_sub(age)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, what, "purged records past retention"),
                Err(e) => tracing::warn!(error = %e, what, "cannot purge records past retention"),
            }
            tokio::time::sleep(every).await;
        }
    });
}
