//! The command line: parse arguments and hand over; no logic here.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A redundant firewall + TCP load balancer (pen + freevrrpd + pf rules, in one binary).
#[derive(Parser)]
#[command(name = "fwlb", version, about)]
struct Cli {
    /// More log detail (-d: debug, -dd: trace). RUST_LOG overrides.
    #[arg(short = 'd', long = "debug", action = clap::ArgAction::Count, global = true)]
    debug: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

const DEFAULT_CONFIG: &str = "/etc/fwlb/fwlb.toml";

/// `-c FILE` of the commands that read a configuration.
#[derive(Args)]
struct ConfigFile {
    /// The configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// Where this host's control port is (`fwlb ctl`, `fwlb drill`).
#[derive(Args)]
struct ControlPort {
    /// This host's control address, HOST:PORT or a unix socket path [default: the control of
    /// -c FILE, else $FWLB_CONTROL, else 127.0.0.1:8888].
    #[arg(short = 'C', long = "control")]
    control: Option<String>,
    /// Take this host's control address from this configuration file.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground (for runit, daemontools, rc.d, systemd).
    Run {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Validate a configuration: print `configuration OK` or every error as FILE:LINE:COL.
    Check {
        #[command(flatten)]
        file: ConfigFile,
        /// Validate an unmodified freevrrpd.conf instead, and print the [[vrrp]] sections it
        /// becomes.
        #[arg(long, value_name = "FILE", conflicts_with = "config")]
        freevrrpd: Option<PathBuf>,
        /// Also print exactly what would be installed: the nft script or the pf anchor.
        #[arg(long)]
        firewall: bool,
    },
    /// Run VRRP from an unmodified freevrrpd.conf (freevrrpd's command line: -f, -F, -c).
    Vrrpd {
        /// The freevrrpd configuration.
        #[arg(short = 'f', default_value = "/usr/local/etc/freevrrpd.conf")]
        file: PathBuf,
        /// Stay in the foreground (fwlb always does; accepted for freevrrpd's -F).
        #[arg(short = 'F')]
        foreground: bool,
        /// freevrrpd's chroot directory: refused (VRRP needs root to change addresses).
        #[arg(short = 'c')]
        chroot: Option<PathBuf>,
    },
    /// Send a command to a running daemon's control port (penctl's job, with exit codes).
    Ctl {
        #[command(flatten)]
        control: ControlPort,
        /// Ask for the JSON form and print it indented.
        #[arg(long)]
        json: bool,
        /// The command and its arguments, e.g. `server 1 blacklist 600` or `show servers`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a balancer from pen's own command line (pen -f ... becomes fwlb pen -f ...).
    #[command(disable_help_flag = true)]
    Pen {
        /// pen's options, listen address and servers (see `fwlb pen --usage`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A mock backend: answers every connection with what it saw (peer, PROXY header, HTTP
    /// request line and headers) as JSON.
    Echo {
        /// Addresses to listen on (ADDR:PORT).
        #[arg(required = true)]
        listen: Vec<std::net::SocketAddr>,
        /// A name to put in every answer (which server answered).
        #[arg(long)]
        name: Option<String>,
        /// Accept connections and never answer (a hung server, for health-check tests).
        #[arg(long)]
        hang: bool,
        /// Answer HTTP requests for PATH with 503 (a failing health endpoint).
        #[arg(long, value_name = "PATH")]
        fail_health: Option<String>,
        /// Also answer TEXT and a newline on PORT of the listening address to every
        /// connection (HAProxy's agent check: `up`, `down`, `drain`, `50%` ...).
        #[arg(long, num_args = 2, value_names = ["PORT", "TEXT"])]
        agent: Option<Vec<String>>,
    },
    /// Find the conversations behind the balancer that carry a client's address in
    /// X-Forwarded-For, in a pcap or pcapng capture ("-" reads standard input).
    Trace {
        /// The capture file.
        pcap: PathBuf,
        /// The client address to look for.
        #[arg(long)]
        client: std::net::IpAddr,
        /// One JSON object per conversation.
        #[arg(long)]
        json: bool,
    },
    /// Show the balancer working on this machine: built-in backends on loopback, clients,
    /// a server killed mid-way. Needs nothing but this binary.
    Demo,
    /// A whole pair on this machine (Linux, root): network namespaces built from two host
    /// configurations, mock servers, a traffic check and failover drills, then a report.
    Lab(LabArgs),
    /// A planned handover on a real pair, run on the master: hand every VRID to the peer
    /// (`vrrp standby`), confirm it holds and serves them, take them back; print the timeline.
    /// Refuses unless the peer answers and is a healthy backup.
    Drill(DrillArgs),
}

#[derive(Args)]
struct LabArgs {
    /// The directory holding the two host configurations (*.toml) [default: conf/lab
    /// if there is one here, else the pair built into this binary].
    dir: Option<PathBuf>,
    /// The report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// Leave the network and daemons up afterwards, and say how to enter them.
    #[arg(long)]
    keep: bool,
    /// Only remove what an earlier lab left (namespaces, processes), then exit.
    #[arg(long, conflicts_with_all = ["json", "keep"])]
    clean: bool,
    /// Run only these drills (comma-separated or repeated): kill, front-link, back-link,
    /// term, restore; `none` for none.
    #[arg(long = "drill", value_name = "NAME")]
    drills: Option<Vec<String>>,
}

#[derive(Args)]
struct DrillArgs {
    /// The peer's control port, HOST:PORT (its control_allow must list this host).
    #[arg(long)]
    peer: String,
    #[command(flatten)]
    control: ControlPort,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    /// Where the load loop connects (repeatable) [default: every balancer address on a
    /// VIP].
    #[arg(long = "target", value_name = "ADDR:PORT")]
    targets: Vec<std::net::SocketAddrV4>,
}

fn level_name(debug: u8) -> &'static str {
    match debug {
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// Logging to stderr, one line per event, no timestamps (svlogd and multilog add their own).
/// Returns the function that changes the level at run time (the control port's `debug N`).
fn init_log(debug: u8) -> fwlb::control::SetLevel {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level_name(debug)));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_target(true)
                .with_writer(fwlb::logging::Writer::default()),
        )
        .init();
    Box::new(move |n| {
        let _ = handle.modify(|f| *f = tracing_subscriber::EnvFilter::new(level_name(n)));
    })
}

/// The control address from `-C`, else the `control` of `-c FILE`, else $FWLB_CONTROL, else
/// 127.0.0.1:8888.
fn control_address(port: ControlPort) -> Result<String, String> {
    match (port.control, port.config) {
        (Some(a), _) => Ok(a),
        (None, Some(c)) => match fwlb::config::load(&c) {
            Ok(cfg) => match cfg.daemon.control {
                Some(c) => Ok(fwlb::control::describe(&c)),
                None => Err(format!("{} has control = \"none\"", c.display())),
            },
            Err(e) => Err(e.to_string()),
        },
        (None, None) => {
            Ok(std::env::var("FWLB_CONTROL").unwrap_or_else(|_| "127.0.0.1:8888".into()))
        }
    }
}

/// `fwlb ctl COMMAND...`: the daemon's reply; exit 1 if it refused, 2 if it did not answer.
fn ctl(control: ControlPort, json: bool, command: Vec<String>) -> ExitCode {
    let addr = match control_address(control) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fwlb ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut line = command.join(" ");
    if json {
        line.push_str(" json");
    }
    match fwlb::control::client::request(&addr, &line) {
        Ok(reply) => {
            let out = if json {
                fwlb::control::client::pretty(&reply)
            } else {
                reply.clone()
            };
            print!("{out}");
            if fwlb::control::client::is_error(&reply) {
                let first = reply.lines().next().unwrap_or("").trim();
                eprintln!("fwlb ctl: the daemon refused `{line}`: {first}");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("fwlb ctl: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ctl only prints the daemon's reply: it needs no logging.
    if let Cmd::Ctl {
        control,
        json,
        command,
    } = cli.cmd
    {
        return ctl(control, json, command);
    }
    let log = Log {
        set_level: init_log(cli.debug),
        debug: cli.debug,
    };
    match cli.cmd {
        Cmd::Ctl { .. } => ExitCode::SUCCESS,
        Cmd::Check {
            freevrrpd: Some(f), ..
        } => check_freevrrpd(&f),
        Cmd::Check {
            file,
            freevrrpd: None,
            firewall,
        } => check(&file.config, firewall),
        Cmd::Vrrpd {
            file,
            foreground: _,
            chroot,
        } => vrrpd(&file, chroot.is_some(), log),
        Cmd::Run { file } => run(file.config, log),
        Cmd::Pen { args } => pen(&args, log),
        Cmd::Echo {
            listen,
            name,
            hang,
            fail_health,
            agent,
        } => {
            let agent = match agent.as_deref() {
                None => None,
                Some([port, text]) => match port.parse::<u16>() {
                    Ok(p) => Some((p, text.clone())),
                    Err(_) => {
                        eprintln!("fwlb echo: --agent: {port:?} is not a port");
                        return ExitCode::from(2);
                    }
                },
                Some(_) => None,
            };
            let mode = fwlb::lab::echo::Mode {
                name,
                hang,
                fail_health,
                agent,
            };
            outcome("fwlb echo", fwlb::lab::echo::run(&listen, mode))
        }
        Cmd::Trace { pcap, client, json } => trace(&pcap, client, json),
        Cmd::Lab(args) => lab(args),
        Cmd::Drill(args) => drill(args),
        Cmd::Demo => outcome("fwlb demo", fwlb::demo::run()),
    }
}

/// SUCCESS, or the error after `prefix` and FAILURE.
fn outcome<T, E: std::fmt::Display>(prefix: &str, r: Result<T, E>) -> ExitCode {
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prefix}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A lab or drill's exit status (0 pass, 1 fail, 2 could not run).
#[cfg(target_os = "linux")]
fn status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// What the daemon gets from the command line's logging set-up.
struct Log {
    set_level: fwlb::control::SetLevel,
    debug: u8,
}

impl Log {
    fn options(self) -> fwlb::daemon::Options {
        fwlb::daemon::Options {
            set_level: self.set_level,
            debug: self.debug,
            ..Default::default()
        }
    }
}

/// `fwlb check --freevrrpd FILE`: the [[vrrp]] sections it becomes.
fn check_freevrrpd(file: &Path) -> ExitCode {
    match fwlb::config::freevrrpd::load(file) {
        Ok(imp) => {
            for n in &imp.notes {
                eprintln!("{n}");
            }
            print!("{}", fwlb::config::vrrp_toml(&imp.config.vrrp));
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `fwlb check -c FILE [--firewall]`.
fn check(file: &Path, firewall: bool) -> ExitCode {
    let cfg = match fwlb::config::load(file) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for note in fwlb::daemon::unsupported(&cfg) {
        eprintln!("{}: note: {note}", file.display());
    }
    for warning in fwlb::resolver::check_names(&cfg) {
        eprintln!("{}: warning: {warning}", file.display());
    }
    match fwlb::firewall::build(&cfg) {
        Err(errs) => {
            for e in errs {
                eprintln!("{}: [firewall]: {e}", file.display());
            }
            return ExitCode::FAILURE;
        }
        Ok(rs) if firewall => match rs.backend {
            fwlb::firewall::Backend::Nftables => print!("{}", fwlb::firewall::nft::render(&rs)),
            fwlb::firewall::Backend::Pf => print!("{}", fwlb::firewall::pf::render(&rs)),
            fwlb::firewall::Backend::None => {
                println!("# [firewall] backend = \"none\": nothing is installed")
            }
        },
        Ok(_) => {}
    }
    println!("configuration OK");
    ExitCode::SUCCESS
}

/// `fwlb vrrpd -f FILE`: the daemon from a freevrrpd.conf.
fn vrrpd(file: &Path, chroot: bool, log: Log) -> ExitCode {
    if chroot {
        eprintln!("fwlb vrrpd: -c (chroot) is refused: adding and removing addresses needs root");
        return ExitCode::FAILURE;
    }
    let imp = match fwlb::config::freevrrpd::load(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for n in &imp.notes {
        tracing::info!(target: "vrrp", "{n}");
    }
    outcome("fwlb", fwlb::daemon::run(imp.config, log.options()))
}

/// `fwlb run -c FILE`: the daemon.
fn run(file: PathBuf, log: Log) -> ExitCode {
    let cfg = match fwlb::config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Connected now, before any fork or chroot.
    if cfg.daemon.log == fwlb::config::LogTarget::Syslog
        && let Err(e) = fwlb::logging::to_syslog()
    {
        eprintln!(
            "fwlb: {}: log = \"syslog\": cannot connect: {e}",
            file.display()
        );
        return ExitCode::FAILURE;
    }
    let opts = fwlb::daemon::Options {
        config_file: Some(file),
        ..log.options()
    };
    outcome("fwlb", fwlb::daemon::run(cfg, opts))
}

/// `fwlb pen ...`: a balancer from pen's command line, with pen's semantics.
fn pen(args: &[String], log: Log) -> ExitCode {
    if args
        .first()
        .is_some_and(|a| a == "--usage" || a == "--help")
    {
        print!("{}", fwlb::config::pen::USAGE);
        return ExitCode::SUCCESS;
    }
    let run = match fwlb::config::pen::parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprint!("fwlb pen: {e}\n{}", fwlb::config::pen::USAGE);
            return ExitCode::FAILURE;
        }
    };
    if run.debug > 0 {
        (log.set_level)(run.debug);
    }
    // pen without -f logs to syslog; without a syslog daemon, stderr still works until it
    // detaches.
    if !run.foreground
        && let Err(e) = fwlb::logging::to_syslog()
    {
        eprintln!("fwlb pen: cannot log to syslog: {e}");
    }
    let opts = fwlb::daemon::Options {
        debug: run.debug,
        pen_file: run.pen_file,
        commands: run.commands,
        foreground: run.foreground,
        ..log.options()
    };
    outcome("fwlb", fwlb::daemon::run(run.config, opts))
}

/// `fwlb trace PCAP --client IP`.
fn trace(pcap: &Path, client: std::net::IpAddr, json: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let opts = fwlb::trace::Options { client, json };
    outcome("fwlb trace", fwlb::trace::run(pcap, &opts, &mut out))
}

#[cfg(target_os = "linux")]
fn lab(args: LabArgs) -> ExitCode {
    status(fwlb::lab::run::main(fwlb::lab::run::Options {
        dir: args.dir,
        json: args.json,
        keep: args.keep,
        clean: args.clean,
        drills: args.drills,
    }))
}

#[cfg(not(target_os = "linux"))]
fn lab(_: LabArgs) -> ExitCode {
    eprintln!("fwlb lab: network namespaces are Linux only");
    ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
fn drill(args: DrillArgs) -> ExitCode {
    let local = match control_address(args.control) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fwlb drill: {e}");
            return ExitCode::FAILURE;
        }
    };
    status(fwlb::lab::pair::main(fwlb::lab::pair::Options {
        peer: args.peer,
        local,
        json: args.json,
        targets: args.targets,
    }))
}

#[cfg(not(target_os = "linux"))]
fn drill(_: DrillArgs) -> ExitCode {
    eprintln!("fwlb drill: Linux only in this version");
    ExitCode::FAILURE
}
