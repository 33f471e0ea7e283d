//! GetObject and small PutObject requests sent without the SDK's orchestrator.
//!
//! For a small object the SDK's work per request (merging runtime plugins, interceptors, identity and
//! endpoint lookups, retry bookkeeping, allocation) costs more client CPU than the bytes: two thirds
//! of a 10 KiB S3→S3 copy's, measured. These two requests are simple enough to send ourselves: the
//! endpoint the SDK's rules gave for the bucket, the SDK's own SigV4 signer with S3's settings, the
//! same HTTP connection pools, and the response headers read into what the SDK's output would give.
//!
//! A request is sent this way only when nothing about it needs the SDK (a plain SigV4 endpoint,
//! credentials, no per-operation timeouts) and only once: any failure, a status other than success,
//! or a connection error, hands the request to the SDK, which sends it again with the retries left
//! and turns its error into ours. So errors and retries behave as before. A refused signature (the
//! SDK corrects a skewed clock; we do not) or many failures in a row leave every later request of the
//! client to the SDK.

use super::endpoint::RememberingResolver;
use super::http::Connections;
use super::object_client::{GetRequest, Scope};
use super::s3::{ChecksumValue, HeadInfo, Ranged, Written};
use super::Entry;
use crate::attributes::{quote, ObjectAttributes};
use crate::checksum::additional::ChecksumAlgorithm;
use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::primitives::ByteStream;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::Document;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// The environment variable that turns direct requests off (`S3SYNC_DIRECT_REQUESTS=off`): every
/// request then goes through the SDK, to measure against or around a server that needs it.
pub const DIRECT_ENV: &str = "S3SYNC_DIRECT_REQUESTS";

/// Whether direct requests are turned off in the environment.
pub fn turned_off() -> bool {
    std::env::var(DIRECT_ENV).is_ok_and(|v| v == "off" || v == "0")
}

/// What a key's path segment keeps unencoded (S3's greedy label: unreserved characters and `/`).
pub(crate) const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a query value keeps unencoded (the unreserved characters).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The largest PutObject body sent directly: one that fits in the server's TCP receive window, so that
/// a server which stops reading cannot stall it half sent (the SDK watches uploads for stalls; we do
/// not).
pub const PUT_MAX: u64 = 64 * 1024;

/// The longest range GET directly: beyond it, the SDK's work is nothing beside the bytes.
pub const RANGE_MAX: u64 = 1024 * 1024;

/// Failed direct requests in a row after which a client sends every request through the SDK.
const FAILURES_MAX: u32 = 16;

/// How long a response body may send nothing while it is read, as the SDK's stalled-stream protection.
const STALL_GRACE: Duration = Duration::from_secs(5);

/// SHA-256 of no bytes: the payload hash of a GET.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Who sends a direct request (the signer leaves this header out of the signature, as the SDK's).
const USER_AGENT: &str = concat!("s3sync/", env!("CARGO_PKG_VERSION"));

/// Credentials expiring sooner than this are fetched again (as the SDK's identity cache does).
const REFRESH_BEFORE: Duration = Duration::from_secs(10);

/// How one direct request went.
#[derive(Debug)]
pub enum Attempt<T> {
    /// It succeeded.
    Done(T),
    /// It was not sent: the SDK sends it, with every attempt.
    Skipped,
    /// It was sent and failed: the SDK sends it again, with one attempt fewer.
    Failed,
}

/// Sends GetObject and small PutObject requests of one client without the SDK's orchestrator.
#[derive(Debug)]
pub struct Direct {
    connections: Connections,
    endpoints: RememberingResolver,
    credentials: SharedCredentialsProvider,
    identity: Mutex<Option<Identity>>,
    /// Held while the credentials are fetched, so that one task fetches them, not every task at once.
    fetching: tokio::sync::Mutex<()>,
    payload_signing: bool,
    stall_protection: bool,
    /// The retry policy's first backoff: waited (jittered) before the SDK resends a request that the
    /// server was too busy for.
    backoff: Duration,
    /// Direct requests that failed in a row.
    failures: AtomicU32,
    /// Set after a 403 (a signature the server refused, e.g. for a skewed clock, which the SDK
    /// corrects and we do not) or [`FAILURES_MAX`] failures in a row: the SDK sends every request.
    off: AtomicBool,
}

impl Direct {
    /// Direct requests for a client whose pools are `connections` and whose endpoints `endpoints`
    /// remembers; signed with `credentials`, payloads signed when `payload_signing`, response bodies
    /// watched for stalls when `stall_protection`, `backoff` waited before a busy server's request is
    /// sent again.
    pub fn new(
        connections: Connections,
        endpoints: RememberingResolver,
        credentials: SharedCredentialsProvider,
        payload_signing: bool,
        stall_protection: bool,
        backoff: Duration,
    ) -> Self {
        Direct {
            connections,
            endpoints,
            credentials,
            identity: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            payload_signing,
            stall_protection,
            backoff,
            failures: AtomicU32::new(0),
            off: AtomicBool::new(false),
        }
    }

    /// Records a failed direct request (`status` `None`: no response) and, when the server was busy
    /// or unreachable, waits the retry policy's first backoff, as the SDK would before its retry.
    async fn failed<T>(&self, operation: &str, key: &str, status: Option<u16>, why: &str) -> Attempt<T> {
        tracing::debug!("{operation} {key}: {why}; sent again through the SDK");
        let in_a_row = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if (status == Some(403) || in_a_row >= FAILURES_MAX) && !self.off.swap(true, Ordering::Relaxed) {
            tracing::debug!("{operation} {key}: {why}; every later request goes through the SDK");
        }
        if status.is_none_or(|s| s == 429 || s >= 500) {
            tokio::time::sleep(self.backoff.mul_f64(rand::random::<f64>())).await;
        }
        Attempt::Failed
    }

    /// Records a direct request that succeeded.
    fn succeeded<T>(&self, done: T) -> Attempt<T> {
        self.failures.store(0, Ordering::Relaxed);
        Attempt::Done(done)
    }

    /// GETs `key` as `req` says; what the response headers tell when `req.head`. Whole objects are
    /// GET this way whatever their size (the engine reads larger ones in ranges).
    /// Ranges longer than [`RANGE_MAX`] are left to the SDK: its work per request is nothing beside
    /// their bytes.
    pub async fn get(&self, scope: &Scope, key: &str, req: GetRequest<'_>) -> Attempt<(Ranged, Option<HeadInfo>)> {
        if req.range.is_some_and(|(_, len)| len > RANGE_MAX) {
            return Attempt::Skipped;
        }
        let mut headers: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(4);
        if let Some((offset, len)) = req.range {
            headers.push(("range".into(), format!("bytes={}-{}", offset, offset + len.max(1) - 1)));
        }
        if let Some(etag) = req.if_match {
            headers.push(("if-match".into(), quote(etag)));
        }
        scope_headers(scope, &mut headers);
        let query = req
            .version_id
            .map(|v| format!("versionId={}", utf8_percent_encode(v, QUERY_VALUE)));
        let response = match self
            .send(
                scope,
                key,
                ("GetObject", "GET"),
                query,
                headers,
                SdkBody::empty(),
                EMPTY_SHA256.into(),
            )
            .await
        {
            Attempt::Done(r) => r,
            Attempt::Skipped => return Attempt::Skipped,
            Attempt::Failed => return Attempt::Failed,
        };
        let (status, headers) = (response.status().as_u16(), response.headers());
        if status != 200 && status != 206 {
            return self
                .failed("GetObject", key, Some(status), &format!("HTTP {status}"))
                .await;
        }
        let info = match req.head {
            true => match head_info(headers, key) {
                Some(info) => Some(info),
                None => {
                    return self
                        .failed("GetObject", key, Some(status), "headers the SDK reads itself")
                        .await
                }
            },
            false => None,
        };
        let etag_is_md5 = etag_is_md5(headers);
        let body = response.into_body();
        let body = match self.stall_protection {
            true => SdkBody::from_body_1_x(StallGuard::new(body)),
            false => body,
        };
        self.succeeded((
            Ranged {
                body: ByteStream::new(body),
                etag_is_md5,
            },
            info,
        ))
    }

    /// PUTs `body` (at most [`PUT_MAX`] bytes) at `key` with `attrs`, as the SDK's PutObject would.
    pub async fn put(
        &self,
        scope: &Scope,
        key: &str,
        body: &[Bytes],
        content_md5: &Option<String>,
        checksum: &Option<ChecksumValue>,
        attrs: &ObjectAttributes,
    ) -> Attempt<Written> {
        let len: u64 = body.iter().map(|b| b.len() as u64).sum();
        if len > PUT_MAX {
            return Attempt::Skipped;
        }
        let mut headers: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(8);
        headers.push(("content-length".into(), len.to_string()));
        if let Some(md5) = content_md5 {
            headers.push(("content-md5".into(), md5.clone()));
        }
        if let Some(v) = attrs.preconditions.if_match_header() {
            headers.push(("if-match".into(), v));
        }
        if let Some(v) = attrs.preconditions.if_none_match_header() {
            headers.push(("if-none-match".into(), v));
        }
        if attribute_headers(attrs, &mut headers).is_none() {
            return Attempt::Skipped;
        }
        if let Some((algo, value)) = checksum {
            headers.push(("x-amz-sdk-checksum-algorithm".into(), algo.as_str().to_string()));
            headers.push((checksum_header(*algo).into(), value.clone()));
        }
        scope_headers(scope, &mut headers);
        let payload = match self.payload_signing {
            true => {
                use sha2::Digest;
                let mut sha = sha2::Sha256::new();
                body.iter().for_each(|b| sha.update(b));
                format!("{:x}", sha.finalize())
            }
            false => "UNSIGNED-PAYLOAD".to_string(),
        };
        let sdk_body = super::body::chunk_stream(body.to_vec()).into_inner();
        let response = match self
            .send(scope, key, ("PutObject", "PUT"), None, headers, sdk_body, payload)
            .await
        {
            Attempt::Done(r) => r,
            Attempt::Skipped => return Attempt::Skipped,
            Attempt::Failed => return Attempt::Failed,
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return self
                .failed("PutObject", key, Some(status), &format!("HTTP {status}"))
                .await;
        }
        let headers = response.headers();
        let written = Written {
            etag: headers
                .get("etag")
                .map(crate::checksum::normalize_etag)
                .unwrap_or_default(),
            checksum: checksum
                .as_ref()
                .and_then(|(a, _)| headers.get(checksum_header(*a)).map(str::to_string)),
            etag_is_md5: etag_is_md5(headers),
        };
        // A success status with an error document is an error (as the SDK reads it).
        match ByteStream::new(response.into_body())
            .collect()
            .await
            .map(|b| b.into_bytes())
        {
            Ok(body) if !is_error_document(&body) => self.succeeded(written),
            Ok(_) => {
                self.failed("PutObject", key, Some(status), "an error in a success")
                    .await
            }
            Err(e) => self.failed("PutObject", key, None, &e.to_string()).await,
        }
    }

    /// Signs and sends one request of `operation` for `key`; `payload` is the body's SHA-256 (hex) or
    /// `UNSIGNED-PAYLOAD`. Skipped when the SDK has not yet sent a request to the bucket, or when its
    /// endpoint is not one we can sign for.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        scope: &Scope,
        key: &str,
        (operation, method): (&'static str, &'static str),
        query: Option<String>,
        headers: Vec<(Cow<'static, str>, String)>,
        body: SdkBody,
        payload: String,
    ) -> Attempt<HttpResponse> {
        if key.is_empty() || self.off.load(Ordering::Relaxed) {
            return Attempt::Skipped;
        }
        let Some(connector) = self.connections.connector() else {
            return Attempt::Skipped;
        };
        let Some(endpoint) = self.endpoints.for_bucket(&scope.bucket) else {
            return Attempt::Skipped;
        };
        let Some(region) = sigv4_region(&endpoint) else {
            return Attempt::Skipped;
        };
        let Some(identity) = self.identity().await else {
            return Attempt::Skipped;
        };
        let base = endpoint.url().trim_end_matches('/');
        let mut uri = String::with_capacity(base.len() + key.len() * 3 / 2 + 16);
        uri.push_str(base);
        uri.push('/');
        uri.extend(utf8_percent_encode(key, KEY_PATH));
        if let Some(q) = &query {
            uri.push('?');
            uri.push_str(q);
        }
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = match aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
        {
            Ok(p) => p.into(),
            Err(_) => return Attempt::Skipped,
        };
        let signable = SignableRequest::new(
            method,
            uri.as_str(),
            headers.iter().map(|(n, v)| (n.as_ref(), v.as_str())),
            SignableBody::Precomputed(payload),
        );
        let Ok(signed) = signable.and_then(|s| sign(s, &params)) else {
            return Attempt::Skipped;
        };
        let mut request = hyper::http::Request::builder()
            .method(method)
            .uri(uri.as_str())
            .header("user-agent", USER_AGENT);
        for (name, value) in &headers {
            request = request.header(name.as_ref(), value.as_str());
        }
        let Ok(mut request) = request.body(body) else {
            return Attempt::Skipped;
        };
        signed.into_parts().0.apply_to_request_http1x(&mut request);
        let Ok(request) = HttpRequest::try_from(request) else {
            return Attempt::Skipped;
        };
        match connector.call(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                tracing::trace!("{operation} {key}: HTTP {status} (sent without the SDK's orchestrator)");
                Attempt::Done(response)
            }
            Err(e) => self.failed(operation, key, None, &e.to_string()).await,
        }
    }

    /// The credentials to sign with, fetched again shortly before they expire; `None` for anonymous
    /// clients and when the provider fails (the SDK then reports why).
    async fn identity(&self) -> Option<Identity> {
        let known = || {
            let now = SystemTime::now();
            let fresh = |i: &&Identity| i.expiration().is_none_or(|e| e > now + REFRESH_BEFORE);
            self.identity.lock().ok()?.as_ref().filter(fresh).cloned()
        };
        if let Some(i) = known() {
            return Some(i);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(i) = known() {
            return Some(i);
        }
        let credentials = self.credentials.provide_credentials().await.ok()?;
        let identity = Identity::from(credentials);
        *self.identity.lock().ok()? = Some(identity.clone());
        Some(identity)
    }
}

/// The signing region of an endpoint signed with plain SigV4 for S3 (no S3 Express, no SigV4a, no
/// endpoint headers); `None` for any other.
fn sigv4_region(endpoint: &aws_smithy_types::endpoint::Endpoint) -> Option<&str> {
    if endpoint.headers().next().is_some() {
        return None;
    }
    let scheme = endpoint.auth_schemes().first()?;
    let text = |name: &str| match scheme.get(name) {
        Some(Document::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let single_encoding = matches!(scheme.get("disableDoubleEncoding"), Some(Document::Bool(true)));
    (scheme.name() == "sigv4" && text("signingName") == Some("s3") && single_encoding)
        .then(|| text("signingRegion"))
        .flatten()
}

/// The headers every request of an end carries: the request payer and the SSE-C key.
fn scope_headers(scope: &Scope, headers: &mut Vec<(Cow<'static, str>, String)>) {
    if scope.request_payer {
        headers.push(("x-amz-request-payer".into(), "requester".into()));
    }
    if let Some(sse) = &scope.sse_c {
        headers.push((
            "x-amz-server-side-encryption-customer-algorithm".into(),
            sse.algorithm.clone(),
        ));
        headers.push(("x-amz-server-side-encryption-customer-key".into(), sse.key.clone()));
        headers.push((
            "x-amz-server-side-encryption-customer-key-md5".into(),
            sse.key_md5.clone(),
        ));
    }
}

/// The headers of an object's attributes, as the SDK's PutObject sends them; `None` when one cannot
/// be a header (the SDK then reports it).
fn attribute_headers(a: &ObjectAttributes, headers: &mut Vec<(Cow<'static, str>, String)>) -> Option<()> {
    let plain: [(&'static str, &Option<String>); 11] = [
        ("content-type", &a.content_type),
        ("cache-control", &a.cache_control),
        ("content-disposition", &a.content_disposition),
        ("content-encoding", &a.content_encoding),
        ("content-language", &a.content_language),
        ("x-amz-website-redirect-location", &a.website_redirect),
        ("x-amz-tagging", &a.tagging),
        ("x-amz-storage-class", &a.storage_class),
        ("x-amz-acl", &a.acl),
        ("x-amz-server-side-encryption", &a.sse),
        ("x-amz-server-side-encryption-aws-kms-key-id", &a.sse_kms_key_id),
    ];
    for (name, value) in plain {
        if let Some(v) = value {
            headers.push((name.into(), v.clone()));
        }
    }
    if a.content_type.is_none() {
        // The SDK's default for a PutObject body.
        headers.push(("content-type".into(), "application/octet-stream".into()));
    }
    if let Some(expires) = a.expires {
        let date = aws_smithy_types::DateTime::from(expires).fmt(Format::HttpDate).ok()?;
        headers.push(("expires".into(), date));
    }
    for (k, v) in &a.metadata {
        let name = format!("x-amz-meta-{k}");
        hyper::http::HeaderName::from_bytes(name.as_bytes()).ok()?;
        headers.push((name.into(), v.clone()));
    }
    headers
        .iter()
        .all(|(_, v)| hyper::http::HeaderValue::from_str(v).is_ok())
        .then_some(())
}

/// Whether the ETag a response reports can be an MD5 of the bytes, from the encryption it reports.
fn etag_is_md5(h: &aws_smithy_runtime_api::http::Headers) -> bool {
    super::sdk::etag_is_digest(
        h.get("x-amz-server-side-encryption")
            .map(aws_sdk_s3::types::ServerSideEncryption::from)
            .as_ref(),
        h.get("x-amz-server-side-encryption-customer-algorithm"),
    )
}

/// The header of an additional checksum (`x-amz-checksum-crc32c`, ...).
fn checksum_header(algo: ChecksumAlgorithm) -> &'static str {
    match algo {
        ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
        ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
        ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
        ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
    }
}

/// What a GET response's headers tell of the object `key`, as the SDK's `GetObjectOutput` would;
/// `None` where the SDK would fail or read more than one value (a header that is not UTF-8, a repeated
/// or unreadable one): the SDK then reads the response itself.
fn head_info(h: &aws_smithy_runtime_api::http::Headers, key: &str) -> Option<HeadInfo> {
    if h.iter_bytes().any(|(_, v)| std::str::from_utf8(v).is_err()) {
        return None;
    }
    let mut names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mtime = match h.get("last-modified") {
        None => SystemTime::UNIX_EPOCH,
        Some(v) => aws_smithy_types::DateTime::from_str(v, Format::HttpDate)
            .ok()
            .and_then(|d| SystemTime::try_from(d).ok())?,
    };
    let text = |name: &str| h.get(name).map(str::to_string);
    let attributes = ObjectAttributes {
        content_type: text("content-type"),
        cache_control: text("cache-control"),
        content_disposition: text("content-disposition"),
        content_encoding: text("content-encoding"),
        content_language: text("content-language"),
        expires: h
            .get("expires")
            .and_then(|s| chrono::DateTime::parse_from_rfc2822(s).ok())
            .map(|d| d.with_timezone(&chrono::Utc).into()),
        website_redirect: text("x-amz-website-redirect-location"),
        metadata: h
            .iter()
            .filter_map(|(name, value)| Some((name.strip_prefix("x-amz-meta-")?.to_string(), value.to_string())))
            .collect(),
        ..Default::default()
    };
    Some(HeadInfo {
        entry: Entry {
            key: key.to_string(),
            size: h.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
            mtime,
            etag: h.get("etag").map(crate::checksum::normalize_etag),
            version_id: text("x-amz-version-id"),
        },
        attributes,
        parts_count: h.get("x-amz-mp-parts-count").and_then(|v| v.parse().ok()),
        checksum: ChecksumAlgorithm::ALL
            .into_iter()
            .find_map(|a| h.get(checksum_header(a)).map(|v| (a, v.to_string()))),
        full_object_checksum: h.get("x-amz-checksum-type") == Some("FULL_OBJECT"),
        storage_class: text("x-amz-storage-class"),
        tag_count: h.get("x-amz-tagging-count").and_then(|v| v.parse().ok()),
        server_side_encryption: text("x-amz-server-side-encryption"),
        ssekms_key_id: text("x-amz-server-side-encryption-aws-kms-key-id"),
        sse_customer_algorithm: text("x-amz-server-side-encryption-customer-algorithm"),
    })
}

/// Whether a response body is an S3 error document (its root element is `Error`).
fn is_error_document(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("<?").or_else(|| rest.strip_prefix("<!--")) {
        rest = after.split_once('>').map_or("", |(_, r)| r).trim_start();
    }
    rest.strip_prefix("<Error")
        .is_some_and(|r| r.starts_with(['>', ' ', '/', '\n', '\r', '\t']))
}

/// A response body that fails when it sends nothing for [`STALL_GRACE`] while it is being read (the
/// time its reader spends elsewhere does not count). The timer is set once per wait, not per frame.
struct StallGuard {
    inner: SdkBody,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The last poll found nothing: the timer runs for this wait.
    waiting: bool,
}

impl StallGuard {
    fn new(inner: SdkBody) -> Self {
        StallGuard {
            inner,
            timer: Box::pin(tokio::time::sleep(STALL_GRACE)),
            waiting: false,
        }
    }
}

/// The error of a stalled response body.
#[derive(Debug)]
struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the response body sent nothing for {} s", STALL_GRACE.as_secs())
    }
}

impl std::error::Error for Stalled {}

impl http_body::Body for StallGuard {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    this.timer.as_mut().reset(tokio::time::Instant::now() + STALL_GRACE);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body whose frames a test sends when it likes.
    struct Sent(mpsc::Receiver<Bytes>);

    impl http_body::Body for Sent {
        type Data = Bytes;
        type Error = Stalled;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Stalled>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    fn channel() -> (mpsc::Sender<Bytes>, SdkBody) {
        let (tx, rx) = mpsc::channel(4);
        (tx, SdkBody::from_body_1_x(Sent(rx)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_sends_nothing_fails_after_the_grace_time() {
        let (_sender, body) = channel();
        let started = tokio::time::Instant::now();
        let mut guarded = StallGuard::new(body);
        let got = guarded.frame().await.expect("a frame");
        assert!(got.is_err(), "a stalled body fails");
        assert_eq!(started.elapsed(), STALL_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_elsewhere_does_not_count() {
        let (sender, body) = channel();
        sender.send(Bytes::from_static(b"one")).await.expect("send");
        let mut guarded = StallGuard::new(body);
        let first = guarded.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"one")));
        // The reader is busy for longer than the grace time; the server sends meanwhile.
        tokio::time::sleep(STALL_GRACE * 3).await;
        sender.send(Bytes::from_static(b"two")).await.expect("send");
        let second = guarded.frame().await.expect("a frame").expect("data");
        assert_eq!(second.into_data().ok(), Some(Bytes::from_static(b"two")));
        // Busy again, then the server is slow but not stalled: 3 s < the grace time.
        tokio::time::sleep(STALL_GRACE * 3).await;
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            sender.send(Bytes::from_static(b"three")).await.expect("send");
            sender
        });
        let third = guarded.frame().await.expect("a frame").expect("data");
        assert_eq!(third.into_data().ok(), Some(Bytes::from_static(b"three")));
        drop(late.await);
    }

    fn endpoint(scheme: EndpointAuthScheme) -> aws_smithy_types::endpoint::Endpoint {
        aws_smithy_types::endpoint::Endpoint::builder()
            .url("http://127.0.0.1:9000/b")
            .auth_scheme(scheme)
            .build()
    }

    use aws_smithy_types::endpoint::EndpointAuthScheme;

    #[test]
    fn only_plain_sigv4_endpoints_for_s3_are_signed_here() {
        let plain = EndpointAuthScheme::with_capacity("sigv4", 3)
            .put("disableDoubleEncoding", true)
            .put("signingName", "s3".to_string())
            .put("signingRegion", "eu-west-3".to_string());
        assert_eq!(sigv4_region(&endpoint(plain.clone())), Some("eu-west-3"));
        let express = EndpointAuthScheme::with_capacity("sigv4-s3express", 3)
            .put("disableDoubleEncoding", true)
            .put("signingName", "s3express".to_string())
            .put("signingRegion", "eu-west-3".to_string());
        assert_eq!(sigv4_region(&endpoint(express)), None);
        let double = EndpointAuthScheme::with_capacity("sigv4", 3)
            .put("signingName", "s3".to_string())
            .put("signingRegion", "eu-west-3".to_string());
        assert_eq!(sigv4_region(&endpoint(double)), None);
        let none = aws_smithy_types::endpoint::Endpoint::builder()
            .url("http://h/b")
            .build();
        assert_eq!(sigv4_region(&none), None);
    }

    fn direct() -> Direct {
        let credentials = aws_sdk_s3::config::Credentials::new("id", "secret", None, None, "test");
        Direct::new(
            Connections::default(),
            RememberingResolver::default(),
            SharedCredentialsProvider::new(credentials),
            true,
            true,
            Duration::ZERO,
        )
    }

    #[tokio::test]
    async fn a_refused_signature_or_many_failures_in_a_row_leave_every_request_to_the_sdk() {
        let d = direct();
        assert!(matches!(
            d.failed::<()>("GetObject", "k", Some(403), "HTTP 403").await,
            Attempt::Failed
        ));
        assert!(d.off.load(Ordering::Relaxed), "a 403 turns direct requests off");
        let scope = Scope {
            bucket: "b".into(),
            ..Default::default()
        };
        let req = GetRequest::default();
        assert!(matches!(d.get(&scope, "k", req).await, Attempt::Skipped));

        let d = direct();
        for _ in 0..FAILURES_MAX - 1 {
            let _ = d.failed::<()>("PutObject", "k", Some(503), "HTTP 503").await;
        }
        let _ = d.succeeded(());
        let _ = d.failed::<()>("PutObject", "k", Some(503), "HTTP 503").await;
        assert!(!d.off.load(Ordering::Relaxed), "a success in between resets the count");
        for _ in 0..FAILURES_MAX {
            let _ = d.failed::<()>("PutObject", "k", None, "reset").await;
        }
        assert!(
            d.off.load(Ordering::Relaxed),
            "{FAILURES_MAX} failures in a row turn it off"
        );
    }

    #[test]
    fn error_documents_are_told_from_empty_and_other_bodies() {
        assert!(is_error_document(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code></Error>"
        ));
        assert!(is_error_document(b"  <Error>\n<Code>SlowDown</Code></Error>"));
        assert!(!is_error_document(b""));
        assert!(!is_error_document(b"<?xml version=\"1.0\"?><PutObjectResult/>"));
        assert!(!is_error_document(b"<Errors/>"));
    }

    #[test]
    fn headers_the_sdk_would_refuse_are_left_to_it() {
        let mut h = aws_smithy_runtime_api::http::Headers::new();
        h.insert("content-length", "3");
        h.insert("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT");
        h.insert("x-amz-meta-colour", "blue");
        let info = head_info(&h, "k").expect("readable");
        assert_eq!(info.entry.size, 3);
        assert_eq!(info.attributes.metadata.get("colour").map(String::as_str), Some("blue"));
        let mut repeated = h.clone();
        repeated.append("x-amz-meta-colour", "red");
        assert!(head_info(&repeated, "k").is_none(), "a repeated header");
        let mut bad_date = h.clone();
        bad_date.insert("last-modified", "yesterday");
        assert!(head_info(&bad_date, "k").is_none(), "an unreadable date");
    }

    #[test]
    fn attributes_become_the_headers_the_sdk_sends() {
        let a = ObjectAttributes {
            content_type: Some("text/plain".into()),
            metadata: [("colour".to_string(), "blue".to_string())].into_iter().collect(),
            tagging: Some("a=1&b=2".into()),
            expires: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..Default::default()
        };
        let mut headers = Vec::new();
        assert!(attribute_headers(&a, &mut headers).is_some());
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("content-type"), Some("text/plain"));
        assert_eq!(get("x-amz-meta-colour"), Some("blue"));
        assert_eq!(get("x-amz-tagging"), Some("a=1&b=2"));
        assert_eq!(get("expires"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        let mut untyped = Vec::new();
        assert!(attribute_headers(&ObjectAttributes::default(), &mut untyped).is_some());
        assert_eq!(
            untyped,
            vec![("content-type".into(), "application/octet-stream".to_string())],
            "the SDK's default type"
        );
        let bad = ObjectAttributes {
            metadata: [("k".to_string(), "line\nbreak".to_string())].into_iter().collect(),
            ..Default::default()
        };
        assert!(attribute_headers(&bad, &mut Vec::new()).is_none(), "left to the SDK");
    }
}
