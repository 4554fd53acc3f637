//! Why the store cannot be used: one error type for both backends and the journal.

use std::path::PathBuf;

/// Why the store cannot be used. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The data dir or its file cannot be opened (or created).
    #[error("cannot open the store in {path}: {source}")]
    Open {
        /// The data dir.
        path: PathBuf,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process has the data dir open.
    #[error("the store in {path} is in use by another process (is that node running already?)")]
    InUse {
        /// The data dir.
        path: PathBuf,
    },
    /// The store there is not this node's.
    #[error(
        "the store in {path} belongs to node '{found}', not '{expected}': give each node its own \
         --data-dir (or --name '{found}')"
    )]
    WrongNode {
        /// The data dir.
        path: PathBuf,
        /// The node whose data it holds.
        found: String,
        /// This node.
        expected: String,
    },
    /// The store exists but cannot be read: the node refuses to start rather than
    /// replace it with an empty one.
    #[error(
        "the store in {path} cannot be read ({reason}); the node will not replace it with an \
         empty one: move it aside to start afresh, or restore it"
    )]
    Unreadable {
        /// The data dir.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A commit or a read failed (the disk is full, or failing). A failed commit may or
    /// may not have reached the disk; retrying it applies nothing twice.
    #[error("cannot write to the store: {0}")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store cannot be used right now: its journal is not running, or commits
    /// nothing (it waits for the disk).
    #[error("the store cannot be used now: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The data dir (or directory) `path` cannot be opened or made, for `source`.
    pub(crate) fn open(
        path: &std::path::Path,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Open {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// A commit or read failed, for `source`.
    pub(crate) fn write(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Write(source.into())
    }
}
