//! One answer to "verify what, against what" for every direction, and one way to record the answer:
//! which ETags and additional checksums a transfer compares (the options, and whether each side's
//! ETags can be MD5s at all), and what a comparison comes to — verified, a mismatch error, or a
//! warning when the comparison cannot be sound (the object's part layout is unknown, the server
//! returned no checksum).

use super::{End, Moved};
use crate::checksum::{etag_is_md5_form, etag_part_count};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::s3::Written;
use tracing::trace;

/// Which digests a run compares.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// ETags are compared (not `--disable-etag-verify`).
    etag: bool,
    /// Multipart ETags too (not `--disable-multipart-verify`).
    multipart: bool,
    /// Additional checksums are compared (not `--disable-additional-checksum-verify`).
    checksums: bool,
    /// The source's ETags can be MD5s (not under SSE-C).
    source_md5: bool,
    /// The ETags of objects written to the target can be MD5s (not under SSE-C or SSE-KMS).
    target_md5: bool,
}

impl Policy {
    /// The policy of a run from `source` to `target`.
    pub(super) fn new(cfg: &Config, source: &End, target: &End) -> Self {
        let kms = matches!(cfg.attributes.sse.as_deref(), Some(s) if s.starts_with("aws:kms"));
        Policy {
            etag: cfg.verify_etag,
            multipart: cfg.verify_multipart,
            checksums: cfg.verify_additional_checksum,
            source_md5: !matches!(source, End::S3(s) if s.has_sse_c()),
            target_md5: !kms && !matches!(target, End::S3(t) if t.has_sse_c()),
        }
    }

    /// Whether a source object's ETag is compared with the MD5s of the bytes read from it (`opaque`:
    /// a response said it is no MD5, as under SSE-KMS).
    pub(super) fn source_etag(&self, etag: &str, opaque: bool) -> bool {
        let form = etag_is_md5_form(etag) && (etag_part_count(etag).is_none() || self.multipart);
        self.etag && self.source_md5 && !opaque && form
    }

    /// Whether the ETag a write reports is compared with the MD5s of the bytes sent.
    pub(super) fn written_etag(&self, written: &Written, multipart: bool) -> bool {
        let form = etag_is_md5_form(&written.etag) && (!multipart || self.multipart);
        self.etag && self.target_md5 && written.etag_is_md5 && form
    }

    /// Whether a server-side copy's ETag is compared with its source's.
    pub(super) fn copied_etag(&self, source: &str, target: &str) -> bool {
        self.source_etag(source, false) && self.target_md5 && etag_is_md5_form(target)
    }

    /// Whether additional checksums are compared.
    pub(super) fn checksums(&self) -> bool {
        self.checksums
    }
}

/// The error of two digests that differ: `source` is the source side's (reported by the source, or
/// computed from the bytes read from it), `target` the target side's. Events report them as the source
/// and target values.
pub(super) fn mismatch(what: &'static str, key: &str, source: &str, target: &str) -> Error {
    Error::Verification {
        what,
        key: key.to_string(),
        expected: source.to_string(),
        actual: target.to_string(),
    }
}

/// What verifying one object came to.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// The ETag was compared and matched.
    pub(super) etag_verified: bool,
    /// The additional checksum was compared and matched.
    pub(super) checksum_verified: bool,
    /// Why something asked for could not be verified.
    pub(super) warning: Option<String>,
}

impl Outcome {
    /// Compares the source side's ETag with the target side's (one reported by a server, the other
    /// computed from the bytes): equal is verified; a difference is an error when the part layout was
    /// `known`, else a warning (two part layouts give two ETags for the same bytes).
    pub(super) fn etag(&mut self, key: &str, source: &str, target: &str, known: bool) -> Result<()> {
        if source == target {
            trace!(key, source_e_tag = %source, target_e_tag = %target, "e_tag verified.");
            self.etag_verified = true;
        } else if known {
            return Err(mismatch("ETag", key, source, target));
        } else {
            self.warning = Some(format!(
                "ETag {source} could not be verified against {target}: the object's part layout is unknown"
            ));
        }
        Ok(())
    }

    /// Compares the source side's additional checksum with the target side's; either missing is a
    /// warning, saying `missing`.
    pub(super) fn checksum(
        &mut self,
        key: &str,
        source: Option<&str>,
        target: Option<&str>,
        missing: impl FnOnce() -> String,
    ) -> Result<()> {
        match (source, target) {
            (Some(s), Some(t)) if s == t => {
                trace!(key, source_checksum = %s, target_checksum = %t, "additional checksum verified.");
                self.checksum_verified = true;
            }
            (Some(s), Some(t)) => return Err(mismatch("additional checksum", key, s, t)),
            _ => self.warning = Some(missing()),
        }
        Ok(())
    }

    /// The result of a transfer of `bytes` bytes with this outcome.
    pub(super) fn moved(self, bytes: u64) -> Moved {
        Moved {
            cancelled: false,
            bytes,
            etag_verified: self.etag_verified,
            checksum_verified: self.checksum_verified,
            warning: self.warning,
        }
    }
}
