//! [`Fragment`]: the checked view of a fragment's fields and chunk, the
//! plaintext of a Data datagram (`docs/protocol.md`, "Routed datagrams";
//! made by `proto::codec::cut_frame`).
//!
//! Invariants this file keeps:
//! - A [`Fragment`] always has `count >= 1` and `index < count`:
//!   [`Fragment::parse`] is the only way to make one.
//! - Bad bytes are an error ([`WireError::Malformed`]), never a panic.

use super::{WireError, FRAG_HEADER_LEN, MACS_LEN};
use crate::core::mac::MacAddr;

/// One fragment of an Ethernet frame, as carried in a Data datagram.
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
    /// Parses a fragment plaintext.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::DropReason,
        wire::testkit::{frag_payload, DST, SRC},
    };

    #[test]
    fn fragment_fields_parse() {
        let payload = frag_payload();
        let f = Fragment::parse(&payload).unwrap();
        assert_eq!((f.frame_id(), f.index(), f.count()), (42, 1, 3));
        assert_eq!((f.dst(), f.src()), (MacAddr(DST), MacAddr(SRC)));
        assert_eq!(f.chunk(), b"chunk of a frame");
        assert_eq!(f.as_whole_frame(), None);
        let mut whole = payload.clone();
        (whole[4], whole[5]) = (0, 1);
        let f = Fragment::parse(&whole).unwrap();
        assert_eq!(f.as_whole_frame(), Some(&whole[6..]));
    }

    #[test]
    fn malformed_fragments_are_refused() {
        let mut bad_index = frag_payload();
        bad_index[4] = 3;
        let cases: [&[u8]; 4] = [
            &[],
            &[0; FRAG_HEADER_LEN - 1],
            &[0; FRAG_HEADER_LEN], // count 0
            &bad_index,
        ];
        for payload in cases {
            let err = Fragment::parse(payload).unwrap_err();
            assert!(
                matches!(err, WireError::Malformed(_)),
                "{payload:?}: {err:?}"
            );
            assert_eq!(err.drop_reason(), DropReason::Malformed);
        }
    }
}
