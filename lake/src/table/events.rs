//! Rows of `events`, built column by column.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::SchemaRef;
use tern_protocol::StreamRecord;

use super::rows::Provenance;
use super::schema::{arrow_schema, date_days, event_columns, micros, timestamps};
use crate::error::Result;

/// Rows of `events`, column by column.
pub struct EventColumns {
    schema: SchemaRef,
    event_id: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    name: StringBuilder,
    install_id: StringBuilder,
    seq: Int64Builder,
    app_id: StringBuilder,
    user_id: StringBuilder,
    session_id: StringBuilder,
    created_at: TimestampMicrosecondBuilder,
    arrived_at: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    app_package: StringBuilder,
    app_version: StringBuilder,
    app_build: StringBuilder,
    os_name: StringBuilder,
    os_version: StringBuilder,
    device_manufacturer: StringBuilder,
    device_model: StringBuilder,
    locale: StringBuilder,
    timezone: StringBuilder,
    sdk_name: StringBuilder,
    sdk_version: StringBuilder,
    batch_id: StringBuilder,
    collector_id: StringBuilder,
    v: Int32Builder,
    shard_id: StringBuilder,
    sequence_number: StringBuilder,
    sub_sequence: Int32Builder,
    properties: StringBuilder,
    context: StringBuilder,
    event_date: Date32Builder,
    rows: usize,
    json: Vec<u8>,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            schema: arrow_schema(&event_columns()),
            event_id: StringBuilder::new(),
            event_time: timestamps(),
            received_at: timestamps(),
            name: StringBuilder::new(),
            install_id: StringBuilder::new(),
            seq: Int64Builder::new(),
            app_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            created_at: timestamps(),
            arrived_at: timestamps(),
            sent_at: timestamps(),
            app_package: StringBuilder::new(),
            app_version: StringBuilder::new(),
            app_build: StringBuilder::new(),
            os_name: StringBuilder::new(),
            os_version: StringBuilder::new(),
            device_manufacturer: StringBuilder::new(),
            device_model: StringBuilder::new(),
            locale: StringBuilder::new(),
            timezone: StringBuilder::new(),
            sdk_name: StringBuilder::new(),
            sdk_version: StringBuilder::new(),
            batch_id: StringBuilder::new(),
            collector_id: StringBuilder::new(),
            v: Int32Builder::new(),
            shard_id: StringBuilder::new(),
            sequence_number: StringBuilder::new(),
            sub_sequence: Int32Builder::new(),
            properties: StringBuilder::new(),
            context: StringBuilder::new(),
            event_date: Date32Builder::new(),
            rows: 0,
            json: Vec::new(),
        }
    }
}

impl EventColumns {
    /// Rows added so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds one event.
    pub fn push(&mut self, r: &StreamRecord, from: &Provenance) {
        self.event_id.append_value(
            r.event_id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        self.event_time.append_value(micros(r.event_time));
        self.received_at.append_value(micros(r.received_at));
        self.name.append_value(&r.name);
        self.install_id.append_value(&r.install_id);
        self.seq
            .append_value(i64::try_from(r.seq).unwrap_or(i64::MAX));
        self.app_id.append_value(&r.app_id);
        self.user_id.append_option(r.user_id.as_deref());
        self.session_id.append_option(r.session_id.as_deref());
        self.created_at.append_value(micros(r.created_at));
        self.arrived_at.append_value(micros(from.arrived_at));
        self.sent_at.append_value(micros(r.sent_at));
        let c = &r.context;
        self.app_package.append_option(c.app.id.as_deref());
        self.app_version.append_option(c.app.version.as_deref());
        self.app_build.append_option(c.app.build.as_deref());
        self.os_name.append_option(c.os.name.as_deref());
        self.os_version.append_option(c.os.version.as_deref());
        self.device_manufacturer
            .append_option(c.device.manufacturer.as_deref());
        self.device_model.append_option(c.device.model.as_deref());
        self.locale.append_option(c.locale.as_deref());
        self.timezone.append_option(c.timezone.as_deref());
        self.sdk_name.append_value(&r.sdk.name);
        self.sdk_version.append_value(&r.sdk.version);
        self.batch_id.append_value(
            r.batch_id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        self.collector_id.append_value(&r.collector_id);
        self.v.append_value(i32::try_from(r.v).unwrap_or(i32::MAX));
        self.shard_id.append_value(&from.shard_id);
        self.sequence_number.append_value(&from.sequence_number);
        self.sub_sequence.append_option(from.sub_sequence);
        append_json(&mut self.properties, &mut self.json, &r.properties);
        append_json(&mut self.context, &mut self.json, &r.context);
        self.event_date.append_value(date_days(r.event_time));
        self.rows += 1;
    }

    /// The rows as one batch, with `ingested_at` for all of them; the builders start empty
    /// again.
    pub fn finish(&mut self, ingested_at: DateTime<Utc>) -> Result<RecordBatch> {
        let mut ingested = timestamps();
        ingested.append_value_n(micros(ingested_at), self.rows);
        self.finish_with(ingested)
    }

    /// The rows as one batch, row `i` with `ingested_at[i]` (microseconds); the builders
    /// start empty again.
    pub fn finish_each(&mut self, ingested_at: &[i64]) -> Result<RecordBatch> {
        let mut ingested = timestamps();
        ingested.append_slice(ingested_at);
        self.finish_with(ingested)
    }

    fn finish_with(&mut self, mut ingested: TimestampMicrosecondBuilder) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.install_id.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.app_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.created_at.finish()),
            Arc::new(self.arrived_at.finish()),
            Arc::new(ingested.finish()),
            Arc::new(self.sent_at.finish()),
            Arc::new(self.app_package.finish()),
            Arc::new(self.app_version.finish()),
            Arc::new(self.app_build.finish()),
            Arc::new(self.os_name.finish()),
            Arc::new(self.os_version.finish()),
            Arc::new(self.device_manufacturer.finish()),
            Arc::new(self.device_model.finish()),
            Arc::new(self.locale.finish()),
            Arc::new(self.timezone.finish()),
            Arc::new(self.sdk_name.finish()),
            Arc::new(self.sdk_version.finish()),
            Arc::new(self.batch_id.finish()),
            Arc::new(self.collector_id.finish()),
            Arc::new(self.v.finish()),
            Arc::new(self.shard_id.finish()),
            Arc::new(self.sequence_number.finish()),
            Arc::new(self.sub_sequence.finish()),
            Arc::new(self.properties.finish()),
            Arc::new(self.context.finish()),
            Arc::new(self.event_date.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Appends `value` serialized as JSON, through the reused buffer `json`.
pub(super) fn append_json(
    column: &mut StringBuilder,
    json: &mut Vec<u8>,
    value: &impl serde::Serialize,
) {
    json.clear();
    // Serializing a parsed JSON map or a plain struct into memory cannot fail, and serde_json
    // writes UTF-8 only.
    let _ = serde_json::to_writer(&mut *json, value);
    column.append_value(std::str::from_utf8(json).unwrap_or_default());
}
