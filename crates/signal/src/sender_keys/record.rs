//! Sender key states and the records that hold them, stored exactly as
//! libsignal stores them: the `SenderKeyRecordStructure` protobuf of its
//! `storage.proto`.

use std::collections::VecDeque;
use std::fmt;

use prost::Message as _;
use zeroize::{Zeroize, Zeroizing};

use super::SENDER_KEY_MESSAGE_VERSION;
use super::chain::{CHAIN_KEY_LENGTH, SenderChainKey, SenderMessageKey};
use crate::curve::{PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::limits::{MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS, MAX_SENDER_KEY_STATES};
use crate::proto;

/// One sender chain of one sender in one distribution: the chain key, the
/// key that signs (or verifies) its messages, and the keys of messages
/// skipped on the way.
///
/// A state made by [`create_sender_key_distribution_message`] holds the
/// private signing key and can send; one made from a received
/// [`SenderKeyDistributionMessage`] holds only the public key.
///
/// [`create_sender_key_distribution_message`]: super::create_sender_key_distribution_message
/// [`SenderKeyDistributionMessage`]: super::SenderKeyDistributionMessage
#[derive(Clone)]
pub struct SenderKeyState {
    chain_id: u32,
    chain_key: SenderChainKey,
    signing_key: PublicKey,
    signing_private_key: Option<PrivateKey>,
    /// Skipped message keys, oldest first, iterations strictly increasing.
    message_keys: VecDeque<SenderMessageKey>,
}

impl SenderKeyState {
    pub(crate) fn new(
        chain_id: u32,
        iteration: u32,
        chain_key: &[u8; CHAIN_KEY_LENGTH],
        signing_key: PublicKey,
        signing_private_key: Option<PrivateKey>,
    ) -> Self {
        Self {
            chain_id,
            chain_key: SenderChainKey::new(iteration, chain_key),
            signing_key,
            signing_private_key,
            message_keys: VecDeque::new(),
        }
    }

    /// The message version of the chain: always
    /// [`SENDER_KEY_MESSAGE_VERSION`].
    pub fn message_version(&self) -> u8 {
        SENDER_KEY_MESSAGE_VERSION
    }

    /// The chain id, which messages carry to name their chain.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The iteration of the chain key: the next message to send, or the
    /// lowest iteration not yet received nor skipped.
    pub fn iteration(&self) -> u32 {
        self.chain_key.iteration()
    }

    /// The public key that signs the chain's messages.
    pub fn signing_key(&self) -> &PublicKey {
        &self.signing_key
    }

    /// Whether the state holds the private signing key, so can send.
    pub fn can_send(&self) -> bool {
        self.signing_private_key.is_some()
    }

    /// How many keys of skipped messages the state keeps.
    pub fn stored_message_keys(&self) -> usize {
        self.message_keys.len()
    }

    pub(crate) fn chain_key(&self) -> &SenderChainKey {
        &self.chain_key
    }

    pub(crate) fn set_chain_key(&mut self, chain_key: SenderChainKey) {
        self.chain_key = chain_key;
    }

    pub(crate) fn signing_private_key(&self) -> Option<&PrivateKey> {
        self.signing_private_key.as_ref()
    }

    /// The message key of `iteration`, advancing the chain past it and
    /// keeping the keys it skips, or taking it from the skipped keys.
    ///
    /// Like libsignal: an iteration behind the chain whose key is not kept
    /// is a duplicate (or too old, which cannot be told apart); one more than
    /// [`MAX_FORWARD_JUMPS`] ahead is refused; of the keys skipped, only the
    /// newest [`MAX_MESSAGE_KEYS`] are kept.
    ///
    /// The caller works on a copy of the record and stores it only once the
    /// message has decrypted, so a failure changes nothing.
    pub(crate) fn message_key(&mut self, iteration: u32) -> Result<SenderMessageKey> {
        let current = self.chain_key.iteration();
        if iteration < current {
            return self
                .take_message_key(iteration)
                .ok_or(Error::DuplicateMessage { index: iteration });
        }
        if iteration - current > MAX_FORWARD_JUMPS {
            return Err(Error::MessageTooFarAhead {
                index: iteration,
                current,
            });
        }
        let mut chain_key = self.chain_key.clone();
        while chain_key.iteration() < iteration {
            self.add_message_key(chain_key.message_key());
            chain_key = chain_key.next()?;
        }
        let message_key = chain_key.message_key();
        self.chain_key = chain_key.next()?;
        Ok(message_key)
    }

    fn add_message_key(&mut self, key: SenderMessageKey) {
        self.message_keys.push_back(key);
        while self.message_keys.len() > MAX_MESSAGE_KEYS {
            self.message_keys.pop_front();
        }
    }

    fn take_message_key(&mut self, iteration: u32) -> Option<SenderMessageKey> {
        let position = self
            .message_keys
            .iter()
            .position(|key| key.iteration() == iteration)?;
        self.message_keys.remove(position)
    }

    /// The protobuf form; the caller wipes it with [`wipe_state`].
    fn to_proto(&self) -> proto::SenderKeyStateStructure {
        proto::SenderKeyStateStructure {
            message_version: u32::from(SENDER_KEY_MESSAGE_VERSION),
            chain_id: self.chain_id,
            sender_chain_key: Some(proto::SenderChainKey {
                iteration: self.chain_key.iteration(),
                seed: self.chain_key.seed().to_vec(),
            }),
            sender_signing_key: Some(proto::SenderSigningKey {
                public: self.signing_key.serialize().to_vec(),
                private: self
                    .signing_private_key
                    .as_ref()
                    .map(|key| key.serialize().to_vec())
                    .unwrap_or_default(),
            }),
            sender_message_keys: self
                .message_keys
                .iter()
                .map(|key| proto::SenderChainKey {
                    iteration: key.iteration(),
                    seed: key.seed().to_vec(),
                })
                .collect(),
        }
    }

    /// Checks and converts one stored state.
    fn from_proto(state: &proto::SenderKeyStateStructure) -> Result<Self> {
        // The version guard. libsignal reads 0 (the field unset, as the first
        // sender key records were written) as version 3.
        if state.message_version != 0
            && state.message_version != u32::from(SENDER_KEY_MESSAGE_VERSION)
        {
            return Err(Error::InvalidRecord("sender key state version"));
        }

        let chain = state
            .sender_chain_key
            .as_ref()
            .ok_or(Error::InvalidRecord("sender key chain key"))?;
        let chain_seed = seed(&chain.seed).ok_or(Error::InvalidRecord("sender key chain key"))?;
        let chain_key = SenderChainKey::new(chain.iteration, chain_seed);

        let signing = state
            .sender_signing_key
            .as_ref()
            .ok_or(Error::InvalidRecord("sender key signing key"))?;
        let signing_key = PublicKey::deserialize(&signing.public)
            .map_err(|_| Error::InvalidRecord("sender key signing key"))?;
        let signing_private_key = if signing.private.is_empty() {
            None
        } else {
            let private = PrivateKey::deserialize(&signing.private)
                .map_err(|_| Error::InvalidRecord("sender key signing key"))?;
            if private.public_key() != signing_key {
                return Err(Error::InvalidRecord("sender key signing key"));
            }
            Some(private)
        };

        if state.sender_message_keys.len() > MAX_MESSAGE_KEYS {
            return Err(Error::InvalidRecord("sender key message keys"));
        }
        let mut message_keys = VecDeque::with_capacity(state.sender_message_keys.len());
        let mut previous: Option<u32> = None;
        for key in &state.sender_message_keys {
            // Kept keys are of skipped iterations, so below the chain's, and
            // were added in order.
            let in_order = previous.is_none_or(|previous| previous < key.iteration);
            if !in_order || key.iteration >= chain.iteration {
                return Err(Error::InvalidRecord("sender key message keys"));
            }
            previous = Some(key.iteration);
            let key_seed =
                seed(&key.seed).ok_or(Error::InvalidRecord("sender key message keys"))?;
            message_keys.push_back(SenderMessageKey::new(key.iteration, key_seed));
        }

        Ok(Self {
            chain_id: state.chain_id,
            chain_key,
            signing_key,
            signing_private_key,
            message_keys,
        })
    }
}

fn seed(bytes: &[u8]) -> Option<&[u8; CHAIN_KEY_LENGTH]> {
    bytes.try_into().ok()
}

/// Zeroizes the secrets of a protobuf state.
fn wipe_state(state: &mut proto::SenderKeyStateStructure) {
    if let Some(chain) = state.sender_chain_key.as_mut() {
        chain.seed.zeroize();
    }
    if let Some(signing) = state.sender_signing_key.as_mut() {
        signing.private.zeroize();
    }
    for key in &mut state.sender_message_keys {
        key.seed.zeroize();
    }
}

/// Zeroizes the secrets of a protobuf record on drop.
struct WipedRecord(proto::SenderKeyRecordStructure);

impl Drop for WipedRecord {
    fn drop(&mut self) {
        self.0.sender_key_states.iter_mut().for_each(wipe_state);
    }
}

impl fmt::Debug for SenderKeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyState")
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration())
            .field("signing_key", &self.signing_key)
            .field("can_send", &self.can_send())
            .field("stored_message_keys", &self.message_keys.len())
            .finish_non_exhaustive()
    }
}

/// The sender key states of one sender in one distribution, newest first,
/// at most [`MAX_SENDER_KEY_STATES`] of them.
///
/// # Stored form
///
/// [`serialize`](Self::serialize) writes libsignal's
/// `SenderKeyRecordStructure` protobuf, so records move freely between this
/// crate and libsignal. [`deserialize`](Self::deserialize) guards the
/// version: every state must have message version 3 (or 0, which libsignal
/// also reads as 3 and which this crate rewrites as 3); any other version is
/// refused with [`Error::InvalidRecord`], as is a record that breaks an
/// invariant libsignal keeps (no state, more than
/// [`MAX_SENDER_KEY_STATES`] states, two states with one chain id, a key of
/// the wrong length, a private signing key that does not match the public
/// one, more than [`MAX_MESSAGE_KEYS`] skipped keys, or skipped keys out of
/// order or not behind the chain).
///
/// The serialized form holds the chain and signing keys: treat it as secret.
#[derive(Clone)]
pub struct SenderKeyRecord {
    states: VecDeque<SenderKeyState>,
}

impl SenderKeyRecord {
    pub(crate) fn new_empty() -> Self {
        Self {
            states: VecDeque::with_capacity(MAX_SENDER_KEY_STATES),
        }
    }

    /// Decodes and checks a stored record.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let record = WipedRecord(
            proto::SenderKeyRecordStructure::decode(bytes)
                .map_err(|_| Error::InvalidRecord("sender key record"))?,
        );
        let states = &record.0.sender_key_states;
        if states.is_empty() || states.len() > MAX_SENDER_KEY_STATES {
            return Err(Error::InvalidRecord("sender key record"));
        }
        let mut out = Self::new_empty();
        for state in states {
            let state = SenderKeyState::from_proto(state)?;
            if out.states.iter().any(|s| s.chain_id == state.chain_id) {
                return Err(Error::InvalidRecord("sender key record"));
            }
            out.states.push_back(state);
        }
        Ok(out)
    }

    /// The stored form: libsignal's `SenderKeyRecordStructure`. It holds
    /// secrets and is zeroized on drop.
    pub fn serialize(&self) -> Zeroizing<Vec<u8>> {
        let record = WipedRecord(proto::SenderKeyRecordStructure {
            sender_key_states: self.states.iter().map(SenderKeyState::to_proto).collect(),
        });
        // Sized up front so that the buffer never reallocates, which would
        // leave a copy of the secrets behind.
        let mut out = Zeroizing::new(Vec::with_capacity(record.0.encoded_len()));
        record.0.encode_raw(&mut *out);
        out
    }

    /// The states, newest (the one used to send) first.
    pub fn states(&self) -> impl ExactSizeIterator<Item = &SenderKeyState> {
        self.states.iter()
    }

    /// The newest state, the one used to send.
    pub(crate) fn current_state(&self) -> Option<&SenderKeyState> {
        self.states.front()
    }

    pub(crate) fn current_state_mut(&mut self) -> Option<&mut SenderKeyState> {
        self.states.front_mut()
    }

    pub(crate) fn state_for_chain_id_mut(&mut self, chain_id: u32) -> Option<&mut SenderKeyState> {
        self.states
            .iter_mut()
            .find(|state| state.chain_id == chain_id)
    }

    /// Adds a state as the newest, as libsignal does: a state already held
    /// with the same chain id and signing key is kept as it is (its chain and
    /// skipped keys are not reset) and moved to the front; states with the
    /// same chain id but another signing key are dropped; then the oldest
    /// states go until there is room.
    pub(crate) fn add_state(&mut self, state: SenderKeyState) {
        let existing = self.states.iter().position(|held| {
            held.chain_id == state.chain_id && held.signing_key == state.signing_key
        });
        let state = match existing.and_then(|index| self.states.remove(index)) {
            Some(held) => held,
            None => state,
        };
        self.states.retain(|held| held.chain_id != state.chain_id);
        while self.states.len() >= MAX_SENDER_KEY_STATES {
            self.states.pop_back();
        }
        self.states.push_front(state);
    }
}

impl fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyRecord")
            .field("states", &self.states)
            .finish()
    }
}
