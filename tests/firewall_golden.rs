//! Golden tests of the firewall renderers: each tests/golden/firewall/CASE.toml is built into
//! a ruleset and rendered; the nftables and pf texts must equal CASE.nft and CASE.pf, which
//! are the reviewed specification. After an intended change, rewrite them with
//!     UPDATE_GOLDEN=1 cargo test --test firewall_golden
//! and review the diff. On Linux every golden .nft file must also pass `nft -c` (check mode:
//! nothing is changed).

mod common;

use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::time::Duration;

use common::ban;
use fwlb::firewall::{Ruleset, build, nft, pf};

/// The configurations; `pair_bans` is `pair` with bans carried over a reload; `by_name`
/// carries the resolved addresses of its servers given by name, as a reload does.
const CASES: &[&str] = &[
    "pair",
    "pair_bans",
    "balancer",
    "ipv6",
    "nat_learned",
    "by_name",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/firewall")
}

fn ruleset(case: &str) -> Ruleset {
    let (file, bans) = match case {
        "pair_bans" => ("pair", true),
        other => (other, false),
    };
    let path = dir().join(format!("{file}.toml"));
    let cfg = fwlb::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut rs = build(&cfg).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.join("\n")));
    if case == "by_name" {
        rs.resolved = ["10.0.0.21", "10.0.0.31", "10.0.0.32", "10.0.0.11"]
            .map(common::ip)
            .to_vec();
    }
    if bans {
        rs.bans = vec![
            ban("203.0.113.66", Some(5400)),
            ban("203.0.113.67", None),
            ban("2001:db8:bad::1", Some(600)),
        ];
    }
    rs
}

/// Compare with the golden file, or rewrite it under UPDATE_GOLDEN=1. Returns a mismatch.
fn golden(file: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(file, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        return None;
    }
    let expected = std::fs::read_to_string(file).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (create it with UPDATE_GOLDEN=1)",
            file.display()
        )
    });
    if expected == actual {
        return None;
    }
    let first = expected
        .lines()
        .zip(actual.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    Some(format!(
        "{} differs from the rendered text at line {}:\n  golden:   {:?}\n  rendered: {:?}\n(UPDATE_GOLDEN=1 rewrites it; review the diff)",
        file.display(),
        first + 1,
        expected.lines().nth(first).unwrap_or("<end of file>"),
        actual.lines().nth(first).unwrap_or("<end of text>"),
    ))
}

fn check_all(ext: &str, render: fn(&Ruleset) -> String) {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| {
            let rs = ruleset(case);
            let text = render(&rs);
            assert_eq!(text, render(&rs), "{case}: rendering is deterministic");
            golden(&dir().join(format!("{case}.{ext}")), &text)
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn nft_matches_golden() {
    check_all("nft", nft::render);
}

#[test]
fn pf_matches_golden() {
    check_all("pf", pf::render);
}

/// `nft -c -f FILE` for every golden .nft file: the kernel and nft parse and validate the
/// whole transaction, then discard it. Without root this runs in a new user and network
/// namespace (`unshare -rn`).
#[cfg(target_os = "linux")]
#[test]
fn golden_nft_files_pass_nft_check() {
    use std::process::Command;

    let nft_bin = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("this test needs nft(8) to check the golden rulesets: apt-get install nftables")
        });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/golden/firewall")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nft"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden .nft files");
    let mut failures = Vec::new();
    for f in &files {
        let direct = Command::new(nft_bin).arg("-c").arg("-f").arg(f).output();
        let out = match direct {
            Ok(o) if o.status.success() => continue,
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("Operation not permitted") => {
                Command::new("unshare")
                    .args(["-rn", nft_bin, "-c", "-f"])
                    .arg(f)
                    .output()
            }
            other => other,
        };
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => failures.push(format!(
                "nft -c -f {} failed:\n{}",
                f.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => failures.push(format!("cannot run nft for {}: {e}", f.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Apply a golden ruleset in a throwaway user + network namespace (`unshare -rn`: the host's
/// firewall is never touched) next to another table: applying it twice gives the same
/// listing, the other table survives, and ban / unban / list_bans / parse_bans round-trip.
#[cfg(target_os = "linux")]
#[test]
fn nft_apply_is_idempotent_and_bans_round_trip_in_a_scratch_namespace() {
    use std::net::IpAddr;
    use std::process::Command;

    common::require_unshare();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let put = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).expect("write script");
        p.display().to_string()
    };
    let ip = |s: &str| s.parse::<IpAddr>().expect("test address");
    let ruleset = put("ruleset.nft", &nft::render(&ruleset("pair_bans")));
    let ban = put(
        "ban.nft",
        &format!(
            "{}{}",
            nft::ban(ip("192.0.2.50"), Some(Duration::from_secs(60))),
            // Banning again replaces the timeout instead of failing.
            nft::ban(ip("192.0.2.50"), Some(Duration::from_secs(7200)))
        ),
    );
    let unban = put(
        "unban.nft",
        &format!(
            "{}{}",
            nft::unban(ip("203.0.113.67")),
            // Unbanning an address that is not banned is not an error.
            nft::unban(ip("2001:db8::99"))
        ),
    );
    let list = put("list.nft", &nft::list_bans());
    // `counter` values and `expires` change between listings; drop them before comparing.
    let script = format!(
        "set -e
nft add table ip other
nft add chain ip other keep '{{ type filter hook input priority 10; policy accept; }}'
nft -f {ruleset}
nft list table inet fwlb | sed 's/expires [0-9a-z]*//' > {dir}/first
nft -f {ruleset}
nft list table inet fwlb | sed 's/expires [0-9a-z]*//' > {dir}/second
cmp {dir}/first {dir}/second
nft list tables
nft -f {ban}
nft -f {unban}
echo '--- bans'
nft -f {list}",
        dir = tmp.path().display()
    );
    let out = Command::new("unshare")
        .args(["-rn", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scratch namespace script failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (tables, listing) = stdout.split_once("--- bans\n").expect("marker");
    assert!(
        tables.contains("table ip other"),
        "another table must survive: {tables}"
    );
    let mut bans = fwlb::firewall::nft::parse_bans(listing).expect("listing parses");
    bans.sort_by_key(|b| b.ip);
    let got: Vec<(IpAddr, Option<u64>)> = bans
        .iter()
        .map(|b| (b.ip, b.timeout.map(|d| d.as_secs())))
        .collect();
    // Timeouts count down while the test runs: compare to the minute.
    let minutes: Vec<(IpAddr, Option<u64>)> = got
        .iter()
        .map(|(i, t)| (*i, t.map(|s| s.div_ceil(60))))
        .collect();
    assert_eq!(
        minutes,
        vec![
            (ip("192.0.2.50"), Some(120)),
            (ip("203.0.113.66"), Some(90)),
            (ip("2001:db8:bad::1"), Some(10)),
        ],
        "{listing}"
    );
}
