//! PQXDH session setup (<https://signal.org/docs/specifications/pqxdh/>), as
//! libsignal does it.
//!
//! ```text
//! secret = 0xFF * 32 || DH(IK_A, SPK_B) || DH(EK_A, IK_B) || DH(EK_A, SPK_B)
//!          [|| DH(EK_A, OPK_B)] || KEM shared secret
//! HKDF-SHA256(salt = none, ikm = secret,
//!             info = "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024")
//!   -> root key(32) || chain key(32) || post-quantum ratchet auth key(32)
//! ```
//!
//! The initiator (Alice) then takes one ratchet step with the responder's
//! signed prekey as its first ratchet key; the responder (Bob) starts
//! sending on the chain key with its signed prekey as ratchet key.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::crypto::hkdf;
use crate::curve::{KeyPair, PublicKey};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kem::{KemPublicKey, KemSecretKey};
use crate::message::CURRENT_VERSION;
use crate::pq_ratchet;
use crate::ratchet::{ChainKey, RootKey};
use crate::session::state::{SenderChain, SessionState};

const INFO: &[u8] = b"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024";

/// What the initiator knows: its keys and the responder's bundle.
pub(crate) struct AliceParameters<'a> {
    pub(crate) our_identity: &'a IdentityKeyPair,
    pub(crate) our_base_key: &'a KeyPair,
    pub(crate) their_identity: &'a IdentityKey,
    pub(crate) their_signed_pre_key: &'a PublicKey,
    pub(crate) their_one_time_pre_key: Option<&'a PublicKey>,
    pub(crate) their_kyber_pre_key: &'a KemPublicKey,
}

/// What the responder knows: its keys and the initiator's PreKey message.
pub(crate) struct BobParameters<'a> {
    pub(crate) our_identity: &'a IdentityKeyPair,
    pub(crate) our_signed_pre_key: &'a KeyPair,
    pub(crate) our_one_time_pre_key: Option<&'a KeyPair>,
    pub(crate) our_kyber_pre_key: &'a KemSecretKey,
    pub(crate) their_identity: &'a IdentityKey,
    pub(crate) their_base_key: &'a PublicKey,
    pub(crate) their_kyber_ciphertext: &'a [u8],
}

struct Derived {
    root: RootKey,
    chain: ChainKey,
    /// Keys SPQR (its authenticator and its first chains).
    pq_auth: Zeroizing<[u8; 32]>,
}

fn derive(secret: &[u8]) -> Derived {
    let okm = hkdf::<96>(None, secret, INFO);
    let mut root = [0u8; 32];
    let mut chain = [0u8; 32];
    let mut pq_auth = Zeroizing::new([0u8; 32]);
    root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..64]);
    pq_auth.copy_from_slice(&okm[64..]);
    Derived {
        root: RootKey(root),
        chain: ChainKey::new(chain, 0),
        pq_auth,
    }
}

/// Starts a session as the initiator. Returns the session and the KEM
/// ciphertext the responder needs.
pub(crate) fn initialize_alice<R: RngCore + CryptoRng>(
    p: &AliceParameters<'_>,
    rng: &mut R,
) -> Result<(SessionState, Vec<u8>)> {
    let mut secret = Zeroizing::new(Vec::with_capacity(32 * 6));
    secret.extend_from_slice(&[0xff; 32]);
    let base = &p.our_base_key.private;
    secret.extend_from_slice(
        p.our_identity
            .private_key()
            .agree(p.their_signed_pre_key)?
            .as_ref(),
    );
    secret.extend_from_slice(base.agree(p.their_identity.public_key())?.as_ref());
    secret.extend_from_slice(base.agree(p.their_signed_pre_key)?.as_ref());
    if let Some(one_time) = p.their_one_time_pre_key {
        secret.extend_from_slice(base.agree(one_time)?.as_ref());
    }
    let (kem_secret, kem_ciphertext) = p.their_kyber_pre_key.encapsulate(rng);
    secret.extend_from_slice(kem_secret.as_ref());
    let derived = derive(&secret);

    let sending_ratchet = KeyPair::generate(rng);
    let (root, sending_chain) = derived
        .root
        .create_chain(p.their_signed_pre_key, &sending_ratchet.private)?;

    let mut state = SessionState {
        version: CURRENT_VERSION,
        local_identity: *p.our_identity.identity_key(),
        remote_identity: *p.their_identity,
        root_key: root,
        previous_counter: 0,
        sender_chain: Some(SenderChain {
            ratchet: sending_ratchet,
            chain_key: sending_chain,
        }),
        receiver_chains: Vec::new(),
        pending_pre_key: None,
        local_registration_id: 0,
        remote_registration_id: 0,
        alice_base_key: p.our_base_key.public,
        pq_ratchet_state: pq_ratchet::initial_state(
            &derived.pq_auth[..],
            true,
            p.our_identity.identity_key() == p.their_identity,
        )?,
    };
    state.add_receiver_chain(*p.their_signed_pre_key, derived.chain.clone());
    Ok((state, kem_ciphertext))
}

/// Builds the responder's side of a session from a PreKey message.
pub(crate) fn initialize_bob(p: &BobParameters<'_>) -> Result<SessionState> {
    if !p.their_base_key.is_canonical() {
        return Err(Error::NonCanonicalKey);
    }
    let mut secret = Zeroizing::new(Vec::with_capacity(32 * 6));
    secret.extend_from_slice(&[0xff; 32]);
    let signed = &p.our_signed_pre_key.private;
    secret.extend_from_slice(signed.agree(p.their_identity.public_key())?.as_ref());
    secret.extend_from_slice(
        p.our_identity
            .private_key()
            .agree(p.their_base_key)?
            .as_ref(),
    );
    secret.extend_from_slice(signed.agree(p.their_base_key)?.as_ref());
    if let Some(one_time) = p.our_one_time_pre_key {
        secret.extend_from_slice(one_time.private.agree(p.their_base_key)?.as_ref());
    }
    secret.extend_from_slice(
        p.our_kyber_pre_key
            .decapsulate(p.their_kyber_ciphertext)?
            .as_ref(),
    );
    let derived = derive(&secret);

    Ok(SessionState {
        version: CURRENT_VERSION,
        local_identity: *p.our_identity.identity_key(),
        remote_identity: *p.their_identity,
        root_key: derived.root.clone(),
        previous_counter: 0,
        sender_chain: Some(SenderChain {
            ratchet: p.our_signed_pre_key.clone(),
            chain_key: derived.chain.clone(),
        }),
        receiver_chains: Vec::new(),
        pending_pre_key: None,
        local_registration_id: 0,
        remote_registration_id: 0,
        alice_base_key: *p.their_base_key,
        pq_ratchet_state: pq_ratchet::initial_state(
            &derived.pq_auth[..],
            false,
            p.our_identity.identity_key() == p.their_identity,
        )?,
    })
}
