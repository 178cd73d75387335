//! A fast hasher for the hot tables of the relay and the client.
//!
//! The standard library's SipHash resists hash flooding, at about 20-40 ns
//! per lookup; the relay does several lookups per datagram (network, replay
//! window, peer, two MACs), which was about a tenth of its instructions.
//! The tables here are keyed only by ids that *authenticated* datagrams
//! carry: random 128-bit session ids and network ids. Only a key holder can
//! choose those keys, and a key holder can flood anyway, so these tables use
//! the multiply-rotate hash of Firefox and rustc (FxHash), which has no
//! seed. Tables keyed by what a host can choose without the key, MACs and
//! IPs (the relay's switch table: LAN hosts behind a bridge and VMs behind an
//! edge pick their own MACs; the NAT engine's tables), keep SipHash, whose
//! random key makes colliding keys impossible to compute offline.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// FxHash: rotate, xor a word, multiply.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A multiply only carries upward, so the low bits (which pick the
        // bucket) would depend on few input bits: fold the high bits down
        // and mix once more (half of MurmurHash3's fmix64).
        let h = (self.hash ^ (self.hash >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// A `HashMap` with [`FxHasher`], for keys only authenticated peers choose.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    /// Distinct session-like keys spread over the table's buckets.
    #[test]
    fn spreads_keys_over_low_bits() {
        let build = BuildHasherDefault::<FxHasher>::default();
        let buckets: HashSet<u64> = (0u64..4096)
            .map(|i| {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&i.to_be_bytes());
                build.hash_one(key) & 1023
            })
            .collect();
        assert!(
            buckets.len() > 900,
            "only {} of 1024 buckets used",
            buckets.len()
        );
        let macs: HashSet<u64> = (0u16..4096)
            .map(|i| build.hash_one([2u8, 0, 0, 0, (i >> 8) as u8, i as u8]) & 1023)
            .collect();
        assert!(macs.len() > 900, "only {} of 1024 buckets used", macs.len());
    }
}
