//! Passerelle's persistence, behind one narrow trait.
//!
//! [`Store`] is everything the hub keeps: accounts, devices, their public
//! keys, queued envelopes, and the short-lived state of verifications, link
//! tokens and provisioning mailboxes. Backends: [`memory`] (tests, and the
//! reference for the others), [`sqlite`] (the embedded default) and
//! [`postgres`] (one database shared by several hub nodes). One
//! conformance suite ([`conformance`]) runs against every backend.
//!
//! Rules every backend keeps:
//! - a write has returned only once it is durable (for SQLite, committed in
//!   WAL mode with `synchronous = FULL`; for PostgreSQL, committed with
//!   `synchronous_commit = on`); the hub acknowledges a message only
//!   after [`Store::enqueue`] returned;
//! - claiming a one-time prekey is atomic: no key is ever handed out twice,
//!   also under concurrency (from several nodes, for PostgreSQL);
//! - reads return `Ok(None)` (or an empty list, or zero counts) for what is
//!   missing, and `Err` only when the backend failed;
//! - a write that fails changes nothing: each method is all or nothing;
//! - something with an `expires_at` of `t` is live while `now < t`, and
//!   expired from `now >= t` on.
//!
//! The SQLite backend commits many concurrent writes in one transaction
//! (group commit); [`sqlite`] says how and why.

pub mod conformance;
pub mod memory;
pub mod postgres;
mod sql;
pub mod sqlite;

use async_trait::async_trait;
use passerelle_proto::{AccountId, Address, DeviceId, Envelope};
use uuid::Uuid;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The address is taken by another account.
    #[error("address {0} is taken")]
    AddressTaken(Address),
    /// The account has the most devices allowed.
    #[error("account has {0} devices, the most allowed")]
    TooManyDevices(u8),
    /// The account has used every device id (1 to 127): ids are never
    /// given again, so it can have no new device.
    #[error("account has used every device id")]
    DeviceIdsExhausted,
    /// The account does not exist.
    #[error("no such account")]
    NoSuchAccount,
    /// The device does not exist.
    #[error("no such device")]
    NoSuchDevice,
    /// The backend failed; the text is for operators' logs, never for
    /// clients.
    #[error("store backend: {0}")]
    Backend(String),
    /// The backend cannot be reached now (its server is down, restarting
    /// or out of connections); nothing was done, and the same request may
    /// succeed later. The text is for operators' logs.
    #[error("store backend unavailable: {0}")]
    Unavailable(String),
    /// The database was written by a newer version of Passerelle; this one
    /// refuses to open it rather than misread it.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}): \
         run a newer passerelle"
    )]
    SchemaTooNew {
        /// The database's schema version.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
}

/// The result type of stores.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// An account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Its stable id.
    pub id: AccountId,
    /// Its address.
    pub address: Address,
    /// Its identity key (33 bytes).
    pub identity_key: Vec<u8>,
    /// When it registered.
    pub created_at: Millis,
}

/// A device of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its account.
    pub account_id: AccountId,
    /// Its id.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// Its Signal registration id.
    pub registration_id: u32,
    /// The hash of its password (the hub's format; opaque here).
    pub password_hash: Vec<u8>,
    /// When it was added.
    pub created_at: Millis,
    /// When it last connected.
    pub last_seen_at: Millis,
}

/// A device to add.
#[derive(Clone, Debug)]
pub struct NewDevice {
    /// Its name.
    pub name: String,
    /// Its Signal registration id.
    pub registration_id: u32,
    /// The hash of its password.
    pub password_hash: Vec<u8>,
    /// Its first keys.
    pub keys: KeyUpdate,
    /// Now.
    pub now: Millis,
}

/// An account to create, with its first device.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Its stable id.
    pub id: AccountId,
    /// Its address.
    pub address: Address,
    /// Its identity key (33 bytes).
    pub identity_key: Vec<u8>,
    /// Its first device (it gets [`DeviceId::PRIMARY`]).
    pub device: NewDevice,
}

/// A public prekey as stored: id, key, and signature for signed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id.
    pub key_id: u32,
    /// The serialized public key.
    pub public_key: Vec<u8>,
    /// The identity key's signature (empty for one-time Curve25519 keys).
    pub signature: Vec<u8>,
}

/// Keys to store for a device. Signed keys replace the current ones;
/// one-time keys are added (a key id that exists already is replaced).
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    /// A new signed Curve25519 prekey.
    pub signed_pre_key: Option<StoredKey>,
    /// A new last-resort Kyber prekey.
    pub last_resort_kyber_pre_key: Option<StoredKey>,
    /// One-time Curve25519 prekeys.
    pub pre_keys: Vec<StoredKey>,
    /// One-time Kyber prekeys.
    pub kyber_pre_keys: Vec<StoredKey>,
}

/// What a claim hands out for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeys {
    /// The device.
    pub device_id: DeviceId,
    /// Its registration id.
    pub registration_id: u32,
    /// A one-time Curve25519 prekey, now deleted; `None` when none was left.
    pub pre_key: Option<StoredKey>,
    /// The signed prekey.
    pub signed_pre_key: StoredKey,
    /// A one-time Kyber prekey (now deleted), or the last-resort one.
    pub kyber_pre_key: StoredKey,
}

/// How many one-time prekeys a device has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyCounts {
    /// One-time Curve25519 prekeys.
    pub pre_keys: u32,
    /// One-time Kyber prekeys.
    pub kyber_pre_keys: u32,
}

/// An envelope waiting for its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedEnvelope {
    /// The recipient account.
    pub account_id: AccountId,
    /// The envelope (its `destination_device` names the device).
    pub envelope: Envelope,
    /// When it expires if not acknowledged.
    pub expires_at: Millis,
}

/// A phone-number verification in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationRecord {
    /// Its id.
    pub id: Uuid,
    /// The address being verified.
    pub address: Address,
    /// The hash of the code.
    pub code_hash: Vec<u8>,
    /// When it expires.
    pub expires_at: Millis,
    /// Wrong codes tried so far.
    pub attempts: u32,
}

/// What [`Store::attempt_verification`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerificationOutcome {
    /// The code is right; the verification stays until deleted.
    Verified {
        /// The address it verifies.
        address: Address,
    },
    /// The code is wrong, and the attempt was counted; at `remaining == 0`
    /// the verification was deleted.
    Wrong {
        /// How many more codes may be tried.
        remaining: u32,
    },
    /// Every attempt had been used; the verification was deleted.
    Exhausted,
    /// The verification had expired; it was deleted.
    Expired,
    /// There is no such verification.
    Unknown,
}

/// What [`Store::fill_mailbox`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxFill {
    /// The message was left in the mailbox.
    Filled,
    /// The mailbox already holds a message, which stays (first write wins).
    Occupied,
    /// There is no such open, unexpired mailbox.
    Missing,
}

/// Everything the hub keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- accounts ----

    /// Creates an account with its primary device and keys, atomically.
    /// Fails with [`StoreError::AddressTaken`] if the address is in use.
    async fn create_account(&self, account: NewAccount) -> Result<()>;
    /// The account with this id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>>;
    /// The account with this address.
    async fn account_by_address(&self, address: &Address) -> Result<Option<Account>>;

    // ---- devices ----

    /// One device.
    async fn device(&self, account: AccountId, device: DeviceId) -> Result<Option<Device>>;
    /// All devices of an account, by id.
    async fn devices(&self, account: AccountId) -> Result<Vec<Device>>;
    /// Adds a device, if the account has fewer than `max_devices` (else
    /// [`StoreError::TooManyDevices`] with the count). Its id is the
    /// account's next one: one more than the highest id the account ever
    /// had, so the id of a removed device is never given again (a sender's
    /// sessions with it can never reach another device). When that would
    /// be above 127, fails with [`StoreError::DeviceIdsExhausted`]. Fails
    /// with [`StoreError::NoSuchAccount`] if the account does not exist.
    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u8,
    ) -> Result<DeviceId>;
    /// Removes a device, its keys and its queued envelopes. `false` if it
    /// did not exist.
    async fn remove_device(&self, account: AccountId, device: DeviceId) -> Result<bool>;
    /// Records that a device connected. Fails with
    /// [`StoreError::NoSuchDevice`] if it does not exist.
    async fn touch_device(&self, account: AccountId, device: DeviceId, now: Millis) -> Result<()>;

    // ---- keys ----

    /// Stores keys of a device. Fails with [`StoreError::NoSuchDevice`] if
    /// it does not exist.
    async fn store_keys(&self, account: AccountId, device: DeviceId, keys: KeyUpdate)
    -> Result<()>;
    /// How many one-time prekeys a device has left (zero for a device that
    /// does not exist).
    async fn key_counts(&self, account: AccountId, device: DeviceId) -> Result<KeyCounts>;
    /// Claims a bundle of one device: takes one one-time Curve25519 prekey
    /// and one one-time Kyber prekey (falling back to the last-resort one),
    /// atomically; the one-time keys are taken lowest key id first. `None`
    /// if the device does not exist, has no signed prekey, or has neither a
    /// one-time nor a last-resort Kyber prekey; then nothing is consumed.
    async fn claim_keys(&self, account: AccountId, device: DeviceId)
    -> Result<Option<ClaimedKeys>>;

    // ---- envelopes ----

    /// Queues envelopes, durably, in order. When this returns `Ok`, they
    /// survive a crash.
    ///
    /// All or nothing: if one envelope's device (its account and
    /// `destination_device`) does not exist, this fails with
    /// [`StoreError::NoSuchDevice`] and queues none. An envelope whose id is
    /// already queued is skipped, so a retried call does not queue twice.
    async fn enqueue(&self, envelopes: Vec<QueuedEnvelope>) -> Result<()>;
    /// Up to `limit` queued envelopes of a device, oldest first, after the
    /// envelope `after` (or from the start).
    ///
    /// An `after` that is no longer queued for this device (acknowledged or
    /// expired meanwhile) reads from the start: the caller may see again
    /// envelopes it already sent, which at-least-once delivery allows,
    /// rather than miss any.
    async fn queued(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Envelope>>;
    /// How many envelopes are queued for a device (zero for a device that
    /// does not exist).
    async fn queued_count(&self, account: AccountId, device: DeviceId) -> Result<u64>;
    /// Deletes acknowledged envelopes of a device; returns how many existed.
    async fn acknowledge(&self, account: AccountId, device: DeviceId, ids: &[Uuid]) -> Result<u64>;
    /// Deletes up to `limit` envelopes that expired at `now` (`expires_at <=
    /// now`) and returns them, soonest expiry first, so that their senders
    /// can be told.
    async fn take_expired(&self, now: Millis, limit: u32) -> Result<Vec<QueuedEnvelope>>;

    // ---- short-lived state ----

    /// Saves a verification (replacing one with the same id).
    async fn save_verification(&self, record: VerificationRecord) -> Result<()>;
    /// A verification by id.
    async fn verification(&self, id: Uuid) -> Result<Option<VerificationRecord>>;
    /// Deletes a verification.
    async fn delete_verification(&self, id: Uuid) -> Result<()>;
    /// Checks a code against a verification and counts the attempt, as one
    /// atomic operation (concurrent guesses never count fewer attempts
    /// than were made). In order: unknown id, [`VerificationOutcome::Unknown`];
    /// expired at `now`, deleted and [`VerificationOutcome::Expired`];
    /// `attempts >= max_attempts`, deleted and
    /// [`VerificationOutcome::Exhausted`]; `code_hash` matches,
    /// [`VerificationOutcome::Verified`] (nothing changes); else `attempts`
    /// grows by one and [`VerificationOutcome::Wrong`] says how many are
    /// left, deleting the verification when none are.
    async fn attempt_verification(
        &self,
        id: Uuid,
        code_hash: &[u8],
        now: Millis,
        max_attempts: u32,
    ) -> Result<VerificationOutcome>;

    /// Saves a link token's hash for an account until `expires_at`
    /// (replacing a token with the same hash). Fails with
    /// [`StoreError::NoSuchAccount`] if the account does not exist.
    async fn save_link_token(
        &self,
        token_hash: Vec<u8>,
        account: AccountId,
        expires_at: Millis,
    ) -> Result<()>;
    /// Takes a link token: returns its account and deletes it, if it exists
    /// and has not expired at `now`. A token works once.
    async fn take_link_token(&self, token_hash: &[u8], now: Millis) -> Result<Option<AccountId>>;

    /// Opens a provisioning mailbox until `expires_at`; opening one that
    /// exists empties it.
    async fn open_mailbox(&self, id: Uuid, expires_at: Millis) -> Result<()>;
    /// Leaves a message in an open, unexpired, empty mailbox. The first
    /// message wins: a mailbox that already holds one keeps it
    /// ([`MailboxFill::Occupied`]).
    async fn fill_mailbox(&self, id: Uuid, message: Vec<u8>, now: Millis) -> Result<MailboxFill>;
    /// Takes the message out of a mailbox and deletes the mailbox; `None`
    /// if empty (the mailbox stays open), expired or unknown.
    async fn take_mailbox(&self, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>>;

    /// Deletes every verification, link token and mailbox expired at `now`
    /// (`expires_at <= now`); returns how many rows went.
    async fn purge_expired(&self, now: Millis) -> Result<u64>;

    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}

/// Compares two secrets' hashes in time independent of where they differ.
pub(crate) fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// [`Store::attempt_verification`] on a record already read, shared by the
/// backends: the outcome, and what to do with the record.
pub(crate) fn judge_attempt(
    record: &VerificationRecord,
    code_hash: &[u8],
    now: Millis,
    max_attempts: u32,
) -> (VerificationOutcome, AttemptEffect) {
    if now >= record.expires_at {
        return (VerificationOutcome::Expired, AttemptEffect::Delete);
    }
    if record.attempts >= max_attempts {
        return (VerificationOutcome::Exhausted, AttemptEffect::Delete);
    }
    if hashes_match(code_hash, &record.code_hash) {
        return (
            VerificationOutcome::Verified {
                address: record.address.clone(),
            },
            AttemptEffect::Keep,
        );
    }
    let attempts = record.attempts.saturating_add(1);
    let remaining = max_attempts.saturating_sub(attempts);
    let effect = if remaining == 0 {
        AttemptEffect::Delete
    } else {
        AttemptEffect::Count(attempts)
    };
    (VerificationOutcome::Wrong { remaining }, effect)
}

/// What an attempt does to its verification.
pub(crate) enum AttemptEffect {
    Keep,
    Delete,
    /// Store this attempt count.
    Count(u32),
}
