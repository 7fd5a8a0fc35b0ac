//! Every syscall wrapper lives here, and only here is `unsafe` allowed (each block with a
//! `// SAFETY:` line). The rest of the crate sees safe functions.

pub mod privdrop;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod splice;

use std::io;

/// Errors that mean this host ran out of a resource (descriptors, buffers, ports), not that
/// the peer failed: they must not blacklist a server, and the accept loop backs off on them.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
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
