//! Sessions between two passerelle-signal devices: every way a message can
//! be bad has its own error, and a refused message changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use passerelle_signal::{
    CiphertextMessage, Direction, Error, IdentityChange, IdentityKey, IdentityKeyPair,
    IdentityKeyStore, InMemoryStore, KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle,
    PreKeyRecord, PreKeyStore, ProtocolAddress, SessionStore, SignedPreKeyRecord,
    SignedPreKeyStore, message_decrypt, message_encrypt, process_prekey_bundle,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A distinct account UUID per seed.
fn account_uuid(seed: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", seed as u32, seed)
}

struct Device {
    address: ProtocolAddress,
    store: InMemoryStore,
    rng: ChaCha20Rng,
}

impl Device {
    /// A device named as Passerelle names them: an account UUID (one per
    /// `seed`) and device 1. `_who` only says which party it plays.
    fn new(_who: &str, seed: u64) -> Self {
        Self::at(ProtocolAddress::new(account_uuid(seed), 1), seed)
    }

    fn at(address: ProtocolAddress, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentityKeyPair::generate(&mut rng);
        Self {
            address,
            store: InMemoryStore::new(identity, seed as u32),
            rng,
        }
    }

    fn bundle(&mut self, id: u32, one_time: bool) -> PreKeyBundle {
        let identity = self.store.identity_key_pair().unwrap();
        let signed = SignedPreKeyRecord::generate(id, 0, &identity, &mut self.rng);
        let kyber = KyberPreKeyRecord::generate(id, 0, &identity, &mut self.rng);
        self.store.save_signed_pre_key(&signed).unwrap();
        self.store.save_kyber_pre_key(&kyber, false).unwrap();
        let pre_key = one_time.then(|| {
            let record = PreKeyRecord::generate(id, &mut self.rng);
            self.store.save_pre_key(&record).unwrap();
            (id, record.key_pair.public)
        });
        PreKeyBundle {
            registration_id: self.store.local_registration_id().unwrap(),
            device_id: 1,
            pre_key,
            signed_pre_key_id: id,
            signed_pre_key: signed.key_pair.public,
            signed_pre_key_signature: signed.signature.to_vec(),
            kyber_pre_key_id: id,
            kyber_pre_key: kyber.key_pair.public,
            kyber_pre_key_signature: kyber.signature.to_vec(),
            identity_key: *identity.identity_key(),
        }
    }

    fn connect_at(&mut self, peer: &mut Device, now: SystemTime) {
        let bundle = peer.bundle(1, true);
        process_prekey_bundle(
            &peer.address,
            &self.address,
            &mut self.store,
            &bundle,
            now,
            &mut self.rng,
        )
        .unwrap();
    }

    fn connect(&mut self, peer: &mut Device) {
        self.connect_at(peer, SystemTime::now());
    }

    fn encrypt(&mut self, to: &Device, plaintext: &[u8]) -> CiphertextMessage {
        message_encrypt(
            plaintext,
            &to.address,
            &self.address,
            &mut self.store,
            SystemTime::now(),
            &mut self.rng,
        )
        .unwrap()
    }

    fn decrypt(&mut self, from: &Device, message: &CiphertextMessage) -> Result<Vec<u8>, Error> {
        message_decrypt(
            message,
            &from.address,
            &self.address,
            &mut self.store,
            &mut self.rng,
        )
    }

    fn decrypt_bytes(&mut self, from: &Device, ty: u8, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        let message = CiphertextMessage::deserialize(ty, bytes)?;
        self.decrypt(from, &message)
    }

    fn session_bytes(&self, peer: &Device) -> Option<Vec<u8>> {
        self.store
            .load_session(&peer.address)
            .unwrap()
            .map(|r| r.serialize())
    }
}

fn pair() -> (Device, Device) {
    let mut alice = Device::new("alice", 1);
    let mut bob = Device::new("bob", 2);
    alice.connect(&mut bob);
    (alice, bob)
}

/// Alice and Bob with an acknowledged session (Bob has answered).
fn established() -> (Device, Device) {
    let (mut alice, mut bob) = pair();
    let m = alice.encrypt(&bob, b"hi");
    bob.decrypt(&alice, &m).unwrap();
    let m = bob.encrypt(&alice, b"hi back");
    alice.decrypt(&bob, &m).unwrap();
    (alice, bob)
}

#[test]
fn first_messages_are_prekey_messages_until_answered() {
    let (mut alice, mut bob) = pair();
    let m1 = alice.encrypt(&bob, b"one");
    let m2 = alice.encrypt(&bob, b"two");
    assert!(matches!(m1, CiphertextMessage::PreKey(_)));
    assert!(matches!(m2, CiphertextMessage::PreKey(_)));
    // Out of order, and the second carries the setup too.
    assert_eq!(bob.decrypt(&alice, &m2).unwrap(), b"two");
    assert_eq!(bob.decrypt(&alice, &m1).unwrap(), b"one");
    let reply = bob.encrypt(&alice, b"three");
    assert!(matches!(reply, CiphertextMessage::Signal(_)));
    assert_eq!(alice.decrypt(&bob, &reply).unwrap(), b"three");
    assert!(matches!(
        alice.encrypt(&bob, b"four"),
        CiphertextMessage::Signal(_)
    ));
}

#[test]
fn one_time_prekey_is_consumed_once() {
    let (mut alice, mut bob) = pair();
    assert_eq!(bob.store.pre_key_count(), 1);
    let m = alice.encrypt(&bob, b"one");
    bob.decrypt(&alice, &m).unwrap();
    assert_eq!(bob.store.pre_key_count(), 0);
    // A repeat of a PreKey message of a known session needs no prekey.
    let m2 = alice.encrypt(&bob, b"two");
    assert_eq!(bob.decrypt(&alice, &m2).unwrap(), b"two");
}

#[test]
fn versions_are_checked_first() {
    let (mut alice, mut bob) = established();
    let m = alice.encrypt(&bob, b"x");
    let mut bytes = m.serialized().to_vec();
    bytes[0] = 0x33;
    assert_eq!(
        bob.decrypt_bytes(&alice, 2, &bytes),
        Err(Error::LegacyVersion(3))
    );
    bytes[0] = 0x54;
    assert_eq!(
        bob.decrypt_bytes(&alice, 2, &bytes),
        Err(Error::UnrecognizedVersion(5))
    );
    assert_eq!(
        bob.decrypt_bytes(&alice, 2, &[0x44]),
        Err(Error::MessageTooShort(1))
    );
    assert_eq!(
        CiphertextMessage::deserialize(9, &bytes),
        Err(Error::UnexpectedMessageType(9))
    );
}

#[test]
fn bad_mac_is_refused_and_leaves_the_session_untouched() {
    let (mut alice, mut bob) = established();
    let m = alice.encrypt(&bob, b"x");
    let before = bob.session_bytes(&alice);
    let mut bytes = m.serialized().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(bob.decrypt_bytes(&alice, 2, &bytes), Err(Error::BadMac));
    assert_eq!(bob.session_bytes(&alice), before);
    assert_eq!(bob.decrypt(&alice, &m).unwrap(), b"x");
}

#[test]
fn duplicates_are_refused() {
    let (mut alice, mut bob) = established();
    let m = alice.encrypt(&bob, b"once");
    bob.decrypt(&alice, &m).unwrap();
    assert!(matches!(
        bob.decrypt(&alice, &m),
        Err(Error::DuplicateMessage { .. })
    ));
}

#[test]
fn skipped_messages_decrypt_later_and_only_once() {
    let (mut alice, mut bob) = established();
    let messages: Vec<_> = (0..50)
        .map(|i| alice.encrypt(&bob, format!("m{i}").as_bytes()))
        .collect();
    for i in (0..50).rev() {
        assert_eq!(
            bob.decrypt(&alice, &messages[i]).unwrap(),
            format!("m{i}").as_bytes()
        );
    }
    assert!(bob.decrypt(&alice, &messages[10]).is_err());
}

#[test]
fn messages_too_far_ahead_are_refused() {
    let (mut alice, mut bob) = established();
    let mut last = None;
    for _ in 0..=passerelle_signal::limits::MAX_FORWARD_JUMPS + 1 {
        last = Some(alice.encrypt(&bob, b"."));
    }
    assert!(matches!(
        bob.decrypt(&alice, &last.unwrap()),
        Err(Error::MessageTooFarAhead { .. })
    ));
}

#[test]
fn only_the_newest_skipped_keys_are_kept() {
    let (mut alice, mut bob) = established();
    let first = alice.encrypt(&bob, b"first");
    for _ in 0..passerelle_signal::limits::MAX_MESSAGE_KEYS {
        alice.encrypt(&bob, b".");
    }
    let late = alice.encrypt(&bob, b"late");
    assert_eq!(bob.decrypt(&alice, &late).unwrap(), b"late");
    assert!(matches!(
        bob.decrypt(&alice, &first),
        Err(Error::DuplicateMessage { .. })
    ));
}

#[test]
fn missing_prekeys_are_named() {
    let (mut alice, mut bob) = pair();
    let m = alice.encrypt(&bob, b"x");
    bob.store.remove_pre_key(1).unwrap();
    assert_eq!(bob.decrypt(&alice, &m), Err(Error::UnknownPreKey(1)));

    let mut carol = Device::new("carol", 3);
    let mut dave = Device::new("dave", 4);
    carol.connect(&mut dave);
    let m = carol.encrypt(&dave, b"x");
    let mut fresh = Device::new("dave", 4);
    assert_eq!(
        fresh.decrypt(&carol, &m),
        Err(Error::UnknownSignedPreKey(1))
    );
}

#[test]
fn bundle_signatures_are_checked() {
    let mut alice = Device::new("alice", 1);
    let mut bob = Device::new("bob", 2);
    let mut bundle = bob.bundle(1, true);
    bundle.signed_pre_key_signature[3] ^= 1;
    let err = process_prekey_bundle(
        &bob.address,
        &alice.address,
        &mut alice.store,
        &bundle,
        SystemTime::now(),
        &mut alice.rng,
    );
    assert_eq!(err, Err(Error::BadSignature("signed prekey")));
    let mut bundle = bob.bundle(2, true);
    bundle.kyber_pre_key_signature[3] ^= 1;
    let err = process_prekey_bundle(
        &bob.address,
        &alice.address,
        &mut alice.store,
        &bundle,
        SystemTime::now(),
        &mut alice.rng,
    );
    assert_eq!(err, Err(Error::BadSignature("Kyber prekey")));
}

#[test]
fn unanswered_sessions_expire() {
    let mut alice = Device::new("alice", 1);
    let mut bob = Device::new("bob", 2);
    let long_ago = SystemTime::now() - Duration::from_secs(31 * 24 * 3600);
    alice.connect_at(&mut bob, long_ago);
    let err = message_encrypt(
        b"x",
        &bob.address,
        &alice.address,
        &mut alice.store,
        SystemTime::now(),
        &mut alice.rng,
    );
    assert_eq!(err, Err(Error::SessionExpired(bob.address.clone())));
}

#[test]
fn simultaneous_initiation_converges() {
    let mut alice = Device::new("alice", 1);
    let mut bob = Device::new("bob", 2);
    alice.connect(&mut bob);
    let from_alice = alice.encrypt(&bob, b"a1");
    let b_bundle = alice.bundle(7, true);
    process_prekey_bundle(
        &alice.address,
        &bob.address,
        &mut bob.store,
        &b_bundle,
        SystemTime::now(),
        &mut bob.rng,
    )
    .unwrap();
    let from_bob = bob.encrypt(&alice, b"b1");
    // Each receives the other's PreKey message: each record now has two
    // sessions, and messages on either still decrypt.
    assert_eq!(bob.decrypt(&alice, &from_alice).unwrap(), b"a1");
    assert_eq!(alice.decrypt(&bob, &from_bob).unwrap(), b"b1");
    for i in 0..5 {
        let m = alice.encrypt(&bob, format!("a{i}").as_bytes());
        assert_eq!(bob.decrypt(&alice, &m).unwrap(), format!("a{i}").as_bytes());
        let m = bob.encrypt(&alice, format!("b{i}").as_bytes());
        assert_eq!(alice.decrypt(&bob, &m).unwrap(), format!("b{i}").as_bytes());
    }
}

#[test]
fn late_message_of_an_archived_session_still_decrypts() {
    let (mut alice, mut bob) = established();
    let late = alice.encrypt(&bob, b"late");
    // Alice starts over (for example after restoring a backup).
    alice.connect(&mut bob);
    let fresh = alice.encrypt(&bob, b"fresh");
    assert_eq!(bob.decrypt(&alice, &fresh).unwrap(), b"fresh");
    assert_eq!(bob.decrypt(&alice, &late).unwrap(), b"late");
}

/// The inner SignalMessage's address binding.
fn binding(message: &CiphertextMessage) -> Option<Vec<u8>> {
    match message {
        CiphertextMessage::PreKey(m) => m.message().addresses().map(<[u8]>::to_vec),
        CiphertextMessage::Signal(m) => m.addresses().map(<[u8]>::to_vec),
    }
}

fn aci_bytes(address: &ProtocolAddress) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(uuid::Uuid::parse_str(address.name()).unwrap().as_bytes());
    out.push(address.device_id() as u8);
    out
}

#[test]
fn prekey_messages_bind_both_addresses_and_answers_bind_none() {
    let (mut alice, mut bob) = pair();
    let m = alice.encrypt(&bob, b"hi");
    let expected = [aci_bytes(&alice.address), aci_bytes(&bob.address)].concat();
    assert_eq!(binding(&m), Some(expected));
    bob.decrypt(&alice, &m).unwrap();
    let answer = bob.encrypt(&alice, b"hi back");
    assert!(matches!(answer, CiphertextMessage::Signal(_)));
    assert_eq!(binding(&answer), None);
    alice.decrypt(&bob, &answer).unwrap();
    assert_eq!(binding(&alice.encrypt(&bob, b"later")), None);
}

#[test]
fn misaddressed_prekey_messages_are_refused_and_change_nothing() {
    let (mut alice, mut bob) = pair();
    let m = alice.encrypt(&bob, b"for bob's first device");
    let other_account = ProtocolAddress::new(account_uuid(99), 1);
    let other_device = ProtocolAddress::new(bob.address.name(), 2);
    let claimed_sender = ProtocolAddress::new(account_uuid(98), 1);
    let alice_other_device = ProtocolAddress::new(alice.address.name(), 3);
    let pre_keys = bob.store.pre_key_count();
    let attempts = [
        ("wrong recipient account", &alice.address, &other_account),
        ("wrong recipient device", &alice.address, &other_device),
        ("wrong sender account", &claimed_sender, &bob.address),
        ("wrong sender device", &alice_other_device, &bob.address),
    ];
    for (what, sender, recipient) in attempts {
        let err = message_decrypt(&m, sender, recipient, &mut bob.store, &mut bob.rng);
        assert_eq!(
            err,
            Err(Error::MisaddressedMessage {
                sender: sender.clone(),
                recipient: recipient.clone(),
            }),
            "{what}"
        );
        assert_eq!(
            bob.store
                .load_session(sender)
                .unwrap()
                .map(|r| r.serialize()),
            None,
            "{what}"
        );
        assert_eq!(
            bob.store.pre_key_count(),
            pre_keys,
            "{what}: prekey consumed"
        );
        assert_eq!(
            bob.store.identity(sender).unwrap(),
            None,
            "{what}: identity saved"
        );
    }
    // The message still decrypts where it was meant to.
    assert_eq!(bob.decrypt(&alice, &m).unwrap(), b"for bob's first device");
    assert_eq!(bob.store.pre_key_count(), pre_keys - 1);
}

#[test]
fn a_repeated_prekey_message_to_the_wrong_address_leaves_the_session_alone() {
    let (mut alice, mut bob) = pair();
    let m1 = alice.encrypt(&bob, b"one");
    let m2 = alice.encrypt(&bob, b"two");
    bob.decrypt(&alice, &m1).unwrap();
    let before = bob.session_bytes(&alice);
    let elsewhere = ProtocolAddress::new(account_uuid(77), 1);
    let err = message_decrypt(
        &m2,
        &alice.address,
        &elsewhere,
        &mut bob.store,
        &mut bob.rng,
    );
    assert!(
        matches!(err, Err(Error::MisaddressedMessage { .. })),
        "{err:?}"
    );
    assert_eq!(bob.session_bytes(&alice), before);
    assert_eq!(bob.decrypt(&alice, &m2).unwrap(), b"two");
}

#[test]
fn names_that_are_not_service_ids_bind_nothing() {
    // A plain name, a UUID without hyphens, and a device id libsignal does
    // not allow: libsignal writes no binding for any of them.
    let uuid = account_uuid(5);
    for (alice_address, bob_address) in [
        (
            ProtocolAddress::new("alice", 1),
            ProtocolAddress::new(account_uuid(6), 1),
        ),
        (
            ProtocolAddress::new(uuid.replace('-', ""), 1),
            ProtocolAddress::new(account_uuid(6), 1),
        ),
        (
            ProtocolAddress::new(uuid.clone(), 128),
            ProtocolAddress::new(account_uuid(6), 1),
        ),
        (
            ProtocolAddress::new(uuid.clone(), 1),
            ProtocolAddress::new(account_uuid(6), 0),
        ),
    ] {
        let mut alice = Device::at(alice_address, 5);
        let mut bob = Device::at(bob_address, 6);
        alice.connect(&mut bob);
        let m = alice.encrypt(&bob, b"unbound");
        assert_eq!(binding(&m), None, "{} -> {}", alice.address, bob.address);
        assert_eq!(bob.decrypt(&alice, &m).unwrap(), b"unbound");
    }
}

#[test]
fn service_ids_are_read_as_libsignal_reads_them() {
    // Upper-case UUIDs name the same ACI; `PNI:` names a PNI (kind 1).
    let mut alice = Device::at(ProtocolAddress::new(account_uuid(7).to_uppercase(), 4), 7);
    let pni = format!("PNI:{}", account_uuid(8));
    let mut bob = Device::at(ProtocolAddress::new(pni.clone(), 127), 8);
    alice.connect(&mut bob);
    let m = alice.encrypt(&bob, b"to a pni");
    let mut expected = aci_bytes(&ProtocolAddress::new(account_uuid(7), 4));
    expected.push(1);
    expected.extend_from_slice(uuid::Uuid::parse_str(&account_uuid(8)).unwrap().as_bytes());
    expected.push(127);
    assert_eq!(binding(&m), Some(expected));
    // Bob's view names Alice in lower case: the same service id.
    let lower = ProtocolAddress::new(account_uuid(7), 4);
    let plaintext = message_decrypt(&m, &lower, &bob.address, &mut bob.store, &mut bob.rng);
    assert_eq!(plaintext.unwrap(), b"to a pni");
}

#[test]
fn a_bound_message_is_refused_by_a_receiver_without_a_service_id() {
    // libsignal's rule: a binding can only match a view that is one.
    let (mut alice, mut bob) = pair();
    let m = alice.encrypt(&bob, b"bound");
    let plain_name = ProtocolAddress::new("bob", 1);
    let err = message_decrypt(
        &m,
        &alice.address,
        &plain_name,
        &mut bob.store,
        &mut bob.rng,
    );
    assert!(
        matches!(err, Err(Error::MisaddressedMessage { .. })),
        "{err:?}"
    );
    assert_eq!(bob.decrypt(&alice, &m).unwrap(), b"bound");
}

/// A store that distrusts one identity.
struct Distrusting {
    inner: InMemoryStore,
    distrusted: IdentityKey,
}

impl IdentityKeyStore for Distrusting {
    fn identity_key_pair(&self) -> passerelle_signal::Result<IdentityKeyPair> {
        self.inner.identity_key_pair()
    }
    fn local_registration_id(&self) -> passerelle_signal::Result<u32> {
        self.inner.local_registration_id()
    }
    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> passerelle_signal::Result<IdentityChange> {
        self.inner.save_identity(address, identity)
    }
    fn is_trusted_identity(
        &self,
        _: &ProtocolAddress,
        identity: &IdentityKey,
        _: Direction,
    ) -> passerelle_signal::Result<bool> {
        Ok(*identity != self.distrusted)
    }
    fn identity(
        &self,
        address: &ProtocolAddress,
    ) -> passerelle_signal::Result<Option<IdentityKey>> {
        self.inner.identity(address)
    }
}

impl SessionStore for Distrusting {
    fn load_session(
        &self,
        address: &ProtocolAddress,
    ) -> passerelle_signal::Result<Option<passerelle_signal::SessionRecord>> {
        self.inner.load_session(address)
    }
    fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &passerelle_signal::SessionRecord,
    ) -> passerelle_signal::Result<()> {
        self.inner.store_session(address, record)
    }
}

#[test]
fn untrusted_identities_are_refused() {
    let mut alice = Device::new("alice", 1);
    let mut bob = Device::new("bob", 2);
    let bundle = bob.bundle(1, true);
    let mut store = Distrusting {
        distrusted: bundle.identity_key,
        inner: InMemoryStore::new(alice.store.identity_key_pair().unwrap(), 1),
    };
    let err = process_prekey_bundle(
        &bob.address,
        &alice.address,
        &mut store,
        &bundle,
        SystemTime::now(),
        &mut alice.rng,
    );
    assert_eq!(err, Err(Error::UntrustedIdentity(bob.address.clone())));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn round_trip(plaintexts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..12)) {
        let (mut alice, mut bob) = established();
        for p in &plaintexts {
            let m = alice.encrypt(&bob, p);
            prop_assert_eq!(&bob.decrypt(&alice, &m).unwrap(), p);
            let m = bob.encrypt(&alice, p);
            prop_assert_eq!(&alice.decrypt(&bob, &m).unwrap(), p);
        }
    }

    /// A flipped byte is refused with the session unchanged, or, where the
    /// format leaves a field unauthenticated as libsignal's does (the
    /// registration id, the low half of the version byte), it changes
    /// nothing: the plaintext is never altered.
    #[test]
    fn tampering_never_alters_a_message(plaintext in proptest::collection::vec(any::<u8>(), 0..100), index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (mut alice, mut bob) = pair();
        let m = alice.encrypt(&bob, &plaintext);
        let mut bytes = m.serialized().to_vec();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        let before = bob.session_bytes(&alice);
        match bob.decrypt_bytes(&alice, 3, &bytes) {
            Ok(decrypted) => prop_assert_eq!(decrypted, plaintext),
            Err(_) => {
                prop_assert_eq!(bob.session_bytes(&alice), before);
                prop_assert_eq!(bob.decrypt(&alice, &m).unwrap(), plaintext);
            }
        }
    }
}
