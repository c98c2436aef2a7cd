//! Prekeys: one-time, signed and Kyber prekeys, and the bundle a peer
//! fetches to start a session.
//!
//! Records are stored in libsignal's formats (`PreKeyRecordStructure`, and
//! `SignedPreKeyRecordStructure` for both signed and Kyber prekeys), so a
//! device's keys can move between the two implementations.

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};

use crate::DeviceId;
use crate::curve::{KeyPair, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kem::{KemKeyPair, KemPublicKey, KemSecretKey};
use crate::proto;

/// The id of a one-time Curve25519 prekey.
pub type PreKeyId = u32;
/// The id of a signed Curve25519 prekey.
pub type SignedPreKeyId = u32;
/// The id of a signed Kyber prekey.
pub type KyberPreKeyId = u32;

/// A one-time Curve25519 prekey.
#[derive(Clone, Debug)]
pub struct PreKeyRecord {
    /// Its id.
    pub id: PreKeyId,
    /// The key pair.
    pub key_pair: KeyPair,
}

impl PreKeyRecord {
    /// A fresh prekey.
    pub fn generate<R: RngCore + CryptoRng>(id: PreKeyId, rng: &mut R) -> Self {
        Self {
            id,
            key_pair: KeyPair::generate(rng),
        }
    }

    /// libsignal's stored form.
    pub fn serialize(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(
            proto::PreKeyRecordStructure {
                id: self.id,
                public_key: self.key_pair.public.serialize().to_vec(),
                private_key: self.key_pair.private.serialize().to_vec(),
            }
            .encode_to_vec(),
        )
    }

    /// Decodes the stored form.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let msg = proto::PreKeyRecordStructure::decode(bytes)
            .map_err(|_| Error::InvalidRecord("prekey"))?;
        let private = zeroize::Zeroizing::new(msg.private_key);
        Ok(Self {
            id: msg.id,
            key_pair: key_pair(&msg.public_key, &private, "prekey")?,
        })
    }
}

fn key_pair(public: &[u8], private: &[u8], what: &'static str) -> Result<KeyPair> {
    let pair = KeyPair::from_private(PrivateKey::deserialize(private)?);
    if pair.public != PublicKey::deserialize(public)? {
        return Err(Error::InvalidRecord(what));
    }
    Ok(pair)
}

/// A signed Curve25519 prekey: medium-term, replaced every few days.
#[derive(Clone, Debug)]
pub struct SignedPreKeyRecord {
    /// Its id.
    pub id: SignedPreKeyId,
    /// When it was made, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The key pair.
    pub key_pair: KeyPair,
    /// The identity key's XEdDSA signature over the serialized public key.
    pub signature: [u8; 64],
}

impl SignedPreKeyRecord {
    /// A fresh signed prekey.
    pub fn generate<R: RngCore + CryptoRng>(
        id: SignedPreKeyId,
        timestamp: u64,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        let key_pair = KeyPair::generate(rng);
        let signature = identity.sign(rng, &[&key_pair.public.serialize()]);
        Self {
            id,
            timestamp,
            key_pair,
            signature,
        }
    }

    /// libsignal's stored form.
    pub fn serialize(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(
            proto::SignedPreKeyRecordStructure {
                id: self.id,
                public_key: self.key_pair.public.serialize().to_vec(),
                private_key: self.key_pair.private.serialize().to_vec(),
                signature: self.signature.to_vec(),
                timestamp: self.timestamp,
            }
            .encode_to_vec(),
        )
    }

    /// Decodes the stored form.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let msg = proto::SignedPreKeyRecordStructure::decode(bytes)
            .map_err(|_| Error::InvalidRecord("signed prekey"))?;
        let private = zeroize::Zeroizing::new(msg.private_key);
        Ok(Self {
            id: msg.id,
            timestamp: msg.timestamp,
            key_pair: key_pair(&msg.public_key, &private, "signed prekey")?,
            signature: msg
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidRecord("signed prekey"))?,
        })
    }
}

/// A signed Kyber1024 prekey. Devices keep a last-resort one that is used
/// again and again, beside one-time ones.
#[derive(Clone, Debug)]
pub struct KyberPreKeyRecord {
    /// Its id.
    pub id: KyberPreKeyId,
    /// When it was made, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The key pair.
    pub key_pair: KemKeyPair,
    /// The identity key's XEdDSA signature over the serialized public key.
    pub signature: [u8; 64],
}

impl KyberPreKeyRecord {
    /// A fresh Kyber prekey.
    pub fn generate<R: RngCore + CryptoRng>(
        id: KyberPreKeyId,
        timestamp: u64,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Self {
        let key_pair = KemKeyPair::generate(rng);
        let signature = identity.sign(rng, &[&key_pair.public.serialize()]);
        Self {
            id,
            timestamp,
            key_pair,
            signature,
        }
    }

    /// libsignal's stored form.
    pub fn serialize(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(
            proto::SignedPreKeyRecordStructure {
                id: self.id,
                public_key: self.key_pair.public.serialize(),
                private_key: self.key_pair.secret.serialize().to_vec(),
                signature: self.signature.to_vec(),
                timestamp: self.timestamp,
            }
            .encode_to_vec(),
        )
    }

    /// Decodes the stored form.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let msg = proto::SignedPreKeyRecordStructure::decode(bytes)
            .map_err(|_| Error::InvalidRecord("Kyber prekey"))?;
        let secret = zeroize::Zeroizing::new(msg.private_key);
        Ok(Self {
            id: msg.id,
            timestamp: msg.timestamp,
            key_pair: KemKeyPair {
                public: KemPublicKey::deserialize(&msg.public_key)?,
                secret: KemSecretKey::deserialize(&secret)?,
            },
            signature: msg
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidRecord("Kyber prekey"))?,
        })
    }
}

/// What a device publishes so that others can start a session with it
/// without it being online.
#[derive(Clone, Debug)]
pub struct PreKeyBundle {
    /// The device's registration id.
    pub registration_id: u32,
    /// The device id.
    pub device_id: DeviceId,
    /// A one-time prekey, when the device had one left.
    pub pre_key: Option<(PreKeyId, PublicKey)>,
    /// The signed prekey's id.
    pub signed_pre_key_id: SignedPreKeyId,
    /// The signed prekey.
    pub signed_pre_key: PublicKey,
    /// Its signature by the identity key.
    pub signed_pre_key_signature: Vec<u8>,
    /// The Kyber prekey's id.
    pub kyber_pre_key_id: KyberPreKeyId,
    /// The Kyber prekey.
    pub kyber_pre_key: KemPublicKey,
    /// Its signature by the identity key.
    pub kyber_pre_key_signature: Vec<u8>,
    /// The device's identity key.
    pub identity_key: IdentityKey,
}

impl PreKeyBundle {
    /// Checks both prekey signatures against the identity key.
    pub fn verify_signatures(&self) -> Result<()> {
        let identity = self.identity_key.public_key();
        if !identity.verify(
            &[&self.signed_pre_key.serialize()],
            &self.signed_pre_key_signature,
        ) {
            return Err(Error::BadSignature("signed prekey"));
        }
        if !identity.verify(
            &[&self.kyber_pre_key.serialize()],
            &self.kyber_pre_key_signature,
        ) {
            return Err(Error::BadSignature("Kyber prekey"));
        }
        Ok(())
    }
}
