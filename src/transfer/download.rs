//! S3→local: ranges downloaded in parallel into a temporary file, hashed in flight, verified, then
//! renamed into place.

use super::body_reader::BodyReader;
use super::sink::FileSink;
use super::verify::Outcome;
use super::*;
use crate::checksum::additional;
use crate::checksum::{etag_from_parts, Md5Digest, PartDigest, PartHasher, PartLayout};
use crate::error::{Error, Result};
use crate::storage::local::LocalStorage;
use crate::storage::s3::ChecksumValue;
use crate::storage::s3::S3Storage;
use crate::storage::Entry;
use futures::stream::{self, StreamExt, TryStreamExt};
use s3sync_io::Chunk;
use tracing::debug;

/// The object-level checksum computed from downloaded parts, in the form of the stored `value`
/// (composite `…-N`, full-object, or a single-part digest); `None` when the layout does not allow it.
pub(crate) fn downloaded_checksum(
    algo: additional::ChecksumAlgorithm,
    value: &str,
    full_object: bool,
    layout: &PartLayout,
    known: bool,
    parts: &[PartDigest],
) -> Option<String> {
    let (_, count) = additional::split_part_count(value);
    let raw: Vec<(Vec<u8>, u64)> = parts
        .iter()
        .map(|p| Some((p.checksum.clone()?, p.len)))
        .collect::<Option<_>>()?;
    match count {
        Some(n) if known && layout.multipart && layout.part_count() == n => {
            additional::combine_parts(algo, additional::ChecksumType::Composite, &raw).ok()
        }
        Some(_) => None,
        None if raw.len() == 1 => raw.first().map(|(d, _)| additional::to_base64(d)),
        None if algo.is_crc() && (full_object || !layout.multipart || raw.len() > 1) => {
            additional::combine_parts(algo, additional::ChecksumType::FullObject, &raw).ok()
        }
        None => None,
    }
}

/// One object on its way from S3 to a local file: where from, where to, and what is checked.
struct Download<'e> {
    source: &'e S3Storage,
    local: &'e LocalStorage,
    entry: &'e Entry,
    plan: DownloadPlan,
    /// The file's final path.
    path: std::path::PathBuf,
}

/// What a download reads and checks (see `plan_download`).
struct DownloadPlan {
    /// The listed ETag.
    etag: String,
    /// Whether the ETag is compared with the bytes' MD5s.
    verify_etag: bool,
    /// The stored additional checksum and whether it is a full-object one.
    stored: Option<(ChecksumValue, bool)>,
    /// The part layout ranges are read with (the object's, when `known`).
    layout: PartLayout,
    /// Whether `layout` is the one the object was written with.
    known: bool,
    /// The stored CRC (`stored`) verifies the bytes in place of the ETag, whose MD5s are then not
    /// computed (see `plan_download`).
    by_crc: bool,
    /// A second look after the bytes did not match the stored CRC: both are compared, and a CRC
    /// mismatch where the ETag verified blames the stored checksum (a warning), not the bytes.
    recheck: bool,
}

impl Transferer {
    /// Creates the parent directories of a file to be written, never through a link; directories it
    /// creates are fsynced with the files at the end of the run.
    pub(super) async fn create_parents(&self, local: &LocalStorage, key: &str, path: &std::path::Path) -> Result<()> {
        if local.create_parents(key, path).await? {
            let mut dir = path.parent();
            while let Some(d) = dir {
                if !d.starts_with(local.root()) {
                    break;
                }
                self.durability.dir_changed(d).await;
                dir = d.parent();
            }
        }
        Ok(())
    }

    /// Downloads an object into a temporary file beside its final path, verifies it, and renames it
    /// into place: the file appears under its name only complete and verified.
    pub(super) async fn download(&self, source: &S3Storage, local: &LocalStorage, entry: &Entry) -> Result<Moved> {
        let key = &entry.key;
        let final_path = local.path_for(key).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if entry.is_dir_marker() {
            self.create_parents(local, key, &final_path).await?;
            tokio::fs::create_dir_all(&final_path)
                .await
                .map_err(|e| Error::local("create directory", &final_path, e))?;
            return Ok(Moved::default());
        }
        let plan = self.plan_download(source, entry, true).await?;
        // The parents are made right before the temporary file goes in. A run deleting files in the
        // same tree (another shard with --delete) may remove a directory it emptied in between: then
        // make it again, once.
        self.create_parents(local, key, &final_path).await?;
        let mut job = Download {
            source,
            local,
            entry,
            plan,
            path: final_path,
        };
        // Taken before the file's first byte: which rounds of a grouped sync may hold its errors.
        let ticket = self.durability.ticket();
        let (sink, outcome) = match self.fetch_verified(&job).await {
            // The bytes do not match the stored CRC: either they broke on the way, or the server
            // keeps a wrong checksum (some keep whatever a client sends). Fetch again and compare
            // both the ETag and the CRC: the ETag tells which.
            Err(e @ Error::Verification { .. }) if job.plan.by_crc => {
                debug!(key, "{e}; downloading again, verified by its ETag too");
                let crc = job.plan.stored.take();
                job.plan = self.plan_download(source, entry, false).await?;
                job.plan.stored = crc;
                job.plan.recheck = true;
                self.fetch_verified(&job).await?
            }
            other => other?,
        };
        self.commit(&job, sink, ticket).await?;
        Ok(outcome.moved(entry.size))
    }

    /// Downloads the object into a temporary file and verifies it as planned.
    async fn fetch_verified<'s>(&'s self, job: &Download<'_>) -> Result<(FileSink<'s>, Outcome)> {
        let whole = job.entry.size > 0 && job.entry.size < self.chunk_size() && job.plan.layout.part_count() == 1;
        match whole {
            true => self.download_whole(job).await,
            false => self.download_ranges(job).await,
        }
    }

    /// Downloads the ranges of an object into a temporary file as they arrive, then verifies them.
    async fn download_ranges(&self, job: &Download<'_>) -> Result<(FileSink<'_>, Outcome)> {
        let io = self.io.get()?;
        let mut sink = match FileSink::create(io, &job.path).await {
            Err(e) if FileSink::is_missing_directory(&e) => {
                self.create_parents(job.local, &job.entry.key, &job.path).await?;
                FileSink::create(io, &job.path).await?
            }
            other => other?,
        };
        let (parts, opaque) = self.fetch_ranges(job.source, job.entry, &job.plan, &sink).await?;
        sink.seal(self.durability.fsync_each()).await?;
        let outcome = self.check_download(&job.entry.key, &job.plan, &parts, opaque)?;
        Ok((sink, outcome))
    }

    /// Downloads an object smaller than one pool chunk into memory, verifies it, and only then writes
    /// it as a new temporary file in one operation (one io_uring chain): a corrupt download never
    /// reaches the disk, and the file costs one submission instead of a system call per step.
    async fn download_whole(&self, job: &Download<'_>) -> Result<(FileSink<'_>, Outcome)> {
        let (entry, plan) = (job.entry, &job.plan);
        let key = &entry.key;
        let hashes = (plan.verify_etag, plan.stored.as_ref().map(|((a, _), _)| *a));
        let mut made_parents = false;
        loop {
            let opaque_etag = std::sync::atomic::AtomicBool::new(false);
            let object = S3Part::listed(job.source, entry, &opaque_etag, None);
            let fetch = || self.fetch_whole(&object, entry.size, hashes);
            let (chunk, digest) = self.retry_part(key, fetch).await.map_err(|e| e.for_key(key))?;
            let outcome = self.check_download(key, plan, std::slice::from_ref(&digest), object.etag_is_opaque())?;
            match FileSink::write_whole(self.io.get()?, &job.path, chunk, self.durability.fsync_each()).await {
                // The directory went away (see `download`): make it, and fetch again (the bytes went
                // with the failed write).
                Err(e) if !made_parents && FileSink::is_missing_directory(&e) => {
                    self.create_parents(job.local, key, &job.path).await?;
                    made_parents = true;
                }
                other => return Ok((other?, outcome)),
            }
        }
    }

    /// Gives a verified temporary file its final name: the source's modification time first, then
    /// durability (with the files of its group, see [`Durability`](super::Durability)), then, with
    /// no link on the way, the rename.
    async fn commit(&self, job: &Download<'_>, mut sink: FileSink<'_>, ticket: s3sync_io::Ticket) -> Result<()> {
        let tmp = sink.temp_path();
        let mtime = filetime::FileTime::from_system_time(job.entry.mtime);
        // One `utimensat` on the path (`set_file_mtime` opens the file, sets the times on the
        // descriptor and closes it: three system calls); not following links, and the access time
        // is the file's creation a moment ago.
        filetime::set_symlink_file_times(tmp, filetime::FileTime::now(), mtime)
            .map_err(|e| Error::local("set mtime", tmp, e))?;
        self.durability.settle(tmp, ticket).await?;
        // The directories may have been swapped for a link while the bytes arrived.
        job.local.check_no_link_on_path(&job.entry.key, &job.path)?;
        match sink.rename().await {
            // The key was a directory's before: an empty one makes room (one that holds files is an
            // error). Looked at only when the rename finds it, instead of before every rename.
            Err(e) if FileSink::is_directory_in_the_way(&e) => {
                job.local.clear_empty_dir(&job.entry.key, &job.path).await?;
                sink.rename().await?;
            }
            other => other?,
        }
        if let Some(dir) = job.path.parent() {
            self.durability.dir_changed(dir).await;
        }
        Ok(())
    }

    /// What a download reads and checks: whether the ETag is compared, the stored checksum (when
    /// downloads are verified with it), and the part layout the object was written with.
    ///
    /// With `crc_first`, an object of at least `--multipart-threshold` bytes that carries a CRC
    /// checksum (CRC32, CRC32C, CRC64NVME; AWS stores a CRC64NVME for every object written since
    /// 2025) is verified by that CRC alone: one HEAD, and a hash some hundred times cheaper than the
    /// MD5s its ETag needs. `--enable-additional-checksum` compares both, as before.
    async fn plan_download(&self, source: &S3Storage, entry: &Entry, crc_first: bool) -> Result<DownloadPlan> {
        let etag = entry.etag.clone().unwrap_or_default();
        let mut verify_etag = self.policy.source_etag(&etag, false);
        let asked = self.cfg.enable_additional_checksum && self.policy.checksums();
        let crc_first = crc_first
            && !asked
            && verify_etag
            && self.policy.checksums()
            && entry.size >= self.cfg.multipart_threshold.max(1);
        let mut stored = match asked || crc_first {
            true => source
                .head_version(&entry.key, None, entry.version_id.as_deref())
                .await?
                .and_then(|h| h.checksum.map(|c| (c, h.full_object_checksum))),
            false => None,
        };
        if crc_first {
            stored = stored.filter(|((algo, _), _)| algo.is_crc());
        }
        // A full-object CRC combines from parts of any size: no layout to learn. A value without a
        // part count is one only when the object says so (its checksum type, CRC64NVME which is
        // never composite, or a single PutObject): some servers report composite values without it.
        let full_object_crc = crc_first
            && matches!(&stored, Some(((algo, value), full))
                if additional::split_part_count(value).1.is_none()
                    && (*full
                        || *algo == additional::ChecksumAlgorithm::Crc64Nvme
                        || crate::checksum::etag_part_count(&etag).is_none()));
        let (layout, known) = if full_object_crc {
            (PartLayout::multipart(entry.size, self.cfg.multipart_chunksize), false)
        } else if verify_etag || stored.is_some() {
            self.layout_of_version(source, &entry.key, entry.version_id.as_deref(), entry.size, &etag)
                .await?
        } else {
            (PartLayout::multipart(entry.size, self.cfg.multipart_chunksize), false)
        };
        // A composite CRC is computed only from the object's own part layout; without it, the ETag.
        let composite_known = matches!(&stored, Some(((_, value), _))
            if additional::split_part_count(value).1 == Some(layout.part_count()) && known && layout.multipart);
        let by_crc = crc_first && (full_object_crc || composite_known);
        if crc_first && !by_crc {
            stored = None;
        }
        if by_crc {
            verify_etag = false;
        }
        Ok(DownloadPlan {
            etag,
            verify_etag,
            stored,
            layout,
            known,
            by_crc,
            recheck: false,
        })
    }

    /// Downloads every range of the plan's layout into `sink`, in parallel; returns each part's digests
    /// in order, and whether a response said the ETag is no MD5.
    async fn fetch_ranges(
        &self,
        source: &S3Storage,
        entry: &Entry,
        plan: &DownloadPlan,
        sink: &FileSink<'_>,
    ) -> Result<(Vec<PartDigest>, bool)> {
        let key = &entry.key;
        sink.allocate(entry.size).await?;
        let opaque_etag = std::sync::atomic::AtomicBool::new(false);
        let object = &S3Part::listed(source, entry, &opaque_etag, None);
        let hashes = (plan.verify_etag, plan.stored.as_ref().map(|((a, _), _)| *a));
        let ranged = plan.layout.part_count() > 1;
        let mut parts: Vec<(u64, PartDigest)> = stream::iter(plan.layout.parts())
            .map(|(i, off, len)| async move {
                let _slot = match ranged {
                    true => Some(self.range_gets.acquire().await?),
                    false => None,
                };
                let range = || self.download_range(object, sink, (off, len), hashes);
                Ok::<_, Error>((i, self.retry_part(key, range).await?))
            })
            .buffer_unordered(self.cfg.max_parallel_uploads)
            .try_collect()
            .await
            .map_err(|e| e.for_key(key))?;
        parts.sort_by_key(|p| p.0);
        Ok((parts.into_iter().map(|p| p.1).collect(), object.etag_is_opaque()))
    }

    /// Compares the downloaded parts' digests with the object's ETag and stored checksum.
    fn check_download(&self, key: &str, plan: &DownloadPlan, parts: &[PartDigest], opaque: bool) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        if plan.verify_etag && opaque {
            debug!(
                key,
                "the object is encrypted with SSE-KMS or SSE-C: its ETag is not an MD5, not verified"
            );
        } else if plan.verify_etag {
            let digests: Vec<Md5Digest> = parts.iter().map(|p| p.md5).collect();
            let computed = etag_from_parts(&digests, plan.layout.multipart);
            outcome.etag(key, &plan.etag, &computed, plan.known)?;
        }
        if let Some(((algo, value), full_object)) = &plan.stored {
            let computed = downloaded_checksum(*algo, value, *full_object, &plan.layout, plan.known, parts);
            match computed {
                Some(c) if plan.recheck && outcome.etag_verified && c != *value => {
                    outcome.warning = Some(format!(
                        "{key}: its stored {algo} checksum {value} does not match its bytes ({c}), which match its ETag"
                    ));
                }
                _ => outcome.checksum(key, Some(value), computed.as_deref(), || {
                    format!("{algo} checksum {value} could not be verified: the object's part layout is unknown")
                })?,
            }
        }
        Ok(outcome)
    }

    /// GETs a whole object of `len` bytes (less than one pool chunk) into one chunk, hashing it.
    async fn fetch_whole(
        &self,
        object: &S3Part<'_>,
        len: u64,
        (md5, algo): (bool, Option<additional::ChecksumAlgorithm>),
    ) -> Result<(Chunk, PartDigest)> {
        let mut hasher = PartHasher::for_verification(md5, algo);
        let body = object.get_range(0, len).await?;
        let mut reader = BodyReader::new(body, object.key, object.s3.bucket(), &self.limits);
        let pool = self.io.get()?.pool();
        let chunk = match reader.next_chunk(async { Ok(pool.acquire().await) }).await? {
            Some(chunk) => chunk,
            None => pool.acquire().await,
        };
        // Bytes beyond a full chunk are more than listed: the chunk they ask for is that error.
        reader.next_chunk(async { Err(larger_than_listed(object.key)) }).await?;
        if chunk.len() as u64 > len {
            return Err(larger_than_listed(object.key));
        }
        if chunk.len() as u64 != len {
            return Err(short_body(object, len, chunk.len() as u64));
        }
        let chunk = hasher.update_owned(chunk).await?;
        self.reporter.add_bytes(len);
        Ok((chunk, hasher.finish_all()))
    }

    /// Downloads one range into the file at its offset, one pool chunk at a time, hashing in flight.
    ///
    /// The next chunk fills from the response while the previous one is hashed and written, so that
    /// neither the wait for the MD5 lanes nor the write holds the connection idle.
    pub(super) async fn download_range(
        &self,
        object: &S3Part<'_>,
        sink: &FileSink<'_>,
        (offset, len): (u64, u64),
        (md5, algo): (bool, Option<additional::ChecksumAlgorithm>),
    ) -> Result<PartDigest> {
        let key = object.key;
        // MD5 only when the ETag will be compared (not with --disable-etag-verify, nor for ETags that
        // are not digests).
        let mut hasher = PartHasher::for_verification(md5, algo);
        // An empty object whose ETag is the MD5 of nothing needs no request; any other empty object is
        // fetched, so that its response tells whether its ETag is a digest at all (SSE-KMS).
        const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
        if len == 0 && object.etag.is_none_or(|e| e == EMPTY_MD5) {
            return Ok(hasher.finish_all());
        }
        let body = object.get_range(offset, len).await?;
        let mut reader = BodyReader::new(body, key, object.s3.bucket(), &self.limits);
        let pool = self.io.get()?.pool();
        let mut pos = offset;
        let mut filled = reader.next_chunk(async { Ok(pool.acquire().await) }).await?;
        while let Some(chunk) = filled {
            let n = chunk.len() as u64;
            if pos + n > offset + len {
                return Err(larger_than_listed(key));
            }
            let store = async {
                let chunk = hasher.update_owned_reading_on(chunk).await?;
                sink.write_at(chunk, pos).await
            };
            let next = reader.next_chunk(async { Ok(pool.acquire().await) });
            let (next, stored) = futures::join!(next, store);
            stored?;
            pos += n;
            self.reporter.add_bytes(n);
            filled = next?;
        }
        if pos != offset + len {
            return Err(short_body(object, len, pos - offset));
        }
        Ok(hasher.finish_all())
    }
}
