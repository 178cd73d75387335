//! Test fixtures shared by the wire tests: one key, session and pair of
//! MACs, frames and messages built from them, and a seeded PRNG.

use super::{Cipher, Fragment, Message, NetworkKey, Sealer, SessionId, MACS_LEN};

const KEY: [u8; 32] = [7; 32];
pub(super) const SESSION: SessionId = SessionId([0x5e; 16]);
pub(super) const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub(super) const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub(super) fn cipher() -> Cipher {
    Cipher::new(&NetworkKey::from_bytes(KEY))
}

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

pub(super) fn sample_messages(frag_payload: &[u8]) -> Vec<Message<'_>> {
    vec![
        Message::Register { caps: 0 },
        Message::Register { caps: 0xdead_beef },
        Message::RegisterAck {
            caps: 1,
            keepalive_secs: 25,
        },
        Message::Keepalive,
        Message::KeepaliveAck,
        Message::NotRegistered,
        Message::Frame(Fragment::parse(frag_payload).unwrap()),
    ]
}

pub(super) fn frag_payload() -> Vec<u8> {
    let mut p = vec![0, 0, 0, 42, 1, 3];
    p.extend_from_slice(&DST);
    p.extend_from_slice(&SRC);
    p.extend_from_slice(b"chunk of a frame");
    p
}

/// Seals `frame` and returns its datagrams in order.
pub(super) fn fragments(sealer: &mut Sealer, frame: &[u8], max_datagram: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = sealer.seal_frame(&cipher(), frame, max_datagram, &mut |d| {
        out.push(d.to_vec())
    });
    assert_eq!(n, Ok(out.len()));
    out
}
