//! Source filters that need nothing but the listing: one chain of small predicates, applied in the
//! reference's order (mtime, size, then key regexes).

use crate::storage::Entry;
use regex::Regex;
use std::time::SystemTime;

/// The listing-level filters.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only objects modified before this instant.
    pub mtime_before: Option<SystemTime>,
    /// Only objects modified at or after this instant.
    pub mtime_after: Option<SystemTime>,
    /// Only objects smaller than this size.
    pub smaller_size: Option<u64>,
    /// Only objects of at least this size.
    pub larger_size: Option<u64>,
    /// Only keys matching this regex.
    pub include_regex: Option<Regex>,
    /// No keys matching this regex.
    pub exclude_regex: Option<Regex>,
}

impl Filters {
    /// Whether a source entry passes every filter.
    pub fn accepts(&self, e: &Entry) -> bool {
        self.mtime_before.is_none_or(|t| e.mtime < t)
            && self.mtime_after.is_none_or(|t| e.mtime >= t)
            && self.smaller_size.is_none_or(|s| e.size < s)
            && self.larger_size.is_none_or(|s| e.size >= s)
            && self.accepts_key(&e.key)
    }

    /// Whether a key passes the key filters (also used to keep excluded target objects from deletion).
    pub fn accepts_key(&self, key: &str) -> bool {
        self.include_regex.as_ref().is_none_or(|r| r.is_match(key))
            && self.exclude_regex.as_ref().is_none_or(|r| !r.is_match(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn chain() {
        let e = Entry {
            key: "dir/ü.txt".into(),
            size: 10,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            etag: None,
        };
        assert!(Filters::default().accepts(&e));
        let f = Filters {
            include_regex: Some(Regex::new(r"ü\.txt$").unwrap()),
            ..Default::default()
        };
        assert!(f.accepts(&e));
        let f = Filters {
            exclude_regex: Some(Regex::new("^dir/").unwrap()),
            ..Default::default()
        };
        assert!(!f.accepts(&e));
        let f = Filters {
            smaller_size: Some(10),
            ..Default::default()
        };
        assert!(!f.accepts(&e));
        let f = Filters {
            larger_size: Some(10),
            ..Default::default()
        };
        assert!(f.accepts(&e));
        let f = Filters {
            mtime_after: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100)),
            ..Default::default()
        };
        assert!(f.accepts(&e));
        let f = Filters {
            mtime_before: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100)),
            ..Default::default()
        };
        assert!(!f.accepts(&e));
    }
}
