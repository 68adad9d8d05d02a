//! Turns a checked batch into stream records: adds the app id, the collector's clock and id,
//! and the event time corrected for the device clock's offset.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tern_protocol::{Batch, DeadLetterRecord, Event, StreamRecord, RECORD_VERSION};
use uuid::Uuid;

use crate::decode;
use crate::error::RequestError;
use crate::limits::{MAX_EVENT_AGE, MAX_RECORD_BYTES};
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

/// The dead-letter record of an event that cannot go to the stream.
pub fn dead_letter(
    batch: &Batch,
    event: serde_json::Value,
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

/// What an upload becomes: records for the stream and for the dead-letter stream.
#[derive(Debug)]
pub struct Prepared {
    /// The upload's batch id.
    pub batch_id: Uuid,
    /// Events in the batch.
    pub events: u64,
    /// Records of the valid events, in order.
    pub records: Vec<Entry>,
    /// Records of the invalid events, with their reasons.
    pub dead_letters: Vec<Entry>,
    /// What the SDK reports it dropped on the device, by known reason (or `other`).
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Prepared {
    /// Memory this upload holds until it is answered.
    pub fn bytes(&self) -> usize {
        self.records
            .iter()
            .chain(&self.dead_letters)
            .map(Entry::size)
            .sum()
    }
}

/// Validates and enriches every event of a decoded batch into records. Without a dead-letter
/// stream an invalid event refuses the whole batch (`invalid_event`), so nothing is dropped.
pub fn prepare(
    batch: &Batch,
    upload: &Upload<'_>,
    has_dead_letter_stream: bool,
) -> Result<Prepared, RequestError> {
    let mut records = Vec::with_capacity(batch.events.len());
    let mut dead_letters = Vec::new();
    for event in &batch.events {
        let checked = match decode::event_problem(event) {
            Some(problem) => Err(problem),
            None => event_time(batch, event, upload.received_at),
        };
        let (code, message) = match checked {
            Err(problem) => problem,
            Ok(event_time) => {
                let data = to_json(&stream_record(batch, event, event_time, upload));
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
        if !has_dead_letter_stream {
            // Without a dead-letter stream the only lossless answer is to refuse the batch.
            return Err(RequestError::Malformed {
                code: "invalid_event",
                message: format!("event seq {}: {message}", event.seq),
            });
        }
        let letter = dead_letter(batch, dead_letter_copy(event), code, message, upload);
        dead_letters.push(Entry {
            data: to_json(&letter).into(),
            partition_key: batch.install_id.clone(),
        });
    }
    Ok(Prepared {
        batch_id: batch.batch_id,
        events: batch.events.len() as u64,
        records,
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

/// The event as it goes into a dead letter: whole, unless that alone would overflow a Kinesis
/// record, in which case its properties are replaced by a note of their size.
fn dead_letter_copy(event: &Event) -> serde_json::Value {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    let properties_len = to_json(&event.properties).len();
    if properties_len > MAX_RECORD_BYTES / 2 {
        value["properties"] = serde_json::json!({
            "_tern_truncated": true,
            "_tern_original_bytes": properties_len,
        });
    }
    value
}

/// Serializes a record. Our record types have string keys only, so this cannot fail; an empty
/// result would be refused by Kinesis rather than lost silently.
fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
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
    fn prepare_dead_letters_absurd_clocks_and_refuses_them_without_a_dead_letter_stream() {
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
        assert_eq!(
            prepare(&b, &upload, false).unwrap_err().code(),
            "invalid_event"
        );
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
