//! The [`Store`] for hubs of several nodes: one PostgreSQL database that
//! every node shares.
//!
//! # Durability
//!
//! A method returns once its transaction committed. Every connection is
//! opened with `synchronous_commit = on` (a startup option, so neither the
//! server's default nor a role's setting can weaken it): a commit returns
//! once its WAL record is flushed to disk, and to synchronous standbys if
//! the server has any. PostgreSQL batches concurrent commits into one WAL
//! flush by itself, so the group commit the SQLite backend does by hand
//! comes for free here; what the hub must do is keep commits few, which
//! is why a fan-out to many devices is one statement (`UNNEST` of arrays,
//! see [`envelopes`]) and one commit.
//!
//! # Several nodes
//!
//! Nothing is kept in process memory: every counter, allocator and lock is
//! a row in the database, so any number of nodes (each with its own pool)
//! may run at once.
//!
//! - Device ids come from the account row's `next_device_id`, read and
//!   bumped under the row's lock (`FOR UPDATE`).
//! - A one-time prekey is claimed with `DELETE ... WHERE key_id = (SELECT
//!   ... FOR UPDATE SKIP LOCKED)`: concurrent claims lock different keys.
//! - Expired envelopes are taken with `SKIP LOCKED` too, so each is
//!   reported once when several nodes run their expiry tasks.
//! - An enqueue locks its recipient devices before drawing sequence
//!   numbers, so a device's envelopes commit in queue order ([`envelopes`]
//!   says why the reader needs that).
//! - Verifications are judged under the row's lock; link tokens and
//!   mailboxes are taken with `DELETE ... RETURNING`.
//!
//! Every method is one statement or one transaction: all or nothing.
//!
//! # Schema
//!
//! Ordered migrations ([`schema`]) tracked in a version table; a schema
//! written by a newer build is refused ([`StoreError::SchemaTooNew`]). The
//! store works in the connection's current schema (`search_path`), so one
//! database can hold several hubs, or the test suites' throwaway schemas
//! ([`testing`]). Integers are `bigint`: `expires_at` times saturate at
//! `i64::MAX` milliseconds, other `u64` values are stored bit for bit, as
//! in the SQLite backend.
//!
//! # Connections
//!
//! A pool of at most `pool_size` connections per node (the hub's
//! `database_pool_size`). Each concurrent request holds one connection for
//! the length of its statement or transaction; the nodes' pools together
//! must stay under the server's `max_connections`.

mod accounts;
mod columns;
mod envelopes;
mod ephemeral;
mod keys;
pub mod schema;
#[doc(hidden)]
pub mod testing;

use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use passerelle_proto::{AccountId, Address, DeviceId, Envelope};
use sqlx_core::query::query;
use sqlx_postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use self::columns::Db as _;
use crate::{
    Account, ClaimedKeys, Device, KeyCounts, KeyUpdate, MailboxFill, Millis, NewAccount, NewDevice,
    QueuedEnvelope, Result, Store, StoreError, VerificationOutcome, VerificationRecord,
};

/// The pool size of a hub whose configuration does not say.
pub const DEFAULT_POOL_SIZE: u32 = 16;
/// How long a request waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`Store`] in a PostgreSQL database. See the [module docs](self).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connect options hold the password: not shown.
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// Parses a `postgres://` (or `postgresql://`) URL, for checking a
/// configuration before connecting. The error never repeats the URL, which
/// may hold a password.
pub fn parse_url(url: &str) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::Backend(
            "a database URL starts with postgres:// or postgresql://".into(),
        ));
    }
    PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Backend("the database URL does not parse".into()))
}

impl PostgresStore {
    /// Connects to the database at `url` with a pool of at most
    /// `pool_size` connections, and brings its schema up to date.
    pub async fn connect(url: &str, pool_size: u32) -> Result<PostgresStore> {
        Self::connect_with(parse_url(url)?, pool_size).await
    }

    /// [`connect`](Self::connect), from options.
    pub async fn connect_with(options: PgConnectOptions, pool_size: u32) -> Result<PostgresStore> {
        // Appended last, so it wins over a URL's own `options`.
        let options = options.options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to PostgreSQL: {e}")))?;
        let mut conn = pool.acquire().await.db()?;
        schema::migrate(&mut conn).await?;
        drop(conn);
        Ok(PostgresStore { pool })
    }

    /// Closes every connection, waiting for those in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The connection pool (for checks in tests, and metrics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_account(&self, account: NewAccount) -> Result<()> {
        accounts::create_account(&self.pool, &account).await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        accounts::account(&self.pool, id).await
    }

    async fn account_by_address(&self, address: &Address) -> Result<Option<Account>> {
        accounts::account_by_address(&self.pool, address).await
    }

    async fn device(&self, account: AccountId, device: DeviceId) -> Result<Option<Device>> {
        accounts::device(&self.pool, account, device).await
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<Device>> {
        accounts::devices(&self.pool, account).await
    }

    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u8,
    ) -> Result<DeviceId> {
        accounts::add_device(&self.pool, account, &device, max_devices).await
    }

    async fn remove_device(&self, account: AccountId, device: DeviceId) -> Result<bool> {
        accounts::remove_device(&self.pool, account, device).await
    }

    async fn touch_device(&self, account: AccountId, device: DeviceId, now: Millis) -> Result<()> {
        accounts::touch_device(&self.pool, account, device, now).await
    }

    async fn store_keys(
        &self,
        account: AccountId,
        device: DeviceId,
        keys: KeyUpdate,
    ) -> Result<()> {
        keys::store_keys(&self.pool, account, device, &keys).await
    }

    async fn key_counts(&self, account: AccountId, device: DeviceId) -> Result<KeyCounts> {
        keys::key_counts(&self.pool, account, device).await
    }

    async fn claim_keys(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeys>> {
        keys::claim_keys(&self.pool, account, device).await
    }

    async fn enqueue(&self, envelopes: Vec<QueuedEnvelope>) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        envelopes::enqueue(&self.pool, &envelopes).await
    }

    async fn queued(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Envelope>> {
        envelopes::queued(&self.pool, account, device, after, limit).await
    }

    async fn queued_count(&self, account: AccountId, device: DeviceId) -> Result<u64> {
        envelopes::queued_count(&self.pool, account, device).await
    }

    async fn acknowledge(&self, account: AccountId, device: DeviceId, ids: &[Uuid]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        envelopes::acknowledge(&self.pool, account, device, ids).await
    }

    async fn take_expired(&self, now: Millis, limit: u32) -> Result<Vec<QueuedEnvelope>> {
        envelopes::take_expired(&self.pool, now, limit).await
    }

    async fn save_verification(&self, record: VerificationRecord) -> Result<()> {
        ephemeral::save_verification(&self.pool, &record).await
    }

    async fn verification(&self, id: Uuid) -> Result<Option<VerificationRecord>> {
        ephemeral::verification(&self.pool, id).await
    }

    async fn delete_verification(&self, id: Uuid) -> Result<()> {
        ephemeral::delete_verification(&self.pool, id).await
    }

    async fn attempt_verification(
        &self,
        id: Uuid,
        code_hash: &[u8],
        now: Millis,
        max_attempts: u32,
    ) -> Result<VerificationOutcome> {
        ephemeral::attempt_verification(&self.pool, id, code_hash, now, max_attempts).await
    }

    async fn save_link_token(
        &self,
        token_hash: Vec<u8>,
        account: AccountId,
        expires_at: Millis,
    ) -> Result<()> {
        ephemeral::save_link_token(&self.pool, &token_hash, account, expires_at).await
    }

    async fn take_link_token(&self, token_hash: &[u8], now: Millis) -> Result<Option<AccountId>> {
        ephemeral::take_link_token(&self.pool, token_hash, now).await
    }

    async fn open_mailbox(&self, id: Uuid, expires_at: Millis) -> Result<()> {
        ephemeral::open_mailbox(&self.pool, id, expires_at).await
    }

    async fn fill_mailbox(&self, id: Uuid, message: Vec<u8>, now: Millis) -> Result<MailboxFill> {
        ephemeral::fill_mailbox(&self.pool, id, &message, now).await
    }

    async fn take_mailbox(&self, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>> {
        ephemeral::take_mailbox(&self.pool, id, now).await
    }

    async fn purge_expired(&self, now: Millis) -> Result<u64> {
        ephemeral::purge_expired(&self.pool, now).await
    }

    async fn ping(&self) -> Result<()> {
        query("SELECT 1").execute(&self.pool).await.db()?;
        Ok(())
    }
}
