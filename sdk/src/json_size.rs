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
    let mut walk = Walk { left: max_bytes };
    max_depth >= 1 && walk.object(properties, max_depth - 1).is_some()
}

/// Counts down the bytes still allowed; `None` once past the limit or too deep.
struct Walk {
    left: usize,
}

impl Walk {
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
        let mut walk = Walk { left: usize::MAX };
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
            refused += usize::from(!protocol);
        }
        assert_eq!(refused, 5 + 2, "the cases straddle both limits");
    }
}
