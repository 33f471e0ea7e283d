//! Passes a listing that is not in key order (S3 Express One Zone directory buckets, servers that do
//! not sort) on in key order, sorted on disk ([`crate::external_sort`]), so that the sorted merge —
//! and with it `--delete` — works for it too, and an unordered side costs temporary disk space rather
//! than memory.

use crate::error::{Error, Result};
use crate::external_sort::ExternalSort;
use crate::storage::Entry;
use tokio::sync::mpsc;
use tracing::warn;

/// Bytes of entries held in memory before a run is written (about 10,000 entries of 100-byte keys):
/// small enough that an unordered side keeps a run within the flat-memory bound of a sorted one.
pub const BUFFER_BYTES: usize = 2 << 20;
/// Entries handed from a blocking merge step to the async side at a time.
const BATCH: usize = 1024;

/// Passes a listing on in key order: reads `rx` to its end (errors are passed on at once, so the
/// merge knows the side is incomplete before it sees an entry), then sends every entry sorted.
pub async fn sort_listing(mut rx: mpsc::Receiver<Result<Entry>>, tx: mpsc::Sender<Result<Entry>>) {
    let mut sort = ExternalSort::new(BUFFER_BYTES);
    loop {
        // The merge may stop before the listing ends (a restart, Ctrl-C): stop reading then too.
        let item = tokio::select! {
            _ = tx.closed() => return,
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        match item {
            Ok(e) => {
                if sort.push(e) {
                    match blocking(move || Ok((sort.spill().err(), sort))).await {
                        Ok((failed, s)) => {
                            sort = s;
                            if let Some(e) = failed {
                                warn!(error = %e, "cannot sort the listing in temporary files: sorting the rest in memory");
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
            }
        }
    }
    let mut merger = match blocking(move || sort.finish()).await {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    loop {
        let step = blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match merger.next_record()? {
                    Some(e) => batch.push(e),
                    None => break,
                }
            }
            Ok((batch, merger))
        })
        .await;
        let batch = match step {
            Ok((batch, m)) => {
                merger = m;
                batch
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if batch.is_empty() {
            return;
        }
        for e in batch {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::ListingAborted(format!("sorting the listing: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_sort::tests::entry;

    /// Through the async stage: errors first, then every entry in order.
    #[tokio::test]
    async fn the_stage_passes_errors_first_then_sorted_entries() {
        let (tx, rx) = mpsc::channel(4);
        let (otx, mut orx) = mpsc::channel(4);
        tokio::spawn(sort_listing(rx, otx));
        tokio::spawn(async move {
            for i in [5, 3, 9, 1] {
                tx.send(Ok(entry(i))).await.unwrap();
            }
            tx.send(Err(Error::ListingAborted("page 3".into()))).await.unwrap();
        });
        let first = orx.recv().await.unwrap();
        assert!(first.is_err());
        let mut keys = Vec::new();
        while let Some(e) = orx.recv().await {
            keys.push(e.unwrap().key);
        }
        let mut want: Vec<String> = [5, 3, 9, 1].into_iter().map(|i| entry(i).key).collect();
        want.sort();
        assert_eq!(keys, want);
    }
}
