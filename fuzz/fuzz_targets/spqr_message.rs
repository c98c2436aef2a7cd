//! Feeds arbitrary bytes to the post-quantum ratchet (SPQR) as a peer's
//! `pq_ratchet` payload, on a fresh state of either side and on a state in
//! the middle of receiving a key header: a typed error or a state that
//! decodes again, never a panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use passerelle_signal::spqr::{self, Direction, Params, Version};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn fresh(direction: Direction) -> Vec<u8> {
    spqr::initial_state(&Params {
        direction,
        version: Version::V1,
        min_version: Version::V1,
        auth_key: &[3; 32],
        // Small, so that far-ahead indices cost little time per input.
        max_jump: 1_000,
        max_ooo_keys: 2_000,
    })
    .expect("initial state")
}

fn check(state: &[u8], msg: &[u8]) {
    if let Ok(got) = spqr::recv(state, msg) {
        spqr::current_version(&got.state).expect("new state decodes");
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        spqr::send(&got.state, &mut rng).expect("new state sends");
    }
}

/// Alice's and Bob's fresh states, Bob's after one honest header chunk,
/// and Alice's next message: built once, as key generation is slow.
struct Fixtures {
    alice: Vec<u8>,
    bob: Vec<u8>,
    bob_mid: Vec<u8>,
    next_msg: Vec<u8>,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let alice = fresh(Direction::A2B);
        let bob = fresh(Direction::B2A);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let first = spqr::send(&alice, &mut rng).expect("send");
        let bob_mid = spqr::recv(&bob, &first.msg).expect("recv").state;
        let next_msg = spqr::send(&first.state, &mut rng).expect("send").msg;
        Fixtures {
            alice,
            bob,
            bob_mid,
            next_msg,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    check(&f.alice, data);
    check(&f.bob, data);
    check(&f.bob_mid, data);
    // Arbitrary bytes as a state must not panic either.
    let _ = spqr::current_version(data);
    let _ = spqr::recv(data, &f.next_msg);
});
