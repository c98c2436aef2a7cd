//! The Signal protocol, wire-compatible with libsignal.
//!
//! This crate is sans-IO: it does no I/O, spawns nothing, and has no clock or
//! randomness of its own. Callers pass the current time and a cryptographically
//! secure RNG to every operation that needs them, and keep state behind the
//! storage traits in [`store`].

pub mod address;
pub mod attachment;
mod crypto;
pub mod curve;
pub mod error;
pub mod fingerprint;
pub mod identity;
pub mod kem;
pub mod limits;
pub mod message;
mod pq_ratchet;
mod pqxdh;
pub mod prekeys;
mod proto;
mod ratchet;
pub mod sender_keys;
pub mod session;
/// The Sparse Post-Quantum Ratchet's raw state machine, exposed for tests,
/// fuzzing and benchmarks only; sessions drive it themselves.
#[cfg(feature = "hazmat")]
pub mod spqr;
#[cfg(not(feature = "hazmat"))]
mod spqr;
pub mod store;

pub use address::{DeviceId, ProtocolAddress};
pub use curve::{KeyPair, PrivateKey, PublicKey};
pub use error::{Error, Result};
pub use fingerprint::{DisplayableFingerprint, Fingerprint, ScannableFingerprint};
pub use identity::{IdentityKey, IdentityKeyPair, generate_registration_id};
pub use kem::{KemKeyPair, KemPublicKey, KemSecretKey};
pub use message::{CiphertextMessage, MessageType, PreKeySignalMessage, SignalMessage};
pub use prekeys::{
    KyberPreKeyId, KyberPreKeyRecord, PreKeyBundle, PreKeyId, PreKeyRecord, SignedPreKeyId,
    SignedPreKeyRecord,
};
pub use sender_keys::{
    InMemSenderKeyStore, SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord,
    SenderKeyStore, create_sender_key_distribution_message, group_decrypt, group_encrypt,
    process_sender_key_distribution_message,
};
pub use session::{
    SessionRecord, message_decrypt, message_decrypt_prekey, message_decrypt_signal,
    message_encrypt, process_prekey_bundle,
};
pub use spqr::Error as PqRatchetError;
pub use store::{
    Direction, IdentityChange, IdentityKeyStore, InMemoryStore, KyberPreKeyStore, PreKeyStore,
    ProtocolStore, SessionStore, SignedPreKeyStore,
};
