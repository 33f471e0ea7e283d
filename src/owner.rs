//! Which run owns a temporary file or a resume-journal record, and whether that run is provably dead.
//!
//! Leftovers are cleaned up only when their run can no longer be alive. A bare pid is not enough: the
//! directory or the journal may be shared with another host or container (where our `/proc` says
//! nothing), and pids are reused. So an owner is (host, boot, pid namespace, pid, process start time),
//! and a run is dead only when it ran on this host and either this host has rebooted since, or it ran in
//! our pid namespace and that pid is gone or now belongs to a process started at another time.

use std::sync::OnceLock;

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
                start: start_time(pid).unwrap_or(0),
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

    /// Whether the run is certainly no longer alive (so its leftovers may be removed).
    pub fn is_dead(&self) -> bool {
        self.is_dead_seen_from(Owner::current(), start_time)
    }

    fn is_dead_seen_from(&self, me: &Owner, start_of: impl Fn(u32) -> Option<u64>) -> bool {
        if self.host != me.host || self == me {
            return false; // another host or container, or ourselves: nothing is provable
        }
        if self.boot != me.boot {
            return true; // this host has rebooted since
        }
        if self.pid_ns != me.pid_ns || self.start == 0 || !cfg!(target_os = "linux") {
            return false;
        }
        match start_of(self.pid) {
            None => true,                           // no such process
            Some(started) => started != self.start, // the pid was reused
        }
    }
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

/// The start time of a live process (field 22 of `/proc/<pid>/stat`), `None` when there is no such
/// process or it has exited and only waits to be reaped (a zombie).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    Some(fields.nth(18)?.parse().unwrap_or(0))
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
        let alive = |pid: u32| (pid == 20).then_some(200);
        // Same host, same boot: pid gone, or reused by a later process.
        assert!(owner(1, 1, 30, 5).is_dead_seen_from(&me, alive));
        assert!(owner(1, 1, 20, 199).is_dead_seen_from(&me, alive));
        assert!(!owner(1, 1, 20, 200).is_dead_seen_from(&me, alive));
        // Same host, rebooted since.
        assert!(owner(1, 0, 20, 200).is_dead_seen_from(&me, alive));
        // Another host or container: never provable.
        assert!(!owner(2, 1, 30, 5).is_dead_seen_from(&me, alive));
        let mut other_ns = owner(1, 1, 30, 5);
        other_ns.pid_ns = 8;
        assert!(!other_ns.is_dead_seen_from(&me, alive));
        // Ourselves.
        assert!(!me.is_dead_seen_from(&me, alive));
    }

    #[test]
    fn this_process_is_alive() {
        assert!(!Owner::current().is_dead());
        assert!(start_time(std::process::id()).is_some());
    }
}
