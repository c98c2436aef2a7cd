//! Contacts and message history.
//!
//! A message is named by its author and the author's timestamp; the pair is
//! unique within a conversation, so a text that arrives twice (a sender's
//! retry in a new envelope) is stored once. Edits, deletes, reactions and
//! receipts change the messages they name.

use passerelle_proto::content::Body;
use passerelle_proto::{AccountId, Address, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

use super::to_i64;
use crate::error::{ClientError, Result};
use crate::types::{Conversation, DeliveryState, HistoryEntry, MessageDirection, ReceiptKind};

/// Records that `address` names `account`. An address that moved to another
/// account is taken from the old one.
pub(crate) fn upsert_contact(
    conn: &Connection,
    account: AccountId,
    address: &Address,
    now: u64,
) -> Result<()> {
    conn.execute(
        "DELETE FROM contacts WHERE address = ?1 AND account_id != ?2",
        params![address.to_string(), account.to_string()],
    )?;
    conn.execute(
        "INSERT INTO contacts (account_id, address, app, handle, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id) DO UPDATE SET
             address = excluded.address, app = excluded.app,
             handle = excluded.handle, updated_at = excluded.updated_at",
        params![
            account.to_string(),
            address.to_string(),
            address.app.as_str(),
            address.handle.as_str(),
            to_i64(now)
        ],
    )?;
    Ok(())
}

/// The account an address names, as last seen.
pub(crate) fn contact_account(conn: &Connection, address: &Address) -> Result<Option<AccountId>> {
    let id: Option<String> = conn
        .query_row(
            "SELECT account_id FROM contacts WHERE address = ?1",
            [address.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    id.map(|id| id.parse().map_err(ClientError::storage))
        .transpose()
}

/// The address of an account, as last seen.
pub(crate) fn contact_address(conn: &Connection, account: AccountId) -> Result<Option<Address>> {
    let address: Option<String> = conn
        .query_row(
            "SELECT address FROM contacts WHERE account_id = ?1",
            [account.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    address
        .map(|a| a.parse().map_err(ClientError::storage))
        .transpose()
}

/// Every contact, newest conversation first.
pub(crate) fn conversations(conn: &Connection) -> Result<Vec<Conversation>> {
    let mut stmt = conn.prepare(
        "SELECT c.account_id, c.address, coalesce(i.verified, 0),
                (SELECT max(sent_at) FROM messages m WHERE m.conversation = c.account_id)
         FROM contacts c LEFT JOIN identities i ON i.account_id = c.account_id
         ORDER BY 4 DESC NULLS LAST, c.address",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (account, address, verified, last) = row?;
        let address: Address = address.parse().map_err(ClientError::storage)?;
        out.push(Conversation {
            account_id: account.parse().map_err(ClientError::storage)?,
            app: address.app.clone(),
            handle: address.handle.clone(),
            address,
            verified,
            last_message_at: last.map(|v| u64::try_from(v).unwrap_or(0)),
        });
    }
    Ok(out)
}

/// The history of the conversation with `peer`, oldest first.
pub(crate) fn history(conn: &Connection, peer: AccountId) -> Result<Vec<HistoryEntry>> {
    let mut stmt = conn.prepare(
        "SELECT id, direction, author, author_device, sent_at, server_timestamp, body, state,
                edited_at
         FROM messages WHERE conversation = ?1 ORDER BY sent_at, id",
    )?;
    let rows = stmt.query_map([peer.to_string()], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<i64>>(8)?,
        ))
    })?;
    let mut reactions =
        conn.prepare("SELECT reactor, emoji FROM reactions WHERE message_id = ?1 ORDER BY 1")?;
    let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut out = Vec::new();
    for row in rows {
        let (id, direction, author, device, sent_at, server_ts, body, state, edited_at) = row?;
        let mut entry_reactions = Vec::new();
        for r in reactions.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
            let (reactor, emoji) = r?;
            entry_reactions.push((reactor.parse().map_err(ClientError::storage)?, emoji));
        }
        out.push(HistoryEntry {
            direction: if direction == "out" {
                MessageDirection::Outgoing
            } else {
                MessageDirection::Incoming
            },
            author: author.parse().map_err(ClientError::storage)?,
            author_device: DeviceId::new(device).map_err(ClientError::storage)?,
            sent_at: as_u64(sent_at),
            server_timestamp: server_ts.map(as_u64),
            body: body
                .map(|b| serde_json::from_str(&b).map_err(ClientError::storage))
                .transpose()?,
            state: DeliveryState::parse(&state)
                .ok_or_else(|| ClientError::Storage(format!("unknown message state {state}")))?,
            edited_at: edited_at.map(as_u64),
            reactions: entry_reactions,
        });
    }
    Ok(out)
}

/// Where a body came from, to file it in the history.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    /// The peer's account: the conversation.
    pub(crate) conversation: AccountId,
    /// Who wrote it.
    pub(crate) direction: MessageDirection,
    /// The author's account.
    pub(crate) author: AccountId,
    /// The author's device.
    pub(crate) author_device: DeviceId,
    /// The author's timestamp.
    pub(crate) sent_at: u64,
    /// When the hub accepted it, when known.
    pub(crate) server_timestamp: Option<u64>,
}

/// Files a body in the history. Returns false when it was already there
/// (the same text by the same author with the same timestamp): the caller
/// then reports nothing.
pub(crate) fn apply_body(conn: &Connection, origin: &Origin, body: &Body) -> Result<bool> {
    let conversation = origin.conversation.to_string();
    let author = origin.author.to_string();
    match body {
        Body::Text { .. } | Body::Reply { .. } => {
            let state = match origin.direction {
                MessageDirection::Incoming => DeliveryState::Received,
                MessageDirection::Outgoing => DeliveryState::Sent,
            };
            let inserted = conn.execute(
                "INSERT OR IGNORE INTO messages
                     (conversation, direction, author, author_device, sent_at,
                      server_timestamp, body, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    conversation,
                    match origin.direction {
                        MessageDirection::Incoming => "in",
                        MessageDirection::Outgoing => "out",
                    },
                    author,
                    origin.author_device.get(),
                    to_i64(origin.sent_at),
                    origin.server_timestamp.map(to_i64),
                    serde_json::to_string(body).map_err(ClientError::storage)?,
                    state.as_str(),
                ],
            )?;
            Ok(inserted == 1)
        }
        Body::Edit { target, text } => {
            if target.author != origin.author {
                tracing::debug!("edit of another author's message ignored");
                return Ok(true);
            }
            let stored: Option<String> = conn
                .query_row(
                    "SELECT body FROM messages
                     WHERE conversation = ?1 AND author = ?2 AND sent_at = ?3
                       AND body IS NOT NULL AND coalesce(edited_at, 0) < ?4",
                    params![
                        conversation,
                        author,
                        to_i64(target.sent_at),
                        to_i64(origin.sent_at)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(stored) = stored else {
                return Ok(true);
            };
            let edited = match serde_json::from_str::<Body>(&stored) {
                Ok(Body::Reply { quote, .. }) => Body::Reply {
                    text: text.clone(),
                    quote,
                },
                _ => Body::Text { text: text.clone() },
            };
            conn.execute(
                "UPDATE messages SET body = ?4, edited_at = ?5
                 WHERE conversation = ?1 AND author = ?2 AND sent_at = ?3",
                params![
                    conversation,
                    author,
                    to_i64(target.sent_at),
                    serde_json::to_string(&edited).map_err(ClientError::storage)?,
                    to_i64(origin.sent_at)
                ],
            )?;
            Ok(true)
        }
        Body::Delete { target } => {
            if target.author != origin.author {
                tracing::debug!("delete of another author's message ignored");
                return Ok(true);
            }
            conn.execute(
                "UPDATE messages SET body = NULL
                 WHERE conversation = ?1 AND author = ?2 AND sent_at = ?3",
                params![conversation, author, to_i64(target.sent_at)],
            )?;
            conn.execute(
                "DELETE FROM reactions WHERE message_id IN
                     (SELECT id FROM messages
                      WHERE conversation = ?1 AND author = ?2 AND sent_at = ?3)",
                params![conversation, author, to_i64(target.sent_at)],
            )?;
            Ok(true)
        }
        Body::Reaction {
            target,
            emoji,
            remove,
        } => {
            let message: Option<i64> = conn
                .query_row(
                    "SELECT id FROM messages WHERE conversation = ?1 AND author = ?2
                       AND sent_at = ?3",
                    params![
                        conversation,
                        target.author.to_string(),
                        to_i64(target.sent_at)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(message) = message {
                if *remove {
                    conn.execute(
                        "DELETE FROM reactions WHERE message_id = ?1 AND reactor = ?2
                           AND emoji = ?3",
                        params![message, author, emoji],
                    )?;
                } else {
                    conn.execute(
                        "INSERT INTO reactions (message_id, reactor, emoji) VALUES (?1, ?2, ?3)
                         ON CONFLICT (message_id, reactor) DO UPDATE SET emoji = excluded.emoji",
                        params![message, author, emoji],
                    )?;
                }
            }
            Ok(true)
        }
        Body::DeliveryReceipt { sent_at } => {
            apply_receipt(conn, origin, ReceiptKind::Delivery, sent_at)?;
            Ok(true)
        }
        Body::ReadReceipt { sent_at } => {
            apply_receipt(conn, origin, ReceiptKind::Read, sent_at)?;
            Ok(true)
        }
        // Typing is never stored; transcripts are unwrapped by the caller;
        // bodies of newer versions are reported but not stored.
        _ => Ok(true),
    }
}

/// A receipt from the peer updates our outgoing messages; our own receipt
/// (sent from this device or, through a transcript, another one) marks the
/// peer's messages read.
fn apply_receipt(
    conn: &Connection,
    origin: &Origin,
    kind: ReceiptKind,
    sent_at: &[u64],
) -> Result<()> {
    let conversation = origin.conversation.to_string();
    for &ts in sent_at {
        match (origin.direction, kind) {
            (MessageDirection::Incoming, ReceiptKind::Delivery) => conn.execute(
                "UPDATE messages SET state = 'delivered'
                 WHERE conversation = ?1 AND direction = 'out' AND sent_at = ?2
                   AND state = 'sent'",
                params![conversation, to_i64(ts)],
            )?,
            (MessageDirection::Incoming, ReceiptKind::Read) => conn.execute(
                "UPDATE messages SET state = 'read'
                 WHERE conversation = ?1 AND direction = 'out' AND sent_at = ?2
                   AND state IN ('sent', 'delivered')",
                params![conversation, to_i64(ts)],
            )?,
            (MessageDirection::Outgoing, ReceiptKind::Read) => conn.execute(
                "UPDATE messages SET state = 'read'
                 WHERE conversation = ?1 AND direction = 'in' AND sent_at = ?2",
                params![conversation, to_i64(ts)],
            )?,
            (MessageDirection::Outgoing, ReceiptKind::Delivery) => 0,
        };
    }
    Ok(())
}

/// Marks an outgoing message expired on the hub.
pub(crate) fn mark_expired(conn: &Connection, peer: AccountId, sent_at: u64) -> Result<()> {
    conn.execute(
        "UPDATE messages SET state = 'expired'
         WHERE conversation = ?1 AND direction = 'out' AND sent_at = ?2",
        params![peer.to_string(), to_i64(sent_at)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use passerelle_proto::content::MessageRef;

    use super::*;
    use crate::store::LocalStore;

    fn origin(conversation: AccountId, author: AccountId, sent_at: u64) -> Origin {
        Origin {
            conversation,
            direction: if conversation == author {
                MessageDirection::Incoming
            } else {
                MessageDirection::Outgoing
            },
            author,
            author_device: DeviceId::PRIMARY,
            sent_at,
            server_timestamp: Some(sent_at + 1),
        }
    }

    fn text(t: &str) -> Body {
        Body::Text { text: t.into() }
    }

    #[test]
    fn contacts_round_trip_and_move() {
        let db = LocalStore::open_in_memory().unwrap();
        let (a, b) = (AccountId::random(), AccountId::random());
        let bob: Address = "bob@parley".parse().unwrap();
        upsert_contact(&db.conn, a, &bob, 1).unwrap();
        assert_eq!(contact_account(&db.conn, &bob).unwrap(), Some(a));
        assert_eq!(contact_address(&db.conn, a).unwrap(), Some(bob.clone()));
        // The address now names another account.
        upsert_contact(&db.conn, b, &bob, 2).unwrap();
        assert_eq!(contact_account(&db.conn, &bob).unwrap(), Some(b));
        assert_eq!(contact_address(&db.conn, a).unwrap(), None);
        let list = conversations(&db.conn).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].account_id, b);
        assert_eq!(list[0].app.as_str(), "parley");
        assert_eq!(list[0].handle.as_str(), "bob");
        assert!(!list[0].verified);
        assert_eq!(list[0].last_message_at, None);
    }

    #[test]
    fn messages_round_trip_and_drop_duplicates() {
        let db = LocalStore::open_in_memory().unwrap();
        let (me, peer) = (AccountId::random(), AccountId::random());
        upsert_contact(&db.conn, peer, &"bob@parley".parse().unwrap(), 1).unwrap();
        assert!(apply_body(&db.conn, &origin(peer, peer, 10), &text("hi")).unwrap());
        assert!(!apply_body(&db.conn, &origin(peer, peer, 10), &text("hi")).unwrap());
        let quote = MessageRef {
            author: peer,
            sent_at: 10,
        };
        let reply = Body::Reply {
            text: "hello".into(),
            quote: quote.clone(),
        };
        assert!(apply_body(&db.conn, &origin(peer, me, 20), &reply).unwrap());

        let h = history(&db.conn, peer).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].direction, MessageDirection::Incoming);
        assert_eq!(h[0].author, peer);
        assert_eq!(h[0].body, Some(text("hi")));
        assert_eq!(h[0].state, DeliveryState::Received);
        assert_eq!(h[0].server_timestamp, Some(11));
        assert_eq!(h[0].message_ref(), quote);
        assert_eq!(h[1].direction, MessageDirection::Outgoing);
        assert_eq!(h[1].body, Some(reply));
        assert_eq!(h[1].state, DeliveryState::Sent);
        assert_eq!(
            conversations(&db.conn).unwrap()[0].last_message_at,
            Some(20)
        );
    }

    #[test]
    fn edits_deletes_reactions_and_receipts() {
        let db = LocalStore::open_in_memory().unwrap();
        let (me, peer) = (AccountId::random(), AccountId::random());
        apply_body(&db.conn, &origin(peer, me, 10), &text("draft")).unwrap();
        apply_body(&db.conn, &origin(peer, peer, 11), &text("theirs")).unwrap();
        let mine = MessageRef {
            author: me,
            sent_at: 10,
        };
        let theirs = MessageRef {
            author: peer,
            sent_at: 11,
        };
        let edit = Body::Edit {
            target: mine.clone(),
            text: "final".into(),
        };
        apply_body(&db.conn, &origin(peer, me, 12), &edit).unwrap();
        // The peer may not edit our message.
        let forged = Body::Edit {
            target: mine.clone(),
            text: "forged".into(),
        };
        apply_body(&db.conn, &origin(peer, peer, 13), &forged).unwrap();
        let h = history(&db.conn, peer).unwrap();
        assert_eq!(h[0].body, Some(text("final")));
        assert_eq!(h[0].edited_at, Some(12));

        let react = Body::Reaction {
            target: mine.clone(),
            emoji: "👍".into(),
            remove: false,
        };
        apply_body(&db.conn, &origin(peer, peer, 14), &react).unwrap();
        assert_eq!(
            history(&db.conn, peer).unwrap()[0].reactions,
            vec![(peer, "👍".to_string())]
        );
        let unreact = Body::Reaction {
            target: mine.clone(),
            emoji: "👍".into(),
            remove: true,
        };
        apply_body(&db.conn, &origin(peer, peer, 15), &unreact).unwrap();
        assert!(history(&db.conn, peer).unwrap()[0].reactions.is_empty());

        let delivered = Body::DeliveryReceipt { sent_at: vec![10] };
        apply_body(&db.conn, &origin(peer, peer, 16), &delivered).unwrap();
        assert_eq!(
            history(&db.conn, peer).unwrap()[0].state,
            DeliveryState::Delivered
        );
        let read = Body::ReadReceipt { sent_at: vec![10] };
        apply_body(&db.conn, &origin(peer, peer, 17), &read).unwrap();
        assert_eq!(
            history(&db.conn, peer).unwrap()[0].state,
            DeliveryState::Read
        );
        // A late delivery receipt does not go back.
        apply_body(&db.conn, &origin(peer, peer, 18), &delivered).unwrap();
        assert_eq!(
            history(&db.conn, peer).unwrap()[0].state,
            DeliveryState::Read
        );
        // Our read receipt marks their message read.
        let our_read = Body::ReadReceipt { sent_at: vec![11] };
        apply_body(&db.conn, &origin(peer, me, 19), &our_read).unwrap();
        assert_eq!(
            history(&db.conn, peer).unwrap()[1].state,
            DeliveryState::Read
        );

        let delete = Body::Delete { target: theirs };
        apply_body(&db.conn, &origin(peer, peer, 20), &delete).unwrap();
        assert_eq!(history(&db.conn, peer).unwrap()[1].body, None);

        mark_expired(&db.conn, peer, 10).unwrap();
        assert_eq!(
            history(&db.conn, peer).unwrap()[0].state,
            DeliveryState::Expired
        );
    }
}
