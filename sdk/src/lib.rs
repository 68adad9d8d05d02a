//! Tern SDK core: `track()` an event and it is stored durably in SQLite, batched, compressed
//! and uploaded to the Tern collector; a batch leaves the buffer only when the collector has
//! acknowledged that every one of its events is in the stream.
//!
//! Flow: [`Tracker::track`] (validate, stamp, hand off) → writer thread (group commit to
//! [`store::Store`]) → uploader thread (cut a batch, [`upload::encode_batch`], [`upload::send`],
//! delete on acknowledgement, back off otherwise). The HTTP request itself goes through a
//! [`transport::Transport`]: the platform's HTTP client in the mobile library, reqwest in Rust
//! (feature `http-reqwest`, on by default).

pub mod clock;
pub mod error;
pub mod inspect;
mod json_size;
pub mod policy;
mod shared;
pub mod store;
mod supervise;
mod tracker;
pub mod transport;
pub mod upload;
mod writer;

pub use error::{Error, Result};
pub use policy::Policy;
pub use store::Pending;
pub use tern_protocol::{AppInfo, Context, DeviceInfo, OsInfo};
pub use tracker::{properties_from_json, Captured, Config, Stats, Tracker};
pub use transport::{HttpRequest, HttpResponse, Transport};
