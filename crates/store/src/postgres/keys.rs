//! Public prekeys: storing, counting and claiming them.
//!
//! A claim deletes its one-time key with `FOR UPDATE SKIP LOCKED` on the
//! lowest key id: two claims running at once, on one node or on several,
//! lock different rows, so no key is handed out twice, and neither waits
//! for the other only to find its row gone (which, under read committed,
//! would make it report no key while others are left).

use std::collections::BTreeMap;

use passerelle_proto::{AccountId, DeviceId};
use sqlx_core::query::query;
use sqlx_core::query_as::query_as;
use sqlx_core::query_scalar::query_scalar;
use sqlx_postgres::{PgConnection, PgPool};

use super::columns::{Db as _, device_small, u32_from};
use crate::{ClaimedKeys, KeyCounts, KeyUpdate, Result, StoreError, StoredKey};

/// The `kind` of a Curve25519 key.
const CURVE: i16 = 0;
/// The `kind` of a Kyber key.
const KYBER: i16 = 1;

/// Keys as the columns of `UNNEST`: kinds, key ids, public keys,
/// signatures.
#[derive(Default)]
struct KeyColumns {
    kinds: Vec<i16>,
    key_ids: Vec<i64>,
    public_keys: Vec<Vec<u8>>,
    signatures: Vec<Vec<u8>>,
}

impl KeyColumns {
    fn push(&mut self, kind: i16, key: &StoredKey) {
        self.kinds.push(kind);
        self.key_ids.push(i64::from(key.key_id));
        self.public_keys.push(key.public_key.clone());
        self.signatures.push(key.signature.clone());
    }
}

/// Writes a device's keys; the device is known to exist.
pub(super) async fn write_keys(
    conn: &mut PgConnection,
    account: AccountId,
    device: DeviceId,
    keys: &KeyUpdate,
) -> Result<()> {
    let mut signed = KeyColumns::default();
    for (kind, key) in [
        (CURVE, &keys.signed_pre_key),
        (KYBER, &keys.last_resort_kyber_pre_key),
    ] {
        if let Some(key) = key {
            signed.push(kind, key);
        }
    }
    if !signed.kinds.is_empty() {
        query(
            "INSERT INTO signed_keys (account_id, device_id, kind, key_id, public_key, signature)
             SELECT $1, $2, * FROM UNNEST($3::smallint[], $4::bigint[], $5::bytea[], $6::bytea[])
             ON CONFLICT (account_id, device_id, kind) DO UPDATE
             SET key_id = excluded.key_id, public_key = excluded.public_key,
                 signature = excluded.signature",
        )
        .bind(account.0)
        .bind(device_small(device))
        .bind(&signed.kinds)
        .bind(&signed.key_ids)
        .bind(&signed.public_keys)
        .bind(&signed.signatures)
        .execute(&mut *conn)
        .await
        .db()?;
    }
    // One statement may not upsert a row twice: a key id given twice in
    // one update keeps its last key, as successive upserts would.
    let one_time: BTreeMap<(i16, u32), &StoredKey> = keys
        .pre_keys
        .iter()
        .map(|key| ((CURVE, key.key_id), key))
        .chain(
            keys.kyber_pre_keys
                .iter()
                .map(|key| ((KYBER, key.key_id), key)),
        )
        .collect();
    if one_time.is_empty() {
        return Ok(());
    }
    let mut columns = KeyColumns::default();
    for ((kind, _), key) in one_time {
        columns.push(kind, key);
    }
    query(
        "INSERT INTO one_time_keys (account_id, device_id, kind, key_id, public_key, signature)
         SELECT $1, $2, * FROM UNNEST($3::smallint[], $4::bigint[], $5::bytea[], $6::bytea[])
         ON CONFLICT (account_id, device_id, kind, key_id) DO UPDATE
         SET public_key = excluded.public_key, signature = excluded.signature",
    )
    .bind(account.0)
    .bind(device_small(device))
    .bind(&columns.kinds)
    .bind(&columns.key_ids)
    .bind(&columns.public_keys)
    .bind(&columns.signatures)
    .execute(&mut *conn)
    .await
    .db()?;
    Ok(())
}

pub(super) async fn store_keys(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
    keys: &KeyUpdate,
) -> Result<()> {
    let mut tx = pool.begin().await.db()?;
    // The share lock keeps the device from being removed before commit.
    let exists: Option<i32> = query_scalar(
        "SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 FOR KEY SHARE",
    )
    .bind(account.0)
    .bind(device_small(device))
    .fetch_optional(&mut *tx)
    .await
    .db()?;
    if exists.is_none() {
        return Err(StoreError::NoSuchDevice);
    }
    write_keys(&mut tx, account, device, keys).await?;
    tx.commit().await.db()
}

pub(super) async fn key_counts(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
) -> Result<KeyCounts> {
    let rows: Vec<(i16, i64)> = query_as(
        "SELECT kind, count(*) FROM one_time_keys
         WHERE account_id = $1 AND device_id = $2 GROUP BY kind",
    )
    .bind(account.0)
    .bind(device_small(device))
    .fetch_all(pool)
    .await
    .db()?;
    let mut counts = KeyCounts::default();
    for (kind, count) in rows {
        let count = u32_from(count, "key count")?;
        match kind {
            CURVE => counts.pre_keys = count,
            KYBER => counts.kyber_pre_keys = count,
            _ => {}
        }
    }
    Ok(counts)
}

/// A key's columns: key id, public key, signature.
type KeyRow = (i64, Vec<u8>, Vec<u8>);

fn read_key((key_id, public_key, signature): KeyRow) -> Result<StoredKey> {
    Ok(StoredKey {
        key_id: u32_from(key_id, "key id")?,
        public_key,
        signature,
    })
}

/// Deletes the unlocked one-time key of a kind with the lowest id, and
/// returns it.
async fn take_one_time_key(
    conn: &mut PgConnection,
    account: AccountId,
    device: DeviceId,
    kind: i16,
) -> Result<Option<StoredKey>> {
    query_as::<_, KeyRow>(
        "DELETE FROM one_time_keys
         WHERE account_id = $1 AND device_id = $2 AND kind = $3 AND key_id = (
             SELECT key_id FROM one_time_keys
             WHERE account_id = $1 AND device_id = $2 AND kind = $3
             ORDER BY key_id LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING key_id, public_key, signature",
    )
    .bind(account.0)
    .bind(device_small(device))
    .bind(kind)
    .fetch_optional(&mut *conn)
    .await
    .db()?
    .map(read_key)
    .transpose()
}

/// A device's registration id and signed keys, as one row.
type BundleRow = (
    i64,
    Option<i64>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

fn signed(
    (key_id, public_key, signature): (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>),
) -> Result<Option<StoredKey>> {
    match (key_id, public_key, signature) {
        (Some(key_id), Some(public_key), Some(signature)) => {
            read_key((key_id, public_key, signature)).map(Some)
        }
        _ => Ok(None),
    }
}

pub(super) async fn claim_keys(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
) -> Result<Option<ClaimedKeys>> {
    let mut tx = pool.begin().await.db()?;
    let bundle: Option<BundleRow> = query_as(
        "SELECT d.registration_id, c.key_id, c.public_key, c.signature,
                k.key_id, k.public_key, k.signature
         FROM devices d
         LEFT JOIN signed_keys c
             ON c.account_id = d.account_id AND c.device_id = d.device_id AND c.kind = 0
         LEFT JOIN signed_keys k
             ON k.account_id = d.account_id AND k.device_id = d.device_id AND k.kind = 1
         WHERE d.account_id = $1 AND d.device_id = $2",
    )
    .bind(account.0)
    .bind(device_small(device))
    .fetch_optional(&mut *tx)
    .await
    .db()?;
    let Some((registration_id, c_id, c_key, c_sig, k_id, k_key, k_sig)) = bundle else {
        return Ok(None);
    };
    let Some(signed_pre_key) = signed((c_id, c_key, c_sig))? else {
        return Ok(None);
    };
    // Dropping the transaction without a commit rolls back what it took.
    let kyber_pre_key = match take_one_time_key(&mut tx, account, device, KYBER).await? {
        Some(key) => key,
        None => match signed((k_id, k_key, k_sig))? {
            Some(key) => key,
            None => return Ok(None),
        },
    };
    let pre_key = take_one_time_key(&mut tx, account, device, CURVE).await?;
    tx.commit().await.db()?;
    Ok(Some(ClaimedKeys {
        device_id: device,
        registration_id: u32_from(registration_id, "registration id")?,
        pre_key,
        signed_pre_key,
        kyber_pre_key,
    }))
}
