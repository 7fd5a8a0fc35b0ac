//! The data path's readiness poller: epoll on Linux, kqueue on FreeBSD, edge-triggered,
//! every socket registered once for both directions, plus a waker another thread can use to
//! interrupt a wait. A thin wrapper: what to do with an event is the engine's business
//! (balancer::engine).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

#[cfg(target_os = "linux")]
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
#[cfg(target_os = "freebsd")]
use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};

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

/// nix's epoll and kqueue wrappers are the bare syscalls (the same glibc calls this made by
/// hand): no cost on the data path.
#[cfg(target_os = "linux")]
pub struct Poller {
    epoll: Epoll,
}

#[cfg(target_os = "freebsd")]
pub struct Poller {
    kq: Kqueue,
}

#[cfg(target_os = "linux")]
pub struct Events {
    list: Vec<EpollEvent>,
}

#[cfg(target_os = "freebsd")]
pub struct Events {
    list: Vec<KEvent>,
}

/// Milliseconds for epoll_wait, rounded up: a wait that ends before its deadline would only
/// spin once more.
#[cfg(target_os = "linux")]
fn timeout_ms(t: Option<Duration>) -> EpollTimeout {
    match t {
        None => EpollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
        }
    }
}

#[cfg(target_os = "linux")]
impl Poller {
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Watch `fd` for both directions, edge-triggered, until it is closed (close(2) removes
    /// it: no deregistration call per connection).
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let ev = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP;
        let ev = EpollEvent::new(ev | EpollFlags::EPOLLET, token);
        Ok(self.epoll.add(fd, ev)?)
    }

    /// Watch `fd` (a listener, a waker) for reading only, edge-triggered. `shared`: other
    /// pollers watch the same listener, and each new client should wake only one of them
    /// (EPOLLEXCLUSIVE), not every data-path thread.
    pub fn add_read(&self, fd: BorrowedFd<'_>, token: u64, shared: bool) -> io::Result<()> {
        let mut ev = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        if shared {
            ev |= EpollFlags::EPOLLEXCLUSIVE;
        }
        Ok(self.epoll.add(fd, EpollEvent::new(ev, token))?)
    }

    /// Stop watching `fd`, which stays open (a listener other threads still use).
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(self.epoll.delete(fd)?)
    }

    /// Wait up to `timeout` (None: until something happens) for events.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        Ok(self.epoll.wait(&mut events.list, timeout_ms(timeout))?)
    }
}

#[cfg(target_os = "linux")]
impl Events {
    pub fn new() -> Events {
        Events {
            list: vec![EpollEvent::empty(); BATCH],
        }
    }

    /// Entry `i` of the last wait: its token and READ/WRITE/HUP bits.
    pub fn get(&self, i: usize) -> (u64, u8) {
        let ev = self.list[i];
        let e = ev.events();
        let mut bits = 0;
        if e.contains(EpollFlags::EPOLLIN) {
            bits |= READ;
        }
        if e.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            bits |= READ | HUP;
        }
        if e.contains(EpollFlags::EPOLLRDHUP) && !e.contains(EpollFlags::EPOLLERR) {
            bits |= FIN;
        }
        if e.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            bits |= WRITE;
        }
        (ev.data(), bits)
    }
}

#[cfg(target_os = "freebsd")]
impl Poller {
    pub fn new() -> io::Result<Poller> {
        let kq = Kqueue::new()?;
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        fcntl(&kq, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok(Poller { kq })
    }

    fn change(
        &self,
        fd: BorrowedFd<'_>,
        filters: &[EventFilter],
        flags: EvFlags,
        token: u64,
    ) -> io::Result<()> {
        let ev = |f: EventFilter| {
            let (ident, udata) = (fd.as_raw_fd() as usize, token as isize);
            KEvent::new(ident, f, flags, FilterFlag::empty(), 0, udata)
        };
        // At most two filters, on the stack: no allocation per registration.
        let mut changes = [ev(EventFilter::EVFILT_READ); 2];
        for (c, &f) in changes.iter_mut().zip(filters) {
            *c = ev(f);
        }
        let n = filters.len().min(changes.len());
        self.kq.kevent(&changes[..n], &mut [], None)?;
        Ok(())
    }

    /// Watch `fd` for both directions, edge-triggered (EV_CLEAR), until it is closed.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let f = [EventFilter::EVFILT_READ, EventFilter::EVFILT_WRITE];
        self.change(fd, &f, EvFlags::EV_ADD | EvFlags::EV_CLEAR, token)
    }

    /// Watch `fd` for reading only (listeners, the waker). kqueue has no EPOLLEXCLUSIVE: every
    /// thread watching a shared listener wakes, and all but one find nothing to accept.
    pub fn add_read(&self, fd: BorrowedFd<'_>, token: u64, _shared: bool) -> io::Result<()> {
        let f = [EventFilter::EVFILT_READ];
        self.change(fd, &f, EvFlags::EV_ADD | EvFlags::EV_CLEAR, token)
    }

    /// Stop watching `fd`, which stays open.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.change(fd, &[EventFilter::EVFILT_READ], EvFlags::EV_DELETE, 0)
    }

    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        Ok(self.kq.kevent(&[], &mut events.list, ts)?)
    }
}

#[cfg(target_os = "freebsd")]
impl Events {
    pub fn new() -> Events {
        let empty = KEvent::new(
            0,
            EventFilter::EVFILT_READ,
            EvFlags::empty(),
            FilterFlag::empty(),
            0,
            0,
        );
        Events {
            list: vec![empty; BATCH],
        }
    }

    pub fn get(&self, i: usize) -> (u64, u8) {
        let ev = &self.list[i];
        let filter = ev.filter().ok();
        let mut bits = if filter == Some(EventFilter::EVFILT_WRITE) {
            WRITE
        } else {
            READ
        };
        if ev.flags().contains(EvFlags::EV_EOF) && filter == Some(EventFilter::EVFILT_READ) {
            bits |= HUP;
            // fflags holds the socket error, if the end was one.
            if ev.fflags().is_empty() {
                bits |= FIN;
            }
        }
        if ev.flags().contains(EvFlags::EV_ERROR) {
            bits = READ | WRITE | HUP;
        }
        (ev.udata() as u64, bits)
    }
}

#[cfg(target_os = "linux")]
impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

#[cfg(target_os = "freebsd")]
impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.kq.as_fd().as_raw_fd()
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
    #[cfg(target_os = "linux")]
    read: nix::sys::eventfd::EventFd,
    #[cfg(not(target_os = "linux"))]
    read: std::os::fd::OwnedFd,
    #[cfg(not(target_os = "linux"))]
    write: std::os::fd::OwnedFd,
}

impl Waker {
    #[cfg(target_os = "linux")]
    pub fn new() -> io::Result<Waker> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        Ok(Waker {
            read: EventFd::from_value_and_flags(0, flags)?,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> io::Result<Waker> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Waker { read, write })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Make the poller watching `fd()` report it. A full counter or pipe already does.
    pub fn wake(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.read.write(1);
        #[cfg(not(target_os = "linux"))]
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    /// Consume the wake-ups so far (the next `wake` is a new edge).
    pub fn reset(&self) {
        // An eventfd gives its whole count to one read; a pipe holds one byte per wake.
        #[cfg(target_os = "linux")]
        let _ = self.read.read();
        #[cfg(not(target_os = "linux"))]
        {
            let mut buf = [0u8; 64];
            while nix::unistd::read(&self.read, &mut buf).is_ok_and(|n| n > 0) {}
        }
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
