#![cfg(target_os = "linux")]
//! The control plane under load, on the shipped pair (conf/lab) in network namespaces with
//! VRRPv3 at 20 ms and the nftables firewall: operators banning addresses during an attack
//! and a reload that reinstalls the ruleset must not stall the master's adverts (the child's
//! runtime thread never waits on the privileged parent), and ten thousand bans go in at once,
//! are listed, survive a reload and expire. Needs root, iproute2, nftables and tcpdump.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{BIN, Ns, require_root, require_tool};
use serde_json::Value;

/// The lab's namespace names are fixed: one lab at a time.
static ONE_LAB: Mutex<()> = Mutex::new(());

const MASTER: &str = "fwlab-fwlb-a";
const BACKUP: &str = "fwlab-fwlb-b";
/// fwlb-a's front address (conf/lab): the source of its adverts.
const MASTER_FRONT: &str = "192.0.2.2";
const INTERVAL: Duration = Duration::from_millis(20);

/// The pair from conf/lab at a 20 ms advert interval, left running; removed on drop (also
/// when the test fails).
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        require_root("the lab builds network namespaces");
        for (t, package) in [
            ("ip", "iproute2"),
            ("nft", "nftables"),
            ("tcpdump", "tcpdump"),
        ] {
            require_tool(t, package);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        for host in ["fwlb-a.toml", "fwlb-b.toml"] {
            let text = std::fs::read_to_string(repo.join("conf/lab").join(host)).expect("conf/lab");
            assert!(
                text.contains("\"100ms\""),
                "conf/lab's advert interval moved"
            );
            let fast = text.replace("\"100ms\"", "\"20ms\"");
            std::fs::write(dir.path().join(host), fast).expect("write config");
        }
        let lab = Lab { dir };
        let out = Command::new(BIN)
            .args(["lab", "--keep", "--drill", "none"])
            .arg(lab.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run fwlb lab");
        assert!(
            out.status.success(),
            "fwlb lab failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn config(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.toml"))
    }

    /// The privileged parent of `host` (the pid the lab started and records).
    fn parent_pid(&self, host: &str) -> i32 {
        let state = std::fs::read_to_string("/run/fwlb-lab/state").expect("lab state");
        state
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() == 4 && w[0] == "pid" && w[3] == host)
            .and_then(|w| w[1].parse().ok())
            .unwrap_or_else(|| panic!("no pid for {host} in the lab state:\n{state}"))
    }

    fn log(&self, host: &str) -> String {
        std::fs::read_to_string(format!("/run/fwlb-lab/logs/{host}.log")).unwrap_or_default()
    }

    /// Add an allowed port to `host`'s firewall and SIGHUP its parent: a reload that
    /// reinstalls the ruleset. Returns when the log says the new ruleset is in (bans kept).
    fn reload_with_a_new_ruleset(&self, host: &str, port: u16, limit: Duration) {
        let path = self.config(host);
        let text = std::fs::read_to_string(&path).expect("config");
        let changed = text.replacen(
            "[firewall]\n",
            &format!("[firewall]\nallow = [\"tcp/{port}\"]\n"),
            1,
        );
        assert_ne!(text, changed, "no [firewall] section in {}", path.display());
        std::fs::write(&path, changed).expect("write config");
        let before = self
            .log(host)
            .matches("firewall replaced (bans kept)")
            .count();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.parent_pid(host)),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
        let t0 = Instant::now();
        while self
            .log(host)
            .matches("firewall replaced (bans kept)")
            .count()
            == before
        {
            assert!(
                t0.elapsed() < limit,
                "no reinstall logged within {limit:?}:\n{}",
                tail(&self.log(host), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["lab", "--clean"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn ctl(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ctl"];
    full.extend_from_slice(args);
    Ns::named(ns).fwlb(&full)
}

fn ctl_json(ns: &str, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = ctl(ns, &full);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fwlb ctl {args:?}: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every instance's transition count on `ns`, and whether it is master.
fn vrrp(ns: &str) -> Vec<(u64, bool)> {
    let v = Ns::named(ns).show_vrrp();
    v["vrrp"]
        .as_array()
        .unwrap_or_else(|| panic!("show vrrp: {v}"))
        .iter()
        .map(|i| {
            (
                i["transitions"].as_u64().unwrap_or(0),
                i["state"] == "master",
            )
        })
        .collect()
}

fn bans(ns: &str) -> Vec<Value> {
    let v = ctl_json(ns, &["show", "bans"]);
    v["bans"]
        .as_array()
        .unwrap_or_else(|| panic!("show bans: {v}"))
        .clone()
}

/// Elements of one of fwlb's ban sets, read with nft itself (not through fwlb).
fn nft_set_len(ns: &str, set: &str) -> usize {
    let out = Ns::named(ns).exec(&["nft", "-j", "list", "set", "inet", "fwlb", set]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nft list set {set}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["set"]["elem"].as_array())
        .map(Vec::len)
        .sum()
}

/// tcpdump on the backup's front interface, printing the master's adverts with timestamps.
struct Adverts {
    child: Child,
    file: PathBuf,
}

impl Adverts {
    fn capture(dir: &Path) -> Adverts {
        let file = dir.join("adverts.txt");
        let child = Ns::named(BACKUP)
            .command(&[
                "tcpdump",
                "-i",
                "eth0",
                "-n",
                "-tt",
                "-l",
                &format!("ip proto 112 and src {MASTER_FRONT}"),
            ])
            .stdout(std::fs::File::create(&file).expect("capture file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump");
        let a = Adverts { child, file };
        let t0 = Instant::now();
        while a.times().len() < 10 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "tcpdump on {BACKUP} sees no adverts from {MASTER_FRONT}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn times(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// The adverts seen, and the largest gap between two of them.
    fn stop(mut self) -> (usize, Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let t = self.times();
        let gap = t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        (t.len(), Duration::from_secs_f64(gap.max(0.0)))
    }
}

impl Drop for Adverts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` addresses from 198.18.0.0/15 (benchmarking space), `offset` onwards.
fn addresses(offset: u32, n: u32) -> Vec<String> {
    (offset..offset + n)
        .map(|i| {
            let a = 0xc612_0000u32 + 1 + i;
            std::net::Ipv4Addr::from(a).to_string()
        })
        .collect()
}

/// Ban every address with one `fwlb ctl ban` per line of `per_line` addresses, `clients`
/// of them running at once.
fn ban_all(ips: &[String], per_line: usize, clients: usize, duration: &str) {
    let lines: Vec<Vec<String>> = ips.chunks(per_line).map(<[String]>::to_vec).collect();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for part in lines.chunks(lines.len().div_ceil(clients)) {
            let failures = &failures;
            s.spawn(move || {
                for line in part {
                    let mut args = vec!["ban"];
                    args.extend(line.iter().map(String::as_str));
                    args.push(duration);
                    let out = ctl(MASTER, &args);
                    if !out.status.success() || !out.stdout.is_empty() {
                        let why = format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(why);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(failures.is_empty(), "bans refused: {failures:?}");
}

/// The measurement: 200 bans from four control clients at once and a SIGHUP that
/// reinstalls the ruleset on the master; the master's adverts keep their cadence (no gap
/// above three intervals) and the backup never moves.
#[test]
fn bans_and_a_reload_do_not_stall_the_masters_adverts() {
    let _one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::start();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        vrrp(MASTER).iter().all(|(_, m)| *m),
        "fwlb-a should be master of every instance: {:?}",
        vrrp(MASTER)
    );
    let backup_before = vrrp(BACKUP);
    let adverts = Adverts::capture(lab.dir.path());
    let ips = addresses(0, 200);
    std::thread::scope(|s| {
        s.spawn(|| ban_all(&ips, 1, 4, "1h"));
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            lab.reload_with_a_new_ruleset("fwlb-a", 2222, Duration::from_secs(20));
        });
    });
    std::thread::sleep(Duration::from_millis(300));
    let (seen, gap) = adverts.stop();
    let backup_after = vrrp(BACKUP);
    assert!(seen > 20, "only {seen} adverts captured");
    assert!(
        gap <= INTERVAL * 3,
        "the master's adverts stopped for {gap:?} (interval {INTERVAL:?}) under ban load"
    );
    assert_eq!(
        backup_before, backup_after,
        "the backup changed state (transitions, master) while the master was banning"
    );
    let listed = bans(MASTER);
    assert_eq!(listed.len(), 200, "every ban listed after the reload");
    assert_eq!(
        nft_set_len(MASTER, "banned4"),
        200,
        "and in the kernel's set"
    );
    eprintln!("{seen} adverts, largest gap {gap:?}");
}

/// Ten thousand timed bans in one go (40 control lines, 4 clients at once): all listed by
/// fwlb and by nft, kept with their time by a reload that reinstalls the ruleset, and gone
/// when their time is up.
#[test]
fn ten_thousand_bans_are_listed_survive_a_reload_and_expire() {
    let _one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::start();
    let ips = addresses(1000, 10_000);
    let t0 = Instant::now();
    ban_all(&ips, 250, 4, "12s");
    let took = t0.elapsed();
    let listed = bans(MASTER);
    assert_eq!(listed.len(), 10_000, "show bans lists them all");
    assert_eq!(nft_set_len(MASTER, "banned4"), 10_000, "nft sees them all");
    let first = &listed[0];
    let left = first["timeout_ms"].as_u64().unwrap_or(0);
    assert!(left > 0 && left <= 12_000, "time left {first}");
    let t1 = Instant::now();
    lab.reload_with_a_new_ruleset("fwlb-a", 2223, Duration::from_secs(30));
    eprintln!(
        "bans {took:?}, listing {:?}, reload {:?}",
        t1 - t0 - took,
        t1.elapsed()
    );
    let kept = bans(MASTER);
    assert_eq!(kept.len(), 10_000, "the reload kept every ban");
    assert!(
        kept.iter()
            .all(|b| b["timeout_ms"].as_u64().is_some_and(|t| t <= 12_000)),
        "bans kept their time left (not reset, not permanent)"
    );
    let deadline = t0 + Duration::from_secs(25);
    while !bans(MASTER).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} bans still listed 25 s after 12 s bans",
            bans(MASTER).len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(nft_set_len(MASTER, "banned4"), 0, "the kernel expired them");
    eprintln!("10,000 bans in {took:?}");
}
