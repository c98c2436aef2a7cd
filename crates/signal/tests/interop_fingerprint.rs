//! Safety numbers against the real libsignal (`@signalapp/libsignal-client`
//! 0.90.0, through the Node harness): same digits, same QR-code bytes, and
//! each side's scannable fingerprint accepted by the other's compare.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "interop/harness.rs"]
mod harness;

use harness::{Harness, b64, unb64};
use passerelle_signal::fingerprint::{Fingerprint, ITERATIONS, MAX_ITERATIONS, VERSION};
use passerelle_signal::{Error, IdentityKey, IdentityKeyPair};
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use serde_json::json;

/// libsignal's view of a conversation.
struct Theirs {
    displayable: String,
    scannable: Vec<u8>,
}

fn libsignal_fingerprint(
    h: &mut Harness,
    version: u32,
    iterations: u32,
    local: (&[u8], &IdentityKey),
    remote: (&[u8], &IdentityKey),
) -> Result<Theirs, harness::HarnessError> {
    let response = h.call(json!({
        "op": "fingerprint",
        "version": version,
        "iterations": iterations,
        "localId": b64(local.0),
        "localKey": b64(local.1.serialize()),
        "remoteId": b64(remote.0),
        "remoteKey": b64(remote.1.serialize()),
    }))?;
    Ok(Theirs {
        displayable: response["displayable"]
            .as_str()
            .expect("displayable is a string")
            .to_owned(),
        scannable: unb64(&response["scannable"]),
    })
}

/// libsignal's `ScannableFingerprint::compare` through the harness's
/// `fingerprintCompare {scannable, other} -> {matches}`.
fn libsignal_compare(h: &mut Harness, ours: &[u8], scanned: &[u8]) -> bool {
    let request = json!({
        "op": "fingerprintCompare",
        "scannable": b64(ours),
        "other": b64(scanned),
    });
    match h.call(request) {
        Ok(response) => response["matches"].as_bool().expect("matches is a bool"),
        Err(err) => panic!("libsignal compare failed: {err}"),
    }
}

fn random_key(rng: &mut ChaCha20Rng) -> IdentityKey {
    *IdentityKeyPair::generate(rng).identity_key()
}

/// A stable identifier of one of the shapes Passerelle and Signal use.
fn random_id(rng: &mut ChaCha20Rng, case: usize) -> Vec<u8> {
    let mut uuid = [0u8; 16];
    rng.fill_bytes(&mut uuid);
    match case % 5 {
        // An ACI's 16 bytes.
        0 => uuid.to_vec(),
        // A service-id string.
        1 => format!("PNI:{}", hex::encode(uuid)).into_bytes(),
        // An E.164 number, as in libsignal's own vectors.
        2 => format!("+1415{:07}", rng.gen_range(0..10_000_000u32)).into_bytes(),
        // Anything, including nothing.
        3 => Vec::new(),
        _ => {
            let mut id = vec![0u8; rng.gen_range(1..200)];
            rng.fill_bytes(&mut id);
            id
        }
    }
}

#[test]
fn fingerprints_match_libsignal() {
    let Some(mut h) = Harness::spawn() else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(0x5afe_7e1e);

    for case in 0..32 {
        let version = match case % 8 {
            3 => 1,
            7 => rng.r#gen(),
            _ => VERSION,
        };
        let iterations = match case % 6 {
            0 => 2,
            1 => rng.gen_range(2..=ITERATIONS),
            _ => ITERATIONS,
        };
        let (a_key, b_key) = (random_key(&mut rng), random_key(&mut rng));
        let a_id = random_id(&mut rng, case);
        let b_id = random_id(&mut rng, case + 1);
        let a = (a_id.as_slice(), &a_key);
        let b = (b_id.as_slice(), &b_key);
        let what = format!("case {case}: version {version}, {iterations} iterations");

        let alice = Fingerprint::new(version, iterations, a.0, a.1, b.0, b.1).expect(&what);
        let bob = Fingerprint::new(version, iterations, b.0, b.1, a.0, a.1).expect(&what);
        let their_alice = libsignal_fingerprint(&mut h, version, iterations, a, b).expect(&what);
        let their_bob = libsignal_fingerprint(&mut h, version, iterations, b, a).expect(&what);

        // The same 60 digits on all four screens.
        assert_eq!(alice.display.to_string(), their_alice.displayable, "{what}");
        assert_eq!(bob.display.to_string(), their_bob.displayable, "{what}");
        assert_eq!(alice.display, bob.display, "{what}");

        // The same QR-code bytes.
        assert_eq!(alice.scannable.serialize(), their_alice.scannable, "{what}");
        assert_eq!(bob.scannable.serialize(), their_bob.scannable, "{what}");

        // Our compare accepts libsignal's QR code of the peer, not its own.
        assert_eq!(
            alice.scannable.compare(&their_bob.scannable),
            Ok(true),
            "{what}"
        );
        assert_eq!(
            bob.scannable.compare(&their_alice.scannable),
            Ok(true),
            "{what}"
        );
        assert_eq!(
            alice.scannable.compare(&their_alice.scannable),
            Ok(false),
            "{what}"
        );

        // libsignal's compare accepts ours.
        let ours_a = alice.scannable.serialize();
        let ours_b = bob.scannable.serialize();
        assert!(
            libsignal_compare(&mut h, &their_alice.scannable, &ours_b),
            "{what}"
        );
        assert!(
            libsignal_compare(&mut h, &their_bob.scannable, &ours_a),
            "{what}"
        );
        assert!(
            !libsignal_compare(&mut h, &their_bob.scannable, &ours_b),
            "{what}"
        );
    }
}

#[test]
fn substituted_key_is_caught_both_ways() {
    let Some(mut h) = Harness::spawn() else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(0x0bad);
    for case in 0..4 {
        let (a_key, b_key, m_key) = (
            random_key(&mut rng),
            random_key(&mut rng),
            random_key(&mut rng),
        );
        let a_id = random_id(&mut rng, case);
        let b_id = random_id(&mut rng, case + 2);
        let (a, b) = ((a_id.as_slice(), &a_key), (b_id.as_slice(), &b_key));

        // Alice (ours) was given Mallory's key for Bob; Bob (libsignal) is honest.
        let alice = Fingerprint::new(VERSION, ITERATIONS, a.0, a.1, b.0, &m_key).expect("alice");
        let their_bob = libsignal_fingerprint(&mut h, VERSION, ITERATIONS, b, a).expect("bob");
        assert_ne!(alice.display.to_string(), their_bob.displayable);
        assert_eq!(alice.scannable.compare(&their_bob.scannable), Ok(false));
        assert!(!libsignal_compare(
            &mut h,
            &their_bob.scannable,
            &alice.scannable.serialize()
        ));

        // A different version is an error on our side, as on libsignal's.
        let their_v1 = libsignal_fingerprint(&mut h, 1, ITERATIONS, b, a).expect("bob v1");
        let ours = Fingerprint::new(VERSION, ITERATIONS, a.0, a.1, b.0, b.1).expect("alice v2");
        assert_eq!(
            ours.scannable.compare(&their_v1.scannable),
            Err(Error::FingerprintVersionMismatch {
                theirs: 1,
                ours: VERSION
            })
        );
    }
}

#[test]
fn iteration_limits_match_libsignal() {
    let Some(mut h) = Harness::spawn() else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (a_key, b_key) = (random_key(&mut rng), random_key(&mut rng));
    let (a, b) = ((&b"a"[..], &a_key), (&b"b"[..], &b_key));
    for iterations in [0, 1, 2, 3, MAX_ITERATIONS + 1, u32::MAX] {
        let ours = Fingerprint::new(VERSION, iterations, a.0, a.1, b.0, b.1);
        let theirs = libsignal_fingerprint(&mut h, VERSION, iterations, a, b);
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{iterations} iterations");
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            assert_eq!(ours.display.to_string(), theirs.displayable);
            assert_eq!(ours.scannable.serialize(), theirs.scannable);
        }
    }
}
