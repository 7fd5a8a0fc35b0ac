#![cfg(target_os = "linux")]
//! `fwlb lab`: the shipped pair (conf/lab) in network namespaces, its JSON report checked
//! against the failover budget, and nothing left behind after a success, a failure, or a
//! SIGKILL of the lab itself. Needs root and iproute2 + nftables (the lab installs them with
//! apt-get when missing). The tests share the lab's namespace names, so they run one at a
//! time.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{BIN, Ns};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lab's namespaces have fixed names: one lab at a time in this binary, as root.
fn one_lab_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    common::require_root("fwlb lab builds network namespaces");
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `fwlb ARGS` from the repository root, killed if it outlives `limit`.
fn fwlb(args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("spawn fwlb");
    let t0 = Instant::now();
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn report(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            r.code, r.stdout, r.stderr
        )
    })
}

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list (apt-get install iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("fwlab-"))
        .map(str::to_string)
        .collect()
}

/// A pid that still runs a fwlb program (not a zombie, not a reused pid).
fn fwlb_alive(pid: u64) -> bool {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    common::alive(pid as i32) && String::from_utf8_lossy(&cmd).contains("fwlb")
}

fn assert_nothing_left(pids: &[u64], what: &str) {
    let ns = lab_namespaces();
    assert!(ns.is_empty(), "{what}: namespaces left behind: {ns:?}");
    let alive: Vec<&u64> = pids.iter().filter(|p| fwlb_alive(**p)).collect();
    assert!(alive.is_empty(), "{what}: processes left behind: {alive:?}");
}

fn pids(rep: &Value) -> Vec<u64> {
    rep["pids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Master_Down_Interval + 50 ms for VRRPv3 at 100 ms (the shipped configs).
fn budget_ms(priority: f64) -> f64 {
    3.0 * 100.0 + (256.0 - priority) * 100.0 / 256.0 + 50.0
}

#[test]
fn lab_passes_every_drill_within_the_budget_and_leaves_nothing_behind() {
    let _one = one_lab_at_a_time();
    let r = fwlb(&["lab", "conf/lab", "--json"], Duration::from_secs(180));
    let rep = report(&r);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(rep["pass"], true, "{}", r.stdout);
    // The network is what the configs say.
    let hosts: Vec<&str> = rep["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["namespace"].as_str())
        .collect();
    assert_eq!(hosts, ["fwlab-fwlb-a", "fwlab-fwlb-b"]);
    // Traffic: every balancer answered by configured servers, the client address kept.
    let traffic = rep["traffic"].as_array().expect("traffic");
    assert_eq!(traffic.len(), 2, "{traffic:?}");
    for t in traffic {
        assert_eq!(t["pass"], true, "{t}");
        assert_eq!(t["failed"], 0, "{t}");
        assert_eq!(t["client_address_ok"], true, "{t}");
        let servers: Vec<&String> = t["by_server"]
            .as_object()
            .expect("by_server")
            .keys()
            .collect();
        assert_eq!(servers.len(), 3, "every server of {t}");
        assert!(servers.iter().all(|s| s.starts_with("10.0.0.1")), "{t}");
    }
    // Drills: each passes, within Master_Down_Interval + 50 ms; traffic really moved.
    let drills = rep["drills"].as_array().expect("drills");
    let names: Vec<&str> = drills.iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "kill",
            "front-link",
            "back-link",
            "handover",
            "term",
            "restore",
            "servers-lost"
        ]
    );
    for d in drills {
        let name = d["name"].as_str().unwrap_or("");
        assert_eq!(d["pass"], true, "{d}");
        let tl = &d["timeline_ms"];
        let (to, from) = (
            d["to"].as_str().unwrap_or(""),
            d["from"].as_str().unwrap_or(""),
        );
        // A restore is timed from the moment the restarted daemon answers.
        let start = tl["daemon_up"].as_f64().unwrap_or(0.0);
        let mut budget = budget_ms(if to == "fwlb-a" { 150.0 } else { 100.0 });
        if name == "servers-lost" {
            // The checks' detection comes first: the lab's balancers have the default check,
            // due within 2 s, then 3 timeouts of 1 s, 500 ms apart.
            budget += 2000.0 + 3.0 * 1000.0 + 2.0 * 500.0;
        }
        assert!(
            (d["budget_ms"].as_f64().unwrap_or(0.0) - budget).abs() < 0.2,
            "{d}"
        );
        let master = tl["became_master"].as_f64().expect("became master") - start;
        assert!(
            master > 0.0 && master <= budget,
            "{name}: {master} ms > {budget}: {d}"
        );
        let first = tl["first_success"].as_f64().expect("first success") - start;
        assert!(first <= budget, "{name}: first answer at {first} ms: {d}");
        let rq = &d["requests"];
        assert!(rq["total"].as_u64().unwrap_or(0) >= 50, "a real load: {d}");
        assert_eq!(rq["failed_before_fault"], 0, "{d}");
        for host in [from, to] {
            assert!(
                rq["served_by"][host].as_u64().unwrap_or(0) > 0,
                "{name}: requests answered through both {from} (before) and {to} (after): {d}"
            );
        }
        assert_eq!(rq["slow_before_fault"], 0, "{d}");
        if name == "term" || name == "handover" {
            assert_eq!(
                rq["new_connections_lost"], 0,
                "a planned handover loses no new connection: {d}"
            );
        }
        if name == "handover" || name == "term" {
            // Make before break (SIGTERM hands over before the listeners close): the old
            // master answered until the new one did, so no SYN had to be retransmitted.
            assert_eq!(rq["slow"], 0, "{d}");
        }
        if name == "servers-lost" {
            // The master's links stayed up: only `track` moved the pair, and with the servers
            // back it preempted back.
            assert!(
                d["notes"].to_string().contains("fwlb-a master again after"),
                "{d}"
            );
        }
        if name == "back-link" || name == "front-link" || name == "servers-lost" {
            // Both VRIDs moved to the new master.
            let v = d["vrid_master_ms"].as_object().expect("vrid_master_ms");
            assert_eq!(v.len(), 2, "{d}");
        }
    }
    assert_nothing_left(&pids(&rep), "after a passing lab");
}

/// The shipped pair in a directory of its own, without the lines that start with `keys`
/// (each of which the shipped configs use).
fn shipped_pair_without(keys: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["fwlb-a.toml", "fwlb-b.toml"] {
        let text = std::fs::read_to_string(repo().join("conf/lab").join(f)).expect("config");
        for k in keys {
            assert!(text.lines().any(|l| l.starts_with(k)), "{f} uses {k}");
        }
        let cut: String = text
            .lines()
            .filter(|l| !keys.iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.path().join(f), cut).expect("write");
    }
    dir
}

/// A pair without `depends` (nor `track`, which would move the front VRID a second later,
/// once the master's checks lost the servers behind the cut cable): pulling the master's back
/// cable moves only the back VRID, so the drill fails and says why; the lab still removes
/// everything.
#[test]
fn lab_catches_a_pair_without_depends_and_cleans_up_after_the_failure() {
    let _one = one_lab_at_a_time();
    let dir = shipped_pair_without(&["depends", "track"]);
    let d = dir.path().to_string_lossy().into_owned();
    let r = fwlb(
        &["lab", &d, "--json", "--drill", "back-link"],
        Duration::from_secs(120),
    );
    let rep = report(&r);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert_eq!(rep["pass"], false);
    let drill = &rep["drills"][0];
    assert_eq!(drill["name"], "back-link");
    assert_eq!(drill["pass"], false, "{drill}");
    let problems = drill["problems"].to_string();
    assert!(
        problems.contains("fwlb-b never held every VRID")
            && problems.contains("fwlb-a is still master of some VRID"),
        "{problems}"
    );
    assert_nothing_left(&pids(&rep), "after a failing lab");
}

/// A pair without `track` cannot follow its servers: the servers-lost drill is skipped and
/// says how to add one.
#[test]
fn lab_skips_servers_lost_without_track() {
    let _one = one_lab_at_a_time();
    let dir = shipped_pair_without(&["track"]);
    let d = dir.path().to_string_lossy().into_owned();
    let r = fwlb(
        &["lab", &d, "--json", "--drill", "servers-lost"],
        Duration::from_secs(120),
    );
    let rep = report(&r);
    assert_eq!(rep["drills"], serde_json::json!([]), "{}", r.stdout);
    assert!(
        rep["notes"].to_string().contains("fwlb-a has no `track`"),
        "{}",
        r.stdout
    );
    assert_nothing_left(&pids(&rep), "after a skipped drill");
}

/// The lab killed with SIGKILL mid-drill leaves namespaces and daemons; the next run removes
/// them first (and says so), then runs normally and leaves nothing.
#[test]
fn a_lab_killed_mid_run_is_cleaned_up_by_the_next_run() {
    let _one = one_lab_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let err = dir.path().join("err");
    let mut child = Command::new(BIN)
        .args(["lab", "conf/lab"])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("spawn fwlb lab");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("drill: ")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the lab never reached its drills: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the lab ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL the lab");
    let _ = child.wait();
    // What it left: namespaces, and processes in them.
    let left = lab_namespaces();
    assert!(
        left.len() >= 6,
        "a killed lab leaves its namespaces: {left:?}"
    );
    let out = Command::new("ip")
        .args(["netns", "pids", "fwlab-fwlb-b"])
        .output()
        .expect("ip netns pids");
    let orphans: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        !orphans.is_empty(),
        "fwlb-b's daemon outlives the killed lab"
    );
    let r = fwlb(
        &["lab", "conf/lab", "--json", "--drill", "term"],
        Duration::from_secs(120),
    );
    let rep = report(&r);
    let cleaned = rep["cleaned"].to_string();
    assert!(
        cleaned.contains("namespace fwlab-fwlb-a") && cleaned.contains("processes"),
        "the second run says what it removed: {cleaned}"
    );
    assert!(orphans.iter().all(|p| !fwlb_alive(*p)), "orphans killed");
    assert_eq!(rep["pass"], true, "{}\n{}", r.stdout, r.stderr);
    assert_nothing_left(&pids(&rep), "after the second run");
    // And an explicit clean with nothing to do says so.
    let c = fwlb(&["lab", "--clean"], Duration::from_secs(30));
    assert_eq!(c.code, Some(0));
    assert!(c.stdout.contains("nothing to clean"), "{}", c.stdout);
}

#[test]
fn lab_refuses_a_directory_that_is_not_a_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo().join("conf/lab/fwlb-a.toml"),
        dir.path().join("only.toml"),
    )
    .expect("copy");
    let d = dir.path().to_string_lossy().into_owned();
    let r = fwlb(&["lab", &d], Duration::from_secs(30));
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("two host configurations of a pair"),
        "{}",
        r.stderr
    );
}

/// `fwlb ARGS` in the lab's namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Run {
    let out = Ns::named(ns).fwlb(args);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `fwlb drill` on the lab's pair, left up with --keep: the master hands over to the peer and
/// takes back, through the control ports only; it refuses a peer that is not a healthy
/// backup or does not answer; `fwlb lab --clean` removes the kept lab.
#[test]
fn drill_hands_a_pair_over_and_back_and_refuses_an_unfit_peer() {
    let _one = one_lab_at_a_time();
    let r = fwlb(
        &["lab", "conf/lab", "--keep", "--drill", "none", "--json"],
        Duration::from_secs(120),
    );
    let rep = report(&r);
    assert_eq!(rep["kept"], true, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("ip netns exec fwlab-fwlb-a") && r.stderr.contains("lab --clean"),
        "--keep says how to enter and remove it: {}",
        r.stderr
    );
    let d = in_ns(
        "fwlab-fwlb-a",
        &["drill", "--peer", "192.0.2.3:8888", "--json"],
    );
    let j: Value = serde_json::from_str(&d.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", d.stdout, d.stderr));
    assert_eq!(d.code, Some(0), "{}\n{}", d.stdout, d.stderr);
    assert_eq!(j["pass"], true, "{j}");
    assert!(
        j["accepted_by_peer"].as_u64().unwrap_or(0) > 0,
        "the peer served: {j}"
    );
    let phases = j["drills"].as_array().expect("drills");
    assert_eq!(phases.len(), 2, "{j}");
    for (p, to_prio) in phases.iter().zip([100.0, 150.0]) {
        let master = p["timeline_ms"]["became_master"].as_f64().expect("master");
        // A planned handover takes the new master's Skew_Time, well inside the budget.
        assert!(master <= budget_ms(to_prio), "{p}");
        let rq = &p["requests"];
        assert!(rq["total"].as_u64().unwrap_or(0) >= 20, "{p}");
        assert_eq!(rq["new_connections_lost"], 0, "{p}");
        assert_eq!(rq["slow"], 0, "{p}");
        assert!(p["timeline_ms"]["first_success"].as_f64().is_some(), "{p}");
    }
    // Back where it started, nobody left on standby.
    for (ns, state) in [("fwlab-fwlb-a", "master"), ("fwlab-fwlb-b", "backup")] {
        let v = Ns::named(ns).show_vrrp();
        for i in v["vrrp"].as_array().expect("vrrp") {
            assert_eq!(i["state"], state, "{ns}: {i}");
            assert_eq!(i["standby"], false, "{ns}: {i}");
        }
    }
    // Refusals: from the backup, towards a silent address; a VRID that does not exist.
    let b = in_ns("fwlab-fwlb-b", &["drill", "--peer", "192.0.2.2:8888"]);
    assert_eq!(b.code, Some(1));
    assert!(b.stderr.contains("this host is the backup"), "{}", b.stderr);
    let n = in_ns("fwlab-fwlb-a", &["drill", "--peer", "192.0.2.99:8888"]);
    assert_eq!(n.code, Some(1));
    assert!(
        n.stderr.contains("the peer does not answer"),
        "{}",
        n.stderr
    );
    let v = in_ns("fwlab-fwlb-a", &["ctl", "vrrp", "standby", "9"]);
    assert_eq!(v.code, Some(1));
    assert!(v.stderr.contains("no VRID \"9\""), "{}", v.stderr);
    let c = fwlb(&["lab", "--clean"], Duration::from_secs(30));
    assert_eq!(c.code, Some(0));
    assert!(
        c.stdout.contains("removed namespace fwlab-fwlb-a"),
        "{}",
        c.stdout
    );
    assert_nothing_left(&pids(&rep), "after --keep and --clean");
}
