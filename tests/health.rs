//! Active health checks on the real binary over loopback: real servers that die, hang,
//! answer garbage, 1 GiB, one byte per second or 503, and a Redis-like PING/+PONG server.
//! Timing is asserted as loose ranges (the machine is shared).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::wait::{poll, wait_for};
use common::{Backend, Fwlb, Logged, free_addr, which, which_each};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fwlb");

/// Fast checks, so a test sees changes within a few seconds.
const FAST: &str = "interval = \"300ms\", fast_interval = \"100ms\", down_interval = \"300ms\", \
                    timeout = \"400ms\", rise = 2, fall = 2";

/// A daemon with a control port balancing to `servers` with `health = { HEALTH, FAST }`.
fn daemon(servers: &[SocketAddr], health: &str) -> (Fwlb, SocketAddr) {
    let list: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    daemon_with(&list, health, "")
}

/// `daemon` with server entries as text and `extra` balancer keys.
fn daemon_with(servers: &[String], health: &str, extra: &str) -> (Fwlb, SocketAddr) {
    let (listen, ctl) = (free_addr(), free_addr());
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let cfg = format!(
        "[daemon]\ncontrol = \"{ctl}\"\nshutdown_timeout = \"1s\"\n[[balancer]]\nname = \"t\"\n\
         listen = \"{listen}\"\nservers = [{}]\nhealth = {{ {health}{}{FAST} }}\n{extra}\n",
        list.join(", "),
        if health.is_empty() { "" } else { ", " }
    );
    (Fwlb::start(&cfg, listen), ctl)
}

fn ctl(ctl: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["ctl", "-C", &ctl.to_string()])
        .args(args)
        .output()
        .expect("run fwlb ctl");
    assert!(out.status.success(), "fwlb ctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `show servers` as JSON: one object per server.
fn servers(c: SocketAddr) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ctl(c, &["--json", "show", "servers"])).expect("JSON");
    v["servers"].as_array().cloned().unwrap_or_default()
}

/// Wait until server `i`'s health is `want`; its JSON row, and how long that took.
fn wait_health(c: SocketAddr, i: usize, want: &str, limit: Duration) -> (Value, Duration) {
    let last = std::cell::RefCell::new(Value::Null);
    poll(
        limit,
        Duration::from_millis(20),
        || {
            let row = servers(c).get(i).cloned().unwrap_or(Value::Null);
            *last.borrow_mut() = row.clone();
            (row["health"] == want).then_some(row)
        },
        || format!("server {i} not {want} within {limit:?}: {}", last.borrow()),
    )
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn echo(addr: SocketAddr, extra: &[&str]) -> Proc {
    let p = Command::new(BIN)
        .arg("echo")
        .arg(addr.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fwlb echo");
    wait_listening(addr);
    Proc(p)
}

/// A python socket server on `addr` running `script` for every connection (`c` the socket).
fn python(addr: SocketAddr, script: &str) -> Proc {
    let prog = format!(
        "import socket, threading, time, sys\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('{}', {})); l.listen(64)\n\
         def serve(c):\n    try:\n{}\n    except Exception:\n        pass\n    c.close()\n\
         while True:\n    c, _ = l.accept()\n    threading.Thread(target=serve, args=(c,), daemon=True).start()\n",
        addr.ip(),
        addr.port(),
        script
            .lines()
            .map(|l| format!("        {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let p = Command::new("python3")
        .args(["-c", &prog])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    wait_listening(addr);
    Proc(p)
}

fn wait_listening(addr: SocketAddr) {
    wait_for(
        &format!("a server on {addr}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(addr).ok(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_marked_down_skipped_and_comes_back_after_rise() {
    let a = Backend::start("s0").await;
    let dead = free_addr();
    let (f, c) = daemon(&[a.addr, dead], "check = \"tcp\"");
    let (row, took) = wait_health(c, 1, "down", Duration::from_secs(5));
    assert_eq!(row["reason"], "connect refused", "{row}");
    assert!(took < Duration::from_secs(3), "down after {took:?}");
    f.assert_logged("health: server 1 is down (connect refused)");
    // No client is sent to it: every connection reaches s0 at once.
    for src in 1..=20 {
        assert_eq!(which(src, f.listen).await, "s0");
    }
    let failures: u64 = servers(c)[1]["failures"].as_u64().unwrap_or(99);
    assert_eq!(
        failures, 0,
        "no client connect was tried on the down server"
    );
    // It comes back: up after `rise` good checks at fast_interval (plus down_interval).
    let _b = Backend::start_on(dead, "s1").await;
    let t0 = Instant::now();
    wait_health(c, 1, "up", Duration::from_secs(5));
    let back = t0.elapsed();
    assert!(back < Duration::from_secs(3), "up after {back:?}");
    f.assert_logged("health: server 1 is up (ok)");
    let seen = common::which_each(100..120, f.listen).await;
    assert!(seen.iter().any(|s| s == "s1"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_drained_of_new_clients() {
    let good = free_addr();
    let hung = free_addr();
    let _g = echo(good, &[]);
    let _h = echo(hung, &["--hang"]);
    let t0 = Instant::now();
    let (f, c) = daemon(&[good, hung], "check = \"http\", path = \"/health\"");
    wait_health(c, 0, "up", Duration::from_secs(5));
    let (row, _) = wait_health(c, 1, "down", Duration::from_secs(5));
    // fall x interval + timeout = 1 s, with room for start-up and a loaded machine.
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "down after {took:?}");
    assert_eq!(row["reason"], "timeout after 400ms", "{row}");
    f.assert_logged("health: server 1 is down (timeout after 400ms)");
    // Every new request is answered by the good server, none waits on the hung one.
    for src in 1..=10 {
        let t = Instant::now();
        let mut s = common::send_from(src, f.listen, b"GET / HTTP/1.0\r\n\r\n").await;
        let body = common::read_to_close(&mut s, Duration::from_secs(2)).await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_judge_status_body_garbage_size_and_speed() {
    let addrs: Vec<SocketAddr> = (0..5).map(|_| free_addr()).collect();
    let _good = echo(addrs[0], &[]);
    let _failing = echo(addrs[1], &["--fail-health", "/health"]);
    let _garbage = python(addrs[2], "c.recv(4096)\nc.sendall(b'SSH-2.0-nope\\r\\n')");
    let _huge = python(
        addrs[3],
        "c.recv(4096)\nc.sendall(b'HTTP/1.1 200 OK\\r\\n\\r\\n')\n\
         chunk = b'x' * 65536\nfor _ in range(16384):\n    c.sendall(chunk)",
    );
    let _slow = python(
        addrs[4],
        "c.recv(4096)\nfor b in b'HTTP/1.1 200 OK\\r\\n\\r\\nGET /health':\n    c.sendall(bytes([b]))\n    time.sleep(1)",
    );
    let (f, c) = daemon(
        &addrs,
        "check = \"http\", path = \"/health\", expect_status = [\"200-299\"], expect_body = \"GET /health\"",
    );
    let (row, _) = wait_health(c, 0, "up", Duration::from_secs(5));
    assert_eq!(row["reason"], "ok");
    let want = [
        (1, "HTTP 503"),
        (2, "bad status line"),
        (3, "body mismatch"),
        (4, "timeout after 400ms"),
    ];
    for (i, reason) in want {
        let (row, _) = wait_health(c, i, "down", Duration::from_secs(5));
        assert_eq!(row["reason"], reason, "server {i}: {row}");
        let ms = row["check_duration_ms"].as_u64().unwrap_or(u64::MAX);
        // Bounded by the timeout (400 ms), whatever the server does.
        assert!(ms <= 1000, "server {i} check took {ms} ms");
    }
    // The huge reply is judged on its first 16 KiB, well before the timeout.
    let huge = &servers(c)[3];
    assert!(
        huge["check_duration_ms"].as_u64().unwrap_or(u64::MAX) < 400,
        "{huge}"
    );
    // Nothing else was delayed: the good server stays up with quick checks.
    let rows = servers(c);
    assert_eq!(rows[0]["health"], "up", "{}", rows[0]);
    assert!(rows[0]["check_duration_ms"].as_u64().unwrap_or(u64::MAX) < 300);
    let table = ctl(c, &["show", "servers"]);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.contains("health  check")),
        "{table}"
    );
    assert!(table.contains("HTTP 503"), "{table}");
    drop(f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_expect_speaks_to_a_redis_like_server() {
    let pong = free_addr();
    let err = free_addr();
    let _p = python(
        pong,
        "while True:\n    d = c.recv(64)\n    if not d:\n        break\n    c.sendall(b'+PONG\\r\\n' if d == b'PING\\r\\n' else b'-ERR\\r\\n')",
    );
    let _e = python(err, "c.recv(64)\nc.sendall(b'-ERR unknown command\\r\\n')");
    let (_f, c) = daemon(
        &[pong, err],
        "check = \"send-expect\", send = 'PING\\r\\n', expect = \"+PONG\"",
    );
    let (row, _) = wait_health(c, 0, "up", Duration::from_secs(5));
    assert_eq!(row["reason"], "ok");
    let (row, _) = wait_health(c, 1, "down", Duration::from_secs(5));
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("unexpected reply \"-ERR")),
        "{row}"
    );
    assert!(row["checks"].as_u64().unwrap_or(0) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maint_and_check_disable_from_the_control_port() {
    let a = Backend::start("s0").await;
    let b = Backend::start("s1").await;
    let (f, c) = daemon(&[a.addr, b.addr], "check = \"tcp\"");
    wait_health(c, 1, "up", Duration::from_secs(5));
    assert_eq!(ctl(c, &["server", "1", "maint"]), "server 1: maint\n");
    let seen = common::which_each(1..=10, f.listen).await;
    assert!(
        seen.iter().all(|s| s == "s0"),
        "maint gets no clients: {seen:?}"
    );
    assert_eq!(servers(c)[1]["health"], "maint");
    ctl(c, &["server", "1", "ready"]);
    wait_health(c, 1, "up", Duration::from_secs(5));
    // A drained server says so in its health, and is up again when enabled.
    ctl(c, &["drain", "1"]);
    assert_eq!(servers(c)[1]["health"], "drain");
    ctl(c, &["enable", "1"]);
    assert_eq!(servers(c)[1]["health"], "up");
    assert_eq!(
        ctl(c, &["server", "1", "check", "disable"]),
        "server 1: disabled\n"
    );
    // With its check disabled a dead server is no longer taken out by checks.
    b.stop();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(servers(c)[1]["health"], "disabled");
    ctl(c, &["server", "1", "check", "enable"]);
    let (row, _) = wait_health(c, 1, "down", Duration::from_secs(5));
    assert_eq!(row["reason"], "connect refused");
    f.assert_logged("server 1 check disabled by the operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_none_and_a_single_server_run_no_checks() {
    let a = Backend::start("s0").await;
    let listen = free_addr();
    // One server: no check by default (pen's behaviour).
    let f = Fwlb::balancing(listen, &[a.addr], "");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.count(), 0, "no connection but clients'");
    assert_eq!(which(1, f.listen).await, "s0");
    assert_eq!(a.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_health_state() {
    let a = Backend::start("s0").await;
    let dead = free_addr();
    let (f, c) = daemon(&[a.addr, dead], "check = \"tcp\"");
    wait_health(c, 1, "down", Duration::from_secs(5));
    let path = f.dir.path().join("fwlb.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    // The same servers with slower checks: the down server stays down, not `unchecked`.
    std::fs::write(
        &path,
        text.replace("interval = \"300ms\"", "interval = \"400ms\""),
    )
    .expect("write");
    f.signal("HUP");
    f.wait_log("in effect", Duration::from_secs(5));
    let rows = servers(c);
    assert_eq!(rows[1]["health"], "down", "{}", rows[1]);
    assert_eq!(rows[0]["health"], "up", "{}", rows[0]);
    f.assert_logged("reload: health check now tcp");
    assert_eq!(f.log().matches("is up").count(), 0, "{}", f.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowstart_ramps_a_returning_server_up() {
    let a = Backend::start("s0").await;
    let back = free_addr();
    let (f, c) = daemon_with(
        &[format!("{}:0:0:10", a.addr), format!("{back}:0:0:10")],
        "check = \"tcp\"",
        "algorithm = \"weight\"\nslowstart = \"20s\"",
    );
    wait_health(c, 1, "down", Duration::from_secs(5));
    let _b = Backend::start_on(back, "s1").await;
    wait_health(c, 1, "up", Duration::from_secs(5));
    // Just back, its weight is 1 or 2 of 10 against 10: a small share of 40 connections
    // held open (least connections per weight), not half.
    let mut open = Vec::new();
    for src in 1..=40 {
        open.push(common::greeted(src, f.listen).await);
    }
    let share = open.iter().filter(|(_, s)| s == "s1").count();
    assert!(share <= 10, "s1 got {share} of 40 right after coming back");
    assert!(share >= 1, "s1 gets some clients while it ramps up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_down_shutdown_cuts_established_connections_keep_does_not() {
    use tokio::io::AsyncReadExt;
    for (on_down, cut) in [("shutdown", true), ("keep", false)] {
        let a = Backend::start("s0").await;
        let b = Backend::start("s1").await;
        let (f, c) = daemon_with(
            &[a.addr.to_string(), b.addr.to_string()],
            "check = \"tcp\"",
            &format!("algorithm = \"roundrobin\"\non_down = \"{on_down}\""),
        );
        wait_health(c, 1, "up", Duration::from_secs(5));
        let mut on_s1 = Vec::new();
        for src in 1..=4 {
            let (s, name) = common::greeted(src, f.listen).await;
            if name == "s1" {
                on_s1.push(s);
            }
        }
        assert!(!on_s1.is_empty(), "round robin put a client on s1");
        // s1 stops accepting (its open connections stay): checks fail, it goes down.
        b.stop();
        wait_health(c, 1, "down", Duration::from_secs(5));
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(500), on_s1[0].read(&mut buf)).await;
        match (cut, read) {
            (true, Ok(Ok(0)) | Ok(Err(_))) => {
                f.assert_logged("connection(s) cut");
            }
            (false, Err(_)) => {}
            (cut, r) => panic!("on_down = {on_down} (cut {cut}): {r:?}\n{}", f.log()),
        }
    }
}

// ---- agent checks ----

/// A `fwlb echo --agent` on `ip`: its agent answers `text` on `port` (the echo port itself
/// is unused).
fn agent(ip: &str, port: u16, text: &str) -> Proc {
    let echo_addr: SocketAddr = format!("{ip}:{}", common::free_port())
        .parse()
        .expect("addr");
    let p = echo(echo_addr, &["--agent", &port.to_string(), text]);
    wait_listening(SocketAddr::new(echo_addr.ip(), port));
    p
}

/// Two backends on their own loopback addresses (so each has its own agent port), balanced
/// with agent checks on `port` and `extra` keys.
async fn agent_pair(port: u16, extra: &str) -> (Backend, Backend, Fwlb, SocketAddr) {
    let a = Backend::start_on("127.0.0.2:0".parse().expect("addr"), "s0").await;
    let b = Backend::start_on("127.0.0.3:0".parse().expect("addr"), "s1").await;
    let (f, c) = daemon_with(
        &[format!("{}:0:0:10", a.addr), format!("{}:0:0:10", b.addr)],
        "check = \"tcp\"",
        &format!("agent = {{ port = {port}, interval = \"150ms\", timeout = \"300ms\" }}\n{extra}"),
    );
    (a, b, f, c)
}

/// Wait until server `i`'s agent state is `want`; its JSON row.
fn wait_agent(c: SocketAddr, i: usize, want: &str) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    poll(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let row = servers(c).get(i).cloned().unwrap_or(Value::Null);
            *last.borrow_mut() = row.clone();
            (row["agent"]["state"] == want).then_some(row)
        },
        || format!("server {i}'s agent not {want}: {}", last.borrow()),
    )
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_drains_downs_and_brings_back_its_server_garbage_ignored() {
    let port = common::free_port();
    let _ok = agent("127.0.0.2", port, "up");
    let mut s1 = agent("127.0.0.3", port, "drain # upgrade");
    let (_a, _b, f, c) = agent_pair(port, "algorithm = \"roundrobin\"").await;
    let row = wait_agent(c, 1, "drain");
    assert_eq!(row["health"], "agent: drain", "{row}");
    wait_agent(c, 0, "up");
    f.assert_logged("agent: server 1 is now drain");
    for src in 1..=10 {
        assert_eq!(
            which(src, f.listen).await,
            "s0",
            "a drained server gets no new client"
        );
    }
    drop(s1);
    s1 = agent("127.0.0.3", port, "DOWN#disk full");
    let row = wait_agent(c, 1, "down");
    assert_eq!(row["health"], "agent: down (disk full)", "{row}");
    for src in 11..=16 {
        assert_eq!(which(src, f.listen).await, "s0");
    }
    drop(s1);
    // `up` clears the agent's down, `ready` its drain: s1 serves again.
    s1 = agent("127.0.0.3", port, "up,ready");
    wait_agent(c, 1, "up");
    let seen = common::which_each(20..30, f.listen).await;
    assert!(seen.iter().any(|s| s == "s1"), "{seen:?}");
    drop(s1);
    // Garbage is counted and changes nothing; nor does a dead agent.
    let _s1 = agent("127.0.0.3", port, "sideways 12x%");
    let row = poll(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let row = servers(c).get(1).cloned().unwrap_or(Value::Null);
            (row["agent"]["garbage"].as_u64() >= Some(2)).then_some(row)
        },
        || "no garbage counted".into(),
    )
    .0;
    assert_eq!(row["agent"]["state"], "up", "{row}");
    assert!(
        row["agent"]["last"]
            .as_str()
            .is_some_and(|l| l.starts_with("garbage")),
        "{row}"
    );
    let seen = common::which_each(40..50, f.listen).await;
    assert!(seen.iter().any(|s| s == "s1"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_percentage_scales_the_weight() {
    let port = common::free_port();
    let _a0 = agent("127.0.0.2", port, "up 100%");
    let _a1 = agent("127.0.0.3", port, "up 50%");
    let (_a, _b, f, c) = agent_pair(port, "algorithm = \"weight\"").await;
    let row = wait_agent(c, 1, "up 50%");
    assert_eq!(row["agent"]["effective_weight"], 5, "{row}");
    // Weights 10 and 5: s1 holds about a third of 60 open connections, not half.
    let mut open = Vec::new();
    for src in 1..=60 {
        open.push(common::greeted(src, f.listen).await);
    }
    let share = open.iter().filter(|(_, s)| s == "s1").count();
    assert!((12..=26).contains(&share), "s1 holds {share} of 60");
}

/// A supervisor restart in the middle of an incident: the server that was down stays out
/// until its checks say it is up, even though it came back while fwlb was not running. The
/// state file is saved on the health change itself (the daemon is killed, not stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_down_server_out_until_its_checks_pass() {
    let a = Backend::start("s0").await;
    let b_addr = free_addr();
    let state = tempfile::tempdir().expect("tempdir");
    let state_file = state.path().join("fwlb.state");
    let config = |listen: SocketAddr, ctl: SocketAddr| {
        format!(
            "[daemon]\ncontrol = \"{ctl}\"\nstate_file = \"{}\"\n[[balancer]]\nname = \"t\"\n\
             listen = \"{listen}\"\nservers = [\"{}\", \"{b_addr}\"]\nalgorithm = \"roundrobin\"\n\
             health = {{ check = \"tcp\", interval = \"300ms\", fast_interval = \"200ms\", \
             down_interval = \"300ms\", timeout = \"300ms\", rise = 5, fall = 1 }}\n",
            state_file.display(),
            a.addr
        )
    };
    let (listen, c) = (free_addr(), free_addr());
    let mut f = Fwlb::start(&config(listen, c), listen);
    wait_health(c, 1, "down", Duration::from_secs(5));
    // Saved by the change, not by a stop.
    let (saved, _) = poll(
        Duration::from_secs(3),
        Duration::from_millis(20),
        || {
            let text = std::fs::read_to_string(&state_file).unwrap_or_default();
            text.contains("\"down\"").then_some(text)
        },
        || format!("no down server in {}", state_file.display()),
    );
    assert!(saved.contains(&b_addr.to_string()), "{saved}");
    f.signal("KILL");
    f.wait_exit(Duration::from_secs(5));

    // The server comes back while fwlb is not running.
    let b = Backend::start_on(b_addr, "s1").await;
    let (listen, c) = (free_addr(), free_addr());
    let f = Fwlb::start(&config(listen, c), listen);
    let first = servers(c);
    assert!(
        first[1]["health"] == "down"
            || first[1]["health"]
                .as_str()
                .is_some_and(|h| h.starts_with("rising")),
        "restored as down, not up or unchecked: {}",
        first[1]
    );
    let early = which_each(1..=4, listen).await;
    assert!(early.iter().all(|s| s == "s0"), "{early:?} ({})", f.log());
    wait_health(c, 1, "up", Duration::from_secs(10));
    let later = which_each(1..=4, listen).await;
    assert!(later.iter().any(|s| s == "s1"), "{later:?}");
    drop(b);
}

/// A server written as a table has its own checks over the balancer's: here a TCP check for
/// the balancer, HTTP with its own path for two servers (one of which fails it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_its_own_health_is_checked_by_it() {
    let a = Backend::start("s0").await;
    let (b_addr, c_addr) = (free_addr(), free_addr());
    let _b = echo(b_addr, &["--fail-health", "/ready"]);
    let _c = echo(c_addr, &[]);
    let list = format!(
        "\"{}\", {{ address = \"{b_addr}\", health = {{ check = \"http\", path = \"/ready\" }} }}, \
         {{ address = \"{c_addr}\", health = {{ check = \"http\", path = \"/ok\" }} }}",
        a.addr
    );
    let (listen, c) = (free_addr(), free_addr());
    let cfg = format!(
        "[daemon]\ncontrol = \"{c}\"\n[[balancer]]\nname = \"t\"\nlisten = \"{listen}\"\n\
         servers = [{list}]\nhealth = {{ check = \"tcp\", {FAST} }}\n"
    );
    let _f = Fwlb::start(&cfg, listen);
    let (down, _) = wait_health(c, 1, "down", Duration::from_secs(5));
    assert_eq!(down["check"], "http", "{down}");
    assert_eq!(down["reason"], "HTTP 503", "{down}");
    let (up, _) = wait_health(c, 2, "up", Duration::from_secs(5));
    assert_eq!(
        (up["check"].as_str(), up["check_ok"].as_bool()),
        (Some("http"), Some(true)),
        "{up}"
    );
    // The plain server keeps the balancer's TCP check (an HTTP check of it would fail).
    let rows = servers(c);
    assert_eq!(
        (rows[0]["check"].as_str(), rows[0]["health"].as_str()),
        (Some("tcp"), Some("up")),
        "{}",
        rows[0]
    );
}
