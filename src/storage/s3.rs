//! S3 (and S3-compatible) storage: one method per operation family, each turning SDK errors into typed
//! [`Error::S3`] values that say which request failed and why.

use super::Entry;
use crate::attributes::ObjectAttributes;
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::error::{Error, Result, S3ErrorKind};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// An S3 bucket and prefix as one end of a sync.
#[derive(Clone, Debug)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    payload_signing: bool,
    sse_c: Option<SseC>,
    request_payer: bool,
    /// What the server showed of itself so far in this run, shared by this end's clones.
    learned: Arc<Learned>,
}

/// What a server showed of itself during a run: later requests are shaped by it.
#[derive(Debug, Default)]
struct Learned {
    /// The fast reader declined a listing page: later pages go to the SDK's decoder alone.
    sdk_lists: AtomicBool,
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

/// Sets the `x-amz-checksum-<algo>` header of a request builder.
macro_rules! with_checksum {
    ($req:expr, $c:expr) => {{
        let c: &Option<ChecksumValue> = $c;
        match c {
            None => $req,
            Some((ChecksumAlgorithm::Sha256, v)) => $req.checksum_sha256(v.clone()),
            Some((ChecksumAlgorithm::Sha1, v)) => $req.checksum_sha1(v.clone()),
            Some((ChecksumAlgorithm::Crc32, v)) => $req.checksum_crc32(v.clone()),
            Some((ChecksumAlgorithm::Crc32c, v)) => $req.checksum_crc32_c(v.clone()),
            Some((ChecksumAlgorithm::Crc64Nvme, v)) => $req.checksum_crc64_nvme(v.clone()),
        }
    }};
}

/// Like `with_checksum!`, and also names the algorithm (`x-amz-sdk-checksum-algorithm`), which some
/// servers need to store the value. The SDK keeps a value that is already set instead of computing one.
macro_rules! with_named_checksum {
    ($req:expr, $c:expr) => {{
        let c: &Option<ChecksumValue> = $c;
        with_checksum!($req.set_checksum_algorithm(c.as_ref().map(|c| c.0.to_sdk())), c)
    }};
}

/// Reads the checksum of `algo` from a response (or a part builder's getter set).
macro_rules! checksum_of {
    ($out:expr, $algo:expr) => {
        match $algo {
            ChecksumAlgorithm::Sha256 => $out.checksum_sha256(),
            ChecksumAlgorithm::Sha1 => $out.checksum_sha1(),
            ChecksumAlgorithm::Crc32 => $out.checksum_crc32(),
            ChecksumAlgorithm::Crc32c => $out.checksum_crc32_c(),
            ChecksumAlgorithm::Crc64Nvme => $out.checksum_crc64_nvme(),
        }
        .map(str::to_string)
    };
}

/// Sends a request that carries object bytes (signed payload unless `--disable-payload-signing`)
/// and reads the ETag and the asked-for checksum from its response.
/// What a HEAD or GET response `$out` tells of the object `$key` (both carry the same headers under
/// the same getters; a GET carries the stored checksum only when asked for it, which `open` does not).
macro_rules! head_info {
    ($out:expr, $key:expr, $attributes:expr) => {{
        let h = &$out;
        HeadInfo {
            entry: Entry {
                key: $key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                mtime: h.last_modified().map(to_system_time).unwrap_or(SystemTime::UNIX_EPOCH),
                etag: h.e_tag().map(crate::checksum::normalize_etag),
                version_id: h.version_id().map(str::to_string),
            },
            attributes: $attributes,
            parts_count: h.parts_count().and_then(|n| u64::try_from(n).ok()),
            checksum: ChecksumAlgorithm::ALL
                .into_iter()
                .find_map(|a| checksum_of!(h, a).map(|v| (a, v))),
            full_object_checksum: h.checksum_type() == Some(&aws_sdk_s3::types::ChecksumType::FullObject),
            storage_class: h.storage_class().map(|c| c.as_str().to_string()),
            tag_count: h.tag_count(),
            server_side_encryption: h.server_side_encryption().map(|c| c.as_str().to_string()),
            ssekms_key_id: h.ssekms_key_id().map(str::to_string),
            sse_customer_algorithm: h.sse_customer_algorithm().map(str::to_string),
        }
    }};
}

macro_rules! send_body {
    ($self:expr, $req:expr, $op:literal, $full:expr, $checksum:expr) => {{
        let resp = if $self.payload_signing {
            $req.send().await
        } else {
            $req.customize().disable_payload_signing().send().await
        }
        .map_err(|e| $self.err($op, $full, e))?;
        Written {
            etag: resp.e_tag().map(crate::checksum::normalize_etag).unwrap_or_default(),
            checksum: $checksum.as_ref().and_then(|(a, _)| checksum_of!(resp, *a)),
            etag_is_md5: etag_is_digest(resp.server_side_encryption(), resp.sse_customer_algorithm()),
        }
    }};
}

/// Sets SSE-C headers (`$alg`, `$key`, `$md5` setter names) on a request builder when the end has a key.
macro_rules! with_sse_c {
    ($req:expr, $sse:expr) => {
        with_sse_c!(
            $req,
            $sse,
            set_sse_customer_algorithm,
            set_sse_customer_key,
            set_sse_customer_key_md5
        )
    };
    ($req:expr, $sse:expr, $alg:ident, $key:ident, $md5:ident) => {{
        let s: &Option<SseC> = $sse;
        $req.$alg(s.as_ref().map(|s| s.algorithm.clone()))
            .$key(s.as_ref().map(|s| s.key.clone()))
            .$md5(s.as_ref().map(|s| s.key_md5.clone()))
    }};
}

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

/// Whether an object's ETag can be an MD5 digest of its bytes, from the encryption a response reports:
/// the ETags of SSE-KMS, DSSE-KMS and SSE-C objects are not.
pub fn etag_is_digest(
    sse: Option<&aws_sdk_s3::types::ServerSideEncryption>,
    sse_customer_algorithm: Option<&str>,
) -> bool {
    use aws_sdk_s3::types::ServerSideEncryption as Sse;
    let kms = matches!(sse, Some(Sse::AwsKms) | Some(Sse::AwsKmsDsse))
        || sse.is_some_and(|s| s.as_str().starts_with("aws:kms"));
    !kms && sse_customer_algorithm.is_none()
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

impl S3Storage {
    /// A storage end over `client` for `bucket` and `prefix`.
    pub fn new(client: Client, bucket: String, prefix: String, payload_signing: bool, sse_c: Option<SseC>) -> Self {
        S3Storage {
            client,
            bucket,
            prefix,
            payload_signing,
            sse_c,
            request_payer: false,
            learned: Arc::default(),
        }
    }

    /// Sends `x-amz-request-payer: requester` with every object request (`--*-request-payer`).
    pub fn with_request_payer(mut self, on: bool) -> Self {
        self.request_payer = on;
        self
    }

    fn payer(&self) -> Option<aws_sdk_s3::types::RequestPayer> {
        self.request_payer.then_some(aws_sdk_s3::types::RequestPayer::Requester)
    }

    /// The request payer of a write: this end's, or the object's (set by a preprocess callback).
    fn payer_for(&self, attrs: &ObjectAttributes) -> Option<aws_sdk_s3::types::RequestPayer> {
        (self.request_payer || attrs.request_payer).then_some(aws_sdk_s3::types::RequestPayer::Requester)
    }

    /// This end as every request for one object should see it: with the object's request payer (set
    /// by a preprocess callback) on each request of its upload — parts, completion, abort — not only
    /// on the first.
    pub fn for_object(&self, attrs: &ObjectAttributes) -> std::borrow::Cow<'_, S3Storage> {
        if attrs.request_payer && !self.request_payer {
            std::borrow::Cow::Owned(self.clone().with_request_payer(true))
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// Whether objects of this end are encrypted with a customer key (their ETags are then not MD5s).
    pub fn has_sse_c(&self) -> bool {
        self.sse_c.is_some()
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
        use aws_sdk_s3::types::{Tag, Tagging};
        let full = self.full_key(key);
        let set: Vec<Tag> = tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let tagging = Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| Error::S3 {
                operation: "PutObjectTagging",
                bucket: self.bucket.clone(),
                key: full.clone(),
                kind: S3ErrorKind::Other,
                message: e.to_string(),
            })?;
        self.client
            .put_object_tagging()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .tagging(tagging)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("PutObjectTagging", &full, e))
    }

    /// The tag set of one version of an object (empty, without a request, once the server said it
    /// does not implement tagging).
    pub async fn get_tags_version(&self, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>> {
        if self.learned.no_tagging.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let full = self.full_key(key);
        match self
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .set_version_id(version_id.map(str::to_string))
            .key(&full)
            .send()
            .await
        {
            Ok(r) => {
                let mut tags: Vec<(String, String)> = r
                    .tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect();
                tags.sort();
                Ok(tags)
            }
            Err(e) => match self.err("GetObjectTagging", &full, e) {
                Error::S3 {
                    kind: S3ErrorKind::NotImplemented,
                    ..
                } => {
                    self.learned.no_tagging.store(true, Ordering::Relaxed);
                    Ok(Vec::new())
                }
                other => Err(other),
            },
        }
    }

    /// Whether a GET of this server already carried `x-amz-tagging-count`: then a GET without it
    /// means the object has no tags. Until then its absence says nothing (a server that never sends
    /// it, or a caller not allowed to read tags).
    pub fn tag_count_is_sent(&self) -> bool {
        self.learned.tag_count_sent.load(Ordering::Relaxed)
    }

    /// The annotations of one version of an object (the latest when `version_id` is `None`), sorted
    /// by name; every page of ListObjectAnnotations. An object that does not exist has none.
    pub async fn list_annotations(&self, key: &str, version_id: Option<&str>) -> Result<Vec<AnnotationInfo>> {
        let full = self.full_key(key);
        let mut pages = self
            .client
            .list_object_annotations()
            .bucket(&self.bucket)
            .key(&full)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(self.payer())
            .max_annotation_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page.map_err(|e| self.err("ListObjectAnnotations", &full, e)) {
                Ok(p) => p,
                // No such object (yet): it has no annotations.
                Err(Error::S3 {
                    kind: S3ErrorKind::NotFound,
                    ..
                }) => break,
                Err(e) => return Err(e),
            };
            out.extend(page.annotations().iter().map(|a| AnnotationInfo {
                name: a.annotation_name().to_string(),
                etag: a.e_tag().map(str::to_string),
                size: a.size(),
                last_modified: to_system_time(a.last_modified()),
            }));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The payload of one annotation; `None` when it no longer exists.
    pub async fn get_annotation(&self, key: &str, version_id: Option<&str>, name: &str) -> Result<Option<Bytes>> {
        let full = self.full_key(key);
        let out = match self
            .client
            .get_object_annotation()
            .bucket(&self.bucket)
            .key(&full)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(self.payer())
            .annotation_name(name)
            .send()
            .await
        {
            Ok(out) => out,
            // NoSuchAnnotation is a 404.
            Err(e) => {
                return match self.err("GetObjectAnnotation", &full, e) {
                    Error::S3 {
                        kind: S3ErrorKind::NotFound,
                        ..
                    } => Ok(None),
                    other => Err(other),
                };
            }
        };
        let body = out.annotation_payload.collect().await.map_err(|e| Error::S3 {
            operation: "GetObjectAnnotation",
            bucket: self.bucket.clone(),
            key: full.clone(),
            kind: S3ErrorKind::Retryable,
            message: format!("the response body broke off: {e}"),
        })?;
        Ok(Some(body.into_bytes()))
    }

    /// Writes (creates or replaces) one annotation of an object.
    pub async fn put_annotation(&self, key: &str, version_id: Option<&str>, name: &str, payload: Bytes) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .put_object_annotation()
            .bucket(&self.bucket)
            .key(&full)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(self.payer())
            .annotation_name(name)
            .annotation_payload(ByteStream::from(payload))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("PutObjectAnnotation", &full, e))
    }

    /// Deletes one annotation of an object.
    pub async fn delete_annotation(&self, key: &str, version_id: Option<&str>, name: &str) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .delete_object_annotation()
            .bucket(&self.bucket)
            .key(&full)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(self.payer())
            .annotation_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteObjectAnnotation", &full, e))
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix, verbatim.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of a relative key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn err<E>(
        &self,
        operation: &'static str,
        key: &str,
        e: SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sdk_error(operation, &self.bucket, key, e)
    }

    /// Checks that the bucket exists and the credentials are accepted (HeadBucket), so that a wrong
    /// setup fails on the first request, before any listing.
    pub async fn check_access(&self) -> Result<()> {
        // A closed port or an unknown host must fail within seconds, not after the run's full retry
        // budget: the first request gets a few quick attempts only.
        let quick = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(std::time::Duration::from_millis(100))
            .with_max_backoff(std::time::Duration::from_secs(1));
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().retry_config(quick))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| match self.err("HeadBucket", "", e) {
                Error::S3 {
                    kind: S3ErrorKind::NotFound,
                    operation,
                    bucket,
                    key,
                    ..
                } => Error::S3 {
                    operation,
                    bucket,
                    key,
                    kind: S3ErrorKind::NoSuchBucket,
                    message: "the bucket does not exist".into(),
                },
                other => other,
            })
    }

    /// The error of a listing the server ended before its end.
    fn incomplete(&self, operation: &'static str, message: &str) -> Error {
        Error::S3 {
            operation,
            bucket: self.bucket.clone(),
            key: self.prefix.clone(),
            kind: S3ErrorKind::Other,
            message: message.to_string(),
        }
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
        use super::list_xml::{FastList, Read};
        // Successful pages are read by the fast reader (`list_xml`); a page it declines is asked for
        // again and read by the SDK, as is every later page listed through this end.
        let mut fast_reader = !self.learned.sdk_lists.load(Ordering::Relaxed);
        let (resp, read) = loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_request_payer(self.payer())
                .prefix(&self.prefix)
                .max_keys(max_keys)
                .set_start_after(page.start_after.as_deref().map(|k| self.full_key(k)))
                .set_continuation_token(page.token.clone())
                .customize();
            let slot = super::list_xml::Slot::default();
            let sent = match fast_reader {
                true => request.interceptor(FastList::new(slot.clone())).send().await,
                false => request.send().await,
            };
            let resp = sent.map_err(|e| self.err("ListObjectsV2", &self.prefix, e))?;
            let read = slot.lock().ok().and_then(|mut read| read.take());
            if fast_reader && read == Some(Read::Declined) {
                self.learned.sdk_lists.store(true, Ordering::Relaxed);
                fast_reader = false;
                continue;
            }
            break (resp, read);
        };
        // The fast reader's page, or the SDK's reading of it, as one list of objects.
        let mut entries = match read {
            Some(Read::Page(page)) => page.objects,
            _ => resp
                .contents()
                .iter()
                .filter_map(|obj| {
                    Some(Entry {
                        key: obj.key()?.to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        mtime: obj
                            .last_modified()
                            .map(to_system_time)
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                        etag: obj.e_tag().map(str::to_string),
                        version_id: None,
                    })
                })
                .collect(),
        };
        // Keys relative to the prefix, ETags bare, in place. Keys outside the prefix, and the prefix
        // itself (e.g. a directory marker equal to it), are left out.
        let prefix = self.prefix.as_str();
        entries.retain_mut(|e| {
            if e.key.strip_prefix(prefix).is_none_or(str::is_empty) {
                return false;
            }
            e.key.drain(..prefix.len());
            e.etag = e.etag.take().map(crate::checksum::normalized_etag);
            true
        });
        let next = match (resp.is_truncated() == Some(true), resp.next_continuation_token()) {
            (true, Some(t)) if !t.is_empty() => Some(Page {
                start_after: None,
                token: Some(t.to_string()),
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
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        let mut current: Option<KeyVersions> = None;
        loop {
            let resp = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .set_request_payer(self.payer())
                .prefix(&self.prefix)
                .max_keys(max_keys)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err("ListObjectVersions", &self.prefix, e))?;
            let mut page: Vec<ObjectVersionEntry> = Vec::new();
            for v in resp.versions() {
                let Some(rel) = v.key().and_then(|k| k.strip_prefix(self.prefix.as_str())) else {
                    continue;
                };
                page.push(ObjectVersionEntry {
                    entry: Entry {
                        key: rel.to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        mtime: v.last_modified().map(to_system_time).unwrap_or(SystemTime::UNIX_EPOCH),
                        etag: v.e_tag().map(crate::checksum::normalize_etag),
                        version_id: v.version_id().map(str::to_string),
                    },
                    delete_marker: false,
                    is_latest: v.is_latest().unwrap_or(false),
                });
            }
            for d in resp.delete_markers() {
                let Some(rel) = d.key().and_then(|k| k.strip_prefix(self.prefix.as_str())) else {
                    continue;
                };
                page.push(ObjectVersionEntry {
                    entry: Entry {
                        key: rel.to_string(),
                        size: 0,
                        mtime: d.last_modified().map(to_system_time).unwrap_or(SystemTime::UNIX_EPOCH),
                        etag: None,
                        version_id: d.version_id().map(str::to_string),
                    },
                    delete_marker: true,
                    is_latest: d.is_latest().unwrap_or(false),
                });
            }
            // Keys ascending; within a key, oldest first.
            page.sort_by(|a, b| {
                a.entry
                    .key
                    .as_bytes()
                    .cmp(b.entry.key.as_bytes())
                    .then(a.entry.mtime.cmp(&b.entry.mtime))
            });
            for v in page {
                if v.entry.key.is_empty() {
                    continue;
                }
                match current.as_mut() {
                    Some(c) if c.key == v.entry.key => {
                        // A key split across pages: later pages hold older versions.
                        let pos = c.versions.partition_point(|x| x.entry.mtime <= v.entry.mtime);
                        c.versions.insert(pos, v);
                    }
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
            if resp.is_truncated() == Some(true) {
                key_marker = resp.next_key_marker().map(str::to_string);
                version_marker = resp.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    return Err(self.incomplete(
                        "ListObjectVersions",
                        "the server says the listing is truncated but gives no next key marker",
                    ));
                }
            } else {
                break;
            }
        }
        if let Some(done) = current {
            let _ = tx.send(Ok(done)).await;
        }
        Ok(())
    }

    /// Whether any version or delete marker of exactly this key exists.
    pub async fn has_versions(&self, key: &str) -> Result<bool> {
        let full = self.full_key(key);
        let resp = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .prefix(&full)
            .max_keys(10)
            .send()
            .await
            .map_err(|e| self.err("ListObjectVersions", &full, e))?;
        Ok(resp.versions().iter().any(|v| v.key() == Some(full.as_str()))
            || resp.delete_markers().iter().any(|d| d.key() == Some(full.as_str())))
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
        let full = self.full_key(key);
        let res = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .set_part_number(part_number)
            .set_version_id(version_id.map(str::to_string))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        let res = with_sse_c!(res, &self.sse_c).send().await;
        match res {
            Ok(h) => Ok(Some(head_info!(h, key, ObjectAttributes::from_head(&h)))),
            Err(e) => match self.err("HeadObject", &full, e) {
                Error::S3 {
                    kind: S3ErrorKind::NotFound,
                    ..
                } => Ok(None),
                other => Err(other),
            },
        }
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
        let range = (len > 0).then(|| format!("bytes={}-{}", offset, offset + len - 1));
        let resp = self.send_get(key, version_id, etag, range).await?;
        Ok(Ranged {
            etag_is_md5: etag_is_digest(resp.server_side_encryption(), resp.sse_customer_algorithm()),
            body: resp.body,
        })
    }

    /// Starts a GET of a whole object and returns its body with what its headers tell, the same as a
    /// HEAD would (but for the stored additional checksum, which a GET does not ask for): one request
    /// where a HEAD and a GET were two.
    pub async fn open(&self, key: &str, version_id: Option<&str>, etag: Option<&str>) -> Result<(Ranged, HeadInfo)> {
        let g = self.send_get(key, version_id, etag, None).await?;
        if g.tag_count().is_some() {
            self.learned.tag_count_sent.store(true, Ordering::Relaxed);
        }
        let info = head_info!(g, key, ObjectAttributes::from_get(&g));
        let ranged = Ranged {
            etag_is_md5: etag_is_digest(g.server_side_encryption(), g.sse_customer_algorithm()),
            body: g.body,
        };
        Ok((ranged, info))
    }

    /// Sends one GetObject, pinned to `version_id`, else to the listed `etag`: every range of one
    /// object reads the same bytes (an object overwritten mid-transfer fails with 412, reported as
    /// [`Error::ObjectChanged`], instead of mixing two objects).
    async fn send_get(
        &self,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        let full = self.full_key(key);
        let if_match = match (version_id, etag) {
            (None, Some(e)) if !e.is_empty() => Some(format!("\"{e}\"")),
            _ => None,
        };
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .set_range(range)
            .set_if_match(if_match)
            .set_version_id(version_id.map(str::to_string));
        with_sse_c!(req, &self.sse_c).send().await.map_err(|e| {
            if let SdkError::ServiceError(se) = &e {
                if se.raw().status().as_u16() == 412 {
                    return Error::ObjectChanged {
                        key: key.to_string(),
                        message: "the object was replaced during the transfer (its ETag no longer matches the listing)"
                            .into(),
                    };
                }
            }
            self.err("GetObject", &full, e)
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
        let full = self.full_key(key);
        let len: u64 = body.iter().map(|b| b.len() as u64).sum();
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .content_length(len as i64)
            .set_content_md5(content_md5)
            .set_if_match(attrs.preconditions.if_match_header())
            .set_if_none_match(attrs.preconditions.if_none_match_header())
            .body(crate::transfer::body::chunk_stream(body));
        let req = crate::apply_attributes!(req, attrs).set_request_payer(self.payer_for(attrs));
        let req = with_named_checksum!(with_sse_c!(req, &self.sse_c), checksum);
        Ok(send_body!(self, req, "PutObject", &full, checksum))
    }

    /// Starts a multipart upload; returns its upload id.
    pub async fn create_multipart(
        &self,
        key: &str,
        attrs: &ObjectAttributes,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    ) -> Result<String> {
        let full = self.full_key(key);
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .set_checksum_algorithm(checksum.map(|c| c.0.to_sdk()))
            .set_checksum_type(full_object_type(checksum));
        let req = crate::apply_attributes!(req, attrs).set_request_payer(self.payer_for(attrs));
        let resp = with_sse_c!(req, &self.sse_c)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", &full, e))?;
        resp.upload_id().map(str::to_string).ok_or_else(|| Error::S3 {
            operation: "CreateMultipartUpload",
            bucket: self.bucket.clone(),
            key: full,
            kind: S3ErrorKind::Other,
            message: "the response has no upload id".into(),
        })
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
        let len: u64 = body.iter().map(|b| b.len() as u64).sum();
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(len as i64)
            .set_content_md5(content_md5)
            .body(crate::transfer::body::chunk_stream(body));
        let req = with_named_checksum!(with_sse_c!(req, &self.sse_c), checksum);
        Ok(send_body!(self, req, "UploadPart", &full, checksum))
    }

    /// Copies a byte range (`(offset, len)`) of another object into a part (UploadPartCopy); returns the
    /// part's ETag.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        source: CopySource<'_>,
        (offset, len): (u64, u64),
        copy_source_if_match: Option<String>,
    ) -> Result<String> {
        let CopySource {
            storage: source,
            key: source_key,
            version: source_version,
        } = source;
        let full = self.full_key(key);
        let resp = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .upload_id(upload_id)
            .part_number(part_number)
            .copy_source(source.copy_source(source_key, source_version))
            .copy_source_range(format!("bytes={}-{}", offset, offset + len.max(1) - 1))
            .set_copy_source_if_match(copy_source_if_match);
        let resp = with_sse_c!(resp, &self.sse_c);
        let resp = with_sse_c!(
            resp,
            &source.sse_c,
            set_copy_source_sse_customer_algorithm,
            set_copy_source_sse_customer_key,
            set_copy_source_sse_customer_key_md5
        )
        .send()
        .await
        .map_err(|e| self.err("UploadPartCopy", &full, e))?;
        Ok(resp
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .map(crate::checksum::normalize_etag)
            .unwrap_or_default())
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
        let parts = parts
            .into_iter()
            .map(|p| {
                let b = CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(format!("\"{}\"", p.etag));
                with_checksum!(b, &p.checksum).build()
            })
            .collect();
        let resp = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .upload_id(upload_id)
            .set_if_match(preconditions.if_match_header())
            .set_if_none_match(preconditions.if_none_match_header())
            .set_checksum_type(full_object_type(checksum))
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        let resp = with_checksum!(with_sse_c!(resp, &self.sse_c), &full_object_value)
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", &full, e))?;
        Ok(Written {
            etag: resp.e_tag().map(crate::checksum::normalize_etag).unwrap_or_default(),
            checksum: checksum.and_then(|(a, _)| checksum_of!(resp, a)),
            etag_is_md5: etag_is_digest(resp.server_side_encryption(), None) && self.sse_c.is_none(),
        })
    }

    /// The parts already uploaded to a multipart upload: `(part number, ETag, size)`; `None` when the
    /// upload no longer exists.
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Option<Vec<(i32, String, u64)>>> {
        let full = self.full_key(key);
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .set_request_payer(self.payer())
                .key(&full)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    return match self.err("ListParts", &full, e) {
                        Error::S3 {
                            kind: S3ErrorKind::NotFound | S3ErrorKind::NoSuchUpload,
                            ..
                        } => Ok(None),
                        other => Err(other),
                    }
                }
            };
            for p in resp.parts() {
                if let (Some(n), Some(e)) = (p.part_number(), p.e_tag()) {
                    out.push((
                        n,
                        crate::checksum::normalize_etag(e),
                        p.size().unwrap_or(0).max(0) as u64,
                    ));
                }
            }
            match resp.next_part_number_marker() {
                Some(m) if resp.is_truncated() == Some(true) => marker = Some(m.to_string()),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// Aborts a multipart upload.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .upload_id(upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("AbortMultipartUpload", &full, e))
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
        let full = self.full_key(key);
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .copy_source(source.copy_source(source_key, source_version))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
            .set_copy_source_if_match(attrs.preconditions.copy_source_if_match_header())
            .set_if_match(attrs.preconditions.if_match_header())
            .set_if_none_match(attrs.preconditions.if_none_match_header());
        let req = crate::apply_attributes!(req, attrs).set_request_payer(self.payer_for(attrs));
        let req = with_sse_c!(req, &self.sse_c);
        let resp = with_sse_c!(
            req,
            &source.sse_c,
            set_copy_source_sse_customer_algorithm,
            set_copy_source_sse_customer_key,
            set_copy_source_sse_customer_key_md5
        )
        .send()
        .await
        .map_err(|e| self.err("CopyObject", &full, e))?;
        Ok(resp
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(crate::checksum::normalize_etag)
            .unwrap_or_default())
    }

    /// Deletes one object; with `if_match`, only while its ETag is still that one (`--if-match`).
    pub async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .key(&full)
            .set_if_match(if_match.map(crate::attributes::quote))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteObject", &full, e))
    }

    /// The `x-amz-copy-source` value for a relative key of this storage (URL-encoded).
    fn copy_source(&self, key: &str, version_id: Option<&str>) -> String {
        const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let full = self.full_key(key);
        let encoded = percent_encoding::utf8_percent_encode(&full, KEEP);
        match version_id {
            Some(v) => format!("{}/{encoded}?versionId={v}", self.bucket),
            None => format!("{}/{encoded}", self.bucket),
        }
    }
}

/// The `x-amz-checksum-type` header value: sent only for full-object checksums (composite is the
/// default, and some servers refuse the header for it).
fn full_object_type(c: Option<(ChecksumAlgorithm, ChecksumType)>) -> Option<aws_sdk_s3::types::ChecksumType> {
    c.filter(|c| c.1 == ChecksumType::FullObject).map(|c| c.1.to_sdk())
}

/// Converts an SDK timestamp to `SystemTime`.
pub fn to_system_time(dt: &aws_sdk_s3::primitives::DateTime) -> SystemTime {
    SystemTime::try_from(*dt).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Turns an SDK error into a one-line typed error.
pub fn sdk_error<E>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    e: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, message) = match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let msg = se.err().message().unwrap_or("").to_string();
            let kind = match (status, code.as_str()) {
                (_, "NoSuchBucket") => S3ErrorKind::NoSuchBucket,
                (_, "NoSuchUpload") => S3ErrorKind::NoSuchUpload,
                (501, _) | (_, "NotImplemented") => S3ErrorKind::NotImplemented,
                (_, "InvalidObjectState") => S3ErrorKind::Archived,
                (412, _) | (_, "PreconditionFailed") => S3ErrorKind::PreconditionFailed,
                (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken") => {
                    S3ErrorKind::Auth
                }
                (401 | 403, _) => S3ErrorKind::Auth,
                (404, _) | (_, "NoSuchKey" | "NotFound") => S3ErrorKind::NotFound,
                (429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => S3ErrorKind::Retryable,
                _ => S3ErrorKind::Other,
            };
            let text = match (code.is_empty(), msg.is_empty()) {
                (true, _) if kind == S3ErrorKind::Auth => {
                    format!("access denied (HTTP {status}): check the credentials and the permissions")
                }
                (true, _) if kind == S3ErrorKind::NotFound => format!("not found (HTTP {status})"),
                (true, _) => format!("HTTP {status}"),
                (false, true) => format!("{code} (HTTP {status})"),
                (false, false) => format!("{code}: {msg} (HTTP {status})"),
            };
            (kind, text)
        }
        SdkError::DispatchFailure(df) => {
            let kind = if df.is_timeout() || df.is_io() {
                S3ErrorKind::Unreachable
            } else {
                S3ErrorKind::Retryable
            };
            (kind, one_line(&e))
        }
        SdkError::TimeoutError(_) => (S3ErrorKind::Unreachable, "request timed out".to_string()),
        SdkError::ResponseError(_) => (S3ErrorKind::Retryable, one_line(&e)),
        _ => (S3ErrorKind::Other, one_line(&e)),
    };
    Error::S3 {
        operation,
        bucket: bucket.to_string(),
        key: key.to_string(),
        kind,
        message,
    }
}

fn one_line<E: std::error::Error + 'static>(e: &E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    //! Request-level checks of headers that neither test server can observe (request payer,
    //! acceleration): the request is captured before it leaves the client.
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
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
            Err(Error::S3 { kind, .. }) => assert_eq!(kind, S3ErrorKind::NoSuchUpload),
            other => panic!("{other:?}"),
        }
        let s = replaying(&[(403, &error_xml("AccessDenied"))]);
        match s.get_tags("k").await {
            Err(Error::S3 { kind, .. }) => assert_eq!(kind, S3ErrorKind::Auth),
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
}
