//! Reads arbitrary bytes as a message between hub nodes: a typed error, or
//! a message that encodes to a payload reading back to the same message;
//! never a panic. Every kind but the ephemeral push (whose JSON body may be
//! spelt several ways) encodes back to the very bytes it was read from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_server::delivery::nats::wire::{BusMessage, MAX_ENVELOPE_BYTES, VERSION};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = BusMessage::decode(data) else {
        return;
    };
    assert_eq!(data[0], VERSION);
    assert!(data.len() <= 2 + MAX_ENVELOPE_BYTES);
    let encoded = message.encode().expect("a decoded message encodes");
    if !matches!(message, BusMessage::Ephemeral(_)) {
        assert_eq!(encoded, data);
    }
    let again = BusMessage::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, message);
});
