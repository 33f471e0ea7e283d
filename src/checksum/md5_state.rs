//! An incremental MD5 whose state can be handed from one hasher to another.
//!
//! `md-5` keeps its state private, so the parts of many objects could not be hashed side by side in
//! SIMD lanes (see [`lanes`](super::lanes)): this state is four words, a partial block and a length,
//! and it moves between a part's task and the lane hasher. One stream alone is hashed by the same
//! block function as `md-5` (its assembly on x86-64 outside MSVC).

use super::Md5Digest;
use s3sync_io::md5_compress as compress;

/// The MD5 of a stream fed in pieces.
#[derive(Clone, Debug)]
pub struct Md5State {
    /// The four chaining words.
    pub(super) words: [u32; 4],
    /// Bytes of an incomplete block.
    tail: [u8; 64],
    /// How many of `tail` are filled.
    tail_len: usize,
    /// Bytes fed in all.
    total: u64,
}

impl Default for Md5State {
    fn default() -> Self {
        Md5State {
            words: INIT,
            tail: [0; 64],
            tail_len: 0,
            total: 0,
        }
    }
}

/// The chaining words an MD5 starts from (RFC 1321).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

impl Md5State {
    /// A fresh MD5.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.tail_len > 0 {
            let n = (64 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len < 64 {
                return;
            }
            let block = self.tail;
            compress(&mut self.words, std::slice::from_ref(&block));
            self.tail_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        compress(&mut self.words, blocks);
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// How many bytes are missing to the next block boundary (0 at one): only there can whole
    /// blocks go through lanes.
    pub(super) fn to_boundary(&self) -> usize {
        (64 - self.tail_len) % 64
    }

    /// Records `n` bytes (whole blocks) hashed into `words` by a lane kernel.
    pub(super) fn blocks_hashed(&mut self, n: usize) {
        debug_assert!(self.tail_len == 0 && n.is_multiple_of(64));
        self.total += n as u64;
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> Md5Digest {
        let bits = self.total.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        // Up to 56 mod 64, then the length in bits, little-endian.
        let n = if self.tail_len < 56 {
            56 - self.tail_len
        } else {
            120 - self.tail_len
        };
        let total = self.total;
        self.update(&pad[..n]);
        self.update(&bits.to_le_bytes());
        self.total = total;
        let mut out = [0u8; 16];
        for (o, w) in out.chunks_exact_mut(4).zip(self.words) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn digests_match_md5_for_every_length_and_split() {
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 4096, 70_001] {
            let data = bytes(len);
            let want: Md5Digest = md5::Md5::digest(&data).into();
            for piece in [1, 7, 64, 100, 4096, usize::MAX] {
                let mut h = Md5State::new();
                data.chunks(piece.min(len.max(1))).for_each(|c| h.update(c));
                assert_eq!(h.finish(), want, "len {len} piece {piece}");
            }
        }
    }
}
