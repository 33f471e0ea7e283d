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
    /// Only objects whose Content-Type matches.
    pub include_content_type_regex: Option<Regex>,
    /// No objects whose Content-Type matches.
    pub exclude_content_type_regex: Option<Regex>,
    /// Only objects whose user metadata (`k1=v1,k2=v2`, keys sorted) matches.
    pub include_metadata_regex: Option<Regex>,
    /// No objects whose user metadata matches.
    pub exclude_metadata_regex: Option<Regex>,
    /// Only objects whose tags (`k1=v1&k2=v2`, keys sorted) match.
    pub include_tag_regex: Option<Regex>,
    /// No objects whose tags match.
    pub exclude_tag_regex: Option<Regex>,
}

/// What the attribute filters look at, fetched only for objects that passed every cheaper filter.
#[derive(Debug, Clone, Default)]
pub struct ObjectFacts {
    /// Content-Type (guessed from the name for local files).
    pub content_type: Option<String>,
    /// User metadata, keys lower-case and sorted: `k1=v1,k2=v2`.
    pub metadata: String,
    /// Tags, keys sorted: `k1=v1&k2=v2`.
    pub tags: String,
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

    /// Whether Content-Type or metadata filters are set (they need a HEAD of S3 sources).
    pub fn needs_head(&self) -> bool {
        self.include_content_type_regex.is_some()
            || self.exclude_content_type_regex.is_some()
            || self.include_metadata_regex.is_some()
            || self.exclude_metadata_regex.is_some()
    }

    /// Whether tag filters are set (they need GetObjectTagging of S3 sources).
    pub fn needs_tags(&self) -> bool {
        self.include_tag_regex.is_some() || self.exclude_tag_regex.is_some()
    }

    /// The attribute filters, in the reference's order: content type, metadata, tags.
    pub fn accepts_facts(&self, f: &ObjectFacts) -> bool {
        let ct = f.content_type.as_deref().unwrap_or("");
        let inc = |r: &Option<Regex>, v: &str| r.as_ref().is_none_or(|r| r.is_match(v));
        let exc = |r: &Option<Regex>, v: &str| r.as_ref().is_none_or(|r| !r.is_match(v));
        inc(&self.include_content_type_regex, ct)
            && exc(&self.exclude_content_type_regex, ct)
            && inc(&self.include_metadata_regex, &f.metadata)
            && exc(&self.exclude_metadata_regex, &f.metadata)
            && inc(&self.include_tag_regex, &f.tags)
            && exc(&self.exclude_tag_regex, &f.tags)
    }

    /// Whether `--delete` may remove a target-only key: keys outside `--filter-include-regex` are
    /// never touched; keys matching `--filter-exclude-regex` are protected unless `delete_excluded`
    /// (`--delete-excluded`).
    pub fn may_delete(&self, key: &str, delete_excluded: bool) -> bool {
        self.included(key) && (delete_excluded || !self.excluded(key))
    }

    /// Whether a key passes the key filters.
    pub fn accepts_key(&self, key: &str) -> bool {
        self.included(key) && !self.excluded(key)
    }

    fn included(&self, key: &str) -> bool {
        self.include_regex.as_ref().is_none_or(|r| r.is_match(key))
    }

    fn excluded(&self, key: &str) -> bool {
        self.exclude_regex.as_ref().is_some_and(|r| r.is_match(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn attribute_filters() {
        let facts = ObjectFacts {
            content_type: Some("text/plain".into()),
            metadata: "a=1,b=2".into(),
            tags: "env=prod".into(),
        };
        let f = Filters {
            include_content_type_regex: Some(Regex::new("^text/").unwrap()),
            ..Default::default()
        };
        assert!(f.accepts_facts(&facts));
        let f = Filters {
            exclude_metadata_regex: Some(Regex::new("b=2").unwrap()),
            ..Default::default()
        };
        assert!(!f.accepts_facts(&facts));
        let f = Filters {
            include_tag_regex: Some(Regex::new("^env=(prod|dev)$").unwrap()),
            ..Default::default()
        };
        assert!(f.accepts_facts(&facts));
        let f = Filters {
            include_tag_regex: Some(Regex::new("env=dev").unwrap()),
            ..Default::default()
        };
        assert!(!f.accepts_facts(&facts));
    }

    #[test]
    fn chain() {
        let e = Entry {
            key: "dir/ü.txt".into(),
            size: 10,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            etag: None,
            version_id: None,
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
