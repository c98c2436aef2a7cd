//! Delivery: getting envelopes from the store to connected devices.
//!
//! Senders and the expiry task talk to a [`Delivery`]: after envelopes are
//! durably queued they *wake* the recipient devices; ephemeral envelopes
//! (typing) are *pushed* and never stored. The in-process implementation,
//! [`InProcessDelivery`], hands both to this node's [`Registry`] of
//! connected devices. A multi-node hub puts a message bus (NATS) behind the
//! same trait and hands what arrives for its own devices to its registry.
//!
//! A wake carries no envelope: it makes the device's connection read what
//! is queued after the last envelope it sent ([`websocket`]). So order is
//! the store's order, a wake lost or doubled costs nothing, and nothing
//! queued is missed.

pub mod websocket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use passerelle_proto::{AccountId, DeviceId, Envelope};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics;

/// How many ephemeral envelopes wait for a connection at most; past that
/// they are dropped (they are typing indicators: losing one is harmless).
const EPHEMERAL_BUFFER: usize = 16;

/// The fan-out from senders to the connections of recipient devices.
pub trait Delivery: Send + Sync + 'static {
    /// Envelopes were queued for a device: its connection, wherever it is,
    /// should read them.
    fn wake(&self, account: AccountId, device: DeviceId);
    /// Pushes an ephemeral envelope to a device if it is connected now;
    /// returns whether a connection took it. Never stored.
    fn push_ephemeral(&self, account: AccountId, device: DeviceId, envelope: Envelope) -> bool;
    /// Closes the device's connection (the device was removed).
    fn disconnect(&self, account: AccountId, device: DeviceId);
}

/// Why the hub closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The same device connected again; the new connection won.
    Replaced,
    /// The device was removed from its account.
    Removed,
}

struct Slot {
    id: u64,
    wake: Arc<Notify>,
    ephemeral: mpsc::Sender<Envelope>,
    close: Option<oneshot::Sender<CloseReason>>,
}

type Key = (AccountId, DeviceId);

#[derive(Default)]
struct RegistryInner {
    slots: Mutex<HashMap<Key, Slot>>,
    next_id: AtomicU64,
}

/// This node's connected devices: one connection per device.
#[derive(Clone, Default)]
pub struct Registry(Arc<RegistryInner>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connected", &self.connected())
            .finish()
    }
}

impl Registry {
    fn slots(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        // A panic while holding the lock leaves the map consistent (every
        // change is a single insert or remove), so poisoning is ignored.
        self.0.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection of a device. A connection the device already
    /// had is told to close ([`CloseReason::Replaced`]).
    pub fn register(&self, account: AccountId, device: DeviceId) -> Connection {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let (ephemeral_tx, ephemeral) = mpsc::channel(EPHEMERAL_BUFFER);
        let (close_tx, closed) = oneshot::channel();
        let slot = Slot {
            id,
            wake: wake.clone(),
            ephemeral: ephemeral_tx,
            close: Some(close_tx),
        };
        let (old, count) = {
            let mut slots = self.slots();
            let old = slots.insert((account, device), slot);
            (old, slots.len())
        };
        if let Some(close) = old.and_then(|mut old| old.close.take()) {
            let _ = close.send(CloseReason::Replaced);
        }
        metrics::set_connected(count);
        Connection {
            registry: self.clone(),
            account,
            device,
            id,
            wake,
            ephemeral,
            closed,
        }
    }

    fn unregister(&self, account: AccountId, device: DeviceId, id: u64) {
        let count = {
            let mut slots = self.slots();
            if slots.get(&(account, device)).is_some_and(|s| s.id == id) {
                slots.remove(&(account, device));
            }
            slots.len()
        };
        metrics::set_connected(count);
    }

    /// How many devices are connected to this node.
    pub fn connected(&self) -> usize {
        self.slots().len()
    }

    /// Whether a device is connected to this node.
    pub fn is_connected(&self, account: AccountId, device: DeviceId) -> bool {
        self.slots().contains_key(&(account, device))
    }

    /// Wakes a device's connection, if it has one here.
    pub fn wake(&self, account: AccountId, device: DeviceId) {
        if let Some(slot) = self.slots().get(&(account, device)) {
            slot.wake.notify_one();
        }
    }

    /// Hands an ephemeral envelope to a device's connection, if it has one
    /// here and its buffer has room.
    pub fn push_ephemeral(&self, account: AccountId, device: DeviceId, envelope: Envelope) -> bool {
        let sender = self
            .slots()
            .get(&(account, device))
            .map(|s| s.ephemeral.clone());
        sender.is_some_and(|s| s.try_send(envelope).is_ok())
    }

    /// Closes a device's connection, if it has one here.
    pub fn disconnect(&self, account: AccountId, device: DeviceId, reason: CloseReason) {
        let slot = self.slots().remove(&(account, device));
        if let Some(close) = slot.and_then(|mut slot| slot.close.take()) {
            let _ = close.send(reason);
        }
        metrics::set_connected(self.connected());
    }
}

/// One device's registration; unregisters when dropped.
pub struct Connection {
    registry: Registry,
    account: AccountId,
    device: DeviceId,
    id: u64,
    /// Notified when envelopes were queued for the device.
    pub wake: Arc<Notify>,
    /// Ephemeral envelopes to push.
    pub ephemeral: mpsc::Receiver<Envelope>,
    /// Resolves when the hub wants this connection closed.
    pub closed: oneshot::Receiver<CloseReason>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.registry.unregister(self.account, self.device, self.id);
    }
}

/// Delivery within one process: straight to the [`Registry`].
#[derive(Clone, Debug)]
pub struct InProcessDelivery {
    registry: Registry,
}

impl InProcessDelivery {
    /// Delivery to this registry.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

impl Delivery for InProcessDelivery {
    fn wake(&self, account: AccountId, device: DeviceId) {
        self.registry.wake(account, device);
    }

    fn push_ephemeral(&self, account: AccountId, device: DeviceId, envelope: Envelope) -> bool {
        self.registry.push_ephemeral(account, device, envelope)
    }

    fn disconnect(&self, account: AccountId, device: DeviceId) {
        self.registry
            .disconnect(account, device, CloseReason::Removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_connection_replaces_the_old_one() {
        let registry = Registry::default();
        let account = AccountId::random();
        let mut first = registry.register(account, DeviceId::PRIMARY);
        let second = registry.register(account, DeviceId::PRIMARY);
        assert_eq!((&mut first.closed).await.ok(), Some(CloseReason::Replaced));
        assert_eq!(registry.connected(), 1);
        // Dropping the replaced connection leaves the new one registered.
        assert!(registry.is_connected(account, DeviceId::PRIMARY));
        drop(second);
        assert_eq!(registry.connected(), 0);
    }

    #[tokio::test]
    async fn wakes_are_kept_until_awaited() {
        let registry = Registry::default();
        let account = AccountId::random();
        let conn = registry.register(account, DeviceId::PRIMARY);
        registry.wake(account, DeviceId::PRIMARY);
        registry.wake(account, DeviceId::PRIMARY);
        tokio::time::timeout(std::time::Duration::from_secs(1), conn.wake.notified())
            .await
            .unwrap();
    }
}
