//! Generating this device's prekeys, storing their private halves, and
//! putting their public halves in wire form.

use passerelle_proto::Base64Bytes;
use passerelle_proto::api::accounts::DeviceKeys;
use passerelle_proto::api::keys::{KyberPreKey, PreKey, SignedPreKey, UploadKeys};
use passerelle_signal::store::{KyberPreKeyStore, PreKeyStore, SignedPreKeyStore};
use passerelle_signal::{KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};
use rand::{CryptoRng, RngCore};
use rusqlite::Connection;

use crate::error::Result;
use crate::store::protocol::SignalStore;
use crate::store::{LocalIdentity, allocate_ids, meta};

/// One-time prekeys of each kind generated at registration and linking, and
/// topped up to when the hub runs low.
pub const ONE_TIME_BATCH: u32 = 100;

/// What to generate.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyRequest {
    /// A new signed prekey.
    pub(crate) signed: bool,
    /// A new last-resort Kyber prekey.
    pub(crate) last_resort: bool,
    /// One-time Curve25519 prekeys.
    pub(crate) pre_keys: u32,
    /// One-time Kyber prekeys.
    pub(crate) kyber_pre_keys: u32,
}

impl KeyRequest {
    /// Everything a new device publishes.
    pub(crate) fn new_device() -> Self {
        Self {
            signed: true,
            last_resort: true,
            pre_keys: ONE_TIME_BATCH,
            kyber_pre_keys: ONE_TIME_BATCH,
        }
    }
}

/// Generates keys, stores their private halves through `conn` (the caller
/// commits), and returns them in wire form.
pub(crate) fn generate<R: RngCore + CryptoRng>(
    conn: &Connection,
    identity: &LocalIdentity,
    request: KeyRequest,
    now: u64,
    rng: &mut R,
) -> Result<UploadKeys> {
    let mut store = SignalStore::new(conn, identity.clone(), now);
    let pair = &identity.pair;
    let mut upload = UploadKeys::default();

    if request.signed {
        for id in allocate_ids(conn, meta::NEXT_SIGNED_PRE_KEY_ID, 1)? {
            let record = SignedPreKeyRecord::generate(id, now, pair, rng);
            store.save_signed_pre_key(&record)?;
            upload.signed_pre_key = Some(SignedPreKey {
                key_id: id,
                public_key: Base64Bytes(record.key_pair.public.serialize().to_vec()),
                signature: Base64Bytes(record.signature.to_vec()),
            });
        }
    }
    if request.last_resort {
        for id in allocate_ids(conn, meta::NEXT_KYBER_PRE_KEY_ID, 1)? {
            let record = KyberPreKeyRecord::generate(id, now, pair, rng);
            store.save_kyber_pre_key(&record, true)?;
            upload.last_resort_kyber_pre_key = Some(kyber_wire(&record));
        }
    }
    for id in allocate_ids(conn, meta::NEXT_PRE_KEY_ID, request.pre_keys)? {
        let record = PreKeyRecord::generate(id, rng);
        store.save_pre_key(&record)?;
        upload.pre_keys.push(PreKey {
            key_id: id,
            public_key: Base64Bytes(record.key_pair.public.serialize().to_vec()),
        });
    }
    for id in allocate_ids(conn, meta::NEXT_KYBER_PRE_KEY_ID, request.kyber_pre_keys)? {
        let record = KyberPreKeyRecord::generate(id, now, pair, rng);
        store.save_kyber_pre_key(&record, false)?;
        upload.kyber_pre_keys.push(kyber_wire(&record));
    }
    Ok(upload)
}

fn kyber_wire(record: &KyberPreKeyRecord) -> KyberPreKey {
    KyberPreKey {
        key_id: record.id,
        public_key: Base64Bytes(record.key_pair.public.serialize()),
        signature: Base64Bytes(record.signature.to_vec()),
    }
}

/// The keys of a new device, for registration or linking.
pub(crate) fn device_keys(upload: UploadKeys) -> Option<DeviceKeys> {
    Some(DeviceKeys {
        signed_pre_key: upload.signed_pre_key?,
        last_resort_kyber_pre_key: upload.last_resort_kyber_pre_key?,
        pre_keys: upload.pre_keys,
        kyber_pre_keys: upload.kyber_pre_keys,
    })
}

#[cfg(test)]
mod tests {
    use passerelle_signal::{IdentityKey, KemPublicKey, PublicKey};
    use rand::rngs::OsRng;

    use super::*;
    use crate::store::LocalStore;
    use crate::store::protocol::local_key_counts;
    use crate::store::tests::identity;

    #[test]
    fn generated_keys_are_stored_signed_and_numbered() {
        let db = LocalStore::open_in_memory().unwrap();
        let me = identity();
        let request = KeyRequest {
            pre_keys: 3,
            kyber_pre_keys: 2,
            ..KeyRequest::new_device()
        };
        let keys = device_keys(generate(&db.conn, &me, request, 5, &mut OsRng).unwrap()).unwrap();
        let identity: &IdentityKey = me.pair.identity_key();
        let signed = &keys.signed_pre_key;
        assert_eq!(signed.key_id, 1);
        PublicKey::deserialize(signed.public_key.as_slice()).unwrap();
        assert!(
            identity
                .public_key()
                .verify(&[signed.public_key.as_slice()], signed.signature.as_slice())
        );
        let last_resort = &keys.last_resort_kyber_pre_key;
        KemPublicKey::deserialize(last_resort.public_key.as_slice()).unwrap();
        assert!(identity.public_key().verify(
            &[last_resort.public_key.as_slice()],
            last_resort.signature.as_slice()
        ));
        assert_eq!(
            keys.pre_keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Kyber ids share one space: the last-resort key took 1.
        assert_eq!(
            keys.kyber_pre_keys
                .iter()
                .map(|k| k.key_id)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(local_key_counts(&db.conn).unwrap(), (3, 2));

        let more = generate(
            &db.conn,
            &me,
            KeyRequest {
                pre_keys: 2,
                ..KeyRequest::default()
            },
            6,
            &mut OsRng,
        )
        .unwrap();
        assert!(more.signed_pre_key.is_none());
        assert_eq!(
            more.pre_keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }
}
