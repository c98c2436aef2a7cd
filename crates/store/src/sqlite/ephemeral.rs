//! Short-lived state: phone-number verifications, link tokens and
//! provisioning mailboxes.

use passerelle_proto::AccountId;
use rusqlite::{Connection, OptionalExtension as _, Row, params};
use uuid::Uuid;

use super::columns::{Db as _, account_blob, account_id, corrupt, expiry, expiry_from, u32_from};
use crate::{
    AttemptEffect, MailboxFill, Millis, Result, StoreError, VerificationOutcome,
    VerificationRecord, judge_attempt,
};

pub(super) fn save_verification(conn: &Connection, record: &VerificationRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO verifications (id, address, code_hash, expires_at, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE
         SET address = excluded.address, code_hash = excluded.code_hash,
             expires_at = excluded.expires_at, attempts = excluded.attempts",
    )
    .db()?
    .execute(params![
        record.id.as_bytes(),
        record.address.to_string(),
        record.code_hash,
        expiry(record.expires_at),
        record.attempts,
    ])
    .db()?;
    Ok(())
}

fn read_verification(row: &Row<'_>) -> Result<VerificationRecord> {
    let address: String = row.get(1).db()?;
    Ok(VerificationRecord {
        id: Uuid::from_bytes(row.get(0).db()?),
        address: address.parse().map_err(|_| corrupt("address"))?,
        code_hash: row.get(2).db()?,
        expires_at: expiry_from(row.get(3).db()?),
        attempts: u32_from(row.get(4).db()?, "attempts")?,
    })
}

pub(super) fn verification(conn: &Connection, id: Uuid) -> Result<Option<VerificationRecord>> {
    conn.prepare_cached(
        "SELECT id, address, code_hash, expires_at, attempts FROM verifications WHERE id = ?1",
    )
    .db()?
    .query_row([id.as_bytes()], |row| Ok(read_verification(row)))
    .optional()
    .db()?
    .transpose()
}

pub(super) fn delete_verification(conn: &Connection, id: Uuid) -> Result<()> {
    conn.prepare_cached("DELETE FROM verifications WHERE id = ?1")
        .db()?
        .execute([id.as_bytes()])
        .db()?;
    Ok(())
}

/// Runs on the writer: the read, the judgement and the write are one
/// critical section.
pub(super) fn attempt_verification(
    conn: &Connection,
    id: Uuid,
    code_hash: &[u8],
    now: Millis,
    max_attempts: u32,
) -> Result<VerificationOutcome> {
    let Some(record) = verification(conn, id)? else {
        return Ok(VerificationOutcome::Unknown);
    };
    let (outcome, effect) = judge_attempt(&record, code_hash, now, max_attempts);
    match effect {
        AttemptEffect::Keep => {}
        AttemptEffect::Delete => delete_verification(conn, id)?,
        AttemptEffect::Count(attempts) => {
            conn.prepare_cached("UPDATE verifications SET attempts = ?2 WHERE id = ?1")
                .db()?
                .execute(params![id.as_bytes(), attempts])
                .db()?;
        }
    }
    Ok(outcome)
}

pub(super) fn save_link_token(
    conn: &Connection,
    token_hash: &[u8],
    account: AccountId,
    expires_at: Millis,
) -> Result<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")
        .db()?
        .exists([account_blob(&account)])
        .db()?;
    if !exists {
        return Err(StoreError::NoSuchAccount);
    }
    conn.prepare_cached(
        "INSERT INTO link_tokens (token_hash, account_id, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (token_hash) DO UPDATE
         SET account_id = excluded.account_id, expires_at = excluded.expires_at",
    )
    .db()?
    .execute(params![
        token_hash,
        account_blob(&account),
        expiry(expires_at)
    ])
    .db()?;
    Ok(())
}

pub(super) fn take_link_token(
    conn: &Connection,
    token_hash: &[u8],
    now: Millis,
) -> Result<Option<AccountId>> {
    // An expired token is deleted too: it is of no use any more.
    let taken: Option<([u8; 16], i64)> = conn
        .prepare_cached(
            "DELETE FROM link_tokens WHERE token_hash = ?1 RETURNING account_id, expires_at",
        )
        .db()?
        .query_row([token_hash], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .db()?;
    Ok(taken
        .filter(|(_, expires_at)| now < expiry_from(*expires_at))
        .map(|(account, _)| account_id(account)))
}

pub(super) fn open_mailbox(conn: &Connection, id: Uuid, expires_at: Millis) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO mailboxes (id, expires_at, message) VALUES (?1, ?2, NULL)
         ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, message = NULL",
    )
    .db()?
    .execute(params![id.as_bytes(), expiry(expires_at)])
    .db()?;
    Ok(())
}

pub(super) fn fill_mailbox(
    conn: &Connection,
    id: Uuid,
    message: &[u8],
    now: Millis,
) -> Result<MailboxFill> {
    let filled = conn
        .prepare_cached(
            "UPDATE mailboxes SET message = ?2
             WHERE id = ?1 AND ?3 < expires_at AND message IS NULL",
        )
        .db()?
        .execute(params![id.as_bytes(), message, expiry(now)])
        .db()?;
    if filled > 0 {
        return Ok(MailboxFill::Filled);
    }
    let occupied = conn
        .prepare_cached(
            "SELECT 1 FROM mailboxes WHERE id = ?1 AND ?2 < expires_at AND message IS NOT NULL",
        )
        .db()?
        .exists(params![id.as_bytes(), expiry(now)])
        .db()?;
    Ok(if occupied {
        MailboxFill::Occupied
    } else {
        MailboxFill::Missing
    })
}

pub(super) fn purge_expired(conn: &Connection, now: Millis) -> Result<u64> {
    let mut purged = 0;
    for sql in [
        "DELETE FROM verifications WHERE expires_at <= ?1",
        "DELETE FROM link_tokens WHERE expires_at <= ?1",
        "DELETE FROM mailboxes WHERE expires_at <= ?1",
    ] {
        let n = conn.prepare_cached(sql).db()?.execute([expiry(now)]).db()?;
        purged += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(purged)
}

pub(super) fn take_mailbox(conn: &Connection, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>> {
    let mailbox: Option<(i64, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT expires_at, message FROM mailboxes WHERE id = ?1")
        .db()?
        .query_row([id.as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .db()?;
    let Some((expires_at, message)) = mailbox else {
        return Ok(None);
    };
    let expired = now >= expiry_from(expires_at);
    if message.is_none() && !expired {
        // Still waiting to be filled: it stays open.
        return Ok(None);
    }
    conn.prepare_cached("DELETE FROM mailboxes WHERE id = ?1")
        .db()?
        .execute([id.as_bytes()])
        .db()?;
    Ok(if expired { None } else { message })
}
