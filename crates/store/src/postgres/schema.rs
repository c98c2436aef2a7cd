//! The PostgreSQL schema, as ordered migrations.
//!
//! The table `passerelle_schema` holds one row: how many [`MIGRATIONS`] the
//! schema has had. Opening runs the missing ones in one transaction with
//! the version bump (DDL is transactional in PostgreSQL), so a failure
//! leaves the schema as it was. Several nodes may start at once on an
//! empty database: the transaction first takes an advisory lock (per
//! schema), so one migrates and the others then find the work done. A
//! schema whose version is above [`VERSION`] was written by a newer build:
//! it is refused ([`StoreError::SchemaTooNew`]), not guessed at.
//!
//! A version table of our own rather than sqlx's migrator: the same model
//! as the SQLite backend (an ordered list and one integer), no checksums
//! that would refuse a database over a whitespace edit, and the refusal of
//! a newer schema says which version it found.
//!
//! To change the schema, append a migration; never edit one that shipped.
//!
//! Column conventions: ids are `uuid`; times are `bigint` milliseconds
//! since the Unix epoch; device ids are `smallint` 1 to 127; `u32` values
//! (key ids, registration ids) are `bigint`. Key `kind`s are 0 for
//! Curve25519 and 1 for Kyber. Envelope `kind`s are 1 `prekey_message`,
//! 2 `message`, 3 `server_notice`; `notice` is the server notice as JSON
//! text.

use sqlx_core::connection::Connection as _;
use sqlx_core::executor::Executor as _;
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_postgres::PgConnection;

use super::columns::Db as _;
use crate::{Result, StoreError};

/// The migrations, in order: a schema at version `n` has had the first `n`.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, keys, envelopes, short-lived state.
    "
    CREATE TABLE accounts (
        id             uuid PRIMARY KEY,
        app            text NOT NULL,
        handle         text NOT NULL,
        identity_key   bytea NOT NULL,
        created_at     bigint NOT NULL,
        -- The id the account's next device gets: ids are never given again.
        next_device_id smallint NOT NULL DEFAULT 2,
        UNIQUE (app, handle)
    );

    CREATE TABLE devices (
        account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        device_id       smallint NOT NULL CHECK (device_id BETWEEN 1 AND 127),
        name            text NOT NULL,
        registration_id bigint NOT NULL,
        password_hash   bytea NOT NULL,
        created_at      bigint NOT NULL,
        last_seen_at    bigint NOT NULL,
        PRIMARY KEY (account_id, device_id)
    );

    -- The current signed Curve25519 prekey (kind 0) and last-resort Kyber
    -- prekey (kind 1) of each device.
    CREATE TABLE signed_keys (
        account_id uuid NOT NULL,
        device_id  smallint NOT NULL,
        kind       smallint NOT NULL CHECK (kind IN (0, 1)),
        key_id     bigint NOT NULL,
        public_key bytea NOT NULL,
        signature  bytea NOT NULL,
        PRIMARY KEY (account_id, device_id, kind),
        FOREIGN KEY (account_id, device_id)
            REFERENCES devices (account_id, device_id) ON DELETE CASCADE
    );

    -- One-time prekeys: Curve25519 (kind 0) and Kyber (kind 1). A claim
    -- deletes the lowest key id of a kind.
    CREATE TABLE one_time_keys (
        account_id uuid NOT NULL,
        device_id  smallint NOT NULL,
        kind       smallint NOT NULL CHECK (kind IN (0, 1)),
        key_id     bigint NOT NULL,
        public_key bytea NOT NULL,
        signature  bytea NOT NULL,
        PRIMARY KEY (account_id, device_id, kind, key_id),
        FOREIGN KEY (account_id, device_id)
            REFERENCES devices (account_id, device_id) ON DELETE CASCADE
    );

    -- Envelopes waiting for their device, in `seq` order. The source
    -- columns are all set or all null (server notices have no source).
    CREATE TABLE envelopes (
        seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id               uuid NOT NULL UNIQUE,
        account_id       uuid NOT NULL,
        device_id        smallint NOT NULL,
        kind             smallint NOT NULL CHECK (kind IN (1, 2, 3)),
        source_address   text,
        source_account   uuid,
        source_device    smallint,
        client_timestamp bigint NOT NULL,
        server_timestamp bigint NOT NULL,
        content          bytea,
        notice           text,
        expires_at       bigint NOT NULL,
        CHECK ((source_address IS NULL) = (source_account IS NULL)
           AND (source_account IS NULL) = (source_device IS NULL)),
        FOREIGN KEY (account_id, device_id)
            REFERENCES devices (account_id, device_id) ON DELETE CASCADE
    );
    CREATE INDEX envelopes_by_device ON envelopes (account_id, device_id, seq);
    CREATE INDEX envelopes_by_expiry ON envelopes (expires_at, seq);

    CREATE TABLE verifications (
        id         uuid PRIMARY KEY,
        address    text NOT NULL,
        code_hash  bytea NOT NULL,
        expires_at bigint NOT NULL,
        attempts   bigint NOT NULL
    );
    CREATE INDEX verifications_by_expiry ON verifications (expires_at);

    CREATE TABLE link_tokens (
        token_hash bytea PRIMARY KEY,
        account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        expires_at bigint NOT NULL
    );
    CREATE INDEX link_tokens_by_expiry ON link_tokens (expires_at);

    -- Provisioning mailboxes: open (message null) or filled.
    CREATE TABLE mailboxes (
        id         uuid PRIMARY KEY,
        expires_at bigint NOT NULL,
        message    bytea
    );
    CREATE INDEX mailboxes_by_expiry ON mailboxes (expires_at);
    ",
];

/// The schema version this build writes: the number of [`MIGRATIONS`].
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// The first key of the advisory lock migrations take (the second is the
/// schema's name hashed): "passerelle" is 0x70617373.
const MIGRATION_LOCK: i32 = 0x7061_7373;

/// The schema version of the connection's current schema (0 when it has
/// none yet).
pub async fn version(conn: &mut PgConnection) -> Result<u32> {
    let exists: bool = query_scalar("SELECT to_regclass('passerelle_schema') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .db()?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = query_scalar("SELECT version FROM passerelle_schema")
        .fetch_optional(&mut *conn)
        .await
        .db()?;
    Ok(version.map_or(0, |v| u32::try_from(v).unwrap_or(0)))
}

/// Brings the current schema up to [`VERSION`], or refuses a newer one.
pub(super) async fn migrate(conn: &mut PgConnection) -> Result<()> {
    let mut tx = conn.begin().await.db()?;
    query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .db()?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS passerelle_schema (
             one     boolean PRIMARY KEY DEFAULT true CHECK (one),
             version integer NOT NULL
         );
         INSERT INTO passerelle_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await
    .db()?;
    let found = version(&mut tx).await?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    let pending = MIGRATIONS
        .get(usize::try_from(found).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    if pending.is_empty() {
        return Ok(());
    }
    for migration in pending {
        tx.execute(*migration).await.db()?;
    }
    query("UPDATE passerelle_schema SET version = $1")
        .bind(i32::try_from(VERSION).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .db()?;
    tx.commit().await.db()?;
    tracing::info!(from = found, to = VERSION, "store schema migrated");
    Ok(())
}
