//! KPL-compatible aggregation: many user records packed into one Kinesis record, so that small
//! events do not hit a shard's 1 000 records/s limit long before its 1 MB/s one. KCL, the AWS
//! Lambda de-aggregation libraries and `aws-kinesis-agg` unpack it.
//!
//! Format: the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5 digest of
//! that protobuf. The protobuf is small enough to write by hand:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes data = 3;
//! }
//! ```

use bytes::Bytes;
use md5::{Digest, Md5};

use super::record::Entry;
use crate::limits::MAX_RECORD_BYTES;

/// The KPL's magic prefix.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Bytes an aggregated record spends besides its user records: magic, digest, the partition
/// key table entry and a little slack for varints.
const OVERHEAD: usize = MAGIC.len() + 16 + 300;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One user record inside an aggregate, encoded (`Record` with partition key index 0).
fn user_record(data: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(data.len() + 8);
    record.push(1 << 3); // field 1, varint
    varint(&mut record, 0);
    length_delimited(&mut record, 3, data);
    record
}

/// Packs `entries` (which share one partition key: one upload, one install) into as few
/// aggregated records as fit the Kinesis record limit, in order. A single entry stays as it is.
pub fn aggregate(entries: Vec<Entry>) -> Vec<Entry> {
    if entries.len() < 2 {
        return entries;
    }
    let mut out = Vec::new();
    let mut group: Vec<Vec<u8>> = Vec::new();
    let mut group_key = String::new();
    let mut group_bytes = 0;
    for entry in entries {
        let record = user_record(&entry.data);
        let cost = record.len() + 6;
        let switch = !group.is_empty()
            && (entry.partition_key != group_key
                || group_bytes + cost + OVERHEAD + group_key.len() > MAX_RECORD_BYTES);
        if switch {
            out.push(seal(&group_key, std::mem::take(&mut group)));
            group_bytes = 0;
        }
        if group.is_empty() {
            group_key = entry.partition_key.clone();
        }
        group_bytes += cost;
        group.push(record);
    }
    if !group.is_empty() {
        out.push(seal(&group_key, group));
    }
    out
}

fn seal(partition_key: &str, records: Vec<Vec<u8>>) -> Entry {
    let mut message = Vec::new();
    length_delimited(&mut message, 1, partition_key.as_bytes());
    for record in &records {
        length_delimited(&mut message, 3, record);
    }
    let digest = Md5::digest(&message);
    let mut data = Vec::with_capacity(MAGIC.len() + message.len() + digest.len());
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&message);
    data.extend_from_slice(&digest);
    Entry {
        data: Bytes::from(data),
        partition_key: partition_key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, len: usize) -> Entry {
        Entry {
            data: Bytes::from(vec![b'x'; len]),
            partition_key: key.to_owned(),
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
                .map(|e| e.partition_key.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
