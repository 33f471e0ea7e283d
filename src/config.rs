//! The sync configuration: one plain value built by [`ConfigBuilder`] (library) or from the CLI, and
//! read by the pipeline. Options of one concern are grouped in one type.

use crate::attributes::AttributeOptions;
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::compare::CheckMode;
use crate::error::{Error, Result};
use crate::filter::Filters;
use crate::location::Location;
use std::path::PathBuf;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// How to reach and authenticate against one S3 end. Its `Debug` output shows no secret.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// Named profile of the AWS config files.
    pub profile: Option<String>,
    /// Static access key (with `secret_access_key`).
    pub access_key: Option<String>,
    /// Static secret key.
    pub secret_access_key: Option<String>,
    /// Static session token.
    pub session_token: Option<String>,
    /// Region; defaults to the provider chain, then `us-east-1`.
    pub region: Option<String>,
    /// Custom endpoint URL.
    pub endpoint_url: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Alternative AWS config file.
    pub aws_config_file: Option<PathBuf>,
    /// Alternative shared credentials file.
    pub aws_shared_credentials_file: Option<PathBuf>,
    /// Customer-provided encryption key for this end's objects.
    pub sse_c: Option<crate::storage::s3::SseC>,
    /// Use S3 Transfer Acceleration.
    pub accelerate: bool,
    /// Pay for requests as the requester (`x-amz-request-payer`).
    pub request_payer: bool,
    /// Proxy for the S3 requests (`--https-proxy`, `http(s)://[user:password@]host:port`).
    pub https_proxy: Option<String>,
    /// Send requests unsigned, without credentials (`--source-no-sign-request`: public buckets).
    pub no_sign_request: bool,
    /// An HTTP client of your own for this end's requests (a custom connector, or an in-process
    /// server for tests and benchmarks); `None`: the SDK's default client (or the `https_proxy` one).
    pub http_client: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        // A proxy URL may carry a password: show its scheme and host only.
        let proxy = self
            .https_proxy
            .as_deref()
            .map(|p| match (p.split_once("://"), p.rsplit_once('@')) {
                (Some((scheme, _)), Some((_, host))) => format!("{scheme}://<redacted>@{host}"),
                _ => p.to_string(),
            });
        f.debug_struct("ClientConfig")
            .field("profile", &self.profile)
            .field("access_key", &hidden(&self.access_key))
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("force_path_style", &self.force_path_style)
            .field("aws_config_file", &self.aws_config_file)
            .field("aws_shared_credentials_file", &self.aws_shared_credentials_file)
            .field("sse_c", &self.sse_c)
            .field("accelerate", &self.accelerate)
            .field("request_payer", &self.request_payer)
            .field("https_proxy", &proxy)
            .field("no_sign_request", &self.no_sign_request)
            .field("http_client", &self.http_client.as_ref().map(|_| "<custom>"))
            .finish()
    }
}

/// The default of every option that has one, in one place: the CLI shows them in `--help`,
/// `Config`'s defaults and the other `Default`s use them.
pub mod defaults {
    const MIB: u64 = 1024 * 1024;
    /// `--worker-size`.
    pub const DEFAULT_WORKER_SIZE: u16 = 64;
    /// `--max-parallel-uploads`.
    pub const DEFAULT_MAX_PARALLEL_UPLOADS: u16 = 16;
    /// `--max-keys`.
    pub const DEFAULT_MAX_KEYS: i32 = 1000;
    /// `--aws-max-attempts`.
    pub const DEFAULT_AWS_MAX_ATTEMPTS: u32 = 10;
    /// `--initial-backoff-milliseconds`.
    pub const DEFAULT_INITIAL_BACKOFF_MILLISECONDS: u64 = 100;
    /// `--force-retry-count`.
    pub const DEFAULT_FORCE_RETRY_COUNT: u32 = 5;
    /// `--force-retry-interval-milliseconds`.
    pub const DEFAULT_FORCE_RETRY_INTERVAL_MILLISECONDS: u64 = 1000;
    /// `--multipart-threshold` and `--multipart-chunksize`, in bytes.
    pub const DEFAULT_MULTIPART_SIZE: u64 = 8 * MIB;
    /// `--lua-vm-memory-limit`, in bytes.
    pub const DEFAULT_LUA_VM_MEMORY_LIMIT: u64 = 64 * MIB;
    /// `--lua-callback-timeout-milliseconds`.
    pub const DEFAULT_LUA_CALLBACK_TIMEOUT_MILLISECONDS: u64 = 10_000;
    /// `--max-parallel-listings`.
    pub const DEFAULT_MAX_PARALLEL_LISTINGS: u16 = 16;
    /// `--max-parallel-listing-max-depth`.
    pub const DEFAULT_MAX_PARALLEL_LISTING_MAX_DEPTH: u16 = 2;
    /// `--object-listing-queue-size`.
    pub const DEFAULT_OBJECT_LISTING_QUEUE_SIZE: u32 = 200_000;
}

/// Retry and timeout settings of the S3 clients and of s3sync's own whole-object retry.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// SDK attempts per request.
    pub aws_max_attempts: u32,
    /// SDK initial backoff.
    pub initial_backoff: Duration,
    /// The engine's retries (of a part, a range, an object) after the SDK gave up.
    pub force_retry_count: u32,
    /// Base of the pauses between those retries: exponential growth with full jitter
    /// (see `retry::pause`).
    pub force_retry_interval: Duration,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Read timeout.
    pub read_timeout: Option<Duration>,
    /// Whole-operation timeout.
    pub operation_timeout: Option<Duration>,
    /// Per-attempt timeout.
    pub operation_attempt_timeout: Option<Duration>,
    /// Stalled-stream protection of the SDK.
    pub stalled_stream_protection: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            aws_max_attempts: defaults::DEFAULT_AWS_MAX_ATTEMPTS,
            initial_backoff: Duration::from_millis(defaults::DEFAULT_INITIAL_BACKOFF_MILLISECONDS),
            force_retry_count: defaults::DEFAULT_FORCE_RETRY_COUNT,
            force_retry_interval: Duration::from_millis(defaults::DEFAULT_FORCE_RETRY_INTERVAL_MILLISECONDS),
            connect_timeout: None,
            read_timeout: None,
            operation_timeout: None,
            operation_attempt_timeout: None,
            stalled_stream_protection: true,
        }
    }
}

/// Everything a sync run needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where objects come from.
    pub source: Location,
    /// Where objects go.
    pub target: Location,
    /// Client settings of the source (when S3).
    pub source_client: ClientConfig,
    /// Client settings of the target (when S3).
    pub target_client: ClientConfig,
    /// Retries and timeouts.
    pub retry: RetryConfig,
    /// Report what would happen, change nothing.
    pub dry_run: bool,
    /// S3→S3 with CopyObject / UploadPartCopy.
    pub server_side_copy: bool,
    /// Delete target objects absent from the source.
    pub delete: bool,
    /// Change detection.
    pub check: CheckMode,
    /// HEAD each target object instead of listing the target.
    pub head_each_target: bool,
    /// Transfer without comparing with the target.
    pub remove_modified_filter: bool,
    /// Objects transferred concurrently.
    pub worker_size: usize,
    /// Parts (or ranges) of one object transferred concurrently.
    pub max_parallel_uploads: usize,
    /// Objects of at least this size are written with multipart upload.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads.
    pub multipart_chunksize: u64,
    /// Budget of the chunk pool; `None` derives it (see [`Config::pool_budget`]).
    pub io_pool_size: Option<u64>,
    /// Page size of listings.
    pub max_keys: i32,
    /// Entries a listing may queue ahead of the diff (`--object-listing-queue-size`). At most
    /// [`MAX_LISTING_QUEUE`] are buffered whatever the value, so memory stays flat in the number of
    /// objects (the original's default of 200,000 would hold that many entries).
    pub listing_queue: usize,
    /// ListObjectsV2 chains one S3 listing may run at once (`--max-parallel-listings`); 1 lists
    /// sequentially. The entries still reach the diff in key order.
    pub parallel_listings: usize,
    /// Make each downloaded file durable before it takes its name (fsync of the file, and of the
    /// directories that received files, before the run ends): at exit 0 everything written survives a
    /// power loss. Off (`--no-fsync`): a file still appears under its name only complete and verified
    /// (atomic rename), so a crashed or killed process leaves nothing half-written, but a power loss
    /// may lose recently written files.
    pub fsync: bool,
    /// When a large local file is read with `O_DIRECT`, bypassing the page cache (`--direct-io`).
    pub direct_io: DirectIo,
    /// Verify ETags of transferred objects.
    pub verify_etag: bool,
    /// Verify ETags of multipart objects too.
    pub verify_multipart: bool,
    /// Send Content-MD5 with uploads.
    pub content_md5: bool,
    /// Sign payloads with SigV4 (single-chunk bodies).
    pub payload_signing: bool,
    /// Skip symbolic links of a local source.
    pub ignore_symlinks: bool,
    /// Turn warnings into errors.
    pub warn_as_error: bool,
    /// Source filters.
    pub filters: Filters,
    /// Target object attributes (metadata, tagging, storage class, ACL, SSE).
    pub attributes: AttributeOptions,
    /// Additional checksum written with uploads (`--additional-checksum-algorithm`) and its type.
    pub checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    /// Verify downloads against the object's stored additional checksum (`--enable-additional-checksum`).
    pub enable_additional_checksum: bool,
    /// Compare instead of transferring (`--report-sync-status`).
    pub report_sync_status: bool,
    /// Confirm every part's size of multipart sources (`--auto-chunksize`).
    pub auto_chunksize: bool,
    /// Objects per second (`--rate-limit-objects`).
    pub rate_limit_objects: Option<u64>,
    /// Bytes per second (`--rate-limit-bandwidth`).
    pub rate_limit_bandwidth: Option<u64>,
    /// Delete at most this many objects (`--max-delete`).
    pub max_delete: Option<u64>,
    /// The part of the key space this run handles (`--shard-count`), `None`: all of it.
    pub shard: Option<crate::shard::Shard>,
    /// Sync every version, oldest first, to a versioned target (`--enable-versioning`).
    pub enable_versioning: bool,
    /// Sync the state of a versioned source at this instant (`--point-in-time`).
    pub point_in_time: Option<std::time::SystemTime>,
    /// Copy the source's current tags to up-to-date targets (`--sync-latest-tagging`).
    pub sync_latest_tagging: bool,
    /// Also compare metadata in `--report-sync-status`.
    pub report_metadata_sync_status: bool,
    /// Also compare tags in `--report-sync-status`.
    pub report_tagging_sync_status: bool,
    /// Object annotations: copied with each object, refreshed on up-to-date objects, compared in
    /// `--report-sync-status` (S3 to S3 only).
    pub annotations: AnnotationSync,
    /// `--delete` also removes target objects that `--filter-exclude-regex` matches (`--delete-excluded`).
    pub delete_excluded: bool,
    /// Archived objects that cannot be read (GLACIER, DEEP_ARCHIVE) are skipped silently instead of
    /// with a warning (`--ignore-glacier-warnings`).
    pub ignore_glacier_warnings: bool,
    /// Compare additional checksums after transfers (off: `--disable-additional-checksum-verify`; the
    /// checksum is still sent and stored).
    pub verify_additional_checksum: bool,
    /// Preconditions sent with writes and deletes (optimistic locking).
    pub conditions: WriteConditions,
    /// User callbacks: filter, preprocess and event (Rust implementations or Lua scripts).
    pub callbacks: crate::callback::Callbacks,
}

/// Preconditions sent with the requests that change the target, so that a concurrent writer is
/// detected (HTTP 412) instead of overwritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteConditions {
    /// `If-Match: <target ETag as listed>` on PutObject, CompleteMultipartUpload and DeleteObject
    /// (`--if-match`).
    pub if_match: bool,
    /// `If-None-Match: *` on PutObject and CompleteMultipartUpload: only create, never overwrite
    /// (`--if-none-match`).
    pub if_none_match: bool,
    /// `x-amz-copy-source-if-match: <source ETag as listed>` on CopyObject and UploadPartCopy
    /// (`--copy-source-if-match`).
    pub copy_source_if_match: bool,
}

/// What happens to object annotations (named payloads attached to an S3 object version). All off by
/// default: each needs ListObjectAnnotations calls on both buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationSync {
    /// After an object is written, make the target's annotations those of the source: copy the new
    /// and changed ones, delete the ones the source lacks (`--enable-sync-object-annotations`).
    pub enabled: bool,
    /// Also for objects that are up to date (same ETag), so a changed annotation reaches the target
    /// without the object being copied again (`--sync-latest-object-annotations`).
    pub latest: bool,
    /// Tell changed annotations by ETag; off: by size and by the source being newer
    /// (`--disable-check-annotation-etag`).
    pub check_etag: bool,
    /// Compare annotations in `--report-sync-status` (`--report-annotations-sync-status`).
    pub report: bool,
}

impl Default for AnnotationSync {
    fn default() -> Self {
        AnnotationSync {
            enabled: false,
            latest: false,
            check_etag: true,
            report: false,
        }
    }
}

impl Config {
    /// Starts a builder for a sync from `source` to `target`.
    pub fn builder(source: Location, target: Location) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                source,
                target,
                source_client: ClientConfig::default(),
                target_client: ClientConfig::default(),
                retry: RetryConfig::default(),
                dry_run: false,
                server_side_copy: false,
                delete: false,
                check: CheckMode::Mtime,
                head_each_target: false,
                remove_modified_filter: false,
                worker_size: defaults::DEFAULT_WORKER_SIZE as usize,
                max_parallel_uploads: defaults::DEFAULT_MAX_PARALLEL_UPLOADS as usize,
                multipart_threshold: defaults::DEFAULT_MULTIPART_SIZE,
                multipart_chunksize: defaults::DEFAULT_MULTIPART_SIZE,
                io_pool_size: None,
                direct_io: DirectIo::Auto,
                max_keys: defaults::DEFAULT_MAX_KEYS,
                listing_queue: MAX_LISTING_QUEUE,
                parallel_listings: defaults::DEFAULT_MAX_PARALLEL_LISTINGS as usize,
                fsync: true,
                verify_etag: true,
                verify_multipart: true,
                content_md5: true,
                payload_signing: true,
                ignore_symlinks: false,
                warn_as_error: false,
                filters: Filters::default(),
                attributes: AttributeOptions::default(),
                checksum: None,
                enable_additional_checksum: false,
                report_sync_status: false,
                auto_chunksize: false,
                rate_limit_objects: None,
                rate_limit_bandwidth: None,
                max_delete: None,
                shard: None,
                enable_versioning: false,
                point_in_time: None,
                sync_latest_tagging: false,
                report_metadata_sync_status: false,
                report_tagging_sync_status: false,
                annotations: AnnotationSync::default(),
                delete_excluded: false,
                ignore_glacier_warnings: false,
                verify_additional_checksum: true,
                conditions: WriteConditions::default(),
                callbacks: Default::default(),
            },
        }
    }

    /// The chunk pool budget in bytes: `--io-pool-size`, or derived from the direction; never less
    /// than what one part or one single-request object needs.
    ///
    /// Derived, it is `max_parallel_uploads × multipart_chunksize` capped at 32 MiB when parts are
    /// held in the pool until the server has them (upload, S3 to S3: 4 parts of 8 MiB in flight),
    /// and the floor alone when the target is local: a download holds a chunk only from the network
    /// to its write at its offset. Registered with io_uring, the whole pool is pinned, so its size is
    /// resident memory for the whole run.
    pub fn pool_budget(&self, to_local: bool) -> u64 {
        let floor = self
            .multipart_chunksize
            .max(self.multipart_threshold)
            .max(POOL_CHUNK_SIZE as u64);
        let derived = match to_local {
            true => floor,
            false => (self.max_parallel_uploads as u64 * self.multipart_chunksize).min(PARTS_POOL_CAP),
        };
        self.io_pool_size.unwrap_or(derived).max(floor)
    }

    /// Checks cross-option rules.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.worker_size == 0 {
            return invalid("--worker-size must be at least 1");
        }
        if self.max_parallel_uploads == 0 {
            return invalid("--max-parallel-uploads must be at least 1");
        }
        if !(5 * MIB..=5 * 1024 * MIB).contains(&self.multipart_chunksize) {
            return invalid("--multipart-chunksize must be between 5MiB and 5GiB");
        }
        if self.server_side_copy && !(self.source.is_s3() && self.target.is_s3()) {
            return invalid("--server-side-copy needs S3 on both sides");
        }
        if !self.source.is_s3() && !self.target.is_s3() {
            return invalid("either SOURCE or TARGET must be s3://bucket[/prefix]; local to local is not supported");
        }
        if (self.enable_versioning || self.point_in_time.is_some()) && !self.source.is_s3() {
            return invalid("--enable-versioning and --point-in-time need an S3 source");
        }
        if self.enable_versioning && !self.target.is_s3() {
            return invalid("--enable-versioning needs an S3 target (a versioned bucket)");
        }
        if self.enable_versioning && self.point_in_time.is_some() {
            return invalid("--enable-versioning and --point-in-time cannot be used together");
        }
        if self.head_each_target && self.delete {
            return invalid("--head-each-target cannot be used with --delete (deleting needs a target listing)");
        }
        self.validate_writes()?;
        self.validate_reports()
    }

    /// The rules of what is written: encryption and conditional writes.
    fn validate_writes(&self) -> Result<()> {
        let invalid = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.attributes.sse_kms_key_id.is_some()
            && !matches!(self.attributes.sse.as_deref(), Some("aws:kms" | "aws:kms:dsse"))
        {
            return invalid("--sse-kms-key-id needs --sse aws:kms or aws:kms:dsse");
        }
        if (self.conditions.if_match || self.conditions.if_none_match) && !self.target.is_s3() {
            return invalid("--if-match and --if-none-match need an S3 target");
        }
        if self.conditions.if_match && self.conditions.if_none_match {
            return invalid("--if-match and --if-none-match cannot be used together");
        }
        if self.conditions.if_match && self.remove_modified_filter && !self.head_each_target {
            return invalid(
                "--if-match needs the target's ETag: use --head-each-target, or remove --remove-modified-filter",
            );
        }
        if self.conditions.copy_source_if_match && !self.server_side_copy {
            return invalid("--copy-source-if-match needs --server-side-copy");
        }
        if (self.conditions.if_match || self.conditions.copy_source_if_match)
            && (self.enable_versioning || self.point_in_time.is_some())
        {
            return invalid(
                "--if-match and --copy-source-if-match cannot be used with --enable-versioning or --point-in-time",
            );
        }
        Ok(())
    }

    /// The rules of annotations, reports, deletions, update checks and credentials.
    fn validate_reports(&self) -> Result<()> {
        let invalid = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        let a = self.annotations;
        if (a.enabled || a.latest || a.report) && !(self.source.is_s3() && self.target.is_s3()) {
            return invalid(
                "--enable-sync-object-annotations, --sync-latest-object-annotations and \
                 --report-annotations-sync-status need S3 on both sides",
            );
        }
        if a.report && !self.report_sync_status {
            return invalid("--report-annotations-sync-status needs --report-sync-status");
        }
        if (self.report_metadata_sync_status || self.report_tagging_sync_status) && !self.report_sync_status {
            return invalid("--report-metadata-sync-status and --report-tagging-sync-status need --report-sync-status");
        }
        for (side, c) in [("source", &self.source_client), ("target", &self.target_client)] {
            if c.access_key.is_some() != c.secret_access_key.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "--{side}-access-key and --{side}-secret-access-key must be given together"
                )));
            }
        }
        if self.delete_excluded && !self.delete {
            return invalid("--delete-excluded needs --delete");
        }
        if self.check.compares_digests() && self.remove_modified_filter {
            return invalid("--remove-modified-filter cannot be combined with an update check option");
        }
        Ok(())
    }
}

/// The most entries one listing queue buffers (see [`Config::listing_queue`]).
pub const MAX_LISTING_QUEUE: usize = 1000;

/// Size of one chunk of the pool: the unit of local reads and writes.
pub const POOL_CHUNK_SIZE: usize = 256 * 1024;

/// The most a derived pool holds for transfers that keep whole parts in it (see
/// [`Config::pool_budget`]).
pub const PARTS_POOL_CAP: u64 = 32 * MIB;

/// Builds a [`Config`] for library use.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Sets the source client settings.
    pub fn source_client(mut self, c: ClientConfig) -> Self {
        self.config.source_client = c;
        self
    }
    /// Sets the target client settings.
    pub fn target_client(mut self, c: ClientConfig) -> Self {
        self.config.target_client = c;
        self
    }
    /// Dry run.
    pub fn dry_run(mut self, v: bool) -> Self {
        self.config.dry_run = v;
        self
    }
    /// Delete target objects absent from the source.
    pub fn delete(mut self, v: bool) -> Self {
        self.config.delete = v;
        self
    }
    /// Server-side copy for S3→S3.
    pub fn server_side_copy(mut self, v: bool) -> Self {
        self.config.server_side_copy = v;
        self
    }
    /// Change detection mode.
    pub fn check(mut self, v: CheckMode) -> Self {
        self.config.check = v;
        self
    }
    /// Objects in flight.
    pub fn worker_size(mut self, v: usize) -> Self {
        self.config.worker_size = v;
        self
    }
    /// Multipart threshold and part size.
    pub fn multipart(mut self, threshold: u64, chunksize: u64) -> Self {
        self.config.multipart_threshold = threshold;
        self.config.multipart_chunksize = chunksize;
        self
    }
    /// Source filters.
    pub fn filters(mut self, f: Filters) -> Self {
        self.config.filters = f;
        self
    }
    /// Target object attributes.
    pub fn attributes(mut self, a: AttributeOptions) -> Self {
        self.config.attributes = a;
        self
    }
    /// Registers the filter callback (replaces any other, e.g. a Lua script's).
    pub fn filter_callback(mut self, cb: std::sync::Arc<dyn crate::callback::FilterCallback>) -> Self {
        self.config.callbacks.filter = Some(cb);
        self
    }
    /// Registers the preprocess callback (replaces any other, e.g. a Lua script's).
    pub fn preprocess_callback(mut self, cb: std::sync::Arc<dyn crate::callback::PreprocessCallback>) -> Self {
        self.config.callbacks.preprocess = Some(cb);
        self
    }
    /// Registers the event callback for the event types in `types` (replaces any other, e.g. a Lua
    /// script's).
    pub fn event_callback(
        mut self,
        cb: std::sync::Arc<dyn crate::callback::EventCallback>,
        types: crate::callback::EventType,
    ) -> Self {
        self.config.callbacks.event = Some((cb, types));
        self
    }
    /// Finishes the builder, checking cross-option rules.
    pub fn build(self) -> Result<Config> {
        self.config.validate()?;
        Ok(self.config)
    }
    /// Gives mutable access to every field for options without a dedicated setter.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }
}

/// When a local file being uploaded, or hashed to be compared, is read with `O_DIRECT` (`--direct-io`): from the disk straight
/// into pool memory, neither using nor filling the page cache. Reads of a large file in a migration
/// are read once; through the cache they cost a copy each and push out what other programs keep
/// there. Where the system or file system has no `O_DIRECT` (not Linux, tmpfs), files are read
/// through the cache whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// Files of at least [`DIRECT_IO_MIN_SIZE`] whose first page is not in the page cache.
    #[default]
    Auto,
    /// Every file read in ranges (at least one pool chunk).
    Always,
    /// None.
    Never,
}

/// The smallest file `--direct-io auto` reads with `O_DIRECT`.
pub const DIRECT_IO_MIN_SIZE: u64 = 64 * 1024 * 1024;

impl DirectIo {
    /// Parses `auto`, `always` or `never`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(DirectIo::Auto),
            "always" => Some(DirectIo::Always),
            "never" => Some(DirectIo::Never),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uploads and S3 to S3 keep whole parts in the pool (at most 32 MiB derived); a download only
    /// stages chunks on their way to disk (one part). `--io-pool-size` wins, down to one part.
    #[test]
    fn the_pool_budget_follows_the_direction() {
        let with = |f: fn(&mut Config)| {
            Config::builder(Location::parse("./d").unwrap(), Location::parse("s3://b/p/").unwrap())
                .with(f)
                .build()
                .unwrap()
        };
        let cfg = with(|_| {});
        assert_eq!((cfg.max_parallel_uploads, cfg.multipart_chunksize), (16, 8 * MIB));
        assert_eq!(cfg.pool_budget(false), 32 * MIB);
        assert_eq!(cfg.pool_budget(true), 8 * MIB);
        assert_eq!(with(|c| c.max_parallel_uploads = 2).pool_budget(false), 16 * MIB);
        let sized = with(|c| c.io_pool_size = Some(100 * MIB));
        assert_eq!(
            (sized.pool_budget(false), sized.pool_budget(true)),
            (100 * MIB, 100 * MIB)
        );
        let tiny = with(|c| c.io_pool_size = Some(MIB));
        assert_eq!(tiny.pool_budget(false), 8 * MIB, "never less than one part");
    }

    /// The library path is checked by the builder: rules that the command line states in clap hold for
    /// a `Config` built in code too.
    #[test]
    fn the_builder_checks_the_library_rules() {
        let local = || Location::parse("./d").unwrap();
        let s3 = || Location::parse("s3://b/p/").unwrap();
        let err = |b: ConfigBuilder| b.build().unwrap_err().to_string();
        let half_keys = ClientConfig {
            access_key: Some("AK".into()),
            ..Default::default()
        };
        let e = err(Config::builder(s3(), local()).source_client(half_keys));
        assert!(e.contains("--source-access-key and --source-secret-access-key"), "{e}");
        let e = err(Config::builder(local(), s3()).with(|c| c.report_tagging_sync_status = true));
        assert!(e.contains("need --report-sync-status"), "{e}");
        let e = err(Config::builder(local(), local()));
        assert!(e.contains("local to local"), "{e}");
        assert!(Config::builder(local(), s3()).build().is_ok());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = super::ClientConfig {
            access_key: Some("AKIAEXAMPLEKEY".into()),
            secret_access_key: Some("s3cr3t-value".into()),
            session_token: Some("token-value".into()),
            https_proxy: Some("http://user:pa55word@proxy:3128".into()),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        for secret in ["AKIAEXAMPLEKEY", "s3cr3t-value", "token-value", "pa55word"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("proxy:3128"));
    }
}
