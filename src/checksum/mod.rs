//! The ETag arithmetic: MD5 per part while bytes stream, and the S3 ETag forms built from part digests
//! (plain MD5 for one part, `md5-of-md5s-N` for multipart).
//!
//! Every digest is computed in the same pass that moves the bytes; nothing here reads a file.

pub mod additional;
pub mod lanes;
pub mod md5_state;

use self::lanes::{HashInput, Lanes, Seat};
use self::md5_state::Md5State;
use ::md5::{Digest, Md5};

/// A 16-byte MD5 digest.
pub type Md5Digest = [u8; 16];

/// Incremental digests of one part (or of a whole single-part object): the MD5 for the ETag and,
/// when asked, one additional checksum, fed in the same pass.
#[derive(Clone)]
pub struct PartHasher {
    /// `None` when nothing will compare the MD5 (it costs ~2 CPU-s per GiB).
    md5: Option<Md5State>,
    extra: Option<additional::ChecksumHasher>,
    len: u64,
    /// Held from the first input hashed in lanes ([`PartHasher::update_owned`]) on.
    seat: Option<Seat>,
}

impl Default for PartHasher {
    fn default() -> Self {
        PartHasher {
            md5: Some(Md5State::new()),
            extra: None,
            len: 0,
            seat: None,
        }
    }
}

/// What a [`PartHasher`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartDigest {
    /// MD5 of the part (all zeros from a hasher built without MD5).
    pub md5: Md5Digest,
    /// The additional checksum (raw bytes), when one was asked for.
    pub checksum: Option<Vec<u8>>,
    /// Bytes hashed.
    pub len: u64,
}

impl PartHasher {
    /// A hasher of MD5 only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hasher of MD5 and, if given, one additional checksum.
    pub fn with_checksum(algo: Option<additional::ChecksumAlgorithm>) -> Self {
        PartHasher {
            extra: algo.map(additional::ChecksumHasher::new),
            ..Self::default()
        }
    }

    /// A hasher of one additional checksum, if given, and of MD5 only when `md5` (a download whose
    /// ETag nothing will compare skips it).
    pub fn for_verification(md5: bool, algo: Option<additional::ChecksumAlgorithm>) -> Self {
        PartHasher {
            md5: md5.then(Md5State::new),
            ..Self::with_checksum(algo)
        }
    }

    /// Feeds the next bytes of the part.
    pub fn update(&mut self, data: &[u8]) {
        if let Some(m) = self.md5.as_mut() {
            m.update(data);
        }
        if let Some(x) = self.extra.as_mut() {
            x.update(data);
        }
        self.len += data.len() as u64;
    }

    /// Whether an input of `len` bytes given to [`update_owned`](Self::update_owned) has its MD5
    /// computed in lanes with other streams (else where it is, on the caller's thread).
    pub fn hashes_in_lanes(&self, len: u64) -> bool {
        self.md5.is_some() && len >= lanes::MIN_JOB as u64 && Lanes::get().is_some()
    }

    /// Feeds the next bytes of the part, which `input` owns, and gives them back: a large input's
    /// MD5 is computed in lanes together with other streams' (see [`lanes`]), anything else's
    /// here. The additional checksum is always computed here.
    pub async fn update_owned<T: HashInput>(&mut self, input: T) -> crate::error::Result<T> {
        self.update_owned_within(input, lanes::GATHER).await
    }

    /// [`update_owned`](Self::update_owned) for a caller that reads its next input while this one
    /// is hashed: the lanes may wait longer for other streams ([`lanes::GATHER_READING_ON`]).
    pub async fn update_owned_reading_on<T: HashInput>(&mut self, input: T) -> crate::error::Result<T> {
        self.update_owned_within(input, lanes::GATHER_READING_ON).await
    }

    /// Feeds an owned input, letting the lanes wait up to `gather` for other streams.
    async fn update_owned_within<T: HashInput>(
        &mut self,
        input: T,
        gather: std::time::Duration,
    ) -> crate::error::Result<T> {
        let len: usize = input.pieces().iter().map(|p| p.len()).sum();
        let taken = match self.hashes_in_lanes(len as u64) {
            true => Lanes::get().zip(self.md5.take()),
            false => None,
        };
        let Some((lanes, state)) = taken else {
            input.pieces().iter().for_each(|p| self.update(p));
            return Ok(input);
        };
        if let Some(x) = self.extra.as_mut() {
            input.pieces().iter().for_each(|p| x.update(p));
        }
        self.len += len as u64;
        self.seat.get_or_insert_with(|| lanes.seat());
        let (state, input) = lanes.hash(state, input, gather).await?;
        self.md5 = Some(state);
        Ok(input)
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The MD5 of everything fed (all zeros from a hasher built without MD5).
    pub fn finish(self) -> Md5Digest {
        self.md5.map(Md5State::finish).unwrap_or_default()
    }

    /// Every digest of everything fed.
    pub fn finish_all(self) -> PartDigest {
        PartDigest {
            md5: self.md5.map(Md5State::finish).unwrap_or_default(),
            checksum: self.extra.map(|x| x.finish()),
            len: self.len,
        }
    }
}

/// The object-level additional checksum (as S3 reports it) of parts written with `layout`.
pub fn object_checksum(
    algo: additional::ChecksumAlgorithm,
    kind: additional::ChecksumType,
    layout: &PartLayout,
    parts: &[PartDigest],
) -> Option<String> {
    let raw: Vec<(Vec<u8>, u64)> = parts
        .iter()
        .map(|p| Some((p.checksum.clone()?, p.len)))
        .collect::<Option<_>>()?;
    if !layout.multipart {
        return raw.first().map(|(d, _)| additional::to_base64(d));
    }
    additional::combine_parts(algo, kind, &raw).ok()
}

/// MD5 of a byte slice.
pub fn md5_of(data: &[u8]) -> Md5Digest {
    Md5::digest(data).into()
}

/// The S3 ETag (without quotes) of an object whose parts have these MD5s.
///
/// `multipart` says whether the object was (or will be) written with a multipart upload: one part then
/// still yields the `-1` form, as S3 does.
pub fn etag_from_parts(parts: &[Md5Digest], multipart: bool) -> String {
    if !multipart && parts.len() <= 1 {
        let digest = parts.first().copied().unwrap_or_else(|| md5_of(b""));
        return hex::encode(digest);
    }
    let mut outer = Md5::new();
    for p in parts {
        outer.update(p);
    }
    format!("{}-{}", hex::encode(outer.finalize()), parts.len())
}

/// Strips the quotes S3 puts around ETags and lower-cases the hex.
pub fn normalize_etag(etag: &str) -> String {
    normalized_etag(etag.to_string())
}

/// [`normalize_etag`] in the string's own memory.
pub fn normalized_etag(mut etag: String) -> String {
    let bare = etag.trim().trim_matches('"');
    let (start, len) = (bare.as_ptr() as usize - etag.as_ptr() as usize, bare.len());
    etag.truncate(start + len);
    etag.drain(..start);
    etag.make_ascii_lowercase();
    etag
}

/// The number of parts in a multipart ETag (`…-N`), or `None` for a plain one.
pub fn etag_part_count(etag: &str) -> Option<u64> {
    let e = normalize_etag(etag);
    let (_, n) = e.rsplit_once('-')?;
    n.parse().ok()
}

/// Whether the ETag has the form of an MD5 (plain or multipart), so that it can be verified from bytes.
/// SSE-KMS/SSE-C objects and some S3-compatible servers give ETags of other forms.
pub fn etag_is_md5_form(etag: &str) -> bool {
    let e = normalize_etag(etag);
    let hex_part = match e.rsplit_once('-') {
        Some((h, n)) if n.parse::<u64>().is_ok() => h,
        Some(_) => return false,
        None => &e,
    };
    hex_part.len() == 32 && hex_part.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How an object of `size` bytes is split into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    /// Object size in bytes.
    pub size: u64,
    /// Size of every part but the last (the whole object when not multipart).
    pub part_size: u64,
    /// Whether the object is written with a multipart upload (`-N` ETag).
    pub multipart: bool,
}

impl PartLayout {
    /// The layout s3sync uses to write an object: multipart when `size >= threshold`.
    pub fn for_upload(size: u64, threshold: u64, chunksize: u64) -> Self {
        if size >= threshold && size > 0 {
            PartLayout {
                size,
                part_size: chunksize.max(Self::min_part_size(size)),
                multipart: true,
            }
        } else {
            PartLayout::single(size)
        }
    }

    /// The smallest part size (a whole number of MiB) that fits `size` bytes in S3's 10,000 parts.
    pub fn min_part_size(size: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        size.div_ceil(MAX_PARTS).div_ceil(MIB).max(1) * MIB
    }

    /// One part holding the whole object.
    pub fn single(size: u64) -> Self {
        PartLayout {
            size,
            part_size: size.max(1),
            multipart: false,
        }
    }

    /// A multipart layout with the given part size.
    pub fn multipart(size: u64, part_size: u64) -> Self {
        PartLayout {
            size,
            part_size: part_size.max(1),
            multipart: true,
        }
    }

    /// Number of parts (at least one, also for an empty object).
    pub fn part_count(&self) -> u64 {
        if self.size == 0 {
            1
        } else {
            self.size.div_ceil(self.part_size)
        }
    }

    /// Offset and length of part `index` (0-based).
    pub fn part(&self, index: u64) -> (u64, u64) {
        let offset = index * self.part_size;
        let len = self.part_size.min(self.size.saturating_sub(offset));
        (offset, len)
    }

    /// All parts as `(index, offset, len)`.
    pub fn parts(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        (0..self.part_count()).map(move |i| {
            let (o, l) = self.part(i);
            (i, o, l)
        })
    }
}

/// The most parts a multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

#[cfg(test)]
mod tests {
    #[test]
    fn part_size_grows_to_fit_ten_thousand_parts() {
        const MIB: u64 = 1024 * 1024;
        const GIB: u64 = 1024 * MIB;
        let l = PartLayout::for_upload(100 * GIB, 8 * MIB, 8 * MIB);
        assert_eq!(l.part_size, 11 * MIB);
        assert!(l.part_count() <= MAX_PARTS);
        let l = PartLayout::for_upload(5 * 1024 * GIB, 8 * MIB, 8 * MIB);
        assert!(l.part_count() <= MAX_PARTS, "{}", l.part_count());
        assert_eq!(l.part_size % MIB, 0);
        // Small objects keep the chunk size asked for.
        assert_eq!(PartLayout::for_upload(78 * GIB, 8 * MIB, 8 * MIB).part_size, 8 * MIB);
        assert_eq!(PartLayout::for_upload(20 * MIB, 8 * MIB, 5 * MIB).part_size, 5 * MIB);
    }

    use super::*;

    #[test]
    fn a_hasher_without_md5_still_computes_the_checksum() {
        let algo = Some(additional::ChecksumAlgorithm::Crc32c);
        let mut with = PartHasher::for_verification(true, algo);
        let mut without = PartHasher::for_verification(false, algo);
        with.update(b"hello");
        without.update(b"hello");
        let (a, b) = (with.finish_all(), without.finish_all());
        assert_eq!(a.md5, md5_of(b"hello"));
        assert_eq!(b.md5, [0u8; 16]);
        assert_eq!(a.checksum, b.checksum);
        assert!(b.checksum.is_some());
        assert_eq!((a.len, b.len), (5, 5));
        assert_eq!(PartHasher::new().finish(), md5_of(b""));
    }

    #[tokio::test]
    async fn owned_inputs_large_and_small_are_all_hashed() {
        let pool = s3sync_io::ChunkPool::new(256 << 10, 4).expect("pool");
        let algo = Some(additional::ChecksumAlgorithm::Crc32c);
        let mut owned = PartHasher::with_checksum(algo);
        let mut plain = PartHasher::with_checksum(algo);
        // A full chunk (lanes, where the CPU has them), a small one (in place), then several.
        for len in [256 << 10, 1000, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut c = pool.acquire().await;
            c.extend_from_slice(&data);
            let c = owned.update_owned(c).await.expect("hashed");
            assert_eq!(c.as_slice(), data.as_slice());
            plain.update(&data);
        }
        let mut v = Vec::new();
        for _ in 0..2 {
            let mut c = pool.acquire().await;
            c.extend_from_slice(&[7u8; 256 << 10]);
            plain.update(&[7u8; 256 << 10]);
            v.push(c);
        }
        assert_eq!(owned.update_owned(v).await.expect("hashed").len(), 2);
        assert_eq!(owned.finish_all(), plain.finish_all());
    }

    #[test]
    fn single_part_etag_is_md5_hex() {
        assert_eq!(etag_from_parts(&[], false), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            etag_from_parts(&[md5_of(b"hello")], false),
            "5d41402abc4b2a76b9719d911017c592"
        );
    }

    #[test]
    fn multipart_etag_is_md5_of_md5s() {
        // Two parts "a" and "b": md5(md5("a") || md5("b")) with suffix -2.
        let parts = [md5_of(b"a"), md5_of(b"b")];
        let mut concat = Vec::new();
        concat.extend_from_slice(&parts[0]);
        concat.extend_from_slice(&parts[1]);
        let expected = format!("{}-2", hex::encode(md5_of(&concat)));
        assert_eq!(etag_from_parts(&parts, true), expected);
        assert!(etag_from_parts(&[md5_of(b"a")], true).ends_with("-1"));
    }

    #[test]
    fn etag_forms() {
        assert!(etag_is_md5_form("\"d41d8cd98f00b204e9800998ecf8427e\""));
        assert!(etag_is_md5_form("d41d8cd98f00b204e9800998ecf8427e-12"));
        assert!(!etag_is_md5_form("abc"));
        assert!(!etag_is_md5_form("d41d8cd98f00b204e9800998ecf8427e-x"));
        assert_eq!(etag_part_count("\"abc-3\""), Some(3));
        assert_eq!(etag_part_count("abc"), None);
        assert_eq!(normalize_etag(" \"ABC\" "), "abc");
        assert_eq!(normalized_etag(" \"AbC-2\"\n".to_string()), "abc-2");
        assert_eq!(normalized_etag("plain".to_string()), "plain");
        assert_eq!(normalized_etag("\"\"".to_string()), "");
    }

    #[test]
    fn layouts() {
        let mib = 1024 * 1024;
        let l = PartLayout::for_upload(8 * mib, 8 * mib, 8 * mib);
        assert!(l.multipart);
        assert_eq!(l.part_count(), 1);
        let l = PartLayout::for_upload(8 * mib + 1, 8 * mib, 8 * mib);
        assert_eq!(l.part_count(), 2);
        assert_eq!(l.part(1), (8 * mib, 1));
        let l = PartLayout::for_upload(8 * mib - 1, 8 * mib, 8 * mib);
        assert!(!l.multipart);
        assert_eq!(l.part_count(), 1);
        assert_eq!(l.part(0), (0, 8 * mib - 1));
        let l = PartLayout::for_upload(0, 8 * mib, 8 * mib);
        assert!(!l.multipart);
        assert_eq!(l.part_count(), 1);
        assert_eq!(l.part(0), (0, 0));
        let parts: Vec<_> = PartLayout::multipart(10, 4).parts().collect();
        assert_eq!(parts, vec![(0, 0, 4), (1, 4, 4), (2, 8, 2)]);
    }
}
