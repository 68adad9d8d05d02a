//! Tern lake: the Kinesis stream into a cleansed Delta Lake table, every event exactly once by
//! `event_id`, late events in their true day, and SQL over it.
//!
//! Stages, one module each: [`source`] (shards, iterators, backoff) → [`decode`]
//! (de-aggregation, parsing, checks) → [`join`] (v2 events with their batch records) →
//! [`dedup`] (the `event_id` window) → [`table`] (Delta schemas and commits, with the shards'
//! [`checkpoint`]s in the same commit) → [`query`] and
//! [`sql`] (DataFusion). [`ingest`] runs the loop; [`limits`] holds every limit with its reason.
//! Feeds beside the table: [`clean`] (the cleansed stream), the `raw` archive and [`backfill`]
//! from it under today's [`rules`].
//! Upkeep beside ingest: [`compact`] (small files bin-packed, VACUUM, expired log entries) and
//! [`snapshot`] (named table versions with a [`checksum`] of their rows).

pub mod backfill;
pub mod checkpoint;
pub mod checksum;
pub mod clean;
pub mod compact;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod ingest;
pub mod join;
pub mod limits;
pub mod metrics;
pub mod query;
pub mod rules;
pub mod snapshot;
pub mod source;
pub mod sql;
pub mod table;

pub use config::{IngestArgs, IngestConfig};
pub use error::{Error, Result};
