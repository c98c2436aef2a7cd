//! Parses arbitrary bytes as a PreKeySignalMessage, and decrypts what
//! parses with a real device named by service ids, so that the address
//! binding (libsignal's `addresses` field) is checked too: a typed error,
//! never a panic.

#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use passerelle_signal::{
    CiphertextMessage, IdentityKeyPair, InMemoryStore, PreKeySignalMessage, ProtocolAddress,
    message_decrypt,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

static DEVICE: Mutex<Option<(InMemoryStore, ChaCha20Rng)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Ok(message) = PreKeySignalMessage::deserialize(data) else {
        return;
    };
    assert_eq!(message.serialized(), data);
    let mut device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let (store, rng) = device.get_or_insert_with(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let identity = IdentityKeyPair::generate(&mut rng);
        (InMemoryStore::new(identity, 1), rng)
    });
    let from = ProtocolAddress::new("5f7a2a8e-0b9c-4f7e-9d59-3c1e4bd0a001", 1);
    let to = ProtocolAddress::new("PNI:5f7a2a8e-0b9c-4f7e-9d59-3c1e4bd0a002", 2);
    let _ = message_decrypt(&CiphertextMessage::PreKey(message), &from, &to, store, rng);
});
