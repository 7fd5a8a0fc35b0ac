//! The control commands: pen's, with pen's exact reply formats (pen-reference.md §2.4), and
//! fwlb's extensions (`show ...`, `drain`, `enable`), each with a JSON form (a last word `json`).
//! Commands act on the first balancer unless prefixed by `balancer NAME`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::Ctl;
use crate::balancer::pool::ServerState;
use crate::balancer::{Balancer, State, Switch};
use crate::config::{self, Algorithm};

pub struct Reply {
    pub text: String,
    /// An error reply (fwlb ctl exits non-zero on it).
    pub error: bool,
}

impl Reply {
    fn ok(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            error: false,
        }
    }

    fn none() -> Reply {
        Reply::ok("")
    }

    fn err(msg: impl std::fmt::Display) -> Reply {
        Reply {
            text: format!("error: {msg}\n"),
            error: true,
        }
    }

    fn json(v: Value) -> Reply {
        Reply::ok(format!("{v}\n"))
    }

    fn json_err(msg: impl std::fmt::Display) -> Reply {
        Reply {
            text: format!("{}\n", json!({ "error": msg.to_string() })),
            error: true,
        }
    }
}

/// pen's reply to a word it does not know.
fn unknown(word: &str) -> Reply {
    Reply {
        text: format!("do_cmd: ignoring command starting with '{word}'\n"),
        error: true,
    }
}

/// Parse a pen integer argument (atoi-like strictness is not kept: garbage is an error).
fn num<T: std::str::FromStr>(w: &str) -> Option<T> {
    w.parse().ok()
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// Run one command line. Commands that need the privileged parent or the disk await them;
/// the rest run at once.
pub async fn execute(ctl: &Ctl, words: &[&str]) -> Reply {
    let Some(&first) = words.first() else {
        return Reply::none();
    };
    if first == "show" && words.get(1) == Some(&"vrrp") {
        return show_vrrp(ctl, words.last() == Some(&"json"));
    }
    if first == "vrrp" {
        return vrrp_operator(ctl, words);
    }
    if matches!(first, "ban" | "unban") || (first == "show" && words.get(1) == Some(&"bans")) {
        return bans(ctl, words).await;
    }
    if first == "pid" {
        return Reply::ok(format!("{}\n", ctl.pid()));
    }
    if ctl.balancers.is_empty() {
        return Reply::err(
            "no balancer configured (only `show vrrp`, `vrrp standby|resume` and `pid` work without one)",
        );
    }
    // `balancer NAME CMD...` picks the balancer; `balancers` lists them.
    let (lb, words) = if first == "balancer" {
        let Some(name) = words.get(1) else {
            return Reply::err("usage: balancer NAME COMMAND");
        };
        match ctl.balancers.iter().find(|b| b.cfg.name == *name) {
            Some(b) => (b, &words[2..]),
            None => return Reply::err(format!("no balancer named {name:?}")),
        }
    } else {
        (&ctl.balancers[0], words)
    };
    let Some(&cmd) = words.first() else {
        return Reply::err("usage: balancer NAME COMMAND");
    };
    let json = words.len() > 1 && words.last() == Some(&"json");
    let args: &[&str] = if json {
        &words[1..words.len() - 1]
    } else {
        &words[1..]
    };
    if cmd == "write" {
        return write_cmd(ctl, lb, args.first().copied()).await;
    }
    let r = run(ctl, lb, cmd, args, json);
    if r.mutated {
        // A server drained, blacklisted, moved or added: VRRP `track` may see it.
        lb.refresh_availability();
        ctl.save_state().await;
    }
    r.reply
}

struct Outcome {
    reply: Reply,
    mutated: bool,
}

fn read(reply: Reply) -> Outcome {
    Outcome {
        reply,
        mutated: false,
    }
}

fn changed(reply: Reply) -> Outcome {
    let mutated = !reply.error;
    Outcome { reply, mutated }
}

fn run(ctl: &Ctl, lb: &Arc<Balancer>, cmd: &str, args: &[&str], json: bool) -> Outcome {
    let arg = args.first().copied();
    match cmd {
        "servers" => read(Reply::ok(pen_servers(&lb.lock()))),
        "server" => changed(server_cmd(lb, args)),
        "blacklist" => duration_setting(lb, arg, |st| &mut st.settings.blacklist, 0),
        "timeout" => duration_setting(lb, arg, |st| &mut st.settings.connect_timeout, 1),
        "tracking" => tracking(lb, arg),
        "idle_timeout" => idle_timeout(lb, arg),
        "mode" => read(Reply::ok(mode_line(&lb.lock()))),
        "roundrobin" | "hash" | "weight" | "prio" | "stubborn" => changed(set_mode(lb, cmd, true)),
        "no" => match arg {
            Some(w @ ("roundrobin" | "hash" | "weight" | "prio" | "stubborn")) => {
                changed(set_mode(lb, w, false))
            }
            // pen ignores `no X` for any other X.
            _ => read(Reply::none()),
        },
        "http" => read(Reply::err(
            "http: X-Forwarded-For is not in this version of fwlb",
        )),
        // fwlb always sets TCP_NODELAY and picks its own poller (epoll, kqueue): accepted, nothing
        // to do.
        "tcp_nodelay" | "ascii" | "epoll" | "poll" | "select" | "kqueue" | "pending_max" => {
            read(Reply::none())
        }
        "recent" => read(recent(lb, arg)),
        "clients_max" | "conn_max" => read(limit(lb, cmd, arg)),
        "pid" | "control" | "debug" | "exit" => read(daemon_cmd(ctl, cmd, arg)),
        "status" => read(Reply::ok(status_html(ctl, lb))),
        "show" => read(show(ctl, lb, args, json)),
        "drain" | "enable" => changed(drain_enable(lb, cmd == "drain", arg, json)),
        "balancers" => read(balancers(ctl, json)),
        "help" => read(Reply::ok(HELP)),
        other => read(unknown(other)),
    }
}

/// `tracking [SECONDS]`: how long a client is remembered.
fn tracking(lb: &Balancer, arg: Option<&str>) -> Outcome {
    let mut st = lb.lock();
    if let Some(a) = arg {
        let Some(n) = num::<u64>(a) else {
            return read(Reply::err(format!("tracking: {a:?} is not a number")));
        };
        st.clients.set_tracking(Duration::from_secs(n));
        return changed(Reply::ok(format!("{n}\n")));
    }
    read(Reply::ok(format!("{}\n", secs(st.clients.tracking()))))
}

/// `idle_timeout [SECONDS]`.
fn idle_timeout(lb: &Balancer, arg: Option<&str>) -> Outcome {
    let mut st = lb.lock();
    let mut out = read(Reply::none());
    if let Some(a) = arg {
        let Some(n) = num::<u64>(a) else {
            return read(Reply::err(format!("idle_timeout: {a:?} is not a number")));
        };
        st.settings.idle_timeout = Duration::from_secs(n);
        out.mutated = true;
    }
    out.reply = Reply::ok(format!(
        "Idle timeout: {} seconds\n",
        secs(st.settings.idle_timeout)
    ));
    out
}

/// `clients_max [N]`, `conn_max [N]`: table sizes, which only grow.
fn limit(lb: &Balancer, cmd: &str, arg: Option<&str>) -> Reply {
    let n = arg.and_then(num::<usize>);
    if cmd == "clients_max" {
        let mut st = lb.lock();
        if let Some(n) = n {
            st.clients.grow(n);
        }
        return Reply::ok(format!("{}\n", st.clients.capacity()));
    }
    if let Some(n) = n {
        lb.grow_max_connections(n);
    }
    Reply::ok(format!("{}\n", lb.max_connections()))
}

/// `pid`, `control`, `debug [N]`, `exit`: the daemon's, not a balancer's.
fn daemon_cmd(ctl: &Ctl, cmd: &str, arg: Option<&str>) -> Reply {
    match cmd {
        "pid" => Reply::ok(format!("{}\n", ctl.pid())),
        "control" => Reply::ok(format!("{}\n", ctl.control)),
        "debug" => {
            if let Some(a) = arg {
                match num::<u8>(a) {
                    Some(n) => ctl.set_debug(n),
                    None => return Reply::err(format!("debug: {a:?} is not a number")),
                }
            }
            Reply::ok(format!("{}\n", ctl.debug.load(Ordering::Relaxed)))
        }
        _ if ctl.exit_enabled => {
            ctl.exit.notify_one();
            Reply::none()
        }
        _ => Reply {
            text: "Exit is not enabled; restart with -X flag\n".into(),
            error: true,
        },
    }
}

/// `balancers`: their names; the JSON form adds the listen addresses (`fwlb drill` sends its
/// load there).
fn balancers(ctl: &Ctl, json: bool) -> Reply {
    if json {
        return Reply::json(json!({
            "balancers": ctl.balancers.iter().map(|b| json!({
                "name": b.cfg.name,
                "listen": b.cfg.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        }));
    }
    Reply::ok(
        ctl.balancers
            .iter()
            .map(|b| format!("{}\n", b.cfg.name))
            .collect::<String>(),
    )
}

const HELP: &str = "\
pen commands: servers, server N [address A] [port P] [max M] [hard H] [blacklist T] [weight W] [prio P],
  blacklist [T], tracking [T], timeout [T], idle_timeout [T], mode, [no] roundrobin|hash|weight|prio|stubborn,
  recent [S], clients_max [N], conn_max [N], pid, control, debug [N], exit, status, write [FILE]
fwlb commands: show servers|conns|stats|clients [json], drain N, enable N, balancers,
  server N check disable|enable, server N maint|ready,
  balancer NAME COMMAND... (any command, on that balancer),
  show vrrp [json], vrrp standby|resume [VRID|all] [json]
";

fn duration_setting(
    lb: &Balancer,
    arg: Option<&str>,
    field: impl Fn(&mut State) -> &mut Duration,
    min: u64,
) -> Outcome {
    let mut st = lb.lock();
    let mut mutated = false;
    if let Some(a) = arg {
        match num::<u64>(a) {
            Some(n) if n >= min => {
                *field(&mut st) = Duration::from_secs(n);
                mutated = true;
            }
            _ => {
                return read(Reply::err(format!(
                    "{a:?} is not a number of seconds (at least {min})"
                )));
            }
        }
    }
    Outcome {
        reply: Reply::ok(format!("{}\n", secs(*field(&mut st)))),
        mutated,
    }
}

/// pen's `mode` line.
pub fn mode_line(st: &State) -> String {
    let s = &st.settings;
    let f = |on: bool| if on { "" } else { "no " };
    format!(
        "{}hash {}roundrobin {}stubborn {}weight {}prio\n",
        f(s.base == Algorithm::Hash),
        f(!s.sticky),
        f(s.stubborn),
        f(s.base == Algorithm::Weight),
        f(s.base == Algorithm::Prio)
    )
}

fn set_mode(lb: &Balancer, word: &str, on: bool) -> Reply {
    let mut st = lb.lock();
    let s = &mut st.settings;
    match (word, on) {
        ("roundrobin", on) => s.sticky = !on,
        ("stubborn", on) => s.stubborn = on,
        (w, true) => {
            s.base = match w {
                "hash" => Algorithm::Hash,
                "weight" => Algorithm::Weight,
                _ => Algorithm::Prio,
            }
        }
        (w, false) => {
            let cur = match w {
                "hash" => Algorithm::Hash,
                "weight" => Algorithm::Weight,
                _ => Algorithm::Prio,
            };
            if s.base == cur {
                s.base = Algorithm::RoundRobin;
            }
        }
    }
    st.reselect();
    Reply::none()
}

/// pen's `servers` lines.
pub fn pen_servers(st: &State) -> String {
    let mut out = String::new();
    for (i, s) in st.servers.iter().enumerate() {
        let c = &s.cfg;
        // A server given by name without a trusted address: pen's "no address".
        let ip = if s.unresolved {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            c.addr.ip()
        };
        let _ = writeln!(
            out,
            "{i} addr {} port {} conn {} max {} hard {} weight {} prio {} sx {} rx {}",
            ip,
            c.addr.port(),
            s.conns,
            c.max,
            c.hard,
            c.weight,
            c.prio,
            s.sx,
            s.rx
        );
    }
    out
}

/// pen's `server N key value ...`: keyword/value pairs in any order, unknown keys ignored, an
/// index beyond the list grows it with empty slots, a bad address stops the parsing.
fn server_cmd(lb: &Balancer, args: &[&str]) -> Reply {
    let Some(n) = args.first().and_then(|w| num::<i64>(w)) else {
        return Reply::err(
            "usage: server N [address A] [port P] [max M] [hard H] [blacklist T] [weight W] [prio P]",
        );
    };
    if n < 0 {
        return Reply::none();
    }
    let n = n as usize;
    if let Some(r) = health_switch(lb, n, &args[1..]) {
        return r;
    }
    if n >= 1 << 16 {
        return Reply::err(format!("server index {n} is too large"));
    }
    let mut st = lb.lock();
    let grew = n >= st.servers.len();
    while st.servers.len() <= n {
        st.servers.push(ServerState::empty());
    }
    let now = Instant::now();
    let mut reselect = grew;
    let mut it = args[1..].chunks(2);
    for kv in &mut it {
        let [k, v] = kv else { break };
        let s = &mut st.servers[n];
        match *k {
            "address" => match v.parse::<IpAddr>() {
                Ok(ip) => {
                    s.cfg.addr = SocketAddr::new(ip, s.cfg.addr.port());
                    // The operator's address wins over a name's: DNS no longer moves it.
                    s.cfg.name = None;
                    s.unresolved = false;
                    reselect = true;
                }
                Err(_) => {
                    return Reply::err(format!("server {n}: {v:?} is not an IP address"));
                }
            },
            "port" => match num::<u16>(v) {
                Some(p) => {
                    s.cfg.addr.set_port(p);
                    reselect = true;
                }
                None => return Reply::err(format!("server {n}: port {v:?} is not a port")),
            },
            "max" => s.cfg.max = num(v).unwrap_or(s.cfg.max),
            "hard" => s.cfg.hard = num(v).unwrap_or(s.cfg.hard),
            "weight" => {
                s.cfg.weight = num(v).unwrap_or(s.cfg.weight);
                reselect = true;
            }
            "prio" => s.cfg.prio = num(v).unwrap_or(s.cfg.prio),
            "blacklist" => match num::<u64>(v) {
                Some(0) => s.blacklisted_until = None,
                Some(t) => s.blacklisted_until = Some(now + Duration::from_secs(t)),
                None => return Reply::err(format!("server {n}: blacklist {v:?} is not a number")),
            },
            // pen ignores keys it does not know (acl among them).
            _ => {}
        }
    }
    if reselect {
        st.reselect();
    }
    Reply::none()
}

/// fwlb's `server N check disable|enable` and `server N maint|ready`; None for pen's forms.
fn health_switch(lb: &Balancer, n: usize, args: &[&str]) -> Option<Reply> {
    let what = match args {
        ["check", "disable"] => Switch::Check(false),
        ["check", "enable"] => Switch::Check(true),
        ["check", ..] => return Some(Reply::err("usage: server N check disable|enable")),
        ["maint"] => Switch::Maint(true),
        ["ready"] => Switch::Maint(false),
        _ => return None,
    };
    Some(match lb.set_health_switch(n, what) {
        Ok(label) => Reply::ok(format!("server {n}: {label}\n")),
        Err(e) => Reply::err(e),
    })
}

fn recent(lb: &Balancer, arg: Option<&str>) -> Reply {
    let window = Duration::from_secs(arg.and_then(num::<u64>).unwrap_or(300));
    let now = Instant::now();
    let st = lb.lock();
    let mut rows: Vec<_> = st
        .clients
        .iter()
        .filter(|(_, e)| now.saturating_duration_since(e.last) <= window)
        .collect();
    rows.sort_by_key(|(_, e)| std::cmp::Reverse(e.last));
    let mut out = String::new();
    for (ip, e) in rows {
        let _ = writeln!(out, "{ip} connects {} sx {} rx {}", e.connects, e.sx, e.rx);
    }
    Reply::ok(out)
}

fn drain_enable(lb: &Balancer, drain: bool, arg: Option<&str>, json: bool) -> Reply {
    let mut st = lb.lock();
    let n = st.servers.len();
    let Some(i) = arg.and_then(num::<usize>).filter(|i| *i < n) else {
        let msg = format!(
            "usage: {} N, with N a server index 0..{}",
            if drain { "drain" } else { "enable" },
            n.saturating_sub(1)
        );
        return if json {
            Reply::json_err(msg)
        } else {
            Reply::err(msg)
        };
    };
    let s = &mut st.servers[i];
    s.draining = drain;
    if !drain {
        s.blacklisted_until = None;
    }
    let addr = s.cfg.addr;
    let open = s.conns;
    if json {
        return Reply::json(
            json!({ "server": i, "address": addr.to_string(), "draining": drain, "connections": open }),
        );
    }
    if drain {
        Reply::ok(format!(
            "server {i} ({addr}) drained: no new clients, {open} open connection(s) finish\n"
        ))
    } else {
        Reply::ok(format!("server {i} ({addr}) enabled\n"))
    }
}

/// `primary`: the lowest SRV priority in the answer (servers of a higher one are backups).
fn server_state(s: &ServerState, now: Instant, primary: Option<u16>) -> &'static str {
    if s.cfg.addr.port() == 0 {
        "empty"
    } else if s.obsolete() {
        "obsolete"
    } else if s.unresolved {
        "unresolved"
    } else if s.draining {
        "draining"
    } else if s.blacklisted(now) {
        "blacklisted"
    } else if s
        .srv
        .as_ref()
        .zip(primary)
        .is_some_and(|(o, p)| o.priority > p)
    {
        "backup"
    } else {
        "up"
    }
}

/// Where an SRV-made server comes from (null for the others).
fn srv_json(s: &ServerState) -> Value {
    s.srv.as_ref().map_or(Value::Null, |o| {
        json!({ "target": o.target, "port": o.port, "priority": o.priority,
                "weight": o.weight, "obsolete": o.obsolete })
    })
}

/// Health by the active checks (`up`, `down`, `rising 1/2`, `falling 2/3`, `maint` ...);
/// without them, as seen passively: `failing` while blacklisted, else `unchecked`. The
/// agent's say, when it keeps the server from clients, comes first (`agent: drain`).
/// What keeps a server from new clients, most binding first: the operator's maint, no
/// address, its agent's say, a drain; else its checks' verdict.
fn health(s: &ServerState, h: &config::Health, now: Instant) -> String {
    if s.health.maint {
        return "maint".into();
    }
    if s.unresolved {
        return "unresolved".into();
    }
    if let Some(why) = s.agent.reason() {
        return why;
    }
    if s.draining {
        return "drain".into();
    }
    checks_health(s, h, now)
}

fn checks_health(s: &ServerState, h: &config::Health, now: Instant) -> String {
    if h.check == config::Check::None && !s.health.maint {
        let passive = if s.blacklisted(now) {
            "failing"
        } else {
            "unchecked"
        };
        return passive.into();
    }
    s.health.label(h)
}

/// The agent check's view of a server (null without one).
fn agent_json(s: &ServerState, h: &config::Health) -> Value {
    if h.agent.is_none() {
        return Value::Null;
    }
    let a = &s.agent;
    json!({
        "state": a.label(), "reason": a.reason(), "weight_pct": a.weight_pct,
        "effective_weight": a.weight(s.cfg.weight), "last": a.last,
        "answers": a.answers, "garbage": a.garbage, "failures": a.failures,
    })
}

/// The last check: `ok`, or its reason, and how long it took ("-" before the first).
fn last_check(s: &ServerState) -> (String, String) {
    s.health
        .last
        .as_ref()
        .map_or(("-".into(), "-".into()), |o| {
            (o.reason.clone(), format!("{}ms", o.took.as_millis()))
        })
}

/// How long the server has been in its health state, in whole seconds.
fn since(s: &ServerState, now: Instant) -> u64 {
    now.saturating_duration_since(s.health.since).as_secs()
}

/// Render rows as columns aligned on the widest cell.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = w[i]))
            .collect();
        let _ = writeln!(out, "{}", s.join("  ").trim_end());
    };
    line(&mut out, head.to_vec());
    for r in rows {
        line(&mut out, r.iter().map(String::as_str).collect());
    }
    out
}

fn show(ctl: &Ctl, lb: &Balancer, args: &[&str], json: bool) -> Reply {
    let now = Instant::now();
    match args.first().copied() {
        Some("servers") => show_servers(lb, json, now),
        Some("conns") => show_conns(lb, json, now),
        Some("stats") => show_stats(ctl, lb, json),
        Some("clients") => show_clients(lb, json, now),
        Some("vrrp") => show_vrrp(ctl, json),
        Some(other) => Reply::err(format!(
            "show: unknown object {other:?} (servers, conns, stats, clients)"
        )),
        None => Reply::err("usage: show servers|conns|stats|clients [json]"),
    }
}

/// `show servers`: every server (and the emergency server) with its state and counters.
fn show_servers(lb: &Balancer, json: bool, now: Instant) -> Reply {
    let st = lb.lock();
    let mut all: Vec<(String, &ServerState)> = st
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| (i.to_string(), s))
        .collect();
    if let Some(e) = &st.emergency {
        all.push(("emergency".into(), e));
    }
    let lb_health = &st.settings.health;
    let primary = st.srv_primary();
    if json {
        let v: Vec<Value> = all
            .iter()
            .map(|(i, s)| {
                let h = s.cfg.health_or(lb_health);
                let last = s.health.last.as_ref();
                json!({
                    "index": i, "address": address(s), "name": s.cfg.name,
                    "state": server_state(s, now, primary), "srv": srv_json(s),
                    "blacklist_left_ms": s.blacklist_left(now).map(|d| d.as_millis() as u64),
                    "health": health(s, h, now), "check": h.check.name(),
                    "check_ok": last.map(|o| o.ok), "reason": last.map(|o| o.reason.clone()),
                    "check_duration_ms": last.map(|o| o.took.as_millis() as u64),
                    "since_s": since(s, now), "checks": s.health.checks,
                    "check_failures": s.health.check_failures, "agent": agent_json(s, h),
                    "connections": s.conns, "total": s.total,
                    "failures": s.failures, "sent_bytes": s.sx, "received_bytes": s.rx,
                    "weight": s.cfg.weight, "prio": s.cfg.prio, "max": s.cfg.max, "hard": s.cfg.hard,
                })
            })
            .collect();
        return Reply::json(json!({ "balancer": lb.cfg.name, "servers": v }));
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|(i, s)| server_row(i, s, s.cfg.health_or(lb_health), now, primary))
        .collect();
    Reply::ok(table(
        &[
            "#",
            "address",
            "name",
            "state",
            "blacklist",
            "health",
            "check",
            "took",
            "since",
            "conns",
            "total",
            "failures",
            "sent",
            "received",
            "weight",
            "prio",
            "max",
            "hard",
        ],
        &rows,
    ))
}

/// The current address, or `unresolved` for a server given by name without one.
fn address(s: &ServerState) -> String {
    if s.unresolved {
        "unresolved".into()
    } else {
        s.cfg.addr.to_string()
    }
}

fn server_row(
    index: &str,
    s: &ServerState,
    h: &config::Health,
    now: Instant,
    primary: Option<u16>,
) -> Vec<String> {
    let (reason, took) = last_check(s);
    vec![
        index.to_string(),
        address(s),
        s.cfg.name.clone().unwrap_or_else(|| "-".into()),
        server_state(s, now, primary).into(),
        s.blacklist_left(now).map_or("-".into(), |d| {
            format!("{}s", d.as_secs() + u64::from(d.subsec_millis() > 0))
        }),
        health(s, h, now),
        reason,
        took,
        format!("{}s", since(s, now)),
        s.conns.to_string(),
        s.total.to_string(),
        s.failures.to_string(),
        s.sx.to_string(),
        s.rx.to_string(),
        s.cfg.weight.to_string(),
        s.cfg.prio.to_string(),
        s.cfg.max.to_string(),
        s.cfg.hard.to_string(),
    ]
}

/// `show conns`: every open connection, both 5-tuples, bytes and age.
fn show_conns(lb: &Balancer, json: bool, now: Instant) -> Reply {
    // Local addresses are read under the lock, while every listed socket is open.
    let conns: Vec<_> = {
        let st = lb.lock();
        st.conns.values().map(|c| (c.clone(), c.local())).collect()
    };
    if json {
        let v: Vec<Value> = conns
            .iter()
            .map(|(c, local)| {
                let (up, down) = c.bytes.totals();
                json!({
                    "id": c.id, "client": c.client.to_string(), "listen": c.listen.to_string(),
                    "local": local.to_string(), "server": c.server.to_string(),
                    "server_index": c.server_index,
                    "bytes_in": up,
                    "bytes_out": down,
                    "age_ms": now.saturating_duration_since(c.started).as_millis() as u64,
                })
            })
            .collect();
        return Reply::json(json!({ "balancer": lb.cfg.name, "conns": v }));
    }
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|(c, local)| {
            let (up, down) = c.bytes.totals();
            vec![
                c.id.to_string(),
                format!("{} -> {}", c.client, c.listen),
                format!("{local} -> {}", c.server),
                up.to_string(),
                down.to_string(),
                format!(
                    "{:.1}s",
                    now.saturating_duration_since(c.started).as_secs_f64()
                ),
            ]
        })
        .collect();
    Reply::ok(table(
        &[
            "id",
            "client -> listen",
            "local -> server",
            "in",
            "out",
            "age",
        ],
        &rows,
    ))
}

/// `show stats`: the balancer's counters, one per line (or one JSON object).
fn show_stats(ctl: &Ctl, lb: &Balancer, json: bool) -> Reply {
    let s = &lb.stats;
    let st = lb.lock();
    let v = json!({
        "balancer": lb.cfg.name,
        "uptime_s": ctl.started.elapsed().as_secs(),
        "algorithm": mode_line(&st).trim_end(),
        "active": lb.active(),
        "accepted": s.accepted.load(Ordering::Relaxed),
        "served": s.served.load(Ordering::Relaxed),
        "no_server": s.no_server.load(Ordering::Relaxed),
        "connect_failures": s.connect_failures.load(Ordering::Relaxed),
        "idle_closed": s.idle_closed.load(Ordering::Relaxed),
        "proxy_errors": s.proxy_errors.load(Ordering::Relaxed),
        "bad_requests": s.bad_requests.load(Ordering::Relaxed),
        "head_timeouts": s.head_timeouts.load(Ordering::Relaxed),
        "fd_exhausted": s.fd_exhausted.load(Ordering::Relaxed),
        "dns_refused": s.dns_refused.load(Ordering::Relaxed),
        "clients": st.clients.len(),
        "max_connections": lb.max_connections(),
    });
    if json {
        return Reply::json(v);
    }
    let mut out = String::new();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let _ = writeln!(
                out,
                "{k:<18} {}",
                val.as_str().map_or(val.to_string(), str::to_string)
            );
        }
    }
    Reply::ok(out)
}

/// `show clients`: the client table, most recent first.
fn show_clients(lb: &Balancer, json: bool, now: Instant) -> Reply {
    let st = lb.lock();
    let mut rows: Vec<_> = st.clients.iter().collect();
    rows.sort_by_key(|(_, e)| std::cmp::Reverse(e.last));
    if json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(ip, e)| json!({ "client": ip.to_string(), "server": e.server, "connects": e.connects, "sent_bytes": e.sx, "received_bytes": e.rx, "idle_ms": now.saturating_duration_since(e.last).as_millis() as u64 }))
            .collect();
        return Reply::json(json!({ "balancer": lb.cfg.name, "clients": v }));
    }
    let r: Vec<Vec<String>> = rows
        .iter()
        .map(|(ip, e)| {
            vec![
                ip.to_string(),
                e.server.map_or("emergency".into(), |s| s.to_string()),
                e.connects.to_string(),
                e.sx.to_string(),
                e.rx.to_string(),
                format!("{}s", now.saturating_duration_since(e.last).as_secs()),
            ]
        })
        .collect();
    Reply::ok(table(
        &["client", "server", "connects", "sent", "received", "idle"],
        &r,
    ))
}

/// `ban IP... [DURATION]`, `unban IP...`, `show bans [json]`: the firewall's dynamic ban
/// sets, changed without reloading the rules. The parent applies one command's addresses in
/// one transaction; this task waits for it, the control-plane thread does not.
async fn bans(ctl: &Ctl, words: &[&str]) -> Reply {
    use crate::privsep::Request;
    let (true, Some(parent)) = (ctl.firewall, &ctl.privileged) else {
        return Reply::err("no firewall installed ([firewall] backend = \"nftables\")");
    };
    let (req, what) = match words {
        ["ban", rest @ ..] if !rest.is_empty() => match ban_args(rest) {
            Ok((ips, secs)) => (Request::Ban { ips, secs }, "ban"),
            Err(e) => return Reply::err(format!("ban: {e}")),
        },
        ["unban", rest @ ..] if !rest.is_empty() => match addresses(rest) {
            Ok(ips) => (Request::Unban { ips }, "unban"),
            Err(e) => return Reply::err(format!("unban: {e}")),
        },
        ["show", "bans"] | ["show", "bans", "json"] => {
            return show_bans(parent, words.last() == Some(&"json")).await;
        }
        _ => return Reply::err("usage: ban IP... [DURATION] | unban IP... | show bans [json]"),
    };
    match parent_call(parent.call_ok(req)).await {
        Ok(()) => Reply::none(),
        Err(e) => Reply::err(format!("{what}: {e}")),
    }
}

/// How long a control command waits for the privileged parent before it answers an error
/// (the request may still be carried out: `show bans` tells).
const PARENT_TIMEOUT: Duration = Duration::from_secs(30);

async fn parent_call<T>(f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(PARENT_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from the privileged parent in {} s",
                PARENT_TIMEOUT.as_secs()
            ))
        })
}

/// `IP... [DURATION]`: the addresses, and the ban's length in seconds (at least one).
fn ban_args(words: &[&str]) -> Result<(Vec<IpAddr>, Option<u64>), String> {
    let (ips, timeout) = match words.split_last() {
        Some((last, ips)) if last.parse::<IpAddr>().is_err() && !ips.is_empty() => {
            let d = crate::config::duration::parse(last).map_err(|e| e.to_string())?;
            (ips, Some(d.as_secs().max(1)))
        }
        _ => (words, None),
    };
    Ok((addresses(ips)?, timeout))
}

fn addresses(words: &[&str]) -> Result<Vec<IpAddr>, String> {
    words
        .iter()
        .map(|w| w.parse().map_err(|_| format!("{w:?} is not an IP address")))
        .collect()
}

async fn show_bans(parent: &crate::privsep::Client, json: bool) -> Reply {
    use crate::privsep::{Reply as P, Request};
    let bans = match parent_call(parent.call(Request::ListBans)).await {
        Ok(a) => match a.reply {
            P::Bans(b) => b,
            P::Error(e) => return Reply::err(format!("show bans: {e}")),
            other => return Reply::err(format!("show bans: unexpected {other:?}")),
        },
        Err(e) => return Reply::err(format!("show bans: {e}")),
    };
    if json {
        let v: Vec<Value> = bans
            .iter()
            .map(|(ip, ms)| json!({ "ip": ip.to_string(), "timeout_ms": ms }))
            .collect();
        return Reply::json(json!({ "bans": v }));
    }
    let rows: Vec<Vec<String>> = bans
        .iter()
        .map(|(ip, ms)| {
            let left = ms.map_or("permanent".into(), |ms| format!("{}s", ms.div_ceil(1000)));
            vec![ip.to_string(), left]
        })
        .collect();
    Reply::ok(table(&["ip", "timeout"], &rows))
}

/// `show vrrp`: every VRRP instance (works without any balancer).
/// `vrrp standby [VRID|all]`: hand mastership over on purpose (priority 0 adverts; the VIPs
/// stay until a peer takes over; no preemption until resumed). `vrrp resume [VRID|all]`.
fn vrrp_operator(ctl: &Ctl, words: &[&str]) -> Reply {
    use crate::vrrp::status::Operator;
    let json = words.last() == Some(&"json");
    let args: &[&str] = if json {
        &words[1..words.len() - 1]
    } else {
        &words[1..]
    };
    let err = |m: String| {
        if json {
            Reply::json_err(m)
        } else {
            Reply::err(m)
        }
    };
    let (Some(status), Some(tx)) = (&ctl.vrrp, &ctl.vrrp_operator) else {
        return err("vrrp: no [[vrrp]] configured".into());
    };
    let configured: Vec<u8> = status.borrow().iter().map(|i| i.vrid).collect();
    let (what, target) = match args {
        [w @ ("standby" | "resume")] | [w @ ("standby" | "resume"), "all"] => (*w, None),
        [w @ ("standby" | "resume"), v] => match v.parse::<u8>() {
            Ok(n) if configured.contains(&n) => (*w, Some(n)),
            _ => {
                return err(format!(
                    "vrrp {w}: no VRID {v:?} here (configured: {configured:?})"
                ));
            }
        },
        _ => return err("usage: vrrp standby|resume [VRID|all]".into()),
    };
    let req = if what == "standby" {
        Operator::Standby(target)
    } else {
        Operator::Resume(target)
    };
    if tx.send(req).is_err() {
        return err("vrrp: the speaker is not running".into());
    }
    let vrids: Vec<u8> = target.map_or(configured, |v| vec![v]);
    if json {
        return Reply::json(json!({ "vrrp": what, "vrids": vrids }));
    }
    let list: Vec<String> = vrids.iter().map(|v| v.to_string()).collect();
    Reply::ok(format!("{what}: vrid {}\n", list.join(" ")))
}

fn show_vrrp(ctl: &Ctl, json: bool) -> Reply {
    let Some(status) = &ctl.vrrp else {
        return Reply::err("show vrrp: no [[vrrp]] configured");
    };
    // Cloned so the speaker is never kept waiting while the reply is formatted.
    let rows: Vec<crate::vrrp::status::InstanceStatus> = status.borrow().clone();
    if json {
        return Reply::json(json!({ "vrrp": rows }));
    }
    let r: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.vrid.to_string(),
                s.interface.clone(),
                s.state.to_string(),
                s.priority.to_string(),
                s.effective_priority.to_string(),
                s.master.clone().unwrap_or_else(|| "-".into()),
                s.transitions.to_string(),
                s.adverts_sent.to_string(),
                s.adverts_received.to_string(),
                s.dropped.values().sum::<u64>().to_string(),
                if s.standby { "yes" } else { "no" }.to_string(),
                priority_why(s),
            ]
        })
        .collect();
    Reply::ok(table(
        &[
            "vrid",
            "interface",
            "state",
            "prio",
            "effective",
            "master",
            "transitions",
            "sent",
            "received",
            "dropped",
            "standby",
            "why",
        ],
        &r,
    ))
}

/// The `why` column: how the effective priority comes from the configured one, e.g.
/// `100, www: no healthy server -60`, or `-` when it is the configured one.
fn priority_why(s: &crate::vrrp::status::InstanceStatus) -> String {
    if s.why.is_empty() {
        return "-".into();
    }
    format!("{}, {}", s.priority, s.why.join(", "))
}

/// pen's `write`: the running settings as pen commands, readable by `fwlb pen -F`.
async fn write_cmd(ctl: &Ctl, lb: &Balancer, arg: Option<&str>) -> Reply {
    let path = match (arg, &ctl.pen_file) {
        (Some(a), _) => std::path::PathBuf::from(a),
        (None, Some(p)) => p.clone(),
        (None, None) => return Reply::err("write: no FILE given and no -F file"),
    };
    let text = pen_config(lb);
    let to = path.clone();
    match tokio::task::spawn_blocking(move || std::fs::write(&to, text)).await {
        Ok(Ok(())) => Reply::none(),
        Ok(Err(e)) => Reply::err(format!("write {}: {e}", path.display())),
        Err(e) => Reply::err(format!("write {}: {e}", path.display())),
    }
}

pub fn pen_config(lb: &Balancer) -> String {
    let st = lb.lock();
    let s = &st.settings;
    let mut out = String::new();
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(out, "# Generated by fwlb at unix time {ts}");
    let onoff = |on: bool, w: &str| if on { w.to_string() } else { format!("no {w}") };
    let _ = writeln!(out, "blacklist {}", secs(s.blacklist));
    let _ = writeln!(out, "{}", onoff(s.base == Algorithm::Hash, "hash"));
    let _ = writeln!(out, "{}", onoff(!s.sticky, "roundrobin"));
    for (i, sv) in st.servers.iter().enumerate() {
        let c = &sv.cfg;
        let _ = writeln!(
            out,
            "server {i} address {} port {} max {} hard {} weight {} prio {}",
            c.addr.ip(),
            c.addr.port(),
            c.max,
            c.hard,
            c.weight,
            c.prio
        );
    }
    let _ = writeln!(out, "{}", onoff(s.stubborn, "stubborn"));
    let _ = writeln!(out, "timeout {}", secs(s.connect_timeout));
    let _ = writeln!(out, "tracking {}", secs(st.clients.tracking()));
    let _ = writeln!(out, "{}", onoff(s.base == Algorithm::Weight, "weight"));
    let _ = writeln!(out, "{}", onoff(s.base == Algorithm::Prio, "prio"));
    out
}

/// pen's status page (`pen.c:webstats`), same structure.
fn status_html(ctl: &Ctl, lb: &Balancer) -> String {
    let now = Instant::now();
    let st = lb.lock();
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut o = String::new();
    o.push_str("<html>\n<head>\n<title>Pen status page</title>\n</head>\n<body bgcolor=\"#ffffff\"><h1>Pen status page</h1>\n");
    let _ = writeln!(
        o,
        "Time {ts} (unix), {} servers, uptime {} s<p>",
        st.servers.len(),
        ctl.started.elapsed().as_secs()
    );
    o.push_str("<table bgcolor=\"#c0c0c0\">\n<tr><td bgcolor=\"#80f080\">server</td><td bgcolor=\"#80f080\">address</td><td bgcolor=\"#80f080\">status</td><td bgcolor=\"#80f080\">port</td><td bgcolor=\"#80f080\">connections</td><td bgcolor=\"#80f080\">max soft</td><td bgcolor=\"#80f080\">max hard</td><td bgcolor=\"#80f080\">sent</td><td bgcolor=\"#80f080\">received</td><td bgcolor=\"#80f080\">weight</td><td bgcolor=\"#80f080\">prio</td></tr>\n");
    for (i, s) in st.servers.iter().enumerate() {
        let _ = writeln!(
            o,
            "<tr><td>{i}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.cfg.addr.ip(),
            server_state(s, now, st.srv_primary()),
            s.cfg.addr.port(),
            s.conns,
            s.cfg.max,
            s.cfg.hard,
            s.sx,
            s.rx,
            s.cfg.weight,
            s.cfg.prio
        );
    }
    o.push_str("</table>\n");
    let _ = writeln!(
        o,
        "<h2>Active clients</h2>Max number of clients: {}<p>",
        st.clients.capacity()
    );
    o.push_str("<table bgcolor=\"#c0c0c0\">\n<tr><td bgcolor=\"#80f080\">client</td><td bgcolor=\"#80f080\">address</td><td bgcolor=\"#80f080\">age(secs)</td><td bgcolor=\"#80f080\">last server</td><td bgcolor=\"#80f080\">connects</td><td bgcolor=\"#80f080\">sent</td><td bgcolor=\"#80f080\">received</td></tr>\n");
    for (k, (ip, e)) in st.clients.iter().enumerate() {
        let _ = writeln!(
            o,
            "<tr><td>{k}</td><td>{ip}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            now.saturating_duration_since(e.last).as_secs(),
            e.server.map_or(-1, |s| s as i64),
            e.connects,
            e.sx,
            e.rx
        );
    }
    o.push_str("</table>\n");
    let _ = writeln!(
        o,
        "<h2>Active connections</h2>Number of connections: {} max, {} used, {} last<p>",
        lb.max_connections(),
        st.conns.len(),
        st.conns.keys().next_back().copied().unwrap_or(0)
    );
    o.push_str("<table bgcolor=\"#c0c0c0\">\n<tr><td bgcolor=\"#80f080\">connection</td><td bgcolor=\"#80f080\">client</td><td bgcolor=\"#80f080\">server</td><td bgcolor=\"#80f080\">sent</td><td bgcolor=\"#80f080\">received</td></tr>\n");
    for c in st.conns.values() {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.id,
            c.client,
            c.server,
            c.bytes.down.load(Ordering::Relaxed),
            c.bytes.up.load(Ordering::Relaxed)
        );
    }
    o.push_str("</table>\n</body>\n</html>\n");
    o
}
