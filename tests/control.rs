//! The control port against the real `penctl` (Debian's pen package) and `fwlb ctl`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `fwlb ctl`; returns (stdout, stderr, exit code).
fn fctl(ctl: &str, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(BIN)
        .args(["ctl", "-C", ctl])
        .args(args)
        .output()
        .expect("run fwlb ctl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// A daemon with a control port and the given balancer settings.
fn start(
    servers: &[SocketAddr],
    ctl: SocketAddr,
    daemon_extra: &str,
    extra: &str,
) -> (Fwlb, SocketAddr) {
    let l = free_addr();
    let cfg = config(l, servers, extra).replace(
        "control = \"none\"",
        &format!("control = \"{ctl}\"\n{daemon_extra}"),
    );
    (Fwlb::start(&cfg, l), l)
}

/// Raw control exchange: send `bytes`, read the reply until the server closes.
async fn raw(ctl: SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(ctl)
        .await
        .expect("connect control");
    s.write_all(bytes).await.expect("send");
    read_to_close(&mut s, Duration::from_secs(10)).await
}

/// Commands and pen's exact replies, in order: a command's setting shows in later replies.
const PEN_REPLIES: &[(&str, &str)] = &[
    ("blacklist", "30\n"),
    ("blacklist 45", "45\n"),
    ("blacklist", "45\n"),
    ("tracking 5", "5\n"),
    ("timeout", "3\n"),
    ("timeout 4", "4\n"),
    // The client table never shrinks.
    ("clients_max 100", "2048\n"),
    ("clients_max 4096", "4096\n"),
    ("conn_max", "10000\n"),
    ("idle_timeout 5", "Idle timeout: 5 seconds\n"),
    ("idle_timeout", "Idle timeout: 5 seconds\n"),
    ("debug 1", "1\n"),
    ("debug 0", "0\n"),
    (
        "mode",
        "no hash no roundrobin no stubborn no weight no prio\n",
    ),
    ("hash", ""),
    ("roundrobin", ""),
    ("stubborn", ""),
    ("mode", "hash roundrobin stubborn no weight no prio\n"),
    ("no hash", ""),
    ("no stubborn", ""),
    ("weight", ""),
    ("mode", "no hash roundrobin no stubborn weight no prio\n"),
    ("prio", ""),
    ("mode", "no hash roundrobin no stubborn no weight prio\n"),
    ("no prio", ""),
    ("no roundrobin", ""),
    (
        "mode",
        "no hash no roundrobin no stubborn no weight no prio\n",
    ),
    ("exit", "Exit is not enabled; restart with -X flag\n"),
    (
        "bogus word",
        "do_cmd: ignoring command starting with 'bogus'\n",
    ),
    // pen ignores `no X` for unknown X.
    ("no such_flag", ""),
    ("#comment", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penctl_commands_get_pens_reply_formats() {
    let b = backends(2).await;
    let c = free_addr();
    let (f, l) = start(&addrs(&b), c, "", "");
    let servers = penctl(c, "servers");
    assert_eq!(
        servers,
        format!(
            "0 addr 127.0.0.1 port {} conn 0 max 0 hard 0 weight 1 prio 0 sx 0 rx 0\n1 addr 127.0.0.1 port {} conn 0 max 0 hard 0 weight 1 prio 0 sx 0 rx 0\n",
            b[0].addr.port(),
            b[1].addr.port()
        )
    );
    for (cmd, reply) in PEN_REPLIES {
        assert_eq!(penctl(c, cmd), *reply, "penctl {cmd}");
    }
    assert_eq!(penctl(c, "control"), format!("{c}\n"));
    assert_eq!(penctl(c, "pid"), format!("{}\n", f.pid()));
    // Traffic shows up in `servers` (bytes) and `recent` (per client).
    let mut s = greeted_by("s0", 9, l).await;
    s.write_all(b"abc").await.expect("write");
    s.shutdown().await.expect("fin");
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.expect("read");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(penctl(c, "servers").starts_with(&format!(
        "0 addr 127.0.0.1 port {} conn 0 max 0 hard 0 weight 1 prio 0 sx 3 rx 13\n",
        b[0].addr.port()
    )));
    assert_eq!(penctl(c, "recent"), "127.0.0.9 connects 1 sx 13 rx 3\n");
    // server N with keyword pairs, and growing the table with an empty slot as pen does.
    assert_eq!(penctl(c, "server 1 max 7 hard 9 weight 3 prio 2"), "");
    assert_eq!(penctl(c, "server 3 address 127.0.0.1 port 9"), "");
    let lines: Vec<String> = penctl(c, "servers").lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1].ends_with("conn 0 max 7 hard 9 weight 3 prio 2 sx 0 rx 0"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "2 addr 0.0.0.0 port 0 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0"
    );
    assert_eq!(
        lines[3],
        "3 addr 127.0.0.1 port 9 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0"
    );
    let status = penctl(c, "status");
    assert!(
        status.starts_with("<html>\n<head>\n<title>Pen status page</title>"),
        "{status}"
    );
    assert!(status.ends_with("</body>\n</html>\n"));
    let dir = tempfile::tempdir().expect("dir");
    let w = dir.path().join("pen.cfg");
    assert_eq!(penctl(c, &format!("write {}", w.display())), "");
    let written = std::fs::read_to_string(&w).expect("written");
    assert!(
        written.contains("server 1 address 127.0.0.1 port") && written.contains("blacklist 45"),
        "{written}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklist_through_penctl_while_traffic_runs() {
    let b = backends(3).await;
    let c = free_addr();
    let (_f, l) = start(&addrs(&b), c, "", "algorithm = \"roundrobin\"");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (st, er) = (stop.clone(), errors.clone());
    // Bounded load: at most 20 s or until told to stop.
    let load = tokio::spawn(async move {
        let end = Instant::now() + Duration::from_secs(20);
        while !st.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
            match connect_from(1, l).await {
                Ok(mut s) => {
                    if read_line(&mut s).await.is_err() {
                        er.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                Err(_) => {
                    er.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b[1].count() > 0);
    assert_eq!(penctl(c, "server 1 blacklist 99999"), "");
    // Let a connection that was already being placed land (the load loop has at most one).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = b[1].count();
    let others = b[0].count() + b[2].count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        b[1].count(),
        before,
        "no new clients reach a blacklisted server"
    );
    assert!(
        b[0].count() + b[2].count() > others + 10,
        "traffic goes on elsewhere"
    );
    let show = fctl(&c.to_string(), &["show", "servers"]).0;
    assert!(
        show.lines()
            .nth(2)
            .is_some_and(|l| l.contains("blacklisted")),
        "{show}"
    );
    assert_eq!(penctl(c, "server 1 blacklist 0"), "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b[1].count() > before, "blacklist 0 brings it back");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.expect("load");
    assert_eq!(
        errors.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no client failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_state_survives_a_restart() {
    let b = backends(3).await;
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state");
    let c = free_addr();
    let daemon = format!("state_file = \"{}\"", state.display());
    let servers = addrs(&b);
    let (f, _) = start(&servers, c, &daemon, "algorithm = \"roundrobin\"");
    assert_eq!(penctl(c, "server 1 blacklist 600"), "");
    assert_eq!(penctl(c, "server 0 weight 5"), "");
    let (out, _, code) = fctl(&c.to_string(), &["drain", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(state.exists(), "saved on change");
    drop(f); // SIGKILL: a crash, or a supervisor restart
    let (_f, l) = start(&servers, c, &daemon, "algorithm = \"roundrobin\"");
    let (out, _, code) = fctl(&c.to_string(), &["--json", "show", "servers"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let s = &v["servers"];
    assert_eq!(s[0]["weight"], 5);
    assert_eq!(s[1]["state"], "blacklisted");
    let left = s[1]["blacklist_left_ms"].as_u64().expect("left");
    assert!(left > 590_000 && left <= 600_000, "expiry kept: {left}");
    assert_eq!(s[2]["state"], "draining");
    for c in 0..10 {
        assert_eq!(which(c + 1, l).await, "s0", "only s0 may serve");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_control_client_delays_nothing() {
    let b = Backend::start("s").await;
    let c = free_addr();
    let (_f, l) = start(&[b.addr], c, "", "");
    let mut idle = tokio::net::TcpStream::connect(c).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    assert_eq!(which(1, l).await, "s");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "data connection delayed: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(penctl(c, "blacklist"), "30\n");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "control command delayed: {:?}",
        t.elapsed()
    );
    // The silent client is dropped after the read timeout.
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(8), idle.read(&mut buf))
        .await
        .expect("dropped in time");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_input_gets_an_error_and_the_daemon_keeps_serving() {
    let b = Backend::start("s").await;
    let c = free_addr();
    let (f, l) = start(&[b.addr], c, "", "");
    let long = vec![b'x'; 64 * 1024];
    assert!(
        raw(c, &long)
            .await
            .starts_with("error: command line longer than 4096 bytes")
    );
    assert!(
        raw(c, b"serv\0ers\n")
            .await
            .starts_with("error: binary data")
    );
    assert!(
        raw(c, b"\xff\xfe\xfd\n")
            .await
            .starts_with("error: command line is not UTF-8")
    );
    // Half a line, and the client stays: answered once it has been quiet a moment.
    let mut s = tokio::net::TcpStream::connect(c).await.expect("connect");
    s.write_all(b"serv").await.expect("send");
    let out = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert_eq!(out, "do_cmd: ignoring command starting with 'serv'\n");
    // A line split across two segments is put together (pen misparsed it).
    let mut s = tokio::net::TcpStream::connect(c).await.expect("connect");
    s.write_all(b"black").await.expect("send");
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"list\n").await.expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert_eq!(out, "30\n");
    assert_eq!(which(1, l).await, "s");
    assert!(f.log().contains("bad control line"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_control_clients_while_traffic_flows() {
    let b = Backend::start("s").await;
    let c = free_addr();
    let (_f, l) = start(&[b.addr], c, "", "");
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                which(1 + i, l).await
            } else {
                raw(c, b"blacklist\n").await
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.expect("task");
        if i % 3 == 0 {
            assert_eq!(out, "s");
        } else {
            assert_eq!(out, "30\n");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fwlb_ctl_output_and_exit_codes() {
    let b = backends(2).await;
    let c = free_addr();
    let (_f, l) = start(&addrs(&b), c, "", "");
    let cs = c.to_string();
    let (out, _, code) = fctl(&cs, &["show", "servers"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("#  address"), "{out}");
    // Columns line up: the state column starts at the same offset on every line.
    let col = lines[0].find("state").expect("state column");
    assert!(lines[1..].iter().all(|l| &l[col..col + 2] == "up"), "{out}");
    let (out, err, code) = fctl(&cs, &["no_such_command"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
    assert!(err.contains("no_such_command"));
    let (_, err, code) = fctl(&cs, &["drain", "99"]);
    assert_eq!(code, 1);
    assert!(err.contains("usage: drain N"), "{err}");
    let (_, err, code) = fctl(&format!("127.0.0.1:{}", free_port()), &["servers"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("fwlb ctl: cannot connect to"), "{err}");
    // show conns lists both 5-tuples of a live connection.
    let (s, who) = greeted(5, l).await;
    let (out, _, code) = fctl(&cs, &["--json", "show", "conns"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let conn = &v["conns"][0];
    assert_eq!(conn["client"], s.local_addr().expect("addr").to_string());
    assert_eq!(conn["listen"], l.to_string());
    let server = if who == "s0" { b[0].addr } else { b[1].addr };
    assert_eq!(conn["server"], server.to_string());
    assert!(
        conn["local"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let (out, _, _) = fctl(&cs, &["show", "conns"]);
    assert!(
        out.contains(&format!("{} -> {}", s.local_addr().expect("a"), l)),
        "{out}"
    );
    let (out, _, code) = fctl(&cs, &["--json", "show", "stats"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["active"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_open_connections_finish_and_enable_brings_it_back() {
    let b = backends(2).await;
    let c = free_addr();
    let (_f, l) = start(&addrs(&b), c, "", "algorithm = \"roundrobin\"");
    let mut held = greeted_by("s0", 1, l).await;
    let (out, _, code) = fctl(&c.to_string(), &["drain", "0"]);
    assert_eq!(code, 0, "{out}");
    for i in 0..6 {
        assert_eq!(which(2 + i, l).await, "s1");
    }
    held.write_all(b"still\n").await.expect("write");
    assert_eq!(
        read_line(&mut held).await.expect("echo"),
        "still",
        "open connection goes on"
    );
    assert_eq!(fctl(&c.to_string(), &["enable", "0"]).2, 0);
    let m = which_each(20..24, l).await;
    assert!(m.contains(&"s0".to_string()), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_prefix_and_unix_socket_control() {
    let b = [Backend::start("a").await, Backend::start("b").await];
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("ctl.sock");
    let (l1, l2) = (free_addr(), free_addr());
    let cfg = format!(
        "[daemon]\ncontrol = \"{}\"\n[[balancer]]\nname = \"one\"\nlisten = \"{l1}\"\nservers = [\"{}\"]\n[[balancer]]\nname = \"two\"\nlisten = \"{l2}\"\nservers = [\"{}\"]\nblacklist = \"7s\"\n",
        sock.display(),
        b[0].addr,
        b[1].addr
    );
    let _f = Fwlb::start(&cfg, l1);
    let s = sock.to_str().expect("path");
    let (out, code) = {
        let o = Command::new(penctl_path())
            .args([s, "balancer", "two", "blacklist"])
            .output()
            .expect("penctl");
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            o.status.code(),
        )
    };
    assert_eq!((out.as_str(), code), ("7\n", Some(0)));
    assert_eq!(
        fctl(s, &["blacklist"]).0,
        "30\n",
        "without a prefix: the first balancer"
    );
    assert_eq!(fctl(s, &["control"]).0, format!("{s}\n"));
    let (_, err, code) = fctl(s, &["balancer", "three", "servers"]);
    assert_eq!(code, 1);
    assert!(err.contains("no balancer named"), "{err}");
}

#[test]
fn non_loopback_control_needs_control_allow() {
    let out = fwlb_on_config(
        "check",
        "[daemon]\ncontrol = \"0.0.0.0:8888\"\n[[balancer]]\nlisten = \"8080\"\nservers = [\"127.0.0.1:1\"]\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:11: `control` \"0.0.0.0:8888\" is not a loopback address"),
        "{err}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn control_port_refuses_sources_outside_control_allow() {
    require_tool("python3", "python3");
    let mut net = Net::new("ctl");
    let ns = net.host("ctl");
    // Two non-loopback addresses inside the namespace, one allowed.
    ns.addr("lo", "192.0.2.55/32");
    ns.addr("lo", "192.0.2.66/32");
    let mut daemon = ns.daemon(
        "[daemon]\ncontrol = \"0.0.0.0:8888\"\ncontrol_allow = [\"192.0.2.66\"]\n[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9\"]\n",
    );
    let ask = |src: &str| -> String {
        let py = format!(
            "import socket,time\nfor i in range(100):\n  try:\n    s=socket.socket(); s.bind(('{src}',0)); s.connect(('192.0.2.55',8888)); break\n  except OSError: time.sleep(0.05)\ns.sendall(b'blacklist\\n'); s.settimeout(5)\ntry:\n  print(s.recv(100).decode(), end='')\nexcept OSError as e:\n  print('ERR', e)\n"
        );
        String::from_utf8_lossy(&ns.exec(&["python3", "-c", &py]).stdout).into_owned()
    };
    let allowed = ask("192.0.2.66");
    let refused = ask("192.0.2.55");
    let local = ask("127.0.0.1");
    daemon.kill();
    let log = daemon.log();
    assert_eq!(allowed, "30\n", "{log}");
    assert_eq!(local, "30\n", "loopback is always allowed: {log}");
    assert!(
        refused.is_empty() || refused.starts_with("ERR"),
        "{refused:?}"
    );
    assert!(log.contains("control connection refused"), "{log}");
}
