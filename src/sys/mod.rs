//! Every syscall wrapper lives here, and only here is `unsafe` allowed (each block with a
//! `// SAFETY:` line). The rest of the crate sees safe functions.

#[cfg(target_os = "linux")]
pub mod netlink;
pub mod nft;
// The layouts are tested on every OS; only FreeBSD opens /dev/pf.
#[cfg(any(target_os = "freebsd", test))]
pub mod pf;
pub mod poller;
pub mod privdrop;
pub mod privsep;
pub mod process;
#[cfg(target_os = "linux")]
pub mod raw;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod splice;

use std::io;

/// Errors that mean this host ran out of a resource (descriptors, buffers, ports), not that
/// the peer failed: they must not blacklist a server, and accepting backs off on them.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// A byte count returned by a syscall, or the error its -1 stands for.
#[cfg(target_os = "linux")]
fn byte_count(n: i64) -> io::Result<usize> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The soft limit on open descriptors (RLIMIT_NOFILE), for start-up warnings.
pub fn nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    // rlim_t is u64 on Linux and i64 on FreeBSD (where RLIM_INFINITY is i64::MAX).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let cur = r.rlim_cur as u64;
    (rc == 0).then_some(cur)
}

/// Raise the soft descriptor limit towards `want`, up to the hard limit (haproxy does the
/// same from its maxconn); returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let (cur, max) = (r.rlim_cur as u64, r.rlim_max as u64);
        if cur < want {
            let new = want.min(max);
            #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
            {
                r.rlim_cur = new as libc::rlim_t;
            }
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                return Some(new);
            }
        }
        Some(cur)
    }
}

/// Register one of our socket types with the runtime's reactor.
pub fn async_fd<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: the types passed here (netlink, raw and packet sockets of this module) own their
    // descriptor as an OwnedFd and return that same descriptor for their whole life.
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(|e| e.into())
}
