//! passerelle-signal's store traits over the local database.
//!
//! [`SignalStore`] borrows a connection (usually a transaction or a
//! savepoint, so that an operation's writes commit or roll back together).
//! Records keep libsignal's serialized formats.
//!
//! Trust policy: trust on first use, except for verified keys. An identity
//! key never seen is stored as the first-seen key; sending is trusted only
//! to the key stored, so that a session built on a replaced key is not
//! used. While the stored key is unverified, receiving is always trusted
//! (the message already proves the sender holds the key) and the client
//! stores a new key it decides to accept (from a bundle) with
//! [`SignalStore::save_identity`] first; a replaced key clears the
//! `verified` flag and is reported in [`SignalStore::changed`].
//!
//! Once the user verified the stored key, a different key is refused in
//! every direction ([`SignalStore::save_identity`] fails with
//! `UntrustedIdentity` and stores nothing) until the user accepts it with
//! [`accept_identity`].

use std::cell::Cell;

use passerelle_proto::AccountId;
use passerelle_signal::prekeys::{KyberPreKeyId, PreKeyId, SignedPreKeyId};
use passerelle_signal::store::{
    Direction, IdentityChange, IdentityKeyStore, KyberPreKeyStore, PreKeyStore, SessionStore,
    SignedPreKeyStore,
};
use passerelle_signal::{
    Error as SignalError, IdentityKey, IdentityKeyPair, KyberPreKeyRecord, PreKeyRecord,
    ProtocolAddress, PublicKey, Result as SignalResult, SessionRecord, SignedPreKeyRecord,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{LocalIdentity, to_i64};
use crate::error::Result;

/// The Signal stores over one connection.
pub(crate) struct SignalStore<'c> {
    conn: &'c Connection,
    identity: LocalIdentity,
    now: u64,
    /// Accounts whose identity key was replaced by this store's writes.
    pub(crate) changed: Vec<String>,
    backend_failed: Cell<bool>,
}

impl<'c> SignalStore<'c> {
    /// The stores of this device, over `conn`; `now` (ms) stamps writes.
    pub(crate) fn new(conn: &'c Connection, identity: LocalIdentity, now: u64) -> Self {
        Self {
            conn,
            identity,
            now,
            changed: Vec::new(),
            backend_failed: Cell::new(false),
        }
    }

    /// Whether an error came from the database rather than from the
    /// message: such an envelope must not be acknowledged.
    pub(crate) fn backend_failed(&self) -> bool {
        self.backend_failed.get()
    }

    /// The stored key of `address`'s account, and whether it is verified.
    fn stored(&self, address: &ProtocolAddress) -> SignalResult<Option<(IdentityKey, bool)>> {
        let row: Option<(Vec<u8>, bool)> = self
            .conn
            .query_row(
                "SELECT identity_key, verified FROM identities WHERE account_id = ?1",
                [address.name()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        row.map(|(k, verified)| Ok((IdentityKey::deserialize(&k)?, verified)))
            .transpose()
    }

    fn fail(&self, e: rusqlite::Error) -> SignalError {
        self.backend_failed.set(true);
        SignalError::Storage(format!("local database: {e}"))
    }

    /// Reads the serialized record with this id from one of the prekey
    /// tables and decodes it; the bytes are wiped afterwards.
    fn record<T>(
        &self,
        table: &'static str,
        id: u32,
        decode: fn(&[u8]) -> SignalResult<T>,
    ) -> SignalResult<Option<T>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                &format!("SELECT record FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        bytes
            .map(zeroize::Zeroizing::new)
            .map(|b| decode(&b))
            .transpose()
    }
}

impl IdentityKeyStore for SignalStore<'_> {
    fn identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.identity.pair.clone())
    }

    fn local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.identity.registration_id)
    }

    fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let key = identity.serialize();
        let stored = self.stored(address)?;
        match stored {
            None => {
                self.conn
                    .execute(
                        "INSERT INTO identities (account_id, identity_key, first_seen_key,
                                                 verified, first_seen_at)
                         VALUES (?1, ?2, ?2, 0, ?3)",
                        params![address.name(), key.as_slice(), to_i64(self.now)],
                    )
                    .map_err(|e| self.fail(e))?;
                Ok(IdentityChange::NewOrUnchanged)
            }
            Some((old, _)) if old == *identity => Ok(IdentityChange::NewOrUnchanged),
            Some((_, true)) => {
                tracing::warn!(
                    peer = address.name(),
                    "a verified identity key was replaced: refused"
                );
                Err(SignalError::UntrustedIdentity(address.clone()))
            }
            Some((_, false)) => {
                self.conn
                    .execute(
                        "UPDATE identities SET identity_key = ?2, verified = 0, changed_at = ?3
                         WHERE account_id = ?1",
                        params![address.name(), key.as_slice(), to_i64(self.now)],
                    )
                    .map_err(|e| self.fail(e))?;
                tracing::warn!(peer = address.name(), "peer identity key changed");
                self.changed.push(address.name().to_owned());
                Ok(IdentityChange::ReplacedExisting)
            }
        }
    }

    fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> SignalResult<bool> {
        Ok(match (direction, self.stored(address)?) {
            (_, None) => true,
            (_, Some((stored, _))) if stored == *identity => true,
            (Direction::Receiving, Some((_, verified))) => !verified,
            (Direction::Sending, Some(_)) => false,
        })
    }

    fn identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.stored(address)?.map(|(key, _)| key))
    }
}

impl PreKeyStore for SignalStore<'_> {
    fn pre_key(&self, id: PreKeyId) -> SignalResult<Option<PreKeyRecord>> {
        self.record("pre_keys", id, PreKeyRecord::deserialize)
    }

    fn save_pre_key(&mut self, record: &PreKeyRecord) -> SignalResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO pre_keys (id, record) VALUES (?1, ?2)",
                params![record.id, record.serialize().as_slice()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn remove_pre_key(&mut self, id: PreKeyId) -> SignalResult<()> {
        self.conn
            .execute("DELETE FROM pre_keys WHERE id = ?1", [id])
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

impl SignedPreKeyStore for SignalStore<'_> {
    fn signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<Option<SignedPreKeyRecord>> {
        self.record("signed_pre_keys", id, SignedPreKeyRecord::deserialize)
    }

    fn save_signed_pre_key(&mut self, record: &SignedPreKeyRecord) -> SignalResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO signed_pre_keys (id, record, created_at)
                 VALUES (?1, ?2, ?3)",
                params![
                    record.id,
                    record.serialize().as_slice(),
                    to_i64(record.timestamp)
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

impl KyberPreKeyStore for SignalStore<'_> {
    fn kyber_pre_key(&self, id: KyberPreKeyId) -> SignalResult<Option<KyberPreKeyRecord>> {
        self.record("kyber_pre_keys", id, KyberPreKeyRecord::deserialize)
    }

    fn save_kyber_pre_key(
        &mut self,
        record: &KyberPreKeyRecord,
        last_resort: bool,
    ) -> SignalResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO kyber_pre_keys (id, record, last_resort, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.id,
                    record.serialize().as_slice(),
                    last_resort,
                    to_i64(record.timestamp)
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn mark_kyber_pre_key_used(
        &mut self,
        id: KyberPreKeyId,
        signed_pre_key_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> SignalResult<()> {
        let last_resort: Option<bool> = self
            .conn
            .query_row(
                "SELECT last_resort FROM kyber_pre_keys WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        match last_resort {
            Some(true) => {
                let inserted = self
                    .conn
                    .execute(
                        "INSERT OR IGNORE INTO kyber_last_resort_uses
                             (kyber_pre_key_id, signed_pre_key_id, base_key)
                         VALUES (?1, ?2, ?3)",
                        params![id, signed_pre_key_id, base_key.serialize().as_slice()],
                    )
                    .map_err(|e| self.fail(e))?;
                if inserted == 0 {
                    return Err(SignalError::Storage(format!(
                        "last-resort Kyber prekey {id} reused with the same base key"
                    )));
                }
            }
            Some(false) => {
                self.conn
                    .execute("DELETE FROM kyber_pre_keys WHERE id = ?1", [id])
                    .map_err(|e| self.fail(e))?;
            }
            None => {}
        }
        Ok(())
    }
}

impl SessionStore for SignalStore<'_> {
    fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT record FROM sessions WHERE account_id = ?1 AND device_id = ?2",
                params![address.name(), address.device_id()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        bytes.map(|b| SessionRecord::deserialize(&b)).transpose()
    }

    fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> SignalResult<()> {
        self.conn
            .execute(
                "INSERT INTO sessions (account_id, device_id, record, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id, device_id)
                 DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                params![
                    address.name(),
                    address.device_id(),
                    record.serialize(),
                    to_i64(self.now)
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

/// The devices of `account` this device has session records with, and
/// whether each has a current session that can send.
pub(crate) fn session_devices(conn: &Connection, account: AccountId) -> Result<Vec<(u32, bool)>> {
    let mut stmt =
        conn.prepare("SELECT device_id, record FROM sessions WHERE account_id = ?1 ORDER BY 1")?;
    let rows = stmt.query_map([account.to_string()], |r| {
        Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (device, record) = row?;
        let usable = SessionRecord::deserialize(&record)
            .map(|r| r.has_current_session())
            .unwrap_or(false);
        out.push((device, usable));
    }
    Ok(out)
}

/// Forgets the sessions with a device (it no longer exists).
pub(crate) fn delete_session(conn: &Connection, account: AccountId, device: u32) -> Result<()> {
    conn.execute(
        "DELETE FROM sessions WHERE account_id = ?1 AND device_id = ?2",
        params![account.to_string(), device],
    )?;
    Ok(())
}

/// Archives the current session with a device (it re-registered): the next
/// message needs a new session, while late messages on the old one still
/// decrypt.
pub(crate) fn archive_session(
    conn: &Connection,
    account: AccountId,
    device: u32,
    now: u64,
) -> Result<()> {
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT record FROM sessions WHERE account_id = ?1 AND device_id = ?2",
            params![account.to_string(), device],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(bytes) = bytes {
        let mut record = SessionRecord::deserialize(&bytes)?;
        record.archive_current_state();
        conn.execute(
            "UPDATE sessions SET record = ?3, updated_at = ?4
             WHERE account_id = ?1 AND device_id = ?2",
            params![account.to_string(), device, record.serialize(), to_i64(now)],
        )?;
    }
    Ok(())
}

/// A peer's stored identity: (current key, first-seen key, verified).
pub(crate) fn peer_identity(
    conn: &Connection,
    account: AccountId,
) -> Result<Option<(IdentityKey, IdentityKey, bool)>> {
    let row: Option<(Vec<u8>, Vec<u8>, bool)> = conn
        .query_row(
            "SELECT identity_key, first_seen_key, verified FROM identities WHERE account_id = ?1",
            [account.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(key, first, verified)| {
        Ok((
            IdentityKey::deserialize(&key)?,
            IdentityKey::deserialize(&first)?,
            verified,
        ))
    })
    .transpose()
}

/// Marks a peer's current identity key verified; false if none is stored.
pub(crate) fn set_verified(conn: &Connection, account: AccountId, verified: bool) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE identities SET verified = ?2 WHERE account_id = ?1",
        params![account.to_string(), verified],
    )? == 1)
}

/// Stores `key` as the identity of `account` because the user accepted it:
/// it replaces a verified key too, and is stored unverified.
pub(crate) fn accept_identity(
    conn: &Connection,
    account: AccountId,
    key: &IdentityKey,
    now: u64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO identities (account_id, identity_key, first_seen_key, verified, first_seen_at)
         VALUES (?1, ?2, ?2, 0, ?3)
         ON CONFLICT (account_id) DO UPDATE SET
             identity_key = excluded.identity_key,
             verified = 0,
             changed_at = CASE WHEN identities.identity_key = excluded.identity_key
                               THEN identities.changed_at ELSE excluded.first_seen_at END",
        params![account.to_string(), key.serialize().as_slice(), to_i64(now)],
    )?;
    Ok(())
}

/// How many one-time prekeys of each kind this device still holds.
#[cfg(test)]
pub(crate) fn local_key_counts(conn: &Connection) -> Result<(u32, u32)> {
    Ok((
        conn.query_row("SELECT count(*) FROM pre_keys", [], |r| r.get(0))?,
        conn.query_row(
            "SELECT count(*) FROM kyber_pre_keys WHERE last_resort = 0",
            [],
            |r| r.get(0),
        )?,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use passerelle_signal::{KemPublicKey, PreKeyBundle, process_prekey_bundle};
    use rand::rngs::OsRng;

    use super::*;
    use crate::store::LocalStore;
    use crate::store::tests::identity;

    fn addr(account: AccountId, device: u32) -> ProtocolAddress {
        ProtocolAddress::new(account.to_string(), device)
    }

    #[test]
    fn prekey_records_round_trip() {
        let db = LocalStore::open_in_memory().unwrap();
        let me = identity();
        let mut store = SignalStore::new(&db.conn, me.clone(), 1);

        let pre = PreKeyRecord::generate(7, &mut OsRng);
        store.save_pre_key(&pre).unwrap();
        let back = store.pre_key(7).unwrap().unwrap();
        assert_eq!(back.key_pair.public, pre.key_pair.public);
        assert_eq!(*back.serialize(), *pre.serialize());
        assert!(store.pre_key(8).unwrap().is_none());
        store.remove_pre_key(7).unwrap();
        assert!(store.pre_key(7).unwrap().is_none());

        let signed = SignedPreKeyRecord::generate(3, 99, &me.pair, &mut OsRng);
        store.save_signed_pre_key(&signed).unwrap();
        let back = store.signed_pre_key(3).unwrap().unwrap();
        assert_eq!(*back.serialize(), *signed.serialize());
        assert_eq!(back.timestamp, 99);

        let one_time = KyberPreKeyRecord::generate(5, 1, &me.pair, &mut OsRng);
        let last_resort = KyberPreKeyRecord::generate(6, 1, &me.pair, &mut OsRng);
        store.save_kyber_pre_key(&one_time, false).unwrap();
        store.save_kyber_pre_key(&last_resort, true).unwrap();
        assert_eq!(
            *store.kyber_pre_key(5).unwrap().unwrap().serialize(),
            *one_time.serialize()
        );
        assert_eq!(local_key_counts(&db.conn).unwrap(), (0, 1));
        let base = passerelle_signal::KeyPair::generate(&mut OsRng).public;
        // A one-time key is removed once used.
        store.mark_kyber_pre_key_used(5, 3, &base).unwrap();
        assert!(store.kyber_pre_key(5).unwrap().is_none());
        // A last-resort key stays, but refuses the same base key twice.
        store.mark_kyber_pre_key_used(6, 3, &base).unwrap();
        assert!(store.kyber_pre_key(6).unwrap().is_some());
        assert!(store.mark_kyber_pre_key_used(6, 3, &base).is_err());
        assert!(!store.backend_failed());
        let other = passerelle_signal::KeyPair::generate(&mut OsRng).public;
        store.mark_kyber_pre_key_used(6, 3, &other).unwrap();
    }

    #[test]
    fn identities_trust_on_first_use_and_report_changes() {
        let db = LocalStore::open_in_memory().unwrap();
        let mut store = SignalStore::new(&db.conn, identity(), 1);
        let peer = AccountId::random();
        let a = addr(peer, 1);
        let first = *IdentityKeyPair::generate(&mut OsRng).identity_key();
        let second = *IdentityKeyPair::generate(&mut OsRng).identity_key();

        assert!(store.identity(&a).unwrap().is_none());
        assert!(
            store
                .is_trusted_identity(&a, &first, Direction::Sending)
                .unwrap()
        );
        assert_eq!(
            store.save_identity(&a, &first).unwrap(),
            IdentityChange::NewOrUnchanged
        );
        assert_eq!(store.identity(&a).unwrap(), Some(first));
        // Identities are per account: another device sees the same one.
        assert_eq!(store.identity(&addr(peer, 2)).unwrap(), Some(first));
        assert!(set_verified(&db.conn, peer, true).unwrap());
        assert_eq!(
            peer_identity(&db.conn, peer).unwrap(),
            Some((first, first, true))
        );

        // A verified key is not replaced silently: refused both ways, and
        // nothing is stored.
        for direction in [Direction::Sending, Direction::Receiving] {
            assert!(!store.is_trusted_identity(&a, &second, direction).unwrap());
        }
        assert!(matches!(
            store.save_identity(&a, &second),
            Err(SignalError::UntrustedIdentity(refused)) if refused == a
        ));
        assert!(!store.backend_failed());
        assert!(store.changed.is_empty());
        assert_eq!(
            peer_identity(&db.conn, peer).unwrap(),
            Some((first, first, true))
        );

        // Unverified: trust on first use, receiving always trusted.
        assert!(set_verified(&db.conn, peer, false).unwrap());
        assert!(
            !store
                .is_trusted_identity(&a, &second, Direction::Sending)
                .unwrap()
        );
        assert!(
            store
                .is_trusted_identity(&a, &second, Direction::Receiving)
                .unwrap()
        );
        assert_eq!(
            store.save_identity(&a, &second).unwrap(),
            IdentityChange::ReplacedExisting
        );
        assert_eq!(store.changed, vec![peer.to_string()]);
        // The change cleared the verified flag; the first-seen key stays.
        assert_eq!(
            peer_identity(&db.conn, peer).unwrap(),
            Some((second, first, false))
        );
        assert!(!set_verified(&db.conn, AccountId::random(), true).unwrap());

        // Accepting a key replaces even a verified one, unverified.
        assert!(set_verified(&db.conn, peer, true).unwrap());
        accept_identity(&db.conn, peer, &first, 2).unwrap();
        assert_eq!(
            peer_identity(&db.conn, peer).unwrap(),
            Some((first, first, false))
        );
        let stranger = AccountId::random();
        accept_identity(&db.conn, stranger, &second, 2).unwrap();
        assert_eq!(
            peer_identity(&db.conn, stranger).unwrap(),
            Some((second, second, false))
        );
    }

    #[test]
    fn sessions_round_trip_archive_and_delete() {
        let db = LocalStore::open_in_memory().unwrap();
        let alice = identity();
        let mut store = SignalStore::new(&db.conn, alice, 1);

        // Bob's keys, to build a real session.
        let bob = IdentityKeyPair::generate(&mut OsRng);
        let signed = SignedPreKeyRecord::generate(1, 0, &bob, &mut OsRng);
        let kyber = KyberPreKeyRecord::generate(1, 0, &bob, &mut OsRng);
        let bundle = PreKeyBundle {
            registration_id: 77,
            device_id: 2,
            pre_key: None,
            signed_pre_key_id: 1,
            signed_pre_key: signed.key_pair.public,
            signed_pre_key_signature: signed.signature.to_vec(),
            kyber_pre_key_id: 1,
            kyber_pre_key: KemPublicKey::deserialize(&kyber.key_pair.public.serialize()).unwrap(),
            kyber_pre_key_signature: kyber.signature.to_vec(),
            identity_key: *bob.identity_key(),
        };
        let peer = AccountId::random();
        let a = addr(peer, 2);
        let local = addr(AccountId::random(), 1);
        process_prekey_bundle(
            &a,
            &local,
            &mut store,
            &bundle,
            SystemTime::now(),
            &mut OsRng,
        )
        .unwrap();
        let record = store.load_session(&a).unwrap().unwrap();
        assert!(record.has_current_session());
        assert_eq!(record.remote_registration_id(), Some(77));
        assert_eq!(record.serialize(), {
            store.store_session(&a, &record).unwrap();
            store.load_session(&a).unwrap().unwrap().serialize()
        });
        assert_eq!(session_devices(&db.conn, peer).unwrap(), vec![(2, true)]);

        archive_session(&db.conn, peer, 2, 5).unwrap();
        let archived = store.load_session(&a).unwrap().unwrap();
        assert!(!archived.has_current_session());
        assert_eq!(archived.previous_session_count(), 1);
        assert_eq!(session_devices(&db.conn, peer).unwrap(), vec![(2, false)]);

        delete_session(&db.conn, peer, 2).unwrap();
        assert!(store.load_session(&a).unwrap().is_none());
        assert!(session_devices(&db.conn, peer).unwrap().is_empty());
    }
}
