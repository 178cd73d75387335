//! Who holds what in protocol version 2 (docs/protocol.md, "Keys").
//!
//! From the network key `N` (`lanbridge genkey`, held by members only):
//! - the **member PSK** `P = derive_key("lanbridge v2 member psk", N)`, the
//!   Noise PSK of every member ↔ member handshake;
//! - the **relay key** `R = derive_key("lanbridge v2 relay key", N)`
//!   (`lanbridge relay-key`), held by members and relays: the Noise PSK of
//!   member ↔ relay handshakes, and the root of the network id, the mac1 and
//!   cookie keys and the relay's static key.
//!
//! `R` is one way from `N`, and `P` is not computable from `R`: a relay, or a
//! thief of its key, admits members and forwards, but can't finish a member
//! handshake, so it can't read, forge or replay frames, or join.
//!
//! Invariants: one `derive_key` context per purpose (changing one changes the
//! wire format); `Debug` never prints secret bytes.

use std::fmt;

use crate::core::{
    noise::{StaticKeys, KEY_LEN},
    wire::{KeyError, NetworkId, NetworkKey},
};

const MEMBER_PSK_CONTEXT: &str = "lanbridge v2 member psk";
const RELAY_KEY_CONTEXT: &str = "lanbridge v2 relay key";
const NETWORK_ID_CONTEXT: &str = "lanbridge v2 network id";
const UPLINK_MAC1_CONTEXT: &str = "lanbridge v2 uplink mac1";
const PEER_MAC1_CONTEXT: &str = "lanbridge v2 peer mac1";
const COOKIE_CONTEXT: &str = "lanbridge v2 cookie";
const RELAY_STATIC_CONTEXT: &str = "lanbridge v2 relay static";

/// The prefix that tells a relay key file from a network key file.
pub const RELAY_KEY_PREFIX: &str = "relay-key:";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex characters to 32 bytes.
fn parse_hex32(text: &str) -> Result<[u8; 32], KeyError> {
    NetworkKey::parse(text).map(|k| k.to_bytes())
}

/// The member PSK `P`: only members hold it.
#[derive(Clone)]
pub struct MemberPsk(pub(crate) [u8; KEY_LEN]);

impl MemberPsk {
    /// `P` of the network whose key is `key`.
    pub fn new(key: &NetworkKey) -> MemberPsk {
        MemberPsk(blake3::derive_key(MEMBER_PSK_CONTEXT, &key.to_bytes()))
    }

    /// The key of the mac1 field of member handshakes.
    pub fn mac1_key(&self) -> [u8; 32] {
        blake3::derive_key(PEER_MAC1_CONTEXT, &self.0)
    }
}

impl fmt::Debug for MemberPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberPsk(secret hidden)")
    }
}

/// The relay key `R`: what a relay needs, and all it gets.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayKey([u8; KEY_LEN]);

impl RelayKey {
    /// `R` of the network whose key is `key` (one way).
    pub fn derive(key: &NetworkKey) -> RelayKey {
        RelayKey(blake3::derive_key(RELAY_KEY_CONTEXT, &key.to_bytes()))
    }

    /// A relay key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> RelayKey {
        RelayKey(bytes)
    }

    /// The Noise PSK of member ↔ relay handshakes.
    pub fn psk(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The form `lanbridge relay-key` prints: `relay-key:` and 64 hex
    /// characters.
    pub fn to_text(&self) -> String {
        format!("{RELAY_KEY_PREFIX}{}", hex(&self.0))
    }

    /// The public id of the network: in every UplinkInit, so that a relay
    /// serving several networks picks the key before any cryptography.
    pub fn network_id(&self) -> NetworkId {
        let d = blake3::derive_key(NETWORK_ID_CONTEXT, &self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        NetworkId(id)
    }

    /// The key of the mac1 field of UplinkInit.
    pub fn mac1_key(&self) -> [u8; 32] {
        blake3::derive_key(UPLINK_MAC1_CONTEXT, &self.0)
    }

    /// The key that seals cookies in CookieReply.
    pub fn cookie_key(&self) -> [u8; 32] {
        blake3::derive_key(COOKIE_CONTEXT, &self.0)
    }

    /// The relay's static key pair, derived from `R` (docs/protocol.md,
    /// "Threat model"): every holder of `R` can compute it.
    pub fn relay_static(&self) -> StaticKeys {
        let mut private = blake3::derive_key(RELAY_STATIC_CONTEXT, &self.0);
        // X25519 clamping is done by the DH itself; keep the bytes as drawn.
        let keys = StaticKeys::from_private(private);
        private.fill(0);
        keys
    }
}

impl fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayKey(network {}, secret hidden)", self.network_id())
    }
}

/// What a key file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFile {
    /// A network key (64 hex characters): what members need.
    Network(NetworkKey),
    /// A relay key (`relay-key:` and 64 hex characters): what relays need.
    Relay(RelayKey),
}

impl KeyFile {
    /// Parses either form, ignoring surrounding whitespace.
    pub fn parse(text: &str) -> Result<KeyFile, KeyError> {
        let text = text.trim();
        match text.strip_prefix(RELAY_KEY_PREFIX) {
            Some(rest) => Ok(KeyFile::Relay(RelayKey(parse_hex32(rest)?))),
            None => Ok(KeyFile::Network(NetworkKey::parse(text)?)),
        }
    }

    /// The relay key, derived if this is a network key.
    pub fn relay_key(&self) -> RelayKey {
        match self {
            KeyFile::Network(n) => RelayKey::derive(n),
            KeyFile::Relay(r) => r.clone(),
        }
    }
}

/// A member's public id: the first 8 bytes of BLAKE3 of its static public
/// key. The relay routes by it; it names a member in logs and status.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MemberId(pub [u8; 8]);

impl MemberId {
    /// The id of the member whose static public key is `public`.
    pub fn of(public: &[u8; KEY_LEN]) -> MemberId {
        let h = blake3::hash(public);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.as_bytes()[..8]);
        MemberId(id)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberId({self})")
    }
}

/// A member's identity: its static key pair and the id derived from it.
#[derive(Clone)]
pub struct Identity {
    keys: StaticKeys,
    id: MemberId,
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Identity {
        // The only failure is an OS without a random source.
        let keys = StaticKeys::generate().expect("the OS random source failed");
        Identity::from_keys(keys)
    }

    /// The identity of a stored private key.
    pub fn from_private(private: [u8; KEY_LEN]) -> Identity {
        Identity::from_keys(StaticKeys::from_private(private))
    }

    fn from_keys(keys: StaticKeys) -> Identity {
        let id = MemberId::of(&keys.public);
        Identity { keys, id }
    }

    /// Parses an identity file: the private key as 64 hex characters.
    pub fn parse(text: &str) -> Result<Identity, KeyError> {
        Ok(Identity::from_private(parse_hex32(text)?))
    }

    /// The identity file's content: the private key as 64 hex characters
    /// and a newline.
    pub fn to_text(&self) -> String {
        format!("{}\n", hex(self.keys.private()))
    }

    /// The key pair.
    pub fn keys(&self) -> &StaticKeys {
        &self.keys
    }

    /// The public key, as operators see it (64 hex characters).
    pub fn public_hex(&self) -> String {
        hex(&self.keys.public)
    }

    /// The member id.
    pub fn id(&self) -> MemberId {
        self.id
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, public {})", self.id, self.public_hex())
    }
}

/// Parses a member's public key as an operator writes it (64 hex
/// characters), e.g. for `--refuse-member`.
pub fn parse_public_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    parse_hex32(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay key is one way from the network key, and neither it nor
    /// anything derived from it is the member PSK.
    #[test]
    fn derivations_are_distinct_and_one_way() {
        let n = NetworkKey::from_bytes([5; 32]);
        let r = RelayKey::derive(&n);
        let p = MemberPsk::new(&n);
        assert_ne!(r.psk(), &p.0);
        assert_ne!(r.psk(), &n.to_bytes());
        // A member given R as its network key derives another P.
        let wrong = MemberPsk::new(&NetworkKey::from_bytes(*r.psk()));
        assert_ne!(wrong.0, p.0);
        assert_ne!(r.mac1_key(), p.mac1_key());
    }

    #[test]
    fn key_files_tell_relay_keys_from_network_keys() {
        let n = NetworkKey::from_bytes([6; 32]);
        let r = RelayKey::derive(&n);
        assert_eq!(
            KeyFile::parse(&r.to_text()).unwrap(),
            KeyFile::Relay(r.clone())
        );
        assert_eq!(
            KeyFile::parse(&format!(" {}\n", n.to_hex())).unwrap(),
            KeyFile::Network(n.clone())
        );
        assert_eq!(KeyFile::Network(n).relay_key(), r);
        assert!(KeyFile::parse("relay-key:zz").is_err());
        assert!(KeyFile::parse("").is_err());
    }

    #[test]
    fn identities_round_trip_and_ids_follow_public_keys() {
        let a = Identity::generate();
        let b = Identity::parse(&a.to_text()).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.public_hex(), b.public_hex());
        assert_eq!(a.id(), MemberId::of(&a.keys().public));
        assert_ne!(a.id(), Identity::generate().id());
        assert!(!format!("{a:?}").contains(&a.to_text().trim().to_string()));
        let r = RelayKey::from_bytes([1; 32]);
        assert_eq!(
            r.relay_static().public,
            RelayKey::from_bytes([1; 32]).relay_static().public
        );
    }
}
