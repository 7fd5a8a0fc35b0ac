//! Two hosts' links joined by a simulated network on a simulated clock: every byte one sends
//! reaches the other's `on_bytes` (unless the network is cut), `Connect` becomes a pair of
//! connection ends, and time moves in 10 ms steps with `on_tick` called at each host's
//! `next_deadline`. Each host's wall clock may be skewed.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::Now;
use super::auth::{AuthError, SharedKey};
use super::link::{Action, Config, ConnId, Direction, Link, MAX_CONNS, State};
use super::session::{CloseReason, Output, Session, Stage, Timers};
use super::table::tests::{on, sticky};
use super::table::{Entry, Field, Key, Net, Setting, Table, Value};
use super::wire::{self, WireError};

const KEY: &[u8] = b"the pair's sync key, 32 bytes.\n";
const STEP: Duration = Duration::from_millis(10);

fn addr(h: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2 + h as u8))
}

fn config(h: usize, key: &[u8]) -> Config {
    let peer = SocketAddr::new(addr(1 - h), 8899);
    Config::new(peer, SharedKey::from_file_bytes(key).unwrap())
}

struct Host {
    link: Link,
    skew_ms: i64,
    up: bool,
    applied: Vec<Entry<Instant>>,
    resynced: u32,
}

/// One end of a simulated connection.
struct End {
    host: usize,
    peer: ConnId,
}

struct World {
    base: Instant,
    wall_base: u64,
    elapsed: Duration,
    hosts: Vec<Host>,
    ends: HashMap<ConnId, End>,
    next_conn: ConnId,
    next_nonce: u8,
    work: VecDeque<(usize, Action)>,
    inflight: VecDeque<(ConnId, Vec<u8>)>,
    /// Connections refused, bytes dropped.
    cut: bool,
    /// What each host sent, per connection end, for replay tests.
    sent: Vec<(ConnId, Vec<u8>)>,
}

impl World {
    fn new(skews: [i64; 2], keys: [&[u8]; 2]) -> World {
        let hosts = (0..2)
            .map(|h| Host {
                link: Link::new(config(h, keys[h]), Table::new(100 + h as u64)),
                skew_ms: skews[h],
                up: true,
                applied: Vec::new(),
                resynced: 0,
            })
            .collect();
        World {
            base: Instant::now(),
            wall_base: 1_800_000_000_000,
            elapsed: Duration::ZERO,
            hosts,
            ends: HashMap::new(),
            next_conn: 1,
            next_nonce: 1,
            work: VecDeque::new(),
            inflight: VecDeque::new(),
            cut: false,
            sent: Vec::new(),
        }
    }

    fn now(&self, h: usize) -> Now {
        let wall = self.wall_base as i64 + self.elapsed.as_millis() as i64 + self.hosts[h].skew_ms;
        Now {
            mono: self.base + self.elapsed,
            wall_ms: wall as u64,
        }
    }

    fn start(&mut self, h: usize) {
        self.start_all(&[h]);
    }

    /// Start hosts in the same instant: each dials before any connection is made.
    fn start_all(&mut self, hosts: &[usize]) {
        for &h in hosts {
            let now = self.now(h);
            let actions = self.hosts[h].link.start(now);
            self.queue(h, actions);
        }
        self.settle();
    }

    fn queue(&mut self, h: usize, actions: Vec<Action>) {
        self.work.extend(actions.into_iter().map(|a| (h, a)));
    }

    /// Perform every action and deliver every byte until nothing moves.
    fn settle(&mut self) {
        loop {
            if let Some((h, a)) = self.work.pop_front() {
                self.perform(h, a);
            } else if let Some((conn, bytes)) = self.inflight.pop_front() {
                self.deliver(conn, &bytes);
            } else {
                return;
            }
        }
    }

    fn perform(&mut self, h: usize, action: Action) {
        match action {
            Action::Connect => self.dial(h),
            Action::Send { conn, bytes } => {
                self.sent.push((conn, bytes.clone()));
                if let Some(end) = self.ends.get(&conn)
                    && !self.cut
                {
                    self.inflight.push_back((end.peer, bytes));
                }
            }
            Action::Close { conn, .. } => {
                // The peer's end sees the close once the bytes sent before it arrived.
                if let Some(end) = self.ends.remove(&conn) {
                    self.inflight.push_back((end.peer, Vec::new()));
                }
            }
            Action::Apply(e) => self.hosts[h].applied.push(e),
            Action::PeerResynced => self.hosts[h].resynced += 1,
        }
    }

    fn dial(&mut self, h: usize) {
        let o = 1 - h;
        let now = self.now(h);
        if self.cut || !self.hosts[o].up {
            let actions = self.hosts[h].link.connect_failed("refused", now);
            return self.queue(h, actions);
        }
        let (a, b) = (self.next_conn, self.next_conn + 1);
        self.next_conn += 2;
        self.ends.insert(a, End { host: h, peer: b });
        self.ends.insert(b, End { host: o, peer: a });
        let nonce = self.nonce();
        let out = self.hosts[h]
            .link
            .connected(a, Direction::Outgoing, addr(o), nonce, now);
        self.queue(h, out);
        let nonce = self.nonce();
        let now = self.now(o);
        let out = self.hosts[o]
            .link
            .connected(b, Direction::Incoming, addr(h), nonce, now);
        self.queue(o, out);
    }

    fn nonce(&mut self) -> [u8; 32] {
        self.next_nonce = self.next_nonce.wrapping_add(1);
        [self.next_nonce; 32]
    }

    /// Bytes to an end; empty bytes: the other end closed.
    fn deliver(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(end) = self.ends.get(&conn) else {
            return;
        };
        let h = end.host;
        let now = self.now(h);
        let actions = if bytes.is_empty() {
            self.ends.remove(&conn);
            self.hosts[h]
                .link
                .on_closed(conn, "closed by the peer", now)
        } else {
            self.hosts[h].link.on_bytes(conn, bytes, now)
        };
        self.queue(h, actions);
    }

    /// Advance the clock by `ms` in steps, ticking each host when its deadline is due.
    fn run(&mut self, ms: u64) {
        let end = self.elapsed + Duration::from_millis(ms);
        while self.elapsed < end {
            self.elapsed += STEP;
            for h in 0..2 {
                let now = self.now(h);
                let due = self.hosts[h].link.next_deadline();
                if self.hosts[h].up && due.is_some_and(|d| d <= now.mono) {
                    let actions = self.hosts[h].link.on_tick(now);
                    self.queue(h, actions);
                }
            }
            self.settle();
        }
    }

    fn change(&mut self, h: usize, key: Key, value: Value<Instant>, expires: Option<Instant>) {
        let now = self.now(h);
        let actions = self.hosts[h]
            .link
            .local_change(key, value, expires, now)
            .unwrap();
        self.queue(h, actions);
        self.settle();
    }

    /// Both ends of every connection are told it broke (a reset, a cable cut noticed).
    fn break_connections(&mut self) {
        let ends: Vec<ConnId> = self.ends.keys().copied().collect();
        for conn in ends {
            if let Some(end) = self.ends.remove(&conn) {
                let now = self.now(end.host);
                let actions = self.hosts[end.host].link.on_closed(conn, "reset", now);
                self.queue(end.host, actions);
            }
        }
        self.inflight.clear();
        self.settle();
    }

    /// The host dies silently: its ends vanish, the peer's stay open (half-open).
    fn crash(&mut self, h: usize) {
        self.hosts[h].up = false;
        self.ends.retain(|_, e| e.host != h);
    }

    fn restart(&mut self, h: usize, table: Table) {
        let host = &mut self.hosts[h];
        host.link = Link::new(config(h, KEY), table);
        host.up = true;
        host.applied.clear();
        host.resynced = 0;
        self.start(h);
    }

    fn state(&self, h: usize) -> State {
        self.hosts[h].link.status(self.now(h)).state
    }

    fn entries(&self, h: usize) -> Vec<Entry<Instant>> {
        let mut all: Vec<_> = self.hosts[h].link.table().entries().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    fn closes(&self, h: usize, label: &str) -> u64 {
        let s = self.hosts[h].link.status(self.now(h));
        s.closes.get(label).copied().unwrap_or(0)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + self.elapsed + Duration::from_millis(ms)
    }
}

fn setting(field: Field) -> Key {
    Key::Server {
        balancer: "app".into(),
        server: "10.0.0.11:8000".into(),
        field,
    }
}

fn ban(last: u8) -> Key {
    Key::Ban {
        net: Net::host(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))),
    }
}

fn live_pair(skews: [i64; 2]) -> World {
    let mut net = World::new(skews, [KEY, KEY]);
    net.start_all(&[0, 1]);
    net.run(200);
    assert_eq!((net.state(0), net.state(1)), (State::Live, State::Live));
    net
}

#[test]
fn simultaneous_dials_leave_one_connection() {
    let net = live_pair([0, 0]);
    assert_eq!(net.ends.len(), 2, "one connection, two ends");
    let dup: u64 = (0..2).map(|h| net.closes(h, "duplicate")).sum();
    let said: u64 = (0..2).map(|h| net.closes(h, "peer-closed")).sum();
    assert!(dup >= 1, "the other connection was closed as a duplicate");
    assert_eq!(dup + said, 2, "both hosts dropped the same one");
    for h in 0..2 {
        assert!(net.hosts[h].link.resynced());
        assert_eq!(net.hosts[h].resynced, 1);
    }
}

#[test]
fn stop_says_goodbye_and_dials_no_more() {
    let mut net = live_pair([0, 0]);
    let now = net.now(0);
    let actions = net.hosts[0].link.stop(now);
    net.queue(0, actions);
    net.settle();
    net.run(3_000);
    assert_eq!(net.state(0), State::Idle);
    assert!(net.closes(1, "peer-closed") >= 1, "host 1 was told");
    assert!(net.ends.is_empty(), "nobody redialed host 0's link");
    assert!(net.closes(0, "stop") >= 2, "host 1's redials were refused");
}

#[test]
fn concurrent_changes_converge() {
    let mut net = live_pair([0, 0]);
    let t = net.at(0);
    // The same key changed on both hosts in the same millisecond, and others on each.
    net.change(0, sticky(1), on("10.0.0.11:8000", t), None);
    net.change(1, sticky(1), on("10.0.0.12:8000", t), None);
    net.change(
        0,
        setting(Field::Weight),
        Value::Setting(Setting::Weight(3)),
        None,
    );
    net.change(1, ban(7), Value::Ban, Some(net.at(3_600_000)));
    net.change(
        1,
        setting(Field::Drain),
        Value::Setting(Setting::Drain(true)),
        None,
    );
    net.run(200);
    let (a, b) = (net.entries(0), net.entries(1));
    assert_eq!(a, b);
    assert_eq!(a.len(), 4);
    // Equal wall time and counter: the higher origin (host 1's) wins on both.
    let winner = net.hosts[0].link.table().get(&sticky(1), t).unwrap();
    assert_eq!(winner.version.origin, 101);
    assert_eq!(winner.value, on("10.0.0.12:8000", t));
    // Host 0 applied host 1's three changes; host 1 only host 0's weight.
    assert_eq!(net.hosts[0].applied.len(), 3);
    assert_eq!(net.hosts[1].applied.len(), 1);
}

#[test]
fn changes_during_an_outage_resync_on_reconnect() {
    let mut net = live_pair([0, 0]);
    net.cut = true;
    net.break_connections();
    assert_eq!(net.state(0), State::Waiting);
    let t = net.at(0);
    net.change(0, sticky(1), on("10.0.0.11:8000", t), None);
    net.change(1, sticky(2), on("10.0.0.13:8000", t), None);
    net.change(1, ban(9), Value::Ban, None);
    net.run(3_000);
    assert_ne!(net.state(0), State::Live);
    assert_ne!(net.entries(0), net.entries(1));
    net.cut = false;
    net.run(6_000);
    assert_eq!((net.state(0), net.state(1)), (State::Live, State::Live));
    assert_eq!(net.entries(0), net.entries(1));
    assert_eq!(net.entries(0).len(), 3);
    assert_eq!(net.hosts[0].resynced, 2);
    assert!(net.closes(0, "lost") >= 1);
}

#[test]
fn a_restarted_peer_with_old_state_does_not_overwrite_newer_entries() {
    // Host 1's wall clock runs 30 s ahead: its stamps are "later" than host 0's new ones
    // by wall clock, and must still lose to changes host 0 made after seeing them.
    let mut net = live_pair([0, 30_000]);
    let t = net.at(0);
    let until = Value::Setting(Setting::Blacklist {
        until: Some(net.at(3_600_000)),
    });
    net.change(1, setting(Field::Blacklist), until, None);
    net.change(1, sticky(1), on("10.0.0.11:8000", t), None);
    net.run(100);
    // What host 1's state file holds, with the versions it saved.
    let saved: Vec<Entry<Instant>> = net.entries(1);
    net.crash(1);
    let cleared = Value::Setting(Setting::Blacklist { until: None });
    net.change(0, setting(Field::Blacklist), cleared.clone(), None);
    net.change(0, sticky(1), on("10.0.0.12:8000", net.at(0)), None);
    net.change(0, ban(3), Value::Ban, None);
    net.run(1_000);
    let before = net.hosts[0].applied.len();
    let mut table = Table::new(555);
    for e in saved {
        table.restore(e, net.now(1)).unwrap();
    }
    net.restart(1, table);
    net.run(1_000);
    assert_eq!((net.state(0), net.state(1)), (State::Live, State::Live));
    assert_eq!(net.entries(0), net.entries(1));
    assert_eq!(
        net.hosts[0].applied.len(),
        before,
        "host 0 took nothing from the old state"
    );
    let now = net.at(0);
    let table = net.hosts[1].link.table();
    let blacklist = table.get(&setting(Field::Blacklist), now).unwrap();
    assert_eq!(blacklist.value, cleared);
    assert_eq!(
        table.get(&sticky(1), now).unwrap().value,
        on("10.0.0.12:8000", t + Duration::from_millis(100))
    );
    assert_eq!(net.hosts[1].applied.len(), 3);
    assert!(
        net.closes(0, "replaced") + net.closes(0, "silent") >= 1,
        "the half-open connection went"
    );
}

#[test]
fn skew_of_30_seconds_moves_neither_expiry_nor_causal_order() {
    for skew in [-30_000, 30_000] {
        let mut net = live_pair([0, skew]);
        let ends = net.at(60_000);
        net.change(0, ban(5), Value::Ban, Some(ends));
        net.run(50);
        let got = net.hosts[1].link.table().get(&ban(5), net.at(0)).unwrap();
        assert_eq!(got.expires, Some(ends), "skew {skew}");
        // Each change made after seeing the other's wins, whichever clock is ahead.
        for (h, w) in [(0, 3), (1, 5), (0, 7), (1, 9)] {
            let v = Value::Setting(Setting::Weight(w));
            net.change(h, setting(Field::Weight), v, None);
            net.run(100);
            for side in 0..2 {
                let e = net.hosts[side]
                    .link
                    .table()
                    .get(&setting(Field::Weight), net.at(0));
                assert_eq!(
                    e.unwrap().value,
                    Value::Setting(Setting::Weight(w)),
                    "skew {skew}"
                );
            }
        }
        net.run(59_000);
        assert!(net.hosts[1].link.table().get(&ban(5), net.at(0)).is_some());
        net.run(1_100);
        for h in 0..2 {
            assert!(net.hosts[h].link.table().get(&ban(5), net.at(0)).is_none());
        }
        assert_eq!(net.entries(0), net.entries(1));
    }
}

#[test]
fn a_peer_with_another_key_is_refused_and_counted() {
    let mut net = World::new([0, 0], [KEY, b"another key, not the pair's one\n"]);
    net.change(0, sticky(1), on("10.0.0.11:8000", net.at(0)), None);
    net.start(0);
    net.start(1);
    net.run(2_000);
    for h in 0..2 {
        assert_ne!(net.state(h), State::Live);
        assert!(net.closes(h, "auth") >= 1, "host {h}");
        let status = net.hosts[h].link.status(net.now(h));
        assert!(status.last_error.unwrap().contains("authentication failed"));
    }
    assert!(net.entries(1).is_empty());
}

#[test]
fn a_large_table_resyncs_in_chunks() {
    let mut net = World::new([0, 0], [KEY, KEY]);
    let t = net.at(0);
    for i in 0..20_000u32 {
        let key = Key::Sticky {
            balancer: "app".into(),
            client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
        };
        net.change(0, key, on("10.0.0.11:8000", t), Some(net.at(3_600_000)));
    }
    net.start(0);
    net.start(1);
    net.run(500);
    assert_eq!(net.state(1), State::Live);
    assert_eq!(net.entries(1).len(), 20_000);
    assert_eq!(net.entries(0), net.entries(1));
    let s = net.hosts[0].link.status(net.now(0));
    assert!(s.totals.frames_sent > 10, "{:?}", s.totals);
    assert_eq!(s.session.unwrap().lag_entries, 0, "everything acked");
}

#[test]
fn updates_are_batched() {
    let mut net = live_pair([0, 0]);
    let frames = |net: &World| net.hosts[0].link.status(net.now(0)).totals.frames_sent;
    let before = frames(&net);
    for i in 0..50 {
        net.change(0, sticky(i), on("10.0.0.11:8000", net.at(0)), None);
    }
    assert_eq!(frames(&net), before, "held for the batch delay");
    net.run(60);
    assert_eq!(frames(&net), before + 1, "one frame for 50 changes");
    assert_eq!(net.entries(1).len(), 50);
}

/// A link alone, and bytes fed to it by hand.
fn lone(now: Now) -> (Link, Vec<Action>) {
    let mut link = Link::new(config(0, KEY), Table::new(1));
    let mut actions = link.start(now);
    actions.extend(link.connected(9, Direction::Incoming, addr(1), [3; 32], now));
    (link, actions)
}

fn closed(actions: &[Action]) -> Option<&CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close { reason, .. } => Some(reason),
        _ => None,
    })
}

fn now_at(base: Instant, ms: u64) -> Now {
    Now {
        mono: base + Duration::from_millis(ms),
        wall_ms: 1_800_000_000_000 + ms,
    }
}

#[test]
fn a_peer_that_connects_and_stalls_is_dropped() {
    let base = Instant::now();
    let (mut link, _) = lone(now_at(base, 0));
    assert!(link.on_tick(now_at(base, 4_990)).is_empty());
    let actions = link.on_tick(now_at(base, 5_000));
    assert_eq!(
        closed(&actions),
        Some(&CloseReason::HandshakeTimeout(Duration::from_secs(5)))
    );
    assert_eq!(
        link.status(now_at(base, 5_000)).closes["handshake-timeout"],
        1
    );
}

#[test]
fn a_connection_from_another_address_is_refused() {
    let base = Instant::now();
    let mut link = Link::new(config(0, KEY), Table::new(1));
    link.start(now_at(base, 0));
    let stranger = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99));
    let actions = link.connected(4, Direction::Incoming, stranger, [1; 32], now_at(base, 0));
    assert_eq!(closed(&actions), Some(&CloseReason::NotPeer(stranger)));
    assert_eq!(actions.len(), 1, "not even a hello");
}

#[test]
fn connections_beyond_the_bound_are_refused() {
    let base = Instant::now();
    let mut link = Link::new(config(0, KEY), Table::new(1));
    link.start(now_at(base, 0));
    for conn in 0..MAX_CONNS as u64 {
        let actions = link.connected(conn, Direction::Incoming, addr(1), [1; 32], now_at(base, 0));
        assert!(closed(&actions).is_none());
    }
    let actions = link.connected(99, Direction::Incoming, addr(1), [1; 32], now_at(base, 0));
    assert_eq!(closed(&actions), Some(&CloseReason::TooMany));
}

#[test]
fn garbage_and_other_versions_close_the_session_and_leave_the_table() {
    let base = Instant::now();
    let cases: [(&[u8], &str); 3] = [
        (b"GET / HTTP/1.1\r\n", "oversized"),
        (&[0, 0, 0, 40, 2, 1], "version"),
        (&[0, 0, 0, 40, 1, 77], "malformed"),
    ];
    for (bytes, label) in cases {
        let (mut link, _) = lone(now_at(base, 0));
        let actions = link.on_bytes(9, bytes, now_at(base, 1));
        assert!(closed(&actions).is_some(), "{label}");
        assert_eq!(link.status(now_at(base, 1)).closes[label], 1);
        assert!(link.table().is_empty());
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Send { .. })),
            "no goodbye to a peer that speaks something else"
        );
    }
}

#[test]
fn connecting_to_itself_is_noticed() {
    let base = Instant::now();
    let mut link = Link::new(config(0, KEY), Table::new(1));
    link.start(now_at(base, 0));
    let actions = link.connected(1, Direction::Outgoing, addr(1), [5; 32], now_at(base, 0));
    let Some(Action::Send { bytes, .. }) = actions.first() else {
        panic!("{actions:?}");
    };
    let actions = link.on_bytes(1, &bytes.clone(), now_at(base, 1));
    assert_eq!(closed(&actions), Some(&CloseReason::SelfConnect));
}

#[test]
fn a_recorded_session_cannot_be_replayed_into_a_new_one() {
    let net = live_pair([0, 0]);
    // Everything host 1 sent on the connection that survived, as an eavesdropper saw it.
    let kept: Vec<ConnId> = net
        .ends
        .iter()
        .filter(|(_, e)| e.host == 1)
        .map(|(c, _)| *c)
        .collect();
    let recorded: Vec<u8> = net
        .sent
        .iter()
        .filter(|(c, _)| kept.contains(c))
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert!(recorded.len() > 100);
    let base = Instant::now();
    let (mut link, _) = lone(now_at(base, 0));
    let actions = link.on_bytes(9, &recorded, now_at(base, 1));
    assert_eq!(
        closed(&actions),
        Some(&CloseReason::Auth(AuthError::BadMac))
    );
    assert!(link.table().is_empty());
}

/// Two sessions wired by hand, to replay frames inside one connection.
struct Pair {
    a: Session,
    b: Session,
    ta: Table,
    tb: Table,
    base: Instant,
}

impl Pair {
    fn new() -> (Pair, Vec<u8>, Vec<u8>) {
        Pair::with_timers(Timers::default())
    }

    /// `b_timers` for the responder.
    fn with_timers(b_timers: Timers) -> (Pair, Vec<u8>, Vec<u8>) {
        let base = Instant::now();
        let key = SharedKey::from_file_bytes(KEY).unwrap();
        use super::auth::Role::{Initiator, Responder};
        let t = Timers::default();
        let (a, ha) = Session::new(Initiator, 1, [1; 32], key.clone(), t, base);
        let (b, hb) = Session::new(Responder, 2, [2; 32], key, b_timers, base);
        let p = Pair {
            a,
            b,
            ta: Table::new(1),
            tb: Table::new(2),
            base,
        };
        (p, sends(&ha), sends(&hb))
    }

    fn feed_b(&mut self, bytes: &[u8]) -> Vec<Output> {
        self.b.on_bytes(&mut self.tb, now_at(self.base, 1), bytes)
    }

    fn feed_a(&mut self, bytes: &[u8]) -> Vec<Output> {
        self.a.on_bytes(&mut self.ta, now_at(self.base, 1), bytes)
    }
}

fn sends(out: &[Output]) -> Vec<u8> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn session_closed(out: &[Output]) -> Option<&CloseReason> {
    out.iter().find_map(|o| match o {
        Output::Closed(r) => Some(r),
        _ => None,
    })
}

#[test]
fn a_replayed_or_reordered_frame_inside_a_session_is_refused() {
    let (mut p, ha, hb) = Pair::new();
    let auth_b = sends(&p.feed_b(&ha));
    let auth_a = sends(&p.feed_a(&hb));
    assert!(
        p.feed_a(&auth_b)
            .iter()
            .any(|o| matches!(o, Output::Authenticated { .. }))
    );
    p.feed_b(&auth_a);
    let now = now_at(p.base, 2);
    let one = sends(&p.a.start_resync(&p.ta, now));
    let frames: Vec<&[u8]> = {
        let mut v = Vec::new();
        let mut rest = &one[..];
        while let Ok(Some((_, n))) = wire::split(rest) {
            v.push(&rest[..n]);
            rest = &rest[n..];
        }
        v
    };
    assert_eq!(frames.len(), 2, "resync start and end of an empty table");
    // The end before the start: out of order.
    let out = p.feed_b(frames[1]);
    assert!(matches!(
        session_closed(&out),
        Some(CloseReason::Auth(AuthError::Sequence {
            got: 2,
            expected: 1
        }))
    ));

    let (mut p, ha, hb) = Pair::new();
    let auth_b = sends(&p.feed_b(&ha));
    let auth_a = sends(&p.feed_a(&hb));
    p.feed_a(&auth_b);
    p.feed_b(&auth_a);
    // Auth again: a replay of a frame already taken.
    let out = p.feed_b(&auth_a);
    assert!(matches!(
        session_closed(&out),
        Some(CloseReason::Auth(AuthError::Sequence {
            got: 0,
            expected: 1
        }))
    ));
    assert_eq!(p.b.stage(), Stage::Closed);
}

#[test]
fn a_peer_that_stops_reading_is_dropped_after_the_ack_timeout() {
    // B reads nothing but must not give up first for hearing nothing.
    let (mut p, ha, hb) = Pair::with_timers(Timers {
        silent: Duration::from_secs(60),
        ..Timers::default()
    });
    let auth_b = sends(&p.feed_b(&ha));
    let auth_a = sends(&p.feed_a(&hb));
    p.feed_a(&auth_b);
    p.feed_b(&auth_a);
    let n = now_at(p.base, 2);
    p.ta.local_change(sticky(1), on("s", n.mono), None, n)
        .unwrap();
    // A sends its snapshot; B never reads it but keeps sending heartbeats.
    p.a.start_resync(&p.ta, n);
    let mut reason = None;
    for s in 1..=20 {
        let now = now_at(p.base, 2 + s * 1000);
        let beat = sends(&p.b.on_tick(&p.tb, now));
        assert!(session_closed(&p.a.on_bytes(&mut p.ta, now, &beat)).is_none());
        if let Some(r) = session_closed(&p.a.on_tick(&p.ta, now)) {
            reason = Some((s, r.clone()));
            break;
        }
    }
    assert_eq!(
        reason,
        Some((15, CloseReason::AckTimeout(Duration::from_secs(15))))
    );
}

#[test]
fn a_wire_error_is_named_in_the_close() {
    let (mut p, _, _) = Pair::new();
    let out = p.feed_b(&[0, 0, 0, 1]);
    assert_eq!(
        session_closed(&out),
        Some(&CloseReason::Wire(WireError::Undersized(5)))
    );
}
