//! One Kinesis record to write.

use bytes::Bytes;

/// A record: its data and partition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Record data (a JSON stream record).
    pub data: Bytes,
    /// Partition key (the install id).
    pub partition_key: String,
}

impl Entry {
    /// Bytes this record counts for against the Kinesis record and request limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}
