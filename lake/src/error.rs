//! The lake's errors.

/// Everything that can go wrong in the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or makes no sense; the message names it.
    #[error("configuration: {0}")]
    Config(String),
    /// The Delta table could not be read or written.
    #[error("delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// A query failed (bad SQL, a missing column, ...).
    #[error("{0}")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
    /// Building or reading Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// A Kinesis call failed for good.
    #[error("kinesis: {0}")]
    Kinesis(String),
    /// A stored checkpoint could not be read back.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A JSON document could not be written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A named snapshot is missing, exists already, or no longer matches its checksum.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// Compaction gave up on a partition (its files are as they were), or a data file could not
    /// be read back.
    #[error("compact: {0}")]
    Compact(String),
    /// Local I/O (the lake directory, the history file, stdout).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The lake's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
