//! The two kinds of storage s3sync talks to: S3 (and compatibles) and the local file system.
//!
//! Both produce listings as streams of [`Entry`] sorted in UTF-8 byte order of their relative key, so the
//! diff can merge them without holding either in memory.

pub(crate) mod body;
pub mod client;
pub mod direct;
pub mod endpoint;
pub mod failing;
pub mod http;
mod list_xml;
pub mod local;
pub mod memory;
pub mod object_client;
pub mod parallel_list;
pub mod s3;
pub mod sdk;

use std::time::SystemTime;

/// One object (or file) as listed, keyed relative to the location's prefix or root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the prefix/root, `/`-separated. A trailing `/` marks a directory marker.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last-modified time (S3) or modification time (local).
    pub mtime: SystemTime,
    /// The ETag without quotes, for S3 entries that carry one.
    pub etag: Option<String>,
    /// The version to read, for versioned syncs (`--enable-versioning`, `--point-in-time`).
    pub version_id: Option<String>,
}

impl Entry {
    /// Whether this entry is a directory marker (`key/`).
    pub fn is_dir_marker(&self) -> bool {
        self.key.ends_with('/')
    }
}
