//! Turns a checked batch into stream records: adds the app id, the collector's clock and id,
//! and the event time corrected for the device clock's offset.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Map, Value};
use tern_protocol::{
    Batch, DeadLetterRecord, Event, Gap, GapRecord, RefusedEvent, StreamRecord, GAP_KIND,
    RECORD_VERSION,
};
use uuid::Uuid;

use crate::decode;
use crate::error::RequestError;
use crate::limits::{
    MAX_DEAD_LETTER_FIELD_BYTES, MAX_DEAD_LETTER_MESSAGE_BYTES, MAX_DEAD_LETTER_PROPERTIES_BYTES,
    MAX_EVENT_AGE, MAX_RECORD_BYTES, RETRY_AFTER_STREAM_UNAVAILABLE,
};
use crate::metrics::sdk_drop_reason;
use crate::sink::kinesis::Entry;

/// Facts about the upload that every record of it shares.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// App id of the write key.
    pub app_id: &'a str,
    /// Collector clock at arrival.
    pub received_at: DateTime<Utc>,
    /// This collector instance.
    pub collector_id: &'a str,
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
pub fn corrected_event_time<E>(
    batch: &Batch<E>,
    event: &Event,
    received_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let t = match (
        &batch.clock_id,
        batch.sent_uptime_ms,
        &event.clock_id,
        event.uptime_ms,
    ) {
        (Some(b), Some(sent), Some(e), Some(at)) if b == e && sent >= at => {
            let age = i64::try_from(sent - at).ok()?;
            received_at.checked_sub_signed(ChronoDuration::try_milliseconds(age)?)?
        }
        _ => event
            .created_at
            .checked_add_signed(received_at.signed_duration_since(batch.sent_at))?,
    };
    Some(t.min(received_at))
}

/// The event time of a valid event, or why its time is absurd (it goes to the dead-letter
/// stream): a corrected event time that cannot be represented, or one older than
/// [`MAX_EVENT_AGE`], which no SDK buffer keeps.
pub fn event_time<E>(
    batch: &Batch<E>,
    event: &Event,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, (&'static str, String)> {
    let days = MAX_EVENT_AGE.as_secs() / 86_400;
    let Some(event_time) = corrected_event_time(batch, event, received_at) else {
        return Err((
            "invalid_timestamp",
            format!(
                "the device clock values (created_at {}, uptime_ms {:?}, sent_uptime_ms {:?}) \
                 put the event time out of any representable range",
                event.created_at.to_rfc3339(),
                event.uptime_ms,
                batch.sent_uptime_ms,
            ),
        ));
    };
    let oldest = ChronoDuration::from_std(MAX_EVENT_AGE)
        .ok()
        .and_then(|age| received_at.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if event_time < oldest {
        return Err((
            "invalid_timestamp",
            format!(
                "event time {} (created_at {} corrected for the device clock) is more than {days} days old",
                event_time.to_rfc3339(),
                event.created_at.to_rfc3339(),
            ),
        ));
    }
    Ok(event_time)
}

/// The stream record of one valid event.
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
pub fn gap_record(batch: &Batch, gap: &Gap, upload: &Upload<'_>) -> GapRecord {
    GapRecord {
        v: RECORD_VERSION,
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

/// The dead-letter record of an event that cannot go to the stream.
pub fn dead_letter(
    batch: &Batch,
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
        self.records
            .iter()
            .chain(&self.gap_records)
            .chain(&self.dead_letters)
            .map(Entry::size)
            .sum()
    }
}

/// Validates and enriches every event of a decoded batch into records. An invalid event never
/// refuses the batch: it is listed in [`Prepared::refused`] (the SDK quarantines it) and, with
/// a dead-letter stream, also becomes a dead letter.
pub fn prepare(
    batch: &Batch,
    upload: &Upload<'_>,
    has_dead_letter_stream: bool,
) -> Result<Prepared, RequestError> {
    let mut records = Vec::with_capacity(batch.events.len());
    let mut refused = Vec::new();
    let mut dead_letters = Vec::new();
    for event in &batch.events {
        let checked = match decode::event_problem(event) {
            Some(problem) => Err(problem),
            None => event_time(batch, event, upload.received_at),
        };
        let (code, message) = match checked {
            Err(problem) => problem,
            Ok(event_time) => {
                let data = to_json(&stream_record(batch, event, event_time, upload))?;
                if data.len() + batch.install_id.len() <= MAX_RECORD_BYTES {
                    records.push(Entry {
                        data: data.into(),
                        partition_key: batch.install_id.clone(),
                    });
                    continue;
                }
                let message = format!(
                    "the record is {} bytes, over the Kinesis limit of {MAX_RECORD_BYTES}",
                    data.len()
                );
                ("record_too_large", message)
            }
        };
        refused.push(RefusedEvent {
            event_id: event.event_id,
            seq: event.seq,
            reason: code.to_owned(),
            // Bounded: the answer lists up to a batch's worth of these.
            message: prefix(&message, MAX_DEAD_LETTER_MESSAGE_BYTES).to_owned(),
        });
        if has_dead_letter_stream {
            dead_letters.push(dead_letter_entry(
                batch,
                event,
                code,
                message,
                upload,
                MAX_RECORD_BYTES,
            )?);
        }
    }
    let mut gap_records = Vec::with_capacity(batch.gaps.len());
    let mut gap_events = BTreeMap::new();
    for gap in &batch.gaps {
        // At most 256 ranges and a few ids: far below a Kinesis record (checked at parse time).
        gap_records.push(Entry {
            data: to_json(&gap_record(batch, gap, upload))?.into(),
            partition_key: batch.install_id.clone(),
        });
        let total: &mut u64 = gap_events.entry(gap.reason.clone()).or_default();
        *total = total.saturating_add(gap.count);
    }
    Ok(Prepared {
        batch_id: batch.batch_id,
        events: batch.events.len() as u64,
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

/// Key of the note, in an event copied into a dead letter, of what was cut: each cut field and
/// its original size in bytes (UTF-8 for strings, serialized JSON for `properties`; `event` for
/// the whole event, when only its ids were kept). No event has this key: unknown keys are not kept.
pub const TRUNCATED_NOTE: &str = "_tern_truncated";

/// The dead-letter entry of an invalid event, no larger than `max_bytes` (data and partition key)
/// whatever the event holds, so that Kinesis never refuses it (a refused dead letter used to fail
/// its whole upload with 503, resent forever). In order, the first that fits:
///
/// 1. the event whole;
/// 2. its string fields cut to [`MAX_DEAD_LETTER_FIELD_BYTES`] and its properties, if over
///    [`MAX_DEAD_LETTER_PROPERTIES_BYTES`], replaced by a size note (this always fits a Kinesis
///    record: see those limits);
/// 3. only `event_id`, `seq` and the original sizes, with the message cut to
///    [`MAX_DEAD_LETTER_MESSAGE_BYTES`]: the rest of the letter is bounded by the batch checks
///    (`install_id`) and the configuration (app id, instance id).
fn dead_letter_entry(
    batch: &Batch,
    event: &Event,
    reason: &str,
    message: String,
    upload: &Upload<'_>,
    max_bytes: usize,
) -> Result<Entry, RequestError> {
    let partition_key = &batch.install_id;
    let fits = |data: &[u8]| data.len() + partition_key.len() <= max_bytes;
    let entry = |data: Vec<u8>| Entry {
        data: data.into(),
        partition_key: partition_key.clone(),
    };
    let whole = serde_json::to_value(event).map_err(not_serializable)?;
    let data = to_json(&dead_letter(
        batch,
        whole.clone(),
        reason,
        message.clone(),
        upload,
    ))?;
    if fits(&data) {
        return Ok(entry(data));
    }
    let (cut, mut sizes) = truncated_copy(whole.clone())?;
    let data = to_json(&dead_letter(batch, cut, reason, message.clone(), upload))?;
    if fits(&data) {
        return Ok(entry(data));
    }
    sizes.insert("event".to_owned(), to_json(&whole)?.len().into());
    let minimal = serde_json::json!({
        "event_id": event.event_id,
        "seq": event.seq,
        TRUNCATED_NOTE: sizes,
    });
    let message = prefix(&message, MAX_DEAD_LETTER_MESSAGE_BYTES).to_owned();
    Ok(entry(to_json(&dead_letter(
        batch, minimal, reason, message, upload,
    ))?))
}

/// The event (serialized to a JSON object) with every string field over
/// [`MAX_DEAD_LETTER_FIELD_BYTES`] cut to a prefix of that length, and its properties, if their
/// serialized size is over [`MAX_DEAD_LETTER_PROPERTIES_BYTES`], replaced by a note of that size;
/// also the original size of every field it cut, which it notes under [`TRUNCATED_NOTE`].
fn truncated_copy(mut event: Value) -> Result<(Value, Map<String, Value>), RequestError> {
    let mut sizes = Map::new();
    if let Value::Object(fields) = &mut event {
        for (field, value) in fields.iter_mut() {
            match value {
                Value::String(s) if s.len() > MAX_DEAD_LETTER_FIELD_BYTES => {
                    sizes.insert(field.clone(), s.len().into());
                    let end = prefix(s, MAX_DEAD_LETTER_FIELD_BYTES).len();
                    s.truncate(end);
                }
                Value::Object(_) if field == "properties" => {
                    let size = to_json(value)?.len();
                    if size > MAX_DEAD_LETTER_PROPERTIES_BYTES {
                        sizes.insert(field.clone(), size.into());
                        // In the shape dead letters have always used for cut properties.
                        *value = serde_json::json!({
                            "_tern_truncated": true,
                            "_tern_original_bytes": size,
                        });
                    }
                }
                _ => {}
            }
        }
        fields.insert(TRUNCATED_NOTE.to_owned(), Value::Object(sizes.clone()));
    }
    Ok((event, sizes))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Serializes a record. For our record types this cannot fail (every map has string keys, every
/// value is plain data). Were it to fail, the upload is answered 503 rather than writing an empty
/// record: Kinesis accepts zero-length data, so the event would be lost without a trace.
fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RequestError> {
    serde_json::to_vec(value).map_err(not_serializable)
}

fn not_serializable(e: serde_json::Error) -> RequestError {
    RequestError::StreamUnavailable {
        message: format!("internal error: a record could not be serialized: {e}"),
        retry_after: RETRY_AFTER_STREAM_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::{Context, SdkInfo};

    fn batch(sent_at: DateTime<Utc>, sent_uptime: Option<u64>) -> Batch {
        Batch {
            batch_id: Uuid::now_v7(),
            install_id: "i".into(),
            sent_at,
            sent_uptime_ms: sent_uptime,
            clock_id: Some("c1".into()),
            sdk: SdkInfo {
                name: "t".into(),
                version: "0".into(),
            },
            context: Context::default(),
            events: vec![],
            dropped: Default::default(),
            gaps: Vec::new(),
        }
    }

    fn event(created_at: DateTime<Utc>, uptime: Option<u64>, clock: &str) -> Event {
        Event {
            event_id: Uuid::now_v7(),
            seq: 1,
            name: "e".into(),
            created_at,
            uptime_ms: uptime,
            clock_id: Some(clock.into()),
            properties: Default::default(),
            user_id: None,
            session_id: None,
        }
    }

    #[test]
    fn a_device_three_hours_behind_is_corrected_by_wall_offset() {
        let received = Utc::now();
        let skew = ChronoDuration::hours(3);
        let b = batch(received - skew, None);
        let e = event(received - skew - ChronoDuration::seconds(60), None, "c1");
        assert_eq!(
            corrected_event_time(&b, &e, received),
            Some(received - ChronoDuration::seconds(60))
        );
    }

    #[test]
    fn events_older_than_any_sdk_keeps_are_absurd() {
        let received = Utc::now();
        let b = batch(received, None);
        assert!(event_time(
            &b,
            &event(received - ChronoDuration::days(59), None, "c9"),
            received
        )
        .is_ok());
        let (code, _) = event_time(
            &b,
            &event(received - ChronoDuration::days(61), None, "c9"),
            received,
        )
        .unwrap_err();
        assert_eq!(code, "invalid_timestamp");
        // A device clock years off but consistent is corrected, not refused.
        let skewed = batch(received - ChronoDuration::days(3000), None);
        let e = event(
            received - ChronoDuration::days(3000) - ChronoDuration::seconds(5),
            None,
            "c9",
        );
        assert!(event_time(&skewed, &e, received).is_ok());
    }

    #[test]
    fn the_monotonic_clock_wins_when_the_clock_ids_match() {
        let received = Utc::now();
        // The wall clock jumped by a day between the event and the send; uptime did not.
        let b = batch(received + ChronoDuration::days(1), Some(100_000));
        let e = event(received - ChronoDuration::days(5), Some(40_000), "c1");
        assert_eq!(
            corrected_event_time(&b, &e, received),
            Some(received - ChronoDuration::seconds(60))
        );
        // Another clock (the app restarted): fall back to the wall offset, clamped to arrival.
        let e = event(received, Some(40_000), "c0");
        assert_eq!(
            corrected_event_time(&b, &e, received),
            Some(received - ChronoDuration::days(1))
        );
    }

    /// Client-controlled clock values far out of range (1e17 ms is ~3 million years) make the
    /// event invalid; they must never panic (a panic was a 503 the SDK retried forever).
    #[test]
    fn absurd_clock_values_are_invalid_events_not_panics() {
        let received = Utc::now();
        let huge = 100_000_000_000_000_000u64;
        for (sent, at) in [
            (huge, 0),
            (u64::MAX, 0),
            (u64::MAX, 1),
            (i64::MAX as u64, 0),
        ] {
            let b = batch(received, Some(sent));
            let e = event(received, Some(at), "c1");
            assert_eq!(corrected_event_time(&b, &e, received), None, "{sent} {at}");
            let (code, message) = event_time(&b, &e, received).unwrap_err();
            assert_eq!(code, "invalid_timestamp", "{message}");
        }
        // A large but representable age is simply too old.
        let b = batch(received, Some(40 * 365 * 86_400_000));
        let (code, _) = event_time(&b, &event(received, Some(0), "c1"), received).unwrap_err();
        assert_eq!(code, "invalid_timestamp");
        // Wall clocks at the ends of the parseable range.
        let far_future = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .unwrap()
            .to_utc();
        let far_past = DateTime::parse_from_rfc3339("0000-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        for (sent_at, created_at) in [(far_past, far_future), (far_future, far_past)] {
            let b = batch(sent_at, None);
            let _ = event_time(&b, &event(created_at, None, "c9"), received);
        }
    }

    #[test]
    fn prepare_lists_absurd_clocks_as_refused_and_dead_letters_them_with_a_dead_letter_stream() {
        let received = Utc::now();
        let mut b = batch(received, Some(100_000_000_000_000_000));
        b.events = vec![
            event(received, Some(1_000), "c1"),
            event(received, Some(1_000), "c9"),
        ];
        b.events[1].seq = 2;
        let upload = Upload {
            app_id: "app",
            received_at: received,
            collector_id: "c",
        };
        let prepared = prepare(&b, &upload, true).unwrap();
        assert_eq!(
            (prepared.records.len(), prepared.dead_letters.len()),
            (1, 1)
        );
        let letter: serde_json::Value =
            serde_json::from_slice(&prepared.dead_letters[0].data).unwrap();
        assert_eq!(letter["reason"], "invalid_timestamp");
        assert_eq!(letter["event"]["seq"], 1);
        assert!(letter["event"].get(TRUNCATED_NOTE).is_none(), "kept whole");
        assert_eq!(prepared.refused.len(), 1);
        assert_eq!(prepared.refused[0].event_id, b.events[0].event_id);
        assert_eq!(prepared.refused[0].reason, "invalid_timestamp");
        // Without a dead-letter stream: the same partial accept, no dead letters.
        let prepared = prepare(&b, &upload, false).unwrap();
        assert_eq!(
            (prepared.records.len(), prepared.dead_letters.len()),
            (1, 0)
        );
        assert_eq!(prepared.refused.len(), 1);
        assert_eq!(prepared.refused[0].seq, 1);
    }

    #[test]
    fn each_gap_becomes_one_gap_record_keyed_by_install() {
        let received = Utc::now();
        let mut b = batch(received, None);
        b.gaps = vec![Gap {
            gap_id: Uuid::now_v7(),
            reason: "cap_bytes".into(),
            ranges: vec![tern_protocol::SeqRange { first: 2, last: 4 }],
            count: 3,
            at: received,
        }];
        let upload = Upload {
            app_id: "app",
            received_at: received,
            collector_id: "c",
        };
        let prepared = prepare(&b, &upload, false).unwrap();
        assert_eq!(prepared.gap_records.len(), 1);
        assert_eq!(prepared.gap_records[0].partition_key, "i");
        let record: serde_json::Value =
            serde_json::from_slice(&prepared.gap_records[0].data).unwrap();
        assert_eq!(record["kind"], "gap");
        assert_eq!(record["gap_id"], b.gaps[0].gap_id.to_string());
        assert_eq!(record["count"], 3);
        assert_eq!(prepared.gap_events.get("cap_bytes"), Some(&3));
    }

    /// Characters that JSON escapes to six bytes each (`\u0001`): the worst case per byte.
    fn escaped(n: usize) -> String {
        "\u{1}".repeat(n)
    }

    fn parse_letter(entry: &Entry) -> DeadLetterRecord {
        serde_json::from_slice(&entry.data).unwrap()
    }

    /// Invalid events with megabytes in any string field, properties of up to 1 MiB, characters
    /// that escape to six bytes, and the longest install id, app id and instance id the batch
    /// checks and the configuration allow: every dead letter fits a Kinesis record, keeps the
    /// event's id, seq and reason, and notes the original size of what was cut. (A 2 MiB name
    /// used to make a 2 MiB dead letter that Kinesis refused, failing the upload forever.)
    #[test]
    fn every_dead_letter_fits_a_kinesis_record_whatever_the_event_holds() {
        use crate::limits::{MAX_APP_ID_BYTES, MAX_ID_BYTES, MAX_INSTANCE_ID_BYTES};
        let received = Utc::now();
        let mut b = batch(received, None);
        b.install_id = escaped(MAX_ID_BYTES);
        let (app_id, collector_id) = (escaped(MAX_APP_ID_BYTES), escaped(MAX_INSTANCE_ID_BYTES));
        let upload = Upload {
            app_id: &app_id,
            received_at: received,
            collector_id: &collector_id,
        };
        let big = 2 * 1024 * 1024;
        let properties = |bytes: usize| {
            let mut p = serde_json::Map::new();
            p.insert("p".into(), escaped(bytes / 6).into());
            p
        };
        let base = event(received, None, "c1");
        let cases: Vec<(&str, Event)> = vec![
            (
                "invalid_name",
                Event {
                    name: escaped(big),
                    ..base.clone()
                },
            ),
            (
                "invalid_name",
                // Two-byte characters across the cut.
                Event {
                    name: format!("a{}", "é".repeat(big / 2)),
                    ..base.clone()
                },
            ),
            (
                "invalid_id",
                Event {
                    user_id: Some(escaped(big)),
                    ..base.clone()
                },
            ),
            (
                "invalid_id",
                Event {
                    session_id: Some(escaped(big)),
                    ..base.clone()
                },
            ),
            (
                "invalid_properties",
                Event {
                    properties: properties(MAX_RECORD_BYTES),
                    ..base.clone()
                },
            ),
            (
                // Both ids at once, properties just under the size kept.
                "invalid_seq",
                Event {
                    seq: 0,
                    user_id: Some(escaped(big)),
                    session_id: Some(escaped(big)),
                    properties: properties(MAX_DEAD_LETTER_PROPERTIES_BYTES - 16),
                    ..base.clone()
                },
            ),
            (
                // Every field at once.
                "invalid_name",
                Event {
                    seq: 0,
                    name: escaped(MAX_DEAD_LETTER_FIELD_BYTES + 1),
                    user_id: Some(escaped(big)),
                    session_id: Some(escaped(big)),
                    properties: properties(MAX_RECORD_BYTES),
                    ..base.clone()
                },
            ),
        ];
        let expected: Vec<&str> = cases.iter().map(|(reason, _)| *reason).collect();
        b.events = cases.into_iter().map(|(_, e)| e).collect();
        let prepared = prepare(&b, &upload, true).unwrap();
        assert!(prepared.records.is_empty());
        assert_eq!(prepared.dead_letters.len(), b.events.len());
        for ((entry, event), reason) in prepared.dead_letters.iter().zip(&b.events).zip(expected) {
            assert!(
                entry.size() <= MAX_RECORD_BYTES,
                "{reason}: {} bytes",
                entry.size()
            );
            let letter = parse_letter(entry);
            assert_eq!(letter.reason, reason);
            assert_eq!(letter.event["event_id"], event.event_id.to_string());
            assert_eq!(letter.event["seq"], event.seq);
            let cut = &letter.event[TRUNCATED_NOTE];
            for (field, value) in [
                ("name", Some(&event.name)),
                ("user_id", event.user_id.as_ref()),
                ("session_id", event.session_id.as_ref()),
            ] {
                let Some(value) = value.filter(|v| v.len() > MAX_DEAD_LETTER_FIELD_BYTES) else {
                    continue;
                };
                assert_eq!(cut[field], value.len(), "{reason}: {field}");
                let kept = letter.event[field].as_str().unwrap();
                assert!(value.starts_with(kept), "{reason}: {field} is a prefix");
                assert!(kept.len() <= MAX_DEAD_LETTER_FIELD_BYTES);
            }
            let properties_len = to_json(&event.properties).unwrap().len();
            if properties_len > MAX_DEAD_LETTER_PROPERTIES_BYTES {
                assert_eq!(cut["properties"], properties_len, "{reason}");
                assert_eq!(
                    letter.event["properties"]["_tern_original_bytes"],
                    properties_len
                );
            } else {
                assert_eq!(
                    letter.event["properties"],
                    serde_json::json!(event.properties)
                );
            }
        }
    }

    /// When even the cut event does not fit, the letter keeps only the event's id, seq and
    /// original sizes, and a message of bounded length.
    #[test]
    fn the_last_resort_dead_letter_keeps_the_ids_and_the_sizes() {
        let received = Utc::now();
        let b = batch(received, None);
        let upload = Upload {
            app_id: "app",
            received_at: received,
            collector_id: "c",
        };
        let e = Event {
            name: escaped(MAX_RECORD_BYTES),
            ..event(received, None, "c1")
        };
        let limit = 8 * 1024;
        let message = "m".repeat(10 * MAX_DEAD_LETTER_MESSAGE_BYTES);
        let entry = dead_letter_entry(&b, &e, "invalid_name", message, &upload, limit).unwrap();
        assert!(entry.size() <= limit, "{} bytes", entry.size());
        let letter = parse_letter(&entry);
        assert_eq!(letter.reason, "invalid_name");
        assert_eq!(letter.message.len(), MAX_DEAD_LETTER_MESSAGE_BYTES);
        let mut fields: Vec<&str> = letter
            .event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["_tern_truncated", "event_id", "seq"]);
        assert_eq!(letter.event["event_id"], e.event_id.to_string());
        assert_eq!(letter.event[TRUNCATED_NOTE]["name"], MAX_RECORD_BYTES);
        let whole = to_json(&e).unwrap().len();
        assert_eq!(letter.event[TRUNCATED_NOTE]["event"], whole);
    }

    #[test]
    fn prefixes_end_on_character_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(prefix("", 0), "");
    }

    #[test]
    fn unknown_drop_reasons_are_summed_under_other() {
        let reported: BTreeMap<String, u64> = [
            ("queue_full".to_owned(), 2),
            ("made-up-1".to_owned(), u64::MAX),
            ("made-up-2".to_owned(), 5),
        ]
        .into_iter()
        .collect();
        let dropped = dropped_by_known_reason(&reported);
        assert_eq!(
            dropped.into_iter().collect::<Vec<_>>(),
            [("other", u64::MAX), ("queue_full", 2)]
        );
    }
}
