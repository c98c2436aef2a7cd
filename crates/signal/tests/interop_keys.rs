//! XEdDSA signatures and key encodings against the real libsignal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "interop/harness.rs"]
mod harness;

use harness::{Harness, b64, unb64};
use passerelle_signal::{IdentityKey, IdentityKeyPair};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::json;

#[test]
fn signatures_verify_across_implementations() {
    let Some(mut h) = Harness::spawn() else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let node_key = h
        .call(json!({"op": "create", "name": "signer", "registrationId": 1, "deviceId": 1}))
        .unwrap();
    let node_identity = IdentityKey::deserialize(&unb64(&node_key["identityKey"])).unwrap();

    for round in 0..64 {
        let mut message = vec![0u8; rng.gen_range(0..200)];
        rng.fill(&mut message[..]);

        // libsignal signs, we verify.
        let signed = h
            .call(json!({"op": "sign", "name": "signer", "message": b64(&message)}))
            .unwrap();
        let signature = unb64(&signed["signature"]);
        assert!(
            node_identity.public_key().verify(&[&message], &signature),
            "round {round}"
        );
        let mut bad = signature.clone();
        bad[round % 64] ^= 0x10;
        assert!(!node_identity.public_key().verify(&[&message], &bad));

        // We sign, libsignal verifies.
        let ours = IdentityKeyPair::generate(&mut rng);
        let signature = ours.sign(&mut rng, &[&message]);
        let verdict = h
            .call(
                json!({"op": "verify", "publicKey": b64(ours.identity_key().serialize()),
                         "message": b64(&message), "signature": b64(signature)}),
            )
            .unwrap();
        assert_eq!(verdict["valid"], true, "round {round}");
        let mut bad = signature;
        bad[(round * 7) % 64] ^= 0x01;
        let verdict = h
            .call(
                json!({"op": "verify", "publicKey": b64(ours.identity_key().serialize()),
                         "message": b64(&message), "signature": b64(bad)}),
            )
            .unwrap();
        assert_eq!(verdict["valid"], false, "round {round}");
    }
}
