//! Privilege separation, reload and the parent/child pair, on the real binary: the child's
//! credentials as the kernel reports them, SIGHUP with broken and good files while traffic
//! runs, and each process dying while the other watches.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn require_root() {
    common::require_root("these tests fork a root parent and a chrooted child");
}

/// As root: backend "A", and fwlb balancing to it from `listen`.
async fn serving_a() -> (Backend, std::net::SocketAddr, Fwlb) {
    require_root();
    let a = Backend::start("A").await;
    let listen = free_addr();
    let f = Fwlb::balancing(listen, &[a.addr], "");
    (a, listen, f)
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or("")
}

/// `id -u USER` (`which` = "-u") or `id -g USER` ("-g").
fn id_of(which: &str, user: &str) -> String {
    run(&["id", which, user]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_is_chrooted_unprivileged_and_serves() {
    require_root();
    let a = Backend::start("A").await;
    let listen = free_addr();
    let jail = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[daemon]\ncontrol = \"none\"\nuser = \"nobody\"\nchroot = \"{}\"\n[[balancer]]\nname = \"t\"\nlisten = \"{listen}\"\nservers = [\"{}\"]\n",
        jail.path().display(),
        a.addr
    );
    let f = Fwlb::start(&cfg, listen);
    let child = f.child_pid().expect("the parent has a child");
    let st = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
    let nobody = id_of("-u", "nobody");
    assert_eq!(
        field(&st, "Uid:").split_whitespace().collect::<Vec<_>>(),
        vec![nobody.as_str(); 4],
        "real, effective, saved and fs uid are nobody's"
    );
    let gid = id_of("-g", "nobody");
    assert_eq!(
        field(&st, "Gid:").split_whitespace().collect::<Vec<_>>(),
        vec![gid.as_str(); 4]
    );
    assert_eq!(
        field(&st, "Groups:"),
        gid,
        "supplementary groups: only its own"
    );
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(&st, cap), "0000000000000000", "{cap} of the child");
    }
    assert_eq!(field(&st, "NoNewPrivs:"), "1");
    let root = std::fs::read_link(format!("/proc/{child}/root")).unwrap();
    assert_eq!(
        root.canonicalize().unwrap(),
        jail.path().canonicalize().unwrap()
    );
    // The parent stays root but keeps only what its requests need.
    let pst = std::fs::read_to_string(format!("/proc/{}/status", f.pid())).unwrap();
    assert_eq!(field(&pst, "Uid:").split_whitespace().next(), Some("0"));
    let bnd = u64::from_str_radix(field(&pst, "CapBnd:"), 16).unwrap();
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SETUID: u32 = 7;
    assert!(
        bnd & (1 << CAP_NET_ADMIN) != 0,
        "the parent keeps NET_ADMIN"
    );
    assert!(
        bnd & (1 << CAP_SYS_ADMIN) == 0 && bnd & (1 << CAP_SETUID) == 0,
        "the parent dropped what it does not use: {bnd:x}"
    );
    // Signals: the parent catches its four and blocks none (they were held across the fork
    // only); the child blocks none, and catches only what its own runtime asked for.
    let bit = |sig: i32| 1u64 << (sig - 1);
    let mask = |st: &str, name: &str| u64::from_str_radix(field(st, name), 16).unwrap();
    let parent_wants =
        bit(libc::SIGTERM) | bit(libc::SIGINT) | bit(libc::SIGHUP) | bit(libc::SIGCHLD);
    assert_eq!(mask(&pst, "SigCgt:") & parent_wants, parent_wants, "{pst}");
    assert_eq!(
        mask(&pst, "SigBlk:"),
        0,
        "the parent unblocked what it held"
    );
    assert_eq!(
        mask(&st, "SigBlk:"),
        0,
        "the child unblocked what it inherited"
    );
    assert_eq!(
        mask(&st, "SigCgt:") & bit(libc::SIGCHLD),
        0,
        "no parent handler in the child"
    );
    // Nothing of the parent's (its signal pipe included) is open in the child: no socket is
    // shared between them.
    let sockets = |pid: i32| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.display().to_string())
            .filter(|l| l.starts_with("socket:"))
            .collect()
    };
    let shared: Vec<_> = sockets(f.pid())
        .intersection(&sockets(child))
        .cloned()
        .collect();
    assert!(shared.is_empty(), "sockets open in both: {shared:?}");
    // And it serves.
    assert_eq!(which(1, listen).await, "A");
    f.assert_logged("child running without privileges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_the_running_config() {
    let (a, listen, f) = serving_a().await;
    let b = Backend::start("B").await;
    let path = f.dir.path().join("fwlb.toml");
    // A syntax error, then a validation error, then a change that needs a restart.
    let good = config(listen, &[a.addr, b.addr], "algorithm = \"roundrobin\"");
    std::fs::write(&path, format!("{good}\n[[balancer\n")).unwrap();
    f.signal("HUP");
    wait_until(
        "the syntax error in the log",
        Duration::from_secs(5),
        || f.log().contains("keeping the running configuration"),
    );
    std::fs::write(&path, good.replace("roundrobin", "roundrobbin")).unwrap();
    f.signal("HUP");
    wait_until("the validation error", Duration::from_secs(5), || {
        f.log().contains("roundrobbin")
    });
    let log = f.log();
    assert!(
        log.contains(&format!("{}:", path.display())) && log.contains("algorithm"),
        "errors carry FILE:LINE:COL: {log}"
    );
    std::fs::write(&path, good.replace("[daemon]\n", "[daemon]\nthreads = 2\n")).unwrap();
    f.signal("HUP");
    wait_until("the restart-needed refusal", Duration::from_secs(5), || {
        f.log().contains("need a restart")
    });
    // Still the old configuration: every client on A, never B.
    for src in 1..=20 {
        assert_eq!(which(src, listen).await, "A");
    }
    assert_eq!(b.count(), 0);
    assert!(!f.log().contains("in effect"));
}

/// A digest that notices a lost, duplicated or reordered byte.
fn fold(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_server_and_a_listener_while_a_transfer_runs() {
    require_root();
    let a = Backend::start("A").await;
    let b = Backend::start("B").await;
    let listen = free_addr();
    let listen2 = free_addr();
    let jail = tempfile::tempdir().unwrap();
    let daemon = format!(
        "[daemon]\ncontrol = \"none\"\nuser = \"nobody\"\nchroot = \"{}\"\n",
        jail.path().display()
    );
    let f = Fwlb::start(
        &format!(
            "{daemon}[[balancer]]\nname = \"t\"\nlisten = \"{listen}\"\nservers = [\"{}\"]\nalgorithm = \"roundrobin\"\n",
            a.addr
        ),
        listen,
    );
    // A long echo transfer through the old listener: 64 MiB out, all of it back.
    const TOTAL: usize = 64 << 20;
    let s = greeted_by("A", 7, listen).await;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut sent = 0usize;
        let mut k = 0u8;
        while sent < TOTAL {
            let chunk: Vec<u8> = (0..65536).map(|i| (i as u8).wrapping_mul(31) ^ k).collect();
            k = k.wrapping_add(1);
            wr.write_all(&chunk).await.unwrap();
            h = fold(h, &chunk);
            sent += chunk.len();
            // Slow enough that the reload lands in the middle.
            if sent.is_multiple_of(4 << 20) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        wr.shutdown().await.unwrap();
        h
    });
    let reader = tokio::spawn(async move {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while got < TOTAL {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF after {got} bytes");
            let take = n.min(TOTAL - got);
            h = fold(h, &buf[..take]);
            got += take;
        }
        h
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = f.dir.path().join("fwlb.toml");
    std::fs::write(
        &path,
        format!(
            "{daemon}[[balancer]]\nname = \"t\"\nlisten = [\"{listen}\", \"{listen2}\"]\nservers = [\"{}\", \"{}\"]\nalgorithm = \"roundrobin\"\n",
            a.addr, b.addr
        ),
    )
    .unwrap();
    f.signal("HUP");
    wait_until("the reload", Duration::from_secs(5), || {
        f.log().contains("in effect")
    });
    assert!(
        !reader.is_finished(),
        "the transfer was still running at the reload"
    );
    // The new listener serves, and the new server gets its share.
    let mut seen = std::collections::BTreeSet::new();
    for src in 20..30 {
        seen.insert(which(src, listen2).await);
        seen.insert(which(src + 100, listen).await);
    }
    assert!(seen.contains("A") && seen.contains("B"), "{seen:?}");
    let (sent, got) = (writer.await.unwrap(), reader.await.unwrap());
    assert_eq!(sent, got, "the transfer through the old listener is intact");
    f.assert_logged(&format!("server {} added", b.addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_process_dying_takes_the_other_down() {
    // The child dies: the parent exits non-zero at once.
    let (a, listen, mut f) = serving_a().await;
    let child = f.child_pid().unwrap();
    signal("KILL", child);
    let t = Instant::now();
    let code = f.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(1), "{}", f.log());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(f.log().contains("child ended with signal 9"));

    // The parent dies: the child exits and the port is free for the restarted daemon.
    let f = Fwlb::balancing(listen, &[a.addr], "");
    let child = f.child_pid().unwrap();
    signal("KILL", f.pid());
    wait_until("the child to exit", Duration::from_secs(3), || {
        !alive(child)
    });
    let g = Fwlb::balancing(listen, &[a.addr], "");
    assert_eq!(which(3, listen).await, "A");
    drop(g);
    drop(f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_parent_drains_through_the_child() {
    let (_a, listen, mut f) = serving_a().await;
    let mut s = greeted_by("A", 9, listen).await;
    f.signal("TERM");
    // The listener closes, the open connection keeps working.
    wait_until("the listener to close", Duration::from_secs(3), || {
        std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err()
    });
    s.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "still here");
    s.shutdown().await.unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "BYE A\n");
    assert_eq!(f.wait_exit(Duration::from_secs(5)), Some(0), "{}", f.log());
}
