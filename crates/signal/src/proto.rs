//! Protobuf messages, laid out field for field as libsignal's `wire.proto`,
//! `storage.proto` and `fingerprint.proto`, so that messages and stored
//! records are interchangeable with libsignal's.
//!
//! These types are private to the crate: the public message and record types
//! parse them and check every field on the way in.
#![allow(missing_docs)]
// Storage messages come into use module by module.
#![allow(dead_code)]

use prost::Message;

// ---- wire.proto (proto2) ----

#[derive(Clone, PartialEq, Message)]
pub struct SignalMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ratchet_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    pub counter: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub previous_counter: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ciphertext: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub pq_ratchet: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub addresses: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PreKeySignalMessage {
    #[prost(uint32, optional, tag = "5")]
    pub registration_id: Option<u32>,
    #[prost(uint32, optional, tag = "1")]
    pub pre_key_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub signed_pre_key_id: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub kyber_pre_key_id: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub kyber_ciphertext: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub base_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub identity_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub message: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SenderKeyMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub distribution_uuid: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    pub chain_id: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub iteration: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ciphertext: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SenderKeyDistributionMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub distribution_uuid: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    pub chain_id: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub iteration: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub chain_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub signing_key: Option<Vec<u8>>,
}

// ---- fingerprint.proto (proto2) ----

#[derive(Clone, PartialEq, Message)]
pub struct LogicalFingerprint {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub content: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CombinedFingerprints {
    #[prost(uint32, optional, tag = "1")]
    pub version: Option<u32>,
    #[prost(message, optional, tag = "2")]
    pub local_fingerprint: Option<LogicalFingerprint>,
    #[prost(message, optional, tag = "3")]
    pub remote_fingerprint: Option<LogicalFingerprint>,
}

// ---- storage.proto (proto3) ----

#[derive(Clone, PartialEq, Message)]
pub struct ChainKey {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MessageKey {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub cipher_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub mac_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub iv: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub seed: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Chain {
    #[prost(bytes = "vec", tag = "1")]
    pub sender_ratchet_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub sender_ratchet_key_private: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub chain_key: Option<ChainKey>,
    #[prost(message, repeated, tag = "4")]
    pub message_keys: Vec<MessageKey>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PendingPreKey {
    #[prost(uint32, optional, tag = "1")]
    pub pre_key_id: Option<u32>,
    #[prost(int32, tag = "3")]
    pub signed_pre_key_id: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub base_key: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub timestamp: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct PendingKyberPreKey {
    #[prost(uint32, tag = "1")]
    pub pre_key_id: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SessionStructure {
    #[prost(uint32, tag = "1")]
    pub session_version: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub local_identity_public: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub remote_identity_public: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub root_key: Vec<u8>,
    #[prost(uint32, tag = "5")]
    pub previous_counter: u32,
    #[prost(message, optional, tag = "6")]
    pub sender_chain: Option<Chain>,
    #[prost(message, repeated, tag = "7")]
    pub receiver_chains: Vec<Chain>,
    #[prost(message, optional, tag = "9")]
    pub pending_pre_key: Option<PendingPreKey>,
    #[prost(message, optional, tag = "14")]
    pub pending_kyber_pre_key: Option<PendingKyberPreKey>,
    #[prost(uint32, tag = "10")]
    pub remote_registration_id: u32,
    #[prost(uint32, tag = "11")]
    pub local_registration_id: u32,
    #[prost(bytes = "vec", tag = "13")]
    pub alice_base_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "15")]
    pub pq_ratchet_state: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RecordStructure {
    #[prost(message, optional, tag = "1")]
    pub current_session: Option<SessionStructure>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub previous_sessions: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PreKeyRecordStructure {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub private_key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SignedPreKeyRecordStructure {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub private_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
    #[prost(fixed64, tag = "5")]
    pub timestamp: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct IdentityKeyPairStructure {
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub private_key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SenderChainKey {
    #[prost(uint32, tag = "1")]
    pub iteration: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub seed: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SenderSigningKey {
    #[prost(bytes = "vec", tag = "1")]
    pub public: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub private: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SenderKeyStateStructure {
    #[prost(uint32, tag = "5")]
    pub message_version: u32,
    #[prost(uint32, tag = "1")]
    pub chain_id: u32,
    #[prost(message, optional, tag = "2")]
    pub sender_chain_key: Option<SenderChainKey>,
    #[prost(message, optional, tag = "3")]
    pub sender_signing_key: Option<SenderSigningKey>,
    #[prost(message, repeated, tag = "4")]
    pub sender_message_keys: Vec<SenderChainKey>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SenderKeyRecordStructure {
    #[prost(message, repeated, tag = "1")]
    pub sender_key_states: Vec<SenderKeyStateStructure>,
}
