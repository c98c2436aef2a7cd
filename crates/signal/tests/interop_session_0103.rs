//! 1:1 sessions between passerelle-signal and libsignal-client 0.103.0
//! (through the Node harness), every device named by an account UUID:
//! PreKey messages bind both addresses under their MAC, and every session
//! runs SPQR, which 0.103 requires.
//!
//! Also: libsignal-client 0.90.0, which neither writes nor checks the
//! address binding, still takes our bound PreKey messages.
//!
//! Tests that need both sides to run SPQR are ignored until the SPQR state
//! machine is part of the sessions (`session::pq_setup::initial_state`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "interop/harness.rs"]
mod harness;
mod support {
    pub mod mixed_party;
    pub mod rust_party;
}

use harness::{Harness, Libsignal};
use passerelle_signal::{Error, PreKeySignalMessage, ProtocolAddress, SessionStore};
use serde_json::json;
use support::mixed_party::{
    PREKEY, Party, Refusal, WHISPER, account, both_ways, connect, conversation,
    conversation_in_bursts, exchange,
};

macro_rules! harness {
    ($version:expr) => {
        match Harness::spawn_version($version) {
            Some(harness) => harness,
            None => return,
        }
    };
}

fn aci(address: &ProtocolAddress) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(uuid::Uuid::parse_str(address.name()).unwrap().as_bytes());
    out.push(address.device_id() as u8);
    out
}

// ---- runnable without SPQR ----------------------------------------------

/// libsignal 0.103 takes our bundle; its PreKey message parses here, is
/// bound to exactly our two addresses, and is refused, with nothing stored,
/// by any other view of who sent it or who receives it.
#[test]
fn libsignal_0103_prekey_message_is_bound_and_checked_here() {
    let mut h = harness!(Libsignal::V0_103);
    let mut alice = Party::node(&mut h, &account(1), 2, 1);
    let mut bob = Party::rust(&account(2), 3, 2);
    connect(&mut h, &mut alice, &mut bob, true);
    let message = alice.encrypt(&mut h, &bob.address(), b"bound to bob.3");
    assert_eq!(message.0, PREKEY);
    let parsed = PreKeySignalMessage::deserialize(&message.1).unwrap();
    let expected = [aci(&alice.address()), aci(&bob.address())].concat();
    assert_eq!(parsed.message().addresses(), Some(&expected[..]));
    assert!(
        !parsed.message().pq_ratchet().is_empty(),
        "0.103 always sends an SPQR payload"
    );

    let alice_address = alice.address();
    let bob_address = bob.address();
    let views = [
        (alice_address.clone(), ProtocolAddress::new(account(9), 3)),
        (alice_address.clone(), ProtocolAddress::new(account(2), 4)),
        (ProtocolAddress::new(account(8), 2), bob_address.clone()),
        (ProtocolAddress::new(account(1), 5), bob_address.clone()),
    ];
    let Party::Rust(rust_bob) = &mut bob else {
        unreachable!()
    };
    let pre_keys = rust_bob.store.pre_key_count();
    for (sender, recipient) in views {
        let err = passerelle_signal::message_decrypt(
            &passerelle_signal::CiphertextMessage::PreKey(parsed.clone()),
            &sender,
            &recipient,
            &mut rust_bob.store,
            &mut rust_bob.rng,
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::MisaddressedMessage {
                sender: sender.clone(),
                recipient
            }
        );
        assert!(rust_bob.store.load_session(&sender).unwrap().is_none());
        assert_eq!(rust_bob.store.pre_key_count(), pre_keys);
    }
    // With the right view the binding passes; whether the message then
    // decrypts depends on SPQR alone.
    let err = bob.decrypt(&mut h, &alice_address, &message).err();
    assert!(
        !matches!(err, Some(Refusal::Rust(Error::MisaddressedMessage { .. }))),
        "{err:?}"
    );
}

/// Our PreKey message carries the binding libsignal 0.103 writes, and
/// libsignal parses it (it fails later, in decryption, only for want of
/// SPQR: see `docs/signal.md`).
#[test]
fn our_prekey_message_to_libsignal_0103_is_bound_like_its_own() {
    let mut h = harness!(Libsignal::V0_103);
    let mut alice = Party::rust(&account(11), 1, 11);
    let mut bob = Party::node(&mut h, &account(12), 1, 12);
    connect(&mut h, &mut alice, &mut bob, false);
    let message = alice.encrypt(&mut h, &bob.address(), b"hello 0.103");
    assert_eq!(message.0, PREKEY);
    let parsed = PreKeySignalMessage::deserialize(&message.1).unwrap();
    let expected = [aci(&alice.address()), aci(&bob.address())].concat();
    assert_eq!(parsed.message().addresses(), Some(&expected[..]));
    // A message libsignal cannot parse fails in deserialization with an
    // invalid protobuf; ours reaches the session.
    let err = bob.decrypt(&mut h, &alice.address(), &message).err();
    if let Some(Refusal::Node(err)) = err {
        assert!(!err.message.contains("protobuf"), "{err}");
    }
}

/// libsignal 0.90 neither writes nor checks the binding: it takes our bound
/// PreKey messages (the field is covered by the MAC it checks), and its own
/// unbound ones are accepted here.
#[test]
fn libsignal_0090_takes_bound_prekey_messages_both_ways() {
    let mut h = harness!(Libsignal::V0_90);
    let bob = Party::node(&mut h, &account(21), 1, 21);
    both_ways(&mut h, Party::rust(&account(22), 1, 22), bob, true);
    let alice = Party::node(&mut h, &account(23), 2, 23);
    both_ways(&mut h, alice, Party::rust(&account(24), 7, 24), false);
}

#[test]
fn libsignal_0090_writes_no_binding() {
    let mut h = harness!(Libsignal::V0_90);
    let mut alice = Party::node(&mut h, &account(25), 1, 25);
    let mut bob = Party::rust(&account(26), 1, 26);
    connect(&mut h, &mut alice, &mut bob, true);
    let message = alice.encrypt(&mut h, &bob.address(), b"unbound");
    let parsed = PreKeySignalMessage::deserialize(&message.1).unwrap();
    assert_eq!(parsed.message().addresses(), None);
    // So any view of the addresses takes it.
    let other_view = ProtocolAddress::new(account(27), 1);
    let Party::Rust(p) = &mut bob else {
        unreachable!()
    };
    let plaintext = passerelle_signal::message_decrypt(
        &passerelle_signal::CiphertextMessage::PreKey(parsed),
        &other_view,
        &p.address(),
        &mut p.store,
        &mut p.rng,
    )
    .unwrap();
    assert_eq!(plaintext, b"unbound");
}

#[test]
fn long_random_conversation_with_libsignal_0090_under_uuid_names() {
    let mut h = harness!(Libsignal::V0_90);
    let bob = Party::node(&mut h, &account(31), 1, 31);
    let run = conversation(&mut h, Party::rust(&account(32), 1, 32), bob, 3, 1000);
    assert!(run.turns >= 200, "{run:?}");
    assert!(run.epochs.iter().all(|&e| e >= 2), "{run:?}");
}

// ---- sessions with SPQR on both sides ------------------------------------

#[test]
fn rust_initiates_with_one_time_prekey() {
    let mut h = harness!(Libsignal::V0_103);
    let bob = Party::node(&mut h, &account(41), 1, 41);
    both_ways(&mut h, Party::rust(&account(42), 1, 42), bob, true);
}

#[test]
fn rust_initiates_without_one_time_prekey() {
    let mut h = harness!(Libsignal::V0_103);
    let bob = Party::node(&mut h, &account(43), 2, 43);
    both_ways(&mut h, Party::rust(&account(44), 3, 44), bob, false);
}

#[test]
fn libsignal_initiates_with_one_time_prekey() {
    let mut h = harness!(Libsignal::V0_103);
    let alice = Party::node(&mut h, &account(45), 1, 45);
    both_ways(&mut h, alice, Party::rust(&account(46), 1, 46), true);
}

#[test]
fn libsignal_initiates_without_one_time_prekey() {
    let mut h = harness!(Libsignal::V0_103);
    let alice = Party::node(&mut h, &account(47), 4, 47);
    both_ways(&mut h, alice, Party::rust(&account(48), 5, 48), false);
}

/// Long enough for SPQR to go through several epochs both ways.
#[test]
fn thousand_messages_rust_initiates() {
    let mut h = harness!(Libsignal::V0_103);
    let bob = Party::node(&mut h, &account(51), 1, 51);
    let run = conversation_in_bursts(&mut h, Party::rust(&account(52), 1, 52), bob, 4, 1000, 1);
    assert!(run.turns >= 200, "{run:?}");
    assert!(run.epochs.iter().all(|&e| e >= 4), "{run:?}");
}

#[test]
fn thousand_messages_libsignal_initiates() {
    let mut h = harness!(Libsignal::V0_103);
    let alice = Party::node(&mut h, &account(53), 1, 53);
    let run = conversation_in_bursts(&mut h, alice, Party::rust(&account(54), 1, 54), 5, 1000, 1);
    assert!(run.turns >= 200, "{run:?}");
    assert!(run.epochs.iter().all(|&e| e >= 4), "{run:?}");
}

/// libsignal refuses our PreKey message when its view of the addresses
/// differs from the binding, and takes it with the right view.
#[test]
fn libsignal_0103_refuses_our_misaddressed_prekey_message() {
    let mut h = harness!(Libsignal::V0_103);
    let mut alice = Party::rust(&account(61), 1, 61);
    let mut bob = Party::node(&mut h, &account(62), 1, 62);
    connect(&mut h, &mut alice, &mut bob, true);
    let message = alice.encrypt(&mut h, &bob.address(), b"for bob");
    let impostor = ProtocolAddress::new(account(63), 1);
    let err = bob.decrypt(&mut h, &impostor, &message).unwrap_err();
    let Refusal::Node(err) = err else {
        unreachable!()
    };
    assert_eq!(err.kind, "Generic", "{err}");
    assert_eq!(
        bob.decrypt(&mut h, &alice.address(), &message).unwrap(),
        b"for bob"
    );
}

#[test]
fn libsignal_0103_peer_reregisters() {
    let mut h = harness!(Libsignal::V0_103);
    let name = account(71);
    let mut alice = Party::rust(&account(72), 1, 72);
    let mut bob = Party::node(&mut h, &name, 1, 2);
    connect(&mut h, &mut alice, &mut bob, true);
    exchange(&mut h, &mut alice, &mut bob, "before");
    exchange(&mut h, &mut bob, &mut alice, "before, back");

    // Bob reinstalls (new identity, no sessions) and writes first.
    let mut bob = Party::node(&mut h, &name, 1, 3);
    connect(&mut h, &mut bob, &mut alice, true);
    assert_eq!(exchange(&mut h, &mut bob, &mut alice, "new me"), PREKEY);
    assert_eq!(
        exchange(&mut h, &mut alice, &mut bob, "welcome back"),
        WHISPER
    );

    // And when Alice fetches the bundle after another reinstall.
    let mut bob = Party::node(&mut h, &name, 1, 4);
    connect(&mut h, &mut alice, &mut bob, false);
    assert_eq!(exchange(&mut h, &mut alice, &mut bob, "again?"), PREKEY);
    assert_eq!(exchange(&mut h, &mut bob, &mut alice, "again"), WHISPER);
}

#[test]
fn rust_peer_reregisters_with_libsignal_0103() {
    let mut h = harness!(Libsignal::V0_103);
    let name = account(81);
    let mut alice = Party::node(&mut h, &account(82), 1, 82);
    let mut bob = Party::rust(&name, 1, 83);
    connect(&mut h, &mut alice, &mut bob, true);
    exchange(&mut h, &mut alice, &mut bob, "before");
    exchange(&mut h, &mut bob, &mut alice, "before, back");

    let mut bob = Party::rust(&name, 1, 84);
    connect(&mut h, &mut bob, &mut alice, true);
    let message = bob.encrypt(&mut h, &alice.address(), b"new me");
    let err = alice.decrypt(&mut h, &bob.address(), &message).unwrap_err();
    assert!(
        matches!(&err, Refusal::Node(e) if e.kind == "UntrustedIdentity"),
        "{err:?}"
    );
    let Party::Rust(rust_bob) = &bob else {
        unreachable!()
    };
    h.call(
        json!({"op": "trustIdentity", "name": account(82), "peer": name, "peerDevice": 1,
                  "identityKey": harness::b64(rust_bob.identity_key().serialize())}),
    )
    .unwrap();
    assert_eq!(
        alice.decrypt(&mut h, &bob.address(), &message).unwrap(),
        b"new me"
    );
    assert_eq!(
        exchange(&mut h, &mut alice, &mut bob, "welcome back"),
        WHISPER
    );
}

/// Under one schedule of sends, drops and reordering, our SPQR moves through
/// epochs exactly as libsignal's does, whichever implementations meet: the
/// same epochs for libsignal with libsignal, us with libsignal and us with
/// us, in a rhythm where epochs advance and in one where bursts hold them.
#[test]
fn epochs_advance_as_libsignal_advances_them() {
    let mut h = harness!(Libsignal::V0_103);
    for (max_burst, seed, least_epoch) in [(1, 91, 3), (3, 92, 1)] {
        let mut epochs = Vec::new();
        for (i, (alice_rust, bob_rust)) in
            [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .enumerate()
        {
            let n = 100 + 10 * seed + 2 * i as u64;
            let make = |h: &mut Harness, rust: bool, n: u64| {
                if rust {
                    Party::rust(&account(n), 1, n)
                } else {
                    Party::node(h, &account(n), 1, n as u32)
                }
            };
            let alice = make(&mut h, alice_rust, n);
            let bob = make(&mut h, bob_rust, n + 1);
            let run = conversation_in_bursts(&mut h, alice, bob, seed, 600, max_burst);
            epochs.push(run.epochs);
        }
        assert!(
            epochs.iter().all(|e| *e == epochs[0]),
            "bursts of {max_burst}: {epochs:?}"
        );
        assert!(
            epochs[0].iter().all(|&e| e >= least_epoch),
            "bursts of {max_burst}: {epochs:?}"
        );
    }
}
