//! The SQLite schema, as ordered migrations.
//!
//! `PRAGMA user_version` holds how many [`MIGRATIONS`] a database has had.
//! Opening runs the missing ones, each in its own transaction with the
//! version bump, so a crash mid-way leaves a database at some version, never
//! between two. A database whose version is above [`VERSION`] was written by
//! a newer build: it is refused ([`StoreError::SchemaTooNew`]), not guessed
//! at.
//!
//! To change the schema, append a migration; never edit one that shipped.
//!
//! Column conventions: ids (`AccountId`, envelope and verification
//! UUIDs) are 16-byte blobs; times are milliseconds since the Unix epoch;
//! device ids are integers 1 to 127. Key `kind`s are 0 for Curve25519 and
//! 1 for Kyber. Envelope `kind`s are 1 `prekey_message`, 2 `message`,
//! 3 `server_notice`; `notice` is the server notice as JSON.

use rusqlite::{Connection, TransactionBehavior};

use super::columns::Db as _;
use crate::{Result, StoreError};

/// The migrations, in order: the database at version `n` has had the first
/// `n`.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, keys, envelopes, short-lived state.
    "
    CREATE TABLE accounts (
        id           BLOB PRIMARY KEY NOT NULL,
        app          TEXT NOT NULL,
        handle       TEXT NOT NULL,
        identity_key BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        UNIQUE (app, handle)
    ) STRICT;

    CREATE TABLE devices (
        account_id      BLOB NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        device_id       INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 127),
        name            TEXT NOT NULL,
        registration_id INTEGER NOT NULL,
        password_hash   BLOB NOT NULL,
        created_at      INTEGER NOT NULL,
        last_seen_at    INTEGER NOT NULL,
        PRIMARY KEY (account_id, device_id)
    ) STRICT, WITHOUT ROWID;

    -- The current signed Curve25519 prekey (kind 0) and last-resort Kyber
    -- prekey (kind 1) of each device.
    CREATE TABLE signed_keys (
        account_id BLOB NOT NULL,
        device_id  INTEGER NOT NULL,
        kind       INTEGER NOT NULL CHECK (kind IN (0, 1)),
        key_id     INTEGER NOT NULL,
        public_key BLOB NOT NULL,
        signature  BLOB NOT NULL,
        PRIMARY KEY (account_id, device_id, kind),
        FOREIGN KEY (account_id, device_id)
            REFERENCES devices (account_id, device_id) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID;

    -- One-time prekeys: Curve25519 (kind 0) and Kyber (kind 1). A claim
    -- deletes the lowest key id of a kind.
    CREATE TABLE one_time_keys (
        account_id BLOB NOT NULL,
        device_id  INTEGER NOT NULL,
        kind       INTEGER NOT NULL CHECK (kind IN (0, 1)),
        key_id     INTEGER NOT NULL,
        public_key BLOB NOT NULL,
        signature  BLOB NOT NULL,
        PRIMARY KEY (account_id, device_id, kind, key_id),
        FOREIGN KEY (account_id, device_id)
            REFERENCES devices (account_id, device_id) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID;

    -- Envelopes waiting for their device, in `seq` order. The source
    -- columns are all set or all null (server notices have no source).
    CREATE TABLE envelopes (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               BLOB NOT NULL UNIQUE,
        account_id       BLOB NOT NULL,
        device_id        INTEGER NOT NULL,
        kind             INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
        source_address   TEXT,
        source_account   BLOB,
        source_device    INTEGER,
        client_timestamp INTEGER NOT NULL,
        server_timestamp INTEGER NOT NULL,
        content          BLOB,
        notice           TEXT,
        expires_at       INTEGER NOT NULL,
        CHECK ((source_address IS NULL) = (source_account IS NULL)
           AND (source_account IS NULL) = (source_device IS NULL)),
        FOREIGN KEY (account_id, device_id)
            REFERENCES devices (account_id, device_id) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX envelopes_by_device ON envelopes (account_id, device_id, seq);
    CREATE INDEX envelopes_by_expiry ON envelopes (expires_at);

    CREATE TABLE verifications (
        id         BLOB PRIMARY KEY NOT NULL,
        address    TEXT NOT NULL,
        code_hash  BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        attempts   INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE link_tokens (
        token_hash BLOB PRIMARY KEY NOT NULL,
        account_id BLOB NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    -- Provisioning mailboxes: open (message null) or filled.
    CREATE TABLE mailboxes (
        id         BLOB PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL,
        message    BLOB
    ) STRICT, WITHOUT ROWID;
    ",
    // 2: ids of removed devices are never given again: each account keeps
    // the id its next device gets. Existing accounts continue after their
    // highest device id (ids removed before this migration are unknown).
    "
    ALTER TABLE accounts ADD COLUMN next_device_id INTEGER NOT NULL DEFAULT 2;
    UPDATE accounts SET next_device_id = 1 + COALESCE(
        (SELECT MAX(device_id) FROM devices WHERE devices.account_id = accounts.id), 1);
    ",
];

/// The schema version this build writes: the number of [`MIGRATIONS`].
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// The schema version of a database.
pub fn version(conn: &Connection) -> Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .db()
}

/// Brings a database up to [`VERSION`], or refuses a newer one.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        // Read the version inside the write transaction, so that two
        // processes opening one new database cannot both migrate it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let found = version(&tx)?;
        if found > VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: VERSION,
            });
        }
        let Some(migration) = usize::try_from(found)
            .ok()
            .and_then(|done| MIGRATIONS.get(done))
        else {
            return Ok(());
        };
        tx.execute_batch(migration).db()?;
        tx.pragma_update(None, "user_version", found + 1).db()?;
        tx.commit().db()?;
        tracing::info!(version = found + 1, "store schema migrated");
    }
}
