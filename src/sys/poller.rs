//! The relay engine's readiness poller: epoll on Linux, kqueue on FreeBSD, edge-triggered,
//! every socket registered once for both directions. A thin wrapper: what to do with an event
//! is the engine's business (balancer::engine).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The socket has (or may have) bytes or an end of stream to read.
pub const READ: u8 = 1;
/// The socket can take more bytes (or has failed: a write reports how).
pub const WRITE: u8 = 2;
/// The peer's FIN (or an error) is in: reads never block again, so READ stays set. A short
/// read does not mean drained any more: the end of stream may sit right behind the data.
pub const HUP: u8 = 4;

/// After a read found no more data (EAGAIN, or a short read): READ goes until the next event,
/// unless the end of stream is known to be there.
pub fn drained(ready: &mut u8) {
    if *ready & HUP == 0 {
        *ready &= !READ;
    }
}

/// Events fetched by one `wait`.
pub const BATCH: usize = 256;

pub struct Poller {
    fd: OwnedFd,
}

#[cfg(target_os = "linux")]
pub struct Events {
    list: Vec<libc::epoll_event>,
}

#[cfg(target_os = "freebsd")]
pub struct Events {
    list: Vec<libc::kevent>,
}

#[cfg(target_os = "linux")]
impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 returned a new descriptor that nobody else owns.
        Ok(Poller {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watch `fd` for both directions, edge-triggered, until it is closed (close(2) removes
    /// it: no deregistration call per connection).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fetch what is ready now, without blocking (the runtime's reactor tells when to call).
    pub fn wait(&self, events: &mut Events) -> io::Result<usize> {
        // SAFETY: the buffer holds `BATCH` initialised entries the kernel may overwrite.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.list.as_mut_ptr(),
                events.list.len() as libc::c_int,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(target_os = "linux")]
impl Events {
    pub fn new() -> Events {
        Events {
            list: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
        }
    }

    /// Entry `i` of the last wait: its token and READ/WRITE bits.
    pub fn get(&self, i: usize) -> (u64, u8) {
        let ev = self.list[i];
        let e = ev.events as libc::c_int;
        let mut bits = 0;
        if e & libc::EPOLLIN != 0 {
            bits |= READ;
        }
        if e & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            bits |= READ | HUP;
        }
        if e & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            bits |= WRITE;
        }
        (ev.u64, bits)
    }
}

#[cfg(target_os = "freebsd")]
impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::kqueue() };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: kqueue returned a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on the descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Poller { fd })
    }

    /// Watch `fd` for both directions, edge-triggered (EV_CLEAR), until it is closed.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let change = |filter| libc::kevent {
            ident: fd as libc::uintptr_t,
            filter,
            flags: libc::EV_ADD | libc::EV_CLEAR,
            fflags: 0,
            data: 0,
            udata: token as usize as *mut libc::c_void,
            ext: [0; 4],
        };
        let changes = [change(libc::EVFILT_READ), change(libc::EVFILT_WRITE)];
        // SAFETY: `changes` lives across the call; no event list is asked for.
        let rc = unsafe {
            libc::kevent(
                self.fd.as_raw_fd(),
                changes.as_ptr(),
                changes.len() as libc::c_int,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn wait(&self, events: &mut Events) -> io::Result<usize> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the buffer holds `BATCH` entries the kernel may overwrite.
        let n = unsafe {
            libc::kevent(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                events.list.as_mut_ptr(),
                events.list.len() as libc::c_int,
                &zero,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

// SAFETY: the kevent entries' udata pointers are our tokens, never dereferenced.
#[cfg(target_os = "freebsd")]
unsafe impl Send for Events {}

#[cfg(target_os = "freebsd")]
impl Events {
    pub fn new() -> Events {
        // SAFETY: kevent is plain old data; all-zero is a valid value.
        Events {
            list: vec![unsafe { std::mem::zeroed::<libc::kevent>() }; BATCH],
        }
    }

    pub fn get(&self, i: usize) -> (u64, u8) {
        let ev = &self.list[i];
        let mut bits = if ev.filter == libc::EVFILT_WRITE {
            WRITE
        } else {
            READ
        };
        if ev.flags & libc::EV_EOF != 0 && ev.filter == libc::EVFILT_READ {
            bits |= HUP;
        }
        if ev.flags & libc::EV_ERROR != 0 {
            bits = READ | WRITE | HUP;
        }
        (ev.udata as usize as u64, bits)
    }
}

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}
