//! Compares arbitrary bytes, as if scanned from a QR code, against a real
//! scannable fingerprint: any input gives `Ok` or a typed error, never a panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use passerelle_signal::fingerprint::{Fingerprint, VERSION};
use passerelle_signal::{Error, IdentityKey};

fn ours() -> &'static Fingerprint {
    static OURS: OnceLock<Fingerprint> = OnceLock::new();
    OURS.get_or_init(|| {
        let mut key = [0x42u8; 33];
        key[0] = 0x05;
        let local = IdentityKey::deserialize(&key).expect("valid key");
        key[1] = 0x24;
        let remote = IdentityKey::deserialize(&key).expect("valid key");
        // Few iterations: the hash is not what is fuzzed.
        Fingerprint::new(VERSION, 2, b"local", &local, b"remote", &remote).expect("fingerprint")
    })
}

fuzz_target!(|data: &[u8]| {
    match ours().scannable.compare(data) {
        Ok(_) | Err(Error::InvalidFingerprint(_) | Error::FingerprintVersionMismatch { .. }) => {}
        Err(other) => unreachable!("unexpected error {other:?}"),
    }
});
