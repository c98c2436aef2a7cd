//! Checks the libsignal interop harness on its own: every party here lives in
//! Node, so these tests exercise only the real libsignal and the line protocol.
//! Tests that pit passerelle-signal against libsignal build on this.

// Tests fail by panicking.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "interop/harness.rs"]
mod harness;

use harness::{Harness, Libsignal, b64, unb64};
use rand::RngCore;
use serde_json::{Value, json};

/// Starts the harness or skips the test (outside CI) when it is not installed.
macro_rules! harness {
    () => {
        match Harness::spawn() {
            Some(harness) => harness,
            None => return,
        }
    };
}

fn ok(h: &mut Harness, request: Value) -> Value {
    let op = request["op"].clone();
    h.call(request)
        .unwrap_or_else(|err| panic!("op {op} failed: {err}"))
}

fn random(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// Creates a party; returns its serialized identity key.
fn create(h: &mut Harness, name: &str, registration_id: u32, device_id: u32) -> Vec<u8> {
    let party = ok(
        h,
        json!({"op": "create", "name": name, "registrationId": registration_id, "deviceId": device_id}),
    );
    unb64(&party["identityKey"])
}

/// `name` fetches `peer`'s bundle (device 1) and starts a session with it.
fn start_session(h: &mut Harness, name: &str, peer: &str, one_time_pre_key: bool) -> Value {
    let mut bundle = ok(
        h,
        json!({"op": "bundle", "name": peer, "oneTimePreKey": one_time_pre_key}),
    );
    let request = bundle.as_object_mut().unwrap();
    request.insert("op".into(), "processBundle".into());
    request.insert("name".into(), name.into());
    request.insert("peer".into(), peer.into());
    request.insert("peerDevice".into(), 1.into());
    ok(h, bundle.clone());
    bundle
}

/// Sends `plaintext` from `from` to `to` (both device 1), checks it arrives,
/// and returns the message type.
fn send(h: &mut Harness, from: &str, to: &str, plaintext: &[u8]) -> u64 {
    let message = ok(
        h,
        json!({"op": "encrypt", "name": from, "peer": to, "peerDevice": 1, "plaintext": b64(plaintext)}),
    );
    let decrypted = ok(
        h,
        json!({"op": "decrypt", "name": to, "peer": from, "peerDevice": 1,
               "type": message["type"], "body": message["body"]}),
    );
    assert_eq!(unb64(&decrypted["plaintext"]), plaintext);
    message["type"].as_u64().unwrap()
}

const PREKEY: u64 = 3;
const WHISPER: u64 = 2;

// ---- libsignal-client 0.103.0 on its own ----

const ALICE: &str = "a11ce000-0000-4000-8000-000000000001";
const BOB: &str = "b0b00000-0000-4000-8000-000000000002";
const CAROL: &str = "ca201000-0000-4000-8000-000000000003";

macro_rules! harness_0103 {
    () => {
        match Harness::spawn_version(Libsignal::V0_103) {
            Some(harness) => harness,
            None => return,
        }
    };
}

#[test]
fn ping_reports_the_second_pinned_version() {
    let mut h = harness_0103!();
    let pong = ok(&mut h, json!({"op": "ping"}));
    assert_eq!(pong["version"], "0.103.0");
}

#[test]
fn libsignal_0103_still_signs_kyber1024_prekeys() {
    let mut h = harness_0103!();
    create(&mut h, BOB, 7, 1);
    let bundle = ok(
        &mut h,
        json!({"op": "bundle", "name": BOB, "oneTimePreKey": true}),
    );
    let kyber = unb64(&bundle["kyberPreKey"]);
    assert_eq!((kyber.len(), kyber[0]), (1 + 1568, 0x08));
}

#[test]
fn libsignal_0103_conversation_under_uuid_names() {
    let mut h = harness_0103!();
    create(&mut h, ALICE, 1, 1);
    create(&mut h, BOB, 2, 1);
    start_session(&mut h, ALICE, BOB, true);
    assert_eq!(send(&mut h, ALICE, BOB, b"hello"), PREKEY);
    assert_eq!(send(&mut h, BOB, ALICE, b"hi"), WHISPER);
    for i in 0..20u8 {
        let (from, to) = if i % 3 == 0 {
            (BOB, ALICE)
        } else {
            (ALICE, BOB)
        };
        assert_eq!(send(&mut h, from, to, &[i; 40]), WHISPER);
    }
}

/// What libsignal itself answers to a PreKey message bound to other
/// addresses than its view: the error the Rust side sees from it.
#[test]
fn libsignal_0103_refuses_a_misaddressed_prekey_message() {
    let mut h = harness_0103!();
    create(&mut h, ALICE, 1, 1);
    create(&mut h, BOB, 2, 1);
    start_session(&mut h, ALICE, BOB, true);
    let message = ok(
        &mut h,
        json!({"op": "encrypt", "name": ALICE, "peer": BOB, "peerDevice": 1,
               "plaintext": b64(b"for bob")}),
    );
    // Bob believes it comes from Carol, or from Alice's device 2.
    for (peer, device) in [(CAROL, 1), (ALICE, 2)] {
        let err = h
            .call(
                json!({"op": "decrypt", "name": BOB, "peer": peer, "peerDevice": device,
                         "type": message["type"], "body": message["body"]}),
            )
            .unwrap_err();
        assert_eq!(err.kind, "Generic", "{err}");
        assert!(err.message.contains("decryption failed"), "{err}");
    }
    let plaintext = ok(
        &mut h,
        json!({"op": "decrypt", "name": BOB, "peer": ALICE, "peerDevice": 1,
               "type": message["type"], "body": message["body"]}),
    );
    assert_eq!(unb64(&plaintext["plaintext"]), b"for bob");
}

#[test]
fn ping_reports_the_pinned_version() {
    let mut h = harness!();
    let pong = ok(&mut h, json!({"op": "ping"}));
    assert_eq!(pong["version"], "0.90.0");
}

#[test]
fn bundle_has_libsignal_key_encodings() {
    let mut h = harness!();
    let identity = create(&mut h, "bob", 4242, 3);
    assert_eq!(identity.len(), 33);
    assert_eq!(identity[0], 0x05);

    let bundle = ok(
        &mut h,
        json!({"op": "bundle", "name": "bob", "oneTimePreKey": true}),
    );
    assert_eq!(bundle["registrationId"], 4242);
    assert_eq!(bundle["deviceId"], 3);
    assert_eq!(unb64(&bundle["identityKey"]), identity);
    for key in ["preKey", "signedPreKey"] {
        let key = unb64(&bundle[key]);
        assert_eq!((key.len(), key[0]), (33, 0x05));
    }
    let kyber = unb64(&bundle["kyberPreKey"]);
    assert_eq!((kyber.len(), kyber[0]), (1 + 1568, 0x08));
    for signature in ["signedPreKeySignature", "kyberPreKeySignature"] {
        assert_eq!(unb64(&bundle[signature]).len(), 64);
    }

    // Ids increase per party; no one-time prekey unless asked.
    let next = ok(
        &mut h,
        json!({"op": "bundle", "name": "bob", "oneTimePreKey": false}),
    );
    assert!(next.get("preKeyId").is_none() && next.get("preKey").is_none());
    for id in ["signedPreKeyId", "kyberPreKeyId"] {
        assert!(
            next[id].as_u64() > bundle[id].as_u64(),
            "{id} did not increase"
        );
    }
}

fn conversation(one_time_pre_key: bool) {
    let mut h = harness!();
    create(&mut h, "alice", 1111, 1);
    create(&mut h, "bob", 2222, 1);
    let bundle = start_session(&mut h, "alice", "bob", one_time_pre_key);
    assert_eq!(bundle.get("preKeyId").is_some(), one_time_pre_key);

    // Until bob answers, everything alice sends is a PreKey message.
    for i in 0..3 {
        let text = format!("hello bob {i}");
        assert_eq!(send(&mut h, "alice", "bob", text.as_bytes()), PREKEY);
    }
    for i in 0..3 {
        let text = format!("hi alice {i}");
        assert_eq!(send(&mut h, "bob", "alice", text.as_bytes()), WHISPER);
    }
    for i in 0..4 {
        let from_alice = random(i * 100);
        assert_eq!(send(&mut h, "alice", "bob", &from_alice), WHISPER);
        assert_eq!(send(&mut h, "bob", "alice", b"ack"), WHISPER);
    }

    for (name, peer, remote_registration_id) in [("alice", "bob", 2222), ("bob", "alice", 1111)] {
        let info = ok(
            &mut h,
            json!({"op": "sessionInfo", "name": name, "peer": peer, "peerDevice": 1}),
        );
        assert_eq!(info["exists"], true);
        assert_eq!(info["version"], 4, "PQXDH sessions are version 4");
        assert_eq!(info["remoteRegistrationId"], remote_registration_id);
    }
    let none = ok(
        &mut h,
        json!({"op": "sessionInfo", "name": "alice", "peer": "carol", "peerDevice": 1}),
    );
    assert_eq!(none, json!({"exists": false}));
}

#[test]
fn conversation_with_one_time_prekey() {
    conversation(true);
}

#[test]
fn conversation_without_one_time_prekey() {
    conversation(false);
}

#[test]
fn replayed_and_tampered_messages_are_refused() {
    let mut h = harness!();
    create(&mut h, "alice", 1, 1);
    create(&mut h, "bob", 2, 1);
    start_session(&mut h, "alice", "bob", true);
    send(&mut h, "alice", "bob", b"first");
    send(&mut h, "bob", "alice", b"reply");

    let message = ok(
        &mut h,
        json!({"op": "encrypt", "name": "alice", "peer": "bob", "peerDevice": 1, "plaintext": b64(b"once")}),
    );
    let decrypt = json!({"op": "decrypt", "name": "bob", "peer": "alice", "peerDevice": 1,
                         "type": message["type"], "body": message["body"]});
    ok(&mut h, decrypt.clone());
    let replay = h.call(decrypt.clone()).unwrap_err();
    assert_eq!(replay.kind, "DuplicatedMessage", "{replay}");

    let message = ok(
        &mut h,
        json!({"op": "encrypt", "name": "alice", "peer": "bob", "peerDevice": 1, "plaintext": b64(b"twice")}),
    );
    let mut body = unb64(&message["body"]);
    *body.last_mut().unwrap() ^= 1; // inside the truncated MAC
    let tampered = h
        .call(
            json!({"op": "decrypt", "name": "bob", "peer": "alice", "peerDevice": 1,
                     "type": WHISPER, "body": b64(&body)}),
        )
        .unwrap_err();
    assert_eq!(tampered.kind, "Generic", "{tampered}");
}

#[test]
fn reinstalled_peer_is_untrusted_until_trusted() {
    let mut h = harness!();
    create(&mut h, "alice", 1, 1);
    create(&mut h, "bob", 2, 1);
    start_session(&mut h, "alice", "bob", true);
    send(&mut h, "alice", "bob", b"before");

    let new_identity = create(&mut h, "bob", 3, 1);
    let mut bundle = ok(
        &mut h,
        json!({"op": "bundle", "name": "bob", "oneTimePreKey": true}),
    );
    let request = bundle.as_object_mut().unwrap();
    request.extend([
        ("op".into(), "processBundle".into()),
        ("name".into(), "alice".into()),
        ("peer".into(), "bob".into()),
        ("peerDevice".into(), 1.into()),
    ]);
    let refused = h.call(bundle.clone()).unwrap_err();
    assert_eq!(refused.kind, "UntrustedIdentity", "{refused}");

    let trusted = ok(
        &mut h,
        json!({"op": "trustIdentity", "name": "alice", "peer": "bob", "peerDevice": 1,
               "identityKey": b64(&new_identity)}),
    );
    assert_eq!(trusted["replaced"], true);
    ok(&mut h, bundle);
    assert_eq!(send(&mut h, "alice", "bob", b"after"), PREKEY);
}

#[test]
fn sender_key_group_message() {
    let mut h = harness!();
    for (name, registration_id) in [("alice", 1), ("bob", 2), ("carol", 3)] {
        create(&mut h, name, registration_id, 1);
    }
    let distribution_id = "d1b1f7a0-8f8e-4a43-9a1a-6a7b1c2d3e4f";
    let skdm = ok(
        &mut h,
        json!({"op": "skdmCreate", "name": "alice", "distributionId": distribution_id}),
    );
    for member in ["bob", "carol"] {
        ok(
            &mut h,
            json!({"op": "skdmProcess", "name": member, "sender": "alice", "senderDevice": 1,
                   "skdm": skdm["skdm"]}),
        );
    }
    for i in 0..3 {
        let text = format!("to the group {i}");
        let message = ok(
            &mut h,
            json!({"op": "groupEncrypt", "name": "alice", "distributionId": distribution_id,
                   "plaintext": b64(text.as_bytes())}),
        );
        for member in ["bob", "carol"] {
            let plaintext = ok(
                &mut h,
                json!({"op": "groupDecrypt", "name": member, "sender": "alice",
                       "senderDevice": 1, "body": message["body"]}),
            );
            assert_eq!(unb64(&plaintext["plaintext"]), text.as_bytes());
        }
    }
}

#[test]
fn fingerprint_is_60_digits_and_symmetric() {
    let mut h = harness!();
    let alice = create(&mut h, "alice", 1, 1);
    let bob = create(&mut h, "bob", 2, 1);
    let (alice_id, bob_id) = (random(16), random(16));
    let mut fingerprint =
        |local_id: &[u8], local_key: &[u8], remote_id: &[u8], remote_key: &[u8]| {
            ok(
                &mut h,
                json!({"op": "fingerprint", "version": 2, "iterations": 5200,
                   "localId": b64(local_id), "localKey": b64(local_key),
                   "remoteId": b64(remote_id), "remoteKey": b64(remote_key)}),
            )
        };
    let ours = fingerprint(&alice_id, &alice, &bob_id, &bob);
    let theirs = fingerprint(&bob_id, &bob, &alice_id, &alice);

    let displayable = ours["displayable"].as_str().unwrap();
    assert_eq!(displayable.len(), 60);
    assert!(displayable.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(ours["displayable"], theirs["displayable"]);
    assert!(!unb64(&ours["scannable"]).is_empty());
    assert_ne!(ours["scannable"], theirs["scannable"]);
}

#[test]
fn attachment_round_trip_and_tampering() {
    let mut h = harness!();
    let key = random(64);
    for len in [0, 1, 15, 16, 17, 1000] {
        let plaintext = random(len);
        let iv = random(16);
        let sealed = ok(
            &mut h,
            json!({"op": "attachmentEncrypt", "key": b64(&key), "iv": b64(&iv), "plaintext": b64(&plaintext)}),
        );
        let ciphertext = unb64(&sealed["ciphertext"]);
        assert_eq!(ciphertext.len(), 16 + (len / 16 + 1) * 16 + 32);
        assert_eq!(&ciphertext[..16], iv.as_slice());
        assert_eq!(unb64(&sealed["digest"]).len(), 32);

        let opened = ok(
            &mut h,
            json!({"op": "attachmentDecrypt", "key": b64(&key),
                   "ciphertext": sealed["ciphertext"], "digest": sealed["digest"]}),
        );
        assert_eq!(unb64(&opened["plaintext"]), plaintext);

        // Any flipped bit (iv, body or MAC) fails the MAC.
        for at in [0, 16, ciphertext.len() - 1] {
            let mut tampered = ciphertext.clone();
            tampered[at] ^= 0x80;
            let err = h
                .call(json!({"op": "attachmentDecrypt", "key": b64(&key),
                             "ciphertext": b64(&tampered), "digest": sealed["digest"]}))
                .unwrap_err();
            assert_eq!(err.kind, "BadMac", "{err}");
        }
        let err = h
            .call(json!({"op": "attachmentDecrypt", "key": b64(&key),
                         "ciphertext": sealed["ciphertext"], "digest": b64([0; 32])}))
            .unwrap_err();
        assert_eq!(err.kind, "BadDigest", "{err}");
    }
}

#[test]
fn sign_and_verify() {
    let mut h = harness!();
    let alice = create(&mut h, "alice", 1, 1);
    let bob = create(&mut h, "bob", 2, 1);
    let message = random(100);
    let signed = ok(
        &mut h,
        json!({"op": "sign", "name": "alice", "message": b64(&message)}),
    );
    assert_eq!(unb64(&signed["signature"]).len(), 64);

    let mut verify = |key: &[u8], message: &[u8]| {
        ok(
            &mut h,
            json!({"op": "verify", "publicKey": b64(key), "message": b64(message),
                   "signature": signed["signature"]}),
        )["valid"]
            .as_bool()
            .unwrap()
    };
    assert!(verify(&alice, &message));
    assert!(!verify(&bob, &message));
    assert!(!verify(&alice, b"another message"));
}

#[test]
fn bad_requests_are_reported() {
    let mut h = harness!();
    let unknown = h.call(json!({"op": "nope"})).unwrap_err();
    assert_eq!(unknown.kind, "BadRequest");
    let nobody = h
        .call(json!({"op": "sign", "name": "nobody", "message": ""}))
        .unwrap_err();
    assert_eq!(nobody.kind, "UnknownParty");
    create(&mut h, "alice", 1, 1);
    let not_base64 = h
        .call(json!({"op": "sign", "name": "alice", "message": "not base64!"}))
        .unwrap_err();
    assert_eq!(not_base64.kind, "BadRequest");
    // The harness carries on after errors.
    ok(&mut h, json!({"op": "ping"}));
}
