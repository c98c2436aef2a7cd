//! Sender keys: the group messaging layer of the Signal protocol,
//! wire-compatible with libsignal 0.90.0.
//!
//! Each member of a group sends under a *distribution id* (a UUID naming the
//! group, or a story audience) with a sender chain of its own: a hash
//! ratchet whose keys encrypt its messages (AES-256-CBC, PKCS#7) and a
//! Curve25519 key that signs them (XEdDSA). Before sending, a member hands
//! each other member a [`SenderKeyDistributionMessage`] over their 1:1
//! sessions; after that, one [`SenderKeyMessage`] reaches every member.
//!
//! ```text
//! sender:    create_sender_key_distribution_message -> SKDM (to each member, 1:1)
//!            group_encrypt                          -> SenderKeyMessage (to all)
//! receivers: process_sender_key_distribution_message(SKDM)
//!            group_decrypt(SenderKeyMessage)         -> plaintext
//! ```
//!
//! Every message is signed with its chain's signing key, so members cannot
//! forge one another's messages, and the hash ratchet gives forward secrecy
//! within a chain. There is no post-compromise security: a member recovers
//! by dropping its record and distributing a new chain.
//!
//! libsignal's limits apply: [`MAX_SENDER_KEY_STATES`] chains per sender and
//! distribution, [`MAX_MESSAGE_KEYS`] kept keys of skipped messages per
//! chain, and messages at most [`MAX_FORWARD_JUMPS`] iterations ahead.
//!
//! [`MAX_SENDER_KEY_STATES`]: crate::limits::MAX_SENDER_KEY_STATES
//! [`MAX_MESSAGE_KEYS`]: crate::limits::MAX_MESSAGE_KEYS
//! [`MAX_FORWARD_JUMPS`]: crate::limits::MAX_FORWARD_JUMPS

mod chain;
mod cipher;
mod message;
mod record;
mod store;

pub use chain::CHAIN_KEY_LENGTH;
pub use cipher::{
    create_sender_key_distribution_message, group_decrypt, group_encrypt,
    process_sender_key_distribution_message,
};
pub use message::{SenderKeyDistributionMessage, SenderKeyMessage};
pub use record::{SenderKeyRecord, SenderKeyState};
pub use store::{InMemSenderKeyStore, SenderKeyStore};

/// The sender key message version, the only one libsignal 0.90.0 speaks.
/// Both wire formats start with the byte `0x33`: this version in the high
/// nibble and in the low.
pub const SENDER_KEY_MESSAGE_VERSION: u8 = 3;
