//! The lab's report: one structure, printed as aligned tables for people or as JSON
//! (`--json`) for machines. The JSON layout is documented in the README ("fwlb lab").

use std::collections::BTreeMap;

use serde::Serialize;

use super::drill::Outcome;

#[derive(Debug, Clone, Serialize)]
pub struct Iface {
    pub name: String,
    pub address: String,
    pub segment: String,
    /// The bridge port at the other end of its cable.
    pub port: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub name: String,
    pub config: String,
    pub namespace: String,
    pub control: String,
    pub interfaces: Vec<Iface>,
    pub vrids: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub name: String,
    pub namespace: String,
    pub network: String,
    pub vips: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeafReport {
    pub namespace: String,
    pub segment: String,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    pub balancer: String,
    pub listen: String,
    pub algorithm: String,
    pub requests: usize,
    pub failed: usize,
    /// Answers per server address.
    pub by_server: BTreeMap<String, usize>,
    /// Answers per relaying host.
    pub served_by: BTreeMap<String, usize>,
    /// How the client address reaches the servers: "x-forwarded-for", "proxy-v1",
    /// "proxy-v2" or "none".
    pub client_address: String,
    /// Whether every server saw the true client address that way (null for "none").
    pub client_address_ok: Option<bool>,
    /// Whether the spread matches the algorithm.
    pub spread_ok: bool,
    pub pass: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pass: bool,
    pub dir: String,
    pub duration_ms: f64,
    /// Leftovers of an earlier lab removed before starting.
    pub cleaned: Vec<String>,
    pub hosts: Vec<HostReport>,
    pub segments: Vec<SegmentReport>,
    pub client: LeafReport,
    pub servers: Vec<LeafReport>,
    pub traffic: Vec<Traffic>,
    pub drills: Vec<Outcome>,
    /// Every process the lab started (all gone when it exits, unless --keep).
    pub pids: Vec<u32>,
    pub kept: bool,
    pub notes: Vec<String>,
    /// Set when the lab stopped early (interrupted, or a step failed).
    pub error: Option<String>,
}

/// The drills as a table: timeline, budget, requests, verdict.
pub fn drills_table(drills: &[Outcome]) -> String {
    let rows: Vec<Vec<String>> = drills
        .iter()
        .map(|d| {
            let t = &d.timeline_ms;
            let r = &d.requests;
            vec![
                d.title.clone(),
                format!("{} -> {}", d.from, d.to),
                opt_ms(t.became_master),
                opt_ms(t.vip_answered),
                opt_ms(t.first_success),
                format!("{:.0}", d.budget_ms),
                format!("{}/{}", r.failed, r.total),
                r.new_connections_lost.to_string(),
                r.slow.to_string(),
                verdict(d.pass),
            ]
        })
        .collect();
    table(
        &[
            "drill",
            "from -> to",
            "master",
            "VIP",
            "first ok",
            "budget",
            "failed",
            "lost new",
            "slow",
            "result",
        ],
        &rows,
    )
}

/// `192.0.2.247-254` for a run of three or more consecutive IPv4 addresses, else the list.
fn compact(addrs: &[String]) -> String {
    let ips: Vec<u32> = addrs
        .iter()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok().map(u32::from))
        .collect();
    let (Some(lo), Some(hi)) = (ips.iter().min(), ips.iter().max()) else {
        return addrs.join(" ");
    };
    let run = ips.len() == addrs.len()
        && ips.len() >= 3
        && (hi - lo) as usize + 1 == ips.len()
        && lo >> 8 == hi >> 8;
    if run {
        format!("{}-{}", std::net::Ipv4Addr::from(*lo), hi & 0xff)
    } else {
        addrs.join(" ")
    }
}

/// Columns aligned on the widest cell.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (k, c) in r.iter().enumerate() {
            if k < w.len() {
                w[k] = w[k].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::from(" ");
        for (k, c) in cells.iter().enumerate() {
            s.push(' ');
            s.push_str(c);
            if k + 1 < cells.len() {
                s.push_str(&" ".repeat(w[k].saturating_sub(c.chars().count()) + 1));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

fn verdict(pass: bool) -> String {
    if pass { "pass" } else { "FAIL" }.into()
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        out.push_str(&format!(
            "fwlb lab: {} ({})\n\n",
            self.dir,
            names.join(", ")
        ));
        out.push_str("network\n");
        out.push_str(&self.network_table());
        if !self.traffic.is_empty() {
            out.push_str(&self.traffic_table());
        }
        if !self.drills.is_empty() {
            out.push_str(
                "\ndrills (ms from the fault; budget 3 x interval + skew + 50 ms, servers-lost adds the checks' detection; load: a request every 10 ms)\n",
            );
            out.push_str(&drills_table(&self.drills));
        }
        let problems = self.problems_and_notes();
        if !problems.is_empty() {
            out.push('\n');
            for p in problems {
                out.push_str(&format!("  {p}\n"));
            }
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("\nstopped: {e}\n"));
        }
        out.push_str(&format!(
            "\n{}: {} traffic check(s), {} drill(s) in {:.1} s\n",
            if self.pass { "PASS" } else { "FAIL" },
            self.traffic.len(),
            self.drills.len(),
            self.duration_ms / 1000.0
        ));
        out
    }

    /// One row per segment: its network, VIPs, and who is on it.
    fn network_table(&self) -> String {
        let mut rows = Vec::new();
        for s in &self.segments {
            let mut who: Vec<String> = self
                .hosts
                .iter()
                .flat_map(|h| {
                    h.interfaces
                        .iter()
                        .filter(|i| i.segment == s.name)
                        .map(move |i| format!("{} {} {}", h.name, i.name, i.address))
                })
                .collect();
            for l in std::iter::once(&self.client).chain(self.servers.iter()) {
                if l.segment == s.name {
                    who.push(format!(
                        "{} {}",
                        l.namespace.trim_start_matches(super::topo::PREFIX),
                        compact(&l.addresses)
                    ));
                }
            }
            rows.push(vec![
                s.name.clone(),
                s.network.clone(),
                format!("VIP {}", s.vips.join(" ")),
                who.join(", "),
            ]);
        }
        table(&["segment", "network", "VRRP", "on it"], &rows)
    }

    /// The traffic checks, under a line naming the hosts that relayed them.
    fn traffic_table(&self) -> String {
        let via = self
            .traffic
            .iter()
            .flat_map(|t| t.served_by.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>();
        let mut out = format!(
            "\ntraffic (relayed by {})\n",
            via.into_iter().collect::<Vec<_>>().join(", ")
        );
        let rows: Vec<Vec<String>> = self
            .traffic
            .iter()
            .map(|t| {
                let spread: Vec<String> = t
                    .by_server
                    .iter()
                    .map(|(s, n)| format!("{}={n}", s.split(':').next().unwrap_or(s)))
                    .collect();
                let ca = match t.client_address_ok {
                    Some(true) => format!("{} ok", t.client_address),
                    Some(false) => format!("{} WRONG", t.client_address),
                    None => "not passed on".into(),
                };
                vec![
                    t.balancer.clone(),
                    t.listen.clone(),
                    t.algorithm.clone(),
                    format!("{}/{}", t.failed, t.requests),
                    spread.join(" "),
                    ca,
                    verdict(t.pass),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "balancer",
                "listen",
                "algorithm",
                "failed",
                "answers per server",
                "client address",
                "result",
            ],
            &rows,
        ));
        out
    }

    /// Every problem of the traffic checks and drills, then the notes.
    fn problems_and_notes(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for t in &self.traffic {
            for p in &t.problems {
                problems.push(format!("traffic {} {}: {p}", t.balancer, t.listen));
            }
        }
        for d in &self.drills {
            for p in &d.problems {
                problems.push(format!("{}: {p}", d.title));
            }
            if let Some(r) = &d.timeline_ms.daemon_up {
                problems.push(format!(
                    "{}: (note) the restarted daemon answered at {r:.0} ms; its times count from there",
                    d.title
                ));
            }
            for n in &d.notes {
                problems.push(format!("{}: (note) {n}", d.title));
            }
        }
        for n in &self.notes {
            problems.push(format!("(note) {n}"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let t = table(
            &["a", "bb"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "  a    bb\n  xyz  1\n  q    22\n");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            compact(&s(&["192.0.2.254", "192.0.2.253", "192.0.2.252"])),
            "192.0.2.252-254"
        );
        assert_eq!(
            compact(&s(&["10.0.0.11", "10.0.0.13"])),
            "10.0.0.11 10.0.0.13"
        );
    }
}
