//! Cleanup that must happen even when a task is cancelled: aborting a multipart upload, removing a
//! temporary file, and starting an upload so that a cancellation cannot orphan it.

use super::*;
use crate::checksum::additional;
use crate::error::{Error, Result};
use crate::storage::s3::S3Storage;
use std::path::PathBuf;

/// Aborts a multipart upload unless disarmed, also when the owning task is cancelled.
pub(crate) struct AbortGuard {
    pub(crate) s3: S3Storage,
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) armed: bool,
    pub(crate) cleanups: Cleanups,
    pub(crate) journal: Option<PathBuf>,
}

impl AbortGuard {
    /// Awaits one step of the upload; a failed step aborts the upload.
    pub(crate) async fn step<T>(&mut self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match fut.await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.abort_now().await;
                Err(e)
            }
        }
    }

    pub(super) async fn abort_now(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        if let Some(p) = &self.journal {
            resume::Journal::remove(p);
        }
        if let Err(e) = self.s3.abort_multipart(&self.key, &self.upload_id).await {
            tracing::warn!(key = %self.key, error = %e, "could not abort the multipart upload");
        }
    }

    /// The upload completed: nothing to abort, its journal record is done.
    pub(crate) fn finish(mut self) {
        self.armed = false;
        if let Some(p) = &self.journal {
            resume::Journal::remove(p);
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            let (s3, key, id) = (self.s3.clone(), self.key.clone(), self.upload_id.clone());
            let journal = self.journal.take();
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                self.cleanups.push(h.spawn(async move {
                    match s3.abort_multipart(&key, &id).await {
                        Ok(()) => {
                            if let Some(p) = journal {
                                resume::Journal::remove(&p);
                            }
                            tracing::info!(key, "aborted the unfinished multipart upload")
                        }
                        Err(e) => tracing::warn!(key, error = %e, "could not abort the multipart upload"),
                    }
                }));
            }
        }
    }
}

/// Removes a temporary file unless disarmed (also on cancellation).
pub(crate) struct TempGuard {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Starts a multipart upload in a task of its own: if the caller is cancelled while the request is in
/// flight, the upload the server creates is aborted as soon as its id arrives, never orphaned.
pub(crate) async fn create_multipart(
    cleanups: &Cleanups,
    target: &S3Storage,
    key: &str,
    attrs: &crate::attributes::ObjectAttributes,
    checksum: Option<(additional::ChecksumAlgorithm, additional::ChecksumType)>,
) -> Result<String> {
    let (t, k, a) = (target.clone(), key.to_string(), attrs.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    cleanups.push(tokio::spawn(async move {
        let created = t.create_multipart(&k, &a, checksum).await;
        if let Err(Ok(id)) = tx.send(created) {
            match t.abort_multipart(&k, &id).await {
                Ok(()) => tracing::info!(key = %k, "aborted a multipart upload created while cancelling"),
                Err(e) => tracing::warn!(key = %k, error = %e, "could not abort the multipart upload"),
            }
        }
    }));
    rx.await.map_err(|_| Error::Cancelled)?
}
