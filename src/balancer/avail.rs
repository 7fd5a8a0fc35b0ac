//! Whether a balancer can take a new client: how many of its servers could, published on a
//! watch channel whenever a server's health or admin state changes (VRRP `track` follows it).
//! The count is made under the state lock by whoever made the change, so nothing polls, and
//! nothing on a data-path thread waits for a reader.
//!
//! A server counts when it can take a new client now: not down by its checks, not in maint,
//! not drained (by the operator or its agent), not blacklisted (a failed connect, or
//! `server N blacklist`), resolved. Its `max`/`hard` limits do not count (a full server is not
//! a sick one), nor does the emergency server (the last resort, often a sorry page).

use std::time::Instant;

use tokio::sync::watch;

use super::pool::ServerState;
use super::{Balancer, State};

/// What a balancer reports to VRRP `track`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Availability {
    /// Servers that can take a new client now.
    pub up: usize,
    /// Configured servers (pen's empty slots not counted).
    pub servers: usize,
    /// When the first blacklist of an otherwise fine server ends: `up` grows then without an
    /// event, so the reader recounts at that moment (`Balancer::refresh_availability`).
    pub until: Option<Instant>,
}

impl ServerState {
    /// Could take a new client now, its limits apart (see the module doc).
    pub fn available(&self, now: Instant) -> bool {
        self.fit() && !self.blacklisted(now)
    }

    /// Everything but a blacklist, which alone ends by itself.
    fn fit(&self) -> bool {
        self.cfg.addr.port() != 0
            && !self.draining
            && !self.unresolved
            && !self.obsolete()
            && self.health.usable()
            && self.agent.usable(false)
    }
}

impl State {
    pub(crate) fn availability(&self, now: Instant) -> Availability {
        let mut a = Availability::default();
        for s in self.servers.iter().filter(|s| s.cfg.addr.port() != 0) {
            a.servers += 1;
            match s.blacklisted_until {
                _ if !s.fit() => {}
                Some(t) if s.blacklisted(now) => {
                    a.until = Some(a.until.map_or(t, |u: Instant| u.min(t)));
                }
                _ => a.up += 1,
            }
        }
        a
    }
}

impl Balancer {
    /// Follow the balancer's availability: a new value whenever it changed.
    pub fn availability(&self) -> watch::Receiver<Availability> {
        self.avail.subscribe()
    }

    /// Count again after something that can make a server able or unable to take new
    /// clients (a control command, a blacklist running out).
    pub fn refresh_availability(&self) {
        let st = self.lock();
        self.publish_availability(&st, Instant::now());
    }

    /// Send the count if it changed. Called with the state lock held, so two changes are
    /// published in the order they were made.
    pub(crate) fn publish_availability(&self, st: &State, now: Instant) {
        let a = st.availability(now);
        self.avail.send_if_modified(|last| {
            let changed = *last != a;
            *last = a;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::balancer::Switch;
    use crate::config;

    fn balancer(extra: &str) -> Arc<Balancer> {
        let src = format!(
            "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\nemergency = \"127.0.0.1:9009\"\n{extra}\n"
        );
        let cfg = config::parse_str(&src, std::path::Path::new("t.toml")).expect("config");
        Balancer::new(cfg.balancers[0].clone())
    }

    fn up(rx: &watch::Receiver<Availability>) -> (usize, usize) {
        let a = *rx.borrow();
        (a.up, a.servers)
    }

    #[test]
    fn every_kind_of_out_counts_and_the_emergency_server_does_not() {
        let lb = balancer("health = { check = \"tcp\" }");
        let mut rx = lb.availability();
        assert_eq!(up(&rx), (2, 2), "unchecked servers are up");
        lb.set_health_switch(0, Switch::Maint(true)).expect("maint");
        assert!(
            rx.has_changed().unwrap_or(false),
            "published by the change itself"
        );
        rx.borrow_and_update();
        assert_eq!(up(&rx), (1, 2));
        // Down by a check: published by health_result.
        let addr = lb.lock().servers[1].cfg.addr;
        let failed = crate::health::Outcome {
            ok: false,
            reason: "connect refused".into(),
            took: Duration::ZERO,
            at: Instant::now(),
        };
        lb.health_result(1, addr, failed);
        assert_eq!(
            up(&rx),
            (0, 2),
            "no server left; the emergency one is not counted"
        );
        lb.set_health_switch(0, Switch::Maint(false))
            .expect("ready");
        assert_eq!(up(&rx), (1, 2));
        // Drained by the operator (a control command refreshes after it).
        lb.lock().servers[0].draining = true;
        lb.refresh_availability();
        assert_eq!(up(&rx), (0, 2));
    }

    #[test]
    fn a_blacklist_counts_until_it_ends() {
        let lb = balancer("health = { check = \"none\" }");
        let rx = lb.availability();
        let now = Instant::now();
        {
            let mut st = lb.lock();
            st.servers[0].blacklist(now, Duration::from_secs(30));
            st.servers[1].blacklist(now, Duration::from_secs(2));
            lb.publish_availability(&st, now);
        }
        let a = *rx.borrow();
        assert_eq!((a.up, a.until), (0, Some(now + Duration::from_secs(2))));
        // The reader recounts at `until`: the shorter blacklist has ended.
        let st = lb.lock();
        let later = st.availability(now + Duration::from_secs(2));
        assert_eq!(
            (later.up, later.until),
            (1, Some(now + Duration::from_secs(30)))
        );
    }
}
