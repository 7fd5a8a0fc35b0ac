//! The TCP balancer of one `[[balancer]]`: accept loop, server choice with failover, relay.
//!
//! Failure handling (pen's intent, without pen 0.34.1's bug that dropped the client on a refused
//! connect): any failure to reach a server (refused, unreachable, timeout) blacklists it for
//! `blacklist` and the same client is tried on the next usable server, then on the emergency
//! server; the client is closed only when nothing can take it.

pub mod clients;
pub mod engine;
pub mod pool;
pub mod relay;
mod reload;
pub mod select;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::config::{self, Algorithm};
use crate::sys;
use crate::wire::http::{RequestRewriter, XffConfig};
use crate::wire::proxy;
use clients::ClientTable;
use engine::{Conn, Engine};
use pool::ServerState;
use select::{Pick, Select};

/// Counters of one balancer, for logs and (later) the control port.
#[derive(Default, Debug)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub served: AtomicU64,
    /// Clients closed because no server (nor the emergency server) could take them.
    pub no_server: AtomicU64,
    pub connect_failures: AtomicU64,
    pub idle_closed: AtomicU64,
    /// Clients without a valid PROXY header on an `accept_proxy` listener.
    pub proxy_errors: AtomicU64,
    /// Malformed or oversized HTTP request heads (answered 400).
    pub bad_requests: AtomicU64,
    /// Accept errors from descriptor exhaustion (EMFILE/ENFILE).
    pub fd_exhausted: AtomicU64,
}

/// What the control port may change at run time (pen's global settings).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Remembered clients go back to their server (pen without `-r`).
    pub sticky: bool,
    /// How new clients are placed.
    pub base: Algorithm,
    /// A failed first choice closes the client instead of failing over (pen `-s`).
    pub stubborn: bool,
    pub blacklist: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Settings {
    pub fn from_config(c: &config::Balancer) -> Self {
        Settings {
            sticky: c.algorithm == Algorithm::Sticky,
            base: if c.algorithm == Algorithm::Sticky {
                Algorithm::RoundRobin
            } else {
                c.algorithm
            },
            stubborn: false,
            blacklist: c.blacklist,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
        }
    }
}

pub struct State {
    pub servers: Vec<ServerState>,
    pub emergency: Option<ServerState>,
    pub select: Box<dyn Select>,
    pub clients: ClientTable,
    pub settings: Settings,
    /// Live connections by id, for `show conns`.
    pub conns: BTreeMap<u64, Arc<ConnInfo>>,
    next_conn: u64,
    /// Bumped when a reload rebuilds the server list: a slot index taken before then is found
    /// again by address.
    epoch: u64,
}

impl ConnInfo {
    /// The local address of the upstream connection. Call with the state lock held.
    pub fn local(&self) -> SocketAddr {
        sys::socket::local_addr(self.upstream_fd).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

impl State {
    /// Rebuild the selector after the algorithm or the server list changed.
    pub fn reselect(&mut self) {
        self.select = select::new(self.settings.sticky, self.settings.base, &self.servers);
        let n = self.servers.len();
        self.clients.retain_servers(n);
    }
}

/// One live connection, both 5-tuples and live byte counts.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: u64,
    /// The client: the TCP peer, or the source a PROXY header carried.
    pub client: SocketAddr,
    /// The TCP peer (differs from `client` behind another proxy).
    pub peer: SocketAddr,
    pub listen: SocketAddr,
    /// The upstream socket, for its local address: asked for only by `show conns` (under the
    /// state lock, while the connection is registered and so the descriptor open) rather than
    /// with a getsockname(2) on every connection.
    pub upstream_fd: std::os::fd::RawFd,
    pub server: SocketAddr,
    /// Index of the server, None for the emergency server.
    pub server_index: Option<usize>,
    pub started: Instant,
    pub bytes: relay::Counters,
}

/// One balancer's shared state; the lock is held only for bookkeeping, never across I/O.
pub struct Balancer {
    pub cfg: config::Balancer,
    state: Mutex<State>,
    pub stats: Stats,
    /// max_connections: one permit per open client connection.
    pub limit: Arc<Semaphore>,
    max_connections: AtomicUsize,
    /// Open client connections (for drain on shutdown).
    active: AtomicUsize,
    /// Connections waiting for a local descriptor or port to reach their server.
    local_waiting: AtomicUsize,
    idle: Notify,
    last_no_server_log: AtomicU64,
    /// The socket engines (one per runtime worker), started with the first connection.
    engines: std::sync::OnceLock<Vec<Arc<Engine>>>,
    engines_init: Mutex<()>,
    next_engine: AtomicUsize,
}

/// Which server a connection is using, so the count is given back even when the task is
/// cancelled (shutdown deadline).
enum Slot {
    Regular(usize),
    Emergency,
}

struct ConnGuard<'a> {
    lb: &'a Balancer,
    slot: Slot,
    /// The server's address and the server list's epoch when the slot was taken.
    addr: SocketAddr,
    epoch: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.lb.lock();
        if let Some(s) = st.guarded(self) {
            s.conns = s.conns.saturating_sub(1);
        }
    }
}

impl State {
    fn server_mut(&mut self, slot: &Slot) -> Option<&mut ServerState> {
        match slot {
            Slot::Regular(i) => self.servers.get_mut(*i),
            Slot::Emergency => self.emergency.as_mut(),
        }
    }

    /// The index of a guard's server now (a reload may have moved or removed it).
    fn index_of(&self, g: &ConnGuard<'_>) -> Option<usize> {
        match g.slot {
            Slot::Regular(i) if self.epoch == g.epoch => Some(i),
            Slot::Regular(_) => self.servers.iter().position(|s| s.cfg.addr == g.addr),
            Slot::Emergency => None,
        }
    }

    /// A guard's server now, if it still exists.
    fn guarded(&mut self, g: &ConnGuard<'_>) -> Option<&mut ServerState> {
        match g.slot {
            Slot::Emergency => self
                .emergency
                .as_mut()
                .filter(|s| g.epoch == self.epoch || s.cfg.addr == g.addr),
            Slot::Regular(_) => {
                let i = self.index_of(g)?;
                self.servers.get_mut(i)
            }
        }
    }
}

struct ActiveGuard<'a>(&'a Balancer);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Balancer {
    pub fn new(cfg: config::Balancer) -> Arc<Self> {
        let servers: Vec<ServerState> = cfg.servers.iter().cloned().map(ServerState::new).collect();
        let settings = Settings::from_config(&cfg);
        let select = select::new(settings.sticky, settings.base, &servers);
        let emergency = cfg.emergency.map(ServerState::emergency);
        let clients = ClientTable::new(cfg.max_clients, cfg.tracking);
        Arc::new(Balancer {
            limit: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: AtomicUsize::new(cfg.max_connections),
            state: Mutex::new(State {
                servers,
                emergency,
                select,
                clients,
                settings,
                conns: BTreeMap::new(),
                next_conn: 0,
                epoch: 0,
            }),
            cfg,
            stats: Stats::default(),
            active: AtomicUsize::new(0),
            local_waiting: AtomicUsize::new(0),
            idle: Notify::new(),
            last_no_server_log: AtomicU64::new(0),
            engines: std::sync::OnceLock::new(),
            engines_init: Mutex::new(()),
            next_engine: AtomicUsize::new(0),
        })
    }

    /// The engine for a new connection: round robin over one per runtime worker.
    fn engine(&self) -> io::Result<Arc<Engine>> {
        let list = match self.engines.get() {
            Some(l) => l,
            None => {
                let _init = self.engines_init.lock().unwrap_or_else(|e| e.into_inner());
                if self.engines.get().is_none() {
                    let n = tokio::runtime::Handle::current().metrics().num_workers();
                    let list = (0..n.max(1))
                        .map(|_| Engine::start())
                        .collect::<io::Result<Vec<_>>>()?;
                    debug!(target: "lb", balancer = %self.cfg.name, engines = list.len(), "socket engines started");
                    let _ = self.engines.set(list);
                }
                self.engines
                    .get()
                    .ok_or_else(|| io::Error::other("no socket engine"))?
            }
        };
        let i = self.next_engine.fetch_add(1, Ordering::Relaxed) % list.len();
        Ok(list[i].clone())
    }

    /// The state lock. A panic elsewhere cannot leave it unusable: the data is plain counters.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Wait until no client connection is open.
    pub async fn drained(&self) {
        loop {
            let n = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            n.await;
        }
    }

    /// max_connections now (the control port can raise it).
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// Raise max_connections (pen's conn_max only grows the table).
    pub fn grow_max_connections(&self, n: usize) {
        let old = self.max_connections.fetch_max(n, Ordering::Relaxed);
        if n > old {
            self.limit.add_permits(n - old);
        }
    }

    /// Serve one accepted client until it ends.
    /// `listen` is the listener's address; a wildcard one is resolved per connection.
    pub async fn serve(self: Arc<Self>, client: OwnedFd, peer: SocketAddr, listen: SocketAddr) {
        self.active.fetch_add(1, Ordering::AcqRel);
        let _active = ActiveGuard(&self);
        let engine = match self.engine() {
            Ok(e) => e,
            Err(e) => {
                warn!(target: "lb", balancer = %self.cfg.name, client = %peer, "no socket engine: {e}; client closed");
                return;
            }
        };
        let client = match engine.register(client) {
            Ok(c) => c,
            Err(e) => {
                warn!(target: "lb", balancer = %self.cfg.name, client = %peer, "cannot poll the client socket: {e}; client closed");
                return;
            }
        };
        // Nagle on a relay adds ~40 ms stalls per response (pen without tcp_nodelay). Linux
        // accepted sockets inherit TCP_NODELAY from the listener (sys::socket::listener sets
        // it), which saves a setsockopt(2) per connection.
        #[cfg(not(target_os = "linux"))]
        let _ = socket2::SockRef::from(client.fd()).set_tcp_nodelay(true);
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let listen = if listen.ip().is_unspecified() {
            sys::socket::local_addr(client.fd().as_raw_fd()).unwrap_or(unknown)
        } else {
            listen
        };
        // Who the client is: behind another proxy, the address its PROXY header carries.
        let (who, dst, early) = if self.cfg.accept_proxy {
            match read_proxy_header(&client).await {
                Ok((addrs, rest)) => match addrs {
                    Some(a) => (a.src, a.dst, rest),
                    // LOCAL / UNKNOWN: the proxy's own connection (health checks).
                    None => (peer, listen, rest),
                },
                Err(e) => {
                    self.stats.proxy_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(target: "lb", balancer = %self.cfg.name, client = %peer, "no valid PROXY header: {e}; closed");
                    return;
                }
            }
        } else {
            (peer, listen, Vec::new())
        };
        let Some((upstream, guard, addr)) = self.connect_for(&engine, who).await else {
            self.stats.no_server.fetch_add(1, Ordering::Relaxed);
            self.log_no_server(who);
            return;
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        let upstream_fd = upstream.fd().as_raw_fd();
        let (info, idle) = {
            let mut st = self.lock();
            st.next_conn += 1;
            let info = Arc::new(ConnInfo {
                id: st.next_conn,
                client: who,
                peer,
                // Where the client connected: our listener, or behind a proxy the
                // destination its PROXY header names.
                listen: dst,
                upstream_fd,
                server: addr,
                server_index: st.index_of(&guard),
                started: Instant::now(),
                bytes: relay::Counters::default(),
            });
            st.conns.insert(info.id, info.clone());
            (info, st.settings.idle_timeout)
        };
        let id = info.id;
        // Boxed: it moves into the engine's relay table, whose entries stay small.
        let mut rewriter = self.cfg.http_forwarded_for.then(|| {
            let trusted = self
                .cfg
                .trusted_proxies
                .iter()
                .any(|(n, l)| config::in_network(who.ip(), *n, *l));
            Box::new(RequestRewriter::new(XffConfig {
                client: who.ip(),
                trusted,
                proto: "http",
            }))
        });
        let end = match self
            .preamble(&upstream, who, dst, &early, rewriter.as_deref_mut(), &info)
            .await
        {
            Ok(()) => {
                let mut running = engine.relay(&client, &upstream, info.clone(), rewriter.take());
                if idle.is_zero() {
                    let (end, rw) = (&mut running).await;
                    rewriter = rw;
                    end
                } else {
                    // Look for moved bytes four times per period rather than stamping every
                    // read: the connection closes between `idle` and 1.25 x `idle` after the
                    // last byte moved.
                    let tick = (idle / 4).max(Duration::from_millis(10));
                    let moved = || {
                        info.bytes.up.load(Ordering::Relaxed)
                            + info.bytes.down.load(Ordering::Relaxed)
                    };
                    let (mut seen, mut quiet) = (moved(), Duration::ZERO);
                    loop {
                        tokio::select! {
                            (end, rw) = &mut running => {
                                rewriter = rw;
                                break end;
                            }
                            _ = tokio::time::sleep(tick) => {
                                let now = moved();
                                if now != seen {
                                    (seen, quiet) = (now, Duration::ZERO);
                                } else {
                                    quiet += tick;
                                    if quiet >= idle {
                                        rewriter = running.cancel();
                                        break relay::End::Idle;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => relay::End::Error(e),
        };
        let (up, down) = (
            info.bytes.up.load(Ordering::Relaxed),
            info.bytes.down.load(Ordering::Relaxed),
        );
        // Read while the upstream socket is open and the connection registered.
        let local = if self.cfg.connection_log {
            info.local()
        } else {
            unknown
        };
        {
            let mut st = self.lock();
            st.conns.remove(&id);
            if let Some(s) = st.guarded(&guard) {
                s.sx += up;
                s.rx += down;
            }
            // pen's sx/rx per client: bytes sent to / received from the client.
            st.clients.add_bytes(who.ip(), down, up);
        }
        let how = match &end {
            relay::End::Closed => "closed".to_string(),
            relay::End::Idle => {
                self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                "idle timeout".to_string()
            }
            relay::End::BadRequest(e) => {
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                lingering_close(&client).await;
                format!("400 bad request ({e})")
            }
            relay::End::Error(e) => format!("error: {e}"),
        };
        if self.cfg.connection_log {
            let server = match guard.slot {
                Slot::Regular(i) => format!("#{i}"),
                Slot::Emergency => "emergency".into(),
            };
            let requests = rewriter
                .as_ref()
                .map_or(String::new(), |r| format!(" requests={}", r.requests()));
            let via = if who == peer {
                String::new()
            } else {
                format!(" via={peer}")
            };
            info!(target: "lb",
                "conn {who} -> {dst} {local} -> {addr} balancer={} server={server} up={up} down={down} duration={:.3}s end=\"{how}\"{requests}{via}",
                self.cfg.name, info.started.elapsed().as_secs_f64());
        } else if let relay::End::Error(e) = &end {
            debug!(target: "lb", balancer = %self.cfg.name, client = %who, server = %addr, "connection ended: {e}");
        }
    }

    /// What goes to the server before the relay: the PROXY header, then the client bytes that
    /// came with the PROXY header we accepted.
    async fn preamble(
        &self,
        upstream: &Conn,
        who: SocketAddr,
        dst: SocketAddr,
        early: &[u8],
        rewriter: Option<&mut RequestRewriter>,
        info: &ConnInfo,
    ) -> io::Result<()> {
        let mut out = match self.cfg.proxy_protocol {
            config::ProxyProtocol::None => Vec::new(),
            config::ProxyProtocol::V1 => proxy::encode_v1(who, dst),
            config::ProxyProtocol::V2 => proxy::encode_v2(who, dst),
        };
        if !early.is_empty() {
            info.bytes
                .up
                .fetch_add(early.len() as u64, Ordering::Relaxed);
            match rewriter {
                Some(r) => {
                    if let Err(e) = r.feed(early, &mut out) {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                    }
                }
                None => out.extend_from_slice(early),
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        upstream.write_all(&out).await
    }

    fn log_no_server(&self, peer: SocketAddr) {
        // One line per second at most: a dead pool under load must not flood the log.
        let now = coarse_secs();
        let last = self.last_no_server_log.swap(now, Ordering::Relaxed);
        if last != now {
            warn!(target: "lb", balancer = %self.cfg.name, client = %peer,
                "no server could take the client, closed ({} so far)",
                self.stats.no_server.load(Ordering::Relaxed));
        }
    }

    /// The first choice, the number of servers, and whether to fail over (not stubborn).
    fn plan(&self, client: IpAddr, port: u16, now: Instant) -> (Option<usize>, usize, bool) {
        let mut st = self.lock();
        let st = &mut *st;
        let remembered = st.clients.get(client, now).and_then(|e| e.server);
        let p = Pick {
            client,
            port,
            now,
            servers: &st.servers,
            remembered,
        };
        (st.select.pick(&p), st.servers.len(), !st.settings.stubborn)
    }

    /// Reserve a connection slot on server `slot` if it is usable now.
    fn reserve(
        &self,
        slot: &Slot,
        client: IpAddr,
        now: Instant,
    ) -> Option<(SocketAddr, Duration, u64)> {
        let mut st = self.lock();
        let sticky = match slot {
            Slot::Regular(i) => st.clients.get(client, now).and_then(|e| e.server) == Some(*i),
            Slot::Emergency => false,
        };
        let (timeout, epoch) = (st.settings.connect_timeout, st.epoch);
        let s = st.server_mut(slot)?;
        // The emergency server is the last resort: tried even when it failed recently.
        if matches!(slot, Slot::Regular(_)) && !s.usable(now, sticky) {
            return None;
        }
        s.conns += 1;
        Some((s.cfg.addr, timeout, epoch))
    }

    async fn connect_for(
        &self,
        engine: &Arc<Engine>,
        peer: SocketAddr,
    ) -> Option<(Conn, ConnGuard<'_>, SocketAddr)> {
        let now = Instant::now();
        let (first, n, failover) = self.plan(peer.ip(), peer.port(), now);
        // pen's walk: the pick, then pick+1, pick+2 ...; stubborn tries only the pick.
        let tries = if failover { n } else { 1 };
        let walk = first
            .into_iter()
            .flat_map(|f| (0..tries).map(move |k| Slot::Regular((f + k) % n)));
        let last = failover.then_some(Slot::Emergency);
        for slot in walk.chain(last) {
            let Some((addr, timeout, epoch)) = self.reserve(&slot, peer.ip(), Instant::now())
            else {
                continue;
            };
            let guard = ConnGuard {
                lb: self,
                slot,
                addr,
                epoch,
            };
            match connect(engine, addr, timeout, &self.local_waiting).await {
                Ok(s) => {
                    let now = Instant::now();
                    let mut st = self.lock();
                    let index = st.index_of(&guard);
                    st.clients.record(peer.ip(), index, now);
                    // A blacklist is not cleared here: a connection placed before an
                    // operator's `server N blacklist T` must not undo it by succeeding.
                    if let Some(s) = st.guarded(&guard) {
                        s.total += 1;
                    }
                    return Some((s, guard, addr));
                }
                Err(ConnectError::Local(e)) => {
                    // Every server would hit the same shortage: give this client up without
                    // blaming anyone.
                    warn!(target: "lb", balancer = %self.cfg.name, client = %peer,
                        "no local resources to reach a server for {} s ({e}); client closed", LOCAL_WAIT.as_secs());
                    return None;
                }
                Err(ConnectError::Server(e)) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    let mut st = self.lock();
                    let bl = st.settings.blacklist;
                    let first_failure = st
                        .guarded(&guard)
                        .is_some_and(|s| s.blacklist(Instant::now(), bl));
                    drop(st);
                    if first_failure {
                        warn!(target: "lb", balancer = %self.cfg.name, server = %addr,
                            "server failed ({e}), blacklisted for {}", config::duration::format(bl));
                    } else {
                        debug!(target: "lb", balancer = %self.cfg.name, server = %addr, "server failed again ({e})");
                    }
                }
            }
        }
        None
    }
}

/// Why a connect failed: the server's fault (blacklist it, try the next) or ours.
enum ConnectError {
    Server(io::Error),
    /// This host ran out of descriptors, buffers or ports for longer than LOCAL_WAIT.
    Local(io::Error),
}

/// How long a client waits for this host to have a descriptor or port again: it was
/// accepted, so it can be served once the shortage passes.
const LOCAL_WAIT: Duration = Duration::from_secs(30);

/// Connect, giving the server `timeout` to answer. A shortage of local resources
/// (descriptors, ports) is not the server's fault: wait for it to pass (backing off) instead
/// of blaming the server.
async fn connect(
    engine: &Arc<Engine>,
    addr: SocketAddr,
    timeout: Duration,
    waiting: &AtomicUsize,
) -> Result<Conn, ConnectError> {
    let give_up = tokio::time::Instant::now() + LOCAL_WAIT.max(timeout);
    let mut backoff = Duration::from_millis(5);
    loop {
        let result = match sys::socket::connect(addr) {
            Err(e) => Err(e),
            Ok((fd, done)) => match engine.register(fd) {
                Err(e) => Err(e),
                Ok(conn) if done => Ok(conn),
                Ok(conn) => match tokio::time::timeout(timeout, conn.connected()).await {
                    Err(_) => {
                        return Err(ConnectError::Server(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connect timed out",
                        )));
                    }
                    Ok(r) => r.map(|()| conn),
                },
            },
        };
        match result {
            Ok(s) => return Ok(s),
            Err(e) if sys::is_resource_exhaustion(&e) => {
                if tokio::time::Instant::now() + backoff >= give_up {
                    return Err(ConnectError::Local(e));
                }
                // While anyone waits here the accept loops take no new clients, so freed
                // descriptors go to clients already accepted (or everyone starves).
                waiting.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(backoff).await;
                waiting.fetch_sub(1, Ordering::AcqRel);
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(ConnectError::Server(e)),
        }
    }
}

/// After answering 400, read and drop what the client still sends for a moment before closing:
/// closing with unread data sends a reset, and a reset makes the client's kernel discard the
/// 400 it has not read yet.
async fn lingering_close(client: &Conn) {
    let _ = sys::socket::shutdown_write(client.fd());
    let drain = async {
        // On the heap: an array here would sit in every connection's task, used or not.
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        while total < 1 << 20 {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Read a PROXY header (v1 or v2) from a client within 5 s; returns its addresses and the
/// client bytes that followed it in the same reads.
async fn read_proxy_header(client: &Conn) -> io::Result<(Option<proxy::Addrs>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(256);
    let read = async {
        let mut chunk = vec![0u8; 1024];
        loop {
            match proxy::decode(&buf) {
                Ok(proxy::Decoded::Header { len, addrs, .. }) => {
                    return Ok((addrs, buf[len..].to_vec()));
                }
                Ok(proxy::Decoded::Incomplete) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            // A v2 header is at most 16 + 65535 bytes; refuse anything longer.
            if buf.len() > 16 + 65_535 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "PROXY header too long",
                ));
            }
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a PROXY header",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header within 5 s"))?
}

fn coarse_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A listening socket (non-blocking) ready for `accept_loop`.
pub fn listener(l: std::net::TcpListener) -> io::Result<AsyncFd<std::net::TcpListener>> {
    // SAFETY: a std TcpListener owns its descriptor for its whole life.
    unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// The next client: its socket (non-blocking, not registered anywhere yet) and address.
async fn accept(l: &AsyncFd<std::net::TcpListener>) -> io::Result<(OwnedFd, SocketAddr)> {
    loop {
        let mut ready = l.readable().await?;
        if let Ok(r) = ready.try_io(|l| sys::socket::accept(l.get_ref().as_raw_fd())) {
            return r;
        }
    }
}

/// Accept clients on one listener until `stop` turns true. Descriptor exhaustion makes the
/// loop back off (the pending clients wait in the kernel's backlog) and log once per episode.
pub async fn accept_loop(
    lb: Arc<Balancer>,
    listener: AsyncFd<std::net::TcpListener>,
    mut stop: watch::Receiver<bool>,
) {
    let local = listener.get_ref().local_addr().ok();
    let listen = local.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut exhausted_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(10);
    loop {
        if *stop.borrow() {
            return;
        }
        // max_connections: stop accepting while full; clients wait in the backlog.
        let permit = tokio::select! {
            p = lb.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        // Clients already accepted are waiting for descriptors: accepting more would take the
        // ones they need. The new clients wait in the kernel's backlog meanwhile.
        let res = if lb.local_waiting.load(Ordering::Acquire) > 0 {
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        } else {
            tokio::select! {
                r = accept(&listener) => r,
                _ = stop.changed() => return,
            }
        };
        match res {
            Ok((sock, peer)) => {
                if let Some(t) = exhausted_since.take() {
                    info!(target: "lb", balancer = %lb.cfg.name,
                        "accepting again after {} ms of descriptor exhaustion", t.elapsed().as_millis());
                    backoff = Duration::from_millis(10);
                }
                lb.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let lb2 = lb.clone();
                tokio::spawn(async move {
                    lb2.serve(sock, peer, listen).await;
                    drop(permit);
                });
                // Let this client open its server socket before the next accept: a burst of
                // accepts near the descriptor limit would take the descriptors the accepted
                // clients need to reach their servers, and they would starve each other. If
                // this one has to wait for a descriptor, `local_waiting` pauses accepting.
                tokio::task::yield_now().await;
            }
            Err(e) if sys::is_resource_exhaustion(&e) => {
                drop(permit);
                lb.stats.fd_exhausted.fetch_add(1, Ordering::Relaxed);
                if exhausted_since.is_none() {
                    exhausted_since = Some(Instant::now());
                    warn!(target: "lb", balancer = %lb.cfg.name, listen = ?local,
                        "cannot accept: {e}; backing off until descriptors free up");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // ECONNABORTED and friends: that client is gone, the listener is fine.
                drop(permit);
                debug!(target: "lb", balancer = %lb.cfg.name, "accept: {e}");
            }
        }
    }
}

#[cfg(test)]
mod size_probe {
    /// Every open connection is one task holding this future: its size is a floor under the
    /// memory per idle connection (a 16 KiB buffer declared in a rarely used branch once made
    /// it 17 KiB).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(a).unwrap();
        let cfg = crate::config::parse_str(
            "[[balancer]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        let lb = super::Balancer::new(cfg.balancers[0].clone());
        let f = lb.clone().serve(c.into(), a, a);
        assert!(
            std::mem::size_of_val(&f) <= 2048,
            "serve future is {} bytes",
            std::mem::size_of_val(&f)
        );
    }
}
