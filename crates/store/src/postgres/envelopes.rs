//! Queued envelopes: one row each, in `seq` order per device.
//!
//! `seq` comes from one identity sequence, drawn at insert time; a device's
//! reader pages with "after this envelope's `seq`". Two transactions that
//! drew 10 and 11 could commit 11 first, and a reader that paged past 11
//! would then never see 10 on that connection. So an enqueue first locks
//! the rows of its recipient devices (`FOR NO KEY UPDATE`, in key order so
//! that two fan-outs cannot deadlock) and only then draws its numbers:
//! enqueues to one device commit in `seq` order, whichever node runs them.
//! The lock does not conflict with the key-share locks of foreign-key
//! checks, so key uploads and claims never wait for it.

use passerelle_proto::{AccountId, DeviceId, Envelope};
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_core::row::Row as _;
use sqlx_postgres::{PgPool, PgRow};
use uuid::Uuid;

use super::columns::{
    Db as _, account_id, backend, bits, device_id, device_small, expiry, expiry_from, from_bits,
    is_foreign_key_violation,
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
fn read_envelope(row: &PgRow, at: usize) -> Result<Envelope> {
    let get = |i: usize| at + i;
    let source_account: Option<Uuid> = row.try_get(get(3)).db()?;
    let source_device: Option<i16> = row.try_get(get(4)).db()?;
    let source = source_from(
        row.try_get(get(2)).db()?,
        source_account.map(account_id),
        source_device.map(device_id).transpose()?,
    )?;
    Ok(Envelope {
        id: row.try_get(get(0)).db()?,
        kind: kind_from(row.try_get::<i16, _>(get(1)).db()?.into())?,
        source,
        destination_device: device_id(row.try_get(get(9)).db()?)?,
        client_timestamp: from_bits(row.try_get(get(5)).db()?),
        server_timestamp: from_bits(row.try_get(get(6)).db()?),
        content: row
            .try_get::<Option<Vec<u8>>, _>(get(7))
            .db()?
            .map(Into::into),
        notice: notice_from(row.try_get(get(8)).db()?)?,
    })
}

/// Envelopes as the columns of `UNNEST`, in insert order.
#[derive(Default)]
struct EnvelopeColumns {
    ids: Vec<Uuid>,
    accounts: Vec<Uuid>,
    devices: Vec<i16>,
    kinds: Vec<i16>,
    source_addresses: Vec<Option<String>>,
    source_accounts: Vec<Option<Uuid>>,
    source_devices: Vec<Option<i16>>,
    client_timestamps: Vec<i64>,
    server_timestamps: Vec<i64>,
    contents: Vec<Option<Vec<u8>>>,
    notices: Vec<Option<String>>,
    expiries: Vec<i64>,
}

impl EnvelopeColumns {
    fn new(envelopes: &[QueuedEnvelope]) -> Result<Self> {
        let mut columns = Self::default();
        for queued in envelopes {
            let envelope = &queued.envelope;
            let source = envelope.source.as_ref();
            let notice = notice_json(envelope.notice.as_ref())?;
            columns.ids.push(envelope.id);
            columns.accounts.push(queued.account_id.0);
            columns
                .devices
                .push(device_small(envelope.destination_device));
            columns.kinds.push(kind_code(envelope.kind));
            columns
                .source_addresses
                .push(source.map(|s| s.address.to_string()));
            columns.source_accounts.push(source.map(|s| s.account_id.0));
            columns
                .source_devices
                .push(source.map(|s| device_small(s.device_id)));
            columns
                .client_timestamps
                .push(bits(envelope.client_timestamp));
            columns
                .server_timestamps
                .push(bits(envelope.server_timestamp));
            columns
                .contents
                .push(envelope.content.as_ref().map(|c| c.0.clone()));
            columns.notices.push(notice);
            columns.expiries.push(expiry(queued.expires_at));
        }
        Ok(columns)
    }
}

/// The whole enqueue in one statement (one round trip, one commit): lock
/// the recipient devices, count them, and insert only if every one exists.
const ENQUEUE: &str = "
WITH wanted AS (
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::smallint[], $4::smallint[], $5::text[],
                         $6::uuid[], $7::smallint[], $8::bigint[], $9::bigint[], $10::bytea[],
                         $11::text[], $12::bigint[])
        WITH ORDINALITY AS w (id, account_id, device_id, kind, source_address, source_account,
                              source_device, client_timestamp, server_timestamp, content,
                              notice, expires_at, ord)
),
recipients AS (
    SELECT DISTINCT account_id, device_id FROM wanted
),
locked AS (
    SELECT account_id, device_id FROM devices
    WHERE (account_id, device_id) IN (SELECT account_id, device_id FROM recipients)
    ORDER BY account_id, device_id
    FOR NO KEY UPDATE
),
inserted AS (
    INSERT INTO envelopes (id, account_id, device_id, kind, source_address, source_account,
                           source_device, client_timestamp, server_timestamp, content, notice,
                           expires_at)
    SELECT id, account_id, device_id, kind, source_address, source_account, source_device,
           client_timestamp, server_timestamp, content, notice, expires_at
    FROM wanted
    WHERE (SELECT count(*) FROM locked) = (SELECT count(*) FROM recipients)
    ORDER BY ord
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM locked) = (SELECT count(*) FROM recipients)";

pub(super) async fn enqueue(pool: &PgPool, envelopes: &[QueuedEnvelope]) -> Result<()> {
    let c = EnvelopeColumns::new(envelopes)?;
    let complete: std::result::Result<bool, _> = query_scalar(ENQUEUE)
        .bind(&c.ids)
        .bind(&c.accounts)
        .bind(&c.devices)
        .bind(&c.kinds)
        .bind(&c.source_addresses)
        .bind(&c.source_accounts)
        .bind(&c.source_devices)
        .bind(&c.client_timestamps)
        .bind(&c.server_timestamps)
        .bind(&c.contents)
        .bind(&c.notices)
        .bind(&c.expiries)
        .fetch_one(pool)
        .await;
    match complete {
        Ok(true) => Ok(()),
        // A recipient device does not exist (any more); nothing was queued.
        Ok(false) => Err(StoreError::NoSuchDevice),
        Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NoSuchDevice),
        Err(e) => Err(backend(e)),
    }
}

pub(super) async fn queued(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Envelope>> {
    let rows = query(concat!(
        "SELECT ",
        envelope_columns!(),
        " FROM envelopes
         WHERE account_id = $1 AND device_id = $2 AND seq > coalesce(
             (SELECT seq FROM envelopes WHERE id = $3 AND account_id = $1 AND device_id = $2),
             0)
         ORDER BY seq LIMIT $4"
    ))
    .bind(account.0)
    .bind(device_small(device))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .db()?;
    rows.iter().map(|row| read_envelope(row, 0)).collect()
}

pub(super) async fn queued_count(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
) -> Result<u64> {
    let n: i64 =
        query_scalar("SELECT count(*) FROM envelopes WHERE account_id = $1 AND device_id = $2")
            .bind(account.0)
            .bind(device_small(device))
            .fetch_one(pool)
            .await
            .db()?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn acknowledge(
    pool: &PgPool,
    account: AccountId,
    device: DeviceId,
    ids: &[Uuid],
) -> Result<u64> {
    let deleted =
        query("DELETE FROM envelopes WHERE account_id = $1 AND device_id = $2 AND id = ANY($3)")
            .bind(account.0)
            .bind(device_small(device))
            .bind(ids)
            .execute(pool)
            .await
            .db()?;
    Ok(deleted.rows_affected())
}

pub(super) async fn take_expired(
    pool: &PgPool,
    now: Millis,
    limit: u32,
) -> Result<Vec<QueuedEnvelope>> {
    // SKIP LOCKED: nodes running their expiry tasks at once take disjoint
    // rows, so each sender is told once.
    let rows = query(concat!(
        "DELETE FROM envelopes WHERE seq IN (
             SELECT seq FROM envelopes WHERE expires_at <= $1
             ORDER BY expires_at, seq LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING seq, account_id, expires_at, ",
        envelope_columns!()
    ))
    .bind(expiry(now))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .db()?;
    let mut expired = rows.iter().map(read_expired).collect::<Result<Vec<_>>>()?;
    // RETURNING does not promise an order.
    expired.sort_unstable_by_key(|(expires_at, seq, _)| (*expires_at, *seq));
    Ok(expired.into_iter().map(|(_, _, queued)| queued).collect())
}

/// A row of [`take_expired`]: its expiry, sequence number and envelope.
fn read_expired(row: &PgRow) -> Result<(Millis, i64, QueuedEnvelope)> {
    let queued = QueuedEnvelope {
        account_id: account_id(row.try_get(1).db()?),
        expires_at: expiry_from(row.try_get(2).db()?),
        envelope: read_envelope(row, 3)?,
    };
    Ok((queued.expires_at, row.try_get(0).db()?, queued))
}
