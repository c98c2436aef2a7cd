//! Short-lived state: phone-number verifications, link tokens and
//! provisioning mailboxes. Each take, fill and attempt is one statement or
//! runs under the row's lock, so nodes racing on one row see it change
//! once.

use passerelle_proto::AccountId;
use sqlx_core::query::query;
use sqlx_core::query_as::query_as;
use sqlx_core::query_scalar::query_scalar;
use sqlx_postgres::{PgConnection, PgPool};
use uuid::Uuid;

use super::columns::{
    Db as _, account_id, backend, corrupt, expiry, expiry_from, is_foreign_key_violation, u32_from,
};
use crate::{
    AttemptEffect, MailboxFill, Millis, Result, StoreError, VerificationOutcome,
    VerificationRecord, judge_attempt,
};

pub(super) async fn save_verification(pool: &PgPool, record: &VerificationRecord) -> Result<()> {
    query(
        "INSERT INTO verifications (id, address, code_hash, expires_at, attempts)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE
         SET address = excluded.address, code_hash = excluded.code_hash,
             expires_at = excluded.expires_at, attempts = excluded.attempts",
    )
    .bind(record.id)
    .bind(record.address.to_string())
    .bind(&record.code_hash)
    .bind(expiry(record.expires_at))
    .bind(i64::from(record.attempts))
    .execute(pool)
    .await
    .db()?;
    Ok(())
}

/// A `verifications` row: id, address, code hash, expiry, attempts.
type VerificationRow = (Uuid, String, Vec<u8>, i64, i64);

fn read_verification(row: VerificationRow) -> Result<VerificationRecord> {
    let (id, address, code_hash, expires_at, attempts) = row;
    Ok(VerificationRecord {
        id,
        address: address.parse().map_err(|_| corrupt("address"))?,
        code_hash,
        expires_at: expiry_from(expires_at),
        attempts: u32_from(attempts, "attempts")?,
    })
}

pub(super) async fn verification(pool: &PgPool, id: Uuid) -> Result<Option<VerificationRecord>> {
    query_as::<_, VerificationRow>(
        "SELECT id, address, code_hash, expires_at, attempts FROM verifications WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .db()?
    .map(read_verification)
    .transpose()
}

pub(super) async fn delete_verification(pool: &PgPool, id: Uuid) -> Result<()> {
    query("DELETE FROM verifications WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .db()?;
    Ok(())
}

/// The read, the judgement and the write under the row's lock: concurrent
/// guesses, from any node, are counted one after the other.
pub(super) async fn attempt_verification(
    pool: &PgPool,
    id: Uuid,
    code_hash: &[u8],
    now: Millis,
    max_attempts: u32,
) -> Result<VerificationOutcome> {
    let mut tx = pool.begin().await.db()?;
    let record = query_as::<_, VerificationRow>(
        "SELECT id, address, code_hash, expires_at, attempts FROM verifications
         WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .db()?
    .map(read_verification)
    .transpose()?;
    let Some(record) = record else {
        return Ok(VerificationOutcome::Unknown);
    };
    let (outcome, effect) = judge_attempt(&record, code_hash, now, max_attempts);
    let conn: &mut PgConnection = &mut tx;
    match effect {
        AttemptEffect::Keep => return Ok(outcome),
        AttemptEffect::Delete => {
            query("DELETE FROM verifications WHERE id = $1")
                .bind(id)
                .execute(conn)
                .await
                .db()?;
        }
        AttemptEffect::Count(attempts) => {
            query("UPDATE verifications SET attempts = $2 WHERE id = $1")
                .bind(id)
                .bind(i64::from(attempts))
                .execute(conn)
                .await
                .db()?;
        }
    }
    tx.commit().await.db()?;
    Ok(outcome)
}

pub(super) async fn save_link_token(
    pool: &PgPool,
    token_hash: &[u8],
    account: AccountId,
    expires_at: Millis,
) -> Result<()> {
    let saved = query(
        "INSERT INTO link_tokens (token_hash, account_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (token_hash) DO UPDATE
         SET account_id = excluded.account_id, expires_at = excluded.expires_at",
    )
    .bind(token_hash)
    .bind(account.0)
    .bind(expiry(expires_at))
    .execute(pool)
    .await;
    match saved {
        Ok(_) => Ok(()),
        Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NoSuchAccount),
        Err(e) => Err(backend(e)),
    }
}

pub(super) async fn take_link_token(
    pool: &PgPool,
    token_hash: &[u8],
    now: Millis,
) -> Result<Option<AccountId>> {
    // An expired token is deleted too: it is of no use any more.
    let taken: Option<(Uuid, i64)> =
        query_as("DELETE FROM link_tokens WHERE token_hash = $1 RETURNING account_id, expires_at")
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .db()?;
    Ok(taken
        .filter(|(_, expires_at)| now < expiry_from(*expires_at))
        .map(|(account, _)| account_id(account)))
}

pub(super) async fn open_mailbox(pool: &PgPool, id: Uuid, expires_at: Millis) -> Result<()> {
    query(
        "INSERT INTO mailboxes (id, expires_at, message) VALUES ($1, $2, NULL)
         ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, message = NULL",
    )
    .bind(id)
    .bind(expiry(expires_at))
    .execute(pool)
    .await
    .db()?;
    Ok(())
}

pub(super) async fn fill_mailbox(
    pool: &PgPool,
    id: Uuid,
    message: &[u8],
    now: Millis,
) -> Result<MailboxFill> {
    let filled = query(
        "UPDATE mailboxes SET message = $2
         WHERE id = $1 AND $3 < expires_at AND message IS NULL",
    )
    .bind(id)
    .bind(message)
    .bind(expiry(now))
    .execute(pool)
    .await
    .db()?;
    if filled.rows_affected() > 0 {
        return Ok(MailboxFill::Filled);
    }
    // A statement of its own, with a snapshot taken after the update: a
    // fill that won the race just before is seen.
    let occupied: bool = query_scalar(
        "SELECT EXISTS (SELECT 1 FROM mailboxes
                        WHERE id = $1 AND $2 < expires_at AND message IS NOT NULL)",
    )
    .bind(id)
    .bind(expiry(now))
    .fetch_one(pool)
    .await
    .db()?;
    Ok(if occupied {
        MailboxFill::Occupied
    } else {
        MailboxFill::Missing
    })
}

pub(super) async fn take_mailbox(pool: &PgPool, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>> {
    // A filled or expired mailbox goes; an open one waiting for its
    // message stays.
    let taken: Option<(i64, Option<Vec<u8>>)> = query_as(
        "DELETE FROM mailboxes WHERE id = $1 AND (message IS NOT NULL OR expires_at <= $2)
         RETURNING expires_at, message",
    )
    .bind(id)
    .bind(expiry(now))
    .fetch_optional(pool)
    .await
    .db()?;
    Ok(taken
        .filter(|(expires_at, _)| now < expiry_from(*expires_at))
        .and_then(|(_, message)| message))
}

pub(super) async fn purge_expired(pool: &PgPool, now: Millis) -> Result<u64> {
    let purged: i64 = query_scalar(
        "WITH v AS (DELETE FROM verifications WHERE expires_at <= $1 RETURNING 1),
              l AS (DELETE FROM link_tokens WHERE expires_at <= $1 RETURNING 1),
              m AS (DELETE FROM mailboxes WHERE expires_at <= $1 RETURNING 1)
         SELECT (SELECT count(*) FROM v) + (SELECT count(*) FROM l) + (SELECT count(*) FROM m)",
    )
    .bind(expiry(now))
    .fetch_one(pool)
    .await
    .db()?;
    Ok(u64::try_from(purged).unwrap_or(0))
}
