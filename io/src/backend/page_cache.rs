//! Whether a file's bytes are in the page cache: the one question `O_DIRECT` reads depend on (a
//! cached file is cheaper to read through the cache than from the disk). One system call the
//! standard library does not wrap, so this module may hold `unsafe` code (its only other homes are
//! `pool::mem` and `backend::uring_sys`).
#![allow(unsafe_code)]

use std::fs::File;

/// Whether the first page of `file` is in the page cache: a `preadv2` of it with `RWF_NOWAIT`
/// returns data only if no disk read is needed. `false` when it is not, or cannot be told.
#[cfg(target_os = "linux")]
pub(crate) fn first_page_cached(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut page = [0u8; 4096];
    let iov = libc::iovec {
        iov_base: page.as_mut_ptr().cast(),
        iov_len: page.len(),
    };
    // SAFETY: one iovec describing `page`, a live, writable buffer of `iov_len` bytes that outlives
    // the call; `file` keeps the descriptor open for its duration.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    n > 0
}

/// Not Linux: cannot be told.
#[cfg(not(target_os = "linux"))]
pub(crate) fn first_page_cached(_: &File) -> bool {
    false
}
