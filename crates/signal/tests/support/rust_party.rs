//! A device on passerelle-signal, with an in-memory store, speaking the same
//! JSON shapes as the Node harness so tests can mix the two.

use std::time::SystemTime;

use passerelle_signal::{
    CiphertextMessage, IdentityKey, IdentityKeyPair, InMemoryStore, KemPublicKey,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyRecord, PreKeyStore, ProtocolAddress,
    PublicKey, SignedPreKeyRecord, SignedPreKeyStore, message_decrypt, message_encrypt,
    process_prekey_bundle,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};

use crate::harness::{b64, unb64};

/// A Rust device.
pub struct RustParty {
    pub name: String,
    pub device_id: u32,
    pub registration_id: u32,
    pub store: InMemoryStore,
    pub rng: ChaCha20Rng,
    next_id: u32,
}

impl RustParty {
    pub fn new(name: &str, registration_id: u32, device_id: u32, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentityKeyPair::generate(&mut rng);
        Self {
            name: name.into(),
            device_id,
            registration_id,
            store: InMemoryStore::new(identity, registration_id),
            rng,
            next_id: 1,
        }
    }

    pub fn identity_key(&self) -> IdentityKey {
        use passerelle_signal::IdentityKeyStore;
        *self.store.identity_key_pair().unwrap().identity_key()
    }

    /// Publishes fresh prekeys, in the harness's bundle shape.
    pub fn bundle(&mut self, one_time: bool) -> Value {
        use passerelle_signal::IdentityKeyStore;
        let identity = self.store.identity_key_pair().unwrap();
        let id = self.next_id;
        self.next_id += 1;
        let signed = SignedPreKeyRecord::generate(id, 0, &identity, &mut self.rng);
        let kyber = KyberPreKeyRecord::generate(id, 0, &identity, &mut self.rng);
        self.store.save_signed_pre_key(&signed).unwrap();
        self.store.save_kyber_pre_key(&kyber, false).unwrap();
        let mut bundle = json!({
            "registrationId": self.registration_id,
            "deviceId": self.device_id,
            "identityKey": b64(identity.identity_key().serialize()),
            "signedPreKeyId": id,
            "signedPreKey": b64(signed.key_pair.public.serialize()),
            "signedPreKeySignature": b64(signed.signature),
            "kyberPreKeyId": id,
            "kyberPreKey": b64(kyber.key_pair.public.serialize()),
            "kyberPreKeySignature": b64(kyber.signature),
        });
        if one_time {
            let pre_key = PreKeyRecord::generate(id, &mut self.rng);
            self.store.save_pre_key(&pre_key).unwrap();
            bundle["preKeyId"] = id.into();
            bundle["preKey"] = b64(pre_key.key_pair.public.serialize()).into();
        }
        bundle
    }

    /// This device's own address.
    pub fn address(&self) -> ProtocolAddress {
        ProtocolAddress::new(self.name.clone(), self.device_id)
    }

    /// Starts a session from a bundle in the harness's shape.
    pub fn process_bundle(&mut self, peer: &str, peer_device: u32, bundle: &Value) {
        let bundle = parse_bundle(bundle);
        process_prekey_bundle(
            &ProtocolAddress::new(peer, peer_device),
            &self.address(),
            &mut self.store,
            &bundle,
            SystemTime::now(),
            &mut self.rng,
        )
        .unwrap();
    }

    /// Encrypts; returns (type, body).
    pub fn encrypt(&mut self, peer: &str, peer_device: u32, plaintext: &[u8]) -> (u8, Vec<u8>) {
        let message = message_encrypt(
            plaintext,
            &ProtocolAddress::new(peer, peer_device),
            &self.address(),
            &mut self.store,
            SystemTime::now(),
            &mut self.rng,
        )
        .unwrap();
        (message.message_type() as u8, message.serialized().to_vec())
    }

    pub fn decrypt(
        &mut self,
        peer: &str,
        peer_device: u32,
        message_type: u8,
        body: &[u8],
    ) -> passerelle_signal::Result<Vec<u8>> {
        let message = CiphertextMessage::deserialize(message_type, body)?;
        message_decrypt(
            &message,
            &ProtocolAddress::new(peer, peer_device),
            &self.address(),
            &mut self.store,
            &mut self.rng,
        )
    }
}

/// A bundle from the harness's JSON shape.
pub fn parse_bundle(bundle: &Value) -> PreKeyBundle {
    PreKeyBundle {
        registration_id: bundle["registrationId"].as_u64().unwrap() as u32,
        device_id: bundle["deviceId"].as_u64().unwrap() as u32,
        pre_key: bundle.get("preKeyId").filter(|v| !v.is_null()).map(|id| {
            (
                id.as_u64().unwrap() as u32,
                PublicKey::deserialize(&unb64(&bundle["preKey"])).unwrap(),
            )
        }),
        signed_pre_key_id: bundle["signedPreKeyId"].as_u64().unwrap() as u32,
        signed_pre_key: PublicKey::deserialize(&unb64(&bundle["signedPreKey"])).unwrap(),
        signed_pre_key_signature: unb64(&bundle["signedPreKeySignature"]),
        kyber_pre_key_id: bundle["kyberPreKeyId"].as_u64().unwrap() as u32,
        kyber_pre_key: KemPublicKey::deserialize(&unb64(&bundle["kyberPreKey"])).unwrap(),
        kyber_pre_key_signature: unb64(&bundle["kyberPreKeySignature"]),
        identity_key: IdentityKey::deserialize(&unb64(&bundle["identityKey"])).unwrap(),
    }
}
