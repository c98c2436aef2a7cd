//! Sender keys: round trips, out-of-order delivery, duplicates, messages
//! too far ahead, tampering, several senders, the wire and stored formats,
//! and libsignal's limits.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use passerelle_signal::sender_keys::{
    InMemSenderKeyStore, SENDER_KEY_MESSAGE_VERSION, SenderKeyDistributionMessage,
    SenderKeyMessage, SenderKeyRecord, SenderKeyStore, create_sender_key_distribution_message,
    group_decrypt, group_encrypt, process_sender_key_distribution_message,
};
use passerelle_signal::{Error, KeyPair, ProtocolAddress, limits};
use proptest::prelude::*;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha20Rng;
use sha2::Sha256;
use uuid::Uuid;

const GROUP: Uuid = Uuid::from_u128(0xd1d1d1d1_7000_11eb_b32a_33b8a8a487a6);

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A group member: its address and its own sender key store.
struct Member {
    address: ProtocolAddress,
    store: InMemSenderKeyStore,
}

impl Member {
    fn new(name: &str, device: u32) -> Self {
        Self {
            address: ProtocolAddress::new(name, device),
            store: InMemSenderKeyStore::new(),
        }
    }

    fn skdm(&mut self, rng: &mut ChaCha20Rng) -> SenderKeyDistributionMessage {
        create_sender_key_distribution_message(&self.address, GROUP, &mut self.store, rng).unwrap()
    }

    fn receive_skdm(&mut self, from: &ProtocolAddress, skdm: &SenderKeyDistributionMessage) {
        // Over the wire and back, as it would travel.
        let skdm = SenderKeyDistributionMessage::deserialize(skdm.serialized()).unwrap();
        process_sender_key_distribution_message(from, &skdm, &mut self.store).unwrap();
    }

    fn encrypt(&mut self, plaintext: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
        group_encrypt(&mut self.store, &self.address, GROUP, plaintext, rng)
            .unwrap()
            .serialized()
            .to_vec()
    }

    fn decrypt(&mut self, from: &ProtocolAddress, message: &[u8]) -> Result<Vec<u8>, Error> {
        group_decrypt(message, &mut self.store, from)
    }

    /// The stored record of `sender`, serialized, to check it is unchanged.
    fn record(&self, sender: &ProtocolAddress) -> Vec<u8> {
        self.store
            .load_sender_key(sender, GROUP)
            .unwrap()
            .map(|record| record.serialize().to_vec())
            .unwrap_or_default()
    }
}

/// Alice sends; Bob has her distribution message.
fn pair(seed: u64) -> (Member, Member, ChaCha20Rng) {
    let mut rng = rng(seed);
    let mut alice = Member::new("alice", 1);
    let mut bob = Member::new("bob", 1);
    let skdm = alice.skdm(&mut rng);
    bob.receive_skdm(&alice.address, &skdm);
    (alice, bob, rng)
}

// ---- an independent reference of the chain, written from the spec ----

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The chain key `steps` steps on.
fn ref_chain_key(mut chain_key: [u8; 32], steps: u32) -> [u8; 32] {
    for _ in 0..steps {
        chain_key = hmac(&chain_key, &[0x02]);
    }
    chain_key
}

/// AES-256-CBC with the message key of `chain_key`'s iteration.
fn ref_encrypt(chain_key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let seed = hmac(chain_key, &[0x01]);
    let mut okm = [0u8; 48];
    hkdf::Hkdf::<Sha256>::new(None, &seed)
        .expand(b"WhisperGroup", &mut okm)
        .unwrap();
    let (iv, key) = okm.split_at(16);
    cbc::Encryptor::<Aes256>::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

/// A receiver holding a hand-made chain whose keys the test knows, so that
/// it can forge messages at any iteration.
struct KnownChain {
    sender: ProtocolAddress,
    chain_id: u32,
    chain_key: [u8; 32],
    signing: KeyPair,
    receiver: InMemSenderKeyStore,
    rng: ChaCha20Rng,
}

impl KnownChain {
    fn new(seed: u64, start_iteration: u32) -> Self {
        let mut rng = rng(seed);
        let signing = KeyPair::generate(&mut rng);
        let chain_key = [0x5a; 32];
        let sender = ProtocolAddress::new("carol", 2);
        let skdm = SenderKeyDistributionMessage::new(
            GROUP,
            4242,
            start_iteration,
            &chain_key,
            signing.public,
        );
        let mut receiver = InMemSenderKeyStore::new();
        process_sender_key_distribution_message(&sender, &skdm, &mut receiver).unwrap();
        Self {
            sender,
            chain_id: 4242,
            chain_key,
            signing,
            receiver,
            rng,
        }
    }

    /// A message at `iteration`, with the chain key `steps` past the SKDM's.
    fn message(&mut self, iteration: u32, steps: u32, plaintext: &[u8]) -> SenderKeyMessage {
        let ciphertext = ref_encrypt(&ref_chain_key(self.chain_key, steps), plaintext);
        SenderKeyMessage::new(
            GROUP,
            self.chain_id,
            iteration,
            ciphertext,
            &self.signing.private,
            &mut self.rng,
        )
    }

    fn decrypt(&mut self, message: &SenderKeyMessage) -> Result<Vec<u8>, Error> {
        group_decrypt(message.serialized(), &mut self.receiver, &self.sender)
    }

    fn record(&self) -> SenderKeyRecord {
        self.receiver
            .load_sender_key(&self.sender, GROUP)
            .unwrap()
            .unwrap()
    }
}

// ---- round trips ----

#[test]
fn round_trip() {
    let (mut alice, mut bob, mut rng) = pair(1);
    for i in 0..5u8 {
        let plaintext = vec![i; usize::from(i) * 7];
        let message = alice.encrypt(&plaintext, &mut rng);
        assert_eq!(message[0], 0x33);
        let parsed = SenderKeyMessage::deserialize(&message).unwrap();
        assert_eq!(parsed.iteration(), u32::from(i));
        assert_eq!(parsed.distribution_id(), GROUP);
        assert_eq!(parsed.message_version(), SENDER_KEY_MESSAGE_VERSION);
        assert_eq!(parsed.ciphertext().len() % 16, 0);
        assert_eq!(bob.decrypt(&alice.address, &message).unwrap(), plaintext);
    }
    // The sender cannot read its own messages: it has no receiving state
    // for itself, only the sending one, whose chain is already past them.
    let message = alice.encrypt(b"to self", &mut rng);
    let own = alice.address.clone();
    assert!(alice.decrypt(&own, &message).is_err());
}

#[test]
fn distribution_message_is_stable_and_carries_the_current_iteration() {
    let (mut alice, _, mut rng) = pair(2);
    let first = alice.skdm(&mut rng);
    // A second call distributes the same chain.
    assert_eq!(alice.skdm(&mut rng), first);
    assert_eq!(first.iteration(), 0);
    assert!(
        first.chain_id() < 1 << 31,
        "libsignal's chain ids are 31-bit"
    );
    let one = alice.encrypt(b"one", &mut rng);
    let two = alice.encrypt(b"two", &mut rng);
    let later = alice.skdm(&mut rng);
    assert_eq!(later.chain_id(), first.chain_id());
    assert_eq!(later.signing_key(), first.signing_key());
    assert_eq!(later.iteration(), 2);
    assert_ne!(later.chain_key(), first.chain_key());

    // A member who joins late gets the later chain key: it reads what comes
    // next but not what came before.
    let mut dave = Member::new("dave", 3);
    dave.receive_skdm(&alice.address, &later);
    let three = alice.encrypt(b"three", &mut rng);
    assert_eq!(dave.decrypt(&alice.address, &three).unwrap(), b"three");
    for (message, index) in [(&one, 0), (&two, 1)] {
        assert_eq!(
            dave.decrypt(&alice.address, message),
            Err(Error::DuplicateMessage { index })
        );
    }
}

#[test]
fn matches_an_independent_reference_of_the_chain() {
    let mut chain = KnownChain::new(3, 0);
    for (iteration, text) in [
        (0u32, &b"zero"[..]),
        (1, b"one"),
        (5, b"five"),
        (3, b"three"),
    ] {
        let message = chain.message(iteration, iteration, text);
        assert_eq!(chain.decrypt(&message).unwrap(), text);
    }
    // The chain key stored is three steps on from the last in order (5).
    let record = chain.record();
    let state = record.states().next().unwrap();
    assert_eq!(state.iteration(), 6);
    assert_eq!(state.stored_message_keys(), 2, "iterations 2 and 4");
    assert!(!state.can_send());
}

// ---- out of order, duplicates, far ahead ----

#[test]
fn out_of_order_within_the_window() {
    let (mut alice, mut bob, mut rng) = pair(4);
    let messages: Vec<(Vec<u8>, Vec<u8>)> = (0..40u32)
        .map(|i| {
            let plaintext = format!("message {i}").into_bytes();
            (alice.encrypt(&plaintext, &mut rng), plaintext)
        })
        .collect();
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.shuffle(&mut rng);
    for &i in &order {
        let (message, plaintext) = &messages[i];
        assert_eq!(&bob.decrypt(&alice.address, message).unwrap(), plaintext);
    }
    let record = bob
        .store
        .load_sender_key(&alice.address, GROUP)
        .unwrap()
        .unwrap();
    let state = record.states().next().unwrap();
    assert_eq!(state.iteration(), 40);
    assert_eq!(state.stored_message_keys(), 0, "every skipped key was used");
}

#[test]
fn duplicates_are_refused_and_change_nothing() {
    let (mut alice, mut bob, mut rng) = pair(5);
    let first = alice.encrypt(b"first", &mut rng);
    let second = alice.encrypt(b"second", &mut rng);
    let third = alice.encrypt(b"third", &mut rng);

    assert_eq!(bob.decrypt(&alice.address, &third).unwrap(), b"third");
    assert_eq!(bob.decrypt(&alice.address, &first).unwrap(), b"first");
    let before = bob.record(&alice.address);
    for (message, index) in [(&first, 0), (&third, 2)] {
        assert_eq!(
            bob.decrypt(&alice.address, message),
            Err(Error::DuplicateMessage { index })
        );
        assert_eq!(bob.record(&alice.address), before);
    }
    // The one still outstanding decrypts, once.
    assert_eq!(bob.decrypt(&alice.address, &second).unwrap(), b"second");
    assert_eq!(
        bob.decrypt(&alice.address, &second),
        Err(Error::DuplicateMessage { index: 1 })
    );
}

#[test]
fn too_far_ahead_is_refused_and_the_window_is_libsignals() {
    assert_eq!(limits::MAX_FORWARD_JUMPS, 25_000);
    assert_eq!(limits::MAX_MESSAGE_KEYS, 2_000);
    let max = limits::MAX_FORWARD_JUMPS;

    let mut chain = KnownChain::new(6, 0);
    let before = chain.record().serialize();
    let far = chain.message(max + 1, max + 1, b"far");
    assert_eq!(
        chain.decrypt(&far),
        Err(Error::MessageTooFarAhead {
            index: max + 1,
            current: 0
        })
    );
    assert_eq!(chain.record().serialize(), before);

    // Exactly the limit is allowed; only the newest skipped keys are kept.
    let edge = chain.message(max, max, b"edge");
    assert_eq!(chain.decrypt(&edge).unwrap(), b"edge");
    let record = chain.record();
    let state = record.states().next().unwrap();
    assert_eq!(state.iteration(), max + 1);
    assert_eq!(state.stored_message_keys(), limits::MAX_MESSAGE_KEYS);

    // A skipped key that was dropped reads as a duplicate; a kept one works.
    let dropped = max - limits::MAX_MESSAGE_KEYS as u32 - 1;
    let old = chain.message(dropped, dropped, b"old");
    assert_eq!(
        chain.decrypt(&old),
        Err(Error::DuplicateMessage { index: dropped })
    );
    let kept = max - limits::MAX_MESSAGE_KEYS as u32;
    let message = chain.message(kept, kept, b"kept");
    assert_eq!(chain.decrypt(&message).unwrap(), b"kept");

    // The window moves with the chain.
    let next = chain.message(2 * max + 1, 2 * max + 1, b"next");
    assert_eq!(chain.decrypt(&next).unwrap(), b"next");
}

#[test]
fn the_chain_ends_at_u32_max() {
    let mut chain = KnownChain::new(7, u32::MAX);
    let message = chain.message(u32::MAX, 0, b"last");
    let before = chain.record().serialize();
    assert_eq!(chain.decrypt(&message), Err(Error::CounterExhausted));
    assert_eq!(chain.record().serialize(), before);
}

// ---- authenticity and tampering ----

#[test]
fn tampering_with_any_byte_fails_and_changes_nothing() {
    let (mut alice, mut bob, mut rng) = pair(8);
    let message = alice.encrypt(b"an authentic message to the group", &mut rng);
    let before = bob.record(&alice.address);
    for index in 0..message.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut tampered = message.clone();
            tampered[index] ^= mask;
            assert!(
                bob.decrypt(&alice.address, &tampered).is_err(),
                "byte {index} ^ {mask:#04x} accepted"
            );
            assert_eq!(
                bob.record(&alice.address),
                before,
                "byte {index} changed state"
            );
        }
    }
    // Truncated or extended messages fail too.
    for len in 0..message.len() {
        assert!(bob.decrypt(&alice.address, &message[..len]).is_err());
    }
    let mut longer = message.clone();
    longer.push(0);
    assert!(bob.decrypt(&alice.address, &longer).is_err());
    assert_eq!(bob.record(&alice.address), before);
    assert_eq!(
        bob.decrypt(&alice.address, &message).unwrap(),
        b"an authentic message to the group"
    );
}

#[test]
fn another_signing_key_is_refused() {
    let mut chain = KnownChain::new(9, 0);
    let mut rng = rng(90);
    let forger = KeyPair::generate(&mut rng);
    let ciphertext = ref_encrypt(&chain.chain_key, b"forged");
    let forged = SenderKeyMessage::new(
        GROUP,
        chain.chain_id,
        0,
        ciphertext,
        &forger.private,
        &mut rng,
    );
    let before = chain.record().serialize();
    assert_eq!(chain.decrypt(&forged), Err(Error::BadSenderKeySignature));
    assert_eq!(chain.record().serialize(), before);
    assert!(!forged.verify_signature(&chain.signing.public));
    assert!(forged.verify_signature(&forger.public));
}

#[test]
fn an_authentic_but_undecryptable_message_changes_nothing() {
    let mut chain = KnownChain::new(10, 0);
    // Signed by the real key, encrypted with the wrong one.
    let mut message = chain.message(3, 4, b"wrong key");
    let before = chain.record().serialize();
    assert_eq!(chain.decrypt(&message), Err(Error::BadCiphertext));
    assert_eq!(chain.record().serialize(), before);
    // A ciphertext that is not whole blocks.
    message = SenderKeyMessage::new(
        GROUP,
        chain.chain_id,
        0,
        vec![1; 17],
        &chain.signing.private,
        &mut chain.rng,
    );
    assert_eq!(chain.decrypt(&message), Err(Error::BadCiphertext));
    message = SenderKeyMessage::new(
        GROUP,
        chain.chain_id,
        0,
        vec![],
        &chain.signing.private,
        &mut chain.rng,
    );
    assert_eq!(chain.decrypt(&message), Err(Error::BadCiphertext));
    assert_eq!(chain.record().serialize(), before);
}

#[test]
fn missing_states_are_reported() {
    let mut rng = rng(11);
    let mut alice = Member::new("alice", 1);
    let mut bob = Member::new("bob", 1);
    // Nothing to send with.
    assert_eq!(
        group_encrypt(&mut alice.store, &alice.address, GROUP, b"x", &mut rng).err(),
        Some(Error::NoSenderKeyState {
            sender: alice.address.clone(),
            distribution_id: GROUP
        })
    );
    let skdm = alice.skdm(&mut rng);
    let message = alice.encrypt(b"hello", &mut rng);
    // Bob never got the distribution message.
    assert_eq!(
        bob.decrypt(&alice.address, &message),
        Err(Error::NoSenderKeyState {
            sender: alice.address.clone(),
            distribution_id: GROUP
        })
    );
    // Bob has a chain of Alice's, but not that one.
    let mut other = Member::new("alice", 1);
    let other_skdm = other.skdm(&mut rng);
    bob.receive_skdm(&alice.address, &other_skdm);
    assert!(matches!(
        bob.decrypt(&alice.address, &message),
        Err(Error::NoSenderKeyState { .. })
    ));
    // The same chain under another device of Alice's is another sender.
    bob.receive_skdm(&ProtocolAddress::new("alice", 2), &skdm);
    assert!(matches!(
        bob.decrypt(&alice.address, &message),
        Err(Error::NoSenderKeyState { .. })
    ));
    assert_eq!(
        bob.decrypt(&ProtocolAddress::new("alice", 2), &message)
            .unwrap(),
        b"hello"
    );
}

#[test]
fn a_receive_only_record_cannot_send() {
    let mut rng = rng(12);
    let mut alice = Member::new("alice", 1);
    let mut bob = Member::new("bob", 1);
    let skdm = alice.skdm(&mut rng);
    // Bob is told (wrongly) that this chain is his own.
    let bob_address = bob.address.clone();
    bob.receive_skdm(&bob_address, &skdm);
    assert!(matches!(
        group_encrypt(&mut bob.store, &bob_address, GROUP, b"x", &mut rng),
        Err(Error::InvalidRecord(_))
    ));
    assert!(matches!(
        create_sender_key_distribution_message(&bob_address, GROUP, &mut bob.store, &mut rng),
        Err(Error::InvalidRecord(_))
    ));
}

// ---- groups ----

#[test]
fn several_senders_in_one_group() {
    let mut rng = rng(13);
    let mut members = vec![
        Member::new("alice", 1),
        Member::new("bob", 1),
        Member::new("bob", 2),
        Member::new("carol", 1),
    ];
    for i in 0..members.len() {
        let skdm = members[i].skdm(&mut rng);
        let from = members[i].address.clone();
        for (j, member) in members.iter_mut().enumerate() {
            if i != j {
                member.receive_skdm(&from, &skdm);
            }
        }
    }
    // Three rounds from everyone, each member receiving all of them in
    // reverse order.
    let mut sent = Vec::new();
    for round in 0..3 {
        for member in &mut members {
            let plaintext = format!("{} round {round}", member.address).into_bytes();
            sent.push((
                member.address.clone(),
                member.encrypt(&plaintext, &mut rng),
                plaintext,
            ));
        }
    }
    for member in &mut members {
        for (from, message, plaintext) in sent.iter().rev() {
            if *from != member.address {
                assert_eq!(&member.decrypt(from, message).unwrap(), plaintext);
            }
        }
    }
    // One sender's message under another sender's name does not decrypt.
    let message = members[0].encrypt(b"from alice", &mut rng);
    let bob = members[1].address.clone();
    assert!(members[3].decrypt(&bob, &message).is_err());
}

#[test]
fn records_keep_libsignals_number_of_states() {
    assert_eq!(limits::MAX_SENDER_KEY_STATES, 5);
    let mut rng = rng(14);
    let alice = ProtocolAddress::new("alice", 1);
    let mut bob = InMemSenderKeyStore::new();
    let mut chains = Vec::new();
    for _ in 0..=limits::MAX_SENDER_KEY_STATES {
        // Each a fresh install of Alice's, so a new chain.
        let mut store = InMemSenderKeyStore::new();
        let skdm =
            create_sender_key_distribution_message(&alice, GROUP, &mut store, &mut rng).unwrap();
        process_sender_key_distribution_message(&alice, &skdm, &mut bob).unwrap();
        chains.push((store, skdm.chain_id()));
    }
    let record = bob.load_sender_key(&alice, GROUP).unwrap().unwrap();
    let held: Vec<u32> = record.states().map(|state| state.chain_id()).collect();
    let expected: Vec<u32> = chains.iter().rev().take(5).map(|(_, id)| *id).collect();
    assert_eq!(held, expected, "newest first, oldest dropped");

    // The dropped chain's messages are refused; the others decrypt.
    let (store, _) = &mut chains[0];
    let message = group_encrypt(store, &alice, GROUP, b"old chain", &mut rng).unwrap();
    assert!(matches!(
        group_decrypt(message.serialized(), &mut bob, &alice),
        Err(Error::NoSenderKeyState { .. })
    ));
    let (store, _) = &mut chains[1];
    let message = group_encrypt(store, &alice, GROUP, b"kept chain", &mut rng).unwrap();
    assert_eq!(
        group_decrypt(message.serialized(), &mut bob, &alice).unwrap(),
        b"kept chain"
    );
}

#[test]
fn a_replayed_distribution_message_does_not_rewind_the_chain() {
    let mut rng = rng(15);
    let mut alice = Member::new("alice", 1);
    let mut bob = Member::new("bob", 1);
    let skdm = alice.skdm(&mut rng);
    bob.receive_skdm(&alice.address, &skdm);
    let message = alice.encrypt(b"once", &mut rng);
    assert_eq!(bob.decrypt(&alice.address, &message).unwrap(), b"once");
    bob.receive_skdm(&alice.address, &skdm);
    assert_eq!(
        bob.decrypt(&alice.address, &message),
        Err(Error::DuplicateMessage { index: 0 })
    );

    // The same chain id with another signing key replaces the state.
    let impostor = KeyPair::generate(&mut rng);
    let replaced = SenderKeyDistributionMessage::new(
        GROUP,
        skdm.chain_id(),
        0,
        skdm.chain_key(),
        impostor.public,
    );
    bob.receive_skdm(&alice.address, &replaced);
    let record = bob
        .store
        .load_sender_key(&alice.address, GROUP)
        .unwrap()
        .unwrap();
    assert_eq!(record.states().len(), 1);
    assert_eq!(
        record.states().next().unwrap().signing_key(),
        &impostor.public
    );
    let message = alice.encrypt(b"twice", &mut rng);
    assert_eq!(
        bob.decrypt(&alice.address, &message),
        Err(Error::BadSenderKeySignature)
    );
}

// ---- wire formats ----

/// A protobuf varint.
fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

/// A length-delimited protobuf field.
fn field_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint protobuf field.
fn field_varint(out: &mut Vec<u8>, tag: u8, value: u64) {
    out.push(tag << 3);
    varint(out, value);
}

#[test]
fn sender_key_message_layout() {
    let mut rng = rng(16);
    let signing = KeyPair::generate(&mut rng);
    let message = SenderKeyMessage::new(GROUP, 300, 7, vec![1, 2, 3], &signing.private, &mut rng);
    let mut expected = vec![0x33];
    field_bytes(&mut expected, 1, GROUP.as_bytes());
    field_varint(&mut expected, 2, 300);
    field_varint(&mut expected, 3, 7);
    field_bytes(&mut expected, 4, &[1, 2, 3]);
    let bytes = message.serialized();
    assert_eq!(&bytes[..bytes.len() - 64], &expected[..]);
    assert_eq!(bytes.len(), expected.len() + 64);
    assert!(
        signing
            .public
            .verify(&[&expected], &bytes[expected.len()..])
    );
    let parsed = SenderKeyMessage::deserialize(bytes).unwrap();
    assert_eq!(parsed, message);
    assert_eq!((parsed.chain_id(), parsed.iteration()), (300, 7));
    assert_eq!(parsed.ciphertext(), [1, 2, 3]);
}

#[test]
fn distribution_message_layout() {
    let mut rng = rng(17);
    let signing = KeyPair::generate(&mut rng);
    let skdm = SenderKeyDistributionMessage::new(GROUP, 0, 0, &[9; 32], signing.public);
    let mut expected = vec![0x33];
    field_bytes(&mut expected, 1, GROUP.as_bytes());
    field_varint(&mut expected, 2, 0);
    field_varint(&mut expected, 3, 0);
    field_bytes(&mut expected, 4, &[9; 32]);
    field_bytes(&mut expected, 5, &signing.public.serialize());
    assert_eq!(skdm.serialized(), &expected[..]);
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&expected).unwrap(),
        skdm
    );
}

/// A protobuf field for [`skm_bytes`]: its tag, and bytes or a varint.
type Field<'a> = (u8, Option<&'a [u8]>, Option<u64>);

/// A SenderKeyMessage body with the given fields and a dummy signature.
fn skm_bytes(version: u8, fields: &[Field]) -> Vec<u8> {
    let mut out = vec![version];
    for &(tag, bytes, varint) in fields {
        if let Some(bytes) = bytes {
            field_bytes(&mut out, tag, bytes);
        }
        if let Some(value) = varint {
            field_varint(&mut out, tag, value);
        }
    }
    out.extend_from_slice(&[0; 64]);
    out
}

#[test]
fn sender_key_message_parse_errors() {
    let uuid = GROUP.as_bytes().as_slice();
    let full: [Field; 4] = [
        (1, Some(uuid), None),
        (2, None, Some(1)),
        (3, None, Some(2)),
        (4, Some(&[0; 16]), None),
    ];
    assert!(SenderKeyMessage::deserialize(&skm_bytes(0x33, &full)).is_ok());

    assert_eq!(
        SenderKeyMessage::deserialize(&[]),
        Err(Error::MessageTooShort(0))
    );
    assert_eq!(
        SenderKeyMessage::deserialize(&[0x33; 64]),
        Err(Error::MessageTooShort(64))
    );
    assert_eq!(
        SenderKeyMessage::deserialize(&skm_bytes(0x23, &full)),
        Err(Error::LegacyVersion(2))
    );
    assert_eq!(
        SenderKeyMessage::deserialize(&skm_bytes(0x43, &full)),
        Err(Error::UnrecognizedVersion(4))
    );
    assert_eq!(
        SenderKeyMessage::deserialize(&skm_bytes(0x34, &full)),
        Err(Error::UnrecognizedVersion(4))
    );
    for (missing, name) in [
        (0, "distribution_uuid"),
        (1, "chain_id"),
        (2, "iteration"),
        (3, "ciphertext"),
    ] {
        let mut fields = full.to_vec();
        fields.remove(missing);
        assert_eq!(
            SenderKeyMessage::deserialize(&skm_bytes(0x33, &fields)),
            Err(Error::MissingField {
                message: "SenderKeyMessage",
                field: name
            })
        );
    }
    // A UUID of the wrong length; a field twice; an unknown field; fields
    // out of order; a varint not minimally encoded.
    let mut bad = full.to_vec();
    bad[0] = (1, Some(&uuid[..15]), None);
    let twice = [full.as_slice(), &full[1..2]].concat();
    let unknown = [full.as_slice(), &[(9, None, Some(1))]].concat();
    let reordered = [&full[1..], &full[..1]].concat();
    let mut long_varint = skm_bytes(0x33, &full);
    // chain_id 1 as the two-byte varint 0x81 0x00
    let at = 1 + 2 + 16 + 1;
    long_varint.splice(at..at + 1, [0x81, 0x00]);
    for (what, bytes) in [
        ("short uuid", skm_bytes(0x33, &bad)),
        ("field twice", skm_bytes(0x33, &twice)),
        ("unknown field", skm_bytes(0x33, &unknown)),
        ("reordered", skm_bytes(0x33, &reordered)),
        ("long varint", long_varint),
    ] {
        assert_eq!(
            SenderKeyMessage::deserialize(&bytes),
            Err(Error::InvalidProtobuf("SenderKeyMessage")),
            "{what}"
        );
    }
    let mut garbage = skm_bytes(0x33, &full);
    garbage.insert(1, 0xff);
    assert_eq!(
        SenderKeyMessage::deserialize(&garbage),
        Err(Error::InvalidProtobuf("SenderKeyMessage"))
    );
}

#[test]
fn distribution_message_parse_errors() {
    let mut rng = rng(18);
    let signing = KeyPair::generate(&mut rng);
    let key = signing.public.serialize();
    let build = |version: u8, skip: Option<u8>, chain_key: &[u8], key: &[u8]| {
        let mut out = vec![version];
        let tags = |tag| skip != Some(tag);
        if tags(1) {
            field_bytes(&mut out, 1, GROUP.as_bytes());
        }
        if tags(2) {
            field_varint(&mut out, 2, 5);
        }
        if tags(3) {
            field_varint(&mut out, 3, 6);
        }
        if tags(4) {
            field_bytes(&mut out, 4, chain_key);
        }
        if tags(5) {
            field_bytes(&mut out, 5, key);
        }
        out
    };
    let good = build(0x33, None, &[1; 32], &key);
    let skdm = SenderKeyDistributionMessage::deserialize(&good).unwrap();
    assert_eq!((skdm.chain_id(), skdm.iteration()), (5, 6));
    assert_eq!(skdm.chain_key(), &[1; 32]);
    assert_eq!(skdm.signing_key(), &signing.public);
    assert_eq!(skdm.serialized(), &good[..]);

    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&good[..64]),
        Err(Error::MessageTooShort(64))
    );
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&build(0x13, None, &[1; 32], &key)),
        Err(Error::LegacyVersion(1))
    );
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&build(0xf3, None, &[1; 32], &key)),
        Err(Error::UnrecognizedVersion(15))
    );
    for (tag, name) in [
        (1, "distribution_uuid"),
        (2, "chain_id"),
        (3, "iteration"),
        (4, "chain_key"),
        (5, "signing_key"),
    ] {
        // Padded with an unknown field where needed to pass the length check.
        let mut bytes = build(0x33, Some(tag), &[1; 32], &key);
        if bytes.len() < 65 {
            field_bytes(&mut bytes, 15, &[0; 40]);
        }
        assert_eq!(
            SenderKeyDistributionMessage::deserialize(&bytes),
            Err(Error::MissingField {
                message: "SenderKeyDistributionMessage",
                field: name
            })
        );
    }
    let invalid = Err(Error::InvalidProtobuf("SenderKeyDistributionMessage"));
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&build(0x33, None, &[1; 31], &key)),
        invalid
    );
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&build(0x33, None, &[1; 33], &key)),
        invalid
    );
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&build(0x33, None, &[1; 32], &key[..32])),
        invalid
    );
    let mut bad_type = key;
    bad_type[0] = 0x06;
    assert_eq!(
        SenderKeyDistributionMessage::deserialize(&build(0x33, None, &[1; 32], &bad_type)),
        Err(Error::BadKeyType(6))
    );
    // Trailing bytes: garbage, an unknown field, a field again.
    for tail in [&[0x00][..], &[0x78, 0x01], &[0x10, 0x05]] {
        let bytes = [good.as_slice(), tail].concat();
        assert_eq!(
            SenderKeyDistributionMessage::deserialize(&bytes),
            invalid,
            "{tail:?}"
        );
    }
}

#[test]
fn debug_output_holds_no_secrets() {
    let (mut alice, bob, mut rng) = pair(19);
    let skdm = alice.skdm(&mut rng);
    let secret = hex::encode(skdm.chain_key());
    let printed = format!(
        "{skdm:?} {:?} {:?} {:?}",
        alice.store,
        bob.store,
        SenderKeyRecord::deserialize(&alice.record(&alice.address)).unwrap()
    );
    assert!(!printed.contains(&secret));
    assert!(!printed.contains(&format!("{:?}", skdm.chain_key())));
    assert!(printed.contains("chain_id"));
}

// ---- stored records ----

#[test]
fn record_serialization_round_trip() {
    let mut chain = KnownChain::new(20, 10);
    for iteration in [12, 15, 11] {
        let message = chain.message(iteration, iteration - 10, b"x");
        chain.decrypt(&message).unwrap();
    }
    let record = chain.record();
    let bytes = record.serialize();
    let again = SenderKeyRecord::deserialize(&bytes).unwrap();
    assert_eq!(again.serialize(), bytes);
    let state = again.states().next().unwrap();
    assert_eq!(state.iteration(), 16);
    assert_eq!(state.stored_message_keys(), 3, "10, 13, 14");

    // And the sender's own record, with its private key.
    let (alice, _, _) = pair(21);
    let bytes = alice.record(&alice.address);
    let record = SenderKeyRecord::deserialize(&bytes).unwrap();
    assert!(record.states().next().unwrap().can_send());
    assert_eq!(*record.serialize(), bytes);
}

/// A record written as libsignal's storage.proto lays it out, by hand.
#[test]
fn record_layout_is_libsignals() {
    let mut rng = rng(22);
    let signing = KeyPair::generate(&mut rng);
    let skdm = SenderKeyDistributionMessage::new(GROUP, 77, 3, &[4; 32], signing.public);
    let mut store = InMemSenderKeyStore::new();
    let alice = ProtocolAddress::new("alice", 1);
    process_sender_key_distribution_message(&alice, &skdm, &mut store).unwrap();
    let record = store.load_sender_key(&alice, GROUP).unwrap().unwrap();

    let mut chain_key = Vec::new();
    field_varint(&mut chain_key, 1, 3);
    field_bytes(&mut chain_key, 2, &[4; 32]);
    let mut signing_key = Vec::new();
    field_bytes(&mut signing_key, 1, &signing.public.serialize());
    let mut state = Vec::new();
    field_varint(&mut state, 1, 77);
    field_bytes(&mut state, 2, &chain_key);
    field_bytes(&mut state, 3, &signing_key);
    field_varint(&mut state, 5, 3);
    let mut expected = Vec::new();
    field_bytes(&mut expected, 1, &state);
    assert_eq!(*record.serialize(), expected);

    // libsignal reads an unset message version as 3.
    let mut old_state = Vec::new();
    field_varint(&mut old_state, 1, 77);
    field_bytes(&mut old_state, 2, &chain_key);
    field_bytes(&mut old_state, 3, &signing_key);
    let mut old = Vec::new();
    field_bytes(&mut old, 1, &old_state);
    assert_eq!(
        *SenderKeyRecord::deserialize(&old).unwrap().serialize(),
        expected
    );

    // The version guard.
    let mut v4 = state.clone();
    *v4.last_mut().unwrap() = 4;
    let mut bytes = Vec::new();
    field_bytes(&mut bytes, 1, &v4);
    assert_eq!(
        SenderKeyRecord::deserialize(&bytes).err(),
        Some(Error::InvalidRecord("sender key state version"))
    );
}

#[test]
fn bad_records_are_refused() {
    let (alice, _, _) = pair(23);
    let good = alice.record(&alice.address);
    assert!(SenderKeyRecord::deserialize(&good).is_ok());
    let refuse = |bytes: &[u8]| {
        assert!(
            matches!(
                SenderKeyRecord::deserialize(bytes),
                Err(Error::InvalidRecord(_))
            ),
            "{}",
            hex::encode(bytes)
        );
    };
    refuse(&[]);
    refuse(&[0xff]);
    refuse(&good[..good.len() - 1]);
    // Six states (the same one: also a repeated chain id), two states.
    refuse(&good.repeat(6));
    refuse(&good.repeat(2));
    // A private key that disagrees with the public one. The state ends with
    // the private key and then the message version (two bytes).
    let private_at = good.len() - 2 - 32;
    let mut bad = good.clone();
    bad[private_at] ^= 0x40;
    refuse(&bad);
}

#[test]
fn skipped_keys_in_records_must_be_ordered_and_behind_the_chain() {
    let mut chain = KnownChain::new(24, 0);
    let message = chain.message(2, 2, b"x");
    chain.decrypt(&message).unwrap();
    let good = chain.record().serialize().to_vec();
    assert!(SenderKeyRecord::deserialize(&good).is_ok());

    // The two kept keys (iterations 0 and 1), swapped.
    let mut chain_key = Vec::new();
    field_varint(&mut chain_key, 1, 3);
    field_bytes(&mut chain_key, 2, &ref_chain_key(chain.chain_key, 3));
    let mut signing_key = Vec::new();
    field_bytes(&mut signing_key, 1, &chain.signing.public.serialize());
    let key = |iteration: u64| {
        let mut key = Vec::new();
        if iteration != 0 {
            field_varint(&mut key, 1, iteration);
        }
        field_bytes(&mut key, 2, &[7; 32]);
        key
    };
    let record = |keys: &[u64]| {
        let mut state = Vec::new();
        field_varint(&mut state, 1, 4242);
        field_bytes(&mut state, 2, &chain_key);
        field_bytes(&mut state, 3, &signing_key);
        for &k in keys {
            field_bytes(&mut state, 4, &key(k));
        }
        field_varint(&mut state, 5, 3);
        let mut out = Vec::new();
        field_bytes(&mut out, 1, &state);
        out
    };
    assert!(SenderKeyRecord::deserialize(&record(&[0, 1])).is_ok());
    for keys in [&[1, 0][..], &[1, 1], &[0, 3], &[5]] {
        assert!(
            matches!(
                SenderKeyRecord::deserialize(&record(keys)),
                Err(Error::InvalidRecord("sender key message keys"))
            ),
            "{keys:?}"
        );
    }
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prop_round_trip(seed: u64, plaintexts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6)) {
        let (mut alice, mut bob, mut rng) = pair(seed);
        for plaintext in &plaintexts {
            let message = alice.encrypt(plaintext, &mut rng);
            let parsed = SenderKeyMessage::deserialize(&message).unwrap();
            prop_assert_eq!(parsed.serialized(), &message[..]);
            prop_assert_eq!(&bob.decrypt(&alice.address, &message).unwrap(), plaintext);
        }
    }

    #[test]
    fn prop_out_of_order(seed: u64, count in 1usize..24) {
        let (mut alice, mut bob, mut rng) = pair(seed);
        let mut messages: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
            .map(|i| {
                let plaintext = i.to_le_bytes().to_vec();
                (alice.encrypt(&plaintext, &mut rng), plaintext)
            })
            .collect();
        messages.shuffle(&mut rng);
        for (message, plaintext) in &messages {
            prop_assert_eq!(&bob.decrypt(&alice.address, message).unwrap(), plaintext);
        }
        for (message, _) in &messages {
            let duplicate = matches!(
                bob.decrypt(&alice.address, message),
                Err(Error::DuplicateMessage { .. })
            );
            prop_assert!(duplicate);
        }
    }

    #[test]
    fn prop_tamper(
        seed: u64,
        plaintext in prop::collection::vec(any::<u8>(), 0..100),
        index: prop::sample::Index,
        mask in 1u8..,
    ) {
        let (mut alice, mut bob, mut rng) = pair(seed);
        let message = alice.encrypt(&plaintext, &mut rng);
        let before = bob.record(&alice.address);
        let mut tampered = message.clone();
        tampered[index.index(message.len())] ^= mask;
        prop_assert!(bob.decrypt(&alice.address, &tampered).is_err());
        prop_assert_eq!(bob.record(&alice.address), before);
        prop_assert_eq!(bob.decrypt(&alice.address, &message).unwrap(), plaintext);
    }

    #[test]
    fn prop_parse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(message) = SenderKeyMessage::deserialize(&bytes) {
            prop_assert_eq!(message.serialized(), &bytes[..]);
            prop_assert_eq!(SenderKeyMessage::deserialize(message.serialized()).unwrap(), message);
        }
        if let Ok(skdm) = SenderKeyDistributionMessage::deserialize(&bytes) {
            prop_assert_eq!(skdm.serialized(), &bytes[..]);
            prop_assert_eq!(SenderKeyDistributionMessage::deserialize(skdm.serialized()).unwrap(), skdm);
        }
        let _ = SenderKeyRecord::deserialize(&bytes);
    }

    #[test]
    fn prop_parse_mutated_distribution_messages(seed: u64, index: prop::sample::Index, byte: u8) {
        let mut rng = rng(seed);
        let mut alice = Member::new("alice", 1);
        let mut bytes = alice.skdm(&mut rng).serialized().to_vec();
        let at = index.index(bytes.len());
        bytes[at] = byte;
        if let Ok(skdm) = SenderKeyDistributionMessage::deserialize(&bytes) {
            prop_assert_eq!(skdm.serialized(), &bytes[..]);
            let again = SenderKeyDistributionMessage::new(
                skdm.distribution_id(),
                skdm.chain_id(),
                skdm.iteration(),
                skdm.chain_key(),
                *skdm.signing_key(),
            );
            prop_assert_eq!(again, skdm);
        }
    }
}
