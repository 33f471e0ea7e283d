//! Which run owns a temporary file or a resume-journal record, and whether that run is provably dead.
//!
//! Leftovers are cleaned up only when their run can no longer be alive. A bare pid is not enough: the
//! directory or the journal may be shared with another host or container (where our `/proc` says
//! nothing), and pids are reused. So an owner is (host, boot, pid namespace, pid, process start time),
//! and a run is dead only when it ran on this host and either this host has rebooted since, or it ran in
//! our pid namespace and that pid is gone or now belongs to a process started at another time.

use std::sync::OnceLock;
use std::time::SystemTime;

/// The identity of one run of s3sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Hash of the machine id and host name.
    host: u32,
    /// Hash of the kernel's boot id.
    boot: u32,
    /// Hash of the pid namespace.
    pid_ns: u32,
    /// Process id.
    pid: u32,
    /// Process start time (clock ticks since boot), 0 when unknown.
    start: u64,
}

impl Owner {
    /// The owner that stands for this process.
    pub fn current() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                host: host_id(),
                boot: hash32(&read("/proc/sys/kernel/random/boot_id")),
                pid_ns: hash32(&pid_namespace()),
                pid,
                start: start_time(pid).flatten().unwrap_or(0),
            }
        })
    }

    /// A compact token without `.` or `/`, for file names and journal records.
    pub fn token(&self) -> String {
        format!(
            "{:08x}{:08x}{:08x}-{}-{}",
            self.host, self.boot, self.pid_ns, self.pid, self.start
        )
    }

    /// Parses a [`Owner::token`].
    pub fn parse(token: &str) -> Option<Owner> {
        let mut it = token.split('-');
        let ids = it.next()?;
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.parse().ok()?;
        if it.next().is_some() || ids.len() != 24 || !ids.is_ascii() {
            return None;
        }
        let hex = |r: std::ops::Range<usize>| u32::from_str_radix(&ids[r], 16).ok();
        Some(Owner {
            host: hex(0..8)?,
            boot: hex(8..16)?,
            pid_ns: hex(16..24)?,
            pid,
            start,
        })
    }

    /// Whether this is the current process.
    pub fn is_me(&self) -> bool {
        self == Owner::current()
    }

    /// Whether the run is certainly no longer alive (so its leftovers may be removed). `written` is
    /// when the leftover was last written: a run of an earlier boot of this host is dead only if the
    /// leftover is older than this boot (a host hash can repeat across machines: cloned images,
    /// containers without a machine id that share a host name).
    pub fn is_dead(&self, written: Option<SystemTime>) -> bool {
        let before_boot = match (written, boot_time()) {
            (Some(w), Some(b)) => w < b,
            _ => false,
        };
        self.is_dead_seen_from(Owner::current(), before_boot, process_state)
    }

    fn is_dead_seen_from(&self, me: &Owner, written_before_boot: bool, state_of: impl Fn(u32) -> Process) -> bool {
        if self.host != me.host || self == me {
            return false; // another host or container, or ourselves: nothing is provable
        }
        if self.boot != me.boot {
            return written_before_boot; // this host has rebooted since
        }
        if self.pid_ns != me.pid_ns || self.start == 0 || !cfg!(target_os = "linux") {
            return false;
        }
        match state_of(self.pid) {
            Process::Gone => true,
            Process::Running(started) => started != self.start, // the pid was reused
            Process::Unknown => false,
        }
    }
}

/// What this host says of a process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// No such process (or a zombie).
    Gone,
    /// A process started at this time (clock ticks after boot).
    Running(u64),
    /// It exists, or may, but its start time cannot be read (another user's, `hidepid`).
    Unknown,
}

/// Whether a leftover of an unidentified owner (written by a version of s3sync before owners were
/// recorded) may be removed: only once it is older than this boot, or a week old.
pub fn legacy_leftover_is_dead(written: Option<SystemTime>) -> bool {
    let Some(w) = written else { return false };
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    boot_time().is_some_and(|b| w < b) || SystemTime::now().duration_since(w).is_ok_and(|age| age > week)
}

/// Whether the owner named by `token` is dead: a parsed owner by [`Owner::is_dead`], an unparsable
/// one (an older version's) by [`legacy_leftover_is_dead`].
pub fn leftover_is_dead(token: &str, written: Option<SystemTime>) -> bool {
    match Owner::parse(token) {
        Some(o) => o.is_dead(written),
        None => legacy_leftover_is_dead(written),
    }
}

/// When this host booted (`btime` of `/proc/stat`).
fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Whether `pid` runs, and since when. Existence is asked of the kernel (`kill(pid, 0)`: only ESRCH
/// means gone), so a process hidden from `/proc` (`hidepid`) or of another user is never taken for dead.
#[cfg(unix)]
fn process_state(pid: u32) -> Process {
    match s3sync_sys::process_exists(pid) {
        None => return Process::Unknown,
        Some(false) => return Process::Gone,
        Some(true) => {}
    }
    match start_time(pid) {
        Some(Some(t)) => Process::Running(t),
        Some(None) => Process::Gone, // a zombie
        None => Process::Unknown,
    }
}
#[cfg(not(unix))]
fn process_state(_: u32) -> Process {
    Process::Unknown
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

fn host_id() -> u32 {
    let machine = read("/etc/machine-id");
    let name = read("/proc/sys/kernel/hostname");
    let name = if name.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_default()
    } else {
        name
    };
    hash32(&format!("{machine}\0{name}"))
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`): `None` when it cannot be read,
/// `Some(None)` for a process that has exited and only waits to be reaped (a zombie).
fn start_time(pid: u32) -> Option<Option<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return Some(None);
    }
    Some(fields.nth(18)?.parse().ok())
}

fn hash32(s: &str) -> u32 {
    let d = crate::checksum::md5_of(s.as_bytes());
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(host: u32, boot: u32, pid: u32, start: u64) -> Owner {
        Owner {
            host,
            boot,
            pid_ns: 7,
            pid,
            start,
        }
    }

    #[test]
    fn token_round_trips_and_has_no_dots() {
        let me = Owner::current();
        let t = me.token();
        assert!(!t.contains('.') && !t.contains('/'), "{t}");
        assert_eq!(Owner::parse(&t).as_ref(), Some(me));
        assert!(me.is_me());
        assert_eq!(Owner::parse("1234"), None);
        assert_eq!(Owner::parse("zz-1-2"), None);
    }

    #[test]
    fn only_provably_dead_runs_are_dead() {
        let me = owner(1, 1, 10, 100);
        let state = |pid: u32| match pid {
            20 => Process::Running(200),
            40 => Process::Unknown,
            _ => Process::Gone,
        };
        // Same host, same boot: pid gone, or reused by a later process.
        assert!(owner(1, 1, 30, 5).is_dead_seen_from(&me, false, state));
        assert!(owner(1, 1, 20, 199).is_dead_seen_from(&me, false, state));
        assert!(!owner(1, 1, 20, 200).is_dead_seen_from(&me, false, state));
        // A process we may not look at (another user's, hidepid) is not dead.
        assert!(!owner(1, 1, 40, 5).is_dead_seen_from(&me, false, state));
        // Same host, another boot: dead only when the leftover is older than this boot.
        assert!(owner(1, 0, 20, 200).is_dead_seen_from(&me, true, state));
        assert!(!owner(1, 0, 20, 200).is_dead_seen_from(&me, false, state));
        // Another host or container: never provable.
        assert!(!owner(2, 1, 30, 5).is_dead_seen_from(&me, true, state));
        let mut other_ns = owner(1, 1, 30, 5);
        other_ns.pid_ns = 8;
        assert!(!other_ns.is_dead_seen_from(&me, true, state));
        // Ourselves.
        assert!(!me.is_dead_seen_from(&me, true, state));
    }

    #[test]
    fn this_process_is_alive_and_an_exited_one_is_dead() {
        let now = Some(SystemTime::now());
        assert!(!Owner::current().is_dead(now));
        assert_eq!(
            process_state(std::process::id()),
            Process::Running(Owner::current().start)
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Owner {
            pid,
            start: 1,
            ..Owner::current().clone()
        };
        assert!(dead.is_dead(now));
    }

    #[test]
    fn legacy_leftovers_are_removed_only_when_old() {
        assert!(!legacy_leftover_is_dead(Some(SystemTime::now())));
        assert!(legacy_leftover_is_dead(Some(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1)
        )));
        assert!(!legacy_leftover_is_dead(None));
        assert!(!leftover_is_dead("999999", Some(SystemTime::now())));
    }
}
