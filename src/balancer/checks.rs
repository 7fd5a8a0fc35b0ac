//! The balancer's side of the health checks (src/health/): which servers are due, their
//! results, passive failures, and the operator's `check disable|enable` and `maint|ready`.
//! Each takes the state lock for a few field updates; the checks themselves run elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::{Balancer, State};
use crate::config::{self, Check};
use crate::health::{self, Change, Outcome};

/// The servers whose check is due now, each with the settings to check it with, and when to
/// look again (None: nothing scheduled).
pub struct Due {
    pub servers: Vec<(usize, SocketAddr, Arc<config::Health>)>,
    pub next: Option<Instant>,
}

impl State {
    /// Spread the next checks of every server over one interval (start and reload: no burst).
    /// With checks off, the checks' verdicts are forgotten (nothing would ever undo them).
    pub(crate) fn respread(&mut self, now: Instant) {
        let n = self.servers.len();
        for (i, s) in self.servers.iter_mut().enumerate() {
            let h = s.cfg.health_or(&self.settings.health);
            s.health.next_due = health::spread(now, h.interval, i, n);
            match &h.agent {
                Some(a) => s.agent.next_due = health::spread(now, a.interval, i, n),
                // No agent any more: its say is forgotten with it.
                None => s.agent = health::agent::Agent::new(now),
            }
            if h.check == Check::None {
                let (maint, disabled) = (s.health.maint, s.health.disabled);
                s.health = health::Tracker::new(now);
                (s.health.maint, s.health.disabled) = (maint, disabled);
            }
        }
    }

    /// With `on_down = "shutdown"`, cut the established connections of a server that just
    /// went down; how many.
    fn cut_if_down(
        &self,
        change: &Option<Change>,
        index: usize,
        addr: SocketAddr,
    ) -> Option<usize> {
        if self.settings.on_down != config::OnDown::Shutdown
            || !matches!(change, Some(Change::WentDown { .. }))
        {
            return None;
        }
        let mut n = 0;
        // Registered connections have their upstream socket open while the lock is held.
        for c in self.conns.values() {
            if c.server_index == Some(index) && c.server == addr {
                n += usize::from(crate::sys::socket::shutdown_raw(c.upstream_fd).is_ok());
            }
        }
        Some(n)
    }
}

impl Balancer {
    /// Take the checks due at `now` (each marked in flight until its result comes).
    pub fn health_due(&self, now: Instant) -> Due {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut due = Due {
            servers: Vec::new(),
            next: None,
        };
        // One copy of the balancer's settings for the servers without their own.
        let mut shared: Option<Arc<config::Health>> = None;
        for (i, s) in st.servers.iter_mut().enumerate() {
            let h = s.cfg.health_or(&st.settings.health);
            // Nothing to check at 0.0.0.0 (an unresolved name: that would be this host).
            if !s.checkable() || h.check == Check::None {
                continue;
            }
            if s.health.take_due(now) {
                let settings = match &s.cfg.health {
                    Some(own) => own.clone(),
                    None => shared
                        .get_or_insert_with(|| Arc::new(st.settings.health.clone()))
                        .clone(),
                };
                due.servers.push((i, s.cfg.addr, settings));
            } else if !s.health.in_flight {
                let t = s.health.next_due;
                due.next = Some(due.next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        due
    }

    /// Take the agent checks due at `now`: the servers to ask with their agent's settings,
    /// when to look again.
    pub fn agent_due(&self, now: Instant) -> AgentDue {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut due = AgentDue {
            servers: Vec::new(),
            next: None,
        };
        for (i, s) in st.servers.iter_mut().enumerate() {
            let Some(settings) = &s.cfg.health_or(&st.settings.health).agent else {
                continue;
            };
            if !s.checkable() || s.agent.in_flight {
                continue;
            }
            let a = &mut s.agent;
            if now >= a.next_due {
                a.in_flight = true;
                due.servers.push((i, s.cfg.addr, settings.clone()));
            } else {
                due.next = Some(due.next.map_or(a.next_due, |n: Instant| n.min(a.next_due)));
            }
        }
        due
    }

    /// An agent check of server `index` (at `addr` when it started) ended: its line, or why
    /// there was none.
    pub fn agent_result(&self, index: usize, addr: SocketAddr, answer: Result<Vec<u8>, String>) {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(s) = st.servers.get_mut(index) else {
            return;
        };
        let Some(interval) = s
            .cfg
            .health_or(&st.settings.health)
            .agent
            .as_ref()
            .map(|a| a.interval)
        else {
            return;
        };
        if s.cfg.addr != addr {
            s.agent.in_flight = false;
            return;
        }
        let changed = s
            .agent
            .apply(answer.as_deref().map_err(Clone::clone), now, interval);
        let (label, last) = (s.agent.label(), s.agent.last.clone().unwrap_or_default());
        if changed {
            self.publish_availability(st, now);
        }
        drop(guard);
        if changed {
            self.health_changed();
            info!(target: "lb", balancer = %self.cfg.name, server = %addr,
                "agent: server {index} is now {label}");
        } else if last != "ok" {
            tracing::debug!(target: "lb", balancer = %self.cfg.name, server = %addr,
                "agent: server {index}: {last}");
        }
    }

    /// A check of server `index` (at `addr` when it started) ended.
    pub fn health_result(&self, index: usize, addr: SocketAddr, o: Outcome) {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        // A reload may have moved the server. One that is gone has no state to update; one
        // whose address changed (pen's `server N address`) is checked again at its new one.
        let i = match st.servers.get(index) {
            Some(s) if s.cfg.addr == addr => index,
            _ => match st.servers.iter().position(|s| s.cfg.addr == addr) {
                Some(i) => i,
                None => {
                    if let Some(s) = st.servers.get_mut(index) {
                        s.health.in_flight = false;
                    }
                    return;
                }
            },
        };
        let Some(s) = st.servers.get_mut(i) else {
            return;
        };
        let h = s.cfg.health_or(&st.settings.health);
        let change = s.health.record(h, o, now);
        if matches!(change, Some(Change::WentUp { .. })) && !st.settings.slowstart.is_zero() {
            s.health.ramp = Some((now, st.settings.slowstart));
        }
        let label = s.health.label(h);
        let cut = st.cut_if_down(&change, i, addr);
        if change.is_some() {
            self.publish_availability(st, now);
        }
        drop(guard);
        self.log_change(i, addr, change, &label, cut);
    }

    /// A client's connect to server `index` failed (the blacklist is the caller's): with
    /// active checks on, one failure toward `fall`.
    pub(crate) fn passive_failure(&self, st: &mut State, index: usize, reason: &str) {
        let Some(s) = st.servers.get_mut(index) else {
            return;
        };
        let h = s.cfg.health_or(&st.settings.health);
        if h.check == Check::None {
            return;
        }
        let change = s.health.passive_failure(h, reason, Instant::now());
        let label = s.health.label(h);
        let addr = s.cfg.addr;
        let cut = st.cut_if_down(&change, index, addr);
        self.log_change(index, addr, change, &label, cut);
    }

    fn log_change(
        &self,
        index: usize,
        addr: SocketAddr,
        change: Option<Change>,
        label: &str,
        cut: Option<usize>,
    ) {
        if change.is_some() {
            self.health_changed();
        }
        match change {
            Some(Change::WentDown { reason }) => {
                let cut = cut.map_or(String::new(), |n| format!(", {n} connection(s) cut"));
                warn!(target: "lb", balancer = %self.cfg.name, server = %addr,
                    "health: server {index} is down ({reason}), no new clients{cut}");
            }
            Some(Change::WentUp { reason }) => {
                info!(target: "lb", balancer = %self.cfg.name, server = %addr,
                    "health: server {index} is up ({reason})");
            }
            None => {
                tracing::debug!(target: "lb", balancer = %self.cfg.name, server = %addr,
                    "health: server {index} {label}");
            }
        }
    }

    /// `server N check disable|enable`, `server N maint|ready`: the server's new health
    /// label, or why not.
    pub fn set_health_switch(&self, index: usize, what: Switch) -> Result<String, String> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let n = st.servers.len();
        let s = st
            .servers
            .get_mut(index)
            .ok_or_else(|| format!("no server {index} (0..{})", n.saturating_sub(1)))?;
        let h = s.cfg.health_or(&st.settings.health);
        let t = &mut s.health;
        match what {
            Switch::Check(on) => t.disabled = !on,
            Switch::Maint(on) => t.maint = on,
        }
        // Switched back on: checked again at once, from a clean slate.
        if matches!(what, Switch::Check(true) | Switch::Maint(false)) {
            let (maint, disabled) = (t.maint, t.disabled);
            *t = health::Tracker::new(now);
            (t.maint, t.disabled) = (maint, disabled);
        }
        let label = t.label(h);
        let addr = s.cfg.addr;
        self.publish_availability(st, now);
        drop(guard);
        self.health_changed();
        info!(target: "lb", balancer = %self.cfg.name, server = %addr,
            "health: server {index} {} by the operator, now {label}", what.name());
        Ok(label)
    }
}

/// The agent checks due now (see `Due`).
pub struct AgentDue {
    pub servers: Vec<(usize, SocketAddr, config::Agent)>,
    pub next: Option<Instant>,
}

/// An operator's health switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// `check enable` (true) / `check disable`.
    Check(bool),
    /// `maint` (true) / `ready`.
    Maint(bool),
}

impl Switch {
    fn name(self) -> &'static str {
        match self {
            Switch::Check(true) => "check enabled",
            Switch::Check(false) => "check disabled",
            Switch::Maint(true) => "put in maint",
            Switch::Maint(false) => "made ready",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn balancer(health: &str) -> std::sync::Arc<Balancer> {
        let src = format!(
            "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n{health}\n"
        );
        let cfg = config::parse_str(&src, std::path::Path::new("t.toml")).expect("config");
        Balancer::new(cfg.balancers[0].clone())
    }

    fn failed(at: Instant) -> Outcome {
        Outcome {
            ok: false,
            reason: "connect refused".into(),
            took: Duration::ZERO,
            at,
        }
    }

    #[test]
    fn a_down_server_is_not_chosen_and_checks_spread() {
        let lb = balancer("health = { check = \"tcp\", interval = \"2s\" }");
        let now = Instant::now();
        // Server 0 due at once, server 1 half an interval after the start.
        let due = lb.health_due(now);
        assert_eq!(due.servers.len(), 1);
        let next = due.next.expect("server 1 scheduled");
        assert!(next > now && next <= now + Duration::from_secs(1));
        let addr = due.servers[0].1;
        lb.health_result(0, addr, failed(now));
        let ip = "192.0.2.1"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        for _ in 0..4 {
            assert_eq!(lb.plan(ip, 1, now).0, Some(1));
        }
        assert_eq!(lb.lock().servers[0].health.label(&due.servers[0].2), "down");
    }

    #[test]
    fn a_result_for_a_changed_address_does_not_stop_the_checks() {
        let lb = balancer("health = { check = \"tcp\" }");
        let now = Instant::now();
        let due = lb.health_due(now);
        let (i, addr, _) = due.servers[0];
        lb.lock().servers[i].cfg.addr.set_port(9999);
        lb.health_result(i, addr, failed(now));
        let s = &lb.lock().servers[i];
        assert!(!s.health.in_flight);
        assert!(!s.health.checked, "the old address's result is not applied");
    }

    #[test]
    fn a_reload_keeps_rise_and_fall_counts() {
        let lb = balancer("health = { check = \"tcp\" }");
        {
            let mut st = lb.lock();
            st.servers[0].health.phase = health::Phase::Up { fails: 2 };
            st.servers[1].health.phase = health::Phase::Down { oks: 1 };
            for s in &mut st.servers {
                s.health.checked = true;
            }
        }
        let src = "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n\
                   health = { check = \"tcp\", interval = \"3s\" }\n";
        let cfg = config::parse_str(src, std::path::Path::new("t.toml")).expect("config");
        lb.reconfigure(&cfg.balancers[0]);
        let st = lb.lock();
        let h = &st.settings.health;
        let labels: Vec<String> = st.servers.iter().map(|s| s.health.label(h)).collect();
        assert_eq!(labels, ["falling 2/3", "rising 1/2"]);
    }

    #[test]
    fn no_checks_without_a_check() {
        let lb = balancer("health = { check = \"none\" }");
        let due = lb.health_due(Instant::now() + Duration::from_secs(60));
        assert!(due.servers.is_empty() && due.next.is_none());
    }

    #[test]
    fn a_server_with_its_own_checks_is_checked_by_them() {
        let src = "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nhealth = { check = \"tcp\" }\n\
                   servers = [{ address = \"127.0.0.1:9001\", health = { check = \"none\" } },\n\
                   { address = \"127.0.0.1:9002\", health = { check = \"http\", path = \"/ready\", fall = 1 } },\n\
                   \"127.0.0.1:9003\"]\n";
        let cfg = config::parse_str(src, std::path::Path::new("t.toml")).expect("config");
        let lb = Balancer::new(cfg.balancers[0].clone());
        let due = lb.health_due(Instant::now() + Duration::from_secs(10));
        let checks: Vec<(usize, Check, &str)> = due
            .servers
            .iter()
            .map(|(i, _, h)| (*i, h.check, h.path.as_str()))
            .collect();
        assert_eq!(checks, [(1, Check::Http, "/ready"), (2, Check::Tcp, "/")]);
        // Once up, its own `fall = 1` takes it down at one failure; the balancer's fall = 3
        // keeps server 2 up (falling) after one.
        let passed = Outcome {
            ok: true,
            ..failed(Instant::now())
        };
        for (i, addr, _) in &due.servers {
            lb.health_result(*i, *addr, passed.clone());
            lb.health_result(*i, *addr, failed(Instant::now()));
        }
        let st = lb.lock();
        assert!(st.servers[1].health.down() && !st.servers[2].health.down());
    }
}
