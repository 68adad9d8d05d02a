//! Where each shard was read to, kept as Delta `txn` (application transaction) actions in the
//! same commit as the rows read up to there: a crash can neither lose nor duplicate, and a
//! restart resumes from the table alone.
//!
//! A `txn` holds one signed 64-bit `version`, while a Kinesis sequence number has up to 129
//! decimal digits. So a shard's position is several `txn`s under its prefix
//! `tern-lake/<stream>/<shard>`: `…/len` holds the number of digits (or [`END`] once the
//! shard is closed and read to its end), and `…/0`, `…/1`, … hold 18 digits each, from the
//! right. Sequence numbers only grow within a shard, so a shorter number never leaves a stale
//! chunk that [`read`] would use. Every ingest commit also carries `tern-lake/<stream>` (the
//! commit lock): two workers' commits then conflict instead of both landing, and the loser takes
//! in the winner's rows before it retries, so deduplication holds across workers.

use std::cmp::Ordering;

use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

use crate::error::{Error, Result};
use crate::limits::CHECKPOINT_CHUNK_DIGITS;

/// The `len` version of a shard that is closed and fully read.
pub const END: i64 = -1;

/// How far a shard has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Every record up to and including this sequence number.
    After(String),
    /// The shard is closed and every record of it was read.
    End,
}

/// The `txn` app id that every ingest commit of `stream` carries.
pub fn lock_app_id(stream: &str) -> String {
    format!("tern-lake/{stream}")
}

fn prefix(stream: &str, shard: &str) -> String {
    format!("tern-lake/{stream}/{shard}")
}

/// The `txn` actions that record `position` for `shard`.
pub fn encode(stream: &str, shard: &str, position: &Position, now_ms: i64) -> Vec<Transaction> {
    let prefix = prefix(stream, shard);
    let txn = |suffix: String, version: i64| Transaction {
        app_id: format!("{prefix}/{suffix}"),
        version,
        last_updated: Some(now_ms),
    };
    match position {
        Position::End => vec![txn("len".into(), END)],
        Position::After(sequence) => {
            let digits = sequence.as_bytes();
            let mut out = vec![txn("len".into(), digits.len() as i64)];
            for (k, chunk) in digits.rchunks(CHECKPOINT_CHUNK_DIGITS).enumerate() {
                // Kinesis writes sequence numbers in decimal digits: a chunk is at most 18 of them.
                let value = std::str::from_utf8(chunk)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0);
                out.push(txn(k.to_string(), value));
            }
            out
        }
    }
}

/// The position of `shard` stored in `table`, if any.
pub async fn read(table: &DeltaTable, stream: &str, shard: &str) -> Result<Option<Position>> {
    let Ok(state) = table.snapshot() else {
        return Ok(None);
    };
    let log_store = table.log_store();
    let prefix = prefix(stream, shard);
    let Some(len) = state
        .transaction_version(log_store.as_ref(), format!("{prefix}/len"))
        .await?
    else {
        return Ok(None);
    };
    if len == END {
        return Ok(Some(Position::End));
    }
    let len =
        usize::try_from(len).map_err(|_| Error::Checkpoint(format!("{prefix}/len is {len}")))?;
    let mut digits = String::with_capacity(len);
    let chunks = len.div_ceil(CHECKPOINT_CHUNK_DIGITS);
    for k in (0..chunks).rev() {
        let value = state
            .transaction_version(log_store.as_ref(), format!("{prefix}/{k}"))
            .await?
            .ok_or_else(|| Error::Checkpoint(format!("{prefix}/{k} is missing")))?;
        // The leftmost chunk has no leading zeros; the others are padded to 18 digits.
        let width = if k + 1 == chunks {
            len - k * CHECKPOINT_CHUNK_DIGITS
        } else {
            CHECKPOINT_CHUNK_DIGITS
        };
        digits.push_str(&format!("{value:0width$}"));
    }
    if digits.len() != len {
        return Err(Error::Checkpoint(format!(
            "{prefix}: {} digits stored for a length of {len}",
            digits.len()
        )));
    }
    Ok(Some(Position::After(digits)))
}

/// Orders two Kinesis sequence numbers (decimal strings without leading zeros).
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(txns: &[Transaction]) -> String {
        let len = txns[0].version as usize;
        let chunks = len.div_ceil(CHECKPOINT_CHUNK_DIGITS);
        let mut s = String::new();
        for k in (0..chunks).rev() {
            let v = txns[k + 1].version;
            let width = if k + 1 == chunks {
                len - k * CHECKPOINT_CHUNK_DIGITS
            } else {
                CHECKPOINT_CHUNK_DIGITS
            };
            s.push_str(&format!("{v:0width$}"));
        }
        s
    }

    #[test]
    fn sequence_numbers_of_every_length_round_trip() {
        for s in [
            "0",
            "7",
            "123456789012345678",
            "1234567890123456789",
            "49590338271490256608559692538361571095921575989136588898",
            "10000000000000000000000000000000000000000000000000000000",
            &"9".repeat(129),
        ] {
            let txns = encode("s", "shardId-000000000000", &Position::After(s.into()), 1);
            assert_eq!(decode(&txns), s);
            assert!(txns.iter().all(|t| t.version >= 0));
        }
        let end = encode("s", "shardId-000000000000", &Position::End, 1);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].version, END);
    }

    #[test]
    fn sequence_numbers_order_by_value() {
        assert_eq!(compare_sequence("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence("495903", "495902"), Ordering::Greater);
    }
}
