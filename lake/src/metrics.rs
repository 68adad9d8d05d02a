//! Every metric of the lake, declared in one place; named `tern_lake_<name>_<unit>_total`
//! (`docs/metrics.md` lists them).
//!
//! Accounting rule: every stream record document read (`documents_read`) leaves through exactly
//! one of `rows_written` (first copy of its `event_id`), `gap_records_written` (first copy of
//! its `gap_id`), `batch_records_written` (every batch record of stream record v2),
//! `duplicates_removed` or `rejected` (by reason).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of a rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of `decode::reason::ALL`.
    pub reason: String,
}

/// Label of a per-shard gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    /// The Kinesis shard id.
    pub shard: String,
}

/// The lake's metrics.
pub struct Metrics {
    registry: Registry,
    /// Kinesis records read (an aggregated record counts once).
    pub records_read: Counter,
    /// Stream record documents read (each user record of an aggregate counts).
    pub documents_read: Counter,
    /// Rows committed to `events`.
    pub rows_written: Counter,
    /// Documents not written because their `event_id` is already in `events` (or earlier in
    /// the same commit).
    pub duplicates_removed: Counter,
    /// Documents committed to `rejected`, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Gap records committed to `gaps` (first copies).
    pub gap_records_written: Counter,
    /// Batch records (stream record v2) committed to `batches`, resends included.
    pub batch_records_written: Counter,
    /// Commits to `events`.
    pub commits: Counter,
    /// Commit attempts that failed (storage error, or another writer got in first) and were
    /// tried again.
    pub commit_retries: Counter,
    /// Seconds a commit took, from building the files to the new table version.
    pub commit_duration: Histogram,
    /// Rows per commit.
    pub commit_rows: Histogram,
    /// Seconds from a record's arrival in the stream to its row being visible in the table.
    pub freshness: Histogram,
    /// `MillisBehindLatest` of each shard's last read.
    pub shard_lag: Family<ShardLabel, Gauge>,
    /// GetRecords calls answered with throttling.
    pub read_throttled: Counter,
    /// GetRecords calls that failed otherwise.
    pub read_errors: Counter,
    /// `event_id`s in the dedup window.
    pub dedup_window_ids: Gauge,
    /// Kinesis records committed to `raw`.
    pub raw_records_written: Counter,
    /// Rows published to the cleansed stream (first publishes and republishes).
    pub clean_published: Counter,
    /// Rows published again at start because a crash came between their commit and the
    /// record of their publish: the cleansed stream's only duplicates.
    pub clean_republished: Counter,
    /// PutRecords calls (or records in them) to the cleansed stream that failed and were tried
    /// again.
    pub clean_publish_retries: Counter,
    /// Seconds from a record's arrival in the raw stream to its row's acceptance by the
    /// cleansed stream.
    pub clean_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tern_lake");
        let records_read = Counter::default();
        registry.register("records_read", "Kinesis records read", records_read.clone());
        let documents_read = Counter::default();
        registry.register(
            "documents_read",
            "Stream record documents read (after de-aggregation)",
            documents_read.clone(),
        );
        let rows_written = Counter::default();
        registry.register(
            "rows_written",
            "Rows committed to events",
            rows_written.clone(),
        );
        let duplicates_removed = Counter::default();
        registry.register(
            "duplicates_removed",
            "Documents whose event_id (or gap_id) was already in the table",
            duplicates_removed.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rejected",
            "Documents committed to rejected, by reason",
            rejected.clone(),
        );
        let gap_records_written = Counter::default();
        registry.register(
            "gap_records_written",
            "Gap records committed to gaps (first copy of each gap_id)",
            gap_records_written.clone(),
        );
        let batch_records_written = Counter::default();
        registry.register(
            "batch_records_written",
            "Batch records (stream record v2) committed to batches",
            batch_records_written.clone(),
        );
        let commits = Counter::default();
        registry.register("commits", "Commits to events", commits.clone());
        let commit_retries = Counter::default();
        registry.register(
            "commit_retries",
            "Commit attempts tried again",
            commit_retries.clone(),
        );
        let commit_duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register(
            "commit_duration_seconds",
            "Time a commit took",
            commit_duration.clone(),
        );
        let commit_rows = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register("commit_rows", "Rows per commit", commit_rows.clone());
        let freshness = Histogram::new(exponential_buckets(0.25, 2.0, 10));
        registry.register(
            "freshness_seconds",
            "Stream arrival to visible in the table",
            freshness.clone(),
        );
        let shard_lag = Family::<ShardLabel, Gauge>::default();
        registry.register(
            "shard_lag_milliseconds",
            "MillisBehindLatest of each shard's last read",
            shard_lag.clone(),
        );
        let read_throttled = Counter::default();
        registry.register(
            "read_throttled",
            "GetRecords calls throttled",
            read_throttled.clone(),
        );
        let read_errors = Counter::default();
        registry.register(
            "read_errors",
            "GetRecords calls failed",
            read_errors.clone(),
        );
        let dedup_window_ids = Gauge::default();
        registry.register(
            "dedup_window_ids",
            "event_ids held in the dedup window",
            dedup_window_ids.clone(),
        );
        let raw_records_written = Counter::default();
        registry.register(
            "raw_records_written",
            "Kinesis records committed to raw",
            raw_records_written.clone(),
        );
        let clean_published = Counter::default();
        registry.register(
            "clean_published",
            "Rows published to the cleansed stream",
            clean_published.clone(),
        );
        let clean_republished = Counter::default();
        registry.register(
            "clean_republished",
            "Rows published again after a crash between commit and publish",
            clean_republished.clone(),
        );
        let clean_publish_retries = Counter::default();
        registry.register(
            "clean_publish_retries",
            "Failed publishes to the cleansed stream, tried again",
            clean_publish_retries.clone(),
        );
        let clean_latency = Histogram::new(exponential_buckets(0.25, 2.0, 10));
        registry.register(
            "clean_latency_seconds",
            "Raw stream arrival to accepted by the cleansed stream",
            clean_latency.clone(),
        );
        Self {
            registry,
            raw_records_written,
            clean_published,
            clean_republished,
            clean_publish_retries,
            clean_latency,
            records_read,
            documents_read,
            rows_written,
            duplicates_removed,
            rejected,
            gap_records_written,
            batch_records_written,
            commits,
            commit_retries,
            commit_duration,
            commit_rows,
            freshness,
            shard_lag,
            read_throttled,
            read_errors,
            dedup_window_ids,
        }
    }
}

impl Metrics {
    /// Sets a shard's lag.
    pub fn shard_lag(&self, shard: &str, lag_ms: i64) {
        self.shard_lag
            .get_or_create(&ShardLabel {
                shard: shard.to_owned(),
            })
            .set(lag_ms);
    }

    /// Counts a rejected document.
    pub fn rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the process ends.
pub fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.encode())),
        )
        .route("/healthz", get(|| std::future::ready("ok")));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
