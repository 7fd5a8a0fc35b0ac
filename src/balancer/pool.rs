//! The servers of one balancer and their runtime state: blacklist, drain, connection counts,
//! bytes. No I/O; time is a parameter.

use std::time::{Duration, Instant};

use crate::config;
use crate::health;

#[derive(Debug, Clone)]
pub struct ServerState {
    pub cfg: config::Server,
    pub blacklisted_until: Option<Instant>,
    /// Drained servers get no new clients; their open connections finish.
    pub draining: bool,
    /// A server given by name without a trusted address (not resolved yet, or past `hold_nx`
    /// after failures): it gets no new clients.
    pub unresolved: bool,
    /// Connections in progress or established (limits count both, so a burst of connects
    /// cannot overshoot `max`).
    pub conns: u32,
    pub total: u64,
    pub failures: u64,
    /// Bytes sent to / received from the server.
    pub sx: u64,
    pub rx: u64,
    /// Active health checks and the operator's maint / check switches.
    pub health: health::Tracker,
    /// The server's agent's say (HAProxy's agent check), apart from the two above.
    pub agent: health::agent::Agent,
    /// Made from a target of the balancer's `servers_srv` answer (None: from `servers`).
    pub srv: Option<SrvOrigin>,
}

/// Where a server made from an SRV answer comes from, and what the answer said last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvOrigin {
    /// The record's target (also the server's `cfg.name` until an operator fixes an address).
    pub target: String,
    /// The record's port (the server's, unless an operator changed it).
    pub port: u16,
    /// The record's priority: only the lowest priority with a usable server gets clients.
    pub priority: u16,
    /// The record's weight as last applied (an operator's `server N weight` stays until the
    /// record's weight changes).
    pub weight: u16,
    /// The target left the answer: no clients, until it is back or `hold_obsolete` passed.
    pub obsolete: bool,
}

impl ServerState {
    pub fn new(cfg: config::Server) -> Self {
        ServerState {
            unresolved: cfg.name.is_some(),
            cfg,
            blacklisted_until: None,
            draining: false,
            conns: 0,
            total: 0,
            failures: 0,
            sx: 0,
            rx: 0,
            health: health::Tracker::new(Instant::now()),
            agent: health::agent::Agent::new(Instant::now()),
            srv: None,
        }
    }

    /// The emergency server (used only when no other server can take a client; a name is
    /// resolved at run time as a server's).
    pub fn emergency(cfg: config::Server) -> Self {
        ServerState::new(cfg)
    }

    /// Whether checks have something to reach: not an empty slot, not an unresolved name
    /// (its address is 0.0.0.0, this host), not a target gone from the SRV answer.
    pub fn checkable(&self) -> bool {
        self.cfg.addr.port() != 0 && !self.unresolved && !self.obsolete()
    }

    /// Whether the server is an SRV target's that left the answer.
    pub fn obsolete(&self) -> bool {
        self.srv.as_ref().is_some_and(|o| o.obsolete)
    }

    /// An empty slot, as pen's `server N` beyond the end of the list leaves.
    pub fn empty() -> Self {
        ServerState::new(config::Server::plain(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            0,
        ))))
    }

    /// The weight the `weight` algorithm uses now: ramped up after a comeback (slowstart).
    pub fn weight_now(&self, now: Instant) -> u32 {
        health::ramped(self.agent.weight(self.cfg.weight), self.health.ramp, now)
    }

    pub fn blacklisted(&self, now: Instant) -> bool {
        self.blacklisted_until.is_some_and(|t| now < t)
    }

    /// Time left on the blacklist, if any.
    pub fn blacklist_left(&self, now: Instant) -> Option<Duration> {
        self.blacklisted_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// pen's try_server: not blacklisted, not drained, resolved (and, from SRV, still in the
    /// answer), not down by its checks nor in maint, and under `max` (a client remembered on
    /// this server may go on up to `hard`).
    pub fn usable(&self, now: Instant, sticky: bool) -> bool {
        // Port 0: an empty slot (pen's `server N` beyond the list creates them).
        if self.blacklisted(now)
            || self.draining
            || self.unresolved
            || self.obsolete()
            || !self.health.usable()
            || !self.agent.usable(sticky)
            || self.cfg.addr.port() == 0
        {
            return false;
        }
        let (max, hard) = (self.cfg.max, self.cfg.hard);
        !(max != 0 && self.conns >= max && (!sticky || self.conns >= hard))
    }

    /// Blacklist for `d`; returns true when the server was usable before (log once per episode).
    pub fn blacklist(&mut self, now: Instant, d: Duration) -> bool {
        let was = !self.blacklisted(now);
        self.blacklisted_until = Some(now + d);
        self.failures += 1;
        was
    }
}
