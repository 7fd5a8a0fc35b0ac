//! The syscalls of privilege separation: the parent/child socketpair (SOCK_SEQPACKET, one
//! message per request, descriptors passed with SCM_RIGHTS), fork, the signal self-pipe of the
//! parent's loop, and dropping / trimming capabilities.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Largest message either side sends (a whole config file on reload fits).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Most descriptors one message carries.
const MAX_FDS: usize = 8;

/// One end of the parent/child socketpair. Messages keep their boundaries (SEQPACKET), so a
/// request is one `send` and one `recv`; EOF means the other process is gone.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A connected pair, close-on-exec (so a notify script or nft never holds it open and hides
/// the death of its owner).
pub fn pair() -> io::Result<(Channel, Channel)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array we own.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&a, &b] {
        // Room for a reload message in one datagram.
        let sz: libc::c_int = MAX_MESSAGE as libc::c_int * 2;
        // SAFETY: an int option value and its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&sz as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        // SAFETY: fcntl on a descriptor we own.
        let flags = cvt(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL) })?;
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFL, flags) }).map(|_| ())
    }

    /// Send one message with `fds` attached.
    pub fn send(&self, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // u64 alignment is what cmsghdr needs on every supported target.
        let mut cbuf = [0u64; 16];
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        if !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds);
            // SAFETY: CMSG_SPACE is a pure size computation.
            let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
            mh.msg_control = cbuf.as_mut_ptr().cast();
            mh.msg_controllen = space as _;
            // SAFETY: msg_control points at a buffer of at least `space` bytes (16 u64 =
            // 128 bytes, and MAX_FDS descriptors need 16 + 32); the header and data written
            // through CMSG_* stay inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&mh);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
                std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
            }
        }
        loop {
            // SAFETY: mh points at live buffers for the duration of the call.
            let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &mh, MSG_NOSIGNAL) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receive one message into `buf`; returns its length (0 = the other side is gone) and
    /// the descriptors that came with it.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = loop {
            // SAFETY: mh points at live buffers of the sizes it states.
            let rc = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut mh, MSG_CMSG_CLOEXEC) };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut fds = Vec::new();
        // SAFETY: the kernel filled msg_control with well-formed headers up to msg_controllen;
        // CMSG_FIRSTHDR/NXTHDR walk only within it, and each SCM_RIGHTS payload holds
        // (cmsg_len - CMSG_LEN(0)) / sizeof(int) new descriptors that we now own.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for k in 0..len / std::mem::size_of::<RawFd>() {
                        let mut fd: RawFd = 0;
                        std::ptr::copy_nonoverlapping(
                            data.add(k * std::mem::size_of::<RawFd>()),
                            (&mut fd as *mut RawFd).cast::<u8>(),
                            std::mem::size_of::<RawFd>(),
                        );
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        if mh.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::other("message larger than the receive buffer"));
        }
        Ok((n, fds))
    }
}

// A dead peer is an error return, not a SIGPIPE; received descriptors are close-on-exec.
const MSG_NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
const MSG_CMSG_CLOEXEC: libc::c_int = libc::MSG_CMSG_CLOEXEC;

/// fork(2). Call only while the process has a single thread.
pub enum Forked {
    Parent { child: libc::pid_t },
    Child,
}

pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees no other thread exists, so the child's copy of the
    // address space is consistent (no lock held by a vanished thread).
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// The child asks to be killed by `sig` when its parent dies (Linux; elsewhere the closed
/// socketpair tells it).
pub fn die_with_parent(sig: libc::c_int) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments.
        cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = sig;
    Ok(())
}

/// The parent's own pid, as the child sees it (1 or a subreaper once the parent is gone).
pub fn parent_pid() -> libc::pid_t {
    // SAFETY: getppid has no failure mode.
    unsafe { libc::getppid() }
}

/// Send `sig` to `pid`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
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
    let mut st: libc::c_int = 0;
    // SAFETY: waitpid writes the status into our int.
    let rc = cvt(unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) })?;
    if rc == 0 {
        return Ok(None);
    }
    Ok(Some(if libc::WIFSIGNALED(st) {
        Exit::Signal(libc::WTERMSIG(st))
    } else {
        Exit::Code(libc::WEXITSTATUS(st))
    }))
}

/// Signals delivered through a pipe, so the parent's poll loop sees them as readable data
/// (the handler only writes one byte: async-signal-safe).
pub struct SignalPipe {
    read: OwnedFd,
}

static SIGNAL_WRITE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_WRITE_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a local. errno is saved and
        // restored so the interrupted code does not see it change.
        unsafe {
            let saved = *errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *errno_location() = saved;
        }
    }
}

#[cfg(target_os = "linux")]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: glibc's per-thread errno.
    unsafe { libc::__errno_location() }
}
#[cfg(target_os = "freebsd")]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: FreeBSD's per-thread errno.
    unsafe { libc::__error() }
}

impl SignalPipe {
    /// Route `signals` to the pipe. Call once, before any thread exists.
    pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe writes two descriptors into our array.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        // SAFETY: both were just created; we own them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&r, &w] {
            // SAFETY: fcntl on descriptors we own.
            unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
                let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        // The write end lives as long as the process (the handler may run at any time).
        let wfd = std::os::fd::IntoRawFd::into_raw_fd(w);
        SIGNAL_WRITE_FD.store(wfd, std::sync::atomic::Ordering::Relaxed);
        for &s in signals {
            // SAFETY: sigaction is plain data; the handler is an extern "C" fn that only
            // calls async-signal-safe functions.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                cvt(libc::sigaction(s, &sa, std::ptr::null_mut()))?;
            }
        }
        Ok(SignalPipe { read: r })
    }

    /// Signals that arrived since the last call.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        loop {
            // SAFETY: read into our buffer of its stated length.
            let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), 64) };
            if n <= 0 {
                return out;
            }
            out.extend(buf[..n as usize].iter().map(|b| libc::c_int::from(*b)));
        }
    }
}

impl AsRawFd for SignalPipe {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// Put the child's signal dispositions back to default (the parent's handlers write into a
/// pipe the child must not touch).
pub fn reset_signals(signals: &[libc::c_int]) {
    SIGNAL_WRITE_FD.store(-1, std::sync::atomic::Ordering::Relaxed);
    for &s in signals {
        // SAFETY: resetting a disposition to SIG_DFL.
        unsafe {
            libc::signal(s, libc::SIG_DFL);
        }
    }
}

/// poll(2) on `fds` for readability; returns which are readable (or hung up).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: an array of pollfd we own, and its length.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
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
    // SAFETY: prctl query with integer arguments.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

/// Real, effective and saved uid and gid, for the child's self-check.
pub fn ids() -> ((u32, u32), (u32, u32)) {
    // SAFETY: plain getters.
    unsafe {
        (
            (libc::getuid(), libc::geteuid()),
            (libc::getgid(), libc::getegid()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_boundaries_and_carry_descriptors() {
        let (a, b) = pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.send(b"first", &[l.as_raw_fd()]).unwrap();
        a.send(b"second", &[]).unwrap();
        let mut buf = vec![0u8; 64];
        let (n, fds) = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        assert_eq!(fds.len(), 1);
        // The descriptor is the same listening socket.
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
}
