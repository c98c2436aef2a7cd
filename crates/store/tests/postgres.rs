//! What only the PostgreSQL backend promises: durability across new pools
//! and killed connections, schema versions, and correctness when several
//! nodes (each its own pool) share one database.
//!
//! Each test works in a schema of its own, dropped at the end. Without a
//! server at `PASSERELLE_TEST_POSTGRES` the tests are skipped, or fail
//! when `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use passerelle_proto::{AccountId, Base64Bytes, DeviceId, Envelope, EnvelopeKind};
use passerelle_store::conformance::Kept;
use passerelle_store::postgres::testing::{TestSchema, fresh_schema};
use passerelle_store::postgres::{PostgresStore, schema};
use passerelle_store::{
    KeyUpdate, NewAccount, NewDevice, QueuedEnvelope, Store, StoreError, StoredKey,
};
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use uuid::Uuid;

const NOW: u64 = 1_700_000_000_000;
const LATER: u64 = NOW + 3_600_000;
/// How many nodes the multi-node tests run.
const NODES: usize = 4;

fn key(key_id: u32) -> StoredKey {
    StoredKey {
        key_id,
        public_key: vec![1; 33],
        signature: vec![2; 64],
    }
}

fn new_device(name: &str, keys: KeyUpdate) -> NewDevice {
    NewDevice {
        name: name.into(),
        registration_id: 7,
        password_hash: b"hash".to_vec(),
        keys,
        now: NOW,
    }
}

fn new_account(handle: &str, one_time: u32) -> NewAccount {
    NewAccount {
        id: AccountId::random(),
        address: format!("{handle}@test").parse().unwrap(),
        identity_key: vec![5; 33],
        device: new_device(
            "primary",
            KeyUpdate {
                signed_pre_key: Some(key(1)),
                last_resort_kyber_pre_key: Some(key(1)),
                pre_keys: (1..=one_time).map(key).collect(),
                kyber_pre_keys: (1..=one_time).map(key).collect(),
            },
        ),
    }
}

fn envelope(account: AccountId, n: u64, expires_at: u64) -> QueuedEnvelope {
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
        expires_at,
    }
}

/// Every queued envelope id of a device.
async fn queued_ids(store: &dyn Store, account: AccountId) -> HashSet<Uuid> {
    store
        .queued(account, DeviceId::PRIMARY, None, u32::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test]
async fn connections_commit_synchronously_whatever_the_url_says() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let url = format!("{}&options[synchronous_commit]=off", schema.url());
    let store = PostgresStore::connect(&url, 2).await.unwrap();
    for _ in 0..2 {
        let setting: String = query_scalar("SHOW synchronous_commit")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(setting, "on");
    }
    store.close().await;
}

#[tokio::test]
async fn a_new_pool_has_everything_that_was_acknowledged() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let kept = Kept::default();
    {
        let store = schema.store(8).await;
        kept.write(&store).await;
        // Every connection of the first pool goes, from the server's side.
        schema.terminate_connections().await;
        store.close().await;
    }
    let store = schema.store(2).await;
    kept.check(&store).await;
}

/// Many tasks queue envelopes while the server ends every connection of
/// the pool, again and again: calls in flight fail, and every envelope
/// whose call returned `Ok` is there when a new pool reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_envelopes_survive_killed_connections() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let store = Arc::new(schema.store(8).await);
    let account = new_account("alice", 0);
    let alice = account.id;
    store.create_account(account).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let writers: Vec<_> = (0..16u64)
        .map(|task| {
            let store = Arc::clone(&store);
            let acked = Arc::clone(&acked);
            let failed = Arc::clone(&failed);
            tokio::spawn(async move {
                for n in 0..150 {
                    let queued = envelope(alice, task * 1_000_000 + n, LATER);
                    let id = queued.envelope.id;
                    match store.enqueue(vec![queued]).await {
                        Ok(()) => acked.lock().unwrap().push(id),
                        Err(StoreError::Unavailable(_) | StoreError::Backend(_)) => {
                            *failed.lock().unwrap() += 1;
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut killed = 0;
    // Kill while the writers are running: between kills, wait for more
    // acknowledgements (no clock involved).
    for round in 1..=5 {
        while acked.lock().unwrap().len() < round * 300 {
            tokio::task::yield_now().await;
            if writers.iter().all(|w| w.is_finished()) {
                break;
            }
        }
        killed += schema.terminate_connections().await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(killed > 0, "no connection was killed");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1000, "{} acknowledged", acked.len());

    let fresh = schema.store(2).await;
    let queued = queued_ids(&fresh, alice).await;
    let lost = acked.iter().filter(|id| !queued.contains(id)).count();
    assert_eq!(lost, 0, "{lost} acknowledged envelopes lost");
    // The pool that lost its connections works again.
    store
        .enqueue(vec![envelope(alice, 1, LATER)])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_schema_from_a_newer_build_is_refused() {
    let Some(test_schema) = fresh_schema().await else {
        return;
    };
    let store = test_schema.store(1).await;
    let mut conn = store.pool().acquire().await.unwrap();
    assert_eq!(schema::version(&mut conn).await.unwrap(), schema::VERSION);
    query("UPDATE passerelle_schema SET version = version + 1")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    store.close().await;

    let refused = PostgresStore::connect(&test_schema.url(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::SchemaTooNew { found, supported }
            if found == schema::VERSION + 1 && supported == schema::VERSION),
        "{refused:?}"
    );
}

/// Nodes starting at once on an empty schema: one migrates, all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let nodes = join_all((0..NODES).map(|_| schema.store(2))).await;
    for (i, node) in nodes.iter().enumerate() {
        node.create_account(new_account(&format!("n{i}"), 0))
            .await
            .unwrap();
    }
}

/// [`NODES`] nodes on a fresh schema, and alice's account (with `one_time`
/// one-time keys) created through the first; `None` when PostgreSQL cannot
/// be reached outside CI.
async fn cluster(one_time: u32) -> Option<(TestSchema, Vec<Arc<dyn Store>>, AccountId)> {
    let schema = fresh_schema().await?;
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..NODES {
        nodes.push(Arc::new(schema.store(4).await));
    }
    let account = new_account("alice", one_time);
    let alice = account.id;
    nodes[0].create_account(account).await.unwrap();
    Some((schema, nodes, alice))
}

/// Claims from several nodes at once hand out each one-time key once,
/// then fall back to the last-resort Kyber key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_never_share_a_one_time_key() {
    let Some((_schema, nodes, alice)) = cluster(100).await else {
        return;
    };

    let claims = (0..160).map(|i| {
        let node = Arc::clone(&nodes[i % NODES]);
        tokio::spawn(async move { node.claim_keys(alice, DeviceId::PRIMARY).await })
    });
    let mut pre_keys = Vec::new();
    let mut one_time_kyber = Vec::new();
    let mut last_resort = 0;
    for claim in join_all(claims).await {
        let claimed = claim.unwrap().unwrap().expect("a bundle");
        pre_keys.extend(claimed.pre_key.as_ref().map(|k| k.key_id));
        // The last-resort key has id 1, as does one one-time key: tell
        // them apart by what is left afterwards.
        one_time_kyber.push(claimed.kyber_pre_key.key_id);
        if claimed.pre_key.is_none() {
            last_resort += 1;
        }
    }
    let distinct: HashSet<u32> = pre_keys.iter().copied().collect();
    assert_eq!(pre_keys.len(), 100, "every one-time key was handed out");
    assert_eq!(distinct.len(), 100, "no key was handed out twice");
    assert_eq!(last_resort, 60);
    let counts = nodes[1].key_counts(alice, DeviceId::PRIMARY).await.unwrap();
    assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (0, 0));
    // 100 one-time Kyber keys (ids 1 to 100), then the last-resort one
    // (id 1) 60 times.
    let ones = one_time_kyber.iter().filter(|id| **id == 1).count();
    assert_eq!(ones, 61);
    let others: HashSet<u32> = one_time_kyber.into_iter().filter(|id| *id != 1).collect();
    assert_eq!(others.len(), 99);
}

/// Devices added from several nodes at once get distinct ids, and the
/// device limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_add_devices_without_sharing_ids() {
    let Some((_schema, nodes, alice)) = cluster(0).await else {
        return;
    };
    let adds = (0..40).map(|i| {
        let node = Arc::clone(&nodes[i % NODES]);
        tokio::spawn(async move {
            node.add_device(alice, new_device("more", KeyUpdate::default()), 20)
                .await
        })
    });
    let mut ids = HashSet::new();
    let mut refused = 0;
    for added in join_all(adds).await {
        match added.unwrap() {
            Ok(id) => assert!(ids.insert(id), "{id} given twice"),
            Err(StoreError::TooManyDevices(20)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ids.len(), refused), (19, 21));
    assert_eq!(nodes[2].devices(alice).await.unwrap().len(), 20);
}

/// Several nodes queue for one device while a reader follows the queue
/// the way a connection does (each page after the last envelope it saw):
/// it sees every envelope, none skipped by a later commit of an earlier
/// sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_following_the_queue_misses_nothing() {
    let Some((_schema, nodes, alice)) = cluster(0).await else {
        return;
    };

    let writers: Vec<_> = (0..16u64)
        .map(|task| {
            let node = Arc::clone(&nodes[task as usize % NODES]);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..60 {
                    let queued = envelope(alice, task * 1000 + n, LATER);
                    ids.push(queued.envelope.id);
                    node.enqueue(vec![queued]).await.unwrap();
                }
                ids
            })
        })
        .collect();
    let reader = Arc::clone(&nodes[0]);
    let mut seen = HashSet::new();
    let mut cursor = None;
    while !writers.iter().all(|w| w.is_finished()) {
        follow(&*reader, alice, &mut seen, &mut cursor).await;
        tokio::task::yield_now().await;
    }
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    follow(&*reader, alice, &mut seen, &mut cursor).await;
    let missed = written.difference(&seen).count();
    assert_eq!(missed, 0, "{missed} of {} envelopes skipped", written.len());
}

/// Reads a device's queue page by page after `cursor`, as a connection
/// does, to its end.
async fn follow(
    reader: &dyn Store,
    account: AccountId,
    seen: &mut HashSet<Uuid>,
    cursor: &mut Option<Uuid>,
) {
    loop {
        let page = reader
            .queued(account, DeviceId::PRIMARY, *cursor, 7)
            .await
            .unwrap();
        let Some(last) = page.last() else { return };
        *cursor = Some(last.id);
        seen.extend(page.iter().map(|e| e.id));
    }
}

/// One enqueue to many devices (a fan-out) is all or nothing, from any
/// node, while another node removes one of the devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_outs_are_all_or_nothing_across_nodes() {
    let Some((_schema, nodes, alice)) = cluster(0).await else {
        return;
    };
    let mut devices = vec![DeviceId::PRIMARY];
    for _ in 0..9 {
        devices.push(
            nodes[1]
                .add_device(alice, new_device("d", KeyUpdate::default()), 127)
                .await
                .unwrap(),
        );
    }
    let fan_out = |n: u64| -> Vec<QueuedEnvelope> {
        devices
            .iter()
            .map(|device| {
                let mut queued = envelope(alice, n, LATER);
                queued.envelope.destination_device = *device;
                queued
            })
            .collect()
    };
    let removed = devices[5];
    let sends = (0..40u64).map(|n| {
        let node = Arc::clone(&nodes[n as usize % NODES]);
        let batch = fan_out(n);
        tokio::spawn(async move { node.enqueue(batch).await })
    });
    let remover = Arc::clone(&nodes[3]);
    let removal = tokio::spawn(async move { remover.remove_device(alice, removed).await });
    let mut complete = 0u64;
    for sent in join_all(sends).await {
        match sent.unwrap() {
            Ok(()) => complete += 1,
            Err(StoreError::NoSuchDevice) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(removal.await.unwrap().unwrap());
    // Each device that is left holds one envelope per complete fan-out.
    for device in devices.iter().filter(|d| **d != removed) {
        let count = nodes[2].queued_count(alice, *device).await.unwrap();
        assert_eq!(count, complete, "device {device}");
    }
}

/// Expiry tasks of several nodes at once take each expired envelope once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_take_each_expired_envelope_once() {
    let Some((_schema, nodes, alice)) = cluster(0).await else {
        return;
    };
    let batch: Vec<_> = (0..400).map(|n| envelope(alice, n, NOW + n)).collect();
    nodes[0].enqueue(batch).await.unwrap();

    let takers = nodes.iter().map(|node| {
        let node = Arc::clone(node);
        tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let page = node.take_expired(LATER, 25).await.unwrap();
                if page.is_empty() {
                    return taken;
                }
                taken.extend(page.into_iter().map(|q| q.envelope.id));
            }
        })
    });
    let mut all = Vec::new();
    for taken in join_all(takers).await {
        all.extend(taken.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (400, 400));
}
