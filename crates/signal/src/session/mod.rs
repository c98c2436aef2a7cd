//! 1:1 sessions: building them from a bundle or a PreKey message, and
//! encrypting and decrypting with the Double Ratchet.
//!
//! Each operation loads what it needs from the store, works on a copy, and
//! writes back only after every check passed: a message that fails to
//! decrypt leaves the stored session exactly as it was.

mod cipher;
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
use crate::message::PreKeySignalMessage;
use crate::pqxdh::{self, AliceParameters, BobParameters};
use crate::prekeys::{KyberPreKeyId, PreKeyBundle, PreKeyId, SignedPreKeyId};
use crate::store::{Direction, IdentityKeyStore, ProtocolStore, SessionStore};
use state::PendingPreKey;

/// Starts a session with `remote` from its prekey bundle. The first
/// messages sent on it are PreKey messages, until the peer answers.
pub fn process_prekey_bundle<S, R>(
    remote: &ProtocolAddress,
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
    let (mut state, kyber_ciphertext) = pqxdh::initialize_alice(
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
    let mut state = pqxdh::initialize_bob(&BobParameters {
        our_identity: &our_identity,
        our_signed_pre_key: &signed.key_pair,
        our_one_time_pre_key: one_time.as_ref().map(|r| &r.key_pair),
        our_kyber_pre_key: &kyber.key_pair.secret,
        their_identity: message.identity_key(),
        their_base_key: message.base_key(),
        their_kyber_ciphertext: message.kyber_ciphertext(),
    })?;
    state.local_registration_id = store.local_registration_id()?;
    state.remote_registration_id = message.registration_id();
    record.promote_state(state);
    Ok(Some(PreKeysUsed {
        one_time: message.pre_key_id(),
        signed: signed_id,
        kyber: kyber_id,
    }))
}
