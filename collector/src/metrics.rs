//! Every metric of the collector, declared in one place. Names follow
//! `tern_collector_<name>_<unit>_total`; `docs/metrics.md` lists them with their labels.
//!
//! Accounting rule: every event that enters (`events_received`) leaves through exactly one of
//! `events_delivered`, `events_dead_lettered`, `events_duplicate` (a resent batch this instance
//! had acknowledged, answered without writing) or `events_rejected` (the request failed and the
//! SDK keeps the events to resend).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The drop reasons the SDK reports (`sdk/src/store.rs`, `drop_reason`; `docs/protocol.md`).
/// Anything else a client sends is counted as `other`: label values must stay few, and they
/// come from the internet.
pub const SDK_DROP_REASONS: [&str; 7] = [
    "queue_full",
    "storage_error",
    "buffer_events_cap",
    "buffer_bytes_cap",
    "buffer_age_cap",
    "corrupt_database",
    "too_large",
];

/// The `reason` label for a drop reason a client reported: a known one, or `other`.
pub fn sdk_drop_reason(reported: &str) -> &'static str {
    SDK_DROP_REASONS
        .iter()
        .find(|known| **known == reported)
        .copied()
        .unwrap_or("other")
}

/// Label of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// HTTP status code.
    pub status: u16,
}

/// Label of a rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Machine-readable reason (the `error` of the answer).
    pub reason: String,
}

/// Label of a Kinesis error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The Kinesis error code (a known one, or `other`), `timeout` or `network`.
    pub code: String,
}

/// The collector's metrics.
pub struct Metrics {
    registry: Registry,
    /// Upload requests answered, by status.
    pub requests: Family<StatusLabel, Counter>,
    /// Events in uploads that were decoded.
    pub events_received: Counter,
    /// Events written to the stream (in acknowledged and unacknowledged uploads alike).
    pub events_delivered: Counter,
    /// Events written to the dead-letter stream.
    pub events_dead_lettered: Counter,
    /// Events of decoded uploads that were answered with an error, by reason; the SDK resends them.
    pub events_rejected: Family<ReasonLabel, Counter>,
    /// Events of resent batches that this instance had already acknowledged.
    pub events_duplicate: Counter,
    /// Events the SDKs report they dropped on the device, by reason ([`SDK_DROP_REASONS`] or
    /// `other`).
    pub sdk_dropped_events: Family<ReasonLabel, Counter>,
    /// Bytes of uploads in progress (decoded records waiting for Kinesis).
    pub in_flight_bytes: Gauge,
    /// 1 when ready (Kinesis answers, not draining), else 0.
    pub ready: Gauge,
    /// Records that failed in a PutRecords call and were sent again.
    pub records_retried: Counter,
    /// Records refused with `ProvisionedThroughputExceededException`.
    pub records_throttled: Counter,
    /// PutRecords calls that failed as a whole, by error code (each call counted once, however
    /// many uploads shared it).
    pub put_records_failed: Family<CodeLabel, Counter>,
    /// Latency of PutRecords calls, in seconds.
    pub put_records_latency: Histogram,
    /// Latency of upload requests, from arrival to answer, in seconds.
    pub request_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tern_collector");
        let m = Self {
            requests: Family::default(),
            events_received: Counter::default(),
            events_delivered: Counter::default(),
            events_dead_lettered: Counter::default(),
            events_rejected: Family::default(),
            events_duplicate: Counter::default(),
            sdk_dropped_events: Family::default(),
            in_flight_bytes: Gauge::default(),
            ready: Gauge::default(),
            records_retried: Counter::default(),
            records_throttled: Counter::default(),
            put_records_failed: Family::default(),
            put_records_latency: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            request_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Upload requests answered, by HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "events_received",
            "Events in decoded uploads",
            m.events_received.clone(),
        );
        registry.register(
            "events_delivered",
            "Events written to the stream",
            m.events_delivered.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events written to the dead-letter stream",
            m.events_dead_lettered.clone(),
        );
        registry.register(
            "events_rejected",
            "Events of decoded uploads answered with an error (the SDK resends them), by reason",
            m.events_rejected.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events of resent batches this instance had acknowledged, answered without writing",
            m.events_duplicate.clone(),
        );
        registry.register(
            "sdk_dropped_events",
            "Events the SDKs report they dropped on the device, by reason",
            m.sdk_dropped_events.clone(),
        );
        registry.register(
            "in_flight_bytes",
            "Bytes of uploads in progress",
            m.in_flight_bytes.clone(),
        );
        registry.register("ready", "1 when ready to take uploads", m.ready.clone());
        registry.register(
            "records_retried",
            "Records sent again after failing in a PutRecords call",
            m.records_retried.clone(),
        );
        registry.register(
            "records_throttled",
            "Records refused with ProvisionedThroughputExceededException",
            m.records_throttled.clone(),
        );
        registry.register(
            "put_records_failed",
            "PutRecords calls that failed as a whole, by error code",
            m.put_records_failed.clone(),
        );
        registry.register(
            "put_records_latency_seconds",
            "Latency of PutRecords calls",
            m.put_records_latency.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "Latency of upload requests, arrival to answer",
            m.request_latency.clone(),
        );
        Self { registry, ..m }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_drop_reasons_map_to_a_few_label_values() {
        assert_eq!(sdk_drop_reason("buffer_events_cap"), "buffer_events_cap");
        assert_eq!(sdk_drop_reason("too_large"), "too_large");
        assert_eq!(sdk_drop_reason("x".repeat(10_000).as_str()), "other");
        assert_eq!(sdk_drop_reason("Queue_Full"), "other");
        assert_eq!(sdk_drop_reason(""), "other");
    }
}
