//! Generating this device's prekeys, storing their private halves, and
//! putting their public halves in wire form.

use passerelle_proto::Base64Bytes;
use passerelle_proto::api::accounts::DeviceKeys;
use passerelle_proto::api::keys::{KyberPreKey, PreKey, SignedPreKey, UploadKeys};
use passerelle_signal::store::{KyberPreKeyStore, PreKeyStore, SignedPreKeyStore};
use passerelle_signal::{KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};
use rand::{CryptoRng, RngCore};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{ClientError, Result};
use crate::store::protocol::SignalStore;
use crate::store::{LocalIdentity, allocate_ids, meta, meta_get, meta_set, to_i64};

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
            upload.signed_pre_key = Some(signed_wire(&record));
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

const DAY_MS: u64 = 24 * 3600 * 1000;
/// How old the current signed prekey (and, separately, the last-resort
/// Kyber prekey) may get before a new one replaces it, as Signal's apps do.
pub(crate) const ROTATION_INTERVAL_MS: u64 = 2 * DAY_MS;
/// How long a replaced signed or last-resort prekey is kept, so that PreKey
/// messages built from a bundle fetched before the rotation still decrypt.
pub(crate) const SUPERSEDED_GRACE_MS: u64 = 30 * DAY_MS;

/// The two kinds of keys that are rotated rather than used up.
#[derive(Clone, Copy, Debug)]
enum Rotated {
    Signed,
    LastResort,
}

impl Rotated {
    fn table_filter(self) -> (&'static str, &'static str) {
        match self {
            Self::Signed => ("signed_pre_keys", "1"),
            Self::LastResort => ("kyber_pre_keys", "last_resort = 1"),
        }
    }

    /// The meta key naming the current key while the hub may not have it.
    fn pending(self) -> &'static str {
        match self {
            Self::Signed => meta::PENDING_SIGNED_PRE_KEY_ID,
            Self::LastResort => meta::PENDING_LAST_RESORT_KYBER_PRE_KEY_ID,
        }
    }

    /// The current key: (id, created_at).
    fn current(self, conn: &Connection) -> Result<Option<(u32, u64)>> {
        let (table, filter) = self.table_filter();
        let row: Option<(u32, i64)> = conn
            .query_row(
                &format!(
                    "SELECT id, created_at FROM {table}
                     WHERE superseded_at IS NULL AND {filter}
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(id, at)| (id, u64::try_from(at).unwrap_or(0))))
    }

    /// Marks every current key but `keep` replaced at `now`.
    fn supersede(self, conn: &Connection, keep: u32, now: u64) -> Result<()> {
        let (table, filter) = self.table_filter();
        conn.execute(
            &format!(
                "UPDATE {table} SET superseded_at = ?2
                 WHERE superseded_at IS NULL AND {filter} AND id != ?1"
            ),
            params![keep, to_i64(now)],
        )?;
        Ok(())
    }

    /// Deletes the keys replaced more than the grace period ago.
    fn prune(self, conn: &Connection, now: u64) -> Result<usize> {
        let (table, filter) = self.table_filter();
        let cutoff = to_i64(now.saturating_sub(SUPERSEDED_GRACE_MS));
        if let Self::LastResort = self {
            conn.execute(
                "DELETE FROM kyber_last_resort_uses WHERE kyber_pre_key_id IN
                     (SELECT id FROM kyber_pre_keys WHERE last_resort = 1
                        AND superseded_at IS NOT NULL AND superseded_at <= ?1)",
                [cutoff],
            )?;
        }
        Ok(conn.execute(
            &format!(
                "DELETE FROM {table}
                 WHERE {filter} AND superseded_at IS NOT NULL AND superseded_at <= ?1"
            ),
            [cutoff],
        )?)
    }
}

/// Rotates the signed prekey and the last-resort Kyber prekey when they are
/// [`ROTATION_INTERVAL_MS`] old (or missing), and deletes replaced keys
/// after [`SUPERSEDED_GRACE_MS`]. Returns what to upload: new keys, and
/// current keys whose upload was not confirmed (see [`confirm_upload`]).
/// Writes through `conn`; the caller commits.
///
/// A replaced key is only deleted once its successor is confirmed on the
/// hub, so the hub never hands out a key this device no longer has.
pub(crate) fn rotate<R: RngCore + CryptoRng>(
    conn: &Connection,
    identity: &LocalIdentity,
    now: u64,
    rng: &mut R,
) -> Result<UploadKeys> {
    let mut upload = UploadKeys::default();
    for kind in [Rotated::Signed, Rotated::LastResort] {
        let current = kind.current(conn)?;
        let due = current.is_none_or(|(_, at)| now >= at.saturating_add(ROTATION_INTERVAL_MS));
        let pending = meta_get(conn, kind.pending())?.unwrap_or(0);
        let (id, new) = if due {
            let request = KeyRequest {
                signed: matches!(kind, Rotated::Signed),
                last_resort: matches!(kind, Rotated::LastResort),
                ..KeyRequest::default()
            };
            let fresh = generate(conn, identity, request, now, rng)?;
            upload.signed_pre_key = upload.signed_pre_key.or(fresh.signed_pre_key);
            upload.last_resort_kyber_pre_key = upload
                .last_resort_kyber_pre_key
                .or(fresh.last_resort_kyber_pre_key);
            let id = match kind {
                Rotated::Signed => upload.signed_pre_key.as_ref().map(|k| k.key_id),
                Rotated::LastResort => upload.last_resort_kyber_pre_key.as_ref().map(|k| k.key_id),
            }
            .ok_or_else(|| ClientError::Storage("rotated key missing".into()))?;
            kind.supersede(conn, id, now)?;
            tracing::info!(kind = ?kind, id, "rotated a prekey");
            (id, true)
        } else {
            (current.map_or(0, |(id, _)| id), false)
        };
        let unconfirmed = pending != 0 && pending == u64::from(id);
        if !new && unconfirmed {
            // Generated earlier, but the hub never confirmed it: again.
            let store = SignalStore::new(conn, identity.clone(), now);
            match kind {
                Rotated::Signed => {
                    if let Some(record) = store.signed_pre_key(id)? {
                        upload.signed_pre_key = Some(signed_wire(&record));
                    }
                }
                Rotated::LastResort => {
                    if let Some(record) = store.kyber_pre_key(id)? {
                        upload.last_resort_kyber_pre_key = Some(kyber_wire(&record));
                    }
                }
            }
        }
        if new || unconfirmed {
            meta_set(conn, kind.pending(), u64::from(id))?;
        } else {
            kind.prune(conn, now)?;
        }
    }
    Ok(upload)
}

/// Records that the hub accepted `upload`'s signed and last-resort keys.
pub(crate) fn confirm_upload(conn: &Connection, upload: &UploadKeys) -> Result<()> {
    let ids = [
        (
            Rotated::Signed,
            upload.signed_pre_key.as_ref().map(|k| k.key_id),
        ),
        (
            Rotated::LastResort,
            upload.last_resort_kyber_pre_key.as_ref().map(|k| k.key_id),
        ),
    ];
    for (kind, id) in ids {
        let Some(id) = id else { continue };
        if meta_get(conn, kind.pending())? == Some(u64::from(id)) {
            meta_set(conn, kind.pending(), 0)?;
        }
    }
    Ok(())
}

fn signed_wire(record: &SignedPreKeyRecord) -> SignedPreKey {
    SignedPreKey {
        key_id: record.id,
        public_key: Base64Bytes(record.key_pair.public.serialize().to_vec()),
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

    fn key_ids(db: &LocalStore, table: &str) -> Vec<(u32, Option<i64>)> {
        let mut stmt = db
            .conn
            .prepare(&format!(
                "SELECT id, superseded_at FROM {table} ORDER BY id"
            ))
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn signed_and_last_resort_keys_rotate_after_two_days_and_are_pruned_later() {
        let db = LocalStore::open_in_memory().unwrap();
        let me = identity();
        let t0 = 1_700_000_000_000;
        generate(&db.conn, &me, KeyRequest::new_device(), t0, &mut OsRng).unwrap();
        let nothing =
            |u: &UploadKeys| u.signed_pre_key.is_none() && u.last_resort_kyber_pre_key.is_none();

        // Not before two days.
        let up = rotate(&db.conn, &me, t0 + ROTATION_INTERVAL_MS - 1, &mut OsRng).unwrap();
        assert!(nothing(&up));
        assert_eq!(key_ids(&db, "signed_pre_keys"), vec![(1, None)]);

        // Two days on: both are replaced, signed by the identity key.
        let t1 = t0 + ROTATION_INTERVAL_MS;
        let up = rotate(&db.conn, &me, t1, &mut OsRng).unwrap();
        let signed = up.signed_pre_key.clone().unwrap();
        let last_resort = up.last_resort_kyber_pre_key.clone().unwrap();
        let identity = me.pair.identity_key().public_key();
        assert!(identity.verify(&[signed.public_key.as_slice()], signed.signature.as_slice()));
        assert!(identity.verify(
            &[last_resort.public_key.as_slice()],
            last_resort.signature.as_slice()
        ));
        assert_eq!(signed.key_id, 2);
        let t1_i64 = i64::try_from(t1).unwrap();
        assert_eq!(
            key_ids(&db, "signed_pre_keys"),
            vec![(1, Some(t1_i64)), (2, None)]
        );
        // One-time Kyber keys (2..=101) are not touched.
        let kyber = key_ids(&db, "kyber_pre_keys");
        assert_eq!(kyber.len(), 102);
        assert_eq!(kyber[0], (1, Some(t1_i64)));
        assert_eq!(kyber.last().unwrap(), &(last_resort.key_id, None));
        assert!(kyber[1..101].iter().all(|(_, s)| s.is_none()));

        // Until the hub confirms them, the same keys go up again.
        let again = rotate(&db.conn, &me, t1 + 1, &mut OsRng).unwrap();
        assert_eq!(again.signed_pre_key.unwrap().key_id, 2);
        assert_eq!(
            again.last_resort_kyber_pre_key.unwrap().key_id,
            last_resort.key_id
        );
        confirm_upload(&db.conn, &up).unwrap();
        assert!(nothing(&rotate(&db.conn, &me, t1 + 2, &mut OsRng).unwrap()));

        // The replaced keys stay for the grace period, then go.
        let t2 = t1 + SUPERSEDED_GRACE_MS - 1;
        let up = rotate(&db.conn, &me, t2, &mut OsRng).unwrap();
        confirm_upload(&db.conn, &up).unwrap();
        assert!(nothing(&rotate(&db.conn, &me, t2, &mut OsRng).unwrap()));
        assert_eq!(key_ids(&db, "signed_pre_keys").len(), 3);
        let t3 = t1 + SUPERSEDED_GRACE_MS;
        assert!(nothing(&rotate(&db.conn, &me, t3, &mut OsRng).unwrap()));
        let t2_i64 = i64::try_from(t2).unwrap();
        assert_eq!(
            key_ids(&db, "signed_pre_keys"),
            vec![(2, Some(t2_i64)), (3, None)]
        );
        let kyber = key_ids(&db, "kyber_pre_keys");
        assert_eq!(kyber.len(), 102);
        assert!(kyber.iter().all(|(id, _)| *id != 1));
    }

    #[test]
    fn an_unconfirmed_rotation_keeps_the_keys_it_replaced() {
        let db = LocalStore::open_in_memory().unwrap();
        let me = identity();
        generate(&db.conn, &me, KeyRequest::new_device(), 0, &mut OsRng).unwrap();
        rotate(&db.conn, &me, ROTATION_INTERVAL_MS, &mut OsRng).unwrap();
        // Never confirmed: the hub may still hand out key 1.
        let later = ROTATION_INTERVAL_MS + SUPERSEDED_GRACE_MS + 1;
        let up = rotate(&db.conn, &me, later, &mut OsRng).unwrap();
        // A new rotation was due too; nothing is deleted while unconfirmed.
        assert_eq!(up.signed_pre_key.as_ref().unwrap().key_id, 3);
        assert_eq!(key_ids(&db, "signed_pre_keys").len(), 3);
        confirm_upload(&db.conn, &up).unwrap();
        rotate(&db.conn, &me, later, &mut OsRng).unwrap();
        assert_eq!(
            key_ids(&db, "signed_pre_keys")
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

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
