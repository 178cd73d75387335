//! TCP headers (RFC 9293), as far as segmentation and MSS clamping need
//! them: sequence number, flags, data offset, options and checksum.

use super::{checksum, get_u16, set_u16, Error, Result};

/// Byte ranges of the header.
pub mod field {
    use std::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset (high nibble, in 32-bit words).
    pub const DATA_OFF: usize = 12;
    /// Flags (CWR ECE URG ACK PSH RST SYN FIN, high bit first).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: Range<usize> = 14..16;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// Urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
    /// Length of the header without options.
    pub const MIN_HEADER_LEN: usize = 20;
}

/// Bits of the flags byte.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Option kinds (RFC 9293 section 3.2) that the bridge reads.
pub mod option {
    /// End of option list; the rest of the option space is padding.
    pub const EOL: u8 = 0;
    /// No-operation, one byte, used to align later options.
    pub const NOP: u8 = 1;
    /// Maximum segment size: kind, length 4, a big-endian `u16`.
    pub const MSS: u8 = 2;
    /// Length of the MSS option, kind and length bytes included.
    pub const MSS_LEN: usize = 4;
}

/// A view over a TCP segment: header (options included) and payload, to the
/// end of the buffer.
#[derive(Debug, Clone)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps untrusted bytes: data offset at least 5 words, header within
    /// the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < field::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.header_len() < field::MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.header_len() > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SEQ_NUM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The options: the header after its first 20 bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload after the header, to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True if the checksum is right, given the pseudo-header sum for this
    /// segment's length (see [`checksum::pseudo_header_v4`]).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::verify(pseudo, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Mutable options (see [`TcpPacket::options`]).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::MIN_HEADER_LEN..end]
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Recomputes the checksum over the whole buffer plus `pseudo`, the
    /// pseudo-header sum for this segment's length. A computed zero is
    /// stored as `0xffff`, as the kernel does (`CSUM_MANGLED_0`); both mean
    /// the same in one's-complement arithmetic.
    pub fn fill_checksum_with_pseudo(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::combine(&[
            pseudo,
            checksum::sum(self.buffer.as_ref()),
        ]));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    // 10.0.0.1:1234 -> 10.0.0.2:80, seq 0x01020304, ACK|PSH, 4 bytes payload,
    // with a 4-byte MSS option (data offset 6).
    fn segment() -> Vec<u8> {
        let mut v = vec![
            0x04, 0xd2, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 9, 0x60, 0x18, 0xff, 0xff, 0,
            0, 0, 0, 2, 4, 0x05, 0xb4,
        ];
        v.extend_from_slice(b"data");
        v
    }

    #[test]
    fn deconstruct_and_fill() {
        let mut buf = segment();
        let mut p = TcpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (1234, 80));
        assert_eq!(p.seq_number(), 0x0102_0304);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), flags::ACK | flags::PSH);
        assert_eq!(p.options(), [2, 4, 0x05, 0xb4]);
        assert_eq!(p.payload(), b"data");
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            28,
        );
        p.set_seq_number(7);
        p.set_flags(flags::ACK);
        p.options_mut()[3] = 0xa0;
        p.fill_checksum_with_pseudo(pseudo);
        assert!(p.verify_checksum(pseudo));
        assert_eq!(p.seq_number(), 7);
        assert_eq!(p.flags(), flags::ACK);
        assert_eq!(p.options(), [2, 4, 0x05, 0xa0]);
    }

    #[test]
    fn rejects() {
        let buf = segment();
        assert_eq!(
            TcpPacket::new_checked(&buf[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            TcpPacket::new_checked(&buf[..23]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = buf.clone();
        bad[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
