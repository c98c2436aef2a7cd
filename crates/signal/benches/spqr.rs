//! Benchmarks of the post-quantum ratchet (SPQR) alone: one message sent
//! and received (state decoded, advanced and encoded on both sides), in
//! the middle of an epoch and across a whole epoch.
//!
//! Run with `cargo bench -p passerelle-signal --bench spqr`.

// Benchmarks fail by panicking, like tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_main};
use passerelle_signal::spqr::{self, Direction, Params, Version};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn params(direction: Direction) -> Params<'static> {
    Params {
        direction,
        version: Version::V1,
        min_version: Version::V1,
        auth_key: &[7; 32],
        max_jump: 25_000,
        max_ooo_keys: 2_000,
    }
}

/// One message from `from` to `to`.
fn step(from: &mut Vec<u8>, to: &mut Vec<u8>, rng: &mut ChaCha20Rng) {
    let sent = spqr::send(from, rng).unwrap();
    let got = spqr::recv(to, &sent.msg).unwrap();
    assert_eq!(sent.key, got.key);
    *from = sent.state;
    *to = got.state;
}

/// Two parties after `rounds` ping-pong rounds.
fn warmed(rounds: usize, rng: &mut ChaCha20Rng) -> (Vec<u8>, Vec<u8>) {
    let mut a = spqr::initial_state(&params(Direction::A2B)).unwrap();
    let mut b = spqr::initial_state(&params(Direction::B2A)).unwrap();
    for _ in 0..rounds {
        step(&mut a, &mut b, rng);
        step(&mut b, &mut a, rng);
    }
    (a, b)
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (a, b) = warmed(20, &mut rng);

    c.bench_function("spqr send+recv, one message", |bench| {
        bench.iter_batched(
            || (a.clone(), b.clone(), ChaCha20Rng::seed_from_u64(2)),
            |(mut a, mut b, mut rng)| {
                step(&mut a, &mut b, &mut rng);
                black_box((a, b))
            },
            BatchSize::SmallInput,
        )
    });

    // A whole epoch in lockstep: 40 messages each way covers the header,
    // key and both ciphertext parts, with key generation, encapsulation
    // and decapsulation.
    c.bench_function("spqr send+recv, 80 messages (one epoch)", |bench| {
        bench.iter_batched(
            || (a.clone(), b.clone(), ChaCha20Rng::seed_from_u64(3)),
            |(mut a, mut b, mut rng)| {
                for _ in 0..40 {
                    step(&mut a, &mut b, &mut rng);
                    step(&mut b, &mut a, &mut rng);
                }
                black_box((a, b))
            },
            BatchSize::SmallInput,
        )
    });
}

/// criterion's entry points; its `criterion_group!` defines an undocumented
/// `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
