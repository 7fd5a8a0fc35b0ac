//! Failover drills: what each one does, and how its timeline and verdict are read from what
//! was observed (the new master's VRRP states over time, and every client request). The
//! evaluation is pure, shared by `fwlb lab` and `fwlb drill`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::probe::{Fail, Req, States, all_in, any_master};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kill,
    FrontLink,
    BackLink,
    Term,
    Restore,
    Handover,
    /// The master's back side loses every server while its links stay up (`track`).
    ServersLost,
}

impl Kind {
    /// The lab's drills, in the order they run.
    pub const LAB: [Kind; 7] = [
        Kind::Kill,
        Kind::FrontLink,
        Kind::BackLink,
        Kind::Handover,
        Kind::Term,
        Kind::Restore,
        Kind::ServersLost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::FrontLink => "front-link",
            Kind::BackLink => "back-link",
            Kind::Term => "term",
            Kind::Restore => "restore",
            Kind::Handover => "handover",
            Kind::ServersLost => "servers-lost",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::Kill => "master kill -9",
            Kind::FrontLink => "master front link down",
            Kind::BackLink => "master back link down",
            Kind::Term => "master SIGTERM (planned)",
            Kind::Restore => "master restored (preempt back)",
            Kind::Handover => "planned handover (vrrp standby)",
            Kind::ServersLost => "master loses its servers (track)",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Self::LAB.into_iter().find(|k| k.name() == s)
    }

    /// A planned handover must not lose a new connection.
    pub fn planned(self) -> bool {
        matches!(self, Kind::Term | Kind::Handover)
    }
}

/// Milliseconds from the fault.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub fault: f64,
    /// The restored daemon's control port answered (restore only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_up: Option<f64>,
    /// The new master held every VRID (its control port said so).
    pub became_master: Option<f64>,
    /// The first TCP handshake on a VIP completed by the new master.
    pub vip_answered: Option<f64>,
    /// The first client request answered through the new master.
    pub first_success: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    /// Requests of the load loop (one every 10 ms), from before the fault to after recovery.
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    /// Failed before a connection was set up (refused, unreachable, no answer to the SYN).
    pub new_connections_lost: usize,
    /// Failed after the connection was set up (reset, timeout, closed unanswered).
    pub broken: usize,
    pub by_kind: BTreeMap<Fail, usize>,
    /// Which host relayed the answered requests (from the servers' view of the TCP peer).
    pub served_by: BTreeMap<String, usize>,
    /// Answered, but after more than 500 ms (a lost SYN retransmitted after 1 s).
    pub slow: usize,
    pub max_latency_ms: f64,
    /// Failures of requests started well before the fault (50 ms or more): the pair was not
    /// healthy before it.
    pub failed_before_fault: usize,
    /// Slow requests started well before the fault (50 ms or more): lost SYNs before the
    /// fault, so the pair was not healthy either.
    pub slow_before_fault: usize,
    /// Every failed request: when it started, connected and ended (ms from the fault).
    pub failures: Vec<Failure>,
    /// Every slow one, the same way (kind: null).
    pub slow_requests: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub source: String,
    pub start_ms: f64,
    pub connected_ms: Option<f64>,
    pub end_ms: f64,
    pub kind: Option<Fail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub title: String,
    pub from: String,
    pub to: String,
    pub budget_ms: f64,
    pub timeline_ms: Timeline,
    /// When each VRID of the new master became master, ms from the fault.
    pub vrid_master_ms: BTreeMap<u8, f64>,
    pub requests: Requests,
    pub pass: bool,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Everything a drill saw.
pub struct Observed<'a> {
    pub kind: Kind,
    pub from: &'a str,
    pub to: &'a str,
    pub t0: Instant,
    pub budget: Duration,
    /// The new master's states over time, and the old master's.
    pub to_seen: &'a [(Instant, States)],
    pub from_seen: &'a [(Instant, States)],
    pub reqs: &'a [Req],
    /// The host name that relayed a request, from the peer address its server saw; None when
    /// the answer does not say (bare connects on a real pair).
    pub host_of: &'a dyn Fn(IpAddr) -> Option<String>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn since(t0: Instant, t: Instant) -> f64 {
    if t >= t0 { ms(t - t0) } else { -ms(t0 - t) }
}

/// The budget of a failover to a backup with this advert interval and priority:
/// 3 x interval + skew + 50 ms (Master_Down_Interval, RFC 5798 6.1, plus slack for the
/// observer's polling and the scheduler).
pub fn budget(interval: Duration, priority: u8) -> Duration {
    let skew = interval.mul_f64(f64::from(256 - u32::from(priority)) / 256.0);
    interval * 3 + skew + Duration::from_millis(50)
}

/// The longest active checks take to see a server that stopped answering as down: the next
/// check is due within `interval`, then `fall` checks time out `fast_interval` apart. (Failed
/// client connects count toward `fall` too and usually see it sooner, under load.) Without
/// checks only a client's failed connect shows it: `connect_timeout`.
pub fn detection(b: &crate::config::Balancer) -> Duration {
    let h = &b.health;
    if h.check == crate::config::Check::None {
        return b.connect_timeout;
    }
    let fall = h.fall.max(1);
    h.interval + h.timeout * fall + h.fast_interval * (fall - 1)
}

/// The VRRP side of a drill's timeline.
struct Moments {
    /// The new master held every VRID (and no VRID was on standby).
    became: Option<Instant>,
    /// The old master let go of every VRID (down counts).
    left: Option<Instant>,
    /// The restored daemon answered (restore only).
    daemon_up: Option<Instant>,
    /// When each VRID of the new master became master, ms from the fault.
    vrid_master_ms: BTreeMap<u8, f64>,
}

impl Moments {
    fn of(o: &Observed) -> Moments {
        let t0 = o.t0;
        let became = o
            .to_seen
            .iter()
            .find(|(t, s)| *t >= t0 && all_in(s, "master") && !super::probe::any_standby(s))
            .map(|(t, _)| *t);
        let mut vrid_master_ms = BTreeMap::new();
        for (t, s) in o.to_seen.iter().filter(|(t, _)| *t >= t0) {
            for (vrid, st) in s.iter().flatten() {
                if st == "master" {
                    vrid_master_ms.entry(*vrid).or_insert(since(t0, *t));
                }
            }
        }
        let daemon_up = (o.kind == Kind::Restore)
            .then(|| o.to_seen.iter().find(|(t, s)| *t >= t0 && s.is_some()))
            .flatten()
            .map(|(t, _)| *t);
        let left = o
            .from_seen
            .iter()
            .find(|(t, s)| *t >= t0 && !any_master(s))
            .map(|(t, _)| *t);
        Moments {
            became,
            left,
            daemon_up,
            vrid_master_ms,
        }
    }

    /// Which host answered request `r`.
    fn served(&self, o: &Observed, r: &Req) -> Option<String> {
        let seen = r.result.as_ref().ok()?;
        match seen.peer {
            Some(p) => (o.host_of)(p),
            // No server reported who relayed it (bare connects on a real pair): a request
            // started once the new master held everything and the old one nothing was
            // answered by the new master; one before the fault by the old.
            None if r.end < o.t0 => Some(o.from.to_string()),
            None => match (self.became, self.left) {
                (Some(b), Some(l)) if r.start >= b.max(l) => Some(o.to.to_string()),
                _ => None,
            },
        }
    }
}

impl Failure {
    fn of(r: &Req, t0: Instant, kind: Option<Fail>) -> Failure {
        Failure {
            source: r.src.to_string(),
            start_ms: since(t0, r.start),
            connected_ms: r.connected.map(|c| since(t0, c)),
            end_ms: since(t0, r.end),
            kind,
        }
    }
}

pub fn evaluate(o: &Observed) -> Outcome {
    let t0 = o.t0;
    let m = Moments::of(o);
    let by_to: Vec<&Req> = o
        .reqs
        .iter()
        .filter(|r| r.end >= t0 && m.served(o, r).as_deref() == Some(o.to))
        .collect();
    let vip_answered = by_to
        .iter()
        .filter_map(|r| r.connected.filter(|c| *c >= t0))
        .min();
    let first_success = by_to.iter().map(|r| r.end).min();
    let rq = requests(o, &m);
    let timeline = Timeline {
        fault: 0.0,
        daemon_up: m.daemon_up.map(|t| since(t0, t)),
        became_master: m.became.map(|t| since(t0, t)),
        vip_answered: vip_answered.map(|t| since(t0, t)),
        first_success: first_success.map(|t| since(t0, t)),
    };
    let problems = problems(o, &m, first_success, &rq);
    Outcome {
        name: o.kind.name().into(),
        title: o.kind.title().into(),
        from: o.from.into(),
        to: o.to.into(),
        budget_ms: ms(o.budget),
        timeline_ms: timeline,
        vrid_master_ms: m.vrid_master_ms,
        requests: rq,
        pass: problems.is_empty(),
        problems,
        notes: Vec::new(),
    }
}

/// Every request of the load loop, counted by how it went.
fn requests(o: &Observed, m: &Moments) -> Requests {
    let t0 = o.t0;
    let mut rq = Requests {
        total: o.reqs.len(),
        ..Default::default()
    };
    for r in o.reqs {
        let lat = r.end.saturating_duration_since(r.start);
        let before_fault = r.start + Duration::from_millis(50) < t0;
        match &r.result {
            Ok(_) => {
                rq.ok += 1;
                if let Some(h) = m.served(o, r) {
                    *rq.served_by.entry(h).or_insert(0) += 1;
                }
                if lat > Duration::from_millis(500) {
                    rq.slow += 1;
                    if before_fault {
                        rq.slow_before_fault += 1;
                    }
                    rq.slow_requests.push(Failure::of(r, t0, None));
                }
                rq.max_latency_ms = rq.max_latency_ms.max(ms(lat));
            }
            Err(f) => {
                rq.failed += 1;
                rq.failures.push(Failure::of(r, t0, Some(*f)));
                *rq.by_kind.entry(*f).or_insert(0) += 1;
                if f.is_connect() {
                    rq.new_connections_lost += 1;
                } else {
                    rq.broken += 1;
                }
                if before_fault {
                    rq.failed_before_fault += 1;
                }
            }
        }
    }
    rq
}

/// What makes the drill fail: too slow, requests lost, a split end.
fn problems(
    o: &Observed,
    m: &Moments,
    first_success: Option<Instant>,
    rq: &Requests,
) -> Vec<String> {
    let mut problems = Vec::new();
    // The clock of a restore starts when the daemon is up: before, there is nothing to time.
    let start = m.daemon_up.unwrap_or(o.t0);
    let budget_ms = ms(o.budget);
    // How long after the start, when that is over the budget.
    let over = |t: Instant| {
        Some(t.saturating_duration_since(start))
            .filter(|d| *d > o.budget)
            .map(ms)
    };
    if m.became.is_none() {
        problems.push(format!("{} never held every VRID", o.to));
    }
    if let Some(took) = m.became.and_then(over) {
        problems.push(format!(
            "{} took {took} ms to hold every VRID (budget {budget_ms} ms)",
            o.to
        ));
    }
    // Without load (no balancer on a VIP) there is no request to answer.
    if first_success.is_none() && !o.reqs.is_empty() {
        problems.push(format!("no client request was answered through {}", o.to));
    }
    if let Some(took) = first_success.and_then(over) {
        problems.push(format!(
            "the first request through {} was answered after {took} ms (budget {budget_ms} ms)",
            o.to
        ));
    }
    if rq.failed_before_fault > 0 {
        problems.push(format!(
            "{} request(s) failed before the fault: the pair was not healthy",
            rq.failed_before_fault
        ));
    }
    if rq.slow_before_fault > 0 {
        problems.push(format!(
            "{} request(s) started before the fault waited for a retransmitted SYN: the pair was not healthy",
            rq.slow_before_fault
        ));
    }
    if o.kind.planned() && rq.new_connections_lost > 0 {
        problems.push(format!(
            "a planned handover lost {} new connection(s)",
            rq.new_connections_lost
        ));
    }
    // The end: the new master holds everything, the old one nothing (no split across VRIDs).
    let end_to: States = o.to_seen.last().and_then(|(_, s)| s.clone());
    let end_from: States = o.from_seen.last().and_then(|(_, s)| s.clone());
    if m.became.is_some() && !all_in(&end_to, "master") {
        problems.push(format!(
            "{} did not keep every VRID: {}",
            o.to,
            show(&end_to)
        ));
    }
    if any_master(&end_from) {
        problems.push(format!(
            "{} is still master of some VRID at the end: {}",
            o.from,
            show(&end_from)
        ));
    }
    problems
}

/// `1=master 2=backup`, or `down`.
pub fn show(s: &States) -> String {
    match s {
        None => "down".into(),
        Some(v) => v
            .iter()
            .map(|(k, st)| format!("{k}={st}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::probe::Seen;

    fn st(pairs: &[(u8, &str)]) -> States {
        Some(pairs.iter().map(|(v, s)| (*v, s.to_string())).collect())
    }

    fn req(t0: Instant, start: u64, end: u64, peer: Option<&str>) -> Req {
        Req {
            target: 0,
            src: "192.0.2.254".parse().unwrap(),
            start: t0 + Duration::from_millis(start),
            connected: peer.map(|_| t0 + Duration::from_millis(start + 1)),
            end: t0 + Duration::from_millis(end),
            result: match peer {
                Some(p) => Ok(Seen {
                    server: "10.0.0.11:80".into(),
                    peer: Some(p.parse().unwrap()),
                    forwarded_for: None,
                    proxy_src: None,
                }),
                None => Err(Fail::Refused),
            },
        }
    }

    #[test]
    fn timeline_and_verdict() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let at = |m: u64| t0 + Duration::from_millis(m);
        let to_seen = vec![
            (
                at(0) - Duration::from_millis(300),
                st(&[(1, "backup"), (2, "backup")]),
            ),
            (at(60), st(&[(1, "backup"), (2, "master")])),
            (at(350), st(&[(1, "master"), (2, "master")])),
        ];
        let from_seen = vec![
            (
                at(0) - Duration::from_millis(300),
                st(&[(1, "master"), (2, "master")]),
            ),
            (at(5), None),
        ];
        let reqs = vec![
            req(t0, 0, 2, Some("10.0.0.2")).tap(|r| r.start -= Duration::from_millis(100)),
            req(t0, 10, 11, None),
            req(t0, 355, 358, Some("10.0.0.3")),
        ];
        let host_of = |a: IpAddr| -> Option<String> {
            Some(
                if a.to_string() == "10.0.0.2" {
                    "a"
                } else {
                    "b"
                }
                .into(),
            )
        };
        let o = Observed {
            kind: Kind::Kill,
            from: "a",
            to: "b",
            t0,
            budget: budget(Duration::from_millis(100), 100),
            to_seen: &to_seen,
            from_seen: &from_seen,
            reqs: &reqs,
            host_of: &host_of,
        };
        let out = evaluate(&o);
        assert!(out.pass, "{:?}", out.problems);
        assert_eq!(out.budget_ms, 410.9);
        assert_eq!(out.timeline_ms.became_master, Some(350.0));
        assert_eq!(out.timeline_ms.vip_answered, Some(356.0));
        assert_eq!(out.timeline_ms.first_success, Some(358.0));
        assert_eq!(out.vrid_master_ms.get(&2), Some(&60.0));
        assert_eq!(
            (out.requests.failed, out.requests.new_connections_lost),
            (1, 1)
        );
        assert_eq!(out.requests.served_by.get("a"), Some(&1));
        // Too slow, and the same loss in a planned handover: both named.
        let late = vec![(at(500), st(&[(1, "master"), (2, "master")]))];
        let o2 = Observed {
            kind: Kind::Term,
            to_seen: &late,
            ..o
        };
        let out = evaluate(&o2);
        assert!(!out.pass);
        assert!(
            out.problems.iter().any(|p| p.contains("took 500 ms")),
            "{:?}",
            out.problems
        );
        assert!(
            out.problems
                .iter()
                .any(|p| p.contains("lost 1 new connection")),
            "{:?}",
            out.problems
        );
        // Split VRIDs at the end.
        let split = vec![
            (at(350), st(&[(1, "master"), (2, "master")])),
            (at(900), st(&[(1, "master"), (2, "backup")])),
        ];
        let out = evaluate(&Observed {
            to_seen: &split,
            ..o2
        });
        assert!(
            out.problems
                .iter()
                .any(|p| p.contains("did not keep every VRID")),
            "{:?}",
            out.problems
        );
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }
    impl Tap for Req {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    #[test]
    fn detection_of_lost_servers() {
        let cfg = crate::config::parse_str(
            "[[balancer]]\nlisten = \"127.0.0.1:80\"\nservers = [\"10.0.0.1\", \"10.0.0.2\"]\n\
             [[balancer]]\nlisten = \"127.0.0.1:81\"\nservers = [\"10.0.0.1\"]\nconnect_timeout = \"2s\"\n",
            std::path::Path::new("t.toml"),
        )
        .expect("config");
        // The default check: 2 s, then 3 x 1 s timeouts 500 ms apart.
        assert_eq!(detection(&cfg.balancers[0]), Duration::from_millis(6000));
        // One server: no checks by default, a client's connect timeout.
        assert_eq!(detection(&cfg.balancers[1]), Duration::from_secs(2));
    }

    #[test]
    fn budgets() {
        assert_eq!(budget(Duration::from_millis(100), 100).as_micros(), 410_937);
        assert_eq!(budget(Duration::from_secs(1), 100).as_millis(), 3659);
    }
}
