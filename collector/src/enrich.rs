//! Turns a checked batch into stream records: adds the app id, the collector's clock and id,
//! and the event time corrected for the device clock's offset.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tern_protocol::{Batch, DeadLetterRecord, Event, StreamRecord, RECORD_VERSION};

use crate::limits::MAX_EVENT_AGE;

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

/// The event time corrected for the device clock (see `docs/protocol.md`, clocks).
///
/// When the event and the attempt carry the same `clock_id`, the monotonic clock tells how long
/// before sending the event happened, which survives changes of the wall clock in between:
/// `event_time = received_at − (sent_uptime_ms − uptime_ms)`. Otherwise the device's wall-clock
/// offset at sending is applied: `event_time = created_at + (received_at − sent_at)`. Either way
/// the result is never after `received_at`. Upload transit time is not subtracted: it is the
/// error bound of the correction (typically well under a second).
pub fn corrected_event_time<E>(
    batch: &Batch<E>,
    event: &Event,
    received_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let monotonic = match (
        &batch.clock_id,
        batch.sent_uptime_ms,
        &event.clock_id,
        event.uptime_ms,
    ) {
        (Some(b), Some(sent), Some(e), Some(at)) if b == e && sent >= at => {
            i64::try_from(sent - at)
                .ok()
                .map(|age| received_at - ChronoDuration::milliseconds(age))
        }
        _ => None,
    };
    let t = monotonic.unwrap_or_else(|| event.created_at + (received_at - batch.sent_at));
    t.min(received_at)
}

/// Why an event's time is absurd (it goes to the dead-letter stream), or `None`: a corrected
/// event time older than [`MAX_EVENT_AGE`], which no SDK buffer keeps.
pub fn timestamp_problem<E>(
    batch: &Batch<E>,
    event: &Event,
    received_at: DateTime<Utc>,
) -> Option<(&'static str, String)> {
    let event_time = corrected_event_time(batch, event, received_at);
    let oldest =
        received_at - ChronoDuration::from_std(MAX_EVENT_AGE).unwrap_or(ChronoDuration::MAX);
    (event_time < oldest).then(|| {
        (
            "invalid_timestamp",
            format!(
                "event time {} (created_at {} corrected for the device clock) is more than {} days old",
                event_time.to_rfc3339(),
                event.created_at.to_rfc3339(),
                MAX_EVENT_AGE.as_secs() / 86_400
            ),
        )
    })
}

/// The stream record of one valid event.
pub fn stream_record(batch: &Batch, event: &Event, upload: &Upload<'_>) -> StreamRecord {
    StreamRecord {
        v: RECORD_VERSION,
        event_id: event.event_id,
        app_id: upload.app_id.to_owned(),
        install_id: batch.install_id.clone(),
        seq: event.seq,
        name: event.name.clone(),
        created_at: event.created_at,
        event_time: corrected_event_time(batch, event, upload.received_at),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::{Context, SdkInfo};
    use uuid::Uuid;

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
            received - ChronoDuration::seconds(60)
        );
    }

    #[test]
    fn events_older_than_any_sdk_keeps_are_absurd() {
        let received = Utc::now();
        let b = batch(received, None);
        assert!(timestamp_problem(
            &b,
            &event(received - ChronoDuration::days(59), None, "c9"),
            received
        )
        .is_none());
        let (code, _) = timestamp_problem(
            &b,
            &event(received - ChronoDuration::days(61), None, "c9"),
            received,
        )
        .unwrap();
        assert_eq!(code, "invalid_timestamp");
        // A device clock years off but consistent is corrected, not refused.
        let skewed = batch(received - ChronoDuration::days(3000), None);
        let e = event(
            received - ChronoDuration::days(3000) - ChronoDuration::seconds(5),
            None,
            "c9",
        );
        assert!(timestamp_problem(&skewed, &e, received).is_none());
    }

    #[test]
    fn the_monotonic_clock_wins_when_the_clock_ids_match() {
        let received = Utc::now();
        // The wall clock jumped by a day between the event and the send; uptime did not.
        let b = batch(received + ChronoDuration::days(1), Some(100_000));
        let e = event(received - ChronoDuration::days(5), Some(40_000), "c1");
        assert_eq!(
            corrected_event_time(&b, &e, received),
            received - ChronoDuration::seconds(60)
        );
        // Another clock (the app restarted): fall back to the wall offset, clamped to arrival.
        let e = event(received, Some(40_000), "c0");
        assert_eq!(
            corrected_event_time(&b, &e, received),
            received - ChronoDuration::days(1)
        );
    }
}
