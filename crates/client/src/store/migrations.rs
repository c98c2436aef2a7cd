//! The versioned schema of the local database.
//!
//! The schema version is SQLite's `user_version`. Migration `n` (1-based)
//! takes the database from version `n - 1` to `n`; each runs in its own
//! transaction together with the version bump, so a crash leaves the
//! database at one version or the next, never between. A database of a
//! newer version than [`LATEST`] is refused rather than guessed at.
//!
//! Rules for adding a migration: append to [`MIGRATIONS`], never edit a
//! published one, and add a test that opens a database of the previous
//! version.

use rusqlite::Connection;

use crate::error::{ClientError, Result};

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    -- This device: one row, written at registration or linking. The account
    -- columns stay NULL until the hub accepted the device.
    CREATE TABLE local_device (
        id                INTEGER PRIMARY KEY CHECK (id = 1),
        server_url        TEXT NOT NULL,
        account_id        TEXT,
        address           TEXT,
        device_id         INTEGER,
        password          TEXT NOT NULL,
        identity_key_pair BLOB NOT NULL,   -- libsignal IdentityKeyPairStructure
        registration_id   INTEGER NOT NULL,
        created_at        INTEGER NOT NULL
    ) STRICT;

    -- Small counters and timestamps (next prekey ids, last refreshes).
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;

    -- Prekeys, in libsignal's record formats.
    CREATE TABLE pre_keys (
        id     INTEGER PRIMARY KEY,
        record BLOB NOT NULL
    ) STRICT;
    CREATE TABLE signed_pre_keys (
        id         INTEGER PRIMARY KEY,
        record     BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE kyber_pre_keys (
        id          INTEGER PRIMARY KEY,
        record      BLOB NOT NULL,
        last_resort INTEGER NOT NULL
    ) STRICT;
    -- Uses of last-resort Kyber prekeys, to refuse a replayed PreKey message.
    CREATE TABLE kyber_last_resort_uses (
        kyber_pre_key_id  INTEGER NOT NULL,
        signed_pre_key_id INTEGER NOT NULL,
        base_key          BLOB NOT NULL,
        PRIMARY KEY (kyber_pre_key_id, signed_pre_key_id, base_key)
    ) STRICT;

    -- Sessions, one libsignal RecordStructure per peer device.
    CREATE TABLE sessions (
        account_id TEXT NOT NULL,
        device_id  INTEGER NOT NULL,
        record     BLOB NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, device_id)
    ) STRICT;

    -- Peers' identity keys, one per account (all devices of an account share
    -- it). `first_seen_key` is the key trusted on first use; `verified` is
    -- cleared whenever the key changes.
    CREATE TABLE identities (
        account_id     TEXT PRIMARY KEY,
        identity_key   BLOB NOT NULL,
        first_seen_key BLOB NOT NULL,
        verified       INTEGER NOT NULL DEFAULT 0,
        first_seen_at  INTEGER NOT NULL,
        changed_at     INTEGER
    ) STRICT;

    -- Who is who: address <-> account id.
    CREATE TABLE contacts (
        account_id TEXT PRIMARY KEY,
        address    TEXT NOT NULL UNIQUE,
        app        TEXT NOT NULL,
        handle     TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;

    -- The other devices of this device's account, for sync copies.
    CREATE TABLE own_devices (
        device_id INTEGER PRIMARY KEY
    ) STRICT;

    -- Message history. A message is named by (author, sent_at), as Signal
    -- names it; `conversation` is the peer's account id. `body` is the
    -- proto `Body` JSON, NULL once deleted for everyone. `state` is one of
    -- sent, delivered, read, expired (outgoing) or received, read
    -- (incoming).
    CREATE TABLE messages (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation     TEXT NOT NULL,
        direction        TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        author           TEXT NOT NULL,
        author_device    INTEGER NOT NULL,
        sent_at          INTEGER NOT NULL,
        server_timestamp INTEGER,
        body             TEXT,
        state            TEXT NOT NULL,
        edited_at        INTEGER,
        UNIQUE (conversation, author, sent_at)
    ) STRICT;
    CREATE INDEX messages_by_conversation ON messages (conversation, sent_at);

    CREATE TABLE reactions (
        message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        reactor    TEXT NOT NULL,
        emoji      TEXT NOT NULL,
        PRIMARY KEY (message_id, reactor)
    ) STRICT;

    -- Envelopes already handled: delivery is at-least-once.
    CREATE TABLE processed_envelopes (
        id           BLOB PRIMARY KEY,
        processed_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX processed_envelopes_by_age ON processed_envelopes (processed_at);
    "#,
    // 2: rotation of signed and last-resort Kyber prekeys. A key replaced
    // by a newer one is kept, with the time it was replaced, for PreKey
    // messages built on it that are still on their way.
    r#"
    ALTER TABLE signed_pre_keys ADD COLUMN superseded_at INTEGER;
    ALTER TABLE kyber_pre_keys ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE kyber_pre_keys ADD COLUMN superseded_at INTEGER;
    -- The records hold their creation time, which SQL cannot read: the
    -- device's creation time is a close (never later) stand-in.
    UPDATE kyber_pre_keys
       SET created_at = coalesce((SELECT created_at FROM local_device WHERE id = 1), 0);
    -- Only the newest key of each kind is current.
    UPDATE signed_pre_keys SET superseded_at = created_at
     WHERE id NOT IN (SELECT id FROM signed_pre_keys ORDER BY created_at DESC, id DESC LIMIT 1);
    UPDATE kyber_pre_keys SET superseded_at = created_at
     WHERE last_resort = 1
       AND id NOT IN (SELECT id FROM kyber_pre_keys WHERE last_resort = 1
                      ORDER BY id DESC LIMIT 1);
    "#,
];

/// The schema version this SDK writes.
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;

/// The database's schema version.
pub(crate) fn version(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the database to [`LATEST`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, LATEST)
}

/// Brings the database to `target` (tests use it to build old versions).
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<()> {
    let found = version(conn)?;
    if found > LATEST {
        return Err(ClientError::SchemaTooNew {
            found,
            supported: LATEST,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let to = index as u32 + 1;
        if to <= found || to > target {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
        tracing::debug!(version = to, "local store migrated");
    }
    Ok(())
}
