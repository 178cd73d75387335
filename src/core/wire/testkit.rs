//! Test fixtures shared by the wire tests: one sender and pair of MACs,
//! frames and fragments built from them, and a seeded PRNG.

use super::{SessionId, MACS_LEN};
use crate::core::proto::codec::cut_frame;

pub(super) const SESSION: SessionId = SessionId([0x5e; 16]);
pub(super) const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub(super) const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Deterministic xorshift64 PRNG for fuzz-style tests.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn fill(&mut self, buf: &mut [u8]) {
        buf.iter_mut().for_each(|b| *b = self.next() as u8);
    }
}

pub(super) fn test_frame(len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&DST);
    frame.extend_from_slice(&SRC);
    frame.extend((0..len - MACS_LEN).map(|i| (i * 7 + i / 251) as u8));
    frame
}

/// A fragment plaintext: frame 42, fragment 1 of 3.
pub(super) fn frag_payload() -> Vec<u8> {
    let mut p = vec![0, 0, 0, 42, 1, 3];
    p.extend_from_slice(&DST);
    p.extend_from_slice(&SRC);
    p.extend_from_slice(b"chunk of a frame");
    p
}

/// Cuts `frame` as a member does (chunks of at most `room` bytes) and
/// returns its fragment plaintexts in order.
pub(super) fn fragments(frame: &[u8], room: usize, frame_id: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = cut_frame(frame, room, frame_id, &mut Vec::new(), &mut |p| {
        out.push(p.to_vec());
        Ok(())
    });
    assert_eq!(n, Ok(out.len()));
    out
}
