//! What only the SQLite backend promises: durability across a reopen and a
//! crash, schema versions, and group commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use passerelle_proto::{AccountId, Base64Bytes, DeviceId, Envelope, EnvelopeKind};
use passerelle_store::conformance::Kept;
use passerelle_store::sqlite::{FILE_NAME, SqliteStore, schema};
use passerelle_store::{
    KeyUpdate, NewAccount, NewDevice, QueuedEnvelope, Store, StoreError, StoredKey,
};
use uuid::Uuid;

const NOW: u64 = 1_700_000_000_000;
const LATER: u64 = NOW + 3_600_000;

fn key(key_id: u32) -> StoredKey {
    StoredKey {
        key_id,
        public_key: vec![1; 33],
        signature: vec![2; 64],
    }
}

fn new_account(handle: &str, one_time: u32) -> NewAccount {
    NewAccount {
        id: AccountId::random(),
        address: format!("{handle}@test").parse().unwrap(),
        identity_key: vec![5; 33],
        device: NewDevice {
            name: "primary".into(),
            registration_id: 7,
            password_hash: b"hash".to_vec(),
            keys: KeyUpdate {
                signed_pre_key: Some(key(1)),
                last_resort_kyber_pre_key: Some(key(1)),
                pre_keys: (1..=one_time).map(key).collect(),
                kyber_pre_keys: (1..=one_time).map(key).collect(),
            },
            now: NOW,
        },
    }
}

fn envelope(account: AccountId, n: u64) -> QueuedEnvelope {
    QueuedEnvelope {
        account_id: account,
        envelope: Envelope {
            id: Uuid::new_v4(),
            kind: EnvelopeKind::Message,
            source: None,
            destination_device: DeviceId::PRIMARY,
            client_timestamp: n,
            server_timestamp: NOW,
            content: Some(Base64Bytes(vec![0xEE; 100])),
            notice: None,
        },
        expires_at: LATER,
    }
}

#[tokio::test]
async fn a_reopened_store_has_everything_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let kept = Kept::default();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        kept.write(&store).await;
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    kept.check(&store).await;
}

/// Set in the environment of the child process of the crash test.
const CRASH_DIR: &str = "PASSERELLE_STORE_CRASH_DIR";

/// Not a test of its own: the child process of
/// `acknowledged_envelopes_survive_a_crash`, which sets [`CRASH_DIR`]. It
/// queues envelopes from many tasks, appends the id of each one acknowledged
/// to a file, and goes on until the parent kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = Arc::new(SqliteStore::open(dir).unwrap());
    let account = new_account("alice", 0);
    let alice = account.id;
    store.create_account(account).await.unwrap();
    std::fs::write(dir.join("account"), alice.to_string()).unwrap();
    let acks = Arc::new(std::sync::Mutex::new(
        std::fs::File::create(dir.join("acks")).unwrap(),
    ));
    for task in 0..16 {
        let store = Arc::clone(&store);
        let acks = Arc::clone(&acks);
        tokio::spawn(async move {
            for n in 0.. {
                let queued = envelope(alice, task * 1_000_000 + n);
                let id = queued.envelope.id;
                store.enqueue(vec![queued]).await.unwrap();
                writeln!(acks.lock().unwrap(), "{id}").unwrap();
            }
        });
    }
    std::future::pending::<()>().await;
}

/// Kills (SIGKILL) a process that is queueing envelopes from many tasks:
/// every envelope it was told was stored is there after a reopen.
#[tokio::test]
async fn acknowledged_envelopes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let acks = dir.path().join("acks");
    let deadline = Instant::now() + Duration::from_secs(120);
    // 37 bytes a line: enough acknowledged, and writes still in flight.
    while std::fs::metadata(&acks).map_or(0, |m| m.len()) < 1000 * 37 {
        assert!(Instant::now() < deadline, "the child did not get going");
        assert!(child.try_wait().unwrap().is_none(), "the child stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let alice: AccountId = std::fs::read_to_string(dir.path().join("account"))
        .unwrap()
        .parse()
        .unwrap();
    let acked: Vec<Uuid> = std::fs::read_to_string(dir.path().join("acks"))
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert!(acked.len() >= 1000, "{} acknowledged", acked.len());

    let integrity: String = rusqlite::Connection::open(dir.path().join(FILE_NAME))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");

    let store = SqliteStore::open(dir.path()).unwrap();
    let queued: std::collections::HashSet<Uuid> = store
        .queued(alice, DeviceId::PRIMARY, None, u32::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let lost: Vec<&Uuid> = acked.iter().filter(|id| !queued.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged envelopes lost",
        lost.len()
    );
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), schema::VERSION);
    conn.pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    drop(conn);

    let refused = SqliteStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(refused, StoreError::SchemaTooNew { found, supported }
            if found == schema::VERSION + 1 && supported == schema::VERSION),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("newer than this build"));
}

#[tokio::test]
async fn the_database_is_in_wal_mode_in_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = SqliteStore::open(&nested).unwrap();
    assert_eq!(store.path(), nested.join(FILE_NAME));
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Concurrent writes share transactions: fewer commits than requests.
#[tokio::test]
async fn concurrent_writes_are_committed_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let account = new_account("alice", 0);
    let alice = account.id;
    store.create_account(account).await.unwrap();

    let before = store.writer_stats();
    let writes = (0..500).map(|n| store.enqueue(vec![envelope(alice, n)]));
    for result in join_all(writes).await {
        result.unwrap();
    }
    let after = store.writer_stats();
    let requests = after.requests - before.requests;
    let batches = after.batches - before.batches;
    assert_eq!(requests, 500);
    assert!(
        batches < 50,
        "{batches} transactions for {requests} requests"
    );
}

/// A read that follows a write sees it, on whichever reader it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_the_writes_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let account = new_account("alice", 0);
    let alice = account.id;
    store.create_account(account).await.unwrap();
    for n in 0..50 {
        let queued = envelope(alice, n);
        let id = queued.envelope.id;
        store.enqueue(vec![queued]).await.unwrap();
        let page = store
            .queued(alice, DeviceId::PRIMARY, None, 1)
            .await
            .unwrap();
        assert_eq!(page.first().map(|e| e.id), Some(id));
        assert_eq!(
            store
                .acknowledge(alice, DeviceId::PRIMARY, &[id])
                .await
                .unwrap(),
            1
        );
    }
}

/// A database of schema version 1 (before accounts kept their next device
/// id) continues each account after its highest device id.
#[tokio::test]
async fn migrating_from_version_1_continues_after_the_highest_device() {
    let dir = tempfile::tempdir().unwrap();
    let id = AccountId::random();
    {
        let conn = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO accounts (id, app, handle, identity_key, created_at)
             VALUES (?1, 'test', 'old', ?2, 0)",
            rusqlite::params![id.0.as_bytes().as_slice(), vec![5u8; 33]],
        )
        .unwrap();
        for device in [1, 3] {
            conn.execute(
                "INSERT INTO devices (account_id, device_id, name, registration_id,
                                      password_hash, created_at, last_seen_at)
                 VALUES (?1, ?2, 'd', 7, x'00', 0, 0)",
                rusqlite::params![id.0.as_bytes().as_slice(), device],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let device = |name: &str| NewDevice {
        name: name.into(),
        registration_id: 8,
        password_hash: b"hash".to_vec(),
        keys: KeyUpdate::default(),
        now: NOW,
    };
    let added = store.add_device(id, device("new"), 10).await.unwrap();
    assert_eq!(added, DeviceId::new(4).unwrap());
    // A new account starts at 2.
    let fresh = new_account("fresh", 0);
    let fresh_id = fresh.id;
    store.create_account(fresh).await.unwrap();
    let added = store.add_device(fresh_id, device("two"), 10).await.unwrap();
    assert_eq!(added, DeviceId::new(2).unwrap());
}
