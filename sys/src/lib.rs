//! The calls s3sync needs outside its I/O engine that Rust cannot check, each behind a safe function
//! whose unsafe block says why it is sound, so that the `s3sync` crate forbids unsafe code: two
//! system calls, and the unrestricted Lua VM of `--allow-lua-unsafe-vm`.

/// A Lua VM with every standard library, `debug` included, that loads C modules and binary chunks:
/// what the original s3sync's `--allow-lua-unsafe-vm` ("Dangerous") gives a script.
///
/// Rust checks nothing of what runs in it: a C module or crafted bytecode the script loads can break
/// the memory safety of the whole process. Call this only when the user asked for it, for a script
/// they trust as they would trust native code; s3sync's safe VMs refuse binary chunks and C modules.
pub fn unrestricted_lua() -> mlua::Lua {
    // SAFETY: building the VM touches no memory of ours; `unsafe_new` is unsafe for what the VM may
    // later load, which is the risk the caller's user accepted by name (see the doc above), and no
    // other caller exists.
    unsafe { mlua::Lua::unsafe_new() }
}

/// Keeps this process's memory in 4 KiB pages (`prctl(PR_SET_THP_DISABLE)`, Linux; elsewhere
/// nothing).
pub fn prefer_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Whether a process with this id exists: `Some(false)` when the system says there is none
/// (`ESRCH`), `Some(true)` when there is one (ours to signal or not), `None` on other systems.
pub fn process_exists(pid: u32) -> Option<bool> {
    #[cfg(unix)]
    {
        let pid = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        let gone = r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        Some(!gone)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        None
    }
}
