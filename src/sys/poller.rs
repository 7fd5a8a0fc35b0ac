//! The data path's readiness poller: epoll on Linux, kqueue on FreeBSD, edge-triggered,
//! every socket registered once for both directions, plus a waker another thread can use to
//! interrupt a wait. A thin wrapper: what to do with an event is the engine's business
//! (balancer::engine).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The socket has (or may have) bytes or an end of stream to read.
pub const READ: u8 = 1;
/// The socket can take more bytes (or has failed: a write reports how).
pub const WRITE: u8 = 2;
/// The peer's FIN (or an error) is in: reads never block again, so READ stays set. A short
/// read does not mean drained any more: the end of stream may sit right behind the data.
pub const HUP: u8 = 4;
/// The peer's FIN, without an error: every byte it sent before is in the receive queue, so
/// a read that drains the queue has read up to the end of stream.
pub const FIN: u8 = 8;

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

/// Milliseconds for epoll_wait, rounded up: a wait that ends before its deadline would only
/// spin once more.
#[cfg(target_os = "linux")]
fn timeout_ms(t: Option<Duration>) -> libc::c_int {
    match t {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as libc::c_int
        }
    }
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

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: libc::c_int, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watch `fd` for both directions, edge-triggered, until it is closed (close(2) removes
    /// it: no deregistration call per connection).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let ev = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        self.ctl(libc::EPOLL_CTL_ADD, fd, ev, token)
    }

    /// Watch `fd` (a listener, a waker) for reading only, edge-triggered. `shared`: other
    /// pollers watch the same listener, and each new client should wake only one of them
    /// (EPOLLEXCLUSIVE), not every data-path thread.
    pub fn add_read(&self, fd: RawFd, token: u64, shared: bool) -> io::Result<()> {
        let mut ev = libc::EPOLLIN | libc::EPOLLET;
        if shared {
            ev |= libc::EPOLLEXCLUSIVE;
        }
        self.ctl(libc::EPOLL_CTL_ADD, fd, ev, token)
    }

    /// Stop watching `fd`, which stays open (a listener other threads still use).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait up to `timeout` (None: until something happens) for events.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        // SAFETY: the buffer holds `BATCH` initialised entries the kernel may overwrite.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.list.as_mut_ptr(),
                events.list.len() as libc::c_int,
                timeout_ms(timeout),
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

    /// Entry `i` of the last wait: its token and READ/WRITE/HUP bits.
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
        if e & libc::EPOLLRDHUP != 0 && e & libc::EPOLLERR == 0 {
            bits |= FIN;
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

    fn change(
        &self,
        fd: RawFd,
        filters: &[libc::c_short],
        flags: u16,
        token: u64,
    ) -> io::Result<()> {
        let mut changes: [libc::kevent; 2] =
            // SAFETY: kevent is plain old data; all-zero is a valid value.
            unsafe { std::mem::zeroed() };
        for (c, f) in changes.iter_mut().zip(filters) {
            c.ident = fd as libc::uintptr_t;
            c.filter = *f;
            c.flags = flags;
            c.udata = token as usize as *mut libc::c_void;
        }
        // SAFETY: `changes` lives across the call; no event list is asked for.
        let rc = unsafe {
            libc::kevent(
                self.fd.as_raw_fd(),
                changes.as_ptr(),
                filters.len() as libc::c_int,
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

    /// Watch `fd` for both directions, edge-triggered (EV_CLEAR), until it is closed.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let f = [libc::EVFILT_READ, libc::EVFILT_WRITE];
        self.change(fd, &f, libc::EV_ADD | libc::EV_CLEAR, token)
    }

    /// Watch `fd` for reading only (listeners, the waker). kqueue has no EPOLLEXCLUSIVE: every
    /// thread watching a shared listener wakes, and all but one find nothing to accept.
    pub fn add_read(&self, fd: RawFd, token: u64, _shared: bool) -> io::Result<()> {
        self.change(
            fd,
            &[libc::EVFILT_READ],
            libc::EV_ADD | libc::EV_CLEAR,
            token,
        )
    }

    /// Stop watching `fd`, which stays open.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.change(fd, &[libc::EVFILT_READ], libc::EV_DELETE, 0)
    }

    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the buffer holds `BATCH` entries the kernel may overwrite; `ts` outlives
        // the call.
        let n = unsafe {
            libc::kevent(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                events.list.as_mut_ptr(),
                events.list.len() as libc::c_int,
                tsp,
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
            // fflags holds the socket error, if the end was one.
            if ev.fflags == 0 {
                bits |= FIN;
            }
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

/// Interrupts another thread's `wait`: an eventfd on Linux, a pipe elsewhere. Register
/// `fd()` with `add_read`; after it fires, `reset` before looking at what was asked.
pub struct Waker {
    read: OwnedFd,
    #[cfg(not(target_os = "linux"))]
    write: OwnedFd,
}

impl Waker {
    #[cfg(target_os = "linux")]
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a new descriptor that nobody else owns.
        Ok(Waker {
            read: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> io::Result<Waker> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two new descriptors that nobody else owns.
        Ok(unsafe {
            Waker {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Make the poller watching `fd()` report it. A full counter or pipe already does.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        #[cfg(target_os = "linux")]
        let fd = self.read.as_raw_fd();
        #[cfg(not(target_os = "linux"))]
        let fd = self.write.as_raw_fd();
        // SAFETY: `one` is valid for reads of its length for the call.
        let _ = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }

    /// Consume the wake-ups so far (the next `wake` is a new edge).
    pub fn reset(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for writes of its length; the descriptor is non-blocking.
        let mut read = || unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), 64) };
        // An eventfd gives its whole count to one read; a pipe holds one byte per wake.
        #[cfg(target_os = "linux")]
        let _ = read();
        #[cfg(not(target_os = "linux"))]
        while read() > 0 {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_wait_ends_at_its_timeout_or_when_woken() {
        let p = Poller::new().unwrap();
        let w = std::sync::Arc::new(Waker::new().unwrap());
        p.add_read(w.fd(), 7, false).unwrap();
        let mut ev = Events::new();
        let t = Instant::now();
        assert_eq!(p.wait(&mut ev, Some(Duration::from_millis(30))).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(30));
        let w2 = w.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.wake();
        });
        let t = Instant::now();
        assert_eq!(p.wait(&mut ev, None).unwrap(), 1);
        assert_eq!(ev.get(0).0, 7);
        assert!(t.elapsed() < Duration::from_secs(5));
        th.join().unwrap();
        w.reset();
        // Reset: nothing pending until the next wake.
        assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 0);
        w.wake();
        assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 1);
    }
}
