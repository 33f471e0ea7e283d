//! The seam between the engine and an S3 service: the operations the engine sends, as one trait.
//!
//! [`S3Storage`](super::s3::S3Storage) holds what is the same for every request of one end (bucket,
//! prefix, SSE-C key, request payer, what the server showed of itself) and turns relative keys into
//! full ones; an [`ObjectClient`] sends one operation. The SDK implements it for real servers
//! ([`super::sdk::SdkClient`]), [`super::memory::MemoryClient`] keeps objects in memory for tests that
//! need no server, and [`super::failing::FailingClient`] wraps either to inject failures per operation
//! and call number. Keys given to a client are full keys; errors it returns name the full key.

use super::s3::{AnnotationInfo, ChecksumValue, HeadInfo, ObjectVersionEntry, PartInfo, Ranged, SseC, Written};
use super::Entry;
use crate::attributes::{ObjectAttributes, Preconditions};
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::error::Result;
use bytes::Bytes;

/// What every request of one end carries besides its key.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The bucket.
    pub bucket: String,
    /// The customer-provided encryption key of the end's objects (SSE-C).
    pub sse_c: Option<SseC>,
    /// Whether requests say the requester pays (`x-amz-request-payer: requester`).
    pub request_payer: bool,
}

/// The object a copy reads: its end's scope, its full key and its version (the latest when `None`).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The source end's scope (bucket, SSE-C key).
    pub scope: &'a Scope,
    /// The full key.
    pub key: &'a str,
    /// The version, or the latest.
    pub version: Option<&'a str>,
}

/// One multipart upload: the full key it writes and its id.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// The full key.
    pub key: &'a str,
    /// The upload id CreateMultipartUpload returned.
    pub upload_id: &'a str,
}

/// One page of ListObjectsV2.
#[derive(Debug, Clone, Default)]
pub struct ObjectsPage {
    /// The objects, full keys, in the server's order; ETags as the server sent them.
    pub entries: Vec<Entry>,
    /// Whether the server says more follow.
    pub truncated: bool,
    /// Where the next page starts.
    pub next_token: Option<String>,
}

/// One page of ListObjectVersions.
#[derive(Debug, Clone, Default)]
pub struct VersionsPage {
    /// Versions and delete markers, full keys, in the server's order.
    pub versions: Vec<ObjectVersionEntry>,
    /// Whether the server says more follow.
    pub truncated: bool,
    /// Key marker of the next page.
    pub next_key_marker: Option<String>,
    /// Version-id marker of the next page.
    pub next_version_marker: Option<String>,
}

/// What one GetObject asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct GetRequest<'a> {
    /// The version to read (`None`: the latest).
    pub version_id: Option<&'a str>,
    /// The ETag (unquoted) the object must still have (`If-Match`).
    pub if_match: Option<&'a str>,
    /// `(offset, len)` of the object (`None`: all of it).
    pub range: Option<(u64, u64)>,
    /// Whether the object's information is built from the response headers (its metadata, tags
    /// count, encryption): only the GET that replaces a HEAD needs it, not every ranged GET.
    pub head: bool,
}

/// The S3 operations the engine uses. Every method is one request (or, for `list_parts`, every page
/// of one listing); retries of whole transfers are the engine's, retries of one request the client's.
#[async_trait::async_trait]
pub trait ObjectClient: Send + Sync + std::fmt::Debug {
    /// Checks that the bucket exists and the credentials are accepted (HeadBucket), failing fast.
    async fn head_bucket(&self, scope: &Scope) -> Result<()>;

    /// One page of the objects under `prefix`, after the full key `start_after` or at `token`.
    async fn list_objects(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        start_after: Option<String>,
        token: Option<String>,
    ) -> Result<ObjectsPage>;

    /// One page of the versions and delete markers under `prefix`.
    async fn list_versions(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        key_marker: Option<String>,
        version_marker: Option<String>,
    ) -> Result<VersionsPage>;

    /// HEADs an object (one part of it, one version of it); `None` when it does not exist. Asks for
    /// the stored additional checksum.
    async fn head_object(
        &self,
        scope: &Scope,
        key: &str,
        part_number: Option<i32>,
        version_id: Option<&str>,
    ) -> Result<Option<HeadInfo>>;

    /// GETs an object, or a range of it, as `req` says, failing with
    /// [`S3ErrorKind::PreconditionFailed`](crate::error::S3ErrorKind) when the object no longer has
    /// the ETag of `req.if_match`. Returns the body, and what the response headers tell when
    /// `req.head` asks for it.
    async fn get_object(&self, scope: &Scope, key: &str, req: GetRequest<'_>) -> Result<(Ranged, Option<HeadInfo>)>;

    /// PutObject of a body made of pool chunks.
    async fn put_object(
        &self,
        scope: &Scope,
        key: &str,
        body: Vec<Bytes>,
        content_md5: Option<String>,
        checksum: &Option<ChecksumValue>,
        attrs: &ObjectAttributes,
    ) -> Result<Written>;

    /// Starts a multipart upload; returns its id.
    async fn create_multipart(
        &self,
        scope: &Scope,
        key: &str,
        attrs: &ObjectAttributes,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    ) -> Result<String>;

    /// Uploads part `part_number` (1-based).
    async fn upload_part(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        part_number: i32,
        body: Vec<Bytes>,
        content_md5: Option<String>,
        checksum: &Option<ChecksumValue>,
    ) -> Result<Written>;

    /// Copies `(offset, len)` of `source` into part `part_number`; returns the part's ETag.
    async fn upload_part_copy(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        part_number: i32,
        source: Source<'_>,
        range: (u64, u64),
        copy_source_if_match: Option<String>,
    ) -> Result<String>;

    /// Completes a multipart upload (sending the whole-object checksum when it is a full-object one).
    async fn complete_multipart(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        parts: Vec<PartInfo>,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
        full_object_value: Option<ChecksumValue>,
        preconditions: &Preconditions,
    ) -> Result<Written>;

    /// The parts of a multipart upload, `(number, ETag, size)`, every page; `None` when the upload no
    /// longer exists.
    async fn list_parts(&self, scope: &Scope, upload: Upload<'_>) -> Result<Option<Vec<(i32, String, u64)>>>;

    /// Aborts a multipart upload.
    async fn abort_multipart(&self, scope: &Scope, upload: Upload<'_>) -> Result<()>;

    /// Server-side copy of a whole object (CopyObject), attributes replaced by `attrs`; returns the
    /// new ETag.
    async fn copy_object(
        &self,
        scope: &Scope,
        key: &str,
        source: Source<'_>,
        attrs: &ObjectAttributes,
    ) -> Result<String>;

    /// Deletes an object; with `if_match`, only while its ETag is still that one.
    async fn delete_object(&self, scope: &Scope, key: &str, if_match: Option<&str>) -> Result<()>;

    /// The tag set of an object (a version of it), in the server's order.
    async fn get_tagging(&self, scope: &Scope, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>>;

    /// Replaces the tag set of an object.
    async fn put_tagging(&self, scope: &Scope, key: &str, tags: &[(String, String)]) -> Result<()>;

    /// The annotations of an object (a version of it), every page, in the server's order; none when
    /// the object does not exist.
    async fn list_annotations(&self, scope: &Scope, key: &str, version_id: Option<&str>)
        -> Result<Vec<AnnotationInfo>>;

    /// The payload of one annotation; `None` when it does not exist.
    async fn get_annotation(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
        name: &str,
    ) -> Result<Option<Bytes>>;

    /// Writes one annotation.
    async fn put_annotation(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
        name: &str,
        payload: Bytes,
    ) -> Result<()>;

    /// Deletes one annotation.
    async fn delete_annotation(&self, scope: &Scope, key: &str, version_id: Option<&str>, name: &str) -> Result<()>;
}
