//! The Sparse Post-Quantum Ratchet (SPQR) version 1, wire-compatible with
//! libsignal's.
//!
//! SPQR runs beside the Double Ratchet and gives every message a 32-byte
//! key that salts the Double Ratchet's message-key derivation, so that
//! message keys depend on a stream of fresh ML-KEM-768 shared secrets as
//! well as on X25519. Its messages ride in the `pq_ratchet` field of each
//! SignalMessage (layout in `wire`).
//!
//! # Parts
//!
//! * **Braid** (`braid`): per epoch, one side sends a fresh ML-KEM key and
//!   the other side encapsulates to it; then they swap roles. Keys and
//!   ciphertexts are too large for one message, so they are cut into
//!   32-byte chunks, one per message. The incremental form of ML-KEM lets
//!   the ciphertext side encapsulate as soon as the 64-byte header has
//!   arrived, so the two transfers overlap. Each completed exchange yields
//!   an *epoch secret* (epochs start at 1).
//! * **Erasure code** (`erasure`, over `gf16`): chunks are points on
//!   sixteen polynomials over GF(2^16), so that *any* `n` chunks rebuild an
//!   `n`-chunk payload: lost or reordered messages cost nothing but time.
//! * **Authenticator** (`auth`): a MAC key ratcheted with each epoch
//!   secret, keyed at first from the PQXDH handshake's SPQR key. It
//!   authenticates each key header and each ciphertext, so a party that did
//!   not take part in the handshake cannot inject an epoch.
//! * **Chains** (`chain`): each epoch secret starts a sending and a
//!   receiving symmetric chain (epoch 0's come from the handshake key).
//!   A message of braid epoch `e` takes the next key of the sender's chain
//!   of epoch `e - 1`, and names its index; the receiver derives the same
//!   key, keeping skipped keys (at most `max_ooo_keys`, at most `max_jump`
//!   ahead) for messages that arrive late. Each key is given once.
//! * **State** (`state`): the serialized form the session stores.
//!
//! # Versions
//!
//! Version 0 is SPQR off: an empty state, empty messages, no keys. A
//! version-1 state remembers its handshake key until it first receives, so
//! that if the first message from the peer is empty (a peer without SPQR)
//! and `min_version` allows it, it falls back to version 0 for good. With
//! `min_version` 1, as libsignal sets it, such a peer is refused, and every
//! message carries a key from the first one on.
//!
//! # Errors
//!
//! Every function takes the state as bytes and returns the new state; on
//! error the caller keeps the old one, so a bad message changes nothing.

mod auth;
mod braid;
mod chain;
mod erasure;
mod gf16;
mod kdf;
mod kem;
mod state;
mod wire;

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use braid::Braid;
use chain::{Chain, Limits};
use state::{Negotiation, State};
use wire::Message;

/// An SPQR protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// SPQR off.
    V0,
    /// The ML-KEM-768 braid.
    V1,
}

/// Which way a party's sending chains run; the PQXDH initiator is `A2B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The initiator (Alice).
    A2B,
    /// The responder (Bob).
    B2A,
}

/// How a session's SPQR starts.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    /// This party's direction.
    pub direction: Direction,
    /// The version this party runs.
    pub version: Version,
    /// The lowest version this party accepts from the peer.
    pub min_version: Version,
    /// The SPQR key from the PQXDH handshake.
    pub auth_key: &'a [u8],
    /// How far ahead of a receiving chain a message may be (0: 25,000).
    pub max_jump: u32,
    /// How many skipped keys a receiving chain keeps (0: 2,000).
    pub max_ooo_keys: u32,
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("direction", &self.direction)
            .field("version", &self.version)
            .field("min_version", &self.min_version)
            .field("max_jump", &self.max_jump)
            .field("max_ooo_keys", &self.max_ooo_keys)
            .finish_non_exhaustive()
    }
}

/// A per-message key, to salt the Double Ratchet's message keys with.
#[derive(Clone)]
pub struct MessageKey(Zeroizing<[u8; 32]>);

impl MessageKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(Zeroizing::new(key))
    }
}

impl std::ops::Deref for MessageKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0[..]
    }
}

impl PartialEq for MessageKey {
    fn eq(&self, other: &Self) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl Eq for MessageKey {}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey(..)")
    }
}

/// What can go wrong in SPQR.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The stored state does not decode, or is inconsistent.
    #[error("malformed SPQR state ({0})")]
    MalformedState(&'static str),
    /// The peer's SPQR message does not decode.
    #[error("malformed SPQR message ({0})")]
    MalformedMessage(&'static str),
    /// The reassembled key header's MAC does not verify: a bad chunk.
    #[error("SPQR key header MAC does not verify")]
    BadHeaderMac,
    /// The reassembled ciphertext's MAC does not verify: a bad chunk.
    #[error("SPQR ciphertext MAC does not verify")]
    BadCiphertextMac,
    /// The reassembled encapsulation key does not match its header.
    #[error("SPQR encapsulation key does not match its header")]
    KeyMismatch,
    /// A message names an epoch this state cannot take.
    #[error("SPQR epoch {0} out of range")]
    EpochOutOfRange(u64),
    /// A message key is further ahead of its chain than allowed.
    #[error("SPQR key {at} is too far ahead of {ctr}")]
    KeyJump {
        /// The chain's last index.
        ctr: u32,
        /// The index asked for.
        at: u32,
    },
    /// A late message's key has been forgotten.
    #[error("SPQR key {0} is too old")]
    KeyTrimmed(u32),
    /// A message key was asked for twice.
    #[error("SPQR key {0} was already used")]
    KeyAlreadyUsed(u32),
    /// The sending epoch went backwards (an inconsistent state).
    #[error("SPQR send epoch went from {from} back to {to}")]
    SendEpochDecreased {
        /// The previous sending epoch.
        from: u64,
        /// The epoch asked for.
        to: u64,
    },
    /// A chain has given all 2^32 - 1 keys.
    #[error("SPQR chain counter exhausted")]
    CounterExhausted,
    /// The peer's version differs from the one negotiated.
    #[error("SPQR version mismatch after negotiation")]
    VersionMismatch,
    /// The peer's version is below this side's minimum.
    #[error("peer's SPQR version is below the minimum")]
    MinimumVersion,
    /// The parameters cannot start a state.
    #[error("invalid SPQR parameters: {0}")]
    InvalidParams(&'static str),
    /// The state has no key chain where one is needed.
    #[error("SPQR key chain not available")]
    ChainNotAvailable,
}

/// The state after sending, the `pq_ratchet` payload, and the key.
pub struct Sent {
    /// The new state.
    pub state: Vec<u8>,
    /// The message for the `pq_ratchet` field.
    pub msg: Vec<u8>,
    /// The key for this message, if any.
    pub key: Option<MessageKey>,
}

/// The state after receiving, and the key.
pub struct Received {
    /// The new state.
    pub state: Vec<u8>,
    /// The key for this message, if any.
    pub key: Option<MessageKey>,
}

// The states hold secret keys: their Debug shows sizes only.
impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sent")
            .field("state_len", &self.state.len())
            .field("msg_len", &self.msg.len())
            .field("key", &self.key)
            .finish()
    }
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("state_len", &self.state.len())
            .field("key", &self.key)
            .finish()
    }
}

fn initial_braid(version: Version, direction: Direction, auth_key: &[u8]) -> Option<Braid> {
    match (version, direction) {
        (Version::V0, _) => None,
        (Version::V1, Direction::A2B) => Some(Braid::new_send_ek(auth_key)),
        (Version::V1, Direction::B2A) => Some(Braid::new_send_ct(auth_key)),
    }
}

/// The first state of a session.
pub fn initial_state(params: &Params<'_>) -> Result<Vec<u8>, Error> {
    if params.version == Version::V0 {
        return Ok(Vec::new());
    }
    if params.auth_key.is_empty() || params.auth_key.len() > 256 {
        return Err(Error::InvalidParams("auth key must be 1 to 256 bytes"));
    }
    let limits = Limits::new(params.max_jump, params.max_ooo_keys)?;
    let state = State {
        negotiation: Some(Negotiation {
            auth_key: Zeroizing::new(params.auth_key.to_vec()),
            direction: params.direction,
            min_version: params.min_version,
            limits,
        }),
        chain: None,
        braid: initial_braid(params.version, params.direction, params.auth_key),
    };
    Ok(state.encode())
}

fn chain_from(negotiation: &Negotiation) -> Chain {
    Chain::new(
        &negotiation.auth_key,
        negotiation.direction,
        negotiation.limits,
    )
}

/// The version the state runs now.
// Sessions do not ask yet; tests and the fuzz target do.
#[cfg_attr(not(feature = "hazmat"), allow(dead_code))]
pub fn current_version(state: &[u8]) -> Result<Version, Error> {
    let state = State::decode(state)?;
    Ok(if state.braid.is_some() {
        Version::V1
    } else {
        Version::V0
    })
}

/// Advances the sending side: the payload for the next message and its key.
pub fn send(state: &[u8], rng: &mut (impl CryptoRng + RngCore)) -> Result<Sent, Error> {
    let State {
        negotiation,
        chain,
        braid,
    } = State::decode(state)?;
    let Some(braid) = braid else {
        return Ok(Sent {
            state: Vec::new(),
            msg: Vec::new(),
            key: None,
        });
    };
    let epoch = braid.epoch();
    let (braid, payload, secret) = braid.send(rng)?;
    let mut chain = match (chain, &negotiation) {
        (Some(chain), _) => Some(chain),
        // Until the peer is heard from, a side that may still fall back
        // derives no keys: a peer without SPQR could not match them.
        (None, Some(n)) if n.min_version > Version::V0 => Some(chain_from(n)),
        (None, Some(_)) => None,
        (None, None) => return Err(Error::ChainNotAvailable),
    };
    let (index, key) = match chain.as_mut() {
        Some(chain) => {
            if let Some(s) = secret {
                chain.add_epoch(s.epoch, &s.secret[..])?;
            }
            let (index, key) = chain.send_key(epoch - 1)?;
            (index, Some(key))
        }
        None if secret.is_some() => return Err(Error::ChainNotAvailable),
        None => (0, None),
    };
    let msg = Message {
        epoch,
        index,
        payload,
    }
    .encode();
    let state = State {
        negotiation,
        chain,
        braid: Some(braid),
    }
    .encode();
    Ok(Sent { state, msg, key })
}

/// Advances the receiving side with the peer's `pq_ratchet` payload.
pub fn recv(state: &[u8], msg: &[u8]) -> Result<Received, Error> {
    let current = State::decode(state)?;
    let theirs = match msg.first() {
        None | Some(0) => Version::V0,
        Some(1) => Version::V1,
        // A version above ours: keep speaking ours, and let the peer
        // come down to it.
        Some(_) => {
            return Ok(Received {
                state: state.to_vec(),
                key: None,
            });
        }
    };
    let ours = if current.braid.is_some() {
        Version::V1
    } else {
        Version::V0
    };
    let State {
        negotiation,
        chain,
        braid,
    } = if theirs >= ours {
        current
    } else {
        let Some(n) = current.negotiation.as_ref() else {
            return Err(Error::VersionMismatch);
        };
        if theirs < n.min_version {
            return Err(Error::MinimumVersion);
        }
        let chain = current.chain.clone().unwrap_or_else(|| chain_from(n));
        State {
            negotiation: None,
            chain: Some(chain),
            braid: initial_braid(theirs, n.direction, &n.auth_key),
        }
    };
    let Some(braid) = braid else {
        return Ok(Received {
            state: Vec::new(),
            key: None,
        });
    };
    let msg = Message::decode(msg)?;
    let (braid, secret) = braid.recv(msg.epoch, &msg.payload)?;
    let mut chain = match (chain, &negotiation) {
        (Some(chain), _) => chain,
        (None, Some(n)) => chain_from(n),
        (None, None) => return Err(Error::ChainNotAvailable),
    };
    if let Some(s) = secret {
        chain.add_epoch(s.epoch, &s.secret[..])?;
    }
    let key_epoch = msg.epoch - 1;
    // Index 0 of epoch 0 is what a side that may still fall back sends
    // before it has heard from us: no key.
    let key = if key_epoch == 0 && msg.index == 0 {
        None
    } else {
        Some(chain.recv_key(key_epoch, msg.index)?)
    };
    let state = State {
        negotiation: None,
        chain: Some(chain),
        braid: Some(braid),
    }
    .encode();
    Ok(Received { state, key })
}

#[cfg(test)]
mod tests;
