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

/// A handshake builder: `snow`'s default primitives (fuzz builds memoise
/// X25519, see [`fuzz_memo`]).
fn builder() -> Builder<'static> {
    #[cfg(fuzzing)]
    {
        Builder::with_resolver(params(), Box::new(fuzz_memo::Resolver))
    }
    #[cfg(not(fuzzing))]
    {
        Builder::new(params())
    }
}

/// Fuzz builds only (`cargo fuzz` sets `--cfg fuzzing`): X25519 memoised.
/// The fuzz targets run the same deterministic handshakes for every input
/// (their random source restarts), and the instrumented scalar
/// multiplications would otherwise be nearly all of their time. The
/// results are X25519's; only the time differs.
#[cfg(fuzzing)]
mod fuzz_memo {
    use std::{cell::RefCell, collections::HashMap};

    use snow::{
        params::{CipherChoice, DHChoice, HashChoice},
        resolvers::{CryptoResolver, DefaultResolver},
        types::{Cipher, Dh, Hash, Random},
        Error,
    };

    use super::KEY_LEN;

    /// The X25519 base point.
    pub(super) const BASE: [u8; KEY_LEN] = {
        let mut b = [0u8; KEY_LEN];
        b[0] = 9;
        b
    };
    /// Results kept (some 100 MB at most); all are forgotten when it is
    /// reached. Fuzz-chosen keys add new pairs with nearly every input, so
    /// a small memo is emptied every few seconds and the targets' own
    /// handshakes are computed again: at 1 << 14 the relay target ran 170
    /// inputs a second, at 1 << 20 371.
    const MAX_ENTRIES: usize = 1 << 19;

    type Key = ([u8; KEY_LEN], [u8; KEY_LEN]);

    thread_local! {
        static MEMO: RefCell<HashMap<Key, [u8; KEY_LEN]>> = RefCell::new(HashMap::new());
    }

    /// X25519 of `private` and `public`, computed once per pair.
    pub(super) fn x25519(private: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        if let Some(r) = MEMO.with(|m| m.borrow().get(&(*private, *public)).copied()) {
            return r;
        }
        let out = uninstrumented(private, public).unwrap_or_else(|| snow_x25519(private, public));
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert((*private, *public), out);
        });
        out
    }

    /// X25519 as `snow` computes it (curve25519-dalek).
    pub(super) fn snow_x25519(private: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .unwrap_or_else(|| unreachable!("the default resolver has Curve25519"));
        dh.set(private);
        let mut out = [0u8; KEY_LEN];
        if *public == BASE {
            out.copy_from_slice(dh.pubkey());
        } else if dh.dh(public, &mut out).is_err() {
            unreachable!("X25519 of 32-byte keys does not fail");
        }
        out
    }

    /// X25519 by `ring`'s C code, which the fuzz build does not instrument
    /// (curve25519-dalek's instrumented arithmetic is ten times slower),
    /// with the private key handed in through ring's fixed-bytes random
    /// source. `None` where ring refuses (an all-zero result): `snow`'s
    /// X25519 then.
    #[allow(deprecated)]
    fn uninstrumented(private: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
        use ring::{agreement, test::rand::FixedSliceRandom};
        let rng = FixedSliceRandom { bytes: private };
        let key = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).ok()?;
        if *public == BASE {
            return key.compute_public_key().ok()?.as_ref().try_into().ok();
        }
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, public);
        agreement::agree_ephemeral(key, &peer, |k| <[u8; KEY_LEN]>::try_from(k).ok()).ok()?
    }

    #[derive(Default)]
    struct MemoDh {
        private: [u8; KEY_LEN],
        public: [u8; KEY_LEN],
    }

    impl Dh for MemoDh {
        fn name(&self) -> &'static str {
            "25519"
        }

        fn pub_len(&self) -> usize {
            KEY_LEN
        }

        fn priv_len(&self) -> usize {
            KEY_LEN
        }

        fn set(&mut self, privkey: &[u8]) {
            let n = privkey.len().min(KEY_LEN);
            self.private = [0; KEY_LEN];
            self.private[..n].copy_from_slice(&privkey[..n]);
            self.public = x25519(&self.private, &BASE);
        }

        fn generate(&mut self, rng: &mut dyn Random) -> Result<(), Error> {
            // As snow's own: 32 bytes from the random source.
            let mut private = [0u8; KEY_LEN];
            rng.try_fill_bytes(&mut private)?;
            self.set(&private);
            Ok(())
        }

        fn pubkey(&self) -> &[u8] {
            &self.public
        }

        fn privkey(&self) -> &[u8] {
            &self.private
        }

        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), Error> {
            let public: [u8; KEY_LEN] = pubkey
                .get(..KEY_LEN)
                .and_then(|p| p.try_into().ok())
                .ok_or(Error::Dh)?;
            let r = x25519(&self.private, &public);
            let n = out.len().min(KEY_LEN);
            out[..n].copy_from_slice(&r[..n]);
            Ok(())
        }
    }

    pub(super) struct Resolver;

    impl CryptoResolver for Resolver {
        fn resolve_rng(&self) -> Option<Box<dyn Random>> {
            DefaultResolver.resolve_rng()
        }

        fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
            match choice {
                DHChoice::Curve25519 => Some(Box::<MemoDh>::default()),
                _ => None,
            }
        }

        fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
            DefaultResolver.resolve_hash(choice)
        }

        fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
            DefaultResolver.resolve_cipher(choice)
        }
    }
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
        let pair = builder()
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
    #[cfg(fuzzing)]
    {
        fuzz_memo::x25519(private, &fuzz_memo::BASE)
    }
    #[cfg(not(fuzzing))]
    {
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .unwrap_or_else(|| unreachable!("the default resolver has Curve25519"));
        dh.set(private);
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(dh.pubkey());
        public
    }
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
        let mut state = builder()
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
    let mut state = builder()
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

    /// Fuzz builds: the memoised X25519 is snow's, keys and results alike.
    #[cfg(fuzzing)]
    #[test]
    fn fuzz_memo_is_snows_x25519() {
        for i in 0..64u8 {
            let a = [i.wrapping_mul(37) ^ 0x55; KEY_LEN];
            let mut b = [i; KEY_LEN];
            b[31] = 0xff;
            for public in [fuzz_memo::BASE, b, [0; KEY_LEN], [0xff; KEY_LEN]] {
                assert_eq!(
                    fuzz_memo::x25519(&a, &public),
                    fuzz_memo::snow_x25519(&a, &public),
                    "{i} {public:02x?}"
                );
            }
        }
    }

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
