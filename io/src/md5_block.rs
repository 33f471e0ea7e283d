//! The MD5 block function, for one stream ([`md5_compress`]) and for up to sixteen independent
//! streams at once, one per 32-bit lane of an AVX-512 register ([`md5_compress_lanes`]).
//!
//! MD5 is a chain of 64 dependent steps per block: one stream cannot go faster than that chain
//! (about 590 MiB/s per core here), however wide the machine. Sixteen chains side by side in one
//! register cost about what one chain costs, so the parts of many objects (each part is its own
//! MD5) are hashed together for a fraction of the CPU. The caller (s3sync's lane hasher) gathers
//! the streams; this module only runs the block function over them.
//!
//! It is one of the crate's `unsafe` modules: the one call into the `avx512f` code, made only after
//! the feature was detected at run time. The kernel itself uses no pointer.

#![allow(unsafe_code)]

/// How many streams one call advances at most.
pub const MD5_LANES: usize = 16;

/// Whether this CPU runs the lane kernel (AVX-512F, detected at run time).
pub fn md5_lanes_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Advances each stream's MD5 chaining words (`words[i]`, the four words of RFC 1321) by the first
/// `blocks` 64-byte blocks of `data[i]`.
///
/// Returns `false`, changing nothing, when the CPU has no AVX-512F, when `words` and `data` differ
/// in length, hold no stream or more than [`MD5_LANES`], or when a stream has fewer than `blocks`
/// blocks.
pub fn md5_compress_lanes(words: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) -> bool {
    let Some(need) = blocks.checked_mul(64) else {
        return false;
    };
    let fits =
        words.len() == data.len() && (1..=MD5_LANES).contains(&words.len()) && data.iter().all(|d| d.len() >= need);
    if !fits || !md5_lanes_supported() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the only requirement of an `avx512f` function is that the CPU has the feature, which
    // `md5_lanes_supported` detected just above.
    unsafe {
        avx512::compress(words, data, blocks)
    };
    fits
}

/// The additive constants of the 64 steps: `floor(abs(sin(i + 1)) * 2^32)`.
pub(crate) const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// The left rotations of the 64 steps.
pub(crate) const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15,
    21,
];

/// Which message word step `i` adds.
pub(crate) const fn word_of_step(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// Runs the MD5 block function of one stream over whole blocks (`md-5`'s assembly on x86-64
/// outside MSVC).
#[cfg(all(target_arch = "x86_64", not(target_env = "msvc")))]
pub fn md5_compress(words: &mut [u32; 4], blocks: &[[u8; 64]]) {
    md5_asm::compress(words, blocks);
}

/// Runs the MD5 block function of one stream over whole blocks.
#[cfg(not(all(target_arch = "x86_64", not(target_env = "msvc"))))]
pub fn md5_compress(words: &mut [u32; 4], blocks: &[[u8; 64]]) {
    for block in blocks {
        compress_soft(words, block);
    }
}

/// The MD5 block function in plain Rust (RFC 1321), where no assembly is built, and the reference
/// the other two are tested against.
#[cfg_attr(all(target_arch = "x86_64", not(target_env = "msvc"), not(test)), allow(dead_code))]
fn compress_soft(words: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (w, b) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *words;
    for i in 0..64 {
        let f = match i / 16 {
            0 => (b & c) | (!b & d),
            1 => (b & d) | (c & !d),
            2 => b ^ c ^ d,
            _ => c ^ (b | !d),
        };
        let t = a.wrapping_add(f).wrapping_add(K[i]).wrapping_add(m[word_of_step(i)]);
        let next = b.wrapping_add(t.rotate_left(S[i]));
        (a, b, c, d) = (d, next, b, c);
    }
    for (w, x) in words.iter_mut().zip([a, b, c, d]) {
        *w = w.wrapping_add(x);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{word_of_step, K, S};
    use std::arch::x86_64::*;

    // The round functions as `vpternlogd` truth tables over (b, c, d):
    /// F = b ? c : d.
    const F: i32 = 0xca;
    /// G = d ? b : c.
    const G: i32 = 0xe4;
    /// H = b ^ c ^ d.
    const H: i32 = 0x96;
    /// I = c ^ (b | !d).
    const I: i32 = 0x39;

    /// Turns sixteen rows (one stream's block each) into sixteen columns (one message word of
    /// every stream each): 32-bit, then 64-bit interleaves within 128-bit lanes, then two rounds
    /// of 128-bit lane shuffles.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + k]: in 128-bit lane L, word 4L + k of rows 4g..4g + 3.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        let mut out = [_mm512_setzero_si512(); 16];
        for k in 0..4 {
            let va = _mm512_shuffle_i32x4::<0x88>(u[k], u[4 + k]);
            let vb = _mm512_shuffle_i32x4::<0xdd>(u[k], u[4 + k]);
            let vc = _mm512_shuffle_i32x4::<0x88>(u[8 + k], u[12 + k]);
            let vd = _mm512_shuffle_i32x4::<0xdd>(u[8 + k], u[12 + k]);
            out[k] = _mm512_shuffle_i32x4::<0x88>(va, vc);
            out[8 + k] = _mm512_shuffle_i32x4::<0xdd>(va, vc);
            out[4 + k] = _mm512_shuffle_i32x4::<0x88>(vb, vd);
            out[12 + k] = _mm512_shuffle_i32x4::<0xdd>(vb, vd);
        }
        out
    }

    /// Sixteen lanes from an array.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn vector(v: [u32; 16]) -> __m512i {
        let v = v.map(|x| x as i32);
        _mm512_setr_epi32(
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15],
        )
    }

    /// The lanes of a vector as an array.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn array(v: __m512i) -> [u32; 16] {
        let quarters = [
            _mm512_extracti32x4_epi32::<0>(v),
            _mm512_extracti32x4_epi32::<1>(v),
            _mm512_extracti32x4_epi32::<2>(v),
            _mm512_extracti32x4_epi32::<3>(v),
        ];
        let mut out = [0u32; 16];
        for (q, x) in quarters.iter().enumerate() {
            out[4 * q] = _mm_extract_epi32::<0>(*x) as u32;
            out[4 * q + 1] = _mm_extract_epi32::<1>(*x) as u32;
            out[4 * q + 2] = _mm_extract_epi32::<2>(*x) as u32;
            out[4 * q + 3] = _mm_extract_epi32::<3>(*x) as u32;
        }
        out
    }

    /// See [`super::md5_compress_lanes`], whose checks this relies on: `words.len() == data.len()`,
    /// between 1 and 16 streams, each with at least `blocks` blocks. Lanes without a stream repeat
    /// the first stream's bytes, and their result is dropped.
    #[target_feature(enable = "avx512f")]
    pub(super) fn compress(words: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) {
        let lanes = words.len();
        let mut st = [[0u32; 16]; 4];
        for (l, w) in words.iter().enumerate() {
            for (j, x) in w.iter().enumerate() {
                st[j][l] = *x;
            }
        }
        let [mut a, mut b, mut c, mut d] = [vector(st[0]), vector(st[1]), vector(st[2]), vector(st[3])];
        for blk in 0..blocks {
            let at = blk * 64;
            let mut rows = [_mm512_setzero_si512(); 16];
            for (l, row) in rows.iter_mut().enumerate() {
                let src = if l < lanes { data[l] } else { data[0] };
                let block = &src[at..at + 64];
                // SAFETY: `block` is 64 readable bytes (the indexing above checked it), exactly
                // one unaligned 512-bit load.
                *row = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            }
            let mv = transpose(rows);
            let (a0, b0, c0, d0) = (a, b, c, d);
            macro_rules! step {
                ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr) => {
                    let t = _mm512_add_epi32($a, _mm512_set1_epi32(K[$i] as i32));
                    let t = _mm512_add_epi32(t, mv[word_of_step($i)]);
                    let t = _mm512_add_epi32(t, _mm512_ternarylogic_epi32::<{ $f }>($b, $c, $d));
                    $a = _mm512_add_epi32($b, _mm512_rol_epi32::<{ S[$i] as i32 }>(t));
                };
            }
            macro_rules! four {
                ($f:expr, $i:expr) => {
                    step!($f, a, b, c, d, $i);
                    step!($f, d, a, b, c, $i + 1);
                    step!($f, c, d, a, b, $i + 2);
                    step!($f, b, c, d, a, $i + 3);
                };
            }
            four!(F, 0);
            four!(F, 4);
            four!(F, 8);
            four!(F, 12);
            four!(G, 16);
            four!(G, 20);
            four!(G, 24);
            four!(G, 28);
            four!(H, 32);
            four!(H, 36);
            four!(H, 40);
            four!(H, 44);
            four!(I, 48);
            four!(I, 52);
            four!(I, 56);
            four!(I, 60);
            a = _mm512_add_epi32(a, a0);
            b = _mm512_add_epi32(b, b0);
            c = _mm512_add_epi32(c, c0);
            d = _mm512_add_epi32(d, d0);
        }
        let out = [array(a), array(b), array(c), array(d)];
        for (l, w) in words.iter_mut().enumerate() {
            for (j, x) in w.iter_mut().enumerate() {
                *x = out[j][l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MD5 block function, one stream, straight from RFC 1321.
    fn reference(words: &mut [u32; 4], block: &[u8]) {
        const S: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
        let m: Vec<u32> = block
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = *words;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((b & d) | (c & !d), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let k = ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32;
            let t = a.wrapping_add(f).wrapping_add(k).wrapping_add(m[g]);
            (a, b, c, d) = (d, b.wrapping_add(t.rotate_left(S[(i / 16) * 4 + i % 4])), b, c);
        }
        for (w, x) in words.iter_mut().zip([a, b, c, d]) {
            *w = w.wrapping_add(x);
        }
    }

    fn stream(seed: usize, blocks: usize) -> Vec<u8> {
        (0..blocks * 64).map(|i| ((i * 7 + seed * 131) % 253) as u8).collect()
    }

    #[test]
    fn every_lane_count_matches_the_block_function_of_one_stream() {
        if !md5_lanes_supported() {
            eprintln!("no AVX-512F here: the lane kernel is not run");
            assert!(!md5_compress_lanes(&mut [[0; 4]], &[&[0u8; 64]], 1));
            return;
        }
        for lanes in [1, 2, 7, 15, 16] {
            let data: Vec<Vec<u8>> = (0..lanes).map(|s| stream(s, 5)).collect();
            let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
            let start: Vec<[u32; 4]> = (0..lanes as u32).map(|s| [s, s * 3, s ^ 0x55, !s]).collect();
            let mut words = start.clone();
            assert!(md5_compress_lanes(&mut words, &slices, 5));
            for (l, w) in words.iter().enumerate() {
                let mut want = start[l];
                data[l].chunks_exact(64).for_each(|b| reference(&mut want, b));
                assert_eq!(*w, want, "lane {l} of {lanes}");
            }
        }
    }

    #[test]
    fn the_one_stream_functions_are_the_block_function() {
        let data = stream(3, 9);
        let (blocks, _) = data.as_chunks::<64>();
        let (mut want, mut soft, mut fast) = ([1u32, 2, 3, 4], [1u32, 2, 3, 4], [1u32, 2, 3, 4]);
        blocks.iter().for_each(|b| reference(&mut want, b));
        blocks.iter().for_each(|b| compress_soft(&mut soft, b));
        md5_compress(&mut fast, blocks);
        assert_eq!((soft, fast), (want, want));
    }

    #[test]
    fn inputs_that_do_not_fit_change_nothing() {
        let mut words = [[1u32, 2, 3, 4]; 2];
        let short = [0u8; 64];
        let long = [0u8; 128];
        assert!(!md5_compress_lanes(&mut words, &[&long, &short], 2));
        assert!(!md5_compress_lanes(&mut words, &[&long], 1));
        assert!(!md5_compress_lanes(&mut [], &[], 0));
        let many = vec![[0u32; 4]; 17];
        let bufs: Vec<&[u8]> = vec![&long; 17];
        assert!(!md5_compress_lanes(&mut many.clone(), &bufs, 1));
        assert_eq!(words, [[1, 2, 3, 4]; 2]);
    }
}
