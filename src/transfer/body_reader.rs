//! A GET response's body read into pool chunks, one chunk at a time.
//!
//! Downloads and S3→S3 parts hash (and write) a chunk while the next one fills from the same
//! response: the reader keeps the bytes of a frame that did not fit, so that a caller can hand a
//! full chunk away and ask for the next without holding the connection idle meanwhile.

use super::stream_error;
use crate::error::Result;
use crate::ratelimit::Limits;
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Buf, Bytes};
use s3sync_io::Chunk;
use std::future::Future;

/// A response body, read into chunks.
pub(super) struct BodyReader<'a> {
    body: ByteStream,
    /// The part of the last frame not yet in a chunk.
    rest: Bytes,
    ended: bool,
    key: &'a str,
    bucket: &'a str,
    limits: &'a Limits,
}

impl<'a> BodyReader<'a> {
    /// Reads `body`, the GET of `key` in `bucket`, under the run's rate `limits`.
    pub(super) fn new(body: ByteStream, key: &'a str, bucket: &'a str, limits: &'a Limits) -> Self {
        BodyReader {
            body,
            rest: Bytes::new(),
            ended: false,
            key,
            bucket,
            limits,
        }
    }

    /// The next bytes of the body in a chunk that `chunk` gives (awaited only when there are
    /// bytes left): full, or the last and partly full; `None` once the body has ended.
    pub(super) async fn next_chunk(&mut self, chunk: impl Future<Output = Result<Chunk>>) -> Result<Option<Chunk>> {
        if !self.more().await? {
            return Ok(None);
        }
        let mut chunk = chunk.await?;
        while chunk.remaining() > 0 && self.more().await? {
            let n = chunk.extend_from_slice(&self.rest);
            self.rest.advance(n);
        }
        Ok(Some(chunk))
    }

    /// Whether bytes are left, reading the next frame when the last one is used up.
    async fn more(&mut self) -> Result<bool> {
        while self.rest.is_empty() && !self.ended {
            match self.body.next().await {
                Some(frame) => {
                    self.rest = frame.map_err(|e| stream_error(self.key, self.bucket, e))?;
                    self.limits.bytes(self.rest.len() as u64).await;
                }
                None => self.ended = true,
            }
        }
        Ok(!self.rest.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::storage::body::chunk_stream;
    use s3sync_io::ChunkPool;

    fn frames(sizes: &[usize]) -> (ByteStream, Vec<u8>) {
        let all: Vec<u8> = (0..sizes.iter().sum::<usize>()).map(|i| (i % 251) as u8).collect();
        let mut at = 0;
        let frames = sizes
            .iter()
            .map(|&n| {
                at += n;
                Bytes::copy_from_slice(&all[at - n..at])
            })
            .collect();
        (chunk_stream(frames), all)
    }

    async fn not_asked() -> Result<Chunk> {
        Err(Error::Internal("a chunk was asked for with no bytes left".into()))
    }

    #[tokio::test]
    async fn frames_fill_whole_chunks_in_order_and_the_last_in_part() {
        let pool = ChunkPool::new(4096, 4).expect("pool");
        let limits = Limits::new(None, None);
        let (body, all) = frames(&[1000, 5000, 0, 3000]);
        let mut reader = BodyReader::new(body, "k", "b", &limits);
        let mut got = Vec::new();
        let mut lens = Vec::new();
        while let Some(c) = reader
            .next_chunk(async { Ok(pool.acquire().await) })
            .await
            .expect("read")
        {
            lens.push(c.len());
            got.extend_from_slice(c.as_slice());
        }
        assert_eq!(lens, [4096, 4096, 808]);
        assert_eq!(got, all);
        assert!(reader.next_chunk(not_asked()).await.expect("ended").is_none());
    }

    #[tokio::test]
    async fn a_chunk_is_asked_for_only_while_bytes_are_left() {
        let pool = ChunkPool::new(4096, 2).expect("pool");
        let limits = Limits::new(None, None);
        let (body, _) = frames(&[]);
        let mut empty = BodyReader::new(body, "k", "b", &limits);
        assert!(empty.next_chunk(not_asked()).await.expect("empty").is_none());

        // Exactly two chunks' worth: the third call ends without asking.
        let (body, _) = frames(&[8192]);
        let mut exact = BodyReader::new(body, "k", "b", &limits);
        for _ in 0..2 {
            let c = exact
                .next_chunk(async { Ok(pool.acquire().await) })
                .await
                .expect("read");
            assert_eq!(c.map(|c| c.len()), Some(4096));
        }
        assert!(exact.next_chunk(not_asked()).await.expect("ended").is_none());

        // One byte more asks for a third chunk, whose error is the reader's.
        let (body, _) = frames(&[8193]);
        let mut longer = BodyReader::new(body, "k", "b", &limits);
        for _ in 0..2 {
            longer
                .next_chunk(async { Ok(pool.acquire().await) })
                .await
                .expect("read");
        }
        assert!(longer.next_chunk(not_asked()).await.is_err());
    }
}
