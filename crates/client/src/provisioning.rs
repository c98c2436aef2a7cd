//! The provisioning cipher and the link URI: how a device of an account
//! hands the account's identity to a new device through the hub, without the
//! hub learning it.
//!
//! # The link URI
//!
//! ```text
//! passerelle://link?id=<mailbox uuid>&key=<base64url, no padding, of the new device's 33-byte public key>
//! ```
//!
//! # The provisioning message, version 1
//!
//! The new device made a Curve25519 key pair `(n, N)` and shows `N` in the
//! URI. The sending device makes an ephemeral key pair `(e, E)` and computes
//!
//! ```text
//! shared          = X25519(e, N)
//! aes_key(32) || mac_key(32) = HKDF-SHA256(salt = none, ikm = shared,
//!                                          info = "Passerelle Provisioning Message v1", L = 64)
//! message = 0x01                        version (1 byte)
//!        || E                           sender's ephemeral public key (33 bytes, type 0x05 first)
//!        || iv                          random (16 bytes)
//!        || AES-256-CBC-PKCS7(aes_key, iv, plaintext)   (a multiple of 16 bytes, at least 16)
//!        || HMAC-SHA256(mac_key, every byte above)      (32 bytes)
//! ```
//!
//! The receiver checks the version byte first, then the length, then the MAC
//! (in constant time), and only then decrypts. The plaintext is the JSON of
//! [`ProvisionData`] (its own `version` field is 1).

use std::fmt;
use std::str::FromStr;

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use passerelle_proto::{AccountId, Address};
use passerelle_signal::{IdentityKeyPair, KeyPair, PrivateKey, PublicKey};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

/// The provisioning message version this crate writes and reads.
pub const VERSION: u8 = 0x01;
/// The HKDF `info` of version 1.
pub const HKDF_INFO: &[u8] = b"Passerelle Provisioning Message v1";
const KEY_LEN: usize = 33;
const IV_LEN: usize = 16;
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 1 + KEY_LEN + IV_LEN;
/// The shortest possible message: header, one AES block, MAC.
pub const MIN_LEN: usize = HEADER_LEN + 16 + MAC_LEN;
/// The URI scheme and host of link URIs.
pub const LINK_URI_PREFIX: &str = "passerelle://link";

/// Why a link URI or a provisioning message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningError {
    /// The message is shorter than any valid one.
    #[error("provisioning message too short ({0} bytes)")]
    TooShort(usize),
    /// The version byte is not one this crate knows.
    #[error("unsupported provisioning message version {0}")]
    UnsupportedVersion(u8),
    /// A public key in the message or URI does not decode.
    #[error("bad public key")]
    BadKey,
    /// The key agreement failed (a low-order key).
    #[error("key agreement failed")]
    BadAgreement,
    /// The MAC does not verify: the message was altered or is for another key.
    #[error("provisioning message MAC does not verify")]
    BadMac,
    /// The ciphertext does not decrypt (length or padding).
    #[error("provisioning ciphertext does not decrypt")]
    BadCiphertext,
    /// The decrypted payload is not valid; the text says which field.
    #[error("invalid provisioning payload: {0}")]
    BadPayload(String),
    /// The link URI is malformed; the text says what is wrong.
    #[error("invalid link URI: {0}")]
    BadUri(&'static str),
}

type HmacSha256 = Hmac<Sha256>;

struct Keys {
    aes: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

fn derive(shared: &[u8; 32]) -> Keys {
    let hkdf = hkdf::Hkdf::<Sha256>::new(None, shared);
    let mut okm = Zeroizing::new([0u8; 64]);
    // 64 bytes is far below HKDF-SHA256's limit of 255 * 32: this cannot fail.
    let _ = hkdf.expand(HKDF_INFO, okm.as_mut());
    let mut aes = Zeroizing::new([0u8; 32]);
    let mut mac = Zeroizing::new([0u8; 32]);
    aes.copy_from_slice(&okm[..32]);
    mac.copy_from_slice(&okm[32..]);
    Keys { aes, mac }
}

fn mac_of(key: &[u8; 32], data: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac
}

/// Encrypts `plaintext` to the new device's public key `recipient`.
pub fn encrypt<R: RngCore + CryptoRng>(
    recipient: &PublicKey,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, ProvisioningError> {
    let ephemeral = KeyPair::generate(rng);
    let shared = ephemeral
        .private
        .agree(recipient)
        .map_err(|_| ProvisioningError::BadAgreement)?;
    let keys = derive(&shared);
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    let ciphertext = cbc::Encryptor::<Aes256>::new(keys.aes.as_ref().into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);

    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len() + MAC_LEN);
    out.push(VERSION);
    out.extend_from_slice(&ephemeral.public.serialize());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ciphertext);
    let tag = mac_of(&keys.mac, &out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decrypts a provisioning message with the new device's private key.
pub fn decrypt(
    recipient: &PrivateKey,
    message: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ProvisioningError> {
    let (&version, _) = message
        .split_first()
        .ok_or(ProvisioningError::TooShort(0))?;
    if version != VERSION {
        return Err(ProvisioningError::UnsupportedVersion(version));
    }
    if message.len() < MIN_LEN {
        return Err(ProvisioningError::TooShort(message.len()));
    }
    let (signed, tag) = message.split_at(message.len() - MAC_LEN);
    let sender =
        PublicKey::deserialize(&signed[1..1 + KEY_LEN]).map_err(|_| ProvisioningError::BadKey)?;
    let shared = recipient
        .agree(&sender)
        .map_err(|_| ProvisioningError::BadAgreement)?;
    let keys = derive(&shared);
    // `verify_slice` compares in constant time.
    mac_of(&keys.mac, signed)
        .verify_slice(tag)
        .map_err(|_| ProvisioningError::BadMac)?;
    let iv: [u8; IV_LEN] = signed[1 + KEY_LEN..HEADER_LEN]
        .try_into()
        .map_err(|_| ProvisioningError::TooShort(message.len()))?;
    let ciphertext = &signed[HEADER_LEN..];
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(ProvisioningError::BadCiphertext);
    }
    cbc::Decryptor::<Aes256>::new(keys.aes.as_ref().into(), (&iv).into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| ProvisioningError::BadCiphertext)
}

/// A parsed link URI: the new device's mailbox and public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkUri {
    /// The provisioning mailbox.
    pub mailbox: Uuid,
    /// The new device's public key.
    pub key: PublicKey,
}

impl FromStr for LinkUri {
    type Err = ProvisioningError;

    fn from_str(s: &str) -> Result<Self, ProvisioningError> {
        let url = url::Url::parse(s.trim()).map_err(|_| ProvisioningError::BadUri("not a URI"))?;
        if url.scheme() != "passerelle" || url.host_str() != Some("link") {
            return Err(ProvisioningError::BadUri(
                "expected passerelle://link?id=...&key=...",
            ));
        }
        let (mut id, mut key) = (None, None);
        for (name, value) in url.query_pairs() {
            let slot = match name.as_ref() {
                "id" => &mut id,
                "key" => &mut key,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(ProvisioningError::BadUri("a parameter appears twice"));
            }
        }
        let id = id.ok_or(ProvisioningError::BadUri("missing id"))?;
        let key = key.ok_or(ProvisioningError::BadUri("missing key"))?;
        let mailbox = Uuid::parse_str(&id).map_err(|_| ProvisioningError::BadUri("bad id"))?;
        let key_bytes = URL_SAFE_NO_PAD
            .decode(key.trim_end_matches('='))
            .or_else(|_| URL_SAFE.decode(&key))
            .map_err(|_| ProvisioningError::BadUri("key is not base64url"))?;
        let key = PublicKey::deserialize(&key_bytes)
            .map_err(|_| ProvisioningError::BadUri("key is not a 33-byte Curve25519 key"))?;
        Ok(Self { mailbox, key })
    }
}

impl fmt::Display for LinkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{LINK_URI_PREFIX}?id={}&key={}",
            self.mailbox.hyphenated(),
            URL_SAFE_NO_PAD.encode(self.key.serialize())
        )
    }
}

/// What a device of the account gives a new device: everything it needs to
/// act as the account.
#[derive(Clone)]
pub struct ProvisionData {
    /// The account's identity key pair.
    pub identity: IdentityKeyPair,
    /// The account.
    pub account_id: AccountId,
    /// Its address.
    pub address: Address,
    /// The one-time link token for `POST /v1/devices`.
    pub link_token: Zeroizing<String>,
}

impl fmt::Debug for ProvisionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionData")
            .field("identity", self.identity.identity_key())
            .field("account_id", &self.account_id)
            .field("address", &self.address)
            .field("link_token", &"..")
            .finish()
    }
}

/// The JSON plaintext; private, so that only validated values get out.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionWire {
    version: u32,
    /// libsignal's serialized identity key pair, standard base64.
    identity_key_pair: String,
    account_id: AccountId,
    address: Address,
    link_token: String,
}

impl Drop for ProvisionWire {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.identity_key_pair.zeroize();
        self.link_token.zeroize();
    }
}

impl ProvisionData {
    /// The plaintext to encrypt.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        let wire = ProvisionWire {
            version: 1,
            identity_key_pair: STANDARD.encode(self.identity.serialize().as_slice()),
            account_id: self.account_id,
            address: self.address.clone(),
            link_token: self.link_token.to_string(),
        };
        Zeroizing::new(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Decodes and checks a decrypted plaintext.
    pub fn from_plaintext(plaintext: &[u8]) -> Result<Self, ProvisioningError> {
        let wire: ProvisionWire = serde_json::from_slice(plaintext)
            .map_err(|e| ProvisioningError::BadPayload(e.to_string()))?;
        if wire.version != 1 {
            return Err(ProvisioningError::BadPayload(format!(
                "unsupported payload version {}",
                wire.version
            )));
        }
        let pair = Zeroizing::new(
            STANDARD
                .decode(&wire.identity_key_pair)
                .map_err(|_| ProvisioningError::BadPayload("identity_key_pair".into()))?,
        );
        let identity = IdentityKeyPair::deserialize(&pair)
            .map_err(|_| ProvisioningError::BadPayload("identity_key_pair".into()))?;
        if wire.link_token.is_empty() {
            return Err(ProvisioningError::BadPayload("empty link_token".into()));
        }
        Ok(Self {
            identity,
            account_id: wire.account_id,
            address: wire.address.clone(),
            link_token: Zeroizing::new(wire.link_token.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn data() -> ProvisionData {
        ProvisionData {
            identity: IdentityKeyPair::generate(&mut OsRng),
            account_id: AccountId::random(),
            address: "alice@parley".parse().unwrap(),
            link_token: Zeroizing::new("token-123".into()),
        }
    }

    #[test]
    fn round_trip() {
        let new_device = KeyPair::generate(&mut OsRng);
        let data = data();
        let message = encrypt(&new_device.public, &data.to_plaintext(), &mut OsRng).unwrap();
        assert_eq!(message[0], VERSION);
        assert_eq!((message.len() - MIN_LEN) % 16, 0);
        let plaintext = decrypt(&new_device.private, &message).unwrap();
        let back = ProvisionData::from_plaintext(&plaintext).unwrap();
        assert_eq!(back.account_id, data.account_id);
        assert_eq!(back.address, data.address);
        assert_eq!(*back.link_token, *data.link_token);
        assert_eq!(back.identity.identity_key(), data.identity.identity_key());
        assert_eq!(
            *back.identity.private_key().serialize(),
            *data.identity.private_key().serialize()
        );
        // Nothing secret in Debug.
        let debug = format!("{back:?}");
        assert!(!debug.contains("token-123"));
    }

    #[test]
    fn tampering_is_detected() {
        let new_device = KeyPair::generate(&mut OsRng);
        let message = encrypt(&new_device.public, b"{\"hello\":1}", &mut OsRng).unwrap();
        for i in 1..message.len() {
            let mut bad = message.clone();
            bad[i] ^= 0x01;
            let err = decrypt(&new_device.private, &bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProvisioningError::BadMac
                        | ProvisioningError::BadKey
                        | ProvisioningError::BadAgreement
                ),
                "byte {i}: {err:?}"
            );
        }
        let mut bad = message.clone();
        bad[0] = 2;
        assert_eq!(
            decrypt(&new_device.private, &bad),
            Err(ProvisioningError::UnsupportedVersion(2))
        );
        assert_eq!(
            decrypt(&new_device.private, &message[..MIN_LEN - 1]),
            Err(ProvisioningError::TooShort(MIN_LEN - 1))
        );
        assert_eq!(
            decrypt(&new_device.private, &[]),
            Err(ProvisioningError::TooShort(0))
        );
        // Another device's key does not decrypt it.
        let other = KeyPair::generate(&mut OsRng);
        assert_eq!(
            decrypt(&other.private, &message),
            Err(ProvisioningError::BadMac)
        );
    }

    #[test]
    fn payload_is_checked() {
        let err = ProvisionData::from_plaintext(b"{}").unwrap_err();
        assert!(matches!(err, ProvisioningError::BadPayload(_)));
        let mut json: serde_json::Value = serde_json::from_slice(&data().to_plaintext()).unwrap();
        json["identity_key_pair"] = "AAAA".into();
        let err = ProvisionData::from_plaintext(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert_eq!(
            err,
            ProvisioningError::BadPayload("identity_key_pair".into())
        );
    }

    #[test]
    fn link_uris() {
        let key = KeyPair::generate(&mut OsRng).public;
        let uri = LinkUri {
            mailbox: Uuid::new_v4(),
            key,
        };
        let text = uri.to_string();
        assert!(text.starts_with("passerelle://link?id="));
        assert_eq!(text.parse::<LinkUri>().unwrap(), uri);
        assert!("https://link?id=x&key=y".parse::<LinkUri>().is_err());
        assert!("passerelle://link?id=x".parse::<LinkUri>().is_err());
        let no_key = format!("passerelle://link?id={}", uri.mailbox);
        assert_eq!(
            no_key.parse::<LinkUri>(),
            Err(ProvisioningError::BadUri("missing key"))
        );
        let short = format!("passerelle://link?id={}&key=AAAA", uri.mailbox);
        assert!(short.parse::<LinkUri>().is_err());
    }
}
