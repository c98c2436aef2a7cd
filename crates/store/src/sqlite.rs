//! The embedded [`Store`]: one SQLite database, `passerelle.sqlite3`, in a
//! data directory.
//!
//! # Durability and group commit
//!
//! The hub acknowledges a message only once [`Store::enqueue`] returned, and
//! that return means "committed, and fsynced": the database runs in WAL mode
//! with `synchronous = FULL`, so each commit ends with an `fsync` of the
//! write-ahead log. An `fsync` costs from tens of microseconds (NVMe with a
//! write cache) to several milliseconds (a cloud volume, a spinning disk),
//! and it costs the same for one envelope or a thousand. A hub that
//! committed each request on its own would deliver at most a few hundred
//! messages a second on ordinary disks, however many cores it had.
//!
//! So writes are batched, the way databases batch their logs (group commit):
//!
//! - One dedicated thread, the writer, owns the only read-write connection.
//!   Every write method sends its work to it over a bounded channel and
//!   waits for the answer.
//! - The writer takes the first waiting request, then every other request
//!   already waiting (up to [`MAX_BATCH`] of them), and runs
//!   them all in **one** transaction (`BEGIN IMMEDIATE` ... `COMMIT`): one
//!   `fsync` for the whole batch. Callers are answered only after the
//!   `COMMIT` returned, so nobody is told "stored" before it is durable.
//! - Each request runs inside its own `SAVEPOINT`. A request that fails
//!   (an address taken, a device gone) is rolled back to its savepoint and
//!   answered with its error; the others in the batch are unaffected. If
//!   the `COMMIT` itself fails, every request of the batch gets the error
//!   and nothing of it was written.
//! - While a batch commits, new requests queue up and become the next
//!   batch: the busier the hub, the bigger the batches, and the cost of an
//!   `fsync` is shared by more envelopes. When the hub is idle a lone
//!   request is committed at once; there is no timer and no added latency.
//!
//! Because all writes go through one thread, a write is also a critical
//! section: claiming a one-time prekey (`DELETE ... RETURNING` of the lowest
//! key id) can never hand the same key to two callers, and "check, then
//! write" sequences need no locking of their own.
//!
//! Reads do not wait for the writer: they run on a small pool of read-only
//! connections ([`READERS`]), each behind a mutex, on tokio's blocking
//! threads. WAL lets them read the last committed state while the writer
//! writes. A read that follows a write returned to the same caller sees it.
//!
//! [`SqliteStore::writer_stats`] counts transactions, requests, and the
//! time spent in batches and in `COMMIT`, for metrics.
//!
//! Measured with `cargo bench -p passerelle-store --bench enqueue` (one
//! 256-byte envelope per call, on a shared 2-core VM whose `fsync` took
//! from 0.2 to 1.8 ms between runs): one task at a time got 570 to 4,500
//! envelopes a second, one `fsync` each; 256 concurrent tasks got 23,000 to
//! 54,000 a second, about 140 envelopes per transaction.
//!
//! A write whose caller stopped waiting (its future was dropped) may still
//! be committed: callers that retry should expect their first try to have
//! succeeded; [`Store::enqueue`] skips envelope ids already queued for that
//! reason.
//!
//! # Schema
//!
//! The schema is created by ordered migrations ([`schema`]), tracked in
//! `PRAGMA user_version`; a database written by a newer build refuses to
//! open ([`StoreError::SchemaTooNew`]). Envelopes are rows with one column
//! per field (the server notice alone is JSON), ordered by an
//! `AUTOINCREMENT` sequence and indexed by (account, device, sequence) and
//! by expiry. Keys and envelopes reference their device with
//! `ON DELETE CASCADE`, so removing a device removes them.
//!
//! Integers are SQLite's signed 64 bits: `expires_at` times, which SQL
//! compares, saturate at `i64::MAX` milliseconds (the year 292 million);
//! other `u64` values are stored bit for bit.

mod accounts;
mod columns;
mod envelopes;
mod ephemeral;
mod keys;
mod readers;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use passerelle_proto::{AccountId, Address, DeviceId, Envelope};
use rusqlite::Connection;
use rusqlite::config::DbConfig;
use uuid::Uuid;

use self::columns::Db as _;
use self::readers::Readers;
use self::writer::Writer;
pub use self::writer::WriterStats;
use crate::{
    Account, ClaimedKeys, Device, KeyCounts, KeyUpdate, MailboxFill, Millis, NewAccount, NewDevice,
    QueuedEnvelope, Result, Store, StoreError, VerificationOutcome, VerificationRecord,
};

/// The database's file name in the data directory.
pub const FILE_NAME: &str = "passerelle.sqlite3";
/// How many read-only connections serve reads.
pub const READERS: usize = 4;
/// The most write requests the writer commits in one transaction.
pub const MAX_BATCH: usize = 1024;
/// How many write requests may wait for the writer before callers wait to
/// hand theirs over (back-pressure).
pub const WRITE_QUEUE: usize = 8192;
/// How long a connection waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// A [`Store`] in an SQLite database. See the [module docs](self) for how
/// writes are batched.
///
/// Dropping it lets the writer finish the batch in hand, waits for it, and
/// closes the database.
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database in `dir` (creating the directory and the
    /// database if needed), brings its schema up to date, and starts the
    /// writer thread.
    ///
    /// This blocks on file I/O: call it at startup, or from
    /// `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);

        let mut conn = Connection::open(&path).db()?;
        configure(&conn)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{} cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL").db()?;
        conn.pragma_update(None, "foreign_keys", true).db()?;
        schema::migrate(&mut conn)?;

        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open(&path).db()?;
                configure(&reader)?;
                reader.pragma_update(None, "query_only", true).db()?;
                Ok(reader)
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(SqliteStore {
            writer: Writer::start(conn)?,
            readers: Arc::new(Readers::new(readers)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many transactions the writer committed, and how many requests
    /// they held: their ratio is the mean batch size.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.call(op).await
    }

    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(op))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// Settings of every connection, writer or reader.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).db()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Without the query planner stability guarantee, SQLite plans some
    // statements for the values bound to them (a `LIMIT ?`, for one) and
    // prepares them again whenever such a value is bound anew: on every
    // call of a cached statement. With it, a statement is planned once.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .db()?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, account: NewAccount) -> Result<()> {
        self.write(move |c| accounts::create_account(c, &account))
            .await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        self.read(move |c| accounts::account(c, id)).await
    }

    async fn account_by_address(&self, address: &Address) -> Result<Option<Account>> {
        let address = address.clone();
        self.read(move |c| accounts::account_by_address(c, &address))
            .await
    }

    async fn device(&self, account: AccountId, device: DeviceId) -> Result<Option<Device>> {
        self.read(move |c| accounts::device(c, account, device))
            .await
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<Device>> {
        self.read(move |c| accounts::devices(c, account)).await
    }

    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u8,
    ) -> Result<DeviceId> {
        self.write(move |c| accounts::add_device(c, account, &device, max_devices))
            .await
    }

    async fn remove_device(&self, account: AccountId, device: DeviceId) -> Result<bool> {
        self.write(move |c| accounts::remove_device(c, account, device))
            .await
    }

    async fn touch_device(&self, account: AccountId, device: DeviceId, now: Millis) -> Result<()> {
        self.write(move |c| accounts::touch_device(c, account, device, now))
            .await
    }

    async fn store_keys(
        &self,
        account: AccountId,
        device: DeviceId,
        keys: KeyUpdate,
    ) -> Result<()> {
        self.write(move |c| keys::store_keys(c, account, device, &keys))
            .await
    }

    async fn key_counts(&self, account: AccountId, device: DeviceId) -> Result<KeyCounts> {
        self.read(move |c| keys::key_counts(c, account, device))
            .await
    }

    async fn claim_keys(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeys>> {
        self.write(move |c| keys::claim_keys(c, account, device))
            .await
    }

    async fn enqueue(&self, envelopes: Vec<QueuedEnvelope>) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        self.write(move |c| envelopes::enqueue(c, &envelopes)).await
    }

    async fn queued(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Envelope>> {
        self.read(move |c| envelopes::queued(c, account, device, after, limit))
            .await
    }

    async fn queued_count(&self, account: AccountId, device: DeviceId) -> Result<u64> {
        self.read(move |c| envelopes::queued_count(c, account, device))
            .await
    }

    async fn acknowledge(&self, account: AccountId, device: DeviceId, ids: &[Uuid]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        self.write(move |c| envelopes::acknowledge(c, account, device, &ids))
            .await
    }

    async fn take_expired(&self, now: Millis, limit: u32) -> Result<Vec<QueuedEnvelope>> {
        self.write(move |c| envelopes::take_expired(c, now, limit))
            .await
    }

    async fn save_verification(&self, record: VerificationRecord) -> Result<()> {
        self.write(move |c| ephemeral::save_verification(c, &record))
            .await
    }

    async fn verification(&self, id: Uuid) -> Result<Option<VerificationRecord>> {
        self.read(move |c| ephemeral::verification(c, id)).await
    }

    async fn delete_verification(&self, id: Uuid) -> Result<()> {
        self.write(move |c| ephemeral::delete_verification(c, id))
            .await
    }

    async fn attempt_verification(
        &self,
        id: Uuid,
        code_hash: &[u8],
        now: Millis,
        max_attempts: u32,
    ) -> Result<VerificationOutcome> {
        let code_hash = code_hash.to_vec();
        self.write(move |c| ephemeral::attempt_verification(c, id, &code_hash, now, max_attempts))
            .await
    }

    async fn save_link_token(
        &self,
        token_hash: Vec<u8>,
        account: AccountId,
        expires_at: Millis,
    ) -> Result<()> {
        self.write(move |c| ephemeral::save_link_token(c, &token_hash, account, expires_at))
            .await
    }

    async fn take_link_token(&self, token_hash: &[u8], now: Millis) -> Result<Option<AccountId>> {
        let token_hash = token_hash.to_vec();
        self.write(move |c| ephemeral::take_link_token(c, &token_hash, now))
            .await
    }

    async fn open_mailbox(&self, id: Uuid, expires_at: Millis) -> Result<()> {
        self.write(move |c| ephemeral::open_mailbox(c, id, expires_at))
            .await
    }

    async fn fill_mailbox(&self, id: Uuid, message: Vec<u8>, now: Millis) -> Result<MailboxFill> {
        self.write(move |c| ephemeral::fill_mailbox(c, id, &message, now))
            .await
    }

    async fn take_mailbox(&self, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>> {
        self.write(move |c| ephemeral::take_mailbox(c, id, now))
            .await
    }

    async fn purge_expired(&self, now: Millis) -> Result<u64> {
        self.write(move |c| ephemeral::purge_expired(c, now)).await
    }

    async fn ping(&self) -> Result<()> {
        let select_one = |c: &Connection| c.query_row("SELECT 1", [], |_| Ok(())).db();
        self.read(select_one).await?;
        self.write(select_one).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> Result<i64> {
        conn.pragma_query_value(None, name, |row| row.get(0)).db()
    }

    /// The settings durability depends on are per connection: check the
    /// writer's and the readers' own.
    #[tokio::test]
    async fn connections_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (synchronous, foreign_keys, query_only) = store
            .write(|c| {
                Ok((
                    pragma(c, "synchronous")?,
                    pragma(c, "foreign_keys")?,
                    pragma(c, "query_only")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "synchronous = FULL");
        assert_eq!((foreign_keys, query_only), (1, 0));
        for _ in 0..READERS {
            let query_only = store.read(|c| pragma(c, "query_only")).await.unwrap();
            assert_eq!(query_only, 1);
        }
        let write_on_reader = store
            .read(|c| c.execute_batch("DELETE FROM accounts").db())
            .await;
        assert!(write_on_reader.is_err());
    }

    /// A cached statement is planned once, whatever values are bound to
    /// it: the queue is read page by page with `LIMIT ?`.
    #[tokio::test]
    async fn bound_values_do_not_prepare_statements_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let reprepared = store
            .read(|c| {
                let mut statement = c
                    .prepare_cached(
                        "SELECT seq FROM envelopes WHERE account_id = ?1 ORDER BY seq LIMIT ?2",
                    )
                    .db()?;
                for limit in 1..=3 {
                    let rows = statement
                        .query_map(rusqlite::params![[0u8; 16].as_slice(), limit], |r| {
                            r.get::<_, i64>(0)
                        })
                        .db()?;
                    assert_eq!(rows.count(), 0);
                }
                Ok(statement.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(reprepared, 0);
    }
}
