//! Noise handshakes for protocol version 2 (docs/protocol.md, "The
//! handshake").
//!
//! Both sessions of version 2, member ↔ relay and member ↔ member, use
//! `Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s`: one round trip, the initiator
//! knows the responder's static key beforehand, both static keys are
//! authenticated, ephemeral Diffie-Hellman gives forward secrecy, and a
//! pre-shared key (the member PSK, or the relay credential) keeps out
//! everyone without it. WireGuard mixes its PSK in after the second message
//! (`IKpsk2`), so its responder learns of a wrong PSK only from the first
//! data packet; with `psk1` it is mixed in at the end of the first message,
//! whose payload then fails to open: a responder refuses a stranger before
//! it answers or keeps anything (tested below). The handshake itself is the `snow` crate's;
//! this module only fixes the pattern, carries a payload each way, and hands
//! out the two transport keys (`dangerously_get_raw_split`), so that the data
//! path can seal with ring's ChaCha20-Poly1305 and its own counters and
//! replay windows, as version 1 does.
//!
//! # Invariants
//! * Nothing here panics on any input; every failure is a [`NoiseError`].
//! * A handshake that fails leaves nothing behind: the [`Initiator`] is
//!   consumed, the responder keeps no state until it answers.
//! * [`TransportKeys`] overwrite their key bytes when dropped (forward
//!   secrecy holds only if old keys are gone).
//! * Reading the clock, rate limits, cookies and replay checks of initiation
//!   timestamps belong to the callers (sans-IO); the payload carries what
//!   they need.

use std::fmt;

use snow::{params::NoiseParams, Builder, HandshakeState};

/// The Noise pattern of every version 2 handshake.
pub const PATTERN: &str = "Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s";
/// Bytes of an X25519 key, private or public, and of the PSK.
pub const KEY_LEN: usize = 32;
/// Bytes the first message adds to its payload: e (32), s (32 + 16),
/// payload tag (16).
pub const INIT_OVERHEAD: usize = 32 + 32 + 16 + 16;
/// Bytes the second message adds to its payload: e (32), payload tag (16).
pub const RESP_OVERHEAD: usize = 32 + 16;
/// The largest payload a handshake message carries here (handshakes are
/// small; this bounds the buffers).
pub const MAX_PAYLOAD: usize = 1024;

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// A message that does not authenticate: another PSK, another static
    /// key, or altered bytes.
    #[error("handshake message does not authenticate")]
    Forged,
    /// A message too short, or too long, to be one of ours.
    #[error("handshake message of the wrong length")]
    Malformed,
    /// A payload longer than [`MAX_PAYLOAD`].
    #[error("handshake payload too long")]
    TooBig,
    /// `snow` refused its input in a way that is a bug here (a wrong key
    /// length, a state out of order).
    #[error("handshake state error: {0}")]
    Internal(&'static str),
}

fn params() -> NoiseParams {
    // The constant parses; a failure would be a typo caught by every test.
    PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("{PATTERN} is a valid Noise pattern"))
}

/// A static X25519 key pair: a member's or a relay's identity.
#[derive(Clone)]
pub struct StaticKeys {
    private: [u8; KEY_LEN],
    /// The public key, shown to operators and sent to peers.
    pub public: [u8; KEY_LEN],
}

impl StaticKeys {
    /// A new random key pair.
    pub fn generate() -> Result<StaticKeys, NoiseError> {
        let pair = Builder::new(params())
            .generate_keypair()
            .map_err(|_| NoiseError::Internal("cannot generate a key pair"))?;
        let private = pair
            .private
            .try_into()
            .map_err(|_| NoiseError::Internal("private key length"))?;
        let public = pair
            .public
            .try_into()
            .map_err(|_| NoiseError::Internal("public key length"))?;
        Ok(StaticKeys { private, public })
    }

    /// The key pair of a stored private key.
    pub fn from_private(private: [u8; KEY_LEN]) -> StaticKeys {
        let public = x25519_base(&private);
        StaticKeys { private, public }
    }

    /// The private key, to store it.
    pub fn private(&self) -> &[u8; KEY_LEN] {
        &self.private
    }
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeys")
            .field("public", &hex(&self.public))
            .finish_non_exhaustive()
    }
}

impl Drop for StaticKeys {
    fn drop(&mut self) {
        erase(&mut self.private);
    }
}

/// The public key of `private` (X25519 with the base point), computed by
/// running a throwaway `snow` handshake would be roundabout; `snow` exposes
/// no scalar multiplication, so this asks its resolver for the DH directly.
fn x25519_base(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .unwrap_or_else(|| unreachable!("the default resolver has Curve25519"));
    dh.set(private);
    let mut public = [0u8; KEY_LEN];
    public.copy_from_slice(dh.pubkey());
    public
}

/// The two keys a finished handshake yields, and what it proved.
pub struct TransportKeys {
    /// Seals what this side sends.
    pub send: [u8; KEY_LEN],
    /// Opens what this side receives.
    pub recv: [u8; KEY_LEN],
    /// The handshake hash: the same on both sides, unique to this session.
    pub handshake_hash: [u8; 32],
    /// The other side's static public key (authenticated).
    pub remote_static: [u8; KEY_LEN],
}

impl Drop for TransportKeys {
    fn drop(&mut self) {
        erase(&mut self.send);
        erase(&mut self.recv);
    }
}

impl fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportKeys")
            .field("remote_static", &hex(&self.remote_static))
            .finish_non_exhaustive()
    }
}

/// Overwrites key bytes so that they don't linger in freed memory.
fn erase(key: &mut [u8; KEY_LEN]) {
    for b in key.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The initiator of a handshake, between its first message and the answer.
pub struct Initiator {
    state: HandshakeState,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Initiator")
    }
}

/// Splits a finished handshake into transport keys; `initiator` says which
/// half is ours to send with.
fn split(mut state: HandshakeState, initiator: bool) -> Result<TransportKeys, NoiseError> {
    if !state.is_handshake_finished() {
        return Err(NoiseError::Internal("handshake not finished"));
    }
    let remote_static: [u8; KEY_LEN] = state
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(NoiseError::Internal("no remote static key"))?;
    let handshake_hash: [u8; 32] = state
        .get_handshake_hash()
        .try_into()
        .map_err(|_| NoiseError::Internal("handshake hash length"))?;
    let (i_to_r, r_to_i) = state.dangerously_get_raw_split();
    let (send, recv) = if initiator {
        (i_to_r, r_to_i)
    } else {
        (r_to_i, i_to_r)
    };
    Ok(TransportKeys {
        send,
        recv,
        handshake_hash,
        remote_static,
    })
}

impl Initiator {
    /// Starts a handshake with the responder whose static public key is
    /// `remote`, under `psk`; returns the initiator and the first message,
    /// which carries `payload` encrypted.
    pub fn start(
        local: &StaticKeys,
        remote: &[u8; KEY_LEN],
        psk: &[u8; KEY_LEN],
        payload: &[u8],
    ) -> Result<(Initiator, Vec<u8>), NoiseError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(NoiseError::TooBig);
        }
        let mut state = Builder::new(params())
            .local_private_key(&local.private)
            .and_then(|b| b.remote_public_key(remote))
            .and_then(|b| b.psk(1, psk))
            .and_then(|b| b.build_initiator())
            .map_err(|_| NoiseError::Internal("cannot build the initiator"))?;
        let mut msg = vec![0u8; payload.len() + INIT_OVERHEAD];
        let n = state
            .write_message(payload, &mut msg)
            .map_err(|_| NoiseError::Internal("cannot write the first message"))?;
        msg.truncate(n);
        Ok((Initiator { state }, msg))
    }

    /// Reads the responder's answer: the session's keys and the responder's
    /// payload.
    pub fn finish(mut self, msg: &[u8]) -> Result<(TransportKeys, Vec<u8>), NoiseError> {
        if msg.len() < RESP_OVERHEAD || msg.len() > MAX_PAYLOAD + RESP_OVERHEAD {
            return Err(NoiseError::Malformed);
        }
        let mut payload = vec![0u8; msg.len()];
        let n = self
            .state
            .read_message(msg, &mut payload)
            .map_err(|_| NoiseError::Forged)?;
        payload.truncate(n);
        Ok((split(self.state, true)?, payload))
    }
}

/// What a responder got from a first message it accepted.
#[derive(Debug)]
pub struct Responded {
    /// The session's keys (the initiator's static key in `remote_static`).
    pub keys: TransportKeys,
    /// The initiator's payload.
    pub payload: Vec<u8>,
    /// The answer to send back.
    pub reply: Vec<u8>,
}

/// Answers a first message under `psk` with `payload`, in one step: the
/// responder keeps no state of its own (the caller keeps the keys).
/// `reply_payload` sees the initiator's payload and static key first and
/// returns what to answer, or an error to refuse the handshake (a replayed
/// timestamp, a revoked key) without answering.
pub fn respond(
    local: &StaticKeys,
    psk: &[u8; KEY_LEN],
    msg: &[u8],
    reply_payload: impl FnOnce(&[u8], &[u8; KEY_LEN]) -> Result<Vec<u8>, NoiseError>,
) -> Result<Responded, NoiseError> {
    if msg.len() < INIT_OVERHEAD || msg.len() > MAX_PAYLOAD + INIT_OVERHEAD {
        return Err(NoiseError::Malformed);
    }
    let mut state = Builder::new(params())
        .local_private_key(&local.private)
        .and_then(|b| b.psk(1, psk))
        .and_then(|b| b.build_responder())
        .map_err(|_| NoiseError::Internal("cannot build the responder"))?;
    let mut payload = vec![0u8; msg.len()];
    let n = state
        .read_message(msg, &mut payload)
        .map_err(|_| NoiseError::Forged)?;
    payload.truncate(n);
    let remote: [u8; KEY_LEN] = state
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(NoiseError::Internal("no remote static key"))?;
    let answer = reply_payload(&payload, &remote)?;
    if answer.len() > MAX_PAYLOAD {
        return Err(NoiseError::TooBig);
    }
    let mut reply = vec![0u8; answer.len() + RESP_OVERHEAD];
    let n = state
        .write_message(&answer, &mut reply)
        .map_err(|_| NoiseError::Internal("cannot write the answer"))?;
    reply.truncate(n);
    Ok(Responded {
        keys: split(state, false)?,
        payload,
        reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSK: [u8; KEY_LEN] = [7; KEY_LEN];

    fn pair() -> (StaticKeys, StaticKeys) {
        (
            StaticKeys::generate().unwrap(),
            StaticKeys::generate().unwrap(),
        )
    }

    /// A full handshake gives each side the other's send key as its receive
    /// key, the same hash, the other's static key, and both payloads, which
    /// never appear in clear.
    #[test]
    fn a_handshake_gives_both_sides_matching_keys() {
        let (a, b) = pair();
        let (init, msg1) = Initiator::start(&a, &b.public, &PSK, b"hello relay").unwrap();
        assert!(!msg1.windows(11).any(|w| w == b"hello relay"));
        let r = respond(&b, &PSK, &msg1, |p, s| {
            assert_eq!((p, s), (&b"hello relay"[..], &a.public));
            Ok(b"welcome".to_vec())
        })
        .unwrap();
        assert!(!r.reply.windows(7).any(|w| w == b"welcome"));
        let (keys, payload) = init.finish(&r.reply).unwrap();
        assert_eq!(payload, b"welcome");
        assert_eq!(keys.send, r.keys.recv);
        assert_eq!(keys.recv, r.keys.send);
        assert_ne!(keys.send, keys.recv);
        assert_eq!(keys.handshake_hash, r.keys.handshake_hash);
        assert_eq!(keys.remote_static, b.public);
        assert_eq!(r.keys.remote_static, a.public);
        assert_eq!(msg1.len(), 11 + INIT_OVERHEAD);
        assert_eq!(r.reply.len(), 7 + RESP_OVERHEAD);
    }

    /// Two handshakes between the same keys give different session keys
    /// (ephemeral DH: a later leak of one session's keys says nothing of
    /// another).
    #[test]
    fn every_handshake_has_its_own_keys() {
        let (a, b) = pair();
        let mut sends = Vec::new();
        for _ in 0..2 {
            let (init, msg1) = Initiator::start(&a, &b.public, &PSK, b"").unwrap();
            let r = respond(&b, &PSK, &msg1, |_, _| Ok(Vec::new())).unwrap();
            let (keys, _) = init.finish(&r.reply).unwrap();
            sends.push(keys.send);
        }
        assert_ne!(sends[0], sends[1]);
    }

    /// Without the PSK (a relay credential thief posing as a member, or a
    /// member given the wrong key), with another static key, or with any
    /// byte changed, nothing is accepted.
    #[test]
    fn the_wrong_psk_key_or_a_changed_byte_is_refused() {
        let (a, b) = pair();
        let (_, msg1) = Initiator::start(&a, &b.public, &[8; KEY_LEN], b"x").unwrap();
        let refused = respond(&b, &PSK, &msg1, |_, _| Ok(Vec::new()));
        assert_eq!(refused.unwrap_err(), NoiseError::Forged);
        let stranger = StaticKeys::generate().unwrap();
        let (_, msg1) = Initiator::start(&a, &stranger.public, &PSK, b"x").unwrap();
        let refused = respond(&b, &PSK, &msg1, |_, _| Ok(Vec::new()));
        assert_eq!(refused.unwrap_err(), NoiseError::Forged);
        let (_, msg1) = Initiator::start(&a, &b.public, &PSK, b"x").unwrap();
        for at in 0..msg1.len() {
            let mut bad = msg1.clone();
            bad[at] ^= 0x40;
            assert!(
                respond(&b, &PSK, &bad, |_, _| Ok(Vec::new())).is_err(),
                "byte {at}"
            );
        }
        let (init, msg1) = Initiator::start(&a, &b.public, &PSK, b"x").unwrap();
        let r = respond(&b, &PSK, &msg1, |_, _| Ok(Vec::new())).unwrap();
        let mut bad = r.reply.clone();
        bad[40] ^= 1;
        assert_eq!(init.finish(&bad).unwrap_err(), NoiseError::Forged);
        for len in 0..msg1.len() {
            assert!(respond(&b, &PSK, &msg1[..len], |_, _| Ok(Vec::new())).is_err());
        }
    }

    /// A recorded first message replayed later makes the responder answer
    /// (the caller's timestamp check is what refuses it), but nobody can use
    /// that session: its keys need the initiator's ephemeral key, and they
    /// differ from the original session's.
    #[test]
    fn a_replayed_first_message_gives_nobody_a_session() {
        let (a, b) = pair();
        let (init, msg1) = Initiator::start(&a, &b.public, &PSK, b"t=1").unwrap();
        let first = respond(&b, &PSK, &msg1, |_, _| Ok(Vec::new())).unwrap();
        let (keys, _) = init.finish(&first.reply).unwrap();
        let replayed = respond(&b, &PSK, &msg1, |_, _| Ok(Vec::new())).unwrap();
        assert_ne!(replayed.keys.send, first.keys.send);
        assert_ne!(replayed.keys.recv, keys.send);
        // The caller refuses by timestamp: no answer, no keys.
        let refused = respond(&b, &PSK, &msg1, |p, _| {
            if p == b"t=1" {
                Err(NoiseError::Forged)
            } else {
                Ok(Vec::new())
            }
        });
        assert_eq!(refused.unwrap_err(), NoiseError::Forged);
    }

    #[test]
    fn a_stored_private_key_gives_the_same_public_key() {
        let a = StaticKeys::generate().unwrap();
        let again = StaticKeys::from_private(*a.private());
        assert_eq!(again.public, a.public);
        assert!(!format!("{a:?}").contains(&hex(a.private())));
        let too_big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            Initiator::start(&a, &again.public, &PSK, &too_big).unwrap_err(),
            NoiseError::TooBig
        );
    }
}
