//! Object annotations (named payloads attached to one version of an S3 object) kept in step between
//! two buckets.
//!
//! Annotations are not part of the object's bytes or metadata, so a copy does not carry them (a
//! single-request CopyObject does inside one S3 service, but nothing else does, and a server that
//! does not copy them would leave the target silently behind). After an object is written, the two
//! annotation lists are compared and the target is brought in line: new and changed annotations are
//! copied (GetObjectAnnotation, PutObjectAnnotation), the ones the source lacks are deleted. When
//! both lists already agree, that costs two ListObjectAnnotations calls and nothing else.
//!
//! Payloads are held in memory one at a time per object (annotations are small; the worker count
//! bounds how many objects are at this step together).

use crate::error::Result;
use crate::storage::s3::{AnnotationInfo, S3Storage};
use std::collections::BTreeMap;
use tracing::{debug, info};

/// What it takes to make a target's annotations equal to a source's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationPlan {
    /// Names to copy from the source: missing on the target, or changed.
    pub copy: Vec<String>,
    /// Names to delete from the target: the source has no annotation of that name.
    pub delete: Vec<String>,
}

impl AnnotationPlan {
    /// Source and target already agree.
    pub fn is_empty(&self) -> bool {
        self.copy.is_empty() && self.delete.is_empty()
    }
}

/// Compares two annotation lists. An annotation on both sides is changed when its ETags differ
/// (`check_etag`), or else when its sizes differ or the source's is newer than the target's.
pub fn plan(source: &[AnnotationInfo], target: &[AnnotationInfo], check_etag: bool) -> AnnotationPlan {
    let target: BTreeMap<&str, &AnnotationInfo> = target.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut out = AnnotationPlan::default();
    for s in source {
        let changed = match target.get(s.name.as_str()) {
            None => true,
            Some(t) if check_etag => s.etag.is_none() || s.etag != t.etag,
            Some(t) => s.size != t.size || s.last_modified > t.last_modified,
        };
        if changed {
            out.copy.push(s.name.clone());
        }
    }
    let source: std::collections::BTreeSet<&str> = source.iter().map(|a| a.name.as_str()).collect();
    out.delete = target
        .keys()
        .filter(|n| !source.contains(*n))
        .map(|n| n.to_string())
        .collect();
    out
}

/// One object on one side: where it is and which version.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// The bucket and prefix.
    pub storage: &'a S3Storage,
    /// The key, relative to the prefix.
    pub key: &'a str,
    /// The version (`None`: the latest).
    pub version_id: Option<&'a str>,
}

/// Makes the target object's annotations equal to the source object's and returns what was done.
/// In a dry run nothing is written; the plan is logged and returned.
pub async fn sync(
    source: ObjectRef<'_>,
    target: ObjectRef<'_>,
    check_etag: bool,
    dry_run: bool,
) -> Result<AnnotationPlan> {
    let todo = compare(source, target, check_etag).await?;
    if dry_run {
        for name in &todo.copy {
            info!(key = %target.key, annotation_name = %name, "[dry-run] object annotation copied.");
        }
        for name in &todo.delete {
            info!(key = %target.key, annotation_name = %name, "[dry-run] object annotation deleted.");
        }
        return Ok(todo);
    }
    for name in &todo.copy {
        // Deleted at the source since it was listed: it is not copied (a later run with
        // --sync-latest-object-annotations deletes the target's, if there is one).
        let Some(payload) = source
            .storage
            .get_annotation(source.key, source.version_id, name)
            .await?
        else {
            debug!(key = %source.key, annotation_name = %name, "annotation vanished from the source");
            continue;
        };
        target
            .storage
            .put_annotation(target.key, target.version_id, name, payload)
            .await?;
        debug!(key = %target.key, annotation_name = %name, "object annotation copied");
    }
    for name in &todo.delete {
        target
            .storage
            .delete_annotation(target.key, target.version_id, name)
            .await?;
        debug!(key = %target.key, annotation_name = %name, "object annotation deleted");
    }
    Ok(todo)
}

/// Whether the two objects carry the same annotations (`--report-annotations-sync-status`).
pub async fn same(source: ObjectRef<'_>, target: ObjectRef<'_>, check_etag: bool) -> Result<bool> {
    Ok(compare(source, target, check_etag).await?.is_empty())
}

/// Lists both objects' annotations and plans what would make the target's equal to the source's.
async fn compare(source: ObjectRef<'_>, target: ObjectRef<'_>, check_etag: bool) -> Result<AnnotationPlan> {
    let wanted = source.storage.list_annotations(source.key, source.version_id).await?;
    let present = target.storage.list_annotations(target.key, target.version_id).await?;
    Ok(plan(&wanted, &present, check_etag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn a(name: &str, etag: &str, size: i64, secs: u64) -> AnnotationInfo {
        AnnotationInfo {
            name: name.into(),
            etag: (!etag.is_empty()).then(|| etag.to_string()),
            size,
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn new_changed_and_extra_annotations_are_planned() {
        let source = [
            a("keep", "\"1\"", 3, 10),
            a("new", "\"2\"", 3, 10),
            a("edit", "\"3\"", 3, 10),
        ];
        let target = [
            a("edit", "\"9\"", 3, 20),
            a("extra", "\"4\"", 1, 10),
            a("keep", "\"1\"", 3, 20),
        ];
        let p = plan(&source, &target, true);
        assert_eq!(p.copy, vec!["new", "edit"]);
        assert_eq!(p.delete, vec!["extra"]);
        assert!(!p.is_empty());
        assert!(plan(&source, &source, true).is_empty());
        assert!(plan(&[], &[], true).is_empty());
    }

    #[test]
    fn without_etags_size_and_a_newer_source_decide() {
        // Same size, target newer (the copy of an earlier run): unchanged although the ETags differ.
        let p = plan(&[a("x", "\"1\"", 3, 10)], &[a("x", "\"2\"", 3, 20)], false);
        assert!(p.is_empty());
        // Source rewritten after the copy.
        let p = plan(&[a("x", "\"1\"", 3, 30)], &[a("x", "\"1\"", 3, 20)], false);
        assert_eq!(p.copy, vec!["x"]);
        // Size differs.
        let p = plan(&[a("x", "\"1\"", 4, 10)], &[a("x", "\"1\"", 3, 20)], false);
        assert_eq!(p.copy, vec!["x"]);
        // With ETags checked, the differing ETag is a change whatever the times.
        let p = plan(&[a("x", "\"1\"", 3, 10)], &[a("x", "\"2\"", 3, 20)], true);
        assert_eq!(p.copy, vec!["x"]);
        // A source annotation without an ETag cannot be compared: it is copied.
        let p = plan(&[a("x", "", 3, 10)], &[a("x", "", 3, 20)], true);
        assert_eq!(p.copy, vec!["x"]);
    }
}
