//! Sharded syncs: one job split over N processes (Kubernetes Indexed Jobs, array jobs, a shell loop)
//! with no coordinator. Every shard of a job must agree exactly on which keys are its own, whenever it
//! starts and whatever it happens to list, or keys are skipped or handled twice. So a partition is a
//! pure function of the key (relative to the sync root) and of values fixed before the job starts:
//!
//! - **hash** (default): shard `i` of `N` owns the keys whose MD5, read as a little-endian u64 from its
//!   first 8 bytes, is `i` modulo `N` (rclone's `--hash-filter` scheme). Every shard lists everything.
//! - **range**: a plan made once (`--make-shard-plan N`) holds `N - 1` split keys `b1 < … < b(N-1)`;
//!   shard `i` owns `(b(i), b(i+1)]` (`b0` = before every key, `bN` = after every key), and lists only
//!   that range on both sides (`StartAfter = b(i)`, stopping after `b(i+1)`).
//!
//! The partition applies to both listings, so the diff (and with it `--delete`) sees only the shard's
//! own keys on both sides: a shard never copies or deletes a key of another partition.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which part of the key space a run handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// This shard's index, `0..count`.
    pub index: u32,
    /// How many shards the job has.
    pub count: u32,
    /// How keys are assigned to shards.
    pub mode: ShardMode,
}

/// How keys are assigned to shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardMode {
    /// By a stable hash of the key.
    Hash,
    /// By key range: the keys after `after` (exclusive) up to `upto` (inclusive); `None` is unbounded.
    Range {
        /// The last key of the previous shard.
        after: Option<String>,
        /// The last key of this shard.
        upto: Option<String>,
    },
}

/// The shard of a key under the hash scheme.
pub fn hash_shard(key: &str, count: u32) -> u32 {
    let d = crate::checksum::md5_of(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(first) % u64::from(count.max(1))) as u32
}

impl Shard {
    /// Whether `key` (relative to the sync root) belongs to this shard.
    pub fn contains(&self, key: &str) -> bool {
        match &self.mode {
            ShardMode::Hash => hash_shard(key, self.count) == self.index,
            ShardMode::Range { after, upto } => {
                after.as_deref().is_none_or(|a| key.as_bytes() > a.as_bytes())
                    && upto.as_deref().is_none_or(|u| key.as_bytes() <= u.as_bytes())
            }
        }
    }

    /// Whether `key`, and every key after it in listing order, is past this shard's range (so an
    /// ordered listing may stop).
    pub fn is_past(&self, key: &str) -> bool {
        match &self.mode {
            ShardMode::Range { upto: Some(u), .. } => key.as_bytes() > u.as_bytes(),
            _ => false,
        }
    }

    /// Whether some key starting with `prefix` may belong to this shard (false only when every such
    /// key is outside a range shard's range), so a walk can skip a whole directory.
    pub fn may_hold_prefix(&self, prefix: &str) -> bool {
        let ShardMode::Range { after, upto } = &self.mode else {
            return true;
        };
        let p = prefix.as_bytes();
        // Every key under the prefix is >= the prefix.
        if upto.as_deref().is_some_and(|u| u.as_bytes() < p) {
            return false;
        }
        // A lower bound past the prefix that does not extend it is above every key under it.
        !after
            .as_deref()
            .is_some_and(|a| a.as_bytes() > p && !a.as_bytes().starts_with(p))
    }

    /// The key a listing may start after (`StartAfter`), for range shards.
    pub fn start_after(&self) -> Option<&str> {
        match &self.mode {
            ShardMode::Range { after, .. } => after.as_deref(),
            ShardMode::Hash => None,
        }
    }

    /// A short label for logs (`3/8 hash`).
    pub fn label(&self) -> String {
        format!("{}/{} {}", self.index, self.count, self.mode.name())
    }
}

impl ShardMode {
    /// `hash` or `range`.
    pub fn name(&self) -> &'static str {
        match self {
            ShardMode::Hash => "hash",
            ShardMode::Range { .. } => "range",
        }
    }
}

/// A range plan: the split keys of a job, and what it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// Format version (1).
    pub version: u32,
    /// The source the plan was made for, as given.
    pub source: String,
    /// The target the plan was made for, as given.
    pub target: String,
    /// How many shards.
    pub shard_count: u32,
    /// How many source objects were listed to make it.
    pub objects: u64,
    /// `shard_count - 1` split keys in ascending byte order.
    pub bounds: Vec<String>,
}

impl ShardPlan {
    /// Reads a plan file.
    pub fn load(path: &std::path::Path) -> Result<ShardPlan> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::local("read shard plan", path, e))?;
        let plan: ShardPlan = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidArgument(format!("shard plan {} is not valid: {e}", path.display())))?;
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> Result<()> {
        let sorted = self.bounds.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes());
        if self.version != 1 || self.shard_count == 0 || self.bounds.len() + 1 != self.shard_count as usize || !sorted {
            return Err(Error::InvalidArgument(
                "the shard plan is inconsistent (version, shard_count and sorted bounds must agree)".into(),
            ));
        }
        Ok(())
    }

    /// The shard `index` of this plan, after checking the plan was made for this job.
    pub fn shard(&self, index: u32, count: u32, source: &str, target: &str) -> Result<Shard> {
        let refuse = |what: &str, plan: &str, given: &str| {
            Err(Error::InvalidArgument(format!(
                "the shard plan was made for {what} {plan}, not {given}"
            )))
        };
        if self.source != source {
            return refuse("source", &self.source, source);
        }
        if self.target != target {
            return refuse("target", &self.target, target);
        }
        if self.shard_count != count {
            return refuse("shard count", &self.shard_count.to_string(), &count.to_string());
        }
        let i = index as usize;
        Ok(Shard {
            index,
            count,
            mode: ShardMode::Range {
                after: i.checked_sub(1).map(|p| self.bounds[p].clone()),
                upto: self.bounds.get(i).cloned(),
            },
        })
    }
}

/// Picks `count - 1` split keys from a sorted sample of the keys so that the shards hold about as many
/// keys each.
pub fn split_points(sorted_sample: &[String], count: u32) -> Vec<String> {
    let n = sorted_sample.len();
    let mut out: Vec<String> = Vec::new();
    for i in 1..count as usize {
        let q = (i * n) / count as usize;
        if q == 0 {
            continue;
        }
        let key = &sorted_sample[q - 1];
        if out.last().is_none_or(|l| l.as_bytes() < key.as_bytes()) {
            out.push(key.clone());
        }
    }
    // Too few distinct keys for every shard: later shards get empty ranges past the last key.
    while out.len() + 1 < count as usize {
        let next = match out.last() {
            Some(l) => format!("{l}\u{10FFFF}"),
            None => "\u{10FFFF}".to_string(),
        };
        out.push(next);
    }
    out
}

/// A deterministic, bounded sample of a key stream: every key while few, then every 2nd, 4th, …
#[derive(Debug, Default)]
pub struct KeySample {
    keys: Vec<String>,
    stride: u64,
    seen: u64,
}

impl KeySample {
    /// At most this many keys are kept.
    const CAP: usize = 100_000;

    /// Adds the next key of the stream.
    pub fn push(&mut self, key: &str) {
        if self.stride == 0 {
            self.stride = 1;
        }
        if self.seen.is_multiple_of(self.stride) {
            self.keys.push(key.to_string());
            if self.keys.len() >= Self::CAP {
                let mut i = 0;
                self.keys.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    /// How many keys were seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The sample, sorted.
    pub fn into_sorted(mut self) -> Vec<String> {
        self.keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        self.keys.dedup();
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_partition_is_stable_and_covers_every_key_once() {
        // Pinned values: a change of the scheme would silently re-partition running jobs.
        assert_eq!(hash_shard("a", 8), hash_shard("a", 8));
        let d = crate::checksum::md5_of(b"dir/file.txt");
        let want = (u64::from_le_bytes(d[..8].try_into().unwrap()) % 5) as u32;
        assert_eq!(hash_shard("dir/file.txt", 5), want);
        let shards: Vec<Shard> = (0..4)
            .map(|index| Shard {
                index,
                count: 4,
                mode: ShardMode::Hash,
            })
            .collect();
        let mut sizes = [0; 4];
        for k in 0..4000 {
            let key = format!("k{k}");
            let owners: Vec<u32> = shards.iter().filter(|s| s.contains(&key)).map(|s| s.index).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0] as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 800), "{sizes:?}");
    }

    fn plan_sizes(keys: &[String], count: u32) -> Vec<usize> {
        let mut sample = KeySample::default();
        for k in keys {
            sample.push(k);
        }
        let plan = ShardPlan {
            version: 1,
            source: "s".into(),
            target: "t".into(),
            shard_count: count,
            objects: sample.seen(),
            bounds: split_points(&sample.into_sorted(), count),
        };
        plan.check().unwrap();
        (0..count)
            .map(|i| {
                let shard = plan.shard(i, count, "s", "t").unwrap();
                keys.iter().filter(|k| shard.contains(k)).count()
            })
            .collect()
    }

    #[test]
    fn range_plans_are_balanced_on_flat_and_tree_key_spaces() {
        let flat: Vec<String> = (0..250_000).map(|i| format!("obj-{i:08}")).collect();
        let tree: Vec<String> = (0..500)
            .flat_map(|d| (0..(d % 7 + 1) * 60).map(move |f| format!("dir{d:03}/sub/file{f:05}.bin")))
            .collect();
        for keys in [&flat, &tree] {
            let sizes = plan_sizes(keys, 8);
            assert_eq!(sizes.iter().sum::<usize>(), keys.len(), "every key in one shard");
            let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
            assert!(max as f64 <= 1.5 * min as f64, "{sizes:?}");
        }
        // Fewer keys than shards: every key still has exactly one shard.
        let few: Vec<String> = vec!["a".into(), "b".into()];
        assert_eq!(plan_sizes(&few, 4).iter().sum::<usize>(), 2);
    }

    #[test]
    fn a_plan_is_refused_for_another_job() {
        let plan = ShardPlan {
            version: 1,
            source: "s3://a/".into(),
            target: "s3://b/".into(),
            shard_count: 2,
            objects: 10,
            bounds: vec!["m".into()],
        };
        assert!(plan.shard(0, 2, "s3://a/", "s3://b/").is_ok());
        assert!(plan.shard(0, 3, "s3://a/", "s3://b/").is_err());
        assert!(plan.shard(0, 2, "s3://x/", "s3://b/").is_err());
        assert!(plan.shard(0, 2, "s3://a/", "/tmp/b").is_err());
        let s1 = plan.shard(1, 2, "s3://a/", "s3://b/").unwrap();
        assert!(s1.contains("n") && !s1.contains("m") && !s1.is_past("zz"));
        let s0 = plan.shard(0, 2, "s3://a/", "s3://b/").unwrap();
        assert!(s0.contains("m") && !s0.contains("n") && s0.is_past("n"));
        assert_eq!(s1.start_after(), Some("m"));
        // Directory pruning: s1 owns ("m", …), s0 owns (…, "m"].
        assert!(s1.may_hold_prefix("m/") && s1.may_hold_prefix("z/") && !s1.may_hold_prefix("a/"));
        assert!(s0.may_hold_prefix("a/") && !s0.may_hold_prefix("n/") && !s0.may_hold_prefix("m/"));
    }
}
