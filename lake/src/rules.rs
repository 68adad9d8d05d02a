//! Cleansing rules: what the lake changes in an event before it is written, the same in
//! `ingest` and in `backfill` (which is how a changed rule reaches the days already written).
//!
//! A TOML file (`--rules`, `TERN_LAKE_RULES`), every field optional:
//!
//! ```toml
//! # Event names in lower case ("Checkout" and "checkout" are one event).
//! lowercase_names = true
//! # Event names renamed, after lower-casing.
//! [rename]
//! "add_to_cart" = "cart_add"
//! ```
//!
//! A rule that makes a name invalid sends the event to `rejected` (`invalid_value`), saying
//! which rule did it: nothing is dropped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tern_protocol::limits::event_name_problem;
use tern_protocol::StreamRecord;

use crate::error::{Error, Result};

/// The cleansing rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Event names in lower case.
    pub lowercase_names: bool,
    /// Event names renamed (`old = "new"`), after lower-casing.
    pub rename: BTreeMap<String, String>,
}

impl Rules {
    /// The rules in `path`, or none.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("rules: cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("rules: {}: {e}", path.display())))
    }

    /// Applies the rules to `record`; what is wrong with it afterwards, if anything.
    pub fn apply(&self, record: &mut StreamRecord) -> Option<String> {
        let before = record.name.clone();
        if self.lowercase_names {
            record.name = record.name.to_lowercase();
        }
        if let Some(new) = self.rename.get(&record.name) {
            record.name.clone_from(new);
        }
        if record.name == before {
            return None;
        }
        event_name_problem(&record.name).map(|p| {
            format!(
                "name: {before:?} became {:?} by the rules: {p}",
                record.name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> StreamRecord {
        let mut r: StreamRecord =
            serde_json::from_str(crate::fixtures::GOOD_RECORD).expect("a good record");
        r.name = name.into();
        r
    }

    #[test]
    fn lowercase_then_rename() {
        let rules: Rules =
            toml::from_str("lowercase_names = true\n[rename]\nadd_to_cart = \"cart_add\"\n")
                .expect("rules");
        let mut r = record("Add_To_Cart");
        assert_eq!(rules.apply(&mut r), None);
        assert_eq!(r.name, "cart_add");
        let mut r = record("view");
        assert_eq!(rules.apply(&mut r), None);
        assert_eq!(r.name, "view");
        assert_eq!(Rules::default().apply(&mut record("Keep")), None);
    }

    #[test]
    fn a_rule_that_breaks_a_name_says_so() {
        let rules: Rules = toml::from_str("[rename]\nview = \"\"\n").expect("rules");
        let problem = rules.apply(&mut record("view")).expect("a problem");
        assert!(problem.contains("by the rules"), "{problem}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        assert!(toml::from_str::<Rules>("lowercase = true\n").is_err());
    }
}
