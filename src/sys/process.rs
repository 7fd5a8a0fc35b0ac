//! Signals and identity of processes, for the lab (which kills and restarts daemons on purpose).
//! All of it through nix's safe wrappers.

use std::io;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

fn no_such_process() -> io::Error {
    io::Error::from_raw_os_error(libc::ESRCH)
}

/// `pid` as a pid_t greater than `min` (0 and negative pids address process groups, 1 is
/// init), or ESRCH.
fn pid_above(pid: u32, min: libc::pid_t) -> io::Result<Pid> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > min => Ok(Pid::from_raw(p)),
        _ => Err(no_such_process()),
    }
}

/// `sig` as nix's type; 0 (no signal: only the existence check) is None.
fn signal_number(sig: i32) -> io::Result<Option<Signal>> {
    match sig {
        0 => Ok(None),
        s => Signal::try_from(s).map(Some).map_err(io::Error::from),
    }
}

/// Send signal `sig` (libc::SIGKILL, SIGTERM, ...; 0 checks that `pid` exists) to process
/// `pid`, never to a process group.
pub fn signal(pid: u32, sig: i32) -> io::Result<()> {
    let pid = pid_above(pid, 0)?;
    nix::sys::signal::kill(pid, signal_number(sig)?).map_err(io::Error::from)
}

/// Send signal `sig` to every process of process group `pgid` (a daemon and the children it
/// forked, when it was started as a group leader). Never our own group (0) or init's (1).
pub fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid = pid_above(pgid, 1)?;
    nix::sys::signal::killpg(pgid, signal_number(sig)?).map_err(io::Error::from)
}

/// Whether process `pid` still exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name's closing parenthesis.
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => signal_zero(pid),
    }
}

/// Without /proc (FreeBSD): kill(pid, 0).
fn signal_zero(pid: u32) -> bool {
    signal(pid, 0).is_ok()
}

/// Whether we run as root (the effective user id is 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_nonsense_are_refused() {
        let errno = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        assert_eq!(errno(signal(0, 0)), Some(libc::ESRCH), "our own group");
        assert_eq!(
            errno(signal(u32::MAX, 0)),
            Some(libc::ESRCH),
            "-1: every process"
        );
        assert_eq!(errno(signal_group(1, 0)), Some(libc::ESRCH), "init's group");
        assert_eq!(
            errno(signal_group(0, 0)),
            Some(libc::ESRCH),
            "our own group"
        );
        assert_eq!(errno(signal(std::process::id(), 12345)), Some(libc::EINVAL));
    }

    #[test]
    fn a_child_is_signalled_and_seen_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(alive(pid));
        signal(pid, 0).unwrap();
        signal(pid, libc::SIGKILL).unwrap();
        // Until reaped it is a zombie, which counts as gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "still alive after SIGKILL"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
    }
}
