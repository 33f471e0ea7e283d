//! Typed errors of the library, and the one place where they map to process exit codes.
//!
//! Each variant says which side and which request failed, so a user reading one line knows what to fix.

use std::path::PathBuf;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: invalid arguments.
pub const EXIT_INVALID_ARGS: i32 = 2;
/// Exit code: finished with warnings.
pub const EXIT_WARNING: i32 = 3;

/// What went wrong in an S3 request, coarse enough to decide retry and exit behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// Credentials rejected or request not allowed (403, InvalidAccessKeyId, SignatureDoesNotMatch).
    Auth,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The key does not exist.
    NotFound,
    /// The endpoint could not be reached (connection refused, DNS, timeout).
    Unreachable,
    /// The object is archived (GLACIER, DEEP_ARCHIVE, an archive tier) and not restored
    /// (`InvalidObjectState`): it cannot be read.
    Archived,
    /// A conditional request's precondition (`If-Match`, `If-None-Match`,
    /// `x-amz-copy-source-if-match`) did not hold (HTTP 412): the object changed since it was seen.
    PreconditionFailed,
    /// The server does not implement the operation (HTTP 501, `NotImplemented`).
    NotImplemented,
    /// The multipart upload does not exist (any more): completed or aborted (`NoSuchUpload`).
    NoSuchUpload,
    /// Throttling or a server-side failure that may succeed when retried.
    Retryable,
    /// Anything else.
    Other,
}

/// An S3 request that failed: which one, on what, how the server answered, and the underlying error.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed for s3://{bucket}/{key}: {message}")]
#[non_exhaustive]
pub struct S3Error {
    /// The S3 operation (e.g. `PutObject`).
    pub operation: &'static str,
    /// The bucket addressed.
    pub bucket: String,
    /// The key addressed (may be empty for bucket-level requests).
    pub key: String,
    /// The classification of the failure, which decides retries and what the run does next.
    pub kind: S3ErrorKind,
    /// The HTTP status of the server's answer, when there was one.
    pub status: Option<u16>,
    /// The S3 error code of the server's answer (e.g. `SlowDown`, `NoSuchUpload`), when it gave one.
    pub code: Option<String>,
    /// The server's or the SDK's message, on one line.
    pub message: String,
    /// The underlying error (the SDK's), when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The error type of the s3sync library. New kinds may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid or unsupported.
    #[error("{0}")]
    InvalidArgument(String),
    /// An S3 request failed (boxed: the error stays small on the paths that succeed).
    #[error(transparent)]
    S3(Box<S3Error>),
    /// A local file system operation failed.
    #[error("{operation} {path}: {source}")]
    Local {
        /// What was being done (e.g. `read`).
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes transferred do not match the digest the other side reports.
    #[error("{what} mismatch for {key}: expected {expected}, got {actual}")]
    Verification {
        /// What was compared (e.g. `ETag`).
        what: &'static str,
        /// The object key.
        key: String,
        /// The value the source or target reports.
        expected: String,
        /// The value computed from the bytes.
        actual: String,
    },
    /// The object changed size or vanished while it was being transferred.
    #[error("{key}: {message}")]
    ObjectChanged {
        /// The object key.
        key: String,
        /// What changed.
        message: String,
    },
    /// A path inside the local target crosses a symbolic link; s3sync never writes or deletes through
    /// one.
    #[error("{link} is a symbolic link inside the target: not followed (key {key})")]
    SymlinkInTarget {
        /// The link.
        link: PathBuf,
        /// The key whose path crosses it.
        key: String,
    },
    /// A listing left an entry out on purpose (a symbolic-link loop, a name that is not UTF-8). Counted
    /// as a warning, not as an error.
    #[error("{reason}")]
    Skipped {
        /// The key (or the best rendering of the name) of the entry.
        key: String,
        /// Why it was left out.
        reason: String,
    },
    /// An object needs parts larger than the chunk pool holds (found before anything is uploaded).
    #[error("{key}: parts of {part_size} bytes do not fit the {pool} byte chunk pool; raise --io-pool-size")]
    PartTooLarge {
        /// The object key.
        key: String,
        /// The part size the object needs.
        part_size: u64,
        /// The pool's size in bytes.
        pool: u64,
    },
    /// A listing task ended abnormally before its end.
    #[error("the listing ended abnormally: {0}")]
    ListingAborted(String),
    /// A listing returned a key out of key order and stopped there (a parallel listing cannot go on
    /// with ranges of an unordered listing); the merge treats it as that side's disorder.
    #[error("the listing is not in key order (at {0:?})")]
    ListingOutOfOrder(String),
    /// The chunk pool or an I/O backend failed.
    #[error(transparent)]
    Io(#[from] s3sync_io::IoError),
    /// A filter or preprocess callback failed (a script error, a timeout, an invalid value); it stops
    /// the run.
    #[error("{0}")]
    Callback(#[from] crate::callback::CallbackError),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A task of the run ended abnormally (a panic): a bug, reported rather than hidden.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The process exit code this error stands for when it ends the run.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => EXIT_INVALID_ARGS,
            _ => EXIT_ERROR,
        }
    }

    /// Whether retrying the whole object operation may help (the `--force-retry-count` loop).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::S3(e) => matches!(e.kind, S3ErrorKind::Retryable | S3ErrorKind::Unreachable),
            Error::Verification { .. } => true,
            Error::Local { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// An S3 error that no server answer stands behind (a malformed or truncated response, a missing
    /// object found by a listing, an injected fault): no status, code or source.
    pub fn s3(
        operation: &'static str,
        bucket: impl Into<String>,
        key: impl Into<String>,
        kind: S3ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Error::S3(Box::new(S3Error {
            operation,
            bucket: bucket.into(),
            key: key.into(),
            kind,
            status: None,
            code: None,
            message: message.into(),
            source: None,
        }))
    }

    /// The same S3 error with the server's answer: its HTTP status, its error code and the
    /// underlying error; other errors are returned as they are.
    pub(crate) fn with_response(
        mut self,
        status: Option<u16>,
        code: Option<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        if let Error::S3(e) = &mut self {
            e.status = status;
            e.code = code;
            e.source = source;
        }
        self
    }

    /// The classification of an S3 error (`None` for other errors).
    pub fn s3_kind(&self) -> Option<S3ErrorKind> {
        match self {
            Error::S3(e) => Some(e.kind),
            _ => None,
        }
    }

    /// Names `key` as the object of an error raised below the layer that knows the key (an S3 or
    /// object-changed error with an empty key); other errors are returned as they are.
    pub(crate) fn for_key(mut self, name: &str) -> Self {
        match &mut self {
            Error::S3(e) if e.key.is_empty() => e.key = name.to_string(),
            Error::ObjectChanged { key, .. } if key.is_empty() => *key = name.to_string(),
            _ => {}
        }
        self
    }

    /// Shorthand for a local I/O error.
    pub fn local(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Local {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
