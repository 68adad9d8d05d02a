//! Writes stream records straight from a batch, without building a [`StreamRecord`] first.
//!
//! Half of every record is the same for the whole upload (app and install ids, the batch's
//! clocks, context, SDK, batch and collector ids). [`RecordJson`] serializes those parts once
//! per upload and splices them into each event's record; per event only the event's own fields
//! are written, straight from the parsed batch (no clone of its properties, context or SDK).
//! The bytes are the same as `serde_json::to_vec(&StreamRecord)`, field for field and in the
//! same order (a test below holds it to that), so readers see no difference.
//!
//! With stream record v2 ([`EventRecordV2`]) the upload's shared parts are left out but for the
//! ids and `batch_id` (they are in the upload's batch record), in the same way.
//!
//! [`StreamRecord`]: tern_protocol::StreamRecord
//! [`EventRecordV2`]: tern_protocol::EventRecordV2

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serialize;
use tern_protocol::{Batch, RECORD_VERSION_2};

use super::Upload;
use crate::decode::EventFields;
use crate::error::RequestError;

// The version numbers `RecordJson::head` writes.
const _: () = assert!(tern_protocol::RECORD_VERSION == 1 && RECORD_VERSION_2 == 2);

/// The upload's shared parts of a stream record, serialized once.
#[derive(Debug)]
pub struct RecordJson {
    /// `{"v":1,"event_id":"` (or `"v":2`): the start of every record.
    head: &'static [u8],
    /// `,"app_id":…,"install_id":…,"seq":` — between `event_id` and the event's `seq`.
    ids: Vec<u8>,
    /// `,"sent_at":…,"received_at":…,"properties":` — between `event_time` and `properties`
    /// (v2: `,"properties":`).
    clocks: Vec<u8>,
    /// `,"context":{…}` — after `properties` (v2: nothing).
    context: Vec<u8>,
    /// `,"batch_id":…,"sdk":{…},"collector_id":…}` — the end of every record (v2:
    /// `,"batch_id":…}`).
    tail: Vec<u8>,
}

impl RecordJson {
    /// Serializes the parts every record of `batch` shares, for the stream record version
    /// `upload.record_version`.
    pub fn new<E>(batch: &Batch<E>, upload: &Upload<'_>) -> Result<Self, RequestError> {
        let v2 = upload.record_version == RECORD_VERSION_2;
        let mut ids = Vec::with_capacity(64 + batch.install_id.len() + upload.app_id.len());
        ids.extend_from_slice(b",\"app_id\":");
        write_json(&mut ids, upload.app_id)?;
        ids.extend_from_slice(b",\"install_id\":");
        write_json(&mut ids, &batch.install_id)?;
        ids.extend_from_slice(b",\"seq\":");

        let mut clocks = Vec::with_capacity(96);
        if !v2 {
            clocks.extend_from_slice(b",\"sent_at\":");
            write_timestamp(&mut clocks, &batch.sent_at);
            clocks.extend_from_slice(b",\"received_at\":");
            write_timestamp(&mut clocks, &upload.received_at);
        }
        clocks.extend_from_slice(b",\"properties\":");

        let mut context = Vec::new();
        if !v2 {
            context.reserve(256);
            context.extend_from_slice(b",\"context\":");
            write_json(&mut context, &batch.context)?;
        }

        let mut tail = Vec::with_capacity(160);
        tail.extend_from_slice(b",\"batch_id\":");
        write_json(&mut tail, &batch.batch_id)?;
        if !v2 {
            tail.extend_from_slice(b",\"sdk\":");
            write_json(&mut tail, &batch.sdk)?;
            tail.extend_from_slice(b",\"collector_id\":");
            write_json(&mut tail, upload.collector_id)?;
        }
        tail.push(b'}');
        Ok(Self {
            head: if v2 {
                b"{\"v\":2,\"event_id\":\""
            } else {
                b"{\"v\":1,\"event_id\":\""
            },
            ids,
            clocks,
            context,
            tail,
        })
    }

    /// Bytes a record holds besides its event's own fields: what the upload's parts add.
    pub fn shared_len(&self) -> usize {
        self.head.len() + self.ids.len() + self.clocks.len() + self.context.len() + self.tail.len()
    }

    /// The record of `event`, whose `properties` are already serialized in `properties`.
    #[cfg(test)]
    pub fn record<E: EventFields>(
        &self,
        event: &E,
        event_time: &DateTime<Utc>,
        properties: &[u8],
    ) -> Result<Vec<u8>, RequestError> {
        let mut out = Vec::with_capacity(self.record_len_estimate(event, properties));
        self.write_record(&mut out, event, event_time, properties)?;
        Ok(out)
    }

    /// Room for the record of `event` (only sizes allocations).
    pub fn record_len_estimate<E: EventFields>(&self, event: &E, properties: &[u8]) -> usize {
        self.shared_len() + properties.len() + event.name().len() + RECORD_EVENT_FIELDS_BYTES
    }

    /// [`Self::record`], appended to `out` (which may hold other records before it).
    pub fn write_record<E: EventFields>(
        &self,
        out: &mut Vec<u8>,
        event: &E,
        event_time: &DateTime<Utc>,
        properties: &[u8],
    ) -> Result<(), RequestError> {
        out.extend_from_slice(self.head);
        out.extend_from_slice(
            event
                .event_id()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.push(b'"');
        out.extend_from_slice(&self.ids);
        out.extend_from_slice(itoa::Buffer::new().format(event.seq()).as_bytes());
        out.extend_from_slice(b",\"name\":");
        write_json(out, event.name())?;
        out.extend_from_slice(b",\"created_at\":");
        write_timestamp(out, &event.created_at());
        out.extend_from_slice(b",\"event_time\":");
        write_timestamp(out, event_time);
        out.extend_from_slice(&self.clocks);
        out.extend_from_slice(properties);
        out.extend_from_slice(&self.context);
        if let Some(user_id) = event.user_id() {
            out.extend_from_slice(b",\"user_id\":");
            write_json(out, user_id)?;
        }
        if let Some(session_id) = event.session_id() {
            out.extend_from_slice(b",\"session_id\":");
            write_json(out, session_id)?;
        }
        out.extend_from_slice(&self.tail);
        Ok(())
    }
}

/// Room for the per-event fields besides the name and properties: `v`, `event_id`, `seq`, two
/// timestamps, their keys, and typical user and session ids. Only sizes the first allocation.
const RECORD_EVENT_FIELDS_BYTES: usize = 256;

/// Serializes `value` as JSON at the end of `out` (escaping strings as serde_json does).
pub fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), RequestError> {
    serde_json::to_writer(out, value).map_err(RequestError::unserializable)
}

/// Writes `t` as a JSON string the way `tern_protocol::wire::rfc3339` serializes it
/// (`"YYYY-MM-DDTHH:MM:SS.mmmZ"`) without chrono's formatting machinery and its `String`.
/// Years outside 0..=9999 (possible only from absurd device clocks) take chrono's own path.
pub fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        out.push(b'"');
        out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes());
        out.push(b'"');
        return;
    }
    // Leap seconds are carried in nanoseconds ≥ 1e9; chrono prints them as second 60.
    let nanos = t.nanosecond();
    let (second, millis) = if nanos >= 1_000_000_000 {
        (t.second() + 1, (nanos - 1_000_000_000) / 1_000_000)
    } else {
        (t.second(), nanos / 1_000_000)
    };
    let digits = |out: &mut Vec<u8>, n: u32, width: u32| {
        for p in (0..width).rev() {
            out.push(b'0' + ((n / 10u32.pow(p)) % 10) as u8);
        }
    };
    out.push(b'"');
    digits(out, year.unsigned_abs(), 4);
    out.push(b'-');
    digits(out, t.month(), 2);
    out.push(b'-');
    digits(out, t.day(), 2);
    out.push(b'T');
    digits(out, t.hour(), 2);
    out.push(b':');
    digits(out, t.minute(), 2);
    out.push(b':');
    digits(out, second, 2);
    out.push(b'.');
    digits(out, millis, 3);
    out.extend_from_slice(b"Z\"");
}
