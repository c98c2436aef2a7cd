//! Accounts and devices.

use passerelle_proto::{AccountId, Address, DeviceId};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::columns::{
    Db as _, account_blob, account_id, bits, collect, corrupt, device_id, device_int, from_bits,
    u32_from,
};
use super::keys;
use crate::memory::check_room_and_pick_id;
use crate::{Account, Device, Millis, NewAccount, NewDevice, Result, StoreError};

pub(super) fn create_account(conn: &Connection, account: &NewAccount) -> Result<()> {
    let address = &account.address;
    let taken = conn
        .prepare_cached("SELECT 1 FROM accounts WHERE app = ?1 AND handle = ?2")
        .db()?
        .exists(params![address.app.as_str(), address.handle.as_str()])
        .db()?;
    if taken {
        return Err(StoreError::AddressTaken(address.clone()));
    }
    conn.prepare_cached(
        "INSERT INTO accounts (id, app, handle, identity_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .db()?
    .execute(params![
        account_blob(&account.id),
        address.app.as_str(),
        address.handle.as_str(),
        account.identity_key,
        bits(account.device.now),
    ])
    .db()?;
    insert_device(conn, account.id, DeviceId::PRIMARY, &account.device)
}

fn insert_device(
    conn: &Connection,
    account: AccountId,
    id: DeviceId,
    device: &NewDevice,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO devices (account_id, device_id, name, registration_id, password_hash,
                              created_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )
    .db()?
    .execute(params![
        account_blob(&account),
        device_int(id),
        device.name,
        device.registration_id,
        device.password_hash,
        bits(device.now),
    ])
    .db()?;
    keys::store_keys(conn, account, id, &device.keys)
}

fn read_account(row: &Row<'_>) -> Result<Account> {
    let app: String = row.get(1).db()?;
    let handle: String = row.get(2).db()?;
    let address = Address::new(
        handle.parse().map_err(|_| corrupt("handle"))?,
        app.parse().map_err(|_| corrupt("app id"))?,
    );
    Ok(Account {
        id: account_id(row.get(0).db()?),
        address,
        identity_key: row.get(3).db()?,
        created_at: from_bits(row.get(4).db()?),
    })
}

pub(super) fn account(conn: &Connection, id: AccountId) -> Result<Option<Account>> {
    conn.prepare_cached(
        "SELECT id, app, handle, identity_key, created_at FROM accounts WHERE id = ?1",
    )
    .db()?
    .query_row([account_blob(&id)], |row| Ok(read_account(row)))
    .optional()
    .db()?
    .transpose()
}

pub(super) fn account_by_address(conn: &Connection, address: &Address) -> Result<Option<Account>> {
    conn.prepare_cached(
        "SELECT id, app, handle, identity_key, created_at FROM accounts
         WHERE app = ?1 AND handle = ?2",
    )
    .db()?
    .query_row(
        params![address.app.as_str(), address.handle.as_str()],
        |row| Ok(read_account(row)),
    )
    .optional()
    .db()?
    .transpose()
}

fn read_device(row: &Row<'_>) -> Result<Device> {
    Ok(Device {
        account_id: account_id(row.get(0).db()?),
        id: device_id(row.get(1).db()?)?,
        name: row.get(2).db()?,
        registration_id: u32_from(row.get(3).db()?, "registration id")?,
        password_hash: row.get(4).db()?,
        created_at: from_bits(row.get(5).db()?),
        last_seen_at: from_bits(row.get(6).db()?),
    })
}

pub(super) fn device(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<Option<Device>> {
    conn.prepare_cached(
        "SELECT account_id, device_id, name, registration_id, password_hash, created_at,
                last_seen_at
         FROM devices WHERE account_id = ?1 AND device_id = ?2",
    )
    .db()?
    .query_row(params![account_blob(&account), device_int(device)], |row| {
        Ok(read_device(row))
    })
    .optional()
    .db()?
    .transpose()
}

pub(super) fn devices(conn: &Connection, account: AccountId) -> Result<Vec<Device>> {
    let mut statement = conn
        .prepare_cached(
            "SELECT account_id, device_id, name, registration_id, password_hash, created_at,
                    last_seen_at
             FROM devices WHERE account_id = ?1 ORDER BY device_id",
        )
        .db()?;
    let rows = statement
        .query_map([account_blob(&account)], |row| Ok(read_device(row)))
        .db()?;
    collect(rows)
}

/// Whether a device exists.
pub(super) fn device_exists(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2")
        .db()?
        .exists(params![account_blob(&account), device_int(device)])
        .db()
}

pub(super) fn add_device(
    conn: &Connection,
    account: AccountId,
    device: &NewDevice,
    max_devices: u8,
) -> Result<DeviceId> {
    let next: Option<i64> = conn
        .prepare_cached("SELECT next_device_id FROM accounts WHERE id = ?1")
        .db()?
        .query_row([account_blob(&account)], |row| row.get(0))
        .optional()
        .db()?;
    let Some(next) = next else {
        return Err(StoreError::NoSuchAccount);
    };
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM devices WHERE account_id = ?1")
        .db()?
        .query_row([account_blob(&account)], |row| row.get(0))
        .db()?;
    let id = check_room_and_pick_id(
        usize::try_from(count).map_err(|_| corrupt("device count"))?,
        u32::try_from(next).unwrap_or(u32::MAX),
        max_devices,
    )?;
    conn.prepare_cached("UPDATE accounts SET next_device_id = ?2 WHERE id = ?1")
        .db()?
        .execute(params![account_blob(&account), i64::from(id.get()) + 1])
        .db()?;
    insert_device(conn, account, id, device)?;
    Ok(id)
}

pub(super) fn remove_device(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<bool> {
    // Keys and envelopes go with it: ON DELETE CASCADE.
    let deleted = conn
        .prepare_cached("DELETE FROM devices WHERE account_id = ?1 AND device_id = ?2")
        .db()?
        .execute(params![account_blob(&account), device_int(device)])
        .db()?;
    Ok(deleted > 0)
}

pub(super) fn touch_device(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    now: Millis,
) -> Result<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE devices SET last_seen_at = ?3 WHERE account_id = ?1 AND device_id = ?2",
        )
        .db()?
        .execute(params![
            account_blob(&account),
            device_int(device),
            bits(now)
        ])
        .db()?;
    if updated == 0 {
        return Err(StoreError::NoSuchDevice);
    }
    Ok(())
}
