//! A store that wraps another and lets a test step into `enqueue`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle_proto::{AccountId, Address, DeviceId, Envelope};
use passerelle_store::{
    Account, ClaimedKeys, Device, KeyCounts, KeyUpdate, MailboxFill, Millis, NewAccount, NewDevice,
    QueuedEnvelope, Result, Store, VerificationOutcome, VerificationRecord,
};
use uuid::Uuid;

/// Delegates everything to `inner`, except that `enqueue` first removes
/// the device set in `remove_before_enqueue` (once), and after committing
/// sleeps for `delay_after_enqueue` before it returns.
pub struct Hooked {
    pub inner: Arc<dyn Store>,
    pub remove_before_enqueue: Mutex<Option<(AccountId, DeviceId)>>,
    pub delay_after_enqueue: Mutex<Option<Duration>>,
}

impl Hooked {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            remove_before_enqueue: Mutex::new(None),
            delay_after_enqueue: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Store for Hooked {
    async fn enqueue(&self, envelopes: Vec<QueuedEnvelope>) -> Result<()> {
        let remove = self.remove_before_enqueue.lock().unwrap().take();
        if let Some((account, device)) = remove {
            self.inner.remove_device(account, device).await?;
        }
        self.inner.enqueue(envelopes).await?;
        let delay = *self.delay_after_enqueue.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    async fn create_account(&self, account: NewAccount) -> Result<()> {
        self.inner.create_account(account).await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        self.inner.account(id).await
    }

    async fn account_by_address(&self, address: &Address) -> Result<Option<Account>> {
        self.inner.account_by_address(address).await
    }

    async fn device(&self, account: AccountId, device: DeviceId) -> Result<Option<Device>> {
        self.inner.device(account, device).await
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<Device>> {
        self.inner.devices(account).await
    }

    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u8,
    ) -> Result<DeviceId> {
        self.inner.add_device(account, device, max_devices).await
    }

    async fn remove_device(&self, account: AccountId, device: DeviceId) -> Result<bool> {
        self.inner.remove_device(account, device).await
    }

    async fn touch_device(&self, account: AccountId, device: DeviceId, now: Millis) -> Result<()> {
        self.inner.touch_device(account, device, now).await
    }

    async fn store_keys(
        &self,
        account: AccountId,
        device: DeviceId,
        keys: KeyUpdate,
    ) -> Result<()> {
        self.inner.store_keys(account, device, keys).await
    }

    async fn key_counts(&self, account: AccountId, device: DeviceId) -> Result<KeyCounts> {
        self.inner.key_counts(account, device).await
    }

    async fn claim_keys(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeys>> {
        self.inner.claim_keys(account, device).await
    }

    async fn queued(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Envelope>> {
        self.inner.queued(account, device, after, limit).await
    }

    async fn queued_count(&self, account: AccountId, device: DeviceId) -> Result<u64> {
        self.inner.queued_count(account, device).await
    }

    async fn acknowledge(&self, account: AccountId, device: DeviceId, ids: &[Uuid]) -> Result<u64> {
        self.inner.acknowledge(account, device, ids).await
    }

    async fn take_expired(&self, now: Millis, limit: u32) -> Result<Vec<QueuedEnvelope>> {
        self.inner.take_expired(now, limit).await
    }

    async fn save_verification(&self, record: VerificationRecord) -> Result<()> {
        self.inner.save_verification(record).await
    }

    async fn verification(&self, id: Uuid) -> Result<Option<VerificationRecord>> {
        self.inner.verification(id).await
    }

    async fn delete_verification(&self, id: Uuid) -> Result<()> {
        self.inner.delete_verification(id).await
    }

    async fn attempt_verification(
        &self,
        id: Uuid,
        code_hash: &[u8],
        now: Millis,
        max_attempts: u32,
    ) -> Result<VerificationOutcome> {
        self.inner
            .attempt_verification(id, code_hash, now, max_attempts)
            .await
    }

    async fn save_link_token(
        &self,
        token_hash: Vec<u8>,
        account: AccountId,
        expires_at: Millis,
    ) -> Result<()> {
        self.inner
            .save_link_token(token_hash, account, expires_at)
            .await
    }

    async fn take_link_token(&self, token_hash: &[u8], now: Millis) -> Result<Option<AccountId>> {
        self.inner.take_link_token(token_hash, now).await
    }

    async fn open_mailbox(&self, id: Uuid, expires_at: Millis) -> Result<()> {
        self.inner.open_mailbox(id, expires_at).await
    }

    async fn fill_mailbox(&self, id: Uuid, message: Vec<u8>, now: Millis) -> Result<MailboxFill> {
        self.inner.fill_mailbox(id, message, now).await
    }

    async fn take_mailbox(&self, id: Uuid, now: Millis) -> Result<Option<Vec<u8>>> {
        self.inner.take_mailbox(id, now).await
    }

    async fn purge_expired(&self, now: Millis) -> Result<u64> {
        self.inner.purge_expired(now).await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}
