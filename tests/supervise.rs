//! The files of supervise/ under the real supervisors and tools: runit's runsv and
//! daemontools' svscan run the committed service directories (pointed at this build and a
//! loopback config through FWLB / FWLB_CONFIG / FWLB_LOGDIR), restart fwlb after kill -9,
//! pass hup/term/down on, log through svlogd/multilog, and pause on a broken config;
//! install.sh stages the expected tree and changes nothing the second time; the systemd
//! unit passes `systemd-analyze verify`; syslog logging reaches a socket standing in for
//! /dev/log. Needs the Debian packages runit, daemontools and systemd (.ci/run installs them):
//! without them the tests fail and say so.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    BIN, alive, children, free_addr, free_port, require_root, require_tool, send_signal, signal,
    tree_of, wait_for, wait_until,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A backend that greets each connection with `name\n` and closes.
fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("backend bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut s, format!("{name}\n").as_bytes());
        }
    });
    addr
}

/// What a client gets through the balancer, if it answers.
fn greeting(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out).filter(|o| !o.is_empty())
}

fn config(listen: SocketAddr, server: SocketAddr, extra: &str) -> String {
    format!(
        "[daemon]\ncontrol = \"none\"\nshutdown_timeout = \"1s\"\n{extra}\n[[balancer]]\nname = \"t\"\nlisten = \"{listen}\"\nservers = [\"{server}\"]\n"
    )
}

/// kill -9 of `victim`; `other` must exit within 3 s (`who` names it and why).
fn kill_takes_down(victim: i32, other: i32, who: &str) {
    signal("KILL", victim);
    let what = format!("{who} exits promptly");
    wait_until(&what, Duration::from_secs(3), || !alive(other));
}

#[derive(Clone, Copy, PartialEq)]
enum Sup {
    Runit,
    Daemontools,
}

/// A copy of a committed service directory under its real supervisor: runsv (runit) or
/// svscan (daemontools), in a process group of its own that is killed at the end.
struct Service {
    sup: Sup,
    _dir: tempfile::TempDir,
    svc: PathBuf,
    logdir: PathBuf,
    config: PathBuf,
    /// What `config` held at the start.
    config_text: String,
    /// runit only: a ./finish that records run's exit code and signal.
    exits: PathBuf,
    process: Child,
    listen: SocketAddr,
    seen: Mutex<Vec<i32>>,
}

fn copy_exec(from: &Path, to: &Path) {
    let mode = std::fs::metadata(from)
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "{} is not executable (commit it with mode 755)",
        from.display()
    );
    std::fs::copy(from, to).expect("copy");
}

impl Service {
    /// fwlb with `extra` keys in [daemon], listening on a free loopback port (`listen`) for a
    /// backend that greets with "b1", under `sup`.
    fn start(sup: Sup, extra: &str) -> Service {
        let (tools, package) = match sup {
            Sup::Runit => (["runsv", "sv", "svlogd"], "runit"),
            Sup::Daemontools => (["svscan", "svc", "multilog"], "daemontools"),
        };
        for tool in tools {
            require_tool(tool, package);
        }
        let listen = free_addr();
        let config_text = config(listen, backend("b1"), extra);
        let dir = tempfile::tempdir().expect("tempdir");
        let kind = match sup {
            Sup::Runit => "runit",
            Sup::Daemontools => "daemontools",
        };
        let src = Path::new(REPO).join("supervise").join(kind).join("fwlb");
        // svscan wants a directory of services; runsv takes the service directory itself.
        let svc = dir.path().join("services").join("fwlb");
        std::fs::create_dir_all(svc.join("log")).expect("mkdir");
        copy_exec(&src.join("run"), &svc.join("run"));
        copy_exec(&src.join("log").join("run"), &svc.join("log").join("run"));
        let exits = dir.path().join("exits");
        if sup == Sup::Runit {
            let finish = svc.join("finish");
            std::fs::write(
                &finish,
                format!("#!/bin/sh\necho \"$1 $2\" >> {}\n", exits.display()),
            )
            .expect("finish");
            std::fs::set_permissions(&finish, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let logdir = dir.path().join("log");
        std::fs::create_dir(&logdir).expect("mkdir log");
        let config = dir.path().join("fwlb.toml");
        std::fs::write(&config, &config_text).expect("config");
        let mut cmd = match sup {
            Sup::Runit => {
                let mut c = Command::new("runsv");
                c.arg(&svc);
                c
            }
            Sup::Daemontools => {
                let mut c = Command::new("svscan");
                c.arg(dir.path().join("services"));
                c
            }
        };
        use std::os::unix::process::CommandExt;
        let process = cmd
            .env("FWLB", BIN)
            .env("FWLB_CONFIG", &config)
            .env("FWLB_LOGDIR", &logdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the supervisor");
        Service {
            sup,
            _dir: dir,
            svc,
            logdir,
            config,
            config_text,
            exits,
            process,
            listen,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The pid the supervisor started (fwlb's parent), while it runs.
    fn pid(&self) -> Option<i32> {
        let out = match self.sup {
            Sup::Runit => Command::new("sv").arg("status").arg(&self.svc).output(),
            Sup::Daemontools => Command::new("svstat").arg(&self.svc).output(),
        }
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = text.split(';').next().unwrap_or("");
        let up = match self.sup {
            Sup::Runit => first.starts_with("run: "),
            Sup::Daemontools => first.contains(": up (pid "),
        };
        if !up {
            return None;
        }
        let pid = first
            .split_once("(pid ")
            .and_then(|(_, r)| r.split(')').next())
            .and_then(|p| p.parse::<i32>().ok())?;
        if let Ok(mut seen) = self.seen.lock()
            && !seen.contains(&pid)
        {
            seen.push(pid);
        }
        Some(pid)
    }

    /// hup, term, down, up, exit: `sv CMD` or the `svc` flag for it.
    fn ctl(&self, what: &str) {
        let st = match self.sup {
            Sup::Runit => Command::new("sv").arg(what).arg(&self.svc).output(),
            Sup::Daemontools => {
                let flag = match what {
                    "hup" => "-h",
                    "term" => "-t",
                    "down" => "-d",
                    "up" => "-u",
                    "exit" => "-dx",
                    other => panic!("no svc flag for {other}"),
                };
                Command::new("svc").arg(flag).arg(&self.svc).output()
            }
        }
        .expect("sv/svc");
        // sv waits 7 s for the state it asked for and says "timeout" otherwise; the tests
        // wait for what they need themselves.
        assert!(
            st.status.success() || String::from_utf8_lossy(&st.stdout).contains("timeout"),
            "{what}: {}{}",
            String::from_utf8_lossy(&st.stdout),
            String::from_utf8_lossy(&st.stderr)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logdir.join("current")).unwrap_or_default()
    }

    fn exits(&self) -> Vec<String> {
        std::fs::read_to_string(&self.exits)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The line of the supervisor's log (`logger`'s) that says fwlb listens, once it is there.
    fn listening_line(&self, logger: &str) -> String {
        let what = format!("a `listening` line in the {logger} log");
        wait_for(&what, Duration::from_secs(5), || {
            let log = self.log();
            let line = log.lines().find(|l| l.contains("INFO lb: listening"))?;
            Some(line.to_string())
        })
    }

    /// kill -9 of fwlb `pid`: the supervisor starts another, which serves; returns its pid.
    fn restarted_after_kill(&self, pid: i32) -> i32 {
        signal("KILL", pid);
        self.serving_again(Some(pid), "a new fwlb after kill -9")
    }

    /// `hup`: fwlb `pid` keeps running.
    fn hup_keeps(&self, pid: i32) {
        self.ctl("hup");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(self.pid(), Some(pid), "SIGHUP must not stop fwlb");
    }

    /// `down`: fwlb `pid` stops and nothing serves.
    fn down_stops(&self, pid: i32) {
        self.ctl("down");
        wait_until("down to stop fwlb", Duration::from_secs(10), || {
            self.pid().is_none() && !alive(pid) && greeting(self.listen).is_none()
        });
    }

    /// Wait until fwlb runs under a pid other than `old` and serves; returns the pid.
    fn serving_again(&self, old: Option<i32>, what: &str) -> i32 {
        wait_for(what, Duration::from_secs(20), || {
            let p = self.pid()?;
            (Some(p) != old && greeting(self.listen).as_deref() == Some("b1\n")).then_some(p)
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Stop the service and let the supervisor exit; then make sure of it.
        if self.sup == Sup::Daemontools {
            let _ = Command::new("svc")
                .arg("-dx")
                .arg(&self.svc)
                .arg(self.svc.join("log"))
                .output();
        } else {
            let _ = Command::new("sv")
                .arg("-w")
                .arg("3")
                .arg("exit")
                .arg(&self.svc)
                .output();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.sup == Sup::Runit {
            if let Ok(Some(_)) = self.process.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left, one pid at a time: the supervisor, what runs below it, and every
        // fwlb seen (with its child), which may have been reparented.
        let mut pids = tree_of(self.process.id() as i32);
        let ours = self.config.to_string_lossy().into_owned();
        for p in self.seen.lock().map(|s| s.clone()).unwrap_or_default() {
            // A pid seen earlier may have been reused since: only fwlb of this config.
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&ours) {
                pids.extend(tree_of(p));
            }
        }
        for p in pids {
            if alive(p) {
                send_signal("KILL", p);
            }
        }
        let _ = self.process.wait();
    }
}

/// runsv runs supervise/runit/fwlb: it serves; svlogd timestamps its lines; kill -9 is
/// followed by a restart; `sv hup` keeps the process; `sv term` is a clean exit (0) and a
/// restart; a broken config is reported once and retried after a pause, not every second;
/// `sv down` stops it.
#[test]
fn runit_runs_restarts_and_signals_fwlb() {
    let s = Service::start(Sup::Runit, "");
    let listen = s.listen;

    let p1 = s.serving_again(None, "fwlb serving under runsv");
    // exec 2>&1 and ./log/run: fwlb's lines reach svlogd, which prefixes -tt timestamps.
    let line = s.listening_line("svlogd");
    let stamp = line.split(' ').next().unwrap_or("");
    assert!(
        stamp.len() >= 19 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[10] == b'_',
        "svlogd -tt stamp expected: {line:?}"
    );
    assert!(
        s.log().contains("configuration OK"),
        "the run script checks first: {}",
        s.log()
    );

    let p2 = s.restarted_after_kill(p1);
    wait_until(
        "runsv's ./finish for the killed run",
        Duration::from_secs(5),
        || s.exits().iter().any(|l| l == "-1 9"),
    );

    s.hup_keeps(p2);
    assert_eq!(greeting(listen).as_deref(), Some("b1\n"));

    s.ctl("term");
    let p3 = s.serving_again(Some(p2), "a new fwlb after sv term");
    assert!(
        s.exits().iter().any(|l| l == "0 0"),
        "SIGTERM is a planned stop: exit 0; exits seen: {:?}",
        s.exits()
    );

    // A broken file: errors in the log once, then a pause (runsv alone would restart
    // fwlb every second).
    std::fs::write(&s.config, "[daemon]\nnot_a_key = 1\n").expect("break config");
    s.ctl("term");
    wait_until(
        "the broken config reported in the log",
        Duration::from_secs(10),
        || s.log().contains("has errors (above)"),
    );
    assert!(
        s.log().contains("unknown key `not_a_key`"),
        "the check's own error text is logged: {}",
        s.log()
    );
    assert!(greeting(listen).is_none(), "nothing serves a broken config");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        s.log().matches("has errors (above)").count(),
        1,
        "restarted within seconds: {}",
        s.log()
    );
    assert_ne!(s.pid(), Some(p3));
    // Fixed: `sv term` (as `sv restart`) retries at once.
    std::fs::write(&s.config, &s.config_text).expect("fix config");
    s.ctl("term");
    let p4 = s.serving_again(Some(p3), "fwlb back after the config was fixed");

    s.down_stops(p4);
}

/// With the privileged parent and the chrooted child (issue 6): kill -9 of the child makes the
/// parent exit non-zero at once, and runsv brings a new pair up; kill -9 of the parent makes
/// the old child exit, and again a new pair serves.
#[test]
fn runit_restarts_the_pair_after_kill_of_child_or_parent() {
    require_root("this test runs fwlb's root parent and chrooted child");
    let jail = tempfile::tempdir().expect("jail");
    std::fs::set_permissions(jail.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let extra = format!("user = \"nobody\"\nchroot = \"{}\"", jail.path().display());
    let s = Service::start(Sup::Runit, &extra);
    let child_of = |parent: i32| {
        wait_for(
            &format!(
                "one child process of fwlb's parent (pid {parent}): the privileged parent / chrooted child split"
            ),
            Duration::from_secs(5),
            || match children(parent).as_slice() {
                [c] => Some(*c),
                _ => None,
            },
        )
    };

    let parent = s.serving_again(None, "fwlb serving under runsv");
    let child = child_of(parent);
    kill_takes_down(child, parent, "the parent, its child killed,");
    let exits = wait_for(
        "runsv's ./finish for the parent",
        Duration::from_secs(3),
        || s.exits().last().cloned(),
    );
    let code: i32 = exits
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(
        code > 0,
        "the parent must exit non-zero (not by a signal) when the child dies: ./finish got {exits:?}"
    );
    let parent2 = s.serving_again(Some(parent), "a new pair after kill -9 of the child");

    let child2 = child_of(parent2);
    kill_takes_down(parent2, child2, "the child, its parent killed,");
    let parent3 = s.serving_again(Some(parent2), "a new pair after kill -9 of the parent");
    assert_ne!(child_of(parent3), child2);
}

/// svscan runs supervise/daemontools/fwlb with its log service: multilog timestamps the
/// lines; kill -9 is followed by a restart; `svc -h` keeps the process; `svc -t` restarts.
#[test]
fn daemontools_runs_restarts_and_signals_fwlb() {
    let s = Service::start(Sup::Daemontools, "");

    let p1 = s.serving_again(None, "fwlb serving under svscan/supervise");
    let line = s.listening_line("multilog");
    assert!(
        line.starts_with("@4000"),
        "multilog t stamp expected: {line:?}"
    );

    let p2 = s.restarted_after_kill(p1);
    s.hup_keeps(p2);
    s.ctl("term");
    let p3 = s.serving_again(Some(p2), "a new fwlb after svc -t");
    s.down_stops(p3);
}

/// Everything under `root`: path, type and mode, owner, and content for files and links.
fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        let rel = p.strip_prefix(root).expect("prefix").display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).expect("link").display())
        } else if m.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .expect("readdir")
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            stack.extend(entries);
            "dir".into()
        } else {
            let data = std::fs::read(&p).expect("read");
            format!("{} bytes, mtime {}", data.len(), m.mtime())
        };
        out.push(format!(
            "/{rel} {:o} {}:{} {what}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        ));
    }
    out.sort();
    out
}

fn install(args: &[&str]) -> String {
    let out = Command::new("sh")
        .arg(Path::new(REPO).join("supervise/install.sh"))
        .args(["--bin", BIN, "--no-user", "--user", "nobody"])
        .args(args)
        .output()
        .expect("sh install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {args:?}: {text}");
    text
}

/// install.sh into a DESTDIR: the binary, the root-owned chroot with the user's state
/// directory, the config (root only), the runit service with this install's paths and its
/// link, the systemd unit; the second run changes nothing. The FreeBSD layout likewise.
#[test]
fn install_sh_stages_the_tree_and_is_idempotent() {
    require_root("install.sh sets owners");
    let d = tempfile::tempdir().expect("destdir");
    let dest = d.path().to_str().expect("utf8");
    let first = install(&["--destdir", dest, "--runit", "--enable", "--systemd"]);
    assert!(first.contains("installed"), "{first}");
    let t = tree(d.path());
    let has = |line: &str| {
        assert!(
            t.iter().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{}",
            t.join("\n")
        )
    };
    has("/usr/local/sbin/fwlb 755 0:0 ");
    has("/var/lib/fwlb 755 0:0 dir");
    has("/var/lib/fwlb/state 750 65534:65534 dir");
    has("/etc/fwlb/fwlb.toml 640 0:0 ");
    has("/var/log/fwlb 750 0:0 dir");
    has("/etc/sv/fwlb/run 755 0:0 ");
    has("/etc/sv/fwlb/log/run 755 0:0 ");
    has("/etc/service/fwlb 777 0:0 -> /etc/sv/fwlb");
    has("/etc/systemd/system/fwlb.service 644 0:0 ");
    assert_eq!(
        std::fs::read(d.path().join("usr/local/sbin/fwlb")).expect("bin"),
        std::fs::read(BIN).expect("BIN")
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("etc/fwlb/fwlb.toml")).expect("conf"),
        std::fs::read_to_string(Path::new(REPO).join("conf/fwlb.toml")).expect("conf")
    );

    let again = install(&["--destdir", dest, "--runit", "--enable", "--systemd"]);
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(tree(d.path()), t, "the second run changed the tree");
    // An edited config is the admin's: never overwritten.
    std::fs::write(d.path().join("etc/fwlb/fwlb.toml"), "# mine\n").expect("edit");
    install(&["--destdir", dest, "--runit", "--enable", "--systemd"]);
    assert_eq!(
        std::fs::read_to_string(d.path().join("etc/fwlb/fwlb.toml")).expect("conf"),
        "# mine\n"
    );

    // FreeBSD's layout, with another prefix written into the rc.d script and run file.
    let f = tempfile::tempdir().expect("destdir");
    let fdest = f.path().to_str().expect("utf8");
    let args = [
        "--destdir",
        fdest,
        "--os",
        "FreeBSD",
        "--prefix",
        "/opt/fw",
        "--daemontools",
    ];
    install(&args);
    let t = tree(f.path());
    for line in [
        "/opt/fw/sbin/fwlb 755 0:0 ",
        "/opt/fw/etc/rc.d/fwlb 555 0:0 ",
        "/opt/fw/etc/fwlb/fwlb.toml 640 0:0 ",
        "/var/db/fwlb/state 750 65534:65534 dir",
        "/etc/sv/fwlb/log/run 755 0:0 ",
    ] {
        assert!(
            t.iter().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{}",
            t.join("\n")
        );
    }
    let rc = std::fs::read_to_string(f.path().join("opt/fw/etc/rc.d/fwlb")).expect("rc.d");
    assert!(
        rc.contains(": ${fwlb_binary:=\"/opt/fw/sbin/fwlb\"}"),
        "{rc}"
    );
    assert!(
        rc.contains(": ${fwlb_config:=\"/opt/fw/etc/fwlb/fwlb.toml\"}"),
        "{rc}"
    );
    let run = std::fs::read_to_string(f.path().join("etc/sv/fwlb/run")).expect("run");
    assert!(run.contains("FWLB=${FWLB:-/opt/fw/sbin/fwlb}"), "{run}");
    assert!(
        run.contains("multilog") || run.contains("svc -t"),
        "daemontools' run: {run}"
    );
    let again = install(&args);
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(tree(f.path()), t);
}

/// Every shipped script parses as POSIX sh (dash, Debian's /bin/sh), the rc.d script included.
#[test]
fn shipped_scripts_are_posix_sh() {
    require_tool("dash", "dash");
    for f in [
        "supervise/install.sh",
        "supervise/runit/fwlb/run",
        "supervise/runit/fwlb/log/run",
        "supervise/daemontools/fwlb/run",
        "supervise/daemontools/fwlb/log/run",
        "rc.d/fwlb",
    ] {
        let p = Path::new(REPO).join(f);
        let mode = std::fs::metadata(&p).expect(f).permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{f} is not executable");
        let out = Command::new("dash")
            .arg("-n")
            .arg(&p)
            .output()
            .expect("dash");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The unit passes `systemd-analyze verify` (with this build as its binary) and its
/// sandboxing scores as "OK" or better in `systemd-analyze security`.
#[test]
fn systemd_unit_verifies() {
    require_tool("systemd-analyze", "systemd");
    let d = tempfile::tempdir().expect("dir");
    let unit = std::fs::read_to_string(Path::new(REPO).join("supervise/systemd/fwlb.service"))
        .expect("unit");
    assert!(unit.contains("KillMode=mixed") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let p = d.path().join("fwlb.service");
    std::fs::write(&p, unit.replace("/usr/local/sbin/fwlb", BIN)).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify: {err}");
    assert!(
        !err.contains("fwlb.service"),
        "verify has something to say about the unit: {err}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&p)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for fwlb.service: "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(
        score < 4.0,
        "exposure {score} (4.0 and above is MEDIUM): {text}"
    );
}

/// Receives datagrams on a unix socket standing in for /dev/log.
fn syslog_socket(dir: &Path) -> (std::os::unix::net::UnixDatagram, PathBuf) {
    let path = dir.join("log");
    let s = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    (s, path)
}

fn recv_until(
    s: &std::os::unix::net::UnixDatagram,
    needle: &str,
) -> Result<String, std::io::Error> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = s.recv(&mut buf)?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains(needle) {
            return Ok(m);
        }
    }
}

/// The pid in `fwlb[PID]: `: `pid` itself or its child (the chrooted half of the pair).
fn sender(m: &str, pid: i32) -> i32 {
    let p: i32 = m
        .split_once(" fwlb[")
        .and_then(|(_, r)| r.split_once("]: "))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("no ` fwlb[PID]: ` in {m:?}"));
    assert!(
        p == pid || children(pid).contains(&p),
        "{m:?} was sent by {p}, neither fwlb ({pid}) nor its child"
    );
    p
}

/// `fwlb pen` without -f detaches and logs to syslog, as pen does: facility daemon, ident
/// fwlb with the detached process's pid, the stderr line's text.
#[test]
fn pen_without_dash_f_logs_to_syslog() {
    let d = tempfile::tempdir().expect("dir");
    let (sock, path) = syslog_socket(d.path());
    let pidfile = d.path().join("pen.pid");
    let listen = format!("127.0.0.1:{}", free_port());
    let st = Command::new(BIN)
        .args(["pen", "-p"])
        .arg(&pidfile)
        .args([listen.as_str(), "127.0.0.1:9"])
        .env("FWLB_SYSLOG_SOCKET", &path)
        .status()
        .expect("fwlb pen");
    assert!(st.success());
    let pid: i32 = wait_for("the pidfile", Duration::from_secs(5), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            send_signal("TERM", self.0);
        }
    }
    let _k = Kill(pid);
    let m = recv_until(&sock, "listening").expect("a syslog message saying `listening`");
    assert!(m.starts_with("<30>"), "daemon.info: {m}");
    assert!(
        m.ends_with(&format!(
            "]: INFO lb: listening balancer=pen listen={listen} servers=1 algorithm=\"sticky\""
        )),
        "{m}"
    );
    sender(&m, pid);
    signal("TERM", pid);
    let m = recv_until(&sock, "SIGTERM").expect("a syslog message about SIGTERM");
    // The privileged parent (the pidfile's pid) takes the signal and stops the child.
    assert!(m.contains("]: INFO priv: SIGTERM"), "{m}");
    assert_eq!(sender(&m, pid), pid, "{m}");
}

/// `[daemon] log = "syslog"` under `fwlb run`: every line goes to syslog, none to stderr.
#[test]
fn run_with_log_syslog_logs_to_syslog() {
    let d = tempfile::tempdir().expect("dir");
    let (sock, path) = syslog_socket(d.path());
    let listen = free_addr();
    let cfg = d.path().join("fwlb.toml");
    std::fs::write(&cfg, config(listen, backend("b1"), "log = \"syslog\"")).expect("config");
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env("FWLB_SYSLOG_SOCKET", &path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("fwlb run");
    let pid = child.id() as i32;
    let m = match recv_until(&sock, "listening") {
        Ok(m) => m,
        Err(e) => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "no syslog message ({e}); fwlb said: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    assert!(
        m.starts_with("<30>") && m.contains("]: INFO lb: listening"),
        "{m}"
    );
    sender(&m, pid);
    assert_eq!(greeting(listen).as_deref(), Some("b1\n"));
    signal("TERM", pid);
    recv_until(&sock, "exiting").expect("a syslog message saying `exiting`");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
}
