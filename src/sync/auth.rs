//! The shared key, per-connection keys and frame tags, on RustCrypto's hmac, sha2 and hkdf.
//! No home-made primitive: HMAC-SHA256 tags, HKDF-SHA256 derivation, `verify_slice` for the
//! constant-time comparison.
//!
//! Each side of a connection sends a random 32-byte nonce in its Hello. Both derive
//!   PRK = HKDF-Extract(salt = SHA-256(label, hello_initiator, hello_responder), IKM = key)
//! and expand one MAC key per direction. A connection's keys therefore depend on both fresh
//! nonces: frames recorded from another connection never verify in this one, whichever side
//! an attacker replays them to. Within a connection the frame sequence numbers (wire.rs,
//! session.rs) refuse replays and reordering.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::wire::TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key file accepted (issue 17: "at least 16" bytes).
pub const MIN_KEY_LEN: usize = 16;
/// Longest key file accepted: a key, not a document.
pub const MAX_KEY_LEN: usize = 4096;
pub const NONCE_LEN: usize = 32;
pub type Nonce = [u8; NONCE_LEN];

const LABEL: &[u8] = b"fwlb sync v1";
const INITIATOR_TO_RESPONDER: &[u8] = b"fwlb sync v1 initiator to responder";
const RESPONDER_TO_INITIATOR: &[u8] = b"fwlb sync v1 responder to initiator";

/// The pair's secret: the key file's bytes. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey(Vec<u8>);

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedKey({} bytes)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the sync key has {0} bytes; at least {MIN_KEY_LEN} are needed")]
    TooShort(usize),
    #[error("the sync key has {0} bytes; at most {MAX_KEY_LEN} are accepted")]
    TooLong(usize),
}

impl SharedKey {
    /// The key from the key file's contents, one trailing newline (LF or CRLF) ignored.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<SharedKey, KeyError> {
        let key = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(bytes);
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(key.len()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(key.len()));
        }
        Ok(SharedKey(key.to_vec()))
    }
}

/// Which end of the TCP connection this host is: the dialer or the acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Initiator,
    Responder,
}

/// Why an authenticated frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong key on the other side, or the frame was forged or damaged.
    #[error("authentication failed (wrong key, or a forged or damaged frame)")]
    BadMac,
    /// A verified frame out of turn: replayed, reordered or one skipped.
    #[error("frame number {got}, expected {expected} (replayed or reordered)")]
    Sequence { got: u64, expected: u64 },
}

/// The MAC key of one direction of one connection.
#[derive(Clone)]
pub struct FrameKey(HmacSha256);

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

impl FrameKey {
    fn new(okm: &[u8; 32]) -> FrameKey {
        // HMAC takes a key of any length: this cannot fail.
        FrameKey(HmacSha256::new_from_slice(okm).expect("HMAC accepts any key length"))
    }

    /// The tag of `signed` (the frame's header and payload).
    pub fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(signed);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a received tag.
    pub fn verify(&self, signed: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        let mut mac = self.0.clone();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| AuthError::BadMac)
    }
}

/// One connection's two MAC keys, from this host's point of view.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    pub send: FrameKey,
    pub recv: FrameKey,
}

/// The keys of the connection whose Hello frames were `initiator_hello` (the dialer's) and
/// `responder_hello`, both as they travelled.
pub fn derive(
    key: &SharedKey,
    role: Role,
    initiator_hello: &[u8],
    responder_hello: &[u8],
) -> SessionKeys {
    let transcript = Sha256::new()
        .chain_update(LABEL)
        .chain_update((initiator_hello.len() as u64).to_be_bytes())
        .chain_update(initiator_hello)
        .chain_update((responder_hello.len() as u64).to_be_bytes())
        .chain_update(responder_hello)
        .finalize();
    let hkdf = Hkdf::<Sha256>::new(Some(&transcript), &key.0);
    let expand = |info: &[u8]| {
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: this cannot fail.
        hkdf.expand(info, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        FrameKey::new(&okm)
    };
    let i2r = expand(INITIATOR_TO_RESPONDER);
    let r2i = expand(RESPONDER_TO_INITIATOR);
    match role {
        Role::Initiator => SessionKeys {
            send: i2r,
            recv: r2i,
        },
        Role::Responder => SessionKeys {
            send: r2i,
            recv: i2r,
        },
    }
}

/// A fresh nonce from the kernel (getrandom(2): no device file, so it works in the chroot).
pub fn random_nonce() -> Result<Nonce, getrandom::Error> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)?;
    Ok(n)
}

/// This process's origin id: random per start, the versions' tie-break and the way a
/// restarted peer is told from the one before.
pub fn random_origin() -> Result<u64, getrandom::Error> {
    getrandom::u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: &[u8]) -> SharedKey {
        SharedKey::from_file_bytes(b).unwrap()
    }

    #[test]
    fn key_file_rules() {
        assert_eq!(
            SharedKey::from_file_bytes(b"0123456789abcde\n"),
            Err(KeyError::TooShort(15))
        );
        assert_eq!(
            key(b"0123456789abcdef\n"),
            key(b"0123456789abcdef\r\n"),
            "one trailing newline is ignored"
        );
        assert_ne!(key(b"0123456789abcdef\n\n"), key(b"0123456789abcdef"));
        assert!(SharedKey::from_file_bytes(&[b'k'; MAX_KEY_LEN + 1]).is_err());
        assert_eq!(
            format!("{:?}", key(b"0123456789abcdef")),
            "SharedKey(16 bytes)"
        );
    }

    #[test]
    fn both_ends_derive_matching_keys() {
        let k = key(b"a shared secret of the pair");
        let a = derive(&k, Role::Initiator, b"hello-i", b"hello-r");
        let b = derive(&k, Role::Responder, b"hello-i", b"hello-r");
        let tag = a.send.tag(b"frame");
        assert_eq!(b.recv.verify(b"frame", &tag), Ok(()));
        assert_eq!(a.recv.verify(b"frame", &tag), Err(AuthError::BadMac));
        let back = b.send.tag(b"frame");
        assert_eq!(a.recv.verify(b"frame", &back), Ok(()));
        assert_ne!(tag, back, "each direction has its own key");
    }

    #[test]
    fn another_nonce_or_key_gives_other_keys() {
        let k = key(b"a shared secret of the pair");
        let a = derive(&k, Role::Initiator, b"hello-i", b"hello-r");
        let tag = a.send.tag(b"frame");
        let replayed = derive(&k, Role::Responder, b"hello-i", b"hello-r2");
        assert_eq!(replayed.recv.verify(b"frame", &tag), Err(AuthError::BadMac));
        let wrong = derive(
            &key(b"another secret, not the pair's"),
            Role::Responder,
            b"hello-i",
            b"hello-r",
        );
        assert_eq!(wrong.recv.verify(b"frame", &tag), Err(AuthError::BadMac));
    }

    #[test]
    fn every_flipped_bit_fails() {
        let k = key(b"a shared secret of the pair");
        let a = derive(&k, Role::Initiator, b"i", b"r");
        let b = derive(&k, Role::Responder, b"i", b"r");
        let msg = b"some frame bytes".to_vec();
        let tag = a.send.tag(&msg);
        for bit in 0..msg.len() * 8 {
            let mut m = msg.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(b.recv.verify(&m, &tag), Err(AuthError::BadMac));
        }
        for bit in 0..TAG_LEN * 8 {
            let mut t = tag;
            t[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(b.recv.verify(&msg, &t), Err(AuthError::BadMac));
        }
        assert_eq!(b.recv.verify(&msg, &tag[..16]), Err(AuthError::BadMac));
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_nonce().unwrap(), random_nonce().unwrap());
    }
}
