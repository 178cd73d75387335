//! The plaintext payloads: a [`Message`] per kind, and [`Fragment`], the
//! checked view of a Frame payload (a RoutedFrame's route and chunk, once
//! opened, are the same bytes).
//!
//! Invariants this file keeps:
//! - **Parsing is exact**: a payload of the wrong length for its kind is
//!   [`WireError::Malformed`], never truncated or padded, so
//!   [`Message::encode`] then [`Message::parse`] gives the message back.
//! - A [`Fragment`] always has `count >= 1` and `index < count`:
//!   [`Fragment::parse`] is the only way to make one.
//! - A RoutedFrame is no [`Message`]: its route is outside the AEAD's
//!   ciphertext, so it is opened apart (see `open.rs`).
//! - Bad bytes are an error, never a panic.

use super::{Kind, WireError, FRAG_HEADER_LEN, MACS_LEN};
use crate::core::mac::MacAddr;

/// One fragment of an Ethernet frame, as carried in a Frame message.
///
/// A validated view: `count >= 1` and `index < count` always hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    frame_id: u32,
    index: u8,
    count: u8,
    /// `dst || src || chunk`, contiguous in the plaintext.
    pub(super) macs_and_chunk: &'a [u8],
}

impl<'a> Fragment<'a> {
    /// Parses a Frame payload.
    pub fn parse(payload: &'a [u8]) -> Result<Fragment<'a>, WireError> {
        if payload.len() < FRAG_HEADER_LEN {
            return Err(WireError::Malformed(
                "frame payload shorter than its header",
            ));
        }
        let frame_id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let (index, count) = (payload[4], payload[5]);
        if count == 0 {
            return Err(WireError::Malformed("fragment count is zero"));
        }
        if index >= count {
            return Err(WireError::Malformed("fragment index not below count"));
        }
        Ok(Fragment {
            frame_id,
            index,
            count,
            macs_and_chunk: &payload[6..],
        })
    }

    /// The sender's id for the frame this fragment belongs to.
    pub fn frame_id(&self) -> u32 {
        self.frame_id
    }

    /// This fragment's position, `0..count`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// How many fragments the frame was cut into, `1..=255`.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// The frame's destination MAC.
    pub fn dst(&self) -> MacAddr {
        MacAddr(self.macs_and_chunk[0..6].try_into().unwrap_or_default())
    }

    /// The frame's source MAC.
    pub fn src(&self) -> MacAddr {
        MacAddr(self.macs_and_chunk[6..12].try_into().unwrap_or_default())
    }

    /// This fragment's part of the frame bytes after the two MACs.
    pub fn chunk(&self) -> &'a [u8] {
        &self.macs_and_chunk[MACS_LEN..]
    }

    /// The whole Ethernet frame, if this is its only fragment.
    pub fn as_whole_frame(&self) -> Option<&'a [u8]> {
        (self.count == 1).then_some(self.macs_and_chunk)
    }
}

/// A decrypted, parsed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Join (or refresh) a network.
    Register {
        /// Capability bits; 0 in version 1.
        caps: u32,
    },
    /// Registration accepted.
    RegisterAck {
        /// Capability bits; 0 in version 1.
        caps: u32,
        /// How often the peer should send keepalives, in seconds.
        keepalive_secs: u16,
    },
    /// Still here.
    Keepalive,
    /// Answer to a keepalive.
    KeepaliveAck,
    /// The relay does not know this sender; it should register.
    NotRegistered,
    /// One fragment of an Ethernet frame.
    Frame(Fragment<'a>),
}

impl Message<'_> {
    /// The header kind for this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Register { .. } => Kind::Register,
            Message::RegisterAck { .. } => Kind::RegisterAck,
            Message::Keepalive => Kind::Keepalive,
            Message::KeepaliveAck => Kind::KeepaliveAck,
            Message::NotRegistered => Kind::NotRegistered,
            Message::Frame(_) => Kind::Frame,
        }
    }

    /// Parses a plaintext payload of the given kind.
    pub fn parse(kind: Kind, payload: &[u8]) -> Result<Message<'_>, WireError> {
        let exact = |n: usize, what: &'static str| {
            if payload.len() == n {
                Ok(())
            } else {
                Err(WireError::Malformed(what))
            }
        };
        let be32 = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        Ok(match kind {
            Kind::Register => {
                exact(4, "register payload is not 4 bytes")?;
                Message::Register {
                    caps: be32(payload),
                }
            }
            Kind::RegisterAck => {
                exact(6, "register ack payload is not 6 bytes")?;
                Message::RegisterAck {
                    caps: be32(payload),
                    keepalive_secs: u16::from_be_bytes([payload[4], payload[5]]),
                }
            }
            Kind::Keepalive => {
                exact(0, "keepalive payload is not empty")?;
                Message::Keepalive
            }
            Kind::KeepaliveAck => {
                exact(0, "keepalive ack payload is not empty")?;
                Message::KeepaliveAck
            }
            Kind::NotRegistered => {
                exact(0, "not-registered payload is not empty")?;
                Message::NotRegistered
            }
            Kind::Frame => Message::Frame(Fragment::parse(payload)?),
            Kind::RoutedFrame => return Err(WireError::Malformed(ROUTED_IS_NOT_ONE_MESSAGE)),
        })
    }

    /// Appends the plaintext payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Message::Register { caps } => out.extend_from_slice(&caps.to_be_bytes()),
            Message::RegisterAck {
                caps,
                keepalive_secs,
            } => {
                out.extend_from_slice(&caps.to_be_bytes());
                out.extend_from_slice(&keepalive_secs.to_be_bytes());
            }
            Message::Keepalive | Message::KeepaliveAck | Message::NotRegistered => {}
            Message::Frame(f) => {
                out.extend_from_slice(&f.frame_id.to_be_bytes());
                out.extend_from_slice(&[f.index, f.count]);
                out.extend_from_slice(f.macs_and_chunk);
            }
        }
    }
}

/// Why a RoutedFrame is no [`Message`]: its route is outside the AEAD's
/// ciphertext ([`check_route`](super::check_route) checks it as a relay
/// does, [`open_routed`](super::open_routed) opens it,
/// [`Sealer::seal_routed_frame`](super::Sealer::seal_routed_frame) makes it).
pub(super) const ROUTED_IS_NOT_ONE_MESSAGE: &str = "a routed frame is opened with open_routed";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::DropReason,
        wire::{open, peek_header, testkit::*, Sealer, OVERHEAD},
    };

    #[test]
    fn fragment_fields_parse() {
        let payload = frag_payload();
        let f = Fragment::parse(&payload).unwrap();
        assert_eq!((f.frame_id(), f.index(), f.count()), (42, 1, 3));
        assert_eq!((f.dst(), f.src()), (MacAddr(DST), MacAddr(SRC)));
        assert_eq!(f.chunk(), b"chunk of a frame");
        assert_eq!(f.as_whole_frame(), None);
    }

    #[test]
    fn every_kind_round_trips() {
        let c = cipher();
        let payload = frag_payload();
        let mut sealer = Sealer::new(SESSION);
        let (mut datagram, mut scratch) = (Vec::new(), Vec::new());
        for (i, msg) in sample_messages(&payload).into_iter().enumerate() {
            sealer.seal(&c, &msg, &mut datagram).unwrap();
            let mut plain = Vec::new();
            msg.encode(&mut plain);
            assert_eq!(datagram.len(), OVERHEAD + plain.len());
            let peeked = peek_header(&datagram).unwrap();
            let (header, opened) = open(&c, &datagram, &mut scratch).unwrap();
            assert_eq!(peeked, header);
            assert_eq!(header.kind, msg.kind());
            assert_eq!(header.network_id, c.network_id());
            assert_eq!(header.session, SESSION);
            assert_eq!(header.counter, i as u64);
            assert_eq!(opened, msg);
        }
        assert_eq!(sealer.counter(), 7);
    }

    #[test]
    fn authentic_payload_of_wrong_length_is_malformed() {
        let c = cipher();
        let mut sealer = Sealer::new(SESSION);
        let (mut datagram, mut scratch) = (Vec::new(), Vec::new());
        let cases: [(Kind, &[u8]); 8] = [
            (Kind::Register, &[0, 0, 0]),
            (Kind::Register, &[0, 0, 0, 0, 0]),
            (Kind::RegisterAck, &[0, 0, 0, 0]),
            (Kind::Keepalive, &[0]),
            (Kind::KeepaliveAck, &[0]),
            (Kind::NotRegistered, &[0]),
            (Kind::Frame, &[0; FRAG_HEADER_LEN - 1]),
            (Kind::Frame, &[0; FRAG_HEADER_LEN]), // count 0
        ];
        for (kind, payload) in cases {
            sealer.seal_raw(&c, kind, payload, &mut datagram).unwrap();
            let err = open(&c, &datagram, &mut scratch).unwrap_err();
            assert!(
                matches!(err, WireError::Malformed(_)),
                "{kind:?} {payload:?}: {err:?}"
            );
            assert_eq!(err.drop_reason(), DropReason::Malformed);
        }
        let mut bad_index = frag_payload();
        bad_index[4] = 3;
        sealer
            .seal_raw(&c, Kind::Frame, &bad_index, &mut datagram)
            .unwrap();
        assert!(matches!(
            open(&c, &datagram, &mut scratch),
            Err(WireError::Malformed(_))
        ));
    }
}
