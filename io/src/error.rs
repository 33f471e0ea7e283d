//! The crate's error type.

/// Errors from building a pool or an engine, or from acquiring chunks.
///
/// File operations themselves return [`std::io::Error`]; it converts into [`IoError::Io`].
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// More chunks were requested at once than the pool holds; waiting would never succeed.
    #[error("chunk pool too small: {needed} chunks needed at once, but the pool only has {capacity}")]
    PoolTooSmall {
        /// Chunks requested at once.
        needed: usize,
        /// Total chunks in the pool.
        capacity: usize,
    },
    /// The pool configuration is unusable (zero sizes, or a total that overflows).
    #[error("invalid chunk pool configuration: {0}")]
    InvalidPool(String),
    /// The pool's memory could not be allocated.
    #[error("could not allocate {bytes} bytes for the chunk pool")]
    Alloc {
        /// Size of the failed allocation.
        bytes: usize,
    },
    /// The io_uring backend was explicitly requested but cannot be used here.
    #[error("io_uring backend unavailable: {0}")]
    UringUnavailable(String),
    /// An operating-system I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
