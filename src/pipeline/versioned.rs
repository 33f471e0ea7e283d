//! `--enable-versioning`: every version of every key, oldest first, to a versioned target.
//!
//! Keys stream from ListObjectVersions one at a time; a key's versions go to one worker so their order
//! is kept. What the target already holds is read from the `s3sync_origin_last_modified` metadata of its
//! current version, so a second run copies only newer versions. Intermediate delete markers are not
//! copied; a delete marker that is the key's latest version is (as the reference does).

use super::LISTING_CHANNEL;
use crate::attributes::LAST_MODIFIED_METADATA;
use crate::error::{Error, Result};
use crate::stats::Reporter;
use crate::storage::s3::{KeyVersions, S3Storage};
use crate::transfer::Transferer;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Runs a versioned sync from `source` to `target`.
pub(super) async fn run(
    tr: Arc<Transferer>,
    source: S3Storage,
    target: S3Storage,
    cancel: CancellationToken,
) -> Result<()> {
    let (tx, rx) = async_channel::bounded(LISTING_CHANNEL);
    let max_keys = tr.cfg.max_keys;
    let lister = tokio::spawn(async move { source.list_versions(max_keys, tx).await });
    let mut workers = Vec::new();
    for _ in 0..tr.cfg.worker_size {
        let (rx, tr, target, cancel) = (rx.clone(), tr.clone(), target.clone(), cancel.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => break,
                    n = rx.recv() => n,
                };
                let Ok(kv) = next else { break };
                match kv {
                    Ok(kv)
                        if tr.cfg.filters.accepts_key(&kv.key)
                            && tr.cfg.shard.as_ref().is_none_or(|sh| sh.contains(&kv.key)) =>
                    {
                        // Biased: a key taken after cancellation never starts.
                        tokio::select! {
                            biased;
                            _ = cancel.cancelled() => break,
                            _ = sync_key(&tr, &target, kv) => {}
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tr.reporter.failed("", format!("source listing failed: {e}")),
                }
            }
        }));
    }
    // The workers hold the only receivers now: when they stop, the lister's next send fails.
    drop(rx);
    for w in workers {
        let _ = w.await;
    }
    tr.reporter.listing_done();
    if cancel.is_cancelled() {
        lister.abort();
        return Err(Error::Cancelled);
    }
    match lister.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tr.reporter.failed("", format!("source listing failed: {e}")),
        Err(e) => tr.reporter.failed(
            "",
            format!("source listing failed: the listing task ended abnormally: {e}"),
        ),
    }
    Ok(())
}

/// The source last-modified time the target's current version was copied from, if it was copied by
/// a versioned sync.
async fn synced_until(target: &S3Storage, key: &str) -> Result<Option<Option<SystemTime>>> {
    Ok(target.head(key, None).await?.map(|h| {
        h.attributes
            .metadata
            .get(LAST_MODIFIED_METADATA)
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
            .map(|d| d.with_timezone(&chrono::Utc).into())
    }))
}

async fn sync_key(tr: &Transferer, target: &S3Storage, kv: KeyVersions) {
    let rep: &Reporter = &tr.reporter;
    let latest_is_delete = kv.versions.last().is_some_and(|v| v.delete_marker);
    let until = match synced_until(target, &kv.key).await {
        Ok(Some(t)) => t,
        Ok(None) if latest_is_delete => match target.has_versions(&kv.key).await {
            // Deleted on both sides already.
            Ok(true) => return rep.skipped(&kv.key),
            Ok(false) => None,
            Err(e) => return rep.failed(&kv.key, e.to_string()),
        },
        Ok(None) => None,
        Err(e) => return rep.failed(&kv.key, e.to_string()),
    };
    let last = kv.versions.len().saturating_sub(1);
    for (i, v) in kv.versions.iter().enumerate() {
        if until.is_some_and(|t| v.entry.mtime <= t) {
            rep.skipped(&kv.key);
            continue;
        }
        let object = || crate::callback::SourceObject {
            is_latest: i == last,
            is_delete_marker: v.delete_marker,
            ..crate::callback::SourceObject::from_entry(&v.entry)
        };
        match super::passes_filter_callback(&tr.cfg, rep, object).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => return tr.stop.fail(e),
        }
        if v.delete_marker {
            if i == last {
                if tr.cfg.dry_run {
                    info!(key = %kv.key, "[dry-run] delete marker synced.");
                } else if let Err(e) = target.delete(&kv.key, None).await {
                    return rep.failed(&kv.key, e.to_string());
                }
                rep.deleted(&kv.key);
            }
            continue;
        }
        rep.planned(v.entry.size);
        if tr.cfg.dry_run {
            info!(key = %kv.key, version_id = ?v.entry.version_id, "[dry-run] sync completed.");
            if let Err(e) = super::sync_annotations(tr, &v.entry).await {
                return rep.failed_with(&kv.key, &e);
            }
            rep.transferred(&kv.key, v.entry.size, false);
            continue;
        }
        rep.started(&kv.key, v.entry.size);
        let mut attempts = crate::retry::Attempts::new(&tr.cfg.retry);
        loop {
            match tr.transfer(&v.entry, None).await {
                Ok(m) if m.cancelled => {
                    rep.cancelled(&kv.key);
                    break;
                }
                Ok(m) => {
                    if let Some(w) = m.warning {
                        rep.warning(&kv.key, w);
                    }
                    if let Err(e) = super::sync_annotations(tr, &v.entry).await {
                        return rep.failed_with(&kv.key, &e);
                    }
                    if m.checksum_verified {
                        rep.checksum_verified(&kv.key);
                    }
                    info!(key = %kv.key, source_version_id = ?v.entry.version_id, size = m.bytes, "sync completed.");
                    rep.transferred(&kv.key, m.bytes, m.etag_verified);
                    break;
                }
                Err(e) if attempts.allow(&e) => attempts.pause(&kv.key, "version", &e).await,
                Err(e @ crate::Error::Callback(_)) => return tr.stop.fail(e),
                Err(e) => return rep.failed_with(&kv.key, &e),
            }
        }
    }
}
