//! Queued envelopes: one row each, in `seq` order per device.

use passerelle_proto::{AccountId, DeviceId, Envelope};
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use super::columns::{
    Db as _, account_blob, account_id, backend, bits, collect, device_id, device_int, expiry,
    expiry_from, from_bits, is_foreign_key_violation,
};
use crate::sql::{kind_code, kind_from, notice_from, notice_json, source_from};
use crate::{Millis, QueuedEnvelope, Result, StoreError};

/// The columns an [`Envelope`] is read from, in [`read_envelope`]'s order.
macro_rules! envelope_columns {
    () => {
        "id, kind, source_address, source_account, source_device, client_timestamp, \
         server_timestamp, content, notice, device_id"
    };
}

/// Reads the [`envelope_columns`] starting at column `at`.
fn read_envelope(row: &Row<'_>, at: usize) -> Result<Envelope> {
    let source_account: Option<[u8; 16]> = row.get(at + 3).db()?;
    let source_device: Option<i64> = row.get(at + 4).db()?;
    let source = source_from(
        row.get(at + 2).db()?,
        source_account.map(account_id),
        source_device.map(device_id).transpose()?,
    )?;
    Ok(Envelope {
        id: Uuid::from_bytes(row.get(at).db()?),
        kind: kind_from(row.get(at + 1).db()?)?,
        source,
        destination_device: device_id(row.get(at + 9).db()?)?,
        client_timestamp: from_bits(row.get(at + 5).db()?),
        server_timestamp: from_bits(row.get(at + 6).db()?),
        content: row.get::<_, Option<Vec<u8>>>(at + 7).db()?.map(Into::into),
        notice: notice_from(row.get(at + 8).db()?)?,
    })
}

pub(super) fn enqueue(conn: &Connection, envelopes: &[QueuedEnvelope]) -> Result<()> {
    let mut statement = conn
        .prepare_cached(
            "INSERT INTO envelopes (id, account_id, device_id, kind, source_address,
                                    source_account, source_device, client_timestamp,
                                    server_timestamp, content, notice, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (id) DO NOTHING",
        )
        .db()?;
    for queued in envelopes {
        let envelope = &queued.envelope;
        let source = envelope.source.as_ref();
        let notice = notice_json(envelope.notice.as_ref())?;
        let inserted = statement.execute(params![
            envelope.id.as_bytes(),
            account_blob(&queued.account_id),
            device_int(envelope.destination_device),
            kind_code(envelope.kind),
            source.map(|s| s.address.to_string()),
            source.map(|s| account_blob(&s.account_id)),
            source.map(|s| device_int(s.device_id)),
            bits(envelope.client_timestamp),
            bits(envelope.server_timestamp),
            envelope.content.as_ref().map(|c| c.as_slice()),
            notice,
            expiry(queued.expires_at),
        ]);
        match inserted {
            Ok(_) => {}
            // The recipient device does not exist (any more).
            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NoSuchDevice),
            Err(e) => return Err(backend(e)),
        }
    }
    Ok(())
}

pub(super) fn queued(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Envelope>> {
    let mut statement = conn
        .prepare_cached(concat!(
            "SELECT ",
            envelope_columns!(),
            " FROM envelopes
             WHERE account_id = ?1 AND device_id = ?2 AND seq > coalesce(
                 (SELECT seq FROM envelopes WHERE id = ?3 AND account_id = ?1 AND device_id = ?2),
                 0)
             ORDER BY seq LIMIT ?4"
        ))
        .db()?;
    let rows = statement
        .query_map(
            params![
                account_blob(&account),
                device_int(device),
                after.as_ref().map(Uuid::as_bytes),
                limit
            ],
            |row| Ok(read_envelope(row, 0)),
        )
        .db()?;
    collect(rows)
}

pub(super) fn queued_count(conn: &Connection, account: AccountId, device: DeviceId) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM envelopes WHERE account_id = ?1 AND device_id = ?2")
        .db()?
        .query_row(params![account_blob(&account), device_int(device)], |row| {
            row.get(0)
        })
        .db()?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn acknowledge(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    ids: &[Uuid],
) -> Result<u64> {
    let mut statement = conn
        .prepare_cached(
            "DELETE FROM envelopes WHERE id = ?1 AND account_id = ?2 AND device_id = ?3",
        )
        .db()?;
    let mut deleted = 0;
    for id in ids {
        let n = statement
            .execute(params![
                id.as_bytes(),
                account_blob(&account),
                device_int(device)
            ])
            .db()?;
        deleted += u64::try_from(n).unwrap_or(0);
    }
    Ok(deleted)
}

pub(super) fn take_expired(
    conn: &Connection,
    now: Millis,
    limit: u32,
) -> Result<Vec<QueuedEnvelope>> {
    let mut statement = conn
        .prepare_cached(concat!(
            "DELETE FROM envelopes WHERE seq IN (
                 SELECT seq FROM envelopes WHERE expires_at <= ?1
                 ORDER BY expires_at, seq LIMIT ?2)
             RETURNING seq, account_id, expires_at, ",
            envelope_columns!()
        ))
        .db()?;
    let rows = statement
        .query_map(params![expiry(now), limit], |row| Ok(read_expired(row)))
        .db()?;
    // RETURNING does not promise an order.
    let mut expired = collect(rows)?;
    expired.sort_unstable_by_key(|(expires_at, seq, _)| (*expires_at, *seq));
    Ok(expired.into_iter().map(|(_, _, queued)| queued).collect())
}

/// A row of [`take_expired`]: its expiry, sequence number and envelope.
fn read_expired(row: &Row<'_>) -> Result<(Millis, i64, QueuedEnvelope)> {
    let queued = QueuedEnvelope {
        account_id: account_id(row.get(1).db()?),
        expires_at: expiry_from(row.get(2).db()?),
        envelope: read_envelope(row, 3)?,
    };
    Ok((queued.expires_at, row.get(0).db()?, queued))
}
