//! From request body to a checked [`Batch`]: decompress within limits, parse, validate.

use std::io::Read;

use tern_protocol::limits::{
    MAX_DECOMPRESSED_BYTES, MAX_EVENTS_PER_BATCH, MAX_ID_BYTES, MAX_JSON_DEPTH,
};
use tern_protocol::Batch;

use crate::error::RequestError;
use crate::limits::{context_problem, MAX_CLOCK_ID_BYTES, MAX_SDK_FIELD_BYTES};

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
    let malformed = |what: &str, e: std::io::Error| RequestError::Malformed {
        code: "malformed_encoding",
        message: format!("the body is not valid {what}: {e}"),
    };
    let limit = MAX_DECOMPRESSED_BYTES as u64;
    let mut out = Vec::new();
    let read = match encoding {
        Encoding::Identity => return Ok(body.to_vec()),
        Encoding::Zstd => zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(limit + 1).read_to_end(&mut out))
            .map_err(|e| malformed("zstd", e)),
        Encoding::Gzip => flate2::read::GzDecoder::new(body)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| malformed("gzip", e)),
    }?;
    if read as u64 > limit {
        return Err(RequestError::PayloadTooLarge(format!(
            "the decompressed body is over the limit of {MAX_DECOMPRESSED_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Parses and checks the batch as a whole. A batch that breaks these rules is refused (400);
/// single events are checked by [`event_problem`].
pub fn parse(json: &[u8]) -> Result<Batch, RequestError> {
    if let Some(depth) = nesting_over(json, MAX_JSON_DEPTH) {
        return Err(RequestError::Malformed {
            code: "json_too_deep",
            message: format!(
                "JSON nesting reaches depth {depth}, over the limit of {MAX_JSON_DEPTH}"
            ),
        });
    }
    let batch: Batch = serde_json::from_slice(json).map_err(|e| RequestError::Malformed {
        code: "malformed_json",
        message: format!("the body is not a valid v1 batch: {e}"),
    })?;
    let bad = |message: String| RequestError::Malformed {
        code: "invalid_batch",
        message,
    };
    if batch.events.is_empty() {
        return Err(bad("events: the batch has no events".into()));
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
    Ok(batch)
}

/// Why the fields copied into every record (context, SDK) or the clock ids are too large, if
/// they are: refused whole, before any record is built, since a few KB of zstd would otherwise
/// become up to 500 copies.
fn copied_fields_problem(batch: &Batch) -> Option<String> {
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
            .map(|e| ("events[].clock_id", e.clock_id.as_deref())),
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

/// The depth at which `json` first nests deeper than `max` (objects and arrays), if it does.
/// A linear scan that ignores brackets inside strings; run before parsing, so deep nesting is a
/// clear 400 and never deep recursion.
fn nesting_over(json: &[u8], max: usize) -> Option<usize> {
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

pub use tern_protocol::limits::event_problem;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zstd_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; MAX_DECOMPRESSED_BYTES * 4];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = decompress(Encoding::Zstd, &bomb).unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
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
