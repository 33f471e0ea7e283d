//! Portable backend: blocking positional I/O on tokio's blocking thread pool.
//!
//! The chunk (and a clone of the file handle) moves into the blocking closure and comes back
//! with the result, so if the awaiting task is cancelled the closure still owns the chunk until
//! the system call returns, and the chunk goes back to the pool only then.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::{Chunk, IoFile};

/// Runs `f` on the blocking pool and flattens the join error into an `io::Error`.
pub(crate) async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(format!("blocking I/O task failed: {e}"))),
    }
}

#[cfg(unix)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(unix)]
fn pwrite(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(windows)]
fn pwrite(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, offset)
}

/// Fills `chunk` (already cleared) with up to `want` bytes from `offset`; stops early at EOF.
fn read_into(file: &File, chunk: &mut Chunk, offset: u64, want: usize) -> io::Result<()> {
    let want = want.min(chunk.capacity());
    let mut done = 0usize;
    while done < want {
        let buf = &mut chunk.buf_mut()[done..want];
        match pread(file, buf, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    chunk.set_filled_len(done);
    Ok(())
}

/// Writes the filled part of `chunk` at `offset`, looping on short writes.
fn write_from(file: &File, chunk: &Chunk, offset: u64) -> io::Result<()> {
    let data = chunk.as_slice();
    let mut done = 0usize;
    while done < data.len() {
        match pwrite(file, &data[done..], offset + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write the whole chunk",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) async fn read_at(file: IoFile, mut chunk: Chunk, offset: u64, want: usize) -> io::Result<Chunk> {
    blocking(move || {
        read_into(file.std(), &mut chunk, offset, want)?;
        Ok(chunk)
    })
    .await
}

pub(crate) async fn write_at(file: IoFile, chunk: Chunk, offset: u64) -> io::Result<Chunk> {
    blocking(move || {
        write_from(file.std(), &chunk, offset)?;
        Ok(chunk)
    })
    .await
}

pub(crate) async fn fsync(file: IoFile) -> io::Result<()> {
    blocking(move || file.std().sync_all()).await
}

pub(crate) async fn open_read(path: &Path) -> io::Result<IoFile> {
    let path = path.to_path_buf();
    blocking(move || File::open(&path).map(IoFile::from_std)).await
}

/// Where a [`create_new`] stands, shared by the caller and the blocking task that creates the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Creation {
    Pending,
    Created,
    Delivered,
    Abandoned,
}

/// The caller's side of a [`create_new`]: dropped before the file reached the caller (the caller was
/// cancelled), it removes the file, or tells the blocking task to remove it once made.
struct CreationGuard {
    state: std::sync::Arc<std::sync::Mutex<Creation>>,
    path: std::path::PathBuf,
}

impl Drop for CreationGuard {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *st == Creation::Created {
            let _ = std::fs::remove_file(&self.path);
        }
        if *st != Creation::Delivered {
            *st = Creation::Abandoned;
        }
    }
}

/// Creates a new file. Cancellation-safe: the blocking open runs on its own thread, so a caller
/// dropped mid-way would otherwise leave a file nobody owns (a stray temporary file after Ctrl-C).
pub(crate) async fn create_new(path: &Path) -> io::Result<IoFile> {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Creation::Pending));
    let guard = CreationGuard {
        state: state.clone(),
        path: path.to_path_buf(),
    };
    let path = path.to_path_buf();
    let file = blocking(move || {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let file = options.open(&path)?;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if *st == Creation::Abandoned {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::new(io::ErrorKind::Interrupted, "the creation was cancelled"));
        }
        *st = Creation::Created;
        Ok(IoFile::from_std(file))
    })
    .await?;
    *guard.state.lock().unwrap_or_else(|p| p.into_inner()) = Creation::Delivered;
    Ok(file)
}

pub(crate) async fn set_len(file: IoFile, len: u64) -> io::Result<()> {
    blocking(move || file.std().set_len(len)).await
}

pub(crate) async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to): (PathBuf, PathBuf) = (from.to_path_buf(), to.to_path_buf());
    blocking(move || std::fs::rename(&from, &to)).await
}
