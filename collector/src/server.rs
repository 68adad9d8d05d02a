//! HTTP surface: `POST /v1/batch`, `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;
use uuid::Uuid;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tern_protocol::limits::{MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH};
use tern_protocol::{Batch, BatchAck, BATCH_PATH};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::decode::{self, Encoding, EventFields};
use crate::enrich::{self, Prepared, Upload};
use crate::error::RequestError;
use crate::in_flight::{InFlightBudget, Reservation};
use crate::limits::{
    ACKED_BATCHES_REMEMBERED, BODY_READ_TIMEOUT, DECODES_PER_CORE, INLINE_DECODE_MAX_BYTES,
    MAX_DRAINED_BYTES, MAX_UPLOAD_RECORD_BYTES, RECORD_OVERHEAD_ESTIMATE, RETRY_AFTER_OVERLOADED,
    RETRY_AFTER_STREAM_UNAVAILABLE,
};
use crate::metrics::{Metrics, ReasonLabel, StatusLabel, UploadEvents};
use crate::sink::kinesis::aggregate::aggregate;
use crate::sink::kinesis::{Entry, KinesisSink, Linger};

/// What every request handler shares.
pub struct AppState {
    config: Config,
    sink: KinesisSink,
    metrics: Arc<Metrics>,
    collector_id: String,
    /// Bytes of uploads in progress, and their bound.
    in_flight: Arc<InFlightBudget>,
    /// Uploads being decoded and enriched at once (CPU-bound; bounds their memory too).
    decodes: Semaphore,
    /// Batches this instance acknowledged recently, with the digest of their content and their
    /// answer, by app and batch id: batch ids are chosen by clients, so one app's id must never
    /// answer for another's batch, and a reused id with other content must never be answered
    /// without writing.
    acked: Mutex<LruCache<(String, Uuid), (ContentDigest, BatchAck)>>,
    /// Set at SIGTERM: unready from then on.
    pub draining: AtomicBool,
    /// Whether Kinesis answered the last readiness checks (with hysteresis).
    pub kinesis_ok: AtomicBool,
    /// Events per second per write key, if limited.
    rate_limiter: Option<KeyedLimiter>,
}

type KeyedLimiter = governor::DefaultKeyedRateLimiter<String>;

/// MD5 of what a batch is made of: its events' ids and `seq`s and its gaps' ids, in order. A
/// resend carries the same (the SDK never changes a batch's content); a different digest under
/// the same `batch_id` is another batch. Not a security boundary (only the write key's own
/// batches are compared), so MD5's speed is what matters.
type ContentDigest = [u8; 16];

fn content_digest<E: EventFields>(batch: &Batch<E>) -> ContentDigest {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    for event in &batch.events {
        hasher.update(event.event_id().as_bytes());
        hasher.update(event.seq().to_le_bytes());
    }
    // Separates the events from the gaps, so that no list of one can pass for the other.
    hasher.update(b"gaps");
    for gap in &batch.gaps {
        hasher.update(gap.gap_id.as_bytes());
    }
    hasher.finalize().into()
}

impl AppState {
    /// Builds the state.
    pub fn new(
        config: Config,
        sink: KinesisSink,
        metrics: Arc<Metrics>,
        collector_id: String,
    ) -> Self {
        let remembered = NonZeroUsize::new(ACKED_BATCHES_REMEMBERED).unwrap_or(NonZeroUsize::MIN);
        let config_rate = config.limits.rate_limit_events_per_second;
        let in_flight = InFlightBudget::new(
            config.limits.max_in_flight_bytes,
            metrics.in_flight_bytes.clone(),
        );
        Self {
            config,
            sink,
            metrics,
            collector_id,
            in_flight,
            decodes: Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, NonZeroUsize::get)
                    .saturating_mul(DECODES_PER_CORE),
            ),
            acked: Mutex::new(LruCache::new(remembered)),
            draining: AtomicBool::new(false),
            kinesis_ok: AtomicBool::new(false),
            rate_limiter: NonZeroU32::new(config_rate).map(|per_second| {
                // A burst of one second's worth, but at least one full batch.
                let burst = per_second
                    .max(NonZeroU32::new(MAX_EVENTS_PER_BATCH as u32).unwrap_or(NonZeroU32::MIN));
                governor::RateLimiter::keyed(
                    governor::Quota::per_second(per_second).allow_burst(burst),
                )
            }),
        }
    }

    /// Ready to take uploads: Kinesis answers and the process is not draining.
    pub fn ready(&self) -> bool {
        self.kinesis_ok.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// Updates the `ready` gauge.
    pub fn publish_readiness(&self) {
        self.metrics.ready.set(i64::from(self.ready()));
    }

    /// The sink (for readiness checks).
    pub fn sink(&self) -> &KinesisSink {
        &self.sink
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The collector's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(BATCH_PATH, post(batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !state.kinesis_ok.load(Ordering::SeqCst) {
        // The stream, or the dead-letter stream if configured.
        (StatusCode::SERVICE_UNAVAILABLE, "kinesis not answering\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn batch(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    // The deadline runs from arrival and bounds everything: reading the body, waiting for a
    // decode permit and for the dispatcher, every PutRecords attempt. The SDK must hear the
    // answer before its own request timeout (the configuration keeps the deadline below it).
    let ack_deadline = state.config.server.ack_deadline();
    let deadline = tokio::time::Instant::now() + ack_deadline;
    let mut events = UploadEvents::new(&state.metrics);
    let handled = tokio::time::timeout_at(
        deadline,
        handle_batch(&state, &headers, body, deadline, &mut events),
    )
    .await;
    // Records still being written when the deadline strikes may land in the stream: the
    // resend duplicates them (same event_id), which consumers expect.
    let result = handled.unwrap_or_else(|_| {
        Err(RequestError::StreamUnavailable {
            message: format!(
                "the upload was not in the stream within the ack deadline ({ack_deadline:?}); \
                 resend it"
            ),
            retry_after: RETRY_AFTER_STREAM_UNAVAILABLE,
        })
    });
    if let Err(e) = &result {
        events.rejected(e.code());
        state.metrics.refused(e.code());
    }
    let response = match result {
        Ok(ack) => (StatusCode::OK, Json(ack)).into_response(),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(error = %e, "upload not acknowledged");
            } else {
                tracing::debug!(error = %e, "upload refused");
            }
            e.into_response()
        }
    };
    let m = &state.metrics;
    m.requests
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    m.request_latency.observe(started.elapsed().as_secs_f64());
    response
}

/// Handles one upload. `events` counts its events as received once decoded, and settles them
/// on success; the caller settles them on error, and their drop if the request is cancelled.
async fn handle_batch(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    deadline: tokio::time::Instant,
    events: &mut UploadEvents<'_>,
) -> Result<BatchAck, RequestError> {
    let received_at = chrono::Utc::now();
    let (write_key, app_id) = authorize(&state.config, headers)?;
    let (write_key, app_id) = (write_key.to_owned(), app_id.to_owned());
    let encoding = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    // Every byte this upload holds is reserved before or as it is allocated, except the
    // transient memory of decoding, which the decode permits bound.
    let mut reservation = Reservation::new(&state.in_flight);
    let body = read_body(body, &mut reservation, deadline).await?;
    let decoding = state.decodes.acquire().await.map_err(|_| overloaded())?;
    // Decompression, parsing, the checks on the decoded batch and enrichment run in one task
    // on the blocking pool: the parsed batch borrows from the decompressed body (no `String`
    // per field), so both stay on that thread, and one hand-off per upload is cheaper than two.
    // A small batch is decoded where it arrived: its work is bounded (INLINE_DECODE_MAX_BYTES)
    // and costs less than the hand-off to the blocking pool and back.
    let decoded = match decode::decompress_small(encoding, &body, INLINE_DECODE_MAX_BYTES) {
        Some(json) => prepare_decoded(state, &json, &app_id, &write_key, received_at, reservation),
        None => {
            let state = Arc::clone(state);
            blocking(move || {
                let json = decode::decompress(encoding, &body)?;
                prepare_decoded(&state, &json, &app_id, &write_key, received_at, reservation)
            })
            .await
        }
    };
    drop(decoding);
    let Decoded {
        events: n_events,
        outcome,
    } = decoded?;
    events.receive(n_events);
    let (prepared, mut reservation, acked_key, digest) = match outcome {
        Outcome::Prepared {
            prepared,
            reservation,
            acked_key,
            digest,
        } => (*prepared, reservation, acked_key, digest),
        Outcome::Resent(ack) => {
            // A resend of a batch this instance acknowledged: its ack was lost on the way back.
            events.duplicate();
            return Ok(ack);
        }
        Outcome::Refused(e) => return Err(e),
    };
    let bytes = prepared.bytes();
    if bytes > MAX_UPLOAD_RECORD_BYTES {
        return Err(RequestError::PayloadTooLarge(format!(
            "the batch makes {bytes} bytes of records, over the limit of \
             {MAX_UPLOAD_RECORD_BYTES}; split it"
        )));
    }
    // From here the upload holds its records only (the batch and body are gone). The
    // reservation is shared with the PutRecords submissions and calls that carry them, and is
    // released when the last of them is gone, not when this handler ends.
    if !reservation.resize(bytes) {
        return Err(overloaded());
    }
    let reservation = Arc::new(reservation);
    let dead_lettered = prepared.dead_letters.len() as u64;
    let delivered = prepared.records.len() as u64;
    let gaps = prepared.gap_records.len();
    // Gap records go with the events, after them: same stream, same partition key, same
    // PutRecords flow, and the ack waits for them too. A v2 batch record goes before them all.
    let ordered = prepared.batch_record.is_some();
    let mut records: Vec<Entry> = prepared.batch_record.into_iter().collect();
    records.extend(prepared.records);
    records.extend(prepared.gap_records);
    let mut records = if state.config.kinesis.aggregate {
        aggregate(records)
    } else {
        records
    };
    // A v2 upload's records lead: its two rounds do not linger while the collector is idle.
    let linger = if ordered { Linger::Lead } else { Linger::Share };
    let main = async {
        let stream = &state.config.kinesis.stream;
        if ordered && records.len() > 1 {
            // The first Kinesis record holds the v2 batch record (alone, or first in an
            // aggregate): it must be in the stream before any event record that joins on it,
            // so it is written, and acknowledged, first. The same partition key puts them all
            // on one shard, where readers meet it first. Neither call lingers while the
            // collector is idle: the events wait for the batch record, and when its call
            // returns, the events of every upload it carried are ready at once to share the
            // next call, so the upload waits to share a call once, not twice.
            let rest = records.split_off(1);
            state
                .sink
                .put_all(stream, records, linger, deadline, &reservation)
                .await?;
            records = rest;
        }
        state
            .sink
            .put_all(stream, records, linger, deadline, &reservation)
            .await
    };
    let dlq = async {
        match &state.config.kinesis.dead_letter_stream {
            Some(stream) if dead_lettered > 0 => {
                state
                    .sink
                    .put_all(
                        stream,
                        prepared.dead_letters,
                        Linger::Share,
                        deadline,
                        &reservation,
                    )
                    .await
            }
            _ => Ok(()),
        }
    };
    let (main, dlq) = tokio::join!(main, dlq);
    if let Err(e) = main.and(dlq) {
        return Err(RequestError::StreamUnavailable {
            message: format!("the stream did not take the batch: {e}"),
            retry_after: RETRY_AFTER_STREAM_UNAVAILABLE,
        });
    }
    // Refused events went to the dead-letter stream if there is one; else they are counted
    // as refused, each by its reason.
    let refused_only = if state.config.kinesis.dead_letter_stream.is_some() {
        &[][..]
    } else {
        &prepared.refused[..]
    };
    events.acknowledged(
        delivered,
        dead_lettered,
        refused_only.iter().map(|r| r.reason.as_str()),
    );
    let m = &state.metrics;
    for (reason, n) in &prepared.gap_events {
        m.gap_events
            .get_or_create(&ReasonLabel {
                reason: reason.clone(),
            })
            .inc_by(*n);
    }
    for (reason, n) in &prepared.dropped {
        m.sdk_dropped_events
            .get_or_create(&ReasonLabel {
                reason: (*reason).to_owned(),
            })
            .inc_by(*n);
    }
    let ack = BatchAck {
        batch_id: prepared.batch_id,
        accepted: u32::try_from(delivered).unwrap_or(u32::MAX),
        dead_lettered: u32::try_from(dead_lettered).unwrap_or(u32::MAX),
        refused: prepared.refused,
        gaps: u32::try_from(gaps).unwrap_or(u32::MAX),
    };
    state
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .put(acked_key, (digest, ack.clone()));
    Ok(ack)
}

/// What the blocking part of an upload gives back: the number of events of its batch (counted
/// as received by the caller) and what became of it.
struct Decoded {
    events: u64,
    outcome: Outcome,
}

/// What became of a decoded batch.
enum Outcome {
    /// Its records, with the reservation that holds their bytes and what identifies the batch
    /// among the acknowledged ones.
    Prepared {
        prepared: Box<Prepared>,
        reservation: Reservation,
        acked_key: (String, Uuid),
        digest: ContentDigest,
    },
    /// A resend of a batch this instance acknowledged, answered as before.
    Resent(BatchAck),
    /// Refused after decoding (a batch id reused for other content, the rate limit, memory).
    Refused(RequestError),
}

/// The answer when the collector's memory or decode budget is spent: the client retries later.
fn overloaded() -> RequestError {
    RequestError::Overloaded {
        retry_after: RETRY_AFTER_OVERLOADED,
    }
}

/// Parses the decompressed batch `json`, checks it against the acknowledged batches, the rate
/// limit and the memory budget, and enriches it into records: the part of an upload that
/// holds the parsed batch, which borrows from `json`.
fn prepare_decoded(
    state: &AppState,
    json: &[u8],
    app_id: &str,
    write_key: &str,
    received_at: chrono::DateTime<chrono::Utc>,
    mut reservation: Reservation,
) -> Result<Decoded, RequestError> {
    let batch = decode::parse_noting_unknown_fields(json, |location| {
        state.metrics.unknown_field(location);
    })?;
    let n_events = batch.events.len() as u64;
    let decoded = |outcome| {
        Ok(Decoded {
            events: n_events,
            outcome,
        })
    };
    let acked_key = (app_id.to_owned(), batch.batch_id);
    let digest = content_digest(&batch);
    let cached = state
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&acked_key)
        .cloned();
    if let Some((acked_digest, ack)) = cached {
        if acked_digest != digest {
            return decoded(Outcome::Refused(RequestError::BatchIdConflict(format!(
                "batch_id {} was acknowledged with other events or gaps; give this batch a \
                 fresh batch_id and send it again",
                batch.batch_id
            ))));
        }
        return decoded(Outcome::Resent(ack));
    }
    if let Some(limiter) = &state.rate_limiter {
        let n =
            NonZeroU32::new(u32::try_from(n_events).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        if let Ok(Err(not_until)) = limiter.check_key_n(&write_key.to_owned(), n) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return decoded(Outcome::Refused(RequestError::RateLimited {
                retry_after: wait,
            }));
        }
    }
    // The batch stays in memory while its records are built: reserve both before building.
    if !reservation.resize(records_estimate(&batch, json.len())) {
        return decoded(Outcome::Refused(overloaded()));
    }
    let upload = Upload {
        app_id,
        received_at,
        collector_id: &state.collector_id,
        record_version: state.config.kinesis.record_version,
    };
    let has_dead_letter_stream = state.config.kinesis.dead_letter_stream.is_some();
    match enrich::prepare(&batch, &upload, has_dead_letter_stream) {
        Ok(prepared) => decoded(Outcome::Prepared {
            prepared: Box::new(prepared),
            reservation,
            acked_key,
            digest,
        }),
        Err(e) => decoded(Outcome::Refused(e)),
    }
}

/// The app id of the request's write key. Every configured key is compared, each in constant
/// time, so the answer's timing tells nothing about which key is close.
fn authorize<'a>(
    config: &'a Config,
    headers: &HeaderMap,
) -> Result<(&'a str, &'a str), RequestError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(RequestError::Unauthorized(
            "missing Authorization: Bearer <write key> header",
        ))?;
    let mut found = None;
    for (key, app_id) in &config.keys.write_keys {
        if bool::from(key.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some((key.as_str(), app_id.as_str()));
        }
    }
    found.ok_or(RequestError::Unauthorized("unknown write key"))
}

/// Reads the body up to [`MAX_BODY_BYTES`], reserving its bytes as they arrive (503
/// `overloaded` if the in-flight bound is reached). Past the limit it reads on, discarding, up
/// to [`MAX_DRAINED_BYTES`], so that an ordinary client gets its 413 instead of a connection
/// reset while it is still sending; a larger body is cut off. A body that has not arrived after
/// [`BODY_READ_TIMEOUT`] or by the ack `deadline`, whichever is sooner, is answered 408.
async fn read_body(
    mut body: Body,
    reservation: &mut Reservation,
    deadline: tokio::time::Instant,
) -> Result<Bytes, RequestError> {
    use http_body_util::BodyExt;
    let read = async {
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| RequestError::Malformed {
                code: "body_read_failed",
                message: format!("the request body could not be read: {e}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY_BYTES {
                if !reservation.resize(seen) {
                    return Err(overloaded());
                }
                kept.extend_from_slice(&data);
            } else if seen > MAX_DRAINED_BYTES {
                break;
            }
        }
        if seen > MAX_BODY_BYTES {
            return Err(RequestError::PayloadTooLarge(format!(
                "the body is over the limit of {MAX_BODY_BYTES} bytes"
            )));
        }
        Ok(Bytes::from(kept))
    };
    let read_by = deadline.min(tokio::time::Instant::now() + BODY_READ_TIMEOUT);
    tokio::time::timeout_at(read_by, read)
        .await
        .unwrap_or(Err(RequestError::Timeout))
}

/// Runs CPU-bound decoding off the async workers. A panic in it would be a bug, answered 503
/// like any internal failure (never a 4xx: the client did nothing wrong that we know of).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RequestError> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(RequestError::StreamUnavailable {
            message: format!("internal error while decoding: {e}"),
            retry_after: RETRY_AFTER_STREAM_UNAVAILABLE,
        })
    })
}

/// What an upload will hold while its records are built: the decoded batch (about its JSON
/// size) and the records, each a copy of its event plus the context and SDK fields. Corrected
/// to the records' real size once they exist.
fn records_estimate<E>(batch: &Batch<E>, json_bytes: usize) -> usize {
    let copied = serde_json::to_vec(&batch.context).map_or(0, |v| v.len())
        + batch.sdk.name.len()
        + batch.sdk.version.len()
        + batch.install_id.len()
        + RECORD_OVERHEAD_ESTIMATE;
    json_bytes.saturating_mul(2).saturating_add(
        (batch.events.len().saturating_add(batch.gaps.len())).saturating_mul(copied),
    )
}
