//! Request bodies made of pool chunks, handed to the SDK without copying.
//!
//! A body of one chunk is an in-memory `ByteStream` (so SigV4 can sign the payload); a body of several
//! chunks is a retryable stream over the same `Bytes`, which the SDK sends as an unsigned payload
//! (integrity is then carried by Content-MD5).

use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// An HTTP body that yields a list of `Bytes` in order.
struct ChunkBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(b) = &next {
            self.remaining -= b.len() as u64;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A `ByteStream` over pool chunks; retries replay the same chunks.
pub fn chunk_stream(chunks: Vec<Bytes>) -> ByteStream {
    if chunks.len() <= 1 {
        return ByteStream::from(chunks.into_iter().next().unwrap_or_default());
    }
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    ByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(ChunkBody {
            chunks: chunks.iter().cloned().collect(),
            remaining: total,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_all_chunks_in_order() {
        let s = chunk_stream(vec![
            Bytes::from_static(b"ab"),
            Bytes::from_static(b"cd"),
            Bytes::from_static(b"e"),
        ]);
        let data = s.collect().await.unwrap().into_bytes();
        assert_eq!(&data[..], b"abcde");
    }
}
