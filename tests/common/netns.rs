//! Network namespaces made by one test: hosts, switches (a bridge in a namespace of its own),
//! veth cables between them, and commands and daemons run inside.
//!
//! Names carry a prefix unique to the `Net` (`fwt-TAG-PID-N-`), so the tests of one binary
//! run in parallel, and a namespace a killed run left behind says whose it was. Dropping the
//! `Net` kills whatever still runs in its namespaces and deletes them, also when the test
//! panics. Declare the `Net` before the daemons that run in it: they drop first.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::host::{
    any_thread_alive, children, output, require_root, require_tool, send_signal, stdout_of,
};
use super::wait::{settles, wait_with};
use super::{BIN, Logged};

/// The namespaces of one test, deleted when dropped.
pub struct Net {
    prefix: String,
    made: Vec<Ns>,
}

impl Net {
    /// An empty network; `tag` makes its namespaces' names readable (`fwt-TAG-...`).
    pub fn new(tag: &str) -> Net {
        require_root("this test builds network namespaces");
        require_tool("ip", "iproute2");
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Net {
            prefix: format!("fwt-{tag}-{}-{n}-", std::process::id()),
            made: Vec::new(),
        }
    }

    /// A new namespace, with its loopback up.
    pub fn host(&mut self, name: &str) -> Ns {
        let ns = Ns(format!("{}{name}", self.prefix));
        let out = output(Command::new("ip").args(["netns", "add", &ns.0]));
        assert!(
            out.status.success(),
            "cannot create network namespace {}: {}",
            ns.0,
            String::from_utf8_lossy(&out.stderr)
        );
        self.made.push(ns.clone());
        ns.link("lo", true);
        ns
    }

    /// A switch: a namespace holding bridge `br0`, up; `plug` cables hosts into it.
    pub fn switch(&mut self, name: &str) -> Ns {
        let sw = self.host(name);
        sw.ip(&["link", "add", "br0", "type", "bridge"]);
        sw.link("br0", true);
        sw
    }

    /// A veth cable from `a_dev` in `a` to `b_dev` in `b`, both ends up.
    pub fn cable(&self, a: &Ns, a_dev: &str, b: &Ns, b_dev: &str) {
        a.ip(&[
            "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.0,
        ]);
        a.link(a_dev, true);
        b.link(b_dev, true);
    }

    /// `dev` of `host` cabled to port `port` of switch `sw`.
    pub fn plug(&self, sw: &Ns, port: &str, host: &Ns, dev: &str) {
        self.cable(sw, port, host, dev);
        sw.ip(&["link", "set", port, "master", "br0"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Whatever a test left running in it (a daemon's child, a client) goes first.
            let pids = Command::new("ip").args(["netns", "pids", &ns.0]).output();
            let text = pids.map(|o| o.stdout).unwrap_or_default();
            for pid in String::from_utf8_lossy(&text).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    send_signal("KILL", pid);
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        }
    }
}

/// One network namespace, by name: of a `Net`, or one a program under test made
/// (`Ns::named`). Cloning it copies the name only.
#[derive(Clone, Debug)]
pub struct Ns(String);

impl Ns {
    /// A namespace this test did not make (it is not deleted by anyone here).
    pub fn named(name: &str) -> Ns {
        Ns(name.to_string())
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// Its file, for setns(2).
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.0)
    }

    /// `ip -n NS ARGS`; it must succeed. Returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        stdout_of(Command::new("ip").arg("-n").arg(&self.0).args(args))
    }

    pub fn addr(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
    }

    /// Link `dev` up or down (pulling a cable, from the end it is called on).
    pub fn link(&self, dev: &str, up: bool) {
        self.ip(&["link", "set", dev, if up { "up" } else { "down" }]);
    }

    /// `ip -o addr show dev DEV`: one line per address.
    pub fn addrs(&self, dev: &str) -> String {
        self.ip(&["-o", "addr", "show", "dev", dev])
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> String {
        let out = self.ip(&["-o", "link", "show", dev]);
        word_after(&out, "link/ether").unwrap_or_default()
    }

    /// `dev`'s link-local address once duplicate address detection is done with it (up to 5 s).
    pub fn link_local(&self, dev: &str) -> Ipv6Addr {
        let show = || self.ip(&["-6", "-o", "addr", "show", "dev", dev, "scope", "link"]);
        let usable = || {
            let out = show();
            let addr = word_after(&out, "inet6")?;
            let addr = addr.split('/').next()?.parse().ok()?;
            (!out.contains("tentative")).then_some(addr)
        };
        let why = || {
            format!(
                "no usable link-local address on {dev} in {}: {}",
                self.0,
                show()
            )
        };
        wait_with(Duration::from_secs(5), usable, why)
    }

    /// The neighbour entry for `addr` on `dev`: its MAC, and whether it says "router".
    pub fn neighbour(&self, addr: &str, dev: &str) -> (Option<String>, bool) {
        let out = self.ip(&["neigh", "show", addr, "dev", dev]);
        let router = out.split_whitespace().any(|w| w == "router");
        (word_after(&out, "lladdr"), router)
    }

    pub fn sysctl(&self, setting: &str) {
        self.run(&["sysctl", "-qw", setting]);
    }

    /// `ip netns exec NS ARGS` as a command, to add to before it runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// `args` run inside, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(self.command(args).stdin(Stdio::null()))
    }

    /// `args` run inside; it must succeed. Returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        stdout_of(self.command(args).stdin(Stdio::null()))
    }

    /// A python3 program run inside; it must succeed. Returns its stdout.
    pub fn python(&self, code: &str) -> String {
        self.run(&["python3", "-c", code])
    }

    /// `fwlb ARGS` run inside, whatever the exit status.
    pub fn fwlb(&self, args: &[&str]) -> Output {
        let mut all = vec![BIN];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    /// `fwlb ctl --json show vrrp` on the default control port (every config here uses it).
    pub fn show_vrrp(&self) -> serde_json::Value {
        let out = self.fwlb(&["ctl", "-C", "127.0.0.1:8888", "--json", "show", "vrrp"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "show vrrp in {}: {e}: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// A daemon inside: `args` (the program first), its stdout and stderr in its log.
    pub fn spawn(&self, args: &[&str]) -> NsDaemon {
        NsDaemon::spawn_in(self, tempfile::tempdir().expect("tempdir"), args)
    }

    /// `fwlb run` with `config` inside.
    pub fn daemon(&self, config: &str) -> NsDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("fwlb.toml");
        std::fs::write(&cfg, config).expect("write the config");
        let cfg = cfg.to_str().expect("a UTF-8 temporary path").to_string();
        NsDaemon::spawn_in(self, dir, &[BIN, "run", "-c", &cfg])
    }

    /// keepalived with `conf` inside, in the foreground, logging to its log.
    pub fn keepalived(&self, conf: &str) -> NsDaemon {
        require_tool("keepalived", "keepalived");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let (path, pid, vpid) = (file("keepalived.conf"), file("k.pid"), file("v.pid"));
        std::fs::write(&path, conf).expect("write keepalived.conf");
        let args = [
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
            &path,
            "-p",
            &pid,
            "-r",
            &vpid,
        ];
        NsDaemon::spawn_in(self, dir, &args)
    }
}

/// The word after `key` in `text` (`lladdr 02:..`, `link/ether 02:..`, `inet6 fe80::..`).
fn word_after(text: &str, key: &str) -> Option<String> {
    text.split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .map(str::to_string)
}

/// A program run in a network namespace (`ip netns exec` execs it, so the pid is the
/// program's), with a directory of its own for its files and its log; it and its children
/// are killed when it is dropped.
pub struct NsDaemon {
    pub child: Child,
    dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl NsDaemon {
    fn spawn_in(ns: &Ns, dir: tempfile::TempDir, args: &[&str]) -> NsDaemon {
        let log = dir.path().join("log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = ns
            .command(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", ns.0));
        NsDaemon { child, dir, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its directory (config, pid files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Send `sig` to the program (not to its children); a process already gone is no error.
    pub fn signal(&self, sig: &str) {
        send_signal(sig, self.pid());
    }

    /// Its exit status, if it exits within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        settles(limit, Duration::from_millis(5), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// A crash: SIGKILL the program's children first (fwlb's unprivileged speaker), then the
    /// program. Killing only fwlb's parent is a planned handover: the child sees it go, sends
    /// priority 0 and exits.
    pub fn crash(&self) {
        let kids = children(self.pid());
        assert!(
            !kids.is_empty(),
            "{} has no child process to crash",
            self.pid()
        );
        for k in kids.iter().chain([&self.pid()]) {
            send_signal("KILL", *k);
        }
    }

    /// Kill it and its children now, and wait until every thread of them is gone: a child
    /// holds ports (fwlb's control port) that the next daemon in this namespace needs.
    pub fn kill(&mut self) {
        // Once reaped its pid may be another process's: then there is nothing of it to kill
        // (children it left behind were reparented; the `Net` kills them).
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let kids = children(self.pid());
        for k in &kids {
            send_signal("KILL", *k);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        settles(Duration::from_secs(3), Duration::from_millis(10), || {
            !kids.iter().any(|k| any_thread_alive(*k))
        });
    }
}

impl Logged for NsDaemon {
    fn log_file(&self) -> &Path {
        &self.log
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
