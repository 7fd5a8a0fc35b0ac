//! `fwlb pen`: pen's command line with pen's semantics, checked with real clients and penctl.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `fwlb pen` with the command line `cmdline(l)`, listening on a free address `l`.
fn pen(cmdline: impl FnOnce(SocketAddr) -> String) -> (Fwlb, SocketAddr) {
    let l = free_addr();
    (Fwlb::start_args(&args(&cmdline(l)), l), l)
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_is_sticky_with_new_clients_round_robin() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (_f, l) = pen(|l| format!("pen -f {l} {} {}", a.addr, b.addr));
    let first = which_each(1..=6, l).await;
    assert_eq!(first, vec!["a", "b", "a", "b", "a", "b"]);
    for c in 1..=6u32 {
        assert_eq!(
            which(c, l).await,
            first[c as usize - 1],
            "client {c} sticks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_r_ignores_the_client_table_and_dash_h_hashes() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (f, l) = pen(|l| format!("pen -fr {l} {} {}", a.addr, b.addr));
    let seq = which_each([1; 4], l).await;
    assert_eq!(seq, vec!["a", "b", "a", "b"], "one client, round robin");
    drop(f);
    let (_f, l) = pen(|l| format!("pen -f -r -h {l} {} {}", a.addr, b.addr));
    let mut seen = std::collections::HashSet::new();
    for c in 1..=40u32 {
        let s = which(c, l).await;
        for _ in 0..3 {
            assert_eq!(which(c, l).await, s, "hash: same client, same server");
        }
        seen.insert(s);
    }
    assert_eq!(seen.len(), 2, "hash spreads clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_e_emergency_and_dash_b_blacklist_time() {
    let em = Backend::start("emergency").await;
    let dead = free_addr();
    let (_f, l) = pen(|l| format!("pen -f -b 1 -e {} {l} {dead}", em.addr));
    assert_eq!(which(1, l).await, "emergency");
    // The dead server comes alive: skipped for the 1 s blacklist, then used.
    let revived = Backend::start_on(dead, "revived").await;
    assert_eq!(which(2, l).await, "emergency");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(which(3, l).await, "revived");
    assert_eq!(revived.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_s_stubborn_closes_instead_of_failing_over() {
    let live = Backend::start("live").await;
    let dead = free_addr();
    // Round robin starts at server 0, the dead one: stubborn closes that client.
    let (_f, l) = pen(|l| format!("pen -f -r -s {l} {dead} {}", live.addr));
    let mut s = connect_from(1, l).await.expect("connect");
    assert!(
        read_line(&mut s).await.map_or(true, |l| l.is_empty()),
        "closed without a server"
    );
    assert_eq!(which(1, l).await, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_c_control_port_with_penctl_and_dash_f_file() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pen.cfg");
    // The file sets the blacklist time and weights; the command line's servers win over the
    // file's entries with the same index (pen's order).
    std::fs::write(
        &file,
        "blacklist 45\nserver 0 weight 3\nserver 2 address 127.0.0.1 port 9\n",
    )
    .expect("write");
    let (l, c) = (free_addr(), free_addr());
    let _f = Fwlb::start_args(
        &args(&format!(
            "pen -f -r -h -s -X -C {c} -F {} {l} {} {}",
            file.display(),
            a.addr,
            b.addr
        )),
        l,
    );
    assert_eq!(
        penctl(c, "mode"),
        "hash roundrobin stubborn no weight no prio\n"
    );
    assert_eq!(penctl(c, "blacklist"), "45\n");
    let servers = penctl(c, "servers");
    let lines: Vec<&str> = servers.lines().collect();
    assert_eq!(lines.len(), 3, "{servers}");
    assert!(
        lines[0].contains("weight 0"),
        "command line wins: {servers}"
    );
    assert!(
        lines[2].starts_with("2 addr 127.0.0.1 port 9 "),
        "{servers}"
    );
    // `write` without a file saves to the -F file.
    assert_eq!(penctl(c, "write"), "");
    let saved = std::fs::read_to_string(&file).expect("read");
    assert!(
        saved.contains("blacklist 45") && saved.contains("no weight"),
        "{saved}"
    );
    // -X: exit is enabled.
    assert_eq!(penctl(c, "exit"), "");
}

#[test]
fn dash_u_and_dash_j_drop_to_the_user_in_the_chroot() {
    require_root("the child drops to a user in a chroot");
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("jail");
    std::fs::create_dir(&root).expect("mkdir");
    let l = free_addr();
    let mut f = Fwlb::start_args(
        &args(&format!(
            "pen -f -u nobody -j {} {l} 127.0.0.1:9",
            root.display()
        )),
        l,
    );
    // The network-facing child drops to the user in the chroot; the parent stays root (it
    // changes addresses and the firewall on the child's validated requests).
    let child = f.child_pid().expect("the unprivileged child");
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).expect("status");
    let uid = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let r = std::fs::read_link(format!("/proc/{child}/root")).expect("root");
    assert_eq!(r, root.canonicalize().expect("canon"));
    let _ = f.child.kill();
    let _ = f.wait_exit(Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dash_f_it_detaches_and_writes_the_pidfile() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("dir");
    let pidfile = dir.path().join("pen.pid");
    let l = free_addr();
    let st = Command::new(BIN)
        .args(args(&format!(
            "pen -p {} {l} {}",
            pidfile.display(),
            a.addr
        )))
        .status()
        .expect("run");
    assert!(st.success(), "the foreground part exits 0 after detaching");
    let pid: i32 = wait_for("the pidfile written", Duration::from_secs(2), || {
        read_log(&pidfile).trim().parse().ok()
    });
    // Give it a moment to listen, then it serves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = which(1, l).await;
    send_signal("TERM", pid);
    assert_eq!(served, "a");
}

#[test]
fn bad_pen_command_lines_are_refused_with_usage() {
    for (a, want) in [
        ("pen -f -t 0 80 127.0.0.1", "at least 1"),
        ("pen -f -U 80 127.0.0.1", "UDP"),
        ("pen -f", "no listen address"),
        ("pen -f -q", "needs an argument"),
    ] {
        let out = Command::new(BIN).args(args(a)).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{a}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains("usage: fwlb pen"),
            "{a}: {err}"
        );
    }
}
