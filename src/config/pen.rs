//! `fwlb pen`: pen's own command line, so a runit `run` file migrates by changing one word.
//! The options become a config plus the pen control commands that set pen's modes, which the
//! daemon runs at start exactly as the control port would. No I/O except reading `-F`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Algorithm, Balancer, Config, Control, Daemon, Server, defaults, server_spec};

/// What `fwlb pen ARGS` asks for.
#[derive(Debug)]
pub struct PenRun {
    pub config: Config,
    /// Control commands to run at start, in pen's order: option flags, -o, the -F file, and
    /// last the command-line servers (which override the file's entries with the same index).
    pub commands: Vec<String>,
    pub pen_file: Option<PathBuf>,
    pub foreground: bool,
    pub debug: u8,
}

pub const USAGE: &str = "\
usage: fwlb pen [-HWXdfhrs] [-b sec] [-c N] [-C [addr:]port|path] [-e host[:port]] [-F cfgfile]
                [-j dir] [-o cmd] [-p pidfile] [-q N] [-t sec] [-T sec] [-u user] [-x N]
                [host:]port h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2 ...]
  -b sec   blacklist time for a failed server [30]     -c N     client table size [2048]
  -C addr  control port ([addr:]port or unix path; a bare port binds 127.0.0.1)
  -d       debug (repeat for more)                       -e host  emergency server
  -f       stay in the foreground (else: detach)        -F file  file of control commands
  -h       hash the client IP                           -H       add X-Forwarded-For (HTTP/1.x)
  -j dir   chroot to dir
  -o cmd   run a control command at start               -p file  write the pid to file
  -q N     listen backlog [1024]                        -r       round robin, no client table
  -s       stubborn: no failover                        -t sec   connect timeout [3]
  -T sec   client tracking time [0 = until recycled]   -u user  run as user
  -W       weighted least connections                   -x N     max connections [500]
  -X       enable the exit command
";

/// Options that take an argument (pen's getopt string, SSL ones included).
const WITH_ARG: &str = "BCFOSTbceijlmopqtuwxEKGAL";

fn secs(opt: char, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("-{opt}: {v:?} is not a number of seconds"))
}

fn count(opt: char, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("-{opt}: {v:?} is not a positive number"))
}

/// pen's listen argument: `[host:]port`, split at the last `:` (so `::1:2222` works); a bare
/// port is every IPv4 address.
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if s.contains('/') {
        return Err(format!(
            "listen {s:?}: unix-socket listeners are not supported by fwlb"
        ));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("0.0.0.0", s),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("listen {s:?}: bad port {port:?}"))?;
    let spec = server_spec::ServerSpec {
        host: if host.is_empty() {
            "0.0.0.0".into()
        } else {
            host.into()
        },
        port: Some(port),
        max: None,
        hard: None,
        weight: None,
        prio: None,
    };
    server_spec::resolve(&spec, port)
}

/// pen's -C: `[addr:]port` or a unix socket path. A bare port binds loopback, not every
/// address as pen did: the control port has no authentication.
fn control_addr(s: &str) -> Result<Control, String> {
    if s.contains('/') {
        return Ok(Control::Unix(PathBuf::from(s)));
    }
    if let Ok(p) = s.parse::<u16>() {
        return Ok(Control::Tcp(SocketAddr::from(([127, 0, 0, 1], p))));
    }
    let a = listen_addr(s).map_err(|e| format!("-C: {e}"))?;
    if !a.ip().is_loopback() {
        return Err(format!(
            "-C {s}: the control port has no authentication; on a non-loopback address it needs a config file with control_allow"
        ));
    }
    Ok(Control::Tcp(a))
}

/// pen's options as the command line set them (pen's defaults otherwise).
struct Options {
    daemon: Daemon,
    /// Mode commands from option flags (-h, -r, -s, -W), run first.
    flags: Vec<String>,
    /// -o commands.
    o_cmds: Vec<String>,
    pen_file: Option<PathBuf>,
    foreground: bool,
    debug: u8,
    emergency: Option<String>,
    http: bool,
    blacklist: Duration,
    tracking: Duration,
    connect_timeout: Duration,
    max_clients: usize,
    max_connections: usize,
    backlog: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            daemon: Daemon {
                control: None,
                ..Daemon::default()
            },
            flags: Vec::new(),
            o_cmds: Vec::new(),
            pen_file: None,
            foreground: false,
            debug: 0,
            emergency: None,
            http: false,
            blacklist: defaults::BLACKLIST,
            tracking: Duration::ZERO,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            // pen's defaults for the tables: -c 2048, -x 500.
            max_clients: defaults::MAX_CLIENTS,
            max_connections: 500,
            backlog: defaults::BACKLOG,
        }
    }
}

impl Options {
    /// Read the options (getopt style: clustered flags, a value attached or in the next
    /// argument, `--` ends them); also the index of the first operand.
    fn read(args: &[String]) -> Result<(Options, usize), String> {
        let mut o = Options::default();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if a == "--" {
                i += 1;
                break;
            }
            if !a.starts_with('-') || a.len() == 1 {
                break;
            }
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let opt = chars[k];
                let val = if WITH_ARG.contains(opt) {
                    let rest: String = chars[k + 1..].iter().collect();
                    k = chars.len();
                    if rest.is_empty() {
                        i += 1;
                        Some(
                            args.get(i)
                                .cloned()
                                .ok_or_else(|| format!("option -{opt} needs an argument"))?,
                        )
                    } else {
                        Some(rest)
                    }
                } else {
                    k += 1;
                    None
                };
                o.set(opt, val.as_deref().unwrap_or(""))?;
            }
            i += 1;
        }
        Ok((o, i))
    }

    /// One option and its value ("" for a flag).
    fn set(&mut self, opt: char, v: &str) -> Result<(), String> {
        let d = &mut self.daemon;
        match opt {
            'b' => self.blacklist = Duration::from_secs(secs(opt, v)?),
            'c' => self.max_clients = count(opt, v)?,
            'C' => d.control = Some(control_addr(v)?),
            'd' => self.debug = self.debug.saturating_add(1),
            'e' => self.emergency = Some(v.to_string()),
            'f' => self.foreground = true,
            'F' => self.pen_file = Some(PathBuf::from(v)),
            'h' => self.flags.push("hash".into()),
            'H' => self.http = true,
            'j' => d.chroot = Some(PathBuf::from(v)),
            'o' | 'O' => self.o_cmds.push(v.to_string()),
            'p' => d.pidfile = Some(PathBuf::from(v)),
            'q' => self.backlog = count(opt, v)?.min(65_535) as u32,
            'r' => self.flags.push("roundrobin".into()),
            's' => self.flags.push("stubborn".into()),
            't' => {
                let t = secs(opt, v)?;
                if t < 1 {
                    return Err("-t: the connect timeout must be at least 1 second".into());
                }
                self.connect_timeout = Duration::from_secs(t);
            }
            'T' => self.tracking = Duration::from_secs(secs(opt, v)?),
            'u' => d.user = Some(v.to_string()),
            'W' => self.flags.push("weight".into()),
            'x' => self.max_connections = count(opt, v)?,
            'X' => d.control_exit = true,
            // Accepted and meaningless here: accepts per wake-up, poll(2), ASCII dumps.
            'm' | 'P' | 'a' => {}
            // Obsolete in pen itself: a notice and nothing else (-S still takes a value).
            'D' | 'n' | 'Q' | 'S' => {}
            'i' => return Err("-i: Windows only".into()),
            'U' => return Err("-U (UDP) is not supported by fwlb".into()),
            'l' | 'w' | 'B' => {
                return Err(format!(
                    "-{opt} is not supported by fwlb (use the control port's show/status commands)"
                ));
            }
            'E' | 'K' | 'G' | 'A' | 'Z' | 'R' | 'L' => {
                return Err(format!("-{opt}: SSL termination is not supported by fwlb"));
            }
            other => return Err(format!("unknown option -{other}")),
        }
        Ok(())
    }
}

/// The command-line servers, and the `server N ...` commands that set them again after a -F
/// file.
fn servers(args: &[String], default_port: u16) -> Result<(Vec<Server>, Vec<String>), String> {
    let mut servers = Vec::new();
    let mut server_cmds = Vec::new();
    for (n, s) in args.iter().enumerate() {
        let sp = server_spec::parse(s)?;
        let addr = server_spec::resolve(&sp, default_port)?;
        // pen's defaults: every omitted field is 0 (weight 0 = never chosen by -W).
        // pen resolves a host name once, at start (its semantics; `fwlb run` resolves at run time).
        let srv = Server {
            addr,
            name: None,
            max: sp.max.unwrap_or(0),
            hard: sp.hard.unwrap_or(0),
            weight: sp.weight.unwrap_or(0),
            prio: sp.prio.unwrap_or(0),
            health: None,
        };
        server_cmds.push(format!(
            "server {n} address {} port {} max {} hard {} weight {} prio {}",
            addr.ip(),
            addr.port(),
            srv.max,
            srv.hard,
            srv.weight,
            srv.prio
        ));
        servers.push(srv);
    }
    Ok((servers, server_cmds))
}

/// Parse pen's command line (the arguments after `fwlb pen`).
pub fn parse(args: &[String]) -> Result<PenRun, String> {
    let (o, i) = Options::read(args)?;
    let rest = &args[i..];
    let Some(listen) = rest.first() else {
        return Err("no listen address given".into());
    };
    let listen = listen_addr(listen)?;
    if rest.len() < 2 && o.pen_file.is_none() {
        return Err("no servers given".into());
    }
    let (servers, server_cmds) = servers(&rest[1..], listen.port())?;
    let emergency = match &o.emergency {
        None => None,
        Some(e) => {
            let sp = server_spec::parse(e).map_err(|x| format!("-e: {x}"))?;
            let addr = server_spec::resolve(&sp, listen.port()).map_err(|x| format!("-e: {x}"))?;
            Some(Server::plain(addr))
        }
    };
    let mut commands = o.flags;
    commands.extend(o.o_cmds);
    if let Some(f) = &o.pen_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("-F {}: {e}", f.display()))?;
        commands.extend(text.lines().map(str::to_string));
        // Command-line servers win over the file's entries with the same index (pen's init).
        commands.extend(server_cmds);
    }
    let balancer = Balancer {
        name: "pen".into(),
        listen: vec![listen],
        servers,
        servers_srv: None,
        algorithm: Algorithm::Sticky,
        emergency,
        blacklist: o.blacklist,
        tracking: o.tracking,
        connect_timeout: o.connect_timeout,
        idle_timeout: Duration::ZERO,
        max_clients: o.max_clients,
        max_connections: o.max_connections,
        backlog: o.backlog,
        proxy_protocol: super::ProxyProtocol::None,
        accept_proxy: false,
        http_forwarded_for: o.http,
        trusted_proxies: Vec::new(),
        connection_log: false,
        resolve_prefer: Default::default(),
        // pen has no active checks.
        health: super::Health::with(super::Check::None),
        slowstart: Duration::ZERO,
        on_down: super::OnDown::Keep,
        head_timeout: super::defaults::HEAD_TIMEOUT,
        keepalive_timeout: super::defaults::KEEPALIVE_TIMEOUT,
    };
    Ok(PenRun {
        config: Config {
            path: PathBuf::from("(pen command line)"),
            daemon: o.daemon,
            balancers: vec![balancer],
            vrrp: Vec::new(),
            firewall: None,
            resolver: Default::default(),
        },
        commands,
        pen_file: o.pen_file,
        foreground: o.foreground,
        debug: o.debug,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<PenRun, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn runit_style_line() {
        let r = p("-f -r -b 10 -t 2 -x 900 -C 127.0.0.1:8888 -X 8080 10.0.0.1 10.0.0.2:81:5:6:7:8")
            .unwrap();
        assert!(r.foreground);
        let b = &r.config.balancers[0];
        assert_eq!(b.listen[0], "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            b.servers[0].addr,
            "10.0.0.1:8080".parse().unwrap(),
            "port defaults to the listen port"
        );
        assert_eq!(
            (
                b.servers[1].max,
                b.servers[1].hard,
                b.servers[1].weight,
                b.servers[1].prio
            ),
            (5, 6, 7, 8)
        );
        assert_eq!(b.servers[0].weight, 0, "pen's default weight");
        assert_eq!(b.blacklist, Duration::from_secs(10));
        assert_eq!(b.connect_timeout, Duration::from_secs(2));
        assert_eq!(b.max_connections, 900);
        assert!(r.config.daemon.control_exit);
        assert_eq!(r.commands, vec!["roundrobin"]);
    }

    #[test]
    fn combined_flags_and_attached_values() {
        let r = p("-fhs -b5 -C8888 127.0.0.1:80 10.0.0.1").unwrap();
        assert_eq!(r.commands, vec!["hash", "stubborn"]);
        assert_eq!(r.config.balancers[0].blacklist, Duration::from_secs(5));
        assert_eq!(
            r.config.daemon.control,
            Some(Control::Tcp("127.0.0.1:8888".parse().unwrap()))
        );
        let r = p("[::1]:2222 [::1]:80").unwrap();
        assert_eq!(
            r.config.balancers[0].listen[0],
            "[::1]:2222".parse().unwrap()
        );
        let r = p("::1:2222 [::1]:80").unwrap();
        assert_eq!(
            r.config.balancers[0].listen[0],
            "[::1]:2222".parse().unwrap()
        );
    }

    #[test]
    fn refusals() {
        assert!(p("-t 0 80 10.0.0.1").unwrap_err().contains("at least 1"));
        assert!(p("-U 80 10.0.0.1").unwrap_err().contains("UDP"));
        assert!(
            p("-C 0.0.0.0:8888 80 10.0.0.1")
                .unwrap_err()
                .contains("control_allow")
        );
        assert!(p("-f").unwrap_err().contains("no listen"));
        assert!(p("80").unwrap_err().contains("no servers"));
        assert!(p("-b").unwrap_err().contains("needs an argument"));
        assert!(p("-k 80 1.2.3.4").unwrap_err().contains("unknown option"));
    }
}
