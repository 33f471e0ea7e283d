//! The part layout of an existing S3 object (part count and size), which its ETag and checksums
//! depend on.

use super::*;
use crate::checksum::{etag_part_count, PartLayout};
use crate::error::{Error, Result};
use crate::storage::s3::S3Storage;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::debug;

impl Transferer {
    /// The part layout of an S3 object, learned from its ETag and, for multipart objects, a HEAD of
    /// part 1. The flag says whether the layout is certain.
    pub async fn layout_of(&self, s3: &S3Storage, key: &str, size: u64, etag: &str) -> Result<(PartLayout, bool)> {
        self.layout_of_version(s3, key, None, size, etag).await
    }

    /// [`Self::layout_of`] for one version of an object.
    pub async fn layout_of_version(
        &self,
        s3: &S3Storage,
        key: &str,
        version: Option<&str>,
        size: u64,
        etag: &str,
    ) -> Result<(PartLayout, bool)> {
        let Some(n) = etag_part_count(etag) else {
            return Ok((PartLayout::single(size), true));
        };
        if n == 1 {
            return Ok((PartLayout::multipart(size, size.max(1)), true));
        }
        if let Some(h) = s3.head_version(key, Some(1), version).await? {
            let part = h.entry.size;
            let layout = PartLayout::multipart(size, part);
            if h.parts_count == Some(n) && part > 0 && part < size && layout.part_count() == n {
                if !self.cfg.auto_chunksize {
                    return Ok((layout, true));
                }
                // --auto-chunksize: confirm every part's size, the HEADs in parallel.
                let sizes: Vec<(u64, Option<u64>)> = stream::iter(2..=n)
                    .map(|p| async move {
                        let got = s3
                            .head_version(key, Some(p as i32), version)
                            .await?
                            .map(|h| h.entry.size);
                        Ok::<_, Error>((p, got))
                    })
                    .buffer_unordered(self.cfg.max_parallel_uploads)
                    .try_collect()
                    .await?;
                let uniform = sizes.iter().all(|(p, got)| *got == Some(layout.part(p - 1).1));
                if uniform {
                    return Ok((layout, true));
                }
                debug!(key, "parts of unequal size: the layout cannot be reproduced");
            }
        }
        Ok((PartLayout::multipart(size, self.cfg.multipart_chunksize), false))
    }
}
