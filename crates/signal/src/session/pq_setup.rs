//! How a new session starts its post-quantum ratchet (SPQR), and the
//! negotiation policy, as libsignal decides it.
//!
//! libsignal gives every new session an SPQR state built from:
//!
//! - the auth key: the last 32 bytes of the PQXDH key derivation;
//! - the direction: `A2B` for the initiator (the side that processed a
//!   bundle), `B2A` for the responder;
//! - the version it speaks (`V1`) and the lowest it accepts (`min_version`):
//!   `V0` up to 0.91 (a peer without SPQR is tolerated: the state falls back
//!   to `V0`, no payload, no key), `V1` from 0.92 on (a peer without SPQR is
//!   refused);
//! - chain limits: at most [`MAX_FORWARD_JUMPS`](limits::MAX_FORWARD_JUMPS)
//!   keys skipped at once (unlimited for a session with one's own account)
//!   and [`MAX_MESSAGE_KEYS`](limits::MAX_MESSAGE_KEYS) keys kept for late
//!   messages.
//!
//! Nothing is negotiated in the handshake itself: a bundle does not say
//! whether its owner speaks SPQR, and the first message carries a `V1`
//! payload like any other. Negotiation happens message by message, on the
//! first byte of the peer's `pq_ratchet` field (empty means `V0`). See
//! `docs/signal.md` for what each combination of peers does.
//!
//! Passerelle takes libsignal 0.103's policy: offer `V1`, require `V1`.

use zeroize::Zeroizing;

use crate::error::Result;
use crate::limits;
use crate::spqr;

/// An SPQR protocol version; `V0` is "no post-quantum ratchet".
// `V0` is only ever received, never chosen by this crate.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PqVersion {
    V0 = 0,
    V1 = 1,
}

/// Which side of the session this state is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PqDirection {
    /// The initiator (processed the peer's bundle).
    AliceToBob,
    /// The responder (processed the peer's PreKey message).
    BobToAlice,
}

/// The version every new session offers.
pub(crate) const OFFERED_VERSION: PqVersion = PqVersion::V1;
/// The lowest version a peer may fall back to: libsignal 0.92 and later
/// require SPQR; so does Passerelle.
pub(crate) const MIN_VERSION: PqVersion = PqVersion::V1;

/// Everything SPQR's initial state is made of, field for field as
/// libsignal's `spqr::Params` and `spqr::ChainParams`.
pub(crate) struct PqRatchetParams {
    pub(crate) auth_key: Zeroizing<[u8; 32]>,
    pub(crate) version: PqVersion,
    pub(crate) min_version: PqVersion,
    pub(crate) direction: PqDirection,
    pub(crate) max_jump: u32,
    pub(crate) max_ooo_keys: u32,
}

impl std::fmt::Debug for PqRatchetParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PqRatchetParams")
            .field("auth_key", &"<redacted>")
            .field("version", &self.version)
            .field("min_version", &self.min_version)
            .field("direction", &self.direction)
            .field("max_jump", &self.max_jump)
            .field("max_ooo_keys", &self.max_ooo_keys)
            .finish()
    }
}

impl PqRatchetParams {
    /// The parameters of a new session; `self_session` when both ends are
    /// the same account (see [`same_account`](super::same_account)).
    pub(crate) fn new(
        auth_key: Zeroizing<[u8; 32]>,
        direction: PqDirection,
        self_session: bool,
    ) -> Self {
        Self {
            auth_key,
            version: OFFERED_VERSION,
            min_version: MIN_VERSION,
            direction,
            max_jump: if self_session {
                u32::MAX
            } else {
                limits::MAX_FORWARD_JUMPS
            },
            max_ooo_keys: limits::MAX_MESSAGE_KEYS as u32,
        }
    }
}

/// The SPQR state a new session starts with.
pub(crate) fn initial_state(params: &PqRatchetParams) -> Result<Vec<u8>> {
    let version = |v: PqVersion| match v {
        PqVersion::V0 => spqr::Version::V0,
        PqVersion::V1 => spqr::Version::V1,
    };
    Ok(spqr::initial_state(&spqr::Params {
        direction: match params.direction {
            PqDirection::AliceToBob => spqr::Direction::A2B,
            PqDirection::BobToAlice => spqr::Direction::B2A,
        },
        version: version(params.version),
        min_version: version(params.min_version),
        auth_key: &params.auth_key[..],
        max_jump: params.max_jump,
        max_ooo_keys: params.max_ooo_keys,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_offer_and_require_v1_with_libsignal_limits() {
        let params = PqRatchetParams::new(Zeroizing::new([7; 32]), PqDirection::AliceToBob, false);
        assert_eq!(
            (params.version, params.min_version),
            (PqVersion::V1, PqVersion::V1)
        );
        assert_eq!(params.max_jump, 25_000);
        assert_eq!(params.max_ooo_keys, 2_000);
        assert_eq!(*params.auth_key, [7; 32]);
        let own = PqRatchetParams::new(Zeroizing::new([7; 32]), PqDirection::BobToAlice, true);
        assert_eq!(own.max_jump, u32::MAX);
        assert!(
            !format!("{own:?}").contains("7, 7"),
            "the auth key is never printed"
        );
    }
}
