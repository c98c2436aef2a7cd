//! Retention: envelopes not acknowledged within their recipient app's
//! retention are deleted, and each sender's devices get an `expired` server
//! notice so the sender's client can mark the message as not delivered.
//!
//! Each run also deletes expired verifications, link tokens and
//! provisioning mailboxes ([`purge_expired`](passerelle_store::Store::purge_expired)).
//!
//! The task runs every `expiry.interval`, takes expired envelopes from the
//! store in batches, queues the notices durably, then wakes the senders'
//! devices. Expired sync copies (sender and recipient are the same account)
//! and expired notices produce no notice.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use passerelle_proto::{AccountId, Address, Envelope, EnvelopeKind, ServerNotice};
use passerelle_store::{QueuedEnvelope, StoreError};
use uuid::Uuid;

use crate::clock::millis;
use crate::metrics;
use crate::state::AppState;

/// Runs the expiry task until the hub shuts down.
pub async fn run(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(state.config().expiry.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = crate::delivery::websocket::stopping(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let purged = state.store().purge_expired(state.now()).await;
        match purged {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired short-lived rows deleted"),
            Err(ref e) => tracing::error!(error = %e, "purge failed; trying again later"),
        }
        let expired = expire(&state).await;
        match expired {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired envelopes deleted, senders told"),
            Err(ref e) => tracing::error!(error = %e, "expiry failed; trying again later"),
        }
        if purged.is_err() || expired.is_err() {
            // A failing store: wait a second more before the next run.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Takes every envelope expired by now and tells the senders; returns how
/// many expired.
pub async fn expire(state: &AppState) -> Result<usize, StoreError> {
    let batch = state.config().expiry.batch_size;
    let mut total = 0;
    loop {
        let now = state.now();
        let expired = state.store().take_expired(now, batch).await?;
        let count = expired.len();
        total += count;
        metrics::expired(count);
        notify_senders(state, expired, now).await?;
        if count < batch as usize {
            return Ok(total);
        }
    }
}

async fn notify_senders(
    state: &AppState,
    expired: Vec<QueuedEnvelope>,
    now: u64,
) -> Result<(), StoreError> {
    let store = state.store();
    // Recipient addresses and sender devices, looked up once per batch.
    let mut addresses: HashMap<AccountId, Option<Address>> = HashMap::new();
    let mut devices: HashMap<AccountId, Vec<passerelle_store::Device>> = HashMap::new();
    let mut notices = Vec::new();
    for queued in expired {
        let Some(source) = queued.envelope.source.as_ref() else {
            continue;
        };
        if source.account_id == queued.account_id {
            continue;
        }
        let recipient = match addresses.get(&queued.account_id) {
            Some(a) => a.clone(),
            None => {
                let a = store.account(queued.account_id).await?.map(|a| a.address);
                addresses.insert(queued.account_id, a.clone());
                a
            }
        };
        let Some(recipient) = recipient else { continue };
        if let Entry::Vacant(slot) = devices.entry(source.account_id) {
            slot.insert(store.devices(source.account_id).await?);
        }
        let sender_devices = devices
            .get(&source.account_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let retention = state.config().policy(&source.address.app).retention;
        for device in sender_devices {
            notices.push(QueuedEnvelope {
                account_id: source.account_id,
                envelope: Envelope {
                    id: Uuid::new_v4(),
                    kind: EnvelopeKind::ServerNotice,
                    source: None,
                    destination_device: device.id,
                    client_timestamp: now,
                    server_timestamp: now,
                    content: None,
                    notice: Some(ServerNotice::Expired {
                        recipient: recipient.clone(),
                        recipient_device: queued.envelope.destination_device,
                        envelope_id: queued.envelope.id,
                        client_timestamp: queued.envelope.client_timestamp,
                    }),
                },
                expires_at: now.saturating_add(millis(retention)),
            });
        }
    }
    if notices.is_empty() {
        return Ok(());
    }
    let woken: Vec<_> = notices
        .iter()
        .map(|n| (n.account_id, n.envelope.destination_device))
        .collect();
    match store.enqueue(notices.clone()).await {
        Ok(()) => {}
        // A sender removed a device since its devices were read: the batch
        // is refused whole, so queue the notices one by one, skipping the
        // device that is gone, rather than lose them all.
        Err(StoreError::NoSuchDevice) => {
            for notice in notices {
                match store.enqueue(vec![notice]).await {
                    Ok(()) | Err(StoreError::NoSuchDevice) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(e) => return Err(e),
    }
    for (account, device) in woken {
        state.delivery().wake(account, device);
    }
    Ok(())
}
