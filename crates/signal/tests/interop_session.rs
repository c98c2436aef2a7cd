//! 1:1 sessions between passerelle-signal and the real libsignal
//! (`@signalapp/libsignal-client` 0.90.0, through the Node harness).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "interop/harness.rs"]
mod harness;
mod support {
    pub mod rust_party;
}

use std::collections::VecDeque;

use harness::{Harness, b64, unb64};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};
use support::rust_party::RustParty;

macro_rules! harness {
    () => {
        match Harness::spawn() {
            Some(harness) => harness,
            None => return,
        }
    };
}

/// A device on either implementation; every device here is device 1.
enum Party {
    Rust(Box<RustParty>),
    Node(String),
}

impl Party {
    fn rust(name: &str, seed: u64) -> Self {
        Party::Rust(Box::new(RustParty::new(name, 1000 + seed as u32, 1, seed)))
    }

    fn node(h: &mut Harness, name: &str, registration_id: u32) -> Self {
        h.call(
            json!({"op": "create", "name": name, "registrationId": registration_id, "deviceId": 1}),
        )
        .unwrap();
        Party::Node(name.into())
    }

    fn name(&self) -> &str {
        match self {
            Party::Rust(p) => &p.name,
            Party::Node(name) => name,
        }
    }

    fn bundle(&mut self, h: &mut Harness, one_time: bool) -> Value {
        match self {
            Party::Rust(p) => p.bundle(one_time),
            Party::Node(name) => h
                .call(json!({"op": "bundle", "name": name, "oneTimePreKey": one_time}))
                .unwrap(),
        }
    }

    fn process_bundle(&mut self, h: &mut Harness, peer: &str, bundle: &Value) {
        match self {
            Party::Rust(p) => p.process_bundle(peer, 1, bundle),
            Party::Node(name) => {
                let mut request = bundle.clone();
                let fields = request.as_object_mut().unwrap();
                fields.insert("op".into(), "processBundle".into());
                fields.insert("name".into(), name.clone().into());
                fields.insert("peer".into(), peer.into());
                fields.insert("peerDevice".into(), 1.into());
                h.call(request).unwrap();
            }
        }
    }

    fn encrypt(&mut self, h: &mut Harness, peer: &str, plaintext: &[u8]) -> (u8, Vec<u8>) {
        match self {
            Party::Rust(p) => p.encrypt(peer, 1, plaintext),
            Party::Node(name) => {
                let m = h
                    .call(
                        json!({"op": "encrypt", "name": name, "peer": peer, "peerDevice": 1,
                                 "plaintext": b64(plaintext)}),
                    )
                    .unwrap();
                (m["type"].as_u64().unwrap() as u8, unb64(&m["body"]))
            }
        }
    }

    /// Decrypts; an error is given as a short kind name.
    fn decrypt(
        &mut self,
        h: &mut Harness,
        peer: &str,
        message: &(u8, Vec<u8>),
    ) -> Result<Vec<u8>, String> {
        match self {
            Party::Rust(p) => p
                .decrypt(peer, 1, message.0, &message.1)
                .map_err(|e| format!("{e:?}")),
            Party::Node(name) => h
                .call(
                    json!({"op": "decrypt", "name": name, "peer": peer, "peerDevice": 1,
                             "type": message.0, "body": b64(&message.1)}),
                )
                .map(|r| unb64(&r["plaintext"]))
                .map_err(|e| e.kind.clone()),
        }
    }
}

/// `alice` starts a session from `bob`'s bundle.
fn connect(h: &mut Harness, alice: &mut Party, bob: &mut Party, one_time: bool) {
    let bundle = bob.bundle(h, one_time);
    alice.process_bundle(h, bob.name(), &bundle);
}

fn exchange(h: &mut Harness, from: &mut Party, to: &mut Party, text: &str) -> u8 {
    let message = from.encrypt(h, to.name(), text.as_bytes());
    let plaintext = to.decrypt(h, from.name(), &message).unwrap_or_else(|e| {
        panic!(
            "{} could not decrypt {text:?} from {}: {e}",
            to.name(),
            from.name()
        )
    });
    assert_eq!(plaintext, text.as_bytes());
    message.0
}

const PREKEY: u8 = 3;
const WHISPER: u8 = 2;

fn both_ways(h: &mut Harness, mut alice: Party, mut bob: Party, one_time: bool) {
    connect(h, &mut alice, &mut bob, one_time);
    assert_eq!(exchange(h, &mut alice, &mut bob, "hello"), PREKEY);
    assert_eq!(exchange(h, &mut alice, &mut bob, "still there?"), PREKEY);
    assert_eq!(exchange(h, &mut bob, &mut alice, "yes"), WHISPER);
    assert_eq!(exchange(h, &mut alice, &mut bob, "good"), WHISPER);
    assert_eq!(exchange(h, &mut alice, &mut bob, ""), WHISPER);
    let long = "x".repeat(5000);
    assert_eq!(exchange(h, &mut bob, &mut alice, &long), WHISPER);
}

#[test]
fn rust_initiates_with_one_time_prekey() {
    let mut h = harness!();
    let bob = Party::node(&mut h, "bob", 2);
    both_ways(&mut h, Party::rust("alice", 1), bob, true);
}

#[test]
fn rust_initiates_without_one_time_prekey() {
    let mut h = harness!();
    let bob = Party::node(&mut h, "bob", 2);
    both_ways(&mut h, Party::rust("alice", 2), bob, false);
}

#[test]
fn libsignal_initiates_with_one_time_prekey() {
    let mut h = harness!();
    let alice = Party::node(&mut h, "alice", 1);
    both_ways(&mut h, alice, Party::rust("bob", 3), true);
}

#[test]
fn libsignal_initiates_without_one_time_prekey() {
    let mut h = harness!();
    let alice = Party::node(&mut h, "alice", 1);
    both_ways(&mut h, alice, Party::rust("bob", 4), false);
}

/// Messages in flight in one direction: (type, body, plaintext).
type InFlight = VecDeque<(u8, Vec<u8>, Vec<u8>)>;

/// A long conversation with random turn-taking, out-of-order delivery and
/// dropped messages.
fn conversation(h: &mut Harness, mut alice: Party, mut bob: Party, seed: u64, total: usize) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    connect(h, &mut alice, &mut bob, true);
    let mut parties = [alice, bob];
    // In flight, per direction (0: alice to bob, 1: bob to alice).
    let mut queues: [InFlight; 2] = [VecDeque::new(), VecDeque::new()];
    let mut can_send = [true, false];
    let (mut sent, mut delivered, mut dropped) = (0usize, 0usize, 0usize);

    let deliver = |h: &mut Harness,
                   parties: &mut [Party; 2],
                   queues: &mut [InFlight; 2],
                   can_send: &mut [bool; 2],
                   direction: usize,
                   index: usize| {
        let (ty, body, plaintext) = queues[direction].remove(index).unwrap();
        let sender = parties[direction].name().to_string();
        let receiver = &mut parties[1 - direction];
        let got = receiver
            .decrypt(h, &sender, &(ty, body))
            .unwrap_or_else(|e| panic!("{} failed to decrypt: {e}", receiver.name()));
        assert_eq!(got, plaintext);
        can_send[1 - direction] = true;
    };

    while sent < total {
        let who = rng.gen_range(0..2);
        if rng.gen_bool(0.5) && can_send[who] {
            for _ in 0..rng.gen_range(1..=3) {
                let mut plaintext = vec![0u8; rng.gen_range(0..300)];
                rng.fill(&mut plaintext[..]);
                let peer = parties[1 - who].name().to_string();
                let (ty, body) = parties[who].encrypt(h, &peer, &plaintext);
                queues[who].push_back((ty, body, plaintext));
                sent += 1;
            }
        } else if !queues[who].is_empty() {
            let window = queues[who].len().min(4);
            let index = rng.gen_range(0..window);
            if rng.gen_bool(0.05) {
                queues[who].remove(index);
                dropped += 1;
            } else {
                deliver(h, &mut parties, &mut queues, &mut can_send, who, index);
                delivered += 1;
            }
        }
    }
    for direction in 0..2 {
        while !queues[direction].is_empty() {
            let index = rng.gen_range(0..queues[direction].len());
            deliver(
                h,
                &mut parties,
                &mut queues,
                &mut can_send,
                direction,
                index,
            );
            delivered += 1;
        }
    }
    assert_eq!(sent, delivered + dropped);
    assert!(dropped > 0, "the run should drop some messages");
}

#[test]
fn thousand_messages_rust_initiates() {
    let mut h = harness!();
    let bob = Party::node(&mut h, "bob", 2);
    conversation(&mut h, Party::rust("alice", 10), bob, 1, 1000);
}

#[test]
fn thousand_messages_libsignal_initiates() {
    let mut h = harness!();
    let alice = Party::node(&mut h, "alice", 1);
    conversation(&mut h, alice, Party::rust("bob", 11), 2, 1000);
}

#[test]
fn duplicates_are_refused_both_ways() {
    let mut h = harness!();
    let mut alice = Party::rust("alice", 20);
    let mut bob = Party::node(&mut h, "bob", 2);
    connect(&mut h, &mut alice, &mut bob, true);
    exchange(&mut h, &mut alice, &mut bob, "first");

    let reply = bob.encrypt(&mut h, "alice", b"reply");
    assert_eq!(alice.decrypt(&mut h, "bob", &reply).unwrap(), b"reply");
    let err = alice.decrypt(&mut h, "bob", &reply).unwrap_err();
    assert!(err.starts_with("DuplicateMessage"), "{err}");

    let message = alice.encrypt(&mut h, "bob", b"again");
    assert_eq!(bob.decrypt(&mut h, "alice", &message).unwrap(), b"again");
    let err = bob.decrypt(&mut h, "alice", &message).unwrap_err();
    assert_eq!(err, "DuplicatedMessage");

    // Both sessions still work after the refusals.
    exchange(&mut h, &mut bob, &mut alice, "after");
    exchange(&mut h, &mut alice, &mut bob, "after too");
}

#[test]
fn tampered_messages_are_refused_and_change_nothing() {
    let mut h = harness!();
    let mut alice = Party::node(&mut h, "alice", 1);
    let mut bob = Party::rust("bob", 30);
    connect(&mut h, &mut alice, &mut bob, true);
    exchange(&mut h, &mut alice, &mut bob, "hi");
    exchange(&mut h, &mut bob, &mut alice, "hi back");

    let message = alice.encrypt(&mut h, "bob", b"the real one");
    for i in 0..message.1.len() {
        let mut bad = message.clone();
        bad.1[i] ^= 0x01;
        let result = bob.decrypt(&mut h, "alice", &bad);
        assert!(result.is_err(), "flipping byte {i} went unnoticed");
    }
    assert_eq!(
        bob.decrypt(&mut h, "alice", &message).unwrap(),
        b"the real one"
    );
}

#[test]
fn libsignal_peer_reregisters() {
    let mut h = harness!();
    let mut alice = Party::rust("alice", 40);
    let mut bob = Party::node(&mut h, "bob", 2);
    connect(&mut h, &mut alice, &mut bob, true);
    exchange(&mut h, &mut alice, &mut bob, "before");
    exchange(&mut h, &mut bob, &mut alice, "before, back");

    // Bob reinstalls: new identity, no sessions. He starts a new session with
    // Alice from her bundle; her old session is archived.
    let mut bob = Party::node(&mut h, "bob", 3);
    connect(&mut h, &mut bob, &mut alice, true);
    assert_eq!(exchange(&mut h, &mut bob, &mut alice, "new me"), PREKEY);
    assert_eq!(
        exchange(&mut h, &mut alice, &mut bob, "welcome back"),
        WHISPER
    );
    assert_eq!(exchange(&mut h, &mut bob, &mut alice, "thanks"), WHISPER);

    // And when Alice is the one to fetch the new bundle after a reinstall.
    let mut bob = Party::node(&mut h, "bob", 4);
    connect(&mut h, &mut alice, &mut bob, false);
    assert_eq!(exchange(&mut h, &mut alice, &mut bob, "again?"), PREKEY);
    assert_eq!(exchange(&mut h, &mut bob, &mut alice, "again"), WHISPER);
}

#[test]
fn rust_peer_reregisters() {
    let mut h = harness!();
    let mut alice = Party::node(&mut h, "alice", 1);
    let mut bob = Party::rust("bob", 50);
    connect(&mut h, &mut alice, &mut bob, true);
    exchange(&mut h, &mut alice, &mut bob, "before");
    exchange(&mut h, &mut bob, &mut alice, "before, back");

    // Bob reinstalls on passerelle-signal and writes first.
    let mut bob = Party::rust("bob", 51);
    connect(&mut h, &mut bob, &mut alice, true);
    let message = bob.encrypt(&mut h, "alice", b"new me");
    // libsignal's store refuses a changed identity until the user accepts it.
    assert_eq!(
        alice.decrypt(&mut h, "bob", &message).unwrap_err(),
        "UntrustedIdentity"
    );
    let Party::Rust(rust_bob) = &bob else {
        unreachable!()
    };
    h.call(
        json!({"op": "trustIdentity", "name": "alice", "peer": "bob", "peerDevice": 1,
                  "identityKey": b64(rust_bob.identity_key().serialize())}),
    )
    .unwrap();
    assert_eq!(alice.decrypt(&mut h, "bob", &message).unwrap(), b"new me");
    assert_eq!(
        exchange(&mut h, &mut alice, &mut bob, "welcome back"),
        WHISPER
    );
}
