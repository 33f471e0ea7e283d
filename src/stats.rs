//! Run statistics (lock-free counters shared by all stages) and the per-object events a library user can
//! subscribe to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// The outcome of comparing one object in `--report-sync-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// Source and target hold the same bytes (by ETag or additional checksum).
    Match,
    /// They differ.
    Mismatch,
    /// The target lacks the object.
    Missing,
    /// Both exist with equal sizes but their digests cannot be compared.
    Unverifiable,
    /// System and user metadata are equal (`--report-metadata-sync-status`).
    MetadataMatch,
    /// Metadata differ.
    MetadataMismatch,
    /// Tag sets are equal (`--report-tagging-sync-status`).
    TaggingMatch,
    /// Tag sets differ.
    TaggingMismatch,
    /// Object annotations are equal (`--report-annotations-sync-status`).
    AnnotationsMatch,
    /// Object annotations differ.
    AnnotationsMismatch,
}

impl SyncStatus {
    /// The word printed for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncStatus::Match => "MATCH",
            SyncStatus::Mismatch => "MISMATCH",
            SyncStatus::Missing => "MISSING",
            SyncStatus::Unverifiable => "UNVERIFIABLE",
            SyncStatus::MetadataMatch => "METADATA_MATCH",
            SyncStatus::MetadataMismatch => "METADATA_MISMATCH",
            SyncStatus::TaggingMatch => "TAGGING_MATCH",
            SyncStatus::TaggingMismatch => "TAGGING_MISMATCH",
            SyncStatus::AnnotationsMatch => "ANNOTATIONS_MATCH",
            SyncStatus::AnnotationsMismatch => "ANNOTATIONS_MISMATCH",
        }
    }

    /// Whether this outcome means source and target agree.
    pub fn is_match(&self) -> bool {
        matches!(
            self,
            SyncStatus::Match | SyncStatus::MetadataMatch | SyncStatus::TaggingMatch | SyncStatus::AnnotationsMatch
        )
    }
}

/// What happened in a run: to the run itself or to one object. The event callback
/// ([`crate::callback::EventCallback`]) receives the same events, as [`crate::callback::EventData`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The run starts (both ends are open).
    PipelineStart,
    /// The run ended, with its final statistics.
    PipelineEnd {
        /// The statistics.
        stats: Stats,
    },
    /// An object's transfer starts.
    Started {
        /// Relative key.
        key: String,
        /// Its size.
        size: u64,
    },
    /// An object was left out by a filter (the filter callback, or content type, metadata or tags).
    Filtered {
        /// Relative key.
        key: String,
        /// Which filter.
        message: String,
    },
    /// The preprocess callback cancelled an object (counted as skipped).
    Cancelled {
        /// Relative key.
        key: String,
    },
    /// An object's additional checksum was verified end to end.
    ChecksumVerified {
        /// Relative key.
        key: String,
    },
    /// An object's ETag or additional checksum did not match (the object also fails).
    Mismatch {
        /// Relative key.
        key: String,
        /// Additional checksum (`true`) or ETag.
        checksum: bool,
        /// The value the other side reports.
        expected: String,
        /// The value computed from the bytes.
        actual: String,
    },
    /// Transferred (or would be, in a dry run) and verified where possible.
    Transferred {
        /// Relative key.
        key: String,
        /// Bytes moved.
        bytes: u64,
        /// Whether the ETag was verified.
        etag_verified: bool,
    },
    /// Up to date, not transferred.
    Skipped {
        /// Relative key.
        key: String,
    },
    /// Deleted from the target (or would be, in a dry run).
    Deleted {
        /// Relative key.
        key: String,
    },
    /// Not transferred, or transferred but not verifiable, for a reason the user should see.
    Warning {
        /// Relative key.
        key: String,
        /// The reason.
        message: String,
    },
    /// Compared in `--report-sync-status`.
    Status {
        /// Relative key.
        key: String,
        /// The outcome.
        status: SyncStatus,
    },
    /// Failed.
    Failed {
        /// Relative key.
        key: String,
        /// The error, one line.
        message: String,
    },
}

/// Live counters of a run.
#[derive(Debug, Default)]
pub struct Counters {
    transferred: AtomicU64,
    bytes: AtomicU64,
    live_bytes: AtomicU64,
    etag_verified: AtomicU64,
    checksum_verified: AtomicU64,
    skipped: AtomicU64,
    deleted: AtomicU64,
    warnings: AtomicU64,
    failed: AtomicU64,
    planned_objects: AtomicU64,
    planned_bytes: AtomicU64,
    listed_source: AtomicU64,
    listed_target: AtomicU64,
    listing_done: AtomicBool,
}

/// A snapshot of the counters at the end (or middle) of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Objects transferred.
    pub transferred: u64,
    /// Bytes of the objects transferred.
    pub bytes: u64,
    /// Bytes moved so far, including attempts that were retried (for progress display).
    pub live_bytes: u64,
    /// Objects whose ETag was verified.
    pub etag_verified: u64,
    /// Objects whose additional checksum was verified.
    pub checksum_verified: u64,
    /// Objects up to date.
    pub skipped: u64,
    /// Objects deleted.
    pub deleted: u64,
    /// Warnings.
    pub warnings: u64,
    /// Objects failed.
    pub failed: u64,
    /// Objects to transfer, known so far.
    pub planned_objects: u64,
    /// Bytes to transfer, known so far.
    pub planned_bytes: u64,
    /// Source objects listed so far (by the listing that runs: a listing repeated because one was
    /// found out of key order counts from zero again).
    pub listed_source: u64,
    /// Target objects listed so far (likewise).
    pub listed_target: u64,
    /// Whether both listings have finished (so the plan is complete).
    pub listing_done: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// Counters plus the event sinks (the [`crate::Sync::events`] stream and the event callback); one
/// per run, shared by all stages. Every event passes through `Reporter::emit`.
#[derive(Debug)]
pub struct Reporter {
    counters: Counters,
    events: Option<mpsc::UnboundedSender<SyncEvent>>,
    callback: Option<(mpsc::UnboundedSender<SyncEvent>, crate::callback::EventType)>,
    started: std::time::Instant,
}

impl Reporter {
    /// A reporter that forwards events to `events` when given.
    pub fn new(events: Option<mpsc::UnboundedSender<SyncEvent>>) -> Self {
        Reporter {
            counters: Counters::default(),
            events,
            callback: None,
            started: std::time::Instant::now(),
        }
    }

    /// Also forwards to `callback` (the event callback's dispatcher) the events of the types in
    /// `mask`, and always the run's end (the dispatcher stops there). Other events are not queued.
    pub fn with_callback(
        mut self,
        callback: mpsc::UnboundedSender<SyncEvent>,
        mask: crate::callback::EventType,
    ) -> Self {
        self.callback = Some((callback, mask));
        self
    }

    fn emit(&self, e: SyncEvent) {
        if let Some((tx, mask)) = &self.callback {
            let wanted = matches!(e, SyncEvent::PipelineEnd { .. })
                || crate::callback::EventData::from_sync_event(&e, false)
                    .iter()
                    .any(|d| mask.contains(d.event_type));
            if wanted {
                let _ = tx.send(e.clone());
            }
        }
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    /// Records the start of the run.
    pub fn pipeline_start(&self) {
        self.emit(SyncEvent::PipelineStart);
    }

    /// Records the end of the run, with its statistics.
    pub fn pipeline_end(&self) {
        self.emit(SyncEvent::PipelineEnd { stats: self.snapshot() });
    }

    /// Records the start of an object's transfer.
    pub fn started(&self, key: &str, size: u64) {
        self.emit(SyncEvent::Started {
            key: key.to_string(),
            size,
        });
    }

    /// Records an object left out by a filter.
    pub fn filtered(&self, key: &str, message: &str) {
        tracing::debug!(key, "object filtered: {message}");
        self.emit(SyncEvent::Filtered {
            key: key.to_string(),
            message: message.to_string(),
        });
    }

    /// Records an object cancelled by the preprocess callback (counted as skipped).
    pub fn cancelled(&self, key: &str) {
        tracing::info!(key, "object cancelled by the preprocess callback");
        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
        self.emit(SyncEvent::Cancelled { key: key.to_string() });
    }

    /// Records an object whose additional checksum was verified.
    pub fn checksum_verified(&self, key: &str) {
        self.counters.checksum_verified.fetch_add(1, Ordering::Relaxed);
        self.emit(SyncEvent::ChecksumVerified { key: key.to_string() });
    }

    /// Reports the error that ended the run to the event sinks (the caller shows it to the user).
    pub fn run_failed(&self, error: &crate::Error) {
        self.emit(SyncEvent::Failed {
            key: String::new(),
            message: error.to_string(),
        });
    }

    /// Records and logs a failed object; a digest mismatch is also reported as such.
    pub fn failed_with(&self, key: &str, error: &crate::Error) {
        if let crate::Error::Verification {
            what, expected, actual, ..
        } = error
        {
            self.emit(SyncEvent::Mismatch {
                key: key.to_string(),
                checksum: what.contains("checksum"),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        self.failed(key, error.to_string());
    }

    /// Records a planned transfer (the diff decided an object needs to move).
    pub fn planned(&self, bytes: u64) {
        self.counters.planned_objects.fetch_add(1, Ordering::Relaxed);
        self.counters.planned_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts listed objects (for the progress line while the listings run).
    pub fn listed(&self, source: u64, target: u64) {
        self.counters.listed_source.fetch_add(source, Ordering::Relaxed);
        self.counters.listed_target.fetch_add(target, Ordering::Relaxed);
    }

    /// Starts the listed counts again from zero: the listings are repeated (one was found out of key
    /// order), and the progress line counts the listing that runs.
    pub fn relisting(&self) {
        self.counters.listed_source.store(0, Ordering::Relaxed);
        self.counters.listed_target.store(0, Ordering::Relaxed);
    }

    /// Marks the listings as complete.
    pub fn listing_done(&self) {
        self.counters.listing_done.store(true, Ordering::Relaxed);
    }

    /// Counts bytes as they move (for the progress bar).
    pub fn add_bytes(&self, n: u64) {
        self.counters.live_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a completed transfer.
    pub fn transferred(&self, key: &str, bytes: u64, etag_verified: bool) {
        self.counters.transferred.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        if etag_verified {
            self.counters.etag_verified.fetch_add(1, Ordering::Relaxed);
        }
        self.emit(SyncEvent::Transferred {
            key: key.to_string(),
            bytes,
            etag_verified,
        });
    }

    /// Records an up-to-date object.
    pub fn skipped(&self, key: &str) {
        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
        self.emit(SyncEvent::Skipped { key: key.to_string() });
    }

    /// Records a deletion.
    pub fn deleted(&self, key: &str) {
        self.counters.deleted.fetch_add(1, Ordering::Relaxed);
        self.emit(SyncEvent::Deleted { key: key.to_string() });
    }

    /// Records and logs a warning.
    pub fn warning(&self, key: &str, message: String) {
        tracing::warn!(key, "{message}");
        self.counters.warnings.fetch_add(1, Ordering::Relaxed);
        self.emit(SyncEvent::Warning {
            key: key.to_string(),
            message,
        });
    }

    /// Records a `--report-sync-status` outcome; anything but a match is a warning.
    pub fn status(&self, key: &str, status: SyncStatus) {
        if status.is_match() {
            tracing::info!(key, status = status.as_str(), "sync status");
            if status == SyncStatus::Match {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            tracing::warn!(key, status = status.as_str(), "sync status");
            self.counters.warnings.fetch_add(1, Ordering::Relaxed);
        }
        self.emit(SyncEvent::Status {
            key: key.to_string(),
            status,
        });
    }

    /// Records and logs a failure.
    pub fn failed(&self, key: &str, message: String) {
        tracing::error!(key, "{message}");
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.emit(SyncEvent::Failed {
            key: key.to_string(),
            message,
        });
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> Stats {
        let c = &self.counters;
        Stats {
            transferred: c.transferred.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            live_bytes: c.live_bytes.load(Ordering::Relaxed),
            etag_verified: c.etag_verified.load(Ordering::Relaxed),
            checksum_verified: c.checksum_verified.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            deleted: c.deleted.load(Ordering::Relaxed),
            warnings: c.warnings.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            planned_objects: c.planned_objects.load(Ordering::Relaxed),
            planned_bytes: c.planned_bytes.load(Ordering::Relaxed),
            listed_source: c.listed_source.load(Ordering::Relaxed),
            listed_target: c.listed_target.load(Ordering::Relaxed),
            listing_done: c.listing_done.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Stats {
    /// The process exit code these statistics stand for (0 ok, 1 errors, 3 warnings).
    pub fn exit_code(&self, warn_as_error: bool) -> i32 {
        if self.failed > 0 || (warn_as_error && self.warnings > 0) {
            crate::error::EXIT_ERROR
        } else if self.warnings > 0 {
            crate::error::EXIT_WARNING
        } else {
            crate::error::EXIT_OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repeated listing (one was out of key order) counts from zero: the progress line never shows
    /// the first listing's objects twice.
    #[test]
    fn a_repeated_listing_counts_from_zero() {
        let r = Reporter::new(None);
        r.listed(3, 2);
        r.listed(1, 0);
        assert_eq!((r.snapshot().listed_source, r.snapshot().listed_target), (4, 2));
        r.relisting();
        r.listed(1, 1);
        assert_eq!((r.snapshot().listed_source, r.snapshot().listed_target), (1, 1));
    }

    /// The event callback's queue holds only the events its mask asks for, plus the run's end.
    #[test]
    fn the_callback_queue_gets_only_masked_events() {
        use crate::callback::EventType;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (all_tx, mut all_rx) = mpsc::unbounded_channel();
        let r = Reporter::new(Some(all_tx)).with_callback(tx, EventType::SYNC_COMPLETE);
        r.pipeline_start();
        r.started("k", 1);
        r.transferred("k", 1, true);
        r.deleted("d");
        r.pipeline_end();
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0], SyncEvent::Transferred { .. }));
        assert!(matches!(got[1], SyncEvent::PipelineEnd { .. }));
        // The events() stream still sees everything.
        let mut n = 0;
        while all_rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn exit_codes() {
        let mut s = Stats::default();
        assert_eq!(s.exit_code(false), 0);
        s.warnings = 1;
        assert_eq!(s.exit_code(false), 3);
        assert_eq!(s.exit_code(true), 1);
        s.failed = 1;
        assert_eq!(s.exit_code(false), 1);
    }
}
