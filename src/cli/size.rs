//! Human readable byte size parsing for command line options.
//!
//! Accepted forms are a plain decimal integer (`8388608`) or an integer
//! immediately followed by one of the suffixes `KB`, `KiB`, `MB`, `MiB`, `GB`,
//! `GiB`, `TB`, `TiB` (`8MiB`). Decimal suffixes (`KB`, `MB`, ...) are powers of
//! 1000, binary suffixes (`KiB`, `MiB`, ...) are powers of 1024. Suffixes are
//! case-sensitive and no whitespace is allowed between the number and the
//! suffix.

/// One kibibyte (1024 bytes).
pub const KIB: u64 = 1024;
/// One mebibyte (1024 KiB).
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte (1024 MiB).
pub const GIB: u64 = 1024 * MIB;
/// One tebibyte (1024 GiB).
pub const TIB: u64 = 1024 * GIB;

/// Smallest accepted `--multipart-threshold` / `--multipart-chunksize` (5MiB).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest accepted `--multipart-threshold` / `--multipart-chunksize` (5GiB).
pub const MAX_PART_SIZE: u64 = 5 * GIB;

/// Smallest accepted `--rate-limit-bandwidth` (1MiB per second).
pub const MIN_BANDWIDTH: u64 = MIB;
/// Largest accepted `--rate-limit-bandwidth` (100GiB per second).
pub const MAX_BANDWIDTH: u64 = 100 * GIB;

/// Suffix table: (suffix, multiplier).
const SUFFIXES: [(&str, u64); 8] = [
    ("KB", 1_000),
    ("KiB", KIB),
    ("MB", 1_000_000),
    ("MiB", MIB),
    ("GB", 1_000_000_000),
    ("GiB", GIB),
    ("TB", 1_000_000_000_000),
    ("TiB", TIB),
];

const EXPECTED_FORMAT: &str = "expected an integer optionally followed by one of \
KB, KiB, MB, MiB, GB, GiB, TB, TiB (e.g. 8MiB)";

/// Parses a human readable size such as `8MiB`, `100MB` or `1048576` into a
/// number of bytes.
///
/// Returns a descriptive error message for malformed input, unknown suffixes
/// and values that do not fit in a `u64`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);

    if digits.is_empty() {
        return Err(format!("invalid size '{s}': {EXPECTED_FORMAT}"));
    }

    let multiplier = if suffix.is_empty() {
        1
    } else {
        SUFFIXES
            .iter()
            .find(|(name, _)| *name == suffix)
            .map(|(_, multiplier)| *multiplier)
            .ok_or_else(|| format!("invalid size '{s}': unknown suffix '{suffix}', {EXPECTED_FORMAT}"))?
    };

    let too_large = || format!("invalid size '{s}': value is too large (maximum {} bytes)", u64::MAX);
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(multiplier).ok_or_else(too_large)
}

/// Parses a multipart part size (`--multipart-threshold`,
/// `--multipart-chunksize`) and checks that it is between 5MiB and 5GiB
/// inclusive.
pub fn parse_part_size(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if size < MIN_PART_SIZE {
        return Err(format!(
            "invalid part size '{s}': must be greater than or equal to 5MiB"
        ));
    }
    if size > MAX_PART_SIZE {
        return Err(format!(
            "invalid part size '{s}': must be smaller than or equal to 5GiB"
        ));
    }
    Ok(size)
}

/// Parses a bandwidth limit (`--rate-limit-bandwidth`, bytes per second) and
/// checks that it is between 1MiB and 100GiB inclusive.
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if size < MIN_BANDWIDTH {
        return Err(format!(
            "invalid bandwidth '{s}': must be greater than or equal to 1MiB"
        ));
    }
    if size > MAX_BANDWIDTH {
        return Err(format!(
            "invalid bandwidth '{s}': must be smaller than or equal to 100GiB"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_integers() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("8388608"), Ok(8 * MIB));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn every_suffix() {
        assert_eq!(parse_size("1KB"), Ok(1_000));
        assert_eq!(parse_size("1KiB"), Ok(1_024));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("5GiB"), Ok(5 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("4TB"), Ok(4_000_000_000_000));
        assert_eq!(parse_size("1TiB"), Ok(1024u64.pow(4)));
        assert_eq!(parse_size("0MiB"), Ok(0));
        assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
    }

    #[test]
    fn bad_input() {
        for bad in [
            "", "MiB", "-1", "+1", "1.5MiB", "8 MiB", " 8MiB", "8MiB ", "8mib", "8MIB", "8kb", "8K", "8B", "8Mi",
            "8MiBB", "abc", "8ZiB", "0x10", "1_000",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
        let err = parse_size("8XB").unwrap_err();
        assert!(err.contains("unknown suffix 'XB'"), "{err}");
        assert!(err.contains("KiB"), "{err}");
    }

    #[test]
    fn overflow() {
        let err = parse_size("18446744073709551616").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_size("99999999999999999999999999").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_size("16777216TiB").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert_eq!(parse_size("16777215TiB"), Ok(16_777_215 * TIB));
    }

    #[test]
    fn part_size_bounds() {
        assert_eq!(parse_part_size("5MiB"), Ok(MIN_PART_SIZE));
        assert_eq!(parse_part_size("5242880"), Ok(MIN_PART_SIZE));
        assert_eq!(parse_part_size("5GiB"), Ok(MAX_PART_SIZE));
        assert_eq!(parse_part_size("5368709120"), Ok(MAX_PART_SIZE));
        assert_eq!(parse_part_size("8MiB"), Ok(8 * MIB));

        let err = parse_part_size("5242879").unwrap_err();
        assert!(err.contains("greater than or equal to 5MiB"), "{err}");
        let err = parse_part_size("5MB").unwrap_err();
        assert!(err.contains("greater than or equal to 5MiB"), "{err}");
        let err = parse_part_size("5368709121").unwrap_err();
        assert!(err.contains("smaller than or equal to 5GiB"), "{err}");
        let err = parse_part_size("1TiB").unwrap_err();
        assert!(err.contains("smaller than or equal to 5GiB"), "{err}");
        assert!(parse_part_size("8mib").unwrap_err().contains("invalid size"));
    }

    #[test]
    fn bandwidth_bounds() {
        assert_eq!(parse_bandwidth("1MiB"), Ok(MIB));
        assert_eq!(parse_bandwidth("100GiB"), Ok(100 * GIB));
        assert!(parse_bandwidth("1048575").is_err());
        assert!(parse_bandwidth("107374182401").is_err());
    }
}
