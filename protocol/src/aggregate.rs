//! The KPL's aggregated record format: many user records packed into one Kinesis record. The
//! collector writes it (`--aggregate`); the lake and any raw `GetRecords` consumer unpack it
//! with [`deaggregate`]. KCL, the AWS Lambda de-aggregation libraries and `aws-kinesis-agg` read
//! the same bytes.
//!
//! Format: the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5 digest of
//! that protobuf. The protobuf is small enough to write and read by hand:
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

use md5::{Digest, Md5};

/// The KPL's magic prefix.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Bytes of the MD5 digest that ends an aggregated record.
pub const DIGEST_BYTES: usize = 16;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-delimited protobuf field holding `len` bytes (tag, length, bytes).
pub fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Size of an aggregated record (without its partition key) whose partition key is `key_len`
/// bytes long and whose user records' encoded fields take `fields` bytes.
pub fn sealed_data_len(key_len: usize, fields: usize) -> usize {
    MAGIC.len() + field_len(key_len) + fields + DIGEST_BYTES
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
pub fn user_record(data: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(data.len() + 8);
    record.push(1 << 3); // field 1, varint
    varint(&mut record, 0);
    length_delimited(&mut record, 3, data);
    record
}

/// The data of an aggregated record holding `records` (from [`user_record`]), all under the one
/// partition key `partition_key`.
pub fn seal(partition_key: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let mut message = Vec::new();
    length_delimited(&mut message, 1, partition_key.as_bytes());
    for record in records {
        length_delimited(&mut message, 3, record);
    }
    let digest = Md5::digest(&message);
    let mut data = Vec::with_capacity(MAGIC.len() + message.len() + digest.len());
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&message);
    data.extend_from_slice(&digest);
    data
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
}
