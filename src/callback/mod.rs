//! User callbacks: a filter that decides per object, a preprocess hook that edits what is written, and
//! an event hook that sees everything the run reports. Each is a trait, so a library user plugs in Rust
//! code; the CLI's Lua scripts ([`lua`]) are implementations of the same traits. Events come from the
//! one place that counts them ([`crate::stats::Reporter`]), so the event callback and
//! [`crate::Sync::events`] never disagree.

pub mod event;
pub mod lua;

pub use event::{EventData, EventType};

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// A callback failed (a script error, a timeout, an invalid value it returned).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CallbackError(pub String);

/// What a filter callback sees of a source object: the fields of its listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// Key relative to the source prefix or directory.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last-modified time.
    pub last_modified: SystemTime,
    /// Version id, in versioned syncs.
    pub version_id: Option<String>,
    /// ETag without quotes (S3 sources).
    pub e_tag: Option<String>,
    /// Additional checksum algorithm named by the listing, when it names one.
    pub checksum_algorithm: Option<String>,
    /// Additional checksum type named by the listing, when it names one.
    pub checksum_type: Option<String>,
    /// Whether this is the latest version (always true outside versioned listings).
    pub is_latest: bool,
    /// Whether this is a delete marker.
    pub is_delete_marker: bool,
}

impl SourceObject {
    /// The callback's view of a listing entry.
    pub fn from_entry(e: &crate::storage::Entry) -> Self {
        SourceObject {
            key: e.key.clone(),
            size: e.size,
            last_modified: e.mtime,
            version_id: e.version_id.clone(),
            e_tag: e.etag.clone(),
            checksum_algorithm: None,
            checksum_type: None,
            is_latest: true,
            is_delete_marker: false,
        }
    }
}

/// What a preprocess callback sees of the object about to be written: the source's system and user
/// metadata as a HEAD (S3) or the file system (local) reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceObjectInfo {
    /// Key relative to the source prefix or directory.
    pub key: String,
    /// Size in bytes.
    pub content_length: u64,
    /// Last-modified time.
    pub last_modified: Option<SystemTime>,
    /// ETag without quotes (S3 sources).
    pub e_tag: Option<String>,
    /// Version id (S3 sources of a versioned bucket).
    pub version_id: Option<String>,
    /// Content-Type (guessed from the name for local files).
    pub content_type: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Expires, RFC 3339.
    pub expires_string: Option<String>,
    /// x-amz-website-redirect-location.
    pub website_redirect_location: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Storage class.
    pub storage_class: Option<String>,
    /// Number of tags (`x-amz-tagging-count`).
    pub tag_count: Option<i32>,
    /// Number of parts, when known.
    pub parts_count: Option<u64>,
    /// Server-side encryption.
    pub server_side_encryption: Option<String>,
    /// KMS key id.
    pub ssekms_key_id: Option<String>,
    /// SSE-C algorithm.
    pub sse_customer_algorithm: Option<String>,
    /// The stored additional checksum: algorithm name and base64 value.
    pub checksum: Option<(String, String)>,
    /// `FULL_OBJECT` or `COMPOSITE`, with `checksum`.
    pub checksum_type: Option<String>,
}

/// The attributes a preprocess callback may change before the object is written. It cannot change
/// the key or the content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadMetadata {
    /// Canned ACL (`private`, `public-read`, …).
    pub acl: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Expires, RFC 3339.
    pub expires_string: Option<String>,
    /// User metadata (replaces the object's).
    pub metadata: BTreeMap<String, String>,
    /// `requester` to pay for the request.
    pub request_payer: Option<String>,
    /// Storage class (`STANDARD`, `GLACIER_IR`, …).
    pub storage_class: Option<String>,
    /// x-amz-website-redirect-location.
    pub website_redirect_location: Option<String>,
    /// Tag set, URL-query encoded (`k=v&k2=v2`).
    pub tagging: Option<String>,
}

/// Decides per source object whether it is synced. Runs after the mtime, size and key filters and
/// before the update check (step 7 of the documented filter order). Deletions ignore it.
#[async_trait]
pub trait FilterCallback: Send + Sync {
    /// `Ok(false)` skips the object. An error stops the run (exit code 1).
    async fn filter(&self, object: &SourceObject) -> Result<bool, CallbackError>;
}

/// Edits the attributes of an object just before it is written to S3 (never in a dry run).
#[async_trait]
pub trait PreprocessCallback: Send + Sync {
    /// `Ok(false)` cancels this object (counted as skipped, event `SYNC_CANCEL`). An error stops the
    /// run (exit code 1).
    async fn preprocess(&self, source: &SourceObjectInfo, upload: &mut UploadMetadata) -> Result<bool, CallbackError>;
}

/// Receives the events of a run, in order, one at a time.
#[async_trait]
pub trait EventCallback: Send + Sync {
    /// Handles one event. An error is logged as a warning; the run goes on.
    async fn on_event(&self, event: &EventData) -> Result<(), CallbackError>;
}

/// The callbacks of a run, at most one of each kind.
#[derive(Clone, Default)]
pub struct Callbacks {
    /// The filter.
    pub filter: Option<Arc<dyn FilterCallback>>,
    /// The preprocess hook.
    pub preprocess: Option<Arc<dyn PreprocessCallback>>,
    /// The event hook and the event types it receives.
    pub event: Option<(Arc<dyn EventCallback>, EventType)>,
    /// Cancelled when the run stops (Ctrl-C, a failing callback), so that callbacks which can stop
    /// midway do: the Lua ones built with this token as [`lua::LuaSettings::interrupt`] end their
    /// script within 1000 instructions instead of at their timeout. Once cancelled it stays so:
    /// build new callbacks for another run after a cancelled one.
    pub interrupt: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("filter", &self.filter.is_some())
            .field("preprocess", &self.preprocess.is_some())
            .field("event", &self.event.as_ref().map(|e| e.1))
            .finish()
    }
}

/// RFC 3339 with second precision in UTC, as the callbacks see times.
pub fn rfc3339(t: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl UploadMetadata {
    /// The callback's view of the attributes about to be written.
    pub fn from_attributes(a: &crate::attributes::ObjectAttributes) -> Self {
        UploadMetadata {
            acl: a.acl.clone(),
            cache_control: a.cache_control.clone(),
            content_disposition: a.content_disposition.clone(),
            content_encoding: a.content_encoding.clone(),
            content_language: a.content_language.clone(),
            content_type: a.content_type.clone(),
            expires_string: a.expires.map(rfc3339),
            metadata: a.metadata.clone(),
            request_payer: a.request_payer.then(|| "requester".to_string()),
            storage_class: a.storage_class.clone(),
            website_redirect_location: a.website_redirect.clone(),
            tagging: a.tagging.clone(),
        }
    }

    /// Writes the (edited) values back; an unknown ACL, storage class or request payer, or an expiry
    /// that is not RFC 3339, is an error.
    pub fn apply_to(self, a: &mut crate::attributes::ObjectAttributes) -> Result<(), CallbackError> {
        use crate::cli::args::{CANNED_ACLS, STORAGE_CLASSES};
        let bad = |what: &str, v: &str| {
            Err(CallbackError(format!(
                "preprocess callback returned an unknown {what}: {v:?}"
            )))
        };
        if let Some(v) = self.acl.as_deref().filter(|v| !CANNED_ACLS.contains(v)) {
            return bad("ACL", v);
        }
        if let Some(v) = self.storage_class.as_deref().filter(|v| !STORAGE_CLASSES.contains(v)) {
            return bad("StorageClass", v);
        }
        if let Some(v) = self.request_payer.as_deref().filter(|v| *v != "requester") {
            return bad("RequestPayer", v);
        }
        let expires = match self.expires_string.as_deref() {
            None => None,
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| CallbackError(format!("preprocess callback returned expires_string {s:?}: {e}")))?
                    .with_timezone(&chrono::Utc)
                    .into(),
            ),
        };
        a.acl = self.acl;
        a.cache_control = self.cache_control;
        a.content_disposition = self.content_disposition;
        a.content_encoding = self.content_encoding;
        a.content_language = self.content_language;
        a.content_type = self.content_type;
        a.expires = expires;
        a.metadata = self.metadata;
        a.request_payer = self.request_payer.is_some();
        a.storage_class = self.storage_class;
        a.website_redirect = self.website_redirect_location;
        a.tagging = self.tagging;
        Ok(())
    }
}

impl SourceObjectInfo {
    /// The callback's view of a source object: from its HEAD (S3) or from the listing entry and the
    /// attributes decided for it (local files).
    pub fn new(
        entry: &crate::storage::Entry,
        head: Option<&crate::storage::s3::HeadInfo>,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Self {
        let Some(h) = head else {
            return SourceObjectInfo {
                key: entry.key.clone(),
                content_length: entry.size,
                last_modified: Some(entry.mtime),
                e_tag: entry.etag.clone(),
                version_id: entry.version_id.clone(),
                content_type: attrs.content_type.clone(),
                ..Default::default()
            };
        };
        let a = &h.attributes;
        SourceObjectInfo {
            key: entry.key.clone(),
            content_length: h.entry.size,
            last_modified: Some(h.entry.mtime),
            e_tag: h.entry.etag.clone(),
            version_id: h.entry.version_id.clone(),
            content_type: a.content_type.clone(),
            cache_control: a.cache_control.clone(),
            content_disposition: a.content_disposition.clone(),
            content_encoding: a.content_encoding.clone(),
            content_language: a.content_language.clone(),
            expires_string: a.expires.map(rfc3339),
            website_redirect_location: a.website_redirect.clone(),
            metadata: a.metadata.clone(),
            storage_class: h.storage_class.clone(),
            tag_count: h.tag_count,
            parts_count: h.parts_count,
            server_side_encryption: h.server_side_encryption.clone(),
            ssekms_key_id: h.ssekms_key_id.clone(),
            sse_customer_algorithm: h.sse_customer_algorithm.clone(),
            checksum: h.checksum.as_ref().map(|(algo, v)| (algo.to_string(), v.clone())),
            checksum_type: h.checksum.as_ref().map(|_| {
                if h.full_object_checksum {
                    "FULL_OBJECT"
                } else {
                    "COMPOSITE"
                }
                .to_string()
            }),
        }
    }
}
