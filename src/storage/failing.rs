//! Failures injected in-process: an [`ObjectClient`] that wraps another and makes chosen calls fail,
//! return a cut or corrupted body, or wait, by operation and call number; it also counts the calls.
//! Every reliability and safety case the engine handles can so be reproduced in a unit test, without a
//! proxy or a server.

use super::object_client::{GetRequest, ObjectClient, ObjectsPage, Scope, Source, Upload, VersionsPage};
use super::s3::{AnnotationInfo, ChecksumValue, HeadInfo, PartInfo, Ranged, Written};
use crate::attributes::{ObjectAttributes, Preconditions};
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::error::{Error, Result, S3ErrorKind};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to a chosen call.
#[derive(Clone)]
pub enum Fault {
    /// The call fails with an S3 error of this kind, without reaching the inner client.
    Error(S3ErrorKind),
    /// A GetObject body ends after this many bytes.
    Truncate(usize),
    /// A GetObject body has one byte changed (the middle one; an empty body stays empty).
    Corrupt,
    /// The call waits this long before it is made.
    Delay(Duration),
    /// This runs, then the call is made: e.g. another writer replaces the object.
    Before(Arc<dyn Fn() + Send + Sync>),
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Error(kind) => write!(f, "Error({kind:?})"),
            Fault::Truncate(n) => write!(f, "Truncate({n})"),
            Fault::Corrupt => write!(f, "Corrupt"),
            Fault::Delay(d) => write!(f, "Delay({d:?})"),
            Fault::Before(_) => write!(f, "Before(..)"),
        }
    }
}

/// Which calls a fault hits.
#[derive(Debug, Clone)]
struct Rule {
    operation: &'static str,
    /// The 1-based call numbers of the operation it hits.
    calls: std::ops::RangeInclusive<usize>,
    fault: Fault,
}

/// An [`ObjectClient`] that passes every call to `inner` but for the faults it was told to inject.
#[derive(Debug)]
pub struct FailingClient {
    inner: Arc<dyn ObjectClient>,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<HashMap<&'static str, usize>>,
}

impl FailingClient {
    /// Wraps `inner`, injecting nothing yet.
    pub fn new(inner: Arc<dyn ObjectClient>) -> Self {
        FailingClient {
            inner,
            rules: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// How many calls of `operation` were made through this client (including failed ones).
    pub fn calls(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Injects `fault` into call number `call` (1-based) of `operation` (`"GetObject"`, …).
    pub fn fail_call(self, operation: &'static str, call: usize, fault: Fault) -> Self {
        self.add(operation, call..=call, fault)
    }

    /// Injects `fault` into call number `call` (1-based) of `operation` and every later one.
    pub fn fail_from(self, operation: &'static str, call: usize, fault: Fault) -> Self {
        self.add(operation, call..=usize::MAX, fault)
    }

    /// Injects `fault` into every call of `operation`.
    pub fn fail_every(self, operation: &'static str, fault: Fault) -> Self {
        self.add(operation, 1..=usize::MAX, fault)
    }

    fn add(self, operation: &'static str, calls: std::ops::RangeInclusive<usize>, fault: Fault) -> Self {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).push(Rule {
            operation,
            calls,
            fault,
        });
        self
    }

    /// Counts a call and returns the fault it gets, if any; waits out a delay.
    async fn fault(&self, operation: &'static str, scope: &Scope, key: &str) -> Result<Option<Fault>> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            let n = calls.entry(operation).or_default();
            *n += 1;
            *n
        };
        let fault = self
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| r.operation == operation && r.calls.contains(&n))
            .map(|r| r.fault.clone());
        match fault {
            Some(Fault::Error(kind)) => Err(Error::s3(
                operation,
                scope.bucket.clone(),
                key,
                kind,
                format!("injected failure of call {n}"),
            )),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::Before(run)) => {
                run();
                Ok(None)
            }
            // Only a GET has a body to damage: a fault that cannot happen fails the call, visibly.
            Some(Fault::Truncate(_) | Fault::Corrupt) if operation != "GetObject" => Err(Error::InvalidArgument(
                format!("FailingClient: {operation} has no response body to truncate or corrupt"),
            )),
            other => Ok(other),
        }
    }
}

/// The body of a GET as the fault leaves it.
async fn damage(ranged: Ranged, fault: Option<Fault>, scope: &Scope, key: &str) -> Result<Ranged> {
    let cut = match fault {
        Some(Fault::Truncate(n)) => Some(n),
        Some(Fault::Corrupt) => None,
        _ => return Ok(ranged),
    };
    let mut data = ranged
        .body
        .collect()
        .await
        .map_err(|e| {
            Error::s3(
                "GetObject",
                scope.bucket.clone(),
                key,
                S3ErrorKind::Retryable,
                e.to_string(),
            )
        })?
        .to_vec();
    match cut {
        Some(n) => data.truncate(n),
        None => {
            let middle = data.len() / 2;
            if let Some(b) = data.get_mut(middle) {
                *b ^= 0x5a;
            }
        }
    }
    Ok(Ranged {
        body: Bytes::from(data).into(),
        etag_is_md5: ranged.etag_is_md5,
    })
}

#[async_trait::async_trait]
impl ObjectClient for FailingClient {
    async fn head_bucket(&self, scope: &Scope) -> Result<()> {
        self.fault("HeadBucket", scope, "").await?;
        self.inner.head_bucket(scope).await
    }

    async fn list_objects(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        start_after: Option<String>,
        token: Option<String>,
    ) -> Result<ObjectsPage> {
        self.fault("ListObjectsV2", scope, prefix).await?;
        self.inner
            .list_objects(scope, prefix, max_keys, start_after, token)
            .await
    }

    async fn list_versions(
        &self,
        scope: &Scope,
        prefix: &str,
        max_keys: i32,
        key_marker: Option<String>,
        version_marker: Option<String>,
    ) -> Result<VersionsPage> {
        self.fault("ListObjectVersions", scope, prefix).await?;
        self.inner
            .list_versions(scope, prefix, max_keys, key_marker, version_marker)
            .await
    }

    async fn head_object(
        &self,
        scope: &Scope,
        key: &str,
        part_number: Option<i32>,
        version_id: Option<&str>,
    ) -> Result<Option<HeadInfo>> {
        self.fault("HeadObject", scope, key).await?;
        self.inner.head_object(scope, key, part_number, version_id).await
    }

    async fn get_object(&self, scope: &Scope, key: &str, req: GetRequest<'_>) -> Result<(Ranged, Option<HeadInfo>)> {
        let fault = self.fault("GetObject", scope, key).await?;
        let (ranged, head) = self.inner.get_object(scope, key, req).await?;
        Ok((damage(ranged, fault, scope, key).await?, head))
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
        self.fault("PutObject", scope, key).await?;
        self.inner
            .put_object(scope, key, body, content_md5, checksum, attrs)
            .await
    }

    async fn create_multipart(
        &self,
        scope: &Scope,
        key: &str,
        attrs: &ObjectAttributes,
        checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    ) -> Result<String> {
        self.fault("CreateMultipartUpload", scope, key).await?;
        self.inner.create_multipart(scope, key, attrs, checksum).await
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
        self.fault("UploadPart", scope, upload.key).await?;
        self.inner
            .upload_part(scope, upload, part_number, body, content_md5, checksum)
            .await
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
        self.fault("UploadPartCopy", scope, upload.key).await?;
        self.inner
            .upload_part_copy(scope, upload, part_number, source, range, copy_source_if_match)
            .await
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
        self.fault("CompleteMultipartUpload", scope, upload.key).await?;
        self.inner
            .complete_multipart(scope, upload, parts, checksum, full_object_value, preconditions)
            .await
    }

    async fn list_parts(&self, scope: &Scope, upload: Upload<'_>) -> Result<Option<Vec<(i32, String, u64)>>> {
        self.fault("ListParts", scope, upload.key).await?;
        self.inner.list_parts(scope, upload).await
    }

    async fn abort_multipart(&self, scope: &Scope, upload: Upload<'_>) -> Result<()> {
        self.fault("AbortMultipartUpload", scope, upload.key).await?;
        self.inner.abort_multipart(scope, upload).await
    }

    async fn copy_object(
        &self,
        scope: &Scope,
        key: &str,
        source: Source<'_>,
        attrs: &ObjectAttributes,
    ) -> Result<String> {
        self.fault("CopyObject", scope, key).await?;
        self.inner.copy_object(scope, key, source, attrs).await
    }

    async fn delete_object(&self, scope: &Scope, key: &str, if_match: Option<&str>) -> Result<()> {
        self.fault("DeleteObject", scope, key).await?;
        self.inner.delete_object(scope, key, if_match).await
    }

    async fn get_tagging(&self, scope: &Scope, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>> {
        self.fault("GetObjectTagging", scope, key).await?;
        self.inner.get_tagging(scope, key, version_id).await
    }

    async fn put_tagging(&self, scope: &Scope, key: &str, tags: &[(String, String)]) -> Result<()> {
        self.fault("PutObjectTagging", scope, key).await?;
        self.inner.put_tagging(scope, key, tags).await
    }

    async fn list_annotations(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<AnnotationInfo>> {
        self.fault("ListObjectAnnotations", scope, key).await?;
        self.inner.list_annotations(scope, key, version_id).await
    }

    async fn get_annotation(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
        name: &str,
    ) -> Result<Option<Bytes>> {
        self.fault("GetObjectAnnotation", scope, key).await?;
        self.inner.get_annotation(scope, key, version_id, name).await
    }

    async fn put_annotation(
        &self,
        scope: &Scope,
        key: &str,
        version_id: Option<&str>,
        name: &str,
        payload: Bytes,
    ) -> Result<()> {
        self.fault("PutObjectAnnotation", scope, key).await?;
        self.inner.put_annotation(scope, key, version_id, name, payload).await
    }

    async fn delete_annotation(&self, scope: &Scope, key: &str, version_id: Option<&str>, name: &str) -> Result<()> {
        self.fault("DeleteObjectAnnotation", scope, key).await?;
        self.inner.delete_annotation(scope, key, version_id, name).await
    }
}
