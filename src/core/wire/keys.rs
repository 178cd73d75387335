//! Keys and the AEAD: the network key members share, the ids derived from
//! it or drawn at random, and XChaCha20-Poly1305 made of an HChaCha20 subkey
//! per sender session and ring's ChaCha20-Poly1305.
//!
//! Invariants this file keeps:
//! - **One derivation per purpose.** The network id, the AEAD key and the
//!   relay key each come from the [`NetworkKey`] by BLAKE3 `derive_key` under
//!   a context string of their own (`docs/protocol.md`, "Keys and ids");
//!   changing a context changes the wire format.
//! - **Secrets stay out of output.** [`NetworkKey`] and [`Cipher`] print the
//!   network id, never key bytes.
//! - **A [`SessionKey`] belongs to one (network, session) pair**, and is only
//!   used for that pair: [`KeyCache`] and the sealer look keys up by both.
//!   The cache is bounded ([`KeyCache::CAP`] entries, replaced round-robin).
//! - The only system call in the codec is here: the OS random source, in
//!   [`NetworkKey::generate`] and [`SessionId::random`]. Without one nothing
//!   can be sealed safely, so its failure is a panic.

use std::{fmt, str::FromStr};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

use super::{header::field, WireError, RELAY_TAG_LEN, TAG_LEN};

const NETWORK_ID_CONTEXT: &str = "lanbridge v1 network id";
const AEAD_KEY_CONTEXT: &str = "lanbridge v1 aead key";
const RELAY_KEY_CONTEXT: &str = "lanbridge v1 relay key";

/// Why a network key string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Wrong length (whitespace around the key is ignored).
    #[error("invalid network key: expected 64 hex characters, found {found}")]
    Length {
        /// Characters found after trimming.
        found: usize,
    },
    /// A character that is not a hex digit.
    #[error("invalid network key: {found:?} at position {position} is not a hex digit")]
    NotHex {
        /// Zero-based character position after trimming.
        position: usize,
        /// The offending character.
        found: char,
    },
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Failure means the OS has no random source at all; nothing sensible can
    // continue without one (keys and nonces depend on it).
    getrandom::fill(&mut bytes).expect("the OS random source (getrandom) failed");
    bytes
}

/// The 32-byte secret shared by every member of one network.
///
/// Its `Debug` shows only the derived network id, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    /// A new random key from the OS random source.
    pub fn generate() -> NetworkKey {
        NetworkKey(random_bytes())
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> NetworkKey {
        NetworkKey(bytes)
    }

    /// The raw bytes (to derive version 2 keys from).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The key as 64 lowercase hex characters, the form users copy around.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex characters (either case), ignoring surrounding whitespace.
    pub fn parse(text: &str) -> Result<NetworkKey, KeyError> {
        let text = text.trim();
        let found = text.chars().count();
        if found != 64 {
            return Err(KeyError::Length { found });
        }
        let mut key = [0u8; 32];
        for (position, c) in text.chars().enumerate() {
            let digit = c
                .to_digit(16)
                .ok_or(KeyError::NotHex { position, found: c })?;
            key[position / 2] |= (digit as u8) << if position % 2 == 0 { 4 } else { 0 };
        }
        Ok(NetworkKey(key))
    }

    /// The public id of the network this key defines.
    pub fn network_id(&self) -> NetworkId {
        let derived = blake3::derive_key(NETWORK_ID_CONTEXT, &self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&derived[..8]);
        NetworkId(id)
    }
}

impl FromStr for NetworkKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkKey::parse(s)
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NetworkKey(network {}, secret hidden)",
            self.network_id()
        )
    }
}

/// The derived keys, for tests that check our construction against the
/// reference crates.
#[cfg(test)]
impl NetworkKey {
    pub(super) fn aead_key(&self) -> [u8; 32] {
        blake3::derive_key(AEAD_KEY_CONTEXT, &self.0)
    }

    pub(super) fn relay_key(&self) -> [u8; 32] {
        blake3::derive_key(RELAY_KEY_CONTEXT, &self.0)
    }
}

/// The public 8-byte id of a network, derived from its key; in every header so
/// the relay can pick the key before decrypting.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(pub [u8; 8]);

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({self})")
    }
}

/// A sender's random 128-bit id, new at every process start; the first 16
/// bytes of every nonce it uses.
///
/// Displays as its first 4 bytes in hex; `Debug` shows all 16.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A new random session id from the OS random source.
    pub fn random() -> SessionId {
        SessionId(random_bytes())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0[..4])
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// The AEAD for one network: XChaCha20-Poly1305 keyed with a key derived from
/// the [`NetworkKey`], plus the network's id.
///
/// XChaCha20-Poly1305 is ChaCha20-Poly1305 (RFC 8439) under the subkey
/// `HChaCha20(key, nonce[0..16])` with the nonce `0^4 || nonce[16..24]`
/// (draft-irtf-cfrg-xchacha). Our nonce is `session || counter`, so the
/// subkey is one per sender session ([`SessionKey`]) and the inner nonce is
/// the counter. The ChaCha20-Poly1305 itself is ring's assembly (AVX2 where
/// the CPU has it), about four times faster per datagram than the pure-Rust
/// crate; `tests::matches_reference_xchacha` checks the two agree.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
    /// Keys the relay tags of RoutedFrame datagrams.
    relay_key: [u8; 32],
    network_id: NetworkId,
}

impl Cipher {
    /// Derives the AEAD key and network id from `key`.
    pub fn new(key: &NetworkKey) -> Cipher {
        Cipher {
            key: blake3::derive_key(AEAD_KEY_CONTEXT, &key.0),
            relay_key: blake3::derive_key(RELAY_KEY_CONTEXT, &key.0),
            network_id: key.network_id(),
        }
    }

    /// The id of the network whose key this is.
    pub fn network_id(&self) -> NetworkId {
        self.network_id
    }

    /// The relay tag of a RoutedFrame datagram of `len` bytes: keyed BLAKE3
    /// of its header and route (the first [`HEADER_LEN`](super::HEADER_LEN)
    /// plus [`ROUTE_LEN`](super::ROUTE_LEN) bytes) and its length (4 bytes,
    /// big-endian), truncated. The length is in so that nobody on the path
    /// can make the relay forward a padded copy, bigger than what the sender
    /// sent, to every peer.
    pub(super) fn relay_tag(&self, header_and_route: &[u8], len: usize) -> [u8; RELAY_TAG_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.relay_key);
        hasher.update(header_and_route);
        hasher.update(&(len as u32).to_be_bytes());
        let hash = hasher.finalize();
        let mut tag = [0u8; RELAY_TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..RELAY_TAG_LEN]);
        tag
    }

    /// The ChaCha20-Poly1305 key of one sender session.
    pub fn session_key(&self, session: SessionId) -> SessionKey {
        let subkey = chacha20::hchacha::<chacha20::cipher::consts::U10>(
            (&self.key).into(),
            (&session.0).into(),
        );
        let key = UnboundKey::new(&CHACHA20_POLY1305, &subkey)
            // A 32-byte key is always valid for ChaCha20-Poly1305.
            .expect("ChaCha20-Poly1305 takes 32-byte keys");
        SessionKey {
            network_id: self.network_id,
            session,
            aead: LessSafeKey::new(key),
        }
    }
}

/// The AEAD key of one sender session in one network (see [`Cipher`]).
pub struct SessionKey {
    network_id: NetworkId,
    session: SessionId,
    aead: LessSafeKey,
}

impl SessionKey {
    /// True if this is the key of `session` in `cipher`'s network.
    pub(super) fn is_for(&self, cipher: &Cipher, session: SessionId) -> bool {
        self.session == session && self.network_id == cipher.network_id
    }

    fn nonce(counter: &[u8]) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(counter);
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypts `payload` in place under `counter` with `aad` as associated
    /// data; returns the tag.
    pub(super) fn seal_with(
        &self,
        counter: &[u8],
        aad: &[u8],
        payload: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self
            .aead
            .seal_in_place_separate_tag(Self::nonce(counter), Aad::from(aad), payload)
            // Only fails for payloads beyond 2^38 bytes; datagrams are < 64 KiB.
            .expect("datagram payloads are far below the AEAD's limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    pub(super) fn open_with(
        &self,
        counter: &[u8],
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), WireError> {
        let tag = Tag::try_from(tag).map_err(|_| WireError::Truncated)?;
        self.aead
            .open_in_place_separate_tag(Self::nonce(counter), Aad::from(aad), tag, payload, 0..)
            .map(|_| ())
            .map_err(|_| WireError::Forged)
    }

    /// Encrypts `payload` in place with the header as associated data;
    /// returns the tag.
    pub(super) fn seal(&self, header: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        self.seal_with(&header[field::COUNTER], header, payload)
    }

    /// Authenticates and decrypts `payload` in place.
    pub(super) fn open(
        &self,
        header: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), WireError> {
        self.open_with(&header[field::COUNTER], header, payload, tag)
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("network_id", &self.network_id)
            .finish_non_exhaustive()
    }
}

/// The session keys of the last few senders, so a burst of datagrams from
/// one sender derives its key once. Bounded: [`KeyCache::CAP`] entries,
/// replaced round-robin.
#[derive(Default)]
pub struct KeyCache {
    keys: Vec<SessionKey>,
    next: usize,
}

impl KeyCache {
    /// Entries kept.
    pub const CAP: usize = 16;

    /// The key of `session` in `cipher`'s network.
    pub fn get(&mut self, cipher: &Cipher, session: SessionId) -> &SessionKey {
        let found = self.keys.iter().position(|k| k.is_for(cipher, session));
        let at = match found {
            Some(at) => at,
            None if self.keys.len() < Self::CAP => {
                self.keys.push(cipher.session_key(session));
                self.keys.len() - 1
            }
            None => {
                let at = self.next;
                self.next = (self.next + 1) % Self::CAP;
                self.keys[at] = cipher.session_key(session);
                at
            }
        };
        &self.keys[at]
    }
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCache({} keys)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::DropReason,
        wire::{open, testkit::*, Kind, Message, Sealer, HEADER_LEN},
    };

    /// Our XChaCha20-Poly1305 (HChaCha20 subkey + ring) is the reference
    /// crate's, byte for byte, both ways.
    #[test]
    fn matches_reference_xchacha() {
        use chacha20poly1305::{
            aead::{AeadInPlace, KeyInit},
            XChaCha20Poly1305, XNonce,
        };
        let key = NetworkKey::from_bytes([0x42; 32]);
        let cipher = Cipher::new(&key);
        let reference =
            XChaCha20Poly1305::new((&blake3::derive_key(AEAD_KEY_CONTEXT, &key.0)).into());
        let mut sealer = Sealer::new(SessionId([0x17; 16]));
        for len in [0usize, 1, 63, 64, 65, 1330, 9000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = Vec::new();
            sealer
                .seal_raw(&cipher, Kind::Frame, &plain, &mut ours)
                .unwrap();
            let (header, rest) = ours.split_at(HEADER_LEN);
            let nonce = XNonce::from_slice(&header[12..36]);
            let mut theirs = plain.clone();
            let tag = reference
                .encrypt_in_place_detached(nonce, header, &mut theirs)
                .unwrap();
            theirs.extend_from_slice(&tag);
            assert_eq!(rest, &theirs[..], "payload length {len}");
            let mut scratch = Vec::new();
            let mut forged = ours.clone();
            *forged.last_mut().unwrap() ^= 1;
            assert_eq!(
                open(&cipher, &forged, &mut scratch).unwrap_err(),
                WireError::Forged
            );
        }
    }

    #[test]
    fn wrong_key_with_same_network_id_is_forged() {
        let mut sealer = Sealer::new(SESSION);
        let mut datagram = Vec::new();
        sealer
            .seal(&cipher(), &Message::Keepalive, &mut datagram)
            .unwrap();
        let mut other = Cipher::new(&NetworkKey::from_bytes([8; 32]));
        other.network_id = cipher().network_id();
        let err = open(&other, &datagram, &mut Vec::new()).unwrap_err();
        assert_eq!(err, WireError::Forged);
        assert_eq!(err.drop_reason(), DropReason::Forged);
    }

    #[test]
    fn key_parsing() {
        let key = NetworkKey::from_bytes(std::array::from_fn(|i| i as u8 * 8));
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(NetworkKey::parse(&hex), Ok(key.clone()));
        assert_eq!(
            format!("  {}\n", hex.to_uppercase()).parse(),
            Ok(key.clone())
        );
        let err = NetworkKey::parse("0123456789ab").unwrap_err();
        assert_eq!(err, KeyError::Length { found: 12 });
        assert_eq!(
            err.to_string(),
            "invalid network key: expected 64 hex characters, found 12"
        );
        assert_eq!(NetworkKey::parse(""), Err(KeyError::Length { found: 0 }));
        let mut bad = hex.clone();
        bad.replace_range(10..11, "g");
        let err = NetworkKey::parse(&bad).unwrap_err();
        assert_eq!(
            err,
            KeyError::NotHex {
                position: 10,
                found: 'g'
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid network key: 'g' at position 10 is not a hex digit"
        );
        let mut bad = hex.clone();
        bad.replace_range(63..64, "é");
        assert_eq!(
            NetworkKey::parse(&bad),
            Err(KeyError::NotHex {
                position: 63,
                found: 'é'
            })
        );
        let generated = NetworkKey::generate();
        assert_ne!(generated, NetworkKey::generate());
        assert_eq!(NetworkKey::parse(&generated.to_hex()), Ok(generated));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let key = NetworkKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?} {:?}", Cipher::new(&key));
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(&key.network_id().to_string()), "{shown}");
    }

    #[test]
    fn ids_display_as_hex() {
        assert_eq!(
            NetworkId([0, 1, 2, 3, 0xa, 0xb, 0xc, 0xff]).to_string(),
            "000102030a0b0cff"
        );
        let s = SessionId(std::array::from_fn(|i| i as u8));
        assert_eq!(s.to_string(), "00010203");
        assert_eq!(
            format!("{s:?}"),
            "SessionId(000102030405060708090a0b0c0d0e0f)"
        );
        assert_ne!(SessionId::random(), SessionId::random());
    }
}
