//! How the SQL backends store values that have no column type of their
//! own, the same way in SQLite and PostgreSQL (both have signed 64-bit
//! integers only).

use crate::{Millis, Result, StoreError};

/// A time that SQL compares (an expiry): saturates at `i64::MAX`.
pub(crate) fn expiry(time: Millis) -> i64 {
    i64::try_from(time).unwrap_or(i64::MAX)
}

/// An expiry read back.
pub(crate) fn expiry_from(value: i64) -> Millis {
    u64::try_from(value).unwrap_or(0)
}

/// A `u64` that SQL does not compare, stored bit for bit.
pub(crate) fn bits(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// A `u64` stored with [`bits`], read back.
pub(crate) fn from_bits(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A value in the database that this build cannot read back.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("unreadable {what} in the database"))
}

/// A `u32` read back from a 64-bit integer column.
pub(crate) fn u32_from(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what))
}
