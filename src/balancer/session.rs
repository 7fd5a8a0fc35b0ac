//! One client connection on the data path: a state machine that its engine (balancer::engine)
//! drives from socket events and deadlines, on the engine's thread, with no task, future or
//! waker in between.
//!
//!   accepted -> [PROXY header] -> connecting (failover walk) -> relay -> [linger] -> closed
//!                                  |      ^
//!                                  v      |  out of descriptors/ports: the same server again
//!                                 local wait  after a backoff, accepting paused meanwhile
//!
//! Every failure to reach a server blacklists it and moves the same client on to the next
//! server of the walk (pen's order: the pick, pick+1, ...; then the emergency server); the
//! client is closed only when the walk is exhausted. What a connection holds on its balancer
//! (its place in `active`, a server slot, its `show conns` entry, a local-wait count) is given
//! back in `Drop`, whichever way it ends.
//!
//! Dependencies point one way: the engine drives a session, the session uses its thread's
//! context (balancer::context) and changes its balancer's books only through `Balancer`
//! methods (`connected`, `connect_failed`, `closed` ...); it never sees the engine.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::context::Ctx;
use super::relay::{End, Pumped, Relay};
use super::{Balancer, ConnInfo, Endpoints, Guard, Slot};
use crate::config;
use crate::sys;
use crate::sys::poller::{HUP, READ, WRITE, drained};
use crate::wire::http::{self, RequestRewriter, XffConfig};
use crate::wire::proxy;

/// What the engine does with a connection after it handled an event.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Keep,
    Close,
}

/// How long a client waits for this host to have a descriptor or port again: it was
/// accepted, so it can be served once the shortage passes.
const LOCAL_WAIT: Duration = Duration::from_secs(30);
/// A PROXY header must arrive within this.
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);
/// After a 400: how long, and how much, to read and drop before closing.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 1 << 20;
/// A v2 header is at most 16 + 65535 bytes; anything longer is refused.
const PROXY_MAX: usize = 16 + 65_535;
/// Client bytes read per recv(2) while looking for a PROXY header: what follows the header
/// is kept for the server, so read in modest pieces.
const PROXY_CHUNK: usize = 4096;

enum Phase {
    /// Reading the client's PROXY header (`accept_proxy`).
    Proxy {
        buf: Vec<u8>,
    },
    /// HTTP modes: reading the client's first request head before any server is chosen, so
    /// a slow client holds only this host (`head_timeout`); `got` raw bytes so far.
    Head {
        got: usize,
    },
    /// A server connect in progress, under its connect timeout.
    Connecting,
    /// This host ran out of descriptors or ports: the same server again after `backoff`.
    LocalWait {
        backoff: Duration,
        give_up: Instant,
        timeout: Duration,
    },
    Relay(Relaying),
    /// Answered 400: reading what the client still sends for a moment before closing, since
    /// closing with unread data sends a reset, and a reset makes the client's kernel discard
    /// the 400 it has not read yet.
    Linger {
        total: usize,
    },
}

struct Relaying {
    relay: Relay,
    /// Idle check: bytes moved at the last tick and the quiet time since they last changed.
    seen: u64,
    quiet: Duration,
    idle: Duration,
    /// HTTP modes: how long the current partial request head has been arriving.
    head_for: Duration,
}

/// The HTTP modes' limits on a relay (zero: none): the quiet time after an answer that ends
/// a kept-alive connection, and the time a later request head may take from its first byte.
#[derive(Clone, Copy)]
struct HttpLimits {
    keepalive: Duration,
    head: Duration,
}

impl HttpLimits {
    fn of(cfg: &config::Balancer) -> HttpLimits {
        if !cfg.http_forwarded_for {
            return HttpLimits {
                keepalive: Duration::ZERO,
                head: Duration::ZERO,
            };
        }
        HttpLimits {
            keepalive: cfg.keepalive_timeout,
            head: cfg.head_timeout,
        }
    }
}

impl Relaying {
    fn new(relay: Relay, idle: Duration) -> Relaying {
        Relaying {
            relay,
            seen: 0,
            quiet: Duration::ZERO,
            idle,
            head_for: Duration::ZERO,
        }
    }

    /// The timer period: a quarter of the shortest limit (None: no limit, no timer).
    fn period(&self, http: HttpLimits) -> Option<Duration> {
        [self.idle, http.keepalive, http.head]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .map(tick)
    }

    /// One timer tick of `period`: how the connection ends, if it does now.
    fn tick(&mut self, period: Duration, http: HttpLimits) -> Option<End> {
        let now = self.relay.moved();
        if now != self.seen {
            (self.seen, self.quiet) = (now, Duration::ZERO);
        } else {
            self.quiet += period;
        }
        if !self.idle.is_zero() && self.quiet >= self.idle {
            return Some(End::Idle);
        }
        let r = self.relay.rewriter.as_deref()?;
        if !r.awaiting_head() {
            self.head_for = Duration::ZERO;
            return None;
        }
        if r.partial_head() > 0 {
            self.head_for += period;
            return (!http.head.is_zero() && self.head_for >= http.head).then_some(End::SlowHead);
        }
        self.head_for = Duration::ZERO;
        // Only once the latest request had bytes of its answer: a slow server is not an
        // idle client.
        let answered = self.relay.down() > self.relay.down_at_request;
        (!http.keepalive.is_zero() && answered && self.quiet >= http.keepalive)
            .then_some(End::KeepAlive)
    }
}

/// The failover walk: the pick, pick+1, ... (all servers, or only the pick when stubborn),
/// then the emergency server (not when stubborn). The default is not planned yet.
#[derive(Default)]
struct Walk {
    planned: bool,
    first: Option<usize>,
    n: usize,
    tries: usize,
    k: usize,
    emergency: bool,
}

impl Walk {
    fn new(first: Option<usize>, n: usize, failover: bool) -> Walk {
        Walk {
            planned: true,
            first,
            n,
            tries: if failover { n } else { 1 },
            k: 0,
            emergency: failover,
        }
    }

    fn next(&mut self) -> Option<Slot> {
        if let Some(f) = self.first
            && self.k < self.tries
            && self.n > 0
        {
            let s = Slot::Regular((f + self.k) % self.n);
            self.k += 1;
            return Some(s);
        }
        if self.emergency {
            self.emergency = false;
            return Some(Slot::Emergency);
        }
        None
    }
}

pub struct Session {
    lb: Arc<Balancer>,
    /// Client, server.
    fds: [Option<OwnedFd>; 2],
    /// The registration serial of each socket: an event for a socket since closed (a failed
    /// server, a previous connection in this slot) carries another and is ignored.
    pub serial: [u32; 2],
    /// READ/WRITE/HUP as the poller last reported them, cleared as reads and writes drain.
    ready: [u8; 2],
    /// In the engine's queue of relays to pump again.
    pub queued: bool,
    /// The TCP peer; the client (the PROXY header's source behind another proxy); where the
    /// client connected to.
    peer: SocketAddr,
    who: SocketAddr,
    dst: SocketAddr,
    phase: Phase,
    walk: Walk,
    guard: Option<Guard>,
    info: Option<Arc<ConnInfo>>,
    /// Client bytes that came with its PROXY header, for the server (HTTP modes: rewritten,
    /// with the first request head).
    early: Vec<u8>,
    /// HTTP modes: the request rewriter, from the first byte on.
    rewriter: Option<Box<RequestRewriter>>,
    /// Counted in the balancer's `local_waiting`.
    waiting_local: bool,
}

impl Session {
    /// A client the engine accepted (and counted in `lb.active`).
    pub fn new(lb: Arc<Balancer>, client: OwnedFd, peer: SocketAddr, listen: SocketAddr) -> Self {
        Session {
            lb,
            fds: [Some(client), None],
            serial: [0; 2],
            ready: [0; 2],
            queued: false,
            peer,
            who: peer,
            dst: listen,
            phase: Phase::Connecting,
            walk: Walk::default(),
            guard: None,
            info: None,
            early: Vec::new(),
            rewriter: None,
            waiting_local: false,
        }
    }

    /// Socket `side`, borrowed from `fds` alone: the rest of the session stays free to change.
    fn fd(fds: &[Option<OwnedFd>; 2], side: usize) -> Option<BorrowedFd<'_>> {
        fds[side].as_ref().map(|f| f.as_fd())
    }

    /// Take the accepted client into the engine and start on it.
    pub fn start(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        let Some(fd) = Self::fd(&self.fds, 0) else {
            return Flow::Close;
        };
        match ctx.register(fd, idx, 0) {
            Ok(serial) => self.serial[0] = serial,
            Err(e) => {
                warn!(target: "lb", balancer = %self.lb.cfg.name, client = %self.peer, "cannot poll the client socket: {e}; client closed");
                return Flow::Close;
            }
        }
        // Nagle on a relay adds ~40 ms stalls per response (pen without tcp_nodelay). Linux
        // accepted sockets inherit TCP_NODELAY from the listener (sys::socket::listener sets
        // it), which saves a setsockopt(2) per connection.
        #[cfg(not(target_os = "linux"))]
        if let Some(c) = &self.fds[0] {
            let _ = socket2::SockRef::from(c).set_tcp_nodelay(true);
        }
        if self.dst.ip().is_unspecified() {
            let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
            self.dst = sys::socket::local_addr(fd).unwrap_or(unknown);
        }
        if self.lb.cfg.accept_proxy {
            self.phase = Phase::Proxy {
                buf: Vec::with_capacity(256),
            };
            ctx.timers.set(idx, ctx.now + PROXY_TIMEOUT);
            // The header may be in already; otherwise the client's first event brings it.
            return self.read_proxy(ctx, idx);
        }
        self.begin(ctx, idx)
    }

    /// A poller event for this connection's socket `side`.
    pub fn event(&mut self, ctx: &mut Ctx, idx: u32, side: usize, bits: u8) -> Flow {
        self.ready[side] |= bits;
        match self.phase {
            Phase::Relay(_) => {
                // Pumped after this batch of events: one pass sees both sockets' news.
                if !self.queued {
                    self.queued = true;
                    ctx.requeue(idx);
                }
                Flow::Keep
            }
            Phase::Proxy { .. } if side == 0 => self.read_proxy(ctx, idx),
            Phase::Head { .. } if side == 0 => self.read_head(ctx, idx),
            Phase::Connecting if side == 1 && bits & (WRITE | HUP) != 0 => {
                self.connect_done(ctx, idx)
            }
            Phase::Linger { .. } if side == 0 => self.linger(ctx),
            _ => Flow::Keep,
        }
    }

    /// This connection's deadline passed.
    pub fn timer(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        match &mut self.phase {
            Phase::Proxy { .. } => self.proxy_failed(io::Error::new(
                io::ErrorKind::TimedOut,
                "no PROXY header within 5 s",
            )),
            Phase::Head { got } => {
                let got = *got;
                self.lb.head_timed_out();
                debug!(target: "lb", balancer = %self.lb.cfg.name, client = %self.who,
                    "no complete request head within {} ({got} bytes); closed", config::duration::format(self.lb.cfg.head_timeout));
                // A connection that sent nothing (a browser's speculative preconnect) is
                // closed without a word, as HAProxy's http-ignore-probes does.
                if got == 0 {
                    return Flow::Close;
                }
                self.refuse(ctx, idx, http::REQUEST_TIMEOUT)
            }
            Phase::Connecting => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                self.server_failed(e);
                self.dial(ctx, idx)
            }
            Phase::LocalWait { timeout, .. } => {
                let timeout = *timeout;
                self.set_waiting_local(false);
                self.connect(ctx, idx, timeout)
            }
            Phase::Relay(r) => {
                let http = HttpLimits::of(&self.lb.cfg);
                let Some(period) = r.period(http) else {
                    return Flow::Keep;
                };
                if let Some(end) = r.tick(period, http) {
                    return self.end(ctx, idx, end);
                }
                ctx.timers.set(idx, ctx.now + period);
                Flow::Keep
            }
            Phase::Linger { .. } => Flow::Close,
        }
    }

    /// Move what the relay can move now (queued by `event`, or still busy last pass).
    pub fn pump(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        self.queued = false;
        let (Some(c), Some(s)) = (Self::fd(&self.fds, 0), Self::fd(&self.fds, 1)) else {
            let e = io::Error::from_raw_os_error(libc::EBADF);
            return self.end(ctx, idx, End::Error(e));
        };
        let fds = [c, s];
        let Phase::Relay(r) = &mut self.phase else {
            return Flow::Keep;
        };
        match r.relay.pump(fds, &mut self.ready, &mut ctx.scratch) {
            Pumped::Blocked => Flow::Keep,
            Pumped::Busy => {
                self.queued = true;
                ctx.requeue(idx);
                Flow::Keep
            }
            Pumped::Done(res) => {
                let end = match (res, r.relay.refused.take()) {
                    (Ok(()), Some(e)) => End::BadRequest(e),
                    (Ok(()), None) => End::Closed,
                    (Err(e), _) => End::Error(e),
                };
                self.end(ctx, idx, end)
            }
        }
    }

    fn proxy_failed(&mut self, e: io::Error) -> Flow {
        self.lb.proxy_refused();
        warn!(target: "lb", balancer = %self.lb.cfg.name, client = %self.peer, "no valid PROXY header: {e}; closed");
        Flow::Close
    }

    fn read_proxy(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        let Some(fd) = Self::fd(&self.fds, 0) else {
            return Flow::Close;
        };
        loop {
            let Phase::Proxy { buf } = &mut self.phase else {
                return Flow::Keep;
            };
            match proxy::decode(buf) {
                Ok(proxy::Decoded::Header { len, addrs, .. }) => {
                    // LOCAL / UNKNOWN: the proxy's own connection (health checks).
                    if let Some(a) = addrs {
                        (self.who, self.dst) = (a.src, a.dst);
                    }
                    self.early = buf[len..].to_vec();
                    ctx.timers.clear(idx);
                    return self.begin(ctx, idx);
                }
                Ok(proxy::Decoded::Incomplete) => {}
                Err(e) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                    return self.proxy_failed(e);
                }
            }
            if buf.len() > PROXY_MAX {
                let e = io::Error::new(io::ErrorKind::InvalidData, "PROXY header too long");
                return self.proxy_failed(e);
            }
            if self.ready[0] & READ == 0 {
                return Flow::Keep;
            }
            let chunk = &mut ctx.scratch[..PROXY_CHUNK];
            match sys::socket::recv(fd, chunk) {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before a PROXY header",
                    );
                    return self.proxy_failed(e);
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if n < PROXY_CHUNK {
                        drained(&mut self.ready[0]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained(&mut self.ready[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.proxy_failed(e),
            }
        }
    }

    /// After the PROXY header (if any): HTTP modes read the first request head, others dial.
    fn begin(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        if !self.lb.cfg.http_forwarded_for {
            return self.dial(ctx, idx);
        }
        self.rewriter = Some(Box::new(self.new_rewriter()));
        let early = std::mem::take(&mut self.early);
        self.phase = Phase::Head { got: 0 };
        ctx.timers.set(idx, ctx.now + self.lb.cfg.head_timeout);
        match self.head_bytes(&early) {
            Some(Ok(())) => self.head_done(ctx, idx),
            Some(Err(())) => self.refuse(ctx, idx, http::BAD_REQUEST),
            None => self.read_head(ctx, idx),
        }
    }

    /// Feed client bytes of the first head to the rewriter: None while it is incomplete,
    /// Some(Ok) once complete (or not HTTP), Some(Err) when refused.
    fn head_bytes(&mut self, bytes: &[u8]) -> Option<Result<(), ()>> {
        let (Phase::Head { got }, Some(r)) = (&mut self.phase, self.rewriter.as_deref_mut()) else {
            return Some(Err(()));
        };
        *got += bytes.len();
        if let Err(e) = r.feed(bytes, &mut self.early) {
            info!(target: "lb", balancer = %self.lb.cfg.name, client = %self.who, "400 bad request ({e}) before any server");
            self.lb.bad_request();
            return Some(Err(()));
        }
        (r.requests() > 0 || r.passthrough()).then_some(Ok(()))
    }

    /// Read what the client sent of its first request head.
    fn read_head(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        while self.ready[0] & READ != 0 {
            let Some(fd) = Self::fd(&self.fds, 0) else {
                return Flow::Close;
            };
            let chunk = &mut ctx.scratch[..PROXY_CHUNK];
            let n = match sys::socket::recv(fd, chunk) {
                // Gone before its request: nothing to answer.
                Ok(0) => return Flow::Close,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained(&mut self.ready[0]);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Flow::Close,
            };
            if n < PROXY_CHUNK {
                drained(&mut self.ready[0]);
            }
            match self.head_bytes(&ctx.scratch[..n]) {
                None => {}
                Some(Ok(())) => return self.head_done(ctx, idx),
                Some(Err(())) => return self.refuse(ctx, idx, http::BAD_REQUEST),
            }
        }
        Flow::Keep
    }

    /// The first request head is complete: now a server.
    fn head_done(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        ctx.timers.clear(idx);
        self.dial(ctx, idx)
    }

    /// Answer the client `reply` before any server was involved, then linger and close.
    fn refuse(&mut self, ctx: &mut Ctx, idx: u32, reply: &[u8]) -> Flow {
        if let Some(c) = &self.fds[0] {
            // Best effort: a few dozen bytes into an empty send buffer.
            let _ = sys::socket::send(c.as_fd(), reply);
            let _ = sys::socket::shutdown_write(c);
        }
        self.phase = Phase::Linger { total: 0 };
        ctx.timers.set(idx, ctx.now + LINGER);
        self.linger(ctx)
    }

    /// Plan the walk over the servers, then try them.
    fn dial(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        if !self.walk.planned {
            let (first, n, failover) = self.lb.plan(self.who.ip(), self.who.port(), ctx.now);
            self.walk = Walk::new(first, n, failover);
        }
        loop {
            let Some(slot) = self.walk.next() else {
                self.lb.no_server(self.who);
                return Flow::Close;
            };
            let Some((guard, timeout)) = self.lb.reserve(slot, self.who.ip(), ctx.now) else {
                continue;
            };
            self.guard = Some(guard);
            match self.connect(ctx, idx, timeout) {
                Flow::Keep if self.guard.is_none() => continue,
                f => return f,
            }
        }
    }

    /// Open a socket to the guard's server and start connecting. Keep with the guard gone:
    /// that server failed, try the next.
    fn connect(&mut self, ctx: &mut Ctx, idx: u32, timeout: Duration) -> Flow {
        let Some(addr) = self.guard.as_ref().map(Guard::addr) else {
            return self.dial(ctx, idx);
        };
        let attempt = sys::socket::connect(addr).and_then(|(fd, done)| {
            let serial = ctx.register(fd.as_fd(), idx, 1)?;
            Ok((fd, done, serial))
        });
        match attempt {
            Ok((fd, done, serial)) => {
                self.fds[1] = Some(fd);
                self.serial[1] = serial;
                self.ready[1] = 0;
                if done {
                    self.ready[1] = WRITE;
                    return self.connected(ctx, idx);
                }
                self.phase = Phase::Connecting;
                ctx.timers.set(idx, ctx.now + timeout);
                Flow::Keep
            }
            Err(e) if sys::is_resource_exhaustion(&e) => {
                let now = Instant::now();
                let (backoff, give_up) = match self.phase {
                    Phase::LocalWait {
                        backoff, give_up, ..
                    } => ((backoff * 2).min(Duration::from_millis(200)), give_up),
                    _ => (Duration::from_millis(5), now + LOCAL_WAIT.max(timeout)),
                };
                if now + backoff >= give_up {
                    // Every server would hit the same shortage: give this client up without
                    // blaming anyone.
                    warn!(target: "lb", balancer = %self.lb.cfg.name, client = %self.who,
                        "no local resources to reach a server for {} s ({e}); client closed", LOCAL_WAIT.as_secs());
                    return Flow::Close;
                }
                // While anyone waits here no new client is accepted, so freed descriptors go
                // to the clients already accepted (or everyone starves).
                self.set_waiting_local(true);
                self.phase = Phase::LocalWait {
                    backoff,
                    give_up,
                    timeout,
                };
                ctx.timers.set(idx, ctx.now + backoff);
                Flow::Keep
            }
            Err(e) => {
                self.server_failed(e);
                if matches!(self.phase, Phase::LocalWait { .. }) {
                    self.phase = Phase::Connecting;
                    return self.dial(ctx, idx);
                }
                Flow::Keep
            }
        }
    }

    /// The server socket reported writable or failed: how did its connect end?
    fn connect_done(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        // On Linux a failed connect always reports EPOLLERR (HUP here): writable without it
        // is established, and the getsockopt(2) per connection can be saved.
        #[cfg(target_os = "linux")]
        let check = self.ready[1] & HUP != 0;
        #[cfg(not(target_os = "linux"))]
        let check = true;
        if check && let Some(fd) = &self.fds[1] {
            let err = match sys::socket::take_error(fd) {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => None,
            };
            if let Some(e) = err {
                self.server_failed(e);
                return self.dial(ctx, idx);
            }
        }
        self.connected(ctx, idx)
    }

    /// The current server failed: blacklist it, close its socket.
    fn server_failed(&mut self, e: io::Error) {
        self.fds[1] = None;
        self.ready[1] = 0;
        if let Some(g) = self.guard.take() {
            self.lb.connect_failed(g, &e);
        }
    }

    fn set_waiting_local(&mut self, on: bool) {
        if self.waiting_local != on {
            self.waiting_local = on;
            self.lb.local_wait(on);
        }
    }

    /// Connected: book the connection, then relay (PROXY header and early bytes first).
    fn connected(&mut self, ctx: &mut Ctx, idx: u32) -> Flow {
        let Some(guard) = self.guard.as_ref() else {
            return Flow::Close;
        };
        let ends = Endpoints {
            client: self.who,
            peer: self.peer,
            // Where the client connected: our listener, or behind a proxy the destination
            // its PROXY header names.
            listen: self.dst,
        };
        let (info, idle) = self.lb.connected(
            guard,
            ends,
            Self::fd(&self.fds, 1).map_or(-1, |f| f.as_raw_fd()),
            ctx.now,
        );
        self.info = Some(info.clone());
        let (rewriter, preamble) = self.preamble(&info);
        let relay = Relay::new(info, rewriter, preamble);
        let relaying = Relaying::new(relay, idle);
        match relaying.period(HttpLimits::of(&self.lb.cfg)) {
            Some(p) => ctx.timers.set(idx, ctx.now + p),
            None => ctx.timers.clear(idx),
        }
        self.phase = Phase::Relay(relaying);
        // Whatever is ready already (the request that came with the connection) moves now.
        self.pump(ctx, idx)
    }

    /// The X-Forwarded-For rewriter (HTTP modes), kept from the first byte on.
    fn new_rewriter(&self) -> RequestRewriter {
        let cfg = &self.lb.cfg;
        let client = self.who.ip();
        let trusted = cfg
            .trusted_proxies
            .iter()
            .any(|(n, l)| config::in_network(client, *n, *l));
        RequestRewriter::new(XffConfig {
            client,
            trusted,
            proto: "http",
        })
    }

    /// The rewriter if the balancer has one, and what goes to the server before the relay
    /// starts: the PROXY header, then the client's bytes read so far (HTTP modes: the first
    /// request head, rewritten; else what came with the client's PROXY header).
    fn preamble(&mut self, info: &ConnInfo) -> (Option<Box<RequestRewriter>>, Vec<u8>) {
        let mut preamble = match self.lb.cfg.proxy_protocol {
            config::ProxyProtocol::None => Vec::new(),
            config::ProxyProtocol::V1 => proxy::encode_v1(self.who, self.dst),
            config::ProxyProtocol::V2 => proxy::encode_v2(self.who, self.dst),
        };
        let early = std::mem::take(&mut self.early);
        info.bytes
            .up
            .fetch_add(early.len() as u64, Ordering::Relaxed);
        preamble.extend_from_slice(&early);
        (self.rewriter.take(), preamble)
    }

    /// The relay ended: settle the books, log, and close (or linger after a 400).
    fn end(&mut self, ctx: &mut Ctx, idx: u32, end: End) -> Flow {
        let Some(info) = self.info.clone() else {
            return Flow::Close;
        };
        // Read while the upstream socket is open and the connection registered.
        let local = self.lb.cfg.connection_log.then(|| info.local());
        let slot = self.guard.as_ref().map(Guard::slot);
        self.settle();
        self.lb.relay_ended(&end);
        self.log_end(&info, local, slot, &end);
        if !matches!(end, End::BadRequest(_)) {
            return Flow::Close;
        }
        // The server is done with: only the client is read until it stops or time is up.
        self.fds[1] = None;
        if let Some(c) = &self.fds[0] {
            let _ = sys::socket::shutdown_write(c);
        }
        self.phase = Phase::Linger { total: 0 };
        ctx.timers.set(idx, ctx.now + LINGER);
        self.linger(ctx)
    }

    /// The connection log's line (`local` is there when the balancer keeps that log), else a
    /// debug line for an error.
    fn log_end(&self, info: &ConnInfo, local: Option<SocketAddr>, slot: Option<Slot>, end: &End) {
        let lb = &self.lb;
        let Some(local) = local else {
            if let End::Error(e) = end {
                debug!(target: "lb", balancer = %lb.cfg.name, client = %self.who, server = %info.server, "connection ended: {e}");
            }
            return;
        };
        let how = match end {
            End::Closed => "closed".to_string(),
            End::Idle => "idle timeout".to_string(),
            End::SlowHead => "request head timeout".to_string(),
            End::KeepAlive => "keep-alive timeout".to_string(),
            End::BadRequest(e) => format!("400 bad request ({e})"),
            End::Error(e) => format!("error: {e}"),
        };
        let server = match slot {
            Some(Slot::Regular(i)) => format!("#{i}"),
            _ => "emergency".into(),
        };
        let requests = match &self.phase {
            Phase::Relay(r) => r.relay.rewriter.as_ref().map(|r| r.requests()),
            _ => None,
        };
        let requests = requests.map_or(String::new(), |r| format!(" requests={r}"));
        let via = if self.who == self.peer {
            String::new()
        } else {
            format!(" via={}", self.peer)
        };
        let (up, down) = info.bytes.totals();
        info!(target: "lb",
            "conn {} -> {} {local} -> {} balancer={} server={server} up={up} down={down} duration={:.3}s end=\"{how}\"{requests}{via}",
            self.who, self.dst, info.server, lb.cfg.name, info.started.elapsed().as_secs_f64());
    }

    fn linger(&mut self, ctx: &mut Ctx) -> Flow {
        let Some(fd) = Self::fd(&self.fds, 0) else {
            return Flow::Close;
        };
        let Phase::Linger { total } = &mut self.phase else {
            return Flow::Keep;
        };
        while self.ready[0] & READ != 0 {
            match sys::socket::recv(fd, &mut ctx.scratch) {
                Ok(0) => return Flow::Close,
                Ok(n) => {
                    *total += n;
                    if *total >= LINGER_MAX {
                        return Flow::Close;
                    }
                    if n < ctx.scratch.len() {
                        drained(&mut self.ready[0]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained(&mut self.ready[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Close,
            }
        }
        Flow::Keep
    }

    /// Give back what the connection holds on its balancer: its `show conns` entry and byte
    /// counts, its server slot, a local-wait count. Idempotent.
    fn settle(&mut self) {
        self.lb.closed(self.info.take(), self.guard.take());
        self.set_waiting_local(false);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The sockets close after this (field drop), once nothing refers to them.
        self.settle();
        self.lb.leave();
    }
}

/// The idle check looks for moved bytes four times per period rather than stamping every
/// read: a quiet connection closes between `idle` and 1.25 x `idle` after its last byte.
fn tick(idle: Duration) -> Duration {
    (idle / 4).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(first: Option<usize>, n: usize, failover: bool) -> Vec<Slot> {
        let mut w = Walk::new(first, n, failover);
        std::iter::from_fn(|| w.next()).collect()
    }

    #[test]
    fn the_walk_is_pens_order_then_the_emergency_server() {
        use Slot::*;
        assert_eq!(
            walk(Some(2), 4, true),
            [Regular(2), Regular(3), Regular(0), Regular(1), Emergency]
        );
        // Stubborn: the pick only, no emergency server.
        assert_eq!(walk(Some(2), 4, false), [Regular(2)]);
        // Nothing usable to pick: straight to the emergency server.
        assert_eq!(walk(None, 4, true), [Emergency]);
        assert_eq!(walk(None, 0, false), []);
    }

    #[test]
    fn a_connection_stays_small() {
        // Every open connection holds one in its engine's table: its size is a floor under
        // the memory per idle connection (the tokio task it replaced was 1.6 KiB).
        assert!(
            std::mem::size_of::<Session>() <= 512,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
    }
}
