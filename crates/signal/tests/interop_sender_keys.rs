//! Sender keys against the real libsignal: groups of three mixing members on
//! libsignal-client (Node) and on passerelle-signal, every member's messages
//! decrypting on every other member, in and out of order.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "interop/harness.rs"]
mod harness;

use harness::{Harness, HarnessError, b64, unb64};
use passerelle_signal::sender_keys::{
    InMemSenderKeyStore, SenderKeyDistributionMessage, SenderKeyMessage,
    create_sender_key_distribution_message, group_decrypt, group_encrypt,
    process_sender_key_distribution_message,
};
use passerelle_signal::{Error, ProtocolAddress};
use rand::seq::SliceRandom as _;
use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};
use uuid::Uuid;

/// Starts the harness or skips the test (outside CI) when it is not installed.
macro_rules! harness {
    () => {
        match Harness::spawn() {
            Some(harness) => harness,
            None => return,
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Node,
    Rust,
}

/// A group member on either implementation.
struct Member {
    side: Side,
    address: ProtocolAddress,
    store: InMemSenderKeyStore,
}

/// Why a decryption failed, on either side.
#[derive(Debug)]
enum Refusal {
    Rust(Error),
    Node(HarnessError),
}

impl Refusal {
    fn is_duplicate(&self) -> bool {
        match self {
            Refusal::Rust(err) => matches!(err, Error::DuplicateMessage { .. }),
            Refusal::Node(err) => err.kind == "DuplicatedMessage",
        }
    }
}

struct Group {
    h: Harness,
    rng: ChaCha20Rng,
    distribution_id: Uuid,
    members: Vec<Member>,
}

impl Group {
    /// Members `{prefix}0`, `{prefix}1`, ... on the given sides; Node
    /// members are created in the harness.
    fn new(mut h: Harness, prefix: &str, sides: &[Side], seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut members = Vec::new();
        for (i, &side) in sides.iter().enumerate() {
            let name = format!("{prefix}{i}");
            let device = u32::try_from(i).unwrap() + 1;
            if side == Side::Node {
                ok(
                    &mut h,
                    json!({"op": "create", "name": name, "registrationId": 100 + i, "deviceId": device}),
                );
            }
            members.push(Member {
                side,
                address: ProtocolAddress::new(name, device),
                store: InMemSenderKeyStore::new(),
            });
        }
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        // A version 4 UUID: libsignal-client's JS layer refuses UUIDs that are
        // not RFC 4122 (its `uuid` package validates them).
        let distribution_id = uuid::Builder::from_random_bytes(id).into_uuid();
        Self {
            h,
            rng,
            distribution_id,
            members,
        }
    }

    fn skdm(&mut self, who: usize) -> Vec<u8> {
        let member = &mut self.members[who];
        match member.side {
            Side::Rust => create_sender_key_distribution_message(
                &member.address,
                self.distribution_id,
                &mut member.store,
                &mut self.rng,
            )
            .unwrap()
            .serialized()
            .to_vec(),
            Side::Node => {
                let response = ok(
                    &mut self.h,
                    json!({"op": "skdmCreate", "name": member.address.name(),
                           "distributionId": self.distribution_id.to_string()}),
                );
                let bytes = unb64(&response["skdm"]);
                // libsignal's bytes parse here and serialize back unchanged.
                let parsed = SenderKeyDistributionMessage::deserialize(&bytes).unwrap();
                assert_eq!(parsed.serialized(), &bytes[..]);
                assert_eq!(parsed.distribution_id(), self.distribution_id);
                let again = SenderKeyDistributionMessage::new(
                    parsed.distribution_id(),
                    parsed.chain_id(),
                    parsed.iteration(),
                    parsed.chain_key(),
                    *parsed.signing_key(),
                );
                assert_eq!(again.serialized(), &bytes[..]);
                bytes
            }
        }
    }

    fn process(&mut self, who: usize, from: usize, skdm: &[u8]) {
        let sender = self.members[from].address.clone();
        let member = &mut self.members[who];
        match member.side {
            Side::Rust => {
                let skdm = SenderKeyDistributionMessage::deserialize(skdm).unwrap();
                process_sender_key_distribution_message(&sender, &skdm, &mut member.store).unwrap();
            }
            Side::Node => {
                ok(
                    &mut self.h,
                    json!({"op": "skdmProcess", "name": member.address.name(),
                           "sender": sender.name(), "senderDevice": sender.device_id(),
                           "skdm": b64(skdm)}),
                );
            }
        }
    }

    fn encrypt(&mut self, who: usize, plaintext: &[u8]) -> Vec<u8> {
        let member = &mut self.members[who];
        let bytes = match member.side {
            Side::Rust => group_encrypt(
                &mut member.store,
                &member.address,
                self.distribution_id,
                plaintext,
                &mut self.rng,
            )
            .unwrap()
            .serialized()
            .to_vec(),
            Side::Node => {
                let response = ok(
                    &mut self.h,
                    json!({"op": "groupEncrypt", "name": member.address.name(),
                           "distributionId": self.distribution_id.to_string(),
                           "plaintext": b64(plaintext)}),
                );
                unb64(&response["body"])
            }
        };
        // Either side's messages parse here and keep their bytes.
        let parsed = SenderKeyMessage::deserialize(&bytes).unwrap();
        assert_eq!(parsed.serialized(), &bytes[..]);
        assert_eq!(parsed.distribution_id(), self.distribution_id);
        bytes
    }

    fn decrypt(&mut self, who: usize, from: usize, message: &[u8]) -> Result<Vec<u8>, Refusal> {
        let sender = self.members[from].address.clone();
        let member = &mut self.members[who];
        match member.side {
            Side::Rust => group_decrypt(message, &mut member.store, &sender).map_err(Refusal::Rust),
            Side::Node => self
                .h
                .call(json!({"op": "groupDecrypt", "name": member.address.name(),
                             "sender": sender.name(), "senderDevice": sender.device_id(),
                             "body": b64(message)}))
                .map(|response| unb64(&response["plaintext"]))
                .map_err(Refusal::Node),
        }
    }

    /// Every member hands its distribution message to every other.
    fn distribute(&mut self) {
        for from in 0..self.members.len() {
            let skdm = self.skdm(from);
            for to in 0..self.members.len() {
                if to != from {
                    self.process(to, from, &skdm);
                }
            }
        }
    }

    /// Every member sends `count` messages; every other member receives them
    /// in its own random order, then refuses a replay of each.
    fn round(&mut self, round: usize, count: usize) {
        let n = self.members.len();
        let mut sent = Vec::new();
        for from in 0..n {
            for i in 0..count {
                let plaintext = format!(
                    "round {round}, message {i} from {} ({:?})",
                    self.members[from].address, self.members[from].side
                )
                .into_bytes();
                let message = self.encrypt(from, &plaintext);
                sent.push((from, message, plaintext));
            }
        }
        for to in 0..n {
            let mut order: Vec<usize> = (0..sent.len()).filter(|&k| sent[k].0 != to).collect();
            order.shuffle(&mut self.rng);
            for &k in &order {
                let (from, message, plaintext) = &sent[k];
                let got = self.decrypt(to, *from, message).unwrap_or_else(|err| {
                    panic!(
                        "{:?} {} could not decrypt {:?} from {:?} {}: {err:?}",
                        self.members[to].side,
                        self.members[to].address,
                        String::from_utf8_lossy(plaintext),
                        self.members[*from].side,
                        self.members[*from].address,
                    )
                });
                assert_eq!(&got, plaintext);
            }
            for &k in order.iter().take(2) {
                let (from, message, _) = &sent[k];
                let refusal = self.decrypt(to, *from, message).unwrap_err();
                assert!(refusal.is_duplicate(), "{refusal:?}");
            }
        }
    }
}

fn ok(h: &mut Harness, request: Value) -> Value {
    let op = request["op"].clone();
    h.call(request)
        .unwrap_or_else(|err| panic!("op {op} failed: {err}"))
}

fn group_of_three(sides: [Side; 3], prefix: &str, seed: u64) {
    let h = harness!();
    let mut group = Group::new(h, prefix, &sides, seed);
    group.distribute();
    group.round(0, 1);
    group.round(1, 5);
    // Long gaps: each sender sends many, receivers see them shuffled.
    group.round(2, 30);
}

#[test]
fn two_on_libsignal_one_on_rust() {
    group_of_three([Side::Node, Side::Node, Side::Rust], "nnr", 1);
    group_of_three([Side::Rust, Side::Node, Side::Node], "rnn", 2);
}

#[test]
fn two_on_rust_one_on_libsignal() {
    group_of_three([Side::Rust, Side::Rust, Side::Node], "rrn", 3);
    group_of_three([Side::Node, Side::Rust, Side::Rust], "nrr", 4);
}

/// A member joining late gets the chain at its current iteration, on
/// either side, and cannot read what came before.
#[test]
fn late_joiners_and_replayed_distribution_messages() {
    let h = harness!();
    let mut group = Group::new(
        h,
        "late",
        &[Side::Node, Side::Rust, Side::Node, Side::Rust],
        5,
    );
    // Members 0 (Node) and 1 (Rust) form the group first.
    let mut first = Vec::new();
    for (from, to) in [(0, 1), (1, 0)] {
        let skdm = group.skdm(from);
        group.process(to, from, &skdm);
        first.push(skdm);
    }
    let early: Vec<(usize, Vec<u8>)> = (0..2)
        .flat_map(|from| (0..3).map(move |i| (from, i)))
        .map(|(from, i)| (from, group.encrypt(from, format!("early {i}").as_bytes())))
        .collect();
    for (from, message) in &early {
        group.decrypt(1 - from, *from, message).unwrap();
    }
    // Members 2 (Node) and 3 (Rust) join: the SKDMs are at iteration 3.
    for from in 0..2 {
        let skdm = group.skdm(from);
        assert_eq!(
            SenderKeyDistributionMessage::deserialize(&skdm)
                .unwrap()
                .iteration(),
            3
        );
        for to in 2..4 {
            group.process(to, from, &skdm);
        }
    }
    for (from, message) in &early {
        for to in 2..4 {
            let refusal = group.decrypt(to, *from, message).unwrap_err();
            // Both implementations call an iteration behind the chain a
            // duplicate.
            assert!(refusal.is_duplicate(), "{refusal:?}");
        }
    }
    for from in 0..2 {
        let message = group.encrypt(from, b"after the join");
        for to in (0..4).filter(|&to| to != from) {
            assert_eq!(
                group.decrypt(to, from, &message).unwrap(),
                b"after the join"
            );
        }
    }
    // A replayed SKDM (the first, at iteration 0) does not rewind the chain
    // on either side: the early messages stay refused as duplicates.
    for (from, to) in [(0, 1), (1, 0)] {
        group.process(to, from, &first[from]);
    }
    for (from, message) in &early {
        let refusal = group.decrypt(1 - from, *from, message).unwrap_err();
        assert!(refusal.is_duplicate(), "{refusal:?}");
    }
    let message = group.encrypt(0, b"still on");
    assert_eq!(group.decrypt(1, 0, &message).unwrap(), b"still on");
    let message = group.encrypt(1, b"still on");
    assert_eq!(group.decrypt(0, 1, &message).unwrap(), b"still on");
}

/// Tampered messages from one side are refused by the other, which then
/// still decrypts the genuine message.
#[test]
fn tampering_is_refused_across_implementations() {
    let h = harness!();
    let mut group = Group::new(h, "tamper", &[Side::Node, Side::Rust], 6);
    group.distribute();
    for from in 0..2 {
        let to = 1 - from;
        let message = group.encrypt(from, b"genuine");
        for index in (0..message.len()).step_by(7).chain([message.len() - 1]) {
            let mut tampered = message.clone();
            tampered[index] ^= 0x04;
            assert!(
                group.decrypt(to, from, &tampered).is_err(),
                "byte {index} of a message from {from}"
            );
        }
        assert_eq!(group.decrypt(to, from, &message).unwrap(), b"genuine");
    }
}

// ---- libsignal's limits, compared message for message ----

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The ciphertext of `plaintext` at `steps` past `chain_key`, derived
/// independently of the crate.
fn forge_ciphertext(chain_key: &[u8; 32], steps: u32, plaintext: &[u8]) -> Vec<u8> {
    use aes::cipher::block_padding::Pkcs7;
    use aes::cipher::{BlockEncryptMut as _, KeyIvInit as _};
    let mut key = *chain_key;
    for _ in 0..steps {
        key = hmac(&key, &[0x02]);
    }
    let seed = hmac(&key, &[0x01]);
    let mut okm = [0u8; 48];
    hkdf::Hkdf::<sha2::Sha256>::new(None, &seed)
        .expand(b"WhisperGroup", &mut okm)
        .unwrap();
    let (iv, key) = okm.split_at(16);
    cbc::Encryptor::<aes::Aes256>::new(key.into(), iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

/// Hand-made chains, given to a libsignal member and a Rust member alike;
/// forged messages at chosen iterations must get the same answer from both.
#[test]
fn limits_agree_with_libsignal() {
    let h = harness!();
    let mut group = Group::new(h, "limits", &[Side::Rust, Side::Node, Side::Rust], 7);
    let signing = passerelle_signal::KeyPair::generate(&mut group.rng);
    let chain_key = [0x3c; 32];
    let max = passerelle_signal::limits::MAX_FORWARD_JUMPS;
    let kept = passerelle_signal::limits::MAX_MESSAGE_KEYS as u32;

    // (start iteration of the chain, iteration of the message, steps of the
    // chain key used to encrypt it, expected result)
    let cases: &[(u32, &[Case])] = &[
        (
            0,
            &[
                (max + 1, max + 1, Expect::Refused),
                (max, max, Expect::Decrypts),
                (max, max, Expect::Duplicate),
                (max - kept - 1, max - kept - 1, Expect::Duplicate),
                (max - kept, max - kept, Expect::Decrypts),
                (max - 1, max - 1, Expect::Decrypts),
                (2 * max + 2, 2 * max + 2, Expect::Refused),
                (2 * max + 1, 2 * max + 1, Expect::Decrypts),
                // Signed, but encrypted with the wrong key: refused, and
                // the kept key is still there afterwards.
                (2 * max, 7, Expect::Refused),
                (2 * max, 2 * max, Expect::Decrypts),
                (7, 7, Expect::Duplicate),
            ],
        ),
        (
            1000,
            &[
                (999, 0, Expect::Duplicate),
                (1003, 3, Expect::Decrypts),
                (1000, 0, Expect::Decrypts),
                (1002, 2, Expect::Decrypts),
                (1002, 2, Expect::Duplicate),
                // Signed, but the ciphertext is from the wrong key.
                (1001, 2, Expect::Refused),
                (1001, 1, Expect::Decrypts),
            ],
        ),
        (u32::MAX, &[(u32::MAX, 0, Expect::Refused)]),
    ];

    for (chain_id, &(start, messages)) in (1u32..).zip(cases) {
        let skdm = SenderKeyDistributionMessage::new(
            group.distribution_id,
            chain_id,
            start,
            &chain_key,
            signing.public,
        );
        for to in [1, 2] {
            group.process(to, 0, skdm.serialized());
        }
        for &(iteration, steps, expect) in messages {
            let plaintext = format!("chain {chain_id} iteration {iteration}").into_bytes();
            let message = SenderKeyMessage::new(
                group.distribution_id,
                chain_id,
                iteration,
                forge_ciphertext(&chain_key, steps, &plaintext),
                &signing.private,
                &mut group.rng,
            );
            for to in [1, 2] {
                let got = group.decrypt(to, 0, message.serialized());
                let side = group.members[to].side;
                match (expect, &got) {
                    (Expect::Decrypts, Ok(text)) => assert_eq!(text, &plaintext),
                    (Expect::Duplicate, Err(refusal)) if refusal.is_duplicate() => {}
                    (Expect::Refused, Err(refusal)) if !refusal.is_duplicate() => {}
                    _ => panic!(
                        "{side:?}: chain {chain_id} from {start}, iteration {iteration} \
                         (steps {steps}): expected {expect:?}, got {got:?}"
                    ),
                }
            }
        }
    }
}

/// A forged message: its iteration, the steps of the chain key that
/// encrypts it, and what should happen.
type Case = (u32, u32, Expect);

#[derive(Clone, Copy, Debug)]
enum Expect {
    Decrypts,
    Duplicate,
    Refused,
}
