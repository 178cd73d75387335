//! Internet checksum arithmetic, in one place (RFC 1071, RFC 1624).
//!
//! * [`sum`] and [`fold`]: the one's-complement sum of 16-bit big-endian words.
//! * [`internet_checksum`]: the complemented sum, as stored in headers.
//! * [`pseudo_header_v4`] / [`pseudo_header_v6`]: the pseudo-header sums that
//!   UDP, TCP and ICMPv6 checksums cover (RFC 768, RFC 8200 section 8.1).
//! * [`update_word`] / [`update`]: incremental update after editing a field
//!   (RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`), which is correct for
//!   every input, unlike the older RFC 1141 form.
//!
//! A transport checksum that is still *partial* (the kernel's
//! `CHECKSUM_PARTIAL`, vnet `NEEDS_CSUM`) holds only the pseudo-header sum;
//! such a field must not be updated at all when the payload changes, because
//! the device or kernel will sum the payload later.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as 16-bit big-endian words; an odd last
/// byte is padded with a zero byte. The result is folded to at most 16 bits,
/// and is 0 only if every byte is 0.
///
/// Reads 8 bytes at a time as two native-endian `u32`s added into two `u64`
/// accumulators (no carry chain, so the compiler vectorises the loop). The
/// one's-complement sum is independent of byte order (RFC 1071 section 2
/// (B)): summing byte-swapped words gives the byte-swapped sum, so on a
/// little-endian machine the folded result is swapped back once at the end.
/// Folding keeps the value modulo `0xffff` and keeps it non-zero, so the
/// result is the same as a word-by-word loop for every input.
// HOT PATH
pub fn sum(data: &[u8]) -> u32 {
    // A block keeps the accumulators of `sum_block` from overflowing.
    const BLOCK: usize = 1 << 20;
    let total = if data.len() <= BLOCK {
        sum_block(data)
    } else {
        data.chunks(BLOCK).fold(0u64, |total, block| {
            // One's-complement addition in 64 bits: the carry wraps around.
            let (s, carry) = total.overflowing_add(sum_block(block));
            s + u64::from(carry)
        })
    };
    let mut acc = (total & 0xffff_ffff) + (total >> 32);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // `acc` fits 16 bits now: the sum of the words as read natively, i.e. the
    // byte-swapped sum on a little-endian machine.
    u32::from(u16::from_be(acc as u16))
}

/// The not yet folded sum of up to 1 MiB of `block`, in native byte order:
/// each addend is below 2^32 and there are at most 2^17 per accumulator, so
/// neither can overflow.
#[inline(always)]
fn sum_block(block: &[u8]) -> u64 {
    let (mut a, mut b) = (0u64, 0u64);
    let mut chunks = block.chunks_exact(8);
    for c in &mut chunks {
        a += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        b += u64::from(u32::from_ne_bytes([c[4], c[5], c[6], c[7]]));
    }
    // The tail starts at an even offset, so its words line up with the
    // big-endian words of `data`; an odd last byte is the high half of a
    // word whose low half is zero.
    let mut tail = chunks.remainder().chunks_exact(2);
    for w in &mut tail {
        a += u64::from(u16::from_ne_bytes([w[0], w[1]]));
    }
    if let [last] = tail.remainder() {
        b += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    a + b
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Adds several partial sums (from [`sum`] or the pseudo-header helpers).
pub fn combine(parts: &[u32]) -> u32 {
    let acc: u64 = parts.iter().map(|&p| u64::from(p)).sum();
    let mut acc = acc;
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// The checksum to store for `data` whose checksum field is zero: the
/// complement of the one's-complement sum (RFC 1071).
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Sum of the IPv4 pseudo-header: source, destination, zero, protocol,
/// transport length (RFC 768).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    combine(&[
        sum(&src.octets()),
        sum(&dst.octets()),
        u32::from(protocol),
        u32::from(len),
    ])
}

/// Sum of the IPv6 pseudo-header: source, destination, upper-layer length,
/// zeros, next header (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    combine(&[
        sum(&src.octets()),
        sum(&dst.octets()),
        len >> 16,
        len & 0xffff,
        u32::from(next_header),
    ])
}

/// True if `data`, checksum field included, plus `pseudo` sums to `0xffff`,
/// i.e. the stored checksum is right.
pub fn verify(pseudo: u32, data: &[u8]) -> bool {
    fold(combine(&[pseudo, sum(data)])) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from
/// `old` to `new`.
pub fn update_word(checksum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// RFC 1624 eqn. 3 over a changed byte range. `old` and `new` must have the
/// same length, and must start at an even offset from the start of the
/// checksummed data (word alignment); an odd length is padded with zero on
/// both sides, which cancels out.
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let acc = u32::from(!checksum) + u32::from(!fold(sum(old))) + sum(new);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain word-by-word sum that [`sum`] must match exactly.
    fn sum_reference(data: &[u8]) -> u32 {
        let mut acc: u64 = 0;
        let mut chunks = data.chunks_exact(2);
        for w in &mut chunks {
            acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u64::from(*last) << 8;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u32
    }

    /// xorshift64: deterministic bytes without a dependency.
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn sum_matches_reference_on_random_lengths_and_offsets() {
        let data = random_bytes(0x9e37_79b9_7f4a_7c15, 4096);
        let mut pick = random_bytes(42, 2 * 4000);
        pick.truncate(pick.len() / 4 * 4);
        for (i, r) in pick.chunks_exact(4).enumerate() {
            let len = usize::from(u16::from_le_bytes([r[0], r[1]])) % 3000;
            let off = usize::from(r[2]) % 16 + usize::from(r[3] % 64);
            let slice = &data[off..off + len];
            assert_eq!(
                sum(slice),
                sum_reference(slice),
                "case {i}: len {len} off {off}"
            );
        }
        // Every short length at every alignment, the tail's cases.
        for len in 0..40 {
            for off in 0..8 {
                let slice = &data[off..off + len];
                assert_eq!(sum(slice), sum_reference(slice), "len {len} off {off}");
            }
        }
    }

    #[test]
    fn sum_matches_reference_on_extremes() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0; 1001]), 0);
        for len in [1, 2, 7, 8, 9, 1500, 65535] {
            let ones = vec![0xffu8; len];
            assert_eq!(sum(&ones), sum_reference(&ones), "0xff * {len}");
        }
        // Past one internal block, with carries out of every lane.
        let big = vec![0xffu8; (1 << 20) * 3 + 5];
        assert_eq!(sum(&big), sum_reference(&big));
        let big = random_bytes(7, (1 << 20) + 4097);
        assert_eq!(sum(&big), sum_reference(&big));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data: Vec<u8> = (0u8..64).map(|b| b.wrapping_mul(37)).collect();
        data[10] = 0;
        data[11] = 0;
        let c = internet_checksum(&data);
        for new in [0x0000u16, 0x8000, 0xffff, 0x1234] {
            let mut edited = data.clone();
            edited[20..22].copy_from_slice(&new.to_be_bytes());
            let old = u16::from_be_bytes([data[20], data[21]]);
            let inc = update_word(c, old, new);
            let full = internet_checksum(&edited);
            // 0x0000 and 0xffff are the same one's-complement value.
            assert!(
                inc == full || (inc ^ full) == 0xffff,
                "{inc:04x} vs {full:04x}"
            );
            let inc6 = update(c, &data[20..26], &{
                let mut v = edited[20..26].to_vec();
                v[2] ^= 0x5a;
                v
            });
            let mut e6 = edited.clone();
            e6[22] ^= 0x5a;
            let full6 = internet_checksum(&e6);
            assert!(inc6 == full6 || (inc6 ^ full6) == 0xffff);
        }
    }
}
