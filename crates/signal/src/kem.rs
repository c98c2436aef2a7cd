//! Kyber1024 (the NIST round-3 Kyber that libsignal's PQXDH uses), with
//! libsignal's serialization: a type byte `0x08`, then the raw key or
//! ciphertext.
//!
//! The arithmetic is `libcrux-ml-kem`'s formally verified implementation,
//! the same crate libsignal uses.

use libcrux_ml_kem::kyber1024;
use libcrux_ml_kem::mlkem1024::{MlKem1024Ciphertext, MlKem1024PrivateKey, MlKem1024PublicKey};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The type byte of a Kyber1024 key or ciphertext on the wire.
pub const KYBER1024_TYPE: u8 = 0x08;
const PUBLIC_KEY_LENGTH: usize = 1568;
const SECRET_KEY_LENGTH: usize = 3168;
const CIPHERTEXT_LENGTH: usize = 1568;

/// A Kyber1024 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey(Box<[u8; PUBLIC_KEY_LENGTH]>);

/// A Kyber1024 secret key; zeroized on drop.
#[derive(Clone)]
pub struct KemSecretKey(Zeroizing<Vec<u8>>);

/// A Kyber1024 key pair.
#[derive(Clone, Debug)]
pub struct KemKeyPair {
    /// The public half.
    pub public: KemPublicKey,
    /// The secret half.
    pub secret: KemSecretKey,
}

fn typed<const N: usize>(bytes: &[u8]) -> Result<Box<[u8; N]>> {
    let (&key_type, rest) = bytes.split_first().ok_or(Error::NoKeyType)?;
    if key_type != KYBER1024_TYPE {
        return Err(Error::BadKeyType(key_type));
    }
    let raw: Box<[u8; N]> =
        rest.to_vec()
            .into_boxed_slice()
            .try_into()
            .map_err(|_| Error::BadKeyLength {
                key_type,
                len: bytes.len(),
            })?;
    Ok(raw)
}

fn with_type(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + raw.len());
    out.push(KYBER1024_TYPE);
    out.extend_from_slice(raw);
    out
}

impl KemPublicKey {
    /// Decodes a serialized key (type byte first).
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let raw = typed::<PUBLIC_KEY_LENGTH>(bytes)?;
        if !kyber1024::validate_public_key(&MlKem1024PublicKey::from(*raw)) {
            return Err(Error::BadKeyLength {
                key_type: KYBER1024_TYPE,
                len: bytes.len(),
            });
        }
        Ok(Self(raw))
    }

    /// The serialized key, type byte first.
    pub fn serialize(&self) -> Vec<u8> {
        with_type(self.0.as_ref())
    }

    /// Encapsulates a fresh shared secret to this key: returns the secret and
    /// the serialized ciphertext (type byte first).
    pub fn encapsulate<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> (Zeroizing<[u8; 32]>, Vec<u8>) {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let (ct, ss) = kyber1024::encapsulate(&MlKem1024PublicKey::from(*self.0), *seed);
        (Zeroizing::new(ss), with_type(ct.as_ref()))
    }
}

impl std::fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemPublicKey({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl KemSecretKey {
    /// Decodes a stored key (type byte first).
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let raw = typed::<SECRET_KEY_LENGTH>(bytes)?;
        Ok(Self(Zeroizing::new(raw.to_vec())))
    }

    /// The stored form, type byte first.
    pub fn serialize(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(with_type(&self.0))
    }

    /// Recovers the shared secret from a serialized ciphertext.
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let (&ct_type, raw) = ciphertext.split_first().ok_or(Error::BadKemCiphertext)?;
        if ct_type != KYBER1024_TYPE {
            return Err(Error::BadKemCiphertext);
        }
        let raw: [u8; CIPHERTEXT_LENGTH] = raw.try_into().map_err(|_| Error::BadKemCiphertext)?;
        let sk_bytes: [u8; SECRET_KEY_LENGTH] = self
            .0
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadKemCiphertext)?;
        let sk = MlKem1024PrivateKey::from(sk_bytes);
        let ss = kyber1024::decapsulate(&sk, &MlKem1024Ciphertext::from(raw));
        Ok(Zeroizing::new(ss))
    }
}

impl std::fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KemSecretKey(..)")
    }
}

impl KemKeyPair {
    /// A fresh key pair from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(seed.as_mut());
        let pair = kyber1024::generate_key_pair(*seed);
        let (sk, pk) = pair.into_parts();
        let public = KemPublicKey(Box::new(*pk.as_slice()));
        let secret = KemSecretKey(Zeroizing::new(sk.as_slice().to_vec()));
        Self { public, secret }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let pair = KemKeyPair::generate(&mut rng);
        let public = KemPublicKey::deserialize(&pair.public.serialize()).unwrap();
        let (ss, ct) = public.encapsulate(&mut rng);
        assert_eq!(ct.len(), 1 + CIPHERTEXT_LENGTH);
        assert_eq!(ct[0], KYBER1024_TYPE);
        let secret = KemSecretKey::deserialize(&pair.secret.serialize()).unwrap();
        assert_eq!(*secret.decapsulate(&ct).unwrap(), *ss);
        assert_eq!(secret.decapsulate(&ct[1..]), Err(Error::BadKemCiphertext));
        assert!(KemPublicKey::deserialize(&[0x08; 10]).is_err());
    }
}
