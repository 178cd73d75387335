//! Pure, deterministic protocol and forwarding logic.
//!
//! Nothing in here performs I/O, spawns tasks or reads a clock: callers pass
//! bytes and `now` in and get decisions out. This keeps every rule testable
//! without root, sockets or real time.

pub mod client;
pub mod drop;
pub mod fasthash;
pub mod frame;
pub mod gro;
pub mod guard;
pub mod host;
pub mod mac;
pub mod memnet;
pub mod nat;
#[cfg(test)]
mod netsim;
pub mod noise;
pub mod offload;
pub mod path;
pub mod probe;
pub mod proto;
pub mod relay;
#[cfg(test)]
pub(crate) mod sim;
pub mod switch;
pub mod window;
pub mod wire;
