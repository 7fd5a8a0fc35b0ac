//! The command line: parse arguments and hand over; no logic here.

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
    },
    /// Show the balancer working on this machine: built-in backends on loopback, clients,
    /// a server killed mid-way. Needs nothing but this binary.
    Demo,
}

fn init_log(debug: u8) {
    let level = match debug {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // No timestamps: svlogd and multilog add their own. One line per event, with its target.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_ansi(false)
        .with_target(true)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_log(cli.debug);
    match cli.cmd {
        Cmd::Check { config } => match fwlb::config::load(&config) {
            Ok(cfg) => {
                for note in fwlb::daemon::unsupported(&cfg) {
                    eprintln!("{}: note: {note}", config.display());
                }
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { config } => {
            let cfg = match fwlb::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match fwlb::daemon::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fwlb: {e:#}");
                    ExitCode::FAILURE
                }
            }
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
