//! Clocks stamped on events: the device wall clock, which users and NTP move, and a monotonic
//! clock that only moves forward, identified by `clock_id` (one per tracker start).
//!
//! The collector uses the monotonic pair (event `uptime_ms`, batch `sent_uptime_ms`) to place an
//! event relative to its own clock when both come from the same `clock_id`; see
//! `docs/protocol.md`, clocks.

use std::time::Instant;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A monotonic clock with an identity.
#[derive(Debug, Clone)]
pub struct Clock {
    origin: Instant,
    id: String,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A new clock starting at 0 now, with a fresh id.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            id: Uuid::now_v7().simple().to_string(),
        }
    }

    /// Identifier of this clock; `uptime_ms` values compare only within one id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Milliseconds since this clock started.
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The device wall clock.
    pub fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
