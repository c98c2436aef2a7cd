//! How the SQL backends store values that have no column type of their
//! own, the same way in SQLite and PostgreSQL (both have signed 64-bit
//! integers only).

use passerelle_proto::{AccountId, DeviceId, EnvelopeKind, ServerNotice, Source};

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

/// An envelope kind's code.
pub(crate) fn kind_code(kind: EnvelopeKind) -> i16 {
    match kind {
        EnvelopeKind::PrekeyMessage => 1,
        EnvelopeKind::Message => 2,
        EnvelopeKind::ServerNotice => 3,
    }
}

/// An envelope kind read back from its [`kind_code`].
pub(crate) fn kind_from(code: i64) -> Result<EnvelopeKind> {
    match code {
        1 => Ok(EnvelopeKind::PrekeyMessage),
        2 => Ok(EnvelopeKind::Message),
        3 => Ok(EnvelopeKind::ServerNotice),
        _ => Err(corrupt("envelope kind")),
    }
}

/// An envelope's sender read back from its three columns: all set, or all
/// null for a server notice.
pub(crate) fn source_from(
    address: Option<String>,
    account: Option<AccountId>,
    device: Option<DeviceId>,
) -> Result<Option<Source>> {
    match (address, account, device) {
        (Some(address), Some(account_id), Some(device_id)) => Ok(Some(Source {
            address: address.parse().map_err(|_| corrupt("source address"))?,
            account_id,
            device_id,
        })),
        (None, None, None) => Ok(None),
        _ => Err(corrupt("envelope source")),
    }
}

/// A server notice as the JSON its column holds.
pub(crate) fn notice_json(notice: Option<&ServerNotice>) -> Result<Option<String>> {
    notice
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Backend(format!("cannot encode a server notice: {e}")))
}

/// A server notice read back from [`notice_json`].
pub(crate) fn notice_from(json: Option<String>) -> Result<Option<ServerNotice>> {
    json.map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|_| corrupt("server notice"))
}
