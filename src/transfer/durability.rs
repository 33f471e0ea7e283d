//! Making downloaded files durable: each file's bytes before it takes its name, and the directories
//! that received files before the run ends. Files are made durable in groups where the system allows
//! it (one `syncfs` for every file that finished while the previous one ran, see
//! [`s3sync_io::GroupSync`]), else one `fsync` each; `--no-fsync` turns both off.

use crate::error::{Error, Result};
use s3sync_io::{GroupSync, Synced, Ticket};
use std::path::{Path, PathBuf};
use tracing::debug;

/// How downloaded files, and the directories that receive them, are made durable.
#[derive(Debug)]
pub struct Durability {
    mode: Mode,
    /// Directories that received files since they were last made durable.
    dirs: DirtyDirs,
}

#[derive(Debug)]
enum Mode {
    /// `--no-fsync`: files are renamed into place complete and verified, but not flushed.
    Off,
    /// Each file and directory is fsynced (no trustworthy `syncfs` here: see
    /// [`GroupSync::available`]).
    EachFile,
    /// Files and directories are made durable in groups, one `syncfs` per group.
    Grouped(GroupSync),
}

impl Durability {
    /// The durability a run with `fsync` (off with `--no-fsync`) gets on this system.
    pub fn new(fsync: bool) -> Self {
        let mode = match (fsync, GroupSync::available()) {
            (false, _) => Mode::Off,
            (true, true) => Mode::Grouped(GroupSync::new()),
            (true, false) => Mode::EachFile,
        };
        Durability {
            mode,
            dirs: DirtyDirs::default(),
        }
    }

    /// Whether the writer of a file fsyncs it itself, before it is closed.
    pub fn fsync_each(&self) -> bool {
        matches!(self.mode, Mode::EachFile)
    }

    /// A ticket for a file about to be written (see [`Ticket`]): taken before its first byte.
    pub fn ticket(&self) -> Ticket {
        match &self.mode {
            Mode::Grouped(groups) => groups.ticket(),
            Mode::Off | Mode::EachFile => Ticket::EARLIEST,
        }
    }

    /// Returns once the closed file `tmp`, written after `ticket` was taken, is durable: at once
    /// when its writer fsynced it (or with `--no-fsync`), else after its group's `syncfs`.
    pub async fn settle(&self, tmp: &Path, ticket: Ticket) -> Result<()> {
        match &self.mode {
            Mode::Grouped(groups) => match groups.sync(tmp, ticket).await {
                Ok(Synced::Durable) => Ok(()),
                // A file system left to fsync (network, FUSE): the file's own.
                Ok(Synced::Unsupported) => fsync_path(tmp.to_path_buf())
                    .await
                    .map_err(|e| Error::local("fsync", tmp, e)),
                Err(e) => Err(Error::local("sync", tmp, e)),
            },
            Mode::Off | Mode::EachFile => Ok(()),
        }
    }

    /// Notes that `dir` received an entry (a file renamed in, a directory made); when many are
    /// noted, makes them durable. Nothing with `--no-fsync`.
    pub async fn dir_changed(&self, dir: &Path) {
        if !matches!(self.mode, Mode::Off) && self.dirs.add(dir) {
            self.flush_dirs().await;
        }
    }

    /// Makes every noted directory durable: one `syncfs` per file system when grouped, else an
    /// fsync each. Errors are logged: the files themselves are already durable.
    pub async fn flush_dirs(&self) {
        let dirs = self.dirs.take();
        if dirs.is_empty() {
            return;
        }
        let left: Vec<PathBuf> = match &self.mode {
            Mode::Off => return,
            Mode::EachFile => dirs,
            Mode::Grouped(groups) => {
                let answers =
                    futures::future::join_all(dirs.iter().map(|d| groups.sync_directory(d, Ticket::EARLIEST))).await;
                let mut left = Vec::new();
                for (d, answer) in dirs.into_iter().zip(answers) {
                    match answer {
                        Ok(Synced::Durable) => {}
                        Ok(Synced::Unsupported) => left.push(d),
                        Err(e) => debug!(dir = %d.display(), error = %e, "cannot sync the directory"),
                    }
                }
                left
            }
        };
        // The rest, fsynced one by one in one blocking task.
        let _ = tokio::task::spawn_blocking(move || {
            for d in left {
                if let Err(e) = fsync(&d) {
                    debug!(dir = %d.display(), error = %e, "cannot fsync the directory");
                }
            }
        })
        .await;
    }
}

/// `fsync` of the file or directory at `path`, on the blocking pool.
async fn fsync_path(path: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || fsync(&path))
        .await
        .map_err(std::io::Error::other)?
}

/// `fsync` of the file or directory at `path`.
fn fsync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Directories whose new entries (renamed-in files) are not yet durable. Each is made durable once,
/// when the set grows past a bound and at the end of the run, instead of once per file.
#[derive(Debug, Default)]
struct DirtyDirs(std::sync::Mutex<std::collections::HashSet<PathBuf>>);

impl DirtyDirs {
    /// At most this many directories wait.
    const BOUND: usize = 1024;

    /// Notes `dir`; whether the set is full.
    fn add(&self, dir: &Path) -> bool {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(dir.to_path_buf());
        set.len() >= Self::BOUND
    }

    /// The noted directories, forgotten.
    fn take(&self) -> Vec<PathBuf> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--no-fsync` turns durability off; otherwise files are grouped where `syncfs` can be trusted
    /// and fsynced one by one elsewhere.
    #[test]
    fn the_mode_follows_the_flag_and_the_system() {
        assert!(matches!(Durability::new(false).mode, Mode::Off));
        match Durability::new(true).mode {
            Mode::Grouped(_) => assert!(GroupSync::available()),
            Mode::EachFile => assert!(!GroupSync::available()),
            Mode::Off => panic!("durability off although asked for"),
        }
        assert!(with(Mode::EachFile).fsync_each());
        assert!(!Durability::new(false).fsync_each());
    }

    /// A grouped file is settled by a round of its group; a file whose directory went away gets a
    /// one-line error naming it, and nothing is synced for it.
    #[tokio::test]
    async fn a_grouped_file_waits_for_a_round_and_a_failure_names_the_file() {
        let Some((d, groups)) = grouped() else { return };
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        d.settle(&f, d.ticket()).await.unwrap();
        assert_eq!(groups.rounds(), 1);
        let gone = dir.path().join("gone/f");
        let e = d.settle(&gone, d.ticket()).await.unwrap_err();
        assert!(e.to_string().contains("gone/f"), "{e}");
        assert_eq!(groups.rounds(), 1, "no round for a file that is not there");
        with(Mode::Off).settle(&gone, Ticket::EARLIEST).await.unwrap();
    }

    /// Directories noted as they receive files are made durable together: one round for all of
    /// them when grouped; nothing is noted with `--no-fsync`.
    #[tokio::test]
    async fn directories_are_made_durable_in_one_round() {
        let Some((d, groups)) = grouped() else { return };
        let root = tempfile::tempdir().unwrap();
        for i in 0..50 {
            let dir = root.path().join(format!("d{i}"));
            std::fs::create_dir(&dir).unwrap();
            d.dir_changed(&dir).await;
        }
        assert_eq!(groups.rounds(), 0, "noted, not yet synced");
        d.flush_dirs().await;
        assert_eq!(groups.rounds(), 1);
        d.flush_dirs().await;
        assert_eq!(groups.rounds(), 1, "nothing left to sync");
        let off = with(Mode::Off);
        off.dir_changed(root.path()).await;
        assert!(off.dirs.take().is_empty());
    }

    /// Grouped durability and its groups, where groups are available.
    fn grouped() -> Option<(Durability, GroupSync)> {
        let groups = GroupSync::new();
        GroupSync::available().then(|| (with(Mode::Grouped(groups.clone())), groups))
    }

    fn with(mode: Mode) -> Durability {
        Durability {
            mode,
            dirs: DirtyDirs::default(),
        }
    }
}
