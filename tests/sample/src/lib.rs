//! The sample events of Tern's tests, tools and benchmarks.
//!
//! One generator for all of them: the harness (`tern-tests`, which re-exports it as
//! `sample_event`), the tools built on it, and the SDK's benchmarks, which cannot depend on the
//! harness (it depends on the SDK).

use serde_json::{Map, Value};

/// The event names, a small app vocabulary.
pub const NAMES: [&str; 5] = [
    "screen_view",
    "button_tap",
    "add_to_cart",
    "checkout",
    "search",
];

/// A realistic event, the `i`th: a name from [`NAMES`] and a few properties (a screen, an
/// item, a price, an experiment), deterministic in `i`.
pub fn event(i: usize) -> (&'static str, Map<String, Value>) {
    const SCREENS: [&str; 4] = ["home", "catalog", "product", "cart"];
    let name = NAMES[i % NAMES.len()];
    let screen = SCREENS[i % SCREENS.len()];
    let Value::Object(properties) = serde_json::json!({
        "i": i,
        "screen": screen,
        "item_id": format!("sku-{:05}", i * 7919 % 100_000),
        "price": (i % 500) as f64 + 0.99,
        "currency": "EUR",
        "experiment": { "name": "new_checkout", "variant": if i.is_multiple_of(2) { "a" } else { "b" } },
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    (name, properties)
}

/// The context of tern-loadgen's devices (a `Context` of the wire format, as JSON): the same
/// for every batch it sends and for the collector's decode benchmark, which measures batches of
/// its shape.
pub fn context() -> Value {
    serde_json::json!({
        "app": { "id": "dev.tern.loadgen", "version": "2.3.1", "build": "231" },
        "device": { "manufacturer": "Tern", "model": "Loadgen" },
        "os": { "name": "Android", "version": "15" },
        "locale": "en-GB",
        "timezone": "Europe/London"
    })
}
