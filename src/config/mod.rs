//! The configuration: the TOML model of config.md, validated with every error reported at once
//! as `FILE:LINE:COL: message`. No I/O beyond reading the file: host names are kept, and
//! resolved at run time by the child (crate::resolver).

pub mod duration;
pub mod freevrrpd;
pub mod health;
pub mod pen;
mod reader;
pub mod resolver;
pub mod server_spec;
pub mod track;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml_edit::{Document, Item, Table, TableLike};

pub use health::{Agent, Check, Health, OnDown};
use reader::{Reader, line_col, span_of};
pub use track::Track;

/// Every error found in one file, already located and formatted.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: Daemon,
    pub balancers: Vec<Balancer>,
    pub vrrp: Vec<Vrrp>,
    pub firewall: Option<Firewall>,
    pub resolver: resolver::Resolver,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Syslog,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    pub user: Option<String>,
    pub chroot: Option<PathBuf>,
    /// None: no control port (`control = "none"`).
    pub control: Option<Control>,
    /// Networks besides loopback allowed to use the control port (`ADDR/PREFIX` or `ADDR`).
    pub control_allow: Vec<(IpAddr, u8)>,
    /// pen -X: the `exit` command may stop the daemon.
    pub control_exit: bool,
    pub state_file: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub log: LogTarget,
    /// How long SIGTERM waits for open connections before exiting.
    pub shutdown_timeout: Duration,
    /// Worker threads of the data path (1 = one event loop, like pen and haproxy nbthread 1).
    pub threads: usize,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            user: None,
            chroot: None,
            control: Some(Control::Tcp(SocketAddr::from(([127, 0, 0, 1], 8888)))),
            control_allow: Vec::new(),
            control_exit: false,
            state_file: None,
            pidfile: None,
            log: LogTarget::Stderr,
            shutdown_timeout: Duration::from_secs(30),
            threads: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sticky,
    RoundRobin,
    Hash,
    Weight,
    Prio,
    LeastConn,
    Consistent,
}

impl Algorithm {
    pub const ALL: [(&'static str, Algorithm); 7] = [
        ("sticky", Algorithm::Sticky),
        ("roundrobin", Algorithm::RoundRobin),
        ("hash", Algorithm::Hash),
        ("weight", Algorithm::Weight),
        ("prio", Algorithm::Prio),
        ("leastconn", Algorithm::LeastConn),
        ("consistent", Algorithm::Consistent),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The address; for a server given by name, `0.0.0.0:PORT` until the child resolves it
    /// (the balancer then keeps the current address here).
    pub addr: SocketAddr,
    /// The host name of a server written as `name:port`, resolved at run time (crate::resolver).
    pub name: Option<String>,
    /// Soft connection limit (0 = unlimited); sticky clients may go on up to `hard`.
    pub max: u32,
    pub hard: u32,
    pub weight: u32,
    pub prio: i32,
    /// The server's own check settings (its `health`/`agent` keys over the balancer's), if
    /// it has any.
    pub health: Option<Arc<Health>>,
}

impl Server {
    /// A server at `addr` with no name, no limits, no weight and the balancer's checks: an
    /// empty slot (port 0) or the last resort (pen -e).
    pub fn plain(addr: SocketAddr) -> Server {
        Server {
            addr,
            name: None,
            max: 0,
            hard: 0,
            weight: 0,
            prio: 0,
            health: None,
        }
    }

    /// The check settings of this server: its own, else its balancer's `balancer`.
    pub fn health_or<'a>(&'a self, balancer: &'a Health) -> &'a Health {
        self.health.as_deref().unwrap_or(balancer)
    }

    /// How the server is named in logs and saved state: `name:port`, or its address.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n}:{}", self.addr.port()),
            None => self.addr.to_string(),
        }
    }

    /// The same server of two configurations: same name and port, or (both unnamed) the same
    /// address.
    pub fn same(&self, other: &Server) -> bool {
        match (&self.name, &other.name) {
            (Some(a), Some(b)) => a == b && self.addr.port() == other.addr.port(),
            (None, None) => self.addr == other.addr,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    None,
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub servers: Vec<Server>,
    /// An SRV name (`_http._tcp.app.internal`): one server per target of its answer, after
    /// `servers`, with the record's port, weight and priority (crate::resolver::srv).
    pub servers_srv: Option<String>,
    pub algorithm: Algorithm,
    /// The server of last resort; a host name is resolved at run time like a server's.
    pub emergency: Option<Server>,
    pub blacklist: Duration,
    pub tracking: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_clients: usize,
    pub max_connections: usize,
    pub backlog: u32,
    /// Send a PROXY header to servers before any byte.
    pub proxy_protocol: ProxyProtocol,
    /// Clients (another proxy in front) start with a PROXY header: the client address is the
    /// one it carries.
    pub accept_proxy: bool,
    /// pen -H: add X-Forwarded-For / X-Forwarded-Proto to every HTTP/1.x request.
    pub http_forwarded_for: bool,
    /// Clients whose own X-Forwarded-For is kept and appended to (else it is replaced).
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// One log line per connection at its close.
    pub connection_log: bool,
    /// Which address family a server name's lookup prefers.
    pub resolve_prefer: resolver::Prefer,
    /// Active health checks.
    pub health: Health,
    /// A server that comes back up has its weight ramped up over this long (0: at once).
    pub slowstart: Duration,
    /// Whether a server marked down has its established connections cut.
    pub on_down: OnDown,
    /// HTTP modes (`http_forwarded_for`): the first request head is read whole before a
    /// server is chosen, within this (else 408).
    pub head_timeout: Duration,
    /// HTTP modes: a keep-alive connection whose next request has not come this long after
    /// the last response byte is closed.
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vrrp {
    pub vrid: u8,
    pub interface: String,
    pub priority: u8,
    pub addresses: Vec<String>,
    pub version: u8,
    pub advert_interval: Duration,
    pub password: Option<String>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub depends: Vec<u8>,
    pub peers: Vec<IpAddr>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    /// Gratuitous ARPs sent on becoming master, and their spacing.
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// Balancers whose servers move the priority (the only key a reload changes).
    pub track: Vec<Track>,
}

/// Which firewall `[firewall] backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallBackend {
    Nftables,
    Pf,
    /// Nothing is installed; the ruleset is still built so `fwlb check` validates it.
    None,
}

impl FirewallBackend {
    /// The name the configuration spells it with.
    pub fn name(self) -> &'static str {
        match self {
            FirewallBackend::Nftables => "nftables",
            FirewallBackend::Pf => "pf",
            FirewallBackend::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub backend: FirewallBackend,
    pub front: Option<String>,
    pub back: Option<String>,
    pub allow: Vec<String>,
    pub nat: bool,
    pub keep_on_exit: bool,
    pub syn_rate: Option<String>,
    /// `back_policy = "drop"`: only the servers may reach this host from `back`.
    pub back_drop: bool,
}

/// Defaults shared by the config file and `fwlb pen` (pen's own defaults where they exist).
pub mod defaults {
    use std::time::Duration;
    pub const BLACKLIST: Duration = Duration::from_secs(30);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const MAX_CLIENTS: usize = 2048;
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const BACKLOG: u32 = 1024;
    /// HTTP modes: the first request head must be complete by then (HAProxy's
    /// `timeout http-request` default in its examples).
    pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    /// HTTP modes: the next request head of a keep-alive connection, after the last byte of
    /// the previous response.
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
}

/// Parse a listen address: `ADDR:PORT`, `[V6]:PORT`, or a bare `PORT` (all IPv4 addresses, as pen).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("listen address {s:?} needs a port other than 0"));
        }
        return Ok(a);
    }
    if let Ok(p) = s.parse::<u16>()
        && p != 0
    {
        return Ok(SocketAddr::from(([0, 0, 0, 0], p)));
    }
    Err(format!(
        "invalid listen address {s:?} (write \"ADDR:PORT\", \"[V6ADDR]:PORT\" or \"PORT\")"
    ))
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    parse_str(&src, path)
}

/// Validate config text; `path` labels the messages.
pub fn parse_str(src: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let label = path.display().to_string();
    let doc = match Document::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let (l, c) = line_col(src, e.span().map_or(0, |r| r.start));
            let msg = e.message().trim().replace('\n', " ");
            return Err(ConfigErrors(vec![format!(
                "{label}:{l}:{c}: TOML syntax error: {msg}"
            )]));
        }
    };
    let mut r = Reader::new();
    let cfg = build(&mut r, doc.as_item(), path);
    if r.diags.is_empty() {
        return Ok(cfg);
    }
    r.diags.sort_by_key(|d| d.offset);
    Err(ConfigErrors(
        r.diags
            .iter()
            .map(|d| {
                let (l, c) = line_col(src, d.offset);
                format!("{label}:{l}:{c}: {}", d.message)
            })
            .collect(),
    ))
}

fn build(r: &mut Reader, root: &Item, path: &Path) -> Config {
    let mut cfg = Config {
        path: path.to_path_buf(),
        daemon: Daemon::default(),
        balancers: Vec::new(),
        vrrp: Vec::new(),
        firewall: None,
        resolver: resolver::Resolver::default(),
    };
    let Some(top) = root.as_table_like() else {
        return cfg;
    };
    r.check_keys(
        top,
        "the top level",
        &["daemon", "balancer", "vrrp", "firewall", "resolver"],
    );
    if let Some(item) = top.get("resolver") {
        match item.as_table_like() {
            Some(t) => cfg.resolver = resolver::parse(r, t),
            None => r.err_at(item, "`resolver` must be a table: [resolver]"),
        }
    }
    if let Some(item) = top.get("daemon") {
        match item.as_table_like() {
            Some(t) => cfg.daemon = daemon(r, t),
            None => r.err_at(item, "`daemon` must be a table: [daemon]"),
        }
    }
    for (key, what) in [("balancer", "[[balancer]]"), ("vrrp", "[[vrrp]]")] {
        let Some(item) = top.get(key) else { continue };
        let Some(arr) = item.as_array_of_tables() else {
            r.err_at(item, format!("`{key}` must be an array of tables: {what}"));
            continue;
        };
        for t in arr.iter() {
            if key == "balancer" {
                if let Some(b) = balancer(r, t, cfg.balancers.len()) {
                    cfg.balancers.push(b);
                }
            } else if let Some(v) = vrrp(r, t) {
                cfg.vrrp.push(v);
            }
        }
    }
    if let Some(item) = top.get("firewall") {
        match item.as_table_like() {
            Some(t) => cfg.firewall = Some(firewall(r, t)),
            None => r.err_at(item, "`firewall` must be a table: [firewall]"),
        }
    }
    cross_checks(r, top);
    cfg
}

fn daemon(r: &mut Reader, t: &dyn TableLike) -> Daemon {
    r.check_keys(
        t,
        "[daemon]",
        &[
            "user",
            "chroot",
            "control",
            "control_allow",
            "control_exit",
            "state_file",
            "pidfile",
            "log",
            "shutdown_timeout",
            "threads",
        ],
    );
    let mut d = Daemon::default();
    if let Some((s, _)) = r.string(t, "user") {
        d.user = Some(s.to_string());
    }
    if let Some((s, item)) = r.string(t, "chroot") {
        if !s.starts_with('/') {
            r.err_at(item, "`chroot` must be an absolute path");
        }
        d.chroot = Some(PathBuf::from(s));
    }
    d.control_allow = networks(r, t, "control_allow");
    d.control_exit = r.boolean(t, "control_exit").unwrap_or(false);
    if let Some(c) = control(r, t, !d.control_allow.is_empty()) {
        d.control = c;
    }
    d.state_file = r.string(t, "state_file").map(|(s, _)| PathBuf::from(s));
    d.pidfile = r.string(t, "pidfile").map(|(s, _)| PathBuf::from(s));
    if let Some((s, item)) = r.string(t, "log") {
        match s {
            "stderr" => d.log = LogTarget::Stderr,
            "syslog" => d.log = LogTarget::Syslog,
            _ => r.err_at(
                item,
                format!("`log` must be \"stderr\" or \"syslog\", not {s:?}"),
            ),
        }
    }
    if let Some((v, _)) = r.duration(t, "shutdown_timeout") {
        d.shutdown_timeout = v;
    }
    if let Some(n) = r.int(t, "threads", 1, 256) {
        d.threads = n as usize;
    }
    d
}

/// `control`, if given and valid: `None` inside for "none". A TCP address off loopback needs
/// `control_allow` (`allowed`).
fn control(r: &mut Reader, t: &dyn TableLike, allowed: bool) -> Option<Option<Control>> {
    let (s, item) = r.string(t, "control")?;
    if s == "none" {
        return Some(None);
    }
    if s.contains('/') {
        return Some(Some(Control::Unix(PathBuf::from(s))));
    }
    let Ok(a) = s.parse::<SocketAddr>() else {
        r.err_at(
            item,
            format!("`control` {s:?} must be \"ADDR:PORT\", a unix socket path or \"none\""),
        );
        return None;
    };
    if !a.ip().is_loopback() && !allowed {
        r.err_at(
            item,
            format!(
                "`control` {s:?} is not a loopback address: list who may use it in `control_allow`"
            ),
        );
    }
    Some(Some(Control::Tcp(a)))
}

const BALANCER_KEYS: &[&str] = &[
    "name",
    "listen",
    "servers",
    "servers_srv",
    "algorithm",
    "emergency",
    "blacklist",
    "tracking",
    "connect_timeout",
    "idle_timeout",
    "max_clients",
    "max_connections",
    "backlog",
    "resolve_prefer",
    "proxy_protocol",
    "accept_proxy",
    "http_forwarded_for",
    "trusted_proxies",
    "connection_log",
    "health",
    "slowstart",
    "on_down",
    "agent",
    "head_timeout",
    "keepalive_timeout",
];

fn balancer(r: &mut Reader, t: &Table, index: usize) -> Option<Balancer> {
    let header = t
        .get("name")
        .and_then(|i| i.as_str())
        .map_or(format!("[[balancer]] #{}", index + 1), |n| {
            format!("[[balancer]] {n:?}")
        });
    r.check_keys(t, &header, BALANCER_KEYS);
    let before = r.diags.len();
    let name = balancer_name(r, t, index);
    let listen = listen_addresses(r, t, &header);
    let default_port = listen.first().map_or(80, |a| a.port());
    let servers_srv = servers_srv(r, t);
    // The balancer's checks first: a server's own `health` is read over them. An SRV name
    // may give many servers: checked by default, as a list of several is.
    let count = t
        .get("servers")
        .and_then(|i| i.as_array())
        .map_or(0, |a| a.len());
    let checked_count = if servers_srv.is_some() {
        count.max(2)
    } else {
        count
    };
    let mut health = health::read(r, t, checked_count);
    health.agent = health::agent(r, t);
    // A `servers_srv` given, even a wrong one, says where the servers come from.
    let srv = t.contains_key("servers_srv");
    let servers = servers(r, t, &header, default_port, &health, srv);
    let algorithm = algorithm(r, t);
    let emergency = emergency(r, t, default_port);
    let dur = |r: &mut Reader, key: &str, default: Duration| {
        r.duration(t, key).map_or(default, |(d, _)| d)
    };
    let blacklist = dur(r, "blacklist", defaults::BLACKLIST);
    let tracking = dur(r, "tracking", Duration::ZERO);
    let connect_timeout = positive(r, t, "connect_timeout", defaults::CONNECT_TIMEOUT);
    let idle_timeout = dur(r, "idle_timeout", Duration::ZERO);
    let count = |r: &mut Reader, key: &str, default: usize| {
        r.int(t, key, 1, 10_000_000).map_or(default, |n| n as usize)
    };
    let max_clients = count(r, "max_clients", defaults::MAX_CLIENTS);
    let max_connections = count(r, "max_connections", defaults::MAX_CONNECTIONS);
    let backlog = r
        .int(t, "backlog", 1, 65_535)
        .map_or(defaults::BACKLOG, |n| n as u32);
    let proxy_protocol = proxy_protocol(r, t);
    let accept_proxy = r.boolean(t, "accept_proxy").unwrap_or(false);
    let http_forwarded_for = r.boolean(t, "http_forwarded_for").unwrap_or(false);
    let trusted_proxies = networks(r, t, "trusted_proxies");
    let connection_log = r.boolean(t, "connection_log").unwrap_or(true);
    let resolve_prefer = resolver::prefer(r, t);
    let slowstart = dur(r, "slowstart", Duration::ZERO);
    let on_down = health::on_down(r, t);
    let head_timeout = positive(r, t, "head_timeout", defaults::HEAD_TIMEOUT);
    let keepalive_timeout = positive(r, t, "keepalive_timeout", defaults::KEEPALIVE_TIMEOUT);
    if r.diags.len() != before {
        return None;
    }
    Some(Balancer {
        name,
        listen,
        servers,
        servers_srv,
        algorithm,
        emergency,
        blacklist,
        tracking,
        connect_timeout,
        idle_timeout,
        max_clients,
        max_connections,
        backlog,
        proxy_protocol,
        accept_proxy,
        http_forwarded_for,
        trusted_proxies,
        connection_log,
        resolve_prefer,
        health,
        slowstart,
        on_down,
        head_timeout,
        keepalive_timeout,
    })
}

/// A duration key that must be more than zero, or its default.
fn positive(r: &mut Reader, t: &Table, key: &str, default: Duration) -> Duration {
    match r.duration(t, key) {
        Some((d, item)) if d.is_zero() => {
            r.err_at(item, format!("`{key}` must be more than 0s"));
            default
        }
        Some((d, _)) => d,
        None => default,
    }
}

/// `name`, else `lbN` for the Nth [[balancer]].
fn balancer_name(r: &mut Reader, t: &Table, index: usize) -> String {
    let Some((s, item)) = r.string(t, "name") else {
        return format!("lb{}", index + 1);
    };
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        r.err_at(
            item,
            format!("balancer name {s:?} must be letters, digits, '-', '_' or '.'"),
        );
    }
    s.to_string()
}

/// `listen`: one address or several, at least one.
fn listen_addresses(r: &mut Reader, t: &Table, header: &str) -> Vec<SocketAddr> {
    let mut listen = Vec::new();
    match r.strings(t, "listen") {
        Some(list) => {
            if list.is_empty() {
                r.err(
                    t.get("listen").and_then(span_of),
                    format!("{header}: `listen` is empty"),
                );
            }
            for (s, span) in list {
                match parse_listen(s) {
                    Ok(a) => listen.push(a),
                    Err(e) => r.err(span, e),
                }
            }
        }
        None if !t.contains_key("listen") => {
            r.err(
                first_span(t),
                format!("{header}: missing `listen` (e.g. listen = \"0.0.0.0:80\")"),
            );
        }
        None => {}
    }
    listen
}

/// `servers`: an array of server strings (or tables with `address` and the server's own
/// `health`/`agent` over the balancer's `health`), none twice; at least one unless
/// `servers_srv` (`srv`) gives them.
fn servers(
    r: &mut Reader,
    t: &Table,
    header: &str,
    default_port: u16,
    health: &Health,
    srv: bool,
) -> Vec<Server> {
    let mut servers: Vec<Server> = Vec::new();
    let Some(item) = t.get("servers") else {
        if !srv {
            r.err(
                first_span(t),
                format!("{header}: missing `servers` (e.g. servers = [\"10.0.0.11:80\"]) or `servers_srv`"),
            );
        }
        return servers;
    };
    let Some(arr) = item.as_array() else {
        r.err_at(
            item,
            "`servers` must be an array of \"host:port[:max:hard:weight:prio]\"",
        );
        return servers;
    };
    if arr.is_empty() && !srv {
        r.err_at(
            item,
            format!("{header}: `servers` is empty (and no `servers_srv`)"),
        );
    }
    for v in arr.iter() {
        let Some(sv) = server_entry(r, v, default_port, health) else {
            continue;
        };
        if servers.iter().any(|o| o.same(&sv)) {
            r.err(v.span(), format!("server {} is listed twice", sv.label()));
        }
        servers.push(sv)
    }
    servers
}

const SERVER_KEYS: &[&str] = &["address", "health", "agent"];

/// One entry of `servers`: "host:port..." or { address = "host:port...", health = {...},
/// agent = {...} }.
fn server_entry(
    r: &mut Reader,
    v: &toml_edit::Value,
    default_port: u16,
    health: &Health,
) -> Option<Server> {
    const WHAT: &str = "every server must be a string \"host:port[:max:hard:weight:prio]\" \
                        or a table { address = \"host:port\", health = { ... } }";
    let (text, table) = match v {
        toml_edit::Value::String(s) => (s.value().as_str(), None),
        toml_edit::Value::InlineTable(t) => {
            r.check_keys(t, "a server", SERVER_KEYS);
            match t.get("address").and_then(|a| a.as_str()) {
                Some(a) => (a, Some(t)),
                None => {
                    r.err(v.span(), format!("{WHAT}: `address` is missing"));
                    return None;
                }
            }
        }
        _ => {
            r.err(v.span(), WHAT);
            return None;
        }
    };
    let mut sv = match server(text, default_port) {
        Ok(sv) => sv,
        Err(e) => {
            r.err(v.span(), e);
            return None;
        }
    };
    if let Some(t) = table {
        sv.health = health::for_server(r, t, health).map(Arc::new);
    }
    Some(sv)
}

fn algorithm(r: &mut Reader, t: &Table) -> Algorithm {
    let Some((s, item)) = r.string(t, "algorithm") else {
        return Algorithm::Sticky;
    };
    if let Some((_, a)) = Algorithm::ALL.iter().find(|(n, _)| *n == s) {
        return *a;
    }
    let names: Vec<&str> = Algorithm::ALL.iter().map(|(n, _)| *n).collect();
    r.err_at(
        item,
        format!("unknown algorithm {s:?} (one of: {})", names.join(", ")),
    );
    Algorithm::Sticky
}

/// `servers_srv`: an SRV name, checked as a host name (lower case, no trailing dot).
fn servers_srv(r: &mut Reader, t: &Table) -> Option<String> {
    let (s, item) = r.string(t, "servers_srv")?;
    match server_spec::host_name(s) {
        Some(name) => Some(name),
        None => {
            r.err_at(
                item,
                format!("`servers_srv` {s:?} is not a DNS name (e.g. \"_http._tcp.app.internal\")"),
            );
            None
        }
    }
}

/// `emergency`: a server in pen's syntax; a host name is kept and resolved at run time.
fn emergency(r: &mut Reader, t: &Table, default_port: u16) -> Option<Server> {
    let (s, item) = r.string(t, "emergency")?;
    match server(s, default_port) {
        // The last resort has no limits and no weight (pen -e).
        Ok(a) => Some(Server {
            name: a.name,
            ..Server::plain(a.addr)
        }),
        Err(e) => {
            r.err_at(item, format!("`emergency`: {e}"));
            None
        }
    }
}

fn proxy_protocol(r: &mut Reader, t: &Table) -> ProxyProtocol {
    use ProxyProtocol as P;
    let names = [("none", P::None), ("v1", P::V1), ("v2", P::V2)];
    r.choice(t, "proxy_protocol", &names, P::None)
}

/// A list of networks (`ADDR` or `ADDR/PREFIX`) under `key`.
fn networks(r: &mut Reader, t: &dyn TableLike, key: &str) -> Vec<(IpAddr, u8)> {
    let mut nets = Vec::new();
    for (s, span) in r.strings(t, key).unwrap_or_default() {
        match parse_net(s) {
            Some(n) => nets.push(n),
            None => r.err(span, format!("`{key}`: {s:?} must be ADDR or ADDR/PREFIX")),
        }
    }
    nets
}

/// A server of the config file. Unlike pen, an omitted weight is 1, so `algorithm = "weight"`
/// with plain addresses spreads evenly; an explicit weight 0 still means "never by weight".
/// A host name is kept, not resolved: the child resolves it at run time.
pub fn server(s: &str, default_port: u16) -> Result<Server, String> {
    let sp = server_spec::parse(s)?;
    let (addr, name) = server_spec::address_or_name(&sp, default_port)?;
    let max = sp.max.unwrap_or(0);
    let hard = sp.hard.unwrap_or(0);
    if hard != 0 && hard < max {
        return Err(format!(
            "server {s:?}: hard limit {hard} is below the soft limit {max}"
        ));
    }
    Ok(Server {
        addr,
        name,
        max,
        hard,
        weight: sp.weight.unwrap_or(1),
        prio: sp.prio.unwrap_or(0),
        health: None,
    })
}

/// Where to point for a key missing from `t`: its header, else its first key.
fn first_span(t: &Table) -> Option<std::ops::Range<usize>> {
    t.span().or_else(|| {
        t.iter()
            .next()
            .and_then(|(k, _)| t.key(k).and_then(|k| k.span()))
    })
}

const VRRP_KEYS: &[&str] = &[
    "vrid",
    "interface",
    "priority",
    "addresses",
    "version",
    "advert_interval",
    "password",
    "preempt",
    "preempt_delay",
    "depends",
    "peers",
    "notify_master",
    "notify_backup",
    "garp_count",
    "garp_interval",
    "track",
];

fn vrrp(r: &mut Reader, t: &Table) -> Option<Vrrp> {
    r.check_keys(t, "[[vrrp]]", VRRP_KEYS);
    let before = r.diags.len();
    let vrid = match r.int(t, "vrid", 1, 255) {
        Some(v) => v as u8,
        None => {
            if !t.contains_key("vrid") {
                r.err(first_span(t), "[[vrrp]]: missing `vrid` (1..255)");
            }
            0
        }
    };
    let interface = match r.string(t, "interface") {
        Some((s, _)) => s.to_string(),
        None => {
            if !t.contains_key("interface") {
                r.err(
                    first_span(t),
                    format!("[[vrrp]] vrid {vrid}: missing `interface`"),
                );
            }
            String::new()
        }
    };
    let priority = r.int(t, "priority", 1, 255).map_or(100, |v| v as u8);
    let version = r.int(t, "version", 2, 3).map_or(2, |v| v as u8);
    let addresses = vrrp_addresses(r, t, vrid, version);
    let advert_interval = advert_interval(r, t, version);
    let password = password(r, t, version);
    let preempt = r.boolean(t, "preempt").unwrap_or(true);
    let preempt_delay = r
        .duration(t, "preempt_delay")
        .map_or(Duration::ZERO, |(d, _)| d);
    let depends = r
        .ints(t, "depends", 1, 255)
        .map(|v| v.into_iter().map(|n| n as u8).collect())
        .unwrap_or_default();
    let peers = peers(r, t, &addresses);
    let notify_master = command(r, t, "notify_master");
    let notify_backup = command(r, t, "notify_backup");
    let garp_count = r.int(t, "garp_count", 1, 100).map_or(3, |n| n as u32);
    let garp_interval = r
        .duration(t, "garp_interval")
        .map_or(Duration::from_millis(200), |(d, _)| d);
    let track = track::read(r, t, vrid, priority);
    if r.diags.len() != before {
        return None;
    }
    Some(Vrrp {
        vrid,
        interface,
        priority,
        addresses,
        version,
        advert_interval,
        password,
        preempt,
        preempt_delay,
        depends,
        peers,
        notify_master,
        notify_backup,
        garp_count,
        garp_interval,
        track,
    })
}

/// `addresses`: at least one `ADDR/PREFIX`, all of one family, IPv6 only with VRRPv3.
fn vrrp_addresses(r: &mut Reader, t: &Table, vrid: u8, version: u8) -> Vec<String> {
    let mut addresses = Vec::new();
    let Some(list) = r.strings(t, "addresses") else {
        if !t.contains_key("addresses") {
            r.err(
                first_span(t),
                format!("[[vrrp]] vrid {vrid}: missing `addresses`"),
            );
        }
        return addresses;
    };
    for (s, span) in list {
        if parse_cidr(s).is_none() {
            r.err(
                span,
                format!("VRRP address {s:?} must be ADDR/PREFIX, e.g. \"198.51.100.10/24\""),
            );
        }
        addresses.push(s.to_string());
    }
    let span = t.get("addresses").and_then(span_of);
    if addresses.is_empty() {
        r.err(span.clone(), "`addresses` is empty");
    }
    // Only once every address parses: a typo is reported as such, not as a family.
    let v6: Vec<bool> = addresses
        .iter()
        .map(|a| parse_cidr(a).map(|(a, _)| a.is_ipv6()))
        .collect::<Option<_>>()
        .unwrap_or_default();
    if v6.contains(&true) && v6.contains(&false) {
        r.err(
            span,
            format!("[[vrrp]] vrid {vrid}: `addresses` mixes IPv4 and IPv6; a virtual router is one or the other (RFC 5798): use two [[vrrp]] sections, each with its own VRID"),
        );
    } else if v6.contains(&true) && version != 3 {
        r.err(
            t.get("version").and_then(span_of).or(span),
            format!("[[vrrp]] vrid {vrid}: IPv6 addresses need `version = 3` (VRRPv2 is IPv4 only, RFC 3768)"),
        );
    }
    addresses
}

fn advert_interval(r: &mut Reader, t: &Table, version: u8) -> Duration {
    let Some((d, item)) = r.duration(t, "advert_interval") else {
        return Duration::from_secs(1);
    };
    let ms = d.as_millis();
    if version == 2 && (ms % 1000 != 0 || !(1000..=255_000).contains(&ms)) {
        r.err_at(
            item,
            "`advert_interval` for VRRPv2 must be whole seconds from 1s to 255s (RFC 3768 5.3.7)",
        );
    } else if version == 3 && (ms % 10 != 0 || !(10..=40_950).contains(&ms)) {
        r.err_at(
            item,
            "`advert_interval` for VRRPv3 must be 10ms steps from 10ms to 40950ms (RFC 5798 5.2.7)",
        );
    }
    d
}

fn password(r: &mut Reader, t: &Table, version: u8) -> Option<String> {
    let (s, item) = r.string(t, "password")?;
    if version != 2 {
        r.err_at(
            item,
            "`password` exists only in VRRPv2 (RFC 5798 removed authentication)",
        );
    } else if s.len() > 8 {
        r.err_at(
            item,
            "`password` is at most 8 bytes (RFC 2338 simple text authentication)",
        );
    }
    Some(s.to_string())
}

/// `peers`: addresses of the family of `addresses`.
fn peers(r: &mut Reader, t: &Table, addresses: &[String]) -> Vec<IpAddr> {
    let mut peers = Vec::new();
    let family_v6 = addresses
        .iter()
        .find_map(|a| parse_cidr(a))
        .map(|(a, _)| a.is_ipv6());
    for (s, span) in r.strings(t, "peers").unwrap_or_default() {
        match s.parse::<IpAddr>() {
            Ok(ip) if family_v6.is_some_and(|v6| v6 != ip.is_ipv6()) => r.err(
                span,
                format!(
                    "peer {s:?} is not of the family of `addresses`: adverts go over one IP version"
                ),
            ),
            Ok(ip) => peers.push(ip),
            Err(_) => r.err(span, format!("peer {s:?} must be an IP address")),
        }
    }
    peers
}

/// A notify command; an empty one is none.
fn command(r: &mut Reader, t: &Table, key: &str) -> Option<String> {
    r.string(t, key)
        .map(|(s, _)| s.to_string())
        .filter(|s| !s.is_empty())
}

/// `[[vrrp]]` sections as TOML, for `fwlb check --freevrrpd` (what to paste into fwlb.toml).
pub fn vrrp_toml(v: &[Vrrp]) -> String {
    use std::fmt::Write as _;
    let q = |s: &str| format!("{s:?}");
    let mut o = String::new();
    for r in v {
        let _ = writeln!(o, "[[vrrp]]");
        let _ = writeln!(o, "vrid = {}", r.vrid);
        let _ = writeln!(o, "interface = {}", q(&r.interface));
        let _ = writeln!(o, "priority = {}", r.priority);
        let addrs: Vec<String> = r.addresses.iter().map(|a| q(a)).collect();
        let _ = writeln!(o, "addresses = [{}]", addrs.join(", "));
        let _ = writeln!(o, "version = {}", r.version);
        let _ = writeln!(
            o,
            "advert_interval = {}",
            q(&duration::format(r.advert_interval))
        );
        if let Some(p) = &r.password {
            let _ = writeln!(o, "password = {}", q(p));
        }
        let _ = writeln!(o, "preempt = {}", r.preempt);
        if !r.depends.is_empty() {
            let d: Vec<String> = r.depends.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(o, "depends = [{}]", d.join(", "));
        }
        if let Some(s) = &r.notify_master {
            let _ = writeln!(o, "notify_master = {}", q(s));
        }
        if let Some(s) = &r.notify_backup {
            let _ = writeln!(o, "notify_backup = {}", q(s));
        }
        o.push('\n');
    }
    o
}

/// `ADDR` (a single host) or `ADDR/PREFIX`.
pub fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    parse_cidr(s)
}

/// Whether `ip` is inside `net/len` (families must match).
pub fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `ADDR/PREFIX` with a prefix that fits the family.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (p <= max).then_some((ip, p))
}

fn firewall(r: &mut Reader, t: &dyn TableLike) -> Firewall {
    r.check_keys(
        t,
        "[firewall]",
        &[
            "backend",
            "front",
            "back",
            "allow",
            "nat",
            "keep_on_exit",
            "syn_rate",
            "back_policy",
        ],
    );
    use FirewallBackend as B;
    let names = [("nftables", B::Nftables), ("pf", B::Pf), ("none", B::None)];
    let backend = r.choice(t, "backend", &names, B::None);
    let back_drop = r.choice(
        t,
        "back_policy",
        &[("accept", false), ("drop", true)],
        false,
    );
    Firewall {
        back_drop,
        backend,
        front: r.string(t, "front").map(|(s, _)| s.to_string()),
        back: r.string(t, "back").map(|(s, _)| s.to_string()),
        allow: r
            .strings(t, "allow")
            .map(|v| v.into_iter().map(|(s, _)| s.to_string()).collect())
            .unwrap_or_default(),
        nat: r.boolean(t, "nat").unwrap_or(false),
        keep_on_exit: r.boolean(t, "keep_on_exit").unwrap_or(true),
        syn_rate: r.string(t, "syn_rate").map(|(s, _)| s.to_string()),
    }
}

/// Checks that need the whole file: duplicate names and listen addresses, VRRP dependencies.
/// They read the tables themselves, so a section with some other error is still checked.
fn cross_checks(r: &mut Reader, top: &dyn TableLike) {
    let tables = |key: &str| -> Vec<&Table> {
        top.get(key)
            .and_then(|i| i.as_array_of_tables())
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let names = balancers_apart(r, &tables("balancer"));
    vrids_apart(r, &tables("vrrp"));
    track::known_balancers(r, &tables("vrrp"), &names);
}

/// No balancer name twice, no listen address taken twice (a wildcard overlaps every address
/// of its family on its port). Returns the balancers' names.
fn balancers_apart(r: &mut Reader, tables: &[&Table]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut listens: Vec<(SocketAddr, String)> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let name = t
            .get("name")
            .and_then(|n| n.as_str())
            .map_or(format!("lb{}", i + 1), str::to_string);
        if names.contains(&name) {
            r.err(
                t.get("name").and_then(span_of).or_else(|| first_span(t)),
                format!("balancer name {name:?} is used twice"),
            );
        }
        names.push(name.clone());
        for (span, s) in listen_strings(t) {
            let Ok(a) = parse_listen(s) else { continue };
            // A wildcard address takes the port on every address of its family.
            let clash = |o: &SocketAddr| {
                o.port() == a.port()
                    && o.is_ipv4() == a.is_ipv4()
                    && (*o == a || o.ip().is_unspecified() || a.ip().is_unspecified())
            };
            if let Some((o, owner)) = listens.iter().find(|(o, _)| clash(o)) {
                let whose = if *owner == name {
                    "this balancer".to_string()
                } else {
                    format!("balancer {owner:?}")
                };
                let what = if *o == a {
                    format!("listen address {a} is already used")
                } else {
                    format!("listen address {a} overlaps {o}, used")
                };
                r.err(span, format!("{what} by {whose}"));
            }
            listens.push((a, name.clone()));
        }
    }
    names
}

/// The strings of a balancer's `listen` (one or an array), each with its place.
fn listen_strings(t: &Table) -> Vec<(Option<std::ops::Range<usize>>, &str)> {
    match t.get("listen") {
        Some(item) if item.is_str() => item
            .as_str()
            .map(|s| (span_of(item), s))
            .into_iter()
            .collect(),
        Some(item) => item
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(|s| (v.span(), s)))
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// No VRID twice on one interface, and every `depends` names a configured VRID.
fn vrids_apart(r: &mut Reader, vtables: &[&Table]) {
    let vrids: Vec<i64> = vtables
        .iter()
        .filter_map(|t| t.get("vrid").and_then(|v| v.as_integer()))
        .collect();
    let mut seen: Vec<(i64, &str)> = Vec::new();
    for t in vtables {
        let Some(vrid) = t.get("vrid").and_then(|v| v.as_integer()) else {
            continue;
        };
        let iface = t.get("interface").and_then(|v| v.as_str()).unwrap_or("");
        if seen.contains(&(vrid, iface)) {
            r.err(
                t.get("vrid").and_then(span_of),
                format!("VRID {vrid} is configured twice on {iface}"),
            );
        }
        seen.push((vrid, iface));
        let Some(deps) = t.get("depends").and_then(|d| d.as_array()) else {
            continue;
        };
        for d in deps.iter() {
            if let Some(n) = d.as_integer()
                && !vrids.contains(&n)
            {
                r.err(
                    d.span(),
                    format!("VRID {vrid} depends on VRID {n}, which is not configured"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<String> {
        match parse_str(src, Path::new("t.toml")) {
            Ok(_) => vec![],
            Err(e) => e.0,
        }
    }

    #[test]
    fn servers_srv_alone_or_with_servers_and_emergency_by_name() {
        let c = parse_str(
            "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers_srv = \"_HTTP._tcp.App.Internal.\"\nemergency = \"sorry.internal\"\n[[balancer]]\nlisten = \"127.0.0.1:8081\"\nservers = [\"10.0.0.1:80\"]\nservers_srv = \"_http._tcp.app.internal\"\n[[balancer]]\nlisten = \"127.0.0.1:8082\"\nservers = []\nservers_srv = \"_x._tcp.y\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let b = &c.balancers[0];
        assert_eq!(b.servers_srv.as_deref(), Some("_http._tcp.app.internal"));
        assert!(b.servers.is_empty());
        assert_eq!(b.health.check, Check::Tcp, "checked by default");
        let e = b.emergency.as_ref().unwrap();
        assert_eq!(
            (e.name.as_deref(), e.addr.port(), e.weight),
            (Some("sorry.internal"), 8080, 0)
        );
        assert_eq!(c.balancers[1].servers.len(), 1);
        assert_eq!(c.resolver.hold_obsolete, Duration::from_secs(30));
        let e = errs(
            "[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers_srv = \"not a name\"\n[[balancer]]\nlisten = \"127.0.0.1:8081\"\nservers = []\n[[balancer]]\nlisten = \"127.0.0.1:8082\"\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains("`servers_srv` \"not a name\" is not a DNS name"),
            "{e:?}"
        );
        assert!(
            e[1].contains("`servers` is empty (and no `servers_srv`)"),
            "{e:?}"
        );
        assert!(e[2].contains("missing `servers`"), "{e:?}");
        let e = errs("[resolver]\nhold_obsolete = \"x\"\n[firewall]\nback_policy = \"deny\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn minimal_balancer_defaults() {
        let c = parse_str(
            "[[balancer]]\nname = \"www\"\nlisten = \"127.0.0.1:8080\"\nservers = [\"127.0.0.1:9001\", \"127.0.0.1\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let b = &c.balancers[0];
        assert_eq!(b.algorithm, Algorithm::Sticky);
        assert_eq!(
            b.servers[1].addr.port(),
            8080,
            "omitted server port = listen port (pen)"
        );
        assert_eq!(b.blacklist, Duration::from_secs(30));
        assert_eq!(b.connect_timeout, Duration::from_secs(3));
        assert_eq!(b.max_clients, 2048);
    }

    #[test]
    fn all_errors_at_once_in_file_order() {
        let e = errs(
            "[daemon]\nusr = \"x\"\n[[balancer]]\nname = \"a\"\nlisten = \"nope\"\nservers = [\"1.2.3.4:http\"]\nalgorithm = \"fastest\"\nblacklist = \"30\"\n",
        );
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e[0].starts_with("t.toml:2:1: unknown key `usr` in [daemon] (did you mean `user`?)"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("t.toml:5:10: invalid listen address"),
            "{}",
            e[1]
        );
        assert!(e[2].starts_with("t.toml:6:12: server"), "{}", e[2]);
        assert!(
            e[3].starts_with("t.toml:7:13: unknown algorithm"),
            "{}",
            e[3]
        );
        assert!(
            e[4].starts_with("t.toml:8:13: `blacklist`: duration \"30\" has no unit"),
            "{}",
            e[4]
        );
    }

    #[test]
    fn wildcard_listen_overlaps_a_specific_address() {
        let e = errs(
            "[[balancer]]\nlisten = \"0.0.0.0:80\"\nservers = [\"10.0.0.1\"]\n[[balancer]]\nlisten = [\"127.0.0.1:80\", \"[::1]:80\"]\nservers = [\"10.0.0.1\"]\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.toml:5:11: listen address 127.0.0.1:80 overlaps 0.0.0.0:80, used by balancer \"lb1\""), "{}", e[0]);
    }

    #[test]
    fn networks() {
        let (n, l) = parse_net("10.1.0.0/16").unwrap();
        assert!(in_network("10.1.200.3".parse().unwrap(), n, l));
        assert!(!in_network("10.2.0.1".parse().unwrap(), n, l));
        let (n, l) = parse_net("192.0.2.7").unwrap();
        assert!(in_network("192.0.2.7".parse().unwrap(), n, l));
        assert!(!in_network("192.0.2.8".parse().unwrap(), n, l));
        let (n, l) = parse_net("2001:db8::/32").unwrap();
        assert!(in_network("2001:db8:1::1".parse().unwrap(), n, l));
        assert!(!in_network("10.0.0.1".parse().unwrap(), n, l));
        assert!(parse_net("10.0.0.0/33").is_none());
    }

    #[test]
    fn syntax_error_has_location() {
        let e = errs("[[balancer]\nname = 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.toml:1:"), "{}", e[0]);
        assert!(e[0].contains("syntax"), "{}", e[0]);
    }

    #[test]
    fn a_server_table_has_its_own_checks_over_the_balancers() {
        let src = "[[balancer]]\nlisten = \"127.0.0.1:80\"\nhealth = { check = \"http\", path = \"/\", rise = 4 }\n\
                   servers = [\"10.0.0.1\", { address = \"10.0.0.2:8080:0:0:3\", health = { path = \"/ready\", port = 9000 } },\n\
                   { address = \"10.0.0.3\", agent = { port = 9999 } }]\n";
        let cfg = parse_str(src, Path::new("t.toml")).expect("valid");
        let b = &cfg.balancers[0];
        assert!(b.servers[0].health.is_none());
        let own = b.servers[1].health.as_deref().expect("own checks");
        assert_eq!(
            (own.check, own.path.as_str(), own.port, own.rise),
            (Check::Http, "/ready", Some(9000), 4)
        );
        assert_eq!((b.servers[1].addr.port(), b.servers[1].weight), (8080, 3));
        let third = b.servers[2].health_or(&b.health);
        assert_eq!(
            (third.check, third.agent.as_ref().map(|a| a.port)),
            (Check::Http, Some(9999))
        );
        assert!(b.health.agent.is_none());
    }

    #[test]
    fn a_bad_server_table_is_an_error() {
        let base = "[[balancer]]\nlisten = \"127.0.0.1:80\"\nservers = [";
        for (entry, want) in [
            ("{ health = { path = \"/x\" } }", "`address` is missing"),
            (
                "{ address = \"10.0.0.1\", weight = 2 }",
                "unknown key `weight`",
            ),
            ("{ address = \"10.0.0.1\", health = { rise = 0 } }", "rise"),
            (
                "{ address = \"10.0.0.1\", health = \"http\" }",
                "`health` must be a table",
            ),
            ("7", "every server must be a string"),
        ] {
            let e = errs(&format!("{base}{entry}]\n"));
            assert!(e.iter().any(|l| l.contains(want)), "{entry}: {e:#?}");
        }
    }
}
