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

/// The post-quantum ratchet's auth key: SPQR's initial state is built on
/// it (see `session::pq_setup`).
pub(crate) type PqAuthKey = Zeroizing<[u8; 32]>;

struct Derived {
    root: RootKey,
    chain: ChainKey,
    pq_auth: PqAuthKey,
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

/// Starts a session as the initiator. Returns the session, the KEM
/// ciphertext the responder needs, and the post-quantum ratchet's auth key.
pub(crate) fn initialize_alice<R: RngCore + CryptoRng>(
    p: &AliceParameters<'_>,
    rng: &mut R,
) -> Result<(SessionState, Vec<u8>, PqAuthKey)> {
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
        pq_ratchet_state: Vec::new(),
    };
    state.add_receiver_chain(*p.their_signed_pre_key, derived.chain.clone());
    Ok((state, kem_ciphertext, derived.pq_auth))
}

/// Builds the responder's side of a session from a PreKey message; also
/// returns the post-quantum ratchet's auth key.
pub(crate) fn initialize_bob(p: &BobParameters<'_>) -> Result<(SessionState, PqAuthKey)> {
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

    let state = SessionState {
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
        pq_ratchet_state: Vec::new(),
    };
    Ok((state, derived.pq_auth))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::prekeys::{KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};

    /// Both sides must start SPQR on the same auth key, or no post-quantum
    /// key would ever match.
    #[test]
    fn both_sides_derive_the_same_keys_and_pq_auth_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKeyRecord::generate(1, 0, &bob, &mut rng);
        let one_time = PreKeyRecord::generate(1, &mut rng);
        let kyber = KyberPreKeyRecord::generate(1, 0, &bob, &mut rng);
        let base = KeyPair::generate(&mut rng);
        let (alice_state, ciphertext, alice_pq) = initialize_alice(
            &AliceParameters {
                our_identity: &alice,
                our_base_key: &base,
                their_identity: bob.identity_key(),
                their_signed_pre_key: &signed.key_pair.public,
                their_one_time_pre_key: Some(&one_time.key_pair.public),
                their_kyber_pre_key: &kyber.key_pair.public,
            },
            &mut rng,
        )
        .unwrap();
        let (bob_state, bob_pq) = initialize_bob(&BobParameters {
            our_identity: &bob,
            our_signed_pre_key: &signed.key_pair,
            our_one_time_pre_key: Some(&one_time.key_pair),
            our_kyber_pre_key: &kyber.key_pair.secret,
            their_identity: alice.identity_key(),
            their_base_key: &base.public,
            their_kyber_ciphertext: &ciphertext,
        })
        .unwrap();
        assert_eq!(*alice_pq, *bob_pq);
        assert_ne!(*alice_pq, [0u8; 32]);
        assert_eq!(alice_state.alice_base_key, bob_state.alice_base_key);
        // Alice's first receiving chain is Bob's first sending chain.
        let bob_chain = &bob_state.sender_chain.as_ref().unwrap().chain_key;
        assert_eq!(alice_state.receiver_chains[0].chain_key.key, bob_chain.key);
    }
}
