//! The authenticator: a MAC key that each epoch's shared secret ratchets
//! forward, so that headers and ciphertexts are bound to every earlier
//! epoch and to the PQXDH handshake.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Error;
use super::kdf::{ZERO_SALT, hkdf};

const UPDATE_INFO: &[u8] = b"Signal_PQCKA_V1_MLKEM768:Authenticator Update";
const CIPHERTEXT_LABEL: &[u8] = b"Signal_PQCKA_V1_MLKEM768:ciphertext";
const HEADER_LABEL: &[u8] = b"Signal_PQCKA_V1_MLKEM768:ekheader";

/// Bytes in a MAC.
pub(crate) const MAC_LEN: usize = 32;

/// A root key and the MAC key derived with it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Authenticator {
    root_key: [u8; 32],
    mac_key: [u8; 32],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(..)")
    }
}

impl Authenticator {
    /// The authenticator of epoch `epoch`, keyed from the handshake.
    pub(crate) fn new(auth_key: &[u8], epoch: u64) -> Self {
        let mut auth = Self {
            root_key: [0; 32],
            mac_key: [0; 32],
        };
        auth.update(epoch, auth_key);
        auth
    }

    pub(crate) fn from_parts(root_key: [u8; 32], mac_key: [u8; 32]) -> Self {
        Self { root_key, mac_key }
    }

    pub(crate) fn root_key(&self) -> &[u8; 32] {
        &self.root_key
    }

    pub(crate) fn mac_key(&self) -> &[u8; 32] {
        &self.mac_key
    }

    /// Mixes an epoch's secret into the root key.
    pub(crate) fn update(&mut self, epoch: u64, secret: &[u8]) {
        let ikm = zeroize::Zeroizing::new([&self.root_key[..], secret].concat());
        let mut out = zeroize::Zeroizing::new([0u8; 64]);
        hkdf(
            &ZERO_SALT,
            &ikm,
            &[UPDATE_INFO, &epoch.to_be_bytes()],
            &mut out[..],
        );
        self.root_key.copy_from_slice(&out[..32]);
        self.mac_key.copy_from_slice(&out[32..]);
    }

    fn mac(&self, label: &[u8], epoch: u64, data: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.mac_key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return [0; MAC_LEN],
        };
        mac.update(label);
        mac.update(&epoch.to_be_bytes());
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The MAC over an encapsulation key header.
    pub(crate) fn mac_header(&self, epoch: u64, header: &[u8]) -> [u8; MAC_LEN] {
        self.mac(HEADER_LABEL, epoch, header)
    }

    /// The MAC over a whole ciphertext (both parts).
    pub(crate) fn mac_ciphertext(&self, epoch: u64, ciphertext: &[u8]) -> [u8; MAC_LEN] {
        self.mac(CIPHERTEXT_LABEL, epoch, ciphertext)
    }

    pub(crate) fn verify_header(&self, epoch: u64, header: &[u8], mac: &[u8]) -> Result<(), Error> {
        if bool::from(self.mac_header(epoch, header)[..].ct_eq(mac)) {
            Ok(())
        } else {
            Err(Error::BadHeaderMac)
        }
    }

    pub(crate) fn verify_ciphertext(
        &self,
        epoch: u64,
        ciphertext: &[u8],
        mac: &[u8],
    ) -> Result<(), Error> {
        if bool::from(self.mac_ciphertext(epoch, ciphertext)[..].ct_eq(mac)) {
            Ok(())
        } else {
            Err(Error::BadCiphertextMac)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_follows_the_hkdf_layout() {
        // Recomputed by hand from the definition: HKDF(salt = 0^32,
        // ikm = 0^32 || key, info = label || epoch as u64 BE), split 32/32.
        let auth = Authenticator::new(b"handshake key", 1);
        let mut expected = [0u8; 64];
        let mut info = UPDATE_INFO.to_vec();
        info.extend_from_slice(&1u64.to_be_bytes());
        let mut ikm = vec![0u8; 32];
        ikm.extend_from_slice(b"handshake key");
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
            .expand(&info, &mut expected)
            .expect("length");
        assert_eq!(auth.root_key(), &expected[..32]);
        assert_eq!(auth.mac_key(), &expected[32..]);
    }

    #[test]
    fn macs_bind_label_epoch_and_data() {
        let auth = Authenticator::new(&[7; 32], 1);
        let mac = auth.mac_header(3, b"header");
        assert!(auth.verify_header(3, b"header", &mac).is_ok());
        assert_eq!(
            auth.verify_header(4, b"header", &mac),
            Err(Error::BadHeaderMac)
        );
        assert_eq!(
            auth.verify_header(3, b"headex", &mac),
            Err(Error::BadHeaderMac)
        );
        assert_eq!(
            auth.verify_header(3, b"header", &mac[..31]),
            Err(Error::BadHeaderMac)
        );
        assert_eq!(
            auth.verify_ciphertext(3, b"header", &mac),
            Err(Error::BadCiphertextMac)
        );
        let mut other = auth.clone();
        other.update(3, &[1; 32]);
        assert_eq!(
            other.verify_header(3, b"header", &mac),
            Err(Error::BadHeaderMac)
        );

        let mut expected = Hmac::<Sha256>::new_from_slice(auth.mac_key()).expect("key");
        expected.update(b"Signal_PQCKA_V1_MLKEM768:ekheader");
        expected.update(&3u64.to_be_bytes());
        expected.update(b"header");
        assert_eq!(mac, <[u8; 32]>::from(expected.finalize().into_bytes()));
    }

    use hkdf::Hkdf;
}
