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

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Whether `properties` serialize (compact, as serde_json writes them) to at most `max_bytes`
/// and nest at most `max_depth` levels (the object itself is level 1, as
/// `tern_protocol::limits` counts).
pub fn fits(properties: &Map<String, Value>, max_bytes: usize, max_depth: usize) -> bool {
    let mut walk = Walk::new(max_bytes);
    max_depth >= 1 && walk.object(properties, max_depth - 1).is_some()
}

/// What [`fits`] answers for the same properties parsed from `json`, measured on the text
/// itself: no tree is built and nothing is allocated (serde_json hands strings over borrowed, or
/// through its reused scratch buffer when they hold escapes). `false` for text that is not a
/// JSON object as well as for one over a limit: either way the caller takes the path that parses
/// the text and words the refusal.
///
/// The bytes counted are those of the compact form serde_json writes for the parsed value,
/// which is what the collector measures, whatever the text's own spacing, escapes or number
/// spellings. One difference: a key repeated within an object counts each time, where parsing
/// keeps the last; the answer can then only be stricter than the collector's, never laxer.
pub fn json_object_fits(json: &str, max_bytes: usize, max_depth: usize) -> bool {
    let mut walk = TextWalk {
        walk: Walk::new(max_bytes),
        owed: 0,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let measured = de.deserialize_map(Measure {
        walk: &mut walk,
        depth: max_depth,
    });
    measured.is_ok() && de.end().is_ok()
}

/// [`Walk`] over text being parsed.
struct TextWalk {
    walk: Walk,
    /// Bytes the next value or key pays first: the comma before an element of an array or
    /// object, known to be needed only once another element comes.
    owed: usize,
}

impl TextWalk {
    fn take(&mut self, n: usize) -> Option<()> {
        self.walk.take(n + std::mem::take(&mut self.owed))
    }

    fn string(&mut self, s: &str) -> Option<()> {
        self.take(0)?;
        self.walk.string(s)
    }
}

/// A value measured as it is parsed; containers may nest `depth` more levels, itself included.
struct Measure<'w> {
    walk: &'w mut TextWalk,
    depth: usize,
}

/// Why a measure stopped early: past a limit (the parser's own errors say the rest).
fn over<E: serde::de::Error>() -> E {
    E::custom("over a limit")
}

impl Measure<'_> {
    fn take<E: serde::de::Error>(&mut self, n: usize) -> Result<(), E> {
        self.walk.take(n).ok_or_else(over)
    }

    /// The budget of a container's elements, or an error if it may not nest here.
    fn inner<E: serde::de::Error>(&self) -> Result<usize, E> {
        self.depth.checked_sub(1).ok_or_else(over)
    }
}

impl<'de> DeserializeSeed<'de> for Measure<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Measure<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.take(4)
    }

    fn visit_bool<E: serde::de::Error>(mut self, b: bool) -> Result<(), E> {
        self.take(if b { 4 } else { 5 })
    }

    fn visit_u64<E: serde::de::Error>(mut self, u: u64) -> Result<(), E> {
        self.take(number_len(&Number::from(u)))
    }

    fn visit_i64<E: serde::de::Error>(mut self, i: i64) -> Result<(), E> {
        self.take(number_len(&Number::from(i)))
    }

    fn visit_f64<E: serde::de::Error>(mut self, f: f64) -> Result<(), E> {
        // JSON text has no non-finite numbers; `null` is what serde_json would write for one.
        let len = Number::from_f64(f).map_or(4, |n| number_len(&n));
        self.take(len)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.walk.string(s).ok_or_else(over)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.inner()?;
        self.take(2)?;
        loop {
            let seed = Measure {
                walk: &mut *self.walk,
                depth,
            };
            if seq.next_element_seed(seed)?.is_none() {
                self.walk.owed = 0;
                return Ok(());
            }
            // A comma, if another element follows.
            self.walk.owed = 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let depth = self.inner()?;
        self.take(2)?;
        while map.next_key_seed(Key(&mut *self.walk))?.is_some() {
            self.take(1)?; // the colon
            map.next_value_seed(Measure {
                walk: &mut *self.walk,
                depth,
            })?;
            self.walk.owed = 1;
        }
        self.walk.owed = 0;
        Ok(())
    }
}

/// An object's key, measured as a string.
struct Key<'w>(&'w mut TextWalk);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.0.string(s).ok_or_else(over)
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        #[test]
        fn the_text_is_measured_as_its_parsed_value(m in properties(4), slack in 0usize..3) {
            let compact = serde_json::to_string(&m).unwrap();
            let pretty = serde_json::to_string_pretty(&m).unwrap();
            // What the collector measures: the value it parses from the text (serde_json's
            // float parsing may land a bit away from the value the text was written from).
            let parsed: Map<String, Value> = serde_json::from_str(&compact).unwrap();
            let size = serde_json::to_string(&parsed).unwrap().len();
            for limit in [size + slack, size.saturating_sub(slack + 1)] {
                for depth in [MAX_PROPERTIES_DEPTH, 1, 2, 3] {
                    let expected = fits(&parsed, limit, depth);
                    prop_assert_eq!(json_object_fits(&compact, limit, depth), expected, "{}", compact);
                    prop_assert_eq!(json_object_fits(&pretty, limit, depth), expected, "{}", pretty);
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
        ] {
            assert!(!json_object_fits(text, usize::MAX, usize::MAX), "{text}");
        }
        assert!(json_object_fits(" {} ", 2, 1));
        assert!(!json_object_fits("{}", 1, 1));
        assert!(!json_object_fits("{}", 2, 0));
        // Escapes and number spellings count as serde_json writes them back.
        assert!(json_object_fits(
            r#"{"\u00e9":1e2}"#,
            r#"{"é":100.0}"#.len(),
            1
        ));
        assert!(!json_object_fits(
            r#"{"\u00e9":1e2}"#,
            r#"{"é":100.0}"#.len() - 1,
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
