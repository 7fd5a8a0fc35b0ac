//! The `servers-lost` drill: the master's packets to every server are dropped (an nftables
//! table of the lab's own in the master's namespace) while all its links stay up, so its VRRP
//! adverts go on and only `track` can move the pair. After the drill the servers come back
//! and the master must preempt back once its checks see them up.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::{Kind, Lab, Outcome, SETTLE_LIMIT, netns, pause, probe};

/// The table the drill adds on the master (the daemon's own firewall is another table).
const TABLE: &str = "fwlab_servers_lost";

impl Lab {
    /// Why the drill cannot show anything here, if it cannot: no server, or no `track` on
    /// the master.
    pub(super) fn servers_lost_skip(&self) -> Option<String> {
        if self.topo.servers.is_empty() || self.topo.targets.is_empty() {
            return Some("no balancer with servers: the servers-lost drill was skipped".into());
        }
        let host = &self.topo.hosts[self.master];
        if host.cfg.vrrp.iter().all(|v| v.track.is_empty()) {
            return Some(format!(
                "{} has no `track` in its [[vrrp]]: the servers-lost drill was skipped (add track = [{{ balancer = \"NAME\", weight = -60 }}])",
                host.name
            ));
        }
        None
    }

    /// Drop (`cut`) host `h`'s packets to every server, or stop dropping them; when it
    /// happened.
    pub(super) fn cut_servers(&self, h: usize, cut: bool) -> Result<Instant> {
        let addrs: Vec<String> = self
            .topo
            .servers
            .iter()
            .flat_map(|s| s.listen.iter().map(|(a, _)| a.to_string()))
            .collect();
        let script = if cut {
            format!(
                "table ip {TABLE} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {{ {} }} drop\n  }}\n}}\n",
                addrs.join(", ")
            )
        } else {
            format!("delete table ip {TABLE}\n")
        };
        let name = self.topo.hosts[h].name.clone();
        netns::run_in_ns(&self.topo.hosts[h].ns, move || {
            let t = Instant::now();
            crate::sys::nft::apply(&script).map(|()| t)
        })?
        .map_err(|e| anyhow!("nft on {name}: {e}"))
    }

    /// What the budget adds for drill `k` from host `h`: the longest the checks of the
    /// balancers `h` tracks may take to see their servers go.
    pub(super) fn detection_time(&self, k: Kind, h: usize) -> Duration {
        if k != Kind::ServersLost {
            return Duration::ZERO;
        }
        let cfg = &self.topo.hosts[h].cfg;
        cfg.vrrp
            .iter()
            .flat_map(|v| &v.track)
            .filter_map(|t| cfg.balancers.iter().find(|b| b.name == t.balancer))
            .map(super::drill::detection)
            .max()
            .unwrap_or_default()
    }

    /// The servers are back (undone): wait until the master holds every VRID again, and say
    /// how long that took in `out` (a problem when it does not within the settle limit).
    pub(super) fn servers_back(&mut self, out: &mut Outcome) -> Result<()> {
        let t0 = Instant::now();
        let m = self.master;
        let name = self.topo.hosts[m].name.clone();
        while !probe::all_in(&self.states(m)?, "master") {
            if t0.elapsed() > SETTLE_LIMIT {
                out.problems.push(format!(
                    "{name} did not take its VRIDs back within {} s of its servers coming back",
                    SETTLE_LIMIT.as_secs()
                ));
                out.pass = false;
                return Ok(());
            }
            pause(Duration::from_millis(10))?;
        }
        out.notes.push(format!(
            "the servers back (nft rule removed): {name} master again after {} ms (its checks see them up, then it preempts)",
            t0.elapsed().as_millis()
        ));
        Ok(())
    }
}
