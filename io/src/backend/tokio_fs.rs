//! Portable backend: blocking positional I/O on tokio's blocking thread pool.
//!
//! The chunk (and a clone of the file handle) moves into the blocking closure and comes back
//! with the result, so if the awaiting task is cancelled the closure still owns the chunk until
//! the system call returns, and the chunk goes back to the pool only then.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::CreationGuard;
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
fn read_into(file: &IoFile, chunk: &mut Chunk, offset: u64, want: usize) -> io::Result<()> {
    let want = want.min(chunk.capacity());
    let mut done = 0usize;
    while done < want {
        let buf = &mut chunk.buf_mut()[done..want];
        match pread(file.std(), buf, offset + done as u64) {
            Ok(0) => break,
            Ok(n) if file.read_ends_short(done + n) => {
                done += n;
                break;
            }
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
        read_into(&file, &mut chunk, offset, want)?;
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

/// Opens `path` for reading, and again with `O_DIRECT` (Linux) when the file system takes it (a direct
/// read of the first block succeeds) and the second open finds the same file (device and inode: the
/// path may have been replaced in between).
pub(crate) async fn open_read_direct(path: &Path, unless_cached: bool) -> io::Result<IoFile> {
    let path = path.to_path_buf();
    blocking(move || {
        let file = File::open(&path)?;
        let twin = match unless_cached && super::page_cache::first_page_cached(&file) {
            true => None,
            false => open_direct_twin(&path, &file),
        };
        Ok(IoFile::with_direct(file, twin))
    })
    .await
}

#[cfg(target_os = "linux")]
fn open_direct_twin(path: &Path, file: &File) -> Option<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return None;
    }
    // Some file systems take the flag at open and refuse the reads (EINVAL): ask now, so that a
    // read in the middle of a transfer never has to fall back.
    let mut buf = vec![0u8; 2 * crate::DIRECT_ALIGN];
    let start = buf.as_ptr().align_offset(crate::DIRECT_ALIGN);
    let block = buf.get_mut(start..start + crate::DIRECT_ALIGN)?;
    std::os::unix::fs::FileExt::read_at(&direct, block, 0).ok()?;
    Some(direct)
}

#[cfg(not(target_os = "linux"))]
fn open_direct_twin(_: &Path, _: &File) -> Option<File> {
    None
}

pub(crate) async fn open_read(path: &Path) -> io::Result<IoFile> {
    let path = path.to_path_buf();
    blocking(move || File::open(&path).map(IoFile::from_std)).await
}

/// Creates a new file. Cancellation-safe: the blocking open runs on its own thread, so a caller
/// dropped mid-way would otherwise leave a file nobody owns (a stray temporary file after Ctrl-C).
pub(crate) async fn create_new(path: &Path) -> io::Result<IoFile> {
    let guard = CreationGuard::new(path);
    let state = guard.state();
    let path = path.to_path_buf();
    let file = blocking(move || {
        let file = open_new(&path)?;
        state.created(&path)?;
        Ok(IoFile::from_std(file))
    })
    .await?;
    guard.delivered();
    Ok(file)
}

/// `open(2)` with `O_WRONLY | O_CREAT | O_EXCL`, mode `0o644` (before the umask).
fn open_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    options.open(path)
}

/// Reads a whole small file: opens `path`, fills `chunk` (already cleared) from its start up to its
/// capacity or the end of the file, closes it.
pub(crate) async fn read_file(path: &Path, mut chunk: Chunk) -> io::Result<Chunk> {
    let path = path.to_path_buf();
    blocking(move || {
        let file = IoFile::from_std(File::open(&path)?);
        let want = chunk.capacity();
        read_into(&file, &mut chunk, 0, want)?;
        Ok(chunk)
    })
    .await
}

/// Creates `path` (never replacing a file), writes `chunk` into it, fsyncs it when `durable`, and
/// closes it, in one blocking task. On an error, or when the caller is dropped before it hears of
/// the file, the file is removed.
pub(crate) async fn write_file(path: &Path, chunk: Chunk, durable: bool) -> io::Result<()> {
    let guard = CreationGuard::new(path);
    let state = guard.state();
    let path = path.to_path_buf();
    blocking(move || {
        let file = open_new(&path)?;
        let written = write_from(&file, &chunk, 0).and_then(|()| match durable {
            true => file.sync_all(),
            false => Ok(()),
        });
        drop(chunk);
        drop(file);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        state.created(&path)
    })
    .await?;
    guard.delivered();
    Ok(())
}

pub(crate) async fn set_len(file: IoFile, len: u64) -> io::Result<()> {
    blocking(move || file.std().set_len(len)).await
}

pub(crate) async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to): (PathBuf, PathBuf) = (from.to_path_buf(), to.to_path_buf());
    blocking(move || std::fs::rename(&from, &to)).await
}
