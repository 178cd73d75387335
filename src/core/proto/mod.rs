//! Protocol version 2 (docs/protocol.md): keys, datagram layouts, sessions.
//!
//! - `keys.rs`: who holds what ([`RelayKey`], [`MemberPsk`], [`Identity`],
//!   [`MemberId`]);
//! - `codec.rs`: every datagram's layout, the clear header check, control
//!   messages, cutting frames into fragments;
//! - `session.rs`: keypairs after a handshake, counters, replay windows,
//!   timers, timestamps.

pub mod codec;
mod keys;
pub mod session;

pub use keys::{
    parse_public_key, Identity, KeyFile, MemberId, MemberPsk, RelayKey, RELAY_KEY_PREFIX,
};
