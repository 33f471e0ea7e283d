//! Whether a source and a target hold the same bytes, by ETag or additional checksum, computing the
//! local side's digests with the other side's part layout.

use super::*;
use crate::checksum::additional;
use crate::checksum::{etag_from_parts, Md5Digest, PartDigest, PartHasher, PartLayout};
use crate::error::{Error, Result};
use crate::storage::s3::S3Storage;
use crate::storage::Entry;

impl Transferer {
    /// The ETag of a local file computed with `layout`, reading it once through the pool.
    pub async fn local_etag(&self, path: &std::path::Path, layout: PartLayout) -> Result<String> {
        let digests: Vec<Md5Digest> = self
            .local_digests(path, layout, None)
            .await?
            .iter()
            .map(|d| d.md5)
            .collect();
        Ok(etag_from_parts(&digests, layout.multipart))
    }

    /// The per-part digests (MD5 and optionally one additional checksum) of a local file.
    pub async fn local_digests(
        &self,
        path: &std::path::Path,
        layout: PartLayout,
        algo: Option<additional::ChecksumAlgorithm>,
    ) -> Result<Vec<PartDigest>> {
        // Read once to compare, like an upload: `--direct-io` applies.
        let file = self.open_local(path, layout.size).await?;
        let cs = self.chunk_size();
        let mut digests = Vec::new();
        for (_, off, len) in layout.parts() {
            let mut hasher = PartHasher::with_checksum(algo);
            let mut pos = off;
            while pos < off + len {
                let want = cs.min(off + len - pos) as usize;
                let c = self.io.get()?.pool().acquire().await;
                let c = self
                    .io
                    .get()?
                    .read_at(&file, c, pos, want)
                    .await
                    .map_err(|e| Error::local("read", path, e))?;
                if c.len() < want {
                    return Err(Error::ObjectChanged {
                        key: path.display().to_string(),
                        message: "the file shrank while it was read".into(),
                    });
                }
                // The chunk goes back to the pool once hashed.
                drop(hasher.update_owned(c).await?);
                pos += want as u64;
            }
            digests.push(hasher.finish_all());
        }
        Ok(digests)
    }

    /// Whether source and target hold the same bytes by ETag (for `--check-etag`). `None` when the
    /// ETags cannot be compared (then the object is transferred).
    pub async fn same_etag(&self, source: &Entry, target: &Entry) -> Result<Option<bool>> {
        match (&self.source, &self.target) {
            (End::S3(_), End::S3(_)) => Ok(match (&source.etag, &target.etag) {
                (Some(a), Some(b)) => Some(a == b),
                _ => None,
            }),
            (End::Local(l), End::S3(s3)) => {
                let Some(etag) = &target.etag else { return Ok(None) };
                let (layout, _) = self.layout_of(s3, &target.key, target.size, etag).await?;
                let local = self.local_etag(&l.root().join(&source.key), layout).await?;
                Ok(Some(&local == etag))
            }
            (End::S3(s3), End::Local(l)) => {
                let Some(etag) = &source.etag else { return Ok(None) };
                let path = l
                    .path_for(&target.key)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                let (layout, _) = self.layout_of(s3, &source.key, source.size, etag).await?;
                let local = self.local_etag(&path, layout).await?;
                Ok(Some(&local == etag))
            }
            (End::Local(_), End::Local(_)) => Ok(None),
        }
    }

    /// Whether source and target hold the same bytes by additional checksum `algo` (for
    /// `--check-additional-checksum` and `--report-sync-status`). `None` when they cannot be compared:
    /// a side has no checksum of that algorithm, or the part layout is unknown.
    pub async fn same_checksum(
        &self,
        source: &Entry,
        target: &Entry,
        algo: additional::ChecksumAlgorithm,
    ) -> Result<Option<bool>> {
        let stored = |s3: &S3Storage, e: &Entry| {
            let s3 = s3.clone();
            let key = e.key.clone();
            async move {
                Ok::<_, Error>(s3.head(&key, None).await?.and_then(|h| {
                    h.checksum
                        .filter(|c| c.0 == algo)
                        .map(|c| (c.1, h.full_object_checksum, h.entry))
                }))
            }
        };
        match (&self.source, &self.target) {
            (End::S3(a), End::S3(b)) => {
                let (x, y) = (stored(a, source).await?, stored(b, target).await?);
                Ok(match (x, y) {
                    (Some((x, ..)), Some((y, ..))) => Some(x == y),
                    _ => None,
                })
            }
            (End::Local(l), End::S3(s3)) => {
                let path = l.root().join(&source.key);
                self.local_matches(&path, s3, stored(s3, target).await?, algo).await
            }
            (End::S3(s3), End::Local(l)) => {
                let path = l
                    .path_for(&target.key)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                self.local_matches(&path, s3, stored(s3, source).await?, algo).await
            }
            (End::Local(_), End::Local(_)) => Ok(None),
        }
    }

    /// Computes a local file's checksum in the form of a stored S3 one and compares.
    pub(super) async fn local_matches(
        &self,
        path: &std::path::Path,
        s3: &S3Storage,
        stored: Option<(String, bool, Entry)>,
        algo: additional::ChecksumAlgorithm,
    ) -> Result<Option<bool>> {
        let Some((value, full_object, entry)) = stored else {
            return Ok(None);
        };
        let etag = entry.etag.clone().unwrap_or_default();
        let (layout, known) = self.layout_of(s3, &entry.key, entry.size, &etag).await?;
        let digests = self.local_digests(path, layout, Some(algo)).await?;
        Ok(downloaded_checksum(algo, &value, full_object, &layout, known, &digests).map(|c| c == value))
    }
}
