//! Dropping privileges after every privileged resource is open: chroot, then the configured
//! user (groups, then real, effective and saved gid and uid), no new privileges, and a check
//! that it all took. All of it through nix's safe wrappers.

use std::io;
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

/// uid and gid of `name`, from the password database (read before any chroot).
pub fn lookup_user(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    if name.contains('\0') {
        return Err(io::Error::other("user name contains NUL"));
    }
    match User::from_name(name)? {
        Some(u) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user named {name:?}"),
        )),
    }
}

/// chroot to `dir` (if any), then become `user` (if any). Call before any thread starts:
/// credentials and capabilities are per thread on Linux. Returns the uid and gid taken.
pub fn drop_privileges(
    user: Option<&str>,
    dir: Option<&Path>,
) -> io::Result<Option<(libc::uid_t, libc::gid_t)>> {
    let ids = user.map(lookup_user).transpose()?;
    if let Some(dir) = dir {
        nix::unistd::chroot(dir)?;
        nix::unistd::chdir("/")?;
    }
    if let Some((uid, gid)) = ids {
        become_user(Uid::from_raw(uid), Gid::from_raw(gid))?;
    }
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_no_new_privs()?;
    Ok(ids)
}

/// Only `gid` as group, then all three gids and uids (setresgid/setresuid: no saved id is
/// left to switch back to), then the proof: the ids are what was asked, and root cannot be
/// regained.
fn become_user(uid: Uid, gid: Gid) -> io::Result<()> {
    nix::unistd::setgroups(&[gid])?;
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    let u = nix::unistd::getresuid()?;
    let g = nix::unistd::getresgid()?;
    let took =
        [u.real, u.effective, u.saved] == [uid; 3] && [g.real, g.effective, g.saved] == [gid; 3];
    let root = Uid::from_raw(0);
    // Once not root, setuid(0) must fail; if it works, something kept the privilege.
    let regained = !uid.is_root() && nix::unistd::setuid(root).is_ok();
    if !took || regained {
        return Err(io::Error::other("privileges were not dropped"));
    }
    Ok(())
}

/// Detach from the terminal as pen does without -f: fork, new session, cwd /, stdio to
/// /dev/null. Call before any thread starts.
pub fn daemonize() -> io::Result<()> {
    nix::unistd::daemon(false, false).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        let e = lookup_user("no-such-user-fwlb").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(lookup_user("ro\0ot").is_err());
    }
}
