//! Safety numbers: libsignal's known answers, symmetry, mismatches, and
//! scanned garbage.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use passerelle_signal::fingerprint::{
    DISPLAY_DIGITS, Fingerprint, ITERATIONS, MAX_ITERATIONS, VERSION, group_digits,
};
use passerelle_signal::{Error, IdentityKey, IdentityKeyPair};
use proptest::prelude::*;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

// Known answers from libsignal v0.90.0 (rust/protocol/src/fingerprint.rs,
// which takes them from the Java implementation's testVectorsVersion1/2).
const ALICE_IDENTITY: &str = "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868";
const BOB_IDENTITY: &str = "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b";
const ALICE_STABLE_ID: &[u8] = b"+14152222222";
const BOB_STABLE_ID: &[u8] = b"+14153333333";
const DISPLAYABLE: &str = "300354477692869396892869876765458257569162576843440918079131";
const ALICE_SCANNABLE_V1: &str = "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d";
const BOB_SCANNABLE_V1: &str = "080112220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df";
const ALICE_SCANNABLE_V2: &str = "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d";
const BOB_SCANNABLE_V2: &str = "080212220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df";

fn key(hex_key: &str) -> IdentityKey {
    IdentityKey::deserialize(&hex::decode(hex_key).unwrap()).unwrap()
}

fn alice_and_bob(version: u32) -> (Fingerprint, Fingerprint) {
    let (a, b) = (key(ALICE_IDENTITY), key(BOB_IDENTITY));
    let alice =
        Fingerprint::new(version, ITERATIONS, ALICE_STABLE_ID, &a, BOB_STABLE_ID, &b).unwrap();
    let bob =
        Fingerprint::new(version, ITERATIONS, BOB_STABLE_ID, &b, ALICE_STABLE_ID, &a).unwrap();
    (alice, bob)
}

fn random_key(rng: &mut ChaCha20Rng) -> IdentityKey {
    *IdentityKeyPair::generate(rng).identity_key()
}

#[test]
fn known_answers_v1() {
    let (alice, bob) = alice_and_bob(1);
    assert_eq!(alice.display.to_string(), DISPLAYABLE);
    assert_eq!(bob.display.to_string(), DISPLAYABLE);
    assert_eq!(alice.display_string(), DISPLAYABLE);
    assert_eq!(hex::encode(alice.scannable.serialize()), ALICE_SCANNABLE_V1);
    assert_eq!(hex::encode(bob.scannable.serialize()), BOB_SCANNABLE_V1);
}

#[test]
fn known_answers_v2() {
    let (alice, bob) = alice_and_bob(VERSION);
    assert_eq!(VERSION, 2);
    assert_eq!(alice.display.to_string(), DISPLAYABLE);
    assert_eq!(bob.display.to_string(), DISPLAYABLE);
    assert_eq!(alice.display.as_str(), DISPLAYABLE);
    assert_eq!(hex::encode(alice.scannable.serialize()), ALICE_SCANNABLE_V2);
    assert_eq!(hex::encode(bob.scannable.serialize()), BOB_SCANNABLE_V2);
    assert!(
        alice
            .scannable
            .compare(&hex::decode(BOB_SCANNABLE_V2).unwrap())
            .unwrap()
    );
    assert!(
        bob.scannable
            .compare(&hex::decode(ALICE_SCANNABLE_V2).unwrap())
            .unwrap()
    );
    assert_eq!(alice.scannable.version(), 2);
}

#[test]
fn grouped_display() {
    let (alice, _) = alice_and_bob(VERSION);
    let grouped = alice.display.grouped();
    assert_eq!(
        grouped,
        "30035 44776 92869 39689 28698 76765 45825 75691 62576 84344 09180 79131"
    );
    assert_eq!(group_digits(DISPLAYABLE), grouped);
    assert_eq!(grouped.replace(' ', ""), DISPLAYABLE);
}

#[test]
fn symmetric_for_random_parties() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for i in 0..8u32 {
        let (a, b) = (random_key(&mut rng), random_key(&mut rng));
        let a_id = format!("alice-{i}");
        let b_id = uuid_bytes(&mut rng);
        let alice = Fingerprint::new(VERSION, 1024, a_id.as_bytes(), &a, &b_id, &b).unwrap();
        let bob = Fingerprint::new(VERSION, 1024, &b_id, &b, a_id.as_bytes(), &a).unwrap();

        assert_eq!(alice.display, bob.display);
        assert_eq!(alice.display.to_string().len(), DISPLAY_DIGITS);
        assert!(
            alice
                .display
                .to_string()
                .bytes()
                .all(|c| c.is_ascii_digit())
        );
        assert!(alice.scannable.compare(&bob.scannable.serialize()).unwrap());
        assert!(bob.scannable.compare(&alice.scannable.serialize()).unwrap());
        // Our own QR code is not the peer's: the halves are swapped.
        assert!(
            !alice
                .scannable
                .compare(&alice.scannable.serialize())
                .unwrap()
        );
        assert!(!bob.scannable.compare(&bob.scannable.serialize()).unwrap());
    }
}

fn uuid_bytes(rng: &mut ChaCha20Rng) -> [u8; 16] {
    use rand::RngCore as _;
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}

#[test]
fn different_key_changes_everything() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (a, b, mallory) = (
        random_key(&mut rng),
        random_key(&mut rng),
        random_key(&mut rng),
    );
    // Alice sees Mallory's key in place of Bob's.
    let alice = Fingerprint::new(VERSION, 1024, b"alice", &a, b"bob", &mallory).unwrap();
    let bob = Fingerprint::new(VERSION, 1024, b"bob", &b, b"alice", &a).unwrap();
    assert_ne!(alice.display, bob.display);
    assert_ne!(alice.display.to_string(), bob.display.to_string());
    assert!(!alice.scannable.compare(&bob.scannable.serialize()).unwrap());
    assert!(!bob.scannable.compare(&alice.scannable.serialize()).unwrap());
}

#[test]
fn different_identifier_changes_everything() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (a, b) = (random_key(&mut rng), random_key(&mut rng));
    let alice = Fingerprint::new(VERSION, 1024, b"+141512222222", &a, b"bob", &b).unwrap();
    let bob = Fingerprint::new(VERSION, 1024, b"bob", &b, b"+14152222222", &a).unwrap();
    assert_ne!(alice.display, bob.display);
    assert!(!alice.scannable.compare(&bob.scannable.serialize()).unwrap());
    assert!(!bob.scannable.compare(&alice.scannable.serialize()).unwrap());
}

#[test]
fn different_iterations_differ() {
    let (a, b) = (key(ALICE_IDENTITY), key(BOB_IDENTITY));
    let fast = Fingerprint::new(VERSION, 1024, ALICE_STABLE_ID, &a, BOB_STABLE_ID, &b).unwrap();
    let (slow, bob) = alice_and_bob(VERSION);
    assert_ne!(fast.display, slow.display);
    assert!(!fast.scannable.compare(&bob.scannable.serialize()).unwrap());
}

#[test]
fn version_mismatch_is_an_error() {
    let (alice_v1, _) = alice_and_bob(1);
    let (alice_v2, bob_v2) = alice_and_bob(2);
    // The digits do not depend on the version; the QR code does.
    assert_eq!(alice_v1.display, alice_v2.display);
    assert_ne!(
        alice_v1.scannable.serialize(),
        alice_v2.scannable.serialize()
    );

    assert_eq!(
        alice_v1.scannable.compare(&bob_v2.scannable.serialize()),
        Err(Error::FingerprintVersionMismatch { theirs: 2, ours: 1 })
    );
    assert_eq!(
        bob_v2.scannable.compare(&alice_v1.scannable.serialize()),
        Err(Error::FingerprintVersionMismatch { theirs: 1, ours: 2 })
    );
    // No version at all reads as version 0.
    let mut no_version = bob_v2.scannable.serialize();
    no_version.drain(..2);
    assert_eq!(
        alice_v2.scannable.compare(&no_version),
        Err(Error::FingerprintVersionMismatch { theirs: 0, ours: 2 })
    );
}

#[test]
fn malformed_scans_are_typed_errors() {
    let (alice, bob) = alice_and_bob(VERSION);
    let good = bob.scannable.serialize();
    let invalid = |r: Result<bool, Error>| matches!(r, Err(Error::InvalidFingerprint(_)));

    // Not a protobuf: a truncated length-delimited field.
    assert!(invalid(alice.scannable.compare(&good[..good.len() - 1])));
    assert!(invalid(alice.scannable.compare(&[0x12, 0x05, 0x00])));
    // Version only: both fingerprints missing.
    assert!(invalid(alice.scannable.compare(&good[..2])));
    // Version and local fingerprint only: remote missing.
    assert!(invalid(alice.scannable.compare(&good[..2 + 36])));
    // A fingerprint message with no content.
    assert!(invalid(
        alice
            .scannable
            .compare(&[0x08, 0x02, 0x12, 0x00, 0x1a, 0x00])
    ));
    // Empty input: no version.
    assert_eq!(
        alice.scannable.compare(&[]),
        Err(Error::FingerprintVersionMismatch { theirs: 0, ours: 2 })
    );
    // Well-formed but with short contents: simply unequal.
    assert_eq!(
        alice
            .scannable
            .compare(&[0x08, 0x02, 0x12, 0x02, 0x0a, 0x00, 0x1a, 0x02, 0x0a, 0x00]),
        Ok(false)
    );
    // A single flipped bit in either fingerprint.
    for i in [6, 6 + 31, 6 + 32 + 4, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 1;
        assert_eq!(alice.scannable.compare(&bad), Ok(false), "flip at {i}");
    }
}

#[test]
fn iteration_count_is_checked() {
    let (a, b) = (key(ALICE_IDENTITY), key(BOB_IDENTITY));
    for bad in [0, 1, MAX_ITERATIONS + 1, u32::MAX] {
        assert!(matches!(
            Fingerprint::new(VERSION, bad, b"a", &a, b"b", &b),
            Err(Error::InvalidFingerprint(_))
        ));
    }
    assert!(Fingerprint::new(VERSION, 2, b"a", &a, b"b", &b).is_ok());
}

#[test]
fn empty_and_long_identifiers() {
    let (a, b) = (key(ALICE_IDENTITY), key(BOB_IDENTITY));
    let long = vec![0xa5; 1000];
    let alice = Fingerprint::new(VERSION, 100, b"", &a, &long, &b).unwrap();
    let bob = Fingerprint::new(VERSION, 100, &long, &b, b"", &a).unwrap();
    assert_eq!(alice.display, bob.display);
    assert!(alice.scannable.compare(&bob.scannable.serialize()).unwrap());
}

proptest! {
    #[test]
    fn garbage_scans_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (alice, _) = alice_and_bob_cached();
        match alice.scannable.compare(&bytes) {
            Ok(_) | Err(Error::InvalidFingerprint(_)) | Err(Error::FingerprintVersionMismatch { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn mutated_scans_never_panic_or_match(
        pos in 0usize..74,
        xor in 1u8..=255,
        cut in 0usize..=74,
    ) {
        let (alice, bob) = alice_and_bob_cached();
        let mut scanned = bob.scannable.serialize();
        scanned[pos] ^= xor;
        scanned.truncate(cut);
        // A changed or truncated QR code never passes for the real one.
        prop_assert_ne!(alice.scannable.compare(&scanned), Ok(true));
    }
}

fn alice_and_bob_cached() -> &'static (Fingerprint, Fingerprint) {
    static CELL: std::sync::OnceLock<(Fingerprint, Fingerprint)> = std::sync::OnceLock::new();
    CELL.get_or_init(|| alice_and_bob(VERSION))
}
