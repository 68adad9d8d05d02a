//! Tern bindings: the uniffi layer over `tern-sdk` for Kotlin, Swift and Python.
//!
//! A placeholder for now: it re-exports the SDK so that the crate boundary exists from the start.

pub use tern_sdk::*;
