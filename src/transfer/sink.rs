//! The local end of a download, as a sink of parts: the bytes go at their offsets into a temporary
//! file beside the final path, and the file takes its final name only once complete, verified and
//! (when asked) durable. The sync's downloads and the single-object API both write through it, so
//! "nothing appears under its final name half written" is kept in one place.

use super::guards::TempGuard;
use crate::error::{Error, Result};
use crate::storage::local::LocalStorage;
use s3sync_io::{Chunk, IoEngine, IoFile};
use std::path::{Path, PathBuf};

/// A file being written: a temporary file, removed unless renamed into place (also when the future
/// writing it is dropped).
pub(crate) struct FileSink<'a> {
    io: &'a IoEngine,
    /// The open temporary file; `None` once sealed.
    file: Option<IoFile>,
    /// The temporary file, removed on drop while armed.
    tmp: TempGuard,
    /// The final path.
    target: PathBuf,
}

impl<'a> FileSink<'a> {
    /// Creates the temporary file for `target` (never replacing a file: `O_EXCL`). The error names
    /// that file and keeps the system's error as its source (a caller may make a missing directory
    /// and try again: see [`FileSink::is_missing_directory`]).
    pub(crate) async fn create(io: &'a IoEngine, target: &Path) -> Result<Self> {
        let tmp = LocalStorage::temp_path_for(target);
        let file = io.create_new(&tmp).await.map_err(|e| Error::local("create", &tmp, e))?;
        Ok(FileSink {
            io,
            file: Some(file),
            tmp: TempGuard { path: tmp, armed: true },
            target: target.to_path_buf(),
        })
    }

    /// Creates the temporary file for `target` and writes `chunk` into it in one operation (create,
    /// write, fsync when `durable`, close: one io_uring chain, see `IoEngine::write_file`). The sink
    /// is sealed: only [`FileSink::rename_into_place`] remains. For files of one pool chunk at most.
    pub(crate) async fn write_whole(io: &'a IoEngine, target: &Path, chunk: Chunk, durable: bool) -> Result<Self> {
        let tmp = TempGuard {
            path: LocalStorage::temp_path_for(target),
            armed: true,
        };
        io.write_file(&tmp.path, chunk, durable)
            .await
            .map_err(|e| Error::local("write", &tmp.path, e))?;
        Ok(FileSink {
            io,
            file: None,
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// Whether an error of [`FileSink::create`] or [`FileSink::write_whole`] says the directory is
    /// missing.
    pub(crate) fn is_missing_directory(e: &Error) -> bool {
        matches!(e, Error::Local { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The temporary file's path.
    pub(crate) fn temp_path(&self) -> &Path {
        &self.tmp.path
    }

    /// The open file, or an error once sealed.
    fn file(&self) -> Result<&IoFile> {
        self.file
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("{} written after it was sealed", self.tmp.path.display())))
    }

    /// Sets the file's length up front (the parts then land at their offsets in any order).
    pub(crate) async fn allocate(&self, len: u64) -> Result<()> {
        self.io
            .set_len(self.file()?, len)
            .await
            .map_err(|e| Error::local("allocate", &self.tmp.path, e))
    }

    /// Writes one pool chunk at `offset`, straight from the pool (no copy).
    pub(crate) async fn write_at(&self, chunk: Chunk, offset: u64) -> Result<()> {
        self.io
            .write_at(self.file()?, chunk, offset)
            .await
            .map(drop)
            .map_err(|e| Error::local("write", &self.tmp.path, e))
    }

    /// Closes the file after making its bytes durable when `durable` (fsync); no write may follow.
    pub(crate) async fn seal(&mut self, durable: bool) -> Result<()> {
        if let Some(file) = &self.file {
            if durable {
                self.io
                    .fsync(file)
                    .await
                    .map_err(|e| Error::local("fsync", &self.tmp.path, e))?;
            }
        }
        self.file = None;
        Ok(())
    }

    /// Seals the file if it is not yet, then renames it to its final path (replacing a file there);
    /// the temporary file is no longer removed.
    pub(crate) async fn rename_into_place(mut self, durable: bool) -> Result<()> {
        self.seal(durable).await?;
        self.rename().await
    }

    /// Renames the sealed file to its final path (replacing a file there); from then on the
    /// temporary file is no longer removed. On an error the sink keeps its temporary file (removed
    /// when it is dropped), and the rename may be tried again.
    pub(crate) async fn rename(&mut self) -> Result<()> {
        if self.file.is_some() {
            return Err(Error::Internal(format!(
                "{} renamed before it was sealed",
                self.tmp.path.display()
            )));
        }
        self.io
            .rename(&self.tmp.path, &self.target)
            .await
            .map_err(|e| Error::local("rename", &self.target, e))?;
        self.tmp.armed = false;
        Ok(())
    }

    /// Whether an error of [`FileSink::rename`] says a directory is where the file goes.
    pub(crate) fn is_directory_in_the_way(e: &Error) -> bool {
        matches!(e, Error::Local { source, .. } if source.kind() == std::io::ErrorKind::IsADirectory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> IoEngine {
        let pool = s3sync_io::ChunkPool::new(64 << 10, 8).expect("pool");
        IoEngine::new(pool).expect("engine")
    }

    async fn chunk(io: &IoEngine, data: &[u8]) -> Chunk {
        let mut c = io.pool().acquire().await;
        c.extend_from_slice(data);
        c
    }

    /// Parts written out of order land at their offsets; the final name appears only at the rename,
    /// and no temporary file is left.
    #[tokio::test]
    async fn parts_land_at_their_offsets_and_appear_only_when_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let io = engine();
        let target = dir.path().join("f");
        let sink = FileSink::create(&io, &target).await.unwrap();
        sink.allocate(6).await.unwrap();
        sink.write_at(chunk(&io, b"def").await, 3).await.unwrap();
        sink.write_at(chunk(&io, b"abc").await, 0).await.unwrap();
        assert!(!target.exists(), "no final name before the rename");
        let tmp = sink.temp_path().to_path_buf();
        sink.rename_into_place(true).await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abcdef");
        assert!(!tmp.exists());
    }

    /// A directory where the file goes is told apart, and the sink can rename again once it is gone.
    #[tokio::test]
    async fn a_directory_in_the_way_is_told_apart_and_the_rename_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let io = engine();
        let target = dir.path().join("f");
        std::fs::create_dir(&target).unwrap();
        let mut sink = FileSink::write_whole(&io, &target, chunk(&io, b"bytes").await, false)
            .await
            .unwrap();
        let e = sink.rename().await.unwrap_err();
        assert!(FileSink::is_directory_in_the_way(&e), "{e}");
        assert!(sink.temp_path().exists(), "kept for another try");
        std::fs::remove_dir(&target).unwrap();
        sink.rename().await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"bytes");
    }

    /// A missing directory is told apart, and the error names the temporary file that was tried.
    #[tokio::test]
    async fn a_failed_create_names_the_file_it_tried() {
        let dir = tempfile::tempdir().unwrap();
        let io = engine();
        let target = dir.path().join("missing/f");
        let e = FileSink::create(&io, &target).await.err().expect("no directory");
        assert!(FileSink::is_missing_directory(&e), "{e}");
        let Error::Local { path, .. } = &e else { panic!("{e:?}") };
        assert_eq!(path.parent(), target.parent());
        assert_ne!(path, &target, "the temporary file, not the final one");
    }

    /// A sink dropped before its rename (an error, a cancellation) leaves nothing behind, and a file
    /// already at the final path is untouched.
    #[tokio::test]
    async fn a_dropped_sink_leaves_nothing_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let io = engine();
        let target = dir.path().join("f");
        std::fs::write(&target, b"old").unwrap();
        let mut sink = FileSink::create(&io, &target).await.unwrap();
        sink.write_at(chunk(&io, b"new bytes").await, 0).await.unwrap();
        sink.seal(false).await.unwrap();
        assert!(
            sink.write_at(chunk(&io, b"x").await, 0).await.is_err(),
            "no write after the seal"
        );
        drop(sink);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
