//! From request body to a checked [`Batch`]: decompress within limits, parse, validate.

use std::cell::RefCell;
use std::io::Read;

use tern_protocol::limits::{
    event_fields_problem, properties_nesting_problem, properties_size_problem,
};
use tern_protocol::limits::{
    gap_problem, MAX_DECOMPRESSED_BYTES, MAX_EVENTS_PER_BATCH, MAX_GAPS_PER_BATCH, MAX_ID_BYTES,
    MAX_JSON_DEPTH,
};
use tern_protocol::{Batch, Gap};

use crate::error::RequestError;
use crate::limits::{context_problem, MAX_CLOCK_ID_BYTES, MAX_SDK_FIELD_BYTES};

mod canonical;
mod event;
mod unknown;

pub use event::{DecodedEvent, EventFields, EventProperties, JsonStr, Properties, PropertyValue};

/// A batch as the collector parses it: its events' strings borrowed from the decompressed body.
pub type DecodedBatch<'a> = Batch<DecodedEvent<'a>>;

/// How the body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// zstd, what the SDK sends.
    Zstd,
    /// gzip, for clients without zstd.
    Gzip,
    /// None.
    Identity,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value (absent means identity).
    pub fn from_header(value: Option<&str>) -> Result<Self, RequestError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Self::Identity),
            Some("zstd") => Ok(Self::Zstd),
            Some("gzip") | Some("x-gzip") => Ok(Self::Gzip),
            Some(other) => Err(RequestError::UnsupportedEncoding(format!(
                "Content-Encoding {other:?} is not supported; use zstd, gzip or none"
            ))),
        }
    }
}

/// Decompresses `body`, refusing to produce more than [`MAX_DECOMPRESSED_BYTES`]: a
/// decompression bomb is stopped at the limit, never allocated whole.
pub fn decompress(encoding: Encoding, body: &[u8]) -> Result<Vec<u8>, RequestError> {
    if encoding == Encoding::Identity {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let read = decompress_into(encoding, body, MAX_DECOMPRESSED_BYTES as u64, &mut out)?;
    if read as u64 > MAX_DECOMPRESSED_BYTES as u64 {
        return Err(RequestError::PayloadTooLarge(format!(
            "the decompressed body is over the limit of {MAX_DECOMPRESSED_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// The decompressed body if it is at most `limit` bytes and decodes without error, else `None`
/// (then [`decompress`] gives the answer). For bodies small enough to decode where they
/// arrived: the work is bounded by `limit` whatever the body claims.
pub fn decompress_small(encoding: Encoding, body: &[u8], limit: usize) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Identity => return (body.len() <= limit).then(|| body.to_vec()),
        Encoding::Zstd => match zstd::zstd_safe::get_frame_content_size(body) {
            Ok(Some(size)) if size <= limit as u64 => {}
            // Larger, or not told in the frame header (the SDK tells it): not small.
            _ => return None,
        },
        Encoding::Gzip => {}
    }
    let mut out = Vec::new();
    match decompress_into(encoding, body, limit as u64, &mut out) {
        Ok(read) if read <= limit => Some(out),
        _ => None,
    }
}

/// Decompresses `body` into `out`, reading at most one byte past `limit`; the bytes read.
fn decompress_into(
    encoding: Encoding,
    body: &[u8],
    limit: u64,
    out: &mut Vec<u8>,
) -> Result<usize, RequestError> {
    let malformed = |what: &str, e: std::io::Error| RequestError::Malformed {
        code: "malformed_encoding",
        message: format!("the body is not valid {what}: {e}"),
    };
    match encoding {
        Encoding::Identity => {
            out.extend_from_slice(body);
            Ok(body.len())
        }
        Encoding::Zstd => {
            // The frame header's content size (the SDK writes it) sizes the buffer at once,
            // within the limit: a false one only misjudges the first allocation.
            if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(body) {
                out.reserve(usize::try_from(size.min(limit)).unwrap_or(0));
            }
            ZSTD_CONTEXT
                .with(|cell| {
                    let Ok(mut slot) = cell.try_borrow_mut() else {
                        return zstd_fresh(body, limit, out);
                    };
                    if slot.is_none() {
                        *slot = zstd::zstd_safe::DCtx::try_create();
                    }
                    match slot.as_mut() {
                        Some(context) => zstd::stream::read::Decoder::with_context(body, context)
                            .take(limit + 1)
                            .read_to_end(out),
                        None => zstd_fresh(body, limit, out),
                    }
                })
                .map_err(|e| malformed("zstd", e))
        }
        Encoding::Gzip => flate2::read::GzDecoder::new(body)
            .take(limit + 1)
            .read_to_end(out)
            .map_err(|e| malformed("gzip", e)),
    }
}

thread_local! {
    /// One zstd decompression context per decoding thread, reused (its session is reset by
    /// `Decoder::with_context`): creating one per upload was ~1 % of the collector's CPU at
    /// saturation (docs/BENCHMARKS.md, collector profile).
    static ZSTD_CONTEXT: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// zstd with a context of its own, when the thread's cannot be had.
fn zstd_fresh(body: &[u8], limit: u64, out: &mut Vec<u8>) -> std::io::Result<usize> {
    zstd::stream::read::Decoder::with_buffer(body).and_then(|d| d.take(limit + 1).read_to_end(out))
}

/// Where an unknown field was found: the `location` label of `unknown_fields_total`.
pub const UNKNOWN_FIELD_LOCATIONS: [&str; 5] = ["batch", "event", "context", "sdk", "gap"];

/// Parses and checks the batch as a whole. A batch that breaks these rules is refused (400);
/// single events are checked by [`event_problem`]. Unknown fields are ignored (tolerated
/// within v1). The events borrow from `json` (see [`DecodedEvent`]).
pub fn parse(json: &[u8]) -> Result<DecodedBatch<'_>, RequestError> {
    parse_noting_unknown_fields(json, |_| {})
}

/// [`parse`], calling `on_unknown_field` with the location (one of
/// [`UNKNOWN_FIELD_LOCATIONS`]) of every field it ignored.
pub fn parse_noting_unknown_fields(
    json: &[u8],
    mut on_unknown_field: impl FnMut(&'static str),
) -> Result<DecodedBatch<'_>, RequestError> {
    if let Some(depth) = nesting_over(json, MAX_JSON_DEPTH) {
        return Err(RequestError::Malformed {
            code: "json_too_deep",
            message: format!(
                "JSON nesting reaches depth {depth}, over the limit of {MAX_JSON_DEPTH}"
            ),
        });
    }
    let malformed = |e: serde_json::Error| RequestError::Malformed {
        code: "malformed_json",
        message: format!("the body is not a valid v1 batch: {e}"),
    };
    // The unknown fields the parse notes are passed on once it succeeds; a body it refuses is
    // read again below, which notes them itself.
    let mut unknown = Vec::new();
    // Checked as UTF-8 once, the body is parsed as a `str`, and serde_json checks no string
    // again (each was a call of its own: 3 % of the collector's CPU).
    let parsed = match std::str::from_utf8(json) {
        Ok(text) => parse_batch(serde_json::Deserializer::from_str(text), &mut |location| {
            unknown.push(location)
        })
        .ok(),
        Err(_) => None,
    };
    let batch = match parsed {
        Some(batch) => {
            unknown.into_iter().for_each(&mut on_unknown_field);
            batch
        }
        // Refused: read again as the wire type, whose parse answers with the message (and the
        // position in the body) it always gave; `EventProperties` reads properties apart, so
        // its message would point within them. A body that is not UTF-8 comes straight here:
        // the byte parser finds the first bad string. Should this parse succeed where the
        // other did not, its batch is used.
        None => parse_batch::<tern_protocol::Event, _>(
            serde_json::Deserializer::from_slice(json),
            &mut on_unknown_field,
        )
        .map_err(malformed)
        .map(owned_batch)?,
    };
    let bad = |message: String| RequestError::Malformed {
        code: "invalid_batch",
        message,
    };
    if batch.events.is_empty() && batch.gaps.is_empty() {
        return Err(bad("events: the batch has no events and no gaps".into()));
    }
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(bad(format!(
            "events: {} events, over the limit of {MAX_EVENTS_PER_BATCH}",
            batch.events.len()
        )));
    }
    if batch.install_id.is_empty() || batch.install_id.len() > MAX_ID_BYTES {
        return Err(bad(format!(
            "install_id: must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    if let Some(problem) = copied_fields_problem(&batch) {
        return Err(bad(problem));
    }
    if let Some(problem) = gaps_problem(&batch.gaps) {
        return Err(bad(problem));
    }
    Ok(batch)
}

/// Why the batch's gap reports break the format, naming the field, if they do: each becomes a
/// record that consumers count `seq`s from, so a malformed one must never reach the stream.
fn gaps_problem(gaps: &[Gap]) -> Option<String> {
    if gaps.len() > MAX_GAPS_PER_BATCH {
        return Some(format!(
            "gaps: {} gaps, over the limit of {MAX_GAPS_PER_BATCH}",
            gaps.len()
        ));
    }
    gaps.iter().enumerate().find_map(|(i, gap)| {
        gap_problem(&gap.reason, &gap.ranges, gap.count).map(|p| format!("gaps[{i}].{p}"))
    })
}

/// Why the fields copied into every record (context, SDK) or the clock ids are too large, if
/// they are: refused whole, before any record is built, since a few KB of zstd would otherwise
/// become up to 500 copies.
fn copied_fields_problem<E: EventFields>(batch: &Batch<E>) -> Option<String> {
    if let Some(problem) = context_problem(&batch.context) {
        return Some(problem);
    }
    for (field, value) in [
        ("sdk.name", &batch.sdk.name),
        ("sdk.version", &batch.sdk.version),
    ] {
        if value.len() > MAX_SDK_FIELD_BYTES {
            return Some(format!(
                "{field}: {} bytes, over the limit of {MAX_SDK_FIELD_BYTES}",
                value.len()
            ));
        }
    }
    let clock_ids = std::iter::once(("clock_id", batch.clock_id.as_deref())).chain(
        batch
            .events
            .iter()
            .map(|e| ("events[].clock_id", e.clock_id())),
    );
    for (field, clock_id) in clock_ids {
        if let Some(id) = clock_id.filter(|id| id.len() > MAX_CLOCK_ID_BYTES) {
            return Some(format!(
                "{field}: {} bytes, over the limit of {MAX_CLOCK_ID_BYTES}",
                id.len()
            ));
        }
    }
    None
}

/// The batch, and nothing after it (trailing data is malformed, as `serde_json::from_slice` has
/// it); ignored fields go to `on_unknown_field`.
fn parse_batch<'a, E: serde::Deserialize<'a>, R: serde_json::de::Read<'a>>(
    mut deserializer: serde_json::Deserializer<R>,
    on_unknown_field: &mut impl FnMut(&'static str),
) -> Result<Batch<E>, serde_json::Error> {
    let batch = unknown::deserialize(&mut deserializer, on_unknown_field)?;
    deserializer.end()?;
    Ok(batch)
}

/// A batch of the wire type as the collector's, its events owned.
fn owned_batch(batch: Batch) -> DecodedBatch<'static> {
    Batch {
        batch_id: batch.batch_id,
        install_id: batch.install_id,
        sent_at: batch.sent_at,
        sent_uptime_ms: batch.sent_uptime_ms,
        clock_id: batch.clock_id,
        sdk: batch.sdk,
        context: batch.context,
        events: batch.events.into_iter().map(DecodedEvent::from).collect(),
        dropped: batch.dropped,
        gaps: batch.gaps,
    }
}

/// The depth at which `json` first nests deeper than `max` (objects and arrays), if it does.
/// A linear scan that ignores brackets inside strings; run before parsing, so deep nesting is a
/// clear 400 and never deep recursion.
fn nesting_over(json: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'"' => {
                // Most of a batch is strings: jump from quote or backslash to the next (SIMD),
                // not byte by byte. An unterminated string ends the scan: nothing after it nests.
                i += 1;
                loop {
                    let at = i + memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
                    if json[at] == b'"' {
                        i = at;
                        break;
                    }
                    i = at + 2;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Why one event cannot go to the stream, or `None`, as `(code, message)`: the checks of
/// [`tern_protocol::limits::event_problem`], in the same order with the same answers, on either
/// event type.
pub fn event_problem<E: EventFields>(event: &E) -> Option<(&'static str, String)> {
    event_problem_but_properties_size(event).or_else(|| {
        let mut properties = Vec::new();
        let size = match event.write_properties(&mut properties) {
            Ok(()) => properties.len(),
            Err(_) => usize::MAX,
        };
        properties_size_problem(size).map(|p| ("invalid_properties", p))
    })
}

/// [`event_problem`] but for the serialized size of `properties` (see
/// [`tern_protocol::limits::event_problem_but_properties_size`]).
pub fn event_problem_but_properties_size<E: EventFields>(
    event: &E,
) -> Option<(&'static str, String)> {
    event_fields_problem(
        event.name(),
        event.seq(),
        event.user_id(),
        event.session_id(),
    )
    .or_else(|| {
        properties_nesting_problem(event.properties_depth()).map(|p| ("invalid_properties", p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::limits::MAX_RANGES_PER_GAP;

    #[test]
    fn a_zstd_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; MAX_DECOMPRESSED_BYTES * 4];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = decompress(Encoding::Zstd, &bomb).unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
    }

    /// The thread's reused zstd context starts clean after a bomb, a truncated frame and
    /// garbage: the next body decodes to itself alone.
    #[test]
    fn the_reused_zstd_context_forgets_every_earlier_body() {
        let body = br#"{"hello":"world"}"#.repeat(100);
        let frame = zstd::bulk::compress(&body, 3).unwrap();
        let bomb = zstd::bulk::compress(&vec![7u8; MAX_DECOMPRESSED_BYTES * 2], 19).unwrap();
        let other = zstd::bulk::compress(b"other", 3).unwrap();
        for before in [
            &bomb[..],
            &frame[..frame.len() / 2],
            b"not zstd",
            &other[..],
        ] {
            let _ = decompress(Encoding::Zstd, before);
            assert_eq!(decompress(Encoding::Zstd, &frame).unwrap(), body);
        }
        // Two frames back to back decode as their concatenation, as before the reuse.
        let two = [frame.clone(), other].concat();
        assert_eq!(
            decompress(Encoding::Zstd, &two).unwrap(),
            [body, b"other".to_vec()].concat()
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert_eq!(
            decompress(Encoding::Zstd, b"not zstd").unwrap_err().code(),
            "malformed_encoding"
        );
        assert_eq!(
            decompress(Encoding::Gzip, b"not gzip").unwrap_err().code(),
            "malformed_encoding"
        );
        assert_eq!(parse(b"{").unwrap_err().code(), "malformed_json");
        assert_eq!(parse(b"[]").unwrap_err().code(), "malformed_json");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(deep.as_bytes()).unwrap_err().code(), "json_too_deep");
        // Brackets inside strings do not count.
        assert_eq!(
            nesting_over(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"["}"#, 3),
            None
        );
        assert_eq!(nesting_over(br#"{"a":{"b":{"c":{}}}}"#, 3), Some(4));
    }

    /// The byte-by-byte scan `nesting_over` replaced, as the reference it must agree with.
    fn nesting_over_bytewise(json: &[u8], max: usize) -> Option<usize> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in json {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max {
                        return Some(depth);
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        None
    }

    #[test]
    fn the_nesting_scan_agrees_with_the_bytewise_scan() {
        // Strings of the scan's special bytes, escapes at the very end and unterminated strings
        // included: every input of up to 6 of them, then long pseudo-random ones.
        let alphabet = *b"\"\\{[}]a";
        let mut checked = 0;
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let input: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[n % alphabet.len()];
                        n /= alphabet.len();
                        b
                    })
                    .collect();
                for max in 0..3 {
                    assert_eq!(
                        nesting_over(&input, max),
                        nesting_over_bytewise(&input, max),
                        "{input:?}"
                    );
                }
                checked += 1;
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2_000 {
            let input: Vec<u8> = (0..200)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            for max in [2, 8] {
                assert_eq!(
                    nesting_over(&input, max),
                    nesting_over_bytewise(&input, max)
                );
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn unknown_encodings_are_refused() {
        assert!(Encoding::from_header(Some("br")).is_err());
        assert_eq!(Encoding::from_header(Some("ZSTD")), Ok(Encoding::Zstd));
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
    }

    fn batch_json(mutate: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut batch = serde_json::json!({
            "batch_id": uuid::Uuid::now_v7(),
            "install_id": "i",
            "sent_at": "2026-11-24T10:00:00.000Z",
            "clock_id": "c".repeat(32),
            "sdk": { "name": "tern-sdk-kotlin", "version": "1.2.3" },
            "context": { "app": { "id": "com.example" }, "locale": "de-CH" },
            "events": [{
                "event_id": uuid::Uuid::now_v7(), "seq": 1, "name": "ok",
                "created_at": "2026-11-24T10:00:00.000Z", "clock_id": "c".repeat(32)
            }]
        });
        mutate(&mut batch);
        serde_json::to_vec(&batch).unwrap()
    }

    #[test]
    fn unknown_fields_are_ignored_and_located() {
        let mut seen = Vec::new();
        let json = batch_json(|b| {
            b["surprise"] = 1.into();
            b["events"][0]["extra"] = true.into();
            b["context"]["app"]["flavor"] = "x".into();
            b["sdk"]["build"] = "y".into();
        });
        let batch = parse_noting_unknown_fields(&json, |location| seen.push(location)).unwrap();
        assert_eq!(batch.events.len(), 1);
        seen.sort_unstable();
        assert_eq!(seen, ["batch", "context", "event", "sdk"]);
        // Trailing data is still malformed.
        let mut trailing = batch_json(|_| {});
        trailing.extend_from_slice(b" {}");
        assert_eq!(parse(&trailing).unwrap_err().code(), "malformed_json");
    }

    /// `serde_ignored`'s path mapped to a location, as the collector counted before
    /// `unknown.rs`: only the first segment is looked at.
    fn location_from_path(path: &str) -> &'static str {
        match path.split_once('.').map(|(top, _)| top) {
            Some("events") => "event",
            Some("context") => "context",
            Some("sdk") => "sdk",
            Some("gaps") => "gap",
            _ => "batch",
        }
    }

    /// The batch parsed with `serde_ignored` (the counting before `unknown.rs`): the batch's
    /// debug form or the error's message, and the locations of the ignored fields, sorted.
    fn parsed_with_serde_ignored(json: &[u8]) -> (Result<String, String>, Vec<&'static str>) {
        let mut seen = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(json);
        let parsed: Result<DecodedBatch<'_>, _> = serde_ignored::deserialize(&mut de, |path| {
            seen.push(location_from_path(&path.to_string()))
        })
        .and_then(|b| de.end().map(|()| b));
        seen.sort_unstable();
        (
            parsed.map(|b| format!("{b:?}")).map_err(|e| e.to_string()),
            seen,
        )
    }

    fn parsed_with_unknown(json: &[u8]) -> (Result<String, String>, Vec<&'static str>) {
        let mut seen = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(json);
        let parsed: Result<DecodedBatch<'_>, _> =
            unknown::deserialize(&mut de, &mut |location| seen.push(location))
                .and_then(|b| de.end().map(|()| b));
        seen.sort_unstable();
        (
            parsed.map(|b| format!("{b:?}")).map_err(|e| e.to_string()),
            seen,
        )
    }

    /// Every object of `value`, as JSON pointers (the batch's own, its parts', its events',
    /// their properties' and nested values').
    fn object_pointers(value: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                out.push(at.clone());
                for (k, v) in map {
                    object_pointers(v, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    object_pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn unknown_fields_are_located_as_serde_ignored_located_them() {
        let gap = serde_json::json!({
            "gap_id": uuid::Uuid::now_v7(), "reason": "quarantine", "ranges": [[3, 4]],
            "count": 2, "at": "2026-11-24T10:00:00.000Z"
        });
        let base = batch_json(|b| {
            b["gaps"] = serde_json::json!([gap]);
            b["dropped"] = serde_json::json!({ "buffer_full": 2 });
            b["context"]["device"] = serde_json::json!({ "model": "m" });
            b["context"]["os"] = serde_json::json!({ "name": "Android" });
            b["events"][0]["properties"] = serde_json::json!({ "a": { "b": [1, { "c": null }] } });
            let second = b["events"][0].clone();
            b["events"].as_array_mut().unwrap().push(second);
        });
        let base: serde_json::Value = serde_json::from_slice(&base).unwrap();
        let mut objects = Vec::new();
        object_pointers(&base, String::new(), &mut objects);
        assert!(objects.len() > 10, "{objects:?}");
        // Unknown values of every kind, nested unknown objects among them.
        let extras = [
            serde_json::json!(1),
            serde_json::json!("x"),
            serde_json::json!(null),
            serde_json::json!({ "deeper": { "still": [1, { "x": 2 }] } }),
            serde_json::json!([{ "in": "array" }]),
        ];
        // Each object alone, then pairs of them, an unknown field added to each; and a
        // deterministic walk that adds several at once.
        let mut cases = Vec::new();
        for (i, at) in objects.iter().enumerate() {
            let mut b = base.clone();
            b.pointer_mut(at).unwrap()[format!("unknown_{i}")] = extras[i % extras.len()].clone();
            cases.push(b);
            for (j, other) in objects.iter().enumerate().skip(i + 1) {
                let mut b = base.clone();
                b.pointer_mut(at).unwrap()["u\\\"1"] = extras[j % extras.len()].clone();
                b.pointer_mut(other).unwrap()["u2"] = extras[i % extras.len()].clone();
                cases.push(b);
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200 {
            let mut b = base.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = &objects[(state % objects.len() as u64) as usize];
                b.pointer_mut(at).unwrap()[format!("r{}", state % 97)] =
                    extras[(state % 5) as usize].clone();
            }
            cases.push(b);
        }
        let (mut parsed, mut located) = (0, 0);
        for case in &cases {
            // (A value added to `dropped` or `properties` is no unknown field: it is refused
            // or kept, the same way by both.)
            let json = serde_json::to_vec(case).unwrap();
            let expected = parsed_with_serde_ignored(&json);
            assert_eq!(
                parsed_with_unknown(&json),
                expected,
                "{}",
                String::from_utf8_lossy(&json)
            );
            parsed += usize::from(expected.0.is_ok());
            located += expected.1.len();
        }
        assert!(
            parsed > cases.len() / 2 && located > cases.len(),
            "{parsed} {located}"
        );
        // Malformed bodies get the same error, wherever it is.
        let good = serde_json::to_vec(&cases[3]).unwrap();
        for cut in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[cut] = b'}';
            assert_eq!(
                parsed_with_unknown(&bad).0,
                parsed_with_serde_ignored(&bad).0
            );
        }
    }

    #[test]
    fn gaps_are_checked_naming_the_field() {
        let gap = |reason: &str, ranges: serde_json::Value, count: u64| {
            serde_json::json!({
                "gap_id": uuid::Uuid::now_v7(), "reason": reason, "ranges": ranges,
                "count": count, "at": "2026-11-24T10:00:00.000Z"
            })
        };
        // A gap-only batch is valid.
        let only_gaps = batch_json(|b| {
            b["events"] = serde_json::json!([]);
            b["gaps"] = serde_json::json!([gap(
                "cap_count",
                serde_json::json!([{"first": 1, "last": 3}, {"first": 7, "last": 7}]),
                4
            )]);
        });
        assert_eq!(parse(&only_gaps).unwrap().gaps[0].count, 4);
        let empty = batch_json(|b| b["events"] = serde_json::json!([]));
        assert_eq!(parse(&empty).unwrap_err().code(), "invalid_batch");
        let too_many: Vec<_> = (0..=MAX_GAPS_PER_BATCH)
            .map(|_| gap("opt_out", serde_json::json!([{"first": 1, "last": 1}]), 1))
            .collect();
        let many_ranges: Vec<_> = (1..=MAX_RANGES_PER_GAP as u64 + 1)
            .map(|s| serde_json::json!({"first": 2 * s, "last": 2 * s}))
            .collect();
        let cases = [
            ("gaps:", serde_json::json!(too_many)),
            (
                "gaps[0].reason",
                serde_json::json!([gap("lost", serde_json::json!([{"first": 1, "last": 1}]), 1)]),
            ),
            (
                "gaps[0].ranges:",
                serde_json::json!([gap("cap_age", serde_json::json!([]), 0)]),
            ),
            (
                "gaps[0].ranges:",
                serde_json::json!([gap("cap_age", serde_json::json!(many_ranges), 257)]),
            ),
            (
                "gaps[0].ranges[0]",
                serde_json::json!([gap(
                    "cap_age",
                    serde_json::json!([{"first": 0, "last": 2}]),
                    3
                )]),
            ),
            (
                "gaps[0].ranges[0]",
                serde_json::json!([gap(
                    "cap_age",
                    serde_json::json!([{"first": 5, "last": 2}]),
                    0
                )]),
            ),
            (
                "gaps[0].ranges[1]",
                serde_json::json!([gap(
                    "cap_age",
                    serde_json::json!([{"first": 1, "last": 5}, {"first": 5, "last": 6}]),
                    6
                )]),
            ),
            (
                "gaps[0].ranges[1]",
                serde_json::json!([gap(
                    "cap_age",
                    serde_json::json!([{"first": 8, "last": 9}, {"first": 1, "last": 2}]),
                    4
                )]),
            ),
            (
                "gaps[0].count",
                serde_json::json!([gap(
                    "quarantine",
                    serde_json::json!([{"first": 1, "last": 5}]),
                    4
                )]),
            ),
        ];
        for (field, gaps) in cases {
            let json = batch_json(|b| b["gaps"] = gaps);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), "invalid_batch", "{field}");
            assert!(err.to_string().starts_with(field), "{field}: {err}");
        }
    }

    /// Fields copied into every record, and clock ids, are bounded at parse time (400 with the
    /// field's name): a small zstd body must not turn into 500 copies of a large context.
    #[test]
    fn oversized_copied_fields_and_clock_ids_are_refused_naming_the_field() {
        assert!(parse(&batch_json(|_| {})).is_ok());
        type Mutation = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: [(&str, Mutation); 5] = [
            (
                "context",
                Box::new(|b| {
                    b["context"]["device"]["model"] =
                        "m".repeat(crate::limits::MAX_CONTEXT_BYTES).into()
                }),
            ),
            (
                "sdk.name",
                Box::new(|b| b["sdk"]["name"] = "n".repeat(MAX_SDK_FIELD_BYTES + 1).into()),
            ),
            (
                "sdk.version",
                Box::new(|b| b["sdk"]["version"] = "v".repeat(MAX_SDK_FIELD_BYTES + 1).into()),
            ),
            (
                "clock_id",
                Box::new(|b| b["clock_id"] = "c".repeat(MAX_CLOCK_ID_BYTES + 1).into()),
            ),
            (
                "events[].clock_id",
                Box::new(|b| {
                    b["events"][0]["clock_id"] = "c".repeat(MAX_CLOCK_ID_BYTES + 1).into()
                }),
            ),
        ];
        for (field, mutate) in cases {
            let err = parse(&batch_json(mutate)).unwrap_err();
            assert_eq!(err.code(), "invalid_batch", "{field}");
            assert!(err.to_string().starts_with(field), "{field}: {err}");
        }
    }
}
