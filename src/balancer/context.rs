//! What a connection (balancer::session) needs from the data-path thread that runs it: the
//! thread's poller to watch its sockets, its deadlines, its scratch buffer, its queue of
//! relays to pump again and this pass's time. The token layout of the poller's registrations
//! lives here too, so what `register` encodes the engine decodes with `source`.
//!
//! Dependencies point one way: engine -> session -> context (and engine -> context). This
//! module knows neither the engine nor a session; the balancer (mod.rs) asks it only which
//! data-path thread is the calling one.

use std::cell::Cell;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::relay::SCRATCH;
use super::timers::Timers;
use crate::sys::poller::{Events, Poller, Waker};

/// Token layout: the registration serial in the high 32 bits; in the low 32, a connection's
/// slot and side (slot << 1 | side), a listener (LISTENER | index), or the waker.
const LISTENER: u32 = 1 << 31;
const WAKER: u32 = u32::MAX;
/// Connection slots must fit the token below the listener bit.
pub const MAX_SLOTS: usize = 1 << 30;

fn token(serial: u32, low: u32) -> u64 {
    (u64::from(serial) << 32) | u64::from(low)
}

/// Whose socket a poller event is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// The thread's waker: commands are waiting.
    Waker,
    Listener {
        index: usize,
        serial: u32,
    },
    Connection {
        idx: u32,
        side: usize,
        serial: u32,
    },
}

/// Where the event with token `tok` belongs.
pub fn source(tok: u64) -> Source {
    let (serial, low) = ((tok >> 32) as u32, tok as u32);
    if low == WAKER {
        Source::Waker
    } else if low & LISTENER != 0 {
        let index = (low & !LISTENER) as usize;
        Source::Listener { index, serial }
    } else {
        let (idx, side) = (low >> 1, (low & 1) as usize);
        Source::Connection { idx, side, serial }
    }
}

thread_local! {
    /// The waker of the data-path thread this is, if it is one.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Whether `w` is the waker of the calling thread (which needs no wake-up: it looks at its
/// listeners after every pass).
pub fn is_current(w: &Arc<Waker>) -> bool {
    CURRENT.with(|c| c.get() == Arc::as_ptr(w) as usize)
}

/// A data-path thread's own resources, lent to the connection it is handling.
pub struct Ctx {
    poller: Poller,
    pub timers: Timers,
    pub scratch: Box<[u8]>,
    /// Relays to pump once this batch of events is in.
    queue: Vec<u32>,
    /// This pass's time.
    pub now: Instant,
    serial: u32,
}

impl Ctx {
    /// A context whose poller watches `waker`.
    pub fn new(waker: &Waker) -> io::Result<Ctx> {
        let poller = Poller::new()?;
        poller.add_read(waker.fd(), token(0, WAKER), false)?;
        Ok(Ctx {
            poller,
            timers: Timers::default(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            queue: Vec::new(),
            now: Instant::now(),
            serial: 0,
        })
    }

    /// Mark the calling thread as the one `waker` wakes (see `is_current`).
    pub fn enter(waker: &Arc<Waker>) {
        CURRENT.with(|c| c.set(Arc::as_ptr(waker) as usize));
    }

    fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1);
        self.serial
    }

    /// Watch a connection's socket; the serial its events will carry.
    pub fn register(&mut self, fd: BorrowedFd<'_>, idx: u32, side: usize) -> io::Result<u32> {
        let serial = self.next_serial();
        self.poller.add(fd, token(serial, idx << 1 | side as u32))?;
        Ok(serial)
    }

    /// Watch listener number `index` for clients; the serial its events will carry.
    pub fn register_listener(
        &mut self,
        fd: BorrowedFd<'_>,
        index: usize,
        shared: bool,
    ) -> io::Result<u32> {
        let serial = self.next_serial();
        let tok = token(serial, LISTENER | index as u32);
        self.poller.add_read(fd, tok, shared)?;
        Ok(serial)
    }

    /// Stop watching a listener (which other threads may still use).
    pub fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.poller.delete(fd)
    }

    /// Wait for events up to `timeout`, then stamp the pass's time.
    pub fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let n = self.poller.wait(events, timeout);
        self.now = Instant::now();
        n
    }

    /// Pump relay `idx` again after this batch of events.
    pub fn requeue(&mut self, idx: u32) {
        self.queue.push(idx);
    }

    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The relays queued so far; the queue starts over empty.
    pub fn take_queue(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_says_whose_socket_it_is() {
        assert_eq!(source(token(0, WAKER)), Source::Waker);
        let l = source(token(7, LISTENER | 3));
        assert_eq!(
            l,
            Source::Listener {
                index: 3,
                serial: 7
            }
        );
        let top = (MAX_SLOTS - 1) as u32;
        let c = source(token(u32::MAX, top << 1 | 1));
        let want = Source::Connection {
            idx: top,
            side: 1,
            serial: u32::MAX,
        };
        assert_eq!(c, want);
    }
}
