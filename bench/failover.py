#!/usr/bin/env python3
"""failover.py - VRRP failover of fwlb and keepalived, side by side, in a network-namespace lab.

Run it through bench/failover.sh (installs keepalived, builds fwlb, then calls this).

  python3 bench/failover.py bench     the failover table (REPS runs per cell) -> bench/FAILOVER.md
  python3 bench/failover.py soak      fwlb pair at v3 20 ms for SOAK s under client load through
                                      fwlb's balancer; asserts no VRRP transition happened
  python3 bench/failover.py report    print the table of the last bench again (and rewrite FAILOVER.md)
  python3 bench/failover.py cleanup   kill what dead earlier runs left in namespaces fob<pid>n*, delete them

Lab (fresh namespaces for every run, names fob<pid>n<k>{sw,h1,h2,c}): a bridge namespace `sw`
(br0), hosts h1 (10.77.0.1, priority 150), h2 (10.77.0.2, priority 100) and a client c
(10.77.0.100), each with eth0 veth'd into br0 (ports p1, p2, pc). VIP 10.77.0.10/24, VRID 51.
Both routers run `fwlb echo 0.0.0.0:8080 --name hK`, so whoever holds the VIP answers, and the
JSON names the host. The pair is fwlb-vs-fwlb or keepalived-vs-keepalived (never mixed).

In the client a probe (one Python process, one thread) timestamps every VRRP advert with the
kernel's receive time (raw socket, protocol 112, SO_TIMESTAMPNS) and starts a connection to
VIP:8080 every 5 ms (each with a 100 ms timeout, attempts overlap), logging when each one was
answered and by whom. h1 is started first; once it holds the VIP, h2 is started; after a settle
time the fault is injected at a recorded time t0, a chosen fraction (random, 0.1..0.9, but the
same for fwlb and keepalived in run k of a cell) of an interval after an advert of h1 seen by the
client (a crash is detected Master_Down_Interval after the master's LAST advert, so the phase
alone spreads crash times over one interval; pairing the phases makes the columns comparable):
  crash   = kill -9 of h1's daemon (its VRRP child, then the parent, for both) + cable pull
            (`link set p1 down` in the bridge namespace, through an `ip -batch` already running,
            within ~1 ms): otherwise the killed master keeps the VIP and answers on it.
  planned = SIGTERM to h1's daemon (both send priority 0 and remove the VIP).
Measured from t0: h2's first advert (priority > 0) seen by the client, and the first client
connection answered by h2 ("service gap"). The client's ARP entry still points at h1 until h2's
gratuitous ARP arrives: that is part of the service gap.

Env: REPS=5 IMPLS="fwlb keepalived" SETTINGS="v2-1s v3-100ms v3-20ms" FAULTS="crash planned"
     WORKDIR=/tmp/fwlb-failover FWLB=$WORKDIR/fwlb (binary) OUT=bench/FAILOVER.md (""=don't)
     SOAK=600 (s) LOAD_RATE=200 (connections/s in the soak) LOAD_CONC=50 (at most in flight)
     CMDLINE (the command line to record; set by failover.sh)
"""

import json
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKDIR = os.environ.get("WORKDIR", "/tmp/fwlb-failover")
FWLB = os.environ.get("FWLB", os.path.join(WORKDIR, "fwlb"))
PREFIX = "fob"
VIP = "10.77.0.10"
PORT = 8080
VRID = 51
CLIENT = "10.77.0.100"
PASSWORD = "s3cret12"

SETTINGS = {
    # name: (version, interval s, label)
    "v2-1s": (2, 1.0, "v2 1 s"),
    "v3-100ms": (3, 0.1, "v3 100 ms"),
    "v3-20ms": (3, 0.02, "v3 20 ms"),
}


def skew(prio, interval):
    return (256 - prio) * interval / 256


def mdi(prio, interval):
    """Master_Down_Interval of a backup of priority `prio`."""
    return 3 * interval + skew(prio, interval)


# ----------------------------------------------------------------------------------------------
# The client-side probe (runs inside the client namespace).
PROBE = r'''
import argparse, errno, json, selectors, signal, socket, struct, sys, time
p = argparse.ArgumentParser()
p.add_argument("--vip"); p.add_argument("--port", type=int); p.add_argument("--src")
p.add_argument("--every", type=float); p.add_argument("--timeout", type=float)
p.add_argument("--inflight", type=int); p.add_argument("--duration", type=float)
p.add_argument("--out"); p.add_argument("--summary", type=float, default=0.0)
a = p.parse_args()
stop = False
def onsig(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, onsig)
signal.signal(signal.SIGINT, onsig)
out = open(a.out, "w", buffering=1)
sel = selectors.DefaultSelector()
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
raw.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
raw.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
               socket.inet_aton("224.0.0.18") + socket.inet_aton(a.src))
raw.setblocking(False)
sel.register(raw, selectors.EVENT_READ, None)
conns = {}  # socket -> [t_start, buf, phase]  phase: "c" connecting, "r" reading, "d" done (wait EOF)
ok = fail = 0
by = {}
errs = {}
logged_fail = 0
def log_fail(t0, now, why):
    global fail, logged_fail
    fail += 1
    errs[why] = errs.get(why, 0) + 1
    if a.summary == 0 or logged_fail < 2000:
        logged_fail += 1
        out.write("E %.6f %.6f %s\n" % (t0, now, why))
def close(s):
    try:
        sel.unregister(s)
    except Exception:
        pass
    s.close()
    conns.pop(s, None)
def start(now):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex((a.vip, a.port))
    if e not in (0, errno.EINPROGRESS):
        log_fail(now, time.time(), errno.errorcode.get(e, str(e)))
        s.close()
        return
    conns[s] = [now, b"", "c"]
    sel.register(s, selectors.EVENT_WRITE, "c")
def answered(s, c, now):
    global ok
    line = c[1].split(b"\n", 1)[0]
    try:
        who = json.loads(line).get("server") or "?"
    except Exception:
        who = "?"
    ok += 1
    by[who] = by.get(who, 0) + 1
    if a.summary == 0:
        out.write("C %.6f %.6f %s\n" % (c[0], now, who))
    c[2] = "d"
def on_conn(s):
    c = conns.get(s)
    if c is None:
        return
    now = time.time()
    if c[2] == "c":
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e:
            log_fail(c[0], now, errno.errorcode.get(e, str(e)))
            close(s)
            return
        try:
            s.send(b"ping\n")
        except OSError as x:
            log_fail(c[0], now, errno.errorcode.get(x.errno, str(x.errno)))
            close(s)
            return
        c[2] = "r"
        sel.modify(s, selectors.EVENT_READ, "r")
        return
    try:
        d = s.recv(4096)
    except BlockingIOError:
        return
    except OSError as x:
        if c[2] == "r":
            log_fail(c[0], now, errno.errorcode.get(x.errno, str(x.errno)))
        close(s)
        return
    if d:
        if c[2] == "r":
            c[1] += d
            if b"\n" in c[1]:
                answered(s, c, now)
        return
    if c[2] == "r":
        if c[1]:
            answered(s, c, now)
        else:
            log_fail(c[0], now, "eof")
    close(s)
def on_raw():
    while True:
        try:
            d, anc, _, _ = raw.recvmsg(2048, 256)
        except BlockingIOError:
            return
        t = time.time()
        for lvl, typ, cd in anc:
            if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cd) >= 16:
                sec, ns = struct.unpack("qq", cd[:16])
                t = sec + ns * 1e-9
        ihl = (d[0] & 15) * 4
        v = d[ihl:]
        if len(v) < 8:
            continue
        ver = v[0] >> 4
        intv = v[5] * 100 if ver == 2 else ((v[4] & 15) << 8) | v[5]
        out.write("A %.6f %s %d %d %d %d\n" % (t, socket.inet_ntoa(d[12:16]), v[1], v[2], ver, intv))
t_end = time.time() + a.duration
next_t = time.time()
next_sum = time.time() + (a.summary or 1e9)
maxin = 0
prev = time.time()
stalls = 0
while not stop:
    now = time.time()
    if now - prev > 0.015 and stalls < 5000:
        # This process did not run for a while: the whole machine (or this CPU) stalled.
        stalls += 1
        out.write("L %.6f %.1f\n" % (now, (now - prev) * 1000))
    prev = now
    if now >= t_end:
        break
    if now >= next_t:
        if len(conns) < a.inflight:
            start(now)
        while next_t <= now:
            next_t += a.every
    for s, c in list(conns.items()):
        if now - c[0] > a.timeout:
            if c[2] != "d":
                log_fail(c[0], now, "timeout")
            close(s)
    maxin = max(maxin, len(conns))
    if now >= next_sum:
        out.write("S %.6f %d %d %s %s %d\n" % (now, ok, fail, json.dumps(by, separators=(",", ":")),
                                              json.dumps(errs, separators=(",", ":")), maxin))
        next_sum += a.summary
    wait = max(0.0, min(next_t - time.time(), 0.005))
    for key, _ in sel.select(wait):
        if key.fileobj is raw:
            on_raw()
        else:
            on_conn(key.fileobj)
out.write("X %.6f %d %d %s %s %d\n" % (time.time(), ok, fail, json.dumps(by, separators=(",", ":")),
                                      json.dumps(errs, separators=(",", ":")), maxin))
out.close()
'''


# ----------------------------------------------------------------------------------------------
# Plumbing.
def sh(*args, check=True, timeout=30):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def log(msg):
    print(msg, flush=True)


def our_namespaces(mine_only=False):
    """Namespaces named fob<pid>n<k>...: this run's (mine_only), or those of runs no longer alive
    (a concurrent run's namespaces are left alone)."""
    out = sh("ip", "netns", "list", check=False)
    found = []
    for l in out.splitlines():
        name = l.split()[0] if l.split() else ""
        m = re.match(PREFIX + r"(\d+)n", name)
        if not m:
            continue
        pid = int(m.group(1))
        if mine_only:
            if pid == os.getpid():
                found.append(name)
        elif pid == os.getpid() or not os.path.exists(f"/proc/{pid}"):
            found.append(name)
    return found


def kill_ns(ns):
    """Kill every process in namespace `ns` (all started by this script) and delete it."""
    for _ in range(3):
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split() if p.isdigit()]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    sh("ip", "netns", "del", ns, check=False)


def cleanup_leftovers(mine_only=False):
    left = our_namespaces(mine_only)
    for ns in left:
        kill_ns(ns)
    return left


class Lab:
    """Bridge namespace + h1, h2 (routers) + c (client); everything in it dies with close()."""

    counter = 0

    def __init__(self):
        Lab.counter += 1
        self.tag = f"{PREFIX}{os.getpid()}n{Lab.counter}"
        self.sw, self.h1, self.h2, self.c = (self.tag + s for s in ("sw", "h1", "h2", "c"))
        self.procs = []
        self.batch = None
        self.namespaces = []
        LABS.append(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        for ns in (self.sw, self.h1, self.h2, self.c):
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        for host, port, addr in ((self.h1, "p1", "10.77.0.1"), (self.h2, "p2", "10.77.0.2"),
                                 (self.c, "pc", CLIENT)):
            sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", host)
            sh("ip", "-n", self.sw, "link", "set", port, "master", "br0")
            sh("ip", "-n", self.sw, "link", "set", port, "up")
            sh("ip", "-n", host, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", host, "link", "set", "eth0", "up")
        # An `ip` already running in the bridge namespace: a cable pull costs one write, not a fork.
        self.batch = self.spawn(["ip", "-o", "-n", self.sw, "-force", "-batch", "-"], None,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def spawn(self, argv, logfile, ns=None, **kw):
        if ns is not None:
            argv = ["ip", "netns", "exec", ns] + argv
        f = open(logfile, "w") if logfile else subprocess.DEVNULL
        kw.setdefault("stdout", f)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, stderr=f, **kw)
        self.procs.append(p)
        return p

    def cable(self, port, up):
        """Pull (or plug) a cable: returns the time the `ip` confirmed it (or None)."""
        self.batch.stdin.write(f"link set {port} {'up' if up else 'down'}\nlink show dev {port}\n".encode())
        self.batch.stdin.flush()
        r, _, _ = select.select([self.batch.stdout], [], [], 2.0)
        if not r:
            return None
        self.batch.stdout.readline()
        return time.time()

    def holds_vip(self, ns):
        return f"{VIP}/24" in sh("ip", "-n", ns, "-o", "addr", "show", "dev", "eth0", check=False)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces:
            kill_ns(ns)
        self.namespaces = []
        if self in LABS:
            LABS.remove(self)


LABS = []


# ----------------------------------------------------------------------------------------------
# The two implementations.
class Fwlb:
    name = "fwlb"

    def __init__(self, lab, ns, prio, setting, d, balancer=False):
        ver, iv, _ = SETTINGS[setting]
        self.lab, self.ns, self.log = lab, ns, os.path.join(d, f"fwlb-{ns[-2:]}.log")
        conf = os.path.join(d, f"fwlb-{ns[-2:]}.toml")
        ivs = {1.0: "1s", 0.1: "100ms", 0.02: "20ms"}[iv]
        text = (
            '[daemon]\ncontrol = "127.0.0.1:8888"\nshutdown_timeout = "1s"\n'
            f'[[vrrp]]\nvrid = {VRID}\ninterface = "eth0"\npriority = {prio}\n'
            f'addresses = ["{VIP}/24"]\nversion = {ver}\nadvert_interval = "{ivs}"\n'
        )
        if ver == 2:
            text += f'password = "{PASSWORD}"\n'
        if balancer:
            text += (f'[[balancer]]\nname = "www"\nlisten = "0.0.0.0:{PORT}"\n'
                     'servers = ["127.0.0.1:9001", "127.0.0.1:9002"]\nalgorithm = "roundrobin"\n')
        with open(conf, "w") as f:
            f.write(text)
        self.proc = lab.spawn([FWLB, "run", "-c", conf], self.log, ns=ns)

    def show(self):
        try:
            out = sh("ip", "netns", "exec", self.ns, FWLB, "ctl", "--json", "show", "vrrp",
                     check=False, timeout=5)
            return json.loads(out)["vrrp"][0]
        except Exception:
            return None

    def child(self):
        try:
            kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None

    def crash(self):
        # The unprivileged child (the speaker) first, then the privileged parent: killing the
        # parent alone is a planned handover (the child sends priority 0 and exits).
        c = self.child()
        if c:
            os.kill(c, signal.SIGKILL)
        os.kill(self.proc.pid, signal.SIGKILL)

    def term(self):
        os.kill(self.proc.pid, signal.SIGTERM)

    def pids(self):
        c = self.child()
        return [self.proc.pid] + ([c] if c else [])

    def warnings(self):
        try:
            text = open(self.log).read()
        except OSError:
            return []
        return [l for l in text.splitlines() if re.search(r"\b(WARN|ERROR)\b", l)]


class Keepalived:
    name = "keepalived"

    def __init__(self, lab, ns, prio, setting, d):
        ver, iv, _ = SETTINGS[setting]
        s = ns[-2:]
        self.lab, self.ns, self.log = lab, ns, os.path.join(d, f"keepalived-{s}.log")
        conf = os.path.join(d, f"keepalived-{s}.conf")
        self.pidf = os.path.join(d, f"k-{s}.pid")
        self.vpidf = os.path.join(d, f"kv-{s}.pid")
        auth = (f"  authentication {{\n    auth_type PASS\n    auth_pass {PASSWORD}\n  }}\n"
                if ver == 2 else "")
        adv = "1" if iv == 1.0 else f"{iv:g}"
        text = (
            f"global_defs {{\n  router_id fob_{s}\n  enable_script_security\n}}\n"
            f"vrrp_instance VI_{VRID} {{\n  state BACKUP\n  interface eth0\n"
            f"  virtual_router_id {VRID}\n  priority {prio}\n  version {ver}\n  advert_int {adv}\n"
            f"{auth}  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
        )
        with open(conf, "w") as f:
            f.write(text)
        self.proc = lab.spawn(
            ["keepalived", "-n", "-l", "-D", "-P", "-f", conf, "-p", self.pidf, "-r", self.vpidf,
             "-c", os.path.join(d, f"kc-{s}.pid"), "-b", os.path.join(d, f"kb-{s}.pid")],
            self.log, ns=ns)

    def show(self):
        return None

    def vrrp_pid(self):
        try:
            return int(open(self.vpidf).read().strip())
        except (OSError, ValueError):
            return None

    def crash(self):
        v = self.vrrp_pid()
        if v:
            os.kill(v, signal.SIGKILL)
        os.kill(self.proc.pid, signal.SIGKILL)

    def term(self):
        os.kill(self.proc.pid, signal.SIGTERM)

    def pids(self):
        return [p for p in (self.proc.pid, self.vrrp_pid()) if p]

    def warnings(self):
        return []


# ----------------------------------------------------------------------------------------------
class ProbeLog:
    """Incremental reader of the probe's output file."""

    def __init__(self, path):
        self.path, self.off, self.rest = path, 0, ""
        self.adverts = []  # (t, src, prio)
        self.conns = []  # (t_start, t_done, server or None, err)
        self.summaries = []
        self.stalls = []  # (t, ms): the probe's own loop did not run for ms before t
        self.final = None

    def poll(self):
        try:
            with open(self.path) as f:
                f.seek(self.off)
                data = f.read()
                self.off = f.tell()
        except FileNotFoundError:
            return
        data = self.rest + data
        lines = data.split("\n")
        self.rest = lines.pop()
        for l in lines:
            w = l.split()
            if not w:
                continue
            if w[0] == "A":
                self.adverts.append((float(w[1]), w[2], int(w[4])))
            elif w[0] == "C":
                self.conns.append((float(w[1]), float(w[2]), w[3], None))
            elif w[0] == "E":
                self.conns.append((float(w[1]), float(w[2]), None, w[3]))
            elif w[0] == "L":
                self.stalls.append((float(w[1]), float(w[2])))
            elif w[0] in "SX":
                rec = {"t": float(w[1]), "ok": int(w[2]), "fail": int(w[3]), "by": json.loads(w[4]),
                       "errs": json.loads(w[5]), "max_inflight": int(w[6])}
                if w[0] == "S":
                    self.summaries.append(rec)
                else:
                    self.final = rec


def start_probe(lab, d, every, timeout, inflight, duration, summary=0.0):
    path = os.path.join(d, "probe.out")
    src = os.path.join(WORKDIR, "probe.py")
    p = lab.spawn(["python3", "-u", src, "--vip", VIP, "--port", str(PORT), "--src", CLIENT,
                   "--every", str(every), "--timeout", str(timeout), "--inflight", str(inflight),
                   "--duration", str(duration), "--out", path, "--summary", str(summary)],
                  os.path.join(d, "probe.log"), ns=lab.c)
    return p, ProbeLog(path)


def stop_probe(p, pl):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    pl.poll()


def wait_until(cond, limit, step=0.01):
    t = time.time() + limit
    while time.time() < t:
        if cond():
            return True
        time.sleep(step)
    return cond()


def start_pair(impl, lab, setting, d, balancer=False):
    """h1 first, until it holds the VIP; then h2. Returns (d1, d2) or raises."""
    _, iv, _ = SETTINGS[setting]
    mk = (lambda ns, prio: Fwlb(lab, ns, prio, setting, d, balancer)) if impl == "fwlb" else \
         (lambda ns, prio: Keepalived(lab, ns, prio, setting, d))
    d1 = mk(lab.h1, 150)
    if not wait_until(lambda: lab.holds_vip(lab.h1), mdi(150, iv) + 3, 0.01):
        raise RuntimeError(f"h1 did not become master within {mdi(150, iv) + 3:.1f} s")
    d2 = mk(lab.h2, 100)
    return d1, d2


class Unstable(RuntimeError):
    """The lab was not in the wanted state before the fault (the run is retried)."""


def one_run(impl, setting, fault, rep):
    ver, iv, _ = SETTINGS[setting]
    d = os.path.join(WORKDIR, "runs", f"{impl}-{setting}-{fault}-{rep}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    res = {"impl": impl, "setting": setting, "fault": fault, "rep": rep, "notes": [], "dir": d}
    lab = Lab()
    try:
        for h in (lab.h1, lab.h2):
            lab.spawn([FWLB, "echo", f"0.0.0.0:{PORT}", "--name", h[-2:]],
                      os.path.join(d, f"echo-{h[-2:]}.log"), ns=h)
        probe, pl = start_probe(lab, d, every=0.005, timeout=0.1, inflight=40,
                                duration=mdi(150, iv) + 8 * iv + 20)
        d1, d2 = start_pair(impl, lab, setting, d)
        t_h2 = time.time()
        time.sleep(max(1.0, 3 * iv))
        # Stable: h1 alone holds the VIP, h2 never advertised, recent answers come from h1.
        pl.poll()
        now = time.time()
        if not lab.holds_vip(lab.h1) or lab.holds_vip(lab.h2):
            raise Unstable("not stable before the fault: VIP on " +
                               ",".join(h for h in (lab.h1, lab.h2) if lab.holds_vip(h)))
        h2_adv = [a for a in pl.adverts if a[1] == "10.77.0.2"]
        if h2_adv:
            ts = [a[0] for a in pl.adverts if a[1] == "10.77.0.1" and a[0] < h2_adv[0][0]]
            gap = (h2_adv[0][0] - ts[-1]) * 1000 if ts else float("nan")
            st = max([ms for t, ms in pl.stalls if abs(t - h2_adv[0][0]) < 0.2] or [0])
            raise Unstable(f"h2 advertised before the fault ({len(h2_adv)} adverts; h1's last advert "
                           f"{gap:.0f} ms before h2's first; the client's own loop stalled up to "
                           f"{st:.0f} ms around then)")
        if not [a for a in pl.adverts if a[1] == "10.77.0.1" and a[0] > t_h2]:
            raise Unstable("no advert from h1 seen by the client after h2 started")
        recent = [c for c in pl.conns if c[1] > now - 0.3]
        if not recent or any(c[2] != "h1" for c in recent):
            res["notes"].append("pre-fault: client answers in the last 300 ms: " +
                                json.dumps(sorted({str(c[2] or c[3]) for c in recent})))
        before = d2.show()
        if before is not None:
            res["h2_before"] = before
            if before.get("state") != "backup":
                res["notes"].append(f"h2 state before the fault: {before.get('state')}")
        # The fault, at a chosen phase of h1's advert cycle: a crash is detected Master_Down_Interval
        # after h1's LAST advert, so the time from the fault depends on where in the cycle it falls.
        # The phase is random but the same for both implementations in a given (setting, fault, rep).
        phase = random.Random(f"{setting}/{fault}/{rep}").uniform(0.1, 0.9)
        aim = time.time() + 3 * iv + 2
        while time.time() < aim:
            pl.poll()
            h1a = [x[0] for x in pl.adverts if x[1] == "10.77.0.1" and x[2] > 0]
            if h1a and time.time() < h1a[-1] + phase * iv - 0.0003:
                time.sleep(max(0.0, h1a[-1] + phase * iv - time.time()))
                break
            time.sleep(0.0005)
        else:
            res["notes"].append("could not place the fault in the advert cycle")
        res["phase"] = round(phase, 3)
        t0 = time.time()
        if fault == "crash":
            d1.crash()
            tc = lab.cable("p1", False)
            res["cable_pull_ms"] = None if tc is None else round((tc - t0) * 1000, 2)
        else:
            d1.term()
        res["t0"] = t0

        def done():
            pl.poll()
            a = any(x[1] == "10.77.0.2" and x[2] > 0 and x[0] > t0 for x in pl.adverts)
            c = any(x[2] == "h2" and x[1] > t0 for x in pl.conns)
            return a and c
        limit = mdi(100, iv) + 3
        if not wait_until(done, limit, 0.02):
            res["notes"].append(f"no complete takeover within {limit:.1f} s")
        # Watch a while for flapping.
        time.sleep(min(2.0, max(0.5, 5 * iv)))
        after = d2.show()
        if after is not None:
            res["h2_after"] = after
            if after.get("state") != "master":
                res["notes"].append(f"h2 state after: {after.get('state')}")
            if before is not None and after["transitions"] - before["transitions"] != 1:
                res["notes"].append(f"h2 transitions {before['transitions']} -> {after['transitions']}")
        h2_holds = lab.holds_vip(lab.h2)
        if not h2_holds:
            res["notes"].append("h2 does not hold the VIP at the end")
        if fault == "planned":
            if lab.holds_vip(lab.h1):
                res["notes"].append("h1 still holds the VIP after SIGTERM (split brain)")
            try:
                rc = d1.proc.wait(timeout=5)
                if rc != 0:
                    res["notes"].append(f"h1 daemon exited with {rc} after SIGTERM")
            except subprocess.TimeoutExpired:
                res["notes"].append("h1 daemon still running 5 s after SIGTERM")
        stop_probe(probe, pl)
        # Metrics.
        h2a = [a[0] for a in pl.adverts if a[1] == "10.77.0.2" and a[2] > 0 and a[0] > t0]
        h2c = [c[1] for c in pl.conns if c[2] == "h2" and c[1] > t0]
        h1_last = [a[0] for a in pl.adverts if a[1] == "10.77.0.1" and a[0] <= t0]
        h1_zero = [a[0] for a in pl.adverts if a[1] == "10.77.0.1" and a[2] == 0 and a[0] > t0]
        # h1 must be silent after the fault: after the cable pull (crash), after its own
        # priority-0 advert (planned; a regular advert due before SIGTERM is handled is fine).
        quiet = (min(h1_zero) if h1_zero else t0 + 1e9) if fault == "planned" else \
            t0 + (res.get("cable_pull_ms") or 0) / 1000
        h1_after = [a for a in pl.adverts if a[1] == "10.77.0.1" and a[2] > 0 and a[0] > quiet]
        res["first_advert_ms"] = round((min(h2a) - t0) * 1000, 1) if h2a else None
        res["gap_ms"] = round((min(h2c) - t0) * 1000, 1) if h2c else None
        res["h1_last_advert_before_ms"] = round((t0 - max(h1_last)) * 1000, 1) if h1_last else None
        if h1_last and h2a:
            res["detect_ms"] = round((min(h2a) - max(h1_last)) * 1000, 1)
        res["prio0_ms"] = round((min(h1_zero) - t0) * 1000, 1) if h1_zero else None
        if h2a and h2c:
            # Answers from nobody between h2's first answer and the end: the service did not settle.
            first = min(h2c)
            bad = [c for c in pl.conns if c[0] > first and c[2] != "h2"]
            if bad:
                res["notes"].append(f"{len(bad)} attempts after h2's first answer not answered by h2: "
                                    + json.dumps(sorted({str(c[2] or c[3]) for c in bad})))
            # The whole outage seen by the client: last answer before h2's first one.
            prev = [c[1] for c in pl.conns if c[2] and c[2] != "h2" and c[1] < first]
            res["outage_ms"] = round((first - max(prev)) * 1000, 1) if prev else None
        if h1_after:
            res["notes"].append(f"{len(h1_after)} adverts with priority > 0 from h1 after "
                                + ("its priority-0 advert" if fault == "planned" else "the cable pull"))
        res["warnings"] = (d1.warnings() + d2.warnings())[:20]
    except Unstable as e:
        res["notes"].append(f"UNSTABLE: {e}")
        res["unstable"] = True
        res.setdefault("first_advert_ms", None)
        res.setdefault("gap_ms", None)
    except Exception as e:  # one bad run does not stop the bench; it is reported
        res["notes"].append(f"ERROR: {e}")
        res.setdefault("first_advert_ms", None)
        res.setdefault("gap_ms", None)
    finally:
        lab.close()
    return res


# ----------------------------------------------------------------------------------------------
def fmt_cell(vals):
    v = [x for x in vals if x is not None]
    if not v:
        return "-"
    miss = len(vals) - len(v)
    s = f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})"
    if miss:
        s += f" [{miss} failed]"
    return s


def med(vals):
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None


def context():
    def q(*a):
        try:
            return subprocess.run(list(a), capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"
    kv = q("keepalived", "--version")
    kv = (kv or subprocess.run(["keepalived", "--version"], capture_output=True, text=True).stderr)
    rev = q("git", "-C", REPO, "rev-parse", "--short", "HEAD")
    dirty = q("git", "-C", REPO, "diff", "HEAD", "--name-only", "--", "src", "Cargo.toml", "Cargo.lock")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": os.uname().release,
        "keepalived": kv.splitlines()[0] if kv else "?",
        "fwlb": rev + (" + uncommitted changes in " + ", ".join(sorted(dirty.split()))
                       if dirty else ""),
        "fwlb_sha256": q("sha256sum", FWLB).split()[0] if os.path.exists(FWLB) else "?",
        "cpus": os.cpu_count(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "cmd": os.environ.get("CMDLINE", "python3 bench/failover.py " + " ".join(sys.argv[1:])),
    }


def write_section(name, text):
    out = os.environ.get("OUT", os.path.join(HERE, "FAILOVER.md"))
    if not out:
        return
    head = "# VRRP failover: fwlb and keepalived side by side (namespace lab)\n\n" \
           "Written by `bench/failover.sh` (see bench/failover.py for the method).\n"
    try:
        doc = open(out).read()
    except OSError:
        doc = head
    a, b = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{a}\n{text.rstrip()}\n{b}"
    if a in doc and b in doc:
        doc = doc[:doc.index(a)] + block + doc[doc.index(b) + len(b):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(out, "w") as f:
        f.write(doc if doc.endswith("\n") else doc + "\n")
    log(f"written: {out} (section {name})")


def bench():
    reps = int(os.environ.get("REPS", "5"))
    impls = os.environ.get("IMPLS", "fwlb keepalived").split()
    settings = os.environ.get("SETTINGS", "v2-1s v3-100ms v3-20ms").split()
    faults = os.environ.get("FAULTS", "crash planned").split()
    ctx = context()
    log(f"fwlb {ctx['fwlb']}, {ctx['keepalived']}, kernel {ctx['kernel']}, load {' '.join(ctx['loadavg'])}")
    log("crash = kill -9 + cable pull; planned = SIGTERM")
    results = []
    total = reps * len(settings) * len(faults) * len(impls)
    n = 0
    for rep in range(1, reps + 1):
        for setting in settings:
            for fault in faults:
                order = impls if rep % 2 else impls[::-1]  # alternate who goes first
                for impl in order:
                    n += 1
                    r = one_run(impl, setting, fault, rep)
                    for _ in range(2):  # bounded retries of a lab that was unstable before the fault
                        if not r.get("unstable"):
                            break
                        log(f"      ! {r['notes'][-1]} -> new lab, same run")
                        first = r["notes"][-1]
                        keep = f"{r['dir']}-unstable{_ + 1}"  # its logs, for the report
                        shutil.rmtree(keep, ignore_errors=True)
                        os.rename(r["dir"], keep)
                        r = one_run(impl, setting, fault, rep)
                        r["notes"].insert(0, f"retried: the first lab was {first[0].lower()}{first[1:]}")
                    results.append(r)
                    extra = f" (h1's last advert {r.get('h1_last_advert_before_ms')} ms before, detection " \
                        f"{r.get('detect_ms')} ms)" if fault == "crash" else f" (prio 0 at {r.get('prio0_ms')} ms)"
                    log(f"[{n}/{total}] {impl:10} {setting:8} {fault:7} rep {rep}: first advert "
                        f"{r['first_advert_ms']} ms, service gap {r['gap_ms']} ms{extra}"
                        + "".join(f"\n      ! {x}" for x in r["notes"])
                        + "".join(f"\n      log: {x}" for x in r.get("warnings", [])))
    with open(os.path.join(WORKDIR, "results.json"), "w") as f:
        json.dump({"context": ctx, "results": results, "reps": reps, "impls": impls,
                   "settings": settings, "faults": faults}, f, indent=1)
    render(ctx, results, reps, impls, settings, faults)


def render(ctx, results, reps, impls, settings, faults):
    """The table (printed and written to FAILOVER.md) from the results of bench()."""
    rows = []
    hdr = ["setting", "fault", "fwlb first advert ms", "keepalived first advert ms",
           "fwlb service gap ms", "keepalived service gap ms"]
    verdict = []
    for setting in settings:
        for fault in faults:
            cell = {}
            for impl in ("fwlb", "keepalived"):
                rs = [r for r in results if r["impl"] == impl and r["setting"] == setting and r["fault"] == fault]
                cell[impl] = ([r["first_advert_ms"] for r in rs], [r["gap_ms"] for r in rs])
            rows.append([SETTINGS[setting][2], fault] +
                        [fmt_cell(cell[i][0]) for i in ("fwlb", "keepalived")] +
                        [fmt_cell(cell[i][1]) for i in ("fwlb", "keepalived")])
            fg, kg = med(cell["fwlb"][1]), med(cell["keepalived"][1])
            # Runs are paired (same rep = same fault phase): compare run by run.
            by = {i: {r["rep"]: r["gap_ms"] for r in results if r["impl"] == i and r["setting"] == setting
                      and r["fault"] == fault and r["gap_ms"] is not None} for i in ("fwlb", "keepalived")}
            diffs = [by["fwlb"][k] - by["keepalived"][k] for k in by["fwlb"] if k in by["keepalived"]]
            if fg is not None and kg is not None and diffs:
                md_ = statistics.median(diffs)
                verdict.append(f"{SETTINGS[setting][2]} {fault}: service gap fwlb − keepalived, paired by run: "
                               f"median {md_:+.1f} ms (runs: {', '.join(f'{x:+.1f}' for x in diffs)}); medians "
                               f"{fg:.1f} vs {kg:.1f} ms -> "
                               + ("OK (not slower)" if md_ <= 0 else f"fwlb SLOWER by {md_:.1f} ms"))
            if setting == "v3-20ms":
                g = [x for x in cell["fwlb"][1] if x is not None]
                if g:
                    verdict.append(f"v3 20 ms {fault}: fwlb worst gap {max(g):.0f} ms -> "
                                   f"{'OK (< 100 ms)' if max(g) < 100 else 'OVER 100 ms'}")
    w = [max(len(hdr[i]), *(len(r[i]) for r in rows)) for i in range(len(hdr))]
    line = lambda cells: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells)) + " |"
    table = "\n".join([line(hdr), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])
    notes = [f"- {r['impl']} {r['setting']} {r['fault']} rep {r['rep']}: {x}" for r in results for x in r["notes"]]
    log("\nmedian (min–max) over " + str(reps) + " runs, ms from the fault; crash = kill -9 + cable pull, "
        "planned = SIGTERM\n" + table + "\n\n" + "\n".join(verdict))
    if notes:
        log("\nanomalies:\n" + "\n".join(notes))
    raw = []
    for setting in settings:
        for fault in faults:
            for impl in impls:
                rs = [r for r in results if r["impl"] == impl and r["setting"] == setting and r["fault"] == fault]
                f = lambda k: ", ".join("-" if r.get(k) is None else f"{r[k]:g}" for r in rs)
                raw.append(f"| {SETTINGS[setting][2]} | {fault} | {impl} | {f('first_advert_ms')} | "
                           f"{f('gap_ms')} | {f('outage_ms')} | {f('h1_last_advert_before_ms')} | "
                           f"{f('detect_ms') if fault == 'crash' else f('prio0_ms')} |")
    cp = sorted(r["cable_pull_ms"] for r in results if r.get("cable_pull_ms") is not None)
    pull = (f"{statistics.median(cp):.1f} ms after the kill (median; max {cp[-1]:.1f} ms)" if cp else "-")
    md = f"""## Failover times

Command: `{ctx['cmd']}`  
Date: {ctx['date']}; kernel {ctx['kernel']}; {ctx['keepalived']}; fwlb {ctx['fwlb']}
(binary sha256 {ctx['fwlb_sha256'][:16]}…); {ctx['cpus']} CPUs, load average at start {' '.join(ctx['loadavg'])}.

Lab: one bridge namespace, h1 (priority 150, master) and h2 (priority 100) with eth0 on it, a client
(10.77.0.100); VIP 10.77.0.10/24, VRID 51; fwlb paired with fwlb, keepalived with keepalived, same
settings (v2 with a PASS password). Both routers run `fwlb echo 0.0.0.0:8080`. Each run is a fresh lab.
The fault falls at a random phase of h1's advert cycle, the same for both implementations in run k
(a crash is detected Master_Down_Interval after the master's last advert, so the phase alone spreads
crash times over one interval).
**crash = kill -9 + cable pull** (h1's daemon is killed and its bridge port set down at the same
instant: otherwise the killed master keeps answering on the VIP); **planned = SIGTERM** to h1's daemon.
"first advert": fault → h2's first advert with priority > 0 (kernel receive time at the client);
"service gap": fault → the first client connection answered by h2 (one attempt every 5 ms, 100 ms
timeout, attempts overlap; includes the client's ARP update by h2's gratuitous ARP).
Cells: median (min–max) over {reps} runs, ms.

{table}

{chr(10).join('- ' + v for v in verdict)}
- cable pull (crash) confirmed by `ip` {pull}

Per run (ms, in run order; "outage" = last answer from h1 → first from h2; "h1 last advert" = how
long before the fault h1's last advert was seen (the fault's phase in the advert cycle: same phase
for both implementations in a given run number); last column: crash: "detection" = h1's last advert
→ h2's first advert (Master_Down_Interval of h2: 3609 / 361 / 72 ms), planned: h1's priority-0
advert after the fault):

| setting | fault | impl | first advert | service gap | outage | h1 last advert | detection / prio 0 |
|---|---|---|---|---|---|---|---|
{chr(10).join(raw)}
""" + ("\nAnomalies:\n\n" + "\n".join(notes) + "\n" if notes else "")
    write_section("bench", md)


# ----------------------------------------------------------------------------------------------
def steal_jiffies():
    f = open("/proc/stat").readline().split()
    return int(f[8]) if len(f) > 8 else 0, sum(int(x) for x in f[1:])


def soak():
    dur = int(os.environ.get("SOAK", "600"))
    rate = float(os.environ.get("LOAD_RATE", "200"))
    conc = int(os.environ.get("LOAD_CONC", "50"))
    impl = os.environ.get("SOAK_IMPL", "fwlb")
    setting = "v3-20ms"
    _, iv, _ = SETTINGS[setting]
    ctx = context()
    d = os.path.join(WORKDIR, f"soak-{impl}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    via = "through fwlb's balancer" if impl == "fwlb" else "to `fwlb echo` directly (no balancer)"
    log(f"soak: {impl} pair at v3 20 ms for {dur} s, client load {rate:g} connections/s (at most {conc} "
        f"in flight) to VIP:{PORT} {via}; fwlb {ctx['fwlb']}")
    lab = Lab()
    ok = False
    try:
        for h in (lab.h1, lab.h2):
            listen = ["127.0.0.1:9001", "127.0.0.1:9002"] if impl == "fwlb" else [f"0.0.0.0:{PORT}"]
            lab.spawn([FWLB, "echo", *listen, "--name", h[-2:]],
                      os.path.join(d, f"echo-{h[-2:]}.log"), ns=h)
        d1, d2 = start_pair(impl, lab, setting, d, balancer=True)
        time.sleep(2.0)
        if not lab.holds_vip(lab.h1) or lab.holds_vip(lab.h2):
            raise RuntimeError("not stable after start")
        probe, pl = start_probe(lab, d, every=1.0 / rate, timeout=1.0, inflight=conc,
                                duration=dur + 30, summary=10.0)
        time.sleep(1.0)

        def show():
            if impl == "fwlb":
                return d1.show(), d2.show()
            # keepalived: transitions = "Entering ... STATE" lines in its log.
            out = []
            for k in (d1, d2):
                text = open(k.log, errors="replace").read()
                st = re.findall(r"Entering (\w+) STATE", text)
                out.append({"state": st[-1].lower() if st else "?", "transitions": len(st),
                            "adverts_sent": "-", "adverts_received": "-", "dropped": {}})
            return tuple(out)
        s0 = show()
        if None in s0:
            raise RuntimeError("cannot read show vrrp")
        log(f"start: h1 {s0[0]['state']} transitions {s0[0]['transitions']}, "
            f"h2 {s0[1]['state']} transitions {s0[1]['transitions']}")
        pids = [p.pids() for p in (d1, d2)]
        cpu0 = [sum(cpu_seconds(x) for x in p) for p in pids]
        st0 = steal_jiffies()
        t_start = time.time()
        t_end = t_start + dur
        changes = []
        for _ in range(dur // 10 + 2):  # bounded
            left = t_end - time.time()
            if left <= 0:
                break
            time.sleep(min(10.0, left))
            s = show()
            pl.poll()
            last = pl.summaries[-1] if pl.summaries else None
            el = time.time() - t_start
            if None in s:
                changes.append(f"{el:.0f} s: show vrrp unreadable (daemon died?)")
                break
            tr = (s[0]["transitions"], s[1]["transitions"])
            if tr != (s0[0]["transitions"], s0[1]["transitions"]) or not lab.holds_vip(lab.h1):
                changes.append(f"{el:.0f} s: transitions {tr}, states {s[0]['state']}/{s[1]['state']}")
            log(f"  {el:4.0f} s: h1 {s[0]['state']} tr {tr[0]} sent {s[0]['adverts_sent']}, "
                f"h2 {s[1]['state']} tr {tr[1]} rcvd {s[1]['adverts_received']}"
                + (f"; client ok {last['ok']} fail {last['fail']}" if last else ""))
        s1 = show()
        cpu1 = [sum(cpu_seconds(x) for x in p) for p in pids]
        st1 = steal_jiffies()
        elapsed = time.time() - t_start
        stop_probe(probe, pl)
        # Adverts from h1 during the soak: their spacing at the client (kernel receive times).
        ts = [a[0] for a in pl.adverts if a[1] == "10.77.0.1" and t_start <= a[0] <= t_start + elapsed]
        pairs = list(zip(ts, ts[1:]))
        gaps = sorted((b - a) * 1000 for a, b in pairs)
        q = lambda p: gaps[min(len(gaps) - 1, int(p * len(gaps)))] if gaps else float("nan")
        limit = mdi(100, iv) * 1000
        big = [(a, (b - a) * 1000) for a, b in pairs if (b - a) * 1000 > 2 * iv * 1000]
        # Was the client itself stalled during a big gap? Then the whole machine was.
        stalled = lambda a, b: max([ms for t, ms in pl.stalls if t - ms / 1000 < b and t > a] or [0])
        big_txt = [f"{time.strftime('%H:%M:%S', time.localtime(a))} {g:.1f} ms"
                   + (f" (client stalled {stalled(a, a + g / 1000):.0f} ms)" if stalled(a, a + g / 1000) else "")
                   for a, g in sorted(big, key=lambda x: -x[1])[:8]]
        other = [a for a in pl.adverts if a[1] != "10.77.0.1" and t_start <= a[0]]
        fin = pl.final or {}
        warns = d1.warnings() + d2.warnings()
        tr0 = (s0[0]["transitions"], s0[1]["transitions"])
        tr1 = (s1[0]["transitions"], s1[1]["transitions"]) if None not in s1 else None
        ok = tr1 == tr0 and not changes and not other
        steal = 100.0 * (st1[0] - st0[0]) / max(1, st1[1] - st0[1])
        dif = lambda k, i: "-" if tr1 is None or not isinstance(s1[i][k], int) else s1[i][k] - s0[i][k]
        lines = [
            f"Command: `{ctx['cmd']}`  ",
            f"Date: {ctx['date']}; kernel {ctx['kernel']}; fwlb {ctx['fwlb']}"
            + (f"; {ctx['keepalived']}" if impl != "fwlb" else "")
            + f"; {ctx['cpus']} CPUs, load average at start {' '.join(ctx['loadavg'])}; CPU steal during "
            f"the soak {steal:.1f} %.",
            "",
            f"{impl} pair (h1 priority 150, h2 100), VRRPv3 at 20 ms, {elapsed:.0f} s"
            + (f"; each runs a [[balancer]] on 0.0.0.0:{PORT} (round robin to two `fwlb echo` on loopback)"
               if impl == "fwlb" else f"; `fwlb echo` on 0.0.0.0:{PORT} on both")
            + f"; the client opens {rate:g} connections/s to VIP:{PORT} (at most {conc} in flight, 1 s timeout).",
            "",
            f"- transitions h1/h2: {tr0[0]}/{tr0[1]} at start, "
            f"{'?' if tr1 is None else f'{tr1[0]}/{tr1[1]}'} at the end -> "
            f"{'no spurious transition' if ok else 'SPURIOUS TRANSITION'}",
            f"- h1 adverts sent during the soak: {dif('adverts_sent', 0)}; h2 received "
            f"{dif('adverts_received', 1)}"
            + (f"; h2 drops: {json.dumps(s1[1]['dropped'])}" if tr1 and impl == 'fwlb' else ""),
            f"- advert spacing seen by the client ({len(gaps)} gaps, {len(gaps) / max(elapsed, 1):.1f}/s): "
            f"median {q(0.5):.1f} ms, p99 {q(0.99):.1f}, p99.9 {q(0.999):.1f}, "
            f"max {max(gaps) if gaps else float('nan'):.1f} ms; > 40 ms: {len(big)}; "
            f">= h2's Master_Down_Interval ({limit:.1f} ms): {sum(g >= limit for g in gaps)}; "
            f"adverts from anyone else: {len(other)}",
            f"- largest gaps: {', '.join(big_txt) if big_txt else 'none'}",
            f"- client: {fin.get('ok', '?')} answered ({json.dumps(fin.get('by', {}))}), "
            f"{fin.get('fail', '?')} failed {json.dumps(fin.get('errs', {}))}, "
            f"at most {fin.get('max_inflight', '?')} in flight; the client's own loop stalled > 15 ms "
            f"{len(pl.stalls)} times (max {max([x[1] for x in pl.stalls] or [0]):.0f} ms)",
            f"- {impl} CPU time during the soak: h1 {cpu1[0] - cpu0[0]:.1f} s, h2 {cpu1[1] - cpu0[1]:.1f} s",
        ]
        if changes:
            lines.append("- changes seen: " + "; ".join(changes[:10]))
        if warns:
            lines.append("- fwlb warnings: " + " / ".join(warns[:10]))
        title = "## Soak at 20 ms under load" + ("" if impl == "fwlb" else f" ({impl}, for reference)")
        text = title + "\n\n" + "\n".join(lines) + "\n"
        log("\n" + text)
        log("SOAK " + ("PASSED" if ok else "FAILED"))
        write_section("soak" if impl == "fwlb" else f"soak-{impl}", text)
    finally:
        lab.close()
    return ok


def cpu_seconds(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return float("nan")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "bench"

    def on_signal(sig, _):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, raw sockets)")
    left = cleanup_leftovers()
    if left:
        log(f"removed leftovers of an earlier run: {' '.join(left)}")
    if mode == "cleanup":
        return 0
    if mode == "report":  # re-render the table of the last bench from WORKDIR/results.json
        d = json.load(open(os.path.join(WORKDIR, "results.json")))
        render(d["context"], d["results"], d["reps"], d["impls"], d["settings"], d["faults"])
        return 0
    os.makedirs(WORKDIR, exist_ok=True)
    with open(os.path.join(WORKDIR, "probe.py"), "w") as f:
        f.write(PROBE)
    if not os.access(FWLB, os.X_OK):
        sys.exit(f"no fwlb binary at {FWLB} (failover.sh copies target/release/fwlb there)")
    try:
        if mode == "bench":
            bench()
            return 0
        if mode == "soak":
            return 0 if soak() else 1
        sys.exit(f"unknown mode {mode!r}: bench, soak or cleanup")
    finally:
        for lab in list(LABS):
            lab.close()
        cleanup_leftovers(mine_only=True)


if __name__ == "__main__":
    sys.exit(main())
