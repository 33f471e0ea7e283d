//! Change detection as one table: given the source entry and the target entry (if any), decide whether
//! to transfer, skip, or compare ETags (which needs the bytes or the server's digests).

use crate::checksum::additional::ChecksumAlgorithm;
use crate::storage::Entry;

/// The update check, as the reference's `--check-*` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckMode {
    /// Transfer when the source is newer than the target (the default).
    #[default]
    Mtime,
    /// Transfer when the sizes differ (`--check-size`).
    Size,
    /// Transfer when the ETags differ (`--check-etag`).
    Etag,
    /// When the source is newer, transfer only if the ETags differ (`--check-mtime-and-etag`).
    MtimeAndEtag,
    /// Transfer when the additional checksums differ (`--check-additional-checksum`).
    Checksum(ChecksumAlgorithm),
    /// When the source is newer, transfer only if the additional checksums differ
    /// (`--check-mtime-and-additional-checksum`).
    MtimeAndChecksum(ChecksumAlgorithm),
}

impl CheckMode {
    /// Whether this mode compares digests (ETags or checksums) rather than metadata only.
    pub fn compares_digests(&self) -> bool {
        !matches!(self, CheckMode::Mtime | CheckMode::Size)
    }
}

/// What to do with one source entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transfer it.
    Transfer,
    /// The target is up to date.
    Skip,
    /// Transfer only if the ETags (or additional checksums, by the mode) differ; computed by a worker.
    CompareEtag,
}

/// The decision table.
pub fn decide(mode: CheckMode, source: &Entry, target: Option<&Entry>) -> Verdict {
    let Some(target) = target else {
        return Verdict::Transfer;
    };
    // Whole seconds: S3 keeps last-modified to the second (HTTP dates), file systems to the nanosecond.
    let newer = secs(source.mtime) > secs(target.mtime);
    match mode {
        CheckMode::Mtime => {
            if newer {
                Verdict::Transfer
            } else {
                Verdict::Skip
            }
        }
        CheckMode::Size => {
            if source.size != target.size {
                Verdict::Transfer
            } else {
                Verdict::Skip
            }
        }
        CheckMode::Etag | CheckMode::Checksum(_) => {
            if source.size != target.size {
                Verdict::Transfer
            } else {
                Verdict::CompareEtag
            }
        }
        CheckMode::MtimeAndEtag | CheckMode::MtimeAndChecksum(_) => match (newer, source.size == target.size) {
            (false, _) => Verdict::Skip,
            (true, false) => Verdict::Transfer,
            (true, true) => Verdict::CompareEtag,
        },
    }
}

fn secs(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn e(size: u64, secs: u64) -> Entry {
        Entry {
            key: "k".into(),
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            etag: None,
            version_id: None,
        }
    }

    #[test]
    fn table() {
        use CheckMode::*;
        use Verdict::*;
        let rows = [
            (Mtime, e(1, 10), None, Transfer),
            (Mtime, e(1, 10), Some(e(1, 5)), Transfer),
            (Mtime, e(1, 10), Some(e(2, 10)), Skip),
            (Mtime, e(1, 5), Some(e(1, 10)), Skip),
            (Mtime, e(1, 10), Some(e(1, 10)), Skip),
            (Size, e(1, 10), Some(e(1, 5)), Skip),
            (Size, e(1, 1), Some(e(2, 5)), Transfer),
            (Etag, e(1, 1), Some(e(1, 5)), CompareEtag),
            (Etag, e(1, 1), Some(e(2, 5)), Transfer),
            (MtimeAndEtag, e(1, 1), Some(e(1, 5)), Skip),
            (MtimeAndEtag, e(1, 9), Some(e(1, 5)), CompareEtag),
            (MtimeAndEtag, e(1, 9), Some(e(2, 5)), Transfer),
        ];
        for (mode, s, t, want) in rows {
            assert_eq!(decide(mode, &s, t.as_ref()), want, "{mode:?} {s:?} {t:?}");
        }
    }
}
