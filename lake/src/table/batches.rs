//! Rows of `batches`: the batch records of stream record v2 as read, and back (a v2 event whose
//! batch record is no longer in memory joins a row of it).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
};
use deltalake::arrow::datatypes::{DataType as ArrowType, Int32Type, Int64Type};
use tern_protocol::{BatchRecord, SdkInfo, BATCH_KIND};

use super::events::append_json;
use super::rows::Provenance;
use super::schema::{arrow_schema, batch_columns, date_days, micros, timestamps};
use crate::error::{Error, Result};

/// `batches` as one batch: a row per batch record read, with where it was read.
pub fn batches_batch(
    batches: &[(BatchRecord, Provenance)],
    ingested_at: DateTime<Utc>,
) -> Result<RecordBatch> {
    let mut batch_id = StringBuilder::new();
    let mut install_id = StringBuilder::new();
    let mut app_id = StringBuilder::new();
    let mut received_at = timestamps();
    let mut sent_at = timestamps();
    let mut collector_id = StringBuilder::new();
    let mut events = Int64Builder::new();
    let mut app_package = StringBuilder::new();
    let mut app_version = StringBuilder::new();
    let mut app_build = StringBuilder::new();
    let mut os_name = StringBuilder::new();
    let mut os_version = StringBuilder::new();
    let mut device_manufacturer = StringBuilder::new();
    let mut device_model = StringBuilder::new();
    let mut locale = StringBuilder::new();
    let mut timezone = StringBuilder::new();
    let mut sdk_name = StringBuilder::new();
    let mut sdk_version = StringBuilder::new();
    let mut v = Int32Builder::new();
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut sub_sequence = Int32Builder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut context = StringBuilder::new();
    let mut received_date = Date32Builder::new();
    let mut json = Vec::new();
    for (b, from) in batches {
        batch_id.append_value(b.batch_id.to_string());
        install_id.append_value(&b.install_id);
        app_id.append_value(&b.app_id);
        received_at.append_value(micros(b.received_at));
        sent_at.append_value(micros(b.sent_at));
        collector_id.append_value(&b.collector_id);
        events.append_value(i64::try_from(b.events).unwrap_or(i64::MAX));
        let c = &b.context;
        app_package.append_option(c.app.id.as_deref());
        app_version.append_option(c.app.version.as_deref());
        app_build.append_option(c.app.build.as_deref());
        os_name.append_option(c.os.name.as_deref());
        os_version.append_option(c.os.version.as_deref());
        device_manufacturer.append_option(c.device.manufacturer.as_deref());
        device_model.append_option(c.device.model.as_deref());
        locale.append_option(c.locale.as_deref());
        timezone.append_option(c.timezone.as_deref());
        sdk_name.append_value(&b.sdk.name);
        sdk_version.append_value(&b.sdk.version);
        v.append_value(i32::try_from(b.v).unwrap_or(i32::MAX));
        shard_id.append_value(&from.shard_id);
        sequence_number.append_value(&from.sequence_number);
        sub_sequence.append_option(from.sub_sequence);
        arrived_at.append_value(micros(from.arrived_at));
        ingested.append_value(micros(ingested_at));
        append_json(&mut context, &mut json, c);
        received_date.append_value(date_days(b.received_at));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(batch_id.finish()),
        Arc::new(install_id.finish()),
        Arc::new(app_id.finish()),
        Arc::new(received_at.finish()),
        Arc::new(sent_at.finish()),
        Arc::new(collector_id.finish()),
        Arc::new(events.finish()),
        Arc::new(app_package.finish()),
        Arc::new(app_version.finish()),
        Arc::new(app_build.finish()),
        Arc::new(os_name.finish()),
        Arc::new(os_version.finish()),
        Arc::new(device_manufacturer.finish()),
        Arc::new(device_model.finish()),
        Arc::new(locale.finish()),
        Arc::new(timezone.finish()),
        Arc::new(sdk_name.finish()),
        Arc::new(sdk_version.finish()),
        Arc::new(v.finish()),
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(sub_sequence.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(context.finish()),
        Arc::new(received_date.finish()),
    ];
    Ok(RecordBatch::try_new(
        arrow_schema(&batch_columns()),
        columns,
    )?)
}

/// A batch record read back from `batches`, with where it was read from the stream.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The record.
    pub batch: BatchRecord,
    /// Its shard.
    pub shard_id: String,
    /// Its Kinesis record's sequence number.
    pub sequence_number: String,
    /// Its index inside a KPL aggregate, if it was in one.
    pub sub_sequence: Option<i32>,
}

/// The batch records in `rows` (rows of `batches`, as a query read them, every column).
pub fn batch_records(rows: &[RecordBatch]) -> Result<Vec<StoredBatch>> {
    let mut out = Vec::new();
    for batch in rows {
        let strings = |name: &str| -> Result<ArrayRef> {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Config(format!("batches rows without column {name}")))?;
            Ok(deltalake::arrow::compute::cast(column, &ArrowType::Utf8)?)
        };
        let typed = |name: &str, ty: &ArrowType| -> Result<ArrayRef> {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Config(format!("batches rows without column {name}")))?;
            Ok(deltalake::arrow::compute::cast(column, ty)?)
        };
        let micros_type = timestamps().finish().data_type().clone();
        let (batch_id, install_id, app_id, collector_id) = (
            strings("batch_id")?,
            strings("install_id")?,
            strings("app_id")?,
            strings("collector_id")?,
        );
        let (sdk_name, sdk_version, context) = (
            strings("sdk_name")?,
            strings("sdk_version")?,
            strings("context")?,
        );
        let (shard_id, sequence_number) = (strings("shard_id")?, strings("sequence_number")?);
        let received_at = typed("received_at", &micros_type)?;
        let sent_at = typed("sent_at", &micros_type)?;
        let events = typed("events", &ArrowType::Int64)?;
        let v = typed("v", &ArrowType::Int32)?;
        let sub_sequence = typed("sub_sequence", &ArrowType::Int32)?;
        let text = |a: &ArrayRef, i: usize| a.as_string::<i32>().value(i).to_owned();
        let time = |a: &ArrayRef, i: usize| -> Result<DateTime<Utc>> {
            let value = a.as_primitive::<Int64Type>().value(i);
            DateTime::from_timestamp_micros(value)
                .ok_or_else(|| Error::Config(format!("batches: timestamp {value} out of range")))
        };
        let received_at = deltalake::arrow::compute::cast(&received_at, &ArrowType::Int64)?;
        let sent_at = deltalake::arrow::compute::cast(&sent_at, &ArrowType::Int64)?;
        for i in 0..batch.num_rows() {
            let id = text(&batch_id, i);
            let record = BatchRecord {
                v: u32::try_from(v.as_primitive::<Int32Type>().value(i)).unwrap_or(0),
                kind: BATCH_KIND.to_owned(),
                batch_id: id
                    .parse()
                    .map_err(|e| Error::Config(format!("batches: batch_id {id:?}: {e}")))?,
                app_id: text(&app_id, i),
                install_id: text(&install_id, i),
                sent_at: time(&sent_at, i)?,
                received_at: time(&received_at, i)?,
                context: serde_json::from_str(&text(&context, i))?,
                sdk: SdkInfo {
                    name: text(&sdk_name, i),
                    version: text(&sdk_version, i),
                },
                collector_id: text(&collector_id, i),
                events: u64::try_from(events.as_primitive::<Int64Type>().value(i)).unwrap_or(0),
            };
            let sub = sub_sequence.as_primitive::<Int32Type>();
            out.push(StoredBatch {
                batch: record,
                shard_id: text(&shard_id, i),
                sequence_number: text(&sequence_number, i),
                sub_sequence: sub.is_valid(i).then(|| sub.value(i)),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{good_record, v2_parts};

    #[test]
    fn a_batch_record_comes_back_from_its_row_as_it_was() {
        let (_, mut batch) = v2_parts(&good_record());
        batch.context.os.name = Some("Android".into());
        batch.context.locale = Some("de-CH".into());
        batch.events = 7;
        let from = Provenance {
            shard_id: Arc::from("shardId-000000000001"),
            sequence_number: Arc::from("49660000000000000000000000001"),
            sub_sequence: Some(3),
            arrived_at: Utc::now(),
        };
        let rows = batches_batch(&[(batch.clone(), from)], Utc::now()).unwrap();
        let back = batch_records(&[rows]).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].batch, batch);
        assert_eq!(back[0].shard_id, "shardId-000000000001");
        assert_eq!(back[0].sequence_number, "49660000000000000000000000001");
        assert_eq!(back[0].sub_sequence, Some(3));
    }
}
