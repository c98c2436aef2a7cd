//! The SPQR v1 message, as carried in a SignalMessage's `pq_ratchet` field.
//!
//! ```text
//! version  1 byte    always 1 (an empty field means the sender runs no SPQR)
//! epoch    varint    the sender's braid epoch, at least 1
//! index    varint    the sender's key index in its chain (fits in u32)
//! type     1 byte    0 none, 1 hdr, 2 ek, 3 ek+ct1-ack, 4 ct1-ack, 5 ct1, 6 ct2
//! chunk    for types 1, 2, 3, 5 and 6:
//!   index  varint    the chunk's index (fits in u16)
//!   data   32 bytes
//! ```
//!
//! Varints are protobuf's: seven bits a byte, least significant first, at
//! most ten bytes. Bytes after the message are ignored, as libsignal's
//! implementation does, so that a later version can append fields.

use super::Error;
use super::erasure::{CHUNK_LEN, Chunk};

/// The version byte of an SPQR v1 message.
pub(crate) const V1: u8 = 1;
const MAX_VARINT_LEN: usize = 10;

/// What a message carries for the braid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// Nothing: the sender waits for the other side.
    None,
    /// A chunk of the encapsulation key header and its MAC.
    Hdr(Chunk),
    /// A chunk of the encapsulation key.
    Ek(Chunk),
    /// A chunk of the encapsulation key, saying that the first ciphertext
    /// part has arrived.
    EkCt1Ack(Chunk),
    /// The first ciphertext part has arrived (the key has been sent).
    Ct1Ack,
    /// A chunk of the first ciphertext part.
    Ct1(Chunk),
    /// A chunk of the second ciphertext part and the ciphertext MAC.
    Ct2(Chunk),
}

impl Payload {
    fn code(&self) -> u8 {
        match self {
            Payload::None => 0,
            Payload::Hdr(_) => 1,
            Payload::Ek(_) => 2,
            Payload::EkCt1Ack(_) => 3,
            Payload::Ct1Ack => 4,
            Payload::Ct1(_) => 5,
            Payload::Ct2(_) => 6,
        }
    }

    fn chunk(&self) -> Option<&Chunk> {
        match self {
            Payload::None | Payload::Ct1Ack => None,
            Payload::Hdr(c)
            | Payload::Ek(c)
            | Payload::EkCt1Ack(c)
            | Payload::Ct1(c)
            | Payload::Ct2(c) => Some(c),
        }
    }
}

/// One decoded SPQR v1 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) epoch: u64,
    pub(crate) index: u32,
    pub(crate) payload: Payload,
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads bytes one at a time, with a typed error at the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self, what: &'static str) -> Result<u8, Error> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(Error::MalformedMessage(what))?;
        self.at += 1;
        Ok(b)
    }

    /// A varint; bits beyond the 64th are dropped, as protobuf does.
    fn varint(&mut self, what: &'static str) -> Result<u64, Error> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let b = self.byte(what)?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::MalformedMessage(what))
    }

    fn chunk(&mut self) -> Result<Chunk, Error> {
        let index = u16::try_from(self.varint("chunk index")?)
            .map_err(|_| Error::MalformedMessage("chunk index above 65535"))?;
        let data = self
            .bytes
            .get(self.at..self.at + CHUNK_LEN)
            .ok_or(Error::MalformedMessage("chunk data"))?;
        self.at += CHUNK_LEN;
        let mut chunk = Chunk {
            index,
            data: [0; CHUNK_LEN],
        };
        chunk.data.copy_from_slice(data);
        Ok(chunk)
    }
}

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.push(V1);
        put_varint(self.epoch, &mut out);
        put_varint(u64::from(self.index), &mut out);
        out.push(self.payload.code());
        if let Some(chunk) = self.payload.chunk() {
            put_varint(u64::from(chunk.index), &mut out);
            out.extend_from_slice(&chunk.data);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader { bytes, at: 0 };
        if r.byte("version")? != V1 {
            return Err(Error::MalformedMessage("version"));
        }
        let epoch = r.varint("epoch")?;
        if epoch == 0 {
            return Err(Error::MalformedMessage("epoch 0"));
        }
        let index = u32::try_from(r.varint("index")?)
            .map_err(|_| Error::MalformedMessage("index above u32"))?;
        let payload = match r.byte("type")? {
            0 => Payload::None,
            1 => Payload::Hdr(r.chunk()?),
            2 => Payload::Ek(r.chunk()?),
            3 => Payload::EkCt1Ack(r.chunk()?),
            4 => Payload::Ct1Ack,
            5 => Payload::Ct1(r.chunk()?),
            6 => Payload::Ct2(r.chunk()?),
            _ => return Err(Error::MalformedMessage("type")),
        };
        Ok(Self {
            epoch,
            index,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload() -> impl Strategy<Value = Payload> {
        let chunk =
            (any::<u16>(), any::<[u8; 32]>()).prop_map(|(index, data)| Chunk { index, data });
        prop_oneof![
            Just(Payload::None),
            Just(Payload::Ct1Ack),
            chunk.clone().prop_map(Payload::Hdr),
            chunk.clone().prop_map(Payload::Ek),
            chunk.clone().prop_map(Payload::EkCt1Ack),
            chunk.clone().prop_map(Payload::Ct1),
            chunk.prop_map(Payload::Ct2),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(epoch in 1u64.., index: u32, payload in payload()) {
            let msg = Message { epoch, index, payload };
            prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(msg) = Message::decode(&bytes) {
                prop_assert!(msg.epoch >= 1);
                prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg));
            }
        }
    }

    #[test]
    fn varint_layout() {
        let mut v = Vec::new();
        put_varint(0x012c, &mut v);
        assert_eq!(v, [0xac, 0x02]);
        let mut r = Reader {
            bytes: &[0xff, 0xac, 0x02, 0xff],
            at: 1,
        };
        assert_eq!(r.varint("x"), Ok(0x012c));
        assert_eq!(r.at, 3);
        let mut v = Vec::new();
        put_varint(u64::MAX, &mut v);
        assert_eq!(v.len(), 10);
        assert_eq!(Reader { bytes: &v, at: 0 }.varint("x"), Ok(u64::MAX));
        let eleven = [0x80u8; 11];
        assert!(
            Reader {
                bytes: &eleven,
                at: 0
            }
            .varint("x")
            .is_err()
        );
    }

    #[test]
    fn known_layout() {
        let chunk = Chunk {
            index: 300,
            data: [0x5a; 32],
        };
        let msg = Message {
            epoch: 1,
            index: 2,
            payload: Payload::Ct1(chunk),
        };
        let mut expected = vec![1, 1, 2, 5, 0xac, 0x02];
        expected.extend_from_slice(&[0x5a; 32]);
        assert_eq!(msg.encode(), expected);
        assert_eq!(Message::decode(&expected), Ok(msg));

        let ack = Message {
            epoch: 200,
            index: 0,
            payload: Payload::Ct1Ack,
        };
        assert_eq!(ack.encode(), [1, 0xc8, 0x01, 0, 4]);
    }

    #[test]
    fn rejects_what_libsignal_rejects() {
        for bad in [
            &[][..],
            &[0, 1, 1, 0],
            &[2, 1, 1, 0],
            &[1, 0, 1, 0],
            &[1, 1, 1, 7],
            &[1, 1, 1],
            &[1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0],
            &[1, 1, 1, 1, 0x80, 0x80, 0x04],
            &[1, 1, 1, 1, 0],
        ] {
            assert!(Message::decode(bad).is_err(), "{bad:?}");
        }
        // Trailing bytes are tolerated.
        assert!(Message::decode(&[1, 1, 1, 0, 9, 9]).is_ok());
    }
}
