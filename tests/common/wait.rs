//! Waiting for a condition with a deadline: every wait in the tests is one of these, so each
//! fails with a message that says what did not happen.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often a wait asks, unless it measures a time (those ask every 5 or 10 ms).
pub const STEP: Duration = Duration::from_millis(20);

/// Ask `probe` every `every` until it gives a value; returns the value and how long that took.
/// Past `limit` the test fails with `why()`, which is called then, so it can show the state
/// at the deadline.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe() {
            return (v, t0.elapsed());
        }
        if t0.elapsed() >= limit {
            panic!("{}", why());
        }
        std::thread::sleep(every);
    }
}

/// `poll` every `STEP`, for the value alone.
pub fn wait_with<T>(
    limit: Duration,
    probe: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    poll(limit, STEP, probe, why).0
}

/// The value `probe` gives within `limit`; else the test fails naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_with(limit, probe, || {
        format!("timed out after {limit:?}: {what}")
    })
}

/// Until `cond` holds, how long that took; after `limit` the test fails naming `what`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let why = || format!("timed out after {limit:?}: {what}");
    poll(limit, STEP, || cond().then_some(()), why).1
}

/// Whether `cond` comes to hold within `limit` (asked every `every`); never fails the test
/// (for clean-ups, and for callers that check the outcome themselves).
pub fn settles(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// `path`'s text, or "" while it does not exist (a daemon's log before its first line).
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Wait until the file at `path` holds `needle` `times` times; fails showing the file.
pub fn wait_for_lines(path: &Path, needle: &str, times: usize, limit: Duration) {
    let probe = || (read_log(path).matches(needle).count() >= times).then_some(());
    let why = || {
        let (name, text) = (path.display(), read_log(path));
        format!("fewer than {times} {needle:?} in {name} after {limit:?}:\n{text}")
    };
    wait_with(limit, probe, why);
}
