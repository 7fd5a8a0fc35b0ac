//! The pair's state channel (issue 17), sans-IO: sticky clients, operator changes and bans
//! shared between the two hosts over one authenticated TCP connection. No sockets, no tokio,
//! no clock: every function takes the time as a [`Now`] and returns the actions to perform.
//!
//! # Pieces
//! - [`table`]: the replicated table. Entries keyed by (kind, balancer, key), each with a
//!   [`table::Version`] from a hybrid logical clock; merge = the higher version wins, so merging
//!   is commutative and idempotent and the two tables converge whatever the order. Deletions
//!   are tombstones that expire. Times inside entries travel as offsets from the send moment,
//!   so a skewed wall clock never moves an expiry.
//! - [`wire`] and [`record`]: length-prefixed frames (version byte, kind, sequence number,
//!   HMAC-SHA256 tag), at most [`wire::MAX_FRAME`] bytes; every decode error is a typed
//!   [`wire::WireError`], never a panic. [`wire::decode`] is the fuzz entry point (arbitrary
//!   bytes in; a cargo-fuzz target can wrap it later, as tests/wire_corpus.rs does for VRRP).
//! - [`auth`]: the shared key, per-connection keys by HKDF-SHA256 from both sides' random
//!   nonces (a recorded session cannot be replayed into a new one), and the MAC check
//!   (constant time, the `hmac` crate's `verify_slice`). RustCrypto's hmac + sha2 + hkdf rather
//!   than a Noise or TLS-PSK crate: the issue asks for authentication and replay protection of
//!   a dedicated back link, not secrecy, and a MAC'd frame with a counter is a few lines to
//!   check by eye where a Noise handshake would be a second state machine to drive.
//! - [`session`]: one connection. Hello (nonces) -> Auth (first MAC'd frame: key confirmation)
//!   -> full resync both ways (start, chunks, end) -> incremental update batches, acks and
//!   heartbeats; timeouts, flow control and the counters of `show sync`.
//! - [`link`]: the peer as a whole, what the I/O layer drives. It owns the table and up to two
//!   sessions (both hosts may dial at once), decides which connection survives, schedules
//!   reconnects, purges expired entries, and reports [`link::Status`].
//!
//! # Protocol, one connection
//! ```text
//!   dialer (Initiator)                           acceptor (Responder)
//!   Hello{origin, nonce_i}  ---->  <----  Hello{origin, nonce_r}     plain, seq 0
//!        both: keys = HKDF(salt = SHA-256(hello_i, hello_r), ikm = shared key)
//!   Auth{wall}        [seq 0] ---->  <---- Auth{wall}      [seq 0]   first MAC'd frame
//!   ResyncStart, ResyncChunk*, ResyncEnd ---->  (and the same the other way)
//!   Updates*, Ack, Heartbeat  <--->                                  seq +1 per frame
//! ```
//! Each direction numbers its MAC'd frames 0, 1, 2, ...; a frame with any other number than
//! the next is refused (replayed, reordered, dropped), and so is any frame whose tag does not
//! verify. A refused frame closes the connection; the next connection starts with a full
//! resync, so nothing is lost by closing.
//!
//! # What the I/O layer does (the daemon wiring, not here yet)
//! Create one [`link::Link`] with the restored table; call `start`; perform every
//! [`link::Action`]: `Connect` (dial the peer, then `connected` or `connect_failed`), `Send`
//! (write the bytes in order), `Close`, `Apply` (an entry from the peer that won: update the
//! balancer or the firewall), `PeerResynced` (VRRP may preempt now). Feed `on_bytes`,
//! `on_closed`, `local_change` (every sticky client, operator change and ban made here), and
//! call `on_tick` at `next_deadline`. Nonces and the origin id come from [`auth::random_nonce`]
//! and [`auth::random_origin`] (getrandom(2): works in the chroot).

pub mod auth;
pub mod link;
pub mod record;
pub mod session;
pub mod table;
pub mod wire;

#[cfg(test)]
mod sim;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The time, both ways: `mono` for every timer and expiry (immune to wall-clock steps), and
/// `wall_ms` (milliseconds since the Unix epoch) only to stamp versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: u64,
}

impl Now {
    /// The machine's clocks, for the I/O layer (the cores never call it).
    pub fn system() -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now {
            mono: Instant::now(),
            wall_ms,
        }
    }
}
