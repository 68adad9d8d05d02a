//! Serialized size and nesting depth of JSON values, measured without serializing them.
//!
//! `track()` must refuse the properties that the collector would refuse
//! (`tern_protocol::limits::properties_problem`: at most 64 KiB serialized, 16 levels deep).
//! That function serializes the properties into a `Vec` to measure them, which was most of
//! `track()`'s cost on the calling thread. This walk counts the same bytes (strings escaped as
//! serde_json escapes them, numbers formatted as it formats them, compact separators) without
//! writing or allocating anything, and stops as soon as a limit is passed. A property test below
//! holds it to serde_json's own output; an event it finds over a limit is then worded by the
//! protocol's function.

use serde_json::{Map, Number, Value};

/// Whether `properties` serialize (compact, as serde_json writes them) to at most `max_bytes`
/// and nest at most `max_depth` levels (the object itself is level 1, as
/// `tern_protocol::limits` counts).
pub fn fits(properties: &Map<String, Value>, max_bytes: usize, max_depth: usize) -> bool {
    let mut walk = Walk::new(max_bytes);
    max_depth >= 1 && walk.object(properties, max_depth - 1).is_some()
}

/// Whether the properties parsed from the JSON text `json` certainly pass [`fits`]: `json` is a
/// JSON object, nested at most `max_depth` levels, and an upper bound of the bytes of the
/// compact form serde_json writes for the parsed value (what the collector measures, whatever
/// the text's own spacing, escapes or number spellings) is at most `max_bytes`. One pass over
/// the bytes, nothing allocated, no tree.
///
/// The bound is exact for strings (escapes counted as serde_json writes the decoded text back),
/// literals, structure and integers of up to 18 digits; a float, or a longer integer, counts
/// 24 bytes, the longest an `f64` prints (serde_json's parse of a float's text may land on a
/// neighbour of the value it was written from, whose shortest form is longer). A key repeated
/// within an object counts each time, where parsing keeps the last. So `false` does not mean
/// the collector would refuse the properties: the caller then parses them with serde_json and
/// measures exactly (and words any refusal). Text this scan takes is still parsed whole by
/// serde_json before it is stored (`RawValue`), which has the last word on its syntax.
pub fn json_object_fits(json: &str, max_bytes: usize, max_depth: usize) -> bool {
    let mut scan = Scan {
        bytes: json.as_bytes(),
        at: 0,
        walk: Walk::new(max_bytes),
    };
    scan.skip_space();
    scan.bytes.get(scan.at) == Some(&b'{') && scan.value(max_depth).is_some() && {
        scan.skip_space();
        scan.at == scan.bytes.len()
    }
}

/// The longest text an `f64` prints as (ryu's shortest form, sign and exponent included, e.g.
/// `-2.2250738585072014e-308`).
const MAX_F64_TEXT: usize = 24;

/// A scan of JSON text: the position, and the bytes still allowed.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    walk: Walk,
}

impl Scan<'_> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// The next byte after white space, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_space();
        self.next()
    }

    /// A value whose containers may nest `depth` more levels, itself included.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.next_token()? {
            open @ (b'{' | b'[') => {
                let depth = depth.checked_sub(1)?;
                let object = open == b'{';
                let close = if object { b'}' } else { b']' };
                self.walk.take(2)?;
                self.skip_space();
                if self.bytes.get(self.at) == Some(&close) {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    if object {
                        if self.next_token()? != b'"' {
                            return None;
                        }
                        self.string()?;
                        if self.next_token()? != b':' {
                            return None;
                        }
                        self.walk.take(1)?;
                    }
                    self.value(depth)?;
                    match self.next_token()? {
                        b',' => self.walk.take(1)?,
                        b if b == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'"' => self.string(),
            first @ (b't' | b'f' | b'n') => {
                let rest: &[u8] = match first {
                    b't' => b"rue",
                    b'f' => b"alse",
                    _ => b"ull",
                };
                let end = self.at + rest.len();
                (self.bytes.get(self.at..end)? == rest).then_some(())?;
                self.at = end;
                self.walk.take(1 + rest.len())
            }
            first @ (b'-' | b'0'..=b'9') => self.number(first),
            _ => None,
        }
    }

    /// A number (its first byte consumed), counted as serde_json prints what it parses.
    fn number(&mut self, first: u8) -> Option<()> {
        let start = self.at - 1;
        let int_first = if first == b'-' { self.next()? } else { first };
        let int_digits = match int_first {
            b'0' => 0,
            b'1'..=b'9' => 1 + self.digits(),
            _ => return None,
        };
        let mut integer = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            integer = false;
            if self.digits() == 0 {
                return None;
            }
        }
        let mut exponent_digits = 0;
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            integer = false;
            let negative = self.bytes.get(self.at) == Some(&b'-');
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            exponent_digits = self.digits();
            if exponent_digits == 0 {
                return None;
            }
            if negative {
                exponent_digits = 0;
            }
        }
        // Below 10^(200 + 99): far from f64's range, where serde_json finds a number out of
        // range (an error). Beyond, left to its parse, which words it.
        if int_digits > 200 || exponent_digits > 2 {
            return None;
        }
        let len = self.at - start;
        // Up to 18 digits an integer fits an i64 or u64 and prints as written ("-0" shorter).
        let digits = len - usize::from(first == b'-');
        self.walk.take(if integer && digits <= 18 {
            len
        } else {
            MAX_F64_TEXT
        })
    }

    /// Consumes ASCII digits; how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
        self.at - start
    }

    /// A string (its opening quote consumed), counted as serde_json writes its decoded text.
    fn string(&mut self) -> Option<()> {
        let mut len = 2;
        loop {
            match self.next()? {
                b'"' => return self.walk.take(len),
                b'\\' => {
                    len += match self.next()? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'/' => 1,
                        b'u' => {
                            let unit = self.hex4()?;
                            match unit {
                                0xD800..=0xDBFF => {
                                    // A surrogate pair: one character of 4 UTF-8 bytes.
                                    (self.next()? == b'\\' && self.next()? == b'u').then_some(())?;
                                    (0xDC00..=0xDFFF).contains(&self.hex4()?).then_some(4)?
                                }
                                0xDC00..=0xDFFF => return None,
                                _ => escaped_len(unit),
                            }
                        }
                        _ => return None,
                    };
                }
                // Raw control characters are not allowed in JSON strings.
                0x00..=0x1f => return None,
                // Any other byte is written back as it is (the text is UTF-8: a `str`).
                _ => len += 1,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut unit = 0;
        for _ in 0..4 {
            unit = unit * 16 + char::from(self.next()?).to_digit(16)?;
        }
        Some(unit)
    }
}

/// Bytes serde_json writes for the character `unit` (below the surrogates or above them): the
/// short escapes and `\"` `\\` take 2, other control characters `\u00XX` 6, anything else
/// its UTF-8 length.
fn escaped_len(unit: u32) -> usize {
    match unit {
        0x22 | 0x5c | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
        0x00..=0x1f => 6,
        0x20..=0x7f => 1,
        0x80..=0x7ff => 2,
        _ => 3,
    }
}

/// Counts down the bytes still allowed; `None` once past the limit or too deep.
struct Walk {
    left: usize,
}

impl Walk {
    fn new(max_bytes: usize) -> Self {
        Self { left: max_bytes }
    }

    fn take(&mut self, n: usize) -> Option<()> {
        self.left = self.left.checked_sub(n)?;
        Some(())
    }

    /// A value whose containers may nest `depth` more levels.
    fn value(&mut self, value: &Value, depth: usize) -> Option<()> {
        match value {
            Value::Null | Value::Bool(true) => self.take(4),
            Value::Bool(false) => self.take(5),
            Value::Number(n) => self.take(number_len(n)),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                let depth = depth.checked_sub(1)?;
                self.take(2 + items.len().saturating_sub(1))?;
                items.iter().try_for_each(|v| self.value(v, depth))
            }
            Value::Object(map) => self.object(map, depth.checked_sub(1)?),
        }
    }

    /// `{"k":v,...}`, its values allowed `depth` more levels.
    fn object(&mut self, map: &Map<String, Value>, depth: usize) -> Option<()> {
        // Braces, a colon per entry, commas between entries.
        self.take(2 + map.len() + map.len().saturating_sub(1))?;
        map.iter().try_for_each(|(k, v)| {
            self.string(k)?;
            self.value(v, depth)
        })
    }

    /// A string in quotes, escaped as serde_json escapes: `"` and `\` and the short escapes
    /// `\b \t \n \f \r` take 2 bytes, other control characters `\u00XX` 6, anything else
    /// (non-ASCII included) itself.
    fn string(&mut self, s: &str) -> Option<()> {
        self.take(2 + s.len())?;
        for b in s.bytes().filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\') {
            self.take(match b {
                b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 1,
                _ => 5,
            })?;
        }
        Some(())
    }
}

/// Bytes of a number as serde_json writes it (its `Display` is what it serializes).
fn number_len(n: &Number) -> usize {
    if let Some(u) = n.as_u64() {
        return digits(u);
    }
    if let Some(i) = n.as_i64() {
        return 1 + digits(i.unsigned_abs());
    }
    let mut counter = Counter(0);
    // Writing into a counter cannot fail.
    let _ = std::fmt::write(&mut counter, format_args!("{n}"));
    counter.0
}

fn digits(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 10 {
        u /= 10;
        n += 1;
    }
    n
}

struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::json;
    use tern_protocol::limits::{properties_problem, MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH};

    /// Exact size: the largest limit that `fits` refuses is one below it.
    fn measured(m: &Map<String, Value>) -> usize {
        let mut walk = Walk::new(usize::MAX);
        walk.object(m, usize::MAX).expect("no limit");
        usize::MAX - walk.left
    }

    /// Strings of up to 11 pieces, from every class of byte serde_json escapes differently, and
    /// some it does not.
    fn string() -> impl Strategy<Value = String> {
        const PIECES: [&str; 18] = [
            "a", "Z", "0", " ", "\"", "\\", "/", "\u{0}", "\u{8}", "\t", "\n", "\u{b}", "\u{c}",
            "\r", "\u{1f}", "\u{7f}", "é", "🦀",
        ];
        vec(select(&PIECES[..]), 0..12).prop_map(|pieces| pieces.concat())
    }

    /// Integers of both signs and lengths; floats tiny, fractional, in exponent notation, at the
    /// extremes, and any bit pattern (non-finite ones become `null`, as in serde_json).
    fn number() -> impl Strategy<Value = Value> {
        const SPECIAL: [f64; 7] = [0.1, 1e21, 1e-7, 123456.0, -0.0, f64::MAX, f64::MIN_POSITIVE];
        prop_oneof![
            any::<u64>().prop_map(|n| json!(n)),
            (0..1i64 << 40).prop_map(|n| json!(-n)),
            (0..10u64).prop_map(|n| json!(n)),
            any::<u64>().prop_map(|bits| json!(f64::from_bits(bits & !(0x7ff << 52)) * 1e-300)),
            any::<u64>().prop_map(|bits| json!((bits >> 11) as f64 / (1u64 << 20) as f64)),
            select(&SPECIAL[..]).prop_map(|f| json!(f)),
            any::<f64>().prop_map(|f| json!(f)),
        ]
    }

    /// An object of up to 4 entries whose values come from `value`.
    fn object_of(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
        vec((string(), value), 0..5).prop_map(|entries| entries.into_iter().collect())
    }

    /// Properties whose values nest up to `depth` more arrays and objects.
    fn properties(depth: u32) -> impl Strategy<Value = Map<String, Value>> {
        let scalar = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => number(),
            2 => string().prop_map(Value::String),
        ];
        let value = scalar.prop_recursive(depth, 64, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                object_of(inner).prop_map(Value::Object),
            ]
        });
        object_of(value)
    }

    proptest! {
        // 5 000 generated cases (a few seconds in a debug build) and the shrunk case on failure.
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn the_size_is_serde_jsons_to_the_byte(m in properties(4)) {
            let expected = serde_json::to_vec(&m).unwrap().len();
            prop_assert_eq!(measured(&m), expected, "{}", Value::Object(m.clone()));
            prop_assert!(fits(&m, expected, usize::MAX));
            prop_assert!(!fits(&m, expected - 1, usize::MAX));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn the_answer_is_the_protocols(m in properties(6)) {
            prop_assert_eq!(
                fits(&m, MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH),
                properties_problem(&m).is_none(),
                "{}",
                Value::Object(m.clone())
            );
        }
    }

    /// Whether every number in `v` is an integer of up to 18 digits (the scan's bound is exact
    /// then).
    fn only_short_integers(v: &Value) -> bool {
        match v {
            Value::Number(n) => {
                (n.is_u64() || n.is_i64()) && n.to_string().trim_start_matches('-').len() <= 18
            }
            Value::Array(items) => items.iter().all(only_short_integers),
            Value::Object(map) => map.values().all(only_short_integers),
            _ => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        #[test]
        fn the_text_passes_only_what_its_parsed_value_passes(
            m in properties(4),
            slack in 0usize..3,
        ) {
            let compact = serde_json::to_string(&m).unwrap();
            let pretty = serde_json::to_string_pretty(&m).unwrap();
            // What the collector measures: the value it parses from the text (serde_json's
            // float parsing may land a bit away from the value the text was written from).
            let parsed: Map<String, Value> = serde_json::from_str(&compact).unwrap();
            let size = serde_json::to_string(&parsed).unwrap().len();
            let exact = only_short_integers(&Value::Object(parsed.clone()));
            for limit in [size + slack, size.saturating_sub(slack + 1)] {
                for depth in [MAX_PROPERTIES_DEPTH, 1, 2, 3] {
                    let expected = fits(&parsed, limit, depth);
                    for text in [&compact, &pretty] {
                        let scanned = json_object_fits(text, limit, depth);
                        prop_assert!(!scanned || expected, "laxer than the parsed value: {}", text);
                        if exact {
                            prop_assert_eq!(scanned, expected, "{}", text);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn text_that_is_no_json_object_does_not_fit() {
        for text in [
            "",
            "[]",
            "1",
            "null",
            r#""a""#,
            "{",
            r#"{"a":1}x"#,
            r#"{"a":}"#,
            "{} {}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":[1,]}"#,
            r#"{,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1e999}"#,
            r#"{"a":-1.5E+400}"#,
        ] {
            assert!(!json_object_fits(text, usize::MAX, usize::MAX), "{text}");
            assert!(
                serde_json::from_str::<Map<String, Value>>(text).is_err(),
                "{text}"
            );
        }
        assert!(json_object_fits(" {} ", 2, 1));
        assert!(!json_object_fits("{}", 1, 1));
        assert!(!json_object_fits("{}", 2, 0));
        // Escapes count as serde_json writes the decoded text back: `{"é/":12,"😀":"\n"}`.
        let text = r#"{"\u00e9\/":12,"\ud83d\ude00":"\n"}"#;
        let back = serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
        assert_eq!(back.len(), 22, "{back}");
        assert!(json_object_fits(text, back.len(), 1));
        assert!(!json_object_fits(text, back.len() - 1, 1));
        // Near f64's range the scan leaves the answer to serde_json's parse, which takes these.
        let big_int = format!(r#"{{"a":{}}}"#, "9".repeat(201));
        for text in [r#"{"a":1e300}"#, r#"{"a":0.5e100}"#, big_int.as_str()] {
            assert!(!json_object_fits(text, usize::MAX, usize::MAX), "{text}");
            assert!(
                serde_json::from_str::<Map<String, Value>>(text).is_ok(),
                "{text}"
            );
        }
        assert!(json_object_fits(
            r#"{"a":1e-999,"b":9.9e99}"#,
            usize::MAX,
            usize::MAX
        ));
        // A float counts the longest an f64 prints.
        assert!(!json_object_fits(r#"{"a":1.5}"#, 2 + 3 + 1 + 3, 1));
        assert!(json_object_fits(
            r#"{"a":1.5}"#,
            2 + 3 + 1 + MAX_F64_TEXT,
            1
        ));
    }

    #[test]
    fn the_answer_is_the_protocols_on_both_sides_of_each_limit() {
        let nested = |depth: usize, inner: Value| {
            let mut v = inner;
            for _ in 1..depth {
                v = json!({ "a": v });
            }
            json!({ "a": v }).as_object().cloned().unwrap()
        };
        let mut cases: Vec<Map<String, Value>> = Vec::new();
        for d in MAX_PROPERTIES_DEPTH - 2..=MAX_PROPERTIES_DEPTH + 1 {
            cases.extend([
                nested(d, json!(1)),
                nested(d, json!([])),
                nested(d, json!({})),
            ]);
        }
        for len in MAX_PROPERTIES_BYTES - 2..=MAX_PROPERTIES_BYTES + 2 {
            let pad = "x".repeat(len - r#"{"b":""}"#.len());
            cases.push(json!({ "b": pad }).as_object().cloned().unwrap());
        }
        cases.push(Map::new());
        let mut refused = 0;
        for m in &cases {
            let protocol = properties_problem(m).is_none();
            assert_eq!(
                fits(m, MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH),
                protocol,
                "{}",
                Value::Object(m.clone())
            );
            assert_eq!(
                json_object_fits(
                    &serde_json::to_string(m).unwrap(),
                    MAX_PROPERTIES_BYTES,
                    MAX_PROPERTIES_DEPTH
                ),
                protocol,
                "{}",
                Value::Object(m.clone())
            );
            refused += usize::from(!protocol);
        }
        assert_eq!(refused, 5 + 2, "the cases straddle both limits");
    }
}
