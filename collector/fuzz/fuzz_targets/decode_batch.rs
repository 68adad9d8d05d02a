//! Fuzzes the collector's path from request body to records: decompression within limits, the
//! JSON depth check, parsing into the wire format, the batch-level limits, per-event validation
//! and enrichment (clock correction, stream and dead-letter records). Any panic, overflow or
//! runaway allocation is a finding, as are properties written otherwise than the wire type
//! writes them. The first input byte picks the Content-Encoding, whether a dead-letter stream
//! is configured and the stream record version.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_collector::decode::{decompress, event_problem, parse, Encoding, EventFields};
use tern_collector::enrich::{prepare, Upload};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => Encoding::Zstd,
        1 => Encoding::Gzip,
        _ => Encoding::Identity,
    };
    let has_dead_letter_stream = selector & 0x80 != 0;
    let record_version = if selector & 0x40 != 0 {
        tern_protocol::RECORD_VERSION_2
    } else {
        tern_protocol::RECORD_VERSION
    };
    if let Ok(json) = decompress(encoding, body) {
        if let Ok(batch) = parse(&json) {
            for event in &batch.events {
                let _ = event_problem(event);
                // Properties kept as their text (canonical) or parsed, a record holds the bytes
                // the wire type's serialization writes.
                let mut written = Vec::new();
                if event.write_properties(&mut written).is_ok() {
                    let properties = event.to_event().properties;
                    assert_eq!(written, serde_json::to_vec(&properties).unwrap_or_default());
                }
            }
            // A fixed arrival time keeps runs reproducible.
            let received_at =
                chrono::DateTime::from_timestamp_millis(1_795_000_000_000).unwrap_or_default();
            let upload = Upload {
                app_id: "fuzz-app",
                received_at,
                collector_id: "fuzz-collector",
                record_version,
            };
            if let Ok(prepared) = prepare(&batch, &upload, has_dead_letter_stream) {
                assert_eq!(
                    prepared.records.len() + prepared.refused.len(),
                    batch.events.len()
                );
                assert_eq!(prepared.gap_records.len(), batch.gaps.len());
                // v2: a batch record exactly when events join on it.
                assert_eq!(
                    prepared.batch_record.is_some(),
                    record_version == tern_protocol::RECORD_VERSION_2
                        && !prepared.records.is_empty()
                );
            }
        }
    }
});
