//! Turns a checked batch into stream records: adds the app id, the collector's clock and id,
//! and the event time corrected for the device clock's offset.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;
use tern_protocol::limits;
use tern_protocol::{
    Batch, BatchRecord, DeadLetterRecord, Event, Gap, GapRecord, RefusedEvent, StreamRecord,
    BATCH_KIND, GAP_KIND, RECORD_VERSION, RECORD_VERSION_2,
};
use uuid::Uuid;

use crate::dead_letter::{dead_letter_entry, prefix};
use crate::decode::{event_problem_but_properties_size, EventFields};
use crate::error::RequestError;
use crate::limits::{
    MAX_ACCEPTED_EVENT_AGE, MAX_DEAD_LETTER_MESSAGE_BYTES, MAX_FIRST_RECORDS_BUFFER_BYTES,
};
use crate::metrics::sdk_drop_reason;
use crate::sink::kinesis::limits::MAX_RECORD_BYTES;
use crate::sink::kinesis::Entry;

mod record_json;

use record_json::RecordJson;

/// Facts about the upload that every record of it shares.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// App id of the write key.
    pub app_id: &'a str,
    /// Collector clock at arrival.
    pub received_at: DateTime<Utc>,
    /// This collector instance.
    pub collector_id: &'a str,
    /// Stream record version to write ([`RECORD_VERSION`] or [`RECORD_VERSION_2`]).
    pub record_version: u32,
}

/// The event time corrected for the device clock (see `docs/protocol.md`, clocks), or `None`
/// when the device's clock values put it outside the representable range (an absurd clock: the
/// event is dead-lettered, never a panic).
///
/// When the event and the attempt carry the same `clock_id`, the monotonic clock tells how long
/// before sending the event happened, which survives changes of the wall clock in between:
/// `event_time = received_at − (sent_uptime_ms − uptime_ms)`. Otherwise the device's wall-clock
/// offset at sending is applied: `event_time = created_at + (received_at − sent_at)`. Either way
/// the result is never after `received_at`. Upload transit time is not subtracted: it is the
/// error bound of the correction (typically well under a second).
///
/// All arithmetic is checked: every input is client-controlled.
pub fn corrected_event_time<E, V: EventFields>(
    batch: &Batch<E>,
    event: &V,
    received_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let t = match (
        batch.clock_id.as_deref(),
        batch.sent_uptime_ms,
        event.clock_id(),
        event.uptime_ms(),
    ) {
        (Some(b), Some(sent), Some(e), Some(at)) if b == e && sent >= at => {
            let age = i64::try_from(sent - at).ok()?;
            received_at.checked_sub_signed(ChronoDuration::try_milliseconds(age)?)?
        }
        _ => event
            .created_at()
            .checked_add_signed(received_at.signed_duration_since(batch.sent_at))?,
    };
    Some(t.min(received_at))
}

/// The event time of a valid event, or why its time is absurd (it goes to the dead-letter
/// stream): a corrected event time that cannot be represented, or one older than
/// [`MAX_ACCEPTED_EVENT_AGE`], which no SDK buffer keeps.
pub fn event_time<E, V: EventFields>(
    batch: &Batch<E>,
    event: &V,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, (&'static str, String)> {
    let days = MAX_ACCEPTED_EVENT_AGE.as_secs() / 86_400;
    let Some(event_time) = corrected_event_time(batch, event, received_at) else {
        return Err((
            "invalid_timestamp",
            format!(
                "the device clock values (created_at {}, uptime_ms {:?}, sent_uptime_ms {:?}) \
                 put the event time out of any representable range",
                event.created_at().to_rfc3339(),
                event.uptime_ms(),
                batch.sent_uptime_ms,
            ),
        ));
    };
    let oldest = ChronoDuration::from_std(MAX_ACCEPTED_EVENT_AGE)
        .ok()
        .and_then(|age| received_at.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if event_time < oldest {
        return Err((
            "invalid_timestamp",
            format!(
                "event time {} (created_at {} corrected for the device clock) is more than {days} days old",
                event_time.to_rfc3339(),
                event.created_at().to_rfc3339(),
            ),
        ));
    }
    Ok(event_time)
}

/// The stream record of one valid event. [`prepare`] writes the same JSON without building it
/// (`record_json`); this is the reference it is tested against.
pub fn stream_record(
    batch: &Batch,
    event: &Event,
    event_time: DateTime<Utc>,
    upload: &Upload<'_>,
) -> StreamRecord {
    StreamRecord {
        v: RECORD_VERSION,
        event_id: event.event_id,
        app_id: upload.app_id.to_owned(),
        install_id: batch.install_id.clone(),
        seq: event.seq,
        name: event.name.clone(),
        created_at: event.created_at,
        event_time,
        sent_at: batch.sent_at,
        received_at: upload.received_at,
        properties: event.properties.clone(),
        context: batch.context.clone(),
        user_id: event.user_id.clone(),
        session_id: event.session_id.clone(),
        batch_id: batch.batch_id,
        sdk: batch.sdk.clone(),
        collector_id: upload.collector_id.to_owned(),
    }
}

/// The gap record of one gap report of the batch.
pub fn gap_record<E>(batch: &Batch<E>, gap: &Gap, upload: &Upload<'_>) -> GapRecord {
    GapRecord {
        v: upload.record_version,
        kind: GAP_KIND.to_owned(),
        gap_id: gap.gap_id,
        app_id: upload.app_id.to_owned(),
        install_id: batch.install_id.clone(),
        reason: gap.reason.clone(),
        ranges: gap.ranges.clone(),
        count: gap.count,
        at: gap.at,
        received_at: upload.received_at,
        batch_id: batch.batch_id,
        sdk: batch.sdk.clone(),
        collector_id: upload.collector_id.to_owned(),
    }
}

/// The v2 batch record of an upload whose `events` valid events follow it.
pub fn batch_record<E>(batch: &Batch<E>, events: u64, upload: &Upload<'_>) -> BatchRecord {
    BatchRecord {
        v: RECORD_VERSION_2,
        kind: BATCH_KIND.to_owned(),
        batch_id: batch.batch_id,
        app_id: upload.app_id.to_owned(),
        install_id: batch.install_id.clone(),
        sent_at: batch.sent_at,
        received_at: upload.received_at,
        context: batch.context.clone(),
        sdk: batch.sdk.clone(),
        collector_id: upload.collector_id.to_owned(),
        events,
    }
}

/// The dead-letter record of an event that cannot go to the stream.
pub fn dead_letter<E>(
    batch: &Batch<E>,
    event: Value,
    reason: &str,
    message: String,
    upload: &Upload<'_>,
) -> DeadLetterRecord {
    DeadLetterRecord {
        v: RECORD_VERSION,
        reason: reason.to_owned(),
        message,
        app_id: upload.app_id.to_owned(),
        install_id: batch.install_id.clone(),
        batch_id: batch.batch_id,
        received_at: upload.received_at,
        collector_id: upload.collector_id.to_owned(),
        event,
    }
}

/// What an upload becomes: records for the stream and for the dead-letter stream, and the
/// list of refused events for the answer.
#[derive(Debug)]
pub struct Prepared {
    /// The upload's batch id.
    pub batch_id: Uuid,
    /// Events in the batch.
    pub events: u64,
    /// With stream record v2 and valid events, the upload's batch record: it must be in the
    /// stream before any of [`Self::records`] (the server writes it first and waits for it).
    pub batch_record: Option<Entry>,
    /// Records of the valid events, in order.
    pub records: Vec<Entry>,
    /// Gap records of the batch's gap reports (checked at parse time), for the same stream.
    pub gap_records: Vec<Entry>,
    /// `seq`s the gap reports give up on, by reason (one of `gap_reason::ALL`).
    pub gap_events: BTreeMap<String, u64>,
    /// Every invalid event, with its reason: listed in the answer (partial accept).
    pub refused: Vec<RefusedEvent>,
    /// Dead-letter records of the invalid events (empty without a dead-letter stream).
    pub dead_letters: Vec<Entry>,
    /// What the SDK reports it dropped on the device, by known reason (or `other`).
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Prepared {
    /// Memory this upload holds until it is answered.
    pub fn bytes(&self) -> usize {
        self.batch_record
            .iter()
            .chain(&self.records)
            .chain(&self.gap_records)
            .chain(&self.dead_letters)
            .map(Entry::size)
            .sum()
    }
}

/// Validates and enriches every event of a decoded batch into records. An invalid event never
/// refuses the batch: it is listed in [`Prepared::refused`] (the SDK quarantines it) and, with
/// a dead-letter stream, also becomes a dead letter.
pub fn prepare<E: EventFields>(
    batch: &Batch<E>,
    upload: &Upload<'_>,
    has_dead_letter_stream: bool,
) -> Result<Prepared, RequestError> {
    let mut records = Vec::with_capacity(batch.events.len());
    let mut refused = Vec::new();
    let mut dead_letters = Vec::new();
    let shared = RecordJson::new(batch, upload)?;
    // One buffer for every event's serialized properties: measured for the size limit, then
    // copied into the record, so they are serialized once.
    let mut properties = Vec::new();
    // Every record of the upload in one buffer, each entry a slice of it: one allocation per
    // upload instead of one per record (and one more per record when its `Bytes` is first
    // shared). The records are sent and released together, as one upload.
    let mut buffer: Vec<u8> = Vec::new();
    let mut spans = Vec::with_capacity(batch.events.len());
    for event in &batch.events {
        properties.clear();
        let checked = match event_problem_but_properties_size(event) {
            Some(problem) => Err(problem),
            None => {
                event.write_properties(&mut properties)?;
                match limits::properties_size_problem(properties.len()) {
                    Some(problem) => Err(("invalid_properties", problem)),
                    None => event_time(batch, event, upload.received_at),
                }
            }
        };
        let (code, message) = match checked {
            Err(problem) => problem,
            Ok(event_time) => {
                if buffer.capacity() == 0 {
                    // Sized from the first record, within a bound: a hostile first event must
                    // not reserve its size 500 times over.
                    buffer.reserve(
                        shared
                            .record_len_estimate(event, &properties)
                            .saturating_mul(batch.events.len())
                            .min(MAX_FIRST_RECORDS_BUFFER_BYTES),
                    );
                }
                let start = buffer.len();
                shared.write_record(&mut buffer, event, &event_time, &properties)?;
                let len = buffer.len() - start;
                if len + batch.install_id.len() <= MAX_RECORD_BYTES {
                    spans.push(start..buffer.len());
                    continue;
                }
                buffer.truncate(start);
                let message = format!(
                    "the record is {len} bytes, over the Kinesis limit of {MAX_RECORD_BYTES}"
                );
                ("record_too_large", message)
            }
        };
        refused.push(RefusedEvent {
            event_id: event.event_id(),
            seq: event.seq(),
            reason: code.to_owned(),
            // Bounded: the answer lists up to a batch's worth of these.
            message: prefix(&message, MAX_DEAD_LETTER_MESSAGE_BYTES).to_owned(),
        });
        if has_dead_letter_stream {
            let event = event.to_event();
            let whole = serde_json::to_value(&event).map_err(RequestError::unserializable)?;
            let letter = dead_letter(batch, whole, code, message, upload);
            dead_letters.push(dead_letter_entry(
                letter,
                &event,
                &batch.install_id,
                MAX_RECORD_BYTES,
            )?);
        }
    }
    // The entries hold the whole allocation until the last is sent: give back what doubling
    // left unused (its bytes are not in the upload's reservation).
    if buffer.capacity() - buffer.len() > buffer.len() / 4 {
        buffer.shrink_to_fit();
    }
    let buffer = Bytes::from(buffer);
    let partition_key: Arc<str> = batch.install_id.as_str().into();
    records.extend(spans.into_iter().map(|span| Entry {
        data: buffer.slice(span),
        partition_key: Arc::clone(&partition_key),
    }));
    // The batch record only when events join on it (a batch of refused events or of gap
    // reports only has none: gap records carry their own provenance).
    let batch_record = if upload.record_version == RECORD_VERSION_2 && !records.is_empty() {
        Some(Entry {
            data: to_json(&batch_record(batch, records.len() as u64, upload))?.into(),
            partition_key: Arc::clone(&partition_key),
        })
    } else {
        None
    };
    let mut gap_records = Vec::with_capacity(batch.gaps.len());
    let mut gap_events = BTreeMap::new();
    for gap in &batch.gaps {
        // At most 256 ranges and a few ids: far below a Kinesis record (checked at parse time).
        gap_records.push(Entry {
            data: to_json(&gap_record(batch, gap, upload))?.into(),
            partition_key: Arc::clone(&partition_key),
        });
        let total: &mut u64 = gap_events.entry(gap.reason.clone()).or_default();
        *total = total.saturating_add(gap.count);
    }
    Ok(Prepared {
        batch_id: batch.batch_id,
        events: batch.events.len() as u64,
        batch_record,
        records,
        gap_records,
        gap_events,
        refused,
        dead_letters,
        dropped: dropped_by_known_reason(&batch.dropped),
    })
}

/// The SDK's drop report with reasons mapped to the few the metric knows: the reasons are
/// client-controlled, so unknown ones are summed under `other`.
fn dropped_by_known_reason(reported: &BTreeMap<String, u64>) -> BTreeMap<&'static str, u64> {
    let mut dropped = BTreeMap::new();
    for (reason, n) in reported {
        let total: &mut u64 = dropped.entry(sdk_drop_reason(reason)).or_default();
        *total = total.saturating_add(*n);
    }
    dropped
}

/// Serializes a record. For our record types this cannot fail (every map has string keys, every
/// value is plain data); were it to, see [`RequestError::unserializable`].
fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RequestError> {
    serde_json::to_vec(value).map_err(RequestError::unserializable)
}

#[cfg(test)]
mod tests;
