//! From parsed command-line arguments to a library [`Config`]: the cross-flag rules live here.

use super::CliArgs;
use crate::attributes::{parse_metadata, AttributeOptions};
use crate::checksum::additional::{ChecksumAlgorithm, ChecksumType};
use crate::compare::CheckMode;
use crate::config::{ClientConfig, Config};
use crate::error::{Error, Result};
use crate::filter::Filters;
use crate::location::Location;
use crate::report::LogOptions;
use crate::storage::s3::SseC;
use std::time::Duration;

impl CliArgs {
    /// Logging options of these arguments.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            verbosity: self.verbose as i16 - self.quiet as i16,
            json: self.json_tracing,
            // A dry run shows what it would do, one line per object, as the reference does.
            dry_run: self.dry_run,
            no_color: self.disable_color_tracing,
            aws_sdk: self.aws_sdk_tracing,
            span_events: self.span_events_tracing,
        }
    }

    /// Builds the sync configuration. The rules between options are stated once: the ones of the
    /// command line in the clap declarations (`conflicts_with`, `requires`), the ones of the library in
    /// [`Config::validate`], which `build` runs; this function only converts.
    pub fn to_config(&self) -> Result<Config> {
        let (Some(source), Some(target)) = (&self.source, &self.target) else {
            return Err(Error::InvalidArgument(
                "both SOURCE and TARGET are required (see --help)".into(),
            ));
        };
        let source = Location::parse(source)?;
        let target = Location::parse(target)?;
        let shard = self.shard(&source, &target)?;
        let checksum = self.upload_checksum(&target)?;
        let enable_additional_checksum = self.enable_additional_checksum
            || (Location::is_directory_bucket(&source) && !self.disable_express_one_zone_additional_checksum);
        Config::builder(source, target)
            .source_client(self.client(Side::Source)?)
            .target_client(self.client(Side::Target)?)
            .dry_run(self.dry_run)
            .delete(self.delete)
            .server_side_copy(self.server_side_copy)
            .check(self.check_mode()?)
            .worker_size(self.worker_size as usize)
            .multipart(self.multipart_threshold, self.multipart_chunksize)
            .filters(self.filters())
            .attributes(self.attributes()?)
            .with(|c| {
                self.apply_transfer_options(c);
                self.apply_sync_options(c);
                c.checksum = checksum;
                c.enable_additional_checksum = enable_additional_checksum;
                c.shard = shard;
            })
            .build()
            .and_then(|mut c| {
                // Scripts are compiled last, once every other option is known to be valid.
                c.callbacks = self.lua_callbacks()?;
                Ok(c)
            })
    }

    /// The update check of `--check-*` (clap lets at most one through), by default the modification time.
    fn check_mode(&self) -> Result<CheckMode> {
        let given = [
            self.check_size,
            self.check_etag,
            self.check_mtime_and_etag,
            self.check_additional_checksum.is_some(),
            self.check_mtime_and_additional_checksum.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::InvalidArgument("only one --check-* option can be used".into()));
        }
        Ok(if self.check_size {
            CheckMode::Size
        } else if self.check_etag {
            CheckMode::Etag
        } else if self.check_mtime_and_etag {
            CheckMode::MtimeAndEtag
        } else if let Some(a) = &self.check_additional_checksum {
            CheckMode::Checksum(parse_algorithm(a)?)
        } else if let Some(a) = &self.check_mtime_and_additional_checksum {
            CheckMode::MtimeAndChecksum(parse_algorithm(a)?)
        } else {
            CheckMode::Mtime
        })
    }

    /// The client settings of one side.
    fn client(&self, side: Side) -> Result<ClientConfig> {
        let a = match side {
            Side::Source => SideArgs {
                profile: &self.source_profile,
                keys: (
                    &self.source_access_key,
                    &self.source_secret_access_key,
                    &self.source_session_token,
                ),
                region: &self.source_region,
                endpoint: &self.source_endpoint_url,
                flags: (
                    self.source_force_path_style,
                    self.source_accelerate,
                    self.source_request_payer,
                ),
                sse_c: (&self.source_sse_c, &self.source_sse_c_key, &self.source_sse_c_key_md5),
                no_sign_request: self.source_no_sign_request,
            },
            Side::Target => SideArgs {
                profile: &self.target_profile,
                keys: (
                    &self.target_access_key,
                    &self.target_secret_access_key,
                    &self.target_session_token,
                ),
                region: &self.target_region,
                endpoint: &self.target_endpoint_url,
                flags: (
                    self.target_force_path_style,
                    self.target_accelerate,
                    self.target_request_payer,
                ),
                sse_c: (&self.target_sse_c, &self.target_sse_c_key, &self.target_sse_c_key_md5),
                no_sign_request: false,
            },
        };
        // clap makes the algorithm, the key and its MD5 come together; arguments changed after
        // parsing are still never half taken.
        let sse_c = match a.sse_c {
            (Some(alg), Some(key), md5) => Some(SseC::new(alg.clone(), key.clone(), md5.clone())?),
            (None, None, _) => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "an SSE-C algorithm and key must be given together".into(),
                ))
            }
        };
        Ok(ClientConfig {
            profile: a.profile.clone(),
            access_key: a.keys.0.clone(),
            secret_access_key: a.keys.1.clone(),
            session_token: a.keys.2.clone(),
            region: a.region.clone(),
            endpoint_url: a.endpoint.clone(),
            force_path_style: a.flags.0,
            aws_config_file: self.aws_config_file.clone().map(Into::into),
            aws_shared_credentials_file: self.aws_shared_credentials_file.clone().map(Into::into),
            sse_c,
            accelerate: a.flags.1,
            request_payer: a.flags.2,
            https_proxy: self.https_proxy.clone(),
            no_sign_request: a.no_sign_request,
            http_client: None,
        })
    }

    /// The additional checksum sent with uploads: `--additional-checksum-algorithm`, or CRC64NVME for
    /// an Express One Zone target (directory buckets: ETags are not MD5s), as the reference does.
    fn upload_checksum(&self, target: &Location) -> Result<Option<(ChecksumAlgorithm, ChecksumType)>> {
        match &self.additional_checksum_algorithm {
            Some(name) => {
                let algo = parse_algorithm(name)?;
                let kind =
                    ChecksumType::for_algorithm(algo, self.full_object_checksum).map_err(Error::InvalidArgument)?;
                Ok(Some((algo, kind)))
            }
            None if Location::is_directory_bucket(target) && !self.disable_express_one_zone_additional_checksum => {
                Ok(Some((ChecksumAlgorithm::Crc64Nvme, ChecksumType::FullObject)))
            }
            None => Ok(None),
        }
    }

    /// The attributes written with each object.
    fn attributes(&self) -> Result<AttributeOptions> {
        let metadata = self.metadata.as_deref().map(parse_metadata).transpose();
        Ok(AttributeOptions {
            cache_control: self.cache_control.clone(),
            content_disposition: self.content_disposition.clone(),
            content_encoding: self.content_encoding.clone(),
            content_language: self.content_language.clone(),
            content_type: self.content_type.clone(),
            expires: self.expires.map(Into::into),
            metadata: metadata.map_err(Error::InvalidArgument)?,
            website_redirect: self.website_redirect.clone(),
            no_sync_system_metadata: self.no_sync_system_metadata,
            no_sync_user_defined_metadata: self.no_sync_user_defined_metadata,
            no_guess_mime_type: self.no_guess_mime_type,
            put_last_modified_metadata: self.put_last_modified_metadata,
            storage_class: self.storage_class.clone(),
            acl: self.acl.clone(),
            tagging: self.tagging.clone(),
            disable_tagging: self.disable_tagging,
            sse: self.sse.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
        })
    }

    /// The `--filter-*` options.
    fn filters(&self) -> Filters {
        Filters {
            mtime_before: self.filter_mtime_before.map(Into::into),
            mtime_after: self.filter_mtime_after.map(Into::into),
            smaller_size: self.filter_smaller_size,
            larger_size: self.filter_larger_size,
            include_regex: self.filter_include_regex.clone(),
            exclude_regex: self.filter_exclude_regex.clone(),
            include_content_type_regex: self.filter_include_content_type_regex.clone(),
            exclude_content_type_regex: self.filter_exclude_content_type_regex.clone(),
            include_metadata_regex: self.filter_include_metadata_regex.clone(),
            exclude_metadata_regex: self.filter_exclude_metadata_regex.clone(),
            include_tag_regex: self.filter_include_tag_regex.clone(),
            exclude_tag_regex: self.filter_exclude_tag_regex.clone(),
        }
    }

    /// How objects move: verification, durability, parallelism, retries and rate limits.
    fn apply_transfer_options(&self, c: &mut Config) {
        let ms = Duration::from_millis;
        c.max_parallel_uploads = self.max_parallel_uploads as usize;
        c.io_pool_size = self.io_pool_size;
        c.max_keys = self.max_keys;
        c.listing_queue = self.object_listing_queue_size as usize;
        c.parallel_listings = self.max_parallel_listings as usize;
        c.verify_etag = !self.disable_etag_verify;
        c.fsync = !self.no_fsync;
        c.direct_io = crate::config::DirectIo::parse(&self.direct_io).unwrap_or_default();
        c.verify_multipart = !self.disable_multipart_verify;
        c.verify_additional_checksum = !self.disable_additional_checksum_verify;
        c.content_md5 = !self.disable_content_md5_header;
        c.payload_signing = !self.disable_payload_signing;
        c.ignore_symlinks = self.ignore_symlinks;
        c.warn_as_error = self.warn_as_error;
        c.retry.aws_max_attempts = self.aws_max_attempts;
        c.retry.initial_backoff = ms(self.initial_backoff_milliseconds);
        c.retry.force_retry_count = self.force_retry_count;
        c.retry.force_retry_interval = ms(self.force_retry_interval_milliseconds);
        c.retry.connect_timeout = self.connect_timeout_milliseconds.map(ms);
        c.retry.read_timeout = self.read_timeout_milliseconds.map(ms);
        c.retry.operation_timeout = self.operation_timeout_milliseconds.map(ms);
        c.retry.operation_attempt_timeout = self.operation_attempt_timeout_milliseconds.map(ms);
        c.retry.stalled_stream_protection = !self.disable_stalled_stream_protection;
        c.auto_chunksize = self.auto_chunksize;
        c.rate_limit_objects = self.rate_limit_objects.map(u64::from);
        c.rate_limit_bandwidth = self.rate_limit_bandwidth;
    }

    /// What is compared, written, deleted and reported, with the implications the reference gives
    /// some options.
    fn apply_sync_options(&self, c: &mut Config) {
        c.head_each_target = self.head_each_target;
        c.remove_modified_filter = self.remove_modified_filter;
        c.max_delete = self.max_delete;
        c.delete_excluded = self.delete_excluded;
        c.ignore_glacier_warnings = self.ignore_glacier_warnings;
        c.enable_versioning = self.enable_versioning;
        c.point_in_time = self.point_in_time.map(Into::into);
        c.sync_latest_tagging = self.sync_latest_tagging;
        c.report_sync_status = self.report_sync_status;
        c.report_metadata_sync_status = self.report_metadata_sync_status;
        c.report_tagging_sync_status = self.report_tagging_sync_status;
        c.annotations = crate::config::AnnotationSync {
            enabled: self.enable_sync_object_annotations || self.sync_latest_object_annotations,
            latest: self.sync_latest_object_annotations,
            check_etag: !self.disable_check_annotation_etag,
            report: self.report_annotations_sync_status,
        };
        c.conditions = crate::config::WriteConditions {
            if_match: self.if_match,
            if_none_match: self.if_none_match,
            copy_source_if_match: self.copy_source_if_match,
        };
        // As the reference: the latest annotations are looked up on every object (a HEAD of each
        // target), and the source is the truth for any object whose ETag differs.
        if self.sync_latest_object_annotations {
            c.head_each_target = true;
            if !c.check.compares_digests() {
                c.remove_modified_filter = true;
            }
        }
        // As the reference: --sync-latest-tagging looks at every object with a HEAD.
        if self.sync_latest_tagging {
            c.head_each_target = true;
        }
        // As the reference: a point-in-time sync always overwrites the target.
        if self.point_in_time.is_some() {
            c.remove_modified_filter = true;
        }
    }

    /// The Lua callbacks of `--*-callback-lua-script`, each script loaded and compiled now, so a
    /// broken script fails the run before any transfer.
    fn lua_callbacks(&self) -> Result<crate::callback::Callbacks> {
        use crate::callback::lua::{LuaEvent, LuaFilter, LuaPreprocess, LuaSettings};
        use crate::callback::EventType;
        use std::path::Path;
        use std::sync::Arc;
        let settings = LuaSettings {
            allow_os_library: self.allow_lua_os_library,
            allow_unsafe_vm: self.allow_lua_unsafe_vm,
            memory_limit: self.lua_vm_memory_limit,
            timeout: (self.lua_callback_timeout_milliseconds > 0)
                .then(|| Duration::from_millis(self.lua_callback_timeout_milliseconds)),
            interrupt: Default::default(),
        };
        let mut callbacks = crate::callback::Callbacks {
            interrupt: settings.interrupt.clone(),
            ..Default::default()
        };
        if let Some(p) = &self.filter_callback_lua_script {
            callbacks.filter = Some(Arc::new(LuaFilter::load(Path::new(p), &settings)?));
        }
        if let Some(p) = &self.preprocess_callback_lua_script {
            callbacks.preprocess = Some(Arc::new(LuaPreprocess::load(Path::new(p), &settings)?));
        }
        if let Some(p) = &self.event_callback_lua_script {
            // The event script is not interrupted: after a Ctrl-C it still gets the queued events and
            // the run's end (its timeout bounds each call).
            let settings = LuaSettings {
                interrupt: Default::default(),
                ..settings.clone()
            };
            callbacks.event = Some((
                Arc::new(LuaEvent::load(Path::new(p), &settings)?),
                EventType::ALL_EVENTS,
            ));
        }
        Ok(callbacks)
    }
}

impl CliArgs {
    /// The shard of this run: `--shard-count` with `--shard-index` (or the index a batch system sets),
    /// by hash, or by the range of `--shard-plan`.
    fn shard(&self, source: &Location, target: &Location) -> Result<Option<crate::shard::Shard>> {
        let Some(count) = self.shard_count else {
            return Ok(None);
        };
        const INDEX_VARS: [&str; 3] = [
            "JOB_COMPLETION_INDEX",
            "SLURM_ARRAY_TASK_ID",
            "AWS_BATCH_JOB_ARRAY_INDEX",
        ];
        let index = match self.shard_index {
            Some(i) => i,
            None => {
                let (name, value) = INDEX_VARS
                    .iter()
                    .find_map(|v| std::env::var(v).ok().map(|x| (*v, x)))
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "--shard-count needs --shard-index (or JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID, AWS_BATCH_JOB_ARRAY_INDEX)".into(),
                        )
                    })?;
                value
                    .trim()
                    .parse()
                    .map_err(|_| Error::InvalidArgument(format!("{name}={value} is not a shard index")))?
            }
        };
        if index >= count {
            return Err(Error::InvalidArgument(format!(
                "shard index {index} is out of range for {count} shards (0..{count})"
            )));
        }
        let shard = match &self.shard_plan {
            Some(path) => {
                crate::shard::ShardPlan::load(path)?.shard(index, count, &source.to_string(), &target.to_string())?
            }
            None => crate::shard::Shard {
                index,
                count,
                mode: crate::shard::ShardMode::Hash,
            },
        };
        Ok(Some(shard))
    }
}

/// One side of a sync, for the options that come in a source and a target form.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Target,
}

/// The `--source-*` or `--target-*` options of one side.
struct SideArgs<'a> {
    profile: &'a Option<String>,
    /// Access key, secret access key, session token.
    keys: (&'a Option<String>, &'a Option<String>, &'a Option<String>),
    region: &'a Option<String>,
    endpoint: &'a Option<String>,
    /// Force path style, accelerate, request payer.
    flags: (bool, bool, bool),
    /// SSE-C algorithm, key, key MD5.
    sse_c: (&'a Option<String>, &'a Option<String>, &'a Option<String>),
    no_sign_request: bool,
}

/// A checksum algorithm named on the command line (clap checks the names).
fn parse_algorithm(name: &str) -> Result<ChecksumAlgorithm> {
    ChecksumAlgorithm::parse(name).ok_or_else(|| Error::InvalidArgument(format!("unknown checksum algorithm {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<Config> {
        let mut all = vec!["s3sync"];
        all.extend_from_slice(args);
        CliArgs::try_parse_from(all)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .to_config()
    }

    #[test]
    fn express_one_zone_defaults_to_crc64nvme() {
        let c = config(&["./d", "s3://bucket--usw2-az1--x-s3/p/"]).unwrap();
        assert_eq!(
            c.checksum,
            Some((ChecksumAlgorithm::Crc64Nvme, ChecksumType::FullObject))
        );
        let c = config(&["s3://bucket--usw2-az1--x-s3/p/", "./d"]).unwrap();
        assert!(c.enable_additional_checksum);
        let c = config(&[
            "--disable-express-one-zone-additional-checksum",
            "./d",
            "s3://bucket--usw2-az1--x-s3/",
        ])
        .unwrap();
        assert_eq!(c.checksum, None);
        let c = config(&["./d", "s3://plain-bucket/"]).unwrap();
        assert_eq!(c.checksum, None);
    }

    #[test]
    fn contradictory_options_are_refused() {
        assert!(config(&["--full-object-checksum", "./d", "s3://b/"]).is_err());
        assert!(config(&[
            "--additional-checksum-algorithm",
            "SHA256",
            "--full-object-checksum",
            "./d",
            "s3://b/"
        ])
        .is_err());
        assert!(config(&["--server-side-copy", "./d", "s3://b/"]).is_err());
        assert!(config(&["./a", "./b"]).is_err());
        assert!(config(&["--enable-versioning", "./d", "s3://b/"]).is_err());
    }

    /// The rules between options are clap's: a contradiction is a usage error (exit code 2) that
    /// names the options.
    #[test]
    fn option_rules_are_usage_errors() {
        let usage = |args: &[&str]| {
            let mut all = vec!["s3sync"];
            all.extend_from_slice(args);
            let e = CliArgs::try_parse_from(all).expect_err("a usage error");
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        };
        let e = usage(&["--check-size", "--check-etag", "s3://a/", "./d"]);
        assert!(e.contains("--check-etag") && e.contains("--check-size"), "{e}");
        let e = usage(&["--target-access-key", "k", "./d", "s3://b/"]);
        assert!(e.contains("--target-secret-access-key"), "{e}");
        let e = usage(&["--source-sse-c", "AES256", "s3://a/", "./d"]);
        assert!(e.contains("--source-sse-c-key"), "{e}");
        let e = usage(&["--report-tagging-sync-status", "s3://a/", "s3://b/"]);
        assert!(e.contains("--report-sync-status"), "{e}");
        let e = usage(&["--full-object-checksum", "./d", "s3://b/"]);
        assert!(e.contains("--additional-checksum-algorithm"), "{e}");
    }

    #[test]
    fn the_listing_queue_size_is_taken_and_bounded_where_used() {
        let c = config(&["--object-listing-queue-size", "10", "s3://a/", "./d"]).unwrap();
        assert_eq!(c.listing_queue, 10);
        // The original's default, 200,000: the pipeline buffers at most MAX_LISTING_QUEUE of them.
        let c = config(&["s3://a/", "./d"]).unwrap();
        assert_eq!(c.listing_queue, 200_000);
        assert!(config(&["--object-listing-queue-size", "0", "s3://a/", "./d"]).is_err());
    }

    /// A command line without options gives the library's default configuration.
    #[test]
    fn the_cli_defaults_are_the_library_defaults() {
        let c = config(&["s3://a/", "./d"]).unwrap();
        let d = Config::builder(c.source.clone(), c.target.clone()).build().unwrap();
        assert_eq!(
            (
                c.worker_size,
                c.max_parallel_uploads,
                c.multipart_threshold,
                c.multipart_chunksize,
                c.max_keys
            ),
            (
                d.worker_size,
                d.max_parallel_uploads,
                d.multipart_threshold,
                d.multipart_chunksize,
                d.max_keys
            )
        );
        assert_eq!(
            (
                c.retry.aws_max_attempts,
                c.retry.initial_backoff,
                c.retry.force_retry_count,
                c.retry.force_retry_interval
            ),
            (
                d.retry.aws_max_attempts,
                d.retry.initial_backoff,
                d.retry.force_retry_count,
                d.retry.force_retry_interval
            )
        );
        assert_eq!((c.fsync, c.verify_etag), (d.fsync, d.verify_etag));
    }

    #[test]
    fn direct_io_is_auto_unless_set() {
        use crate::config::DirectIo;
        assert_eq!(config(&["./d", "s3://a/"]).unwrap().direct_io, DirectIo::Auto);
        assert_eq!(
            config(&["--direct-io", "always", "./d", "s3://a/"]).unwrap().direct_io,
            DirectIo::Always
        );
        assert_eq!(
            config(&["--direct-io", "never", "./d", "s3://a/"]).unwrap().direct_io,
            DirectIo::Never
        );
    }

    #[test]
    fn fsync_is_on_unless_turned_off() {
        assert!(config(&["s3://a/", "./d"]).unwrap().fsync);
        assert!(!config(&["--no-fsync", "s3://a/", "./d"]).unwrap().fsync);
    }

    #[test]
    fn annotation_options() {
        let c = config(&["s3://a/", "s3://b/"]).unwrap();
        assert_eq!(c.annotations, crate::config::AnnotationSync::default());
        let c = config(&[
            "--enable-sync-object-annotations",
            "--disable-check-annotation-etag",
            "s3://a/",
            "s3://b/",
        ])
        .unwrap();
        assert!(c.annotations.enabled && !c.annotations.latest && !c.annotations.check_etag);
        assert!(!c.head_each_target && !c.remove_modified_filter);
        // As the reference: the latest annotations need a HEAD of each target and no mtime filter.
        let c = config(&["--sync-latest-object-annotations", "s3://a/", "s3://b/"]).unwrap();
        assert!(c.annotations.enabled && c.annotations.latest && c.annotations.check_etag);
        assert!(c.head_each_target && c.remove_modified_filter);
        let c = config(&["--sync-latest-object-annotations", "--check-etag", "s3://a/", "s3://b/"]).unwrap();
        assert!(c.head_each_target && !c.remove_modified_filter);
        let c = config(&[
            "--report-sync-status",
            "--report-annotations-sync-status",
            "s3://a/",
            "s3://b/",
        ])
        .unwrap();
        assert!(c.annotations.report);

        let err = |args: &[&str]| config(args).unwrap_err().to_string();
        assert!(err(&["--enable-sync-object-annotations", "./d", "s3://b/"]).contains("need S3 on both sides"));
        assert!(err(&["--sync-latest-object-annotations", "s3://a/", "./d"]).contains("need S3 on both sides"));
        assert!(config(&["--report-annotations-sync-status", "s3://a/", "s3://b/"]).is_err());
    }
}
