//! Parses arbitrary bytes as a SenderKeyMessage: a typed error, or a message
//! that serializes back to the same bytes and parses again to an equal
//! message; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_signal::SenderKeyMessage;
use passerelle_signal::curve::PublicKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = SenderKeyMessage::deserialize(data) {
        assert_eq!(message.serialized(), data);
        assert_eq!(data[0], 0x33);
        let again = SenderKeyMessage::deserialize(message.serialized()).expect("reparses");
        assert_eq!(again, message);
        // Checking the signature never panics either.
        let _ = message.verify_signature(&PublicKey::from_raw([9; 32]));
    }
});
