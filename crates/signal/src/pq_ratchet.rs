//! The seam where the post-quantum ratchet (SPQR) plugs into the Double
//! Ratchet.
//!
//! Every message carries an optional `pq_ratchet` payload, and each message
//! key may be salted with a key the post-quantum ratchet gives for that
//! message. Its state lives in the session (`pq_ratchet_state`, empty when
//! it is off).
//!
//! This version negotiates SPQR off, as libsignal allows up to 0.90: it
//! sends no payload, and a peer that offers SPQR but may fall back
//! (libsignal's `min_version` 0) sees the empty payload and drops to the
//! classic ratchet; until it has heard from us it derives no post-quantum
//! keys, so its payloads can be ignored. A peer that requires SPQR is
//! refused by that peer, not by us.

use crate::error::Result;

/// What the post-quantum ratchet adds to one outgoing message.
pub(crate) struct PqSend {
    /// The payload for the message's `pq_ratchet` field.
    pub(crate) payload: Vec<u8>,
    /// The key to salt the message keys with, if any.
    pub(crate) key: Option<Vec<u8>>,
    /// The state after sending.
    pub(crate) state: Vec<u8>,
}

/// What the post-quantum ratchet gives for one incoming message.
pub(crate) struct PqRecv {
    /// The key to salt the message keys with, if any.
    pub(crate) key: Option<Vec<u8>>,
    /// The state after receiving.
    pub(crate) state: Vec<u8>,
}

/// Advances the sending side.
pub(crate) fn send(state: &[u8]) -> Result<PqSend> {
    Ok(PqSend {
        payload: Vec::new(),
        key: None,
        state: state.to_vec(),
    })
}

/// Advances the receiving side with the peer's payload.
pub(crate) fn recv(state: &[u8], _payload: &[u8]) -> Result<PqRecv> {
    Ok(PqRecv {
        key: None,
        state: state.to_vec(),
    })
}
