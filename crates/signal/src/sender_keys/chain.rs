//! The sender chain: a hash ratchet of 32-byte chain keys, each of which
//! yields the seed of one message key.
//!
//! ```text
//! chain key[i + 1]  = HMAC-SHA256(chain key[i], 0x02)
//! message seed[i]   = HMAC-SHA256(chain key[i], 0x01)
//! iv || cipher key  = HKDF-SHA256(salt: none, ikm: message seed[i],
//!                                 info: "WhisperGroup", 48 bytes)
//! ```

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{hkdf, hmac_sha256};
use crate::error::{Error, Result};

/// The length of a chain key and of a message key seed.
pub const CHAIN_KEY_LENGTH: usize = 32;

/// The HMAC input deriving a message key seed from a chain key.
const MESSAGE_KEY_SEED: u8 = 0x01;
/// The HMAC input deriving the next chain key.
const CHAIN_KEY_SEED: u8 = 0x02;
/// libsignal's HKDF info string for sender message keys.
const MESSAGE_KEY_INFO: &[u8] = b"WhisperGroup";

/// One step of a sender chain; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SenderChainKey {
    iteration: u32,
    seed: [u8; CHAIN_KEY_LENGTH],
}

impl SenderChainKey {
    pub(crate) fn new(iteration: u32, seed: &[u8; CHAIN_KEY_LENGTH]) -> Self {
        Self {
            iteration,
            seed: *seed,
        }
    }

    /// The iteration this chain key is at: the index of the next message.
    pub(crate) fn iteration(&self) -> u32 {
        self.iteration
    }

    pub(crate) fn seed(&self) -> &[u8; CHAIN_KEY_LENGTH] {
        &self.seed
    }

    /// The chain key one step on. The iteration is a `u32`; past
    /// `u32::MAX` the chain is exhausted, as in libsignal.
    pub(crate) fn next(&self) -> Result<Self> {
        let iteration = self
            .iteration
            .checked_add(1)
            .ok_or(Error::CounterExhausted)?;
        Ok(Self {
            iteration,
            seed: *hmac_sha256(&self.seed, &[CHAIN_KEY_SEED]),
        })
    }

    /// The message key of this iteration.
    pub(crate) fn message_key(&self) -> SenderMessageKey {
        SenderMessageKey {
            iteration: self.iteration,
            seed: *hmac_sha256(&self.seed, &[MESSAGE_KEY_SEED]),
        }
    }
}

/// The seed of one message key, as records store skipped keys; zeroized on
/// drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SenderMessageKey {
    iteration: u32,
    seed: [u8; CHAIN_KEY_LENGTH],
}

impl SenderMessageKey {
    pub(crate) fn new(iteration: u32, seed: &[u8; CHAIN_KEY_LENGTH]) -> Self {
        Self {
            iteration,
            seed: *seed,
        }
    }

    pub(crate) fn iteration(&self) -> u32 {
        self.iteration
    }

    pub(crate) fn seed(&self) -> &[u8; CHAIN_KEY_LENGTH] {
        &self.seed
    }

    /// The AES-256-CBC key and IV.
    pub(crate) fn keys(&self) -> MessageKeys {
        let derived = hkdf::<48>(None, &self.seed, MESSAGE_KEY_INFO);
        let mut keys = MessageKeys {
            iv: [0; 16],
            cipher_key: [0; 32],
        };
        keys.iv.copy_from_slice(&derived[..16]);
        keys.cipher_key.copy_from_slice(&derived[16..]);
        keys
    }
}

/// The key and IV of one message; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKeys {
    pub(crate) iv: [u8; 16],
    pub(crate) cipher_key: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_steps_and_exhausts() {
        let key = SenderChainKey::new(0, &[7; 32]);
        let next = key.next().unwrap();
        assert_eq!(next.iteration(), 1);
        assert_ne!(next.seed(), key.seed());
        assert_ne!(key.message_key().seed(), next.seed());
        assert_eq!(
            SenderChainKey::new(u32::MAX, &[7; 32]).next().err(),
            Some(Error::CounterExhausted)
        );
    }
}
