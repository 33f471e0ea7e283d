//! Command line definition of `s3sync`.
//!
//! The flags, value names, environment variables, defaults and help headings
//! mirror the original s3sync 1.62.4 command line, plus options of ours (`--io-pool-size`,
//! `--no-fsync`, `--max-delete`, the sharding options, `--json-summary`).
//! Every option of the reference is implemented.

use crate::cli::size;
use chrono::{DateTime, Utc};
use clap::builder::{NonEmptyStringValueParser, PossibleValuesParser};
use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use regex::Regex;

// The defaults of the options, shared with `Config::default` (one place for each value).
pub use crate::config::defaults::{
    DEFAULT_AWS_MAX_ATTEMPTS, DEFAULT_FORCE_RETRY_COUNT, DEFAULT_FORCE_RETRY_INTERVAL_MILLISECONDS,
    DEFAULT_INITIAL_BACKOFF_MILLISECONDS, DEFAULT_LUA_CALLBACK_TIMEOUT_MILLISECONDS, DEFAULT_LUA_VM_MEMORY_LIMIT,
    DEFAULT_MAX_KEYS, DEFAULT_MAX_PARALLEL_LISTINGS, DEFAULT_MAX_PARALLEL_LISTING_MAX_DEPTH,
    DEFAULT_MAX_PARALLEL_UPLOADS, DEFAULT_OBJECT_LISTING_QUEUE_SIZE, DEFAULT_WORKER_SIZE,
};
/// Default `--multipart-threshold` (as written on the command line; [`crate::config::defaults::DEFAULT_MULTIPART_SIZE`]).
pub const DEFAULT_MULTIPART_THRESHOLD: &str = "8MiB";
/// Default `--multipart-chunksize` (as written on the command line; [`crate::config::defaults::DEFAULT_MULTIPART_SIZE`]).
pub const DEFAULT_MULTIPART_CHUNKSIZE: &str = "8MiB";
/// Default `--lua-vm-memory-limit` (as written on the command line; [`DEFAULT_LUA_VM_MEMORY_LIMIT`]).
pub const DEFAULT_LUA_VM_MEMORY_LIMIT_STR: &str = "64MiB";

/// Values accepted by `--storage-class`.
pub const STORAGE_CLASSES: [&str; 9] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];
/// Values accepted by `--sse`.
pub const SSE_ALGORITHMS: [&str; 3] = ["AES256", "aws:kms", "aws:kms:dsse"];
/// Values accepted by `--source-sse-c` / `--target-sse-c`.
pub const SSE_C_ALGORITHMS: [&str; 1] = ["AES256"];
/// Values accepted by `--acl`.
pub const CANNED_ACLS: [&str; 7] = [
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];
/// Values accepted by the additional checksum options.
pub const CHECKSUM_ALGORITHMS: [&str; 5] = ["SHA256", "SHA1", "CRC32", "CRC32C", "CRC64NVME"];

/// Parses an RFC3339 datetime (e.g. `2023-02-19T12:00:00Z`) into UTC.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|dt| dt.with_timezone(&Utc))
        .map_err(|e| format!("invalid RFC3339 datetime '{s}': {e} (example: 2023-02-19T12:00:00Z)"))
}

/// Compiles a regular expression given on the command line.
pub fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| format!("invalid regular expression: {e}"))
}

/// Command line arguments of `s3sync`.
#[derive(Parser, Clone)]
#[command(
    name = "s3sync",
    version,
    about = "Reliable, very fast synchronization tool for Amazon S3 and S3-compatible storage"
)]
pub struct CliArgs {
    /// s3://<BUCKET_NAME>[/prefix] or local path
    #[arg(env = "SOURCE")]
    pub source: Option<String>,

    /// s3://<BUCKET_NAME>[/prefix] or local path
    #[arg(env = "TARGET")]
    pub target: Option<String>,

    /// Increase logging verbosity
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Decrease logging verbosity
    #[arg(short = 'q', long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,

    // ----------------------------------------------------------------- General
    /// A simulation mode. No actions will be performed
    #[arg(long, env = "DRY_RUN", help_heading = "General")]
    pub dry_run: bool,

    /// Don't show the progress bar
    #[arg(long, env = "SHOW_NO_PROGRESS", help_heading = "General")]
    pub show_no_progress: bool,

    /// Use server-side copy (both source and target must be S3).
    #[arg(
        long,
        env = "SERVER_SIDE_COPY",
        help_heading = "General",
        help = "Use server-side copy. This option is only available both source and target are S3 storage.\n\
                It cannot work with between different object storages or regions."
    )]
    pub server_side_copy: bool,

    // ------------------------------------------------------- AWS Configuration
    /// Location of the file that the AWS CLI uses to store configuration profiles
    #[arg(
        long,
        env = "AWS_CONFIG_FILE",
        value_name = "FILE",
        help_heading = "AWS Configuration"
    )]
    pub aws_config_file: Option<String>,

    /// Location of the file that the AWS CLI uses to store access keys
    #[arg(
        long,
        env = "AWS_SHARED_CREDENTIALS_FILE",
        value_name = "FILE",
        help_heading = "AWS Configuration"
    )]
    pub aws_shared_credentials_file: Option<String>,

    /// Source AWS CLI profile
    #[arg(
        long,
        env = "SOURCE_PROFILE",
        conflicts_with_all = ["source_access_key", "source_secret_access_key", "source_session_token"],
        help_heading = "AWS Configuration"
    )]
    pub source_profile: Option<String>,

    /// Source access key
    #[arg(
        long,
        env = "SOURCE_ACCESS_KEY",
        requires = "source_secret_access_key",
        help_heading = "AWS Configuration"
    )]
    pub source_access_key: Option<String>,

    /// Source secret access key
    #[arg(
        long,
        env = "SOURCE_SECRET_ACCESS_KEY",
        requires = "source_access_key",
        help_heading = "AWS Configuration"
    )]
    pub source_secret_access_key: Option<String>,

    /// Source session token
    #[arg(
        long,
        env = "SOURCE_SESSION_TOKEN",
        requires = "source_access_key",
        help_heading = "AWS Configuration"
    )]
    pub source_session_token: Option<String>,

    /// Target AWS CLI profile
    #[arg(
        long,
        env = "TARGET_PROFILE",
        conflicts_with_all = ["target_access_key", "target_secret_access_key", "target_session_token"],
        help_heading = "AWS Configuration"
    )]
    pub target_profile: Option<String>,

    /// Target access key
    #[arg(
        long,
        env = "TARGET_ACCESS_KEY",
        requires = "target_secret_access_key",
        help_heading = "AWS Configuration"
    )]
    pub target_access_key: Option<String>,

    /// Target secret access key
    #[arg(
        long,
        env = "TARGET_SECRET_ACCESS_KEY",
        requires = "target_access_key",
        help_heading = "AWS Configuration"
    )]
    pub target_secret_access_key: Option<String>,

    /// Target session token
    #[arg(
        long,
        env = "TARGET_SESSION_TOKEN",
        requires = "target_access_key",
        help_heading = "AWS Configuration"
    )]
    pub target_session_token: Option<String>,

    // ---------------------------------------------------------- Source Options
    /// Source region
    #[arg(long, env = "SOURCE_REGION", value_parser = NonEmptyStringValueParser::new(), help_heading = "Source Options")]
    pub source_region: Option<String>,

    /// Source endpoint url
    #[arg(long, env = "SOURCE_ENDPOINT_URL", help_heading = "Source Options")]
    pub source_endpoint_url: Option<String>,

    /// Use Amazon S3 Transfer Acceleration for the source bucket
    #[arg(long, env = "SOURCE_ACCELERATE", help_heading = "Source Options")]
    pub source_accelerate: bool,

    /// Use request payer for the source bucket
    #[arg(long, env = "SOURCE_REQUEST_PAYER", help_heading = "Source Options")]
    pub source_request_payer: bool,

    /// Do not sign requests for the source bucket (anonymous access for public buckets)
    #[arg(
        long,
        env = "SOURCE_NO_SIGN_REQUEST",
        conflicts_with_all = ["source_profile", "source_access_key"],
        help_heading = "Source Options"
    )]
    pub source_no_sign_request: bool,

    /// Force path-style addressing for source endpoint
    #[arg(long, env = "SOURCE_FORCE_PATH_STYLE", help_heading = "Source Options")]
    pub source_force_path_style: bool,

    // ---------------------------------------------------------- Target Options
    /// Target region
    #[arg(long, env = "TARGET_REGION", value_parser = NonEmptyStringValueParser::new(), help_heading = "Target Options")]
    pub target_region: Option<String>,

    /// Target endpoint url
    #[arg(long, env = "TARGET_ENDPOINT_URL", help_heading = "Target Options")]
    pub target_endpoint_url: Option<String>,

    /// Use Amazon S3 Transfer Acceleration for the target bucket
    #[arg(long, env = "TARGET_ACCELERATE", help_heading = "Target Options")]
    pub target_accelerate: bool,

    /// Use request payer for the target bucket
    #[arg(long, env = "TARGET_REQUEST_PAYER", help_heading = "Target Options")]
    pub target_request_payer: bool,

    /// Force path-style addressing for target endpoint
    #[arg(long, env = "TARGET_FORCE_PATH_STYLE", help_heading = "Target Options")]
    pub target_force_path_style: bool,

    /// Type of storage to use for the target object.
    #[arg(
        long,
        env = "STORAGE_CLASS",
        value_parser = PossibleValuesParser::new(STORAGE_CLASSES),
        hide_possible_values = true,
        help_heading = "Target Options",
        help = "Type of storage to use for the target object.\n\
                Valid choices: STANDARD | REDUCED_REDUNDANCY | STANDARD_IA | ONEZONE_IA | INTELLIGENT_TIERING | GLACIER |\n               \
                DEEP_ARCHIVE | GLACIER_IR | EXPRESS_ONEZONE"
    )]
    pub storage_class: Option<String>,

    // --------------------------------------------------------------- Filtering
    /// Sync only objects older than given time (RFC3339 datetime).
    #[arg(
        long,
        env = "FILTER_MTIME_BEFORE",
        value_parser = parse_rfc3339,
        help_heading = "Filtering",
        help = "Sync only objects older than given time (RFC3339 datetime).\n\
                Example: 2023-02-19T12:00:00Z"
    )]
    pub filter_mtime_before: Option<DateTime<Utc>>,

    /// Sync only objects newer than OR EQUAL TO given time (RFC3339 datetime).
    #[arg(
        long,
        env = "FILTER_MTIME_AFTER",
        value_parser = parse_rfc3339,
        help_heading = "Filtering",
        help = "Sync only objects newer than OR EQUAL TO given time (RFC3339 datetime).\n\
                Example: 2023-02-19T12:00:00Z"
    )]
    pub filter_mtime_after: Option<DateTime<Utc>>,

    /// Sync only objects smaller than given size (bytes).
    #[arg(
        long,
        env = "FILTER_SMALLER_SIZE",
        value_parser = size::parse_size,
        help_heading = "Filtering",
        help = "Sync only objects smaller than given size.\n\
                Allow suffixes: KB, KiB, MB, MiB, GB, GiB, TB, TiB"
    )]
    pub filter_smaller_size: Option<u64>,

    /// Sync only objects larger than OR EQUAL TO given size (bytes).
    #[arg(
        long,
        env = "FILTER_LARGER_SIZE",
        value_parser = size::parse_size,
        help_heading = "Filtering",
        help = "Sync only objects larger than OR EQUAL TO given size.\n\
                Allow suffixes: KB, KiB, MB, MiB, GB, GiB, TB, TiB"
    )]
    pub filter_larger_size: Option<u64>,

    /// Sync only objects that match a given regular expression
    #[arg(long, env = "FILTER_INCLUDE_REGEX", value_parser = parse_regex, help_heading = "Filtering")]
    pub filter_include_regex: Option<Regex>,

    /// Do not sync objects that match a given regular expression
    #[arg(long, env = "FILTER_EXCLUDE_REGEX", value_parser = parse_regex, help_heading = "Filtering")]
    pub filter_exclude_regex: Option<Regex>,

    /// Sync only objects that have Content-Type matching a given regular expression.
    #[arg(
        long,
        env = "FILTER_INCLUDE_CONTENT_TYPE_REGEX",
        value_parser = parse_regex,
        help_heading = "Filtering",
        help = "Sync only objects that have Content-Type matching a given regular expression.\n\
                If the source is local storage, Content-Type is guessed by the file extension,\n\
                Unless --no-guess-mime-type is specified.\n\
                It may take an extra API call to get Content-Type of the object.\n"
    )]
    pub filter_include_content_type_regex: Option<Regex>,

    /// Do not sync objects that have Content-Type matching a given regular expression.
    #[arg(
        long,
        env = "FILTER_EXCLUDE_CONTENT_TYPE_REGEX",
        value_parser = parse_regex,
        help_heading = "Filtering",
        help = "Do not sync objects that have Content-Type matching a given regular expression.\n\
                If the source is local storage, Content-Type is guessed by the file extension,\n\
                Unless --no-guess-mime-type is specified.\n\
                It may take an extra API call to get Content-Type of the object.\n"
    )]
    pub filter_exclude_content_type_regex: Option<Regex>,

    /// Sync only objects that have metadata matching a given regular expression.
    #[arg(
        long,
        env = "FILTER_INCLUDE_METADATA_REGEX",
        value_parser = parse_regex,
        help_heading = "Filtering",
        help = "Sync only objects that have metadata matching a given regular expression.\n\
                Keys(lowercase) must be sorted in alphabetical order, and comma separated.\n\
                This filter is applied after all other filters(except tag filters).\n\
                It may take an extra API call to get metadata of the object.\n\
                \n\
                Example: \"key1=(value1|value2),key2=value2\""
    )]
    pub filter_include_metadata_regex: Option<Regex>,

    /// Do not sync objects that have metadata matching a given regular expression.
    #[arg(
        long,
        env = "FILTER_EXCLUDE_METADATA_REGEX",
        value_parser = parse_regex,
        help_heading = "Filtering",
        help = "Do not sync objects that have metadata matching a given regular expression.\n\
                Keys(lowercase) must be sorted in alphabetical order, and comma separated.\n\
                This filter is applied after all other filters(except tag filters).\n\
                It may take an extra API call to get metadata of the object.\n\
                \n\
                Example: \"key1=(value1|value2),key2=value2\""
    )]
    pub filter_exclude_metadata_regex: Option<Regex>,

    /// Sync only objects that have tag matching a given regular expression.
    #[arg(
        long,
        env = "FILTER_INCLUDE_TAG_REGEX",
        value_parser = parse_regex,
        help_heading = "Filtering",
        help = "Sync only objects that have tag matching a given regular expression.\n\
                Keys must be sorted in alphabetical order, and '&' separated.\n\
                This filter is applied after all other filters.\n\
                It takes an extra API call to get tags of the object.\n\
                \n\
                Example: \"key1=(value1|value2)&key2=value2\""
    )]
    pub filter_include_tag_regex: Option<Regex>,

    /// Do not sync objects that have tag matching a given regular expression.
    #[arg(
        long,
        env = "FILTER_EXCLUDE_TAG_REGEX",
        value_parser = parse_regex,
        help_heading = "Filtering",
        help = "Do not sync objects that have tag matching a given regular expression.\n\
                Keys must be sorted in alphabetical order, and '&' separated.\n\
                This filter is applied after all other filters.\n\
                It takes an extra API call to get tags of the object.\n\
                \n\
                Example: \"key1=(value1|value2)&key2=value2\""
    )]
    pub filter_exclude_tag_regex: Option<Regex>,

    // --------------------------------------------------------- Update Checking
    /// Do not update checking(ListObjectsV2) for modification in the target storage
    #[arg(
        long,
        env = "REMOVE_MODIFIED_FILTER",
        conflicts_with_all = ["enable_versioning"],
        help_heading = "Update Checking"
    )]
    pub remove_modified_filter: bool,

    /// Use object size for update checking
    #[arg(
        long,
        env = "CHECK_SIZE",
        conflicts_with_all = ["enable_versioning", "check_etag", "check_mtime_and_etag", "check_mtime_and_additional_checksum"],
        help_heading = "Update Checking"
    )]
    pub check_size: bool,

    /// Use etag for update checking
    #[arg(
        long,
        env = "CHECK_ETAG",
        conflicts_with_all = ["enable_versioning", "check_size", "check_mtime_and_etag", "check_mtime_and_additional_checksum", "source_sse_c_key", "target_sse_c_key"],
        help_heading = "Update Checking"
    )]
    pub check_etag: bool,

    /// Use the modification time and ETag for update checking.
    #[arg(
        long,
        env = "CHECK_MTIME_AND_ETAG",
        conflicts_with_all = ["enable_versioning", "remove_modified_filter", "check_size", "check_etag", "source_sse_c_key", "target_sse_c_key"],
        help_heading = "Update Checking",
        help = "Use the modification time and ETag for update checking.\n\
                If the source modification date is newer, check the ETag.\n"
    )]
    pub check_mtime_and_etag: bool,

    /// Use additional checksum for update checking
    #[arg(
        long,
        env = "CHECK_ADDITIONAL_CHECKSUM",
        value_parser = PossibleValuesParser::new(CHECKSUM_ALGORITHMS),
        hide_possible_values = true,
        conflicts_with_all = ["enable_versioning", "check_size", "check_etag", "check_mtime_and_etag", "check_mtime_and_additional_checksum"],
        help_heading = "Update Checking"
    )]
    pub check_additional_checksum: Option<String>,

    /// Use the modification time and additional checksum for update checking.
    #[arg(
        long,
        env = "CHECK_MTIME_AND_ADDITIONAL_CHECKSUM",
        value_parser = PossibleValuesParser::new(CHECKSUM_ALGORITHMS),
        hide_possible_values = true,
        conflicts_with_all = ["enable_versioning", "remove_modified_filter", "check_size", "check_etag", "check_mtime_and_etag", "check_additional_checksum"],
        help_heading = "Update Checking",
        help = "Use the modification time and additional checksum for update checking.\n\
                If the source modification date is newer, check the additional checksum.\n"
    )]
    pub check_mtime_and_additional_checksum: Option<String>,

    // ------------------------------------------------------------ Verification
    /// Additional checksum algorithm for upload
    #[arg(
        long,
        env = "ADDITIONAL_CHECKSUM_ALGORITHM",
        value_parser = PossibleValuesParser::new(CHECKSUM_ALGORITHMS),
        hide_possible_values = true,
        help_heading = "Verification"
    )]
    pub additional_checksum_algorithm: Option<String>,

    /// Use full object checksum for verification.
    #[arg(
        long,
        env = "FULL_OBJECT_CHECKSUM",
        requires_if("true", "additional_checksum_algorithm"),
        help_heading = "Verification",
        help = "Use full object checksum for verification. CRC64NVME automatically use full object checksum.\n\
                This option cannot be used with SHA1/SHA256 additional checksum."
    )]
    pub full_object_checksum: bool,

    /// Enable additional checksum for download
    #[arg(long, env = "ENABLE_ADDITIONAL_CHECKSUM", help_heading = "Verification")]
    pub enable_additional_checksum: bool,

    /// Disable multipart upload verification with ETag/additional checksum
    #[arg(long, env = "DISABLE_MULTIPART_VERIFY", help_heading = "Verification")]
    pub disable_multipart_verify: bool,

    /// Disable etag verification
    #[arg(long, env = "DISABLE_ETAG_VERIFY", help_heading = "Verification")]
    pub disable_etag_verify: bool,

    /// Disable additional checksum verification, but still send the additional checksum on upload.
    #[arg(
        long,
        env = "DISABLE_ADDITIONAL_CHECKSUM_VERIFY",
        help_heading = "Verification",
        help = "Disable additional checksum verification \n\
                But use additional checksum for upload (The hash value is stored in the target object)."
    )]
    pub disable_additional_checksum_verify: bool,

    // ------------------------------------------------------------- Performance
    /// Number of workers for synchronization. The default is 64 (the original s3sync: 16): object stores
    /// answer small requests with tens of milliseconds of latency, so objects/s grow with the number in
    /// flight, while memory stays bounded by the chunk pool, not by the number of workers.
    #[arg(
        long,
        env = "WORKER_SIZE",
        default_value_t = DEFAULT_WORKER_SIZE,
        value_parser = clap::value_parser!(u16).range(1..),
        help_heading = "Performance"
    )]
    pub worker_size: u16,

    /// Maximum number of parallel multipart uploads/downloads
    #[arg(
        long,
        env = "MAX_PARALLEL_UPLOADS",
        default_value_t = DEFAULT_MAX_PARALLEL_UPLOADS,
        value_parser = clap::value_parser!(u16).range(1..),
        help_heading = "Performance"
    )]
    pub max_parallel_uploads: u16,

    /// Rate limit objects per second
    #[arg(
        long,
        env = "RATE_LIMIT_OBJECTS",
        value_parser = clap::value_parser!(u32).range(10..),
        help_heading = "Performance"
    )]
    pub rate_limit_objects: Option<u32>,

    /// Rate limit bandwidth(bytes per sec). Allow suffixes: MB, MiB, GB, GiB
    #[arg(
        long,
        env = "RATE_LIMIT_BANDWIDTH",
        value_parser = size::parse_bandwidth,
        help_heading = "Performance"
    )]
    pub rate_limit_bandwidth: Option<u64>,

    /// Memory budget for all transfer buffers (the chunk pool), in bytes.
    #[arg(
        long,
        env = "IO_POOL_SIZE",
        value_name = "SIZE",
        value_parser = size::parse_size,
        help_heading = "Performance",
        help = "Memory budget for all transfer buffers (the chunk pool). Allow suffixes: KB, KiB, MB, MiB, GB, GiB, TB, TiB.\n\
                Default: --max-parallel-uploads × --multipart-chunksize, at most 32MiB (downloads: one part)"
    )]
    pub io_pool_size: Option<u64>,

    /// Do not fsync downloaded files (ours; not in the original).
    #[arg(
        long,
        env = "NO_FSYNC",
        help_heading = "Performance",
        help = "Do not fsync downloaded files and their directories. A file still appears under its\n\
                name only complete and verified (atomic rename), but a power loss may lose files\n\
                written shortly before it"
    )]
    pub no_fsync: bool,

    /// When local files are read with O_DIRECT (ours; not in the original).
    #[arg(
        long,
        env = "DIRECT_IO",
        default_value = "auto",
        value_parser = PossibleValuesParser::new(["auto", "always", "never"]),
        help_heading = "Performance",
        help = "Read local files being uploaded (or hashed to compare) with O_DIRECT, from the disk straight into the transfer\n\
                buffers, bypassing the page cache: auto (files of 64MiB or more that are not cached),\n\
                always, never. Linux file systems that support it; others read through the cache"
    )]
    pub direct_io: String,

    /// Maximum number of parallel listings of objects.
    #[arg(
        long,
        env = "MAX_PARALLEL_LISTINGS",
        default_value_t = DEFAULT_MAX_PARALLEL_LISTINGS,
        value_parser = clap::value_parser!(u16).range(1..),
        help_heading = "Performance"
    )]
    pub max_parallel_listings: u16,

    /// Maximum depth (sub directory/prefix) of parallel listings.
    #[arg(
        long,
        env = "MAX_PARALLEL_LISTING_MAX_DEPTH",
        default_value_t = DEFAULT_MAX_PARALLEL_LISTING_MAX_DEPTH,
        value_parser = clap::value_parser!(u16).range(1..),
        help_heading = "Performance"
    )]
    pub max_parallel_listing_max_depth: u16,

    /// Queue size for object listings
    #[arg(
        long,
        env = "OBJECT_LISTING_QUEUE_SIZE",
        default_value_t = DEFAULT_OBJECT_LISTING_QUEUE_SIZE,
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Performance"
    )]
    pub object_listing_queue_size: u32,

    /// Allow parallel listings in express one zone storage class.
    #[arg(
        long,
        env = "ALLOW_PARALLEL_LISTINGS_IN_EXPRESS_ONE_ZONE",
        help_heading = "Performance",
        help = "Allow parallel listings in express one zone storage class.\n\
                It may include multipart upload in progress objects in the listing result."
    )]
    pub allow_parallel_listings_in_express_one_zone: bool,

    // ------------------------------------------------------ Multipart Settings
    /// Object size threshold (bytes) that s3sync uses for multipart upload.
    #[arg(
        long,
        env = "MULTIPART_THRESHOLD",
        default_value = DEFAULT_MULTIPART_THRESHOLD,
        value_parser = size::parse_part_size,
        conflicts_with_all = ["auto_chunksize"],
        help_heading = "Multipart Settings",
        help = "Object size threshold that s3sync uses for multipart upload\n\
                Allow suffixes: MB, MiB, GB, GiB.\n\
                The larger the size, the larger the memory usage."
    )]
    pub multipart_threshold: u64,

    /// Chunk size (bytes) that s3sync uses for multipart upload of individual files.
    #[arg(
        long,
        env = "MULTIPART_CHUNKSIZE",
        default_value = DEFAULT_MULTIPART_CHUNKSIZE,
        value_parser = size::parse_part_size,
        conflicts_with_all = ["auto_chunksize"],
        help_heading = "Multipart Settings",
        help = "Chunk size that s3sync uses for multipart upload of individual files\n\
                Allow suffixes: MB, MiB, GB, GiB.\n\
                The larger the size, the larger the memory usage."
    )]
    pub multipart_chunksize: u64,

    /// Automatically adjusts a chunk size to match the source or target.
    #[arg(
        long,
        env = "AUTO_CHUNKSIZE",
        conflicts_with_all = ["multipart_threshold", "multipart_chunksize"],
        help_heading = "Multipart Settings",
        help = "Automatically adjusts a chunk size to match the source or target.\n\
                It takes extra HEAD requests(1 API call per part)."
    )]
    pub auto_chunksize: bool,

    // -------------------------------------------------------- Metadata/Headers
    /// Cache-Control HTTP header to set on the target object
    #[arg(long, env = "CACHE_CONTROL", help_heading = "Metadata/Headers")]
    pub cache_control: Option<String>,

    /// Content-Disposition HTTP header to set on the target object
    #[arg(long, env = "CONTENT_DISPOSITION", help_heading = "Metadata/Headers")]
    pub content_disposition: Option<String>,

    /// Content-Encoding HTTP header to set on the target object
    #[arg(long, env = "CONTENT_ENCODING", help_heading = "Metadata/Headers")]
    pub content_encoding: Option<String>,

    /// Content-Language HTTP header to set on the target object
    #[arg(long, env = "CONTENT_LANGUAGE", help_heading = "Metadata/Headers")]
    pub content_language: Option<String>,

    /// Content-Type HTTP header to set on the target object
    #[arg(long, env = "CONTENT_TYPE", help_heading = "Metadata/Headers")]
    pub content_type: Option<String>,

    /// Expires HTTP header to set on the target object (RFC3339 datetime).
    #[arg(
        long,
        env = "EXPIRES",
        value_parser = parse_rfc3339,
        help_heading = "Metadata/Headers",
        help = "Expires HTTP header to set on the target object(RFC3339 datetime)\n\
                Example: 2023-02-19T12:00:00Z"
    )]
    pub expires: Option<DateTime<Utc>>,

    /// Metadata to set on the target object (`key1=value1,key2=value2`).
    #[arg(
        long,
        env = "METADATA",
        help_heading = "Metadata/Headers",
        help = "Metadata to set on the target object\n\
                Example: key1=value1,key2=value2"
    )]
    pub metadata: Option<String>,

    /// x-amz-website-redirect-location header to set on the target object
    #[arg(long, env = "WEBSITE_REDIRECT", help_heading = "Metadata/Headers")]
    pub website_redirect: Option<String>,

    /// Do not sync system metadata.
    #[arg(
        long,
        env = "NO_SYNC_SYSTEM_METADATA",
        help_heading = "Metadata/Headers",
        help = "Do not sync system metadata\n\
                System metadata: content-disposition, content-encoding, content-language, content-type,\n                 \
                cache-control, expires, website-redirect"
    )]
    pub no_sync_system_metadata: bool,

    /// Do not sync user-defined metadata
    #[arg(long, env = "NO_SYNC_USER_DEFINED_METADATA", help_heading = "Metadata/Headers")]
    pub no_sync_user_defined_metadata: bool,

    // ----------------------------------------------------------------- Tagging
    /// Tagging to set on the target object (`key1=value1&key2=value2`).
    #[arg(
        long,
        env = "TAGGING",
        conflicts_with_all = ["disable_tagging", "sync_latest_tagging"],
        help_heading = "Tagging",
        help = "Tagging to set on the target object.\n\
                Key/value must be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.\n\
                \n\
                Example: key1=value1&key2=value2"
    )]
    pub tagging: Option<String>,

    /// Do not copy tagging
    #[arg(long, env = "DISABLE_TAGGING", help_heading = "Tagging")]
    pub disable_tagging: bool,

    /// Copy the latest tagging from the source if necessary.
    #[arg(
        long,
        env = "SYNC_LATEST_TAGGING",
        conflicts_with_all = ["enable_versioning", "disable_tagging"],
        help_heading = "Tagging",
        help = "Copy the latest tagging from the source if necessary.\n\
                If this option is enabled, the --remove-modified-filter and\n\
                --head-each-target options are automatically enabled."
    )]
    pub sync_latest_tagging: bool,

    // ------------------------------------------------------- Object Annotation
    /// Copy object annotations from the source if necessary.
    #[arg(
        long,
        env = "ENABLE_SYNC_OBJECT_ANNOTATIONS",
        help_heading = "Object Annotation",
        help = "Copy object annotations from the source if necessary.\n\
                If this option is enabled, extra API calls are required."
    )]
    pub enable_sync_object_annotations: bool,

    /// Don't use ETag for update annotation checking
    #[arg(long, env = "DISABLE_CHECK_ANNOTATION_ETAG", help_heading = "Object Annotation")]
    pub disable_check_annotation_etag: bool,

    /// Copy the latest object annotation from the source if necessary.
    #[arg(
        long,
        env = "SYNC_LATEST_OBJECT_ANNOTATIONS",
        conflicts_with_all = ["enable_versioning"],
        help_heading = "Object Annotation",
        help = "Copy the latest object annotation from the source if necessary.\n\
                If this option is enabled, the --remove-modified-filter and\n\
                --head-each-target options are automatically enabled. And extra API calls are required."
    )]
    pub sync_latest_object_annotations: bool,

    // -------------------------------------------------------------- Versioning
    /// Sync all version objects in the source storage to the target versioning storage.
    #[arg(
        long,
        env = "ENABLE_VERSIONING",
        conflicts_with_all = ["delete", "head_each_target", "remove_modified_filter"],
        help_heading = "Versioning"
    )]
    pub enable_versioning: bool,

    /// Sync only objects at a specific point in time (RFC3339 datetime).
    #[arg(
        long,
        env = "POINT_IN_TIME",
        value_parser = parse_rfc3339,
        conflicts_with_all = ["delete", "head_each_target", "enable_versioning", "check_etag", "check_mtime_and_etag", "check_size", "check_mtime_and_additional_checksum"],
        help_heading = "Versioning",
        help = "Sync only objects at a specific point in time (RFC3339 datetime).\n\
                The source storage must be a versioning enabled S3 bucket.\n\
                By default, the target storage's objects will always be overwritten with the source's objects.\n\
                \n\
                Example: 2025-07-16T12:00:00Z"
    )]
    pub point_in_time: Option<DateTime<Utc>>,

    // -------------------------------------------------------------- Encryption
    /// Server-side encryption. Valid choices: AES256 | aws:kms | aws:kms:dsse
    #[arg(
        long,
        env = "SSE",
        value_parser = PossibleValuesParser::new(SSE_ALGORITHMS),
        hide_possible_values = true,
        help_heading = "Encryption"
    )]
    pub sse: Option<String>,

    /// SSE KMS ID key
    #[arg(long, env = "SSE_KMS_KEY_ID", help_heading = "Encryption")]
    pub sse_kms_key_id: Option<String>,

    /// Source SSE-C algorithm. Valid choices: AES256
    #[arg(
        long,
        env = "SOURCE_SSE_C",
        value_parser = PossibleValuesParser::new(SSE_C_ALGORITHMS),
        hide_possible_values = true,
        conflicts_with_all = ["sse", "sse_kms_key_id"],
        requires = "source_sse_c_key",
        help_heading = "Encryption"
    )]
    pub source_sse_c: Option<String>,

    /// Source SSE-C customer-provided encryption key(256bit key. must be base64 encoded)
    #[arg(
        long,
        env = "SOURCE_SSE_C_KEY",
        requires = "source_sse_c_key_md5",
        help_heading = "Encryption"
    )]
    pub source_sse_c_key: Option<String>,

    /// Source base64 encoded MD5 digest of source_sse_c_key
    #[arg(
        long,
        env = "SOURCE_SSE_C_KEY_MD5",
        requires = "source_sse_c",
        help_heading = "Encryption"
    )]
    pub source_sse_c_key_md5: Option<String>,

    /// Target SSE-C algorithm. Valid choices: AES256
    #[arg(
        long,
        env = "TARGET_SSE_C",
        value_parser = PossibleValuesParser::new(SSE_C_ALGORITHMS),
        hide_possible_values = true,
        conflicts_with_all = ["sse", "sse_kms_key_id"],
        requires = "target_sse_c_key",
        help_heading = "Encryption"
    )]
    pub target_sse_c: Option<String>,

    /// Target SSE-C customer-provided encryption key(256bit key. must be base64 encoded)
    #[arg(
        long,
        env = "TARGET_SSE_C_KEY",
        requires = "target_sse_c_key_md5",
        help_heading = "Encryption"
    )]
    pub target_sse_c_key: Option<String>,

    /// Target base64 encoded MD5 digest of target-sse-c-key
    #[arg(
        long,
        env = "TARGET_SSE_C_KEY_MD5",
        requires = "target_sse_c",
        help_heading = "Encryption"
    )]
    pub target_sse_c_key_md5: Option<String>,

    // ---------------------------------------------------------------- Sharding
    /// Number of shards a job is split into (each shard is one s3sync process)
    #[arg(
        long,
        env = "SHARD_COUNT",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Sharding",
        help = "Split the job into this many shards, each run by one s3sync process. Without --shard-plan, keys\n\
                are assigned by hash (MD5 of the key relative to the sync root, first 8 bytes as a little-endian u64,\n\
                modulo the count)"
    )]
    pub shard_count: Option<u32>,

    /// Which shard this process runs
    #[arg(
        long,
        env = "SHARD_INDEX",
        requires = "shard_count",
        help_heading = "Sharding",
        help = "Which shard this process runs, 0-based [requires --shard-count].\n\
                Default: JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX, the first that is set"
    )]
    pub shard_index: Option<u32>,

    /// Range plan of the job (made by --make-shard-plan)
    #[arg(
        long,
        env = "SHARD_PLAN",
        value_name = "FILE",
        requires = "shard_count",
        help_heading = "Sharding",
        help = "Range plan made by --make-shard-plan: each shard lists only its own key range on both sides\n\
                [requires --shard-count]"
    )]
    pub shard_plan: Option<std::path::PathBuf>,

    /// Print a range plan for N shards (JSON, on stdout) and exit
    #[arg(
        long,
        env = "MAKE_SHARD_PLAN",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with_all = ["shard_count", "shard_index", "shard_plan"],
        help_heading = "Sharding",
        help = "List the source once and print a range plan for N shards balanced by object count (JSON, on\n\
                stdout), then exit. Pass the same SOURCE and TARGET as the shards will"
    )]
    pub make_shard_plan: Option<u32>,

    // --------------------------------------------------------------- Reporting
    /// Print the end-of-run summary as one JSON line on stdout
    #[arg(
        long,
        env = "JSON_SUMMARY",
        help_heading = "Reporting",
        help = "Print the end-of-run summary as one JSON line on stdout (with the shard, for aggregating the logs\n\
                of a sharded job)"
    )]
    pub json_summary: bool,

    /// Report sync status to the target storage.
    #[arg(
        long,
        env = "REPORT_SYNC_STATUS",
        conflicts_with_all = ["dry_run", "delete", "enable_versioning", "head_each_target"],
        help_heading = "Reporting",
        help = "Report sync status to the target storage.\n\
                Default verification is for etag. For additional checksum, use --check-additional-checksum.\n\
                For more precise control, use with --auto-chunksize."
    )]
    pub report_sync_status: bool,

    /// Report metadata sync status to the target storage.
    #[arg(
        long,
        env = "REPORT_METADATA_SYNC_STATUS",
        requires_if("true", "report_sync_status"),
        help_heading = "Reporting",
        help = "Report metadata sync status to the target storage.\n\
                It must be used with --report-sync-status.\n\
                Note: s3sync generated user-defined metadata(s3sync_origin_version_id/s3sync_origin_last_modified) were ignored.\n      \
                Because they are usually different from the source storage."
    )]
    pub report_metadata_sync_status: bool,

    /// Report tagging sync status to the target storage.
    #[arg(
        long,
        env = "REPORT_TAGGING_SYNC_STATUS",
        requires_if("true", "report_sync_status"),
        help_heading = "Reporting",
        help = "Report tagging sync status to the target storage.\n\
                It must be used with --report-sync-status."
    )]
    pub report_tagging_sync_status: bool,

    /// Report annotations sync status to the target storage.
    #[arg(
        long,
        env = "REPORT_ANNOTATIONS_SYNC_STATUS",
        requires = "report_sync_status",
        help_heading = "Reporting",
        help = "Report annotations sync status to the target storage.\n\
                It must be used with --report-sync-status."
    )]
    pub report_annotations_sync_status: bool,

    // --------------------------------------------------------- Tracing/Logging
    /// Show trace as json format
    #[arg(long, env = "JSON_TRACING", help_heading = "Tracing/Logging")]
    pub json_tracing: bool,

    /// Enable aws sdk tracing
    #[arg(long, env = "AWS_SDK_TRACING", help_heading = "Tracing/Logging")]
    pub aws_sdk_tracing: bool,

    /// Show span event tracing
    #[arg(long, env = "SPAN_EVENTS_TRACING", help_heading = "Tracing/Logging")]
    pub span_events_tracing: bool,

    /// Disable ANSI terminal colors
    #[arg(long, env = "DISABLE_COLOR_TRACING", help_heading = "Tracing/Logging")]
    pub disable_color_tracing: bool,

    /// Output all tracing to stderr.
    #[arg(
        long,
        env = "TRACING_STDERR",
        help_heading = "Tracing/Logging",
        help = "Output all tracing to stderr. This release always writes tracing to stderr (stdout carries\n\
                only --report-sync-status lines, --json-summary and --make-shard-plan output); accepted so\n\
                that scripts written for s3sync 1.62.4 run unchanged."
    )]
    pub tracing_stderr: bool,

    // ----------------------------------------------------------- Retry Options
    /// Maximum retry attempts that s3sync retry handler use
    #[arg(
        long,
        env = "AWS_MAX_ATTEMPTS",
        value_name = "max_attempts",
        default_value_t = DEFAULT_AWS_MAX_ATTEMPTS,
        help_heading = "Retry Options"
    )]
    pub aws_max_attempts: u32,

    /// Initial backoff (milliseconds) of the exponential backoff with jitter retry strategy.
    #[arg(
        long,
        env = "INITIAL_BACKOFF_MILLISECONDS",
        value_name = "initial_backoff",
        default_value_t = DEFAULT_INITIAL_BACKOFF_MILLISECONDS,
        help_heading = "Retry Options",
        help = "A multiplier value used when calculating backoff times as part of an exponential backoff with jitter strategy.\n"
    )]
    pub initial_backoff_milliseconds: u64,

    /// Maximum force retry attempts that s3sync retry handler use
    #[arg(
        long,
        env = "FORCE_RETRY_COUNT",
        default_value_t = DEFAULT_FORCE_RETRY_COUNT,
        help_heading = "Retry Options"
    )]
    pub force_retry_count: u32,

    /// Sleep interval (milliseconds) between s3sync force retries on error.
    #[arg(
        long,
        env = "FORCE_RETRY_INTERVAL_MILLISECONDS",
        value_name = "force_retry_interval",
        default_value_t = DEFAULT_FORCE_RETRY_INTERVAL_MILLISECONDS,
        help_heading = "Retry Options",
        help = "Sleep interval (milliseconds) between s3sync force retries on error.\n"
    )]
    pub force_retry_interval_milliseconds: u64,

    // --------------------------------------------------------- Timeout Options
    /// Operation timeout (milliseconds). No timeout by default.
    #[arg(
        long,
        env = "OPERATION_TIMEOUT_MILLISECONDS",
        value_name = "operation_timeout",
        help_heading = "Timeout Options",
        help = "Operation timeout (milliseconds). For details, see the AWS SDK for Rust TimeoutConfig documentation.\n\
                The default has no timeout."
    )]
    pub operation_timeout_milliseconds: Option<u64>,

    /// Operation attempt timeout (milliseconds). No timeout by default.
    #[arg(
        long,
        env = "OPERATION_ATTEMPT_TIMEOUT_MILLISECONDS",
        value_name = "operation_attempt_timeout",
        help_heading = "Timeout Options",
        help = "Operation attempt timeout (milliseconds). For details, see the AWS SDK for Rust TimeoutConfig documentation.\n\
                The default has no timeout."
    )]
    pub operation_attempt_timeout_milliseconds: Option<u64>,

    /// Connect timeout (milliseconds). AWS SDK default (3100 milliseconds) when unset.
    #[arg(
        long,
        env = "CONNECT_TIMEOUT_MILLISECONDS",
        value_name = "connect_timeout",
        help_heading = "Timeout Options",
        help = "Connect timeout (milliseconds).The default has AWS SDK default timeout (Currently 3100 milliseconds).\n"
    )]
    pub connect_timeout_milliseconds: Option<u64>,

    /// Read timeout (milliseconds). The default has no timeout.
    #[arg(
        long,
        env = "READ_TIMEOUT_MILLISECONDS",
        value_name = "read_timeout",
        help_heading = "Timeout Options"
    )]
    pub read_timeout_milliseconds: Option<u64>,

    // ---------------------------------------------------------------- Advanced
    /// Treat warnings as errors(except for the case of etag/checksum mismatch, etc.)
    #[arg(long, env = "WARN_AS_ERROR", help_heading = "Advanced")]
    pub warn_as_error: bool,

    /// Ignore symbolic links
    #[arg(long, env = "IGNORE_SYMLINKS", help_heading = "Advanced")]
    pub ignore_symlinks: bool,

    /// HeadObject is used to check whether an object has been modified in the target storage.
    #[arg(
        long,
        env = "HEAD_EACH_TARGET",
        conflicts_with_all = ["enable_versioning"],
        help_heading = "Advanced",
        help = "HeadObject is used to check whether an object has been modified in the target storage.\n\
                It reduces the possibility of race condition issue"
    )]
    pub head_each_target: bool,

    /// ACL for the objects.
    #[arg(
        long,
        env = "ACL",
        value_parser = PossibleValuesParser::new(CANNED_ACLS),
        hide_possible_values = true,
        help_heading = "Advanced",
        help = "ACL for the objects\n\
                Valid choices: private | public-read | public-read-write | authenticated-read | aws-exec-read |\n               \
                bucket-owner-read | bucket-owner-full-control"
    )]
    pub acl: Option<String>,

    /// Do not try to guess the mime type of local file
    #[arg(long, env = "NO_GUESS_MIME_TYPE", help_heading = "Advanced")]
    pub no_guess_mime_type: bool,

    /// Maximum number of objects returned in a single list object request
    #[arg(
        long,
        env = "MAX_KEYS",
        default_value_t = DEFAULT_MAX_KEYS,
        value_parser = clap::value_parser!(i32).range(1..=32767),
        help_heading = "Advanced"
    )]
    pub max_keys: i32,

    /// Put last modified of the source to metadata
    #[arg(long, env = "PUT_LAST_MODIFIED_METADATA", help_heading = "Advanced")]
    pub put_last_modified_metadata: bool,

    /// Generate a auto completions script.
    #[arg(
        long,
        env = "AUTO_COMPLETE_SHELL",
        value_name = "SHELL",
        value_parser = clap::value_parser!(Shell),
        hide_possible_values = true,
        help_heading = "Advanced",
        help = "Generate a auto completions script.\n\
                Valid choices: bash, fish, zsh, powershell, elvish."
    )]
    pub auto_complete_shell: Option<Shell>,

    /// Writes the man page (roff) to standard output; hidden, so `--help` keeps the original's groups.
    #[arg(long, hide = true)]
    pub generate_man_page: bool,

    /// Disable stalled stream protection
    #[arg(long, env = "DISABLE_STALLED_STREAM_PROTECTION", help_heading = "Advanced")]
    pub disable_stalled_stream_protection: bool,

    /// Disable payload signing for object uploads
    #[arg(long, env = "DISABLE_PAYLOAD_SIGNING", help_heading = "Advanced")]
    pub disable_payload_signing: bool,

    /// Disable Content-MD5 header for object uploads.
    #[arg(
        long,
        env = "DISABLE_CONTENT_MD5_HEADER",
        help_heading = "Advanced",
        help = "Disable Content-MD5 header for object uploads. It disables the ETag verification for the uploaded object.\n"
    )]
    pub disable_content_md5_header: bool,

    /// Disable default additional checksum verification in Express One Zone storage class.
    #[arg(
        long,
        env = "DISABLE_EXPRESS_ONE_ZONE_ADDITIONAL_CHECKSUM",
        help_heading = "Advanced"
    )]
    pub disable_express_one_zone_additional_checksum: bool,

    // --------------------------------------------------- Lua scripting support
    /// Path to the Lua script that is executed as preprocess callback
    #[arg(long, env = "PREPROCESS_CALLBACK_LUA_SCRIPT", help_heading = "Lua scripting support")]
    pub preprocess_callback_lua_script: Option<String>,

    /// Path to the Lua script that is executed as event callback
    #[arg(long, env = "EVENT_CALLBACK_LUA_SCRIPT", help_heading = "Lua scripting support")]
    pub event_callback_lua_script: Option<String>,

    /// Path to the Lua script that is executed as filter callback
    #[arg(long, env = "FILTER_CALLBACK_LUA_SCRIPT", help_heading = "Lua scripting support")]
    pub filter_callback_lua_script: Option<String>,

    /// Allow Lua OS library functions in the Lua script.
    #[arg(
        long,
        env = "ALLOW_LUA_OS_LIBRARY",
        conflicts_with_all = ["allow_lua_unsafe_vm"],
        help_heading = "Lua scripting support"
    )]
    pub allow_lua_os_library: bool,

    /// Memory limit (bytes) for the Lua VM. Zero means no limit.
    #[arg(
        long,
        env = "LUA_VM_MEMORY_LIMIT",
        default_value = DEFAULT_LUA_VM_MEMORY_LIMIT_STR,
        value_parser = size::parse_size,
        help_heading = "Lua scripting support",
        help = "Memory limit for the Lua VM. Allow suffixes: KB, KiB, MB, MiB, GB, GiB.\n\
                Zero means no limit.\n\
                If the memory limit is exceeded, the whole process will be terminated."
    )]
    pub lua_vm_memory_limit: u64,

    /// Timeout in milliseconds for Lua callback execution. Zero means no timeout.
    #[arg(
        long,
        env = "LUA_CALLBACK_TIMEOUT_MILLISECONDS",
        default_value_t = DEFAULT_LUA_CALLBACK_TIMEOUT_MILLISECONDS,
        help_heading = "Lua scripting support",
        help = "Timeout in milliseconds for Lua callback execution.\n\
                Zero means no timeout.\n\
                If the timeout is exceeded, the callback will be terminated with an error."
    )]
    pub lua_callback_timeout_milliseconds: u64,

    // --------------------------------------------------------------- Dangerous
    /// Allow unsafe Lua VM functions in the Lua script.
    #[arg(
        long,
        env = "ALLOW_LUA_UNSAFE_VM",
        conflicts_with_all = ["allow_lua_os_library"],
        help_heading = "Dangerous",
        help = "Allow unsafe Lua VM functions in the Lua script.\n\
                It allows the Lua script to load unsafe standard libraries or C modules."
    )]
    pub allow_lua_unsafe_vm: bool,

    /// Delete objects that exist in the target but not in the source.
    #[arg(
        long,
        env = "DELETE",
        conflicts_with_all = ["enable_versioning"],
        help_heading = "Dangerous",
        help = "Delete objects that exist in the target but not in the source.\n \
                [Warning] Since this can cause data loss, test first with the --dry-run option\n "
    )]
    pub delete: bool,

    /// Proxy for S3 requests.
    #[arg(
        long,
        env = "HTTPS_PROXY",
        value_name = "HTTPS_PROXY",
        help_heading = "Advanced",
        help = "Proxy server for S3 requests, proxy authentication is supported.\n\
                Example: http(s)://user:password@proxy:port"
    )]
    pub https_proxy: Option<String>,

    /// Stop deleting after this many objects.
    #[arg(
        long,
        env = "MAX_DELETE",
        requires = "delete",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Dangerous",
        help = "Don't delete more than this many objects; the rest are reported as warnings [requires --delete]"
    )]
    pub max_delete: Option<u64>,

    /// With --delete, --filter-exclude-regex does not protect target objects from deletion.
    #[arg(
        long,
        env = "DELETE_EXCLUDED",
        requires = "delete",
        help_heading = "Advanced",
        help = "When used in combination with --delete options, supplied --filter-exclude-regex patterns will not prevent an object from being deleted.\n"
    )]
    pub delete_excluded: bool,

    /// Add an If-Match header for PutObject/CompleteMultipartUpload/DeleteObject requests.
    #[arg(
        long,
        env = "IF_MATCH",
        conflicts_with_all = ["if_none_match"],
        help_heading = "Advanced",
        help = "Add an If-Match header for PutObject/CompleteMultipartUpload/DeleteObject requests.\n\
                This is for like an optimistic lock."
    )]
    pub if_match: bool,

    /// Add an x-amz-copy-source-if-match header for CopyObject/UploadPartCopy requests.
    #[arg(
        long,
        env = "COPY_SOURCE_IF_MATCH",
        help_heading = "Advanced",
        help = "Add an x-amz-copy-source-if-match header for CopyObject/UploadPartCopy requests.\n\
                This is for like an optimistic lock."
    )]
    pub copy_source_if_match: bool,

    /// Uploads the object only if the object key name does not already exist in the specified bucket.
    #[arg(
        long,
        env = "IF_NONE_MATCH",
        help_heading = "Advanced",
        help = "Uploads the object only if the object key name does not already exist in the specified bucket.\n\
                This is for like an optimistic lock."
    )]
    pub if_none_match: bool,

    /// Suppress warnings related to Amazon S3 Glacier storage class objects during GetObject requests
    #[arg(long, env = "IGNORE_GLACIER_WARNINGS", help_heading = "Advanced")]
    pub ignore_glacier_warnings: bool,
}

/// Shows where from and where to, never the options: several hold secrets (keys, SSE-C keys, proxy
/// passwords).
impl std::fmt::Debug for CliArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliArgs")
            .field("source", &self.source)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl CliArgs {
    /// Returns `(SOURCE, TARGET)`, or an error message naming the missing
    /// positional argument(s).
    ///
    /// Both are optional for clap so that `--auto-complete-shell` works alone;
    /// every other mode must call this during validation.
    pub fn source_and_target(&self) -> Result<(&str, &str), String> {
        match (self.source.as_deref(), self.target.as_deref()) {
            (Some(source), Some(target)) => Ok((source, target)),
            (None, Some(_)) => Err("the following required arguments were not provided: <SOURCE>".into()),
            (Some(_), None) => Err("the following required arguments were not provided: <TARGET>".into()),
            (None, None) => Err("the following required arguments were not provided: <SOURCE> <TARGET>".into()),
        }
    }

    /// Writes the man page of `s3sync` (roff, section 1) to `out`, from the same definitions as
    /// `--help`.
    pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
        clap_mangen::Man::new(Self::command()).render(out)
    }

    /// Writes a shell completion script for `s3sync` to `out`.
    pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
        let mut cmd = Self::command();
        clap_complete::generate(shell, &mut cmd, "s3sync", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use std::sync::{Mutex, MutexGuard};

    /// Serialises every test that parses arguments, because clap reads the
    /// process environment and one test mutates it.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn lock() -> MutexGuard<'static, ()> {
        ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parse(args: &[&str]) -> Result<CliArgs, clap::Error> {
        let _guard = lock();
        CliArgs::try_parse_from(std::iter::once("s3sync").chain(args.iter().copied()))
    }

    fn parse_ok(args: &[&str]) -> CliArgs {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn command_is_consistent() {
        CliArgs::command().debug_assert();
    }

    #[test]
    fn defaults_of_bare_parse() {
        let a = parse_ok(&[]);
        assert_eq!(a.source, None);
        assert_eq!(a.target, None);
        assert_eq!(a.verbose, 0);
        assert_eq!(a.quiet, 0);
        assert!(!a.dry_run && !a.server_side_copy && !a.delete && !a.check_etag);
        assert_eq!(a.worker_size, 64);
        assert_eq!(a.max_parallel_uploads, 16);
        assert_eq!(a.max_keys, 1000);
        assert_eq!(a.aws_max_attempts, 10);
        assert_eq!(a.initial_backoff_milliseconds, 100);
        assert_eq!(a.force_retry_count, 5);
        assert_eq!(a.force_retry_interval_milliseconds, 1000);
        assert_eq!(a.multipart_threshold, 8 * 1024 * 1024);
        assert_eq!(a.multipart_chunksize, 8 * 1024 * 1024);
        assert_eq!(a.lua_vm_memory_limit, 64 * 1024 * 1024);
        // The defaults written as text on the command line are the library's.
        assert_eq!(a.multipart_threshold, crate::config::defaults::DEFAULT_MULTIPART_SIZE);
        assert_eq!(a.multipart_chunksize, crate::config::defaults::DEFAULT_MULTIPART_SIZE);
        assert_eq!(a.lua_vm_memory_limit, DEFAULT_LUA_VM_MEMORY_LIMIT);
        assert_eq!(a.io_pool_size, None);
        assert_eq!(a.rate_limit_bandwidth, None);
        assert_eq!(a.operation_timeout_milliseconds, None);
        assert!(a.filter_include_regex.is_none());
        assert!(a.auto_complete_shell.is_none());
        assert!(a.source_and_target().is_err());
    }

    #[test]
    fn positionals_and_counts() {
        let a = parse_ok(&["-vvv", "s3://bucket/prefix", "/tmp/dir"]);
        assert_eq!(a.verbose, 3);
        assert_eq!(a.source_and_target(), Ok(("s3://bucket/prefix", "/tmp/dir")));
        let a = parse_ok(&["-qq", "a", "b"]);
        assert_eq!(a.quiet, 2);
        let a = parse_ok(&["--verbose", "--verbose", "a", "b"]);
        assert_eq!(a.verbose, 2);
        let e = parse(&["-v", "-q", "a", "b"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        let a = parse_ok(&["only-source"]);
        assert!(a.source_and_target().unwrap_err().contains("<TARGET>"));
    }

    #[test]
    fn version_and_help() {
        assert_eq!(parse(&["-V"]).unwrap_err().kind(), ErrorKind::DisplayVersion);
        assert_eq!(parse(&["--version"]).unwrap_err().kind(), ErrorKind::DisplayVersion);
        assert_eq!(parse(&["-h"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
        let help = CliArgs::command().term_width(200).render_help().to_string();
        for heading in [
            "General:",
            "AWS Configuration:",
            "Source Options:",
            "Target Options:",
            "Filtering:",
            "Update Checking:",
            "Verification:",
            "Performance:",
            "Multipart Settings:",
            "Metadata/Headers:",
            "Tagging:",
            "Versioning:",
            "Encryption:",
            "Reporting:",
            "Tracing/Logging:",
            "Retry Options:",
            "Timeout Options:",
            "Advanced:",
            "Lua scripting support:",
            "Dangerous:",
        ] {
            assert!(help.contains(heading), "missing heading {heading}");
        }
        assert!(help.contains("--aws-max-attempts <max_attempts>"));
        assert!(help.contains("--io-pool-size <SIZE>"));
        assert!(help.contains("[env: IO_POOL_SIZE=]"));
        assert!(help.contains("[default: 8MiB]"));
        assert!(help.contains("[default: 64MiB]"));
    }

    /// Every option reads the environment variable named after it, exactly
    /// like the reference (`--worker-size` -> `WORKER_SIZE`).
    #[test]
    fn env_names_follow_flag_names() {
        let cmd = CliArgs::command();
        let mut with_env = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "verbose" | "quiet" | "help" | "version" | "generate_man_page") {
                assert!(arg.get_env().is_none(), "{id} must not have env");
                continue;
            }
            let env = arg.get_env().unwrap_or_else(|| panic!("{id} has no env"));
            assert_eq!(env.to_str().unwrap(), id.to_uppercase(), "env of {id}");
            if let Some(long) = arg.get_long() {
                assert_eq!(long.replace('-', "_"), id, "long flag of {id}");
            }
            with_env += 1;
        }
        // 112 env-backed arguments of the reference (incl. SOURCE/TARGET) + --io-pool-size + --max-delete
        // + --https-proxy (feature-gated in the reference) + the four sharding options + --json-summary
        // + the 18 options of 1.62.4 its README does not show + --no-fsync + --direct-io.
        assert_eq!(with_env, 140);
    }

    #[test]
    fn env_var_pickup() {
        let _guard = lock();
        // Edition 2021: set_var is safe; the lock keeps other parsing tests out.
        std::env::set_var("WORKER_SIZE", "7");
        std::env::set_var("MULTIPART_CHUNKSIZE", "16MiB");
        std::env::set_var("DRY_RUN", "true");
        std::env::set_var("SOURCE", "s3://from-env");
        let result = CliArgs::try_parse_from(["s3sync", "--worker-size", "3", "s3://a", "b"]);
        let env_only = CliArgs::try_parse_from(["s3sync"]);
        for name in ["WORKER_SIZE", "MULTIPART_CHUNKSIZE", "DRY_RUN", "SOURCE"] {
            std::env::remove_var(name);
        }
        let a = result.unwrap();
        assert_eq!(a.worker_size, 3, "command line wins over env");
        assert_eq!(a.multipart_chunksize, 16 * 1024 * 1024);
        assert!(a.dry_run);
        assert_eq!(a.source.as_deref(), Some("s3://a"));
        let b = env_only.unwrap();
        assert_eq!(b.worker_size, 7);
        assert_eq!(b.source.as_deref(), Some("s3://from-env"));
        assert_eq!(b.target, None);
    }

    #[test]
    fn numeric_ranges() {
        assert_eq!(parse_ok(&["--worker-size", "1"]).worker_size, 1);
        assert!(parse(&["--worker-size", "0"]).is_err());
        assert!(parse(&["--worker-size", "65536"]).is_err());
        assert!(parse(&["--max-parallel-uploads", "0"]).is_err());
        assert_eq!(parse_ok(&["--max-keys", "32767"]).max_keys, 32767);
        assert!(parse(&["--max-keys", "0"]).is_err());
        assert!(parse(&["--max-keys", "32768"]).is_err());
        assert!(parse(&["--rate-limit-objects", "9"]).is_err());
        assert_eq!(parse_ok(&["--rate-limit-objects", "10"]).rate_limit_objects, Some(10));
        let a = parse_ok(&["--read-timeout-milliseconds", "2500", "--aws-max-attempts", "3"]);
        assert_eq!(a.read_timeout_milliseconds, Some(2500));
        assert_eq!(a.aws_max_attempts, 3);
    }

    #[test]
    fn sizes() {
        let a = parse_ok(&[
            "--filter-smaller-size",
            "1KB",
            "--filter-larger-size",
            "2KiB",
            "--io-pool-size",
            "32MiB",
            "--lua-vm-memory-limit",
            "0",
            "--rate-limit-bandwidth",
            "10MB",
        ]);
        assert_eq!(a.filter_smaller_size, Some(1000));
        assert_eq!(a.filter_larger_size, Some(2048));
        assert_eq!(a.io_pool_size, Some(32 * 1024 * 1024));
        assert_eq!(a.lua_vm_memory_limit, 0);
        assert_eq!(a.rate_limit_bandwidth, Some(10_000_000));
        let e = parse(&["--io-pool-size", "12 MiB"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(parse(&["--rate-limit-bandwidth", "1KiB"]).is_err());
    }

    #[test]
    fn part_size_bounds() {
        let a = parse_ok(&["--multipart-threshold", "5MiB", "--multipart-chunksize", "5GiB"]);
        assert_eq!(a.multipart_threshold, 5 * 1024 * 1024);
        assert_eq!(a.multipart_chunksize, 5 * 1024 * 1024 * 1024);
        let e = parse(&["--multipart-chunksize", "4MiB"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("5MiB"), "{e}");
        let e = parse(&["--multipart-threshold", "6GiB"]).unwrap_err();
        assert!(e.to_string().contains("5GiB"), "{e}");
        let e = parse(&["--auto-chunksize", "--multipart-chunksize", "8MiB"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert!(parse_ok(&["--auto-chunksize"]).auto_chunksize);
    }

    #[test]
    fn rfc3339_validation() {
        let a = parse_ok(&[
            "--filter-mtime-before",
            "2023-02-19T12:00:00Z",
            "--filter-mtime-after",
            "2023-02-19T21:00:00+09:00",
        ]);
        let before = a.filter_mtime_before.unwrap();
        assert_eq!(before.to_rfc3339(), "2023-02-19T12:00:00+00:00");
        assert_eq!(a.filter_mtime_after, Some(before));
        for bad in ["2023-02-19", "2023-02-19 12:00:00", "yesterday", "2023-02-30T00:00:00Z"] {
            let e = parse(&["--expires", bad]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains("RFC3339"), "{e}");
        }
        assert!(parse_ok(&["--point-in-time", "2025-07-16T12:00:00Z"])
            .point_in_time
            .is_some());
        assert!(parse_rfc3339("2025-07-16T12:00:00.123Z").is_ok());
    }

    #[test]
    fn regex_validation() {
        let a = parse_ok(&["--filter-include-regex", r"\.jpg$"]);
        assert!(a.filter_include_regex.unwrap().is_match("a/b.jpg"));
        let e = parse(&["--filter-exclude-regex", "("]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(parse(&["--filter-include-tag-regex", "[z-a]"]).is_err());
    }

    #[test]
    fn enumerated_choices() {
        let a = parse_ok(&[
            "--storage-class",
            "ONEZONE_IA",
            "--acl",
            "bucket-owner-full-control",
            "--additional-checksum-algorithm",
            "CRC64NVME",
            "--check-additional-checksum",
            "SHA1",
            "--sse",
            "aws:kms:dsse",
            "--auto-complete-shell",
            "powershell",
        ]);
        assert_eq!(a.storage_class.as_deref(), Some("ONEZONE_IA"));
        assert_eq!(a.acl.as_deref(), Some("bucket-owner-full-control"));
        assert_eq!(a.additional_checksum_algorithm.as_deref(), Some("CRC64NVME"));
        assert_eq!(a.check_additional_checksum.as_deref(), Some("SHA1"));
        assert_eq!(a.sse.as_deref(), Some("aws:kms:dsse"));
        assert_eq!(a.auto_complete_shell, Some(Shell::PowerShell));
        for bad in [
            &["--storage-class", "standard"][..],
            &["--sse", "aes256"],
            &["--acl", "PRIVATE"],
            &["--additional-checksum-algorithm", "MD5"],
            &["--check-mtime-and-additional-checksum", "crc32"],
            &["--auto-complete-shell", "tcsh"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidValue, "{bad:?}");
        }
        let a = parse_ok(&[
            "--source-sse-c",
            "AES256",
            "--source-sse-c-key",
            "k",
            "--source-sse-c-key-md5",
            "m",
        ]);
        assert_eq!(a.source_sse_c.as_deref(), Some("AES256"));
        let e = parse(&["--target-sse-c", "AES256"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn credential_relations() {
        let a = parse_ok(&["--source-access-key", "AK", "--source-secret-access-key", "SK"]);
        assert_eq!(a.source_access_key.as_deref(), Some("AK"));
        let e = parse(&["--target-access-key", "AK"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = parse(&["--source-profile", "p", "--source-access-key", "AK"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn auto_complete_shell_alone() {
        let a = parse_ok(&["--auto-complete-shell", "bash"]);
        assert_eq!(a.auto_complete_shell, Some(Shell::Bash));
        let mut out = Vec::new();
        CliArgs::completions(Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("s3sync"));
        assert!(script.contains("--io-pool-size"));
    }

    #[test]
    fn man_page_alone() {
        let a = parse_ok(&["--generate-man-page"]);
        assert!(a.generate_man_page);
        let mut out = Vec::new();
        CliArgs::man_page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH s3sync 1"),
            "{}",
            &page[..200]
        );
        assert!(page.contains("io\\-pool\\-size"), "every option is in the page");
        assert!(!CliArgs::command()
            .render_help()
            .to_string()
            .contains("generate-man-page"));
    }

    /// Every option of the released s3sync 1.62.4 (its complete `--help`, kept beside this file)
    /// exists here with the same environment variable, so scripts written for it keep working.
    #[test]
    fn every_reference_option_exists_with_its_env_var() {
        let reference = include_str!("reference-help-1.62.4.txt");
        let mut expected: Vec<(String, Option<String>)> = Vec::new();
        for line in reference.lines() {
            let t = line.trim_start();
            // Option lines are indented by 2 (`  -v, --verbose`) or 6 (`      --dry-run`); deeper
            // lines are help text, which may mention other options.
            let indent = line.len() - t.len();
            let is_option = (indent == 2 || indent == 6) && t.starts_with('-');
            if is_option {
                let long = t
                    .split([' ', ',', '.'])
                    .find(|w| w.starts_with("--"))
                    .map(str::to_string);
                if let Some(long) = long {
                    expected.push((long, None));
                }
            } else if let (Some(start), Some(last)) = (t.find("[env: "), expected.last_mut()) {
                let name = t[start + 6..].trim_end_matches(']').trim_end_matches('=');
                last.1 = Some(name.to_string());
            }
        }
        assert!(expected.len() > 120, "parsed {} reference options", expected.len());
        let cmd = CliArgs::command();
        let ours: std::collections::HashMap<String, Option<String>> = cmd
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                a.get_long().map(|l| (format!("--{l}"), env))
            })
            .collect();
        let mut missing = Vec::new();
        for (flag, env) in &expected {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            match ours.get(flag) {
                None => missing.push(format!("{flag} (absent)")),
                Some(our_env) if our_env != env => missing.push(format!("{flag}: env {our_env:?}, reference {env:?}")),
                Some(_) => {}
            }
        }
        assert!(missing.is_empty(), "differences from s3sync 1.62.4: {missing:#?}");
    }
}
