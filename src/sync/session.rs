//! One sync connection as a pure state machine: bytes and ticks in, [`Output`]s out. No I/O;
//! the time is a parameter.
//!
//! Stages: Hello sent, waiting for the peer's (handshaking) -> keys derived, Auth sent,
//! waiting for the peer's Auth (handshaking) -> open: our snapshot goes out once the link
//! calls [`Session::start_resync`] while the peer's comes in (resyncing) -> both snapshots
//! done (live): batched updates, acks, heartbeats. Anything out of turn closes the session:
//! a frame that fails its tag or comes out of sequence, a message the stage does not allow,
//! a timeout. The next connection resyncs in full, so closing loses nothing.
//!
//! Flow control: frames carrying entries stay counted until the peer acks them; past
//! `window_bytes` unacked nothing more is built, and an ack older than `ack` closes the
//! session (a peer that connects and stops reading cannot make this host queue without
//! bound: local changes only mark keys, at most one per key).

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Now;
use super::auth::{self, AuthError, Nonce, Role, SessionKeys, SharedKey};
use super::record;
use super::table::{Entry, Key, Merged, Offset, Table};
use super::wire::{self, Frame, Hello, Kind, Message, WireError};

/// Snapshot chunks and update batches are cut at about this many payload bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// At most this many entries in one snapshot chunk (below `wire::MAX_ENTRIES`).
const CHUNK_ENTRIES: usize = 4096;

/// The session's clocks and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// From the connection to the peer's verified Auth.
    pub handshake: Duration,
    /// Sent when nothing else was for this long.
    pub heartbeat: Duration,
    /// Closed when nothing arrived for this long (several heartbeats).
    pub silent: Duration,
    /// Closed when the oldest unacked frame is this old.
    pub ack: Duration,
    /// A local change waits at most this long for others to share its frame.
    pub batch_delay: Duration,
    /// An update frame holds at most this many entries (and goes at once when full).
    pub batch_entries: usize,
    /// Unacked bytes in flight before sending pauses.
    pub window_bytes: usize,
}

impl Default for Timers {
    /// HAProxy's peers use 3 s heartbeats and 5 s timeouts; a back link is faster.
    fn default() -> Timers {
        Timers {
            handshake: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            silent: Duration::from_secs(5),
            ack: Duration::from_secs(15),
            batch_delay: Duration::from_millis(50),
            batch_entries: 1000,
            window_bytes: 4 << 20,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("nothing received for {0:?}")]
    Silent(Duration),
    #[error("nothing acknowledged for {0:?}")]
    AckTimeout(Duration),
    #[error("the peer closed: {}", .0.escape_debug())]
    PeerGoodbye(String),
    #[error("connection lost: {}", .0.escape_debug())]
    Lost(String),
    #[error("connected to itself (the peer has this process's origin id)")]
    SelfConnect,
    #[error("a connection from {0}, not the configured peer")]
    NotPeer(IpAddr),
    #[error("too many connections from the peer at once")]
    TooMany,
    #[error("the other connection to the peer was kept")]
    Duplicate,
    #[error("the peer restarted; its new connection replaces this one")]
    Replaced,
    #[error("stopping")]
    Stop,
}

impl CloseReason {
    /// A short name to count refusals by in `show sync`.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Wire(e) => e.label(),
            CloseReason::Auth(AuthError::BadMac) => "auth",
            CloseReason::Auth(AuthError::Sequence { .. }) => "replay",
            CloseReason::Protocol(_) => "protocol",
            CloseReason::HandshakeTimeout(_) => "handshake-timeout",
            CloseReason::Silent(_) => "silent",
            CloseReason::AckTimeout(_) => "ack-timeout",
            CloseReason::PeerGoodbye(_) => "peer-closed",
            CloseReason::Lost(_) => "lost",
            CloseReason::SelfConnect => "self",
            CloseReason::NotPeer(_) => "not-peer",
            CloseReason::TooMany => "too-many",
            CloseReason::Duplicate => "duplicate",
            CloseReason::Replaced => "replaced",
            CloseReason::Stop => "stop",
        }
    }

    /// Whether to send the peer a Goodbye saying so: not to a peer that cannot be trusted or
    /// understood, nor one that is gone.
    fn tell_peer(&self) -> bool {
        !matches!(
            self,
            CloseReason::Wire(_)
                | CloseReason::Auth(_)
                | CloseReason::PeerGoodbye(_)
                | CloseReason::Lost(_)
        )
    }
}

/// What the session asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes, after every earlier `Send` of this session.
    Send(Vec<u8>),
    /// An entry from the peer that won its merge: apply it.
    Apply(Entry<Instant>),
    /// The peer proved the key; `peer_origin` tells a restarted peer from the one before.
    Authenticated { peer_origin: u64 },
    /// The peer's full snapshot has been merged.
    PeerResynced,
    /// The session is over (after a Goodbye where one was due): close the connection.
    Closed(CloseReason),
}

/// Where a session is, for `show sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Handshaking,
    Resyncing,
    Live,
    Closed,
}

/// Running totals of one session (and, added up, of the link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub entries_sent: u64,
    pub entries_received: u64,
    /// Received entries that won their merge.
    pub entries_applied: u64,
    /// Received entries this host had in the same or a newer version (or already expired).
    pub entries_stale: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.frames_sent += o.frames_sent;
        self.frames_received += o.frames_received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.entries_sent += o.entries_sent;
        self.entries_received += o.entries_received;
        self.entries_applied += o.entries_applied;
        self.entries_stale += o.entries_stale;
    }
}

/// One session's part of `show sync`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionStatus {
    pub role: Role,
    pub stage: Stage,
    pub peer_origin: Option<u64>,
    /// Since the peer's Auth was verified.
    pub connected_for_ms: Option<u64>,
    pub connected_since_unix_ms: Option<u64>,
    pub counters: Counters,
    /// Entries sent and not yet acknowledged, and how long the oldest has waited.
    pub lag_entries: u64,
    pub lag_ms: u64,
    /// Keys waiting to be sent (snapshot and updates).
    pub queued: usize,
    /// The peer's wall clock minus ours, from its Auth and heartbeats (transit included).
    pub peer_clock_offset_ms: Option<i64>,
}

/// One direction's keys and frame numbers.
#[derive(Debug, Clone)]
struct Channel {
    keys: SessionKeys,
    send_seq: u64,
    recv_seq: u64,
    last_send: Instant,
    frames_sent: u64,
    bytes_sent: u64,
}

impl Channel {
    fn seal(&mut self, msg: &Message, now: Instant) -> Vec<u8> {
        let bytes = wire::seal(msg, self.send_seq, &self.keys.send);
        self.send_seq += 1;
        self.last_send = now;
        self.frames_sent += 1;
        self.bytes_sent += bytes.len() as u64;
        bytes
    }

    /// The message of an authenticated frame that verifies and comes next.
    fn open(&mut self, frame: &Frame<'_>) -> Result<Message, CloseReason> {
        if frame.kind == Kind::Hello {
            return Err(CloseReason::Protocol("a second hello"));
        }
        frame.verify(&self.keys.recv, self.recv_seq)?;
        self.recv_seq += 1;
        Ok(frame.message()?)
    }
}

/// Keys to send: first the snapshot's (`snapshot_left` of them at the front), then changed
/// keys, each queued at most once.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Key>,
    queued: HashSet<Key>,
    snapshot_left: usize,
    snapshot_sent: u64,
    /// ResyncEnd is still to be sent.
    end_due: bool,
    /// When the oldest queued update was queued.
    since: Option<Instant>,
}

impl Outbox {
    fn snapshot(keys: Vec<Key>) -> Outbox {
        Outbox {
            snapshot_left: keys.len(),
            queued: keys.iter().cloned().collect(),
            queue: keys.into(),
            end_due: true,
            ..Outbox::default()
        }
    }

    fn push(&mut self, key: &Key, now: Instant) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key.clone());
            if self.snapshot_left < self.queue.len() {
                self.since.get_or_insert(now);
            }
        }
    }

    /// The next key of the snapshot (`snapshot`) or of the updates.
    fn front(&self, snapshot: bool) -> Option<&Key> {
        let in_snapshot = self.snapshot_left > 0;
        if in_snapshot != snapshot {
            return None;
        }
        self.queue.front()
    }

    fn pop(&mut self) {
        if let Some(key) = self.queue.pop_front() {
            self.queued.remove(&key);
            self.snapshot_left = self.snapshot_left.saturating_sub(1);
        }
        if self.queue.len() <= self.snapshot_left {
            self.since = None;
        }
    }

    fn updates_due(&self, now: Instant, t: &Timers) -> bool {
        let waiting = self.queue.len() - self.snapshot_left;
        self.snapshot_left == 0
            && !self.end_due
            && waiting > 0
            && (waiting >= t.batch_entries || self.since.is_some_and(|s| now >= s + t.batch_delay))
    }
}

/// A sent frame with entries, until the peer acks it.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    entries: u64,
    bytes: usize,
    at: Instant,
}

/// The peer's snapshot, as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    Waiting,
    Receiving { got: u64 },
    Done,
}

/// An authenticated session.
#[derive(Debug)]
struct Open {
    chan: Channel,
    peer_origin: u64,
    since: Instant,
    since_wall_ms: u64,
    /// None until `start_resync`.
    outbox: Option<Outbox>,
    unacked: VecDeque<InFlight>,
    unacked_bytes: usize,
    entries_sent: u64,
    inbound: Inbound,
}

impl Open {
    /// Seal a frame that carries `entries` entries and count it until acked.
    fn seal_counted(&mut self, msg: &Message, entries: u64, now: Instant) -> Vec<u8> {
        let seq = self.chan.send_seq;
        let bytes = self.chan.seal(msg, now);
        self.unacked.push_back(InFlight {
            seq,
            entries,
            bytes: bytes.len(),
            at: now,
        });
        self.unacked_bytes += bytes.len();
        self.entries_sent += entries;
        bytes
    }

    fn acked(&mut self, seq: u64) -> Result<(), CloseReason> {
        if seq >= self.chan.send_seq {
            return Err(CloseReason::Protocol("an ack of a frame never sent"));
        }
        while let Some(f) = self.unacked.front()
            && f.seq <= seq
        {
            self.unacked_bytes -= f.bytes;
            self.unacked.pop_front();
        }
        Ok(())
    }

    /// The next frame to send, if one is due and the window has room.
    fn next_frame(&mut self, table: &Table, now: Instant, t: &Timers) -> Option<Vec<u8>> {
        if self.unacked_bytes >= t.window_bytes {
            return None;
        }
        let outbox = self.outbox.as_mut()?;
        if outbox.snapshot_left > 0 {
            let batch = take_batch(outbox, table, now, true, CHUNK_ENTRIES);
            outbox.snapshot_sent += batch.len() as u64;
            let n = batch.len() as u64;
            // Every key of this chunk may have gone since the cut: then send nothing yet.
            return Some(if n == 0 {
                Vec::new()
            } else {
                self.seal_counted(&Message::ResyncChunk(batch), n, now)
            });
        }
        if outbox.end_due {
            outbox.end_due = false;
            let end = Message::ResyncEnd {
                entries: outbox.snapshot_sent,
            };
            return Some(self.seal_counted(&end, 0, now));
        }
        if outbox.updates_due(now, t) {
            let batch = take_batch(outbox, table, now, false, t.batch_entries);
            let n = batch.len() as u64;
            return Some(if n == 0 {
                Vec::new()
            } else {
                self.seal_counted(&Message::Updates(batch), n, now)
            });
        }
        None
    }
}

/// Up to `max` entries from the front of the outbox, as they are in the table now, cut at
/// about [`CHUNK_BYTES`]. Keys gone from the table are skipped.
fn take_batch(
    outbox: &mut Outbox,
    table: &Table,
    now: Instant,
    snapshot: bool,
    max: usize,
) -> Vec<Entry<Offset>> {
    let mut batch = Vec::new();
    let mut bytes = 4;
    while batch.len() < max {
        let Some(key) = outbox.front(snapshot) else {
            break;
        };
        let Some(entry) = table.get(key, now) else {
            outbox.pop();
            continue;
        };
        let entry = entry.to_wire(now);
        let len = record::entry_len(&entry);
        if !batch.is_empty() && bytes + len > CHUNK_BYTES {
            break;
        }
        outbox.pop();
        bytes += len;
        batch.push(entry);
    }
    batch
}

#[derive(Debug)]
enum Phase {
    AwaitHello,
    AwaitAuth {
        chan: Box<Channel>,
        peer_origin: u64,
    },
    Open(Box<Open>),
    Closed,
}

/// One connection to the peer.
#[derive(Debug)]
pub struct Session {
    role: Role,
    origin: u64,
    key: SharedKey,
    timers: Timers,
    phase: Phase,
    /// Our Hello frame, as sent: half of the key derivation's salt.
    hello: Vec<u8>,
    inbuf: Vec<u8>,
    started: Instant,
    last_recv: Instant,
    counters: Counters,
    peer_offset_ms: Option<i64>,
}

impl Session {
    /// A new connection (`role`: who dialed); the first output sends our Hello.
    pub fn new(
        role: Role,
        origin: u64,
        nonce: Nonce,
        key: SharedKey,
        timers: Timers,
        now: Instant,
    ) -> (Session, Vec<Output>) {
        let hello = wire::encode_hello(&Hello { origin, nonce });
        let mut s = Session {
            role,
            origin,
            key,
            timers,
            phase: Phase::AwaitHello,
            hello: hello.clone(),
            inbuf: Vec::new(),
            started: now,
            last_recv: now,
            counters: Counters::default(),
            peer_offset_ms: None,
        };
        s.counters.frames_sent = 1;
        s.counters.bytes_sent = hello.len() as u64;
        (s, vec![Output::Send(hello)])
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The peer's origin id once its Hello arrived.
    pub fn peer_origin(&self) -> Option<u64> {
        match &self.phase {
            Phase::AwaitAuth { peer_origin, .. } => Some(*peer_origin),
            Phase::Open(o) => Some(o.peer_origin),
            _ => None,
        }
    }

    pub fn stage(&self) -> Stage {
        match &self.phase {
            Phase::AwaitHello | Phase::AwaitAuth { .. } => Stage::Handshaking,
            Phase::Open(o) => {
                let sent = o
                    .outbox
                    .as_ref()
                    .is_some_and(|b| b.snapshot_left == 0 && !b.end_due);
                if sent && o.inbound == Inbound::Done {
                    Stage::Live
                } else {
                    Stage::Resyncing
                }
            }
            Phase::Closed => Stage::Closed,
        }
    }

    /// Bytes read from the connection.
    pub fn on_bytes(&mut self, table: &mut Table, now: Now, bytes: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        self.last_recv = now.mono;
        self.counters.bytes_received += bytes.len() as u64;
        let mut buf = std::mem::take(&mut self.inbuf);
        buf.extend_from_slice(bytes);
        let mut used = 0;
        let mut ack = None;
        while !self.is_closed() {
            match wire::split(&buf[used..]) {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    used += n;
                    self.counters.frames_received += 1;
                    match self.on_frame(&frame, table, now, &mut out) {
                        Ok(true) => ack = Some(frame.seq),
                        Ok(false) => {}
                        Err(reason) => self.fail(reason, now.mono, &mut out),
                    }
                }
                Err(e) => self.fail(e.into(), now.mono, &mut out),
            }
        }
        buf.drain(..used);
        self.inbuf = buf;
        if let (Some(seq), Phase::Open(o)) = (ack, &mut self.phase) {
            out.push(Output::Send(o.chan.seal(&Message::Ack { seq }, now.mono)));
        }
        self.flush_into(table, now.mono, &mut out);
        out
    }

    /// Ok(true): the frame carried entries and is to be acked.
    fn on_frame(
        &mut self,
        frame: &Frame<'_>,
        table: &mut Table,
        now: Now,
        out: &mut Vec<Output>,
    ) -> Result<bool, CloseReason> {
        match self.phase {
            Phase::AwaitHello => self.on_hello(frame, now, out).map(|()| false),
            Phase::AwaitAuth { .. } => self.on_auth(frame, now, out).map(|()| false),
            Phase::Open(_) => self.on_message(frame, table, now, out),
            Phase::Closed => Ok(false),
        }
    }

    fn on_hello(
        &mut self,
        frame: &Frame<'_>,
        now: Now,
        out: &mut Vec<Output>,
    ) -> Result<(), CloseReason> {
        let hello = frame.hello()?;
        if hello.origin == self.origin {
            return Err(CloseReason::SelfConnect);
        }
        let (initiator, responder) = match self.role {
            Role::Initiator => (&self.hello[..], frame.bytes()),
            Role::Responder => (frame.bytes(), &self.hello[..]),
        };
        let keys = auth::derive(&self.key, self.role, initiator, responder);
        let mut chan = Channel {
            keys,
            send_seq: 0,
            recv_seq: 0,
            last_send: now.mono,
            frames_sent: 0,
            bytes_sent: 0,
        };
        let auth = Message::Auth {
            wall_ms: now.wall_ms,
        };
        out.push(Output::Send(chan.seal(&auth, now.mono)));
        self.phase = Phase::AwaitAuth {
            chan: Box::new(chan),
            peer_origin: hello.origin,
        };
        Ok(())
    }

    fn on_auth(
        &mut self,
        frame: &Frame<'_>,
        now: Now,
        out: &mut Vec<Output>,
    ) -> Result<(), CloseReason> {
        let Phase::AwaitAuth { chan, .. } = &mut self.phase else {
            return Ok(());
        };
        let Message::Auth { wall_ms } = chan.open(frame)? else {
            return Err(CloseReason::Protocol("expected auth"));
        };
        let Phase::AwaitAuth { chan, peer_origin } =
            std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return Ok(());
        };
        self.peer_offset_ms = Some(clock_offset(wall_ms, now.wall_ms));
        self.phase = Phase::Open(Box::new(Open {
            chan: *chan,
            peer_origin,
            since: now.mono,
            since_wall_ms: now.wall_ms,
            outbox: None,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            entries_sent: 0,
            inbound: Inbound::Waiting,
        }));
        out.push(Output::Authenticated { peer_origin });
        Ok(())
    }

    fn on_message(
        &mut self,
        frame: &Frame<'_>,
        table: &mut Table,
        now: Now,
        out: &mut Vec<Output>,
    ) -> Result<bool, CloseReason> {
        let Phase::Open(open) = &mut self.phase else {
            return Ok(false);
        };
        let msg = open.chan.open(frame)?;
        let entries = match msg {
            Message::Auth { .. } => return Err(CloseReason::Protocol("a second auth")),
            Message::ResyncStart { .. } => {
                if open.inbound != Inbound::Waiting {
                    return Err(CloseReason::Protocol("a second resync"));
                }
                open.inbound = Inbound::Receiving { got: 0 };
                return Ok(false);
            }
            Message::ResyncChunk(es) => {
                let Inbound::Receiving { got } = &mut open.inbound else {
                    return Err(CloseReason::Protocol("a resync chunk outside a resync"));
                };
                *got += es.len() as u64;
                es
            }
            Message::ResyncEnd { entries } => {
                if open.inbound != (Inbound::Receiving { got: entries }) {
                    return Err(CloseReason::Protocol("resync end with another count"));
                }
                open.inbound = Inbound::Done;
                out.push(Output::PeerResynced);
                return Ok(true);
            }
            Message::Updates(es) => {
                if open.inbound != Inbound::Done {
                    return Err(CloseReason::Protocol("an update before the resync ended"));
                }
                es
            }
            Message::Ack { seq } => return open.acked(seq).map(|()| false),
            Message::Heartbeat { wall_ms } => {
                self.peer_offset_ms = Some(clock_offset(wall_ms, now.wall_ms));
                return Ok(false);
            }
            Message::Goodbye { reason } => return Err(CloseReason::PeerGoodbye(reason)),
        };
        merge_all(entries, table, now, &mut self.counters, out);
        Ok(true)
    }

    /// Begin sending our full snapshot (the link calls this once the connection is kept).
    pub fn start_resync(&mut self, table: &Table, now: Now) -> Vec<Output> {
        let mut out = Vec::new();
        let Phase::Open(open) = &mut self.phase else {
            return out;
        };
        if open.outbox.is_some() {
            return out;
        }
        let keys = table.keys();
        let start = Message::ResyncStart {
            entries: keys.len() as u64,
        };
        out.push(Output::Send(open.chan.seal(&start, now.mono)));
        open.outbox = Some(Outbox::snapshot(keys));
        self.flush_into(table, now.mono, &mut out);
        out
    }

    /// A key changed here: send it in the next batch. A full batch goes at once.
    pub fn queue_change(&mut self, key: &Key, table: &Table, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if let Phase::Open(open) = &mut self.phase
            && let Some(outbox) = &mut open.outbox
        {
            outbox.push(key, now);
            self.flush_into(table, now, &mut out);
        }
        out
    }

    /// Timeouts, due batches and heartbeats.
    pub fn on_tick(&mut self, table: &Table, now: Now) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(reason) = self.timed_out(now.mono) {
            self.fail(reason, now.mono, &mut out);
            return out;
        }
        self.flush_into(table, now.mono, &mut out);
        if let Phase::Open(open) = &mut self.phase
            && now.mono >= open.chan.last_send + self.timers.heartbeat
        {
            let beat = Message::Heartbeat {
                wall_ms: now.wall_ms,
            };
            out.push(Output::Send(open.chan.seal(&beat, now.mono)));
        }
        out
    }

    /// End the session for a reason of this host's (a duplicate, a stop).
    pub fn close(&mut self, reason: CloseReason, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.is_closed() {
            self.fail(reason, now, &mut out);
        }
        out
    }

    fn fail(&mut self, reason: CloseReason, now: Instant, out: &mut Vec<Output>) {
        let chan = match &mut self.phase {
            Phase::AwaitAuth { chan, .. } => Some(&mut **chan),
            Phase::Open(o) => Some(&mut o.chan),
            _ => None,
        };
        if let Some(chan) = chan
            && reason.tell_peer()
        {
            let bye = Message::Goodbye {
                reason: reason.to_string(),
            };
            out.push(Output::Send(chan.seal(&bye, now)));
        }
        self.counters = self.counters();
        self.phase = Phase::Closed;
        out.push(Output::Closed(reason));
    }

    fn timed_out(&self, now: Instant) -> Option<CloseReason> {
        let t = &self.timers;
        match &self.phase {
            Phase::Closed => None,
            Phase::Open(o) => {
                if now >= self.last_recv + t.silent {
                    Some(CloseReason::Silent(t.silent))
                } else if o.unacked.front().is_some_and(|f| now >= f.at + t.ack) {
                    Some(CloseReason::AckTimeout(t.ack))
                } else {
                    None
                }
            }
            _ => (now >= self.started + t.handshake)
                .then_some(CloseReason::HandshakeTimeout(t.handshake)),
        }
    }

    /// Send whatever is due and fits the window.
    fn flush_into(&mut self, table: &Table, now: Instant, out: &mut Vec<Output>) {
        let Phase::Open(open) = &mut self.phase else {
            return;
        };
        while let Some(bytes) = open.next_frame(table, now, &self.timers) {
            if !bytes.is_empty() {
                out.push(Output::Send(bytes));
            }
        }
    }

    /// When `on_tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = &self.timers;
        let open = match &self.phase {
            Phase::Closed => return None,
            Phase::Open(o) => o,
            _ => return Some(self.started + t.handshake),
        };
        let mut due = vec![self.last_recv + t.silent, open.chan.last_send + t.heartbeat];
        if let Some(f) = open.unacked.front() {
            due.push(f.at + t.ack);
        }
        if let Some(b) = &open.outbox
            && open.unacked_bytes < t.window_bytes
            && b.snapshot_left == 0
            && !b.end_due
            && let Some(since) = b.since
        {
            due.push(since + t.batch_delay);
        }
        due.into_iter().min()
    }

    /// The totals so far (kept after the session closed).
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        let chan = match &self.phase {
            Phase::AwaitAuth { chan, .. } => Some(&**chan),
            Phase::Open(o) => {
                c.entries_sent += o.entries_sent;
                Some(&o.chan)
            }
            _ => None,
        };
        if let Some(chan) = chan {
            c.frames_sent += chan.frames_sent;
            c.bytes_sent += chan.bytes_sent;
        }
        c
    }

    pub fn status(&self, now: Instant) -> SessionStatus {
        let open = match &self.phase {
            Phase::Open(o) => Some(o),
            _ => None,
        };
        let lag_entries = open.map_or(0, |o| o.unacked.iter().map(|f| f.entries).sum());
        let oldest = open.and_then(|o| o.unacked.front()).map(|f| f.at);
        let queued = open
            .and_then(|o| o.outbox.as_ref())
            .map_or(0, |b| b.queue.len());
        SessionStatus {
            role: self.role,
            stage: self.stage(),
            peer_origin: self.peer_origin(),
            connected_for_ms: open.map(|o| ms(now.saturating_duration_since(o.since))),
            connected_since_unix_ms: open.map(|o| o.since_wall_ms),
            counters: self.counters(),
            lag_entries,
            lag_ms: oldest.map_or(0, |at| ms(now.saturating_duration_since(at))),
            queued,
            peer_clock_offset_ms: self.peer_offset_ms,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn clock_offset(peer_wall_ms: u64, our_wall_ms: u64) -> i64 {
    let diff = i128::from(peer_wall_ms) - i128::from(our_wall_ms);
    diff.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Merge received entries; the winners become `Apply` outputs.
fn merge_all(
    entries: Vec<Entry<Offset>>,
    table: &mut Table,
    now: Now,
    counters: &mut Counters,
    out: &mut Vec<Output>,
) {
    for e in entries {
        counters.entries_received += 1;
        match table.merge(e.into_local(now.mono), now) {
            Merged::Applied(e) => {
                counters.entries_applied += 1;
                out.push(Output::Apply(e));
            }
            Merged::Stale | Merged::Expired => counters.entries_stale += 1,
        }
    }
}
