//! Benchmarks of sender keys (group messages): encrypting and decrypting
//! 200-byte messages on a distributed sender chain.
//!
//! The headline store keeps records serialized, as a client persisting them
//! does (and as the Node benchmark's store does), so every operation loads,
//! deserializes, ratchets, serializes and stores. The `_inmem_store`
//! variants use the crate's [`InMemSenderKeyStore`], which keeps records
//! parsed: the difference is the cost of (de)serializing the record.
//!
//! `tests/interop/node/bench.mjs` measures libsignal-client on the same
//! operations, under the same names; `benches/compare.sh` runs both.

// Benchmarks fail by panicking, like tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_main};
use passerelle_signal::{
    InMemSenderKeyStore, ProtocolAddress, SenderKeyDistributionMessage, SenderKeyRecord,
    SenderKeyStore, create_sender_key_distribution_message, group_decrypt, group_encrypt,
    process_sender_key_distribution_message,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use uuid::Uuid;

/// The size of the benchmarked messages.
const MESSAGE_LEN: usize = 200;

/// Sender key records kept serialized, as a persistent store keeps them.
#[derive(Default)]
struct SerializedStore {
    records: HashMap<(ProtocolAddress, Uuid), Vec<u8>>,
}

impl SenderKeyStore for SerializedStore {
    fn load_sender_key(
        &self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
    ) -> passerelle_signal::Result<Option<SenderKeyRecord>> {
        self.records
            .get(&(sender.clone(), distribution_id))
            .map(|bytes| SenderKeyRecord::deserialize(bytes))
            .transpose()
    }

    fn store_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
        record: &SenderKeyRecord,
    ) -> passerelle_signal::Result<()> {
        self.records.insert(
            (sender.clone(), distribution_id),
            record.serialize().to_vec(),
        );
        Ok(())
    }
}

/// Alice sends to a distribution; Bob has processed her distribution
/// message (received serialized).
struct Group<S> {
    alice: ProtocolAddress,
    distribution_id: Uuid,
    alice_store: S,
    bob_store: S,
    rng: ChaCha20Rng,
}

impl<S: SenderKeyStore + Default> Group<S> {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(rng.next_u64());
        let alice = ProtocolAddress::new("alice", 1);
        let mut id = [0; 16];
        rng.fill_bytes(&mut id);
        let distribution_id = Uuid::from_bytes(id);
        let mut alice_store = S::default();
        let mut bob_store = S::default();
        let skdm = create_sender_key_distribution_message(
            &alice,
            distribution_id,
            &mut alice_store,
            &mut rng,
        )
        .unwrap();
        let skdm = SenderKeyDistributionMessage::deserialize(skdm.serialized()).unwrap();
        process_sender_key_distribution_message(&alice, &skdm, &mut bob_store).unwrap();
        Self {
            alice,
            distribution_id,
            alice_store,
            bob_store,
            rng,
        }
    }
}

fn bench_store<S: SenderKeyStore + Default>(
    c: &mut Criterion,
    suffix: &str,
    rng: &mut ChaCha20Rng,
    plaintext: &[u8],
) {
    let mut group = c.benchmark_group("sender_keys");

    // Alice's next message: load her record, step the chain, encrypt, sign
    // (XEdDSA), store the record.
    let mut g = Group::<S>::new(rng);
    group.bench_function(format!("group_encrypt_200{suffix}"), |b| {
        b.iter(|| {
            group_encrypt(
                &mut g.alice_store,
                &g.alice,
                g.distribution_id,
                black_box(plaintext),
                &mut g.rng,
            )
            .unwrap()
            .serialized()
            .to_vec()
        });
    });

    // Bob reads Alice's messages in order: parse, load her record, verify
    // the signature, step the chain, decrypt, store the record. Alice
    // encrypts them untimed.
    let mut g = Group::<S>::new(rng);
    group.bench_function(format!("group_decrypt_200{suffix}"), |b| {
        b.iter_batched(
            || {
                group_encrypt(
                    &mut g.alice_store,
                    &g.alice,
                    g.distribution_id,
                    plaintext,
                    &mut g.rng,
                )
                .unwrap()
                .serialized()
                .to_vec()
            },
            |message| group_decrypt(&message, &mut g.bob_store, &g.alice).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn sender_keys(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5e4d_e12c);
    let mut plaintext = vec![0; MESSAGE_LEN];
    rng.fill_bytes(&mut plaintext);
    bench_store::<SerializedStore>(c, "", &mut rng, &plaintext);
    bench_store::<InMemSenderKeyStore>(c, "_inmem_store", &mut rng, &plaintext);
}

/// criterion's entry points; its `criterion_group!` defines an undocumented
/// `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::sender_keys);
}
criterion_main!(group::benches);
