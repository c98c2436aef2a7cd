//! The read-only connections: a small pool, each behind a mutex. Reads run
//! on tokio's blocking threads and never wait for the writer (WAL).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};

use rusqlite::Connection;

use crate::{Result, StoreError};

/// A pool of read-only connections.
pub(super) struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    pub(super) fn new(connections: Vec<Connection>) -> Self {
        Self {
            connections: connections.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `op` on a free connection, or waits for one. Blocks: call it
    /// from a blocking thread.
    pub(super) fn with<T>(&self, op: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let count = self.connections.len();
        if count == 0 {
            return Err(StoreError::Backend("no read connection".into()));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        for offset in 0..count {
            // A panic while a reader was held leaves the connection usable:
            // reads change nothing.
            match self.connections[(start + offset) % count].try_lock() {
                Ok(conn) => return op(&conn),
                Err(TryLockError::Poisoned(poisoned)) => return op(&poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let conn = self.connections[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        op(&conn)
    }
}
