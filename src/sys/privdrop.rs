//! Dropping privileges after every privileged resource is open: chroot, then the configured
//! user (groups, gid, uid), no new privileges, and a check that it all took.

use std::ffi::CString;
use std::io;
use std::path::Path;

fn last() -> io::Error {
    io::Error::last_os_error()
}

/// uid and gid of `name`, from the password database (read before any chroot).
pub fn lookup_user(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let cname = CString::new(name).map_err(|_| io::Error::other("user name contains NUL"))?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the right type and size.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user named {name:?}"),
        ));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// chroot to `dir` (if any), then become `user` (if any). Call before any thread starts:
/// credentials and capabilities are per thread on Linux. Returns the uid and gid taken.
pub fn drop_privileges(
    user: Option<&str>,
    dir: Option<&Path>,
) -> io::Result<Option<(libc::uid_t, libc::gid_t)>> {
    let ids = user.map(lookup_user).transpose()?;
    if let Some(dir) = dir {
        let c = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("chroot path contains NUL"))?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::chroot(c.as_ptr()) } != 0 {
            return Err(last());
        }
        // SAFETY: a static NUL-terminated path.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(last());
        }
    }
    if let Some((uid, gid)) = ids {
        let groups = [gid];
        // SAFETY: a one-element array of gid_t and its length.
        if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
            return Err(last());
        }
        // SAFETY: plain integer arguments.
        if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
            return Err(last());
        }
        // Verify: the ids took, and root cannot be regained.
        // SAFETY: plain getters and a setuid that must fail.
        let (ruid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
        if ruid != uid || euid != uid || (uid != 0 && unsafe { libc::setuid(0) } == 0) {
            return Err(io::Error::other("privileges were not dropped"));
        }
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(last());
        }
    }
    Ok(ids)
}

/// Detach from the terminal as pen does without -f: fork, new session, cwd /, stdio to
/// /dev/null. Call before any thread starts.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: no threads exist yet, so fork inside daemon(3) is safe.
    if unsafe { libc::daemon(0, 0) } != 0 {
        return Err(last());
    }
    Ok(())
}
