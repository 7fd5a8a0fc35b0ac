//! The sync channel's frames and messages. No I/O, no clock, no panics on any input: every
//! decoder returns a [`WireError`] for bytes it does not accept, and a frame's length is
//! checked against [`MAX_FRAME`] before any of its body is awaited, so a peer cannot make
//! this host buffer more than one bounded frame.
//!
//! A frame, integers big-endian:
//! ```text
//! u32 length (of what follows)  u8 version (1)  u8 kind  u64 sequence  payload  [tag]
//! ```
//! Every kind but Hello ends with a 32-byte HMAC-SHA256 tag over everything before it
//! (length field included) under the direction's key (auth.rs). Hello is sent in the clear
//! with sequence 0: it carries the nonces the keys are derived from, and the keys cover it
//! (the Hellos are the derivation's salt), so tampering with a Hello fails the next frame.
//!
//! Fuzzing: [`decode`] takes arbitrary bytes; a cargo-fuzz target (nightly) can call it as is.

use super::auth::{AuthError, FrameKey, NONCE_LEN, Nonce};
use super::record::{self, Reader, put_u32, put_u64};
use super::table::{Entry, Offset};

/// The protocol version this build speaks; a frame with another is refused.
pub const VERSION: u8 = 1;
/// Largest frame, length field and tag included.
pub const MAX_FRAME: usize = 256 * 1024;
/// Length field, version, kind, sequence.
pub const HEADER: usize = 4 + 1 + 1 + 8;
pub const TAG_LEN: usize = 32;
/// Most entries one frame may announce (a full frame of the smallest entries is ~7,000).
pub const MAX_ENTRIES: u32 = 8192;
/// Longest Goodbye reason, in bytes.
pub const MAX_REASON: usize = 200;
const HELLO_LEN: usize = 8 + NONCE_LEN;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes, more than {MAX_FRAME}")]
    Oversized(u64),
    #[error("frame of {0} bytes, shorter than its header and tag")]
    Undersized(u64),
    #[error("protocol version {0}; this host speaks {VERSION}")]
    Version(u8),
    #[error("unknown message type {0}")]
    UnknownKind(u8),
    #[error("message cut short")]
    Truncated,
    #[error("bytes after the end of the message")]
    TrailingBytes,
    #[error("text that is not UTF-8")]
    BadUtf8,
    #[error("name of {0} bytes, longer than allowed")]
    NameTooLong(usize),
    #[error("invalid {0} {1}")]
    BadByte(&'static str, u8),
    #[error("{0} entries in one frame, more than {MAX_ENTRIES}")]
    TooManyEntries(u32),
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl WireError {
    /// A short name for counting refusals in `show sync`.
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Oversized(_) => "oversized",
            WireError::Version(_) => "version",
            _ => "malformed",
        }
    }
}

/// A frame's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hello = 1,
    Auth = 2,
    ResyncStart = 3,
    ResyncChunk = 4,
    ResyncEnd = 5,
    Updates = 6,
    Ack = 7,
    Heartbeat = 8,
    Goodbye = 9,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        use Kind::*;
        [
            Hello,
            Auth,
            ResyncStart,
            ResyncChunk,
            ResyncEnd,
            Updates,
            Ack,
            Heartbeat,
            Goodbye,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }

    /// Every kind but Hello carries a tag.
    pub fn authenticated(self) -> bool {
        self != Kind::Hello
    }
}

/// The clear first frame of each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's origin id (random per process start).
    pub origin: u64,
    pub nonce: Nonce,
}

/// An authenticated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The first MAC'd frame each way: proves the key; the sender's wall clock (for the
    /// offset shown in `show sync`).
    Auth {
        wall_ms: u64,
    },
    /// A full snapshot follows; `entries` as counted at the cut (progress only).
    ResyncStart {
        entries: u64,
    },
    ResyncChunk(Vec<Entry<Offset>>),
    /// The snapshot is complete: `entries` were sent in its chunks.
    ResyncEnd {
        entries: u64,
    },
    /// Incremental changes, after the snapshot.
    Updates(Vec<Entry<Offset>>),
    /// Every frame up to and including sequence `seq` was received and merged.
    Ack {
        seq: u64,
    },
    Heartbeat {
        wall_ms: u64,
    },
    /// The sender closes the connection, and says why.
    Goodbye {
        reason: String,
    },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Auth { .. } => Kind::Auth,
            Message::ResyncStart { .. } => Kind::ResyncStart,
            Message::ResyncChunk(_) => Kind::ResyncChunk,
            Message::ResyncEnd { .. } => Kind::ResyncEnd,
            Message::Updates(_) => Kind::Updates,
            Message::Ack { .. } => Kind::Ack,
            Message::Heartbeat { .. } => Kind::Heartbeat,
            Message::Goodbye { .. } => Kind::Goodbye,
        }
    }

    fn put_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Auth { wall_ms } | Message::Heartbeat { wall_ms } => put_u64(out, *wall_ms),
            Message::ResyncStart { entries } | Message::ResyncEnd { entries } => {
                put_u64(out, *entries)
            }
            Message::ResyncChunk(es) | Message::Updates(es) => put_entries(out, es),
            Message::Ack { seq } => put_u64(out, *seq),
            Message::Goodbye { reason } => record::put_text(out, reason, MAX_REASON),
        }
    }

    /// The message of an authenticated frame's payload.
    pub fn decode(kind: Kind, payload: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader::new(payload);
        let msg = match kind {
            Kind::Hello => return Err(WireError::Malformed("a hello is not a message")),
            Kind::Auth => Message::Auth { wall_ms: r.u64()? },
            Kind::ResyncStart => Message::ResyncStart { entries: r.u64()? },
            Kind::ResyncChunk => Message::ResyncChunk(entries(&mut r)?),
            Kind::ResyncEnd => Message::ResyncEnd { entries: r.u64()? },
            Kind::Updates => Message::Updates(entries(&mut r)?),
            Kind::Ack => Message::Ack { seq: r.u64()? },
            Kind::Heartbeat => Message::Heartbeat { wall_ms: r.u64()? },
            Kind::Goodbye => Message::Goodbye {
                reason: r.text(MAX_REASON)?,
            },
        };
        r.finish()?;
        Ok(msg)
    }
}

/// A count, then the entries.
fn put_entries(out: &mut Vec<u8>, es: &[Entry<Offset>]) {
    put_u32(out, es.len() as u32);
    for e in es {
        record::put_entry(out, e);
    }
}

fn entries(r: &mut Reader<'_>) -> Result<Vec<Entry<Offset>>, WireError> {
    let n = r.u32()?;
    if n > MAX_ENTRIES {
        return Err(WireError::TooManyEntries(n));
    }
    // No capacity from the count: a short frame announcing many entries allocates nothing.
    let mut es = Vec::new();
    for _ in 0..n {
        es.push(record::entry(r)?);
    }
    Ok(es)
}

/// One whole frame, cut from the front of a buffer, not yet verified.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub seq: u64,
    pub payload: &'a [u8],
    /// The bytes the tag covers (everything before it).
    signed: &'a [u8],
    /// Empty for a Hello.
    tag: &'a [u8],
}

impl Frame<'_> {
    /// Check the tag (constant time), then that the sequence number is the next one.
    pub fn verify(&self, key: &FrameKey, expected_seq: u64) -> Result<(), AuthError> {
        key.verify(self.signed, self.tag)?;
        if self.seq != expected_seq {
            return Err(AuthError::Sequence {
                got: self.seq,
                expected: expected_seq,
            });
        }
        Ok(())
    }

    /// The Hello of a Hello frame.
    pub fn hello(&self) -> Result<Hello, WireError> {
        if self.kind != Kind::Hello {
            return Err(WireError::Malformed("expected a hello"));
        }
        if self.seq != 0 {
            return Err(WireError::Malformed("a hello has sequence 0"));
        }
        let mut r = Reader::new(self.payload);
        let origin = r.u64()?;
        let nonce = r
            .bytes(NONCE_LEN)?
            .try_into()
            .map_err(|_| WireError::Truncated)?;
        r.finish()?;
        Ok(Hello { origin, nonce })
    }

    /// The message of an authenticated frame (call `verify` first).
    pub fn message(&self) -> Result<Message, WireError> {
        Message::decode(self.kind, self.payload)
    }

    /// The frame's bytes as they travelled (a Hello's go into the key derivation).
    pub fn bytes(&self) -> &[u8] {
        self.signed
    }
}

/// Cut the first frame off `buf`: Ok(None) while it is incomplete, with the number of bytes
/// it took otherwise. Length, version and kind are checked as soon as their bytes are there.
pub fn split(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let total = 4 + u64::from(u32::from_be_bytes([len[0], len[1], len[2], len[3]]));
    if total > MAX_FRAME as u64 {
        return Err(WireError::Oversized(total));
    }
    if total < HEADER as u64 {
        return Err(WireError::Undersized(total));
    }
    if let Some(&v) = buf.get(4)
        && v != VERSION
    {
        return Err(WireError::Version(v));
    }
    let Some(&k) = buf.get(5) else {
        return Ok(None);
    };
    let kind = Kind::from_byte(k).ok_or(WireError::UnknownKind(k))?;
    let tag_len = if kind.authenticated() { TAG_LEN } else { 0 };
    let total = total as usize; // at most MAX_FRAME
    if total < HEADER + tag_len {
        return Err(WireError::Undersized(total as u64));
    }
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let (signed, tag) = frame.split_at(total - tag_len);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&signed[6..HEADER]);
    let frame = Frame {
        kind,
        seq: u64::from_be_bytes(seq),
        payload: &signed[HEADER..],
        signed,
        tag,
    };
    Ok(Some((frame, total)))
}

/// A frame's header with a placeholder length, then the payload from `put`.
fn frame_bytes(kind: Kind, seq: u64, put: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0, VERSION, kind as u8];
    put_u64(&mut out, seq);
    put(&mut out);
    out
}

fn set_length(out: &mut [u8]) {
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
}

/// A Hello frame.
pub fn encode_hello(h: &Hello) -> Vec<u8> {
    let mut out = frame_bytes(Kind::Hello, 0, |out| {
        put_u64(out, h.origin);
        out.extend_from_slice(&h.nonce);
    });
    debug_assert_eq!(out.len(), HEADER + HELLO_LEN);
    set_length(&mut out);
    out
}

/// An authenticated frame: header, payload, tag under `key`. The caller keeps the payload
/// under [`MAX_FRAME`] (session.rs cuts batches well below it).
pub fn seal(msg: &Message, seq: u64, key: &FrameKey) -> Vec<u8> {
    let mut out = frame_bytes(msg.kind(), seq, |out| msg.put_payload(out));
    out.extend_from_slice(&[0; TAG_LEN]);
    set_length(&mut out);
    let signed = out.len() - TAG_LEN;
    let tag = key.tag(&out[..signed]);
    out[signed..].copy_from_slice(&tag);
    out
}

/// What [`decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Hello(Hello),
    /// An authenticated frame's message, its tag NOT checked.
    Message {
        seq: u64,
        message: Message,
    },
}

/// The fuzz entry point: the first frame of `buf` and its message, without a key (the tag is
/// not checked). Ok(None): incomplete. Never panics.
pub fn decode(buf: &[u8]) -> Result<Option<(Decoded, usize)>, WireError> {
    let Some((frame, used)) = split(buf)? else {
        return Ok(None);
    };
    let decoded = match frame.kind {
        Kind::Hello => Decoded::Hello(frame.hello()?),
        _ => Decoded::Message {
            seq: frame.seq,
            message: frame.message()?,
        },
    };
    Ok(Some((decoded, used)))
}

#[cfg(test)]
mod tests {
    use super::super::auth::{Role, SharedKey, derive};
    use super::super::record::tests::samples;
    use super::*;
    use proptest::prelude::*;

    fn keys() -> (FrameKey, FrameKey) {
        let k = SharedKey::from_file_bytes(b"the pair's shared secret").unwrap();
        let a = derive(&k, Role::Initiator, b"hi", b"hr");
        let b = derive(&k, Role::Responder, b"hi", b"hr");
        (a.send, b.recv)
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Auth { wall_ms: 1_700_000 },
            Message::ResyncStart { entries: 11 },
            Message::ResyncChunk(samples()),
            Message::ResyncChunk(Vec::new()),
            Message::ResyncEnd { entries: 11 },
            Message::Updates(samples()),
            Message::Ack { seq: 42 },
            Message::Heartbeat { wall_ms: 5 },
            Message::Goodbye {
                reason: "handshake timeout".into(),
            },
        ]
    }

    fn open(bytes: &[u8], key: &FrameKey, seq: u64) -> Result<Message, String> {
        let (frame, used) = split(bytes)
            .map_err(|e| e.to_string())?
            .ok_or("incomplete")?;
        assert_eq!(used, bytes.len());
        frame.verify(key, seq).map_err(|e| e.to_string())?;
        frame.message().map_err(|e| e.to_string())
    }

    #[test]
    fn every_message_round_trips() {
        let (send, recv) = keys();
        for (seq, msg) in all_messages().into_iter().enumerate() {
            let bytes = seal(&msg, seq as u64, &send);
            assert_eq!(open(&bytes, &recv, seq as u64), Ok(msg.clone()));
            let decoded = decode(&bytes).unwrap().unwrap();
            let message = Decoded::Message {
                seq: seq as u64,
                message: msg,
            };
            assert_eq!(decoded, (message, bytes.len()));
        }
    }

    #[test]
    fn hello_round_trips() {
        let h = Hello {
            origin: 0x0102_0304_0506_0708,
            nonce: [7; NONCE_LEN],
        };
        let bytes = encode_hello(&h);
        assert_eq!(bytes.len(), HEADER + HELLO_LEN);
        assert_eq!(decode(&bytes), Ok(Some((Decoded::Hello(h), bytes.len()))));
    }

    #[test]
    fn every_truncation_waits_and_two_frames_split() {
        let (send, _) = keys();
        for msg in all_messages() {
            let bytes = seal(&msg, 3, &send);
            for cut in 0..bytes.len() {
                assert!(matches!(split(&bytes[..cut]), Ok(None)), "cut {cut}");
            }
        }
        let mut two = seal(&Message::Ack { seq: 1 }, 0, &send);
        let first = two.len();
        two.extend(seal(&Message::Ack { seq: 2 }, 1, &send));
        let (f, used) = split(&two).unwrap().unwrap();
        assert_eq!((f.seq, used), (0, first));
        let (f, _) = split(&two[used..]).unwrap().unwrap();
        assert_eq!(f.seq, 1);
    }

    #[test]
    fn a_short_payload_is_truncated_and_a_long_one_trailing() {
        let (send, recv) = keys();
        // Rebuild frames whose length field agrees with a cut or padded payload.
        let reframe = |msg: &Message, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut payload = Vec::new();
            msg.put_payload(&mut payload);
            edit(&mut payload);
            let mut out = frame_bytes(msg.kind(), 0, |o| o.extend_from_slice(&payload));
            out.extend_from_slice(&[0; TAG_LEN]);
            set_length(&mut out);
            let n = out.len() - TAG_LEN;
            let tag = send.tag(&out[..n]);
            out[n..].copy_from_slice(&tag);
            out
        };
        for msg in all_messages() {
            let mut full = Vec::new();
            msg.put_payload(&mut full);
            for cut in 0..full.len() {
                let bytes = reframe(&msg, &|p| p.truncate(cut));
                let got = open(&bytes, &recv, 0);
                assert_eq!(got, Err(WireError::Truncated.to_string()), "{msg:?} {cut}");
            }
            let bytes = reframe(&msg, &|p| p.push(0));
            assert_eq!(
                open(&bytes, &recv, 0),
                Err("bytes after the end of the message".into())
            );
        }
    }

    #[test]
    fn header_checks_come_before_the_body() {
        let big = ((MAX_FRAME - 3) as u32).to_be_bytes();
        assert_eq!(
            split(&big).map(|_| ()),
            Err(WireError::Oversized(MAX_FRAME as u64 + 1))
        );
        assert_eq!(
            split(b"GET / HTTP/1.1\r\n").map(|_| ()),
            Err(WireError::Oversized(0x4745_5424))
        );
        assert_eq!(
            split(&[0, 0, 0, 9]).map(|_| ()),
            Err(WireError::Undersized(13))
        );
        assert_eq!(
            split(&[0, 0, 0, 60, 2]).map(|_| ()),
            Err(WireError::Version(2))
        );
        assert_eq!(
            split(&[0, 0, 0, 60, 1, 0]).map(|_| ()),
            Err(WireError::UnknownKind(0))
        );
        assert_eq!(
            split(&[0, 0, 0, 60, 1, 10]).map(|_| ()),
            Err(WireError::UnknownKind(10))
        );
        // An authenticated kind too short for its tag.
        assert_eq!(
            split(&[0, 0, 0, 20, 1, 7]).map(|_| ()),
            Err(WireError::Undersized(24))
        );
    }

    #[test]
    fn a_frame_of_another_version_is_refused() {
        let (send, _) = keys();
        let mut bytes = seal(&Message::Ack { seq: 0 }, 0, &send);
        bytes[4] = 2;
        assert_eq!(decode(&bytes), Err(WireError::Version(2)));
    }

    #[test]
    fn forged_and_replayed_frames_are_refused() {
        let (send, recv) = keys();
        let bytes = seal(&Message::Updates(samples()), 5, &send);
        let bad_mac = "authentication failed (wrong key, or a forged or damaged frame)";
        // Every bit after the length field (a flipped length is another frame's shape).
        for bit in 32..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let got = split(&b).ok().flatten().map(|(f, _)| f.verify(&recv, 5));
            assert!(
                matches!(got, None | Some(Err(AuthError::BadMac))),
                "bit {bit}: {got:?}"
            );
        }
        assert_eq!(
            open(&bytes, &recv, 6),
            Err("frame number 5, expected 6 (replayed or reordered)".into())
        );
        let (other, _) = {
            let k = SharedKey::from_file_bytes(b"not the pair's secret at all").unwrap();
            let a = derive(&k, Role::Initiator, b"hi", b"hr");
            (a.send, a.recv)
        };
        let forged = seal(&Message::Ack { seq: 0 }, 0, &other);
        assert_eq!(open(&forged, &recv, 0), Err(bad_mac.into()));
    }

    #[test]
    fn bad_payloads_are_named() {
        let mut p = Vec::new();
        put_u32(&mut p, MAX_ENTRIES + 1);
        assert_eq!(
            Message::decode(Kind::Updates, &p),
            Err(WireError::TooManyEntries(MAX_ENTRIES + 1))
        );
        let mut p = Vec::new();
        record::put_text(&mut p, "x", 10);
        p[2] = 0xc0;
        assert_eq!(Message::decode(Kind::Goodbye, &p), Err(WireError::BadUtf8));
        let mut p = Vec::new();
        put_entries(&mut p, &samples()[..1]);
        p[4] = 0;
        assert_eq!(
            Message::decode(Kind::ResyncChunk, &p),
            Err(WireError::BadByte("entry kind", 0))
        );
        let hello = encode_hello(&Hello {
            origin: 1,
            nonce: [0; NONCE_LEN],
        });
        let mut with_seq = hello.clone();
        with_seq[13] = 1;
        assert_eq!(
            decode(&with_seq),
            Err(WireError::Malformed("a hello has sequence 0"))
        );
        let mut long = hello.clone();
        long.push(0);
        long[3] += 1;
        assert_eq!(decode(&long), Err(WireError::TrailingBytes));
    }

    proptest! {
        // Arbitrary bytes never panic the decoder, and neither do mutations of real frames.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..9,
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let (send, _) = keys();
            let mut bytes = seal(&all_messages()[which], 1, &send);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = decode(&bytes);
            let _ = decode(&bytes[..i]);
        }
    }
}
