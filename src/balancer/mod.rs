//! The TCP balancer of one `[[balancer]]`: accept loop, server choice with failover, relay.
//!
//! Failure handling (pen's intent, without pen 0.34.1's bug that dropped the client on a refused
//! connect): any failure to reach a server (refused, unreachable, timeout) blacklists it for
//! `blacklist` and the same client is tried on the next usable server, then on the emergency
//! server; the client is closed only when nothing can take it.

pub mod pool;
pub mod relay;
pub mod select;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::config;
use crate::sys;
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
    /// Accept errors from descriptor exhaustion (EMFILE/ENFILE).
    pub fd_exhausted: AtomicU64,
}

pub struct State {
    pub servers: Vec<ServerState>,
    pub emergency: Option<ServerState>,
    pub select: Box<dyn Select>,
}

/// One balancer's shared state; the lock is held only for bookkeeping, never across I/O.
pub struct Balancer {
    pub cfg: config::Balancer,
    state: Mutex<State>,
    pub stats: Stats,
    /// Open client connections (for drain on shutdown).
    active: AtomicUsize,
    idle: Notify,
    last_no_server_log: AtomicU64,
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
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.lb.lock();
        if let Some(s) = st.server_mut(&self.slot) {
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
        let select = select::new(cfg.algorithm, &servers, cfg.max_clients, cfg.tracking);
        let emergency = cfg.emergency.map(|addr| {
            ServerState::new(config::Server {
                addr,
                max: 0,
                hard: 0,
                weight: 0,
                prio: 0,
            })
        });
        Arc::new(Balancer {
            cfg,
            state: Mutex::new(State {
                servers,
                emergency,
                select,
            }),
            stats: Stats::default(),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            last_no_server_log: AtomicU64::new(0),
        })
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

    /// Serve one accepted client until it ends.
    pub async fn serve(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        self.active.fetch_add(1, Ordering::AcqRel);
        let _active = ActiveGuard(&self);
        // Nagle on a relay adds ~40 ms stalls per response (pen without tcp_nodelay).
        let _ = client.set_nodelay(true);
        let Some((upstream, guard, addr)) = self.connect_for(peer).await else {
            self.stats.no_server.fetch_add(1, Ordering::Relaxed);
            self.log_no_server(peer);
            return;
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        let ctr = relay::Counters::default();
        let end = relay::relay(&client, &upstream, self.cfg.idle_timeout, &ctr).await;
        let (up, down) = (
            ctr.up.load(Ordering::Relaxed),
            ctr.down.load(Ordering::Relaxed),
        );
        {
            let mut st = self.lock();
            if let Some(s) = st.server_mut(&guard.slot) {
                s.sx += up;
                s.rx += down;
            }
        }
        match end {
            relay::End::Closed => {}
            relay::End::Idle => {
                self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                debug!(target: "lb", balancer = %self.cfg.name, client = %peer, server = %addr, "idle timeout, closed");
            }
            relay::End::Error(e) => {
                debug!(target: "lb", balancer = %self.cfg.name, client = %peer, server = %addr, "connection ended: {e}");
            }
        }
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

    /// The candidate order: the algorithm's pick, then pen's walk (pick+1, pick+2, ...).
    fn plan(&self, client: IpAddr, port: u16, now: Instant) -> (Option<usize>, usize) {
        let mut st = self.lock();
        let st = &mut *st;
        let p = Pick {
            client,
            port,
            now,
            servers: &st.servers,
        };
        (st.select.pick(&p), st.servers.len())
    }

    /// Reserve a connection slot on server `slot` if it is usable now.
    fn reserve(&self, slot: &Slot, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let mut st = self.lock();
        let sticky = match slot {
            Slot::Regular(i) => st.select.remembered(client, now) == Some(*i),
            Slot::Emergency => false,
        };
        let s = st.server_mut(slot)?;
        // The emergency server is the last resort: tried even when it failed recently.
        if matches!(slot, Slot::Regular(_)) && !s.usable(now, sticky) {
            return None;
        }
        s.conns += 1;
        Some(s.cfg.addr)
    }

    async fn connect_for(
        &self,
        peer: SocketAddr,
    ) -> Option<(TcpStream, ConnGuard<'_>, SocketAddr)> {
        let now = Instant::now();
        let (first, n) = self.plan(peer.ip(), peer.port(), now);
        let walk = first
            .into_iter()
            .flat_map(|f| (0..n).map(move |k| Slot::Regular((f + k) % n)));
        for slot in walk.chain(std::iter::once(Slot::Emergency)) {
            let Some(addr) = self.reserve(&slot, peer.ip(), Instant::now()) else {
                continue;
            };
            let guard = ConnGuard { lb: self, slot };
            match self.connect(addr).await {
                Ok(s) => {
                    let mut st = self.lock();
                    if let Slot::Regular(i) = guard.slot {
                        st.select.connected(peer.ip(), i, Instant::now());
                    }
                    if let Some(s) = st.server_mut(&guard.slot) {
                        s.total += 1;
                        s.blacklisted_until = None;
                    }
                    return Some((s, guard, addr));
                }
                Err(e) => {
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    let bl = self.cfg.blacklist;
                    let first_failure = self
                        .lock()
                        .server_mut(&guard.slot)
                        .is_some_and(|s| s.blacklist(Instant::now(), bl));
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

    /// Connect within `connect_timeout`. A shortage of local resources (descriptors, ports) is
    /// not the server's fault: wait and retry within the same deadline instead of blacklisting.
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let deadline = tokio::time::Instant::now() + self.cfg.connect_timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            let attempt = async {
                let sock = if addr.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }?;
                sock.set_nodelay(true)?;
                sock.connect(addr).await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) if sys::is_resource_exhaustion(&e) => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        // Still our shortage, not the server's: report it without blaming it.
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("local: {e}"),
                        ));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

fn coarse_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Accept clients on one listener until `stop` turns true. Descriptor exhaustion makes the
/// loop back off (the pending clients wait in the kernel's backlog) and log once per episode.
pub async fn accept_loop(
    lb: Arc<Balancer>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    let mut exhausted_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(10);
    loop {
        if *stop.borrow() {
            return;
        }
        // max_connections: stop accepting while full; clients wait in the backlog.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let res = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        match res {
            Ok((sock, peer)) => {
                if let Some(t) = exhausted_since.take() {
                    info!(target: "lb", balancer = %lb.cfg.name,
                        "accepting again after {} ms of descriptor exhaustion", t.elapsed().as_millis());
                    backoff = Duration::from_millis(10);
                }
                lb.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let lb = lb.clone();
                tokio::spawn(async move {
                    lb.serve(sock, peer).await;
                    drop(permit);
                });
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
