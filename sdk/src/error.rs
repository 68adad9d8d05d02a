//! The SDK's one error type.

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event was refused before it was stored (bad name, properties too large, ...).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The hand-off queue to the writer is full; the event was dropped and counted.
    #[error("the event queue is full ({0} events); the event was dropped")]
    QueueFull(usize),
    /// Storing events failed moments ago (disk full?); the event was dropped and counted.
    #[error("storage is failing ({0}); the event was dropped")]
    StorageFailing(String),
    /// The tracker was shut down.
    #[error("the tracker is shut down")]
    Closed,
    /// SQLite failed.
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A value could not be encoded or decoded.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Another tracker (in this or another process) has the database open.
    #[error("the buffer {0} is already open by another tracker")]
    AlreadyOpen(String),
    /// The database was written by a newer SDK.
    #[error("database schema version {found} is newer than this SDK's {supported}")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this SDK knows.
        supported: i64,
    },
}

/// Result with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
