//! The command line: parse arguments and hand over; no logic here.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground (for runit, daemontools, rc.d, systemd).
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration: print `configuration OK` or every error as FILE:LINE:COL.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
        /// The control address, HOST:PORT or a unix socket path [default: the control of
        /// -c FILE, else $FWLB_CONTROL, else 127.0.0.1:8888].
        #[arg(short = 'C', long = "control")]
        control: Option<String>,
        /// Take the control address from this configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
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
    Lab {
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
    },
    /// A planned handover on a real pair, run on the master: hand every VRID to the peer
    /// (`vrrp standby`), confirm it holds and serves them, take them back; print the timeline.
    /// Refuses unless the peer answers and is a healthy backup.
    Drill {
        /// The peer's control port, HOST:PORT (its control_allow must list this host).
        #[arg(long)]
        peer: String,
        /// This host's control port [default: the control of -c FILE, else $FWLB_CONTROL,
        /// else 127.0.0.1:8888].
        #[arg(short = 'C', long = "control")]
        control: Option<String>,
        /// Take this host's control address from this configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Where the load loop connects (repeatable) [default: every balancer address on a
        /// VIP].
        #[arg(long = "target", value_name = "ADDR:PORT")]
        targets: Vec<std::net::SocketAddrV4>,
    },
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
fn control_address(control: Option<String>, config: Option<PathBuf>) -> Result<String, String> {
    match (control, config) {
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

fn ctl(
    control: Option<String>,
    config: Option<PathBuf>,
    json: bool,
    command: Vec<String>,
) -> ExitCode {
    let addr = match control_address(control, config) {
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
    if let Cmd::Ctl {
        control,
        config,
        json,
        command,
    } = cli.cmd
    {
        return ctl(control, config, json, command);
    }
    let set_level = init_log(cli.debug);
    match cli.cmd {
        Cmd::Ctl { .. } => ExitCode::SUCCESS,
        Cmd::Check {
            config,
            freevrrpd: Some(f),
            ..
        } => {
            let _ = config;
            match fwlb::config::freevrrpd::load(&f) {
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
        Cmd::Check {
            config,
            freevrrpd: None,
            firewall,
        } => match fwlb::config::load(&config) {
            Ok(cfg) => {
                for note in fwlb::daemon::unsupported(&cfg) {
                    eprintln!("{}: note: {note}", config.display());
                }
                match fwlb::firewall::build(&cfg) {
                    Err(errs) => {
                        for e in errs {
                            eprintln!("{}: [firewall]: {e}", config.display());
                        }
                        return ExitCode::FAILURE;
                    }
                    Ok(rs) if firewall => match cfg.firewall.as_ref().map(|f| f.backend.as_str()) {
                        Some("nftables") => print!("{}", fwlb::firewall::nft::render(&rs)),
                        Some("pf") => print!("{}", fwlb::firewall::pf::render(&rs)),
                        _ => println!("# [firewall] backend = \"none\": nothing is installed"),
                    },
                    Ok(_) => {}
                }
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Vrrpd {
            file,
            foreground: _,
            chroot,
        } => {
            if chroot.is_some() {
                eprintln!(
                    "fwlb vrrpd: -c (chroot) is refused: adding and removing addresses needs root"
                );
                return ExitCode::FAILURE;
            }
            let imp = match fwlb::config::freevrrpd::load(&file) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            for n in &imp.notes {
                tracing::info!(target: "vrrp", "{n}");
            }
            let opts = fwlb::daemon::Options {
                set_level,
                debug: cli.debug,
                ..Default::default()
            };
            match fwlb::daemon::run(imp.config, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fwlb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run { config } => {
            let cfg = match fwlb::config::load(&config) {
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
                    config.display()
                );
                return ExitCode::FAILURE;
            }
            let opts = fwlb::daemon::Options {
                set_level,
                debug: cli.debug,
                config_file: Some(config.clone()),
                ..Default::default()
            };
            match fwlb::daemon::run(cfg, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fwlb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Pen { args } => {
            if args
                .first()
                .is_some_and(|a| a == "--usage" || a == "--help")
            {
                print!("{}", fwlb::config::pen::USAGE);
                return ExitCode::SUCCESS;
            }
            let run = match fwlb::config::pen::parse(&args) {
                Ok(r) => r,
                Err(e) => {
                    eprint!("fwlb pen: {e}\n{}", fwlb::config::pen::USAGE);
                    return ExitCode::FAILURE;
                }
            };
            if run.debug > 0 {
                set_level(run.debug);
            }
            // pen without -f logs to syslog; without a syslog daemon, stderr still works
            // until it detaches.
            if !run.foreground
                && let Err(e) = fwlb::logging::to_syslog()
            {
                eprintln!("fwlb pen: cannot log to syslog: {e}");
            }
            let opts = fwlb::daemon::Options {
                set_level,
                debug: run.debug,
                pen_file: run.pen_file,
                commands: run.commands,
                foreground: run.foreground,
                config_file: None,
            };
            match fwlb::daemon::run(run.config, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fwlb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Echo { listen, name } => match fwlb::lab::echo::run(&listen, name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fwlb echo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Trace { pcap, client, json } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let opts = fwlb::trace::Options { client, json };
            match fwlb::trace::run(&pcap, &opts, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fwlb trace: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(target_os = "linux")]
        Cmd::Lab {
            dir,
            json,
            keep,
            clean,
            drills,
        } => {
            let code = fwlb::lab::run::main(fwlb::lab::run::Options {
                dir,
                json,
                keep,
                clean,
                drills,
            });
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        #[cfg(target_os = "linux")]
        Cmd::Drill {
            peer,
            control,
            config,
            json,
            targets,
        } => {
            let local = match control_address(control, config) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("fwlb drill: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = fwlb::lab::pair::main(fwlb::lab::pair::Options {
                peer,
                local,
                json,
                targets,
            });
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        #[cfg(not(target_os = "linux"))]
        Cmd::Drill { .. } => {
            eprintln!("fwlb drill: Linux only in this version");
            ExitCode::FAILURE
        }
        #[cfg(not(target_os = "linux"))]
        Cmd::Lab { .. } => {
            eprintln!("fwlb lab: network namespaces are Linux only");
            ExitCode::FAILURE
        }
        Cmd::Demo => match fwlb::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fwlb demo: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
