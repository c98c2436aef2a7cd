//! Parses arbitrary bytes as a SenderKeyDistributionMessage: a typed error,
//! or a message that serializes back to the same bytes, parses again to an
//! equal message, and is rebuilt byte for byte from its fields; never a
//! panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_signal::SenderKeyDistributionMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(skdm) = SenderKeyDistributionMessage::deserialize(data) {
        assert_eq!(skdm.serialized(), data);
        let again = SenderKeyDistributionMessage::deserialize(skdm.serialized()).expect("reparses");
        assert_eq!(again, skdm);
        let rebuilt = SenderKeyDistributionMessage::new(
            skdm.distribution_id(),
            skdm.chain_id(),
            skdm.iteration(),
            skdm.chain_key(),
            *skdm.signing_key(),
        );
        assert_eq!(rebuilt, skdm);
    }
});
