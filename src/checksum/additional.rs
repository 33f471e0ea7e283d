//! S3's additional checksums (SHA256, SHA1, CRC32, CRC32C, CRC64NVME), computed in the same pass that
//! moves the bytes, and the object-level forms S3 reports for multipart uploads.
//!
//! S3 stores an additional checksum next to the ETag and, unlike the ETag, it is comparable across
//! part sizes when the object uses a full-object CRC. To verify or to compare objects without
//! re-reading them, the sync engine needs to reproduce exactly what S3 reports:
//!
//! - **Composite** (SHA1, SHA256, and CRC32/CRC32C by default): the checksum of the concatenated
//!   raw part checksums, suffixed with `-N` (N = part count).
//! - **Full object** (CRC64NVME always, CRC32/CRC32C on request): the CRC of the whole object,
//!   obtained from the part CRCs by the CRC combination arithmetic, with no suffix.
//!
//! Hashing uses the fastest paths available: `crc-fast`'s SIMD `Digest` for the CRCs and `sha1`/`sha2`
//! (which detect SHA-NI / ARMv8 SHA at run time) for the SHA family.

use base64::Engine as _;
use sha1::Digest as _;

/// S3's additional checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// SHA-256 (32-byte digest).
    Sha256,
    /// SHA-1 (20-byte digest).
    Sha1,
    /// CRC-32/ISO-HDLC, the zlib/Ethernet CRC (4-byte digest).
    Crc32,
    /// CRC-32/ISCSI, Castagnoli (4-byte digest).
    Crc32c,
    /// CRC-64/NVME (8-byte digest).
    Crc64Nvme,
}

impl ChecksumAlgorithm {
    /// Every algorithm, CRCs last.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
    ];

    /// Parses the CLI/S3 spelling (`SHA256`, `SHA1`, `CRC32`, `CRC32C`, `CRC64NVME`), ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// The CLI/S3 spelling of the algorithm (`SHA256`, `SHA1`, `CRC32`, `CRC32C`, `CRC64NVME`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sha256 => "SHA256",
            Self::Sha1 => "SHA1",
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
        }
    }

    /// Whether the algorithm is a CRC (and so supports full-object combination).
    pub fn is_crc(&self) -> bool {
        matches!(self, Self::Crc32 | Self::Crc32c | Self::Crc64Nvme)
    }

    /// The AWS SDK's value for this algorithm.
    pub fn to_sdk(&self) -> aws_sdk_s3::types::ChecksumAlgorithm {
        use aws_sdk_s3::types::ChecksumAlgorithm as Sdk;
        match self {
            Self::Sha256 => Sdk::Sha256,
            Self::Sha1 => Sdk::Sha1,
            Self::Crc32 => Sdk::Crc32,
            Self::Crc32c => Sdk::Crc32C,
            Self::Crc64Nvme => Sdk::Crc64Nvme,
        }
    }

    /// Length in bytes of the raw digest: 32, 20, 4, 4, 8.
    pub fn digest_len(&self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha1 => 20,
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
        }
    }

    /// The `crc-fast` algorithm for a CRC, `None` for the SHA family.
    fn crc_algorithm(&self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Self::Sha256 | Self::Sha1 => None,
        }
    }
}

impl std::fmt::Display for ChecksumAlgorithm {
    /// Writes the CLI/S3 spelling, as [`ChecksumAlgorithm::as_str`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a multipart object's checksum is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    /// Checksum of the concatenated part checksums, reported with a `-N` suffix.
    Composite,
    /// CRC of the whole object, reported without suffix.
    FullObject,
}

impl ChecksumType {
    /// The type S3 uses for `algo` given the user's --full-object-checksum flag: CRC64NVME is always FullObject;
    /// SHA1/SHA256 are always Composite (error if full_object requested);
    /// CRC32/CRC32C: FullObject if full_object else Composite.
    pub fn for_algorithm(algo: ChecksumAlgorithm, full_object: bool) -> Result<Self, String> {
        match algo {
            ChecksumAlgorithm::Crc64Nvme => Ok(Self::FullObject),
            ChecksumAlgorithm::Sha256 | ChecksumAlgorithm::Sha1 => {
                if full_object {
                    Err(format!(
                        "full-object checksums are only supported for CRC algorithms \
                         (CRC32, CRC32C, CRC64NVME), not {algo}"
                    ))
                } else {
                    Ok(Self::Composite)
                }
            }
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => {
                Ok(if full_object { Self::FullObject } else { Self::Composite })
            }
        }
    }

    /// The AWS SDK's value for this checksum type.
    pub fn to_sdk(&self) -> aws_sdk_s3::types::ChecksumType {
        match self {
            Self::Composite => aws_sdk_s3::types::ChecksumType::Composite,
            Self::FullObject => aws_sdk_s3::types::ChecksumType::FullObject,
        }
    }
}

/// The running state of one algorithm.
#[derive(Clone)]
enum HasherState {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
    Crc(crc_fast::Digest),
}

/// Streaming hasher of one algorithm.
#[derive(Clone)]
pub struct ChecksumHasher {
    algo: ChecksumAlgorithm,
    state: HasherState,
}

impl ChecksumHasher {
    /// A hasher for `algo` with nothing fed yet.
    pub fn new(algo: ChecksumAlgorithm) -> Self {
        let state = match algo {
            ChecksumAlgorithm::Sha256 => HasherState::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha1 => HasherState::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::Crc64Nvme => {
                HasherState::Crc(crc_digest(algo))
            }
        };
        Self { algo, state }
    }

    /// Feeds the next bytes.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha1(h) => h.update(data),
            HasherState::Crc(d) => d.update(data),
        }
    }

    /// The raw digest of everything fed: big-endian bytes (CRCs as big-endian u32/u64).
    pub fn finish(self) -> Vec<u8> {
        match self.state {
            HasherState::Sha256(h) => h.finalize().to_vec(),
            HasherState::Sha1(h) => h.finalize().to_vec(),
            HasherState::Crc(d) => crc_to_bytes(self.algo, d.finalize()),
        }
    }
}

/// A fresh `crc-fast` digest for a CRC algorithm. Panics on a SHA algorithm (internal use only).
fn crc_digest(algo: ChecksumAlgorithm) -> crc_fast::Digest {
    crc_fast::Digest::new(algo.crc_algorithm().expect("CRC algorithm"))
}

/// The big-endian raw bytes of a finalized CRC value, `digest_len` bytes long.
fn crc_to_bytes(algo: ChecksumAlgorithm, crc: u64) -> Vec<u8> {
    let be = crc.to_be_bytes();
    be[be.len() - algo.digest_len()..].to_vec()
}

/// The finalized CRC value from its big-endian raw bytes (4 or 8 bytes).
fn crc_from_bytes(raw: &[u8]) -> u64 {
    raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Base64 of raw digest bytes (the header form).
pub fn to_base64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The object-level checksum as S3 reports it for a multipart upload, from each part's raw digest and length in order:
/// Composite: base64(H(concat(part raw digests))) + "-N"; FullObject: base64 of the CRC of the whole object,
/// obtained by combining the part CRCs with their lengths (no suffix). FullObject with a SHA algorithm → Err.
///
/// Also errors if a part digest does not have `algo.digest_len()` bytes, or if `parts` is empty for
/// Composite (a multipart upload has at least one part). FullObject over no parts is the CRC of no
/// bytes.
pub fn combine_parts(algo: ChecksumAlgorithm, kind: ChecksumType, parts: &[(Vec<u8>, u64)]) -> Result<String, String> {
    let want = algo.digest_len();
    if let Some((i, (raw, _))) = parts.iter().enumerate().find(|(_, (raw, _))| raw.len() != want) {
        return Err(format!(
            "part {} has a {}-byte {algo} checksum, expected {want} bytes",
            i + 1,
            raw.len()
        ));
    }
    match kind {
        ChecksumType::Composite => {
            if parts.is_empty() {
                return Err(format!("cannot form a composite {algo} checksum of zero parts"));
            }
            let mut h = ChecksumHasher::new(algo);
            for (raw, _) in parts {
                h.update(raw);
            }
            Ok(format!("{}-{}", to_base64(&h.finish()), parts.len()))
        }
        ChecksumType::FullObject => {
            let Some(crc_algo) = algo.crc_algorithm() else {
                return Err(format!(
                    "full-object checksums are only supported for CRC algorithms, not {algo}"
                ));
            };
            let crc = match parts.split_first() {
                None => crc_digest(algo).finalize(),
                Some(((first, _), rest)) => rest.iter().fold(crc_from_bytes(first), |acc, (raw, len)| {
                    crc_fast::checksum_combine(crc_algo, acc, crc_from_bytes(raw), *len)
                }),
            };
            Ok(to_base64(&crc_to_bytes(algo, crc)))
        }
    }
}

/// Splits an S3 checksum value "xxxx==-3" into (base64 part, Some(3)) or ("xxxx==", None).
///
/// Standard base64 never contains `-`, so a trailing `-<digits>` is always the part count.
pub fn split_part_count(value: &str) -> (&str, Option<u64>) {
    if let Some((b64, n)) = value.rsplit_once('-') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = n.parse() {
                return (b64, Some(n));
            }
        }
    }
    (value, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ChecksumAlgorithm; 5] = ChecksumAlgorithm::ALL;
    const CRCS: [ChecksumAlgorithm; 3] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
    ];

    /// The one-shot raw digest of `data`.
    fn digest_of(algo: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
        let mut h = ChecksumHasher::new(algo);
        h.update(data);
        h.finish()
    }

    fn hex(raw: &[u8]) -> String {
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Deterministic pseudo-random bytes (xorshift64*), no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| (self.next() >> 32) as u8).collect()
        }
    }

    #[test]
    fn crc_check_values() {
        let cases = [
            (ChecksumAlgorithm::Crc32, "cbf43926"),
            (ChecksumAlgorithm::Crc32c, "e3069283"),
            (ChecksumAlgorithm::Crc64Nvme, "ae8b14860a799888"),
        ];
        for (algo, want) in cases {
            let raw = digest_of(algo, b"123456789");
            assert_eq!(hex(&raw), want, "{algo}");
            assert_eq!(raw.len(), algo.digest_len());
        }
        // The CRC of no bytes is 0 for all three.
        for algo in CRCS {
            assert_eq!(digest_of(algo, b""), vec![0; algo.digest_len()], "{algo}");
        }
    }

    #[test]
    fn sha_known_vectors() {
        let cases = [
            (
                ChecksumAlgorithm::Sha1,
                &b"abc"[..],
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (ChecksumAlgorithm::Sha1, b"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (
                ChecksumAlgorithm::Sha256,
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                ChecksumAlgorithm::Sha256,
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (algo, data, want) in cases {
            let raw = digest_of(algo, data);
            assert_eq!(hex(&raw), want, "{algo}");
            assert_eq!(raw.len(), algo.digest_len());
        }
    }

    #[test]
    fn base64_header_form() {
        // CRC32 of "123456789" = 0xCBF43926 → bytes cb f4 39 26.
        assert_eq!(to_base64(&[0xcb, 0xf4, 0x39, 0x26]), "y/Q5Jg==");
        assert_eq!(
            to_base64(&digest_of(ChecksumAlgorithm::Sha256, b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(to_base64(&[]), "");
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Sizes straddle the SIMD block thresholds of crc-fast and the 64-byte SHA block.
        for size in [0usize, 1, 15, 16, 63, 64, 65, 255, 256, 1000, 4096, 70_001] {
            let data = rng.bytes(size);
            for algo in ALL {
                let want = digest_of(algo, &data);
                for _ in 0..5 {
                    let mut h = ChecksumHasher::new(algo);
                    let mut rest = &data[..];
                    while !rest.is_empty() {
                        let n = rng.below(rest.len().min(300) + 1);
                        h.update(&rest[..n]);
                        rest = &rest[n..];
                    }
                    // A clone mid-stream continues independently.
                    let cloned = h.clone();
                    assert_eq!(h.finish(), want, "{algo} size {size}");
                    assert_eq!(cloned.finish(), want, "{algo} size {size} (clone)");
                }
            }
        }
    }

    fn parts_of(algo: ChecksumAlgorithm, data: &[u8], sizes: &[usize]) -> Vec<(Vec<u8>, u64)> {
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        let mut off = 0;
        sizes
            .iter()
            .map(|&n| {
                let part = &data[off..off + n];
                off += n;
                (digest_of(algo, part), n as u64)
            })
            .collect()
    }

    #[test]
    fn full_object_equals_crc_of_whole() {
        let mut rng = Rng(42);
        let data = rng.bytes(300_000);
        let splittings: [&[usize]; 5] = [
            &[300_000],
            &[100_000, 150_001, 49_999],
            &[1, 299_998, 1],
            &[131_072, 131_072, 37_856],
            &[7, 13, 299_980],
        ];
        for algo in CRCS {
            let want = to_base64(&digest_of(algo, &data));
            for sizes in splittings {
                let parts = parts_of(algo, &data, sizes);
                let got = combine_parts(algo, ChecksumType::FullObject, &parts).unwrap();
                assert_eq!(got, want, "{algo} {sizes:?}");
                assert_eq!(split_part_count(&got), (want.as_str(), None));
            }
            // A 0-byte single-part object and the degenerate empty list.
            let empty = to_base64(&digest_of(algo, b""));
            let one_empty = vec![(digest_of(algo, b""), 0)];
            assert_eq!(
                combine_parts(algo, ChecksumType::FullObject, &one_empty).unwrap(),
                empty
            );
            assert_eq!(combine_parts(algo, ChecksumType::FullObject, &[]).unwrap(), empty);
            // A trailing empty part leaves the CRC unchanged.
            let mut with_empty = parts_of(algo, &data, &[200_000, 100_000]);
            with_empty.push((digest_of(algo, b""), 0));
            assert_eq!(
                combine_parts(algo, ChecksumType::FullObject, &with_empty).unwrap(),
                want,
                "{algo} trailing empty part"
            );
        }
    }

    #[test]
    fn full_object_rejects_sha() {
        for algo in [ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256] {
            let parts = parts_of(algo, b"abc", &[3]);
            assert!(combine_parts(algo, ChecksumType::FullObject, &parts).is_err());
        }
    }

    #[test]
    fn composite_by_hand() {
        use sha2::Digest as _;
        let mut rng = Rng(7);
        let data = rng.bytes(50_000);
        let sizes = [20_000usize, 20_000, 10_000];
        let chunks = [&data[..20_000], &data[20_000..40_000], &data[40_000..]];
        for algo in ALL {
            // Independent computation straight from the crates.
            let raw_of = |d: &[u8]| -> Vec<u8> {
                match algo {
                    ChecksumAlgorithm::Sha256 => sha2::Sha256::digest(d).to_vec(),
                    ChecksumAlgorithm::Sha1 => sha1::Sha1::digest(d).to_vec(),
                    ChecksumAlgorithm::Crc32 => crc_fast::crc32_iso_hdlc(d).to_be_bytes().to_vec(),
                    ChecksumAlgorithm::Crc32c => crc_fast::crc32_iscsi(d).to_be_bytes().to_vec(),
                    ChecksumAlgorithm::Crc64Nvme => crc_fast::crc64_nvme(d).to_be_bytes().to_vec(),
                }
            };
            let concat: Vec<u8> = chunks.iter().flat_map(|c| raw_of(c)).collect();
            let want = format!("{}-3", to_base64(&raw_of(&concat)));

            let parts = parts_of(algo, &data, &sizes);
            for (i, (raw, _)) in parts.iter().enumerate() {
                assert_eq!(raw, &raw_of(chunks[i]), "{algo} part {}", i + 1);
            }
            let got = combine_parts(algo, ChecksumType::Composite, &parts).unwrap();
            assert_eq!(got, want, "{algo}");
            let (b64, n) = split_part_count(&got);
            assert_eq!(n, Some(3));
            assert_eq!(b64, to_base64(&raw_of(&concat)));

            // One part: still suffixed "-1", and it is H(H(data)), not H(data).
            let one = parts_of(algo, &data, &[data.len()]);
            let got = combine_parts(algo, ChecksumType::Composite, &one).unwrap();
            assert_eq!(got, format!("{}-1", to_base64(&raw_of(&raw_of(&data)))));
        }
    }

    #[test]
    fn composite_known_value() {
        // CRC32 composite of two parts "1234" and "56789". Expected values computed independently
        // with Python's zlib: crc32(b"1234") = 0x9BE3E0A3, crc32(b"56789") = 0x131DA070, and
        // base64(crc32(pack(">II", a, b)).to_bytes(4, "big")) = "rBMwBw==".
        let algo = ChecksumAlgorithm::Crc32;
        let p1 = digest_of(algo, b"1234");
        let p2 = digest_of(algo, b"56789");
        assert_eq!(hex(&p1), "9be3e0a3");
        assert_eq!(hex(&p2), "131da070");
        let parts = [(p1, 4), (p2, 5)];
        let got = combine_parts(algo, ChecksumType::Composite, &parts).unwrap();
        assert_eq!(got, "rBMwBw==-2");
        // Full-object over the same parts is the plain CRC32 of "123456789".
        let full = combine_parts(algo, ChecksumType::FullObject, &parts).unwrap();
        assert_eq!(full, "y/Q5Jg==");
    }

    #[test]
    fn combine_rejects_bad_input() {
        for algo in ALL {
            assert!(combine_parts(algo, ChecksumType::Composite, &[]).is_err());
            let short = vec![(vec![0u8; algo.digest_len() - 1], 10)];
            assert!(combine_parts(algo, ChecksumType::Composite, &short).is_err());
            assert!(combine_parts(algo, ChecksumType::FullObject, &short).is_err());
        }
    }

    #[test]
    fn checksum_type_rules() {
        use ChecksumAlgorithm as A;
        use ChecksumType as T;
        assert_eq!(T::for_algorithm(A::Crc64Nvme, false), Ok(T::FullObject));
        assert_eq!(T::for_algorithm(A::Crc64Nvme, true), Ok(T::FullObject));
        for a in [A::Sha1, A::Sha256] {
            assert_eq!(T::for_algorithm(a, false), Ok(T::Composite));
            let err = T::for_algorithm(a, true).unwrap_err();
            assert!(err.contains(a.as_str()), "{err}");
        }
        for a in [A::Crc32, A::Crc32c] {
            assert_eq!(T::for_algorithm(a, false), Ok(T::Composite));
            assert_eq!(T::for_algorithm(a, true), Ok(T::FullObject));
        }
        assert_eq!(T::Composite.to_sdk(), aws_sdk_s3::types::ChecksumType::Composite);
        assert_eq!(T::FullObject.to_sdk(), aws_sdk_s3::types::ChecksumType::FullObject);
    }

    #[test]
    fn parse_as_str_round_trip() {
        for algo in ALL {
            assert_eq!(ChecksumAlgorithm::parse(algo.as_str()), Some(algo));
            assert_eq!(ChecksumAlgorithm::parse(&algo.as_str().to_lowercase()), Some(algo));
            assert_eq!(algo.to_string(), algo.as_str());
            // The SDK spells them the same way.
            assert_eq!(algo.to_sdk().as_str(), algo.as_str());
            assert_eq!(algo.is_crc(), algo.crc_algorithm().is_some());
        }
        for bad in ["", "MD5", "CRC", "SHA-256", "CRC32C ", "CRC64"] {
            assert_eq!(ChecksumAlgorithm::parse(bad), None, "{bad:?}");
        }
        let lens: Vec<usize> = ALL.iter().map(|a| a.digest_len()).collect();
        assert_eq!(lens, [32, 20, 4, 4, 8]);
    }

    #[test]
    fn split_part_count_forms() {
        assert_eq!(split_part_count("y/Q5Jg==-3"), ("y/Q5Jg==", Some(3)));
        assert_eq!(split_part_count("y/Q5Jg=="), ("y/Q5Jg==", None));
        assert_eq!(split_part_count("abc-10000"), ("abc", Some(10000)));
        assert_eq!(split_part_count(""), ("", None));
        assert_eq!(split_part_count("abc-"), ("abc-", None));
        assert_eq!(split_part_count("abc-+3"), ("abc-+3", None));
        assert_eq!(split_part_count("abc-x"), ("abc-x", None));
        assert_eq!(
            split_part_count("abc-99999999999999999999999"),
            ("abc-99999999999999999999999", None)
        );
    }
}
