//! The seam where the post-quantum ratchet (SPQR, in `crate::spqr`)
//! plugs into the Double Ratchet.
//!
//! Every message carries a `pq_ratchet` payload, and each message key is
//! salted with the key SPQR gives for that message. Its state lives in the
//! session (`pq_ratchet_state`; empty means SPQR off, as in sessions
//! stored before SPQR).
//!
//! New sessions run SPQR version 1 and require it of the peer, as
//! libsignal does since 0.92: a peer that sends no payload is refused. The
//! chain limits are libsignal's, with no forward limit in a session with
//! oneself.

use rand_core::{CryptoRng, RngCore};

use crate::error::Result;
use crate::spqr::{self, MessageKey};

/// What the post-quantum ratchet adds to one outgoing message.
pub(crate) struct PqSend {
    /// The payload for the message's `pq_ratchet` field.
    pub(crate) payload: Vec<u8>,
    /// The key to salt the message keys with, if any.
    pub(crate) key: Option<MessageKey>,
    /// The state after sending.
    pub(crate) state: Vec<u8>,
}

/// What the post-quantum ratchet gives for one incoming message.
pub(crate) struct PqRecv {
    /// The key to salt the message keys with, if any.
    pub(crate) key: Option<MessageKey>,
    /// The state after receiving.
    pub(crate) state: Vec<u8>,
}

/// Advances the sending side.
pub(crate) fn send(state: &[u8], rng: &mut (impl CryptoRng + RngCore)) -> Result<PqSend> {
    let sent = spqr::send(state, rng)?;
    Ok(PqSend {
        payload: sent.msg,
        key: sent.key,
        state: sent.state,
    })
}

/// Advances the receiving side with the peer's payload.
pub(crate) fn recv(state: &[u8], payload: &[u8]) -> Result<PqRecv> {
    let received = spqr::recv(state, payload)?;
    Ok(PqRecv {
        key: received.key,
        state: received.state,
    })
}
