//! Making downloaded files durable: each file's bytes before it takes its name, and the directories
//! that received files before the run ends. Files are made durable in groups where the system allows
//! it (one `syncfs` for every file that finished while the previous one ran, see
//! [`s3sync_io::GroupSync`]), else one `fsync` each; `--no-fsync` turns both off.

use crate::error::{Error, Result};
use s3sync_io::{GroupSync, Synced, Ticket};
use std::path::{Path, PathBuf};
use tracing::debug;

/// How a downloaded file is made durable before its rename.
#[derive(Debug)]
pub enum Durability {
    /// `--no-fsync`: files are renamed into place complete and verified, but not flushed.
    Off,
    /// Each file is fsynced by its writer (no trustworthy `syncfs` here: see [`GroupSync::available`]).
    EachFile,
    /// Files are made durable in groups, one `syncfs` per group.
    Grouped(GroupSync),
}

impl Durability {
    /// The durability a run with `fsync` (off with `--no-fsync`) gets on this system.
    pub fn new(fsync: bool) -> Self {
        match (fsync, GroupSync::available()) {
            (false, _) => Durability::Off,
            (true, true) => Durability::Grouped(GroupSync::new()),
            (true, false) => Durability::EachFile,
        }
    }

    /// Whether the writer of a file fsyncs it itself, before it is closed.
    pub fn fsync_each(&self) -> bool {
        matches!(self, Durability::EachFile)
    }

    /// A ticket for a file about to be written (see [`Ticket`]): taken before its first byte.
    pub fn ticket(&self) -> Ticket {
        match self {
            Durability::Grouped(groups) => groups.ticket(),
            Durability::Off | Durability::EachFile => Ticket::EARLIEST,
        }
    }

    /// Returns once the closed file `tmp`, written after `ticket` was taken, is durable: at once
    /// when its writer fsynced it (or with `--no-fsync`), else after its group's `syncfs`.
    pub async fn settle(&self, tmp: &Path, ticket: Ticket) -> Result<()> {
        match self {
            Durability::Grouped(groups) => match groups.sync(tmp, ticket).await {
                Ok(Synced::Durable) => Ok(()),
                // A file system left to fsync (network, FUSE): the file's own.
                Ok(Synced::Unsupported) => {
                    let path = tmp.to_path_buf();
                    tokio::task::spawn_blocking(move || std::fs::File::open(&path)?.sync_all())
                        .await
                        .map_err(|e| Error::Internal(format!("fsync task: {e}")))?
                        .map_err(|e| Error::local("fsync", tmp, e))
                }
                Err(e) => Err(Error::local("sync", tmp, e)),
            },
            Durability::Off | Durability::EachFile => Ok(()),
        }
    }
}

/// Directories whose new entries (renamed-in files) are not yet durable. Each is fsynced once, when
/// the set grows past a bound and at the end of the run, instead of once per file.
#[derive(Debug, Default)]
pub struct DirtyDirs(std::sync::Mutex<std::collections::HashSet<PathBuf>>);

impl DirtyDirs {
    /// At most this many directories wait for their fsync.
    const BOUND: usize = 1024;

    /// Notes that `dir` received a file; flushes everything when the set is full. Not called with
    /// `--no-fsync`.
    pub async fn add(&self, dir: &std::path::Path) {
        let full = match self.0.lock() {
            Ok(mut set) => {
                set.insert(dir.to_path_buf());
                set.len() >= Self::BOUND
            }
            Err(_) => false,
        };
        if full {
            self.flush().await;
        }
    }

    /// Fsyncs every noted directory (errors are logged: the files themselves are already durable).
    pub async fn flush(&self) {
        let dirs: Vec<PathBuf> = match self.0.lock() {
            Ok(mut set) => set.drain().collect(),
            Err(_) => return,
        };
        if dirs.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for d in dirs {
                if let Err(e) = std::fs::File::open(&d).and_then(|f| f.sync_all()) {
                    debug!(dir = %d.display(), error = %e, "cannot fsync the directory");
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--no-fsync` turns durability off; otherwise files are grouped where `syncfs` can be trusted
    /// and fsynced one by one elsewhere.
    #[test]
    fn the_mode_follows_the_flag_and_the_system() {
        assert!(matches!(Durability::new(false), Durability::Off));
        match Durability::new(true) {
            Durability::Grouped(_) => assert!(GroupSync::available()),
            Durability::EachFile => assert!(!GroupSync::available()),
            Durability::Off => panic!("durability off although asked for"),
        }
        assert!(Durability::EachFile.fsync_each());
        assert!(!Durability::new(false).fsync_each());
    }

    /// A grouped file is settled by a round of its group; a file whose directory went away gets a
    /// one-line error naming it, and nothing is synced for it.
    #[tokio::test]
    async fn a_grouped_file_waits_for_a_round_and_a_failure_names_the_file() {
        let d = Durability::Grouped(GroupSync::new());
        let Durability::Grouped(groups) = &d else {
            unreachable!()
        };
        if !GroupSync::available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        d.settle(&f, d.ticket()).await.unwrap();
        assert_eq!(groups.rounds(), 1);
        let gone = dir.path().join("gone/f");
        let e = d.settle(&gone, d.ticket()).await.unwrap_err();
        assert!(e.to_string().contains("gone/f"), "{e}");
        assert_eq!(groups.rounds(), 1, "no round for a file that is not there");
        Durability::Off.settle(&gone, Ticket::EARLIEST).await.unwrap();
    }
}
