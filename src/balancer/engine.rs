//! The data path: `threads` event-loop threads (pen's loop, haproxy's nbthread), each with its
//! own edge-triggered poller (epoll, kqueue), blocking in it with the next deadline as its
//! timeout. A thread accepts on every listener, connects, fails over and relays its
//! connections (balancer::session) straight from its events: no task, future, waker or
//! reactor in between, and no lock but the balancer's bookkeeping one.
//!
//! Why not the tokio runtime: there a new connection cost a task spawn, several polls, a timer
//! entry and two epoll_wait(2) per wake-up (the runtime's and a nested poller's); fwlb spent 4x
//! pen's user-space CPU per new connection and 12 % more CPU in all. The tokio runtime still
//! runs everything else (control port, VRRP, signals, the privileged parent's channel) on its
//! own thread, which a busy data path can no longer delay: VRRP adverts keep their cadence
//! under any load.
//!
//! The runtime talks to the threads through a command queue and a waker (an eventfd): add a
//! listener, remove one (acknowledged, so the port is closed when `Listening::close` returns),
//! stop. Listeners are shared by every thread (EPOLLEXCLUSIVE: a new client wakes one).
//!
//! Dependencies point one way: engine -> session -> context. The engine owns the sessions and
//! lends each one its thread's context (balancer::context) for the event at hand; a session
//! never sees the engine.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::Balancer;
use super::context::{self, Ctx, MAX_SLOTS, Source};
use super::session::{Flow, Session};
use crate::sys;
use crate::sys::poller::{Events, Waker};

/// Clients accepted from one listener per pass before the other sockets get their turn.
const ACCEPT_BATCH: usize = 64;

/// A listener the runtime hands to a thread.
struct Listen {
    id: u64,
    lb: Arc<Balancer>,
    sock: Arc<TcpListener>,
    addr: SocketAddr,
    shared: bool,
}

enum Cmd {
    Listen(Listen),
    Unlisten {
        id: u64,
        done: tokio::sync::oneshot::Sender<()>,
    },
    Stop,
}

struct Listener {
    id: u64,
    lb: Arc<Balancer>,
    sock: Arc<TcpListener>,
    addr: SocketAddr,
    serial: u32,
    /// The poller reported clients since the last EAGAIN (edge-triggered).
    ready: bool,
    /// Out of descriptors: no accept before this.
    backoff_until: Option<Instant>,
    backoff: Duration,
    exhausted_since: Option<Instant>,
}

/// What one accept(2) on a listener gave.
enum Accept {
    Client(OwnedFd, SocketAddr),
    /// That client was gone already; the listener may have more.
    Again,
    /// Nothing more now: the backlog is empty, a limit is reached, or it backs off.
    Stop,
}

impl Listener {
    /// Take one client from the backlog, if the limits and the backoff allow.
    fn accept_one(&mut self, now: Instant) -> Accept {
        if !self.ready || self.backoff_until.is_some_and(|t| now < t) {
            return Accept::Stop;
        }
        self.backoff_until = None;
        // max_connections, or clients waiting for descriptors: the new ones wait in the
        // kernel's backlog, and a freed slot wakes this thread.
        if !self.lb.admit() {
            if self.lb.waiting_locally() && self.exhausted_since.is_none() {
                // The same episode as an EMFILE from accept(2) itself: one line for both.
                self.exhausted_since = Some(now);
                warn!(target: "lb", balancer = %self.lb.cfg.name, listen = %self.addr,
                    "cannot accept: clients already accepted wait for descriptors or ports to reach their server; backing off until they free up");
            }
            return Accept::Stop;
        }
        match sys::socket::accept(self.sock.as_fd()) {
            Ok((fd, peer)) => {
                if let Some(t) = self.exhausted_since.take() {
                    info!(target: "lb", balancer = %self.lb.cfg.name,
                        "accepting again after {} ms of descriptor exhaustion", t.elapsed().as_millis());
                    self.backoff = Duration::from_millis(10);
                }
                self.lb.accepted();
                Accept::Client(fd, peer)
            }
            Err(e) => {
                self.lb.leave();
                self.accept_failed(e, now)
            }
        }
    }

    fn accept_failed(&mut self, e: io::Error, now: Instant) -> Accept {
        if e.kind() == io::ErrorKind::WouldBlock {
            self.ready = false;
            return Accept::Stop;
        }
        if sys::is_resource_exhaustion(&e) {
            self.lb.out_of_descriptors();
            if self.exhausted_since.is_none() {
                self.exhausted_since = Some(now);
                warn!(target: "lb", balancer = %self.lb.cfg.name, listen = %self.addr,
                    "cannot accept: {e}; backing off until descriptors free up");
            }
            self.backoff_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
            return Accept::Stop;
        }
        // ECONNABORTED and friends: that client is gone, the listener is fine.
        if e.kind() != io::ErrorKind::Interrupted {
            debug!(target: "lb", balancer = %self.lb.cfg.name, "accept: {e}");
        }
        Accept::Again
    }
}

struct Engine {
    ctx: Ctx,
    sessions: Vec<Option<Session>>,
    free: Vec<u32>,
    listeners: Vec<Option<Listener>>,
    rx: mpsc::Receiver<Cmd>,
    waker: Arc<Waker>,
    events: Events,
    stop: bool,
}

impl Engine {
    fn run(mut self) {
        Ctx::enter(&self.waker);
        while !self.stop {
            let timeout = self.timeout();
            let n = match self.ctx.wait(&mut self.events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    error!(target: "lb", "data path poller: {e}");
                    // Nothing sensible is left to do but not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            for i in 0..n {
                let (tok, bits) = self.events.get(i);
                self.dispatch(tok, bits);
            }
            while let Some(idx) = self.ctx.timers.pop_due(self.ctx.now) {
                self.with_session(idx, |s, ctx| s.timer(ctx, idx));
            }
            for idx in self.ctx.take_queue() {
                self.with_session(idx, |s, ctx| s.pump(ctx, idx));
            }
            self.accept_all();
        }
    }

    /// How long the next wait may block: not at all while relays or listeners have more to
    /// do, else until the next deadline.
    fn timeout(&self) -> Option<Duration> {
        if self.ctx.has_queued() {
            return Some(Duration::ZERO);
        }
        let mut next = self.ctx.timers.next();
        for l in self.listeners.iter().flatten() {
            if !l.ready {
                continue;
            }
            match l.backoff_until {
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                // Blocked at a limit: woken by whoever frees a slot.
                None if l.lb.accept_blocked() => {}
                None => return Some(Duration::ZERO),
            }
        }
        next.map(|t| t.saturating_duration_since(Instant::now()))
    }

    fn dispatch(&mut self, tok: u64, bits: u8) {
        match context::source(tok) {
            Source::Waker => {
                self.waker.reset();
                self.commands();
            }
            Source::Listener { index, serial } => {
                if let Some(Some(l)) = self.listeners.get_mut(index)
                    && l.serial == serial
                {
                    l.ready = true;
                }
            }
            Source::Connection { idx, side, serial } => {
                let live = matches!(self.sessions.get(idx as usize), Some(Some(s)) if s.serial[side] == serial);
                if live {
                    self.with_session(idx, |s, ctx| s.event(ctx, idx, side, bits));
                }
            }
        }
    }

    /// Run `f` on connection `idx` if it exists; close it if `f` says so.
    fn with_session(&mut self, idx: u32, f: impl FnOnce(&mut Session, &mut Ctx) -> Flow) {
        let Some(Some(s)) = self.sessions.get_mut(idx as usize) else {
            return;
        };
        if f(s, &mut self.ctx) == Flow::Close {
            self.close(idx);
        }
    }

    fn close(&mut self, idx: u32) {
        self.ctx.timers.clear(idx);
        if let Some(slot) = self.sessions.get_mut(idx as usize)
            && slot.take().is_some()
        {
            // Dropping the session settles its books and closes its sockets.
            self.free.push(idx);
        }
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Listen(l) => self.listen(l),
                Cmd::Unlisten { id, done } => {
                    self.unlisten(id);
                    let _ = done.send(());
                }
                Cmd::Stop => self.stop = true,
            }
        }
    }

    /// Start accepting on a listener the runtime handed over.
    fn listen(&mut self, new: Listen) {
        let li = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        let serial = match self.ctx.register_listener(new.sock.as_fd(), li, new.shared) {
            Ok(serial) => serial,
            Err(e) => {
                error!(target: "lb", balancer = %new.lb.cfg.name, listen = %new.addr, "cannot poll the listener: {e}");
                return;
            }
        };
        new.lb.add_accepter(&self.waker);
        self.listeners[li] = Some(Listener {
            id: new.id,
            lb: new.lb,
            sock: new.sock,
            addr: new.addr,
            serial,
            // Clients may be waiting in the backlog already.
            ready: true,
            backoff_until: None,
            backoff: Duration::from_millis(10),
            exhausted_since: None,
        });
    }

    /// Stop accepting on listener `id`. Clients that completed their handshake are in its
    /// backlog, and closing the socket would reset them: they are taken first (within the
    /// limits) and served like any other.
    fn unlisten(&mut self, id: u64) {
        let Some(li) = self
            .listeners
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.id == id))
        else {
            return;
        };
        for _ in 0..16 {
            match &mut self.listeners[li] {
                Some(l) => {
                    l.ready = true;
                    l.backoff_until = None;
                }
                None => break,
            }
            let taken = self.accept(li);
            // Drained (EAGAIN), or at a limit (nothing taken): done.
            if taken == 0 || self.listeners[li].as_ref().is_none_or(|l| !l.ready) {
                break;
            }
        }
        if let Some(l) = self.listeners[li].take() {
            let _ = self.ctx.deregister(l.sock.as_fd());
        }
    }

    fn accept_all(&mut self) {
        for li in 0..self.listeners.len() {
            self.accept(li);
        }
    }

    /// Accept what the listener has (up to a batch) and start on each client; how many.
    fn accept(&mut self, li: usize) -> usize {
        let mut taken = 0;
        for _ in 0..ACCEPT_BATCH {
            let Some(Some(l)) = self.listeners.get_mut(li) else {
                return taken;
            };
            match l.accept_one(self.ctx.now) {
                Accept::Client(fd, peer) => {
                    let (lb, listen) = (l.lb.clone(), l.addr);
                    if self.start(lb, fd, peer, listen) {
                        taken += 1;
                    }
                }
                Accept::Again => {}
                Accept::Stop => return taken,
            }
        }
        taken
    }

    /// Give an accepted client a slot and start on it; false if no slot is left.
    fn start(
        &mut self,
        lb: Arc<Balancer>,
        fd: OwnedFd,
        peer: SocketAddr,
        listen: SocketAddr,
    ) -> bool {
        let idx = match self.free.pop() {
            Some(i) => i,
            None if self.sessions.len() < MAX_SLOTS => {
                self.sessions.push(None);
                (self.sessions.len() - 1) as u32
            }
            None => {
                // A billion connections on one thread: not reachable with any descriptor
                // limit, but never a panic.
                lb.leave();
                return false;
            }
        };
        self.sessions[idx as usize] = Some(Session::new(lb, fd, peer, listen));
        self.with_session(idx, |s, ctx| s.start(ctx, idx));
        true
    }
}

struct Thread {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
}

impl Thread {
    fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            self.waker.wake();
        }
    }
}

/// The data-path threads. Dropping it stops them, closing every connection they hold.
pub struct DataPath {
    threads: Arc<Vec<Thread>>,
    joins: Vec<JoinHandle<()>>,
    next_id: AtomicU64,
}

impl DataPath {
    /// Start `threads` event-loop threads (none: a data path that can take no listener).
    pub fn start(threads: usize) -> io::Result<DataPath> {
        let mut list = Vec::new();
        let mut joins = Vec::new();
        for n in 0..threads {
            let waker = Arc::new(Waker::new()?);
            let (tx, rx) = mpsc::channel();
            let engine = Engine {
                ctx: Ctx::new(&waker)?,
                sessions: Vec::new(),
                free: Vec::new(),
                listeners: Vec::new(),
                rx,
                waker: waker.clone(),
                events: Events::new(),
                stop: false,
            };
            let join = std::thread::Builder::new()
                .name(format!("fwlb-lb{n}"))
                .spawn(move || engine.run())?;
            list.push(Thread { tx, waker });
            joins.push(join);
        }
        debug!(target: "lb", threads = list.len(), "data path started");
        Ok(DataPath {
            threads: Arc::new(list),
            joins,
            next_id: AtomicU64::new(1),
        })
    }

    /// Accept `lb`'s clients from `l` (non-blocking) on every data-path thread.
    pub fn listen(&self, lb: &Arc<Balancer>, l: TcpListener) -> io::Result<Listening> {
        if self.threads.is_empty() {
            return Err(io::Error::other("the data path has no thread"));
        }
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sock = Arc::new(l);
        let shared = self.threads.len() > 1;
        for t in self.threads.iter() {
            t.send(Cmd::Listen(Listen {
                id,
                lb: lb.clone(),
                sock: sock.clone(),
                addr,
                shared,
            }));
        }
        Ok(Listening {
            id,
            addr,
            threads: Some(self.threads.clone()),
        })
    }
}

impl Drop for DataPath {
    fn drop(&mut self) {
        for t in self.threads.iter() {
            t.send(Cmd::Stop);
        }
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

/// One listener on the data path. `close` (or dropping it) stops accepting on it; open
/// connections go on.
pub struct Listening {
    id: u64,
    addr: SocketAddr,
    threads: Option<Arc<Vec<Thread>>>,
}

impl Listening {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting; when this returns every thread has let the socket go, so the port is
    /// closed.
    pub async fn close(mut self) {
        let Some(threads) = self.threads.take() else {
            return;
        };
        let mut acks = Vec::new();
        for t in threads.iter() {
            let (done, ack) = tokio::sync::oneshot::channel();
            t.send(Cmd::Unlisten { id: self.id, done });
            acks.push(ack);
        }
        drop(threads);
        for a in acks {
            // An error: that thread is gone, and the socket with it.
            let _ = a.await;
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(threads) = self.threads.take() {
            for t in threads.iter() {
                let (done, _) = tokio::sync::oneshot::channel();
                t.send(Cmd::Unlisten { id: self.id, done });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};

    /// A balancer in front of `servers`, on one data-path thread, and its address.
    fn balancer(servers: &[SocketAddr], extra: &str) -> (DataPath, Arc<Balancer>, Listening) {
        let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        let text = format!(
            "[[balancer]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nservers = [{}]\n{extra}",
            list.join(", ")
        );
        let cfg = crate::config::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
        let lb = Balancer::new(cfg.balancers[0].clone());
        let dp = DataPath::start(1).unwrap();
        let l = sys::socket::listener("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let ls = dp.listen(&lb, l).unwrap();
        (dp, lb, ls)
    }

    /// One-connection backend on its own thread running `f` on the accepted socket.
    fn backend<T: Send + 'static>(
        f: impl FnOnce(TcpStream) -> T + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<T>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || f(l.accept().unwrap().0));
        (addr, t)
    }

    fn wait_idle(lb: &Balancer) {
        let t = Instant::now();
        while lb.active() > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "connection never closed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn relays_both_ways_and_passes_each_half_close_on() {
        let (s, server) = backend(|mut s| {
            let mut got = Vec::new();
            // Ends only if the client's FIN was passed on while the server still sends.
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"answer after the FIN").unwrap();
            got
        });
        let (_dp, lb, ls) = balancer(&[s], "");
        let mut c = TcpStream::connect(ls.addr()).unwrap();
        c.write_all(b"request").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"answer after the FIN");
        assert_eq!(server.join().unwrap(), b"request");
        drop(c);
        wait_idle(&lb);
        let st = lb.lock();
        assert!(st.conns.is_empty(), "show conns keeps a closed connection");
        let srv = &st.servers[0];
        assert_eq!((srv.sx, srv.rx, srv.conns, srv.total), (7, 20, 0, 1));
    }

    #[test]
    fn a_response_and_its_fin_in_one_go_arrive_whole_before_the_end() {
        // The server answers and closes at once, so the data and the FIN come in together:
        // a short read then ends the direction without another recv(2). Small answers go
        // straight through; a large one to a client that does not read yet backs up in the
        // relay, and the FIN must wait for its last byte.
        for (size, client_waits) in [(300usize, false), (3 << 20, true)] {
            let answer = pattern(size, 3);
            let sent = answer.clone();
            let (s, server) = backend(move |mut s| {
                let mut req = [0u8; 3];
                s.read_exact(&mut req).unwrap();
                s.write_all(&sent).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                // Then the client's FIN, passed on after ours went to it.
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                rest
            });
            let (_dp, lb, ls) = balancer(&[s], "");
            let mut c = TcpStream::connect(ls.addr()).unwrap();
            c.write_all(b"GET").unwrap();
            if client_waits {
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), answer.len(), "{size} bytes");
            assert!(got == answer, "{size} bytes: the answer differs");
            // The client's direction is still open after the server's end came through.
            c.write_all(b"bye").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            assert_eq!(server.join().unwrap(), b"bye");
            drop(c);
            wait_idle(&lb);
        }
    }

    #[test]
    fn an_echo_of_8_mib_each_way_keeps_every_byte() {
        // Bulk both ways at once: backpressure, partial writes and the splice switch.
        let (s, server) = backend(|s| {
            let mut r = s.try_clone().unwrap();
            let mut w = s;
            std::io::copy(&mut r, &mut w).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let (_dp, lb, ls) = balancer(&[s], "");
        let c = TcpStream::connect(ls.addr()).unwrap();
        let data = pattern(8 << 20, 7);
        let sent = data.clone();
        let mut w = c.try_clone().unwrap();
        let send = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&c).read_to_end(&mut got).unwrap();
        send.join().unwrap();
        server.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the echoed bytes differ");
        drop(c);
        wait_idle(&lb);
        let srv = &lb.lock().servers[0];
        assert_eq!((srv.sx, srv.rx), (8 << 20, 8 << 20));
    }

    #[test]
    fn a_reset_ends_the_connection_and_frees_its_slot() {
        let (s, server) = backend(|mut s| {
            let mut buf = [0u8; 64];
            // The client's reset reaches the server as an end (or reset) of its own.
            let n = s.read(&mut buf).unwrap_or(0);
            n == 0 || s.read(&mut buf).map_or(true, |n| n == 0)
        });
        let (_dp, lb, ls) = balancer(&[s], "");
        let c = TcpStream::connect(ls.addr()).unwrap();
        // SO_LINGER 0: close(2) sends a reset.
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        wait_idle(&lb);
        assert!(server.join().unwrap());
        assert_eq!(lb.lock().servers[0].conns, 0);
    }

    #[test]
    fn closing_a_listener_serves_its_backlog_then_closes_the_port() {
        let (s, server) = backend(|mut s| {
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let (_dp, lb, ls) = balancer(&[s], "");
        let addr = ls.addr();
        let mut c = TcpStream::connect(addr).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(ls.close());
        assert!(TcpStream::connect(addr).is_err(), "the port is still open");
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.join().unwrap();
        drop(c);
        wait_idle(&lb);
    }

    #[test]
    fn stopping_the_data_path_closes_what_it_holds() {
        let (s, server) = backend(|mut s| {
            let mut buf = [0u8; 4];
            s.read(&mut buf).unwrap_or(0)
        });
        let (dp, lb, ls) = balancer(&[s], "");
        let mut c = TcpStream::connect(ls.addr()).unwrap();
        let t = Instant::now();
        while lb.lock().conns.is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "never connected");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(ls);
        drop(dp);
        assert_eq!(lb.active(), 0);
        assert_eq!(
            server.join().unwrap(),
            0,
            "the server saw its connection close"
        );
        let mut buf = [0u8; 4];
        assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    }
}
