//! Identity keys: the long-term Curve25519 key of a device.

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};

use crate::curve::{KeyPair, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::proto;

/// A fresh registration id: libsignal's 14-bit range, 1 to 16380. A device
/// picks one when it registers; a peer seeing a new one knows the device was
/// reinstalled.
pub fn generate_registration_id<R: RngCore + CryptoRng>(rng: &mut R) -> u32 {
    1 + rng.next_u32() % 16380
}

/// The public identity key of a device, serialized like any Curve25519 key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey(PublicKey);

impl IdentityKey {
    /// Wraps a public key.
    pub fn new(key: PublicKey) -> Self {
        Self(key)
    }

    /// Decodes a 33-byte serialized key.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        PublicKey::deserialize(bytes).map(Self)
    }

    /// The 33-byte serialized key.
    pub fn serialize(&self) -> [u8; 33] {
        self.0.serialize()
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }
}

/// A device's identity key pair.
#[derive(Clone, Debug)]
pub struct IdentityKeyPair {
    identity: IdentityKey,
    private: PrivateKey,
}

impl IdentityKeyPair {
    /// A fresh identity.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::from(KeyPair::generate(rng))
    }

    /// The public identity key.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.identity.public_key()
    }

    /// The private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }

    /// Signs the concatenation of `message` parts with XEdDSA.
    pub fn sign<R: RngCore + CryptoRng>(&self, rng: &mut R, message: &[&[u8]]) -> [u8; 64] {
        self.private.sign(rng, message)
    }

    /// libsignal's stored form (the `IdentityKeyPairStructure` protobuf).
    pub fn serialize(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let msg = proto::IdentityKeyPairStructure {
            public_key: self.identity.serialize().to_vec(),
            private_key: self.private.serialize().to_vec(),
        };
        zeroize::Zeroizing::new(msg.encode_to_vec())
    }

    /// Decodes the stored form.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let msg = proto::IdentityKeyPairStructure::decode(bytes)
            .map_err(|_| Error::InvalidRecord("identity key pair"))?;
        let private = zeroize::Zeroizing::new(msg.private_key);
        let private = PrivateKey::deserialize(&private)?;
        let identity = IdentityKey::deserialize(&msg.public_key)?;
        if private.public_key() != *identity.public_key() {
            return Err(Error::InvalidRecord("identity key pair"));
        }
        Ok(Self { identity, private })
    }
}

impl From<KeyPair> for IdentityKeyPair {
    fn from(pair: KeyPair) -> Self {
        Self {
            identity: IdentityKey(pair.public),
            private: pair.private,
        }
    }
}
