//! The sorted merge of the source and target listings: one pass over two key-ordered streams, holding
//! one entry of each side at a time.
//!
//! When a listing turns out not to be in order (some S3-compatible servers, directory buckets), the merge
//! falls back to a point lookup of the target for every later source entry, and deletion is disabled for
//! the run, so an unordered listing can cost requests but never a wrong delete.

use crate::error::Result;
use crate::storage::Entry;
use tokio::sync::mpsc;

/// What the merge says about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pair {
    /// A source entry and the target entry of the same key, when the target has it.
    Source(Entry, TargetState),
    /// A target entry with no source entry of that key.
    TargetOnly(Entry),
    /// A listing failed; the flag says whether it was the source listing.
    ListingError(String, bool),
    /// A listing left an entry out on purpose (key, why): a warning, the listing is still complete.
    ListingWarning(String, String),
}

impl Pair {
    /// The pair that reports a listing's error.
    fn of_error(e: crate::error::Error, is_source: bool) -> Pair {
        match e {
            crate::error::Error::Skipped { key, reason } => Pair::ListingWarning(key, reason),
            e => Pair::ListingError(e.to_string(), is_source),
        }
    }
}

/// What is known of the target for a source entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// From the target listing (`None`: absent).
    Listed(Option<Entry>),
    /// Unknown: look it up (HEAD or stat) before deciding.
    Lookup,
}

/// Pulls from one side, noticing out-of-order keys.
struct Side {
    rx: Option<mpsc::Receiver<Result<Entry>>>,
    last: Option<String>,
    is_source: bool,
}

enum Pulled {
    Entry(Entry),
    OutOfOrder(Entry),
    Error(crate::error::Error),
    End,
}

impl Side {
    async fn pull(&mut self) -> Pulled {
        let Some(rx) = self.rx.as_mut() else { return Pulled::End };
        match rx.recv().await {
            None => {
                self.rx = None;
                Pulled::End
            }
            Some(Err(e)) => Pulled::Error(e),
            Some(Ok(e)) => {
                if self.last.as_deref().is_some_and(|l| l.as_bytes() >= e.key.as_bytes()) {
                    return Pulled::OutOfOrder(e);
                }
                self.last = Some(e.key.clone());
                Pulled::Entry(e)
            }
        }
    }
}

/// The merge. `target` is `None` when the target is not listed (every source entry gets
/// [`TargetState::Lookup`]). Returns whether both listings were in order.
pub async fn merge(
    source: mpsc::Receiver<Result<Entry>>,
    target: Option<mpsc::Receiver<Result<Entry>>>,
    no_target_listing: TargetState,
    out: mpsc::Sender<Pair>,
) -> bool {
    let listed = target.is_some();
    let mut src = Side {
        rx: Some(source),
        last: None,
        is_source: true,
    };
    let mut tgt = Side {
        rx: target,
        last: None,
        is_source: false,
    };
    let mut ordered = true;
    let mut target_complete = true;
    let mut s = None;
    let mut t = None;
    let mut src_done = false;
    let mut tgt_done = !listed;
    loop {
        while s.is_none() && !src_done {
            match src.pull().await {
                Pulled::Entry(e) => s = Some(e),
                Pulled::OutOfOrder(e) => {
                    ordered = false;
                    if out.send(Pair::Source(e, TargetState::Lookup)).await.is_err() {
                        return ordered;
                    }
                }
                Pulled::Error(e) => {
                    if out.send(Pair::of_error(e, src.is_source)).await.is_err() {
                        return ordered;
                    }
                }
                Pulled::End => src_done = true,
            }
        }
        while t.is_none() && !tgt_done {
            match tgt.pull().await {
                Pulled::Entry(e) => t = Some(e),
                Pulled::OutOfOrder(_) => ordered = false,
                Pulled::Error(e) => {
                    let pair = Pair::of_error(e, tgt.is_source);
                    // Absent from an incomplete target listing proves nothing: look later keys up.
                    target_complete &= matches!(pair, Pair::ListingWarning(..));
                    if out.send(pair).await.is_err() {
                        return ordered;
                    }
                }
                Pulled::End => tgt_done = true,
            }
        }
        let pair = match (s.take(), t.take()) {
            (None, None) => return ordered,
            (Some(se), None) => {
                let state = if !listed {
                    no_target_listing.clone()
                } else if ordered && target_complete {
                    TargetState::Listed(None)
                } else {
                    TargetState::Lookup
                };
                Pair::Source(se, state)
            }
            (None, Some(te)) => Pair::TargetOnly(te),
            (Some(se), Some(te)) => match se.key.as_bytes().cmp(te.key.as_bytes()) {
                std::cmp::Ordering::Less => {
                    t = Some(te);
                    let state = if ordered && target_complete {
                        TargetState::Listed(None)
                    } else {
                        TargetState::Lookup
                    };
                    Pair::Source(se, state)
                }
                std::cmp::Ordering::Greater => {
                    s = Some(se);
                    Pair::TargetOnly(te)
                }
                std::cmp::Ordering::Equal => Pair::Source(se, TargetState::Listed(Some(te))),
            },
        };
        if out.send(pair).await.is_err() {
            return ordered;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn entry(k: &str) -> Entry {
        Entry {
            key: k.into(),
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            version_id: None,
        }
    }

    async fn run(src: &[&str], tgt: Option<&[&str]>) -> (Vec<Pair>, bool) {
        let (stx, srx) = mpsc::channel(4);
        let (ttx, trx) = mpsc::channel(4);
        let (otx, mut orx) = mpsc::channel(4);
        let src: Vec<String> = src.iter().map(|s| s.to_string()).collect();
        let tgt_v: Vec<String> = tgt.unwrap_or(&[]).iter().map(|s| s.to_string()).collect();
        tokio::spawn(async move {
            for k in src {
                stx.send(Ok(entry(&k))).await.unwrap();
            }
        });
        tokio::spawn(async move {
            for k in tgt_v {
                ttx.send(Ok(entry(&k))).await.unwrap();
            }
        });
        let h = tokio::spawn(merge(srx, tgt.map(|_| trx), TargetState::Lookup, otx));
        let mut out = Vec::new();
        while let Some(p) = orx.recv().await {
            out.push(p);
        }
        (out, h.await.unwrap())
    }

    #[tokio::test]
    async fn merges_sorted_streams() {
        let (out, ordered) = run(&["a", "b", "d"], Some(&["b", "c", "d", "e"])).await;
        assert!(ordered);
        assert_eq!(
            out,
            vec![
                Pair::Source(entry("a"), TargetState::Listed(None)),
                Pair::Source(entry("b"), TargetState::Listed(Some(entry("b")))),
                Pair::TargetOnly(entry("c")),
                Pair::Source(entry("d"), TargetState::Listed(Some(entry("d")))),
                Pair::TargetOnly(entry("e")),
            ]
        );
    }

    #[tokio::test]
    async fn unlisted_target_means_lookup() {
        let (out, _) = run(&["a"], None).await;
        assert_eq!(out, vec![Pair::Source(entry("a"), TargetState::Lookup)]);
    }

    #[tokio::test]
    async fn failed_target_listing_means_lookup_for_later_keys() {
        let (stx, srx) = mpsc::channel(4);
        let (ttx, trx) = mpsc::channel(4);
        let (otx, mut orx) = mpsc::channel(8);
        tokio::spawn(async move {
            for k in ["a", "c"] {
                stx.send(Ok(entry(k))).await.unwrap();
            }
        });
        tokio::spawn(async move {
            ttx.send(Ok(entry("a"))).await.unwrap();
            ttx.send(Err(crate::error::Error::InvalidArgument("page 2 failed".into())))
                .await
                .unwrap();
        });
        let h = tokio::spawn(merge(srx, Some(trx), TargetState::Lookup, otx));
        let mut out = Vec::new();
        while let Some(p) = orx.recv().await {
            out.push(p);
        }
        h.await.unwrap();
        assert!(out.contains(&Pair::ListingError("page 2 failed".into(), false)));
        // "c" may exist in the part of the target listing that was never read.
        assert!(out.contains(&Pair::Source(entry("c"), TargetState::Lookup)), "{out:?}");
    }

    #[tokio::test]
    async fn out_of_order_source_falls_back_to_lookup() {
        let (out, ordered) = run(&["b", "a"], Some(&["a", "b"])).await;
        assert!(!ordered);
        assert!(out.contains(&Pair::Source(entry("a"), TargetState::Lookup)));
    }
}
