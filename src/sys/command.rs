//! Running a program with a script on standard input and collecting what it prints: how the
//! privileged parent drives nft(8) and pfctl(8), which take whole rulesets on stdin.

use std::io::{self, Write as _};
use std::process::{Command, ExitStatus, Stdio};

/// Why a run did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The program could not be started (not installed, not executable).
    Spawn(io::Error),
    /// Feeding it or waiting for it failed; the message names the program.
    Io(String),
    /// It ran and exited unsuccessfully, with what it said on stderr (trimmed).
    Exit { status: ExitStatus, stderr: String },
}

/// Run `prog args...`, feeding `stdin` if given (else /dev/null), and return its stdout.
///
/// The pipe is closed once the text is written, so the program reads to end of file. A failed
/// write still waits for the program, so none is left behind, and its own complaint (why it
/// stopped reading) wins over the broken pipe.
pub fn run<S: AsRef<std::ffi::OsStr>>(
    prog: &str,
    args: &[S],
    stdin: Option<&str>,
) -> Result<String, Failure> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Failure::Spawn)?;
    // The pipe is dropped (closed) at the end of this statement.
    let fed = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()).err(),
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(|e| Failure::Io(format!("{prog} did not finish: {e}")))?;
    if !out.status.success() {
        return Err(Failure::Exit {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    match fed {
        Some(e) => Err(Failure::Io(format!("cannot feed {prog}: {e}"))),
        None => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_reaches_the_program_and_stdout_comes_back() {
        let out = run("/bin/sh", &["-c", "tr a-z A-Z"], Some("anchor \"fwlb\"\n"));
        assert_eq!(out.ok().as_deref(), Some("ANCHOR \"FWLB\"\n"));
        let out = run("/bin/sh", &["-c", "cat; echo end"], None);
        assert_eq!(out.ok().as_deref(), Some("end\n"), "no stdin: /dev/null");
    }

    #[test]
    fn failures_say_which() {
        match run(
            "/bin/sh",
            &["-c", "echo 'Syntax error' >&2; exit 1"],
            Some("x"),
        ) {
            Err(Failure::Exit { status, stderr }) => {
                assert_eq!((status.code(), stderr.as_str()), (Some(1), "Syntax error"));
            }
            other => panic!("{other:?}"),
        }
        // A program that exits without reading a large input: its status is the failure.
        let big = "#\n".repeat(1 << 20);
        match run("/bin/sh", &["-c", "exit 2"], Some(&big)) {
            Err(Failure::Exit { status, .. }) => assert_eq!(status.code(), Some(2)),
            other => panic!("{other:?}"),
        }
        let none: &[&str] = &[];
        assert!(matches!(
            run("/nonexistent/pfctl", none, None),
            Err(Failure::Spawn(_))
        ));
    }
}
