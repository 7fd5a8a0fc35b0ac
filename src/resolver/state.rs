//! What one server name resolves to, as a pure function of (state, outcome of a lookup, now):
//! the address the servers of that name use, and when to ask again. No I/O, no clock.
//!
//! Rules: a good answer is trusted for its TTL clamped to 1 s..`hold_valid`, and the current
//! address is kept while the answer still lists it (several A records do not make a server
//! hop between them). After a failure (NXDOMAIN, SERVFAIL, timeout, no usable address) the last
//! good address is kept for `hold_nx` from the first failure, then dropped (`unresolved`);
//! failing names are asked again every `retry`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Shortest time an answer is trusted (a TTL of 0 must not make a query loop).
pub const MIN_HOLD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub hold_valid: Duration,
    pub hold_nx: Duration,
    /// Between queries while a name fails.
    pub retry: Duration,
}

/// What a lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The addresses of the answer (preferred family first) and its TTL.
    Answer { addrs: Vec<IpAddr>, ttl: Duration },
    /// No answer to use; the reason is for the log.
    Failed(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameState {
    /// The address servers of this name use; None: `unresolved`.
    pub current: Option<IpAddr>,
    /// Until when the last good answer is trusted.
    pub valid_until: Option<Instant>,
    /// When the last good answer came.
    pub last_good: Option<Instant>,
    /// Since when lookups fail (None while they succeed).
    pub failing_since: Option<Instant>,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub state: NameState,
    /// When to look the name up again.
    pub next_query: Instant,
    /// Addresses of the answer refused for a server (unspecified, multicast, broadcast).
    pub refused: Vec<IpAddr>,
}

/// Whether an address may be a server's: not 0.0.0.0/::, not multicast, not broadcast.
pub fn acceptable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// Apply a lookup's outcome at `now`.
pub fn step(state: &NameState, outcome: &Outcome, now: Instant, p: &Params) -> Step {
    let (addrs, ttl) = match outcome {
        Outcome::Answer { addrs, ttl } => (addrs.as_slice(), *ttl),
        Outcome::Failed(_) => (&[][..], Duration::ZERO),
    };
    let (usable, refused): (Vec<IpAddr>, Vec<IpAddr>) =
        addrs.iter().copied().partition(|a| acceptable(*a));
    let Some(&first) = usable.first() else {
        return Step {
            state: failed(state, now, p),
            next_query: now + p.retry,
            refused,
        };
    };
    let current = match state.current {
        Some(c) if usable.contains(&c) => c,
        _ => first,
    };
    let valid_until = now + ttl.clamp(MIN_HOLD, p.hold_valid.max(MIN_HOLD));
    Step {
        state: NameState {
            current: Some(current),
            valid_until: Some(valid_until),
            last_good: Some(now),
            failing_since: None,
        },
        next_query: valid_until,
        refused,
    }
}

/// The state after a failed lookup: the last good address until `hold_nx` has passed since the
/// first failure.
fn failed(state: &NameState, now: Instant, p: &Params) -> NameState {
    let since = state.failing_since.unwrap_or(now);
    let held = now.saturating_duration_since(since) < p.hold_nx;
    NameState {
        current: state.current.filter(|_| held),
        valid_until: state.valid_until,
        last_good: state.last_good,
        failing_since: Some(since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        hold_valid: Duration::from_secs(300),
        hold_nx: Duration::from_secs(30),
        retry: Duration::from_secs(1),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn answer(addrs: &[&str], ttl: u64) -> Outcome {
        Outcome::Answer {
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn ttl_is_clamped_to_one_second_and_hold_valid() {
        let t0 = Instant::now();
        let s = step(&NameState::default(), &answer(&["10.0.0.21"], 0), t0, &P);
        assert_eq!(s.state.current, Some(ip("10.0.0.21")));
        assert_eq!(s.next_query, t0 + Duration::from_secs(1));
        let s = step(&s.state, &answer(&["10.0.0.21"], 86_400), t0, &P);
        assert_eq!(s.next_query, t0 + Duration::from_secs(300));
        let s = step(&s.state, &answer(&["10.0.0.21"], 60), t0, &P);
        assert_eq!(s.next_query, t0 + Duration::from_secs(60));
    }

    #[test]
    fn current_address_kept_while_listed_then_moves() {
        let t0 = Instant::now();
        let s = step(&NameState::default(), &answer(&["10.0.0.21"], 5), t0, &P);
        let s = step(&s.state, &answer(&["10.0.0.9", "10.0.0.21"], 5), t0, &P);
        assert_eq!(
            s.state.current,
            Some(ip("10.0.0.21")),
            "no hop between records"
        );
        let s = step(&s.state, &answer(&["10.0.0.42"], 5), t0, &P);
        assert_eq!(s.state.current, Some(ip("10.0.0.42")));
    }

    #[test]
    fn failures_keep_the_last_good_address_for_hold_nx() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let good = step(&NameState::default(), &answer(&["10.0.0.21"], 1), t0, &P);
        let nx = Outcome::Failed("NXDOMAIN".into());
        let f1 = step(&good.state, &nx, at(1), &P);
        assert_eq!(f1.state.current, Some(ip("10.0.0.21")));
        assert_eq!(f1.state.failing_since, Some(at(1)));
        assert_eq!(f1.next_query, at(2));
        let f2 = step(&f1.state, &nx, at(30), &P);
        assert_eq!(f2.state.current, Some(ip("10.0.0.21")), "29 s < hold_nx");
        let f3 = step(&f2.state, &nx, at(31), &P);
        assert_eq!(f3.state.current, None, "hold_nx passed: unresolved");
        assert_eq!(f3.state.last_good, Some(t0));
        // A good answer ends the episode.
        let back = step(&f3.state, &answer(&["10.0.0.42"], 1), at(32), &P);
        assert_eq!(back.state.current, Some(ip("10.0.0.42")));
        assert_eq!(back.state.failing_since, None);
        let f4 = step(&back.state, &nx, at(40), &P);
        assert_eq!(f4.state.failing_since, Some(at(40)));
        assert_eq!(f4.state.current, Some(ip("10.0.0.42")));
    }

    #[test]
    fn never_resolved_stays_unresolved_and_retries() {
        let t0 = Instant::now();
        let s = step(
            &NameState::default(),
            &Outcome::Failed("timeout".into()),
            t0,
            &P,
        );
        assert_eq!(s.state.current, None);
        assert_eq!(s.next_query, t0 + P.retry);
    }

    #[test]
    fn unusable_addresses_are_refused_and_count_as_failure() {
        let t0 = Instant::now();
        let good = step(&NameState::default(), &answer(&["10.0.0.21"], 1), t0, &P);
        let bad = answer(
            &["0.0.0.0", "224.0.0.1", "255.255.255.255", "ff02::1", "::"],
            1,
        );
        let s = step(&good.state, &bad, t0 + Duration::from_secs(2), &P);
        assert_eq!(s.refused.len(), 5);
        assert_eq!(
            s.state.current,
            Some(ip("10.0.0.21")),
            "kept as after a failure"
        );
        assert!(s.state.failing_since.is_some());
        let mixed = step(
            &NameState::default(),
            &answer(&["0.0.0.0", "10.0.0.5"], 1),
            t0,
            &P,
        );
        assert_eq!(mixed.state.current, Some(ip("10.0.0.5")));
        assert_eq!(mixed.refused, [ip("0.0.0.0")]);
    }
}
