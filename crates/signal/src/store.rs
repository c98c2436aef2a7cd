//! Storage behind narrow traits, and in-memory implementations of them.
//!
//! The traits are synchronous: the protocol core does no I/O of its own, and
//! a caller with an async database loads what an operation needs, runs it,
//! and writes back what changed. Reads return `Result<Option<T>>` so that a
//! missing record and a failing backend stay distinct.

use std::collections::{HashMap, HashSet};

use crate::address::ProtocolAddress;
use crate::curve::PublicKey;
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::prekeys::{
    KyberPreKeyId, KyberPreKeyRecord, PreKeyId, PreKeyRecord, SignedPreKeyId, SignedPreKeyRecord,
};
use crate::session::SessionRecord;

/// Whether a key is about to be used to send or was used to receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Encrypting to the peer.
    Sending,
    /// Decrypting from the peer.
    Receiving,
}

/// Whether saving an identity replaced a different one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityChange {
    /// The identity was new, or the same as the one stored.
    NewOrUnchanged,
    /// A different identity was stored before: the peer re-registered.
    ReplacedExisting,
}

/// This device's identity and what it knows of its peers' identities.
pub trait IdentityKeyStore {
    /// This device's identity key pair.
    fn identity_key_pair(&self) -> Result<IdentityKeyPair>;
    /// This device's registration id.
    fn local_registration_id(&self) -> Result<u32>;
    /// Records the identity seen for `address`.
    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> Result<IdentityChange>;
    /// Whether `identity` may be used with `address` in `direction`.
    fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> Result<bool>;
    /// The identity stored for `address`.
    fn identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>>;
}

/// One-time Curve25519 prekeys.
pub trait PreKeyStore {
    /// Loads a prekey.
    fn pre_key(&self, id: PreKeyId) -> Result<Option<PreKeyRecord>>;
    /// Saves a prekey.
    fn save_pre_key(&mut self, record: &PreKeyRecord) -> Result<()>;
    /// Removes a prekey once a session was built on it.
    fn remove_pre_key(&mut self, id: PreKeyId) -> Result<()>;
}

/// Signed Curve25519 prekeys.
pub trait SignedPreKeyStore {
    /// Loads a signed prekey.
    fn signed_pre_key(&self, id: SignedPreKeyId) -> Result<Option<SignedPreKeyRecord>>;
    /// Saves a signed prekey.
    fn save_signed_pre_key(&mut self, record: &SignedPreKeyRecord) -> Result<()>;
}

/// Signed Kyber prekeys, one-time and last-resort.
pub trait KyberPreKeyStore {
    /// Loads a Kyber prekey.
    fn kyber_pre_key(&self, id: KyberPreKeyId) -> Result<Option<KyberPreKeyRecord>>;
    /// Saves a Kyber prekey; `last_resort` ones are kept after use.
    fn save_kyber_pre_key(&mut self, record: &KyberPreKeyRecord, last_resort: bool) -> Result<()>;
    /// Called when a session was built on a Kyber prekey: a one-time key is
    /// removed; for a last-resort key the store must refuse (with an error)
    /// a second use with the same signed prekey and base key, which could
    /// only be a replay.
    fn mark_kyber_pre_key_used(
        &mut self,
        id: KyberPreKeyId,
        signed_pre_key_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> Result<()>;
}

/// Sessions, one record per peer device.
pub trait SessionStore {
    /// Loads the session record of a peer device.
    fn load_session(&self, address: &ProtocolAddress) -> Result<Option<SessionRecord>>;
    /// Stores the session record of a peer device.
    fn store_session(&mut self, address: &ProtocolAddress, record: &SessionRecord) -> Result<()>;
}

/// Everything 1:1 sessions need.
pub trait ProtocolStore:
    IdentityKeyStore + PreKeyStore + SignedPreKeyStore + KyberPreKeyStore + SessionStore
{
}

impl<T> ProtocolStore for T where
    T: IdentityKeyStore + PreKeyStore + SignedPreKeyStore + KyberPreKeyStore + SessionStore
{
}

/// All stores in memory, trusting an identity on first use.
///
/// Tests use it, and it is the reference for what a persistent store must
/// do. A changed identity is trusted for receiving and, like a new one, for
/// sending: the caller decides when to warn its user (see
/// [`IdentityChange`]).
#[derive(Debug)]
pub struct InMemoryStore {
    identity: IdentityKeyPair,
    registration_id: u32,
    identities: HashMap<ProtocolAddress, IdentityKey>,
    pre_keys: HashMap<PreKeyId, PreKeyRecord>,
    signed_pre_keys: HashMap<SignedPreKeyId, SignedPreKeyRecord>,
    kyber_pre_keys: HashMap<KyberPreKeyId, (KyberPreKeyRecord, bool)>,
    kyber_uses: HashSet<(KyberPreKeyId, SignedPreKeyId, PublicKey)>,
    sessions: HashMap<ProtocolAddress, Vec<u8>>,
}

impl InMemoryStore {
    /// An empty store for a device with this identity.
    pub fn new(identity: IdentityKeyPair, registration_id: u32) -> Self {
        Self {
            identity,
            registration_id,
            identities: HashMap::new(),
            pre_keys: HashMap::new(),
            signed_pre_keys: HashMap::new(),
            kyber_pre_keys: HashMap::new(),
            kyber_uses: HashSet::new(),
            sessions: HashMap::new(),
        }
    }

    /// How many one-time prekeys are left.
    pub fn pre_key_count(&self) -> usize {
        self.pre_keys.len()
    }
}

impl IdentityKeyStore for InMemoryStore {
    fn identity_key_pair(&self) -> Result<IdentityKeyPair> {
        Ok(self.identity.clone())
    }

    fn local_registration_id(&self) -> Result<u32> {
        Ok(self.registration_id)
    }

    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> Result<IdentityChange> {
        match self.identities.insert(address.clone(), *identity) {
            Some(old) if old != *identity => Ok(IdentityChange::ReplacedExisting),
            _ => Ok(IdentityChange::NewOrUnchanged),
        }
    }

    fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> Result<bool> {
        Ok(true)
    }

    fn identity(&self, address: &ProtocolAddress) -> Result<Option<IdentityKey>> {
        Ok(self.identities.get(address).copied())
    }
}

impl PreKeyStore for InMemoryStore {
    fn pre_key(&self, id: PreKeyId) -> Result<Option<PreKeyRecord>> {
        Ok(self.pre_keys.get(&id).cloned())
    }

    fn save_pre_key(&mut self, record: &PreKeyRecord) -> Result<()> {
        self.pre_keys.insert(record.id, record.clone());
        Ok(())
    }

    fn remove_pre_key(&mut self, id: PreKeyId) -> Result<()> {
        self.pre_keys.remove(&id);
        Ok(())
    }
}

impl SignedPreKeyStore for InMemoryStore {
    fn signed_pre_key(&self, id: SignedPreKeyId) -> Result<Option<SignedPreKeyRecord>> {
        Ok(self.signed_pre_keys.get(&id).cloned())
    }

    fn save_signed_pre_key(&mut self, record: &SignedPreKeyRecord) -> Result<()> {
        self.signed_pre_keys.insert(record.id, record.clone());
        Ok(())
    }
}

impl KyberPreKeyStore for InMemoryStore {
    fn kyber_pre_key(&self, id: KyberPreKeyId) -> Result<Option<KyberPreKeyRecord>> {
        Ok(self.kyber_pre_keys.get(&id).map(|(r, _)| r.clone()))
    }

    fn save_kyber_pre_key(&mut self, record: &KyberPreKeyRecord, last_resort: bool) -> Result<()> {
        self.kyber_pre_keys
            .insert(record.id, (record.clone(), last_resort));
        Ok(())
    }

    fn mark_kyber_pre_key_used(
        &mut self,
        id: KyberPreKeyId,
        signed_pre_key_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> Result<()> {
        match self.kyber_pre_keys.get(&id) {
            Some((_, true)) if !self.kyber_uses.insert((id, signed_pre_key_id, *base_key)) => {
                return Err(Error::Storage(format!(
                    "last-resort Kyber prekey {id} reused with the same base key"
                )));
            }
            Some((_, true)) => {}
            Some((_, false)) => {
                self.kyber_pre_keys.remove(&id);
            }
            None => {}
        }
        Ok(())
    }
}

impl SessionStore for InMemoryStore {
    fn load_session(&self, address: &ProtocolAddress) -> Result<Option<SessionRecord>> {
        self.sessions
            .get(address)
            .map(|bytes| SessionRecord::deserialize(bytes))
            .transpose()
    }

    fn store_session(&mut self, address: &ProtocolAddress, record: &SessionRecord) -> Result<()> {
        self.sessions.insert(address.clone(), record.serialize());
        Ok(())
    }
}
