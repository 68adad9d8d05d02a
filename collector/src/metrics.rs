//! Every metric of the collector, declared in one place. Names follow
//! `tern_collector_<name>_<unit>_total`; `docs/metrics.md` lists them with their labels.
//!
//! Accounting rule: every event that enters (`events_received`) leaves through exactly one of
//! `events_delivered`, `events_dead_lettered` and `events_refused` (its upload was acknowledged;
//! the last two are the invalid events listed in the answer, with and without a dead-letter
//! stream), `events_duplicate`
//! (a resent batch this instance had acknowledged, answered without writing) or
//! `events_rejected` (the upload was not acknowledged, whatever reached the stream: the SDK
//! keeps the events and resends them). [`UploadEvents`] enforces it, also when a handler is
//! cancelled.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `reason` label for a drop reason a client reported: one of the protocol's
/// [`tern_protocol::drop_reason::ALL`], or `other`. Label values must stay few, and they come
/// from the internet.
pub fn sdk_drop_reason(reported: &str) -> &'static str {
    tern_protocol::drop_reason::ALL
        .iter()
        .find(|known| **known == reported)
        .copied()
        .unwrap_or("other")
}

/// Why the collector refuses a single event (the `reason` of a refused event and of its dead
/// letter): the label values of `events_refused`.
pub const REFUSED_EVENT_REASONS: [&str; 6] = [
    "invalid_name",
    "invalid_seq",
    "invalid_id",
    "invalid_properties",
    "invalid_timestamp",
    "record_too_large",
];

/// The `reason` label of a refused event: one of [`REFUSED_EVENT_REASONS`], else `other`.
fn refused_event_reason(reason: &str) -> &'static str {
    REFUSED_EVENT_REASONS
        .iter()
        .find(|known| **known == reason)
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

/// Label of the unknown-field counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocationLabel {
    /// Where in the batch (one of [`crate::decode::UNKNOWN_FIELD_LOCATIONS`]).
    pub location: String,
}

/// Label of a Kinesis error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The Kinesis error code (a known one, or `other`), `timeout` or `network`.
    pub code: String,
}

/// Upper bounds (seconds) of `request_latency_seconds`: every millisecond up to the 10 ms an
/// acknowledgement should take at half load (docs/BENCHMARKS.md), so the share answered within
/// it is read off one bucket, then doubling past the default ack deadline (10 s).
pub const REQUEST_LATENCY_BUCKETS: [f64; 21] = [
    0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.010, 0.020, 0.040, 0.080,
    0.160, 0.320, 0.640, 1.280, 2.560, 5.120, 10.240, 20.480,
];

/// The collector's metrics.
pub struct Metrics {
    registry: Registry,
    /// Upload requests answered, by status.
    pub requests: Family<StatusLabel, Counter>,
    /// Upload requests answered with an error, by reason (the answer's `error` code, one of
    /// [`crate::error::REQUEST_ERROR_CODES`], else `other`), whether or not their batch decoded:
    /// the only count, by reason, of requests refused before decoding (401, 413, 415, 400, 408,
    /// 503 `overloaded`), which carry no countable events.
    pub requests_refused: Family<ReasonLabel, Counter>,
    /// Events in uploads that were decoded.
    pub events_received: Counter,
    /// Events of acknowledged uploads written to the stream. Records of an upload that was not
    /// acknowledged may be in the stream too (the resend duplicates them); they are counted in
    /// `events_rejected`, never here.
    pub events_delivered: Counter,
    /// Events of acknowledged uploads written to the dead-letter stream.
    pub events_dead_lettered: Counter,
    /// Invalid events of acknowledged uploads, listed in the answer as refused, when there is no
    /// dead-letter stream (with one they count in `events_dead_lettered`), by reason (one of
    /// [`REFUSED_EVENT_REASONS`]).
    pub events_refused: Family<ReasonLabel, Counter>,
    /// The sum of `events_refused` over reasons (not exported; for [`Metrics::accounting`]).
    events_refused_sum: Counter,
    /// Events of decoded uploads that were not acknowledged, by reason (the error code of the
    /// answer, or `cancelled` when the handler was dropped: client gone, shutdown deadline);
    /// the SDK resends them.
    pub events_rejected: Family<ReasonLabel, Counter>,
    /// The sum of `events_rejected` over reasons (not exported; for [`Metrics::accounting`]).
    events_rejected_sum: Counter,
    /// Events of resent batches that this instance had already acknowledged.
    pub events_duplicate: Counter,
    /// Events the SDKs report they dropped on the device, by reason ([`tern_protocol::drop_reason::ALL`] or
    /// `other`).
    pub sdk_dropped_events: Family<ReasonLabel, Counter>,
    /// `seq`s the SDKs report given up on in the gap records of acknowledged uploads, by reason
    /// (one of [`tern_protocol::gap_reason::ALL`]; checked at parse time).
    pub gap_events: Family<ReasonLabel, Counter>,
    /// Fields of decoded batches that the collector did not know and ignored (tolerated within
    /// v1), by location.
    pub unknown_fields: Family<LocationLabel, Counter>,
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
            requests_refused: Family::default(),
            events_received: Counter::default(),
            events_delivered: Counter::default(),
            events_dead_lettered: Counter::default(),
            events_refused: Family::default(),
            events_refused_sum: Counter::default(),
            events_rejected: Family::default(),
            events_rejected_sum: Counter::default(),
            events_duplicate: Counter::default(),
            sdk_dropped_events: Family::default(),
            gap_events: Family::default(),
            unknown_fields: Family::default(),
            in_flight_bytes: Gauge::default(),
            ready: Gauge::default(),
            records_retried: Counter::default(),
            records_throttled: Counter::default(),
            put_records_failed: Family::default(),
            put_records_latency: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            request_latency: Histogram::new(REQUEST_LATENCY_BUCKETS.iter().copied()),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Upload requests answered, by HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "requests_refused",
            "Upload requests answered with an error, by reason (the error code of the answer)",
            m.requests_refused.clone(),
        );
        registry.register(
            "events_received",
            "Events in decoded uploads",
            m.events_received.clone(),
        );
        registry.register(
            "events_delivered",
            "Events of acknowledged uploads written to the stream",
            m.events_delivered.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events of acknowledged uploads written to the dead-letter stream",
            m.events_dead_lettered.clone(),
        );
        registry.register(
            "events_refused",
            "Invalid events of acknowledged uploads listed as refused in the answer, without a \
             dead-letter stream, by reason",
            m.events_refused.clone(),
        );
        registry.register(
            "events_rejected",
            "Events of decoded uploads not acknowledged (the SDK resends them), by reason",
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
            "gap_events",
            "Seqs the SDKs report given up on, in gap records of acknowledged uploads, by reason",
            m.gap_events.clone(),
        );
        registry.register(
            "unknown_fields",
            "Unknown fields of decoded batches, ignored (tolerated within v1), by location",
            m.unknown_fields.clone(),
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

    /// Counts `events` as received; the returned guard must settle them through one outcome.
    pub fn receive(&self, events: u64) -> UploadEvents<'_> {
        let mut guard = UploadEvents::new(self);
        guard.receive(events);
        guard
    }

    /// Counts an upload request answered with the error `code`.
    pub fn refused(&self, code: &str) {
        let reason = crate::error::REQUEST_ERROR_CODES
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("other");
        self.requests_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a field ignored at `location` (one of
    /// [`crate::decode::UNKNOWN_FIELD_LOCATIONS`]).
    pub fn unknown_field(&self, location: &'static str) {
        self.unknown_fields
            .get_or_create(&LocationLabel {
                location: location.to_owned(),
            })
            .inc();
    }

    /// Counts `events` as rejected for `reason`.
    fn reject(&self, reason: &str, events: u64) {
        if events > 0 {
            self.events_rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.to_owned(),
                })
                .inc_by(events);
            self.events_rejected_sum.inc_by(events);
        }
    }

    /// The event counters, for the final report at exit.
    pub fn accounting(&self) -> Accounting {
        Accounting {
            received: self.events_received.get(),
            delivered: self.events_delivered.get(),
            dead_lettered: self.events_dead_lettered.get(),
            refused: self.events_refused_sum.get(),
            duplicate: self.events_duplicate.get(),
            rejected: self.events_rejected_sum.get(),
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The event counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    /// `events_received`.
    pub received: u64,
    /// `events_delivered`.
    pub delivered: u64,
    /// `events_dead_lettered`.
    pub dead_lettered: u64,
    /// Sum of `events_refused`.
    pub refused: u64,
    /// `events_duplicate`.
    pub duplicate: u64,
    /// Sum of `events_rejected`.
    pub rejected: u64,
}

impl Accounting {
    /// Whether every received event left through one outcome (true whenever no upload is in
    /// progress).
    pub fn balanced(&self) -> bool {
        let outcomes = [
            self.delivered,
            self.dead_lettered,
            self.refused,
            self.duplicate,
            self.rejected,
        ];
        outcomes.iter().try_fold(0u64, |a, b| a.checked_add(*b)) == Some(self.received)
    }
}

/// The events of one upload that were counted as received and have not yet left through an
/// outcome. Each outcome method settles them all; dropping the guard with events unsettled
/// (the handler was cancelled: the client went away, the shutdown deadline passed) counts them
/// as rejected with reason `cancelled`. So the sums balance however a request ends.
pub struct UploadEvents<'a> {
    metrics: &'a Metrics,
    pending: u64,
}

impl<'a> UploadEvents<'a> {
    /// A guard with no events yet (the batch is not decoded).
    pub fn new(metrics: &'a Metrics) -> Self {
        Self {
            metrics,
            pending: 0,
        }
    }

    /// Counts the upload's `events` as received (once its batch is decoded).
    pub fn receive(&mut self, events: u64) {
        self.metrics.events_received.inc_by(events);
        self.pending = self.pending.saturating_add(events);
    }

    /// The upload was acknowledged: `delivered` events are in the stream, `dead_lettered` in
    /// the dead-letter stream, and the events of `refused_reasons` (one reason per event) were
    /// listed as refused without a dead-letter stream (together, all of them).
    pub fn acknowledged<'r>(
        &mut self,
        delivered: u64,
        dead_lettered: u64,
        refused_reasons: impl IntoIterator<Item = &'r str>,
    ) {
        let mut refused = 0u64;
        for reason in refused_reasons {
            self.metrics
                .events_refused
                .get_or_create(&ReasonLabel {
                    reason: refused_event_reason(reason).to_owned(),
                })
                .inc();
            refused += 1;
        }
        self.metrics.events_refused_sum.inc_by(refused);
        debug_assert_eq!(delivered + dead_lettered + refused, self.pending);
        self.metrics.events_delivered.inc_by(delivered);
        self.metrics.events_dead_lettered.inc_by(dead_lettered);
        self.pending = 0;
    }

    /// The upload was a resend of a batch this instance had acknowledged.
    pub fn duplicate(&mut self) {
        self.metrics.events_duplicate.inc_by(self.pending);
        self.pending = 0;
    }

    /// The upload was not acknowledged, for `reason` (the answer's error code).
    pub fn rejected(&mut self, reason: &str) {
        self.metrics.reject(reason, self.pending);
        self.pending = 0;
    }
}

impl Drop for UploadEvents<'_> {
    fn drop(&mut self) {
        self.rejected("cancelled");
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

    #[test]
    fn refused_requests_are_counted_by_known_reason() {
        let m = Metrics::new();
        m.refused("unauthorized");
        m.refused("unauthorized");
        m.refused("json_too_deep");
        m.refused("not-a-code");
        let text = m.encode();
        for line in [
            "tern_collector_requests_refused_total{reason=\"unauthorized\"} 2",
            "tern_collector_requests_refused_total{reason=\"json_too_deep\"} 1",
            "tern_collector_requests_refused_total{reason=\"other\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn every_received_event_leaves_through_one_outcome_even_when_cancelled() {
        let m = Metrics::new();
        m.receive(5).acknowledged(4, 1, []);
        m.receive(3)
            .acknowledged(1, 0, ["invalid_name", "invalid_seq"]);
        m.receive(3).duplicate();
        m.receive(2).rejected("stream_unavailable");
        {
            // A handler dropped mid-way (client gone, shutdown deadline).
            let _pending = m.receive(7);
        }
        let mut not_decoded = UploadEvents::new(&m);
        not_decoded.rejected("malformed_json");
        drop(not_decoded);
        let a = m.accounting();
        assert_eq!(
            a,
            Accounting {
                received: 20,
                delivered: 5,
                dead_lettered: 1,
                refused: 2,
                duplicate: 3,
                rejected: 9
            }
        );
        assert!(a.balanced());
        let text = m.encode();
        assert!(
            text.contains("tern_collector_events_rejected_total{reason=\"cancelled\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("tern_collector_events_refused_total{reason=\"invalid_seq\"} 1"),
            "{text}"
        );
    }
}
