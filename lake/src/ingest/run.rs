//! The ingest loop: read the due shards, commit when due, until shutdown or caught up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;

use super::state::{Ingest, Summary};
use crate::config::IngestConfig;
use crate::error::Result;
use crate::metrics::Metrics;

/// Runs ingest until `shutdown` resolves (then commits what it read and returns) or, with
/// `stop_when_caught_up`, until every shard is read to its tip and committed.
pub async fn run(
    config: IngestConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Summary> {
    let stopping = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    {
        let (stopping, wake) = (Arc::clone(&stopping), Arc::clone(&wake));
        tokio::spawn(async move {
            shutdown.await;
            stopping.store(true, AtomicOrdering::SeqCst);
            wake.notify_one();
        });
    }
    let mut ingest = Ingest::open(config, metrics, Arc::clone(&stopping)).await?;
    ingest.republish().await?;
    tracing::info!(
        stream = ingest.source.stream(),
        lake = %ingest.config.lake,
        window_ids = ingest.window.len(),
        version = ingest.events.version(),
        "ingest started"
    );
    let mut last_evict = Instant::now();
    loop {
        if stopping.load(AtomicOrdering::SeqCst) {
            break;
        }
        if ingest.source.refresh_due() {
            // With other workers, their commits hold the positions of the parents this worker
            // waits for: take the table in first (with the ids they wrote).
            let shared = ingest.config.worker().is_ok_and(|w| w.count > 1);
            if shared {
                if let Err(error) = ingest.catch_up_with_table().await {
                    tracing::warn!(%error, "cannot read the table; trying again later");
                }
            }
            if let Err(error) = ingest.source.refresh(&ingest.events).await {
                tracing::warn!(%error, "cannot list shards; trying again later");
            }
        }
        let reads = ingest.source.poll(&ingest.metrics).await;
        for read in reads {
            ingest.take(read).await;
        }
        let interval = ingest.config.commit_interval();
        let unsaved = ingest.unsaved();
        let due = ingest.buffer.rows() >= ingest.config.commit_rows
            || ingest.buffer.since.is_some_and(|s| s.elapsed() >= interval)
            // A batch run commits as soon as it has read everything.
            || (ingest.config.stop_when_caught_up && unsaved && ingest.source.caught_up());
        if due {
            ingest.commit().await;
        }
        if last_evict.elapsed() >= Duration::from_secs(60) {
            ingest.window.evict(Utc::now());
            ingest
                .metrics
                .dedup_window_ids
                .set(ingest.window.len() as i64);
            last_evict = Instant::now();
        }
        if ingest.config.stop_when_caught_up
            // A shard that just ended may have children not listed yet.
            && !ingest.source.refresh_due()
            && ingest.source.caught_up()
            && !ingest.unsaved()
        {
            tracing::info!("every shard is read to its tip and committed");
            break;
        }
        // Sleep until a shard or the commit is due, or shutdown.
        let now = Instant::now();
        let mut until = ingest
            .source
            .next_due()
            .unwrap_or(now + Duration::from_secs(1));
        if let Some(since) = ingest.buffer.since {
            until = until.min(since + interval);
        }
        if until > now {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = wake.notified() => {}
            }
        }
    }
    if ingest.unsaved() {
        ingest.commit().await;
    }
    tracing::info!(summary = ?ingest.summary, "ingest stopped");
    Ok(ingest.summary)
}
