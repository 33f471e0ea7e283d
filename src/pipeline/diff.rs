//! The sorted merge of the source and target listings: one pass over two key-ordered streams, holding
//! one entry of each side at a time.
//!
//! When a listing turns out not to be in order (some S3-compatible servers, directory buckets), the merge
//! either stops at once and says which side it was (the pipeline then lists again, sorting that side on
//! disk, see `sort`), or — when that was already done — falls back to a point lookup of the
//! target for every later source entry, and deletion is disabled for the run, so an unordered listing
//! can cost requests but never a wrong delete.

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

/// Which listings were found out of key order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disorder {
    /// The source listing.
    pub source: bool,
    /// The target listing.
    pub target: bool,
}

impl Disorder {
    /// Whether either listing was out of order.
    pub fn any(self) -> bool {
        self.source || self.target
    }
}

/// Pulls from one side, noticing out-of-order keys.
struct Side {
    rx: Option<mpsc::Receiver<Result<Entry>>>,
    last: Option<String>,
    is_source: bool,
    /// Entries pulled in order.
    seen: usize,
    /// What [`Side::prove`] read ahead, in order.
    ahead: std::collections::VecDeque<Pulled>,
}

enum Pulled {
    Entry(Entry),
    OutOfOrder(Entry),
    /// The lister stopped at a key out of order (and did not send it).
    Stopped(String),
    Error(crate::error::Error),
    End,
}

impl Side {
    /// A side pulling from `rx` (`None`: a side that is not listed).
    fn new(rx: Option<mpsc::Receiver<Result<Entry>>>, is_source: bool) -> Self {
        Side {
            rx,
            last: None,
            is_source,
            seen: 0,
            ahead: Default::default(),
        }
    }

    /// Whether the side has not ended and not yet shown [`PROBATION`] keys in order.
    fn on_probation(&self, done: bool) -> bool {
        !done && self.seen < PROBATION
    }

    async fn pull(&mut self) -> Pulled {
        match self.ahead.pop_front() {
            Some(p) => p,
            None => self.pull_next().await,
        }
    }

    /// Reads ahead until the side has shown [`PROBATION`] keys in order or ended (at most that many
    /// entries are held); true when it showed a key out of order instead.
    async fn prove(&mut self) -> bool {
        while self.seen < PROBATION && self.rx.is_some() {
            let p = self.pull_next().await;
            let disorder = matches!(p, Pulled::OutOfOrder(_) | Pulled::Stopped(_));
            self.ahead.push_back(p);
            if disorder {
                return true;
            }
        }
        false
    }

    async fn pull_next(&mut self) -> Pulled {
        let Some(rx) = self.rx.as_mut() else { return Pulled::End };
        match rx.recv().await {
            None => {
                self.rx = None;
                Pulled::End
            }
            Some(Err(crate::error::Error::ListingOutOfOrder(key))) => Pulled::Stopped(key),
            Some(Err(e)) => Pulled::Error(e),
            Some(Ok(e)) => {
                if self.last.as_deref().is_some_and(|l| l.as_bytes() >= e.key.as_bytes()) {
                    return Pulled::OutOfOrder(e);
                }
                self.last = Some(e.key.clone());
                self.seen += 1;
                Pulled::Entry(e)
            }
        }
    }
}

/// Entries each side must show in key order (or end) before the merge's first decisions go out, when
/// it may stop at a disorder: an unordered listing nearly always shows it within its first page, and
/// then no key has been decided on a wrong premise.
const PROBATION: usize = 1000;

/// The merge's output: held back while the listings are on probation (see [`PROBATION`]), bounded.
struct Out {
    tx: mpsc::Sender<Pair>,
    held: Option<Vec<Pair>>,
}

impl Out {
    /// Sends (or holds) a pair; false when nobody reads any more.
    async fn send(&mut self, p: Pair) -> bool {
        match &mut self.held {
            Some(h) if h.len() < 2 * PROBATION => {
                h.push(p);
                true
            }
            _ => self.release().await && self.tx.send(p).await.is_ok(),
        }
    }

    /// Ends the probation: sends what was held.
    async fn release(&mut self) -> bool {
        for p in self.held.take().into_iter().flatten() {
            if self.tx.send(p).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// The merge. `target` is `None` when the target is not listed (every source entry gets
/// [`TargetState::Lookup`]). At the first key out of order of a side in `stop_on` the merge ends
/// (nothing more is sent, and nothing at all while both sides were on probation); on the other sides
/// it goes on with lookups. Returns the listings found out of order.
pub async fn merge(
    source: mpsc::Receiver<Result<Entry>>,
    target: Option<mpsc::Receiver<Result<Entry>>>,
    no_target_listing: TargetState,
    out: mpsc::Sender<Pair>,
    stop_on: Disorder,
) -> Disorder {
    let mut merge = Merge {
        out: Out {
            tx: out,
            held: stop_on.any().then(Vec::new),
        },
        listed: target.is_some(),
        no_target_listing,
        stop_on,
        src: Side::new(Some(source), true),
        tgt_done: target.is_none(),
        tgt: Side::new(target, false),
        disorder: Disorder::default(),
        target_complete: true,
        s: None,
        t: None,
        src_done: false,
    };
    merge.run().await;
    merge.disorder
}

/// The state of one merge (see [`merge`]).
struct Merge {
    out: Out,
    /// Whether the target is listed.
    listed: bool,
    /// The target state of every source entry when the target is not listed.
    no_target_listing: TargetState,
    /// The sides whose first key out of order ends the merge.
    stop_on: Disorder,
    src: Side,
    tgt: Side,
    /// The listings found out of order so far.
    disorder: Disorder,
    /// Whether the target listing is complete so far (absent from it means absent).
    target_complete: bool,
    /// The next source entry, pulled and not merged yet.
    s: Option<Entry>,
    /// The next target entry, pulled and not merged yet.
    t: Option<Entry>,
    src_done: bool,
    tgt_done: bool,
}

impl Merge {
    /// Merges until both listings end, a side in `stop_on` shows a key out of order, or nobody reads
    /// the pairs any more.
    async fn run(&mut self) {
        loop {
            if !self.pull_source().await || !self.pull_target().await || !self.end_probation().await {
                return;
            }
            let Some(pair) = self.next_pair().await else { return };
            if !self.out.send(pair).await {
                return;
            }
        }
    }

    /// Pulls the next source entry in order, if none is waiting, sending on what the source listing
    /// reports on the way; `false`: the merge ends.
    async fn pull_source(&mut self) -> bool {
        while self.s.is_none() && !self.src_done {
            match self.src.pull().await {
                Pulled::Entry(e) => self.s = Some(e),
                Pulled::OutOfOrder(e) => {
                    self.disorder.source = true;
                    if self.stop_on.source || !self.out.send(Pair::Source(e, TargetState::Lookup)).await {
                        return false;
                    }
                }
                Pulled::Stopped(key) => {
                    self.disorder.source = true;
                    let e = crate::error::Error::ListingOutOfOrder(key);
                    if self.stop_on.source || !self.out.send(Pair::of_error(e, self.src.is_source)).await {
                        return false;
                    }
                }
                Pulled::Error(e) => {
                    if !self.out.send(Pair::of_error(e, self.src.is_source)).await {
                        return false;
                    }
                }
                Pulled::End => self.src_done = true,
            }
        }
        true
    }

    /// Pulls the next target entry in order, if none is waiting, sending on what the target listing
    /// reports on the way; `false`: the merge ends.
    async fn pull_target(&mut self) -> bool {
        while self.t.is_none() && !self.tgt_done {
            match self.tgt.pull().await {
                Pulled::Entry(e) => self.t = Some(e),
                Pulled::OutOfOrder(_) => {
                    self.disorder.target = true;
                    if self.stop_on.target {
                        return false;
                    }
                }
                Pulled::Stopped(key) => {
                    self.disorder.target = true;
                    self.target_complete = false;
                    let e = crate::error::Error::ListingOutOfOrder(key);
                    if self.stop_on.target || !self.out.send(Pair::of_error(e, self.tgt.is_source)).await {
                        return false;
                    }
                }
                Pulled::Error(e) => {
                    let pair = Pair::of_error(e, self.tgt.is_source);
                    // Absent from an incomplete target listing proves nothing: look later keys up.
                    self.target_complete &= matches!(pair, Pair::ListingWarning(..));
                    if !self.out.send(pair).await {
                        return false;
                    }
                }
                Pulled::End => self.tgt_done = true,
            }
        }
        true
    }

    /// Ends the probation of the output once both sides have shown their order; `false`: the merge
    /// ends (the target showed a key out of order, or nobody reads any more).
    async fn end_probation(&mut self) -> bool {
        // Held pairs about to overflow while the target has not shown its order (many source keys
        // before its first): read the target's first page ahead, so that "absent from the target" is
        // never decided on an unproven target.
        if self.stop_on.target
            && self.tgt.on_probation(self.tgt_done)
            && self.out.held.as_ref().is_some_and(|h| h.len() + 1 >= 2 * PROBATION)
            && self.tgt.prove().await
        {
            self.disorder.target = true;
            return false;
        }
        if self.out.held.is_some()
            && !self.src.on_probation(self.src_done)
            && !self.tgt.on_probation(self.tgt_done)
            && !self.out.release().await
        {
            return false;
        }
        true
    }

    /// The next pair of the pulled entries (the entry of the greater key waits for the next round);
    /// `None` when both listings ended (what was held is sent first).
    async fn next_pair(&mut self) -> Option<Pair> {
        let pair = match (self.s.take(), self.t.take()) {
            (None, None) => {
                self.out.release().await;
                return None;
            }
            (Some(se), None) => {
                let state = if !self.listed {
                    self.no_target_listing.clone()
                } else {
                    self.absent_state()
                };
                Pair::Source(se, state)
            }
            (None, Some(te)) => Pair::TargetOnly(te),
            (Some(se), Some(te)) => match se.key.as_bytes().cmp(te.key.as_bytes()) {
                std::cmp::Ordering::Less => {
                    self.t = Some(te);
                    Pair::Source(se, self.absent_state())
                }
                std::cmp::Ordering::Greater => {
                    self.s = Some(se);
                    Pair::TargetOnly(te)
                }
                std::cmp::Ordering::Equal => Pair::Source(se, TargetState::Listed(Some(te))),
            },
        };
        Some(pair)
    }

    /// The target state of a source key absent from the target listing: absent, while the listings
    /// are in order and the target's complete; otherwise to be looked up.
    fn absent_state(&self) -> TargetState {
        if !self.disorder.any() && self.target_complete {
            TargetState::Listed(None)
        } else {
            TargetState::Lookup
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// Many source keys before the target's first: before the held pairs go out, the target's first
    /// page is read ahead, so an unordered target is caught before any key is decided absent.
    #[tokio::test]
    async fn many_source_keys_before_the_target_wait_for_its_order() {
        let src: Vec<String> = (0..3 * PROBATION).map(|i| format!("a{i:05}")).collect();
        let src: Vec<&str> = src.iter().map(String::as_str).collect();
        let (out, disorder) = run_with(&src, Some(&["b", "d", "c"]), true).await;
        assert_eq!(
            disorder,
            Disorder {
                source: false,
                target: true
            }
        );
        assert_eq!(out, vec![], "nothing decided on an unordered target");
        let (out, disorder) = run_with(&src, Some(&["b", "c"]), true).await;
        assert!(!disorder.any());
        assert_eq!(out.len(), src.len() + 2);
        assert!(matches!(&out[0], Pair::Source(e, TargetState::Listed(None)) if e.key == "a00000"));
    }

    /// Past the probation, decisions flow before the listings end; a merge that may stop still gives
    /// the same pairs as one that may not.
    #[tokio::test]
    async fn after_the_probation_pairs_flow_before_the_listings_end() {
        let (stx, srx) = mpsc::channel(4);
        let (ttx, trx) = mpsc::channel(4);
        let (otx, mut orx) = mpsc::channel(4);
        let stop = Disorder {
            source: true,
            target: true,
        };
        tokio::spawn(merge(srx, Some(trx), TargetState::Lookup, otx, stop));
        let keys: Vec<String> = (0..PROBATION + 1).map(|i| format!("k{i:05}")).collect();
        let target_keys = keys.clone();
        tokio::spawn(async move {
            for k in target_keys {
                ttx.send(Ok(entry(&k))).await.unwrap();
            }
        });
        // The source stays open after its probation: the first pair must still arrive.
        for k in &keys {
            stx.send(Ok(entry(k))).await.unwrap();
            if let Ok(p) = orx.try_recv() {
                assert_eq!(
                    p,
                    Pair::Source(entry("k00000"), TargetState::Listed(Some(entry("k00000"))))
                );
                return;
            }
        }
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), orx.recv()).await;
        assert!(matches!(first, Ok(Some(Pair::Source(..)))), "{first:?}");
        drop(stx);
    }

    fn entry(k: &str) -> Entry {
        Entry {
            key: k.into(),
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            version_id: None,
        }
    }

    async fn run(src: &[&str], tgt: Option<&[&str]>) -> (Vec<Pair>, Disorder) {
        run_with(src, tgt, false).await
    }

    async fn run_with(src: &[&str], tgt: Option<&[&str]>, stop: bool) -> (Vec<Pair>, Disorder) {
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
        let h = tokio::spawn(merge(
            srx,
            tgt.map(|_| trx),
            TargetState::Lookup,
            otx,
            Disorder {
                source: stop,
                target: stop,
            },
        ));
        let mut out = Vec::new();
        while let Some(p) = orx.recv().await {
            out.push(p);
        }
        (out, h.await.unwrap())
    }

    #[tokio::test]
    async fn merges_sorted_streams() {
        let (out, disorder) = run(&["a", "b", "d"], Some(&["b", "c", "d", "e"])).await;
        assert!(!disorder.any());
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
        let h = tokio::spawn(merge(srx, Some(trx), TargetState::Lookup, otx, Disorder::default()));
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
        let (out, disorder) = run(&["b", "a"], Some(&["a", "b"])).await;
        assert_eq!(
            disorder,
            Disorder {
                source: true,
                target: false
            }
        );
        assert!(out.contains(&Pair::Source(entry("a"), TargetState::Lookup)));
    }

    #[tokio::test]
    async fn a_merge_told_to_stop_names_the_unordered_side_and_decides_nothing() {
        let (out, disorder) = run_with(&["a", "b", "c", "d"], Some(&["a", "c", "b"]), true).await;
        assert_eq!(
            disorder,
            Disorder {
                source: false,
                target: true
            }
        );
        // The merge stopped at "b" after "c" in the target, within the probation: nothing was decided
        // (not even "b", which the target has after all).
        assert_eq!(out, vec![]);
    }
}
