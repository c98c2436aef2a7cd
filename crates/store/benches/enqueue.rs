//! Enqueue throughput: envelopes per second when many tasks each queue
//! envelopes one call at a time, as the hub's request handlers do.
//!
//! Every call is acknowledged only once durable, so with one task the
//! SQLite figure is one `fsync` per envelope; with many, the writer commits
//! what has gathered while the previous commit ran (group commit) and the
//! `fsync` is shared. Each case reports, besides criterion's throughput,
//! the mean number of requests per SQLite transaction.
//!
//! `cargo bench -p passerelle-store --bench enqueue`
//!
//! The SQLite database is under the target directory (on disk, not tmpfs),
//! in WAL mode with `synchronous = FULL`, as the hub runs it. PostgreSQL is
//! the server at `PASSERELLE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), in a schema of its own
//! dropped afterwards, with a pool of the hub's default size and
//! `synchronous_commit = on`; without a server its cases are left out.

// Benchmarks fail by panicking, like tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use passerelle_proto::{AccountId, Address, Base64Bytes, DeviceId, Envelope, EnvelopeKind, Source};
use passerelle_store::memory::MemoryStore;
use passerelle_store::postgres::{DEFAULT_POOL_SIZE, testing};
use passerelle_store::sqlite::{SqliteStore, WriterStats};
use passerelle_store::{KeyUpdate, NewAccount, NewDevice, QueuedEnvelope, Store};
use uuid::Uuid;

/// How many accounts the envelopes go to, round robin.
const RECIPIENTS: usize = 64;
/// The ciphertext size of each envelope.
const CONTENT_LEN: usize = 256;

fn recipients() -> Vec<NewAccount> {
    (0..RECIPIENTS)
        .map(|i| NewAccount {
            id: AccountId::random(),
            address: format!("user{i}@bench").parse().unwrap(),
            identity_key: vec![5; 33],
            device: NewDevice {
                name: "primary".into(),
                registration_id: 1,
                password_hash: vec![0; 32],
                keys: KeyUpdate::default(),
                now: 0,
            },
        })
        .collect()
}

fn envelope(sender: &Address, recipient: AccountId, n: u64) -> QueuedEnvelope {
    QueuedEnvelope {
        account_id: recipient,
        envelope: Envelope {
            id: Uuid::new_v4(),
            kind: EnvelopeKind::Message,
            source: Some(Source {
                address: sender.clone(),
                account_id: AccountId(Uuid::from_u128(1)),
                device_id: DeviceId::PRIMARY,
            }),
            destination_device: DeviceId::PRIMARY,
            client_timestamp: n,
            server_timestamp: n,
            content: Some(Base64Bytes(vec![0xAB; CONTENT_LEN])),
            notice: None,
        },
        // Expired at once, so that the untimed cleanup can take them.
        expires_at: 0,
    }
}

/// Queues `total` envelopes from `tasks` tasks, one envelope per call;
/// returns how long it took.
async fn enqueue_from_tasks(
    store: &Arc<dyn Store>,
    recipients: &Arc<Vec<AccountId>>,
    tasks: usize,
    total: usize,
) -> Duration {
    let per_task = total / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = Arc::clone(store);
            let recipients = Arc::clone(recipients);
            tokio::spawn(async move {
                let sender: Address = "sender@bench".parse().unwrap();
                for i in 0..per_task {
                    let n = task * per_task + i;
                    let recipient = recipients[n % recipients.len()];
                    let queued = envelope(&sender, recipient, n as u64);
                    store.enqueue(vec![queued]).await.unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

/// Deletes everything queued (untimed).
async fn drain(store: &Arc<dyn Store>) {
    while !store.take_expired(1, 100_000).await.unwrap().is_empty() {}
}

fn enqueue(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let memory = Arc::new(MemoryStore::new());
    let schema = runtime.block_on(testing::fresh_schema());
    let postgres: Option<Arc<dyn Store>> = runtime.block_on(async {
        match &schema {
            Some(schema) => Some(Arc::new(schema.store(DEFAULT_POOL_SIZE).await) as Arc<dyn Store>),
            None => None,
        }
    });
    let accounts = recipients();
    let ids = Arc::new(accounts.iter().map(|a| a.id).collect::<Vec<_>>());
    runtime.block_on(async {
        for account in accounts {
            sqlite.create_account(account.clone()).await.unwrap();
            if let Some(postgres) = &postgres {
                postgres.create_account(account.clone()).await.unwrap();
            }
            memory.create_account(account).await.unwrap();
        }
    });

    let mut group = c.benchmark_group("enqueue");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for tasks in [1, 16, 256] {
        // One task waits for one fsync per envelope: fewer of them.
        let total = if tasks == 1 { 500 } else { 10_240 };
        group.throughput(Throughput::Elements(total as u64));
        let mut stores: Vec<(&str, Arc<dyn Store>)> = vec![
            ("sqlite", Arc::clone(&sqlite) as Arc<dyn Store>),
            ("memory", Arc::clone(&memory) as Arc<dyn Store>),
        ];
        if let Some(postgres) = &postgres {
            stores.push(("postgres", Arc::clone(postgres)));
        }
        for (name, store) in stores {
            let stats = std::sync::Mutex::new(Vec::new());
            group.bench_function(BenchmarkId::new(name, tasks), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            let before = sqlite.writer_stats();
                            timed += enqueue_from_tasks(&store, &ids, tasks, total).await;
                            stats.lock().unwrap().push((before, sqlite.writer_stats()));
                            drain(&store).await;
                        }
                        timed
                    })
                });
            });
            if name == "sqlite" {
                report(&stats.into_inner().unwrap(), tasks);
            }
        }
    }
    group.finish();
    drop(postgres);
    // Dropping the schema waits for its connections to end.
    drop(schema);
}

/// criterion's entry points; its `criterion_group!` defines an undocumented
/// `pub fn`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::enqueue);
}
criterion_main!(group::benches);

/// Prints what the writer did during the timed parts of a case.
fn report(stats: &[(WriterStats, WriterStats)], tasks: usize) {
    let (mut batches, mut requests) = (0, 0);
    let (mut busy, mut committing) = (Duration::ZERO, Duration::ZERO);
    for (before, after) in stats {
        batches += after.batches - before.batches;
        requests += after.requests - before.requests;
        busy += after.busy - before.busy;
        committing += after.committing - before.committing;
    }
    if batches == 0 {
        return;
    }
    let per_batch = |d: Duration| d.as_secs_f64() * 1e3 / batches as f64;
    println!(
        "enqueue/sqlite/{tasks}: {:.1} requests per transaction, {:.2} ms per transaction \
         of which {:.2} ms in COMMIT",
        requests as f64 / batches as f64,
        per_batch(busy),
        per_batch(committing),
    );
}
