//! Every syscall wrapper lives here, and only here is `unsafe` allowed (each block with a
//! `// SAFETY:` line). The rest of the crate sees safe functions.

pub mod command;
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

use nix::sys::resource::{Resource, getrlimit, rlim_t, setrlimit};

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
    let (cur, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    Some(rlim_to_u64(cur))
}

/// Raise the soft descriptor limit towards `want`, up to the hard limit (haproxy does the
/// same from its maxconn); returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> Option<u64> {
    let (cur, max) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let (cur_n, max_n) = (rlim_to_u64(cur), rlim_to_u64(max));
    if cur_n < want {
        let new = want.min(max_n);
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        if setrlimit(Resource::RLIMIT_NOFILE, new as rlim_t, max).is_ok() {
            return Some(new);
        }
    }
    Some(cur_n)
}

/// rlim_t is u64 on Linux and i64 on FreeBSD (where RLIM_INFINITY is i64::MAX).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn rlim_to_u64(v: rlim_t) -> u64 {
    v as u64
}

/// Register one of our socket types with the runtime's reactor.
pub fn async_fd<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: the types passed here (netlink, raw and packet sockets, the privsep channel, all
    // of this module) own their descriptor (netlink-sys's or socket2's Socket, an OwnedFd) and
    // return that same one for their whole life. tokio has no safe constructor left
    // (AsyncFd::new is deprecated as unsound: it cannot check this).
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(|e| e.into())
}
