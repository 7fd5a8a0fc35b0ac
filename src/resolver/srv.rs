//! What one SRV name (a balancer's `servers_srv`) gives its balancer, as a pure function of
//! (state, outcome of a lookup, now): the targets that are servers, with the port, weight and
//! priority of their record, and when to ask again. No I/O, no clock. The targets' addresses
//! are not decided here: each target is a server name, resolved by [`super::state`].
//!
//! Rules (RFC 2782, and what HAProxy users ran into):
//! - A record is refused, and named in `Step::refused`, when its target is not a host name,
//!   its port is 0, or it comes after [`MAX_TARGETS`] distinct targets. The same target and
//!   port twice is one server (the lowest priority wins). A lone target "." says the service
//!   is not available here: an answer with no target.
//! - Priority: the lowest priority is used; targets of a higher priority are backups (the
//!   balancer gives them clients only while no lower-priority target can take one). HAProxy
//!   ignores the priority; RFC 2782 says a client MUST try the lowest first.
//! - Weight: the record's weight is the server's. Where every record of a priority has
//!   weight 0 (what Consul and Mesos-DNS send), each gets weight 1; otherwise a weight 0 stays
//!   0 (never chosen by `weight`, still a failover). HAProxy divides by 256 (1..255 -> 1),
//!   which surprised its users.
//! - A target missing from a good answer is obsolete: no clients, but it keeps its place, its
//!   counters and its sticky clients for `hold_obsolete` (HAProxy's `hold obsolete`), so an
//!   answer that drops a record once does not cost the server its identity; then it goes.
//! - A failed lookup (NXDOMAIN, SERVFAIL, timeout, or an answer with nothing usable) keeps the
//!   targets as they are for `hold_nx` from the first failure, then all are obsolete. A good
//!   answer is trusted for its TTL clamped to 1 s..`hold_valid`; failing names are asked
//!   again every `retry`.

use std::time::{Duration, Instant};

use super::state::{MIN_HOLD, Params};
use crate::config::server_spec::host_name;

/// Most targets one SRV name gives (present and obsolete together): the slots a balancer
/// can gain from one answer are bounded, whatever the answer holds.
pub const MAX_TARGETS: usize = 64;

/// One SRV record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// As the answer spells it (a trailing dot is fine).
    pub target: String,
}

/// What a lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answer {
        records: Vec<Record>,
        ttl: Duration,
    },
    /// No answer to use; the reason is for the log.
    Failed(String),
}

/// One target, a server of the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name (lower case, no trailing dot).
    pub name: String,
    pub port: u16,
    pub priority: u16,
    /// The record's weight.
    pub record_weight: u16,
    /// The server's weight (see the module notes).
    pub weight: u32,
    /// Since when the target is missing from the answers (None: present).
    pub missing_since: Option<Instant>,
}

impl Target {
    pub fn obsolete(&self) -> bool {
        self.missing_since.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvState {
    /// In the order they first appeared.
    pub targets: Vec<Target>,
    /// Since when lookups fail (None while they succeed).
    pub failing_since: Option<Instant>,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub state: SrvState,
    /// When to look the name up again (sooner when an obsolete target is due to go).
    pub next_query: Instant,
    /// Records refused, each with the reason (for a log line per episode and a counter).
    pub refused: Vec<String>,
}

/// Apply a lookup's outcome at `now`; `hold_obsolete` as in the module notes.
pub fn step(
    st: &SrvState,
    outcome: &Outcome,
    now: Instant,
    p: &Params,
    hold_obsolete: Duration,
) -> Step {
    let (mut next, refused, good) = match outcome {
        Outcome::Answer { records, ttl } => {
            let (found, refused) = validate(records);
            // An answer whose every record was refused is bad input, not "no targets".
            let usable = !found.is_empty() || refused.is_empty();
            if usable {
                let valid = now + (*ttl).clamp(MIN_HOLD, p.hold_valid.max(MIN_HOLD));
                (answered(st, found, now), refused, Some(valid))
            } else {
                (failed(st, now, p), refused, None)
            }
        }
        Outcome::Failed(_) => (failed(st, now, p), Vec::new(), None),
    };
    next.targets.retain(|t| {
        t.missing_since
            .is_none_or(|since| now.saturating_duration_since(since) < hold_obsolete)
    });
    let expiry = next
        .targets
        .iter()
        .filter_map(|t| t.missing_since.map(|s| s + hold_obsolete))
        .min();
    let asked = good.unwrap_or(now + p.retry);
    Step {
        next_query: expiry.map_or(asked, |e| e.min(asked)),
        state: next,
        refused,
    }
}

/// The answer's targets, each once, at most [`MAX_TARGETS`], with their server weights; and
/// the records refused.
fn validate(records: &[Record]) -> (Vec<Target>, Vec<String>) {
    let mut found: Vec<Target> = Vec::new();
    let mut refused = Vec::new();
    let mut sorted: Vec<&Record> = records.iter().collect();
    // Lowest priority first, so a duplicate keeps its lowest; stable: answer order otherwise.
    sorted.sort_by_key(|r| r.priority);
    for r in sorted {
        let shown = || format!("{} {} {} {}", r.priority, r.weight, r.port, r.target);
        if r.target == "." && records.len() == 1 {
            continue;
        }
        let Some(name) = host_name(&r.target) else {
            refused.push(format!("{}: target is not a host name", shown()));
            continue;
        };
        if r.port == 0 {
            refused.push(format!("{}: port 0", shown()));
            continue;
        }
        if found.iter().any(|t| t.name == name && t.port == r.port) {
            continue;
        }
        if found.len() == MAX_TARGETS {
            refused.push(format!("{}: more than {MAX_TARGETS} targets", shown()));
            continue;
        }
        found.push(Target {
            name,
            port: r.port,
            priority: r.priority,
            record_weight: r.weight,
            weight: u32::from(r.weight),
            missing_since: None,
        });
    }
    let mut tiers: Vec<u16> = found.iter().map(|t| t.priority).collect();
    tiers.dedup();
    for prio in tiers {
        let in_tier = |t: &&mut Target| t.priority == prio;
        if found
            .iter_mut()
            .filter(in_tier)
            .all(|t| t.record_weight == 0)
        {
            for t in found.iter_mut().filter(in_tier) {
                t.weight = 1;
            }
        }
    }
    (found, refused)
}

/// The state after a good answer listing `found`: known targets take the record's values
/// again, new ones follow in answer order, missing ones become obsolete. Obsolete targets
/// give their room to new ones when [`MAX_TARGETS`] would be passed (oldest first).
fn answered(st: &SrvState, found: Vec<Target>, now: Instant) -> SrvState {
    let mut targets: Vec<Target> = st
        .targets
        .iter()
        .map(|old| match found.iter().find(|t| same(t, old)) {
            Some(t) => t.clone(),
            None => Target {
                missing_since: old.missing_since.or(Some(now)),
                ..old.clone()
            },
        })
        .collect();
    for t in found {
        if targets.iter().any(|o| same(o, &t)) {
            continue;
        }
        if targets.len() >= MAX_TARGETS {
            let oldest = targets
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.missing_since.map(|s| (s, i)))
                .min();
            match oldest {
                Some((_, i)) => {
                    targets.remove(i);
                }
                None => continue,
            }
        }
        targets.push(t);
    }
    SrvState {
        targets,
        failing_since: None,
    }
}

/// The state after a failed lookup: the targets as they are until `hold_nx` has passed since
/// the first failure, then every one obsolete.
fn failed(st: &SrvState, now: Instant, p: &Params) -> SrvState {
    let since = st.failing_since.unwrap_or(now);
    let held = now.saturating_duration_since(since) < p.hold_nx;
    let targets = st
        .targets
        .iter()
        .map(|t| Target {
            missing_since: if held {
                t.missing_since
            } else {
                t.missing_since.or(Some(now))
            },
            ..t.clone()
        })
        .collect();
    SrvState {
        targets,
        failing_since: Some(since),
    }
}

fn same(a: &Target, b: &Target) -> bool {
    a.name == b.name && a.port == b.port
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        hold_valid: Duration::from_secs(300),
        hold_nx: Duration::from_secs(30),
        retry: Duration::from_secs(1),
    };
    const OBSOLETE: Duration = Duration::from_secs(10);

    fn rec(priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn answer(records: Vec<Record>, ttl: u64) -> Outcome {
        Outcome::Answer {
            records,
            ttl: Duration::from_secs(ttl),
        }
    }

    /// (name:port, weight, priority, obsolete) of every target.
    fn summary(st: &SrvState) -> Vec<(String, u32, u16, bool)> {
        st.targets
            .iter()
            .map(|t| {
                let label = format!("{}:{}", t.name, t.port);
                (label, t.weight, t.priority, t.obsolete())
            })
            .collect()
    }

    fn s(label: &str, w: u32, prio: u16, obsolete: bool) -> (String, u32, u16, bool) {
        (label.to_string(), w, prio, obsolete)
    }

    #[test]
    fn targets_with_port_weight_and_priority() {
        let t0 = Instant::now();
        let a = answer(
            vec![
                rec(20, 5, 8080, "backup.app.internal."),
                rec(10, 60, 8080, "A.app.internal."),
                rec(10, 20, 8081, "b.app.internal"),
            ],
            5,
        );
        let st = step(&SrvState::default(), &a, t0, &P, OBSOLETE);
        assert!(st.refused.is_empty());
        assert_eq!(
            summary(&st.state),
            [
                s("a.app.internal:8080", 60, 10, false),
                s("b.app.internal:8081", 20, 10, false),
                s("backup.app.internal:8080", 5, 20, false),
            ]
        );
        assert_eq!(st.next_query, t0 + Duration::from_secs(5));
        // TTL clamped as for A records.
        let st2 = step(
            &st.state,
            &answer(vec![rec(0, 0, 80, "a.x")], 0),
            t0,
            &P,
            OBSOLETE,
        );
        assert_eq!(st2.next_query, t0 + MIN_HOLD);
    }

    #[test]
    fn all_zero_weights_of_a_priority_become_one() {
        let t0 = Instant::now();
        let a = answer(
            vec![
                rec(0, 0, 80, "a.x"),
                rec(0, 0, 80, "b.x"),
                rec(1, 0, 80, "c.x"),
                rec(1, 3, 80, "d.x"),
            ],
            5,
        );
        let st = step(&SrvState::default(), &a, t0, &P, OBSOLETE).state;
        let weights: Vec<u32> = st.targets.iter().map(|t| t.weight).collect();
        assert_eq!(weights, [1, 1, 0, 3], "0 stays 0 beside a weighted record");
    }

    #[test]
    fn bad_records_are_refused_and_duplicates_merged() {
        let t0 = Instant::now();
        let a = answer(
            vec![
                rec(10, 1, 0, "zero.x"),
                rec(10, 1, 80, "bad name.x"),
                rec(10, 1, 80, "."),
                rec(30, 9, 80, "a.x"),
                rec(10, 2, 80, "a.x."),
            ],
            5,
        );
        let st = step(&SrvState::default(), &a, t0, &P, OBSOLETE);
        assert_eq!(summary(&st.state), [s("a.x:80", 2, 10, false)]);
        assert_eq!(st.refused.len(), 3, "{:?}", st.refused);
        assert!(st.refused[0].ends_with("port 0"), "{:?}", st.refused);
        assert!(
            st.refused
                .contains(&"10 1 80 bad name.x: target is not a host name".to_string()),
            "{:?}",
            st.refused
        );
        // Every record refused: a failure (kept), not "no targets".
        let all_bad = answer(vec![rec(0, 1, 0, "a.x")], 5);
        let st2 = step(
            &st.state,
            &all_bad,
            t0 + Duration::from_secs(1),
            &P,
            OBSOLETE,
        );
        assert_eq!(summary(&st2.state), [s("a.x:80", 2, 10, false)]);
        assert!(st2.state.failing_since.is_some());
        assert_eq!(st2.next_query, t0 + Duration::from_secs(2), "retry");
    }

    #[test]
    fn the_number_of_targets_is_bounded() {
        let t0 = Instant::now();
        let many: Vec<Record> = (0..MAX_TARGETS + 10)
            .map(|i| rec(0, 1, 80, &format!("t{i}.x")))
            .collect();
        let st = step(&SrvState::default(), &answer(many, 5), t0, &P, OBSOLETE);
        assert_eq!(st.state.targets.len(), MAX_TARGETS);
        assert_eq!(st.refused.len(), 10);
        // A whole new set: the obsolete ones make room, the new ones come in.
        let t1 = t0 + Duration::from_secs(1);
        let fresh: Vec<Record> = (0..MAX_TARGETS)
            .map(|i| rec(0, 1, 80, &format!("n{i}.x")))
            .collect();
        let st = step(&st.state, &answer(fresh, 5), t1, &P, OBSOLETE);
        assert_eq!(st.state.targets.len(), MAX_TARGETS);
        assert!(st.state.targets.iter().all(|t| t.name.starts_with('n')));
    }

    #[test]
    fn a_missing_target_lingers_for_hold_obsolete_then_goes() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let both = || answer(vec![rec(0, 1, 80, "a.x"), rec(0, 1, 80, "b.x")], 60);
        let st = step(&SrvState::default(), &both(), t0, &P, OBSOLETE).state;
        let only_a = || answer(vec![rec(0, 1, 80, "a.x")], 60);
        let gone = step(&st, &only_a(), at(1), &P, OBSOLETE);
        assert_eq!(
            summary(&gone.state),
            [s("a.x:80", 1, 0, false), s("b.x:80", 1, 0, true)]
        );
        assert_eq!(gone.next_query, at(11), "woken when b is due to go");
        // Back within hold_obsolete: the same target, present again, in its place.
        let back = step(&gone.state, &both(), at(5), &P, OBSOLETE);
        assert_eq!(
            summary(&back.state),
            [s("a.x:80", 1, 0, false), s("b.x:80", 1, 0, false)]
        );
        let gone = step(&back.state, &only_a(), at(6), &P, OBSOLETE);
        let still = step(&gone.state, &only_a(), at(15), &P, OBSOLETE);
        assert_eq!(still.state.targets.len(), 2, "9 s < hold_obsolete");
        let past = step(&still.state, &only_a(), at(16), &P, OBSOLETE);
        assert_eq!(summary(&past.state), [s("a.x:80", 1, 0, false)]);
        // hold_obsolete 0: gone at once.
        let at_once = step(&st, &only_a(), at(1), &P, Duration::ZERO);
        assert_eq!(at_once.state.targets.len(), 1);
    }

    #[test]
    fn failures_keep_targets_for_hold_nx_then_all_are_obsolete() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let good = answer(vec![rec(0, 1, 80, "a.x"), rec(5, 1, 80, "b.x")], 1);
        let st = step(&SrvState::default(), &good, t0, &P, OBSOLETE).state;
        let nx = Outcome::Failed("NXDOMAIN".into());
        let f1 = step(&st, &nx, at(1), &P, OBSOLETE);
        assert_eq!(f1.state.failing_since, Some(at(1)));
        assert!(f1.state.targets.iter().all(|t| !t.obsolete()));
        assert_eq!(f1.next_query, at(2));
        let f2 = step(&f1.state, &nx, at(30), &P, OBSOLETE);
        assert!(
            f2.state.targets.iter().all(|t| !t.obsolete()),
            "29 s < hold_nx"
        );
        let f3 = step(&f2.state, &nx, at(31), &P, OBSOLETE);
        assert!(f3.state.targets.iter().all(|t| t.obsolete()));
        // An answer within hold_obsolete brings them back as they were.
        let back = step(&f3.state, &good, at(35), &P, OBSOLETE);
        assert!(back.state.targets.iter().all(|t| !t.obsolete()));
        assert_eq!(back.state.failing_since, None);
        // A lone "." (service not available): an answer with no target.
        let none = answer(vec![rec(0, 0, 0, ".")], 5);
        let off = step(&back.state, &none, at(36), &P, OBSOLETE);
        assert!(off.refused.is_empty());
        assert!(off.state.targets.iter().all(|t| t.obsolete()));
        assert_eq!(off.state.failing_since, None);
    }
}
