//! The framing of the parent/child channel, without I/O: a message (one JSON document) is
//! cut into datagrams of at most [`MAX_DATAGRAM`] bytes, each with a small header, and put
//! together again on the other side up to [`MAX_MESSAGE`] bytes. Both sides use the same two
//! limits, so whatever one side may send the other can read: a `show bans` with 100,000
//! entries or a large configuration on reload goes through, and an oversized or garbled
//! message is an error for that message, never a cut-off read or a stuck channel.
//!
//! SEQPACKET keeps datagram boundaries and order, and each side sends the fragments of one
//! message back to back (under one lock in the parent), so a message's fragments arrive
//! together; a fragment of another message in between is a protocol error.
//!
//! Header (10 bytes): kind (1: request, 2: reply, 3: push), flags (bit 0: more fragments
//! follow; bit 1: the first fragment of a message), then the id as a little-endian u64 (a request's id, echoed by its reply; 0 for
//! pushes).

/// Largest datagram either side sends: far below the smallest socket buffer limit
/// (net.core.wmem_max is 212,992 bytes by default), so a send never fails for its size.
pub const MAX_DATAGRAM: usize = 32 * 1024;
/// Largest message either side accepts, after reassembly.
pub const MAX_MESSAGE: usize = 16 << 20;
const HEADER: usize = 10;
const MORE: u8 = 1;
const FIRST: u8 = 2;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Child -> parent, answered by a `Reply` with the same id.
    Request = 1,
    Reply = 2,
    /// Parent -> child, unasked.
    Push = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Reply),
            3 => Some(Kind::Push),
            _ => None,
        }
    }
}

/// Cut `body` into datagrams; an empty body is one header-only datagram.
pub fn split(kind: Kind, id: u64, body: &[u8]) -> Vec<Vec<u8>> {
    let room = MAX_DATAGRAM - HEADER;
    let mut chunks: Vec<&[u8]> = body.chunks(room).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(k, chunk)| {
            let mut d = Vec::with_capacity(HEADER + chunk.len());
            d.push(kind as u8);
            let first = if k == 0 { FIRST } else { 0 };
            d.push(first | if k < last { MORE } else { 0 });
            d.extend_from_slice(&id.to_le_bytes());
            d.extend_from_slice(chunk);
            d
        })
        .collect()
}

/// Why a datagram or message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than the header, or an unknown kind.
    Malformed,
    /// A fragment of another message arrived before the current one was complete.
    Interleaved,
    /// The message grew past [`MAX_MESSAGE`]; its remaining fragments are skipped.
    TooLarge,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Malformed => "malformed datagram",
            FrameError::Interleaved => "fragments of two messages interleaved",
            FrameError::TooLarge => "message larger than the limit",
        })
    }
}

/// One message put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub id: u64,
    pub body: Vec<u8>,
}

/// Puts fragments back together, one message at a time.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The message being collected: (kind, id, body so far).
    partial: Option<(Kind, u64, Vec<u8>)>,
    /// The rest of a refused message with this (kind, id) is dropped quietly.
    skipping: Option<(Kind, u64)>,
}

impl Reassembler {
    /// Feed one datagram; a complete message comes out with its last fragment. After an
    /// error the channel goes on: the broken message is dropped whole, and the next message
    /// (it starts with a FIRST fragment) arrives normally.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Message>, FrameError> {
        let f = parse(datagram)?;
        let key = (f.kind, f.id);
        let mut body = if f.first {
            self.skipping = None;
            if self.partial.take().is_some() {
                self.skip_rest(f.more, key);
                return Err(FrameError::Interleaved);
            }
            Vec::new()
        } else {
            match self.partial.take() {
                Some((k, i, body)) if (k, i) == key => body,
                other => {
                    if self.skipping == Some(key) {
                        if !f.more {
                            self.skipping = None;
                        }
                        return Ok(None);
                    }
                    // A continuation of nothing (or of another message): both are dropped.
                    self.skip_rest(f.more, key);
                    return Err(if other.is_some() {
                        FrameError::Interleaved
                    } else {
                        FrameError::Malformed
                    });
                }
            }
        };
        if body.len() + f.chunk.len() > MAX_MESSAGE {
            self.skip_rest(f.more, key);
            return Err(FrameError::TooLarge);
        }
        body.extend_from_slice(f.chunk);
        if f.more {
            self.partial = Some((f.kind, f.id, body));
            return Ok(None);
        }
        Ok(Some(Message {
            kind: f.kind,
            id: f.id,
            body,
        }))
    }

    fn skip_rest(&mut self, more: bool, key: (Kind, u64)) {
        self.partial = None;
        self.skipping = more.then_some(key);
    }
}

struct Fragment<'a> {
    kind: Kind,
    first: bool,
    more: bool,
    id: u64,
    chunk: &'a [u8],
}

fn parse(d: &[u8]) -> Result<Fragment<'_>, FrameError> {
    if d.len() < HEADER || d.len() > MAX_DATAGRAM {
        return Err(FrameError::Malformed);
    }
    let kind = Kind::from_byte(d[0]).ok_or(FrameError::Malformed)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[2..HEADER]);
    Ok(Fragment {
        kind,
        first: d[1] & FIRST != 0,
        more: d[1] & MORE != 0,
        id: u64::from_le_bytes(id),
        chunk: &d[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(r: &mut Reassembler, ds: &[Vec<u8>]) -> Vec<Message> {
        ds.iter()
            .filter_map(|d| r.push(d).expect("valid fragment"))
            .collect()
    }

    #[test]
    fn messages_of_every_size_round_trip() {
        let mut r = Reassembler::default();
        for len in [
            0,
            1,
            MAX_DATAGRAM - HEADER,
            MAX_DATAGRAM - HEADER + 1,
            3 << 20,
        ] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let ds = split(Kind::Reply, 42, &body);
            assert!(ds.iter().all(|d| d.len() <= MAX_DATAGRAM));
            assert_eq!(ds.len(), len.div_ceil(MAX_DATAGRAM - HEADER).max(1));
            let got = whole(&mut r, &ds);
            assert_eq!(
                got,
                [Message {
                    kind: Kind::Reply,
                    id: 42,
                    body
                }]
            );
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_the_next_one_arrives() {
        let mut r = Reassembler::default();
        let big = vec![7u8; MAX_MESSAGE + 1];
        let mut errors = 0;
        for d in split(Kind::Push, 0, &big) {
            match r.push(&d) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("an oversized message must not come out"),
                Err(e) => {
                    assert_eq!(e, FrameError::TooLarge);
                    errors += 1;
                }
            }
        }
        assert_eq!(errors, 1, "one error, then the rest is skipped quietly");
        let next = whole(&mut r, &split(Kind::Reply, 9, b"ok"));
        assert_eq!(next[0].body, b"ok");
    }

    #[test]
    fn garbage_and_interleaving_are_errors_not_panics() {
        let mut r = Reassembler::default();
        for d in [&[][..], &[1u8; 3], &[9u8; 20]] {
            assert_eq!(r.push(d), Err(FrameError::Malformed));
        }
        let a = split(Kind::Reply, 1, &vec![1u8; 2 * MAX_DATAGRAM]);
        let b = split(Kind::Reply, 2, b"second");
        assert_eq!(r.push(&a[0]), Ok(None));
        assert_eq!(r.push(&b[0]), Err(FrameError::Interleaved));
        // The rest of message 1 belongs to nothing: refused once, then skipped quietly.
        assert_eq!(r.push(&a[1]), Err(FrameError::Malformed));
        for d in &a[2..] {
            assert_eq!(r.push(d), Ok(None));
        }
        let c = whole(&mut r, &split(Kind::Request, 3, b"third"));
        assert_eq!((c[0].id, c[0].body.as_slice()), (3, &b"third"[..]));
    }

    #[test]
    fn every_truncation_of_a_header_is_malformed() {
        let d = &split(Kind::Request, 5, b"")[0];
        for cut in 0..HEADER {
            assert_eq!(
                Reassembler::default().push(&d[..cut]),
                Err(FrameError::Malformed)
            );
        }
    }
}
