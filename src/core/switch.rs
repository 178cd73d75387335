//! A learning switch table: each member keeps one, its ports being the
//! other members.
//!
//! Invariants:
//! - a MAC belongs to at most one port; seeing it from another port moves
//!   it, or, in a sticky table ([`SwitchConfig::sticky`]), is refused until
//!   the MAC ages out;
//! - a port owns at most [`SwitchConfig::max_macs_per_port`] MACs, and the
//!   table at most [`SwitchConfig::max_macs`]; beyond that the frame is
//!   dropped ([`DropReason::MacCap`]) rather than learned, so a peer that
//!   floods random source MACs costs a bounded amount of memory;
//! - entries older than [`SwitchConfig::mac_max_age`] are forgotten, so a
//!   host that moved is found again by flooding;
//! - nothing is ever sent back to the port it came from.
//!
//! The port type is generic: members use member ids.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

use crate::core::{drop::DropReason, fasthash::FastMap, mac::MacAddr};

/// Limits of one switch table.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    /// MACs one port (peer) may own. A bridge brings a whole LAN's MACs.
    pub max_macs_per_port: usize,
    /// MACs in the whole table.
    pub max_macs: usize,
    /// An entry not refreshed for this long is forgotten.
    pub mac_max_age: Duration,
    /// A MAC stays with the first port seen using it until it ages out;
    /// another port's frames with it are refused ([`DropReason::MacTaken`]).
    /// Members switch this way: no member can take over another's MACs.
    pub sticky: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            max_macs_per_port: 1024,
            max_macs: 16384,
            mac_max_age: Duration::from_secs(300),
            sticky: false,
        }
    }
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<P> {
    /// To this one port.
    Unicast(P),
    /// To every port but the sender: broadcast, multicast or unknown unicast.
    Flood,
    /// Nowhere.
    Drop(DropReason),
}

#[derive(Clone, Copy, Debug)]
struct Entry<P> {
    port: P,
    last_seen: Instant,
}

/// A learning switch table keyed by MAC.
#[derive(Debug)]
pub struct Switch<P> {
    config: SwitchConfig,
    /// SipHash: MACs come from anyone on a bridged LAN or behind an edge.
    macs: HashMap<MacAddr, Entry<P>>,
    per_port: FastMap<P, usize>,
}

impl<P: Copy + Eq + Hash> Switch<P> {
    /// An empty table.
    pub fn new(config: SwitchConfig) -> Self {
        Switch {
            config,
            macs: HashMap::new(),
            per_port: FastMap::default(),
        }
    }

    /// Learns `src` on `port` and decides where a frame to `dst` goes.
    ///
    /// A frame whose source can't be learned (not unicast, or over a cap) is
    /// dropped.
    // HOT PATH
    pub fn handle(&mut self, now: Instant, port: P, src: MacAddr, dst: MacAddr) -> Route<P> {
        if let Err(reason) = self.learn(now, port, src) {
            return Route::Drop(reason);
        }
        self.route(now, port, dst)
    }

    /// Records that `src` lives behind `port`.
    pub fn learn(&mut self, now: Instant, port: P, src: MacAddr) -> Result<(), DropReason> {
        if !src.is_unicast() {
            return Err(DropReason::BadSourceMac);
        }
        let owned = self.owned(port);
        if let Some(entry) = self.macs.get_mut(&src) {
            let old = entry.port;
            let fresh = now.saturating_duration_since(entry.last_seen) <= self.config.mac_max_age;
            if self.config.sticky && old != port && fresh {
                return Err(DropReason::MacTaken);
            }
            entry.last_seen = now;
            if old != port {
                if owned >= self.config.max_macs_per_port {
                    return Err(DropReason::MacCap);
                }
                entry.port = port;
                self.dec(old);
                *self.per_port.entry(port).or_default() += 1;
            }
            return Ok(());
        }
        if owned >= self.config.max_macs_per_port {
            return Err(DropReason::MacCap);
        }
        if self.macs.len() >= self.config.max_macs {
            self.expire(now);
            if self.macs.len() >= self.config.max_macs {
                return Err(DropReason::MacCap);
            }
        }
        self.macs.insert(
            src,
            Entry {
                port,
                last_seen: now,
            },
        );
        *self.per_port.entry(port).or_default() += 1;
        Ok(())
    }

    /// Where a frame from `from` to `dst` goes, without learning.
    pub fn route(&self, now: Instant, from: P, dst: MacAddr) -> Route<P> {
        if dst.is_multicast() {
            return Route::Flood;
        }
        match self.macs.get(&dst) {
            Some(e) if now.saturating_duration_since(e.last_seen) <= self.config.mac_max_age => {
                if e.port == from {
                    Route::Drop(DropReason::NoDestination)
                } else {
                    Route::Unicast(e.port)
                }
            }
            _ => Route::Flood,
        }
    }

    /// Forgets every MAC of `port` (the peer left or timed out).
    pub fn forget_port(&mut self, port: P) {
        self.macs.retain(|_, e| e.port != port);
        self.per_port.remove(&port);
    }

    /// Forgets entries older than the age limit; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let max_age = self.config.mac_max_age;
        let before = self.macs.len();
        let per_port = &mut self.per_port;
        self.macs.retain(|_, e| {
            let keep = now.saturating_duration_since(e.last_seen) <= max_age;
            if !keep {
                if let Some(n) = per_port.get_mut(&e.port) {
                    *n -= 1;
                }
            }
            keep
        });
        self.per_port.retain(|_, n| *n > 0);
        before - self.macs.len()
    }

    /// MACs owned by `port`.
    pub fn owned(&self, port: P) -> usize {
        self.per_port.get(&port).copied().unwrap_or(0)
    }

    /// Number of learned MACs.
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// Every entry: MAC, port, age.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = (MacAddr, P, Duration)> + '_ {
        self.macs
            .iter()
            .map(move |(m, e)| (*m, e.port, now.saturating_duration_since(e.last_seen)))
    }

    fn dec(&mut self, port: P) {
        if let Some(n) = self.per_port.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.per_port.remove(&port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn switch() -> Switch<u8> {
        Switch::new(SwitchConfig {
            max_macs_per_port: 3,
            max_macs: 5,
            mac_max_age: Duration::from_secs(10),
            sticky: false,
        })
    }

    /// A sticky table keeps a MAC with its first port until it ages out.
    #[test]
    fn a_sticky_table_refuses_a_takeover_until_the_mac_ages_out() {
        let t0 = Instant::now();
        let mut s = Switch::new(SwitchConfig {
            sticky: true,
            mac_max_age: Duration::from_secs(10),
            ..SwitchConfig::default()
        });
        s.learn(t0, 1u8, mac(1)).unwrap();
        assert_eq!(s.learn(t0, 2, mac(1)), Err(DropReason::MacTaken));
        assert_eq!(s.route(t0, 3, mac(1)), Route::Unicast(1));
        let later = t0 + Duration::from_secs(11);
        s.learn(later, 2, mac(1)).unwrap();
        assert_eq!(s.route(later, 3, mac(1)), Route::Unicast(2));
    }

    #[test]
    fn learns_then_forwards_unicast() {
        let t = Instant::now();
        let mut sw = switch();
        assert_eq!(sw.handle(t, 1, mac(1), mac(2)), Route::Flood);
        assert_eq!(sw.handle(t, 2, mac(2), mac(1)), Route::Unicast(1));
        assert_eq!(sw.handle(t, 1, mac(1), mac(2)), Route::Unicast(2));
    }

    #[test]
    fn broadcast_and_multicast_flood() {
        let t = Instant::now();
        let mut sw = switch();
        sw.learn(t, 2, mac(2)).unwrap();
        assert_eq!(sw.handle(t, 1, mac(1), MacAddr::BROADCAST), Route::Flood);
        let mcast = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert_eq!(sw.handle(t, 1, mac(1), mcast), Route::Flood);
    }

    #[test]
    fn never_back_to_sender() {
        let t = Instant::now();
        let mut sw = switch();
        sw.learn(t, 1, mac(1)).unwrap();
        assert_eq!(
            sw.handle(t, 1, mac(3), mac(1)),
            Route::Drop(DropReason::NoDestination)
        );
    }

    #[test]
    fn mac_moves_between_ports() {
        let t = Instant::now();
        let mut sw = switch();
        sw.learn(t, 1, mac(1)).unwrap();
        sw.learn(t, 2, mac(1)).unwrap();
        assert_eq!(sw.route(t, 3, mac(1)), Route::Unicast(2));
        assert_eq!(sw.owned(1), 0);
        assert_eq!(sw.owned(2), 1);
    }

    #[test]
    fn entries_expire() {
        let t = Instant::now();
        let mut sw = switch();
        sw.learn(t, 1, mac(1)).unwrap();
        let later = t + Duration::from_secs(11);
        assert_eq!(sw.route(later, 2, mac(1)), Route::Flood);
        assert_eq!(sw.expire(later), 1);
        assert!(sw.is_empty());
        assert_eq!(sw.owned(1), 0);
    }

    #[test]
    fn caps_per_port_and_total() {
        let t = Instant::now();
        let mut sw = switch();
        for n in 1..=3 {
            sw.learn(t, 1, mac(n)).unwrap();
        }
        assert_eq!(sw.learn(t, 1, mac(4)), Err(DropReason::MacCap));
        // A known MAC is still refreshed at the cap.
        assert_eq!(sw.learn(t, 1, mac(1)), Ok(()));
        sw.learn(t, 2, mac(10)).unwrap();
        sw.learn(t, 2, mac(11)).unwrap();
        assert_eq!(sw.learn(t, 2, mac(12)), Err(DropReason::MacCap));
        assert_eq!(sw.len(), 5);
        // Expired entries make room.
        let later = t + Duration::from_secs(11);
        assert_eq!(sw.learn(later, 3, mac(20)), Ok(()));
        assert_eq!(sw.len(), 1);
    }

    #[test]
    fn forget_port_removes_its_macs() {
        let t = Instant::now();
        let mut sw = switch();
        sw.learn(t, 1, mac(1)).unwrap();
        sw.learn(t, 2, mac(2)).unwrap();
        sw.forget_port(1);
        assert_eq!(sw.route(t, 2, mac(1)), Route::Flood);
        assert_eq!(sw.route(t, 1, mac(2)), Route::Unicast(2));
    }

    #[test]
    fn multicast_source_is_not_learned() {
        let t = Instant::now();
        let mut sw = switch();
        assert_eq!(
            sw.handle(t, 1, MacAddr::BROADCAST, mac(2)),
            Route::Drop(DropReason::BadSourceMac)
        );
        assert!(sw.is_empty());
    }
}
