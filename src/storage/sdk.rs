//! The [`ObjectClient`] of real servers, over `aws-sdk-s3`: each method is one SDK request, its
//! error turned into a typed [`Error::S3`] that says which request failed and why.

use super::direct::{Attempt, Direct};
use super::object_client::{GetRequest, ObjectClient, ObjectsPage, Scope, Source, Upload, VersionsPage};
use super::s3::{AnnotationInfo, ChecksumValue, HeadInfo, ObjectVersionEntry, PartInfo, Ranged, SseC, Written};
use super::Entry;
use crate::attributes::{ObjectAttributes, Preconditions};
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::error::{Error, Result, S3ErrorKind};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, RequestPayer};
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// An `aws-sdk-s3` client as an [`ObjectClient`].
#[derive(Debug)]
pub struct SdkClient {
    client: Client,
    /// Sign payloads (off with `--disable-payload-signing`).
    payload_signing: bool,
    /// The fast listing reader declined a page: later pages go to the SDK's decoder alone.
    sdk_lists: AtomicBool,
    /// GetObject and small PutObject without the SDK's orchestrator, and the retries the SDK has
    /// left after a failed direct request.
    direct: Option<(Direct, aws_sdk_s3::config::retry::RetryConfig)>,
}

impl SdkClient {
    /// A client over `client`, signing payloads when `payload_signing`.
    pub fn new(client: Client, payload_signing: bool) -> Self {
        SdkClient {
            client,
            payload_signing,
            sdk_lists: AtomicBool::new(false),
            direct: None,
        }
    }

    /// This client, sending GetObject and small PutObject requests through `direct` first; after
    /// a failed direct request the SDK sends it again with the retry settings `after`.
    pub fn with_direct(mut self, direct: Direct, after: aws_sdk_s3::config::retry::RetryConfig) -> Self {
        self.direct = Some((direct, after));
        self
    }

    /// The SDK's settings for a request that the direct path `tried` and failed.
    fn retried(&self, tried: bool) -> Option<aws_sdk_s3::config::Builder> {
        let (_, after) = self.direct.as_ref().filter(|_| tried)?;
        Some(aws_sdk_s3::config::Builder::default().retry_config(after.clone()))
    }
}

fn payer(scope: &Scope) -> Option<RequestPayer> {
    scope.request_payer.then_some(RequestPayer::Requester)
}

fn err<E>(
    operation: &'static str,
    scope: &Scope,
    key: &str,
    e: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    sdk_error(operation, &scope.bucket, key, e)
}

/// An error that is not the server's: a response that lacks what the operation needs.
fn malformed(operation: &'static str, scope: &Scope, key: &str, message: String) -> Error {
    Error::s3(operation, scope.bucket.clone(), key, S3ErrorKind::Other, message)
}

/// The `x-amz-copy-source` value of a full key (URL-encoded).
fn copy_source(source: &Source<'_>) -> String {
    let encoded = percent_encoding::utf8_percent_encode(source.key, super::direct::KEY_PATH);
    match source.version {
        Some(v) => format!("{}/{encoded}?versionId={v}", source.scope.bucket),
        None => format!("{}/{encoded}", source.scope.bucket),
    }
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

/// Sends a request that carries object bytes (signed payload unless `--disable-payload-signing`)
/// and reads the ETag and the asked-for checksum from its response.
macro_rules! send_body {
    ($self:expr, $scope:expr, $req:expr, $op:literal, $full:expr, $checksum:expr) => {
        send_body!($self, $scope, $req, $op, $full, $checksum, None)
    };
    ($self:expr, $scope:expr, $req:expr, $op:literal, $full:expr, $checksum:expr, $config:expr) => {{
        let mut req = $req.customize();
        if !$self.payload_signing {
            req = req.disable_payload_signing();
        }
        let config: Option<aws_sdk_s3::config::Builder> = $config;
        if let Some(config) = config {
            req = req.config_override(config);
        }
        let resp = req.send().await.map_err(|e| err($op, $scope, $full, e))?;
        Written {
            etag: resp.e_tag().map(crate::checksum::normalize_etag).unwrap_or_default(),
            checksum: $checksum.as_ref().and_then(|(a, _)| checksum_of!(resp, *a)),
            etag_is_md5: etag_is_digest(resp.server_side_encryption(), resp.sse_customer_algorithm()),
        }
    }};
}

/// Sets every attribute on a PutObject, CreateMultipartUpload or CopyObject request builder; the one
/// place where attributes become headers (the request payer and the preconditions are per operation:
/// see `S3Storage`).
macro_rules! apply_attributes {
    ($req:expr, $a:expr) => {{
        let a: &$crate::attributes::ObjectAttributes = $a;
        let metadata: Option<std::collections::HashMap<String, String>> =
            (!a.metadata.is_empty()).then(|| a.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        $req.set_content_type(a.content_type.clone())
            .set_cache_control(a.cache_control.clone())
            .set_content_disposition(a.content_disposition.clone())
            .set_content_encoding(a.content_encoding.clone())
            .set_content_language(a.content_language.clone())
            .set_expires(a.expires.map(aws_sdk_s3::primitives::DateTime::from))
            .set_website_redirect_location(a.website_redirect.clone())
            .set_metadata(metadata)
            .set_tagging(a.tagging.clone())
            .set_storage_class(a.storage_class.as_deref().map(aws_sdk_s3::types::StorageClass::from))
            .set_acl(a.acl.as_deref().map(aws_sdk_s3::types::ObjectCannedAcl::from))
            .set_server_side_encryption(a.sse.as_deref().map(aws_sdk_s3::types::ServerSideEncryption::from))
            .set_ssekms_key_id(a.sse_kms_key_id.clone())
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

/// The entry of one listed object (full key, ETag as sent).
fn listed(obj: &aws_sdk_s3::types::Object) -> Option<Entry> {
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
}

#[async_trait::async_trait]
impl ObjectClient for SdkClient {
    async fn head_bucket(&self, scope: &Scope) -> Result<()> {
        // A closed port or an unknown host must fail within seconds, not after the run's full retry
        // budget: the first request gets a few quick attempts only.
        let quick = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(std::time::Duration::from_millis(100))
            .with_max_backoff(std::time::Duration::from_secs(1));
        self.client
            .head_bucket()
            .bucket(&scope.bucket)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().retry_config(quick))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("HeadBucket", scope, "", e))
    }

    async fn list_objects(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        start_after: Option<String>,
        token: Option<String>,
    ) -> Result<ObjectsPage> {
        use super::list_xml::{FastList, Read};
        // Successful pages are read by the fast reader (`list_xml`); a page it declines is asked for
        // again and read by the SDK, as is every later page listed through this client.
        let mut fast_reader = !self.sdk_lists.load(Ordering::Relaxed);
        let (resp, read) = loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&scope.bucket)
                .set_request_payer(payer(scope))
                .prefix(prefix)
                .max_keys(max_keys)
                .set_start_after(start_after.clone())
                .set_continuation_token(token.clone())
                .customize();
            let slot = super::list_xml::Slot::default();
            let sent = match fast_reader {
                true => request.interceptor(FastList::new(slot.clone())).send().await,
                false => request.send().await,
            };
            let resp = sent.map_err(|e| err("ListObjectsV2", scope, prefix, e))?;
            let read = slot.lock().ok().and_then(|mut read| read.take());
            if fast_reader && read == Some(Read::Declined) {
                self.sdk_lists.store(true, Ordering::Relaxed);
                fast_reader = false;
                continue;
            }
            break (resp, read);
        };
        let entries = match read {
            Some(Read::Page(page)) => page.objects,
            _ => resp.contents().iter().filter_map(listed).collect(),
        };
        Ok(ObjectsPage {
            entries,
            truncated: resp.is_truncated() == Some(true),
            next_token: resp.next_continuation_token().map(str::to_string),
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
        let resp = self
            .client
            .list_object_versions()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .prefix(prefix)
            .max_keys(max_keys)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .map_err(|e| err("ListObjectVersions", scope, prefix, e))?;
        let versions = resp.versions().iter().filter_map(|v| {
            Some(ObjectVersionEntry {
                entry: Entry {
                    key: v.key()?.to_string(),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    mtime: v.last_modified().map(to_system_time).unwrap_or(SystemTime::UNIX_EPOCH),
                    etag: v.e_tag().map(crate::checksum::normalize_etag),
                    version_id: v.version_id().map(str::to_string),
                },
                delete_marker: false,
                is_latest: v.is_latest().unwrap_or(false),
            })
        });
        let markers = resp.delete_markers().iter().filter_map(|d| {
            Some(ObjectVersionEntry {
                entry: Entry {
                    key: d.key()?.to_string(),
                    size: 0,
                    mtime: d.last_modified().map(to_system_time).unwrap_or(SystemTime::UNIX_EPOCH),
                    etag: None,
                    version_id: d.version_id().map(str::to_string),
                },
                delete_marker: true,
                is_latest: d.is_latest().unwrap_or(false),
            })
        });
        Ok(VersionsPage {
            versions: versions.chain(markers).collect(),
            truncated: resp.is_truncated() == Some(true),
            next_key_marker: resp.next_key_marker().map(str::to_string),
            next_version_marker: resp.next_version_id_marker().map(str::to_string),
        })
    }

    async fn head_object(
        &self,
        scope: &Scope,
        key: &str,
        part_number: Option<i32>,
        version_id: Option<&str>,
    ) -> Result<Option<HeadInfo>> {
        let req = self
            .client
            .head_object()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(key)
            .set_part_number(part_number)
            .set_version_id(version_id.map(str::to_string))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        match with_sse_c!(req, &scope.sse_c).send().await {
            Ok(h) => Ok(Some(head_info!(h, key, ObjectAttributes::from_head(&h)))),
            Err(e) => match err("HeadObject", scope, key, e) {
                e if e.s3_kind() == Some(S3ErrorKind::NotFound) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn get_object(&self, scope: &Scope, key: &str, req: GetRequest<'_>) -> Result<(Ranged, Option<HeadInfo>)> {
        let mut tried = false;
        if let Some((direct, _)) = &self.direct {
            match direct.get(scope, key, req).await {
                Attempt::Done(done) => return Ok(done),
                Attempt::Failed => tried = true,
                Attempt::Skipped => {}
            }
        }
        let GetRequest {
            version_id,
            if_match,
            range,
            head,
        } = req;
        let req = self
            .client
            .get_object()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(key)
            .set_range(range.map(|(offset, len)| format!("bytes={}-{}", offset, offset + len.max(1) - 1)))
            .set_if_match(if_match.map(crate::attributes::quote))
            .set_version_id(version_id.map(str::to_string));
        let mut req = with_sse_c!(req, &scope.sse_c).customize();
        if let Some(config) = self.retried(tried) {
            req = req.config_override(config);
        }
        let g = req.send().await.map_err(|e| err("GetObject", scope, key, e))?;
        let info = head.then(|| head_info!(g, key, ObjectAttributes::from_get(&g)));
        let ranged = Ranged {
            etag_is_md5: etag_is_digest(g.server_side_encryption(), g.sse_customer_algorithm()),
            body: g.body,
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
        let mut tried = false;
        if let Some((direct, _)) = &self.direct {
            match direct.put(scope, key, &body, &content_md5, checksum, attrs).await {
                Attempt::Done(written) => return Ok(written),
                Attempt::Failed => tried = true,
                Attempt::Skipped => {}
            }
        }
        let len: u64 = body.iter().map(|b| b.len() as u64).sum();
        let req = self
            .client
            .put_object()
            .bucket(&scope.bucket)
            .key(key)
            .content_length(len as i64)
            .set_content_md5(content_md5)
            .set_if_match(attrs.preconditions.if_match_header())
            .set_if_none_match(attrs.preconditions.if_none_match_header())
            .body(super::body::chunk_stream(body));
        let req = apply_attributes!(req, attrs).set_request_payer(payer(scope));
        let req = with_named_checksum!(with_sse_c!(req, &scope.sse_c), checksum);
        Ok(send_body!(
            self,
            scope,
            req,
            "PutObject",
            key,
            checksum,
            self.retried(tried)
        ))
    }

    async fn create_multipart(
        &self,
        scope: &Scope,
        key: &str,
        attrs: &ObjectAttributes,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    ) -> Result<String> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&scope.bucket)
            .key(key)
            .set_checksum_algorithm(checksum.map(|c| c.0.to_sdk()))
            .set_checksum_type(full_object_type(checksum));
        let req = apply_attributes!(req, attrs).set_request_payer(payer(scope));
        let resp = with_sse_c!(req, &scope.sse_c)
            .send()
            .await
            .map_err(|e| err("CreateMultipartUpload", scope, key, e))?;
        resp.upload_id().map(str::to_string).ok_or_else(|| {
            malformed(
                "CreateMultipartUpload",
                scope,
                key,
                "the response has no upload id".into(),
            )
        })
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
        let len: u64 = body.iter().map(|b| b.len() as u64).sum();
        let req = self
            .client
            .upload_part()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(upload.key)
            .upload_id(upload.upload_id)
            .part_number(part_number)
            .content_length(len as i64)
            .set_content_md5(content_md5)
            .body(super::body::chunk_stream(body));
        let req = with_named_checksum!(with_sse_c!(req, &scope.sse_c), checksum);
        Ok(send_body!(self, scope, req, "UploadPart", upload.key, checksum))
    }

    async fn upload_part_copy(
        &self,
        scope: &Scope,
        upload: Upload<'_>,
        part_number: i32,
        source: Source<'_>,
        (offset, len): (u64, u64),
        copy_source_if_match: Option<String>,
    ) -> Result<String> {
        let req = self
            .client
            .upload_part_copy()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(upload.key)
            .upload_id(upload.upload_id)
            .part_number(part_number)
            .copy_source(copy_source(&source))
            .copy_source_range(format!("bytes={}-{}", offset, offset + len.max(1) - 1))
            .set_copy_source_if_match(copy_source_if_match);
        let req = with_sse_c!(req, &scope.sse_c);
        let resp = with_sse_c!(
            req,
            &source.scope.sse_c,
            set_copy_source_sse_customer_algorithm,
            set_copy_source_sse_customer_key,
            set_copy_source_sse_customer_key_md5
        )
        .send()
        .await
        .map_err(|e| err("UploadPartCopy", scope, upload.key, e))?;
        Ok(resp
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .map(crate::checksum::normalize_etag)
            .unwrap_or_default())
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
        let parts = parts
            .into_iter()
            .map(|p| {
                let b = CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(format!("\"{}\"", p.etag));
                with_checksum!(b, &p.checksum).build()
            })
            .collect();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(upload.key)
            .upload_id(upload.upload_id)
            .set_if_match(preconditions.if_match_header())
            .set_if_none_match(preconditions.if_none_match_header())
            .set_checksum_type(full_object_type(checksum))
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        let resp = with_checksum!(with_sse_c!(req, &scope.sse_c), &full_object_value)
            .send()
            .await
            .map_err(|e| err("CompleteMultipartUpload", scope, upload.key, e))?;
        Ok(Written {
            etag: resp.e_tag().map(crate::checksum::normalize_etag).unwrap_or_default(),
            checksum: checksum.and_then(|(a, _)| checksum_of!(resp, a)),
            etag_is_md5: etag_is_digest(resp.server_side_encryption(), None) && scope.sse_c.is_none(),
        })
    }

    async fn list_parts(&self, scope: &Scope, upload: Upload<'_>) -> Result<Option<Vec<(i32, String, u64)>>> {
        let mut pages = self
            .client
            .list_parts()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(upload.key)
            .upload_id(upload.upload_id)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page.map_err(|e| err("ListParts", scope, upload.key, e)) {
                Ok(p) => p,
                Err(e) if matches!(e.s3_kind(), Some(S3ErrorKind::NotFound | S3ErrorKind::NoSuchUpload)) => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            // The paginator would start again from the first page: a truncated page must say where
            // the next one starts.
            if page.is_truncated() == Some(true) && page.next_part_number_marker().is_none() {
                let m = "the server says the part list is truncated but gives no next part number marker";
                return Err(malformed("ListParts", scope, upload.key, m.into()));
            }
            out.extend(page.parts().iter().filter_map(|p| {
                Some((
                    p.part_number()?,
                    crate::checksum::normalize_etag(p.e_tag()?),
                    p.size().unwrap_or(0).max(0) as u64,
                ))
            }));
        }
        Ok(Some(out))
    }

    async fn abort_multipart(&self, scope: &Scope, upload: Upload<'_>) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(upload.key)
            .upload_id(upload.upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("AbortMultipartUpload", scope, upload.key, e))
    }

    async fn copy_object(
        &self,
        scope: &Scope,
        key: &str,
        source: Source<'_>,
        attrs: &ObjectAttributes,
    ) -> Result<String> {
        let req = self
            .client
            .copy_object()
            .bucket(&scope.bucket)
            .key(key)
            .copy_source(copy_source(&source))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
            .set_copy_source_if_match(attrs.preconditions.copy_source_if_match_header())
            .set_if_match(attrs.preconditions.if_match_header())
            .set_if_none_match(attrs.preconditions.if_none_match_header());
        let req = apply_attributes!(req, attrs).set_request_payer(payer(scope));
        let req = with_sse_c!(req, &scope.sse_c);
        let resp = with_sse_c!(
            req,
            &source.scope.sse_c,
            set_copy_source_sse_customer_algorithm,
            set_copy_source_sse_customer_key,
            set_copy_source_sse_customer_key_md5
        )
        .send()
        .await
        .map_err(|e| err("CopyObject", scope, key, e))?;
        Ok(resp
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(crate::checksum::normalize_etag)
            .unwrap_or_default())
    }

    async fn delete_object(&self, scope: &Scope, key: &str, if_match: Option<&str>) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(key)
            .set_if_match(if_match.map(crate::attributes::quote))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteObject", scope, key, e))
    }

    async fn get_tagging(&self, scope: &Scope, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>> {
        let r = self
            .client
            .get_object_tagging()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .set_version_id(version_id.map(str::to_string))
            .key(key)
            .send()
            .await
            .map_err(|e| err("GetObjectTagging", scope, key, e))?;
        Ok(r.tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    async fn put_tagging(&self, scope: &Scope, key: &str, tags: &[(String, String)]) -> Result<()> {
        use aws_sdk_s3::types::{Tag, Tagging};
        let set: Vec<Tag> = tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let tagging = Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| malformed("PutObjectTagging", scope, key, e.to_string()))?;
        self.client
            .put_object_tagging()
            .bucket(&scope.bucket)
            .set_request_payer(payer(scope))
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("PutObjectTagging", scope, key, e))
    }

    async fn list_annotations(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<AnnotationInfo>> {
        let mut pages = self
            .client
            .list_object_annotations()
            .bucket(&scope.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(payer(scope))
            .max_annotation_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page.map_err(|e| err("ListObjectAnnotations", scope, key, e)) {
                Ok(p) => p,
                // No such object (yet): it has no annotations.
                Err(e) if e.s3_kind() == Some(S3ErrorKind::NotFound) => break,
                Err(e) => return Err(e),
            };
            out.extend(page.annotations().iter().map(|a| AnnotationInfo {
                name: a.annotation_name().to_string(),
                etag: a.e_tag().map(str::to_string),
                size: a.size(),
                last_modified: to_system_time(a.last_modified()),
            }));
        }
        Ok(out)
    }

    async fn get_annotation(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
        name: &str,
    ) -> Result<Option<Bytes>> {
        let sent = self
            .client
            .get_object_annotation()
            .bucket(&scope.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(payer(scope))
            .annotation_name(name)
            .send()
            .await;
        let out = match sent.map_err(|e| err("GetObjectAnnotation", scope, key, e)) {
            Ok(out) => out,
            // NoSuchAnnotation is a 404.
            Err(e) if e.s3_kind() == Some(S3ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = out.annotation_payload.collect().await.map_err(|e| {
            Error::s3(
                "GetObjectAnnotation",
                scope.bucket.clone(),
                key,
                S3ErrorKind::Retryable,
                format!("the response body broke off: {e}"),
            )
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn put_annotation(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
        name: &str,
        payload: Bytes,
    ) -> Result<()> {
        self.client
            .put_object_annotation()
            .bucket(&scope.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(payer(scope))
            .annotation_name(name)
            .annotation_payload(ByteStream::from(payload))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("PutObjectAnnotation", scope, key, e))
    }

    async fn delete_annotation(&self, scope: &Scope, key: &str, version_id: Option<&str>, name: &str) -> Result<()> {
        self.client
            .delete_object_annotation()
            .bucket(&scope.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .set_request_payer(payer(scope))
            .annotation_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteObjectAnnotation", scope, key, e))
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
    let (kind, status, code, message) = match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let msg = se.err().message().unwrap_or("").to_string();
            let kind = classify(status, &code);
            let text = match (code.is_empty(), msg.is_empty()) {
                (true, _) if kind == S3ErrorKind::Auth => {
                    format!("access denied (HTTP {status}): check the credentials and the permissions")
                }
                (true, _) if kind == S3ErrorKind::NotFound => format!("not found (HTTP {status})"),
                (true, _) => format!("HTTP {status}"),
                (false, true) => format!("{code} (HTTP {status})"),
                (false, false) => format!("{code}: {msg} (HTTP {status})"),
            };
            (kind, Some(status), (!code.is_empty()).then_some(code), text)
        }
        SdkError::DispatchFailure(df) => {
            let kind = if df.is_timeout() || df.is_io() {
                S3ErrorKind::Unreachable
            } else {
                S3ErrorKind::Retryable
            };
            (kind, None, None, one_line(&e))
        }
        SdkError::TimeoutError(_) => (S3ErrorKind::Unreachable, None, None, "request timed out".to_string()),
        SdkError::ResponseError(r) => (
            S3ErrorKind::Retryable,
            Some(r.raw().status().as_u16()),
            None,
            one_line(&e),
        ),
        _ => (S3ErrorKind::Other, None, None, one_line(&e)),
    };
    Error::s3(operation, bucket, key, kind, message).with_response(status, code, Some(Box::new(e)))
}

/// The kind of a service error, from its HTTP status and S3 error code.
fn classify(status: u16, code: &str) -> S3ErrorKind {
    match (status, code) {
        (_, "NoSuchBucket") => S3ErrorKind::NoSuchBucket,
        (_, "NoSuchUpload") => S3ErrorKind::NoSuchUpload,
        (501, _) | (_, "NotImplemented") => S3ErrorKind::NotImplemented,
        (_, "InvalidObjectState") => S3ErrorKind::Archived,
        (412, _) | (_, "PreconditionFailed") => S3ErrorKind::PreconditionFailed,
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken") => S3ErrorKind::Auth,
        (401 | 403, _) => S3ErrorKind::Auth,
        (404, _) | (_, "NoSuchKey" | "NotFound") => S3ErrorKind::NotFound,
        (429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => S3ErrorKind::Retryable,
        _ => S3ErrorKind::Other,
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
