//! An in-memory [`Store`]: for tests, and the reference semantics every
//! other backend must match (the [`conformance`](crate::conformance) suite
//! checks both against the same contract).
//!
//! Everything sits behind one [`std::sync::Mutex`], held only inside a
//! method's synchronous body, never across an await. Each method checks
//! everything before it changes anything, so a failed call leaves the store
//! as it was. Nothing survives the process: [`Store::enqueue`] is "durable"
//! only for as long as the store lives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use passerelle_proto::{AccountId, Address, DeviceId, Envelope};
use uuid::Uuid;

use crate::{
    Account, AttemptEffect, ClaimedKeys, Device, KeyCounts, KeyUpdate, MailboxFill, Millis,
    NewAccount, NewDevice, QueuedEnvelope, Result, Store, StoreError, StoredKey,
    VerificationOutcome, VerificationRecord, judge_attempt,
};

/// A [`Store`] in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        // A panic while the lock was held may have left half a change:
        // refuse to go on rather than serve inconsistent state.
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store poisoned by a panic".into()))
    }
}

#[derive(Debug, Default)]
struct Inner {
    accounts: HashMap<AccountId, Account>,
    addresses: HashMap<Address, AccountId>,
    devices: BTreeMap<(AccountId, DeviceId), DeviceState>,
    /// The id each account's next device gets (never one used before).
    next_device_ids: HashMap<AccountId, u32>,
    /// Where each queued envelope is: its device and sequence number.
    envelopes: HashMap<Uuid, (AccountId, DeviceId, u64)>,
    /// Queued envelopes by expiry, then sequence number.
    expiries: BTreeMap<(Millis, u64), (AccountId, DeviceId)>,
    /// The sequence number of the last envelope queued.
    last_seq: u64,
    verifications: HashMap<Uuid, VerificationRecord>,
    link_tokens: HashMap<Vec<u8>, (AccountId, Millis)>,
    mailboxes: HashMap<Uuid, Mailbox>,
}

#[derive(Debug)]
struct DeviceState {
    device: Device,
    signed_pre_key: Option<StoredKey>,
    last_resort_kyber_pre_key: Option<StoredKey>,
    pre_keys: BTreeMap<u32, StoredKey>,
    kyber_pre_keys: BTreeMap<u32, StoredKey>,
    /// Queued envelopes by sequence number.
    queue: BTreeMap<u64, QueuedEnvelope>,
}

impl DeviceState {
    fn new(account_id: AccountId, id: DeviceId, new: NewDevice) -> Self {
        let mut state = Self {
            device: Device {
                account_id,
                id,
                name: new.name,
                registration_id: new.registration_id,
                password_hash: new.password_hash,
                created_at: new.now,
                last_seen_at: new.now,
            },
            signed_pre_key: None,
            last_resort_kyber_pre_key: None,
            pre_keys: BTreeMap::new(),
            kyber_pre_keys: BTreeMap::new(),
            queue: BTreeMap::new(),
        };
        state.store_keys(new.keys);
        state
    }

    fn store_keys(&mut self, keys: KeyUpdate) {
        if let Some(key) = keys.signed_pre_key {
            self.signed_pre_key = Some(key);
        }
        if let Some(key) = keys.last_resort_kyber_pre_key {
            self.last_resort_kyber_pre_key = Some(key);
        }
        for key in keys.pre_keys {
            self.pre_keys.insert(key.key_id, key);
        }
        for key in keys.kyber_pre_keys {
            self.kyber_pre_keys.insert(key.key_id, key);
        }
    }
}

#[derive(Debug)]
struct Mailbox {
    expires_at: Millis,
    message: Option<Vec<u8>>,
}

impl Inner {
    fn device_mut(&mut self, account: AccountId, device: DeviceId) -> Result<&mut DeviceState> {
        self.devices
            .get_mut(&(account, device))
            .ok_or(StoreError::NoSuchDevice)
    }

    fn device_ids(&self, account: AccountId) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices
            .range((account, DeviceId::PRIMARY)..)
            .take_while(move |((owner, _), _)| *owner == account)
            .map(|((_, id), _)| *id)
    }

    /// Deletes one queued envelope from every index.
    fn unqueue(
        &mut self,
        account: AccountId,
        device: DeviceId,
        seq: u64,
    ) -> Option<QueuedEnvelope> {
        let queued = self
            .devices
            .get_mut(&(account, device))?
            .queue
            .remove(&seq)?;
        self.envelopes.remove(&queued.envelope.id);
        self.expiries.remove(&(queued.expires_at, seq));
        Some(queued)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_account(&self, account: NewAccount) -> Result<()> {
        let mut inner = self.lock()?;
        if inner.addresses.contains_key(&account.address) {
            return Err(StoreError::AddressTaken(account.address));
        }
        if inner.accounts.contains_key(&account.id) {
            return Err(StoreError::Backend("account id exists already".into()));
        }
        let id = account.id;
        let created_at = account.device.now;
        inner.addresses.insert(account.address.clone(), id);
        inner.accounts.insert(
            id,
            Account {
                id,
                address: account.address,
                identity_key: account.identity_key,
                created_at,
            },
        );
        inner
            .next_device_ids
            .insert(id, DeviceId::PRIMARY.get() + 1);
        inner.devices.insert(
            (id, DeviceId::PRIMARY),
            DeviceState::new(id, DeviceId::PRIMARY, account.device),
        );
        Ok(())
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        Ok(self.lock()?.accounts.get(&id).cloned())
    }

    async fn account_by_address(&self, address: &Address) -> Result<Option<Account>> {
        let inner = self.lock()?;
        Ok(inner
            .addresses
            .get(address)
            .and_then(|id| inner.accounts.get(id))
            .cloned())
    }

    async fn device(&self, account: AccountId, device: DeviceId) -> Result<Option<Device>> {
        Ok(self
            .lock()?
            .devices
            .get(&(account, device))
            .map(|state| state.device.clone()))
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<Device>> {
        let inner = self.lock()?;
        Ok(inner
            .devices
            .range((account, DeviceId::PRIMARY)..)
            .take_while(|((owner, _), _)| *owner == account)
            .map(|(_, state)| state.device.clone())
            .collect())
    }

    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u8,
    ) -> Result<DeviceId> {
        let mut inner = self.lock()?;
        if !inner.accounts.contains_key(&account) {
            return Err(StoreError::NoSuchAccount);
        }
        let count = inner.device_ids(account).count();
        let next = inner.next_device_ids.get(&account).copied().unwrap_or(2);
        let id = check_room_and_pick_id(count, next, max_devices)?;
        inner.next_device_ids.insert(account, id.get() + 1);
        inner
            .devices
            .insert((account, id), DeviceState::new(account, id, device));
        Ok(id)
    }

    async fn remove_device(&self, account: AccountId, device: DeviceId) -> Result<bool> {
        let mut inner = self.lock()?;
        let Some(state) = inner.devices.remove(&(account, device)) else {
            return Ok(false);
        };
        for (seq, queued) in state.queue {
            inner.envelopes.remove(&queued.envelope.id);
            inner.expiries.remove(&(queued.expires_at, seq));
        }
        Ok(true)
    }

    async fn touch_device(&self, account: AccountId, device: DeviceId, now: Millis) -> Result<()> {
        self.lock()?
            .device_mut(account, device)?
            .device
            .last_seen_at = now;
        Ok(())
    }

    async fn store_keys(
        &self,
        account: AccountId,
        device: DeviceId,
        keys: KeyUpdate,
    ) -> Result<()> {
        self.lock()?.device_mut(account, device)?.store_keys(keys);
        Ok(())
    }

    async fn key_counts(&self, account: AccountId, device: DeviceId) -> Result<KeyCounts> {
        let inner = self.lock()?;
        Ok(inner
            .devices
            .get(&(account, device))
            .map(|state| KeyCounts {
                pre_keys: count(state.pre_keys.len()),
                kyber_pre_keys: count(state.kyber_pre_keys.len()),
            })
            .unwrap_or_default())
    }

    async fn claim_keys(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeys>> {
        let mut inner = self.lock()?;
        let Some(state) = inner.devices.get_mut(&(account, device)) else {
            return Ok(None);
        };
        let Some(signed_pre_key) = state.signed_pre_key.clone() else {
            return Ok(None);
        };
        let kyber_pre_key = match state.kyber_pre_keys.pop_first() {
            Some((_, key)) => key,
            None => match state.last_resort_kyber_pre_key.clone() {
                Some(key) => key,
                None => return Ok(None),
            },
        };
        Ok(Some(ClaimedKeys {
            device_id: device,
            registration_id: state.device.registration_id,
            pre_key: state.pre_keys.pop_first().map(|(_, key)| key),
            signed_pre_key,
            kyber_pre_key,
        }))
    }

    async fn enqueue(&self, envelopes: Vec<QueuedEnvelope>) -> Result<()> {
        let mut inner = self.lock()?;
        // All or nothing: check every device first.
        for queued in &envelopes {
            let key = (queued.account_id, queued.envelope.destination_device);
            if !inner.devices.contains_key(&key) {
                return Err(StoreError::NoSuchDevice);
            }
        }
        for queued in envelopes {
            if inner.envelopes.contains_key(&queued.envelope.id) {
                continue;
            }
            inner.last_seq += 1;
            let seq = inner.last_seq;
            let account = queued.account_id;
            let device = queued.envelope.destination_device;
            inner
                .envelopes
                .insert(queued.envelope.id, (account, device, seq));
            inner
                .expiries
                .insert((queued.expires_at, seq), (account, device));
            inner.device_mut(account, device)?.queue.insert(seq, queued);
        }
        Ok(())
    }

    async fn queued(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Envelope>> {
        let inner = self.lock()?;
        let Some(state) = inner.devices.get(&(account, device)) else {
            return Ok(Vec::new());
        };
        let start = after
            .and_then(|id| inner.envelopes.get(&id))
            .filter(|(owner, to, _)| *owner == account && *to == device)
            .map_or(0, |(_, _, seq)| seq.saturating_add(1));
        Ok(state
            .queue
            .range(start..)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(_, queued)| queued.envelope.clone())
            .collect())
    }

    async fn queued_count(&self, account: AccountId, device: DeviceId) -> Result<u64> {
        Ok(self
            .lock()?
            .devices
            .get(&(account, device))
            .map_or(0, |state| {
                u64::try_from(state.queue.len()).unwrap_or(u64::MAX)
            }))
    }

    async fn acknowledge(&self, account: AccountId, device: DeviceId, ids: &[Uuid]) -> Result<u64> {
        let mut inner = self.lock()?;
        let mut deleted = 0;
        for id in ids {
            let Some(&(owner, to, seq)) = inner.envelopes.get(id) else {
                continue;
            };
            if owner == account && to == device && inner.unqueue(owner, to, seq).is_some() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn take_expired(&self, now: Millis, limit: u32) -> Result<Vec<QueuedEnvelope>> {
        let mut inner = self.lock()?;
        let expired: Vec<_> = inner
            .expiries
            .range(..=(now, u64::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(&(_, seq), &(account, device))| (account, device, seq))
            .collect();
        Ok(expired
            .into_iter()
            .filter_map(|(account, device, seq)| inner.unqueue(account, device, seq))
            .collect())
    }

    async fn save_verification(&self, record: VerificationRecord) -> Result<()> {
        self.lock()?.verifications.insert(record.id, record);
        Ok(())
    }

    async fn verification(&self, id: Uuid) -> Result<Option<VerificationRecord>> {
        Ok(self.lock()?.verifications.get(&id).cloned())
    }

    async fn delete_verification(&self, id: Uuid) -> Result<()> {
        self.lock()?.verifications.remove(&id);
        Ok(())
    }

    async fn attempt_verification(
        &self,
        id: Uuid,
        code_hash: &[u8],
        now: Millis,
        max_attempts: u32,
    ) -> Result<VerificationOutcome> {
        let mut inner = self.lock()?;
        let Some(record) = inner.verifications.get_mut(&id) else {
            return Ok(VerificationOutcome::Unknown);
        };
        let (outcome, effect) = judge_attempt(record, code_hash, now, max_attempts);
        match effect {
            AttemptEffect::Keep => {}
            AttemptEffect::Count(attempts) => record.attempts = attempts,
            AttemptEffect::Delete => {
                inner.verifications.remove(&id);
            }
        }
        Ok(outcome)
    }

    async fn save_link_token(
        &self,
        token_hash: Vec<u8>,
        account: AccountId,
        expires_at: Millis,
    ) -> Result<()> {
        let mut inner = self.lock()?;
        if !inner.accounts.contains_key(&account) {
            return Err(StoreError::NoSuchAccount);
        }
        inner.link_tokens.insert(token_hash, (account, expires_at));
        Ok(())
    }

    async fn take_link_token(&self, token_hash: &[u8], now: Millis) -> Result<Option<AccountId>> {
        let mut inner = self.lock()?;
        Ok(inner
            .link_tokens
            .remove(token_hash)
            .filter(|(_, expires_at)| now < *expires_at)
            .map(|(account, _)| account))
    }

    async fn open_mailbox(&self, id: Uuid, expires_at: Millis) -> Result<()> {
        self.lock()?.mailboxes.insert(
            id,
            Mailbox {
                expires_at,
                message: None,
            },
        );
        Ok(())
    }

    async fn fill_mailbox(&self, id: Uuid, message: Vec<u8>, now: Millis) -> Result<MailboxFill> {
        let mut inner = self.lock()?;
        match inner.mailboxes.get_mut(&id) {
            Some(mailbox) if now < mailbox.expires_at => {
                if mailbox.message.is_some() {
                    return Ok(MailboxFill::Occupied);
                }
                mailbox.message = Some(message);
                Ok(MailboxFill::Filled)
            }
            _ => Ok(MailboxFill::Missing),
        }
    }

    async fn take_mailbox(&self, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>> {
        let mut inner = self.lock()?;
        let Some(mailbox) = inner.mailboxes.get(&id) else {
            return Ok(None);
        };
        if now >= mailbox.expires_at {
            inner.mailboxes.remove(&id);
            return Ok(None);
        }
        if mailbox.message.is_none() {
            return Ok(None);
        }
        Ok(inner
            .mailboxes
            .remove(&id)
            .and_then(|mailbox| mailbox.message))
    }

    async fn purge_expired(&self, now: Millis) -> Result<u64> {
        let mut inner = self.lock()?;
        let before = inner.verifications.len() + inner.link_tokens.len() + inner.mailboxes.len();
        inner.verifications.retain(|_, v| now < v.expires_at);
        inner
            .link_tokens
            .retain(|_, (_, expires_at)| now < *expires_at);
        inner.mailboxes.retain(|_, m| now < m.expires_at);
        let after = inner.verifications.len() + inner.link_tokens.len() + inner.mailboxes.len();
        Ok(u64::try_from(before - after).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> Result<()> {
        self.lock().map(drop)
    }
}

/// Checks that an account with `count` devices, whose next device id is
/// `next`, may have another, and returns its id. Shared by the backends so
/// that they decide alike.
pub(crate) fn check_room_and_pick_id(count: usize, next: u32, max_devices: u8) -> Result<DeviceId> {
    if count >= usize::from(max_devices) {
        return Err(StoreError::TooManyDevices(
            u8::try_from(count).unwrap_or(u8::MAX),
        ));
    }
    DeviceId::new(next).map_err(|_| StoreError::DeviceIdsExhausted)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
