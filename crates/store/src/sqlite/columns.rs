//! How values map to SQLite columns, and SQLite errors to store errors.

use passerelle_proto::{AccountId, DeviceId};
use uuid::Uuid;

pub(super) use crate::sql::{bits, corrupt, expiry, expiry_from, from_bits, u32_from};
use crate::{Result, StoreError};

/// Turns SQLite's errors into [`StoreError::Backend`].
pub(super) trait Db<T> {
    /// The value, or the error as a backend failure.
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(backend)
    }
}

/// A backend failure. SQLite's messages name tables and columns, never
/// values.
pub(super) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Whether a statement failed on a foreign key.
pub(super) fn is_foreign_key_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// An account id as a 16-byte blob.
pub(super) fn account_blob(id: &AccountId) -> &[u8; 16] {
    id.0.as_bytes()
}

/// An account id read back.
pub(super) fn account_id(blob: [u8; 16]) -> AccountId {
    AccountId(Uuid::from_bytes(blob))
}

/// A device id as an integer.
pub(super) fn device_int(id: DeviceId) -> i64 {
    i64::from(id.get())
}

/// A device id read back.
pub(super) fn device_id(value: i64) -> Result<DeviceId> {
    u32::try_from(value)
        .ok()
        .and_then(|id| DeviceId::new(id).ok())
        .ok_or_else(|| corrupt("device id"))
}

/// Collects rows whose conversion can fail twice: in SQLite, then in ours.
pub(super) fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T>>>,
) -> Result<Vec<T>> {
    rows.map(|row| row.db().and_then(|value| value)).collect()
}
