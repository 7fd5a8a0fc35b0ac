//! Servers made from a balancer's `servers_srv` answer (crate::resolver::srv decides the
//! targets): one server per target, after the configured `servers`. A server keeps its index,
//! sticky clients and counters while its target stays in the answer; an obsolete target gets
//! no clients; a target gone for good leaves an empty slot (as pen's `server N` beyond the
//! list makes), so no other server changes index, and a new target takes the first empty slot
//! or a new one at the end. The target's address comes from its name's resolver, as for any
//! server given by name.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::pool::{ServerState, SrvOrigin};
use super::{Balancer, State, select};
use crate::config;
use crate::resolver::srv::Target;

impl State {
    /// The lowest SRV priority with a usable server (None: no SRV server is usable, or the
    /// balancer has no `servers_srv`: then nothing is a backup).
    pub(crate) fn srv_tier(&self, now: Instant) -> Option<u16> {
        self.srv_name.as_ref()?;
        select::srv_tier(&self.servers, now)
    }

    /// The lowest priority of the targets in the answer: servers above it are backups.
    pub fn srv_primary(&self) -> Option<u16> {
        self.servers
            .iter()
            .filter_map(|s| s.srv.as_ref().filter(|o| !o.obsolete))
            .map(|o| o.priority)
            .min()
    }

    /// Empty slot `i` (its target left for good): it forgets its server, and clients
    /// remembered there are placed afresh.
    fn vacate(&mut self, i: usize) {
        self.servers[i] = ServerState::empty();
        self.clients.remap(|s| (s != i).then_some(s));
    }
}

/// The server of target `t` (unresolved until its name resolves).
fn server_of(t: &Target) -> ServerState {
    let mut s = ServerState::new(config::Server {
        addr: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), t.port),
        name: Some(t.name.clone()),
        max: 0,
        hard: 0,
        weight: t.weight,
        prio: i32::from(t.priority),
        health: None,
    });
    s.srv = Some(SrvOrigin {
        target: t.name.clone(),
        port: t.port,
        priority: t.priority,
        weight: t.record_weight,
        obsolete: t.obsolete(),
    });
    s
}

fn is_target(o: &SrvOrigin, t: &Target) -> bool {
    o.target == t.name && o.port == t.port
}

impl Balancer {
    /// The targets of SRV name `srv` are now `targets` (present and obsolete): servers are
    /// updated, made or emptied to match. Ignored if `srv` is no longer the balancer's
    /// `servers_srv` (a reload changed it). Returns one line per change, for the log.
    pub fn set_srv_targets(&self, srv: &str, targets: &[Target]) -> Vec<String> {
        let mut st = self.lock();
        if st.srv_name.as_deref() != Some(srv) {
            return Vec::new();
        }
        let mut notes = Vec::new();
        let mut emptied = false;
        let mut reselect = false;
        for i in 0..st.servers.len() {
            let Some(o) = st.servers[i].srv.clone() else {
                continue;
            };
            match targets.iter().find(|t| is_target(&o, t)) {
                Some(t) => reselect |= update(&mut st.servers[i], t, &mut notes),
                None => {
                    let s = &st.servers[i];
                    notes.push(format!(
                        "server {} removed: gone from {srv} ({} open connection(s) finish on it)",
                        s.cfg.label(),
                        s.conns
                    ));
                    st.vacate(i);
                    emptied = true;
                }
            }
        }
        for t in targets {
            if st
                .servers
                .iter()
                .flat_map(|s| &s.srv)
                .any(|o| is_target(o, t))
            {
                continue;
            }
            notes.push(format!("server {}:{} added from {srv}", t.name, t.port));
            let fresh = server_of(t);
            match st.servers.iter().position(|s| s.cfg.addr.port() == 0) {
                Some(i) => {
                    st.servers[i] = fresh;
                    emptied = true;
                }
                None => st.servers.push(fresh),
            }
            reselect = true;
        }
        if emptied {
            // Indices changed hands: connections placed before find their server by address.
            st.epoch += 1;
            while st.servers.last().is_some_and(|s| s.cfg.addr.port() == 0) {
                st.servers.pop();
            }
        }
        if reselect || emptied {
            st.reselect();
        }
        if !notes.is_empty() {
            self.publish_availability(&st, Instant::now());
        }
        notes
    }

    /// The SRV targets as the servers hold them (a resolver task restarted after a reload or
    /// a restart starts from them); obsolete ones as missing since `now`.
    pub fn srv_targets(&self, now: Instant) -> Vec<Target> {
        let st = self.lock();
        st.servers
            .iter()
            .filter_map(|s| {
                let o = s.srv.as_ref()?;
                Some(Target {
                    name: o.target.clone(),
                    port: o.port,
                    priority: o.priority,
                    record_weight: o.weight,
                    weight: s.cfg.weight,
                    missing_since: o.obsolete.then_some(now),
                })
            })
            .collect()
    }
}

/// Bring one server in line with its target's record; true when selection must be rebuilt.
fn update(s: &mut ServerState, t: &Target, notes: &mut Vec<String>) -> bool {
    let label = s.cfg.label();
    let Some(o) = s.srv.as_mut() else {
        return false;
    };
    let mut changed = false;
    if o.obsolete != t.obsolete() {
        o.obsolete = t.obsolete();
        notes.push(if o.obsolete {
            format!("server {label} left the SRV answer: no new clients")
        } else {
            format!("server {label} is back in the SRV answer")
        });
        changed = true;
    }
    if o.weight != t.record_weight {
        notes.push(format!(
            "server {label} weight {} -> {} (srv)",
            s.cfg.weight, t.weight
        ));
        o.weight = t.record_weight;
        s.cfg.weight = t.weight;
        changed = true;
    }
    if o.priority != t.priority {
        notes.push(format!(
            "server {label} priority {} -> {} (srv)",
            o.priority, t.priority
        ));
        o.priority = t.priority;
        s.cfg.prio = i32::from(t.priority);
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::balancer::Balancer;
    use crate::config;
    use crate::resolver::srv::Target;

    const SRV: &str = "_http._tcp.app.internal";

    fn balancer() -> std::sync::Arc<Balancer> {
        let cfg = config::parse_str(
            &format!("[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"10.0.0.1:80\"]\nservers_srv = \"{SRV}\"\nalgorithm = \"roundrobin\"\n"),
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        Balancer::new(cfg.balancers[0].clone())
    }

    fn t(name: &str, port: u16, prio: u16, weight: u16, obsolete: bool) -> Target {
        Target {
            name: name.into(),
            port,
            priority: prio,
            record_weight: weight,
            weight: u32::from(weight),
            missing_since: obsolete.then(Instant::now),
        }
    }

    fn labels(lb: &Balancer) -> Vec<String> {
        lb.lock().servers.iter().map(|s| s.cfg.label()).collect()
    }

    fn resolve_all(lb: &Balancer) {
        for (name, ip) in [
            ("a.x", "10.0.0.21"),
            ("b.x", "10.0.0.22"),
            ("c.x", "10.0.0.23"),
        ] {
            lb.set_resolved(name, Some(ip.parse().unwrap()));
        }
    }

    /// The servers picked for 6 new clients.
    fn picks(lb: &Balancer) -> Vec<Option<usize>> {
        let now = Instant::now();
        (1..=6u8)
            .map(|i| lb.plan(std::net::IpAddr::from([192, 0, 2, i]), 1, now).0)
            .collect()
    }

    #[test]
    fn targets_become_servers_after_the_configured_ones() {
        let lb = balancer();
        let notes = lb.set_srv_targets(
            SRV,
            &[t("a.x", 8080, 10, 5, false), t("b.x", 8081, 10, 1, false)],
        );
        assert_eq!(
            notes,
            [
                format!("server a.x:8080 added from {SRV}"),
                format!("server b.x:8081 added from {SRV}")
            ]
        );
        assert_eq!(labels(&lb), ["10.0.0.1:80", "a.x:8080", "b.x:8081"]);
        {
            let st = lb.lock();
            assert!(st.servers[1].unresolved, "waits for its name's address");
            assert_eq!((st.servers[1].cfg.weight, st.servers[1].cfg.prio), (5, 10));
        }
        assert_eq!(picks(&lb), [Some(0); 6], "unresolved targets get nobody");
        resolve_all(&lb);
        assert_eq!(lb.lock().servers[2].cfg.addr.to_string(), "10.0.0.22:8081");
        let mut p = picks(&lb);
        p.sort();
        assert_eq!(p, [Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)]);
        // Same answer again: nothing changes.
        assert!(
            lb.set_srv_targets(
                SRV,
                &[t("a.x", 8080, 10, 5, false), t("b.x", 8081, 10, 1, false)]
            )
            .is_empty()
        );
        // Another name (a reload changed servers_srv): ignored.
        assert!(lb.set_srv_targets("_other._tcp.x", &[]).is_empty());
    }

    #[test]
    fn higher_priorities_are_backups() {
        let lb = balancer();
        // Only SRV servers: the configured one is put in maint.
        lb.lock().servers[0].health.maint = true;
        lb.set_srv_targets(
            SRV,
            &[
                t("a.x", 80, 10, 1, false),
                t("b.x", 80, 20, 1, false),
                t("c.x", 80, 30, 1, false),
            ],
        );
        resolve_all(&lb);
        assert_eq!(picks(&lb), [Some(1); 6]);
        assert_eq!(lb.lock().srv_primary(), Some(10));
        let now = Instant::now();
        let ip = std::net::IpAddr::from([192, 0, 2, 9]);
        assert!(
            lb.reserve(super::super::Slot::Regular(2), ip, now)
                .is_none(),
            "a backup while a primary is usable"
        );
        lb.lock().servers[1].blacklist(now, Duration::from_secs(30));
        assert_eq!(picks(&lb), [Some(2); 6], "priority 20 takes over");
        assert!(
            lb.reserve(super::super::Slot::Regular(2), ip, now)
                .is_some()
        );
        lb.lock().servers[2].draining = true;
        assert_eq!(picks(&lb), [Some(3); 6], "then 30");
        lb.lock().servers[1].blacklisted_until = None;
        assert_eq!(picks(&lb), [Some(1); 6], "back to the primary");
    }

    #[test]
    fn obsolete_targets_keep_their_place_then_leave_an_empty_slot() {
        let lb = balancer();
        lb.set_srv_targets(
            SRV,
            &[
                t("a.x", 80, 0, 1, false),
                t("b.x", 80, 0, 1, false),
                t("c.x", 80, 0, 1, false),
            ],
        );
        resolve_all(&lb);
        lb.lock().servers[2].total = 9;
        let notes = lb.set_srv_targets(
            SRV,
            &[
                t("a.x", 80, 0, 1, false),
                t("b.x", 80, 0, 1, true),
                t("c.x", 80, 0, 1, false),
            ],
        );
        assert_eq!(notes, ["server b.x:80 left the SRV answer: no new clients"]);
        assert!(!picks(&lb).contains(&Some(2)));
        assert_eq!(lb.lock().servers[2].total, 9);
        let notes = lb.set_srv_targets(
            SRV,
            &[
                t("a.x", 80, 0, 1, false),
                t("b.x", 80, 0, 1, false),
                t("c.x", 80, 0, 1, false),
            ],
        );
        assert_eq!(notes, ["server b.x:80 is back in the SRV answer"]);
        assert!(picks(&lb).contains(&Some(2)));
        // b goes for good: its slot is empty, c keeps index 3.
        let notes =
            lb.set_srv_targets(SRV, &[t("a.x", 80, 0, 1, false), t("c.x", 80, 0, 1, false)]);
        assert!(notes[0].starts_with("server b.x:80 removed"), "{notes:?}");
        assert_eq!(
            labels(&lb),
            ["10.0.0.1:80", "a.x:80", "0.0.0.0:0", "c.x:80"]
        );
        let pen = crate::control::commands::pen_servers(&lb.lock());
        assert!(pen.contains("\n2 addr 0.0.0.0 port 0 conn 0"), "{pen}");
        // A new target takes the empty slot; a weight change is applied.
        let notes = lb.set_srv_targets(
            SRV,
            &[
                t("a.x", 80, 0, 7, false),
                t("c.x", 80, 0, 1, false),
                t("d.x", 80, 0, 1, false),
            ],
        );
        assert_eq!(labels(&lb), ["10.0.0.1:80", "a.x:80", "d.x:80", "c.x:80"]);
        assert!(
            notes.contains(&"server a.x:80 weight 1 -> 7 (srv)".to_string()),
            "{notes:?}"
        );
        // The last target gone: no trailing empty slot.
        lb.set_srv_targets(SRV, &[t("a.x", 80, 0, 7, false), t("d.x", 80, 0, 1, false)]);
        assert_eq!(labels(&lb), ["10.0.0.1:80", "a.x:80", "d.x:80"]);
        // What a resolver restarted from the servers starts with.
        let seed: Vec<(String, u16, bool)> = lb
            .srv_targets(Instant::now())
            .into_iter()
            .map(|t| (t.name, t.record_weight, t.missing_since.is_some()))
            .collect();
        assert_eq!(seed, [("a.x".into(), 7, false), ("d.x".into(), 1, false)]);
    }

    #[test]
    fn a_reload_keeps_them_while_the_srv_name_stays() {
        let lb = balancer();
        lb.set_srv_targets(SRV, &[t("a.x", 80, 0, 1, false), t("b.x", 80, 0, 1, false)]);
        resolve_all(&lb);
        lb.lock().servers[2].total = 4;
        let parse = |extra: &str| {
            let src = format!(
                "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"10.0.0.1:80\", \"10.0.0.2:80\", \"a.x:80\"]\nalgorithm = \"roundrobin\"\n{extra}"
            );
            config::parse_str(&src, std::path::Path::new("t.toml"))
                .unwrap()
                .balancers[0]
                .clone()
        };
        let notes = lb.reconfigure(&parse(&format!("servers_srv = \"{SRV}\"\n")));
        assert_eq!(notes, ["server 10.0.0.2:80 added", "server a.x:80 added"]);
        // The configured a.x:80 is a server of its own; the SRV ones follow the configured.
        assert_eq!(
            labels(&lb),
            ["10.0.0.1:80", "10.0.0.2:80", "a.x:80", "a.x:80", "b.x:80"]
        );
        {
            let st = lb.lock();
            assert!(st.servers[2].srv.is_none() && st.servers[3].srv.is_some());
            assert_eq!(st.servers[4].total, 4, "b.x kept its counters");
        }
        let notes = lb.reconfigure(&parse(""));
        assert!(
            notes.contains(&"servers_srv now None".to_string()),
            "{notes:?}"
        );
        assert_eq!(labels(&lb), ["10.0.0.1:80", "10.0.0.2:80", "a.x:80"]);
        assert!(
            lb.set_srv_targets(SRV, &[t("a.x", 80, 0, 1, false)])
                .is_empty(),
            "no longer its SRV name"
        );
    }
}
