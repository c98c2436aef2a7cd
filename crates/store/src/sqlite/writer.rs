//! The writer thread: every write, batched into one transaction per round
//! (group commit), each request in its own savepoint. The module docs of
//! [`sqlite`](super) say why.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{MAX_BATCH, WRITE_QUEUE};
use crate::{Result, StoreError};

/// What the writer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or rolled back on failure): one per batch.
    pub batches: u64,
    /// Requests run, in all batches.
    pub requests: u64,
    /// Time spent running batches, from `BEGIN` to the end of `COMMIT`.
    pub busy: Duration,
    /// Of that, time spent in `COMMIT`: mostly the `fsync` of the log.
    pub committing: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
    busy_nanos: AtomicU64,
    committing_nanos: AtomicU64,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One write for the writer thread, type-erased.
trait Request: Send {
    /// Runs the request on the writer's connection, inside its savepoint.
    /// Returns `true` if it failed: then its savepoint is rolled back.
    fn run(&mut self, conn: &Connection) -> bool;

    /// Answers the caller once the batch's fate is known: `Ok` if the batch
    /// committed, else why not.
    fn answer(self: Box<Self>, batch: std::result::Result<(), &str>);
}

/// A request with its caller's reply channel.
struct Call<F, T> {
    op: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Request for Call<F, T>
where
    F: FnOnce(&Connection) -> Result<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.op.take() {
            Some(op) => op(conn),
            None => Err(StoreError::Backend("write request ran twice".into())),
        };
        let failed = result.is_err();
        self.result = Some(result);
        failed
    }

    fn answer(self: Box<Self>, batch: std::result::Result<(), &str>) {
        let answer = match (self.result, batch) {
            // Its own failure wrote nothing, whatever became of the batch.
            (Some(Err(error)), _) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(why)) => Err(StoreError::Backend(why.to_owned())),
            (None, Ok(())) => Err(StoreError::Backend("write request did not run".into())),
        };
        // The caller may have stopped waiting; the write stands anyway.
        let _ = self.reply.send(answer);
    }
}

/// The handle on the writer thread.
pub(super) struct Writer {
    /// `None` only while dropping: closing it stops the thread.
    requests: Option<mpsc::Sender<Box<dyn Request>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer thread on the read-write connection.
    pub(super) fn start(conn: Connection) -> Result<Self> {
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("passerelle-store-writer".into())
            .spawn(move || run(&conn, receiver, &thread_counters))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            requests: Some(sender),
            thread: Some(thread),
            counters,
        })
    }

    /// Runs `op` in the writer's next batch; returns its result once the
    /// batch committed.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let stopped = || StoreError::Backend("the store's writer thread stopped".into());
        let requests = self.requests.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        let call = Call {
            op: Some(op),
            result: None,
            reply,
        };
        requests.send(Box::new(call)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.counters.busy_nanos.load(Ordering::Relaxed)),
            committing: Duration::from_nanos(
                self.counters.committing_nanos.load(Ordering::Relaxed),
            ),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the batch in hand.
        self.requests = None;
        let joined = self.thread.take().map(JoinHandle::join);
        if let Some(Err(_)) = joined {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

/// The writer thread: one batch per round, until every sender is gone.
fn run(conn: &Connection, mut requests: mpsc::Receiver<Box<dyn Request>>, counters: &Counters) {
    let mut batch: Vec<Box<dyn Request>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcome = run_batch(conn, &mut batch, counters);
        if let Err(why) = &outcome {
            tracing::error!(error = %why, requests = batch.len(), "store write batch failed");
            let rolled_back = if conn.is_autocommit() {
                Ok(())
            } else {
                conn.execute_batch("ROLLBACK")
            };
            if let Err(e) = rolled_back {
                tracing::error!(error = %e, "store rollback failed");
            }
        }
        counters
            .busy_nanos
            .fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let outcome = outcome.as_ref().map(|_| ()).map_err(String::as_str);
        for request in batch.drain(..) {
            request.answer(outcome);
        }
    }
}

/// Runs a batch in one transaction, each request in a savepoint, and
/// commits. `Err` if the transaction as a whole failed: then nothing of it
/// is written, and the caller rolls back.
fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Request>],
    counters: &Counters,
) -> std::result::Result<(), String> {
    // Prepared once per connection: a batch runs two of them per request.
    let step = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(|e| format!("{sql}: {e}"))
    };
    step("BEGIN IMMEDIATE")?;
    for request in batch.iter_mut() {
        step("SAVEPOINT request")?;
        if request.run(conn) {
            step("ROLLBACK TO request")?;
        }
        step("RELEASE request")?;
    }
    let committing = Instant::now();
    let committed = step("COMMIT");
    counters
        .committing_nanos
        .fetch_add(nanos(committing.elapsed()), Ordering::Relaxed);
    committed
}
