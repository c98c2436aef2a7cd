//! The 1:1 message formats, byte for byte as libsignal puts them on the wire.
//!
//! ```text
//! SignalMessage       = version(1) || protobuf SignalMessage || mac(8)
//! PreKeySignalMessage = version(1) || protobuf PreKeySignalMessage
//! version             = (message version << 4) | current version   (0x44 today)
//! mac                 = HMAC-SHA256(mac key, sender identity(33) || receiver identity(33)
//!                                            || version || protobuf)[..8]
//! addresses (field 6) = sender service id(17) || sender device(1)
//!                       || recipient service id(17) || recipient device(1)
//! service id          = kind(1: 0x00 ACI, 0x01 PNI) || UUID(16)
//! ```
//!
//! The `addresses` field (libsignal 0.91 and later) binds a message to its
//! sender and recipient devices under the MAC. It is written in the
//! SignalMessage inside a PreKeySignalMessage, and only when both addresses
//! are named by service ids (a hyphenated UUID, or `PNI:` and one) with a
//! device id libsignal allows (1 to 127). A receiver that finds the field
//! refuses the message unless it matches its own view of both addresses; a
//! message without it is accepted, as older senders never write it.
//!
//! A PreKeySignalMessage wraps the first SignalMessages of a session, until
//! the recipient answers: it carries what the recipient needs to build the
//! session (the sender's identity and base key, the prekey ids, the Kyber
//! ciphertext).

use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::address::ProtocolAddress;
use crate::curve::PublicKey;
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::prekeys::{KyberPreKeyId, PreKeyId, SignedPreKeyId};
use crate::proto;

/// The message version this crate speaks: PQXDH sessions.
pub const CURRENT_VERSION: u8 = 4;
/// The X3DH version that libsignal no longer accepts.
const PRE_KYBER_VERSION: u8 = 3;
const MAC_LENGTH: usize = 8;
/// The largest device id libsignal allows (its `DeviceId`).
const MAX_BOUND_DEVICE_ID: u32 = 127;
/// A service id's fixed-width binary form: kind byte, then the UUID.
const SERVICE_ID_LENGTH: usize = 17;
const ADDRESSES_LENGTH: usize = 2 * (SERVICE_ID_LENGTH + 1);

/// The fixed-width binary form of a service id named the way libsignal
/// parses it: a hyphenated UUID (case-insensitive) is an ACI, `PNI:` and
/// one is a PNI. Any other name is not a service id.
pub(crate) fn service_id(name: &str) -> Option<[u8; SERVICE_ID_LENGTH]> {
    let (kind, uuid) = match name.strip_prefix("PNI:") {
        Some(rest) => (1u8, rest),
        None => (0u8, name),
    };
    // `Uuid::try_parse` also takes the simple, braced and URN forms.
    if uuid.len() != uuid::fmt::Hyphenated::LENGTH {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(uuid).ok()?;
    let mut out = [0u8; SERVICE_ID_LENGTH];
    out[0] = kind;
    out[1..].copy_from_slice(uuid.as_bytes());
    Some(out)
}

/// The `addresses` binding of a message from `sender` to `recipient`, or
/// `None` when either is not a service id with a device id libsignal allows.
pub(crate) fn address_binding(
    sender: &ProtocolAddress,
    recipient: &ProtocolAddress,
) -> Option<[u8; ADDRESSES_LENGTH]> {
    let device = |address: &ProtocolAddress| {
        u8::try_from(address.device_id())
            .ok()
            .filter(|&d| d != 0 && u32::from(d) <= MAX_BOUND_DEVICE_ID)
    };
    let mut out = [0u8; ADDRESSES_LENGTH];
    let (from, to) = out.split_at_mut(SERVICE_ID_LENGTH + 1);
    from[..SERVICE_ID_LENGTH].copy_from_slice(&service_id(sender.name())?);
    from[SERVICE_ID_LENGTH] = device(sender)?;
    to[..SERVICE_ID_LENGTH].copy_from_slice(&service_id(recipient.name())?);
    to[SERVICE_ID_LENGTH] = device(recipient)?;
    Some(out)
}

/// The type number of a message, as Signal clients label envelopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// A [`SignalMessage`].
    Whisper = 2,
    /// A [`PreKeySignalMessage`].
    PreKey = 3,
    /// A sender-key group message.
    SenderKey = 7,
}

/// Checks the version byte shared by the 1:1 formats.
fn check_version(byte: u8) -> Result<u8> {
    let version = byte >> 4;
    if version <= PRE_KYBER_VERSION {
        return Err(Error::LegacyVersion(version));
    }
    if version > CURRENT_VERSION {
        return Err(Error::UnrecognizedVersion(version));
    }
    Ok(version)
}

fn version_byte(version: u8) -> u8 {
    (version << 4) | CURRENT_VERSION
}

/// A Double Ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalMessage {
    version: u8,
    ratchet_key: PublicKey,
    counter: u32,
    previous_counter: u32,
    ciphertext: Vec<u8>,
    pq_ratchet: Vec<u8>,
    addresses: Option<Vec<u8>>,
    serialized: Vec<u8>,
}

impl SignalMessage {
    /// Builds and MACs a message.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mac_key: &[u8; 32],
        ratchet_key: PublicKey,
        counter: u32,
        previous_counter: u32,
        ciphertext: Vec<u8>,
        pq_ratchet: Vec<u8>,
        addresses: Option<[u8; ADDRESSES_LENGTH]>,
        sender_identity: &IdentityKey,
        receiver_identity: &IdentityKey,
    ) -> Self {
        let addresses = addresses.map(|a| a.to_vec());
        let body = proto::SignalMessage {
            ratchet_key: Some(ratchet_key.serialize().to_vec()),
            counter: Some(counter),
            previous_counter: Some(previous_counter),
            ciphertext: Some(ciphertext.clone()),
            pq_ratchet: (!pq_ratchet.is_empty()).then(|| pq_ratchet.clone()),
            addresses: addresses.clone(),
        };
        let mut serialized = Vec::with_capacity(1 + body.encoded_len() + MAC_LENGTH);
        serialized.push(version_byte(CURRENT_VERSION));
        body.encode_raw(&mut serialized);
        let mac = compute_mac(mac_key, sender_identity, receiver_identity, &serialized);
        serialized.extend_from_slice(&mac);
        Self {
            version: CURRENT_VERSION,
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            pq_ratchet,
            addresses,
            serialized,
        }
    }

    /// Parses a serialized message. The MAC is checked later, by the session
    /// that finds the key.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 1 + MAC_LENGTH {
            return Err(Error::MessageTooShort(bytes.len()));
        }
        let version = check_version(bytes[0])?;
        let body = proto::SignalMessage::decode(&bytes[1..bytes.len() - MAC_LENGTH])
            .map_err(|_| Error::InvalidProtobuf("SignalMessage"))?;
        let missing = |field| Error::MissingField {
            message: "SignalMessage",
            field,
        };
        let ratchet_key = body.ratchet_key.ok_or(missing("ratchet_key"))?;
        Ok(Self {
            version,
            ratchet_key: PublicKey::deserialize(&ratchet_key)?,
            counter: body.counter.ok_or(missing("counter"))?,
            previous_counter: body.previous_counter.unwrap_or(0),
            ciphertext: body.ciphertext.ok_or(missing("ciphertext"))?,
            pq_ratchet: body.pq_ratchet.unwrap_or_default(),
            addresses: body.addresses,
            serialized: bytes.to_vec(),
        })
    }

    /// The message version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The sender's current ratchet key.
    pub fn ratchet_key(&self) -> &PublicKey {
        &self.ratchet_key
    }

    /// The message's index in the sender's chain.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The length of the sender's previous chain.
    pub fn previous_counter(&self) -> u32 {
        self.previous_counter
    }

    /// The AES-CBC ciphertext.
    pub fn body(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The post-quantum ratchet's payload (empty when it is not in use).
    pub fn pq_ratchet(&self) -> &[u8] {
        &self.pq_ratchet
    }

    /// The sender and recipient addresses the message is bound to, as sent
    /// (see the module documentation); `None` when the sender bound none.
    pub fn addresses(&self) -> Option<&[u8]> {
        self.addresses.as_deref()
    }

    /// The serialized message.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    /// Checks the address binding, if the message has one, against our view
    /// of who sent it (`sender`) and who receives it (`recipient`). Like
    /// libsignal, a binding is refused when our own view cannot be written
    /// as one (names that are not service ids).
    pub(crate) fn check_addresses(
        &self,
        sender: &ProtocolAddress,
        recipient: &ProtocolAddress,
    ) -> Result<()> {
        let Some(theirs) = &self.addresses else {
            return Ok(());
        };
        let misaddressed = || Error::MisaddressedMessage {
            sender: sender.clone(),
            recipient: recipient.clone(),
        };
        let ours = address_binding(sender, recipient).ok_or_else(misaddressed)?;
        if bool::from(ours.as_slice().ct_eq(theirs.as_slice())) {
            Ok(())
        } else {
            Err(misaddressed())
        }
    }

    /// Checks the MAC in constant time.
    pub(crate) fn verify_mac(
        &self,
        mac_key: &[u8; 32],
        sender_identity: &IdentityKey,
        receiver_identity: &IdentityKey,
    ) -> bool {
        let (content, theirs) = self.serialized.split_at(self.serialized.len() - MAC_LENGTH);
        let ours = compute_mac(mac_key, sender_identity, receiver_identity, content);
        ours.ct_eq(theirs).into()
    }
}

fn compute_mac(
    mac_key: &[u8; 32],
    sender_identity: &IdentityKey,
    receiver_identity: &IdentityKey,
    content: &[u8],
) -> [u8; MAC_LENGTH] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&sender_identity.serialize());
    mac.update(&receiver_identity.serialize());
    mac.update(content);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; MAC_LENGTH];
    out.copy_from_slice(&full[..MAC_LENGTH]);
    out
}

/// The first messages of a session: a [`SignalMessage`] with what the
/// recipient needs to build the session from its prekeys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeySignalMessage {
    version: u8,
    registration_id: u32,
    pre_key_id: Option<PreKeyId>,
    signed_pre_key_id: SignedPreKeyId,
    kyber_pre_key_id: KyberPreKeyId,
    kyber_ciphertext: Vec<u8>,
    base_key: PublicKey,
    identity_key: IdentityKey,
    message: SignalMessage,
    serialized: Vec<u8>,
}

impl PreKeySignalMessage {
    /// Wraps `message` with the session's setup.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        registration_id: u32,
        pre_key_id: Option<PreKeyId>,
        signed_pre_key_id: SignedPreKeyId,
        kyber_pre_key_id: KyberPreKeyId,
        kyber_ciphertext: Vec<u8>,
        base_key: PublicKey,
        identity_key: IdentityKey,
        message: SignalMessage,
    ) -> Self {
        let body = proto::PreKeySignalMessage {
            registration_id: Some(registration_id),
            pre_key_id,
            signed_pre_key_id: Some(signed_pre_key_id),
            kyber_pre_key_id: Some(kyber_pre_key_id),
            kyber_ciphertext: Some(kyber_ciphertext.clone()),
            base_key: Some(base_key.serialize().to_vec()),
            identity_key: Some(identity_key.serialize().to_vec()),
            message: Some(message.serialized.clone()),
        };
        let mut serialized = Vec::with_capacity(1 + body.encoded_len());
        serialized.push(version_byte(CURRENT_VERSION));
        body.encode_raw(&mut serialized);
        Self {
            version: CURRENT_VERSION,
            registration_id,
            pre_key_id,
            signed_pre_key_id,
            kyber_pre_key_id,
            kyber_ciphertext,
            base_key,
            identity_key,
            message,
            serialized,
        }
    }

    /// Parses a serialized message.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let (&first, rest) = bytes.split_first().ok_or(Error::MessageTooShort(0))?;
        let version = check_version(first)?;
        let body = proto::PreKeySignalMessage::decode(rest)
            .map_err(|_| Error::InvalidProtobuf("PreKeySignalMessage"))?;
        let missing = |field| Error::MissingField {
            message: "PreKeySignalMessage",
            field,
        };
        let base_key = body.base_key.ok_or(missing("base_key"))?;
        let identity_key = body.identity_key.ok_or(missing("identity_key"))?;
        let message = body.message.ok_or(missing("message"))?;
        let signed_pre_key_id = body.signed_pre_key_id.ok_or(missing("signed_pre_key_id"))?;
        let kyber_pre_key_id = body.kyber_pre_key_id.ok_or(missing("kyber_pre_key_id"))?;
        let kyber_ciphertext = body.kyber_ciphertext.ok_or(missing("kyber_ciphertext"))?;
        let message = SignalMessage::deserialize(&message)?;
        if message.version != version {
            return Err(Error::UnrecognizedVersion(message.version));
        }
        Ok(Self {
            version,
            registration_id: body.registration_id.unwrap_or(0),
            pre_key_id: body.pre_key_id,
            signed_pre_key_id,
            kyber_pre_key_id,
            kyber_ciphertext,
            base_key: PublicKey::deserialize(&base_key)?,
            identity_key: IdentityKey::deserialize(&identity_key)?,
            message,
            serialized: bytes.to_vec(),
        })
    }

    /// The message version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The sender's registration id.
    pub fn registration_id(&self) -> u32 {
        self.registration_id
    }

    /// The one-time prekey used, if any.
    pub fn pre_key_id(&self) -> Option<PreKeyId> {
        self.pre_key_id
    }

    /// The signed prekey used.
    pub fn signed_pre_key_id(&self) -> SignedPreKeyId {
        self.signed_pre_key_id
    }

    /// The Kyber prekey used.
    pub fn kyber_pre_key_id(&self) -> KyberPreKeyId {
        self.kyber_pre_key_id
    }

    /// The Kyber ciphertext (type byte first).
    pub fn kyber_ciphertext(&self) -> &[u8] {
        &self.kyber_ciphertext
    }

    /// The sender's base key: it names the session.
    pub fn base_key(&self) -> &PublicKey {
        &self.base_key
    }

    /// The sender's identity key.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }

    /// The wrapped message.
    pub fn message(&self) -> &SignalMessage {
        &self.message
    }

    /// The serialized message.
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

/// What encrypting for a peer device gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiphertextMessage {
    /// A message in an established session.
    Signal(SignalMessage),
    /// A message that also sets up the session.
    PreKey(PreKeySignalMessage),
}

impl CiphertextMessage {
    /// Parses a message of the given type.
    pub fn deserialize(message_type: u8, bytes: &[u8]) -> Result<Self> {
        match message_type {
            2 => SignalMessage::deserialize(bytes).map(Self::Signal),
            3 => PreKeySignalMessage::deserialize(bytes).map(Self::PreKey),
            other => Err(Error::UnexpectedMessageType(other)),
        }
    }

    /// The type number.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Signal(_) => MessageType::Whisper,
            Self::PreKey(_) => MessageType::PreKey,
        }
    }

    /// The serialized message.
    pub fn serialized(&self) -> &[u8] {
        match self {
            Self::Signal(m) => m.serialized(),
            Self::PreKey(m) => m.serialized(),
        }
    }
}
