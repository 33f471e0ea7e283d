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
pub(crate) struct Policy {
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
    pub(crate) fn new(cfg: &Config, source: &End, target: &End) -> Self {
        let kms = matches!(cfg.attributes.sse.as_deref(), Some(s) if s.starts_with("aws:kms"));
        Policy {
            etag: cfg.verify_etag,
            multipart: cfg.verify_multipart,
            checksums: cfg.verify_additional_checksum,
            source_md5: !matches!(source, End::S3(s) if s.has_sse_c()),
            target_md5: !kms && !matches!(target, End::S3(t) if t.has_sse_c()),
        }
    }

    /// The policy of the single-object API ([`crate::Engine`]): every digest the servers' answers allow
    /// is compared; `sse_c` says whether the engine's objects are encrypted with a customer key (their
    /// ETags are no MD5s).
    pub(crate) fn everything(sse_c: bool) -> Self {
        Policy {
            etag: true,
            multipart: true,
            checksums: true,
            source_md5: !sse_c,
            target_md5: !sse_c,
        }
    }

    /// Checks what the server reports of part `number` of `key` (`written`) against the MD5 (hex) of
    /// the bytes sent and the additional checksum sent with them.
    pub(crate) fn check_part(
        &self,
        key: &str,
        number: i32,
        (md5, sent_checksum): (&str, Option<&str>),
        written: &Written,
    ) -> Result<()> {
        let part = || format!("{key} (part {number})");
        if self.written_etag(written, false) && written.etag != md5 {
            return Err(mismatch("part ETag", &part(), md5, &written.etag));
        }
        if let (Some(sent), Some(got), true) = (sent_checksum, &written.checksum, self.checksums) {
            if sent != got {
                return Err(mismatch("part checksum", &part(), sent, got));
            }
        }
        Ok(())
    }

    /// Whether a source object's ETag is compared with the MD5s of the bytes read from it (`opaque`:
    /// a response said it is no MD5, as under SSE-KMS).
    pub(crate) fn source_etag(&self, etag: &str, opaque: bool) -> bool {
        let form = etag_is_md5_form(etag) && (etag_part_count(etag).is_none() || self.multipart);
        self.etag && self.source_md5 && !opaque && form
    }

    /// Whether the ETag a write reports is compared with the MD5s of the bytes sent.
    pub(crate) fn written_etag(&self, written: &Written, multipart: bool) -> bool {
        let form = etag_is_md5_form(&written.etag) && (!multipart || self.multipart);
        self.etag && self.target_md5 && written.etag_is_md5 && form
    }

    /// Whether a server-side copy's ETag is compared with its source's.
    pub(crate) fn copied_etag(&self, source: &str, target: &str) -> bool {
        self.source_etag(source, false) && self.target_md5 && etag_is_md5_form(target)
    }

    /// Whether additional checksums are compared.
    pub(crate) fn checksums(&self) -> bool {
        self.checksums
    }
}

/// The error of two digests that differ: `source` is the source side's (reported by the source, or
/// computed from the bytes read from it), `target` the target side's. Events report them as the source
/// and target values.
pub(crate) fn mismatch(what: &'static str, key: &str, source: &str, target: &str) -> Error {
    Error::Verification {
        what,
        key: key.to_string(),
        expected: source.to_string(),
        actual: target.to_string(),
    }
}

/// What verifying one object came to.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The ETag was compared and matched.
    pub(crate) etag_verified: bool,
    /// The additional checksum was compared and matched.
    pub(crate) checksum_verified: bool,
    /// Why something asked for could not be verified.
    pub(crate) warning: Option<String>,
}

impl Outcome {
    /// Compares the source side's ETag with the target side's (one reported by a server, the other
    /// computed from the bytes): equal is verified; a difference is an error when the part layout was
    /// `known`, else a warning (two part layouts give two ETags for the same bytes).
    pub(crate) fn etag(&mut self, key: &str, source: &str, target: &str, known: bool) -> Result<()> {
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
    pub(crate) fn checksum(
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
    pub(crate) fn moved(self, bytes: u64) -> Moved {
        Moved {
            cancelled: false,
            bytes,
            etag_verified: self.etag_verified,
            checksum_verified: self.checksum_verified,
            warning: self.warning,
        }
    }
}
