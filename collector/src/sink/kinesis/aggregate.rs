//! KPL-compatible aggregation: many user records packed into one Kinesis record, so that small
//! events do not hit a shard's 1 000 records/s limit long before its 1 MB/s one. KCL, the AWS
//! Lambda de-aggregation libraries and `aws-kinesis-agg` unpack it.
//!
//! Format: the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5 digest of
//! that protobuf. The protobuf is small enough to write (and read back, [`deaggregate`]) by
//! hand:
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

/// Bytes of the MD5 digest that ends an aggregated record.
const DIGEST_BYTES: usize = 16;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-delimited protobuf field holding `len` bytes (tag, length, bytes).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Size against the Kinesis record limit (data + partition key) of an aggregated record with
/// partition key `key_len` bytes long and user records whose encoded fields take `fields` bytes.
fn sealed_size(key_len: usize, fields: usize) -> usize {
    MAGIC.len() + field_len(key_len) + fields + DIGEST_BYTES + key_len
}

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
/// aggregated records as fit the Kinesis record limit, in order. A single entry stays as it is,
/// and so does an entry that fits the limit on its own but not with the aggregation's overhead:
/// de-aggregating consumers pass plain records through, while an oversized record would make
/// Kinesis refuse the whole PutRecords call it shares with other uploads.
pub fn aggregate(entries: Vec<Entry>) -> Vec<Entry> {
    if entries.len() < 2 {
        return entries;
    }
    let mut out = Vec::new();
    let mut group: Vec<Vec<u8>> = Vec::new();
    let mut group_key = String::new();
    let mut group_fields = 0;
    for entry in entries {
        let record = user_record(&entry.data);
        let field = field_len(record.len());
        if sealed_size(entry.partition_key.len(), field) > MAX_RECORD_BYTES {
            if !group.is_empty() {
                out.push(seal(&group_key, std::mem::take(&mut group)));
                group_fields = 0;
            }
            out.push(entry);
            continue;
        }
        let switch = !group.is_empty()
            && (entry.partition_key != group_key
                || sealed_size(group_key.len(), group_fields + field) > MAX_RECORD_BYTES);
        if switch {
            out.push(seal(&group_key, std::mem::take(&mut group)));
            group_fields = 0;
        }
        if group.is_empty() {
            group_key = entry.partition_key.clone();
        }
        group_fields += field;
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

/// The data of the user records packed in `data`, in order, if it is an aggregated record
/// (magic prefix, a readable `AggregatedRecord`, a matching MD5 digest); `None` for a plain
/// record, which is how the KCL treats a record that fails these checks too.
pub fn deaggregate(data: &[u8]) -> Option<Vec<&[u8]>> {
    let body = data.strip_prefix(&MAGIC)?;
    let (message, digest) = body.split_at_checked(body.len().checked_sub(DIGEST_BYTES)?)?;
    if Md5::digest(message).as_slice() != digest {
        return None;
    }
    let mut records = Vec::new();
    for (field, value) in fields(message)? {
        if let (3, Field::Bytes(record)) = (field, value) {
            let data =
                fields(record)?
                    .into_iter()
                    .find_map(|(field, value)| match (field, value) {
                        (3, Field::Bytes(data)) => Some(data),
                        _ => None,
                    })?;
            records.push(data);
        }
    }
    Some(records)
}

/// A protobuf field's value, as far as de-aggregation cares.
enum Field<'a> {
    Bytes(&'a [u8]),
    Other,
}

/// The fields of a protobuf message, or `None` if it is not one.
fn fields(mut message: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !message.is_empty() {
        let tag = read_varint(&mut message)?;
        let value = match tag & 7 {
            0 => read_varint(&mut message).map(|_| Field::Other)?,
            1 => take(&mut message, 8).map(|_| Field::Other)?,
            2 => {
                let len = usize::try_from(read_varint(&mut message)?).ok()?;
                Field::Bytes(take(&mut message, len)?)
            }
            5 => take(&mut message, 4).map(|_| Field::Other)?,
            _ => return None,
        };
        out.push((tag >> 3, value));
    }
    Some(out)
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (taken, rest) = input.split_at_checked(len)?;
    *input = rest;
    Some(taken)
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
                let record = user_record(&vec![b'x'; len]);
                let predicted = sealed_size(key.len(), field_len(record.len()));
                let sealed = seal(key, vec![record]);
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
                partition_key: "install".to_owned(),
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
