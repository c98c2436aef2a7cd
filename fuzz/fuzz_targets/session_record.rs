//! Decodes arbitrary bytes as a stored session record: a typed error or a
//! record that encodes and decodes again, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_signal::SessionRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SessionRecord::deserialize(data) {
        let again = SessionRecord::deserialize(&record.serialize()).expect("re-decodes");
        assert_eq!(again.serialize(), record.serialize());
    }
});
