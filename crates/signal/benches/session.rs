//! Benchmarks of 1:1 sessions: PQXDH setup on either side, and encrypting
//! and decrypting 200-byte messages on an established session.
//!
//! Every operation goes through [`InMemoryStore`], so it does what a client
//! does per message: load the session record, deserialize it, ratchet,
//! serialize it and store it back. Messages and bundles cross the benchmark
//! boundary serialized, as they cross the network.
//!
//! `tests/interop/node/bench.mjs` measures libsignal-client on the same
//! operations, under the same names; `benches/compare.sh` runs both.

// Benchmarks fail by panicking, like tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, criterion_main};
use passerelle_signal::{
    CiphertextMessage, IdentityKey, IdentityKeyPair, InMemoryStore, KemPublicKey,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyRecord, PreKeyStore, ProtocolAddress,
    PublicKey, SignedPreKeyRecord, SignedPreKeyStore, message_decrypt, message_encrypt,
    process_prekey_bundle,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The size of the benchmarked messages.
const MESSAGE_LEN: usize = 200;

/// A bundle as it arrives from the server: serialized keys.
struct WireBundle {
    registration_id: u32,
    device_id: u32,
    pre_key_id: u32,
    pre_key: Vec<u8>,
    signed_pre_key_id: u32,
    signed_pre_key: Vec<u8>,
    signed_pre_key_signature: Vec<u8>,
    kyber_pre_key_id: u32,
    kyber_pre_key: Vec<u8>,
    kyber_pre_key_signature: Vec<u8>,
    identity_key: Vec<u8>,
}

impl WireBundle {
    /// Decodes the keys, as a client does before starting a session.
    fn parse(&self) -> PreKeyBundle {
        PreKeyBundle {
            registration_id: self.registration_id,
            device_id: self.device_id,
            pre_key: Some((
                self.pre_key_id,
                PublicKey::deserialize(&self.pre_key).unwrap(),
            )),
            signed_pre_key_id: self.signed_pre_key_id,
            signed_pre_key: PublicKey::deserialize(&self.signed_pre_key).unwrap(),
            signed_pre_key_signature: self.signed_pre_key_signature.clone(),
            kyber_pre_key_id: self.kyber_pre_key_id,
            kyber_pre_key: KemPublicKey::deserialize(&self.kyber_pre_key).unwrap(),
            kyber_pre_key_signature: self.kyber_pre_key_signature.clone(),
            identity_key: IdentityKey::deserialize(&self.identity_key).unwrap(),
        }
    }
}

/// The responder's identity and published prekeys (one of each kind, the
/// Kyber one last-resort), from which fresh stores are made.
struct Responder {
    identity: IdentityKeyPair,
    registration_id: u32,
    pre_key: PreKeyRecord,
    signed_pre_key: SignedPreKeyRecord,
    kyber_pre_key: KyberPreKeyRecord,
}

impl Responder {
    fn generate(rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        Self {
            registration_id: 2,
            pre_key: PreKeyRecord::generate(1, rng),
            signed_pre_key: SignedPreKeyRecord::generate(1, 0, &identity, rng),
            kyber_pre_key: KyberPreKeyRecord::generate(1, 0, &identity, rng),
            identity,
        }
    }

    /// A store holding the prekeys and no session.
    fn store(&self) -> InMemoryStore {
        let mut store = InMemoryStore::new(self.identity.clone(), self.registration_id);
        store.save_pre_key(&self.pre_key).unwrap();
        store.save_signed_pre_key(&self.signed_pre_key).unwrap();
        store.save_kyber_pre_key(&self.kyber_pre_key, true).unwrap();
        store
    }

    fn bundle(&self) -> WireBundle {
        WireBundle {
            registration_id: self.registration_id,
            device_id: 1,
            pre_key_id: self.pre_key.id,
            pre_key: self.pre_key.key_pair.public.serialize().to_vec(),
            signed_pre_key_id: self.signed_pre_key.id,
            signed_pre_key: self.signed_pre_key.key_pair.public.serialize().to_vec(),
            signed_pre_key_signature: self.signed_pre_key.signature.to_vec(),
            kyber_pre_key_id: self.kyber_pre_key.id,
            kyber_pre_key: self.kyber_pre_key.key_pair.public.serialize(),
            kyber_pre_key_signature: self.kyber_pre_key.signature.to_vec(),
            identity_key: self.identity.identity_key().serialize().to_vec(),
        }
    }
}

/// A serialized message and its type, as carried in an envelope.
struct Envelope {
    message_type: u8,
    body: Vec<u8>,
}

/// One device: its address (as its peer names it), store and RNG.
struct Device {
    address: ProtocolAddress,
    store: InMemoryStore,
    rng: ChaCha20Rng,
}

impl Device {
    fn process_bundle(&mut self, peer: &ProtocolAddress, bundle: &WireBundle) {
        process_prekey_bundle(
            peer,
            &self.address,
            &mut self.store,
            &bundle.parse(),
            SystemTime::now(),
            &mut self.rng,
        )
        .unwrap();
    }

    fn encrypt(&mut self, peer: &ProtocolAddress, plaintext: &[u8]) -> Envelope {
        let message = message_encrypt(
            plaintext,
            peer,
            &self.address,
            &mut self.store,
            SystemTime::now(),
            &mut self.rng,
        )
        .unwrap();
        Envelope {
            message_type: message.message_type() as u8,
            body: message.serialized().to_vec(),
        }
    }

    fn decrypt(&mut self, peer: &ProtocolAddress, envelope: &Envelope) -> Vec<u8> {
        let message =
            CiphertextMessage::deserialize(envelope.message_type, &envelope.body).unwrap();
        message_decrypt(
            &message,
            peer,
            &self.address,
            &mut self.store,
            &mut self.rng,
        )
        .unwrap()
    }
}

/// The two parties' long-term keys, and the message they exchange.
struct Fixture {
    alice_identity: IdentityKeyPair,
    responder: Responder,
    bundle: WireBundle,
    plaintext: Vec<u8>,
}

impl Fixture {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let alice_identity = IdentityKeyPair::generate(rng);
        let responder = Responder::generate(rng);
        let bundle = responder.bundle();
        let mut plaintext = vec![0; MESSAGE_LEN];
        rng.fill_bytes(&mut plaintext);
        Self {
            alice_identity,
            responder,
            bundle,
            plaintext,
        }
    }

    /// Alice's device, without sessions. Bob names it `alice.1`.
    fn alice(&self, rng: &mut ChaCha20Rng) -> Device {
        Device {
            address: ProtocolAddress::new("alice", 1),
            store: InMemoryStore::new(self.alice_identity.clone(), 1),
            rng: ChaCha20Rng::seed_from_u64(rng.next_u64()),
        }
    }

    /// Bob's device, with its prekeys and no session. Alice names it `bob.1`.
    fn bob(&self, rng: &mut ChaCha20Rng) -> Device {
        Device {
            address: ProtocolAddress::new("bob", 1),
            store: self.responder.store(),
            rng: ChaCha20Rng::seed_from_u64(rng.next_u64()),
        }
    }

    /// The whole handshake: Alice starts from Bob's bundle and sends, Bob
    /// answers, and Alice reads the answer. Both sides then send
    /// SignalMessages.
    fn handshake(&self, alice: &mut Device, bob: &mut Device) {
        alice.process_bundle(&bob.address, &self.bundle);
        let first = alice.encrypt(&bob.address, &self.plaintext);
        bob.decrypt(&alice.address, &first);
        let reply = bob.encrypt(&alice.address, &self.plaintext);
        alice.decrypt(&bob.address, &reply);
    }

    /// Two devices with an established session.
    fn established(&self, rng: &mut ChaCha20Rng) -> (Device, Device) {
        let (mut alice, mut bob) = (self.alice(rng), self.bob(rng));
        self.handshake(&mut alice, &mut bob);
        (alice, bob)
    }
}

fn session(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5e55_1011);
    let fx = Fixture::new(&mut rng);
    let mut group = c.benchmark_group("session");

    // The initiator: decode the bundle, verify its two signatures, PQXDH
    // with Kyber1024 encapsulation, store the new session.
    group.bench_function("initiator_process_bundle", |b| {
        b.iter_batched(
            || (fx.alice(&mut rng), ProtocolAddress::new("bob", 1)),
            |(mut alice, bob)| {
                alice.process_bundle(&bob, &fx.bundle);
                alice
            },
            BatchSize::SmallInput,
        );
    });

    // The responder: decode the first PreKey message, load the three
    // prekeys, PQXDH with Kyber1024 decapsulation, decrypt, mark the prekeys
    // used and store the new session.
    group.bench_function("responder_decrypt_prekey", |b| {
        b.iter_batched(
            || {
                let (mut alice, bob) = (fx.alice(&mut rng), fx.bob(&mut rng));
                alice.process_bundle(&bob.address, &fx.bundle);
                let first = alice.encrypt(&bob.address, &fx.plaintext);
                (bob, alice.address, first)
            },
            |(mut bob, alice, first)| {
                black_box(bob.decrypt(&alice, &first));
                bob
            },
            BatchSize::SmallInput,
        );
    });

    // Both sides from fresh stores to an established session: bundle,
    // PreKey message, reply, reply read.
    group.bench_function("handshake", |b| {
        b.iter_batched(
            || (fx.alice(&mut rng), fx.bob(&mut rng)),
            |(mut alice, mut bob)| {
                fx.handshake(&mut alice, &mut bob);
                (alice, bob)
            },
            BatchSize::SmallInput,
        );
    });

    // Steady state: one more message on the current sending chain.
    let (mut alice, bob) = fx.established(&mut rng);
    group.bench_function("encrypt_200", |b| {
        b.iter(|| alice.encrypt(&bob.address, black_box(&fx.plaintext)));
    });

    // Steady state: the next message on the current receiving chain. Alice
    // encrypts (untimed) the messages Bob then decrypts in order.
    let (mut alice, mut bob) = fx.established(&mut rng);
    let (alice_address, bob_address) = (alice.address.clone(), bob.address.clone());
    group.bench_function("decrypt_200", |b| {
        b.iter_batched(
            || alice.encrypt(&bob_address, &fx.plaintext),
            |message| bob.decrypt(&alice_address, &message),
            BatchSize::SmallInput,
        );
    });

    // A conversation's turn: Bob's answer carries a new ratchet key, so Alice
    // takes a Diffie-Hellman ratchet step before decrypting. Each iteration
    // needs a full round trip first, so the timing is by hand.
    let (mut alice, mut bob) = fx.established(&mut rng);
    group.bench_function("decrypt_200_ratchet_step", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let message = alice.encrypt(&bob.address, &fx.plaintext);
                bob.decrypt(&alice.address, &message);
                let reply = bob.encrypt(&alice.address, &fx.plaintext);
                let start = Instant::now();
                black_box(alice.decrypt(&bob.address, &reply));
                total += start.elapsed();
            }
            total
        });
    });

    group.finish();
}

/// criterion's entry points; its `criterion_group!` defines an undocumented
/// `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::session);
}
criterion_main!(group::benches);
