//! The machine a test runs on: the root and the tools a test needs (it fails and names the
//! Debian package, never skips), commands that must succeed, and processes seen through /proc.

use std::process::{Command, Output, Stdio};

/// The effective uid of this test process, from /proc (tests need no libc for it).
pub fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("an effective uid in /proc/self/status")
}

/// Fail unless the test runs as root; `why` says what root is for.
pub fn require_root(why: &str) {
    assert_eq!(euid(), 0, "{why}: run this test as root (CI does)");
}

/// Fail unless `cmd` is on PATH, naming the Debian package that brings it.
pub fn require_tool(cmd: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs `{cmd}`: apt-get install {package} (.ci/run installs it)"
    );
}

/// Fail unless `unshare -rn` works here: a scratch user and network namespace, for the tests
/// that drive nft without touching the host's firewall.
pub fn require_unshare() {
    let ok = Command::new("unshare")
        .args(["-rn", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs `unshare -rn` (util-linux, user namespaces enabled)"
    );
}

/// `cmd`'s output, whatever its exit status; fails the test only if it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `cmd`'s stdout; fails the test, with its stderr, unless it exits 0.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `args` (the program first) and return its stdout; it must exit 0.
pub fn run(args: &[&str]) -> String {
    stdout_of(Command::new(args[0]).args(&args[1..]))
}

/// `kill -s SIG PID` for one process; whether it was delivered. Never a negative or special
/// pid: procps' kill(1) has been seen to signal every process for `kill -SIG -PGID`.
pub fn send_signal(sig: &str, pid: i32) -> bool {
    assert!(pid > 1, "refusing to signal pid {pid}");
    Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// As `send_signal`, and the process must have been there to get it.
pub fn signal(sig: &str, pid: i32) {
    assert!(send_signal(sig, pid), "kill -s {sig} {pid}");
}

/// The rest of /proc/PID/stat after the command name: state, ppid, ... (None once gone).
fn stat_fields(path: &str) -> Option<String> {
    let stat = std::fs::read_to_string(path).ok()?;
    stat.rsplit_once(") ").map(|(_, rest)| rest.to_string())
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(&format!("/proc/{pid}/stat")).is_some_and(|r| !r.starts_with('Z'))
}

/// Whether any thread of `pid` is not yet a zombie: a process's other threads (fwlb's data
/// path) may still hold sockets after its main thread shows as one.
pub fn any_thread_alive(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        stat_fields(&t.path().join("stat").to_string_lossy()).is_some_and(|r| !r.starts_with('Z'))
    })
}

/// The children of `pid`, from every one of its threads (/proc/PID/task/*/children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut kids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            kids.extend(
                list.split_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
    }
    kids.retain(|&k| any_thread_alive(k));
    kids
}

/// The first child process of `pid` (fwlb's parent has exactly one), once it exists.
pub fn child_of(pid: i32) -> Option<i32> {
    children(pid).first().copied()
}

/// `pid` and every process below it.
pub fn tree_of(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        out.extend(children(out[i]));
        i += 1;
    }
    out
}

/// utime + stime of one process, in seconds.
pub fn cpu_of(pid: i32) -> f64 {
    let rest = stat_fields(&format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
