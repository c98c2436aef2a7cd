//! How values map to PostgreSQL columns, and driver errors to store errors.

use passerelle_proto::{AccountId, DeviceId};
use sqlx_core::error::Error as SqlxError;
use uuid::Uuid;

pub(super) use crate::sql::{bits, corrupt, expiry, expiry_from, from_bits, u32_from};
use crate::{Result, StoreError};

/// PostgreSQL's code for a foreign key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// Turns the driver's errors into store errors.
pub(super) trait Db<T> {
    /// The value, or the error as a backend failure.
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for std::result::Result<T, SqlxError> {
    fn db(self) -> Result<T> {
        self.map_err(backend)
    }
}

/// A backend failure: [`StoreError::Unavailable`] when the server cannot
/// be reached or is going away, [`StoreError::Backend`] otherwise.
/// PostgreSQL's primary messages name tables and constraints; the values
/// are only in the error's detail, which is left out.
pub(super) fn backend(error: SqlxError) -> StoreError {
    if is_unavailable(&error) {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Backend(error.to_string())
    }
}

/// Whether the error says the server is out of reach for now, rather than
/// that the statement failed: no connection, none free in time, or the
/// server shutting down, starting up or out of connection slots.
fn is_unavailable(error: &SqlxError) -> bool {
    match error {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed => true,
        SqlxError::Database(e) => e.code().is_some_and(|code| {
            // Class 08: connection exception. 57P01-57P03: admin
            // shutdown, crash shutdown, cannot connect now. 53300: too
            // many connections.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether a statement failed on a foreign key.
pub(super) fn is_foreign_key_violation(error: &SqlxError) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == FOREIGN_KEY_VIOLATION)
}

/// A device id as a `smallint`.
pub(super) fn device_small(id: DeviceId) -> i16 {
    // Device ids are 1 to 127.
    i16::try_from(id.get()).unwrap_or(i16::MAX)
}

/// A device id read back.
pub(super) fn device_id(value: i16) -> Result<DeviceId> {
    u32::try_from(value)
        .ok()
        .and_then(|id| DeviceId::new(id).ok())
        .ok_or_else(|| corrupt("device id"))
}

/// An account id read back.
pub(super) fn account_id(id: Uuid) -> AccountId {
    AccountId(id)
}
