//! One Kinesis record to write.

use std::sync::Arc;

use bytes::Bytes;

/// A record: its data and partition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Record data (a JSON stream record).
    pub data: Bytes,
    /// Partition key (the install id): shared by the records of an upload, and by the copies
    /// of a record that its retries and shared calls hold.
    pub partition_key: Arc<str>,
}

impl Entry {
    /// Bytes this record counts for against the Kinesis record and request limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}
