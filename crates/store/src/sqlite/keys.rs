//! Public prekeys: storing, counting and claiming them. Claims run on the
//! writer, so each one-time key is deleted by exactly one claim.

use passerelle_proto::{AccountId, DeviceId};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::accounts::device_exists;
use super::columns::{Db as _, account_blob, device_int, u32_from};
use crate::{ClaimedKeys, KeyCounts, KeyUpdate, Result, StoreError, StoredKey};

/// The `kind` of a Curve25519 key.
const CURVE: i64 = 0;
/// The `kind` of a Kyber key.
const KYBER: i64 = 1;

pub(super) fn store_keys(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    keys: &KeyUpdate,
) -> Result<()> {
    if !device_exists(conn, account, device)? {
        return Err(StoreError::NoSuchDevice);
    }
    let owner = (account_blob(&account), device_int(device));
    let signed = [
        (CURVE, &keys.signed_pre_key),
        (KYBER, &keys.last_resort_kyber_pre_key),
    ];
    let mut statement = conn
        .prepare_cached(
            "INSERT INTO signed_keys (account_id, device_id, kind, key_id, public_key, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (account_id, device_id, kind) DO UPDATE
             SET key_id = excluded.key_id, public_key = excluded.public_key,
                 signature = excluded.signature",
        )
        .db()?;
    for (kind, key) in signed {
        if let Some(key) = key {
            statement
                .execute(params![
                    owner.0,
                    owner.1,
                    kind,
                    key.key_id,
                    key.public_key,
                    key.signature
                ])
                .db()?;
        }
    }
    let mut statement = conn
        .prepare_cached(
            "INSERT INTO one_time_keys (account_id, device_id, kind, key_id, public_key, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (account_id, device_id, kind, key_id) DO UPDATE
             SET public_key = excluded.public_key, signature = excluded.signature",
        )
        .db()?;
    let one_time = keys
        .pre_keys
        .iter()
        .map(|key| (CURVE, key))
        .chain(keys.kyber_pre_keys.iter().map(|key| (KYBER, key)));
    for (kind, key) in one_time {
        statement
            .execute(params![
                owner.0,
                owner.1,
                kind,
                key.key_id,
                key.public_key,
                key.signature
            ])
            .db()?;
    }
    Ok(())
}

pub(super) fn key_counts(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<KeyCounts> {
    let mut statement = conn
        .prepare_cached(
            "SELECT kind, COUNT(*) FROM one_time_keys
             WHERE account_id = ?1 AND device_id = ?2 GROUP BY kind",
        )
        .db()?;
    let mut rows = statement
        .query(params![account_blob(&account), device_int(device)])
        .db()?;
    let mut counts = KeyCounts::default();
    while let Some(row) = rows.next().db()? {
        let count = u32_from(row.get(1).db()?, "key count")?;
        match row.get::<_, i64>(0).db()? {
            CURVE => counts.pre_keys = count,
            KYBER => counts.kyber_pre_keys = count,
            _ => {}
        }
    }
    Ok(counts)
}

fn read_key(row: &Row<'_>) -> Result<StoredKey> {
    Ok(StoredKey {
        key_id: u32_from(row.get(0).db()?, "key id")?,
        public_key: row.get(1).db()?,
        signature: row.get(2).db()?,
    })
}

fn signed_key(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    kind: i64,
) -> Result<Option<StoredKey>> {
    conn.prepare_cached(
        "SELECT key_id, public_key, signature FROM signed_keys
         WHERE account_id = ?1 AND device_id = ?2 AND kind = ?3",
    )
    .db()?
    .query_row(
        params![account_blob(&account), device_int(device), kind],
        |row| Ok(read_key(row)),
    )
    .optional()
    .db()?
    .transpose()
}

/// Deletes the one-time key of a kind with the lowest id, and returns it.
fn take_one_time_key(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    kind: i64,
) -> Result<Option<StoredKey>> {
    conn.prepare_cached(
        "DELETE FROM one_time_keys
         WHERE account_id = ?1 AND device_id = ?2 AND kind = ?3 AND key_id = (
             SELECT key_id FROM one_time_keys
             WHERE account_id = ?1 AND device_id = ?2 AND kind = ?3
             ORDER BY key_id LIMIT 1)
         RETURNING key_id, public_key, signature",
    )
    .db()?
    .query_row(
        params![account_blob(&account), device_int(device), kind],
        |row| Ok(read_key(row)),
    )
    .optional()
    .db()?
    .transpose()
}

pub(super) fn claim_keys(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<Option<ClaimedKeys>> {
    let registration_id: Option<i64> = conn
        .prepare_cached(
            "SELECT registration_id FROM devices WHERE account_id = ?1 AND device_id = ?2",
        )
        .db()?
        .query_row(params![account_blob(&account), device_int(device)], |row| {
            row.get(0)
        })
        .optional()
        .db()?;
    let Some(registration_id) = registration_id else {
        return Ok(None);
    };
    let Some(signed_pre_key) = signed_key(conn, account, device, CURVE)? else {
        return Ok(None);
    };
    // Check every way to fail before deleting anything.
    let kyber_pre_key = match take_one_time_key(conn, account, device, KYBER)? {
        Some(key) => key,
        None => match signed_key(conn, account, device, KYBER)? {
            Some(key) => key,
            None => return Ok(None),
        },
    };
    Ok(Some(ClaimedKeys {
        device_id: device,
        registration_id: u32_from(registration_id, "registration id")?,
        pre_key: take_one_time_key(conn, account, device, CURVE)?,
        signed_pre_key,
        kyber_pre_key,
    }))
}
