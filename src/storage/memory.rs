//! An S3 service in memory, behind the same [`ObjectClient`] trait as the SDK, so that whole syncs run
//! in-process: in every `cargo test`, without a server, and in states no server produces on demand
//! (listings out of order, an object replaced between two requests).
//!
//! It is as strict as the strict servers: Content-MD5 and additional checksums are checked, ETags are
//! MD5s (the multipart `-N` form for multipart uploads; not an MD5 under SSE-C or SSE-KMS), SSE-C
//! objects need their key, preconditions hold, versions and delete markers are kept when the bucket
//! is versioned, and every request is counted per operation.

use super::object_client::{GetRequest, ObjectClient, ObjectsPage, Scope, Source, Upload, VersionsPage};
use super::s3::{AnnotationInfo, ChecksumValue, HeadInfo, ObjectVersionEntry, PartInfo, Ranged, Written};
use super::Entry;
use crate::attributes::{ObjectAttributes, Preconditions};
use crate::checksum::additional::{self, ChecksumAlgorithm, ChecksumHasher, ChecksumType};
use crate::error::{Error, Result, S3ErrorKind};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// The smallest part but the last of a multipart upload, as S3 requires.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// An in-memory S3 service: buckets of objects with versions, multipart uploads and tags.
#[derive(Debug, Default)]
pub struct MemoryClient {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    calls: HashMap<&'static str, usize>,
    /// Serial of ids.
    serial: u64,
    /// List objects in a scrambled order instead of key order.
    unordered: bool,
}

#[derive(Debug, Default)]
struct Bucket {
    versioned: bool,
    /// Every key's versions, oldest first.
    objects: BTreeMap<String, Vec<Version>>,
    uploads: HashMap<String, Pending>,
}

/// One version of an object, or a delete marker (`data` is `None`).
#[derive(Debug, Clone)]
struct Version {
    id: String,
    data: Option<Bytes>,
    etag: String,
    mtime: SystemTime,
    attrs: ObjectAttributes,
    tags: Vec<(String, String)>,
    /// Algorithm, value as reported, full-object.
    checksum: Option<(ChecksumAlgorithm, String, bool)>,
    /// Sizes of the parts of a multipart upload.
    part_sizes: Vec<u64>,
    /// MD5 (base64) of the SSE-C key that encrypts it.
    sse_c_key: Option<String>,
}

#[derive(Debug)]
struct Pending {
    key: String,
    attrs: ObjectAttributes,
    checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    sse_c_key: Option<String>,
    parts: BTreeMap<i32, StoredPart>,
}

#[derive(Debug)]
struct StoredPart {
    data: Bytes,
    etag: String,
    checksum: Option<Vec<u8>>,
}

/// A one-line error as the SDK client would return it.
fn error(operation: &'static str, bucket: &str, key: &str, kind: S3ErrorKind, message: &str) -> Error {
    let (status, code) = match kind {
        S3ErrorKind::Auth => (403, "AccessDenied"),
        S3ErrorKind::NoSuchBucket => (404, "NoSuchBucket"),
        S3ErrorKind::NotFound => (404, "NoSuchKey"),
        S3ErrorKind::NoSuchUpload => (404, "NoSuchUpload"),
        S3ErrorKind::Archived => (403, "InvalidObjectState"),
        S3ErrorKind::PreconditionFailed => (412, "PreconditionFailed"),
        S3ErrorKind::NotImplemented => (501, "NotImplemented"),
        S3ErrorKind::Retryable => (503, "SlowDown"),
        S3ErrorKind::Unreachable | S3ErrorKind::Other => (400, "InvalidRequest"),
    };
    let message = format!("{code}: {message} (HTTP {status})");
    Error::s3(operation, bucket, key, kind, message).with_response(Some(status), Some(code.to_string()), None)
}

fn md5_hex(parts: &[&[u8]]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

fn raw_checksum(algo: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
    let mut h = ChecksumHasher::new(algo);
    h.update(data);
    h.finish()
}

/// The ETag of an object encrypted so that its ETag is not an MD5 of its bytes.
fn opaque(etag: String) -> String {
    md5_hex(&[etag.as_bytes(), b"encrypted"])
}

fn encrypted(attrs: &ObjectAttributes, sse_c_key: &Option<String>) -> bool {
    sse_c_key.is_some() || attrs.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms"))
}

fn concat(body: &[Bytes]) -> Bytes {
    let mut all = Vec::with_capacity(body.iter().map(Bytes::len).sum());
    for b in body {
        all.extend_from_slice(b);
    }
    Bytes::from(all)
}

/// What a HEAD or GET reports of the attributes an object was written with (the headers
/// `ObjectAttributes::from_head` reads; storage class, ACL and encryption are reported apart).
fn stored(attrs: &ObjectAttributes) -> ObjectAttributes {
    ObjectAttributes {
        content_type: attrs.content_type.clone(),
        cache_control: attrs.cache_control.clone(),
        content_disposition: attrs.content_disposition.clone(),
        content_encoding: attrs.content_encoding.clone(),
        content_language: attrs.content_language.clone(),
        expires: attrs.expires,
        website_redirect: attrs.website_redirect.clone(),
        metadata: attrs.metadata.clone(),
        ..Default::default()
    }
}

fn parse_tags(tagging: &Option<String>) -> Vec<(String, String)> {
    let dec = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    tagging
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

impl Version {
    /// Encrypts the version with the SSE-C key of this MD5 (if any) or its SSE-KMS attributes: its
    /// ETag is then no MD5 of its bytes.
    fn encrypt(&mut self, sse_c_key: Option<String>) {
        self.sse_c_key = sse_c_key;
        if encrypted(&self.attrs, &self.sse_c_key) {
            self.etag = opaque(std::mem::take(&mut self.etag));
        }
    }

    fn head(&self, key: &str, range: Option<(u64, u64)>) -> HeadInfo {
        let size = self.data.as_ref().map_or(0, |d| d.len() as u64);
        HeadInfo {
            entry: Entry {
                key: key.to_string(),
                size: range.map_or(size, |(_, len)| len),
                mtime: self.mtime,
                etag: Some(self.etag.clone()),
                version_id: (self.id != "null").then(|| self.id.clone()),
            },
            attributes: stored(&self.attrs),
            parts_count: None,
            checksum: self.checksum.as_ref().map(|(a, v, _)| (*a, v.clone())),
            full_object_checksum: self.checksum.as_ref().is_some_and(|c| c.2),
            storage_class: self.attrs.storage_class.clone().filter(|c| c != "STANDARD"),
            tag_count: (!self.tags.is_empty()).then_some(self.tags.len() as i32),
            server_side_encryption: self.attrs.sse.clone(),
            ssekms_key_id: self.attrs.sse_kms_key_id.clone(),
            sse_customer_algorithm: self.sse_c_key.as_ref().map(|_| "AES256".to_string()),
        }
    }

    fn etag_is_md5(&self) -> bool {
        !encrypted(&self.attrs, &self.sse_c_key)
    }
}

impl Bucket {
    /// The current version of a key, unless it is a delete marker.
    fn current(&self, key: &str) -> Option<&Version> {
        self.objects.get(key)?.last().filter(|v| v.data.is_some())
    }

    fn version(&self, key: &str, version_id: Option<&str>) -> Option<&Version> {
        match version_id {
            None => self.current(key),
            Some(id) => self.objects.get(key)?.iter().find(|v| v.id == id && v.data.is_some()),
        }
    }
}

impl MemoryClient {
    /// An empty service.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a bucket (versioned or not).
    pub fn create_bucket(&self, name: &str, versioned: bool) {
        self.lock().buckets.entry(name.to_string()).or_default().versioned = versioned;
    }

    /// Lists objects in a scrambled, not key, order from now on (a server whose listing is unordered).
    pub fn list_unordered(&self) {
        self.lock().unordered = true;
    }

    /// Stores an object directly (no request counted); returns its ETag.
    pub fn insert(&self, bucket: &str, key: &str, data: impl Into<Bytes>) -> String {
        let mut s = self.lock();
        let data = data.into();
        let version = s.version(data.clone(), md5_hex(&[&data]), ObjectAttributes::default());
        let etag = version.etag.clone();
        s.store(bucket, key, version);
        etag
    }

    /// Stores an object directly with the ETag and stored additional checksum (algorithm, value,
    /// whether full-object) given, as another client or server may have left them.
    pub fn insert_as(
        &self,
        bucket: &str,
        key: &str,
        data: impl Into<Bytes>,
        etag: &str,
        checksum: (ChecksumAlgorithm, String, bool),
    ) {
        let mut s = self.lock();
        let mut version = s.version(data.into(), etag.to_string(), ObjectAttributes::default());
        version.checksum = Some(checksum);
        s.store(bucket, key, version);
    }

    /// The bytes of the current version of an object.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.lock().buckets.get(bucket)?.current(key)?.data.clone()
    }

    /// The ETag of the current version of an object.
    pub fn etag(&self, bucket: &str, key: &str) -> Option<String> {
        Some(self.lock().buckets.get(bucket)?.current(key)?.etag.clone())
    }

    /// The keys of the current objects of a bucket, in key order.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let s = self.lock();
        let Some(b) = s.buckets.get(bucket) else {
            return Vec::new();
        };
        b.objects.keys().filter(|k| b.current(k).is_some()).cloned().collect()
    }

    /// The number of multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> usize {
        self.lock().buckets.get(bucket).map_or(0, |b| b.uploads.len())
    }

    /// How many requests of `operation` (`"PutObject"`, `"GetObject"`, …) were made.
    pub fn calls(&self, operation: &str) -> usize {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }
}

impl State {
    /// Counts a request and returns its bucket.
    fn bucket(&mut self, operation: &'static str, name: &str, key: &str) -> Result<&mut Bucket> {
        *self.calls.entry(operation).or_default() += 1;
        self.lookup(operation, name, key)
    }

    /// A bucket, for a request already counted.
    fn lookup(&mut self, operation: &'static str, name: &str, key: &str) -> Result<&mut Bucket> {
        self.buckets.get_mut(name).ok_or_else(|| {
            error(
                operation,
                name,
                key,
                S3ErrorKind::NoSuchBucket,
                "NoSuchBucket (HTTP 404)",
            )
        })
    }

    fn tick(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn version(&mut self, data: Bytes, etag: String, attrs: ObjectAttributes) -> Version {
        let n = self.tick();
        // Whole seconds, as S3 reports them: writes within one second share a timestamp.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        Version {
            id: format!("v{n:08}"),
            data: Some(data),
            etag,
            mtime,
            tags: parse_tags(&attrs.tagging),
            attrs,
            checksum: None,
            part_sizes: Vec::new(),
            sse_c_key: None,
        }
    }

    fn store(&mut self, bucket: &str, key: &str, mut version: Version) -> Option<String> {
        let b = self.buckets.entry(bucket.to_string()).or_default();
        let versions = b.objects.entry(key.to_string()).or_default();
        if !b.versioned {
            version.id = "null".into();
            versions.clear();
        }
        let id = (version.id != "null").then(|| version.id.clone());
        versions.push(version);
        id
    }
}

/// Checks the `If-Match` / `If-None-Match` of a write against the current object.
fn check_preconditions(op: &'static str, b: &Bucket, bucket: &str, key: &str, p: &Preconditions) -> Result<()> {
    let current = b.current(key).map(|v| v.etag.as_str());
    let failed = (p.if_none_match && current.is_some())
        || p.if_match
            .as_deref()
            .is_some_and(|want| current != Some(want.trim_matches('"')));
    match failed {
        true => Err(error(
            op,
            bucket,
            key,
            S3ErrorKind::PreconditionFailed,
            "PreconditionFailed (HTTP 412)",
        )),
        false => Ok(()),
    }
}

/// The stored parts a CompleteMultipartUpload names, in order; why not, as S3 says it.
fn chosen_parts<'p>(
    pending: &'p Pending,
    parts: &[PartInfo],
) -> std::result::Result<Vec<&'p StoredPart>, &'static str> {
    if parts.is_empty() || parts.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err("InvalidPartOrder (HTTP 400)");
    }
    let same_checksum = |p: &PartInfo, stored: &StoredPart| match (&p.checksum, &stored.checksum) {
        (Some((_, sent)), Some(raw)) => *sent == additional::to_base64(raw),
        _ => true,
    };
    let chosen = parts
        .iter()
        .map(|p| match pending.parts.get(&p.number) {
            Some(stored) if stored.etag == p.etag && same_checksum(p, stored) => Ok(stored),
            _ => Err("InvalidPart (HTTP 400)"),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    match chosen
        .iter()
        .rev()
        .skip(1)
        .any(|p| (p.data.len() as u64) < MIN_PART_SIZE)
    {
        true => Err("EntityTooSmall: a part but the last is under 5 MiB (HTTP 400)"),
        false => Ok(chosen),
    }
}

/// The object checksum of a multipart upload from its parts' (composite or full-object), checked
/// against the whole-object value the client sent, if any.
fn combined_checksum(
    chosen: &[&StoredPart],
    (algo, kind): (ChecksumAlgorithm, ChecksumType),
    sent: Option<&ChecksumValue>,
) -> std::result::Result<(ChecksumAlgorithm, String, bool), String> {
    let raws: Vec<(Vec<u8>, u64)> = chosen
        .iter()
        .map(|p| {
            let raw = p.checksum.clone().unwrap_or_else(|| raw_checksum(algo, &p.data));
            (raw, p.data.len() as u64)
        })
        .collect();
    let value = additional::combine_parts(algo, kind, &raws)?;
    if sent.is_some_and(|(_, want)| *want != value) {
        return Err("BadDigest: the full-object checksum does not match (HTTP 400)".into());
    }
    Ok((algo, value, kind == ChecksumType::FullObject))
}

/// Checks a body against the Content-MD5 and additional checksum sent with it.
fn check_body(
    op: &'static str,
    scope: &Scope,
    key: &str,
    data: &[u8],
    content_md5: &Option<String>,
    checksum: &Option<ChecksumValue>,
) -> Result<Option<Vec<u8>>> {
    let bad = |what: &str| {
        error(
            op,
            &scope.bucket,
            key,
            S3ErrorKind::Other,
            &format!("BadDigest: {what} (HTTP 400)"),
        )
    };
    if let Some(md5) = content_md5 {
        if *md5 != additional::to_base64(&crate::checksum::md5_of(data)) {
            return Err(bad("the Content-MD5 does not match the body"));
        }
    }
    match checksum {
        None => Ok(None),
        Some((algo, value)) => {
            let raw = raw_checksum(*algo, data);
            if additional::to_base64(&raw) != *value {
                return Err(bad("the checksum does not match the body"));
            }
            Ok(Some(raw))
        }
    }
}

/// Checks that a request on an SSE-C object carries its key.
fn check_key(op: &'static str, scope: &Scope, key: &str, v: &Version) -> Result<()> {
    let given = scope.sse_c.as_ref().map(|k| k.key_md5.clone());
    match v.sse_c_key == given {
        true => Ok(()),
        false => Err(error(
            op,
            &scope.bucket,
            key,
            S3ErrorKind::Other,
            "InvalidRequest: the SSE-C key does not match (HTTP 400)",
        )),
    }
}

/// Reads `(offset, len)` of a source object for a copy.
fn read_source(
    s: &mut State,
    op: &'static str,
    source: &Source<'_>,
    range: Option<(u64, u64)>,
    if_match: &Option<String>,
) -> Result<Version> {
    let b = s.bucket(op, &source.scope.bucket, source.key)?;
    let v = b
        .version(source.key, source.version)
        .ok_or_else(|| {
            error(
                op,
                &source.scope.bucket,
                source.key,
                S3ErrorKind::NotFound,
                "NoSuchKey (HTTP 404)",
            )
        })?
        .clone();
    check_key(op, source.scope, source.key, &v)?;
    if if_match.as_deref().is_some_and(|e| e.trim_matches('"') != v.etag) {
        return Err(error(
            op,
            &source.scope.bucket,
            source.key,
            S3ErrorKind::PreconditionFailed,
            "PreconditionFailed (HTTP 412)",
        ));
    }
    let mut v = v;
    if let (Some((offset, len)), Some(data)) = (range, v.data.as_ref()) {
        if offset + len > data.len() as u64 {
            let m = "InvalidRange: the copy range is past the end of the source (HTTP 416)";
            return Err(error(op, &source.scope.bucket, source.key, S3ErrorKind::Other, m));
        }
        v.data = Some(data.slice(offset as usize..(offset + len) as usize));
    }
    Ok(v)
}

#[async_trait::async_trait]
impl ObjectClient for MemoryClient {
    async fn head_bucket(&self, scope: &Scope) -> Result<()> {
        self.lock().bucket("HeadBucket", &scope.bucket, "").map(|_| ())
    }

    async fn list_objects(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        start_after: Option<String>,
        token: Option<String>,
    ) -> Result<ObjectsPage> {
        let mut s = self.lock();
        let unordered = s.unordered;
        let b = s.bucket("ListObjectsV2", &scope.bucket, prefix)?;
        let bad_token = || {
            error(
                "ListObjectsV2",
                &scope.bucket,
                prefix,
                S3ErrorKind::Other,
                "InvalidArgument: the continuation token is invalid (HTTP 400)",
            )
        };
        // A continuation token says where the previous page ended and takes precedence over
        // `start_after`: the last key returned (key order), or the position in the listing
        // (unordered).
        let (after, position) = match token.as_deref() {
            None => (start_after, 0),
            Some(t) if unordered => (None, t.parse::<usize>().map_err(|_| bad_token())?),
            Some(t) => {
                let key = hex::decode(t).ok().and_then(|k| String::from_utf8(k).ok());
                (Some(key.ok_or_else(bad_token)?), 0)
            }
        };
        let mut all: Vec<Entry> = b
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_str() > a.as_str()))
            .filter_map(|(k, _)| {
                let v = b.current(k)?;
                Some(Entry {
                    key: k.clone(),
                    size: v.data.as_ref().map_or(0, |d| d.len() as u64),
                    mtime: v.mtime,
                    etag: Some(format!("\"{}\"", v.etag)),
                    version_id: None,
                })
            })
            .collect();
        if unordered {
            // Keys sorted by their reversed bytes: an order that is not the key order.
            all.sort_by(|a, b| a.key.bytes().rev().cmp(b.key.bytes().rev()));
        }
        let start = position.min(all.len());
        let end = (start + max_keys.max(1) as usize).min(all.len());
        let truncated = end < all.len();
        let next_token = match (truncated, unordered) {
            (false, _) => None,
            (true, true) => Some(end.to_string()),
            (true, false) => Some(hex::encode(&all[end - 1].key)),
        };
        Ok(ObjectsPage {
            entries: all.drain(start..end).collect(),
            truncated,
            next_token,
        })
    }

    async fn list_versions(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        key_marker: Option<String>,
        version_marker: Option<String>,
    ) -> Result<VersionsPage> {
        let mut s = self.lock();
        let b = s.bucket("ListObjectVersions", &scope.bucket, prefix)?;
        // Keys ascending, newest version first, as S3 lists them.
        let all: Vec<ObjectVersionEntry> = b
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .flat_map(|(k, versions)| {
                let n = versions.len();
                versions.iter().enumerate().rev().map(move |(i, v)| ObjectVersionEntry {
                    entry: Entry {
                        key: k.clone(),
                        size: v.data.as_ref().map_or(0, |d| d.len() as u64),
                        mtime: v.mtime,
                        etag: v.data.as_ref().map(|_| v.etag.clone()),
                        version_id: Some(v.id.clone()),
                    },
                    delete_marker: v.data.is_none(),
                    is_latest: i + 1 == n,
                })
            })
            .collect();
        let start = match (&key_marker, &version_marker) {
            (Some(k), Some(v)) => all
                .iter()
                .position(|e| &e.entry.key == k && e.entry.version_id.as_ref() == Some(v))
                .map(|i| i + 1)
                .ok_or_else(|| {
                    let m = "InvalidArgument: no such version marker (HTTP 400)";
                    error("ListObjectVersions", &scope.bucket, prefix, S3ErrorKind::Other, m)
                })?,
            (Some(k), None) => all.iter().position(|e| e.entry.key > *k).unwrap_or(all.len()),
            _ => 0,
        };
        let end = (start + max_keys.max(1) as usize).min(all.len());
        let page: Vec<ObjectVersionEntry> = all[start..end].to_vec();
        let truncated = end < all.len();
        let last = page.last().map(|e| (e.entry.key.clone(), e.entry.version_id.clone()));
        Ok(VersionsPage {
            versions: page,
            truncated,
            next_key_marker: truncated.then(|| last.clone().map(|l| l.0)).flatten(),
            next_version_marker: truncated.then(|| last.and_then(|l| l.1)).flatten(),
        })
    }

    async fn head_object(
        &self,
        scope: &Scope,
        key: &str,
        part_number: Option<i32>,
        version_id: Option<&str>,
    ) -> Result<Option<HeadInfo>> {
        let mut s = self.lock();
        let b = s.bucket("HeadObject", &scope.bucket, key)?;
        let Some(v) = b.version(key, version_id) else {
            return Ok(None);
        };
        check_key("HeadObject", scope, key, v)?;
        let mut h = v.head(key, None);
        if let Some(n) = part_number {
            let sizes = match v.part_sizes.is_empty() {
                true => vec![h.entry.size],
                false => v.part_sizes.clone(),
            };
            let Some(size) = usize::try_from(n - 1).ok().and_then(|i| sizes.get(i)) else {
                return Err(error(
                    "HeadObject",
                    &scope.bucket,
                    key,
                    S3ErrorKind::Other,
                    "InvalidPartNumber (HTTP 416)",
                ));
            };
            h.entry.size = *size;
            h.parts_count = (!v.part_sizes.is_empty()).then_some(sizes.len() as u64);
        }
        Ok(Some(h))
    }

    async fn get_object(&self, scope: &Scope, key: &str, req: GetRequest<'_>) -> Result<(Ranged, Option<HeadInfo>)> {
        let GetRequest {
            version_id,
            if_match,
            range,
            head,
        } = req;
        let mut s = self.lock();
        let b = s.bucket("GetObject", &scope.bucket, key)?;
        let v = b.version(key, version_id).ok_or_else(|| {
            error(
                "GetObject",
                &scope.bucket,
                key,
                S3ErrorKind::NotFound,
                "NoSuchKey (HTTP 404)",
            )
        })?;
        check_key("GetObject", scope, key, v)?;
        if if_match.is_some_and(|e| e.trim_matches('"') != v.etag) {
            return Err(error(
                "GetObject",
                &scope.bucket,
                key,
                S3ErrorKind::PreconditionFailed,
                "PreconditionFailed (HTTP 412)",
            ));
        }
        let data = v.data.clone().unwrap_or_default();
        let size = data.len() as u64;
        let (offset, len) = match range {
            Some((o, _)) if o >= size && size > 0 => {
                return Err(error(
                    "GetObject",
                    &scope.bucket,
                    key,
                    S3ErrorKind::Other,
                    "InvalidRange (HTTP 416)",
                ))
            }
            Some((o, l)) => (o.min(size), l.min(size - o.min(size))),
            None => (0, size),
        };
        let info = head.then(|| {
            let mut h = v.head(key, Some((offset, len)));
            h.checksum = None;
            h
        });
        let body = data.slice(offset as usize..(offset + len) as usize);
        let ranged = Ranged {
            body: body.into(),
            etag_is_md5: v.etag_is_md5(),
        };
        Ok((ranged, info))
    }

    async fn put_object(
        &self,
        scope: &Scope,
        key: &str,
        body: Vec<Bytes>,
        content_md5: Option<String>,
        checksum: &Option<ChecksumValue>,
        attrs: &ObjectAttributes,
    ) -> Result<Written> {
        let data = concat(&body);
        let mut s = self.lock();
        let b = s.bucket("PutObject", &scope.bucket, key)?;
        check_preconditions("PutObject", b, &scope.bucket, key, &attrs.preconditions)?;
        check_body("PutObject", scope, key, &data, &content_md5, checksum)?;
        let mut v = s.version(data.clone(), md5_hex(&[&data]), attrs.clone());
        v.encrypt(scope.sse_c.as_ref().map(|k| k.key_md5.clone()));
        v.checksum = checksum.as_ref().map(|(a, value)| (*a, value.clone(), true));
        let written = Written {
            etag: v.etag.clone(),
            checksum: checksum.as_ref().map(|c| c.1.clone()),
            etag_is_md5: v.etag_is_md5(),
        };
        s.store(&scope.bucket, key, v);
        Ok(written)
    }

    async fn create_multipart(
        &self,
        scope: &Scope,
        key: &str,
        attrs: &ObjectAttributes,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    ) -> Result<String> {
        let mut s = self.lock();
        let id = format!("upload-{}", s.tick());
        let b = s.bucket("CreateMultipartUpload", &scope.bucket, key)?;
        b.uploads.insert(
            id.clone(),
            Pending {
                key: key.to_string(),
                attrs: attrs.clone(),
                checksum,
                sse_c_key: scope.sse_c.as_ref().map(|k| k.key_md5.clone()),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        part_number: i32,
        body: Vec<Bytes>,
        content_md5: Option<String>,
        checksum: &Option<ChecksumValue>,
    ) -> Result<Written> {
        let data = concat(&body);
        let mut s = self.lock();
        let b = s.bucket("UploadPart", &scope.bucket, upload.key)?;
        let no_upload = || {
            error(
                "UploadPart",
                &scope.bucket,
                upload.key,
                S3ErrorKind::NoSuchUpload,
                "NoSuchUpload (HTTP 404)",
            )
        };
        let pending = b
            .uploads
            .get_mut(upload.upload_id)
            .filter(|p| p.key == upload.key)
            .ok_or_else(no_upload)?;
        if !(1..=10_000).contains(&part_number) {
            return Err(error(
                "UploadPart",
                &scope.bucket,
                upload.key,
                S3ErrorKind::Other,
                "InvalidArgument: part number (HTTP 400)",
            ));
        }
        let refuse = |m: &str| error("UploadPart", &scope.bucket, upload.key, S3ErrorKind::Other, m);
        if pending.sse_c_key != scope.sse_c.as_ref().map(|k| k.key_md5.clone()) {
            return Err(refuse(
                "InvalidRequest: the SSE-C key differs from the upload's (HTTP 400)",
            ));
        }
        if let (Some((want, _)), Some((got, _))) = (pending.checksum, checksum) {
            if want != *got {
                return Err(refuse(
                    "InvalidRequest: the checksum algorithm differs from the upload's (HTTP 400)",
                ));
            }
        }
        let raw = check_body("UploadPart", scope, upload.key, &data, &content_md5, checksum)?;
        let etag = md5_hex(&[&data]);
        let written = Written {
            etag: etag.clone(),
            checksum: checksum.as_ref().map(|c| c.1.clone()),
            etag_is_md5: !encrypted(&pending.attrs, &pending.sse_c_key),
        };
        pending.parts.insert(
            part_number,
            StoredPart {
                data,
                etag,
                checksum: raw,
            },
        );
        Ok(written)
    }

    async fn upload_part_copy(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        part_number: i32,
        source: Source<'_>,
        range: (u64, u64),
        copy_source_if_match: Option<String>,
    ) -> Result<String> {
        let mut s = self.lock();
        let v = read_source(&mut s, "UploadPartCopy", &source, Some(range), &copy_source_if_match)?;
        let b = s.lookup("UploadPartCopy", &scope.bucket, upload.key)?;
        let pending = b
            .uploads
            .get_mut(upload.upload_id)
            .filter(|p| p.key == upload.key)
            .ok_or_else(|| {
                error(
                    "UploadPartCopy",
                    &scope.bucket,
                    upload.key,
                    S3ErrorKind::NoSuchUpload,
                    "NoSuchUpload (HTTP 404)",
                )
            })?;
        let data = v.data.unwrap_or_default();
        let etag = md5_hex(&[&data]);
        let checksum = pending.checksum.map(|(a, _)| raw_checksum(a, &data));
        pending.parts.insert(
            part_number,
            StoredPart {
                data,
                etag: etag.clone(),
                checksum,
            },
        );
        Ok(etag)
    }

    async fn complete_multipart(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        parts: Vec<PartInfo>,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
        full_object_value: Option<ChecksumValue>,
        preconditions: &Preconditions,
    ) -> Result<Written> {
        let op = "CompleteMultipartUpload";
        let mut s = self.lock();
        let b = s.bucket(op, &scope.bucket, upload.key)?;
        check_preconditions(op, b, &scope.bucket, upload.key, preconditions)?;
        let fail = |kind, m: &str| error(op, &scope.bucket, upload.key, kind, m);
        let pending = b
            .uploads
            .get(upload.upload_id)
            .filter(|p| p.key == upload.key)
            .ok_or_else(|| fail(S3ErrorKind::NoSuchUpload, "NoSuchUpload (HTTP 404)"))?;
        let chosen = chosen_parts(pending, &parts).map_err(|m| fail(S3ErrorKind::Other, m))?;
        let data = concat(&chosen.iter().map(|p| p.data.clone()).collect::<Vec<_>>());
        let digests: Vec<Vec<u8>> = chosen
            .iter()
            .map(|p| hex::decode(&p.etag).unwrap_or_default())
            .collect();
        let etag = format!(
            "{}-{}",
            md5_hex(&digests.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            chosen.len()
        );
        let value = match pending.checksum.or(checksum) {
            None => None,
            Some(asked) => Some(
                combined_checksum(&chosen, asked, full_object_value.as_ref())
                    .map_err(|m| fail(S3ErrorKind::Other, &m))?,
            ),
        };
        let part_sizes = chosen.iter().map(|p| p.data.len() as u64).collect();
        let (attrs, sse_c_key) = (pending.attrs.clone(), pending.sse_c_key.clone());
        b.uploads.remove(upload.upload_id);
        let mut v = s.version(data, etag, attrs);
        v.encrypt(sse_c_key);
        v.checksum = value;
        v.part_sizes = part_sizes;
        let written = Written {
            etag: v.etag.clone(),
            checksum: v.checksum.as_ref().map(|c| c.1.clone()),
            etag_is_md5: v.etag_is_md5(),
        };
        s.store(&scope.bucket, upload.key, v);
        Ok(written)
    }

    async fn list_parts(&self, scope: &Scope, upload: Upload<'_>) -> Result<Option<Vec<(i32, String, u64)>>> {
        let mut s = self.lock();
        let b = s.bucket("ListParts", &scope.bucket, upload.key)?;
        Ok(b.uploads.get(upload.upload_id).map(|p| {
            p.parts
                .iter()
                .map(|(n, part)| (*n, part.etag.clone(), part.data.len() as u64))
                .collect()
        }))
    }

    async fn abort_multipart(&self, scope: &Scope, upload: Upload<'_>) -> Result<()> {
        let mut s = self.lock();
        let b = s.bucket("AbortMultipartUpload", &scope.bucket, upload.key)?;
        match b.uploads.remove(upload.upload_id) {
            Some(_) => Ok(()),
            None => Err(error(
                "AbortMultipartUpload",
                &scope.bucket,
                upload.key,
                S3ErrorKind::NoSuchUpload,
                "NoSuchUpload (HTTP 404)",
            )),
        }
    }

    async fn copy_object(
        &self,
        scope: &Scope,
        key: &str,
        source: Source<'_>,
        attrs: &ObjectAttributes,
    ) -> Result<String> {
        let mut s = self.lock();
        let from = read_source(
            &mut s,
            "CopyObject",
            &source,
            None,
            &attrs.preconditions.copy_source_if_match,
        )?;
        let b = s.lookup("CopyObject", &scope.bucket, key)?;
        check_preconditions("CopyObject", b, &scope.bucket, key, &attrs.preconditions)?;
        let data = from.data.unwrap_or_default();
        let mut v = s.version(data.clone(), md5_hex(&[&data]), attrs.clone());
        v.encrypt(scope.sse_c.as_ref().map(|k| k.key_md5.clone()));
        // The copy is one part: its checksum is of the whole object, in the source's algorithm.
        v.checksum = from
            .checksum
            .map(|(a, _, _)| (a, additional::to_base64(&raw_checksum(a, &data)), true));
        let etag = v.etag.clone();
        s.store(&scope.bucket, key, v);
        Ok(etag)
    }

    async fn delete_object(&self, scope: &Scope, key: &str, if_match: Option<&str>) -> Result<()> {
        let mut s = self.lock();
        let b = s.bucket("DeleteObject", &scope.bucket, key)?;
        let p = Preconditions {
            if_match: if_match.map(str::to_string),
            ..Default::default()
        };
        check_preconditions("DeleteObject", b, &scope.bucket, key, &p)?;
        if !b.versioned {
            b.objects.remove(key);
            return Ok(());
        }
        let mut marker = s.version(Bytes::new(), String::new(), ObjectAttributes::default());
        marker.data = None;
        s.store(&scope.bucket, key, marker);
        Ok(())
    }

    async fn get_tagging(&self, scope: &Scope, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>> {
        let mut s = self.lock();
        let b = s.bucket("GetObjectTagging", &scope.bucket, key)?;
        b.version(key, version_id).map(|v| v.tags.clone()).ok_or_else(|| {
            error(
                "GetObjectTagging",
                &scope.bucket,
                key,
                S3ErrorKind::NotFound,
                "NoSuchKey (HTTP 404)",
            )
        })
    }

    async fn put_tagging(&self, scope: &Scope, key: &str, tags: &[(String, String)]) -> Result<()> {
        let mut s = self.lock();
        let b = s.bucket("PutObjectTagging", &scope.bucket, key)?;
        match b
            .objects
            .get_mut(key)
            .and_then(|v| v.last_mut())
            .filter(|v| v.data.is_some())
        {
            Some(v) => {
                v.tags = tags.to_vec();
                Ok(())
            }
            None => Err(error(
                "PutObjectTagging",
                &scope.bucket,
                key,
                S3ErrorKind::NotFound,
                "NoSuchKey (HTTP 404)",
            )),
        }
    }

    async fn list_annotations(&self, scope: &Scope, key: &str, _: Option<&str>) -> Result<Vec<AnnotationInfo>> {
        Err(not_implemented("ListObjectAnnotations", scope, key))
    }

    async fn get_annotation(&self, scope: &Scope, key: &str, _: Option<&str>, _: &str) -> Result<Option<Bytes>> {
        Err(not_implemented("GetObjectAnnotation", scope, key))
    }

    async fn put_annotation(&self, scope: &Scope, key: &str, _: Option<&str>, _: &str, _: Bytes) -> Result<()> {
        Err(not_implemented("PutObjectAnnotation", scope, key))
    }

    async fn delete_annotation(&self, scope: &Scope, key: &str, _: Option<&str>, _: &str) -> Result<()> {
        Err(not_implemented("DeleteObjectAnnotation", scope, key))
    }
}

/// Annotations are not kept in memory: the answer of a server without them.
fn not_implemented(operation: &'static str, scope: &Scope, key: &str) -> Error {
    error(
        operation,
        &scope.bucket,
        key,
        S3ErrorKind::NotImplemented,
        "NotImplemented (HTTP 501)",
    )
}
