//! Where records go. Today: Kinesis Data Streams.

pub mod kinesis;
