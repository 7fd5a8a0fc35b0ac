//! The syscalls of privilege separation: the parent/child socketpair (SOCK_SEQPACKET, one
//! message per request, descriptors passed with SCM_RIGHTS), fork, the signal self-pipe of the
//! parent's loop, and dropping / trimming capabilities. On nix, signal-hook, socket2 and caps;
//! two blocks are left to the caller by those crates: fork, and owning received descriptors.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

/// Retry a syscall that was interrupted by a signal (the parent's handlers are SA_RESTART,
/// but a caller on another thread may not be).
fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Room in each socket's send buffer: a few whole frames (privsep::frame cuts messages into
/// datagrams of at most 32 KiB, so no send fails for its size).
const SEND_BUFFER: usize = 1 << 20;
/// Most descriptors one message carries.
const MAX_FDS: usize = 8;
/// Room for every descriptor a sender can attach to one message (Linux's SCM_MAX_FD), so
/// none arrives beyond the control buffer, installed in this process but never seen (and
/// never closed): a peer attaching more than [`MAX_FDS`] only gets them closed.
const RECV_FDS: usize = 253;

/// One end of the parent/child socketpair. Messages keep their boundaries (SEQPACKET), so a
/// request is one `send` and one `recv`; EOF means the other process is gone.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A connected pair, close-on-exec (so a notify script or nft never holds it open and hides
/// the death of its owner).
pub fn pair() -> io::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    for fd in [&a, &b] {
        socket2::SockRef::from(fd).set_send_buffer_size(SEND_BUFFER)?;
    }
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        socket2::SockRef::from(&self.fd).set_nonblocking(on)
    }

    /// How long a blocking send may wait for room (None: for ever).
    pub fn set_send_timeout(&self, limit: Option<std::time::Duration>) -> io::Result<()> {
        socket2::SockRef::from(&self.fd).set_write_timeout(limit)
    }

    /// Send one message with `fds` attached. A dead peer is an error return, not a SIGPIPE.
    pub fn send(&self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(msg)];
        let fd = self.fd.as_raw_fd();
        retry(|| sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)).map(|_| ())
    }

    /// Receive one message into `buf`; returns its length (0 = the other side is gone) and
    /// the descriptors that came with it (close-on-exec). A message longer than `buf` is an
    /// error, not a silent cut.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut cbuf = nix::cmsg_space!([RawFd; RECV_FDS]);
        let mut iov = [IoSliceMut::new(buf)];
        let fd = self.fd.as_raw_fd();
        let msg = loop {
            match recvmsg::<()>(fd, &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(Errno::EINTR) => continue,
                r => break r?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: each descriptor of an SCM_RIGHTS message was just installed in this
                // process by the kernel and belongs to nobody else. nix 0.32 hands them back
                // as RawFd, so taking ownership is left to the caller.
                fds.extend(
                    received
                        .into_iter()
                        .map(|r| unsafe { OwnedFd::from_raw_fd(r) }),
                );
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::other("message larger than the receive buffer"));
        }
        Ok((msg.bytes, fds))
    }
}

/// fork(2). Call only while the process has a single thread.
pub enum Forked {
    Parent { child: libc::pid_t },
    Child,
}

pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees no other thread exists, so the child's copy of the
    // address space is consistent (no lock held by a vanished thread). No crate can check
    // that, so nix leaves the guarantee to the caller.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => Ok(Forked::Child),
        ForkResult::Parent { child } => Ok(Forked::Parent {
            child: child.as_raw(),
        }),
    }
}

/// A signal number as nix's type (an unknown number is EINVAL, as kill(2) would say).
fn signal(sig: libc::c_int) -> io::Result<Signal> {
    Signal::try_from(sig).map_err(io::Error::from)
}

/// The child asks to be killed by `sig` when its parent dies (Linux; elsewhere the closed
/// socketpair tells it).
pub fn die_with_parent(sig: libc::c_int) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_pdeathsig(signal(sig)?)?;
    #[cfg(not(target_os = "linux"))]
    let _ = sig;
    Ok(())
}

/// The parent's own pid, as the child sees it (1 or a subreaper once the parent is gone).
pub fn parent_pid() -> libc::pid_t {
    nix::unistd::getppid().as_raw()
}

/// Send `sig` to process `pid` (a positive pid: never a process group).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from(Errno::ESRCH));
    }
    nix::sys::signal::kill(Pid::from_raw(pid), signal(sig)?).map_err(io::Error::from)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Reap `pid` if it has ended (never blocks).
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<Exit>> {
    match retry(|| waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)))? {
        WaitStatus::Exited(_, code) => Ok(Some(Exit::Code(code))),
        WaitStatus::Signaled(_, sig, _) => Ok(Some(Exit::Signal(sig as i32))),
        // Still running (stops and continues are not asked for: no WUNTRACED).
        _ => Ok(None),
    }
}

/// The parent's signals, blocked from before the fork until the parent's handlers are in
/// place ([`SignalPipe::install`]) or, in the child, until [`reset_signals`]. So a signal in
/// between is kept pending rather than lost, and nothing is ever installed in the child: it
/// starts with the default dispositions, a fresh signal-hook registry (tokio's handlers in
/// the child go through it) and no copy of the parent's pipe.
#[must_use = "the signals stay blocked until installed or reset"]
pub struct HeldSignals {
    signals: Vec<libc::c_int>,
    set: SigSet,
}

/// Block `signals` (call before the fork, single-threaded: the mask is per thread).
pub fn hold_signals(signals: &[libc::c_int]) -> io::Result<HeldSignals> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(signal(s)?);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(HeldSignals {
        signals: signals.to_vec(),
        set,
    })
}

impl HeldSignals {
    fn unblock(&self) -> io::Result<()> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&self.set), None)
            .map_err(io::Error::from)
    }
}

/// The child's side: unblock the held signals. Their dispositions were never changed, so
/// they are the defaults (what was pending stayed with the parent: fork clears it).
pub fn reset_signals(held: HeldSignals) -> io::Result<()> {
    held.unblock()
}

/// Signals delivered through a socketpair (signal-hook's self-pipe), so the parent's poll
/// loop sees them as readable data.
pub struct SignalPipe {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
}

impl SignalPipe {
    /// Route the held signals to the pipe, then unblock them: one that arrived while they
    /// were held is delivered now, through the pipe. Call before any thread exists.
    pub fn install(held: HeldSignals) -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, &held.signals)?;
        held.unblock()?;
        Ok(SignalPipe { delivery })
    }

    /// Signals that arrived since the last call, each once (like the kernel's pending set,
    /// two of a kind in between count as one).
    pub fn drain(&mut self) -> Vec<libc::c_int> {
        self.delivery.pending().collect()
    }
}

impl AsFd for SignalPipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.delivery.get_read().as_fd()
    }
}

impl AsRawFd for SignalPipe {
    fn as_raw_fd(&self) -> RawFd {
        self.delivery.get_read().as_raw_fd()
    }
}

/// poll(2) on `fds` for readability; returns which are readable (or hung up). An interrupted
/// wait reports nothing ready.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    // A negative timeout waits without limit, as poll(2).
    let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::NONE);
    match nix::poll::poll(&mut p, timeout) {
        Ok(_) => Ok(p
            .iter()
            .map(|x| x.revents().is_some_and(|r| !r.is_empty()))
            .collect()),
        Err(Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

/// The effective, permitted and bounding capability sets, for the child's self-check.
#[cfg(target_os = "linux")]
pub fn capability_sets() -> io::Result<[usize; 3]> {
    use caps::CapSet;
    let n = |s| {
        caps::read(None, s)
            .map(|c| c.len())
            .map_err(|e| io::Error::other(e.to_string()))
    };
    Ok([
        n(CapSet::Effective)?,
        n(CapSet::Permitted)?,
        n(CapSet::Bounding)?,
    ])
}

/// Empty the bounding, inheritable and ambient sets (no exec can regain anything). Needs
/// CAP_SETPCAP, so it runs while still root, before setuid.
#[cfg(target_os = "linux")]
pub fn drop_bounding_set() -> io::Result<()> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    // Bounding: each capability dropped one by one (prctl PR_CAPBSET_DROP).
    for c in caps::all() {
        caps::drop(None, CapSet::Bounding, c).map_err(err)?;
    }
    Ok(())
}

/// Empty the effective and permitted sets (for a child still uid 0, and to be sure).
#[cfg(target_os = "linux")]
pub fn clear_capabilities() -> io::Result<()> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    caps::clear(None, CapSet::Effective).map_err(err)?;
    caps::clear(None, CapSet::Permitted).map_err(err)?;
    Ok(())
}

/// Keep only `keep` in the parent's sets (bounding included, so scripts it runs cannot
/// exceed them either). Silently does nothing when not root (nothing to trim).
#[cfg(target_os = "linux")]
pub fn trim_capabilities(keep: &[caps::Capability]) -> io::Result<()> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    let have = caps::read(None, CapSet::Permitted).map_err(err)?;
    if !have.contains(&caps::Capability::CAP_SETPCAP) {
        return Ok(());
    }
    let keep: caps::CapsHashSet = keep.iter().copied().filter(|c| have.contains(c)).collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(err)?;
        }
    }
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new()).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    Ok(())
}

/// The no-new-privileges flag (Linux), for the child's self-check.
#[cfg(target_os = "linux")]
pub fn no_new_privs() -> bool {
    nix::sys::prctl::get_no_new_privs().unwrap_or(false)
}

/// Real and effective uid and gid, for the child's self-check (the saved ones are checked
/// where they are set, in `privdrop`).
pub fn ids() -> ((u32, u32), (u32, u32)) {
    use nix::unistd::{getegid, geteuid, getgid, getuid};
    (
        (getuid().as_raw(), geteuid().as_raw()),
        (getgid().as_raw(), getegid().as_raw()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_boundaries_and_carry_descriptors() {
        let (a, b) = pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.send(b"first", &[l.as_fd()]).unwrap();
        a.send(b"second", &[]).unwrap();
        let mut buf = vec![0u8; 64];
        let (n, fds) = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        assert_eq!(fds.len(), 1);
        // The descriptor is the same listening socket, and close-on-exec.
        let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "MSG_CMSG_CLOEXEC");
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), l.local_addr().unwrap());
        let (n, fds) = b.recv(&mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"second"[..], 0));
        drop(a);
        assert_eq!(b.recv(&mut buf).unwrap().0, 0, "EOF once the peer is gone");
    }

    #[test]
    fn oversized_message_is_an_error_not_a_silent_cut() {
        let (a, b) = pair().unwrap();
        a.send(&[7u8; 100], &[]).unwrap();
        let mut buf = vec![0u8; 10];
        assert!(b.recv(&mut buf).is_err());
    }

    #[test]
    fn descriptor_limits() {
        let (a, b) = pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nine = [l.as_fd(); MAX_FDS + 1];
        assert!(a.send(b"x", &nine).is_err(), "more than MAX_FDS");
        a.send(b"eight", &nine[..MAX_FDS]).unwrap();
        let mut buf = vec![0u8; 64];
        let (n, fds) = b.recv(&mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"eight"[..], MAX_FDS));
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_sigpipe() {
        let (a, b) = pair().unwrap();
        drop(b);
        let e = a.send(b"anyone?", &[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
    }

    #[test]
    fn poll_reports_the_readable_one() {
        let (a, b) = pair().unwrap();
        let (c, _d) = pair().unwrap();
        assert_eq!(
            poll_readable(&[b.as_fd(), c.as_fd()], 0).unwrap(),
            [false, false]
        );
        a.send(b"ping", &[]).unwrap();
        assert_eq!(
            poll_readable(&[b.as_fd(), c.as_fd()], 1000).unwrap(),
            [true, false]
        );
    }

    #[test]
    fn a_signal_while_held_arrives_through_the_pipe() {
        // SIGUSR2 is no other test's; raise() sends it to this thread, whose mask holds it.
        let held = hold_signals(&[libc::SIGUSR2]).unwrap();
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        let mut pipe = SignalPipe::install(held).unwrap();
        assert_eq!(poll_readable(&[pipe.as_fd()], 2000).unwrap(), [true]);
        assert_eq!(pipe.drain(), [libc::SIGUSR2]);
        assert!(pipe.drain().is_empty(), "each signal once");
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        assert_eq!(poll_readable(&[pipe.as_fd()], 2000).unwrap(), [true]);
        assert_eq!(pipe.drain(), [libc::SIGUSR2], "and again, once installed");
    }

    #[test]
    fn waiting_for_children() {
        // Two shells stand in for the child, reaped by try_wait (not by std): their status
        // comes back as the parent's loop reads it.
        let code = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap()
            .id();
        let killed = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap()
            .id();
        let wait = |pid: u32| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                if let Some(e) = try_wait(pid as libc::pid_t).unwrap() {
                    return e;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "child {pid} never ended"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        assert_eq!(wait(code), Exit::Code(3));
        assert_eq!(wait(killed), Exit::Signal(libc::SIGKILL));
        assert!(kill(0, libc::SIGTERM).is_err(), "never a process group");
        assert!(kill(-1, libc::SIGTERM).is_err(), "never every process");
    }
}
