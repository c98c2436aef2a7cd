//! A device on either implementation, named by an account UUID and a device
//! id as Passerelle names devices, so that tests can mix passerelle-signal
//! and libsignal parties freely.

// Each test crate uses part of it.
#![allow(dead_code)]

use std::collections::VecDeque;

use passerelle_signal::{CiphertextMessage, Error, ProtocolAddress};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};

use crate::harness::{Harness, HarnessError, b64, unb64};
use crate::support::rust_party::RustParty;

pub const PREKEY: u8 = 3;
pub const WHISPER: u8 = 2;

/// A distinct account UUID per seed.
pub fn account(seed: u64) -> String {
    format!("{:08x}-5e55-4a1e-8000-{:012x}", seed as u32, seed)
}

/// Why a decryption failed, on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Rust(Error),
    Node(HarnessError),
}

pub enum Party {
    Rust(Box<RustParty>),
    Node { name: String, device: u32 },
}

impl Party {
    pub fn rust(name: &str, device: u32, seed: u64) -> Self {
        Party::Rust(Box::new(RustParty::new(
            name,
            1000 + seed as u32,
            device,
            seed,
        )))
    }

    pub fn node(h: &mut Harness, name: &str, device: u32, registration_id: u32) -> Self {
        h.call(
            json!({"op": "create", "name": name, "registrationId": registration_id,
                      "deviceId": device}),
        )
        .unwrap();
        Party::Node {
            name: name.into(),
            device,
        }
    }

    pub fn address(&self) -> ProtocolAddress {
        match self {
            Party::Rust(p) => p.address(),
            Party::Node { name, device } => ProtocolAddress::new(name.clone(), *device),
        }
    }

    pub fn bundle(&mut self, h: &mut Harness, one_time: bool) -> Value {
        match self {
            Party::Rust(p) => p.bundle(one_time),
            Party::Node { name, .. } => h
                .call(json!({"op": "bundle", "name": name, "oneTimePreKey": one_time}))
                .unwrap(),
        }
    }

    pub fn process_bundle(&mut self, h: &mut Harness, peer: &ProtocolAddress, bundle: &Value) {
        match self {
            Party::Rust(p) => p.process_bundle(peer.name(), peer.device_id(), bundle),
            Party::Node { name, .. } => {
                let mut request = bundle.clone();
                let fields = request.as_object_mut().unwrap();
                fields.insert("op".into(), "processBundle".into());
                fields.insert("name".into(), name.clone().into());
                fields.insert("peer".into(), peer.name().into());
                fields.insert("peerDevice".into(), peer.device_id().into());
                h.call(request).unwrap();
            }
        }
    }

    pub fn encrypt(
        &mut self,
        h: &mut Harness,
        peer: &ProtocolAddress,
        plaintext: &[u8],
    ) -> (u8, Vec<u8>) {
        match self {
            Party::Rust(p) => p.encrypt(peer.name(), peer.device_id(), plaintext),
            Party::Node { name, .. } => {
                let m = h
                    .call(json!({"op": "encrypt", "name": name, "peer": peer.name(),
                                 "peerDevice": peer.device_id(), "plaintext": b64(plaintext)}))
                    .unwrap();
                (m["type"].as_u64().unwrap() as u8, unb64(&m["body"]))
            }
        }
    }

    /// Decrypts a message that `from` (as this party names the sender) sent.
    pub fn decrypt(
        &mut self,
        h: &mut Harness,
        from: &ProtocolAddress,
        message: &(u8, Vec<u8>),
    ) -> Result<Vec<u8>, Refusal> {
        match self {
            Party::Rust(p) => p
                .decrypt(from.name(), from.device_id(), message.0, &message.1)
                .map_err(Refusal::Rust),
            Party::Node { name, .. } => h
                .call(json!({"op": "decrypt", "name": name, "peer": from.name(),
                             "peerDevice": from.device_id(), "type": message.0,
                             "body": b64(&message.1)}))
                .map(|r| unb64(&r["plaintext"]))
                .map_err(Refusal::Node),
        }
    }

    /// The stored session with `peer`, when this party is in Rust.
    pub fn session_bytes(&self, peer: &ProtocolAddress) -> Option<Vec<u8>> {
        use passerelle_signal::SessionStore;
        match self {
            Party::Rust(p) => p.store.load_session(peer).unwrap().map(|r| r.serialize()),
            Party::Node { .. } => None,
        }
    }
}

/// `alice` starts a session from `bob`'s bundle.
pub fn connect(h: &mut Harness, alice: &mut Party, bob: &mut Party, one_time: bool) {
    let bundle = bob.bundle(h, one_time);
    alice.process_bundle(h, &bob.address(), &bundle);
}

/// Sends `text` from `from` to `to` and checks it arrives; returns the type.
pub fn exchange(h: &mut Harness, from: &mut Party, to: &mut Party, text: &str) -> u8 {
    let message = from.encrypt(h, &to.address(), text.as_bytes());
    let plaintext = to
        .decrypt(h, &from.address(), &message)
        .unwrap_or_else(|e| panic!("{} could not decrypt {text:?}: {e:?}", to.address()));
    assert_eq!(plaintext, text.as_bytes());
    message.0
}

/// A session started by `alice`, used both ways, PreKey messages until Bob
/// answers.
pub fn both_ways(h: &mut Harness, mut alice: Party, mut bob: Party, one_time: bool) {
    connect(h, &mut alice, &mut bob, one_time);
    assert_eq!(exchange(h, &mut alice, &mut bob, "hello"), PREKEY);
    assert_eq!(exchange(h, &mut alice, &mut bob, "still there?"), PREKEY);
    assert_eq!(exchange(h, &mut bob, &mut alice, "yes"), WHISPER);
    assert_eq!(exchange(h, &mut alice, &mut bob, "good"), WHISPER);
    assert_eq!(exchange(h, &mut alice, &mut bob, ""), WHISPER);
    let long = "x".repeat(5000);
    assert_eq!(exchange(h, &mut bob, &mut alice, &long), WHISPER);
}

/// Messages in flight in one direction: (type, body, plaintext).
type InFlight = VecDeque<(u8, Vec<u8>, Vec<u8>)>;

/// What a conversation did.
#[derive(Debug)]
pub struct Conversation {
    pub sent: usize,
    pub dropped: usize,
    /// How often the receiving direction changed: each change lets the
    /// ratchets (and SPQR's epochs) advance.
    pub turns: usize,
    /// The highest SPQR epoch each side's messages carried (Alice's, then
    /// Bob's); 0 when the session runs no post-quantum ratchet.
    pub epochs: [u64; 2],
}

/// The SPQR epoch a message's `pq_ratchet` field names: a version byte,
/// then the epoch as a varint; 0 for an empty field.
pub fn spqr_epoch(ty: u8, body: &[u8]) -> u64 {
    let message = CiphertextMessage::deserialize(ty, body).expect("a message we just sent");
    let pq = match &message {
        CiphertextMessage::Signal(m) => m.pq_ratchet(),
        CiphertextMessage::PreKey(m) => m.message().pq_ratchet(),
    };
    let mut epoch = 0u64;
    for (i, byte) in pq.iter().skip(1).take(10).enumerate() {
        epoch |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            break;
        }
    }
    epoch
}

/// A long conversation started by `alice`: random turn-taking in bursts of
/// one to three messages, out-of-order delivery (within a window of four)
/// and dropped messages (one in twenty).
pub fn conversation(
    h: &mut Harness,
    alice: Party,
    bob: Party,
    seed: u64,
    total: usize,
) -> Conversation {
    conversation_in_bursts(h, alice, bob, seed, total, 3)
}

/// [`conversation`] with bursts of one to `max_burst` messages. The rhythm
/// decides how fast SPQR's epochs advance: each epoch needs a run of
/// exchanges in both directions, and long one-sided bursts hold it back
/// (libsignal's SPQR and ours alike).
pub fn conversation_in_bursts(
    h: &mut Harness,
    mut alice: Party,
    mut bob: Party,
    seed: u64,
    total: usize,
    max_burst: usize,
) -> Conversation {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    connect(h, &mut alice, &mut bob, true);
    let mut parties = [alice, bob];
    let addresses = [parties[0].address(), parties[1].address()];
    let mut queues: [InFlight; 2] = [VecDeque::new(), VecDeque::new()];
    let mut can_send = [true, false];
    let (mut sent, mut delivered, mut dropped, mut turns) = (0usize, 0usize, 0usize, 0usize);
    let mut epochs = [0u64; 2];
    let mut last_direction = None;

    let mut deliver = |h: &mut Harness,
                       parties: &mut [Party; 2],
                       queues: &mut [InFlight; 2],
                       can_send: &mut [bool; 2],
                       direction: usize,
                       index: usize| {
        let (ty, body, plaintext) = queues[direction].remove(index).unwrap();
        let got = parties[1 - direction]
            .decrypt(h, &addresses[direction], &(ty, body))
            .unwrap_or_else(|e| panic!("{} failed to decrypt: {e:?}", addresses[1 - direction]));
        assert_eq!(got, plaintext);
        can_send[1 - direction] = true;
        if last_direction.replace(direction) != Some(direction) {
            turns += 1;
        }
    };

    while sent < total {
        let who = rng.gen_range(0..2);
        if rng.gen_bool(0.5) && can_send[who] {
            for _ in 0..rng.gen_range(1..=max_burst) {
                let mut plaintext = vec![0u8; rng.gen_range(0..300)];
                rng.fill(&mut plaintext[..]);
                let (ty, body) = parties[who].encrypt(h, &addresses[1 - who], &plaintext);
                epochs[who] = epochs[who].max(spqr_epoch(ty, &body));
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
    Conversation {
        sent,
        dropped,
        turns,
        epochs,
    }
}
