//! One session with a peer device: its root key, its sending chain and its
//! last few receiving chains, stored as libsignal's `SessionStructure`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use prost::Message as _;

use crate::curve::{KeyPair, PrivateKey, PublicKey};
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::limits;
use crate::prekeys::{KyberPreKeyId, PreKeyId, SignedPreKeyId};
use crate::proto;
use crate::ratchet::{ChainKey, MessageSeed, RootKey};

/// Our current sending chain.
#[derive(Clone)]
pub(crate) struct SenderChain {
    pub(crate) ratchet: KeyPair,
    pub(crate) chain_key: ChainKey,
}

/// One of the peer's chains we receive on, with the seeds of the messages
/// we skipped in it (newest first).
#[derive(Clone)]
pub(crate) struct ReceiverChain {
    pub(crate) ratchet: PublicKey,
    pub(crate) chain_key: ChainKey,
    pub(crate) skipped: VecDeque<MessageSeed>,
}

/// What a session started from a bundle must repeat in every message until
/// the peer answers.
#[derive(Clone, Debug)]
pub(crate) struct PendingPreKey {
    pub(crate) pre_key_id: Option<PreKeyId>,
    pub(crate) signed_pre_key_id: SignedPreKeyId,
    pub(crate) base_key: PublicKey,
    /// Seconds since the Unix epoch.
    pub(crate) created: u64,
    pub(crate) kyber_pre_key_id: KyberPreKeyId,
    pub(crate) kyber_ciphertext: Vec<u8>,
}

/// A session.
#[derive(Clone)]
pub(crate) struct SessionState {
    pub(crate) version: u8,
    pub(crate) local_identity: IdentityKey,
    pub(crate) remote_identity: IdentityKey,
    pub(crate) root_key: RootKey,
    pub(crate) previous_counter: u32,
    pub(crate) sender_chain: Option<SenderChain>,
    /// Oldest first.
    pub(crate) receiver_chains: Vec<ReceiverChain>,
    pub(crate) pending_pre_key: Option<PendingPreKey>,
    pub(crate) local_registration_id: u32,
    pub(crate) remote_registration_id: u32,
    /// The initiator's base key: it names the session for both sides.
    pub(crate) alice_base_key: PublicKey,
    pub(crate) pq_ratchet_state: Vec<u8>,
}

impl SessionState {
    pub(crate) fn receiver_chain_mut(&mut self, ratchet: &PublicKey) -> Option<&mut ReceiverChain> {
        self.receiver_chains
            .iter_mut()
            .find(|chain| chain.ratchet == *ratchet)
    }

    pub(crate) fn add_receiver_chain(&mut self, ratchet: PublicKey, chain_key: ChainKey) {
        self.receiver_chains.push(ReceiverChain {
            ratchet,
            chain_key,
            skipped: VecDeque::new(),
        });
        if self.receiver_chains.len() > limits::MAX_RECEIVER_CHAINS {
            self.receiver_chains.remove(0);
        }
    }

    /// Whether a pending prekey session is too old to send on.
    pub(crate) fn is_stale(&self, now: SystemTime) -> bool {
        self.pending_pre_key.as_ref().is_some_and(|pending| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(pending.created)
                + limits::MAX_UNACKNOWLEDGED_SESSION_AGE
                < now
        })
    }

    pub(crate) fn to_proto(&self) -> proto::SessionStructure {
        let chain_key = |c: &ChainKey| proto::ChainKey {
            index: c.index,
            key: c.key.to_vec(),
        };
        proto::SessionStructure {
            session_version: u32::from(self.version),
            local_identity_public: self.local_identity.serialize().to_vec(),
            remote_identity_public: self.remote_identity.serialize().to_vec(),
            root_key: self.root_key.0.to_vec(),
            previous_counter: self.previous_counter,
            sender_chain: self.sender_chain.as_ref().map(|c| proto::Chain {
                sender_ratchet_key: c.ratchet.public.serialize().to_vec(),
                sender_ratchet_key_private: c.ratchet.private.serialize().to_vec(),
                chain_key: Some(chain_key(&c.chain_key)),
                message_keys: Vec::new(),
            }),
            receiver_chains: self
                .receiver_chains
                .iter()
                .map(|c| proto::Chain {
                    sender_ratchet_key: c.ratchet.serialize().to_vec(),
                    sender_ratchet_key_private: Vec::new(),
                    chain_key: Some(chain_key(&c.chain_key)),
                    message_keys: c
                        .skipped
                        .iter()
                        .map(|s| proto::MessageKey {
                            index: s.index,
                            seed: s.seed.to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            pending_pre_key: self.pending_pre_key.as_ref().map(|p| proto::PendingPreKey {
                pre_key_id: p.pre_key_id,
                signed_pre_key_id: p.signed_pre_key_id as i32,
                base_key: p.base_key.serialize().to_vec(),
                timestamp: p.created,
            }),
            pending_kyber_pre_key: self.pending_pre_key.as_ref().map(|p| {
                proto::PendingKyberPreKey {
                    pre_key_id: p.kyber_pre_key_id,
                    ciphertext: p.kyber_ciphertext.clone(),
                }
            }),
            remote_registration_id: self.remote_registration_id,
            local_registration_id: self.local_registration_id,
            alice_base_key: self.alice_base_key.serialize().to_vec(),
            pq_ratchet_state: self.pq_ratchet_state.clone(),
        }
    }

    pub(crate) fn from_proto(s: proto::SessionStructure) -> Result<Self> {
        const WHAT: &str = "session";
        let bad = |_| Error::InvalidRecord(WHAT);
        if s.session_version != u32::from(crate::message::CURRENT_VERSION) {
            return Err(Error::InvalidRecord(WHAT));
        }
        let key32 = |bytes: &[u8]| -> Result<[u8; 32]> {
            bytes.try_into().map_err(|_| Error::InvalidRecord(WHAT))
        };
        let chain_key = |c: Option<proto::ChainKey>| -> Result<ChainKey> {
            let c = c.ok_or(Error::InvalidRecord(WHAT))?;
            Ok(ChainKey::new(key32(&c.key)?, c.index))
        };
        let sender_chain = s
            .sender_chain
            .map(|c| -> Result<SenderChain> {
                // Both halves are read as stored, as libsignal does:
                // recomputing the public half would cost a scalar
                // multiplication on every message.
                let ratchet = KeyPair {
                    public: PublicKey::deserialize(&c.sender_ratchet_key).map_err(bad)?,
                    private: PrivateKey::deserialize(&c.sender_ratchet_key_private).map_err(bad)?,
                };
                Ok(SenderChain {
                    ratchet,
                    chain_key: chain_key(c.chain_key)?,
                })
            })
            .transpose()?;
        let receiver_chains = s
            .receiver_chains
            .into_iter()
            .map(|c| -> Result<ReceiverChain> {
                Ok(ReceiverChain {
                    ratchet: PublicKey::deserialize(&c.sender_ratchet_key).map_err(bad)?,
                    chain_key: chain_key(c.chain_key)?,
                    skipped: c
                        .message_keys
                        .into_iter()
                        .map(|k| {
                            Ok(MessageSeed {
                                seed: key32(&k.seed)?,
                                index: k.index,
                            })
                        })
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        let pending_pre_key = match (s.pending_pre_key, s.pending_kyber_pre_key) {
            (None, _) => None,
            (Some(p), Some(k)) => Some(PendingPreKey {
                pre_key_id: p.pre_key_id,
                signed_pre_key_id: p.signed_pre_key_id as u32,
                base_key: PublicKey::deserialize(&p.base_key).map_err(bad)?,
                created: p.timestamp,
                kyber_pre_key_id: k.pre_key_id,
                kyber_ciphertext: k.ciphertext,
            }),
            (Some(_), None) => return Err(Error::InvalidRecord(WHAT)),
        };
        Ok(Self {
            version: crate::message::CURRENT_VERSION,
            local_identity: IdentityKey::deserialize(&s.local_identity_public).map_err(bad)?,
            remote_identity: IdentityKey::deserialize(&s.remote_identity_public).map_err(bad)?,
            root_key: RootKey(key32(&s.root_key)?),
            previous_counter: s.previous_counter,
            sender_chain,
            receiver_chains,
            pending_pre_key,
            local_registration_id: s.local_registration_id,
            remote_registration_id: s.remote_registration_id,
            alice_base_key: PublicKey::deserialize(&s.alice_base_key).map_err(bad)?,
            pq_ratchet_state: s.pq_ratchet_state,
        })
    }

    pub(crate) fn serialize(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    pub(crate) fn deserialize(bytes: &[u8]) -> Result<Self> {
        Self::from_proto(
            proto::SessionStructure::decode(bytes).map_err(|_| Error::InvalidRecord("session"))?,
        )
    }
}
