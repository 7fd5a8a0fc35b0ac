//! Active health checks. This file is the sans-IO core: one `Tracker` per server holds its
//! check state (up, down, rising k/n, falling k/n), the operator's switches (check disabled,
//! maint) and when it is next due; every change is a method of (state, event, now). `probe`
//! builds the bytes a check sends and judges the bytes it gets back; `run` is the thin tokio
//! layer on the child's control-plane runtime that performs the checks.
//!
//! The counter model is HAProxy's (`check_notify_*`): a server is assumed up before its first
//! check, and that first failed check marks it down; once up after `rise` successes it takes
//! `fall` failures in a row to go down.

pub mod agent;
pub mod probe;
pub mod run;

use std::time::{Duration, Instant};

use crate::config::Health;

/// Where a server stands by its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Up; `fails` failures in a row so far (falling while > 0).
    Up { fails: u32 },
    /// Down; `oks` successes in a row so far (rising while > 0).
    Down { oks: u32 },
}

/// The result of one check (or of a client's failed connect, a passive check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// "ok", "connect refused", "timeout after 1s", "HTTP 503", "body mismatch" ...
    pub reason: String,
    pub took: Duration,
    pub at: Instant,
}

/// A state change, for the one log line it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    WentDown { reason: String },
    WentUp { reason: String },
}

/// One server's check state.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub phase: Phase,
    /// No result yet (shown as `unchecked`).
    pub checked: bool,
    /// `server N check disable`: no checks, and the check's verdict is not applied.
    pub disabled: bool,
    /// `server N maint`: no traffic and no checks until `ready`.
    pub maint: bool,
    /// When the server entered its phase (up or down).
    pub since: Instant,
    pub last: Option<Outcome>,
    pub next_due: Instant,
    /// A check of this server is running (never two at once).
    pub in_flight: bool,
    /// A server that came back up: its weight ramps up from `.0` over `.1` (slowstart).
    pub ramp: Option<(Instant, Duration)>,
    /// Checks performed and failed (their own counters, not the client connections').
    pub checks: u64,
    pub check_failures: u64,
}

impl Tracker {
    pub fn new(now: Instant) -> Self {
        Tracker {
            // Assumed up until the first result; a first failure takes it down (`step`).
            phase: Phase::Up { fails: 0 },
            checked: false,
            disabled: false,
            maint: false,
            since: now,
            last: None,
            next_due: now,
            in_flight: false,
            ramp: None,
            checks: 0,
            check_failures: 0,
        }
    }

    /// Whether the checks keep the server from new clients (maint is separate, see `usable`).
    pub fn down(&self) -> bool {
        !self.disabled && matches!(self.phase, Phase::Down { .. })
    }

    /// Whether new clients may go to the server as far as health and maint are concerned.
    pub fn usable(&self) -> bool {
        !self.maint && !self.down()
    }

    /// The wait before the next check: `fast_interval` while changing, `down_interval` while
    /// steadily down, `interval` while steadily up.
    pub fn interval(&self, h: &Health) -> Duration {
        match self.phase {
            Phase::Up { fails: 0 } => h.interval,
            Phase::Down { oks: 0 } if self.checked => h.down_interval,
            _ => h.fast_interval,
        }
    }

    /// Start a check if one is due: true when the caller is to run it now.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.in_flight || self.maint || self.disabled || now < self.next_due {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// An active check's result: counted, the next one scheduled.
    pub fn record(&mut self, h: &Health, o: Outcome, now: Instant) -> Option<Change> {
        self.in_flight = false;
        self.checks += 1;
        if !o.ok {
            self.check_failures += 1;
        }
        let change = if self.disabled || self.maint {
            None
        } else {
            self.step(h, o.ok, &o.reason, now)
        };
        self.last = Some(o);
        self.next_due = (self.next_due + self.interval(h)).max(now);
        change
    }

    /// A client's connect failed: one failure toward `fall` (only while active checks run,
    /// so that a check can bring the server back).
    pub fn passive_failure(&mut self, h: &Health, reason: &str, now: Instant) -> Option<Change> {
        if self.disabled || self.maint {
            return None;
        }
        let change = self.step(h, false, reason, now);
        // A server that went down is looked at again soon, not a whole interval later.
        if change.is_some() {
            self.next_due = self.next_due.min(now + h.fast_interval);
        }
        change
    }

    fn step(&mut self, h: &Health, ok: bool, reason: &str, now: Instant) -> Option<Change> {
        let was_checked = std::mem::replace(&mut self.checked, true);
        let before = match self.phase {
            // The assumed "up" before any result falls at the first failure.
            Phase::Up { .. } if !was_checked => Phase::Up {
                fails: h.fall.saturating_sub(1),
            },
            p => p,
        };
        let (phase, change) = match (before, ok) {
            (Phase::Up { .. }, true) => (Phase::Up { fails: 0 }, None),
            (Phase::Up { fails }, false) if fails + 1 >= h.fall => (
                Phase::Down { oks: 0 },
                Some(Change::WentDown {
                    reason: reason.to_string(),
                }),
            ),
            (Phase::Up { fails }, false) => (Phase::Up { fails: fails + 1 }, None),
            (Phase::Down { oks }, true) if oks + 1 >= h.rise => (
                Phase::Up { fails: 0 },
                Some(Change::WentUp {
                    reason: reason.to_string(),
                }),
            ),
            (Phase::Down { oks }, true) => (Phase::Down { oks: oks + 1 }, None),
            (Phase::Down { .. }, false) => (Phase::Down { oks: 0 }, None),
        };
        // Before the first result the assumed "up" is not a state the server was in.
        if change.is_some() || !was_checked {
            self.since = now;
        }
        self.phase = phase;
        change
    }

    /// `up`, `down`, `rising 1/2`, `falling 2/3`, `unchecked`, `maint`, `disabled`.
    pub fn label(&self, h: &Health) -> String {
        if self.maint {
            return "maint".into();
        }
        if self.disabled {
            return "disabled".into();
        }
        if !self.checked {
            return "unchecked".into();
        }
        match self.phase {
            Phase::Up { fails: 0 } => "up".into(),
            Phase::Up { fails } => format!("falling {fails}/{}", h.fall),
            Phase::Down { oks: 0 } => "down".into(),
            Phase::Down { oks } => format!("rising {oks}/{}", h.rise),
        }
    }
}

/// `weight` ramped up over `ramp` (slowstart): in proportion to the time since it started,
/// at least 1, the whole weight once it is over.
pub fn ramped(weight: u32, ramp: Option<(Instant, Duration)>, now: Instant) -> u32 {
    let Some((from, over)) = ramp else {
        return weight;
    };
    let done = now.saturating_duration_since(from);
    if over.is_zero() || done >= over || weight == 0 {
        return weight;
    }
    let w = (u128::from(weight) * done.as_millis()).div_ceil(over.as_millis().max(1));
    (w as u32).clamp(1, weight)
}

/// When the `index`th of `count` servers is first checked: spread evenly over one interval,
/// so a start or a reload makes no burst.
pub fn spread(now: Instant, interval: Duration, index: usize, count: usize) -> Instant {
    let count = count.max(1) as u32;
    let index = (index as u32).min(count - 1);
    now + interval / count * index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Check;

    fn outcome(ok: bool, at: Instant) -> Outcome {
        Outcome {
            ok,
            reason: if ok { "ok" } else { "connect refused" }.into(),
            took: Duration::from_millis(1),
            at,
        }
    }

    /// Run due checks on a simulated clock for `span`, answering with `ok(now)`; the labels
    /// after each check.
    fn simulate(
        t: &mut Tracker,
        h: &Health,
        t0: Instant,
        span: Duration,
        ok: impl Fn(Duration) -> bool,
    ) -> Vec<(Duration, String)> {
        let mut out = Vec::new();
        let mut now = t0;
        while now < t0 + span {
            if t.take_due(now) {
                let o = outcome(ok(now - t0), now);
                t.record(h, o, now);
                out.push((now - t0, t.label(h)));
            }
            now += Duration::from_millis(10);
        }
        out
    }

    #[test]
    fn first_failure_marks_down_then_rise_brings_it_up() {
        let h = Health::with(Check::Tcp);
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        assert_eq!(t.label(&h), "unchecked");
        assert!(t.usable());
        assert!(t.take_due(t0));
        let c = t.record(&h, outcome(false, t0), t0);
        assert!(matches!(c, Some(Change::WentDown { .. })));
        assert_eq!(t.label(&h), "down");
        assert!(!t.usable());
        assert_eq!(t.interval(&h), h.down_interval);
        t.take_due(t.next_due);
        assert_eq!(t.record(&h, outcome(true, t.next_due), t.next_due), None);
        assert_eq!(t.label(&h), "rising 1/2");
        assert_eq!(t.interval(&h), h.fast_interval);
        let now = t.next_due;
        t.take_due(now);
        assert!(matches!(
            t.record(&h, outcome(true, now), now),
            Some(Change::WentUp { .. })
        ));
        assert_eq!((t.label(&h), t.since), ("up".into(), now));
    }

    #[test]
    fn fall_failures_in_a_row_at_fast_interval() {
        let h = Health::with(Check::Tcp);
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        // Up for 10 s, failing from then on.
        let log = simulate(&mut t, &h, t0, Duration::from_secs(20), |e| {
            e < Duration::from_secs(10)
        });
        let labels: Vec<&str> = log.iter().map(|(_, l)| l.as_str()).collect();
        let first_fail = labels.iter().position(|l| *l == "falling 1/3").unwrap();
        assert_eq!(
            &labels[first_fail..first_fail + 4],
            ["falling 1/3", "falling 2/3", "down", "down"]
        );
        // Steady up: every 2 s; falling: every 500 ms; down: every 5 s.
        let at = |i: usize| log[i].0;
        assert_eq!(at(1) - at(0), h.interval);
        assert_eq!(at(first_fail + 1) - at(first_fail), h.fast_interval);
        assert_eq!(at(first_fail + 2) - at(first_fail + 1), h.fast_interval);
        assert_eq!(at(first_fail + 3) - at(first_fail + 2), h.down_interval);
        // Down within fall checks: 10 s + 2 s (the first failing check) + 2 x 500 ms at most.
        assert!(at(first_fail + 2) <= Duration::from_millis(13_000));
    }

    #[test]
    fn a_success_resets_falling_and_a_failure_resets_rising() {
        let h = Health::with(Check::Tcp);
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        t.record(&h, outcome(true, t0), t0);
        t.record(&h, outcome(false, t0), t0);
        t.record(&h, outcome(false, t0), t0);
        assert_eq!(t.label(&h), "falling 2/3");
        t.record(&h, outcome(true, t0), t0);
        assert_eq!(t.label(&h), "up");
        for _ in 0..3 {
            t.record(&h, outcome(false, t0), t0);
        }
        assert_eq!(t.label(&h), "down");
        t.record(&h, outcome(true, t0), t0);
        t.record(&h, outcome(false, t0), t0);
        assert_eq!(t.label(&h), "down");
        assert_eq!((t.checks, t.check_failures), (9, 6));
    }

    #[test]
    fn passive_failures_count_toward_fall() {
        let h = Health::with(Check::Tcp);
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        t.record(&h, outcome(true, t0), t0);
        assert_eq!(t.passive_failure(&h, "connect refused", t0), None);
        assert_eq!(t.passive_failure(&h, "connect refused", t0), None);
        assert!(t.passive_failure(&h, "connect refused", t0).is_some());
        assert!(t.down());
        assert!(t.next_due <= t0 + h.fast_interval);
        // Passive failures do not count as checks.
        assert_eq!(t.checks, 1);
    }

    #[test]
    fn disabled_and_maint_stop_checks() {
        let h = Health::with(Check::Tcp);
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        t.record(&h, outcome(false, t0), t0);
        assert!(!t.usable());
        t.disabled = true;
        assert!(t.usable());
        assert!(!t.take_due(t0 + Duration::from_secs(60)));
        assert_eq!(t.label(&h), "disabled");
        t.disabled = false;
        t.maint = true;
        assert_eq!(t.label(&h), "maint");
        assert!(!t.usable());
        assert!(!t.take_due(t0 + Duration::from_secs(60)));
        assert_eq!(t.passive_failure(&h, "x", t0), None);
    }

    #[test]
    fn slowstart_ramps_the_weight() {
        let t0 = Instant::now();
        let over = Duration::from_secs(30);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(ramped(10, None, t0), 10);
        assert_eq!(ramped(10, Some((t0, over)), t0), 1);
        assert_eq!(ramped(10, Some((t0, over)), at(15)), 5);
        assert_eq!(ramped(10, Some((t0, over)), at(29)), 10);
        assert_eq!(ramped(10, Some((t0, over)), at(30)), 10);
        assert_eq!(ramped(100, Some((t0, over)), at(3)), 10);
        assert_eq!(ramped(0, Some((t0, over)), at(3)), 0);
    }

    #[test]
    fn never_two_checks_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        assert!(t.take_due(t0));
        assert!(!t.take_due(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn checks_spread_over_the_interval() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(1);
        let n = 1000;
        let starts: Vec<Duration> = (0..n).map(|i| spread(t0, iv, i, n) - t0).collect();
        assert!(starts.iter().all(|d| *d < iv));
        // No 10 ms window holds more than 3 % of the checks.
        for w in 0..100u64 {
            let lo = Duration::from_millis(w * 10);
            let hi = lo + Duration::from_millis(10);
            let k = starts.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!(k <= n * 3 / 100, "window {w}: {k}");
        }
        assert_eq!(spread(t0, iv, 0, 0), t0);
    }
}
