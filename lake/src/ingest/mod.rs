//! `tern-lake ingest`: the stream into `events` (and `gaps`, `rejected`), exactly once by
//! `event_id` (and `gap_id`).
//!
//! One loop: read every due shard, decode, drop what the table (or this commit) already holds,
//! buffer; every commit interval (or N rows) commit the rows and every shard's position in one
//! Delta version. A failed commit is taken in and tried again, never dropped.

mod commit;
mod copies;
mod publish;
mod read;
mod run;
mod state;

pub use self::run::run;
pub use self::state::Summary;
