//! Parses arbitrary bytes as a SignalMessage: a typed error or a message
//! that serializes back to the same bytes, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_signal::SignalMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = SignalMessage::deserialize(data) {
        assert_eq!(message.serialized(), data);
        assert!(message.version() == 4);
    }
});
