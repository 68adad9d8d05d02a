//! Fuzzes the collector's batch decoder: decompression within limits, the JSON depth check,
//! parsing into the wire format and per-event validation. Any panic, overflow or runaway
//! allocation is a finding. The first input byte picks the Content-Encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_collector::decode::{decompress, event_problem, parse, Encoding};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => Encoding::Zstd,
        1 => Encoding::Gzip,
        _ => Encoding::Identity,
    };
    if let Ok(json) = decompress(encoding, body) {
        if let Ok(batch) = parse(&json) {
            for event in &batch.events {
                let _ = event_problem(event);
            }
        }
    }
});
