//! The foreign layers' hand-off queue: how Kotlin and Python hand calls to Rust many at a time
//! instead of crossing the FFI once per event (Swift calls the library's C functions directly,
//! without JNA or ctypes in between, and keeps one call per event).
//!
//! A foreign `track()` reads the clocks, encodes the call into a compact buffer, appends it to
//! an in-process queue bounded in bytes ([`HandoffLimits`]) and returns; the layer's drain
//! thread hands the queued calls to [`Tracker::track_many`] in one crossing. `identify()`,
//! `setSuperProperties()`, `reset()` and `setOptOut()` go through the same queue, so every call
//! reaches the SDK in the order the app made it (an event tracked before `identify()` never
//! gets the new user id). Rust keeps every decision: validation, `event_id`, `seq`, the caps.
//!
//! The buffer is a sequence of calls, integers little-endian, strings as a `u32` byte length
//! followed by UTF-8:
//!
//! | call | byte | then |
//! |---|---|---|
//! | track | 1 | wall clock `i64` (ms since the epoch), monotonic clock `i64` (ns), name, properties (a JSON object) |
//! | identify | 2 | `u8` 1 and the user id, or `u8` 0 to forget it |
//! | set super-properties | 3 | properties (a JSON object) |
//! | reset | 4 | nothing |
//! | opt out | 5 | `u8` 1 (opt out) or 0 (opt back in) |
//!
//! The monotonic clock is the foreign layer's own (`SystemClock.elapsedRealtimeNanos()` on
//! Android, `System.nanoTime()` on the JVM, `time.monotonic_ns()` in Python); only its
//! difference to `now_mono_ns`, read just before the crossing, is used: it tells how long ago
//! the app made the call, which dates the event on the SDK's clock (see
//! `tern_sdk::Captured`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{properties, ApiError, Tracker};

/// Bytes of encoded calls a foreign queue holds before `track()` waits. 1 MiB is about 3 000
/// events of 8 properties: at 200 000 calls/s, 15 ms of calls, enough to ride out a slow SQLite
/// commit, and a negligible share of a phone's memory.
pub const MAX_QUEUE_BYTES: u64 = 1024 * 1024;

/// How long a foreign `track()` waits for room in a full queue before it drops the event and
/// counts it (reported to the collector as `queue_full`). A full queue means the SDK's writer
/// cannot keep up with the app; 100 ms is a few dropped frames on the app's main thread, which
/// is less harm than a lost event, and short enough never to come near an ANR.
pub const MAX_TRACK_BLOCK: Duration = Duration::from_millis(100);

/// How long the drain thread waits for room in the SDK's own hand-off queue per event before
/// dropping it as `queue_full`: the writer is stalled (the disk) when that is not enough.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(2);

/// A call the SDK did not take, as [`Tracker::track_many`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Refusal {
    /// Its position among the calls of the buffer (0 for the first).
    pub index: u32,
    /// Which call: `track`, `identify`, `setSuperProperties`, `reset`, `setOptOut`.
    pub call: String,
    /// The event's name, for `track`.
    pub event_name: Option<String>,
    /// Why, as [`ApiError`] would have said it.
    pub kind: RefusalKind,
    /// The SDK's explanation (never the event's properties).
    pub reason: String,
}

/// Why a call was refused: the variants of [`ApiError`], plus a buffer the SDK could not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RefusalKind {
    /// A bad event name, properties over the limits or not a JSON object.
    InvalidInput,
    /// Dropped and counted (the SDK's queue stayed full, the disk is failing).
    Dropped,
    /// The tracker was shut down.
    Closed,
    /// The buffer was malformed from this call on (a bug in the foreign layer).
    Internal,
}

/// The limits every foreign queue applies, from one place (this module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct HandoffLimits {
    /// [`MAX_QUEUE_BYTES`].
    pub max_queue_bytes: u64,
    /// [`MAX_TRACK_BLOCK`] in milliseconds.
    pub max_track_block_ms: u64,
}

/// The foreign queue's limits.
#[uniffi::export]
pub fn handoff_limits() -> HandoffLimits {
    HandoffLimits {
        max_queue_bytes: MAX_QUEUE_BYTES,
        max_track_block_ms: u64::try_from(MAX_TRACK_BLOCK.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The calls of a buffer, in order.
pub(crate) const TRACK: u8 = 1;
pub(crate) const IDENTIFY: u8 = 2;
pub(crate) const SUPER_PROPERTIES: u8 = 3;
pub(crate) const RESET: u8 = 4;
pub(crate) const OPT_OUT: u8 = 5;

/// One call read from the buffer.
#[derive(Debug, PartialEq)]
enum Call<'a> {
    Track {
        wall_ms: i64,
        mono_ns: i64,
        name: &'a str,
        properties: &'a str,
    },
    Identify(Option<&'a str>),
    SuperProperties(&'a str),
    Reset,
    OptOut(bool),
}

impl Call<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::Track { .. } => "track",
            Self::Identify(_) => "identify",
            Self::SuperProperties(_) => "setSuperProperties",
            Self::Reset => "reset",
            Self::OptOut(_) => "setOptOut",
        }
    }

    fn event_name(&self) -> Option<String> {
        match self {
            Self::Track { name, .. } => Some((*name).to_owned()),
            _ => None,
        }
    }
}

/// Reads calls off the buffer.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "the buffer ends {} bytes into a field of {n}",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, String> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(b))
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        let len = usize::try_from(u32::from_le_bytes(b)).map_err(|e| e.to_string())?;
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    fn call(&mut self) -> Result<Option<Call<'a>>, String> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let call = match self.u8()? {
            TRACK => Call::Track {
                wall_ms: self.i64()?,
                mono_ns: self.i64()?,
                name: self.str()?,
                properties: self.str()?,
            },
            IDENTIFY => Call::Identify(match self.u8()? {
                0 => None,
                _ => Some(self.str()?),
            }),
            SUPER_PROPERTIES => Call::SuperProperties(self.str()?),
            RESET => Call::Reset,
            OPT_OUT => Call::OptOut(self.u8()? != 0),
            other => return Err(format!("unknown call {other}")),
        };
        Ok(Some(call))
    }
}

impl From<ApiError> for (RefusalKind, String) {
    fn from(e: ApiError) -> Self {
        let reason = match &e {
            ApiError::InvalidInput { reason }
            | ApiError::Dropped { reason }
            | ApiError::Unavailable { reason } => reason.clone(),
            ApiError::Closed => e.to_string(),
        };
        let kind = match e {
            ApiError::InvalidInput { .. } => RefusalKind::InvalidInput,
            ApiError::Dropped { .. } => RefusalKind::Dropped,
            ApiError::Closed => RefusalKind::Closed,
            ApiError::Unavailable { .. } => RefusalKind::Internal,
        };
        (kind, reason)
    }
}

#[uniffi::export]
impl Tracker {
    /// Hands over the calls a foreign queue holds (see the module documentation), in order, in
    /// one crossing; `now_mono_ns` is the foreign monotonic clock read just before the call and
    /// `dropped` the events the queue dropped since the last call (counted as `queue_full`).
    /// Returns the calls the SDK did not take; an empty list when it took them all.
    pub fn track_many(&self, calls: Vec<u8>, now_mono_ns: i64, dropped: u64) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        let tracker = self.tracker();
        if let Some(t) = &tracker {
            t.record_dropped(dropped);
        }
        let mut reader = Reader { bytes: &calls };
        let mut index = 0u32;
        loop {
            let call = match reader.call() {
                Ok(Some(call)) => call,
                Ok(None) => break,
                Err(reason) => {
                    refusals.push(Refusal {
                        index,
                        call: "track_many".into(),
                        event_name: None,
                        kind: RefusalKind::Internal,
                        reason,
                    });
                    break;
                }
            };
            let outcome = match &tracker {
                Some(t) => apply(t, &call, now_mono_ns),
                None => Err(ApiError::Closed),
            };
            if let Err(e) = outcome {
                let (kind, reason) = e.into();
                refusals.push(Refusal {
                    index,
                    call: call.name().into(),
                    event_name: call.event_name(),
                    kind,
                    reason,
                });
            }
            index = index.saturating_add(1);
        }
        refusals
    }
}

/// Makes one call on the SDK's tracker.
fn apply(t: &tern_sdk::Tracker, call: &Call<'_>, now_mono_ns: i64) -> Result<(), ApiError> {
    match *call {
        Call::Track {
            wall_ms,
            mono_ns,
            name,
            properties: json,
        } => {
            // A clock read after `now` (another thread's, racing) is no older than now.
            let age_ns = u64::try_from(now_mono_ns.wrapping_sub(mono_ns)).unwrap_or(0);
            let age_ms = age_ns / 1_000_000;
            let captured = tern_sdk::Captured {
                created_at: DateTime::from_timestamp_millis(wall_ms).unwrap_or_else(Utc::now),
                uptime_ms: t.uptime_ms().saturating_sub(age_ms),
            };
            t.track_captured_json(name, json, captured, MAX_DRAIN_WAIT)?;
        }
        Call::Identify(user_id) => t.identify(user_id.map(str::to_owned)),
        Call::SuperProperties(json) => t.set_super_properties(properties(json)?)?,
        Call::Reset => t.reset(),
        Call::OptOut(opted_out) => t.set_opt_out(opted_out)?,
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    /// Writes a string field as the foreign layers do.
    pub(crate) fn str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn every_call_reads_back_as_written() {
        let mut b = vec![TRACK];
        b.extend_from_slice(&1_700_000_000_123i64.to_le_bytes());
        b.extend_from_slice(&(-5i64).to_le_bytes());
        str(&mut b, "checkout");
        str(&mut b, r#"{"total":59.9,"é":"ü"}"#);
        b.extend_from_slice(&[IDENTIFY, 1]);
        str(&mut b, "user-1");
        b.extend_from_slice(&[IDENTIFY, 0, SUPER_PROPERTIES]);
        str(&mut b, "{}");
        b.extend_from_slice(&[RESET, OPT_OUT, 1]);
        let mut r = Reader { bytes: &b };
        let mut calls = Vec::new();
        while let Some(call) = r.call().unwrap() {
            calls.push(call);
        }
        assert_eq!(
            calls,
            vec![
                Call::Track {
                    wall_ms: 1_700_000_000_123,
                    mono_ns: -5,
                    name: "checkout",
                    properties: r#"{"total":59.9,"é":"ü"}"#,
                },
                Call::Identify(Some("user-1")),
                Call::Identify(None),
                Call::SuperProperties("{}"),
                Call::Reset,
                Call::OptOut(true),
            ]
        );
    }

    #[test]
    fn a_cut_or_unknown_call_is_an_error_not_a_panic() {
        let mut b = vec![TRACK];
        b.extend_from_slice(&1i64.to_le_bytes());
        b.extend_from_slice(&2i64.to_le_bytes());
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(b"short");
        assert!(Reader { bytes: &b }.call().unwrap_err().contains("ends"));
        assert!(Reader { bytes: &[9] }
            .call()
            .unwrap_err()
            .contains("unknown"));
        let mut bad = vec![SUPER_PROPERTIES];
        str(&mut bad, "x");
        *bad.last_mut().unwrap() = 0xff;
        assert!(Reader { bytes: &bad }.call().unwrap_err().contains("UTF-8"));
    }
}
