//! One S3 end of a sync: a bucket and prefix over an [`ObjectClient`]. It turns relative keys into
//! full ones, keeps what the server showed of itself, and holds the rules that are the same whatever
//! the client (a 412 on a GET means the object changed, a listing must end where the server says).

use super::object_client::{GetRequest, ObjectClient, Scope, Source, Upload};
use super::sdk::SdkClient;
use super::Entry;
use crate::attributes::ObjectAttributes;
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::error::{Error, Result, S3ErrorKind};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

pub use super::sdk::{etag_is_digest, sdk_error, to_system_time};

/// An S3 bucket and prefix as one end of a sync.
#[derive(Clone, Debug)]
pub struct S3Storage {
    client: Arc<dyn ObjectClient>,
    scope: Scope,
    prefix: String,
    /// What the server showed of itself so far in this run, shared by this end's clones.
    learned: Arc<Learned>,
}

/// What a server showed of itself during a run: later requests are shaped by it.
#[derive(Debug, Default)]
struct Learned {
    /// A GET carried `x-amz-tagging-count`: the server says when an object has tags (and the
    /// caller may read them), so an object whose GET lacks it has none.
    tag_count_sent: AtomicBool,
    /// GetObjectTagging answered `NotImplemented`: no object of this server has tags.
    no_tagging: AtomicBool,
}

/// A customer-provided encryption key (SSE-C) of one end, sent with every request on its objects.
#[derive(Clone)]
pub struct SseC {
    /// Algorithm (`AES256`).
    pub algorithm: String,
    /// The key, base64.
    pub key: String,
    /// MD5 of the key, base64.
    pub key_md5: String,
}

impl std::fmt::Debug for SseC {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseC")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SseC {
    /// From the CLI values; the key MD5 is computed when not given.
    pub fn new(algorithm: String, key: String, key_md5: Option<String>) -> Result<Self> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .map_err(|_| Error::InvalidArgument("the SSE-C key must be base64".into()))?;
        if raw.len() != 32 {
            return Err(Error::InvalidArgument("the SSE-C key must be 256 bits".into()));
        }
        let key_md5 =
            key_md5.unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode(crate::checksum::md5_of(&raw)));
        Ok(SseC {
            algorithm,
            key,
            key_md5,
        })
    }
}

/// An additional checksum value with its algorithm (base64, possibly with a `-N` part count).
pub type ChecksumValue = (ChecksumAlgorithm, String);

/// One annotation of an object, as ListObjectAnnotations lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationInfo {
    /// Its name (unique per object version).
    pub name: String,
    /// Its ETag, when the server gives one.
    pub etag: Option<String>,
    /// Payload size in bytes.
    pub size: i64,
    /// When it was last written.
    pub last_modified: SystemTime,
}

/// What a HEAD of an object tells (or a GET, which tells the same but for the stored checksum and
/// the parts count).
#[derive(Debug, Clone)]
pub struct HeadInfo {
    /// The entry (size, last-modified, ETag).
    pub entry: Entry,
    /// System and user metadata.
    pub attributes: ObjectAttributes,
    /// The number of parts, when the server reports it (HEAD with `partNumber`).
    pub parts_count: Option<u64>,
    /// The stored additional checksum, when there is one (HEAD with checksum mode).
    pub checksum: Option<ChecksumValue>,
    /// Whether the stored checksum is a full-object checksum.
    pub full_object_checksum: bool,
    /// Storage class (absent for STANDARD).
    pub storage_class: Option<String>,
    /// Number of tags (`x-amz-tagging-count`).
    pub tag_count: Option<i32>,
    /// Server-side encryption.
    pub server_side_encryption: Option<String>,
    /// KMS key id.
    pub ssekms_key_id: Option<String>,
    /// SSE-C algorithm.
    pub sse_customer_algorithm: Option<String>,
}

/// The object a server-side copy reads.
#[derive(Debug, Clone, Copy)]
pub struct CopySource<'a> {
    /// Its storage.
    pub storage: &'a S3Storage,
    /// Its relative key.
    pub key: &'a str,
    /// Its version, or the latest.
    pub version: Option<&'a str>,
}

/// One version (or delete marker) of an object.
#[derive(Debug, Clone)]
pub struct ObjectVersionEntry {
    /// The version as an entry (`version_id` set).
    pub entry: Entry,
    /// Whether this is a delete marker.
    pub delete_marker: bool,
    /// Whether this is the current version.
    pub is_latest: bool,
}

/// Every version of one key, oldest first.
#[derive(Debug, Clone)]
pub struct KeyVersions {
    /// Relative key.
    pub key: String,
    /// Versions and delete markers, oldest first.
    pub versions: Vec<ObjectVersionEntry>,
}

impl KeyVersions {
    /// The object as it was at `t`: the newest version not newer than `t`, unless that is a delete
    /// marker.
    pub fn at(&self, t: SystemTime) -> Option<&Entry> {
        let v = self.versions.iter().rev().find(|v| v.entry.mtime <= t)?;
        (!v.delete_marker).then_some(&v.entry)
    }
}

/// What a write of an object (or part) returned.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The ETag without quotes.
    pub etag: String,
    /// The additional checksum the server reports, if any.
    pub checksum: Option<String>,
    /// Whether the ETag can be an MD5 of the bytes: not when the response says the object is
    /// encrypted with SSE-KMS or SSE-C (whatever was asked for: a bucket may encrypt by default).
    pub etag_is_md5: bool,
}

/// A ranged GET's body and what its response says about the object.
pub struct Ranged {
    /// The bytes.
    pub body: ByteStream,
    /// Whether the object's ETag can be an MD5 of its bytes (see [`Written::etag_is_md5`]).
    pub etag_is_md5: bool,
}

/// One part of a multipart upload, for CompleteMultipartUpload.
#[derive(Debug, Clone)]
pub struct PartInfo {
    /// 1-based part number.
    pub number: i32,
    /// The part's ETag.
    pub etag: String,
    /// The part's additional checksum, if one was sent.
    pub checksum: Option<ChecksumValue>,
}

/// Where a listing page starts: after a relative key (the first page) or at a continuation token.
#[derive(Debug, Clone, Default)]
pub struct Page {
    start_after: Option<String>,
    token: Option<String>,
}

impl Page {
    /// The first page, after the relative key `start_after` when given.
    pub fn first(start_after: Option<&str>) -> Page {
        Page {
            start_after: start_after.map(str::to_string),
            token: None,
        }
    }
}
/// The order of a page of versions: keys ascending; within a key, oldest first and the latest last.
/// Times are whole seconds, so versions written within one second tie: the caller breaks the tie by
/// the server's order reversed (S3 lists a key's versions newest first).
fn version_order(a: &ObjectVersionEntry, b: &ObjectVersionEntry) -> std::cmp::Ordering {
    let key = a.entry.key.as_bytes().cmp(b.entry.key.as_bytes());
    key.then(a.entry.mtime.cmp(&b.entry.mtime))
        .then(a.is_latest.cmp(&b.is_latest))
}

impl S3Storage {
    /// A storage end over the SDK `client` for `bucket` and `prefix`.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        payload_signing: bool,
        sse_c: Option<SseC>,
    ) -> Self {
        Self::with_client(Arc::new(SdkClient::new(client, payload_signing)), bucket, prefix, sse_c)
    }

    /// A storage end over any [`ObjectClient`] (an in-memory one in tests).
    pub fn with_client(client: Arc<dyn ObjectClient>, bucket: String, prefix: String, sse_c: Option<SseC>) -> Self {
        S3Storage {
            client,
            scope: Scope {
                bucket,
                sse_c,
                request_payer: false,
            },
            prefix,
            learned: Arc::default(),
        }
    }

    /// Sends `x-amz-request-payer: requester` with every object request (`--*-request-payer`).
    pub fn with_request_payer(mut self, on: bool) -> Self {
        self.scope.request_payer = on;
        self
    }

    /// The scope of a write: this end's, with the object's request payer (set by a preprocess
    /// callback).
    fn scope_for(&self, attrs: &ObjectAttributes) -> Cow<'_, Scope> {
        if attrs.request_payer && !self.scope.request_payer {
            Cow::Owned(Scope {
                request_payer: true,
                ..self.scope.clone()
            })
        } else {
            Cow::Borrowed(&self.scope)
        }
    }

    /// This end as every request for one object should see it: with the object's request payer (set
    /// by a preprocess callback) on each request of its upload — parts, completion, abort — not only
    /// on the first.
    pub fn for_object(&self, attrs: &ObjectAttributes) -> Cow<'_, S3Storage> {
        if attrs.request_payer && !self.scope.request_payer {
            Cow::Owned(self.clone().with_request_payer(true))
        } else {
            Cow::Borrowed(self)
        }
    }

    /// Whether objects of this end are encrypted with a customer key (their ETags are then not MD5s).
    pub fn has_sse_c(&self) -> bool {
        self.scope.sse_c.is_some()
    }

    /// The tag set of an object as `k=v&k2=v2` (URL-encoded), `None` when it has none or the server
    /// does not implement tagging.
    pub async fn get_tagging(&self, key: &str, version_id: Option<&str>) -> Result<Option<String>> {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let tags: Vec<String> = self
            .get_tags_version(key, version_id)
            .await?
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        Ok((!tags.is_empty()).then(|| tags.join("&")))
    }

    /// The tag set of an object, sorted by key; empty when it has none or the server does not
    /// implement tagging.
    pub async fn get_tags(&self, key: &str) -> Result<Vec<(String, String)>> {
        self.get_tags_version(key, None).await
    }

    /// Replaces the tag set of an object.
    pub async fn put_tags(&self, key: &str, tags: &[(String, String)]) -> Result<()> {
        self.client.put_tagging(&self.scope, &self.full_key(key), tags).await
    }

    /// The tag set of one version of an object, sorted by key (empty, without a request, once the
    /// server said it does not implement tagging).
    pub async fn get_tags_version(&self, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>> {
        if self.learned.no_tagging.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        match self
            .client
            .get_tagging(&self.scope, &self.full_key(key), version_id)
            .await
        {
            Ok(mut tags) => {
                tags.sort();
                Ok(tags)
            }
            Err(e) if e.s3_kind() == Some(S3ErrorKind::NotImplemented) => {
                self.learned.no_tagging.store(true, Ordering::Relaxed);
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a GET of this server already carried `x-amz-tagging-count`: then a GET without it
    /// means the object has no tags. Until then its absence says nothing (a server that never sends
    /// it, or a caller not allowed to read tags).
    pub fn tag_count_is_sent(&self) -> bool {
        self.learned.tag_count_sent.load(Ordering::Relaxed)
    }

    /// The annotations of one version of an object (the latest when `version_id` is `None`), sorted
    /// by name. An object that does not exist has none.
    pub async fn list_annotations(&self, key: &str, version_id: Option<&str>) -> Result<Vec<AnnotationInfo>> {
        let mut out = self
            .client
            .list_annotations(&self.scope, &self.full_key(key), version_id)
            .await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The payload of one annotation; `None` when it no longer exists.
    pub async fn get_annotation(&self, key: &str, version_id: Option<&str>, name: &str) -> Result<Option<Bytes>> {
        self.client
            .get_annotation(&self.scope, &self.full_key(key), version_id, name)
            .await
    }

    /// Writes (creates or replaces) one annotation of an object.
    pub async fn put_annotation(&self, key: &str, version_id: Option<&str>, name: &str, payload: Bytes) -> Result<()> {
        self.client
            .put_annotation(&self.scope, &self.full_key(key), version_id, name, payload)
            .await
    }

    /// Deletes one annotation of an object.
    pub async fn delete_annotation(&self, key: &str, version_id: Option<&str>, name: &str) -> Result<()> {
        self.client
            .delete_annotation(&self.scope, &self.full_key(key), version_id, name)
            .await
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.scope.bucket
    }

    /// The prefix, verbatim.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of a relative key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Checks that the bucket exists and the credentials are accepted (HeadBucket), so that a wrong
    /// setup fails on the first request, before any listing.
    pub async fn check_access(&self) -> Result<()> {
        self.client.head_bucket(&self.scope).await.map_err(|mut e| {
            if let Error::S3(s3) = &mut e {
                if s3.kind == S3ErrorKind::NotFound {
                    s3.kind = S3ErrorKind::NoSuchBucket;
                    s3.message = "the bucket does not exist".into();
                }
            }
            e
        })
    }

    /// The error of a listing the server ended before its end.
    fn incomplete(&self, operation: &'static str, message: &str) -> Error {
        Error::s3(
            operation,
            self.scope.bucket.clone(),
            self.prefix.clone(),
            S3ErrorKind::Other,
            message,
        )
    }

    /// Lists every object under the prefix in key order (after the relative key `start_after`, when
    /// given) and sends it with the prefix removed.
    pub async fn list(&self, max_keys: i32, start_after: Option<&str>, tx: mpsc::Sender<Result<Entry>>) -> Result<()> {
        let mut page = Page::first(start_after);
        loop {
            let (entries, next) = self.list_page(max_keys, page).await?;
            for entry in entries {
                if tx.send(Ok(entry)).await.is_err() {
                    return Ok(());
                }
            }
            match next {
                Some(p) => page = p,
                None => return Ok(()),
            }
        }
    }

    /// One page of the listing under the prefix: its entries (prefix removed, in the server's order)
    /// and where the next page starts, `None` at the end.
    pub async fn list_page(&self, max_keys: i32, page: Page) -> Result<(Vec<Entry>, Option<Page>)> {
        let got = self
            .client
            .list_objects(
                &self.scope,
                &self.prefix,
                max_keys,
                page.start_after.as_deref().map(|k| self.full_key(k)),
                page.token,
            )
            .await?;
        // Keys relative to the prefix, ETags bare, in place. Keys outside the prefix, and the prefix
        // itself (e.g. a directory marker equal to it), are left out.
        let mut entries = got.entries;
        let prefix = self.prefix.as_str();
        entries.retain_mut(|e| {
            if e.key.strip_prefix(prefix).is_none_or(str::is_empty) {
                return false;
            }
            e.key.drain(..prefix.len());
            e.etag = e.etag.take().map(crate::checksum::normalized_etag);
            true
        });
        let next = match (got.truncated, got.next_token) {
            (true, Some(t)) if !t.is_empty() => Some(Page {
                start_after: None,
                token: Some(t),
            }),
            (true, _) => {
                return Err(self.incomplete(
                    "ListObjectsV2",
                    "the server says the listing is truncated but gives no continuation token",
                ))
            }
            (false, _) => None,
        };
        Ok((entries, next))
    }

    /// Lists every version and delete marker under the prefix, one key at a time (versions oldest
    /// first), with the prefix removed.
    pub async fn list_versions(&self, max_keys: i32, tx: async_channel::Sender<Result<KeyVersions>>) -> Result<()> {
        let mut markers: (Option<String>, Option<String>) = (None, None);
        let mut current: Option<KeyVersions> = None;
        loop {
            let got = self
                .client
                .list_versions(&self.scope, &self.prefix, max_keys, markers.0.take(), markers.1.take())
                .await?;
            let mut page: Vec<(usize, ObjectVersionEntry)> = got
                .versions
                .into_iter()
                .enumerate()
                .filter_map(|(i, mut v)| {
                    let rel = v.entry.key.strip_prefix(self.prefix.as_str())?;
                    v.entry.key = rel.to_string();
                    (!v.entry.key.is_empty()).then_some((i, v))
                })
                .collect();
            page.sort_by(|(i, a), (j, b)| version_order(a, b).then(j.cmp(i)));
            let mut page = page.into_iter().map(|(_, v)| v).peekable();
            // A key split across pages: this page holds its older versions, oldest first.
            if let Some(c) = current.as_mut() {
                let mut older = Vec::new();
                while let Some(v) = page.next_if(|v| v.entry.key == c.key) {
                    older.push(v);
                }
                c.versions.splice(0..0, older);
            }
            for v in page {
                match current.as_mut() {
                    Some(c) if c.key == v.entry.key => c.versions.push(v),
                    _ => {
                        if let Some(done) = current.take() {
                            if tx.send(Ok(done)).await.is_err() {
                                return Ok(());
                            }
                        }
                        current = Some(KeyVersions {
                            key: v.entry.key.clone(),
                            versions: vec![v],
                        });
                    }
                }
            }
            if !got.truncated {
                break;
            }
            if got.next_key_marker.is_none() {
                return Err(self.incomplete(
                    "ListObjectVersions",
                    "the server says the listing is truncated but gives no next key marker",
                ));
            }
            markers = (got.next_key_marker, got.next_version_marker);
        }
        if let Some(done) = current {
            let _ = tx.send(Ok(done)).await;
        }
        Ok(())
    }

    /// Whether any version or delete marker of exactly this key exists.
    pub async fn has_versions(&self, key: &str) -> Result<bool> {
        let full = self.full_key(key);
        let got = self.client.list_versions(&self.scope, &full, 10, None, None).await?;
        Ok(got.versions.iter().any(|v| v.entry.key == full))
    }

    /// HEADs one object (optionally one part of it); `None` when it does not exist.
    pub async fn head(&self, key: &str, part_number: Option<i32>) -> Result<Option<HeadInfo>> {
        self.head_version(key, part_number, None).await
    }

    /// HEADs one version of an object (the latest when `version_id` is `None`).
    pub async fn head_version(
        &self,
        key: &str,
        part_number: Option<i32>,
        version_id: Option<&str>,
    ) -> Result<Option<HeadInfo>> {
        let got = self
            .client
            .head_object(&self.scope, &self.full_key(key), part_number, version_id)
            .await?;
        Ok(got.map(|mut h| {
            h.entry.key = key.to_string();
            h
        }))
    }

    /// Starts a GET of `len` bytes at `offset` (the whole object when `len` covers it) and returns the
    /// body stream.
    pub async fn get_range(
        &self,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<Ranged> {
        let range = (len > 0).then_some((offset, len));
        Ok(self.send_get(key, version_id, etag, range, false).await?.0)
    }

    /// Starts a GET of a whole object and returns its body with what its headers tell, the same as a
    /// HEAD would (but for the stored additional checksum, which a GET does not ask for): one request
    /// where a HEAD and a GET were two.
    pub async fn open(&self, key: &str, version_id: Option<&str>, etag: Option<&str>) -> Result<(Ranged, HeadInfo)> {
        let (ranged, info) = self.send_get(key, version_id, etag, None, true).await?;
        let mut info =
            info.ok_or_else(|| Error::Internal(format!("GetObject of {key} returned no object information")))?;
        if info.tag_count.is_some() {
            self.learned.tag_count_sent.store(true, Ordering::Relaxed);
        }
        info.entry.key = key.to_string();
        Ok((ranged, info))
    }

    /// Sends one GetObject (building the object's information from the headers when `head`), pinned
    /// to `version_id`, else to the listed `etag`: every range of one
    /// object reads the same bytes (an object overwritten mid-transfer fails with 412, reported as
    /// [`Error::ObjectChanged`], instead of mixing two objects).
    async fn send_get(
        &self,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
        range: Option<(u64, u64)>,
        head: bool,
    ) -> Result<(Ranged, Option<HeadInfo>)> {
        let if_match = match (version_id, etag) {
            (None, Some(e)) if !e.is_empty() => Some(e),
            _ => None,
        };
        let req = GetRequest {
            version_id,
            if_match,
            range,
            head,
        };
        self.client
            .get_object(&self.scope, &self.full_key(key), req)
            .await
            .map_err(|e| match e {
                e if e.s3_kind() == Some(S3ErrorKind::PreconditionFailed) => Error::ObjectChanged {
                    key: key.to_string(),
                    message: "the object was replaced during the transfer (its ETag no longer matches the listing)"
                        .into(),
                },
                other => other,
            })
    }

    /// PutObject of a body made of pool chunks; returns the ETag and checksum the server reports.
    pub async fn put_object(
        &self,
        key: &str,
        body: Vec<Bytes>,
        content_md5: Option<String>,
        checksum: &Option<ChecksumValue>,
        attrs: &ObjectAttributes,
    ) -> Result<Written> {
        self.client
            .put_object(
                &self.scope_for(attrs),
                &self.full_key(key),
                body,
                content_md5,
                checksum,
                attrs,
            )
            .await
    }

    /// Starts a multipart upload; returns its upload id.
    pub async fn create_multipart(
        &self,
        key: &str,
        attrs: &ObjectAttributes,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    ) -> Result<String> {
        self.client
            .create_multipart(&self.scope_for(attrs), &self.full_key(key), attrs, checksum)
            .await
    }

    /// Uploads one part (1-based `part_number`); returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Vec<Bytes>,
        content_md5: Option<String>,
        checksum: &Option<ChecksumValue>,
    ) -> Result<Written> {
        let full = self.full_key(key);
        let upload = Upload { key: &full, upload_id };
        self.client
            .upload_part(&self.scope, upload, part_number, body, content_md5, checksum)
            .await
    }

    /// Copies a byte range (`(offset, len)`) of another object into a part (UploadPartCopy); returns the
    /// part's ETag.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        source: CopySource<'_>,
        range: (u64, u64),
        copy_source_if_match: Option<String>,
    ) -> Result<String> {
        let full = self.full_key(key);
        let source_key = source.storage.full_key(source.key);
        let from = Source {
            scope: &source.storage.scope,
            key: &source_key,
            version: source.version,
        };
        let upload = Upload { key: &full, upload_id };
        self.client
            .upload_part_copy(&self.scope, upload, part_number, from, range, copy_source_if_match)
            .await
    }

    /// Completes a multipart upload; returns the object's ETag and additional checksum. For full-object
    /// checksums the expected whole-object value is sent, so the server checks it too.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartInfo>,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
        full_object_value: Option<ChecksumValue>,
        preconditions: &crate::attributes::Preconditions,
    ) -> Result<Written> {
        let full = self.full_key(key);
        let upload = Upload { key: &full, upload_id };
        self.client
            .complete_multipart(&self.scope, upload, parts, checksum, full_object_value, preconditions)
            .await
    }

    /// The parts already uploaded to a multipart upload: `(part number, ETag, size)`; `None` when the
    /// upload no longer exists.
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Option<Vec<(i32, String, u64)>>> {
        let full = self.full_key(key);
        self.client
            .list_parts(&self.scope, Upload { key: &full, upload_id })
            .await
    }

    /// Aborts a multipart upload.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .abort_multipart(&self.scope, Upload { key: &full, upload_id })
            .await
    }

    /// Server-side copy of a whole object (CopyObject, up to 5 GiB); returns the new ETag.
    pub async fn copy_object(
        &self,
        key: &str,
        source: &S3Storage,
        source_key: &str,
        source_version: Option<&str>,
        attrs: &ObjectAttributes,
    ) -> Result<String> {
        let from_key = source.full_key(source_key);
        let from = Source {
            scope: &source.scope,
            key: &from_key,
            version: source_version,
        };
        self.client
            .copy_object(&self.scope_for(attrs), &self.full_key(key), from, attrs)
            .await
    }

    /// Deletes one object; with `if_match`, only while its ETag is still that one (`--if-match`).
    pub async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<()> {
        self.client
            .delete_object(&self.scope, &self.full_key(key), if_match)
            .await
    }
}

#[cfg(test)]
mod tests {
    //! Request-level checks of headers that neither test server can observe (request payer,
    //! acceleration): the request is captured before it leaves the client.
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::Client;
    use aws_smithy_http_client::test_util::capture_request;

    fn client(accelerate: bool) -> (Client, aws_smithy_http_client::test_util::CaptureRequestReceiver) {
        let (http, rx) = capture_request(None);
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .accelerate(accelerate)
            .http_client(http)
            .build();
        (Client::from_conf(conf), rx)
    }

    /// A storage whose client answers with these `(status, body)` responses, in order, and never
    /// retries.
    fn replaying(responses: &[(u16, &str)]) -> S3Storage {
        use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
        use aws_smithy_types::body::SdkBody;
        let events = responses
            .iter()
            .map(|(status, body)| {
                ReplayEvent::new(
                    hyper::http::Request::builder()
                        .uri("http://localhost/")
                        .body(SdkBody::empty())
                        .unwrap(),
                    hyper::http::Response::builder()
                        .status(*status)
                        .body(SdkBody::from(body.to_string()))
                        .unwrap(),
                )
            })
            .collect();
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .http_client(StaticReplayClient::new(events))
            .build();
        S3Storage::new(Client::from_conf(conf), "b".into(), String::new(), true, None)
    }

    fn error_xml(code: &str) -> String {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
    }

    /// Error codes become kinds, and the callers that expect a code act on the kind.
    #[tokio::test]
    async fn error_codes_are_typed() {
        let s = replaying(&[(501, &error_xml("NotImplemented"))]);
        assert_eq!(
            s.get_tags("k").await.unwrap(),
            Vec::new(),
            "no tagging on this server: no tags"
        );
        let s = replaying(&[(404, &error_xml("NoSuchUpload"))]);
        assert_eq!(s.list_parts("k", "u").await.unwrap(), None, "the upload is gone");
        let s = replaying(&[(404, &error_xml("NoSuchAnnotation"))]);
        assert_eq!(s.get_annotation("k", None, "n").await.unwrap(), None);
        let s = replaying(&[(400, &error_xml("NoSuchUpload"))]);
        match s.abort_multipart("k", "u").await {
            Err(e) => assert_eq!(e.s3_kind(), Some(S3ErrorKind::NoSuchUpload)),
            other => panic!("{other:?}"),
        }
        let s = replaying(&[(403, &error_xml("AccessDenied"))]);
        match s.get_tags("k").await {
            Err(e @ Error::S3(_)) => {
                let Error::S3(s3) = &e else { unreachable!() };
                assert_eq!(s3.kind, S3ErrorKind::Auth);
                assert_eq!((s3.status, s3.code.as_deref()), (Some(403), Some("AccessDenied")));
                assert!(
                    std::error::Error::source(&e).is_some(),
                    "the SDK error is kept as the source"
                );
                assert_eq!(e.exit_code(), crate::error::EXIT_ERROR);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every page of ListObjectAnnotations is read, and the annotations come back sorted by name.
    #[tokio::test]
    async fn annotations_are_listed_across_pages() {
        let entry = |name: &str, size: u32| {
            format!(
                "<AnnotationEntry><AnnotationName>{name}</AnnotationName><LastModified>2026-11-30T12:00:00.000Z</LastModified><ETag>\"e-{name}\"</ETag><Size>{size}</Size></AnnotationEntry>"
            )
        };
        let page1 = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListObjectAnnotationsOutput><NextContinuationToken>t</NextContinuationToken><Annotations>{}{}</Annotations></ListObjectAnnotationsOutput>",
            entry("zeta", 3),
            entry("alpha", 1)
        );
        let page2 = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListObjectAnnotationsOutput><Annotations>{}</Annotations></ListObjectAnnotationsOutput>",
            entry("mid", 2)
        );
        let s = replaying(&[(200, &page1), (200, &page2)]);
        let list = s.list_annotations("k", None).await.unwrap();
        let names: Vec<(&str, i64, Option<&str>)> = list
            .iter()
            .map(|a| (a.name.as_str(), a.size, a.etag.as_deref()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("alpha", 1, Some("\"e-alpha\"")),
                ("mid", 2, Some("\"e-mid\"")),
                ("zeta", 3, Some("\"e-zeta\""))
            ]
        );
        // An object that does not exist has no annotations.
        let s = replaying(&[(404, &error_xml("NoSuchKey"))]);
        assert!(s.list_annotations("k", None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn request_payer_header_is_sent() {
        let (c, rx) = client(false);
        let s = S3Storage::new(c, "b".into(), "p/".into(), true, None).with_request_payer(true);
        let _ = s.delete("k", None).await;
        let req = rx.expect_request();
        assert_eq!(req.headers().get("x-amz-request-payer"), Some("requester"));
        assert!(req.uri().contains("p/k"), "{}", req.uri());
    }

    #[tokio::test]
    async fn accelerate_uses_the_accelerate_endpoint() {
        let (c, rx) = client(true);
        let s = S3Storage::new(c, "bucket".into(), String::new(), true, None);
        let _ = s.delete("k", None).await;
        let req = rx.expect_request();
        assert!(req.uri().contains("s3-accelerate"), "{}", req.uri());
        assert_eq!(req.headers().get("x-amz-request-payer"), None);
    }

    #[tokio::test]
    async fn sse_c_headers_are_sent_and_the_key_is_not_logged() {
        let (c, rx) = client(false);
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_string();
        let sse = SseC::new("AES256".into(), key.clone(), None).unwrap();
        assert!(!format!("{sse:?}").contains(&key));
        let s = S3Storage::new(c, "b".into(), String::new(), true, Some(sse));
        let _ = s.head("k", None).await;
        let req = rx.expect_request();
        assert_eq!(
            req.headers().get("x-amz-server-side-encryption-customer-algorithm"),
            Some("AES256")
        );
        assert_eq!(
            req.headers().get("x-amz-server-side-encryption-customer-key"),
            Some(key.as_str())
        );
        assert!(req
            .headers()
            .get("x-amz-server-side-encryption-customer-key-md5")
            .is_some());
    }

    /// Versions written within one second (S3 times are whole seconds) and split across pages come
    /// out oldest first with the latest last, as they were written.
    #[tokio::test]
    async fn versions_within_one_second_keep_their_order_across_pages() {
        use crate::storage::memory::MemoryClient;
        use crate::storage::object_client::ObjectClient as _;
        let mem = Arc::new(MemoryClient::new());
        mem.create_bucket("b", true);
        let scope = Scope {
            bucket: "b".into(),
            ..Default::default()
        };
        let attrs = ObjectAttributes::default();
        for (key, n) in [("a", 1), ("k", 5), ("z", 1)] {
            for i in 0..n {
                let body = vec![Bytes::from(vec![i as u8; i + 1])];
                mem.put_object(&scope, key, body, None, &None, &attrs).await.unwrap();
            }
        }
        mem.delete_object(&scope, "k", None).await.unwrap();
        let s3 = S3Storage::with_client(mem, "b".into(), String::new(), None);
        for max_keys in [1, 2, 3, 1000] {
            let (tx, rx) = async_channel::unbounded();
            s3.list_versions(max_keys, tx).await.unwrap();
            let mut got = Vec::new();
            while let Ok(kv) = rx.try_recv() {
                got.push(kv.unwrap());
            }
            let keys: Vec<&str> = got.iter().map(|k| k.key.as_str()).collect();
            assert_eq!(keys, ["a", "k", "z"], "max_keys {max_keys}");
            let sizes: Vec<u64> = got[1].versions.iter().map(|v| v.entry.size).collect();
            assert_eq!(
                sizes,
                [1, 2, 3, 4, 5, 0],
                "max_keys {max_keys}: oldest first, the marker last"
            );
            assert!(got[1].versions[5].delete_marker && got[1].versions[5].is_latest);
        }
    }

    /// A listing that starts after a key goes on from the previous page's end, not from the start
    /// (continuation tokens of the in-memory service, as of S3, are positions after the last key).
    #[tokio::test]
    async fn listing_after_a_key_pages_on_from_it() {
        use crate::storage::memory::MemoryClient;
        let mem = Arc::new(MemoryClient::new());
        mem.create_bucket("b", false);
        for i in 0..10 {
            mem.insert("b", &format!("p/k{i:02}"), vec![i]);
        }
        mem.insert("b", "q", vec![0]);
        let s3 = S3Storage::with_client(mem, "b".into(), "p/".into(), None);
        let (tx, mut rx) = mpsc::channel(100);
        s3.list(2, Some("k04"), tx).await.unwrap();
        let mut keys = Vec::new();
        while let Ok(e) = rx.try_recv() {
            keys.push(e.unwrap().key);
        }
        assert_eq!(keys, ["k05", "k06", "k07", "k08", "k09"]);
    }
}
