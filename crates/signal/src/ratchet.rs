//! The Double Ratchet's key schedule, as libsignal derives it.
//!
//! ```text
//! root step:    HKDF-SHA256(salt = root key, ikm = DH(their ratchet, our ratchet),
//!                           info = "WhisperRatchet") -> new root key(32) || chain key(32)
//! chain step:   message key seed = HMAC-SHA256(chain key, 0x01)
//!               next chain key   = HMAC-SHA256(chain key, 0x02)
//! message keys: HKDF-SHA256(salt = post-quantum key or none, ikm = seed,
//!                           info = "WhisperMessageKeys") -> cipher(32) || mac(32) || iv(16)
//! ```

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{hkdf, hmac_sha256};
use crate::curve::{PrivateKey, PublicKey};
use crate::error::{Error, Result};

/// The root key: mixed with each new Diffie-Hellman ratchet step.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct RootKey(pub(crate) [u8; 32]);

impl RootKey {
    /// Takes one ratchet step: the new root key and the chain key it starts.
    pub(crate) fn create_chain(
        &self,
        their_ratchet: &PublicKey,
        our_ratchet: &PrivateKey,
    ) -> Result<(RootKey, ChainKey)> {
        let shared = our_ratchet.agree(their_ratchet)?;
        let okm = hkdf::<64>(Some(&self.0), shared.as_ref(), b"WhisperRatchet");
        let mut root = [0u8; 32];
        let mut chain = [0u8; 32];
        root.copy_from_slice(&okm[..32]);
        chain.copy_from_slice(&okm[32..]);
        Ok((RootKey(root), ChainKey::new(chain, 0)))
    }
}

/// A sending or receiving chain key and its index.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey {
    pub(crate) key: [u8; 32],
    pub(crate) index: u32,
}

impl ChainKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self { key, index }
    }

    /// The next key of the chain.
    pub(crate) fn next(&self) -> Result<Self> {
        let index = self.index.checked_add(1).ok_or(Error::CounterExhausted)?;
        Ok(Self::new(*hmac_sha256(&self.key, &[0x02]), index))
    }

    /// The seed of this index's message keys.
    pub(crate) fn message_seed(&self) -> MessageSeed {
        MessageSeed {
            seed: *hmac_sha256(&self.key, &[0x01]),
            index: self.index,
        }
    }
}

/// A message key seed: stored for skipped messages, turned into keys when
/// the message arrives (the post-quantum key is known only then).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageSeed {
    pub(crate) seed: [u8; 32],
    pub(crate) index: u32,
}

impl MessageSeed {
    /// The message keys, with the post-quantum ratchet's key as salt when it
    /// gave one.
    pub(crate) fn keys(&self, pq_key: Option<&[u8]>) -> MessageKeys {
        let okm = hkdf::<80>(pq_key, &self.seed, b"WhisperMessageKeys");
        let mut keys = MessageKeys {
            cipher_key: [0; 32],
            mac_key: [0; 32],
            iv: [0; 16],
        };
        keys.cipher_key.copy_from_slice(&okm[..32]);
        keys.mac_key.copy_from_slice(&okm[32..64]);
        keys.iv.copy_from_slice(&okm[64..]);
        keys
    }
}

/// The keys of one message.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKeys {
    pub(crate) cipher_key: [u8; 32],
    pub(crate) mac_key: [u8; 32],
    pub(crate) iv: [u8; 16],
}
