//! Writing an object to S3 from a part source: one PutObject or a multipart upload (resumed from the
//! journal when it can be), then checking what the server reports against what was sent.

use super::verify::{mismatch, Outcome};
use super::*;
use crate::checksum::additional;
use crate::checksum::{etag_from_parts, Md5Digest, PartDigest, PartLayout};
use crate::error::{Error, Result};
use crate::storage::local::LocalStorage;
use crate::storage::s3::{ChecksumValue, PartInfo, S3Storage, Written};
use crate::storage::Entry;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::path::PathBuf;
use tracing::debug;

/// What an upload reported and what was computed from its bytes.
pub(super) struct Uploaded {
    pub(super) written: Written,
    pub(super) computed_etag: String,
    pub(super) computed_checksum: Option<String>,
}

impl Transferer {
    /// The last step before an object is written to S3: the preconditions of `--if-match`,
    /// `--if-none-match` and `--copy-source-if-match`, then the preprocess callback, which may edit the
    /// attributes. `false`: the callback cancelled the object.
    pub(super) async fn prepare_write(
        &self,
        entry: &Entry,
        target: Option<&Entry>,
        head: Option<&crate::storage::s3::HeadInfo>,
        attrs: &mut crate::attributes::ObjectAttributes,
    ) -> Result<bool> {
        let c = self.cfg.conditions;
        attrs.preconditions = crate::attributes::Preconditions {
            if_match: target.and_then(|t| t.etag.clone()).filter(|_| c.if_match),
            if_none_match: c.if_none_match,
            copy_source_if_match: entry.etag.clone().filter(|_| c.copy_source_if_match),
        };
        let Some(cb) = &self.cfg.callbacks.preprocess else {
            return Ok(true);
        };
        let info = crate::callback::SourceObjectInfo::new(entry, head, attrs);
        let mut upload = crate::callback::UploadMetadata::from_attributes(attrs);
        if !cb.preprocess(&info, &mut upload).await? {
            return Ok(false);
        }
        upload.apply_to(attrs)?;
        Ok(true)
    }

    /// Writes an object to S3 with the given layout, reading its parts from `src`; returns what S3
    /// reports and what was computed from the bytes.
    pub(super) async fn put_with_layout(
        &self,
        target: &S3Storage,
        key: &str,
        source: UploadSource<'_>,
        layout: PartLayout,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Uploaded> {
        self.check_fits_pool(key, &layout)?;
        let src = &source.parts;
        if !layout.multipart {
            let (body, digest) = self.read_part(src, 0, layout.size).await?;
            let computed_etag = etag_from_parts(&[digest.md5], false);
            self.check_source(key, &source, &computed_etag)?;
            let checksum = self.checksum_header(&digest);
            let written = target
                .put_object(key, body, self.md5_header(&digest.md5), &checksum, attrs)
                .await?;
            return Ok(Uploaded {
                computed_etag,
                computed_checksum: self.object_checksum(&layout, &[digest]),
                written,
            });
        }
        let (upload_id, journal, reuse) = self.start_or_resume(target, key, attrs, &layout, &source.id).await?;
        let mut guard = AbortGuard {
            s3: target.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
            cleanups: self.cleanups.clone(),
            journal,
        };
        let upload = (key, upload_id.as_str(), &reuse);
        let parts = stream::iter(layout.parts())
            .map(|part| self.send_part(target, upload, src, part))
            .buffer_unordered(self.cfg.max_parallel_uploads)
            .try_collect::<Vec<(PartInfo, PartDigest)>>();
        let mut parts = guard.step(parts).await?;
        parts.sort_by_key(|p| p.0.number);
        let (infos, digests): (Vec<PartInfo>, Vec<PartDigest>) = parts.into_iter().unzip();
        let md5s: Vec<Md5Digest> = digests.iter().map(|d| d.md5).collect();
        let computed_etag = etag_from_parts(&md5s, true);
        guard
            .step(async { self.check_source(key, &source, &computed_etag) })
            .await?;
        let computed_checksum = self.object_checksum(&layout, &digests);
        let full_object_value = match (self.cfg.checksum, &computed_checksum) {
            (Some((a, additional::ChecksumType::FullObject)), Some(v)) => Some((a, v.clone())),
            _ => None,
        };
        let preconditions = &attrs.preconditions;
        let complete = target.complete_multipart(
            key,
            &upload_id,
            infos,
            self.cfg.checksum,
            full_object_value,
            preconditions,
        );
        let written = guard.step(complete).await?;
        guard.finish();
        Ok(Uploaded {
            computed_etag,
            computed_checksum,
            written,
        })
    }

    /// Reads part `i` (`len` bytes at `off`) and uploads it, unless an earlier run already did (`reuse`
    /// of the upload `(key, id, reuse)`); checks what the server reports of it.
    async fn send_part(
        &self,
        target: &S3Storage,
        (key, upload_id, reuse): (&str, &str, &HashMap<i32, (String, u64)>),
        src: &PartSource<'_>,
        (i, off, len): (u64, u64, u64),
    ) -> Result<(PartInfo, PartDigest)> {
        let (body, digest) = self.retry_part(key, || self.read_part(src, off, len)).await?;
        let number = i as i32 + 1;
        let checksum = self.checksum_header(&digest);
        let md5 = hex::encode(digest.md5);
        if let Some((etag, size)) = reuse.get(&number) {
            if *size == len && *etag == md5 {
                debug!(key, part = number, "part already uploaded by an earlier run; reused");
                let etag = etag.clone();
                return Ok((PartInfo { number, etag, checksum }, digest));
            }
        }
        let md5_header = self.md5_header(&digest.md5);
        let send = || target.upload_part(key, upload_id, number, body.clone(), md5_header.clone(), &checksum);
        let written = self.retry_part(key, send).await?;
        let sent = checksum.as_ref().map(|(_, v)| v.as_str());
        self.policy.check_part(key, number, (&md5, sent), &written)?;
        let etag = written.etag;
        Ok((PartInfo { number, etag, checksum }, digest))
    }

    /// Fails when the largest part of `layout` cannot be held by the chunk pool.
    fn check_fits_pool(&self, key: &str, layout: &PartLayout) -> Result<()> {
        let largest_part = match layout.multipart {
            true => layout.part_size.min(layout.size),
            false => layout.size,
        };
        let pool = self.pool_bytes()?;
        match largest_part > pool {
            true => Err(Error::PartTooLarge {
                key: key.to_string(),
                part_size: largest_part,
                pool,
            }),
            false => Ok(()),
        }
    }

    /// Checks the ETag `computed` from the bytes read from an S3 source against the ETag the source
    /// had, before anything is committed: a corrupted read never becomes the target object.
    fn check_source(&self, key: &str, source: &UploadSource<'_>, computed: &str) -> Result<()> {
        let opaque = match &source.parts {
            PartSource::S3(p) => p.etag_is_opaque(),
            PartSource::Local(_) | PartSource::Memory(_) => false,
        };
        match &source.expected_etag {
            Some(want) if self.policy.source_etag(want, opaque) && want != computed => {
                Err(mismatch("source ETag", key, want, computed))
            }
            _ => Ok(()),
        }
    }

    /// The Content-MD5 header of a part (unless `--disable-content-md5-header`).
    fn md5_header(&self, d: &Md5Digest) -> Option<String> {
        self.cfg.content_md5.then(|| b64(d))
    }

    /// The additional checksum header of a part, when one is asked for.
    fn checksum_header(&self, p: &PartDigest) -> Option<ChecksumValue> {
        let (algo, _) = self.cfg.checksum?;
        Some((algo, additional::to_base64(p.checksum.as_ref()?)))
    }

    /// The object-level additional checksum of parts written with `layout`.
    fn object_checksum(&self, layout: &PartLayout, parts: &[PartDigest]) -> Option<String> {
        let (algo, kind) = self.cfg.checksum?;
        crate::checksum::object_checksum(algo, kind, layout, parts)
    }

    /// Starts a multipart upload that is aborted, never orphaned, if this transfer is cancelled while
    /// the request is in flight.
    pub(super) async fn create_multipart(
        &self,
        target: &S3Storage,
        key: &str,
        attrs: &crate::attributes::ObjectAttributes,
        checksum: Option<(additional::ChecksumAlgorithm, additional::ChecksumType)>,
    ) -> Result<String> {
        create_multipart(&self.cleanups, target, key, attrs, checksum).await
    }

    /// After a completed run, uploads of ours to this target that are still in the journal were not
    /// needed by this run (their objects are up to date, e.g. the process was killed after the server
    /// completed the upload): abort them and forget them.
    pub async fn sweep_journal(&self) {
        let (Some(journal), End::S3(target)) = (&self.journal, &self.target) else {
            return;
        };
        for (path, rec) in journal.records() {
            if rec.bucket != target.bucket() || !rec.key.starts_with(target.prefix()) {
                continue;
            }
            if rec.owned_by_live_run(&path) {
                debug!(key = %rec.key, "multipart upload of another live run left alone");
                continue;
            }
            let key = &rec.key[target.prefix().len()..];
            match target.abort_multipart(key, &rec.upload_id).await {
                Ok(()) => tracing::info!(key, "aborted a stale multipart upload of an earlier run"),
                Err(e) => debug!(key, error = %e, "stale multipart upload already gone"),
            }
            resume::Journal::remove(&path);
        }
    }

    /// Starts a multipart upload, or resumes the one an interrupted earlier run left for the same key
    /// and the same source bytes (the parts already on the server are reused when their ETags match).
    /// A stale upload of ours is aborted. Returns the upload id, its journal record and the parts
    /// already uploaded.
    pub(super) async fn start_or_resume(
        &self,
        target: &S3Storage,
        key: &str,
        attrs: &crate::attributes::ObjectAttributes,
        layout: &PartLayout,
        source_id: &str,
    ) -> Result<(String, Option<PathBuf>, std::collections::HashMap<i32, (String, u64)>)> {
        let mut reuse = std::collections::HashMap::new();
        let mut path = self
            .journal
            .as_ref()
            .map(|j| j.path_for(target.bucket(), &target.full_key(key)));
        let mut record = path.as_deref().and_then(resume::Journal::load);
        if let (Some(p), Some(rec)) = (&path, &record) {
            if rec.owned_by_live_run(p) {
                // Another live run is uploading this key: neither resume nor abort its upload, and
                // keep its record.
                debug!(
                    key,
                    "another live run is uploading this key; starting a separate upload"
                );
                (path, record) = (None, None);
            }
        }
        if let Some(p) = &path {
            if let Some(rec) = record {
                let same = rec.size == layout.size
                    && rec.source_id == source_id
                    && rec.part_size == layout.part_size
                    && self.cfg.checksum.is_none();
                let parts = if same {
                    target.list_parts(key, &rec.upload_id).await.ok().flatten()
                } else {
                    None
                };
                match parts {
                    Some(parts) => {
                        tracing::info!(
                            key,
                            parts = parts.len(),
                            "resuming the multipart upload of an interrupted run"
                        );
                        reuse = parts.into_iter().map(|(n, e, sz)| (n, (e, sz))).collect();
                        // The upload is ours now: other runs must see a live owner.
                        let adopted = resume::UploadRecord {
                            owner: crate::owner::Owner::current().token(),
                            ..rec.clone()
                        };
                        if let Err(e) = resume::Journal::save(p, &adopted) {
                            debug!(key, error = %e, "cannot write the resume journal");
                        }
                        return Ok((rec.upload_id, path, reuse));
                    }
                    None => {
                        if let Err(e) = target.abort_multipart(key, &rec.upload_id).await {
                            debug!(key, error = %e, "stale multipart upload could not be aborted (already gone?)");
                        }
                        resume::Journal::remove(p);
                    }
                }
            }
        }
        let upload_id = self.create_multipart(target, key, attrs, self.cfg.checksum).await?;
        if let Some(p) = &path {
            let rec = resume::UploadRecord {
                upload_id: upload_id.clone(),
                size: layout.size,
                source_id: source_id.to_string(),
                part_size: layout.part_size,
                bucket: target.bucket().to_string(),
                key: target.full_key(key),
                owner: crate::owner::Owner::current().token(),
            };
            if let Err(e) = resume::Journal::save(p, &rec) {
                debug!(key, error = %e, "cannot write the resume journal");
            }
        }
        Ok((upload_id, path, reuse))
    }

    /// Checks an uploaded object's ETag and additional checksum against those computed from the bytes.
    /// Returns what was verified, with a warning when the asked-for checksum is missing.
    pub(super) fn verify_upload(&self, key: &str, layout: &PartLayout, up: &Uploaded) -> Result<Outcome> {
        let policy = self.policy;
        let mut outcome = Outcome::default();
        if let (Some((algo, _)), true) = (self.cfg.checksum, policy.checksums()) {
            let (sent, stored) = (up.computed_checksum.as_deref(), up.written.checksum.as_deref());
            outcome.checksum(key, sent, stored, || {
                format!("the server returned no {algo} checksum for the object: additional checksum not verified")
            })?;
        }
        if policy.written_etag(&up.written, layout.multipart) {
            outcome.etag(key, &up.computed_etag, &up.written.etag, true)?;
        } else {
            debug!(key, etag = %up.written.etag, "the target's ETag is not compared");
        }
        Ok(outcome)
    }

    /// Uploads a local file. A file smaller than one pool chunk is read whole in one operation (one
    /// io_uring chain: open, read, close) and sent from memory; a larger one is read in ranges.
    pub(super) async fn upload_local(
        &self,
        local: &LocalStorage,
        target: &S3Storage,
        entry: &Entry,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Moved> {
        let path = local.root().join(&entry.key);
        let io = self.io.get()?;
        if entry.size < self.chunk_size() {
            let chunk = io
                .read_file(&path, io.pool().acquire().await)
                .await
                .map_err(|e| Error::local("read", &path, e))?;
            // A full chunk: the file grew past one chunk since it was listed; read it in ranges.
            if (chunk.len() as u64) < self.chunk_size() {
                let size = chunk.len() as u64;
                let bytes = chunk.freeze();
                return self
                    .upload_from(target, entry, PartSource::Memory(bytes), size, attrs)
                    .await;
            }
        }
        let file = self.open_local(&path, entry.size).await?;
        let size = file.len().map_err(|e| Error::local("stat", &path, e))?;
        self.upload_from(target, entry, PartSource::Local(&file), size, attrs)
            .await
    }

    /// Opens a local file of `size` bytes (as listed) to be read in ranges: with `O_DIRECT` too when
    /// `--direct-io` says so (see [`crate::config::DirectIo`]).
    pub(super) async fn open_local(&self, path: &std::path::Path, size: u64) -> Result<s3sync_io::IoFile> {
        use crate::config::{DirectIo, DIRECT_IO_MIN_SIZE};
        let io = self.io.get()?;
        let open = |e| Error::local("open", path, e);
        let file = match self.cfg.direct_io {
            DirectIo::Auto if size >= DIRECT_IO_MIN_SIZE => io.open_read_direct(path, true).await,
            DirectIo::Always => io.open_read_direct(path, false).await,
            _ => io.open_read(path).await,
        }
        .map_err(open)?;
        debug!(path = %path.display(), direct = file.is_direct(), "reading in ranges");
        Ok(file)
    }

    /// Uploads `size` bytes of a local file from `parts`, and verifies what the server stored.
    async fn upload_from(
        &self,
        target: &S3Storage,
        entry: &Entry,
        parts: PartSource<'_>,
        size: u64,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Moved> {
        let layout = PartLayout::for_upload(size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize);
        // Identity of the bytes for resuming: size and the listed modification time.
        let mtime_ns = entry
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let source_id = format!("{size}-{mtime_ns}");
        let up = self
            .put_with_layout(
                target,
                &entry.key,
                UploadSource {
                    parts,
                    id: source_id,
                    expected_etag: None,
                },
                layout,
                attrs,
            )
            .await
            .map_err(|e| e.for_key(&entry.key))?;
        Ok(self.verify_upload(&entry.key, &layout, &up)?.moved(size))
    }
}
