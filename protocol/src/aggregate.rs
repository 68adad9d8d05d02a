//! The KPL's aggregated record format: many user records packed into one Kinesis record. The
//! collector writes it (`--aggregate`); the lake and any raw `GetRecords` consumer unpack it
//! with [`deaggregate`]. KCL, the AWS Lambda de-aggregation libraries and `aws-kinesis-agg` read
//! the same bytes.
//!
//! Format: the magic bytes `F3 89 9A C2`, a protobuf [`AggregatedRecord`], and the MD5 digest of
//! that protobuf. The messages are those of `protocol/proto/kpl_aggregation.proto`, mirrored
//! here with prost's derive (so no `protoc` is needed to build).

use md5::{Digest, Md5};
use prost::bytes::Bytes;
use prost::Message;

/// The KPL's magic prefix.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Bytes of the MD5 digest that ends an aggregated record.
pub const DIGEST_BYTES: usize = 16;

/// `AggregatedRecord` of `kpl_aggregation.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    /// The partition keys its records refer to by index.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// The explicit hash keys its records refer to by index (Tern sets none).
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in order.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// `Record` of `kpl_aggregation.proto`: one user record.
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// Index of its partition key in [`AggregatedRecord::partition_key_table`].
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    /// Index of its explicit hash key in [`AggregatedRecord::explicit_hash_key_table`].
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// The user record's data.
    #[prost(bytes = "bytes", required, tag = "3")]
    pub data: Bytes,
    /// Tags (Tern sets none).
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `Tag` of `kpl_aggregation.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    /// The tag's key.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// The tag's value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

impl Record {
    /// A user record under the aggregate's only partition key (index 0).
    pub fn user(data: Bytes) -> Self {
        Self {
            partition_key_index: 0,
            explicit_hash_key_index: None,
            data,
            tags: Vec::new(),
        }
    }

    /// Bytes this record takes inside an aggregate (the `records` field: tag, length, message).
    pub fn field_len(&self) -> usize {
        field_len(self.encoded_len())
    }
}

/// Bytes of a length-delimited protobuf field (of a field number below 16) holding `len` bytes:
/// tag, length, bytes.
pub fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Size of an aggregated record (without its partition key) whose partition key is `key_len`
/// bytes long and whose user records' fields ([`Record::field_len`]) take `fields` bytes.
pub fn sealed_data_len(key_len: usize, fields: usize) -> usize {
    MAGIC.len() + field_len(key_len) + fields + DIGEST_BYTES
}

/// The data of an aggregated record holding `records`, all under the one partition key
/// `partition_key` (index 0).
pub fn seal_records(partition_key: &str, records: Vec<Record>) -> Vec<u8> {
    let message = AggregatedRecord {
        partition_key_table: vec![partition_key.to_owned()],
        explicit_hash_key_table: Vec::new(),
        records,
    }
    .encode_to_vec();
    let digest = Md5::digest(&message);
    let mut data = Vec::with_capacity(MAGIC.len() + message.len() + digest.len());
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&message);
    data.extend_from_slice(&digest);
    data
}

/// One user record inside an aggregate, encoded (a [`Record`] with partition key index 0), for
/// [`seal`].
pub fn user_record(data: &[u8]) -> Vec<u8> {
    Record::user(Bytes::copy_from_slice(data)).encode_to_vec()
}

/// The data of an aggregated record holding `records` (from [`user_record`]), all under the one
/// partition key `partition_key`; a record that is not an encoded [`Record`] is left out.
pub fn seal(partition_key: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let records = records
        .iter()
        .filter_map(|r| Record::decode(r.as_slice()).ok())
        .collect();
    seal_records(partition_key, records)
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
    // Decoding from `Bytes` leaves each record's data a view into `buffer` (no copy), so where
    // it lies in `buffer` is where it lies in `message`: the records are returned as slices of
    // `data` itself.
    let buffer = Bytes::copy_from_slice(message);
    let aggregated = AggregatedRecord::decode(buffer.clone()).ok()?;
    aggregated
        .records
        .iter()
        .map(|record| {
            let start = offset_within(&buffer, &record.data)?;
            message.get(start..start + record.data.len())
        })
        .collect()
}

/// Where `part` starts within `whole`, if it lies inside it (an empty part lies anywhere).
fn offset_within(whole: &[u8], part: &[u8]) -> Option<usize> {
    if part.is_empty() {
        return Some(0);
    }
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= whole.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaggregate_reads_back_what_seal_packed() {
        let data: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 7)).into_bytes())
            .collect();
        let records: Vec<Vec<u8>> = data.iter().map(|d| user_record(d)).collect();
        let sealed = seal("install", &records);
        let fields: usize = records.iter().map(|r| field_len(r.len())).sum();
        assert_eq!(sealed.len(), sealed_data_len("install".len(), fields));
        let unpacked = deaggregate(&sealed).unwrap();
        assert_eq!(unpacked, data.iter().map(|d| &d[..]).collect::<Vec<_>>());
        // Plain and damaged records are not aggregates.
        assert_eq!(deaggregate(b"{\"plain\":true}"), None);
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(deaggregate(&damaged), None);
        assert_eq!(deaggregate(&MAGIC), None);
    }

    /// The bytes are those the hand-written encoder produced before prost (and the KPL
    /// writes): the partition key table, then each record as partition key index 0 and data.
    #[test]
    fn the_encoding_is_the_kpl_s_byte_for_byte() {
        let sealed = seal("k", &[user_record(b"ab"), user_record(b"")]);
        let message = [
            0x0a, 1, b'k', // partition_key_table: "k"
            0x1a, 6, 0x08, 0, 0x1a, 2, b'a', b'b', // records: { 0, "ab" }
            0x1a, 4, 0x08, 0, 0x1a, 0, // records: { 0, "" }
        ];
        let mut expected = MAGIC.to_vec();
        expected.extend_from_slice(&message);
        expected.extend_from_slice(Md5::digest(message).as_slice());
        assert_eq!(sealed, expected);
        assert_eq!(deaggregate(&sealed), Some(vec![&b"ab"[..], &b""[..]]));
    }
}
