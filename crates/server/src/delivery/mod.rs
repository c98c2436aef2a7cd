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

pub mod nats;
pub mod websocket;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures_util::future::BoxFuture;
use passerelle_proto::{AccountId, DeviceId, Envelope};
use tokio::sync::{Notify, oneshot};

use crate::metrics;

/// How many ephemeral envelopes wait for a connection at most; past that
/// they are dropped (they are typing indicators: losing one is harmless).
const EPHEMERAL_BUFFER: usize = 16;

/// The fan-out from senders to the connections of recipient devices.
pub trait Delivery: Send + Sync + 'static {
    /// Envelopes were queued for a device: its connection, wherever it is,
    /// should read them. Never blocks; a wake may be lost (it is a hint).
    fn wake(&self, account: AccountId, device: DeviceId);
    /// Pushes an ephemeral envelope to a device if it is connected now;
    /// resolves to whether a connection took it. Never stored. Resolves
    /// within a short bound even when the device sits on another node.
    fn push_ephemeral(
        &self,
        account: AccountId,
        device: DeviceId,
        envelope: Envelope,
    ) -> BoxFuture<'_, bool>;
    /// Closes the device's connection, wherever it is (the device was
    /// removed).
    fn disconnect(&self, account: AccountId, device: DeviceId);
    /// The state of the link to other nodes.
    fn status(&self) -> BusStatus {
        BusStatus::SingleNode
    }
    /// Stops whatever the fan-out runs in the background, once the hub has
    /// stopped serving.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// How a node is linked to the other nodes of its hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusStatus {
    /// No other nodes: delivery stays in this process.
    SingleNode,
    /// A message bus links the nodes; whether it is connected now.
    Bus {
        /// Connected to the bus.
        connected: bool,
    },
}

/// Why the hub closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The same device connected again; the new connection won.
    Replaced,
    /// The device was removed from its account.
    Removed,
}

/// The rank of one connection of a device among all its connections on
/// every node: of two, the greater one is kept.
///
/// `stamp` comes from a hybrid logical clock (milliseconds of wall time,
/// pushed past every stamp this node has seen from others), so a
/// connection opened after this node heard of another one always ranks
/// above it, whatever the clocks say; two connections opened at once on
/// two nodes are ordered by time, then by node and connection number,
/// the same way on both nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation {
    /// The hybrid clock's reading when the connection registered.
    pub stamp: u64,
    /// The node's instance number (random per process).
    pub node: u64,
    /// The connection's number on its node.
    pub conn: u64,
}

/// Told, in order, when a device's connection arrives on this node or
/// the device has none here any more. Called with the registry locked:
/// implementations must only queue the news.
pub(crate) trait Presence: Send + Sync {
    fn arrived(&self, account: AccountId, device: DeviceId, generation: Generation);
    fn left(&self, account: AccountId, device: DeviceId);
}

struct Slot {
    generation: Generation,
    mailbox: Arc<Mailbox>,
    close: Option<oneshot::Sender<CloseReason>>,
}

/// What the hub has for one connection: whether envelopes were queued
/// since it last looked, and ephemeral envelopes to push.
///
/// One small allocation per connection, empty while it idles: a million
/// idle connections must fit in a few GiB, and a channel would allocate a
/// block of slots up front for each.
#[derive(Default)]
pub struct Mailbox {
    notify: Notify,
    queued: AtomicBool,
    ephemeral: Mutex<VecDeque<Envelope>>,
}

/// What [`Mailbox::recv`] found.
#[derive(Debug)]
pub enum Mail {
    /// Envelopes were queued for the device: read the store.
    Queued,
    /// An ephemeral envelope to push.
    Ephemeral(Box<Envelope>),
}

impl Mailbox {
    fn ephemeral(&self) -> MutexGuard<'_, VecDeque<Envelope>> {
        // Every change is a single push or pop: a panic cannot leave the
        // queue half-changed.
        self.ephemeral.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.queued.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Queues an ephemeral envelope; false when [`EPHEMERAL_BUFFER`] are
    /// waiting already.
    fn push(&self, envelope: Envelope) -> bool {
        {
            let mut queue = self.ephemeral();
            if queue.len() >= EPHEMERAL_BUFFER {
                return false;
            }
            queue.push_back(envelope);
        }
        self.notify.notify_one();
        true
    }

    /// The next thing to do. Cancel-safe: nothing is taken unless it is
    /// returned, so it can race other futures in a `select!`.
    pub async fn recv(&self) -> Mail {
        loop {
            if let Some(envelope) = self.ephemeral().pop_front() {
                return Mail::Ephemeral(Box::new(envelope));
            }
            if self.queued.swap(false, Ordering::AcqRel) {
                return Mail::Queued;
            }
            // A wake or push between the checks above and this wait left
            // a permit in `notify`: the wait ends at once.
            self.notify.notified().await;
        }
    }
}

type Key = (AccountId, DeviceId);

struct RegistryInner {
    slots: Mutex<HashMap<Key, Slot>>,
    next_id: AtomicU64,
    instance: u64,
    /// The hybrid clock: the greatest stamp issued or seen.
    clock: AtomicU64,
    presence: OnceLock<Box<dyn Presence>>,
}

impl Default for RegistryInner {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            next_id: AtomicU64::new(0),
            instance: rand::random(),
            clock: AtomicU64::new(0),
            presence: OnceLock::new(),
        }
    }
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

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Registry {
    fn slots(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        // A panic while holding the lock leaves the map consistent (every
        // change is a single insert or remove), so poisoning is ignored.
        self.0.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the one [`Presence`] of this registry; false if there is
    /// one already.
    pub(crate) fn set_presence(&self, presence: Box<dyn Presence>) -> bool {
        self.0.presence.set(presence).is_ok()
    }

    fn presence(&self) -> Option<&dyn Presence> {
        self.0.presence.get().map(AsRef::as_ref)
    }

    /// A stamp above every stamp issued or seen, and not behind the wall
    /// clock.
    fn tick(&self) -> u64 {
        let now = wall_clock_ms();
        let mut last = self.0.clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.0.clock.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the hybrid clock past a stamp seen from another node.
    fn observe(&self, stamp: u64) {
        self.0.clock.fetch_max(stamp, Ordering::Relaxed);
    }

    /// Registers a connection of a device. A connection the device already
    /// had is told to close ([`CloseReason::Replaced`]).
    pub fn register(&self, account: AccountId, device: DeviceId) -> Connection {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let generation = Generation {
            stamp: self.tick(),
            node: self.0.instance,
            conn: id,
        };
        let mailbox = Arc::new(Mailbox::default());
        let (close_tx, closed) = oneshot::channel();
        let slot = Slot {
            generation,
            mailbox: mailbox.clone(),
            close: Some(close_tx),
        };
        let (old, count) = {
            let mut slots = self.slots();
            let old = slots.insert((account, device), slot);
            if let Some(presence) = self.presence() {
                presence.arrived(account, device, generation);
            }
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
            generation,
            mailbox,
            closed,
        }
    }

    /// Removes the device's slot if `keep` says so, telling the presence.
    fn remove_if(
        &self,
        account: AccountId,
        device: DeviceId,
        keep: impl FnOnce(&Slot) -> bool,
    ) -> Option<Slot> {
        let (slot, count) = {
            let mut slots = self.slots();
            let remove = slots.get(&(account, device)).is_some_and(|s| !keep(s));
            let slot = if remove {
                slots.remove(&(account, device))
            } else {
                None
            };
            if slot.is_some() {
                if let Some(presence) = self.presence() {
                    presence.left(account, device);
                }
            }
            (slot, slots.len())
        };
        metrics::set_connected(count);
        slot
    }

    fn unregister(&self, account: AccountId, device: DeviceId, generation: Generation) {
        self.remove_if(account, device, |s| s.generation != generation);
    }

    /// How many devices are connected to this node.
    pub fn connected(&self) -> usize {
        self.slots().len()
    }

    /// Whether a device is connected to this node.
    pub fn is_connected(&self, account: AccountId, device: DeviceId) -> bool {
        self.slots().contains_key(&(account, device))
    }

    /// The connection of a device here, by rank, if it has one.
    pub fn generation(&self, account: AccountId, device: DeviceId) -> Option<Generation> {
        self.slots().get(&(account, device)).map(|s| s.generation)
    }

    /// Every device connected here, with the rank of its connection.
    pub fn devices(&self) -> Vec<(AccountId, DeviceId, Generation)> {
        self.slots()
            .iter()
            .map(|(&(a, d), s)| (a, d, s.generation))
            .collect()
    }

    /// Wakes a device's connection, if it has one here.
    pub fn wake(&self, account: AccountId, device: DeviceId) {
        if let Some(slot) = self.slots().get(&(account, device)) {
            slot.mailbox.wake();
        }
    }

    /// Wakes every connection here (wakes may have been lost).
    pub fn wake_all(&self) {
        for slot in self.slots().values() {
            slot.mailbox.wake();
        }
    }

    /// Hands an ephemeral envelope to a device's connection, if it has one
    /// here and its buffer has room.
    pub fn push_ephemeral(&self, account: AccountId, device: DeviceId, envelope: Envelope) -> bool {
        let mailbox = self
            .slots()
            .get(&(account, device))
            .map(|s| s.mailbox.clone());
        mailbox.is_some_and(|m| m.push(envelope))
    }

    /// Closes a device's connection, if it has one here.
    pub fn disconnect(&self, account: AccountId, device: DeviceId, reason: CloseReason) {
        let slot = self.remove_if(account, device, |_| false);
        if let Some(close) = slot.and_then(|mut slot| slot.close.take()) {
            let _ = close.send(reason);
        }
    }

    /// A connection of the device ranked `claim` opened elsewhere: the
    /// connection here closes ([`CloseReason::Replaced`]) if it ranks
    /// below. Returns whether it did.
    pub fn yield_to(&self, account: AccountId, device: DeviceId, claim: Generation) -> bool {
        self.observe(claim.stamp);
        let slot = self.remove_if(account, device, |s| s.generation >= claim);
        match slot.and_then(|mut slot| slot.close.take()) {
            Some(close) => {
                let _ = close.send(CloseReason::Replaced);
                true
            }
            None => false,
        }
    }
}

/// One device's registration; unregisters when dropped.
pub struct Connection {
    registry: Registry,
    account: AccountId,
    device: DeviceId,
    generation: Generation,
    /// Wakes and ephemeral envelopes for this connection.
    pub mailbox: Arc<Mailbox>,
    /// Resolves when the hub wants this connection closed.
    pub closed: oneshot::Receiver<CloseReason>,
}

impl Connection {
    /// This connection's rank among the device's connections.
    pub fn generation(&self) -> Generation {
        self.generation
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.registry
            .unregister(self.account, self.device, self.generation);
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

    fn push_ephemeral(
        &self,
        account: AccountId,
        device: DeviceId,
        envelope: Envelope,
    ) -> BoxFuture<'_, bool> {
        let taken = self.registry.push_ephemeral(account, device, envelope);
        Box::pin(std::future::ready(taken))
    }

    fn disconnect(&self, account: AccountId, device: DeviceId) {
        self.registry
            .disconnect(account, device, CloseReason::Removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// Two nodes that hear each other's claims keep exactly one of two
    /// connections of a device, whatever order the claims arrive in.
    #[tokio::test]
    async fn of_two_nodes_exactly_one_connection_survives() {
        let account = AccountId::random();
        let (a, b) = (Registry::default(), Registry::default());
        let mut on_a = a.register(account, DeviceId::PRIMARY);
        let mut on_b = b.register(account, DeviceId::PRIMARY);
        let (ga, gb) = (on_a.generation(), on_b.generation());
        assert_ne!(ga, gb);
        // Each hears the other's claim.
        let a_closed = a.yield_to(account, DeviceId::PRIMARY, gb);
        let b_closed = b.yield_to(account, DeviceId::PRIMARY, ga);
        assert_ne!(a_closed, b_closed, "exactly one closes");
        let (loser, winner) = if a_closed {
            (&mut on_a, &b)
        } else {
            (&mut on_b, &a)
        };
        assert_eq!((&mut loser.closed).await.ok(), Some(CloseReason::Replaced));
        assert!(winner.is_connected(account, DeviceId::PRIMARY));
    }

    /// A connection opened after a node heard a claim ranks above it, even
    /// when the claim's clock runs ahead.
    #[tokio::test]
    async fn a_later_connection_outranks_every_claim_heard() {
        let account = AccountId::random();
        let registry = Registry::default();
        let ahead = Generation {
            stamp: wall_clock_ms() + 3_600_000,
            node: u64::MAX,
            conn: u64::MAX,
        };
        assert!(!registry.yield_to(account, DeviceId::PRIMARY, ahead));
        let conn = registry.register(account, DeviceId::PRIMARY);
        assert!(conn.generation() > ahead);
        // An old claim does not close it; a newer one does.
        let behind = Generation {
            stamp: 1,
            ..conn.generation()
        };
        assert!(!registry.yield_to(account, DeviceId::PRIMARY, behind));
        assert!(registry.is_connected(account, DeviceId::PRIMARY));
        let newer = Generation {
            stamp: conn.generation().stamp + 1,
            ..conn.generation()
        };
        assert!(registry.yield_to(account, DeviceId::PRIMARY, newer));
        assert!(!registry.is_connected(account, DeviceId::PRIMARY));
    }

    #[tokio::test]
    async fn wakes_are_kept_until_awaited() {
        let registry = Registry::default();
        let account = AccountId::random();
        let conn = registry.register(account, DeviceId::PRIMARY);
        registry.wake(account, DeviceId::PRIMARY);
        registry.wake(account, DeviceId::PRIMARY);
        let mail = tokio::time::timeout(Duration::from_secs(1), conn.mailbox.recv())
            .await
            .unwrap();
        assert!(matches!(mail, Mail::Queued));
        // Two wakes before a read are one read.
        assert!(nothing_within(&conn.mailbox, Duration::from_millis(50)).await);
    }

    /// Whether `recv` stays pending for `wait`.
    async fn nothing_within(mailbox: &Mailbox, wait: Duration) -> bool {
        tokio::time::timeout(wait, mailbox.recv()).await.is_err()
    }

    fn typing(n: u64) -> Envelope {
        Envelope {
            id: uuid::Uuid::new_v4(),
            kind: passerelle_proto::EnvelopeKind::Message,
            source: None,
            destination_device: DeviceId::PRIMARY,
            client_timestamp: n,
            server_timestamp: n,
            content: None,
            notice: None,
        }
    }

    #[tokio::test]
    async fn ephemeral_envelopes_come_in_order_up_to_the_bound() {
        let registry = Registry::default();
        let account = AccountId::random();
        let conn = registry.register(account, DeviceId::PRIMARY);
        let bound = u64::try_from(EPHEMERAL_BUFFER).unwrap();
        for n in 0..bound {
            assert!(registry.push_ephemeral(account, DeviceId::PRIMARY, typing(n)));
        }
        assert!(!registry.push_ephemeral(account, DeviceId::PRIMARY, typing(bound)));
        for n in 0..bound {
            match conn.mailbox.recv().await {
                Mail::Ephemeral(envelope) => assert_eq!(envelope.client_timestamp, n),
                Mail::Queued => panic!("no wake was sent"),
            }
        }
        assert!(nothing_within(&conn.mailbox, Duration::from_millis(50)).await);
        // Nobody connected: nobody takes it.
        assert!(!registry.push_ephemeral(AccountId::random(), DeviceId::PRIMARY, typing(0)));
    }

    /// A `recv` dropped unfinished (another `select!` branch won) loses
    /// nothing, whenever the wake came.
    #[tokio::test]
    async fn a_dropped_recv_loses_nothing() {
        let registry = Registry::default();
        let account = AccountId::random();
        let conn = registry.register(account, DeviceId::PRIMARY);
        {
            // Waiting when the wake and the push come, then dropped
            // before it is polled again.
            let recv = conn.mailbox.recv();
            tokio::pin!(recv);
            assert!(futures_util::poll!(recv.as_mut()).is_pending());
            registry.wake(account, DeviceId::PRIMARY);
            assert!(registry.push_ephemeral(account, DeviceId::PRIMARY, typing(7)));
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(
                tokio::time::timeout(Duration::from_secs(1), conn.mailbox.recv())
                    .await
                    .unwrap(),
            );
        }
        assert!(got.iter().any(|m| matches!(m, Mail::Queued)));
        assert!(
            got.iter()
                .any(|m| matches!(m, Mail::Ephemeral(e) if e.client_timestamp == 7))
        );
    }
}
