//! Run-time addresses of servers given by name (crate::resolver decides them): a server whose
//! address changes keeps its index, sticky clients and counters; connections already placed
//! go on to the address they were given.

use std::net::{IpAddr, SocketAddr};

use super::Balancer;

impl Balancer {
    /// Every server named `host` (any port, the emergency server included) now has address
    /// `ip`, or none it may trust (None: it is `unresolved` and gets no new clients). Returns
    /// one line per change, for the log.
    pub fn set_resolved(&self, host: &str, ip: Option<IpAddr>) -> Vec<String> {
        let mut notes = Vec::new();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut moved = false;
        for s in st
            .servers
            .iter_mut()
            .chain(st.emergency.iter_mut())
            .filter(|s| s.cfg.name.as_deref() == Some(host))
        {
            let label = s.cfg.label();
            let old = s.cfg.addr;
            match ip {
                Some(ip) if s.unresolved => {
                    s.cfg.addr = SocketAddr::new(ip, old.port());
                    s.unresolved = false;
                    moved |= old.ip() != ip;
                    notes.push(format!("server {label} resolved: address {ip} (dns)"));
                }
                Some(ip) if old.ip() != ip => {
                    s.cfg.addr = SocketAddr::new(ip, old.port());
                    moved = true;
                    notes.push(format!("server {label} address {} -> {ip} (dns)", old.ip()));
                }
                Some(_) => {}
                None if !s.unresolved => {
                    s.unresolved = true;
                    notes.push(format!(
                        "server {label} unresolved: address {} no longer trusted, no new clients",
                        old.ip()
                    ));
                }
                None => {}
            }
        }
        // Selectors that place clients by address (consistent) are rebuilt.
        if moved {
            st.reselect();
        }
        if !notes.is_empty() {
            self.publish_availability(st, std::time::Instant::now());
        }
        notes
    }

    /// The address a server named `host` has now, if any is resolved (a reload's new name
    /// task, or a restart with a state file, starts from it).
    pub fn resolved_address(&self, host: &str) -> Option<IpAddr> {
        let st = self.lock();
        st.servers
            .iter()
            .chain(st.emergency.iter())
            .find(|s| s.cfg.name.as_deref() == Some(host) && !s.unresolved)
            .map(|s| s.cfg.addr.ip())
    }

    /// Every resolved server given by name (SRV targets and the emergency server included):
    /// (label, its address), sorted by label; what the firewall's back side opens to.
    pub fn resolved_servers(&self) -> Vec<(String, Vec<IpAddr>)> {
        let st = self.lock();
        let mut v: Vec<(String, Vec<IpAddr>)> = st
            .servers
            .iter()
            .chain(st.emergency.iter())
            .filter(|s| s.cfg.name.is_some() && !s.unresolved)
            .map(|s| (s.cfg.label(), vec![s.cfg.addr.ip()]))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The host names of every server given by name, the emergency server's and the SRV
    /// targets' included, each once (what the resolver must look up for this balancer).
    pub fn server_names(&self) -> Vec<String> {
        let st = self.lock();
        let mut names: Vec<String> = Vec::new();
        for n in st
            .servers
            .iter()
            .chain(st.emergency.iter())
            .filter_map(|s| s.cfg.name.as_ref())
        {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::balancer::Balancer;
    use crate::config;

    fn balancer() -> std::sync::Arc<Balancer> {
        let cfg = config::parse_str(
            "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"10.0.0.1:80\", \"app.internal:80\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        Balancer::new(cfg.balancers[0].clone())
    }

    #[test]
    fn unresolved_until_an_address_then_moves_in_place() {
        let lb = balancer();
        let now = Instant::now();
        assert!(lb.lock().servers[1].unresolved);
        assert!(!lb.lock().servers[1].usable(now, false));
        let pen = crate::control::commands::pen_servers(&lb.lock());
        assert!(pen.contains("\n1 addr 0.0.0.0 port 80 conn 0"), "{pen}");
        // Only the unresolved server's neighbour is picked.
        for _ in 0..4 {
            assert_eq!(lb.plan("192.0.2.1".parse().unwrap(), 1, now).0, Some(0));
        }
        let notes = lb.set_resolved("app.internal", Some("10.0.0.21".parse().unwrap()));
        assert_eq!(
            notes,
            ["server app.internal:80 resolved: address 10.0.0.21 (dns)"]
        );
        lb.lock().servers[1].total = 7;
        let notes = lb.set_resolved("app.internal", Some("10.0.0.42".parse().unwrap()));
        assert_eq!(
            notes,
            ["server app.internal:80 address 10.0.0.21 -> 10.0.0.42 (dns)"]
        );
        let st = lb.lock();
        assert_eq!(st.servers[1].cfg.addr.to_string(), "10.0.0.42:80");
        assert_eq!(st.servers[1].total, 7, "counters kept");
        assert!(st.servers[1].usable(now, false));
        drop(st);
        assert!(
            lb.set_resolved("app.internal", Some("10.0.0.42".parse().unwrap()))
                .is_empty()
        );
        let notes = lb.set_resolved("app.internal", None);
        assert_eq!(notes.len(), 1);
        assert!(!lb.lock().servers[1].usable(now, false));
        let pen = crate::control::commands::pen_servers(&lb.lock());
        assert!(
            pen.contains("\n1 addr 0.0.0.0 port 80"),
            "unresolved again: {pen}"
        );
        assert!(lb.set_resolved("other.internal", None).is_empty());
    }

    #[test]
    fn reload_matches_by_name_and_keeps_the_address() {
        let lb = balancer();
        lb.set_resolved("app.internal", Some("10.0.0.21".parse().unwrap()));
        lb.lock().servers[1].total = 3;
        let new = config::parse_str(
            "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"app.internal:80:0:0:5\", \"app.internal:81\", \"10.0.0.1:80\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let notes = lb.reconfigure(&new.balancers[0]);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("server app.internal:80 changed (weight 1 -> 5")),
            "{notes:?}"
        );
        assert!(
            notes.contains(&"server app.internal:81 added".to_string()),
            "{notes:?}"
        );
        let st = lb.lock();
        let kept = &st.servers[0];
        assert_eq!(kept.cfg.addr.to_string(), "10.0.0.21:80");
        assert_eq!(
            (kept.unresolved, kept.total, kept.cfg.weight),
            (false, 3, 5)
        );
        assert!(
            st.servers[1].unresolved,
            "a new server waits for its name's address"
        );
        drop(st);
        // What Resolvers::update does for a name it already knows.
        lb.set_resolved("app.internal", Some("10.0.0.21".parse().unwrap()));
        assert_eq!(lb.lock().servers[1].cfg.addr.to_string(), "10.0.0.21:81");
    }
}
