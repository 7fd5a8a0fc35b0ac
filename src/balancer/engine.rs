//! The balancer's socket engine: one edge-triggered poller (epoll, kqueue) for every client
//! and server socket, itself registered with the tokio runtime, and one driver task that
//! drains it.
//!
//! Why not tokio's own TcpStream: a keep-alive request through a relay is four syscalls, and
//! with tokio around them each event also cost a reactor dispatch, a waker, a task schedule
//! and a task poll, which made fwlb's CPU per request 9 % worse than pen's event loop. Here a
//! connection's task sets up (accept, connect with failover, PROXY header) with async reads
//! and writes on the engine's sockets, then hands both to `relay`, and from then on events go
//! straight from the poller to the relay's state machine (balancer::relay). The task wakes
//! again only when the relay ends, or on its idle-timeout tick.
//!
//! One engine per runtime worker; everything in it is behind one mutex, taken once per batch
//! of events by the driver and once per operation by a connection task (uncontended with one
//! worker, the default).

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::error;

use super::ConnInfo;
use super::relay::{End, Pumped, Relay, SCRATCH};
use crate::sys;
use crate::sys::poller::{BATCH, Events, Poller, READ, WRITE};
use crate::wire::http::RequestRewriter;

pub struct Engine {
    poller: Poller,
    inner: Mutex<Inner>,
    /// Wakes the driver for relays queued outside it (a relay started with more to move).
    kick: Notify,
}

struct Inner {
    socks: Vec<Sock>,
    free_socks: Vec<u32>,
    relays: Vec<RelaySlot>,
    free_relays: Vec<u32>,
    /// Relays to pump on the driver's next pass.
    queue: Vec<u32>,
    events: Events,
    scratch: Box<[u8]>,
}

/// One registered socket.
#[derive(Default)]
struct Sock {
    /// Bumped when the slot is freed: a stale event for a closed socket carries the old one.
    generation: u32,
    live: bool,
    /// READ/WRITE as last reported, while no relay runs on the socket.
    ready: u8,
    /// Bumped per event, so clearing after EAGAIN cannot lose an event that came meanwhile.
    tick: u32,
    waker: Option<Waker>,
    /// The relay running on this socket and which side it is (0 client, 1 server).
    relay: Option<(u32, usize)>,
}

#[derive(Default)]
struct RelaySlot {
    relay: Option<Relay>,
    socks: [u32; 2],
    queued: bool,
    end: Option<io::Result<()>>,
    waker: Option<Waker>,
}

fn token(idx: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(idx)
}

impl Engine {
    /// A new engine and its driver task on the current runtime.
    pub fn start() -> io::Result<Arc<Engine>> {
        let poller = Poller::new()?;
        // SAFETY: the poller's descriptor stays open while the driver task holding `afd`
        // runs: the task holds the Engine, which owns the descriptor.
        let afd = unsafe {
            AsyncFd::register_with_interest(PollFd(poller.as_raw_fd()), Interest::READABLE)
        }
        .map_err(io::Error::from)?;
        let engine = Arc::new(Engine {
            poller,
            inner: Mutex::new(Inner {
                socks: Vec::new(),
                free_socks: Vec::new(),
                relays: Vec::new(),
                free_relays: Vec::new(),
                queue: Vec::new(),
                events: Events::new(),
                scratch: vec![0; SCRATCH].into_boxed_slice(),
            }),
            kick: Notify::new(),
        });
        tokio::spawn(drive(engine.clone(), afd));
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the data path with it: the state stays usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take `fd` (a non-blocking socket) into the engine.
    pub fn register(self: &Arc<Self>, fd: OwnedFd) -> io::Result<Conn> {
        let mut g = self.lock();
        let idx = match g.free_socks.pop() {
            Some(i) => i,
            None => {
                g.socks.push(Sock::default());
                (g.socks.len() - 1) as u32
            }
        };
        let s = &mut g.socks[idx as usize];
        let generation = s.generation;
        if let Err(e) = self.poller.add(fd.as_raw_fd(), token(idx, generation)) {
            g.free_socks.push(idx);
            return Err(e);
        }
        let s = &mut g.socks[idx as usize];
        s.live = true;
        s.ready = 0;
        Ok(Conn {
            engine: self.clone(),
            idx,
            fd,
        })
    }

    /// One pass: fetch the poller's events, apply them, pump the relays they concern.
    /// True when there is more to do right away (a full batch, busy relays).
    fn turn(&self) -> bool {
        let mut g = self.lock();
        let inner = &mut *g;
        let n = match self.poller.wait(&mut inner.events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                error!(target: "lb", "engine poller: {e}");
                0
            }
        };
        for i in 0..n {
            let (tok, bits) = inner.events.get(i);
            let (idx, generation) = (tok as u32, (tok >> 32) as u32);
            let Some(s) = inner.socks.get_mut(idx as usize) else {
                continue;
            };
            if !s.live || s.generation != generation {
                continue;
            }
            match s.relay {
                Some((r, side)) => {
                    let slot = &mut inner.relays[r as usize];
                    if let Some(relay) = slot.relay.as_mut() {
                        relay.ready[side] |= bits;
                        if !slot.queued {
                            slot.queued = true;
                            inner.queue.push(r);
                        }
                    }
                }
                None => {
                    s.ready |= bits;
                    s.tick = s.tick.wrapping_add(1);
                    if let Some(w) = s.waker.take() {
                        w.wake();
                    }
                }
            }
        }
        // `pump` queues the still-busy relays again, for the next pass.
        for r in std::mem::take(&mut inner.queue) {
            inner.pump(r);
        }
        n == BATCH || !inner.queue.is_empty()
    }

    /// Relay between `client` and `server` until both ends close or one fails. Counters go
    /// to `info.bytes`. The future returns the rewriter back with the end.
    pub fn relay<'a>(
        self: &Arc<Self>,
        client: &'a Conn,
        server: &'a Conn,
        info: Arc<ConnInfo>,
        rewriter: Option<Box<RequestRewriter>>,
    ) -> RelayFuture<'a> {
        let mut g = self.lock();
        let inner = &mut *g;
        let id = match inner.free_relays.pop() {
            Some(i) => i,
            None => {
                inner.relays.push(RelaySlot::default());
                (inner.relays.len() - 1) as u32
            }
        };
        let ready = [
            inner.socks[client.idx as usize].ready,
            inner.socks[server.idx as usize].ready,
        ];
        inner.socks[client.idx as usize].relay = Some((id, 0));
        inner.socks[server.idx as usize].relay = Some((id, 1));
        let slot = &mut inner.relays[id as usize];
        *slot = RelaySlot {
            relay: Some(Relay::new(
                [client.fd.as_raw_fd(), server.fd.as_raw_fd()],
                ready,
                info,
                rewriter,
            )),
            socks: [client.idx, server.idx],
            ..RelaySlot::default()
        };
        // Whatever is ready already (the request that came with the connection) moves now.
        inner.pump(id);
        let kick = !inner.queue.is_empty();
        drop(g);
        if kick {
            self.kick.notify_one();
        }
        RelayFuture {
            engine: self.clone(),
            id,
            done: false,
            _conns: std::marker::PhantomData,
        }
    }
}

impl Inner {
    fn pump(&mut self, r: u32) {
        let slot = &mut self.relays[r as usize];
        slot.queued = false;
        let Some(relay) = slot.relay.as_mut() else {
            return;
        };
        if slot.end.is_some() {
            return;
        }
        match relay.pump(&mut self.scratch) {
            Pumped::Blocked => {}
            Pumped::Busy => {
                slot.queued = true;
                self.queue.push(r);
            }
            Pumped::Done(res) => {
                slot.end = Some(res);
                let ready = relay.ready;
                let socks = slot.socks;
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
                self.detach(socks, ready);
            }
        }
    }

    /// The relay is over: its sockets report to their own readiness (and wakers) again.
    fn detach(&mut self, socks: [u32; 2], ready: [u8; 2]) {
        for (i, idx) in socks.into_iter().enumerate() {
            if let Some(s) = self.socks.get_mut(idx as usize) {
                s.relay = None;
                s.ready = ready[i];
                s.tick = s.tick.wrapping_add(1);
            }
        }
    }
}

/// Keep the waker to wake, cloning only when it changed.
fn store_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The driver: sleeps in the runtime's reactor until the poller has events, then drains it.
async fn drive(engine: Arc<Engine>, afd: AsyncFd<PollFd>) {
    loop {
        tokio::select! {
            biased;
            r = afd.readable() => match r {
                // Cleared before draining: an event that arrives during the drain makes the
                // poller readable again, so none is lost.
                Ok(mut g) => g.clear_ready(),
                Err(e) => {
                    error!(target: "lb", "engine poller lost its reactor registration: {e}");
                    return;
                }
            },
            _ = engine.kick.notified() => {}
        }
        while engine.turn() {
            // More work waiting: let the rest of the runtime (accepts, control) run first.
            tokio::task::yield_now().await;
        }
    }
}

/// The poller's descriptor as the runtime sees it (owned by the Engine, which outlives the
/// driver task holding this).
struct PollFd(RawFd);

impl AsRawFd for PollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A socket in the engine. Dropping it closes the socket.
pub struct Conn {
    engine: Arc<Engine>,
    idx: u32,
    fd: OwnedFd,
}

impl Conn {
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Ready for `want`: the event tick (for `clear_ready`) and all the readiness bits.
    fn poll_ready(&self, cx: &mut Context<'_>, want: u8) -> Poll<(u32, u8)> {
        let mut g = self.engine.lock();
        let s = &mut g.socks[self.idx as usize];
        if s.ready & want != 0 {
            return Poll::Ready((s.tick, s.ready));
        }
        store_waker(&mut s.waker, cx);
        Poll::Pending
    }

    fn clear_ready(&self, want: u8, tick: u32) {
        let mut g = self.engine.lock();
        let s = &mut g.socks[self.idx as usize];
        if s.tick == tick {
            if want == READ {
                sys::poller::drained(&mut s.ready);
            } else {
                s.ready &= !want;
            }
        }
    }

    async fn ready(&self, want: u8) -> (u32, u8) {
        std::future::poll_fn(|cx| self.poll_ready(cx, want)).await
    }

    /// Read what is there (0 = end of stream), waiting for it if need be.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (tick, _) = self.ready(READ).await;
            match sys::socket::recv(self.fd.as_raw_fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_ready(READ, tick),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let (tick, _) = self.ready(WRITE).await;
            match sys::socket::send(self.fd.as_raw_fd(), buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_ready(WRITE, tick),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Wait for a non-blocking connect to finish; its error, if it failed.
    pub async fn connected(&self) -> io::Result<()> {
        let (_, ready) = self.ready(WRITE).await;
        // On Linux a failed connect always reports EPOLLERR (HUP here): writable without it
        // is established, and the getsockopt(2) per connection can be saved.
        #[cfg(target_os = "linux")]
        if ready & sys::poller::HUP == 0 {
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = ready;
        match sys::socket::take_error(&self.fd)? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut g = self.engine.lock();
        let inner = &mut *g;
        let s = &mut inner.socks[self.idx as usize];
        // Stale events for this slot (the descriptor is closed right after) carry the old
        // generation and are ignored.
        s.generation = s.generation.wrapping_add(1);
        s.live = false;
        s.waker = None;
        s.relay = None;
        inner.free_socks.push(self.idx);
    }
}

/// A relay in progress, as its connection task sees it.
pub struct RelayFuture<'a> {
    engine: Arc<Engine>,
    id: u32,
    done: bool,
    /// The relay uses both sockets: they must outlive it.
    _conns: std::marker::PhantomData<&'a Conn>,
}

impl RelayFuture<'_> {
    /// Stop the relay now (idle timeout); the sockets stay open. Gives the rewriter back.
    pub fn cancel(mut self) -> Option<Box<RequestRewriter>> {
        self.stop().and_then(|(r, _)| r.rewriter)
    }

    /// Take the relay out of the engine, with its result if it ended.
    fn stop(&mut self) -> Option<(Relay, Option<io::Result<()>>)> {
        if self.done {
            return None;
        }
        self.done = true;
        let mut g = self.engine.lock();
        let inner = &mut *g;
        let slot = std::mem::take(&mut inner.relays[self.id as usize]);
        inner.free_relays.push(self.id);
        let relay = slot.relay?;
        if slot.end.is_none() {
            // Still running: the sockets go back to reporting to their own readiness.
            inner.detach(slot.socks, relay.ready);
        }
        Some((relay, slot.end))
    }
}

impl Future for RelayFuture<'_> {
    type Output = (End, Option<Box<RequestRewriter>>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut g = self.engine.lock();
            let slot = &mut g.relays[self.id as usize];
            if slot.end.is_none() {
                store_waker(&mut slot.waker, cx);
                return Poll::Pending;
            }
        }
        let Some((relay, Some(end))) = self.stop() else {
            return Poll::Ready((End::Error(io::ErrorKind::Other.into()), None));
        };
        let end = match (end, relay.refused) {
            (Ok(()), Some(e)) => End::BadRequest(e),
            (Ok(()), None) => End::Closed,
            (Err(e), _) => End::Error(e),
        };
        Poll::Ready((end, relay.rewriter))
    }
}

impl Drop for RelayFuture<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    /// A loopback connection: the application's blocking end, and the engine's end.
    fn pair() -> (TcpStream, OwnedFd) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let app = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (app, ours.into())
    }

    fn info() -> Arc<ConnInfo> {
        let a = "127.0.0.1:1".parse().unwrap();
        Arc::new(ConnInfo {
            id: 1,
            client: a,
            peer: a,
            listen: a,
            upstream_fd: -1,
            server: a,
            server_index: Some(0),
            started: Instant::now(),
            bytes: Default::default(),
        })
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn relays_both_ways_and_passes_each_half_close_on() {
        let engine = Engine::start().unwrap();
        let (mut client_app, c) = pair();
        let (mut server_app, s) = pair();
        let (c, s) = (engine.register(c).unwrap(), engine.register(s).unwrap());
        let info = info();
        // The applications block: they run on threads of their own, the engine on this one.
        let client = std::thread::spawn(move || {
            client_app.write_all(b"request").unwrap();
            client_app.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            client_app.read_to_end(&mut got).unwrap();
            got
        });
        let server = std::thread::spawn(move || {
            let mut got = Vec::new();
            // Ends only if the client's FIN was passed on while the server still sends.
            server_app.read_to_end(&mut got).unwrap();
            server_app.write_all(b"answer after the FIN").unwrap();
            got
        });
        let (end, rw) = engine.relay(&c, &s, info.clone(), None).await;
        assert!(matches!(end, End::Closed), "{end:?}");
        assert!(rw.is_none());
        // The balancer closes both sockets after the relay: the client's last EOF is that.
        drop((c, s));
        assert_eq!(server.join().unwrap(), b"request");
        assert_eq!(client.join().unwrap(), b"answer after the FIN");
        assert_eq!(info.bytes.up.load(Ordering::Relaxed), 7);
        assert_eq!(info.bytes.down.load(Ordering::Relaxed), 20);
    }

    #[tokio::test]
    async fn an_echo_of_8_mib_each_way_keeps_every_byte() {
        // Bulk both ways at once: backpressure, partial writes and the splice switch.
        let engine = Engine::start().unwrap();
        let (client_app, c) = pair();
        let (server_app, s) = pair();
        let (c, s) = (engine.register(c).unwrap(), engine.register(s).unwrap());
        let data = pattern(8 << 20, 7);
        let sent = data.clone();
        let mut writer = client_app.try_clone().unwrap();
        let send = std::thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let echo = std::thread::spawn(move || {
            let mut r = server_app.try_clone().unwrap();
            let mut w = server_app;
            std::io::copy(&mut r, &mut w).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let recv = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut r = client_app;
            r.read_to_end(&mut got).unwrap();
            got
        });
        let info = info();
        let (end, _) = engine.relay(&c, &s, info.clone(), None).await;
        assert!(matches!(end, End::Closed), "{end:?}");
        drop((c, s));
        send.join().unwrap();
        echo.join().unwrap();
        let got = recv.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the echoed bytes differ");
        assert_eq!(info.bytes.up.load(Ordering::Relaxed), 8 << 20);
        assert_eq!(info.bytes.down.load(Ordering::Relaxed), 8 << 20);
    }

    #[tokio::test]
    async fn a_cancelled_relay_gives_the_sockets_back() {
        let engine = Engine::start().unwrap();
        let (mut client_app, c) = pair();
        let (_server_app, s) = pair();
        let (c, s) = (engine.register(c).unwrap(), engine.register(s).unwrap());
        let running = engine.relay(&c, &s, info(), None);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(running.cancel().is_none());
        // After the cancel the engine reports the client's bytes to a reader again.
        client_app.write_all(b"late").unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the read after the cancel never woke")
            .unwrap();
        assert_eq!(&buf[..n], b"late");
    }

    #[tokio::test]
    async fn a_reset_ends_the_relay_with_an_error() {
        let engine = Engine::start().unwrap();
        let (client_app, c) = pair();
        let (_server_app, s) = pair();
        let (c, s) = (engine.register(c).unwrap(), engine.register(s).unwrap());
        // SO_LINGER 0: close(2) sends a reset.
        socket2::SockRef::from(&client_app)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client_app);
        let (end, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            engine.relay(&c, &s, info(), None),
        )
        .await
        .expect("a reset must end the relay");
        assert!(matches!(end, End::Error(_)), "{end:?}");
    }

    #[tokio::test]
    async fn slots_of_closed_sockets_are_reused() {
        let engine = Engine::start().unwrap();
        for _ in 0..50 {
            let (mut app, fd) = pair();
            let conn = engine.register(fd).unwrap();
            app.write_all(b"x").unwrap();
            let mut buf = [0u8; 4];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("read never woke")
                .unwrap();
            assert_eq!(n, 1);
        }
        assert_eq!(engine.lock().socks.len(), 1, "one slot, reused");
    }
}
