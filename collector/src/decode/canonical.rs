//! Is an event's `properties` text already what serializing it again would write?
//!
//! A record holds an event's properties as `serde_json` writes the `Map<String, Value>` parsed
//! from the wire: keys in byte order, the last of duplicate keys kept, no whitespace, numbers
//! and strings in serde_json's own form. The SDKs send them in just that form (they serialize
//! such a map), so for nearly every event the parse into a tree and the serialization back give
//! the bytes that came in, at a fifth of the collector's CPU (docs/BENCHMARKS.md, *Ninth
//! round*). [`depth`] recognises that text in one pass, without allocating, and the collector
//! then copies it as it is. Whatever it does not accept is parsed and serialized as before, so
//! a record's bytes never depend on the path taken (the tests below and the fuzz target hold
//! both paths to the same bytes).

use tern_protocol::limits::MAX_JSON_DEPTH;

use super::event::RAW_VALUE_TOKEN;

/// The nesting depth of `json` (the object itself is depth 1, as in
/// [`tern_protocol::limits::properties_depth`]) if it is a JSON object written exactly as
/// serde_json writes the `Map<String, Value>` it parses to; `None` for anything else, JSON or
/// not.
pub fn depth(json: &str) -> Option<usize> {
    let mut scan = Scan {
        bytes: json.as_bytes(),
        at: 0,
    };
    if scan.peek()? != b'{' {
        return None;
    }
    let depth = scan.value(MAX_JSON_DEPTH)?;
    (scan.at == scan.bytes.len()).then_some(depth)
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    /// One value in canonical form, and its depth (a scalar 0). `levels` bounds the recursion
    /// (the body's nesting was checked before the parse; this holds on any input).
    fn value(&mut self, levels: usize) -> Option<usize> {
        match self.peek()? {
            b'{' => self.object(levels.checked_sub(1)?),
            b'[' => self.array(levels.checked_sub(1)?),
            b'"' => self.string().map(|_| 0),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// Keys strictly ascending in byte order (sorted as a `BTreeMap<String, _>` sorts, none
    /// repeated), without escapes (their raw text would not sort as their value) and without
    /// serde_json's raw-value marker (which the parse treats apart).
    fn object(&mut self, levels: usize) -> Option<usize> {
        self.at += 1;
        if self.eat(b'}') {
            return Some(1);
        }
        let mut previous: Option<&[u8]> = None;
        let mut deepest = 0;
        loop {
            let (key, escaped) = self.string()?;
            if escaped
                || key == RAW_VALUE_TOKEN.as_bytes()
                || previous.is_some_and(|previous| previous >= key)
            {
                return None;
            }
            previous = Some(key);
            if !self.eat(b':') {
                return None;
            }
            deepest = deepest.max(self.value(levels)?);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(1 + deepest);
            }
        }
    }

    fn array(&mut self, levels: usize) -> Option<usize> {
        self.at += 1;
        if self.eat(b']') {
            return Some(1);
        }
        let mut deepest = 0;
        loop {
            deepest = deepest.max(self.value(levels)?);
            if !self.eat(b',') {
                return self.eat(b']').then_some(1 + deepest);
            }
        }
    }

    /// A string with only the escapes serde_json writes; its raw content (between the quotes)
    /// and whether it holds an escape.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => {
                    let content = &self.bytes[start..self.at];
                    self.at += 1;
                    return Some((content, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.at += written_escape_len(self.bytes.get(self.at..)?)?;
                }
                // Not JSON: control characters are escaped in a JSON string.
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<usize> {
        let found = self.bytes.get(self.at..)?.starts_with(word);
        self.at += word.len();
        found.then_some(0)
    }

    /// A number as serde_json writes the one it parses from the text: an integer that fits
    /// its `u64` (or, negative, its `i64`; `-0` becomes `-0.0`), or a float in the shortest
    /// form serde_json writes, checked by parsing it and writing it as serde_json does.
    fn number(&mut self) -> Option<usize> {
        let start = self.at;
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut float = false;
        if self.eat(b'.') {
            float = true;
            self.at_least_one_digit()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            float = true;
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.at_least_one_digit()?;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        let canonical = if float {
            serde_json::from_str::<f64>(text).is_ok_and(|value| written_float(value) == text)
        } else if text.starts_with('-') {
            text != "-0" && text.parse::<i64>().is_ok()
        } else {
            text.parse::<u64>().is_ok()
        };
        canonical.then_some(0)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// `value` as serde_json writes it (its own float writer, whose form has changed between its
/// versions: an exponent's `+`), into a buffer on the stack.
fn written_float(value: f64) -> FloatText {
    let mut text = FloatText {
        bytes: [0; FLOAT_TEXT_BYTES],
        len: 0,
    };
    let mut rest = &mut text.bytes[..];
    // A finite f64 takes at most 24 bytes; were it longer, the write fails and the number is
    // not taken as canonical.
    if serde_json::to_writer(&mut rest, &value).is_ok() {
        text.len = FLOAT_TEXT_BYTES - rest.len();
    }
    text
}

/// Room for any f64 serde_json writes (`-2.2250738585072014e-308` is 24 bytes).
const FLOAT_TEXT_BYTES: usize = 32;

struct FloatText {
    bytes: [u8; FLOAT_TEXT_BYTES],
    len: usize,
}

impl PartialEq<&str> for FloatText {
    fn eq(&self, other: &&str) -> bool {
        self.len > 0 && &self.bytes[..self.len] == other.as_bytes()
    }
}

/// The length of the escape at the start of `rest` (a backslash) if serde_json writes that
/// escape: `\"`, `\\`, the five short ones, and `\u00XX` in lower-case hex for the other
/// control characters. Any other (`\/`, `\u0041`, upper case, surrogates) it would write
/// differently.
fn written_escape_len(rest: &[u8]) -> Option<usize> {
    match rest.get(1)? {
        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => {
            let hex = rest.get(2..6)?;
            let lower_hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
            let value = u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()?;
            (hex.starts_with(b"00")
                && hex[2..].iter().all(lower_hex)
                && value < 0x20
                && !matches!(value, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d))
            .then_some(6)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Number, Value};
    use tern_protocol::limits::properties_depth;

    use super::*;

    /// A small xorshift generator: deterministic cases without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn string(rng: &mut Rng) -> String {
        const PIECES: [&str; 14] = [
            "a",
            "screen",
            "sku-01234",
            "é",
            "🦀",
            "\"",
            "\\",
            "\n",
            "\t",
            "\u{1}",
            "\u{1f}",
            "\u{7f}",
            "/",
            "$serde_json::private::RawValue",
        ];
        (0..rng.below(4))
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect()
    }

    fn number(rng: &mut Rng) -> Number {
        match rng.below(5) {
            0 => Number::from(rng.next()),
            1 => Number::from(-(rng.below(1_000_000) as i64)),
            2 => Number::from(i64::MIN),
            3 => Number::from_f64(rng.below(100_000) as f64 / 100.0 + 0.99).unwrap(),
            _ => Number::from_f64(f64::from_bits(rng.next() >> 2)).unwrap_or(Number::from(0)),
        }
    }

    fn value(rng: &mut Rng, levels: usize) -> Value {
        match rng.below(if levels == 0 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => Value::Number(number(rng)),
            3 => Value::String(string(rng)),
            4 => Value::Array((0..rng.below(4)).map(|_| value(rng, levels - 1)).collect()),
            _ => Value::Object(map(rng, levels - 1)),
        }
    }

    fn map(rng: &mut Rng, levels: usize) -> Map<String, Value> {
        (0..rng.below(6))
            .map(|_| (string(rng), value(rng, levels)))
            .collect()
    }

    /// What the collector writes for properties text, by the long way: parse, serialize.
    fn written(json: &str) -> Option<(String, usize)> {
        let map: Map<String, Value> = serde_json::from_str(json).ok()?;
        Some((serde_json::to_string(&map).unwrap(), properties_depth(&map)))
    }

    /// Whatever `depth` accepts, the parse reads, and writes back to the same bytes at the
    /// same depth: checked on serialized maps and on thousands of edits of them.
    #[test]
    fn accepted_text_is_exactly_what_serialization_writes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut accepted, mut refused) = (0, 0);
        const EDITS: [&str; 14] = [
            " ", "\"", "\\", "0", "-", ".", "e", "}", "]", ",", ":", "\\u0041", "\\/", "\u{2}",
        ];
        for _ in 0..3_000 {
            let map = map(&mut rng, 4);
            let json = serde_json::to_string(&map).unwrap();
            // Serialized maps are accepted, except where a key holds an escape or the marker.
            let plain_keys = !json.contains("\\") && !json.contains("$serde");
            // (And except a float serde_json's parse does not read back exactly, without its
            // `float_roundtrip` feature: then the long way writes other bytes.)
            match depth(&json) {
                Some(found) => assert_eq!(found, properties_depth(&map), "{json}"),
                None => assert!(
                    !plain_keys || written(&json).map(|w| w.0) != Some(json.clone()),
                    "refused {json}"
                ),
            }
            for _ in 0..4 {
                let mut edited = json.clone();
                let mut at = rng.below(edited.len() + 1);
                while !edited.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.below(3) {
                    0 => edited.insert_str(at, EDITS[rng.below(EDITS.len())]),
                    1 if at < edited.len() => {
                        let mut end = at + 1;
                        while !edited.is_char_boundary(end) {
                            end += 1;
                        }
                        edited.replace_range(at..end, "");
                    }
                    _ => {
                        let prefix = edited[..at].to_owned();
                        edited.insert_str(at, &prefix);
                    }
                }
                match depth(&edited) {
                    Some(found) => {
                        assert_eq!(written(&edited), Some((edited.clone(), found)), "{edited}");
                        accepted += 1;
                    }
                    None => refused += 1,
                }
            }
        }
        assert!(accepted > 500 && refused > 5_000, "{accepted} {refused}");
    }

    #[test]
    fn what_is_refused_and_why() {
        let cases: [(&str, Option<usize>); 32] = [
            (r#"{}"#, Some(1)),
            (r#"{"a":{"b":[1,{"c":null}]}}"#, Some(4)),
            (r#"{"a":[],"b":{}}"#, Some(2)),
            (
                r#"{"":0,"a":-1,"b":1.5,"c":-0.0,"d":1.5e+300,"e":"\"\\\n\u001f"}"#,
                Some(1),
            ),
            (r#"{"a":1.5e300}"#, None), // 1.5e+300
            (
                r#"{"i":18446744073709551615,"j":-9223372036854775808}"#,
                Some(1),
            ),
            (r#"{ "a":1}"#, None),      // whitespace
            (r#"{"b":1,"a":1}"#, None), // unsorted
            (r#"{"a":1,"a":2}"#, None), // repeated
            (r#"{"a\"":1}"#, None),     // escaped key
            (r#"{"a":{"$serde_json::private::RawValue":"1"}}"#, None),
            (r#"{"a":-0}"#, None),                   // -0.0 when written
            (r#"{"a":1.0e2}"#, None),                // 100.0
            (r#"{"a":1E5}"#, None),                  // 100000.0
            (r#"{"a":0.10}"#, None),                 // 0.1
            (r#"{"a":18446744073709551616}"#, None), // a float beyond u64
            (r#"{"a":-9223372036854775809}"#, None), // a float beyond i64
            (r#"{"a":1e400}"#, None),                // not a number serde_json reads
            (r#"{"a":01}"#, None),
            (r#"{"a":"\/"}"#, None),
            (r#"{"a":"\u0041"}"#, None),
            (r#"{"a":"\u001F"}"#, None),
            (r#"{"a":"\u000a"}"#, None),
            (r#"{"a":"\ud800"}"#, None),
            ("{\"a\":\"\u{1}\"}", None),
            (r#"{"a":tru}"#, None),
            (r#"{"a":1,}"#, None),
            (r#"{"a":1}x"#, None),
            (r#"[]"#, None),
            (r#"null"#, None),
            (r#"{"a":1"#, None),
            (r#"{"a":[1,]}"#, None),
        ];
        for (json, expected) in cases {
            assert_eq!(depth(json), expected, "{json}");
            if let Some(found) = expected {
                assert_eq!(written(json), Some((json.to_owned(), found)), "{json}");
            }
        }
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH * 2),
            "]".repeat(MAX_JSON_DEPTH * 2)
        );
        assert_eq!(depth(&format!(r#"{{"a":{deep}}}"#)), None);
    }
}
