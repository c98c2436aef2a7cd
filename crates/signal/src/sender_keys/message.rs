//! The two sender key wire formats, byte for byte as libsignal writes them.
//!
//! ```text
//! SenderKeyMessage             = 0x33 || protobuf SenderKeyMessage || signature(64)
//! SenderKeyDistributionMessage = 0x33 || protobuf SenderKeyDistributionMessage
//! 0x33                         = (message version 3 << 4) | current version 3
//! signature                    = XEdDSA(signing key, 0x33 || protobuf)
//! ```
//!
//! Parsing is stricter than libsignal's in two ways, neither of which refuses
//! anything libsignal writes: the version byte must be exactly `0x33`
//! (libsignal ignores its low nibble), and the protobuf must be encoded
//! exactly as libsignal (prost) encodes it — every field present, in tag
//! order, minimal varints, nothing unknown, nothing repeated, nothing
//! trailing. A parsed message therefore serializes back to the very bytes it
//! came from.

use std::fmt;

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::SENDER_KEY_MESSAGE_VERSION;
use super::chain::CHAIN_KEY_LENGTH;
use crate::curve::{PUBLIC_KEY_LENGTH, PrivateKey, PublicKey, SIGNATURE_LENGTH};
use crate::error::{Error, Result};
use crate::proto;

/// The version byte of both formats.
const VERSION_BYTE: u8 = (SENDER_KEY_MESSAGE_VERSION << 4) | SENDER_KEY_MESSAGE_VERSION;

/// libsignal's minimum length of a distribution message: a version byte, a
/// chain key and a public key's worth of bytes.
const MIN_DISTRIBUTION_LENGTH: usize = 1 + 32 + 32;

/// Checks the version byte: the high nibble is the message version, the low
/// nibble the sender's current version; both must be 3.
fn check_version(byte: u8) -> Result<()> {
    let version = byte >> 4;
    if version < SENDER_KEY_MESSAGE_VERSION {
        return Err(Error::LegacyVersion(version));
    }
    if version > SENDER_KEY_MESSAGE_VERSION {
        return Err(Error::UnrecognizedVersion(version));
    }
    if byte != VERSION_BYTE {
        return Err(Error::UnrecognizedVersion(byte & 0x0f));
    }
    Ok(())
}

fn distribution_id(bytes: Option<&Vec<u8>>, message: &'static str) -> Result<Uuid> {
    let bytes = bytes.ok_or(Error::MissingField {
        message,
        field: "distribution_uuid",
    })?;
    Uuid::from_slice(bytes).map_err(|_| Error::InvalidProtobuf(message))
}

/// A group message: a sender chain's ciphertext, signed by the chain's
/// signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKeyMessage {
    distribution_id: Uuid,
    chain_id: u32,
    iteration: u32,
    ciphertext: Vec<u8>,
    serialized: Vec<u8>,
}

impl SenderKeyMessage {
    const NAME: &'static str = "SenderKeyMessage";

    /// Builds and signs a message. [`group_encrypt`](super::group_encrypt)
    /// is the usual way to get one; this is for callers that keep sender
    /// chains themselves.
    pub fn new<R: RngCore + CryptoRng>(
        distribution_id: Uuid,
        chain_id: u32,
        iteration: u32,
        ciphertext: Vec<u8>,
        signing_key: &PrivateKey,
        rng: &mut R,
    ) -> Self {
        let body = proto::SenderKeyMessage {
            distribution_uuid: Some(distribution_id.as_bytes().to_vec()),
            chain_id: Some(chain_id),
            iteration: Some(iteration),
            ciphertext: Some(ciphertext),
        };
        let mut serialized = Vec::with_capacity(1 + body.encoded_len() + SIGNATURE_LENGTH);
        serialized.push(VERSION_BYTE);
        body.encode_raw(&mut serialized);
        let signature = signing_key.sign(rng, &[&serialized]);
        serialized.extend_from_slice(&signature);
        Self {
            distribution_id,
            chain_id,
            iteration,
            ciphertext: body.ciphertext.unwrap_or_default(),
            serialized,
        }
    }

    /// Parses a serialized message. The signature is checked later, against
    /// the key of the chain the message names.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 1 + SIGNATURE_LENGTH {
            return Err(Error::MessageTooShort(bytes.len()));
        }
        check_version(bytes[0])?;
        let encoded = &bytes[1..bytes.len() - SIGNATURE_LENGTH];
        let body = proto::SenderKeyMessage::decode(encoded)
            .map_err(|_| Error::InvalidProtobuf(Self::NAME))?;
        let missing = |field| Error::MissingField {
            message: Self::NAME,
            field,
        };
        let distribution_id = distribution_id(body.distribution_uuid.as_ref(), Self::NAME)?;
        let chain_id = body.chain_id.ok_or(missing("chain_id"))?;
        let iteration = body.iteration.ok_or(missing("iteration"))?;
        if body.ciphertext.is_none() {
            return Err(missing("ciphertext"));
        }
        if body.encoded_len() != encoded.len() || body.encode_to_vec() != encoded {
            return Err(Error::InvalidProtobuf(Self::NAME));
        }
        Ok(Self {
            distribution_id,
            chain_id,
            iteration,
            ciphertext: body.ciphertext.unwrap_or_default(),
            serialized: bytes.to_vec(),
        })
    }

    /// The message version: [`SENDER_KEY_MESSAGE_VERSION`].
    pub fn message_version(&self) -> u8 {
        SENDER_KEY_MESSAGE_VERSION
    }

    /// The distribution (group) the message belongs to.
    pub fn distribution_id(&self) -> Uuid {
        self.distribution_id
    }

    /// The sender chain the message was encrypted on.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The message's iteration in its chain.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The AES-256-CBC ciphertext.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The serialized message, signature included.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    /// Whether the signature verifies with the chain's signing key.
    pub fn verify_signature(&self, signing_key: &PublicKey) -> bool {
        let (content, signature) = self
            .serialized
            .split_at(self.serialized.len() - SIGNATURE_LENGTH);
        signing_key.verify(&[content], signature)
    }
}

impl TryFrom<&[u8]> for SenderKeyMessage {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::deserialize(bytes)
    }
}

impl AsRef<[u8]> for SenderKeyMessage {
    fn as_ref(&self) -> &[u8] {
        &self.serialized
    }
}

impl fmt::Debug for SenderKeyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyMessage")
            .field("distribution_id", &self.distribution_id)
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// What a member sends each other member (over 1:1 sessions) so that they
/// can decrypt its messages to a distribution: the chain id, the chain key
/// at its current iteration, and the public signing key.
///
/// The chain key is secret, and so is the serialized form that carries it:
/// both are zeroized on drop, compared in constant time, and left out of
/// `Debug`.
#[derive(Clone)]
pub struct SenderKeyDistributionMessage {
    distribution_id: Uuid,
    chain_id: u32,
    iteration: u32,
    chain_key: Zeroizing<[u8; CHAIN_KEY_LENGTH]>,
    signing_key: PublicKey,
    serialized: Zeroizing<Vec<u8>>,
}

impl SenderKeyDistributionMessage {
    const NAME: &'static str = "SenderKeyDistributionMessage";

    /// Builds a distribution message.
    /// [`create_sender_key_distribution_message`](super::create_sender_key_distribution_message)
    /// is the usual way to get one.
    pub fn new(
        distribution_id: Uuid,
        chain_id: u32,
        iteration: u32,
        chain_key: &[u8; CHAIN_KEY_LENGTH],
        signing_key: PublicKey,
    ) -> Self {
        let mut body = proto::SenderKeyDistributionMessage {
            distribution_uuid: Some(distribution_id.as_bytes().to_vec()),
            chain_id: Some(chain_id),
            iteration: Some(iteration),
            chain_key: Some(chain_key.to_vec()),
            signing_key: Some(signing_key.serialize().to_vec()),
        };
        let mut serialized = Zeroizing::new(Vec::with_capacity(1 + body.encoded_len()));
        serialized.push(VERSION_BYTE);
        body.encode_raw(&mut *serialized);
        wipe_distribution(&mut body);
        Self {
            distribution_id,
            chain_id,
            iteration,
            chain_key: Zeroizing::new(*chain_key),
            signing_key,
            serialized,
        }
    }

    /// Parses and checks a serialized distribution message.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MIN_DISTRIBUTION_LENGTH {
            return Err(Error::MessageTooShort(bytes.len()));
        }
        check_version(bytes[0])?;
        let encoded = &bytes[1..];
        let mut body = proto::SenderKeyDistributionMessage::decode(encoded)
            .map_err(|_| Error::InvalidProtobuf(Self::NAME))?;
        let parsed = Self::from_body(&body, encoded);
        wipe_distribution(&mut body);
        let (distribution_id, chain_id, iteration, chain_key, signing_key) = parsed?;
        Ok(Self {
            distribution_id,
            chain_id,
            iteration,
            chain_key,
            signing_key,
            serialized: Zeroizing::new(bytes.to_vec()),
        })
    }

    #[allow(clippy::type_complexity)]
    fn from_body(
        body: &proto::SenderKeyDistributionMessage,
        encoded: &[u8],
    ) -> Result<(Uuid, u32, u32, Zeroizing<[u8; CHAIN_KEY_LENGTH]>, PublicKey)> {
        let missing = |field| Error::MissingField {
            message: Self::NAME,
            field,
        };
        let distribution_id = distribution_id(body.distribution_uuid.as_ref(), Self::NAME)?;
        let chain_id = body.chain_id.ok_or(missing("chain_id"))?;
        let iteration = body.iteration.ok_or(missing("iteration"))?;
        let chain_key = body.chain_key.as_ref().ok_or(missing("chain_key"))?;
        let signing_key = body.signing_key.as_ref().ok_or(missing("signing_key"))?;
        let chain_key: [u8; CHAIN_KEY_LENGTH] = chain_key
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidProtobuf(Self::NAME))?;
        let chain_key = Zeroizing::new(chain_key);
        if signing_key.len() != PUBLIC_KEY_LENGTH {
            return Err(Error::InvalidProtobuf(Self::NAME));
        }
        let signing_key = PublicKey::deserialize(signing_key)?;
        if body.encoded_len() != encoded.len() {
            return Err(Error::InvalidProtobuf(Self::NAME));
        }
        let canonical = {
            let mut again = Zeroizing::new(Vec::with_capacity(encoded.len()));
            body.encode_raw(&mut *again);
            bool::from(again.as_slice().ct_eq(encoded))
        };
        if !canonical {
            return Err(Error::InvalidProtobuf(Self::NAME));
        }
        Ok((distribution_id, chain_id, iteration, chain_key, signing_key))
    }

    /// The message version: [`SENDER_KEY_MESSAGE_VERSION`].
    pub fn message_version(&self) -> u8 {
        SENDER_KEY_MESSAGE_VERSION
    }

    /// The distribution (group) the sender key is for.
    pub fn distribution_id(&self) -> Uuid {
        self.distribution_id
    }

    /// The sender chain's id.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The iteration of the chain key: the first message it can decrypt.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The chain key. Secret.
    pub fn chain_key(&self) -> &[u8; CHAIN_KEY_LENGTH] {
        &self.chain_key
    }

    /// The public key that signs the chain's messages.
    pub fn signing_key(&self) -> &PublicKey {
        &self.signing_key
    }

    /// The serialized message. Secret: it carries the chain key.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

fn wipe_distribution(body: &mut proto::SenderKeyDistributionMessage) {
    use zeroize::Zeroize as _;
    if let Some(chain_key) = body.chain_key.as_mut() {
        chain_key.zeroize();
    }
}

impl TryFrom<&[u8]> for SenderKeyDistributionMessage {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::deserialize(bytes)
    }
}

impl AsRef<[u8]> for SenderKeyDistributionMessage {
    fn as_ref(&self) -> &[u8] {
        &self.serialized
    }
}

impl PartialEq for SenderKeyDistributionMessage {
    /// Compares the serialized forms, which determine every field, in
    /// constant time.
    fn eq(&self, other: &Self) -> bool {
        self.serialized
            .as_slice()
            .ct_eq(other.serialized.as_slice())
            .into()
    }
}

impl Eq for SenderKeyDistributionMessage {}

impl fmt::Debug for SenderKeyDistributionMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyDistributionMessage")
            .field("distribution_id", &self.distribution_id)
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration)
            .field("signing_key", &self.signing_key)
            .finish_non_exhaustive()
    }
}
