//! The backend-neutral firewall handle (`fwlb::firewall::open`) against the real nft, in a
//! scratch network namespace: the test re-runs itself under `unshare -rn`, so the nft it
//! drives sees an empty ruleset that vanishes with the process, whatever happens.
//! (The pf handle needs a FreeBSD kernel; its pure parts are unit-tested in src/.)

#![cfg(target_os = "linux")]

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ban, ip};
use fwlb::firewall::{Backend, Ban, Firewall, build, open};

const INSIDE: &str = "FWLB_TEST_IN_SCRATCH_NETNS";

/// Run `name` of this test binary again inside a new user and network namespace; true if
/// this process is already that copy (then the caller runs the body).
fn in_scratch_namespace(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    common::require_unshare();
    let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .any(|p| Path::new(p).exists());
    assert!(nft, "this test needs nft(8): apt-get install nftables");
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .arg("-rn")
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "{name} in a scratch namespace failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

fn nft_list() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sorted(mut v: Vec<Ban>) -> Vec<Ban> {
    v.sort_by_key(|b| b.ip);
    v
}

#[test]
fn nft_handle_installs_bans_lists_reinstalls_and_removes() {
    if !in_scratch_namespace("nft_handle_installs_bans_lists_reinstalls_and_removes") {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/firewall/pair.toml");
    let cfg = fwlb::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut rs = build(&cfg).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(rs.backend, Backend::Nftables);
    rs.bans = vec![
        ban("203.0.113.66", Some(5400)),
        ban("2001:db8:bad::1", None),
    ];

    let mut fw: Box<dyn Firewall> = open(rs.backend).expect("nft handle");
    assert_eq!(fw.describe(), "table inet fwlb");
    fw.install(&rs).expect("install");
    assert!(nft_list().contains("table inet fwlb"), "{}", nft_list());

    let bans = sorted(fw.list_bans().expect("list"));
    assert_eq!(bans.len(), 2, "{bans:?}");
    assert_eq!(bans[0].ip, ip("203.0.113.66"));
    let left = bans[0].timeout.expect("a timed ban has time left");
    assert!(
        left <= Duration::from_secs(5400) && left > Duration::from_secs(5300),
        "{left:?}"
    );
    assert_eq!(bans[1].ip, ip("2001:db8:bad::1"));
    assert_eq!(bans[1].timeout, None, "permanent");

    fw.ban(ip("192.0.2.50"), Some(Duration::from_secs(60)))
        .expect("ban");
    fw.ban(ip("192.0.2.50"), Some(Duration::from_secs(7200)))
        .expect("ban again replaces the timeout");
    fw.unban(ip("2001:db8:bad::1")).expect("unban");
    fw.unban(ip("2001:db8::99"))
        .expect("unbanning an address that is not banned succeeds");
    let bans = sorted(fw.list_bans().expect("list"));
    let ips: Vec<IpAddr> = bans.iter().map(|b| b.ip).collect();
    assert_eq!(ips, [ip("192.0.2.50"), ip("203.0.113.66")]);
    assert!(
        bans[0]
            .timeout
            .is_some_and(|t| t > Duration::from_secs(3600)),
        "the second ban's timeout: {bans:?}"
    );
    // nftables expires entries itself: nothing for the daemon to do.
    assert!(fw.expire().expect("expire").is_empty());
    assert_eq!(fw.next_expiry(), None);

    // A reinstall keeps the bans the caller carries over, and only those.
    rs.bans = fw.list_bans().expect("list");
    fw.install(&rs).expect("reinstall");
    let again: Vec<IpAddr> = sorted(fw.list_bans().expect("list"))
        .iter()
        .map(|b| b.ip)
        .collect();
    assert_eq!(again, ips);
    rs.bans.clear();
    fw.install(&rs).expect("reinstall without bans");
    assert!(fw.list_bans().expect("list").is_empty());

    fw.remove().expect("remove");
    assert!(!nft_list().contains("table inet fwlb"), "{}", nft_list());
    let e = fw.list_bans().expect_err("no table, no bans").to_string();
    assert!(e.starts_with("show bans:"), "{e}");
}
