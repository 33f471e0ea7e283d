//! Event types and the record an event callback receives, with the bit values of the original
//! s3sync, so event scripts written for it work unchanged.

use crate::stats::{Stats, SyncEvent};

/// A set of event types (bit flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventType(pub u64);

impl EventType {
    /// No event.
    pub const UNDEFINED: EventType = EventType(0);
    /// The run starts.
    pub const PIPELINE_START: EventType = EventType(1 << 1);
    /// The run ends.
    pub const PIPELINE_END: EventType = EventType(1 << 2);
    /// An object's transfer starts.
    pub const SYNC_START: EventType = EventType(1 << 3);
    /// An object's transfer completed.
    pub const SYNC_COMPLETE: EventType = EventType(1 << 4);
    /// A target object was deleted.
    pub const SYNC_DELETE: EventType = EventType(1 << 5);
    /// An object's ETag was verified.
    pub const SYNC_ETAG_VERIFIED: EventType = EventType(1 << 6);
    /// An object's additional checksum was verified.
    pub const SYNC_CHECKSUM_VERIFIED: EventType = EventType(1 << 7);
    /// An object's ETag did not match.
    pub const SYNC_ETAG_MISMATCH: EventType = EventType(1 << 8);
    /// An object's additional checksum did not match.
    pub const SYNC_CHECKSUM_MISMATCH: EventType = EventType(1 << 9);
    /// A warning.
    pub const SYNC_WARNING: EventType = EventType(1 << 10);
    /// An error.
    pub const PIPELINE_ERROR: EventType = EventType(1 << 11);
    /// An object was cancelled by the preprocess callback.
    pub const SYNC_CANCEL: EventType = EventType(1 << 12);
    /// An object's bytes were written.
    pub const SYNC_WRITE: EventType = EventType(1 << 13);
    /// An object was filtered out.
    pub const SYNC_FILTERED: EventType = EventType(1 << 14);
    /// The statistics of the run, at its end.
    pub const STATS_REPORT: EventType = EventType(1 << 15);
    /// Every event.
    pub const ALL_EVENTS: EventType = EventType(!0);

    /// Whether `self` includes every bit of `other`.
    pub fn contains(self, other: EventType) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// The constant's name, for logs and tests.
    pub fn name(self) -> &'static str {
        const NAMES: [(EventType, &str); 15] = [
            (EventType::PIPELINE_START, "PIPELINE_START"),
            (EventType::PIPELINE_END, "PIPELINE_END"),
            (EventType::SYNC_START, "SYNC_START"),
            (EventType::SYNC_COMPLETE, "SYNC_COMPLETE"),
            (EventType::SYNC_DELETE, "SYNC_DELETE"),
            (EventType::SYNC_ETAG_VERIFIED, "SYNC_ETAG_VERIFIED"),
            (EventType::SYNC_CHECKSUM_VERIFIED, "SYNC_CHECKSUM_VERIFIED"),
            (EventType::SYNC_ETAG_MISMATCH, "SYNC_ETAG_MISMATCH"),
            (EventType::SYNC_CHECKSUM_MISMATCH, "SYNC_CHECKSUM_MISMATCH"),
            (EventType::SYNC_WARNING, "SYNC_WARNING"),
            (EventType::PIPELINE_ERROR, "PIPELINE_ERROR"),
            (EventType::SYNC_CANCEL, "SYNC_CANCEL"),
            (EventType::SYNC_WRITE, "SYNC_WRITE"),
            (EventType::SYNC_FILTERED, "SYNC_FILTERED"),
            (EventType::STATS_REPORT, "STATS_REPORT"),
        ];
        NAMES.iter().find(|(t, _)| *t == self).map_or("UNDEFINED", |(_, n)| n)
    }
}

impl std::ops::BitOr for EventType {
    type Output = EventType;
    fn bitor(self, rhs: EventType) -> EventType {
        EventType(self.0 | rhs.0)
    }
}

/// One event as a callback receives it. Fields that do not apply to the event are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventData {
    /// The event type (one bit).
    pub event_type: EventType,
    /// Whether the run is a dry run.
    pub dry_run: bool,
    /// The object's key, for object events.
    pub key: Option<String>,
    /// The source object's version id.
    pub source_version_id: Option<String>,
    /// The target object's version id.
    pub target_version_id: Option<String>,
    /// The source object's size.
    pub source_size: Option<u64>,
    /// The source ETag (mismatch events: the expected value).
    pub source_etag: Option<String>,
    /// The target ETag (mismatch events: the value found).
    pub target_etag: Option<String>,
    /// The source additional checksum (mismatch events: the expected value).
    pub source_checksum: Option<String>,
    /// The target additional checksum (mismatch events: the value found).
    pub target_checksum: Option<String>,
    /// Bytes written (SYNC_WRITE, SYNC_COMPLETE).
    pub byte_written: Option<u64>,
    /// A message: the warning, error or filter reason.
    pub message: Option<String>,
    /// Statistics (STATS_REPORT).
    pub stats: Option<Stats>,
}

impl EventData {
    fn new(event_type: EventType, dry_run: bool, key: Option<&str>) -> Self {
        EventData {
            event_type,
            dry_run,
            key: key.map(str::to_string),
            ..Default::default()
        }
    }

    /// The callback events one reported event stands for, in order.
    pub fn from_sync_event(e: &SyncEvent, dry_run: bool) -> Vec<EventData> {
        let ev = |t, key: &str| EventData::new(t, dry_run, Some(key));
        match e {
            SyncEvent::PipelineStart => vec![EventData::new(EventType::PIPELINE_START, dry_run, None)],
            SyncEvent::PipelineEnd { stats } => vec![
                EventData {
                    stats: Some(stats.clone()),
                    ..EventData::new(EventType::STATS_REPORT, dry_run, None)
                },
                EventData::new(EventType::PIPELINE_END, dry_run, None),
            ],
            SyncEvent::Started { key, size } => vec![EventData {
                source_size: Some(*size),
                ..ev(EventType::SYNC_START, key)
            }],
            SyncEvent::Transferred {
                key,
                bytes,
                etag_verified,
            } => {
                let mut out = vec![EventData {
                    byte_written: Some(*bytes),
                    ..ev(EventType::SYNC_WRITE, key)
                }];
                if *etag_verified {
                    out.push(ev(EventType::SYNC_ETAG_VERIFIED, key));
                }
                out.push(EventData {
                    byte_written: Some(*bytes),
                    ..ev(EventType::SYNC_COMPLETE, key)
                });
                out
            }
            SyncEvent::ChecksumVerified { key } => vec![ev(EventType::SYNC_CHECKSUM_VERIFIED, key)],
            SyncEvent::Skipped { .. } | SyncEvent::Status { .. } => Vec::new(),
            SyncEvent::Filtered { key, message } => vec![EventData {
                message: Some(message.clone()),
                ..ev(EventType::SYNC_FILTERED, key)
            }],
            SyncEvent::Cancelled { key } => vec![ev(EventType::SYNC_CANCEL, key)],
            SyncEvent::Deleted { key } => vec![ev(EventType::SYNC_DELETE, key)],
            SyncEvent::Warning { key, message } => vec![EventData {
                message: Some(message.clone()),
                ..ev(EventType::SYNC_WARNING, key)
            }],
            SyncEvent::Mismatch {
                key,
                checksum,
                expected,
                actual,
            } => {
                let mut d = ev(
                    if *checksum {
                        EventType::SYNC_CHECKSUM_MISMATCH
                    } else {
                        EventType::SYNC_ETAG_MISMATCH
                    },
                    key,
                );
                if *checksum {
                    d.source_checksum = Some(expected.clone());
                    d.target_checksum = Some(actual.clone());
                } else {
                    d.source_etag = Some(expected.clone());
                    d.target_etag = Some(actual.clone());
                }
                vec![d]
            }
            SyncEvent::Failed { key, message } => vec![EventData {
                message: Some(message.clone()),
                ..ev(EventType::PIPELINE_ERROR, key)
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_original() {
        assert_eq!(EventType::PIPELINE_START.0, 2);
        assert_eq!(EventType::SYNC_COMPLETE.0, 16);
        assert_eq!(EventType::SYNC_FILTERED.0, 16384);
        assert_eq!(EventType::STATS_REPORT.0, 32768);
        assert!(EventType::ALL_EVENTS.contains(EventType::SYNC_DELETE));
        assert!(!EventType::SYNC_START.contains(EventType::SYNC_DELETE));
        assert_eq!(EventType::SYNC_WRITE.name(), "SYNC_WRITE");
    }

    #[test]
    fn a_verified_transfer_is_write_verified_complete() {
        let e = SyncEvent::Transferred {
            key: "k".into(),
            bytes: 3,
            etag_verified: true,
        };
        let types: Vec<_> = EventData::from_sync_event(&e, false)
            .iter()
            .map(|d| d.event_type.name())
            .collect();
        assert_eq!(types, ["SYNC_WRITE", "SYNC_ETAG_VERIFIED", "SYNC_COMPLETE"]);
    }
}
