//! The TCP balancer of one `[[balancer]]`: its servers, client table, limits and counters,
//! shared between the data-path threads (engine, session) and the control port.
//!
//! Failure handling (pen's intent, without pen 0.34.1's bug that dropped the client on a refused
//! connect): any failure to reach a server (refused, unreachable, timeout) blacklists it for
//! `blacklist` and the same client is tried on the next usable server, then on the emergency
//! server; the client is closed only when nothing can take it (balancer::session).
//!
//! The data path changes the books only through the `Balancer` methods below, named for what
//! happened (`accepted`, `connected`, `connect_failed`, `closed` ...): each takes the state
//! lock for a few field updates and never holds it across I/O.

mod avail;
pub use avail::Availability;
mod checks;
pub use checks::{Due, Switch};
pub mod clients;
mod context;
pub mod engine;
pub mod pool;
pub mod relay;
mod reload;
mod resolved;
pub mod select;
mod session;
mod srv;
mod timers;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::config::{self, Algorithm};
use crate::sys;
use clients::ClientTable;
use pool::ServerState;
use relay::End;
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
    /// HTTP modes: clients closed for not sending a complete request head within
    /// `head_timeout` of its first byte (slow or silent clients).
    pub head_timeouts: AtomicU64,
    /// Accept errors from descriptor exhaustion (EMFILE/ENFILE).
    pub fd_exhausted: AtomicU64,
    /// DNS records or addresses refused for servers (0.0.0.0, multicast, port 0, a bad SRV
    /// target ...).
    pub dns_refused: AtomicU64,
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
    /// Active health checks (a reload replaces them).
    pub health: config::Health,
    pub slowstart: Duration,
    pub on_down: config::OnDown,
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
            health: c.health.clone(),
            slowstart: c.slowstart,
            on_down: c.on_down,
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
    /// Bumped when a reload rebuilds the server list, or an SRV slot is emptied or reused: a
    /// slot index taken before then is found again by address.
    epoch: u64,
    /// The `servers_srv` name in force (a reload may change it).
    pub srv_name: Option<String>,
}

impl ConnInfo {
    /// The local address of the upstream connection. Call with the state lock held.
    pub fn local(&self) -> SocketAddr {
        sys::socket::local_addr_raw(self.upstream_fd).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
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
    pub upstream_fd: RawFd,
    pub server: SocketAddr,
    /// Index of the server, None for the emergency server.
    pub server_index: Option<usize>,
    pub started: Instant,
    pub bytes: relay::Counters,
}

/// Where a new connection comes from and went to (see `ConnInfo`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoints {
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub listen: SocketAddr,
}

/// One balancer's shared state; the lock is held only for bookkeeping, never across I/O.
pub struct Balancer {
    pub cfg: config::Balancer,
    state: Mutex<State>,
    pub stats: Stats,
    max_connections: AtomicUsize,
    /// Open client connections (max_connections, drain on shutdown).
    active: AtomicUsize,
    /// Connections waiting for a local descriptor or port to reach their server: while any
    /// does, no new client is accepted (it would take the descriptor they wait for).
    local_waiting: AtomicUsize,
    /// A data-path thread left a listener of this balancer unaccepted because of the two
    /// limits above: whoever frees a slot wakes the threads (`resume_accepting`).
    paused: AtomicBool,
    /// The data-path threads serving this balancer's listeners, to wake when it may accept.
    accepters: Mutex<Vec<Arc<sys::poller::Waker>>>,
    idle: Notify,
    last_no_server_log: AtomicU64,
    /// Counts the servers' health and agent changes, for whoever follows them (the state
    /// file's saver, VRRP tracking) without polling.
    health_changes: watch::Sender<u64>,
    /// How many servers can take a new client (avail.rs), for VRRP `track`.
    avail: tokio::sync::watch::Sender<Availability>,
}

/// Which server a connection is using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Regular(usize),
    Emergency,
}

/// A connection's place on a server (counted in its `conns`), taken by `reserve` and given
/// back by `release`.
#[derive(Debug)]
pub(crate) struct Guard {
    slot: Slot,
    /// The server's address and the server list's epoch when the slot was taken.
    addr: SocketAddr,
    epoch: u64,
}

impl Guard {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn slot(&self) -> Slot {
        self.slot
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
    fn index_of(&self, g: &Guard) -> Option<usize> {
        match g.slot {
            Slot::Regular(i) if self.epoch == g.epoch => Some(i),
            Slot::Regular(_) => self.servers.iter().position(|s| s.cfg.addr == g.addr),
            Slot::Emergency => None,
        }
    }

    /// A guard's server now, if it still exists.
    fn guarded(&mut self, g: &Guard) -> Option<&mut ServerState> {
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

    /// Give a guard's place back.
    fn release(&mut self, g: Guard) {
        if let Some(s) = self.guarded(&g) {
            s.conns = s.conns.saturating_sub(1);
        }
    }
}

impl Balancer {
    pub fn new(cfg: config::Balancer) -> Arc<Self> {
        let servers: Vec<ServerState> = cfg.servers.iter().cloned().map(ServerState::new).collect();
        let settings = Settings::from_config(&cfg);
        let select = select::new(settings.sticky, settings.base, &servers);
        let emergency = cfg.emergency.clone().map(ServerState::emergency);
        let clients = ClientTable::new(cfg.max_clients, cfg.tracking);
        let mut state = State {
            servers,
            emergency,
            select,
            clients,
            settings,
            conns: BTreeMap::new(),
            next_conn: 0,
            epoch: 0,
            srv_name: cfg.servers_srv.clone(),
        };
        state.respread(Instant::now());
        let avail = tokio::sync::watch::channel(state.availability(Instant::now())).0;
        Arc::new(Balancer {
            max_connections: AtomicUsize::new(cfg.max_connections),
            state: Mutex::new(state),
            cfg,
            stats: Stats::default(),
            active: AtomicUsize::new(0),
            local_waiting: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            accepters: Mutex::new(Vec::new()),
            idle: Notify::new(),
            last_no_server_log: AtomicU64::new(0),
            health_changes: watch::Sender::new(0),
            avail,
        })
    }

    /// Follow the servers' health changes: the receiver sees a new value after each.
    pub fn health_changes(&self) -> watch::Receiver<u64> {
        self.health_changes.subscribe()
    }

    /// A server changed state by its checks, its agent or the operator's switch. Cheap and
    /// never blocks: it may run on a data-path thread (a passive failure).
    pub(crate) fn health_changed(&self) {
        self.health_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The state lock. A panic elsewhere cannot leave it unusable: the data is plain counters.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget client-table entries past `tracking` (the daemon's once-a-second housekeeping).
    pub fn expire_clients(&self, now: Instant) {
        self.lock().clients.expire(now);
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
            self.resume_accepting();
        }
    }

    /// Whether a new client must wait in the backlog: a limit is reached, or accepted clients
    /// wait for descriptors.
    fn accept_blocked(&self) -> bool {
        self.waiting_locally() || self.active.load(Ordering::SeqCst) >= self.max_connections()
    }

    /// Whether accepted clients wait for a local descriptor or port to reach their server.
    pub(crate) fn waiting_locally(&self) -> bool {
        self.local_waiting.load(Ordering::SeqCst) > 0
    }

    /// Count a new client in, unless the balancer is at a limit; then the caller leaves its
    /// listener unaccepted (the clients wait in the backlog) and is woken when that changes.
    pub(crate) fn admit(&self) -> bool {
        loop {
            if self.accept_blocked() {
                // Say so, then look again: a slot freed between the look and the flag would
                // otherwise wake nobody.
                self.paused.store(true, Ordering::SeqCst);
                if self.accept_blocked() {
                    return false;
                }
            }
            let n = self.active.load(Ordering::SeqCst);
            if n < self.max_connections()
                && self
                    .active
                    .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return true;
            }
        }
    }

    /// A client connection closed.
    pub(crate) fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
        self.resume_accepting();
    }

    /// A connection starts (or stops) waiting for local resources.
    pub(crate) fn local_wait(&self, waiting: bool) {
        if waiting {
            self.local_waiting.fetch_add(1, Ordering::SeqCst);
        } else {
            self.local_waiting.fetch_sub(1, Ordering::SeqCst);
            self.resume_accepting();
        }
    }

    /// Wake the data-path threads that left a listener unaccepted at a limit. The thread that
    /// freed the slot looks at its listeners after every pass anyway; the wake-up (a write to
    /// each other thread's waker) happens only while some thread is paused.
    fn resume_accepting(&self) {
        // The load first: the common case (nobody paused) stays a plain read.
        if self.paused.load(Ordering::SeqCst) && self.paused.swap(false, Ordering::SeqCst) {
            let list = self.accepters.lock().unwrap_or_else(|e| e.into_inner());
            for w in list.iter() {
                if !context::is_current(w) {
                    w.wake();
                }
            }
        }
    }

    /// A data-path thread now serves one of this balancer's listeners.
    pub(crate) fn add_accepter(&self, w: &Arc<sys::poller::Waker>) {
        let mut list = self.accepters.lock().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|x| Arc::ptr_eq(x, w)) {
            list.push(w.clone());
        }
    }

    /// A client was taken from a listener's backlog.
    pub(crate) fn accepted(&self) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// accept(2) failed for want of descriptors.
    pub(crate) fn out_of_descriptors(&self) {
        self.stats.fd_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// A client on an `accept_proxy` listener sent no valid PROXY header.
    pub(crate) fn proxy_refused(&self) {
        self.stats.proxy_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// No server, nor the emergency server, could take `client`: it is closed.
    pub(crate) fn no_server(&self, client: SocketAddr) {
        let n = self.stats.no_server.fetch_add(1, Ordering::Relaxed) + 1;
        // One line per second at most: a dead pool under load must not flood the log.
        let now = coarse_secs();
        let last = self.last_no_server_log.swap(now, Ordering::Relaxed);
        if last != now {
            warn!(target: "lb", balancer = %self.cfg.name, client = %client,
                "no server could take the client, closed ({n} so far)");
        }
    }

    /// The first choice, the number of servers, and whether to fail over (not stubborn).
    pub(crate) fn plan(
        &self,
        client: IpAddr,
        port: u16,
        now: Instant,
    ) -> (Option<usize>, usize, bool) {
        let mut st = self.lock();
        let st = &mut *st;
        let remembered = st.clients.get(client, now).and_then(|e| e.server);
        let p = Pick {
            client,
            port,
            now,
            servers: &st.servers,
            remembered,
            srv_tier: st.srv_tier(now),
        };
        (st.select.pick(&p), st.servers.len(), !st.settings.stubborn)
    }

    /// Reserve a connection slot on server `slot` if it is usable now: the guard and the
    /// connect timeout.
    pub(crate) fn reserve(
        &self,
        slot: Slot,
        client: IpAddr,
        now: Instant,
    ) -> Option<(Guard, Duration)> {
        let mut st = self.lock();
        let sticky = match slot {
            Slot::Regular(i) => st.clients.get(client, now).and_then(|e| e.server) == Some(i),
            Slot::Emergency => false,
        };
        let (timeout, epoch) = (st.settings.connect_timeout, st.epoch);
        let tier = st.srv_tier(now);
        let s = st.server_mut(&slot)?;
        // The emergency server is the last resort: tried even when it failed recently, but
        // not without an address.
        let usable = match slot {
            Slot::Regular(_) => s.usable(now, sticky) && select::in_tier(s, tier),
            Slot::Emergency => !s.unresolved,
        };
        if !usable {
            return None;
        }
        s.conns += 1;
        let addr = s.cfg.addr;
        Some((Guard { slot, addr, epoch }, timeout))
    }

    /// A server failed to take a connection: blacklist it (a warning for the first failure of
    /// an episode) and give the guard's place back.
    pub(crate) fn connect_failed(&self, g: Guard, e: &std::io::Error) {
        self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        let addr = g.addr;
        let mut st = self.lock();
        let bl = st.settings.blacklist;
        let first_failure = st
            .guarded(&g)
            .is_some_and(|s| s.blacklist(Instant::now(), bl));
        if let Some(i) = st.index_of(&g) {
            self.passive_failure(&mut st, i, &checks_reason(e));
        }
        st.release(g);
        self.publish_availability(&st, Instant::now());
        drop(st);
        if first_failure {
            warn!(target: "lb", balancer = %self.cfg.name, server = %addr,
                "server failed ({e}), blacklisted for {}", config::duration::format(bl));
        } else {
            tracing::debug!(target: "lb", balancer = %self.cfg.name, server = %addr, "server failed again ({e})");
        }
    }

    /// The guard's server took the connection: remember the client's server, count the
    /// connection on it and list it for `show conns`. Its entry, and the idle timeout.
    pub(crate) fn connected(
        &self,
        g: &Guard,
        ends: Endpoints,
        upstream_fd: RawFd,
        now: Instant,
    ) -> (Arc<ConnInfo>, Duration) {
        let mut st = self.lock();
        let index = st.index_of(g);
        st.clients.record(ends.client.ip(), index, now);
        // A blacklist is not cleared here: a connection placed before an operator's
        // `server N blacklist T` must not undo it by succeeding.
        if let Some(s) = st.guarded(g) {
            s.total += 1;
        }
        st.next_conn += 1;
        let info = Arc::new(ConnInfo {
            id: st.next_conn,
            client: ends.client,
            peer: ends.peer,
            listen: ends.listen,
            upstream_fd,
            server: g.addr,
            server_index: index,
            started: now,
            bytes: relay::Counters::default(),
        });
        st.conns.insert(info.id, info.clone());
        let idle = st.settings.idle_timeout;
        drop(st);
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        (info, idle)
    }

    /// A client did not send its request head in time (see `Stats::head_timeouts`).
    pub(crate) fn head_timed_out(&self) {
        self.stats.head_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's first request head was refused (answered 400).
    pub(crate) fn bad_request(&self) {
        self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A relay ended the way `end` says (counted when it is not a plain close).
    pub(crate) fn relay_ended(&self, end: &End) {
        let counter = match end {
            End::Idle => &self.stats.idle_closed,
            End::SlowHead => &self.stats.head_timeouts,
            End::BadRequest(_) => &self.stats.bad_requests,
            End::Closed | End::KeepAlive | End::Error(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection is done with its server: its `show conns` entry goes (call this before
    /// the upstream socket closes, which `show conns` asks for its address), its bytes are
    /// added to its server and client, and its place on the server is given back. Either
    /// may be missing: a connection that never connected holds at most a place.
    pub(crate) fn closed(&self, info: Option<Arc<ConnInfo>>, guard: Option<Guard>) {
        if info.is_none() && guard.is_none() {
            return;
        }
        let mut st = self.lock();
        if let Some(info) = info {
            let (up, down) = info.bytes.totals();
            st.conns.remove(&info.id);
            if let Some(g) = &guard
                && let Some(s) = st.guarded(g)
            {
                s.sx += up;
                s.rx += down;
            }
            // pen's sx/rx per client: bytes sent to / received from the client.
            st.clients.add_bytes(info.client.ip(), down, up);
        }
        if let Some(g) = guard {
            st.release(g);
        }
    }
}

/// A failed connect in the words of a check result.
fn checks_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused (client)".into(),
        std::io::ErrorKind::TimedOut => "connect timeout (client)".into(),
        _ => format!("connect failed (client): {e}"),
    }
}

fn coarse_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
