//! S3→S3: through the client (GET, hash, PUT) or server-side (CopyObject, UploadPartCopy).

use super::verify::{mismatch, Outcome};
use super::*;
use crate::checksum::{etag_part_count, PartLayout};
use crate::error::Result;
use crate::storage::s3::{CopySource, PartInfo, S3Storage};
use crate::storage::Entry;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::debug;

impl Transferer {
    pub(super) async fn copy_through_client(
        &self,
        source: &S3Storage,
        target: &S3Storage,
        entry: &Entry,
        attrs: &crate::attributes::ObjectAttributes,
        opened: Option<Opened>,
    ) -> Result<Moved> {
        let src_etag = entry.etag.clone().unwrap_or_default();
        let opaque_etag = std::sync::atomic::AtomicBool::new(opened.as_ref().is_some_and(|o| !o.etag_is_md5));
        // Write with the source's own part layout when it is known, so the ETags come out identical.
        let (layout, known) = match etag_part_count(&src_etag) {
            _ if self.copied_whole(entry) => (PartLayout::single(entry.size), true),
            Some(_) => {
                self.layout_of_version(source, &entry.key, entry.version_id.as_deref(), entry.size, &src_etag)
                    .await?
            }
            None => (
                PartLayout::for_upload(entry.size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize),
                false,
            ),
        };
        // Parts larger than the pool cannot be held: write with our own part size instead (the source
        // ETag is then not comparable; the target's is still verified).
        let fits_pool = !layout.multipart || layout.part_size <= self.pool_bytes()?;
        if !fits_pool {
            debug!(key = %entry.key, part_size = layout.part_size, "source parts exceed the chunk pool; using the configured part size");
        }
        let known = known && fits_pool;
        let layout = if layout.multipart && !known {
            PartLayout::for_upload(entry.size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize)
        } else {
            layout
        };
        let up = self
            .put_with_layout(
                target,
                &entry.key,
                UploadSource {
                    parts: PartSource::S3(S3Part::listed(source, entry, &opaque_etag, opened)),
                    id: src_etag.clone(),
                    expected_etag: (known && self.policy.source_etag(&src_etag, false)).then(|| src_etag.clone()),
                },
                layout,
                attrs,
            )
            .await
            .map_err(|e| e.for_key(&entry.key))?;
        let mut outcome = self.verify_upload(&entry.key, &layout, &up)?;
        // The bytes written against the source's ETag too (the target's may be opaque).
        let opaque = opaque_etag.load(std::sync::atomic::Ordering::Relaxed);
        let computed = up.computed_etag;
        if self.policy.source_etag(&src_etag, opaque) && computed != src_etag {
            if known {
                return Err(mismatch("source ETag", &entry.key, &src_etag, &computed));
            }
            outcome.warning = Some(format!("source ETag {src_etag} not comparable with the written {computed} (part layout unknown); the target was verified"));
        }
        Ok(outcome.moved(entry.size))
    }

    pub(super) async fn server_side_copy(
        &self,
        source: &S3Storage,
        target: &S3Storage,
        entry: &Entry,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Moved> {
        let key = &entry.key;
        let src_etag = entry.etag.clone().unwrap_or_default();
        let five_gib = 5 * 1024 * 1024 * 1024;
        let (layout, known) = match etag_part_count(&src_etag) {
            Some(_) => {
                self.layout_of_version(source, key, entry.version_id.as_deref(), entry.size, &src_etag)
                    .await?
            }
            None if entry.size <= five_gib => (PartLayout::single(entry.size), true),
            None => (
                PartLayout::for_upload(entry.size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize),
                false,
            ),
        };
        self.limits.bytes(entry.size).await;
        let etag = if !layout.multipart {
            target
                .copy_object(key, source, key, entry.version_id.as_deref(), attrs)
                .await?
        } else {
            let upload_id = self.create_multipart(target, key, attrs, None).await?;
            let mut guard = AbortGuard {
                s3: target.clone(),
                key: key.clone(),
                upload_id: upload_id.clone(),
                armed: true,
                cleanups: self.cleanups.clone(),
                journal: None,
            };
            let upload_id_ref = &upload_id;
            let parts = stream::iter(layout.parts())
                .map(|(i, off, len)| async move {
                    let n = i as i32 + 1;
                    let etag = target
                        .upload_part_copy(
                            key,
                            upload_id_ref,
                            n,
                            CopySource {
                                storage: source,
                                key,
                                version: entry.version_id.as_deref(),
                            },
                            (off, len),
                            attrs.preconditions.copy_source_if_match_header(),
                        )
                        .await?;
                    Ok(PartInfo {
                        number: n,
                        etag,
                        checksum: None,
                    })
                })
                .buffer_unordered(self.cfg.max_parallel_uploads)
                .try_collect::<Vec<PartInfo>>();
            let mut parts = guard.step(parts).await?;
            parts.sort_by_key(|p| p.number);
            let written = guard
                .step(target.complete_multipart(key, &upload_id, parts, None, None, &attrs.preconditions))
                .await?;
            guard.finish();
            written.etag
        };
        self.reporter.add_bytes(entry.size);
        let mut outcome = Outcome::default();
        if self.policy.copied_etag(&src_etag, &etag) {
            outcome.etag(key, &src_etag, &etag, known)?;
        }
        Ok(outcome.moved(entry.size))
    }
}
