//! Local directories: a walk that yields files in S3 key order, the key <-> path mapping (where keys that
//! would escape the directory are refused), and the temp-file naming that makes writes atomic.

use super::Entry;
use crate::error::{Error, Result};
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
        }
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
        match tokio::fs::metadata(&path).await {
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
    /// With `clean_temp`, leftovers of earlier s3sync runs that are no longer alive are removed.
    pub async fn list(&self, tx: mpsc::Sender<Result<Entry>>, clean_temp: bool) -> Result<()> {
        let me = self.clone();
        let res = tokio::task::spawn_blocking(move || me.walk(&tx, clean_temp))
            .await
            .map_err(|e| Error::local("walk", self.root.clone(), std::io::Error::other(e)))?;
        res
    }

    fn walk(&self, tx: &mpsc::Sender<Result<Entry>>, clean_temp: bool) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{} is not a directory",
                    self.root.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::local("open directory", &self.root, e)),
        }
        // A stack of sorted directory listings; directories sort as "name/" so that the walk order
        // equals the byte order of the full keys.
        let mut stack: Vec<std::vec::IntoIter<DirItem>> =
            vec![self.read_sorted(&self.root, "", clean_temp)?.into_iter()];
        while let Some(top) = stack.last_mut() {
            let Some(item) = top.next() else {
                stack.pop();
                continue;
            };
            if item.is_dir {
                if stack.len() > 256 {
                    warn!(path = %item.path.display(), "directory nesting too deep (symlink loop?), skipped");
                    continue;
                }
                let children = match self.read_sorted(&item.path, &item.key, clean_temp) {
                    Ok(c) => c,
                    Err(e) => {
                        if tx.blocking_send(Err(e)).is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                };
                stack.push(children.into_iter());
            } else if tx
                .blocking_send(Ok(Entry {
                    key: item.key,
                    size: item.size,
                    mtime: item.mtime,
                    etag: None,
                    version_id: None,
                }))
                .is_err()
            {
                return Ok(()); // receiver gone: the run is ending
            }
        }
        Ok(())
    }

    fn read_sorted(&self, dir: &Path, key_prefix: &str, clean_temp: bool) -> Result<Vec<DirItem>> {
        let rd = fs::read_dir(dir).map_err(|e| Error::local("read directory", dir, e))?;
        let mut items = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::local("read directory", dir, e))?;
            let path = ent.path();
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                warn!(path = %path.display(), "file name is not UTF-8, skipped");
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                if clean_temp && temp_owner_gone(&name) {
                    match fs::remove_file(&path) {
                        Ok(()) => debug!(path = %path.display(), "removed leftover temporary file"),
                        Err(e) => warn!(path = %path.display(), error = %e, "cannot remove leftover temporary file"),
                    }
                }
                continue;
            }
            let ft = ent.file_type().map_err(|e| Error::local("stat", &path, e))?;
            if ft.is_symlink() && self.ignore_symlinks {
                continue;
            }
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot stat, skipped");
                    continue;
                }
            };
            let is_dir = meta.is_dir();
            if !is_dir && !meta.is_file() {
                continue; // sockets, fifos, devices
            }
            let key = if is_dir {
                format!("{key_prefix}{name}/")
            } else {
                format!("{key_prefix}{name}")
            };
            items.push(DirItem {
                key,
                path,
                is_dir,
                size: meta.len(),
                mtime: meta.modified().map_err(|e| Error::local("stat", dir, e))?,
            });
        }
        items.sort_unstable_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        Ok(items)
    }

    /// A fresh temporary path beside `final_path`, recognisable as ours and tied to this process.
    pub fn temp_path_for(final_path: &Path) -> PathBuf {
        let name = final_path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let short: String = name.chars().take(100).collect();
        let tmp = format!(
            "{TEMP_PREFIX}{}.{:016x}.{short}",
            std::process::id(),
            rand::random::<u64>()
        );
        final_path.with_file_name(tmp)
    }
}

/// Whether the process that wrote a temporary file is gone (so the file is a crash leftover).
fn temp_owner_gone(name: &str) -> bool {
    let pid = name
        .strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.split('.').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if pid == std::process::id() => false,
        Some(pid) if cfg!(target_os = "linux") => !Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

struct DirItem {
    key: String,
    path: PathBuf,
    is_dir: bool,
    size: u64,
    mtime: std::time::SystemTime,
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
        let h = tokio::spawn(async move { s.list(tx, false).await });
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
}
