//! The ways a key, a message or a protocol step can be bad.

use crate::address::ProtocolAddress;

/// Everything that can go wrong in this crate, one variant per cause.
///
/// No variant carries secret material or plaintext; addresses are included
/// where they help the caller decide what to do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A serialized key was empty, so it had no type byte.
    #[error("key has no type byte")]
    NoKeyType,
    /// A serialized key named a key type this crate does not know.
    #[error("unknown key type 0x{0:02x}")]
    BadKeyType(u8),
    /// A serialized key had the wrong length for its type.
    #[error("bad key length {len} for key type 0x{key_type:02x}")]
    BadKeyLength {
        /// The key type byte.
        key_type: u8,
        /// The length seen, type byte included.
        len: usize,
    },
    /// A signature had the wrong length.
    #[error("bad signature length {0}")]
    BadSignatureLength(usize),
    /// A signature over a prekey did not verify against the identity key.
    #[error("signature on {0} does not verify")]
    BadSignature(&'static str),
    /// A peer's public key is of low order: agreement with it would be all zeros.
    #[error("public key is of low order")]
    LowOrderKey,
    /// A peer's public key is not canonically encoded.
    #[error("public key is not canonically encoded")]
    NonCanonicalKey,
    /// A KEM ciphertext had the wrong length or type.
    #[error("bad KEM ciphertext")]
    BadKemCiphertext,

    /// A message was empty or too short to hold its version byte and MAC.
    #[error("message too short ({0} bytes)")]
    MessageTooShort(usize),
    /// A message's version byte is older than any this crate accepts.
    #[error("legacy message version {0}")]
    LegacyVersion(u8),
    /// A message's version byte is newer than any this crate understands.
    #[error("unrecognized message version {0}")]
    UnrecognizedVersion(u8),
    /// A message's protobuf did not decode.
    #[error("invalid {0} protobuf")]
    InvalidProtobuf(&'static str),
    /// A required field of a message was missing.
    #[error("{message} is missing {field}")]
    MissingField {
        /// The message type.
        message: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A message's MAC did not verify.
    #[error("bad MAC")]
    BadMac,
    /// A message's ciphertext did not decrypt (bad padding or length).
    #[error("ciphertext does not decrypt")]
    BadCiphertext,
    /// A message is bound to other sender or recipient addresses than ours
    /// (libsignal's `addresses` field): it was meant for another device, or
    /// it claims another sender.
    #[error("message is not addressed from {sender} to {recipient}")]
    MisaddressedMessage {
        /// Who we believe sent it.
        sender: ProtocolAddress,
        /// Our own address.
        recipient: ProtocolAddress,
    },
    /// A message was not of the type the caller expected.
    #[error("unexpected message type {0}")]
    UnexpectedMessageType(u8),

    /// There is no session with this address.
    #[error("no session with {0}")]
    SessionNotFound(ProtocolAddress),
    /// No session state could decrypt the message.
    #[error("message from {address} does not decrypt with any session ({detail})")]
    NoValidSession {
        /// The sender.
        address: ProtocolAddress,
        /// What was tried, with no secret in it.
        detail: String,
    },
    /// The identity key of a peer is not trusted for this operation.
    #[error("untrusted identity for {0}")]
    UntrustedIdentity(ProtocolAddress),
    /// A prekey message names a one-time prekey this device does not have.
    #[error("unknown one-time prekey {0}")]
    UnknownPreKey(u32),
    /// A prekey message names a signed prekey this device does not have.
    #[error("unknown signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// A prekey message names a Kyber prekey this device does not have.
    #[error("unknown Kyber prekey {0}")]
    UnknownKyberPreKey(u32),
    /// A bundle or prekey message lacks the Kyber prekey that PQXDH needs.
    #[error("missing Kyber prekey")]
    MissingKyberPreKey,
    /// A message was already decrypted once (its key is gone).
    #[error("duplicate message (chain index {index})")]
    DuplicateMessage {
        /// The message's index in its chain.
        index: u32,
    },
    /// A message is further ahead in its chain than the protocol allows.
    #[error("message index {index} is too far ahead of {current}")]
    MessageTooFarAhead {
        /// The message's index in its chain.
        index: u32,
        /// The next index the receiver expected.
        current: u32,
    },
    /// A session or sender key has seen its chain counter exhausted.
    #[error("chain counter exhausted")]
    CounterExhausted,
    /// A pending prekey session became too old to send on.
    #[error("session with {0} has expired; fetch a new prekey bundle")]
    SessionExpired(ProtocolAddress),

    /// There is no sender key state for this sender and distribution.
    #[error("no sender key state for {sender} in distribution {distribution_id}")]
    NoSenderKeyState {
        /// The sender.
        sender: ProtocolAddress,
        /// The group distribution.
        distribution_id: uuid::Uuid,
    },
    /// A sender key message's signature did not verify.
    #[error("bad sender key signature")]
    BadSenderKeySignature,

    /// A stored record did not decode (wrong version or corrupt).
    #[error("invalid stored {0}")]
    InvalidRecord(&'static str),
    /// A fingerprint could not be compared: versions differ.
    #[error("fingerprint version mismatch: theirs {theirs}, ours {ours}")]
    FingerprintVersionMismatch {
        /// The version in the scanned fingerprint.
        theirs: u32,
        /// The version we computed.
        ours: u32,
    },
    /// A fingerprint was computed with bad parameters or scanned bytes did not decode.
    #[error("invalid fingerprint: {0}")]
    InvalidFingerprint(&'static str),
    /// The post-quantum ratchet (SPQR) refused a message or its state.
    #[error("post-quantum ratchet: {0}")]
    PqRatchet(#[from] crate::PqRatchetError),

    /// A storage backend failed; the message says which operation.
    #[error("storage: {0}")]
    Storage(String),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
