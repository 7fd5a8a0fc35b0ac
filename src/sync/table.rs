//! The replicated table: what the pair shares, each entry with a version, merged so that the
//! higher version wins. No I/O; the time is a parameter.
//!
//! Keys are (kind, balancer, key): a sticky client (balancer, client address), one operator
//! setting of one server (balancer, server label, field), or a ban (address or prefix, for the
//! whole firewall). Servers are named by their label (`name:port` or the address, as the state
//! file names them), never by position, so two hosts whose configurations list the servers in
//! another order still agree.
//!
//! Times: locally every time is an [`Instant`]; on the wire an [`Offset`] in milliseconds from
//! the moment the frame was built, converted back on arrival against the receiver's own
//! monotonic clock. Remaining durations rather than absolute wall-clock times: a peer whose
//! clock is 30 s off still expires a ban within a transit delay of this host, and a wall-clock
//! step on either host moves nothing. (Absolute times would expire a ban 30 s early or late
//! on the skewed side.) Re-sending an unchanged entry cannot drift its expiry: an equal
//! version is never merged again.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::Now;

/// Longest balancer name or server label the table (and the wire) carries, in bytes.
pub const MAX_NAME: usize = 1024;
/// How long the I/O layer should keep a tombstone (`Value::Deleted`) whose key had no expiry
/// of its own (an unban of a ban without end): an older copy of the key arriving after that
/// (from a peer restarted with a state file older than this) can bring it back, so the state
/// file's maximum accepted age should not exceed it. A deleted key that had an expiry keeps
/// that expiry for its tombstone: past it the old copy is dead anyway.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Offsets are clamped to ten years either way: longer is "for ever" in practice, and the
/// clamp keeps `Instant` arithmetic from overflowing on hostile input.
pub const MAX_OFFSET_MS: i64 = 10 * 365 * 24 * 3600 * 1000;
/// A peer stamp further ahead of our wall clock than this does not drag our clock along (its
/// entry still merges by version): a peer with a clock a day off must not make every later
/// stamp of ours meaningless as a time.
pub const MAX_CLOCK_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// An entry's version: a hybrid logical clock stamp, ordered by (wall_ms, logical, origin).
///
/// Why this and not (random epoch, counter): the merge must let the later of two changes win.
/// A random epoch per process start orders nothing across restarts, and a counter alone makes
/// the host with more sticky churn win every conflict. The HLC stamp is the wall clock in
/// milliseconds, pushed forward past every stamp this host has seen (`observe`), with a
/// logical counter for stamps within one millisecond and the origin (a random id per process
/// start, distinct on the two hosts) as the final tie-break, so two different changes never
/// compare equal. Consequences:
/// - a change made after seeing the peer's entry always beats it, whatever the two wall
///   clocks say (the causal order survives a skew of seconds, or of hours);
/// - two changes made independently (say during a partition) are ordered by wall clock, so
///   within the skew between the hosts the "later" one may lose: the one case the skew shows;
/// - a host restarted from an old state file keeps the versions it saved (`Table::restore`
///   never re-stamps), so every entry changed since on the live peer is newer and wins the
///   resync. Entries restored without a saved version get [`Version::ZERO`] and lose to
///   anything.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Version {
    pub wall_ms: u64,
    pub logical: u32,
    pub origin: u64,
}

impl Version {
    /// Older than every stamp: for state restored from a file that kept no version.
    pub const ZERO: Version = Version {
        wall_ms: 0,
        logical: 0,
        origin: 0,
    };
}

/// The hybrid logical clock of one process.
#[derive(Debug, Clone)]
pub struct Hlc {
    wall_ms: u64,
    logical: u32,
    origin: u64,
}

impl Hlc {
    pub fn new(origin: u64) -> Hlc {
        Hlc {
            wall_ms: 0,
            logical: 0,
            origin,
        }
    }

    /// A stamp above every stamp made or observed so far.
    pub fn stamp(&mut self, wall_ms: u64) -> Version {
        if wall_ms > self.wall_ms {
            self.wall_ms = wall_ms;
            self.logical = 0;
        } else if let Some(next) = self.logical.checked_add(1) {
            self.logical = next;
        } else {
            self.wall_ms = self.wall_ms.saturating_add(1);
            self.logical = 0;
        }
        Version {
            wall_ms: self.wall_ms,
            logical: self.logical,
            origin: self.origin,
        }
    }

    /// Move past a stamp seen from the peer (or restored), unless it is absurdly far ahead of
    /// our wall clock (`MAX_CLOCK_AHEAD_MS`).
    pub fn observe(&mut self, seen: Version, wall_ms: u64) {
        if seen.wall_ms > wall_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
            return;
        }
        if (seen.wall_ms, seen.logical) > (self.wall_ms, self.logical) {
            self.wall_ms = seen.wall_ms;
            self.logical = seen.logical;
        }
    }
}

/// An address or prefix, its host bits cleared so that equal networks are equal keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// None when the prefix is longer than the address (32 or 128).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Net> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Net { addr, prefix })
    }

    /// One address (/32 or /128).
    pub fn host(addr: IpAddr) -> Net {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Net { addr, prefix }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which operator setting of a server an entry holds: one entry per field, so an operator
/// draining a server on one host and another changing its weight on the other both stick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Blacklist,
    Weight,
    Drain,
    Maint,
    Addr,
}

/// What an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A client of a sticky balancer.
    Sticky { balancer: String, client: IpAddr },
    /// One operator setting of one server, by its label.
    Server {
        balancer: String,
        server: String,
        field: Field,
    },
    /// A firewall ban.
    Ban { net: Net },
}

impl Key {
    /// Names shown in logs and counted in errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Sticky { .. } => "sticky",
            Key::Server { .. } => "server",
            Key::Ban { .. } => "ban",
        }
    }
}

/// One server setting; `T` is how times are held ([`Instant`] here, [`Offset`] on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting<T> {
    /// Blacklisted until then; None: not blacklisted (cleared by the operator).
    Blacklist {
        until: Option<T>,
    },
    Weight(u32),
    Drain(bool),
    Maint(bool),
    /// The address the operator gave the server; None: the configured one.
    Addr(Option<SocketAddr>),
}

impl<T> Setting<T> {
    pub fn field(&self) -> Field {
        match self {
            Setting::Blacklist { .. } => Field::Blacklist,
            Setting::Weight(_) => Field::Weight,
            Setting::Drain(_) => Field::Drain,
            Setting::Maint(_) => Field::Maint,
            Setting::Addr(_) => Field::Addr,
        }
    }

    fn map_time<U>(self, f: &impl Fn(T) -> U) -> Setting<U> {
        match self {
            Setting::Blacklist { until } => Setting::Blacklist {
                until: until.map(f),
            },
            Setting::Weight(w) => Setting::Weight(w),
            Setting::Drain(d) => Setting::Drain(d),
            Setting::Maint(m) => Setting::Maint(m),
            Setting::Addr(a) => Setting::Addr(a),
        }
    }
}

/// What an entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<T> {
    /// The server (label) the client was sent to, and when it was last seen.
    Sticky {
        server: String,
        last_seen: T,
    },
    Setting(Setting<T>),
    /// Banned until the entry's `expires` (None: until unbanned).
    Ban,
    /// A tombstone: the key was removed (an unban, a forgotten client). Kept until its
    /// `expires` so that an older copy from the peer cannot bring the key back.
    Deleted,
}

impl<T> Value<T> {
    /// Whether this value may be stored under `key`.
    pub fn fits(&self, key: &Key) -> bool {
        match (key, self) {
            (_, Value::Deleted) => true,
            (Key::Sticky { .. }, Value::Sticky { .. }) | (Key::Ban { .. }, Value::Ban) => true,
            (Key::Server { field, .. }, Value::Setting(s)) => s.field() == *field,
            _ => false,
        }
    }

    pub fn is_deleted(&self) -> bool {
        matches!(self, Value::Deleted)
    }

    fn map_time<U>(self, f: &impl Fn(T) -> U) -> Value<U> {
        match self {
            Value::Sticky { server, last_seen } => Value::Sticky {
                server,
                last_seen: f(last_seen),
            },
            Value::Setting(s) => Value::Setting(s.map_time(f)),
            Value::Ban => Value::Ban,
            Value::Deleted => Value::Deleted,
        }
    }
}

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub key: Key,
    pub version: Version,
    pub value: Value<T>,
    /// When the entry means nothing any more and is dropped (a ban's end, a sticky client's
    /// last sight + tracking, a tombstone's keeping time); None: kept.
    pub expires: Option<T>,
}

impl<T> Entry<T> {
    fn map_time<U>(self, f: impl Fn(T) -> U) -> Entry<U> {
        Entry {
            key: self.key,
            version: self.version,
            value: self.value.map_time(&f),
            expires: self.expires.map(&f),
        }
    }
}

impl Entry<Instant> {
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }

    /// The entry as it travels, its times relative to `now`.
    pub fn to_wire(&self, now: Instant) -> Entry<Offset> {
        self.clone().map_time(|t| Offset::between(now, t))
    }
}

impl Entry<Offset> {
    /// The entry as received, its times against this host's clock.
    pub fn into_local(self, now: Instant) -> Entry<Instant> {
        self.map_time(|o| o.after(now))
    }
}

/// A time on the wire: milliseconds after (positive) or before (negative) the moment the
/// frame was built, clamped to [`MAX_OFFSET_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(i64);

impl Offset {
    pub fn from_ms(ms: i64) -> Offset {
        Offset(ms.clamp(-MAX_OFFSET_MS, MAX_OFFSET_MS))
    }

    pub fn ms(self) -> i64 {
        self.0
    }

    /// `t` as seen from `now`.
    pub fn between(now: Instant, t: Instant) -> Offset {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if t >= now {
            Offset::from_ms(ms(t - now))
        } else {
            Offset::from_ms(-ms(now - t))
        }
    }

    /// The instant this offset names from `now`.
    pub fn after(self, now: Instant) -> Instant {
        let d = Duration::from_millis(self.0.unsigned_abs());
        let t = if self.0 >= 0 {
            now.checked_add(d)
        } else {
            now.checked_sub(d)
        };
        t.unwrap_or(now)
    }
}

/// What merging an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The table took it: apply this to the balancer or firewall. A newer entry that had
    /// already expired on arrival comes back as a tombstone when it removed a live entry.
    Applied(Entry<Instant>),
    /// The table has this version or a newer one: nothing changed.
    Stale,
    /// Newer, but already expired, and nothing live was there: dropped.
    Expired,
}

/// Why a local change or restored entry was refused (a bug in the caller or a damaged file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("a value of another kind cannot be stored under a {0} key")]
    Mismatch(&'static str),
    #[error("name longer than {MAX_NAME} bytes")]
    NameTooLong,
}

/// The replicated table and this process's clock.
#[derive(Debug, Clone)]
pub struct Table {
    entries: HashMap<Key, Entry<Instant>>,
    clock: Hlc,
}

impl Table {
    /// An empty table; `origin` is this process's id (random per start: `auth::random_origin`).
    pub fn new(origin: u64) -> Table {
        Table {
            entries: HashMap::new(),
            clock: Hlc::new(origin),
        }
    }

    pub fn origin(&self) -> u64 {
        self.clock.origin
    }

    /// Entries and tombstones, expired ones included until the next `expire`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry under `key` unless it has expired (tombstones included).
    pub fn get(&self, key: &Key, now: Instant) -> Option<&Entry<Instant>> {
        self.entries.get(key).filter(|e| !e.expired(now))
    }

    /// Every entry, for the state file and `show`.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<Instant>> {
        self.entries.values()
    }

    /// The keys at this moment: a full resync's cut.
    pub fn keys(&self) -> Vec<Key> {
        self.entries.keys().cloned().collect()
    }

    /// A change made on this host: stamped with a fresh version, stored, and returned so the
    /// caller can queue it for the peer.
    pub fn local_change(
        &mut self,
        key: Key,
        value: Value<Instant>,
        expires: Option<Instant>,
        now: Now,
    ) -> Result<Version, ChangeError> {
        check(&key, &value)?;
        let version = self.clock.stamp(now.wall_ms);
        let entry = Entry {
            key: key.clone(),
            version,
            value,
            expires,
        };
        self.entries.insert(key, entry);
        Ok(version)
    }

    /// An entry read back from the state file: kept with its saved version (never re-stamped,
    /// so it loses to anything changed since), merged like a peer's.
    pub fn restore(&mut self, entry: Entry<Instant>, now: Now) -> Result<Merged, ChangeError> {
        check(&entry.key, &entry.value)?;
        Ok(self.merge(entry, now))
    }

    /// An entry from the peer: taken when its version is higher than ours.
    pub fn merge(&mut self, entry: Entry<Instant>, now: Now) -> Merged {
        self.clock.observe(entry.version, now.wall_ms);
        let newer = self
            .entries
            .get(&entry.key)
            .is_none_or(|old| entry.version > old.version);
        if !newer {
            return Merged::Stale;
        }
        if entry.expired(now.mono) {
            return match self.entries.remove(&entry.key) {
                Some(old) if !old.value.is_deleted() && !old.expired(now.mono) => {
                    Merged::Applied(Entry {
                        value: Value::Deleted,
                        expires: None,
                        ..entry
                    })
                }
                _ => Merged::Expired,
            };
        }
        self.entries.insert(entry.key.clone(), entry.clone());
        Merged::Applied(entry)
    }

    /// Drop every entry past its expiry; returns how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| !e.expired(now));
        before - self.entries.len()
    }
}

/// The value fits the key and every name fits the wire.
fn check<T>(key: &Key, value: &Value<T>) -> Result<(), ChangeError> {
    if !value.fits(key) {
        return Err(ChangeError::Mismatch(key.kind()));
    }
    let long = |s: &str| s.len() > MAX_NAME;
    let too_long = match (key, value) {
        (Key::Sticky { balancer, .. }, Value::Sticky { server, .. }) => {
            long(balancer) || long(server)
        }
        (Key::Sticky { balancer, .. }, _) => long(balancer),
        (
            Key::Server {
                balancer, server, ..
            },
            _,
        ) => long(balancer) || long(server),
        (Key::Ban { .. }, _) => false,
    };
    if too_long {
        return Err(ChangeError::NameTooLong);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now(base: Instant, ms: u64, wall: u64) -> Now {
        Now {
            mono: base + Duration::from_millis(ms),
            wall_ms: wall,
        }
    }

    /// A client of the balancer `app`, 192.0.2.`client`.
    pub(crate) fn sticky(client: u8) -> Key {
        Key::Sticky {
            balancer: "app".into(),
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, client)),
        }
    }

    /// Sticky on `server`, last seen `at`.
    pub(crate) fn on(server: &str, at: Instant) -> Value<Instant> {
        Value::Sticky {
            server: server.into(),
            last_seen: at,
        }
    }

    #[test]
    fn hlc_stamps_increase_and_pass_what_they_saw() {
        let mut c = Hlc::new(7);
        let a = c.stamp(1000);
        let b = c.stamp(1000);
        let d = c.stamp(999);
        assert!(a < b && b < d, "{a:?} {b:?} {d:?}");
        c.observe(
            Version {
                wall_ms: 5000,
                logical: 3,
                origin: 9,
            },
            1000,
        );
        let e = c.stamp(1000);
        assert_eq!((e.wall_ms, e.logical, e.origin), (5000, 4, 7));
    }

    #[test]
    fn hlc_ignores_a_stamp_a_day_ahead() {
        let mut c = Hlc::new(1);
        let far = Version {
            wall_ms: 1000 + MAX_CLOCK_AHEAD_MS + 1,
            logical: 0,
            origin: 2,
        };
        c.observe(far, 1000);
        assert_eq!(c.stamp(1000).wall_ms, 1000);
    }

    #[test]
    fn hlc_survives_logical_overflow() {
        let mut c = Hlc::new(1);
        c.observe(
            Version {
                wall_ms: 10,
                logical: u32::MAX,
                origin: 2,
            },
            10,
        );
        let v = c.stamp(10);
        assert_eq!((v.wall_ms, v.logical), (11, 0));
    }

    #[test]
    fn newer_wins_older_and_equal_are_stale() {
        let base = Instant::now();
        let mut t = Table::new(1);
        let n = now(base, 0, 1000);
        let v1 = t
            .local_change(sticky(1), on("s1", n.mono), None, n)
            .unwrap();
        let older = Entry {
            key: sticky(1),
            version: Version { wall_ms: 999, ..v1 },
            value: on("s2", n.mono),
            expires: None,
        };
        assert_eq!(t.merge(older.clone(), n), Merged::Stale);
        let same = Entry {
            version: v1,
            ..older.clone()
        };
        assert_eq!(t.merge(same, n), Merged::Stale);
        let newer = Entry {
            version: Version {
                wall_ms: 1001,
                logical: 0,
                origin: 2,
            },
            ..older
        };
        assert_eq!(t.merge(newer.clone(), n), Merged::Applied(newer.clone()));
        assert_eq!(t.get(&sticky(1), n.mono), Some(&newer));
    }

    #[test]
    fn an_expired_newer_entry_removes_the_live_one() {
        let base = Instant::now();
        let mut t = Table::new(1);
        let n = now(base, 10_000, 1000);
        let key = Key::Ban {
            net: Net::host("198.51.100.7".parse().unwrap()),
        };
        t.local_change(key.clone(), Value::Ban, None, n).unwrap();
        let gone = Entry {
            key: key.clone(),
            version: Version {
                wall_ms: 2000,
                logical: 0,
                origin: 2,
            },
            value: Value::Ban,
            expires: Some(base),
        };
        match t.merge(gone.clone(), n) {
            Merged::Applied(e) => assert!(e.value.is_deleted()),
            other => panic!("{other:?}"),
        }
        assert!(t.get(&key, n.mono).is_none());
        assert_eq!(t.merge(gone, n), Merged::Expired);
    }

    #[test]
    fn restore_keeps_the_saved_version() {
        let base = Instant::now();
        let mut t = Table::new(1);
        let n = now(base, 0, 50_000);
        let saved = Entry {
            key: sticky(3),
            version: Version {
                wall_ms: 10_000,
                logical: 2,
                origin: 99,
            },
            value: on("s1", base),
            expires: None,
        };
        assert_eq!(
            t.restore(saved.clone(), n).unwrap(),
            Merged::Applied(saved.clone())
        );
        assert_eq!(t.get(&sticky(3), base).unwrap().version, saved.version);
        let bad = Entry {
            value: Value::Ban,
            ..saved
        };
        assert_eq!(t.restore(bad, n), Err(ChangeError::Mismatch("sticky")));
    }

    #[test]
    fn mismatched_and_oversized_changes_are_refused() {
        let base = Instant::now();
        let mut t = Table::new(1);
        let n = now(base, 0, 1);
        let weight = Key::Server {
            balancer: "www".into(),
            server: "10.0.0.11:80".into(),
            field: Field::Weight,
        };
        let drain = Value::Setting(Setting::Drain(true));
        assert!(t.local_change(weight.clone(), drain, None, n).is_err());
        let ok = Value::Setting(Setting::Weight(3));
        assert!(t.local_change(weight, ok, None, n).is_ok());
        let long = Key::Sticky {
            balancer: "x".repeat(MAX_NAME + 1),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let v = on("s", base);
        assert_eq!(
            t.local_change(long, v, None, n),
            Err(ChangeError::NameTooLong)
        );
    }

    #[test]
    fn expire_drops_what_is_past() {
        let base = Instant::now();
        let mut t = Table::new(1);
        let n = now(base, 0, 1);
        let soon = Some(base + Duration::from_secs(1));
        t.local_change(sticky(1), on("s1", base), soon, n).unwrap();
        t.local_change(sticky(2), on("s1", base), None, n).unwrap();
        assert_eq!(t.expire(base + Duration::from_millis(999)), 0);
        assert_eq!(t.expire(base + Duration::from_secs(1)), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn nets_are_canonical() {
        let a = Net::new("192.0.2.77".parse().unwrap(), 24).unwrap();
        assert_eq!(a.to_string(), "192.0.2.0/24");
        let b = Net::new("2001:db8::1".parse().unwrap(), 0).unwrap();
        assert_eq!(b.to_string(), "::/0");
        assert!(Net::new("192.0.2.1".parse().unwrap(), 33).is_none());
        assert_eq!(Net::host("::1".parse().unwrap()).prefix(), 128);
    }

    #[test]
    fn offsets_round_trip_and_clamp() {
        let base = Instant::now() + Duration::from_secs(3600);
        let later = base + Duration::from_millis(1500);
        assert_eq!(Offset::between(base, later).ms(), 1500);
        assert_eq!(Offset::between(later, base).ms(), -1500);
        assert_eq!(Offset::from_ms(1500).after(base), later);
        assert_eq!(Offset::from_ms(i64::MIN).ms(), -MAX_OFFSET_MS);
        let _ = Offset::from_ms(i64::MAX).after(base);
    }

    // Merge is commutative and idempotent: any order, any repetition, the same table.
    // One version, one content: real stamps are unique per change, so the generator derives
    // the value from the version.
    fn arb_entry() -> impl Strategy<Value = Entry<Instant>> {
        (0u8..4, 0u64..6, 0u32..3, 1u64..4).prop_map(|(client, wall, logical, origin)| {
            let mix = wall * 7 + u64::from(logical) * 3 + origin;
            Entry {
                key: sticky(client),
                version: Version {
                    wall_ms: wall,
                    logical,
                    origin,
                },
                value: if mix % 4 == 0 {
                    Value::Deleted
                } else {
                    Value::Sticky {
                        server: format!("s{}", mix % 3),
                        last_seen: BASE.with(|b| *b),
                    }
                },
                expires: None,
            }
        })
    }

    thread_local! {
        static BASE: Instant = Instant::now();
    }

    fn merged(entries: &[Entry<Instant>]) -> Vec<Entry<Instant>> {
        let n = Now {
            mono: BASE.with(|b| *b),
            wall_ms: 3,
        };
        let mut t = Table::new(100);
        for e in entries {
            t.merge(e.clone(), n);
        }
        let mut all: Vec<_> = t.entries().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_idempotent(
            entries in proptest::collection::vec(arb_entry(), 0..12),
            seed in any::<u64>(),
        ) {
            let once = merged(&entries);
            let mut shuffled = entries.clone();
            // A cheap deterministic shuffle from the seed.
            let n = shuffled.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            prop_assert_eq!(&merged(&shuffled), &once);
            let mut twice = entries.clone();
            twice.extend(entries.iter().cloned());
            prop_assert_eq!(&merged(&twice), &once);
        }
    }
}
