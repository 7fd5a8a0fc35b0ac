//! Running nft(8): fwlb hands it whole scripts on standard input, so a ruleset is replaced in
//! one transaction (nft applies a file atomically) and a failed apply changes nothing.

use std::io::Write;
use std::process::{Command, Stdio};

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
    let mut child = Command::new(nft_path())
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e} (apt-get install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot feed nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft did not finish: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Apply a script (a ruleset, or set changes).
pub fn apply(script: &str) -> Result<(), String> {
    run(&[], script).map(|_| ())
}

/// Check a script without changing anything (`nft -c`).
pub fn check(script: &str) -> Result<(), String> {
    run(&["-c"], script).map(|_| ())
}
