//! Applying a reloaded configuration to a running balancer (SIGHUP): the server list is
//! rebuilt by address (by name and port for servers given by name), so a server that stays
//! keeps its blacklist, drain flag, counters and open connections; removed servers'
//! connections finish on their own; remembered clients follow their server to its new place.
//! Servers made from `servers_srv` follow the configured ones, kept while the SRV name stays.

use std::time::Instant;

use super::pool::ServerState;
use super::{Balancer, Settings};
use crate::config;

impl Balancer {
    /// Apply `new` (same name; listeners are the daemon's business). Returns one line per
    /// change, for the log.
    pub fn reconfigure(&self, new: &config::Balancer) -> Vec<String> {
        let mut notes = Vec::new();
        let mut st = self.lock();
        let old = std::mem::take(&mut st.servers);
        let mut taken = vec![false; old.len()];
        let mut moved: Vec<Option<usize>> = vec![None; old.len()];
        let mut servers = Vec::with_capacity(new.servers.len());
        for (ni, sc) in new.servers.iter().enumerate() {
            let found = old
                .iter()
                .enumerate()
                .position(|(oi, o)| !taken[oi] && o.srv.is_none() && o.cfg.same(sc));
            match found {
                Some(oi) => {
                    taken[oi] = true;
                    moved[oi] = Some(ni);
                    let mut s = old[oi].clone();
                    // A server by name keeps the address its resolver gave it.
                    let mut fresh = sc.clone();
                    if fresh.name.is_some() {
                        fresh.addr = s.cfg.addr;
                    }
                    if s.cfg.health != fresh.health {
                        let check = fresh.health_or(&new.health).check.name();
                        notes.push(format!("server {} health check now {check}", sc.label()));
                    }
                    let limits = |c: &config::Server| (c.addr, c.weight, c.max, c.hard, c.prio);
                    if limits(&s.cfg) != limits(&fresh) {
                        notes.push(format!(
                            "server {} changed (weight {} -> {}, max {} -> {}, hard {} -> {}, prio {} -> {})",
                            sc.label(), s.cfg.weight, sc.weight, s.cfg.max, sc.max, s.cfg.hard,
                            sc.hard, s.cfg.prio, sc.prio
                        ));
                    }
                    s.cfg = fresh;
                    servers.push(s);
                }
                None => {
                    notes.push(format!("server {} added", sc.label()));
                    servers.push(ServerState::new(sc.clone()));
                }
            }
        }
        // The SRV name's servers stay, after the configured ones, while the name stays.
        let srv_kept = st.srv_name == new.servers_srv;
        for (oi, o) in old.iter().enumerate() {
            if srv_kept && o.srv.is_some() {
                taken[oi] = true;
                moved[oi] = Some(servers.len());
                servers.push(o.clone());
            }
        }
        if !srv_kept {
            notes.push(format!("servers_srv now {:?}", new.servers_srv));
            st.srv_name = new.servers_srv.clone();
        }
        for (oi, o) in old.iter().enumerate() {
            // Empty slots (pen's `server N` beyond the list) vanish without a word.
            if !taken[oi] && o.cfg.addr.port() != 0 {
                notes.push(format!(
                    "server {} removed ({} open connection(s) finish on it)",
                    o.cfg.label(),
                    o.conns
                ));
            }
        }
        st.servers = servers;
        st.clients.remap(|i| moved.get(i).copied().flatten());
        let keep_emergency = match (&st.emergency, &new.emergency) {
            (Some(e), Some(n)) => e.cfg.same(n),
            (old, new) => old.is_none() && new.is_none(),
        };
        if !keep_emergency {
            let label = new.emergency.as_ref().map(config::Server::label);
            notes.push(format!("emergency server now {label:?}"));
            st.emergency = new.emergency.clone().map(ServerState::emergency);
        }
        let fresh = Settings::from_config(new);
        let s = &mut st.settings;
        if (s.sticky, s.base) != (fresh.sticky, fresh.base) {
            notes.push(format!("algorithm now {}", new.algorithm.name()));
        }
        s.sticky = fresh.sticky;
        s.base = fresh.base;
        s.blacklist = fresh.blacklist;
        s.connect_timeout = fresh.connect_timeout;
        s.idle_timeout = fresh.idle_timeout;
        if s.health != fresh.health {
            notes.push(format!("health check now {}", fresh.health.check.name()));
        }
        s.health = fresh.health;
        s.slowstart = fresh.slowstart;
        s.on_down = fresh.on_down;
        st.clients.set_tracking(new.tracking);
        st.clients.expire(Instant::now());
        st.epoch += 1;
        st.respread(Instant::now());
        st.reselect();
        self.publish_availability(&st, Instant::now());
        notes
    }
}
