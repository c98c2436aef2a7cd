//! The device's local state: one SQLite database per device (WAL mode,
//! `synchronous = FULL`: a transaction that returned is on disk, so the
//! receive loop acknowledges an envelope only after what it changed is
//! durable).
//!
//! Everything is synchronous. The async client calls into it from
//! `spawn_blocking` while holding a `std::sync::Mutex`, never across an
//! `.await`.
//!
//! - [`migrations`]: the schema and its versions;
//! - [`protocol`]: passerelle-signal's store traits over a connection;
//! - [`history`]: contacts, messages, reactions and receipts;
//! - this module: the device row, counters, devices and processed envelopes.

pub(crate) mod history;
pub(crate) mod migrations;
pub(crate) mod protocol;

use std::fmt;
use std::path::Path;

use passerelle_proto::{AccountId, Address, DeviceId};
use passerelle_signal::IdentityKeyPair;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// This device's identity: its key pair and registration id.
#[derive(Clone)]
pub(crate) struct LocalIdentity {
    pub(crate) pair: IdentityKeyPair,
    pub(crate) registration_id: u32,
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("identity_key", self.pair.identity_key())
            .field("registration_id", &self.registration_id)
            .finish()
    }
}

/// Who this device is on the hub, and how it authenticates.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) server_url: String,
    pub(crate) account_id: AccountId,
    pub(crate) address: Address,
    pub(crate) device_id: DeviceId,
    pub(crate) password: Zeroizing<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server_url", &self.server_url)
            .field("account_id", &self.account_id)
            .field("address", &self.address)
            .field("device_id", &self.device_id)
            .field("password", &"..")
            .finish()
    }
}

/// The local database.
pub(crate) struct LocalStore {
    pub(crate) conn: Connection,
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.conn.path())
            .finish()
    }
}

/// Keys of the `meta` table.
pub(crate) mod meta {
    /// The next one-time prekey id.
    pub(crate) const NEXT_PRE_KEY_ID: &str = "next_pre_key_id";
    /// The next Kyber prekey id (one-time and last-resort share the space).
    pub(crate) const NEXT_KYBER_PRE_KEY_ID: &str = "next_kyber_pre_key_id";
    /// The next signed prekey id.
    pub(crate) const NEXT_SIGNED_PRE_KEY_ID: &str = "next_signed_pre_key_id";
    /// The signed prekey generated last, until the hub confirmed it (0:
    /// none pending).
    pub(crate) const PENDING_SIGNED_PRE_KEY_ID: &str = "pending_signed_pre_key_id";
    /// The last-resort Kyber prekey generated last, until the hub confirmed
    /// it (0: none pending).
    pub(crate) const PENDING_LAST_RESORT_KYBER_PRE_KEY_ID: &str =
        "pending_last_resort_kyber_pre_key_id";
    /// When the own-device list was last fetched from the hub (ms).
    pub(crate) const OWN_DEVICES_REFRESHED_AT: &str = "own_devices_refreshed_at";
}

/// How long processed envelope ids are kept: longer than any app's
/// retention, so that a redelivery is always recognized.
pub(crate) const PROCESSED_RETENTION_MS: u64 = 90 * 24 * 3600 * 1000;

/// Creates an empty file at `path`, mode 0600, unless there is one.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ClientError::Storage(format!(
            "creating {}: {e}",
            path.display()
        ))),
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl LocalStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    /// A new database file is created readable by its owner only (SQLite
    /// gives its `-wal` and `-shm` files the same permissions): it holds the
    /// device's keys, password and history.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        create_private(path)?;
        Self::setup(Connection::open(path)?)
    }

    /// A database in memory, for tests.
    #[cfg(test)]
    pub(crate) fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // In memory, journal_mode stays "memory"; the answer is not checked.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// Whether the database holds a device the hub accepted.
    pub(crate) fn is_registered(&self) -> Result<bool> {
        let registered: Option<bool> = self
            .conn
            .query_row(
                "SELECT account_id IS NOT NULL FROM local_device WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(registered.unwrap_or(false))
    }

    /// Starts a device: forgets whatever an unfinished registration or link
    /// left and stores a fresh identity and password. Refuses a registered
    /// database. (`Client::register` refuses an unfinished one before
    /// calling this; see [`ClientError::UnfinishedRegistration`].)
    pub(crate) fn init_device(
        &mut self,
        server_url: &str,
        password: &str,
        identity: &LocalIdentity,
        now: u64,
    ) -> Result<()> {
        if self.is_registered()? {
            return Err(ClientError::AlreadyRegistered);
        }
        let tx = self.conn.transaction()?;
        wipe(&tx)?;
        tx.execute(
            "INSERT INTO local_device (id, server_url, password, identity_key_pair,
                                       registration_id, created_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            params![
                server_url,
                password,
                identity.pair.serialize().as_slice(),
                identity.registration_id,
                to_i64(now)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether the database holds an identity whose registration or linking
    /// did not finish (the hub's answer was never recorded).
    pub(crate) fn is_unfinished(&self) -> Result<bool> {
        Ok(self.local_identity()?.is_some() && !self.is_registered()?)
    }

    /// Forgets an unfinished registration the hub refused, so that it can be
    /// tried again. Refuses a registered database.
    pub(crate) fn forget_unfinished(&mut self) -> Result<()> {
        if self.is_registered()? {
            return Err(ClientError::AlreadyRegistered);
        }
        let tx = self.conn.transaction()?;
        wipe(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Records the hub's answer to registration or linking.
    pub(crate) fn set_account(
        &mut self,
        account_id: AccountId,
        address: &Address,
        device_id: DeviceId,
    ) -> Result<()> {
        let changed = self.conn.execute(
            "UPDATE local_device SET account_id = ?1, address = ?2, device_id = ?3 WHERE id = 1",
            params![account_id.to_string(), address.to_string(), device_id.get()],
        )?;
        if changed != 1 {
            return Err(ClientError::NotRegistered);
        }
        Ok(())
    }

    /// This device's identity (present from the start of registration).
    pub(crate) fn local_identity(&self) -> Result<Option<LocalIdentity>> {
        local_identity(&self.conn)
    }

    /// The credentials of a registered device.
    pub(crate) fn credentials(&self) -> Result<Option<Credentials>> {
        let row = self
            .conn
            .query_row(
                "SELECT server_url, account_id, address, device_id, password
                 FROM local_device WHERE id = 1 AND account_id IS NOT NULL",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, u32>(3)?,
                        Zeroizing::new(r.get::<_, String>(4)?),
                    ))
                },
            )
            .optional()?;
        let Some((server_url, account_id, address, device_id, password)) = row else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            server_url,
            account_id: account_id.parse().map_err(ClientError::storage)?,
            address: address.parse().map_err(ClientError::storage)?,
            device_id: DeviceId::new(device_id).map_err(ClientError::storage)?,
            password,
        }))
    }

    /// A counter or timestamp.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<u64>> {
        meta_get(&self.conn, key)
    }

    /// Sets a counter or timestamp.
    pub(crate) fn set_meta(&self, key: &str, value: u64) -> Result<()> {
        meta_set(&self.conn, key, value)
    }

    /// The other devices of this account, as last known.
    pub(crate) fn own_devices(&self) -> Result<Vec<DeviceId>> {
        own_devices(&self.conn)
    }

    /// Replaces the list of the account's other devices.
    pub(crate) fn set_own_devices(&mut self, devices: &[DeviceId], now: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM own_devices", [])?;
        for d in devices {
            tx.execute(
                "INSERT OR IGNORE INTO own_devices (device_id) VALUES (?1)",
                [d.get()],
            )?;
        }
        meta_set(&tx, meta::OWN_DEVICES_REFRESHED_AT, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether an envelope was already processed.
    #[cfg(test)]
    pub(crate) fn is_processed(&self, id: Uuid) -> Result<bool> {
        is_processed(&self.conn, id)
    }

    /// Forgets processed envelope ids older than the retention.
    pub(crate) fn prune_processed(&self, now: u64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM processed_envelopes WHERE processed_at < ?1",
            [to_i64(now.saturating_sub(PROCESSED_RETENTION_MS))],
        )?)
    }
}

/// Deletes everything: the device, its keys, sessions and history.
fn wipe(conn: &Connection) -> Result<()> {
    for table in [
        "local_device",
        "meta",
        "pre_keys",
        "signed_pre_keys",
        "kyber_pre_keys",
        "kyber_last_resort_uses",
        "sessions",
        "identities",
        "contacts",
        "own_devices",
        "reactions",
        "messages",
        "processed_envelopes",
    ] {
        conn.execute(&format!("DELETE FROM {table}"), [])?;
    }
    Ok(())
}

pub(crate) fn local_identity(conn: &Connection) -> Result<Option<LocalIdentity>> {
    let row: Option<(Zeroizing<Vec<u8>>, u32)> = conn
        .query_row(
            "SELECT identity_key_pair, registration_id FROM local_device WHERE id = 1",
            [],
            |r| Ok((Zeroizing::new(r.get(0)?), r.get(1)?)),
        )
        .optional()?;
    row.map(|(bytes, registration_id)| {
        Ok(LocalIdentity {
            pair: IdentityKeyPair::deserialize(&bytes)?,
            registration_id,
        })
    })
    .transpose()
}

pub(crate) fn meta_get(conn: &Connection, key: &str) -> Result<Option<u64>> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
}

pub(crate) fn meta_set(conn: &Connection, key: &str, value: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, to_i64(value)],
    )?;
    Ok(())
}

/// Takes `count` consecutive ids from the counter `key`. Ids run from 1 to
/// 0xFFFFFF (libsignal's "medium" range) and wrap around.
pub(crate) fn allocate_ids(conn: &Connection, key: &str, count: u32) -> Result<Vec<u32>> {
    const MAX_ID: u64 = 0xFF_FFFF;
    let next = meta_get(conn, key)?.unwrap_or(1).clamp(1, MAX_ID);
    let ids: Vec<u32> = (0..u64::from(count))
        .map(|i| ((next - 1 + i) % MAX_ID + 1) as u32)
        .collect();
    meta_set(conn, key, (next - 1 + u64::from(count)) % MAX_ID + 1)?;
    Ok(ids)
}

pub(crate) fn own_devices(conn: &Connection) -> Result<Vec<DeviceId>> {
    let mut stmt = conn.prepare("SELECT device_id FROM own_devices ORDER BY device_id")?;
    let rows = stmt.query_map([], |r| r.get::<_, u32>(0))?;
    let mut out = Vec::new();
    for id in rows {
        if let Ok(id) = DeviceId::new(id?) {
            out.push(id);
        }
    }
    Ok(out)
}

pub(crate) fn add_own_device(conn: &Connection, device: DeviceId) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO own_devices (device_id) VALUES (?1)",
        [device.get()],
    )?;
    Ok(())
}

pub(crate) fn is_processed(conn: &Connection, id: Uuid) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM processed_envelopes WHERE id = ?1",
            [id.as_bytes().as_slice()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub(crate) fn mark_processed(conn: &Connection, id: Uuid, now: u64) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO processed_envelopes (id, processed_at) VALUES (?1, ?2)",
        params![id.as_bytes().as_slice(), to_i64(now)],
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::OsRng;

    pub(crate) fn identity() -> LocalIdentity {
        LocalIdentity {
            pair: IdentityKeyPair::generate(&mut OsRng),
            registration_id: 4242,
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_database_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.sqlite3");
        let mut store = LocalStore::open(&path).unwrap();
        store
            .init_device("http://127.0.0.1:1", "p4ssw0rd-p4ssw0rd", &identity(), 7)
            .unwrap();
        let mode = |suffix: &str| {
            let file = dir.path().join(format!("device.sqlite3{suffix}"));
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(""), 0o600);
        assert_eq!(mode("-wal"), 0o600);
        assert_eq!(mode("-shm"), 0o600);
        drop(store);
        // Reopening an existing database works and keeps its mode.
        drop(LocalStore::open(&path).unwrap());
        assert_eq!(mode(""), 0o600);
    }

    #[test]
    fn device_row_round_trip() {
        let mut store = LocalStore::open_in_memory().unwrap();
        assert!(!store.is_registered().unwrap());
        assert!(store.credentials().unwrap().is_none());
        let id = identity();
        store
            .init_device("http://127.0.0.1:1", "p4ssw0rd-p4ssw0rd", &id, 7)
            .unwrap();
        assert!(!store.is_registered().unwrap());
        let back = store.local_identity().unwrap().unwrap();
        assert_eq!(back.registration_id, 4242);
        assert_eq!(back.pair.identity_key(), id.pair.identity_key());
        let account = AccountId::random();
        let address: Address = "alice@parley".parse().unwrap();
        store
            .set_account(account, &address, DeviceId::PRIMARY)
            .unwrap();
        let creds = store.credentials().unwrap().unwrap();
        assert_eq!(creds.account_id, account);
        assert_eq!(creds.address, address);
        assert_eq!(creds.device_id, DeviceId::PRIMARY);
        assert_eq!(creds.server_url, "http://127.0.0.1:1");
        assert_eq!(*creds.password, "p4ssw0rd-p4ssw0rd");
        assert!(!format!("{creds:?}").contains("p4ssw0rd"));
        assert!(matches!(
            store.init_device("x", "y", &id, 8),
            Err(ClientError::AlreadyRegistered)
        ));
    }

    #[test]
    fn ids_are_allocated_and_wrap() {
        let store = LocalStore::open_in_memory().unwrap();
        assert_eq!(
            allocate_ids(&store.conn, meta::NEXT_PRE_KEY_ID, 3).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            allocate_ids(&store.conn, meta::NEXT_PRE_KEY_ID, 1).unwrap(),
            vec![4]
        );
        store.set_meta(meta::NEXT_PRE_KEY_ID, 0xFF_FFFE).unwrap();
        assert_eq!(
            allocate_ids(&store.conn, meta::NEXT_PRE_KEY_ID, 3).unwrap(),
            vec![0xFF_FFFE, 0xFF_FFFF, 1]
        );
        assert_eq!(store.meta(meta::NEXT_PRE_KEY_ID).unwrap(), Some(2));
    }

    #[test]
    fn own_devices_and_processed_ids() {
        let mut store = LocalStore::open_in_memory().unwrap();
        let two = DeviceId::new(2).unwrap();
        let three = DeviceId::new(3).unwrap();
        store.set_own_devices(&[three, two], 10).unwrap();
        assert_eq!(store.own_devices().unwrap(), vec![two, three]);
        assert_eq!(
            store.meta(meta::OWN_DEVICES_REFRESHED_AT).unwrap(),
            Some(10)
        );
        add_own_device(&store.conn, DeviceId::new(4).unwrap()).unwrap();
        assert_eq!(store.own_devices().unwrap().len(), 3);

        let id = Uuid::new_v4();
        assert!(!store.is_processed(id).unwrap());
        mark_processed(&store.conn, id, 1000).unwrap();
        mark_processed(&store.conn, id, 1000).unwrap();
        assert!(store.is_processed(id).unwrap());
        assert_eq!(store.prune_processed(1000).unwrap(), 0);
        assert_eq!(
            store
                .prune_processed(1001 + PROCESSED_RETENTION_MS)
                .unwrap(),
            1
        );
        assert!(!store.is_processed(id).unwrap());
    }

    #[test]
    fn migrations_apply_once_and_refuse_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        {
            let store = LocalStore::open(&path).unwrap();
            assert_eq!(
                migrations::version(&store.conn).unwrap(),
                migrations::LATEST
            );
            let mode: String = store
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            store.set_meta("probe", 5).unwrap();
        }
        {
            // Reopening runs nothing again and keeps the data.
            let store = LocalStore::open(&path).unwrap();
            assert_eq!(store.meta("probe").unwrap(), Some(5));
            store
                .conn
                .pragma_update(None, "user_version", migrations::LATEST + 1)
                .unwrap();
        }
        match LocalStore::open(&path) {
            Err(ClientError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, migrations::LATEST + 1);
                assert_eq!(supported, migrations::LATEST);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn version_1_keys_get_rotation_columns() {
        use passerelle_signal::{KyberPreKeyRecord, SignedPreKeyRecord};
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate_to(&mut conn, 1).unwrap();
        let me = identity();
        conn.execute(
            "INSERT INTO local_device (id, server_url, password, identity_key_pair,
                                       registration_id, created_at)
             VALUES (1, 'http://hub', 'pw', ?1, 1, 500)",
            [me.pair.serialize().as_slice()],
        )
        .unwrap();
        for (id, at) in [(1u32, 500i64), (2, 900)] {
            let record = SignedPreKeyRecord::generate(id, 0, &me.pair, &mut OsRng);
            conn.execute(
                "INSERT INTO signed_pre_keys (id, record, created_at) VALUES (?1, ?2, ?3)",
                params![id, record.serialize().as_slice(), at],
            )
            .unwrap();
        }
        for (id, last_resort) in [(1u32, true), (2, false)] {
            let record = KyberPreKeyRecord::generate(id, 0, &me.pair, &mut OsRng);
            conn.execute(
                "INSERT INTO kyber_pre_keys (id, record, last_resort) VALUES (?1, ?2, ?3)",
                params![id, record.serialize().as_slice(), last_resort],
            )
            .unwrap();
        }
        migrations::migrate(&mut conn).unwrap();
        let signed: Vec<(u32, Option<i64>)> = conn
            .prepare("SELECT id, superseded_at FROM signed_pre_keys ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(signed, vec![(1, Some(500)), (2, None)]);
        let kyber: Vec<(u32, i64, Option<i64>)> = conn
            .prepare("SELECT id, created_at, superseded_at FROM kyber_pre_keys ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(kyber, vec![(1, 500, None), (2, 500, None)]);
    }

    #[test]
    fn migrations_step_from_every_version() {
        for start in 0..=migrations::LATEST {
            let mut conn = Connection::open_in_memory().unwrap();
            migrations::migrate_to(&mut conn, start).unwrap();
            assert_eq!(migrations::version(&conn).unwrap(), start);
            migrations::migrate(&mut conn).unwrap();
            assert_eq!(migrations::version(&conn).unwrap(), migrations::LATEST);
        }
    }
}
