//! Accounts and devices. The device-id allocator is the account row's
//! `next_device_id`, read and bumped under the row's lock, so nodes adding
//! devices to one account at once never pick the same id.

use passerelle_proto::{AccountId, Address, DeviceId};
use sqlx_core::query::query;
use sqlx_core::query_as::query_as;
use sqlx_core::query_scalar::query_scalar;
use sqlx_postgres::{PgConnection, PgPool};
use uuid::Uuid;

use super::columns::{
    Db as _, account_id, bits, corrupt, device_id, device_small, from_bits, u32_from,
};
use super::keys;
use crate::memory::check_room_and_pick_id;
use crate::{Account, Device, Millis, NewAccount, NewDevice, Result, StoreError};

pub(super) async fn create_account(pool: &PgPool, account: &NewAccount) -> Result<()> {
    let mut tx = pool.begin().await.db()?;
    let address = &account.address;
    // The unique (app, handle) decides between concurrent registrations:
    // the loser inserts nothing.
    let inserted = query(
        "INSERT INTO accounts (id, app, handle, identity_key, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (app, handle) DO NOTHING",
    )
    .bind(account.id.0)
    .bind(address.app.as_str())
    .bind(address.handle.as_str())
    .bind(&account.identity_key)
    .bind(bits(account.device.now))
    .execute(&mut *tx)
    .await
    .db()?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AddressTaken(address.clone()));
    }
    insert_device(&mut tx, account.id, DeviceId::PRIMARY, &account.device).await?;
    tx.commit().await.db()
}

async fn insert_device(
    conn: &mut PgConnection,
    account: AccountId,
    id: DeviceId,
    device: &NewDevice,
) -> Result<()> {
    query(
        "INSERT INTO devices (account_id, device_id, name, registration_id, password_hash,
                              created_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(account.0)
    .bind(device_small(id))
    .bind(&device.name)
    .bind(i64::from(device.registration_id))
    .bind(&device.password_hash)
    .bind(bits(device.now))
    .execute(&mut *conn)
    .await
    .db()?;
    keys::write_keys(conn, account, id, &device.keys).await
}

/// An `accounts` row: id, app, handle, identity key, created at.
type AccountRow = (Uuid, String, String, Vec<u8>, i64);

fn read_account((id, app, handle, identity_key, created_at): AccountRow) -> Result<Account> {
    let address = Address::new(
        handle.parse().map_err(|_| corrupt("handle"))?,
        app.parse().map_err(|_| corrupt("app id"))?,
    );
    Ok(Account {
        id: account_id(id),
        address,
        identity_key,
        created_at: from_bits(created_at),
    })
}

pub(super) async fn account(pool: &PgPool, id: AccountId) -> Result<Option<Account>> {
    query_as::<_, AccountRow>(
        "SELECT id, app, handle, identity_key, created_at FROM accounts WHERE id = $1",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await
    .db()?
    .map(read_account)
    .transpose()
}

pub(super) async fn account_by_address(
    pool: &PgPool,
    address: &Address,
) -> Result<Option<Account>> {
    query_as::<_, AccountRow>(
        "SELECT id, app, handle, identity_key, created_at FROM accounts
         WHERE app = $1 AND handle = $2",
    )
    .bind(address.app.as_str())
    .bind(address.handle.as_str())
    .fetch_optional(pool)
    .await
    .db()?
    .map(read_account)
    .transpose()
}

/// A `devices` row, in [`DEVICE_COLUMNS`] order.
type DeviceRow = (Uuid, i16, String, i64, Vec<u8>, i64, i64);

const DEVICE_COLUMNS: &str =
    "account_id, device_id, name, registration_id, password_hash, created_at, last_seen_at";

fn read_device(row: DeviceRow) -> Result<Device> {
    let (account, id, name, registration_id, password_hash, created_at, last_seen_at) = row;
    Ok(Device {
        account_id: account_id(account),
        id: device_id(id)?,
        name,
        registration_id: u32_from(registration_id, "registration id")?,
        password_hash,
        created_at: from_bits(created_at),
        last_seen_at: from_bits(last_seen_at),
    })
}

pub(super) async fn device(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
) -> Result<Option<Device>> {
    let sql =
        format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = $1 AND device_id = $2");
    query_as::<_, DeviceRow>(&sql)
        .bind(account.0)
        .bind(device_small(device))
        .fetch_optional(pool)
        .await
        .db()?
        .map(read_device)
        .transpose()
}

pub(super) async fn devices(pool: &PgPool, account: AccountId) -> Result<Vec<Device>> {
    let sql =
        format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = $1 ORDER BY device_id");
    query_as::<_, DeviceRow>(&sql)
        .bind(account.0)
        .fetch_all(pool)
        .await
        .db()?
        .into_iter()
        .map(read_device)
        .collect()
}

pub(super) async fn add_device(
    pool: &PgPool,
    account: AccountId,
    device: &NewDevice,
    max_devices: u8,
) -> Result<DeviceId> {
    let mut tx = pool.begin().await.db()?;
    // The row lock makes the count, the pick and the bump one step for
    // every node.
    let next: Option<i16> =
        query_scalar("SELECT next_device_id FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account.0)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
    let Some(next) = next else {
        return Err(StoreError::NoSuchAccount);
    };
    let count: i64 = query_scalar("SELECT count(*) FROM devices WHERE account_id = $1")
        .bind(account.0)
        .fetch_one(&mut *tx)
        .await
        .db()?;
    let id = check_room_and_pick_id(
        usize::try_from(count).map_err(|_| corrupt("device count"))?,
        u32::try_from(next).unwrap_or(u32::MAX),
        max_devices,
    )?;
    query("UPDATE accounts SET next_device_id = $2 WHERE id = $1")
        .bind(account.0)
        .bind(device_small(id) + 1)
        .execute(&mut *tx)
        .await
        .db()?;
    insert_device(&mut tx, account, id, device).await?;
    tx.commit().await.db()?;
    Ok(id)
}

pub(super) async fn remove_device(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
) -> Result<bool> {
    // Keys and envelopes go with it: ON DELETE CASCADE.
    let deleted = query("DELETE FROM devices WHERE account_id = $1 AND device_id = $2")
        .bind(account.0)
        .bind(device_small(device))
        .execute(pool)
        .await
        .db()?;
    Ok(deleted.rows_affected() > 0)
}

pub(super) async fn touch_device(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
    now: Millis,
) -> Result<()> {
    let updated =
        query("UPDATE devices SET last_seen_at = $3 WHERE account_id = $1 AND device_id = $2")
            .bind(account.0)
            .bind(device_small(device))
            .bind(bits(now))
            .execute(pool)
            .await
            .db()?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NoSuchDevice);
    }
    Ok(())
}
