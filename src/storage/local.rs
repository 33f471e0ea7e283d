//! Local directories: a walk that yields files in S3 key order, the key <-> path mapping (where keys that
//! would escape the directory are refused), and the temp-file naming that makes writes atomic.

use super::Entry;
use crate::error::{Error, Result};
use crate::external_sort::{read_array, read_str, read_time, write_str, write_time, ExternalSort, Merger, Record};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Prefix of the temporary files s3sync writes before renaming them into place.
pub const TEMP_PREFIX: &str = ".s3sync-tmp.";

/// A local directory as one end of a sync.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    ignore_symlinks: bool,
    /// The shard of a sharded job: walks skip what belongs to other shards.
    shard: Option<crate::shard::Shard>,
    /// Bytes of one directory's entries sorted in memory ([`DIR_SORT_BYTES`]).
    dir_sort_bytes: usize,
}

/// Directories read ahead of the walk on other threads: the next few subdirectories of the directory
/// being walked are read (and their entries stat'ed) while the walk sends what it has, so a tree of
/// many directories is read on several cores. The walk still takes each directory in order, so the
/// keys still come out in byte order; at most [`READ_AHEAD`] directories per level are held. The
/// reads run on a few threads of the walk's own ([`readers`]): every thread that allocates keeps
/// memory of its own, so a thread per directory read ahead cost more memory than the entries held.
struct ReadAhead {
    /// Where reads are queued; `None` without reader threads (nothing is read ahead).
    jobs: Option<crossbeam_channel::Sender<ReadJob>>,
    /// The queue's other end, to drop what is still queued when the walk ends (early: stopped).
    queue: crossbeam_channel::Receiver<ReadJob>,
    pending: std::cell::RefCell<HashMap<PathBuf, std::sync::mpsc::Receiver<DirListing>>>,
    /// The most directories read ahead at once (reported at the end of the walk).
    peak: std::cell::Cell<usize>,
}

/// A directory to read ahead (its path and key prefix), and where its listing goes.
type ReadJob = (PathBuf, String, std::sync::mpsc::SyncSender<DirListing>);

/// One directory of the walk: its path, the next of its entries (a window of at most [`WINDOW`]),
/// the rest of them in order, and the subdirectories in the window not read ahead yet.
struct Level {
    dir: PathBuf,
    items: VecDeque<DirItem>,
    rest: Merger<DirItem>,
    upcoming: VecDeque<(PathBuf, String)>,
    /// Subdirectories of this level being read ahead (at most [`READ_AHEAD`]).
    in_flight: usize,
}

impl Level {
    /// Tops the window up from the rest (blocking file I/O for a directory sorted on disk); the
    /// subdirectories that enter it become candidates for reading ahead.
    fn refill(&mut self) -> Result<()> {
        if self.items.len() > WINDOW / 2 {
            return Ok(());
        }
        while self.items.len() < WINDOW {
            let Some(item) = self.rest.next_record()? else { break };
            if item.dir.is_some() {
                self.upcoming.push_back((self.dir.join(item.name()), item.key.clone()));
            }
            self.items.push_back(item);
        }
        Ok(())
    }
}

/// One directory's entries in key order, and the errors of those that could not be read.
type DirListing = (Merger<DirItem>, Vec<Error>);

/// Subdirectories read ahead per level of the walk.
const READ_AHEAD: usize = 8;
/// Entries of a level taken out of its sorted listing ahead of the walk, so that the subdirectories
/// among them can be read ahead.
const WINDOW: usize = 256;
/// Bytes of one directory's entries sorted in memory (about 8,000 entries); the entries of a larger
/// directory are sorted in runs on disk and merged, so a directory of millions of files costs disk,
/// not memory.
pub const DIR_SORT_BYTES: usize = 1 << 20;

/// Threads that read directories ahead of a walk: one per core, at least 2, at most [`READ_AHEAD`].
fn readers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, READ_AHEAD)
}

impl ReadAhead {
    /// Starts the reader threads of a walk in `scope`; they end when the walk drops this.
    fn new<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        storage: &'scope LocalStorage,
        role: WalkRole,
        tx: &'scope mpsc::Sender<Result<Entry>>,
    ) -> Self {
        let (jobs, queue) = crossbeam_channel::unbounded::<ReadJob>();
        let mut started = 0;
        for _ in 0..readers() {
            let queue = queue.clone();
            let reader = std::thread::Builder::new()
                .name("s3sync-walk".into())
                .spawn_scoped(scope, move || {
                    for (dir, prefix, done) in queue {
                        // A read that panics drops `done`: the walk then reads that directory itself.
                        let read = std::panic::AssertUnwindSafe(|| storage.read_sorted(&dir, &prefix, role, tx));
                        if let Ok(listing) = std::panic::catch_unwind(read) {
                            let _ = done.send(listing);
                        }
                    }
                });
            started += usize::from(reader.is_ok());
        }
        ReadAhead {
            jobs: (started > 0).then_some(jobs),
            queue,
            pending: Default::default(),
            peak: Default::default(),
        }
    }

    /// Starts reading the next `n` of a level's subdirectories not started yet; returns how many
    /// were started (none without reader threads).
    fn start(&self, upcoming: &mut VecDeque<(PathBuf, String)>, n: usize) -> usize {
        let Some(jobs) = self.jobs.as_ref().filter(|_| n > 0 && !upcoming.is_empty()) else {
            return 0;
        };
        let mut pending = self.pending.borrow_mut();
        let mut started = 0;
        for (path, key) in upcoming.drain(..n.min(upcoming.len())) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            if jobs.send((path.clone(), key, tx)).is_ok() {
                pending.insert(path, rx);
                started += 1;
            }
        }
        self.peak.set(self.peak.get().max(pending.len()));
        started
    }

    /// Whether `dir` is being read ahead (or was, and its listing waits to be taken).
    fn has(&self, dir: &Path) -> bool {
        self.pending.borrow().contains_key(dir)
    }

    /// The listing of `dir` if it was read ahead (waiting for it if it is still being read).
    fn take(&self, dir: &Path) -> Option<DirListing> {
        let rx = self.pending.borrow_mut().remove(dir)?;
        rx.recv().ok()
    }

    /// Forgets the read ahead of `dir`, which the walk will not enter (its listing is dropped).
    fn discard(&self, dir: &Path) {
        self.pending.borrow_mut().remove(dir);
    }
}

impl Drop for ReadAhead {
    /// Ends the readers: the reads under way finish, the queued ones are dropped unread.
    fn drop(&mut self) {
        self.jobs = None;
        while self.queue.try_recv().is_ok() {}
    }
}

/// The items of a walk on their way to the listing channel, sent in bursts of up to [`Burst::SIZE`]:
/// a walk that waited for room after every entry once the channel was full, and woke the merge for
/// every entry when it was not, spent more CPU waking threads than reading directories.
struct Burst<'a> {
    tx: &'a mpsc::Sender<Result<Entry>>,
    held: Vec<Result<Entry>>,
}

impl<'a> Burst<'a> {
    const SIZE: usize = 64;

    fn new(tx: &'a mpsc::Sender<Result<Entry>>) -> Self {
        Burst {
            tx,
            held: Vec::with_capacity(Self::SIZE),
        }
    }

    /// Holds an item, sending what is held once it is a full burst; `false`: the receiver is gone.
    fn push(&mut self, item: Result<Entry>) -> bool {
        self.held.push(item);
        self.held.len() < Self::SIZE || self.flush()
    }

    /// Sends what is held, waiting for room for all of it at once; `false`: the receiver is gone.
    fn flush(&mut self) -> bool {
        while !self.held.is_empty() {
            let n = self.held.len().min(self.tx.max_capacity());
            let Ok(permits) = futures::executor::block_on(self.tx.reserve_many(n)) else {
                return false;
            };
            for (permit, item) in permits.zip(self.held.drain(..n)) {
                permit.send(item);
            }
        }
        true
    }
}

/// Why a key cannot be mapped to a local path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {key:?} refused: {reason}")]
pub struct UnsafeKey {
    /// The key.
    pub key: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl LocalStorage {
    /// A local end rooted at `root`.
    pub fn new(root: impl Into<PathBuf>, ignore_symlinks: bool) -> Self {
        LocalStorage {
            root: root.into(),
            ignore_symlinks,
            shard: None,
            dir_sort_bytes: DIR_SORT_BYTES,
        }
    }

    /// The same end, walked for one shard of a sharded job (the walk may skip other shards' entries;
    /// the lister's shard filter still decides).
    pub fn with_shard(mut self, shard: Option<crate::shard::Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// The same end, sorting directories in memory only up to `bytes` of entries.
    #[cfg(test)]
    fn with_dir_sort_bytes(mut self, bytes: usize) -> Self {
        self.dir_sort_bytes = bytes;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a relative key inside the root; refuses keys that would escape it or that no
    /// file system can hold (`..`, `.`, empty segments, absolute paths, NUL, backslashes on Windows).
    pub fn path_for(&self, key: &str) -> std::result::Result<PathBuf, UnsafeKey> {
        let refuse = |reason| UnsafeKey {
            key: key.to_string(),
            reason,
        };
        if key.is_empty() {
            return Err(refuse("empty key"));
        }
        if key.contains('\0') {
            return Err(refuse("contains NUL"));
        }
        if key.starts_with('/') {
            return Err(refuse("absolute path"));
        }
        if cfg!(windows) && (key.contains('\\') || key.contains(':')) {
            return Err(refuse("contains a character Windows paths cannot hold"));
        }
        let body = key.strip_suffix('/').unwrap_or(key);
        let mut path = self.root.clone();
        for seg in body.split('/') {
            match seg {
                "" => return Err(refuse("empty path segment")),
                "." | ".." => return Err(refuse("relative path segment")),
                _ => {}
            }
            if seg.starts_with(TEMP_PREFIX) {
                return Err(refuse("uses s3sync's temporary file name"));
            }
            path.push(seg);
        }
        // Belt and braces: the result must be a plain descendant of the root.
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| refuse("escapes the target"))?;
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(refuse("escapes the target"));
        }
        Ok(path)
    }

    /// Stats one key; `None` when it does not exist.
    pub async fn stat(&self, key: &str) -> Result<Option<Entry>> {
        let Ok(path) = self.path_for(key) else {
            return Ok(None);
        };
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(Entry {
                key: key.to_string(),
                size: m.len(),
                mtime: m.modified().map_err(|e| Error::local("stat", &path, e))?,
                etag: None,
                version_id: None,
            })),
            Ok(m) if m.is_dir() && key.ends_with('/') => Ok(Some(Entry {
                key: key.to_string(),
                size: 0,
                mtime: m.modified().map_err(|e| Error::local("stat", &path, e))?,
                etag: None,
                version_id: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::local("stat", &path, e)),
        }
    }

    /// Walks the tree and sends every file in UTF-8 byte order of its key. Runs on a blocking thread.
    ///
    /// The source walk follows symbolic links (unless `--ignore-symlinks`) and skips a link that leads
    /// back to a directory on its own path (a loop) with a warning. The target walk never follows a
    /// link: a link inside the target is listed as an entry of its own, so that `--delete` can remove
    /// the link itself and nothing behind it. Entries that cannot be read are sent as errors (they make
    /// the listing incomplete). The target walk of a real run ([`WalkRole::Target`]) removes leftovers
    /// of s3sync runs that are provably dead.
    pub async fn list(&self, tx: mpsc::Sender<Result<Entry>>, role: WalkRole) -> Result<()> {
        let me = self.clone();
        let res = tokio::task::spawn_blocking(move || me.walk(&tx, role))
            .await
            .map_err(|e| Error::local("walk", self.root.clone(), std::io::Error::other(e)))?;
        res
    }

    fn walk(&self, tx: &mpsc::Sender<Result<Entry>>, role: WalkRole) -> Result<()> {
        let peak = std::thread::scope(|scope| self.walk_with(tx, role, ReadAhead::new(scope, self, role, tx)))?;
        debug!(root = %self.root.display(), peak, "walk ended; most directories read ahead at once");
        Ok(())
    }

    /// The walk; returns the most directories that were read ahead at once.
    fn walk_with(&self, tx: &mpsc::Sender<Result<Entry>>, role: WalkRole, ahead: ReadAhead) -> Result<usize> {
        let Some(root_meta) = self.root_metadata()? else {
            return Ok(0);
        };
        let mut walker = Walker {
            storage: self,
            role,
            tx,
            burst: Burst::new(tx),
            ahead,
        };
        walker.walk(dir_id(&root_meta));
        Ok(walker.ahead.peak.get())
    }

    /// The metadata of the root directory; `None` when it does not exist (nothing to walk).
    fn root_metadata(&self) -> Result<Option<fs::Metadata>> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(Some(m)),
            Ok(_) => Err(Error::InvalidArgument(format!(
                "{} is not a directory",
                self.root.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::local("open directory", &self.root, e)),
        }
    }

    /// The entries of one directory in key order (sorted on disk past [`DIR_SORT_BYTES`]), and the
    /// errors of those that could not be read.
    /// The read stops early once `tx` is closed (the run is ending).
    fn read_sorted(
        &self,
        dir: &Path,
        key_prefix: &str,
        role: WalkRole,
        tx: &mpsc::Sender<Result<Entry>>,
    ) -> DirListing {
        let mut sort = ExternalSort::new(self.dir_sort_bytes);
        let mut errors = DirErrors::default();
        let read = self.read_into(dir, key_prefix, role, tx, &mut sort, &mut errors);
        let sorted = match read.and_then(|()| sort.finish()) {
            Ok(sorted) => sorted,
            Err(e) => {
                errors.push(e);
                Merger::empty()
            }
        };
        (sorted, errors.finish(dir, key_prefix))
    }

    /// Reads the entries of one directory into `sort`, and the errors of those that cannot be read
    /// into `errors`.
    fn read_into(
        &self,
        dir: &Path,
        key_prefix: &str,
        role: WalkRole,
        tx: &mpsc::Sender<Result<Entry>>,
        sort: &mut ExternalSort<DirItem>,
        errors: &mut DirErrors,
    ) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                errors.push(Error::local("read directory", dir, e));
                return Ok(());
            }
        };
        for (n, ent) in rd.enumerate() {
            // A directory of millions of files takes a while: stop reading once the run is ending.
            if n % 1024 == 1023 && tx.is_closed() {
                return Ok(());
            }
            let ent = match ent {
                Ok(ent) => ent,
                Err(e) => {
                    errors.push(Error::local("read directory", dir, e));
                    break;
                }
            };
            let Some(item) = self.dir_item(&ent, key_prefix, role, errors) else {
                continue;
            };
            if sort.push(item) {
                if let Err(e) = sort.spill() {
                    warn!(dir = %dir.display(), error = %e, "cannot sort a large directory in temporary files: sorting it in memory");
                }
            }
        }
        Ok(())
    }

    /// The item of one directory entry, or `None` when the walk leaves it out: a temporary file of
    /// s3sync (removed if its run is dead, in the target), an ignored link, another shard's entry, an
    /// entry that is neither file nor directory (nor, in the target, a link), or one that cannot be
    /// read (its error goes to `errors`).
    fn dir_item(
        &self,
        ent: &fs::DirEntry,
        key_prefix: &str,
        role: WalkRole,
        errors: &mut DirErrors,
    ) -> Option<DirItem> {
        // The path is made only where it is needed: links followed, leftovers removed, messages.
        let path = || ent.path();
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            errors.push(Error::Skipped {
                key: format!("{key_prefix}{}", ent.file_name().to_string_lossy()),
                reason: format!("{}: file name is not UTF-8, skipped", path().display()),
            });
            return None;
        };
        if name.starts_with(TEMP_PREFIX) {
            remove_if_leftover(ent, &name, role);
            return None;
        }
        let ft = match ent.file_type() {
            Ok(ft) => ft,
            Err(e) => {
                errors.push(Error::local("stat", path(), e));
                return None;
            }
        };
        let is_link = ft.is_symlink();
        if is_link && self.ignore_symlinks {
            return None;
        }
        let follow = role.follows_links();
        if !self.in_shard(ft, is_link && !follow, key_prefix, &name) {
            return None;
        }
        let meta = match entry_metadata(ent, follow && is_link) {
            Ok(m) => m,
            Err(e) => {
                errors.push(Error::local("stat", path(), e));
                return None;
            }
        };
        let is_dir = meta.is_dir();
        // In the target, a link is an entry of its own (never followed); elsewhere only files count.
        let listed_link = is_link && !follow;
        if !is_dir && !meta.is_file() && !listed_link {
            return None; // sockets, fifos, devices
        }
        let mtime = match meta.modified() {
            Ok(t) => t,
            Err(e) => {
                errors.push(Error::local("stat", path(), e));
                return None;
            }
        };
        let key = if is_dir {
            format!("{key_prefix}{name}/")
        } else {
            format!("{key_prefix}{name}")
        };
        // A link in the target never compares as up to date (whatever its own size and time):
        // an object of its key replaces it; --delete removes it.
        let (size, mtime) = if listed_link {
            (u64::MAX, std::time::SystemTime::UNIX_EPOCH)
        } else {
            (meta.len(), mtime)
        };
        Some(DirItem {
            key,
            dir: is_dir.then(|| dir_id(&meta)),
            size,
            mtime,
        })
    }

    /// Whether the entry `name` of the directory of `key_prefix` (of type `ft`; `as_entry_link`: a
    /// link listed as an entry) may belong to this walk's shard: a shard neither stats the files of
    /// other shards nor walks directories outside its range. Always true without a shard.
    fn in_shard(&self, ft: fs::FileType, as_entry_link: bool, key_prefix: &str, name: &str) -> bool {
        let Some(sh) = &self.shard else {
            return true;
        };
        let as_entry = ft.is_file() || as_entry_link;
        if as_entry && !sh.contains(&format!("{key_prefix}{name}")) {
            return false;
        }
        !ft.is_dir() || sh.may_hold_prefix(&format!("{key_prefix}{name}/"))
    }

    /// Refuses a path inside the root whose parent directories cross a symbolic link: s3sync never
    /// writes or deletes through a link inside the target. Components that do not exist yet are fine
    /// (they will be created as plain directories).
    pub fn check_no_link_on_path(&self, key: &str, path: &Path) -> Result<()> {
        self.parents_exist(key, path).map(drop)
    }

    /// Walks the parent directories of `path` below the root as [`check_no_link_on_path`]
    /// (Self::check_no_link_on_path) does; whether they all exist as directories (the root itself
    /// is taken to exist).
    fn parents_exist(&self, key: &str, path: &Path) -> Result<bool> {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return Err(Error::InvalidArgument(format!(
                "key {key:?} refused: escapes the target"
            )));
        };
        let mut cur = self.root.clone();
        let mut comps = rel.components().peekable();
        let mut all_dirs = true;
        while let Some(c) = comps.next() {
            if comps.peek().is_none() {
                break; // the entry itself: a link there is replaced or removed, never followed
            }
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::SymlinkInTarget {
                        link: cur,
                        key: key.to_string(),
                    })
                }
                Ok(m) => all_dirs &= m.is_dir(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::local("stat", &cur, e)),
            }
        }
        Ok(all_dirs)
    }

    /// Creates the parent directories of `path` (a path inside the root), refusing to go through a
    /// symbolic link. Returns whether a directory had to be created.
    pub async fn create_parents(&self, key: &str, path: &Path) -> Result<bool> {
        // The walk that looks for links also tells whether there is anything to create.
        if self.parents_exist(key, path)? {
            return Ok(false);
        }
        let Some(parent) = path.parent() else {
            return Ok(false);
        };
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::local("create directory", parent, e))?;
        // A link may have been put in place meanwhile: check again now that the path exists.
        self.check_no_link_on_path(key, path)?;
        Ok(true)
    }

    /// Makes room for the file of `key` where a directory is (the key changed from a directory to an
    /// object): an empty directory is removed; one that still holds files is an error, since its
    /// files are not s3sync's to remove (`--delete` removes them, and the next run writes the file).
    /// Called when a rename found the directory in the way (see `FileSink::is_directory_in_the_way`).
    pub async fn clear_empty_dir(&self, key: &str, path: &Path) -> Result<()> {
        match tokio::fs::symlink_metadata(path).await {
            Ok(m) if m.is_dir() => match tokio::fs::remove_dir(path).await {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::local(
                    "write",
                    path,
                    std::io::Error::other(format!(
                        "a directory that still holds files is where the object {key:?} goes (--delete removes its extraneous files; rerun then)"
                    )),
                )),
            },
            _ => Ok(()),
        }
    }

    /// Removes the file (or link, never what it points to) of `key`, then the parent directories that
    /// this left empty, up to the root. A missing file is not an error.
    pub async fn remove(&self, key: &str) -> Result<()> {
        let path = self.path_for(key).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.check_no_link_on_path(key, &path)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::local("delete", &path, e)),
        }
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            // Fails (and stops) on the first directory that still holds something.
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// A fresh temporary path beside `final_path`, recognisable as ours and tied to this run. The name
    /// stays within the 255 bytes a file name may have, cutting the original name at a character
    /// boundary.
    pub fn temp_path_for(final_path: &Path) -> PathBuf {
        const NAME_MAX: usize = 255;
        let name = final_path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let head = format!(
            "{TEMP_PREFIX}{}.{:016x}.",
            crate::owner::Owner::current().token(),
            rand::random::<u64>()
        );
        let mut cut = NAME_MAX.saturating_sub(head.len()).min(name.len());
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        final_path.with_file_name(format!("{head}{}", &name[..cut]))
    }
}

/// Which end of a sync a walk lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkRole {
    /// The source: links are followed (unless ignored), loops skipped.
    Source,
    /// The target: links are never followed, and leftovers of dead runs are removed.
    Target,
    /// The target of a dry run: as `Target`, but nothing is removed.
    TargetDryRun,
}

impl WalkRole {
    fn follows_links(self) -> bool {
        self == WalkRole::Source
    }
}

/// The identity of a directory (device and inode), where the platform has one.
type DirId = Option<(u64, u64)>;

#[cfg(unix)]
fn dir_id(m: &fs::Metadata) -> DirId {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}
#[cfg(not(unix))]
fn dir_id(_: &fs::Metadata) -> DirId {
    None
}

/// Whether the run that wrote a temporary file is provably gone (so the file is a crash leftover).
fn temp_owner_dead(name: &str, written: Option<std::time::SystemTime>) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.split('.').next())
        .is_some_and(|owner| crate::owner::leftover_is_dead(owner, written))
}

/// Removes `ent`, a temporary file of s3sync named `name`, in the target walk of a real run when the
/// run that wrote it is provably gone (a crash leftover).
fn remove_if_leftover(ent: &fs::DirEntry, name: &str, role: WalkRole) {
    let written = ent.metadata().and_then(|m| m.modified()).ok();
    if role == WalkRole::Target && temp_owner_dead(name, written) {
        let path = ent.path();
        match fs::remove_file(&path) {
            Ok(()) => debug!(path = %path.display(), "removed leftover temporary file"),
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove leftover temporary file"),
        }
    }
}

/// The metadata of a directory entry; with `follow_link`, of what the link points to.
fn entry_metadata(ent: &fs::DirEntry, follow_link: bool) -> std::io::Result<fs::Metadata> {
    // On unix, stat'ed relative to the open directory (one name to look up, not the whole
    // path); a link to follow is looked up by its path.
    if follow_link {
        fs::metadata(ent.path())
    } else if cfg!(unix) {
        ent.metadata()
    } else {
        // Elsewhere the directory entry's metadata may be a cached copy.
        fs::symlink_metadata(ent.path())
    }
}

/// One walk under way: where its entries go, and the directories read ahead of it.
struct Walker<'a> {
    storage: &'a LocalStorage,
    role: WalkRole,
    tx: &'a mpsc::Sender<Result<Entry>>,
    burst: Burst<'a>,
    ahead: ReadAhead,
}

impl Walker<'_> {
    /// Holds an item for the listing channel; `false`: the receiver is gone.
    fn send(&mut self, item: Result<Entry>) -> bool {
        self.burst.push(item)
    }

    /// Walks the tree from the root (of identity `root`) in key order, sending its entries; stops
    /// early once the receiver is gone (the run is ending).
    fn walk(&mut self, root: DirId) {
        // A stack of sorted directory listings; directories sort as "name/" so that the walk order
        // equals the byte order of the full keys. `on_path` holds the identity of every directory of
        // the current path, to recognise a link that leads back into it.
        let storage = self.storage;
        let Some(first) = self.read(&storage.root, "") else {
            return;
        };
        let mut stack: Vec<Level> = vec![first];
        let mut on_path: Vec<DirId> = vec![root];
        while let Some(top) = stack.last_mut() {
            // A run of a directory sorted on disk that cannot be read is reported (what it still held
            // is missing); the entries of its other runs still come.
            if let Err(e) = top.refill() {
                if !self.send(Err(e)) {
                    return;
                }
            }
            // Up to READ_AHEAD of the subdirectories in the window are read ahead at any time.
            top.in_flight += self.ahead.start(&mut top.upcoming, READ_AHEAD - top.in_flight);
            let Some(item) = top.items.pop_front() else {
                stack.pop();
                on_path.pop();
                continue;
            };
            let Some(id) = item.dir else {
                let entry = Entry {
                    key: item.key,
                    size: item.size,
                    mtime: item.mtime,
                    etag: None,
                    version_id: None,
                };
                if !self.send(Ok(entry)) {
                    return; // receiver gone: the run is ending
                }
                continue;
            };
            let path = top.dir.join(item.name());
            self.reached(top, &path);
            // Without directory identities (not unix), a depth limit stands in for loop detection.
            if (id.is_some() && on_path.contains(&id)) || (id.is_none() && stack.len() > 256) {
                if !self.skip_loop(&path, item.key) {
                    return;
                }
                continue;
            }
            let Some(children) = self.read(&path, &item.key) else {
                return;
            };
            stack.push(children);
            on_path.push(id);
        }
        self.burst.flush();
    }

    /// Accounts for `path`, the subdirectory of `top` the walk has reached: either it was started
    /// (and is taken or dropped now), or it is the first of those not started yet (and is read here).
    fn reached(&self, top: &mut Level, path: &Path) {
        if top.upcoming.front().is_some_and(|(p, _)| p == path) {
            top.upcoming.pop_front();
        } else if self.ahead.has(path) {
            top.in_flight -= 1;
        }
    }

    /// Leaves out the directory at `path` (of `key`), which leads back to a directory it is inside of,
    /// with a warning; `false`: the receiver is gone.
    fn skip_loop(&mut self, path: &Path, key: String) -> bool {
        let msg = format!(
            "{} leads back to a directory it is inside of (symbolic link loop): not followed",
            path.display()
        );
        let skipped = Error::Skipped { key, reason: msg };
        self.ahead.discard(path);
        self.send(Err(skipped))
    }

    /// Reads one directory (or takes it from the read ahead), sending the errors of its unreadable
    /// entries; `None`: the receiver is gone (the run is ending). What is held is sent first: the
    /// read may take a while.
    fn read(&mut self, dir: &Path, prefix: &str) -> Option<Level> {
        if !self.burst.flush() {
            return None;
        }
        let (rest, errors) = self
            .ahead
            .take(dir)
            .unwrap_or_else(|| self.storage.read_sorted(dir, prefix, self.role, self.tx));
        if !errors.into_iter().all(|e| self.send(Err(e))) {
            return None;
        }
        let mut level = Level {
            dir: dir.to_path_buf(),
            items: VecDeque::new(),
            rest,
            upcoming: VecDeque::new(),
            in_flight: 0,
        };
        if let Err(e) = level.refill() {
            if !self.send(Err(e)) {
                return None;
            }
        }
        Some(level)
    }
}

/// The errors of one directory's entries. At most [`DirErrors::HELD`] are held; past that they are
/// counted and reported as one error (and one warning for names skipped), so a directory of millions
/// of unreadable entries does not cost memory per entry.
#[derive(Default)]
struct DirErrors {
    held: Vec<Error>,
    more_errors: u64,
    more_skipped: u64,
}

impl DirErrors {
    const HELD: usize = 1000;

    fn push(&mut self, e: Error) {
        if self.held.len() < Self::HELD {
            self.held.push(e);
        } else if matches!(e, Error::Skipped { .. }) {
            self.more_skipped += 1;
        } else {
            self.more_errors += 1;
        }
    }

    /// The errors held, and one for each kind counted.
    fn finish(mut self, dir: &Path, key_prefix: &str) -> Vec<Error> {
        if self.more_errors > 0 {
            let more = std::io::Error::other(format!("and {} more entries could not be read", self.more_errors));
            self.held.push(Error::local("read directory", dir, more));
        }
        if self.more_skipped > 0 {
            self.held.push(Error::Skipped {
                key: key_prefix.to_string(),
                reason: format!("{}: and {} more entries skipped", dir.display(), self.more_skipped),
            });
        }
        self.held
    }
}

/// An entry of a local directory: a file (or, in the target, a link) or a subdirectory.
struct DirItem {
    /// The key; a directory's ends in `/`, so that a walk in key order is a walk in S3 key order.
    key: String,
    /// For directories, their identity (their path is their parent's and their name: not kept).
    dir: Option<DirId>,
    size: u64,
    mtime: std::time::SystemTime,
}

impl DirItem {
    /// The name of the entry in its directory.
    fn name(&self) -> &str {
        let k = self.key.strip_suffix('/').unwrap_or(&self.key);
        k.rsplit_once('/').map_or(k, |(_, name)| name)
    }
}

/// The entries of a directory too large to sort in memory go through runs on disk.
impl Record for DirItem {
    fn key(&self) -> &str {
        &self.key
    }

    fn approx_size(&self) -> usize {
        std::mem::size_of::<DirItem>() + self.key.len()
    }

    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        write_str(w, &self.key)?;
        w.write_all(&self.size.to_le_bytes())?;
        write_time(w, self.mtime)?;
        match self.dir {
            None => w.write_all(&[0]),
            Some(None) => w.write_all(&[1]),
            Some(Some((dev, ino))) => {
                w.write_all(&[2])?;
                w.write_all(&dev.to_le_bytes())?;
                w.write_all(&ino.to_le_bytes())
            }
        }
    }

    fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Option<Self>> {
        let Some(key) = read_str(r)? else { return Ok(None) };
        let size = u64::from_le_bytes(read_array(r)?);
        let mtime = read_time(r)?;
        let dir = match read_array::<1>(r)?[0] {
            0 => None,
            1 => Some(None),
            _ => {
                let dev = u64::from_le_bytes(read_array(r)?);
                Some(Some((dev, u64::from_le_bytes(read_array(r)?))))
            }
        };
        Ok(Some(DirItem { key, dir, size, mtime }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escaping_keys() {
        let s = LocalStorage::new("/t", false);
        assert_eq!(s.path_for("a/b").unwrap(), PathBuf::from("/t/a/b"));
        assert_eq!(s.path_for("dir/").unwrap(), PathBuf::from("/t/dir"));
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\0b",
            "",
            "a/.s3sync-tmp.1.x",
        ] {
            assert!(s.path_for(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[tokio::test]
    async fn walk_is_in_s3_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["a-c", "a/b", "a/a", "b", "a.txt", "ü", "z/y/x", "A"] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        fs::write(root.join(".s3sync-tmp.999999999.0.b"), "x").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let s = LocalStorage::new(root, false);
        let h = tokio::spawn(async move { s.list(tx, WalkRole::Source).await });
        let mut keys = Vec::new();
        while let Some(e) = rx.recv().await {
            keys.push(e.unwrap().key);
        }
        h.await.unwrap().unwrap();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys, vec!["A", "a-c", "a.txt", "a/a", "a/b", "b", "z/y/x", "ü"]);
    }

    /// Every item a walk sends: keys of entries, `Err` texts of errors and warnings.
    async fn walk_all(root: &Path, role: WalkRole) -> (Vec<String>, Vec<String>) {
        walk_storage(LocalStorage::new(root, false), role).await
    }

    async fn walk_storage(s: LocalStorage, role: WalkRole) -> (Vec<String>, Vec<String>) {
        let (tx, mut rx) = mpsc::channel(4);
        let h = tokio::spawn(async move { s.list(tx, role).await });
        let (mut keys, mut errs) = (Vec::new(), Vec::new());
        while let Some(e) = rx.recv().await {
            match e {
                Ok(e) => keys.push(e.key),
                Err(e) => errs.push(e.to_string()),
            }
        }
        h.await.unwrap().unwrap();
        (keys, errs)
    }

    /// A directory too large to sort in memory is sorted in runs on disk and merged: the walk gives
    /// the same entries in the same order as one sorted in memory, subdirectories (read ahead from
    /// the merged runs) and a link loop inside it included, for the source and the target walk.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_directory_sorted_on_disk_walks_as_one_sorted_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..3000 {
            fs::write(root.join(format!("f{:05}", (i * 7919) % 3001)), "").unwrap();
        }
        for d in 0..40 {
            fs::create_dir_all(root.join(format!("d{d:02}/s"))).unwrap();
            for f in [format!("d{d:02}/x"), format!("d{d:02}/s/z")] {
                fs::write(root.join(f), "x").unwrap();
            }
        }
        for f in ["a-c", "a.txt", "a/b", "ü", "é/e", "A"] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
        let small = LocalStorage::new(root, false).with_dir_sort_bytes(2048);
        let (tx, _rx) = mpsc::channel(1);
        let (runs, errors) = small.read_sorted(root, "", WalkRole::Source, &tx);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            runs.runs() > 1,
            "{} runs: the directory must be sorted on disk",
            runs.runs()
        );
        for role in [WalkRole::Source, WalkRole::TargetDryRun] {
            let (memory_keys, memory_errs) = walk_storage(LocalStorage::new(root, false), role).await;
            let (disk_keys, disk_errs) = walk_storage(small.clone(), role).await;
            assert_eq!(disk_keys, memory_keys, "{role:?}");
            assert_eq!(disk_errs, memory_errs, "{role:?}");
            let mut sorted = disk_keys.clone();
            sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            assert_eq!(disk_keys, sorted, "{role:?}");
            let files = 3000 + 40 * 2 + 6 + usize::from(role != WalkRole::Source);
            assert_eq!(disk_keys.len(), files, "{role:?}");
            assert!(disk_keys.contains(&"d07/s/z".to_string()));
            assert_eq!(disk_errs.len(), usize::from(role == WalkRole::Source), "{disk_errs:?}");
        }
    }

    /// Subdirectories that come after the first window of a directory's entries (here after 300
    /// files) are still read several at a time ahead of the walk.
    #[test]
    fn subdirectories_past_the_first_window_are_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..300 {
            fs::write(root.join(format!("a{i:03}")), "").unwrap();
        }
        for d in 0..40 {
            fs::create_dir_all(root.join(format!("b{d:02}"))).unwrap();
            fs::write(root.join(format!("b{d:02}/x")), "").unwrap();
        }
        let s = LocalStorage::new(root, false);
        let (tx, mut rx) = mpsc::channel(1000);
        let role = WalkRole::Source;
        let peak = std::thread::scope(|scope| s.walk_with(&tx, role, ReadAhead::new(scope, &s, role, &tx))).unwrap();
        drop(tx);
        let mut keys = Vec::new();
        while let Ok(e) = rx.try_recv() {
            keys.push(e.unwrap().key);
        }
        assert_eq!(keys.len(), 340);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(peak >= 2, "at most {peak} directory read ahead at once");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn source_walk_skips_link_loops_once_and_target_walk_never_follows_links() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("o"), "o").unwrap();
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("a"), "a").unwrap();
        fs::write(root.join("d/b"), "b").unwrap();
        symlink(".", root.join("loop")).unwrap();
        symlink("..", root.join("d/up")).unwrap();
        symlink(outside.path(), root.join("out")).unwrap();
        let (keys, errs) = walk_all(root, WalkRole::Source).await;
        assert_eq!(keys, vec!["a", "d/b", "out/o"]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.contains("loop")), "{errs:?}");
        // The target walk lists the links themselves and never what is behind them.
        let (keys, errs) = walk_all(root, WalkRole::TargetDryRun).await;
        assert_eq!(keys, vec!["a", "d/b", "d/up", "loop", "out"]);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_range_shard_walks_only_its_range() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a/1", "b/1", "b/2", "c/1", "d/1", "top"] {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        let shard = crate::shard::Shard {
            index: 1,
            count: 3,
            mode: crate::shard::ShardMode::Range {
                after: Some("b/1".into()),
                upto: Some("c/1".into()),
            },
        };
        // Unreadable directories outside the range are not even opened.
        let s = LocalStorage::new(dir.path(), false).with_shard(Some(shard));
        fs::remove_dir_all(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("d")).ok();
        let (tx, mut rx) = mpsc::channel(4);
        let h = tokio::spawn(async move { s.list(tx, WalkRole::TargetDryRun).await });
        let mut keys = Vec::new();
        while let Some(e) = rx.recv().await {
            keys.push(e.unwrap().key);
        }
        h.await.unwrap().unwrap();
        assert_eq!(keys, vec!["b/2", "c/1"]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn dangling_links_in_the_source_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("dangling")).unwrap();
        fs::write(dir.path().join("a"), "a").unwrap();
        let (keys, errs) = walk_all(dir.path(), WalkRole::Source).await;
        assert_eq!(keys, vec!["a"]);
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    /// A directory of many unreadable entries: the first 1,000 errors are held, the rest counted in one.
    #[cfg(unix)]
    #[tokio::test]
    async fn errors_past_a_thousand_in_one_directory_are_counted_in_one() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..1010 {
            std::os::unix::fs::symlink("nowhere", dir.path().join(format!("dangling{i}"))).unwrap();
        }
        fs::write(dir.path().join("a"), "a").unwrap();
        let (keys, errs) = walk_all(dir.path(), WalkRole::Source).await;
        assert_eq!(keys, vec!["a"]);
        assert_eq!(errs.len(), 1001);
        assert!(
            errs[1000].contains("and 10 more entries could not be read"),
            "{}",
            errs[1000]
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn writes_and_deletes_never_go_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("x"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
        let s = LocalStorage::new(dir.path(), false);
        let p = s.path_for("linked/x").unwrap();
        let err = s.create_parents("linked/x", &p).await.unwrap_err();
        assert!(matches!(err, Error::SymlinkInTarget { .. }), "{err}");
        assert!(matches!(s.remove("linked/x").await, Err(Error::SymlinkInTarget { .. })));
        assert!(outside.path().join("x").exists());
        // The link itself may go.
        s.remove("linked").await.unwrap();
        assert!(outside.path().join("x").exists());
        assert!(fs::symlink_metadata(dir.path().join("linked")).is_err());
        // A plain new path is fine, and emptied directories go with their last file.
        let p = s.path_for("n/m/f").unwrap();
        s.create_parents("n/m/f", &p).await.unwrap();
        fs::write(&p, "f").unwrap();
        s.remove("n/m/f").await.unwrap();
        assert!(!dir.path().join("n").exists());
    }

    #[test]
    fn temp_names_fit_in_255_bytes() {
        let name: String = "語".repeat(85); // 255 bytes
        let tmp = LocalStorage::temp_path_for(&Path::new("/t").join(&name));
        let tmp_name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(tmp_name.len() <= 255, "{}", tmp_name.len());
        assert!(tmp_name.starts_with(TEMP_PREFIX));
        assert!(tmp_name.ends_with('語'));
        assert!(
            !temp_owner_dead(tmp_name, Some(std::time::SystemTime::UNIX_EPOCH)),
            "our own temporary file"
        );
    }
}
