//! Curve25519 keys: X25519 agreement and XEdDSA signatures.
//!
//! A public key is serialized as libsignal does it: the type byte `0x05`
//! followed by the 32-byte Montgomery u-coordinate (33 bytes in all).
//!
//! Signatures are XEdDSA (<https://signal.org/docs/specifications/xeddsa/>)
//! with libsignal's one variation: the sign bit of the Edwards form of the
//! signer's key is not forced to zero but carried in the top bit of the
//! signature's last byte, which is otherwise always zero.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The type byte of a Curve25519 key on the wire.
pub const DJB_TYPE: u8 = 0x05;
/// The length of a serialized public key, type byte included.
pub const PUBLIC_KEY_LENGTH: usize = 33;
/// The length of an XEdDSA signature.
pub const SIGNATURE_LENGTH: usize = 64;

/// A Curve25519 public key.
#[derive(Clone, Copy, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Decodes a 33-byte serialized key (type byte `0x05` first). Trailing
    /// bytes are refused.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let (&key_type, rest) = bytes.split_first().ok_or(Error::NoKeyType)?;
        if key_type != DJB_TYPE {
            return Err(Error::BadKeyType(key_type));
        }
        let raw: [u8; 32] = rest.try_into().map_err(|_| Error::BadKeyLength {
            key_type,
            len: bytes.len(),
        })?;
        Ok(Self(raw))
    }

    /// A key from its raw 32-byte u-coordinate (no type byte).
    pub fn from_raw(raw: [u8; 32]) -> Self {
        Self(raw)
    }

    /// The 33-byte serialized form, type byte first.
    pub fn serialize(&self) -> [u8; PUBLIC_KEY_LENGTH] {
        let mut out = [0u8; PUBLIC_KEY_LENGTH];
        out[0] = DJB_TYPE;
        out[1..].copy_from_slice(&self.0);
        out
    }

    /// The raw 32-byte u-coordinate.
    pub fn raw(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether the u-coordinate is encoded canonically: below 2^255 - 19,
    /// with the unused top bit clear.
    pub fn is_canonical(&self) -> bool {
        let b = &self.0;
        if b[31] & 0x80 != 0 {
            return false;
        }
        let at_least_p = b[31] == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed;
        !at_least_p
    }

    /// Verifies an XEdDSA signature over the concatenation of `message` parts.
    pub fn verify(&self, message: &[&[u8]], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; SIGNATURE_LENGTH]>::try_from(signature) else {
            return false;
        };
        let sign_bit = signature[63] >> 7;
        let Some(a) = MontgomeryPoint(self.0).to_edwards(sign_bit) else {
            return false;
        };
        let cap_r: [u8; 32] = signature[..32].try_into().unwrap_or_default();
        let mut s: [u8; 32] = signature[32..].try_into().unwrap_or_default();
        s[31] &= 0x7f;
        // s must be reduced: its top three bits clear, as in libsignal.
        if s[31] & 0xe0 != 0 {
            return false;
        }
        let h = challenge(&cap_r, a.compress().as_bytes(), message);
        let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(
            &h,
            &-a,
            &Scalar::from_bytes_mod_order(s),
        );
        check.compress().as_bytes().ct_eq(&cap_r).into()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// SHA-512 of the parts, reduced to a scalar: XEdDSA's `h`.
fn challenge(cap_r: &[u8; 32], cap_a: &[u8; 32], message: &[&[u8]]) -> Scalar {
    let mut hash = Sha512::new();
    hash.update(cap_r);
    hash.update(cap_a);
    for part in message {
        hash.update(part);
    }
    Scalar::from_hash(hash)
}

/// A Curve25519 private key; zeroized on drop.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A fresh key from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_bytes(*bytes)
    }

    /// A key from its 32 bytes, clamped as X25519 requires.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(clamp_integer(bytes)))
    }

    /// Decodes a stored 32-byte key.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| Error::BadKeyLength {
            key_type: DJB_TYPE,
            len: bytes.len(),
        })?;
        Ok(Self::from_bytes(raw))
    }

    /// The 32 private bytes, for storage.
    pub fn serialize(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*x25519_dalek::PublicKey::from(&self.0).as_bytes())
    }

    /// X25519 with `their` key. A low-order peer key, which would give an
    /// all-zero secret, is refused.
    pub fn agree(&self, their: &PublicKey) -> Result<Zeroizing<[u8; 32]>> {
        let shared = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(their.0));
        if !shared.was_contributory() {
            return Err(Error::LowOrderKey);
        }
        Ok(Zeroizing::new(*shared.as_bytes()))
    }

    /// Signs the concatenation of `message` parts with XEdDSA.
    pub fn sign<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        message: &[&[u8]],
    ) -> [u8; SIGNATURE_LENGTH] {
        let mut nonce = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(nonce.as_mut());

        let key = Zeroizing::new(self.0.to_bytes());
        let a = Scalar::from_bytes_mod_order(*key);
        let cap_a = (&a * ED25519_BASEPOINT_TABLE).compress();
        let sign_bit = cap_a.as_bytes()[31] & 0x80;

        // r = hash1(a || M || Z), with hash1's prefix 0xFE followed by 31 0xFF.
        let mut hash1 = Sha512::new();
        hash1.update([0xfe]);
        hash1.update([0xff; 31]);
        hash1.update(key.as_ref());
        for part in message {
            hash1.update(part);
        }
        hash1.update(nonce.as_ref());
        let r = Scalar::from_hash(hash1);
        let cap_r = (&r * ED25519_BASEPOINT_TABLE).compress();

        let h = challenge(cap_r.as_bytes(), cap_a.as_bytes(), message);
        let s = h * a + r;

        let mut signature = [0u8; SIGNATURE_LENGTH];
        signature[..32].copy_from_slice(cap_r.as_bytes());
        signature[32..].copy_from_slice(s.as_bytes());
        signature[63] = (signature[63] & 0x7f) | sign_bit;
        signature
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A Curve25519 key pair.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The public half.
    pub public: PublicKey,
    /// The private half.
    pub private: PrivateKey,
}

impl KeyPair {
    /// A fresh key pair from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::from_private(PrivateKey::generate(rng))
    }

    /// The key pair of a private key.
    pub fn from_private(private: PrivateKey) -> Self {
        Self {
            public: private.public_key(),
            private,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sign_verify_and_tamper() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for _ in 0..32 {
            let pair = KeyPair::generate(&mut rng);
            let sig = pair.private.sign(&mut rng, &[b"hello ", b"world"]);
            assert!(pair.public.verify(&[b"hello world"], &sig));
            assert!(!pair.public.verify(&[b"hello world!"], &sig));
            let mut bad = sig;
            bad[5] ^= 1;
            assert!(!pair.public.verify(&[b"hello world"], &bad));
            assert!(!pair.public.verify(&[b"hello world"], &sig[..63]));
        }
    }

    #[test]
    fn agreement_matches() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let a = KeyPair::generate(&mut rng);
        let b = KeyPair::generate(&mut rng);
        let ab = a.private.agree(&b.public).unwrap();
        let ba = b.private.agree(&a.public).unwrap();
        assert_eq!(*ab, *ba);
        assert!(a.private.agree(&PublicKey::from_raw([0; 32])).is_err());
    }

    #[test]
    fn serialization() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let a = KeyPair::generate(&mut rng);
        let bytes = a.public.serialize();
        assert_eq!(bytes[0], 0x05);
        assert_eq!(PublicKey::deserialize(&bytes).unwrap(), a.public);
        assert_eq!(PublicKey::deserialize(&[]), Err(Error::NoKeyType));
        assert_eq!(
            PublicKey::deserialize(&[0x06; 33]),
            Err(Error::BadKeyType(6))
        );
        assert!(PublicKey::deserialize(&bytes[..32]).is_err());
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(PublicKey::deserialize(&long).is_err());
    }
}
