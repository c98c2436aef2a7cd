//! The stored SPQR state and its byte layout.
//!
//! An empty state is SPQR off (version 0), as libsignal stores it. Any
//! other state is, big-endian throughout:
//!
//! ```text
//! format        u8      1
//! parts         u8      bit 0 negotiation, bit 1 chain, bit 2 braid
//! negotiation:  direction u8, min_version u8, max_jump u32, max_ooo_keys u32,
//!               auth key (u16 length, bytes)
//! chain:        direction u8, current_epoch u64, send_epoch u64, next_root [32],
//!               max_jump u32, max_ooo_keys u32, links u8, then per link the
//!               sending and receiving half: ctr u32, has_key u8 [+ key 32],
//!               skipped u32, skipped x (index u32, key 32)
//! braid:        state u8 (0..=10, in the order of `Braid`), epoch u64,
//!               root_key [32], mac_key [32], then the state's fields in
//!               declaration order: fixed-size blobs raw, encoders as
//!               next index u32 + message, decoders as count u8 +
//!               count x (index u16, data 32)
//! ```
//!
//! Every length is checked against what the protocol can produce, so a
//! stored state is bounded and a damaged one is an error, never a panic.

use std::collections::VecDeque;

use zeroize::Zeroizing;

use super::auth::Authenticator;
use super::braid::{Braid, CT2_MSG_LEN, HEADER_MSG_LEN};
use super::chain::{Chain, Half, Limits, Link, MAX_LINKS};
use super::erasure::{CHUNK_LEN, Chunk, Decoder, Encoder};
use super::kem::{CT1_LEN, DK_LEN, EK_LEN, ENCAPS_STATE_LEN, HEADER_LEN};
use super::{Direction, Error, Version};

const FORMAT: u8 = 1;
const HAS_NEGOTIATION: u8 = 1;
const HAS_CHAIN: u8 = 2;
const HAS_BRAID: u8 = 4;
/// The longest handshake key a state keeps (PQXDH gives 32 bytes).
const MAX_AUTH_KEY_LEN: usize = 256;

/// What the state remembers until the peer has been heard from: enough to
/// start over at a lower version.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Negotiation {
    pub(crate) auth_key: Zeroizing<Vec<u8>>,
    pub(crate) direction: Direction,
    pub(crate) min_version: Version,
    pub(crate) limits: Limits,
}

/// The whole SPQR state of a session.
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct State {
    pub(crate) negotiation: Option<Negotiation>,
    pub(crate) chain: Option<Chain>,
    /// `None` when SPQR is off.
    pub(crate) braid: Option<Braid>,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn limits(&mut self, l: &Limits) {
        self.u32(l.max_jump);
        self.u32(l.max_ooo_keys);
    }
    fn half(&mut self, h: &Half) {
        self.u32(h.ctr);
        match &h.next {
            Some(key) => {
                self.u8(1);
                self.raw(key);
            }
            None => self.u8(0),
        }
        self.u32(h.skipped.len() as u32);
        for (index, key) in &h.skipped {
            self.u32(*index);
            self.raw(key);
        }
    }
    fn encoder(&mut self, e: &Encoder) {
        self.u32(e.next_index());
        self.raw(e.message());
    }
    fn decoder(&mut self, d: &Decoder) {
        self.u8(d.chunks().len() as u8);
        for c in d.chunks() {
            self.u16(c.index);
            self.raw(&c.data);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

fn bad(what: &'static str) -> Error {
    Error::MalformedState(what)
}

impl<'a> Reader<'a> {
    fn raw(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.bytes.len() < len {
            return Err(bad(what));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn secret(&mut self, len: usize, what: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
        Ok(Zeroizing::new(self.raw(len, what)?.to_vec()))
    }
    fn direction(&mut self) -> Result<Direction, Error> {
        match self.u8("direction")? {
            0 => Ok(Direction::A2B),
            1 => Ok(Direction::B2A),
            _ => Err(bad("direction")),
        }
    }
    fn limits(&mut self) -> Result<Limits, Error> {
        let max_jump = self.u32("max_jump")?;
        let max_ooo_keys = self.u32("max_ooo_keys")?;
        if max_jump == 0 || max_ooo_keys == 0 {
            return Err(bad("chain limits"));
        }
        Limits::new(max_jump, max_ooo_keys).map_err(|_| bad("chain limits"))
    }
    fn half(&mut self, limits: &Limits) -> Result<Half, Error> {
        let ctr = self.u32("chain counter")?;
        let next = match self.u8("chain key flag")? {
            0 => None,
            1 => Some(self.array("chain key")?),
            _ => return Err(bad("chain key flag")),
        };
        let count = self.u32("skipped keys")? as usize;
        if count > limits.sweep_at() {
            return Err(bad("too many skipped keys"));
        }
        let mut skipped = Vec::with_capacity(count);
        for _ in 0..count {
            let index = self.u32("skipped key index")?;
            if index >= ctr {
                return Err(bad("skipped key ahead of its chain"));
            }
            skipped.push((index, self.array("skipped key")?));
        }
        Ok(Half { ctr, next, skipped })
    }
    fn encoder(&mut self, len: usize) -> Result<Encoder, Error> {
        let next = self.u32("encoder index")?;
        Encoder::restore(self.raw(len, "encoder message")?.to_vec(), next)
            .ok_or(bad("encoder message"))
    }
    fn decoder(&mut self, len: usize) -> Result<Decoder, Error> {
        let count = self.u8("decoder chunks")?;
        let mut chunks = Vec::with_capacity(usize::from(count).min(len / CHUNK_LEN));
        for _ in 0..count {
            let index = self.u16("chunk index")?;
            let data = self.array("chunk data")?;
            chunks.push(Chunk { index, data });
        }
        Decoder::restore(len, chunks).ok_or(bad("decoder chunks"))
    }
}

fn version_code(v: Version) -> u8 {
    match v {
        Version::V0 => 0,
        Version::V1 => 1,
    }
}

fn direction_code(d: Direction) -> u8 {
    match d {
        Direction::A2B => 0,
        Direction::B2A => 1,
    }
}

fn write_braid(w: &mut Writer, braid: &Braid) {
    let (tag, auth) = match braid {
        Braid::KeysUnsampled { auth, .. } => (0, auth),
        Braid::KeysSampled { auth, .. } => (1, auth),
        Braid::HeaderSent { auth, .. } => (2, auth),
        Braid::Ct1Received { auth, .. } => (3, auth),
        Braid::EkSentCt1Received { auth, .. } => (4, auth),
        Braid::NoHeaderReceived { auth, .. } => (5, auth),
        Braid::HeaderReceived { auth, .. } => (6, auth),
        Braid::Ct1Sampled { auth, .. } => (7, auth),
        Braid::EkReceivedCt1Sampled { auth, .. } => (8, auth),
        Braid::Ct1Acknowledged { auth, .. } => (9, auth),
        Braid::Ct2Sampled { auth, .. } => (10, auth),
    };
    w.u8(tag);
    w.u64(braid.epoch());
    w.raw(auth.root_key());
    w.raw(auth.mac_key());
    match braid {
        Braid::KeysUnsampled { .. } => {}
        Braid::KeysSampled {
            ek,
            dk,
            sending_hdr,
            ..
        } => {
            w.raw(ek);
            w.raw(dk);
            w.encoder(sending_hdr);
        }
        Braid::HeaderSent {
            dk,
            sending_ek,
            receiving_ct1,
            ..
        } => {
            w.raw(dk);
            w.encoder(sending_ek);
            w.decoder(receiving_ct1);
        }
        Braid::Ct1Received {
            dk,
            ct1,
            sending_ek,
            ..
        } => {
            w.raw(dk);
            w.raw(ct1);
            w.encoder(sending_ek);
        }
        Braid::EkSentCt1Received {
            dk,
            ct1,
            receiving_ct2,
            ..
        } => {
            w.raw(dk);
            w.raw(ct1);
            w.decoder(receiving_ct2);
        }
        Braid::NoHeaderReceived { receiving_hdr, .. } => w.decoder(receiving_hdr),
        Braid::HeaderReceived {
            hdr, receiving_ek, ..
        } => {
            w.raw(hdr);
            w.decoder(receiving_ek);
        }
        Braid::Ct1Sampled {
            hdr,
            es,
            sending_ct1,
            receiving_ek,
            ..
        } => {
            w.raw(hdr);
            w.raw(es);
            w.encoder(sending_ct1);
            w.decoder(receiving_ek);
        }
        Braid::EkReceivedCt1Sampled {
            es,
            ek,
            sending_ct1,
            ..
        } => {
            w.raw(es);
            w.raw(ek);
            w.encoder(sending_ct1);
        }
        Braid::Ct1Acknowledged {
            hdr,
            es,
            ct1,
            receiving_ek,
            ..
        } => {
            w.raw(hdr);
            w.raw(es);
            w.raw(ct1);
            w.decoder(receiving_ek);
        }
        Braid::Ct2Sampled { sending_ct2, .. } => w.encoder(sending_ct2),
    }
}

fn read_braid(r: &mut Reader<'_>) -> Result<Braid, Error> {
    let tag = r.u8("braid state")?;
    let epoch = r.u64("epoch")?;
    if epoch == 0 {
        return Err(bad("epoch 0"));
    }
    let auth = Authenticator::from_parts(r.array("root key")?, r.array("mac key")?);
    Ok(match tag {
        0 => Braid::KeysUnsampled { epoch, auth },
        1 => Braid::KeysSampled {
            epoch,
            auth,
            ek: r.raw(EK_LEN, "ek")?.to_vec(),
            dk: r.secret(DK_LEN, "dk")?,
            sending_hdr: r.encoder(HEADER_MSG_LEN)?,
        },
        2 => Braid::HeaderSent {
            epoch,
            auth,
            dk: r.secret(DK_LEN, "dk")?,
            sending_ek: r.encoder(EK_LEN)?,
            receiving_ct1: r.decoder(CT1_LEN)?,
        },
        3 => Braid::Ct1Received {
            epoch,
            auth,
            dk: r.secret(DK_LEN, "dk")?,
            ct1: r.raw(CT1_LEN, "ct1")?.to_vec(),
            sending_ek: r.encoder(EK_LEN)?,
        },
        4 => Braid::EkSentCt1Received {
            epoch,
            auth,
            dk: r.secret(DK_LEN, "dk")?,
            ct1: r.raw(CT1_LEN, "ct1")?.to_vec(),
            receiving_ct2: r.decoder(CT2_MSG_LEN)?,
        },
        5 => Braid::NoHeaderReceived {
            epoch,
            auth,
            receiving_hdr: r.decoder(HEADER_MSG_LEN)?,
        },
        6 => Braid::HeaderReceived {
            epoch,
            auth,
            hdr: r.raw(HEADER_LEN, "hdr")?.to_vec(),
            receiving_ek: r.decoder(EK_LEN)?,
        },
        7 => Braid::Ct1Sampled {
            epoch,
            auth,
            hdr: r.raw(HEADER_LEN, "hdr")?.to_vec(),
            es: r.secret(ENCAPS_STATE_LEN, "encapsulation state")?,
            sending_ct1: r.encoder(CT1_LEN)?,
            receiving_ek: r.decoder(EK_LEN)?,
        },
        8 => Braid::EkReceivedCt1Sampled {
            epoch,
            auth,
            es: r.secret(ENCAPS_STATE_LEN, "encapsulation state")?,
            ek: r.raw(EK_LEN, "ek")?.to_vec(),
            sending_ct1: r.encoder(CT1_LEN)?,
        },
        9 => Braid::Ct1Acknowledged {
            epoch,
            auth,
            hdr: r.raw(HEADER_LEN, "hdr")?.to_vec(),
            es: r.secret(ENCAPS_STATE_LEN, "encapsulation state")?,
            ct1: r.raw(CT1_LEN, "ct1")?.to_vec(),
            receiving_ek: r.decoder(EK_LEN)?,
        },
        10 => Braid::Ct2Sampled {
            epoch,
            auth,
            sending_ct2: r.encoder(CT2_MSG_LEN)?,
        },
        _ => return Err(bad("braid state")),
    })
}

impl State {
    pub(crate) fn encode(&self) -> Vec<u8> {
        if self.negotiation.is_none() && self.chain.is_none() && self.braid.is_none() {
            return Vec::new();
        }
        let mut w = Writer(Vec::with_capacity(4096));
        w.u8(FORMAT);
        let mut parts = 0;
        if self.negotiation.is_some() {
            parts |= HAS_NEGOTIATION;
        }
        if self.chain.is_some() {
            parts |= HAS_CHAIN;
        }
        if self.braid.is_some() {
            parts |= HAS_BRAID;
        }
        w.u8(parts);
        if let Some(n) = &self.negotiation {
            w.u8(direction_code(n.direction));
            w.u8(version_code(n.min_version));
            w.limits(&n.limits);
            w.u16(n.auth_key.len() as u16);
            w.raw(&n.auth_key);
        }
        if let Some(c) = &self.chain {
            w.u8(direction_code(c.direction));
            w.u64(c.current_epoch);
            w.u64(c.send_epoch);
            w.raw(&c.next_root[..]);
            w.limits(&c.limits);
            w.u8(c.links.len() as u8);
            for link in &c.links {
                w.half(&link.send);
                w.half(&link.recv);
            }
        }
        if let Some(b) = &self.braid {
            write_braid(&mut w, b);
        }
        w.0
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let mut r = Reader { bytes };
        if r.u8("format")? != FORMAT {
            return Err(bad("unknown format"));
        }
        let parts = r.u8("parts")?;
        if parts & !(HAS_NEGOTIATION | HAS_CHAIN | HAS_BRAID) != 0 {
            return Err(bad("parts"));
        }
        let negotiation = if parts & HAS_NEGOTIATION != 0 {
            let direction = r.direction()?;
            let min_version = match r.u8("min_version")? {
                0 => Version::V0,
                1 => Version::V1,
                _ => return Err(bad("min_version")),
            };
            let limits = r.limits()?;
            let len = usize::from(r.u16("auth key length")?);
            if len > MAX_AUTH_KEY_LEN {
                return Err(bad("auth key length"));
            }
            Some(Negotiation {
                auth_key: r.secret(len, "auth key")?,
                direction,
                min_version,
                limits,
            })
        } else {
            None
        };
        let chain = if parts & HAS_CHAIN != 0 {
            let direction = r.direction()?;
            let current_epoch = r.u64("current epoch")?;
            let send_epoch = r.u64("send epoch")?;
            let next_root = Zeroizing::new(r.array("next root")?);
            let limits = r.limits()?;
            let count = usize::from(r.u8("links")?);
            if count == 0 || count > MAX_LINKS || count as u64 - 1 > current_epoch {
                return Err(bad("links"));
            }
            if send_epoch > current_epoch || current_epoch - send_epoch >= count as u64 {
                return Err(bad("send epoch"));
            }
            let mut links = VecDeque::with_capacity(count);
            for _ in 0..count {
                let send = r.half(&limits)?;
                let recv = r.half(&limits)?;
                links.push_back(Link { send, recv });
            }
            Some(Chain {
                direction,
                current_epoch,
                send_epoch,
                links,
                next_root,
                limits,
            })
        } else {
            None
        };
        let braid = if parts & HAS_BRAID != 0 {
            Some(read_braid(&mut r)?)
        } else {
            None
        };
        if !r.bytes.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self {
            negotiation,
            chain,
            braid,
        })
    }
}
