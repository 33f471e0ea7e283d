//! The stages of a run and the bounded channels between them:
//! source lister → merge diff (with the target lister) → transfer workers → statistics,
//! then deletions once the source listing has completed without error.
//!
//! Every channel is bounded, so memory stays flat in the number of objects and the first transfer
//! starts while listings are still running.

pub mod diff;
mod sort;
mod spill;
mod versioned;

use crate::compare::{decide, CheckMode, Verdict};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::location::Location;
use crate::stats::{Reporter, Stats, SyncEvent, SyncStatus};
use crate::storage::client::build_object_client;
use crate::storage::local::{LocalStorage, WalkRole};
use crate::storage::object_client::ObjectClient;
use crate::storage::s3::S3Storage;
use crate::storage::Entry;
use crate::transfer::{End, Transferer};
use diff::{Disorder, Pair, TargetState};
use futures::StreamExt;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const LISTING_CHANNEL: usize = crate::config::MAX_LISTING_QUEUE;

/// What one pass of listing, merging and transferring found.
struct Pass {
    /// The listings found out of key order.
    disorder: Disorder,
    /// Whether a listing failed (deletion must not run).
    listing_failed: bool,
    /// The deletion candidates.
    deletions: spill::Spill,
}

/// The keys a pass decided (skipped or handed to a worker), so that a pass that lists again after
/// finding a listing out of order neither counts nor transfers them twice. Bounded: a listing out of
/// order shows it within its first pages (no key is decided before each side showed 1,000 in order);
/// keys past the bound are decided again, and are counted twice (a transfer, or a plan under
/// --dry-run, in the first pass; up to date, or planned again, in the second). Each key is held as
/// 128 bits of its SHA-256, a sixth of what the keys themselves took: two keys share them by chance
/// never, on purpose only after about 2^64 hashes, and even then the cost is one key skipped in the
/// second pass of a listing found out of order.
#[derive(Default)]
struct Decided {
    keys: std::collections::HashSet<[u8; 16]>,
}

impl Decided {
    /// Keys remembered at most.
    const MAX: usize = 10_000;

    fn record(&mut self, key: &str) {
        if self.keys.len() < Self::MAX {
            self.keys.insert(Self::digest(key));
        }
    }

    /// Whether `key` was recorded.
    fn contains(&self, key: &str) -> bool {
        !self.keys.is_empty() && self.keys.contains(&Self::digest(key))
    }

    fn digest(key: &str) -> [u8; 16] {
        use sha2::Digest as _;
        let full = sha2::Sha256::digest(key.as_bytes());
        let mut out = [0; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// One sync run: configure it, optionally subscribe to events or keep a cancellation token, then `run`.
pub struct Sync {
    cfg: Arc<Config>,
    reporter: Arc<Reporter>,
    cancel: CancellationToken,
    events_rx: Option<mpsc::UnboundedReceiver<SyncEvent>>,
    callback_rx: Option<mpsc::UnboundedReceiver<SyncEvent>>,
    stop: Arc<Stop>,
    /// The client of the S3 ends, when not the SDK's.
    object_client: Option<Arc<dyn ObjectClient>>,
}

/// How a run is stopped from inside: a filter or preprocess callback that fails ends the run with its
/// error (the cancellation token stops every stage; the error is what `run` returns).
#[derive(Debug)]
pub struct Stop {
    token: CancellationToken,
    error: std::sync::Mutex<Option<Error>>,
}

impl Stop {
    /// Stops the run with `e` (the first error wins).
    pub fn fail(&self, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        self.token.cancel();
    }

    fn take(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// A unit of work for the transfer workers.
struct Job {
    source: Entry,
    target: TargetState,
}

impl Sync {
    /// A run of `cfg`.
    pub fn new(cfg: Config) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut reporter = Reporter::new(Some(tx));
        let mut callback_rx = None;
        if let Some((_, mask)) = &cfg.callbacks.event {
            let (ctx, crx) = mpsc::unbounded_channel();
            reporter = reporter.with_callback(ctx, *mask);
            callback_rx = Some(crx);
        }
        let cancel = CancellationToken::new();
        Sync {
            cfg: Arc::new(cfg),
            reporter: Arc::new(reporter),
            stop: Arc::new(Stop {
                token: cancel.clone(),
                error: Default::default(),
            }),
            cancel,
            events_rx: Some(rx),
            callback_rx,
            object_client: None,
        }
    }

    /// Sends the requests of both S3 ends through `client` instead of an SDK client built from the
    /// configuration (an in-memory service, or one that injects failures).
    pub fn with_object_client(mut self, client: Arc<dyn ObjectClient>) -> Self {
        self.object_client = Some(client);
        self
    }

    /// The per-object events of this run (take once, before `run`). Unread events are kept in memory,
    /// so a caller that takes the receiver should drain it.
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<SyncEvent>> {
        self.events_rx.take()
    }

    /// A token that stops the run when cancelled: no new work starts, in-flight multipart uploads are
    /// aborted and temporary files removed.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The live counters, e.g. for a progress bar.
    pub fn reporter(&self) -> Arc<Reporter> {
        self.reporter.clone()
    }

    /// Runs the sync to the end and returns its statistics. `Err` means the run could not start or was
    /// cancelled (or, [`Error::Internal`], that a bug ended it); per-object failures are counted in the
    /// statistics. The run is a task of its own on the current runtime; dropping this future stops it.
    pub async fn run(self) -> Result<Stats> {
        // The run's own loop (routing every listed pair) is woken once per pair: as a task it runs on
        // the runtime's workers, not on the thread that awaits the run (often a `block_on`, which
        // every wake-up would have to unpark: a third of the no-op run's context switches). Dropping
        // this future still stops the run, as it did when the run was polled here.
        use tracing::Instrument as _;
        let task = tokio::spawn(self.run_here().in_current_span());
        match tokio_util::task::AbortOnDropHandle::new(task).await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Err(Error::Cancelled),
            Err(e) => Err(Error::Internal(format!("the run ended abnormally: {e}"))),
        }
    }

    async fn run_here(mut self) -> Result<Stats> {
        // Unread events would accumulate: drop the receiver unless the caller took it.
        self.events_rx = None;
        self.cfg.validate()?;
        let dispatcher = self.callback_rx.take().and_then(|rx| {
            let (cb, mask) = self.cfg.callbacks.event.clone()?;
            Some(tokio::spawn(dispatch_events(rx, cb, mask, self.cfg.dry_run)))
        });
        // Callbacks that can be stopped midway (a Lua script in a long loop) stop with the run.
        let linker = {
            let (cancel, interrupt) = (self.cancel.clone(), self.cfg.callbacks.interrupt.clone());
            tokio::spawn(async move {
                cancel.cancelled().await;
                interrupt.cancel();
            })
        };
        self.reporter.pipeline_start();
        let result = self.run_stages().await;
        let result = match (result, self.stop.take()) {
            (Err(Error::Cancelled), Some(e)) => Err(e),
            (r, _) => r,
        };
        if let Err(e) = &result {
            self.reporter.run_failed(e);
        }
        self.reporter.pipeline_end();
        if let Some(d) = dispatcher {
            let _ = d.await;
        }
        linker.abort();
        result
    }

    async fn run_stages(&mut self) -> Result<Stats> {
        let cfg = self.cfg.clone();
        let (source, target) = self.open_ends().await?;
        warn_unverifiable_etags(&cfg);
        let transferer = self.transferer(&source, &target);

        if cfg.enable_versioning {
            if let (End::S3(s), End::S3(t)) = (&source, &target) {
                versioned::run(transferer.clone(), s.clone(), t.clone(), self.cancel.clone()).await?;
                transferer.cleanups.wait().await;
                if self.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                return Ok(self.reporter.snapshot());
            }
        }

        let pass = self.diff_passes(&source, &target, &transferer).await?;
        self.reporter.listing_done();
        transferer.cleanups.wait().await;
        transferer.durability.flush_dirs().await;
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if !cfg.dry_run && !cfg.report_sync_status {
            transferer.sweep_journal().await;
        }

        if cfg.delete && !cfg.report_sync_status {
            self.delete_extraneous(&target, pass).await?;
        }
        Ok(self.reporter.snapshot())
    }

    /// Opens and checks both ends (creating a local target's directory unless in a dry run); returns
    /// the source and the target. A cancellation while opening ends the run at once.
    async fn open_ends(&self) -> Result<(End, End)> {
        let cfg = &self.cfg;
        // Opening both ends may wait on the network: a cancellation ends the run here at once.
        let (source, target) = tokio::select! {
            _ = self.cancel.cancelled() => return Err(Error::Cancelled),
            ends = async {
                let client = self.object_client.as_ref();
                let source = open_end(&cfg.source, &cfg.source_client, cfg, client).await?;
                let target = open_end(&cfg.target, &cfg.target_client, cfg, client).await?;
                check_end(&source, true).await?;
                check_end(&target, false).await?;
                Ok::<_, Error>((source, target))
            } => ends?,
        };
        if let (End::Local(l), false) = (&target, cfg.dry_run) {
            tokio::fs::create_dir_all(l.root())
                .await
                .map_err(|e| Error::local("create directory", l.root(), e))?;
        }
        Ok((source, target))
    }

    /// The transferer of this run between `source` and `target`.
    fn transferer(&self, source: &End, target: &End) -> Arc<Transferer> {
        let cfg = &self.cfg;
        Arc::new(Transferer {
            io: crate::transfer::LazyIo::new(
                cfg.pool_budget(matches!(target, End::Local(_))),
                matches!(source, End::Local(_)) || matches!(target, End::Local(_)),
            ),
            source: source.clone(),
            target: target.clone(),
            cfg: cfg.clone(),
            policy: crate::transfer::verify::Policy::new(cfg, source, target),
            reporter: self.reporter.clone(),
            limits: crate::ratelimit::Limits::new(cfg.rate_limit_objects, cfg.rate_limit_bandwidth),
            journal: if cfg.dry_run {
                None
            } else {
                crate::transfer::resume::Journal::open_default()
            },
            cleanups: Default::default(),
            durability: crate::transfer::Durability::new(cfg.fsync),
            range_gets: crate::transfer::RangeGets::new(cfg.max_parallel_uploads),
            stop: self.stop.clone(),
        })
    }

    /// Listing, merge and transfers, in as many passes as it takes: a listing found out of key order
    /// is listed again, sorted on disk. Returns the last pass.
    async fn diff_passes(&self, source: &End, target: &End, transferer: &Arc<Transferer>) -> Result<Pass> {
        // Listing, merge and transfers. A listing found out of key order is listed again, sorted on
        // disk (directory buckets are sorted from the start): the keys already decided are then seen
        // as up to date, and --delete works on the complete, ordered listings.
        let mut sort = Disorder {
            source: self.cfg.source.is_directory_bucket(),
            target: self.cfg.target.is_directory_bucket(),
        };
        let mut decided = Decided::default();
        loop {
            let pass = self.diff_pass(source, target, transferer, sort, &mut decided).await?;
            let again = Disorder {
                source: pass.disorder.source && !sort.source,
                target: pass.disorder.target && !sort.target,
            };
            if !again.any() || self.cancel.is_cancelled() || self.stop.token.is_cancelled() {
                return Ok(pass);
            }
            let side = if again.source { "source" } else { "target" };
            warn!("the {side} listing is not in key order: listing again, sorted on disk");
            self.reporter.relisting();
            // Every S3 side is sorted now (local walks are sorted already), so there is no third pass.
            sort.source |= again.source || matches!(source, End::S3(_));
            sort.target |= again.target || matches!(target, End::S3(_));
        }
    }

    /// `--delete`: deletes the deletion candidates of `pass` from `target`, unless a listing failed or
    /// was not in key order (then a warning says why nothing was deleted).
    async fn delete_extraneous(&self, target: &End, pass: Pass) -> Result<()> {
        if pass.listing_failed {
            self.reporter.warning(
                "",
                "deletion skipped: a listing did not complete (see the errors above)".into(),
            );
        } else if pass.disorder.any() {
            self.reporter
                .warning("", "deletion skipped: a listing was not in key order".into());
        } else {
            run_deletions(target, pass.deletions, &self.cfg, &self.reporter, &self.cancel).await?;
        }
        Ok(())
    }

    /// One pass: lists both ends (sorting the sides in `sort` on disk), merges, and routes every pair:
    /// skips and plans here, transfers to the workers, deletion candidates to a spill file. A pass that
    /// does not sort a side stops at that side's first key out of order. Returns when every worker is done.
    async fn diff_pass(
        &self,
        source: &End,
        target: &End,
        transferer: &Arc<Transferer>,
        sort: Disorder,
        decided: &mut Decided,
    ) -> Result<Pass> {
        // What the pass before decided (empty in the first pass); this pass records afresh.
        let earlier = std::mem::take(decided);
        let (src_rx, tgt_rx) = self.spawn_listers(source, target, sort);

        // Merge.
        let (pair_tx, mut pair_rx) = mpsc::channel::<Pair>(LISTING_CHANNEL);
        // Stop at the first key out of order of a side not sorted yet: the run lists it again, sorted.
        let stop_on = Disorder {
            source: !sort.source,
            target: !sort.target,
        };
        let no_listing = unlisted_target_state(&self.cfg);
        let merge = tokio::spawn(diff::merge(src_rx, tgt_rx, no_listing, pair_tx, stop_on));

        // Workers.
        // One queue that every worker takes from (multi-consumer: no lock between the workers).
        let (job_tx, job_rx) = async_channel::bounded::<Job>(self.cfg.worker_size * 2);
        let workers = self.spawn_workers(transferer, &job_rx);

        // Route pairs: skip/plan here (cheap), transfers to the workers, deletions to the spill file.
        let mut router = Router {
            sync: self,
            target,
            jobs: job_tx,
            earlier,
            decided,
            deletions: spill::Spill::new(self.cfg.delete)?,
            listing_failed: false,
        };
        router.route_all(&mut pair_rx).await?;
        let Router {
            jobs: job_tx,
            deletions,
            mut listing_failed,
            ..
        } = router;
        drop(job_tx);
        // Nobody reads pairs any more: the merge (and through it the listers) ends at its next send.
        drop(pair_rx);
        let (disorder, merge_failed) = self.end_merge(merge).await;
        listing_failed |= merge_failed;
        for w in workers {
            let _ = w.await;
        }
        Ok(Pass {
            disorder,
            listing_failed,
            deletions,
        })
    }

    /// Starts the listers of one pass (sorting the sides in `sort` on disk); returns the receivers of
    /// the source listing and, when the target is listed at all, of the target listing.
    fn spawn_listers(
        &self,
        source: &End,
        target: &End,
        sort: Disorder,
    ) -> (mpsc::Receiver<Result<Entry>>, Option<mpsc::Receiver<Result<Entry>>>) {
        let cfg = &self.cfg;
        // Listers.
        // The listing queues: --object-listing-queue-size, never above the flat-memory bound.
        let queue = cfg.listing_queue.clamp(1, crate::config::MAX_LISTING_QUEUE);
        let (src_tx, src_rx) = mpsc::channel(queue);
        let shard = cfg.shard.clone();
        if let Some(sh) = &shard {
            info!(shard = %sh.label(), "this run handles one shard of the job");
        }
        spawn_lister(
            source.clone(),
            sorted(src_tx, sort.source),
            cfg.max_keys,
            // A listing sorted on disk is unordered: ranges of it would not partition its keys.
            if sort.source { 1 } else { cfg.parallel_listings },
            WalkRole::Source,
            cfg.point_in_time,
            shard.clone(),
        );
        let list_target = cfg.delete || !(cfg.head_each_target || cfg.remove_modified_filter);
        let tgt_rx = list_target.then(|| {
            let (tx, rx) = mpsc::channel(queue);
            let role = if cfg.dry_run {
                WalkRole::TargetDryRun
            } else {
                WalkRole::Target
            };
            spawn_lister(
                target.clone(),
                sorted(tx, sort.target),
                cfg.max_keys,
                if sort.target { 1 } else { cfg.parallel_listings },
                role,
                None,
                shard.clone(),
            );
            rx
        });
        (src_rx, tgt_rx)
    }

    /// Starts `--worker-size` transfer workers that take jobs from `jobs` until it closes or the run
    /// is cancelled; returns their tasks.
    fn spawn_workers(
        &self,
        transferer: &Arc<Transferer>,
        jobs: &async_channel::Receiver<Job>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut workers = Vec::new();
        for _ in 0..self.cfg.worker_size {
            let rx = jobs.clone();
            let tr = transferer.clone();
            let cancel = self.cancel.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let Ok(job) = rx.recv().await else { break };
                    // Biased: a job taken after cancellation never starts.
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        _ = process(&tr, job) => {}
                    }
                }
            }));
        }
        workers
    }

    /// Waits for the merge of a pass (aborting it if the run was cancelled); returns the listings it
    /// found out of order, and whether it ended abnormally (reported as a failure, so that the listing
    /// counts as incomplete).
    async fn end_merge(&self, merge: tokio::task::JoinHandle<Disorder>) -> (Disorder, bool) {
        if self.cancel.is_cancelled() {
            merge.abort();
        }
        match merge.await {
            Ok(d) => (d, false),
            Err(e) => {
                let failed = !self.cancel.is_cancelled();
                if failed {
                    self.reporter
                        .failed("", format!("the listing merge ended abnormally: {e}"));
                }
                (Disorder::default(), failed)
            }
        }
    }
}

/// What the merge says of the target of a source key when the target is not listed.
fn unlisted_target_state(cfg: &Config) -> TargetState {
    // Without a target listing each target is looked up (HEAD), unless nothing would read it:
    // --remove-modified-filter alone copies everything.
    if cfg.remove_modified_filter && !cfg.head_each_target {
        TargetState::Listed(None)
    } else {
        TargetState::Lookup
    }
}

/// Routes the pairs of one pass: skips and plans here (cheap), transfers to the workers, deletion
/// candidates to the spill file.
struct Router<'a> {
    /// The run (its configuration, reporter, cancellation and stop).
    sync: &'a Sync,
    /// The target end.
    target: &'a End,
    /// The workers' job queue.
    jobs: async_channel::Sender<Job>,
    /// The keys the pass before decided.
    earlier: Decided,
    /// The keys this pass decides.
    decided: &'a mut Decided,
    /// The deletion candidates.
    deletions: spill::Spill,
    /// Whether a listing failed.
    listing_failed: bool,
}

impl Router<'_> {
    /// Routes every pair of `pairs` until they end, the run is cancelled or stopped, or the workers
    /// are gone. An error is one of the spill file's.
    async fn route_all(&mut self, pairs: &mut mpsc::Receiver<Pair>) -> Result<()> {
        loop {
            let pair = tokio::select! {
                _ = self.sync.cancel.cancelled() => break,
                p = pairs.recv() => p,
            };
            let Some(pair) = pair else { break };
            if self.route(pair).await?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Routes one pair; returns whether routing goes on.
    async fn route(&mut self, pair: Pair) -> Result<ControlFlow<()>> {
        let cfg = &self.sync.cfg;
        let reporter = &self.sync.reporter;
        match pair {
            Pair::ListingError(msg, is_source) => {
                self.listing_failed = true;
                let side = if is_source { "source" } else { "target" };
                reporter.failed("", format!("{side} listing failed: {msg}"));
            }
            Pair::ListingWarning(key, why) => reporter.warning(&key, why),
            Pair::TargetOnly(t) => {
                reporter.listed(0, 1);
                if cfg.delete && cfg.filters.may_delete(&t.key, cfg.delete_excluded) {
                    self.deletions
                        .push(&t.key, t.etag.as_deref().filter(|_| cfg.conditions.if_match))?;
                }
            }
            Pair::Source(s, state) => return Ok(self.route_source(s, state).await),
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Routes a source entry: leaves it out (decided in the pass before, filtered, or unmappable to a
    /// local path), skips it (up to date), or hands it to the workers. Returns whether routing goes on.
    async fn route_source(&mut self, s: Entry, state: TargetState) -> ControlFlow<()> {
        let cfg = &self.sync.cfg;
        let reporter = &self.sync.reporter;
        reporter.listed(1, u64::from(matches!(state, TargetState::Listed(Some(_)))));
        if self.earlier.contains(&s.key) {
            return ControlFlow::Continue(());
        }
        if !cfg.filters.accepts(&s) {
            return ControlFlow::Continue(());
        }
        match passes_filter_callback(cfg, reporter, || crate::callback::SourceObject::from_entry(&s)).await {
            Ok(true) => {}
            Ok(false) => return ControlFlow::Continue(()),
            Err(e) => {
                self.sync.stop.fail(e);
                return ControlFlow::Break(());
            }
        }
        if let End::Local(l) = self.target {
            if let Err(e) = l.path_for(&s.key) {
                reporter.warning(&s.key, e.to_string());
                return ControlFlow::Continue(());
            }
        }
        if let (TargetState::Listed(t), false) = (&state, cfg.report_sync_status) {
            let verdict = verdict(cfg, &s, t.as_ref());
            if verdict == Verdict::Skip {
                debug!(key = %s.key, "object filtered: target is up to date");
                reporter.skipped(&s.key);
                self.decided.record(&s.key);
                return ControlFlow::Continue(());
            }
        }
        self.decided.record(&s.key);
        let job = Job {
            source: s,
            target: state,
        };
        // Workers stop taking jobs on cancellation: never wait on a full queue then.
        let sent = tokio::select! {
            _ = self.sync.cancel.cancelled() => return ControlFlow::Break(()),
            r = self.jobs.send(job) => r,
        };
        if sent.is_err() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Warns that ETag verification is off for SSE-C and SSE-KMS objects, when `--verify-etag` meets them.
fn warn_unverifiable_etags(cfg: &Config) {
    let kms = matches!(cfg.attributes.sse.as_deref(), Some(s) if s.starts_with("aws:kms"));
    if cfg.verify_etag && (kms || cfg.source_client.sse_c.is_some() || cfg.target_client.sse_c.is_some()) {
        tracing::warn!("ETags of SSE-C and SSE-KMS objects are not MD5 digests: ETag verification is off for them; use --additional-checksum-algorithm for end-to-end verification");
    }
}

async fn open_end(
    loc: &Location,
    client: &crate::config::ClientConfig,
    cfg: &Config,
    object_client: Option<&Arc<dyn ObjectClient>>,
) -> Result<End> {
    Ok(match loc {
        Location::Local(p) => {
            End::Local(LocalStorage::new(p.clone(), cfg.ignore_symlinks).with_shard(cfg.shard.clone()))
        }
        Location::S3 { bucket, prefix } => {
            let sends: Arc<dyn ObjectClient> = match object_client {
                Some(c) => c.clone(),
                None => Arc::new(build_object_client(client, &cfg.retry, cfg.payload_signing).await?),
            };
            End::S3(S3Storage::with_client(
                sends,
                bucket.clone(),
                prefix.clone(),
                client.sse_c.clone(),
            ))
        }
    })
}

async fn check_end(end: &End, is_source: bool) -> Result<()> {
    match end {
        End::S3(s) => s.check_access().await,
        End::Local(l) if is_source => match tokio::fs::metadata(l.root()).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::InvalidArgument(format!(
                "source {} is not a directory",
                l.root().display()
            ))),
            Err(e) => Err(Error::local("open source directory", l.root(), e)),
        },
        End::Local(_) => Ok(()),
    }
}

/// The sender a lister writes to: `tx` itself, or with `sort`, a sorting stage in front of it.
fn sorted(tx: mpsc::Sender<Result<Entry>>, sort: bool) -> mpsc::Sender<Result<Entry>> {
    if !sort {
        return tx;
    }
    let (raw_tx, raw_rx) = mpsc::channel(LISTING_CHANNEL);
    tokio::spawn(sort::sort_listing(raw_rx, tx));
    raw_tx
}

/// Runs a lister in its own task. Its end is reported on the channel: an error, or a task that ended
/// abnormally (a panic), arrives as an error entry, so a listing that stopped early is never taken
/// for a complete one.
///
/// With a shard, only the shard's keys are passed on (a range shard starts its S3 listing after its
/// lower bound and stops an ordered listing past its upper bound), so the diff — deletions included —
/// never sees another shard's keys.
fn spawn_lister(
    end: End,
    tx: mpsc::Sender<Result<Entry>>,
    max_keys: i32,
    parallel: usize,
    role: WalkRole,
    point_in_time: Option<std::time::SystemTime>,
    shard: Option<crate::shard::Shard>,
) {
    let start_after = shard.as_ref().and_then(|s| s.start_after().map(str::to_string));
    let (list_tx, filter) = match shard {
        None => (tx.clone(), None),
        Some(sh) => {
            let (raw_tx, raw_rx) = mpsc::channel(LISTING_CHANNEL);
            (raw_tx, Some(tokio::spawn(shard_filter(sh, raw_rx, tx.clone()))))
        }
    };
    tokio::spawn(async move {
        let lister = tokio::spawn(async move {
            match (&end, point_in_time) {
                (End::Local(l), _) => l.list(list_tx, role).await,
                (End::S3(s), None) if parallel > 1 => {
                    crate::storage::parallel_list::list(s, max_keys, start_after.as_deref(), parallel, list_tx).await
                }
                (End::S3(s), None) => s.list(max_keys, start_after.as_deref(), list_tx).await,
                (End::S3(s), Some(t)) => list_at(s, max_keys, t, list_tx).await,
            }
        });
        let res = match lister.await {
            Ok(r) => r,
            Err(e) => Err(Error::ListingAborted(e.to_string())),
        };
        // The error comes after every entry the shard filter still passes on; a filter that ended
        // abnormally makes the listing incomplete too.
        let filtered = match filter {
            Some(f) => f.await.map_err(|e| Error::ListingAborted(e.to_string())),
            None => Ok(()),
        };
        for e in [res.err(), filtered.err()].into_iter().flatten() {
            let _ = tx.send(Err(e)).await;
        }
    });
}

/// Passes on the entries of one shard. Once a listing is past the shard's range, the rest is not read
/// (the lister stops at its next send) — but only after the listing has shown order (two entries in
/// ascending order, none out of order so far): an unordered listing is read to its end, so the merge
/// sees its disorder and switches `--delete` off.
async fn shard_filter(
    shard: crate::shard::Shard,
    mut rx: mpsc::Receiver<Result<Entry>>,
    tx: mpsc::Sender<Result<Entry>>,
) {
    let mut last: Option<String> = None;
    let mut ordered = true;
    while let Some(item) = rx.recv().await {
        let entry = match item {
            Ok(e) => e,
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let in_order = last.as_deref().map(|l| l.as_bytes() < entry.key.as_bytes());
        ordered &= in_order.unwrap_or(true);
        if ordered && in_order == Some(true) && shard.is_past(&entry.key) {
            return;
        }
        let mine = shard.contains(&entry.key);
        last = Some(entry.key.clone());
        if mine && tx.send(Ok(entry)).await.is_err() {
            return;
        }
    }
}

/// Lists the objects of a versioned bucket as they were at `t` (`--point-in-time`).
async fn list_at(
    s3: &S3Storage,
    max_keys: i32,
    t: std::time::SystemTime,
    tx: mpsc::Sender<Result<Entry>>,
) -> Result<()> {
    let (vtx, vrx) = async_channel::bounded(LISTING_CHANNEL);
    let s3 = s3.clone();
    let lister = tokio::spawn(async move { s3.list_versions(max_keys, vtx).await });
    while let Ok(kv) = vrx.recv().await {
        let item = match kv {
            Ok(kv) => match kv.at(t) {
                Some(e) => Ok(e.clone()),
                None => continue,
            },
            Err(e) => Err(e),
        };
        if tx.send(item).await.is_err() {
            break;
        }
    }
    lister.await.map_err(|e| Error::ListingAborted(e.to_string()))?
}

/// Looks up the target of one key (for `--head-each-target` and unordered listings).
async fn lookup(target: &End, key: &str) -> Result<Option<Entry>> {
    match target {
        End::Local(l) => l.stat(key).await,
        End::S3(s) => Ok(s.head(key, None).await?.map(|h| h.entry)),
    }
}

/// Handles one job of a worker: looks the target up if needed, decides, and transfers the object
/// (or plans it, in a dry run), reporting the outcome.
async fn process(tr: &Transferer, job: Job) {
    let cfg = &tr.cfg;
    let rep = &tr.reporter;
    let s = job.source;
    let target = match job.target {
        TargetState::Listed(t) => t,
        TargetState::Lookup => match lookup(&tr.target, &s.key).await {
            Ok(t) => t,
            Err(e) => return rep.failed(&s.key, e.to_string()),
        },
    };
    if s.is_dir_marker() && local_dir_exists(tr, &s.key) {
        rep.skipped(&s.key);
        return;
    }
    if cfg.report_sync_status {
        return report_status(tr, &s, target.as_ref()).await;
    }
    if !needs_transfer(tr, &s, target.as_ref()).await {
        return;
    }
    rep.planned(s.size);
    tr.limits.object().await;
    if cfg.dry_run {
        return plan_transfer(tr, &s).await;
    }
    rep.started(&s.key, s.size);
    transfer_with_retries(tr, &s, target.as_ref()).await
}

/// What the update check says of `s` against its target: always a transfer under
/// `--remove-modified-filter`.
fn verdict(cfg: &Config, s: &Entry, target: Option<&Entry>) -> Verdict {
    if cfg.remove_modified_filter {
        Verdict::Transfer
    } else {
        decide(cfg.check, s, target)
    }
}

/// Whether the target is local and the directory of `key` exists there.
fn local_dir_exists(tr: &Transferer, key: &str) -> bool {
    match &tr.target {
        End::Local(l) => l.path_for(key).map(|p| p.is_dir()).unwrap_or(false),
        End::S3(_) => false,
    }
}

/// Whether `s` must be transferred over `target`. An object that is up to date, left out by a
/// content type, metadata or tag filter, or that could not be checked is reported here (skipped,
/// filtered or failed), and `false` is returned.
async fn needs_transfer(tr: &Transferer, s: &Entry, target: Option<&Entry>) -> bool {
    let cfg = &tr.cfg;
    let rep = &tr.reporter;
    if let (true, Some(t)) = (cfg.sync_latest_tagging || cfg.annotations.latest, target) {
        match sync_latest(tr, s, t).await {
            Ok(true) => {
                rep.skipped(&s.key);
                return false;
            }
            Ok(false) => {}
            Err(e) => {
                rep.failed(&s.key, e.to_string());
                return false;
            }
        }
    }
    let verdict = verdict(cfg, s, target);
    if verdict == Verdict::Skip {
        debug!(key = %s.key, "object filtered: target is up to date");
        rep.skipped(&s.key);
        return false;
    }
    if let (Verdict::CompareEtag, Some(t)) = (verdict, target) {
        match same_digest(tr, s, t).await {
            Ok(Some(true)) => {
                debug!(key = %s.key, "object filtered: ETags are equal");
                rep.skipped(&s.key);
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                rep.failed(&s.key, e.to_string());
                return false;
            }
        }
    }
    if cfg.filters.needs_head() || cfg.filters.needs_tags() {
        match object_facts(tr, s).await {
            Ok(f) if cfg.filters.accepts_facts(&f) => {}
            Ok(_) => {
                rep.filtered(&s.key, "content type, metadata or tag filter");
                return false;
            }
            Err(e) => {
                rep.failed(&s.key, e.to_string());
                return false;
            }
        }
    }
    true
}

/// `--dry-run`: logs and counts the transfer of `s` that a real run would make (and plans its
/// annotations).
async fn plan_transfer(tr: &Transferer, s: &Entry) {
    let rep = &tr.reporter;
    info!(
        key = %s.key,
        source_version_id = s.version_id.as_deref().unwrap_or(""),
        source_last_modified = %crate::callback::rfc3339(s.mtime),
        size = s.size,
        "[dry-run] sync completed."
    );
    if let Err(e) = sync_annotations(tr, s).await {
        return rep.failed_with(&s.key, &e);
    }
    rep.transferred(&s.key, s.size, false);
}

/// Transfers `s` over `target`, retrying what the retry policy allows, and reports the outcome.
async fn transfer_with_retries(tr: &Transferer, s: &Entry, target: Option<&Entry>) {
    let rep = &tr.reporter;
    let mut attempts = crate::retry::Attempts::new(&tr.cfg.retry);
    loop {
        match tr.transfer(s, target).await {
            Ok(m) if m.cancelled => return rep.cancelled(&s.key),
            Ok(m) => return report_transferred(tr, s, m).await,
            Err(e) if attempts.allow(&e) => attempts.pause(&s.key, "object", &e).await,
            Err(e) => return report_transfer_error(tr, s, e),
        }
    }
}

/// Reports an object that arrived (`moved`), after bringing its annotations in line.
async fn report_transferred(tr: &Transferer, s: &Entry, moved: crate::transfer::Moved) {
    let rep = &tr.reporter;
    if let Some(w) = moved.warning {
        rep.warning(&s.key, w);
    }
    if let Err(e) = sync_annotations(tr, s).await {
        return rep.failed_with(&s.key, &e);
    }
    if moved.checksum_verified {
        rep.checksum_verified(&s.key);
    }
    info!(key = %s.key, size = moved.bytes, etag_verified = moved.etag_verified, "sync completed.");
    rep.transferred(&s.key, moved.bytes, moved.etag_verified);
}

/// Reports a transfer of `s` that failed for good with `e`: a warning (an invalid argument, an
/// archived object), a skip (an archived object under `--ignore-glacier-warnings`), the end of the run
/// (a failing callback), or a failure.
fn report_transfer_error(tr: &Transferer, s: &Entry, e: Error) {
    let rep = &tr.reporter;
    match e {
        Error::InvalidArgument(m) => rep.warning(&s.key, m),
        e @ Error::Callback(_) => tr.stop.fail(e),
        e if e.s3_kind() == Some(crate::error::S3ErrorKind::Archived) => {
            if tr.cfg.ignore_glacier_warnings {
                debug!(key = %s.key, "archived object skipped (--ignore-glacier-warnings)");
                return rep.skipped(&s.key);
            }
            rep.warning(
                &s.key,
                format!("skipped: the object is archived (GLACIER/DEEP_ARCHIVE) and not restored: {e}"),
            )
        }
        e => rep.failed_with(&s.key, &e),
    }
}

/// The filter callback's verdict on one source object (`true` without a callback); an object it
/// leaves out is reported as filtered. An error must stop the run.
async fn passes_filter_callback(
    cfg: &Config,
    rep: &Reporter,
    object: impl FnOnce() -> crate::callback::SourceObject,
) -> Result<bool> {
    let Some(f) = &cfg.callbacks.filter else {
        return Ok(true);
    };
    let object = object();
    let pass = f.filter(&object).await?;
    if !pass {
        rep.filtered(&object.key, "filter callback");
    }
    Ok(pass)
}

/// Feeds the event callback, one event at a time and in order, until the run's last event. A failing
/// callback is a warning in the log; the run goes on.
async fn dispatch_events(
    mut rx: mpsc::UnboundedReceiver<SyncEvent>,
    cb: Arc<dyn crate::callback::EventCallback>,
    mask: crate::callback::EventType,
    dry_run: bool,
) {
    while let Some(e) = rx.recv().await {
        let last = matches!(e, SyncEvent::PipelineEnd { .. });
        for data in crate::callback::EventData::from_sync_event(&e, dry_run) {
            if mask.contains(data.event_type) {
                if let Err(err) = cb.on_event(&data).await {
                    tracing::warn!("{err}");
                }
            }
        }
        if last {
            break;
        }
    }
}

/// The Content-Type, metadata and tags of a source object, each fetched only when a filter needs it.
async fn object_facts(tr: &Transferer, s: &Entry) -> Result<crate::filter::ObjectFacts> {
    let f = &tr.cfg.filters;
    let mut facts = crate::filter::ObjectFacts::default();
    match &tr.source {
        End::Local(_) => {
            if !tr.cfg.attributes.no_guess_mime_type {
                facts.content_type = mime_guess::from_path(&s.key)
                    .first()
                    .map(|m| m.essence_str().to_string());
            }
        }
        End::S3(s3) => {
            if f.needs_head() {
                if let Some(h) = s3.head(&s.key, None).await? {
                    facts.content_type = h.attributes.content_type;
                    let md: Vec<String> = h
                        .attributes
                        .metadata
                        .iter()
                        .map(|(k, v)| format!("{}={v}", k.to_lowercase()))
                        .collect();
                    facts.metadata = md.join(",");
                }
            }
            if f.needs_tags() {
                let tags: Vec<String> = s3
                    .get_tags(&s.key)
                    .await?
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                facts.tags = tags.join("&");
            }
        }
    }
    Ok(facts)
}

/// Compares source and target by the configured digest: ETag, or additional checksum.
async fn same_digest(tr: &Transferer, s: &Entry, t: &Entry) -> Result<Option<bool>> {
    match tr.cfg.check {
        CheckMode::Checksum(a) | CheckMode::MtimeAndChecksum(a) => tr.same_checksum(s, t, a).await,
        _ => tr.same_etag(s, t).await,
    }
}

/// `--report-sync-status`: one status per source object, nothing transferred. Missing and differing
/// objects count as warnings (exit code 3).
async fn report_status(tr: &Transferer, s: &Entry, target: Option<&Entry>) {
    let rep = &tr.reporter;
    let status = match target {
        None => SyncStatus::Missing,
        Some(t) if s.size != t.size && !s.is_dir_marker() => SyncStatus::Mismatch,
        Some(t) => match same_digest(tr, s, t).await {
            Ok(Some(true)) => SyncStatus::Match,
            Ok(Some(false)) => SyncStatus::Mismatch,
            Ok(None) => SyncStatus::Unverifiable,
            Err(e) => return rep.failed(&s.key, e.to_string()),
        },
    };
    rep.status(&s.key, status);
    // Metadata and tagging are compared only for S3 on both sides, as the reference does.
    let (End::S3(src), End::S3(dst), Some(_)) = (&tr.source, &tr.target, target) else {
        return;
    };
    if tr.cfg.report_metadata_sync_status {
        match (src.head(&s.key, None).await, dst.head(&s.key, None).await) {
            (Ok(Some(a)), Ok(Some(b))) => {
                let strip = |mut m: crate::attributes::ObjectAttributes| {
                    m.metadata.remove(crate::attributes::LAST_MODIFIED_METADATA);
                    m.metadata.remove(crate::attributes::VERSION_ID_METADATA);
                    m
                };
                let same = strip(a.attributes) == strip(b.attributes);
                rep.status(
                    &s.key,
                    if same {
                        SyncStatus::MetadataMatch
                    } else {
                        SyncStatus::MetadataMismatch
                    },
                );
            }
            (Err(e), _) | (_, Err(e)) => rep.failed(&s.key, e.to_string()),
            _ => {}
        }
    }
    if tr.cfg.annotations.report {
        let object = |storage| crate::annotations::ObjectRef {
            storage,
            key: &s.key,
            version_id: None,
        };
        match crate::annotations::same(object(src), object(dst), tr.cfg.annotations.check_etag).await {
            Ok(same) => rep.status(
                &s.key,
                if same {
                    SyncStatus::AnnotationsMatch
                } else {
                    SyncStatus::AnnotationsMismatch
                },
            ),
            Err(e) => rep.failed(&s.key, e.to_string()),
        }
    }
    if tr.cfg.report_tagging_sync_status {
        match (src.get_tags(&s.key).await, dst.get_tags(&s.key).await) {
            (Ok(a), Ok(b)) => rep.status(
                &s.key,
                if a == b {
                    SyncStatus::TaggingMatch
                } else {
                    SyncStatus::TaggingMismatch
                },
            ),
            (Err(e), _) | (_, Err(e)) => rep.failed(&s.key, e.to_string()),
        }
    }
}

/// `--sync-latest-tagging` and `--sync-latest-object-annotations`: when the target object is up to
/// date, copy the source's current tags and annotations to it where they differ. Returns whether the
/// object was handled (up to date, its tags and annotations now in sync).
async fn sync_latest(tr: &Transferer, s: &Entry, t: &Entry) -> Result<bool> {
    let (End::S3(src), End::S3(dst)) = (&tr.source, &tr.target) else {
        return Ok(false);
    };
    if s.etag.is_none() || s.etag != t.etag {
        return Ok(false);
    }
    if tr.cfg.sync_latest_tagging {
        let (a, b) = (src.get_tags(&s.key).await?, dst.get_tags(&s.key).await?);
        if a != b {
            if tr.cfg.dry_run {
                info!(key = %s.key, "[dry-run] tagging synced.");
            } else {
                dst.put_tags(&s.key, &a).await?;
                info!(key = %s.key, "tagging synced.");
            }
        }
    }
    if tr.cfg.annotations.latest {
        let done = sync_annotations(tr, s).await?;
        if done.is_some_and(|p| !p.is_empty()) && !tr.cfg.dry_run {
            info!(key = %s.key, "object annotations synced.");
        }
    }
    Ok(true)
}

/// Brings the target object's annotations in line with the source object's (of the source version
/// that was copied; on the target's latest version, the one just written), when the options ask for
/// it and both ends are S3. Returns what was (or, in a dry run, would be) done.
async fn sync_annotations(tr: &Transferer, s: &Entry) -> Result<Option<crate::annotations::AnnotationPlan>> {
    let a = tr.cfg.annotations;
    let (End::S3(src), End::S3(dst), true) = (&tr.source, &tr.target, a.enabled || a.latest) else {
        return Ok(None);
    };
    let object = |storage, version_id| crate::annotations::ObjectRef {
        storage,
        key: &s.key,
        version_id,
    };
    crate::annotations::sync(
        object(src, s.version_id.as_deref()),
        object(dst, None),
        a.check_etag,
        tr.cfg.dry_run,
    )
    .await
    .map(Some)
}

/// Deletes the keys of the spill file, `worker_size` at a time, streaming them (memory does not grow
/// with their number). Stops at cancellation and then reports it as the run's end.
async fn run_deletions(
    target: &End,
    mut spill: spill::Spill,
    cfg: &Config,
    rep: &Reporter,
    cancel: &CancellationToken,
) -> Result<()> {
    let keys = spill.drain()?;
    let budget = std::sync::atomic::AtomicU64::new(cfg.max_delete.unwrap_or(u64::MAX));
    let failure = std::sync::Mutex::new(None::<Error>);
    let (budget, failure) = (&budget, &failure);
    futures::stream::iter(keys)
        .take_while(|_| std::future::ready(!cancel.is_cancelled()))
        .for_each_concurrent(cfg.worker_size, |key| async move {
            let (key, etag) = match key {
                Ok(k) => k,
                Err(e) => {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                    return;
                }
            };
            let allowed = budget
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |b| b.checked_sub(1),
                )
                .is_ok();
            if !allowed {
                rep.warning(&key, "not deleted: --max-delete reached".into());
                return;
            }
            if cfg.dry_run {
                info!(key = %key, if_match = etag.as_deref().unwrap_or(""), "[dry-run] delete completed.");
                rep.deleted(&key);
                return;
            }
            let res = tokio::select! {
                _ = cancel.cancelled() => return,
                r = delete_one(target, &key, etag.as_deref()) => r,
            };
            match res {
                Ok(()) => {
                    info!(key = %key, "delete completed.");
                    rep.deleted(&key);
                }
                Err(e) => rep.failed(&key, e.to_string()),
            }
        })
        .await;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    match failure.lock().ok().and_then(|mut f| f.take()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Deletes one key of the target: an S3 object, or a local file (or link, never what it points to).
async fn delete_one(target: &End, key: &str, if_match: Option<&str>) -> Result<()> {
    match target {
        End::S3(s) => s.delete(key, if_match).await,
        End::Local(l) => l.remove(key).await,
    }
}

/// Lists the source of `cfg` once and makes a range plan for `count` shards, balanced by object count
/// (`--make-shard-plan`). A listing error fails the plan: split points from a partial listing would
/// still partition every key, but not evenly.
pub async fn make_shard_plan(cfg: &Config, count: u32) -> Result<crate::shard::ShardPlan> {
    let source = open_end(&cfg.source, &cfg.source_client, cfg, None).await?;
    check_end(&source, true).await?;
    let (tx, mut rx) = mpsc::channel(LISTING_CHANNEL);
    spawn_lister(
        source,
        tx,
        cfg.max_keys,
        cfg.parallel_listings,
        WalkRole::Source,
        cfg.point_in_time,
        None,
    );
    let mut sample = crate::shard::KeySample::default();
    while let Some(item) = rx.recv().await {
        match item {
            Ok(e) => sample.push(&e.key),
            Err(Error::Skipped { reason, .. }) => tracing::warn!("{reason}"),
            Err(e) => return Err(e),
        }
    }
    let objects = sample.seen();
    Ok(crate::shard::ShardPlan {
        version: 1,
        source: cfg.source.to_string(),
        target: cfg.target.to_string(),
        shard_count: count,
        objects,
        bounds: crate::shard::split_points(&sample.into_sorted(), count),
    })
}

#[cfg(test)]
mod tests {
    use super::Decided;

    #[test]
    fn decided_keys_are_remembered_up_to_the_bound() {
        let mut d = Decided::default();
        assert!(!d.contains("a"));
        for i in 0..Decided::MAX + 5 {
            d.record(&format!("key-{i}"));
        }
        assert!(d.contains("key-0") && d.contains(&format!("key-{}", Decided::MAX - 1)));
        assert!(!d.contains(&format!("key-{}", Decided::MAX)), "past the bound");
        assert!(!d.contains("key-") && !d.contains("a"));
        assert_eq!(d.keys.len(), Decided::MAX);
    }
}

#[cfg(test)]
mod in_memory;
