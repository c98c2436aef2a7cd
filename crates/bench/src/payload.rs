//! The bytes the bench sends as an envelope's ciphertext.
//!
//! The hub sees only opaque bytes, so the bench writes a short header that
//! lets the recipient tell which message arrived and when it was sent, then
//! fills the rest with random bytes to the chosen size:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | `PBM1` |
//! | 4..8 | worker number, big-endian |
//! | 8..16 | message number within the worker, big-endian |
//! | 16..24 | send start, nanoseconds since the worker's clock origin, big-endian |
//! | 24.. | random filler |

/// The marker of a bench payload.
const MAGIC: &[u8; 4] = b"PBM1";
/// The header's length: the smallest payload.
pub const HEADER_LEN: usize = 24;

/// What a payload says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The worker that sent it.
    pub worker: u32,
    /// Its number within that worker's messages.
    pub index: u64,
    /// When the send started, in nanoseconds since the worker's origin.
    pub sent_ns: u64,
}

/// Writes `header` over the start of `buf` (at least [`HEADER_LEN`] long).
pub fn write(buf: &mut [u8], header: Header) {
    if buf.len() < HEADER_LEN {
        return;
    }
    buf[0..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&header.worker.to_be_bytes());
    buf[8..16].copy_from_slice(&header.index.to_be_bytes());
    buf[16..24].copy_from_slice(&header.sent_ns.to_be_bytes());
}

/// Reads the header of a payload; `None` for bytes that are not one.
pub fn read(bytes: &[u8]) -> Option<Header> {
    let header = bytes.get(..HEADER_LEN)?;
    if &header[0..4] != MAGIC {
        return None;
    }
    let u32_at = |r: std::ops::Range<usize>| header.get(r)?.try_into().ok().map(u32::from_be_bytes);
    let u64_at = |r: std::ops::Range<usize>| header.get(r)?.try_into().ok().map(u64::from_be_bytes);
    Some(Header {
        worker: u32_at(4..8)?,
        index: u64_at(8..16)?,
        sent_ns: u64_at(16..24)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = vec![0xaa; 256];
        let h = Header {
            worker: 3,
            index: 1 << 40,
            sent_ns: 123_456_789,
        };
        write(&mut buf, h);
        assert_eq!(read(&buf), Some(h));
        assert_eq!(buf[HEADER_LEN], 0xaa);
    }

    #[test]
    fn refuses_other_bytes() {
        assert_eq!(read(b""), None);
        assert_eq!(read(b"PBM1 too short"), None);
        assert_eq!(read(&[0u8; 64]), None);
        // Every prefix of a valid payload shorter than the header is refused.
        let mut buf = vec![0; HEADER_LEN];
        write(
            &mut buf,
            Header {
                worker: 1,
                index: 2,
                sent_ns: 3,
            },
        );
        for n in 0..HEADER_LEN {
            assert_eq!(read(&buf[..n]), None);
        }
    }
}
