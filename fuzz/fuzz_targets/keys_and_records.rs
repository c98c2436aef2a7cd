//! Decodes arbitrary bytes as every key and stored record type: a typed
//! error or a value that encodes back, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_signal::{
    IdentityKeyPair, KemPublicKey, KyberPreKeyRecord, PreKeyRecord, PublicKey, SignedPreKeyRecord,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = PublicKey::deserialize(data) {
        assert_eq!(&key.serialize()[..], data);
    }
    if let Ok(key) = KemPublicKey::deserialize(data) {
        assert_eq!(key.serialize(), data);
    }
    if let Ok(record) = PreKeyRecord::deserialize(data) {
        let again = PreKeyRecord::deserialize(&record.serialize()).expect("re-decodes");
        assert_eq!(again.key_pair.public, record.key_pair.public);
    }
    if let Ok(record) = SignedPreKeyRecord::deserialize(data) {
        let again = SignedPreKeyRecord::deserialize(&record.serialize()).expect("re-decodes");
        assert_eq!(again.signature, record.signature);
    }
    if let Ok(record) = KyberPreKeyRecord::deserialize(data) {
        let again = KyberPreKeyRecord::deserialize(&record.serialize()).expect("re-decodes");
        assert_eq!(again.key_pair.public, record.key_pair.public);
    }
    if let Ok(pair) = IdentityKeyPair::deserialize(data) {
        let again = IdentityKeyPair::deserialize(&pair.serialize()).expect("re-decodes");
        assert_eq!(again.identity_key(), pair.identity_key());
    }
});
