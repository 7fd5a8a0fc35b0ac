//! The sync peer as a whole: the table, the connections to the peer (at most one kept), the
//! reconnect schedule and `show sync`. This is what the I/O layer drives: every method takes
//! the time and returns [`Action`]s. No I/O.
//!
//! Both hosts dial when they have no connection, so both may connect at once. Which
//! connection survives is decided when one authenticates while another already has:
//! - the other belongs to an earlier process of the peer (another origin id): the peer
//!   restarted and the old connection is half-open, so the new one replaces it;
//! - same process, opposite directions: the one dialed by the host with the lower origin id
//!   is kept, on both hosts alike (both know both ids once authenticated);
//! - same process, same direction (the peer dialed again): the newer, since the peer has
//!   given up on the older.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Now;
use super::auth::{Nonce, Role, SharedKey};
use super::session::{CloseReason, Counters, Output, Session, SessionStatus, Stage, Timers};
use super::table::{ChangeError, Entry, Key, Table, Value};

/// How often expired entries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// Connections held at once: the kept one, one racing it, one replacing it after a restart.
/// More are refused, so a host at the peer's address cannot make this one hold sessions
/// without bound.
pub const MAX_CONNS: usize = 3;

/// An id the I/O layer gives each connection (a counter will do).
pub type ConnId = u64;

#[derive(Debug, Clone)]
pub struct Config {
    /// The peer's `[sync] peer` address: dialed, and the only source accepted.
    pub peer: SocketAddr,
    pub key: SharedKey,
    pub timers: Timers,
    /// Delay before redialing after a failure, doubled each time up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl Config {
    pub fn new(peer: SocketAddr, key: SharedKey) -> Config {
        Config {
            peer,
            key,
            timers: Timers::default(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This host dialed (after an `Action::Connect`).
    Outgoing,
    /// The peer dialed; accepted on `[sync] listen`.
    Incoming,
}

/// What the I/O layer is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial the peer; report `connected(.., Outgoing, ..)` or `connect_failed`.
    Connect,
    /// Write the bytes on the connection, in order.
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Close the connection (its last `Send` first); the link has forgotten it.
    Close { conn: ConnId, reason: CloseReason },
    /// An entry from the peer won: apply it to the balancer or the firewall
    /// (`Value::Deleted`: remove the client, lift the ban).
    Apply(Entry<Instant>),
    /// A full snapshot from the peer has been merged (VRRP may take mastership now).
    PeerResynced,
}

/// The link's state in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or stopped.
    Idle,
    /// Dialing, nothing else.
    Connecting,
    Handshaking,
    Resyncing,
    Live,
    /// No connection; redialing at `retry_in_ms`.
    Waiting,
}

/// `show sync`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub peer: SocketAddr,
    pub state: State,
    /// A full snapshot from the peer was merged since this process started.
    pub resynced: bool,
    /// Entries in the table (tombstones included).
    pub entries: usize,
    /// The most advanced connection.
    pub session: Option<SessionStatus>,
    /// Every session's counters added up, the current ones included.
    pub totals: Counters,
    /// Connections authenticated, and full resyncs received, since start.
    pub connections: u64,
    pub resyncs: u64,
    /// Connections ended, by reason (`auth`, `replay`, `malformed`, `version`, `silent`, ...).
    pub closes: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub last_error_ago_ms: Option<u64>,
    pub retry_in_ms: Option<u64>,
}

struct Conn {
    id: ConnId,
    session: Session,
    /// Order of arrival, to tell the newer of two.
    serial: u64,
}

/// The peer, its connections and the shared table.
pub struct Link {
    cfg: Config,
    table: Table,
    conns: Vec<Conn>,
    serial: u64,
    running: bool,
    dialing: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    last_purge: Option<Instant>,
    /// Counters of closed sessions.
    past: Counters,
    connections: u64,
    resyncs: u64,
    closes: BTreeMap<String, u64>,
    last_error: Option<(String, Instant)>,
}

impl Link {
    /// `table`: as restored from the state file (with its saved versions), or empty.
    pub fn new(cfg: Config, table: Table) -> Link {
        let backoff = cfg.reconnect_min;
        Link {
            cfg,
            table,
            conns: Vec::new(),
            serial: 0,
            running: false,
            dialing: false,
            retry_at: None,
            backoff,
            last_purge: None,
            past: Counters::default(),
            connections: 0,
            resyncs: 0,
            closes: BTreeMap::new(),
            last_error: None,
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Begin: dial the peer at once.
    pub fn start(&mut self, now: Now) -> Vec<Action> {
        self.running = true;
        self.retry_at = Some(now.mono);
        self.on_tick(now)
    }

    /// Close every connection and dial no more.
    pub fn stop(&mut self, now: Now) -> Vec<Action> {
        self.running = false;
        self.retry_at = None;
        self.each_session(now, |s, _| s.close(CloseReason::Stop, now.mono))
    }

    /// A connection is up: ours after `Action::Connect`, or one accepted from `from` (refused
    /// before `start` and after `stop`).
    /// `nonce`: fresh random bytes (`auth::random_nonce`).
    pub fn connected(
        &mut self,
        conn: ConnId,
        direction: Direction,
        from: IpAddr,
        nonce: Nonce,
        now: Now,
    ) -> Vec<Action> {
        let role = match direction {
            Direction::Outgoing => {
                self.dialing = false;
                Role::Initiator
            }
            Direction::Incoming => Role::Responder,
        };
        let refusal = if !self.running {
            Some(CloseReason::Stop)
        } else if direction == Direction::Incoming && from != self.cfg.peer.ip() {
            Some(CloseReason::NotPeer(from))
        } else if self.conns.len() >= MAX_CONNS {
            Some(CloseReason::TooMany)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.count_close(&reason, now.mono);
            return vec![Action::Close { conn, reason }];
        }
        let origin = self.table.origin();
        let key = self.cfg.key.clone();
        let timers = self.cfg.timers.clone();
        let (session, out) = Session::new(role, origin, nonce, key, timers, now.mono);
        self.serial += 1;
        self.conns.push(Conn {
            id: conn,
            session,
            serial: self.serial,
        });
        self.handle(conn, out, now)
    }

    /// Dialing failed (refused, unreachable, timed out: the I/O layer bounds the attempt).
    pub fn connect_failed(&mut self, why: &str, now: Now) -> Vec<Action> {
        self.dialing = false;
        self.count_close(&CloseReason::Lost(why.to_string()), now.mono);
        self.schedule_retry(now.mono);
        Vec::new()
    }

    /// Bytes read from a connection.
    pub fn on_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Now) -> Vec<Action> {
        let Some(i) = self.conns.iter().position(|c| c.id == conn) else {
            return Vec::new();
        };
        let out = self.conns[i].session.on_bytes(&mut self.table, now, bytes);
        self.handle(conn, out, now)
    }

    /// The connection ended under us (EOF, reset, write error).
    pub fn on_closed(&mut self, conn: ConnId, why: &str, now: Now) -> Vec<Action> {
        let reason = CloseReason::Lost(why.to_string());
        let out = self.session(conn).map(|s| s.close(reason, now.mono));
        let actions = self.handle(conn, out.unwrap_or_default(), now);
        // The connection is already gone: no Close (nor Goodbye) to perform.
        actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Close { conn: c, .. } | Action::Send { conn: c, .. } if *c == conn))
            .collect()
    }

    /// Timeouts, batches, heartbeats, purges, redials. Call at `next_deadline`.
    pub fn on_tick(&mut self, now: Now) -> Vec<Action> {
        if self.last_purge.is_none_or(|t| now.mono >= t + PURGE_EVERY) {
            self.table.expire(now.mono);
            self.last_purge = Some(now.mono);
        }
        let mut actions = self.each_session(now, |s, table| s.on_tick(table, now));
        if self.running
            && self.conns.is_empty()
            && !self.dialing
            && self.retry_at.is_some_and(|t| now.mono >= t)
        {
            self.dialing = true;
            self.retry_at = None;
            actions.push(Action::Connect);
        }
        actions
    }

    /// A change made on this host (a sticky client dealt, an operator command, a ban): stored
    /// with a fresh version and sent to the peer in the next batch.
    pub fn local_change(
        &mut self,
        key: Key,
        value: Value<Instant>,
        expires: Option<Instant>,
        now: Now,
    ) -> Result<Vec<Action>, ChangeError> {
        self.table.local_change(key.clone(), value, expires, now)?;
        Ok(self.each_session(now, |s, table| s.queue_change(&key, table, now.mono)))
    }

    /// When to call `on_tick` next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.conns.iter().filter_map(|c| c.session.next_deadline());
        let retry = self
            .retry_at
            .filter(|_| self.running && !self.dialing && self.conns.is_empty());
        let purge = self
            .last_purge
            .map(|t| t + PURGE_EVERY)
            .filter(|_| !self.table.is_empty());
        sessions.chain(retry).chain(purge).min()
    }

    /// Whether a full snapshot from the peer was merged since start.
    pub fn resynced(&self) -> bool {
        self.resyncs > 0
    }

    /// Run `f` on every session (those still there when their turn comes) and handle what
    /// each returns.
    fn each_session(
        &mut self,
        now: Now,
        mut f: impl FnMut(&mut Session, &Table) -> Vec<Output>,
    ) -> Vec<Action> {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        let mut actions = Vec::new();
        for id in ids {
            let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
                continue;
            };
            let out = f(&mut c.session, &self.table);
            actions.extend(self.handle(id, out, now));
        }
        actions
    }

    fn session(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.conns
            .iter_mut()
            .find(|c| c.id == conn)
            .map(|c| &mut c.session)
    }

    /// Turn a session's outputs into actions, acting on authentication and close.
    fn handle(&mut self, conn: ConnId, out: Vec<Output>, now: Now) -> Vec<Action> {
        let mut todo: VecDeque<(ConnId, Output)> = out.into_iter().map(|o| (conn, o)).collect();
        let mut actions = Vec::new();
        while let Some((id, o)) = todo.pop_front() {
            match o {
                Output::Send(bytes) => actions.push(Action::Send { conn: id, bytes }),
                Output::Apply(e) => actions.push(Action::Apply(e)),
                Output::PeerResynced => {
                    self.resyncs += 1;
                    actions.push(Action::PeerResynced);
                }
                Output::Authenticated { peer_origin } => {
                    todo.extend(self.authenticated(id, peer_origin, now));
                }
                Output::Closed(reason) => {
                    self.forget(id, &reason, now.mono);
                    actions.push(Action::Close { conn: id, reason });
                }
            }
        }
        actions
    }

    /// A connection proved the key: keep one connection, then start its resync.
    fn authenticated(&mut self, conn: ConnId, peer_origin: u64, now: Now) -> Vec<(ConnId, Output)> {
        let mut out = Vec::new();
        let Some(me) = self.conns.iter().find(|c| c.id == conn) else {
            return out;
        };
        let (my_serial, my_role) = (me.serial, me.session.role());
        let preferred = if self.table.origin() < peer_origin {
            Role::Initiator
        } else {
            Role::Responder
        };
        let others: Vec<(ConnId, u64, Role, Option<u64>)> = self
            .conns
            .iter()
            .filter(|c| c.id != conn && matches!(c.session.stage(), Stage::Resyncing | Stage::Live))
            .map(|c| (c.id, c.serial, c.session.role(), c.session.peer_origin()))
            .collect();
        let mut keep_me = true;
        for (id, serial, role, origin) in others {
            let (loser, reason) = if origin != Some(peer_origin) {
                (id, CloseReason::Replaced)
            } else if role == my_role {
                let older = if serial < my_serial { id } else { conn };
                (older, CloseReason::Replaced)
            } else if my_role == preferred {
                (id, CloseReason::Duplicate)
            } else {
                (conn, CloseReason::Duplicate)
            };
            keep_me &= loser != conn;
            if let Some(s) = self.session(loser) {
                out.extend(s.close(reason, now.mono).into_iter().map(|o| (loser, o)));
            }
        }
        if keep_me {
            self.connections += 1;
            self.backoff = self.cfg.reconnect_min;
            let table = &self.table;
            if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
                out.extend(
                    c.session
                        .start_resync(table, now)
                        .into_iter()
                        .map(|o| (conn, o)),
                );
            }
        }
        out
    }

    /// Drop a closed session, keep its counters, count the reason, plan the redial.
    fn forget(&mut self, conn: ConnId, reason: &CloseReason, now: Instant) {
        if let Some(i) = self.conns.iter().position(|c| c.id == conn) {
            let c = self.conns.swap_remove(i);
            self.past += c.session.counters();
        }
        self.count_close(reason, now);
        if self.conns.is_empty() {
            self.schedule_retry(now);
        }
    }

    fn count_close(&mut self, reason: &CloseReason, now: Instant) {
        *self.closes.entry(reason.label().to_string()).or_default() += 1;
        let routine = matches!(
            reason,
            CloseReason::Duplicate | CloseReason::Replaced | CloseReason::Stop
        );
        if !routine {
            self.last_error = Some((reason.to_string(), now));
        }
    }

    fn schedule_retry(&mut self, now: Instant) {
        if !self.running || self.retry_at.is_some() {
            return;
        }
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.cfg.reconnect_max);
    }

    /// `show sync` (`--json`: serialize it).
    pub fn status(&self, now: Now) -> Status {
        let best = self
            .conns
            .iter()
            .max_by_key(|c| stage_rank(c.session.stage()))
            .map(|c| c.session.status(now.mono));
        let mut totals = self.past;
        for c in &self.conns {
            totals += c.session.counters();
        }
        let ago = |t: Instant| {
            u64::try_from(now.mono.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
        };
        Status {
            peer: self.cfg.peer,
            state: self.state(best.as_ref()),
            resynced: self.resynced(),
            entries: self.table.len(),
            session: best,
            totals,
            connections: self.connections,
            resyncs: self.resyncs,
            closes: self.closes.clone(),
            last_error: self.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_ago_ms: self.last_error.as_ref().map(|(_, t)| ago(*t)),
            retry_in_ms: self.retry_at.map(|t| {
                u64::try_from(t.saturating_duration_since(now.mono).as_millis()).unwrap_or(u64::MAX)
            }),
        }
    }

    fn state(&self, best: Option<&SessionStatus>) -> State {
        match best.map(|s| s.stage) {
            Some(Stage::Live) => State::Live,
            Some(Stage::Resyncing) => State::Resyncing,
            Some(Stage::Handshaking) => State::Handshaking,
            _ if !self.running => State::Idle,
            _ if self.dialing => State::Connecting,
            _ => State::Waiting,
        }
    }
}

fn stage_rank(s: Stage) -> u8 {
    match s {
        Stage::Closed => 0,
        Stage::Handshaking => 1,
        Stage::Resyncing => 2,
        Stage::Live => 3,
    }
}
