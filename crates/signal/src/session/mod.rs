//! 1:1 sessions: building them from a bundle or a PreKey message, and
//! encrypting and decrypting with the Double Ratchet.
//!
//! Each operation loads what it needs from the store, works on a copy, and
//! writes back only after every check passed: a message that fails to
//! decrypt leaves the stored session exactly as it was.

mod cipher;
pub(crate) mod pq_setup;
mod record;
pub(crate) mod state;

use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};

pub use cipher::{
    message_decrypt, message_decrypt_prekey, message_decrypt_signal, message_encrypt,
};
pub use record::SessionRecord;

use crate::address::ProtocolAddress;
use crate::curve::KeyPair;
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::message::{PreKeySignalMessage, service_id};
use crate::pqxdh::{self, AliceParameters, BobParameters};
use crate::prekeys::{KyberPreKeyId, PreKeyBundle, PreKeyId, SignedPreKeyId};
use crate::store::{Direction, IdentityKeyStore, ProtocolStore, SessionStore};
use pq_setup::{PqDirection, PqRatchetParams};
use state::PendingPreKey;

/// Whether two ends of a session are the same account (a note to self, or
/// another device of ours), as libsignal decides it: the same identity key
/// and the same service id. Names that are not service ids are never the
/// same account.
pub(crate) fn same_account(
    local: &ProtocolAddress,
    local_identity: &IdentityKey,
    remote: &ProtocolAddress,
    remote_identity: &IdentityKey,
) -> bool {
    local_identity == remote_identity
        && service_id(local.name()).is_some_and(|ours| service_id(remote.name()) == Some(ours))
}

/// Starts a session with `remote` from its prekey bundle. The first
/// messages sent on it are PreKey messages, until the peer answers.
///
/// `local` is this device's own address: PreKey messages bind both
/// addresses (see [`message`](crate::message)), and a session with one's own
/// account is told apart by it.
pub fn process_prekey_bundle<S, R>(
    remote: &ProtocolAddress,
    local: &ProtocolAddress,
    store: &mut S,
    bundle: &PreKeyBundle,
    now: SystemTime,
    rng: &mut R,
) -> Result<()>
where
    S: SessionStore + IdentityKeyStore + ?Sized,
    R: RngCore + CryptoRng,
{
    if !store.is_trusted_identity(remote, &bundle.identity_key, Direction::Sending)? {
        return Err(Error::UntrustedIdentity(remote.clone()));
    }
    bundle.verify_signatures()?;

    let mut record = store.load_session(remote)?.unwrap_or_default();
    let our_identity = store.identity_key_pair()?;
    let base_key = KeyPair::generate(rng);
    let (mut state, kyber_ciphertext, pq_auth) = pqxdh::initialize_alice(
        &AliceParameters {
            our_identity: &our_identity,
            our_base_key: &base_key,
            their_identity: &bundle.identity_key,
            their_signed_pre_key: &bundle.signed_pre_key,
            their_one_time_pre_key: bundle.pre_key.as_ref().map(|(_, key)| key),
            their_kyber_pre_key: &bundle.kyber_pre_key,
        },
        rng,
    )?;
    let self_session = same_account(
        local,
        our_identity.identity_key(),
        remote,
        &bundle.identity_key,
    );
    state.pq_ratchet_state = pq_setup::initial_state(&PqRatchetParams::new(
        pq_auth,
        PqDirection::AliceToBob,
        self_session,
    ))?;
    state.pending_pre_key = Some(PendingPreKey {
        pre_key_id: bundle.pre_key.as_ref().map(|(id, _)| *id),
        signed_pre_key_id: bundle.signed_pre_key_id,
        base_key: base_key.public,
        created: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        kyber_pre_key_id: bundle.kyber_pre_key_id,
        kyber_ciphertext,
    });
    state.local_registration_id = store.local_registration_id()?;
    state.remote_registration_id = bundle.registration_id;

    store.save_identity(remote, &bundle.identity_key)?;
    record.promote_state(state);
    store.store_session(remote, &record)
}

/// The prekeys a PreKey message consumed, to be marked used once the
/// message decrypted.
pub(crate) struct PreKeysUsed {
    pub(crate) one_time: Option<PreKeyId>,
    pub(crate) signed: SignedPreKeyId,
    pub(crate) kyber: KyberPreKeyId,
}

/// Builds the responder's session from a PreKey message into `record`,
/// unless the record already has the session that message names.
pub(crate) fn process_prekey<S: ProtocolStore + ?Sized>(
    message: &PreKeySignalMessage,
    remote: &ProtocolAddress,
    local: &ProtocolAddress,
    record: &mut record::SessionRecord,
    store: &S,
) -> Result<Option<PreKeysUsed>> {
    if record.promote_matching_session(message.base_key())? {
        return Ok(None);
    }
    let signed_id = message.signed_pre_key_id();
    let signed = store
        .signed_pre_key(signed_id)?
        .ok_or(Error::UnknownSignedPreKey(signed_id))?;
    let kyber_id = message.kyber_pre_key_id();
    let kyber = store
        .kyber_pre_key(kyber_id)?
        .ok_or(Error::UnknownKyberPreKey(kyber_id))?;
    let one_time = match message.pre_key_id() {
        Some(id) => Some(store.pre_key(id)?.ok_or(Error::UnknownPreKey(id))?),
        None => None,
    };
    let our_identity = store.identity_key_pair()?;
    let (mut state, pq_auth) = pqxdh::initialize_bob(&BobParameters {
        our_identity: &our_identity,
        our_signed_pre_key: &signed.key_pair,
        our_one_time_pre_key: one_time.as_ref().map(|r| &r.key_pair),
        our_kyber_pre_key: &kyber.key_pair.secret,
        their_identity: message.identity_key(),
        their_base_key: message.base_key(),
        their_kyber_ciphertext: message.kyber_ciphertext(),
    })?;
    let self_session = same_account(
        local,
        our_identity.identity_key(),
        remote,
        message.identity_key(),
    );
    state.pq_ratchet_state = pq_setup::initial_state(&PqRatchetParams::new(
        pq_auth,
        PqDirection::BobToAlice,
        self_session,
    ))?;
    state.local_registration_id = store.local_registration_id()?;
    state.remote_registration_id = message.registration_id();
    record.promote_state(state);
    Ok(Some(PreKeysUsed {
        one_time: message.pre_key_id(),
        signed: signed_id,
        kyber: kyber_id,
    }))
}
