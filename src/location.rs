//! Parsing of the SOURCE and TARGET arguments: a local path or `s3://bucket[/prefix]`.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// One end of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and a key prefix (possibly empty). No slash is added to the prefix, as the reference.
    S3 {
        /// Bucket name (or access point alias).
        bucket: String,
        /// Key prefix, used verbatim.
        prefix: String,
    },
}

impl Location {
    /// Whether this is an S3 Express One Zone directory bucket (`…--x-s3`): its ETags are not MD5s and
    /// its listings are not in key order.
    pub fn is_directory_bucket(&self) -> bool {
        matches!(self, Location::S3 { bucket, .. } if bucket.ends_with("--x-s3"))
    }

    /// Parses `s3://bucket[/prefix]` or a local path.
    pub fn parse(arg: &str) -> Result<Self> {
        if let Some(rest) = arg.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p),
                None => (rest, ""),
            };
            if bucket.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "invalid S3 location '{arg}': the bucket name is empty"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if arg.is_empty() {
            return Err(Error::InvalidArgument("empty path".into()));
        }
        if arg.contains("://") {
            return Err(Error::InvalidArgument(format!(
                "unsupported location '{arg}': use a local path or s3://bucket[/prefix]"
            )));
        }
        Ok(Location::Local(PathBuf::from(arg)))
    }

    /// Whether this end is S3.
    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local() {
        assert_eq!(
            Location::parse("s3://b").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            Location::parse("s3://b/p/q").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(Location::parse("./x").unwrap(), Location::Local("./x".into()));
        assert!(Location::parse("s3://").is_err());
        assert!(Location::parse("http://x").is_err());
    }
}
