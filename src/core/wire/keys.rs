//! The network key members share, and the ids: a network's public id, and
//! the sender id the reassembler keys frames by.
//!
//! Invariants this file keeps:
//! - **Secrets stay out of output.** [`NetworkKey`]'s `Debug` prints a
//!   derived id, never key bytes. `proto::keys` derives the version 2 keys
//!   and network id from the key (`docs/protocol.md`, "Keys and ids").
//! - Parsing a key is exact: 64 hex characters, or a [`KeyError`] that says
//!   what is wrong.
//! - The only system call here is to the OS random source, in
//!   [`NetworkKey::generate`]. Without one no key can be made safely, so its
//!   failure is a panic.

use std::{fmt, str::FromStr};

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

/// The 32-byte secret shared by every member of one network.
///
/// Its `Debug` shows only a derived network id, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    /// A new random key from the OS random source.
    pub fn generate() -> NetworkKey {
        let mut bytes = [0u8; 32];
        // Failure means the OS has no random source at all; nothing sensible
        // can continue without one.
        getrandom::fill(&mut bytes).expect("the OS random source (getrandom) failed");
        NetworkKey(bytes)
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
}

impl FromStr for NetworkKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkKey::parse(s)
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(secret hidden)")
    }
}

/// The public 8-byte id of a network (derived by
/// [`RelayKey::network_id`](crate::core::proto::RelayKey::network_id)); in
/// every UplinkInit, so the relay can pick the network's keys.
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

/// A 16-byte sender id: what the [`Reassembler`](super::Reassembler) keeps
/// the frames of different senders apart by (a member's id, padded).
///
/// Displays as its first 4 bytes in hex; `Debug` shows all 16.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert_eq!(shown, "NetworkKey(secret hidden)");
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
    }
}
