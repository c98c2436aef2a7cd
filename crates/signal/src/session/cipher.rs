//! Encrypting and decrypting with a session.

use std::time::SystemTime;

use rand_core::{CryptoRng, RngCore};

use super::record::SessionRecord;
use super::state::{SenderChain, SessionState};
use super::{process_prekey, same_account};
use crate::address::ProtocolAddress;
use crate::crypto::{aes256_cbc_decrypt, aes256_cbc_encrypt};
use crate::curve::KeyPair;
use crate::error::{Error, Result};
use crate::limits;
use crate::message::{CiphertextMessage, PreKeySignalMessage, SignalMessage, address_binding};
use crate::pq_ratchet;
use crate::store::{Direction, IdentityKeyStore, ProtocolStore, SessionStore};

/// Encrypts `plaintext` for `remote` on the current session. `local` is this
/// device's own address: a PreKey message binds it and `remote` under its
/// MAC when both are service ids (see [`message`](crate::message)).
pub fn message_encrypt<S, R>(
    plaintext: &[u8],
    remote: &ProtocolAddress,
    local: &ProtocolAddress,
    store: &mut S,
    now: SystemTime,
    rng: &mut R,
) -> Result<CiphertextMessage>
where
    S: SessionStore + IdentityKeyStore + ?Sized,
    R: RngCore + CryptoRng,
{
    let mut record = store
        .load_session(remote)?
        .ok_or_else(|| Error::SessionNotFound(remote.clone()))?;
    let state = record
        .current
        .as_mut()
        .ok_or_else(|| Error::SessionNotFound(remote.clone()))?;
    if state.is_stale(now) {
        return Err(Error::SessionExpired(remote.clone()));
    }
    let chain = state
        .sender_chain
        .as_mut()
        .ok_or_else(|| Error::SessionNotFound(remote.clone()))?;
    let next_chain_key = chain.chain_key.next()?;

    let pq = pq_ratchet::send(&state.pq_ratchet_state, rng)?;
    let keys = chain.chain_key.message_seed().keys(pq.key.as_deref());
    let ciphertext = aes256_cbc_encrypt(&keys.cipher_key, &keys.iv, plaintext);
    // As libsignal: only the messages that set up the session are bound.
    let addresses = state
        .pending_pre_key
        .as_ref()
        .and_then(|_| address_binding(local, remote));
    let message = SignalMessage::new(
        &keys.mac_key,
        chain.ratchet.public,
        chain.chain_key.index,
        state.previous_counter,
        ciphertext,
        pq.payload,
        addresses,
        &state.local_identity,
        &state.remote_identity,
    );
    chain.chain_key = next_chain_key;
    state.pq_ratchet_state = pq.state;

    let message = match &state.pending_pre_key {
        Some(pending) => CiphertextMessage::PreKey(PreKeySignalMessage::new(
            state.local_registration_id,
            pending.pre_key_id,
            pending.signed_pre_key_id,
            pending.kyber_pre_key_id,
            pending.kyber_ciphertext.clone(),
            pending.base_key,
            state.local_identity,
            message,
        )),
        None => CiphertextMessage::Signal(message),
    };

    let remote_identity = state.remote_identity;
    if !store.is_trusted_identity(remote, &remote_identity, Direction::Sending)? {
        return Err(Error::UntrustedIdentity(remote.clone()));
    }
    store.save_identity(remote, &remote_identity)?;
    store.store_session(remote, &record)?;
    Ok(message)
}

/// Decrypts a message of either kind from `remote`; `local` is this
/// device's own address.
///
/// A message bound to other addresses than `remote` and `local` is refused
/// with [`Error::MisaddressedMessage`] before anything is stored.
pub fn message_decrypt<S, R>(
    message: &CiphertextMessage,
    remote: &ProtocolAddress,
    local: &ProtocolAddress,
    store: &mut S,
    rng: &mut R,
) -> Result<Vec<u8>>
where
    S: ProtocolStore + ?Sized,
    R: RngCore + CryptoRng,
{
    match message {
        CiphertextMessage::Signal(m) => message_decrypt_signal(m, remote, local, store, rng),
        CiphertextMessage::PreKey(m) => message_decrypt_prekey(m, remote, local, store, rng),
    }
}

/// Decrypts a PreKey message, building the session it starts if needed.
pub fn message_decrypt_prekey<S, R>(
    message: &PreKeySignalMessage,
    remote: &ProtocolAddress,
    local: &ProtocolAddress,
    store: &mut S,
    rng: &mut R,
) -> Result<Vec<u8>>
where
    S: ProtocolStore + ?Sized,
    R: RngCore + CryptoRng,
{
    // Checked first: a message meant for another device consumes no prekey
    // and costs no key agreement.
    message.message().check_addresses(remote, local)?;
    if !store.is_trusted_identity(remote, message.identity_key(), Direction::Receiving)? {
        return Err(Error::UntrustedIdentity(remote.clone()));
    }
    let mut record = store.load_session(remote)?.unwrap_or_default();
    let used = process_prekey(message, remote, local, &mut record, store)?;
    let plaintext = decrypt_with_record(
        &mut record,
        message.message(),
        true,
        Ends { remote, local },
        rng,
    )?;

    store.save_identity(remote, message.identity_key())?;
    if let Some(used) = used {
        store.mark_kyber_pre_key_used(used.kyber, used.signed, message.base_key())?;
        if let Some(id) = used.one_time {
            store.remove_pre_key(id)?;
        }
    }
    store.store_session(remote, &record)?;
    Ok(plaintext)
}

/// Decrypts a message of an established session.
pub fn message_decrypt_signal<S, R>(
    message: &SignalMessage,
    remote: &ProtocolAddress,
    local: &ProtocolAddress,
    store: &mut S,
    rng: &mut R,
) -> Result<Vec<u8>>
where
    S: SessionStore + IdentityKeyStore + ?Sized,
    R: RngCore + CryptoRng,
{
    message.check_addresses(remote, local)?;
    let mut record = store
        .load_session(remote)?
        .ok_or_else(|| Error::SessionNotFound(remote.clone()))?;
    let plaintext = decrypt_with_record(&mut record, message, false, Ends { remote, local }, rng)?;
    let identity = record
        .remote_identity()
        .ok_or_else(|| Error::SessionNotFound(remote.clone()))?;
    if !store.is_trusted_identity(remote, &identity, Direction::Receiving)? {
        return Err(Error::UntrustedIdentity(remote.clone()));
    }
    store.save_identity(remote, &identity)?;
    store.store_session(remote, &record)?;
    Ok(plaintext)
}

/// The two ends of a session, as the caller names them.
#[derive(Clone, Copy)]
struct Ends<'a> {
    remote: &'a ProtocolAddress,
    local: &'a ProtocolAddress,
}

/// Tries the current session, then (for a plain message) the archived ones
/// newest first; an archived session that decrypts becomes current again.
fn decrypt_with_record<R: RngCore + CryptoRng>(
    record: &mut SessionRecord,
    message: &SignalMessage,
    prekey: bool,
    ends: Ends<'_>,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut first_error = None;
    if let Some(current) = &record.current {
        let mut staged = current.clone();
        match decrypt_with_state(&mut staged, message, ends, rng) {
            Ok(plaintext) => {
                record.current = Some(staged);
                return Ok(plaintext);
            }
            Err(e) if prekey || matches!(e, Error::DuplicateMessage { .. }) => return Err(e),
            Err(e) => first_error = Some(e),
        }
    }
    for i in 0..record.previous.len() {
        let Ok(mut state) = SessionState::deserialize(&record.previous[i]) else {
            continue;
        };
        match decrypt_with_state(&mut state, message, ends, rng) {
            Ok(plaintext) => {
                record.previous.remove(i);
                record.promote_state(state);
                return Ok(plaintext);
            }
            Err(e @ Error::DuplicateMessage { .. }) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| Error::SessionNotFound(ends.remote.clone())))
}

/// Decrypts with one session, advancing it in place; the caller discards
/// the state if this fails.
fn decrypt_with_state<R: RngCore + CryptoRng>(
    state: &mut SessionState,
    message: &SignalMessage,
    ends: Ends<'_>,
    rng: &mut R,
) -> Result<Vec<u8>> {
    if message.version() != state.version {
        return Err(Error::UnrecognizedVersion(message.version()));
    }
    let their_ratchet = *message.ratchet_key();
    if state.receiver_chain_mut(&their_ratchet).is_none() {
        ratchet_step(state, &their_ratchet, rng)?;
    }
    let with_self = same_account(
        ends.local,
        &state.local_identity,
        ends.remote,
        &state.remote_identity,
    );
    let counter = message.counter();
    let chain = state
        .receiver_chain_mut(&their_ratchet)
        .ok_or(Error::InvalidRecord("session"))?;

    let seed = if counter < chain.chain_key.index {
        let position = chain
            .skipped
            .iter()
            .position(|s| s.index == counter)
            .ok_or(Error::DuplicateMessage { index: counter })?;
        chain
            .skipped
            .remove(position)
            .ok_or(Error::DuplicateMessage { index: counter })?
    } else {
        let current = chain.chain_key.index;
        if counter - current > limits::MAX_FORWARD_JUMPS && !with_self {
            return Err(Error::MessageTooFarAhead {
                index: counter,
                current,
            });
        }
        let mut chain_key = chain.chain_key.clone();
        while chain_key.index < counter {
            chain.skipped.push_front(chain_key.message_seed());
            if chain.skipped.len() > limits::MAX_MESSAGE_KEYS {
                chain.skipped.pop_back();
            }
            chain_key = chain_key.next()?;
        }
        chain.chain_key = chain_key.next()?;
        chain_key.message_seed()
    };

    let pq = pq_ratchet::recv(&state.pq_ratchet_state, message.pq_ratchet())?;
    let keys = seed.keys(pq.key.as_deref());
    if !message.verify_mac(&keys.mac_key, &state.remote_identity, &state.local_identity) {
        return Err(Error::BadMac);
    }
    let plaintext = aes256_cbc_decrypt(&keys.cipher_key, &keys.iv, message.body())
        .ok_or(Error::BadCiphertext)?;
    state.pq_ratchet_state = pq.state;
    // The peer answered: the session no longer needs PreKey messages.
    state.pending_pre_key = None;
    Ok(plaintext)
}

/// A Diffie-Hellman ratchet step on a new ratchet key from the peer: a
/// receiving chain for it, and a new sending chain of ours.
fn ratchet_step<R: RngCore + CryptoRng>(
    state: &mut SessionState,
    their_ratchet: &crate::curve::PublicKey,
    rng: &mut R,
) -> Result<()> {
    let sender = state
        .sender_chain
        .as_ref()
        .ok_or(Error::InvalidRecord("session"))?;
    let (root, receiving) = state
        .root_key
        .create_chain(their_ratchet, &sender.ratchet.private)?;
    let ratchet = KeyPair::generate(rng);
    let (root, sending) = root.create_chain(their_ratchet, &ratchet.private)?;
    state.previous_counter = sender.chain_key.index.saturating_sub(1);
    state.root_key = root;
    state.add_receiver_chain(*their_ratchet, receiving);
    state.sender_chain = Some(SenderChain {
        ratchet,
        chain_key: sending,
    });
    Ok(())
}
