//! KPL-compatible aggregation: many user records packed into one Kinesis record, so that small
//! events do not hit a shard's 1 000 records/s limit long before its 1 MB/s one. KCL, the AWS
//! Lambda de-aggregation libraries and `aws-kinesis-agg` unpack it.
//!
//! The format itself (and [`deaggregate`]) is defined once, in `tern_protocol::aggregate`.

use std::sync::Arc;

use bytes::Bytes;
pub use tern_protocol::aggregate::{deaggregate, MAGIC};
use tern_protocol::aggregate::{seal_records, sealed_data_len, Record};

use super::limits::MAX_RECORD_BYTES;
use super::record::Entry;

/// Size against the Kinesis record limit (data + partition key) of an aggregated record with
/// partition key `key_len` bytes long and user records whose encoded fields take `fields` bytes.
fn sealed_size(key_len: usize, fields: usize) -> usize {
    sealed_data_len(key_len, fields) + key_len
}

/// Packs `entries` (which share one partition key: one upload, one install) into as few
/// aggregated records as fit the Kinesis record limit, in order. A single entry stays as it is,
/// and so does an entry that fits the limit on its own but not with the aggregation's overhead:
/// de-aggregating consumers pass plain records through, while an oversized record would make
/// Kinesis refuse the whole PutRecords call it shares with other uploads.
pub fn aggregate(entries: Vec<Entry>) -> Vec<Entry> {
    if entries.len() < 2 {
        return entries;
    }
    let mut out = Vec::new();
    let mut group: Vec<Record> = Vec::new();
    let mut group_key: Arc<str> = Arc::from("");
    let mut group_fields = 0;
    for entry in entries {
        let record = Record::user(entry.data.clone());
        let field = record.field_len();
        if sealed_size(entry.partition_key.len(), field) > MAX_RECORD_BYTES {
            if !group.is_empty() {
                out.push(seal(Arc::clone(&group_key), std::mem::take(&mut group)));
                group_fields = 0;
            }
            out.push(entry);
            continue;
        }
        let switch = !group.is_empty()
            && (entry.partition_key != group_key
                || sealed_size(group_key.len(), group_fields + field) > MAX_RECORD_BYTES);
        if switch {
            out.push(seal(Arc::clone(&group_key), std::mem::take(&mut group)));
            group_fields = 0;
        }
        if group.is_empty() {
            group_key = entry.partition_key.clone();
        }
        group_fields += field;
        group.push(record);
    }
    if !group.is_empty() {
        out.push(seal(group_key, group));
    }
    out
}

fn seal(partition_key: Arc<str>, records: Vec<Record>) -> Entry {
    Entry {
        data: Bytes::from(seal_records(&partition_key, records)),
        partition_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    fn entry(key: &str, len: usize) -> Entry {
        Entry {
            data: Bytes::from(vec![b'x'; len]),
            partition_key: key.into(),
        }
    }

    #[test]
    fn packs_in_order_within_the_record_limit() {
        let packed = aggregate((0..3000).map(|_| entry("install-1", 900)).collect());
        assert!(packed.len() >= 3, "{} aggregates", packed.len());
        for p in &packed {
            assert!(p.size() <= MAX_RECORD_BYTES);
            assert_eq!(&p.data[..4], &MAGIC);
            let body = &p.data[4..p.data.len() - 16];
            assert_eq!(&p.data[p.data.len() - 16..], Md5::digest(body).as_slice());
        }
        assert_eq!(aggregate(vec![entry("a", 10)]), vec![entry("a", 10)]);
        let two_keys = aggregate(vec![entry("a", 10), entry("a", 10), entry("b", 10)]);
        assert_eq!(
            two_keys
                .iter()
                .map(|e| &*e.partition_key)
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    /// An entry that fits the record limit alone but not with the aggregate's overhead used to
    /// be sealed anyway (over 1 MiB: a ValidationException for the whole shared call); it now
    /// goes out as a plain record, and everything else stays within the limit, in order.
    #[test]
    fn an_entry_too_large_to_aggregate_goes_out_plain() {
        let key = "install-1";
        let big = MAX_RECORD_BYTES - key.len() - 2;
        let entries = vec![
            entry(key, 100),
            entry(key, big),
            entry(key, 100),
            entry(key, 100),
        ];
        let packed = aggregate(entries);
        assert_eq!(packed.len(), 3, "aggregate, plain, aggregate");
        assert_eq!(&packed[0].data[..4], &MAGIC);
        assert_eq!(packed[1], entry(key, big));
        assert_eq!(&packed[2].data[..4], &MAGIC);
        for p in &packed {
            assert!(p.size() <= MAX_RECORD_BYTES, "{}", p.size());
        }
    }

    /// The size computed before sealing is the size sealed, at every boundary.
    #[test]
    fn sealed_sizes_are_exact_at_the_limit() {
        for len in [
            0,
            1,
            126,
            127,
            128,
            16_383,
            16_384,
            500_000,
            MAX_RECORD_BYTES - 40,
        ] {
            for key in ["k", &"p".repeat(256)] {
                let record = Record::user(Bytes::from(vec![b'x'; len]));
                let predicted = sealed_size(key.len(), record.field_len());
                let sealed = seal(key.into(), vec![record]);
                assert_eq!(sealed.size(), predicted, "len {len}, key {}", key.len());
            }
        }
        // Filling groups right up to the limit never crosses it.
        for len in [1_000, 4_093, 65_000, 300_000] {
            let packed = aggregate((0..40).map(|_| entry("install", len)).collect());
            assert!(packed.iter().all(|p| p.size() <= MAX_RECORD_BYTES));
        }
    }

    #[test]
    fn deaggregate_reads_back_what_aggregate_packed() {
        let entries: Vec<Entry> = (0..4_000)
            .map(|i| Entry {
                data: Bytes::from(format!(
                    "{{\"i\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(i % 1_000)
                )),
                partition_key: "install".into(),
            })
            .collect();
        let packed = aggregate(entries.clone());
        assert!(packed.len() > 1);
        let unpacked: Vec<&[u8]> = packed
            .iter()
            .flat_map(|p| deaggregate(&p.data).unwrap())
            .collect();
        let original: Vec<&[u8]> = entries.iter().map(|e| &e.data[..]).collect();
        assert_eq!(unpacked, original);
        // Plain and damaged records are not aggregates.
        assert_eq!(deaggregate(b"{\"plain\":true}"), None);
        let mut damaged = packed[0].data.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(deaggregate(&damaged), None);
        assert_eq!(deaggregate(&MAGIC), None);
    }
}
