//! The sender key operations, step for step as libsignal's `group_cipher.rs`.

use rand_core::{CryptoRng, RngCore};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::chain::{CHAIN_KEY_LENGTH, MessageKeys};
use super::message::{SenderKeyDistributionMessage, SenderKeyMessage};
use super::record::{SenderKeyRecord, SenderKeyState};
use super::store::SenderKeyStore;
use crate::address::ProtocolAddress;
use crate::crypto::{aes256_cbc_decrypt, aes256_cbc_encrypt};
use crate::curve::{KeyPair, PrivateKey};
use crate::error::{Error, Result};

/// Returns the distribution message to send, over 1:1 sessions, to every
/// member of the distribution `distribution_id`, creating the sender's
/// sending state for it if there is none yet.
///
/// A new state has a random 31-bit chain id (libsignal-protocol-java's
/// range, which libsignal keeps), a random chain key at iteration 0 and a
/// fresh signing key pair; it is stored before this returns. An existing
/// state is distributed at its current iteration, so recipients cannot
/// decrypt messages sent before.
///
/// # Errors
///
/// [`Error::InvalidRecord`] if the sender's newest state cannot send (it
/// lacks the private signing key), and any error of the store.
pub fn create_sender_key_distribution_message<S, R>(
    sender: &ProtocolAddress,
    distribution_id: Uuid,
    store: &mut S,
    rng: &mut R,
) -> Result<SenderKeyDistributionMessage>
where
    S: SenderKeyStore + ?Sized,
    R: RngCore + CryptoRng,
{
    let record = match store.load_sender_key(sender, distribution_id)? {
        Some(record) => record,
        None => {
            let chain_id = rng.next_u32() >> 1;
            let mut chain_key = Zeroizing::new([0u8; CHAIN_KEY_LENGTH]);
            rng.fill_bytes(chain_key.as_mut());
            let signing = KeyPair::generate(rng);
            let mut record = SenderKeyRecord::new_empty();
            record.add_state(SenderKeyState::new(
                chain_id,
                0,
                &chain_key,
                signing.public,
                Some(signing.private),
            ));
            store.store_sender_key(sender, distribution_id, &record)?;
            record
        }
    };
    let (state, _) = sending_state(&record)?;
    Ok(SenderKeyDistributionMessage::new(
        distribution_id,
        state.chain_id(),
        state.chain_key().iteration(),
        state.chain_key().seed(),
        *state.signing_key(),
    ))
}

/// Records a distribution message received from `sender` (authenticated by
/// the 1:1 session it came over), so that its messages to that distribution
/// decrypt.
///
/// As in libsignal, the new state becomes the newest of the sender's record;
/// processing a chain (same chain id and signing key) already held keeps the
/// held state as it is, so a replayed distribution message cannot rewind the
/// chain; a chain id held with another signing key is replaced; and beyond
/// [`MAX_SENDER_KEY_STATES`](crate::limits::MAX_SENDER_KEY_STATES) the
/// oldest states are dropped.
pub fn process_sender_key_distribution_message<S>(
    sender: &ProtocolAddress,
    skdm: &SenderKeyDistributionMessage,
    store: &mut S,
) -> Result<()>
where
    S: SenderKeyStore + ?Sized,
{
    let distribution_id = skdm.distribution_id();
    let mut record = store
        .load_sender_key(sender, distribution_id)?
        .unwrap_or_else(SenderKeyRecord::new_empty);
    record.add_state(SenderKeyState::new(
        skdm.chain_id(),
        skdm.iteration(),
        skdm.chain_key(),
        *skdm.signing_key(),
        None,
    ));
    store.store_sender_key(sender, distribution_id, &record)
}

/// Encrypts `plaintext` to the distribution with the sender's newest state
/// (AES-256-CBC with PKCS#7 padding), signs the message, and stores the
/// chain one step on.
///
/// # Errors
///
/// [`Error::NoSenderKeyState`] if the sender has no state for the
/// distribution (call [`create_sender_key_distribution_message`] first),
/// [`Error::InvalidRecord`] if its newest state cannot send,
/// [`Error::CounterExhausted`] at the end of the chain, and any error of the
/// store.
pub fn group_encrypt<S, R>(
    store: &mut S,
    sender: &ProtocolAddress,
    distribution_id: Uuid,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<SenderKeyMessage>
where
    S: SenderKeyStore + ?Sized,
    R: RngCore + CryptoRng,
{
    let mut record = store
        .load_sender_key(sender, distribution_id)?
        .ok_or_else(|| no_state(sender, distribution_id))?;
    let (state, signing_key) = sending_state(&record)?;
    let chain_key = state.chain_key().clone();
    let next = chain_key.next()?;
    let message_key = chain_key.message_key();
    let ciphertext = encrypt(&message_key.keys(), plaintext);
    let message = SenderKeyMessage::new(
        distribution_id,
        state.chain_id(),
        chain_key.iteration(),
        ciphertext,
        signing_key,
        rng,
    );
    if let Some(state) = record.current_state_mut() {
        state.set_chain_key(next);
    }
    store.store_sender_key(sender, distribution_id, &record)?;
    Ok(message)
}

/// Decrypts a serialized [`SenderKeyMessage`] from `sender`.
///
/// The message names its distribution and chain; its signature must verify
/// with the chain's signing key. Messages may arrive out of order: the keys
/// of skipped iterations are kept (up to
/// [`MAX_MESSAGE_KEYS`](crate::limits::MAX_MESSAGE_KEYS) of them) and used
/// once. The record is stored only when every check has passed and the
/// message has decrypted; on any error the store is left as it was.
///
/// # Errors
///
/// Parse errors of [`SenderKeyMessage::deserialize`];
/// [`Error::NoSenderKeyState`] if the distribution or the chain is unknown;
/// [`Error::BadSenderKeySignature`]; [`Error::DuplicateMessage`] for an
/// iteration already decrypted (or skipped so long ago that its key was
/// dropped); [`Error::MessageTooFarAhead`] for an iteration more than
/// [`MAX_FORWARD_JUMPS`](crate::limits::MAX_FORWARD_JUMPS) ahead of the
/// chain; [`Error::CounterExhausted`] at the chain's end;
/// [`Error::BadCiphertext`] if the (authentic) ciphertext does not decrypt;
/// and any error of the store.
pub fn group_decrypt<S>(
    ciphertext: &[u8],
    store: &mut S,
    sender: &ProtocolAddress,
) -> Result<Vec<u8>>
where
    S: SenderKeyStore + ?Sized,
{
    let message = SenderKeyMessage::deserialize(ciphertext)?;
    let distribution_id = message.distribution_id();
    // The record is a copy: changes to it are staged until the store below.
    let mut record = store
        .load_sender_key(sender, distribution_id)?
        .ok_or_else(|| no_state(sender, distribution_id))?;
    let state = record
        .state_for_chain_id_mut(message.chain_id())
        .ok_or_else(|| no_state(sender, distribution_id))?;
    if !message.verify_signature(state.signing_key()) {
        return Err(Error::BadSenderKeySignature);
    }
    let message_key = state.message_key(message.iteration())?;
    let plaintext = decrypt(&message_key.keys(), message.ciphertext())?;
    store.store_sender_key(sender, distribution_id, &record)?;
    Ok(plaintext)
}

fn no_state(sender: &ProtocolAddress, distribution_id: Uuid) -> Error {
    Error::NoSenderKeyState {
        sender: sender.clone(),
        distribution_id,
    }
}

/// The newest state and its private signing key, which it must hold.
fn sending_state(record: &SenderKeyRecord) -> Result<(&SenderKeyState, &PrivateKey)> {
    // Records are never empty: deserialize refuses empty ones.
    let state = record
        .current_state()
        .ok_or(Error::InvalidRecord("sender key record"))?;
    let signing_key = state.signing_private_key().ok_or(Error::InvalidRecord(
        "sender key state (no private signing key to send with)",
    ))?;
    Ok((state, signing_key))
}

fn encrypt(keys: &MessageKeys, plaintext: &[u8]) -> Vec<u8> {
    aes256_cbc_encrypt(&keys.cipher_key, &keys.iv, plaintext)
}

fn decrypt(keys: &MessageKeys, ciphertext: &[u8]) -> Result<Vec<u8>> {
    aes256_cbc_decrypt(&keys.cipher_key, &keys.iv, ciphertext).ok_or(Error::BadCiphertext)
}
