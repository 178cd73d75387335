//! Protocol version 2 (docs/protocol.md): keys, datagram layouts, sessions.
//!
//! - `keys.rs`: who holds what ([`RelayKey`], [`MemberPsk`], [`Identity`],
//!   [`MemberId`]);

pub mod codec;
mod keys;
pub mod session;

pub use keys::{
    parse_public_key, Identity, KeyFile, MemberId, MemberPsk, RelayKey, RELAY_KEY_PREFIX,
};
