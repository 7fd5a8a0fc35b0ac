//! Running nft(8): fwlb hands it whole scripts on standard input, so a ruleset is replaced in
//! one transaction (nft applies a file atomically) and a failed apply changes nothing.

use super::command::Failure;

/// Where nft lives; Debian's nftables package installs it in /usr/sbin.
fn nft_path() -> &'static str {
    for p in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "nft"
}

/// Run `nft [args] -f -` with `script` on stdin; Ok(stdout) or Err(stderr, trimmed).
pub fn run(args: &[&str], script: &str) -> Result<String, String> {
    let argv: Vec<&str> = args.iter().copied().chain(["-f", "-"]).collect();
    super::command::run(nft_path(), &argv, Some(script)).map_err(|f| match f {
        Failure::Spawn(e) => format!("cannot run nft: {e} (apt-get install nftables)"),
        Failure::Io(e) => e,
        Failure::Exit { stderr, .. } => stderr,
    })
}

/// Apply a script (a ruleset, or set changes).
pub fn apply(script: &str) -> Result<(), String> {
    run(&[], script).map(|_| ())
}

/// Check a script without changing anything (`nft -c`).
pub fn check(script: &str) -> Result<(), String> {
    run(&["-c"], script).map(|_| ())
}
